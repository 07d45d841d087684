//! What can go wrong before a tunnel serves (a connection's failure is logged, never
//! returned: one peer cannot stop the tunnel).

use std::net::SocketAddr;
use std::path::PathBuf;

/// Why a tunnel could not start.
#[derive(Debug, thiserror::Error)]
pub enum TunnelError {
    /// A certificate, key or CA file that cannot be read or used.
    #[error("{}: {message}", path.display())]
    File { path: PathBuf, message: String },
    /// The files read, but rustls refused them together (a key that is not the
    /// certificate's, an empty CA...).
    #[error("TLS configuration: {0}")]
    Tls(String),
    /// The listening address is taken or not ours.
    #[error("listening on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    /// Options that make no tunnel (an empty allow-list, a zero limit).
    #[error("{0}")]
    Options(String),
}
