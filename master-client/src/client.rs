//! The master client: leader discovery, forwarding hints and bounded retries that reuse
//! the request id, so a leader change in the middle of a call is invisible to the caller
//! (the state machine answers a retried request id with its first outcome).

use crate::channel::lazy_channel;
use crate::FORWARDED;
use slapos_domain::{Command, Entry, Outcome, Query};
use slapos_proto::rpc::master::master_client::MasterClient as Grpc;
use slapos_proto::rpc::master::{
    authority_response, issue_response, membership_response, partition_certificate_response,
    read_response, submit_response, AddReplicaRequest, AuthorityRequest, CertificatePair,
    Consistency, IssueRequest, IssueResponse, MembershipResponse, PartitionCertificateRequest,
    PartitionCertificateResponse, ReadRequest, ReadResponse, RemoveReplicaRequest, StatusRequest,
    StatusResponse, SubmitRequest, SubmitResponse, ViewsChanged, WatchViewsRequest,
};
use slapos_proto::rpc::master::{BackupChunk, BackupRequest};
use std::time::{Duration, Instant};
use tonic::transport::Channel;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(
        "no master answered within {elapsed_ms} ms after {attempts} attempts; last error: {last}"
    )]
    Unavailable {
        attempts: u32,
        elapsed_ms: u64,
        last: String,
    },
    #[error("master at {addr}: {message}")]
    Transport { addr: String, message: String },
    #[error("malformed answer from {addr}: {message}")]
    Decode { addr: String, message: String },
    #[error("{0}")]
    Refused(String),
    /// The masters understood the call and said no, for a reason of this kind (final:
    /// retrying cannot help).
    #[error("{message}")]
    Denied { kind: Denial, message: String },
    #[error("no master address given")]
    NoAddress,
    /// The master speaks TLS and this process has no certificate to present (final).
    #[error("the master at {addr} requires mutual TLS, and this process has no certificate for the masters")]
    TlsRequired { addr: String },
}

/// Why the masters said no to a call they understood.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denial {
    /// The caller may not (permission denied, unauthenticated).
    Forbidden,
    /// What the call names does not exist.
    NotFound,
    /// The state does not allow it now (a partition hosting no instance has no
    /// certificate).
    Conflict,
    /// The call itself is malformed (a bad CSR, a bad identity).
    Invalid,
}

/// Whether an error in a transport failure's chain is the TLS handshake refusing a
/// certificate (ours or the server's): final, unlike a connection that failed.
fn is_tls_refusal(e: &(dyn std::error::Error + 'static)) -> bool {
    let rustls_refusal = |e: &rustls::Error| {
        matches!(
            e,
            rustls::Error::InvalidCertificate(_)
                | rustls::Error::NoCertificatesPresented
                | rustls::Error::AlertReceived(_)
        )
    };
    if let Some(r) = e.downcast_ref::<rustls::Error>() {
        return rustls_refusal(r);
    }
    // An I/O error carrying the TLS error (what tokio-rustls returns).
    e.downcast_ref::<std::io::Error>()
        .and_then(std::io::Error::get_ref)
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        .is_some_and(rustls_refusal)
}

/// One answer of one attempt.
enum Attempt<T> {
    Done(T),
    Leader(String),
    Retry(String),
}

/// An applied command: its outcome, the log index it was applied at, and (when asked)
/// the entities of the instance the outcome names.
#[derive(Debug, Clone)]
pub struct Submitted {
    pub outcome: Outcome,
    pub log_index: u64,
    pub shown: Vec<Entry>,
}

/// What a local read answered: the entities, the index the replica had applied, and
/// for a query of one computer the version of its node view (0 otherwise).
#[derive(Debug, Clone)]
pub struct Read {
    pub entries: Vec<Entry>,
    pub applied_index: u64,
    pub view_version: u64,
}

/// A client of the master API over a list of replica addresses. Clones share the
/// connections (HTTP/2 multiplexes their calls).
#[derive(Clone)]
pub struct MasterClient {
    addrs: Vec<String>,
    current: usize,
    forwarded: bool,
    /// Per-call timeout.
    pub call_timeout: Duration,
    /// Total time a call may take across retries.
    pub deadline: Duration,
    connect_timeout: Duration,
    channels: Vec<(String, Grpc<Channel>)>,
}

impl MasterClient {
    pub fn new<I: IntoIterator<Item = S>, S: Into<String>>(addrs: I) -> Self {
        MasterClient {
            addrs: addrs.into_iter().map(Into::into).collect(),
            current: 0,
            forwarded: false,
            call_timeout: Duration::from_secs(12),
            deadline: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(2),
            channels: Vec::new(),
        }
    }

    pub fn single(addr: &str) -> Self {
        let mut c = Self::new([addr]);
        c.deadline = Duration::from_secs(12);
        c
    }

    /// Mark calls as already forwarded once (a replica receiving one does not forward it
    /// again).
    pub fn forwarded(mut self) -> Self {
        self.forwarded = true;
        self
    }

    pub fn with_deadline(mut self, deadline: Duration) -> Self {
        self.deadline = deadline;
        self
    }

    /// The same client with its channel to each address made now (it connects on first
    /// use): its clones then share one connection per address rather than each opening
    /// its own (a replica forwarding writes to a leader regions away would otherwise pay
    /// TCP's, TLS's and HTTP/2's round trips on every write).
    pub fn with_channels(mut self) -> Self {
        for addr in self.addrs.clone() {
            let _ = self.grpc(&addr);
        }
        self
    }

    /// The address calls go to first (the last known leader).
    pub fn current_addr(&self) -> Option<&str> {
        self.addrs.get(self.current).map(String::as_str)
    }

    fn grpc(&mut self, addr: &str) -> Result<Grpc<Channel>, ClientError> {
        if let Some((_, c)) = self.channels.iter().find(|(a, _)| a == addr) {
            return Ok(c.clone());
        }
        let channel =
            lazy_channel(addr, self.connect_timeout).map_err(|e| ClientError::Transport {
                addr: addr.to_string(),
                message: e.to_string(),
            })?;
        let c = Grpc::new(channel)
            .max_decoding_message_size(256 << 20)
            .max_encoding_message_size(64 << 20);
        self.channels.push((addr.to_string(), c.clone()));
        Ok(c)
    }

    fn request<T>(&self, message: T) -> tonic::Request<T> {
        let mut r = tonic::Request::new(message);
        r.set_timeout(self.call_timeout);
        if self.forwarded {
            r.metadata_mut()
                .insert(FORWARDED, tonic::metadata::MetadataValue::from_static("1"));
        }
        r
    }

    fn point_at(&mut self, addr: String) {
        match self.addrs.iter().position(|a| *a == addr) {
            Some(i) => self.current = i,
            None => {
                self.addrs.push(addr);
                self.current = self.addrs.len() - 1;
            }
        }
    }

    fn rotate(&mut self) {
        if !self.addrs.is_empty() {
            self.current = (self.current + 1) % self.addrs.len();
        }
    }

    /// The address of the next attempt.
    fn pick(&self) -> Result<String, ClientError> {
        self.addrs
            .get(self.current % self.addrs.len().max(1))
            .cloned()
            .ok_or(ClientError::NoAddress)
    }

    /// Account for one attempt: Some(answer) when done; None to try again (after
    /// following a leader hint or rotating, and backing off); an error when the deadline
    /// passed or the failure is final.
    async fn settle<T>(
        &mut self,
        retry: &mut Retry,
        addr: String,
        attempt: Result<Attempt<T>, ClientError>,
    ) -> Result<Option<T>, ClientError> {
        retry.attempts += 1;
        match attempt {
            Ok(Attempt::Done(t)) => return Ok(Some(t)),
            // During an election, followers still name the dead leader: a hint to an
            // address that already failed in this call is not followed.
            Ok(Attempt::Leader(leader)) if retry.failed.contains(&leader) => {
                retry.last = format!("{addr} names {leader} as leader, which is down");
                self.rotate();
            }
            Ok(Attempt::Leader(leader)) => {
                retry.last = format!("{addr} is not the leader; {leader} is");
                self.point_at(leader);
                // A fresh hint is followed at once (a few times: two replicas naming
                // each other during a change must not make the client spin).
                if retry.quick < 3 {
                    retry.quick += 1;
                    return Ok(None);
                }
            }
            Ok(Attempt::Retry(why)) => {
                retry.last = format!("{addr}: {why}");
                self.rotate();
            }
            Err(ClientError::Transport { addr, message }) => {
                // Plain HTTP/2 to a TLS server fails as a protocol error, again and
                // again: asked once per address, the server's first bytes tell.
                if crate::tls::client().is_none()
                    && !retry.failed.contains(&addr)
                    && crate::channel::speaks_tls(&addr, self.connect_timeout).await
                {
                    return Err(ClientError::TlsRequired { addr });
                }
                retry.last = format!("{addr}: {message}");
                self.channels.retain(|(a, _)| *a != addr);
                retry.failed.push(addr);
                self.rotate();
            }
            Err(e) => return Err(e),
        }
        if retry.start.elapsed() + retry.backoff > self.deadline {
            return Err(ClientError::Unavailable {
                attempts: retry.attempts,
                elapsed_ms: retry.start.elapsed().as_millis() as u64,
                last: std::mem::take(&mut retry.last),
            });
        }
        tokio::time::sleep(retry.backoff).await;
        retry.backoff = (retry.backoff * 2).min(MAX_BACKOFF);
        Ok(None)
    }

    fn transport(addr: &str, status: tonic::Status) -> ClientError {
        // Refusals of who we are (the masters' mTLS) are final: retrying cannot help.
        let mut detail = status.message().to_owned();
        let mut tls_refused = false;
        let mut source = std::error::Error::source(&status);
        while let Some(s) = source {
            detail.push_str(&format!(": {s}"));
            tls_refused |= is_tls_refusal(s);
            source = s.source();
        }
        let denial = match status.code() {
            tonic::Code::PermissionDenied | tonic::Code::Unauthenticated => Some(Denial::Forbidden),
            tonic::Code::NotFound => Some(Denial::NotFound),
            tonic::Code::FailedPrecondition => Some(Denial::Conflict),
            tonic::Code::InvalidArgument => Some(Denial::Invalid),
            _ => None,
        };
        if let Some(kind) = denial {
            return ClientError::Denied {
                kind,
                message: format!("{addr}: {:?}: {detail}", status.code()),
            };
        }
        if tls_refused {
            return ClientError::Refused(format!("{addr}: {:?}: {detail}", status.code()));
        }
        ClientError::Transport {
            addr: addr.to_string(),
            message: format!("{:?}: {}", status.code(), status.message()),
        }
    }

    /// The address calls go to first, as an owned string.
    fn current(&self) -> Result<String, ClientError> {
        self.current_addr()
            .map(str::to_string)
            .ok_or(ClientError::NoAddress)
    }

    fn encode<T: serde::Serialize>(value: &T) -> Result<Vec<u8>, ClientError> {
        serde_json::to_vec(value).map_err(|e| ClientError::Decode {
            addr: String::new(),
            message: e.to_string(),
        })
    }

    // ----- one call to one address ---------------------------------------------------

    async fn submit_at(
        &mut self,
        addr: &str,
        command: Vec<u8>,
        show: bool,
    ) -> Result<SubmitResponse, ClientError> {
        let mut c = self.grpc(addr)?;
        c.submit(self.request(SubmitRequest { command, show }))
            .await
            .map(tonic::Response::into_inner)
            .map_err(|s| Self::transport(addr, s))
    }

    async fn read_at(&mut self, addr: &str, req: ReadRequest) -> Result<ReadResponse, ClientError> {
        let mut c = self.grpc(addr)?;
        c.read(self.request(req))
            .await
            .map(tonic::Response::into_inner)
            .map_err(|s| Self::transport(addr, s))
    }

    async fn add_replica_at(
        &mut self,
        addr: &str,
        req: &AddReplicaRequest,
    ) -> Result<MembershipResponse, ClientError> {
        let mut c = self.grpc(addr)?;
        c.add_replica(self.request(req.clone()))
            .await
            .map(tonic::Response::into_inner)
            .map_err(|s| Self::transport(addr, s))
    }

    async fn remove_replica_at(
        &mut self,
        addr: &str,
        id: u64,
    ) -> Result<MembershipResponse, ClientError> {
        let mut c = self.grpc(addr)?;
        c.remove_replica(self.request(RemoveReplicaRequest { id }))
            .await
            .map(tonic::Response::into_inner)
            .map_err(|s| Self::transport(addr, s))
    }

    // ----- answers as attempts ---------------------------------------------------------

    fn submitted(addr: &str, r: SubmitResponse) -> Result<Attempt<Submitted>, ClientError> {
        Ok(match r.result {
            Some(submit_response::Result::Outcome(o)) => {
                let outcome: Outcome =
                    serde_json::from_slice(&o).map_err(|e| ClientError::Decode {
                        addr: addr.to_string(),
                        message: e.to_string(),
                    })?;
                Attempt::Done(Submitted {
                    outcome,
                    log_index: r.log_index,
                    shown: r.shown.into_iter().map(|e| (e.key, e.value)).collect(),
                })
            }
            Some(submit_response::Result::NotLeader(h)) => Attempt::Leader(h.api_addr),
            Some(submit_response::Result::Unavailable(why)) => Attempt::Retry(why),
            None => Attempt::Retry("empty answer".into()),
        })
    }

    fn was_read(r: ReadResponse) -> Attempt<(Vec<Entry>, u64)> {
        match Self::was_read_versioned(r) {
            Attempt::Done(v) => Attempt::Done((v.entries, v.applied_index)),
            Attempt::Leader(a) => Attempt::Leader(a),
            Attempt::Retry(w) => Attempt::Retry(w),
        }
    }

    fn was_read_versioned(r: ReadResponse) -> Attempt<Read> {
        match r.result {
            Some(read_response::Result::Entries(e)) => Attempt::Done(Read {
                entries: e.entries.into_iter().map(|e| (e.key, e.value)).collect(),
                applied_index: r.applied_index,
                view_version: r.view_version,
            }),
            Some(read_response::Result::NotLeader(h)) => Attempt::Leader(h.api_addr),
            Some(read_response::Result::Unavailable(why)) => Attempt::Retry(why),
            None => Attempt::Retry("empty answer".into()),
        }
    }

    // ----- the API -------------------------------------------------------------------

    /// One attempt at the current address.
    pub async fn submit_once(&mut self, command: &Command) -> Result<SubmitResponse, ClientError> {
        self.submit_once_showing(command, false).await
    }

    /// One attempt at the current address, asking for what the outcome shows.
    pub async fn submit_once_showing(
        &mut self,
        command: &Command,
        show: bool,
    ) -> Result<SubmitResponse, ClientError> {
        let addr = self.current()?;
        self.submit_at(&addr, Self::encode(command)?, show).await
    }

    /// Apply a command, wherever the leader is. Returns the domain outcome and the log
    /// index it was applied at.
    pub async fn submit(&mut self, command: &Command) -> Result<(Outcome, u64), ClientError> {
        self.submit_with(command, false)
            .await
            .map(|s| (s.outcome, s.log_index))
    }

    /// [`Self::submit`], also answering the entities of the instance the outcome names, as
    /// the leader holds them right after applying the command (empty when it names none).
    pub async fn submit_showing(&mut self, command: &Command) -> Result<Submitted, ClientError> {
        self.submit_with(command, true).await
    }

    async fn submit_with(
        &mut self,
        command: &Command,
        show: bool,
    ) -> Result<Submitted, ClientError> {
        let bytes = Self::encode(command)?;
        let mut retry = Retry::new();
        loop {
            let addr = self.pick()?;
            let attempt = match self.submit_at(&addr, bytes.clone(), show).await {
                Ok(r) => Self::submitted(&addr, r),
                Err(e) => Err(e),
            };
            if let Some(t) = self.settle(&mut retry, addr, attempt).await? {
                return Ok(t);
            }
        }
    }

    pub async fn read_once(
        &mut self,
        query: &Query,
        consistency: Consistency,
        max_staleness_ms: u64,
    ) -> Result<ReadResponse, ClientError> {
        self.read_once_at_least(query, consistency, max_staleness_ms, 0)
            .await
    }

    /// One read attempt at the current address that answers only once the replica
    /// applied `min_applied_index` (LOCAL reads).
    pub async fn read_once_at_least(
        &mut self,
        query: &Query,
        consistency: Consistency,
        max_staleness_ms: u64,
        min_applied_index: u64,
    ) -> Result<ReadResponse, ClientError> {
        let addr = self.current()?;
        let req = ReadRequest {
            consistency: consistency as i32,
            max_staleness_ms,
            query: Self::encode(query)?,
            min_applied_index,
        };
        self.read_at(&addr, req).await
    }

    /// Read entities with the given consistency. Returns them and the applied index of
    /// the replica that answered.
    pub async fn read(
        &mut self,
        query: &Query,
        consistency: Consistency,
        max_staleness_ms: u64,
    ) -> Result<(Vec<Entry>, u64), ClientError> {
        self.read_at_least(query, consistency, max_staleness_ms, 0)
            .await
    }

    /// [`Self::read`], answered only by a replica that applied `min_applied_index`
    /// (pass the index of the caller's own last write to read its own writes).
    pub async fn read_at_least(
        &mut self,
        query: &Query,
        consistency: Consistency,
        max_staleness_ms: u64,
        min_applied_index: u64,
    ) -> Result<(Vec<Entry>, u64), ClientError> {
        let req = ReadRequest {
            consistency: consistency as i32,
            max_staleness_ms,
            query: Self::encode(query)?,
            min_applied_index,
        };
        let mut retry = Retry::new();
        loop {
            let addr = self.pick()?;
            let attempt = self.read_at(&addr, req.clone()).await.map(Self::was_read);
            if let Some(t) = self.settle(&mut retry, addr, attempt).await? {
                return Ok(t);
            }
        }
    }

    /// As [`MasterClient::read_at_least`], with the version of the node view when the
    /// query is one computer's (see `ReadResponse.view_version`).
    pub async fn read_versioned(
        &mut self,
        query: &Query,
        max_staleness_ms: u64,
        min_applied_index: u64,
    ) -> Result<Read, ClientError> {
        let req = ReadRequest {
            consistency: Consistency::Local as i32,
            max_staleness_ms,
            query: Self::encode(query)?,
            min_applied_index,
        };
        let mut retry = Retry::new();
        loop {
            let addr = self.pick()?;
            let attempt = self
                .read_at(&addr, req.clone())
                .await
                .map(Self::was_read_versioned);
            if let Some(t) = self.settle(&mut retry, addr, attempt).await? {
                return Ok(t);
            }
        }
    }

    /// Opens `WatchViews` on the current replica (no retries: the caller reopens, from
    /// the last index it was told, when the stream ends). The call has no deadline.
    pub async fn watch_views(
        &mut self,
        after_index: u64,
        group: &str,
    ) -> Result<(String, tonic::Streaming<ViewsChanged>), ClientError> {
        let addr = self.pick()?;
        let mut c = self.grpc(&addr)?;
        let mut r = tonic::Request::new(WatchViewsRequest {
            after_index,
            group: group.to_owned(),
        });
        if self.forwarded {
            r.metadata_mut()
                .insert(FORWARDED, tonic::metadata::MetadataValue::from_static("1"));
        }
        let stream = c
            .watch_views(r)
            .await
            .map(tonic::Response::into_inner)
            .map_err(|s| Self::transport(&addr, s))?;
        Ok((addr, stream))
    }

    /// Opens `Backup` on the current replica: the header, the pairs in chunks, the end
    /// (no retries, no deadline: a backup of a large state takes its time).
    pub async fn backup(
        &mut self,
        max_bytes_per_sec: u64,
    ) -> Result<(String, tonic::Streaming<BackupChunk>), ClientError> {
        let addr = self.pick()?;
        let mut c = self.grpc(&addr)?;
        let stream = c
            .backup(tonic::Request::new(BackupRequest { max_bytes_per_sec }))
            .await
            .map(tonic::Response::into_inner)
            .map_err(|s| Self::transport(&addr, s))?;
        Ok((addr, stream))
    }

    /// Moves on to the next configured replica (after its stream broke, say).
    pub fn next_replica(&mut self) {
        self.current = (self.current + 1) % self.addrs.len().max(1);
    }

    /// The status of the replica at `addr` (no retries elsewhere: it is that replica's).
    pub async fn status_of(&mut self, addr: &str) -> Result<StatusResponse, ClientError> {
        let mut c = self.grpc(addr)?;
        c.status(self.request(StatusRequest {}))
            .await
            .map(tonic::Response::into_inner)
            .map_err(|s| Self::transport(addr, s))
    }

    /// The status of the first replica that answers.
    pub async fn status(&mut self) -> Result<StatusResponse, ClientError> {
        let mut retry = Retry::new();
        loop {
            let addr = self.pick()?;
            let attempt = self.status_of(&addr).await.map(Attempt::Done);
            if let Some(t) = self.settle(&mut retry, addr, attempt).await? {
                return Ok(t);
            }
        }
    }

    pub async fn add_replica_once(
        &mut self,
        req: &AddReplicaRequest,
    ) -> Result<MembershipResponse, ClientError> {
        let addr = self.current()?;
        self.add_replica_at(&addr, req).await
    }

    pub async fn remove_replica_once(
        &mut self,
        id: u64,
    ) -> Result<MembershipResponse, ClientError> {
        let addr = self.current()?;
        self.remove_replica_at(&addr, id).await
    }

    fn membership(addr: &str, r: MembershipResponse) -> Result<Attempt<String>, ClientError> {
        Ok(match r.result {
            Some(membership_response::Result::Ok(m)) => Attempt::Done(m),
            Some(membership_response::Result::NotLeader(h)) => Attempt::Leader(h.api_addr),
            Some(membership_response::Result::Unavailable(e)) => Attempt::Retry(e),
            Some(membership_response::Result::Error(e)) => {
                return Err(ClientError::Refused(format!("{addr}: {e}")))
            }
            None => Attempt::Retry("empty answer".into()),
        })
    }

    /// Add a replica (as a learner that catches up, then a voter when asked).
    pub async fn add_replica(&mut self, req: &AddReplicaRequest) -> Result<String, ClientError> {
        let mut retry = Retry::new();
        loop {
            let addr = self.pick()?;
            let attempt = match self.add_replica_at(&addr, req).await {
                Ok(r) => Self::membership(&addr, r),
                Err(e) => Err(e),
            };
            if let Some(t) = self.settle(&mut retry, addr, attempt).await? {
                return Ok(t);
            }
        }
    }

    /// The group's CA certificate (PEM).
    pub async fn authority(&mut self) -> Result<String, ClientError> {
        let mut retry = Retry::new();
        loop {
            let addr = self.pick()?;
            let attempt = async {
                let mut c = self.grpc(&addr)?;
                let r = c
                    .authority(self.request(AuthorityRequest {}))
                    .await
                    .map(tonic::Response::into_inner)
                    .map_err(|s| Self::transport(&addr, s))?;
                Ok(match r.result {
                    Some(authority_response::Result::CertPem(pem)) => Attempt::Done(pem),
                    Some(authority_response::Result::Error(e)) => {
                        return Err(ClientError::Refused(format!("{addr}: {e}")))
                    }
                    None => Attempt::Retry("empty answer".into()),
                })
            }
            .await;
            if let Some(t) = self.settle(&mut retry, addr, attempt).await? {
                return Ok(t);
            }
        }
    }

    /// One `Issue` call to the current replica (it forwards to the leader).
    pub async fn issue_once(&mut self, req: &IssueRequest) -> Result<IssueResponse, ClientError> {
        let addr = self.current()?;
        self.issue_at(&addr, req).await
    }

    async fn issue_at(
        &mut self,
        addr: &str,
        req: &IssueRequest,
    ) -> Result<IssueResponse, ClientError> {
        let mut c = self.grpc(addr)?;
        c.issue(self.request(req.clone()))
            .await
            .map(tonic::Response::into_inner)
            .map_err(|s| Self::transport(addr, s))
    }

    /// One `PartitionCertificate` call to the current replica (it forwards to the leader).
    pub async fn partition_certificate_once(
        &mut self,
        req: &PartitionCertificateRequest,
    ) -> Result<PartitionCertificateResponse, ClientError> {
        let addr = self.current()?;
        self.partition_certificate_at(&addr, req).await
    }

    async fn partition_certificate_at(
        &mut self,
        addr: &str,
        req: &PartitionCertificateRequest,
    ) -> Result<PartitionCertificateResponse, ClientError> {
        let mut c = self.grpc(addr)?;
        c.partition_certificate(self.request(req.clone()))
            .await
            .map(tonic::Response::into_inner)
            .map_err(|s| Self::transport(addr, s))
    }

    /// A partition's certificate and key, on whichever replica leads.
    pub async fn partition_certificate(
        &mut self,
        computer: &str,
        partition: &str,
    ) -> Result<CertificatePair, ClientError> {
        let req = PartitionCertificateRequest {
            computer: computer.to_owned(),
            partition: partition.to_owned(),
        };
        let mut retry = Retry::new();
        loop {
            let addr = self.pick()?;
            let attempt = async {
                let r = self.partition_certificate_at(&addr, &req).await?;
                Ok(match r.result {
                    Some(partition_certificate_response::Result::Pair(p)) => Attempt::Done(p),
                    Some(partition_certificate_response::Result::NotLeader(h)) => {
                        Attempt::Leader(h.api_addr)
                    }
                    Some(partition_certificate_response::Result::Unavailable(e)) => {
                        Attempt::Retry(e)
                    }
                    Some(partition_certificate_response::Result::Error(e)) => {
                        return Err(ClientError::Refused(format!("{addr}: {e}")))
                    }
                    None => Attempt::Retry("empty answer".into()),
                })
            }
            .await;
            if let Some(t) = self.settle(&mut retry, addr, attempt).await? {
                return Ok(t);
            }
        }
    }

    /// A certificate for `req.identity`: (PEM, hex serial), on whichever replica leads.
    pub async fn issue(&mut self, req: &IssueRequest) -> Result<(String, String), ClientError> {
        let mut retry = Retry::new();
        loop {
            let addr = self.pick()?;
            let attempt = async {
                let r = self.issue_at(&addr, req).await?;
                Ok(match r.result {
                    Some(issue_response::Result::CertPem(pem)) => Attempt::Done((pem, r.serial)),
                    Some(issue_response::Result::NotLeader(h)) => Attempt::Leader(h.api_addr),
                    Some(issue_response::Result::Unavailable(e)) => Attempt::Retry(e),
                    Some(issue_response::Result::Error(e)) => {
                        return Err(ClientError::Refused(format!("{addr}: {e}")))
                    }
                    None => Attempt::Retry("empty answer".into()),
                })
            }
            .await;
            if let Some(t) = self.settle(&mut retry, addr, attempt).await? {
                return Ok(t);
            }
        }
    }

    pub async fn remove_replica(&mut self, id: u64) -> Result<String, ClientError> {
        let mut retry = Retry::new();
        loop {
            let addr = self.pick()?;
            let attempt = match self.remove_replica_at(&addr, id).await {
                Ok(r) => Self::membership(&addr, r),
                Err(e) => Err(e),
            };
            if let Some(t) = self.settle(&mut retry, addr, attempt).await? {
                return Ok(t);
            }
        }
    }
}

/// Longest pause between two attempts of one call.
const MAX_BACKOFF: Duration = Duration::from_millis(200);

/// Bookkeeping of one call's retries.
struct Retry {
    start: Instant,
    attempts: u32,
    backoff: Duration,
    last: String,
    /// Addresses whose transport failed during this call.
    failed: Vec<String>,
    /// Leader hints followed without pausing.
    quick: u32,
}

impl Retry {
    fn new() -> Self {
        Retry {
            start: Instant::now(),
            attempts: 0,
            backoff: Duration::from_millis(20),
            last: String::new(),
            failed: Vec::new(),
            quick: 0,
        }
    }
}
