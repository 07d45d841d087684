//! The frontend: one reverse proxy process (hyper, rustls) that serves every site
//! requested as a shared instance of the frontend release, after SlapOS's own frontend
//! (`rapid-cdn`): its parameters, what it publishes, its behaviour (`DESIGN.md`).
//!
//! - The **sites file** (JSON, `config::SitesFile`) lists the sites, each with its
//!   shared instance's parameters as requested; each is checked (`config::check_site`)
//!   and a bad one is refused alone, its errors in its `request-error-list`.
//! - An **HTTPS listener** (HTTP/2 and HTTP/1.1 by ALPN; the certificate chosen by SNI)
//!   and a **plain HTTP listener** (redirects to HTTPS when `https-only`, else proxies).
//! - **Reload** (`Handle::reload`, SIGHUP in `slapos frontend run`): the file is read
//!   again and the table of sites swapped; no connection is dropped, requests in flight
//!   finish with the site they started with, unchanged sites keep their backend pools.
//! - **Limits**: header size (431), body size (413), slow request heads (408), a
//!   request timeout (504) and a connect timeout (502) per site, each counted.

#![forbid(unsafe_code)]

mod access_log;
pub mod config;
mod error;
mod io;
mod proxy;
mod sites;
mod tls;

pub use config::{SiteStatus, Status};
pub use error::{ConfigError, FrontendError, SiteError};

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use hyper::server::conn::{http1, http2};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

use crate::io::{Bounds, ConnState, TimedIo};
use crate::proxy::ConnInfo;
use crate::sites::Table;

/// Bounds of every connection and request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Bytes of a request head (HTTP/1: request line and headers; HTTP/2: the header
    /// list); over it: 431. At least 8192.
    pub max_header_bytes: usize,
    /// Header fields of an HTTP/1 request; over it: 431.
    pub max_headers: usize,
    /// Bytes of a request body; over it: 413 (before anything is sent to the backend
    /// when Content-Length says so, else when the body passes it).
    pub max_body_bytes: u64,
    /// Time from a request head's first byte to its end; over it: 408, closed.
    pub header_timeout: Duration,
    /// Time a connection with no request in flight is kept.
    pub idle_timeout: Duration,
    /// Time for a TLS handshake.
    pub handshake_timeout: Duration,
    /// Client connections at once; the next wait in the listen backlog.
    pub max_connections: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_header_bytes: 32 * 1024,
            max_headers: 100,
            max_body_bytes: 64 * 1024 * 1024,
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            handshake_timeout: Duration::from_secs(10),
            max_connections: 10_000,
        }
    }
}

/// A frontend's options (what `slapos frontend run` takes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    pub sites_file: PathBuf,
    pub listen_https: SocketAddr,
    /// The plain HTTP listener (none: no plain HTTP).
    pub listen_http: Option<SocketAddr>,
    pub limits: Limits,
}

/// What was refused or failed, counted since the start.
#[derive(Debug, Default)]
pub struct Counters {
    pub requests: AtomicU64,
    pub not_found: AtomicU64,
    /// 431 (HTTP/1; an HTTP/2 header list over the bound is refused by h2 uncounted).
    pub header_too_large: AtomicU64,
    /// 413.
    pub body_too_large: AtomicU64,
    /// 408.
    pub header_timeouts: AtomicU64,
    /// 504.
    pub request_timeouts: AtomicU64,
    /// 502, no connection to the backend.
    pub connect_failures: AtomicU64,
    /// 502, the backend failed after the connection.
    pub backend_errors: AtomicU64,
    pub tls_handshake_failures: AtomicU64,
}

/// A copy of the counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CounterValues {
    pub requests: u64,
    pub not_found: u64,
    pub header_too_large: u64,
    pub body_too_large: u64,
    pub header_timeouts: u64,
    pub request_timeouts: u64,
    pub connect_failures: u64,
    pub backend_errors: u64,
    pub tls_handshake_failures: u64,
}

impl Counters {
    pub fn values(&self) -> CounterValues {
        let v = |a: &AtomicU64| a.load(Ordering::Relaxed);
        CounterValues {
            requests: v(&self.requests),
            not_found: v(&self.not_found),
            header_too_large: v(&self.header_too_large),
            body_too_large: v(&self.body_too_large),
            header_timeouts: v(&self.header_timeouts),
            request_timeouts: v(&self.request_timeouts),
            connect_failures: v(&self.connect_failures),
            backend_errors: v(&self.backend_errors),
            tls_handshake_failures: v(&self.tls_handshake_failures),
        }
    }
}

/// What every connection shares.
#[derive(Debug)]
pub(crate) struct Shared {
    table: RwLock<Arc<Table>>,
    sites_file: PathBuf,
    pub(crate) limits: Limits,
    pub(crate) counters: Arc<Counters>,
    /// The port the HTTPS listener is bound to (redirects name it unless the file says
    /// the public one).
    pub(crate) https_port: u16,
    status: Mutex<Status>,
    reloading: Mutex<()>,
}

impl Shared {
    pub(crate) fn table(&self) -> Arc<Table> {
        match self.table.read() {
            Ok(t) => t.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    fn load(&self, previous: Option<&Table>) -> Result<(Table, Status), ConfigError> {
        load_file(&self.sites_file, previous, self.https_port)
    }

    fn reload(&self) -> Result<Status, ConfigError> {
        let _one_at_a_time = self.reloading.lock().unwrap_or_else(|p| p.into_inner());
        let previous = self.table();
        let (table, status) = self.load(Some(&previous))?;
        let serving = table.len();
        match self.table.write() {
            Ok(mut t) => *t = Arc::new(table),
            Err(poisoned) => *poisoned.into_inner() = Arc::new(table),
        }
        let refused = status.values().filter(|s| s.state != "serving").count();
        tracing::info!(serving, refused, "sites reloaded");
        *self.status.lock().unwrap_or_else(|p| p.into_inner()) = status.clone();
        Ok(status)
    }
}

fn load_file(
    path: &Path,
    previous: Option<&Table>,
    https_port: u16,
) -> Result<(Table, Status), ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    let file = config::parse_file(&text)?;
    let (table, status) = sites::load(&file, previous, https_port)?;
    if let Some(path) = &file.status_file {
        if let Err(e) = write_status(path, &status) {
            tracing::warn!(path = %path.display(), "status file: {e}");
        }
    }
    Ok((table, status))
}

fn write_status(path: &Path, status: &Status) -> std::io::Result<()> {
    let text = serde_json::to_string_pretty(status).map_err(std::io::Error::other)?;
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path)
}

/// Reloads and reads a running frontend (cheap to clone).
#[derive(Debug, Clone)]
pub struct Handle(Arc<Shared>);

impl Handle {
    /// Reads the sites file again and serves what it says from the next request on; on
    /// an error of the whole file, the sites in force stay.
    pub fn reload(&self) -> Result<Status, ConfigError> {
        self.0.reload()
    }

    /// What each site publishes, as of the last load.
    pub fn status(&self) -> Status {
        self.0
            .status
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn counters(&self) -> CounterValues {
        self.0.counters.values()
    }
}

/// A bound frontend, ready to serve.
pub struct Frontend {
    shared: Arc<Shared>,
    https: TcpListener,
    http: Option<TcpListener>,
    tls: tokio_rustls::TlsAcceptor,
}

impl std::fmt::Debug for Frontend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Frontend")
            .field("https", &self.https.local_addr().ok())
            .field(
                "http",
                &self.http.as_ref().and_then(|l| l.local_addr().ok()),
            )
            .finish_non_exhaustive()
    }
}

async fn bind(addr: SocketAddr) -> Result<TcpListener, FrontendError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| FrontendError::Bind { addr, source })
}

impl Frontend {
    /// Binds the listeners and loads the sites file (an error of the whole file is an
    /// error here; a site's is in the status).
    pub async fn bind(options: Options) -> Result<Frontend, FrontendError> {
        let https = bind(options.listen_https).await?;
        let http = match options.listen_http {
            Some(addr) => Some(bind(addr).await?),
            None => None,
        };
        let https_port = https
            .local_addr()
            .map_err(|source| FrontendError::Bind {
                addr: options.listen_https,
                source,
            })?
            .port();
        let mut limits = options.limits;
        limits.max_header_bytes = limits.max_header_bytes.max(8192);
        let (table, status) = load_file(&options.sites_file, None, https_port)?;
        let shared = Arc::new(Shared {
            table: RwLock::new(Arc::new(table)),
            sites_file: options.sites_file,
            limits,
            counters: Arc::new(Counters::default()),
            https_port,
            status: Mutex::new(status),
            reloading: Mutex::new(()),
        });
        let tls = tls::server_config(shared.clone()).map_err(FrontendError::Tls)?;
        Ok(Frontend {
            shared,
            https,
            http,
            tls: tokio_rustls::TlsAcceptor::from(tls),
        })
    }

    pub fn https_addr(&self) -> std::io::Result<SocketAddr> {
        self.https.local_addr()
    }

    pub fn http_addr(&self) -> Option<std::io::Result<SocketAddr>> {
        self.http.as_ref().map(TcpListener::local_addr)
    }

    pub fn handle(&self) -> Handle {
        Handle(self.shared.clone())
    }

    /// Serves until `shutdown` completes; then stops accepting (connections open are
    /// dropped with the runtime).
    pub async fn serve(self, shutdown: impl Future<Output = ()>) {
        let permits = Arc::new(Semaphore::new(self.shared.limits.max_connections));
        let https = accept_loop(
            self.https,
            self.shared.clone(),
            Some(self.tls),
            permits.clone(),
        );
        let http = async {
            match self.http {
                Some(l) => accept_loop(l, self.shared.clone(), None, permits).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = shutdown => {}
            _ = https => {}
            _ = http => {}
        }
    }
}

async fn accept_loop(
    listener: TcpListener,
    shared: Arc<Shared>,
    tls: Option<tokio_rustls::TlsAcceptor>,
    permits: Arc<Semaphore>,
) {
    loop {
        let Ok(permit) = permits.clone().acquire_owned().await else {
            return;
        };
        let (tcp, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of descriptors and the like: wait, do not spin.
                tracing::warn!("accept: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let shared = shared.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            connection(shared, tls, tcp, peer).await;
            drop(permit);
        });
    }
}

async fn connection(
    shared: Arc<Shared>,
    tls: Option<tokio_rustls::TlsAcceptor>,
    tcp: TcpStream,
    peer: SocketAddr,
) {
    let limits = shared.limits.clone();
    let state = Arc::new(ConnState::default());
    let bounds = |http1| Bounds {
        header: limits.header_timeout,
        idle: limits.idle_timeout,
        http1,
    };
    match tls {
        None => {
            let info = Arc::new(ConnInfo {
                peer,
                https: false,
                sni: None,
                state: state.clone(),
            });
            let io = TimedIo::new(tcp, state, shared.counters.clone(), bounds(true));
            serve_http1(shared, info, io).await;
        }
        Some(acceptor) => {
            let stream =
                match tokio::time::timeout(limits.handshake_timeout, acceptor.accept(tcp)).await {
                    Ok(Ok(s)) => s,
                    Ok(Err(e)) => {
                        shared
                            .counters
                            .tls_handshake_failures
                            .fetch_add(1, Ordering::Relaxed);
                        tracing::debug!(%peer, "TLS handshake: {e}");
                        return;
                    }
                    Err(_) => {
                        shared
                            .counters
                            .tls_handshake_failures
                            .fetch_add(1, Ordering::Relaxed);
                        tracing::debug!(%peer, "no TLS handshake in time");
                        return;
                    }
                };
            let session = stream.get_ref().1;
            let sni = session.server_name().map(str::to_ascii_lowercase);
            let h2 = session.alpn_protocol() == Some(b"h2");
            let info = Arc::new(ConnInfo {
                peer,
                https: true,
                sni,
                state: state.clone(),
            });
            let io = TimedIo::new(stream, state, shared.counters.clone(), bounds(!h2));
            if h2 {
                let service = {
                    let shared = shared.clone();
                    service_fn(move |req| proxy::handle(shared.clone(), info.clone(), req))
                };
                let served = http2::Builder::new(TokioExecutor::new())
                    .max_header_list_size(
                        u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX),
                    )
                    .serve_connection(TokioIo::new(io), service)
                    .await;
                if let Err(e) = served {
                    tracing::debug!(%peer, "HTTP/2 connection: {e}");
                }
            } else {
                serve_http1(shared, info, io).await;
            }
        }
    }
}

async fn serve_http1<S>(shared: Arc<Shared>, info: Arc<ConnInfo>, io: TimedIo<S>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let peer = info.peer;
    let service = {
        let shared = shared.clone();
        service_fn(move |req| proxy::handle(shared.clone(), info.clone(), req))
    };
    let served = http1::Builder::new()
        .max_buf_size(shared.limits.max_header_bytes)
        .max_headers(shared.limits.max_headers)
        .header_read_timeout(None)
        .serve_connection(TokioIo::new(io), service)
        .with_upgrades()
        .await;
    if let Err(e) = served {
        if e.is_parse_too_large() {
            shared
                .counters
                .header_too_large
                .fetch_add(1, Ordering::Relaxed);
        }
        tracing::debug!(%peer, "HTTP/1 connection: {e}");
    }
}
