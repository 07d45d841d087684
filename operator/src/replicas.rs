//! A master replica hosted in a partition and the SLAP gateway serving beside it hosted
//! in another (the two software types, `replica` and `gateway`, of the `slapos-master`
//! release): added, removed and upgraded, one command each (`slapos cluster
//! add-replica`, `remove-replica`, `upgrade`).
//!
//! Through the public paths an operator would take by hand: the release is written for
//! this very binary (checksums filled in) and supplied to the computer; the two instances
//! are requested there (the master picks their partitions, their addresses come back);
//! the operator's one-time tokens are made, each for its own partition's addresses; both
//! are requested again with them (the replica's membership record naming the gateway's
//! URL, the gateway's masters its replica first); then the group is watched until the new
//! replica votes, and the gateway until it answers. Every step is reported; running the
//! command again resumes, and on a replica that already votes it re-requests both
//! instances with the given parameters (a reconfiguration: the node restarts what
//! changed, the data stays). Removal requests both destroyed: the replica's node stops
//! it, its destroy hook has the group remove it, and only then is the partition wiped;
//! the command waits until the group no longer counts it.

use crate::authority::partition_token;
use crate::error::{refuse, Context, OperatorError, Require};
use crate::group::{votes, Operator, Placed};
use crate::progress::Progress;
use master_client::MasterClient;
use std::time::{Duration, Instant};

/// Where a hosted replica listens, on its partition's address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Ports {
    pub raft_port: u16,
    pub api_port: u16,
    pub gateway_port: u16,
}

impl Default for Ports {
    fn default() -> Self {
        Ports {
            raft_port: 7201,
            api_port: 7202,
            gateway_port: 8443,
        }
    }
}

/// Raft timers for the expected latency between regions: the replica's own settings
/// (`[timers]` of its configuration), written into the hosted replica's parameters.
pub use master_replica::node::Timers;

/// The backups a hosted replica takes of the group on a schedule, into its partition
/// (the release's `backup-*` parameters: `slapos cluster backup schedule` as a service,
/// its freshness as a promise).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Backups {
    /// Minutes between two backups (0: none).
    pub every_minutes: u64,
    /// How many are kept (the newest).
    pub keep: u64,
    /// An https:// place each is also sent to (`PUT <url>/<name>`, the replica's
    /// certificate presented).
    pub url: Option<String>,
}

/// A replica to host (or reconfigure) in a partition of `computer`.
#[derive(Clone, Debug)]
pub struct AddReplica {
    pub operator: Operator,
    pub computer: String,
    /// Never used before in this group.
    pub id: u64,
    pub region: String,
    pub ports: Ports,
    pub timers: Timers,
    /// The partition size the replica and its gateway are requested with (an SLA's
    /// `size`): one the computer sells and its node defines as `reserved`, so that no
    /// other partition of the node can take the master's share (slapgrid/DESIGN.md,
    /// "Control groups"). None: the node's default limits.
    pub size: Option<String>,
    pub backups: Backups,
}

/// A hosted replica to remove.
#[derive(Clone, Debug)]
pub struct RemoveReplica {
    pub operator: Operator,
    pub id: u64,
    /// Its node is lost for good: the group removes the replica at once, without waiting
    /// for the node to run the instance's destroy hook.
    pub lost: bool,
}

/// Where an added replica and its gateway run.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Added {
    pub id: u64,
    pub computer: String,
    /// The replica's partition (its Raft data and key).
    pub partition: String,
    pub region: String,
    pub api_addr: String,
    pub gateway_url: String,
    /// The gateway's partition (its key only), on the same computer.
    #[serde(default)]
    pub gateway_partition: String,
}

/// The replica's instance, of software type [`REPLICA`].
fn title(id: u64) -> String {
    format!("master-{id}")
}

/// The instance of the gateway beside replica `id`, of software type [`GATEWAY`].
fn gateway_title(id: u64) -> String {
    format!("gateway-{id}")
}

/// The release's software types.
const REPLICA: &str = "replica";
const GATEWAY: &str = "gateway";

/// Adds the replica and its gateway; reconfigures them when the replica votes already.
pub async fn add_replica(
    args: &AddReplica,
    progress: &dyn Progress,
) -> Result<Added, OperatorError> {
    let op = &args.operator;
    let id = args.id;
    let computer = args.computer.clone();
    let (_, members) = op.group().await?;
    let voting = votes(&members, id);
    let release = op.release().await?;
    // Requested before under another gateway's address of the same release (the seed's,
    // during a bootstrap): that address is kept, so a reconfiguration does not move the
    // instances to "another" release that is the same bytes.
    let release = op
        .instances_on(&computer)
        .await
        .unwrap_or_default()
        .iter()
        .filter(|i| i["title"] == title(id).as_str() || i["title"] == gateway_title(id).as_str())
        .filter_map(|i| i["software_release_uri"].as_str())
        .find(|r| Operator::same_release(r, &release))
        .map(str::to_owned)
        .unwrap_or(release);
    progress.step(&format!("release {release}"));
    let client = op.client()?;
    let group_ca = crate::files::read_to_string(&op.ca)?;
    let mut replica: Vec<(&str, String)> = vec![
        ("replica-id", id.to_string()),
        ("region", args.region.clone()),
        ("join-via", op.via.join(",")),
        ("enroll-gateway", op.gateway.clone()),
        ("group-ca", group_ca.clone()),
        ("raft-port", args.ports.raft_port.to_string()),
        ("api-port", args.ports.api_port.to_string()),
        ("heartbeat-ms", args.timers.heartbeat_ms.to_string()),
        (
            "election-timeout-min-ms",
            args.timers.election_timeout_min_ms.to_string(),
        ),
        (
            "election-timeout-max-ms",
            args.timers.election_timeout_max_ms.to_string(),
        ),
    ];
    if args.backups.every_minutes > 0 {
        replica.extend([
            (
                "backup-every-minutes",
                args.backups.every_minutes.to_string(),
            ),
            ("backup-keep", args.backups.keep.max(1).to_string()),
        ]);
        if let Some(url) = &args.backups.url {
            replica.push(("backup-url", url.clone()));
        }
    }
    let mut gateway: Vec<(&str, String)> = vec![
        ("replica-id", id.to_string()),
        ("enroll-gateway", op.gateway.clone()),
        ("group-ca", group_ca),
        ("gateway-port", args.ports.gateway_port.to_string()),
    ];
    let mut sla = vec![("computer_guid", computer.as_str())];
    if let Some(size) = &args.size {
        sla.push(("size", size.as_str()));
    }
    let request = |title: &str, software_type: &str, params: &[(&str, String)]| {
        let pairs: Vec<(&str, &str)> = params.iter().map(|(k, v)| (*k, v.as_str())).collect();
        tokio::task::block_in_place(|| {
            client.request_typed_instance(&release, software_type, title, &pairs, &sla, "started")
        })
        .with_context(|| format!("requesting {title}"))
    };
    // Where each runs: a partition of its own, found when requested before, else
    // allocated now (the master answers its addresses).
    let place = async |title: &str, software_type: &str, params: &[(&str, String)]| {
        let placed = match op.placed(&computer, title).await? {
            Some(placed) => placed,
            None => {
                progress.step(&format!("request {title} ({software_type}) on {computer}"));
                let allocated = request(title, software_type, params)?
                    .require(|| format!("{title} was not allocated on {computer}"))?;
                Placed {
                    partition: allocated
                        .slap_computer_partition_id
                        .get()
                        .cloned()
                        .unwrap_or_default(),
                    ips: allocated
                        .ip_list
                        .get()
                        .map(|l| l.iter().map(|(_, ip)| ip.clone()).collect())
                        .unwrap_or_default(),
                }
            }
        };
        if placed.ips.is_empty() {
            refuse!("{title} on {computer}/{} has no address", placed.partition);
        }
        Ok::<_, OperatorError>(placed)
    };
    progress.step(&format!("supply it to {computer}"));
    tokio::task::block_in_place(|| client.supply(&release, &computer, "available"))
        .with_context(|| format!("supplying {release} to {computer}"))?;
    let replica_at = place(&title(id), REPLICA, &replica).await?;
    let gateway_at = place(&gateway_title(id), GATEWAY, &gateway).await?;
    let api_addr = format!("{}:{}", replica_at.host(), args.ports.api_port);
    let gateway_url = format!("https://{}:{}/", gateway_at.host(), args.ports.gateway_port);
    // The replica's membership record names its gateway; the gateway reads from its
    // replica first.
    replica.push(("gateway-url", gateway_url.clone()));
    let mut masters = vec![api_addr.clone()];
    masters.extend(op.via.iter().filter(|a| **a != api_addr).cloned());
    gateway.push(("masters", masters.join(",")));
    progress.step(&format!(
        "replica {id} in {computer}/{} ({}), its gateway in {computer}/{} ({})",
        replica_at.partition,
        replica_at.ips.join(", "),
        gateway_at.partition,
        gateway_at.ips.join(", ")
    ));
    // One-time tokens, each for its own partition's addresses: the replica's until it
    // votes, the gateway's until it answers (a spare one is never used: it expires).
    if voting {
        progress.step(&format!(
            "replica {id} already votes: requesting {} and {} with these parameters",
            title(id),
            gateway_title(id)
        ));
    } else {
        progress.step(&format!("one-time token for replica:{id}"));
        let token = partition_token(&op.via, &format!("replica:{id}"), &replica_at.ips).await?;
        replica.push(("replica-token", token));
    }
    if !op.gateway_answers(&gateway_url, &computer) {
        progress.step(&format!("one-time token for gateway:r{id}"));
        let token = partition_token(&op.via, &format!("gateway:r{id}"), &gateway_at.ips).await?;
        gateway.push(("gateway-token", token));
    }
    request(&title(id), REPLICA, &replica)?;
    request(&gateway_title(id), GATEWAY, &gateway)?;
    progress.step(&format!(
        "waiting for replica {id} to vote and its gateway to answer"
    ));
    op.wait_until(&format!("replica {id} voting"), |leader, members| {
        leader.is_some() && votes(members, id)
    })
    .await?;
    op.wait_for_gateway(&gateway_url, &computer).await?;
    progress.line(&format!("replica {id} votes; its gateway: {gateway_url}"));
    Ok(Added {
        id,
        computer: args.computer.clone(),
        partition: replica_at.partition,
        region: args.region.clone(),
        api_addr,
        gateway_url,
        gateway_partition: gateway_at.partition,
    })
}

/// Removes a hosted replica and its gateway; returns once the group forgot it.
pub async fn remove_replica(
    args: &RemoveReplica,
    progress: &dyn Progress,
) -> Result<(), OperatorError> {
    let op = &args.operator;
    let id = args.id;
    let (_, members) = op.group().await?;
    if members.iter().all(|m| m.id != id) {
        progress.step(&format!("replica {id} is not a member"));
    }
    // Destroyed on the release they run (the address they were supplied and requested
    // with, whichever gateway it names): nothing is published to destroy them.
    let computer = members
        .iter()
        .find(|m| m.id == id)
        .and_then(|m| m.hosted_by.split_once('/'))
        .map(|(c, _)| c.to_string());
    let existing = match &computer {
        Some(c) => op.instances_on(c).await?,
        None => Vec::new(),
    };
    let client = op.client()?;
    if args.lost && members.iter().any(|m| m.id == id) {
        progress.step(&format!(
            "its node is lost: the group removes replica {id} now (the others keep a quorum)"
        ));
        let mut master = MasterClient::new(op.via.clone()).with_deadline(Duration::from_secs(60));
        master.call_timeout = Duration::from_secs(50);
        let said = master
            .remove_replica(id)
            .await
            .with_context(|| format!("removing replica {id}"))?;
        progress.step(&said);
    }
    // The replica first (its destroy hook has the group remove it), then its gateway,
    // whose certificate ends with the replica's membership anyway.
    for (title, software_type) in [(title(id), REPLICA), (gateway_title(id), GATEWAY)] {
        let release = match existing
            .iter()
            .find(|i| i["title"] == title.as_str())
            .and_then(|i| i["software_release_uri"].as_str())
        {
            Some(r) => r.to_string(),
            None => op.release().await?,
        };
        progress.step(&format!("request {title} destroyed"));
        tokio::task::block_in_place(|| {
            client.request_typed_instance(&release, software_type, &title, &[], &[], "destroyed")
        })
        .with_context(|| format!("requesting {title} destroyed"))?;
    }
    progress.step(&format!("waiting for the group to forget replica {id}"));
    op.wait_until(&format!("replica {id} leaving"), |leader, members| {
        leader.is_some() && members.iter().all(|m| m.id != id)
    })
    .await?;
    progress.line(&format!("replica {id} left the group"));
    Ok(())
}

/// Every replica hosted in a partition, and the gateway beside it, moved to the new
/// release (`operator.release`, or one written for this program into `release_dir`),
/// one replica at a time: its instance is requested again with the new release and its
/// own parameters and software type (read back from the master), its node installs the
/// release and restarts the replica on it (data kept); once it published again (its
/// promise: a voter with a leader) and caught up, its gateway follows the same way (its
/// promise: it serves), and only then the next replica. The group never loses more than
/// one voter at a time. Resumable: instances already on the release are skipped.
pub async fn upgrade(op: &Operator, progress: &dyn Progress) -> Result<(), OperatorError> {
    let release = op.release().await?;
    progress.step(&format!("release {release}"));
    let client = op.client()?;
    let (_, members) = op.group().await?;
    let hosted: Vec<(u64, String, String)> = members
        .iter()
        .filter_map(|m| {
            let (c, p) = m.hosted_by.split_once('/')?;
            Some((m.id, c.to_string(), p.to_string()))
        })
        .collect();
    if hosted.is_empty() {
        refuse!("no replica of the group is hosted in a partition");
    }
    for (id, computer, partition) in hosted {
        let list = op.instances_on(&computer).await?;
        let replica = list
            .iter()
            .find(|i| i["compute_partition_id"] == partition.as_str())
            .require(|| format!("no instance on {computer}/{partition}"))?
            .clone();
        let gateway = list
            .iter()
            .find(|i| i["title"] == gateway_title(id).as_str() && i["state"] != "destroyed")
            .cloned();
        if gateway.is_none() {
            progress.step(&format!(
                "replica {id} ({computer}/{partition}) has no {} beside it",
                gateway_title(id)
            ));
        }
        let on_release = |i: &serde_json::Value| {
            i["software_release_uri"]
                .as_str()
                .is_some_and(|r| Operator::same_release(r, &release))
        };
        if on_release(&replica) && gateway.as_ref().is_none_or(on_release) {
            progress.step(&format!(
                "replica {id} ({computer}/{partition}) runs this release already"
            ));
            continue;
        }
        for entry in std::iter::once(&replica).chain(gateway.as_ref()) {
            if on_release(entry) {
                continue;
            }
            let doc = op.instance(&entry["instance_guid"]).await?;
            let title = doc["title"].as_str().unwrap_or_default().to_string();
            let software_type = doc["software_type"]
                .as_str()
                .unwrap_or("default")
                .to_string();
            // Its own parameters again, but the spent tokens.
            let params: Vec<(String, String)> = doc["parameters"]
                .as_object()
                .map(|m| {
                    m.iter()
                        .filter(|(k, _)| !k.ends_with("-token"))
                        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_string()))
                        .collect()
                })
                .unwrap_or_default();
            progress.step(&format!(
                "replica {id}: supply the release to {computer}, request {title} \
                 ({software_type}, {}) on it",
                entry["compute_partition_id"].as_str().unwrap_or_default()
            ));
            let pairs: Vec<(&str, &str)> = params
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            tokio::task::block_in_place(|| {
                client.supply(&release, &computer, "available")?;
                client.request_typed_instance(
                    &release,
                    &software_type,
                    &title,
                    &pairs,
                    &[("computer_guid", computer.as_str())],
                    "started",
                )
            })
            .with_context(|| format!("requesting {title} on the new release"))?;
            progress.step(&format!("waiting for {title} to run it and publish again"));
            let is_replica = software_type == REPLICA;
            let deadline = Instant::now() + Duration::from_secs(op.timeout_secs);
            loop {
                let published = op
                    .instance(&entry["instance_guid"])
                    .await
                    .ok()
                    .is_some_and(|d| d["connection_parameters"]["release"] == release.as_str());
                // The replica votes and caught up; the gateway's promise (it serves, the
                // masters accept it) is what its publishing says.
                let caught_up = !is_replica
                    || op.group().await.ok().is_some_and(|(leader, members)| {
                        leader.is_some()
                            && members
                                .iter()
                                .any(|m| m.id == id && m.role == "voter" && m.lag == 0)
                    });
                if published && caught_up {
                    break;
                }
                if Instant::now() > deadline {
                    return Err(OperatorError::Timeout(format!(
                        "{title} is not back on the new release within {} s",
                        op.timeout_secs
                    )));
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
        progress.line(&format!("replica {id} runs the new release"));
    }
    Ok(())
}
