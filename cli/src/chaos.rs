//! `slapos chaos run`: wiring to the chaos crate's harness.

use anyhow::{bail, Context, Result};
use chaos::run::{run as chaos_run, ChaosOptions, FaultKind};
use clap::{Args, Subcommand};
use slapos_operator::netns::Network;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Subcommand)]
pub enum ChaosCommand {
    /// Master replicas and a gateway beside each (each host in its own network namespace
    /// when root; or, --self-hosted, hosted in partitions of nodes), concurrent SLAP clients, faults on a seeded schedule (kill -9, pause,
    /// network cuts, a wiped replica rejoining, a gateway killed, as root a disk full or failing), then the checkers:
    /// per-key linearizability, no acknowledged write lost, replicas identical. Exits
    /// non-zero when a checker fails.
    Run(RunArgs),
}

#[derive(Args)]
pub struct RunArgs {
    /// How long the clients run under faults: `90s`, `30m`, `1h` (plain seconds too).
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    duration: Duration,
    /// Seed of the fault schedule and of the clients' choices (printed in the report).
    #[arg(long)]
    seed: Option<u64>,
    /// Replicas of the group under test (real processes).
    #[arg(long, default_value_t = 3)]
    replicas: u64,
    /// Concurrent clients writing and reading, whose history is checked.
    #[arg(long, default_value_t = 6)]
    clients: usize,
    /// Instances the clients share (two clients per instance).
    #[arg(long, default_value_t = 12)]
    keys: usize,
    /// Only these kinds of fault (comma-separated): kill_leader, kill_replica,
    /// pause_leader, isolate_leader, split_group, wipe_rejoin, kill_gateway, disk_full,
    /// io_error (the last two as root: each replica's data directory then lives on a
    /// tmpfs seen through a FUSE passthrough).
    #[arg(long, value_delimiter = ',', value_parser = parse_fault)]
    faults: Vec<FaultKind>,
    /// Loopback ports instead of network namespaces (no network cuts then).
    #[arg(long, conflicts_with = "self_hosted")]
    loopback: bool,
    /// Against the group hosted in partitions (`slapos up`'s default: a node per replica,
    /// each in its own namespace, mTLS everywhere), faults on the nodes: a crash kills a
    /// node outright and its agent comes back, a killed gateway is restarted by the node's
    /// supervisor. Needs root.
    #[arg(long)]
    self_hosted: bool,
    /// Hosts in regions behind the WAN emulator: a regions file (TOML: regions, round
    /// trips between each pair, optional jitter, loss, bandwidth; `examples/regions.toml`).
    /// Replica i runs in region (i - 1) mod the number of regions. Needs root.
    #[arg(long, conflicts_with_all = ["loopback", "self_hosted"])]
    regions: Option<PathBuf>,
    /// Working directory (default: a new one under /tmp; removed at the end unless the
    /// run failed).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Also write the report as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
}

fn parse_fault(s: &str) -> Result<FaultKind, String> {
    FaultKind::parse(s).ok_or_else(|| {
        let names: Vec<&str> = FaultKind::ALL.iter().map(|k| k.name()).collect();
        format!("unknown fault {s:?} (one of {})", names.join(", "))
    })
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (digits, unit) = match s.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("{s:?}: expected a number followed by s, m or h"))?;
    let secs = match unit {
        "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        _ => return Err(format!("{s:?}: unknown unit {unit:?} (s, m or h)")),
    };
    Ok(Duration::from_secs(secs))
}

pub async fn run(cmd: ChaosCommand) -> Result<()> {
    let ChaosCommand::Run(args) = cmd;
    let namespaces = !args.loopback;
    if namespaces {
        if let Err(e) = Network::available() {
            bail!("{e}; run as root, or pass --loopback (no network cuts then)");
        }
    }
    let regions = match &args.regions {
        Some(path) => Some(
            slapos_wan::regions::load(path)
                .with_context(|| format!("regions file {}", path.display()))?,
        ),
        None => None,
    };
    let seed = args.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1)
    });
    let dir = args.dir.unwrap_or_else(|| {
        std::env::temp_dir().join(format!("slapos-chaos-{}", std::process::id()))
    });
    if dir.exists() {
        std::fs::remove_dir_all(&dir).with_context(|| format!("clear {}", dir.display()))?;
    }
    let opts = ChaosOptions {
        bin: std::env::current_exe()?,
        dir: dir.clone(),
        duration: args.duration,
        seed,
        replicas: args.replicas,
        clients: args.clients,
        keys: args.keys,
        namespaces,
        self_hosted: args.self_hosted,
        faults: args.faults,
        regions,
    };
    eprintln!("chaos: seed {seed}, working in {}", dir.display());
    let report = chaos_run(&opts).await?;
    print!("{}", report.summary());
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_vec_pretty(&report)?)
            .with_context(|| format!("write {}", path.display()))?;
    }
    if !report.passed {
        bail!(
            "the chaos run failed its checks (replay with --seed {seed}); logs kept in {}",
            dir.display()
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::parse_duration;
    use std::time::Duration;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("30m"), Ok(Duration::from_secs(1800)));
        assert_eq!(parse_duration("45"), Ok(Duration::from_secs(45)));
        assert!(parse_duration("3d").is_err());
        assert!(parse_duration("m").is_err());
    }
}
