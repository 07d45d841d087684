//! A master replica: one voter of the Raft group that is the SlapOS master. openraft over
//! raft-store (RocksDB) applies the domain's commands (`slapos-domain`); replicas talk
//! gRPC to each other ([`network`], [`service::RaftService`]) and serve the master API to
//! gateways and operators ([`service::MasterService`]), whose leader signs certificates
//! with the group's authority (`slapos-ca`). [`node`] runs one replica from its
//! configuration.

#![forbid(unsafe_code)]

pub mod metrics;
pub mod network;
pub mod node;
pub mod restore;
pub mod service;
mod sm;
pub mod tls;
pub mod types;

pub use types::{NodeId, NodeInfo, Raft, TypeConfig};
