//! What a fault is, as the schedule draws it and the report tells it: below the
//! injector ([`crate::faults`]), the groups that say which kinds they cannot take
//! (`group`) and the checkers ([`crate::check`]).

use serde::Serialize;

/// The kinds of fault the schedule draws from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultKind {
    /// `kill -9` of the leader, restarted after the hold.
    KillLeader,
    /// `kill -9` of a random replica (maybe the leader), restarted after the hold.
    KillReplica,
    /// SIGSTOP of the leader, SIGCONT after the hold.
    PauseLeader,
    /// The leader's host cut from every other host (namespaces only).
    IsolateLeader,
    /// The hosts split into a minority and a majority at random (namespaces only).
    SplitGroup,
    /// A follower removed, its data directory wiped, and back under a new id.
    WipeRejoin,
    /// `kill -9` of a gateway while clients use it, restarted after the hold.
    KillGateway,
    /// A replica's disk full: the tmpfs under its data directory shrunk to what it uses
    /// plus half its free-space reserve, grown back after the hold (root only).
    DiskFull,
    /// A replica's disk failing: the FUSE passthrough under its data directory answers
    /// writes and syncs (or every operation) with EIO, healthy again after the hold
    /// (root only).
    IoError,
}

impl FaultKind {
    pub const ALL: [FaultKind; 9] = [
        FaultKind::KillLeader,
        FaultKind::KillReplica,
        FaultKind::PauseLeader,
        FaultKind::IsolateLeader,
        FaultKind::SplitGroup,
        FaultKind::WipeRejoin,
        FaultKind::KillGateway,
        FaultKind::DiskFull,
        FaultKind::IoError,
    ];

    /// The kind named as in the report (`kill_leader`, ...).
    pub fn parse(name: &str) -> Option<FaultKind> {
        FaultKind::ALL.into_iter().find(|k| k.name() == name)
    }

    pub fn name(self) -> &'static str {
        match self {
            FaultKind::KillLeader => "kill_leader",
            FaultKind::KillReplica => "kill_replica",
            FaultKind::PauseLeader => "pause_leader",
            FaultKind::IsolateLeader => "isolate_leader",
            FaultKind::SplitGroup => "split_group",
            FaultKind::WipeRejoin => "wipe_rejoin",
            FaultKind::KillGateway => "kill_gateway",
            FaultKind::DiskFull => "disk_full",
            FaultKind::IoError => "io_error",
        }
    }

    /// Whether the kind acts on a replica's faulty disk (root, replicas as processes).
    pub fn needs_disks(self) -> bool {
        matches!(self, FaultKind::DiskFull | FaultKind::IoError)
    }

    pub(crate) fn needs_namespaces(self) -> bool {
        matches!(self, FaultKind::IsolateLeader | FaultKind::SplitGroup)
    }
}

/// One injected fault.
#[derive(Debug, Clone, Serialize)]
pub struct FaultEvent {
    pub kind: FaultKind,
    pub target: String,
    pub start_ms: u64,
    pub end_ms: u64,
    pub leader_before: Option<u64>,
    /// For a fault that hit the leader: a replica other than the one hit became leader
    /// this long after the injection, or (`leader_after_heal`) the group had a leader again
    /// this long after the injection, once the fault was healed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub new_leader_after_ms: Option<u64>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub leader_after_heal: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub new_leader: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}
