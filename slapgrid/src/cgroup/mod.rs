//! A control group per partition: its CPU weight and optional quota, its memory limit
//! (the kernel's OOM killer then picks inside the partition), its process limit, and
//! the kernel's own count of what it used. cgroup v2 where the host offers its
//! controllers, v1 otherwise (DESIGN.md, "Control groups", has the layout and why).
//!
//! Every process the agent starts for a partition (services, one-shots, promises, the
//! instance profile, report scripts, the destroy hook) joins the partition's cgroup
//! between fork and exec, before it drops root (`process::Session`): it runs no
//! instruction outside it, and its descendants are born in it.
//!
//! Directories and files are created and written as root through std; a partition user
//! can read them but neither write a limit, move a process nor create a cgroup:
//! [`guard`] checks it of every directory we use (a directory someone delegated is
//! refused).

mod detect;

pub use detect::valid_root;

use std::io::Write;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The cgroup version in use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Version {
    V1,
    V2,
}

impl std::fmt::Display for Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Version::V1 => "v1",
            Version::V2 => "v2",
        })
    }
}

/// The controllers a partition's cgroup uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Controller {
    Cpu,
    /// v1 only: CPU accounting (v2 counts CPU time in every cgroup).
    Cpuacct,
    Memory,
    Pids,
    /// The CPUs a cgroup may run on: the reserved class gets CPUs of its own (see
    /// [`Cgroups::rebalance`]).
    Cpuset,
}

impl Controller {
    pub fn name(self) -> &'static str {
        match self {
            Controller::Cpu => "cpu",
            Controller::Cpuacct => "cpuacct",
            Controller::Memory => "memory",
            Controller::Pids => "pids",
            Controller::Cpuset => "cpuset",
        }
    }

    pub(crate) fn from_name(name: &str) -> Option<Controller> {
        match name {
            "cpu" => Some(Controller::Cpu),
            "cpuacct" => Some(Controller::Cpuacct),
            "memory" => Some(Controller::Memory),
            "pids" => Some(Controller::Pids),
            "cpuset" => Some(Controller::Cpuset),
            _ => None,
        }
    }
}

/// `[slapos] cgroup`: which version to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// v2 when it offers at least as many of our controllers as v1, else v1, else none.
    Auto,
    V1,
    V2,
    /// No cgroup at all (limits are then reported as disabled).
    Off,
}

/// One hierarchy a partition's processes join: a directory and the controllers we use
/// in it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Base {
    pub dir: PathBuf,
    pub controllers: Vec<Controller>,
}

/// Where the partitions' cgroups go on this host: `<base>/reserved/<partition>` and
/// `<base>/shared/<partition>` in each hierarchy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cgroups {
    pub version: Version,
    pub bases: Vec<Base>,
}

/// Whether partitions get cgroups here, and why not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Availability {
    Available(Cgroups),
    /// `[slapos] cgroup = off`.
    Disabled,
    /// The host (or our privileges) does not allow it: the reason.
    Unavailable(String),
}

impl Availability {
    pub fn cgroups(&self) -> Option<&Cgroups> {
        match self {
            Availability::Available(c) => Some(c),
            _ => None,
        }
    }

    /// `v1 (cpu, cpuacct, memory, pids)`, `disabled`, `unavailable: <why>`.
    pub fn describe(&self) -> String {
        match self {
            Availability::Available(c) => {
                let names: Vec<&str> = c
                    .bases
                    .iter()
                    .flat_map(|b| b.controllers.iter().map(|c| c.name()))
                    .collect();
                format!("{} ({})", c.version, names.join(", "))
            }
            Availability::Disabled => "disabled ([slapos] cgroup = off)".into(),
            Availability::Unavailable(why) => format!("unavailable: {why}"),
        }
    }
}

/// What the host offers for `mode`, with the partitions' cgroups under `root`
/// (absolute: from each hierarchy's root; relative: below the cgroup this process is
/// in). Only root can create cgroups.
pub fn detect(mode: Mode, root: &str) -> Availability {
    if mode == Mode::Off {
        return Availability::Disabled;
    }
    if !nix::unistd::geteuid().is_root() {
        return Availability::Unavailable("the agent does not run as root".into());
    }
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let own = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    let read = |dir: &Path| std::fs::read_to_string(dir.join("cgroup.controllers")).ok();
    detect_from(mode, root, &mountinfo, &own, &read)
}

/// [`detect`] on given texts of `/proc/self/mountinfo` and `/proc/self/cgroup`, and a
/// reader of a v2 hierarchy's `cgroup.controllers`: what a host showing these would
/// offer (tests point it at the texts of hosts without controllers; [`detect`] reads
/// this host's own).
pub fn detect_from(
    mode: Mode,
    root: &str,
    mountinfo: &str,
    own_cgroups: &str,
    read_controllers: &dyn Fn(&Path) -> Option<String>,
) -> Availability {
    if mode == Mode::Off {
        return Availability::Disabled;
    }
    if !detect::valid_root(root) {
        return Availability::Unavailable(format!("cgroup_root {root:?} is not a plain path"));
    }
    let mounts = detect::parse_mountinfo(mountinfo);
    let own = detect::parse_proc_cgroup(own_cgroups);
    let v2 = detect::offer_v2(&mounts, &own, root, read_controllers);
    let v1 = detect::offer_v1(&mounts, &own, root);
    let wanted = match mode {
        Mode::V1 => Some(Version::V1),
        Mode::V2 => Some(Version::V2),
        _ => None,
    };
    match detect::choose(wanted, v2, v1) {
        Ok(c) => Availability::Available(c),
        Err(why) => Availability::Unavailable(why),
    }
}

/// The limits of one partition (none: the kernel's defaults, i.e. unlimited).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// Relative CPU weight under contention, 1 to 10000 (100: an ordinary partition).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_weight: Option<u32>,
    /// At most this many hundredths of a CPU (150: one and a half CPUs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_quota: Option<u32>,
    /// Bytes of memory (swap included); over it the kernel reclaims, then kills a
    /// process of the partition.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<u64>,
    /// Processes (and threads) at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pids: Option<u64>,
    /// Bytes of disk in the partition directory: measured by the agent, which stops the
    /// partition's services over it (no cgroup controller counts disk).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk: Option<u64>,
    /// A reserved share: the partition's cgroup goes under `reserved/`, which outweighs
    /// `shared/` for CPU, and its memory limit is taken out of what the shared
    /// partitions may use together.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub reserved: bool,
    /// The size the master named, if any (for status and reports).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<String>,
}

/// The class directory of a partition.
const RESERVED: &str = "reserved";
const SHARED: &str = "shared";
/// CPU weights of the two classes: under contention the reserved partitions get what
/// they ask for (100 to 1) before the shared ones.
const RESERVED_WEIGHT: u32 = 10000;
const SHARED_WEIGHT: u32 = 100;
/// The CFS period used with a quota (the kernel's default).
const PERIOD_US: u64 = 100_000;

#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("refusing cgroup {}: {reason}", path.display())]
    Unsafe { path: PathBuf, reason: String },
    #[error("invalid limit: {0}")]
    Invalid(String),
}

fn io<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> CgroupError + 'a {
    move |source| CgroupError::Io {
        action,
        path: path.to_owned(),
        source,
    }
}

/// A limit that could not be set, and why (reported, never silently dropped).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Unapplied {
    pub limit: String,
    pub reason: String,
}

/// One partition's cgroup: a directory per hierarchy, and its limits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionCgroup {
    pub version: Version,
    pub dirs: Vec<Base>,
    pub limits: Limits,
}

impl Cgroups {
    /// The cgroup of partition `partition` (a plain name) with `limits`.
    pub fn partition(&self, partition: &str, limits: &Limits) -> PartitionCgroup {
        let class = if limits.reserved { RESERVED } else { SHARED };
        PartitionCgroup {
            version: self.version,
            dirs: self
                .bases
                .iter()
                .map(|b| Base {
                    dir: b.dir.join(class).join(partition),
                    controllers: b.controllers.clone(),
                })
                .collect(),
            limits: limits.clone(),
        }
    }

    /// The partitions that have a cgroup, by class: (name, reserved), in any hierarchy
    /// (a removal cut short may have left one in some only).
    pub fn partitions(&self) -> Vec<(String, bool)> {
        let mut out = Vec::new();
        for base in &self.bases {
            for (class, reserved) in [(SHARED, false), (RESERVED, true)] {
                if let Ok(entries) = std::fs::read_dir(base.dir.join(class)) {
                    for e in entries.flatten() {
                        if e.file_type().is_ok_and(|t| t.is_dir()) {
                            if let Some(name) = e.file_name().to_str() {
                                out.push((name.to_owned(), reserved));
                            }
                        }
                    }
                }
            }
        }
        out.sort();
        out.dedup();
        out
    }

    /// The shared partitions together may use the machine's memory minus what the
    /// reserved ones hold (their memory limits, read back from the kernel), and its
    /// CPUs minus the reserved ones' quotas: a neighbour cannot take a reserved share.
    /// With the cpuset controller, the reserved quotas also buy whole CPUs of their own
    /// ([`cpus::split`]): the shared class no longer runs there, so a reserved
    /// partition waking up never waits behind a neighbour's busy loop.
    pub fn rebalance(&self) -> Result<(), CgroupError> {
        let reserved_dirs = |base: &Base| -> Vec<PathBuf> {
            std::fs::read_dir(base.dir.join(RESERVED))
                .map(|rd| {
                    rd.flatten()
                        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                        .map(|e| e.path())
                        .collect()
                })
                .unwrap_or_default()
        };
        // The reserved partitions' CPU quotas together, in hundredths of a CPU.
        let held_cpu: u64 = self
            .bases
            .iter()
            .find(|b| b.controllers.contains(&Controller::Cpu))
            .map(|b| {
                reserved_dirs(b)
                    .iter()
                    .filter_map(|d| read_cpu_quota(self.version, d))
                    .map(u64::from)
                    .sum()
            })
            .unwrap_or(0);
        for base in &self.bases {
            let shared = base.dir.join(SHARED);
            if !shared.is_dir() {
                continue;
            }
            if base.controllers.contains(&Controller::Memory) {
                let held: u64 = reserved_dirs(base)
                    .iter()
                    .filter_map(|d| read_memory_limit(self.version, d))
                    .sum();
                let cap = (held > 0).then(|| memory_total().saturating_sub(held));
                let values =
                    memory_settings(self.version, cap, false, &|f| shared.join(f).exists());
                write_all(&shared, &values)?;
            }
            if base.controllers.contains(&Controller::Cpu) {
                let cpus = std::thread::available_parallelism().map_or(1, |n| n.get()) as u64;
                let cap =
                    (held_cpu > 0).then(|| (cpus * 100).saturating_sub(held_cpu).max(10) as u32);
                write_all(&shared, &cpu_quota_settings(self.version, cap))?;
            }
            if base.controllers.contains(&Controller::Cpuset) {
                self.split_cpus(base, held_cpu)?;
            }
        }
        Ok(())
    }

    /// Gives each class its CPUs ([`cpus::split`] of what the base may use).
    fn split_cpus(&self, base: &Base, held_cpu: u64) -> Result<(), CgroupError> {
        let Some(all) = read_cpus(self.version, &base.dir) else {
            return Ok(());
        };
        let (reserved, shared) = cpus::split(&all, held_cpu);
        for (class, set) in [(RESERVED, reserved), (SHARED, shared)] {
            let dir = base.dir.join(class);
            if dir.is_dir() {
                set_class_cpus(self.version, &dir, &set)?;
            }
        }
        Ok(())
    }

    /// Removes the cgroups of `partition` (both classes), once it has no process.
    pub fn remove_partition(&self, partition: &str) -> Result<(), CgroupError> {
        for base in &self.bases {
            for class in [SHARED, RESERVED] {
                remove_dir(&base.dir.join(class).join(partition))?;
            }
        }
        Ok(())
    }

    /// Removes the classes and the base directories when empty (unformat).
    pub fn remove_all(&self) -> Result<(), CgroupError> {
        for (partition, _) in self.partitions() {
            self.remove_partition(&partition)?;
        }
        for base in &self.bases {
            for class in [SHARED, RESERVED] {
                remove_dir(&base.dir.join(class))?;
            }
            remove_dir(&base.dir)?;
        }
        Ok(())
    }
}

fn remove_dir(dir: &Path) -> Result<(), CgroupError> {
    match std::fs::remove_dir(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(CgroupError::Io {
            action: "remove",
            path: dir.to_owned(),
            source: e,
        }),
        _ => Ok(()),
    }
}

/// Checks that only root can change `dir` and its membership: owned by uid 0, not
/// writable by group or others, and so are the files that move processes or create
/// sub-cgroups' controllers. A cgroup someone delegated to a user is refused.
pub fn guard(dir: &Path) -> Result<(), CgroupError> {
    let meta = std::fs::symlink_metadata(dir).map_err(io("inspect", dir))?;
    let unsafe_ = |what: &str| CgroupError::Unsafe {
        path: dir.to_owned(),
        reason: what.to_owned(),
    };
    if !meta.is_dir() {
        return Err(unsafe_("not a directory"));
    }
    if meta.uid() != 0 || meta.mode() & 0o022 != 0 {
        return Err(unsafe_(&format!(
            "owned by uid {} with mode {:o}: a user could create or move cgroups in it",
            meta.uid(),
            meta.mode() & 0o7777
        )));
    }
    for file in [
        "cgroup.procs",
        "tasks",
        "cgroup.threads",
        "cgroup.subtree_control",
    ] {
        if let Ok(m) = std::fs::symlink_metadata(dir.join(file)) {
            if m.uid() != 0 || m.mode() & 0o022 != 0 {
                return Err(unsafe_(&format!(
                    "{file} is owned by uid {} with mode {:o}: a user could move processes",
                    m.uid(),
                    m.mode() & 0o7777
                )));
            }
        }
    }
    Ok(())
}

/// Creates `dir` (0755, root's) unless it exists, then [`guard`]s it.
fn make_dir(dir: &Path) -> Result<(), CgroupError> {
    match std::fs::DirBuilder::new().mode(0o755).create(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => {
            return Err(CgroupError::Io {
                action: "create",
                path: dir.to_owned(),
                source: e,
            })
        }
    }
    guard(dir)
}

/// Writes one control file (it must exist: a missing one is an error naming it).
fn write_control(path: &Path, value: &str) -> Result<(), CgroupError> {
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(io("open", path))?;
    file.write_all(value.as_bytes()).map_err(io("write", path))
}

fn write_all(dir: &Path, values: &[(&'static str, String)]) -> Result<(), CgroupError> {
    for (file, value) in values {
        write_control(&dir.join(file), value)?;
    }
    Ok(())
}

fn read_control(path: &Path) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_owned())
}

/// The CPUs a cgroup may run on, as the kernel has them (`None`: no cpuset there).
fn read_cpus(version: Version, dir: &Path) -> Option<Vec<u32>> {
    let files: &[&str] = match version {
        Version::V1 => &["cpuset.effective_cpus", "cpuset.cpus"],
        Version::V2 => &["cpuset.cpus.effective"],
    };
    files
        .iter()
        .find_map(|f| read_control(&dir.join(f)).filter(|t| !t.is_empty()))
        .and_then(|t| cpus::parse(&t))
}

/// Sets a class's CPUs. v1 wants every cgroup's CPUs within its parent's: the class
/// first widens to the union of its old and new sets, its partitions take the new one,
/// then the class narrows to it. v2 partitions leave `cpuset.cpus` empty and inherit.
fn set_class_cpus(version: Version, class: &Path, set: &[u32]) -> Result<(), CgroupError> {
    let file = class.join("cpuset.cpus");
    let old = read_control(&file)
        .and_then(|t| cpus::parse(&t))
        .unwrap_or_default();
    if old == set {
        return Ok(());
    }
    if version == Version::V1 {
        let mut union = old.clone();
        union.extend_from_slice(set);
        union.sort_unstable();
        union.dedup();
        write_control(&file, &cpus::format(&union))?;
        let children = std::fs::read_dir(class).map_err(io("list", class))?;
        for child in children.flatten() {
            if child.file_type().is_ok_and(|t| t.is_dir()) {
                write_control(&child.path().join("cpuset.cpus"), &cpus::format(set))?;
            }
        }
    }
    write_control(&file, &cpus::format(set))
}

/// v1: a new cpuset cgroup has no CPUs and no memory nodes, and no process can join it
/// until it has: it takes its parent's.
fn inherit_cpuset_v1(dir: &Path) -> Result<(), CgroupError> {
    let Some(parent) = dir.parent() else {
        return Ok(());
    };
    for file in ["cpuset.cpus", "cpuset.mems"] {
        if read_control(&dir.join(file)).is_some_and(|t| t.is_empty()) {
            if let Some(value) = read_control(&parent.join(file)).filter(|t| !t.is_empty()) {
                write_control(&dir.join(file), &value)?;
            }
        }
    }
    Ok(())
}

/// v2: enables our controllers for the children of every cgroup from the hierarchy's
/// root down to `dir` (`+cpu +memory +pids` in `cgroup.subtree_control`), as far as each
/// parent offers them.
fn enable_v2_controllers(dir: &Path, controllers: &[Controller]) -> Result<(), CgroupError> {
    // Ancestors down from the root (the root cgroup has no `cgroup.type`).
    let mut chain = vec![dir.to_owned()];
    let mut cur = dir.parent();
    while let Some(d) = cur {
        if !d.join("cgroup.controllers").exists() {
            break;
        }
        chain.push(d.to_owned());
        if !d.join("cgroup.type").exists() {
            break;
        }
        cur = d.parent();
    }
    chain.reverse();
    for d in chain {
        let enabled = read_control(&d.join("cgroup.subtree_control")).unwrap_or_default();
        let offered = read_control(&d.join("cgroup.controllers")).unwrap_or_default();
        let missing: Vec<String> = controllers
            .iter()
            .map(|c| c.name())
            .filter(|n| offered.split_whitespace().any(|o| o == *n))
            .filter(|n| !enabled.split_whitespace().any(|o| o == *n))
            .map(|n| format!("+{n}"))
            .collect();
        if !missing.is_empty() {
            write_control(&d.join("cgroup.subtree_control"), &missing.join(" "))?;
        }
    }
    Ok(())
}

/// The CPU weight settings of a cgroup.
fn cpu_weight_settings(version: Version, weight: Option<u32>) -> Vec<(&'static str, String)> {
    let weight = weight.unwrap_or(100).clamp(1, 10000);
    match version {
        Version::V2 => vec![("cpu.weight", weight.to_string())],
        // v1 shares: 1024 is the default weight; at least 2.
        Version::V1 => vec![(
            "cpu.shares",
            (u64::from(weight) * 1024 / 100).max(2).to_string(),
        )],
    }
}

fn cpu_quota_settings(version: Version, quota: Option<u32>) -> Vec<(&'static str, String)> {
    let quota_us = quota.map(|q| u64::from(q.max(1)) * PERIOD_US / 100);
    match version {
        Version::V2 => vec![(
            "cpu.max",
            match quota_us {
                Some(q) => format!("{q} {PERIOD_US}"),
                None => format!("max {PERIOD_US}"),
            },
        )],
        Version::V1 => vec![
            ("cpu.cfs_period_us", PERIOD_US.to_string()),
            (
                "cpu.cfs_quota_us",
                quota_us.map_or("-1".to_owned(), |q| q.to_string()),
            ),
        ],
    }
}

/// Memory: the limit (swap included, so a partition cannot trade its limit for the
/// host's swap) and, for a reserved share on v2, the same amount protected from reclaim.
/// `present` says which optional files exist (swap accounting may be off).
fn memory_settings(
    version: Version,
    memory: Option<u64>,
    reserved: bool,
    present: &dyn Fn(&str) -> bool,
) -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    match version {
        Version::V2 => {
            out.push(("memory.max", memory.map_or("max".into(), |m| m.to_string())));
            if present("memory.swap.max") {
                out.push((
                    "memory.swap.max",
                    if memory.is_some() {
                        "0".into()
                    } else {
                        "max".into()
                    },
                ));
            }
            if present("memory.min") {
                let min = memory.filter(|_| reserved).unwrap_or(0);
                out.push(("memory.min", min.to_string()));
            }
        }
        Version::V1 => {
            let value = memory.map_or("-1".to_owned(), |m| m.to_string());
            // memsw must stay >= the limit at every step: lift it, set the limit, then
            // bring memsw down to it.
            let memsw = present("memory.memsw.limit_in_bytes");
            if memsw {
                out.push(("memory.memsw.limit_in_bytes", "-1".to_owned()));
            }
            out.push(("memory.limit_in_bytes", value.clone()));
            if memsw && memory.is_some() {
                out.push(("memory.memsw.limit_in_bytes", value));
            }
        }
    }
    out
}

fn pids_settings(pids: Option<u64>) -> Vec<(&'static str, String)> {
    vec![("pids.max", pids.map_or("max".into(), |p| p.to_string()))]
}

/// The files to write in a partition's directory of a hierarchy with `controllers`,
/// and the limits none of `all` (every hierarchy's controllers) can apply.
pub(crate) fn plan(
    version: Version,
    controllers: &[Controller],
    limits: &Limits,
    present: &dyn Fn(&str) -> bool,
) -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    if controllers.contains(&Controller::Cpu) {
        out.extend(cpu_weight_settings(version, limits.cpu_weight));
        out.extend(cpu_quota_settings(version, limits.cpu_quota));
    }
    if controllers.contains(&Controller::Memory) {
        out.extend(memory_settings(
            version,
            limits.memory,
            limits.reserved,
            present,
        ));
    }
    if controllers.contains(&Controller::Pids) {
        out.extend(pids_settings(limits.pids));
    }
    out
}

/// The limits of `limits` that no hierarchy of `all` can enforce.
pub(crate) fn unapplicable(all: &[Controller], limits: &Limits) -> Vec<Unapplied> {
    let mut out = Vec::new();
    let mut need = |set: bool, limit: &str, controller: Controller| {
        if set && !all.contains(&controller) {
            out.push(Unapplied {
                limit: limit.to_owned(),
                reason: format!("no {} controller", controller.name()),
            });
        }
    };
    need(limits.cpu_weight.is_some(), "cpu_weight", Controller::Cpu);
    need(limits.cpu_quota.is_some(), "cpu_quota", Controller::Cpu);
    need(limits.memory.is_some(), "memory", Controller::Memory);
    need(limits.pids.is_some(), "pids", Controller::Pids);
    need(
        limits.reserved && limits.cpu_quota.is_some(),
        "cpus of its own",
        Controller::Cpuset,
    );
    out
}

impl PartitionCgroup {
    fn all_controllers(&self) -> Vec<Controller> {
        self.dirs
            .iter()
            .flat_map(|b| b.controllers.iter().copied())
            .collect()
    }

    /// Refuses directories that are not `<root>/<class>/<name>` of plain names: a
    /// partition name of `..` or with a `/` (the agent checks partition ids before, this
    /// is the last guard before a directory is made or joined).
    fn check_dirs(&self) -> Result<(), CgroupError> {
        for base in &self.dirs {
            // The raw bytes: `Path::components` would hide a `.` component.
            let raw = base.dir.as_os_str().as_bytes();
            let plain = raw.first() == Some(&b'/')
                && raw[1..]
                    .split(|b| *b == b'/')
                    .all(|seg| !seg.is_empty() && seg != b"." && seg != b".." && !seg.contains(&0));
            if !plain {
                return Err(CgroupError::Unsafe {
                    path: base.dir.clone(),
                    reason: "a partition's cgroup is named by a plain partition id".into(),
                });
            }
        }
        Ok(())
    }

    /// Creates the partition's cgroup (and the classes above it) and writes its limits.
    /// Returns the limits no controller here can enforce.
    pub fn ensure(&self) -> Result<Vec<Unapplied>, CgroupError> {
        self.check_dirs()?;
        for base in &self.dirs {
            let (Some(class), Some(root)) =
                (base.dir.parent(), base.dir.parent().and_then(Path::parent))
            else {
                return Err(CgroupError::Invalid(format!(
                    "{} is not <root>/<class>/<partition>",
                    base.dir.display()
                )));
            };
            // The root's missing ancestors (`/slapos` of `/slapos/<computer>`), made
            // from the nearest existing cgroup down; never outside a cgroup hierarchy.
            let mut missing = Vec::new();
            let mut cur = root;
            while !cur.is_dir() {
                missing.push(cur.to_owned());
                cur = cur.parent().ok_or_else(|| {
                    CgroupError::Invalid(format!("{} is in no cgroup hierarchy", root.display()))
                })?;
            }
            if !cur.join("cgroup.procs").exists() {
                return Err(CgroupError::Io {
                    action: "find the cgroup hierarchy of",
                    path: root.to_owned(),
                    source: std::io::ErrorKind::NotFound.into(),
                });
            }
            // Makes one level: v2 hands our controllers down to it, a v1 cpuset
            // takes its parent's CPUs and memory nodes.
            let level = |dir: &Path| -> Result<(), CgroupError> {
                make_dir(dir)?;
                match self.version {
                    Version::V2 => enable_v2_controllers(dir, &base.controllers),
                    Version::V1 if base.controllers.contains(&Controller::Cpuset) => {
                        inherit_cpuset_v1(dir)
                    }
                    Version::V1 => Ok(()),
                }
            };
            for dir in missing.iter().rev() {
                level(dir)?;
            }
            level(root)?;
            let fresh_class = !class.exists();
            level(class)?;
            if fresh_class && base.controllers.contains(&Controller::Cpu) {
                let reserved = class.file_name().is_some_and(|n| n == RESERVED);
                let weight = if reserved {
                    RESERVED_WEIGHT
                } else {
                    SHARED_WEIGHT
                };
                write_all(class, &cpu_weight_settings(self.version, Some(weight)))?;
            }
            make_dir(&base.dir)?;
            if self.version == Version::V1 && base.controllers.contains(&Controller::Cpuset) {
                inherit_cpuset_v1(&base.dir)?;
            }
            let dir = base.dir.clone();
            let values = plan(self.version, &base.controllers, &self.limits, &|f| {
                dir.join(f).exists()
            });
            write_all(&base.dir, &values)?;
        }
        Ok(unapplicable(&self.all_controllers(), &self.limits))
    }

    /// The `cgroup.procs` of each of its directories, opened for writing (by root,
    /// before a fork): a child writes `0` to each to join the cgroup (`process`). A
    /// cgroup gone since it was made (a reboot empties cgroupfs) is made again first,
    /// with its limits: a partition's process never runs outside it.
    pub fn open_procs(&self) -> Result<Vec<OwnedFd>, CgroupError> {
        self.check_dirs()?;
        if !self.exists() {
            self.ensure()?;
        }
        self.dirs
            .iter()
            .map(|b| {
                let path = b.dir.join("cgroup.procs");
                std::fs::OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .map(OwnedFd::from)
                    .map_err(io("open", &path))
            })
            .collect()
    }

    fn dir_of(&self, controller: Controller) -> Option<&Path> {
        self.dirs
            .iter()
            .find(|b| b.controllers.contains(&controller))
            .map(|b| b.dir.as_path())
    }

    /// What the kernel counted for the partition.
    pub fn usage(&self) -> Usage {
        let num = |p: PathBuf| read_control(&p).and_then(|t| t.parse::<u64>().ok());
        let cpu_seconds = match self.version {
            Version::V1 => self
                .dir_of(Controller::Cpuacct)
                .and_then(|d| num(d.join("cpuacct.usage")))
                .map(|ns| ns as f64 / 1e9),
            Version::V2 => self
                .dirs
                .first()
                .and_then(|b| read_control(&b.dir.join("cpu.stat")))
                .and_then(|t| stat_field(&t, "usage_usec"))
                .map(|us| us as f64 / 1e6),
        };
        let memory = self.dir_of(Controller::Memory);
        let (memory_bytes, memory_peak_bytes) = match (self.version, memory) {
            (Version::V1, Some(d)) => (
                num(d.join("memory.usage_in_bytes")),
                num(d.join("memory.max_usage_in_bytes")),
            ),
            (Version::V2, Some(d)) => (num(d.join("memory.current")), num(d.join("memory.peak"))),
            _ => (None, None),
        };
        let processes = self
            .dir_of(Controller::Pids)
            .and_then(|d| num(d.join("pids.current")));
        Usage {
            cpu_seconds,
            memory_bytes,
            memory_peak_bytes,
            processes,
        }
    }

    /// v1: starts the memory peak over (each report then carries the peak of its own
    /// period). v2's `memory.peak` cannot be reset for every reader: it stays the peak
    /// since the cgroup was made.
    pub fn reset_peak(&self) {
        if let (Version::V1, Some(d)) = (self.version, self.dir_of(Controller::Memory)) {
            let _ = write_control(&d.join("memory.max_usage_in_bytes"), "0");
        }
    }

    /// The limits the kernel holds for the partition (read back from its files).
    pub fn current_limits(&self) -> Limits {
        let mut limits = Limits::default();
        if let Some(d) = self.dir_of(Controller::Cpu) {
            limits.cpu_quota = read_cpu_quota(self.version, d);
            limits.cpu_weight = match self.version {
                Version::V2 => read_control(&d.join("cpu.weight")).and_then(|t| t.parse().ok()),
                Version::V1 => read_control(&d.join("cpu.shares"))
                    .and_then(|t| t.parse::<u64>().ok())
                    .map(|s| (s * 100 / 1024) as u32),
            };
        }
        if let Some(d) = self.dir_of(Controller::Memory) {
            limits.memory = read_memory_limit(self.version, d);
        }
        if let Some(d) = self.dir_of(Controller::Pids) {
            limits.pids = read_control(&d.join("pids.max")).and_then(|t| t.parse().ok());
        }
        limits
    }

    /// The CPUs the partition may run on (`None`: no cpuset controller here).
    pub fn cpus(&self) -> Option<String> {
        self.dir_of(Controller::Cpuset)
            .and_then(|d| read_cpus(self.version, d))
            .map(|set| cpus::format(&set))
    }

    /// Whether every directory exists (a reboot empties cgroupfs).
    pub fn exists(&self) -> bool {
        self.dirs.iter().all(|b| b.dir.is_dir())
    }
}

fn stat_field(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok())?
    })
}

/// A memory limit (`None`: unlimited; v1 shows "unlimited" as a huge number).
fn read_memory_limit(version: Version, dir: &Path) -> Option<u64> {
    let file = match version {
        Version::V1 => "memory.limit_in_bytes",
        Version::V2 => "memory.max",
    };
    read_control(&dir.join(file))
        .and_then(|t| t.parse::<u64>().ok())
        .filter(|v| *v < (1u64 << 62))
}

/// A CPU quota in hundredths of a CPU (`None`: none).
fn read_cpu_quota(version: Version, dir: &Path) -> Option<u32> {
    let (quota, period) = match version {
        Version::V1 => (
            read_control(&dir.join("cpu.cfs_quota_us"))?
                .parse::<i64>()
                .ok()?,
            read_control(&dir.join("cpu.cfs_period_us"))?
                .parse::<i64>()
                .ok()?,
        ),
        Version::V2 => {
            let text = read_control(&dir.join("cpu.max"))?;
            let mut words = text.split_whitespace();
            let quota = words.next()?.parse::<i64>().ok()?;
            (quota, words.next()?.parse::<i64>().ok()?)
        }
    };
    (quota > 0 && period > 0).then(|| (quota * 100 / period) as u32)
}

/// `MemTotal` of /proc/meminfo, in bytes.
fn memory_total() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| {
            t.lines().find_map(|l| {
                let rest = l.strip_prefix("MemTotal:")?;
                rest.trim()
                    .trim_end_matches("kB")
                    .trim()
                    .parse::<u64>()
                    .ok()
            })
        })
        .map_or(0, |kb| kb * 1024)
}

/// What the kernel counted for one partition; `None` where no controller counts it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Usage {
    /// CPU time of every process that ever ran in it (exited ones included).
    pub cpu_seconds: Option<f64>,
    pub memory_bytes: Option<u64>,
    /// The highest memory use (v1: since the last report; v2: since its creation).
    pub memory_peak_bytes: Option<u64>,
    pub processes: Option<u64>,
}

pub mod cpus;

#[cfg(test)]
mod tests;
