//! `slapos bench ...`: wiring to the chaos crate's benchmarks.

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use std::path::PathBuf;
use std::time::Duration;

#[derive(Subcommand)]
pub enum BenchCommand {
    /// Commits per second and p50/p99 commit latency of a replica group on loopback, and
    /// the time from a leader's kill -9 to the first successful write.
    Raft(RaftArgs),
    /// The group across regions (root): three replicas in network namespaces behind the
    /// WAN emulator (default: Lille, Montréal, Tokyo, 90 to 230 ms apart), timers from the
    /// largest round trip; per region, write latency through its replica with 1 and 32
    /// writers and node-poll latency of its gateway; then leader kills to first write.
    Wan(WanArgs),
    /// The slapproxy baseline workload (real Python slapos.core client) against a fresh
    /// slapproxy and against a three-replica cluster behind a gateway, side by side; then
    /// concurrent getFullComputerInformation pollers against both.
    Slap(SlapArgs),
    /// A day of usage journals from a fleet (default 1,000 computers of 100 partitions)
    /// ingested by a three-replica cluster: time, rates, per-journal latency, the re-post
    /// of every journal, and the replicas' peak memory.
    Usage(UsageArgs),
    /// The node agent at scale against a replica group: `slapos node instance` over
    /// partitions where nothing changed (default 300; goal under 1 s), and newly
    /// allocated partitions of a native release from request to running (default 100;
    /// goal under 60 s). Real Unix users when root.
    Node(NodeArgs),
    /// Partition limits on this host's cgroups (root): the CPU time a partition's usage
    /// reports against a workload's known CPU time (many 10 ms processes), and a replica
    /// group's commit latency next to a partition running a CPU burner and a memory hog,
    /// without and with limits.
    Limits(LimitsArgs),
    /// Simulated nodes against a three-replica group and its gateways: most hold a long
    /// poll of getFullComputerInformation, a share polls plainly, a writer changes
    /// instances on random computers. Held polls per gateway, the processes' CPU and
    /// memory, plain poll latency, and the time from an acknowledged write to the node's
    /// long-poll answer. Raises RLIMIT_NOFILE and connects from several 127.0.0.x.
    Fleet(FleetArgs),
    /// A three-replica group holding a fleet's state (default 10,000 computers, 100,000
    /// instances): one writer's commit latency alone and during `slapos cluster backup`,
    /// the backup's time and size, `backup verify`, and `cluster restore` to serving.
    Backup(BackupArgs),
    /// Debian's memcached directly, through `slapos tunnel` (server and client ends) and
    /// through Debian's stunnel4 configured as the same pair (TLS 1.3, certificates
    /// checked), in one run: set/get operations/s and latency p50/p99 with 1 and 32
    /// clients, and bulk throughput; medians of the rounds.
    Tunnel(TunnelArgs),
    /// A backend (Debian's nginx serving a file) reached directly, through `slapos
    /// frontend run` and through Debian's nginx configured as the same reverse proxy
    /// (TLS 1.3, the same certificate), in one run: requests/s and latency p50/p99 with
    /// 1 and 64 keep-alive connections, the proxies' added latency, full TLS handshakes
    /// per second; medians of the rounds.
    Frontend(FrontendArgs),
    /// A provider's fleet in one master group (default 100,000 computers x 10
    /// partitions, 500,000 instances of 10,000 customers, 12 closed months of usage):
    /// resident memory per replica, snapshot build and install on a fresh replica (time
    /// and extra memory), restart to serving, p99 of a request with an SLA and of a
    /// computer's read.
    Scale(ScaleArgs),
    /// Allocation in the state machine of a large fleet (default 100,000 computers x 10
    /// partitions in 10 regions, built in this process): a request's time without an SLA
    /// and with a region, walking the allocation index and scanning every computer (the
    /// allocation of earlier releases), side by side.
    Alloc(AllocArgs),
    /// The web portal's server time per page (p50/p99) and page weight for a person with
    /// many services (default 1,000) and for the provider of the computers they run on
    /// (default 1,000: the servers page), through a real gateway of
    /// a replica group (plain HTTP on loopback, one keep-alive connection). Goal: p99
    /// under 20 ms, pages under 100 KB.
    Portal(PortalArgs),
}

#[derive(Args)]
pub struct PortalArgs {
    /// Working directory (default: a new one under /tmp; removed at the end).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Replicas of the group.
    #[arg(long, default_value_t = 3)]
    replicas: u64,
    /// The person's services.
    #[arg(long, default_value_t = 1_000)]
    services: usize,
    /// The provider's computers (the services run on them, round robin).
    #[arg(long, default_value_t = 1_000)]
    computers: usize,
    /// Partitions per computer.
    #[arg(long, default_value_t = 4)]
    partitions: usize,
    /// Timed GETs of each page.
    #[arg(long, default_value_t = 500)]
    requests: usize,
    /// Concurrent writers filling the state.
    #[arg(long, default_value_t = 16)]
    fill_writers: usize,
    /// Also write the report as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
}

#[derive(Args)]
pub struct AllocArgs {
    /// Computers of the state (each supplying the release).
    #[arg(long, default_value_t = 100_000)]
    computers: usize,
    /// Partitions per computer.
    #[arg(long, default_value_t = 10)]
    partitions: usize,
    /// Regions the computers are spread over (round robin).
    #[arg(long, default_value_t = 10)]
    regions: usize,
    /// Requests timed for each method and condition.
    #[arg(long, default_value_t = 300)]
    requests: usize,
    /// Also write the report as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
}

#[derive(Args)]
pub struct ScaleArgs {
    /// Working directory (default: a new one under /tmp; removed at the end).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Replicas of the master group under test (real processes on this machine).
    #[arg(long, default_value_t = 3)]
    replicas: u64,
    /// Computers of the fleet.
    #[arg(long, default_value_t = 100_000)]
    computers: usize,
    /// Partitions per computer.
    #[arg(long, default_value_t = 10)]
    partitions: usize,
    /// Instances requested across the fleet.
    #[arg(long, default_value_t = 500_000)]
    instances: usize,
    /// Customers the instances belong to.
    #[arg(long, default_value_t = 10_000)]
    customers: usize,
    /// Closed months of usage.
    #[arg(long, default_value_t = 12)]
    months: usize,
    /// Usage lines per customer and month.
    #[arg(long, default_value_t = 5)]
    usage_lines: usize,
    /// Concurrent writers while the fleet is written.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Requests with an SLA timed once the fleet is written.
    #[arg(long, default_value_t = 300)]
    sla_requests: usize,
    /// Computer reads (`getFullComputerInformation`'s master read) timed.
    #[arg(long, default_value_t = 1000)]
    reads: usize,
    /// Log entries between snapshots.
    #[arg(long, default_value_t = 5000)]
    logs_since_last: u64,
    /// Also write the report as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
}

#[derive(Args)]
pub struct TunnelArgs {
    /// Working directory (default: a new one under /tmp; removed at the end).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Rounds over the three paths (the report gives medians).
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// Seconds of each measure.
    #[arg(long, default_value_t = 2.0)]
    seconds: f64,
    /// Concurrent clients of the set/get measures (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "1,32")]
    clients: Vec<usize>,
    /// Bytes of a set/get value.
    #[arg(long, default_value_t = 100)]
    value_bytes: usize,
    /// Bytes of a bulk value.
    #[arg(long, default_value_t = 1024 * 1024)]
    bulk_bytes: usize,
    /// Keys the set/get measures spread over.
    #[arg(long, default_value_t = 1000)]
    keys: usize,
    /// Also write the report as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
}

#[derive(Args)]
pub struct FrontendArgs {
    /// Working directory (default: a new one under /tmp; removed at the end).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Rounds over the three paths (the report gives medians).
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// Seconds of each measure.
    #[arg(long, default_value_t = 2.0)]
    seconds: f64,
    /// Keep-alive connections of the request measures (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "1,64")]
    connections: Vec<usize>,
    /// Concurrent clients of the handshake measure.
    #[arg(long, default_value_t = 8)]
    handshake_clients: usize,
    /// Bytes of the file the backend serves.
    #[arg(long, default_value_t = 1024)]
    body_bytes: usize,
    /// Also write the report as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
}

#[derive(Args)]
pub struct FleetArgs {
    /// Working directory (default: a new one under /tmp; removed at the end).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Replicas of the master group under test (real processes on this machine).
    #[arg(long, default_value_t = 3)]
    replicas: u64,
    /// Simulated nodes, one computer each.
    #[arg(long, default_value_t = 1000)]
    nodes: usize,
    /// Partitions per computer.
    #[arg(long, default_value_t = 100)]
    partitions: usize,
    /// Share of the nodes that poll plainly instead of holding a long poll (0..1).
    #[arg(long, default_value_t = 0.1)]
    plain_share: f64,
    /// Seconds between two plain polls of one node (300: a node agent's 5 minutes).
    #[arg(long, default_value_t = 300.0)]
    poll_interval: f64,
    /// Plain polls send If-None-Match with the last ETag (default: full reads, as
    /// today's node agents).
    #[arg(long)]
    conditional: bool,
    /// Prefer: wait=N of the long polls, in seconds.
    #[arg(long, default_value_t = 300)]
    wait: u64,
    /// Re-requests per second of the writer, on random long-polling computers.
    #[arg(long, default_value_t = 10.0)]
    writes_per_sec: f64,
    /// Long-polling computers given an instance (the writer's targets).
    #[arg(long, default_value_t = 1000)]
    instances: usize,
    /// Seconds of the measured phase (after every long poll is held).
    #[arg(long, default_value_t = 60)]
    seconds: u64,
    /// Gateways the nodes connect to (1 puts every node on the first gateway).
    #[arg(long, default_value_t = 3)]
    gateways: usize,
    /// Nodes connecting (and reading their computer once) at a time during the ramp-up.
    #[arg(long, default_value_t = 256)]
    connect_concurrency: usize,
    /// Connections formatting the computers and requesting the instances.
    #[arg(long, default_value_t = 8)]
    setup_concurrency: usize,
    /// Also write the report as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
}

#[derive(Args)]
pub struct BackupArgs {
    /// Working directory (default: a new one under /tmp; removed at the end).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Computers registered in the master for the measure.
    #[arg(long, default_value_t = 10_000)]
    computers: usize,
    /// Instances requested over those computers.
    #[arg(long, default_value_t = 100_000)]
    instances: usize,
    /// Concurrent writers filling the state.
    #[arg(long, default_value_t = 64)]
    fill_writers: usize,
    /// Rounds of the measure: a paced backup with the writer's latency measured during
    /// it, then a window as long without a backup.
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// Also write the report as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// The paced backup's rate, in MiB/s (default: `slapos cluster backup`'s).
    #[arg(long)]
    max_rate_mib: Option<u64>,
}

#[derive(Args)]
pub struct LimitsArgs {
    /// Working directory (default: a new one under /tmp; removed at the end).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Workloads measured for the usage accuracy.
    #[arg(long, default_value_t = 5)]
    accuracy_runs: usize,
    /// Short processes per workload.
    #[arg(long, default_value_t = 500)]
    short_processes: usize,
    /// CPU time of each short process, in ms.
    #[arg(long, default_value_t = 10)]
    short_ms: u64,
    /// CPU time of the workload's long process, in ms.
    #[arg(long, default_value_t = 1000)]
    long_ms: u64,
    /// Replicas of the group whose writes are measured (0: skip that measure).
    #[arg(long, default_value_t = 3)]
    replicas: u64,
    /// Rounds of the three scenarios (idle, neighbour without limits, with limits).
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Seconds per measure.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// What the noisy neighbour runs.
    #[arg(long, value_parser = ["both", "burner", "hog"], default_value = "both")]
    neighbour: String,
    /// With limits, a CPU quota per replica partition (hundredths of a CPU): their
    /// reserved share, which caps the shared partitions together.
    #[arg(long)]
    replica_quota: Option<u32>,
    /// Also write the report as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
}

#[derive(Args)]
pub struct NodeArgs {
    /// Working directory (default: a new one under /tmp; removed at the end).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Replicas of the master group under test (real processes on this machine).
    #[arg(long, default_value_t = 3)]
    replicas: u64,
    /// Partitions deployed first, then run again unchanged.
    #[arg(long, default_value_t = 300)]
    steady: usize,
    /// Partitions allocated at once afterwards.
    #[arg(long, default_value_t = 100)]
    fresh: usize,
    /// Unchanged runs measured.
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// Partitions of the side-by-side run with SlapOS's own node agent (tinysr, a
    /// buildout release carried in this binary, on both); 0 skips it.
    #[arg(long, default_value_t = 10)]
    reference_partitions: usize,
    /// The node venv with slapos.core 1.26.1 (tests/compat/node/setup-node-venv.sh).
    #[arg(long, default_value = "/var/tmp/slapos-node-venv")]
    node_venv: PathBuf,
    /// Partition limits: off (no cgroup, `cgroup = off`), auto (a cgroup per
    /// partition, no limit: the default configuration), on (a cgroup per partition with
    /// CPU weight, memory, process and disk limits).
    #[arg(long, value_parser = ["off", "auto", "on"], default_value = "auto")]
    limits: String,
    /// Also write the report as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
}

#[derive(Args)]
pub struct UsageArgs {
    /// Working directory (default: a new one under /tmp; removed at the end).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Replicas of the master group under test (real processes on this machine).
    #[arg(long, default_value_t = 3)]
    replicas: u64,
    /// Computers registered in the master for the measure.
    #[arg(long, default_value_t = 1000)]
    computers: usize,
    /// Partitions per computer.
    #[arg(long, default_value_t = 100)]
    partitions: usize,
    /// Resources per partition line (cpu, memory, disk, ...).
    #[arg(long, default_value_t = 3)]
    resources: usize,
    /// Partitions per computer given an instance first (their usage is billed).
    #[arg(long, default_value_t = 10)]
    occupied: usize,
    /// Concurrent connections posting, spread over the gateways.
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
    /// Also write the report as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
}

#[derive(Args)]
pub struct SlapArgs {
    /// Working directory (default: a new one under /tmp; removed at the end).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// One scenario (fresh masters) per partition count.
    #[arg(long, value_delimiter = ',', default_value = "20,200")]
    partitions: Vec<usize>,
    /// Sequential instance requests per scenario (at most its partition count).
    #[arg(long, default_value_t = 200)]
    requests: usize,
    /// getFullComputerInformation calls per way of calling (slap client, plain HTTP).
    #[arg(long, default_value_t = 200)]
    calls: usize,
    /// Concurrent pollers, one measurement each, at the largest partition count.
    #[arg(long, value_delimiter = ',', default_value = "1,64")]
    pollers: Vec<usize>,
    /// Seconds per poller measurement.
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    /// Concurrent requesters re-requesting the allocated instances (writes), one
    /// measurement each, at the largest partition count, against both masters.
    #[arg(long, value_delimiter = ',', default_value = "1,32")]
    requesters: Vec<usize>,
    /// Do not poll slapproxy (its pollers take about 140 ms of CPU per call).
    #[arg(long)]
    no_slapproxy_pollers: bool,
    /// Replicas of the master group under test (real processes on this machine).
    #[arg(long, default_value_t = 3)]
    replicas: u64,
    /// The Python venv with slapos.core 1.26.1 (default: $SLAPOS_VENV, else
    /// /var/tmp/slapos-venv; scripts/install-deps creates it).
    #[arg(long)]
    venv: Option<PathBuf>,
    /// Also write the report as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
}

#[derive(Args)]
pub struct RaftArgs {
    /// Working directory for the replicas' data (default: a new one under /tmp).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Replicas of the master group under test (real processes on this machine).
    #[arg(long, default_value_t = 3)]
    replicas: u64,
    /// Concurrent writers, one measurement each.
    #[arg(long, value_delimiter = ',', default_value = "1,16,256")]
    writers: Vec<usize>,
    /// Seconds per measurement.
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    /// Leader kills for the failover measurement (0 to skip).
    #[arg(long, default_value_t = 10)]
    kills: usize,
    /// Raft heartbeat interval of the replicas, in ms.
    #[arg(long, default_value_t = 100)]
    heartbeat_ms: u64,
    /// Election timeout range of the replicas, in ms (min,max).
    #[arg(long, value_delimiter = ',', default_value = "300,600")]
    election_ms: Vec<u64>,
    /// Also write the report as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
}

#[derive(Args)]
pub struct WanArgs {
    /// A regions file (TOML, `examples/regions.toml`); default: that example, embedded.
    #[arg(long)]
    regions: Option<PathBuf>,
    /// Working directory for the replicas' data (default: a new one under /tmp).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Concurrent writers, one measurement each per region.
    #[arg(long, value_delimiter = ',', default_value = "1,32")]
    writers: Vec<usize>,
    /// Concurrent pollers of each region's gateway.
    #[arg(long, default_value_t = 4)]
    pollers: usize,
    /// Seconds per measurement.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Leader kills for the failover measurement (0 to skip).
    #[arg(long, default_value_t = 10)]
    kills: usize,
    /// Also write the report as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
}

async fn run_wan(args: WanArgs) -> Result<()> {
    let matrix = match &args.regions {
        Some(path) => slapos_wan::regions::load(path)
            .with_context(|| format!("regions file {}", path.display()))?,
        None => slapos_wan::regions::parse(slapos_bench::wan::DEFAULT_REGIONS)
            .context("the embedded regions")?,
    };
    let dir = match args.dir {
        Some(d) => d,
        None => std::env::temp_dir().join(format!("slapos-bench-wan-{}", std::process::id())),
    };
    if dir.exists() {
        std::fs::remove_dir_all(&dir).with_context(|| format!("clear {}", dir.display()))?;
    }
    let opts = slapos_bench::wan::WanBenchOptions {
        bin: std::env::current_exe()?,
        dir: dir.clone(),
        matrix,
        writers: args.writers,
        pollers: args.pollers,
        duration: Duration::from_secs(args.seconds),
        kills: args.kills,
    };
    let report = slapos_bench::wan::run_wan_bench(&opts).await;
    let r = match report {
        Ok(r) => r,
        Err(e) => {
            return Err(e).with_context(|| {
                format!(
                    "the replicas' and gateways' logs are kept in {}",
                    dir.display()
                )
            })
        }
    };
    let _ = std::fs::remove_dir_all(&dir);
    println!(
        "wan bench: 3 replicas in {}; heartbeat {} ms, elections after {}-{} ms; {} leads",
        r.regions.join(", "),
        r.timers.heartbeat_ms,
        r.timers.election_timeout_min_ms,
        r.timers.election_timeout_max_ms,
        r.leader_region
    );
    println!(
        "{:<10} {:>9} {:>8} {:>10} {:>10} {:>13} {:>13}",
        "region", "to leader", "writers", "write p50", "write p99", "poll p50 ms", "poll p99 ms"
    );
    for g in &r.per_region {
        for w in &g.writes {
            println!(
                "{:<10} {:>6.0} ms {:>8} {:>7.1} ms {:>7.1} ms {:>13.2} {:>13.2}",
                g.region,
                g.rtt_to_leader_ms,
                w.writers,
                w.p50_ms,
                w.p99_ms,
                g.polls.p50_ms,
                g.polls.p99_ms
            );
        }
    }
    if let Some(f) = &r.failover {
        println!(
            "failover (kill -9 of the leader to first acknowledged write), {} kills: median {:.0} ms, max {:.0} ms",
            f.samples_ms.len(),
            f.median_ms,
            f.max_ms
        );
    }
    write_json(args.json.as_deref(), &r)
}

pub async fn run(cmd: BenchCommand) -> Result<()> {
    match cmd {
        BenchCommand::Wan(args) => run_wan(args).await,
        BenchCommand::Tunnel(args) => run_tunnel(args).await,
        BenchCommand::Frontend(args) => run_frontend(args).await,
        BenchCommand::Scale(args) => run_scale(args).await,
        BenchCommand::Alloc(args) => {
            let opts = slapos_bench::alloc::AllocBenchOptions {
                computers: args.computers,
                partitions: args.partitions,
                regions: args.regions,
                requests: args.requests,
            };
            let report =
                tokio::task::spawn_blocking(move || slapos_bench::alloc::run_alloc_bench(&opts))
                    .await??;
            print!("{}", report.summary());
            write_json(args.json.as_deref(), &report)
        }
        BenchCommand::Portal(args) => {
            let dir = fresh_dir(args.dir, "portal")?;
            let opts = slapos_bench::portal::PortalBenchOptions {
                bin: std::env::current_exe()?,
                dir: dir.clone(),
                replicas: args.replicas,
                services: args.services,
                computers: args.computers,
                partitions: args.partitions,
                requests: args.requests,
                fill_writers: args.fill_writers,
            };
            let report = slapos_bench::portal::run_portal_bench(&opts).await;
            let _ = std::fs::remove_dir_all(&dir);
            let report = report?;
            print!("{}", report.summary());
            write_json(args.json.as_deref(), &report)
        }
        BenchCommand::Slap(args) => run_slap(args).await,
        BenchCommand::Usage(args) => run_usage(args).await,
        BenchCommand::Node(args) => run_node(args).await,
        BenchCommand::Limits(args) => run_limits(args).await,
        BenchCommand::Fleet(args) => run_fleet(args).await,
        BenchCommand::Backup(args) => {
            let dir = fresh_dir(args.dir, "backup")?;
            let opts = slapos_bench::backup::BackupBenchOptions {
                bin: std::env::current_exe()?,
                dir: dir.clone(),
                computers: args.computers,
                instances: args.instances,
                fill_writers: args.fill_writers,
                rounds: args.rounds,
                max_rate_mib: args.max_rate_mib,
            };
            let report = slapos_bench::backup::run_backup_bench(&opts).await;
            let _ = std::fs::remove_dir_all(&dir);
            let r = report?;
            println!(
                "backup bench: {} computers, {} instances (filled in {:.1} s)",
                r.computers, r.instances, r.fill_seconds
            );
            println!(
                "backup: {:.1} s, {} bytes, {} pairs, at index {}; verify {:.1} s",
                r.backup_seconds, r.backup_bytes, r.backup_pairs, r.backup_index, r.verify_seconds
            );
            for (i, round) in r.rounds.iter().enumerate() {
                println!(
                    "round {}: backup {:.1} s; one writer's p99 during it {:.2} ms ({} writes), without {:.2} ms ({} writes): ratio {:.2}",
                    i + 1,
                    round.backup_seconds,
                    round.write_p99_ms_during,
                    round.writes_during,
                    round.write_p99_ms_alone,
                    round.writes_alone,
                    round.p99_ratio
                );
            }
            println!(
                "one writer's commits over the rounds: alone p50 {:.2} ms p99 {:.2} ms; during the backups p50 {:.2} ms p99 {:.2} ms; median of the rounds' p99 ratios {:.2} (goal: at most 1.20)",
                r.write_p50_ms_alone,
                r.write_p99_ms_alone,
                r.write_p50_ms_during,
                r.write_p99_ms_during,
                r.p99_ratio_median
            );
            println!(
                "unpaced from the leader (as before): {:.1} s; during it p50 {:.2} ms p99 {:.2} ms ({} writes; p99 ratio {:.2})",
                r.unpaced_backup_seconds,
                r.write_p50_ms_during_unpaced,
                r.write_p99_ms_during_unpaced,
                r.writes_during_unpaced,
                r.write_p99_ms_during_unpaced / r.write_p99_ms_alone.max(1e-9)
            );
            println!(
                "restore: {:.1} s into an empty directory, then {:.1} s to serve a linearizable read of everything",
                r.restore_seconds, r.restored_serving_seconds
            );
            write_json(args.json.as_deref(), &r)
        }
        BenchCommand::Raft(args) => {
            let dir = match args.dir {
                Some(d) => d,
                None => {
                    std::env::temp_dir().join(format!("slapos-bench-raft-{}", std::process::id()))
                }
            };
            if dir.exists() {
                std::fs::remove_dir_all(&dir)
                    .with_context(|| format!("clear {}", dir.display()))?;
            }
            let opts = slapos_bench::raft::RaftBenchOptions {
                bin: std::env::current_exe()?,
                dir: dir.clone(),
                replicas: args.replicas,
                writers: args.writers,
                duration: Duration::from_secs(args.seconds),
                kills: args.kills,
                timers: master_replica::node::Timers {
                    heartbeat_ms: args.heartbeat_ms,
                    election_timeout_min_ms: args.election_ms.first().copied().unwrap_or(300),
                    election_timeout_max_ms: args.election_ms.get(1).copied().unwrap_or(600),
                },
            };
            let report = slapos_bench::raft::run_raft_bench(&opts).await;
            let _ = std::fs::remove_dir_all(&dir);
            let report = report?;
            println!(
                "raft bench: {} replicas on loopback, synced log writes",
                report.replicas
            );
            println!(
                "{:>8} {:>12} {:>10} {:>10}",
                "writers", "commits/s", "p50 ms", "p99 ms"
            );
            for l in &report.levels {
                println!(
                    "{:>8} {:>12.0} {:>10.2} {:>10.2}",
                    l.writers, l.commits_per_sec, l.p50_ms, l.p99_ms
                );
            }
            if let Some(f) = &report.failover {
                println!(
                    "failover (kill -9 of the leader to first acknowledged write), {} kills: median {:.0} ms, max {:.0} ms",
                    f.samples_ms.len(),
                    f.median_ms,
                    f.max_ms
                );
            }
            write_json(args.json.as_deref(), &report)
        }
    }
}

async fn run_slap(args: SlapArgs) -> Result<()> {
    let dir = fresh_dir(args.dir, "slap")?;
    let venv = args
        .venv
        .or_else(|| std::env::var_os("SLAPOS_VENV").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("/var/tmp/slapos-venv"));
    let opts = slapos_bench::slap::SlapBenchOptions {
        bin: std::env::current_exe()?,
        dir: dir.clone(),
        venv,
        replicas: args.replicas,
        partitions: args.partitions,
        requests: args.requests,
        calls: args.calls,
        pollers: args.pollers,
        poll_duration: Duration::from_secs(args.seconds),
        poll_slapproxy: !args.no_slapproxy_pollers,
        requesters: args.requesters,
    };
    let report = slapos_bench::slap::run_slap_bench(&opts, |m| eprintln!("bench slap: {m}")).await;
    let _ = std::fs::remove_dir_all(&dir);
    let report = report?;
    println!(
        "slap bench: real slapos.core client vs slapproxy and a {}-replica cluster (synced log) behind one gateway",
        report.replicas
    );
    print!("{}", report.table());
    print!("{}", report.goal());
    write_json(args.json.as_deref(), &report)?;
    Ok(())
}

async fn run_usage(args: UsageArgs) -> Result<()> {
    let dir = fresh_dir(args.dir, "usage")?;
    let opts = slapos_bench::usage::UsageBenchOptions {
        bin: std::env::current_exe()?,
        dir: dir.clone(),
        replicas: args.replicas,
        computers: args.computers,
        partitions: args.partitions,
        resources: args.resources,
        occupied: args.occupied,
        concurrency: args.concurrency,
    };
    let report =
        slapos_bench::usage::run_usage_bench(&opts, |m| eprintln!("bench usage: {m}")).await;
    let _ = std::fs::remove_dir_all(&dir);
    let report = report?;
    print!("{}", report.summary());
    write_json(args.json.as_deref(), &report)?;
    anyhow::ensure!(
        report.verified,
        "the invoice does not match the journals posted"
    );
    Ok(())
}

async fn run_node(args: NodeArgs) -> Result<()> {
    let dir = fresh_dir(args.dir, "node")?;
    let opts = slapos_bench::node::NodeBenchOptions {
        bin: std::env::current_exe()?,
        dir: dir.clone(),
        replicas: args.replicas,
        steady: args.steady,
        fresh: args.fresh,
        runs: args.runs,
        reference: (args.reference_partitions > 0).then(|| slapos_bench::node::ReferenceOptions {
            partitions: args.reference_partitions,
            venv: args.node_venv.clone(),
            runs: args.runs,
        }),
        limits: match args.limits.as_str() {
            "off" => slapos_bench::node::LimitsMode::Off,
            "on" => slapos_bench::node::LimitsMode::Limits,
            _ => slapos_bench::node::LimitsMode::Auto,
        },
    };
    let report = slapos_bench::node::run_node_bench(&opts, |m| eprintln!("bench node: {m}")).await;
    let _ = std::fs::remove_dir_all(&dir);
    let report = report?;
    print!("{}", report.summary());
    write_json(args.json.as_deref(), &report)?;
    Ok(())
}

async fn run_limits(args: LimitsArgs) -> Result<()> {
    let dir = fresh_dir(args.dir, "limits")?;
    let opts = slapos_bench::limits::LimitsBenchOptions {
        bin: std::env::current_exe()?,
        dir: dir.clone(),
        accuracy_runs: args.accuracy_runs,
        short_processes: args.short_processes,
        short_ms: args.short_ms,
        long_ms: args.long_ms,
        replicas: args.replicas,
        rounds: args.rounds,
        seconds: args.seconds,
        burner: args.neighbour != "hog",
        hog: args.neighbour != "burner",
        replica_quota: args.replica_quota,
    };
    let report =
        slapos_bench::limits::run_limits_bench(&opts, |m| eprintln!("bench limits: {m}")).await;
    let _ = std::fs::remove_dir_all(&dir);
    let report = report?;
    print!("{}", report.summary());
    write_json(args.json.as_deref(), &report)?;
    Ok(())
}

async fn run_fleet(args: FleetArgs) -> Result<()> {
    anyhow::ensure!(
        args.poll_interval > 0.0 && args.poll_interval.is_finite(),
        "--poll-interval must be a positive number of seconds"
    );
    anyhow::ensure!(
        (0.0..=1.0).contains(&args.plain_share),
        "--plain-share is a share of the nodes, 0 to 1"
    );
    anyhow::ensure!(
        args.writes_per_sec >= 0.0 && args.writes_per_sec.is_finite(),
        "--writes-per-sec must be 0 or more"
    );
    let dir = fresh_dir(args.dir, "fleet")?;
    let opts = slapos_bench::fleet::FleetBenchOptions {
        bin: std::env::current_exe()?,
        dir: dir.clone(),
        replicas: args.replicas,
        nodes: args.nodes,
        partitions: args.partitions,
        plain_share: args.plain_share,
        poll_interval: Duration::from_secs_f64(args.poll_interval),
        conditional: args.conditional,
        wait_s: args.wait,
        writes_per_sec: args.writes_per_sec,
        instances: args.instances,
        duration: Duration::from_secs(args.seconds),
        gateways: args.gateways,
        connect_concurrency: args.connect_concurrency,
        setup_concurrency: args.setup_concurrency,
    };
    let report =
        slapos_bench::fleet::run_fleet_bench(&opts, |m| eprintln!("bench fleet: {m}")).await;
    let _ = std::fs::remove_dir_all(&dir);
    let report = report?;
    print!("{}", report.summary());
    write_json(args.json.as_deref(), &report)?;
    Ok(())
}

/// The bench's working directory: the one given (made absolute) or a new one under the
/// temporary directory, emptied first.
async fn run_tunnel(args: TunnelArgs) -> Result<()> {
    let dir = fresh_dir(args.dir, "tunnel")?;
    let opts = slapos_bench::tunnel::TunnelBenchOptions {
        bin: std::env::current_exe()?,
        dir: dir.clone(),
        rounds: args.rounds.max(1),
        seconds: args.seconds,
        clients: args.clients,
        value_bytes: args.value_bytes,
        bulk_bytes: args.bulk_bytes,
        keys: args.keys.max(1),
    };
    let report = slapos_bench::tunnel::run_tunnel_bench(&opts).await;
    let r = report.with_context(|| format!("the logs are kept in {}", dir.display()))?;
    let _ = std::fs::remove_dir_all(&dir);
    println!(
        "tunnel bench: {} ({}), medians of {} rounds of {} s; values {} B, bulk {} B",
        r.memcached, r.stunnel, r.rounds, r.seconds, r.value_bytes, r.bulk_bytes
    );
    let direct = r.path("direct");
    let stunnel = r.path("stunnel");
    for p in &r.paths {
        for (i, f) in p.ops.iter().enumerate() {
            let vs = |other: Option<&slapos_bench::tunnel::PathFigures>| {
                other
                    .and_then(|o| o.ops.get(i))
                    .map(|o| f.ops_per_sec / o.ops_per_sec.max(1e-9))
                    .unwrap_or(0.0)
            };
            println!(
                "{:8} {} x{:<3} {:9.0} ops/s  p50 {:7.1} us  p99 {:7.1} us  (x{:.2} of direct, x{:.2} of stunnel)",
                p.path, f.op, f.clients, f.ops_per_sec, f.p50_us, f.p99_us, vs(direct), vs(stunnel)
            );
        }
        println!(
            "{:8} bulk     {:9.1} MiB/s  set+get p50 {:.2} ms",
            p.path, p.bulk_mib_per_sec, p.bulk_p50_ms
        );
    }
    write_json(args.json.as_deref(), &r)
}

async fn run_frontend(args: FrontendArgs) -> Result<()> {
    let dir = fresh_dir(args.dir, "frontend")?;
    let opts = slapos_bench::frontend::FrontendBenchOptions {
        bin: std::env::current_exe()?,
        dir: dir.clone(),
        rounds: args.rounds.max(1),
        seconds: args.seconds,
        connections: args.connections,
        handshake_clients: args.handshake_clients.max(1),
        body_bytes: args.body_bytes,
    };
    let report = slapos_bench::frontend::run_frontend_bench(&opts).await;
    let r = report.with_context(|| format!("the logs are kept in {}", dir.display()))?;
    let _ = std::fs::remove_dir_all(&dir);
    println!(
        "frontend bench: {}, medians of {} rounds of {} s; a {} B file, handshakes by {} clients",
        r.nginx, r.rounds, r.seconds, r.body_bytes, r.handshake_clients
    );
    let nginx = r.path("nginx");
    for p in &r.paths {
        for (i, f) in p.loads.iter().enumerate() {
            let of_nginx = nginx
                .and_then(|n| n.loads.get(i))
                .map(|n| f.requests_per_sec / n.requests_per_sec.max(1e-9))
                .unwrap_or(0.0);
            println!(
                "{:8} x{:<3} {:9.0} req/s  p50 {:7.1} us  p99 {:8.1} us  added p50 {:6.1} us  p99 {:7.1} us  (x{:.2} of nginx)",
                p.path, f.connections, f.requests_per_sec, f.p50_us, f.p99_us, f.added_p50_us, f.added_p99_us, of_nginx
            );
        }
        if let Some(h) = p.handshakes_per_sec {
            println!("{:8} handshakes {h:9.0} /s", p.path);
        }
    }
    write_json(args.json.as_deref(), &r)
}

fn fresh_dir(given: Option<PathBuf>, bench: &str) -> Result<PathBuf> {
    let dir = match given {
        Some(d) => std::path::absolute(d)?,
        None => std::env::temp_dir().join(format!("slapos-bench-{bench}-{}", std::process::id())),
    };
    if dir.exists() {
        std::fs::remove_dir_all(&dir).with_context(|| format!("clear {}", dir.display()))?;
    }
    Ok(dir)
}

/// `--json FILE`: the report as pretty JSON.
fn write_json(path: Option<&std::path::Path>, report: &impl serde::Serialize) -> Result<()> {
    if let Some(path) = path {
        std::fs::write(path, serde_json::to_vec_pretty(report)?)
            .with_context(|| format!("write {}", path.display()))?;
    }
    Ok(())
}

async fn run_scale(args: ScaleArgs) -> Result<()> {
    let dir = match args.dir {
        Some(d) => std::path::absolute(d)?,
        None => std::env::temp_dir().join(format!("slapos-bench-scale-{}", std::process::id())),
    };
    if dir.exists() {
        std::fs::remove_dir_all(&dir).with_context(|| format!("clear {}", dir.display()))?;
    }
    let opts = slapos_bench::scale::ScaleBenchOptions {
        bin: std::env::current_exe()?,
        dir: dir.clone(),
        replicas: args.replicas,
        computers: args.computers,
        partitions: args.partitions,
        instances: args.instances,
        customers: args.customers,
        months: args.months,
        usage_lines: args.usage_lines,
        concurrency: args.concurrency,
        sla_requests: args.sla_requests,
        reads: args.reads,
        logs_since_last: args.logs_since_last,
    };
    let report = slapos_bench::scale::run_scale_bench(&opts).await;
    let _ = std::fs::remove_dir_all(&dir);
    let report = report?;
    println!("{}", serde_json::to_string_pretty(&report)?);
    if let Some(path) = args.json {
        std::fs::write(&path, serde_json::to_vec_pretty(&report)?)?;
    }
    Ok(())
}
