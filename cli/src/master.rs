//! `slapos master ...` and `slapos cluster ...`: wiring to master_replica.

use anyhow::{anyhow, bail, Context, Result};
use clap::{Args, Subcommand};
use master_client::MasterClient;
use master_replica::node::{Replica, ReplicaConfig};
use serde::Serialize;
use slapos_proto::rpc::master::{AddReplicaRequest, StatusResponse};
use std::path::PathBuf;
use std::time::{Duration, Instant};

#[derive(Subcommand)]
pub enum MasterCommand {
    /// Run one replica until interrupted (SIGINT/SIGTERM).
    Run {
        #[arg(long)]
        config: PathBuf,
    },
    /// Bootstrap a new group of one with this replica (its data directory must be empty).
    Init {
        #[arg(long)]
        config: PathBuf,
    },
    /// Add this (running) replica to a group: as a learner, and once it has caught up,
    /// as a voter.
    Join {
        #[arg(long)]
        config: PathBuf,
        /// Master API addresses of the group (comma-separated).
        #[arg(long, value_delimiter = ',', required = true)]
        via: Vec<String>,
        /// Stay a learner (do not vote).
        #[arg(long)]
        learner: bool,
    },
    /// Get this server's certificate with a one-time enrollment token an operator made
    /// (`slapos cluster ca token`): the key is made here, the CSR and the token go to a
    /// gateway verified against --ca; writes <out>/<name>.key (0600), .crt and ca.pem.
    Enroll {
        /// A gateway of the group (https://...).
        #[arg(long)]
        gateway: String,
        #[arg(long)]
        token: String,
        /// The identity the token is expected to grant (replica:N or gateway:ID).
        #[arg(long)]
        identity: String,
        /// The group's CA certificate (the token only goes to a gateway it verifies).
        #[arg(long)]
        ca: PathBuf,
        #[arg(long, default_value = ".")]
        out: PathBuf,
    },
    /// Remove a replica from its group. Its id is never used again.
    Leave {
        #[arg(long)]
        id: u64,
        #[arg(long, value_delimiter = ',', required = true)]
        via: Vec<String>,
    },
}

#[derive(Subcommand)]
pub enum ClusterCommand {
    /// Members, roles, leader, term, indexes, lag, log and snapshot sizes.
    Status(StatusArgs),
    /// The group's certificate authority: export its certificate, issue and revoke.
    #[command(subcommand)]
    Ca(CaCommand),
    /// Retire a computer that hosts no instance: its certificates and its partitions'
    /// are revoked.
    RemoveComputer(RemoveComputerArgs),
    /// From a seed group to a master hosted only in partitions of the given computers, one
    /// replica per region: each replica added and caught up, the seeds removed (each step
    /// printed; run again to resume).
    Bootstrap(crate::bootstrap::BootstrapArgs),
    /// Add a replica hosted in a partition of a computer (the slapos-master release):
    /// supplied, requested, enrolled with one-time tokens, joined; waits until it votes.
    AddReplica(crate::selfhost::AddReplicaArgs),
    /// Remove a replica hosted in a partition: its instance destroyed, the group no longer
    /// counting it before its partition is wiped; waits until then.
    RemoveReplica(crate::selfhost::RemoveReplicaArgs),
    /// Move every replica hosted in a partition to a new slapos-master release, one at a
    /// time (the group keeps its quorum), each back and caught up before the next.
    Upgrade(crate::selfhost::UpgradeArgs),
}

#[derive(Args)]
pub struct RemoveComputerArgs {
    #[arg(long, value_delimiter = ',', required = true)]
    via: Vec<String>,
    #[arg(long)]
    computer: String,
}

#[derive(Subcommand)]
pub enum CaCommand {
    /// Print the CA certificate (PEM): what clients and servers of the group trust.
    Export {
        #[arg(long, value_delimiter = ',', required = true)]
        via: Vec<String>,
    },
    /// Make a one-time token that enrolls a replica or gateway (operator): whoever
    /// presents it to a gateway (`slapos master enroll`) before --ttl seconds gets that
    /// identity's certificate with these names, once. Printed once; only its SHA-256 is
    /// kept.
    Token {
        #[arg(long, value_delimiter = ',', required = true)]
        via: Vec<String>,
        /// replica:N or gateway:ID.
        #[arg(long)]
        identity: String,
        #[arg(long, value_delimiter = ',')]
        dns: Vec<String>,
        #[arg(long, value_delimiter = ',')]
        ip: Vec<String>,
        #[arg(long, default_value_t = 3600)]
        ttl: u64,
    },
    /// Issue a certificate (operator): a key is made here, only its signing request goes
    /// to the master; writes <out>/<name>.key (0600) and <out>/<name>.crt.
    Issue {
        #[arg(long, value_delimiter = ',', required = true)]
        via: Vec<String>,
        /// computer:ID, partition:COMPUTER:PARTITION, person:ID, replica:N or gateway:ID.
        #[arg(long)]
        identity: String,
        #[arg(long, default_value = ".")]
        out: PathBuf,
        /// Server names (replicas and gateways).
        #[arg(long, value_delimiter = ',')]
        dns: Vec<String>,
        #[arg(long, value_delimiter = ',')]
        ip: Vec<String>,
        /// Validity in days (default: the identity kind's).
        #[arg(long, conflicts_with = "seconds")]
        days: Option<u64>,
        /// Validity in seconds (short-lived certificates: CI jobs, expiry drills).
        #[arg(long)]
        seconds: Option<u64>,
    },
    /// Revoke a certificate by serial, or every certificate of an identity.
    Revoke {
        #[arg(long, value_delimiter = ',', required = true)]
        via: Vec<String>,
        #[arg(
            long,
            conflicts_with = "identity",
            required_unless_present = "identity"
        )]
        serial: Option<String>,
        #[arg(long)]
        identity: Option<String>,
    },
}

#[derive(Args)]
pub struct StatusArgs {
    /// Master API addresses to ask (comma-separated); every member is then asked.
    #[arg(long, value_delimiter = ',', required = true)]
    via: Vec<String>,
    #[arg(long)]
    json: bool,
}

/// Outgoing mTLS for operator commands talking to the masters directly:
/// `$SLAPOS_MASTER_TLS_CERT`, `_KEY`, `_CA` (an operator's, a replica's or a gateway's certificate; the
/// masters admit no other identity).
pub(crate) fn tls_from_env() -> Result<()> {
    let var = |n: &str| std::env::var_os(n).map(PathBuf::from);
    match (
        var("SLAPOS_MASTER_TLS_CERT"),
        var("SLAPOS_MASTER_TLS_KEY"),
        var("SLAPOS_MASTER_TLS_CA"),
    ) {
        (Some(cert), Some(key), Some(ca)) => {
            master_client::tls::set_client(&master_client::tls::TlsFiles { cert, key, ca })?;
            Ok(())
        }
        (None, None, None) => Ok(()),
        _ => bail!("set all of SLAPOS_MASTER_TLS_CERT, _KEY and _CA, or none"),
    }
}

pub async fn run(cmd: MasterCommand) -> Result<()> {
    tls_from_env()?;
    match cmd {
        MasterCommand::Run { config } => {
            let config = ReplicaConfig::load(&config)?;
            let mut replica = Replica::open(&config).await?;
            replica.serve(&config).await?;
            println!(
                "replica {} serving: raft {} api {} data {}",
                config.id,
                config.raft_addr,
                config.api_addr,
                config.data_dir.display()
            );
            crate::wait_for_signal().await?;
            tracing::info!("shutting down");
            replica.shutdown().await;
            Ok(())
        }
        MasterCommand::Init { config } => {
            let config = ReplicaConfig::load(&config)?;
            let replica = Replica::open(&config).await?;
            let already = replica
                .raft
                .metrics()
                .borrow()
                .membership_config
                .membership()
                .nodes()
                .count()
                > 0;
            if already {
                replica.shutdown().await;
                bail!(
                    "{} already holds a group's data; init only bootstraps an empty data directory",
                    config.data_dir.display()
                );
            }
            replica.initialize(config.node_info()).await?;
            // Wait until the one-member group has elected us and applied its membership.
            let deadline = Instant::now() + Duration::from_secs(10);
            let mut metrics = replica.raft.metrics();
            loop {
                let ready = {
                    let m = metrics.borrow();
                    m.current_leader == Some(config.id) && m.last_applied.is_some()
                };
                if ready {
                    break;
                }
                if Instant::now() > deadline {
                    replica.shutdown().await;
                    bail!("the new group did not elect its leader within 10 s");
                }
                let _ = tokio::time::timeout(Duration::from_millis(200), metrics.changed()).await;
            }
            // The group's certificate authority: made here (the key never leaves the
            // masters), installed through the log like any state.
            let installed = install_authority(&replica, &config).await;
            replica.shutdown().await;
            installed?;
            println!(
                "initialized a group of one: replica {} ({}), with its certificate authority",
                config.id,
                config.node_info()
            );
            Ok(())
        }
        MasterCommand::Join {
            config,
            via,
            learner,
        } => {
            let config = ReplicaConfig::load(&config)?;
            if let Some(files) = &config.tls {
                master_client::tls::set_client(files)?;
            }
            let node = config.node_info();
            let mut client = MasterClient::new(via).with_deadline(Duration::from_secs(120));
            client.call_timeout = Duration::from_secs(110);
            let msg = client
                .add_replica(&AddReplicaRequest {
                    id: config.id,
                    raft_addr: node.raft_addr,
                    api_addr: node.api_addr,
                    region: node.region,
                    hosted_by: node.hosted_by,
                    gateway_url: node.gateway_url,
                    voter: !learner,
                })
                .await?;
            println!("{msg}");
            Ok(())
        }
        MasterCommand::Enroll {
            gateway,
            token,
            identity,
            ca,
            out,
        } => {
            let wanted = slapos_domain::Identity::parse(&identity)?;
            let (key, csr) = slapos_ca::new_key_and_csr(&wanted)?;
            let client = slapgrid::client::SlapClient::new(
                &[slapgrid::config::normalize_master_url(&gateway)],
                None,
                Some(ca.as_path()),
            )?;
            let answer = client.post(
                "enrollServerWithToken",
                &[("token", token.trim()), ("csr", &csr)],
                None,
            )?;
            let answer: serde_json::Value =
                serde_json::from_slice(&answer).context("the gateway's answer is not JSON")?;
            let certificate = answer["certificate"]
                .as_str()
                .context("the gateway's answer has no certificate")?;
            let (granted, serial) = slapos_ca::identity_of_pem(certificate)?;
            if granted != wanted {
                bail!(
                    "the token granted {} where {} was expected: nothing written",
                    granted.common_name(),
                    wanted.common_name()
                );
            }
            let (cert_path, key_path) = write_pair(&out, &identity, &key, certificate)?;
            if let Some(ca_pem) = answer["ca"].as_str() {
                std::fs::write(out.join("ca.pem"), ca_pem)?;
            }
            println!(
                "enrolled {identity} (serial {serial:x}): {} {}",
                cert_path.display(),
                key_path.display()
            );
            Ok(())
        }
        MasterCommand::Leave { id, via } => {
            let mut client = MasterClient::new(via).with_deadline(Duration::from_secs(60));
            let msg = client.remove_replica(id).await?;
            println!("{msg}");
            Ok(())
        }
    }
}

#[derive(Serialize)]
struct MemberStatus {
    id: u64,
    role: String,
    state: Option<String>,
    raft_addr: String,
    api_addr: String,
    region: String,
    /// `computer/partition` of a replica hosted in a partition.
    #[serde(skip_serializing_if = "Option::is_none")]
    hosted_by: Option<String>,
    /// The SLAP gateway beside it, when it has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    gateway_url: Option<String>,
    term: Option<u64>,
    last_log_index: Option<u64>,
    committed_index: Option<u64>,
    applied_index: Option<u64>,
    /// Entries behind the leader's last log index (from the leader's replication state).
    lag: u64,
    snapshot_index: Option<u64>,
    purged_index: Option<u64>,
    log_size_bytes: Option<u64>,
    snapshot_size_bytes: Option<u64>,
    error: Option<String>,
}

#[derive(Serialize)]
struct ClusterStatus {
    leader: Option<u64>,
    term: u64,
    members: Vec<MemberStatus>,
}

/// Creates the CA and applies `InstallAuthority` on the new group's only replica.
async fn install_authority(replica: &Replica, config: &ReplicaConfig) -> Result<()> {
    let (_, material) = slapos_ca::Authority::create(
        &format!("group of replica {}", config.id),
        std::time::SystemTime::now(),
        20,
    )?;
    let command = slapos_domain::Command {
        request_id: slapos_domain::RequestId::new(format!("master-{}-init", config.id), 1),
        at: master_client::proposer_time(),
        op: slapos_domain::Op::InstallAuthority { material },
    };
    let written = replica
        .raft
        .client_write(vec![command])
        .await
        .map_err(|e| anyhow!("installing the certificate authority: {e}"))?;
    match written.data.first() {
        Some(Ok(_)) => Ok(()),
        Some(Err(e)) => bail!("installing the certificate authority: {e}"),
        None => bail!("installing the certificate authority: no outcome"),
    }
}

/// A key made here, its CSR signed by the group for `identity`: writes
/// `<out>/<identity with - for :>.key` (0600) and `.crt`; (certificate, key, serial).
pub(crate) async fn issue_to_files(
    via: Vec<String>,
    identity: &str,
    out: &std::path::Path,
    dns: Vec<String>,
    ip: Vec<String>,
    validity_secs: Option<u64>,
) -> Result<(PathBuf, PathBuf, String)> {
    let parsed = slapos_domain::Identity::parse(identity)?;
    let (key, csr) = slapos_ca::new_key_and_csr(&parsed)?;
    let mut client = MasterClient::new(via).with_deadline(Duration::from_secs(30));
    let (pem, serial) = client
        .issue(&slapos_proto::rpc::master::IssueRequest {
            csr_pem: csr,
            identity: identity.to_owned(),
            validity_secs: validity_secs.unwrap_or(0),
            dns_names: dns,
            ip_addresses: ip,
            ..Default::default()
        })
        .await?;
    let (cert_path, key_path) = write_pair(out, identity, &key, &pem)?;
    Ok((cert_path, key_path, serial))
}

/// Writes `<out>/<identity with - for :>.key` (0600) and `.crt`; (certificate, key).
fn write_pair(
    out: &std::path::Path,
    identity: &str,
    key: &str,
    cert: &str,
) -> Result<(PathBuf, PathBuf)> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::create_dir_all(out)?;
    let name = identity.replace(':', "-");
    let key_path = out.join(format!("{name}.key"));
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&key_path)?
        .write_all(key.as_bytes())?;
    let cert_path = out.join(format!("{name}.crt"));
    std::fs::write(&cert_path, cert)?;
    Ok((cert_path, key_path))
}

/// A one-time token enrolling `identity` (a replica or gateway) with these names, valid
/// for `ttl`, made through the master API (an operator's command); the token itself.
pub(crate) async fn server_token(
    via: Vec<String>,
    identity: slapos_domain::Identity,
    dns_names: Vec<String>,
    ip_addresses: Vec<String>,
    ttl: Duration,
) -> Result<String> {
    let (token, hash) =
        slap_gateway::server::register::new_token().context("no randomness for a token")?;
    let expires_at = slapos_domain::Timestamp(
        master_client::proposer_time()
            .0
            .saturating_add(ttl.as_micros() as u64),
    );
    let op = slapos_domain::Op::CreateToken {
        hash,
        owner: "operator".into(),
        computer: String::new(),
        expires_at,
        server: Some(slapos_domain::ServerGrant {
            identity,
            dns_names,
            ip_addresses,
        }),
    };
    match submit_op(via, "token", op).await? {
        slapos_domain::Reply::Done => Ok(token),
        other => bail!("unexpected answer {other:?}"),
    }
}

#[derive(Subcommand)]
pub enum UserCommand {
    /// Add a person (admin, on the master API): their certificate and key, the group's
    /// CA and a client configuration for `slapos request --cfg` in <out>.
    Add {
        #[arg(long, value_delimiter = ',', required = true)]
        via: Vec<String>,
        /// The person's id (letters, digits, . _ @ + -).
        #[arg(long)]
        person: String,
        /// The gateway the configuration points at (https://...).
        #[arg(long)]
        gateway: String,
        #[arg(long)]
        out: PathBuf,
        /// Also grant them the group's admin rights (see `slapos user admin`).
        #[arg(long)]
        admin: bool,
    },
    /// Grant a person the group's admin rights (anything through any gateway), or take
    /// them back with --revoke. Recorded in the group, so no gateway's configuration can
    /// make anyone an admin.
    Admin {
        #[arg(long, value_delimiter = ',', required = true)]
        via: Vec<String>,
        #[arg(long)]
        person: String,
        #[arg(long)]
        revoke: bool,
    },
    /// Remove a person: every certificate of theirs is revoked at once.
    Remove {
        #[arg(long, value_delimiter = ',', required = true)]
        via: Vec<String>,
        #[arg(long)]
        person: String,
    },
}

pub async fn user(cmd: UserCommand) -> Result<()> {
    tls_from_env()?;
    match cmd {
        UserCommand::Remove { via, person } => {
            let identity = slapos_domain::Identity::parse(&format!("person:{person}"))?;
            revoke(
                via,
                slapos_domain::Op::Revoke {
                    serial: None,
                    identity: Some(identity),
                },
            )
            .await
        }
        UserCommand::Admin {
            via,
            person,
            revoke,
        } => {
            set_admin(via, &person, !revoke).await?;
            if revoke {
                println!("{person} is no longer an admin");
            } else {
                println!("{person} is an admin");
            }
            Ok(())
        }
        UserCommand::Add {
            via,
            person,
            gateway,
            out,
            admin,
        } => {
            let identity = format!("person:{person}");
            if admin {
                set_admin(via.clone(), &person, true).await?;
            }
            let (cert, key, serial) =
                issue_to_files(via.clone(), &identity, &out, Vec::new(), Vec::new(), None).await?;
            let mut client = MasterClient::new(via).with_deadline(Duration::from_secs(20));
            let ca = out.join("ca.pem");
            std::fs::write(&ca, client.authority().await?)?;
            let cfg = out.join("slapos-client.cfg");
            std::fs::write(
                &cfg,
                format!(
                    "# {person}'s client configuration: slapos request --cfg {}\n[slapos]\nmaster_url = {gateway}\n\n\
                     [slapconsole]\ncert_file = {}\nkey_file = {}\n",
                    cfg.display(),
                    cert.display(),
                    key.display()
                ),
            )?;
            println!(
                "added {person} (certificate serial {serial}): {}, {}, {}, {}",
                cfg.display(),
                cert.display(),
                key.display(),
                ca.display()
            );
            Ok(())
        }
    }
}

/// Submits an operator's command to the group (through the master API).
pub(crate) async fn submit_op(
    via: Vec<String>,
    what: &str,
    op: slapos_domain::Op,
) -> Result<slapos_domain::Reply> {
    let mut client = MasterClient::new(via).with_deadline(Duration::from_secs(30));
    let now = master_client::proposer_time();
    let command = slapos_domain::Command {
        request_id: slapos_domain::RequestId::new(
            format!("cli-{what}-{}", std::process::id()),
            now.0,
        ),
        at: now,
        op,
    };
    let (outcome, _) = client.submit(&command).await?;
    outcome.map_err(|e| anyhow!("{e}"))
}

/// Records (or takes back) a person's admin rights in the group.
pub(crate) async fn set_admin(via: Vec<String>, person: &str, admin: bool) -> Result<()> {
    match submit_op(
        via,
        "admin",
        slapos_domain::Op::SetAdmin {
            person: person.to_owned(),
            admin,
        },
    )
    .await?
    {
        slapos_domain::Reply::Done => Ok(()),
        other => bail!("unexpected answer {other:?}"),
    }
}

/// Submits an op answering `Revoked` and says how many.
async fn revoke(via: Vec<String>, op: slapos_domain::Op) -> Result<()> {
    match submit_op(via, "revoke", op).await? {
        slapos_domain::Reply::Revoked { count } => {
            println!("revoked {count} certificate(s)");
            Ok(())
        }
        other => bail!("unexpected answer {other:?}"),
    }
}

async fn ca(cmd: CaCommand) -> Result<()> {
    match cmd {
        CaCommand::Export { via } => {
            let mut client = MasterClient::new(via).with_deadline(Duration::from_secs(20));
            print!("{}", client.authority().await?);
            Ok(())
        }
        CaCommand::Token {
            via,
            identity,
            dns,
            ip,
            ttl,
        } => {
            let identity = slapos_domain::Identity::parse(&identity)?;
            let ttl = Duration::from_secs(ttl.clamp(1, 7 * 86400));
            println!("{}", server_token(via, identity, dns, ip, ttl).await?);
            Ok(())
        }
        CaCommand::Issue {
            via,
            identity,
            out,
            dns,
            ip,
            days,
            seconds,
        } => {
            let validity = seconds.or(days.map(|d| d.saturating_mul(86400)));
            let (cert_path, key_path, serial) =
                issue_to_files(via, &identity, &out, dns, ip, validity).await?;
            println!(
                "issued {identity} (serial {serial}): {} {}",
                cert_path.display(),
                key_path.display()
            );
            Ok(())
        }
        CaCommand::Revoke {
            via,
            serial,
            identity,
        } => {
            let identity = identity
                .map(|i| slapos_domain::Identity::parse(&i))
                .transpose()?;
            revoke(via, slapos_domain::Op::Revoke { serial, identity }).await
        }
    }
}

pub async fn cluster(cmd: ClusterCommand) -> Result<()> {
    tls_from_env()?;
    match cmd {
        ClusterCommand::Ca(cmd) => ca(cmd).await,
        ClusterCommand::Bootstrap(args) => crate::bootstrap::run(args).await,
        ClusterCommand::AddReplica(args) => crate::selfhost::add_replica(args).await,
        ClusterCommand::RemoveReplica(args) => crate::selfhost::remove_replica(args).await,
        ClusterCommand::Upgrade(args) => crate::selfhost::upgrade(args).await,
        ClusterCommand::RemoveComputer(args) => {
            revoke(
                args.via,
                slapos_domain::Op::RemoveComputer {
                    computer: args.computer,
                },
            )
            .await
        }
        ClusterCommand::Status(args) => {
            let mut client = MasterClient::new(args.via).with_deadline(Duration::from_secs(10));
            let first = client.status().await.context("no replica answered")?;
            // The leader knows every member's lag; ask it when we can.
            let view =
                if first.has_leader && !(first.leader_id == first.id && first.state == "leader") {
                    let leader_addr = first
                        .members
                        .iter()
                        .find(|m| m.id == first.leader_id)
                        .map(|m| m.api_addr.clone());
                    match leader_addr {
                        Some(a) => client.status_of(&a).await.unwrap_or(first),
                        None => first,
                    }
                } else {
                    first
                };
            let mut members = Vec::new();
            for m in &view.members {
                let own: Result<StatusResponse> = if m.id == view.id {
                    Ok(view.clone())
                } else {
                    let mut c = MasterClient::single(&m.api_addr);
                    c.call_timeout = Duration::from_secs(2);
                    c.status_of(&m.api_addr).await.map_err(|e| anyhow!(e))
                };
                let (s, error) = match own {
                    Ok(s) => (Some(s), None),
                    Err(e) => (None, Some(e.to_string())),
                };
                members.push(MemberStatus {
                    id: m.id,
                    role: m.role.clone(),
                    state: s.as_ref().map(|s| s.state.clone()),
                    raft_addr: m.raft_addr.clone(),
                    api_addr: m.api_addr.clone(),
                    region: m.region.clone(),
                    hosted_by: (!m.hosted_by.is_empty()).then(|| m.hosted_by.clone()),
                    gateway_url: (!m.gateway_url.is_empty()).then(|| m.gateway_url.clone()),
                    term: s.as_ref().map(|s| s.term),
                    last_log_index: s.as_ref().map(|s| s.last_log_index),
                    committed_index: s.as_ref().map(|s| s.committed_index),
                    applied_index: s.as_ref().map(|s| s.applied_index),
                    lag: m.lag,
                    snapshot_index: s.as_ref().map(|s| s.snapshot_index),
                    purged_index: s.as_ref().map(|s| s.purged_index),
                    log_size_bytes: s.as_ref().map(|s| s.log_size_bytes),
                    snapshot_size_bytes: s.as_ref().map(|s| s.snapshot_size_bytes),
                    error,
                });
            }
            let status = ClusterStatus {
                leader: view.has_leader.then_some(view.leader_id),
                term: view.term,
                members,
            };
            if args.json {
                println!("{}", serde_json::to_string_pretty(&status)?);
                return Ok(());
            }
            println!(
                "leader: {}   term: {}",
                status.leader.map_or("none".to_string(), |l| l.to_string()),
                status.term
            );
            println!(
                "{:>4} {:<8} {:<10} {:<22} {:>6} {:>9} {:>9} {:>9} {:>6} {:>9} {:>10} {:>10}  region (hosted by)",
                "id", "role", "state", "api", "term", "last_log", "committed", "applied", "lag", "snapshot", "log_bytes", "snap_bytes"
            );
            let opt = |v: Option<u64>| v.map_or("-".to_string(), |v| v.to_string());
            for m in &status.members {
                println!(
                    "{:>4} {:<8} {:<10} {:<22} {:>6} {:>9} {:>9} {:>9} {:>6} {:>9} {:>10} {:>10}  {}{}{}",
                    m.id,
                    m.role,
                    m.state.as_deref().unwrap_or("unreachable"),
                    m.api_addr,
                    opt(m.term),
                    opt(m.last_log_index),
                    opt(m.committed_index),
                    opt(m.applied_index),
                    m.lag,
                    opt(m.snapshot_index),
                    opt(m.log_size_bytes),
                    opt(m.snapshot_size_bytes),
                    m.region,
                    m.hosted_by.as_ref().map_or(String::new(), |h| format!(" ({h})")),
                    m.error.as_ref().map_or(String::new(), |e| format!("  ({e})"))
                );
            }
            Ok(())
        }
    }
}
