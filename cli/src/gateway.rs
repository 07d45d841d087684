//! `slapos gateway ...`: wiring to slap_gateway::server.

use anyhow::{Context, Result};
use clap::Subcommand;
use slap_gateway::server::{Gateway, GatewayConfig};
use std::path::PathBuf;

#[derive(Subcommand)]
pub enum GatewayCommand {
    /// Serve SLAP over HTTPS in front of the master group until interrupted
    /// (SIGINT/SIGTERM).
    Run {
        /// The gateway's TOML configuration (slap-gateway/DESIGN.md, "Configuration").
        #[arg(long)]
        config: PathBuf,
        /// Serve plain HTTP (no TLS): for local tests only. Like `insecure_http = true`
        /// in the configuration; any certificate it names is ignored.
        #[arg(long)]
        insecure_http: bool,
    },
    /// Whether the gateway at --url serves: `GET <url>healthz` over HTTPS, its
    /// certificate verified against --ca (so it names the address it is reached at).
    /// Exits non-zero when it does not answer.
    Check {
        /// The gateway's URL (https://host:port/).
        #[arg(long)]
        url: String,
        /// The group's CA certificate, which the gateway's must chain to.
        #[arg(long)]
        ca: PathBuf,
    },
}

pub async fn run(cmd: GatewayCommand) -> Result<()> {
    match cmd {
        GatewayCommand::Run {
            config,
            insecure_http,
        } => {
            let mut config = GatewayConfig::load(&config)?;
            if insecure_http {
                config.insecure_http = true;
                config.tls_cert = None;
                config.tls_key = None;
            }
            let gateway = Gateway::start(&config)
                .await
                .context("cannot start the gateway")?;
            println!("gateway serving SLAP at {}", gateway.url());
            crate::signal::wait_for_signal().await?;
            tracing::info!("shutting down");
            gateway.shutdown().await;
            Ok(())
        }
        GatewayCommand::Check { url, ca } => {
            let health = format!("{}/healthz", url.trim_end_matches('/'));
            let body = tokio::task::spawn_blocking(move || {
                slapgrid::client::get_url(&health, std::slice::from_ref(&ca))
            })
            .await?
            .with_context(|| format!("the gateway at {url} does not answer"))?;
            print!("{}", String::from_utf8_lossy(&body));
            Ok(())
        }
    }
}
