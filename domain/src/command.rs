//! Commands: every change to the state is one of these, applied in log order.

use super::error::DomainError;
use super::ids::{InstanceId, RequestId, Timestamp};
use super::param::{Params, StringParams};
pub use super::records::{ServerGrant, SoftwareReport};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// One write, as the proposer stamped it: who asks (request id), when (time), and what.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Command {
    pub request_id: RequestId,
    pub at: Timestamp,
    pub op: Op,
}

/// Who is requesting an instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Requester {
    /// A person (`slapos request`, the portal); the id of their account.
    Person(String),
    /// An instance, identified by the partition it runs in (its certificate, or the
    /// `X-SlapPartition` header in proxy mode).
    Partition { computer: String, partition: String },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AddressSpec {
    pub addr: String,
    pub netmask: String,
    pub gateway: Option<String>,
    pub network: Option<String>,
}

/// One partition as `slapos node format` declares it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionSpec {
    pub id: String,
    pub tap: Option<String>,
    pub addresses: Vec<AddressSpec>,
}

/// A computer's layout as `loadComputerConfigurationFromXML` carries it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ComputerSpec {
    pub address: Option<String>,
    pub netmask: Option<String>,
    pub partitions: Vec<PartitionSpec>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Op {
    /// Create a computer (`slapos node register`). Fails if the id exists.
    RegisterComputer {
        computer: String,
        title: String,
        owner: String,
        region: Option<String>,
        network: Option<String>,
        attributes: BTreeMap<String, String>,
    },
    /// Change a computer's declared attributes, region and network.
    UpdateComputer {
        computer: String,
        region: Option<String>,
        network: Option<String>,
        attributes: BTreeMap<String, String>,
    },
    /// The owner (provider) sets who may have instances allocated on their computer,
    /// and whether its node is SlapOS's Python agent, which needs partition keys made by
    /// the masters. A field left out keeps its value.
    SetComputerPolicy {
        computer: String,
        /// The person asking (JSON-RPC): they must own the computer or be an admin.
        /// None when the caller's rights were checked before (an operator).
        #[serde(default)]
        by: Option<String>,
        #[serde(default)]
        allocation_scope: Option<super::records::AllocationScope>,
        #[serde(default)]
        legacy_partition_keys: Option<bool>,
    },
    /// An operator grants (or takes back) a person's admin rights over the group.
    SetAdmin { person: String, admin: bool },
    /// `loadComputerConfigurationFromXML`: declare the partitions and addresses. Creates
    /// the computer when it does not exist yet (slapproxy does the same).
    FormatComputer {
        computer: String,
        spec: ComputerSpec,
    },
    /// `supplySupply`: ask a computer to install (available) or remove (destroyed) a
    /// software release.
    Supply {
        computer: String,
        url: String,
        state: String,
    },
    /// building / available / error / destroyed reports of `slapos node software`.
    ReportSoftware {
        computer: String,
        url: String,
        report: SoftwareReport,
    },
    /// `requestComputerPartition`.
    RequestInstance {
        requester: Requester,
        title: String,
        software_release: String,
        software_type: String,
        /// None keeps the stored state (started for a new instance).
        state: Option<String>,
        shared: bool,
        parameters: Params,
        sla: BTreeMap<String, String>,
    },
    /// `setComputerPartitionConnectionXml`.
    SetConnection {
        computer: String,
        partition: String,
        /// The shared instance whose parameters the host publishes, if any.
        shared: Option<String>,
        connection: StringParams,
    },
    /// started / stopped / error reports (`startedComputerPartition`, ...).
    ReportStatus {
        computer: String,
        partition: String,
        shared: Option<String>,
        kind: super::records::StatusKind,
        message: String,
    },
    /// `softwareInstanceBang`: reprocess the caller's whole tree.
    Bang {
        computer: String,
        partition: String,
        message: String,
    },
    /// `computerBang`: reprocess every instance on a computer.
    BangComputer { computer: String, message: String },
    /// `softwareInstanceRename`.
    Rename {
        computer: String,
        partition: String,
        shared: Option<String>,
        new_name: String,
    },
    /// `destroyedComputerPartition`: the node wiped the partition.
    DestroyedPartition { computer: String, partition: String },
    /// A master replica left the Raft group: its id is never given again.
    RetireReplica { id: u64 },
    /// `useComputer`: a computer's usage journal, one transaction per period.
    RecordUsage {
        computer: String,
        /// The person posting it, when the caller is a person rather than the node
        /// (JSON-RPC): they must own the computer.
        #[serde(default)]
        reporter: Option<String>,
        transactions: Vec<super::movements::UsageTransaction>,
    },
    /// A provider prices a resource (`hosting`, or one journals report) on one of their
    /// computers or in a region, from now on.
    SetPrice {
        provider: String,
        scope: super::movements::PriceScope,
        resource: String,
        /// Decimal text, per unit.
        price: String,
        currency: String,
        unit: String,
    },
    /// Close every period that ends at or before `until` (microseconds, not after now).
    CloseBooks { until: Timestamp },
    /// Install the group's certificate authority (`slapos master init`). The same
    /// material again changes nothing; another one is refused (certificates already
    /// issued would stop being trusted).
    InstallAuthority {
        material: crate::identity::CaMaterial,
    },
    /// The leader issued a certificate (serial in hex): the group remembers it, for
    /// revocation and audit. A serial is never recorded twice.
    RecordCertificate {
        serial: String,
        identity: crate::identity::Identity,
        not_after: Timestamp,
        /// For a partition certificate the masters made whole: the certificate and its
        /// key, kept for the partition's node (never read out otherwise).
        #[serde(default)]
        pair: Option<super::records::IssuedPair>,
    },
    /// Remove a computer that hosts no instance (an operator retiring a machine): its
    /// software rows go, and every certificate of it and of its partitions is revoked.
    RemoveComputer { computer: String },
    /// A person makes a one-time token (only its SHA-256, hex, is kept) that registers a
    /// node as their computer `computer` until `expires_at`. With `server` (an operator,
    /// on the master API) the token instead enrolls a replica or gateway: whoever
    /// presents it gets that identity's certificate with those names, once.
    CreateToken {
        hash: String,
        owner: String,
        computer: String,
        expires_at: Timestamp,
        #[serde(default)]
        server: Option<ServerGrant>,
    },
    /// A node presents a token: valid once, before it expires. The computer is created
    /// for the token's owner if it does not exist (it must be theirs if it does); a
    /// server token answers what it grants.
    ConsumeToken { hash: String },
    /// Revoke certificates: the one of a serial, or every one of an identity (a
    /// destroyed partition, a removed computer or person). Revocation is final.
    Revoke {
        serial: Option<String>,
        identity: Option<crate::identity::Identity>,
    },
    /// A person's portal password: the argon2id hash (PHC string, `$argon2id$...`) a
    /// gateway made of it, or None to remove it. `by` is the person asking: themselves
    /// or an admin (None when an operator's rights were checked before).
    SetPassword {
        person: String,
        #[serde(default)]
        by: Option<String>,
        hash: Option<String>,
    },
    /// A person signed in to the portal: a session known by the SHA-256 (hex) of its
    /// token (the token itself is only in the person's browser), until `expires_at`.
    /// Expired sessions are forgotten by the same command.
    OpenWebSession {
        hash: String,
        person: String,
        expires_at: Timestamp,
    },
    /// Sign-out: the session ends on every gateway. Unknown sessions are no error.
    EndWebSession { hash: String },
}

impl Op {
    /// A short name for logs and metrics.
    pub fn name(&self) -> &'static str {
        match self {
            Op::RegisterComputer { .. } => "register_computer",
            Op::UpdateComputer { .. } => "update_computer",
            Op::SetComputerPolicy { .. } => "set_computer_policy",
            Op::SetAdmin { .. } => "set_admin",
            Op::FormatComputer { .. } => "format_computer",
            Op::Supply { .. } => "supply",
            Op::ReportSoftware { .. } => "report_software",
            Op::RequestInstance { .. } => "request_instance",
            Op::SetConnection { .. } => "set_connection",
            Op::ReportStatus { .. } => "report_status",
            Op::Bang { .. } => "bang",
            Op::BangComputer { .. } => "bang_computer",
            Op::Rename { .. } => "rename",
            Op::DestroyedPartition { .. } => "destroyed_partition",
            Op::RetireReplica { .. } => "retire_replica",
            Op::RecordUsage { .. } => "record_usage",
            Op::SetPrice { .. } => "set_price",
            Op::CloseBooks { .. } => "close_books",
            Op::InstallAuthority { .. } => "install_authority",
            Op::RecordCertificate { .. } => "record_certificate",
            Op::Revoke { .. } => "revoke",
            Op::CreateToken { .. } => "create_token",
            Op::RemoveComputer { .. } => "remove_computer",
            Op::ConsumeToken { .. } => "consume_token",
            Op::SetPassword { .. } => "set_password",
            Op::OpenWebSession { .. } => "open_web_session",
            Op::EndWebSession { .. } => "end_web_session",
        }
    }
}

/// What a successful command answers. Kept small: it is remembered per client for
/// retries; callers read views for the details.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Reply {
    Done,
    /// An instance was allocated, updated or left as is.
    Instance {
        id: InstanceId,
        changed: bool,
    },
    /// A shared instance was destroyed and removed from its host (None when it had
    /// none at the time); `connection` is what the host had last published for it.
    SharedRemoved {
        id: InstanceId,
        host: Option<InstanceId>,
        connection: StringParams,
    },
    /// The partition was freed and its instance removed.
    PartitionFreed,
    /// A root reported destroyed while members of its tree remain: they were asked to be
    /// destroyed and the root is kept until they are gone.
    DestroyDeferred {
        remaining: Vec<String>,
    },
    /// The software release row was removed after the node destroyed it.
    SoftwareRemoved,
    /// Number of instances whose timestamp a bang changed.
    Banged {
        instances: usize,
    },
    /// Journal transactions recorded now, and those posted before with the same lines.
    UsageRecorded {
        recorded: usize,
        known: usize,
    },
    /// Certificates revoked now (already revoked ones are not counted).
    Revoked {
        count: usize,
    },
    /// A token was consumed: the computer it registers (to be issued a certificate).
    Registered {
        computer: String,
        owner: String,
    },
    /// A server token was consumed: the certificate it grants.
    Enrolled {
        grant: ServerGrant,
    },
}

/// The outcome of applying a command, remembered for retries.
pub type Outcome = Result<Reply, DomainError>;

/// The instance whose state an answer to this outcome shows: the one requested, or the
/// host a shared instance was removed from.
pub fn shown_instance(outcome: &Outcome) -> Option<InstanceId> {
    match outcome {
        Ok(Reply::Instance { id, .. }) => Some(*id),
        Ok(Reply::SharedRemoved { host, .. }) => *host,
        _ => None,
    }
}
