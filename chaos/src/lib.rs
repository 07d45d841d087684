//! Running real clusters of `slapos` processes: a harness that starts, kills and
//! restarts master replicas, and the benchmarks built on it. Fault injection, workloads
//! and history checkers come with the chaos issue. Nothing here is needed at run time.

pub mod bench;
pub mod cluster;
pub mod slap_bench;
