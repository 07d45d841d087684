//! A small HTTP/1.1 client over one keep-alive connection: what the benchmarks and the
//! chaos workload need to talk to a gateway without pulling in an HTTP client stack.

use std::sync::Arc;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// A connection: plain TCP or TLS over it.
trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// Why an exchange failed. `NotSent` means the request never left this process (the
/// server cannot have acted on it); anything else may have reached the server.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("connect: {0}")]
    NotSent(std::io::Error),
    #[error("{0}")]
    Io(String),
    #[error("{0}")]
    Protocol(String),
}

/// One persistent HTTP/1.1 connection, reopened when the server closes it.
pub struct HttpConn {
    addr: String,
    /// HTTPS: the client configuration (CA, client certificate).
    tls: Option<Arc<rustls::ClientConfig>>,
    stream: Option<BufReader<Box<dyn Stream>>>,
    /// The body of the last answer.
    pub buf: Vec<u8>,
}

impl HttpConn {
    pub fn new(addr: impl Into<String>) -> Self {
        HttpConn {
            addr: addr.into(),
            tls: None,
            stream: None,
            buf: Vec::new(),
        }
    }

    /// HTTPS to `addr` (`host:port`, the host an IP address or a name the server's
    /// certificate carries) with this client configuration.
    pub fn with_tls(addr: impl Into<String>, tls: Arc<rustls::ClientConfig>) -> Self {
        HttpConn {
            tls: Some(tls),
            ..HttpConn::new(addr)
        }
    }

    /// (addr and tls by value: the future holds no reference to the non-`Sync` stream)
    async fn connect(
        addr: String,
        tls: Option<Arc<rustls::ClientConfig>>,
    ) -> Result<Box<dyn Stream>, std::io::Error> {
        let s = TcpStream::connect(&addr).await?;
        let _ = s.set_nodelay(true);
        let Some(tls) = tls else {
            return Ok(Box::new(s));
        };
        let host = addr
            .rsplit_once(':')
            .map_or(addr.as_str(), |(h, _)| h)
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let name = rustls::pki_types::ServerName::try_from(host)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
        let tls = tokio_rustls::TlsConnector::from(tls)
            .connect(name, s)
            .await?;
        Ok(Box::new(tls))
    }

    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// Send `request` (a whole HTTP/1.1 request) and return the answer's status; its body
    /// is in `buf`.
    pub async fn exchange(&mut self, request: &[u8]) -> Result<u16, HttpError> {
        let mut stream = match self.stream.take() {
            Some(s) => s,
            None => {
                let s = Self::connect(self.addr.clone(), self.tls.clone())
                    .await
                    .map_err(HttpError::NotSent)?;
                BufReader::with_capacity(64 * 1024, s)
            }
        };
        let (status, keep) = read_answer(&mut stream, request, &mut self.buf).await?;
        if keep {
            self.stream = Some(stream);
        }
        Ok(status)
    }

    /// Send `request`; the body's length when the status is 200, an error otherwise.
    pub async fn get(&mut self, request: &[u8]) -> Result<usize, String> {
        match self.exchange(request).await {
            Ok(200) => Ok(self.buf.len()),
            Ok(status) => Err(format!("status {status}")),
            Err(e) => Err(e.to_string()),
        }
    }

    /// POST an `application/x-www-form-urlencoded` form to `path`.
    pub async fn post_form(
        &mut self,
        path: &str,
        fields: &[(&str, &str)],
    ) -> Result<u16, HttpError> {
        let body = form_urlencode(fields);
        let request = format!(
            "POST {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{body}",
            self.addr,
            body.len()
        );
        self.exchange(request.as_bytes()).await
    }

    /// POST a JSON body to `path` (a JSON-RPC method of the gateway).
    pub async fn post_json(&mut self, path: &str, body: &str) -> Result<u16, HttpError> {
        let request = format!(
            "POST {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            self.addr,
            body.len()
        );
        self.exchange(request.as_bytes()).await
    }

    /// GET `path` with these query fields.
    pub async fn get_query(
        &mut self,
        path: &str,
        fields: &[(&str, &str)],
    ) -> Result<u16, HttpError> {
        let request = format!(
            "GET {path}?{} HTTP/1.1\r\nHost: {}\r\n\r\n",
            form_urlencode(fields),
            self.addr
        );
        self.exchange(request.as_bytes()).await
    }
}

/// `application/x-www-form-urlencoded`, as browsers and `requests` write it.
pub fn form_urlencode(fields: &[(&str, &str)]) -> String {
    let mut out = String::new();
    for (i, (k, v)) in fields.iter().enumerate() {
        if i > 0 {
            out.push('&');
        }
        encode_component(k, &mut out);
        out.push('=');
        encode_component(v, &mut out);
    }
    out
}

fn encode_component(s: &str, out: &mut String) {
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
}

fn io(e: std::io::Error) -> HttpError {
    HttpError::Io(format!("read: {e}"))
}

async fn read_answer(
    s: &mut BufReader<Box<dyn Stream>>,
    request: &[u8],
    buf: &mut Vec<u8>,
) -> Result<(u16, bool), HttpError> {
    let w = s.get_mut();
    // (flushed: a TLS stream keeps what did not fit its records until then)
    match w.write_all(request).await {
        Ok(()) => w.flush().await,
        Err(e) => Err(e),
    }
    .map_err(|e| HttpError::Io(format!("write: {e}")))?;
    let mut line = String::new();
    if s.read_line(&mut line).await.map_err(io)? == 0 {
        return Err(HttpError::Io("connection closed before the answer".into()));
    }
    let mut parts = line.split_whitespace();
    let version = parts.next().unwrap_or("").to_string();
    let status: u16 = parts
        .next()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| HttpError::Protocol(format!("status line {:?}", line.trim_end())))?;
    let mut keep = version == "HTTP/1.1";
    let mut length: Option<usize> = None;
    let mut chunked = false;
    loop {
        line.clear();
        if s.read_line(&mut line).await.map_err(io)? == 0 {
            return Err(HttpError::Io("connection closed in the headers".into()));
        }
        let h = line.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            let k = k.trim().to_ascii_lowercase();
            let v = v.trim();
            match k.as_str() {
                "content-length" => length = v.parse().ok(),
                "transfer-encoding" => chunked = v.eq_ignore_ascii_case("chunked"),
                "connection" => {
                    if v.eq_ignore_ascii_case("close") {
                        keep = false
                    } else if v.eq_ignore_ascii_case("keep-alive") {
                        keep = true
                    }
                }
                _ => {}
            }
        }
    }
    buf.clear();
    if chunked {
        loop {
            line.clear();
            s.read_line(&mut line).await.map_err(io)?;
            let size = usize::from_str_radix(line.trim().split(';').next().unwrap_or(""), 16)
                .map_err(|_| HttpError::Protocol(format!("bad chunk size {line:?}")))?;
            if size == 0 {
                loop {
                    line.clear();
                    let n = s.read_line(&mut line).await.map_err(io)?;
                    if n == 0 || line.trim_end().is_empty() {
                        break;
                    }
                }
                break;
            }
            let start = buf.len();
            buf.resize(start + size + 2, 0);
            s.read_exact(&mut buf[start..]).await.map_err(io)?;
            buf.truncate(start + size);
        }
    } else if let Some(n) = length {
        buf.resize(n, 0);
        s.read_exact(buf).await.map_err(io)?;
    } else {
        s.read_to_end(buf).await.map_err(io)?;
        keep = false;
    }
    Ok((status, keep))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    /// Answers three requests on one connection: Content-Length, chunked, then
    /// HTTP/1.0 read-to-close.
    #[tokio::test]
    async fn http_conn_reads_every_framing() {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            let (s, _) = l.accept().await.unwrap();
            let mut s = BufReader::new(s);
            let answers: [&[u8]; 3] = [
                b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
                b"HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n4\r\ndefg\r\n0\r\n\r\n",
                b"HTTP/1.0 200 OK\r\n\r\nuntil close",
            ];
            for a in answers {
                let mut line = String::new();
                loop {
                    line.clear();
                    s.read_line(&mut line).await.unwrap();
                    if line.trim_end().is_empty() {
                        break;
                    }
                }
                s.get_mut().write_all(a).await.unwrap();
            }
        });
        let mut c = HttpConn::new(addr);
        let req = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";
        assert_eq!(c.get(req).await.unwrap(), 5);
        assert_eq!(c.exchange(req).await.unwrap(), 404);
        assert_eq!(&c.buf, b"abcdefg");
        assert_eq!(c.get(req).await.unwrap(), 11);
        assert!(c.stream.is_none());
    }

    #[test]
    fn forms_are_percent_encoded() {
        assert_eq!(
            form_urlencode(&[("a b", "<x y=\"1\"/>"), ("c", "é&")]),
            "a+b=%3Cx+y%3D%221%22%2F%3E&c=%C3%A9%26"
        );
    }
}
