//! `slapos bench raft`: commit throughput and latency of a three-replica group of real
//! processes on loopback with durable (synced) log writes, at several numbers of
//! concurrent writers, and the time from a leader's `kill -9` to the first write that
//! succeeds again.

use master_client::MasterClient;
use master_replica::node::Timers;
use serde::Serialize;
use slapos_domain::{AddressSpec, ComputerSpec, PartitionSpec};
use slapos_domain::{Command, Op, RequestId};
use slapos_harness::{HarnessError, ProcessCluster};
use slapos_proto::rpc::master::submit_response;
use std::path::PathBuf;
use std::time::{Duration, Instant};

pub struct RaftBenchOptions {
    /// The `slapos` binary to run replicas with.
    pub bin: PathBuf,
    /// Where replicas keep their data (a fresh directory).
    pub dir: PathBuf,
    pub replicas: u64,
    pub writers: Vec<usize>,
    pub duration: Duration,
    pub kills: usize,
    pub timers: Timers,
}

#[derive(Debug, Serialize)]
pub struct LevelResult {
    pub writers: usize,
    pub commits: u64,
    pub errors: u64,
    pub seconds: f64,
    pub commits_per_sec: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

#[derive(Debug, Serialize)]
pub struct FailoverResult {
    /// Milliseconds from the leader's kill -9 to the first acknowledged write, per kill.
    pub samples_ms: Vec<f64>,
    pub median_ms: f64,
    pub max_ms: f64,
}

#[derive(Debug, Serialize)]
pub struct RaftBenchReport {
    pub replicas: u64,
    pub timers: Timers,
    pub levels: Vec<LevelResult>,
    pub failover: Option<FailoverResult>,
}

const COMPUTER: &str = "COMP-BENCH";

use master_client::proposer_time as now;

fn write_op(writer: usize, seq: u64) -> Op {
    Op::Supply {
        computer: COMPUTER.into(),
        url: format!("https://bench.invalid/{writer}/{}.cfg", seq % 8),
        state: "available".into(),
    }
}

/// The `p` quantile (0..=1, nearest index) of sorted microseconds, in milliseconds.
pub(crate) fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)] as f64 / 1000.0
}

pub(crate) async fn level(
    client: &MasterClient,
    writers: usize,
    duration: Duration,
    run: usize,
) -> LevelResult {
    let start = Instant::now();
    let deadline = start + duration;
    let mut tasks = Vec::new();
    for w in 0..writers {
        let mut client = client.clone();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut errors = 0u64;
            let mut seq = 0u64;
            while Instant::now() < deadline {
                seq += 1;
                let cmd = Command {
                    request_id: RequestId::new(format!("bench-{run}-{w}"), seq),
                    at: now(),
                    op: write_op(w, seq),
                };
                let t = Instant::now();
                match client.submit(&cmd).await {
                    Ok((Ok(_), _)) => latencies.push(t.elapsed().as_micros() as u64),
                    _ => errors += 1,
                }
            }
            (latencies, errors)
        }));
    }
    let mut all = Vec::new();
    let mut errors = 0;
    for t in tasks {
        if let Ok((l, e)) = t.await {
            all.extend(l);
            errors += e;
        }
    }
    let seconds = start.elapsed().as_secs_f64();
    all.sort_unstable();
    LevelResult {
        writers,
        commits: all.len() as u64,
        errors,
        seconds,
        commits_per_sec: all.len() as f64 / seconds,
        p50_ms: percentile(&all, 0.50),
        p99_ms: percentile(&all, 0.99),
    }
}

/// Time from killing the leader to the first acknowledged write, probing every live
/// replica every few milliseconds (followers forward to the new leader).
pub(crate) async fn failover_once(
    cluster: &mut ProcessCluster,
    run: u64,
    limit: Duration,
) -> Result<f64, HarnessError> {
    let leader = cluster.wait_leader(Duration::from_secs(20)).await?;
    let others = cluster.api_addrs_except(leader);
    let mut probes: Vec<MasterClient> = others
        .iter()
        .map(|a| {
            let mut c = MasterClient::single(a);
            c.call_timeout = Duration::from_millis(2000);
            c
        })
        .collect();
    // Warm the probes' connections before the kill.
    for p in probes.iter_mut() {
        let _ = p.status().await;
    }
    cluster.kill9(leader)?;
    let t0 = Instant::now();
    let mut seq = 0u64;
    let elapsed = 'outer: loop {
        for p in probes.iter_mut() {
            seq += 1;
            let cmd = Command {
                request_id: RequestId::new(format!("failover-{run}"), seq),
                at: now(),
                op: write_op(0, seq),
            };
            if let Ok(r) = p.submit_once(&cmd).await {
                if let Some(submit_response::Result::Outcome(_)) = r.result {
                    break 'outer t0.elapsed();
                }
            }
        }
        if t0.elapsed() > limit {
            return Err(HarnessError::Timeout(format!(
                "no write succeeded within {} s of the kill",
                limit.as_secs()
            )));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    // Bring the old leader back and let it catch up before the next round.
    cluster.spawn(leader)?;
    let mut c = cluster.client();
    let _ = c
        .submit(&Command {
            request_id: RequestId::new(format!("failover-{run}-after"), 1),
            at: now(),
            op: write_op(0, 0),
        })
        .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    Ok(elapsed.as_secs_f64() * 1000.0)
}

/// The median and maximum of failover samples (ms), with the samples.
pub(crate) fn failover_summary(samples: Vec<f64>) -> FailoverResult {
    let mut sorted = samples.clone();
    sorted.sort_by(f64::total_cmp);
    let median = match sorted.len() {
        0 => 0.0,
        n if n % 2 == 1 => sorted[n / 2],
        n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    };
    FailoverResult {
        max_ms: sorted.last().copied().unwrap_or(0.0),
        median_ms: median,
        samples_ms: samples,
    }
}

pub async fn run_raft_bench(opts: &RaftBenchOptions) -> Result<RaftBenchReport, HarnessError> {
    let mut cluster = ProcessCluster::new(&opts.bin, &opts.dir);
    cluster.timers = opts.timers.clone();
    cluster.start(opts.replicas).await?;
    let client = writers_client(&cluster).await?;
    let mut levels = Vec::new();
    for (i, &w) in opts.writers.iter().enumerate() {
        let r = level(&client, w, opts.duration, i).await;
        eprintln!(
            "writers {:>4}: {:>8.0} commits/s  p50 {:>7.2} ms  p99 {:>7.2} ms  ({} commits, {} errors)",
            r.writers, r.commits_per_sec, r.p50_ms, r.p99_ms, r.commits, r.errors
        );
        levels.push(r);
    }
    let failover = if opts.kills > 0 {
        let mut samples = Vec::new();
        for k in 0..opts.kills {
            let ms = failover_once(&mut cluster, k as u64, Duration::from_secs(30)).await?;
            eprintln!("kill {:>2}: first write after {:>7.1} ms", k + 1, ms);
            samples.push(ms);
        }
        Some(failover_summary(samples))
    } else {
        None
    };
    Ok(RaftBenchReport {
        replicas: opts.replicas,
        timers: opts.timers.clone(),
        levels,
        failover,
    })
}

/// A client of `cluster` that tries its leader first, once the computer the writers
/// supply releases to is formatted.
pub(crate) async fn writers_client(cluster: &ProcessCluster) -> Result<MasterClient, HarnessError> {
    let mut client = cluster.client();
    // Put the leader first so writers start there.
    let leader = cluster.wait_leader(Duration::from_secs(20)).await?;
    if let Some(addr) = cluster.api_addr(leader) {
        let mut addrs = vec![addr.to_string()];
        addrs.extend(cluster.api_addrs().into_iter().filter(|a| a != addr));
        client = MasterClient::new(addrs);
    }
    let setup = Command {
        request_id: RequestId::new("bench-setup", 1),
        at: now(),
        op: Op::FormatComputer {
            computer: COMPUTER.into(),
            spec: ComputerSpec {
                address: None,
                netmask: None,
                partitions: vec![PartitionSpec {
                    id: "slappart0".into(),
                    tap: None,
                    addresses: vec![AddressSpec {
                        addr: "127.0.0.2".into(),
                        netmask: "255.0.0.0".into(),
                        gateway: None,
                        network: None,
                    }],
                }],
            },
        },
    };
    let (outcome, _) = client.submit(&setup).await?;
    outcome.map_err(|e| HarnessError::Domain(e.to_string()))?;
    Ok(client)
}
