//! The gRPC services a replica serves: Raft traffic from its peers ([`peer`]), and the
//! master API for gateways and operators: writes through the group-commit batcher
//! ([`batcher`]), reads and status ([`api`]), membership ([`membership`]) and the group's
//! certificate authority ([`issuance`]). This module holds what they share: the service
//! itself, leader hints and one-shot forwarding, and the trait implementation that hands
//! each RPC to its room.
//!
//! Callers never see a raw Raft error: a follower forwards a write (once) to the leader,
//! or answers with the leader's address when it cannot; a group without a leader answers
//! `unavailable`, which callers retry.

mod api;
mod batcher;
mod issuance;
mod membership;
mod peer;

pub use batcher::{
    Answer, Batcher, MAX_BATCH, MAX_IN_FLIGHT, MAX_PROPOSER_AHEAD, MAX_PROPOSER_BEHIND,
    WRITE_TIMEOUT,
};
pub use peer::{raft_server, LeaderContact, RaftService};

use super::types::{NodeId, NodeInfo, Raft, StateHandle};
use master_client::MasterClient;
use openraft::ServerState;
use slapos_domain::{Command, Query};
use slapos_proto::rpc::master::master_server::Master;
use slapos_proto::rpc::master::{
    read_response, submit_response, AddReplicaRequest, AuthorityRequest, AuthorityResponse,
    Entries, Entry, IssueRequest, IssueResponse, LeaderHint, MembershipResponse,
    PartitionCertificateRequest, PartitionCertificateResponse, ReadRequest, ReadResponse,
    RemoveReplicaRequest, StatusRequest, StatusResponse, SubmitRequest, SubmitResponse,
};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tonic::{Request, Response, Status};

/// Metadata header marking a call already forwarded by a follower (forward at most once).
pub const FORWARDED: &str = "x-slapos-forwarded";
/// Largest snapshot a replica accepts over the wire.
pub const MAX_SNAPSHOT_BYTES: usize = 8 << 30;
/// How long a local read waits for the caller's own last write to be applied here
/// before it is relayed to the leader.
pub const READ_YOUR_WRITES_WAIT: Duration = Duration::from_millis(500);
/// About how many bytes of pairs one `Backup` message carries.
pub const BACKUP_CHUNK: usize = 1 << 20;
/// How long a joining replica may take to catch up before it is promoted.
pub const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(300);

fn encode_json<T: serde::Serialize>(value: &T) -> Result<Vec<u8>, Status> {
    serde_json::to_vec(value).map_err(|e| Status::internal(format!("encode: {e}")))
}

fn decode_json<T: serde::de::DeserializeOwned>(what: &str, bytes: &[u8]) -> Result<T, Status> {
    serde_json::from_slice(bytes)
        .map_err(|e| Status::invalid_argument(format!("malformed {what}: {e}")))
}

/// What a replica decodes from the bytes its callers send, one function per message: the
/// peer service ([`peer`]) and the master API ([`api`]) call these, and so do the fuzz
/// targets (`fuzz/`, see its `DESIGN.md`).
pub mod wire {
    use super::decode_json;
    use crate::types::{NodeId, NodeInfo, TypeConfig};
    use openraft::raft::{AppendEntriesRequest, VoteRequest};
    use openraft::{SnapshotMeta, Vote};
    use slapos_domain::{Command, Query};
    use tonic::Status;

    /// An `AppendEntries` a peer sends, in the binary encoding or JSON (what earlier
    /// releases send).
    pub fn append_entries(bytes: &[u8]) -> Result<AppendEntriesRequest<TypeConfig>, Status> {
        raft_message("append entries", bytes)
    }

    /// A `Vote` a peer sends, in either encoding.
    pub fn vote(bytes: &[u8]) -> Result<VoteRequest<NodeId>, Status> {
        raft_message("vote", bytes)
    }

    fn raft_message<T: serde::de::DeserializeOwned>(what: &str, bytes: &[u8]) -> Result<T, Status> {
        crate::network::decode_wire(bytes)
            .map_err(|e| Status::invalid_argument(format!("malformed {what}: {e}")))
    }

    /// The header of the first chunk of an `InstallSnapshot` stream.
    pub fn snapshot_header(
        bytes: &[u8],
    ) -> Result<(Vote<NodeId>, SnapshotMeta<NodeId, NodeInfo>), Status> {
        decode_json("snapshot header", bytes)
    }

    /// The command of a `Submit` (a gateway's or an operator's write).
    pub fn command(bytes: &[u8]) -> Result<Command, Status> {
        decode_json("command", bytes)
    }

    /// The query of a `Read`.
    pub fn query(bytes: &[u8]) -> Result<Query, Status> {
        decode_json("query", bytes)
    }
}

// ----- Master API --------------------------------------------------------------------------

pub struct MasterService {
    pub id: NodeId,
    pub batcher: Batcher,
    pub metrics: Arc<crate::metrics::Metrics>,
    pub raft: Raft,
    pub state: StateHandle,
    pub log_stats: raft_store::LogStats,
    pub contact: Arc<LeaderContact>,
    pub peers: crate::network::PeerContacts,
    /// The client forwarded calls go to the leader with, kept while the leader stays:
    /// its clones share one connection.
    pub forward: std::sync::Mutex<Option<MasterClient>>,
}

fn hint_of(raft_leader: Option<NodeId>, node: Option<&NodeInfo>) -> Option<LeaderHint> {
    Some(LeaderHint {
        leader_id: raft_leader?,
        api_addr: node?.api_addr.clone(),
    })
}

impl MasterService {
    pub(super) fn leader_hint(&self) -> Option<LeaderHint> {
        let m = self.raft.metrics().borrow().clone();
        let leader = m.current_leader?;
        let node = m.membership_config.membership().get_node(&leader).cloned();
        hint_of(Some(leader), node.as_ref())
    }

    pub(super) fn is_forwarded<T>(request: &Request<T>) -> bool {
        request.metadata().get(FORWARDED).is_some()
    }

    /// The leader, for a one-shot forward; None when unknown or when it is us. One
    /// connection to the leader serves every forward until the leader changes.
    pub(super) fn forward_target(&self, hint: &Option<LeaderHint>) -> Option<MasterClient> {
        let hint = hint.as_ref()?;
        if hint.leader_id == self.id {
            return None;
        }
        let mut cached = self.forward.lock().unwrap_or_else(|e| e.into_inner());
        match cached.as_ref() {
            Some(c) if c.current_addr() == Some(hint.api_addr.as_str()) => Some(c.clone()),
            _ => {
                let c = MasterClient::single(&hint.api_addr)
                    .forwarded()
                    .with_channels();
                *cached = Some(c.clone());
                Some(c)
            }
        }
    }

    /// Propose a command on this replica (which must be the leader), through the
    /// group-commit batcher.
    pub(super) async fn write(&self, command: Command, bytes: usize) -> Answer {
        let started = Instant::now();
        let answer = self.batcher.submit(command, bytes).await;
        use crate::metrics::WriteResult;
        let kind = match &answer.response.result {
            Some(submit_response::Result::Outcome(_)) => WriteResult::Ok,
            Some(submit_response::Result::NotLeader(_)) => WriteResult::NotLeader,
            _ => WriteResult::Unavailable,
        };
        self.metrics.write(kind, started.elapsed());
        answer
    }

    pub(super) async fn local_read(&self, query: &Query) -> Result<ReadResponse, Status> {
        let read = |state: &crate::sm::Machine, applied: Option<openraft::LogId<u64>>| {
            (state.query_entries(query), applied.map_or(0, |l| l.index))
        };
        // Read before the entries, never after: a change in between makes the answer
        // newer than its version (the node is answered once more), never older.
        let view_version = match query {
            Query::Computer { computer } => self.state.read(|s, applied| {
                s.views()
                    .version(computer)
                    .min(applied.map_or(0, |l| l.index))
            }),
            _ => 0,
        };
        // Usage lives on disk only: a ledger read adds the period's usage, read from a
        // RocksDB snapshot taken with the memory read (same applied index).
        let (entries, applied) = match slapos_domain::usage_disk_range(query) {
            None => {
                let (entries, applied) = self.state.read(read);
                (
                    entries.map_err(|e| Status::internal(e.to_string()))?,
                    applied,
                )
            }
            Some((from, to)) => self
                .state
                .read_and_scan(read, |(entries, applied), view| {
                    let mut entries = entries.map_err(|e| Status::internal(e.to_string()))?;
                    let usage = view
                        .range(&from, &to, slapos_domain::usage_disk_target)
                        .map_err(|e| Status::unavailable(e.to_string()))?;
                    entries.extend(usage);
                    Ok::<_, Status>((entries, applied))
                })
                .map_err(|e| Status::unavailable(e.to_string()))??,
        };
        Ok(ReadResponse {
            result: Some(read_response::Result::Entries(Entries {
                entries: entries
                    .into_iter()
                    .map(|(key, value)| Entry { key, value })
                    .collect(),
            })),
            applied_index: applied,
            view_version,
        })
    }

    /// What an answer to this applied command shows: the entities of the instance its
    /// outcome names, read here (the leader that just applied it). Reading on the leader
    /// right after the command applied is linearizable for the request it answers: the
    /// state shown is the state just after the command, or later.
    pub(super) async fn shown(&self, answer: &Answer) -> Vec<Entry> {
        let Some(id) = answer.shows else {
            return Vec::new();
        };
        if !self.applied_at_least(answer.response.log_index).await {
            return Vec::new();
        }
        match self.local_read(&Query::Instance { id }).await {
            Ok(ReadResponse {
                result: Some(read_response::Result::Entries(e)),
                ..
            }) => e.entries,
            _ => Vec::new(),
        }
    }

    /// Whether this replica has applied `index` (waiting a little for it: the caller's
    /// own write is usually about to be applied here).
    pub(super) async fn applied_at_least(&self, index: u64) -> bool {
        if index == 0 || self.state.last_applied().is_some_and(|l| l.index >= index) {
            return true;
        }
        matches!(
            tokio::time::timeout(READ_YOUR_WRITES_WAIT, self.state.wait_applied(index)).await,
            Ok(Ok(_))
        )
    }

    /// Proposes a command of this replica's own (certificates, enrollment, retirement)
    /// and answers its reply.
    pub(super) async fn write_reply(
        &self,
        command: Command,
    ) -> Result<slapos_domain::Reply, ServiceError> {
        // (the replica's own commands are small: certificates, tokens, retirements)
        match self.write(command, 0).await.response.result {
            Some(submit_response::Result::Outcome(bytes)) => {
                let outcome: slapos_domain::Outcome = serde_json::from_slice(&bytes)
                    .map_err(|e| ServiceError::Internal(format!("outcome: {e}")))?;
                Ok(outcome?)
            }
            Some(submit_response::Result::NotLeader(h)) => Err(ServiceError::Unavailable(format!(
                "leadership moved to {}",
                h.leader_id
            ))),
            Some(submit_response::Result::Unavailable(e)) => Err(ServiceError::Unavailable(e)),
            None => Err(ServiceError::Unavailable("no answer".into())),
        }
    }

    pub(super) fn is_leader(&self) -> bool {
        self.raft.metrics().borrow().state == ServerState::Leader
    }

    /// On a follower: the leader's answer to `call` (forwarded once, never by a replica
    /// that was itself forwarded to), else `fallback` with where the leader is.
    pub(super) async fn ask_leader<R>(
        &self,
        forwarded: bool,
        call: impl AsyncFnOnce(MasterClient) -> Result<R, master_client::ClientError>,
        fallback: impl FnOnce(Option<LeaderHint>) -> R,
    ) -> R {
        let hint = self.leader_hint();
        if !forwarded {
            if let Some(leader) = self.forward_target(&hint) {
                if let Ok(r) = call(leader).await {
                    return r;
                }
            }
        }
        fallback(hint)
    }
}

/// What a follower answers when no leader is known.
const NO_LEADER: &str = "no leader is known at the moment";

/// Why a replica's own write or a step of an RPC did not succeed: whether the caller
/// should retry (the group cannot take it now) or was refused is the variant, never text
/// to match.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ServiceError {
    /// No leader, no quorum, leadership moved: retry, possibly elsewhere.
    #[error("{0}")]
    Unavailable(String),
    /// The domain refused the command.
    #[error(transparent)]
    Domain(#[from] slapos_domain::DomainError),
    /// The authority refused the request (a bad CSR, a bad identity).
    #[error(transparent)]
    Ca(#[from] slapos_ca::CaError),
    /// A name that is no identity of the group.
    #[error(transparent)]
    BadIdentity(#[from] slapos_domain::BadIdentity),
    /// Refused for another reason (a partition without an instance, a bad address).
    #[error("{0}")]
    Refused(String),
    /// Something inside this replica (an outcome it could not read back).
    #[error("{0}")]
    Internal(String),
}

impl ServiceError {
    /// Whether the caller may succeed by retrying later.
    pub(crate) fn is_unavailable(&self) -> bool {
        matches!(self, ServiceError::Unavailable(_))
    }
}

#[tonic::async_trait]
impl Master for MasterService {
    async fn submit(
        &self,
        request: Request<SubmitRequest>,
    ) -> Result<Response<SubmitResponse>, Status> {
        self.submit_rpc(request).await
    }

    async fn read(&self, request: Request<ReadRequest>) -> Result<Response<ReadResponse>, Status> {
        self.read_rpc(request).await
    }

    type BackupStream = tokio_stream::wrappers::ReceiverStream<
        Result<slapos_proto::rpc::master::BackupChunk, Status>,
    >;

    async fn backup(
        &self,
        request: Request<slapos_proto::rpc::master::BackupRequest>,
    ) -> Result<Response<Self::BackupStream>, Status> {
        Ok(Response::new(tokio_stream::wrappers::ReceiverStream::new(
            self.backup_rpc(request)?,
        )))
    }

    type WatchViewsStream = tokio_stream::wrappers::ReceiverStream<
        Result<slapos_proto::rpc::master::ViewsChanged, Status>,
    >;

    async fn watch_views(
        &self,
        request: Request<slapos_proto::rpc::master::WatchViewsRequest>,
    ) -> Result<Response<Self::WatchViewsStream>, Status> {
        Ok(Response::new(tokio_stream::wrappers::ReceiverStream::new(
            self.watch_views_rpc(request),
        )))
    }

    async fn status(
        &self,
        request: Request<StatusRequest>,
    ) -> Result<Response<StatusResponse>, Status> {
        self.status_rpc(request).await
    }

    async fn add_replica(
        &self,
        request: Request<AddReplicaRequest>,
    ) -> Result<Response<MembershipResponse>, Status> {
        self.add_replica_rpc(request).await
    }

    async fn authority(
        &self,
        request: Request<AuthorityRequest>,
    ) -> Result<Response<AuthorityResponse>, Status> {
        self.authority_rpc(request).await
    }

    async fn issue(
        &self,
        request: Request<IssueRequest>,
    ) -> Result<Response<IssueResponse>, Status> {
        self.issue_rpc(request).await
    }

    async fn partition_certificate(
        &self,
        request: Request<PartitionCertificateRequest>,
    ) -> Result<Response<PartitionCertificateResponse>, Status> {
        self.partition_certificate_rpc(request).await
    }

    async fn remove_replica(
        &self,
        request: Request<RemoveReplicaRequest>,
    ) -> Result<Response<MembershipResponse>, Status> {
        self.remove_replica_rpc(request).await
    }
}
