//! `slapos bench scale`: a provider's fleet at scale in one master group of real
//! processes. The fleet (default 100,000 computers of 10 partitions, 500,000 instances
//! of 10,000 customers, 12 closed months of usage) is written through the master API;
//! then the bench measures what a large state costs a replica: resident memory, the time
//! and extra memory of building a snapshot and of installing it on a fresh replica,
//! restart to serving, the p99 of a request with an SLA and of a computer's read
//! (`getFullComputerInformation`'s master read).

use crate::raft::percentile;
use master_client::proposer_time as now;
use master_client::MasterClient;
use master_replica::node::SnapshotPolicy;
use serde::Serialize;
use slapos_domain::{
    format_date, AddressSpec, Command, ComputerSpec, Op, ParamValue, PartitionSpec, Query,
    RequestId, Requester, State, Timestamp, UsageLine, UsageTransaction,
};
use slapos_harness::{HarnessError as ClusterError, ProcessCluster};
use slapos_proto::rpc::master::Consistency;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub struct ScaleBenchOptions {
    /// The `slapos` binary to run replicas with.
    pub bin: PathBuf,
    /// Where replicas keep their data (a fresh directory).
    pub dir: PathBuf,
    pub replicas: u64,
    pub computers: usize,
    pub partitions: usize,
    pub instances: usize,
    pub customers: usize,
    pub months: usize,
    /// Usage lines per customer and closed month.
    pub usage_lines: usize,
    /// Concurrent writers while the fleet is written.
    pub concurrency: usize,
    /// Requests with an SLA measured (sequential).
    pub sla_requests: usize,
    /// Computer reads measured (sequential).
    pub reads: usize,
    /// Log entries between snapshots (openraft's policy).
    pub logs_since_last: u64,
}

#[derive(Debug, Serialize, Default)]
pub struct Latency {
    pub count: usize,
    pub errors: usize,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

#[derive(Debug, Serialize, Default)]
pub struct ScaleReport {
    pub computers: usize,
    pub partitions: usize,
    pub instances: usize,
    pub customers: usize,
    pub months: usize,
    pub usage_lines: usize,
    pub replicas: u64,
    /// Seconds to write the fleet, and commands written (and refused).
    pub seed_seconds: f64,
    pub seed_commands: usize,
    pub seed_errors: usize,
    /// VmRSS of each replica once the fleet is written (MiB).
    pub rss_mib: Vec<f64>,
    /// Bytes of the current snapshot (leader's status).
    pub snapshot_bytes: u64,
    /// Seconds the leader took to build a snapshot, and its resident memory above what it
    /// held before (MiB, sampled every 20 ms).
    pub snapshot_build_seconds: f64,
    pub snapshot_build_extra_mib: f64,
    /// A fresh replica joining: seconds to catch up through the snapshot, its peak
    /// (VmHWM) and settled (VmRSS) resident memory, and their difference (MiB).
    pub install_seconds: f64,
    pub install_peak_mib: f64,
    pub install_settled_mib: f64,
    pub install_extra_mib: f64,
    /// A replica killed and started again: seconds until it answers at the leader's
    /// applied index.
    pub restart_seconds: f64,
    pub sla_request: Latency,
    pub computer_read: Latency,
}

const RELEASE: &str = "https://scale.invalid/software.cfg";
const REGIONS: usize = 10;
const PROVIDERS: usize = 100;

fn computer_id(i: usize) -> String {
    format!("COMP-{i:06}")
}

fn customer_id(c: usize) -> String {
    format!("customer-{c:05}")
}

/// Resident memory of a process: (VmHWM, VmRSS) in MiB.
fn memory_mib(pid: u32) -> Option<(f64, f64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| -> Option<f64> {
        let line = status.lines().find(|l| l.starts_with(name))?;
        let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kb / 1024.0)
    };
    Some((field("VmHWM:")?, field("VmRSS:")?))
}

fn seed_ops(o: &ScaleBenchOptions) -> Vec<Vec<Op>> {
    let mut register = Vec::with_capacity(o.computers);
    let mut format = Vec::with_capacity(o.computers);
    let mut supply = Vec::with_capacity(o.computers);
    for i in 0..o.computers {
        let id = computer_id(i);
        let mut attributes = BTreeMap::new();
        attributes.insert(
            "arch".to_string(),
            if i % 2 == 0 { "x86_64" } else { "arm64" }.to_string(),
        );
        attributes.insert("cpu".to_string(), ["4", "8", "16"][i % 3].to_string());
        attributes.insert(
            "price".to_string(),
            format!("{:.2}", 0.2 + (i % 10) as f64 * 0.1),
        );
        register.push(Op::RegisterComputer {
            computer: id.clone(),
            title: id.clone(),
            owner: format!("provider-{:03}", i % PROVIDERS),
            region: Some(format!("region-{}", i % REGIONS)),
            network: Some(format!("net-{}", i % 50)),
            attributes,
        });
        format.push(Op::FormatComputer {
            computer: id.clone(),
            spec: ComputerSpec {
                address: Some(format!("fd00::{:x}", i)),
                netmask: Some("64".into()),
                partitions: (0..o.partitions)
                    .map(|p| PartitionSpec {
                        id: format!("slappart{p}"),
                        tap: None,
                        addresses: vec![AddressSpec {
                            addr: format!("fd00::{:x}:{:x}", i, p + 1),
                            netmask: "64".into(),
                            gateway: None,
                            network: None,
                        }],
                    })
                    .collect(),
            },
        });
        supply.push(Op::Supply {
            computer: id,
            url: RELEASE.into(),
            state: "available".into(),
        });
    }
    let mut request = Vec::with_capacity(o.instances);
    for i in 0..o.instances {
        let mut parameters = BTreeMap::new();
        parameters.insert("name".to_string(), ParamValue::Str(format!("inst-{i}")));
        request.push(Op::RequestInstance {
            requester: Requester::Person(customer_id(i % o.customers.max(1))),
            title: format!("inst-{i}"),
            software_release: RELEASE.into(),
            software_type: "default".into(),
            state: None,
            shared: false,
            parameters,
            sla: BTreeMap::new(),
        });
    }
    // Usage: each closed month, enough computers post a journal (one line per occupied
    // partition) for every customer to get `usage_lines` lines.
    let occupied = (o.instances / o.computers.max(1)).clamp(1, o.partitions.max(1));
    let posting = (o.customers * o.usage_lines)
        .div_ceil(occupied)
        .min(o.computers);
    let month = 30 * 86_400 * 1_000_000u64;
    let start = now().micros() - (o.months as u64 + 1) * month;
    let mut usage = Vec::with_capacity(posting * o.months);
    for m in 0..o.months {
        let from = Timestamp(start + m as u64 * month);
        let to = Timestamp(start + (m as u64 + 1) * month);
        for k in 0..posting {
            let id = computer_id((k + m * posting) % o.computers);
            usage.push(Op::RecordUsage {
                computer: id.clone(),
                reporter: None,
                transactions: vec![UsageTransaction {
                    reference: id,
                    start_date: format_date(from),
                    stop_date: format_date(to),
                    lines: (0..occupied)
                        .map(|p| UsageLine {
                            partition: Some(format!("slappart{p}")),
                            resource: "cpu".into(),
                            quantity: format!("{}.5", (k + p) % 97),
                        })
                        .collect(),
                }],
            });
        }
    }
    let close = vec![Op::CloseBooks {
        until: Timestamp(start + o.months as u64 * month),
    }];
    vec![register, format, supply, request, usage, close]
}

/// Submits every op with `concurrency` writers; returns (written, refused, first error).
async fn submit_all(
    client: &MasterClient,
    ops: Vec<Op>,
    concurrency: usize,
    phase: usize,
) -> (usize, usize, Option<String>) {
    let ops = Arc::new(ops);
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for w in 0..concurrency.max(1) {
        let (ops, next, mut client) = (ops.clone(), next.clone(), client.clone());
        tasks.push(tokio::spawn(async move {
            let (mut ok, mut errors, mut first) = (0usize, 0usize, None);
            let mut seq = 0u64;
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(op) = ops.get(i) else { break };
                seq += 1;
                let cmd = Command {
                    request_id: RequestId::new(format!("scale-{phase}-{w}"), seq),
                    at: now(),
                    op: op.clone(),
                };
                match client.submit(&cmd).await {
                    Ok((Ok(_), _)) => ok += 1,
                    Ok((Err(e), _)) => {
                        errors += 1;
                        first.get_or_insert_with(|| e.to_string());
                    }
                    Err(e) => {
                        errors += 1;
                        first.get_or_insert_with(|| e.to_string());
                    }
                }
            }
            (ok, errors, first)
        }));
    }
    let (mut ok, mut errors, mut first) = (0, 0, None);
    for t in tasks {
        if let Ok((o, e, f)) = t.await {
            ok += o;
            errors += e;
            if first.is_none() {
                first = f;
            }
        }
    }
    (ok, errors, first)
}

fn latency(mut samples: Vec<u64>, errors: usize) -> Latency {
    samples.sort_unstable();
    Latency {
        count: samples.len(),
        errors,
        p50_ms: percentile(&samples, 0.50),
        p99_ms: percentile(&samples, 0.99),
        max_ms: samples.last().map_or(0.0, |m| *m as f64 / 1000.0),
    }
}

async fn status_of(addr: &str) -> Option<slapos_proto::rpc::master::StatusResponse> {
    let mut c = MasterClient::single(addr);
    c.call_timeout = Duration::from_secs(2);
    c.deadline = Duration::from_secs(2);
    c.status_of(addr).await.ok()
}

/// Waits until the replica at `addr` applied `index`.
async fn wait_applied(addr: &str, index: u64, timeout: Duration) -> Result<(), ClusterError> {
    let t0 = Instant::now();
    loop {
        if let Some(s) = status_of(addr).await {
            if s.applied_index >= index {
                return Ok(());
            }
        }
        if t0.elapsed() > timeout {
            return Err(ClusterError::Timeout(format!(
                "{addr} did not apply index {index} within {timeout:?}"
            )));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub async fn run_scale_bench(opts: &ScaleBenchOptions) -> Result<ScaleReport, ClusterError> {
    let mut report = ScaleReport {
        computers: opts.computers,
        partitions: opts.partitions,
        instances: opts.instances,
        customers: opts.customers,
        months: opts.months,
        usage_lines: opts.usage_lines,
        replicas: opts.replicas,
        ..ScaleReport::default()
    };
    let mut cluster = ProcessCluster::new(&opts.bin, &opts.dir);
    cluster.snapshot = SnapshotPolicy {
        logs_since_last: opts.logs_since_last,
        max_log_bytes: 256 << 20,
        keep_logs: 1000,
    };
    cluster.start(opts.replicas).await?;
    let leader = cluster.wait_leader(Duration::from_secs(20)).await?;
    let leader_addr = cluster
        .api_addr(leader)
        .ok_or(ClusterError::Unknown(leader))?
        .to_string();
    let mut addrs = vec![leader_addr.clone()];
    addrs.extend(
        cluster
            .api_addrs()
            .into_iter()
            .filter(|a| *a != leader_addr),
    );
    let client = MasterClient::new(addrs).with_deadline(Duration::from_secs(120));

    // The fleet.
    let t0 = Instant::now();
    for (phase, ops) in seed_ops(opts).into_iter().enumerate() {
        let n = ops.len();
        let tp = Instant::now();
        let (ok, errors, first) = submit_all(&client, ops, opts.concurrency, phase).await;
        eprintln!(
            "seed phase {phase}: {ok}/{n} in {:.1} s{}",
            tp.elapsed().as_secs_f64(),
            first
                .map(|e| format!(" (first refusal: {e})"))
                .unwrap_or_default()
        );
        report.seed_commands += ok;
        report.seed_errors += errors;
    }
    report.seed_seconds = t0.elapsed().as_secs_f64();
    let applied = status_of(&leader_addr).await.map_or(0, |s| s.applied_index);
    for addr in cluster.api_addrs() {
        wait_applied(&addr, applied, Duration::from_secs(300)).await?;
    }
    for id in cluster.ids() {
        if let Some((_, rss)) = cluster.pid(id).and_then(memory_mib) {
            report.rss_mib.push(rss);
        }
    }
    eprintln!(
        "fleet written in {:.1} s; replicas resident: {:?} MiB",
        report.seed_seconds, report.rss_mib
    );

    // Requests with an SLA (sequential, through the leader).
    let mut writer = client.clone();
    let (mut samples, mut errors) = (Vec::new(), 0);
    for i in 0..opts.sla_requests {
        let mut sla = BTreeMap::new();
        sla.insert("region".to_string(), format!("region-{}", i % REGIONS));
        sla.insert("arch".to_string(), "x86_64".to_string());
        sla.insert("max_price".to_string(), "0.75".to_string());
        let cmd = Command {
            request_id: RequestId::new("scale-sla", i as u64 + 1),
            at: now(),
            op: Op::RequestInstance {
                requester: Requester::Person(customer_id(i % opts.customers.max(1))),
                title: format!("sla-{i}"),
                software_release: RELEASE.into(),
                software_type: "default".into(),
                state: None,
                shared: false,
                parameters: BTreeMap::new(),
                sla,
            },
        };
        let t = Instant::now();
        match writer.submit(&cmd).await {
            Ok((Ok(_), _)) => samples.push(t.elapsed().as_micros() as u64),
            _ => errors += 1,
        }
    }
    report.sla_request = latency(samples, errors);
    eprintln!("request with an SLA: {:?}", report.sla_request);

    // A computer's read, as a gateway makes it for getFullComputerInformation: the
    // entities from a replica, rebuilt and rendered.
    let mut reader = MasterClient::single(&leader_addr);
    let (mut samples, mut errors) = (Vec::new(), 0);
    for i in 0..opts.reads {
        let id = computer_id((i * 7919) % opts.computers.max(1));
        let t = Instant::now();
        let ok = match reader
            .read(
                &Query::Computer {
                    computer: id.clone(),
                },
                Consistency::Local,
                1000,
            )
            .await
        {
            Ok((entries, _)) => State::from_entries(entries)
                .ok()
                .is_some_and(|s| s.computer_view(&id).is_ok()),
            Err(_) => false,
        };
        if ok {
            samples.push(t.elapsed().as_micros() as u64);
        } else {
            errors += 1;
        }
    }
    report.computer_read = latency(samples, errors);
    eprintln!("computer read: {:?}", report.computer_read);

    // A snapshot: write single-entry commands up to the policy's threshold, then time the
    // build on the leader and sample its memory.
    let status = status_of(&leader_addr)
        .await
        .ok_or_else(|| ClusterError::Timeout("leader status".into()))?;
    let before_snapshot = status.snapshot_index;
    let target = status.snapshot_index + opts.logs_since_last;
    let mut seq = 0u64;
    let mut probe = MasterClient::single(&leader_addr);
    while status_of(&leader_addr)
        .await
        .is_some_and(|s| s.applied_index < target && s.snapshot_index == before_snapshot)
    {
        for _ in 0..50 {
            seq += 1;
            let _ = probe
                .submit(&Command {
                    request_id: RequestId::new("scale-tick", seq),
                    at: now(),
                    op: Op::Supply {
                        computer: computer_id(0),
                        url: format!("https://scale.invalid/tick-{}.cfg", seq % 4),
                        state: "available".into(),
                    },
                })
                .await;
        }
    }
    let t_build = Instant::now();
    let leader_pid = cluster.pid(leader);
    let base = leader_pid.and_then(memory_mib).map_or(0.0, |m| m.1);
    let mut peak = base;
    loop {
        if let Some((_, rss)) = leader_pid.and_then(memory_mib) {
            peak = peak.max(rss);
        }
        if let Some(s) = status_of(&leader_addr).await {
            if s.snapshot_index > before_snapshot {
                report.snapshot_bytes = s.snapshot_size_bytes;
                break;
            }
        }
        if t_build.elapsed() > Duration::from_secs(600) {
            return Err(ClusterError::Timeout("no snapshot within 600 s".into()));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    report.snapshot_build_seconds = t_build.elapsed().as_secs_f64();
    report.snapshot_build_extra_mib = peak - base;
    eprintln!(
        "snapshot: {} bytes built in {:.1} s, +{:.0} MiB",
        report.snapshot_bytes, report.snapshot_build_seconds, report.snapshot_build_extra_mib
    );

    // A fresh replica joins: the log behind the snapshot is gone, so it installs it.
    let fresh = cluster.ids().into_iter().max().unwrap_or(0) + 1;
    cluster.configure(fresh)?;
    cluster.spawn(fresh)?;
    let t_install = Instant::now();
    let pid = cluster.pid(fresh);
    let sampler = tokio::spawn(async move {
        let mut peak = 0f64;
        loop {
            match pid.and_then(memory_mib) {
                Some((hwm, _)) => peak = peak.max(hwm),
                None => break peak,
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    cluster.join(fresh).await?;
    report.install_seconds = t_install.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(2)).await;
    if let Some((hwm, rss)) = pid.and_then(memory_mib) {
        report.install_peak_mib = hwm;
        report.install_settled_mib = rss;
        report.install_extra_mib = hwm - rss;
    }
    sampler.abort();
    eprintln!(
        "install on a fresh replica: {:.1} s, peak {:.0} MiB, settled {:.0} MiB",
        report.install_seconds, report.install_peak_mib, report.install_settled_mib
    );

    // Restart to serving: the fresh replica killed and started again.
    let applied = status_of(&leader_addr).await.map_or(0, |s| s.applied_index);
    cluster.kill9(fresh)?;
    let t_restart = Instant::now();
    cluster.spawn(fresh)?;
    let fresh_addr = cluster
        .api_addr(fresh)
        .ok_or(ClusterError::Unknown(fresh))?
        .to_string();
    wait_applied(&fresh_addr, applied, Duration::from_secs(300)).await?;
    report.restart_seconds = t_restart.elapsed().as_secs_f64();
    eprintln!("restart to serving: {:.1} s", report.restart_seconds);
    Ok(report)
}
