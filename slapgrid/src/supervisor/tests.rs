//! The daemon runs in a thread of the test process, on a socket in a temporary instance
//! root. As root, services run as `nobody` (drop_privileges refuses uid 0); otherwise as
//! the current user. Every harness shuts its daemon down on drop (also when a test
//! fails), which stops every service it started.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::logfile::LogSink;
use super::proc::group_members;
use super::*;
use crate::config::NodeConfig;
use crate::process::{is_root, Identity};

fn service_user() -> Identity {
    if is_root() {
        Identity::by_name("nobody").unwrap_or(Identity {
            uid: 65534,
            gid: 65534,
            name: "nobody".into(),
            home: PathBuf::from("/nonexistent"),
        })
    } else {
        Identity::current()
    }
}

fn fast_options() -> DaemonOptions {
    DaemonOptions {
        stop_timeout: Duration::from_secs(3),
        backoff_initial: Duration::from_millis(100),
        backoff_max: Duration::from_millis(400),
        stable_after: Duration::from_secs(60),
        max_failures: 20,
        handle_signals: false,
        tick: Duration::from_millis(20),
    }
}

fn wait_for(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if done() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("timed out waiting for {what}");
}

type Events = Arc<Mutex<Vec<(String, String)>>>;

struct Harness {
    dir: tempfile::TempDir,
    cfg: NodeConfig,
    client: SupervisorClient,
    options: DaemonOptions,
    daemon: Option<JoinHandle<Result<(), SupervisorError>>>,
    events: Events,
    user: Identity,
}

impl Harness {
    fn new(options: DaemonOptions) -> Harness {
        let dir = tempfile::tempdir().unwrap();
        // The services' user must be able to reach its partition directory.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let text = format!(
            "[slapos]\ncomputer_id = COMP-T\nmaster_url = http://127.0.0.1/\n\
             software_root = /nonexistent\ninstance_root = {}\n",
            dir.path().display()
        );
        let cfg = NodeConfig::parse(Path::new("t.cfg"), &text).unwrap();
        let client =
            SupervisorClient::new(cfg.supervisor_socket()).with_timeout(Duration::from_secs(60));
        let mut h = Harness {
            dir,
            cfg,
            client,
            options,
            daemon: None,
            events: Arc::new(Mutex::new(Vec::new())),
            user: service_user(),
        };
        h.start_daemon();
        h
    }

    fn start_daemon(&mut self) {
        let (cfg, options, events) = (self.cfg.clone(), self.options.clone(), self.events.clone());
        let hook: WatchedExitHook = Box::new(move |g, n| {
            events.lock().unwrap().push((g.to_owned(), n.to_owned()));
        });
        self.daemon = Some(std::thread::spawn(move || {
            run_daemon_with(&cfg, hook, options)
        }));
        let client = self.client.clone();
        wait_for("the daemon to answer", Duration::from_secs(10), || {
            client.is_running()
        });
    }

    fn stop_daemon(&mut self) {
        if let Some(thread) = self.daemon.take() {
            let _ = self.client.shutdown();
            thread.join().unwrap().unwrap();
        }
    }

    fn partition(&self, id: &str) -> PathBuf {
        let p = self.dir.path().join(id);
        std::fs::create_dir_all(p.join("etc/run")).unwrap();
        std::fs::create_dir_all(p.join("etc/service")).unwrap();
        for d in [
            p.clone(),
            p.join("etc"),
            p.join("etc/run"),
            p.join("etc/service"),
        ] {
            std::os::unix::fs::chown(&d, Some(self.user.uid), Some(self.user.gid)).unwrap();
        }
        p
    }

    /// An executable `/bin/sh` script `etc/run/<name>` or `etc/service/<name>`.
    fn script(&self, id: &str, name: &str, watched: bool, body: &str) -> ServiceSpec {
        let dir = self.partition(id);
        let sub = if watched { "etc/service" } else { "etc/run" };
        let path = dir.join(sub).join(name);
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        ServiceSpec {
            name: name.into(),
            command: path,
            watched,
            digest: String::new(),
        }
    }

    fn group(&self, id: &str, services: Vec<ServiceSpec>) -> GroupSpec {
        GroupSpec {
            partition_id: id.into(),
            directory: self.partition(id),
            uid: self.user.uid,
            gid: self.user.gid,
            user: self.user.name.clone(),
            home: self.dir.path().join(id),
            services,
            cgroup: None,
        }
    }

    fn status_of(&self, group: &str, name: &str) -> ProcessStatus {
        self.client
            .status()
            .unwrap()
            .into_iter()
            .find(|s| s.group == group && s.name == name)
            .unwrap_or_else(|| panic!("no process {group}:{name}"))
    }

    fn wait_state(&self, group: &str, name: &str, state: ProcessState) -> ProcessStatus {
        wait_for(
            &format!("{group}:{name} to be {state:?}"),
            Duration::from_secs(10),
            || self.status_of(group, name).state == state,
        );
        self.status_of(group, name)
    }

    fn read(&self, path: &Path) -> String {
        std::fs::read_to_string(path).unwrap_or_default()
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        if let Some(thread) = self.daemon.take() {
            let _ = self.client.shutdown();
            let _ = thread.join();
        }
    }
}

#[test]
fn apply_starts_services_with_a_clean_environment_and_logs_their_output() {
    let h = Harness::new(fast_options());
    let svc = h.script(
        "part1",
        "hello",
        false,
        "echo hello-out; echo hello-err >&2\n\
         echo \"user=$USER logname=$LOGNAME home=$HOME path=$PATH\"\n\
         echo \"group=$SUPERVISOR_GROUP_NAME process=$SUPERVISOR_PROCESS_NAME cargo=${CARGO:-none}\"\n\
         echo \"cwd=$(pwd) umask=$(umask)\"\n\
         exec sleep 1000",
    );
    let group = h.group("part1", vec![svc.clone()]);
    assert!(h.client.apply(&group).unwrap());
    let st = h.wait_state("part1", "hello", ProcessState::Running);
    let pid = st.pid.expect("a running process has a pid");
    assert_eq!(st.log, group.log_path(&svc));
    assert_eq!(st.log, h.dir.path().join("part1/.part1_hello.log"));
    wait_for("the log", Duration::from_secs(5), || {
        h.read(&st.log).contains("umask=")
    });
    let log = h.read(&st.log);
    assert!(
        log.contains("hello-out\n") && log.contains("hello-err\n"),
        "{log}"
    );
    let home = h.dir.path().join("part1");
    assert!(
        log.contains(&format!(
            "user={0} logname={0} home={1} path=/usr/local/bin:/usr/bin:/bin",
            h.user.name,
            home.display()
        )),
        "{log}"
    );
    assert!(
        log.contains("group=part1 process=hello cargo=none"),
        "{log}"
    );
    assert!(
        log.contains(&format!("cwd={} umask=0027", home.display())),
        "{log}"
    );
    // Its own session and process group; running as the partition user.
    let stat = std::fs::metadata(format!("/proc/{pid}")).unwrap();
    assert_eq!(stat.uid(), h.user.uid);
    assert_eq!(group_members(pid as i32), vec![pid as i32]);
    let meta = std::fs::metadata(&st.log).unwrap();
    assert_eq!(meta.mode() & 0o777, 0o640);
    assert_eq!((meta.uid(), meta.gid()), (h.user.uid, h.user.gid));
    // The spec is stored privately.
    let stored = h.dir.path().join("etc/supervisor.d/part1.json");
    assert_eq!(std::fs::metadata(&stored).unwrap().mode() & 0o777, 0o600);
    let dir_mode = std::fs::metadata(stored.parent().unwrap()).unwrap().mode();
    assert_eq!(dir_mode & 0o777, 0o700);
    let socket_mode = std::fs::metadata(h.cfg.supervisor_socket()).unwrap().mode();
    assert_eq!(socket_mode & 0o777, 0o600);
}

#[test]
fn a_crashing_service_is_restarted_with_backoff_then_fatal() {
    let mut options = fast_options();
    options.max_failures = 4;
    let h = Harness::new(options);
    let svc = h.script("part2", "crash", false, "echo ran >> runs; exit 3");
    h.client.apply(&h.group("part2", vec![svc])).unwrap();
    wait_for("a restart", Duration::from_secs(5), || {
        h.status_of("part2", "crash").restarts > 0
    });
    let st = h.wait_state("part2", "crash", ProcessState::Fatal);
    assert_eq!(st.exit_status, Some(3));
    assert_eq!(st.restarts, 3, "4 failed starts = 1 start + 3 restarts");
    assert_eq!(st.pid, None);
    let runs = h.read(&h.dir.path().join("part2/runs"));
    assert_eq!(runs.lines().count(), 4);
    // Starting the group again gives it a fresh series.
    h.client.control(ControlOp::Start, "part2").unwrap();
    wait_for("a new series", Duration::from_secs(5), || {
        h.read(&h.dir.path().join("part2/runs")).lines().count() > 4
    });
}

#[test]
fn a_watched_service_exit_calls_the_hook_and_restarts() {
    let h = Harness::new(fast_options());
    let svc = h.script("partX", "name", true, "sleep 0.1; exit 0");
    h.client.apply(&h.group("partX", vec![svc])).unwrap();
    wait_for("the hook", Duration::from_secs(5), || {
        !h.events.lock().unwrap().is_empty()
    });
    assert_eq!(
        h.events.lock().unwrap()[0],
        ("partX".to_string(), "name-on-watch".to_string())
    );
    wait_for("a restart", Duration::from_secs(5), || {
        h.status_of("partX", "name-on-watch").restarts > 0
    });
    // A watched service stopped on request is no crash: no hook call.
    let svc = h.script("partY", "calm", true, "exec sleep 1000");
    h.client.apply(&h.group("partY", vec![svc])).unwrap();
    h.wait_state("partY", "calm-on-watch", ProcessState::Running);
    h.client.control(ControlOp::Stop, "partY:calm").unwrap();
    std::thread::sleep(Duration::from_millis(200));
    assert!(!h.events.lock().unwrap().iter().any(|(g, _)| g == "partY"));
}

#[test]
fn remove_kills_the_whole_process_group_and_deletes_the_spec() {
    let h = Harness::new(fast_options());
    let svc = h.script("part3", "tree", false, "sleep 1000 &\nexec sleep 1000");
    h.client.apply(&h.group("part3", vec![svc])).unwrap();
    let pid = h
        .wait_state("part3", "tree", ProcessState::Running)
        .pid
        .unwrap() as i32;
    wait_for("the grandchild", Duration::from_secs(5), || {
        group_members(pid).len() == 2
    });
    let started = Instant::now();
    h.client.remove("part3").unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "SIGTERM was enough"
    );
    assert_eq!(group_members(pid), Vec::<i32>::new());
    assert!(h.client.status().unwrap().is_empty());
    assert!(!h.dir.path().join("etc/supervisor.d/part3.json").exists());
    // Removing an unknown group is fine.
    h.client.remove("part3").unwrap();
    h.client.remove("never-seen").unwrap();
}

#[test]
fn stop_escalates_to_sigkill_after_the_stop_timeout() {
    let mut options = fast_options();
    options.stop_timeout = Duration::from_millis(500);
    let h = Harness::new(options);
    let svc = h.script(
        "part4",
        "stubborn",
        false,
        "trap '' TERM\nsleep 1000 &\nexec sleep 1000",
    );
    h.client.apply(&h.group("part4", vec![svc])).unwrap();
    let pid = h
        .wait_state("part4", "stubborn", ProcessState::Running)
        .pid
        .unwrap() as i32;
    wait_for("the grandchild", Duration::from_secs(5), || {
        group_members(pid).len() == 2
    });
    let started = Instant::now();
    let after = h.client.control(ControlOp::Stop, "part4:stubborn").unwrap();
    assert!(started.elapsed() >= Duration::from_millis(500));
    assert_eq!(after.len(), 1);
    assert_eq!(after[0].state, ProcessState::Stopped);
    assert_eq!(
        after[0].exit_status,
        Some(-(nix::sys::signal::Signal::SIGKILL as i32))
    );
    assert_eq!(group_members(pid), Vec::<i32>::new());
}

#[test]
fn unchanged_apply_keeps_the_process_changed_apply_restarts_the_group() {
    let h = Harness::new(fast_options());
    let a = h.script("part5", "a", false, "exec sleep 1000");
    let b = h.script("part5", "b", true, "exec sleep 1000");
    let group = h.group("part5", vec![a.clone()]);
    assert!(h.client.apply(&group).unwrap());
    let pid = h.wait_state("part5", "a", ProcessState::Running).pid;
    assert!(!h.client.apply(&group).unwrap());
    assert_eq!(h.status_of("part5", "a").pid, pid);
    let changed = h.group("part5", vec![a, b]);
    assert!(h.client.apply(&changed).unwrap());
    let st = h.wait_state("part5", "a", ProcessState::Running);
    assert!(st.pid.is_some() && st.pid != pid, "every process restarts");
    h.wait_state("part5", "b-on-watch", ProcessState::Running);
    assert_eq!(group_members(pid.unwrap() as i32), Vec::<i32>::new());
    assert!(h.events.lock().unwrap().is_empty(), "a stop is no crash");
}

#[test]
fn the_daemon_restarts_stored_groups_after_a_restart() {
    let mut h = Harness::new(fast_options());
    let svc = h.script("part6", "keep", false, "exec sleep 1000");
    h.client.apply(&h.group("part6", vec![svc])).unwrap();
    let pid = h
        .wait_state("part6", "keep", ProcessState::Running)
        .pid
        .unwrap();
    h.stop_daemon();
    assert!(!h.client.is_running());
    assert!(!h.cfg.supervisor_socket().exists());
    assert_eq!(group_members(pid as i32), Vec::<i32>::new());
    // A stale socket file is replaced.
    std::fs::write(h.cfg.supervisor_socket(), "stale").unwrap();
    h.start_daemon();
    let st = h.wait_state("part6", "keep", ProcessState::Running);
    assert!(st.pid.is_some() && st.pid != Some(pid));
}

#[test]
fn sigterm_stops_every_group_and_the_daemon() {
    let mut options = fast_options();
    options.handle_signals = true;
    let mut h = Harness::new(options);
    let svc = h.script("partS", "s", false, "sleep 1000 &\nexec sleep 1000");
    h.client.apply(&h.group("partS", vec![svc])).unwrap();
    let pid = h
        .wait_state("partS", "s", ProcessState::Running)
        .pid
        .unwrap() as i32;
    // The handler is installed (the daemon answers), so this does not kill the tests.
    nix::sys::signal::kill(nix::unistd::getpid(), nix::sys::signal::Signal::SIGTERM).unwrap();
    let thread = h.daemon.take().unwrap();
    thread.join().unwrap().unwrap();
    assert_eq!(group_members(pid), Vec::<i32>::new());
    assert!(!h.client.is_running());
    assert!(
        h.dir.path().join("etc/supervisor.d/partS.json").exists(),
        "kept for the next start"
    );
}

#[test]
fn a_second_daemon_on_the_same_root_is_refused() {
    let h = Harness::new(fast_options());
    let hook: WatchedExitHook = Box::new(|_, _| {});
    let err = run_daemon_with(&h.cfg, hook, fast_options()).unwrap_err();
    assert!(
        matches!(err, SupervisorError::AlreadyRunning { .. }),
        "{err}"
    );
    assert!(h.client.is_running());
}

#[test]
fn a_spawn_failure_is_logged_and_goes_fatal_without_hurting_others() {
    let mut options = fast_options();
    options.max_failures = 3;
    let h = Harness::new(options);
    let good = h.script("part7", "good", false, "exec sleep 1000");
    let missing = ServiceSpec {
        name: "missing".into(),
        command: h.dir.path().join("part7/etc/run/missing"),
        watched: false,
        digest: String::new(),
    };
    let not_exec = h.script("part7", "notexec", false, "exit 0");
    std::fs::set_permissions(&not_exec.command, std::fs::Permissions::from_mode(0o644)).unwrap();
    let group = h.group("part7", vec![good, missing.clone(), not_exec]);
    h.client.apply(&group).unwrap();
    h.wait_state("part7", "missing", ProcessState::Fatal);
    h.wait_state("part7", "notexec", ProcessState::Fatal);
    assert_eq!(h.status_of("part7", "good").state, ProcessState::Running);
    let log = h.read(&group.log_path(&missing));
    assert!(
        log.contains("cannot start") && log.contains("missing"),
        "{log}"
    );
    assert_eq!(log.lines().count(), 3, "{log}");
}

#[test]
fn a_oneshot_exits_and_runs_again_on_apply() {
    let h = Harness::new(fast_options());
    let svc = h.script("part8", "once", false, "echo ran >> count");
    let group = h.group("part8", vec![svc]);
    h.client.apply(&group).unwrap();
    let st = h.wait_state("part8", "once", ProcessState::Exited);
    assert_eq!((st.exit_status, st.restarts, st.pid), (Some(0), 0, None));
    std::thread::sleep(Duration::from_millis(300));
    let count = h.dir.path().join("part8/count");
    assert_eq!(h.read(&count).lines().count(), 1, "not restarted");
    assert!(!h.client.apply(&group).unwrap());
    wait_for("a second run", Duration::from_secs(5), || {
        h.read(&count).lines().count() == 2
    });
    h.wait_state("part8", "once", ProcessState::Exited);
}

#[test]
fn control_stop_start_restart_start_all_and_unknown_targets() {
    let h = Harness::new(fast_options());
    let a = h.script("part9", "a", false, "exec sleep 1000");
    let w = h.script("part9", "w", true, "exec sleep 1000");
    h.client.apply(&h.group("part9", vec![a, w])).unwrap();
    h.wait_state("part9", "a", ProcessState::Running);
    let pid_w = h
        .wait_state("part9", "w-on-watch", ProcessState::Running)
        .pid;

    let after = h.client.control(ControlOp::Stop, "part9:a").unwrap();
    assert_eq!(after[0].state, ProcessState::Stopped);
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(
        h.status_of("part9", "a").state,
        ProcessState::Stopped,
        "stays stopped"
    );
    let after = h.client.control(ControlOp::Start, "part9:a").unwrap();
    assert_eq!(after[0].state, ProcessState::Running);

    let after = h.client.control(ControlOp::Restart, "part9:w").unwrap();
    assert_eq!(after[0].name, "w-on-watch");
    assert!(after[0].pid.is_some() && after[0].pid != pid_w);

    let after = h.client.control(ControlOp::Stop, "part9").unwrap();
    assert_eq!(after.len(), 2);
    assert!(after.iter().all(|s| s.state == ProcessState::Stopped));
    h.client.start_all().unwrap();
    h.wait_state("part9", "a", ProcessState::Running);
    h.wait_state("part9", "w-on-watch", ProcessState::Running);

    let err = h.client.control(ControlOp::Start, "nope").unwrap_err();
    assert!(matches!(err, SupervisorError::UnknownGroup(_)), "{err}");
    let err = h
        .client
        .control(ControlOp::Start, "part9:nope")
        .unwrap_err();
    assert!(matches!(err, SupervisorError::UnknownProcess(_)), "{err}");
}

#[test]
fn garbage_and_invalid_specs_are_refused_and_the_daemon_survives() {
    use std::io::{BufRead, BufReader, Write};
    let h = Harness::new(fast_options());
    let mut stream = std::os::unix::net::UnixStream::connect(h.cfg.supervisor_socket()).unwrap();
    stream.write_all(b"{not json\n\"Ping\"\n").unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    assert!(line.contains("Protocol"), "{line}");
    line.clear();
    reader.read_line(&mut line).unwrap();
    assert_eq!(line, "\"Pong\"\n");

    let svc = h.script("partA", "a", false, "exit 0");
    for bad in ["../etc", "", ".hidden", "a/b", "a:b"] {
        let mut g = h.group("partA", vec![svc.clone()]);
        g.partition_id = bad.into();
        let err = h.client.apply(&g).unwrap_err();
        assert!(
            matches!(err, SupervisorError::InvalidSpec(_)),
            "{bad}: {err}"
        );
    }
    let mut g = h.group("partA", vec![svc.clone(), svc.clone()]);
    assert!(matches!(
        h.client.apply(&g),
        Err(SupervisorError::InvalidSpec(_))
    ));
    g.services = vec![ServiceSpec {
        command: "relative".into(),
        ..svc
    }];
    assert!(matches!(
        h.client.apply(&g),
        Err(SupervisorError::InvalidSpec(_))
    ));
    assert!(h.client.is_running());
    assert!(h.client.status().unwrap().is_empty());
}

#[test]
fn a_client_without_daemon_says_not_running() {
    let dir = tempfile::tempdir().unwrap();
    let client = SupervisorClient::new(dir.path().join("sv.sock"));
    assert!(!client.is_running());
    let err = client.status().unwrap_err();
    assert!(matches!(err, SupervisorError::NotRunning { .. }), "{err}");
    // A program that never answers: StartFailed, and no child left behind.
    let err = client
        .ensure_running_within(
            Path::new("/bin/true"),
            &[],
            &dir.path().join("log/supervisor.log"),
            Duration::from_millis(300),
        )
        .unwrap_err();
    assert!(matches!(err, SupervisorError::StartFailed { .. }), "{err}");
    assert!(dir.path().join("log/supervisor.log").exists());
}

#[test]
fn log_rotation_keeps_one_backup() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(".p_s.log");
    let mut sink = LogSink::new(path.clone(), None).with_max(100);
    for i in 0..30 {
        sink.write(format!("line {i:02}\n").as_bytes());
    }
    let current = std::fs::read_to_string(&path).unwrap();
    let backup = std::fs::read_to_string(dir.path().join(".p_s.log.1")).unwrap();
    assert!(current.len() <= 100 && backup.len() <= 100);
    assert!(current.ends_with("line 29\n"));
    assert!(!dir.path().join(".p_s.log.2").exists());
    // A symlink planted in place of the log is not followed.
    let target = dir.path().join("target");
    std::fs::write(&target, "").unwrap();
    let planted = dir.path().join(".p_t.log");
    std::os::unix::fs::symlink(&target, &planted).unwrap();
    LogSink::new(planted, None).write(b"secret\n");
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "");
}

#[test]
fn services_a_dead_predecessor_left_running_are_stopped_before_starting_again() {
    let mut h = Harness::new(fast_options());
    h.stop_daemon();
    // A service of this instance root whose daemon died without stopping it (its own
    // session, the owner tag in its environment), with a grandchild; and a look-alike of
    // another root, which must survive.
    let spawn_tagged = |socket: &Path| {
        let mut c = std::process::Command::new("/bin/sh");
        c.args(["-c", "sleep 1000 & exec sleep 1000"])
            .env("SLAPGRID_SUPERVISOR", socket);
        crate::process::Session::default().prepare(&mut c);
        c.spawn().unwrap()
    };
    let mut ours = spawn_tagged(&h.cfg.supervisor_socket());
    let mut theirs = spawn_tagged(Path::new("/elsewhere/sv.sock"));
    let (ours_pid, theirs_pid) = (ours.id() as i32, theirs.id() as i32);
    wait_for("the grandchild", Duration::from_secs(5), || {
        group_members(ours_pid).len() == 2
    });
    h.start_daemon();
    wait_for("the orphans to be stopped", Duration::from_secs(10), || {
        group_members(ours_pid).is_empty()
    });
    let _ = ours.wait();
    assert_eq!(
        group_members(theirs_pid).len(),
        2,
        "another root's service was touched"
    );
    crate::process::kill_group(theirs_pid, nix::sys::signal::Signal::SIGKILL);
    let _ = theirs.wait();
}
