//! The faults of a chaos run: what they are, how each is injected and healed, and what
//! the report says of each (the time until the group had a leader again).

use crate::group::Group;
use crate::workload::{Rng, RunClock};
use master_client::MasterClient;
use serde::Serialize;
use slapos_operator::netns::Network;
use std::time::{Duration, Instant};

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

    pub(crate) fn needs_namespaces(self) -> bool {
        matches!(self, FaultKind::IsolateLeader | FaultKind::SplitGroup)
    }
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

fn ms(d: Duration) -> u64 {
    d.as_millis() as u64
}

/// The leader a majority-side replica reports, other than `exclude` (replica id).
async fn other_leader<G: Group>(cluster: &G, exclude: Option<u64>) -> Option<u64> {
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
async fn hold<G: Group>(
    cluster: &G,
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

/// The fault injector of one run: the cluster and network it acts on, its own random
/// stream (from the seed), the next replica id a wiped replica comes back under.
pub(crate) struct Faults<'a, G: Group> {
    pub(crate) cluster: &'a mut G,
    pub(crate) net: Option<&'a mut Network>,
    pub(crate) rng: Rng,
    pub(crate) next_id: u64,
    pub(crate) clock: RunClock,
}

impl<G: Group> Faults<'_, G> {
    pub(crate) async fn inject(&mut self, kind: FaultKind) -> FaultEvent {
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
                    event.target = self.cluster.crash(victim).map_err(|e| e.to_string())?;
                    let watch = Some(victim) == leader;
                    let found = hold(self.cluster, hold_for, Some(victim), start, watch).await;
                    self.cluster.recover(victim).map_err(|e| e.to_string())?;
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
                        .recover_gateway(host)
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
