//! The gateway's side of the master: request ids for exactly-once writes, the master
//! clients (one following the leader for writes and linearizable reads, one reading the
//! nearest replica with a bounded staleness), and the reads each answer needs.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use master_client::{ClientError, Denial, MasterClient};
use slapos_domain::{shown_instance, Entry, Query as MasterQuery};
use slapos_domain::{Command, InstanceId, Op, Outcome, RequestId, State};
use slapos_proto::rpc::master::Consistency;

use super::metrics::Metrics;
use crate::slap::forms::Query;

/// Why the master could not answer.
#[derive(Debug, thiserror::Error)]
pub enum MasterError {
    #[error("the master is unavailable: {0}")]
    Unavailable(ClientError),
    #[error("the master answered something this gateway cannot read: {0}")]
    BadAnswer(String),
    /// The master refused the call (a partition that hosts no instance has no
    /// certificate).
    #[error("{0}")]
    Refused(String),
    /// The masters understood the call and said no, for this kind of reason.
    #[error("{message}")]
    Denied {
        kind: master_client::Denial,
        message: String,
    },
}

impl MasterError {
    /// 503 when no master answered (the SLAP client maps it to `ServerError` and retries
    /// on its next run), 502 when one answered nonsense.
    pub fn status(&self) -> u16 {
        match self {
            MasterError::Unavailable(_) => 503,
            MasterError::BadAnswer(_) => 502,
            MasterError::Refused(_) => 404,
            MasterError::Denied { kind, .. } => match kind {
                Denial::Forbidden => 403,
                Denial::NotFound => 404,
                Denial::Conflict => 409,
                Denial::Invalid => 400,
            },
        }
    }
}

fn from_client(e: ClientError) -> MasterError {
    match e {
        ClientError::Decode { .. } | ClientError::Refused(_) => {
            MasterError::BadAnswer(e.to_string())
        }
        ClientError::Denied { kind, message } => MasterError::Denied { kind, message },
        other => MasterError::Unavailable(other),
    }
}

/// Microseconds since the epoch, the time stamped on commands.
pub use master_client::proposer_time as now;

/// A client id with its own sequence, used by one write at a time.
///
/// The state machine remembers the last [`slapos_domain::OUTCOMES_PER_CLIENT`]
/// outcomes per client and refuses a retry older than those (`RequestExpired`). With one
/// client id and many concurrent writes, a write retried across a slow leader change could
/// fall behind that window. A lane carries one write at a time, so its retry is always
/// its client's newest request: lanes are created on demand (at most
/// `max_inflight_writes`) and reused.
struct Lane {
    client: String,
    seq: u64,
}

struct Lanes {
    base: String,
    created: AtomicU64,
    free: Mutex<Vec<Lane>>,
}

impl Lanes {
    fn take(&self) -> Lane {
        if let Some(lane) = self.free.lock().ok().and_then(|mut f| f.pop()) {
            return lane;
        }
        let n = self.created.fetch_add(1, Ordering::Relaxed);
        Lane {
            client: format!("{}.{n}", self.base),
            seq: 0,
        }
    }

    fn put(&self, lane: Lane) {
        if let Ok(mut f) = self.free.lock() {
            f.push(lane);
        }
    }
}

/// The master, as the gateway sees it. Cheap to share (`Arc`).
pub struct Masters {
    /// Writes and linearizable reads: follows the leader (calls are marked forwarded, so
    /// followers answer with a leader hint instead of relaying).
    writer: Mutex<MasterClient>,
    /// Local reads: the first configured replica first; a replica too stale relays to
    /// the leader itself.
    reader: Mutex<MasterClient>,
    lanes: Lanes,
    writes: tokio::sync::Semaphore,
    staleness_ms: u64,
    /// Log index of the latest write this gateway made: its local reads wait for a
    /// replica that applied it, so a client always reads its own writes.
    last_write: AtomicU64,
    metrics: Arc<Metrics>,
}

/// Who a gateway refuses, and who may do anything.
#[derive(Debug, Clone, Default)]
pub struct Security {
    pub revoked: Vec<u128>,
    pub admins: Vec<String>,
}

/// How long a read of a node view waits for a replica to reach the version its client
/// holds before reading as of now.
pub const CATCH_UP: Duration = Duration::from_secs(2);

/// A computer's node view as read: the state to render it from and its version.
pub struct View {
    pub version: u64,
    pub state: State,
    /// Read from a replica that applied the index asked for (false: read as of now,
    /// no replica reached it in time).
    pub reached: bool,
}

/// What a write came to: its outcome and the state the answer is rendered from.
pub struct Written {
    pub request_id: RequestId,
    pub outcome: Outcome,
    pub state: State,
}

impl Masters {
    pub fn new(
        addrs: &[String],
        deadline: Duration,
        call_timeout: Duration,
        max_inflight_writes: usize,
        staleness_ms: u64,
        metrics: Arc<Metrics>,
    ) -> Self {
        let client = |forwarded: bool| {
            let mut c = MasterClient::new(addrs.iter().cloned()).with_deadline(deadline);
            c.call_timeout = call_timeout;
            if forwarded {
                c.forwarded()
            } else {
                c
            }
        };
        let start = now().micros();
        Masters {
            writer: Mutex::new(client(true)),
            reader: Mutex::new(client(false)),
            lanes: Lanes {
                // Unique per process: the pid and the start time.
                base: format!("gw-{}-{start:x}", std::process::id()),
                created: AtomicU64::new(0),
                free: Mutex::new(Vec::new()),
            },
            writes: tokio::sync::Semaphore::new(max_inflight_writes),
            staleness_ms,
            last_write: AtomicU64::new(0),
            metrics,
        }
    }

    /// The client id prefix of this gateway's writes.
    pub fn client_id(&self) -> &str {
        &self.lanes.base
    }

    /// A copy of a shared client (clones share connections); put back after the call
    /// so that the next call starts from the leader this one found.
    fn client(slot: &Mutex<MasterClient>) -> Result<MasterClient, MasterError> {
        slot.lock()
            .map(|c| c.clone())
            .map_err(|_| MasterError::BadAnswer("master client lock poisoned".into()))
    }

    fn put_back(slot: &Mutex<MasterClient>, client: MasterClient) {
        if let Ok(mut c) = slot.lock() {
            *c = client;
        }
    }

    async fn read_entries(
        &self,
        query: &MasterQuery,
        linearizable: bool,
    ) -> Result<Vec<Entry>, MasterError> {
        self.metrics.master_read(linearizable);
        let slot = if linearizable {
            &self.writer
        } else {
            &self.reader
        };
        let mut client = Self::client(slot)?;
        let r = if linearizable {
            client.read(query, Consistency::Linearizable, 0).await
        } else {
            client
                .read_at_least(
                    query,
                    Consistency::Local,
                    self.staleness_ms,
                    self.last_write.load(Ordering::Acquire),
                )
                .await
        };
        Self::put_back(slot, client);
        let (entries, _applied) = r.map_err(|e| {
            self.metrics.master_error();
            from_client(e)
        })?;
        Ok(entries)
    }

    fn state(entries: Vec<Entry>) -> Result<State, MasterError> {
        State::from_read(entries).map_err(|e| MasterError::BadAnswer(e.to_string()))
    }

    /// Apply `op` through Raft (retried across leader changes under one request id), then
    /// read, linearizably, what its answer shows.
    pub async fn write(&self, op: Op) -> Result<Written, MasterError> {
        let _permit = self
            .writes
            .acquire()
            .await
            .map_err(|_| MasterError::BadAnswer("gateway shutting down".into()))?;
        let mut lane = self.lanes.take();
        lane.seq += 1;
        let request_id = RequestId::new(lane.client.clone(), lane.seq);
        tracing::Span::current().record("request_id", tracing::field::display(&request_id));
        let command = Command {
            request_id: request_id.clone(),
            at: now(),
            op,
        };
        self.metrics.master_write();
        let mut client = Self::client(&self.writer)?;
        let submitted = client.submit_showing(&command).await;
        Self::put_back(&self.writer, client);
        // The lane is free again whatever happened: a write that failed is not retried
        // under its id, and a later one takes the next sequence number.
        self.lanes.put(lane);
        let submitted = submitted.map_err(|e| {
            self.metrics.master_error();
            from_client(e)
        })?;
        self.last_write
            .fetch_max(submitted.log_index, Ordering::AcqRel);
        let outcome = submitted.outcome;
        // The leader answers the instance's state with the outcome; read it linearizably
        // only if it did not (a replica that could not read right after applying).
        let state = match shown_instance(&outcome) {
            Some(_) if !submitted.shown.is_empty() => Self::state(submitted.shown)?,
            Some(id) => Self::state(
                self.read_entries(&MasterQuery::Instance { id }, true)
                    .await?,
            )?,
            None => State::new(),
        };
        Ok(Written {
            request_id,
            outcome,
            state,
        })
    }

    /// The ledger an invoice or a movement list needs, read linearizably: an invoice
    /// must show every movement acknowledged before it was asked for.
    pub async fn read_ledger(
        &self,
        customer: Option<String>,
        provider: Option<String>,
        from: slapos_domain::Timestamp,
        to: slapos_domain::Timestamp,
    ) -> Result<State, MasterError> {
        Self::state(
            self.read_entries(
                &MasterQuery::Ledger {
                    customer,
                    provider,
                    from,
                    to,
                },
                true,
            )
            .await?,
        )
    }

    /// What a JSON-RPC answer about one instance needs: the instance, its root, its host
    /// if shared, and the computer that carries it with everything on it (so the shared
    /// instances a host carries are there too). Bounded staleness, as [`Masters::read`].
    pub async fn read_instance(&self, id: InstanceId) -> Result<State, MasterError> {
        let mut entries = self
            .read_entries(&MasterQuery::Instance { id }, false)
            .await?;
        let computer = Self::state(entries.clone())?
            .instance_view(id)
            .ok()
            .and_then(|v| v.computer.map(|c| c.id.clone()));
        if let Some(computer) = computer {
            entries.extend(
                self.read_entries(&MasterQuery::Computer { computer }, false)
                    .await?,
            );
        }
        Self::state(entries)
    }

    /// The trees `owner` requested (only the one titled `title` when given): their roots,
    /// hosts and the computers they run on (`allDocs instance_tree_list`, `get
    /// instance_tree`). Bounded-staleness, as the other reads of the gateway.
    pub async fn read_trees(&self, owner: &str, title: Option<&str>) -> Result<State, MasterError> {
        let query = MasterQuery::Trees {
            owner: owner.to_string(),
            title: title.map(str::to_string),
        };
        Self::state(self.read_entries(&query, false).await?)
    }

    /// The roots of `owner`'s trees alone (no member, host or computer): the portal's
    /// services list. Bounded-staleness, as [`Self::read_trees`].
    pub async fn read_roots(&self, owner: &str) -> Result<State, MasterError> {
        let query = MasterQuery::Roots {
            owner: owner.to_string(),
        };
        Self::state(self.read_entries(&query, false).await?)
    }

    /// A person's portal password hash and admin flag (linearizable: a password just
    /// changed is the one checked).
    pub async fn read_person(&self, person: &str) -> Result<State, MasterError> {
        let query = MasterQuery::Person {
            person: person.to_string(),
        };
        Self::state(self.read_entries(&query, true).await?)
    }

    /// A portal session by the SHA-256 of its token (linearizable: a sign-out through
    /// any gateway ends it here at once).
    pub async fn read_web_session(&self, hash: &str) -> Result<State, MasterError> {
        let query = MasterQuery::WebSession {
            hash: hash.to_string(),
        };
        Self::state(self.read_entries(&query, true).await?)
    }

    /// Every member of the tree of `root`, with their hosts and the computers they run
    /// on: the portal's page of one service. Linearizable: the page a request redirects
    /// to shows the request, whichever replica is beside this gateway.
    pub async fn read_tree(&self, root: InstanceId) -> Result<State, MasterError> {
        Self::state(self.read_entries(&MasterQuery::Tree { root }, true).await?)
    }

    /// The releases supplied on the computers that admit `person` (bounded staleness).
    pub async fn read_catalog(&self, person: &str) -> Result<State, MasterError> {
        let query = MasterQuery::Catalog {
            person: person.to_string(),
        };
        Self::state(self.read_entries(&query, false).await?)
    }

    /// The computers `owner` provides, with their partitions and software rows: the
    /// portal's servers page (bounded staleness, as the list of a person's trees).
    pub async fn read_computers(&self, owner: &str) -> Result<State, MasterError> {
        let query = MasterQuery::Computers {
            owner: owner.to_string(),
        };
        Self::state(self.read_entries(&query, false).await?)
    }

    /// A partition's certificate and key (made by the leader the first time): (PEM
    /// certificate, PEM key).
    pub async fn partition_certificate(
        &self,
        computer: &str,
        partition: &str,
    ) -> Result<(String, String), MasterError> {
        let mut client = Self::client(&self.writer)?;
        let r = client.partition_certificate(computer, partition).await;
        Self::put_back(&self.writer, client);
        let pair = r.map_err(|e| match e {
            ClientError::Refused(m) => MasterError::Refused(m),
            ClientError::Denied { kind, message } => MasterError::Denied { kind, message },
            other => from_client(other),
        })?;
        Ok((pair.cert_pem, pair.key_pem))
    }

    /// A certificate for `identity` (common name) from the CSR, asked for by the caller
    /// who presented `presented_pem` and proved holding its key (`proof`, a signature
    /// over the CSR: `slapos_proto::proof`); and the CA certificate.
    pub async fn issue_relayed(
        &self,
        csr: &str,
        identity: &str,
        presented_pem: &str,
        proof: &str,
    ) -> Result<(String, String), MasterError> {
        self.issue_request(slapos_proto::rpc::master::IssueRequest {
            csr_pem: csr.to_owned(),
            identity: identity.to_owned(),
            presented_cert_pem: presented_pem.to_owned(),
            proof: proof.to_owned(),
            ..Default::default()
        })
        .await
    }

    /// A certificate for `csr` against a one-time token (its SHA-256): the masters spend
    /// the token and issue what it grants (a person's token: their computer's; an
    /// operator's: a server's); (PEM certificate, PEM CA).
    pub async fn enroll(
        &self,
        csr: &str,
        token_sha256: &str,
    ) -> Result<(String, String), MasterError> {
        self.issue_request(slapos_proto::rpc::master::IssueRequest {
            csr_pem: csr.to_owned(),
            token_sha256: token_sha256.to_owned(),
            ..Default::default()
        })
        .await
    }

    /// `Issue`, then the CA certificate beside the issued one.
    async fn issue_request(
        &self,
        request: slapos_proto::rpc::master::IssueRequest,
    ) -> Result<(String, String), MasterError> {
        let mut client = Self::client(&self.writer)?;
        let issued = client.issue(&request).await;
        let ca = match &issued {
            Ok(_) => client.authority().await,
            Err(_) => Ok(String::new()),
        };
        Self::put_back(&self.writer, client);
        let refused = |e: ClientError| match e {
            ClientError::Refused(m) => MasterError::Refused(m),
            ClientError::Denied { kind, message } => MasterError::Denied { kind, message },
            other => from_client(other),
        };
        let (pem, _serial) = issued.map_err(refused)?;
        Ok((pem, ca.map_err(refused)?))
    }

    /// Serials of every revoked certificate and the persons with admin rights
    /// (linearizable: a revocation is seen by the next refresh after it was
    /// acknowledged).
    pub async fn security(&self) -> Result<Security, MasterError> {
        let state = Self::state(self.read_entries(&MasterQuery::Certificates, true).await?)?;
        Ok(Security {
            revoked: state.revoked_serials(),
            admins: state.admins().map(str::to_owned).collect(),
        })
    }

    /// The gateways beside the group's voting replicas (the URLs hosted replicas carry in
    /// their membership records), in member order.
    pub async fn gateway_urls(&self) -> Result<Vec<String>, MasterError> {
        let mut client = Self::client(&self.reader)?;
        let r = client.status().await;
        Self::put_back(&self.reader, client);
        let status = r.map_err(from_client)?;
        Ok(status
            .members
            .into_iter()
            .filter(|m| m.role == "voter" && !m.gateway_url.is_empty())
            .map(|m| m.gateway_url)
            .collect())
    }

    /// The group as an operator sees it (`master_client::status`, what `slapos cluster
    /// status` shows): from the reader's replicas, then the leader, then each member.
    pub async fn group_status(&self) -> Result<master_client::status::GroupStatus, MasterError> {
        let client = Self::client(&self.reader)?;
        master_client::status::group_status(client)
            .await
            .map_err(from_client)
    }

    /// A client of the replicas for following their `WatchViews` stream: the reader's
    /// addresses, nearest first.
    pub fn view_client(&self) -> MasterClient {
        self.reader
            .lock()
            .map(|c| c.clone())
            .unwrap_or_else(|p| p.into_inner().clone())
    }

    /// A computer's node view and its version, from a replica that applied at least
    /// `at_least` (the version a client holds, the index that woke a held request) and
    /// this gateway's last write. A replica behind `at_least` waits or relays to the
    /// leader; if none reaches it within [`CATCH_UP`] (an entity tag this group never
    /// gave, say) the view is read as of now.
    pub async fn read_view(&self, computer: &str, at_least: u64) -> Result<View, MasterError> {
        let query = MasterQuery::Computer {
            computer: computer.to_owned(),
        };
        let own = self.last_write.load(Ordering::Acquire);
        let read = |min: u64| {
            let query = query.clone();
            async move {
                self.metrics.master_read(false);
                let mut client = Self::client(&self.reader)?;
                let r = client.read_versioned(&query, self.staleness_ms, min).await;
                Self::put_back(&self.reader, client);
                r.map_err(|e| {
                    self.metrics.master_error();
                    from_client(e)
                })
            }
        };
        let (read, reached) = if at_least > own {
            match tokio::time::timeout(CATCH_UP, read(at_least)).await {
                Ok(Ok(r)) => (r, true),
                Ok(Err(e)) if !matches!(e, MasterError::Unavailable(_)) => return Err(e),
                _ => {
                    tracing::debug!(
                        computer,
                        at_least,
                        "no replica reached the version asked about: reading as of now"
                    );
                    (read(own).await?, false)
                }
            }
        } else {
            (read(own).await?, true)
        };
        Ok(View {
            version: read.view_version,
            state: Self::state(read.entries)?,
            reached,
        })
    }

    /// Who owns a computer (None: unknown computer).
    pub async fn computer_owner(&self, computer: &str) -> Result<Option<String>, MasterError> {
        let state = Self::state(
            self.read_entries(
                &MasterQuery::Computer {
                    computer: computer.to_owned(),
                },
                false,
            )
            .await?,
        )?;
        Ok(state.computer_owner(computer))
    }

    /// Read what the answer to `query` needs, with a bounded staleness: these are the
    /// node's and its instances' reads, promises it converges to anyway.
    pub async fn read(&self, query: &Query) -> Result<State, MasterError> {
        match query {
            Query::Computer { computer }
            | Query::ComputerStatus { computer }
            | Query::Partition { computer, .. }
            | Query::PartitionCertificate { computer, .. }
            | Query::PartitionStatus { computer, .. } => Self::state(
                self.read_entries(
                    &MasterQuery::Computer {
                        computer: computer.clone(),
                    },
                    false,
                )
                .await?,
            ),
            Query::HostingSubscriptionIpList {
                computer,
                partition,
            } => {
                let mut entries = self
                    .read_entries(
                        &MasterQuery::Computer {
                            computer: computer.clone(),
                        },
                        false,
                    )
                    .await?;
                let root = Self::state(entries.clone())?
                    .partition_view(computer, partition)
                    .ok()
                    .and_then(|v| v.instance.map(|i| i.root));
                if let Some(root) = root {
                    entries.extend(
                        self.read_entries(&MasterQuery::Tree { root }, false)
                            .await?,
                    );
                }
                Self::state(entries)
            }
            Query::SoftwareReleaseList(_) | Query::HateoasUrl | Query::RunId => Ok(State::new()),
        }
    }
}
