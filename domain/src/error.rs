//! Why a command or query was refused. A refused command changes nothing.

use serde::{Deserialize, Serialize};

/// Domain errors. They are part of the replicated outcome of a command (a retry gets the
/// same error back), so they are plain data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum DomainError {
    #[error("unknown computer '{0}'")]
    UnknownComputer(String),
    #[error("computer '{0}' is already registered")]
    ComputerExists(String),
    #[error("unknown partition '{partition}' on '{computer}'")]
    UnknownPartition { computer: String, partition: String },
    #[error("partition '{partition}' on '{computer}' hosts no instance")]
    PartitionFree { computer: String, partition: String },
    #[error("unknown instance '{0}'")]
    UnknownInstance(String),
    #[error("no shared instance '{reference}' on partition '{partition}' of '{computer}'")]
    UnknownSharedInstance {
        computer: String,
        partition: String,
        reference: String,
    },
    #[error("invalid {field}: {message}")]
    InvalidArgument { field: String, message: String },
    #[error(
        "refusing to drop partitions of '{computer}' that host instances: {}",
        partitions.join(", ")
    )]
    PartitionsInUse {
        computer: String,
        partitions: Vec<String>,
    },
    #[error(
        "unknown SLA key '{0}': not a known SLA parameter nor an attribute any computer declares"
    )]
    UnknownSlaKey(String),
    #[error("no free partition found for '{title}': {reason}")]
    NoCapacity { title: String, reason: String },
    #[error("no partition corresponding to shared instance request '{title}': {reason}")]
    NoSharedHost { title: String, reason: String },
    #[error("an instance titled '{title}' already exists in this {scope}")]
    TitleTaken { title: String, scope: String },
    #[error("'{title}' is requested {state}, not destroyed: refusing to free its partition")]
    NotRequestedDestroyed { title: String, state: String },
    #[error("software release '{url}' is not supplied to '{computer}'")]
    UnknownSoftware { computer: String, url: String },
    #[error("software release '{url}' is not supplied to '{computer}', where the instance runs: its provider supplies it first")]
    NotSupplied { computer: String, url: String },
    #[error("software release '{url}' on '{computer}' is requested available, not destroyed")]
    SoftwareNotDestroyed { computer: String, url: String },
    #[error(
        "request {request} is older than the outcomes kept for its client; its result is unknown"
    )]
    RequestExpired { request: String },
    #[error("usage journal of '{computer}' refused: {reason}")]
    UsageRefused { computer: String, reason: String },
    #[error("forbidden: {0}")]
    Forbidden(String),
    #[error("{who} does not own {what}")]
    NotOwner { who: String, what: String },
    #[error(
        "the journal of '{computer}' for period {period} was recorded before with other lines"
    )]
    JournalConflict { computer: String, period: String },
    #[error("the books are closed until {until}: that period cannot change")]
    PeriodClosed { until: String },
    #[error("another certificate authority is already installed")]
    AuthorityInstalled,
    #[error("no certificate authority is installed (run `slapos master init`)")]
    NoAuthority,
    #[error("certificate serial {0} was recorded before")]
    CertificateKnown(String),
    #[error("registration token refused: {0}")]
    BadToken(String),
    #[error("the proposer's time {proposer} is {skew} from the leader's {leader}, beyond the {bound} allowed: check its clock")]
    ClockSkew {
        proposer: String,
        leader: String,
        skew: String,
        bound: String,
    },
}

impl DomainError {
    pub(crate) fn invalid(field: &str, message: impl Into<String>) -> Self {
        DomainError::InvalidArgument {
            field: field.to_string(),
            message: message.into(),
        }
    }

    /// True for errors that say "this does not exist" (a 404 to a SLAP client).
    pub fn is_not_found(&self) -> bool {
        matches!(
            self,
            DomainError::UnknownComputer(_)
                | DomainError::UnknownPartition { .. }
                | DomainError::UnknownInstance(_)
                | DomainError::UnknownSharedInstance { .. }
                | DomainError::UnknownSoftware { .. }
        )
    }
}
