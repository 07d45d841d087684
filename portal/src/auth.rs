//! Passwords (argon2id), session tokens, CSRF tokens and the sign-in rate limit.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use ring::rand::{SecureRandom, SystemRandom};

/// The session cookie: `Secure`, `HttpOnly`, `SameSite=Strict`, the portal's path only.
pub const SESSION_COOKIE: &str = "slapos_session";
/// The CSRF cookie of callers without a session (a certificate, the sign-in form): a
/// random value every form repeats (double submit); a session's forms carry a token
/// derived from the session's own token instead.
pub const CSRF_COOKIE: &str = "slapos_csrf";
/// Longest password accepted (argon2 takes any length; this bounds the work).
pub const MAX_PASSWORD: usize = 1024;
/// Shortest password accepted when setting one.
pub const MIN_PASSWORD: usize = 10;

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("no randomness from the system")]
    Random,
    #[error("hashing failed: {0}")]
    Hash(String),
}

fn random_bytes<const N: usize>() -> Result<[u8; N], AuthError> {
    let mut b = [0u8; N];
    SystemRandom::new()
        .fill(&mut b)
        .map_err(|_| AuthError::Random)?;
    Ok(b)
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// SHA-256 of `s`, lowercase hex.
pub fn sha256_hex(s: &str) -> String {
    hex(ring::digest::digest(&ring::digest::SHA256, s.as_bytes()).as_ref())
}

/// A new random token (256 bits, hex).
pub fn new_token() -> Result<String, AuthError> {
    Ok(hex(&random_bytes::<32>()?))
}

/// The argon2id hash (PHC string) of a password, with a fresh salt and argon2's default
/// parameters (19 MiB, 2 passes: OWASP's recommendation).
pub fn hash_password(password: &str) -> Result<String, AuthError> {
    let salt = SaltString::encode_b64(&random_bytes::<16>()?)
        .map_err(|e| AuthError::Hash(e.to_string()))?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| AuthError::Hash(e.to_string()))
}

/// Whether `password` matches the PHC string `hash` (false for an unreadable hash).
pub fn verify_password(password: &str, hash: &str) -> bool {
    match PasswordHash::new(hash) {
        Ok(parsed) => Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok(),
        Err(_) => false,
    }
}

/// The CSRF token of a session: derived from its token, which only the browser holds
/// (HttpOnly), so any gateway checks it without a secret of its own.
pub fn csrf_of_session(token: &str) -> String {
    sha256_hex(&format!("slapos-portal-csrf:{token}"))
}

/// Equal in time independent of where they differ.
pub fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// The value of cookie `name` in a `Cookie` header.
pub fn cookie<'a>(header: &'a str, name: &str) -> Option<&'a str> {
    header.split(';').find_map(|kv| {
        let (k, v) = kv.trim().split_once('=')?;
        (k == name).then_some(v)
    })
}

/// Failed sign-ins per person on this gateway: a bucket of `burst` that refills one
/// every `refill`. In memory: a person trying on several gateways gets a bucket on each
/// (DESIGN.md says so).
pub struct Limiter {
    burst: u32,
    refill: Duration,
    buckets: Mutex<HashMap<String, (f64, Instant)>>,
}

impl Limiter {
    pub fn new(burst: u32, refill: Duration) -> Limiter {
        Limiter {
            burst,
            refill,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    fn level(&self, tokens: f64, since: Instant, now: Instant) -> f64 {
        let earned = now.duration_since(since).as_secs_f64() / self.refill.as_secs_f64().max(1e-3);
        (tokens + earned).min(self.burst as f64)
    }

    /// Whether `person` may try a password now.
    pub fn allows(&self, person: &str) -> bool {
        let now = Instant::now();
        let Ok(buckets) = self.buckets.lock() else {
            return false;
        };
        match buckets.get(person) {
            Some(&(tokens, since)) => self.level(tokens, since, now) >= 1.0,
            None => true,
        }
    }

    /// A failed attempt costs one.
    pub fn failed(&self, person: &str) {
        let now = Instant::now();
        let Ok(mut buckets) = self.buckets.lock() else {
            return;
        };
        // Bounded: forget full buckets when the map grows.
        if buckets.len() > 100_000 {
            let burst = self.burst as f64;
            buckets.retain(|_, (t, s)| self.level(*t, *s, now) < burst);
        }
        let (tokens, since) = buckets
            .get(person)
            .copied()
            .unwrap_or((self.burst as f64, now));
        let level = self.level(tokens, since, now);
        buckets.insert(person.to_owned(), ((level - 1.0).max(0.0), now));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_password_verifies_against_its_hash_only() {
        let h = hash_password("correct horse battery").unwrap();
        assert!(h.starts_with("$argon2id$"), "{h}");
        assert!(verify_password("correct horse battery", &h));
        assert!(!verify_password("correct horse batterz", &h));
        assert!(!verify_password("x", "not a hash"));
        // salted: the same password hashes differently
        assert_ne!(h, hash_password("correct horse battery").unwrap());
    }

    #[test]
    fn the_limiter_refuses_after_a_burst() {
        let l = Limiter::new(3, Duration::from_secs(3600));
        for _ in 0..3 {
            assert!(l.allows("alice"));
            l.failed("alice");
        }
        assert!(!l.allows("alice"));
        assert!(l.allows("bob"));
    }

    #[test]
    fn cookies_and_tokens() {
        assert_eq!(
            cookie("a=1; slapos_session=xyz; b=2", SESSION_COOKIE),
            Some("xyz")
        );
        assert_eq!(cookie("a=1", SESSION_COOKIE), None);
        let t = new_token().unwrap();
        assert_eq!(t.len(), 64);
        assert_ne!(csrf_of_session(&t), t);
        assert!(same("abc", "abc") && !same("abc", "abd") && !same("ab", "abc"));
    }
}
