//! Why a call failed ([`Error`]), and why a request never left ([`NotSent`]): the
//! client's and the connector's errors, in a room of their own that both use.

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid URL {0:?}")]
    BadUrl(String),
    /// A target or header this client will not put on the wire.
    #[error("cannot send the request: {0}")]
    BadRequest(String),
    #[error("TLS: {0}")]
    Tls(String),
    /// The request never left this process (no connection, no TLS session): the server
    /// cannot have acted on it.
    #[error("connect: {0}")]
    NotSent(NotSent),
    /// The exchange failed after the connection was made: the server may have acted on the
    /// request.
    #[error("{0}")]
    Exchange(String),
    /// No (complete) answer in time: the server may have acted on the request.
    #[error("{0}")]
    Timeout(String),
    #[error("answer over {limit} bytes")]
    TooLarge { limit: usize },
    #[error("cannot start the client's runtime: {0}")]
    Runtime(String),
}

/// Why a request never left this process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unreached {
    /// Nothing listens at the address (the connection was refused).
    Refused,
    /// The server's certificate was refused: not from a trusted authority, expired, or
    /// not for the name it was reached at.
    UntrustedServer,
    /// Anything else (no route, a timeout while connecting, a handshake that failed).
    Other,
}

/// A connection that failed before the request was sent: why, and the causes' words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotSent {
    pub why: Unreached,
    pub detail: String,
}

impl std::fmt::Display for NotSent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.detail)
    }
}

impl NotSent {
    /// The reason, read from the error's chain of sources (the OS's refused connection,
    /// rustls's refused certificate).
    pub(crate) fn of(e: &(dyn std::error::Error + 'static)) -> NotSent {
        let mut why = Unreached::Other;
        let mut cur = Some(e);
        while let Some(s) = cur {
            let tls = s.downcast_ref::<rustls::Error>().or_else(|| {
                s.downcast_ref::<std::io::Error>()
                    .and_then(std::io::Error::get_ref)
                    .and_then(|inner| inner.downcast_ref::<rustls::Error>())
            });
            if matches!(tls, Some(rustls::Error::InvalidCertificate(_))) {
                why = Unreached::UntrustedServer;
                break;
            }
            if s.downcast_ref::<std::io::Error>()
                .is_some_and(|io| io.kind() == std::io::ErrorKind::ConnectionRefused)
            {
                why = Unreached::Refused;
                break;
            }
            cur = s.source();
        }
        NotSent {
            why,
            detail: causes(e),
        }
    }
}

impl Error {
    /// Whether the server cannot have seen the request.
    pub fn is_not_sent(&self) -> bool {
        matches!(
            self,
            Error::NotSent(_) | Error::BadUrl(_) | Error::BadRequest(_) | Error::Tls(_)
        )
    }
}

/// The error and its causes, `a: b: c`.
pub(crate) fn describe(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// The causes of an error that only wraps them (`a: b`, the wrapper left out).
pub(crate) fn causes(e: &dyn std::error::Error) -> String {
    match e.source() {
        Some(s) => describe(s),
        None => e.to_string(),
    }
}
