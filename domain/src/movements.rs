//! The ledger's records, as data: movements between a provider and a customer, price
//! histories, recorded journal transactions. How they are made and read is `ledger.rs`.

use crate::decimal::Decimal;
use crate::ids::{InstanceId, Timestamp};
use crate::name::Name;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum MovementKind {
    Hosting,
    Usage,
}

impl MovementKind {
    pub fn as_str(self) -> &'static str {
        match self {
            MovementKind::Hosting => "hosting",
            MovementKind::Usage => "usage",
        }
    }
}

/// One movement of a resource from a provider to a customer. Self-contained: it keeps
/// copies of the names it concerns, so it outlives the instance, partition or computer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Movement {
    pub id: u64,
    pub kind: MovementKind,
    /// `hosting`, or the resource a journal line names.
    pub resource: Name,
    /// Hours for hosting (None while open); the reported quantity for usage.
    pub quantity: Option<Decimal>,
    pub start: Timestamp,
    /// None while a hosting movement is open.
    pub stop: Option<Timestamp>,
    /// The provider: the computer's owner.
    pub source: Name,
    /// The customer: the owner of the instance tree; None for usage of a partition that
    /// hosted nothing when the journal arrived (recorded, billed to no one).
    pub destination: Option<Name>,
    pub computer: Name,
    pub partition: Name,
    /// The computer's region when the movement was recorded (prices per region).
    pub region: Option<Name>,
    pub instance: Option<InstanceId>,
    /// The instance tree (its root) and the root's title when recorded.
    pub tree: Option<InstanceId>,
    pub tree_title: Option<Name>,
    /// The software release of the instance.
    #[serde(default)]
    pub software_release: Option<Name>,
    /// For usage: the journal transaction it came from.
    pub journal: Option<Name>,
    pub recorded_at: Timestamp,
}

/// What a price applies to.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum PriceScope {
    /// One computer of the provider.
    Computer(String),
    /// Every computer of the provider in a region (a computer's own price wins).
    Region(String),
}

/// One price of a price's history: from `from` on, until the next entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PriceEntry {
    pub from: Timestamp,
    /// Per unit of the resource (per hour for hosting).
    pub price: Decimal,
    pub currency: String,
    pub unit: String,
}

/// One usage line as the gateway read it from a journal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageLine {
    /// The journal movement's `reference`: the partition.
    pub partition: Option<String>,
    pub resource: String,
    /// As written (`xs:float` text).
    pub quantity: String,
}

/// One journal transaction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageTransaction {
    /// The reporting computer (slapgrid writes the computer id).
    pub reference: String,
    /// Empty when the node did not say (slapgrid): the period then starts where the
    /// computer's previous journal stopped.
    pub start_date: String,
    pub stop_date: String,
    pub lines: Vec<UsageLine>,
}

/// A journal transaction once recorded: its period, the movements it produced (ids
/// `first_movement..first_movement + movements`, given in a row) and a fingerprint of its
/// lines, enough to recognise it when posted again without reading those movements back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JournalRecord {
    pub start: Timestamp,
    pub stop: Timestamp,
    pub first_movement: u64,
    pub movements: u64,
    /// 128-bit FNV-1a of the lines (partition, resource, quantity), in order.
    pub fingerprint: String,
    pub recorded_at: Timestamp,
    /// The node gave the start date (otherwise it is where the previous journal stopped).
    #[serde(default)]
    pub explicit_start: bool,
}

/// (provider, scope, resource).
pub type PriceKey = (String, PriceScope, String);
