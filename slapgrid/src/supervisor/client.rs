//! The agent's side of the control socket.

use std::ffi::OsString;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::protocol::{Reply, Request, MAX_LINE};
use super::{ControlOp, GroupSpec, ProcessStatus, SupervisorError};

/// How long `is_running` waits for an answer.
const PING_TIMEOUT: Duration = Duration::from_secs(5);
/// How long `ensure_running` waits for a freshly started daemon.
const START_WAIT: Duration = Duration::from_secs(10);

/// Talks to the daemon on `IR/sv.sock`; one connection per call.
#[derive(Debug, Clone)]
pub struct SupervisorClient {
    socket: PathBuf,
    /// Longest wait for a reply: a request may wait for services to stop (up to the
    /// daemon's stop timeout, 60 s by default, plus the SIGKILL grace).
    timeout: Duration,
}

impl SupervisorClient {
    pub fn new(socket: PathBuf) -> Self {
        SupervisorClient {
            socket,
            timeout: Duration::from_secs(300),
        }
    }

    /// Another reply timeout than the default 300 s.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Whether a daemon answers a ping.
    pub fn is_running(&self) -> bool {
        matches!(self.call(&Request::Ping, PING_TIMEOUT), Ok(Reply::Pong))
    }

    /// Ensures the daemon runs: if nothing answers, starts `program args...` detached (a
    /// new session, through a double fork so that the caller keeps no child, stdin from
    /// /dev/null, stdout and stderr appended to `log`) and waits up to ~10 s for it.
    pub fn ensure_running(
        &self,
        program: &Path,
        args: &[OsString],
        log: &Path,
    ) -> Result<(), SupervisorError> {
        self.ensure_running_within(program, args, log, START_WAIT)
    }

    pub(crate) fn ensure_running_within(
        &self,
        program: &Path,
        args: &[OsString],
        log: &Path,
        wait: Duration,
    ) -> Result<(), SupervisorError> {
        if self.is_running() {
            return Ok(());
        }
        if let Some(dir) = log.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(|e| SupervisorError::io(format!("cannot create {}", dir.display()), e))?;
        }
        let out = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .mode(0o600)
            .open(log)
            .map_err(|e| SupervisorError::io(format!("cannot open {}", log.display()), e))?;
        let err = out
            .try_clone()
            .map_err(|e| SupervisorError::io(format!("cannot open {}", log.display()), e))?;
        let mut command = Command::new(program);
        command
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err));
        // Its own session, and no child of ours: the intermediate process exits at once
        // (reaped below), the daemon, orphaned, goes on to exec.
        crate::process::Session::detached().prepare(&mut command);
        let mut child = command
            .spawn()
            .map_err(|e| SupervisorError::io(format!("cannot start {}", program.display()), e))?;
        let _ = child.wait();
        tracing::info!(program = %program.display(), log = %log.display(), "supervisor started");
        let deadline = Instant::now() + wait;
        while Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
            if self.is_running() {
                return Ok(());
            }
        }
        Err(SupervisorError::StartFailed {
            program: program.to_owned(),
            socket: self.socket.clone(),
            log: log.to_owned(),
            waited: wait,
        })
    }

    /// Stores the group's spec and converges it (see the module doc); true if the spec
    /// changed (every process of the group was then restarted).
    pub fn apply(&self, group: &GroupSpec) -> Result<bool, SupervisorError> {
        match self.call(&Request::Apply(Box::new(group.clone())), self.timeout)? {
            Reply::Applied { changed } => Ok(changed),
            other => Err(unexpected(other)),
        }
    }

    /// Stops the group (waiting until its processes are gone) and deletes its spec. An
    /// unknown group is fine.
    pub fn remove(&self, partition_id: &str) -> Result<(), SupervisorError> {
        let request = Request::Remove {
            partition_id: partition_id.to_owned(),
        };
        match self.call(&request, self.timeout)? {
            Reply::Done => Ok(()),
            other => Err(unexpected(other)),
        }
    }

    pub fn status(&self) -> Result<Vec<ProcessStatus>, SupervisorError> {
        match self.call(&Request::Status, self.timeout)? {
            Reply::Status(list) => Ok(list),
            other => Err(unexpected(other)),
        }
    }

    /// `target`: `<partition>` (every process of the group) or `<partition>:<name>`
    /// (`<name>` or `<name>-on-watch`; a watched service may be named without the
    /// suffix). Returns the targets' statuses afterwards.
    pub fn control(
        &self,
        op: ControlOp,
        target: &str,
    ) -> Result<Vec<ProcessStatus>, SupervisorError> {
        let request = Request::Control {
            op,
            target: target.to_owned(),
        };
        match self.call(&request, self.timeout)? {
            Reply::Status(list) => Ok(list),
            other => Err(unexpected(other)),
        }
    }

    /// Starts every process of every group that has none (offline mode, the reference's
    /// `startAllProcesses`).
    pub fn start_all(&self) -> Result<(), SupervisorError> {
        match self.call(&Request::StartAll, self.timeout)? {
            Reply::Done => Ok(()),
            other => Err(unexpected(other)),
        }
    }

    /// Stops every service, then the daemon; returns once the services are gone.
    pub fn shutdown(&self) -> Result<(), SupervisorError> {
        match self.call(&Request::Shutdown, self.timeout)? {
            Reply::Done => Ok(()),
            other => Err(unexpected(other)),
        }
    }

    fn call(&self, request: &Request, timeout: Duration) -> Result<Reply, SupervisorError> {
        let mut stream = UnixStream::connect(&self.socket).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused => {
                SupervisorError::NotRunning {
                    socket: self.socket.clone(),
                }
            }
            _ => SupervisorError::io(format!("cannot connect to {}", self.socket.display()), e),
        })?;
        let timed_out = |e: std::io::Error| match e.kind() {
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => {
                SupervisorError::Timeout {
                    socket: self.socket.clone(),
                    after: timeout,
                }
            }
            _ => SupervisorError::io(format!("talking to {}", self.socket.display()), e),
        };
        let timeout = timeout.max(Duration::from_millis(1));
        stream
            .set_read_timeout(Some(timeout))
            .and_then(|()| stream.set_write_timeout(Some(timeout)))
            .map_err(timed_out)?;
        let mut line =
            serde_json::to_string(request).map_err(|e| SupervisorError::Protocol(e.to_string()))?;
        line.push('\n');
        stream.write_all(line.as_bytes()).map_err(timed_out)?;
        let mut reader = BufReader::new(stream);
        let mut answer = String::new();
        let n = (&mut reader)
            .take(MAX_LINE)
            .read_line(&mut answer)
            .map_err(timed_out)?;
        if n == 0 {
            return Err(SupervisorError::Protocol(
                "the supervisor closed the connection without answering".into(),
            ));
        }
        match serde_json::from_str::<Reply>(answer.trim_end()) {
            Ok(Reply::Error(e)) => Err(e.into()),
            Ok(reply) => Ok(reply),
            Err(e) => Err(SupervisorError::Protocol(format!("bad reply: {e}"))),
        }
    }
}

fn unexpected(reply: Reply) -> SupervisorError {
    SupervisorError::Protocol(format!("unexpected reply {reply:?}"))
}
