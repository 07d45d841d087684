//! What each partition may use, and what it uses (the node's side of `cgroup`):
//!
//! * its limits: the size its instance's SLA names (`size`, in the `_filter_dict` the
//!   master sends), as this node defines it (`[partition-size:<name>]`), else the node's
//!   defaults (`[partition-limits]`); a size the node does not define is an error of the
//!   partition, never an unlimited partition;
//! * its cgroup, made and limited before anything of the partition runs; limits no
//!   controller here can enforce are logged and shown by `slapos node status`;
//! * its disk, measured as its user and held against its `disk` limit: over it, its
//!   services are stopped and the error reported until it is back under;
//! * `IR/var/limits/<partition>.json` (root's, 0600): what was applied and measured, for
//!   `slapos node status` and the rate of the disk checks.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use slapos_proto::slap::ComputerPartition;

use crate::cgroup::{Availability, Limits, PartitionCgroup, Unapplied, Usage};
use crate::node::{now_unix, write_atomic, Node, NodeError};
use crate::process::Identity;

/// What the agent last applied and measured for a partition.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct PartitionState {
    pub limits: Limits,
    /// Limits not enforced, and why.
    #[serde(default)]
    pub unapplied: Vec<Unapplied>,
    #[serde(default)]
    pub cgroup: Option<PartitionCgroup>,
    /// The last disk measure (bytes) and when it was taken.
    #[serde(default)]
    pub disk_bytes: Option<u64>,
    #[serde(default)]
    pub disk_checked_unix: u64,
    /// Over its disk limit at the last measure: its services are stopped.
    #[serde(default)]
    pub disk_over: bool,
}

fn state_dir(node: &Node) -> PathBuf {
    node.cfg.instance_root.join("var/limits")
}

fn state_path(node: &Node, pid: &str) -> PathBuf {
    state_dir(node).join(format!("{pid}.json"))
}

/// The stored state of a partition (default when none).
pub fn load(node: &Node, pid: &str) -> PartitionState {
    std::fs::read(state_path(node, pid))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

fn store(node: &Node, pid: &str, state: &PartitionState) -> Result<(), NodeError> {
    let dir = state_dir(node);
    std::fs::create_dir_all(&dir).map_err(crate::node::io_err(&dir))?;
    let bytes = serde_json::to_vec_pretty(state).unwrap_or_default();
    write_atomic(&state_path(node, pid), &bytes, 0o600)
}

/// The size an instance's SLA names, if any.
pub fn requested_size(partition: &ComputerPartition) -> Option<String> {
    partition
        .filter_dict
        .get()
        .and_then(|d| d.get("size"))
        .and_then(|v| match v {
            slapos_proto::marshal::Value::Str(s) => Some(s.trim().to_owned()),
            _ => None,
        })
        .filter(|s| !s.is_empty())
}

#[derive(Debug, thiserror::Error)]
pub enum LimitsError {
    #[error(
        "the instance asks for partition size {size:?}, which this node does not define \
         (its sizes: {known}); refusing to run it without limits"
    )]
    UnknownSize { size: String, known: String },
    #[error(transparent)]
    Cgroup(#[from] crate::cgroup::CgroupError),
    #[error(transparent)]
    Node(#[from] NodeError),
}

/// The limits of a partition whose instance names `size` (or none).
pub fn resolve(cfg: &crate::NodeConfig, size: Option<&str>) -> Result<Limits, LimitsError> {
    match size {
        None => Ok(cfg.partition_limits.clone()),
        Some(size) => {
            cfg.partition_sizes
                .get(size)
                .cloned()
                .ok_or_else(|| LimitsError::UnknownSize {
                    size: size.to_owned(),
                    known: if cfg.partition_sizes.is_empty() {
                        "none".into()
                    } else {
                        cfg.partition_sizes
                            .keys()
                            .cloned()
                            .collect::<Vec<_>>()
                            .join(", ")
                    },
                })
        }
    }
}

/// The cgroup a partition with `limits` has here (nothing is made or read).
pub fn cgroup_of(node: &Node, pid: &str, limits: &Limits) -> Option<PartitionCgroup> {
    node.cgroups.cgroups().map(|c| c.partition(pid, limits))
}

/// The partition's cgroup as it is now (whichever class holds it), for the programs of
/// a partition whose limits are not at hand (destruction).
pub fn existing_cgroup(node: &Node, pid: &str) -> Option<PartitionCgroup> {
    let cgroups = node.cgroups.cgroups()?;
    // The one last applied, else whichever class holds one.
    if let Some(applied) = load(node, pid).cgroup.filter(PartitionCgroup::exists) {
        return Some(applied);
    }
    [false, true].into_iter().find_map(|reserved| {
        let limits = Limits {
            reserved,
            ..Limits::default()
        };
        let cgroup = cgroups.partition(pid, &limits);
        cgroup.exists().then_some(cgroup)
    })
}

/// Makes the partition's cgroup with `limits` (before anything of the partition runs),
/// moves it out of the other class when its size changed class, and records what was
/// applied. `Ok(None)`: no cgroup here (the limits are recorded as not applied, and
/// logged).
pub fn apply(
    node: &Node,
    pid: &str,
    limits: &Limits,
) -> Result<Option<PartitionCgroup>, LimitsError> {
    let mut state = load(node, pid);
    let cgroup = match &node.cgroups {
        Availability::Available(cgroups) => {
            let cgroup = cgroups.partition(pid, limits);
            state.unapplied = cgroup.ensure()?;
            for u in &state.unapplied {
                tracing::warn!(partition = pid, limit = %u.limit, reason = %u.reason, "limit not enforced");
            }
            Some(cgroup)
        }
        other => {
            state.unapplied = unenforced(limits, &other.describe());
            if !state.unapplied.is_empty() {
                tracing::warn!(partition = pid, cgroups = %other.describe(), "limits not enforced: no cgroup");
            }
            None
        }
    };
    state.limits = limits.clone();
    state.cgroup = cgroup.clone();
    store(node, pid, &state)?;
    Ok(cgroup)
}

/// After a processing run: removes the partition's cgroup of the class it is no longer
/// in (its size changed class; its group restarted in the new one, so the old one is
/// empty; a busy one stays for the next run).
pub fn tidy(node: &Node, pid: &str) {
    let Some(cgroups) = node.cgroups.cgroups() else {
        return;
    };
    let Some(current) = load(node, pid).cgroup else {
        return;
    };
    let other = cgroups.partition(
        pid,
        &Limits {
            reserved: !current.limits.reserved,
            ..Limits::default()
        },
    );
    for base in other.dirs.iter().filter(|b| b.dir.is_dir()) {
        if let Err(e) = std::fs::remove_dir(&base.dir) {
            tracing::debug!(dir = %base.dir.display(), error = %e, "former cgroup kept for now");
        }
    }
}

/// Every cgroup limit of `limits`, as not enforced because `why`.
fn unenforced(limits: &Limits, why: &str) -> Vec<Unapplied> {
    let mut out = Vec::new();
    for (set, name) in [
        (limits.cpu_weight.is_some(), "cpu_weight"),
        (limits.cpu_quota.is_some(), "cpu_quota"),
        (limits.memory.is_some(), "memory"),
        (limits.pids.is_some(), "pids"),
    ] {
        if set {
            out.push(Unapplied {
                limit: name.to_owned(),
                reason: format!("cgroups {why}"),
            });
        }
    }
    out
}

/// The disk check of a partition with a disk limit: measured as its user (at most once
/// per `disk_check_interval` unless `now`), recorded; `Some(message)` when it is over.
pub fn check_disk(
    node: &Node,
    pid: &str,
    path: &Path,
    owner: &Identity,
    limits: &Limits,
    now: bool,
) -> Result<Option<String>, NodeError> {
    let Some(limit) = limits.disk else {
        return Ok(None);
    };
    let mut state = load(node, pid);
    let fresh =
        now_unix().saturating_sub(state.disk_checked_unix) < node.cfg.disk_check_interval.as_secs();
    let (used, measured) = match (now, fresh, state.disk_bytes) {
        (false, true, Some(used)) => (used, false),
        _ => {
            let used = crate::disk::partition_disk_bytes(owner, path);
            state.disk_bytes = Some(used);
            state.disk_checked_unix = now_unix();
            (used, true)
        }
    };
    let over = used > limit;
    // An unchanged partition between two measures writes nothing.
    if measured || state.disk_over != over {
        state.disk_over = over;
        store(node, pid, &state)?;
    }
    Ok(state.disk_over.then(|| {
        format!(
            "disk use {} is over the partition's limit of {}: its services are stopped until it is back under",
            human(used),
            human(limit)
        )
    }))
}

/// `1.5 GiB`, `12 MiB`, `300 KiB`, `12 B`.
pub fn human(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 || value >= 100.0 || value.fract() < 0.05 {
        format!("{value:.0} {}", UNITS[unit])
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// One partition in `slapos node status`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PartitionReport {
    pub partition: String,
    pub size: Option<String>,
    pub reserved: bool,
    /// What the agent applied (the disk limit included).
    pub limits: Limits,
    /// What the kernel holds (read back from the cgroup).
    pub enforced: Option<Limits>,
    pub unapplied: Vec<Unapplied>,
    /// The CPUs it may run on (a reserved class has CPUs of its own).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpus: Option<String>,
    pub usage: Option<Usage>,
    pub disk_bytes: Option<u64>,
    pub disk_over: bool,
}

/// The node's limits and use, for `slapos node status`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeReport {
    /// `v1 (cpu, cpuacct, memory, pids)`, `disabled ...`, `unavailable: ...`.
    pub cgroups: String,
    pub partitions: Vec<PartitionReport>,
}

/// Every partition the agent applied limits to, with what the kernel says of it now.
pub fn report(node: &Node) -> NodeReport {
    let mut names: Vec<String> = std::fs::read_dir(state_dir(node))
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| {
                    e.file_name()
                        .to_str()
                        .and_then(|n| n.strip_suffix(".json"))
                        .map(str::to_owned)
                })
                .collect()
        })
        .unwrap_or_default();
    if let Some(c) = node.cgroups.cgroups() {
        names.extend(c.partitions().into_iter().map(|(p, _)| p));
    }
    names.sort_by_key(|a| natural(a));
    names.dedup();
    let partitions = names
        .into_iter()
        .filter(|p| crate::names::valid_partition_id(p))
        .map(|pid| {
            let state = load(node, &pid);
            let cgroup = state
                .cgroup
                .clone()
                .filter(PartitionCgroup::exists)
                .or_else(|| existing_cgroup(node, &pid));
            PartitionReport {
                size: state.limits.size.clone(),
                reserved: state.limits.reserved,
                enforced: cgroup.as_ref().map(PartitionCgroup::current_limits),
                usage: cgroup.as_ref().map(PartitionCgroup::usage),
                cpus: cgroup.as_ref().and_then(PartitionCgroup::cpus),
                unapplied: state.unapplied.clone(),
                disk_bytes: state.disk_bytes,
                disk_over: state.disk_over,
                limits: state.limits,
                partition: pid,
            }
        })
        .collect();
    NodeReport {
        cgroups: node.cgroups.describe(),
        partitions,
    }
}

/// `slappart10` after `slappart9`.
fn natural(name: &str) -> (String, u64) {
    let digits = name.len() - name.trim_end_matches(|c: char| c.is_ascii_digit()).len();
    let (stem, num) = name.split_at(name.len() - digits);
    (stem.to_owned(), num.parse().unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_sizes() {
        assert_eq!(human(12), "12 B");
        assert_eq!(human(300 << 10), "300 KiB");
        assert_eq!(human(3 << 29), "1.5 GiB");
        assert_eq!(human(64 << 20), "64 MiB");
    }

    #[test]
    fn sizes_resolve_and_unknown_ones_are_refused() {
        let cfg = crate::NodeConfig::parse(
            Path::new("t"),
            "[slapos]\ncomputer_id = C\nmaster_url = http://x\nsoftware_root = /s\n\
             instance_root = /i\n[partition-limits]\nmemory = 1G\n\
             [partition-size:m]\nmemory = 2G\n",
        )
        .unwrap();
        assert_eq!(resolve(&cfg, None).unwrap().memory, Some(1 << 30));
        let m = resolve(&cfg, Some("m")).unwrap();
        assert_eq!((m.memory, m.size.as_deref()), (Some(2 << 30), Some("m")));
        let err = resolve(&cfg, Some("xl")).unwrap_err().to_string();
        assert!(
            err.contains("\"xl\"") && err.contains("its sizes: m"),
            "{err}"
        );
    }

    /// What the master sends is data: a size name is only ever looked up among the
    /// sizes this node's own configuration defines; a hostile one (a path, a control
    /// character, an unknown name) is an error of that partition, never a path, never
    /// an unlimited partition.
    #[test]
    fn hostile_size_names_from_the_master_are_only_looked_up() {
        let cfg = crate::NodeConfig::parse(
            Path::new("t"),
            "[slapos]\ncomputer_id = C\nmaster_url = http://x\nsoftware_root = /s\n\
             instance_root = /i\n[partition-limits]\npids = 50\n[partition-size:m]\npids = 99\n",
        )
        .unwrap();
        for hostile in [
            "../../../sys/fs/cgroup/cpu",
            "/etc/passwd",
            "m/../m",
            "m\nreserved = true",
            "m\0",
            "M",
            &"m".repeat(10_000),
        ] {
            let err = resolve(&cfg, Some(hostile)).unwrap_err();
            assert!(
                matches!(err, LimitsError::UnknownSize { .. }),
                "{hostile:?}"
            );
            // The message quotes it escaped (one line in the master's error log).
            assert!(!err.to_string().contains('\n'), "{err}");
        }
        assert_eq!(resolve(&cfg, Some("m")).unwrap().pids, Some(99));
    }

    /// On a host without the controllers (simulated: detection pointed at a mountinfo
    /// with no cgroup hierarchy) a partition's limits are recorded as not enforced, each
    /// with the reason, and `slapos node status` says cgroups are unavailable: never
    /// silently ignored. The disk limit, measured by the agent, still holds.
    #[test]
    fn without_controllers_limits_are_reported_unavailable() {
        let dir = tempfile::tempdir().unwrap();
        let text = format!(
            "[slapos]\ncomputer_id = C\nmaster_url = http://127.0.0.1:9/\nsoftware_root = {r}/s\n\
             instance_root = {r}/i\n[partition-limits]\nmemory = 64M\npids = 50\ndisk = 1M\n",
            r = dir.path().display()
        );
        let cfg = crate::NodeConfig::parse(Path::new("t"), &text).unwrap();
        let mut node = Node::new(cfg, None).unwrap();
        node.cgroups = crate::cgroup::detect_from(
            crate::cgroup::Mode::Auto,
            &node.cfg.cgroup_root,
            "22 1 0:21 / /proc rw,nosuid - proc proc rw\n",
            "0::/\n",
            &|_| None,
        );
        let limits = resolve(&node.cfg, None).unwrap();
        assert!(apply(&node, "slappart0", &limits).unwrap().is_none());
        let report = report(&node);
        assert!(
            report.cgroups.starts_with("unavailable: "),
            "{}",
            report.cgroups
        );
        let p = &report.partitions[0];
        assert_eq!(p.partition, "slappart0");
        assert!(p.enforced.is_none() && p.usage.is_none());
        let names: Vec<&str> = p.unapplied.iter().map(|u| u.limit.as_str()).collect();
        assert_eq!(names, vec!["memory", "pids"]);
        assert!(
            p.unapplied[0].reason.contains("unavailable"),
            "{:?}",
            p.unapplied
        );
        // The disk limit does not need a controller (measured as the partition's user).
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let part = dir.path().join("p0");
        std::fs::create_dir_all(&part).unwrap();
        std::fs::write(part.join("big"), vec![1u8; 2 << 20]).unwrap();
        let user = crate::process::is_root().then(|| crate::testutil::TestUser::new("lim"));
        let owner = if let Some(user) = &user {
            let id = &user.identity;
            for p in [part.clone(), part.join("big")] {
                std::os::unix::fs::chown(&p, Some(id.uid), Some(id.gid)).unwrap();
            }
            id.clone()
        } else {
            Identity::current()
        };
        let over = check_disk(&node, "slappart0", &part, &owner, &limits, true).unwrap();
        assert!(over.is_some_and(|m| m.contains("over")));
        assert!(load(&node, "slappart0").disk_over);
    }

    /// A size that changes class moves the partition's cgroup: the former one goes once
    /// the partition was processed (its group restarted in the new one).
    #[test]
    fn a_partition_moving_to_the_reserved_class_leaves_no_cgroup_behind() {
        let dir = tempfile::tempdir().unwrap();
        let text = format!(
            "[slapos]\ncomputer_id = C\nmaster_url = http://127.0.0.1:9/\nsoftware_root = {r}/s\n\
             instance_root = {r}/i\ncgroup_root = sgt-tidy-{id}\n[partition-limits]\npids = 50\n\
             [partition-size:master]\nreserved = true\n",
            r = dir.path().display(),
            id = std::process::id()
        );
        let cfg = crate::NodeConfig::parse(Path::new("t"), &text).unwrap();
        let node = Node::new(cfg, None).unwrap();
        let Some(cgroups) = node.cgroups.cgroups().cloned() else {
            eprintln!("skipped: cgroups {}", node.cgroups.describe());
            return;
        };
        let shared = apply(&node, "slappart0", &resolve(&node.cfg, None).unwrap())
            .unwrap()
            .unwrap();
        assert!(shared.exists());
        let reserved = apply(
            &node,
            "slappart0",
            &resolve(&node.cfg, Some("master")).unwrap(),
        )
        .unwrap()
        .unwrap();
        assert!(reserved.exists() && shared.exists());
        tidy(&node, "slappart0");
        assert!(reserved.exists() && !shared.exists());
        assert_eq!(cgroups.partitions(), vec![("slappart0".to_string(), true)]);
        assert_eq!(
            existing_cgroup(&node, "slappart0").unwrap().dirs,
            reserved.dirs
        );
        cgroups.remove_all().unwrap();
    }

    #[test]
    fn partitions_sort_naturally() {
        let mut v = vec!["slappart10", "slappart9", "slappart1"];
        v.sort_by_key(|a| natural(a));
        assert_eq!(v, vec!["slappart1", "slappart9", "slappart10"]);
    }
}
