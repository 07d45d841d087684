//! The short fuzz pass CI runs on stable: every committed seed (`fuzz/seeds/<target>/`)
//! and regression input (`fuzz/regressions/<target>/`) through the check its fuzz target
//! makes, then a few thousand deterministic mutants of the seeds (bit flips, byte
//! changes, cuts and splices, from a fixed xorshift stream) through the same checks. A
//! folder named after no target fails, so a renamed target cannot silently lose its
//! inputs.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz")
}

/// The files of `<kind>/<target>/` for every target folder: (target, path, bytes).
fn inputs(kind: &str) -> Result<Vec<(String, PathBuf, Vec<u8>)>> {
    let root = fuzz_dir().join(kind);
    let mut out = Vec::new();
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
        if slapos_fuzz_checks::check(&name).is_none() {
            bail!("{}: no fuzz target is named {name}", dir.display());
        }
        let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)?
            .map(|e| e.map(|e| e.path()))
            .collect::<Result<_, _>>()?;
        files.sort();
        for file in files {
            let data = std::fs::read(&file)?;
            out.push((name.clone(), file, data));
        }
    }
    out.sort();
    Ok(out)
}

/// Runs every file of `<kind>/<target>/` through the target's check; returns the count.
fn replay(kind: &str) -> Result<usize> {
    let inputs = inputs(kind)?;
    for (name, file, data) in &inputs {
        let check = slapos_fuzz_checks::check(name).context("checked by inputs")?;
        if std::panic::catch_unwind(|| check(data)).is_err() {
            bail!("{name}: {} fails its check", file.display());
        }
    }
    Ok(inputs.len())
}

/// xorshift64: a fixed stream, so a failing mutant is found again on every run.
struct Stream(u64);

impl Stream {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// One mutant of `data` (keeping byte 0, the selector, most of the time), spliced with
/// `other` (another seed of the same target) now and then.
fn mutate(data: &[u8], other: &[u8], s: &mut Stream) -> Vec<u8> {
    let mut out = data.to_vec();
    for _ in 0..1 + s.below(4) {
        let len = out.len();
        match s.below(6) {
            0 if len > 0 => {
                let i = s.below(len);
                out[i] ^= 1 << s.below(8);
            }
            1 if len > 0 => {
                let i = s.below(len);
                out[i] = [0, 0xff, b'<', b'>', b'&', b'%', b'"', b'{', b'9', b'\\'][s.below(10)];
            }
            2 if len > 1 => out.truncate(1 + s.below(len - 1)),
            3 if len > 0 => {
                let (i, n) = (s.below(len), s.below(16));
                let end = (i + n).min(len);
                out.drain(i..end);
            }
            4 => {
                let i = s.below(len + 1);
                let from = s.below(other.len() + 1);
                let n = s.below(64).min(other.len() - from);
                out.splice(i..i, other[from..from + n].iter().copied());
            }
            _ if len > 0 => {
                let i = s.below(len);
                let b = out[i];
                out.insert(i, b);
            }
            _ => out.push(s.next() as u8),
        }
    }
    out
}

/// Mutants of every seed, this many per target.
const MUTANTS_PER_TARGET: usize = 3000;

#[test]
fn mutants_of_the_seeds_pass_their_targets_checks() -> Result<()> {
    let start = Instant::now();
    let inputs = inputs("seeds")?;
    let mut stream = Stream(0x5eed_f022_2026_1207);
    for (name, _) in slapos_fuzz_checks::TARGETS {
        let seeds: Vec<&Vec<u8>> = inputs
            .iter()
            .filter(|(n, _, _)| n == name)
            .map(|(_, _, d)| d)
            .collect();
        let check = slapos_fuzz_checks::check(name).context("a target")?;
        let t0 = Instant::now();
        for i in 0..MUTANTS_PER_TARGET {
            let seed = seeds[i % seeds.len()];
            let other = seeds[stream.below(seeds.len())];
            let mutant = mutate(seed, other, &mut stream);
            if std::panic::catch_unwind(|| check(&mutant)).is_err() {
                let path = std::env::temp_dir().join(format!("{name}-mutant-{i}"));
                std::fs::write(&path, &mutant)?;
                bail!(
                    "{name}: mutant {i} fails its check (written to {})",
                    path.display()
                );
            }
        }
        eprintln!("{name}: {MUTANTS_PER_TARGET} mutants in {:?}", t0.elapsed());
    }
    eprintln!("all mutants in {:?}", start.elapsed());
    Ok(())
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

/// The snapshot seeds taken from a real state reach what they are there for: the pairs
/// decode and rebuild a state (so `raft_snapshot` exercises every persisted value's
/// binary decoder, not only the container), and the binary peer seeds decode.
#[test]
fn state_and_binary_seeds_reach_the_decoders_behind_the_container() -> Result<()> {
    let data = std::fs::read(fuzz_dir().join("seeds/raft_snapshot/state-53"))?;
    let mut bytes = data.clone();
    bytes.extend_from_slice(&raft_store::snapshot::crc32c(&data).to_be_bytes());
    let decoded = raft_store::snapshot::decode::<master_replica::NodeInfo>(&bytes)?;
    assert!(
        decoded
            .pairs
            .iter()
            .all(|(_, v)| slapos_domain::codec::is_binary(v)),
        "every value of the state seed is in the binary encoding"
    );
    let state = slapos_domain::State::from_entries(decoded.pairs.iter().copied())?;
    assert_eq!(state.entries()?.len(), decoded.pairs.len());
    let vote = std::fs::read(fuzz_dir().join("seeds/replica_peer/vote-bin"))?;
    assert!(master_replica::network::is_binary(&vote[1..]));
    master_replica::service::wire::vote(&vote[1..])?;
    Ok(())
}
