//! The chaos run against the group hosted in partitions (`slapos chaos run
//! --self-hosted`): `slapos up`'s default (a node per replica, each in its own network
//! namespace, the replica and its gateway in a partition supervised by the node, mTLS on
//! every link), the same workload through the gateways in the partitions (as the admin
//! person and as two computers, with their certificates), and faults on the nodes: a
//! node killed outright (agent, supervisor, every process of its partitions) and its
//! agent started again, the leader's process paused, links cut in the router, a
//! gateway killed (its node's supervisor restarts it). Same checkers, same verdicts: per-
//! key linearizability, no acknowledged write lost on any replica, replicas identical
//! after every replica was killed and restarted from its disk, usage exactly once.
//!
//! Runs as root (namespaces, partition users).

use serde_json::Value;
use slapos_e2e::agent::is_root;
use slapos_e2e::slapos_bin;
use std::process::Command;

#[test]
fn node_faults_on_a_self_hosted_group_lose_nothing_and_stay_linearizable() {
    assert!(is_root(), "runs as root (namespaces, partition users)");
    let dir = tempfile::tempdir().expect("tempdir");
    let json = dir.path().join("report.json");
    let out = Command::new(slapos_bin())
        .args([
            "chaos",
            "run",
            "--self-hosted",
            "--duration",
            "45s",
            "--seed",
            "11",
        ])
        .arg("--dir")
        .arg(dir.path().join("run"))
        .arg("--json")
        .arg(&json)
        .output()
        .expect("run slapos chaos run --self-hosted");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    assert!(
        out.status.success(),
        "chaos run failed:\n{stdout}\n{stderr}"
    );
    let report: Value =
        serde_json::from_slice(&std::fs::read(&json).expect("report")).expect("JSON report");
    assert_eq!(report["passed"], true, "{stdout}");
    assert_eq!(report["lost_writes"], 0);
    assert_eq!(report["linearizable"], true);
    assert_eq!(report["replicas_identical"], true);
    assert_eq!(report["unknown_verdicts"], 0);
    assert_eq!(report["usage_errors"].as_u64(), Some(0), "{stdout}");
    // the checkers had something to judge
    let acked = report["ops_by_outcome"]["write ok"].as_u64().unwrap_or(0);
    let reads = report["ops_by_outcome"]["read ok"].as_u64().unwrap_or(0);
    assert!(acked > 300 && reads > 300, "{stdout}");
    assert!(
        report["usage_by_outcome"]["ok"].as_u64().unwrap_or(0) > 20,
        "{stdout}"
    );
    // every kind a hosted group can take was injected; a wiped rejoin is the
    // remove-replica/add-replica path (tests/self_hosting*.rs), not a fault here
    for kind in [
        "kill_leader",
        "kill_replica",
        "pause_leader",
        "isolate_leader",
        "split_group",
        "kill_gateway",
    ] {
        assert!(
            report["faults_by_kind"][kind].as_u64().unwrap_or(0) >= 1,
            "{kind} never injected:\n{stdout}"
        );
    }
    assert_eq!(report["not_injectable"], serde_json::json!(["wipe_rejoin"]));
    assert!(
        stderr.contains("KillLeader node COMP-"),
        "a leader fault is a node crash: {stderr}"
    );
    // nothing left behind: no `slapos up` namespace (test binaries run one at a time, so
    // none is another test's), no process of the run
    let netns = Command::new("ip").args(["netns", "list"]).output().unwrap();
    assert!(
        !String::from_utf8_lossy(&netns.stdout).contains("slapos-up-"),
        "namespaces left behind: {}",
        String::from_utf8_lossy(&netns.stdout)
    );
    let cluster = dir.path().join("run/up");
    let left = Command::new("pgrep")
        .args(["-a", "-f", cluster.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        left.stdout.is_empty(),
        "processes left behind: {}",
        String::from_utf8_lossy(&left.stdout)
    );
}
