//! The processes `slapos up` starts itself (replicas, gateways, node agents), stopped
//! when asked and whenever their holder goes (also on an error or a cancelled start).

use crate::error::OperatorError;
use crate::progress::Progress;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Named child processes, each with the log it writes; stopped on drop.
pub(crate) struct Children {
    list: Vec<(String, Child, PathBuf)>,
    progress: Arc<dyn Progress>,
}

impl Children {
    pub(crate) fn new(progress: Arc<dyn Progress>) -> Self {
        Children {
            list: Vec::new(),
            progress,
        }
    }

    pub(crate) fn push(&mut self, name: impl Into<String>, child: Child, log: &Path) {
        self.list.push((name.into(), child, log.to_path_buf()));
    }

    /// SIGTERM everyone, then SIGKILL whoever is still there after 10 s.
    pub(crate) fn stop(&mut self) {
        for (_, c, _) in &self.list {
            let _ = Command::new("kill").arg(c.id().to_string()).status();
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        for (name, c, _) in &mut self.list {
            loop {
                match c.try_wait() {
                    Ok(Some(_)) | Err(_) => break,
                    Ok(None) if Instant::now() > deadline => {
                        self.progress
                            .warn(&format!("{name} did not stop within 10 s: killing it"));
                        let _ = c.kill();
                        let _ = c.wait();
                        break;
                    }
                    Ok(None) => std::thread::sleep(Duration::from_millis(50)),
                }
            }
        }
        self.list.clear();
    }

    /// SIGTERM the child named `name` and wait for it (SIGKILL after 10 s).
    pub(crate) fn stop_named(&mut self, name: &str) {
        let (mine, others): (Vec<_>, Vec<_>) = std::mem::take(&mut self.list)
            .into_iter()
            .partition(|(n, _, _)| n == name);
        self.list = others;
        let mut stopping = Children {
            list: mine,
            progress: self.progress.clone(),
        };
        stopping.stop();
    }

    /// The children that exited on their own since last asked, forgotten.
    pub(crate) fn reap(&mut self) -> Vec<(String, ExitStatus)> {
        self.reap_with_logs()
            .into_iter()
            .map(|(name, status, _)| (name, status))
            .collect()
    }

    /// As [`Children::reap`], with the log each one wrote.
    fn reap_with_logs(&mut self) -> Vec<(String, ExitStatus, PathBuf)> {
        let mut exited = Vec::new();
        self.list.retain_mut(|(name, c, log)| match c.try_wait() {
            Ok(Some(status)) => {
                exited.push((name.clone(), status, log.clone()));
                false
            }
            _ => true,
        });
        exited
    }

    /// Awaits `step`, failing at once (with the end of its log) when one of the children
    /// exits meanwhile: a replica that could not start must not leave `slapos up` waiting
    /// out a step's whole deadline for it.
    pub(crate) async fn while_running<T>(
        &mut self,
        step: impl std::future::Future<Output = Result<T, OperatorError>>,
    ) -> Result<T, OperatorError> {
        tokio::pin!(step);
        let mut ticker = tokio::time::interval(Duration::from_millis(200));
        loop {
            tokio::select! {
                done = &mut step => return done,
                _ = ticker.tick() => {
                    if let Some((name, status, log)) = self.reap_with_logs().into_iter().next() {
                        return Err(OperatorError::Exited {
                            name,
                            status: status.to_string(),
                            tail: log_tail(&log, 20),
                            log,
                        });
                    }
                }
            }
        }
    }
}

impl Drop for Children {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The last `lines` lines of a log before any backtrace (empty when it cannot be read).
fn log_tail(log: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let text = text.split("\nStack backtrace:").next().unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// `bin <args> <config>`, its output into `log`.
pub(crate) fn spawn(
    bin: &Path,
    args: &[&str],
    config: &Path,
    log: &Path,
) -> Result<Child, OperatorError> {
    let out = File::create(log).map_err(OperatorError::io("create", log))?;
    let err = out.try_clone().map_err(OperatorError::io("create", log))?;
    Command::new(bin)
        .args(args)
        .arg(config)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .map_err(|source| OperatorError::Spawn {
            program: bin.display().to_string(),
            source,
        })
}
