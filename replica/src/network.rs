//! Raft traffic between replicas over gRPC (tonic). openraft's messages travel as JSON in
//! the `data` field; snapshots are streamed in chunks on one client-streaming call.

use super::types::{NodeId, NodeInfo, TypeConfig};
use master_client::channel::endpoint;
use openraft::error::{
    Fatal, InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, ReplicationClosed,
    StreamingError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    SnapshotResponse, VoteRequest, VoteResponse,
};
use openraft::{Snapshot, Vote};
use serde::de::DeserializeOwned;
use serde::Serialize;
use slapos_proto::rpc::raft::raft_client::RaftClient;
use slapos_proto::rpc::raft::{RaftMessage, SnapshotChunk};
use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;
use tonic::transport::Channel;

/// Size of one snapshot chunk on the wire.
pub const SNAPSHOT_CHUNK: usize = 1 << 20;
/// The most bytes of entries one AppendEntries carries (at least one entry is always
/// sent, whatever its size).
pub const MAX_APPEND_BYTES: usize = 512 << 10;
/// The least an AppendEntries budget shrinks to after timeouts.
pub const MIN_APPEND_BYTES: usize = 16 << 10;
/// Largest gRPC message accepted on the Raft service (a batch of entries).
pub const MAX_RAFT_MESSAGE: usize = 64 << 20;

/// Makes one [`Peer`] per target replica.
#[derive(Clone)]
pub struct Network {
    pub connect_timeout: Duration,
    /// This replica's state, for the group id every message carries.
    pub state: Option<crate::types::StateHandle>,
    /// Round trips and last contact with each peer, as this replica's calls measure them.
    pub contacts: PeerContacts,
}

/// What this replica measured of each peer it sent AppendEntries to (as leader: every
/// member): the round trip of a heartbeat (an AppendEntries without entries, so the
/// time is the network's and the peer's, not the encoding of a large batch), smoothed,
/// and when the peer last answered one. `slapos cluster status` shows them.
#[derive(Debug, Clone, Default)]
pub struct PeerContacts(std::sync::Arc<std::sync::Mutex<BTreeMap<NodeId, PeerContact>>>);

#[derive(Debug, Clone, Copy)]
pub struct PeerContact {
    /// Smoothed round trip of heartbeats (the last 8 or so), None before the first.
    pub rtt: Option<Duration>,
    /// When the peer last answered an AppendEntries.
    pub last_answer: std::time::Instant,
}

impl PeerContacts {
    fn record(&self, peer: NodeId, took: Duration, heartbeat: bool) {
        let mut map = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let now = std::time::Instant::now();
        let entry = map.entry(peer).or_insert(PeerContact {
            rtt: None,
            last_answer: now,
        });
        entry.last_answer = now;
        if heartbeat {
            entry.rtt = Some(match entry.rtt {
                None => took,
                Some(old) => (old * 7 + took) / 8,
            });
        }
    }

    /// The peer's contact, if it ever answered.
    pub fn get(&self, peer: NodeId) -> Option<PeerContact> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&peer)
            .copied()
    }
}

impl std::fmt::Debug for Network {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Network")
            .field("connect_timeout", &self.connect_timeout)
            .finish_non_exhaustive()
    }
}

/// The metadata header naming the sender's group (see `group_of`).
pub const GROUP_HEADER: &str = "x-slapos-group";

/// The group id a replica's state names (None before the authority is installed, or
/// in a group made before groups had ids).
pub fn group_of(state: &crate::types::StateHandle) -> Option<String> {
    state.read(|m, _| m.group_id().map(str::to_owned))
}

impl Default for Network {
    fn default() -> Self {
        Network {
            connect_timeout: Duration::from_secs(2),
            state: None,
            contacts: PeerContacts::default(),
        }
    }
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = Peer;

    async fn new_client(&mut self, target: NodeId, node: &NodeInfo) -> Peer {
        Peer {
            target,
            addr: node.raft_addr.clone(),
            connect_timeout: self.connect_timeout,
            state: self.state.clone(),
            contacts: self.contacts.clone(),
            client: None,
            connecting: None,
            untried: false,
            append_budget: MAX_APPEND_BYTES,
            append_pending: false,
            binary: false,
        }
    }
}

/// The connection to one replica, opened lazily and reopened after a failure.
pub struct Peer {
    target: NodeId,
    addr: String,
    connect_timeout: Duration,
    state: Option<crate::types::StateHandle>,
    contacts: PeerContacts,
    client: Option<RaftClient<Channel>>,
    /// A connection being opened in the background (TCP's, TLS's and HTTP/2's round
    /// trips), kept across calls that time out meanwhile.
    connecting: Option<tokio::task::JoinHandle<Result<Channel, String>>>,
    /// The connection has not answered a call yet (its first may have timed out only for
    /// the time the connection took to open): kept through one AppendEntries timeout.
    untried: bool,
    /// Bytes of entries the next AppendEntries may carry: halved when the previous one
    /// did not finish (openraft dropped it at its timeout), doubled back after one that
    /// did, between `MIN_APPEND_BYTES` and `MAX_APPEND_BYTES`.
    append_budget: usize,
    /// An AppendEntries was sent and has not finished.
    append_pending: bool,
    /// The peer said it reads the binary encoding.
    binary: bool,
}

/// Response metadata by which a replica says it reads Raft messages in the binary
/// encoding: a peer sends JSON (what earlier releases read) until it has seen it.
pub const CODEC_HEADER: &str = "x-slapos-raft-codec";
/// The value of [`CODEC_HEADER`] for the binary encoding, version 1.
pub const CODEC_BINARY_V1: &str = "bin1";

/// Encodes a Raft message: binary (raft-store's entry encoding: a version byte, then
/// postcard) or JSON.
pub fn encode_wire<T: Serialize>(value: &T, binary: bool) -> Result<Vec<u8>, String> {
    if binary {
        raft_store::codec::encode_entry(value).map_err(|e| e.to_string())
    } else {
        serde_json::to_vec(value).map_err(|e| e.to_string())
    }
}

/// Decodes a Raft message in either encoding.
pub fn decode_wire<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    raft_store::codec::decode_entry(bytes).map_err(|e| e.to_string())
}

/// Whether a message is in the binary encoding.
pub fn is_binary(bytes: &[u8]) -> bool {
    bytes.first() == Some(&raft_store::codec::ENTRY_BINARY_V1)
}

fn encode<T: Serialize>(value: &T, binary: bool) -> Result<Vec<u8>, NetworkError> {
    encode_wire(value, binary).map_err(|e| NetworkError::new(&std::io::Error::other(e)))
}

/// The bytes `value` takes encoded in JSON, counted without keeping them: the budget of
/// an AppendEntries counts JSON, an upper bound of its binary encoding too.
fn encoded_len<T: Serialize>(value: &T) -> Result<usize, NetworkError> {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0 += bytes.len();
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    serde_json::to_writer(&mut count, value).map_err(|e| NetworkError::new(&e))?;
    Ok(count.0)
}

/// How many of `entries`, from the first, fit in `budget` bytes encoded: at least one,
/// and the entries past the budget are not encoded at all.
fn entries_within<T: Serialize>(entries: &[T], budget: usize) -> Result<usize, NetworkError> {
    let mut used = 0usize;
    for (i, e) in entries.iter().enumerate() {
        used = used.saturating_add(encoded_len(e)?);
        if used > budget && i > 0 {
            return Ok(i);
        }
    }
    Ok(entries.len())
}

fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, NetworkError> {
    decode_wire(bytes).map_err(|e| NetworkError::new(&std::io::Error::other(e)))
}

/// How long a connection to a peer may take to open in the background.
const CONNECT_WITHIN: Duration = Duration::from_secs(10);

impl Peer {
    /// The connection to the peer, waiting for it `within` at most. A connection is opened
    /// in a task of its own, which a call that gives up (openraft times an AppendEntries
    /// out after one heartbeat) leaves running: across regions, TCP's, TLS's and HTTP/2's
    /// round trips may take longer than a heartbeat, and a connection dropped each time
    /// its first call timed out would never open.
    async fn ready_client(&mut self, within: Duration) -> Result<RaftClient<Channel>, Unreachable> {
        if let Some(c) = &self.client {
            return Ok(c.clone());
        }
        let connecting = match &mut self.connecting {
            Some(task) => task,
            None => {
                let endpoint =
                    endpoint(&self.addr, self.connect_timeout).map_err(|e| Unreachable::new(&e))?;
                self.connecting.insert(tokio::spawn(async move {
                    match tokio::time::timeout(CONNECT_WITHIN, endpoint.connect()).await {
                        Ok(Ok(channel)) => Ok(channel),
                        Ok(Err(e)) => Err(e.to_string()),
                        Err(_) => Err(format!("no connection within {CONNECT_WITHIN:?}")),
                    }
                }))
            }
        };
        let opened = match tokio::time::timeout(within, connecting).await {
            Err(_) => {
                return Err(Unreachable::new(&std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "still connecting",
                )))
            }
            Ok(joined) => joined,
        };
        self.connecting = None;
        let channel = match opened {
            Ok(Ok(channel)) => channel,
            Ok(Err(e)) => return Err(Unreachable::new(&std::io::Error::other(e))),
            Err(e) => return Err(Unreachable::new(&e)),
        };
        let client = RaftClient::new(channel)
            .max_decoding_message_size(MAX_RAFT_MESSAGE)
            .max_encoding_message_size(MAX_RAFT_MESSAGE);
        self.client = Some(client.clone());
        self.untried = true;
        Ok(client)
    }

    fn learn_codec(&mut self, metadata: &tonic::metadata::MetadataMap) {
        let binary = metadata
            .get(CODEC_HEADER)
            .is_some_and(|v| v.as_bytes() == CODEC_BINARY_V1.as_bytes());
        if binary != self.binary {
            tracing::debug!(
                target_id = self.target,
                binary,
                "peer's Raft message encoding"
            );
            self.binary = binary;
        }
    }

    /// A failed call drops the connection so the next one starts afresh.
    fn transport_failed(&mut self, status: &tonic::Status) -> Unreachable {
        self.client = None;
        Unreachable::new(status)
    }

    /// Every message names the sender's group, which the receiver checks.
    fn name_group(&self, metadata: &mut tonic::metadata::MetadataMap) {
        let group = self.state.as_ref().and_then(group_of);
        if let Some(v) = group.and_then(|g| tonic::metadata::MetadataValue::try_from(g).ok()) {
            metadata.insert(GROUP_HEADER, v);
        }
    }

    async fn unary<Req, Resp, E>(
        &mut self,
        req: &Req,
        option: &RPCOption,
        call: impl AsyncFnOnce(
            RaftClient<Channel>,
            tonic::Request<RaftMessage>,
        ) -> Result<tonic::Response<RaftMessage>, tonic::Status>,
    ) -> Result<Resp, RPCError<NodeId, NodeInfo, RaftError<NodeId, E>>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let data = encode(req, self.binary).map_err(RPCError::Network)?;
        self.unary_encoded(data, option, call).await
    }

    async fn unary_encoded<Resp, E>(
        &mut self,
        data: Vec<u8>,
        option: &RPCOption,
        call: impl AsyncFnOnce(
            RaftClient<Channel>,
            tonic::Request<RaftMessage>,
        ) -> Result<tonic::Response<RaftMessage>, tonic::Status>,
    ) -> Result<Resp, RPCError<NodeId, NodeInfo, RaftError<NodeId, E>>>
    where
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let client = self
            .ready_client(option.hard_ttl())
            .await
            .map_err(RPCError::Unreachable)?;
        let mut request = tonic::Request::new(RaftMessage { data });
        request.set_timeout(option.hard_ttl());
        self.name_group(request.metadata_mut());
        let reply = match call(client, request).await {
            Ok(r) => {
                self.untried = false;
                self.learn_codec(r.metadata());
                r.into_inner()
            }
            Err(status) => return Err(RPCError::Unreachable(self.transport_failed(&status))),
        };
        let result: Result<Resp, RaftError<NodeId, E>> =
            decode(&reply.data).map_err(RPCError::Network)?;
        result.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

impl RaftNetwork<TypeConfig> for Peer {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, NodeInfo, RaftError<NodeId>>> {
        let mut rpc = rpc;
        // openraft bounds each AppendEntries by the heartbeat interval, this encoding
        // included: a follower that fell behind on large entries gets them in pieces it
        // can take in that time, and openraft sends the rest at once (`PartialSuccess`).
        // A previous call that never finished was dropped at openraft's timeout: send
        // less this time (a starved or slow follower still makes progress).
        // The connection goes too: a peer that restarted in place (a replica back from
        // a full disk) may have left it half-open, and every call on it would time out.
        // A connection that has not answered yet is kept once: its first call may have
        // timed out only because opening it (three round trips with TLS) took most of
        // the heartbeat.
        if self.append_pending {
            self.append_budget = (self.append_budget / 2).max(MIN_APPEND_BYTES);
            if std::mem::take(&mut self.untried) {
                tracing::debug!(target_id = self.target, "new connection kept once");
            } else {
                self.client = None;
            }
        }
        let budget = self.append_budget;
        // The cut comes before the request is encoded, so that the work of one call
        // follows the budget and not the number of entries openraft handed over
        // (issue 25: encoding all of them outlasted the timeout, whatever the budget).
        let keep = entries_within(&rpc.entries, budget).map_err(RPCError::Network)?;
        let mut sent_up_to = None;
        if keep < rpc.entries.len() {
            rpc.entries.truncate(keep);
            sent_up_to = rpc.entries.last().map(|e| e.log_id);
            tracing::debug!(
                target_id = self.target,
                entries = keep,
                "AppendEntries cut to its byte budget"
            );
        }
        let data = encode(&rpc, self.binary).map_err(RPCError::Network)?;
        let heartbeat = rpc.entries.is_empty();
        self.append_pending = true;
        let started = std::time::Instant::now();
        let answer: Result<AppendEntriesResponse<NodeId>, _> = self
            .unary_encoded(data, &option, async |mut c, r| c.append_entries(r).await)
            .await;
        self.append_pending = false;
        if answer.is_ok() {
            self.contacts
                .record(self.target, started.elapsed(), heartbeat);
            self.append_budget = (self.append_budget * 2).min(MAX_APPEND_BYTES);
        }
        let answer = answer?;
        Ok(match (answer, sent_up_to) {
            (AppendEntriesResponse::Success, Some(last)) => {
                AppendEntriesResponse::PartialSuccess(Some(last))
            }
            (answer, _) => answer,
        })
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, NodeInfo, RaftError<NodeId>>> {
        self.unary(&rpc, &option, async |mut c, r| c.vote(r).await)
            .await
    }

    /// Never called: snapshots go through [`Self::full_snapshot`], one stream per snapshot.
    async fn install_snapshot(
        &mut self,
        _rpc: InstallSnapshotRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, NodeInfo, RaftError<NodeId, InstallSnapshotError>>,
    > {
        Err(RPCError::Network(NetworkError::new(
            &std::io::Error::other(
                "chunked install_snapshot is not used: snapshots are streamed by full_snapshot",
            ),
        )))
    }

    async fn full_snapshot(
        &mut self,
        vote: Vote<NodeId>,
        snapshot: Snapshot<TypeConfig>,
        cancel: impl Future<Output = ReplicationClosed> + Send + 'static,
        option: RPCOption,
    ) -> Result<SnapshotResponse<NodeId>, StreamingError<TypeConfig, Fatal<NodeId>>> {
        let mut client = self
            .ready_client(option.hard_ttl().max(Duration::from_secs(60)))
            .await?;
        let header = encode(&(&vote, &snapshot.meta), false)?;
        let data = snapshot.snapshot.into_inner();
        let mut chunks = Vec::with_capacity(data.len() / SNAPSHOT_CHUNK + 1);
        chunks.push(SnapshotChunk {
            header,
            data: Vec::new(),
        });
        chunks.extend(data.chunks(SNAPSHOT_CHUNK).map(|c| SnapshotChunk {
            header: Vec::new(),
            data: c.to_vec(),
        }));
        let total = data.len();
        tracing::info!(
            target_id = self.target,
            bytes = total,
            chunks = chunks.len(),
            "streaming snapshot"
        );
        let mut request = tonic::Request::new(tokio_stream::iter(chunks));
        request.set_timeout(option.hard_ttl().max(Duration::from_secs(60)));
        self.name_group(request.metadata_mut());
        let reply = tokio::select! {
            closed = cancel => return Err(StreamingError::Closed(closed)),
            r = client.install_snapshot(request) => r,
        };
        let reply = match reply {
            Ok(r) => r.into_inner(),
            Err(status) => return Err(StreamingError::Unreachable(self.transport_failed(&status))),
        };
        let result: Result<SnapshotResponse<NodeId>, Fatal<NodeId>> = decode(&reply.data)?;
        result.map_err(|e| StreamingError::RemoteError(RemoteError::new(self.target, e)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoded_len_is_the_encoding_length() {
        let value = ("x".repeat(1000), 42u64, vec![Some(1), None]);
        assert_eq!(
            encoded_len(&value).expect("encodes"),
            serde_json::to_vec(&value).expect("encodes").len()
        );
    }

    #[test]
    fn entries_are_cut_to_the_budget_keeping_at_least_one() {
        let entry = "x".repeat(64 << 10); // 64 KiB + 2 quotes encoded
        let entries = vec![entry; 100];
        assert_eq!(entries_within(&entries, MAX_APPEND_BYTES).ok(), Some(7));
        assert_eq!(entries_within(&entries, MIN_APPEND_BYTES).ok(), Some(1));
        assert_eq!(
            entries_within(&entries[..3], MAX_APPEND_BYTES).ok(),
            Some(3)
        );
        assert_eq!(
            entries_within::<String>(&[], MIN_APPEND_BYTES).ok(),
            Some(0)
        );
    }
}
