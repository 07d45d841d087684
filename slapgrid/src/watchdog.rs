//! The watchdog (slapgrid-behaviour.md 4.10): a watched service (`etc/service`) that
//! exits makes the agent bang its instance, once per deployment, so the master bumps the
//! instance's timestamp and the node reprocesses it. The reference runs this as a
//! supervisord event listener; ours is a hook of our own supervisor.

use std::path::Path;

use crate::client::SlapClient;
use crate::fsutil::{read_text_in, write_in};
use crate::supervisor::WatchedExitHook;
use crate::NodeConfig;

/// Whether the partition already banged since its last successful deployment: the bang
/// file exists and there is no `.timestamp`, or the deployment is not newer than the bang.
pub fn already_banged(partition: &Path) -> bool {
    // Read as root in a partition-owned directory: never through a link (fsutil).
    let Some(bang) = read_text_in(partition, ".slapos_latest_bang_timestamp") else {
        return false;
    };
    match read_text_in(partition, ".timestamp") {
        None => true,
        Some(deployed) => {
            // Timestamps are integers from the real master, floats from slapproxy.
            let num = |s: &str| s.trim().parse::<f64>().unwrap_or(0.0);
            num(&deployed) <= num(&bang)
        }
    }
}

/// Bangs `partition_id` for `process` unless it already did for this deployment.
pub fn bang(cfg: &NodeConfig, client: &SlapClient, partition_id: &str, process: &str) {
    let path = cfg.partition_path(partition_id);
    if already_banged(&path) {
        tracing::info!(
            partition_id,
            process,
            "exited again; already banged for this deployment"
        );
        return;
    }
    let message = format!("{process} process in partition {partition_id} encountered a problem");
    let cid = cfg.computer_id.as_str();
    match client.post(
        "softwareInstanceBang",
        &[
            ("computer_id", cid),
            ("computer_partition_id", partition_id),
            ("message", &message),
        ],
        Some((cid, partition_id)),
    ) {
        Ok(_) => {
            tracing::warn!(partition_id, process, "service exited: instance banged");
            let deployed = read_text_in(&path, ".timestamp").unwrap_or_else(|| "0".into());
            if let Err(e) = write_in(
                &path,
                Path::new(".slapos_latest_bang_timestamp"),
                deployed.as_bytes(),
                0o644,
                None,
            ) {
                tracing::warn!(error = %e, "could not record the bang");
            }
        }
        Err(e) => tracing::warn!(partition_id, process, error = %e, "could not bang the master"),
    }
}

/// The supervisor's hook for watched services.
pub fn hook(cfg: NodeConfig) -> Result<WatchedExitHook, crate::client::SlapError> {
    let client = SlapClient::from_config(&cfg)?;
    Ok(Box::new(move |partition: &str, process: &str| {
        bang(&cfg, &client, partition, process)
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_bang_per_deployment() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path();
        assert!(!already_banged(p));
        std::fs::write(p.join(".slapos_latest_bang_timestamp"), "0").unwrap();
        assert!(already_banged(p), "no deployment since the bang");
        std::fs::write(p.join(".timestamp"), "1795626938.83").unwrap();
        assert!(!already_banged(p), "deployed after the bang");
        std::fs::write(p.join(".slapos_latest_bang_timestamp"), "1795626938.83").unwrap();
        assert!(already_banged(p));
    }
}
