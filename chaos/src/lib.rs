//! Running real clusters of `slapos` processes: a harness that starts, kills and
//! restarts master replicas, fault injection, workloads, history checkers, and the
//! benchmarks built on them. Nothing here is needed at run time: the network namespaces
//! its hosts run in (and that `slapos up` runs its nodes in) are
//! `slapos_operator::netns`'s.

#![forbid(unsafe_code)]

pub mod bench;
pub mod check;
pub mod cluster;
pub mod faults;
mod group;
pub mod hosted;
pub mod http;
pub mod limits_bench;
pub mod linearizability;
pub mod node_bench;
pub mod run;
pub mod slap_bench;
pub mod tinysr;
pub mod usage_bench;
pub mod workload;
