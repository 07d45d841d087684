//! A service's log file: its stdout and stderr, written by a thread of the daemon from a
//! pipe, rotated at [`MAX_LOG`] to `<log>.1` (one backup).
//!
//! The daemon usually runs as root and the file lives in a directory the partition's user
//! owns, so opening it must not follow a symlink nor append to a hard link the user made
//! to some other file.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use nix::fcntl::OFlag;

/// Size at which a log is rotated.
pub(crate) const MAX_LOG: u64 = 1 << 20;

pub(crate) struct LogSink {
    path: PathBuf,
    /// uid/gid to give the file (when the daemon runs as root).
    owner: Option<(u32, u32)>,
    max: u64,
    file: Option<File>,
    size: u64,
    /// Whether an open failure was already reported (once per sink, not per chunk).
    warned: bool,
}

impl LogSink {
    pub(crate) fn new(path: PathBuf, owner: Option<(u32, u32)>) -> LogSink {
        LogSink {
            path,
            owner,
            max: MAX_LOG,
            file: None,
            size: 0,
            warned: false,
        }
    }

    #[cfg(test)]
    pub(crate) fn with_max(mut self, max: u64) -> LogSink {
        self.max = max;
        self
    }

    fn open(&mut self) -> std::io::Result<()> {
        let file = open_log(&self.path, self.owner)?;
        self.size = file.metadata()?.len();
        self.file = Some(file);
        Ok(())
    }

    fn rotate(&mut self) {
        self.file = None;
        let mut backup = self.path.clone().into_os_string();
        backup.push(".1");
        if let Err(e) = std::fs::rename(&self.path, &backup) {
            tracing::warn!(log = %self.path.display(), error = %e, "cannot rotate a service log");
            // Never grow without bound: start over in place.
            if let Ok(file) = open_log(&self.path, self.owner) {
                let _ = file.set_len(0);
            }
        }
    }

    /// Appends `data`, rotating first when it would take the file past its maximum size. Errors are
    /// logged, never returned: a full disk must not stop the service.
    pub(crate) fn write(&mut self, data: &[u8]) {
        let len = data.len() as u64;
        if self.file.is_some() && self.size > 0 && self.size + len > self.max {
            self.rotate();
        }
        if self.file.is_none() {
            if let Err(e) = self.open() {
                if !self.warned {
                    tracing::warn!(log = %self.path.display(), error = %e, "cannot open a service log; output dropped");
                    self.warned = true;
                }
                return;
            }
            if self.size > 0 && self.size + len > self.max {
                self.rotate();
                if self.open().is_err() {
                    return;
                }
            }
        }
        if let Some(file) = self.file.as_mut() {
            match file.write_all(data) {
                Ok(()) => self.size += len,
                Err(e) => {
                    tracing::warn!(log = %self.path.display(), error = %e, "cannot write a service log");
                    self.file = None;
                }
            }
        }
    }

    /// Copies everything from the pipe until every writer closed it (the service and any
    /// child that kept its stdout).
    pub(crate) fn pump(mut self, fd: OwnedFd) {
        // The log exists from the start, output or not, as supervisord's do (an operator
        // looks for it; a one-shot that prints nothing still has one).
        self.write(&[]);
        let mut pipe = File::from(fd);
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match pipe.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => self.write(&buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(_) => break,
            }
        }
    }
}

/// Opens for appending, creating 0640, without following a symlink; refuses anything but
/// a regular file with a single link, and gives it to `owner`.
fn open_log(path: &Path, owner: Option<(u32, u32)>) -> std::io::Result<File> {
    let file = OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o640)
        .custom_flags((OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK).bits())
        .open(path)?;
    let meta = file.metadata()?;
    if !meta.file_type().is_file() || meta.nlink() != 1 {
        return Err(std::io::Error::other(
            "not a regular file with a single link",
        ));
    }
    if let Some((uid, gid)) = owner {
        if meta.uid() != uid || meta.gid() != gid {
            std::os::unix::fs::fchown(&file, Some(uid), Some(gid))?;
        }
    }
    Ok(file)
}
