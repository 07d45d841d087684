//! Certificate-checked TLS 1.3 tunnels between partitions: the role SlapOS gave stunnel
//! (a legacy service on one partition reached by a consumer on another), with both ends
//! checking the other's identity in its certificate (`DESIGN.md`, threat model).
//!
//! - The **server** end listens (the partition's IPv6), requires a client certificate
//!   of the group's CA whose identity is on its allow-list, and forwards each accepted
//!   connection to its local target (the legacy service).
//! - The **client** end listens on a local address, and for each connection connects
//!   out to the server end, presenting its own certificate and checking that the
//!   server's names the identity expected.
//!
//! Certificates, keys and the CA are re-read when their files change (a renewal) without
//! dropping open connections; handshakes and connects are bounded in time; a half-closed
//! connection keeps flowing the other way until both ends close; at most
//! `max_connections` are open at once (the others wait in the listen backlog).

#![forbid(unsafe_code)]

mod error;
mod tls;

pub use error::TunnelError;
pub use tls::{describe, Refused, TlsFiles};

use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use rustls::{ClientConfig, ServerConfig};
use rustls_pki_types::ServerName;
use slapos_domain::Identity;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

/// Bytes of each direction's copy buffer (16 KiB TLS records, several per read).
const BUFFER: usize = 64 * 1024;

/// Bounds of a tunnel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Connections relayed at once; the next wait (unaccepted) until one ends.
    pub max_connections: usize,
    /// Time for a TLS handshake, from the TCP accept or connect.
    pub handshake_timeout: Duration,
    /// Time to connect to the target (server end) or to the server end (client end).
    pub connect_timeout: Duration,
    /// How often the certificate, key and CA files are read for a change.
    pub reload_every: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 1024,
            handshake_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(10),
            reload_every: Duration::from_secs(5),
        }
    }
}

/// Which end of the tunnel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// Beside the legacy service: admits clients whose identity is in `allow` and
    /// forwards them to `target` (`host:port`).
    Server {
        allow: Vec<Identity>,
        target: String,
    },
    /// Beside the consumer: relays local connections to the server end at `server`
    /// (`host:port`, `[v6]:port`), whose certificate must name `server_identity`.
    Client {
        server: String,
        server_identity: Identity,
    },
}

/// A tunnel end's options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    pub listen: SocketAddr,
    pub tls: TlsFiles,
    pub role: Role,
    pub limits: Limits,
}

enum Side {
    Server {
        target: String,
        allow: Arc<Vec<Identity>>,
        config: RwLock<Arc<ServerConfig>>,
    },
    Client {
        server: String,
        server_name: ServerName<'static>,
        expected: Identity,
        config: RwLock<Arc<ClientConfig>>,
    },
}

/// A bound tunnel end, ready to serve.
pub struct Tunnel {
    listener: TcpListener,
    options: Options,
    side: Arc<Side>,
    material: tls::Material,
}

impl std::fmt::Debug for Tunnel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tunnel")
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

/// The host part of `host:port` or `[v6]:port`, as rustls names a server (an IP
/// address sends no SNI; the identity, not the name, is what is checked).
fn server_name(server: &str) -> Result<ServerName<'static>, TunnelError> {
    let bad = || {
        TunnelError::Options(format!(
            "server address {server:?}: expected HOST:PORT or [IPV6]:PORT"
        ))
    };
    let (host, port) = server.rsplit_once(':').ok_or_else(bad)?;
    port.parse::<u16>().map_err(|_| bad())?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    ServerName::try_from(host.to_owned()).map_err(|_| bad())
}

fn check_target(target: &str) -> Result<(), TunnelError> {
    match target.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => Ok(()),
        _ => Err(TunnelError::Options(format!(
            "target {target:?}: expected HOST:PORT or [IPV6]:PORT"
        ))),
    }
}

impl Tunnel {
    /// Reads the TLS files (refusing what does not make a configuration) and binds the
    /// listening address.
    pub async fn bind(options: Options) -> Result<Tunnel, TunnelError> {
        let l = &options.limits;
        if l.max_connections == 0 || l.handshake_timeout.is_zero() || l.connect_timeout.is_zero() {
            return Err(TunnelError::Options(
                "limits must be positive (connections, handshake and connect timeouts)".into(),
            ));
        }
        let material = options.tls.read().await?;
        let side = match &options.role {
            Role::Server { allow, target } => {
                if allow.is_empty() {
                    return Err(TunnelError::Options(
                        "no identity allowed: name at least one (--allow)".into(),
                    ));
                }
                check_target(target)?;
                let allow = Arc::new(allow.clone());
                let (config, own) = tls::server_config(&options.tls, &material, &allow)?;
                tracing::info!(identity = %own, listen = %options.listen, %target, "tunnel server end");
                Side::Server {
                    target: target.clone(),
                    allow,
                    config: RwLock::new(config),
                }
            }
            Role::Client {
                server,
                server_identity,
            } => {
                let name = server_name(server)?;
                let (config, own) = tls::client_config(&options.tls, &material, server_identity)?;
                tracing::info!(identity = %own, listen = %options.listen, %server, server_identity = %server_identity.common_name(), "tunnel client end");
                Side::Client {
                    server: server.clone(),
                    server_name: name,
                    expected: server_identity.clone(),
                    config: RwLock::new(config),
                }
            }
        };
        let listener =
            TcpListener::bind(options.listen)
                .await
                .map_err(|source| TunnelError::Listen {
                    addr: options.listen,
                    source,
                })?;
        Ok(Tunnel {
            listener,
            options,
            side: Arc::new(side),
            material,
        })
    }

    /// The address it listens on (the port chosen when it was 0).
    pub fn local_addr(&self) -> Result<SocketAddr, TunnelError> {
        self.listener
            .local_addr()
            .map_err(|source| TunnelError::Listen {
                addr: self.options.listen,
                source,
            })
    }

    /// Serves until `shutdown` completes: stops accepting then; connections being
    /// relayed end with the runtime.
    pub async fn serve(self, shutdown: impl Future<Output = ()>) {
        let Tunnel {
            listener,
            options,
            side,
            material,
        } = self;
        let watcher = tokio::spawn(watch(
            options.tls.clone(),
            options.limits.reload_every,
            material,
            side.clone(),
        ));
        let limits = Arc::new(options.limits);
        let permits = Arc::new(Semaphore::new(limits.max_connections));
        tokio::pin!(shutdown);
        loop {
            let permit = tokio::select! {
                _ = &mut shutdown => break,
                p = permits.clone().acquire_owned() => match p {
                    Ok(p) => p,
                    Err(_) => break,
                },
            };
            let (tcp, peer) = tokio::select! {
                _ = &mut shutdown => break,
                a = listener.accept() => match a {
                    Ok(a) => a,
                    Err(e) => {
                        // Out of descriptors and the like: wait rather than spin.
                        tracing::warn!("accept: {e}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
            };
            let _ = tcp.set_nodelay(true);
            let side = side.clone();
            let limits = limits.clone();
            tokio::spawn(async move {
                match &*side {
                    Side::Server { target, config, .. } => {
                        let config = current(config);
                        server_connection(tcp, peer, config, target, &limits).await
                    }
                    Side::Client {
                        server,
                        server_name,
                        expected,
                        config,
                    } => {
                        let config = current(config);
                        client_connection(tcp, peer, config, server, server_name, expected, &limits)
                            .await
                    }
                }
                drop(permit);
            });
        }
        watcher.abort();
    }
}

fn current<T>(slot: &RwLock<Arc<T>>) -> Arc<T> {
    match slot.read() {
        Ok(g) => g.clone(),
        Err(poisoned) => poisoned.into_inner().clone(),
    }
}

fn replace<T>(slot: &RwLock<Arc<T>>, value: Arc<T>) {
    match slot.write() {
        Ok(mut g) => *g = value,
        Err(poisoned) => *poisoned.into_inner() = value,
    }
}

/// Reads the TLS files every `every`; when their bytes change and make a configuration,
/// the next connections use it (open ones keep theirs). A change that does not (a key
/// written before its certificate, a file half-written) keeps the previous one, said
/// once per distinct error.
async fn watch(files: TlsFiles, every: Duration, mut last: tls::Material, side: Arc<Side>) {
    let mut last_error = String::new();
    if every.is_zero() {
        return;
    }
    loop {
        tokio::time::sleep(every).await;
        let m = match files.read().await {
            Ok(m) => m,
            Err(e) => {
                let e = e.to_string();
                if e != last_error {
                    tracing::warn!("keeping the certificates in use: {e}");
                    last_error = e;
                }
                continue;
            }
        };
        if m == last {
            continue;
        }
        let built = match &*side {
            Side::Server { allow, config, .. } => {
                tls::server_config(&files, &m, allow).map(|(c, id)| {
                    replace(config, c);
                    id
                })
            }
            Side::Client {
                expected, config, ..
            } => tls::client_config(&files, &m, expected).map(|(c, id)| {
                replace(config, c);
                id
            }),
        };
        match built {
            Ok(identity) => {
                tracing::info!(%identity, cert = %files.cert.display(), "certificates reloaded");
                last = m;
                last_error.clear();
            }
            Err(e) => {
                let e = e.to_string();
                if e != last_error {
                    tracing::warn!("keeping the certificates in use: {e}");
                    last_error = e;
                }
            }
        }
    }
}

async fn server_connection(
    tcp: TcpStream,
    peer: SocketAddr,
    config: Arc<ServerConfig>,
    target: &str,
    limits: &Limits,
) {
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    let mut tls = match tokio::time::timeout(limits.handshake_timeout, acceptor.accept(tcp)).await {
        Err(_) => {
            tracing::warn!(%peer, "refused: no TLS handshake within {:?}", limits.handshake_timeout);
            return;
        }
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
            // A port probe (a promise checking that we listen): nothing to refuse.
            tracing::debug!(%peer, "closed before a TLS handshake");
            return;
        }
        Ok(Err(e)) => {
            tracing::warn!(%peer, "refused: {}", describe(&e));
            return;
        }
        Ok(Ok(tls)) => tls,
    };
    let identity = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .and_then(|c| slapos_ca::identity_of(c).ok())
        .map(|(id, _)| id.common_name())
        .unwrap_or_default();
    let to = match tokio::time::timeout(limits.connect_timeout, TcpStream::connect(target)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            tracing::warn!(%peer, %identity, %target, "target unreachable: {e}");
            let _ = tls.shutdown().await;
            return;
        }
        Err(_) => {
            tracing::warn!(%peer, %identity, %target, "target unreachable within {:?}", limits.connect_timeout);
            let _ = tls.shutdown().await;
            return;
        }
    };
    let _ = to.set_nodelay(true);
    tracing::info!(%peer, %identity, "accepted");
    relay(tls, to, peer, &identity).await;
}

async fn client_connection(
    local: TcpStream,
    peer: SocketAddr,
    config: Arc<ClientConfig>,
    server: &str,
    server_name: &ServerName<'static>,
    expected: &Identity,
    limits: &Limits,
) {
    let tcp = match tokio::time::timeout(limits.connect_timeout, TcpStream::connect(server)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            tracing::warn!(%peer, %server, "server end unreachable: {e}");
            return;
        }
        Err(_) => {
            tracing::warn!(%peer, %server, "server end unreachable within {:?}", limits.connect_timeout);
            return;
        }
    };
    let _ = tcp.set_nodelay(true);
    let connector = tokio_rustls::TlsConnector::from(config);
    let tls = match tokio::time::timeout(
        limits.handshake_timeout,
        connector.connect(server_name.clone(), tcp),
    )
    .await
    {
        Err(_) => {
            tracing::warn!(%peer, %server, "no TLS handshake with the server end within {:?}", limits.handshake_timeout);
            return;
        }
        Ok(Err(e)) => {
            tracing::warn!(%peer, %server, "server end refused: {}", describe(&e));
            return;
        }
        Ok(Ok(tls)) => tls,
    };
    let identity = expected.common_name();
    tracing::debug!(%peer, %server, %identity, "connected");
    relay(local, tls, peer, &identity).await;
}

/// Copies both ways until both ends have closed: an end that closes its sending side
/// (EOF) has it passed on (TCP FIN, TLS close_notify) while the other way keeps flowing.
async fn relay<A, B>(mut a: A, mut b: B, peer: SocketAddr, identity: &str)
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    match tokio::io::copy_bidirectional_with_sizes(&mut a, &mut b, BUFFER, BUFFER).await {
        Ok((up, down)) => {
            tracing::debug!(%peer, %identity, up, down, "closed");
        }
        Err(e) => {
            // Under TLS 1.3 a server end checks the client's certificate after the
            // client's handshake is done: its refusal arrives here, as an alert.
            let refused = e
                .get_ref()
                .and_then(|i| i.downcast_ref::<rustls::Error>())
                .is_some_and(|r| matches!(r, rustls::Error::AlertReceived(_)));
            if refused {
                tracing::warn!(%peer, %identity, "the other end refused us: {}", describe(&e));
            } else {
                tracing::debug!(%peer, %identity, "ended: {}", describe(&e));
            }
        }
    }
}
