//! How our node agent (`slapos node ...`, crate slapgrid) behaves when things go wrong,
//! as a user of a node sees it: real processes, as root, real Unix users, a one-replica
//! `slapos up` cluster as the master and native releases (they install in milliseconds).
//!
//! * a release whose artifact has the wrong checksum fails alone: nothing half-installed
//!   is left, the other releases of the computer install in the same run;
//! * an instance template naming an unknown variable fails its partition alone, with an
//!   error naming the variable; the other partition runs;
//! * a broken promise (exit 2) leaves no `.timestamp`, so the partition is processed
//!   again until the promise holds, then it is left alone;
//! * the watchdog: a killed watched service is restarted, the master is banged once per
//!   deployment, and the bumped timestamp makes the node process the partition again;
//! * destruction runs the instance's `sbin/destroy` as the partition user, then wipes;
//! * a broken slapos.cfg is refused with a message naming the key or line, and the run
//!   touches nothing.
//!
//! Prerequisites as for slapgrid.rs (root, the node venv). Each test creates its users
//! under a unique prefix and removes them, with its cluster and supervisor, when it ends.

use slapos_e2e::agent::{
    beat_artifact, beat_service, instance_file, kill9, native_release, node_config, open_dir,
    prefix, python, request, text, uid_of, wait_for, AgentNode, Artifact, Up,
};
use slapos_e2e::slapos_bin;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

/// A release with the `beat` service (process `beat-on-watch`) plus `extra` instance
/// files.
fn service_release(dir: &Path, name: &str, extra: &str) -> String {
    native_release(dir, name, &[beat_artifact()], &(beat_service() + extra))
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The partition user of `pid` (`slappart3` -> `<users>u3`).
fn partition_user(node: &AgentNode, pid: &str) -> String {
    format!("{}u{}", node.users, pid.trim_start_matches("slappart"))
}

/// The entries of a partition, but the one that describes the partition itself.
fn partition_entries(p: &Path) -> Vec<String> {
    let mut left: Vec<String> = std::fs::read_dir(p)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n != ".slapos-resource")
        .collect();
    left.sort();
    left
}

/// The running `beat-on-watch` of `pid`: its process id.
fn running_beat(node: &AgentNode, pid: &str) -> u64 {
    let beat = node
        .process(pid, "beat-on-watch")
        .unwrap_or_else(|| panic!("beat of {pid} not supervised: {}", node.status()));
    assert_eq!(beat["state"], "Running", "{beat}");
    beat["pid"].as_u64().expect("a running process has a pid")
}

/// Waits until `beat-on-watch` of `pid` runs again with another process than `old`.
fn restarted_beat(node: &AgentNode, pid: &str, old: u64) -> u64 {
    let mut new = None;
    wait_for(
        "the killed service to be restarted",
        Duration::from_secs(10),
        || {
            new = node
                .process(pid, "beat-on-watch")
                .filter(|b| b["state"] == "Running")
                .and_then(|b| b["pid"].as_u64())
                .filter(|p| *p != old);
            new.is_some()
        },
    );
    new.unwrap()
}

/// The master, one node formatted with `partitions` partitions, and the test directory.
/// Dropped in reverse order: the node (shutdown, unformat), the cluster, the directory.
fn site(tag: &str, computer: &str, partitions: usize) -> (tempfile::TempDir, Up, AgentNode) {
    let dir = tempfile::tempdir().unwrap();
    let root = open_dir(&dir);
    let up = Up::start_replicas(&root, 1);
    let node = AgentNode::new(
        &root.join("node"),
        computer,
        &up.urls,
        &prefix(tag),
        partitions,
    );
    let out = node.ok(&["format"]);
    assert!(out.contains("prepared the computer"), "{out}");
    (dir, up, node)
}

#[test]
fn a_broken_release_or_template_fails_alone() {
    let computer = "COMP-SGF-ISOLATION";
    let (dir, up, node) = site("i", computer, 2);
    let url = up.urls[0].as_str();
    let releases = dir.path().join("releases");

    // Three releases, the broken one supplied first: its artifact's declared checksum
    // is wrong; the third one installs fine but its instance template is broken.
    let zeros = "0".repeat(64);
    let badsum = native_release(
        &releases.join("a-badsum"),
        "badsum",
        &[Artifact {
            sha256: Some(&zeros),
            ..beat_artifact()
        }],
        &beat_service(),
    );
    let good = service_release(&releases.join("b-good"), "good", "");
    let typo = service_release(
        &releases.join("c-typo"),
        "typo",
        &instance_file(
            "etc/beat.conf",
            "0640",
            "plain",
            "beat = {{partition_path}}/beat.txt\nlog = {{partition_path}}/{{log_directory}}\n",
        ),
    );
    for software in [&badsum, &good, &typo] {
        python(&["supply", url, software, computer]);
    }

    // Software: the broken release fails, the others install in the same run.
    let out = node.node(&["software"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        stdout(&out).contains("2 installed, 0 up to date, 0 destroyed, 1 failed"),
        "{}",
        text(&out)
    );
    let err = stderr(&out);
    assert!(
        err.contains(&format!("{badsum}: artifact beat.sh: sha256 "))
            && err.contains(&format!("expected {zeros}")),
        "the failure does not say which artifact and checksum: {}",
        text(&out)
    );
    assert!(
        !err.contains("could not report the error"),
        "the error did not reach the master: {}",
        text(&out)
    );
    let bad_dir = node.release_dir(&badsum);
    assert!(
        !bad_dir.exists(),
        "a failed install left {}",
        bad_dir.display()
    );
    let partial = bad_dir.with_extension("partial");
    assert!(
        !partial.exists(),
        "a failed install left {}",
        partial.display()
    );
    for software in [&good, &typo] {
        let sr = node.release_dir(software);
        for f in [".completed", "bin/beat", "software.toml"] {
            assert!(sr.join(f).exists(), "{f} missing in {}", sr.display());
        }
    }
    // node_helper `full` shows each release's *requested* state (slap's
    // SoftwareRelease.getState), not the error the node reported: nothing to check there.

    // The next run retries the broken release only.
    let out = node.node(&["software"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        stdout(&out).contains("0 installed, 2 up to date, 0 destroyed, 1 failed"),
        "{}",
        text(&out)
    );
    assert!(!node.release_dir(&badsum).exists());

    // Instances: the broken template fails its partition (requested first), the other
    // partition is deployed in the same run.
    let typo_pid = request(url, &typo, computer, "sgf-typo", None)["partition"]
        .as_str()
        .expect("allocated")
        .to_owned();
    let good_pid = request(url, &good, computer, "sgf-good", None)["partition"]
        .as_str()
        .expect("allocated")
        .to_owned();
    let out = node.node(&["instance"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        stdout(&out).contains("1 processed, 0 unchanged, 0 destroyed, 1 failed"),
        "{}",
        text(&out)
    );
    let err = stderr(&out);
    assert!(
        err.lines()
            .any(|l| l.starts_with(&format!("{typo_pid}: ")) && l.contains("log_directory")),
        "the partition's error does not name the unknown variable: {}",
        text(&out)
    );
    assert!(
        !err.contains("could not report the error"),
        "the error did not reach the master: {}",
        text(&out)
    );
    let tp = node.partition_dir(&typo_pid);
    assert!(
        !tp.join(".timestamp").exists(),
        "a failed partition has a .timestamp"
    );
    let log = std::fs::read_to_string(tp.join(format!(".slapgrid-{typo_pid}-error.log")))
        .unwrap_or_default();
    assert!(log.contains("log_directory"), "error log: {log:?}");
    // The partition's own processing log says the same to whoever reads it.
    let plog = std::fs::read_to_string(tp.join(".slapgrid/log/instance.log")).unwrap_or_default();
    assert!(
        plog.contains("started: failed:") && plog.contains("log_directory"),
        "instance.log: {plog:?}"
    );
    assert!(
        node.process(&typo_pid, "beat-on-watch").is_none(),
        "the failed partition's service was started"
    );
    let beat = running_beat(&node, &good_pid);
    assert!(node.partition_dir(&good_pid).join(".timestamp").exists());

    // The next run retries the failed partition and leaves the good one alone.
    let out = node.node(&["instance"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        stdout(&out).contains("0 processed, 1 unchanged, 0 destroyed, 1 failed"),
        "{}",
        text(&out)
    );
    assert_eq!(
        running_beat(&node, &good_pid),
        beat,
        "the good service was restarted"
    );
}

#[test]
fn a_broken_promise_is_retried_until_it_holds() {
    let computer = "COMP-SGF-PROMISE";
    let (dir, up, node) = site("p", computer, 1);
    let url = up.urls[0].as_str();
    let software = service_release(
        &dir.path().join("promised"),
        "promised",
        &instance_file(
            "etc/promise/ready",
            "0750",
            "shell",
            "#!/bin/sh\necho run >> {{partition_path}}/promise-runs\n\
             test -e {{partition_path}}/ready && exit 0\n\
             echo {{partition_path}}/ready is missing\nexit 1\n",
        ),
    );
    python(&["supply", url, &software, computer]);
    node.ok(&["software"]);
    let pid = request(url, &software, computer, "sgf-promise", None)["partition"]
        .as_str()
        .expect("allocated")
        .to_owned();
    let p = node.partition_dir(&pid);
    let runs = || {
        std::fs::read_to_string(p.join("promise-runs"))
            .unwrap_or_default()
            .lines()
            .count()
    };

    // Broken: exit 2, the message is shown, the service runs, no .timestamp; and the
    // next run processes the partition again (its promise runs again).
    for run in 1..=2 {
        let out = node.node(&["instance"]);
        assert_eq!(out.status.code(), Some(2), "run {run}: {}", text(&out));
        assert!(
            stdout(&out)
                .contains("0 processed, 0 unchanged, 0 destroyed, 0 failed, 1 broken promises"),
            "run {run}: {}",
            text(&out)
        );
        assert!(
            stderr(&out).contains(&format!(
                "{pid}: Promise 'ready' failed with output: {}/ready is missing",
                p.display()
            )),
            "run {run}: {}",
            text(&out)
        );
        assert!(
            !p.join(".timestamp").exists(),
            "run {run}: a partition with a broken promise has a .timestamp"
        );
        assert_eq!(runs(), run, "run {run}: the promise did not run again");
        running_beat(&node, &pid);
    }

    // `slapos node promise` checks on demand, without the master: broken, exit 2.
    let out = node.node(&["promise"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(stdout(&out).contains("1 broken"), "{}", text(&out));

    // Fixed: the run succeeds and stamps the partition; the next one leaves it alone.
    std::fs::write(p.join("ready"), "").unwrap();
    let out = node.node(&["promise"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let out = node.node(&["instance"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        stdout(&out).contains("1 processed, 0 unchanged, 0 destroyed, 0 failed, 0 broken promises"),
        "{}",
        text(&out)
    );
    assert!(p.join(".timestamp").exists());
    let out = node.node(&["instance"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        stdout(&out).contains("0 processed, 1 unchanged"),
        "{}",
        text(&out)
    );
}

#[test]
fn the_watchdog_restarts_a_killed_service_and_bangs_once_per_deployment() {
    let computer = "COMP-SGF-WATCHDOG";
    let (dir, up, node) = site("w", computer, 1);
    let url = up.urls[0].as_str();
    let software = service_release(&dir.path().join("watched"), "watched", "");
    python(&["supply", url, &software, computer]);
    node.ok(&["software"]);
    let pid = request(url, &software, computer, "sgf-watched", None)["partition"]
        .as_str()
        .expect("allocated")
        .to_owned();
    let out = node.ok(&["instance"]);
    assert!(out.contains("1 processed"), "{out}");
    let p = node.partition_dir(&pid);
    let bang_file = p.join(".slapos_latest_bang_timestamp");
    let read = |f: &Path| std::fs::read_to_string(f).unwrap_or_default();
    let banged = || node.supervisor_log().matches("instance banged").count();
    assert!(!bang_file.exists());
    let deployed = read(&p.join(".timestamp"));
    assert!(!deployed.is_empty());

    // Killed: restarted by the supervisor, and the master banged for this deployment.
    let first = running_beat(&node, &pid);
    kill9(first as u32);
    let second = restarted_beat(&node, &pid, first);
    wait_for("the bang", Duration::from_secs(10), || bang_file.exists());
    assert_eq!(
        read(&bang_file),
        deployed,
        "the bang names another deployment"
    );
    assert_eq!(banged(), 1, "supervisor log:\n{}", node.supervisor_log());
    let bang_meta = std::fs::metadata(&bang_file).unwrap();

    // Killed again before the partition is redeployed: restarted, not banged again.
    kill9(second as u32);
    restarted_beat(&node, &pid, second);
    wait_for(
        "the supervisor to see the second exit",
        Duration::from_secs(10),
        || node.supervisor_log().matches("exited unexpectedly").count() >= 2,
    );
    std::thread::sleep(Duration::from_secs(1)); // the hook runs beside the restart
    let again = std::fs::metadata(&bang_file).unwrap();
    assert_eq!(read(&bang_file), deployed);
    assert_eq!(
        (again.ino(), again.mtime(), again.mtime_nsec()),
        (bang_meta.ino(), bang_meta.mtime(), bang_meta.mtime_nsec()),
        "the bang file was rewritten"
    );
    assert_eq!(
        banged(),
        1,
        "banged twice for one deployment; supervisor log:\n{}",
        node.supervisor_log()
    );

    // The master bumped the instance's timestamp: the partition is processed again.
    let out = node.ok(&["instance"]);
    assert!(
        out.contains("1 processed, 0 unchanged"),
        "the bang did not make the partition run again: {out}"
    );
    let redeployed = read(&p.join(".timestamp"));
    assert_ne!(
        redeployed, deployed,
        "the master did not bump the timestamp"
    );

    // A new deployment: the next exit bangs again.
    let third = running_beat(&node, &pid);
    kill9(third as u32);
    restarted_beat(&node, &pid, third);
    wait_for(
        "the bang of the new deployment",
        Duration::from_secs(10),
        || read(&bang_file) == redeployed,
    );
    assert_eq!(banged(), 2, "supervisor log:\n{}", node.supervisor_log());

    // `slapos node bang`: the operator tells the master the computer changed; every
    // instance on it is reprocessed.
    let out = node.ok(&["instance"]);
    assert!(out.contains("1 processed"), "{out}");
    let out = node.ok(&["instance"]);
    assert!(out.contains("0 processed, 1 unchanged"), "{out}");
    let out = node.ok(&["bang", "-m", "rebooted"]);
    assert!(out.contains("banged"), "{out}");
    let out = node.ok(&["instance"]);
    assert!(
        out.contains("1 processed, 0 unchanged"),
        "the computer bang changed nothing: {out}"
    );
}

#[test]
fn destruction_runs_the_destroy_hook_as_the_partition_user_then_wipes() {
    let computer = "COMP-SGF-DESTROY";
    let (dir, up, node) = site("d", computer, 1);
    let url = up.urls[0].as_str();
    // Evidence the hook leaves outside the partition: a sticky, world-writable directory.
    let evidence = dir.path().join("evidence");
    std::fs::create_dir(&evidence).unwrap();
    std::fs::set_permissions(&evidence, std::fs::Permissions::from_mode(0o1777)).unwrap();
    let marker = evidence.join("destroy-ran");
    let software = service_release(
        &dir.path().join("hooked"),
        "hooked",
        &instance_file(
            "sbin/destroy",
            "0750",
            "shell",
            &format!("#!/bin/sh\nid -u > {}\n", marker.display()),
        ),
    );
    python(&["supply", url, &software, computer]);
    node.ok(&["software"]);
    let pid = request(url, &software, computer, "sgf-hooked", None)["partition"]
        .as_str()
        .expect("allocated")
        .to_owned();
    let out = node.ok(&["instance"]);
    assert!(out.contains("1 processed"), "{out}");
    let p = node.partition_dir(&pid);
    let hook = std::fs::metadata(p.join("sbin/destroy")).unwrap();
    assert_eq!(hook.permissions().mode() & 0o7777, 0o750);
    let beat = running_beat(&node, &pid);
    assert!(
        !marker.exists(),
        "the destroy hook ran before the destruction"
    );

    request(url, &software, computer, "sgf-hooked", Some("destroyed"));
    let out = node.ok(&["instance"]);
    assert!(out.contains("1 destroyed"), "{out}");
    let owner = uid_of(&partition_user(&node, &pid));
    let ran = std::fs::read_to_string(&marker).expect("the destroy hook did not run");
    assert_eq!(
        ran.trim(),
        owner.to_string(),
        "the destroy hook did not run as the partition user"
    );
    assert_eq!(std::fs::metadata(&marker).unwrap().uid(), owner);
    let left = partition_entries(&p);
    assert!(left.is_empty(), "partition not wiped: {left:?}");
    assert!(
        node.process(&pid, "beat-on-watch").is_none(),
        "the service is still supervised"
    );
    wait_for("the service to exit", Duration::from_secs(15), || {
        !Path::new(&format!("/proc/{beat}")).exists()
    });
    let full: serde_json::Value = serde_json::from_str(&python(&["full", url, computer])).unwrap();
    let freed = full["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["partition"] == pid.as_str())
        .unwrap();
    assert!(
        freed["software_release"].is_null(),
        "partition not freed: {full}"
    );
}

/// Every path under `root` with its kind, size and modification time.
fn snapshot(root: &Path) -> Vec<(PathBuf, bool, u64, i64, i64)> {
    fn walk(p: &Path, out: &mut Vec<(PathBuf, bool, u64, i64, i64)>) {
        let m = std::fs::symlink_metadata(p).unwrap();
        out.push((p.to_owned(), m.is_dir(), m.len(), m.mtime(), m.mtime_nsec()));
        if m.is_dir() {
            let mut entries: Vec<PathBuf> = std::fs::read_dir(p)
                .unwrap()
                .map(|e| e.unwrap().path())
                .collect();
            entries.sort();
            for e in entries {
                walk(&e, out);
            }
        }
    }
    let mut out = Vec::new();
    walk(root, &mut out);
    out
}

#[test]
fn a_broken_configuration_is_refused_and_touches_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let root = open_dir(&dir).join("node");
    for d in ["etc", "soft", "inst", "var/run", "shared"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    let cfg = root.join("etc/slapos.cfg");
    // Nothing listens on port 9: a run that got as far as the master would say so.
    let good = node_config(
        &root,
        "COMP-SGF-CONFIG",
        &["http://127.0.0.1:9/".into()],
        &prefix("b"),
        1,
    );
    let master_line = good
        .lines()
        .position(|l| l.starts_with("master_url ="))
        .unwrap();
    let with_line = |n: usize, line: &str| {
        let mut lines: Vec<&str> = good.lines().collect();
        lines.insert(n, line);
        lines.join("\n") + "\n"
    };
    let without_master = good
        .lines()
        .filter(|l| !l.starts_with("master_url"))
        .collect::<Vec<_>>()
        .join("\n")
        + "\n";
    let cases = [
        (
            "a line that is not `key = value`",
            with_line(3, "software_root /srv/slapgrid"),
            vec!["line 4", "software_root /srv/slapgrid"],
        ),
        (
            "master_url missing",
            without_master,
            vec!["[slapos] master_url is required"],
        ),
        (
            "master_url not a URL",
            good.replace(
                &good.lines().nth(master_line).unwrap().to_owned(),
                "master_url = 127.0.0.1:9",
            ),
            vec!["master_url", "127.0.0.1:9"],
        ),
        (
            "a number that is not one",
            good.replace("promise_timeout = 10", "promise_timeout = ten"),
            vec!["promise_timeout", "\"ten\"", "expected a whole number"],
        ),
    ];
    for (what, content, expected) in cases {
        std::fs::write(&cfg, &content).unwrap();
        let before = snapshot(&root);
        for command in ["instance", "software"] {
            let out = Command::new(slapos_bin())
                .args(["node", command, "--cfg"])
                .arg(&cfg)
                .arg("-v")
                .output()
                .unwrap();
            assert_eq!(
                out.status.code(),
                Some(1),
                "{what}, {command}: {}",
                text(&out)
            );
            let err = stderr(&out);
            assert!(
                err.contains(&cfg.display().to_string()),
                "{what}, {command}: the error does not name the file: {}",
                text(&out)
            );
            for e in &expected {
                assert!(
                    err.contains(e),
                    "{what}, {command}: the error does not say {e:?}: {}",
                    text(&out)
                );
            }
            assert_eq!(
                snapshot(&root),
                before,
                "{what}, {command}: the refused run changed the node's files"
            );
        }
    }
}

/// Mounts a tmpfs of `size` on `dir`; unmounted on drop (after what uses it).
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(dir).unwrap();
        let ok = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0755"),
                "tmpfs",
            ])
            .arg(dir)
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "cannot mount a tmpfs on {}", dir.display());
        Tmpfs(dir.to_owned())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Writes zeros into `path` until the filesystem refuses (ENOSPC).
fn fill(path: &Path) {
    use std::io::Write;
    let mut f = std::fs::File::create(path).unwrap();
    let chunk = vec![0u8; 1 << 20];
    loop {
        if let Err(e) = f.write_all(&chunk).and_then(|()| f.sync_all()) {
            assert_eq!(e.raw_os_error(), Some(ENOSPC), "{e}");
            return;
        }
    }
}

/// errno of a full filesystem.
const ENOSPC: i32 = 28;

/// The partition's access status as the master tells it (`getComputerPartitionStatus`,
/// what SlapOS's own interface shows).
fn master_status(url: &str, computer: &str, pid: &str) -> String {
    let out = Command::new("curl")
        .args(["-sS", "--fail", "--max-time", "10"])
        .arg(format!(
            "{url}getComputerPartitionStatus?computer_id={computer}&computer_partition_id={pid}"
        ))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    stdout(&out)
}

/// Issue 25: the node's instance disk fills up (a small tmpfs as instance_root, the
/// agent's own free-space margin set to 0 so that the writes themselves fail). A change
/// to the instance cannot be deployed: the run fails, the error reaches the master, and
/// the instance's service keeps running as it was (same process, its files whole). Once
/// space is freed, the next run deploys the change.
#[test]
fn a_full_disk_keeps_services_running_and_reports_until_space_is_freed() {
    let computer = "COMP-SGF-FULL";
    let dir = tempfile::tempdir().unwrap();
    let root = open_dir(&dir);
    let up = Up::start_replicas(&root, 1);
    let url = up.urls[0].as_str();
    let node_root = root.join("node");
    let disk = Tmpfs::mount(&node_root.join("inst"), "24m");
    let node = AgentNode::new(&node_root, computer, &up.urls, &prefix("f"), 1);
    let cfg = std::fs::read_to_string(&node.cfg).unwrap();
    std::fs::write(
        &node.cfg,
        cfg.replacen("[slapos]\n", "[slapos]\ninstance_min_free_space = 0\n", 1),
    )
    .unwrap();
    let out = node.ok(&["format"]);
    assert!(out.contains("prepared the computer"), "{out}");
    let software = service_release(
        &dir.path().join("greeting"),
        "greeting",
        &instance_file("etc/greeting", "0640", "plain", "{{param.name}}\n"),
    );
    python(&["supply", url, &software, computer]);
    node.ok(&["software"]);
    let pid = request(url, &software, computer, "sgf-full", None)["partition"]
        .as_str()
        .expect("allocated")
        .to_owned();
    let out = node.ok(&["instance"]);
    assert!(out.contains("1 processed"), "{out}");
    let p = node.partition_dir(&pid);
    let service = std::fs::read(p.join("etc/service/beat")).unwrap();
    assert_eq!(
        std::fs::read_to_string(p.join("etc/greeting")).unwrap(),
        "sgf-full\n"
    );
    let beat = running_beat(&node, &pid);

    // The disk fills; the requester changes the instance's parameters.
    let filler = disk.0.join("filler");
    fill(&filler);
    let client_cfg = root.join("client.cfg");
    std::fs::write(&client_cfg, format!("[slapos]\nmaster_url = {url}\n")).unwrap();
    let long_name = "x".repeat(64 << 10);
    let changed = slapos_e2e::agent::slapos(&[
        "request",
        "sgf-full",
        &software,
        "--node",
        &format!("computer_guid={computer}"),
        "--parameters",
        &format!("name={long_name}"),
        "--cfg",
        client_cfg.to_str().unwrap(),
    ]);
    assert!(
        matches!(changed.status.code(), Some(0 | 2)),
        "{}",
        text(&changed)
    );

    // Each run fails on that partition, says why, and tells the master; the service
    // runs on, untouched, and its files are whole.
    for run in 1..=2 {
        let out = node.node(&["instance"]);
        assert_ne!(out.status.code(), Some(0), "run {run}: {}", text(&out));
        assert!(
            stdout(&out).contains("1 failed"),
            "run {run}: {}",
            text(&out)
        );
        assert!(
            text(&out).contains("No space left on device"),
            "run {run}: {}",
            text(&out)
        );
        assert_eq!(
            running_beat(&node, &pid),
            beat,
            "run {run}: the service was restarted"
        );
        assert_eq!(std::fs::read(p.join("etc/service/beat")).unwrap(), service);
        assert_eq!(
            std::fs::read_to_string(p.join("etc/greeting")).unwrap_or_default(),
            "sgf-full\n",
            "run {run}: a file the run could not rewrite is no longer whole"
        );
        let status = master_status(url, computer, &pid);
        assert!(
            status.contains("#error") && status.contains("No space left on device"),
            "run {run}: the master was not told: {status}"
        );
    }
    std::thread::sleep(Duration::from_millis(1500));
    assert!(
        Path::new(&format!("/proc/{beat}")).exists(),
        "the service died on the full disk"
    );

    // Space freed: the next run deploys the change, and the master hears it started.
    std::fs::remove_file(&filler).unwrap();
    let out = node.node(&["instance"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(stdout(&out).contains("1 processed"), "{}", text(&out));
    assert_eq!(
        std::fs::read_to_string(p.join("etc/greeting")).unwrap(),
        format!("{long_name}\n")
    );
    running_beat(&node, &pid);
    let status = master_status(url, computer, &pid);
    assert!(status.contains("#access"), "{status}");
    drop(node);
    drop(disk);
}
