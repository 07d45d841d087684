//! What a chaos run needs of the group under test, so that one schedule of faults and one
//! set of checkers judge both shapes: replicas as plain processes (the harness's
//! [`ProcessCluster`]) and replicas hosted in partitions of nodes
//! (the harness's [`HostedCluster`]).

use crate::kind::FaultKind;
use master_client::MasterClient;
use slapos_harness::cluster::{statuses_of, wait_leader_among};
use slapos_harness::{FaultyDisk, HarnessError, HostedCluster, ProcessCluster};
use slapos_proto::rpc::master::StatusResponse;
use std::time::Duration;

pub(crate) trait Group {
    fn ids(&self) -> Vec<u64>;
    fn api_addr(&self, id: u64) -> Option<&str>;
    /// Whether the replica's host is up (not crashed by a fault).
    fn is_running(&self, id: u64) -> bool;
    /// The network host (namespace index) of a replica.
    fn host_of(&self, id: u64) -> Option<usize>;
    /// A client over every replica's API.
    fn client(&self) -> MasterClient;
    /// What a crash of the replica's host is here: `kill -9` of its process, or of its
    /// whole node (agent, supervisor, every process of its partitions).
    fn crash(&mut self, id: u64) -> Result<String, HarnessError>;
    /// Back from [`Group::crash`], from its own disk.
    fn recover(&mut self, id: u64) -> Result<(), HarnessError>;
    /// A signal (`STOP`, `CONT`) to the replica's process.
    fn signal(&self, id: u64, signal: &str) -> Result<(), HarnessError>;
    /// Replica `old` removed, wiped and back as `new` (when the shape allows it).
    async fn replace_wiped(&mut self, old: u64, new: u64) -> Result<(), HarnessError>;
    /// Gateways by host.
    fn gateway_addrs(&self) -> Vec<(usize, String)>;
    fn kill_gateway(&mut self, host: usize);
    /// The gateway back after [`Group::kill_gateway`] (a supervisor may have done it).
    fn recover_gateway(&mut self, host: usize) -> Result<(), HarnessError>;
    /// Undo whatever a fault left (stopped processes, crashed hosts, killed gateways).
    fn restore_all(&mut self);
    /// Every replica killed and restarted from its own disk.
    fn restart_all_from_disk(&mut self) -> Result<(), HarnessError>;
    /// The fault kinds this shape cannot take.
    fn not_injectable(&self) -> Vec<FaultKind>;
    /// The replica's faulty disk (tmpfs under a FUSE passthrough), when it has one.
    fn disk(&self, id: u64) -> Option<&FaultyDisk>;
    /// After a disk fault was healed: the replica started again if it stopped (true).
    async fn restart_if_stopped(&mut self, id: u64) -> Result<bool, HarnessError>;

    /// (id, API address) of the replicas whose host is up.
    fn running_replicas(&self) -> Vec<(u64, String)> {
        self.ids()
            .into_iter()
            .filter(|id| self.is_running(*id))
            .filter_map(|id| Some((id, self.api_addr(id)?.to_string())))
            .collect()
    }

    /// The leader that a running replica reports, waiting up to `timeout`.
    async fn wait_leader(&self, timeout: Duration) -> Result<u64, HarnessError> {
        wait_leader_among(&self.running_replicas(), timeout).await
    }

    /// The status every running replica reports (unreachable ones are left out).
    async fn statuses(&self) -> Vec<StatusResponse> {
        statuses_of(&self.running_replicas()).await
    }
}

impl Group for ProcessCluster {
    fn ids(&self) -> Vec<u64> {
        ProcessCluster::ids(self)
    }

    fn api_addr(&self, id: u64) -> Option<&str> {
        ProcessCluster::api_addr(self, id)
    }

    fn is_running(&self, id: u64) -> bool {
        ProcessCluster::is_running(self, id)
    }

    fn host_of(&self, id: u64) -> Option<usize> {
        ProcessCluster::host_of(self, id)
    }

    fn client(&self) -> MasterClient {
        ProcessCluster::client(self)
    }

    fn crash(&mut self, id: u64) -> Result<String, HarnessError> {
        self.kill9(id)?;
        Ok(format!("replica {id}"))
    }

    fn recover(&mut self, id: u64) -> Result<(), HarnessError> {
        self.spawn(id)
    }

    fn signal(&self, id: u64, signal: &str) -> Result<(), HarnessError> {
        ProcessCluster::signal(self, id, signal)
    }

    async fn replace_wiped(&mut self, old: u64, new: u64) -> Result<(), HarnessError> {
        ProcessCluster::replace_wiped(self, old, new).await
    }

    fn gateway_addrs(&self) -> Vec<(usize, String)> {
        ProcessCluster::gateway_addrs(self)
    }

    fn kill_gateway(&mut self, host: usize) {
        ProcessCluster::kill_gateway(self, host)
    }

    fn recover_gateway(&mut self, host: usize) -> Result<(), HarnessError> {
        self.spawn_gateway(host)
    }

    fn restore_all(&mut self) {
        ProcessCluster::restore_all(self)
    }

    fn restart_all_from_disk(&mut self) -> Result<(), HarnessError> {
        for id in ProcessCluster::ids(self) {
            self.kill9(id)?;
            self.spawn(id)?;
        }
        Ok(())
    }

    fn not_injectable(&self) -> Vec<FaultKind> {
        let disks = self.ids().iter().any(|id| self.disk(*id).is_some());
        if disks {
            Vec::new()
        } else {
            vec![FaultKind::DiskFull, FaultKind::IoError]
        }
    }

    fn disk(&self, id: u64) -> Option<&FaultyDisk> {
        ProcessCluster::disk(self, id)
    }

    async fn restart_if_stopped(&mut self, id: u64) -> Result<bool, HarnessError> {
        ProcessCluster::restart_if_stopped(self, id, Duration::from_secs(15)).await
    }
}

/// The group hosted in partitions (`slapos chaos run --self-hosted`): a crash kills a
/// whole node, a recovery starts its agent again, a killed gateway is restarted by its
/// node's supervisor, and a wiped rejoin is not a fault here.
impl Group for HostedCluster {
    fn ids(&self) -> Vec<u64> {
        HostedCluster::ids(self)
    }

    fn api_addr(&self, id: u64) -> Option<&str> {
        HostedCluster::api_addr(self, id)
    }

    fn is_running(&self, id: u64) -> bool {
        HostedCluster::is_running(self, id)
    }

    fn host_of(&self, id: u64) -> Option<usize> {
        HostedCluster::host_of(self, id)
    }

    fn client(&self) -> MasterClient {
        HostedCluster::client(self)
    }

    fn crash(&mut self, id: u64) -> Result<String, HarnessError> {
        HostedCluster::crash(self, id)
    }

    fn recover(&mut self, id: u64) -> Result<(), HarnessError> {
        HostedCluster::recover(self, id)
    }

    fn signal(&self, id: u64, signal: &str) -> Result<(), HarnessError> {
        HostedCluster::signal(self, id, signal)
    }

    async fn replace_wiped(&mut self, _old: u64, _new: u64) -> Result<(), HarnessError> {
        Err(HarnessError::Domain(
            "a hosted replica is replaced with `slapos cluster add-replica` and \
             `remove-replica` (tests/self_hosting*.rs), not within a fault's hold"
                .into(),
        ))
    }

    fn gateway_addrs(&self) -> Vec<(usize, String)> {
        HostedCluster::gateway_addrs(self)
    }

    fn kill_gateway(&mut self, host: usize) {
        HostedCluster::kill_gateway(self, host)
    }

    /// Nothing to do: the gateway is a watched service of its partition, which the
    /// node's supervisor restarts by itself.
    fn recover_gateway(&mut self, _host: usize) -> Result<(), HarnessError> {
        Ok(())
    }

    fn restore_all(&mut self) {
        HostedCluster::restore_all(self)
    }

    fn restart_all_from_disk(&mut self) -> Result<(), HarnessError> {
        HostedCluster::restart_all_from_disk(self)
    }

    /// A hosted replica's data directory belongs to its partition (the node agent makes
    /// it): no faulty disk under it, so no disk faults.
    fn not_injectable(&self) -> Vec<FaultKind> {
        vec![
            FaultKind::WipeRejoin,
            FaultKind::DiskFull,
            FaultKind::IoError,
        ]
    }

    fn disk(&self, _id: u64) -> Option<&FaultyDisk> {
        None
    }

    async fn restart_if_stopped(&mut self, _id: u64) -> Result<bool, HarnessError> {
        Ok(false)
    }
}
