//! `slapos bench usage`: a day of usage journals from a whole fleet ingested by a
//! three-replica cluster. Computers are formatted and some of their partitions given
//! instances through the gateways; then every computer posts its daily journal (one
//! line per partition and resource, as `slapos node report` builds it) with
//! `useComputer`, from concurrent connections spread over the gateways. Reported: the
//! ingest time and rates, per-journal latency, the time to post every journal again
//! (the exactly-once path: nothing is recorded twice), and each replica's peak and
//! final resident memory. The invoice of the customer is then read back and its usage
//! must sum to exactly what was posted.

use crate::bench::percentile;
use crate::cluster::{ClusterError, ProcessCluster};
use crate::http::HttpConn;
use crate::workload::{self, computer_dict, expect_ok, journal_xml};
use serde::Serialize;
use serde_json::Value;
use slapos_proto::marshal::Value as Marshal;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub struct UsageBenchOptions {
    /// The `slapos` binary to run replicas and gateways with.
    pub bin: PathBuf,
    /// A fresh working directory.
    pub dir: PathBuf,
    pub replicas: u64,
    pub computers: usize,
    pub partitions: usize,
    /// Resources per partition line (`cpu`, `memory`, `disk`, then `resource-N`).
    pub resources: usize,
    /// Partitions per computer that host an instance (the rest report, billed to no one).
    pub occupied: usize,
    /// Concurrent connections posting journals.
    pub concurrency: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum UsageBenchError {
    #[error("cluster: {0}")]
    Cluster(#[from] ClusterError),
    #[error("{0}")]
    Failed(String),
}

#[derive(Debug, Clone, Serialize)]
pub struct Memory {
    pub replica: u64,
    /// VmRSS once the fleet was formatted and the instances requested, before any journal.
    pub before_ingest_mib: f64,
    /// VmHWM: the most the process ever held resident.
    pub peak_mib: f64,
    /// VmRSS at the end.
    pub final_mib: f64,
}

#[derive(Debug, Serialize)]
pub struct UsageBenchReport {
    pub replicas: u64,
    pub computers: usize,
    pub partitions_per_computer: usize,
    pub partition_records: usize,
    pub movements: usize,
    pub instances: usize,
    pub journal_bytes: usize,
    pub setup_seconds: f64,
    pub ingest_seconds: f64,
    pub journals_per_sec: f64,
    pub partition_records_per_sec: f64,
    pub movements_per_sec: f64,
    pub journal_p50_ms: f64,
    pub journal_p99_ms: f64,
    /// Every journal posted again: recognised, nothing recorded.
    pub repost_seconds: f64,
    pub memory: Vec<Memory>,
    /// The customer's invoice read back: its usage quantity equals what was posted.
    pub invoice_seconds: f64,
    pub verified: bool,
}

const RESOURCES: [&str; 3] = ["cpu", "memory", "disk"];

fn resource(i: usize) -> String {
    RESOURCES
        .get(i)
        .map_or_else(|| format!("resource-{i}"), |r| r.to_string())
}

fn computer_id(c: usize) -> String {
    format!("COMP-{c:04}")
}

/// The quantity partition `p` of computer `c` reports for resource `r`: whole numbers,
/// so the expected sums are exact.
fn quantity(c: usize, p: usize, r: usize) -> u64 {
    ((c * 7 + p * 3 + r) % 50 + 1) as u64
}

/// The journal `slapos node report` would post for computer `c`.
fn journal_of(c: usize, partitions: usize, resources: usize, stop: &str) -> Result<String, String> {
    let lines: Vec<(String, String, String)> = (0..partitions)
        .flat_map(|p| (0..resources).map(move |r| (p, r)))
        .map(|(p, r)| {
            (
                format!("slappart{p}"),
                resource(r),
                quantity(c, p, r).to_string(),
            )
        })
        .collect();
    journal_xml(
        &computer_id(c),
        stop,
        lines
            .iter()
            .map(|(p, r, q)| (p.as_str(), r.as_str(), q.as_str())),
    )
}

fn str_dict(pairs: &[(&str, &str)]) -> Marshal {
    Marshal::str_dict(pairs.iter().map(|(k, v)| (*k, Marshal::from(*v))))
}

fn format_xml(c: usize, partitions: usize) -> Result<String, String> {
    computer_dict(&computer_id(c), partitions, &format!("fd10:{c:x}"))
        .encode()
        .map_err(|e| e.to_string())
}

/// The release every computer's provider supplies and the instances run.
const RELEASE: &str = "https://lab.example/software/bench/software.cfg";

fn request_form(c: usize, i: usize) -> Result<Vec<(String, String)>, String> {
    let m = |v: &Marshal| v.encode().map_err(|e| e.to_string());
    Ok(vec![
        ("software_release".into(), RELEASE.into()),
        ("software_type".into(), "default".into()),
        ("partition_reference".into(), format!("usage-{c}-{i}")),
        (
            "partition_parameter_xml".into(),
            m(&Marshal::Dict(Vec::new()))?,
        ),
        (
            "filter_xml".into(),
            m(&str_dict(&[("computer_guid", &computer_id(c))]))?,
        ),
        ("state".into(), m(&Marshal::from("started"))?),
        ("shared_xml".into(), m(&Marshal::Bool(false))?),
    ])
}

async fn post(conn: &mut HttpConn, path: &str, form: &[(String, String)]) -> Result<(), String> {
    let sent = workload::post(conn, path, form).await;
    expect_ok(sent, conn).map_err(|e| format!("{path}: {e}"))
}

/// Runs `work(index, conn)` for every index in `0..n` over `concurrency` connections
/// spread over `gateways`; the time each call took.
async fn fan_out<F, Fut>(
    gateways: &[String],
    concurrency: usize,
    n: usize,
    work: F,
) -> Result<Vec<Duration>, UsageBenchError>
where
    F: Fn(usize, HttpConn) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = (HttpConn, Result<(), String>)> + Send,
{
    let next = Arc::new(AtomicUsize::new(0));
    let work = Arc::new(work);
    let mut tasks = Vec::new();
    for t in 0..concurrency.max(1) {
        let (next, work) = (next.clone(), work.clone());
        let mut conn = HttpConn::new(gateways[t % gateways.len()].clone());
        tasks.push(tokio::spawn(async move {
            let mut times = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    return Ok(times);
                }
                let started = Instant::now();
                let (back, r) = work(i, conn).await;
                conn = back;
                r?;
                times.push(started.elapsed());
            }
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        let times: Result<Vec<Duration>, String> = t
            .await
            .map_err(|e| UsageBenchError::Failed(e.to_string()))?;
        all.extend(times.map_err(UsageBenchError::Failed)?);
    }
    Ok(all)
}

fn memory_of(pid: u32) -> Option<(f64, f64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<f64>().ok())
            .map(|kb| kb / 1024.0)
    };
    Some((field("VmHWM:")?, field("VmRSS:")?))
}

pub async fn run_usage_bench(
    opts: &UsageBenchOptions,
    progress: impl Fn(&str),
) -> Result<UsageBenchReport, UsageBenchError> {
    let failed = |m: String| UsageBenchError::Failed(m);
    let mut cluster = ProcessCluster::new(&opts.bin, &opts.dir);
    cluster.start(opts.replicas).await?;
    let gateways = cluster.start_gateways(opts.replicas as usize).await?;
    let (n, partitions, resources) = (opts.computers, opts.partitions, opts.resources);
    let occupied = opts.occupied.min(partitions);

    progress(&format!(
        "formatting {n} computers of {partitions} partitions"
    ));
    let setup = Instant::now();
    fan_out(
        &gateways,
        opts.concurrency,
        n,
        move |c, mut conn| async move {
            let r = match format_xml(c, partitions) {
                Ok(xml) => {
                    let form = vec![
                        ("computer_id".to_string(), computer_id(c)),
                        ("xml".to_string(), xml),
                    ];
                    post(&mut conn, "/loadComputerConfigurationFromXML", &form).await
                }
                Err(e) => Err(e),
            };
            (conn, r)
        },
    )
    .await?;
    // Instances are allocated only where the provider supplied their release.
    fan_out(
        &gateways,
        opts.concurrency,
        n,
        move |c, mut conn| async move {
            let form = vec![
                ("url".to_string(), RELEASE.to_string()),
                ("computer_id".to_string(), computer_id(c)),
                ("state".to_string(), "available".to_string()),
            ];
            let r = post(&mut conn, "/supplySupply", &form).await;
            (conn, r)
        },
    )
    .await?;
    progress(&format!("requesting {} instances", n * occupied));
    fan_out(
        &gateways,
        opts.concurrency,
        n * occupied,
        move |k, mut conn| async move {
            let r = match request_form(k / occupied.max(1), k % occupied.max(1)) {
                Ok(form) => post(&mut conn, "/requestComputerPartition", &form).await,
                Err(e) => Err(e),
            };
            (conn, r)
        },
    )
    .await?;
    let setup_seconds = setup.elapsed().as_secs_f64();
    let before: Vec<(u64, f64)> = cluster
        .ids()
        .into_iter()
        .filter_map(|id| Some((id, memory_of(cluster.pid(id)?)?.1)))
        .collect();

    let stop = chrono_like_now();
    let journals: Arc<Vec<String>> = Arc::new(
        (0..n)
            .map(|c| journal_of(c, partitions, resources, &stop))
            .collect::<Result<_, _>>()
            .map_err(failed)?,
    );
    let journal_bytes: usize = journals.iter().map(String::len).sum();
    progress(&format!(
        "posting {n} journals ({} partition records, {} movements, {:.1} MiB)",
        n * partitions,
        n * partitions * resources,
        journal_bytes as f64 / (1 << 20) as f64
    ));
    let post_all = |journals: Arc<Vec<String>>| {
        fan_out(&gateways, opts.concurrency, n, move |c, mut conn| {
            let journals = journals.clone();
            async move {
                let form = vec![
                    ("computer_id".to_string(), computer_id(c)),
                    ("use_string".to_string(), journals[c].clone()),
                ];
                let r = post(&mut conn, "/useComputer", &form).await;
                (conn, r)
            }
        })
    };
    let ingest = Instant::now();
    let times = post_all(journals.clone()).await?;
    let ingest_seconds = ingest.elapsed().as_secs_f64();
    let mut times_us: Vec<u64> = times.iter().map(|d| d.as_micros() as u64).collect();
    times_us.sort_unstable();
    progress("posting every journal again");
    let repost = Instant::now();
    post_all(journals.clone()).await?;
    let repost_seconds = repost.elapsed().as_secs_f64();

    let mut memory = Vec::new();
    for id in cluster.ids() {
        if let Some((peak, now)) = cluster.pid(id).and_then(memory_of) {
            memory.push(Memory {
                replica: id,
                before_ingest_mib: before
                    .iter()
                    .find(|(r, _)| *r == id)
                    .map_or(0.0, |(_, m)| *m),
                peak_mib: peak,
                final_mib: now,
            });
        }
    }

    // The customer's invoice: usage on occupied partitions, summed per resource.
    progress("reading the invoice back");
    let read = Instant::now();
    let body = serde_json::json!({"from": "1970-01-01", "to": "2100-01-01"}).to_string();
    let mut conn = HttpConn::new(gateways[0].clone());
    let status = conn
        .post_json("/slapos.get.v0.invoice", &body)
        .await
        .map_err(|e| failed(format!("invoice: {e}")))?;
    let invoice_seconds = read.elapsed().as_secs_f64();
    let invoice: Value = serde_json::from_slice(&conn.buf)
        .map_err(|e| failed(format!("invoice (status {status}): {e}")))?;
    let mut verified = status == 200;
    for r in 0..resources {
        let expected: u64 = (0..n)
            .flat_map(|c| (0..occupied).map(move |p| (c, p)))
            .map(|(c, p)| quantity(c, p, r))
            .sum();
        let got: u64 = invoice["line_list"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|l| l["resource"] == resource(r).as_str())
            .filter_map(|l| l["quantity"].as_str()?.parse::<u64>().ok())
            .sum();
        if got != expected {
            progress(&format!(
                "{}: the invoice counts {got}, {expected} were posted",
                resource(r)
            ));
            verified = false;
        }
    }
    Ok(UsageBenchReport {
        replicas: opts.replicas,
        computers: n,
        partitions_per_computer: partitions,
        partition_records: n * partitions,
        movements: n * partitions * resources,
        instances: n * occupied,
        journal_bytes,
        setup_seconds,
        ingest_seconds,
        journals_per_sec: n as f64 / ingest_seconds,
        partition_records_per_sec: (n * partitions) as f64 / ingest_seconds,
        movements_per_sec: (n * partitions * resources) as f64 / ingest_seconds,
        journal_p50_ms: percentile(&times_us, 0.5),
        journal_p99_ms: percentile(&times_us, 0.99),
        repost_seconds,
        memory,
        invoice_seconds,
        verified,
    })
}

/// Now, in slapgrid's `%Y-%m-%d at %H:%M:%S` (UTC), a minute ago so that it is never
/// ahead of the master's clock.
fn chrono_like_now() -> String {
    let micros = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
        .saturating_sub(60_000_000);
    let iso = slapos_domain::format_date(slapos_domain::Timestamp::from_micros(
        micros - micros % 1_000_000,
    ));
    // 2026-11-25T13:05:00Z -> 2026-11-25 at 13:05:00
    iso.trim_end_matches('Z').replacen('T', " at ", 1)
}

impl UsageBenchReport {
    pub fn summary(&self) -> String {
        let mut out = format!(
            "usage bench: {} computers x {} partitions = {} partition records ({} movements, {:.1} MiB of journals) into {} replicas; {} instances\n",
            self.computers,
            self.partitions_per_computer,
            self.partition_records,
            self.movements,
            self.journal_bytes as f64 / (1 << 20) as f64,
            self.replicas,
            self.instances
        );
        out += &format!(
            "  ingest   {:.1} s: {:.1} journals/s, {:.0} partition records/s, {:.0} movements/s; per journal p50 {:.0} ms, p99 {:.0} ms\n",
            self.ingest_seconds,
            self.journals_per_sec,
            self.partition_records_per_sec,
            self.movements_per_sec,
            self.journal_p50_ms,
            self.journal_p99_ms
        );
        out += &format!(
            "  re-post  {:.1} s (every journal recognised, nothing recorded twice)\n",
            self.repost_seconds
        );
        for m in &self.memory {
            out += &format!(
                "  replica {}: resident {:.0} MiB before the journals, peak {:.0} MiB, now {:.0} MiB\n",
                m.replica, m.before_ingest_mib, m.peak_mib, m.final_mib
            );
        }
        out += &format!(
            "  invoice of the customer read back in {:.1} s: usage {}\n",
            self.invoice_seconds,
            if self.verified {
                "matches what was posted"
            } else {
                "DOES NOT MATCH what was posted"
            }
        );
        out
    }
}
