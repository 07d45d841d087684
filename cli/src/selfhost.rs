//! `slapos cluster bootstrap` / `add-replica` / `remove-replica` / `upgrade`: their
//! arguments, turned into `slapos_operator`'s options; the steps print as they go.

use crate::progress::Printer;
use anyhow::{bail, Context, Result};
use clap::Args;
use slapos_operator::bootstrap::{Bootstrap, Host, SeedProcesses};
use slapos_operator::replicas::{AddReplica, Backups, Ports, RemoveReplica, Timers};
use slapos_operator::Operator;
use std::path::PathBuf;

/// How the operator reaches the group: the master API (with `$SLAPOS_MASTER_TLS_*`, an
/// operator's or a replica's certificate) and a gateway as the admin person.
#[derive(Args, Clone)]
pub struct OperatorArgs {
    /// Master API addresses of the group (host:port, comma-separated), reached with
    /// $SLAPOS_MASTER_TLS_CERT, _KEY (an operator's certificate) and _CA.
    #[arg(long, value_delimiter = ',', required = true)]
    via: Vec<String>,
    /// A gateway of the group (https://...): the admin's requests go through it, and the
    /// new replica enrolls through it.
    #[arg(long)]
    gateway: String,
    /// The admin's certificate (PEM), presented to the gateway.
    #[arg(long)]
    cert: PathBuf,
    /// The admin's private key (PEM).
    #[arg(long)]
    key: PathBuf,
    /// The group's CA certificate: the gateway is verified against it.
    #[arg(long)]
    ca: PathBuf,
    /// The slapos-master release to use (URL or path); default: one written for this
    /// binary into --release-dir.
    #[arg(long)]
    release: Option<String>,
    /// Where the default slapos-master release is written (when --release is not given).
    #[arg(long, default_value = "slapos-master-release")]
    release_dir: PathBuf,
    /// How long to wait for the group to count (or forget) the replica.
    #[arg(long, default_value_t = 300)]
    timeout_secs: u64,
}

impl From<OperatorArgs> for Operator {
    fn from(a: OperatorArgs) -> Operator {
        Operator {
            via: a.via,
            gateway: a.gateway,
            cert: a.cert,
            key: a.key,
            ca: a.ca,
            release: a.release,
            release_dir: a.release_dir,
            timeout_secs: a.timeout_secs,
        }
    }
}

/// Where a hosted replica listens, on its partition's address.
#[derive(Args, Clone, Copy)]
pub struct PortsArgs {
    /// The replica's Raft port (between replicas).
    #[arg(long, default_value_t = Ports::default().raft_port)]
    raft_port: u16,
    /// The replica's master API port (gateways and operators).
    #[arg(long, default_value_t = Ports::default().api_port)]
    api_port: u16,
    /// The port of the gateway beside the replica (SLAP over HTTPS).
    #[arg(long, default_value_t = Ports::default().gateway_port)]
    gateway_port: u16,
}

impl From<PortsArgs> for Ports {
    fn from(a: PortsArgs) -> Ports {
        Ports {
            raft_port: a.raft_port,
            api_port: a.api_port,
            gateway_port: a.gateway_port,
        }
    }
}

/// Raft timers for the expected latency between regions (ms).
#[derive(Args, Clone, Copy)]
pub struct TimersArgs {
    /// Raft heartbeat interval, in ms (near the largest round trip between regions).
    #[arg(long, default_value_t = Timers::default().heartbeat_ms)]
    heartbeat_ms: u64,
    /// Lower bound of the election timeout, in ms (several heartbeats).
    #[arg(long, default_value_t = Timers::default().election_timeout_min_ms)]
    election_timeout_min_ms: u64,
    /// Upper bound of the election timeout, in ms.
    #[arg(long, default_value_t = Timers::default().election_timeout_max_ms)]
    election_timeout_max_ms: u64,
}

impl From<TimersArgs> for Timers {
    fn from(a: TimersArgs) -> Timers {
        Timers {
            heartbeat_ms: a.heartbeat_ms,
            election_timeout_min_ms: a.election_timeout_min_ms,
            election_timeout_max_ms: a.election_timeout_max_ms,
        }
    }
}

/// Backups the hosted replicas take of the group on a schedule.
#[derive(Args, Clone)]
pub struct BackupsArgs {
    /// Minutes between two backups each hosted replica takes of the group into its
    /// partition (`srv/backups`; a promise fails once the newest is older than twice
    /// that, plus 10). 0: none.
    #[arg(long, default_value_t = 0)]
    backup_every_minutes: u64,
    /// How many of those backups each replica keeps (the newest).
    #[arg(long, default_value_t = 7)]
    backup_keep: u64,
    /// An https:// place each backup is also sent to (`PUT <url>/<file name>`: a WebDAV
    /// directory, a bucket), the replica's certificate presented; the promise then
    /// counts the uploads.
    #[arg(long, value_name = "URL")]
    backup_url: Option<String>,
}

impl From<BackupsArgs> for Backups {
    fn from(a: BackupsArgs) -> Backups {
        Backups {
            every_minutes: a.backup_every_minutes,
            keep: a.backup_keep,
            url: a.backup_url,
        }
    }
}

#[derive(Args)]
pub struct AddReplicaArgs {
    #[command(flatten)]
    operator: OperatorArgs,
    /// The computer whose partition hosts the replica.
    #[arg(long)]
    computer: String,
    /// The new replica's id (never used before in this group).
    #[arg(long)]
    id: u64,
    /// The region the replica serves (its computer's), shown by `cluster status`.
    #[arg(long, default_value = "local")]
    region: String,
    #[command(flatten)]
    ports: PortsArgs,
    #[command(flatten)]
    timers: TimersArgs,
    /// The partition size to request the replica and its gateway with (an SLA's
    /// `size`): one the computer sells and its node defines with `reserved = true`, so
    /// the master keeps its share of the node (slapgrid/DESIGN.md, "Control groups").
    #[arg(long)]
    size: Option<String>,
    #[command(flatten)]
    backups: BackupsArgs,
}

impl From<AddReplicaArgs> for AddReplica {
    fn from(a: AddReplicaArgs) -> AddReplica {
        AddReplica {
            operator: a.operator.into(),
            computer: a.computer,
            id: a.id,
            region: a.region,
            ports: a.ports.into(),
            timers: a.timers.into(),
            size: a.size,
            backups: a.backups.into(),
        }
    }
}

#[derive(Args)]
pub struct RemoveReplicaArgs {
    #[command(flatten)]
    operator: OperatorArgs,
    /// The id of the hosted replica to remove.
    #[arg(long)]
    id: u64,
    /// Its node is lost for good (its region gone): the group removes the replica at
    /// once, without waiting for the node to run the instance's destroy hook; the
    /// instance is requested destroyed all the same (a node that comes back wipes it).
    #[arg(long)]
    lost: bool,
}

impl From<RemoveReplicaArgs> for RemoveReplica {
    fn from(a: RemoveReplicaArgs) -> RemoveReplica {
        RemoveReplica {
            operator: a.operator.into(),
            id: a.id,
            lost: a.lost,
        }
    }
}

#[derive(Args)]
pub struct UpgradeArgs {
    /// `--release` / `--release-dir` name the new release (default: one written for this
    /// binary into --release-dir, which must differ from the current one's).
    #[command(flatten)]
    operator: OperatorArgs,
}

#[derive(Args)]
pub struct BootstrapArgs {
    #[command(flatten)]
    operator: OperatorArgs,
    /// The registered computers that host the group, one replica each, each in its own
    /// region: `COMPUTER` (the default ports) or `COMPUTER:PORT` (PORT, PORT+1, PORT+2 for
    /// Raft, the API and the gateway: for computers whose partitions share an address).
    #[arg(long = "computer", value_delimiter = ',', required = true)]
    computers: Vec<String>,
    /// The first new replica's id (default: one above the group's highest member id).
    #[arg(long)]
    first_id: Option<u64>,
    /// The ports of every replica not given its own with `COMPUTER:PORT`.
    #[command(flatten)]
    ports: PortsArgs,
    #[command(flatten)]
    timers: TimersArgs,
    #[command(flatten)]
    backups: BackupsArgs,
    /// Where the admin's client configuration is written at the end, with a hosted
    /// gateway as `master_url` (slapos.core's format, what `slapos request --cfg` reads;
    /// rewritten whole). Default: slapos-client.cfg beside --cert.
    #[arg(long)]
    client_config: Option<PathBuf>,
    /// The seed replica's and its gateway's process ids on this machine
    /// (comma-separated): stopped (SIGTERM) at the end, once the seed left and its
    /// certificates are revoked. Without it, the last step says how to stop them.
    #[arg(long = "seed-pid", value_delimiter = ',')]
    seed_pids: Vec<u32>,
}

/// `COMPUTER` or `COMPUTER:PORT`.
fn parse_host(spec: &str) -> Result<Host> {
    match spec.rsplit_once(':') {
        Some((c, port)) => {
            let p: u16 = port
                .parse()
                .with_context(|| format!("--computer {spec}: '{port}' is not a port"))?;
            match (p, p.checked_add(1), p.checked_add(2)) {
                (1.., Some(api_port), Some(gateway_port)) => Ok(Host {
                    computer: c.to_string(),
                    ports: Some(Ports {
                        raft_port: p,
                        api_port,
                        gateway_port,
                    }),
                }),
                _ => bail!("--computer {spec}: PORT must be 1 to 65533"),
            }
        }
        None => Ok(Host {
            computer: spec.to_string(),
            ports: None,
        }),
    }
}

pub async fn bootstrap(args: BootstrapArgs) -> Result<()> {
    let computers = args
        .computers
        .iter()
        .map(|c| parse_host(c))
        .collect::<Result<_>>()?;
    let client_config = args.client_config.unwrap_or_else(|| {
        args.operator
            .cert
            .parent()
            .unwrap_or(std::path::Path::new(""))
            .join("slapos-client.cfg")
    });
    let seed = if args.seed_pids.is_empty() {
        SeedProcesses::Elsewhere
    } else {
        SeedProcesses::Pids(args.seed_pids)
    };
    let bootstrap = Bootstrap {
        operator: args.operator.into(),
        computers,
        first_id: args.first_id,
        ports: args.ports.into(),
        timers: args.timers.into(),
        backups: args.backups.into(),
        // what `tls_from_env` presents
        presented_cert: std::env::var_os("SLAPOS_MASTER_TLS_CERT").map(PathBuf::from),
        client_config: Some(client_config),
        seed,
    };
    slapos_operator::bootstrap::bootstrap(&bootstrap, &Printer).await?;
    Ok(())
}

pub async fn add_replica(args: AddReplicaArgs) -> Result<()> {
    slapos_operator::replicas::add_replica(&args.into(), &Printer).await?;
    Ok(())
}

pub async fn remove_replica(args: RemoveReplicaArgs) -> Result<()> {
    slapos_operator::replicas::remove_replica(&args.into(), &Printer).await?;
    Ok(())
}

pub async fn upgrade(args: UpgradeArgs) -> Result<()> {
    slapos_operator::replicas::upgrade(&args.operator.into(), &Printer).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::parse_host;

    #[test]
    fn hosts() {
        let h = parse_host("COMP-1:7300").unwrap();
        assert_eq!(h.computer, "COMP-1");
        let p = h.ports.unwrap();
        assert_eq!(
            (p.raft_port, p.api_port, p.gateway_port),
            (7300, 7301, 7302)
        );
        assert!(parse_host("COMP-1").unwrap().ports.is_none());
        assert!(parse_host("COMP-1:x").is_err());
        assert!(parse_host("COMP-1:0").is_err());
        assert!(parse_host("COMP-1:65534").is_err());
    }
}
