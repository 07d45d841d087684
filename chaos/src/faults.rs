//! The faults of a chaos run: what they are, how each is injected and healed, and what
//! the report says of each (the time until the group had a leader again).

use crate::group::Group;
pub use crate::kind::{FaultEvent, FaultKind};
use crate::workload::{Rng, RunClock};
use master_client::MasterClient;
use slapos_harness::FaultMode;
use slapos_operator::netns::Network;
use std::time::{Duration, Instant};

/// Room left on a replica's tmpfs by a `disk_full` fault: half the replica's default
/// free-space reserve (256 MiB), so its next write is refused.
const DISK_FULL_ROOM: u64 = 128 << 20;

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
                FaultKind::DiskFull | FaultKind::IoError => {
                    let with_disk: Vec<u64> = ids
                        .iter()
                        .copied()
                        .filter(|id| {
                            self.cluster.is_running(*id) && self.cluster.disk(*id).is_some()
                        })
                        .collect();
                    if with_disk.is_empty() {
                        return Err("no running replica on a faulty disk".into());
                    }
                    let victim = pick(&mut self.rng, &with_disk);
                    let disk = self.cluster.disk(victim).ok_or("no disk")?;
                    if kind == FaultKind::DiskFull {
                        // half the replica's free-space reserve left: it refuses its next
                        // write and stops, its disk consistent
                        disk.fill(DISK_FULL_ROOM).map_err(|e| e.to_string())?;
                        event.target = format!("replica {victim} (disk full)");
                    } else {
                        let mode = if self.rng.below(2) == 0 {
                            FaultMode::FailWrites
                        } else {
                            FaultMode::FailAll
                        };
                        disk.fs.set(mode);
                        event.target = format!("replica {victim} ({mode:?})");
                    }
                    let watch = Some(victim) == leader;
                    let found = hold(self.cluster, hold_for, Some(victim), start, watch).await;
                    let disk = self.cluster.disk(victim).ok_or("no disk")?;
                    disk.fs.set(FaultMode::Healthy);
                    disk.grow_back().map_err(|e| e.to_string())?;
                    // a replica that stopped for its disk exits (at once after an EIO,
                    // within 2 s once a full disk has room) and is started again here
                    if self
                        .cluster
                        .restart_if_stopped(victim)
                        .await
                        .map_err(|e| e.to_string())?
                    {
                        event.target.push_str(", restarted");
                    }
                    Ok(watch.then_some(found))
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
