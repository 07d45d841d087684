//! `slapos cluster add-replica` / `remove-replica` / `upgrade`: a master replica hosted in
//! a partition and the SLAP gateway serving beside it hosted in another (the two
//! software types, `replica` and `gateway`, of the `slapos-master` release of
//! `deploy/software/slapos-master`), one command each.
//!
//! Wiring only, through the public paths an operator would take by hand: the release is
//! written for this very binary (checksums filled in) and supplied to the computer; the
//! two instances are requested there (the master picks their partitions, their addresses
//! come back); the operator's one-time tokens are made, each for its own partition's
//! addresses (`slapos cluster ca token`); both are requested again with them (the
//! replica's membership record naming the gateway's URL, the gateway's masters its
//! replica first); then the group is watched until the new replica votes, and the gateway
//! until it answers. Every step prints what it does; running the command again resumes,
//! and on a replica that already votes it re-requests both instances with the given
//! parameters (a reconfiguration: the node restarts what changed, the data stays).
//! Removal requests both destroyed: the replica's node stops it, its destroy hook has the
//! group remove it, and only then is the partition wiped; the command waits until the
//! group no longer counts it.

use anyhow::{bail, Context, Result};
use clap::Args;
use master_client::MasterClient;
use slapgrid::client::SlapClient;
use slapos_proto::rpc::master::Member;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const MANIFEST: &str = include_str!("../../deploy/software/slapos-master/software.toml");
const SCRIPT: &str = include_str!("../../deploy/software/slapos-master/slapos-master.sh");

/// How the operator reaches the group: the master API (with `$SLAPOS_MASTER_TLS_*`, an
/// operator's or a replica's certificate) and a gateway as the admin person.
#[derive(Args, Clone)]
pub struct Operator {
    #[arg(long, value_delimiter = ',', required = true)]
    pub(crate) via: Vec<String>,
    /// A gateway of the group (https://...): the admin's requests go through it, and the
    /// new replica enrolls through it.
    #[arg(long)]
    pub(crate) gateway: String,
    /// The admin's certificate and key, and the group's CA.
    #[arg(long)]
    pub(crate) cert: PathBuf,
    #[arg(long)]
    pub(crate) key: PathBuf,
    #[arg(long)]
    pub(crate) ca: PathBuf,
    /// The slapos-master release to use (URL or path); default: one written for this
    /// binary into --release-dir.
    #[arg(long)]
    pub(crate) release: Option<String>,
    #[arg(long, default_value = "slapos-master-release")]
    pub(crate) release_dir: PathBuf,
    /// How long to wait for the group to count (or forget) the replica.
    #[arg(long, default_value_t = 300)]
    pub(crate) timeout_secs: u64,
}

#[derive(Args)]
pub struct AddReplicaArgs {
    #[command(flatten)]
    pub(crate) operator: Operator,
    /// The computer whose partition hosts the replica.
    #[arg(long)]
    pub(crate) computer: String,
    /// The new replica's id (never used before in this group).
    #[arg(long)]
    pub(crate) id: u64,
    #[arg(long, default_value = "local")]
    pub(crate) region: String,
    #[command(flatten)]
    pub(crate) ports: Ports,
    #[command(flatten)]
    pub(crate) timers: Timers,
}

/// Where a hosted replica listens, on its partition's address.
#[derive(Args, Clone, Copy, serde::Serialize, serde::Deserialize)]
pub struct Ports {
    #[arg(long, default_value_t = 7201)]
    pub(crate) raft_port: u16,
    #[arg(long, default_value_t = 7202)]
    pub(crate) api_port: u16,
    #[arg(long, default_value_t = 8443)]
    pub(crate) gateway_port: u16,
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

/// Raft timers for the expected latency between regions (ms).
#[derive(Args, Clone, Copy)]
pub struct Timers {
    #[arg(long, default_value_t = 100)]
    pub(crate) heartbeat_ms: u64,
    #[arg(long, default_value_t = 300)]
    pub(crate) election_timeout_min_ms: u64,
    #[arg(long, default_value_t = 600)]
    pub(crate) election_timeout_max_ms: u64,
}

impl Default for Timers {
    fn default() -> Self {
        Timers {
            heartbeat_ms: 100,
            election_timeout_min_ms: 300,
            election_timeout_max_ms: 600,
        }
    }
}

#[derive(Args)]
pub struct RemoveReplicaArgs {
    #[command(flatten)]
    pub(crate) operator: Operator,
    #[arg(long)]
    pub(crate) id: u64,
    /// Its node is lost for good (its region gone): the group removes the replica at
    /// once, without waiting for the node to run the instance's destroy hook; the
    /// instance is requested destroyed all the same (a node that comes back wipes it).
    #[arg(long)]
    pub(crate) lost: bool,
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

fn sha256_hex(path: &Path) -> Result<String> {
    Ok(slapgrid::digest::sha256_file(path)?)
}

/// The release for this binary, written (readable by a node's software user) into `dir`:
/// the manifest, its script and a copy of this binary beside them (a node installs only
/// files of the release's own directory, named relative to the manifest).
fn write_release(dir: &Path) -> Result<String> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(dir)?;
    let dir = std::path::absolute(dir)?;
    let script = dir.join("slapos-master.sh");
    std::fs::write(&script, SCRIPT)?;
    let binary = std::env::current_exe()?;
    let sum = sha256_hex(&binary)?;
    let copy = dir.join("slapos");
    if !copy.exists() || sha256_hex(&copy)? != sum {
        // A copy, not a link, swapped in whole (a node may be reading the previous one).
        let tmp = dir.join(".slapos.partial");
        std::fs::copy(&binary, &tmp)?;
        std::fs::rename(&tmp, &copy)?;
    }
    let manifest = MANIFEST
        .replace("@SLAPOS_SHA256@", &sum)
        .replace("@SCRIPT_SHA256@", &sha256_hex(&script)?);
    let path = dir.join("software.toml");
    std::fs::write(&path, manifest)?;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755))?;
    for f in [&script, &path, &copy] {
        std::fs::set_permissions(f, std::fs::Permissions::from_mode(0o644))?;
    }
    Ok(path.display().to_string())
}

impl Operator {
    fn client(&self) -> Result<SlapClient> {
        Ok(SlapClient::new(
            &[slapgrid::config::normalize_master_url(&self.gateway)],
            Some((self.cert.as_path(), self.key.as_path())),
            Some(self.ca.as_path()),
        )?)
    }

    /// The admin's JSON-RPC client of the gateway (instance lists and documents).
    fn rpc(&self) -> Result<slap_gateway::client::JsonRpcClient> {
        Ok(slap_gateway::client::JsonRpcClient::new(
            &self.gateway,
            Some(self.ca.as_path()),
            Some((self.cert.as_path(), self.key.as_path())),
        )?)
    }

    fn release(&self) -> Result<String> {
        match &self.release {
            Some(r) => Ok(r.clone()),
            None => write_release(&self.release_dir),
        }
    }

    /// The leader (when one is known) and the members as the leader sees them (role,
    /// lag, hosting).
    pub(crate) async fn group(&self) -> Result<(Option<u64>, Vec<Member>)> {
        let mut client = MasterClient::new(self.via.clone()).with_deadline(Duration::from_secs(10));
        let status = client.status().await.context("no replica answered")?;
        let leader = status.has_leader.then_some(status.leader_id);
        let view = match status.members.iter().find(|m| Some(m.id) == leader) {
            Some(l) if l.id != status.id => client.status_of(&l.api_addr).await.unwrap_or(status),
            _ => status,
        };
        Ok((leader, view.members))
    }

    /// Polls the group (every 500 ms, up to --timeout-secs) until `done` holds.
    pub(crate) async fn wait_until(
        &self,
        what: &str,
        done: impl Fn(Option<u64>, &[Member]) -> bool,
    ) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(self.timeout_secs);
        loop {
            if let Ok((leader, members)) = self.group().await {
                if done(leader, &members) {
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                bail!("{what}: not within {} s", self.timeout_secs);
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// Whether the gateway at `url` serves the admin the group's view of `computer`
    /// (that gateway alone: a fresh client, which has learned no other).
    fn gateway_answers(&self, url: &str, computer: &str) -> bool {
        let Ok(client) = SlapClient::new(
            &[url.to_string()],
            Some((self.cert.as_path(), self.key.as_path())),
            Some(self.ca.as_path()),
        ) else {
            return false;
        };
        let client = client.with_timeout(Duration::from_secs(5));
        tokio::task::block_in_place(|| client.full_computer_information(computer)).is_ok()
    }

    /// Polls the gateway at `url` (every 500 ms, up to --timeout-secs) until it answers.
    async fn wait_for_gateway(&self, url: &str, computer: &str) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(self.timeout_secs);
        while !self.gateway_answers(url, computer) {
            if Instant::now() > deadline {
                bail!(
                    "the gateway at {url} does not answer within {} s",
                    self.timeout_secs
                );
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        Ok(())
    }

    /// The instances on `computer` (`compute_node_instance_list`: title, instance_guid,
    /// compute_partition_id, software_release_uri, state).
    async fn instances_on(&self, computer: &str) -> Result<Vec<serde_json::Value>> {
        let list = self
            .rpc()?
            .call(
                "slapos.allDocs.v0.compute_node_instance_list",
                &serde_json::json!({ "computer_guid": computer }),
            )
            .await
            .with_context(|| format!("listing the instances on {computer}"))?;
        Ok(list["result_list"].as_array().cloned().unwrap_or_default())
    }

    /// An instance's document (title, software_type, parameters, connection_parameters,
    /// ip_list...).
    async fn instance(&self, guid: &serde_json::Value) -> Result<serde_json::Value> {
        Ok(self
            .rpc()?
            .call(
                "slapos.get.v0.software_instance",
                &serde_json::json!({ "instance_guid": guid }),
            )
            .await?)
    }

    /// Where the instance `title` runs on `computer`, when it is there already.
    async fn placed(&self, computer: &str, title: &str) -> Result<Option<Placed>> {
        let Some(entry) = self
            .instances_on(computer)
            .await?
            .into_iter()
            .find(|i| i["title"] == title && i["state"] != "destroyed")
        else {
            return Ok(None);
        };
        let doc = self.instance(&entry["instance_guid"]).await?;
        let ips = doc["ip_list"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|pair| pair.get(1)?.as_str().map(str::to_string))
            .collect();
        Ok(Some(Placed {
            partition: entry["compute_partition_id"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
            ips,
        }))
    }
}

/// Whether replica `id` is a voting member.
pub(crate) fn votes(members: &[Member], id: u64) -> bool {
    members.iter().any(|m| m.id == id && m.role == "voter")
}

pub(crate) fn step(text: impl AsRef<str>) {
    println!("- {}", text.as_ref());
}

/// One server token for `identity` with `ips`, valid an hour, through the master API.
async fn server_token(via: &[String], identity: &str, ips: &[String]) -> Result<String> {
    crate::master::server_token(
        via.to_vec(),
        slapos_domain::Identity::parse(identity)?,
        Vec::new(),
        ips.to_vec(),
        Duration::from_secs(3600),
    )
    .await
}

pub async fn add_replica(args: AddReplicaArgs) -> Result<()> {
    add(&args).await.map(|_| ())
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

/// A partition an instance was given, and its addresses.
struct Placed {
    partition: String,
    ips: Vec<String>,
}

impl Placed {
    /// The partition's IPv6 address in brackets (its first address when it has none).
    fn host(&self) -> String {
        match self.ips.iter().find(|ip| ip.contains(':')) {
            Some(v6) => format!("[{v6}]"),
            None => self.ips.first().cloned().unwrap_or_default(),
        }
    }
}

/// Adds the replica and its gateway; reconfigures them when the replica votes already.
pub(crate) async fn add(args: &AddReplicaArgs) -> Result<Added> {
    let op = &args.operator;
    let id = args.id;
    let computer = args.computer.clone();
    let (_, members) = op.group().await?;
    let voting = votes(&members, id);
    let release = op.release()?;
    step(format!("release {release}"));
    let client = op.client()?;
    let group_ca =
        std::fs::read_to_string(&op.ca).with_context(|| format!("read {}", op.ca.display()))?;
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
    let mut gateway: Vec<(&str, String)> = vec![
        ("replica-id", id.to_string()),
        ("enroll-gateway", op.gateway.clone()),
        ("group-ca", group_ca),
        ("gateway-port", args.ports.gateway_port.to_string()),
    ];
    let request = |title: &str, software_type: &str, params: &[(&str, String)]| -> Result<_> {
        let pairs: Vec<(&str, &str)> = params.iter().map(|(k, v)| (*k, v.as_str())).collect();
        tokio::task::block_in_place(|| {
            client.request_typed_instance(
                &release,
                software_type,
                title,
                &pairs,
                &[("computer_guid", computer.as_str())],
                "started",
            )
        })
        .with_context(|| format!("requesting {title}"))
    };
    // Where each runs: a partition of its own, found when requested before, else
    // allocated now (the master answers its addresses).
    let place = async |title: &str, software_type: &str, params: &[(&str, String)]| {
        let placed = match op.placed(&computer, title).await? {
            Some(placed) => placed,
            None => {
                step(format!("request {title} ({software_type}) on {computer}"));
                let allocated = request(title, software_type, params)?
                    .with_context(|| format!("{title} was not allocated on {computer}"))?;
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
            bail!("{title} on {computer}/{} has no address", placed.partition);
        }
        Ok::<_, anyhow::Error>(placed)
    };
    step(format!("supply it to {computer}"));
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
    step(format!(
        "replica {id} in {computer}/{} ({}), its gateway in {computer}/{} ({})",
        replica_at.partition,
        replica_at.ips.join(", "),
        gateway_at.partition,
        gateway_at.ips.join(", ")
    ));
    // One-time tokens, each for its own partition's addresses: the replica's until it
    // votes, the gateway's until it answers (a spare one is never used: it expires).
    if voting {
        step(format!(
            "replica {id} already votes: requesting {} and {} with these parameters",
            title(id),
            gateway_title(id)
        ));
    } else {
        step(format!("one-time token for replica:{id}"));
        let token = server_token(&op.via, &format!("replica:{id}"), &replica_at.ips).await?;
        replica.push(("replica-token", token));
    }
    if !op.gateway_answers(&gateway_url, &computer) {
        step(format!("one-time token for gateway:r{id}"));
        let token = server_token(&op.via, &format!("gateway:r{id}"), &gateway_at.ips).await?;
        gateway.push(("gateway-token", token));
    }
    request(&title(id), REPLICA, &replica)?;
    request(&gateway_title(id), GATEWAY, &gateway)?;
    step(format!(
        "waiting for replica {id} to vote and its gateway to answer"
    ));
    op.wait_until(&format!("replica {id} voting"), |leader, members| {
        leader.is_some() && votes(members, id)
    })
    .await?;
    op.wait_for_gateway(&gateway_url, &computer).await?;
    println!("replica {id} votes; its gateway: {gateway_url}");
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

pub async fn remove_replica(args: RemoveReplicaArgs) -> Result<()> {
    let op = &args.operator;
    let id = args.id;
    let (_, members) = op.group().await?;
    if members.iter().all(|m| m.id != id) {
        step(format!("replica {id} is not a member"));
    }
    let release = op.release()?;
    let client = op.client()?;
    if args.lost && members.iter().any(|m| m.id == id) {
        step(format!(
            "its node is lost: the group removes replica {id} now (the others keep a quorum)"
        ));
        let mut master = MasterClient::new(op.via.clone()).with_deadline(Duration::from_secs(60));
        master.call_timeout = Duration::from_secs(50);
        let said = master
            .remove_replica(id)
            .await
            .with_context(|| format!("removing replica {id}"))?;
        step(said);
    }
    // The replica first (its destroy hook has the group remove it), then its gateway,
    // whose certificate ends with the replica's membership anyway.
    for (title, software_type) in [(title(id), REPLICA), (gateway_title(id), GATEWAY)] {
        step(format!("request {title} destroyed"));
        tokio::task::block_in_place(|| {
            client.request_typed_instance(&release, software_type, &title, &[], &[], "destroyed")
        })
        .with_context(|| format!("requesting {title} destroyed"))?;
    }
    step(format!("waiting for the group to forget replica {id}"));
    op.wait_until(&format!("replica {id} leaving"), |leader, members| {
        leader.is_some() && members.iter().all(|m| m.id != id)
    })
    .await?;
    println!("replica {id} left the group");
    Ok(())
}

#[derive(Args)]
pub struct UpgradeArgs {
    /// `--release` / `--release-dir` name the new release (default: one written for this
    /// binary into --release-dir, which must differ from the current one's).
    #[command(flatten)]
    pub(crate) operator: Operator,
}

/// `slapos cluster upgrade`: every replica hosted in a partition, and the gateway beside
/// it, move to the new release, one replica at a time: its instance is requested again
/// with the new release and its own parameters and software type (read back from the
/// master), its node installs the release and restarts the replica on it (data kept);
/// once it published again (its promise: a voter with a leader) and caught up, its
/// gateway follows the same way (its promise: it serves), and only then the next
/// replica. The group never loses more than one voter at a time. Resumable: instances
/// already on the release are skipped.
pub async fn upgrade(args: UpgradeArgs) -> Result<()> {
    let op = &args.operator;
    let release = op.release()?;
    step(format!("release {release}"));
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
        bail!("no replica of the group is hosted in a partition");
    }
    for (id, computer, partition) in hosted {
        let list = op.instances_on(&computer).await?;
        let replica = list
            .iter()
            .find(|i| i["compute_partition_id"] == partition.as_str())
            .with_context(|| format!("no instance on {computer}/{partition}"))?
            .clone();
        let gateway = list
            .iter()
            .find(|i| i["title"] == gateway_title(id).as_str() && i["state"] != "destroyed")
            .cloned();
        if gateway.is_none() {
            step(format!(
                "replica {id} ({computer}/{partition}) has no {} beside it",
                gateway_title(id)
            ));
        }
        let on_release = |i: &serde_json::Value| i["software_release_uri"] == release.as_str();
        if on_release(&replica) && gateway.as_ref().is_none_or(on_release) {
            step(format!(
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
            step(format!(
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
            step(format!("waiting for {title} to run it and publish again"));
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
                    bail!(
                        "{title} is not back on the new release within {} s",
                        op.timeout_secs
                    );
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
        println!("replica {id} runs the new release");
    }
    Ok(())
}
