//! A Raft group of real `slapos master run` processes on loopback, for end-to-end tests:
//! the harness's [`ProcessCluster`] as a test uses it, where a failure fails the test.
//!
//! One temporary directory per cluster holds every replica's configuration, data
//! directory and log file. The processes are killed (SIGKILL) when the [`Cluster`] is
//! dropped; when it is dropped by a failing test, the tail of every replica's log is
//! printed and the directory is kept for inspection.
//!
//! Waits poll with generous deadlines and fail with what they saw and the logs; they never
//! assert how long something took.

use crate::slapos_bin;
use master_client::MasterClient;
use master_replica::node::{ReplicaConfig, SnapshotPolicy, Timers};
use slapos_domain::Entry;
use slapos_harness::cluster::describe;
use slapos_harness::{HarnessError, ProcessCluster};
use slapos_proto::rpc::master::StatusResponse;
use std::cell::Cell;
use std::path::Path;
use std::process::Output;
use std::time::Duration;

/// How long any wait of the harness may take before the test fails.
pub const WAIT: Duration = Duration::from_secs(30);

/// Raft timers and snapshot policy written into every replica's configuration.
#[derive(Debug, Clone)]
pub struct Settings {
    pub heartbeat_ms: u64,
    pub election_timeout_min_ms: u64,
    pub election_timeout_max_ms: u64,
    /// `[snapshot]`: logs_since_last, max_log_bytes, keep_logs (None: the defaults).
    pub snapshot: Option<(u64, u64, u64)>,
}

impl Default for Settings {
    /// Fast elections on loopback, with room for a loaded two-core machine.
    fn default() -> Self {
        Settings {
            heartbeat_ms: 50,
            election_timeout_min_ms: 300,
            election_timeout_max_ms: 600,
            snapshot: None,
        }
    }
}

pub struct Cluster {
    name: String,
    /// Declared before `dir`: its processes are killed before the directory goes.
    cluster: ProcessCluster,
    dir: Option<tempfile::TempDir>,
    /// The logs went into a failure message already.
    logs_shown: Cell<bool>,
}

impl Cluster {
    /// An empty cluster (no replica configured yet).
    pub fn new(name: &str, settings: Settings) -> Cluster {
        let dir = tempfile::Builder::new()
            .prefix(&format!("slapos-e2e-{name}-"))
            .tempdir()
            .expect("create a temporary directory");
        let mut cluster = ProcessCluster::new(&slapos_bin(), dir.path());
        cluster.timers = Timers {
            heartbeat_ms: settings.heartbeat_ms,
            election_timeout_min_ms: settings.election_timeout_min_ms,
            election_timeout_max_ms: settings.election_timeout_max_ms,
        };
        if let Some((logs_since_last, max_log_bytes, keep_logs)) = settings.snapshot {
            cluster.snapshot = SnapshotPolicy {
                logs_since_last,
                max_log_bytes,
                keep_logs,
            };
        }
        cluster.log_level = std::env::var("SLAPOS_E2E_LOG").unwrap_or_else(|_| "info".into());
        Cluster {
            name: name.to_string(),
            cluster,
            dir: Some(dir),
            logs_shown: Cell::new(false),
        }
    }

    /// A running group of `n` voters 1..=n: replica 1 bootstraps it, the others join it
    /// one after the other (as `slapos master join` does).
    pub async fn start(name: &str, n: u64, settings: Settings) -> Cluster {
        let mut cluster = Cluster::new(name, settings);
        cluster.configure(1);
        cluster.init(1);
        cluster.run(1).await;
        for id in 2..=n {
            cluster.add(id).await;
        }
        cluster.wait_leader().await;
        cluster
    }

    /// The harness under this cluster, for what the test wrapper does not name.
    pub fn harness(&self) -> &ProcessCluster {
        &self.cluster
    }

    pub fn dir(&self) -> &Path {
        self.cluster.dir()
    }

    /// Replica `id`'s configuration (addresses, data directory).
    pub fn replica(&self, id: u64) -> &ReplicaConfig {
        self.cluster
            .replica_config(id)
            .unwrap_or_else(|| panic!("replica {id} is not configured"))
    }

    pub fn api(&self, id: u64) -> String {
        self.replica(id).api_addr.clone()
    }

    /// Ids of the replicas whose process runs.
    pub fn running(&self) -> Vec<u64> {
        self.cluster.running()
    }

    /// Master API addresses of the running replicas, except `except`.
    pub fn apis_except(&self, except: &[u64]) -> Vec<String> {
        self.cluster.running_api_addrs_except(except)
    }

    /// Write replica `id`'s configuration, on fresh ports.
    pub fn configure(&mut self, id: u64) -> &ReplicaConfig {
        assert!(
            self.cluster.replica_config(id).is_none(),
            "replica {id} is already configured"
        );
        let done = self.cluster.configure(id);
        self.check(done);
        self.replica(id)
    }

    /// Run `slapos` with these arguments to completion (not a replica: a command).
    pub fn slapos(&self, args: &[&str]) -> Output {
        self.cluster
            .slapos_output(args)
            .unwrap_or_else(|e| panic!("cannot run slapos {args:?}: {e}"))
    }

    /// `slapos master init`: bootstrap a group of one with replica `id` (not running).
    pub fn init(&self, id: u64) {
        if let Err(e) = self.cluster.init(id) {
            self.fail(&format!("slapos master init of replica {id} failed\n{e}"));
        }
    }

    /// Start replica `id`'s process (`slapos master run`) and wait until it serves its
    /// master API. Its output is appended to its log file.
    pub async fn run(&mut self, id: u64) {
        assert!(
            self.cluster.replica_config(id).is_some(),
            "replica {id} is not configured"
        );
        assert!(!self.cluster.is_running(id), "replica {id} already runs");
        let started = self.cluster.run(id, WAIT).await;
        self.check(started);
    }

    /// Configure and start replica `id`, and join it to the group as a voter.
    pub async fn add(&mut self, id: u64) {
        self.configure(id);
        self.run(id).await;
        let out = self.join(id);
        if !out.status.success() {
            self.fail(&format!("replica {id} could not join\n{}", describe(&out)));
        }
    }

    /// `slapos master join` of replica `id` via every other running replica; the caller
    /// checks the outcome.
    pub fn join(&self, id: u64) -> Output {
        let out = self.cluster.master_join(id);
        self.check(out)
    }

    /// `slapos master leave --id <id>` via the running replicas other than `id`; the
    /// caller checks the outcome.
    pub fn leave(&self, id: u64) -> Output {
        let out = self.cluster.master_leave(id);
        self.check(out)
    }

    /// SIGKILL replica `id` and reap it.
    pub fn kill9(&mut self, id: u64) {
        assert!(
            self.cluster.replica_config(id).is_some(),
            "replica {id} is not configured"
        );
        assert!(self.cluster.is_running(id), "replica {id} does not run");
        let killed = self.cluster.kill9(id);
        self.check(killed);
    }

    /// Start a killed replica again, on the same configuration and data.
    pub async fn restart(&mut self, id: u64) {
        self.run(id).await;
    }

    /// The status of replica `id`, None when it does not answer.
    pub async fn status(&self, id: u64) -> Option<StatusResponse> {
        self.cluster.status(id).await
    }

    /// A client over the running replicas (it finds the leader by itself).
    pub fn client(&self) -> MasterClient {
        MasterClient::new(self.apis_except(&[])).with_deadline(WAIT)
    }

    /// The whole state of replica `id` as it has applied it, read from that replica only
    /// (the read is marked forwarded, so it is never answered by another replica), and
    /// the applied index it reflects.
    pub async fn local_state(&self, id: u64) -> Result<(Vec<Entry>, u64), String> {
        self.cluster
            .local_state(id)
            .await
            .map_err(|e| e.to_string())
    }

    /// Wait until replica `id` answers a local read at or past `min_index` (a replica
    /// answers locally once it has heard from a leader since it started).
    pub async fn wait_local_state(&self, id: u64, min_index: u64) -> (Vec<Entry>, u64) {
        let read = self.cluster.wait_local_state(id, min_index, WAIT).await;
        self.check(read)
    }

    /// Wait until one running replica leads, as a voter of its membership, and every
    /// running member of that membership agrees (same leader, same term). Returns the
    /// leader's id.
    pub async fn wait_leader(&self) -> u64 {
        let leader = self.cluster.wait_agreed_leader(WAIT).await;
        self.check(leader)
    }

    /// Wait until replica `id` has applied `index`; returns its status then.
    pub async fn wait_applied(&self, id: u64, index: u64) -> StatusResponse {
        let status = self.cluster.wait_applied(id, index, WAIT).await;
        self.check(status)
    }

    /// Wait until the replicas `ids` have applied at least `min_index` and the same index,
    /// and check that their states are then byte-identical (a difference at an equal
    /// applied index fails at once). Returns the common applied index and state.
    pub async fn wait_converged(&self, ids: &[u64], min_index: u64) -> (u64, Vec<Entry>) {
        let converged = self.cluster.wait_converged(ids, min_index, WAIT).await;
        self.check(converged)
    }

    /// The tail of every replica's log.
    pub fn logs(&self) -> String {
        self.cluster.logs(60)
    }

    /// The value, or the test fails with the error and the replicas' logs.
    fn check<T>(&self, result: Result<T, HarnessError>) -> T {
        result.unwrap_or_else(|e| self.fail(&e.to_string()))
    }

    /// Fail the test with a message and the replicas' logs.
    pub fn fail(&self, message: &str) -> ! {
        self.logs_shown.set(true);
        panic!(
            "[cluster {}] {message}\n\n{}\n(cluster directory: {})",
            self.name,
            self.logs(),
            self.dir().display()
        );
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.cluster.kill_all();
        if std::thread::panicking() {
            if !self.logs_shown.get() {
                eprintln!("[cluster {}] replica logs:\n{}", self.name, self.logs());
            }
            if let Some(dir) = self.dir.take() {
                eprintln!(
                    "[cluster {}] kept {} for inspection",
                    self.name,
                    dir.keep().display()
                );
            }
        }
    }
}
