//! What a chaos run is asked to do (`slapos chaos run`'s flags): read by the run
//! ([`crate::run`]) and written into its report ([`crate::check`]).

use crate::kind::FaultKind;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct ChaosOptions {
    pub bin: PathBuf,
    pub dir: PathBuf,
    pub duration: Duration,
    pub seed: u64,
    pub replicas: u64,
    pub clients: usize,
    pub keys: usize,
    /// Use network namespaces (needs root); otherwise loopback.
    pub namespaces: bool,
    /// The group hosted in partitions of nodes (`slapos up`'s default, needs root) instead
    /// of replicas as plain processes; faults act on the nodes.
    pub self_hosted: bool,
    /// The kinds of fault to draw from (empty: all that can be injected).
    pub faults: Vec<FaultKind>,
}
