//! Running a program for a partition or a release: as its Unix user (privileges dropped
//! before exec: supplementary groups, gid, uid, umask), in its own process group so that a
//! timeout or a stop reaches every process it started, with the cleaned environment of
//! slapgrid-behaviour.md 3.3 and its output captured.

use std::ffi::{CString, OsString};
use std::io::Read;
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

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
    #[error("{0}")]
    Io(#[from] std::io::Error),
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

    /// The process's own identity.
    pub fn current() -> Identity {
        // SAFETY: getuid/getgid cannot fail.
        let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
        Identity::from_ids(uid, gid)
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
    // SAFETY: cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// The supplementary groups of `user` (its primary gid included), read before forking.
fn group_list(name: &str, gid: u32) -> Vec<libc::gid_t> {
    let Ok(c) = CString::new(name) else {
        return vec![gid];
    };
    let mut n: libc::c_int = 64;
    loop {
        let mut groups = vec![0 as libc::gid_t; n as usize];
        let mut count = n;
        // SAFETY: `groups` has room for `count` entries.
        let rc = unsafe { libc::getgrouplist(c.as_ptr(), gid, groups.as_mut_ptr(), &mut count) };
        if rc >= 0 {
            groups.truncate(count as usize);
            return groups;
        }
        if count <= n || n > 65536 {
            return vec![gid];
        }
        n = count;
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
/// process group). Not root: only the session and umask (the reference does the same
/// unprivileged). Root: refuses uid or gid 0.
pub fn drop_privileges(
    command: &mut Command,
    identity: &Identity,
    umask: u32,
) -> Result<(), ProcessError> {
    let privileged = is_root();
    if privileged && (identity.uid == 0 || identity.gid == 0) {
        return Err(ProcessError::Root {
            program: format!("{:?}", command.get_program()),
            uid: identity.uid,
            gid: identity.gid,
        });
    }
    let groups = if privileged {
        group_list(&identity.name, identity.gid)
    } else {
        Vec::new()
    };
    let (uid, gid) = (identity.uid, identity.gid);
    // SAFETY: the closure only calls async-signal-safe functions (setsid, umask,
    // setgroups, setgid, setuid, getuid) on data prepared before the fork.
    unsafe {
        command.pre_exec(move || {
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            libc::umask(umask as libc::mode_t);
            if privileged {
                if libc::setgroups(groups.len(), groups.as_ptr()) != 0
                    || libc::setgid(gid) != 0
                    || libc::setuid(uid) != 0
                {
                    return Err(std::io::Error::last_os_error());
                }
                // Regaining root must fail.
                if libc::setuid(0) == 0 {
                    return Err(std::io::Error::from_raw_os_error(libc::EPERM));
                }
            }
            Ok(())
        });
    }
    Ok(())
}

/// Runs `f` as `identity`, on a thread of its own whose credentials are dropped for
/// good before `f` starts: supplementary groups, gid and uid (real, effective and saved,
/// so it cannot regain root; its capabilities go with uid 0), its own umask 027 and
/// working directory (`unshare(CLONE_FS)`). The rest of the agent stays root meanwhile
/// and the thread ends with `f`. What `f` touches and every program it starts are
/// `identity`'s: a release is fetched, copied and unpacked as the software user, never
/// as root. Not root: `f` runs here as is (the agent is unprivileged already).
///
/// Linux keeps credentials per thread; glibc's `setuid` & co. change every thread of the
/// process (which would drop the whole agent), so the raw system calls are made here.
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
    let groups = group_list(&identity.name, identity.gid);
    let (uid, gid) = (identity.uid, identity.gid);
    std::thread::scope(|s| {
        let handle = s.spawn(move || -> Result<T, ProcessError> {
            drop_thread_credentials(&groups, uid, gid)?;
            Ok(f())
        });
        match handle.join() {
            Ok(result) => result,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    })
}

/// This thread only becomes `uid`/`gid` with `groups`, for good.
fn drop_thread_credentials(groups: &[libc::gid_t], uid: u32, gid: u32) -> Result<(), ProcessError> {
    let os = |what: &str| {
        let e = std::io::Error::last_os_error();
        ProcessError::Io(std::io::Error::new(e.kind(), format!("{what}: {e}")))
    };
    // SAFETY: plain system calls on this thread's own attributes; `groups` outlives them.
    unsafe {
        if libc::unshare(libc::CLONE_FS) != 0 {
            return Err(os("unshare(CLONE_FS)"));
        }
        libc::umask(0o027);
        if libc::syscall(libc::SYS_setgroups, groups.len(), groups.as_ptr()) != 0 {
            return Err(os("setgroups"));
        }
        if libc::syscall(libc::SYS_setresgid, gid, gid, gid) != 0 {
            return Err(os("setresgid"));
        }
        if libc::syscall(libc::SYS_setresuid, uid, uid, uid) != 0 {
            return Err(os("setresuid"));
        }
        // Regaining root must fail.
        if libc::syscall(libc::SYS_setresuid, 0, 0, 0) == 0 || libc::geteuid() == 0 {
            return Err(ProcessError::Io(std::io::Error::other(
                "the thread could regain root",
            )));
        }
    }
    Ok(())
}

/// A new session (own process group) and `umask`, as the current user: for the agent's
/// own helpers (`tar`), never for anything a partition or a release provides.
pub fn own_session(command: &mut Command, umask: u32) {
    // SAFETY: setsid and umask are async-signal-safe.
    unsafe {
        command.pre_exec(move || {
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            libc::umask(umask as libc::mode_t);
            Ok(())
        });
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
        }
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
        let (read, write) = pipe()?;
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
        match &self.identity {
            Some(identity) => drop_privileges(&mut command, identity, self.umask)?,
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
                    kill_group(pgid, libc::SIGTERM);
                    std::thread::sleep(Duration::from_millis(500));
                    kill_group(pgid, libc::SIGKILL);
                    break child.wait()?;
                }
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        if timed_out {
            kill_group(pgid, libc::SIGKILL);
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
pub fn kill_group(pgid: i32, signal: i32) {
    if pgid > 1 {
        // SAFETY: kill has no memory effects.
        unsafe {
            libc::kill(-pgid, signal);
        }
    }
}

fn pipe() -> std::io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for two descriptors.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: both descriptors were just created and are owned here only.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

fn read_tail(fd: OwnedFd) -> String {
    let mut file = std::fs::File::from(fd);
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
            // SAFETY: no memory effects.
            (unsafe { libc::geteuid() }, std::fs::read(&secret), id)
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
