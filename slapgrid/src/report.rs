//! `slapos node report` (slapgrid-behaviour.md 5): the usage of every partition posted as
//! one journal with `useComputer`, and the destruction of partitions left `destroyed`.
//!
//! Usage has two sources: what the instance reports itself (`etc/report` scripts and the
//! files of `var/xml_report`, checked against the consumption schema, as the reference),
//! and what the agent measures (ours; the reference leaves it to `node collect`): the CPU
//! time the partition's processes used since the last report, their resident memory, and
//! the partition's disk use.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use slapos_proto::journal::{
    decode_partition_consumption, encode_computer_journal, journal_from_partition_reports, Amount,
    Consumption, Movement,
};
use slapos_proto::Limits;

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

/// Every process of the machine (those that vanish while read are skipped).
pub fn sample_processes() -> Vec<ProcSample> {
    // SAFETY: sysconf has no memory effects.
    let (ticks, page) = unsafe {
        (
            libc::sysconf(libc::_SC_CLK_TCK).max(1) as f64,
            libc::sysconf(libc::_SC_PAGESIZE).max(1) as u64,
        )
    };
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return out;
    };
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // The command name may hold spaces and parentheses: fields start after the last ')'.
        let Some(rest) = stat.rfind(')').map(|i| &stat[i + 2..]) else {
            continue;
        };
        let f: Vec<&str> = rest.split_whitespace().collect();
        // Fields from 3 (state) on: session is 6, utime 14, stime 15, starttime 22, rss 24.
        let num = |i: usize| {
            f.get(i - 3)
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
        };
        use std::os::unix::fs::MetadataExt;
        let uid = std::fs::metadata(format!("/proc/{pid}"))
            .map(|m| m.uid())
            .unwrap_or(u32::MAX);
        out.push(ProcSample {
            pid,
            uid,
            session: num(6) as u32,
            key: format!("{pid}-{}", num(22)),
            cpu_seconds: (num(14) + num(15)) as f64 / ticks,
            rss_bytes: num(24) * page,
        });
    }
    out
}

/// Disk use of a tree (allocated blocks, links not followed, each inode once).
pub fn disk_bytes(path: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let mut seen = std::collections::HashSet::new();
    let mut total = 0u64;
    let mut stack = vec![path.to_owned()];
    while let Some(p) = stack.pop() {
        let Ok(meta) = std::fs::symlink_metadata(&p) else {
            continue;
        };
        if seen.insert((meta.dev(), meta.ino())) {
            total += meta.blocks() * 512;
        }
        if meta.is_dir() {
            if let Ok(entries) = std::fs::read_dir(&p) {
                stack.extend(entries.flatten().map(|e| e.path()));
            }
        }
    }
    total
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

/// The agent's own measure of a partition: CPU seconds since the last report (processes
/// of the partition's user when the node is privileged; else of the sessions of its
/// supervised services), resident memory now (MiB), disk now (MiB).
/// Which processes belong to a partition.
struct Owner<'a> {
    uid: u32,
    /// The partition shares its uid with the agent (standalone node): its processes are
    /// those of its services' sessions.
    shared_uid: bool,
    sessions: &'a [u32],
}

fn measure(
    pid: &str,
    path: &Path,
    who: &Owner<'_>,
    procs: &[ProcSample],
    state: &mut CpuState,
    next: &mut CpuState,
) -> Vec<Movement> {
    let Owner {
        uid,
        shared_uid,
        sessions,
    } = *who;
    let mine: Vec<&ProcSample> = procs
        .iter()
        .filter(|p| {
            if shared_uid {
                sessions.contains(&p.session)
            } else {
                p.uid == uid
            }
        })
        .collect();
    let mut cpu = 0.0;
    let mut rss = 0u64;
    for p in &mine {
        let before = state.seen.remove(&p.key).unwrap_or(0.0);
        cpu += (p.cpu_seconds - before).max(0.0);
        rss += p.rss_bytes;
        next.seen.insert(p.key.clone(), p.cpu_seconds);
    }
    let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
    vec![
        measured(
            "service_module/cpu_time",
            format!("CPU time of {pid} (s)"),
            cpu,
            pid,
        ),
        measured(
            "service_module/memory_used",
            format!("Memory used by {pid} (MiB)"),
            mib(rss),
            pid,
        ),
        measured(
            "service_module/disk_used",
            format!("Disk used by {pid} (MiB)"),
            mib(disk_bytes(path)),
            pid,
        ),
    ]
}

/// Runs `P/etc/report/*` and reads `P/var/xml_report` and `IR/var/xml_report/<pid>`:
/// valid files are queued and deleted, invalid ones left in place (logged).
fn instance_reports(
    node: &Node,
    pid: &str,
    path: &Path,
    owner: &Identity,
) -> Result<Vec<Consumption>, String> {
    let mut failure = None;
    let scripts = path.join("etc/report");
    if let Ok(entries) = std::fs::read_dir(&scripts) {
        let mut scripts_list: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
        scripts_list.sort();
        for script in scripts_list {
            let target = path.join("var/xml_report").join(format!(
                "slapreport.{:08x}",
                now_unix() ^ u64::from(std::process::id())
            ));
            let out = Run::new(&script, &scripts, &owner.home)
                .arg(&target)
                .as_user(owner.clone())
                .timeout(Some(std::time::Duration::from_secs(600)))
                .output();
            if !out.is_ok_and(|o| o.success()) {
                let name = script
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                failure = Some(format!("Script '{name}' failed."));
            }
        }
    }
    let mut out = Vec::new();
    for dir in [
        path.join("var/xml_report"),
        node.cfg.instance_root.join("var/xml_report").join(pid),
    ] {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        let mut files: Vec<PathBuf> = entries
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.is_file())
            .collect();
        files.sort();
        for file in files {
            let Ok(bytes) = std::fs::read(&file) else {
                continue;
            };
            match decode_partition_consumption(&bytes, &Limits::default()) {
                Ok(c) => {
                    out.push(c);
                    let _ = std::fs::remove_file(&file);
                }
                Err(e) => {
                    tracing::warn!(file = %file.display(), error = %e, "invalid usage report left in place")
                }
            }
        }
    }
    match failure {
        Some(f) => Err(f),
        None => Ok(out),
    }
}

/// `YYYY-MM-DD at HH:MM:SS`, as slapgrid writes a journal's stop date (UTC here; the
/// master reads offset-less dates with a tolerance for the node's local time).
pub fn journal_date(unix: u64) -> String {
    chrono::DateTime::from_timestamp(unix as i64, 0)
        .map(|t| t.format("%Y-%m-%d at %H:%M:%S").to_string())
        .unwrap_or_default()
}

pub fn run(node: &Node) -> Result<UsageReport, NodeError> {
    let cfg = &node.cfg;
    let computer = node.client.full_computer_information(&cfg.computer_id)?;
    let mut report = UsageReport::default();
    let state_path = cfg.instance_root.join("var/usage-cpu.json");
    let mut state: CpuState = std::fs::read(&state_path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default();
    let mut next = CpuState::default();
    let procs = sample_processes();
    let statuses = node.supervisor.status().unwrap_or_default();
    let me = Identity::current();
    let mut reports: Vec<(String, Consumption)> = Vec::new();
    let mut to_destroy = Vec::new();
    for partition in computer.partitions() {
        let pid = partition.partition_id.clone();
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
        let sessions: Vec<u32> = statuses
            .iter()
            .filter(|s| s.group == pid)
            .filter_map(|s| s.pid)
            .collect();
        let who = Owner {
            uid: owner.uid,
            shared_uid: owner.uid == me.uid,
            sessions: &sessions,
        };
        let mut movements = measure(&pid, &path, &who, &procs, &mut state, &mut next);
        match instance_reports(node, &pid, &path, &owner) {
            Ok(files) => movements.extend(files.into_iter().flat_map(|c| c.movements)),
            Err(message) => {
                crate::instance::report_error(node, &pid, &message);
                report.failed.push((pid.clone(), message));
            }
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
    if let Ok(entries) = std::fs::read_dir(&computer_dir) {
        for file in entries.flatten().map(|e| e.path()) {
            let Ok(text) = std::fs::read_to_string(&file) else {
                continue;
            };
            if slapos_proto::journal::decode_computer_journal(text.as_bytes(), &Limits::default())
                .is_ok()
            {
                node.client.post(
                    "useComputer",
                    &[("computer_id", &cfg.computer_id), ("use_string", &text)],
                    None,
                )?;
                let _ = std::fs::remove_file(&file);
            }
        }
    }
    let mut posted = true;
    if !reports.is_empty() {
        let journal =
            journal_from_partition_reports(&cfg.computer_id, &journal_date(now_unix()), &reports);
        let text = encode_computer_journal(&journal);
        match node.client.post(
            "useComputer",
            &[("computer_id", &cfg.computer_id), ("use_string", &text)],
            None,
        ) {
            Ok(_) => report.journal = text,
            Err(e) => {
                posted = false;
                tracing::error!(error = %e, "usage journal refused");
                if let Some((pid, _)) = reports.last() {
                    report.failed.push((pid.clone(), e.to_string()));
                }
                if e.is_unreachable() {
                    return Err(e.into());
                }
            }
        }
    }
    if posted {
        if let Some(dir) = state_path.parent() {
            std::fs::create_dir_all(dir).map_err(io_err(dir))?;
        }
        let bytes = serde_json::to_vec(&next).unwrap_or_default();
        write_atomic(&state_path, &bytes, 0o600)?;
    }
    for pid in to_destroy {
        let path = cfg.partition_path(&pid);
        match crate::instance::destroy_partition(node, &pid, &path) {
            Ok(true) => report.destroyed.push(pid),
            Ok(false) => {}
            Err(e) => report.failed.push((pid, e.to_string())),
        }
    }
    Ok(report)
}
