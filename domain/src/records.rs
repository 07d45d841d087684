//! What the state holds, as data: computers and their partitions, software
//! installations, instances, the records of the group's authority. Plain values with no
//! behaviour beyond their own; the [`State`](crate::State) keeps them, commands name them.

use crate::ids::{InstanceId, Timestamp};
use crate::param::{Params, StringParams};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// The requested state of an instance, ordered by severity: a tree member's effective
/// state is the most severe of its own and its root's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum RequestedState {
    Started,
    Stopped,
    Destroyed,
}

impl RequestedState {
    pub fn as_str(self) -> &'static str {
        match self {
            RequestedState::Started => "started",
            RequestedState::Stopped => "stopped",
            RequestedState::Destroyed => "destroyed",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "started" => Some(RequestedState::Started),
            "stopped" => Some(RequestedState::Stopped),
            "destroyed" => Some(RequestedState::Destroyed),
            _ => None,
        }
    }
}

/// One address of a partition (or of the computer), as `slapos node format` declares it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Address {
    pub addr: String,
    pub netmask: String,
    /// Gateway and network, when format knows them (the real master's `full_ip_list`).
    pub gateway: Option<String>,
    pub network: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Partition {
    pub id: String,
    /// Interface name the addresses are reported under (`ip_list`): the tap name, or the
    /// partition id when format declared no tap.
    pub interface: String,
    pub tap: Option<String>,
    pub addresses: Vec<Address>,
    /// The non-shared instance this partition hosts; None when free.
    pub instance: Option<InstanceId>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Computer {
    pub id: String,
    pub title: String,
    pub owner: String,
    pub region: Option<String>,
    pub network: Option<String>,
    /// Declared attributes such as `arch`, `cpu`, `memory`, `price` that SLA filters can
    /// name (`price` is compared as a number against `max_price`).
    pub attributes: BTreeMap<String, String>,
    /// Who may have new instances allocated here (existing ones stay whatever it
    /// becomes). Read from `allocation_open` in a state written before scopes existed.
    #[serde(
        default,
        alias = "allocation_open",
        deserialize_with = "AllocationScope::deserialize_compat"
    )]
    pub allocation_scope: AllocationScope,
    /// The node runs SlapOS's own Python agent, which cannot make its partitions' keys:
    /// the masters make them and hand them over (`getComputerPartitionCertificate`).
    /// Off by default: our agent makes each key in the partition and sends a CSR.
    #[serde(default)]
    pub legacy_partition_keys: bool,
    pub address: Option<String>,
    pub netmask: Option<String>,
    /// Partitions in format order (the order nodes and slapproxy list them).
    pub partitions: Vec<Partition>,
    pub last_contact: Option<Timestamp>,
    pub registered_at: Timestamp,
}

/// Who may have instances allocated on a computer, as its owner (the provider) sets it:
/// SlapOS's `open/public`, `open/personal`, `open/friend` and `close/*`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AllocationScope {
    /// Anyone's requests.
    #[default]
    Open,
    /// Only the owner's own instance trees.
    Personal,
    /// The owner's trees and those of the persons listed.
    Friends(BTreeSet<String>),
    /// No new instance.
    Closed,
}

impl AllocationScope {
    /// Whether a tree owned by `person` may get a new instance on a computer owned by
    /// `owner`.
    pub fn admits(&self, owner: &str, person: &str) -> bool {
        match self {
            AllocationScope::Open => true,
            AllocationScope::Personal => !owner.is_empty() && owner == person,
            AllocationScope::Friends(friends) => {
                (!owner.is_empty() && owner == person) || friends.contains(person)
            }
            AllocationScope::Closed => false,
        }
    }

    /// The scope's name as commands and answers spell it.
    pub fn name(&self) -> &'static str {
        match self {
            AllocationScope::Open => "open",
            AllocationScope::Personal => "personal",
            AllocationScope::Friends(_) => "friends",
            AllocationScope::Closed => "closed",
        }
    }

    /// Reads a scope, or the `allocation_open` flag of a state written before scopes
    /// existed (true: open, false: closed).
    fn deserialize_compat<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // The binary encoding came after scopes: no flag to read there.
        if !d.is_human_readable() {
            return AllocationScope::deserialize(d);
        }
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Compat {
            Flag(bool),
            Scope(AllocationScope),
        }
        Ok(match Compat::deserialize(d)? {
            Compat::Flag(true) => AllocationScope::Open,
            Compat::Flag(false) => AllocationScope::Closed,
            Compat::Scope(s) => s,
        })
    }
}

impl Computer {
    pub fn partition(&self, id: &str) -> Option<&Partition> {
        self.partitions.iter().find(|p| p.id == id)
    }

    pub(crate) fn partition_mut(&mut self, id: &str) -> Option<&mut Partition> {
        self.partitions.iter_mut().find(|p| p.id == id)
    }

    pub fn used_partitions(&self) -> usize {
        self.partitions
            .iter()
            .filter(|p| p.instance.is_some())
            .count()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SoftwareState {
    Available,
    Destroyed,
}

impl SoftwareState {
    pub fn as_str(self) -> &'static str {
        match self {
            SoftwareState::Available => "available",
            SoftwareState::Destroyed => "destroyed",
        }
    }
}

/// One software release on one computer: what was requested and what the node reported.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SoftwareInstallation {
    pub requested: SoftwareState,
    pub reported: Option<SoftwareReport>,
    pub reported_at: Option<Timestamp>,
    pub supplied_at: Timestamp,
    /// Position in the node's software list: the last supplied comes last.
    #[serde(default)]
    pub order: u64,
}

/// Where an instance lives.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Placement {
    /// A regular instance on its own partition.
    Partition { computer: String, partition: String },
    /// A shared instance hosted by a regular instance.
    Hosted { host: InstanceId },
    /// A shared instance whose host went away; the next request re-hosts it.
    Unplaced,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum StatusKind {
    Started,
    Stopped,
    Error,
    Bang,
}

/// The last status a node (or a bang) reported for an instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessStatus {
    pub kind: StatusKind,
    pub message: String,
    pub at: Timestamp,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Instance {
    pub id: InstanceId,
    pub title: String,
    /// The person who owns the tree.
    pub owner: String,
    /// Root of the tree; equal to `id` for a root.
    pub root: InstanceId,
    /// The instance that requested this one directly; None when a person did.
    pub requester: Option<InstanceId>,
    pub software_release: String,
    pub software_type: String,
    pub parameters: Params,
    /// `parameters` as instance XML reads back; kept for the nodes' polling path.
    pub parameter_strings: StringParams,
    pub sla: BTreeMap<String, String>,
    /// What the requester last asked for.
    pub own_state: RequestedState,
    /// What nodes see: the most severe of `own_state` and the root's effective state.
    pub requested_state: RequestedState,
    pub shared: bool,
    pub placement: Placement,
    pub connection: StringParams,
    /// Shared instances hosted here, in the order they arrived (regular instances only).
    pub hosted: Vec<InstanceId>,
    pub timestamp: Timestamp,
    pub access_status: Option<AccessStatus>,
    pub created_at: Timestamp,
}

impl Instance {
    pub fn is_root(&self) -> bool {
        self.root == self.id
    }
}

/// A person's portal password: the argon2id hash a gateway made (never the password).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PasswordRecord {
    pub hash: String,
    pub set_at: Timestamp,
}

/// A portal session (kept by the SHA-256 of its token).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebSession {
    pub person: String,
    pub opened_at: Timestamp,
    pub expires_at: Timestamp,
}

/// What the state keeps per client for exactly-once application.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Session {
    pub last_seen: Timestamp,
    /// Outcomes remembered for this client (at most `OUTCOMES_PER_CLIENT`).
    pub remembered: u32,
}

/// A certificate the group's authority issued (the certificate itself went to its
/// holder; the group remembers whom it names, until when, and whether it was revoked).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertificateRecord {
    pub identity: crate::identity::Identity,
    pub issued_at: Timestamp,
    pub not_after: Timestamp,
    pub revoked_at: Option<Timestamp>,
}

/// A one-time token a person made to register a node as one of their computers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRecord {
    pub owner: String,
    pub computer: String,
    pub created_at: Timestamp,
    pub expires_at: Timestamp,
    pub used_at: Option<Timestamp>,
    /// A server enrollment token: what it grants (`owner` is the operator, `computer`
    /// empty).
    #[serde(default)]
    pub server: Option<ServerGrant>,
}

/// A certificate and its private key, as the masters made them for a partition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IssuedPair {
    pub cert_pem: String,
    pub key_pem: String,
}

impl Computer {
    /// A computer just registered: no partitions yet, open to allocation.
    pub(crate) fn new(id: &str, owner: &str, now: Timestamp) -> Computer {
        Computer {
            id: id.to_owned(),
            title: id.to_owned(),
            owner: owner.to_owned(),
            region: None,
            network: None,
            attributes: Default::default(),
            allocation_scope: AllocationScope::Open,
            legacy_partition_keys: false,
            address: None,
            netmask: None,
            partitions: Vec::new(),
            last_contact: None,
            registered_at: now,
        }
    }
}

/// What a node reports about one software release.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum SoftwareReport {
    Building,
    Available,
    Error(String),
    Destroyed,
}

/// What a server enrollment token grants: a replica's or gateway's certificate with the
/// names and addresses it will be reached by (chosen by the operator who made the token,
/// never by whoever presents it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerGrant {
    pub identity: crate::identity::Identity,
    #[serde(default)]
    pub dns_names: Vec<String>,
    #[serde(default)]
    pub ip_addresses: Vec<String>,
}
