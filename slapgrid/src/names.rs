//! Names that come from the master and end up in paths, users and headers on the node:
//! checked here, below every module that uses them.

/// A partition id usable as a file name: letters, digits, `_`, `-` and `.` (not first).
pub fn valid_partition_id(pid: &str) -> bool {
    !pid.is_empty()
        && pid.len() <= 255
        && !pid.starts_with('.')
        && pid
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.')
}
