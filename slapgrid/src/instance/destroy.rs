//! Destruction (slapgrid-behaviour.md 5.3): the retention delay, the `sbin/destroy` hook
//! as the partition's user, every process of that user killed, the partition emptied
//! (its `.slapos-resource` kept) and `destroyedComputerPartition` reported.

use std::path::Path;

use super::partition::{report_error, PartitionError};
use crate::fsutil::{self, read_text_in, write_in};
use crate::node::{empty_dir, io_err, now_unix, Node, NodeError};
use crate::process::{self, Identity, Run};

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
fn kill_all_processes_of(node: &Node, pid: &str, identity: &Identity) {
    let out = Run::new("/bin/sh", "/", &identity.home)
        .in_cgroup(crate::limits::existing_cgroup(node, pid))
        .arg("-c")
        .arg("kill -KILL -1")
        .as_user(identity.clone())
        .timeout(Some(std::time::Duration::from_secs(10)))
        .output();
    tracing::info!(user = %identity.name, ?out, "killed every process of the partition user");
}

pub(super) fn destroy(
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
            .in_cgroup(crate::limits::existing_cgroup(node, pid))
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
        kill_all_processes_of(node, pid, identity);
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
