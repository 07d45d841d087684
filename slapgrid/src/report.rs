//! `slapos node report` (slapgrid-behaviour.md 5): the usage of every partition posted as
//! one journal with `useComputer`, and the destruction of partitions left `destroyed`.
//!
//! Usage has two sources: what the instance reports itself (`etc/report` scripts and the
//! files of `var/xml_report`, checked against the consumption schema, as the reference),
//! and what the agent measures (ours; the reference leaves it to `node collect`): the CPU
//! time the partition used since the last report, its memory, and its disk use. With a
//! cgroup the kernel counts them (every process that ever ran in the partition, however
//! short-lived; its memory peak, its processes), and the tap's counters give its network
//! bytes; without one the agent samples `/proc` (processes that came and went between two
//! reports are missed).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use slapos_proto::journal::{
    decode_partition_consumption, encode_computer_journal, journal_from_partition_reports, Amount,
    Consumption, Movement,
};
use slapos_proto::Limits;

use crate::disk::partition_disk_bytes;
use crate::fsutil;
use crate::node::{io_err, now_unix, write_atomic, Node, NodeError};
use crate::process::{Identity, Run};

/// What a report run did.
#[derive(Debug, Default)]
pub struct UsageReport {
    /// Partitions with at least one movement in the posted journal.
    pub partitions: Vec<String>,
    pub movements: usize,
    /// The journal as posted (empty when nothing was posted).
    pub journal: String,
    pub destroyed: Vec<String>,
    /// (partition, message).
    pub failed: Vec<(String, String)>,
}

/// CPU seconds seen per process (`pid-starttime`) at the last report, so that each report
/// carries only what was used since.
#[derive(Debug, Default, Serialize, Deserialize)]
struct CpuState {
    seen: BTreeMap<String, f64>,
    /// When these counters were taken (0: never).
    #[serde(default)]
    at_unix: u64,
    /// Per partition: its cgroup's CPU seconds at the last report.
    #[serde(default)]
    cgroup_cpu: BTreeMap<String, f64>,
    /// Per partition: its tap's bytes (received + sent) at the last report.
    #[serde(default)]
    tap_bytes: BTreeMap<String, u64>,
}

/// One process of /proc.
#[derive(Debug, Clone)]
pub struct ProcSample {
    pub pid: u32,
    pub uid: u32,
    pub session: u32,
    /// `pid-starttime`: unique across pid reuse.
    pub key: String,
    pub cpu_seconds: f64,
    pub rss_bytes: u64,
}

/// Every process of the machine, with its CPU time and memory in units.
pub fn sample_processes() -> Vec<ProcSample> {
    use nix::unistd::{sysconf, SysconfVar};
    let conf = |var| sysconf(var).ok().flatten().unwrap_or(-1).max(1);
    let (ticks, page) = (
        conf(SysconfVar::CLK_TCK) as f64,
        conf(SysconfVar::PAGE_SIZE) as u64,
    );
    crate::procfs::all()
        .into_iter()
        .map(|p| ProcSample {
            pid: p.pid as u32,
            uid: p.uid,
            session: p.session as u32,
            key: format!("{}-{}", p.pid, p.start_ticks),
            cpu_seconds: p.cpu_ticks as f64 / ticks,
            rss_bytes: p.rss_pages * page,
        })
        .collect()
}

fn amount(x: f64) -> Amount {
    // Whole thousandths: journals carry short, exact decimals.
    let x = if x.is_finite() { x } else { 0.0 };
    let text = format!("{:.3}", (x * 1000.0).round() / 1000.0);
    // A formatted finite number is always a valid xs:float.
    Amount::parse(&text).unwrap_or_else(|_| amount_zero())
}

fn amount_zero() -> Amount {
    match Amount::parse("0") {
        Ok(a) => a,
        Err(_) => unreachable!("0 is an xs:float"),
    }
}

fn measured(resource: &str, title: String, quantity: f64, pid: &str) -> Movement {
    Movement {
        resource: resource.to_owned(),
        title: Some(title),
        reference: Some(pid.to_owned()),
        quantity: amount(quantity),
        price: amount(0.0),
        vat: String::new(),
        categories: Vec::new(),
    }
}

/// Which processes belong to a partition.
struct Owner<'a> {
    uid: u32,
    /// The partition shares its uid with the agent (standalone node): its processes are
    /// those of its services' sessions.
    shared_uid: bool,
    sessions: &'a [u32],
    /// Its disk use, measured as its user (see [`crate::disk::partition_disk_bytes`]).
    disk: u64,
    /// What its cgroup counted, when it has one.
    kernel: Option<&'a crate::cgroup::Usage>,
    /// Its tap's bytes, when it has one.
    tap_bytes: Option<u64>,
}

/// The agent's own measure of a partition since the last report: the CPU seconds its
/// processes used (processes of the partition's user on a privileged node, else of its
/// supervised services' sessions), and its resident memory and disk use integrated over
/// the time elapsed (MiB·h), so that movements add up over any period whatever the
/// report frequency.
fn measure(
    pid: &str,
    who: &Owner<'_>,
    procs: &[ProcSample],
    hours: f64,
    state: &mut CpuState,
    next: &mut CpuState,
) -> Vec<Movement> {
    let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
    let (cpu, memory, kernel) = match who.kernel {
        // The kernel's count: every process that ever ran in the cgroup.
        Some(usage) if usage.cpu_seconds.is_some() || usage.memory_bytes.is_some() => {
            let cpu = usage.cpu_seconds.map(|now| {
                next.cgroup_cpu.insert(pid.to_owned(), now);
                match state.cgroup_cpu.get(pid) {
                    // A counter that went back: the cgroup was made again (a reboot).
                    Some(before) if *before <= now => now - before,
                    _ => now,
                }
            });
            (cpu, usage.memory_bytes, Some(usage))
        }
        _ => {
            let mine = procs.iter().filter(|p| {
                if who.shared_uid {
                    who.sessions.contains(&p.session)
                } else {
                    p.uid == who.uid
                }
            });
            let mut cpu = 0.0;
            let mut rss = 0u64;
            for p in mine {
                let before = state.seen.remove(&p.key).unwrap_or(0.0);
                cpu += (p.cpu_seconds - before).max(0.0);
                rss += p.rss_bytes;
                next.seen.insert(p.key.clone(), p.cpu_seconds);
            }
            (Some(cpu), Some(rss), None)
        }
    };
    let mut out = vec![
        measured(
            "service_module/cpu_time",
            format!("CPU time of {pid} (s)"),
            cpu.unwrap_or(0.0),
            pid,
        ),
        measured(
            "service_module/memory_used",
            format!("Memory of {pid} (MiB·h)"),
            mib(memory.unwrap_or(0)) * hours,
            pid,
        ),
        measured(
            "service_module/disk_used",
            format!("Disk of {pid} (MiB·h)"),
            mib(who.disk) * hours,
            pid,
        ),
    ];
    if let Some(peak) = kernel.and_then(|k| k.memory_peak_bytes) {
        out.push(measured(
            "service_module/memory_peak",
            format!("Memory peak of {pid} (MiB)"),
            mib(peak),
            pid,
        ));
    }
    if let Some(n) = kernel.and_then(|k| k.processes) {
        out.push(measured(
            "service_module/processes",
            format!("Processes of {pid}"),
            n as f64,
            pid,
        ));
    }
    if let Some(bytes) = who.tap_bytes {
        next.tap_bytes.insert(pid.to_owned(), bytes);
        let delta = match state.tap_bytes.get(pid) {
            Some(before) if *before <= bytes => bytes - before,
            _ => bytes,
        };
        out.push(measured(
            "service_module/network_bytes",
            format!("Network of {pid} (MiB)"),
            mib(delta),
            pid,
        ));
    }
    out
}

/// Bytes received and sent by a tap (`/sys/class/net/<tap>/statistics`).
fn tap_bytes(tap: &str) -> Option<u64> {
    let dir = Path::new("/sys/class/net").join(tap).join("statistics");
    let read = |f: &str| {
        std::fs::read_to_string(dir.join(f))
            .ok()
            .and_then(|t| t.trim().parse::<u64>().ok())
    };
    Some(read("rx_bytes")? + read("tx_bytes")?)
}

/// Largest instance usage file read.
const MAX_REPORT_FILE: u64 = 1 << 20;

/// What the instance reports itself: `P/etc/report/*` run as the partition's user, then
/// the consumption files of `P/var/xml_report` and `IR/var/xml_report/<pid>` (read as
/// root without following links: fsutil), each checked against the schema. Returns the
/// valid ones with the files to delete once they are safely queued; invalid files stay
/// (logged). A failing script is reported but does not lose the files.
fn instance_reports(
    node: &Node,
    pid: &str,
    path: &Path,
    owner: &Identity,
) -> (Vec<Consumption>, Vec<(PathBuf, PathBuf)>, Option<String>) {
    let mut failure = None;
    let scripts = path.join("etc/report");
    let names = fsutil::list_files_in(path, Path::new("etc/report")).unwrap_or_default();
    for name in names {
        let target = path.join("var/xml_report").join(format!(
            "slapreport.{:08x}",
            now_unix() ^ u64::from(std::process::id())
        ));
        let out = Run::new(scripts.join(&name), &scripts, &owner.home)
            .arg(&target)
            .as_user(owner.clone())
            .timeout(Some(std::time::Duration::from_secs(600)))
            .output();
        if !out.is_ok_and(|o| o.success()) {
            failure = Some(format!("Script '{name}' failed."));
        }
    }
    let mut found = Vec::new();
    let mut consumed = Vec::new();
    for (base, rel) in [
        (path.to_owned(), PathBuf::from("var/xml_report")),
        (
            node.cfg.instance_root.join("var/xml_report"),
            PathBuf::from(pid),
        ),
    ] {
        for name in fsutil::list_files_in(&base, &rel).unwrap_or_default() {
            let file = rel.join(&name);
            let bytes = match fsutil::read_in(&base, &file, MAX_REPORT_FILE) {
                Ok(Some(b)) => b,
                Ok(None) => continue,
                Err(e) => {
                    tracing::warn!(file = %base.join(&file).display(), error = %e, "usage report not read");
                    continue;
                }
            };
            match decode_partition_consumption(&bytes, &Limits::default()) {
                Ok(c) => {
                    found.push(c);
                    consumed.push((base.clone(), file));
                }
                Err(e) => {
                    tracing::warn!(file = %base.join(&file).display(), error = %e, "invalid usage report left in place")
                }
            }
        }
    }
    (found, consumed, failure)
}

/// `YYYY-MM-DD at HH:MM:SS`, as slapgrid writes a journal's stop date (UTC here; the
/// master reads offset-less dates with a tolerance for the node's local time).
pub fn journal_date(unix: u64) -> String {
    chrono::DateTime::from_timestamp(unix as i64, 0)
        .map(|t| t.format("%Y-%m-%d at %H:%M:%S").to_string())
        .unwrap_or_default()
}

/// Posts a journal; `Ok(false)` when the master refused it (logged).
fn post_journal(node: &Node, text: &str) -> Result<bool, NodeError> {
    let cfg = &node.cfg;
    match node.client.post(
        "useComputer",
        &[("computer_id", &cfg.computer_id), ("use_string", text)],
        None,
    ) {
        Ok(_) => Ok(true),
        Err(e) if e.is_unreachable() => Err(e.into()),
        Err(e) => {
            tracing::error!(error = %e, "usage journal refused");
            Ok(false)
        }
    }
}

/// A journal built but not yet acknowledged: posted again, byte for byte, before any
/// new one (the master recognises a journal it already recorded and records nothing,
/// so a post that timed out after the master applied it is never counted twice).
fn pending_path(node: &Node) -> PathBuf {
    node.cfg.instance_root.join("var/usage-pending.xml")
}

pub fn run(node: &Node) -> Result<UsageReport, NodeError> {
    let cfg = &node.cfg;
    let mut report = UsageReport::default();
    let pending = pending_path(node);
    if let Ok(text) = std::fs::read_to_string(&pending) {
        if post_journal(node, &text)? {
            std::fs::remove_file(&pending).map_err(io_err(&pending))?;
        } else {
            // Refused (not lost to the network): kept aside for the operator.
            let aside = pending.with_extension(format!("refused-{}", now_unix()));
            std::fs::rename(&pending, &aside).map_err(io_err(&aside))?;
            report.failed.push((
                cfg.computer_id.clone(),
                format!("journal refused, kept in {}", aside.display()),
            ));
        }
    }
    let computer = node.client.full_computer_information(&cfg.computer_id)?;
    let state_path = cfg.instance_root.join("var/usage-cpu.json");
    let mut state: CpuState = std::fs::read(&state_path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default();
    let now = now_unix();
    // Hours since the last report (the first report counts nothing for the gauges).
    let hours = if state.at_unix == 0 {
        0.0
    } else {
        now.saturating_sub(state.at_unix) as f64 / 3600.0
    };
    let mut next = CpuState {
        at_unix: now,
        ..CpuState::default()
    };
    let procs = sample_processes();
    let taps = crate::format::partition_taps(cfg);
    let statuses = node.supervisor.status().unwrap_or_default();
    let me = Identity::current();
    let mut reports: Vec<(String, Consumption)> = Vec::new();
    let mut consumed = Vec::new();
    let mut to_destroy = Vec::new();
    for partition in computer.partitions() {
        let pid = partition.partition_id.clone();
        if !crate::names::valid_partition_id(&pid) {
            continue;
        }
        let path = cfg.partition_path(&pid);
        let has_release = partition
            .software_release_document
            .get()
            .is_some_and(|d| !d.software_release.is_empty());
        if !has_release || !path.is_dir() {
            continue;
        }
        let Ok(owner) = Identity::owner_of(&path) else {
            continue;
        };
        if crate::process::is_root() && owner.uid == 0 {
            continue;
        }
        let sessions: Vec<u32> = statuses
            .iter()
            .filter(|s| s.group == pid)
            .filter_map(|s| s.pid)
            .collect();
        let limits =
            crate::limits::resolve(cfg, crate::limits::requested_size(partition).as_deref())
                .unwrap_or_else(|_| cfg.partition_limits.clone());
        let cgroup = crate::limits::cgroup_of(node, &pid, &limits).filter(|c| c.exists());
        let kernel = cgroup.as_ref().map(|c| c.usage());
        let who = Owner {
            uid: owner.uid,
            shared_uid: owner.uid == me.uid,
            sessions: &sessions,
            disk: partition_disk_bytes(&owner, &path),
            kernel: kernel.as_ref(),
            tap_bytes: taps.get(&pid).and_then(|t| tap_bytes(t)),
        };
        let mut movements = measure(&pid, &who, &procs, hours, &mut state, &mut next);
        if let Some(c) = &cgroup {
            // The next report's peak is its own period's (v1).
            c.reset_peak();
        }
        let (files, used, failure) = instance_reports(node, &pid, &path, &owner);
        movements.extend(files.into_iter().flat_map(|c| c.movements));
        consumed.extend(used);
        if let Some(message) = failure {
            crate::instance::report_error(node, &pid, &message);
            report.failed.push((pid.clone(), message));
        }
        report.movements += movements.len();
        report.partitions.push(pid.clone());
        reports.push((pid.clone(), Consumption { movements }));
        if partition.requested_state.get().map(String::as_str) == Some("destroyed") {
            to_destroy.push(pid);
        }
    }
    // Computer-level journals dropped by other tools, posted one by one.
    let computer_dir = cfg
        .instance_root
        .join("var/xml_report")
        .join(&cfg.computer_id);
    for name in fsutil::list_files_in(
        &cfg.instance_root,
        Path::new("var/xml_report").join(&cfg.computer_id).as_path(),
    )
    .unwrap_or_default()
    {
        let file = computer_dir.join(&name);
        let Ok(text) = std::fs::read_to_string(&file) else {
            continue;
        };
        if slapos_proto::journal::decode_computer_journal(text.as_bytes(), &Limits::default())
            .is_ok()
            && post_journal(node, &text)?
        {
            let _ = std::fs::remove_file(&file);
        }
    }
    if !reports.is_empty() {
        let journal =
            journal_from_partition_reports(&cfg.computer_id, &journal_date(now), &reports);
        let text = encode_computer_journal(&journal);
        // Durable first: the journal, then the files it consumed and the counters it
        // advanced; only then the post (a crash or a lost answer re-posts this very text).
        if let Some(dir) = pending.parent() {
            std::fs::create_dir_all(dir).map_err(io_err(dir))?;
        }
        write_atomic(&pending, text.as_bytes(), 0o600)?;
        for (base, rel) in &consumed {
            if let Err(e) = fsutil::remove_in(base, rel) {
                tracing::warn!(file = %base.join(rel).display(), error = %e, "usage report not removed");
            }
        }
        let bytes = serde_json::to_vec(&next).unwrap_or_default();
        write_atomic(&state_path, &bytes, 0o600)?;
        if post_journal(node, &text)? {
            std::fs::remove_file(&pending).map_err(io_err(&pending))?;
            report.journal = text;
        } else {
            let aside = pending.with_extension(format!("refused-{now}"));
            std::fs::rename(&pending, &aside).map_err(io_err(&aside))?;
            report.failed.push((
                cfg.computer_id.clone(),
                format!("journal refused, kept in {}", aside.display()),
            ));
        }
    }
    destroy_left_behind(node, &to_destroy, &mut report)?;
    Ok(report)
}

/// Destruction of partitions a failed instance run left `destroyed` (the instance run
/// destroys them itself): under the instance lock, and only for a partition the master
/// still lists as destroyed at that moment, so a partition freed and handed to a new
/// instance meanwhile is never wiped.
fn destroy_left_behind(
    node: &Node,
    candidates: &[String],
    report: &mut UsageReport,
) -> Result<(), NodeError> {
    if candidates.is_empty() {
        return Ok(());
    }
    let _lock = match crate::node::RunLock::acquire(&node.cfg.pidfile_instance) {
        Ok(l) => l,
        Err(NodeError::Locked(_)) => {
            tracing::info!("an instance run is in progress: destruction left to it");
            return Ok(());
        }
        Err(e) => return Err(e),
    };
    let computer = node
        .client
        .full_computer_information(&node.cfg.computer_id)?;
    for pid in candidates {
        let still = computer.partitions().iter().any(|p| {
            &p.partition_id == pid
                && p.requested_state.get().map(String::as_str) == Some("destroyed")
                && p.software_release_document
                    .get()
                    .is_some_and(|d| !d.software_release.is_empty())
        });
        if !still {
            continue;
        }
        let path = node.cfg.partition_path(pid);
        match crate::instance::destroy_partition(node, pid, &path) {
            Ok(true) => report.destroyed.push(pid.clone()),
            Ok(false) => {}
            Err(e) => report.failed.push((pid.clone(), e.to_string())),
        }
    }
    Ok(())
}
