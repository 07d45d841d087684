//! The gateway's Prometheus metrics, served as text on `GET /metrics`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use crate::slap::Endpoint;

/// Upper bounds (seconds) of the latency histogram buckets.
const BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 30.0,
];

/// The label of requests that name no SLAP method.
pub const OTHER: &str = "other";

#[derive(Debug, Default)]
struct Histogram {
    buckets: [u64; BUCKETS.len()],
    count: u64,
    sum_us: u64,
}

/// Counters of one gateway process.
#[derive(Debug, Default)]
pub struct Metrics {
    /// (endpoint, status) -> requests.
    requests: Mutex<BTreeMap<(&'static str, u16), u64>>,
    /// endpoint -> latency.
    latency: Mutex<BTreeMap<&'static str, Histogram>>,
    in_flight: AtomicU64,
    master_writes: AtomicU64,
    master_reads_local: AtomicU64,
    master_reads_linearizable: AtomicU64,
    master_errors: AtomicU64,
    tls_handshake_errors: AtomicU64,
    connections: AtomicU64,
    held_polls: AtomicU64,
    polls_woken: AtomicU64,
    poll_wakeups: AtomicU64,
    polls_not_modified: AtomicU64,
    view_changes: AtomicU64,
    view_resets: AtomicU64,
}

/// Counts a long poll as held while it lives.
pub struct HeldPoll<'a>(&'a Metrics);

impl Drop for HeldPoll<'_> {
    fn drop(&mut self) {
        self.0.held_polls.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Decrements the in-flight gauge when the request is done, however it ends.
pub struct InFlight<'a>(&'a Metrics);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Metrics {
    pub fn start(&self) -> InFlight<'_> {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(self)
    }

    /// One answered request.
    pub fn request(&self, endpoint: Option<Endpoint>, status: u16, latency: Duration) {
        let name = endpoint.map_or(OTHER, Endpoint::name);
        if let Ok(mut r) = self.requests.lock() {
            *r.entry((name, status)).or_default() += 1;
        }
        let secs = latency.as_secs_f64();
        if let Ok(mut l) = self.latency.lock() {
            let h = l.entry(name).or_default();
            for (i, b) in BUCKETS.iter().enumerate() {
                if secs <= *b {
                    h.buckets[i] += 1;
                }
            }
            h.count += 1;
            h.sum_us += latency.as_micros() as u64;
        }
    }

    /// A request answered after being held (counted, but kept out of the latency
    /// histogram: its time is the client's wait).
    pub fn request_held(&self, endpoint: Option<Endpoint>, status: u16) {
        let name = endpoint.map_or(OTHER, Endpoint::name);
        if let Ok(mut r) = self.requests.lock() {
            *r.entry((name, status)).or_default() += 1;
        }
    }

    pub fn master_write(&self) {
        self.master_writes.fetch_add(1, Ordering::Relaxed);
    }

    pub fn master_read(&self, linearizable: bool) {
        if linearizable {
            &self.master_reads_linearizable
        } else {
            &self.master_reads_local
        }
        .fetch_add(1, Ordering::Relaxed);
    }

    pub fn master_error(&self) {
        self.master_errors.fetch_add(1, Ordering::Relaxed);
    }

    pub fn tls_handshake_error(&self) {
        self.tls_handshake_errors.fetch_add(1, Ordering::Relaxed);
    }

    /// A long poll starts waiting (until the guard drops).
    pub fn hold(&self) -> HeldPoll<'_> {
        self.held_polls.fetch_add(1, Ordering::Relaxed);
        HeldPoll(self)
    }

    /// Long polls held now.
    pub fn held_polls(&self) -> u64 {
        self.held_polls.load(Ordering::Relaxed)
    }

    /// A long poll answered with a changed view after waiting.
    pub fn poll_woken(&self) {
        self.polls_woken.fetch_add(1, Ordering::Relaxed);
    }

    /// A held long poll woken to read its view again (it may find it unchanged).
    pub fn poll_wakeup(&self) {
        self.poll_wakeups.fetch_add(1, Ordering::Relaxed);
    }

    /// Held long polls woken to look again so far.
    pub fn poll_wakeups(&self) -> u64 {
        self.poll_wakeups.load(Ordering::Relaxed)
    }

    /// A conditional request answered 304.
    pub fn not_modified(&self) {
        self.polls_not_modified.fetch_add(1, Ordering::Relaxed);
    }

    /// A message of the replicas' `WatchViews` stream.
    pub fn views_changed(&self, computers: usize, reset: bool) {
        self.view_changes
            .fetch_add(computers as u64, Ordering::Relaxed);
        if reset {
            self.view_resets.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn connection(&self) {
        self.connections.fetch_add(1, Ordering::Relaxed);
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(8192);
        out.push_str(
            "# HELP slapos_gateway_requests_total SLAP requests answered, by method and status.\n\
             # TYPE slapos_gateway_requests_total counter\n",
        );
        if let Ok(r) = self.requests.lock() {
            for ((endpoint, status), n) in r.iter() {
                let _ = writeln!(
                    out,
                    "slapos_gateway_requests_total{{endpoint=\"{endpoint}\",status=\"{status}\"}} {n}"
                );
            }
        }
        out.push_str(
            "# HELP slapos_gateway_request_duration_seconds Time from request to answer, by method.\n\
             # TYPE slapos_gateway_request_duration_seconds histogram\n",
        );
        if let Ok(l) = self.latency.lock() {
            for (endpoint, h) in l.iter() {
                for (i, b) in BUCKETS.iter().enumerate() {
                    let _ = writeln!(
                        out,
                        "slapos_gateway_request_duration_seconds_bucket{{endpoint=\"{endpoint}\",le=\"{b}\"}} {}",
                        h.buckets[i]
                    );
                }
                let _ = writeln!(
                    out,
                    "slapos_gateway_request_duration_seconds_bucket{{endpoint=\"{endpoint}\",le=\"+Inf\"}} {}\n\
                     slapos_gateway_request_duration_seconds_sum{{endpoint=\"{endpoint}\"}} {}\n\
                     slapos_gateway_request_duration_seconds_count{{endpoint=\"{endpoint}\"}} {}",
                    h.count,
                    h.sum_us as f64 / 1e6,
                    h.count
                );
            }
        }
        let mut scalar = |name: &str, help: &str, kind: &str, value: u64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
            );
        };
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        scalar(
            "slapos_gateway_requests_in_flight",
            "SLAP requests being answered.",
            "gauge",
            get(&self.in_flight),
        );
        scalar(
            "slapos_gateway_master_writes_total",
            "Commands submitted to the master.",
            "counter",
            get(&self.master_writes),
        );
        scalar(
            "slapos_gateway_master_reads_local_total",
            "Reads of the master with a bounded staleness.",
            "counter",
            get(&self.master_reads_local),
        );
        scalar(
            "slapos_gateway_master_reads_linearizable_total",
            "Linearizable reads of the master.",
            "counter",
            get(&self.master_reads_linearizable),
        );
        scalar(
            "slapos_gateway_master_errors_total",
            "Master calls that failed after their retries (answered 502/503).",
            "counter",
            get(&self.master_errors),
        );
        scalar(
            "slapos_gateway_connections_total",
            "Connections accepted.",
            "counter",
            get(&self.connections),
        );
        scalar(
            "slapos_gateway_tls_handshake_errors_total",
            "TLS handshakes that failed.",
            "counter",
            get(&self.tls_handshake_errors),
        );
        scalar(
            "slapos_gateway_held_polls",
            "Long polls of node views (If-None-Match with Prefer: wait) held now.",
            "gauge",
            get(&self.held_polls),
        );
        scalar(
            "slapos_gateway_polls_woken_total",
            "Held long polls answered with a changed view.",
            "counter",
            get(&self.polls_woken),
        );
        scalar(
            "slapos_gateway_poll_wakeups_total",
            "Held long polls woken to read their view again (a change of their computer, or a reset).",
            "counter",
            get(&self.poll_wakeups),
        );
        scalar(
            "slapos_gateway_polls_not_modified_total",
            "Conditional reads of node views answered 304 Not Modified.",
            "counter",
            get(&self.polls_not_modified),
        );
        scalar(
            "slapos_gateway_view_changes_total",
            "Computers named by the replicas' stream of changed node views.",
            "counter",
            get(&self.view_changes),
        );
        scalar(
            "slapos_gateway_view_resets_total",
            "Times the replicas could not tell which views changed (every held poll looked again).",
            "counter",
            get(&self.view_resets),
        );
        out
    }
}
