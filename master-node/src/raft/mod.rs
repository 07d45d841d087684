//! The master as a Raft group: openraft over raft-store (RocksDB), replicas talking gRPC.

pub mod metrics;
pub mod network;
mod sm;
pub mod types;

pub use types::{NodeId, NodeInfo, Raft, TypeConfig};
pub mod client;
pub mod node;
pub mod service;
