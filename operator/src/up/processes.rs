//! The processes `slapos up` starts itself (replicas, gateways, node agents), stopped
//! when asked and whenever their holder goes (also on an error or a cancelled start).

use crate::error::OperatorError;
use crate::progress::Progress;
use std::fs::File;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Named child processes; stopped on drop.
pub(crate) struct Children {
    list: Vec<(String, Child)>,
    progress: Arc<dyn Progress>,
}

impl Children {
    pub(crate) fn new(progress: Arc<dyn Progress>) -> Self {
        Children {
            list: Vec::new(),
            progress,
        }
    }

    pub(crate) fn push(&mut self, name: impl Into<String>, child: Child) {
        self.list.push((name.into(), child));
    }

    /// SIGTERM everyone, then SIGKILL whoever is still there after 10 s.
    pub(crate) fn stop(&mut self) {
        for (_, c) in &self.list {
            let _ = Command::new("kill").arg(c.id().to_string()).status();
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        for (name, c) in &mut self.list {
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
            .partition(|(n, _)| n == name);
        self.list = others;
        let mut stopping = Children {
            list: mine,
            progress: self.progress.clone(),
        };
        stopping.stop();
    }

    /// The children that exited on their own since last asked, forgotten.
    pub(crate) fn reap(&mut self) -> Vec<(String, ExitStatus)> {
        let mut exited = Vec::new();
        self.list.retain_mut(|(name, c)| match c.try_wait() {
            Ok(Some(status)) => {
                exited.push((name.clone(), status));
                false
            }
            _ => true,
        });
        exited
    }
}

impl Drop for Children {
    fn drop(&mut self) {
        self.stop();
    }
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
