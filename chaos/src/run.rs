//! `slapos chaos run`: a cluster of real processes (replicas and a gateway beside each,
//! each host in its own network namespace when root), the workload of [`crate::workload`],
//! faults on a seeded schedule, then the checkers and the report.

use crate::cluster::{ClusterError, Hosts, ProcessCluster};
use crate::linearizability::{check_register, RegisterKind, RegisterOp, Verdict};
use crate::netns::Network;
use crate::workload::{
    self, register_by_title, registers_of, ClientOptions, History, Key, OpKind, OpRecord, Outcome,
    Rng, RunClock,
};
use master_node::domain::Query as MasterQuery;
use master_node::raft::client::MasterClient;
use master_node::raft::node::Timers;
use master_node::State;
use serde::Serialize;
use slapos_proto::rpc::master::Consistency;
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Debug, thiserror::Error)]
pub enum ChaosError {
    #[error("cluster: {0}")]
    Cluster(#[from] ClusterError),
    #[error("network: {0}")]
    Net(#[from] crate::netns::NetError),
    #[error("{0}")]
    Workload(#[from] workload::WorkloadError),
    #[error("{0}: {1}")]
    Io(String, std::io::Error),
}

/// The kinds of fault the schedule draws from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultKind {
    /// `kill -9` of the leader, restarted after the hold.
    KillLeader,
    /// `kill -9` of a random replica (maybe the leader), restarted after the hold.
    KillReplica,
    /// SIGSTOP of the leader, SIGCONT after the hold.
    PauseLeader,
    /// The leader's host cut from every other host (namespaces only).
    IsolateLeader,
    /// The hosts split into a minority and a majority at random (namespaces only).
    SplitGroup,
    /// A follower removed, its data directory wiped, and back under a new id.
    WipeRejoin,
    /// `kill -9` of a gateway while clients use it, restarted after the hold.
    KillGateway,
}

impl FaultKind {
    pub const ALL: [FaultKind; 7] = [
        FaultKind::KillLeader,
        FaultKind::KillReplica,
        FaultKind::PauseLeader,
        FaultKind::IsolateLeader,
        FaultKind::SplitGroup,
        FaultKind::WipeRejoin,
        FaultKind::KillGateway,
    ];

    /// The kind named as in the report (`kill_leader`, ...).
    pub fn parse(name: &str) -> Option<FaultKind> {
        FaultKind::ALL.into_iter().find(|k| k.name() == name)
    }

    pub fn name(self) -> &'static str {
        match self {
            FaultKind::KillLeader => "kill_leader",
            FaultKind::KillReplica => "kill_replica",
            FaultKind::PauseLeader => "pause_leader",
            FaultKind::IsolateLeader => "isolate_leader",
            FaultKind::SplitGroup => "split_group",
            FaultKind::WipeRejoin => "wipe_rejoin",
            FaultKind::KillGateway => "kill_gateway",
        }
    }

    fn needs_namespaces(self) -> bool {
        matches!(self, FaultKind::IsolateLeader | FaultKind::SplitGroup)
    }
}

#[derive(Debug, Clone)]
pub struct ChaosOptions {
    pub bin: PathBuf,
    pub dir: PathBuf,
    pub duration: Duration,
    pub seed: u64,
    pub replicas: u64,
    pub clients: usize,
    pub keys: usize,
    /// Use network namespaces (needs root); otherwise loopback.
    pub namespaces: bool,
    /// The kinds of fault to draw from (empty: all that can be injected).
    pub faults: Vec<FaultKind>,
}

/// One injected fault.
#[derive(Debug, Clone, Serialize)]
pub struct FaultEvent {
    pub kind: FaultKind,
    pub target: String,
    pub start_ms: u64,
    pub end_ms: u64,
    pub leader_before: Option<u64>,
    /// For a fault that hit the leader: a replica other than the one hit became leader
    /// this long after the injection, or (`leader_after_heal`) the group had a leader again
    /// this long after the injection, once the fault was healed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub new_leader_after_ms: Option<u64>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub leader_after_heal: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub new_leader: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct RegisterVerdict {
    pub register: String,
    pub ops: usize,
    #[serde(flatten)]
    pub verdict: Verdict,
}

#[derive(Debug, Clone, Serialize)]
pub struct ReplicaCheck {
    pub id: u64,
    pub applied_index: u64,
    pub entries: usize,
    pub identical_to_first: bool,
    pub invariants: Result<(), String>,
    /// Registers whose value on this replica is not one the history allows as final.
    pub lost_writes: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub seed: u64,
    pub mode: String,
    pub replicas: u64,
    pub clients: usize,
    pub keys: usize,
    pub duration_s: f64,
    pub not_injectable: Vec<FaultKind>,
    pub faults: Vec<FaultEvent>,
    pub faults_by_kind: BTreeMap<String, usize>,
    pub ops_by_outcome: BTreeMap<String, usize>,
    pub local_reads: usize,
    /// Values the local reads showed, each checked against the writes.
    pub local_values_checked: usize,
    pub failed_local_reads: u64,
    pub longest_without_write_ms: u64,
    /// When that window began (ms since the clients started).
    pub longest_without_write_at_ms: u64,
    pub longest_without_read_ms: u64,
    pub longest_without_read_at_ms: u64,
    pub linearizable: bool,
    pub first_violation: Option<RegisterVerdict>,
    pub registers_checked: usize,
    pub unknown_verdicts: usize,
    pub lost_writes: usize,
    pub replicas_identical: bool,
    pub replica_checks: Vec<ReplicaCheck>,
    pub phantom_local_reads: Vec<String>,
    pub passed: bool,
}

fn ms(d: Duration) -> u64 {
    d.as_millis() as u64
}

/// The leader a majority-side replica reports, other than `exclude` (replica id).
async fn other_leader(cluster: &ProcessCluster, exclude: Option<u64>) -> Option<u64> {
    for id in cluster.ids() {
        if Some(id) == exclude || !cluster.is_running(id) {
            continue;
        }
        let Some(addr) = cluster.api_addr(id) else {
            continue;
        };
        let mut c = MasterClient::single(addr);
        c.call_timeout = Duration::from_millis(300);
        if let Ok(s) = c.status_of(addr).await {
            if s.state == "leader" && Some(s.id) != exclude {
                return Some(s.id);
            }
        }
    }
    None
}

/// Hold a fault for `hold`, watching for a new leader other than `hit`.
async fn hold(
    cluster: &ProcessCluster,
    hold: Duration,
    hit: Option<u64>,
    start: Instant,
    watch: bool,
) -> Option<(u64, u64)> {
    let mut found = None;
    while start.elapsed() < hold {
        if watch && found.is_none() {
            if let Some(id) = other_leader(cluster, hit).await {
                found = Some((id, ms(start.elapsed())));
            }
        }
        tokio::time::sleep(Duration::from_millis(if found.is_none() && watch {
            30
        } else {
            100
        }))
        .await;
    }
    found
}

struct Faults<'a> {
    cluster: &'a mut ProcessCluster,
    net: Option<&'a mut Network>,
    rng: Rng,
    next_id: u64,
    clock: RunClock,
}

impl Faults<'_> {
    async fn inject(&mut self, kind: FaultKind) -> FaultEvent {
        let leader = self.cluster.wait_leader(Duration::from_secs(20)).await.ok();
        let start_ms = self.clock.us() / 1000;
        let start = Instant::now();
        let hold_for = self.rng.millis(1500, 3500);
        let ids = self.cluster.ids();
        let mut event = FaultEvent {
            kind,
            target: String::new(),
            start_ms,
            end_ms: start_ms,
            leader_before: leader,
            new_leader_after_ms: None,
            leader_after_heal: false,
            new_leader: None,
            error: None,
        };
        let pick = |rng: &mut Rng, v: &[u64]| v[rng.below(v.len() as u64) as usize];
        // Ok(Some(found)) when the fault hit the leader (found: a new leader seen during
        // the hold); Ok(None) when it did not.
        let result: Result<Option<Option<(u64, u64)>>, String> = async {
            match kind {
                FaultKind::KillLeader | FaultKind::KillReplica => {
                    let victim = match (kind, leader) {
                        (FaultKind::KillLeader, Some(l)) => l,
                        _ => pick(&mut self.rng, &ids),
                    };
                    event.target = format!("replica {victim}");
                    self.cluster.kill9(victim).map_err(|e| e.to_string())?;
                    let watch = Some(victim) == leader;
                    let found = hold(self.cluster, hold_for, Some(victim), start, watch).await;
                    self.cluster.spawn(victim).map_err(|e| e.to_string())?;
                    Ok(watch.then_some(found))
                }
                FaultKind::PauseLeader => {
                    let victim = leader.ok_or("no leader")?;
                    event.target = format!("replica {victim}");
                    self.cluster
                        .signal(victim, "STOP")
                        .map_err(|e| e.to_string())?;
                    let found = hold(self.cluster, hold_for, Some(victim), start, true).await;
                    self.cluster
                        .signal(victim, "CONT")
                        .map_err(|e| e.to_string())?;
                    Ok(Some(found))
                }
                FaultKind::IsolateLeader | FaultKind::SplitGroup => {
                    let net = self.net.as_deref_mut().ok_or("no namespaces")?;
                    let hosts: Vec<usize> = ids
                        .iter()
                        .filter_map(|id| self.cluster.host_of(*id))
                        .collect();
                    let minority: Vec<usize> = if kind == FaultKind::IsolateLeader {
                        let l = leader.ok_or("no leader")?;
                        vec![self.cluster.host_of(l).ok_or("leader host")?]
                    } else {
                        let mut shuffled = hosts.clone();
                        for i in (1..shuffled.len()).rev() {
                            let j = self.rng.below(i as u64 + 1) as usize;
                            shuffled.swap(i, j);
                        }
                        let size = 1 + self.rng.below(((hosts.len() - 1) / 2).max(1) as u64);
                        shuffled.truncate(size as usize);
                        shuffled
                    };
                    event.target = format!("hosts {minority:?} | rest");
                    for a in &minority {
                        for b in hosts.iter().filter(|h| !minority.contains(h)) {
                            net.cut(*a, *b).map_err(|e| e.to_string())?;
                        }
                    }
                    let leader_cut = leader
                        .and_then(|l| self.cluster.host_of(l))
                        .is_some_and(|h| minority.contains(&h));
                    let hit = if leader_cut { leader } else { None };
                    let found = hold(self.cluster, hold_for, hit, start, leader_cut).await;
                    let net = self.net.as_deref_mut().ok_or("no namespaces")?;
                    net.heal().map_err(|e| e.to_string())?;
                    Ok(leader_cut.then_some(found))
                }
                FaultKind::WipeRejoin => {
                    let followers: Vec<u64> =
                        ids.iter().copied().filter(|i| Some(*i) != leader).collect();
                    if followers.is_empty() {
                        return Err("no follower".into());
                    }
                    let victim = pick(&mut self.rng, &followers);
                    let new = self.next_id;
                    self.next_id += 1;
                    event.target = format!("replica {victim} -> {new}");
                    self.cluster
                        .replace_wiped(victim, new)
                        .await
                        .map_err(|e| e.to_string())?;
                    Ok(None)
                }
                FaultKind::KillGateway => {
                    let gateways = self.cluster.gateway_addrs();
                    let (host, _) =
                        gateways[self.rng.below(gateways.len() as u64) as usize].clone();
                    event.target = format!("gateway {host}");
                    self.cluster.kill_gateway(host);
                    let _ = hold(self.cluster, hold_for, None, start, false).await;
                    self.cluster
                        .spawn_gateway(host)
                        .map_err(|e| e.to_string())?;
                    Ok(None)
                }
            }
        }
        .await;
        match result {
            Ok(Some(Some((id, after)))) => {
                event.new_leader = Some(id);
                event.new_leader_after_ms = Some(after);
            }
            // the leader was hit and nobody else took over during the hold: how long
            // until the group had a leader again (maybe the same one, once healed)
            Ok(Some(None)) => {
                let deadline = Instant::now() + Duration::from_secs(15);
                while Instant::now() < deadline {
                    if let Some(id) = other_leader(self.cluster, None).await {
                        event.new_leader = Some(id);
                        event.new_leader_after_ms = Some(ms(start.elapsed()));
                        event.leader_after_heal = true;
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(30)).await;
                }
            }
            Ok(None) => {}
            Err(e) => event.error = Some(e),
        }
        event.end_ms = self.clock.us() / 1000;
        event
    }
}

/// Run the whole thing; the report says whether every checker passed.
pub async fn run(opts: &ChaosOptions) -> Result<Report, ChaosError> {
    std::fs::create_dir_all(&opts.dir)
        .map_err(|e| ChaosError::Io(opts.dir.display().to_string(), e))?;
    let mut net = if opts.namespaces {
        Some(Network::create(opts.replicas as usize)?)
    } else {
        None
    };
    let mut cluster = ProcessCluster::new(&opts.bin, &opts.dir);
    if let Some(n) = &net {
        cluster = cluster.on_hosts(Hosts::of(n));
    }
    cluster.timers = Timers::default();
    cluster.gateway_extra =
        "master_deadline_ms = 8000\nlocal_read_staleness_ms = 2000\n\n[slap]\npartition_header = true\n".into();
    cluster.start(opts.replicas).await?;
    let mut gateways = Vec::new();
    for id in cluster.ids() {
        let host = if net.is_some() {
            cluster.host_of(id).unwrap_or(id as usize)
        } else {
            id as usize
        };
        gateways.push(cluster.start_gateway(host)?);
    }
    let masters = cluster.api_addrs();
    wait_gateways(&gateways).await;

    let clock = RunClock::new();
    let setup_start = clock.us();
    let keys = workload::setup(&gateways[0], opts.keys).await?;
    let setup_end = clock.us();
    let keys = Arc::new(keys);
    let clients = tokio::spawn(workload::run_clients(
        keys.clone(),
        ClientOptions {
            clients: opts.clients,
            gateways: gateways.clone(),
            masters: masters.clone(),
            timeout: Duration::from_secs(12),
            creations: workload::SPARE_PARTITIONS / opts.clients.max(1),
            seed: opts.seed,
        },
        clock.clone(),
    ));

    let kinds: Vec<FaultKind> = FaultKind::ALL
        .into_iter()
        .filter(|k| net.is_some() || !k.needs_namespaces())
        .filter(|k| opts.faults.is_empty() || opts.faults.contains(k))
        .collect();
    let not_injectable: Vec<FaultKind> = FaultKind::ALL
        .into_iter()
        .filter(|k| net.is_none() && k.needs_namespaces())
        .collect();
    let mut rng = Rng::new(opts.seed);
    let mut order = kinds.clone();
    for i in (1..order.len()).rev() {
        let j = rng.below(i as u64 + 1) as usize;
        order.swap(i, j);
    }
    let run_start = Instant::now();
    let tail = Duration::from_secs(5);
    let mut faults = Vec::new();
    {
        let mut f = Faults {
            cluster: &mut cluster,
            net: net.as_mut(),
            rng: Rng::new(opts.seed.wrapping_add(1)),
            next_id: opts.replicas + 1,
            clock: clock.clone(),
        };
        let mut n = 0usize;
        while run_start.elapsed() + tail < opts.duration {
            tokio::time::sleep(f.rng.millis(1000, 2000)).await;
            if run_start.elapsed() + tail >= opts.duration {
                break;
            }
            let kind = if n < order.len() {
                order[n]
            } else {
                kinds[f.rng.below(kinds.len() as u64) as usize]
            };
            n += 1;
            let event = f.inject(kind).await;
            tracing::info!(?event, "fault");
            eprintln!(
                "chaos: {:>6.1}s {:?} {}{}",
                event.start_ms as f64 / 1000.0,
                event.kind,
                event.target,
                event
                    .error
                    .as_deref()
                    .map(|e| format!(" (error: {e})"))
                    .unwrap_or_default()
            );
            faults.push(event);
        }
    }
    if let Some(n) = net.as_mut() {
        if let Err(e) = n.heal() {
            tracing::warn!(error = %e, "healing the network");
        }
    }
    let remaining = opts.duration.saturating_sub(run_start.elapsed());
    tokio::time::sleep(remaining).await;
    clock.stop.store(true, Ordering::Release);
    let clients_end = clock.us();
    let mut history = clients.await.unwrap_or_default();

    // the setup's requests: acknowledged writes somewhere in [setup_start, setup_end]
    for (k, key) in keys.iter().enumerate() {
        history.ops.push(OpRecord {
            client: usize::MAX,
            register: key.request_register(),
            kind: OpKind::Write {
                value: format!("init-{k}|started"),
            },
            invoke_us: setup_start,
            complete_us: Some(setup_end),
            outcome: Outcome::Ok,
            via: gateways[0].clone(),
            error: None,
        });
    }

    // Whatever a fault left behind (a failed respawn, a process still stopped) is undone,
    // then every replica is killed and restarted from its own disk: the comparison below
    // then judges what was persisted, not only what was in memory.
    cluster.restore_all();
    for id in cluster.ids() {
        cluster.kill9(id)?;
        cluster.spawn(id)?;
    }
    let replica_checks = converge_and_compare(&cluster, &keys, &mut history, &clock).await;
    let report = judge(
        opts,
        &history,
        &keys,
        faults,
        not_injectable,
        replica_checks,
        setup_end,
        clients_end,
    );
    drop(cluster);
    drop(net);
    if !report.passed {
        dump_history(&opts.dir.join("history.jsonl"), &history);
    }
    Ok(report)
}

/// The whole history, one JSON operation per line, for a failed run's post-mortem.
fn dump_history(path: &std::path::Path, history: &History) {
    let mut out = Vec::new();
    for op in &history.ops {
        if serde_json::to_writer(&mut out, op).is_ok() {
            out.push(b'\n');
        }
    }
    for view in &history.views {
        if serde_json::to_writer(&mut out, view).is_ok() {
            out.push(b'\n');
        }
    }
    if let Err(e) = std::fs::write(path, out) {
        tracing::warn!(path = %path.display(), error = %e, "cannot write the history");
    }
}

async fn wait_gateways(gateways: &[String]) {
    for g in gateways {
        let deadline = Instant::now() + Duration::from_secs(20);
        while tokio::net::TcpStream::connect(g).await.is_err() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Wait until every replica applied the same index, read every key linearizably once
/// more (into the history), then read each replica's whole state locally.
async fn converge_and_compare(
    cluster: &ProcessCluster,
    keys: &[Key],
    history: &mut History,
    clock: &RunClock,
) -> Vec<ReplicaCheck> {
    let _ = cluster.wait_leader(Duration::from_secs(30)).await;
    let mut master = cluster.client().with_deadline(Duration::from_secs(30));
    for key in keys {
        let invoke_us = clock.us();
        if let Ok((request, connection)) = workload::read_key(&mut master, key).await {
            let complete_us = clock.us();
            for (register, value) in [
                (key.request_register(), request),
                (key.connection_register(), connection),
            ] {
                history.ops.push(OpRecord {
                    client: usize::MAX - 1,
                    register,
                    kind: OpKind::Read { value },
                    invoke_us,
                    complete_us: Some(complete_us),
                    outcome: Outcome::Ok,
                    via: "final".into(),
                    error: None,
                });
            }
        }
    }
    // every replica applied the leader's last index
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut top;
    loop {
        let s = cluster.statuses().await;
        let applied: Vec<u64> = s.iter().map(|s| s.applied_index).collect();
        top = s.iter().map(|s| s.last_log_index).max().unwrap_or(0);
        if s.len() == cluster.ids().len() && applied.iter().all(|a| *a == top) {
            break;
        }
        if Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut checks: Vec<ReplicaCheck> = Vec::new();
    let mut first: Option<Vec<master_node::domain::Entry>> = None;
    for id in cluster.ids() {
        let Some(addr) = cluster.api_addr(id) else {
            continue;
        };
        // marked forwarded: the replica answers from its own state or fails, never
        // relays to the leader
        let mut c = MasterClient::single(addr)
            .forwarded()
            .with_deadline(Duration::from_secs(10));
        let read = c.read(&MasterQuery::All, Consistency::Local, 60_000).await;
        let (entries, applied) = match read {
            Ok(r) => r,
            Err(e) => {
                checks.push(ReplicaCheck {
                    id,
                    applied_index: 0,
                    entries: 0,
                    identical_to_first: false,
                    invariants: Err(format!("unreadable: {e}")),
                    lost_writes: Vec::new(),
                });
                continue;
            }
        };
        let identical = applied == top
            && match &first {
                None => {
                    first = Some(entries.clone());
                    true
                }
                Some(f) => *f == entries,
            };
        let n = entries.len();
        let (invariants, lost) = match State::from_entries(entries) {
            Ok(state) => (state.check_invariants(), lost_writes(&state, keys, history)),
            Err(e) => (Err(e.to_string()), Vec::new()),
        };
        checks.push(ReplicaCheck {
            id,
            applied_index: applied,
            entries: n,
            identical_to_first: identical,
            invariants,
            lost_writes: lost,
        });
    }
    checks
}

/// Registers whose value in `state` is none of the values the history allows at the end.
fn lost_writes(state: &State, keys: &[Key], history: &History) -> Vec<String> {
    let mut out = Vec::new();
    for key in keys {
        let (request, connection) = registers_of(state, key);
        for (register, value) in [
            (key.request_register(), request),
            (key.connection_register(), connection),
        ] {
            if let Some(lost) = final_value_lost(history, &register, value.as_deref()) {
                out.push(lost);
            }
        }
    }
    // instances created with unique references: an acknowledged one exists everywhere,
    // a refused one nowhere
    let created: std::collections::BTreeSet<&str> = history
        .ops
        .iter()
        .filter(|o| o.register.starts_with(workload::NEW_PREFIX))
        .map(|o| o.register.as_str())
        .collect();
    for register in created {
        let value = register_by_title(state, register).flatten();
        if let Some(lost) = final_value_lost(history, register, value.as_deref()) {
            out.push(lost);
        }
    }
    out
}

/// Whether `value`, found in `register` once everything settled, loses an acknowledged
/// write: a write `w` (acknowledged or unknown) may be the last one unless an
/// acknowledged write began after `w` completed; anything else means that write was lost.
fn final_value_lost(history: &History, register: &str, value: Option<&str>) -> Option<String> {
    let writes: Vec<&OpRecord> = history
        .ops
        .iter()
        .filter(|o| o.register == register && o.outcome != Outcome::Fail)
        .filter(|o| matches!(o.kind, OpKind::Write { .. }))
        .collect();
    let latest_acked_start = writes
        .iter()
        .filter(|o| o.outcome == Outcome::Ok)
        .map(|o| o.invoke_us)
        .max();
    let allowed: Vec<&str> = writes
        .iter()
        .filter(|w| match (w.complete_us, latest_acked_start) {
            (Some(done), Some(last)) => done >= last,
            _ => true,
        })
        .filter_map(|w| match &w.kind {
            OpKind::Write { value } => Some(value.as_str()),
            OpKind::Read { .. } => None,
        })
        .collect();
    let ok = match value {
        None => latest_acked_start.is_none(),
        Some(v) => allowed.contains(&v),
    };
    (!ok).then(|| {
        format!("{register}: {value:?} is not among the values that may be last {allowed:?}")
    })
}

/// Longest gap between successive completions in `times` within `[from, to]`, and
/// where it began (both in ms).
fn longest_gap(mut times: Vec<u64>, from: u64, to: u64) -> (u64, u64) {
    times.retain(|t| *t >= from && *t <= to);
    times.sort_unstable();
    times.push(to);
    let mut last = from;
    let (mut gap, mut at) = (0, from);
    for t in times {
        if t - last > gap {
            gap = t - last;
            at = last;
        }
        last = t;
    }
    (gap / 1000, at / 1000)
}

/// A local read may be stale, but never shows a value nobody wrote (or one whose write
/// began after the read completed). Returns how many values were checked, and the
/// phantoms.
fn phantom_reads(history: &History, keys: &[Key]) -> (usize, Vec<String>) {
    let mut written: HashMap<(&str, &str), u64> = HashMap::new();
    for o in history.ops.iter().filter(|o| o.outcome != Outcome::Fail) {
        if let OpKind::Write { value } = &o.kind {
            let e = written
                .entry((o.register.as_str(), value.as_str()))
                .or_insert(u64::MAX);
            *e = (*e).min(o.invoke_us);
        }
    }
    let mut checked = 0;
    let mut phantoms = Vec::new();
    for v in &history.views {
        for (register, value) in &v.seen {
            if !keys.iter().any(|k| &k.reference == register) {
                continue;
            }
            checked += 1;
            match written.get(&(register.as_str(), value.as_str())) {
                Some(invoked) if *invoked <= v.complete_us => {}
                _ => phantoms.push(format!(
                    "client {} at {} ms through {} showed {register} = {value:?}, which no write had set",
                    v.client,
                    v.complete_us / 1000,
                    v.via
                )),
            }
        }
    }
    (checked, phantoms)
}

#[allow(clippy::too_many_arguments)]
fn judge(
    opts: &ChaosOptions,
    history: &History,
    keys: &[Key],
    faults: Vec<FaultEvent>,
    not_injectable: Vec<FaultKind>,
    replica_checks: Vec<ReplicaCheck>,
    from_us: u64,
    to_us: u64,
) -> Report {
    let mut by_register: BTreeMap<&str, Vec<RegisterOp>> = BTreeMap::new();
    let mut ops_by_outcome: BTreeMap<String, usize> = BTreeMap::new();
    for (i, o) in history.ops.iter().enumerate() {
        let kind = match &o.kind {
            OpKind::Write { .. } => "write",
            OpKind::Read { .. } => "read",
        };
        let outcome = match o.outcome {
            Outcome::Ok => "ok",
            Outcome::Fail => "failed",
            Outcome::Unknown => "unknown",
        };
        *ops_by_outcome
            .entry(format!("{kind} {outcome}"))
            .or_default() += 1;
        let kind = match (&o.kind, o.outcome) {
            (_, Outcome::Fail) => continue,
            (OpKind::Write { value }, _) => RegisterKind::Write(value.clone()),
            (OpKind::Read { value }, Outcome::Ok) => RegisterKind::Read(value.clone()),
            (OpKind::Read { .. }, Outcome::Unknown) => continue,
        };
        by_register
            .entry(o.register.as_str())
            .or_default()
            .push(RegisterOp {
                id: i,
                invoke: o.invoke_us,
                complete: o.complete_us,
                kind,
            });
    }
    let mut verdicts = Vec::new();
    for (register, ops) in &by_register {
        verdicts.push(RegisterVerdict {
            register: register.to_string(),
            ops: ops.len(),
            verdict: check_register(None, ops, 5_000_000),
        });
    }
    let first_violation = verdicts
        .iter()
        .find(|v| matches!(v.verdict, Verdict::NotLinearizable { .. }))
        .cloned();
    let unknown_verdicts = verdicts
        .iter()
        .filter(|v| matches!(v.verdict, Verdict::Unknown { .. }))
        .count();
    let linearizable = verdicts
        .iter()
        .all(|v| matches!(v.verdict, Verdict::Linearizable));

    let (local_values_checked, phantom_local_reads) = phantom_reads(history, keys);

    let write_times: Vec<u64> = history
        .ops
        .iter()
        .filter(|o| o.outcome == Outcome::Ok && matches!(o.kind, OpKind::Write { .. }))
        .filter_map(|o| o.complete_us)
        .collect();
    let read_times: Vec<u64> = history
        .ops
        .iter()
        .filter(|o| o.outcome == Outcome::Ok && matches!(o.kind, OpKind::Read { .. }))
        .filter_map(|o| o.complete_us)
        .chain(history.views.iter().map(|v| v.complete_us))
        .collect();
    let no_write = longest_gap(write_times, from_us, to_us);
    let no_read = longest_gap(read_times, from_us, to_us);
    let mut faults_by_kind: BTreeMap<String, usize> = BTreeMap::new();
    for f in &faults {
        if f.error.is_none() {
            *faults_by_kind.entry(f.kind.name().to_string()).or_default() += 1;
        }
    }
    let lost: usize = replica_checks.iter().map(|c| c.lost_writes.len()).sum();
    let replicas_identical = replica_checks.len() as u64 == opts.replicas
        && replica_checks.iter().all(|c| c.identical_to_first);
    let invariants_ok = replica_checks.iter().all(|c| c.invariants.is_ok());
    // a run where nothing got through proves nothing
    let progressed = ops_by_outcome.get("write ok").copied().unwrap_or(0) > 0
        && ops_by_outcome.get("read ok").copied().unwrap_or(0) > 0;
    let passed = progressed
        && linearizable
        && lost == 0
        && replicas_identical
        && invariants_ok
        && phantom_local_reads.is_empty();
    Report {
        seed: opts.seed,
        mode: if opts.namespaces {
            "network namespaces".into()
        } else {
            "loopback".into()
        },
        replicas: opts.replicas,
        clients: opts.clients,
        keys: opts.keys,
        duration_s: opts.duration.as_secs_f64(),
        not_injectable,
        faults,
        faults_by_kind,
        ops_by_outcome,
        local_reads: history.views.len(),
        local_values_checked,
        failed_local_reads: history.failed_views,
        longest_without_write_ms: no_write.0,
        longest_without_write_at_ms: no_write.1,
        longest_without_read_ms: no_read.0,
        longest_without_read_at_ms: no_read.1,
        linearizable,
        first_violation,
        registers_checked: verdicts.len(),
        unknown_verdicts,
        lost_writes: lost,
        replicas_identical,
        replica_checks,
        phantom_local_reads,
        passed,
    }
}

impl Report {
    /// A human summary.
    pub fn summary(&self) -> String {
        let mut s = String::new();
        s.push_str(&format!(
            "chaos run: seed {} ({}), {} replicas, {} clients, {} keys, {:.0} s\n",
            self.seed, self.mode, self.replicas, self.clients, self.keys, self.duration_s
        ));
        if !self.not_injectable.is_empty() {
            s.push_str(&format!(
                "  not injectable here: {:?}\n",
                self.not_injectable
            ));
        }
        s.push_str(&format!("  faults: {:?}\n", self.faults_by_kind));
        let failed: Vec<String> = self
            .faults
            .iter()
            .filter_map(|f| {
                f.error
                    .as_ref()
                    .map(|e| format!("{:?} at {} ms: {e}", f.kind, f.start_ms))
            })
            .collect();
        if !failed.is_empty() {
            s.push_str(&format!(
                "  faults that could not be injected: {failed:?}\n"
            ));
        }
        let mut elections: Vec<u64> = self
            .faults
            .iter()
            .filter_map(|f| f.new_leader_after_ms)
            .collect();
        elections.sort_unstable();
        if !elections.is_empty() {
            s.push_str(&format!(
                "  a leader again after a leader fault: median {} ms, max {} ms ({} faults, {} of them only once healed)\n",
                elections[elections.len() / 2],
                elections[elections.len() - 1],
                elections.len(),
                self.faults.iter().filter(|f| f.leader_after_heal).count()
            ));
        }
        s.push_str(&format!("  operations: {:?}\n", self.ops_by_outcome));
        s.push_str(&format!(
            "  local (bounded-staleness) reads: {} ok ({} values checked), {} failed; phantom values: {}\n",
            self.local_reads,
            self.local_values_checked,
            self.failed_local_reads,
            self.phantom_local_reads.len()
        ));
        s.push_str(&format!(
            "  longest window without a successful write: {} ms (from {:.1} s), without a successful read: {} ms (from {:.1} s)\n",
            self.longest_without_write_ms,
            self.longest_without_write_at_ms as f64 / 1000.0,
            self.longest_without_read_ms,
            self.longest_without_read_at_ms as f64 / 1000.0
        ));
        s.push_str(&format!(
            "  linearizability: {} ({} registers, {} undecided)\n",
            if self.linearizable {
                "linearizable"
            } else {
                "NOT linearizable"
            },
            self.registers_checked,
            self.unknown_verdicts
        ));
        if let Some(v) = &self.first_violation {
            s.push_str(&format!(
                "    first counterexample: {} {:?}\n",
                v.register, v.verdict
            ));
        }
        s.push_str(&format!(
            "  lost acknowledged writes: {}; replicas identical: {}; invariants: {}\n",
            self.lost_writes,
            self.replicas_identical,
            if self.replica_checks.iter().all(|c| c.invariants.is_ok()) {
                "hold"
            } else {
                "BROKEN"
            }
        ));
        s.push_str(&format!(
            "  verdict: {}\n",
            if self.passed { "PASS" } else { "FAIL" }
        ));
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(register: &str, value: &str, invoke: u64, complete: Option<u64>) -> OpRecord {
        OpRecord {
            client: 0,
            register: register.into(),
            kind: OpKind::Write {
                value: value.into(),
            },
            invoke_us: invoke,
            complete_us: complete,
            outcome: if complete.is_some() {
                Outcome::Ok
            } else {
                Outcome::Unknown
            },
            via: String::new(),
            error: None,
        }
    }

    fn history(ops: Vec<OpRecord>) -> History {
        History {
            ops,
            ..History::default()
        }
    }

    #[test]
    fn a_final_value_older_than_an_acknowledged_write_is_a_lost_write() {
        let h = history(vec![
            write("K", "v1", 0, Some(10)),
            write("K", "v2", 20, Some(30)),
            write("K", "v3", 25, None),
            write("other", "x", 40, Some(50)),
        ]);
        assert_eq!(final_value_lost(&h, "K", Some("v2")), None);
        // an unknown write may have landed last
        assert_eq!(final_value_lost(&h, "K", Some("v3")), None);
        let lost = final_value_lost(&h, "K", Some("v1")).unwrap();
        assert!(lost.contains("\"v1\""), "{lost}");
        assert!(final_value_lost(&h, "K", None).is_some());
        assert!(final_value_lost(&h, "K", Some("x")).is_some());
        assert_eq!(final_value_lost(&h, "never-written", None), None);
    }

    #[test]
    fn concurrent_acknowledged_writes_may_land_in_either_order() {
        let h = history(vec![
            write("K", "v1", 0, Some(10)),
            write("K", "v2", 5, Some(15)),
        ]);
        assert_eq!(final_value_lost(&h, "K", Some("v1")), None);
        assert_eq!(final_value_lost(&h, "K", Some("v2")), None);
    }

    #[test]
    fn failed_writes_are_not_candidates() {
        let mut failed = write("K", "v2", 20, Some(30));
        failed.outcome = Outcome::Fail;
        let h = history(vec![write("K", "v1", 0, Some(10)), failed]);
        assert_eq!(final_value_lost(&h, "K", Some("v1")), None);
        assert!(final_value_lost(&h, "K", Some("v2")).is_some());
    }

    #[test]
    fn a_local_read_of_a_value_nobody_wrote_is_a_phantom() {
        let key = Key {
            reference: "K".into(),
            instance: 1,
            computer: "COMP".into(),
            partition: "slappart0".into(),
        };
        let mut h = history(vec![
            write("K", "v1", 0, Some(10)),
            write("K", "v2", 50, None),
        ]);
        let view = |seen: &str, at: u64| crate::workload::ViewRecord {
            client: 1,
            invoke_us: at - 5,
            complete_us: at,
            via: "gw".into(),
            seen: vec![("K".into(), seen.into())],
        };
        h.views = vec![
            view("v1", 20),
            view("v2", 60),
            view("v2", 30),
            view("v9", 70),
        ];
        let (checked, phantoms) = phantom_reads(&h, &[key]);
        assert_eq!(checked, 4);
        assert_eq!(phantoms.len(), 2, "{phantoms:?}");
        assert!(phantoms[0].contains("\"v2\"") && phantoms[1].contains("\"v9\""));
    }

    #[test]
    fn gaps_count_the_edges_of_the_window() {
        assert_eq!(
            longest_gap(vec![3_000, 4_000, 9_000], 1_000, 10_000),
            (5, 4)
        );
        assert_eq!(longest_gap(vec![], 0, 7_000), (7, 0));
        assert_eq!(longest_gap(vec![500, 20_000], 1_000, 10_000), (9, 1));
    }
}
