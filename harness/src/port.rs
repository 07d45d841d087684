//! The one way the harness (and every test) picks a loopback port.

use crate::HarnessError;
use std::net::TcpListener;
use std::sync::atomic::{AtomicU32, Ordering};

const LOW: u32 = 20_000;
const SPAN: u32 = 12_000;

/// A loopback port nobody listens on, below the ephemeral range (so that no outgoing
/// connection takes it while a killed replica is down, and a restarted replica gets its
/// port back), distinct within this process.
pub fn free_port() -> Result<u16, HarnessError> {
    static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);
    // Start each process at its own offset, so that two test binaries (or a test and a
    // benchmark) running at once rarely probe the same ports.
    let _ = NEXT.compare_exchange(
        u32::MAX,
        (std::process::id().wrapping_mul(7919)) % SPAN,
        Ordering::SeqCst,
        Ordering::SeqCst,
    );
    for _ in 0..SPAN {
        let port = (LOW + NEXT.fetch_add(1, Ordering::SeqCst) % SPAN) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return Ok(port);
        }
    }
    Err(HarnessError::NoFreePort(LOW, LOW + SPAN))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_distinct_below_the_ephemeral_range_and_free() {
        let a = free_port().unwrap();
        let b = free_port().unwrap();
        assert_ne!(a, b);
        for p in [a, b] {
            assert!((LOW..LOW + SPAN).contains(&u32::from(p)), "{p}");
            TcpListener::bind(("127.0.0.1", p)).unwrap();
        }
    }
}
