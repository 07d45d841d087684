//! Disk use of a tree: what the usage report and the disk limit both measure.

use std::path::Path;

use crate::process::Identity;

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

/// A partition's disk use, walked as the partition's user (root never walks a tree its
/// user can change under it; it would see no more than the user can anyway).
pub fn partition_disk_bytes(owner: &Identity, path: &Path) -> u64 {
    crate::process::run_as(owner, || disk_bytes(path)).unwrap_or_else(|e| {
        tracing::warn!(path = %path.display(), error = %e, "disk use not measured");
        0
    })
}
