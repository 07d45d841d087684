//! The state as key/value entities, for write-through persistence and snapshots.
//!
//! Each entity is one key: a computer (its header, with its partitions' ids in format
//! order), each of its partitions, a software installation, an instance, a remembered
//! outcome, a client session, and one `meta` key for the counters and the clock. A read
//! about one instance carries the header and only the partitions it needs, not every
//! partition of a large computer. After a command, [`State::take_changes`] lists exactly the keys it wrote
//! (the maps are [`Tracked`](super::tracked::Tracked)), which the storage layer writes in
//! the same batch as the applied log id. [`State::from_entries`] rebuilds a state from
//! every pair and derives the indexes. A snapshot is the same pairs, length-prefixed, in
//! key order: equal states give equal bytes.
//!
//! Values are binary (`codec.rs`: a version byte, then postcard); values written by
//! earlier releases are JSON and still read, and [`State::upgrade_pair`] rewrites them. A
//! remembered outcome is one key per (client, slot): a client's next outcome overwrites
//! the slot's, and the client's session (last seen, outcomes kept) is derived from its
//! outcomes on load, so a command writes one exactly-once key and nothing else.

use super::codec::{self, CodecError, Encoding};
use super::command::Outcome;
use super::ids::{InstanceId, Timestamp};
use super::movements::{JournalRecord, Movement, PriceEntry, PriceKey, PriceScope};
use super::records::{Computer, Instance, Partition, Placement, Session, SoftwareInstallation};
use super::state::State;
use super::tracked::Tracked;
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

/// A read of the master: which entities to return.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Query {
    /// What a computer's node is told: the computer, its software, the instances on its
    /// partitions and the shared instances they host, with their trees' roots.
    Computer { computer: String },
    /// One instance, its tree's root, its host if shared, and the computers they run on.
    Instance { id: InstanceId },
    /// Every member of a tree, with their hosts.
    Tree { root: InstanceId },
    /// The roots of the trees `owner` requested (only the one titled `title` when
    /// given), with their hosts and the computers they run on: a person's own list.
    Trees {
        owner: String,
        title: Option<String>,
    },
    /// The ledger for an invoice or a usage listing: the movements that count in
    /// `[from, to)` (of one customer, or everyone's; of one provider, or any), every
    /// price, and the clock and closed watermark.
    Ledger {
        customer: Option<String>,
        provider: Option<String>,
        from: Timestamp,
        to: Timestamp,
    },
    /// Every certificate the authority issued (whom, until when, revoked when) and the
    /// persons with admin rights: what a gateway checks its callers against. Never the
    /// authority itself.
    Certificates,
    /// A person's portal password hash and admin flag (a gateway checks a password).
    Person { person: String },
    /// One portal session, by the SHA-256 (hex) of its token.
    WebSession { hash: String },
    /// The software releases supplied (requested available) on the computers whose
    /// allocation scope admits `person`, with those computers (no partitions): what the
    /// portal offers them to request.
    Catalog { person: String },
    /// The whole state.
    All,
    /// The computers `owner` provides (registered as theirs), each with every partition
    /// (which instance holds it, not the instance) and its software rows: the portal's
    /// servers page. A scan of every computer (no index by owner).
    Computers { owner: String },
    /// The roots of the trees `owner` requested, alone: no other member, no host, no
    /// computer (the portal's services list shows each root's title, release and
    /// states). By the owner's index of roots, in title order.
    Roots { owner: String },
}

/// One persisted change: a key and its new value, or None when the entity is gone.
pub type Change = (Vec<u8>, Option<Vec<u8>>);
/// One persisted entity: its key and value.
pub type Entry = (Vec<u8>, Vec<u8>);

const COMPUTER: u8 = b'c';
const PARTITION: u8 = b'p';
const SOFTWARE: u8 = b's';
const INSTANCE: u8 = b'i';
const OUTCOME: u8 = b'o';
const SESSION: u8 = b'n';
const META: u8 = b'm';
const RETIRED: u8 = b'r';
const MOVEMENT: u8 = b'v';
const USAGE: u8 = b'u';
const BY_CUSTOMER: u8 = b'x';
const BY_PROVIDER: u8 = b'y';
const BY_TIME: u8 = b't';
const PRICE: u8 = b'$';
const JOURNAL: u8 = b'j';
const AUTHORITY: u8 = b'a';
const CERTIFICATE: u8 = b'k';
const ISSUED_KEY: u8 = b'q';
const TOKEN: u8 = b'g';
const ADMIN: u8 = b'd';
const PASSWORD: u8 = b'w';
const WEB_SESSION: u8 = b'l';

/// What a key holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    Computer,
    Partition,
    Software,
    Instance,
    /// Exactly-once bookkeeping: remembered outcomes and sessions.
    Outcome,
    Session,
    /// Counters and the clock.
    Meta,
    /// Raft replica ids that left the group.
    Retired,
    /// The ledger: movements, price histories, recorded journal transactions.
    Movement,
    Price,
    Journal,
    /// Usage movements, on disk only (a replica does not load them; readers do).
    Usage,
    /// Usage movements by (customer or provider, stop), for reads of a period.
    UsageIndex,
    /// The group's certificate authority, and the certificates it issued.
    Authority,
    Certificate,
    /// Partition certificates with their keys (never read out).
    IssuedKey,
    /// Registration tokens (hashes; never read out).
    Token,
    /// Persons with the group's admin rights.
    Admin,
    /// Persons' portal password hashes.
    Password,
    /// Portal sessions (by the hash of their token).
    WebSession,
}

impl KeyKind {
    pub fn of(key: &[u8]) -> Option<KeyKind> {
        Some(match *key.first()? {
            COMPUTER => KeyKind::Computer,
            PARTITION => KeyKind::Partition,
            SOFTWARE => KeyKind::Software,
            INSTANCE => KeyKind::Instance,
            OUTCOME => KeyKind::Outcome,
            SESSION => KeyKind::Session,
            META => KeyKind::Meta,
            RETIRED => KeyKind::Retired,
            MOVEMENT => KeyKind::Movement,
            PRICE => KeyKind::Price,
            JOURNAL => KeyKind::Journal,
            AUTHORITY => KeyKind::Authority,
            CERTIFICATE => KeyKind::Certificate,
            ISSUED_KEY => KeyKind::IssuedKey,
            TOKEN => KeyKind::Token,
            ADMIN => KeyKind::Admin,
            PASSWORD => KeyKind::Password,
            WEB_SESSION => KeyKind::WebSession,
            USAGE => KeyKind::Usage,
            BY_CUSTOMER | BY_PROVIDER | BY_TIME => KeyKind::UsageIndex,
            _ => return None,
        })
    }

    /// Keys that hold the domain proper (not exactly-once bookkeeping nor counters).
    pub fn is_domain(self) -> bool {
        matches!(
            self,
            KeyKind::Computer
                | KeyKind::Partition
                | KeyKind::Software
                | KeyKind::Instance
                | KeyKind::Movement
                | KeyKind::Price
                | KeyKind::Journal
                | KeyKind::Usage
                | KeyKind::Authority
                | KeyKind::Certificate
                | KeyKind::IssuedKey
                | KeyKind::Token
                | KeyKind::Admin
                | KeyKind::Password
                | KeyKind::WebSession
        )
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PersistError {
    #[error("malformed key {key:?}: {reason}")]
    BadKey { key: Vec<u8>, reason: &'static str },
    #[error("malformed value for key {key:?}: {source}")]
    BadValue { key: Vec<u8>, source: CodecError },
    #[error("cannot encode the value of key {key:?}: {source}")]
    Encode { key: Vec<u8>, source: CodecError },
    #[error("snapshot truncated at byte {0}")]
    Truncated(usize),
    #[error("snapshot keys out of order at byte {0}")]
    Unordered(usize),
    /// A pair whose value does not agree with its key or with the rest of the state (a
    /// computer or partition that names another, a partition listed twice or not at
    /// all): such a state is refused rather than loaded with something silently lost.
    #[error("key {:?}: {reason}", String::from_utf8_lossy(key))]
    Inconsistent { key: Vec<u8>, reason: &'static str },
}

#[derive(Serialize, Deserialize)]
struct Meta {
    next_instance: u64,
    #[serde(default)]
    next_supply: u64,
    clock: Timestamp,
    applied: u64,
    #[serde(default)]
    next_movement: u64,
    #[serde(default)]
    books_closed_until: Timestamp,
    #[serde(default)]
    hosting_synced: bool,
}

impl Meta {
    fn of(state: &State) -> Meta {
        Meta {
            next_instance: state.next_instance,
            next_supply: state.next_supply,
            clock: state.clock,
            applied: state.applied,
            next_movement: state.next_movement,
            books_closed_until: state.books_closed_until,
            hosting_synced: state.hosting_synced,
        }
    }
}

fn with_len(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
    out.extend_from_slice(bytes);
}

fn computer_key(id: &str) -> Vec<u8> {
    let mut k = vec![COMPUTER];
    k.extend_from_slice(id.as_bytes());
    k
}

fn partition_key(computer: &str, partition: &str) -> Vec<u8> {
    let mut k = vec![PARTITION];
    with_len(&mut k, computer.as_bytes());
    k.extend_from_slice(partition.as_bytes());
    k
}

/// A computer's key without its partitions, which have keys of their own; their ids in
/// format order say how to put the computer back together.
#[derive(Serialize, Deserialize)]
struct ComputerHeader {
    #[serde(flatten)]
    computer: Computer,
    #[serde(default)]
    partition_order: Vec<String>,
}

/// The binary layout of a computer's header (no flattening: a binary encoding has no
/// field names to merge).
#[derive(Serialize, Deserialize)]
struct ComputerHeaderV1 {
    computer: Computer,
    partition_order: Vec<String>,
}

/// A header in the given encoding.
fn header_value(key: &[u8], c: &Computer, encoding: Encoding) -> Result<Vec<u8>, PersistError> {
    let h = ComputerHeader::of(c);
    match encoding {
        Encoding::Binary => enc(
            key,
            &ComputerHeaderV1 {
                computer: h.computer,
                partition_order: h.partition_order,
            },
        ),
        Encoding::Json => {
            codec::encode_as(&h, Encoding::Json).map_err(|source| PersistError::Encode {
                key: key.to_vec(),
                source,
            })
        }
    }
}

fn parse_header(key: &[u8], value: &[u8]) -> Result<ComputerHeader, PersistError> {
    if codec::is_binary(value) {
        let h: ComputerHeaderV1 = parse(key, value)?;
        return Ok(ComputerHeader {
            computer: h.computer,
            partition_order: h.partition_order,
        });
    }
    parse(key, value)
}

impl ComputerHeader {
    fn of(c: &Computer) -> ComputerHeader {
        ComputerHeader {
            computer: Computer {
                id: c.id.clone(),
                title: c.title.clone(),
                owner: c.owner.clone(),
                region: c.region.clone(),
                network: c.network.clone(),
                attributes: c.attributes.clone(),
                allocation_scope: c.allocation_scope.clone(),
                legacy_partition_keys: c.legacy_partition_keys,
                address: c.address.clone(),
                netmask: c.netmask.clone(),
                partitions: Vec::new(),
                last_contact: c.last_contact,
                registered_at: c.registered_at,
            },
            partition_order: c.partitions.iter().map(|p| p.id.clone()).collect(),
        }
    }
}

/// A computer as entries: its header, then the partitions `wanted` lets through.
fn computer_entries(
    c: &Computer,
    wanted: impl Fn(&Partition) -> bool,
    encoding: Encoding,
    out: &mut Vec<Entry>,
) -> Result<(), PersistError> {
    let k = computer_key(&c.id);
    out.push((k.clone(), header_value(&k, c, encoding)?));
    for p in c.partitions.iter().filter(|p| wanted(p)) {
        let k = partition_key(&c.id, &p.id);
        out.push((k.clone(), enc_as(&k, p, encoding)?));
    }
    Ok(())
}

fn software_key(computer: &str, url: &str) -> Vec<u8> {
    let mut k = vec![SOFTWARE];
    with_len(&mut k, computer.as_bytes());
    k.extend_from_slice(url.as_bytes());
    k
}

fn instance_key(id: InstanceId) -> Vec<u8> {
    let mut k = vec![INSTANCE];
    k.extend_from_slice(&id.0.to_be_bytes());
    k
}

/// A client's outcome slot: `seq % OUTCOMES_PER_CLIENT`, as one byte.
fn outcome_key(client: &str, seq: u64) -> Vec<u8> {
    let mut k = vec![OUTCOME];
    with_len(&mut k, client.as_bytes());
    k.push((seq % crate::apply::OUTCOMES_PER_CLIENT as u64) as u8);
    k
}

/// A remembered outcome as stored in its client's slot: its sequence number, the
/// client's last command time when it was written (the session is derived from these),
/// and the outcome.
#[derive(Serialize, Deserialize)]
struct OutcomeRecord {
    seq: u64,
    at: Timestamp,
    outcome: Outcome,
}

fn retired_key(id: u64) -> Vec<u8> {
    let mut k = vec![RETIRED];
    k.extend_from_slice(&id.to_be_bytes());
    k
}

fn movement_key(id: u64) -> Vec<u8> {
    let mut k = vec![MOVEMENT];
    k.extend_from_slice(&id.to_be_bytes());
    k
}

/// The entities of a map written since the last call, as changes.
fn changes<K: Ord + Clone, V: Serialize>(
    map: &mut Tracked<K, V>,
    key: impl Fn(&K) -> Vec<u8>,
    out: &mut Vec<Change>,
) -> Result<(), PersistError> {
    for (id, v) in map.take_dirty() {
        let k = key(&id);
        let v = v.map(|v| enc(&k, v)).transpose()?;
        out.push((k, v));
    }
    Ok(())
}

/// Every entity of a map, as entries.
fn entries<K: Ord + Clone, V: Serialize>(
    map: &Tracked<K, V>,
    key: impl Fn(&K) -> Vec<u8>,
    encoding: Encoding,
    out: &mut Vec<Entry>,
) -> Result<(), PersistError> {
    for (id, v) in map.iter() {
        let k = key(id);
        out.push((k.clone(), enc_as(&k, v, encoding)?));
    }
    Ok(())
}

/// The index of usage by stop time (then id).
fn by_time_key(stop: Timestamp, id: Option<u64>) -> Vec<u8> {
    let mut k = vec![BY_TIME];
    k.extend_from_slice(&stop.micros().to_be_bytes());
    if let Some(id) = id {
        k.extend_from_slice(&id.to_be_bytes());
    }
    k
}

fn usage_key(id: u64) -> Vec<u8> {
    let mut k = vec![USAGE];
    k.extend_from_slice(&id.to_be_bytes());
    k
}

/// `kind`, the party, then (when given) a stop time and a movement id.
fn usage_index_key(kind: u8, party: &str, stop: Option<Timestamp>, id: Option<u64>) -> Vec<u8> {
    let mut k = vec![kind];
    with_len(&mut k, party.as_bytes());
    if let Some(stop) = stop {
        k.extend_from_slice(&stop.micros().to_be_bytes());
    }
    if let Some(id) = id {
        k.extend_from_slice(&id.to_be_bytes());
    }
    k
}

/// The keys a ledger read must scan on disk for the usage of its period, `[from, to)`:
/// the customer's index, else the provider's, else the index by time.
pub fn usage_disk_range(query: &Query) -> Option<(Vec<u8>, Vec<u8>)> {
    let Query::Ledger {
        customer,
        provider,
        from,
        to,
    } = query
    else {
        return None;
    };
    let range = |kind, party: &str| {
        (
            usage_index_key(kind, party, Some(*from), None),
            usage_index_key(kind, party, Some(*to), None),
        )
    };
    Some(match (customer, provider) {
        (Some(c), _) => range(BY_CUSTOMER, c),
        (None, Some(p)) => range(BY_PROVIDER, p),
        (None, None) => (by_time_key(*from, None), by_time_key(*to, None)),
    })
}

/// For a key in a [`usage_disk_range`]: the usage movement's key to read (an index key
/// ends with the movement id; a usage key is itself).
pub fn usage_disk_target(key: &[u8], _value: &[u8]) -> Option<Vec<u8>> {
    match *key.first()? {
        USAGE => Some(key.to_vec()),
        BY_CUSTOMER | BY_PROVIDER | BY_TIME => {
            let id: [u8; 8] = key.get(key.len().checked_sub(8)?..)?.try_into().ok()?;
            Some(usage_key(u64::from_be_bytes(id)))
        }
        _ => None,
    }
}

fn price_key((provider, scope, resource): &PriceKey) -> Vec<u8> {
    let mut k = vec![PRICE];
    with_len(&mut k, provider.as_bytes());
    let (tag, name) = match scope {
        PriceScope::Computer(c) => (b'c', c),
        PriceScope::Region(r) => (b'r', r),
    };
    k.push(tag);
    with_len(&mut k, name.as_bytes());
    k.extend_from_slice(resource.as_bytes());
    k
}

fn journal_key((computer, transaction): &(String, String)) -> Vec<u8> {
    let mut k = vec![JOURNAL];
    with_len(&mut k, computer.as_bytes());
    k.extend_from_slice(transaction.as_bytes());
    k
}

fn authority_key() -> Vec<u8> {
    vec![AUTHORITY]
}

fn certificate_key(serial: u128) -> Vec<u8> {
    let mut k = vec![CERTIFICATE];
    k.extend_from_slice(&serial.to_be_bytes());
    k
}

fn token_key(hash: &str) -> Vec<u8> {
    let mut k = vec![TOKEN];
    k.extend_from_slice(hash.as_bytes());
    k
}

fn password_key(person: &str) -> Vec<u8> {
    let mut k = vec![PASSWORD];
    k.extend_from_slice(person.as_bytes());
    k
}

fn web_session_key(hash: &str) -> Vec<u8> {
    let mut k = vec![WEB_SESSION];
    k.extend_from_slice(hash.as_bytes());
    k
}

fn admin_key(person: &str) -> Vec<u8> {
    let mut k = vec![ADMIN];
    k.extend_from_slice(person.as_bytes());
    k
}

fn issued_key_key(serial: u128) -> Vec<u8> {
    let mut k = vec![ISSUED_KEY];
    k.extend_from_slice(&serial.to_be_bytes());
    k
}

/// Split `len(u32 BE) bytes rest` from a key body.
fn split_len(body: &[u8]) -> Option<(&[u8], &[u8])> {
    let len = u32::from_be_bytes(body.get(..4)?.try_into().ok()?) as usize;
    let field = body.get(4..4 + len)?;
    Some((field, body.get(4 + len..)?))
}

fn inconsistent(key: &[u8], reason: &'static str) -> PersistError {
    PersistError::Inconsistent {
        key: key.to_vec(),
        reason,
    }
}

fn utf8(key: &[u8], bytes: &[u8]) -> Result<String, PersistError> {
    String::from_utf8(bytes.to_vec()).map_err(|_| PersistError::BadKey {
        key: key.to_vec(),
        reason: "not UTF-8",
    })
}

fn enc<T: Serialize>(key: &[u8], value: &T) -> Result<Vec<u8>, PersistError> {
    codec::encode(value).map_err(|source| PersistError::Encode {
        key: key.to_vec(),
        source,
    })
}

fn enc_as<T: Serialize>(
    key: &[u8],
    value: &T,
    encoding: Encoding,
) -> Result<Vec<u8>, PersistError> {
    codec::encode_as(value, encoding).map_err(|source| PersistError::Encode {
        key: key.to_vec(),
        source,
    })
}

fn parse<'a, T: Deserialize<'a>>(key: &[u8], value: &'a [u8]) -> Result<T, PersistError> {
    codec::decode(value).map_err(|source| PersistError::BadValue {
        key: key.to_vec(),
        source,
    })
}

impl State {
    /// The entities written since the last call, in key order, with the meta key (the
    /// clock and counters move with every applied command).
    pub fn take_changes(&mut self) -> Result<Vec<Change>, PersistError> {
        let mut out = Vec::new();
        // The bytes-written cache is updated only once every value has been encoded.
        let mut cache: Vec<(Vec<u8>, Option<Vec<u8>>)> = Vec::new();
        for (id, v) in self.computers.take_dirty() {
            match v {
                Some(c) => {
                    let mut entries = Vec::new();
                    computer_entries(c, |_| true, Encoding::Binary, &mut entries)?;
                    for (k, v) in entries {
                        if self.written.0.get(&k) != Some(&v) {
                            cache.push((k.clone(), Some(v.clone())));
                            out.push((k, Some(v)));
                        }
                    }
                }
                None => {
                    // the computer and every partition key it had
                    let mut prefix = vec![PARTITION];
                    with_len(&mut prefix, id.as_bytes());
                    for k in self.written.0.keys().filter(|k| k.starts_with(&prefix)) {
                        cache.push((k.clone(), None));
                        out.push((k.clone(), None));
                    }
                    let k = computer_key(&id);
                    cache.push((k.clone(), None));
                    out.push((k, None));
                }
            }
        }
        for (computer, partition) in std::mem::take(&mut self.dropped_partitions.0) {
            let still = self
                .computers
                .get(&computer)
                .is_some_and(|c| c.partition(&partition).is_some());
            if !still {
                let k = partition_key(&computer, &partition);
                cache.push((k.clone(), None));
                out.push((k, None));
            }
        }
        changes(&mut self.software, |(c, u)| software_key(c, u), &mut out)?;
        changes(&mut self.instances, |id| instance_key(*id), &mut out)?;
        // Outcomes into their clients' slots: a put wins over the delete of the outcome
        // it replaced (same slot); sessions are derived from the outcomes on load.
        let mut slots: std::collections::BTreeMap<Vec<u8>, Option<Vec<u8>>> =
            std::collections::BTreeMap::new();
        for ((client, seq), outcome) in self.outcomes.take_dirty() {
            let k = outcome_key(&client, seq);
            match outcome {
                Some(outcome) => {
                    let at = self
                        .sessions
                        .get(&client)
                        .map_or(self.clock, |s| s.last_seen);
                    let record = OutcomeRecord {
                        seq,
                        at,
                        outcome: outcome.clone(),
                    };
                    slots.insert(k.clone(), Some(enc(&k, &record)?));
                }
                None => {
                    slots.entry(k).or_insert(None);
                }
            }
        }
        out.extend(slots);
        self.sessions.take_dirty();
        changes(&mut self.retired_replicas, |id| retired_key(*id), &mut out)?;
        changes(&mut self.movements, |id| movement_key(*id), &mut out)?;
        changes(&mut self.prices, price_key, &mut out)?;
        changes(&mut self.journals, journal_key, &mut out)?;
        changes(&mut self.authority, |_| authority_key(), &mut out)?;
        changes(&mut self.certificates, |s| certificate_key(*s), &mut out)?;
        changes(&mut self.issued_keys, |s| issued_key_key(*s), &mut out)?;
        changes(&mut self.tokens, |h| token_key(h), &mut out)?;
        changes(&mut self.admins, |p| admin_key(p), &mut out)?;
        changes(&mut self.passwords, |p| password_key(p), &mut out)?;
        changes(&mut self.web_sessions, |h| web_session_key(h), &mut out)?;
        for m in &self.usage_outbox.0 {
            let k = usage_key(m.id);
            out.push((k.clone(), Some(enc(&k, m)?)));
            let stop = m.stop.unwrap_or(m.start);
            if let Some(customer) = &m.destination {
                out.push((
                    usage_index_key(BY_CUSTOMER, customer, Some(stop), Some(m.id)),
                    Some(Vec::new()),
                ));
            }
            out.push((
                usage_index_key(BY_PROVIDER, &m.source, Some(stop), Some(m.id)),
                Some(Vec::new()),
            ));
            out.push((by_time_key(stop, Some(m.id)), Some(Vec::new())));
        }
        self.usage_outbox.0.clear();
        let k = vec![META];
        let v = enc(&k, &Meta::of(self))?;
        out.push((k, Some(v)));
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out.dedup_by(|a, b| a.0 == b.0);
        for (k, v) in cache {
            match v {
                Some(v) => self.written.0.insert(k, v),
                None => self.written.0.remove(&k),
            };
        }
        Ok(out)
    }

    /// Every entity as (key, value), in key order.
    pub fn entries(&self) -> Result<Vec<Entry>, PersistError> {
        let b = Encoding::Binary;
        let mut out = Vec::new();
        for c in self.computers.values() {
            computer_entries(c, |_| true, b, &mut out)?;
        }
        entries(&self.software, |(c, u)| software_key(c, u), b, &mut out)?;
        entries(&self.instances, |id| instance_key(*id), b, &mut out)?;
        self.outcome_entries(&mut out)?;
        entries(&self.retired_replicas, |id| retired_key(*id), b, &mut out)?;
        entries(&self.movements, |id| movement_key(*id), b, &mut out)?;
        entries(&self.prices, price_key, b, &mut out)?;
        entries(&self.journals, journal_key, b, &mut out)?;
        entries(&self.authority, |_| authority_key(), b, &mut out)?;
        entries(&self.certificates, |s| certificate_key(*s), b, &mut out)?;
        entries(&self.issued_keys, |s| issued_key_key(*s), b, &mut out)?;
        entries(&self.tokens, |h| token_key(h), b, &mut out)?;
        entries(&self.admins, |p| admin_key(p), b, &mut out)?;
        entries(&self.passwords, |p| password_key(p), b, &mut out)?;
        entries(&self.web_sessions, |h| web_session_key(h), b, &mut out)?;
        let k = vec![META];
        let v = enc(&k, &Meta::of(self))?;
        out.push((k, v));
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }

    /// Every remembered outcome in its client's slot.
    fn outcome_entries(&self, out: &mut Vec<Entry>) -> Result<(), PersistError> {
        for ((client, seq), outcome) in self.outcomes.iter() {
            let k = outcome_key(client, *seq);
            let at = self
                .sessions
                .get(client)
                .map_or(self.clock, |s| s.last_seen);
            let record = OutcomeRecord {
                seq: *seq,
                at,
                outcome: outcome.clone(),
            };
            out.push((k.clone(), enc(&k, &record)?));
        }
        Ok(())
    }

    /// What the store must write to bring one pair written by an earlier release to this
    /// release's layout (a replica's data is upgraded once, at open, after the state was
    /// loaded from the old pairs): a JSON value is re-encoded in binary; an outcome or
    /// session of the former layout is deleted, [`State::upgrade_outcomes`] writes the
    /// outcomes back in their slots.
    pub fn upgrade_pair(&self, key: &[u8], value: &[u8]) -> Result<Vec<Change>, PersistError> {
        match KeyKind::of(key) {
            Some(KeyKind::Session) => return Ok(vec![(key.to_vec(), None)]),
            Some(KeyKind::Outcome) => {
                let legacy = split_len(key.get(1..).unwrap_or_default())
                    .is_some_and(|(_, seq)| seq.len() == 8);
                return Ok(if legacy {
                    vec![(key.to_vec(), None)]
                } else {
                    Vec::new()
                });
            }
            _ => {}
        }
        if codec::is_binary(value) || value.is_empty() {
            return Ok(Vec::new());
        }
        let v = match KeyKind::of(key) {
            Some(KeyKind::Computer) => {
                let h = parse_header(key, value)?;
                enc(
                    key,
                    &ComputerHeaderV1 {
                        computer: h.computer,
                        partition_order: h.partition_order,
                    },
                )?
            }
            Some(KeyKind::Partition) => enc(key, &parse::<Partition>(key, value)?)?,
            Some(KeyKind::Software) => enc(key, &parse::<SoftwareInstallation>(key, value)?)?,
            Some(KeyKind::Instance) => enc(key, &parse::<Instance>(key, value)?)?,
            Some(KeyKind::Retired | KeyKind::Admin) => enc(key, &parse::<Timestamp>(key, value)?)?,
            Some(KeyKind::Movement | KeyKind::Usage) => enc(key, &parse::<Movement>(key, value)?)?,
            Some(KeyKind::Price) => enc(key, &parse::<Vec<PriceEntry>>(key, value)?)?,
            Some(KeyKind::Journal) => enc(key, &parse::<JournalRecord>(key, value)?)?,
            Some(KeyKind::Authority) => {
                enc(key, &parse::<crate::identity::CaMaterial>(key, value)?)?
            }
            Some(KeyKind::Certificate) => enc(
                key,
                &parse::<super::records::CertificateRecord>(key, value)?,
            )?,
            Some(KeyKind::Token) => enc(key, &parse::<super::records::TokenRecord>(key, value)?)?,
            Some(KeyKind::IssuedKey) => {
                enc(key, &parse::<super::records::IssuedPair>(key, value)?)?
            }
            Some(KeyKind::Meta) => enc(key, &parse::<Meta>(key, value)?)?,
            Some(KeyKind::Password) => {
                enc(key, &parse::<super::records::PasswordRecord>(key, value)?)?
            }
            Some(KeyKind::WebSession) => {
                enc(key, &parse::<super::records::WebSession>(key, value)?)?
            }
            Some(KeyKind::UsageIndex | KeyKind::Session | KeyKind::Outcome) => {
                return Ok(Vec::new())
            }
            None => {
                return Err(PersistError::BadKey {
                    key: key.to_vec(),
                    reason: "unknown key kind",
                })
            }
        };
        Ok(vec![(key.to_vec(), Some(v))])
    }

    /// The outcomes in their slots, after [`State::upgrade_pair`] deleted the former layout.
    pub fn upgrade_outcomes(&self) -> Result<Vec<Change>, PersistError> {
        let mut out = Vec::new();
        self.outcome_entries(&mut out)?;
        Ok(out.into_iter().map(|(k, v)| (k, Some(v))).collect())
    }

    /// The entities answering a read: enough for the reader to rebuild a partial state
    /// with [`State::from_entries`] and render its views from it.
    pub fn query_entries(&self, query: &Query) -> Result<Vec<Entry>, PersistError> {
        self.query_entries_as(query, Encoding::Binary)
    }

    /// [`State::query_entries`], values in the given encoding (JSON for readers of
    /// earlier releases).
    pub fn query_entries_as(
        &self,
        query: &Query,
        encoding: Encoding,
    ) -> Result<Vec<Entry>, PersistError> {
        let e = encoding;
        let mut computers = BTreeSet::new();
        let mut instances = BTreeSet::new();
        let mut software_of = BTreeSet::new();
        match query {
            Query::Certificates => {
                let mut out = Vec::new();
                entries(&self.certificates, |s| certificate_key(*s), e, &mut out)?;
                entries(&self.admins, |p| admin_key(p), e, &mut out)?;
                let k = vec![META];
                out.push((k.clone(), enc_as(&k, &Meta::of(self), e)?));
                out.sort_by(|a, b| a.0.cmp(&b.0));
                return Ok(out);
            }
            Query::Person { person } => {
                let mut out = Vec::new();
                if let Some(r) = self.passwords.get(person) {
                    let k = password_key(person);
                    out.push((k.clone(), enc_as(&k, r, e)?));
                }
                if let Some(since) = self.admins.get(person) {
                    let k = admin_key(person);
                    out.push((k.clone(), enc_as(&k, since, e)?));
                }
                let k = vec![META];
                out.push((k.clone(), enc_as(&k, &Meta::of(self), e)?));
                out.sort_by(|a, b| a.0.cmp(&b.0));
                return Ok(out);
            }
            Query::WebSession { hash } => {
                let mut out = Vec::new();
                if let Some(r) = self.web_sessions.get(hash) {
                    let k = web_session_key(hash);
                    out.push((k.clone(), enc_as(&k, r, e)?));
                }
                let k = vec![META];
                out.push((k.clone(), enc_as(&k, &Meta::of(self), e)?));
                out.sort_by(|a, b| a.0.cmp(&b.0));
                return Ok(out);
            }
            Query::Catalog { person } => {
                let mut out = Vec::new();
                for c in self.computers.values() {
                    if !c.allocation_scope.admits(&c.owner, person) {
                        continue;
                    }
                    let mut any = false;
                    for ((computer, url), sw) in self
                        .software
                        .range((c.id.clone(), String::new())..)
                        .take_while(|((computer, _), _)| *computer == c.id)
                    {
                        if sw.requested == crate::records::SoftwareState::Available {
                            let k = software_key(computer, url);
                            out.push((k.clone(), enc_as(&k, sw, e)?));
                            any = true;
                        }
                    }
                    if any {
                        computer_entries(c, |_| false, e, &mut out)?;
                    }
                }
                let k = vec![META];
                out.push((k.clone(), enc_as(&k, &Meta::of(self), e)?));
                out.sort_by(|a, b| a.0.cmp(&b.0));
                return Ok(out);
            }
            Query::Computers { owner } => {
                let mut out = Vec::new();
                for c in self.computers.values().filter(|c| c.owner == *owner) {
                    computer_entries(c, |_| true, e, &mut out)?;
                    for ((computer, url), sw) in self
                        .software
                        .range((c.id.clone(), String::new())..)
                        .take_while(|((computer, _), _)| *computer == c.id)
                    {
                        let k = software_key(computer, url);
                        out.push((k.clone(), enc_as(&k, sw, e)?));
                    }
                }
                let k = vec![META];
                out.push((k.clone(), enc_as(&k, &Meta::of(self), e)?));
                out.sort_by(|a, b| a.0.cmp(&b.0));
                return Ok(out);
            }
            Query::Roots { owner } => {
                let mut out = Vec::new();
                for (_, id) in self.roots_of(owner) {
                    if let Some(inst) = self.instances.get(&id) {
                        let k = instance_key(id);
                        out.push((k.clone(), enc_as(&k, inst, e)?));
                    }
                }
                out.sort_by(|a, b| a.0.cmp(&b.0));
                return Ok(out);
            }
            // Reads never carry the authority's key: it stays in the masters' storage.
            Query::All => {
                let mut all = match e {
                    Encoding::Binary => self.entries()?,
                    Encoding::Json => self
                        .entries()?
                        .into_iter()
                        .filter(|(k, _)| KeyKind::of(k) != Some(KeyKind::Outcome))
                        .map(|(k, v)| reencode_json(k, &v))
                        .collect::<Result<Vec<_>, _>>()?,
                };
                all.retain(|(k, _)| {
                    !matches!(
                        KeyKind::of(k),
                        Some(KeyKind::Authority | KeyKind::IssuedKey | KeyKind::Token)
                    )
                });
                return Ok(all);
            }
            Query::Ledger {
                customer,
                provider,
                from,
                to,
            } => {
                let mut out = Vec::new();
                for m in self.usage(customer.as_deref(), provider.as_deref(), None, *from, *to) {
                    let k = movement_key(m.id);
                    out.push((k.clone(), enc_as(&k, m, e)?));
                }
                entries(&self.prices, price_key, e, &mut out)?;
                let k = vec![META];
                out.push((k.clone(), enc_as(&k, &Meta::of(self), e)?));
                out.sort_by(|a, b| a.0.cmp(&b.0));
                return Ok(out);
            }
            Query::Computer { computer } => {
                if let Some(c) = self.computers.get(computer) {
                    computers.insert(c.id.clone());
                    software_of.insert(c.id.clone());
                    for p in &c.partitions {
                        if let Some(id) = p.instance {
                            self.with_context(id, &mut instances);
                            if let Some(inst) = self.instances.get(&id) {
                                for s in &inst.hosted {
                                    self.with_context(*s, &mut instances);
                                }
                            }
                        }
                    }
                }
            }
            Query::Instance { id } => {
                self.with_context(*id, &mut instances);
                if let Some(inst) = self.instances.get(id) {
                    if let Placement::Hosted { host } = inst.placement {
                        self.with_context(host, &mut instances);
                    }
                }
            }
            Query::Trees { owner, title } => {
                let roots: Vec<InstanceId> = match title {
                    Some(t) => self.root_by_title(owner, t).into_iter().collect(),
                    None => self.roots_of(owner).map(|(_, id)| id).collect(),
                };
                for id in roots {
                    self.with_context(id, &mut instances);
                    if let Some(Placement::Hosted { host }) =
                        self.instances.get(&id).map(|i| &i.placement)
                    {
                        self.with_context(*host, &mut instances);
                    }
                }
            }
            Query::Tree { root } => {
                for m in self.tree_members(*root) {
                    self.with_context(m.id, &mut instances);
                    if let Placement::Hosted { host } = m.placement {
                        self.with_context(host, &mut instances);
                    }
                }
            }
        }
        // The computers the chosen instances run on, for their partitions' addresses.
        for id in &instances {
            if let Some(Placement::Partition { computer, .. }) =
                self.instances.get(id).map(|i| &i.placement)
            {
                computers.insert(computer.clone());
            }
        }
        let mut out = Vec::new();
        for id in &computers {
            if let Some(c) = self.computers.get(id) {
                // the whole computer for its node; otherwise the partitions of the chosen
                // instances
                let whole = software_of.contains(id);
                computer_entries(
                    c,
                    |p| whole || p.instance.is_some_and(|i| instances.contains(&i)),
                    e,
                    &mut out,
                )?;
            }
        }
        for ((computer, url), sw) in self.software.iter() {
            if software_of.contains(computer) {
                let k = software_key(computer, url);
                out.push((k.clone(), enc_as(&k, sw, e)?));
            }
        }
        for id in &instances {
            if let Some(inst) = self.instances.get(id) {
                let k = instance_key(*id);
                out.push((k.clone(), enc_as(&k, inst, e)?));
            }
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }

    /// An instance and its tree's root (its views need the root's title).
    fn with_context(&self, id: InstanceId, out: &mut BTreeSet<InstanceId>) {
        if let Some(inst) = self.instances.get(&id) {
            out.insert(id);
            out.insert(inst.root);
        }
    }

    /// Whether a Raft replica id was used before and retired.
    pub fn is_retired_replica(&self, id: u64) -> bool {
        self.retired_replicas.contains_key(&id)
    }

    /// Rebuild a replica's state from every persisted pair (any order). Usage movements
    /// and their indexes stay on disk.
    pub fn from_entries<I, K, V>(pairs: I) -> Result<State, PersistError>
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<[u8]>,
        V: AsRef<[u8]>,
    {
        State::build(pairs, false)
    }

    /// A reader's state from the entries a read returned, usage movements included: what
    /// invoices and movement lists are computed from.
    pub fn from_read<I, K, V>(pairs: I) -> Result<State, PersistError>
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<[u8]>,
        V: AsRef<[u8]>,
    {
        State::build(pairs, true)
    }

    fn build<I, K, V>(pairs: I, with_usage: bool) -> Result<State, PersistError>
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<[u8]>,
        V: AsRef<[u8]>,
    {
        let mut state = State::new();
        // sessions derived from the outcomes in slots
        let mut derived: std::collections::BTreeMap<String, Session> =
            std::collections::BTreeMap::new();
        // by id: a reader may merge two reads that both carry a computer
        let mut headers: std::collections::BTreeMap<String, ComputerHeader> =
            std::collections::BTreeMap::new();
        let mut partitions: std::collections::HashMap<
            String,
            std::collections::HashMap<String, Partition>,
        > = std::collections::HashMap::new();
        for (k, v) in pairs {
            let (k, v) = (k.as_ref(), v.as_ref());
            let bad = |reason| PersistError::BadKey {
                key: k.to_vec(),
                reason,
            };
            let body = k.get(1..).unwrap_or_default();
            match KeyKind::of(k) {
                Some(KeyKind::Computer) => {
                    let header = parse_header(k, v)?;
                    let id = utf8(k, body)?;
                    if header.computer.id != id {
                        return Err(inconsistent(k, "the computer's value names another"));
                    }
                    headers.insert(id, header);
                }
                Some(KeyKind::Partition) => {
                    let (computer, partition) =
                        split_len(body).ok_or(bad("short partition key"))?;
                    let p: Partition = parse(k, v)?;
                    let partition = utf8(k, partition)?;
                    if p.id != partition {
                        return Err(inconsistent(k, "the partition's value names another"));
                    }
                    partitions
                        .entry(utf8(k, computer)?)
                        .or_default()
                        .insert(partition, p);
                }
                Some(KeyKind::Software) => {
                    let (computer, url) = split_len(body).ok_or(bad("short software key"))?;
                    let sw: SoftwareInstallation = parse(k, v)?;
                    state.software.load((utf8(k, computer)?, utf8(k, url)?), sw);
                }
                Some(KeyKind::Instance) => {
                    let id: [u8; 8] = body.try_into().map_err(|_| bad("instance key length"))?;
                    let inst: Instance = parse(k, v)?;
                    let id = InstanceId(u64::from_be_bytes(id));
                    if inst.id != id {
                        return Err(inconsistent(k, "the instance's value names another"));
                    }
                    state.instances.load(id, inst);
                }
                Some(KeyKind::Outcome) => {
                    let (client, slot) = split_len(body).ok_or(bad("short outcome key"))?;
                    let client = utf8(k, client)?;
                    match slot.len() {
                        // a slot: the outcome with its sequence number and time
                        1 => {
                            let r: OutcomeRecord = parse(k, v)?;
                            let seen = derived.entry(client.clone()).or_default();
                            seen.last_seen = seen.last_seen.max(r.at);
                            seen.remembered += 1;
                            state.outcomes.load((client, r.seq), r.outcome);
                        }
                        // the former layout: by sequence number, the session apart
                        8 => {
                            let seq: [u8; 8] =
                                slot.try_into().map_err(|_| bad("outcome key length"))?;
                            let outcome: Outcome = parse(k, v)?;
                            state
                                .outcomes
                                .load((client, u64::from_be_bytes(seq)), outcome);
                        }
                        _ => return Err(bad("outcome key length")),
                    }
                }
                Some(KeyKind::Session) => {
                    let session: Session = parse(k, v)?;
                    state.sessions.load(utf8(k, body)?, session);
                }
                Some(KeyKind::Retired) => {
                    let id: [u8; 8] = body.try_into().map_err(|_| bad("retired key length"))?;
                    let at: Timestamp = parse(k, v)?;
                    state.retired_replicas.load(u64::from_be_bytes(id), at);
                }
                Some(KeyKind::Movement) => {
                    let id: [u8; 8] = body.try_into().map_err(|_| bad("movement key length"))?;
                    let m: Movement = parse(k, v)?;
                    let m = state.share_names(m);
                    state.movements.load(u64::from_be_bytes(id), m);
                }
                Some(KeyKind::Price) => {
                    let (provider, rest) = split_len(body).ok_or(bad("short price key"))?;
                    let (tag, rest) = rest.split_first().ok_or(bad("short price key"))?;
                    let (name, resource) = split_len(rest).ok_or(bad("short price key"))?;
                    let name = utf8(k, name)?;
                    let scope = match tag {
                        b'c' => PriceScope::Computer(name),
                        b'r' => PriceScope::Region(name),
                        _ => return Err(bad("unknown price scope")),
                    };
                    let history: Vec<PriceEntry> = parse(k, v)?;
                    state
                        .prices
                        .load((utf8(k, provider)?, scope, utf8(k, resource)?), history);
                }
                Some(KeyKind::Usage) if with_usage => {
                    let m: Movement = parse(k, v)?;
                    state.load_usage(m);
                }
                Some(KeyKind::Usage | KeyKind::UsageIndex) => {}
                Some(KeyKind::Journal) => {
                    let (computer, rest) = split_len(body).ok_or(bad("short journal key"))?;
                    let record: JournalRecord = parse(k, v)?;
                    state
                        .journals
                        .load((utf8(k, computer)?, utf8(k, rest)?), record);
                }
                Some(KeyKind::Authority) => {
                    let material: crate::identity::CaMaterial = parse(k, v)?;
                    state.authority.load(0, material);
                }
                Some(KeyKind::Certificate) => {
                    let serial: [u8; 16] =
                        body.try_into().map_err(|_| bad("certificate key length"))?;
                    let record: super::records::CertificateRecord = parse(k, v)?;
                    state.certificates.load(u128::from_be_bytes(serial), record);
                }
                Some(KeyKind::Token) => {
                    let record: super::records::TokenRecord = parse(k, v)?;
                    state.tokens.load(utf8(k, body)?, record);
                }
                Some(KeyKind::Admin) => {
                    let since: Timestamp = parse(k, v)?;
                    state.admins.load(utf8(k, body)?, since);
                }
                Some(KeyKind::Password) => {
                    let r: super::records::PasswordRecord = parse(k, v)?;
                    state.passwords.load(utf8(k, body)?, r);
                }
                Some(KeyKind::WebSession) => {
                    let r: super::records::WebSession = parse(k, v)?;
                    state.web_sessions.load(utf8(k, body)?, r);
                }
                Some(KeyKind::IssuedKey) => {
                    let serial: [u8; 16] = body.try_into().map_err(|_| bad("issued key length"))?;
                    let pair: super::records::IssuedPair = parse(k, v)?;
                    state.issued_keys.load(u128::from_be_bytes(serial), pair);
                }
                Some(KeyKind::Meta) => {
                    let meta: Meta = parse(k, v)?;
                    state.next_instance = meta.next_instance;
                    state.next_supply = meta.next_supply;
                    state.clock = meta.clock;
                    state.applied = meta.applied;
                    state.next_movement = meta.next_movement;
                    state.books_closed_until = meta.books_closed_until;
                    state.hosting_synced = meta.hosting_synced;
                }
                None => return Err(bad("unknown key kind")),
            }
        }
        // Computers back together: the partitions present (all of them for a whole
        // state, those a read needed for a partial one), in format order. A header that
        // still carries its partitions inline (the earlier layout) keeps them.
        for (id, header) in headers {
            let mut c = header.computer;
            let key = computer_key(&id);
            let mut listed = std::collections::HashSet::new();
            if !header
                .partition_order
                .iter()
                .all(|pid| listed.insert(pid.as_str()))
            {
                return Err(inconsistent(&key, "the computer lists a partition twice"));
            }
            if let Some(mut present) = partitions.remove(id.as_str()) {
                c.partitions.reserve(present.len());
                for pid in &header.partition_order {
                    if let Some(p) = present.remove(pid.as_str()) {
                        c.partitions.push(p);
                    }
                }
                if let Some(pid) = present.keys().next() {
                    return Err(inconsistent(
                        &partition_key(&id, pid),
                        "a partition its computer does not list",
                    ));
                }
            }
            state.computers.load(id, c);
        }
        // A whole state has no partition without its computer (a read may carry one).
        if !with_usage {
            if let Some((computer, pid)) = partitions
                .iter()
                .find_map(|(c, ps)| ps.keys().next().map(|p| (c, p)))
            {
                return Err(inconsistent(
                    &partition_key(computer, pid),
                    "a partition of no computer",
                ));
            }
        }
        for (client, session) in derived {
            if !state.sessions.contains_key(&client) {
                state.sessions.load(client, session);
            }
        }
        state.rebuild_indexes();
        Ok(state)
    }

    /// Derive the title and tree indexes from the instances.
    pub(crate) fn rebuild_indexes(&mut self) {
        self.roots.clear();
        self.members.clear();
        self.trees.clear();
        for inst in self.instances.values() {
            if inst.is_root() {
                self.roots
                    .insert((inst.owner.clone(), inst.title.clone()), inst.id);
            }
            self.members
                .insert((inst.root, inst.title.clone()), inst.id);
            self.trees.entry(inst.root).or_default().insert(inst.id);
        }
        self.rebuild_ledger_indexes();
    }

    /// The state as one byte string: every entity, length-prefixed, in key order.
    /// Deterministic: equal states give equal bytes.
    pub fn to_snapshot(&self) -> Result<Vec<u8>, PersistError> {
        let mut out = Vec::new();
        for (k, v) in self.entries()? {
            with_len(&mut out, &k);
            with_len(&mut out, &v);
        }
        Ok(out)
    }

    pub fn from_snapshot(bytes: &[u8]) -> Result<State, PersistError> {
        let mut pairs = Vec::new();
        let mut rest = bytes;
        while !rest.is_empty() {
            let at = bytes.len() - rest.len();
            let (k, after) = split_len(rest).ok_or(PersistError::Truncated(at))?;
            let (v, after) = split_len(after).ok_or(PersistError::Truncated(at))?;
            if pairs
                .last()
                .is_some_and(|(last, _): &(&[u8], &[u8])| *last >= k)
            {
                return Err(PersistError::Unordered(at));
            }
            pairs.push((k, v));
            rest = after;
        }
        State::from_entries(pairs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_sort_by_kind_then_id_and_round_trip() {
        assert!(instance_key(InstanceId(2)) < instance_key(InstanceId(10)));
        assert!(outcome_key("a", 2) < outcome_key("a", 10));
        assert_eq!(
            KeyKind::of(&software_key("C", "u")),
            Some(KeyKind::Software)
        );
        assert_eq!(KeyKind::of(b"zz"), None);
        let err = State::from_entries([(b"i12".to_vec(), b"{}".to_vec())]).unwrap_err();
        assert!(err.to_string().contains("instance key length"), "{err}");
        let err = State::from_snapshot(&[0, 0, 0, 5, b'm']).unwrap_err();
        assert!(matches!(err, PersistError::Truncated(0)));
    }
}

/// One persisted entry as a restore from a backup sees it (see [`restore_entry`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestoredEntry {
    pub key: Vec<u8>,
    pub value: Vec<u8>,
    /// The entry records this retired replica id (never to be reused).
    pub retired_replica: Option<u64>,
    /// The entry is the group's authority (now naming the new group).
    pub authority: bool,
}

/// An entry of a backup as the restored group stores it: the authority's record names
/// `group` (a restored group is a new group: the old one's replicas must not join it),
/// everything else as it was. Malformed keys or values are refused.
pub fn restore_entry(
    key: Vec<u8>,
    value: Vec<u8>,
    group: &str,
) -> Result<RestoredEntry, PersistError> {
    match KeyKind::of(&key) {
        Some(KeyKind::Authority) => {
            let mut material: crate::identity::CaMaterial = parse(&key, &value)?;
            material.group = group.to_owned();
            let value = enc(&key, &material)?;
            Ok(RestoredEntry {
                key,
                value,
                retired_replica: None,
                authority: true,
            })
        }
        Some(KeyKind::Retired) => {
            let id: [u8; 8] = key[1..].try_into().map_err(|_| PersistError::BadKey {
                key: key.clone(),
                reason: "retired key length",
            })?;
            Ok(RestoredEntry {
                retired_replica: Some(u64::from_be_bytes(id)),
                key,
                value,
                authority: false,
            })
        }
        Some(_) => Ok(RestoredEntry {
            key,
            value,
            retired_replica: None,
            authority: false,
        }),
        None => Err(PersistError::BadKey {
            key,
            reason: "unknown kind",
        }),
    }
}

/// A pair re-encoded in JSON (for readers of earlier releases).
fn reencode_json(key: Vec<u8>, value: &[u8]) -> Result<Entry, PersistError> {
    fn j<T: Serialize + for<'a> Deserialize<'a>>(
        key: &[u8],
        v: &[u8],
    ) -> Result<Vec<u8>, PersistError> {
        let t: T = parse(key, v)?;
        enc_as(key, &t, Encoding::Json)
    }
    let v = match KeyKind::of(&key) {
        Some(KeyKind::Computer) => {
            let h = parse_header(&key, value)?;
            codec::encode_as(&h, Encoding::Json).map_err(|source| PersistError::Encode {
                key: key.clone(),
                source,
            })?
        }
        Some(KeyKind::Partition) => j::<Partition>(&key, value)?,
        Some(KeyKind::Software) => j::<SoftwareInstallation>(&key, value)?,
        Some(KeyKind::Instance) => j::<Instance>(&key, value)?,
        Some(KeyKind::Retired | KeyKind::Admin) => j::<Timestamp>(&key, value)?,
        Some(KeyKind::Movement | KeyKind::Usage) => j::<Movement>(&key, value)?,
        Some(KeyKind::Price) => j::<Vec<PriceEntry>>(&key, value)?,
        Some(KeyKind::Journal) => j::<JournalRecord>(&key, value)?,
        Some(KeyKind::Certificate) => j::<super::records::CertificateRecord>(&key, value)?,
        Some(KeyKind::Meta) => j::<Meta>(&key, value)?,
        Some(KeyKind::Password) => j::<super::records::PasswordRecord>(&key, value)?,
        Some(KeyKind::WebSession) => j::<super::records::WebSession>(&key, value)?,
        _ => value.to_vec(),
    };
    Ok((key, v))
}
