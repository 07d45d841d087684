//! The chaos run CI keeps: 60 s of seeded faults (every kind, in network namespaces and
//! with faulty disks as root; loopback without the network cuts and disk faults
//! otherwise) while six clients write and read
//! through three gateways, then the checkers. A lost acknowledged write, a history that
//! is not linearizable, diverging replicas or a phantom local read fail the build.

use master_client::MasterClient;
use slapos_domain::{Command as MasterCommand, Op, RequestId};
use slapos_e2e::agent::is_root;
use slapos_e2e::{chaos_run, slapos_bin, ChaosRun};
use slapos_harness::{Hosts, ProcessCluster};
use slapos_operator::netns::Network;
use slapos_proto::rpc::master::submit_response;
use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;

#[test]
fn sixty_seconds_of_faults_lose_nothing_and_stay_linearizable() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = is_root();
    let mut args = vec!["--duration", "60s", "--seed", "7"];
    if !root {
        args.push("--loopback");
    }
    let ChaosRun {
        report,
        stdout,
        pid,
        ..
    } = chaos_run(&args, dir.path());
    // the checkers had something to judge
    let acked = report["ops_by_outcome"]["write ok"].as_u64().unwrap_or(0);
    let reads = report["ops_by_outcome"]["read ok"].as_u64().unwrap_or(0);
    assert!(acked > 500 && reads > 500, "{stdout}");
    // usage journals were posted, and posted again, through the faults
    let journals = report["usage_by_outcome"]["ok"].as_u64().unwrap_or(0);
    let reposts = report["usage_reposts"].as_u64().unwrap_or(0);
    assert!(journals > 50 && reposts > 10, "{stdout}");
    assert_eq!(report["usage_errors"].as_u64(), Some(0), "{stdout}");
    assert!(
        report["local_values_checked"].as_u64().unwrap_or(0) > 100,
        "{stdout}"
    );
    // 12 keys with two registers each, and the instances created with unique references
    assert!(
        report["registers_checked"].as_u64().unwrap_or(0) > 24,
        "{stdout}"
    );
    // every kind of fault this mode can inject was injected
    let mut kinds = vec![
        "kill_leader",
        "kill_replica",
        "pause_leader",
        "wipe_rejoin",
        "kill_gateway",
    ];
    if root {
        kinds.extend(["isolate_leader", "split_group", "disk_full", "io_error"]);
    }
    for kind in kinds {
        assert!(
            report["faults_by_kind"][kind].as_u64().unwrap_or(0) >= 1,
            "{kind} never injected:\n{stdout}"
        );
    }
    // nothing left behind: no namespaces of this run, no processes
    let netns = Command::new("ip").args(["netns", "list"]).output();
    if let Ok(list) = netns {
        assert!(
            !String::from_utf8_lossy(&list.stdout).contains(&format!("slapos-chaos-{pid}-")),
            "namespaces left behind"
        );
    }
}

/// `--regions`: the hosts in three regions 90, 150 and 230 ms apart behind the WAN
/// emulator; a short run under leader faults keeps every checker's verdict, and the
/// emulator's namespaces go with the run.
#[test]
fn a_chaos_run_over_three_regions_keeps_its_verdicts() {
    if !is_root() {
        eprintln!("SKIPPED: regions need network namespaces (root)");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let regions = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/regions.toml");
    let regions = regions.to_string_lossy();
    let args = [
        "--duration",
        "20s",
        "--seed",
        "11",
        "--faults",
        "kill_leader,isolate_leader",
        "--regions",
        &regions,
    ];
    // chaos_run asserts the verdicts: passed, nothing lost, linearizable, identical
    let ChaosRun {
        report,
        stdout,
        pid,
        ..
    } = chaos_run(&args, dir.path());
    let mode = report["mode"].as_str().unwrap_or("");
    assert!(
        mode.contains("h1 lille") && mode.contains("h2 montreal") && mode.contains("h3 tokyo"),
        "{stdout}"
    );
    assert!(
        report["ops_by_outcome"]["write ok"].as_u64().unwrap_or(0) > 0,
        "{stdout}"
    );
    let list = Command::new("ip")
        .args(["netns", "list"])
        .output()
        .expect("ip netns list");
    assert!(
        !String::from_utf8_lossy(&list.stdout).contains(&format!("slapos-chaos-{pid}-")),
        "namespaces left behind"
    );
}

/// `slapos bench wan` (the figures come from it): a short run over the example
/// regions reports each region's writes and polls and a failover, with the timers chosen
/// for 230 ms; a write forwarded from a region pays at least its round trip to the
/// leader's, so the emulator is in the path; and its namespaces go with it.
#[test]
fn bench_wan_measures_each_region_through_the_emulator() {
    if !is_root() {
        eprintln!("SKIPPED: regions need network namespaces (root)");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let json = dir.path().join("wan.json");
    let out = Command::new(slapos_e2e::slapos_bin())
        .args([
            "bench",
            "wan",
            "--seconds",
            "2",
            "--writers",
            "1",
            "--pollers",
            "2",
        ])
        .args(["--kills", "1", "--dir"])
        .arg(dir.path().join("work"))
        .arg("--json")
        .arg(&json)
        .env_remove("RUST_BACKTRACE")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("slapos bench wan");
    let pid = out.id();
    let out = out.wait_with_output().expect("slapos bench wan's output");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{said}");
    let r: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&json).expect("the JSON report")).unwrap();
    assert_eq!(
        r["regions"],
        serde_json::json!(["lille", "montreal", "tokyo"]),
        "{r}"
    );
    assert_eq!(r["timers"]["heartbeat_ms"], 690, "{r}");
    let regions = r["per_region"].as_array().unwrap();
    assert_eq!(regions.len(), 3, "{r}");
    assert_eq!(
        regions.iter().filter(|g| g["leads"] == true).count(),
        1,
        "{r}"
    );
    for g in regions {
        let w = &g["writes"][0];
        assert!(w["commits"].as_u64().unwrap() > 0, "{r}");
        let to_leader = g["rtt_to_leader_ms"].as_f64().unwrap();
        assert!(w["p50_ms"].as_f64().unwrap() >= to_leader, "{r}");
        assert!(g["polls"]["ok"].as_u64().unwrap() > 0, "{r}");
        assert_eq!(g["polls"]["errors"], 0, "{r}");
    }
    assert_eq!(
        r["failover"]["samples_ms"].as_array().unwrap().len(),
        1,
        "{r}"
    );
    assert!(said.contains("failover (kill -9 of the leader"), "{said}");
    let list = Command::new("ip").args(["netns", "list"]).output().unwrap();
    assert!(
        !String::from_utf8_lossy(&list.stdout).contains(&format!("slapos-chaos-{pid}-")),
        "namespaces left behind"
    );
}

/// Found by the chaos runs: a leader cut off from the others kept its callers waiting for
/// its 10 s commit timeout while the majority elected another leader in about a second.
/// Now it answers "outcome unknown, retry with the same request id" once it has not heard
/// from a quorum within its lease, and the retry through the majority applies the write
/// once.
#[tokio::test]
async fn a_leader_cut_off_from_its_quorum_answers_retry_and_the_retry_applies_once() {
    if !is_root() {
        eprintln!("SKIPPED: network namespaces need root");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let mut net = Network::create(3).expect("namespaces");
    let mut cluster = ProcessCluster::new(&slapos_bin(), dir.path()).on_hosts(Hosts::of(&net));
    cluster.start(3).await.expect("three replicas");
    let leader = cluster
        .wait_leader(Duration::from_secs(20))
        .await
        .expect("a leader");
    // What init applied (the group's certificate authority) is not this test's.
    let (entries, _) = cluster
        .client()
        .with_deadline(Duration::from_secs(30))
        .read(
            &slapos_domain::Query::All,
            slapos_proto::rpc::master::Consistency::Linearizable,
            0,
        )
        .await
        .expect("read");
    let applied_before = slapos_domain::State::from_entries(entries)
        .expect("state")
        .applied_commands();
    let host = cluster.host_of(leader).expect("leader host");
    for other in (1..=3).filter(|h| *h != host) {
        net.cut(host, other).expect("cut");
    }
    let command = MasterCommand {
        request_id: RequestId::new("e2e-cut", 1),
        at: master_client::proposer_time(),
        op: Op::RegisterComputer {
            computer: "COMP-CUT".into(),
            title: String::new(),
            owner: "e2e".into(),
            region: None,
            network: None,
            attributes: BTreeMap::new(),
        },
    };
    let addr = cluster.api_addr(leader).expect("api").to_string();
    let mut old = MasterClient::single(&addr);
    old.call_timeout = Duration::from_secs(30);
    let answer = old
        .submit_once(&command)
        .await
        .expect("an answer, not a timeout");
    match &answer.result {
        Some(submit_response::Result::Unavailable(why)) => assert!(
            why.contains("quorum") || why.contains("stopped leading"),
            "the cut-off leader should say it lost its quorum: {why}"
        ),
        other => panic!("a cut-off leader answered {other:?}"),
    }
    // the same request id through the majority: applied once
    let others = cluster.api_addrs_except(leader);
    let mut majority = MasterClient::new(others).with_deadline(Duration::from_secs(30));
    let (outcome, _) = majority
        .submit(&command)
        .await
        .expect("the majority takes it");
    assert!(outcome.is_ok(), "{outcome:?}");
    net.heal().expect("heal");
    let (again, _) = majority.submit(&command).await.expect("a retry");
    assert_eq!(again, outcome, "a retry is answered from memory");
    let mut everyone = cluster.client().with_deadline(Duration::from_secs(30));
    let (entries, _) = everyone
        .read(
            &slapos_domain::Query::All,
            slapos_proto::rpc::master::Consistency::Linearizable,
            0,
        )
        .await
        .expect("read");
    let state = slapos_domain::State::from_entries(entries).expect("state");
    assert_eq!(state.computers().count(), 1);
    assert_eq!(
        state.applied_commands(),
        applied_before + 1,
        "applied exactly once"
    );
}
