//! Everything `format` does to the machine goes through [`Host`]: commands (output
//! captured, failures named), directories, ownership, modes and files. A dry run performs
//! the reads and only logs the changes; either way `changed` records whether anything was
//! (or would have been) modified.

use std::ffi::OsStr;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::FormatError;

/// Where administration commands live when `PATH` lacks them (a cron job's `PATH`).
const SBIN_DIRS: &[&str] = &["/usr/local/sbin", "/usr/sbin", "/sbin", "/usr/bin", "/bin"];

pub(crate) struct Host {
    dry_run: bool,
    changed: bool,
}

/// `ip addr add 10.0.0.2/32 dev eth0`, for messages.
pub(crate) fn command_line(program: &str, args: &[&str]) -> String {
    std::iter::once(program)
        .chain(args.iter().copied())
        .collect::<Vec<_>>()
        .join(" ")
}

/// `program` found on `PATH`, else in the usual sbin directories, else as given (the spawn
/// error then names it).
fn resolve(program: &str) -> PathBuf {
    if program.contains('/') {
        return PathBuf::from(program);
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(SBIN_DIRS.iter().map(PathBuf::from))
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
        .unwrap_or_else(|| PathBuf::from(program))
}

fn io_error(action: &'static str, path: &Path, source: std::io::Error) -> FormatError {
    FormatError::Io {
        action,
        path: path.to_owned(),
        source,
    }
}

impl Host {
    pub fn new(dry_run: bool) -> Host {
        Host {
            dry_run,
            changed: false,
        }
    }

    pub fn dry_run(&self) -> bool {
        self.dry_run
    }

    pub fn changed(&self) -> bool {
        self.changed
    }

    /// Records (and logs) one modification.
    pub(crate) fn note(&mut self, what: &str) {
        self.changed = true;
        if self.dry_run {
            tracing::info!("dry run: would {what}");
        } else {
            tracing::info!("{what}");
        }
    }

    /// Runs a command that only reads; returns its status and stdout + stderr.
    pub fn probe(
        &self,
        program: &str,
        args: &[&str],
    ) -> Result<(std::process::ExitStatus, String), FormatError> {
        let line = command_line(program, args);
        tracing::debug!("running {line}");
        let output = Command::new(resolve(program))
            .args(args.iter().map(OsStr::new))
            .env("LC_ALL", "C")
            .stdin(Stdio::null())
            .output()
            .map_err(|source| FormatError::Spawn {
                command: line.clone(),
                source,
            })?;
        let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
        text.push_str(&String::from_utf8_lossy(&output.stderr));
        if !output.status.success() {
            tracing::debug!("{line}: {}: {}", output.status, text.trim());
        }
        Ok((output.status, text))
    }

    /// Runs a command that only reads; a failure is an error naming it.
    pub fn query(&self, program: &str, args: &[&str]) -> Result<String, FormatError> {
        let (status, text) = self.probe(program, args)?;
        if status.success() {
            return Ok(text);
        }
        Err(FormatError::Command {
            command: command_line(program, args),
            status: status.to_string(),
            output: text.trim().to_owned(),
        })
    }

    /// Runs a command that modifies the machine (only logged in a dry run).
    pub fn change(&mut self, program: &str, args: &[&str]) -> Result<(), FormatError> {
        self.note(&format!("run {}", command_line(program, args)));
        if self.dry_run {
            return Ok(());
        }
        self.query(program, args).map(|_| ())
    }

    /// Creates `path` (and its parents when `parents`) with `mode` if missing. Returns
    /// whether it was missing.
    pub fn mkdir(&mut self, path: &Path, mode: u32, parents: bool) -> Result<bool, FormatError> {
        match std::fs::symlink_metadata(path) {
            Ok(_) => return Ok(false),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_error("inspect", path, e)),
        }
        self.note(&format!("create {} mode {mode:o}", path.display()));
        if self.dry_run {
            return Ok(true);
        }
        std::fs::DirBuilder::new()
            .recursive(parents)
            .mode(mode)
            .create(path)
            .map_err(|e| io_error("create directory", path, e))?;
        // The umask may have removed bits.
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
            .map_err(|e| io_error("chmod", path, e))?;
        Ok(true)
    }

    /// Sets the permission bits of `path` to `mode` unless they already are.
    pub fn chmod(&mut self, path: &Path, mode: u32) -> Result<(), FormatError> {
        let Some(meta) = self.metadata(path)? else {
            return Ok(());
        };
        if meta.mode() & 0o7777 == mode {
            return Ok(());
        }
        self.note(&format!(
            "chmod {} from {:o} to {mode:o}",
            path.display(),
            meta.mode() & 0o7777
        ));
        if self.dry_run {
            return Ok(());
        }
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
            .map_err(|e| io_error("chmod", path, e))
    }

    /// Sets the owner of `path` to `uid`:`gid` unless it already is.
    pub fn chown(&mut self, path: &Path, uid: u32, gid: u32) -> Result<(), FormatError> {
        let Some(meta) = self.metadata(path)? else {
            return Ok(());
        };
        if (meta.uid(), meta.gid()) == (uid, gid) {
            return Ok(());
        }
        self.note(&format!(
            "chown {} from {}:{} to {uid}:{gid}",
            path.display(),
            meta.uid(),
            meta.gid()
        ));
        if self.dry_run {
            return Ok(());
        }
        std::os::unix::fs::chown(path, Some(uid), Some(gid)).map_err(|e| io_error("chown", path, e))
    }

    /// The metadata of `path` (following symlinks); `None` when it does not exist (in a
    /// dry run, a directory that would have been created).
    pub fn metadata(&self, path: &Path) -> Result<Option<std::fs::Metadata>, FormatError> {
        match std::fs::metadata(path) {
            Ok(meta) => Ok(Some(meta)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_error("inspect", path, e)),
        }
    }

    /// Replaces `path` with `content` (through a temporary file and a rename) unless it
    /// already holds exactly that; then makes its mode `mode`. Returns whether it wrote.
    pub fn write_file(
        &mut self,
        path: &Path,
        content: &[u8],
        mode: u32,
    ) -> Result<bool, FormatError> {
        let same = match std::fs::read(path) {
            Ok(old) => old == content,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
            Err(e) => return Err(io_error("read", path, e)),
        };
        if same {
            self.chmod(path, mode)?;
            return Ok(false);
        }
        self.note(&format!("write {}", path.display()));
        if self.dry_run {
            return Ok(true);
        }
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|e| io_error("create directory", parent, e))?;
        }
        let mut tmp_name = path.file_name().unwrap_or(OsStr::new("state")).to_owned();
        tmp_name.push(format!(".tmp-{}", std::process::id()));
        let tmp = path.with_file_name(tmp_name);
        let result = (|| {
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(mode)
                .open(&tmp)?;
            file.write_all(content)?;
            file.set_permissions(std::fs::Permissions::from_mode(mode))?;
            file.sync_all()?;
            std::fs::rename(&tmp, path)
        })();
        if let Err(e) = result {
            let _ = std::fs::remove_file(&tmp);
            return Err(io_error("write", path, e));
        }
        Ok(true)
    }

    /// Copies `from` to `to` (a backup).
    pub fn copy(&mut self, from: &Path, to: &Path) -> Result<(), FormatError> {
        self.note(&format!("keep {} as {}", from.display(), to.display()));
        if self.dry_run {
            return Ok(());
        }
        std::fs::copy(from, to)
            .map(|_| ())
            .map_err(|e| io_error("back up", from, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_only_changes_and_dry_run_touches_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("sub/f");
        let mut dry = Host::new(true);
        assert!(dry.write_file(&file, b"x", 0o644).unwrap());
        assert!(dry.changed() && !file.exists());
        let mut host = Host::new(false);
        assert!(host.write_file(&file, b"x", 0o644).unwrap());
        let mut again = Host::new(false);
        assert!(!again.write_file(&file, b"x", 0o644).unwrap());
        assert!(!again.changed());
        assert_eq!(
            std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
            0o644
        );
    }

    #[test]
    fn failing_commands_are_named_with_their_output() {
        let host = Host::new(false);
        let err = host
            .query("sh", &["-c", "echo boom >&2; exit 3"])
            .unwrap_err();
        let text = err.to_string();
        assert!(text.contains("sh -c") && text.contains("boom"), "{text}");
        let err = host.query("/nonexistent/prog", &[]).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/prog"), "{err}");
    }
}
