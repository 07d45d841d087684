//! Group specs on disk: `IR/etc/supervisor.d/<partition_id>.json` (0600, directory 0700),
//! so that a restarted daemon (or a rebooted node) gets its services back without the
//! agent or the master.

use std::collections::HashSet;
use std::fs::{self, DirBuilder, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::{GroupSpec, SupervisorError};

/// Refuses what could escape the store directory or the partition directory, make two
/// processes share a name, or not be runnable as given.
pub(crate) fn validate(spec: &GroupSpec) -> Result<(), SupervisorError> {
    let bad = |m: String| Err(SupervisorError::InvalidSpec(m));
    let id = &spec.partition_id;
    if id.is_empty()
        || id.len() > 200
        || id.starts_with('.')
        || !id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        return bad(format!(
            "partition id {id:?}: expected letters, digits, '-', '_' or '.' (not first)"
        ));
    }
    if !spec.directory.is_absolute() {
        return bad(format!(
            "{id}: directory {} is not absolute",
            spec.directory.display()
        ));
    }
    if spec.user.is_empty() || spec.user.contains('\0') {
        return bad(format!("{id}: invalid user name {:?}", spec.user));
    }
    let mut names = HashSet::new();
    for s in &spec.services {
        if s.name.is_empty()
            || s.name == "."
            || s.name == ".."
            || s.name.contains(['/', ':', '\0', '\n'])
        {
            return bad(format!("{id}: invalid service name {:?}", s.name));
        }
        if !s.command.is_absolute() {
            return bad(format!(
                "{id}: command {} of {} is not absolute",
                s.command.display(),
                s.name
            ));
        }
        if !names.insert(s.process_name()) {
            return bad(format!("{id}: two services named {}", s.process_name()));
        }
    }
    Ok(())
}

pub(crate) struct Store {
    dir: PathBuf,
}

impl Store {
    pub(crate) fn new(dir: PathBuf) -> Store {
        Store { dir }
    }

    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    /// Creates the directory (and missing parents) 0700 and forces 0700 on it.
    pub(crate) fn create(&self) -> Result<(), SupervisorError> {
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.dir)
            .and_then(|()| fs::set_permissions(&self.dir, fs::Permissions::from_mode(0o700)))
            .map_err(|e| SupervisorError::io(format!("cannot create {}", self.dir.display()), e))
    }

    pub(crate) fn path(&self, partition_id: &str) -> PathBuf {
        self.dir.join(format!("{partition_id}.json"))
    }

    /// Writes the spec (through a temporary file and a rename) unless the file already
    /// holds exactly this text.
    pub(crate) fn save(&self, spec: &GroupSpec) -> Result<(), SupervisorError> {
        let path = self.path(&spec.partition_id);
        let text = serde_json::to_string_pretty(spec)
            .map_err(|e| SupervisorError::Protocol(e.to_string()))?
            + "\n";
        if fs::read(&path).is_ok_and(|old| old == text.as_bytes()) {
            return Ok(());
        }
        let tmp = self.dir.join(format!(".{}.json.tmp", spec.partition_id));
        let io = |e| SupervisorError::io(format!("cannot write {}", path.display()), e);
        let _ = fs::remove_file(&tmp);
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(io)?;
        file.write_all(text.as_bytes())
            .and_then(|()| file.sync_all())
            .map_err(io)?;
        drop(file);
        fs::rename(&tmp, &path).map_err(io)
    }

    /// Deletes the spec file (a missing one is fine).
    pub(crate) fn delete(&self, partition_id: &str) -> Result<(), SupervisorError> {
        let path = self.path(partition_id);
        match fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(SupervisorError::io(
                format!("cannot delete {}", path.display()),
                e,
            )),
            _ => Ok(()),
        }
    }

    /// Every valid stored spec, sorted by partition id; a bad file is logged and skipped
    /// (one broken partition must not keep the others down).
    pub(crate) fn load_all(&self) -> Vec<GroupSpec> {
        let entries = match fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(e) => {
                tracing::warn!(dir = %self.dir.display(), error = %e, "cannot list stored groups");
                return Vec::new();
            }
        };
        let mut specs = Vec::new();
        for entry in entries.flatten() {
            let path = entry.path();
            let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
                continue;
            };
            if name.starts_with('.') || !name.ends_with(".json") {
                continue;
            }
            let spec = fs::read_to_string(&path)
                .map_err(|e| e.to_string())
                .and_then(|t| serde_json::from_str::<GroupSpec>(&t).map_err(|e| e.to_string()))
                .and_then(|s| validate(&s).map(|()| s).map_err(|e| e.to_string()))
                .and_then(|s| {
                    if self.path(&s.partition_id) == path {
                        Ok(s)
                    } else {
                        Err(format!("holds the spec of {}", s.partition_id))
                    }
                });
            match spec {
                Ok(s) => specs.push(s),
                Err(e) => {
                    tracing::warn!(file = %path.display(), error = %e, "ignoring a stored group")
                }
            }
        }
        specs.sort_by(|a, b| a.partition_id.cmp(&b.partition_id));
        specs
    }
}
