//! The master as a Raft group: openraft over raft-store (RocksDB), replicas talking gRPC.

pub mod metrics;
pub mod network;
mod sm;
pub mod types;

pub use types::{NodeId, NodeInfo, Raft, TypeConfig};
pub mod client;
pub mod node;
pub mod service;
pub mod tls;

/// The wall-clock time a proposer stamps on a command (microseconds since the epoch).
/// Only proposers read it; `apply` never does (see the domain's determinism rule).
pub fn proposer_time() -> crate::domain::Timestamp {
    crate::domain::Timestamp(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_micros() as u64)
            .unwrap_or_default(),
    )
}
