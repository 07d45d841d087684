//! The master's state. Every collection is ordered (BTreeMap/Vec), so serializing two
//! states that applied the same commands yields identical bytes.

use super::command::Outcome;
use super::ids::{InstanceId, Timestamp};
use super::records::{
    CertificateRecord, Computer, Instance, IssuedPair, Session, SoftwareInstallation, TokenRecord,
};
use super::tracked::Tracked;
use std::collections::{BTreeMap, BTreeSet};

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
    /// Persons' portal passwords (argon2id hashes a gateway made), by person.
    pub(crate) passwords: Tracked<String, super::records::PasswordRecord>,
    /// Portal sessions by the SHA-256 (hex) of their token.
    pub(crate) web_sessions: Tracked<String, super::records::WebSession>,
    /// The ledger: movements by id, price histories, recorded journal transactions.
    pub(crate) movements: Tracked<u64, super::movements::Movement>,
    pub(crate) prices: Tracked<super::movements::PriceKey, Vec<super::movements::PriceEntry>>,
    /// (computer, transaction key) -> what it recorded.
    pub(crate) journals: Tracked<(String, String), super::movements::JournalRecord>,
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
    pub(crate) usage_outbox: Pending<Vec<super::movements::Movement>>,
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
    /// Computers that supply each release with a free partition, best first. Derived,
    /// kept up to date before each allocation (`alloc_index.rs`).
    pub(crate) alloc_index: Pending<super::alloc_index::AllocIndex>,
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
    /// The same state, allocating by scanning every computer instead of walking the
    /// allocation index (what a test compares the index with).
    #[doc(hidden)]
    pub fn without_alloc_index(mut self) -> Self {
        self.computers.unwatch();
        self.software.unwatch();
        self.alloc_index = Pending::default();
        self
    }

    /// Builds the allocation index now rather than at the first allocation (a replica
    /// does it when it loads, so that the first request after a restart does not wait).
    pub fn prepare_allocation(&mut self) {
        self.alloc_index
            .0
            .refresh(&mut self.computers, &mut self.software);
    }

    /// The group's certificate authority, once installed.
    pub fn authority(&self) -> Option<&crate::identity::CaMaterial> {
        self.authority.get(&0)
    }

    /// The group's id (None before the authority is installed, or in a group made
    /// before groups had ids).
    pub fn group_id(&self) -> Option<&str> {
        self.authority
            .get(&0)
            .map(|a| a.group.as_str())
            .filter(|g| !g.is_empty())
    }

    /// Gives the group a new id (a restore from a backup starts a new group, which the
    /// old group's replicas must not join); `take_changes` then lists the record.
    /// False without an authority.
    pub fn rename_group(&mut self, group: &str) -> bool {
        match self.authority.get_mut(&0) {
            Some(a) => {
                a.group = group.to_owned();
                true
            }
            None => false,
        }
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
