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

use slapos_e2e::agent::is_root;
use slapos_e2e::{assert_no_process_naming, chaos_run, ChaosRun};
use std::process::Command;

#[test]
fn node_faults_on_a_self_hosted_group_lose_nothing_and_stay_linearizable() {
    assert!(is_root(), "runs as root (namespaces, partition users)");
    let dir = tempfile::tempdir().expect("tempdir");
    let ChaosRun {
        report,
        stdout,
        stderr,
        ..
    } = chaos_run(
        &["--self-hosted", "--duration", "45s", "--seed", "11"],
        dir.path(),
    );
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
    // (nor are the disk faults: the hosted replicas' disks are their nodes', not the
    // harness's tmpfs and passthrough)
    assert_eq!(
        report["not_injectable"],
        serde_json::json!(["wipe_rejoin", "disk_full", "io_error"])
    );
    assert!(
        stderr.contains("KillLeader node COMP-"),
        "a leader fault is a node crash: {stderr}"
    );
    // nothing left behind: none of the run's namespaces (`slapos-up-<pid>-…`, as the
    // harness reported them; other runs on the machine may have theirs), no process of
    // the run
    let at = stderr
        .find("slapos up (pid ")
        .expect("the harness names slapos up's pid");
    let pid: String = stderr[at + "slapos up (pid ".len()..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    assert!(!pid.is_empty(), "{stderr}");
    let prefix = format!("slapos-up-{pid}-");
    let netns = Command::new("ip").args(["netns", "list"]).output().unwrap();
    let left: Vec<&str> = std::str::from_utf8(&netns.stdout)
        .unwrap()
        .lines()
        .filter(|l| l.starts_with(&prefix))
        .collect();
    assert!(left.is_empty(), "namespaces left behind: {left:?}");
    assert_no_process_naming(&dir.path().join("run/up"));
}
