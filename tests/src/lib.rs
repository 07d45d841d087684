//! Helpers shared by the end-to-end tests: they run the real `slapos` binary.

pub mod agent;
pub mod cluster;
pub mod compat;

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
