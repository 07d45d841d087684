//! Accounting: movements between parties, prices, and the period after which nothing
//! changes.
//!
//! Two kinds of movement, both recorded by the state machine itself so every replica
//! holds the same ledger:
//!
//! * **hosting**: derived from transitions the master already records. While a regular
//!   instance sits on a partition with an effective requested state of `started`, one
//!   hosting movement is open for it; it closes (its quantity becomes the hours between
//!   start and stop) when the instance is stopped, destroyed or leaves the partition.
//!   After every command, the instances it touched are compared with the open movements
//!   (`sync_hosting`), so no code path that changes a state can forget to bill.
//! * **usage**: the lines of the journals nodes post with `useComputer`, one movement
//!   per line. A journal transaction is identified by (computer, reference, start date,
//!   stop date): posted again with the same lines it records nothing; with different
//!   lines it is refused, so a movement is never counted twice nor silently replaced.
//!
//! The source of a movement is the provider (the computer's owner), its destination the
//! customer (the owner of the instance tree), as goods flow; money flows back.
//!
//! Prices are set by a provider per computer or per region and resource, and take effect
//! at the time of the command that sets them (never earlier), so an invoice over a past
//! period is a function of what was recorded. `CloseBooks` moves a watermark: no journal
//! may report a period that ends before it, and since hosting movements and prices only
//! ever change at the current time, a closed period's invoices never change.

use super::decimal::{format_date, parse_date, Decimal};
use super::error::DomainError;
use super::ids::{InstanceId, Timestamp};
use super::movements::{
    JournalRecord, Movement, MovementKind, PriceEntry, PriceKey, PriceScope, UsageTransaction,
};
use super::name::Name;
use super::records::{Placement, RequestedState};
use super::state::State;
use std::collections::{BTreeMap, BTreeSet};

/// The resource name of hosting movements.
pub const HOSTING: &str = "hosting";
/// How far a journal's stop date may lie ahead of the master's clock (node clocks drift).
pub const MAX_CLOCK_SKEW_MICROS: u64 = 5 * 60 * 1_000_000;
/// Largest quantity one usage line may report.
pub const MAX_QUANTITY: i64 = 1_000_000_000_000;
/// Largest unit price.
pub const MAX_PRICE: i64 = 1_000_000;
/// Most lines in one journal (the gateway's document size limit comes first).
pub const MAX_USAGE_LINES: usize = 200_000;
/// Longest resource, unit or currency name.
const MAX_LABEL: usize = 255;

/// The fingerprint of a transaction's lines: FNV-1a over 128 bits, hex. Deterministic on
/// every replica and platform.
fn fingerprint(lines: &[(String, String, Decimal)]) -> String {
    const PRIME: u128 = 0x0000000001000000000000000000013B;
    let mut hash: u128 = 0x6c62272e07bb014262b821756295c58d;
    let mut feed = |bytes: &[u8]| {
        for b in bytes {
            hash ^= u128::from(*b);
            hash = hash.wrapping_mul(PRIME);
        }
    };
    for (partition, resource, quantity) in lines {
        feed(partition.as_bytes());
        feed(&[0]);
        feed(resource.as_bytes());
        feed(&[0]);
        feed(&quantity.billionths().to_be_bytes());
        feed(&[1]);
    }
    format!("{hash:032x}")
}

/// The key of a journal transaction: (computer, reference, start and stop as read, in
/// microseconds), so that the same dates written differently are the same transaction.
/// The reference is the computer's id, which holds no control character.
pub fn journal_key(
    computer: &str,
    reference: &str,
    start: Option<Timestamp>,
    stop: Timestamp,
) -> (String, String) {
    let start = start.map(|s| s.micros().to_string()).unwrap_or_default();
    (
        computer.to_string(),
        format!("{reference}\u{1f}{start}\u{1f}{}", stop.micros()),
    )
}

/// A journal date and how far ahead of the master's clock it may be: slapgrid writes
/// its node's local time without an offset (`%Y-%m-%d at %H:%M:%S`), so a date without
/// `Z`/`+00:00` may be up to 14 hours ahead (UTC+14), besides the clock skew.
fn journal_date(text: &str) -> Result<(Timestamp, u64), String> {
    let at = parse_date(text)?;
    let t = text.trim();
    let utc = t.ends_with('Z') || t.ends_with("+00:00");
    let ahead = if utc { 0 } else { 14 * 3_600_000_000 };
    Ok((at, ahead + MAX_CLOCK_SKEW_MICROS))
}

fn check_label(field: &str, value: &str) -> Result<(), DomainError> {
    if value.is_empty() {
        return Err(DomainError::invalid(field, "must not be empty"));
    }
    if value.len() > MAX_LABEL || value.chars().any(char::is_control) {
        return Err(DomainError::invalid(
            field,
            format!("at most {MAX_LABEL} bytes, no control characters"),
        ));
    }
    Ok(())
}

/// Whether `resource` is hosting: `hosting`, or `hosting/<size>` for an instance of a
/// partition size (priced per hour too).
pub fn is_hosting(resource: &str) -> bool {
    resource == HOSTING
        || resource
            .strip_prefix(HOSTING)
            .is_some_and(|r| r.starts_with('/') && r.len() > 1)
}

/// The hosting resource of an instance: `hosting/<size>` when its SLA names a partition
/// size (a provider prices each size it sells), else `hosting`.
pub fn hosting_resource(inst: &super::records::Instance) -> String {
    match inst.sla.get("size") {
        Some(size) => format!("{HOSTING}/{size}"),
        None => HOSTING.to_string(),
    }
}

/// Whether an instance is being billed for hosting: a regular instance on a partition
/// whose effective requested state is `started`.
pub(crate) fn is_billed(inst: &super::records::Instance) -> bool {
    !inst.shared
        && inst.requested_state == RequestedState::Started
        && matches!(inst.placement, Placement::Partition { .. })
}

/// Enters a movement in the derived indexes: the open hosting of its instance, and its
/// customer's movements.
fn index_movement(
    open_hosting: &mut BTreeMap<InstanceId, u64>,
    by_customer: &mut BTreeMap<Option<String>, BTreeSet<u64>>,
    hosting_by_partition: &mut BTreeMap<(String, String), BTreeSet<(Timestamp, u64)>>,
    m: &Movement,
) {
    if let (MovementKind::Hosting, None, Some(instance)) = (m.kind, m.stop, m.instance) {
        open_hosting.insert(instance, m.id);
    }
    if m.kind == MovementKind::Hosting {
        hosting_by_partition
            .entry((m.computer.to_string(), m.partition.to_string()))
            .or_default()
            .insert((m.start, m.id));
    }
    by_customer
        .entry(m.destination.as_deref().map(str::to_string))
        .or_default()
        .insert(m.id);
}

/// The instance on a partition, as movements record it.
#[derive(Default)]
struct Occupant {
    instance: Option<InstanceId>,
    tree: Option<InstanceId>,
    tree_title: Option<String>,
    customer: Option<String>,
    software_release: Option<String>,
}

/// What a validated journal will do.
enum Planned {
    /// Posted before with the same lines.
    Known,
    New {
        key: (String, String),
        reference: String,
        start: Timestamp,
        stop: Timestamp,
        explicit_start: bool,
        lines: Vec<(String, String, Decimal)>,
    },
}

impl State {
    /// `SetPrice`: a provider prices a resource on one of their computers or in a region.
    pub(crate) fn set_price(
        &mut self,
        (provider, scope, resource): PriceKey,
        price: &str,
        currency: &str,
        unit: &str,
        now: Timestamp,
    ) -> Result<(), DomainError> {
        check_label("provider", &provider)?;
        check_label("resource", &resource)?;
        check_label("currency", currency)?;
        check_label("unit", unit)?;
        match &scope {
            PriceScope::Computer(id) => {
                let c = self
                    .computers
                    .get(id)
                    .ok_or_else(|| DomainError::UnknownComputer(id.clone()))?;
                if c.owner != provider {
                    return Err(DomainError::NotOwner {
                        who: provider.to_string(),
                        what: format!("computer '{id}'"),
                    });
                }
            }
            PriceScope::Region(region) => check_label("region", region)?,
        }
        if is_hosting(&resource) && unit != "hour" {
            return Err(DomainError::invalid(
                "unit",
                format!("hosting is priced per hour, not per '{unit}'"),
            ));
        }
        let price = Decimal::parse(price).map_err(|m| DomainError::invalid("price", m))?;
        if price.is_negative() || price > Decimal::from_int(MAX_PRICE) {
            return Err(DomainError::invalid(
                "price",
                format!("must be between 0 and {MAX_PRICE}"),
            ));
        }
        let entry = PriceEntry {
            from: now,
            price,
            currency: currency.to_string(),
            unit: unit.to_string(),
        };
        let history = self
            .prices
            .get_or_insert_with((provider, scope, resource), Vec::new);
        // two prices set at the same instant: the later command wins
        if history.last().is_some_and(|e| e.from == now) {
            history.pop();
        }
        history.push(entry);
        Ok(())
    }

    /// `CloseBooks`: nothing reported before `until` may change any more.
    pub(crate) fn close_books(
        &mut self,
        until: Timestamp,
        now: Timestamp,
    ) -> Result<(), DomainError> {
        if until > now {
            return Err(DomainError::invalid(
                "until",
                format!(
                    "{} is in the future (master clock {})",
                    format_date(until),
                    format_date(now)
                ),
            ));
        }
        if until < self.books_closed_until {
            return Err(DomainError::PeriodClosed {
                until: format_date(self.books_closed_until),
            });
        }
        self.books_closed_until = until;
        Ok(())
    }

    /// `RecordUsage`: a computer's journal. Validates every transaction, then records the
    /// new ones; a transaction posted before with the same lines records nothing.
    /// `reporter`, when given, must own the computer (callers identified as a person).
    pub(crate) fn record_usage(
        &mut self,
        computer: &str,
        reporter: Option<&str>,
        transactions: &[UsageTransaction],
        now: Timestamp,
    ) -> Result<(usize, usize), DomainError> {
        let refuse = |reason: String| DomainError::UsageRefused {
            computer: computer.to_string(),
            reason,
        };
        let c = self
            .computers
            .get(computer)
            .ok_or_else(|| DomainError::UnknownComputer(computer.to_string()))?;
        if let Some(who) = reporter.filter(|who| *who != c.owner) {
            return Err(DomainError::NotOwner {
                who: who.to_string(),
                what: format!("computer '{computer}'"),
            });
        }
        if transactions.is_empty() {
            return Err(refuse("the journal has no transaction".into()));
        }
        let lines: usize = transactions.iter().map(|t| t.lines.len()).sum();
        if lines > MAX_USAGE_LINES {
            return Err(refuse(format!(
                "{lines} lines, over the limit of {MAX_USAGE_LINES}"
            )));
        }
        let mut plans = Vec::with_capacity(transactions.len());
        let mut keys = std::collections::BTreeSet::new();
        // periods of this journal's new transactions: (start, stop, explicit start)
        let mut planned: Vec<(Timestamp, Timestamp, bool)> = Vec::new();
        for t in transactions {
            if t.reference != computer {
                return Err(DomainError::Forbidden(format!(
                    "computer '{computer}' posted a journal for '{}'",
                    t.reference
                )));
            }
            let (stop, ahead) =
                journal_date(&t.stop_date).map_err(|m| refuse(format!("stop_date: {m}")))?;
            let start = match t.start_date.trim() {
                "" => None,
                s => Some(
                    journal_date(s)
                        .map_err(|m| refuse(format!("start_date: {m}")))?
                        .0,
                ),
            };
            let key = journal_key(computer, &t.reference, start, stop);
            if !keys.insert(key.clone()) {
                return Err(refuse(format!(
                    "transaction for period '{}'..'{}' appears twice",
                    t.start_date, t.stop_date
                )));
            }
            if start.is_some_and(|s| s > stop) {
                return Err(refuse(format!(
                    "period starts ({}) after it stops ({})",
                    t.start_date, t.stop_date
                )));
            }
            if stop.micros() > now.micros().saturating_add(ahead) {
                return Err(refuse(format!(
                    "period ends in the future ({}; master clock {})",
                    format_date(stop),
                    format_date(now)
                )));
            }
            let mut parsed = Vec::with_capacity(t.lines.len());
            for (n, line) in t.lines.iter().enumerate() {
                let at = |m: String| refuse(format!("movement {}: {m}", n + 1));
                let partition = line
                    .partition
                    .as_deref()
                    .filter(|p| !p.is_empty())
                    .ok_or_else(|| at("names no partition (reference)".into()))?;
                if c.partition(partition).is_none() {
                    return Err(DomainError::Forbidden(format!(
                        "computer '{computer}' reported usage for '{partition}', which is not one of its partitions"
                    )));
                }
                check_label("resource", &line.resource).map_err(|e| at(e.to_string()))?;
                let quantity =
                    Decimal::parse(&line.quantity).map_err(|m| at(format!("quantity: {m}")))?;
                if quantity.is_negative() {
                    return Err(at(format!("negative quantity {}", line.quantity.trim())));
                }
                if quantity > Decimal::from_int(MAX_QUANTITY) {
                    return Err(at(format!("quantity over {MAX_QUANTITY}")));
                }
                parsed.push((partition.to_string(), line.resource.clone(), quantity));
            }
            if let Some(record) = self.journals.get(&key) {
                if record.fingerprint != fingerprint(&parsed) {
                    return Err(DomainError::JournalConflict {
                        computer: computer.to_string(),
                        period: format!("'{}'..'{}'", t.start_date, t.stop_date),
                    });
                }
                plans.push(Planned::Known);
                continue;
            }
            if stop < self.books_closed_until {
                return Err(DomainError::PeriodClosed {
                    until: format_date(self.books_closed_until),
                });
            }
            let start = match start {
                Some(start) => {
                    // an explicit period may not overlap another explicit one
                    let overlaps = |(s, e): (Timestamp, Timestamp)| s < stop && start < e;
                    let recorded = self
                        .journals_of(computer)
                        .filter(|(_, r)| r.explicit_start)
                        .map(|(_, r)| (r.start, r.stop));
                    let new = planned.iter().filter(|p| p.2).map(|p| (p.0, p.1));
                    if let Some((s, e)) = recorded.chain(new).find(|p| overlaps(*p)) {
                        return Err(refuse(format!(
                            "period {}..{} overlaps the recorded period {}..{}",
                            format_date(start),
                            format_date(stop),
                            format_date(s),
                            format_date(e)
                        )));
                    }
                    start
                }
                None => {
                    let before = |s: &Timestamp| *s < stop;
                    let recorded = self.journals_of(computer).map(|(_, r)| r.stop);
                    let new = planned.iter().map(|p| p.1);
                    recorded.chain(new).filter(before).max().unwrap_or(stop)
                }
            };
            planned.push((start, stop, t.start_date.trim() != ""));
            plans.push(Planned::New {
                key,
                reference: t.reference.clone(),
                start,
                stop,
                explicit_start: !t.start_date.trim().is_empty(),
                lines: parsed,
            });
        }
        let (mut recorded, mut known) = (0, 0);
        let (owner, region) = (c.owner.clone(), c.region.clone());
        let provider = self.names.0.get(&owner);
        let region = region.map(|r| self.names.0.get(&r));
        let computer_name = self.names.0.get(computer);
        for plan in plans {
            let Planned::New {
                key,
                reference,
                start,
                stop,
                explicit_start,
                lines,
            } = plan
            else {
                known += 1;
                continue;
            };
            let label = format!("{reference} {}/{}", format_date(start), format_date(stop));
            // shared by this journal's movements only: not interned (it would stay)
            let journal = Name::from(label.as_str());
            let first_movement = self.next_movement;
            let print = fingerprint(&lines);
            let count = lines.len() as u64;
            for (partition, resource, quantity) in lines {
                let on = self.tenant_at(computer, &partition, stop);
                let id = self.next_movement;
                self.next_movement += 1;
                let names = &mut self.names.0;
                // usage is written to storage by `take_changes` and not kept in memory
                self.usage_outbox.0.push(Movement {
                    id,
                    kind: MovementKind::Usage,
                    resource: names.get(&resource),
                    quantity: Some(quantity),
                    start,
                    stop: Some(stop),
                    source: provider.clone(),
                    destination: on.customer.map(|c| names.get(&c)),
                    computer: computer_name.clone(),
                    partition: names.get(&partition),
                    region: region.clone(),
                    instance: on.instance,
                    tree: on.tree,
                    tree_title: on.tree_title.map(|t| names.get(&t)),
                    software_release: on.software_release.map(|u| names.get(&u)),
                    journal: Some(journal.clone()),
                    recorded_at: now,
                });
            }
            self.journals.insert(
                key,
                JournalRecord {
                    start,
                    stop,
                    first_movement,
                    movements: count,
                    fingerprint: print,
                    recorded_at: now,
                    explicit_start,
                },
            );
            recorded += 1;
        }
        Ok((recorded, known))
    }

    /// Who used a partition at `at`: the instance that last started there (its hosting
    /// movement) at or before `at`, so a journal arriving late is billed to the instance
    /// of its period even if the partition was freed or reused since; else whatever the
    /// partition hosts now.
    fn tenant_at(&self, computer: &str, partition: &str, at: Timestamp) -> Occupant {
        let started = self
            .hosting_by_partition
            .get(&(computer.to_string(), partition.to_string()))
            .and_then(|starts| starts.range(..=(at, u64::MAX)).next_back())
            .and_then(|(_, id)| self.movements.get(id));
        match started {
            Some(m) => Occupant {
                instance: m.instance,
                tree: m.tree,
                tree_title: m.tree_title.as_deref().map(str::to_string),
                customer: m.destination.as_deref().map(str::to_string),
                software_release: m.software_release.as_deref().map(str::to_string),
            },
            None => self.occupant(computer, partition),
        }
    }

    /// What a partition hosts now, for the movements recorded on it.
    fn occupant(&self, computer: &str, partition: &str) -> Occupant {
        self.computers
            .get(computer)
            .and_then(|c| c.partition(partition))
            .and_then(|p| p.instance)
            .and_then(|id| self.instances.get(&id))
            .map(|inst| self.occupant_of(inst))
            .unwrap_or_default()
    }

    fn occupant_of(&self, inst: &super::records::Instance) -> Occupant {
        Occupant {
            instance: Some(inst.id),
            tree: Some(inst.root),
            tree_title: self.instances.get(&inst.root).map(|r| r.title.clone()),
            customer: Some(inst.owner.clone()),
            software_release: Some(inst.software_release.clone()),
        }
    }

    fn insert_movement(&mut self, m: Movement) {
        index_movement(
            &mut self.open_hosting,
            &mut self.by_customer,
            &mut self.hosting_by_partition,
            &m,
        );
        self.movements.insert(m.id, m);
    }

    /// Opens and closes hosting movements for the instances the last command touched.
    pub(crate) fn sync_hosting(&mut self, now: Timestamp) {
        for id in self.instances.take_touched() {
            let billed = self.instances.get(&id).is_some_and(is_billed);
            let open = self.open_hosting.get(&id).copied();
            // Billed as another resource now (its partition size changed): the open
            // movement closes and one of the new size opens.
            let resized = open.is_some_and(|movement| {
                let now_billed = self.instances.get(&id).map(hosting_resource);
                let billed_as = self
                    .movements
                    .get(&movement)
                    .map(|m| m.resource.to_string());
                billed && now_billed.is_some() && now_billed != billed_as
            });
            match (billed && !resized, open) {
                (true, None) => self.open_hosting_of(id, now),
                (false, Some(movement)) => {
                    self.open_hosting.remove(&id);
                    if let Some(m) = self.movements.get_mut(&movement) {
                        m.stop = Some(now);
                        m.quantity = Some(Decimal::hours_of_micros(
                            now.micros().saturating_sub(m.start.micros()),
                        ));
                    }
                    if resized {
                        self.open_hosting_of(id, now);
                    }
                }
                _ => {}
            }
        }
    }

    /// A hosting movement for a billed instance, starting now.
    fn open_hosting_of(&mut self, id: InstanceId, now: Timestamp) {
        let Some(inst) = self.instances.get(&id) else {
            return;
        };
        let Placement::Partition {
            computer,
            partition,
        } = &inst.placement
        else {
            return;
        };
        let Some(c) = self.computers.get(computer) else {
            return;
        };
        let on = self.occupant_of(inst);
        let resource = hosting_resource(inst);
        let (computer, partition) = (computer.clone(), partition.clone());
        let (source, region) = (c.owner.clone(), c.region.clone());
        let names = &mut self.names.0;
        let movement = Movement {
            id: self.next_movement,
            kind: MovementKind::Hosting,
            resource: names.get(&resource),
            quantity: None,
            start: now,
            stop: None,
            source: names.get(&source),
            destination: on.customer.map(|c| names.get(&c)),
            computer: names.get(&computer),
            partition: names.get(&partition),
            region: region.map(|r| names.get(&r)),
            instance: on.instance,
            tree: on.tree,
            tree_title: on.tree_title.map(|t| names.get(&t)),
            software_release: on.software_release.map(|u| names.get(&u)),
            journal: None,
            recorded_at: now,
        };
        self.next_movement += 1;
        self.insert_movement(movement);
    }

    /// Marks every instance for `sync_hosting`: a state written before the ledger
    /// existed gets its started instances billed from the first command applied after.
    pub(crate) fn sync_all_hosting(&mut self) {
        let ids: Vec<InstanceId> = self.instances.keys().copied().collect();
        for id in ids {
            self.instances.touch(&id);
        }
        self.hosting_synced = true;
    }

    /// The price histories that may price a movement, in order of precedence: its
    /// provider's for its computer, then for its region.
    fn price_histories<'s>(
        &'s self,
        m: &Movement,
    ) -> impl Iterator<Item = &'s Vec<PriceEntry>> + use<'s> {
        let (source, resource) = (m.source.to_string(), m.resource.to_string());
        let computer = Some(PriceScope::Computer(m.computer.to_string()));
        let region = m.region.as_ref().map(|r| PriceScope::Region(r.to_string()));
        [computer, region]
            .into_iter()
            .flatten()
            .filter_map(move |scope| self.prices.get(&(source.clone(), scope, resource.clone())))
    }

    /// The price in force for a movement's resource at `at`: the computer's own, else the
    /// region's, of the movement's provider.
    pub fn price_at(&self, m: &Movement, at: Timestamp) -> Option<&PriceEntry> {
        self.price_histories(m)
            .find_map(|h| h.iter().rev().find(|e| e.from <= at))
    }

    /// The hosting price per hour in force now on a computer (its own, else its
    /// region's, of its owner), of partitions of `size` when given: what an SLA's
    /// `max_price` is held against.
    pub fn hosting_price(
        &self,
        c: &super::records::Computer,
        size: Option<&str>,
    ) -> Option<Decimal> {
        let resource = match size {
            Some(size) => format!("{HOSTING}/{size}"),
            None => HOSTING.to_string(),
        };
        let now = |scope: PriceScope| {
            self.prices
                .get(&(c.owner.clone(), scope, resource.clone()))
                .and_then(|h| h.last())
                .map(|e| e.price)
        };
        now(PriceScope::Computer(c.id.clone())).or_else(|| {
            c.region
                .as_ref()
                .and_then(|r| now(PriceScope::Region(r.clone())))
        })
    }

    /// The instants in `(from, to)` at which a price for this movement changes.
    pub(crate) fn price_changes(
        &self,
        m: &Movement,
        from: Timestamp,
        to: Timestamp,
    ) -> Vec<Timestamp> {
        let mut out: Vec<Timestamp> = self
            .price_histories(m)
            .flatten()
            .map(|e| e.from)
            .filter(|t| *t > from && *t < to)
            .collect();
        out.sort();
        out.dedup();
        out
    }

    /// Every price, by (provider, scope, resource), with its history.
    pub fn prices(&self) -> impl Iterator<Item = (&PriceKey, &Vec<PriceEntry>)> {
        self.prices.iter()
    }

    pub fn movement(&self, id: u64) -> Option<&Movement> {
        self.movements.get(&id)
    }

    /// A usage movement read from storage into a reader's state.
    /// (Indexed with the rest by `rebuild_indexes`.)
    pub(crate) fn load_usage(&mut self, m: Movement) {
        let m = self.share_names(m);
        self.movements.load(m.id, m);
    }

    /// For a state with no storage behind it (proxy mode, `slapos demo`): keeps the usage
    /// recorded since the last call in memory, where its reads find it, instead of
    /// leaving it for `take_changes` to write.
    pub fn keep_usage_in_memory(&mut self) {
        let outbox = std::mem::take(&mut self.usage_outbox.0);
        if outbox.is_empty() {
            return;
        }
        for m in outbox {
            self.load_usage(m);
        }
        self.rebuild_ledger_indexes();
    }

    /// The movements billed to a customer (None: to no one), in id order.
    pub fn movements_of(&self, customer: Option<&str>) -> impl Iterator<Item = &Movement> {
        self.by_customer
            .get(&customer.map(str::to_string))
            .into_iter()
            .flatten()
            .filter_map(|id| self.movements.get(id))
    }

    /// Every movement, in id order.
    pub fn all_movements(&self) -> impl Iterator<Item = &Movement> {
        self.movements.values()
    }

    /// The end of the last closed period.
    pub fn books_closed_until(&self) -> Timestamp {
        self.books_closed_until
    }

    /// The journal transactions recorded for a computer.
    pub fn journals_of<'a>(
        &'a self,
        computer: &'a str,
    ) -> impl Iterator<Item = (&'a str, &'a JournalRecord)> + 'a {
        self.journals
            .range((computer.to_string(), String::new())..)
            .take_while(move |((c, _), _)| c == computer)
            .map(|((_, k), r)| (k.as_str(), r))
    }

    /// The master's clock: the latest command time applied.
    pub fn clock(&self) -> Timestamp {
        self.clock
    }

    /// Rebuild the open-hosting and per-customer indexes from the movements.
    pub(crate) fn rebuild_ledger_indexes(&mut self) {
        self.open_hosting.clear();
        self.by_customer.clear();
        self.hosting_by_partition.clear();
        for m in self.movements.values() {
            index_movement(
                &mut self.open_hosting,
                &mut self.by_customer,
                &mut self.hosting_by_partition,
                m,
            );
        }
    }

    /// A movement read from storage, its names shared with the others'.
    pub(crate) fn share_names(&mut self, mut m: Movement) -> Movement {
        let names = &mut self.names.0;
        m.resource = names.share(m.resource);
        m.source = names.share(m.source);
        m.destination = m.destination.map(|n| names.share(n));
        m.computer = names.share(m.computer);
        m.partition = names.share(m.partition);
        m.region = m.region.map(|n| names.share(n));
        m.tree_title = m.tree_title.map(|n| names.share(n));
        m.software_release = m.software_release.map(|n| names.share(n));
        m.journal = m.journal.map(|n| names.share(n));
        m
    }
}
