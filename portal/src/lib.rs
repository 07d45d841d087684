//! The web portal: pages for persons, rendered on the server, served by every gateway
//! under `/portal/` (so it survives the loss of any region with the gateways).
//!
//! This crate knows no gateway, no master and no authorization rule. A gateway
//! implements [`Backend`]: who a request's certificate names, the portal's passwords and
//! sessions in the replicated state, a person's services, the releases they may request,
//! and requests, each through the gateway's own read and write paths and its one
//! authorization table. The portal does the web part: sign-in (certificate, password,
//! session cookie), CSRF, rate limits, forms and pages (`DESIGN.md`).

#![forbid(unsafe_code)]

mod assets;
pub mod auth;
mod handlers;
mod pages;
pub mod schema;

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;

pub use handlers::router;
pub use master_client::status::{GroupStatus, MemberStatus, TimerStatus};

/// Where the portal is mounted on a gateway.
pub const BASE: &str = "/portal";

/// A signed-in person, as the gateway decided (certificate or session).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub person: String,
    /// The group records them as an admin (read per request, as every gateway call).
    pub admin: bool,
    pub via: SignedInBy,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignedInBy {
    /// The client certificate of the TLS connection.
    Certificate,
    /// A password session (the SHA-256 of its token, hex).
    Session { hash: String },
}

/// A failure the gateway reports, typed so the portal answers the right status.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BackendError {
    #[error("forbidden: {0}")]
    Forbidden(String),
    #[error("not found: {0}")]
    NotFound(String),
    #[error("conflict: {0}")]
    Conflict(String),
    #[error("invalid: {0}")]
    Invalid(String),
    #[error("the master is unavailable: {0}")]
    Unavailable(String),
}

impl BackendError {
    pub fn status(&self) -> u16 {
        match self {
            BackendError::Forbidden(_) => 403,
            BackendError::NotFound(_) => 404,
            BackendError::Conflict(_) => 409,
            BackendError::Invalid(_) => 400,
            BackendError::Unavailable(_) => 503,
        }
    }
}

/// A session as the replicated state keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionInfo {
    pub person: String,
    pub admin: bool,
    /// Unix seconds.
    pub expires_at: u64,
}

/// What the node last reported of an instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reported {
    /// `started`, `stopped` or `error`.
    pub kind: String,
    pub message: String,
    /// Unix seconds.
    pub at: u64,
}

/// One instance of a service's tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub id: String,
    pub title: String,
    pub software_type: String,
    pub requested_state: String,
    /// `computer/partition`, or the host of a shared instance.
    pub placement: Option<String>,
    pub reported: Option<Reported>,
}

/// A person's instance tree, as its root shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Service {
    /// The root instance's id (`SOFTINST-n`).
    pub id: String,
    pub title: String,
    pub software_release: String,
    pub software_type: String,
    pub shared: bool,
    /// What the person asked for: `started`, `stopped` or `destroyed`.
    pub requested_state: String,
    pub reported: Option<Reported>,
    pub parameters: BTreeMap<String, String>,
    pub connection: BTreeMap<String, String>,
    pub sla: BTreeMap<String, String>,
    pub placement: Option<String>,
    /// The computer the root runs on (what a change to watch is named by).
    pub computer: Option<String>,
    pub members: Vec<Member>,
}

/// A row of the services list: what the list shows of a tree's root, and no more (no
/// parameters, members or placement: the gateway reads the roots alone for it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceRow {
    /// The root instance's id (`SOFTINST-n`).
    pub id: String,
    pub title: String,
    pub software_release: String,
    /// What the person asked for: `started`, `stopped` or `destroyed`.
    pub requested_state: String,
    pub reported: Option<Reported>,
}

impl From<&Service> for ServiceRow {
    fn from(s: &Service) -> Self {
        ServiceRow {
            id: s.id.clone(),
            title: s.title.clone(),
            software_release: s.software_release.clone(),
            requested_state: s.requested_state.clone(),
            reported: s.reported.clone(),
        }
    }
}

/// A release the person may request: supplied to computers that admit them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Offer {
    pub url: String,
    pub computers: usize,
}

/// A software release on a provider's computer: what was asked (`available` or
/// `destroyed`) and what its node last reported (`building`, `available`, `error: ...`,
/// `destroyed`), if anything.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Installed {
    pub url: String,
    pub requested: String,
    pub reported: Option<String>,
}

/// A computer the signed-in person provides (registered as theirs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Server {
    pub id: String,
    pub title: String,
    pub region: Option<String>,
    /// Partitions, and how many hold an instance.
    pub partitions: usize,
    pub used: usize,
    /// Supplied releases, in supply order.
    pub releases: Vec<Installed>,
    /// Unix seconds of the node's last call, if it ever called.
    pub last_contact: Option<u64>,
}

/// A request of a service (new, or again with another state or parameters).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceRequest {
    pub title: String,
    pub software_release: String,
    pub software_type: String,
    /// None keeps the stored state (started for a new service).
    pub state: Option<String>,
    pub parameters: BTreeMap<String, String>,
    pub sla: BTreeMap<String, String>,
}

/// What a gateway provides the portal. Every method is the gateway's own read or write
/// path, checked by its one authorization table for `who`.
pub trait Backend: Send + Sync + 'static {
    /// The person the request's client certificate names (None: no certificate, or not
    /// a person's; an error: a revoked certificate).
    fn certificate_person(
        &self,
        parts: &axum::http::request::Parts,
    ) -> Result<Option<Principal>, BackendError>;

    /// A person's argon2id password hash (PHC string), if they set one.
    fn password_hash(
        &self,
        person: &str,
    ) -> impl Future<Output = Result<Option<String>, BackendError>> + Send;

    /// Sets (or with None removes) `person`'s password hash, asked by `who`.
    fn set_password(
        &self,
        who: &Principal,
        person: &str,
        hash: Option<String>,
    ) -> impl Future<Output = Result<(), BackendError>> + Send;

    /// Records a session (by the SHA-256 of its token) in the replicated state.
    fn open_session(
        &self,
        person: &str,
        hash: &str,
        expires_at: u64,
    ) -> impl Future<Output = Result<(), BackendError>> + Send;

    /// The session of a token's SHA-256, if the replicated state has it.
    fn session(
        &self,
        hash: &str,
    ) -> impl Future<Output = Result<Option<SessionInfo>, BackendError>> + Send;

    /// Ends a session on every gateway.
    fn end_session(&self, hash: &str) -> impl Future<Output = Result<(), BackendError>> + Send;

    /// `who`'s instance trees, a row each (their roots alone), in title order.
    fn services(
        &self,
        who: &Principal,
    ) -> impl Future<Output = Result<Vec<ServiceRow>, BackendError>> + Send;

    /// One of `who`'s services by its root's id; another person's (or no such tree) is
    /// `NotFound`, so that nothing tells them apart.
    fn service(
        &self,
        who: &Principal,
        id: &str,
    ) -> impl Future<Output = Result<Service, BackendError>> + Send;

    /// The releases `who` may request.
    fn catalog(
        &self,
        who: &Principal,
    ) -> impl Future<Output = Result<Vec<Offer>, BackendError>> + Send;

    /// The computers `who` provides (none for a person who provides none).
    fn servers(
        &self,
        who: &Principal,
    ) -> impl Future<Output = Result<Vec<Server>, BackendError>> + Send;

    /// The master group as an operator sees it (`slapos cluster status`): its members,
    /// leader, term, lag, round trips, timers and their warnings. Only for an admin:
    /// anyone else is `Forbidden` (the portal shows them no such page at all).
    fn group(
        &self,
        who: &Principal,
    ) -> impl Future<Output = Result<GroupStatus, BackendError>> + Send;

    /// The JSON schema of a release's parameters for a software type (SlapOS's
    /// `software.cfg.json` convention), when the release has one.
    fn parameter_schema(
        &self,
        software_release: &str,
        software_type: &str,
    ) -> impl Future<Output = Option<serde_json::Value>> + Send;

    /// Resolves when what `service` shows may have changed (its computer's view moved),
    /// or after `within` at the latest: what the live page waits on. False when the
    /// gateway is shutting down (the live page's stream ends).
    fn wait_for_change(
        &self,
        service: &Service,
        within: std::time::Duration,
    ) -> impl Future<Output = bool> + Send;

    /// Requests a service as `who`; answers its root's id.
    fn request(
        &self,
        who: &Principal,
        request: ServiceRequest,
    ) -> impl Future<Output = Result<String, BackendError>> + Send;
}

/// The portal's settings.
#[derive(Debug, Clone)]
pub struct PortalConfig {
    /// How long a password session lasts.
    pub session_secs: u64,
    /// Failed sign-ins a person may make in a burst on one gateway, and how many
    /// seconds earn one more.
    pub sign_in_burst: u32,
    pub sign_in_refill_secs: u64,
}

impl Default for PortalConfig {
    fn default() -> Self {
        PortalConfig {
            session_secs: 12 * 3600,
            sign_in_burst: 5,
            sign_in_refill_secs: 30,
        }
    }
}

/// What the handlers share.
pub(crate) struct Portal<B> {
    pub backend: Arc<B>,
    pub config: PortalConfig,
    pub limiter: auth::Limiter,
    /// At most this many password hashes computed at once (each costs 19 MiB and tens
    /// of milliseconds of a core).
    pub hashing: tokio::sync::Semaphore,
}
