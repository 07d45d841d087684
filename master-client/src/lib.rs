//! The master's client: what gateways, the `slapos` command line, the chaos harness and
//! the benchmarks use to talk to a Raft group of masters. It follows leader hints, retries
//! a write under one request id (so it applies at most once), bounds every call by a
//! per-attempt timeout and a total deadline, and presents the process's certificate of
//! the group's authority ([`tls`]). It knows the master's API (`slapos-proto`'s `rpc`)
//! and the domain's types (`slapos-domain`), nothing of Raft or storage.

#![forbid(unsafe_code)]

pub mod channel;
mod client;
pub mod status;
pub mod tls;

pub use client::{ClientError, Denial, MasterClient, Read, Submitted};

/// Metadata header marking a call already forwarded by a follower (forward at most once).
pub const FORWARDED: &str = "x-slapos-forwarded";

/// The wall-clock time a proposer stamps on a command (microseconds since the epoch).
/// The leader stamps its own over it (a proposer's far from it is refused); `apply`
/// never reads a clock (see the domain's determinism rule).
pub fn proposer_time() -> slapos_domain::Timestamp {
    slapos_domain::Timestamp(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_micros() as u64)
            .unwrap_or_default(),
    )
}
