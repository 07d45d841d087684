//! `slapos bench frontend` end to end, small: Debian's nginx as the backend and as the
//! reference proxy, our frontend, one short round. Checks that every path answered (the
//! bench reads and checks every body) and what the report holds, never how fast.

use slapos_e2e::slapos_bin;
use std::process::Command;

#[test]
fn frontend_bench_measures_three_paths() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let json = dir.path().join("frontend.json");
    let out = Command::new(slapos_bin())
        .args(["bench", "frontend", "--rounds", "1", "--seconds", "0.3"])
        .args(["--connections", "1,4", "--handshake-clients", "2", "--dir"])
        .arg(dir.path().join("run"))
        .arg("--json")
        .arg(&json)
        .output()
        .expect("run slapos bench frontend");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    let text = std::fs::read_to_string(&json).expect("the JSON report");
    let r: serde_json::Value = serde_json::from_str(&text).expect("JSON");
    let paths = r["paths"].as_array().expect("paths");
    let names: Vec<&str> = paths.iter().filter_map(|p| p["path"].as_str()).collect();
    assert_eq!(names, ["direct", "frontend", "nginx"], "{text}");
    for p in paths {
        let loads = p["loads"].as_array().expect("loads");
        let connections: Vec<u64> = loads
            .iter()
            .filter_map(|l| l["connections"].as_u64())
            .collect();
        assert_eq!(connections, [1, 4], "{text}");
        assert!(
            loads
                .iter()
                .all(|l| l["requests_per_sec"].as_f64() > Some(0.0)),
            "every path answered: {text}"
        );
        // handshakes for the two proxies, none for the direct path
        assert_eq!(
            p["handshakes_per_sec"].is_null(),
            p["path"] == "direct",
            "{text}"
        );
    }
    assert!(
        r["nginx"].as_str().is_some_and(|v| v.contains("nginx")),
        "{text}"
    );
    // the working directory is removed once the report is written
    assert!(!dir.path().join("run").exists());
}
