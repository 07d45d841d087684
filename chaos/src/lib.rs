//! Running real clusters of `slapos` processes: a harness that starts, kills and
//! restarts master replicas, and the benchmarks built on it. Fault injection, workloads
//! and history checkers come with the chaos issue. Nothing here is needed at run time.

#![forbid(unsafe_code)]

pub mod bench;
pub mod check;
pub mod cluster;
pub mod faults;
mod group;
pub mod hosted;
pub mod http;
pub mod linearizability;
pub mod netns;
pub mod node_bench;
pub mod run;
pub mod slap_bench;
pub mod tinysr;
pub mod usage_bench;
pub mod workload;
