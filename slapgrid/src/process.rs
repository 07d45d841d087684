//! Running a program for a partition or a release: as its Unix user (privileges dropped
//! before exec: supplementary groups, gid, uid, umask), in its own process group so that a
//! timeout or a stop reaches every process it started, with the cleaned environment of
//! slapgrid-behaviour.md 3.3 and its output captured.

use std::ffi::{CString, OsString};
use std::io::Read;
use std::os::fd::OwnedFd;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sched::{unshare, CloneFlags};
use nix::sys::signal::{killpg, Signal};
use nix::sys::stat::{umask, Mode};
use nix::unistd::{
    fork, getegid, geteuid, getgrouplist, setgid, setgroups, setsid, setuid, write, ForkResult,
    Gid, Pid, Uid,
};

/// Largest output kept from one run (the tail is kept: that is where errors are).
const MAX_OUTPUT: usize = 1 << 20;
/// How long the output may stay open once the program exited (a daemon it started in
/// another session may hold it forever).
const OUTPUT_GRACE: Duration = Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    #[error("refusing to run {program} as uid {uid} gid {gid}: too dangerous")]
    Root { program: String, uid: u32, gid: u32 },
    #[error("cannot run {program}: {source}")]
    Spawn {
        program: String,
        source: std::io::Error,
    },
    /// A system call that changes this thread's credentials or attributes failed.
    #[error("{call}: {source}")]
    System {
        call: &'static str,
        #[source]
        source: Errno,
    },
    #[error("the thread could regain root")]
    RootRegainable,
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Cgroup(#[from] crate::cgroup::CgroupError),
}

/// Whom a program runs as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub uid: u32,
    pub gid: u32,
    /// The login name, or the uid in decimal when the user database has no entry.
    pub name: String,
    /// The passwd home (the partition directory for partition users).
    pub home: PathBuf,
}

impl Identity {
    /// The owner of `path` (uid and gid of `stat(path)`, as the reference takes them).
    pub fn owner_of(path: &Path) -> std::io::Result<Identity> {
        use std::os::unix::fs::MetadataExt;
        let meta = std::fs::metadata(path)?;
        Ok(Identity::from_ids(meta.uid(), meta.gid()))
    }

    /// The process's own identity (effective uid and gid).
    pub fn current() -> Identity {
        Identity::from_ids(geteuid().as_raw(), getegid().as_raw())
    }

    fn from_ids(uid: u32, gid: u32) -> Identity {
        match crate::sysdb::passwd_by_uid(uid) {
            Some(p) => Identity {
                uid,
                gid,
                name: p.name,
                home: p.home,
            },
            None => Identity {
                uid,
                gid,
                name: uid.to_string(),
                home: PathBuf::from("/"),
            },
        }
    }

    /// A user by login name, with its primary group.
    pub fn by_name(name: &str) -> Option<Identity> {
        crate::sysdb::passwd(name).map(|p| Identity {
            uid: p.uid,
            gid: p.gid,
            name: p.name,
            home: p.home,
        })
    }
}

/// Whether this process runs as root (privileged node).
pub fn is_root() -> bool {
    geteuid().is_root()
}

/// Whom a child or a thread becomes: read before the fork (or the thread), so that
/// nothing is looked up or allocated once it runs.
#[derive(Debug, Clone)]
struct Credentials {
    /// The supplementary groups (the primary gid included).
    groups: Vec<Gid>,
    gid: Gid,
    uid: Uid,
}

impl Credentials {
    /// `identity`'s: its groups from the group database (only its primary gid when the
    /// lookup fails).
    fn of(identity: &Identity) -> Credentials {
        let gid = Gid::from_raw(identity.gid);
        let groups = CString::new(identity.name.as_str())
            .ok()
            .and_then(|name| getgrouplist(&name, gid).ok())
            .unwrap_or_else(|| vec![gid]);
        Credentials {
            groups,
            gid,
            uid: Uid::from_raw(identity.uid),
        }
    }
}

/// Variables removed from the inherited environment (slapgrid-behaviour.md 3.3).
const REMOVED_ENV: &[&str] = &[
    "PYTHONHOME",
    "PYTHONPATH",
    "PYTHONSTARTUP",
    "PYTHONY2K",
    "PYTHONOPTIMIZE",
    "PYTHONDEBUG",
    "PYTHONDONTWRITEBYTECODE",
    "PYTHONINSPECT",
    "PYTHONUNBUFFERED",
    "PYTHONVERBOSE",
    "CONFIG_SITE",
    "ENV",
    "LOGNAME",
    "TEMP",
    "TMP",
    "TMPDIR",
    "LANG",
    "LANGUAGE",
    "LC_ADDRESS",
    "LC_COLLATE",
    "LC_CTYPE",
    "LC_IDENTIFICATION",
    "LC_MEASUREMENT",
    "LC_MESSAGES",
    "LC_MONETARY",
    "LC_NAME",
    "LC_NUMERIC",
    "LC_PAPER",
    "LC_SOURCED",
    "LC_TELEPHONE",
    "LC_TIME",
    "LC_ALL",
];

/// The cleaned environment with `HOME` set and `PYTHONNOUSERSITE=true`.
pub fn clean_env(home: &Path) -> Vec<(OsString, OsString)> {
    let mut env: Vec<(OsString, OsString)> = std::env::vars_os()
        .filter(|(k, _)| {
            let k = k.to_string_lossy();
            !REMOVED_ENV.contains(&k.as_ref()) && k != "HOME" && k != "PYTHONNOUSERSITE"
        })
        .collect();
    env.push(("HOME".into(), home.into()));
    env.push(("PYTHONNOUSERSITE".into(), "true".into()));
    env
}

/// Prepares `command` to run as `identity` with `umask`, in a new session (its own
/// process group), joining the cgroup whose `cgroup.procs` files `join` holds open (see
/// [`crate::cgroup::PartitionCgroup::open_procs`]) before it drops root. Not root: only
/// the session and umask (the reference does the same unprivileged). Root: refuses uid
/// or gid 0.
pub fn drop_privileges(
    command: &mut Command,
    identity: &Identity,
    umask: u32,
    join: Vec<OwnedFd>,
) -> Result<(), ProcessError> {
    let privileged = is_root();
    if privileged && (identity.uid == 0 || identity.gid == 0) {
        return Err(ProcessError::Root {
            program: format!("{:?}", command.get_program()),
            uid: identity.uid,
            gid: identity.gid,
        });
    }
    Session {
        umask: Some(umask),
        credentials: privileged.then(|| Credentials::of(identity)),
        detach: false,
        join: Arc::new(join),
    }
    .prepare(command);
    Ok(())
}

/// Runs `f` as `identity`, on a thread of its own whose credentials are dropped for
/// good before `f` starts: supplementary groups, gid and uid (real, effective and saved,
/// so it cannot regain root; its capabilities go with uid 0), its own umask 027 and
/// working directory (`unshare(CLONE_FS)`). The rest of the agent stays root meanwhile
/// and the thread ends with `f`. What `f` touches and every program it starts are
/// `identity`'s: a release is fetched, copied and unpacked as the software user, never
/// as root. Not root: `f` runs here as is (the agent is unprivileged already).
pub fn run_as<T: Send>(
    identity: &Identity,
    f: impl FnOnce() -> T + Send,
) -> Result<T, ProcessError> {
    if !is_root() {
        return Ok(f());
    }
    if identity.uid == 0 || identity.gid == 0 {
        return Err(ProcessError::Root {
            program: "(in-process work)".into(),
            uid: identity.uid,
            gid: identity.gid,
        });
    }
    let credentials = Credentials::of(identity);
    std::thread::scope(|s| {
        let handle = s.spawn(move || -> Result<T, ProcessError> {
            drop_thread_credentials(&credentials)?;
            Ok(f())
        });
        match handle.join() {
            Ok(result) => result,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    })
}

/// This thread only becomes `credentials`, for good.
fn drop_thread_credentials(credentials: &Credentials) -> Result<(), ProcessError> {
    let system = |call| move |source| ProcessError::System { call, source };
    // From here on the umask and working directory are this thread's own.
    unshare(CloneFlags::CLONE_FS).map_err(system("unshare(CLONE_FS)"))?;
    umask(Mode::from_bits_truncate(0o027));
    match set_thread_ids(credentials) {
        Err((call, e)) => Err(system(call)(e)),
        Ok(true) => Err(ProcessError::RootRegainable),
        Ok(false) if geteuid().is_root() => Err(ProcessError::RootRegainable),
        Ok(false) => Ok(()),
    }
}

/// Sets this thread's supplementary groups, then real, effective and saved gid and uid,
/// then tries to become root again: `Ok(true)` if that worked (it must not).
///
/// Linux keeps credentials per thread, and the kernel's calls change only the calling
/// thread's; glibc's `setgroups`, `setresgid` and `setresuid` (which nix's wrappers call)
/// change every thread of the process instead (they signal each one to repeat the call),
/// which would drop the whole agent. nix offers no per-thread variant, so the raw
/// system calls are made here, and nowhere else.
#[allow(unsafe_code)]
fn set_thread_ids(credentials: &Credentials) -> Result<bool, (&'static str, Errno)> {
    let Credentials { groups, gid, uid } = credentials;
    let (gid, uid) = (gid.as_raw(), uid.as_raw());
    // SAFETY: `syscall` with these numbers takes plain integers and, for setgroups, a
    // pointer to `groups.len()` gid_t values: `Gid` is `#[repr(transparent)]` over
    // `gid_t` and `groups` outlives the call, which only reads it. The calls change
    // nothing but this thread's credentials, which no Rust invariant depends on.
    unsafe {
        if libc::syscall(libc::SYS_setgroups, groups.len(), groups.as_ptr()) != 0 {
            return Err(("setgroups", Errno::last()));
        }
        if libc::syscall(libc::SYS_setresgid, gid, gid, gid) != 0 {
            return Err(("setresgid", Errno::last()));
        }
        if libc::syscall(libc::SYS_setresuid, uid, uid, uid) != 0 {
            return Err(("setresuid", Errno::last()));
        }
        Ok(libc::syscall(libc::SYS_setresuid, 0, 0, 0) == 0)
    }
}

/// A new session (own process group) and `umask`, as the current user: for the agent's
/// own helpers (`tar`), never for anything a partition or a release provides.
pub fn own_session(command: &mut Command, umask: u32) {
    Session {
        umask: Some(umask),
        ..Session::default()
    }
    .prepare(command);
}

/// What a child does between fork and exec, after std's own steps (descriptors, working
/// directory, signal mask): it always becomes the leader of a new session, so it has no
/// controlling terminal and its own process group, which a timeout or a stop signals
/// whole (grandchildren included). `Session::default()`: a new session, nothing else.
#[derive(Debug, Clone, Default)]
pub(crate) struct Session {
    /// The child's umask (inherited when `None`).
    umask: Option<u32>,
    /// Whom the child becomes (as root; supplementary groups, gid, then uid).
    credentials: Option<Credentials>,
    /// Forks once more and lets the intermediate process exit at once: the program that
    /// runs is no child of ours (init adopts it), for a daemon that outlives the agent.
    detach: bool,
    /// `cgroup.procs` files (opened by root before the fork) the child writes `0` to,
    /// joining a partition's cgroup before it runs anything of the partition's.
    join: Arc<Vec<OwnedFd>>,
}

impl Session {
    /// A new session whose program is no child of ours (see `detach`).
    pub(crate) fn detached() -> Session {
        Session {
            detach: true,
            ..Session::default()
        }
    }

    /// Sets `command` up to do it.
    #[allow(unsafe_code)]
    pub(crate) fn prepare(self, command: &mut Command) {
        let Session {
            umask: mask,
            credentials,
            detach,
            join,
        } = self;
        let mask = mask.map(Mode::from_bits_truncate);
        // SAFETY: the closure runs in the forked child, where only async-signal-safe
        // calls are sound. It makes only system calls through nix's thin wrappers
        // (setsid, umask, write, setgroups, setgid, setuid, fork) and `_exit`, on data
        // moved in before the fork (descriptors opened by the parent; nothing is looked
        // up or allocated; an error becomes an `io::Error` from its errno, which
        // allocates nothing). After `fork` the
        // intermediate process leaves with `_exit`, running no destructor nor atexit
        // handler of the agent; the other process goes on to exec.
        unsafe {
            command.pre_exec(move || {
                setsid()?;
                if let Some(mask) = mask {
                    umask(mask);
                }
                // Still root: into the partition's cgroup (`0` is the writer itself).
                for fd in join.iter() {
                    write(fd, b"0")?;
                }
                if let Some(c) = &credentials {
                    setgroups(&c.groups)?;
                    setgid(c.gid)?;
                    setuid(c.uid)?;
                    // Regaining root must fail.
                    if setuid(Uid::from_raw(0)).is_ok() {
                        return Err(Errno::EPERM.into());
                    }
                }
                if detach {
                    match fork()? {
                        ForkResult::Child => {}
                        ForkResult::Parent { .. } => libc::_exit(0),
                    }
                }
                Ok(())
            });
        }
    }
}

/// What one run produced.
#[derive(Debug)]
pub struct Output {
    pub status: ExitStatus,
    /// stdout and stderr interleaved, at most the last 1 MiB.
    pub output: String,
    pub timed_out: bool,
}

impl Output {
    pub fn success(&self) -> bool {
        self.status.success() && !self.timed_out
    }

    /// `exit 3`, `killed by signal 9` or `timed out`.
    pub fn describe(&self) -> String {
        if self.timed_out {
            "timed out".into()
        } else if let Some(code) = self.status.code() {
            format!("exit {code}")
        } else {
            format!("killed by signal {}", self.status.signal().unwrap_or(0))
        }
    }
}

/// A program to run and how.
#[derive(Debug, Clone)]
pub struct Run {
    pub program: PathBuf,
    pub args: Vec<OsString>,
    pub cwd: PathBuf,
    /// `None`: as the current user (the agent's own helpers only).
    pub identity: Option<Identity>,
    /// The whole environment (see [`clean_env`]).
    pub env: Vec<(OsString, OsString)>,
    pub timeout: Option<Duration>,
    pub umask: u32,
    /// The partition's cgroup the program (and all it starts) runs in.
    pub cgroup: Option<crate::cgroup::PartitionCgroup>,
}

impl Run {
    /// `program` in `cwd` with the cleaned environment whose HOME is `home`, umask 027.
    pub fn new(program: impl Into<PathBuf>, cwd: impl Into<PathBuf>, home: &Path) -> Run {
        Run {
            program: program.into(),
            args: Vec::new(),
            cwd: cwd.into(),
            identity: None,
            env: clean_env(home),
            timeout: None,
            umask: 0o027,
            cgroup: None,
        }
    }

    /// Runs the program in `cgroup` (when given).
    pub fn in_cgroup(mut self, cgroup: Option<crate::cgroup::PartitionCgroup>) -> Run {
        self.cgroup = cgroup;
        self
    }

    pub fn arg(mut self, arg: impl Into<OsString>) -> Run {
        self.args.push(arg.into());
        self
    }

    pub fn as_user(mut self, identity: Identity) -> Run {
        self.identity = Some(identity);
        self
    }

    pub fn timeout(mut self, timeout: Option<Duration>) -> Run {
        self.timeout = timeout;
        self
    }

    pub fn env(mut self, key: impl Into<OsString>, value: impl Into<OsString>) -> Run {
        let key = key.into();
        self.env.retain(|(k, _)| *k != key);
        self.env.push((key, value.into()));
        self
    }

    /// Runs to the end (or the timeout, which kills the whole process group).
    pub fn output(&self) -> Result<Output, ProcessError> {
        let program = self.program.display().to_string();
        let (read, write) = std::io::pipe()?;
        let write_err = write.try_clone()?;
        let mut command = Command::new(&self.program);
        command
            .args(&self.args)
            .current_dir(&self.cwd)
            .env_clear()
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::from(write))
            .stderr(Stdio::from(write_err));
        let join = match &self.cgroup {
            Some(cgroup) => cgroup.open_procs()?,
            None => Vec::new(),
        };
        match &self.identity {
            Some(identity) => drop_privileges(&mut command, identity, self.umask, join)?,
            None => own_session(&mut command, self.umask),
        }
        let mut child = command.spawn().map_err(|source| ProcessError::Spawn {
            program: program.clone(),
            source,
        })?;
        // The write ends live on only in the child now.
        drop(command);
        let pgid = child.id() as i32;
        // The output is read on a thread; a background process that left the group
        // but keeps the pipe open must not hold this run forever (see below).
        let (sent, received) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = sent.send(read_tail(read));
        });
        let started = Instant::now();
        let mut timed_out = false;
        let status = loop {
            if let Some(status) = child.try_wait()? {
                break status;
            }
            if let Some(limit) = self.timeout {
                if started.elapsed() >= limit {
                    timed_out = true;
                    kill_group(pgid, Signal::SIGTERM);
                    std::thread::sleep(Duration::from_millis(500));
                    kill_group(pgid, Signal::SIGKILL);
                    break child.wait()?;
                }
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        if timed_out {
            kill_group(pgid, Signal::SIGKILL);
        }
        let output = received
            .recv_timeout(OUTPUT_GRACE)
            .unwrap_or_else(|_| "(output not closed: a process left running holds it)".into());
        Ok(Output {
            status,
            output,
            timed_out,
        })
    }
}

/// Signals a whole process group (ignoring a group that is already gone).
pub fn kill_group(pgid: i32, signal: Signal) {
    if pgid > 1 {
        let _ = killpg(Pid::from_raw(pgid), signal);
    }
}

fn read_tail(mut file: impl Read) -> String {
    let mut kept: Vec<u8> = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match file.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                kept.extend_from_slice(&buf[..n]);
                if kept.len() > 2 * MAX_OUTPUT {
                    kept.drain(..kept.len() - MAX_OUTPUT);
                }
            }
        }
    }
    if kept.len() > MAX_OUTPUT {
        kept.drain(..kept.len() - MAX_OUTPUT);
    }
    String::from_utf8_lossy(&kept).into_owned()
}

/// The interpreter words of a script's `#!` line (`["/usr/bin/python3", "-S"]`), so that
/// a script is run through its interpreter (no kernel shebang length limit).
pub fn shebang(path: &Path) -> Option<Vec<String>> {
    let mut head = [0u8; 512];
    let n = std::fs::File::open(path).ok()?.read(&mut head).ok()?;
    shebang_words(&head[..n])
}

/// The interpreter words of the `#!` line at the start of `head`.
pub fn shebang_words(head: &[u8]) -> Option<Vec<String>> {
    let text = match std::str::from_utf8(head) {
        Ok(t) => t,
        // A multi-byte character cut at the end of the head.
        Err(e) => std::str::from_utf8(&head[..e.valid_up_to()]).ok()?,
    };
    let line = text.strip_prefix("#!")?.lines().next()?;
    let words: Vec<String> = line.split_whitespace().map(str::to_owned).collect();
    (!words.is_empty()).then_some(words)
}

/// `chown` that follows no symlink.
pub fn lchown(path: &Path, uid: u32, gid: u32) -> std::io::Result<()> {
    std::os::unix::fs::lchown(path, Some(uid), Some(gid))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn captures_merged_output_and_status() {
        let out = Run::new("/bin/sh", "/", Path::new("/tmp"))
            .arg("-c")
            .arg("echo out; echo err >&2; echo \"home=$HOME nousersite=$PYTHONNOUSERSITE\"; exit 3")
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(3));
        assert!(out.output.contains("out\n") && out.output.contains("err\n"));
        assert!(
            out.output.contains("home=/tmp nousersite=true"),
            "{}",
            out.output
        );
        assert_eq!(out.describe(), "exit 3");
    }

    #[test]
    fn a_timeout_kills_the_whole_group() {
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join("late");
        let out = Run::new("/bin/sh", dir.path(), dir.path())
            .arg("-c")
            .arg(format!("(sleep 2; touch {}) & sleep 30", marker.display()))
            .timeout(Some(Duration::from_millis(300)))
            .output()
            .unwrap();
        assert!(out.timed_out && !out.success());
        std::thread::sleep(Duration::from_millis(2500));
        assert!(
            !marker.exists(),
            "the background child survived the timeout"
        );
    }

    #[test]
    fn a_detached_child_holding_the_output_does_not_hold_the_run() {
        let dir = tempfile::tempdir().unwrap();
        let started = Instant::now();
        let out = Run::new("/bin/sh", dir.path(), dir.path())
            .arg("-c")
            .arg("echo started; setsid sleep 30 & exit 0")
            .output()
            .unwrap();
        assert!(out.success());
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the run waited for the daemon"
        );
        // The detached sleep is found by its session and stopped.
        let _ = Command::new("pkill").args(["-f", "^sleep 30$"]).status();
    }

    /// What the agent does for a release happens as the software user: files, reads and
    /// the programs it starts; the rest of the agent stays root.
    #[test]
    fn run_as_drops_the_thread_s_credentials_only() {
        if !is_root() {
            return;
        }
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let user = crate::testutil::TestUser::new("runas");
        let who = user.identity.clone();
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        let secret = dir.path().join("computer.key");
        std::fs::write(&secret, "PRIVATE").unwrap();
        std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
        let made = dir.path().join("made");
        let (euid, read, id) = run_as(&who, || {
            std::fs::write(&made, "x").unwrap();
            let id = Run::new("/bin/sh", "/", Path::new("/"))
                .arg("-c")
                .arg("id -u; id -g")
                .output()
                .unwrap()
                .output;
            (geteuid().as_raw(), std::fs::read(&secret), id)
        })
        .unwrap();
        assert_eq!(euid, who.uid);
        assert_eq!(
            read.unwrap_err().kind(),
            std::io::ErrorKind::PermissionDenied,
            "the thread read root's file"
        );
        assert_eq!(id, format!("{}\n{}\n", who.uid, who.gid));
        let meta = std::fs::metadata(&made).unwrap();
        assert_eq!((meta.uid(), meta.gid()), (who.uid, who.gid));
        assert_eq!(meta.mode() & 0o777, 0o640, "umask 027 on the thread");
        assert!(is_root(), "the agent itself stays root");
        assert!(run_as(&Identity::by_name("root").unwrap(), || ()).is_err());
    }

    #[test]
    fn root_is_refused_as_a_target() {
        if !is_root() {
            return;
        }
        let err = Run::new("/bin/true", "/", Path::new("/"))
            .as_user(Identity::by_name("root").unwrap())
            .output()
            .unwrap_err();
        assert!(matches!(err, ProcessError::Root { .. }));
    }

    #[test]
    fn shebang_words() {
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("s");
        std::fs::write(&script, "#!/usr/bin/env python3 -S\nprint(1)\n").unwrap();
        assert_eq!(
            shebang(&script).unwrap(),
            vec!["/usr/bin/env", "python3", "-S"]
        );
    }
}
