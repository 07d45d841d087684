//! Differential: the same scenario through SlapOS's own node agent (slapos.core 1.26.1,
//! Python) and through ours, each against its own fresh slapproxy (the reference's
//! master), observation by observation: format, supply and request
//! tinysr (chaos/tinysr), software, instance (started), instance again (unchanged),
//! stopped, destroyed then `node report`. What the master says (allocation, connection
//! parameters, freeing), which services run, and which files the partition holds must be
//! the same, except the differences listed in `DELIBERATE`, each with its reason.
//!
//! The Python agent runs as `nobody` in its unprivileged mode (slapgrid-behaviour.md 8.3,
//! as tests/tests/node_agent.rs runs it); ours as root with a user per partition, so file
//! owners are not compared (they differ by design of the two modes).

use slapos_e2e::agent::{chmod_tree, node_venv, open_dir, prefix, python, text, AgentNode};
use slapos_e2e::compat::Proxy;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

const COMPUTER: &str = "COMP-DIFF";
const TITLE: &str = "diff-instance";

/// Differences between the two agents' observations that are decisions, not bugs:
/// (what, why).
const DELIBERATE: &[(&str, &str)] = &[(
    "after destruction, `.slapos-resource` stays in the partition",
    "slapgrid/DESIGN.md: the file describes the partition (format writes it), not the \
     instance; the reference removes it until the next format",
)];

/// What a user of either agent can see at one step.
#[derive(Debug, PartialEq, Eq, Clone)]
struct Observation {
    /// The partition the master allocated, its software release and connection.
    master: String,
    /// Entries of the partition directory (top level, and `etc/*`).
    files: BTreeSet<String>,
    /// Services running (names as the reference's supervisord shows them).
    running: BTreeSet<String>,
}

fn entries(p: &Path) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for e in std::fs::read_dir(p).into_iter().flatten().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name == "etc" {
            for sub in std::fs::read_dir(e.path()).into_iter().flatten().flatten() {
                let s = sub.file_name().to_string_lossy().into_owned();
                out.insert(format!("etc/{s}"));
                for f in std::fs::read_dir(sub.path())
                    .into_iter()
                    .flatten()
                    .flatten()
                {
                    out.insert(format!("etc/{s}/{}", f.file_name().to_string_lossy()));
                }
            }
        }
        out.insert(name);
    }
    out
}

/// The master's view of our instance (through the slap library).
fn master_view(url: &str) -> String {
    let full: serde_json::Value = serde_json::from_str(&python(&["full", url, COMPUTER])).unwrap();
    let mut parts: Vec<String> = full["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| !p["software_release"].is_null() || p["title"] == TITLE)
        .map(|p| {
            // The release URLs differ (each side has its own copy of tinysr): only
            // whether the partition holds one is compared.
            format!(
                "{} state={} title={} allocated={} connection={}",
                p["partition"],
                p["state"],
                p["title"],
                !p["software_release"].is_null(),
                p["connection"]
            )
        })
        .collect();
    parts.sort();
    parts.join("; ")
}

/// SlapOS's own node agent, as `nobody`, in `root` (made by node_helper.py prepare).
struct PythonNode {
    root: PathBuf,
    venv: PathBuf,
}

impl PythonNode {
    fn node(&self, args: &[&str]) -> Output {
        let out = Command::new("runuser")
            .args(["-u", "nobody", "--", "env"])
            .arg(format!("HOME={}", self.root.display()))
            .arg(format!(
                "PATH={}:/usr/bin:/bin",
                self.venv.join("bin").display()
            ))
            .arg(self.venv.join("bin/slapos"))
            .arg("node")
            .args(args)
            .arg("--cfg")
            .arg(self.root.join("etc/slapos.cfg"))
            .arg("--now")
            .current_dir(&self.root)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "slapos.core's slapos node {args:?}: {}",
            text(&out)
        );
        out
    }

    fn running(&self) -> BTreeSet<String> {
        let out = Command::new("runuser")
            .args(["-u", "nobody", "--"])
            .arg(self.venv.join("bin/supervisorctl"))
            .arg("-c")
            .arg(self.root.join("inst/etc/supervisord.conf"))
            .arg("status")
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| l.contains(" RUNNING "))
            .filter_map(|l| l.split_whitespace().next())
            .filter_map(|n| n.split_once(':').map(|(_, name)| name.to_owned()))
            .filter(|n| n != "watchdog")
            .collect()
    }
}

impl Drop for PythonNode {
    fn drop(&mut self) {
        let pidfile = self.root.join("inst/var/run/supervisord.pid");
        if let Ok(pid) = std::fs::read_to_string(&pidfile) {
            let _ = Command::new("kill").arg(pid.trim()).status();
            std::thread::sleep(Duration::from_millis(500));
        }
        let _ = Command::new("pkill")
            .args(["-KILL", "-u", "nobody", "-f"])
            .arg(&self.root)
            .status();
    }
}

fn ours_running(node: &AgentNode) -> BTreeSet<String> {
    node.status()
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["state"] == "Running")
        .filter_map(|p| p["name"].as_str().map(str::to_owned))
        .collect()
}

/// Runs the scenario through one agent: `step(name)` runs `slapos node <name>`,
/// `running()` lists its running services, `partition(pid)` its partition directory.
fn scenario(
    url: &str,
    software: &str,
    step: &dyn Fn(&str),
    running: &dyn Fn() -> BTreeSet<String>,
    partition: &dyn Fn(&str) -> PathBuf,
) -> Vec<(&'static str, Observation)> {
    let observe = |pid: &str| Observation {
        master: master_view(url),
        files: entries(&partition(pid)),
        running: running(),
    };
    step("format");
    python(&["supply", url, software, COMPUTER]);
    let answer: serde_json::Value =
        serde_json::from_str(&python(&["request", url, software, COMPUTER, TITLE])).unwrap();
    let pid = answer["partition"].as_str().unwrap().to_owned();
    step("software");
    step("instance");
    let mut seen = vec![("started", observe(&pid))];
    step("instance");
    seen.push(("unchanged", observe(&pid)));
    python(&["request", url, software, COMPUTER, TITLE, "stopped"]);
    step("instance");
    seen.push(("stopped", observe(&pid)));
    python(&["request", url, software, COMPUTER, TITLE, "destroyed"]);
    step("instance");
    step("report");
    seen.push(("destroyed", observe(&pid)));
    seen
}

#[test]
fn our_agent_and_slapos_cores_give_the_same_observable_results() {
    let venv = node_venv();
    let compat_venv = slapos_e2e::compat::venv();
    let dir = tempfile::tempdir().unwrap();
    let root = open_dir(&dir);
    // The release both sides copy (the Python side as `nobody`: readable by all).
    let tinysr = root.join("tinysr-source");
    chaos::tinysr::write_source(&tinysr).unwrap();

    // SlapOS's own agent against its slapproxy.
    let proxy_ref = Proxy::start(&compat_venv, COMPUTER, &[]);
    let py_root = root.join("py");
    std::fs::create_dir_all(&py_root).unwrap();
    let _ = Command::new("chown")
        .args(["nobody:"])
        .arg(&py_root)
        .status();
    let prepare = Command::new("runuser")
        .args(["-u", "nobody", "--"])
        .arg(venv.join("bin/python"))
        .arg(slapos_e2e::agent::helper())
        .args(["prepare"])
        .arg(&py_root)
        .arg(&proxy_ref.url)
        .arg(&tinysr)
        .arg(COMPUTER)
        .output()
        .unwrap();
    assert!(prepare.status.success(), "prepare: {}", text(&prepare));
    let py_software = String::from_utf8_lossy(&prepare.stdout).trim().to_owned();
    let py = PythonNode {
        root: py_root.clone(),
        venv: venv.clone(),
    };
    let theirs = scenario(
        &proxy_ref.url,
        &py_software,
        &|s| {
            py.node(&[s]);
        },
        &|| py.running(),
        &|pid| py_root.join("inst").join(pid),
    );

    // Ours against another fresh slapproxy.
    let proxy_ours = Proxy::start(&compat_venv, COMPUTER, &[]);
    let scratch = root.join("rs-helper");
    let software = python(&[
        "prepare",
        scratch.to_str().unwrap(),
        &proxy_ours.url,
        tinysr.to_str().unwrap(),
        "unused",
    ])
    .trim()
    .to_owned();
    chmod_tree(&scratch);
    let node = AgentNode::new(
        &root.join("rs"),
        COMPUTER,
        std::slice::from_ref(&proxy_ours.url),
        &prefix("d"),
        2,
    );
    let ours = scenario(
        &proxy_ours.url,
        &software,
        &|s| {
            node.ok(&[s]);
        },
        &|| ours_running(&node),
        &|pid| node.partition_dir(pid),
    );

    // Compare step by step; only the deliberate differences may remain.
    let mut unexplained = Vec::new();
    for ((step, a), (_, b)) in theirs.iter().zip(&ours) {
        if a.master != b.master {
            unexplained.push(format!(
                "{step}: master view\n  reference: {}\n  ours:      {}",
                a.master, b.master
            ));
        }
        if a.running != b.running {
            unexplained.push(format!(
                "{step}: running services\n  reference: {:?}\n  ours:      {:?}",
                a.running, b.running
            ));
        }
        let only_ref: Vec<&String> = a.files.difference(&b.files).collect();
        let only_ours: Vec<&String> = b.files.difference(&a.files).collect();
        let deliberate =
            *step == "destroyed" && only_ref.is_empty() && only_ours == [".slapos-resource"];
        if !deliberate && (!only_ref.is_empty() || !only_ours.is_empty()) {
            unexplained.push(format!(
                "{step}: partition files\n  only with the reference: {only_ref:?}\n  only with ours: {only_ours:?}"
            ));
        }
    }
    assert!(
        unexplained.is_empty(),
        "differences not in DELIBERATE ({DELIBERATE:?}):\n{}",
        unexplained.join("\n")
    );
    // The scenario did what it says on both sides.
    let started = &ours[0].1;
    assert!(started.running.contains("hello-on-watch"), "{started:?}");
    assert!(started.files.contains("once.txt") && started.files.contains("etc/service/hello"));
    assert!(started.master.contains("hello-url"), "{}", started.master);
    assert!(ours[2].1.running.is_empty(), "services survived the stop");
    assert!(
        !ours[3].1.master.contains("allocated=true"),
        "{}",
        ours[3].1.master
    );
}
