//! The control protocol: one JSON [`Request`] per line, answered by one JSON [`Reply`]
//! line, on the Unix socket `IR/sv.sock`. Line-delimited JSON keeps both ends trivial
//! (std only) and lets an operator poke the daemon with `socat`.

use super::{ControlOp, GroupSpec, ProcessStatus, SupervisorError};

/// Longest request line accepted (a group spec is a few KiB at most).
pub(crate) const MAX_LINE: u64 = 4 << 20;

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub(crate) enum Request {
    Ping,
    Apply(Box<GroupSpec>),
    Remove { partition_id: String },
    Status,
    Control { op: ControlOp, target: String },
    StartAll,
    Shutdown,
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub(crate) enum Reply {
    Pong,
    Applied { changed: bool },
    Done,
    Status(Vec<ProcessStatus>),
    Error(RemoteError),
}

/// An error as it crosses the socket.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub(crate) enum RemoteError {
    InvalidSpec(String),
    UnknownGroup(String),
    UnknownProcess(String),
    ShuttingDown,
    Protocol(String),
    Failed(String),
}

impl From<SupervisorError> for RemoteError {
    fn from(e: SupervisorError) -> RemoteError {
        match e {
            SupervisorError::InvalidSpec(m) => RemoteError::InvalidSpec(m),
            SupervisorError::UnknownGroup(m) => RemoteError::UnknownGroup(m),
            SupervisorError::UnknownProcess(m) => RemoteError::UnknownProcess(m),
            SupervisorError::ShuttingDown => RemoteError::ShuttingDown,
            SupervisorError::Protocol(m) => RemoteError::Protocol(m),
            other => RemoteError::Failed(other.to_string()),
        }
    }
}

impl From<RemoteError> for SupervisorError {
    fn from(e: RemoteError) -> SupervisorError {
        match e {
            RemoteError::InvalidSpec(m) => SupervisorError::InvalidSpec(m),
            RemoteError::UnknownGroup(m) => SupervisorError::UnknownGroup(m),
            RemoteError::UnknownProcess(m) => SupervisorError::UnknownProcess(m),
            RemoteError::ShuttingDown => SupervisorError::ShuttingDown,
            RemoteError::Protocol(m) => SupervisorError::Protocol(m),
            RemoteError::Failed(m) => SupervisorError::Daemon(m),
        }
    }
}
