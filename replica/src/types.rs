//! openraft's type configuration for the master, and what a replica is.

use serde::{Deserialize, Serialize};
use slapos_domain::{Command, Outcome};
use std::fmt;
use std::io::Cursor;

/// A replica as the membership records it: where to reach it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    /// host:port of its Raft gRPC service.
    pub raft_addr: String,
    /// host:port of its master API.
    pub api_addr: String,
    /// Where it runs (region label), for operators.
    #[serde(default)]
    pub region: String,
    /// `computer/partition` when the replica is hosted in a partition (the
    /// slapos-master release), for operators; empty otherwise.
    #[serde(default)]
    pub hosted_by: String,
    /// The URL of the SLAP gateway beside the replica, when it has one (the
    /// slapos-master release): gateways tell node agents the group's gateways from these.
    #[serde(default)]
    pub gateway_url: String,
}

impl NodeInfo {
    /// The same replica as `other`: addresses, region and hosting equal (the gateway URL
    /// is descriptive: a member that joined without one is still the same replica).
    pub fn same_replica(&self, other: &NodeInfo) -> bool {
        self.raft_addr == other.raft_addr
            && self.api_addr == other.api_addr
            && self.region == other.region
            && self.hosted_by == other.hosted_by
    }
}

impl fmt::Display for NodeInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "raft={} api={}", self.raft_addr, self.api_addr)?;
        if !self.region.is_empty() {
            write!(f, " region={}", self.region)?;
        }
        Ok(())
    }
}

openraft::declare_raft_types!(
    /// The master's Raft. One log entry carries a batch of commands (group commit: the
    /// leader packs the writes that arrive while earlier batches are in flight); the
    /// response holds one outcome per command, in order.
    pub TypeConfig:
        D = Vec<Command>,
        R = Vec<Outcome>,
        Node = NodeInfo,
);

pub type NodeId = u64;
pub type Raft = openraft::Raft<TypeConfig>;
pub type LogStore = raft_store::LogStore<TypeConfig>;
pub type StateMachineStore = raft_store::StateMachineStore<TypeConfig, crate::sm::Machine>;
pub type StateHandle = raft_store::StateMachineHandle<crate::sm::Machine>;
