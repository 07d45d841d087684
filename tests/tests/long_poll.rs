//! Issue 21, the node side: `slapos node daemon` waits on a long poll of its computer's
//! view and runs as soon as it changes, its periods (SlapOS's 300 s by default) only a
//! safety net; against a master that does not version views (the real slapproxy) it polls
//! at its periods exactly as before.
//!
//! The protocol's edge cases (304, a poll held then answered, early 304s, errors and
//! backoff, failover keeping the ETag) are tested against a stand-in of the gateway in
//! `slapgrid/src/watch.rs`; here the daemon runs against real masters.
//!
//! Prerequisites as for slapgrid.rs: root, the node venv (tests/compat/node).

use slapos_e2e::agent::{beat_release, kill9, open_dir, prefix, python, wait_for, AgentNode, Up};
use slapos_e2e::slapos_bin;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// `slapos node daemon` of `node`, its log in `<root>/daemon.log`; killed when dropped.
struct Daemon {
    child: Child,
    log: std::path::PathBuf,
}

impl Daemon {
    fn start(node: &AgentNode) -> Daemon {
        let log = node.root.join("daemon.log");
        let file = std::fs::File::create(&log).unwrap();
        let child = Command::new(slapos_bin())
            .args(["node", "daemon", "-v", "--cfg"])
            .arg(&node.cfg)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .expect("slapos node daemon");
        Daemon { child, log }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The node's `[slapos]` section with `extra` keys added.
fn with_keys(node: &AgentNode, extra: &str) {
    let cfg = std::fs::read_to_string(&node.cfg).unwrap();
    let cfg = cfg.replacen("[slapos]\n", &format!("[slapos]\n{extra}"), 1);
    std::fs::write(&node.cfg, cfg).unwrap();
}

/// What `IR/var/watch.json` says (the daemon's watch).
fn watch_status(node: &AgentNode) -> serde_json::Value {
    std::fs::read(node.root.join("inst/var/watch.json"))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

/// The partition `title` was given, once the master allocated it.
fn request(url: &str, software: &str, computer: &str, title: &str) -> String {
    let answer: serde_json::Value =
        serde_json::from_str(&python(&["request", url, software, computer, title])).unwrap();
    answer["partition"]
        .as_str()
        .expect("allocated at once")
        .to_owned()
}

/// Whether the partition's service runs (false while the supervisor is not up yet).
fn beat_running(node: &AgentNode, partition: &str) -> bool {
    let out = node.node(&["status", "--json"]);
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    status.as_array().is_some_and(|a| {
        a.iter().any(|p| {
            p["group"] == partition && p["name"] == "beat-on-watch" && p["state"] == "Running"
        })
    })
}

/// The real slapproxy sends no ETag: the daemon's watch sends it nothing, says it polls
/// plainly, and the loops deploy at their periods (a request before the start at the
/// first runs, one after it at the next period).
#[test]
fn against_slapproxy_the_daemon_polls_at_its_periods() {
    let venv = slapos_e2e::compat::venv();
    let computer = "COMP-LP-PROXY";
    let proxy = slapos_e2e::compat::Proxy::start(&venv, computer, &[]);
    let dir = tempfile::tempdir().unwrap();
    let root = open_dir(&dir);
    let node = AgentNode::new(
        &root.join("node"),
        computer,
        std::slice::from_ref(&proxy.url),
        &prefix("lp"),
        3,
    );
    with_keys(&node, "software_interval = 3\ninstance_interval = 3\n");
    node.ok(&["format"]);
    let software = beat_release(&root.join("beat"));
    python(&["supply", &proxy.url, &software, computer]);
    let first = request(&proxy.url, &software, computer, "lp-first");
    let daemon = Daemon::start(&node);
    wait_for("the first instance", Duration::from_secs(120), || {
        beat_running(&node, &first)
    });
    wait_for("the watch's status", Duration::from_secs(30), || {
        watch_status(&node)["mode"] == "polling"
    });
    let second = request(&proxy.url, &software, computer, "lp-second");
    wait_for(
        "the second instance at a later period",
        Duration::from_secs(120),
        || beat_running(&node, &second),
    );
    let log = daemon.log();
    assert!(log.contains("the master sends no ETag"), "{log}");
    assert!(!log.contains("long poll failed"), "{log}");
    assert!(!log.contains("versions the computer's view"), "{log}");
    assert_eq!(watch_status(&node)["mode"], "polling");
    assert!(
        !proxy.log_tail().contains("Traceback"),
        "{}",
        proxy.log_tail()
    );
}

/// Against our gateways, a node whose periods are SlapOS's (300 s) deploys an instance
/// requested after its start within seconds: the long poll wakes it, far before its next
/// period could have; again after the gateway it polled died (failover). After that,
/// nothing spins: the node's own reports wake it once, then the poll is held.
#[test]
fn against_our_gateways_a_node_with_long_periods_deploys_a_request_within_seconds() {
    let dir = tempfile::tempdir().unwrap();
    let root = open_dir(&dir);
    let up = Up::start(&root);
    let computer = "COMP-LP-GW";
    let node = AgentNode::new(&root.join("node"), computer, &up.urls, &prefix("lg"), 3);
    node.ok(&["format"]);
    let daemon = Daemon::start(&node);
    wait_for("the watch's long poll", Duration::from_secs(120), || {
        watch_status(&node)["mode"] == "long-poll"
    });
    let software = beat_release(&root.join("beat"));
    let url = &up.urls[1];
    let asked = Instant::now();
    python(&["supply", url, &software, computer]);
    let partition = request(url, &software, computer, "lp-gw");
    wait_for(
        "the instance, long before the 300 s period",
        Duration::from_secs(60),
        || beat_running(&node, &partition),
    );
    eprintln!("request to running: {} ms", asked.elapsed().as_millis());
    let log = daemon.log();
    assert!(log.contains("the computer's view changed"), "{log}");
    // The gateway the node polls dies: the watch fails over to the next, sending it the
    // ETag it had, and the next request is deployed within seconds again.
    assert_eq!(watch_status(&node)["gateway"], up.urls[0].as_str());
    kill9(up.gateway_pids[0]);
    let asked = Instant::now();
    let again = request(&up.urls[2], &software, computer, "lp-gw-2");
    wait_for(
        "the instance requested after the failover",
        Duration::from_secs(60),
        || beat_running(&node, &again),
    );
    eprintln!(
        "request to running after the failover: {} ms",
        asked.elapsed().as_millis()
    );
    assert_ne!(watch_status(&node)["gateway"], up.urls[0].as_str());
    // Settled: within a few seconds the runs stop, the poll is held.
    let runs = |log: &str| log.matches("run=").count();
    std::thread::sleep(Duration::from_secs(8));
    let settled = runs(&daemon.log());
    std::thread::sleep(Duration::from_secs(10));
    assert_eq!(runs(&daemon.log()), settled, "{}", daemon.log());
    assert_eq!(watch_status(&node)["mode"], "long-poll");
    drop(up);
}
