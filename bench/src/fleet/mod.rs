//! `slapos bench fleet`: a fleet of simulated nodes against a replica group and its
//! gateways. Every node is a computer formatted with `--partitions` partitions; most hold
//! a long poll of `getFullComputerInformation` (`If-None-Match` + `Prefer: wait=N`, one
//! keep-alive connection each), a share polls plainly on a period (a fresh connection per
//! poll, as a node agent that keeps its connections 10 s does at a period of minutes), and
//! a writer re-requests instances placed on random long-polling computers. Reported: held
//! long polls per gateway (the gateways' `slapos_gateway_held_polls` and the bench's own
//! count), the CPU and resident memory of every process the bench started, the plain
//! polls' latency, and the time from a write's acknowledgement to the long-poll answer of
//! the node it changed.
//!
//! The gateways serve plain HTTP (`insecure_http`, no `client_ca`): the held connections
//! carry no TLS state. Under mTLS each would also hold a rustls session (DESIGN.md).

mod conn;
pub mod host;

use crate::raft::percentile;
use chaos::workload::{self, computer_dict, expect_ok, Rng};
use conn::Conn;
use host::{CpuMark, HostLimits, Watched};
use serde::Serialize;
use slapos_harness::http::HttpConn;
use slapos_harness::{HarnessError, ProcessCluster};
use slapos_proto::marshal::Value as Marshal;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

pub struct FleetBenchOptions {
    /// The `slapos` binary to run replicas and gateways with.
    pub bin: PathBuf,
    /// A fresh working directory.
    pub dir: PathBuf,
    pub replicas: u64,
    /// Simulated nodes, one computer each.
    pub nodes: usize,
    /// Partitions per computer.
    pub partitions: usize,
    /// Share of the nodes (0..=1) that poll plainly instead of holding a long poll.
    pub plain_share: f64,
    /// A plain-polling node's period.
    pub poll_interval: Duration,
    /// Plain polls send `If-None-Match` with the last ETag (else full reads, as today's
    /// node agents).
    pub conditional: bool,
    /// `Prefer: wait=N` of the long polls, in seconds.
    pub wait_s: u64,
    /// Writes per second of the writer.
    pub writes_per_sec: f64,
    /// Long-polling computers given an instance (the writer's targets).
    pub instances: usize,
    /// The measured phase, after every long poll is held.
    pub duration: Duration,
    /// Gateways the nodes spread over (1..=replicas; the writer uses all of them).
    pub gateways: usize,
    /// Connections being opened (and first read) at once while the fleet ramps up.
    pub connect_concurrency: usize,
    /// Connections formatting the computers and requesting the instances.
    pub setup_concurrency: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum FleetBenchError {
    #[error("cluster: {0}")]
    Cluster(#[from] HarnessError),
    #[error("limits: {0}")]
    Limits(String),
    #[error("{0}")]
    Failed(String),
}

/// Latencies of one kind of call in the measured phase.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Latency {
    pub count: u64,
    pub errors: u64,
    pub first_error: Option<String>,
    pub per_sec: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

/// Long polls of one gateway.
#[derive(Debug, Clone, Serialize)]
pub struct GatewayHeld {
    pub gateway: usize,
    pub addr: String,
    /// Nodes of the bench whose long poll to it was outstanding at the end of the
    /// measured phase (and the most seen at once).
    pub bench_held_end: usize,
    pub bench_held_max: usize,
    /// `slapos_gateway_held_polls` (the most sampled, and at the end); `None`: the
    /// gateway does not export it.
    pub metric_held_max: Option<f64>,
    pub metric_held_end: Option<f64>,
    pub metric_woken_total: Option<f64>,
    pub metric_not_modified_total: Option<f64>,
}

/// CPU and memory of one process the bench started (or of the bench itself).
#[derive(Debug, Clone, Serialize)]
pub struct ProcessUsage {
    pub name: String,
    pub pid: u32,
    /// Share of one core during the ramp-up (connections opened, first reads).
    pub cpu_ramp_percent: Option<f64>,
    /// Share of one core during the measured phase.
    pub cpu_percent: Option<f64>,
    /// VmRSS before the nodes connected, at the end of the measured phase, and VmHWM.
    pub rss_idle_mib: Option<f64>,
    pub rss_mib: Option<f64>,
    pub peak_mib: Option<f64>,
}

/// From a write's acknowledgement to the long-poll answer of the node it changed.
#[derive(Debug, Clone, Default, Serialize)]
pub struct WakeReport {
    /// Writes acknowledged in the measured phase whose node's long poll answered 200.
    pub matched: u64,
    /// Of those, answers that arrived before the writer saw its acknowledgement
    /// (counted as 0 ms).
    pub before_ack: u64,
    /// Acknowledged writes whose node had not answered at the end.
    pub unanswered: u64,
    /// Long-poll answers (200) with no write outstanding on their computer.
    pub unexplained: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

#[derive(Debug, Serialize)]
pub struct FleetBenchReport {
    pub replicas: u64,
    pub nodes: usize,
    pub partitions: usize,
    pub long_poll_nodes: usize,
    pub plain_nodes: usize,
    pub instances: usize,
    pub gateways_used: usize,
    /// How the nodes talk to the gateways.
    pub transport: String,
    /// Whether the gateway answered with an ETag (long polls need it).
    pub long_poll_supported: bool,
    pub wait_s: u64,
    pub poll_interval_s: f64,
    pub conditional_plain_polls: bool,
    pub limits: HostLimits,
    pub setup_seconds: f64,
    /// Setup calls answered 503 and sent again.
    pub setup_retries: u64,
    /// From the end of the setup until the replicas and gateways used less than a tenth
    /// of a core together (snapshots and compactions of what it wrote), 120 s at most.
    pub settle_seconds: f64,
    pub computers_per_sec: f64,
    /// From the first connection to every long poll held.
    pub ramp_seconds: f64,
    /// Long polls held at the end of the ramp (bench side), of `long_poll_nodes`.
    pub held_after_ramp: usize,
    pub measured_seconds: f64,
    pub held: Vec<GatewayHeld>,
    pub processes: Vec<ProcessUsage>,
    /// Plain polls of `getFullComputerInformation` in the measured phase.
    pub plain_polls: Latency,
    /// Bytes of a full `getFullComputerInformation` answer (a node's first read).
    pub full_answer_bytes: usize,
    /// The writer's re-requests (acknowledged = 200).
    pub writes: Latency,
    pub wake: WakeReport,
    /// Long polls answered 304 (the wait ended) and errors on the long-poll side.
    pub long_poll_not_modified: u64,
    pub long_poll_errors: u64,
    pub long_poll_first_error: Option<String>,
    pub reconnects: u64,
}

/// Open files beyond one per long poll: the plain polls and the writer's connections in
/// flight, the setup's, logs, the runtime's.
const NOFILE_MARGIN: u64 = 1024;

/// The computer node `i` is.
pub fn computer_id(i: usize) -> String {
    format!("FLEET-{i:06}")
}

/// The release the writer's instances run (supplied to their computers).
const RELEASE: &str = "https://lab.example/software/fleet/software.cfg";

/// Whether node `i` polls plainly: spread evenly, `share` of the nodes.
fn is_plain(i: usize, share: f64) -> bool {
    let share = share.clamp(0.0, 1.0);
    (((i + 1) as f64 * share).floor() - (i as f64 * share).floor()) >= 1.0
}

fn format_form(i: usize, partitions: usize) -> Result<Vec<(String, String)>, String> {
    // two groups of hex, so 100,000 computers stay valid IPv6 prefixes
    let prefix = format!("fd11:{:x}:{:x}", i >> 16, i & 0xffff);
    let xml = computer_dict(&computer_id(i), partitions, &prefix)
        .encode()
        .map_err(|e| e.to_string())?;
    Ok(vec![
        ("computer_id".into(), computer_id(i)),
        ("xml".into(), xml),
    ])
}

/// The person's request of the instance on computer `i`; `round` changes its parameters,
/// so every call after the first changes what the computer's node reads.
fn request_form(i: usize, round: u64) -> Result<Vec<(String, String)>, String> {
    let m = |v: &Marshal| v.encode().map_err(|e| e.to_string());
    let params = Marshal::str_dict([
        ("node", Marshal::from(i.to_string().as_str())),
        ("round", Marshal::from(round.to_string().as_str())),
    ]);
    Ok(vec![
        ("software_release".into(), RELEASE.into()),
        ("software_type".into(), "default".into()),
        ("partition_reference".into(), format!("fleet-{i}")),
        ("partition_parameter_xml".into(), m(&params)?),
        (
            "filter_xml".into(),
            m(&Marshal::str_dict([(
                "computer_guid",
                Marshal::from(computer_id(i).as_str()),
            )]))?,
        ),
        ("state".into(), m(&Marshal::from("started"))?),
        ("shared_xml".into(), m(&Marshal::Bool(false))?),
    ])
}

fn full_info_target(i: usize) -> String {
    format!(
        "/getFullComputerInformation?{}",
        http_client::form_urlencode(&[("computer_id", &computer_id(i))])
    )
}

/// Sorted microseconds and errors of one kind of call.
#[derive(Default)]
struct Samples {
    us: Vec<u64>,
    errors: u64,
    first_error: Option<String>,
}

impl Samples {
    fn error(&mut self, e: String) {
        self.errors += 1;
        self.first_error.get_or_insert(e);
    }

    fn latency(mut self, seconds: f64) -> Latency {
        self.us.sort_unstable();
        Latency {
            count: self.us.len() as u64,
            errors: self.errors,
            first_error: self.first_error,
            per_sec: self.us.len() as f64 / seconds.max(1e-3),
            p50_ms: percentile(&self.us, 0.5),
            p99_ms: percentile(&self.us, 0.99),
            max_ms: self.us.last().map_or(0.0, |&m| m as f64 / 1000.0),
        }
    }
}

/// A write outstanding on a computer: sent, maybe acknowledged, maybe answered.
struct Pending {
    acked: Option<Instant>,
    woke: Option<Instant>,
    measured: bool,
}

/// What the nodes and the writer share.
struct Fleet {
    gateways: Vec<SocketAddr>,
    sources: Vec<IpAddr>,
    wait_s: u64,
    poll_interval: Duration,
    conditional: bool,
    measuring: AtomicBool,
    /// Long polls outstanding, per gateway index; the most seen at once.
    held: Vec<AtomicUsize>,
    held_max: Vec<AtomicUsize>,
    /// Long-poll nodes done with their first read (holding, or given up: no ETag).
    synced: AtomicUsize,
    unsupported: AtomicUsize,
    full_bytes: AtomicUsize,
    gate: Semaphore,
    plain: Mutex<Samples>,
    long_errors: Mutex<Samples>,
    not_modified: AtomicU64,
    reconnects: AtomicU64,
    pending: Mutex<HashMap<usize, Pending>>,
    wake: Mutex<WakeTally>,
}

#[derive(Default)]
struct WakeTally {
    us: Vec<u64>,
    before_ack: u64,
    unexplained: u64,
}

impl Fleet {
    fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
        m.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn gateway_of(&self, i: usize) -> usize {
        i % self.gateways.len().max(1)
    }

    fn source_of(&self, i: usize) -> Option<IpAddr> {
        if self.sources.is_empty() {
            None
        } else {
            Some(self.sources[i % self.sources.len()])
        }
    }

    /// Node `i`'s long poll answered 200 at `at`.
    fn woke(&self, i: usize, at: Instant) {
        let mut pending = Fleet::lock(&self.pending);
        match pending.get_mut(&i) {
            Some(p) => match p.acked {
                Some(acked) => {
                    let measured = p.measured;
                    pending.remove(&i);
                    drop(pending);
                    if measured {
                        let us = at.saturating_duration_since(acked).as_micros() as u64;
                        Fleet::lock(&self.wake).us.push(us);
                    }
                }
                None => p.woke = Some(at),
            },
            None => {
                drop(pending);
                if self.measuring.load(Ordering::Relaxed) {
                    Fleet::lock(&self.wake).unexplained += 1;
                }
            }
        }
    }

    /// The writer's write on computer `i` was acknowledged at `at`.
    fn acked(&self, i: usize, at: Instant) {
        let mut pending = Fleet::lock(&self.pending);
        if let Some(p) = pending.get_mut(&i) {
            if p.woke.is_some() {
                let measured = p.measured;
                pending.remove(&i);
                drop(pending);
                if measured {
                    let mut w = Fleet::lock(&self.wake);
                    w.us.push(0);
                    w.before_ack += 1;
                }
            } else {
                p.acked = Some(at);
            }
        }
    }
}

async fn backoff(rng: &mut Rng) {
    tokio::time::sleep(rng.millis(500, 1500)).await;
}

/// Node `i`'s connection to its gateway, opened again when closed (counted as a
/// reconnection when `again`); `None` after a failed open (logged, backed off).
async fn connected<'a>(
    conn: &'a mut Option<Conn>,
    fleet: &Fleet,
    i: usize,
    again: bool,
    rng: &mut Rng,
) -> Option<&'a mut Conn> {
    if conn.as_ref().is_none_or(Conn::is_closed) {
        if again {
            fleet.reconnects.fetch_add(1, Ordering::Relaxed);
        }
        let dest = fleet.gateways[fleet.gateway_of(i)];
        match Conn::open(dest, fleet.source_of(i), Duration::from_secs(30)).await {
            Ok(c) => *conn = Some(c),
            Err(e) => {
                Fleet::lock(&fleet.long_errors).error(e);
                backoff(rng).await;
                return None;
            }
        }
    }
    conn.as_mut()
}

/// A node holding a long poll on its computer, again after each answer.
async fn long_poll_node(fleet: Arc<Fleet>, i: usize) {
    let g = fleet.gateway_of(i);
    let target = full_info_target(i);
    let mut rng = Rng::new(i as u64 ^ 0x5eed);
    let mut conn: Option<Conn> = None;
    let mut etag: Option<String> = None;
    let mut first = true;
    loop {
        if etag.is_none() {
            // connect and read everything once, a bounded number of nodes at a time
            let Ok(_permit) = fleet.gate.acquire().await else {
                return;
            };
            let Some(c) = connected(&mut conn, &fleet, i, !first, &mut rng).await else {
                continue;
            };
            match tokio::time::timeout(Duration::from_secs(60), c.get(&target, None, None)).await {
                Ok(Ok(a)) if a.status == 200 => {
                    fleet.full_bytes.fetch_max(a.bytes, Ordering::Relaxed);
                    match a.etag {
                        Some(tag) => etag = Some(tag),
                        None => {
                            // no ETag: this gateway cannot hold a poll
                            fleet.unsupported.fetch_add(1, Ordering::Relaxed);
                            fleet.synced.fetch_add(1, Ordering::Relaxed);
                            return;
                        }
                    }
                    if first {
                        fleet.synced.fetch_add(1, Ordering::Relaxed);
                        first = false;
                    }
                }
                Ok(Ok(a)) => {
                    Fleet::lock(&fleet.long_errors)
                        .error(format!("first read: status {}", a.status));
                    conn = None;
                    backoff(&mut rng).await;
                }
                Ok(Err(e)) => {
                    Fleet::lock(&fleet.long_errors).error(e);
                    conn = None;
                    backoff(&mut rng).await;
                }
                Err(_) => {
                    Fleet::lock(&fleet.long_errors).error("first read: no answer in 60 s".into());
                    conn = None;
                }
            }
            continue;
        }
        let Some(c) = connected(&mut conn, &fleet, i, true, &mut rng).await else {
            continue;
        };
        let n = fleet.held[g].fetch_add(1, Ordering::Relaxed) + 1;
        fleet.held_max[g].fetch_max(n, Ordering::Relaxed);
        let bound = Duration::from_secs(fleet.wait_s + 60);
        let answer =
            tokio::time::timeout(bound, c.get(&target, etag.as_deref(), Some(fleet.wait_s))).await;
        let at = Instant::now();
        fleet.held[g].fetch_sub(1, Ordering::Relaxed);
        match answer {
            Ok(Ok(a)) if a.status == 200 => {
                fleet.woke(i, at);
                etag = a.etag;
                if etag.is_none() {
                    Fleet::lock(&fleet.long_errors).error("a long-poll answer without ETag".into());
                }
            }
            Ok(Ok(a)) if a.status == 304 => {
                fleet.not_modified.fetch_add(1, Ordering::Relaxed);
                if let Some(tag) = a.etag {
                    etag = Some(tag);
                }
            }
            Ok(Ok(a)) => {
                Fleet::lock(&fleet.long_errors).error(format!("long poll: status {}", a.status));
                backoff(&mut rng).await;
            }
            Ok(Err(e)) => {
                Fleet::lock(&fleet.long_errors).error(format!("long poll: {e}"));
                conn = None;
                backoff(&mut rng).await;
            }
            Err(_) => {
                Fleet::lock(&fleet.long_errors).error(format!("long poll: no answer in {bound:?}"));
                conn = None;
            }
        }
    }
}

/// A node polling plainly every period (random phase), a fresh connection each time.
async fn plain_node(fleet: Arc<Fleet>, i: usize) {
    let dest = fleet.gateways[fleet.gateway_of(i)];
    let target = full_info_target(i);
    let mut rng = Rng::new(i as u64 ^ 0x9a1e);
    let period_ms = fleet.poll_interval.as_millis().max(1) as u64;
    let start = tokio::time::Instant::now() + Duration::from_millis(rng.below(period_ms));
    let mut ticks =
        tokio::time::interval_at(start, fleet.poll_interval.max(Duration::from_millis(1)));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut etag: Option<String> = None;
    loop {
        ticks.tick().await;
        let t0 = Instant::now();
        let r = async {
            let mut c = Conn::open(dest, None, Duration::from_secs(30)).await?;
            let tag = if fleet.conditional {
                etag.as_deref()
            } else {
                None
            };
            c.get(&target, tag, None).await
        };
        let r = tokio::time::timeout(Duration::from_secs(60), r).await;
        let us = t0.elapsed().as_micros() as u64;
        let measuring = fleet.measuring.load(Ordering::Relaxed);
        match r {
            Ok(Ok(a)) if a.status == 200 || a.status == 304 => {
                if a.status == 200 {
                    fleet.full_bytes.fetch_max(a.bytes, Ordering::Relaxed);
                }
                if a.etag.is_some() {
                    etag = a.etag;
                }
                if measuring {
                    Fleet::lock(&fleet.plain).us.push(us);
                }
            }
            Ok(Ok(a)) if measuring => {
                Fleet::lock(&fleet.plain).error(format!("status {}", a.status))
            }
            Ok(Err(e)) if measuring => Fleet::lock(&fleet.plain).error(e),
            Err(_) if measuring => Fleet::lock(&fleet.plain).error("no answer in 60 s".into()),
            _ => {}
        }
    }
}

/// One of the writer's connections: re-requests on random targets at its share of the
/// rate until `until`, one write outstanding per computer.
async fn writer(
    fleet: Arc<Fleet>,
    gateway: String,
    targets: Arc<Vec<usize>>,
    period: Duration,
    until: Instant,
    seed: u64,
    writers: u64,
) -> Samples {
    let mut conn = HttpConn::new(gateway);
    let mut rng = Rng::new(seed);
    let mut samples = Samples::default();
    // the writers take turns: writer `seed` of `writers` starts its share of a period late
    let offset = period.mul_f64((seed % writers.max(1)) as f64 / writers.max(1) as f64);
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + offset, period);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut round = seed << 32;
    while Instant::now() < until {
        ticks.tick().await;
        if targets.is_empty() {
            break;
        }
        // a computer with no write outstanding
        let mut pick = None;
        for _ in 0..8 {
            let i = targets[rng.below(targets.len() as u64) as usize];
            if let std::collections::hash_map::Entry::Vacant(slot) =
                Fleet::lock(&fleet.pending).entry(i)
            {
                slot.insert(Pending {
                    acked: None,
                    woke: None,
                    measured: true,
                });
                pick = Some(i);
                break;
            }
        }
        let Some(i) = pick else { continue };
        round += 1;
        let form = match request_form(i, round) {
            Ok(f) => f,
            Err(e) => {
                Fleet::lock(&fleet.pending).remove(&i);
                samples.error(e);
                continue;
            }
        };
        let t0 = Instant::now();
        let sent = workload::post(&mut conn, "/requestComputerPartition", &form).await;
        let at = Instant::now();
        match expect_ok(sent, &conn) {
            Ok(()) => {
                samples.us.push(at.duration_since(t0).as_micros() as u64);
                fleet.acked(i, at);
            }
            Err(e) => {
                Fleet::lock(&fleet.pending).remove(&i);
                samples.error(e);
            }
        }
    }
    samples
}

/// The value of a metric in Prometheus text (summed over its label sets).
fn metric(text: &str, name: &str) -> Option<f64> {
    let mut found = None;
    for line in text.lines() {
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        if !(rest.starts_with(' ') || rest.starts_with('{')) {
            continue;
        }
        if let Some(v) = rest
            .rsplit(' ')
            .next()
            .and_then(|v| v.trim().parse::<f64>().ok())
        {
            *found.get_or_insert(0.0) += v;
        }
    }
    found
}

/// Each gateway's (held, woken, not modified) metrics now.
async fn sample_metrics(conns: &mut [HttpConn]) -> Vec<[Option<f64>; 3]> {
    let mut out = Vec::new();
    for c in conns.iter_mut() {
        let r = tokio::time::timeout(
            Duration::from_secs(10),
            c.send(http_client::Request::get("/metrics")),
        )
        .await;
        let text = match r {
            Ok(Ok(200)) => String::from_utf8_lossy(&c.buf).into_owned(),
            _ => String::new(),
        };
        out.push([
            metric(&text, "slapos_gateway_held_polls"),
            metric(&text, "slapos_gateway_polls_woken_total"),
            metric(&text, "slapos_gateway_polls_not_modified_total"),
        ]);
    }
    out
}

/// Runs `work(index, conn)` for every index in `0..n` over `concurrency` connections
/// spread over `gateways`; fails on the first error.
async fn fan_out<F, Fut>(
    gateways: &[String],
    concurrency: usize,
    n: usize,
    work: F,
) -> Result<(), FleetBenchError>
where
    F: Fn(usize, HttpConn) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = (HttpConn, Result<(), String>)> + Send,
{
    let next = Arc::new(AtomicUsize::new(0));
    let work = Arc::new(work);
    let mut tasks = JoinSet::new();
    for t in 0..concurrency.max(1) {
        let (next, work) = (next.clone(), work.clone());
        let mut conn = HttpConn::new(gateways[t % gateways.len()].clone());
        tasks.spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    return Ok(());
                }
                let (back, r) = work(i, conn).await;
                conn = back;
                r?;
            }
        });
    }
    while let Some(r) = tasks.join_next().await {
        let r: Result<(), String> = r.map_err(|e| FleetBenchError::Failed(e.to_string()))?;
        r.map_err(FleetBenchError::Failed)?;
    }
    Ok(())
}

/// Setup calls answered 503 and sent again.
static SETUP_RETRIES: AtomicU64 = AtomicU64::new(0);

/// A setup call; a 503 (the master busy past the gateway's deadline, under the bulk
/// format of a large fleet) is sent again, as a node agent does on its next run, up to 5
/// times. Formats and re-requests are idempotent.
async fn post(conn: &mut HttpConn, path: &str, form: &[(String, String)]) -> Result<(), String> {
    let mut attempt = 0;
    loop {
        let sent = workload::post(conn, path, form).await;
        if matches!(sent, Ok(503)) && attempt < 5 {
            attempt += 1;
            SETUP_RETRIES.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(path, attempt, "503 during the setup; sending again");
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        }
        return expect_ok(sent, conn).map_err(|e| format!("{path}: {e}"));
    }
}

/// The whole benchmark; every process it starts is stopped before it returns.
pub async fn run_fleet_bench(
    opts: &FleetBenchOptions,
    progress: impl Fn(&str),
) -> Result<FleetBenchReport, FleetBenchError> {
    let failed = FleetBenchError::Failed;
    let n = opts.nodes.max(1);
    let plain: Vec<usize> = (0..n).filter(|&i| is_plain(i, opts.plain_share)).collect();
    let long: Vec<usize> = (0..n).filter(|&i| !is_plain(i, opts.plain_share)).collect();
    let targets: Vec<usize> = long.iter().copied().take(opts.instances).collect();
    let gateways_used = opts.gateways.clamp(1, opts.replicas.max(1) as usize);

    // Every long poll is a connection in this process and in a gateway; the children
    // inherit the limit at spawn.
    let (nofile_before, nofile) = host::raise_nofile(long.len() as u64 + NOFILE_MARGIN)?;

    let mut cluster = ProcessCluster::new(&opts.bin, &opts.dir);
    cluster.start(opts.replicas).await?;
    let gateways = cluster.start_gateways(opts.replicas as usize).await?;
    let used: Vec<SocketAddr> = gateways
        .iter()
        .take(gateways_used)
        .map(|a| {
            a.parse()
                .map_err(|e| failed(format!("gateway address {a}: {e}")))
        })
        .collect::<Result<_, _>>()?;
    let loopback = used
        .iter()
        .all(|a| matches!(a.ip(), IpAddr::V4(v) if v.is_loopback()));
    let sources: Vec<IpAddr> = host::source_addresses(long.len(), loopback)
        .into_iter()
        .map(IpAddr::V4)
        .collect();
    let limits = HostLimits {
        nofile_before,
        nofile,
        ephemeral_ports: host::ephemeral_ports(),
        somaxconn: host::somaxconn(),
        source_addresses: sources.iter().map(ToString::to_string).collect(),
    };

    // the fleet's computers, the writer's instances on some of them
    let setup = Instant::now();
    let partitions = opts.partitions;
    progress(&format!(
        "formatting {n} computers of {partitions} partitions"
    ));
    fan_out(
        &gateways,
        opts.setup_concurrency,
        n,
        move |i, mut conn| async move {
            let r = match format_form(i, partitions) {
                Ok(form) => post(&mut conn, "/loadComputerConfigurationFromXML", &form).await,
                Err(e) => Err(e),
            };
            (conn, r)
        },
    )
    .await?;
    let setup_seconds_format = setup.elapsed().as_secs_f64();
    progress(&format!(
        "supplying and requesting {} instances",
        targets.len()
    ));
    let t = Arc::new(targets.clone());
    let tt = t.clone();
    fan_out(
        &gateways,
        opts.setup_concurrency,
        t.len(),
        move |k, mut conn| {
            let i = tt[k];
            async move {
                let form = vec![
                    ("url".to_string(), RELEASE.to_string()),
                    ("computer_id".to_string(), computer_id(i)),
                    ("state".to_string(), "available".to_string()),
                ];
                let r = post(&mut conn, "/supplySupply", &form).await;
                (conn, r)
            }
        },
    )
    .await?;
    let tt = t.clone();
    fan_out(
        &gateways,
        opts.setup_concurrency,
        t.len(),
        move |k, mut conn| {
            let i = tt[k];
            async move {
                let r = match request_form(i, 0) {
                    Ok(form) => post(&mut conn, "/requestComputerPartition", &form).await,
                    Err(e) => Err(e),
                };
                (conn, r)
            }
        },
    )
    .await?;
    let setup_seconds = setup.elapsed().as_secs_f64();

    // the processes watched: replicas, gateways, the bench
    let mut watched = Vec::new();
    for id in cluster.ids() {
        if let Some(pid) = cluster.pid(id) {
            watched.push(Watched {
                name: format!("replica {id}"),
                pid,
            });
        }
    }
    for (host, _) in cluster.gateway_addrs() {
        if let Some(pid) = cluster.gateway_pid(host) {
            watched.push(Watched {
                name: format!("gateway {host}"),
                pid,
            });
        }
    }
    watched.push(Watched {
        name: "bench (the simulated nodes)".into(),
        pid: std::process::id(),
    });
    // the group settles first (snapshots of what the setup wrote, compactions)
    progress("waiting for the replicas and gateways to go idle");
    let settle = Instant::now();
    let servers = &watched[..watched.len() - 1];
    loop {
        let a = CpuMark::take(servers);
        tokio::time::sleep(Duration::from_secs(1)).await;
        let busy: f64 = a
            .percent_until(&CpuMark::take(servers))
            .into_iter()
            .flatten()
            .sum();
        if busy < 10.0 || settle.elapsed() > Duration::from_secs(120) {
            break;
        }
    }
    let settle_seconds = settle.elapsed().as_secs_f64();
    let idle_rss: Vec<Option<f64>> = watched
        .iter()
        .map(|w| host::memory_mib(w.pid).map(|m| m.0))
        .collect();

    let fleet = Arc::new(Fleet {
        gateways: used.clone(),
        sources,
        wait_s: opts.wait_s,
        poll_interval: opts.poll_interval,
        conditional: opts.conditional,
        measuring: AtomicBool::new(false),
        held: used.iter().map(|_| AtomicUsize::new(0)).collect(),
        held_max: used.iter().map(|_| AtomicUsize::new(0)).collect(),
        synced: AtomicUsize::new(0),
        unsupported: AtomicUsize::new(0),
        full_bytes: AtomicUsize::new(0),
        gate: Semaphore::new(opts.connect_concurrency.max(1)),
        plain: Mutex::new(Samples::default()),
        long_errors: Mutex::new(Samples::default()),
        not_modified: AtomicU64::new(0),
        reconnects: AtomicU64::new(0),
        pending: Mutex::new(HashMap::new()),
        wake: Mutex::new(WakeTally::default()),
    });

    // ramp: every node connects and reads its computer once, then holds its poll
    progress(&format!(
        "{} nodes hold long polls on {gateways_used} gateway(s) from {} source address(es), {} poll plainly every {:?}",
        long.len(),
        fleet.sources.len().max(1),
        plain.len(),
        opts.poll_interval
    ));
    let ramp_mark = CpuMark::take(&watched);
    let ramp = Instant::now();
    let mut nodes = JoinSet::new();
    for &i in &long {
        nodes.spawn(long_poll_node(fleet.clone(), i));
    }
    for &i in &plain {
        nodes.spawn(plain_node(fleet.clone(), i));
    }
    let ramp_deadline = ramp + Duration::from_secs(120 + long.len() as u64 / 200);
    let mut last_report = Instant::now();
    loop {
        let held: usize = fleet.held.iter().map(|h| h.load(Ordering::Relaxed)).sum();
        let synced = fleet.synced.load(Ordering::Relaxed);
        let unsupported = fleet.unsupported.load(Ordering::Relaxed);
        if (unsupported > 0 && synced >= long.len()) || held + unsupported >= long.len() {
            break;
        }
        if Instant::now() > ramp_deadline {
            progress(&format!(
                "ramp-up stopped at its deadline: {held} of {} long polls held",
                long.len()
            ));
            break;
        }
        if last_report.elapsed() > Duration::from_secs(5) {
            progress(&format!("{held} of {} long polls held", long.len()));
            last_report = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let ramp_seconds = ramp.elapsed().as_secs_f64();
    let held_after_ramp: usize = fleet.held.iter().map(|h| h.load(Ordering::Relaxed)).sum();
    let unsupported = fleet.unsupported.load(Ordering::Relaxed);
    let long_poll_supported =
        !long.is_empty() && unsupported == 0 || long.is_empty() && probe_etag(used[0], 0).await;
    if !long_poll_supported {
        progress("long-poll unsupported: the gateway answered without an ETag; measuring the plain polls only");
    }

    // measured phase: the writer, the plain polls, the samples
    let mut metric_conns: Vec<HttpConn> = gateways
        .iter()
        .take(gateways_used)
        .map(|a| HttpConn::new(a.clone()))
        .collect();
    let measure_mark = CpuMark::take(&watched);
    let ramp_cpu = ramp_mark.percent_until(&measure_mark);
    let start = Instant::now();
    let until = start + opts.duration;
    fleet.measuring.store(true, Ordering::Relaxed);
    for h in &fleet.held_max {
        h.store(0, Ordering::Relaxed);
    }
    progress(&format!(
        "measuring for {:?}: {} writes/s on {} computers",
        opts.duration,
        opts.writes_per_sec,
        targets.len()
    ));
    let mut writers = JoinSet::new();
    if long_poll_supported && opts.writes_per_sec > 0.0 {
        let k = (opts.writes_per_sec.ceil() as usize).clamp(1, 16);
        let period = Duration::from_secs_f64(k as f64 / opts.writes_per_sec);
        for w in 0..k {
            writers.spawn(writer(
                fleet.clone(),
                gateways[w % gateways.len()].clone(),
                t.clone(),
                period,
                until,
                w as u64 + 1,
                k as u64,
            ));
        }
    }
    let mut metric_max: Vec<Option<f64>> = vec![None; used.len()];
    while Instant::now() < until {
        let s = sample_metrics(&mut metric_conns).await;
        for (m, v) in metric_max.iter_mut().zip(&s) {
            if let Some(h) = v[0] {
                *m = Some(m.map_or(h, |x: f64| x.max(h)));
            }
        }
        tokio::time::sleep(
            Duration::from_secs(2).min(until.saturating_duration_since(Instant::now())),
        )
        .await;
    }
    let end_mark = CpuMark::take(&watched);
    let measured_seconds = start.elapsed().as_secs_f64();
    let cpu = measure_mark.percent_until(&end_mark);
    let mem: Vec<Option<(f64, f64)>> = watched.iter().map(|w| host::memory_mib(w.pid)).collect();
    let bench_held_end: Vec<usize> = fleet
        .held
        .iter()
        .map(|h| h.load(Ordering::Relaxed))
        .collect();
    let end_metrics = sample_metrics(&mut metric_conns).await;
    fleet.measuring.store(false, Ordering::Relaxed);
    let mut write_samples = Samples::default();
    while let Some(r) = writers.join_next().await {
        if let Ok(s) = r {
            write_samples.us.extend(s.us);
            write_samples.errors += s.errors;
            if write_samples.first_error.is_none() {
                write_samples.first_error = s.first_error;
            }
        }
    }
    // the last writes' answers
    let grace = Instant::now() + Duration::from_secs(3);
    while Instant::now() < grace && !Fleet::lock(&fleet.pending).is_empty() {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    nodes.abort_all();
    while nodes.join_next().await.is_some() {}

    let unanswered = Fleet::lock(&fleet.pending)
        .values()
        .filter(|p| p.measured && p.acked.is_some())
        .count() as u64;
    let wake = {
        let mut w = Fleet::lock(&fleet.wake);
        w.us.sort_unstable();
        WakeReport {
            matched: w.us.len() as u64,
            before_ack: w.before_ack,
            unanswered,
            unexplained: w.unexplained,
            p50_ms: percentile(&w.us, 0.5),
            p99_ms: percentile(&w.us, 0.99),
            max_ms: w.us.last().map_or(0.0, |&m| m as f64 / 1000.0),
        }
    };
    let held = used
        .iter()
        .enumerate()
        .map(|(g, addr)| GatewayHeld {
            gateway: g + 1,
            addr: addr.to_string(),
            bench_held_end: bench_held_end.get(g).copied().unwrap_or(0),
            bench_held_max: fleet.held_max[g].load(Ordering::Relaxed),
            metric_held_max: metric_max.get(g).copied().flatten(),
            metric_held_end: end_metrics.get(g).and_then(|m| m[0]),
            metric_woken_total: end_metrics.get(g).and_then(|m| m[1]),
            metric_not_modified_total: end_metrics.get(g).and_then(|m| m[2]),
        })
        .collect();
    let processes = watched
        .iter()
        .enumerate()
        .map(|(k, w)| ProcessUsage {
            name: w.name.clone(),
            pid: w.pid,
            cpu_ramp_percent: ramp_cpu.get(k).copied().flatten(),
            cpu_percent: cpu.get(k).copied().flatten(),
            rss_idle_mib: idle_rss.get(k).copied().flatten(),
            rss_mib: mem.get(k).copied().flatten().map(|m| m.0),
            peak_mib: mem.get(k).copied().flatten().map(|m| m.1),
        })
        .collect();
    let plain_polls = std::mem::take(&mut *Fleet::lock(&fleet.plain)).latency(measured_seconds);
    let long_errors = std::mem::take(&mut *Fleet::lock(&fleet.long_errors));
    drop(cluster);
    Ok(FleetBenchReport {
        replicas: opts.replicas,
        nodes: n,
        partitions,
        long_poll_nodes: long.len(),
        plain_nodes: plain.len(),
        instances: targets.len(),
        gateways_used,
        transport: "plain HTTP/1.1 keep-alive (gateways with insecure_http, no TLS, no client_ca)"
            .into(),
        long_poll_supported,
        wait_s: opts.wait_s,
        poll_interval_s: opts.poll_interval.as_secs_f64(),
        conditional_plain_polls: opts.conditional,
        limits,
        setup_seconds,
        setup_retries: SETUP_RETRIES.load(Ordering::Relaxed),
        settle_seconds,
        computers_per_sec: n as f64 / setup_seconds_format.max(1e-3),
        ramp_seconds,
        held_after_ramp,
        measured_seconds,
        held,
        processes,
        plain_polls,
        full_answer_bytes: fleet.full_bytes.load(Ordering::Relaxed),
        writes: write_samples.latency(measured_seconds),
        wake,
        long_poll_not_modified: fleet.not_modified.load(Ordering::Relaxed),
        long_poll_errors: long_errors.errors,
        long_poll_first_error: long_errors.first_error,
        reconnects: fleet.reconnects.load(Ordering::Relaxed),
    })
}

/// Whether the gateway answers computer `i`'s read with an ETag.
async fn probe_etag(gateway: SocketAddr, i: usize) -> bool {
    let Ok(mut c) = Conn::open(gateway, None, Duration::from_secs(10)).await else {
        return false;
    };
    matches!(c.get(&full_info_target(i), None, None).await, Ok(a) if a.etag.is_some())
}

fn opt(x: Option<f64>, digits: usize) -> String {
    x.map_or_else(|| "-".into(), |v| format!("{v:.digits$}"))
}

impl FleetBenchReport {
    pub fn summary(&self) -> String {
        let mut out = format!(
            "fleet bench: {} nodes ({} holding long polls with Prefer: wait={}, {} polling plainly every {:.0} s{}) x {} partitions, {} replicas, nodes on {} gateway(s), {} instances\n",
            self.nodes,
            self.long_poll_nodes,
            self.wait_s,
            self.plain_nodes,
            self.poll_interval_s,
            if self.conditional_plain_polls { ", conditional" } else { ", full reads" },
            self.partitions,
            self.replicas,
            self.gateways_used,
            self.instances
        );
        out += &format!("  transport: {}\n", self.transport);
        out += &format!(
            "  limits: RLIMIT_NOFILE {}/{} -> {}/{} (bench and its children); ephemeral ports {}-{}; somaxconn {}; source addresses: {}\n",
            self.limits.nofile_before.0,
            self.limits.nofile_before.1,
            self.limits.nofile.0,
            self.limits.nofile.1,
            self.limits.ephemeral_ports.0,
            self.limits.ephemeral_ports.1,
            self.limits.somaxconn.map_or("?".into(), |s| s.to_string()),
            if self.limits.source_addresses.is_empty() {
                "the kernel's (one)".into()
            } else {
                self.limits.source_addresses.join(", ")
            }
        );
        out += &format!(
            "  setup {:.1} s ({:.0} computers formatted/s, {} calls sent again after a 503), settled in {:.1} s; ramp-up {:.1} s: {} of {} long polls held; full answer {} bytes\n",
            self.setup_seconds,
            self.computers_per_sec,
            self.setup_retries,
            self.settle_seconds,
            self.ramp_seconds,
            self.held_after_ramp,
            self.long_poll_nodes,
            self.full_answer_bytes
        );
        if !self.long_poll_supported {
            out += "  long-poll unsupported: the gateway answers getFullComputerInformation without an ETag (no held polls, no wake latency)\n";
        }
        out += &format!("  measured {:.1} s\n", self.measured_seconds);
        for h in &self.held {
            out += &format!(
                "  gateway {} ({}): held long polls, bench side {} (max {}), gateway metric {} (max {}); woken total {}, not modified total {}\n",
                h.gateway,
                h.addr,
                h.bench_held_end,
                h.bench_held_max,
                opt(h.metric_held_end, 0),
                opt(h.metric_held_max, 0),
                opt(h.metric_woken_total, 0),
                opt(h.metric_not_modified_total, 0)
            );
        }
        out += &format!(
            "  {:<30} {:>8} {:>10} {:>10} {:>10} {:>10} {:>10}\n",
            "process", "pid", "cpu ramp%", "cpu %", "idle MiB", "rss MiB", "peak MiB"
        );
        for p in &self.processes {
            out += &format!(
                "  {:<30} {:>8} {:>10} {:>10} {:>10} {:>10} {:>10}\n",
                p.name,
                p.pid,
                opt(p.cpu_ramp_percent, 0),
                opt(p.cpu_percent, 0),
                opt(p.rss_idle_mib, 0),
                opt(p.rss_mib, 0),
                opt(p.peak_mib, 0)
            );
        }
        let lat = |name: &str, l: &Latency| {
            format!(
                "  {name}: {} ok ({:.1}/s), {} errors{}; p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms\n",
                l.count,
                l.per_sec,
                l.errors,
                l.first_error.as_deref().map_or(String::new(), |e| format!(" (first: {e})")),
                l.p50_ms,
                l.p99_ms,
                l.max_ms
            )
        };
        out += &lat("plain polls", &self.plain_polls);
        out += &lat("writes (re-requests)", &self.writes);
        out += &format!(
            "  acknowledged write -> node's long-poll answer: {} matched ({} before the ack), {} unanswered, {} unexplained answers; p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms\n",
            self.wake.matched,
            self.wake.before_ack,
            self.wake.unanswered,
            self.wake.unexplained,
            self.wake.p50_ms,
            self.wake.p99_ms,
            self.wake.max_ms
        );
        out += &format!(
            "  long polls: {} answered 304, {} errors{}, {} reconnects\n",
            self.long_poll_not_modified,
            self.long_poll_errors,
            self.long_poll_first_error
                .as_deref()
                .map_or(String::new(), |e| format!(" (first: {e})")),
            self.reconnects
        );
        out += &self.goals();
        out
    }

    /// The goals, as far as this run measured them.
    pub fn goals(&self) -> String {
        let verdict = |ok: bool| if ok { "met" } else { "NOT met" };
        let mut out = String::from("goals:\n");
        if self.long_poll_supported && self.wake.matched > 0 {
            out += &format!(
                "  write -> long-poll answer, {} replicas: p50 {:.1} ms (< 100: {}), p99 {:.1} ms (< 1000: {})\n",
                self.replicas,
                self.wake.p50_ms,
                verdict(self.wake.p50_ms < 100.0),
                self.wake.p99_ms,
                verdict(self.wake.p99_ms < 1000.0)
            );
        } else {
            out += "  write -> long-poll answer: not measured (no long poll answered a write)\n";
        }
        // the gateway holding the most
        let most = self
            .held
            .iter()
            .max_by_key(|h| h.bench_held_max)
            .and_then(|h| {
                let p = self
                    .processes
                    .iter()
                    .find(|p| p.name == format!("gateway {}", h.gateway))?;
                Some((h, p))
            });
        if let Some((h, p)) = most.filter(|(h, _)| self.long_poll_supported && h.bench_held_max > 0)
        {
            let held = h.metric_held_end.unwrap_or(h.bench_held_end as f64);
            let rss = p.rss_mib.unwrap_or(0.0);
            let per = match (p.rss_mib, p.rss_idle_mib) {
                (Some(r), Some(i)) if held > 0.0 => Some((r - i) * 1024.0 / held),
                _ => None,
            };
            out += &format!(
                "  held long polls on one gateway: {held:.0} in {rss:.0} MiB resident{}; 50,000 in < 1 GiB: {}; other calls (plain polls) p99 {:.2} ms (< 50: {})\n",
                per.map_or(String::new(), |k| format!(
                    " ({k:.1} KiB per held poll over its idle {:.0} MiB, so 50,000 ~ {:.0} MiB)",
                    p.rss_idle_mib.unwrap_or(0.0),
                    p.rss_idle_mib.unwrap_or(0.0) + k * 50_000.0 / 1024.0
                )),
                if held >= 50_000.0 {
                    verdict(rss < 1024.0).to_string()
                } else {
                    format!("not measured at that size ({held:.0} held)")
                },
                self.plain_polls.p99_ms,
                verdict(self.plain_polls.p99_ms < 50.0)
            );
        }
        out += &format!(
            "  plain polls at {:.0}/s over {} computers of {} partitions: p99 {:.2} ms (< 50: {}){}\n",
            self.plain_polls.per_sec,
            self.nodes,
            self.partitions,
            self.plain_polls.p99_ms,
            verdict(self.plain_polls.p99_ms < 50.0 && self.plain_polls.count > 0),
            if self.nodes < 100_000 || self.partitions < 100 {
                " [the goal's fleet is 100,000 x 100 at 333/s]"
            } else {
                ""
            }
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_share_is_spread() {
        let n = 1000;
        let plain = (0..n).filter(|&i| is_plain(i, 0.1)).count();
        assert_eq!(plain, 100);
        assert_eq!((0..n).filter(|&i| is_plain(i, 0.0)).count(), 0);
        assert_eq!((0..n).filter(|&i| is_plain(i, 1.0)).count(), n);
        // both kinds on every gateway
        assert!((0..30).any(|i| is_plain(i, 0.1) && i % 3 == 0));
    }

    #[test]
    fn metrics_sum_label_sets() {
        let text = "# HELP x\nslapos_gateway_held_polls 12\nslapos_gateway_held_polls_other 5\n\
                    slapos_gateway_polls_woken_total{reason=\"a\"} 2\nslapos_gateway_polls_woken_total{reason=\"b\"} 3\n";
        assert_eq!(metric(text, "slapos_gateway_held_polls"), Some(12.0));
        assert_eq!(metric(text, "slapos_gateway_polls_woken_total"), Some(5.0));
        assert_eq!(
            metric(text, "slapos_gateway_polls_not_modified_total"),
            None
        );
    }

    #[test]
    fn a_wake_matches_the_write_on_its_computer() {
        let fleet = Fleet {
            gateways: Vec::new(),
            sources: Vec::new(),
            wait_s: 1,
            poll_interval: Duration::from_secs(1),
            conditional: false,
            measuring: AtomicBool::new(true),
            held: Vec::new(),
            held_max: Vec::new(),
            synced: AtomicUsize::new(0),
            unsupported: AtomicUsize::new(0),
            full_bytes: AtomicUsize::new(0),
            gate: Semaphore::new(1),
            plain: Mutex::new(Samples::default()),
            long_errors: Mutex::new(Samples::default()),
            not_modified: AtomicU64::new(0),
            reconnects: AtomicU64::new(0),
            pending: Mutex::new(HashMap::new()),
            wake: Mutex::new(WakeTally::default()),
        };
        let t0 = Instant::now();
        let pending = || Pending {
            acked: None,
            woke: None,
            measured: true,
        };
        // ack then wake
        Fleet::lock(&fleet.pending).insert(1, pending());
        fleet.acked(1, t0);
        fleet.woke(1, t0 + Duration::from_millis(7));
        // wake before the writer saw its ack
        Fleet::lock(&fleet.pending).insert(2, pending());
        fleet.woke(2, t0);
        fleet.acked(2, t0 + Duration::from_millis(1));
        // nothing outstanding
        fleet.woke(3, t0);
        let w = Fleet::lock(&fleet.wake);
        assert_eq!(w.us, vec![7000, 0]);
        assert_eq!((w.before_ack, w.unexplained), (1, 1));
        assert!(Fleet::lock(&fleet.pending).is_empty());
    }

    #[test]
    fn forms_encode() {
        let f = format_form(100_000, 3).unwrap();
        assert_eq!(f[0].1, "FLEET-100000");
        assert!(f[1].1.contains("fd11:1:86a0::1"), "{}", f[1].1);
        let r = request_form(5, 2).unwrap();
        assert!(r
            .iter()
            .any(|(k, v)| k == "filter_xml" && v.contains("FLEET-000005")));
    }
}
