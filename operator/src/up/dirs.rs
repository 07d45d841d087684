//! Where a local cluster's files go. Everything goes into the directory the user chose,
//! except, as root, what the partitions' users and the nodes' software users must reach
//! (the nodes' software and instance roots, and the releases they install): a user
//! reaches a file only through directories that let it through, so when a directory
//! above the chosen one is closed to other users (anything under `/root`, which Debian
//! makes 0700, or a `mktemp -d` directory) those go to a directory of the cluster's own
//! under [`OUTSIDE`] instead, removed when the cluster stops. Without this, a partition's
//! promise fails with "Permission denied" and whatever waits for it waits in vain.

use crate::error::OperatorError;
use crate::files;
use std::path::{Path, PathBuf};

/// Where the partitions of clusters whose directory other users cannot reach go, one
/// directory per `slapos up` (named after its pid).
pub(crate) const OUTSIDE: &str = "/var/lib/slapos-up";

/// A local cluster's directories.
pub(crate) struct Dirs {
    /// The nodes' software and instance roots and the releases: the directory the user
    /// chose (where everything else goes: configurations, the seed's data,
    /// certificates, logs, the nodes' own files, cluster.json), or the
    /// cluster's own directory under [`OUTSIDE`] (then `outside` is true).
    pub shared: PathBuf,
    pub outside: bool,
    /// Why `shared` is not `dir`: the directory above it that is closed, and its mode.
    pub closed: Option<(PathBuf, u32)>,
}

/// The first directory of `path` and above it that other users may not enter, with its
/// mode.
fn closed_above(path: &Path) -> Result<Option<(PathBuf, u32)>, OperatorError> {
    let real = std::fs::canonicalize(path).map_err(OperatorError::io("resolve", path))?;
    for d in real.ancestors() {
        let mode = files::mode(d)?;
        if mode & 0o001 == 0 {
            return Ok(Some((d.to_path_buf(), mode & 0o7777)));
        }
    }
    Ok(None)
}

/// Makes `dir` (absolute) and, with `partition_users` (root, nodes to format), opens it
/// and the directories made for it to other users (the search bit only) and finds where
/// the partitions can go.
pub(crate) fn prepare(dir: &Path, partition_users: bool) -> Result<Dirs, OperatorError> {
    let made: Vec<PathBuf> = dir
        .ancestors()
        .take_while(|a| !a.exists())
        .map(Path::to_path_buf)
        .collect();
    files::create_dir_all(dir)?;
    let plain = Dirs {
        shared: dir.to_path_buf(),
        outside: false,
        closed: None,
    };
    if !partition_users {
        return Ok(plain);
    }
    let mut open = made;
    if open.is_empty() {
        open.push(dir.to_path_buf());
    }
    for d in open {
        files::set_mode(&d, files::mode(&d)? | 0o711)?;
    }
    let Some(closed) = closed_above(dir)? else {
        return Ok(plain);
    };
    let outside = Path::new(OUTSIDE);
    files::create_dir_all(outside)?;
    files::set_mode(outside, 0o755)?;
    sweep(outside);
    if let Some((above, mode)) = closed_above(outside)? {
        crate::error::refuse!(
            "{} is under {} (mode {mode:04o}), which other users may not enter, and so is {OUTSIDE} \
             (under {}): the partitions' users could not reach their partitions (their \
             promises would fail with \"Permission denied\"); choose a directory whose every \
             parent other users may enter (--dir /srv/slapos-up, say), or let them through: \
             chmod o+x {}",
            dir.display(),
            closed.0.display(),
            above.display(),
            closed.0.display()
        );
    }
    let shared = outside.join(std::process::id().to_string());
    if shared.exists() {
        // a run of the same pid, gone
        let _ = std::fs::remove_dir_all(&shared);
    }
    files::create_dir_all(&shared)?;
    files::set_mode(&shared, 0o755)?;
    Ok(Dirs {
        shared,
        outside: true,
        closed: Some(closed),
    })
}

/// Removes what runs that are gone left under `outside` (killed before they could).
fn sweep(outside: &Path) {
    let Ok(entries) = std::fs::read_dir(outside) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(pid) = name.to_str().filter(|n| n.parse::<u32>().is_ok()) else {
            continue;
        };
        if !Path::new("/proc").join(pid).exists() {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}
