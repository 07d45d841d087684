//! The short fuzz pass CI runs on stable: every committed seed (`fuzz/seeds/<target>/`)
//! and regression input (`fuzz/regressions/<target>/`) through the check its fuzz target
//! makes. A folder named after no target fails, so a renamed target cannot silently lose
//! its inputs.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz")
}

/// Runs every file of `<kind>/<target>/` through the target's check; returns the count.
fn replay(kind: &str) -> Result<usize> {
    let root = fuzz_dir().join(kind);
    let mut count = 0;
    for dir in std::fs::read_dir(&root).with_context(|| format!("{}", root.display()))? {
        let dir = dir?.path();
        if !dir.is_dir() {
            continue; // README.md
        }
        let name = dir
            .file_name()
            .and_then(|n| n.to_str())
            .context("a folder name that is not UTF-8")?
            .to_string();
        let Some(check) = slapos_fuzz_checks::check(&name) else {
            bail!("{}: no fuzz target is named {name}", dir.display());
        };
        let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)?
            .map(|e| e.map(|e| e.path()))
            .collect::<Result<_, _>>()?;
        files.sort();
        for file in files {
            let data = std::fs::read(&file)?;
            let outcome = std::panic::catch_unwind(|| check(&data));
            if outcome.is_err() {
                bail!("{name}: {} fails its check", file.display());
            }
            count += 1;
        }
    }
    Ok(count)
}

#[test]
fn seeds_pass_their_targets_checks() -> Result<()> {
    let start = Instant::now();
    let n = replay("seeds")?;
    assert!(n > 0, "no seeds");
    eprintln!("{n} seeds replayed in {:?}", start.elapsed());
    Ok(())
}

#[test]
fn regressions_pass_their_targets_checks() -> Result<()> {
    let start = Instant::now();
    let n = replay("regressions")?;
    eprintln!("{n} regression inputs replayed in {:?}", start.elapsed());
    Ok(())
}

#[test]
fn every_target_has_seeds() {
    for (name, _) in slapos_fuzz_checks::TARGETS {
        let dir = fuzz_dir().join("seeds").join(name);
        let n = std::fs::read_dir(&dir).map(|d| d.count()).unwrap_or(0);
        assert!(n > 0, "{}: no seeds", dir.display());
        assert!(
            fuzz_dir()
                .join("fuzz_targets")
                .join(format!("{name}.rs"))
                .is_file(),
            "{name}: no fuzz target"
        );
    }
}
