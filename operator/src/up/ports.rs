//! Loopback ports for `slapos up`'s processes when no `--base-port` is given.
//!
//! They are chosen below the kernel's ephemeral range: a port the system hands out for
//! `bind(0)` lies inside that range, where any outgoing connection (of this machine's
//! other programs, or of the cluster's own clients) may take it as its local port in the
//! moment between the choice and the replica's own bind; a replica that then cannot
//! bind leaves the group without a member. Below the range only another listener can
//! take it.

use crate::error::OperatorError;
use std::net::TcpListener;
use std::sync::atomic::{AtomicU32, Ordering};

/// Where the system's ephemeral ports start (Linux's default when it cannot be read).
fn ephemeral_low() -> u32 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(32_768)
}

/// The ports to choose from: up to 12,000 below the ephemeral range, above 1024.
fn window() -> (u32, u32) {
    let high = ephemeral_low().clamp(2048, 65_535);
    let low = high.saturating_sub(12_000).max(1025);
    (low, high - low)
}

/// The first of `n` consecutive loopback ports nobody listens on now, below the
/// ephemeral range and distinct from every earlier answer of this process.
pub(crate) fn consecutive_unused_ports(n: u16) -> Result<u16, OperatorError> {
    static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);
    let (low, span) = window();
    // Each process starts at its own offset, so that two clusters started at once
    // (tests side by side) rarely probe the same ports.
    let _ = NEXT.compare_exchange(
        u32::MAX,
        std::process::id().wrapping_mul(7919) % span,
        Ordering::SeqCst,
        Ordering::SeqCst,
    );
    let n32 = u32::from(n);
    for _ in 0..span {
        let first = low + NEXT.fetch_add(n32, Ordering::SeqCst) % span;
        if first + n32 > low + span {
            continue;
        }
        let held: Vec<_> = (first..first + n32)
            .map_while(|p| TcpListener::bind(("127.0.0.1", p as u16)).ok())
            .collect();
        if held.len() == usize::from(n) {
            return Ok(first as u16);
        }
    }
    Err(OperatorError::Precondition(format!(
        "no {n} consecutive free ports on loopback below the ephemeral range"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_free_distinct_and_below_the_ephemeral_range() {
        let a = consecutive_unused_ports(3).unwrap();
        let b = consecutive_unused_ports(1).unwrap();
        let low = ephemeral_low();
        for p in [a, a + 1, a + 2, b] {
            assert!(u32::from(p) < low, "{p} is not below {low}");
            TcpListener::bind(("127.0.0.1", p)).unwrap();
        }
        assert!(!(a..a + 3).contains(&b), "{b} was already given ({a}..)");
    }
}
