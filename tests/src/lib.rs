//! Helpers shared by the end-to-end tests: they run the real `slapos` binary.

#![forbid(unsafe_code)]

pub mod agent;
pub mod cluster;
pub mod compat;
pub mod guide;

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

/// The `slapos` binary of this build. `cargo test --workspace` builds it beside the test
/// binaries; when only this crate is tested, it is built once here.
pub fn slapos_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let exe = std::env::current_exe().expect("test binary path");
        // target/<profile>/deps/<test> -> target/<profile>/slapos
        let profile_dir = exe
            .parent()
            .and_then(|deps| deps.parent())
            .expect("target/<profile>")
            .to_path_buf();
        let bin = profile_dir.join("slapos");
        let mut cargo = Command::new(env!("CARGO"));
        // Without the variables `cargo test` set for this test binary: build scripts
        // that watch them (ring's watches CARGO_MANIFEST_DIR and CARGO_PKG_*) would
        // otherwise rerun, and the next `cargo test` would rebuild them again.
        for (name, _) in std::env::vars_os() {
            let name = name.to_string_lossy();
            if name.starts_with("CARGO_PKG_")
                || name.starts_with("CARGO_MANIFEST_")
                || [
                    "CARGO_CRATE_NAME",
                    "CARGO_PRIMARY_PACKAGE",
                    "CARGO_TARGET_TMPDIR",
                    "OUT_DIR",
                ]
                .contains(&name.as_ref())
            {
                cargo.env_remove(name.as_ref());
            }
        }
        let status = cargo
            .args(["build", "--quiet", "-p", "slapos-cli", "--bin", "slapos"])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .status()
            .expect("run cargo build");
        assert!(status.success(), "cargo build -p slapos-cli failed");
        assert!(bin.exists(), "{} missing after build", bin.display());
        bin
    })
    .clone()
}

/// `slapos <args>` as an operator on the master API (`--via masters`, joined), which must
/// succeed: what the tests use to grant admin rights (`user admin`) or mark a computer
/// (`computer policy`). Under mTLS the caller sets `$SLAPOS_MASTER_TLS_*` in `env`.
pub fn operator(args: &[&str], masters: &[String], env: &[(&str, &std::path::Path)]) {
    let via = masters.join(",");
    let mut command = Command::new(slapos_bin());
    command.args(args).args(["--via", &via]);
    for (k, v) in env {
        command.env(k, v);
    }
    let out = command.output().expect("run slapos");
    assert!(
        out.status.success(),
        "slapos {}: {}{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Grants `person` the group's admin rights (recorded in the group, read by every
/// gateway within its refresh period).
pub fn grant_admin(masters: &[String], person: &str) {
    operator(&["user", "admin", "--person", person], masters, &[]);
}

/// A finished `slapos chaos run`: its JSON report, what it printed, and its pid (the
/// namespaces it made are named after it).
pub struct ChaosRun {
    pub report: serde_json::Value,
    pub stdout: String,
    pub stderr: String,
    pub pid: u32,
}

/// `slapos chaos run <args> --dir <dir>/run --json <dir>/report.json`, which must pass
/// with the verdicts every chaos test holds it to: nothing lost, linearizable, replicas
/// identical, no undecided register.
pub fn chaos_run(args: &[&str], dir: &std::path::Path) -> ChaosRun {
    let json = dir.join("report.json");
    let child = Command::new(slapos_bin())
        .args(["chaos", "run"])
        .args(args)
        .arg("--dir")
        .arg(dir.join("run"))
        .arg("--json")
        .arg(&json)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run slapos chaos run");
    let pid = child.id();
    let out = child.wait_with_output().expect("wait for slapos chaos run");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    println!("{stdout}");
    assert!(
        out.status.success(),
        "chaos run failed:\n{stdout}\n{stderr}"
    );
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&json).expect("report")).expect("JSON report");
    assert_eq!(report["passed"], true, "{stdout}");
    assert_eq!(report["lost_writes"], 0);
    assert_eq!(report["linearizable"], true);
    assert_eq!(report["replicas_identical"], true);
    assert_eq!(report["unknown_verdicts"], 0);
    ChaosRun {
        report,
        stdout,
        stderr,
        pid,
    }
}

/// No process whose command line names `path` is left.
pub fn assert_no_process_naming(path: &std::path::Path) {
    let left = Command::new("pgrep")
        .args(["-a", "-f"])
        .arg(path)
        .output()
        .expect("pgrep");
    assert!(
        left.stdout.is_empty(),
        "processes left behind: {}",
        String::from_utf8_lossy(&left.stdout)
    );
}
