//! What the fuzz targets of `fuzz/` assert, one function per target. A check takes
//! libFuzzer's bytes and panics when a property fails; an input a decoder refuses is
//! fine (refusing is its job). The targets (`fuzz/fuzz_targets/<name>.rs`) only call
//! these, and the replay test (`tests/replay.rs`) runs the same functions on every
//! committed seed and regression input (`fuzz/seeds/<name>/`, `fuzz/regressions/<name>/`),
//! so CI checks on stable what the fuzzer checked. See `fuzz/DESIGN.md`.
//!
//! Inputs that feed several decoders or endpoints start with selector bytes (see each
//! module), so one target covers every message a service accepts.

pub mod ca;
pub mod gateway;
pub mod replica;

/// A check: panics when a property fails on `data`.
pub type Check = fn(&[u8]);

/// Every target, by name (the name of its fuzz target, seed and regression folders).
pub const TARGETS: &[(&str, Check)] = &[
    ("gateway_forms", gateway::forms),
    ("gateway_jsonrpc", gateway::jsonrpc),
    ("gateway_register", gateway::register),
    ("ca_csr", ca::csr),
    ("ca_proof", ca::proof),
    ("replica_peer", replica::peer),
    ("replica_api", replica::api),
    ("raft_snapshot", replica::snapshot),
];

/// The check of target `name`.
pub fn check(name: &str) -> Option<Check> {
    TARGETS.iter().find(|(n, _)| *n == name).map(|(_, c)| *c)
}

/// Splits an input into a selector byte, an optional header and a body: byte 0 is the
/// selector, byte 1 holds flags (bit 0: a header follows, up to the first LF; it must be
/// UTF-8, as hyper's `to_str` wants), the rest is the body. `None` when too short.
pub fn split(data: &[u8]) -> Option<(u8, u8, Option<&str>, &[u8])> {
    let (&selector, rest) = data.split_first()?;
    let (&flags, rest) = rest.split_first()?;
    if flags & 1 == 0 {
        return Some((selector, flags, None, rest));
    }
    let end = rest.iter().position(|&b| b == b'\n').unwrap_or(rest.len());
    let header = std::str::from_utf8(&rest[..end]).ok()?;
    Some((
        selector,
        flags,
        Some(header),
        rest.get(end + 1..).unwrap_or(&[]),
    ))
}

/// The inverse of [`split`] (the seed writer uses it).
pub fn join(selector: u8, header: Option<&str>, body: &[u8]) -> Vec<u8> {
    let mut out = vec![selector, u8::from(header.is_some())];
    if let Some(h) = header {
        out.extend_from_slice(h.as_bytes());
        out.push(b'\n');
    }
    out.extend_from_slice(body);
    out
}
