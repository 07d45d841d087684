//! The supervisor daemon: the groups' state behind one mutex, a monitor thread that reaps
//! and restarts processes every tick, a thread that calls the watched-exit hook, and one
//! thread per control connection. Requests that change anything are serialised by a
//! second mutex so that a stop in progress (which waits without holding the state lock,
//! so that the monitor keeps reaping) is never interleaved with another change.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::AsFd;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Sender};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::Signal;

use super::logfile::LogSink;
use super::proc::{self, group_has_members, owner, spawn_service, Leader, Peek};
use super::protocol::{Reply, Request, MAX_LINE};
use super::store::{validate, Store};
use super::{
    ControlOp, GroupSpec, ProcessState, ProcessStatus, ServiceSpec, SupervisorError,
    WatchedExitHook,
};
use crate::config::NodeConfig;
use crate::process::kill_group;

/// After SIGKILL, how long to wait for the rest of a process group (a process stuck in
/// the kernel) before giving up on it.
const KILL_GRACE: Duration = Duration::from_secs(5);

/// Tunables of the daemon; [`DaemonOptions::from_env`] is what `run_daemon` uses.
#[derive(Debug, Clone)]
pub struct DaemonOptions {
    /// SIGTERM to SIGKILL (the reference's `stopwaitsecs=60`).
    pub stop_timeout: Duration,
    /// First restart delay after a failure; doubled at each further failure.
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
    /// A process that ran this long before failing starts its back-off over.
    pub stable_after: Duration,
    /// Consecutive failures after which a process is `Fatal`.
    pub max_failures: u32,
    /// Stop everything and return on SIGTERM/SIGINT (off in tests, which run several
    /// daemons in one process).
    pub handle_signals: bool,
    /// Period of the monitor (reaping, back-off restarts, stop escalation).
    pub tick: Duration,
}

impl Default for DaemonOptions {
    fn default() -> DaemonOptions {
        DaemonOptions {
            stop_timeout: Duration::from_secs(60),
            backoff_initial: Duration::from_secs(1),
            backoff_max: Duration::from_secs(60),
            stable_after: Duration::from_secs(60),
            max_failures: 20,
            handle_signals: true,
            tick: Duration::from_millis(100),
        }
    }
}

impl DaemonOptions {
    /// The defaults, with `SLAPGRID_STOP_TIMEOUT_SECS` overriding the stop timeout.
    pub fn from_env() -> DaemonOptions {
        let mut options = DaemonOptions::default();
        if let Some(secs) = std::env::var("SLAPGRID_STOP_TIMEOUT_SECS")
            .ok()
            .and_then(|v| v.trim().parse::<u64>().ok())
        {
            options.stop_timeout = Duration::from_secs(secs);
        }
        options
    }

    /// Delay before the restart following the `failures`-th consecutive failure.
    fn backoff(&self, failures: u32) -> Duration {
        let factor = 1u32 << failures.saturating_sub(1).min(20);
        self.backoff_initial
            .saturating_mul(factor)
            .min(self.backoff_max)
    }
}

/// Runs the daemon for `cfg`'s instance root until a `Shutdown` request or SIGTERM/SIGINT,
/// then stops every group. See [`run_daemon_with`].
pub fn run_daemon(
    cfg: &NodeConfig,
    on_watched_exit: WatchedExitHook,
) -> Result<(), SupervisorError> {
    run_daemon_with(cfg, on_watched_exit, DaemonOptions::from_env())
}

/// Runs the daemon: takes `IR/etc/supervisor.d/.lock` (one daemon per instance root),
/// starts every stored group (unlike the reference, whose programs are not autostarted,
/// so that a rebooted node gets its services back), then serves `IR/sv.sock`.
pub fn run_daemon_with(
    cfg: &NodeConfig,
    on_watched_exit: WatchedExitHook,
    options: DaemonOptions,
) -> Result<(), SupervisorError> {
    let store = Store::new(cfg.instance_root.join("etc").join("supervisor.d"));
    store.create()?;
    let lock_path = store.dir().join(".lock");
    let _lock = take_lock(&lock_path)?;
    if options.handle_signals {
        proc::catch_termination_signals();
    }
    let socket = cfg.supervisor_socket();
    let (tx, rx) = mpsc::channel::<(String, String)>();
    let daemon = Arc::new(Daemon {
        options,
        store,
        state: Mutex::new(State::default()),
        requests: Mutex::new(()),
        closing: AtomicBool::new(false),
        exit: AtomicBool::new(false),
        monitor_exit: AtomicBool::new(false),
        hooks: Mutex::new(Some(tx)),
        socket: socket.clone(),
        socket_id: Mutex::new(None),
    });
    let hook_thread = std::thread::Builder::new()
        .name("sv-hook".into())
        .spawn(move || {
            for (group, name) in rx {
                let call = std::panic::AssertUnwindSafe(|| on_watched_exit(&group, &name));
                if std::panic::catch_unwind(call).is_err() {
                    tracing::error!(group, process = name, "watched-exit hook panicked");
                }
            }
        })
        .map_err(|e| SupervisorError::io("cannot start the hook thread", e))?;
    let monitor = {
        let d = daemon.clone();
        std::thread::Builder::new()
            .name("sv-monitor".into())
            .spawn(move || d.monitor())
            .map_err(|e| SupervisorError::io("cannot start the monitor thread", e))?
    };

    let served = daemon.clone().start_and_serve();

    {
        let _serial = lock(&daemon.requests);
        daemon.shutdown_locked();
    }
    daemon.monitor_exit.store(true, Ordering::SeqCst);
    let _ = monitor.join();
    drop(lock(&daemon.hooks).take());
    let _ = hook_thread.join();
    tracing::info!(socket = %socket.display(), "supervisor stopped");
    served
}

/// An exclusive `flock` held as long as the returned file lives.
fn take_lock(path: &Path) -> Result<std::fs::File, SupervisorError> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path)
        .map_err(|e| SupervisorError::io(format!("cannot open {}", path.display()), e))?;
    // flock(LOCK_EX | LOCK_NB), held as long as the file is open.
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(SupervisorError::AlreadyRunning {
            lock: path.to_owned(),
        }),
        Err(std::fs::TryLockError::Error(e)) => Err(SupervisorError::io(
            format!("cannot lock {}", path.display()),
            e,
        )),
    }
}

/// Binds the socket 0600 without a moment where it is reachable with looser permissions
/// and atomically replaces a stale one: bind in a fresh 0700 directory next to it, chmod,
/// rename into place.
fn bind_socket(socket: &Path) -> Result<UnixListener, SupervisorError> {
    let parent = socket.parent().unwrap_or(Path::new("."));
    let tmp_dir = parent.join(format!(".sv-bind-{}", std::process::id()));
    let tmp = tmp_dir.join("s");
    let io = |what: &str, e| SupervisorError::io(format!("cannot {what} {}", socket.display()), e);
    let _ = std::fs::remove_file(&tmp);
    let _ = std::fs::remove_dir(&tmp_dir);
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&tmp_dir)
        .map_err(|e| io("prepare", e))?;
    let result = UnixListener::bind(&tmp)
        .and_then(|l| {
            std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))?;
            std::fs::rename(&tmp, socket)?;
            Ok(l)
        })
        .map_err(|e| io("bind", e));
    let _ = std::fs::remove_file(&tmp);
    let _ = std::fs::remove_dir(&tmp_dir);
    result
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic elsewhere must not take the daemon down: the state stays usable.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// `exit 3`, `killed by signal 9`.
fn describe(status: Option<i32>) -> String {
    match status {
        Some(code) if code >= 0 => format!("exit {code}"),
        Some(sig) => format!("killed by signal {}", -sig),
        None => "unknown status".into(),
    }
}

struct Daemon {
    options: DaemonOptions,
    store: Store,
    state: Mutex<State>,
    /// Held for the whole of each request that changes anything.
    requests: Mutex<()>,
    /// Shutting down: refuse changes, restart nothing.
    closing: AtomicBool,
    /// The accept loop must return.
    exit: AtomicBool,
    monitor_exit: AtomicBool,
    hooks: Mutex<Option<Sender<(String, String)>>>,
    socket: PathBuf,
    /// (dev, inode) of the socket we bound, so that we never delete a successor's.
    socket_id: Mutex<Option<(u64, u64)>>,
}

#[derive(Default)]
struct State {
    groups: BTreeMap<String, Group>,
    /// Leaders given up on after SIGKILL (see `tick_proc`), reaped when they go.
    abandoned: Vec<Leader>,
}

impl State {
    fn find_mut(&mut self, group: &str, name: &str) -> Option<&mut Proc> {
        self.groups
            .get_mut(group)?
            .procs
            .iter_mut()
            .find(|p| p.display == name)
    }

    fn find(&self, group: &str, name: &str) -> Option<&Proc> {
        self.groups
            .get(group)?
            .procs
            .iter()
            .find(|p| p.display == name)
    }
}

struct Group {
    spec: GroupSpec,
    procs: Vec<Proc>,
}

impl Group {
    fn new(spec: GroupSpec) -> Group {
        let procs = spec.services.iter().cloned().map(Proc::new).collect();
        Group { spec, procs }
    }
}

struct Stopping {
    term_deadline: Instant,
    killed_at: Option<Instant>,
}

struct Proc {
    service: ServiceSpec,
    display: String,
    state: ProcessState,
    /// Its process, while it has one.
    leader: Option<Leader>,
    exit_status: Option<i32>,
    restarts: u32,
    since: u64,
    started_at: Option<Instant>,
    /// Consecutive failures (reset by a clean exit, a long enough run or a manual start).
    failures: u32,
    retry_at: Option<Instant>,
    stopping: Option<Stopping>,
}

impl Proc {
    fn new(service: ServiceSpec) -> Proc {
        Proc {
            display: service.process_name(),
            service,
            state: ProcessState::Stopped,
            leader: None,
            exit_status: None,
            restarts: 0,
            since: unix_now(),
            started_at: None,
            failures: 0,
            retry_at: None,
            stopping: None,
        }
    }

    fn set_state(&mut self, state: ProcessState) {
        if self.state != state {
            self.state = state;
            self.since = unix_now();
        }
    }

    fn status(&self, spec: &GroupSpec) -> ProcessStatus {
        ProcessStatus {
            group: spec.partition_id.clone(),
            name: self.display.clone(),
            state: self.state,
            pid: self.leader.as_ref().map(|l| l.pid() as u32),
            exit_status: self.exit_status,
            restarts: self.restarts,
            since_unix: self.since,
            log: spec.log_path(&self.service),
        }
    }
}

impl Daemon {
    fn start_and_serve(self: Arc<Daemon>) -> Result<(), SupervisorError> {
        proc::kill_orphans(&self.socket, self.options.stop_timeout);
        for spec in self.store.load_all() {
            tracing::info!(group = %spec.partition_id, "starting a stored group");
            let mut state = lock(&self.state);
            let group = state
                .groups
                .entry(spec.partition_id.clone())
                .or_insert(Group::new(spec));
            self.start_group(group, |_| true);
        }
        let listener = bind_socket(&self.socket)?;
        if let Ok(meta) = std::fs::metadata(&self.socket) {
            *lock(&self.socket_id) = Some((meta.dev(), meta.ino()));
        }
        listener
            .set_nonblocking(true)
            .map_err(|e| SupervisorError::io("cannot configure the socket", e))?;
        tracing::info!(socket = %self.socket.display(), "supervisor listening");
        let tick_ms = self.options.tick.as_millis().clamp(10, 1000) as u16;
        loop {
            if self.exit.load(Ordering::SeqCst)
                || (self.options.handle_signals && proc::signalled())
            {
                return Ok(());
            }
            // Until a connection or the tick (an error, EINTR included: the same).
            let _ = poll(
                &mut [PollFd::new(listener.as_fd(), PollFlags::POLLIN)],
                PollTimeout::from(tick_ms),
            );
            match listener.accept() {
                Ok((stream, _)) => {
                    let d = self.clone();
                    let spawned = std::thread::Builder::new()
                        .name("sv-conn".into())
                        .spawn(move || d.serve(stream));
                    if let Err(e) = spawned {
                        tracing::warn!(error = %e, "cannot serve a connection");
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    std::thread::sleep(self.options.tick);
                }
            }
        }
    }

    /// One connection: request lines until EOF.
    fn serve(&self, stream: UnixStream) {
        if stream.set_nonblocking(false).is_err() {
            return;
        }
        let Ok(read_half) = stream.try_clone() else {
            return;
        };
        let mut reader = BufReader::new(read_half);
        let mut writer = stream;
        loop {
            let mut line = String::new();
            let reply = match (&mut reader).take(MAX_LINE).read_line(&mut line) {
                Ok(0) => return,
                Ok(_) if !line.ends_with('\n') && line.len() as u64 >= MAX_LINE => {
                    let reply = Reply::Error(
                        SupervisorError::Protocol("request line too long".into()).into(),
                    );
                    let _ = write_reply(&mut writer, &reply);
                    return;
                }
                Ok(_) => match serde_json::from_str::<Request>(line.trim_end()) {
                    Ok(request) => self.handle(request),
                    Err(e) => {
                        Reply::Error(SupervisorError::Protocol(format!("bad request: {e}")).into())
                    }
                },
                Err(e) => {
                    let reply =
                        Reply::Error(SupervisorError::Protocol(format!("bad request: {e}")).into());
                    let _ = write_reply(&mut writer, &reply);
                    return;
                }
            };
            if write_reply(&mut writer, &reply).is_err() {
                return;
            }
        }
    }

    /// Ping and Status are answered at once (also while a stop is in progress); the
    /// others one at a time.
    fn handle(&self, request: Request) -> Reply {
        let result = match request {
            Request::Ping => Ok(Reply::Pong),
            Request::Status => Ok(Reply::Status(self.status_all())),
            change => {
                let _serial = lock(&self.requests);
                if self.closing.load(Ordering::SeqCst) {
                    Err(SupervisorError::ShuttingDown)
                } else {
                    self.change(change)
                }
            }
        };
        result.unwrap_or_else(|e| Reply::Error(e.into()))
    }

    /// A request that changes something (the request lock is held).
    fn change(&self, request: Request) -> Result<Reply, SupervisorError> {
        match request {
            Request::Ping => Ok(Reply::Pong),
            Request::Status => Ok(Reply::Status(self.status_all())),
            Request::Apply(spec) => self.apply(*spec).map(|changed| Reply::Applied { changed }),
            Request::Remove { partition_id } => self.remove(&partition_id).map(|()| Reply::Done),
            Request::Control { op, target } => self.control(op, &target).map(Reply::Status),
            Request::StartAll => {
                self.start_all();
                Ok(Reply::Done)
            }
            Request::Shutdown => {
                tracing::info!("shutdown requested");
                self.shutdown_locked();
                self.exit.store(true, Ordering::SeqCst);
                Ok(Reply::Done)
            }
        }
    }

    /// Stops everything and removes our socket (the request lock is held).
    fn shutdown_locked(&self) {
        self.closing.store(true, Ordering::SeqCst);
        let all: Vec<(String, String)> = {
            let state = lock(&self.state);
            state
                .groups
                .iter()
                .flat_map(|(g, group)| {
                    group
                        .procs
                        .iter()
                        .map(move |p| (g.clone(), p.display.clone()))
                })
                .collect()
        };
        self.stop_and_wait(&all);
        if let Some((dev, ino)) = lock(&self.socket_id).take() {
            if std::fs::metadata(&self.socket).is_ok_and(|m| m.dev() == dev && m.ino() == ino) {
                let _ = std::fs::remove_file(&self.socket);
            }
        }
    }

    fn status_all(&self) -> Vec<ProcessStatus> {
        let state = lock(&self.state);
        state
            .groups
            .values()
            .flat_map(|g| g.procs.iter().map(|p| p.status(&g.spec)))
            .collect()
    }

    fn apply(&self, spec: GroupSpec) -> Result<bool, SupervisorError> {
        validate(&spec)?;
        let id = spec.partition_id.clone();
        let previous: Option<(GroupSpec, Vec<(String, String)>)> = {
            let state = lock(&self.state);
            state.groups.get(&id).map(|g| {
                (
                    g.spec.clone(),
                    g.procs
                        .iter()
                        .map(|p| (id.clone(), p.display.clone()))
                        .collect(),
                )
            })
        };
        let changed = previous.as_ref().map(|(s, _)| s) != Some(&spec);
        let restart = previous
            .as_ref()
            .is_none_or(|(s, _)| s.restart_needed(&spec));
        self.store.save(&spec)?;
        if changed && !restart {
            // Only the cgroup's limits changed: they apply to the running processes.
            if let Some(cgroup) = &spec.cgroup {
                if let Err(e) = cgroup.ensure() {
                    tracing::warn!(group = %id, error = %e, "limits not applied");
                }
            }
            if let Some(group) = lock(&self.state).groups.get_mut(&id) {
                group.spec = spec.clone();
            }
        } else if changed {
            if let Some((_, targets)) = &previous {
                tracing::info!(group = %id, "group changed: restarting all its processes");
                self.stop_and_wait(targets);
            } else {
                tracing::info!(group = %id, "new group");
            }
            lock(&self.state)
                .groups
                .insert(id.clone(), Group::new(spec));
        }
        let mut state = lock(&self.state);
        if let Some(group) = state.groups.get_mut(&id) {
            self.start_group(group, |_| true);
        }
        Ok(changed)
    }

    fn remove(&self, partition_id: &str) -> Result<(), SupervisorError> {
        let targets: Option<Vec<(String, String)>> = {
            let state = lock(&self.state);
            state.groups.get(partition_id).map(|g| {
                g.procs
                    .iter()
                    .map(|p| (partition_id.to_owned(), p.display.clone()))
                    .collect()
            })
        };
        if let Some(targets) = targets {
            tracing::info!(group = %partition_id, "removing group");
            self.stop_and_wait(&targets);
            lock(&self.state).groups.remove(partition_id);
        }
        if validate_id(partition_id) {
            self.store.delete(partition_id)?;
        }
        Ok(())
    }

    fn control(&self, op: ControlOp, target: &str) -> Result<Vec<ProcessStatus>, SupervisorError> {
        let (group_id, name) = match target.split_once(':') {
            Some((g, n)) => (g, Some(n)),
            None => (target, None),
        };
        let targets: Vec<(String, String)> = {
            let state = lock(&self.state);
            let group = state
                .groups
                .get(group_id)
                .ok_or_else(|| SupervisorError::UnknownGroup(group_id.to_owned()))?;
            match name {
                None => group
                    .procs
                    .iter()
                    .map(|p| (group_id.to_owned(), p.display.clone()))
                    .collect(),
                Some(n) => {
                    let watched = format!("{n}-on-watch");
                    let p = group
                        .procs
                        .iter()
                        .find(|p| p.display == n)
                        .or_else(|| group.procs.iter().find(|p| p.display == watched))
                        .ok_or_else(|| SupervisorError::UnknownProcess(target.to_owned()))?;
                    vec![(group_id.to_owned(), p.display.clone())]
                }
            }
        };
        if matches!(op, ControlOp::Stop | ControlOp::Restart) {
            tracing::info!(target, ?op, "stopping on request");
            self.stop_and_wait(&targets);
        }
        let mut state = lock(&self.state);
        if matches!(op, ControlOp::Start | ControlOp::Restart) {
            if let Some(group) = state.groups.get_mut(group_id) {
                self.start_group(group, |p| targets.iter().any(|(_, n)| *n == p.display));
            }
        }
        Ok(targets
            .iter()
            .filter_map(|(g, n)| {
                let group = state.groups.get(g)?;
                let p = group.procs.iter().find(|p| p.display == *n)?;
                Some(p.status(&group.spec))
            })
            .collect())
    }

    fn start_all(&self) {
        let mut state = lock(&self.state);
        for group in state.groups.values_mut() {
            self.start_group(group, |_| true);
        }
    }

    /// Starts the selected processes that have no process (a `Backoff` one at once).
    fn start_group(&self, group: &mut Group, selected: impl Fn(&Proc) -> bool) {
        let Group { spec, procs } = group;
        for p in procs.iter_mut().filter(|p| selected(p)) {
            if p.leader.is_some() {
                continue;
            }
            if p.state != ProcessState::Backoff {
                p.failures = 0;
            }
            self.spawn(spec, p, false);
        }
    }

    /// SIGTERM to the selected processes' groups, then waits (without the state lock:
    /// the monitor reaps, and SIGKILLs after the stop timeout) until none has a process.
    fn stop_and_wait(&self, targets: &[(String, String)]) {
        {
            let mut state = lock(&self.state);
            let now = Instant::now();
            for (g, n) in targets {
                if let Some(p) = state.find_mut(g, n) {
                    self.begin_stop(g, p, now);
                }
            }
        }
        let pause = (self.options.tick / 2).max(Duration::from_millis(5));
        loop {
            {
                let state = lock(&self.state);
                if targets
                    .iter()
                    .all(|(g, n)| state.find(g, n).is_none_or(|p| p.leader.is_none()))
                {
                    return;
                }
            }
            std::thread::sleep(pause);
        }
    }

    fn begin_stop(&self, group: &str, p: &mut Proc, now: Instant) {
        p.retry_at = None;
        match p.leader.as_ref().map(Leader::pid) {
            Some(pid) => {
                if p.stopping.is_none() {
                    tracing::info!(group, process = %p.display, pid, "stopping");
                    kill_group(pid, Signal::SIGTERM);
                    p.stopping = Some(Stopping {
                        term_deadline: now + self.options.stop_timeout,
                        killed_at: None,
                    });
                }
            }
            None => p.set_state(ProcessState::Stopped),
        }
    }

    /// Starts `p` now. `automatic`: a restart after a failure (counted in `restarts`).
    fn spawn(&self, spec: &GroupSpec, p: &mut Proc, automatic: bool) {
        p.retry_at = None;
        if automatic {
            p.restarts = p.restarts.saturating_add(1);
        }
        match spawn_service(spec, &p.service, &p.display, &self.socket) {
            Ok(leader) => {
                let pid = leader.pid();
                tracing::info!(group = %spec.partition_id, process = %p.display, pid, "started");
                p.leader = Some(leader);
                p.started_at = Some(Instant::now());
                p.set_state(ProcessState::Running);
            }
            Err(message) => {
                tracing::warn!(group = %spec.partition_id, process = %p.display, error = %message, "cannot start");
                let mut log = LogSink::new(spec.log_path(&p.service), owner(spec));
                log.write(format!("supervisor: {message}\n").as_bytes());
                p.started_at = None;
                self.failed(spec, p, Instant::now());
            }
        }
    }

    /// One more consecutive failure: `Backoff` with a growing delay, or `Fatal`.
    fn failed(&self, spec: &GroupSpec, p: &mut Proc, now: Instant) {
        p.failures = p.failures.saturating_add(1);
        if p.failures >= self.options.max_failures {
            tracing::error!(group = %spec.partition_id, process = %p.display, failures = p.failures, "giving up: FATAL");
            p.retry_at = None;
            p.set_state(ProcessState::Fatal);
        } else {
            let delay = self.options.backoff(p.failures);
            tracing::info!(group = %spec.partition_id, process = %p.display, ?delay, "back-off before restarting");
            p.retry_at = Some(now + delay);
            p.set_state(ProcessState::Backoff);
        }
    }

    fn monitor(&self) {
        while !self.monitor_exit.load(Ordering::SeqCst) {
            // A bug in one pass must not stop the supervision of every service.
            let events =
                match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.tick())) {
                    Ok(events) => events,
                    Err(_) => {
                        tracing::error!("supervisor monitor pass panicked");
                        Vec::new()
                    }
                };
            if !events.is_empty() {
                if let Some(tx) = lock(&self.hooks).as_ref() {
                    for event in events {
                        let _ = tx.send(event);
                    }
                }
            }
            std::thread::sleep(self.options.tick);
        }
    }

    /// One pass: reap, escalate stops, restart after back-off. Returns the watched exits
    /// to report (sent to the hook thread, outside the lock).
    fn tick(&self) -> Vec<(String, String)> {
        let mut events = Vec::new();
        let now = Instant::now();
        let closing = self.closing.load(Ordering::SeqCst);
        let mut state = lock(&self.state);
        let State { groups, abandoned } = &mut *state;
        abandoned.retain_mut(|leader| match leader.peek() {
            Peek::Running => true,
            Peek::Exited => {
                leader.reap();
                false
            }
            Peek::Lost => false,
        });
        for group in groups.values_mut() {
            let Group { spec, procs } = group;
            for p in procs.iter_mut() {
                self.tick_proc(spec, p, now, closing, &mut events, abandoned);
            }
        }
        events
    }

    fn tick_proc(
        &self,
        spec: &GroupSpec,
        p: &mut Proc,
        now: Instant,
        closing: bool,
        events: &mut Vec<(String, String)>,
        abandoned: &mut Vec<Leader>,
    ) {
        let group = spec.partition_id.as_str();
        if let Some((pid, exit)) = p.leader.as_ref().map(|l| (l.pid(), l.peek())) {
            // Looked at without reaping: while the leader is an unreaped zombie its pid
            // (the process group id) cannot be reused, so signalling the group stays safe.
            if let Some(stop) = p.stopping.as_mut() {
                let killed_long_ago = stop.killed_at.is_some_and(|t| now >= t + KILL_GRACE);
                let done = match exit {
                    // Reaped elsewhere: its pid may be anybody's now, signal nothing.
                    Peek::Lost => true,
                    Peek::Exited => killed_long_ago || !group_has_members(pid, pid),
                    Peek::Running => {
                        if killed_long_ago {
                            // Stuck in the kernel even after SIGKILL: do not block every
                            // request on it; the monitor reaps it whenever it goes.
                            tracing::error!(group, process = %p.display, pid, "still there after SIGKILL: abandoned");
                        }
                        killed_long_ago
                    }
                };
                if done {
                    let status = match (exit, p.leader.take()) {
                        (Peek::Exited, Some(mut leader)) => leader.reap(),
                        // Abandoned: reaped by the monitor whenever it goes.
                        (Peek::Running, Some(leader)) => {
                            abandoned.push(leader);
                            None
                        }
                        _ => None,
                    };
                    tracing::info!(group, process = %p.display, pid, status = %describe(status), "stopped");
                    p.exit_status = status.or(p.exit_status);
                    p.stopping = None;
                    p.started_at = None;
                    p.set_state(ProcessState::Stopped);
                } else if now >= stop.term_deadline {
                    if stop.killed_at.is_none() {
                        tracing::warn!(group, process = %p.display, pid, "did not stop in time: SIGKILL to its process group");
                        stop.killed_at = Some(now);
                    }
                    // Again at every tick: a process forked meanwhile must not escape.
                    kill_group(pid, Signal::SIGKILL);
                }
                return;
            }
            if exit == Peek::Running {
                return;
            }
            let status = match (exit, p.leader.take()) {
                (Peek::Exited, Some(mut leader)) => leader.reap(),
                _ => None,
            };
            p.exit_status = status;
            let ran = p
                .started_at
                .take()
                .map(|t| now.saturating_duration_since(t));
            if ran.is_some_and(|r| r >= self.options.stable_after) {
                p.failures = 0;
            }
            if p.service.watched {
                events.push((spec.partition_id.clone(), p.display.clone()));
            }
            if !p.service.watched && status == Some(0) {
                tracing::info!(group, process = %p.display, pid, "exited");
                p.failures = 0;
                p.set_state(ProcessState::Exited);
            } else {
                tracing::warn!(group, process = %p.display, pid, status = %describe(status), "exited unexpectedly");
                self.failed(spec, p, now);
            }
        }
        if p.state == ProcessState::Backoff && !closing && p.retry_at.is_none_or(|t| now >= t) {
            self.spawn(spec, p, true);
        }
    }
}

fn validate_id(partition_id: &str) -> bool {
    !partition_id.is_empty()
        && !partition_id.starts_with('.')
        && !partition_id.contains(['/', '\0'])
}

fn write_reply(writer: &mut UnixStream, reply: &Reply) -> std::io::Result<()> {
    let mut text = serde_json::to_string(reply).map_err(std::io::Error::other)?;
    text.push('\n');
    writer.write_all(text.as_bytes())?;
    writer.flush()
}
