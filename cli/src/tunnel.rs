//! `slapos tunnel server|client`: wiring to the tunnel crate (flags after ghostunnel's).

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use slapos_domain::Identity;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Subcommand)]
pub enum TunnelCommand {
    /// The end beside a legacy service: accepts TLS 1.3 from clients whose certificate
    /// (of the group's CA) names an identity given with --allow, and forwards each to
    /// the target.
    Server(ServerArgs),
    /// The end beside the consumer: listens locally and relays each connection over TLS
    /// 1.3 to the server end, whose certificate must name --server-identity.
    Client(ClientArgs),
}

#[derive(Args)]
pub struct Common {
    /// Address to listen on (the server end: the partition's IPv6, `[ADDR]:PORT`; the
    /// client end: a local address, e.g. the partition's IPv4).
    #[arg(long)]
    listen: SocketAddr,
    /// This end's certificate (PEM; the partition's).
    #[arg(long)]
    cert: PathBuf,
    /// This end's private key (PEM).
    #[arg(long)]
    key: PathBuf,
    /// The group's CA certificate (PEM): the peer's certificate must be issued by it.
    #[arg(long)]
    cacert: PathBuf,
    /// Connections relayed at once; more wait in the listen backlog.
    #[arg(long, default_value_t = 1024)]
    max_concurrent_conns: usize,
    /// Seconds a TLS handshake may take.
    #[arg(long, default_value_t = 10.0)]
    handshake_timeout: f64,
    /// Seconds a connect (to the target, or to the server end) may take.
    #[arg(long, default_value_t = 10.0)]
    connect_timeout: f64,
    /// Seconds between two reads of the certificate, key and CA files (a renewal is
    /// used from the next connection; 0: never re-read).
    #[arg(long, default_value_t = 5.0)]
    timed_reload: f64,
}

#[derive(Args)]
pub struct ServerArgs {
    #[command(flatten)]
    common: Common,
    /// Where accepted connections go: the legacy service (HOST:PORT, e.g.
    /// 127.0.0.1:11211 or the partition's IPv4).
    #[arg(long)]
    target: String,
    /// An identity admitted (e.g. partition:COMP-2:slappart3); repeat it, or separate
    /// several with commas.
    #[arg(long, required = true, value_delimiter = ',')]
    allow: Vec<String>,
}

#[derive(Args)]
pub struct ClientArgs {
    #[command(flatten)]
    common: Common,
    /// The server end's address (HOST:PORT or [IPV6]:PORT).
    #[arg(long, visible_alias = "server")]
    target: String,
    /// The identity the server end's certificate must name (e.g.
    /// partition:COMP-1:slappart2).
    #[arg(long)]
    server_identity: String,
}

fn seconds(name: &str, s: f64) -> Result<Duration> {
    Duration::try_from_secs_f64(s).with_context(|| format!("--{name}: {s} is not a duration"))
}

fn identity(text: &str) -> Result<Identity> {
    Identity::parse(text.trim()).with_context(|| format!("identity {text:?}"))
}

fn options(common: Common, role: slapos_tunnel::Role) -> Result<slapos_tunnel::Options> {
    Ok(slapos_tunnel::Options {
        listen: common.listen,
        tls: slapos_tunnel::TlsFiles {
            cert: common.cert,
            key: common.key,
            ca: common.cacert,
        },
        role,
        limits: slapos_tunnel::Limits {
            max_connections: common.max_concurrent_conns,
            handshake_timeout: seconds("handshake-timeout", common.handshake_timeout)?,
            connect_timeout: seconds("connect-timeout", common.connect_timeout)?,
            reload_every: seconds("timed-reload", common.timed_reload)?,
        },
    })
}

pub async fn run(cmd: TunnelCommand) -> Result<()> {
    let options = match cmd {
        TunnelCommand::Server(a) => {
            let allow = a
                .allow
                .iter()
                .filter(|s| !s.trim().is_empty())
                .map(|s| identity(s))
                .collect::<Result<Vec<_>>>()?;
            options(
                a.common,
                slapos_tunnel::Role::Server {
                    allow,
                    target: a.target,
                },
            )?
        }
        TunnelCommand::Client(a) => {
            let server_identity = identity(&a.server_identity)?;
            options(
                a.common,
                slapos_tunnel::Role::Client {
                    server: a.target,
                    server_identity,
                },
            )?
        }
    };
    let mut stop = crate::signal::Stop::catch()?;
    let tunnel = slapos_tunnel::Tunnel::bind(options).await?;
    let addr = tunnel.local_addr()?;
    // The address on stdout, for whoever started it with port 0.
    println!("listening on {addr}");
    tunnel.serve(async move { stop.wait().await }).await;
    Ok(())
}
