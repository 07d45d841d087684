//! `slapos chaos run`: a cluster of real processes (replicas and a gateway beside each,
//! each host in its own network namespace when root; or, `--self-hosted`, the group
//! hosted in partitions of nodes, `slapos_harness::HostedCluster`), the workload of
//! [`crate::workload`], faults on a seeded schedule, then the checkers and the report.

use crate::check::{judge, lost_writes, usage_errors, usage_on, ReplicaCheck, UsageOnReplica};
pub use crate::check::{RegisterVerdict, Report};
use crate::faults::Faults;
use crate::group::Group;
pub use crate::kind::{FaultEvent, FaultKind};
pub use crate::options::ChaosOptions;
use crate::workload::{
    self, ClientOptions, History, Identities, Key, OpKind, OpRecord, Outcome, Rng, RunClock,
};
use master_client::MasterClient;
use slapos_domain::Query as MasterQuery;
use slapos_domain::State;
use slapos_harness::{HarnessError, HostedCluster, Hosts, ProcessCluster};
use slapos_operator::netns::Network;
use slapos_proto::rpc::master::Consistency;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Debug, thiserror::Error)]
pub enum ChaosError {
    #[error("cluster: {0}")]
    Cluster(#[from] HarnessError),
    #[error("network: {0}")]
    Net(#[from] slapos_operator::netns::NetError),
    #[error("{0}")]
    Workload(#[from] workload::WorkloadError),
    #[error("{0}: {1}")]
    Io(String, std::io::Error),
}

/// The size of each replica's tmpfs when the run has disk faults: the data of a run
/// (tens of MiB) and twice the replica's free-space reserve (256 MiB), which a
/// replica stopped by a full disk waits for before it exits to be started again.
const DISK_MB: u64 = 1024;

/// Run the whole thing; the report says whether every checker passed.
pub async fn run(opts: &ChaosOptions) -> Result<Report, ChaosError> {
    std::fs::create_dir_all(&opts.dir)
        .map_err(|e| ChaosError::Io(opts.dir.display().to_string(), e))?;
    if opts.self_hosted {
        let computers = [workload::COMPUTER, workload::SPARE_COMPUTER];
        let mut hosted =
            HostedCluster::start(&opts.bin, &opts.dir, opts.replicas, &computers).await?;
        let net = hosted.net.take();
        let gateways = hosted.gateways();
        let masters = hosted.api_addrs();
        let identities = Some(Identities {
            person: hosted.person_tls(),
            computer: hosted.computer_tls(workload::COMPUTER)?,
            spare: hosted.computer_tls(workload::SPARE_COMPUTER)?,
        });
        return drive(opts, hosted, net, gateways, masters, identities).await;
    }
    let net = match (opts.namespaces, &opts.regions, opts.host_regions()) {
        (true, Some(matrix), Some(hosts)) => {
            Some(Network::create_with_regions("chaos", matrix, &hosts)?)
        }
        (true, ..) => Some(Network::create(opts.replicas as usize)?),
        (false, ..) => None,
    };
    let mut cluster = ProcessCluster::new(&opts.bin, &opts.dir);
    if let Some(n) = &net {
        cluster = cluster.on_hosts(Hosts::of(n));
    }
    // Disk faults (root only): every replica's data directory on a tmpfs seen through
    // the FUSE passthrough, when the run may draw them.
    let disk_kinds = opts.faults.is_empty() || opts.faults.iter().any(|k| k.needs_disks());
    if disk_kinds && nix::unistd::geteuid().is_root() {
        cluster.faulty_disk_mb = Some(DISK_MB);
    }
    if let Some(timers) = opts.wan_timers() {
        cluster.timers = timers;
    }
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
    drive(opts, cluster, net, gateways, masters, None).await
}

/// The run itself on a started group: setup, clients, faults, convergence, checks.
async fn drive<G: Group>(
    opts: &ChaosOptions,
    mut cluster: G,
    mut net: Option<Network>,
    gateways: Vec<String>,
    masters: Vec<String>,
    identities: Option<Identities>,
) -> Result<Report, ChaosError> {
    wait_gateways(&gateways).await;

    let clock = RunClock::new();
    let setup_start = clock.us();
    let keys = workload::setup(&gateways[0], opts.keys, identities.as_ref()).await?;
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
            identities,
        },
        clock.clone(),
    ));

    let shape = cluster.not_injectable();
    let injectable = |k: &FaultKind| (net.is_some() || !k.needs_namespaces()) && !shape.contains(k);
    let kinds: Vec<FaultKind> = FaultKind::ALL
        .into_iter()
        .filter(injectable)
        .filter(|k| opts.faults.is_empty() || opts.faults.contains(k))
        .collect();
    let not_injectable: Vec<FaultKind> = FaultKind::ALL
        .into_iter()
        .filter(|k| !injectable(k))
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
    cluster.restart_all_from_disk()?;
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
    for usage in &history.usage {
        if serde_json::to_writer(&mut out, usage).is_ok() {
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
async fn converge_and_compare<G: Group>(
    cluster: &G,
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
        if s.len() == member_ids(cluster).await.len() && applied.iter().all(|a| *a == top) {
            break;
        }
        if Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Each replica's whole state and usage, read from that replica alone. A group whose
    // nodes keep writing (a self-hosted one: agents report, promises publish) may move
    // between two replicas' reads: read them all again until they were read at one
    // applied index (a few tries; a run with no other writer needs one).
    let mut reads = read_replicas(cluster).await;
    for _ in 0..30 {
        let applied: Vec<u64> = reads
            .iter()
            .filter_map(|(_, r)| r.as_ref().ok().map(|r| r.1))
            .collect();
        if applied.len() == reads.len() && applied.windows(2).all(|w| w[0] == w[1]) {
            top = applied.first().copied().unwrap_or(top);
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        reads = read_replicas(cluster).await;
    }
    let mut checks: Vec<ReplicaCheck> = Vec::new();
    let mut first: Option<(Vec<slapos_domain::Entry>, UsageOnReplica)> = None;
    for (id, read) in reads {
        let (entries, applied, usage) = match read {
            Ok(r) => r,
            Err(e) => {
                checks.push(ReplicaCheck {
                    id,
                    applied_index: 0,
                    entries: 0,
                    identical_to_first: false,
                    invariants: Err(format!("unreadable: {e}")),
                    lost_writes: Vec::new(),
                    usage_errors: Vec::new(),
                });
                continue;
            }
        };
        let usage_errors = usage_errors(&usage, history);
        let identical = applied == top
            && match &first {
                None => {
                    first = Some((entries.clone(), usage));
                    true
                }
                Some((f, u)) => *f == entries && *u == usage,
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
            usage_errors,
        });
    }
    checks
}

/// One replica's read: its entries, applied index and usage.
type ReplicaRead = (Vec<slapos_domain::Entry>, u64, UsageOnReplica);

/// Every replica's whole state and usage, each read from that replica alone.
/// The replicas the group counts as members, as its leader says (all the harness runs
/// when no leader answers). A replica whose removal reported an unknown outcome (the
/// group had no quorum) and applied later is no longer one: it is left out of the
/// checks, and said so.
async fn member_ids<G: Group>(cluster: &G) -> Vec<u64> {
    let statuses = cluster.statuses().await;
    let Some(leader) = statuses.iter().find(|s| s.state == "leader") else {
        return cluster.ids();
    };
    let (members, gone): (Vec<u64>, Vec<u64>) = cluster
        .ids()
        .into_iter()
        .partition(|id| leader.members.iter().any(|m| m.id == *id));
    if !gone.is_empty() {
        tracing::warn!(
            ?gone,
            "replicas no longer members of the group are not checked"
        );
    }
    members
}

async fn read_replicas<G: Group>(cluster: &G) -> Vec<(u64, Result<ReplicaRead, String>)> {
    let everything = MasterQuery::Ledger {
        customer: None,
        provider: None,
        from: slapos_domain::Timestamp::default(),
        to: slapos_domain::Timestamp(u64::MAX),
    };
    let mut out = Vec::new();
    for id in member_ids(cluster).await {
        let Some(addr) = cluster.api_addr(id) else {
            continue;
        };
        // marked forwarded: the replica answers from its own state or fails, never
        // relays to the leader
        let mut c = MasterClient::single(addr)
            .forwarded()
            .with_deadline(Duration::from_secs(10));
        let read = async {
            let (entries, applied) = c
                .read(&MasterQuery::All, Consistency::Local, 60_000)
                .await
                .map_err(|e| e.to_string())?;
            // usage lives on the replica's disk, not in its state: read it alone too
            let (ledger, _) = c
                .read(&everything, Consistency::Local, 60_000)
                .await
                .map_err(|e| e.to_string())?;
            let ledger = State::from_read(ledger).map_err(|e| e.to_string())?;
            Ok((entries, applied, usage_on(&ledger)))
        }
        .await;
        out.push((id, read));
    }
    out
}
