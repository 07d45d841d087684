//! `slapos node instance` (slapgrid-behaviour.md 4): every partition the master lists is
//! skipped when its timestamp is unchanged and its periodicity has not expired, else its
//! instance profile runs as the partition's user (buildout: the profile plus the tail of
//! 4.3; native: rendered files), its services are handed to the supervisor, its promises
//! are checked, and its state is reported. One partition at a time; one failing never
//! stops the others.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use slapos_proto::marshal::{self, Value};
use slapos_proto::slap::ComputerPartition;

use crate::client::SlapError;
use crate::fsutil::{self, read_text_in, write_in};
use crate::native::{self, Manifest};
use crate::node::{empty_dir, io_err, now_unix, Node, NodeError};
use crate::process::{self, Identity, Run};
use crate::promise;
use crate::software::release_path;
use crate::supervisor::{GroupSpec, ServiceSpec};

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

#[derive(Debug, thiserror::Error)]
enum PartitionError {
    #[error("{0}")]
    Promise(promise::PromiseFailure),
    #[error("{0}")]
    Failed(String),
    #[error(transparent)]
    Node(#[from] NodeError),
    #[error(transparent)]
    Slap(#[from] SlapError),
}

impl PartitionError {
    fn unreachable(&self) -> bool {
        matches!(self, PartitionError::Slap(e) if e.is_unreachable())
            || matches!(self, PartitionError::Node(NodeError::Slap(e)) if e.is_unreachable())
    }
}

impl From<crate::supervisor::SupervisorError> for PartitionError {
    fn from(e: crate::supervisor::SupervisorError) -> Self {
        PartitionError::Node(e.into())
    }
}

impl From<crate::process::ProcessError> for PartitionError {
    fn from(e: crate::process::ProcessError) -> Self {
        PartitionError::Node(e.into())
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

/// A partition id usable as a file name: letters, digits, `_`, `-` and `.` (not first).
pub fn valid_partition_id(pid: &str) -> bool {
    !pid.is_empty()
        && pid.len() <= 255
        && !pid.starts_with('.')
        && pid
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.')
}

pub(crate) fn report_error(node: &Node, pid: &str, message: &str) {
    clear_reported(node, pid);
    let cid = node.cfg.computer_id.as_str();
    if let Err(e) = node.client.post(
        "softwareInstanceError",
        &[
            ("computer_id", cid),
            ("computer_partition_id", pid),
            ("error_log", message),
        ],
        Some((cid, pid)),
    ) {
        tracing::warn!(error = %e, "could not report the error to the master");
    }
}

fn state_of(p: &ComputerPartition) -> &str {
    p.requested_state
        .get()
        .map(String::as_str)
        .unwrap_or("started")
}

fn software_url(p: &ComputerPartition) -> Option<String> {
    p.software_release_document
        .get()
        .map(|d| d.software_release.clone())
        .filter(|u| !u.is_empty())
}

/// A parameter as the text Python's `str()` would give (timestamps come as strings from
/// the real master and as floats from slapproxy).
fn value_text(v: &Value) -> Option<String> {
    match v {
        Value::Str(s) => Some(s.clone()),
        Value::Int(i) => Some(i.to_string()),
        Value::Long(s) => Some(s.clone()),
        Value::Float(f) => Some(slapos_proto::pyrepr::float_str(*f)),
        Value::Bool(b) => Some(if *b { "True" } else { "False" }.into()),
        _ => None,
    }
}

fn parameter(p: &ComputerPartition, key: &str) -> Option<String> {
    p.parameter_dict
        .get()
        .and_then(|d| d.get(key))
        .and_then(value_text)
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

/// The access status text (`#access ...`, `#error ...`) when the master sends one.
fn access_status(p: &ComputerPartition) -> Option<String> {
    p.access_status.get().cloned().or_else(|| {
        p.extra.iter().find_map(|(k, v)| match (k.as_str(), v) {
            ("_access_status", Value::Dict(d)) => d.iter().find_map(|(k, v)| match (k, v) {
                (Value::Str(k), Value::Str(t)) if k == "text" => Some(t.clone()),
                _ => None,
            }),
            _ => None,
        })
    })
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
                    skip_check(node, partition, path, &identity, ts)?;
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
    match state {
        "started" => {
            let result = (|| -> Result<(), PartitionError> {
                let profile = install(node, partition, path, sr.as_deref(), &identity)?;
                start(node, pid, path, &identity)?;
                if let Some(f) = promise::check(path, &identity, cfg.promise_timeout, true)? {
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
            let installed = install(node, partition, path, sr.as_deref(), &identity);
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
    match promise::check(path, identity, node.cfg.promise_timeout, false)? {
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

/// The agent's own memory of a partition, outside the partition (its user must not be
/// able to forge it): `IR/var/partitions/<pid>.reported` holds the timestamp for which
/// `started` was last reported.
fn reported_file(node: &Node, pid: &str) -> PathBuf {
    node.cfg
        .instance_root
        .join("var/partitions")
        .join(format!("{pid}.reported"))
}

fn reported(node: &Node, pid: &str) -> Option<String> {
    std::fs::read_to_string(reported_file(node, pid)).ok()
}

fn mark_reported(node: &Node, pid: &str, ts: Option<&str>) {
    if let Some(ts) = ts {
        let file = reported_file(node, pid);
        if let Some(dir) = file.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        let _ = crate::node::write_atomic(&file, ts.as_bytes(), 0o600);
    }
}

fn clear_reported(node: &Node, pid: &str) {
    let _ = std::fs::remove_file(reported_file(node, pid));
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

enum Profile {
    Buildout,
    Native(Box<Manifest>, BTreeMap<String, String>),
}

/// Runs the instance profile (4.3), buildout or native.
fn install(
    node: &Node,
    partition: &ComputerPartition,
    path: &Path,
    sr: Option<&Path>,
    identity: &Identity,
) -> Result<Profile, PartitionError> {
    let cfg = &node.cfg;
    let pid = partition.partition_id.as_str();
    let sr = sr.ok_or_else(|| {
        PartitionError::Failed(format!("partition {pid} has no software release"))
    })?;
    crate::node::check_free_space(path, cfg.instance_min_free_space, "the instance")?;
    let mode = std::fs::metadata(path)
        .map_err(io_err(path))?
        .permissions()
        .mode()
        & 0o7777;
    if mode != 0o750 {
        return Err(PartitionError::Failed(format!(
            "Wrong permissions in {}: actual permissions are: 0{mode:o}, wanted are 0750",
            path.display()
        )));
    }
    if !sr.is_dir() {
        return Err(PartitionError::Failed(format!(
            "Software Release {} is not present on this computer (not installed yet?)",
            sr.display()
        )));
    }
    // P/software_release -> SR (replaced if a link, left alone if something else).
    let link = path.join("software_release");
    match std::fs::symlink_metadata(&link) {
        Ok(m) if m.file_type().is_symlink() => {
            if std::fs::read_link(&link).ok().as_deref() != Some(sr) {
                std::fs::remove_file(&link).map_err(io_err(&link))?;
                std::os::unix::fs::symlink(sr, &link).map_err(io_err(&link))?;
            }
        }
        Ok(_) => {}
        Err(_) => std::os::unix::fs::symlink(sr, &link).map_err(io_err(&link))?,
    }
    if process::is_root() {
        let _ = process::lchown(&link, identity.uid, identity.gid);
    }
    if let Some(manifest) = installed_manifest(sr)? {
        let vars = variables(node, partition, path, sr);
        let owner = process::is_root().then_some((identity.uid, identity.gid));
        for (rel, text, mode) in render_native(sr, &manifest, &vars)? {
            write_in(path, &rel, text.as_bytes(), mode, owner).map_err(io_err(&path.join(&rel)))?;
        }
        return Ok(Profile::Native(Box::new(manifest), vars));
    }
    buildout_instance(node, partition, path, sr, identity)?;
    // The retention delay the master asked for (in days), kept for destruction.
    let delay = partition
        .filter_dict
        .get()
        .and_then(|d| d.get("retention_delay"))
        .and_then(value_text)
        .and_then(|t| t.parse::<f64>().ok())
        .unwrap_or(0.0);
    let lock = path.join(".slapos-retention-lock-delay");
    if !lock.exists() {
        let _ = write_in(
            path,
            Path::new(".slapos-retention-lock-delay"),
            format!("{delay:?}").as_bytes(),
            0o644,
            None,
        );
    }
    let _ = cfg;
    Ok(Profile::Buildout)
}

/// Largest manifest, template or buildout profile read from an installed release.
const MAX_RELEASE_TEXT: u64 = 16 << 20;

/// A file of the installed release, as text. The release directory is the software
/// user's: root reads it without following a link (a template linked to a key of the
/// node is refused, never rendered into the partition). `None`: absent.
fn release_file(sr: &Path, rel: &Path) -> Result<Option<String>, PartitionError> {
    match fsutil::read_in(sr, rel, MAX_RELEASE_TEXT) {
        Ok(Some(bytes)) => String::from_utf8(bytes)
            .map(Some)
            .map_err(|_| PartitionError::Failed(format!("{}: not UTF-8", sr.join(rel).display()))),
        Ok(None) => Ok(None),
        Err(e) => Err(io_err(&sr.join(rel))(e).into()),
    }
}

/// The native manifest of the release installed at `sr` (`None`: a buildout release).
fn installed_manifest(sr: &Path) -> Result<Option<Manifest>, PartitionError> {
    release_file(sr, Path::new(native::INSTALLED_MANIFEST))?
        .map(|text| Manifest::parse(&text).map_err(|e| PartitionError::Failed(e.to_string())))
        .transpose()
}

/// The software type of the instance `vars` describe (the master's `slap_software_type`).
fn software_type(vars: &BTreeMap<String, String>) -> &str {
    vars.get("software_type")
        .map(String::as_str)
        .filter(|t| !t.is_empty())
        .unwrap_or(native::DEFAULT_SOFTWARE_TYPE)
}

/// The instance files of a native release rendered with `vars`, those of the instance's
/// software type: (path in the partition, content, mode). Typed parameters are checked
/// first, whether a file uses them or not.
fn render_native(
    sr: &Path,
    manifest: &Manifest,
    vars: &BTreeMap<String, String>,
) -> Result<Vec<(PathBuf, String, u32)>, PartitionError> {
    let failed = |e: native::NativeError| PartitionError::Failed(e.to_string());
    let files = manifest.files_for(software_type(vars)).map_err(failed)?;
    manifest.check_parameters(vars).map_err(failed)?;
    let mut out = Vec::new();
    for file in files {
        let template = match &file.template {
            Some(t) => {
                let rel = native::safe_relative(t).unwrap_or_default();
                Some(release_file(sr, &rel)?.ok_or_else(|| {
                    PartitionError::Failed(format!("template {t} is missing from {}", sr.display()))
                })?)
            }
            None => None,
        };
        let text = manifest
            .render_file(file, template.as_deref(), vars)
            .map_err(failed)?;
        let mode = file
            .mode
            .as_deref()
            .and_then(native::parse_mode)
            .unwrap_or(0o640);
        out.push((
            native::safe_relative(&file.path).unwrap_or_default(),
            text,
            mode,
        ));
    }
    Ok(out)
}

fn buildout_instance(
    node: &Node,
    partition: &ComputerPartition,
    path: &Path,
    sr: &Path,
    identity: &Identity,
) -> Result<(), PartitionError> {
    let cfg = &node.cfg;
    let pid = partition.partition_id.as_str();
    // Files of the software user's directory, read by root: never through a link.
    let mut profile = None;
    for name in ["instance.cfg", "template.cfg"] {
        if let Some(text) = release_file(sr, Path::new(name))? {
            profile = Some(text);
            break;
        }
    }
    let mut text = profile.ok_or_else(|| {
        PartitionError::Failed(format!(
            "Software Release {} is not correctly installed (no instance.cfg)",
            sr.display()
        ))
    })?;
    text.push_str("\n\n");
    text.push_str(&buildout_tail(node, partition));
    let owner = process::is_root().then_some((0, identity.gid));
    write_in(
        path,
        Path::new("buildout.cfg"),
        text.as_bytes(),
        0o640,
        owner,
    )
    .map_err(io_err(&path.join("buildout.cfg")))?;
    let buildout = sr.join("bin/buildout");
    let words = fsutil::read_head_in(sr, Path::new("bin/buildout"), 512)
        .ok()
        .and_then(|head| process::shebang_words(&head))
        .ok_or_else(|| {
            PartitionError::Failed(format!(
                "{} is missing or has no #! line",
                buildout.display()
            ))
        })?;
    let mut run = Run::new(&words[0], path, path);
    for w in &words[1..] {
        run = run.arg(w);
    }
    let out = run
        .arg(&buildout)
        .arg("-U")
        .env("SLAPGRID_INSTANCE_ROOT", &cfg.instance_root)
        .as_user(identity.clone())
        .timeout(cfg.partition_timeout)
        .output()?;
    tracing::debug!(output = %out.output, "instance buildout");
    if !out.success() {
        return Err(PartitionError::Failed(format!(
            "Failed to run buildout profile in directory '{}':\n{}\n",
            path.display(),
            out.output
        )));
    }
    let _ = pid;
    Ok(())
}

/// The tail slapgrid appends to the instance profile (4.3 step 6).
fn buildout_tail(node: &Node, partition: &ComputerPartition) -> String {
    let cfg = &node.cfg;
    let pid = partition.partition_id.as_str();
    let (key, cert) = cfg
        .partition_certificate_paths(pid)
        .map(|(k, c)| (k.display().to_string(), c.display().to_string()))
        .unwrap_or_default();
    let list = |items: &[String]| items.iter().map(|i| format!("\n  {i}")).collect::<String>();
    let url = software_url(partition).unwrap_or_default();
    let master = cfg.master_urls.first().cloned().unwrap_or_default();
    let master = master.trim_end_matches('/');
    format!(
        "# This part was generated by slapgrid (slapos-rs) and overrides the profile above.\n\
         [buildout]\nbin-directory = ${{buildout:directory}}/sbin\noffline = true\n\n\
         [slap-connection]\ncomputer-id = {cid}\npartition-id = {pid}\nserver-url = {master}\n\
         software-release-url = {url}\nkey-file = {key}\ncert-file = {cert}\n\
         shared-part-list = {shared}\nbuild-time-part-list = {build}\nrequested-state = {state}\n\n\
         [slap_connection]\ncomputer_id = {cid}\npartition_id = {pid}\nserver_url = {master}\n\
         software_release_url = {url}\nkey_file = {key}\ncert_file = {cert}\n\n\
         [storage-configuration]\nstorage-home = {storage}\n\n\
         [network-information]\nglobal-ipv4-network = {ipv4}\n\
         # End of the part generated by slapgrid.\n",
        cid = cfg.computer_id,
        shared = list(&cfg.shared_part_list),
        build = list(&cfg.build_time_part_list),
        state = state_of(partition),
        storage = cfg
            .instance_storage_home
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_default(),
        ipv4 = cfg.ipv4_global_network.clone().unwrap_or_default(),
    )
}

/// The variables a native template may use (DESIGN.md lists them).
fn variables(
    node: &Node,
    partition: &ComputerPartition,
    path: &Path,
    sr: &Path,
) -> BTreeMap<String, String> {
    let cfg = &node.cfg;
    let pid = partition.partition_id.as_str();
    let mut vars = BTreeMap::new();
    let mut set = |k: &str, v: String| {
        vars.insert(k.to_owned(), v);
    };
    set("computer_id", cfg.computer_id.clone());
    set("partition_id", pid.to_owned());
    set("partition_path", path.display().to_string());
    set("software_path", sr.display().to_string());
    set(
        "software_release_url",
        software_url(partition).unwrap_or_default(),
    );
    set("requested_state", state_of(partition).to_owned());
    set(
        "master_url",
        cfg.master_urls.first().cloned().unwrap_or_default(),
    );
    set("instance_root", cfg.instance_root.display().to_string());
    if let Some((k, c)) = cfg.partition_certificate_paths(pid) {
        set("key_file", k.display().to_string());
        set("cert_file", c.display().to_string());
    }
    if let Some(guid) = partition.instance_guid.get() {
        set("instance_guid", guid.clone());
    }
    let params = partition.parameter_dict.get();
    for (key, name) in [
        ("instance_title", "instance_title"),
        ("root_instance_title", "root_instance_title"),
        ("slap_software_type", "software_type"),
        ("timestamp", "timestamp"),
    ] {
        if let Some(v) = params.and_then(|d| d.get(key)).and_then(value_text) {
            set(name, v);
        }
    }
    // Addresses: the master's ip_list, (interface, address) pairs.
    if let Some(Value::List(ips)) = params.and_then(|d| d.get("ip_list")) {
        for ip in ips {
            if let Value::Tuple(t) | Value::List(t) = ip {
                if let Some(Value::Str(addr)) = t.get(1) {
                    let key = if addr.contains(':') { "ipv6" } else { "ipv4" };
                    vars.entry(key.to_owned()).or_insert_with(|| addr.clone());
                }
            }
        }
    }
    if let Some(d) = params {
        for (k, v) in d {
            if let Some(text) = value_text(v) {
                vars.insert(format!("param.{k}"), text);
            }
        }
        // JSON-in-XML parameters: one `_` key holding a JSON object.
        if let Some(Value::Str(json)) = d.get("_") {
            if let Ok(serde_json::Value::Object(map)) = serde_json::from_str(json) {
                for (k, v) in map {
                    let text = match v {
                        serde_json::Value::String(s) => s,
                        other => other.to_string(),
                    };
                    vars.insert(format!("param.{k}"), text);
                }
            }
        }
    }
    vars
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

/// The services of `etc/run` and `etc/service`, handed to the supervisor (4.4).
fn start(node: &Node, pid: &str, path: &Path, identity: &Identity) -> Result<(), PartitionError> {
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
        .render_connection(software_type(vars), vars)
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

/// 5.3: retention, the destroy hook, the wipe, the report. `Ok(false)`: not yet (a
/// retention delay runs, or the hook failed and was reported).
pub(crate) fn destroy_partition(node: &Node, pid: &str, path: &Path) -> Result<bool, NodeError> {
    let identity = Identity::owner_of(path).map_err(io_err(path))?;
    match destroy(node, pid, path, &identity) {
        Ok(done) => Ok(done),
        Err(PartitionError::Node(e)) => Err(e),
        Err(PartitionError::Slap(e)) => Err(e.into()),
        Err(e) => Err(NodeError::Invalid(e.to_string())),
    }
}

/// How long a `sbin/destroy` hook may run when no `partition_timeout` is configured.
const DESTROY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(600);

/// `kill -KILL -1` as the user: every process of that uid, and nothing else.
fn kill_all_processes_of(identity: &Identity) {
    let out = Run::new("/bin/sh", "/", &identity.home)
        .arg("-c")
        .arg("kill -KILL -1")
        .as_user(identity.clone())
        .timeout(Some(std::time::Duration::from_secs(10)))
        .output();
    tracing::info!(user = %identity.name, ?out, "killed every process of the partition user");
}

fn destroy(
    node: &Node,
    pid: &str,
    path: &Path,
    identity: &Identity,
) -> Result<bool, PartitionError> {
    if process::is_root() && (identity.uid == 0 || identity.gid == 0) {
        return Err(PartitionError::Failed(format!(
            "{} is owned by root: refusing to wipe it",
            path.display()
        )));
    }
    let cfg = &node.cfg;
    node.supervisor.remove(pid)?;
    // Retention (days, from the filter): the partition is kept until the lock date.
    let delay: f64 = read_text_in(path, ".slapos-retention-lock-delay")
        .and_then(|t| t.trim().parse().ok())
        .unwrap_or(0.0);
    if delay > 0.0 {
        let until = match read_text_in(path, ".slapos-retention-lock-date")
            .and_then(|t| t.trim().parse::<f64>().ok())
        {
            Some(d) => d,
            None => {
                let d = now_unix() as f64 + delay * 86400.0;
                let _ = write_in(
                    path,
                    Path::new(".slapos-retention-lock-date"),
                    format!("{d}").as_bytes(),
                    0o644,
                    None,
                );
                d
            }
        };
        if (now_unix() as f64) < until {
            tracing::info!(until, "retention delay: partition kept for now");
            return Ok(false);
        }
    }
    let hook = path.join("sbin/destroy");
    if std::fs::symlink_metadata(&hook).is_ok() {
        let out = Run::new(&hook, path, &identity.home)
            .as_user(identity.clone())
            .timeout(Some(cfg.partition_timeout.unwrap_or(DESTROY_TIMEOUT)))
            .output()?;
        if !out.success() {
            let message = format!(
                "Destroy script {} failed ({}):\n{}",
                hook.display(),
                out.describe(),
                out.output
            );
            report_error(node, pid, &message);
            return Ok(false);
        }
    }
    if let Some((key, cert)) = cfg.partition_certificate_paths(pid) {
        // With a renewal a crash may have left staged.
        for f in [&key, &cert] {
            let _ = std::fs::remove_file(f);
            let mut staged = f.clone().into_os_string();
            staged.push(".next");
            let _ = std::fs::remove_file(staged);
        }
    }
    // Everything of the instance goes; `.slapos-resource` describes the partition itself
    // (format writes it) and stays.
    // Only the agent's own file is kept (the partition user could have replaced it).
    let resource = fsutil::read_owned_in(
        path,
        Path::new(".slapos-resource"),
        1 << 16,
        Identity::current().uid,
    )
    .ok()
    .flatten();
    // Nothing of the old tenant may keep running (or keep writing while the partition
    // is emptied): every process of the partition's user is killed first.
    if process::is_root() && identity.uid != Identity::current().uid {
        kill_all_processes_of(identity);
    }
    empty_dir(path).map_err(io_err(path))?;
    if let Some(bytes) = resource {
        let _ = write_in(path, Path::new(".slapos-resource"), &bytes, 0o644, None);
    }
    let cid = cfg.computer_id.as_str();
    match node.client.post(
        "destroyedComputerPartition",
        &[("computer_id", cid), ("computer_partition_id", pid)],
        Some((cid, pid)),
    ) {
        Ok(_) => {}
        Err(e) if e.is_unreachable() => return Err(e.into()),
        Err(e) => tracing::warn!(error = %e, "destroyedComputerPartition refused"),
    }
    tracing::info!("partition destroyed and wiped");
    Ok(true)
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
        if let Some(f) = promise::check(&path, &identity, cfg.promise_timeout, true)? {
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

    /// A release directory is the software user's: a template (or the manifest itself)
    /// it turned into a link to a file of the node's is refused, never rendered into the
    /// partition where the partition user would read it.
    #[test]
    fn release_files_read_by_root_never_follow_a_link() {
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("computer.key");
        std::fs::write(&secret, "PRIVATE KEY").unwrap();
        let sr = dir.path().join("sr");
        std::fs::create_dir(&sr).unwrap();
        let manifest = "[release]\nname = \"t\"\n\n[[instance.file]]\npath = \"etc/k\"\n\
                        kind = \"plain\"\ntemplate = \"k.in\"\n";
        std::fs::write(sr.join("software.toml"), manifest).unwrap();
        std::os::unix::fs::symlink(&secret, sr.join("k.in")).unwrap();
        let m = installed_manifest(&sr).unwrap().unwrap();
        let err = render_native(&sr, &m, &BTreeMap::new())
            .unwrap_err()
            .to_string();
        assert!(err.contains("k.in") && !err.contains("PRIVATE"), "{err}");

        // A plain template renders.
        std::fs::remove_file(sr.join("k.in")).unwrap();
        std::fs::write(sr.join("k.in"), "x={{x}}\n").unwrap();
        let vars = BTreeMap::from([("x".to_string(), "1".to_string())]);
        let files = render_native(&sr, &m, &vars).unwrap();
        assert_eq!(
            files,
            vec![(PathBuf::from("etc/k"), "x=1\n".to_string(), 0o640)]
        );

        // The manifest itself as a link.
        std::fs::rename(sr.join("software.toml"), dir.path().join("m.toml")).unwrap();
        std::os::unix::fs::symlink(dir.path().join("m.toml"), sr.join("software.toml")).unwrap();
        assert!(installed_manifest(&sr).is_err());
        // The release directory itself as a link (made by its owner in the software root).
        let linked = dir.path().join("linked");
        std::os::unix::fs::symlink(dir.path(), &linked).unwrap();
        assert!(installed_manifest(&linked).is_err());
    }

    /// A partition gets the files of its instance's software type (the master's
    /// `slap_software_type`), and an instance of a type the release does not deploy is
    /// refused before any file is written.
    #[test]
    fn a_partition_gets_the_files_of_its_software_type() {
        let dir = tempfile::tempdir().unwrap();
        let sr = dir.path().join("sr");
        std::fs::create_dir(&sr).unwrap();
        let manifest = "[release]\nname = \"t\"\n\n\
                        [[instance.file]]\npath = \"etc/ca\"\nkind = \"plain\"\ncontent = \"ca\"\n\n\
                        [[instance.file]]\npath = \"etc/key\"\nkind = \"plain\"\n\
                        software_types = [\"replica\"]\ncontent = \"replica key\"\n\n\
                        [[instance.file]]\npath = \"etc/conf\"\nkind = \"plain\"\n\
                        software_types = [\"gateway\"]\ncontent = \"gateway\"\n";
        std::fs::write(sr.join("software.toml"), manifest).unwrap();
        let m = installed_manifest(&sr).unwrap().unwrap();
        let of = |software_type: &str| {
            let vars = BTreeMap::from([("software_type".to_string(), software_type.to_string())]);
            render_native(&sr, &m, &vars).map(|files| {
                files
                    .into_iter()
                    .map(|(p, text, _)| format!("{}={text}", p.display()))
                    .collect::<Vec<_>>()
            })
        };
        assert_eq!(of("replica").unwrap(), ["etc/ca=ca", "etc/key=replica key"]);
        assert_eq!(of("gateway").unwrap(), ["etc/ca=ca", "etc/conf=gateway"]);
        // The master names no type: `default`, which this release does not deploy.
        for other in ["", "default", "Replica"] {
            let err = of(other).unwrap_err().to_string();
            assert!(err.contains("gateway, replica"), "{other:?}: {err}");
        }
    }
}
