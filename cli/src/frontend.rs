//! `slapos frontend run`: wiring to the frontend crate (the sites file, the listeners,
//! the limits; SIGHUP reloads the sites file).

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;
use tokio::signal::unix::{signal, SignalKind};

#[derive(Subcommand)]
pub enum FrontendCommand {
    /// Serve every site of a sites file (JSON, `frontend/DESIGN.md`) over HTTPS (the
    /// certificate chosen by SNI) and plain HTTP (redirected to HTTPS unless a site says
    /// `https-only: false`); SIGHUP reads the file again without dropping connections.
    Run(RunArgs),
}

#[derive(Args)]
pub struct RunArgs {
    /// The sites file the frontend release renders.
    #[arg(long)]
    sites: PathBuf,
    /// The HTTPS listener (e.g. 0.0.0.0:443, [::]:443).
    #[arg(long)]
    listen_https: SocketAddr,
    /// The plain HTTP listener (none: no plain HTTP).
    #[arg(long)]
    listen_http: Option<SocketAddr>,
    /// Bytes of a request head (at least 8192); over it: 431.
    #[arg(long, default_value_t = 32 * 1024)]
    max_header_bytes: usize,
    /// Header fields of an HTTP/1 request; over it: 431.
    #[arg(long, default_value_t = 100)]
    max_headers: usize,
    /// Bytes of a request body; over it: 413.
    #[arg(long, default_value_t = 64 * 1024 * 1024)]
    max_body_bytes: u64,
    /// Seconds from a request head's first byte to its end; over it: 408.
    #[arg(long, default_value_t = 10.0)]
    header_timeout: f64,
    /// Seconds a connection with no request in flight is kept.
    #[arg(long, default_value_t = 60.0)]
    idle_timeout: f64,
    /// Seconds a TLS handshake may take.
    #[arg(long, default_value_t = 10.0)]
    handshake_timeout: f64,
    /// Client connections at once; more wait in the listen backlog.
    #[arg(long, default_value_t = 10_000)]
    max_connections: usize,
}

fn seconds(name: &str, s: f64) -> Result<Duration> {
    Duration::try_from_secs_f64(s).with_context(|| format!("--{name}: {s} is not a duration"))
}

pub async fn run(cmd: FrontendCommand) -> Result<()> {
    let FrontendCommand::Run(a) = cmd;
    let options = slapos_frontend::Options {
        sites_file: a.sites,
        listen_https: a.listen_https,
        listen_http: a.listen_http,
        limits: slapos_frontend::Limits {
            max_header_bytes: a.max_header_bytes,
            max_headers: a.max_headers,
            max_body_bytes: a.max_body_bytes,
            header_timeout: seconds("header-timeout", a.header_timeout)?,
            idle_timeout: seconds("idle-timeout", a.idle_timeout)?,
            handshake_timeout: seconds("handshake-timeout", a.handshake_timeout)?,
            max_connections: a.max_connections,
        },
    };
    let mut stop = crate::signal::Stop::catch()?;
    let mut hup = signal(SignalKind::hangup())?;
    let frontend = slapos_frontend::Frontend::bind(options).await?;
    let handle = frontend.handle();
    report(&handle.status());
    // The addresses on stdout, for whoever started it with port 0.
    println!("https listening on {}", frontend.https_addr()?);
    if let Some(http) = frontend.http_addr() {
        println!("http listening on {}", http?);
    }
    tokio::spawn(async move {
        while hup.recv().await.is_some() {
            let h = handle.clone();
            match tokio::task::spawn_blocking(move || h.reload()).await {
                Ok(Ok(status)) => report(&status),
                Ok(Err(e)) => tracing::error!("reload: {e}; the sites in force are kept"),
                Err(e) => tracing::error!("reload: {e}"),
            }
        }
    });
    frontend.serve(async move { stop.wait().await }).await;
    Ok(())
}

/// Each refused site in the log, with why.
fn report(status: &slapos_frontend::Status) {
    for (reference, s) in status {
        if s.state != "serving" {
            tracing::warn!(
                site = %slapos_frontend::config::printable(reference, 80),
                "refused: {}",
                s.request_error_list.join("; ")
            );
        }
    }
    let serving = status.values().filter(|s| s.state == "serving").count();
    tracing::info!(serving, refused = status.len() - serving, "sites loaded");
}
