//! Disk faults in a chaos run (issue 25): 30 s of `disk_full` (a replica's tmpfs shrunk
//! below its free-space reserve, grown back) and `io_error` (the FUSE passthrough under
//! its data directory answering EIO, healed) among leader kills, while six clients
//! write and read; each stopped replica is started again and catches up, and the
//! checkers pass (nothing acknowledged lost, linearizable, replicas identical). Root
//! only: it says so and passes without doing anything otherwise.

use slapos_e2e::agent::is_root;
use slapos_e2e::{chaos_run, ChaosRun};

#[test]
fn disk_full_and_io_errors_lose_nothing_and_stay_linearizable() {
    if !is_root() {
        eprintln!("SKIPPED: disk faults mount a tmpfs and a FUSE filesystem, which needs root");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let ChaosRun { report, stdout, .. } = chaos_run(
        &[
            "--duration",
            "30s",
            "--seed",
            "3",
            "--faults",
            "disk_full,io_error,kill_leader",
        ],
        dir.path(),
    );
    for kind in ["disk_full", "io_error"] {
        assert!(
            report["faults_by_kind"][kind].as_u64().unwrap_or(0) >= 1,
            "{kind} never injected:\n{stdout}"
        );
    }
    // every disk fault was injected and healed (its replica started again if it had
    // stopped)
    let faults = report["faults"].as_array().cloned().unwrap_or_default();
    for f in &faults {
        assert!(f.get("error").is_none(), "a fault failed: {f}\n{stdout}");
    }
    assert!(
        faults.iter().any(|f| f["target"]
            .as_str()
            .is_some_and(|t| t.ends_with("restarted"))),
        "no replica stopped for its disk:\n{stdout}"
    );
    let acked = report["ops_by_outcome"]["write ok"].as_u64().unwrap_or(0);
    assert!(acked > 200, "{stdout}");
    // nothing left mounted under the run's directory
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    assert!(
        !mounts.contains(&dir.path().display().to_string()),
        "mounts left behind"
    );
}
