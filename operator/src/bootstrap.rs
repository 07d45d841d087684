//! `slapos cluster bootstrap`: from a seed group (replicas outside any partition) to a
//! master that lives only in partitions of its own nodes, one replica per region.
//!
//! The steps, each reported, each skipped when already done (so an interrupted run is
//! resumed by running the same command again; the plan, computer -> replica id and
//! ports, is kept in `<release-dir>/bootstrap.json` from the first run on):
//!
//! 1. the nodes: every named computer is registered, formatted (has partitions) and
//!    declares a region, and no two share one (the tree is spread over distinct regions,
//!    so that losing a region loses one replica);
//! 2. one replica per computer, through [`add_replica`]'s steps (the release supplied,
//!    the replica's and its gateway's instances requested, each in a partition of its
//!    own, tokens made for their addresses, joined, voting, the gateway serving);
//! 3. every new replica caught up (no lag behind the leader's log);
//! 4. the seed replicas leave; a leader removing itself commits the configuration without
//!    it first and steps down, and the hosted replicas elect one of theirs (openraft 0.9
//!    has no leadership transfer: the seed leaving is what moves leadership); waits until
//!    the leader is a hosted replica;
//! 5. the gateways in the partitions, as the `master_url` line the node agents' configs
//!    take (every gateway listed: an agent fails over between them);
//! 6. once every hosted gateway serves, the seed's certificates are revoked: every one of
//!    `replica:<seed>` and of the seed gateway's identity (read, on the first run, from
//!    the certificate the gateway at `--gateway` presents, and kept in the plan);
//! 7. the admin's client configuration written with a hosted gateway as `master_url`;
//! 8. the seed's processes stopped (their pids given) or, when they run elsewhere, how
//!    to stop them told; the caller (`slapos up`) may stop them itself.

use crate::authority;
use crate::error::{refuse, Context, OperatorError, Require};
use crate::files;
use crate::group::Operator;
use crate::progress::Progress;
use crate::replicas::{add_replica, AddReplica, Added, Ports, Timers};
use master_client::MasterClient;
use serde::{Deserialize, Serialize};
use slapos_domain::Query;
use slapos_proto::rpc::master::Consistency;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

/// What to bootstrap.
#[derive(Clone, Debug)]
pub struct Bootstrap {
    pub operator: Operator,
    /// The registered computers that host the group, one replica each, each in its own
    /// region.
    pub computers: Vec<Host>,
    /// The first new replica's id (None: one above the group's highest member id).
    pub first_id: Option<u64>,
    /// The ports of every replica not given its own with `COMPUTER:PORT`.
    pub ports: Ports,
    pub timers: Timers,
    /// The backups each hosted replica takes on a schedule.
    pub backups: crate::replicas::Backups,
    /// The certificate this process presents to the masters, when it is read from the
    /// operator's environment (`$SLAPOS_MASTER_TLS_CERT`): refused up front when it is
    /// not an operator's or a replica's that stays.
    pub presented_cert: Option<PathBuf>,
    /// Where the admin's client configuration is written at the end (its `master_url` a
    /// hosted gateway); None: not written (the caller writes its own).
    pub client_config: Option<PathBuf>,
    /// What becomes of the seed's processes at the end.
    pub seed: SeedProcesses,
}

/// The seed replica's and gateway's processes, once the seed left and its certificates
/// are revoked.
#[derive(Clone, Debug)]
pub enum SeedProcesses {
    /// The caller stops them (`slapos up`, whose children they are).
    Caller,
    /// Their process ids on this machine: stopped here (SIGTERM, then waited for).
    Pids(Vec<u32>),
    /// They run elsewhere: the last step tells how to stop them.
    Elsewhere,
}

/// A computer to host a replica, and the ports of that replica when not the default
/// ones (computers whose partitions share an address: loopback).
#[derive(Clone, Debug)]
pub struct Host {
    pub computer: String,
    pub ports: Option<Ports>,
}

/// What `bootstrap.json` keeps between runs.
#[derive(Serialize, Deserialize, Default)]
struct Plan {
    replicas: Vec<Planned>,
    /// Filled as replicas come to vote.
    hosted: Vec<Added>,
    /// The seed replicas (outside any partition) as found before they left.
    #[serde(default)]
    seeds: Vec<Seed>,
    /// The identity the seed's gateway (`--gateway`) presented (`gateway:r1`), read
    /// while it served; its certificates are revoked with the seed's.
    #[serde(default)]
    seed_gateway: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, PartialEq)]
struct Seed {
    id: u64,
    api_addr: String,
}

#[derive(Serialize, Deserialize, Clone)]
struct Planned {
    computer: String,
    region: String,
    id: u64,
    #[serde(flatten)]
    ports: Ports,
}

/// The computer as the master knows it: (region, partitions, free partitions).
async fn computer(
    via: &[String],
    id: &str,
) -> Result<(Option<String>, usize, usize), OperatorError> {
    let mut client = MasterClient::new(via.to_vec()).with_deadline(Duration::from_secs(30));
    let (entries, _) = client
        .read(
            &Query::Computer {
                computer: id.to_string(),
            },
            Consistency::Linearizable,
            0,
        )
        .await
        .with_context(|| format!("reading computer {id}"))?;
    let state = slapos_domain::State::from_read(entries)?;
    let c = state.computer(id).ok().require(|| {
        format!(
            "computer {id} is not registered (its node registers with a token: \
             `slapos token create` then `slapos node register --token`, and `slapos node format`)"
        )
    })?;
    let free = c.partitions.iter().filter(|p| p.instance.is_none()).count();
    Ok((c.region.clone(), c.partitions.len(), free))
}

/// Refused now rather than halfway: a gateway's certificate (no operator commands), and
/// a seed's own (not accepted once the seed leaves).
fn check_presented(
    path: &std::path::Path,
    members: &[slapos_proto::rpc::master::Member],
    plan: &Plan,
) -> Result<(), OperatorError> {
    let pem = files::read_to_string(path)?;
    let operator_hint = "present an operator's, which outlives any replica \
                         (`slapos cluster ca issue --identity operator:NAME`)";
    match slapos_ca::identity_of_pem(&pem) {
        Ok((slapos_domain::Identity::Replica(id), _)) => {
            let leaves = members.iter().any(|m| m.id == id && m.hosted_by.is_empty())
                && !plan.replicas.iter().any(|p| p.id == id);
            if leaves {
                refuse!(
                    "SLAPOS_MASTER_TLS_CERT is replica {id}'s certificate, and replica \
                     {id} leaves at the end: {operator_hint}"
                );
            }
            Ok(())
        }
        Ok((slapos_domain::Identity::Operator(_), _)) => Ok(()),
        Ok((other, _)) => refuse!(
            "SLAPOS_MASTER_TLS_CERT is {}'s certificate, which may not run the \
             operator's commands: {operator_hint}",
            other.common_name()
        ),
        Err(e) => refuse!("SLAPOS_MASTER_TLS_CERT ({}): {e}", path.display()),
    }
}

/// The identity of the seed's gateway: the one in the certificate the gateway at
/// `--gateway` presents (what it really is, whatever the operator named it when issuing
/// it). None, said, when that gateway is a hosted one (a run resumed through one), is a
/// plain `http://` one, or does not answer.
async fn seed_gateway(op: &Operator, plan: &Plan, progress: &dyn Progress) -> Option<String> {
    let unknown = "its certificates are not revoked by this bootstrap (revoke them with \
                   `slapos cluster ca revoke --identity gateway:ID`)";
    if plan.hosted.iter().any(|h| h.gateway_url == op.gateway) {
        progress.step(&format!(
            "warning: {} is a hosted gateway: the seed's gateway is not known, {unknown}",
            op.gateway
        ));
        return None;
    }
    match op.gateway_identity().await {
        Ok(Some(slapos_domain::Identity::Gateway(id))) => {
            if plan.replicas.iter().any(|p| id == format!("r{}", p.id)) {
                progress.step(&format!(
                    "warning: {} is gateway:{id}, a hosted replica's: the seed's gateway is \
                     not known, {unknown}",
                    op.gateway
                ));
                return None;
            }
            progress.step(&format!(
                "the seed's gateway at {} is gateway:{id} (its certificates are revoked once \
                 the seed left)",
                op.gateway
            ));
            Some(format!("gateway:{id}"))
        }
        Ok(Some(other)) => {
            progress.step(&format!(
                "warning: {} presents {}'s certificate, not a gateway's: {unknown}",
                op.gateway,
                other.common_name()
            ));
            None
        }
        Ok(None) => {
            progress.step(&format!(
                "warning: {} is plain http, it presents no certificate: {unknown}",
                op.gateway
            ));
            None
        }
        Err(e) => {
            progress.step(&format!(
                "warning: the identity of {} is not known ({}): {unknown}",
                op.gateway,
                e.root()
            ));
            None
        }
    }
}

/// Runs the bootstrap; returns where the replicas run.
pub async fn bootstrap(
    args: &Bootstrap,
    progress: &dyn Progress,
) -> Result<Vec<Added>, OperatorError> {
    let op = &args.operator;
    files::create_dir_all(&op.release_dir)?;
    let plan_path = op.release_dir.join("bootstrap.json");
    let mut plan: Plan = match std::fs::read(&plan_path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|source| OperatorError::Corrupt {
            path: plan_path.clone(),
            what: "a bootstrap plan",
            source,
        })?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Plan::default(),
        Err(e) => return Err(OperatorError::io("read", &plan_path)(e)),
    };
    let save = |plan: &Plan| -> Result<(), OperatorError> {
        let tmp = plan_path.with_extension("json.tmp");
        let json = serde_json::to_vec_pretty(plan).expect("a plan serializes");
        files::write(&tmp, json)?;
        files::rename(&tmp, &plan_path)
    };
    // Once the seed left, only the hosted replicas answer for the group: reach it through
    // both, the hosted ones first (a seed that left but still runs answers with the view
    // it had, which would hold a resumed run at "catching up").
    let mut via: Vec<String> = plan.hosted.iter().map(|h| h.api_addr.clone()).collect();
    for addr in &op.via {
        if !via.contains(addr) {
            via.push(addr.clone());
        }
    }
    let op = Operator { via, ..op.clone() };
    let (_, members) = op.group().await.context("the group does not answer")?;
    let hosted_by = |id: u64| {
        members
            .iter()
            .find(|m| m.id == id)
            .map(|m| m.hosted_by.clone())
    };
    progress.step(&format!(
        "the group: {}",
        members
            .iter()
            .map(|m| match m.hosted_by.as_str() {
                "" => format!("replica {} (seed, {})", m.id, m.role),
                h => format!("replica {} (on {h}, {})", m.id, m.role),
            })
            .collect::<Vec<_>>()
            .join(", ")
    ));
    if let Some(path) = &args.presented_cert {
        check_presented(path, &members, &plan)?;
    }
    for m in &members {
        if m.hosted_by.is_empty()
            && !plan.replicas.iter().any(|p| p.id == m.id)
            && !plan.seeds.iter().any(|s| s.id == m.id)
        {
            plan.seeds.push(Seed {
                id: m.id,
                api_addr: m.api_addr.clone(),
            });
        }
    }
    if plan.seed_gateway.is_none() {
        plan.seed_gateway = seed_gateway(&op, &plan, progress).await;
        if !plan.replicas.is_empty() {
            save(&plan)?;
        }
    }

    if plan.replicas.is_empty() {
        // 1. The nodes, their regions distinct.
        let mut regions: BTreeMap<String, String> = BTreeMap::new();
        // Ids are never reused: past the members' and those retired.
        let state = {
            let mut client =
                MasterClient::new(op.via.clone()).with_deadline(Duration::from_secs(30));
            let (entries, _) = client
                .read(&Query::All, Consistency::Linearizable, 0)
                .await
                .context("reading the group's state")?;
            slapos_domain::State::from_entries(entries)?
        };
        let mut next = args
            .first_id
            .unwrap_or_else(|| members.iter().map(|m| m.id).max().unwrap_or(0) + 1);
        let mut new_id = || {
            while state.is_retired_replica(next) || members.iter().any(|m| m.id == next) {
                next += 1;
            }
            next += 1;
            next - 1
        };
        for host in &args.computers {
            let (id, ports) = (host.computer.clone(), host.ports.unwrap_or(args.ports));
            let (region, partitions, free) = computer(&op.via, &id).await?;
            let region = region.require(|| {
                format!(
                    "computer {id} declares no region (register it with one: \
                     `slapos computer register --id {id} --region R` before its node registers)"
                )
            })?;
            if partitions == 0 {
                refuse!(
                    "computer {id} has no partition: format its node first (`slapos node format`)"
                );
            }
            if free < 2 {
                refuse!(
                    "computer {id} has {free} free partition(s) of {partitions}: a replica and \
                     its gateway take two (format its node with more: `partition_amount`)"
                );
            }
            if let Some(other) = regions.insert(region.clone(), id.clone()) {
                refuse!(
                    "computers {other} and {id} are both in region {region}: the replicas go \
                     to distinct regions, so that losing one loses one replica"
                );
            }
            let replica = new_id();
            progress.step(&format!(
                "node {id}: region {region}, {partitions} partitions ({free} free): replica {replica}"
            ));
            plan.replicas.push(Planned {
                computer: id,
                region,
                id: replica,
                ports,
            });
        }
        if plan.replicas.len() < 3 {
            progress.step(&format!(
                "warning: {} replica(s) keep a quorum only while all of them run; three \
                 regions or more survive losing one",
                plan.replicas.len()
            ));
        }
        save(&plan)?;
        progress.step(&format!("plan kept in {}", plan_path.display()));
    } else {
        progress.step(&format!("resuming the plan of {}", plan_path.display()));
    }

    // 2. One replica per node.
    for p in plan.replicas.clone() {
        let voting = members
            .iter()
            .any(|m| m.id == p.id && m.role == "voter" && !m.hosted_by.is_empty());
        if voting && plan.hosted.iter().any(|h| h.id == p.id) {
            progress.step(&format!(
                "replica {} on {} votes already",
                p.id,
                hosted_by(p.id).unwrap_or_default()
            ));
            continue;
        }
        progress.line(&format!(
            "hosting replica {} on {} ({})",
            p.id, p.computer, p.region
        ));
        let added = add_replica(
            &AddReplica {
                operator: op.clone(),
                computer: p.computer.clone(),
                id: p.id,
                region: p.region.clone(),
                ports: p.ports,
                timers: args.timers.clone(),
                size: None,
                backups: args.backups.clone(),
            },
            progress,
        )
        .await?;
        plan.hosted.retain(|h| h.id != p.id);
        plan.hosted.push(added);
        save(&plan)?;
    }
    let ids: Vec<u64> = plan.replicas.iter().map(|p| p.id).collect();
    let hosted_apis: Vec<String> = plan.hosted.iter().map(|h| h.api_addr.clone()).collect();

    // 3. Caught up.
    progress.step(&format!("waiting for replicas {ids:?} to catch up"));
    op.wait_until("catching up", |leader, members| {
        leader.is_some()
            && ids.iter().all(|id| {
                members
                    .iter()
                    .any(|m| m.id == *id && m.role == "voter" && m.lag == 0)
            })
    })
    .await?;

    // 4. The seeds leave; leadership moves to a hosted replica.
    let (_, members) = op.group().await?;
    let seeds: Vec<u64> = members
        .iter()
        .filter(|m| m.hosted_by.is_empty() && !ids.contains(&m.id))
        .map(|m| m.id)
        .collect();
    for seed in &seeds {
        if !plan.seeds.iter().any(|s| s.id == *seed) {
            let api_addr = members
                .iter()
                .find(|m| m.id == *seed)
                .map(|m| m.api_addr.clone())
                .unwrap_or_default();
            plan.seeds.push(Seed {
                id: *seed,
                api_addr,
            });
            save(&plan)?;
        }
    }
    for seed in seeds {
        progress.step(&format!(
            "seed replica {seed} leaves (leadership moves to a hosted replica)"
        ));
        let mut client =
            MasterClient::new(hosted_apis.clone()).with_deadline(Duration::from_secs(60));
        client.call_timeout = Duration::from_secs(50);
        match client.remove_replica(seed).await {
            Ok(said) => progress.step(&said),
            // an answer lost on the way (the leader that left stepped down): what counts
            // is whether the group still has it
            Err(e) => {
                let (_, members) = Operator {
                    via: hosted_apis.clone(),
                    ..op.clone()
                }
                .group()
                .await?;
                if members.iter().any(|m| m.id == seed) {
                    return Err(e).with_context(|| format!("seed replica {seed} could not leave"));
                }
                progress.step(&format!("replica {seed} is no longer a member"));
            }
        }
    }
    let op = Operator {
        via: hosted_apis.clone(),
        ..op
    };
    op.wait_until("a hosted leader, every member hosted", |leader, members| {
        leader.is_some_and(|l| ids.contains(&l)) && members.iter().all(|m| !m.hosted_by.is_empty())
    })
    .await?;
    let (leader, _) = op.group().await?;
    progress.step(&format!(
        "the master lives in {} partitions; replica {} leads",
        plan.hosted.len(),
        leader.unwrap_or_default()
    ));

    // 5. What the nodes' configurations take.
    let urls: Vec<String> = plan.hosted.iter().map(|h| h.gateway_url.clone()).collect();
    for h in &plan.hosted {
        progress.line(&format!(
            "  replica {}  {}/{} ({})  API {}  gateway {} in {}/{}",
            h.id,
            h.computer,
            h.partition,
            h.region,
            h.api_addr,
            h.gateway_url,
            h.computer,
            h.gateway_partition
        ));
    }
    progress.line(&format!(
        "  node agents' slapos.cfg: master_url = {}",
        urls.join(" ")
    ));
    progress.line(&format!(
        "  operators: slapos cluster status --via {}",
        hosted_apis.join(",")
    ));

    // 6. Once the hosted gateways serve, the seed's certificates go.
    for h in &plan.hosted {
        op.wait_for_gateway(&h.gateway_url, &h.computer)
            .await
            .with_context(|| format!("the gateway of replica {} does not serve", h.id))?;
    }
    progress.step(&format!(
        "the {} hosted gateways serve: revoking the seed's certificates",
        plan.hosted.len()
    ));
    let mut retired: Vec<slapos_domain::Identity> = plan
        .seeds
        .iter()
        .map(|s| slapos_domain::Identity::Replica(s.id))
        .collect();
    if let Some(g) = &plan.seed_gateway {
        let identity = slapos_domain::Identity::parse(g)?;
        let hosted_gateway = ids
            .iter()
            .any(|id| identity == slapos_domain::Identity::Gateway(format!("r{id}")));
        if hosted_gateway {
            progress.step(&format!(
                "warning: {g} is a hosted gateway's identity: kept"
            ));
        } else {
            retired.push(identity);
        }
    }
    for identity in retired {
        let name = identity.common_name();
        let count = authority::revoke(
            hosted_apis.clone(),
            slapos_domain::Op::Revoke {
                serial: None,
                identity: Some(identity),
            },
        )
        .await
        .with_context(|| format!("revoking the certificates of {name}"))?;
        progress.step(&match count {
            0 => format!("every certificate of {name} is revoked (none was left valid)"),
            n => format!("every certificate of {name} is revoked ({n} now)"),
        });
    }

    // 7. The admin's client configuration, pointing at a hosted gateway.
    if let Some(path) = &args.client_config {
        write_client_config(&op, path, &urls, progress).await?;
    }

    // 8. The seed's processes.
    stop_seed(args, &plan, progress).await;
    Ok(plan.hosted)
}

/// Writes the admin's client configuration with the first hosted gateway as
/// `master_url` (paths made absolute, so that it works from anywhere), and checks that
/// the admin's calls pass through it.
async fn write_client_config(
    op: &Operator,
    path: &std::path::Path,
    urls: &[String],
    progress: &dyn Progress,
) -> Result<(), OperatorError> {
    let Some(url) = urls.first() else {
        return Ok(());
    };
    let absolute = |p: &std::path::Path| std::path::absolute(p).unwrap_or_else(|_| p.to_owned());
    let (cert, key, ca) = (absolute(&op.cert), absolute(&op.key), absolute(&op.ca));
    let person = files::read_to_string(&cert)
        .ok()
        .and_then(|pem| slapos_ca::identity_of_pem(&pem).ok())
        .map(|(identity, _)| identity.common_name())
        .unwrap_or_else(|| "the admin".to_string());
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        files::create_dir_all(dir)?;
    }
    authority::write_client_config(path, &person, url, &cert, &key, &ca)?;
    progress.step(&format!(
        "the admin's client configuration {} points at {url} (slapos request --cfg {})",
        path.display(),
        path.display()
    ));
    progress.line(&format!("  hosted gateways: {}", urls.join(" ")));
    let checked =
        match slap_gateway::client::JsonRpcClient::new(url, Some(&ca), Some((&cert, &key))) {
            Ok(client) => client.instance_trees().await.map(|_| ()),
            Err(e) => Err(e),
        };
    if let Err(e) = checked {
        progress.warn(&format!(
            "the admin's calls through {url} fail ({e}): check {}",
            path.display()
        ));
    }
    Ok(())
}

/// Whether process `pid` still runs (a zombie does not).
fn running(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // `pid (comm) S ...`: the state follows the last parenthesis
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

/// The seed's processes stopped (their pids given), or how to stop them told: the
/// bootstrap's last output.
async fn stop_seed(args: &Bootstrap, plan: &Plan, progress: &dyn Progress) {
    let seeds = plan
        .seeds
        .iter()
        .map(|s| {
            format!(
                "replica {} (`slapos master run`, master API {})",
                s.id, s.api_addr
            )
        })
        .collect::<Vec<_>>()
        .join(", ");
    let gateway = match &plan.seed_gateway {
        Some(g) => format!(
            "its gateway {g} (`slapos gateway run`, {})",
            args.operator.gateway
        ),
        None => format!(
            "its gateway (`slapos gateway run`, {})",
            args.operator.gateway
        ),
    };
    let archive = "their data directories (the seed replica's `data_dir`: its Raft log \
                   and state as the seed left, the CA key among them) can be archived or \
                   removed; do not start them again";
    match &args.seed {
        SeedProcesses::Caller => {}
        SeedProcesses::Pids(pids) => {
            let mut left = Vec::new();
            for &pid in pids {
                if !running(pid) {
                    progress.step(&format!("seed process {pid} is stopped already"));
                    continue;
                }
                let cmdline = std::fs::read(format!("/proc/{pid}/cmdline"))
                    .map(|b| {
                        String::from_utf8_lossy(&b)
                            .replace('\0', " ")
                            .trim()
                            .to_string()
                    })
                    .unwrap_or_default();
                if !(cmdline.contains("master") || cmdline.contains("gateway")) {
                    progress.warn(&format!(
                        "process {pid} ({cmdline}) is not a replica's nor a gateway's: not stopped"
                    ));
                    left.push(pid);
                    continue;
                }
                progress.step(&format!("stopping seed process {pid} ({cmdline})"));
                let _ = std::process::Command::new("kill")
                    .arg(pid.to_string())
                    .status();
                let deadline = std::time::Instant::now() + Duration::from_secs(30);
                while running(pid) && std::time::Instant::now() < deadline {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                if running(pid) {
                    progress.warn(&format!("seed process {pid} still runs after 30 s"));
                    left.push(pid);
                }
            }
            if left.is_empty() {
                progress.step(&format!(
                    "the seed is stopped: {seeds} and {gateway}; {archive}"
                ));
            } else {
                progress.step(&format!(
                    "to finish, stop the seed's processes {left:?} yourself (`kill PID`); \
                     then {archive}"
                ));
            }
        }
        SeedProcesses::Elsewhere => {
            progress.step(&format!(
                "to finish, stop the seed, which the group no longer counts and whose \
                 certificates are revoked: {seeds} and {gateway}, on the machine they \
                 run on (`ss -ltnp` names the process behind a port; or run this command \
                 again with --seed-pid PID,PID); then {archive}"
            ));
        }
    }
}
