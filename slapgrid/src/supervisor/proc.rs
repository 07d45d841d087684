//! The supervisor's processes as the operating system sees them: spawning a service as
//! the leader of its own session and process group, looking at its exit without reaping
//! it, reaping it, the members of its process group, the services a dead predecessor
//! left running, and the daemon's own termination signals. The daemon's state machine
//! (`daemon.rs`) decides when; this module does it, through nix and std.

use std::ffi::c_int;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::signal::{kill, sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};
use nix::sys::wait::{waitid, Id, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use super::logfile::LogSink;
use super::{GroupSpec, ServiceSpec};
use crate::process::{drop_privileges, is_root, Identity};

/// The only PATH a service gets (the reference gives none; recipes use absolute paths).
const SERVICE_PATH: &str = "/usr/local/bin:/usr/bin:/bin";
/// umask of the services (as every partition program).
const SERVICE_UMASK: u32 = 0o027;
/// Every service carries `SLAPGRID_SUPERVISOR=<socket>`: the daemon of this instance root
/// recognises the services of a predecessor that died without stopping them (SIGKILL, a
/// crash) and stops them before starting its own, so a service never runs twice.
const OWNER_VAR: &str = "SLAPGRID_SUPERVISOR";

/// A service's process: our child, the leader of its own session and process group
/// (whose id is its pid). Dropping it neither kills nor reaps the process.
#[derive(Debug)]
pub(super) struct Leader {
    child: Child,
}

/// What [`Leader::peek`] sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Peek {
    Running,
    /// Exited, not reaped yet.
    Exited,
    /// Not our child any more (reaped elsewhere): nothing to signal, nothing to reap.
    Lost,
}

impl Leader {
    /// Its pid, which is also its process group's id.
    pub(super) fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Whether it exited, without reaping it: while the leader is an unreaped zombie its
    /// pid (the process group id) cannot be reused, so signalling the group stays safe.
    pub(super) fn peek(&self) -> Peek {
        let flags = WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG | WaitPidFlag::WNOWAIT;
        match waitid(Id::Pid(Pid::from_raw(self.pid())), flags) {
            Ok(WaitStatus::StillAlive) => Peek::Running,
            Ok(_) => Peek::Exited,
            Err(Errno::ECHILD) => Peek::Lost,
            // nix knows no real-time signal: a process such a signal killed is reported
            // as EINVAL (waitid itself only says EINVAL of flags, and ours are valid).
            Err(Errno::EINVAL) => Peek::Exited,
            Err(_) => Peek::Running,
        }
    }

    /// Reaps it, if it exited: its exit code, or minus the signal that killed it.
    pub(super) fn reap(&mut self) -> Option<i32> {
        let status = self.child.try_wait().ok()??;
        status.code().or_else(|| status.signal().map(|s| -s))
    }
}

/// uid/gid for the service's files when the daemon can give them away.
pub(super) fn owner(spec: &GroupSpec) -> Option<(u32, u32)> {
    is_root().then_some((spec.uid, spec.gid))
}

/// Spawns one service as described in the module doc of `supervisor`: its own session,
/// the group's user, a minimal environment, output through a pipe to a log thread.
/// Returns its process or why it could not start.
pub(super) fn spawn_service(
    spec: &GroupSpec,
    service: &ServiceSpec,
    process_name: &str,
    socket: &Path,
) -> Result<Leader, String> {
    let command = service.command.display();
    let (read, write) =
        std::io::pipe().map_err(|e| format!("cannot start {command}: pipe: {e}"))?;
    let write_err = write
        .try_clone()
        .map_err(|e| format!("cannot start {command}: pipe: {e}"))?;
    let mut cmd = Command::new(&service.command);
    cmd.current_dir(&spec.directory)
        .env_clear()
        .env("USER", &spec.user)
        .env("LOGNAME", &spec.user)
        .env("HOME", &spec.home)
        .env("PATH", SERVICE_PATH)
        .env("SUPERVISOR_GROUP_NAME", &spec.partition_id)
        .env("SUPERVISOR_PROCESS_NAME", process_name)
        .env(OWNER_VAR, socket)
        .stdin(Stdio::null())
        .stdout(Stdio::from(write))
        .stderr(Stdio::from(write_err));
    let identity = Identity {
        uid: spec.uid,
        gid: spec.gid,
        name: spec.user.clone(),
        home: spec.home.clone(),
    };
    let join = match &spec.cgroup {
        // (made again with its limits when gone since the agent made it: a reboot)
        Some(cgroup) => cgroup
            .open_procs()
            .map_err(|e| format!("cannot start {command}: {e}"))?,
        None => Vec::new(),
    };
    drop_privileges(&mut cmd, &identity, SERVICE_UMASK, join)
        .map_err(|e| format!("cannot start {command}: {e}"))?;
    let child = cmd
        .spawn()
        .map_err(|e| format!("cannot start {command}: {e}"))?;
    // The pipe's write ends must now live in the child only, or the log thread never
    // sees the end of the output.
    drop(cmd);
    let sink = LogSink::new(spec.log_path(service), owner(spec));
    let spawned = std::thread::Builder::new()
        .name(format!("sv-log-{process_name}"))
        .spawn(move || sink.pump(read.into()));
    if let Err(e) = spawned {
        tracing::warn!(group = %spec.partition_id, process = %process_name, error = %e, "no log thread: output dropped");
    }
    Ok(Leader { child })
}

/// Whether a live (not zombie) process other than `except` is in process group `pgid`.
pub(crate) fn group_has_members(pgid: i32, except: i32) -> bool {
    !group_members(pgid).iter().all(|&p| p == except)
}

/// Live (not zombie) processes of process group `pgid`, from /proc.
pub(crate) fn group_members(pgid: i32) -> Vec<i32> {
    crate::procfs::all()
        .into_iter()
        .filter(|p| p.pgrp == pgid && p.is_live())
        .map(|p| p.pid)
        .collect()
}

/// (pid, session) of every live process, from /proc.
fn sessions() -> Vec<(i32, i32)> {
    crate::procfs::all()
        .into_iter()
        .filter(|p| p.is_live())
        .map(|p| (p.pid, p.session))
        .collect()
}

/// Stops the services a dead predecessor left running: the sessions whose leader's
/// environment names `socket` (SIGTERM to every member, SIGKILL after `timeout`).
pub(super) fn kill_orphans(socket: &Path, timeout: Duration) {
    let tag = format!("{OWNER_VAR}={}", socket.display());
    let all = sessions();
    let leaders: Vec<i32> = all
        .iter()
        .filter(|(pid, session)| pid == session)
        .filter(|(pid, _)| {
            std::fs::read(format!("/proc/{pid}/environ"))
                .map(|env| env.split(|b| *b == 0).any(|v| v == tag.as_bytes()))
                .unwrap_or(false)
        })
        .map(|(pid, _)| *pid)
        .collect();
    if leaders.is_empty() {
        return;
    }
    tracing::warn!(
        ?leaders,
        "stopping services a previous supervisor left running"
    );
    let members = |all: &[(i32, i32)]| -> Vec<i32> {
        all.iter()
            .filter(|(_, s)| leaders.contains(s))
            .map(|(p, _)| *p)
            .collect()
    };
    for pid in members(&all) {
        let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
    }
    let deadline = Instant::now() + timeout;
    loop {
        let left = members(&sessions());
        if left.is_empty() {
            return;
        }
        if Instant::now() >= deadline {
            for pid in left {
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            }
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

static SIGNALLED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: c_int) {
    SIGNALLED.store(true, Ordering::SeqCst);
}

/// From now on SIGTERM and SIGINT only mark the daemon as asked to stop (see
/// [`signalled`]); interrupted system calls are restarted.
#[allow(unsafe_code)]
pub(super) fn catch_termination_signals() {
    SIGNALLED.store(false, Ordering::SeqCst);
    let action = SigAction::new(
        SigHandler::Handler(on_signal),
        SaFlags::SA_RESTART,
        SigSet::empty(),
    );
    for signal in [Signal::SIGTERM, Signal::SIGINT] {
        // SAFETY: `sigaction` is unsafe for what a handler may do when it interrupts any
        // code: this one only stores into an atomic (async-signal-safe) and calls
        // nothing. Replacing the two dispositions is what the daemon wants: it runs as
        // a process of its own (`handle_signals` is off where it shares one, the tests).
        if let Err(e) = unsafe { sigaction(signal, &action) } {
            tracing::warn!(%signal, error = %e, "cannot catch the signal");
        }
    }
}

/// Whether SIGTERM or SIGINT arrived since [`catch_termination_signals`].
pub(super) fn signalled() -> bool {
    SIGNALLED.load(Ordering::SeqCst)
}
