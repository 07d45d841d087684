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
    /// Hosts in regions behind the WAN emulator (`slapos-wan`; namespaces only): host `i`
    /// in region `(i - 1) % regions`, in the matrix's order. `None`: the kernel's router.
    pub regions: Option<slapos_wan::Matrix>,
}

impl ChaosOptions {
    /// The region of each host (1..=replicas), when the run has regions.
    pub fn host_regions(&self) -> Option<Vec<slapos_wan::RegionId>> {
        let m = self.regions.as_ref().filter(|m| !m.is_empty())?;
        Some((0..self.replicas as usize).map(|i| i % m.len()).collect())
    }

    /// Raft timers for the run's regions:
    /// `master_replica::node::Timers::for_round_trip` of the largest round trip between
    /// the hosts' regions, both jitters included.
    pub fn wan_timers(&self) -> Option<master_replica::node::Timers> {
        let m = self.regions.as_ref()?;
        let hosts = self.host_regions()?;
        Some(master_replica::node::Timers::for_round_trip(
            m.worst_round_trip(&hosts),
        ))
    }
}
