//! Our own supervisor for partition services, in place of the reference's supervisord
//! (slapgrid-behaviour.md 4.4, 4.5, 4.10, 6).
//!
//! One long-running daemon per node ([`run_daemon`], started detached by the agent through
//! [`SupervisorClient::ensure_running`]) keeps every partition's `etc/run` and
//! `etc/service` entries running, also while the agent is not running or the master is
//! unreachable. The agent talks to it over the Unix socket `IR/sv.sock` (mode 0600): one
//! JSON request per line, one JSON reply per line (see `protocol.rs`).
//!
//! Why not supervisord: it drags a Python runtime into the node, its XML-RPC interface and
//! event-listener watchdog are awkward to drive from Rust, and it never restarts a crashed
//! service on its own (the reference waits for the master to react to a bang). Here a crash
//! is restarted with an exponential back-off and watched services still report their exit
//! through a hook (the agent posts the bang).
//!
//! Differences from the reference, on purpose:
//! * each group's spec is stored as `IR/etc/supervisor.d/<partition>.json` and every stored
//!   group is started when the daemon starts (the reference's programs are
//!   `autostart=false`: after a reboot nothing runs until the agent processes the
//!   partitions again);
//! * a failing service is restarted with back-off (1 s, 2 s, 4 s ... 60 s) and becomes
//!   `Fatal` after 20 consecutive quick failures (the reference: `startretries=0`,
//!   `autorestart=false`);
//! * services get a `PATH` (the reference gives none);
//! * log files rotate at 1 MiB with one backup (the reference: 100 KB, one backup).

mod client;
mod daemon;
mod logfile;
mod proc;
mod protocol;
mod store;
#[cfg(test)]
mod tests;

use std::path::PathBuf;
use std::time::Duration;

pub use client::SupervisorClient;
pub use daemon::{run_daemon, run_daemon_with, DaemonOptions};

/// One program of a partition: an entry of `etc/run` (`watched = false`) or of
/// `etc/service` (`watched = true`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ServiceSpec {
    /// The entry's file name.
    pub name: String,
    /// Absolute path of the entry, run without arguments.
    pub command: PathBuf,
    /// `etc/service`: any exit is reported to the watched-exit hook and the service is
    /// always restarted.
    pub watched: bool,
    /// A digest of the entry's content: a changed script makes a different spec, so the
    /// group restarts with it (the reference gets the same by hashing service names).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub digest: String,
}

impl ServiceSpec {
    /// The process name the reference shows: `<name>` or `<name>-on-watch`.
    pub fn process_name(&self) -> String {
        if self.watched {
            format!("{}-on-watch", self.name)
        } else {
            self.name.clone()
        }
    }
}

/// Every program of one partition, run as the partition's user.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct GroupSpec {
    pub partition_id: String,
    /// The partition directory: the services' working directory and where their logs go.
    pub directory: PathBuf,
    pub uid: u32,
    pub gid: u32,
    /// Login name (USER and LOGNAME of the services).
    pub user: String,
    /// The passwd home (HOME of the services).
    pub home: PathBuf,
    pub services: Vec<ServiceSpec>,
    /// The partition's cgroup: every process of the group joins it before it drops
    /// root; the daemon makes it again (with its limits) when it is gone (a reboot).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cgroup: Option<crate::cgroup::PartitionCgroup>,
}

impl GroupSpec {
    /// Whether going from `self` to `other` needs the processes restarted: anything but
    /// the cgroup's limits (which apply to running processes in place) differs.
    pub fn restart_needed(&self, other: &GroupSpec) -> bool {
        let strip = |s: &GroupSpec| {
            let mut s = s.clone();
            if let Some(c) = s.cgroup.as_mut() {
                c.limits = Default::default();
            }
            s
        };
        strip(self) != strip(other)
    }

    /// `<directory>/.<partition_id>_<name>.log`, as the reference names it.
    pub fn log_path(&self, service: &ServiceSpec) -> PathBuf {
        self.directory
            .join(format!(".{}_{}.log", self.partition_id, service.name))
    }
}

/// A process's state, named after supervisord's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum ProcessState {
    /// Never started, or stopped on request.
    Stopped,
    /// Not used yet: a spawned process is `Running` at once (the reference's
    /// `startsecs=0`).
    Starting,
    /// Has a pid (a process being stopped stays `Running` until it is reaped).
    Running,
    /// Failed; restarted after a delay.
    Backoff,
    /// An `etc/run` program that exited 0; run again when its group is started again.
    Exited,
    /// Failed too many times in a row; left alone until its group is started again.
    Fatal,
}

/// What `status` and `control` report for one process.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct ProcessStatus {
    /// The partition id.
    pub group: String,
    /// `<name>` or `<name>-on-watch`.
    pub name: String,
    pub state: ProcessState,
    pub pid: Option<u32>,
    /// Of the last exit: the exit code, or minus the signal number when killed by a signal.
    pub exit_status: Option<i32>,
    /// How many times the supervisor restarted it on its own (after a failure).
    pub restarts: u32,
    /// When it entered its current state (seconds since the epoch).
    pub since_unix: u64,
    /// Its log file.
    pub log: PathBuf,
}

/// What [`SupervisorClient::control`] does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum ControlOp {
    Start,
    Stop,
    Restart,
}

/// Called by the daemon (from a thread of its own, outside any lock: it may do network
/// I/O) when a watched service exits for any reason, exit 0 included, but not when it is
/// stopped on request: `(partition_id, "<name>-on-watch")`.
pub type WatchedExitHook = Box<dyn Fn(&str, &str) + Send + Sync>;

#[derive(Debug, thiserror::Error)]
pub enum SupervisorError {
    #[error("the supervisor is not running (nothing answers on {socket})")]
    NotRunning { socket: PathBuf },
    #[error("another supervisor already runs for this instance root (it holds {lock})")]
    AlreadyRunning { lock: PathBuf },
    #[error("started {program} but the supervisor did not answer on {socket} within {waited:?}; see {log}")]
    StartFailed {
        program: PathBuf,
        socket: PathBuf,
        log: PathBuf,
        waited: Duration,
    },
    #[error("the supervisor on {socket} did not answer within {after:?}")]
    Timeout { socket: PathBuf, after: Duration },
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("supervisor protocol error: {0}")]
    Protocol(String),
    #[error("invalid group spec: {0}")]
    InvalidSpec(String),
    #[error("no such group in the supervisor: {0}")]
    UnknownGroup(String),
    #[error("no such process in the supervisor: {0}")]
    UnknownProcess(String),
    #[error("the supervisor is shutting down")]
    ShuttingDown,
    #[error("the supervisor failed: {0}")]
    Daemon(String),
}

impl SupervisorError {
    fn io(context: impl Into<String>, source: std::io::Error) -> SupervisorError {
        SupervisorError::Io {
            context: context.into(),
            source,
        }
    }
}
