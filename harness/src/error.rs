//! What can go wrong while running a cluster of processes.

/// Every failure of the harness; none is a panic.
#[derive(Debug, thiserror::Error)]
pub enum HarnessError {
    #[error("{0}: {1}")]
    Io(String, std::io::Error),
    #[error("`slapos {args}` failed: {output}")]
    Command { args: String, output: String },
    #[error("{0}")]
    Timeout(String),
    #[error("master client: {0}")]
    Client(#[from] master_client::ClientError),
    #[error("refused by the master: {0}")]
    Domain(String),
    #[error("unknown replica {0}")]
    Unknown(u64),
    #[error("replica {0} does not run")]
    NotRunning(u64),
    #[error("replica {id} exited at start-up: {status}")]
    Exited {
        id: u64,
        status: std::process::ExitStatus,
    },
    /// A read of one replica's state that did not come back (the reason as the replica
    /// or the client gave it).
    #[error("{0}")]
    Read(String),
    /// Two replicas at the same applied index with different states.
    #[error("{0}")]
    Diverged(String),
    #[error("no free loopback port in {0}..{1}")]
    NoFreePort(u32, u32),
}
