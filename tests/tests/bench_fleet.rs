//! `slapos bench fleet` end to end, small: a three-replica group, its gateways, two nodes
//! of three partitions (one holding a long poll, one polling plainly every 0.5 s) and a
//! writer, for a few seconds. Checks what the report counts, never how fast.

use slapos_e2e::slapos_bin;
use std::process::Command;

#[test]
fn fleet_bench_reports_its_counts() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let json = dir.path().join("fleet.json");
    let out = Command::new(slapos_bin())
        .args(["bench", "fleet", "--nodes", "2", "--partitions", "3"])
        .args(["--plain-share", "0.5", "--poll-interval", "0.5"])
        .args([
            "--writes-per-sec",
            "4",
            "--instances",
            "1",
            "--seconds",
            "4",
        ])
        .args(["--wait", "30", "--dir"])
        .arg(dir.path().join("run"))
        .arg("--json")
        .arg(&json)
        .output()
        .expect("run slapos bench fleet");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    let text = std::fs::read_to_string(&json).expect("the JSON report");
    let r: serde_json::Value = serde_json::from_str(&text).expect("JSON");
    let count = |path: &[&str]| {
        path.iter()
            .fold(&r, |v, k| &v[*k])
            .as_u64()
            .unwrap_or_else(|| panic!("{path:?} in {text}"))
    };
    assert_eq!(count(&["nodes"]), 2);
    assert_eq!(count(&["partitions"]), 3);
    assert_eq!(count(&["long_poll_nodes"]), 1);
    assert_eq!(count(&["plain_nodes"]), 1);
    assert_eq!(count(&["instances"]), 1);
    // about 8 plain polls in 4 s, every one answered
    assert!(count(&["plain_polls", "count"]) >= 3, "{text}");
    assert_eq!(count(&["plain_polls", "errors"]), 0, "{text}");
    assert!(count(&["full_answer_bytes"]) > 0, "{text}");
    // a replica, a gateway and the bench itself, each with its memory
    let processes = r["processes"].as_array().expect("processes");
    assert_eq!(processes.len(), 3 + 3 + 1, "{text}");
    assert!(
        processes.iter().all(|p| p["rss_mib"].as_f64() > Some(0.0)),
        "{text}"
    );
    assert!(stdout.contains("goals:"), "{stdout}");
    if r["long_poll_supported"] == true {
        // the long-polling node held its poll, and answered the writer's writes
        assert_eq!(count(&["held_after_ramp"]), 1, "{text}");
        assert!(count(&["writes", "count"]) >= 2, "{text}");
        assert_eq!(count(&["writes", "errors"]), 0, "{text}");
        assert!(count(&["wake", "matched"]) >= 2, "{text}");
        assert_eq!(count(&["long_poll_errors"]), 0, "{text}");
    } else {
        // a gateway without ETags: said so, nothing held, no writer
        assert!(stdout.contains("long-poll unsupported"), "{stdout}");
        assert_eq!(count(&["held_after_ramp"]), 0, "{text}");
        assert_eq!(count(&["wake", "matched"]), 0, "{text}");
    }
}
