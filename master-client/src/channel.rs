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

/// A channel that connects on first use (and reconnects after failures).
pub fn lazy_channel(
    addr: &str,
    connect_timeout: Duration,
) -> Result<Channel, tonic::transport::Error> {
    let endpoint = Endpoint::from_shared(grpc_uri(addr))?;
    let endpoint = match crate::tls::client() {
        Some(tls) => endpoint.tls_config(tls.clone())?,
        None => endpoint,
    };
    Ok(endpoint
        .connect_timeout(connect_timeout)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(10))
        .keep_alive_timeout(Duration::from_secs(5))
        .connect_lazy())
}
