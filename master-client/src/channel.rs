//! gRPC channels to the masters: `host:port` to a URI, lazily connected, with the
//! process's TLS identity when it has one.

use std::time::Duration;
use tonic::transport::{Channel, Endpoint};

/// `host:port` to a URI tonic accepts (`https://` once the process has TLS set up).
pub fn grpc_uri(addr: &str) -> String {
    if addr.starts_with("http://") || addr.starts_with("https://") {
        addr.to_string()
    } else if crate::tls::client().is_some() {
        format!("https://{addr}")
    } else {
        format!("http://{addr}")
    }
}

/// The endpoint of a master at `addr`: the process's TLS identity when it has one, no
/// Nagle delay, HTTP/2 keep-alives.
pub fn endpoint(
    addr: &str,
    connect_timeout: Duration,
) -> Result<Endpoint, tonic::transport::Error> {
    let endpoint = Endpoint::from_shared(grpc_uri(addr))?;
    let endpoint = match crate::tls::client() {
        Some(tls) => endpoint.tls_config(tls.clone())?,
        None => endpoint,
    };
    Ok(endpoint
        .connect_timeout(connect_timeout)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(10))
        .keep_alive_timeout(Duration::from_secs(5)))
}

/// A channel that connects on first use (and reconnects after failures).
pub fn lazy_channel(
    addr: &str,
    connect_timeout: Duration,
) -> Result<Channel, tonic::transport::Error> {
    Ok(endpoint(addr, connect_timeout)?.connect_lazy())
}

/// Whether the server at `addr` (`host:port`) answers the HTTP/2 preface with a TLS
/// record (an alert or a handshake: content type 21 or 22, then TLS's major version 3),
/// as a TLS server does to a client speaking in clear. False when it cannot be reached
/// or says anything else.
pub async fn speaks_tls(addr: &str, timeout: Duration) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    if addr.contains("://") {
        return false;
    }
    let probe = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await?;
        stream
            .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
            .await?;
        let mut head = [0u8; 2];
        stream.read_exact(&mut head).await?;
        Ok::<bool, std::io::Error>(matches!(head, [21 | 22, 3]))
    };
    matches!(tokio::time::timeout(timeout, probe).await, Ok(Ok(true)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A server on a free port that reads what comes and answers `reply`.
    async fn server(reply: &'static [u8]) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let mut buf = [0u8; 24];
                let _ = s.read_exact(&mut buf).await;
                let _ = s.write_all(reply).await;
            }
        });
        addr
    }

    #[tokio::test]
    async fn a_tls_server_is_told_from_a_plain_one() {
        let t = Duration::from_secs(2);
        // rustls's answer to a clear-text preface: a fatal decode_error alert.
        assert!(speaks_tls(&server(&[21, 3, 3, 0, 2, 2, 50]).await, t).await);
        // An HTTP/2 server's SETTINGS frame, and an HTTP/1 one's refusal.
        assert!(!speaks_tls(&server(&[0, 0, 0, 4, 0, 0, 0, 0, 0]).await, t).await);
        assert!(!speaks_tls(&server(b"HTTP/1.1 400 Bad Request\r\n\r\n").await, t).await);
        // Nobody there.
        let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = closed.local_addr().unwrap().to_string();
        drop(closed);
        assert!(!speaks_tls(&addr, t).await);
    }
}
