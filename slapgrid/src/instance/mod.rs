//! `slapos node instance` (slapgrid-behaviour.md 4): every partition the master lists is
//! skipped when its timestamp is unchanged and its periodicity has not expired, else its
//! instance profile runs as the partition's user (buildout: the profile plus the tail of
//! 4.3; native: rendered files), its services are handed to the supervisor, its promises
//! are checked, and its state is reported. One partition at a time; one failing never
//! stops the others.

//!
//! The state machine is here; `profile` runs the instance profile, `destroy` frees a
//! partition, `partition` reads what the master says of one and reports its errors.

mod destroy;
mod partition;
mod profile;

use std::collections::BTreeMap;
use std::path::Path;

use slapos_proto::marshal::{self, Value};
use slapos_proto::slap::ComputerPartition;

use crate::client::SlapError;
use crate::fsutil::{self, read_text_in, write_in};
pub use crate::names::valid_partition_id;
use crate::native::Manifest;
use crate::node::{io_err, now_unix, Node, NodeError};
use crate::process::{self, Identity};
use crate::promise;
use crate::software::release_path;
use crate::supervisor::{GroupSpec, ServiceSpec};
use destroy::destroy;
pub(crate) use destroy::destroy_partition;
pub(crate) use partition::report_error;
use partition::{
    access_status, mark_reported, parameter, reported, software_url, state_of, PartitionError,
};
use profile::{install, Profile};

#[derive(Debug, Clone, Default)]
pub struct InstanceOptions {
    /// Ignore timestamps: process every partition.
    pub force: bool,
    /// Only these partitions (empty = all).
    pub only: Vec<String>,
}

/// What a run did.
#[derive(Debug, Default)]
pub struct InstanceReport {
    pub processed: Vec<String>,
    pub skipped: Vec<String>,
    pub destroyed: Vec<String>,
    /// (partition, message): processing errors (exit 1).
    pub failed: Vec<(String, String)>,
    /// (partition, message): broken promises (exit 2).
    pub promise_failed: Vec<(String, String)>,
    /// The master was unreachable: every configured service was started (exit 3).
    pub offline: bool,
}

impl InstanceReport {
    /// The reference's exit codes: 1 on errors, else 2 on broken promises, 3 offline.
    pub fn exit_code(&self) -> i32 {
        if !self.failed.is_empty() {
            1
        } else if !self.promise_failed.is_empty() {
            2
        } else if self.offline {
            3
        } else {
            0
        }
    }
}

pub fn run(node: &Node, opts: &InstanceOptions) -> Result<InstanceReport, NodeError> {
    let cfg = &node.cfg;
    node.ensure_supervisor()?;
    let mut report = InstanceReport::default();
    let computer = match node.client.full_computer_information(&cfg.computer_id) {
        Ok(c) => c,
        Err(e) if e.is_unreachable() => {
            tracing::warn!(error = %e, "master unreachable: starting every configured service");
            node.supervisor.start_all()?;
            report.offline = true;
            return Ok(report);
        }
        Err(e) => return Err(e.into()),
    };
    if let Some(unknown) = opts
        .only
        .iter()
        .find(|o| !computer.partitions().iter().any(|p| &p.partition_id == *o))
    {
        return Err(NodeError::Invalid(format!("unknown partition {unknown}")));
    }
    for partition in computer.partitions() {
        let pid = partition.partition_id.clone();
        if !opts.only.is_empty() && !opts.only.contains(&pid) {
            continue;
        }
        let span = tracing::info_span!("partition", partition_id = %pid);
        let _enter = span.enter();
        if !valid_partition_id(&pid) {
            // Never a path: `.`, `..`, `a/b` would name another directory.
            let message = format!("refusing partition id {pid:?} (not a plain name)");
            tracing::error!("{message}");
            report.failed.push((pid, message));
            continue;
        }
        let path = cfg.partition_path(&pid);
        let state = state_of(partition);
        let sr_url = software_url(partition);
        if state == "destroyed" && sr_url.is_none() {
            // A free partition: forget what the last instance left in the agent's files.
            let _ = std::fs::remove_dir_all(path.join(".slapgrid"));
            let _ = std::fs::remove_file(path.join(".timestamp"));
            continue;
        }
        if !path.is_dir() {
            let message = format!(
                "Partition directory {} does not exist (run `slapos node format`)",
                path.display()
            );
            report_error(node, &pid, &message);
            report.failed.push((pid, message));
            continue;
        }
        let outcome = process_partition(node, partition, &path, opts.force);
        partition_log(&path, state, &outcome);
        match outcome {
            Ok(Done::Skipped) => report.skipped.push(pid),
            Ok(Done::Processed) => report.processed.push(pid),
            Ok(Done::Destroyed) => report.destroyed.push(pid),
            Err(e) if e.unreachable() => {
                tracing::warn!(error = %e, "master unreachable mid-run: starting every configured service");
                node.supervisor.start_all()?;
                report.offline = true;
                return Ok(report);
            }
            Err(PartitionError::Promise(f)) => {
                let message = f.to_string();
                tracing::warn!(%message, "promise failed");
                report_error(node, &pid, &message);
                report.promise_failed.push((pid, message));
            }
            Err(e) => {
                let message = e.to_string();
                tracing::error!(%message, "partition failed");
                let _ = write_in(
                    &path,
                    Path::new(&format!(".slapgrid-{pid}-error.log")),
                    message.as_bytes(),
                    0o644,
                    None,
                );
                report_error(node, &pid, &message);
                report.failed.push((pid, message));
            }
        }
    }
    for pid in &report.processed {
        crate::limits::tidy(node, pid);
    }
    if let (Some(cgroups), false) = (node.cgroups.cgroups(), report.processed.is_empty()) {
        // What the shared partitions may take together, now that reservations may have
        // changed.
        if let Err(e) = cgroups.rebalance() {
            tracing::warn!(error = %e, "shared partitions' caps not updated");
        }
    }
    Ok(report)
}

/// Largest `.slapgrid/log/instance.log` kept (its tail).
const MAX_PARTITION_LOG: usize = 1 << 20;

/// One line per processing in `P/.slapgrid/log/instance.log`, where the operator (and
/// the partition's user) reads what the agent did to the partition and why it failed.
fn partition_log(path: &Path, state: &str, outcome: &Result<Done, PartitionError>) {
    let what = match outcome {
        Ok(Done::Skipped) => return,
        Ok(Done::Processed) => format!("{state}: processed"),
        // The partition was just wiped: nothing of the instance is written back.
        Ok(Done::Destroyed) => return,
        Err(e) => format!("{state}: failed: {e}"),
    };
    let when = chrono::DateTime::from_timestamp(now_unix() as i64, 0)
        .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
        .unwrap_or_default();
    let owner = Identity::owner_of(path)
        .ok()
        .filter(|_| process::is_root())
        .map(|i| (i.uid, i.gid));
    let line = format!("{when} {what}\n");
    if let Err(e) = fsutil::append_in(
        path,
        Path::new(".slapgrid/log/instance.log"),
        line.as_bytes(),
        MAX_PARTITION_LOG,
        owner,
    ) {
        tracing::debug!(error = %e, "partition log not written");
    }
}

enum Done {
    Skipped,
    Processed,
    Destroyed,
}

fn periodicity(node: &Node, sr: Option<&Path>) -> i64 {
    // A file of the software user's directory: never through a link, nor a FIFO.
    sr.and_then(|sr| read_text_in(sr, "periodicity"))
        .and_then(|t| t.trim().parse::<i64>().ok())
        .unwrap_or(node.cfg.maximum_periodicity.as_secs() as i64)
}

fn process_partition(
    node: &Node,
    partition: &ComputerPartition,
    path: &Path,
    force: bool,
) -> Result<Done, PartitionError> {
    let cfg = &node.cfg;
    let pid = partition.partition_id.as_str();
    let state = state_of(partition);
    let sr_url = software_url(partition);
    if let Some(url) = &sr_url {
        crate::software::check_release_url(url)?;
    }
    let sr = sr_url
        .as_deref()
        .map(|u| release_path(&cfg.software_root, u));
    let timestamp = parameter(partition, "timestamp");
    let identity = Identity::owner_of(path).map_err(io_err(path))?;
    if process::is_root() && (identity.uid == 0 || identity.gid == 0) {
        return Err(PartitionError::Failed(format!(
            "{} is owned by root: a partition belongs to its own user (run `slapos node format`)",
            path.display()
        )));
    }
    let _ = fsutil::remove_in(
        path,
        Path::new(&format!(".slapos-request-transaction-{pid}")),
    );
    // What it may use: the size its SLA names, else the node's defaults.
    let limits = crate::limits::resolve(cfg, crate::limits::requested_size(partition).as_deref())?;
    let period = periodicity(node, sr.as_deref());
    let stamp_file = path.join(".timestamp");

    // The skip test (4.2 step 5).
    if let (false, Some(ts), true) = (force, &timestamp, period != 0) {
        // Not following a link the partition user could have put there.
        if let (Some(stored), Ok(meta)) = (
            read_text_in(path, ".timestamp"),
            std::fs::symlink_metadata(&stamp_file),
        ) {
            let fresh = period < 0
                || meta
                    .modified()
                    .ok()
                    .and_then(|m| m.elapsed().ok())
                    .is_some_and(|age| age.as_secs() as i64 <= period);
            if stored == *ts && fresh {
                if state == "started" {
                    if let Some(over) =
                        crate::limits::check_disk(node, pid, path, &identity, &limits, false)?
                    {
                        stop_over_disk(node, pid);
                        // Processed again next run, which starts it once it is back under.
                        let _ = fsutil::remove_in(path, Path::new(".timestamp"));
                        return Err(PartitionError::Failed(over));
                    }
                    let cgroup = crate::limits::cgroup_of(node, pid, &limits);
                    skip_check(node, partition, path, &identity, cgroup.as_ref(), ts)?;
                }
                return Ok(Done::Skipped);
            }
        }
    }
    let _ = fsutil::remove_in(path, Path::new(".timestamp"));

    let owner = process::is_root().then_some((identity.uid, identity.gid));
    fsutil::mkdir_in(path, Path::new(".slapgrid/log"), owner)
        .map_err(io_err(&path.join(".slapgrid/log")))?;
    if state != "destroyed" {
        // (a destroyed partition's pair is removed with it, not issued anew)
        refresh_certificate(node, pid, &identity)?;
    }
    let _ = fsutil::remove_in(path, Path::new(&format!(".slapgrid-{pid}-error.log")));
    tracing::info!(state, "processing partition");

    let cid = cfg.computer_id.as_str();
    let form = [("computer_id", cid), ("computer_partition_id", pid)];
    let auth = Some((cid, pid));
    // Its cgroup, made and limited before anything of the partition runs.
    let cgroup = if state == "destroyed" {
        None
    } else {
        crate::limits::apply(node, pid, &limits)?
    };
    let cgroup = cgroup.as_ref();
    match state {
        "started" => {
            let result = (|| -> Result<(), PartitionError> {
                let profile = install(node, partition, path, sr.as_deref(), &identity, cgroup)?;
                if let Some(over) =
                    crate::limits::check_disk(node, pid, path, &identity, &limits, true)?
                {
                    stop_over_disk(node, pid);
                    return Err(PartitionError::Failed(over));
                }
                start(node, pid, path, &identity, cgroup)?;
                if let Some(f) = promise::check(path, &identity, cgroup, cfg.promise_timeout, true)?
                {
                    return Err(PartitionError::Promise(f));
                }
                if let Profile::Native(manifest, vars) = &profile {
                    publish(node, partition, manifest, vars)?;
                }
                node.client.post("startedComputerPartition", &form, auth)?;
                mark_reported(node, pid, timestamp.as_deref());
                post_related_instances(node, pid, path)?;
                Ok(())
            })();
            result?;
        }
        "stopped" => {
            let installed = install(node, partition, path, sr.as_deref(), &identity, cgroup);
            node.supervisor.remove(pid)?;
            if let Err(e) = node.client.post("stoppedComputerPartition", &form, auth) {
                if e.is_unreachable() {
                    return Err(e.into());
                }
                tracing::warn!(error = %e, "stoppedComputerPartition refused");
            }
            installed?;
            post_related_instances(node, pid, path)?;
        }
        "destroyed" => {
            node.supervisor.remove(pid)?;
            if let Err(e) = node.client.post("stoppedComputerPartition", &form, auth) {
                if e.is_unreachable() {
                    return Err(e.into());
                }
            }
            // Ours: destruction happens here, not a day later in `node report` (which
            // also does it, for partitions a failed run left behind).
            return if destroy(node, pid, path, &identity)? {
                Ok(Done::Destroyed)
            } else {
                Ok(Done::Processed)
            };
        }
        other => {
            return Err(PartitionError::Failed(format!(
                "Computer Partition {pid} has unsupported state: {other}"
            )))
        }
    }
    if let Some(ts) = &timestamp {
        // Root-owned 0644 in a partition-owned directory: written without following links.
        write_in(path, Path::new(".timestamp"), ts.as_bytes(), 0o644, None)
            .map_err(io_err(&stamp_file))?;
    }
    Ok(Done::Processed)
}

/// An unchanged started partition: promises (anomaly mode) and, when the master does not
/// know the partition is fine, a `started` report.
fn skip_check(
    node: &Node,
    partition: &ComputerPartition,
    path: &Path,
    identity: &Identity,
    cgroup: Option<&crate::cgroup::PartitionCgroup>,
    ts: &str,
) -> Result<(), PartitionError> {
    let pid = partition.partition_id.as_str();
    let cid = node.cfg.computer_id.as_str();
    // An unchanged partition's certificate is checked once a day (re-issued with a fresh
    // key within a third of its lifetime of its end; written in place, no restart).
    if let Some((_, cert)) = node.cfg.partition_certificate_paths(pid) {
        let stale = std::fs::metadata(&cert)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|m| m.elapsed().ok())
            .is_none_or(|age| age > std::time::Duration::from_secs(86400));
        if stale {
            refresh_certificate(node, pid, identity)?;
        }
    }
    let status = access_status(partition);
    match promise::check(path, identity, cgroup, node.cfg.promise_timeout, false)? {
        Some(f) => {
            if !status.as_deref().is_some_and(|s| s.starts_with("#error")) {
                return Err(PartitionError::Promise(f));
            }
        }
        None => {
            // The real master says whether it knows; ours and slapproxy send no status,
            // so a marker remembers that `started` was reported for this timestamp.
            let known_ok = match &status {
                Some(s) => !s.starts_with("#error"),
                None => reported(node, pid).as_deref() == Some(ts),
            };
            if !known_ok {
                node.client.post(
                    "startedComputerPartition",
                    &[("computer_id", cid), ("computer_partition_id", pid)],
                    Some((cid, pid)),
                )?;
                mark_reported(node, pid, Some(ts));
            }
        }
    }
    Ok(())
}

/// 4.8: the partition's key and certificate in the certificate repository (0400, owned by
/// the partition's user), when one is configured: the key made here, the certificate
/// signed by the master from a request, re-issued when due (`partcert`); an older master
/// delivers both as before.
fn refresh_certificate(node: &Node, pid: &str, identity: &Identity) -> Result<(), PartitionError> {
    let Some((key_path, cert_path)) = node.cfg.partition_certificate_paths(pid) else {
        return Ok(());
    };
    let owner = process::is_root().then_some((identity.uid, identity.gid));
    let done = crate::partcert::refresh(
        &node.client,
        node.cfg.key_file.as_deref(),
        &node.cfg.computer_id,
        pid,
        (&key_path, &cert_path),
        owner,
        now_unix() as i64,
    )?;
    tracing::debug!(?done, "partition certificate");
    // Checked now: the daily check of an unchanged partition counts from here (the
    // repository is the agent's own directory).
    if let Ok(f) = std::fs::File::open(&cert_path) {
        let _ = f.set_modified(std::time::SystemTime::now());
    }
    Ok(())
}

/// The services of `etc/run` and `etc/service` (entries that are not directories). The
/// partition is its user's: the two directories are listed without following a link (a
/// link to a directory elsewhere lists nothing), each entry runs as the partition user.
fn service_specs(path: &Path) -> Vec<ServiceSpec> {
    let mut services = Vec::new();
    for (dir, watched) in [("etc/run", false), ("etc/service", true)] {
        let names = fsutil::list_non_dirs_in(path, Path::new(dir)).unwrap_or_else(|e| {
            tracing::warn!(dir, error = %e, "services not listed");
            Vec::new()
        });
        for name in names {
            let command = path.join(dir).join(&name);
            // What the entry holds (a link or an unreadable file: no digest).
            let digest = crate::fsutil::read_in(path, &Path::new(dir).join(&name), 1 << 20)
                .ok()
                .flatten()
                .map(|content| crate::digest::md5_hex(&content))
                .unwrap_or_default();
            services.push(ServiceSpec {
                name,
                command,
                watched,
                digest,
            });
        }
    }
    services
}

/// A partition over its disk limit: its services stopped (kept in the supervisor, so
/// `slapos node status` shows them stopped).
fn stop_over_disk(node: &Node, pid: &str) {
    match node
        .supervisor
        .control(crate::supervisor::ControlOp::Stop, pid)
    {
        Ok(_) | Err(crate::supervisor::SupervisorError::UnknownGroup(_)) => {}
        Err(e) => tracing::warn!(error = %e, "services not stopped"),
    }
    tracing::warn!(partition = pid, "over its disk limit: services stopped");
}

/// The services of `etc/run` and `etc/service`, handed to the supervisor (4.4), to run
/// in the partition's cgroup.
fn start(
    node: &Node,
    pid: &str,
    path: &Path,
    identity: &Identity,
    cgroup: Option<&crate::cgroup::PartitionCgroup>,
) -> Result<(), PartitionError> {
    let services = service_specs(path);
    if services.is_empty() {
        tracing::warn!("no service in etc/run or etc/service");
        node.supervisor.remove(pid)?;
        return Ok(());
    }
    let group = GroupSpec {
        partition_id: pid.to_owned(),
        directory: path.to_owned(),
        uid: identity.uid,
        gid: identity.gid,
        user: identity.name.clone(),
        home: identity.home.clone(),
        services,
        cgroup: cgroup.cloned(),
    };
    node.supervisor.apply(&group)?;
    Ok(())
}

/// Native releases: publish the rendered connection parameters when they differ from what
/// the master holds.
fn publish(
    node: &Node,
    partition: &ComputerPartition,
    manifest: &Manifest,
    vars: &BTreeMap<String, String>,
) -> Result<(), PartitionError> {
    let wanted = manifest
        .render_connection(profile::software_type(vars), vars)
        .map_err(|e| PartitionError::Failed(e.to_string()))?;
    if wanted.is_empty() {
        return Ok(());
    }
    let current = partition.connection_dict.get();
    let same = current.is_some_and(|c| {
        c.len() == wanted.len()
            && wanted
                .iter()
                .all(|(k, v)| matches!(c.get(k), Some(Value::Str(s)) if s == v))
    });
    if same {
        return Ok(());
    }
    let dict = Value::Dict(
        wanted
            .into_iter()
            .map(|(k, v)| (Value::Str(k), Value::Str(v)))
            .collect(),
    );
    let xml = marshal::encode(&dict).map_err(|e| PartitionError::Failed(e.to_string()))?;
    let cid = node.cfg.computer_id.as_str();
    let pid = partition.partition_id.as_str();
    node.client.post(
        "setComputerPartitionConnectionXml",
        &[
            ("computer_id", cid),
            ("computer_partition_id", pid),
            ("connection_xml", &xml),
            ("slave_reference", "None"),
        ],
        Some((cid, pid)),
    )?;
    Ok(())
}

/// 4.6: the child instances this partition still requests.
fn post_related_instances(node: &Node, pid: &str, path: &Path) -> Result<(), PartitionError> {
    let rel = format!(".slapos-request-transaction-{pid}");
    let Some(text) = fsutil::read_in(path, Path::new(&rel), 1 << 20)
        .ok()
        .flatten()
        .and_then(|b| String::from_utf8(b).ok())
    else {
        return Ok(());
    };
    let list = Value::List(
        text.lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| Value::Str(l.trim().to_owned()))
            .collect(),
    );
    let xml = marshal::encode(&list).map_err(|e| PartitionError::Failed(e.to_string()))?;
    let cid = node.cfg.computer_id.as_str();
    match node.client.post(
        "updateComputerPartitionRelatedInstanceList",
        &[
            ("computer_id", cid),
            ("computer_partition_id", pid),
            ("instance_reference_xml", &xml),
        ],
        Some((cid, pid)),
    ) {
        Err(SlapError::NotFound { .. }) => {
            tracing::warn!("the master does not know updateComputerPartitionRelatedInstanceList");
            Ok(())
        }
        other => other.map(|_| ()).map_err(Into::into),
    }
}

/// `slapos node promise`: the promises of every started partition, run now (the
/// reference's `node promise`), nothing reported to the master. (partition, failure) of
/// each broken one.
pub fn check_promises(node: &Node, only: &[String]) -> Result<Vec<(String, String)>, NodeError> {
    let cfg = &node.cfg;
    let computer = node.client.full_computer_information(&cfg.computer_id)?;
    let mut broken = Vec::new();
    for partition in computer.partitions() {
        let pid = partition.partition_id.as_str();
        if state_of(partition) != "started"
            || software_url(partition).is_none()
            || !valid_partition_id(pid)
            || (!only.is_empty() && !only.iter().any(|o| o == pid))
        {
            continue;
        }
        let path = cfg.partition_path(pid);
        let Ok(identity) = Identity::owner_of(&path) else {
            continue;
        };
        if process::is_root() && identity.uid == 0 {
            continue;
        }
        let limits =
            crate::limits::resolve(cfg, crate::limits::requested_size(partition).as_deref())
                .unwrap_or_default();
        let cgroup = crate::limits::cgroup_of(node, pid, &limits);
        if let Some(f) =
            promise::check(&path, &identity, cgroup.as_ref(), cfg.promise_timeout, true)?
        {
            broken.push((pid.to_owned(), f.to_string()));
        }
    }
    Ok(broken)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Partition ids come from the master and name directories, users' files and
    /// supervisor groups: only plain names.
    #[test]
    fn partition_ids_that_are_not_plain_names_are_refused() {
        for bad in [
            "",
            ".",
            "..",
            "../etc",
            "a/b",
            "/etc",
            ".hidden",
            "slappart0\n",
            "a b",
            "a\0b",
            "slappart0\r\nX-Evil: 1",
            &"a".repeat(256),
        ] {
            assert!(!valid_partition_id(bad), "{bad:?}");
        }
        for good in ["slappart0", "SLAPPART-12", "p_1.2"] {
            assert!(valid_partition_id(good), "{good}");
        }
    }

    /// A partition's `etc/run` or `etc/service` that its user made a link to a directory
    /// elsewhere lists no service.
    #[test]
    fn services_are_listed_without_following_a_linked_directory() {
        let dir = tempfile::tempdir().unwrap();
        let elsewhere = dir.path().join("elsewhere");
        std::fs::create_dir(&elsewhere).unwrap();
        std::fs::write(elsewhere.join("x"), "#!/bin/sh\n").unwrap();
        let p = dir.path().join("part");
        std::fs::create_dir_all(p.join("etc/run")).unwrap();
        std::fs::write(p.join("etc/run/a"), "#!/bin/sh\n").unwrap();
        std::fs::create_dir(p.join("etc/run/subdir")).unwrap();
        std::os::unix::fs::symlink(&elsewhere, p.join("etc/service")).unwrap();
        let names: Vec<(String, bool)> = service_specs(&p)
            .into_iter()
            .map(|s| (s.name, s.watched))
            .collect();
        assert_eq!(names, vec![("a".to_string(), false)]);
        std::fs::create_dir_all(p.join("etc/promise")).unwrap();
        std::fs::remove_file(p.join("etc/service")).unwrap();
        std::fs::remove_dir(p.join("etc/promise")).unwrap();
        std::os::unix::fs::symlink(&elsewhere, p.join("etc/promise")).unwrap();
        assert!(promise::list(&p).is_empty());
    }
}
