//! A Raft group of real `slapos master run` processes on loopback, for end-to-end tests.
//!
//! Every replica gets its own ports, configuration file, data directory and log file in
//! one temporary directory per cluster. The processes are killed (SIGKILL) when the
//! [`Cluster`] is dropped; when it is dropped by a failing test, the tail of every
//! replica's log is printed and the directory is kept for inspection.
//!
//! Waits poll with generous deadlines and fail with what they saw and the logs; they never
//! assert how long something took.

use crate::slapos_bin;
use master_client::MasterClient;
use slapos_domain::{Entry, Query};
use slapos_proto::rpc::master::{read_response, Consistency, StatusResponse};
use std::cell::Cell;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// How long any wait of the harness may take before the test fails.
pub const WAIT: Duration = Duration::from_secs(30);

/// Raft timers and snapshot policy written into every replica's configuration.
#[derive(Debug, Clone)]
pub struct Settings {
    pub heartbeat_ms: u64,
    pub election_timeout_min_ms: u64,
    pub election_timeout_max_ms: u64,
    /// `[snapshot]`: logs_since_last, max_log_bytes, keep_logs (None: the defaults).
    pub snapshot: Option<(u64, u64, u64)>,
}

impl Default for Settings {
    /// Fast elections on loopback, with room for a loaded two-core machine.
    fn default() -> Self {
        Settings {
            heartbeat_ms: 50,
            election_timeout_min_ms: 300,
            election_timeout_max_ms: 600,
            snapshot: None,
        }
    }
}

/// One replica: where it listens, its files, and its process while it runs.
pub struct Replica {
    pub id: u64,
    pub raft_addr: String,
    pub api_addr: String,
    pub config: PathBuf,
    pub data_dir: PathBuf,
    pub log: PathBuf,
    child: Option<Child>,
    starts: u32,
}

impl Replica {
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }
}

pub struct Cluster {
    name: String,
    dir: Option<tempfile::TempDir>,
    settings: Settings,
    replicas: BTreeMap<u64, Replica>,
    /// The logs went into a failure message already.
    logs_shown: Cell<bool>,
}

/// A loopback port nobody listens on, below the ephemeral range (so that no outgoing
/// connection takes it while a killed replica is down), distinct within this process.
pub(crate) fn free_port() -> u16 {
    const LOW: u32 = 20_000;
    const SPAN: u32 = 12_000;
    static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);
    // Start each test process at its own offset, so that two test binaries running at
    // once rarely probe the same ports.
    let _ = NEXT.compare_exchange(
        u32::MAX,
        (std::process::id().wrapping_mul(7919)) % SPAN,
        Ordering::SeqCst,
        Ordering::SeqCst,
    );
    for _ in 0..SPAN {
        let port = (LOW + NEXT.fetch_add(1, Ordering::SeqCst) % SPAN) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free loopback port in {LOW}..{}", LOW + SPAN);
}

fn tail(path: &Path, lines: usize) -> String {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let all: Vec<&str> = text.lines().collect();
            let from = all.len().saturating_sub(lines);
            let mut out = String::new();
            if from > 0 {
                let _ = writeln!(out, "[... {from} earlier lines]");
            }
            for l in &all[from..] {
                let _ = writeln!(out, "{l}");
            }
            out
        }
        Err(e) => format!("(cannot read {}: {e})\n", path.display()),
    }
}

fn describe(output: &Output) -> String {
    format!(
        "exit: {}\nstdout:\n{}\nstderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

impl Cluster {
    /// An empty cluster (no replica configured yet).
    pub fn new(name: &str, settings: Settings) -> Cluster {
        let dir = tempfile::Builder::new()
            .prefix(&format!("slapos-e2e-{name}-"))
            .tempdir()
            .expect("create a temporary directory");
        Cluster {
            name: name.to_string(),
            dir: Some(dir),
            settings,
            replicas: BTreeMap::new(),
            logs_shown: Cell::new(false),
        }
    }

    /// A running group of `n` voters 1..=n: replica 1 bootstraps it, the others join it
    /// one after the other (as `slapos master join` does).
    pub async fn start(name: &str, n: u64, settings: Settings) -> Cluster {
        let mut cluster = Cluster::new(name, settings);
        cluster.configure(1);
        cluster.init(1);
        cluster.run(1).await;
        for id in 2..=n {
            cluster.add(id).await;
        }
        cluster.wait_leader().await;
        cluster
    }

    pub fn dir(&self) -> &Path {
        self.dir.as_ref().expect("cluster directory").path()
    }

    pub fn replica(&self, id: u64) -> &Replica {
        self.replicas
            .get(&id)
            .unwrap_or_else(|| panic!("replica {id} is not configured"))
    }

    pub fn api(&self, id: u64) -> String {
        self.replica(id).api_addr.clone()
    }

    /// Ids of the replicas whose process runs.
    pub fn running(&self) -> Vec<u64> {
        self.replicas
            .values()
            .filter(|r| r.is_running())
            .map(|r| r.id)
            .collect()
    }

    /// Master API addresses of the running replicas, except `except`.
    pub fn apis_except(&self, except: &[u64]) -> Vec<String> {
        self.running()
            .into_iter()
            .filter(|id| !except.contains(id))
            .map(|id| self.api(id))
            .collect()
    }

    /// Write replica `id`'s configuration, on fresh ports.
    pub fn configure(&mut self, id: u64) -> &Replica {
        assert!(
            !self.replicas.contains_key(&id),
            "replica {id} is already configured"
        );
        let raft_addr = format!("127.0.0.1:{}", free_port());
        let api_addr = format!("127.0.0.1:{}", free_port());
        let data_dir = self.dir().join(format!("data-{id}"));
        let config = self.dir().join(format!("replica-{id}.toml"));
        let log = self.dir().join(format!("replica-{id}.log"));
        let s = &self.settings;
        let mut text = format!(
            "id = {id}\nraft_addr = \"{raft_addr}\"\napi_addr = \"{api_addr}\"\n\
             data_dir = \"{}\"\nregion = \"region-{id}\"\n\n[timers]\nheartbeat_ms = {}\n\
             election_timeout_min_ms = {}\nelection_timeout_max_ms = {}\n",
            data_dir.display(),
            s.heartbeat_ms,
            s.election_timeout_min_ms,
            s.election_timeout_max_ms
        );
        if let Some((logs_since_last, max_log_bytes, keep_logs)) = s.snapshot {
            let _ = write!(
                text,
                "\n[snapshot]\nlogs_since_last = {logs_since_last}\n\
                 max_log_bytes = {max_log_bytes}\nkeep_logs = {keep_logs}\n"
            );
        }
        std::fs::write(&config, text).expect("write the replica configuration");
        self.replicas.insert(
            id,
            Replica {
                id,
                raft_addr,
                api_addr,
                config,
                data_dir,
                log,
                child: None,
                starts: 0,
            },
        );
        self.replica(id)
    }

    /// Run `slapos` with these arguments to completion (not a replica: a command).
    pub fn slapos(&self, args: &[&str]) -> Output {
        Command::new(slapos_bin())
            .args(args)
            .env("NO_COLOR", "1")
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("cannot run slapos {args:?}: {e}"))
    }

    /// `slapos master init`: bootstrap a group of one with replica `id` (not running).
    pub fn init(&self, id: u64) {
        let config = self.replica(id).config.display().to_string();
        let out = self.slapos(&["master", "init", "--config", &config]);
        if !out.status.success() {
            self.fail(&format!(
                "slapos master init of replica {id} failed\n{}",
                describe(&out)
            ));
        }
    }

    /// Start replica `id`'s process (`slapos master run`) and wait until it serves its
    /// master API. Its output is appended to its log file.
    pub async fn run(&mut self, id: u64) {
        let bin = slapos_bin();
        let replica = self
            .replicas
            .get_mut(&id)
            .unwrap_or_else(|| panic!("replica {id} is not configured"));
        assert!(replica.child.is_none(), "replica {id} already runs");
        replica.starts += 1;
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&replica.log)
            .expect("open the replica log");
        let _ = writeln!(log, "===== start #{} of replica {id} =====", replica.starts);
        let err: File = log.try_clone().expect("clone the log handle");
        let child = Command::new(bin)
            .args(["master", "run", "--config"])
            .arg(&replica.config)
            .env("NO_COLOR", "1")
            .env(
                "RUST_LOG",
                std::env::var("SLAPOS_E2E_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start replica {id}: {e}"));
        replica.child = Some(child);
        let deadline = Instant::now() + WAIT;
        loop {
            if self.status(id).await.is_some() {
                return;
            }
            let exited = self
                .replicas
                .get_mut(&id)
                .and_then(|r| r.child.as_mut())
                .and_then(|c| c.try_wait().ok().flatten());
            if let Some(status) = exited {
                if let Some(r) = self.replicas.get_mut(&id) {
                    r.child = None;
                }
                self.fail(&format!("replica {id} exited at start-up: {status}"));
            }
            if Instant::now() > deadline {
                self.fail(&format!("replica {id} does not serve its master API"));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Configure and start replica `id`, and join it to the group as a voter.
    pub async fn add(&mut self, id: u64) {
        self.configure(id);
        self.run(id).await;
        let out = self.join(id);
        if !out.status.success() {
            self.fail(&format!("replica {id} could not join\n{}", describe(&out)));
        }
    }

    /// `slapos master join` of replica `id` via every other running replica; the caller
    /// checks the outcome.
    pub fn join(&self, id: u64) -> Output {
        let config = self.replica(id).config.display().to_string();
        let via = self.apis_except(&[id]).join(",");
        self.slapos(&["master", "join", "--config", &config, "--via", &via])
    }

    /// `slapos master leave --id <id>` via the running replicas other than `id`; the
    /// caller checks the outcome.
    pub fn leave(&self, id: u64) -> Output {
        let via = self.apis_except(&[id]).join(",");
        self.slapos(&["master", "leave", "--id", &id.to_string(), "--via", &via])
    }

    /// SIGKILL replica `id` and reap it.
    pub fn kill9(&mut self, id: u64) {
        let replica = self
            .replicas
            .get_mut(&id)
            .unwrap_or_else(|| panic!("replica {id} is not configured"));
        let mut child = replica
            .child
            .take()
            .unwrap_or_else(|| panic!("replica {id} does not run"));
        let _ = child.kill();
        let _ = child.wait();
    }

    /// Start a killed replica again, on the same configuration and data.
    pub async fn restart(&mut self, id: u64) {
        self.run(id).await;
    }

    /// The status of replica `id`, None when it does not answer.
    pub async fn status(&self, id: u64) -> Option<StatusResponse> {
        let addr = self.api(id);
        let mut client = MasterClient::single(&addr);
        client.call_timeout = Duration::from_secs(2);
        client.status_of(&addr).await.ok()
    }

    /// A client over the running replicas (it finds the leader by itself).
    pub fn client(&self) -> MasterClient {
        MasterClient::new(self.apis_except(&[])).with_deadline(WAIT)
    }

    /// The whole state of replica `id` as it has applied it, read from that replica only
    /// (the read is marked forwarded, so it is never answered by another replica), and
    /// the applied index it reflects.
    pub async fn local_state(&self, id: u64) -> Result<(Vec<Entry>, u64), String> {
        let addr = self.api(id);
        let mut client = MasterClient::single(&addr).forwarded();
        client.call_timeout = Duration::from_secs(5);
        let r = client
            .read_once(&Query::All, Consistency::Local, u64::MAX)
            .await
            .map_err(|e| e.to_string())?;
        match r.result {
            Some(read_response::Result::Entries(e)) => Ok((
                e.entries.into_iter().map(|e| (e.key, e.value)).collect(),
                r.applied_index,
            )),
            Some(read_response::Result::Unavailable(why)) => Err(why),
            Some(read_response::Result::NotLeader(h)) => {
                Err(format!("not answered locally; leader is {}", h.leader_id))
            }
            None => Err("empty answer".into()),
        }
    }

    /// Wait until replica `id` answers a local read at or past `min_index` (a replica
    /// answers locally once it has heard from a leader since it started).
    pub async fn wait_local_state(&self, id: u64, min_index: u64) -> (Vec<Entry>, u64) {
        let deadline = Instant::now() + WAIT;
        loop {
            let last = match self.local_state(id).await {
                Ok((entries, applied)) if applied >= min_index => return (entries, applied),
                Ok((_, applied)) => format!("applied {applied}"),
                Err(e) => e,
            };
            if Instant::now() > deadline {
                self.fail(&format!(
                    "replica {id} did not answer a local read at index {min_index} or past \
                     within {WAIT:?}; last answer: {last}"
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Wait until one running replica leads, as a voter of its membership, and every
    /// running member of that membership agrees (same leader, same term). Returns the
    /// leader's id.
    pub async fn wait_leader(&self) -> u64 {
        let deadline = Instant::now() + WAIT;
        loop {
            let mut seen = BTreeMap::new();
            for id in self.running() {
                seen.insert(id, self.status(id).await);
            }
            for (id, s) in &seen {
                let Some(s) = s else { continue };
                // A replica that removed itself from the group may still call itself
                // leader for a moment: a leader must be a voter of its own membership.
                let voter = s.members.iter().any(|m| m.id == *id && m.role == "voter");
                if s.state != "leader" || !voter {
                    continue;
                }
                let agreed = s
                    .members
                    .iter()
                    .filter(|m| seen.contains_key(&m.id))
                    .all(|m| {
                        seen[&m.id]
                            .as_ref()
                            .is_some_and(|o| o.has_leader && o.leader_id == *id && o.term == s.term)
                    });
                if agreed {
                    return *id;
                }
            }
            if Instant::now() > deadline {
                let mut view = String::new();
                for (id, s) in &seen {
                    let _ = match s {
                        Some(s) => writeln!(
                            view,
                            "  replica {id}: {} term {} leader {} (known: {}) members {:?}",
                            s.state,
                            s.term,
                            s.leader_id,
                            s.has_leader,
                            s.members.iter().map(|m| m.id).collect::<Vec<_>>()
                        ),
                        None => writeln!(view, "  replica {id}: no answer"),
                    };
                }
                self.fail(&format!(
                    "no leader agreed on by the running replicas within {WAIT:?}:\n{view}"
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Wait until replica `id` has applied `index`; returns its status then.
    pub async fn wait_applied(&self, id: u64, index: u64) -> StatusResponse {
        let deadline = Instant::now() + WAIT;
        let mut last = None;
        loop {
            if let Some(s) = self.status(id).await {
                if s.applied_index >= index {
                    return s;
                }
                last = Some(s.applied_index);
            }
            if Instant::now() > deadline {
                self.fail(&format!(
                    "replica {id} did not apply index {index} within {WAIT:?} (last seen applied: {last:?})"
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Wait until the replicas `ids` have applied at least `min_index` and the same index,
    /// and check that their states are then byte-identical (a difference at an equal
    /// applied index fails at once). Returns the common applied index and state.
    pub async fn wait_converged(&self, ids: &[u64], min_index: u64) -> (u64, Vec<Entry>) {
        let deadline = Instant::now() + WAIT;
        loop {
            let mut reads = Vec::new();
            for &id in ids {
                reads.push((id, self.local_state(id).await));
            }
            let applied: Vec<Option<u64>> = reads
                .iter()
                .map(|(_, r)| r.as_ref().ok().map(|(_, a)| *a))
                .collect();
            let first = applied[0];
            if first.is_some_and(|a| a >= min_index) && applied.iter().all(|a| *a == first) {
                let (id0, r0) = &reads[0];
                let (entries0, index) = r0.as_ref().expect("read").clone();
                for (id, r) in &reads[1..] {
                    let (entries, _) = r.as_ref().expect("read");
                    if *entries != entries0 {
                        self.fail(&format!(
                            "replicas {id0} and {id} both applied up to index {index} but their \
                             states differ: {}",
                            diff(&entries0, entries)
                        ));
                    }
                }
                return (index, entries0);
            }
            if Instant::now() > deadline {
                let view: Vec<String> = reads
                    .iter()
                    .map(|(id, r)| match r {
                        Ok((e, a)) => format!("replica {id}: applied {a}, {} entries", e.len()),
                        Err(e) => format!("replica {id}: {e}"),
                    })
                    .collect();
                self.fail(&format!(
                    "replicas {ids:?} did not converge at or past index {min_index} within \
                     {WAIT:?}: {}",
                    view.join("; ")
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The tail of every replica's log.
    pub fn logs(&self) -> String {
        let mut out = String::new();
        for r in self.replicas.values() {
            let _ = writeln!(
                out,
                "----- replica {} ({}; {}) log {} -----",
                r.id,
                if r.is_running() { "running" } else { "stopped" },
                r.api_addr,
                r.log.display()
            );
            out.push_str(&tail(&r.log, 60));
        }
        out
    }

    /// Fail the test with a message and the replicas' logs.
    pub fn fail(&self, message: &str) -> ! {
        self.logs_shown.set(true);
        panic!(
            "[cluster {}] {message}\n\n{}\n(cluster directory: {})",
            self.name,
            self.logs(),
            self.dir().display()
        );
    }
}

/// The first difference between two states, for failure messages.
fn diff(a: &[Entry], b: &[Entry]) -> String {
    let a: BTreeMap<&[u8], &[u8]> = a.iter().map(|(k, v)| (&k[..], &v[..])).collect();
    let b: BTreeMap<&[u8], &[u8]> = b.iter().map(|(k, v)| (&k[..], &v[..])).collect();
    for (k, va) in &a {
        match b.get(k) {
            None => return format!("key {:?} only in the first", String::from_utf8_lossy(k)),
            Some(vb) if vb != va => {
                return format!(
                    "key {:?}: {} vs {}",
                    String::from_utf8_lossy(k),
                    String::from_utf8_lossy(va),
                    String::from_utf8_lossy(vb)
                )
            }
            _ => {}
        }
    }
    for k in b.keys() {
        if !a.contains_key(k) {
            return format!("key {:?} only in the second", String::from_utf8_lossy(k));
        }
    }
    "same entries in a different order".into()
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for r in self.replicas.values_mut() {
            if let Some(mut child) = r.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        if std::thread::panicking() {
            if !self.logs_shown.get() {
                eprintln!("[cluster {}] replica logs:\n{}", self.name, self.logs());
            }
            if let Some(dir) = self.dir.take() {
                eprintln!(
                    "[cluster {}] kept {} for inspection",
                    self.name,
                    dir.keep().display()
                );
            }
        }
    }
}
