//! The real Python SlapOS node agent (slapos.core 1.26.1) against our master: `slapos up`
//! runs the cluster, then `slapos node format`, `slapos node software` and `slapos node
//! instance` (run as user `nobody`, unprivileged mode of slapgrid-behaviour.md 8.2/8.3)
//! install tinysr (chaos/tinysr) from one of our gateways and run its instance to the
//! end; the connection parameters the instance publishes come back through the slap
//! library.
//!
//! Prerequisites (checked, with a message saying how to get them): root (the node runs
//! as `nobody` through runuser), the node venv `$SLAPOS_NODE_VENV` (default
//! /var/tmp/slapos-node-venv, made by tests/compat/node/setup-node-venv.sh, which
//! .ci/run calls).

use slapos_e2e::agent::is_root;
use slapos_e2e::slapos_bin;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const COMPUTER: &str = "COMP-NODE-AGENT";

fn node_venv() -> PathBuf {
    let venv = PathBuf::from(
        std::env::var_os("SLAPOS_NODE_VENV").unwrap_or_else(|| "/var/tmp/slapos-node-venv".into()),
    );
    let setup = Path::new(env!("CARGO_MANIFEST_DIR")).join("compat/node/setup-node-venv.sh");
    let help = format!(
        "node_agent needs the node venv at {} ($SLAPOS_NODE_VENV): a Python 3.12 that user \
         `nobody` can execute, with slapos.core 1.26.1, slapos.libnetworkcache, supervisor, \
         zc.buildout<5 and setuptools<80. Create it with {} (as root; .ci/run does so).",
        venv.display(),
        setup.display()
    );
    assert!(
        is_root(),
        "node_agent must run as root (it runs the node agent as `nobody` via runuser)"
    );
    for bin in ["python", "slapos", "supervisord"] {
        assert!(
            venv.join("bin").join(bin).exists(),
            "{} missing.\n{help}",
            venv.join("bin").join(bin).display()
        );
    }
    let check = Command::new("runuser")
        .args(["-u", "nobody", "--"])
        .arg(venv.join("bin/python"))
        .args([
            "-c",
            "import slapos.grid.slapgrid, zc.buildout, supervisor, importlib.metadata as m; \
             assert m.version('slapos.core') == '1.26.1'; \
             assert int(m.version('zc.buildout').split('.')[0]) < 5",
        ])
        .output()
        .unwrap_or_else(|e| panic!("cannot run runuser: {e}\n{help}"));
    assert!(
        check.status.success(),
        "the node venv does not work for `nobody`: {}\n{help}",
        String::from_utf8_lossy(&check.stderr)
    );
    venv
}

/// tinysr's files under `dir` (which `nobody` can read), the source node_helper.py
/// `prepare` copies.
fn tinysr(dir: &Path) -> PathBuf {
    let sr = dir.join("tinysr-source");
    chaos::tinysr::write_source(&sr).expect("writing tinysr");
    sr
}

fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| !s.contains(") Z "))
        .unwrap_or(false)
}

fn signal(pid: u32, sig: &str) {
    let _ = Command::new("kill")
        .args([sig, &pid.to_string()])
        .stderr(Stdio::null())
        .status();
}

/// Everything the test started; stopped and removed on drop, also when the test fails.
struct World {
    up: Option<Child>,
    supervisord_pid: PathBuf,
    node: PathBuf,
    failed_logs: Vec<PathBuf>,
    dir: Option<tempfile::TempDir>,
}

impl Drop for World {
    fn drop(&mut self) {
        // supervisord (started by `slapos node instance`) stops its services on SIGTERM.
        if let Some(pid) = std::fs::read_to_string(&self.supervisord_pid)
            .ok()
            .and_then(|s| s.trim().parse::<u32>().ok())
        {
            signal(pid, "-TERM");
            let deadline = Instant::now() + Duration::from_secs(20);
            while alive(pid) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(100));
            }
            signal(pid, "-KILL");
        }
        // Anything else still running as a partition program out of our directory.
        if let Ok(out) = Command::new("pgrep")
            .args(["-u", "nobody", "-f"])
            .arg(&self.node)
            .output()
        {
            for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                if let Ok(pid) = pid.parse() {
                    signal(pid, "-KILL");
                }
            }
        }
        if let Some(mut up) = self.up.take() {
            signal(up.id(), "-TERM");
            let deadline = Instant::now() + Duration::from_secs(30);
            while up.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = up.kill();
            let _ = up.wait();
        }
        if std::thread::panicking() {
            for log in &self.failed_logs {
                if let Ok(text) = std::fs::read_to_string(log) {
                    let tail: Vec<&str> = text.lines().rev().take(40).collect();
                    eprintln!("--- tail of {} ---", log.display());
                    for l in tail.iter().rev() {
                        eprintln!("{l}");
                    }
                }
            }
        }
        drop(self.dir.take());
    }
}

/// Runs `program args` (as `nobody` when `as_nobody`), output to `log`, within `limit`.
fn run(
    world: &mut World,
    as_nobody: bool,
    program: &Path,
    args: &[&str],
    limit: Duration,
) -> String {
    let name = program.file_name().unwrap().to_string_lossy().to_string();
    let step = args
        .iter()
        .find(|a| !a.contains('/') && **a != "node")
        .copied()
        .unwrap_or("run");
    let log = world.node.join(format!(
        "../{:02}-{name}-{step}.log",
        world.failed_logs.len()
    ));
    let out = File::create(&log).unwrap();
    let mut cmd = if as_nobody {
        let mut c = Command::new("runuser");
        c.args(["-u", "nobody", "--", "env"])
            .arg(format!("HOME={}", world.node.display()))
            .arg(format!(
                "PATH={}:/usr/bin:/bin",
                program.parent().unwrap().display()
            ))
            .arg(program);
        c
    } else {
        Command::new(program)
    };
    let mut child = cmd
        .args(args)
        .current_dir(&world.node)
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {name} {args:?}: {e}"));
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            world.failed_logs.push(log.clone());
            panic!("{name} {args:?} did not finish within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let mut text = String::new();
    File::open(&log).unwrap().read_to_string(&mut text).unwrap();
    if !status.success() {
        world.failed_logs.push(log.clone());
        panic!("{name} {args:?} failed ({status}):\n{text}");
    }
    world.failed_logs.push(log);
    text
}

/// Every request the node sent to the master (urllib3's debug lines) was answered 2xx.
fn assert_master_answers_ok(step: &str, log: &str) {
    let calls: Vec<&str> = log.lines().filter(|l| l.contains(" HTTP/1.1\" ")).collect();
    assert!(
        !calls.is_empty(),
        "{step}: no request to the master logged:\n{log}"
    );
    let bad: Vec<&&str> = calls
        .iter()
        .filter(|l| {
            let code = l.split(" HTTP/1.1\" ").nth(1).unwrap_or("");
            // slapproxy has no getHateoasUrl either (Flask 404); the client tolerates it.
            !code.starts_with('2') && !l.contains("GET /getHateoasUrl ")
        })
        .collect();
    assert!(
        bad.is_empty(),
        "{step}: the master refused requests: {bad:#?}"
    );
    assert!(
        !log.contains(" ERROR "),
        "{step}: the node agent logged an error:\n{log}"
    );
}

#[test]
fn python_node_agent_installs_and_runs_tinysr_against_our_master() {
    let venv = node_venv();
    let started = Instant::now();

    let dir = tempfile::tempdir().expect("tempdir");
    // `nobody` must reach the node directory inside the (0700) tempdir.
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let sr_source = tinysr(dir.path());
    let node = dir.path().join("node");
    std::fs::create_dir(&node).unwrap();
    let nobody = Command::new("id").args(["-u", "nobody"]).output().unwrap();
    let uid: u32 = String::from_utf8_lossy(&nobody.stdout)
        .trim()
        .parse()
        .expect("uid of nobody");
    let nogroup = Command::new("id").args(["-g", "nobody"]).output().unwrap();
    let gid: u32 = String::from_utf8_lossy(&nogroup.stdout)
        .trim()
        .parse()
        .expect("gid of nobody");
    std::os::unix::fs::chown(&node, Some(uid), Some(gid)).unwrap();

    let cluster_dir = dir.path().join("cluster");
    let up_log = dir.path().join("up.log");
    let up = Command::new(slapos_bin())
        // Plain HTTP: this test compares the Python agent's behaviour (the node agent
        // over certificates is tests/mtls.rs's).
        .args(["up", "--insecure", "--replicas", "3", "--dir"])
        .arg(&cluster_dir)
        .stdin(Stdio::null())
        .stdout(File::create(&up_log).unwrap())
        .stderr(File::create(dir.path().join("up.err")).unwrap())
        .spawn()
        .expect("start slapos up");
    let mut world = World {
        up: Some(up),
        supervisord_pid: node.join("inst/var/run/supervisord.pid"),
        node: node.clone(),
        failed_logs: vec![dir.path().join("up.err")],
        dir: None,
    };
    let json_path = cluster_dir.join("cluster.json");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !json_path.exists() {
        if let Ok(Some(status)) = world.up.as_mut().unwrap().try_wait() {
            panic!("slapos up exited early ({status})");
        }
        assert!(Instant::now() < deadline, "no cluster.json after 60 s");
        std::thread::sleep(Duration::from_millis(100));
    }
    let cluster: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&json_path).unwrap()).expect("cluster.json parses");
    let url = cluster["gateway_urls"][0]
        .as_str()
        .expect("gateway_urls in cluster.json")
        .trim_end_matches('/')
        .to_string();

    let python = venv.join("bin/python");
    let slapos = venv.join("bin/slapos");
    let helper = Path::new(env!("CARGO_MANIFEST_DIR")).join("compat/node/node_helper.py");
    let helper = helper.to_str().unwrap();
    let node_s = node.to_str().unwrap().to_string();
    let cfg = format!("{node_s}/etc/slapos.cfg");
    let minute = Duration::from_secs(60);

    let software = run(
        &mut world,
        true,
        &python,
        &[
            helper,
            "prepare",
            &node_s,
            &url,
            sr_source.to_str().unwrap(),
            COMPUTER,
        ],
        minute,
    )
    .trim()
    .to_string();
    assert_eq!(software, format!("{node_s}/tinysr/software.cfg"));

    // format: creates the computer and its partitions on our master.
    let log = run(
        &mut world,
        true,
        &slapos,
        &["node", "format", "--cfg", &cfg, "--now", "-v"],
        minute,
    );
    assert!(
        log.contains("slapos successfully prepared the computer"),
        "{log}"
    );

    // supply + request through the slap library.
    run(
        &mut world,
        false,
        &python,
        &[helper, "supply", &url, &software, COMPUTER],
        minute,
    );
    let answer = run(
        &mut world,
        false,
        &python,
        &[
            helper,
            "request",
            &url,
            &software,
            COMPUTER,
            "node-agent-instance",
        ],
        minute,
    );
    let answer: serde_json::Value = serde_json::from_str(answer.trim()).expect("request json");
    let partition = answer["partition"]
        .as_str()
        .expect("allocated partition")
        .to_string();

    // node software: the software release is built.
    let log = run(
        &mut world,
        true,
        &slapos,
        &["node", "software", "--cfg", &cfg, "--now", "-v"],
        minute,
    );
    assert_master_answers_ok("slapos node software", &log);
    assert!(log.contains("POST /availableSoftwareRelease"), "{log}");
    let soft: Vec<PathBuf> = std::fs::read_dir(node.join("soft"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(soft.len(), 1, "one software directory: {soft:?}");
    for f in [".completed", "instance.cfg", "bin/buildout"] {
        assert!(
            soft[0].join(f).exists(),
            "{} missing after node software",
            f
        );
    }

    // node instance: the instance is deployed, started, and publishes.
    let log = run(
        &mut world,
        true,
        &slapos,
        &["node", "instance", "--cfg", &cfg, "--now", "-v"],
        minute,
    );
    assert_master_answers_ok("slapos node instance", &log);
    // (the instance's own publish call goes through plain urllib, not logged here; its
    // effect is checked below)
    for call in [
        "GET /getFullComputerInformation",
        "POST /startedComputerPartition",
    ] {
        assert!(log.contains(call), "{call} not sent:\n{log}");
    }
    let p = node.join("inst").join(&partition);
    for f in [
        "etc/service/hello",
        "etc/run/once",
        "etc/promise/check-hello",
        "once.txt",
    ] {
        assert!(
            p.join(f).exists(),
            "{} missing after node instance",
            p.join(f).display()
        );
    }
    // The hello service runs under supervisord.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let out = Command::new("pgrep")
            .args(["-u", "nobody", "-f", "sleep 100000"])
            .output()
            .unwrap();
        let hello_log =
            std::fs::read_to_string(p.join(format!(".{partition}_hello.log"))).unwrap_or_default();
        if out.status.success()
            && hello_log.contains(&format!("hello from {partition} state=started"))
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the hello service does not run: {hello_log:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    // The published connection parameters are visible through the slap library, via
    // another gateway too.
    for gateway in cluster["gateway_urls"].as_array().unwrap() {
        let gateway = gateway.as_str().unwrap().trim_end_matches('/');
        let full = run(
            &mut world,
            false,
            &python,
            &[helper, "full", gateway, COMPUTER],
            minute,
        );
        let full: serde_json::Value = serde_json::from_str(full.trim()).expect("full json");
        let entry = full["partitions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["partition"] == partition.as_str())
            .unwrap_or_else(|| panic!("{partition} not in {full}"))
            .clone();
        assert_eq!(entry["state"], "started", "{full}");
        assert_eq!(entry["software_release"], software.as_str(), "{full}");
        assert_eq!(
            entry["connection"],
            serde_json::json!({
                "computer": COMPUTER,
                "hello-url": format!("http://example.invalid/{partition}"),
            }),
            "{full}"
        );
        assert!(
            full["software"]
                .as_array()
                .unwrap()
                .iter()
                .any(|s| s["url"] == software.as_str()),
            "{full}"
        );
    }
    let answer = run(
        &mut world,
        false,
        &python,
        &[
            helper,
            "request",
            &url,
            &software,
            COMPUTER,
            "node-agent-instance",
        ],
        minute,
    );
    let answer: serde_json::Value = serde_json::from_str(answer.trim()).expect("request json");
    assert_eq!(
        answer["connection"]["hello-url"],
        format!("http://example.invalid/{partition}"),
        "{answer}"
    );

    world.dir = Some(dir);
    drop(world);
    eprintln!("node_agent: {:?}", started.elapsed());
}
