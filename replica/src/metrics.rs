//! Prometheus metrics of a replica, served as text on `GET /metrics`.

use super::types::Raft;
use openraft::ServerState;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Upper bounds (seconds) of the commit latency histogram buckets.
const BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 5.0,
];

#[derive(Debug, Default)]
pub struct Metrics {
    leader_changes: AtomicU64,
    snapshots: AtomicU64,
    writes_ok: AtomicU64,
    writes_not_leader: AtomicU64,
    writes_unavailable: AtomicU64,
    forwarded: AtomicU64,
    reads_linearizable: AtomicU64,
    reads_local: AtomicU64,
    /// Gateways' `WatchViews` streams open now.
    view_watchers: std::sync::atomic::AtomicI64,
    latency_buckets: [AtomicU64; BUCKETS.len()],
    latency_count: AtomicU64,
    latency_sum_us: AtomicU64,
}

/// How a write ended, for the counters.
pub enum WriteResult {
    Ok,
    NotLeader,
    Unavailable,
}

impl Metrics {
    pub fn write(&self, result: WriteResult, latency: Duration) {
        match result {
            WriteResult::Ok => {
                self.writes_ok.fetch_add(1, Ordering::Relaxed);
                let secs = latency.as_secs_f64();
                for (i, b) in BUCKETS.iter().enumerate() {
                    if secs <= *b {
                        self.latency_buckets[i].fetch_add(1, Ordering::Relaxed);
                    }
                }
                self.latency_count.fetch_add(1, Ordering::Relaxed);
                self.latency_sum_us
                    .fetch_add(latency.as_micros() as u64, Ordering::Relaxed);
            }
            WriteResult::NotLeader => {
                self.writes_not_leader.fetch_add(1, Ordering::Relaxed);
            }
            WriteResult::Unavailable => {
                self.writes_unavailable.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    pub fn forwarded(&self) {
        self.forwarded.fetch_add(1, Ordering::Relaxed);
    }

    /// A `WatchViews` stream opened (+1) or closed (-1).
    pub fn view_watchers(&self, delta: i64) {
        self.view_watchers.fetch_add(delta, Ordering::Relaxed);
    }

    pub fn read(&self, linearizable: bool) {
        if linearizable {
            self.reads_linearizable.fetch_add(1, Ordering::Relaxed);
        } else {
            self.reads_local.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Count leader changes and new snapshots as openraft's metrics move.
    pub fn watch(self: &Arc<Self>, raft: &Raft) -> tokio::task::JoinHandle<()> {
        let mut rx = raft.metrics();
        let me = self.clone();
        tokio::spawn(async move {
            let (mut leader, mut snapshot) = {
                let m = rx.borrow();
                (m.current_leader, m.snapshot)
            };
            while rx.changed().await.is_ok() {
                let m = rx.borrow().clone();
                if m.current_leader != leader {
                    if m.current_leader.is_some() {
                        me.leader_changes.fetch_add(1, Ordering::Relaxed);
                    }
                    leader = m.current_leader;
                }
                if m.snapshot != snapshot {
                    me.snapshots.fetch_add(1, Ordering::Relaxed);
                    snapshot = m.snapshot;
                }
            }
        })
    }

    /// The Prometheus text exposition.
    pub fn render(&self, raft: &Raft, log: &raft_store::LogStats) -> String {
        let m = raft.metrics().borrow().clone();
        let mut out = String::with_capacity(4096);
        let mut gauge = |name: &str, help: &str, kind: &str, value: String| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
            );
        };
        gauge(
            "slapos_master_id",
            "Id of this replica.",
            "gauge",
            m.id.to_string(),
        );
        gauge(
            "slapos_master_view_watchers",
            "Gateways' streams of changed node views (WatchViews) open now.",
            "gauge",
            self.view_watchers.load(Ordering::Relaxed).to_string(),
        );
        gauge(
            "slapos_master_term",
            "Current Raft term.",
            "gauge",
            m.current_term.to_string(),
        );
        gauge(
            "slapos_master_is_leader",
            "1 when this replica leads the group.",
            "gauge",
            u8::from(m.state == ServerState::Leader).to_string(),
        );
        gauge(
            "slapos_master_leader_changes_total",
            "Leader changes seen by this replica.",
            "counter",
            self.leader_changes.load(Ordering::Relaxed).to_string(),
        );
        gauge(
            "slapos_master_last_log_index",
            "Last log index.",
            "gauge",
            m.last_log_index.unwrap_or(0).to_string(),
        );
        gauge(
            "slapos_master_committed_index",
            "Committed log index as saved.",
            "gauge",
            log.committed_index().unwrap_or(0).to_string(),
        );
        gauge(
            "slapos_master_applied_index",
            "Last log index applied to the state machine.",
            "gauge",
            m.last_applied.map_or(0, |l| l.index).to_string(),
        );
        gauge(
            "slapos_master_snapshot_index",
            "Log index of the current snapshot.",
            "gauge",
            m.snapshot.map_or(0, |l| l.index).to_string(),
        );
        gauge(
            "slapos_master_snapshots_total",
            "Snapshots built or installed since start.",
            "counter",
            self.snapshots.load(Ordering::Relaxed).to_string(),
        );
        gauge(
            "slapos_master_log_size_bytes",
            "Bytes of entries in the log.",
            "gauge",
            log.log_size_bytes().to_string(),
        );
        gauge(
            "slapos_master_snapshot_size_bytes",
            "Bytes of the current snapshot.",
            "gauge",
            log.snapshot_size_bytes().to_string(),
        );
        let _ = writeln!(
            out,
            "# HELP slapos_master_writes_total Writes proposed on this replica, by result.\n# TYPE slapos_master_writes_total counter"
        );
        for (result, v) in [
            ("ok", &self.writes_ok),
            ("not_leader", &self.writes_not_leader),
            ("unavailable", &self.writes_unavailable),
        ] {
            let _ = writeln!(
                out,
                "slapos_master_writes_total{{result=\"{result}\"}} {}",
                v.load(Ordering::Relaxed)
            );
        }
        let _ = writeln!(
            out,
            "# HELP slapos_master_forwarded_total Calls forwarded to the leader.\n# TYPE slapos_master_forwarded_total counter\nslapos_master_forwarded_total {}",
            self.forwarded.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP slapos_master_reads_total Reads served, by consistency.\n# TYPE slapos_master_reads_total counter\nslapos_master_reads_total{{consistency=\"linearizable\"}} {}\nslapos_master_reads_total{{consistency=\"local\"}} {}",
            self.reads_linearizable.load(Ordering::Relaxed),
            self.reads_local.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP slapos_master_commit_latency_seconds Time from proposing a write to its outcome, on the leader.\n# TYPE slapos_master_commit_latency_seconds histogram"
        );
        for (i, b) in BUCKETS.iter().enumerate() {
            let _ = writeln!(
                out,
                "slapos_master_commit_latency_seconds_bucket{{le=\"{b}\"}} {}",
                self.latency_buckets[i].load(Ordering::Relaxed)
            );
        }
        let count = self.latency_count.load(Ordering::Relaxed);
        let _ = writeln!(
            out,
            "slapos_master_commit_latency_seconds_bucket{{le=\"+Inf\"}} {count}\nslapos_master_commit_latency_seconds_sum {}\nslapos_master_commit_latency_seconds_count {count}",
            self.latency_sum_us.load(Ordering::Relaxed) as f64 / 1e6
        );
        out
    }
}
