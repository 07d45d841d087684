//! `slapos master ...`, `slapos cluster ...` and `slapos user ...`: wiring to
//! master_replica (a replica's own commands) and to slapos_operator (what an operator
//! does to the group).

use anyhow::{anyhow, bail, Result};
use clap::{Args, Subcommand};
use master_client::MasterClient;
use master_replica::node::{Replica, ReplicaConfig};
use slapos_operator::authority;
use std::path::PathBuf;
use std::time::{Duration, Instant};

#[derive(Subcommand)]
pub enum MasterCommand {
    /// Run one replica until interrupted (SIGINT/SIGTERM).
    Run {
        /// The replica's TOML configuration (replica/DESIGN.md, "Configuration").
        #[arg(long)]
        config: PathBuf,
    },
    /// Bootstrap a new group of one with this replica (its data directory must be empty).
    Init {
        /// The replica's TOML configuration; its data directory must be empty.
        #[arg(long)]
        config: PathBuf,
    },
    /// Add this (running) replica to a group: as a learner, and once it has caught up,
    /// as a voter.
    Join {
        /// The running replica's TOML configuration.
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
        /// The one-time token the operator made (`slapos cluster ca token`).
        #[arg(long)]
        token: String,
        /// The identity the token is expected to grant (replica:N or gateway:ID).
        #[arg(long)]
        identity: String,
        /// The group's CA certificate (the token only goes to a gateway it verifies).
        #[arg(long)]
        ca: PathBuf,
        /// Directory the key, certificate and CA are written to.
        #[arg(long, default_value = ".")]
        out: PathBuf,
    },
    /// Remove a replica from its group. Its id is never used again.
    Leave {
        /// The id of the replica to remove.
        #[arg(long)]
        id: u64,
        /// Master API addresses of the group (host:port, comma-separated), reached
        /// with $SLAPOS_MASTER_TLS_CERT, _KEY (an operator's certificate) and _CA.
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
    Bootstrap(crate::selfhost::BootstrapArgs),
    /// Add a replica hosted in a partition of a computer (the slapos-master release):
    /// supplied, requested, enrolled with one-time tokens, joined; waits until it votes.
    AddReplica(crate::selfhost::AddReplicaArgs),
    /// Remove a replica hosted in a partition: its instance destroyed, the group no longer
    /// counting it before its partition is wiped; waits until then.
    RemoveReplica(crate::selfhost::RemoveReplicaArgs),
    /// Move every replica hosted in a partition to a new slapos-master release, one at a
    /// time (the group keeps its quorum), each back and caught up before the next.
    Upgrade(crate::selfhost::UpgradeArgs),
    /// A consistent copy of the whole state at one applied index, taken online from a
    /// replica and written to one checksummed file; `backup verify FILE` checks one.
    Backup(crate::backup::BackupArgs),
    /// Start a new group (a new group id) from a backup, in the empty data directory of
    /// one replica; the old group's replicas cannot join it.
    Restore(crate::backup::RestoreArgs),
}

#[derive(Args)]
pub struct RemoveComputerArgs {
    /// Master API addresses of the group (host:port, comma-separated), reached
    /// with $SLAPOS_MASTER_TLS_CERT, _KEY (an operator's certificate) and _CA.
    #[arg(long, value_delimiter = ',', required = true)]
    via: Vec<String>,
    /// The computer to retire (it must host no instance).
    #[arg(long)]
    computer: String,
}

#[derive(Subcommand)]
pub enum CaCommand {
    /// Print the CA certificate (PEM): what clients and servers of the group trust.
    Export {
        /// Master API addresses of the group (host:port, comma-separated), reached
        /// with $SLAPOS_MASTER_TLS_CERT, _KEY (an operator's certificate) and _CA.
        #[arg(long, value_delimiter = ',', required = true)]
        via: Vec<String>,
    },
    /// Make a one-time token that enrolls a replica or gateway (operator): whoever
    /// presents it to a gateway (`slapos master enroll`) before --ttl seconds gets that
    /// identity's certificate with these names, once. Printed once; only its SHA-256 is
    /// kept.
    Token {
        /// Master API addresses of the group (host:port, comma-separated), reached
        /// with $SLAPOS_MASTER_TLS_CERT, _KEY (an operator's certificate) and _CA.
        #[arg(long, value_delimiter = ',', required = true)]
        via: Vec<String>,
        /// The identity the token grants: replica:N or gateway:ID.
        #[arg(long)]
        identity: String,
        /// DNS names the certificate will carry (comma-separated).
        #[arg(long, value_delimiter = ',')]
        dns: Vec<String>,
        /// IP addresses the certificate will carry (comma-separated).
        #[arg(long, value_delimiter = ',')]
        ip: Vec<String>,
        /// Seconds the token stays valid.
        #[arg(long, default_value_t = 3600)]
        ttl: u64,
    },
    /// Issue a certificate (operator): a key is made here, only its signing request goes
    /// to the master; writes <out>/<name>.key (0600) and <out>/<name>.crt.
    Issue {
        /// Master API addresses of the group (host:port, comma-separated), reached
        /// with $SLAPOS_MASTER_TLS_CERT, _KEY (an operator's certificate) and _CA.
        #[arg(long, value_delimiter = ',', required = true)]
        via: Vec<String>,
        /// The identity certified: computer:ID, partition:COMPUTER:PARTITION, person:ID,
        /// operator:NAME (operator commands on the master API), replica:N or gateway:ID.
        #[arg(long)]
        identity: String,
        /// Directory the key and certificate are written to.
        #[arg(long, default_value = ".")]
        out: PathBuf,
        /// Server names (replicas and gateways).
        #[arg(long, value_delimiter = ',')]
        dns: Vec<String>,
        /// IP addresses (replicas and gateways; comma-separated).
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
        /// Master API addresses of the group (host:port, comma-separated), reached
        /// with $SLAPOS_MASTER_TLS_CERT, _KEY (an operator's certificate) and _CA.
        #[arg(long, value_delimiter = ',', required = true)]
        via: Vec<String>,
        /// The serial of the certificate to revoke (hex, as `openssl x509 -serial` shows).
        #[arg(
            long,
            conflicts_with = "identity",
            required_unless_present = "identity"
        )]
        serial: Option<String>,
        /// Revoke every certificate of this identity (e.g. computer:COMP-1).
        #[arg(long)]
        identity: Option<String>,
    },
}

#[derive(Args)]
pub struct StatusArgs {
    /// Master API addresses to ask (comma-separated); every member is then asked.
    #[arg(long, value_delimiter = ',', required = true)]
    via: Vec<String>,
    /// Print the status as JSON.
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
            let mut stop = crate::signal::Stop::catch()?;
            let mut replica = Replica::open(&config).await?;
            replica.serve(&config).await?;
            println!(
                "replica {} serving: raft {} api {} data {}",
                config.id,
                config.raft_addr,
                config.api_addr,
                config.data_dir.display()
            );
            let why = tokio::select! {
                _ = stop.wait() => {
                    tracing::info!("shutting down");
                    replica.shutdown().await;
                    return Ok(());
                }
                why = replica.stopped() => why,
            };
            // Its disk failed a write (EIO...): nothing it could not persist was
            // acknowledged (the write's error went to openraft, which stopped). It exits
            // at once without closing the store, as a crash would (the store recovers
            // from that; closing would write to the failed disk again, and Debian's
            // RocksDB asserts on such writes), so that its supervisor starts it again
            // from its disk. It kills itself: an exit() runs RocksDB's static
            // destructors while openraft's tasks still close the store on worker
            // threads, and that race aborted the process.
            if replica.disk_failed() {
                tracing::error!(reason = %why, "this replica stopped: its disk failed a write; it exits now (SIGKILL, as a crash), to be started again from its disk");
                eprintln!("replica {} stopped: {why}", config.id);
                let killed = nix::sys::signal::raise(nix::sys::signal::Signal::SIGKILL);
                bail!(
                    "replica {} stopped ({why}) and could not kill itself: {killed:?}",
                    config.id
                );
            }
            // Stopped by itself (its disk): it keeps answering its status, which says
            // why, until there is room again, then exits so that its supervisor (the
            // node's, for a hosted replica) starts it again from its disk.
            tracing::error!(reason = %why, "this replica stopped; it exits once its data directory has room, to be started again");
            while !Replica::has_room(&config) {
                tokio::select! {
                    _ = stop.wait() => {
                        replica.shutdown().await;
                        return Ok(());
                    }
                    _ = tokio::time::sleep(Duration::from_secs(2)) => {}
                }
            }
            // Closed cleanly when it can be; a store still held after the grace (a task
            // of openraft's that did not end) is left as a crash would leave it.
            if tokio::time::timeout(Duration::from_secs(8), replica.shutdown())
                .await
                .is_err()
            {
                tracing::error!("the replica did not shut down within 8 s: exiting as a crash (SIGKILL), to be started again from its disk");
                let killed = nix::sys::signal::raise(nix::sys::signal::Signal::SIGKILL);
                bail!(
                    "replica {} stopped ({why}) and could not kill itself: {killed:?}",
                    config.id
                );
            }
            bail!(
                "replica {} stopped ({why}); its data directory has room again: start it again",
                config.id
            )
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
            let mut client = MasterClient::new(via).with_deadline(Duration::from_secs(120));
            client.call_timeout = Duration::from_secs(110);
            let msg = client
                .add_replica(&config.add_replica_request(!learner))
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
            let issued = authority::enroll(&gateway, &token, &identity, &ca, &out)?;
            println!(
                "enrolled {identity} (serial {}): {} {}",
                issued.serial,
                issued.cert.display(),
                issued.key.display()
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

#[derive(Subcommand)]
pub enum UserCommand {
    /// Add a person (admin, on the master API): their certificate and key, the group's
    /// CA and a client configuration for `slapos request --cfg` in <out>.
    Add {
        /// Master API addresses of the group (host:port, comma-separated), reached
        /// with $SLAPOS_MASTER_TLS_CERT, _KEY (an operator's certificate) and _CA.
        #[arg(long, value_delimiter = ',', required = true)]
        via: Vec<String>,
        /// The person's id (letters, digits, . _ @ + -).
        #[arg(long)]
        person: String,
        /// The gateway the configuration points at (https://...).
        #[arg(long)]
        gateway: String,
        /// Directory the person's key, certificate, CA and client configuration go to.
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
        /// Master API addresses of the group (host:port, comma-separated), reached
        /// with $SLAPOS_MASTER_TLS_CERT, _KEY (an operator's certificate) and _CA.
        #[arg(long, value_delimiter = ',', required = true)]
        via: Vec<String>,
        /// The person's id.
        #[arg(long)]
        person: String,
        /// Take the admin rights back instead.
        #[arg(long)]
        revoke: bool,
    },
    /// Set a person's password for the web portal (`/portal/` on every gateway), read
    /// from the first line of standard input; hashed here with argon2id, only the hash
    /// reaches the group. Ends their portal sessions. --clear removes it.
    Password {
        /// Master API addresses of the group (host:port, comma-separated), reached
        /// with $SLAPOS_MASTER_TLS_CERT, _KEY (an operator's certificate) and _CA.
        #[arg(long, value_delimiter = ',', required = true)]
        via: Vec<String>,
        /// The person's id.
        #[arg(long)]
        person: String,
        /// Remove the password instead (certificate sign-in only).
        #[arg(long)]
        clear: bool,
    },
    /// Remove a person: every certificate of theirs is revoked at once.
    Remove {
        /// Master API addresses of the group (host:port, comma-separated), reached
        /// with $SLAPOS_MASTER_TLS_CERT, _KEY (an operator's certificate) and _CA.
        #[arg(long, value_delimiter = ',', required = true)]
        via: Vec<String>,
        /// The person's id.
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
        UserCommand::Password { via, person, clear } => {
            let hash = if clear {
                None
            } else {
                let mut line = String::new();
                std::io::stdin().read_line(&mut line)?;
                let password = line.trim_end_matches(['\n', '\r']);
                let n = password.chars().count();
                if n < slapos_portal::auth::MIN_PASSWORD
                    || password.len() > slapos_portal::auth::MAX_PASSWORD
                {
                    bail!(
                        "a password has {} to {} characters (read from the first line of standard input)",
                        slapos_portal::auth::MIN_PASSWORD,
                        slapos_portal::auth::MAX_PASSWORD
                    );
                }
                Some(slapos_portal::auth::hash_password(password)?)
            };
            authority::set_password(via, &person, hash).await?;
            if clear {
                println!("{person} has no portal password now");
            } else {
                println!("{person}'s portal password is set");
            }
            Ok(())
        }
        UserCommand::Admin {
            via,
            person,
            revoke,
        } => {
            authority::set_admin(via, &person, !revoke).await?;
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
            let added = authority::add_person(via, &person, &gateway, &out, admin).await?;
            println!(
                "added {person} (certificate serial {}): {}, {}, {}, {}",
                added.issued.serial,
                added.client_config.display(),
                added.issued.cert.display(),
                added.issued.key.display(),
                added.ca.display()
            );
            Ok(())
        }
    }
}

/// Submits a command answering `Revoked` and says how many.
async fn revoke(via: Vec<String>, op: slapos_domain::Op) -> Result<()> {
    let count = authority::revoke(via, op).await?;
    println!("revoked {count} certificate(s)");
    Ok(())
}

async fn ca(cmd: CaCommand) -> Result<()> {
    match cmd {
        CaCommand::Export { via } => {
            print!("{}", authority::authority(via).await?);
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
            println!(
                "{}",
                authority::server_token(via, identity, dns, ip, ttl).await?
            );
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
            let issued = authority::issue_to_files(via, &identity, &out, dns, ip, validity).await?;
            println!(
                "issued {identity} (serial {}): {} {}",
                issued.serial,
                issued.cert.display(),
                issued.key.display()
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
        ClusterCommand::Bootstrap(args) => crate::selfhost::bootstrap(args).await,
        ClusterCommand::AddReplica(args) => crate::selfhost::add_replica(args).await,
        ClusterCommand::RemoveReplica(args) => crate::selfhost::remove_replica(args).await,
        ClusterCommand::Upgrade(args) => crate::selfhost::upgrade(args).await,
        ClusterCommand::Backup(args) => crate::backup::backup(args).await,
        ClusterCommand::Restore(args) => crate::backup::restore(args),
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
            let status = slapos_operator::status::group_status(args.via).await?;
            if args.json {
                println!("{}", serde_json::to_string_pretty(&status)?);
                return Ok(());
            }
            println!(
                "leader: {}   term: {}   group: {}",
                status.leader.map_or("none".to_string(), |l| l.to_string()),
                status.term,
                if status.group.is_empty() {
                    "(no id)"
                } else {
                    &status.group
                },
            );
            println!(
                "{:>4} {:<8} {:<10} {:<22} {:>6} {:>9} {:>9} {:>9} {:>6} {:>9} {:>10} {:>10} {:>8} {:>8}  region (hosted by)",
                "id", "role", "state", "api", "term", "last_log", "committed", "applied", "lag", "snapshot", "log_bytes", "snap_bytes", "rtt_ms", "seen_ms"
            );
            let opt = |v: Option<u64>| v.map_or("-".to_string(), |v| v.to_string());
            for m in &status.members {
                println!(
                    "{:>4} {:<8} {:<10} {:<22} {:>6} {:>9} {:>9} {:>9} {:>6} {:>9} {:>10} {:>10} {:>8} {:>8}  {}{}{}",
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
                    m.rtt_ms.map_or("-".to_string(), |r| format!("{r:.1}")),
                    opt(m.last_answer_ms),
                    m.region,
                    m.hosted_by.as_ref().map_or(String::new(), |h| format!(" ({h})")),
                    m.error.as_ref().map_or(String::new(), |e| format!("  ({e})"))
                );
            }
            if let Some(t) = status.timers {
                println!(
                    "timers: heartbeat {} ms, election timeout {}-{} ms",
                    t.heartbeat_ms, t.election_timeout_min_ms, t.election_timeout_max_ms
                );
            }
            for w in &status.warnings {
                println!("warning: {w}");
            }
            Ok(())
        }
    }
}
