//! Backups on a schedule (`slapos cluster backup schedule`, run by the slapos-master
//! release beside each replica it hosts) and their freshness (`slapos cluster backup
//! age`, the release's promise): one backup every period into a directory, named by the
//! time it was started (`backup-<unix seconds>.slapos`, so names sort by age), the last
//! `keep` kept; a failed backup leaves nothing (its `.partial` is removed) and is tried
//! again after a shorter wait, so that a stale backup is what the promise reports rather
//! than a busy loop.

use crate::backup::{take, TakeOptions};
use crate::error::OperatorError;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const PREFIX: &str = "backup-";
const SUFFIX: &str = ".slapos";

/// What a schedule takes and keeps.
#[derive(Clone, Debug)]
pub struct Schedule {
    pub dir: PathBuf,
    /// Between the starts of two backups.
    pub every: Duration,
    /// Backups kept (at least 1).
    pub keep: usize,
    pub options: TakeOptions,
    /// Where each backup is also sent, when anywhere.
    pub upload: Option<Upload>,
}

/// An HTTPS place each backup is also sent to: `PUT <url>/<file name>` (a WebDAV
/// directory, a storage service's bucket), presenting a client certificate and checking
/// the server against the given authorities.
#[derive(Clone)]
pub struct Upload {
    pub url: String,
    endpoint: http_client::Endpoint,
    client: http_client::Client,
}

impl std::fmt::Debug for Upload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upload").field("url", &self.url).finish()
    }
}

/// The file that says when the last upload succeeded (what `backup age --uploaded`
/// reads).
const UPLOADED: &str = ".last-upload";

impl Upload {
    /// Uploads to `url` (https only), trusting the PEM bundles `cas` (the server's
    /// authority), presenting `identity` (certificate and key files) when given.
    pub fn new(
        url: &str,
        cas: &[&Path],
        identity: Option<(&Path, &Path)>,
    ) -> Result<Upload, OperatorError> {
        let refused = |why: String| OperatorError::Precondition(format!("--upload {url}: {why}"));
        let endpoint = http_client::Endpoint::parse(url).map_err(|e| refused(e.to_string()))?;
        if !endpoint.tls {
            return Err(refused("not https".into()));
        }
        let cas = http_client::tls::read_bundles(cas).map_err(|e| refused(e.to_string()))?;
        let identity = match identity {
            Some((cert, key)) => Some(
                http_client::tls::Identity::from_pem_files(cert, key)
                    .map_err(|e| refused(e.to_string()))?,
            ),
            None => None,
        };
        let tls = http_client::tls::verified(&cas, identity).map_err(|e| refused(e.to_string()))?;
        let options = http_client::Options {
            timeout: Duration::from_secs(120),
            deadline: Duration::from_secs(3600),
            max_body: 1 << 20,
            ..http_client::Options::default()
        };
        Ok(Upload {
            url: url.to_string(),
            endpoint,
            client: http_client::Client::new(Some(std::sync::Arc::new(tls)), options),
        })
    }

    /// `PUT <url>/<name of file>`; 200, 201 or 204 is success.
    pub async fn send(&self, file: &Path) -> Result<(), OperatorError> {
        let name = file.file_name().and_then(|n| n.to_str()).ok_or_else(|| {
            OperatorError::Precondition(format!("{} has no name", file.display()))
        })?;
        let bytes = std::fs::read(file).map_err(OperatorError::io("read", file))?;
        let target = format!("{}/{name}", self.url.trim_end_matches('/'));
        let answer = self
            .client
            .send(
                &self.endpoint,
                http_client::Request::put(name, "application/octet-stream", bytes),
            )
            .await
            .map_err(|source| OperatorError::Http {
                url: target.clone(),
                source,
            })?;
        if matches!(answer.status, 200 | 201 | 204) {
            Ok(())
        } else {
            Err(OperatorError::HttpRefused {
                url: target,
                status: answer.status,
                body: String::from_utf8_lossy(&answer.body)
                    .chars()
                    .take(200)
                    .collect(),
            })
        }
    }
}

/// How long ago the schedule of `dir` last uploaded a backup (None: never).
pub fn uploaded_since(dir: &Path, now: SystemTime) -> Option<Duration> {
    let at = std::fs::metadata(dir.join(UPLOADED))
        .ok()?
        .modified()
        .ok()?;
    Some(now.duration_since(at).unwrap_or_default())
}

/// The backups in `dir`, oldest first, with the time each was started (from its name).
/// Other files are not the schedule's and are left alone.
pub fn backups(dir: &Path) -> Result<Vec<(PathBuf, SystemTime)>, OperatorError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(OperatorError::io("read", dir)(e)),
    };
    let mut out = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(secs) = name
            .to_str()
            .and_then(|n| n.strip_prefix(PREFIX))
            .and_then(|n| n.strip_suffix(SUFFIX))
            .filter(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|n| n.parse::<u64>().ok())
        else {
            continue;
        };
        out.push((entry.path(), UNIX_EPOCH + Duration::from_secs(secs)));
    }
    out.sort_by_key(|(_, at)| *at);
    Ok(out)
}

/// Removes all but the newest `keep` backups of `dir`; the removed ones.
pub fn prune(dir: &Path, keep: usize) -> Result<Vec<PathBuf>, OperatorError> {
    let all = backups(dir)?;
    let excess = all.len().saturating_sub(keep.max(1));
    let mut removed = Vec::new();
    for (path, _) in all.into_iter().take(excess) {
        std::fs::remove_file(&path).map_err(OperatorError::io("remove", &path))?;
        removed.push(path);
    }
    Ok(removed)
}

/// How old the newest backup of `dir` is at `now` (None: there is none).
pub fn newest_age(dir: &Path, now: SystemTime) -> Result<Option<Duration>, OperatorError> {
    Ok(backups(dir)?
        .last()
        .map(|(_, at)| now.duration_since(*at).unwrap_or_default()))
}

/// One backup of the group (through `via`) into the schedule's directory, then the old
/// ones pruned; the new file.
pub async fn take_one(via: &[String], schedule: &Schedule) -> Result<PathBuf, OperatorError> {
    crate::files::create_dir_all(&schedule.dir)?;
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    let out = schedule.dir.join(format!("{PREFIX}{secs:012}{SUFFIX}"));
    if let Err(e) = take(via, &out, schedule.options).await {
        // Nothing half-written is left to fill the disk turn after turn.
        let _ = std::fs::remove_file(out.with_extension("partial"));
        return Err(e);
    }
    prune(&schedule.dir, schedule.keep)?;
    if let Some(upload) = &schedule.upload {
        upload.send(&out).await?;
        crate::files::write(&schedule.dir.join(UPLOADED), out.display().to_string())?;
    }
    Ok(out)
}

/// The file a schedule touches when it starts: until its first backup, the freshness
/// check counts from then.
const STARTED: &str = ".schedule-started";

/// Notes in `dir` (made if missing) that a schedule starts now.
pub fn mark_started(dir: &Path) -> Result<(), OperatorError> {
    crate::files::create_dir_all(dir)?;
    crate::files::write(&dir.join(STARTED), b"")
}

/// How long ago the schedule of `dir` started (None: never).
pub fn started_since(dir: &Path, now: SystemTime) -> Option<Duration> {
    let at = std::fs::metadata(dir.join(STARTED)).ok()?.modified().ok()?;
    Some(now.duration_since(at).unwrap_or_default())
}

/// Removes what an interrupted backup of the schedule left (`backup-*.partial`).
pub fn remove_partials(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        if name
            .to_str()
            .is_some_and(|n| n.starts_with(PREFIX) && n.ends_with(".partial"))
        {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// What a schedule did on one of its turns.
pub enum Turn {
    Taken(PathBuf),
    Failed(OperatorError),
}

/// The wait before the next turn: the period after a backup, a tenth of it (at least
/// 10 s, at most the period) after a failure.
pub fn next_wait(schedule: &Schedule, turn: &Turn) -> Duration {
    match turn {
        Turn::Taken(_) => schedule.every,
        Turn::Failed(_) => (schedule.every / 10)
            .max(Duration::from_secs(10))
            .min(schedule.every),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn touch(dir: &Path, name: &str) {
        std::fs::write(dir.join(name), b"x").unwrap();
    }

    #[test]
    fn backups_sort_by_the_time_in_their_names_and_prune_keeps_the_newest() {
        let d = tempfile::tempdir().unwrap();
        for secs in [300u64, 100, 200, 400] {
            touch(d.path(), &format!("backup-{secs:012}.slapos"));
        }
        // Not the schedule's: kept, never counted.
        touch(d.path(), "backup-000000000500.slapos.partial");
        touch(d.path(), "backup-x.slapos");
        touch(d.path(), "notes.txt");
        let all = backups(d.path()).unwrap();
        let secs: Vec<u64> = all
            .iter()
            .map(|(_, at)| at.duration_since(UNIX_EPOCH).unwrap().as_secs())
            .collect();
        assert_eq!(secs, vec![100, 200, 300, 400]);
        let removed = prune(d.path(), 2).unwrap();
        assert_eq!(removed.len(), 2);
        let left: Vec<u64> = backups(d.path())
            .unwrap()
            .iter()
            .map(|(_, at)| at.duration_since(UNIX_EPOCH).unwrap().as_secs())
            .collect();
        assert_eq!(left, vec![300, 400]);
        for other in [
            "backup-000000000500.slapos.partial",
            "backup-x.slapos",
            "notes.txt",
        ] {
            assert!(d.path().join(other).exists(), "{other} removed");
        }
        // keep 0 still keeps the newest.
        prune(d.path(), 0).unwrap();
        assert_eq!(backups(d.path()).unwrap().len(), 1);
    }

    #[test]
    fn the_newest_backup_s_age() {
        let d = tempfile::tempdir().unwrap();
        let now = UNIX_EPOCH + Duration::from_secs(1000);
        assert_eq!(newest_age(d.path(), now).unwrap(), None);
        assert_eq!(newest_age(&d.path().join("missing"), now).unwrap(), None);
        touch(d.path(), "backup-000000000400.slapos");
        touch(d.path(), "backup-000000000900.slapos");
        assert_eq!(
            newest_age(d.path(), now).unwrap(),
            Some(Duration::from_secs(100))
        );
    }

    #[test]
    fn a_failed_turn_is_retried_sooner() {
        let s = Schedule {
            dir: PathBuf::from("/x"),
            every: Duration::from_secs(3600),
            keep: 7,
            options: TakeOptions::default(),
            upload: None,
        };
        assert_eq!(
            next_wait(&s, &Turn::Taken(PathBuf::from("/x/b"))),
            Duration::from_secs(3600)
        );
        let failed = Turn::Failed(OperatorError::Timeout("t".into()));
        assert_eq!(next_wait(&s, &failed), Duration::from_secs(360));
        let short = Schedule {
            every: Duration::from_secs(2),
            ..s
        };
        assert_eq!(next_wait(&short, &failed), Duration::from_secs(2));
    }
}
