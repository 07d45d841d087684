//! The watch of `slapos node daemon`: one long poll of the computer's view at a time
//! (`getFullComputerInformation` with `If-None-Match` and `Prefer: wait=`, see
//! [`crate::client::SlapClient::watch_computer`]), which rings the software and instance
//! runs' [`Bell`]s as soon as the view changes, so that they run now instead of at their
//! next period (which stays, as a safety net). See DESIGN.md, "The daemon".
//!
//! - It starts from the ETag of the last view the runs read (the client keeps it): a
//!   gateway that sends none (slapproxy, an older gateway) leaves the node polling
//!   plainly at the runs' periods, exactly as before, and the watch sends nothing.
//! - A 304 re-arms the poll at once; a 200 rings the instance loop's bell only when the
//!   view's bytes differ from the last ones seen (an ETag that moved for something the
//!   node does not see wakes nothing), the software loop's only when its list of
//!   releases differs; answers that come back early and unchanged twice in a row (a
//!   gateway shutting down answers one early 304; something in between that ignores
//!   `Prefer` would answer them all) pause with the backoff, so nothing spins.
//! - Errors (refused, 5xx on every gateway, timeouts) reconnect after a jittered
//!   exponential backoff, 1 s doubling up to 30 s; the client fails over between the
//!   gateways, sending the ETag verbatim to whichever answers.
//! - What it does goes to the log and to `IR/var/watch.json`, which `slapos node status`
//!   shows.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::client::{SlapClient, Watched};
use crate::node::now_unix;

/// How long a poll asks the gateway to hold it (`Prefer: wait=`; the gateway caps it at
/// 300 s).
pub const LONG_POLL_WAIT: Duration = Duration::from_secs(270);
/// The first reconnection delay, doubled at each error in a row up to [`BACKOFF_CAP`].
pub const BACKOFF_FIRST: Duration = Duration::from_secs(1);
pub const BACKOFF_CAP: Duration = Duration::from_secs(30);
/// While plain polling, how often the watch looks whether a run read a view that carried
/// an ETag (a local check, no request).
const PLAIN_CHECK: Duration = Duration::from_secs(1);

/// A doorbell between threads: [`Bell::ring`] bumps a generation; a waiter that saw an
/// older one wakes.
#[derive(Debug, Default)]
pub struct Bell {
    generation: Mutex<u64>,
    rung: Condvar,
}

impl Bell {
    pub fn new() -> Arc<Bell> {
        Arc::new(Bell::default())
    }

    pub fn ring(&self) {
        if let Ok(mut g) = self.generation.lock() {
            *g += 1;
        }
        self.rung.notify_all();
    }

    pub fn generation(&self) -> u64 {
        self.generation.lock().map(|g| *g).unwrap_or(0)
    }

    /// Waits until the bell was rung after `seen` (true), or until `until` or `stop`
    /// (false).
    pub fn wait(&self, seen: u64, until: Instant, stop: &AtomicBool) -> bool {
        let Ok(mut g) = self.generation.lock() else {
            return false;
        };
        loop {
            if *g > seen {
                return true;
            }
            let now = Instant::now();
            if stop.load(Ordering::Relaxed) || now >= until {
                return false;
            }
            // (stop is an atomic nobody notifies: looked at every 200 ms)
            let slice = (until - now).min(Duration::from_millis(200));
            g = match self.rung.wait_timeout(g, slice) {
                Ok((g, _)) => g,
                Err(_) => return false,
            };
        }
    }
}

/// The bells the watch rings: the instance loop's when the view changed, the software
/// loop's when its software releases did (what a software run reads).
#[derive(Debug, Clone)]
pub struct Bells {
    pub software: Arc<Bell>,
    pub instance: Arc<Bell>,
}

/// What the watch is doing, as `IR/var/watch.json` keeps it for `slapos node status`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct WatchStatus {
    /// `waiting` (for a first view), `long-poll`, `polling` (the gateway sends no ETag:
    /// the runs' periods only), `reconnecting` (after an error).
    pub mode: String,
    /// The gateway tried first.
    pub gateway: String,
    /// The ETag sent with the polls.
    pub etag: Option<String>,
    /// When the watch entered this mode (Unix seconds).
    pub since_unix: u64,
    /// Changes of the view seen (each woke the runs), and the last one (Unix seconds).
    pub changes: u64,
    pub last_change_unix: Option<u64>,
    /// Errors in a row, the last one, and the delay before the next attempt.
    pub errors: u32,
    pub last_error: Option<String>,
    pub retry_in_secs: Option<u64>,
}

/// Where a node's watch keeps its status.
pub fn status_path(instance_root: &Path) -> PathBuf {
    instance_root.join("var/watch.json")
}

/// The status the node's watch last wrote (None: no daemon has run here).
pub fn load_status(instance_root: &Path) -> Option<WatchStatus> {
    let bytes = std::fs::read(status_path(instance_root)).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// The backoff before attempt `n` (1 for the first retry): `first · 2^(n-1)` capped at
/// `cap`, then jittered down by up to a half (so a fleet that lost its gateway does not
/// come back in step).
pub fn backoff(n: u32, first: Duration, cap: Duration, salt: u64) -> Duration {
    let full = first
        .saturating_mul(1u32 << n.saturating_sub(1).min(20))
        .min(cap);
    let fraction = pseudo_random(salt) % 1000;
    full.saturating_sub(full.mul_f64(fraction as f64 / 2000.0))
}

/// A cheap spread of values (time, pid and a salt mixed), not a secret.
pub(crate) fn pseudo_random(salt: u64) -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos() as u64)
        .unwrap_or(0);
    let mut x = nanos ^ salt.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ u64::from(std::process::id());
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    x
}

fn sleep_until_stopped(stop: &AtomicBool, d: Duration) {
    let end = Instant::now() + d;
    while !stop.load(Ordering::Relaxed) && Instant::now() < end {
        std::thread::sleep(
            Duration::from_millis(200).min(end.saturating_duration_since(Instant::now())),
        );
    }
}

/// How a watch behaves (the daemon's are the defaults; tests shorten them).
#[derive(Debug, Clone)]
pub struct WatchOptions {
    pub wait: Duration,
    pub backoff_first: Duration,
    pub backoff_cap: Duration,
    /// Where the status is written (None: nowhere).
    pub status_file: Option<PathBuf>,
}

impl Default for WatchOptions {
    fn default() -> Self {
        WatchOptions {
            wait: LONG_POLL_WAIT,
            backoff_first: BACKOFF_FIRST,
            backoff_cap: BACKOFF_CAP,
            status_file: None,
        }
    }
}

/// The watch's state between polls.
struct Watch<'a> {
    client: &'a SlapClient,
    opts: &'a WatchOptions,
    status: WatchStatus,
    /// The digests of the last view's bytes seen by the watch, and of its releases.
    last_view: Option<[u8; 32]>,
    last_software: Option<[u8; 32]>,
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    ring::digest::digest(&ring::digest::SHA256, bytes)
        .as_ref()
        .try_into()
        .unwrap_or([0; 32])
}

/// The digest of the software releases a view lists (None: not a view this client reads).
fn software_digest(body: &[u8]) -> Option<[u8; 32]> {
    let computer =
        slapos_proto::slap::Computer::decode(body, &slapos_proto::Limits::default()).ok()?;
    Some(sha256(
        format!("{:?}", computer.software_release_list).as_bytes(),
    ))
}

impl Watch<'_> {
    fn enter(&mut self, mode: &str) {
        if self.status.mode != mode {
            self.status.mode = mode.to_owned();
            self.status.since_unix = now_unix();
        }
        self.status.gateway = self.client.current_url();
        self.save();
    }

    fn save(&self) {
        let Some(path) = &self.opts.status_file else {
            return;
        };
        if let Some(dir) = path.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        let Ok(bytes) = serde_json::to_vec_pretty(&self.status) else {
            return;
        };
        if let Err(e) = crate::node::write_atomic(path, &bytes, 0o644) {
            tracing::debug!(error = %e, "cannot write the watch's status");
        }
    }
}

/// Watches `computer_id`'s view through `client` until `stop`, ringing `bells` when it
/// changes. Returns when `stop` is set (a poll in progress is waited
/// for: the daemon does not wait for this thread).
pub fn run(
    client: &SlapClient,
    computer_id: &str,
    bells: &Bells,
    stop: &AtomicBool,
    opts: &WatchOptions,
) {
    let mut watch = Watch {
        client,
        opts,
        status: WatchStatus::default(),
        last_view: None,
        last_software: None,
    };
    // The view count the watch last looked at, while it waits for an ETag.
    let mut looked = 0u64;
    let mut etag: Option<String> = None;
    // Answers in a row that came back early and unchanged (see the module's doc).
    let mut early = 0u32;
    watch.enter("waiting");
    while !stop.load(Ordering::Relaxed) {
        let Some(sent) = etag.clone() else {
            // No ETag yet, or the gateway sends none: the runs poll at their periods;
            // the watch looks at what their views carried.
            let seen = client.last_view();
            if seen.count > looked {
                looked = seen.count;
                match seen.etag {
                    Some(e) => {
                        tracing::info!(etag = %e, gateway = %client.current_url(), wait_secs = opts.wait.as_secs(), "the master versions the computer's view: long polls");
                        watch.status.etag = Some(e.clone());
                        etag = Some(e);
                        watch.enter("long-poll");
                        continue;
                    }
                    None if watch.status.mode != "polling" => {
                        tracing::info!(gateway = %client.current_url(), "the master sends no ETag: plain polling at the runs' periods");
                        watch.status.etag = None;
                        watch.enter("polling");
                    }
                    None => {}
                }
            }
            sleep_until_stopped(stop, PLAIN_CHECK);
            continue;
        };
        let asked = Instant::now();
        let answer = client.watch_computer(computer_id, &sent, opts.wait);
        let quick = asked.elapsed() < opts.wait / 2;
        let unchanged = match answer {
            Ok(Watched::NotModified { etag: answered }) => {
                tracing::debug!(etag = %sent, "the computer's view is unchanged");
                if let Some(e) = answered.filter(|e| *e != sent) {
                    etag = Some(e);
                }
                watch.status.errors = 0;
                watch.status.retry_in_secs = None;
                watch.status.etag = etag.clone();
                watch.enter("long-poll");
                true
            }
            Ok(Watched::Changed {
                etag: answered,
                body,
            }) => {
                let digest = sha256(&body);
                let changed = watch.last_view != Some(digest);
                watch.last_view = Some(digest);
                watch.status.errors = 0;
                watch.status.retry_in_secs = None;
                if changed {
                    watch.status.changes += 1;
                    watch.status.last_change_unix = Some(now_unix());
                    // (a view this client cannot read: the software run says why)
                    let software = software_digest(&body);
                    let releases = software.is_none() || software != watch.last_software;
                    watch.last_software = software;
                    tracing::info!(etag = ?answered, gateway = %client.current_url(), releases, "the computer's view changed: the runs wake");
                    bells.instance.ring();
                    if releases {
                        bells.software.ring();
                    }
                }
                match answered {
                    Some(e) => {
                        let same = e == sent;
                        etag = Some(e);
                        watch.status.etag = etag.clone();
                        watch.enter("long-poll");
                        !changed || same
                    }
                    None => {
                        // A gateway that does not version views answered (a failover to
                        // an older one): plain polling until a run reads an ETag again.
                        tracing::info!(gateway = %client.current_url(), "the master sends no ETag: plain polling at the runs' periods");
                        etag = None;
                        looked = client.last_view().count;
                        watch.status.etag = None;
                        watch.enter("polling");
                        false
                    }
                }
            }
            Err(e) => {
                watch.status.errors = watch.status.errors.saturating_add(1);
                let n = watch.status.errors;
                let delay = backoff(n, opts.backoff_first, opts.backoff_cap, u64::from(n));
                tracing::warn!(error = %e, errors = n, retry_in_ms = delay.as_millis() as u64, "long poll failed: reconnecting");
                watch.status.last_error = Some(e.to_string());
                watch.status.retry_in_secs = Some(delay.as_secs());
                watch.enter("reconnecting");
                early = 0;
                sleep_until_stopped(stop, delay);
                continue;
            }
        };
        if quick && unchanged {
            early += 1;
            if early > 1 {
                let delay = backoff(early - 1, opts.backoff_first, opts.backoff_cap, 7);
                tracing::debug!(
                    delay_ms = delay.as_millis() as u64,
                    "unchanged answers before the wait ended: pausing"
                );
                sleep_until_stopped(stop, delay);
            }
        } else {
            early = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_its_cap_with_jitter_below() {
        let (first, cap) = (Duration::from_secs(1), Duration::from_secs(30));
        for n in 1..12 {
            let full = Duration::from_secs(1 << (n - 1)).min(cap);
            for salt in 0..20 {
                let d = backoff(n, first, cap, salt);
                assert!(d <= full && d >= full / 2, "attempt {n}: {d:?}");
            }
        }
        assert!(backoff(u32::MAX, first, cap, 0) <= cap);
    }

    #[test]
    fn a_bell_wakes_a_waiter_that_saw_an_older_ring_only() {
        let bell = Bell::new();
        let stop = AtomicBool::new(false);
        let seen = bell.generation();
        assert!(!bell.wait(seen, Instant::now() + Duration::from_millis(50), &stop));
        let ringer = bell.clone();
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            ringer.ring();
        });
        assert!(bell.wait(seen, Instant::now() + Duration::from_secs(60), &stop));
        t.join().unwrap();
        // rung before the wait began: returns at once
        assert!(bell.wait(seen, Instant::now() + Duration::from_secs(60), &stop));
        let stop = AtomicBool::new(true);
        assert!(!bell.wait(
            bell.generation(),
            Instant::now() + Duration::from_secs(60),
            &stop
        ));
    }

    // ---- the gateway's protocol edge cases, against a stand-in ---------------------
    //
    // `StandIn` is a stand-in for the gateway's side of issue 21's protocol (304, a poll
    // held then answered 200, an early 304, no ETag, errors), written here from the spec
    // until the gateway's own lands: tests/tests/long_poll.rs runs the real one.

    use crate::client::SlapClient;
    use std::io::{BufRead, BufReader, Write};
    use std::net::TcpListener;

    #[derive(Default)]
    struct Gw {
        version: u64,
        /// The view's release (`sr-<n>`: changed by [`StandIn::change_releases`]).
        release: u64,
        /// Versions views (sends ETags, honours If-None-Match and Prefer).
        etags: bool,
        /// Answers 503 to this many requests.
        fail: u32,
        /// Answers a 304 at once, whatever `Prefer` says.
        early: bool,
    }

    #[derive(Debug, Clone)]
    struct Seen {
        if_none_match: Option<String>,
        prefer: Option<String>,
    }

    struct StandIn {
        url: String,
        gw: Arc<(Mutex<Gw>, Condvar)>,
        seen: Arc<Mutex<Vec<Seen>>>,
    }

    /// A view that differs with `version`, listing release `sr-<release>`.
    fn view(g: &Gw) -> Vec<u8> {
        let mut computer = slapos_proto::slap::Computer::new(format!("COMP-v{}", g.version));
        computer.software_release_list =
            slapos_proto::slap::Attr::Set(vec![slapos_proto::slap::SoftwareRelease::new(
                format!("sr-{}", g.release),
                "COMP",
            )]);
        computer.encode().unwrap().into_bytes()
    }

    impl StandIn {
        fn start(gw: Gw) -> StandIn {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let url = format!("http://{}/", listener.local_addr().unwrap());
            let gw = Arc::new((Mutex::new(gw), Condvar::new()));
            let seen = Arc::new(Mutex::new(Vec::new()));
            let (g, v) = (gw.clone(), seen.clone());
            std::thread::spawn(move || {
                for stream in listener.incoming() {
                    let Ok(stream) = stream else { continue };
                    let (g, v) = (g.clone(), v.clone());
                    std::thread::spawn(move || serve(stream, &g, &v));
                }
            });
            StandIn { url, gw, seen }
        }

        /// The view changes (its partitions, say).
        fn change(&self) {
            self.set(|g| g.version += 1);
        }

        /// The view's releases change.
        fn change_releases(&self) {
            self.set(|g| {
                g.version += 1;
                g.release += 1;
            });
        }

        fn set(&self, f: impl FnOnce(&mut Gw)) {
            f(&mut self.gw.0.lock().unwrap());
            self.gw.1.notify_all();
        }

        fn seen(&self) -> Vec<Seen> {
            self.seen.lock().unwrap().clone()
        }
    }

    fn serve(stream: std::net::TcpStream, gw: &(Mutex<Gw>, Condvar), seen: &Mutex<Vec<Seen>>) {
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let mut request = Seen {
            if_none_match: None,
            prefer: None,
        };
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some((name, value)) = line.split_once(':') {
                match name.to_ascii_lowercase().as_str() {
                    "if-none-match" => request.if_none_match = Some(value.trim().to_owned()),
                    "prefer" => request.prefer = Some(value.trim().to_owned()),
                    _ => {}
                }
            }
        }
        seen.lock().unwrap().push(request.clone());
        let wait = request
            .prefer
            .as_deref()
            .and_then(|p| p.strip_prefix("wait="))
            .and_then(|n| n.parse::<u64>().ok());
        let (lock, changed) = gw;
        let mut g = lock.lock().unwrap();
        let answer = if g.fail > 0 {
            g.fail -= 1;
            (503, None, Vec::new())
        } else if !g.etags {
            (200, None, view(&g))
        } else {
            let current = |g: &Gw| format!("\"{}\"", g.version);
            if request.if_none_match.as_deref() == Some(current(&g).as_str()) && !g.early {
                let until = Instant::now() + Duration::from_secs(wait.unwrap_or(0));
                let asked = g.version;
                while g.version == asked && !g.early && Instant::now() < until {
                    g = changed.wait_timeout(g, until - Instant::now()).unwrap().0;
                }
            }
            let early = g.early && request.if_none_match.is_some();
            if request.if_none_match.as_deref() == Some(current(&g).as_str()) || early {
                (304, Some(current(&g)), Vec::new())
            } else {
                (200, Some(current(&g)), view(&g))
            }
        };
        drop(g);
        let (status, etag, body) = answer;
        let mut head = format!(
            "HTTP/1.1 {status} X\r\nContent-Length: {}\r\nConnection: close\r\n",
            body.len()
        );
        if let Some(e) = etag {
            head.push_str(&format!("ETag: {e}\r\n"));
        }
        head.push_str("\r\n");
        let mut stream = reader.into_inner();
        let _ = stream.write_all(head.as_bytes());
        let _ = stream.write_all(&body);
    }

    struct Running {
        stop: Arc<AtomicBool>,
        bells: Bells,
        client: Arc<SlapClient>,
        status: PathBuf,
        _dir: tempfile::TempDir,
    }

    impl Running {
        fn status(&self) -> WatchStatus {
            let bytes = std::fs::read(&self.status).unwrap_or_default();
            serde_json::from_slice(&bytes).unwrap_or_default()
        }
    }

    impl Drop for Running {
        fn drop(&mut self) {
            self.stop.store(true, Ordering::Relaxed);
        }
    }

    /// A watch through a client of `urls` that waits `wait_secs` per poll; the runs' first
    /// view read (the ETag it starts from) done first.
    fn watch(urls: &[String], wait_secs: u64) -> Running {
        let client = Arc::new(
            SlapClient::new(urls, None, None)
                .unwrap()
                .with_timeout(Duration::from_secs(5)),
        );
        client.full_computer_information("COMP").unwrap();
        let dir = tempfile::tempdir().unwrap();
        let status = dir.path().join("var/watch.json");
        let opts = WatchOptions {
            wait: Duration::from_secs(wait_secs),
            backoff_first: Duration::from_millis(50),
            backoff_cap: Duration::from_millis(400),
            status_file: Some(status.clone()),
        };
        let stop = Arc::new(AtomicBool::new(false));
        let bells = Bells {
            software: Bell::new(),
            instance: Bell::new(),
        };
        let (c, s, b) = (client.clone(), stop.clone(), bells.clone());
        std::thread::spawn(move || run(&c, "COMP", &b, &s, &opts));
        Running {
            stop,
            bells,
            client,
            status,
            _dir: dir,
        }
    }

    fn wait_until(what: &str, f: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !f() {
            assert!(Instant::now() < deadline, "{what}");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The poll carries the ETag the runs read and `Prefer: wait`; a 304 at the wait's
    /// end re-arms it without waking anything; a change answered while it is held wakes
    /// the runs once, and the next poll carries the new ETag.
    #[test]
    fn a_held_poll_wakes_the_runs_once_per_change_and_a_304_rearms_it() {
        let gw = StandIn::start(Gw {
            version: 1,
            etags: true,
            ..Gw::default()
        });
        let w = watch(std::slice::from_ref(&gw.url), 1);
        // the runs' read, then polls re-armed after each 304 (1 s holds)
        wait_until("three polls", || gw.seen().len() >= 4);
        assert_eq!(w.bells.instance.generation(), 0, "a 304 woke the runs");
        for poll in &gw.seen()[1..] {
            assert_eq!(poll.if_none_match.as_deref(), Some("\"1\""), "{poll:?}");
            assert_eq!(poll.prefer.as_deref(), Some("wait=1"), "{poll:?}");
        }
        assert_eq!(gw.seen()[0].if_none_match, None, "the runs' read is plain");
        assert_eq!(w.status().mode, "long-poll");
        gw.change();
        wait_until("the runs woken", || w.bells.instance.generation() == 1);
        let n = gw.seen().len();
        wait_until("the next poll", || gw.seen().len() > n + 1);
        assert_eq!(
            gw.seen().last().unwrap().if_none_match.as_deref(),
            Some("\"2\"")
        );
        assert_eq!(
            w.bells.instance.generation(),
            1,
            "woken more than once for one change"
        );
        assert_eq!(w.status().changes, 1);
        assert_eq!(w.status().etag.as_deref(), Some("\"2\""));
        // (the first view the watch saw: the software run woken too)
        assert_eq!(w.bells.software.generation(), 1);
        // a change of the partitions only wakes the instance run; of the releases, both
        gw.change();
        wait_until("the instance run woken", || {
            w.bells.instance.generation() == 2
        });
        assert_eq!(w.bells.software.generation(), 1);
        gw.change_releases();
        wait_until("the software run woken", || {
            w.bells.software.generation() == 2
        });
        assert_eq!(w.bells.instance.generation(), 3);
    }

    /// A gateway that sends no ETag (slapproxy, an older gateway): the watch sends
    /// nothing at all, the runs poll at their periods, and it says so.
    #[test]
    fn without_an_etag_the_watch_sends_nothing_and_the_runs_poll() {
        let gw = StandIn::start(Gw {
            version: 1,
            ..Gw::default()
        });
        let w = watch(std::slice::from_ref(&gw.url), 1);
        wait_until("the watch's status", || w.status().mode == "polling");
        std::thread::sleep(Duration::from_millis(1500));
        assert_eq!(
            gw.seen().len(),
            1,
            "the watch sent requests: {:?}",
            gw.seen()
        );
        // a run later reads a view with an ETag (the gateway was upgraded): long polls
        gw.set(|g| g.etags = true);
        w.client.full_computer_information("COMP").unwrap();
        wait_until("a long poll", || {
            gw.seen().iter().any(|s| s.prefer.is_some())
        });
        assert_eq!(w.status().mode, "long-poll");
    }

    /// Answers that come back at once and unchanged (an early 304 from a gateway shutting
    /// down, or, repeated, something that ignores `Prefer`): the first is polled again at
    /// once, the next ones wait, so nothing spins; nothing is woken.
    #[test]
    fn early_unchanged_answers_do_not_spin() {
        let gw = StandIn::start(Gw {
            version: 1,
            etags: true,
            early: true,
            ..Gw::default()
        });
        let w = watch(std::slice::from_ref(&gw.url), 60);
        std::thread::sleep(Duration::from_secs(2));
        let polls = gw.seen().len() - 1;
        // backoffs of 50, 100, 200, 400 ms... at most: a dozen, not thousands
        assert!((2..=12).contains(&polls), "{polls} polls in 2 s");
        assert_eq!(w.bells.instance.generation(), 0);
        // the gateway holds polls again: they are held, not paused
        gw.set(|g| g.early = false);
        gw.change();
        wait_until("the change", || w.bells.instance.generation() == 1);
    }

    /// Errors (503 on every gateway) reconnect after a backoff, keeping the ETag; a dead
    /// gateway is failed over to the next, which gets the ETag verbatim.
    #[test]
    fn errors_back_off_and_a_failover_keeps_the_etag() {
        let a = StandIn::start(Gw {
            version: 7,
            etags: true,
            ..Gw::default()
        });
        let b = StandIn::start(Gw {
            version: 7,
            etags: true,
            ..Gw::default()
        });
        let w = watch(&[a.url.clone(), b.url.clone()], 1);
        wait_until("a poll on a", || a.seen().len() >= 2);
        // both fail for a while: backoff, status says so
        a.set(|g| g.fail = 1000);
        b.set(|g| g.fail = 4);
        wait_until("reconnecting", || w.status().errors >= 2);
        assert_eq!(w.status().mode, "reconnecting");
        assert!(w.status().last_error.is_some());
        // b recovers (a stays down): polls go there with the same ETag
        wait_until("polls held by b", || {
            b.seen()
                .iter()
                .filter(|s| s.if_none_match.is_some())
                .count()
                >= 6
        });
        assert!(b
            .seen()
            .iter()
            .all(|s| s.if_none_match.as_deref() == Some("\"7\"")));
        wait_until("long polls again", || w.status().mode == "long-poll");
        assert_eq!(w.status().errors, 0);
        assert_eq!(w.bells.instance.generation(), 0, "an error woke the runs");
        b.change();
        wait_until("the change on b", || w.bells.instance.generation() == 1);
    }
}
