//! One simulated node's HTTP/1.1 connection: hyper's connection-level client over a TCP
//! socket bound to a chosen source address (http-client's pooled client picks its own),
//! a connection task and a sender, nothing else, so a hundred thousand of them stay cheap.

use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;
use tokio::net::TcpSocket;

/// A connection's sending half (its I/O runs in a task of its own).
pub struct Conn {
    sender: SendRequest<Empty<Bytes>>,
    host: String,
}

/// An answer: its status, its `ETag` (verbatim, quotes included) and its body's length.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub etag: Option<String>,
    pub bytes: usize,
}

impl Conn {
    /// Connect to `dest` from `source` (any port), within `timeout`.
    pub async fn open(
        dest: SocketAddr,
        source: Option<IpAddr>,
        timeout: Duration,
    ) -> Result<Conn, String> {
        let socket = if dest.is_ipv4() {
            TcpSocket::new_v4()
        } else {
            TcpSocket::new_v6()
        }
        .map_err(|e| format!("socket: {e}"))?;
        if let Some(ip) = source {
            socket
                .bind(SocketAddr::new(ip, 0))
                .map_err(|e| format!("bind {ip}: {e}"))?;
        }
        let stream = tokio::time::timeout(timeout, socket.connect(dest))
            .await
            .map_err(|_| format!("connect {dest}: no answer within {timeout:?}"))?
            .map_err(|e| format!("connect {dest}: {e}"))?;
        let _ = stream.set_nodelay(true);
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| format!("handshake: {e}"))?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "node connection ended");
            }
        });
        Ok(Conn {
            sender,
            host: dest.to_string(),
        })
    }

    /// Whether the server closed the connection.
    pub fn is_closed(&self) -> bool {
        self.sender.is_closed()
    }

    /// `GET target`, with `If-None-Match` and `Prefer: wait=N` when given; the body is
    /// read and dropped.
    pub async fn get(
        &mut self,
        target: &str,
        if_none_match: Option<&str>,
        wait_s: Option<u64>,
    ) -> Result<Answer, String> {
        self.sender
            .ready()
            .await
            .map_err(|e| format!("connection: {e}"))?;
        let mut request = hyper::Request::get(target).header(hyper::header::HOST, &self.host);
        if let Some(tag) = if_none_match {
            request = request.header(hyper::header::IF_NONE_MATCH, tag);
        }
        if let Some(w) = wait_s {
            request = request.header("Prefer", format!("wait={w}"));
        }
        let request = request
            .body(Empty::new())
            .map_err(|e| format!("request: {e}"))?;
        let answer = self
            .sender
            .send_request(request)
            .await
            .map_err(|e| format!("exchange: {e}"))?;
        let status = answer.status().as_u16();
        let etag = answer
            .headers()
            .get(hyper::header::ETAG)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let mut body = answer.into_body();
        let mut bytes = 0;
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| format!("body: {e}"))?;
            if let Ok(data) = frame.into_data() {
                bytes += data.len();
            }
        }
        Ok(Answer {
            status,
            etag,
            bytes,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    use tokio::net::TcpListener;

    /// A server that answers 200 with an ETag, then 304 to the conditional request, and
    /// sees the headers the node sends.
    #[tokio::test]
    async fn conditional_get_on_one_connection() {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (s, peer) = l.accept().await.unwrap();
            let mut s = BufReader::new(s);
            let mut heads = Vec::new();
            for answer in [
                &b"HTTP/1.1 200 OK\r\nETag: \"7\"\r\nContent-Length: 3\r\n\r\nabc"[..],
                &b"HTTP/1.1 304 Not Modified\r\nETag: \"7\"\r\n\r\n"[..],
            ] {
                let mut head = String::new();
                loop {
                    let mut line = String::new();
                    s.read_line(&mut line).await.unwrap();
                    if line.trim_end().is_empty() {
                        break;
                    }
                    head.push_str(&line);
                }
                heads.push(head);
                s.get_mut().write_all(answer).await.unwrap();
            }
            (heads, peer)
        });
        let source: IpAddr = "127.0.0.3".parse().unwrap();
        let mut c = Conn::open(addr, Some(source), Duration::from_secs(5))
            .await
            .unwrap();
        let a = c.get("/x?computer_id=C", None, None).await.unwrap();
        assert_eq!(
            (a.status, a.etag.as_deref(), a.bytes),
            (200, Some("\"7\""), 3)
        );
        let b = c
            .get("/x?computer_id=C", Some("\"7\""), Some(30))
            .await
            .unwrap();
        assert_eq!((b.status, b.bytes), (304, 0));
        let (heads, peer) = server.await.unwrap();
        assert_eq!(peer.ip(), source);
        assert!(heads[0].starts_with("GET /x?computer_id=C HTTP/1.1"));
        let second = heads[1].to_ascii_lowercase();
        assert!(second.contains("if-none-match: \"7\""), "{second}");
        assert!(second.contains("prefer: wait=30"), "{second}");
    }
}
