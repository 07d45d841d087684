//! Helpers shared by the end-to-end tests: they run the real `slapos` binary.

pub mod cluster;

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
        let status = Command::new(env!("CARGO"))
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
