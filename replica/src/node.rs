//! One master replica: configuration, start-up, the two gRPC listeners, the snapshot
//! triggers, and a clean shutdown.

use super::network::Network;
use super::service::{raft_server, LeaderContact, MasterService, RaftService};
use super::types::{NodeId, NodeInfo, Raft, StateHandle};
use serde::{Deserialize, Serialize};
use slapos_proto::rpc::master::master_server::MasterServer;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// A replica's configuration file (TOML).
///
/// ```toml
/// id = 1
/// raft_addr = "[2001:db8::1]:7101"
/// api_addr = "[2001:db8::1]:7201"
/// data_dir = "/srv/slapos/master-1"
/// region = "eu-west"
/// metrics_addr = "127.0.0.1:9101"   # optional: Prometheus text on GET /metrics
///
/// [timers]            # across regions: heartbeat >= RTT, election >= 5 x heartbeat
/// heartbeat_ms = 100
/// election_timeout_min_ms = 300
/// election_timeout_max_ms = 600
///
/// [snapshot]
/// logs_since_last = 5000
/// max_log_bytes = 67108864
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplicaConfig {
    pub id: NodeId,
    /// Listen address of the Raft service (host:port; IPv6 in brackets).
    pub raft_addr: String,
    /// Listen address of the master API.
    pub api_addr: String,
    /// Address peers use to reach the Raft service, when it differs from `raft_addr`
    /// (e.g. listening on `[::]:7101`).
    #[serde(default)]
    pub advertise_raft_addr: Option<String>,
    #[serde(default)]
    pub advertise_api_addr: Option<String>,
    pub data_dir: PathBuf,
    /// Where to serve Prometheus metrics (`GET /metrics`), if anywhere.
    #[serde(default)]
    pub metrics_addr: Option<String>,
    #[serde(default)]
    pub region: String,
    /// `computer/partition` when this replica runs in a partition (the slapos-master
    /// release renders it): shown by `slapos cluster status`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hosted_by: Option<String>,
    /// The URL of the SLAP gateway beside this replica (the slapos-master release
    /// renders it): node agents learn the group's gateways from the members' URLs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway_url: Option<String>,
    #[serde(default)]
    pub timers: Timers,
    #[serde(default)]
    pub snapshot: SnapshotPolicy,
    /// Sync the state machine's batches too (the log is always synced).
    #[serde(default)]
    pub sync_state_machine: bool,
    /// Free space (MiB) the data directory's filesystem must keep: below it the replica
    /// stops writing (and so voting) rather than letting its store run out of space in
    /// the middle of a write, says why in `cluster status`, and starts again once there
    /// is twice as much free (`slapos master run`). 0: no reserve.
    #[serde(default = "default_min_free_mb")]
    pub min_free_mb: u64,
    /// mTLS on Raft and the master API (see `raft/tls.rs`): this replica's certificate
    /// (`replica:<id>`, naming its addresses), key, and the group's CA.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<master_client::tls::TlsFiles>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Timers {
    pub heartbeat_ms: u64,
    pub election_timeout_min_ms: u64,
    pub election_timeout_max_ms: u64,
}

impl Default for Timers {
    /// For a LAN or one region: a leader's loss is detected in 0.3-0.6 s, and a vote
    /// succeeds once voters' leader lease (the maximum election timeout) has run out, so
    /// a new leader writes about a second after a crash. Across regions:
    /// [`Timers::for_round_trip`].
    fn default() -> Self {
        Timers {
            heartbeat_ms: 100,
            election_timeout_min_ms: 300,
            election_timeout_max_ms: 600,
        }
    }
}

impl Timers {
    /// The timers for a group whose largest round trip between two members (jitter
    /// included) is `worst`. etcd's tuning guide sets the heartbeat near the largest round
    /// trip and the election timeout several times that; here openraft 0.9 also times an
    /// AppendEntries out after one heartbeat, and a peer's first one (or the first after a
    /// cut) opens the connection within it: TCP's handshake, then HTTP/2's, then the
    /// request, about three round trips (a heartbeat of 1.5 round trips never connected
    /// at 230 ms). So the heartbeat is 3 round trips, never under the LAN default of
    /// 100 ms, and an election waits 5 to 10 heartbeats.
    pub fn for_round_trip(worst: std::time::Duration) -> Timers {
        let heartbeat_ms = (worst.as_millis() as u64)
            .saturating_mul(3)
            .max(Timers::default().heartbeat_ms);
        Timers {
            heartbeat_ms,
            election_timeout_min_ms: heartbeat_ms.saturating_mul(5),
            election_timeout_max_ms: heartbeat_ms.saturating_mul(10),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SnapshotPolicy {
    /// Build a snapshot every this many log entries.
    pub logs_since_last: u64,
    /// ... or as soon as the log holds more than this many bytes.
    pub max_log_bytes: u64,
    /// Entries kept in the log behind a snapshot, for slow followers.
    pub keep_logs: u64,
}

impl Default for SnapshotPolicy {
    fn default() -> Self {
        SnapshotPolicy {
            logs_since_last: 5000,
            max_log_bytes: 64 << 20,
            keep_logs: 1000,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("cannot read {path}: {source}")]
    ReadConfig {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid configuration {path}: {message}")]
    Config { path: PathBuf, message: String },
    #[error("cannot open the data directory: {0}")]
    Store(#[from] raft_store::StoreError),
    #[error("raft: {0}")]
    Raft(String),
    #[error("cannot listen on {addr}: {message}")]
    Listen { addr: String, message: String },
    #[error("TLS: {0}")]
    Tls(String),
}

/// The default free-space reserve: room for a memtable flush (32 MiB) and a
/// compaction of a few of its files.
fn default_min_free_mb() -> u64 {
    256
}

impl ReplicaConfig {
    /// A replica with default timers and snapshot policy, no metrics endpoint and no
    /// advertised addresses of its own.
    pub fn new(id: NodeId, raft_addr: String, api_addr: String, data_dir: PathBuf) -> Self {
        ReplicaConfig {
            id,
            raft_addr,
            api_addr,
            advertise_raft_addr: None,
            advertise_api_addr: None,
            data_dir,
            metrics_addr: None,
            region: String::new(),
            hosted_by: None,
            gateway_url: None,
            timers: Timers::default(),
            snapshot: SnapshotPolicy::default(),
            sync_state_machine: false,
            min_free_mb: default_min_free_mb(),
            tls: None,
        }
    }

    pub fn load(path: &Path) -> Result<ReplicaConfig, NodeError> {
        let text = std::fs::read_to_string(path).map_err(|source| NodeError::ReadConfig {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text).map_err(|message| NodeError::Config {
            path: path.to_path_buf(),
            message,
        })
    }

    pub fn parse(text: &str) -> Result<ReplicaConfig, String> {
        let c: ReplicaConfig = toml::from_str(text).map_err(|e| e.to_string())?;
        c.validate()?;
        Ok(c)
    }

    pub fn to_toml(&self) -> String {
        toml::to_string(self).unwrap_or_default()
    }

    fn validate(&self) -> Result<(), String> {
        for (name, addr) in [("raft_addr", &self.raft_addr), ("api_addr", &self.api_addr)] {
            addr.parse::<SocketAddr>()
                .map_err(|e| format!("{name} '{addr}' is not host:port ({e})"))?;
        }
        let t = &self.timers;
        if t.heartbeat_ms == 0 || t.election_timeout_min_ms <= t.heartbeat_ms {
            return Err("timers: election_timeout_min_ms must exceed heartbeat_ms (> 0)".into());
        }
        if t.election_timeout_max_ms <= t.election_timeout_min_ms {
            return Err(
                "timers: election_timeout_max_ms must exceed election_timeout_min_ms".into(),
            );
        }
        if self.snapshot.logs_since_last == 0 {
            return Err("snapshot: logs_since_last must be > 0".into());
        }
        Ok(())
    }

    /// How the membership records this replica.
    pub fn node_info(&self) -> NodeInfo {
        NodeInfo {
            raft_addr: self
                .advertise_raft_addr
                .clone()
                .unwrap_or_else(|| self.raft_addr.clone()),
            api_addr: self
                .advertise_api_addr
                .clone()
                .unwrap_or_else(|| self.api_addr.clone()),
            region: self.region.clone(),
            hosted_by: self.hosted_by.clone().unwrap_or_default(),
            gateway_url: self.gateway_url.clone().unwrap_or_default(),
        }
    }

    /// The request that adds this replica to a group (`slapos master join`, `slapos up`,
    /// the harness): its id and the addresses and place it advertises.
    pub fn add_replica_request(&self, voter: bool) -> slapos_proto::rpc::master::AddReplicaRequest {
        let node = self.node_info();
        slapos_proto::rpc::master::AddReplicaRequest {
            id: self.id,
            raft_addr: node.raft_addr,
            api_addr: node.api_addr,
            region: node.region,
            hosted_by: node.hosted_by,
            gateway_url: node.gateway_url,
            voter,
        }
    }

    fn raft_config(&self) -> Result<Arc<openraft::Config>, NodeError> {
        let c = openraft::Config {
            cluster_name: "slapos-master".into(),
            heartbeat_interval: self.timers.heartbeat_ms,
            election_timeout_min: self.timers.election_timeout_min_ms,
            election_timeout_max: self.timers.election_timeout_max_ms,
            snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(self.snapshot.logs_since_last),
            max_in_snapshot_log_to_keep: self.snapshot.keep_logs,
            max_payload_entries: 512,
            ..Default::default()
        };
        Ok(Arc::new(
            c.validate().map_err(|e| NodeError::Raft(e.to_string()))?,
        ))
    }
}

/// A started replica.
pub struct Replica {
    pub id: NodeId,
    pub raft: Raft,
    pub state: StateHandle,
    pub log_stats: raft_store::LogStats,
    pub contact: Arc<LeaderContact>,
    /// Round trips to the peers, as this replica measured them.
    pub peers: crate::network::PeerContacts,
    pub metrics: Arc<super::metrics::Metrics>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    shutdown: tokio::sync::watch::Sender<bool>,
}

impl Replica {
    /// Open the store and start Raft, without serving anything.
    pub async fn open(config: &ReplicaConfig) -> Result<Replica, NodeError> {
        let (log_store, sm_store) = raft_store::open::<super::TypeConfig, crate::sm::Machine>(
            &config.data_dir,
            raft_store::StoreOptions {
                sync_state_machine: config.sync_state_machine,
                min_free_bytes: config.min_free_mb << 20,
                // openraft reads no more for one AppendEntries than the network sends.
                max_read_bytes: crate::network::MAX_APPEND_BYTES,
                ..Default::default()
            },
        )
        .await?;
        let state = sm_store.handle();
        let log_stats = log_store.stats();
        let contacts = crate::network::PeerContacts::default();
        let raft = Raft::new(
            config.id,
            config.raft_config()?,
            Network {
                state: Some(state.clone()),
                contacts: contacts.clone(),
                ..Network::default()
            },
            log_store,
            sm_store,
        )
        .await
        .map_err(|e| NodeError::Raft(e.to_string()))?;
        let (shutdown, _) = tokio::sync::watch::channel(false);
        Ok(Replica {
            id: config.id,
            raft,
            state,
            log_stats,
            contact: Arc::new(LeaderContact::default()),
            peers: contacts,
            metrics: Arc::new(super::metrics::Metrics::default()),
            tasks: Vec::new(),
            shutdown,
        })
    }

    /// Bootstrap a group of one with this replica (only on empty storage).
    pub async fn initialize(&self, node: NodeInfo) -> Result<(), NodeError> {
        let mut members = BTreeMap::new();
        members.insert(self.id, node);
        self.raft
            .initialize(members)
            .await
            .map_err(|e| NodeError::Raft(e.to_string()))
    }

    /// Serve the Raft and master APIs, and watch the log size.
    pub async fn serve(&mut self, config: &ReplicaConfig) -> Result<(), NodeError> {
        let raft_listener = bind(&config.raft_addr).await?;
        let api_listener = bind(&config.api_addr).await?;
        let raft_service = raft_server(RaftService {
            raft: self.raft.clone(),
            contact: self.contact.clone(),
            state: self.state.clone(),
        });
        let (batcher, batch_task) = super::service::Batcher::start(
            self.raft.clone(),
            Duration::from_millis(2 * config.timers.election_timeout_max_ms),
        );
        self.tasks.push(batch_task);
        let master_service = MasterServer::new(MasterService {
            id: self.id,
            batcher,
            metrics: self.metrics.clone(),
            raft: self.raft.clone(),
            state: self.state.clone(),
            log_stats: self.log_stats.clone(),
            contact: self.contact.clone(),
            peers: self.peers.clone(),
            forward: std::sync::Mutex::new(None),
        })
        .max_decoding_message_size(64 << 20)
        .max_encoding_message_size(256 << 20);
        let tls = match &config.tls {
            Some(files) => {
                master_client::tls::set_client(files).map_err(|e| NodeError::Tls(e.to_string()))?;
                Some(super::tls::server(files).map_err(|e| NodeError::Tls(e.to_string()))?)
            }
            None => None,
        };
        let builder = || -> Result<tonic::transport::Server, NodeError> {
            let b = tonic::transport::Server::builder();
            match &tls {
                Some(t) => b
                    .tls_config(t.clone())
                    .map_err(|e| NodeError::Tls(e.to_string())),
                None => Ok(b),
            }
        };
        let admit = config.tls.is_some();
        let check = |admits: super::tls::Admits, state: StateHandle| {
            move |r: tonic::Request<()>| {
                if admit {
                    super::tls::admit(r, admits, &state)
                } else {
                    Ok(r)
                }
            }
        };
        let raft_service = tonic::service::interceptor::InterceptedService::new(
            raft_service,
            check(super::tls::Admits::Replicas, self.state.clone()),
        );
        let master_service = tonic::service::interceptor::InterceptedService::new(
            master_service,
            check(super::tls::Admits::ReplicasAndGateways, self.state.clone()),
        );
        let raft_builder = builder()?;
        let api_builder = builder()?;
        let mut stop = self.shutdown.subscribe();
        self.tasks.push(tokio::spawn(async move {
            let incoming = nodelay(raft_listener);
            let r = raft_builder
                .tcp_nodelay(true)
                .add_service(raft_service)
                .serve_with_incoming_shutdown(incoming, async move {
                    let _ = stop.wait_for(|s| *s).await;
                })
                .await;
            if let Err(e) = r {
                tracing::error!(error = %e, "raft service stopped");
            }
        }));
        let mut stop = self.shutdown.subscribe();
        self.tasks.push(tokio::spawn(async move {
            let incoming = nodelay(api_listener);
            let r = api_builder
                .tcp_nodelay(true)
                .add_service(master_service)
                .serve_with_incoming_shutdown(incoming, async move {
                    let _ = stop.wait_for(|s| *s).await;
                })
                .await;
            if let Err(e) = r {
                tracing::error!(error = %e, "master API stopped");
            }
        }));
        self.tasks.push(self.metrics.watch(&self.raft));
        if let Some(addr) = &config.metrics_addr {
            let listener = bind(addr).await?;
            let (metrics, raft, log) = (
                self.metrics.clone(),
                self.raft.clone(),
                self.log_stats.clone(),
            );
            let app = axum::Router::new().route(
                "/metrics",
                axum::routing::get(move || {
                    let body = metrics.render(&raft, &log);
                    async move {
                        (
                            [(
                                axum::http::header::CONTENT_TYPE,
                                "text/plain; version=0.0.4",
                            )],
                            body,
                        )
                    }
                }),
            );
            let mut stop = self.shutdown.subscribe();
            self.tasks.push(tokio::spawn(async move {
                let r = axum::serve(listener, app)
                    .with_graceful_shutdown(async move {
                        let _ = stop.wait_for(|s| *s).await;
                    })
                    .await;
                if let Err(e) = r {
                    tracing::error!(error = %e, "metrics endpoint stopped");
                }
            }));
        }
        // Snapshot by size: openraft counts entries; we watch bytes.
        let raft = self.raft.clone();
        let stats = self.log_stats.clone();
        let max = config.snapshot.max_log_bytes;
        let mut stop = self.shutdown.subscribe();
        self.tasks.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(2));
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = stop.wait_for(|s| *s) => return,
                }
                if stats.log_size_bytes() > max {
                    tracing::info!(
                        bytes = stats.log_size_bytes(),
                        max,
                        "log over its size limit: snapshot"
                    );
                    if let Err(e) = raft.trigger().snapshot().await {
                        tracing::warn!(error = %e, "cannot trigger a snapshot");
                    }
                }
            }
        }));
        tracing::info!(id = self.id, raft = %config.raft_addr, api = %config.api_addr, "replica serving");
        Ok(())
    }

    /// Stop serving, shut Raft down and wait until the store is closed.
    /// Waits until this replica's Raft node stops on its own (a storage error: its disk
    /// full, failing), and says why.
    pub async fn stopped(&self) -> String {
        let mut metrics = self.raft.metrics();
        loop {
            if let Some(why) = stopped_reason(&metrics.borrow(), &self.log_stats) {
                return why;
            }
            if metrics.changed().await.is_err() {
                return self
                    .log_stats
                    .space_refusal()
                    .or_else(|| self.log_stats.write_failure())
                    .unwrap_or_else(|| "the Raft node stopped".into());
            }
        }
    }

    /// Whether this replica stopped because its disk failed a write (an I/O error, not
    /// the free-space reserve): its store must not be used again in this process.
    pub fn disk_failed(&self) -> bool {
        self.log_stats.space_refusal().is_none() && self.log_stats.write_failure().is_some()
    }

    /// Whether the data directory's filesystem has room to start again: twice the
    /// reserve (so that a replica does not stop again at its first write).
    pub fn has_room(config: &ReplicaConfig) -> bool {
        raft_store::free_bytes(&config.data_dir)
            .is_ok_and(|free| free >= (config.min_free_mb << 20).saturating_mul(2))
    }

    /// Stops serving and closes the store. The listeners stop accepting at once and
    /// finish the requests in flight for at most [`SHUTDOWN_GRACE`]; what is still open
    /// then (a gateway's watch, a held poll: streams that only end when their caller
    /// goes) is dropped, so that a replica stopping on its own, or on SIGTERM, exits
    /// within the grace period whoever is connected.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        if let Err(e) = self.raft.shutdown().await {
            tracing::warn!(error = %e, "raft shutdown");
        }
        let deadline = tokio::time::Instant::now() + SHUTDOWN_GRACE;
        let mut cut = 0usize;
        for mut t in self.tasks {
            if tokio::time::timeout_at(deadline, &mut t).await.is_err() {
                t.abort();
                let _ = t.await;
                cut += 1;
            }
        }
        if cut > 0 {
            tracing::warn!(
                tasks = cut,
                grace = ?SHUTDOWN_GRACE,
                "requests still open after the grace period were dropped"
            );
        }
        self.state.wait_closed().await;
    }
}

/// How long a shutdown lets the requests in flight finish before dropping them.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);

/// Why a Raft node stopped by itself (None while it runs): the store's refusal for lack
/// of space when that was the cause, else the write its disk failed, else openraft's
/// fatal error.
pub fn stopped_reason(
    m: &openraft::RaftMetrics<NodeId, NodeInfo>,
    log: &raft_store::LogStats,
) -> Option<String> {
    match &m.running_state {
        Ok(()) => None,
        Err(fatal) => Some(
            log.space_refusal()
                .or_else(|| log.write_failure())
                .unwrap_or_else(|| fatal.to_string()),
        ),
    }
}

/// Accepted connections with Nagle's algorithm off: Raft and API messages are small and
/// latency-bound (the server builder's own `tcp_nodelay` does not reach streams handed to
/// `serve_with_incoming`).
fn nodelay(
    listener: tokio::net::TcpListener,
) -> impl tokio_stream::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    use tokio_stream::StreamExt;
    tokio_stream::wrappers::TcpListenerStream::new(listener).map(|conn| {
        let conn = conn?;
        conn.set_nodelay(true)?;
        Ok(conn)
    })
}

async fn bind(addr: &str) -> Result<tokio::net::TcpListener, NodeError> {
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| NodeError::Listen {
            addr: addr.to_string(),
            message: e.to_string(),
        })
}
