//! Promises (slapgrid-behaviour.md 4.7): the executables of `P/etc/promise`, each run as
//! the partition's user with a timeout; exit 0 keeps the promise, anything else breaks
//! it. Results are written where monitoring stacks read them
//! (`P/.slapgrid/promise/{result,log,cache}`).
//!
//! Two modes, as the reference: after a start every promise runs (`force`); on an
//! unchanged partition (the anomaly check) a promise runs again only once its
//! periodicity (2 min) has passed, its last result standing in between, so a node with
//! hundreds of quiet partitions does not fork hundreds of checks every minute.
//! Plugin promises (`etc/plugin/*.py`) need the release's Python and slapos.core: they
//! are not run (DESIGN.md).

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::fsutil;
use crate::node::{io_err, now_unix, NodeError};
use crate::process::{Identity, Run};

/// The reference's default promise periodicity.
const PERIODICITY: u64 = 120;
/// Messages are cut to their last 5000 characters, as the reference does.
const MAX_MESSAGE: usize = 5000;

#[derive(Debug, Clone)]
pub struct PromiseFailure {
    pub name: String,
    pub message: String,
}

impl std::fmt::Display for PromiseFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Promise '{}' failed with output: {}",
            self.name, self.message
        )
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct Cache {
    next_run_after: u64,
    failed: bool,
    /// Failed runs in a row: the anomaly check breaks only from 3 on, as the reference's.
    #[serde(default)]
    failures: u32,
    message: String,
}

/// Where a promise's state lives, relative to the partition.
const STATE: &str = ".slapgrid/promise";
/// Largest cache file read back.
const MAX_CACHE: u64 = 64 << 10;
/// Each promise's log keeps this much of its tail.
const MAX_LOG: usize = 64 << 10;

/// The legacy promises of a partition, sorted by name: executable entries of
/// `etc/promise`, the directory reached without following a link (the partition is its
/// user's; each promise runs as that user).
pub fn list(partition: &Path) -> Vec<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let dir = partition.join("etc/promise");
    crate::fsutil::list_non_dirs_in(partition, Path::new("etc/promise"))
        .unwrap_or_default()
        .into_iter()
        .map(|name| dir.join(name))
        .filter(|p| {
            std::fs::metadata(p)
                .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
                .unwrap_or(false)
        })
        .collect()
}

/// Runs the partition's promises (in its cgroup, when it has one); the first broken one
/// is returned.
pub fn check(
    partition: &Path,
    identity: &Identity,
    cgroup: Option<&crate::cgroup::PartitionCgroup>,
    timeout: Duration,
    force: bool,
) -> Result<Option<PromiseFailure>, NodeError> {
    let promises = list(partition);
    if promises.is_empty() {
        return Ok(None);
    }
    // Written as root inside the partition: never through a link its user planted
    // (fsutil), and owned by that user so that its monitoring can read the results.
    let owner = crate::process::is_root().then_some((identity.uid, identity.gid));
    for sub in ["result", "log", "cache"] {
        let rel = Path::new(STATE).join(sub);
        fsutil::mkdir_in(partition, &rel, owner).map_err(io_err(&partition.join(&rel)))?;
    }
    let mut first_failure = None;
    for promise in promises {
        let title = promise
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let cache_rel = Path::new(STATE).join("cache").join(&title);
        let now = now_unix();
        let cached: Option<Cache> = fsutil::read_in(partition, &cache_rel, MAX_CACHE)
            .ok()
            .flatten()
            .and_then(|b| serde_json::from_slice(&b).ok());
        let previous_failures = cached.as_ref().map_or(0, |c| c.failures);
        let (failed, message) = match cached {
            Some(c) if !force && now < c.next_run_after => (c.failed && c.failures >= 3, c.message),
            _ => {
                let started = std::time::Instant::now();
                let out = Run::new(&promise, partition, &identity.home)
                    .as_user(identity.clone())
                    .in_cgroup(cgroup.cloned())
                    .timeout(Some(timeout))
                    .output();
                let (failed, mut message) = match out {
                    Err(e) => (true, e.to_string()),
                    Ok(o) if o.timed_out => (
                        true,
                        format!(
                            "Error: Promise timed out after {} seconds",
                            timeout.as_secs()
                        ),
                    ),
                    Ok(o) if o.success() => (false, o.output.trim().to_owned()),
                    Ok(o) => {
                        let text = o.output.trim();
                        if text.is_empty() {
                            (
                                true,
                                format!(
                                    "Error: No output returned by the promise ({})",
                                    o.describe()
                                ),
                            )
                        } else {
                            (true, text.to_owned())
                        }
                    }
                };
                if message.chars().count() > MAX_MESSAGE {
                    message = message
                        .chars()
                        .skip(message.chars().count() - MAX_MESSAGE)
                        .collect();
                }
                write_result(
                    partition,
                    owner,
                    &title,
                    &promise,
                    failed,
                    &message,
                    started.elapsed(),
                )?;
                let failures = if failed {
                    previous_failures.saturating_add(1)
                } else {
                    0
                };
                let cache = Cache {
                    next_run_after: now + PERIODICITY,
                    failed,
                    failures,
                    message: message.clone(),
                };
                let bytes = serde_json::to_vec(&cache).unwrap_or_default();
                fsutil::write_in(partition, &cache_rel, &bytes, 0o640, owner)
                    .map_err(io_err(&partition.join(&cache_rel)))?;
                // After a start every promise counts; on an unchanged partition a promise
                // breaks the partition once it failed 3 times in a row.
                (failed && (force || failures >= 3), message)
            }
        };
        if failed && first_failure.is_none() {
            first_failure = Some(PromiseFailure {
                name: title,
                message,
            });
        }
    }
    Ok(first_failure)
}

#[allow(clippy::too_many_arguments)]
fn write_result(
    partition: &Path,
    owner: Option<(u32, u32)>,
    title: &str,
    path: &Path,
    failed: bool,
    message: &str,
    took: Duration,
) -> Result<(), NodeError> {
    let date = chrono::DateTime::from_timestamp(now_unix() as i64, 0)
        .map(|t| t.format("%Y-%m-%dT%H:%M:%S+0000").to_string())
        .unwrap_or_default();
    let result = serde_json::json!({
        "title": title,
        "name": title,
        "path": path.display().to_string(),
        "execution-time": took.as_secs_f64(),
        "result": {
            "type": "Test Result",
            "failed": failed,
            "date": date,
            "message": message,
        },
    });
    let rel = Path::new(STATE)
        .join("result")
        .join(format!("{title}.status.json"));
    fsutil::write_in(partition, &rel, result.to_string().as_bytes(), 0o644, owner)
        .map_err(io_err(&partition.join(&rel)))?;
    let level = if failed { "ERROR" } else { "INFO" };
    let line = format!(
        "{} - {level} - {}\n",
        chrono::DateTime::from_timestamp(now_unix() as i64, 0)
            .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
            .unwrap_or_default(),
        message.replace('\n', " ")
    );
    let log = Path::new(STATE).join("log").join(format!("{title}.log"));
    if let Err(e) = fsutil::append_in(partition, &log, line.as_bytes(), MAX_LOG, owner) {
        tracing::warn!(error = %e, "promise log not written");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    /// Whom promises run as in a test: `nobody` as root (root is refused), else ourselves;
    /// the tree is handed to that user.
    fn runner(dir: &Path) -> Identity {
        if !crate::process::is_root() {
            return Identity::current();
        }
        let nobody = Identity::by_name("nobody").expect("user nobody");
        let mut stack = vec![dir.to_owned()];
        while let Some(p) = stack.pop() {
            std::os::unix::fs::chown(&p, Some(nobody.uid), Some(nobody.gid)).unwrap();
            if p.is_dir() {
                stack.extend(std::fs::read_dir(&p).unwrap().map(|e| e.unwrap().path()));
            }
        }
        nobody
    }

    fn promise(dir: &Path, name: &str, body: &str) {
        let p = dir.join("etc/promise").join(name);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    #[test]
    fn a_failing_promise_is_reported_with_its_output_and_results_are_written() {
        let dir = tempfile::tempdir().unwrap();
        promise(dir.path(), "a-ok", "echo fine");
        promise(dir.path(), "b-bad", "echo port 80 closed; exit 1");
        let me = runner(dir.path());
        let failure = check(dir.path(), &me, None, Duration::from_secs(5), true)
            .unwrap()
            .unwrap();
        assert_eq!(failure.name, "b-bad");
        assert_eq!(failure.message, "port 80 closed");
        let result: serde_json::Value = serde_json::from_slice(
            &std::fs::read(
                dir.path()
                    .join(".slapgrid/promise/result/b-bad.status.json"),
            )
            .unwrap(),
        )
        .unwrap();
        assert_eq!(result["result"]["failed"], true);
        assert_eq!(result["title"], "b-bad");
    }

    #[test]
    fn timeouts_fail_and_the_anomaly_check_needs_three_failures_and_uses_the_cache() {
        let dir = tempfile::tempdir().unwrap();
        promise(dir.path(), "slow", "sleep 5");
        let me = runner(dir.path());
        let f = check(dir.path(), &me, None, Duration::from_millis(200), true)
            .unwrap()
            .unwrap();
        assert!(f.message.contains("timed out"), "{}", f.message);
        // One failure does not yet break an unchanged partition (the anomaly check needs
        // 3 in a row); the third does, and the cached result stands until the
        // periodicity passes, even once the promise is fixed.
        assert!(
            check(dir.path(), &me, None, Duration::from_millis(200), false)
                .unwrap()
                .is_none()
        );
        for _ in 0..2 {
            check(dir.path(), &me, None, Duration::from_millis(200), true).unwrap();
        }
        promise(dir.path(), "slow", "exit 0");
        assert!(check(dir.path(), &me, None, Duration::from_secs(5), false)
            .unwrap()
            .is_some());
        assert!(check(dir.path(), &me, None, Duration::from_secs(5), true)
            .unwrap()
            .is_none());
    }
}
