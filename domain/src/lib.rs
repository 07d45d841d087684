//! The master's domain: state, commands, deterministic apply, allocation, accounting,
//! the identities of the group, and the queries its readers make.
//!
//! No I/O here, and no async runtime, RPC or storage crate among its dependencies: the
//! compiler keeps them out. `apply` is a pure function of the state and the command: it
//! reads no clock, no random source and no environment, so every Raft replica that
//! applies the same log reaches the same bytes (the replica, `master-replica`, persists
//! what `take_changes` lists). Everything a command needs from the outside world (its time, its request
//! id, who asks) arrives inside the [`Command`]; ids the state hands out come from counters
//! kept in the state itself, so they are the same on every replica.

#![forbid(unsafe_code)]

mod alloc;
mod alloc_index;
mod apply;
pub mod codec;
mod command;
mod decimal;
mod error;
pub mod identity;
mod ids;
mod invariants;
mod invoice;
mod ledger;
mod movements;
mod name;
mod param;
mod persist;
mod records;
mod state;
mod tracked;
mod view;

pub use alloc::{
    sells_size, Placement as AllocationPlacement, Score, SlaFilter, Spread, PARTITION_SIZES,
};
pub use apply::{FORGET_AFTER, OUTCOMES_PER_CLIENT, SESSION_TTL_MICROS};
pub use codec::{CodecError, Encoding};
pub use command::{
    shown_instance, AddressSpec, Command, ComputerSpec, Op, Outcome, PartitionSpec, Reply,
    Requester, ServerGrant, SoftwareReport,
};
pub use decimal::{format_date, parse_date, Decimal};
pub use error::DomainError;
pub use identity::{BadIdentity, CaMaterial, Identity};
pub use ids::{InstanceId, RequestId, Timestamp};
pub use invoice::{Invoice, InvoiceItem, InvoiceLine};
pub use ledger::{hosting_resource, is_hosting, HOSTING, MAX_CLOCK_SKEW_MICROS};
pub use movements::{
    JournalRecord, Movement, MovementKind, PriceEntry, PriceKey, PriceScope, UsageLine,
    UsageTransaction,
};
pub use name::Name;
pub use param::{stringify, ParamValue, Params, StringParams};
pub use persist::{
    restore_entry, usage_disk_range, usage_disk_target, Change, Entry, KeyKind, PersistError,
    Query, RestoredEntry,
};
pub use records::{
    AccessStatus, Address, AllocationScope, CertificateRecord, Computer, Instance, IssuedPair,
    Partition, PasswordRecord, Placement, RequestedState, Session, SoftwareInstallation,
    SoftwareState, StatusKind, TokenRecord, WebSession,
};
pub use state::State;
pub use view::{
    ComputerView, InstanceView, PartitionView, SharedOnHostView, SoftwareView, TreeMember,
};
