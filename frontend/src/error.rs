//! Typed errors: of the whole sites file (which keeps the previous sites), and of one
//! site (which refuses that site alone, its message published in `request-error-list`).

use std::path::PathBuf;

/// The sites file cannot be used at all.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("sites file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("sites file: {0}")]
    Syntax(String),
    #[error("default certificate: {0}")]
    DefaultCertificate(String),
    #[error("log directory {path}: {source}")]
    LogDir {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// One site refused; the text is what its owner reads in `request-error-list`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SiteError {
    #[error("{0}: missing")]
    Missing(&'static str),
    #[error("{param}: {reason}")]
    BadUrl { param: &'static str, reason: String },
    #[error("type: \"{0}\" is not one of \"\", \"websocket\", \"redirect\"")]
    UnknownType(String),
    #[error("{param}: \"{domain}\" refused: {reason}")]
    BadDomain {
        param: &'static str,
        domain: String,
        reason: String,
    },
    #[error("no custom_domain, and the frontend has no domain to make one")]
    NoDomain,
    #[error("{param}: {reason}")]
    BadValue { param: &'static str, reason: String },
    #[error("reference: {0}")]
    BadReference(String),
    #[error("reference: another site of this frontend has the same reference")]
    DuplicateReference,
    #[error("{domain}: already served by another site of this frontend")]
    DomainTaken { domain: String },
    #[error("certificate: {0}")]
    Certificate(String),
}

/// Binding or serving failed.
#[derive(Debug, thiserror::Error)]
pub enum FrontendError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("bind {addr}: {source}")]
    Bind {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("TLS: {0}")]
    Tls(String),
}
