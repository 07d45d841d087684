//! The chaos run CI keeps: 60 s of seeded faults (every kind, in network namespaces as
//! root; loopback without the network cuts otherwise) while six clients write and read
//! through three gateways, then the checkers. A lost acknowledged write, a history that
//! is not linearizable, diverging replicas or a phantom local read fail the build.

use serde_json::Value;
use slapos_e2e::slapos_bin;
use std::process::Command;

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .map(|s| {
            s.lines()
                .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}

#[test]
fn sixty_seconds_of_faults_lose_nothing_and_stay_linearizable() {
    let dir = tempfile::tempdir().expect("tempdir");
    let json = dir.path().join("report.json");
    let mut cmd = Command::new(slapos_bin());
    cmd.args(["chaos", "run", "--duration", "60s", "--seed", "7"])
        .arg("--dir")
        .arg(dir.path().join("run"))
        .arg("--json")
        .arg(&json);
    let root = is_root();
    if !root {
        cmd.arg("--loopback");
    }
    let child = cmd
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run slapos chaos run");
    let pid = child.id();
    let out = child.wait_with_output().expect("wait for slapos chaos run");
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
    // the checkers had something to judge
    let acked = report["ops_by_outcome"]["write ok"].as_u64().unwrap_or(0);
    let reads = report["ops_by_outcome"]["read ok"].as_u64().unwrap_or(0);
    assert!(acked > 500 && reads > 500, "{stdout}");
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
        kinds.extend(["isolate_leader", "split_group"]);
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
