//! The gRPC services a replica serves: Raft traffic from its peers, and the master API
//! (submit, read, status, membership) for gateways and operators.
//!
//! Callers never see a raw Raft error: a follower forwards a write (once) to the leader,
//! or answers with the leader's address when it cannot; a group without a leader answers
//! `unavailable`, which callers retry.

use super::client::MasterClient;
use super::network::MAX_RAFT_MESSAGE;
use super::types::{NodeId, NodeInfo, Raft, StateHandle, TypeConfig};
use crate::domain::{Command, Op, Query, RequestId};
use openraft::error::{ClientWriteError, RaftError};
use openraft::raft::{AppendEntriesRequest, VoteRequest};
use openraft::{ChangeMembers, ServerState, Snapshot, SnapshotMeta, Vote};
use slapos_proto::rpc::master::master_server::Master;
use slapos_proto::rpc::master::{
    authority_response, issue_response, membership_response, partition_certificate_response,
    read_response, submit_response, AddReplicaRequest, AuthorityRequest, AuthorityResponse,
    CertificatePair, Consistency, Entries, Entry, IssueRequest, IssueResponse, LeaderHint, Member,
    MembershipResponse, PartitionCertificateRequest, PartitionCertificateResponse, ReadRequest,
    ReadResponse, RemoveReplicaRequest, StatusRequest, StatusResponse, SubmitRequest,
    SubmitResponse,
};
use slapos_proto::rpc::raft::raft_server;
use slapos_proto::rpc::raft::{RaftMessage, SnapshotChunk};
use std::collections::BTreeSet;
use std::io::Cursor;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tonic::{Request, Response, Status};

/// What openraft answers a proposal.
type WriteResult = Result<
    openraft::raft::ClientWriteResponse<TypeConfig>,
    RaftError<NodeId, ClientWriteError<NodeId, NodeInfo>>,
>;

/// Metadata header marking a call already forwarded by a follower (forward at most once).
pub const FORWARDED: &str = "x-slapos-forwarded";
/// Largest snapshot a replica accepts over the wire.
pub const MAX_SNAPSHOT_BYTES: usize = 8 << 30;
/// How long a local read waits for the caller's own last write to be applied here
/// before it is relayed to the leader.
pub const READ_YOUR_WRITES_WAIT: Duration = Duration::from_millis(500);
/// How long a joining replica may take to catch up before it is promoted.
pub const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(300);
/// How long a write may wait for commit before the caller is told to retry.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// How far ahead of the leader's clock a proposer's time may be: a command stamped
/// further in the future is refused (the leader's own time is what the state uses).
pub const MAX_PROPOSER_AHEAD: Duration = Duration::from_secs(30);
/// How far behind: a write retried under its request id keeps its first stamp for its
/// caller's whole deadline (30 s for a gateway), plus room for a slow election.
pub const MAX_PROPOSER_BEHIND: Duration = Duration::from_secs(300);

/// When this replica last heard from a leader (monotonic milliseconds since start).
#[derive(Debug)]
pub struct LeaderContact {
    start: Instant,
    last_ms: AtomicU64,
}

impl Default for LeaderContact {
    fn default() -> Self {
        LeaderContact {
            start: Instant::now(),
            last_ms: AtomicU64::new(u64::MAX),
        }
    }
}

impl LeaderContact {
    pub fn touch(&self) {
        let now = self.start.elapsed().as_millis() as u64;
        self.last_ms.store(now, Ordering::Relaxed);
    }

    /// Milliseconds since the last contact, None if never.
    pub fn millis_since(&self) -> Option<u64> {
        let last = self.last_ms.load(Ordering::Relaxed);
        if last == u64::MAX {
            return None;
        }
        Some((self.start.elapsed().as_millis() as u64).saturating_sub(last))
    }
}

fn encode_json<T: serde::Serialize>(value: &T) -> Result<Vec<u8>, Status> {
    serde_json::to_vec(value).map_err(|e| Status::internal(format!("encode: {e}")))
}

fn decode_json<T: serde::de::DeserializeOwned>(what: &str, bytes: &[u8]) -> Result<T, Status> {
    serde_json::from_slice(bytes)
        .map_err(|e| Status::invalid_argument(format!("malformed {what}: {e}")))
}

// ----- Raft ------------------------------------------------------------------------------

pub struct RaftService {
    pub raft: Raft,
    pub contact: Arc<LeaderContact>,
}

#[tonic::async_trait]
impl raft_server::Raft for RaftService {
    async fn append_entries(
        &self,
        request: Request<RaftMessage>,
    ) -> Result<Response<RaftMessage>, Status> {
        let req: AppendEntriesRequest<TypeConfig> =
            decode_json("append entries", &request.get_ref().data)?;
        let result = self.raft.append_entries(req).await;
        if result.is_ok() {
            self.contact.touch();
        }
        Ok(Response::new(RaftMessage {
            data: encode_json(&result)?,
        }))
    }

    async fn vote(&self, request: Request<RaftMessage>) -> Result<Response<RaftMessage>, Status> {
        let req: VoteRequest<NodeId> = decode_json("vote", &request.get_ref().data)?;
        let result = self.raft.vote(req).await;
        Ok(Response::new(RaftMessage {
            data: encode_json(&result)?,
        }))
    }

    async fn install_snapshot(
        &self,
        request: Request<tonic::Streaming<SnapshotChunk>>,
    ) -> Result<Response<RaftMessage>, Status> {
        let mut stream = request.into_inner();
        let first = stream
            .message()
            .await?
            .ok_or_else(|| Status::invalid_argument("empty snapshot stream"))?;
        let (vote, meta): (Vote<NodeId>, SnapshotMeta<NodeId, NodeInfo>) =
            decode_json("snapshot header", &first.header)?;
        let mut data = first.data;
        while let Some(chunk) = stream.message().await? {
            if data.len() + chunk.data.len() > MAX_SNAPSHOT_BYTES {
                return Err(Status::resource_exhausted(format!(
                    "snapshot over {MAX_SNAPSHOT_BYTES} bytes"
                )));
            }
            data.extend_from_slice(&chunk.data);
        }
        tracing::info!(bytes = data.len(), snapshot = %meta.snapshot_id, "snapshot received");
        self.contact.touch();
        let result = self
            .raft
            .install_full_snapshot(
                vote,
                Snapshot {
                    meta,
                    snapshot: Box::new(Cursor::new(data)),
                },
            )
            .await;
        Ok(Response::new(RaftMessage {
            data: encode_json(&result)?,
        }))
    }
}

pub fn raft_server(service: RaftService) -> raft_server::RaftServer<RaftService> {
    raft_server::RaftServer::new(service)
        .max_decoding_message_size(MAX_RAFT_MESSAGE)
        .max_encoding_message_size(MAX_RAFT_MESSAGE)
}

// ----- group commit -----------------------------------------------------------------------

/// Most commands in one log entry.
pub const MAX_BATCH: usize = 512;
/// Batches proposed and not yet answered. While all are in flight, new writes wait and
/// gather into the next batch: one synced append then carries many commands.
pub const MAX_IN_FLIGHT: usize = 4;

type Pending = (Command, tokio::sync::oneshot::Sender<Answer>);

/// A command's answer, and the instance its outcome names (what `show` reads), taken
/// from the outcome before it is encoded.
pub struct Answer {
    pub response: SubmitResponse,
    pub shows: Option<crate::domain::InstanceId>,
}

impl From<SubmitResponse> for Answer {
    fn from(response: SubmitResponse) -> Self {
        Answer {
            response,
            shows: None,
        }
    }
}

/// Packs concurrent writes into batches, one Raft entry each.
#[derive(Clone)]
pub struct Batcher {
    tx: tokio::sync::mpsc::Sender<Pending>,
}

/// The leader's clock, as it stamps entries: every command of an entry carries the
/// leader's time (never earlier than the previous entry's), whatever its proposer said;
/// a proposer whose time is outside [`MAX_PROPOSER_AHEAD`] / [`MAX_PROPOSER_BEHIND`] of it
/// is refused before anything reaches the log, so a gateway cannot move the master's
/// time (and with it, what has expired).
#[derive(Debug, Default)]
struct LeaderClock {
    last: crate::domain::Timestamp,
}

impl LeaderClock {
    /// Stamps a batch with the leader's time; answers (and drops) the commands whose
    /// proposer's time is too far from it.
    fn stamp(&mut self, batch: Vec<Pending>) -> Vec<Pending> {
        let now = super::proposer_time().max(self.last);
        self.last = now;
        let mut kept = Vec::with_capacity(batch.len());
        for (mut command, reply) in batch {
            match clock_skew(command.at, now) {
                None => {
                    command.at = now;
                    kept.push((command, reply));
                }
                Some(error) => {
                    tracing::warn!(request_id = %command.request_id, %error, "command refused");
                    let _ = reply.send(refused(error));
                }
            }
        }
        kept
    }
}

/// Why a proposer's time `at` is refused by a leader whose time is `now`, if it is.
fn clock_skew(
    at: crate::domain::Timestamp,
    now: crate::domain::Timestamp,
) -> Option<crate::domain::DomainError> {
    let ahead = at.micros().saturating_sub(now.micros());
    let behind = now.micros().saturating_sub(at.micros());
    let (skew, bound) = if ahead > MAX_PROPOSER_AHEAD.as_micros() as u64 {
        (format!("{} s ahead", ahead / 1_000_000), MAX_PROPOSER_AHEAD)
    } else if behind > MAX_PROPOSER_BEHIND.as_micros() as u64 {
        (
            format!("{} s behind", behind / 1_000_000),
            MAX_PROPOSER_BEHIND,
        )
    } else {
        return None;
    };
    Some(crate::domain::DomainError::ClockSkew {
        proposer: crate::domain::format_date(at),
        leader: crate::domain::format_date(now),
        skew,
        bound: format!("{} s", bound.as_secs()),
    })
}

/// The answer to a command refused before it reached the log (nothing was written, so
/// a retry is judged again).
fn refused(error: crate::domain::DomainError) -> Answer {
    let outcome: crate::domain::Outcome = Err(error);
    match serde_json::to_vec(&outcome) {
        Ok(bytes) => SubmitResponse {
            result: Some(submit_response::Result::Outcome(bytes)),
            log_index: 0,
            shown: Vec::new(),
        }
        .into(),
        Err(e) => unavailable(&format!("encode outcome: {e}")).into(),
    }
}

/// Why a batch was answered before its commit.
enum Stalled {
    /// Not committed within [`WRITE_TIMEOUT`].
    Timeout,
    /// This leader lost its quorum or its leadership while the batch was in flight.
    Deposed(String),
}

/// Resolves once this replica, the leader when the batch was proposed, stops being one or
/// has not heard from a quorum for longer than `lease`: its in-flight writes will not
/// commit here soon (a cut or a pause), so their callers should retry elsewhere under the
/// same request ids now rather than after [`WRITE_TIMEOUT`]. Never resolves on a follower
/// (its writes answer at once with a leader hint).
async fn deposed(raft: &Raft, lease: Duration) -> String {
    let leading = raft.metrics().borrow().state == ServerState::Leader;
    if !leading {
        return std::future::pending().await;
    }
    loop {
        let why = {
            let m = raft.metrics();
            let m = m.borrow();
            if m.state != ServerState::Leader {
                Some(format!("this replica stopped leading ({:?})", m.state))
            } else {
                m.millis_since_quorum_ack
                    .filter(|ms| *ms > lease.as_millis() as u64)
                    .map(|ms| format!("the leader has not heard from a quorum for {ms} ms"))
            }
        };
        if let Some(why) = why {
            return why;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

impl Batcher {
    /// `lease`: how long the leader may go without a quorum's acknowledgement before its
    /// in-flight writes are answered "unknown, retry" (twice the maximum election
    /// timeout: by then the followers have likely elected another leader, and a healthy
    /// but briefly slow quorum does not send every caller elsewhere).
    pub fn start(raft: Raft, lease: Duration) -> (Batcher, tokio::task::JoinHandle<()>) {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Pending>(MAX_BATCH * MAX_IN_FLIGHT);
        let permits = Arc::new(tokio::sync::Semaphore::new(MAX_IN_FLIGHT));
        let mut clock = LeaderClock::default();
        let task = tokio::spawn(async move {
            while let Some(first) = rx.recv().await {
                let Ok(permit) = permits.clone().acquire_owned().await else {
                    return;
                };
                let mut batch = vec![first];
                while batch.len() < MAX_BATCH {
                    match rx.try_recv() {
                        Ok(p) => batch.push(p),
                        Err(_) => break,
                    }
                }
                let raft = raft.clone();
                let batch = clock.stamp(batch);
                if batch.is_empty() {
                    drop(permit);
                    continue;
                }
                tokio::spawn(async move {
                    let (commands, replies): (Vec<Command>, Vec<_>) = batch.into_iter().unzip();
                    let n = commands.len();
                    let write = tokio::time::timeout(WRITE_TIMEOUT, raft.client_write(commands));
                    let result = tokio::select! {
                        // an answer that is there wins over the watch
                        biased;
                        r = write => r.map_err(|_| Stalled::Timeout),
                        why = deposed(&raft, lease) => Err(Stalled::Deposed(why)),
                    };
                    for (i, reply) in replies.into_iter().enumerate() {
                        let _ = reply.send(answer_of(&result, i, n));
                    }
                    drop(permit);
                });
            }
        });
        (Batcher { tx }, task)
    }

    /// Propose one command and wait for its own answer.
    pub async fn submit(&self, command: Command) -> Answer {
        let (tx, rx) = tokio::sync::oneshot::channel();
        if self.tx.send((command, tx)).await.is_err() {
            return unavailable("this replica is shutting down").into();
        }
        rx.await
            .unwrap_or_else(|_| unavailable("this replica is shutting down").into())
    }
}

fn unavailable(why: &str) -> SubmitResponse {
    SubmitResponse {
        result: Some(submit_response::Result::Unavailable(why.to_string())),
        log_index: 0,
        shown: Vec::new(),
    }
}

/// The answer of the `i`-th command of a batch of `n`.
fn answer_of(result: &Result<WriteResult, Stalled>, i: usize, n: usize) -> Answer {
    if let Ok(Ok(resp)) = result {
        if let Some(outcome) = resp.data.get(i) {
            return match serde_json::to_vec(outcome) {
                Ok(bytes) => Answer {
                    response: SubmitResponse {
                        result: Some(submit_response::Result::Outcome(bytes)),
                        log_index: resp.log_id.index,
                        shown: Vec::new(),
                    },
                    shows: crate::domain::shown_instance(outcome),
                },
                Err(e) => unavailable(&format!("encode outcome: {e}")).into(),
            };
        }
    }
    refusal_of(result, n).into()
}

/// The answer to a command of a batch of `n` that did not get its own outcome.
fn refusal_of(result: &Result<WriteResult, Stalled>, n: usize) -> SubmitResponse {
    match result {
        Err(Stalled::Timeout) => unavailable(
            "the write was not committed in time; its outcome is unknown: retry with the same request id",
        ),
        Err(Stalled::Deposed(why)) => unavailable(&format!(
            "{why}; the write's outcome is unknown: retry with the same request id"
        )),
        Ok(Ok(resp)) => unavailable(&format!(
            "the batch of {n} commands answered {} outcomes",
            resp.data.len()
        )),
        Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f)))) => {
            match hint_of(f.leader_id, f.leader_node.as_ref()) {
                Some(h) => SubmitResponse {
                    result: Some(submit_response::Result::NotLeader(h)),
                    log_index: 0,
                    shown: Vec::new(),
                },
                None => unavailable("no leader is known at the moment"),
            }
        }
        Ok(Err(e)) => unavailable(&e.to_string()),
    }
}

// ----- Master API --------------------------------------------------------------------------

pub struct MasterService {
    pub id: NodeId,
    pub batcher: Batcher,
    pub metrics: Arc<super::metrics::Metrics>,
    pub raft: Raft,
    pub state: StateHandle,
    pub log_stats: raft_store::LogStats,
    pub contact: Arc<LeaderContact>,
}

fn hint_of(raft_leader: Option<NodeId>, node: Option<&NodeInfo>) -> Option<LeaderHint> {
    Some(LeaderHint {
        leader_id: raft_leader?,
        api_addr: node?.api_addr.clone(),
    })
}

impl MasterService {
    fn leader_hint(&self) -> Option<LeaderHint> {
        let m = self.raft.metrics().borrow().clone();
        let leader = m.current_leader?;
        let node = m.membership_config.membership().get_node(&leader).cloned();
        hint_of(Some(leader), node.as_ref())
    }

    fn is_forwarded<T>(request: &Request<T>) -> bool {
        request.metadata().get(FORWARDED).is_some()
    }

    /// The leader, for a one-shot forward; None when unknown or when it is us.
    fn forward_target(&self, hint: &Option<LeaderHint>) -> Option<MasterClient> {
        let hint = hint.as_ref()?;
        if hint.leader_id == self.id {
            return None;
        }
        Some(MasterClient::single(&hint.api_addr).forwarded())
    }

    /// Propose a command on this replica (which must be the leader), through the
    /// group-commit batcher.
    async fn write(&self, command: Command) -> Answer {
        let started = Instant::now();
        let answer = self.batcher.submit(command).await;
        use super::metrics::WriteResult;
        let kind = match &answer.response.result {
            Some(submit_response::Result::Outcome(_)) => WriteResult::Ok,
            Some(submit_response::Result::NotLeader(_)) => WriteResult::NotLeader,
            _ => WriteResult::Unavailable,
        };
        self.metrics.write(kind, started.elapsed());
        answer
    }

    async fn local_read(&self, query: &Query) -> Result<ReadResponse, Status> {
        let read = |state: &crate::domain::State, applied: Option<openraft::LogId<u64>>| {
            (state.query_entries(query), applied.map_or(0, |l| l.index))
        };
        // Usage lives on disk only: a ledger read adds the period's usage, read from a
        // RocksDB snapshot taken with the memory read (same applied index).
        let (entries, applied) = match crate::domain::usage_disk_range(query) {
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
                        .range(&from, &to, crate::domain::usage_disk_target)
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
        })
    }

    /// What an answer to this applied command shows: the entities of the instance its
    /// outcome names, read here (the leader that just applied it). Reading on the leader
    /// right after the command applied is linearizable for the request it answers: the
    /// state shown is the state just after the command, or later.
    async fn shown(&self, answer: &Answer) -> Vec<Entry> {
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
    async fn applied_at_least(&self, index: u64) -> bool {
        if index == 0 || self.state.last_applied().is_some_and(|l| l.index >= index) {
            return true;
        }
        matches!(
            tokio::time::timeout(READ_YOUR_WRITES_WAIT, self.state.wait_applied(index)).await,
            Ok(Ok(_))
        )
    }

    fn is_leader(&self) -> bool {
        self.raft.metrics().borrow().state == ServerState::Leader
    }

    /// Change membership on the leader: one change at a time (openraft refuses a change
    /// while another is in progress).
    /// A membership change; one still committing (the last change's final configuration,
    /// appended but not yet committed) is waited for, up to 10 s, rather than refused.
    async fn change(&self, changes: ChangeMembers<NodeId, NodeInfo>) -> Result<(), String> {
        use openraft::error::{ChangeMembershipError, ClientWriteError, RaftError};
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match self.raft.change_membership(changes.clone(), false).await {
                Ok(_) => return Ok(()),
                Err(RaftError::APIError(ClientWriteError::ChangeMembershipError(
                    ChangeMembershipError::InProgress(_),
                ))) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => return Err(e.to_string()),
            }
        }
    }

    /// A membership change that reached a follower: forward it once to the leader, or
    /// answer where the leader is.
    async fn membership_elsewhere(
        &self,
        forwarded: bool,
        call: impl AsyncFnOnce(MasterClient) -> Result<MembershipResponse, super::client::ClientError>,
    ) -> MembershipResponse {
        self.ask_leader(forwarded, call, |hint| MembershipResponse {
            result: Some(match hint {
                Some(h) => membership_response::Result::NotLeader(h),
                None => membership_response::Result::Error(NO_LEADER.into()),
            }),
        })
        .await
    }

    /// On a follower: the leader's answer to `call` (forwarded once, never by a replica
    /// that was itself forwarded to), else `fallback` with where the leader is.
    async fn ask_leader<R>(
        &self,
        forwarded: bool,
        call: impl AsyncFnOnce(MasterClient) -> Result<R, super::client::ClientError>,
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

    /// Wait until the leader's replication to `id` has matched the leader's last log
    /// index as it was when we started waiting.
    async fn wait_caught_up(&self, id: NodeId, timeout: Duration) -> Result<(), String> {
        let mut rx = self.raft.metrics();
        let target = rx.borrow().last_log_index.unwrap_or(0);
        let deadline = Instant::now() + timeout;
        loop {
            let matched = {
                let m = rx.borrow();
                if m.state != ServerState::Leader {
                    return Err("leadership moved while the new replica was catching up".into());
                }
                m.replication
                    .as_ref()
                    .and_then(|r| r.get(&id).cloned().flatten())
                    .map(|l| l.index)
            };
            if matched.is_some_and(|i| i >= target) {
                return Ok(());
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(format!(
                    "replica {id} did not catch up to index {target} within {} s (it has {}); it stays a learner",
                    timeout.as_secs(),
                    matched.map_or("nothing".to_string(), |i| i.to_string())
                ));
            }
            let _ = tokio::time::timeout(left.min(Duration::from_millis(200)), rx.changed()).await;
        }
    }

    /// The leader signs with the group's authority, then records the certificate through
    /// Raft: a certificate is handed out only once the group knows it (so it can be
    /// revoked). `keep`: the private key the masters made (partition certificates), kept
    /// with the record for the partition's node.
    async fn sign_and_record(
        &self,
        sign: crate::ca::IssueRequest<'_>,
        keep: Option<String>,
    ) -> Result<(String, String), String> {
        use crate::ca::Authority;
        let material = self
            .state
            .read(|s, _| s.authority().cloned())
            .ok_or_else(|| crate::domain::DomainError::NoAuthority.to_string())?;
        let authority = Authority::load(&material).map_err(|e| e.to_string())?;
        let issued = authority.issue(&sign).map_err(|e| e.to_string())?;
        let hex = format!("{:x}", sign.serial);
        let command = Command {
            // A growing sequence (the outcomes kept per client are the newest ones).
            request_id: RequestId::new(
                format!("master-{}-ca", self.id),
                super::proposer_time().micros(),
            ),
            at: super::proposer_time(),
            op: Op::RecordCertificate {
                serial: hex.clone(),
                identity: sign.identity.clone(),
                not_after: crate::domain::Timestamp(
                    issued.not_after_unix.saturating_mul(1_000_000),
                ),
                pair: keep.map(|key_pem| crate::domain::IssuedPair {
                    cert_pem: issued.pem.clone(),
                    key_pem,
                }),
            },
        };
        match self.write(command).await.response.result {
            Some(submit_response::Result::Outcome(bytes)) => {
                let outcome: crate::domain::Outcome =
                    serde_json::from_slice(&bytes).map_err(|e| e.to_string())?;
                outcome.map_err(|e| e.to_string())?;
                Ok((issued.pem, hex))
            }
            Some(submit_response::Result::NotLeader(h)) => {
                Err(format!("leadership moved to {}", h.leader_id))
            }
            Some(submit_response::Result::Unavailable(e)) => Err(e),
            None => Err("no answer".into()),
        }
    }

    /// `Issue`: a certificate for the CSR and identity of the request.
    async fn issue_for(&self, req: &IssueRequest) -> Result<(String, String), String> {
        if !req.token_sha256.is_empty() {
            return self.enroll(req).await;
        }
        let identity = crate::ca::Identity::parse(&req.identity).map_err(|e| e.to_string())?;
        let mut ips = Vec::new();
        for ip in &req.ip_addresses {
            ips.push(
                ip.parse()
                    .map_err(|_| format!("not an IP address: {ip:?}"))?,
            );
        }
        let validity = match req.validity_secs {
            0 => crate::ca::default_validity(&identity),
            s => Duration::from_secs(s.min(10 * 365 * 86400)),
        };
        let now = std::time::SystemTime::now();
        let serial = crate::ca::random_serial().map_err(|e| e.to_string())?;
        self.sign_and_record(
            crate::ca::IssueRequest {
                csr_pem: &req.csr_pem,
                identity,
                serial,
                not_before: now - Duration::from_secs(300),
                not_after: now + validity,
                dns_names: req.dns_names.clone(),
                ip_addresses: ips,
            },
            None,
        )
        .await
    }

    /// `Issue` with a server enrollment token: the CSR checked first (a bad one does not
    /// spend the token), the token spent through Raft, then the certificate its grant
    /// names (identity and server names from the token, not from the request).
    async fn enroll(&self, req: &IssueRequest) -> Result<(String, String), String> {
        crate::ca::check_csr(&req.csr_pem).map_err(|e| e.to_string())?;
        let command = Command {
            request_id: RequestId::new(
                format!("master-{}-enroll", self.id),
                super::proposer_time().micros(),
            ),
            at: super::proposer_time(),
            op: Op::ConsumeToken {
                hash: req.token_sha256.clone(),
            },
        };
        let grant = match self.write(command).await.response.result {
            Some(submit_response::Result::Outcome(bytes)) => {
                let outcome: crate::domain::Outcome =
                    serde_json::from_slice(&bytes).map_err(|e| e.to_string())?;
                match outcome.map_err(|e| e.to_string())? {
                    crate::domain::Reply::Enrolled { grant } => grant,
                    crate::domain::Reply::Registered { computer, .. } => {
                        crate::domain::ServerGrant {
                            identity: crate::ca::Identity::Computer(computer),
                            dns_names: Vec::new(),
                            ip_addresses: Vec::new(),
                        }
                    }
                    other => return Err(format!("a token answered {other:?}")),
                }
            }
            Some(submit_response::Result::NotLeader(h)) => {
                return Err(format!("leadership moved to {}", h.leader_id))
            }
            Some(submit_response::Result::Unavailable(e)) => return Err(e),
            None => return Err("no answer".into()),
        };
        let granted = IssueRequest {
            csr_pem: req.csr_pem.clone(),
            identity: grant.identity.common_name(),
            validity_secs: 0,
            dns_names: grant.dns_names,
            ip_addresses: grant.ip_addresses,
            token_sha256: String::new(),
            presented_cert_pem: String::new(),
            proof: String::new(),
        };
        Box::pin(self.issue_for(&granted)).await
    }

    /// `PartitionCertificate`: the partition's kept certificate, or a new one (key made
    /// here) while it hosts an instance.
    async fn partition_pair(
        &self,
        computer: &str,
        partition: &str,
    ) -> Result<CertificatePair, String> {
        let identity = crate::ca::Identity::Partition {
            computer: computer.to_owned(),
            partition: partition.to_owned(),
        };
        identity.check().map_err(|e| e.to_string())?;
        let validity = crate::ca::default_validity(&identity);
        let now = super::proposer_time();
        let margin = validity.as_micros() as u64 / 3;
        let (hosts, kept) = self.state.read(|s, _| {
            (
                s.partition_hosts_instance(computer, partition),
                s.partition_certificate(computer, partition, now, margin)
                    .map(|(serial, p)| (serial, p.clone())),
            )
        });
        if let Some((serial, pair)) = kept {
            return Ok(CertificatePair {
                cert_pem: pair.cert_pem,
                key_pem: pair.key_pem,
                serial: format!("{serial:x}"),
            });
        }
        if !hosts {
            return Err(format!(
                "partition {partition} of {computer} hosts no instance: no certificate"
            ));
        }
        let (key_pem, csr_pem) =
            crate::ca::new_key_and_csr(&identity).map_err(|e| e.to_string())?;
        let at = std::time::SystemTime::now();
        let serial = crate::ca::random_serial().map_err(|e| e.to_string())?;
        let (cert_pem, serial) = self
            .sign_and_record(
                crate::ca::IssueRequest {
                    csr_pem: &csr_pem,
                    identity,
                    serial,
                    not_before: at - Duration::from_secs(300),
                    not_after: at + validity,
                    dns_names: Vec::new(),
                    ip_addresses: Vec::new(),
                },
                Some(key_pem.clone()),
            )
            .await?;
        Ok(CertificatePair {
            cert_pem,
            key_pem,
            serial,
        })
    }

    async fn retire(&self, id: NodeId) -> Result<(), String> {
        let command = Command {
            request_id: RequestId::new(
                format!("master-{}-membership", self.id),
                super::proposer_time().micros(),
            ),
            at: super::proposer_time(),
            op: Op::RetireReplica { id },
        };
        match self.write(command).await.response.result {
            Some(submit_response::Result::Outcome(_)) => Ok(()),
            Some(submit_response::Result::NotLeader(h)) => {
                Err(format!("leadership moved to {}", h.leader_id))
            }
            Some(submit_response::Result::Unavailable(e)) => Err(e),
            None => Err("no answer".into()),
        }
    }
}

/// What a follower answers when no leader is known.
const NO_LEADER: &str = "no leader is known at the moment";

fn membership_error(message: impl Into<String>) -> MembershipResponse {
    MembershipResponse {
        result: Some(membership_response::Result::Error(message.into())),
    }
}

/// The client part of a request id as the state keeps it: prefixed with the caller's
/// identity (`gateway:gw1/…`, `operator:alice/…`), so that no caller can use another's
/// request ids, nor the ones a replica uses for its own writes (`master-<id>-ca`, which
/// carry no `kind:` prefix). A replica's are kept as they are: it forwards ids the replica
/// that received them already prefixed, and its own. Without TLS there are no identities
/// (plain mode trusts every caller).
fn namespaced_client(caller: Option<&crate::ca::Identity>, client: String) -> String {
    match caller {
        None | Some(crate::ca::Identity::Replica(_)) => client,
        Some(other) => format!("{}/{client}", other.common_name()),
    }
}

/// Under mTLS, membership is the operator's (a replica's or an operator's certificate),
/// never a gateway's.
fn refuse_gateway<T>(request: &Request<T>, what: &str) -> Result<(), Status> {
    match super::tls::peer_identity(request) {
        Some(crate::ca::Identity::Gateway(g)) => Err(Status::permission_denied(format!(
            "gateway {g} may not {what}: an operator's command"
        ))),
        _ => Ok(()),
    }
}

#[tonic::async_trait]
impl Master for MasterService {
    async fn submit(
        &self,
        request: Request<SubmitRequest>,
    ) -> Result<Response<SubmitResponse>, Status> {
        let forwarded = Self::is_forwarded(&request);
        let show = request.get_ref().show;
        let mut command: Command = decode_json("command", &request.get_ref().command)?;
        let caller = super::tls::peer_identity(&request);
        command.request_id.client = namespaced_client(caller.as_ref(), command.request_id.client);
        // Under mTLS a gateway writes what SLAP and its registration calls need; the
        // operator's commands (the authority, certificates and their revocation, servers'
        // tokens, retiring a replica, admin rights) come through a replica's or an
        // operator's certificate only, and tokens are spent by the masters themselves
        // when they issue what a token grants (`Issue`).
        if let Some(crate::ca::Identity::Gateway(g)) = &caller {
            let operator_only = match &command.op {
                Op::InstallAuthority { .. }
                | Op::RecordCertificate { .. }
                | Op::Revoke { .. }
                | Op::RetireReplica { .. }
                | Op::SetAdmin { .. }
                | Op::ConsumeToken { .. } => true,
                Op::CreateToken { server, .. } => server.is_some(),
                _ => false,
            };
            if operator_only {
                return Err(Status::permission_denied(format!(
                    "gateway {g} may not {}: an operator's command",
                    command.op.name()
                )));
            }
        }
        let answer = self.write(command.clone()).await;
        if let Some(submit_response::Result::NotLeader(h)) = &answer.response.result {
            if !forwarded {
                if let Some(mut leader) = self.forward_target(&Some(h.clone())) {
                    self.metrics.forwarded();
                    if let Ok(r) = leader.submit_once_showing(&command, show).await {
                        return Ok(Response::new(r));
                    }
                }
            }
        }
        let shown = if show {
            self.shown(&answer).await
        } else {
            Vec::new()
        };
        Ok(Response::new(SubmitResponse {
            shown,
            ..answer.response
        }))
    }

    async fn read(&self, request: Request<ReadRequest>) -> Result<Response<ReadResponse>, Status> {
        let forwarded = Self::is_forwarded(&request);
        let req = request.into_inner();
        let query: Query = decode_json("query", &req.query)?;
        let consistency =
            Consistency::try_from(req.consistency).unwrap_or(Consistency::Unspecified);
        match consistency {
            Consistency::Linearizable | Consistency::Unspecified => {
                match self.raft.ensure_linearizable().await {
                    Ok(_) => Ok(Response::new(self.local_read(&query).await?)),
                    Err(e) => {
                        let hint = e
                            .forward_to_leader::<NodeInfo>()
                            .and_then(|f| hint_of(f.leader_id, f.leader_node.as_ref()));
                        if !forwarded {
                            if let Some(mut leader) = self.forward_target(&hint) {
                                if let Ok(r) =
                                    leader.read_once(&query, Consistency::Linearizable, 0).await
                                {
                                    return Ok(Response::new(r));
                                }
                            }
                        }
                        Ok(Response::new(ReadResponse {
                            result: Some(match hint {
                                Some(h) => read_response::Result::NotLeader(h),
                                None => read_response::Result::Unavailable(format!(
                                    "cannot confirm leadership: {e}"
                                )),
                            }),
                            applied_index: 0,
                        }))
                    }
                }
            }
            Consistency::Local => {
                // The node's polling path: read the two fields, do not clone the metrics.
                let (leading, quorum_ack, applied) = {
                    let m = self.raft.metrics();
                    let m = m.borrow();
                    (
                        m.state == ServerState::Leader,
                        m.millis_since_quorum_ack,
                        m.last_applied.map_or(0, |l| l.index),
                    )
                };
                let staleness = if leading {
                    quorum_ack
                } else {
                    self.contact.millis_since()
                };
                let fresh = staleness.is_some_and(|s| s <= req.max_staleness_ms);
                if fresh && self.applied_at_least(req.min_applied_index).await {
                    return Ok(Response::new(self.local_read(&query).await?));
                }
                let hint = self.leader_hint();
                if !forwarded {
                    if let Some(mut leader) = self.forward_target(&hint) {
                        if let Ok(r) = leader
                            .read_once_at_least(
                                &query,
                                Consistency::Local,
                                req.max_staleness_ms,
                                req.min_applied_index,
                            )
                            .await
                        {
                            return Ok(Response::new(r));
                        }
                    }
                }
                let why = if fresh {
                    format!(
                        "replica {} has not applied index {} yet (it is at {})",
                        self.id, req.min_applied_index, applied
                    )
                } else {
                    format!(
                        "replica {} last heard from a leader {} ago, over the allowed {} ms",
                        self.id,
                        staleness.map_or("never".to_string(), |s| format!("{s} ms")),
                        req.max_staleness_ms
                    )
                };
                Ok(Response::new(ReadResponse {
                    result: Some(read_response::Result::Unavailable(why)),
                    applied_index: applied,
                }))
            }
        }
    }

    async fn status(
        &self,
        _request: Request<StatusRequest>,
    ) -> Result<Response<StatusResponse>, Status> {
        let m = self.raft.metrics().borrow().clone();
        let membership = m.membership_config.membership();
        let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
        let last = m.last_log_index.unwrap_or(0);
        // A replica that left keeps its last vote: it only names itself leader while it
        // actually leads.
        let leader = m
            .current_leader
            .filter(|l| *l != m.id || m.state == ServerState::Leader);
        let members = membership
            .nodes()
            .map(|(id, node)| {
                let matched = m
                    .replication
                    .as_ref()
                    .and_then(|r| r.get(id).cloned().flatten())
                    .map(|l| l.index);
                let matched = if *id == m.id { Some(last) } else { matched };
                Member {
                    id: *id,
                    raft_addr: node.raft_addr.clone(),
                    api_addr: node.api_addr.clone(),
                    role: if voters.contains(id) {
                        "voter"
                    } else {
                        "learner"
                    }
                    .into(),
                    matched_index: matched.unwrap_or(0),
                    lag: matched.map_or(0, |x| last.saturating_sub(x)),
                    region: node.region.clone(),
                    hosted_by: node.hosted_by.clone(),
                    gateway_url: node.gateway_url.clone(),
                }
            })
            .collect();
        let stats = &self.log_stats;
        Ok(Response::new(StatusResponse {
            id: m.id,
            state: match m.state {
                ServerState::Leader => "leader",
                ServerState::Follower => "follower",
                ServerState::Candidate => "candidate",
                ServerState::Learner => "learner",
                ServerState::Shutdown => "shutdown",
            }
            .into(),
            term: m.current_term,
            leader_id: leader.unwrap_or(0),
            has_leader: leader.is_some(),
            last_log_index: last,
            committed_index: stats.committed_index().unwrap_or(0),
            applied_index: m.last_applied.map_or(0, |l| l.index),
            snapshot_index: m.snapshot.map_or(0, |l| l.index),
            purged_index: m.purged.map_or(0, |l| l.index),
            log_size_bytes: stats.log_size_bytes(),
            snapshot_size_bytes: stats.snapshot_size_bytes(),
            members,
            millis_since_leader_contact: if m.state == ServerState::Leader {
                m.millis_since_quorum_ack.unwrap_or(0)
            } else {
                self.contact.millis_since().unwrap_or(u64::MAX)
            },
        }))
    }

    async fn add_replica(
        &self,
        request: Request<AddReplicaRequest>,
    ) -> Result<Response<MembershipResponse>, Status> {
        refuse_gateway(&request, "add_replica")?;
        let forwarded = Self::is_forwarded(&request);
        let req = request.into_inner();
        if !self.is_leader() {
            let r = self
                .membership_elsewhere(forwarded, async |mut leader: MasterClient| {
                    leader.add_replica_once(&req).await
                })
                .await;
            return Ok(Response::new(r));
        }
        if req.raft_addr.is_empty() || req.api_addr.is_empty() {
            return Ok(Response::new(membership_error(
                "raft_addr and api_addr are required",
            )));
        }
        // Ids are never reused: not a current member's, not a retired one's.
        if let Err(e) = self.raft.ensure_linearizable().await {
            return Ok(Response::new(membership_error(format!(
                "cannot confirm leadership: {e}"
            ))));
        }
        let m = self.raft.metrics().borrow().clone();
        let existing = m.membership_config.membership().get_node(&req.id).cloned();
        let node = NodeInfo {
            raft_addr: req.raft_addr.clone(),
            api_addr: req.api_addr.clone(),
            region: req.region.clone(),
            hosted_by: req.hosted_by.clone(),
            gateway_url: req.gateway_url.clone(),
        };
        if let Some(existing) = &existing {
            if !existing.same_replica(&node) {
                return Ok(Response::new(membership_error(format!(
                    "replica id {} is already a member at {existing}; a replica that lost its data rejoins under a new id",
                    req.id
                ))));
            }
        }
        if self.state.read(|s, _| s.is_retired_replica(req.id)) {
            return Ok(Response::new(membership_error(format!(
                "replica id {} was used before and retired; ids are never reused",
                req.id
            ))));
        }
        // As a learner first, then wait until it holds everything the leader had when it
        // was added (openraft's own blocking add_learner counts a learner within
        // `replication_lag_threshold` entries as caught up, even an empty one).
        if existing.is_none() {
            tracing::info!(id = req.id, %node, "adding learner");
            if let Err(e) = self.raft.add_learner(req.id, node.clone(), false).await {
                return Ok(Response::new(membership_error(format!("add learner: {e}"))));
            }
        }
        if let Err(e) = self.wait_caught_up(req.id, CATCH_UP_TIMEOUT).await {
            return Ok(Response::new(membership_error(e)));
        }
        if req.voter {
            tracing::info!(id = req.id, "promoting to voter");
            let mut ids = BTreeSet::new();
            ids.insert(req.id);
            if let Err(e) = self.change(ChangeMembers::AddVoterIds(ids)).await {
                return Ok(Response::new(membership_error(format!(
                    "promote to voter: {e}"
                ))));
            }
        }
        Ok(Response::new(MembershipResponse {
            result: Some(membership_response::Result::Ok(format!(
                "replica {} joined as {}",
                req.id,
                if req.voter { "voter" } else { "learner" }
            ))),
        }))
    }

    async fn authority(
        &self,
        _request: Request<AuthorityRequest>,
    ) -> Result<Response<AuthorityResponse>, Status> {
        let pem = self
            .state
            .read(|s, _| s.authority().map(|m| m.cert_pem.clone()));
        Ok(Response::new(AuthorityResponse {
            result: Some(match pem {
                Some(p) => authority_response::Result::CertPem(p),
                None => authority_response::Result::Error(
                    crate::domain::DomainError::NoAuthority.to_string(),
                ),
            }),
        }))
    }

    async fn issue(
        &self,
        request: Request<IssueRequest>,
    ) -> Result<Response<IssueResponse>, Status> {
        let forwarded = Self::is_forwarded(&request);
        let caller = super::tls::peer_identity(&request);
        let mut req = request.into_inner();
        // Under mTLS a gateway has issued only what a registration or a renewal it
        // relays needs, each proven by what the gateway cannot make (`issuance.rs`);
        // servers' and operators' certificates are the operator's.
        if let Some(crate::ca::Identity::Gateway(g)) = &caller {
            let now = std::time::SystemTime::now();
            self.state
                .read(|s, _| super::issuance::check_gateway_request(s, g, &mut req, now))?;
        }
        if !self.is_leader() {
            let r = self
                .ask_leader(
                    forwarded,
                    async |mut leader: MasterClient| leader.issue_once(&req).await,
                    |hint| IssueResponse {
                        result: Some(match hint {
                            Some(h) => issue_response::Result::NotLeader(h),
                            None => issue_response::Result::Error(NO_LEADER.into()),
                        }),
                        serial: String::new(),
                    },
                )
                .await;
            return Ok(Response::new(r));
        }
        Ok(Response::new(match self.issue_for(&req).await {
            Ok((pem, serial)) => IssueResponse {
                result: Some(issue_response::Result::CertPem(pem)),
                serial,
            },
            Err(e) => IssueResponse {
                result: Some(issue_response::Result::Error(e)),
                serial: String::new(),
            },
        }))
    }

    async fn partition_certificate(
        &self,
        request: Request<PartitionCertificateRequest>,
    ) -> Result<Response<PartitionCertificateResponse>, Status> {
        let forwarded = Self::is_forwarded(&request);
        let caller = super::tls::peer_identity(&request)
            .map_or_else(|| "a caller".to_string(), |c| c.common_name());
        let req = request.into_inner();
        // Whoever asks (a plain group has no identities): keys leave the masters only for
        // a computer marked as running SlapOS's Python agent.
        self.state
            .read(|s, _| super::issuance::check_key_delivery(s, &caller, &req.computer))?;
        if !self.is_leader() {
            let r = self
                .ask_leader(
                    forwarded,
                    async |mut leader: MasterClient| leader.partition_certificate_once(&req).await,
                    |hint| PartitionCertificateResponse {
                        result: Some(match hint {
                            Some(h) => partition_certificate_response::Result::NotLeader(h),
                            None => partition_certificate_response::Result::Error(NO_LEADER.into()),
                        }),
                    },
                )
                .await;
            return Ok(Response::new(r));
        }
        Ok(Response::new(PartitionCertificateResponse {
            result: Some(
                match self.partition_pair(&req.computer, &req.partition).await {
                    Ok(pair) => partition_certificate_response::Result::Pair(pair),
                    Err(e) => partition_certificate_response::Result::Error(e),
                },
            ),
        }))
    }

    async fn remove_replica(
        &self,
        request: Request<RemoveReplicaRequest>,
    ) -> Result<Response<MembershipResponse>, Status> {
        refuse_gateway(&request, "remove_replica")?;
        let forwarded = Self::is_forwarded(&request);
        let req = request.into_inner();
        if !self.is_leader() {
            let r = self
                .membership_elsewhere(forwarded, async |mut leader: MasterClient| {
                    leader.remove_replica_once(req.id).await
                })
                .await;
            return Ok(Response::new(r));
        }
        let m = self.raft.metrics().borrow().clone();
        let membership = m.membership_config.membership();
        if membership.get_node(&req.id).is_none() {
            return Ok(Response::new(membership_error(format!(
                "replica {} is not a member",
                req.id
            ))));
        }
        let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
        if voters.len() == 1 && voters.contains(&req.id) {
            return Ok(Response::new(membership_error(
                "refusing to remove the last voter",
            )));
        }
        // Record the retirement first, while this leader surely leads: from then on the
        // others refuse the removed replica's traffic. Not when the leader removes itself
        // (the others would refuse the very entries that remove it): then the
        // retirement is recorded through the remaining members once the new
        // configuration committed.
        let self_removal = req.id == self.id;
        let others: Vec<String> = membership
            .nodes()
            .filter(|(id, _)| **id != req.id)
            .map(|(_, n)| n.api_addr.clone())
            .collect();
        if !self_removal {
            if let Err(e) = self.retire(req.id).await {
                return Ok(Response::new(membership_error(format!(
                    "record retirement: {e}"
                ))));
            }
        }
        let mut ids = BTreeSet::new();
        ids.insert(req.id);
        if voters.contains(&req.id) {
            if let Err(e) = self.change(ChangeMembers::RemoveVoters(ids.clone())).await {
                return Ok(Response::new(membership_error(format!(
                    "remove voter: {e}"
                ))));
            }
        }
        // `RemoveVoters` without `retain` drops the node entirely; a learner is removed
        // with `RemoveNodes`. Removing the leader itself: the new configuration commits
        // and this replica steps down.
        if !voters.contains(&req.id) {
            if let Err(e) = self.change(ChangeMembers::RemoveNodes(ids)).await {
                return Ok(Response::new(membership_error(format!("remove node: {e}"))));
            }
        }
        if self_removal {
            let command = Command {
                request_id: RequestId::new(
                    format!("master-{}-membership", self.id),
                    super::proposer_time().micros(),
                ),
                at: super::proposer_time(),
                op: Op::RetireReplica { id: req.id },
            };
            let mut client = MasterClient::new(others).with_deadline(Duration::from_secs(30));
            if let Err(e) = client.submit(&command).await {
                return Ok(Response::new(membership_error(format!(
                    "left the group, but recording its retirement failed (retry): {e}"
                ))));
            }
        }
        Ok(Response::new(MembershipResponse {
            result: Some(membership_response::Result::Ok(format!(
                "replica {} left the group",
                req.id
            ))),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ca::Identity;
    use crate::domain::Timestamp;

    #[test]
    fn a_proposer_far_from_the_leaders_clock_is_refused() {
        let now = Timestamp::from_secs(1_800_000_000);
        assert!(clock_skew(now, now).is_none());
        assert!(clock_skew(Timestamp::from_secs(1_800_000_029), now).is_none());
        assert!(clock_skew(Timestamp::from_secs(1_799_999_701), now).is_none());
        let two_years = Timestamp::from_secs(1_800_000_000 + 2 * 365 * 86_400);
        match clock_skew(two_years, now) {
            Some(crate::domain::DomainError::ClockSkew { skew, .. }) => {
                assert!(skew.ends_with("s ahead"), "{skew}")
            }
            other => panic!("{other:?}"),
        }
        assert!(clock_skew(Timestamp::from_secs(1_799_999_000), now).is_some());
    }

    #[test]
    fn the_leader_stamps_its_own_time_never_backwards() {
        let mut clock = LeaderClock {
            last: Timestamp(u64::MAX / 2),
        };
        let (tx, _rx) = tokio::sync::oneshot::channel();
        let command = Command {
            request_id: RequestId::new("c", 1),
            at: Timestamp(u64::MAX / 2 + 1),
            op: Op::RetireReplica { id: 9 },
        };
        let kept = clock.stamp(vec![(command, tx)]);
        assert_eq!(kept.len(), 1);
        // The last stamp (ahead of the wall clock here) wins over an earlier now.
        assert_eq!(kept[0].0.at, Timestamp(u64::MAX / 2));
    }

    #[test]
    fn request_ids_are_namespaced_by_the_caller() {
        let gw = Identity::Gateway("gw1".into());
        assert_eq!(
            namespaced_client(Some(&gw), "master-2-ca".into()),
            "gateway:gw1/master-2-ca"
        );
        let op = Identity::Operator("alice".into());
        assert_eq!(
            namespaced_client(Some(&op), "cli-x".into()),
            "operator:alice/cli-x"
        );
        // A replica forwards ids the first replica already prefixed, and its own.
        assert_eq!(
            namespaced_client(Some(&Identity::Replica(2)), "gateway:gw1/x".into()),
            "gateway:gw1/x"
        );
        assert_eq!(namespaced_client(None, "x".into()), "x");
    }
}
