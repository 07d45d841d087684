//! `slapos bench limits`: what partition limits (issue 26) give, on this host's real
//! cgroups, as root.
//!
//! * **usage accuracy**: a workload whose CPU time is known (many processes of about
//!   10 ms each, then one long one) runs as a partition's process in a partition's
//!   cgroup; the CPU time the node would report (the cgroup's counter, what
//!   `slapos node report` reads) against the workload's own count (bash's `times`: the
//!   shell's and its reaped children's CPU time, from the kernel's rusage, in ms). The
//!   former /proc sampling saw only the processes alive at the report: none of these.
//! * **a replica next to a noisy partition**: a replica group of real processes, a
//!   single writer, its commit latency (p50, p99) on an idle machine; next to a partition
//!   running a CPU burner (twice as many busy loops as CPUs) and a memory hog (a 2 GB
//!   line buffered by `tail`, over and over) without limits (every process in the one
//!   cgroup, as before issue 26); and the same with limits (the replicas and the writer,
//!   which stands for a gateway, in reserved partitions, the neighbour in a shared one
//!   with 512 MiB and 64 processes; with `--replica-quota`, the reserved quotas buy CPUs
//!   the shared partition no longer runs on). Rounds
//!   interleave the three so that the machine's own drift spreads over all of them.
//!
//! Everything it makes (cgroups under the bench's own cgroup, processes as `nobody`) is
//! removed at the end.

use serde::Serialize;
use slapgrid::cgroup::{Availability, Cgroups, Limits, Mode, PartitionCgroup};
use slapgrid::process::{Identity, Run};
use slapos_harness::{HarnessError, ProcessCluster};
use std::path::{Path, PathBuf};
use std::time::Duration;

pub struct LimitsBenchOptions {
    /// The `slapos` binary (replicas).
    pub bin: PathBuf,
    /// A fresh working directory (the replicas' data).
    pub dir: PathBuf,
    /// Accuracy: workloads measured.
    pub accuracy_runs: usize,
    /// Accuracy: short processes per workload, and the CPU time each burns.
    pub short_processes: usize,
    pub short_ms: u64,
    /// Accuracy: the long process's CPU time.
    pub long_ms: u64,
    /// Neighbours: replicas (0 skips the measure), rounds, seconds per measure.
    pub replicas: u64,
    pub rounds: usize,
    pub seconds: u64,
    /// What the noisy neighbour runs: its CPU burner, its memory hog, or both.
    pub burner: bool,
    pub hog: bool,
    /// A CPU quota per replica partition (hundredths of a CPU): the reserved share the
    /// shared partitions' cap leaves them (`Cgroups::rebalance`). None: weights only.
    pub replica_quota: Option<u32>,
}

#[derive(Debug, thiserror::Error)]
pub enum LimitsBenchError {
    #[error("cluster: {0}")]
    Cluster(#[from] HarnessError),
    #[error("{0}")]
    Failed(String),
}

fn failed(m: impl Into<String>) -> LimitsBenchError {
    LimitsBenchError::Failed(m.into())
}

#[derive(Debug, Serialize)]
pub struct AccuracyRun {
    /// The workload's own count (bash `times`: itself and its reaped children).
    pub known_cpu_seconds: f64,
    /// The cgroup's count over the run (what the usage journal carries).
    pub reported_cpu_seconds: f64,
    /// (reported - known) / known, in percent.
    pub error_percent: f64,
}

#[derive(Debug, Serialize)]
pub struct Accuracy {
    pub short_processes: usize,
    pub short_process_ms: f64,
    pub long_process_ms: u64,
    pub runs: Vec<AccuracyRun>,
    pub median_abs_error_percent: f64,
    pub max_abs_error_percent: f64,
}

#[derive(Debug, Serialize)]
pub struct Scenario {
    /// `idle`, `neighbour without limits`, `neighbour with limits`.
    pub name: String,
    pub p50_ms: Vec<f64>,
    pub p99_ms: Vec<f64>,
    pub commits: Vec<u64>,
    pub median_p50_ms: f64,
    pub median_p99_ms: f64,
}

#[derive(Debug, Serialize)]
pub struct LimitsBenchReport {
    /// Which cgroups this host offers (`v1 (cpu, cpuacct, memory, pids)`).
    pub cgroups: String,
    /// What the neighbour ran.
    pub burner: bool,
    pub hog: bool,
    /// The replicas' CPU quota (their reserved share), if any.
    pub replica_quota: Option<u32>,
    pub accuracy: Accuracy,
    pub replicas: u64,
    pub seconds_per_measure: u64,
    pub scenarios: Vec<Scenario>,
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    match s.len() {
        0 => 0.0,
        n if n % 2 == 1 => s[n / 2],
        n => (s[n / 2 - 1] + s[n / 2]) / 2.0,
    }
}

/// The bench's cgroups, removed (their processes killed first) when dropped.
struct Scratch {
    cgroups: Cgroups,
}

impl Scratch {
    fn kill_all(&self) {
        for (p, reserved) in self.cgroups.partitions() {
            let cg = self.cgroups.partition(
                &p,
                &Limits {
                    reserved,
                    ..Limits::default()
                },
            );
            kill_cgroup(&cg);
        }
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        self.kill_all();
        for _ in 0..50 {
            if self.cgroups.remove_all().is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        eprintln!("bench limits: cgroups left under {:?}", self.cgroups.bases);
    }
}

/// SIGKILL to every process of a cgroup.
fn kill_cgroup(cg: &PartitionCgroup) {
    for base in &cg.dirs {
        if let Ok(pids) = std::fs::read_to_string(base.dir.join("cgroup.procs")) {
            for pid in pids
                .split_whitespace()
                .filter_map(|p| p.parse::<i32>().ok())
            {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
    }
}

/// Moves process `pid` (all its threads) into `cg`, or (None) back into the cgroup the
/// bench runs in, in each hierarchy.
fn move_to(
    cgroups: &Cgroups,
    cg: Option<&PartitionCgroup>,
    pid: u32,
) -> Result<(), LimitsBenchError> {
    let dirs: Vec<PathBuf> = match cg {
        Some(cg) => cg.dirs.iter().map(|b| b.dir.clone()).collect(),
        // The bench's root is relative: its parent is the bench's own cgroup.
        None => cgroups
            .bases
            .iter()
            .filter_map(|b| b.dir.parent().map(Path::to_path_buf))
            .collect(),
    };
    for dir in dirs {
        let file = dir.join("cgroup.procs");
        std::fs::write(&file, pid.to_string())
            .map_err(|e| failed(format!("move {pid} into {}: {e}", file.display())))?;
    }
    Ok(())
}

/// `0m1.234s`: seconds.
fn shell_seconds(t: &str) -> Option<f64> {
    let (m, s) = t.trim_end_matches('s').split_once('m')?;
    Some(m.parse::<f64>().ok()? * 60.0 + s.parse::<f64>().ok()?)
}

/// The sum of bash's `times` (itself and its children, user and system).
fn times_total(output: &str) -> Option<f64> {
    let lines: Vec<&str> = output
        .lines()
        .filter(|l| l.split_whitespace().count() == 2 && l.ends_with('s') && l.contains('m'))
        .collect();
    let last_two = lines.get(lines.len().checked_sub(2)?..)?;
    last_two
        .iter()
        .flat_map(|l| l.split_whitespace())
        .map(shell_seconds)
        .sum()
}

const LOOP: &str = "x=0; while [ $x -lt N ]; do x=$((x+1)); done";

fn busy(n: u64) -> String {
    LOOP.replace('N', &n.to_string())
}

fn run_in(
    cg: &PartitionCgroup,
    user: &Identity,
    script: &str,
    timeout: Duration,
) -> Result<slapgrid::process::Output, LimitsBenchError> {
    Run::new("/bin/bash", "/", Path::new("/"))
        .arg("-c")
        .arg(script)
        .as_user(user.clone())
        .in_cgroup(Some(cg.clone()))
        .timeout(Some(timeout))
        .output()
        .map_err(|e| failed(format!("workload: {e}")))
}

fn accuracy(
    cgroups: &Cgroups,
    user: &Identity,
    opts: &LimitsBenchOptions,
    say: &dyn Fn(&str),
) -> Result<Accuracy, LimitsBenchError> {
    let cg = cgroups.partition("slappart0", &Limits::default());
    cg.ensure().map_err(|e| failed(e.to_string()))?;
    // Calibration: iterations of the shell loop per ms of CPU.
    let probe = 200_000u64;
    let out = run_in(
        &cg,
        user,
        &format!("sh -c '{}'; times", busy(probe)),
        Duration::from_secs(120),
    )?;
    let probe_s = times_total(&out.output)
        .filter(|s| *s > 0.0)
        .ok_or_else(|| failed(format!("calibration: {}", out.output)))?;
    let per_ms = probe as f64 / (probe_s * 1000.0);
    let short = ((opts.short_ms as f64 * per_ms) as u64).max(1);
    let long = ((opts.long_ms as f64 * per_ms) as u64).max(1);
    let script = format!(
        "i=0; while [ $i -lt {n} ]; do sh -c '{s}'; i=$((i+1)); done; sh -c '{l}'; times",
        n = opts.short_processes,
        s = busy(short),
        l = busy(long),
    );
    let mut runs = Vec::new();
    for r in 0..opts.accuracy_runs {
        let before = cg
            .usage()
            .cpu_seconds
            .ok_or_else(|| failed("no CPU count"))?;
        let out = run_in(&cg, user, &script, Duration::from_secs(600))?;
        let after = cg
            .usage()
            .cpu_seconds
            .ok_or_else(|| failed("no CPU count"))?;
        if !out.success() {
            return Err(failed(format!("workload failed: {}", out.output)));
        }
        let known =
            times_total(&out.output).ok_or_else(|| failed(format!("times: {}", out.output)))?;
        let reported = after - before;
        let error_percent = (reported - known) / known * 100.0;
        say(&format!(
            "accuracy run {}: known {known:.3} s, reported {reported:.3} s ({error_percent:+.2} %)",
            r + 1
        ));
        runs.push(AccuracyRun {
            known_cpu_seconds: known,
            reported_cpu_seconds: reported,
            error_percent,
        });
    }
    let errors: Vec<f64> = runs.iter().map(|r| r.error_percent.abs()).collect();
    Ok(Accuracy {
        short_processes: opts.short_processes,
        short_process_ms: short as f64 / per_ms,
        long_process_ms: opts.long_ms,
        median_abs_error_percent: median(&errors),
        max_abs_error_percent: errors.iter().copied().fold(0.0, f64::max),
        runs,
    })
}

/// The noisy neighbour, as `user`: a CPU burner and a memory hog, killed after
/// `seconds` (a thread each; join them to wait).
fn start_neighbour(
    cg: Option<&PartitionCgroup>,
    user: &Identity,
    seconds: u64,
    (burner_on, hog_on): (bool, bool),
) -> Vec<std::thread::JoinHandle<()>> {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let burner = format!(
        "for i in $(seq {}); do (while :; do :; done) & done; wait",
        cpus * 2
    );
    let hog = "while :; do head -c 2000000000 /dev/zero | tail -n 1 > /dev/null; done".to_owned();
    [(burner, burner_on), (hog, hog_on)]
        .into_iter()
        .filter(|(_, on)| *on)
        .map(|(script, _)| {
            let run = Run::new("/bin/bash", "/", Path::new("/"))
                .arg("-c")
                .arg(script)
                .as_user(user.clone())
                .in_cgroup(cg.cloned())
                .timeout(Some(Duration::from_secs(seconds)));
            std::thread::spawn(move || {
                let _ = run.output();
            })
        })
        .collect()
}

async fn neighbours(
    cgroups: &Cgroups,
    user: &Identity,
    opts: &LimitsBenchOptions,
    say: &(dyn Fn(&str) + Sync),
) -> Result<Vec<Scenario>, LimitsBenchError> {
    let mut cluster = ProcessCluster::new(&opts.bin, &opts.dir);
    cluster.start(opts.replicas).await?;
    let client = crate::raft::writers_client(&cluster).await?;
    let reserved: Vec<(u32, PartitionCgroup)> = cluster
        .ids()
        .into_iter()
        .filter_map(|id| cluster.pid(id).map(|pid| (id, pid)))
        .map(|(id, pid)| {
            let cg = cgroups.partition(
                &format!("replica{id}"),
                &Limits {
                    reserved: true,
                    cpu_quota: opts.replica_quota,
                    ..Limits::default()
                },
            );
            (pid, cg)
        })
        .collect();
    for (_, cg) in &reserved {
        cg.ensure().map_err(|e| failed(e.to_string()))?;
    }
    let limited = cgroups.partition(
        "neighbour",
        &Limits {
            memory: Some(512 << 20),
            pids: Some(64),
            ..Limits::default()
        },
    );
    limited.ensure().map_err(|e| failed(e.to_string()))?;
    // The writer stands for a gateway, which the master's release hosts in a reserved
    // partition of its own too: with limits, the bench itself moves there.
    let gateway = cgroups.partition(
        "gateway",
        &Limits {
            reserved: true,
            ..Limits::default()
        },
    );
    gateway.ensure().map_err(|e| failed(e.to_string()))?;
    cgroups.rebalance().map_err(|e| failed(e.to_string()))?;
    let me = std::process::id();
    let names = ["idle", "neighbour without limits", "neighbour with limits"];
    let mut results: Vec<Scenario> = names
        .iter()
        .map(|n| Scenario {
            name: n.to_string(),
            p50_ms: Vec::new(),
            p99_ms: Vec::new(),
            commits: Vec::new(),
            median_p50_ms: 0.0,
            median_p99_ms: 0.0,
        })
        .collect();
    let warmup = 2;
    let noise = (opts.burner, opts.hog);
    for round in 0..opts.rounds {
        for (k, name) in names.iter().enumerate() {
            // Where the replicas are: their reserved partitions, or (before issue 26)
            // the one cgroup everything runs in.
            for (pid, cg) in &reserved {
                move_to(cgroups, (k != 1).then_some(cg), *pid)?;
            }
            move_to(cgroups, (k == 2).then_some(&gateway), me)?;
            let threads = match k {
                0 => Vec::new(),
                1 => start_neighbour(None, user, warmup + opts.seconds, noise),
                _ => start_neighbour(Some(&limited), user, warmup + opts.seconds, noise),
            };
            tokio::time::sleep(Duration::from_secs(warmup)).await;
            let r = crate::raft::level(
                &client,
                1,
                Duration::from_secs(opts.seconds),
                1000 + round * 10 + k,
            )
            .await;
            say(&format!(
                "round {} {name}: p50 {:.2} ms, p99 {:.2} ms ({} commits, {} errors)",
                round + 1,
                r.p50_ms,
                r.p99_ms,
                r.commits,
                r.errors
            ));
            for t in threads {
                let _ = t.join();
            }
            kill_cgroup(&limited);
            results[k].p50_ms.push(r.p50_ms);
            results[k].p99_ms.push(r.p99_ms);
            results[k].commits.push(r.commits);
        }
    }
    // The replicas back where they were before their cgroups go.
    for (pid, _) in &reserved {
        let _ = move_to(cgroups, None, *pid);
    }
    let _ = move_to(cgroups, None, me);
    drop(cluster);
    for s in &mut results {
        s.median_p50_ms = median(&s.p50_ms);
        s.median_p99_ms = median(&s.p99_ms);
    }
    Ok(results)
}

/// Runs the bench; `say` hears each step.
pub async fn run_limits_bench(
    opts: &LimitsBenchOptions,
    say: impl Fn(&str) + Sync,
) -> Result<LimitsBenchReport, LimitsBenchError> {
    let found = slapgrid::cgroup::detect(
        Mode::Auto,
        &format!("slapos-bench-limits-{}", std::process::id()),
    );
    let cgroups = match &found {
        Availability::Available(c) => c.clone(),
        other => return Err(failed(format!("cgroups {}", other.describe()))),
    };
    say(&format!("cgroups: {}", found.describe()));
    let scratch = Scratch {
        cgroups: cgroups.clone(),
    };
    let user = Identity::by_name("nobody").ok_or_else(|| failed("no user nobody"))?;
    let accuracy = accuracy(&cgroups, &user, opts, &say)?;
    let scenarios = if opts.replicas > 0 && opts.rounds > 0 {
        neighbours(&cgroups, &user, opts, &say).await?
    } else {
        Vec::new()
    };
    drop(scratch);
    Ok(LimitsBenchReport {
        cgroups: found.describe(),
        burner: opts.burner,
        hog: opts.hog,
        replica_quota: opts.replica_quota,
        accuracy,
        replicas: opts.replicas,
        seconds_per_measure: opts.seconds,
        scenarios,
    })
}

impl LimitsBenchReport {
    pub fn summary(&self) -> String {
        let a = &self.accuracy;
        let mut out = format!(
            "limits bench (cgroups: {})\n\
             usage accuracy: {} processes of {:.1} ms and one of {} ms per workload, {} workloads: \
             reported CPU off by median {:.2} %, max {:.2} % (goal within 2 %)\n",
            self.cgroups,
            a.short_processes,
            a.short_process_ms,
            a.long_process_ms,
            a.runs.len(),
            a.median_abs_error_percent,
            a.max_abs_error_percent,
        );
        if let Some(idle) = self.scenarios.first() {
            out.push_str(&format!(
                "replica commit latency, {} replicas, 1 writer, {} s per measure, medians over {} rounds \
                 (neighbour: {}):\n",
                self.replicas,
                self.seconds_per_measure,
                idle.p99_ms.len(),
                match (self.burner, self.hog) {
                    (true, true) => "CPU burner and memory hog",
                    (true, false) => "CPU burner",
                    (false, true) => "memory hog",
                    _ => "nothing",
                }
            ));
            for s in &self.scenarios {
                out.push_str(&format!(
                    "  {:<26} p50 {:>7.2} ms  p99 {:>7.2} ms  ({:+.0} % p99 vs idle)\n",
                    s.name,
                    s.median_p50_ms,
                    s.median_p99_ms,
                    (s.median_p99_ms / idle.median_p99_ms.max(1e-9) - 1.0) * 100.0
                ));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bash_times_are_summed() {
        let out = "noise\n0m0.004s 0m0.001s\n0m5.120s 0m0.875s\n";
        let total = times_total(out).unwrap();
        assert!((total - 6.0).abs() < 1e-9, "{total}");
        assert_eq!(times_total("nothing"), None);
    }
}
