//! What every node command shares: the configuration, the SLAP client, the supervisor,
//! the error type and the run lock.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use crate::client::{SlapClient, SlapError};
use crate::supervisor::{SupervisorClient, SupervisorError};
use crate::NodeConfig;

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error(transparent)]
    Config(#[from] crate::ConfigError),
    #[error(transparent)]
    Slap(#[from] SlapError),
    #[error(transparent)]
    Supervisor(#[from] SupervisorError),
    #[error(transparent)]
    Process(#[from] crate::process::ProcessError),
    #[error(transparent)]
    Format(#[from] crate::format::FormatError),
    #[error(transparent)]
    KeyFile(#[from] crate::keyfiles::KeyFileError),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("another `slapos node` run holds {0}")]
    Locked(PathBuf),
    #[error("this command must run as root (or set [slapos] root_check = false)")]
    NotRoot,
    #[error("{0}")]
    Invalid(String),
}

/// An I/O error that names its file.
pub fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> NodeError + '_ {
    move |source| NodeError::Io {
        path: path.to_owned(),
        source,
    }
}

/// How the supervisor daemon is started when it is not running: the `slapos` binary
/// with `node supervisord --cfg F`.
#[derive(Debug, Clone)]
pub struct SupervisorLaunch {
    pub program: PathBuf,
    pub args: Vec<OsString>,
}

/// One node: its configuration and clients.
pub struct Node {
    pub cfg: NodeConfig,
    pub client: SlapClient,
    pub supervisor: SupervisorClient,
    /// Whether partitions get cgroups here (detected once per command).
    pub cgroups: crate::cgroup::Availability,
    launch: Option<SupervisorLaunch>,
}

impl Node {
    pub fn new(cfg: NodeConfig, launch: Option<SupervisorLaunch>) -> Result<Node, NodeError> {
        let client = SlapClient::from_config(&cfg)?;
        let supervisor = SupervisorClient::new(cfg.supervisor_socket());
        let cgroups = crate::cgroup::detect(cfg.cgroup_mode, &cfg.cgroup_root);
        Ok(Node {
            cfg,
            client,
            supervisor,
            cgroups,
            launch,
        })
    }

    /// The default launcher: this very executable (`slapos`) with `node supervisord`.
    pub fn self_launch(cfg: &NodeConfig) -> Option<SupervisorLaunch> {
        let program = std::env::current_exe().ok()?;
        Some(SupervisorLaunch {
            program,
            args: vec![
                "node".into(),
                "supervisord".into(),
                "--cfg".into(),
                cfg.path.clone().into(),
            ],
        })
    }

    /// Refuses to run unprivileged unless the config says `root_check = false`.
    pub fn check_root(&self) -> Result<(), NodeError> {
        if self.cfg.root_check && !crate::process::is_root() {
            return Err(NodeError::NotRoot);
        }
        Ok(())
    }

    /// Makes sure the supervisor daemon answers (starting it if needed).
    pub fn ensure_supervisor(&self) -> Result<(), NodeError> {
        if self.supervisor.is_running() {
            return Ok(());
        }
        let launch = self.launch.as_ref().ok_or_else(|| {
            NodeError::Invalid("the supervisor is not running and cannot be started".into())
        })?;
        let log_dir = self.cfg.instance_root.join("var/log");
        std::fs::create_dir_all(&log_dir).map_err(io_err(&log_dir))?;
        self.supervisor.ensure_running(
            &launch.program,
            &launch.args,
            &log_dir.join("supervisor.log"),
        )?;
        Ok(())
    }
}

/// An exclusive run lock (`flock` on a pid file): a second `slapos node instance` waits
/// for nothing and fails at once, as the reference's pid file does (exit 10).
pub struct RunLock {
    _file: std::fs::File,
}

impl RunLock {
    pub fn acquire(path: &Path) -> Result<RunLock, NodeError> {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(io_err(parent))?;
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .map_err(io_err(path))?;
        // flock(LOCK_EX | LOCK_NB), held as long as the file is open.
        if file.try_lock().is_err() {
            return Err(NodeError::Locked(path.to_owned()));
        }
        let _ = file.set_len(0);
        let _ = std::fs::write(path, format!("{}\n", std::process::id()));
        Ok(RunLock { _file: file })
    }
}

/// Opens (creates) a log of the agent's at `path` for writing, appended to or emptied:
/// 0640 and, as root, root's user and group, whatever an earlier run left (an existing
/// log is tightened), never through a symbolic link. The agent's log names releases,
/// partitions and the errors their users caused: the partition users, members of the
/// software group and never of root's, may not read it.
pub fn open_log(path: &Path, append: bool) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut options = std::fs::OpenOptions::new();
    options
        .write(true)
        .create(true)
        .mode(0o640)
        .custom_flags((nix::fcntl::OFlag::O_NOFOLLOW | nix::fcntl::OFlag::O_CLOEXEC).bits());
    if append {
        options.append(true);
    } else {
        options.truncate(true);
    }
    let file = options.open(path)?;
    if crate::process::is_root() {
        std::os::unix::fs::fchown(&file, Some(0), Some(0))?;
    }
    {
        use std::os::unix::fs::PermissionsExt;
        file.set_permissions(std::fs::Permissions::from_mode(0o640))?;
    }
    Ok(file)
}

/// Seconds since the epoch.
pub fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Writes `content` to `path` through a temporary file and a rename (a crash never
/// leaves half a file).
pub fn write_atomic(path: &Path, content: &[u8], mode: u32) -> Result<(), NodeError> {
    use std::os::unix::fs::PermissionsExt;
    let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
    std::fs::write(&tmp, content).map_err(io_err(&tmp))?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode)).map_err(io_err(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io_err(path))
}

/// Removes a directory tree, making unreadable or unwritable directories 0700 first
/// (a build may leave read-only trees behind). Nothing outside the tree is touched: the
/// removal is std's (`openat`-based, no link followed), and the directories opened up
/// are reached from their parent's descriptor with `O_NOFOLLOW`, so a directory a
/// partition's (or the software) user swaps for a link meanwhile leads nowhere.
pub fn remove_tree(path: &Path) -> std::io::Result<()> {
    match std::fs::remove_dir_all(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(_) => {
            use nix::fcntl::{openat, OFlag, AT_FDCWD};
            use nix::sys::stat::{fchmod, Mode};
            use std::os::fd::{AsFd, AsRawFd, OwnedFd};
            fn open_dir(at: impl AsFd, name: &std::ffi::OsStr) -> Option<OwnedFd> {
                openat(
                    at,
                    name,
                    OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                    Mode::empty(),
                )
                .ok()
            }
            fn open_up(dir: OwnedFd, depth: usize) {
                // Best effort: what stays closed makes the removal below fail.
                let _ = fchmod(&dir, Mode::S_IRWXU);
                if depth > 4096 {
                    return;
                }
                let listing = PathBuf::from(format!("/proc/self/fd/{}", dir.as_raw_fd()));
                let Ok(entries) = std::fs::read_dir(&listing) else {
                    return;
                };
                for e in entries.flatten() {
                    if e.file_type().is_ok_and(|t| t.is_dir()) {
                        if let Some(child) = open_dir(&dir, &e.file_name()) {
                            open_up(child, depth + 1);
                        }
                    }
                }
            }
            if let Some(top) = open_dir(AT_FDCWD, path.as_os_str()) {
                open_up(top, 0);
            }
            std::fs::remove_dir_all(path)
        }
    }
}

/// Empties a directory (its own entry stays, with its owner and mode).
pub fn empty_dir(path: &Path) -> std::io::Result<()> {
    for entry in std::fs::read_dir(path)? {
        let p = entry?.path();
        let meta = std::fs::symlink_metadata(&p)?;
        if meta.is_dir() {
            remove_tree(&p)?;
        } else {
            std::fs::remove_file(&p)?;
        }
    }
    Ok(())
}

/// Bytes available to unprivileged users on the filesystem of `path` (or of its nearest
/// existing ancestor).
pub fn free_bytes(path: &Path) -> std::io::Result<u64> {
    let mut p = path;
    while !p.exists() {
        p = p.parent().unwrap_or(Path::new("/"));
    }
    let st = nix::sys::statvfs::statvfs(p)?;
    Ok((st.blocks_available() as u64).saturating_mul(st.fragment_size() as u64))
}

/// Refuses to build or deploy where less than `needed` bytes are free.
pub fn check_free_space(path: &Path, needed: u64, what: &str) -> Result<(), NodeError> {
    let free = free_bytes(path).map_err(io_err(path))?;
    if free < needed {
        return Err(NodeError::Invalid(format!(
            "Not enough space for {what} in {}: {} MiB free, {} MiB needed",
            path.display(),
            free >> 20,
            needed >> 20
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    /// Issue 17.2: the agent's log was world-readable (0644) and showed an artifact's
    /// sha256. Created or found, it is 0640 and (root) root's group.
    #[test]
    fn the_agent_s_log_is_not_readable_by_partition_users() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("daemon.log");
        std::fs::write(&log, "earlier run\n").unwrap();
        std::fs::set_permissions(&log, std::fs::Permissions::from_mode(0o666)).unwrap();
        if crate::process::is_root() {
            std::os::unix::fs::chown(&log, Some(65534), Some(65534)).unwrap();
        }
        {
            use std::io::Write;
            let mut f = open_log(&log, true).unwrap();
            f.write_all(b"next run\n").unwrap();
        }
        let meta = std::fs::metadata(&log).unwrap();
        assert_eq!(meta.mode() & 0o7777, 0o640);
        if crate::process::is_root() {
            assert_eq!((meta.uid(), meta.gid()), (0, 0));
        }
        assert_eq!(
            std::fs::read_to_string(&log).unwrap(),
            "earlier run\nnext run\n"
        );
        open_log(&log, false).unwrap();
        assert_eq!(std::fs::read_to_string(&log).unwrap(), "");
        let fresh = dir.path().join("fresh.log");
        open_log(&fresh, false).unwrap();
        assert_eq!(std::fs::metadata(&fresh).unwrap().mode() & 0o7777, 0o640);
        // Never through a link.
        std::os::unix::fs::symlink(&fresh, dir.path().join("link.log")).unwrap();
        assert!(open_log(&dir.path().join("link.log"), true).is_err());
    }

    /// A tree with read-only directories is removed; a link in it to a directory
    /// elsewhere is removed, not followed (its target keeps its mode and content).
    #[test]
    fn remove_tree_opens_up_read_only_trees_but_never_follows_a_link() {
        let dir = tempfile::tempdir().unwrap();
        let outside = dir.path().join("outside");
        std::fs::create_dir(&outside).unwrap();
        std::fs::write(outside.join("keep"), "x").unwrap();
        std::fs::set_permissions(&outside, std::fs::Permissions::from_mode(0o555)).unwrap();
        let tree = dir.path().join("tree");
        std::fs::create_dir_all(tree.join("a/b")).unwrap();
        std::fs::write(tree.join("a/b/f"), "x").unwrap();
        std::os::unix::fs::symlink(&outside, tree.join("a/link")).unwrap();
        for d in ["a/b", "a"] {
            std::fs::set_permissions(tree.join(d), std::fs::Permissions::from_mode(0o500)).unwrap();
        }
        remove_tree(&tree).unwrap();
        assert!(!tree.exists());
        assert!(outside.join("keep").exists());
        assert_eq!(std::fs::metadata(&outside).unwrap().mode() & 0o777, 0o555);
        std::fs::set_permissions(&outside, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
}
