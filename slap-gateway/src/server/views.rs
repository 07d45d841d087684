//! Long polls of node views: `getFullComputerInformation` with `If-None-Match` (and
//! `Prefer: wait=N`) held until that computer's view changes.
//!
//! A node's view has a *version*, the log index of the last entry that may have changed
//! it (the replica keeps them: `master-replica`'s `sm::ViewVersions`); the gateway sends
//! it as the `ETag`. A held request waits on one `watch` channel per computer being
//! waited on, and `follow.rs` feeds those channels from the replica's `WatchViews` stream:
//! an applied batch wakes exactly the held requests of the computers it changed, and
//! nothing runs for a held request in between (no thread, no timer loop: a future
//! parked on its channels and its deadline).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

/// The longest a request is held (Nomad caps its blocking queries at 300 s too).
pub const MAX_WAIT: Duration = Duration::from_secs(300);
/// A held request waits up to `1/JITTER_DIVISOR` longer than asked, at random (as
/// Consul does), so that a fleet started together does not come back together.
pub const JITTER_DIVISOR: u32 = 16;
/// Held requests woken by a reset re-read their view within this, at random: a gateway
/// holding tens of thousands of them does not send them to the replicas at once.
pub const RESET_SPREAD: Duration = Duration::from_secs(1);

/// The held requests, by computer, and what wakes them.
pub struct Views {
    /// One channel per computer someone waits on, carrying the index that last changed
    /// it; removed when its last waiter leaves.
    watched: Mutex<HashMap<String, watch::Sender<u64>>>,
    /// Bumped (with the index) when the replica could not tell what changed: every held
    /// request looks again.
    everything: watch::Sender<u64>,
    /// Set at shutdown: held requests are answered (304) rather than cut.
    closing: watch::Sender<bool>,
    /// Bumped when the group's gateways change: held requests are answered (304) so
    /// that their nodes read the new list in `X-Slapos-Gateways`.
    gateways: watch::Sender<u64>,
    /// Index the stream brought us to (0: not connected yet).
    pub(super) followed: AtomicU64,
}

impl Default for Views {
    fn default() -> Self {
        Views {
            watched: Mutex::new(HashMap::new()),
            everything: watch::channel(0).0,
            closing: watch::channel(false).0,
            gateways: watch::channel(0).0,
            followed: AtomicU64::new(0),
        }
    }
}

/// Why a held request stopped waiting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wake {
    /// Its computer's view may have changed at this index.
    Changed(u64),
    /// Every view may have changed (the replica could not say which): look again, after
    /// a random pause (see [`RESET_SPREAD`]).
    Reset(u64),
    /// Its wait is over.
    Timeout,
    /// The gateway is shutting down.
    Closing,
    /// The group's gateways changed: answer now, the node reads the new list.
    Gateways,
}

/// One held request's registration: dropped, it leaves.
pub struct Held<'a> {
    views: &'a Views,
    computer: String,
    changed: Option<watch::Receiver<u64>>,
    everything: watch::Receiver<u64>,
    closing: watch::Receiver<bool>,
    gateways: watch::Receiver<u64>,
}

impl Views {
    /// Registers a request waiting on `computer`'s view. Register *before* reading the
    /// view: a change applied after the read is then sure to wake it.
    pub fn hold(&self, computer: &str) -> Held<'_> {
        let changed = {
            let mut watched = self.watched.lock().unwrap_or_else(PoisonError::into_inner);
            watched
                .entry(computer.to_owned())
                .or_insert_with(|| watch::channel(0).0)
                .subscribe()
        };
        let mut everything = self.everything.subscribe();
        everything.borrow_and_update();
        Held {
            views: self,
            computer: computer.to_owned(),
            changed: Some(changed),
            everything,
            closing: self.closing.subscribe(),
            gateways: self.gateways.subscribe(),
        }
    }

    /// Computers with at least one request held on them.
    pub fn computers_watched(&self) -> usize {
        self.watched
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// Wakes the requests held on `computers` (changed at `index`); `reset`: all of them.
    pub fn changed(&self, index: u64, computers: &[String], reset: bool) {
        if reset {
            self.everything.send_replace(index);
        } else {
            let watched = self.watched.lock().unwrap_or_else(PoisonError::into_inner);
            for c in computers {
                if let Some(tx) = watched.get(c) {
                    tx.send_replace(index);
                }
            }
        }
        self.followed.fetch_max(index, Ordering::AcqRel);
    }

    /// Follows another history from `index` (a group restored from a backup under the
    /// same addresses, whose indexes may be below those followed so far); the caller
    /// wakes every held request with a reset.
    pub fn restart(&self, index: u64) {
        self.followed.store(index, Ordering::Release);
    }

    /// Answers every held request now (304), so that nodes read the new list of the
    /// group's gateways.
    pub fn gateways_changed(&self) {
        self.gateways.send_modify(|n| *n += 1);
    }

    /// Answers every held request now (shutdown).
    pub fn close(&self) {
        self.closing.send_replace(true);
    }
}

impl Held<'_> {
    /// Waits for a change of the view, the deadline, or shutdown.
    pub async fn wait(&mut self, deadline: Instant) -> Wake {
        let Some(changed) = self.changed.as_mut() else {
            return Wake::Closing;
        };
        tokio::select! {
            // Shutdown first: a request pending a wake-up is answered, not re-read.
            biased;
            _ = self.closing.wait_for(|c| *c) => Wake::Closing,
            Ok(()) = self.gateways.changed() => Wake::Gateways,
            r = changed.changed() => match r {
                Ok(()) => Wake::Changed(*changed.borrow_and_update()),
                Err(_) => Wake::Closing,
            },
            r = self.everything.changed() => match r {
                Ok(()) => Wake::Reset(*self.everything.borrow_and_update()),
                Err(_) => Wake::Closing,
            },
            _ = tokio::time::sleep_until(deadline) => Wake::Timeout,
        }
    }
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        drop(self.changed.take());
        let mut watched = self
            .views
            .watched
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if watched
            .get(&self.computer)
            .is_some_and(|tx| tx.receiver_count() == 0)
        {
            watched.remove(&self.computer);
        }
    }
}

/// What a request asks of a long poll, from its headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Conditions {
    /// The version the client holds (`If-None-Match`), if it is one of ours.
    pub have: Option<u64>,
    /// How long it accepts to wait (`Prefer: wait=N`, capped at [`MAX_WAIT`]).
    pub wait: Option<Duration>,
}

impl Conditions {
    /// Reads `If-None-Match` and `Prefer`. An entity tag that is not one of ours (or
    /// `*`) counts as none: the client gets the view, as without the header.
    pub fn of(headers: &axum::http::HeaderMap) -> Conditions {
        let have = headers
            .get_all(axum::http::header::IF_NONE_MATCH)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(parse_etag)
            .max();
        let wait = headers
            .get_all("prefer")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .find_map(|p| {
                let (name, value) = p.split_once('=')?;
                if !name.trim().eq_ignore_ascii_case("wait") {
                    return None;
                }
                let secs: u64 = value.trim().trim_matches('"').parse().ok()?;
                Some(Duration::from_secs(secs).min(MAX_WAIT))
            });
        Conditions { have, wait }
    }
}

/// `"123"` or `W/"123"` -> 123.
fn parse_etag(tag: &str) -> Option<u64> {
    let tag = tag.trim();
    let tag = tag.strip_prefix("W/").unwrap_or(tag);
    tag.strip_prefix('"')?.strip_suffix('"')?.parse().ok()
}

/// The `ETag` of a view version.
pub fn etag(version: u64) -> String {
    format!("\"{version}\"")
}

/// A random fraction of `span`.
pub fn random_part(span: Duration) -> Duration {
    let mut bytes = [0u8; 4];
    let r = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes)
        .map(|_| u32::from_le_bytes(bytes))
        .unwrap_or(0);
    span.mul_f64(f64::from(r) / f64::from(u32::MAX))
}

/// `wait` plus up to `wait / JITTER_DIVISOR` at random.
pub fn with_jitter(wait: Duration) -> Duration {
    wait + random_part(wait / JITTER_DIVISOR)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::{HeaderMap, HeaderValue};

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn conditions_are_read_from_the_headers() {
        assert_eq!(Conditions::of(&headers(&[])), Conditions::default());
        let c = Conditions::of(&headers(&[
            ("if-none-match", "\"42\""),
            ("prefer", "respond-async, wait=10"),
        ]));
        assert_eq!(c.have, Some(42));
        assert_eq!(c.wait, Some(Duration::from_secs(10)));
        let capped = Conditions::of(&headers(&[
            ("if-none-match", "W/\"7\", \"9\""),
            ("prefer", "wait=100000"),
        ]));
        assert_eq!(capped.have, Some(9));
        assert_eq!(capped.wait, Some(MAX_WAIT));
        for foreign in ["*", "\"abc\"", "42", "\"-1\""] {
            let h = Conditions::of(&{
                let mut h = HeaderMap::new();
                h.insert("if-none-match", HeaderValue::from_static(foreign));
                h
            });
            assert_eq!(h.have, None, "{foreign}");
        }
    }

    #[test]
    fn jitter_stays_within_a_sixteenth() {
        for _ in 0..100 {
            let w = with_jitter(Duration::from_secs(160));
            assert!(
                w >= Duration::from_secs(160) && w <= Duration::from_secs(170),
                "{w:?}"
            );
        }
    }

    #[tokio::test]
    async fn a_change_wakes_only_the_requests_of_its_computer() {
        let views = Views::default();
        let mut a = views.hold("A");
        let mut b = views.hold("B");
        assert_eq!(views.computers_watched(), 2);
        views.changed(5, &["A".to_owned()], false);
        let soon = Instant::now() + Duration::from_millis(50);
        assert_eq!(a.wait(soon).await, Wake::Changed(5));
        assert_eq!(b.wait(soon).await, Wake::Timeout);
        views.changed(6, &[], true);
        let soon = Instant::now() + Duration::from_millis(50);
        assert_eq!(b.wait(soon).await, Wake::Reset(6), "a reset wakes everyone");
        views.gateways_changed();
        let soon = Instant::now() + Duration::from_millis(50);
        assert_eq!(a.wait(soon).await, Wake::Gateways);
        views.close();
        assert_eq!(a.wait(soon).await, Wake::Closing);
        drop(a);
        drop(b);
        assert_eq!(views.computers_watched(), 0);
    }
}
