//! The benchmarks' and the chaos workload's connection to a gateway: many requests, one
//! after the other, on one keep-alive connection (reopened when the server closes it),
//! over the workspace's one HTTP client (`http-client`).

use std::sync::Arc;
use std::time::Duration;

use http_client::{Client, Endpoint, Options, Request};

/// Why an exchange failed. `NotSent` means the request never left this process (the
/// server cannot have acted on it); anything else may have reached the server.
pub use http_client::Error as HttpError;

/// One client's persistent HTTP/1.1 connection to a gateway.
pub struct HttpConn {
    addr: String,
    /// `None`: `addr` is not `host:port` (every exchange fails with `BadUrl`).
    endpoint: Option<Endpoint>,
    client: Client,
    /// The body of the last answer.
    pub buf: Vec<u8>,
}

/// The callers bound each call themselves (`tokio::time::timeout`, the workload's
/// per-operation timeout); these bounds only keep a forgotten call from hanging forever.
fn options() -> Options {
    Options {
        connect_timeout: Duration::from_secs(10),
        timeout: Duration::from_secs(120),
        deadline: Duration::from_secs(240),
        keep_alive: Some(Duration::from_secs(90)),
        ..Options::default()
    }
}

impl HttpConn {
    pub fn new(addr: impl Into<String>) -> Self {
        HttpConn::build(addr.into(), None)
    }

    /// HTTPS to `addr` (`host:port`, the host an IP address or a name the server's
    /// certificate carries) with this client configuration.
    pub fn with_tls(addr: impl Into<String>, tls: Arc<rustls::ClientConfig>) -> Self {
        HttpConn::build(addr.into(), Some(tls))
    }

    fn build(addr: String, tls: Option<Arc<rustls::ClientConfig>>) -> Self {
        HttpConn {
            endpoint: Endpoint::from_addr(&addr, tls.is_some()).ok(),
            addr,
            client: Client::new(tls, options()),
            buf: Vec::new(),
        }
    }

    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// Sends `request` and returns the answer's status; its body is in `buf`.
    pub async fn send(&mut self, request: Request) -> Result<u16, HttpError> {
        let endpoint = self
            .endpoint
            .as_ref()
            .ok_or_else(|| HttpError::BadUrl(self.addr.clone()))?;
        let answer = self.client.send(endpoint, request).await?;
        self.buf = answer.body;
        Ok(answer.status)
    }

    /// Sends `request`; the body's length when the status is 200, an error otherwise.
    pub async fn get(&mut self, request: Request) -> Result<usize, String> {
        match self.send(request).await {
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
        self.send(Request::post_form(path, fields)).await
    }

    /// POST a JSON body to `path` (a JSON-RPC method of the gateway).
    pub async fn post_json(&mut self, path: &str, body: &str) -> Result<u16, HttpError> {
        self.send(Request::post_json(path, body.to_owned())).await
    }

    /// GET `path` with these query fields.
    pub async fn get_query(
        &mut self,
        path: &str,
        fields: &[(&str, &str)],
    ) -> Result<u16, HttpError> {
        self.send(Request::get_query(path, fields)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    use tokio::net::TcpListener;

    /// Answers three requests on one connection: Content-Length, chunked, then
    /// HTTP/1.0 read-to-close.
    #[tokio::test]
    async fn http_conn_reads_every_framing() {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            let (s, _) = l.accept().await.unwrap();
            drop(l);
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
        assert_eq!(c.get(Request::get("/")).await.unwrap(), 5);
        assert_eq!(c.send(Request::get("/")).await.unwrap(), 404);
        assert_eq!(&c.buf, b"abcdefg");
        assert_eq!(c.get(Request::get("/")).await.unwrap(), 11);
        // the server is gone: nothing sent
        let e = c.send(Request::get("/")).await.unwrap_err();
        assert!(matches!(e, HttpError::NotSent(_)), "{e}");
    }
}
