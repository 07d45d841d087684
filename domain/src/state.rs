//! The master's state. Every collection is ordered (BTreeMap/Vec), so serializing two
//! states that applied the same commands yields identical bytes.

use super::command::Outcome;
use super::ids::{InstanceId, Timestamp};
use super::param::{Params, StringParams};
use super::tracked::Tracked;
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
    pub reported: Option<super::command::SoftwareReport>,
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
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server: Option<super::command::ServerGrant>,
}

/// A certificate and its private key, as the masters made them for a partition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IssuedPair {
    pub cert_pem: String,
    pub key_pem: String,
}

/// The whole replicated state of a master.
///
/// Entities (computers, software installations, instances, remembered outcomes, client
/// sessions) live in [`Tracked`] maps, so a command's changes can be persisted entity by
/// entity (`take_changes`); the title and tree indexes are derived from the instances and
/// rebuilt on load.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct State {
    pub(crate) computers: Tracked<String, Computer>,
    /// (computer, software release url) -> installation.
    pub(crate) software: Tracked<(String, String), SoftwareInstallation>,
    pub(crate) instances: Tracked<InstanceId, Instance>,
    /// Outcomes remembered for retries, by (client, sequence number).
    pub(crate) outcomes: Tracked<(String, u64), Outcome>,
    /// Per client: when it was last heard of (command time, for pruning) and how many
    /// outcomes are remembered for it.
    pub(crate) sessions: Tracked<String, Session>,
    /// Raft replica ids that left the group, with when: never to be reused.
    pub(crate) retired_replicas: Tracked<u64, Timestamp>,
    /// The group's certificate authority (one entry, key 0), installed at `master init`.
    pub(crate) authority: Tracked<u8, crate::identity::CaMaterial>,
    /// Every certificate the authority issued, by serial: who, until when, revoked when.
    pub(crate) certificates: Tracked<u128, CertificateRecord>,
    /// Certificates the masters made whole (key included) for partitions, handed to their
    /// node through `getComputerPartitionCertificate`; like the authority, never read out.
    pub(crate) issued_keys: Tracked<u128, IssuedPair>,
    /// One-time registration tokens, by the SHA-256 (hex) of the token: the token itself
    /// is known only to the person who made it and the node it is handed to.
    pub(crate) tokens: Tracked<String, TokenRecord>,
    /// Persons with the group's admin rights (since when): recorded here by an operator,
    /// never inferred from a name in a gateway's configuration.
    pub(crate) admins: Tracked<String, Timestamp>,
    /// The ledger: movements by id, price histories, recorded journal transactions.
    pub(crate) movements: Tracked<u64, super::ledger::Movement>,
    pub(crate) prices: Tracked<super::ledger::PriceKey, Vec<super::ledger::PriceEntry>>,
    /// (computer, transaction key) -> what it recorded.
    pub(crate) journals: Tracked<(String, String), super::ledger::JournalRecord>,
    pub(crate) next_movement: u64,
    /// No journal may report a period ending before this (see `ledger.rs`).
    pub(crate) books_closed_until: Timestamp,
    /// Every started instance has had its hosting movement opened (false in a state
    /// written before the ledger existed: the next command does it).
    pub(crate) hosting_synced: bool,
    pub(crate) next_instance: u64,
    /// Counter giving each supply its place in the computer's software list.
    pub(crate) next_supply: u64,
    /// The latest command time applied: time never runs backwards inside the state, even
    /// when a new leader's clock is behind the old one's.
    pub(crate) clock: Timestamp,
    pub(crate) applied: u64,
    /// Roots by (owner, title). Derived.
    pub(crate) roots: BTreeMap<(String, String), InstanceId>,
    /// Tree members by (root, title), the root itself included. Derived.
    pub(crate) members: BTreeMap<(InstanceId, String), InstanceId>,
    /// Members of each tree (the root included). Derived.
    pub(crate) trees: BTreeMap<InstanceId, BTreeSet<InstanceId>>,
    /// The open hosting movement of each billed instance. Derived.
    pub(crate) open_hosting: BTreeMap<InstanceId, u64>,
    /// Usage movements recorded since the last `take_changes`, which writes them to
    /// storage: a replica does not keep usage in memory (readers load it from disk).
    pub(crate) usage_outbox: Pending<Vec<super::ledger::Movement>>,
    /// One shared copy of each name movements hold (bookkeeping, outside equality).
    pub(crate) names: Pending<super::name::Interner>,
    /// Hosting movements by (computer, partition), by start. Derived.
    pub(crate) hosting_by_partition: BTreeMap<(String, String), BTreeSet<(Timestamp, u64)>>,
    /// Movement ids by customer (None: billed to no one). Derived.
    pub(crate) by_customer: BTreeMap<Option<String>, BTreeSet<u64>>,
    /// Partitions a format took away since the last `take_changes` (their keys go).
    pub(crate) dropped_partitions: Pending<Vec<(String, String)>>,
    /// The bytes last written for each computer header and partition key, so that a
    /// command touching one partition of a large computer writes that partition only.
    /// Empty after a load: the first change to a computer writes all of it once.
    pub(crate) written: Pending<std::collections::HashMap<Vec<u8>, Vec<u8>>>,
}

/// Bookkeeping for persistence only: never part of what a state is (equal states may
/// differ in it).
#[derive(Debug, Clone, Default)]
pub(crate) struct Pending<T>(pub(crate) T);

impl<T> PartialEq for Pending<T> {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl State {
    /// The group's certificate authority, once installed.
    pub fn authority(&self) -> Option<&crate::identity::CaMaterial> {
        self.authority.get(&0)
    }

    /// What the group remembers of a certificate it issued.
    pub fn certificate(&self, serial: u128) -> Option<&CertificateRecord> {
        self.certificates.get(&serial)
    }

    /// A registration token's record, by the SHA-256 (hex) of the token.
    pub fn token(&self, hash: &str) -> Option<&TokenRecord> {
        self.tokens.get(hash)
    }

    /// The owner of a computer.
    pub fn computer_owner(&self, computer: &str) -> Option<String> {
        self.computers.get(computer).map(|c| c.owner.clone())
    }

    /// The newest certificate (and key) the masters made for a partition that is neither
    /// revoked nor within `margin` of its end at `now`.
    pub fn partition_certificate(
        &self,
        computer: &str,
        partition: &str,
        now: Timestamp,
        margin: u64,
    ) -> Option<(u128, &IssuedPair)> {
        let identity = crate::identity::Identity::Partition {
            computer: computer.to_owned(),
            partition: partition.to_owned(),
        };
        self.certificates
            .iter()
            .filter(|(_, r)| {
                r.identity == identity
                    && r.revoked_at.is_none()
                    && r.not_after.0 > now.0.saturating_add(margin)
            })
            .filter_map(|(s, r)| self.issued_keys.get(s).map(|p| (r.issued_at, *s, p)))
            .max_by_key(|(at, s, _)| (*at, *s))
            .map(|(_, s, p)| (s, p))
    }

    /// Whether a partition of a computer hosts an instance.
    pub fn partition_hosts_instance(&self, computer: &str, partition: &str) -> bool {
        self.computers
            .get(computer)
            .and_then(|c| c.partition(partition))
            .is_some_and(|p| p.instance.is_some())
    }

    /// Whether a person has the group's admin rights.
    pub fn is_admin(&self, person: &str) -> bool {
        self.admins.contains_key(person)
    }

    /// The persons with admin rights, in order.
    pub fn admins(&self) -> impl Iterator<Item = &str> {
        self.admins.keys().map(String::as_str)
    }

    /// Serials of every revoked certificate, ascending.
    pub fn revoked_serials(&self) -> Vec<u128> {
        self.certificates
            .iter()
            .filter(|(_, r)| r.revoked_at.is_some())
            .map(|(s, _)| *s)
            .collect()
    }
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
