//! A client of the gateway's JSON-RPC API, for the `slapos` commands that read or change
//! accounting (`slapos usage`, `slapos invoice`, `slapos price`): one POST per call over
//! HTTP/1.1, plain or TLS (the server verified against a CA file), `Connection: close`.
//! Small on purpose: the commands make a handful of calls, so no pool and no HTTP stack.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::ServerName;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

/// Largest answer read (an invoice of a busy customer over a long period is large).
const MAX_ANSWER: usize = 512 << 20;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("invalid gateway URL {0:?}: expected http://host:port/ or https://host:port/")]
    BadUrl(String),
    #[error("TLS: {0}")]
    Tls(String),
    #[error("cannot reach {addr}: {source}")]
    Connect {
        addr: String,
        source: std::io::Error,
    },
    #[error("exchange with {addr} failed: {source}")]
    Io {
        addr: String,
        source: std::io::Error,
    },
    #[error("malformed answer: {0}")]
    BadAnswer(String),
    /// The gateway refused the call: its status and message.
    #[error("{status}: {title}")]
    Refused { status: u16, title: String },
}

/// Where the gateway is and how to talk to it.
#[derive(Clone)]
pub struct JsonRpcClient {
    host: String,
    port: u16,
    prefix: String,
    tls: Option<tokio_rustls::TlsConnector>,
}

impl JsonRpcClient {
    /// A client of the gateway at `url` (`http://` or `https://`, optional path prefix);
    /// for HTTPS, `ca` is the PEM file of the certificate authority that signed the
    /// gateway's certificate, and `identity` the caller's certificate and key (PEM files)
    /// for a gateway that requires client certificates.
    pub fn new(
        url: &str,
        ca: Option<&Path>,
        identity: Option<(&Path, &Path)>,
    ) -> Result<Self, ClientError> {
        let bad = || ClientError::BadUrl(url.to_string());
        let (tls, rest) = if let Some(rest) = url.strip_prefix("https://") {
            (true, rest)
        } else if let Some(rest) = url.strip_prefix("http://") {
            (false, rest)
        } else {
            return Err(bad());
        };
        let (authority, prefix) = match rest.find('/') {
            Some(i) => (&rest[..i], rest[i..].trim_end_matches('/')),
            None => (rest, ""),
        };
        let default_port = if tls { 443 } else { 80 };
        let port_of = |p: &str| p.parse::<u16>().map_err(|_| bad());
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (host, after) = v6.split_once(']').ok_or_else(bad)?;
            match after {
                "" => (host, default_port),
                after => (host, port_of(after.strip_prefix(':').ok_or_else(bad)?)?),
            }
        } else {
            match authority.split_once(':') {
                Some((host, p)) => (host, port_of(p)?),
                None => (authority, default_port),
            }
        };
        if host.is_empty() {
            return Err(bad());
        }
        let tls = if tls {
            Some(connector(ca, identity)?)
        } else {
            None
        };
        Ok(JsonRpcClient {
            host: host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_string(),
            port,
            prefix: prefix.to_string(),
            tls,
        })
    }

    fn addr(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// POSTs `body` to `method`; the answer's JSON on 200, [`ClientError::Refused`] with
    /// the gateway's `title` otherwise.
    pub async fn call(&self, method: &str, body: &Value) -> Result<Value, ClientError> {
        let addr = self.addr();
        let stream = TcpStream::connect(&addr)
            .await
            .map_err(|source| ClientError::Connect {
                addr: addr.clone(),
                source,
            })?;
        let body = body.to_string();
        let request = format!(
            "POST {}/{method} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
             Accept: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            self.prefix,
            body.len()
        );
        let raw = match &self.tls {
            None => exchange(stream, request.as_bytes(), &addr).await?,
            Some(connector) => {
                let name = ServerName::try_from(self.host.clone())
                    .map_err(|e| ClientError::Tls(format!("{}: {e}", self.host)))?;
                let stream = connector
                    .connect(name, stream)
                    .await
                    .map_err(|e| ClientError::Tls(e.to_string()))?;
                exchange(stream, request.as_bytes(), &addr).await?
            }
        };
        let (status, body) = parse_answer(&raw)?;
        let value: Value = serde_json::from_slice(&body)
            .map_err(|e| ClientError::BadAnswer(format!("status {status}, not JSON: {e}")))?;
        if status != 200 {
            let title = value
                .get("title")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            return Err(ClientError::Refused { status, title });
        }
        Ok(value)
    }
}

fn connector(
    ca: Option<&Path>,
    identity: Option<(&Path, &Path)>,
) -> Result<tokio_rustls::TlsConnector, ClientError> {
    crate::server::tls::install_crypto_provider();
    let ca = ca.ok_or_else(|| {
        ClientError::Tls(
            "an https:// gateway needs the CA certificate that signed it (--ca)".into(),
        )
    })?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca)
        .map_err(|e| ClientError::Tls(format!("{}: {e}", ca.display())))?
    {
        let cert = cert.map_err(|e| ClientError::Tls(format!("{}: {e}", ca.display())))?;
        roots
            .add(cert)
            .map_err(|e| ClientError::Tls(format!("{}: {e}", ca.display())))?;
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| ClientError::Tls(e.to_string()))?
    .with_root_certificates(roots);
    let config = match identity {
        None => config.with_no_client_auth(),
        Some((cert, key)) => {
            let chain = CertificateDer::pem_file_iter(cert)
                .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
                .map_err(|e| ClientError::Tls(format!("{}: {e}", cert.display())))?;
            let key = PrivateKeyDer::from_pem_file(key)
                .map_err(|e| ClientError::Tls(format!("{}: {e}", key.display())))?;
            config
                .with_client_auth_cert(chain, key)
                .map_err(|e| ClientError::Tls(e.to_string()))?
        }
    };
    Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
}

async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    request: &[u8],
    addr: &str,
) -> Result<Vec<u8>, ClientError> {
    let io = |source| ClientError::Io {
        addr: addr.to_string(),
        source,
    };
    stream.write_all(request).await.map_err(io)?;
    stream.flush().await.map_err(io)?;
    let mut out = Vec::new();
    let mut limited = (&mut stream).take(MAX_ANSWER as u64 + 1);
    match limited.read_to_end(&mut out).await {
        Ok(_) => {}
        // a TLS peer that closes without close_notify after a complete answer
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !out.is_empty() => {}
        Err(e) => return Err(io(e)),
    }
    if out.len() > MAX_ANSWER {
        return Err(ClientError::BadAnswer(format!(
            "answer over {MAX_ANSWER} bytes"
        )));
    }
    Ok(out)
}

/// The status and body of an HTTP/1.1 answer read to its end.
fn parse_answer(raw: &[u8]) -> Result<(u16, Vec<u8>), ClientError> {
    let bad = |m: &str| ClientError::BadAnswer(m.to_string());
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| bad("no end of headers"))?;
    let head = std::str::from_utf8(&raw[..end]).map_err(|_| bad("headers not UTF-8"))?;
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or_else(|| bad("no status line"))?;
    let mut chunked = false;
    let mut length = None;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("transfer-encoding") && value.eq_ignore_ascii_case("chunked") {
            chunked = true;
        } else if name.eq_ignore_ascii_case("content-length") {
            length = value.parse::<usize>().ok();
        }
    }
    let body = &raw[end + 4..];
    if chunked {
        return Ok((
            status,
            dechunk(body).ok_or_else(|| bad("bad chunked body"))?,
        ));
    }
    match length {
        Some(n) if body.len() < n => Err(bad("answer cut short")),
        Some(n) => Ok((status, body[..n].to_vec())),
        None => Ok((status, body.to_vec())),
    }
}

fn dechunk(mut body: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = body.windows(2).position(|w| w == b"\r\n")?;
        let size_text = std::str::from_utf8(&body[..line_end]).ok()?;
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        body = &body[line_end + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(body.get(..size)?);
        body = body.get(size + 2..)?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_and_answers() {
        let c = JsonRpcClient::new("http://127.0.0.1:8080/", None, None).unwrap();
        assert_eq!((c.addr(), c.prefix.as_str()), ("127.0.0.1:8080".into(), ""));
        let c = JsonRpcClient::new("http://[::1]:9/slap", None, None).unwrap();
        assert_eq!((c.addr(), c.prefix.as_str()), ("[::1]:9".into(), "/slap"));
        assert!(JsonRpcClient::new("ftp://x", None, None).is_err());
        assert!(JsonRpcClient::new("http://:1/", None, None).is_err());
        assert!(matches!(
            JsonRpcClient::new("https://gw:1/", None, None),
            Err(ClientError::Tls(_))
        ));
        let (s, b) = parse_answer(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}").unwrap();
        assert_eq!((s, b.as_slice()), (200, &b"{}"[..]));
        let (s, b) = parse_answer(
            b"HTTP/1.1 403 Forbidden\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n",
        )
        .unwrap();
        assert_eq!((s, b.as_slice()), (403, &b"{}"[..]));
        assert!(parse_answer(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n{}").is_err());
    }
}
