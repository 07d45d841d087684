//! [`OperatorError`]: what failed in an operator's step, typed by what was being talked to
//! or touched, with the context each step adds ([`Context`]) kept as a chain of sources,
//! so that a caller printing the chain (`anyhow`'s `{:?}` in the binary) shows the same
//! lines as before: the step, then "Caused by:" and what the masters, a gateway or the
//! system said.

use std::path::{Path, PathBuf};

/// Why an operator's command failed.
#[derive(Debug, thiserror::Error)]
pub enum OperatorError {
    /// A file or directory could not be read, written or made.
    #[error("{action} {}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A program this command runs could not be started.
    #[error("start {program}")]
    Spawn {
        program: String,
        #[source]
        source: std::io::Error,
    },
    /// A command this one runs (`slapos master init`, `slapos node format`, ...) failed;
    /// what it wrote on its standard error.
    #[error("{what} failed: {stderr}")]
    Command { what: String, stderr: String },
    /// The masters (their API, `master_client`).
    #[error(transparent)]
    Masters(#[from] master_client::ClientError),
    /// This process's certificate for the masters.
    #[error(transparent)]
    Tls(#[from] master_client::tls::TlsError),
    /// A gateway over SLAP (the admin's requests and supplies).
    #[error(transparent)]
    Slap(#[from] slapgrid::client::SlapError),
    /// A gateway over JSON-RPC (instance lists and documents, computers).
    #[error(transparent)]
    Gateway(#[from] slap_gateway::client::ClientError),
    /// The group's certificate authority: a key or request made here, a certificate read.
    #[error(transparent)]
    Authority(#[from] slapos_ca::CaError),
    /// An identity that is not one (`replica:N`, `person:ID`, ...).
    #[error(transparent)]
    Identity(#[from] slapos_domain::BadIdentity),
    /// The group refused an operator's command (its state machine's answer).
    #[error(transparent)]
    Refused(#[from] slapos_domain::DomainError),
    /// A gateway's answer that is not what was asked for.
    #[error("{what}")]
    BadAnswer {
        what: &'static str,
        #[source]
        source: Option<serde_json::Error>,
    },
    /// The group answered a command with something it should not have.
    #[error("unexpected answer {0}")]
    UnexpectedAnswer(String),
    /// The group's state, as read, could not be decoded.
    #[error(transparent)]
    State(#[from] slapos_domain::PersistError),
    /// A file this command keeps (`bootstrap.json`) is not what it wrote.
    #[error("{} is not {what}", path.display())]
    Corrupt {
        path: PathBuf,
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },
    /// The network namespaces of `slapos up`'s nodes.
    #[error(transparent)]
    Network(#[from] crate::netns::NetError),
    /// A precondition does not hold: refused before anything (more) was changed, with
    /// what to do about it.
    #[error("{0}")]
    Precondition(String),
    /// A process `slapos up` started exited while a step waited on it: its exit status,
    /// its log and the log's last lines.
    #[error("{name} exited ({status}) while the cluster started; the end of {}:\n{tail}", log.display())]
    Exited {
        name: String,
        status: String,
        log: PathBuf,
        tail: String,
    },
    /// What a step waits for did not happen in time.
    #[error("{0}")]
    Timeout(String),
    /// An HTTPS exchange that did not complete (a backup uploaded).
    #[error("{url}: {source}")]
    Http {
        url: String,
        #[source]
        source: http_client::Error,
    },
    /// An HTTPS server that refused what was sent: its status and what it said.
    #[error("{url} answered {status}: {body}")]
    HttpRefused {
        url: String,
        status: u16,
        body: String,
    },
    /// No randomness for a secret.
    #[error("no randomness for a token")]
    NoRandomness,
    /// A step's own words around what failed under it.
    #[error("{context}")]
    Context {
        context: String,
        #[source]
        source: Box<OperatorError>,
    },
}

impl OperatorError {
    /// What failed under every step's context.
    pub fn root(&self) -> &OperatorError {
        match self {
            OperatorError::Context { source, .. } => source.root(),
            other => other,
        }
    }

    pub(crate) fn io(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.to_path_buf();
        move |source| OperatorError::Io {
            action,
            path,
            source,
        }
    }
}

/// A step's words around an error (as `anyhow::Context` has it, typed).
pub(crate) trait Context<T> {
    fn context(self, context: impl Into<String>) -> Result<T, OperatorError>;
    fn with_context<S: Into<String>>(self, f: impl FnOnce() -> S) -> Result<T, OperatorError>;
}

impl<T, E: Into<OperatorError>> Context<T> for Result<T, E> {
    fn context(self, context: impl Into<String>) -> Result<T, OperatorError> {
        self.map_err(|e| OperatorError::Context {
            context: context.into(),
            source: Box::new(e.into()),
        })
    }

    fn with_context<S: Into<String>>(self, f: impl FnOnce() -> S) -> Result<T, OperatorError> {
        self.map_err(|e| OperatorError::Context {
            context: f().into(),
            source: Box::new(e.into()),
        })
    }
}

/// A missing value as a refused precondition.
pub(crate) trait Require<T> {
    fn require<S: Into<String>>(self, why: impl FnOnce() -> S) -> Result<T, OperatorError>;
}

impl<T> Require<T> for Option<T> {
    fn require<S: Into<String>>(self, why: impl FnOnce() -> S) -> Result<T, OperatorError> {
        self.ok_or_else(|| OperatorError::Precondition(why().into()))
    }
}

/// Returns early with a refused precondition.
macro_rules! refuse {
    ($($arg:tt)*) => {
        return Err($crate::error::OperatorError::Precondition(format!($($arg)*)))
    };
}
pub(crate) use refuse;
