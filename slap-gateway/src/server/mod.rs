//! The gateway process: SLAP over HTTPS (rustls) in front of the master's Raft group.
//!
//! [`Gateway::start`] binds the listener and serves until [`Gateway::shutdown`]:
//!
//! * every legacy SLAP method at `<url_prefix>/<methodName>` (GET query parameters, POST
//!   `application/x-www-form-urlencoded` bodies, bounded), parsed by
//!   [`crate::slap::forms`] and answered by [`crate::slap::render`];
//! * writes become [`slapos_domain::Command`]s with this gateway's request ids and clock,
//!   submitted through the master client (leader discovery, retries under the same request
//!   id), then the answer is rendered from a linearizable read of what it shows;
//! * reads (the nodes' polling) read one replica with a bounded staleness;
//! * `GET /metrics` (Prometheus text) and `GET /healthz`.
//!
//! See `DESIGN.md`, section "The server".

pub mod app;
pub mod authz;
pub mod config;
mod follow;
pub mod http;
pub mod master;
pub mod metrics;
pub mod portal;
pub mod register;
pub mod releases;
pub mod tls;
pub mod views;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

pub use app::App;
pub use config::{ConfigError, GatewayConfig, ReleaseSettings, SlapSettings};
pub use http::{decode_form, router};
pub use master::{MasterError, Masters};
pub use metrics::Metrics;

/// Time a client has to send its request headers (slow-loris bound).
const HEADER_TIMEOUT: Duration = Duration::from_secs(30);
/// Time a client has to finish its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Time connections get to finish their current request at shutdown.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
/// How often the group's gateway list (for node agents) is read again.
const GATEWAY_LIST_REFRESH: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: String,
        source: std::io::Error,
    },
    #[error("TLS: {path}: {message}")]
    Tls { path: String, message: String },
    #[error("{0}")]
    Config(String),
    #[error("the release store: {0}")]
    Releases(#[from] crate::releases::StoreError),
}

/// The release store of `[releases]`, with the installed releases it serves again put in
/// it (one that cannot be is skipped, said in the log: the gateway serves the rest).
async fn open_releases(
    settings: &config::ReleaseSettings,
) -> Result<crate::releases::ReleaseStore, GatewayError> {
    let settings = settings.clone();
    let opened = tokio::task::spawn_blocking(move || {
        let store = crate::releases::ReleaseStore::open(&settings.dir, settings.max_blob_bytes)?;
        for dir in &settings.serve_installed {
            match store.import_installed(dir) {
                Ok(Some(digest)) => {
                    tracing::info!(release = %dir.display(), %digest, "serving an installed release")
                }
                Ok(None) => tracing::warn!(
                    release = %dir.display(),
                    "not serving an installed release: an artifact was unpacked"
                ),
                Err(e) => tracing::warn!(release = %dir.display(), error = %e, "not serving an installed release"),
            }
        }
        Ok::<_, crate::releases::StoreError>(store)
    })
    .await
    .map_err(|e| GatewayError::Config(format!("opening the release store: {e}")))?;
    Ok(opened?)
}

/// A running gateway.
pub struct Gateway {
    local_addr: SocketAddr,
    tls: bool,
    prefix: String,
    app: Arc<App>,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Gateway {
    /// Check the configuration, load the certificate, bind, and serve in the background.
    pub async fn start(config: &GatewayConfig) -> Result<Gateway, GatewayError> {
        config.validate().map_err(GatewayError::Config)?;
        if let Some(files) = &config.master_tls {
            master_client::tls::set_client(files).map_err(|e| GatewayError::Tls {
                path: files.cert.display().to_string(),
                message: e.to_string(),
            })?;
        }
        let clients = match &config.client_ca {
            Some(ca) => Some(Arc::new(tls::GroupClients::new(ca)?)),
            None => None,
        };
        let acceptor = match (&config.tls_cert, &config.tls_key, config.insecure_http) {
            (Some(cert), Some(key), false) => Some(tokio_rustls::TlsAcceptor::from(Arc::new(
                tls::server_config_with(
                    cert,
                    key,
                    clients
                        .clone()
                        .map(|c| c as Arc<dyn rustls::server::danger::ClientCertVerifier>),
                )?,
            ))),
            _ => None,
        };
        let releases = match &config.releases {
            Some(r) => Some(open_releases(r).await?),
            None => None,
        };
        let metrics = Arc::new(Metrics::default());
        let masters = Masters::new(
            &config.masters,
            Duration::from_millis(config.master_deadline_ms),
            Duration::from_millis(config.master_call_timeout_ms),
            config.max_inflight_writes,
            config.local_read_staleness_ms,
            metrics.clone(),
        );
        let app = Arc::new(App {
            ctx: config.slap_context(),
            prefix: config.url_prefix.clone(),
            max_body_bytes: config.max_body_bytes,
            masters,
            metrics,
            revoked: clients.as_ref().map(|c| c.revoked.clone()),
            admins: Default::default(),
            gateways: Default::default(),
            views: Default::default(),
            releases,
        });
        let listener =
            TcpListener::bind(&config.listen)
                .await
                .map_err(|source| GatewayError::Listen {
                    addr: config.listen.clone(),
                    source,
                })?;
        let local_addr = listener
            .local_addr()
            .map_err(|source| GatewayError::Listen {
                addr: config.listen.clone(),
                source,
            })?;
        let (stop, stopped) = watch::channel(false);
        {
            // Read once before serving: until the revoked serials are known, every client
            // certificate is refused (fail closed), which a normal start should not show;
            // until the admins are known, nobody is one.
            refresh_security(&app).await;
            // Kept fresh: a revocation fails the next handshake, an admin granted or
            // taken back counts from the next request.
            let (app, mut stopped) = (app.clone(), stopped.clone());
            let every = Duration::from_millis(config.revocation_refresh_ms.max(100));
            tokio::spawn(async move {
                // The first read was just made above: wait before each refresh.
                loop {
                    tokio::select! {
                        _ = tokio::time::sleep(every) => {}
                        _ = stopped.wait_for(|s| *s) => return,
                    }
                    refresh_security(&app).await;
                }
            });
        }
        {
            // The group's gateways, for node agents (X-Slapos-Gateways), kept fresh.
            let (app, mut stopped) = (app.clone(), stopped.clone());
            tokio::spawn(async move {
                loop {
                    match app.masters.gateway_urls().await {
                        // Held long polls are answered (304, with the new list in
                        // X-Slapos-Gateways): their nodes learn it now, not when their
                        // wait ends.
                        Ok(urls) => {
                            if app.gateways.set(&urls) {
                                app.views.gateways_changed();
                            }
                        }
                        Err(e) => tracing::debug!(error = %e, "cannot read the group's gateways"),
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(GATEWAY_LIST_REFRESH) => {}
                        _ = stopped.wait_for(|s| *s) => return,
                    }
                }
            });
        }
        // Held long polls are woken by the replicas' stream of changed views.
        tokio::spawn(follow::follow(app.clone(), stopped.clone()));
        let tls = acceptor.is_some();
        let task = tokio::spawn(accept_loop(
            listener,
            acceptor,
            app.clone(),
            stopped,
            clients.is_some(),
        ));
        tracing::info!(
            %local_addr,
            tls,
            client_id = app.masters.client_id(),
            masters = ?config.masters,
            "gateway serving"
        );
        Ok(Gateway {
            local_addr,
            tls,
            prefix: config.url_prefix.clone(),
            app,
            stop,
            task,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The SLAP base URL clients use as `master_url` (`https://127.0.0.1:8443/prefix`).
    pub fn url(&self) -> String {
        format!(
            "{}://{}{}",
            if self.tls { "https" } else { "http" },
            self.local_addr,
            self.prefix
        )
    }

    pub fn metrics(&self) -> &Metrics {
        &self.app.metrics
    }

    /// The applied index the replicas' stream of changed views brought this gateway to
    /// (0 before it first heard from them).
    pub fn app_views_followed(&self) -> u64 {
        self.app
            .views
            .followed
            .load(std::sync::atomic::Ordering::Acquire)
    }

    /// Stop accepting, let open connections finish their current request (bounded), and
    /// return when they are closed.
    pub async fn shutdown(self) {
        // Held long polls are answered (304) first, so that their connections finish
        // their request within the grace period rather than being cut.
        self.app.views.close();
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

async fn accept_loop(
    listener: TcpListener,
    acceptor: Option<tokio_rustls::TlsAcceptor>,
    app: Arc<App>,
    mut stopped: watch::Receiver<bool>,
    identify: bool,
) {
    let router = http::router(app.clone());
    let mut connections = JoinSet::new();
    loop {
        while connections.try_join_next().is_some() {}
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stopped.wait_for(|s| *s) => break,
        };
        let (tcp, peer) = match accepted {
            Ok(c) => c,
            Err(e) => {
                // Out of descriptors and the like: wait a little rather than spin.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        app.metrics.connection();
        let _ = tcp.set_nodelay(true);
        connections.spawn(serve_accepted(
            tcp,
            peer,
            acceptor.clone(),
            router.clone(),
            stopped.clone(),
            app.metrics.clone(),
            identify,
        ));
    }
    drop(listener);
    let drain = async { while connections.join_next().await.is_some() {} };
    if tokio::time::timeout(SHUTDOWN_GRACE, drain).await.is_err() {
        tracing::warn!("connections still open after the shutdown grace period: closing them");
        connections.shutdown().await;
    }
}

/// One accepted connection, served until it closes. Plain connections, the nodes' long
/// polls among them, are this small future (its task is spawned per connection and
/// lives as long as the connection); the TLS handshake and session are in a future
/// boxed apart, which would otherwise size every connection's task (5.7 KiB).
async fn serve_accepted(
    tcp: tokio::net::TcpStream,
    peer: SocketAddr,
    acceptor: Option<tokio_rustls::TlsAcceptor>,
    service: axum::Router,
    stop: watch::Receiver<bool>,
    metrics: Arc<Metrics>,
    identify: bool,
) {
    match acceptor {
        None => serve_connection(tcp, service, stop).await,
        Some(acceptor) => {
            Box::pin(serve_tls(
                tcp, peer, acceptor, service, stop, metrics, identify,
            ))
            .await
        }
    }
}

/// A TLS connection: the handshake (bounded), the caller named by its certificate,
/// then served.
async fn serve_tls(
    tcp: tokio::net::TcpStream,
    peer: SocketAddr,
    acceptor: tokio_rustls::TlsAcceptor,
    service: axum::Router,
    stop: watch::Receiver<bool>,
    metrics: Arc<Metrics>,
    identify: bool,
) {
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
        Ok(Ok(stream)) => {
            // The caller is the certificate's identity, for the whole connection.
            let service = if identify {
                let caller = stream
                    .get_ref()
                    .1
                    .peer_certificates()
                    .and_then(|c| c.first())
                    .and_then(|c| {
                        let (identity, serial) = slapos_ca::identity_of(c).ok()?;
                        let (from, to) = slapos_ca::validity_of(c)?;
                        Some(authz::Caller::Identity {
                            identity,
                            // decided per request (`authz::caller_of`)
                            admin: false,
                            serial,
                            lifetime_secs: (to - from).max(0) as u64,
                            certificate: std::sync::Arc::from(c.as_ref()),
                        })
                    });
                service.layer(axum::Extension(caller))
            } else {
                service
            };
            serve_connection(stream, service, stop).await
        }
        Ok(Err(e)) => {
            metrics.tls_handshake_error();
            tracing::debug!(%peer, error = %e, "TLS handshake failed");
        }
        Err(_) => {
            metrics.tls_handshake_error();
            tracing::debug!(%peer, "TLS handshake timed out");
        }
    }
}

/// Reads the revoked serials and the admins from the masters into `app`.
async fn refresh_security(app: &App) {
    match app.masters.security().await {
        Ok(security) => {
            if let Some(revoked) = &app.revoked {
                revoked.replace(security.revoked);
            }
            app.admins.replace(security.admins);
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the revoked certificates and the admins from the masters")
        }
    }
}

async fn serve_connection<S>(stream: S, router: axum::Router, mut stop: watch::Receiver<bool>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = TowerToHyperService::new(router);
    let connection = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .keep_alive(true)
        .serve_connection(TokioIo::new(stream), service);
    tokio::pin!(connection);
    tokio::select! {
        r = connection.as_mut() => {
            if let Err(e) = r {
                tracing::debug!(error = %e, "connection ended");
            }
            return;
        }
        _ = stop.wait_for(|s| *s) => {}
    }
    connection.as_mut().graceful_shutdown();
    let _ = connection.await;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every connection is a task for as long as it is open, tens of thousands of them
    /// held long polls: a plain connection's task stays small, the TLS path boxed apart.
    /// It was 5.7 KiB.
    #[tokio::test]
    async fn a_plain_connection_is_a_small_task() -> std::io::Result<()> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let client = tokio::net::TcpStream::connect(listener.local_addr()?).await?;
        let (tcp, peer) = listener.accept().await?;
        let task = serve_accepted(
            tcp,
            peer,
            None,
            axum::Router::new(),
            watch::channel(false).1,
            Arc::new(Metrics::default()),
            false,
        );
        let size = std::mem::size_of_val(&task);
        drop((task, client));
        assert!(size <= 1536, "a connection's future is {size} bytes");
        Ok(())
    }
}
