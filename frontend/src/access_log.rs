//! One access log per site: a line per request in the combined format (and the time the
//! answer took), written by one thread so that no request waits on the disk. Every value
//! that came from the client is escaped (`printable`): a line holds no newline, no quote
//! and no control character of the client's.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A site's log file; reopened at each load (after a rotation, the new file is used).
#[derive(Debug)]
pub(crate) struct AccessLog {
    path: PathBuf,
    file: Mutex<Option<File>>,
}

impl AccessLog {
    pub(crate) fn open(path: &Path) -> std::io::Result<Arc<AccessLog>> {
        let log = Arc::new(AccessLog {
            path: path.to_owned(),
            file: Mutex::new(None),
        });
        log.reopen()?;
        Ok(log)
    }

    pub(crate) fn reopen(&self) -> std::io::Result<()> {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)?;
        if let Ok(mut slot) = self.file.lock() {
            *slot = Some(file);
        }
        Ok(())
    }

    /// Queues the line (ending it with a newline).
    pub(crate) fn write(self: &Arc<Self>, line: String) {
        let _ = writer().send((self.clone(), line));
    }
}

type Line = (Arc<AccessLog>, String);

fn writer() -> &'static mpsc::Sender<Line> {
    static WRITER: OnceLock<mpsc::Sender<Line>> = OnceLock::new();
    WRITER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Line>();
        let spawned = std::thread::Builder::new()
            .name("access-log".into())
            .spawn(move || {
                for (log, mut line) in rx {
                    line.push('\n');
                    if let Ok(mut file) = log.file.lock() {
                        if let Some(f) = file.as_mut() {
                            if let Err(e) = f.write_all(line.as_bytes()) {
                                tracing::warn!(path = %log.path.display(), "access log: {e}");
                            }
                        }
                    }
                }
            });
        if let Err(e) = spawned {
            tracing::error!("access log thread: {e}");
        }
        tx
    })
}

/// `[07/Dec/2026:19:50:00 +0000]`'s inside, in UTC.
pub(crate) fn clf_time(t: SystemTime) -> String {
    let secs = t
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs();
    let days = (secs / 86400) as i64;
    let rem = secs % 86400;
    // Days to civil date (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    format!(
        "{d:02}/{}/{y}:{:02}:{:02}:{:02} +0000",
        MONTHS[(m - 1) as usize],
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_is_civil() {
        let t = UNIX_EPOCH + Duration::from_secs(1_796_673_000);
        assert_eq!(clf_time(t), "07/Dec/2026:19:50:00 +0000");
        assert_eq!(clf_time(UNIX_EPOCH), "01/Jan/1970:00:00:00 +0000");
    }
}
