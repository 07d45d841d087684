//! The SlapOS master: its domain as a deterministic state machine.
//!
//! [`domain`] holds the whole state of a master (computers, partitions, software
//! installations, instances and their trees, shared instances, client sessions) and the
//! commands that change it. `apply` is a pure function of the state and the command: it
//! reads no clock, no random source and no environment, so every Raft replica that applies
//! the same log reaches the same bytes. Raft wiring and gRPC services come on top of it.

#![forbid(unsafe_code)]

pub mod ca;
pub mod domain;
pub mod raft;

pub use domain::{
    AllocationScope, Command, DomainError, InstanceId, Op, Outcome, Reply, RequestId,
    RequestedState, State, Timestamp,
};
