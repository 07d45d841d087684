//! A partition as the master describes it (requested state, release, parameters, access
//! status), the errors of processing one, and what the agent reports of it: the
//! `softwareInstanceError` report and the agent's memory of the `started` reports.

use std::path::PathBuf;

use slapos_proto::marshal::Value;
use slapos_proto::slap::ComputerPartition;

use crate::client::SlapError;
use crate::node::{Node, NodeError};
use crate::promise;

#[derive(Debug, thiserror::Error)]
pub(super) enum PartitionError {
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
    pub(super) fn unreachable(&self) -> bool {
        matches!(self, PartitionError::Slap(e) if e.is_unreachable())
            || matches!(self, PartitionError::Node(NodeError::Slap(e)) if e.is_unreachable())
    }
}

impl From<crate::supervisor::SupervisorError> for PartitionError {
    fn from(e: crate::supervisor::SupervisorError) -> Self {
        PartitionError::Node(e.into())
    }
}

impl From<crate::limits::LimitsError> for PartitionError {
    fn from(e: crate::limits::LimitsError) -> Self {
        match e {
            crate::limits::LimitsError::Node(e) => PartitionError::Node(e),
            other => PartitionError::Failed(other.to_string()),
        }
    }
}

impl From<crate::process::ProcessError> for PartitionError {
    fn from(e: crate::process::ProcessError) -> Self {
        PartitionError::Node(e.into())
    }
}

/// Reports `message` to the master (`softwareInstanceError`); the partition's `started`
/// is then no longer known to the master.
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

pub(super) fn state_of(p: &ComputerPartition) -> &str {
    p.requested_state
        .get()
        .map(String::as_str)
        .unwrap_or("started")
}

pub(super) fn software_url(p: &ComputerPartition) -> Option<String> {
    p.software_release_document
        .get()
        .map(|d| d.software_release.clone())
        .filter(|u| !u.is_empty())
}

/// A parameter as the text Python's `str()` would give (timestamps come as strings from
/// the real master and as floats from slapproxy).
pub(super) fn value_text(v: &Value) -> Option<String> {
    match v {
        Value::Str(s) => Some(s.clone()),
        Value::Int(i) => Some(i.to_string()),
        Value::Long(s) => Some(s.clone()),
        Value::Float(f) => Some(slapos_proto::pyrepr::float_str(*f)),
        Value::Bool(b) => Some(if *b { "True" } else { "False" }.into()),
        _ => None,
    }
}

pub(super) fn parameter(p: &ComputerPartition, key: &str) -> Option<String> {
    p.parameter_dict
        .get()
        .and_then(|d| d.get(key))
        .and_then(value_text)
}

/// The access status text (`#access ...`, `#error ...`) when the master sends one.
pub(super) fn access_status(p: &ComputerPartition) -> Option<String> {
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

/// The agent's own memory of a partition, outside the partition (its user must not be
/// able to forge it): `IR/var/partitions/<pid>.reported` holds the timestamp for which
/// `started` was last reported.
fn reported_file(node: &Node, pid: &str) -> PathBuf {
    node.cfg
        .instance_root
        .join("var/partitions")
        .join(format!("{pid}.reported"))
}

pub(super) fn reported(node: &Node, pid: &str) -> Option<String> {
    std::fs::read_to_string(reported_file(node, pid)).ok()
}

pub(super) fn mark_reported(node: &Node, pid: &str, ts: Option<&str>) {
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
