//! Accounting over JSON-RPC (methods of our own, named in slapos.core's style): usage
//! journals (`compute_node_usage`, slapos.core's own name), registering a computer,
//! prices, closing periods, invoices and movement lists, for the `slapos usage` and
//! `slapos invoice` commands and the portal to come.
//!
//! Who may do what, until certificates identify callers (the gateway's `person`):
//! a person reads their own invoices and movements; a provider (a computer's owner) also
//! reads the movements of their computers (`provider`); an admin reads anyone's and
//! closes periods. Prices are set by the person for their own computers (the master
//! checks ownership) or for their computers in a region.

use serde_json::{json, Map, Value};
use slapos_domain::{format_date, parse_date, Decimal, Invoice, Movement, PriceScope};
use slapos_domain::{Op, State, Timestamp};

use super::schema::{opt, req, Field, Kind};
use super::{Call, JsonError, Read};
use crate::slap::SlapContext;

pub const COMPUTE_NODE_USAGE: &[Field] =
    &[req("computer_guid", Kind::Str), req("tioxml", Kind::Str)];
pub const COMPUTE_NODE: &[Field] = &[
    req("computer_guid", Kind::Str),
    opt("title", Kind::Str),
    opt("region", Kind::Str),
    opt("network", Kind::Str),
    opt("attributes", Kind::StringMap(&[])),
];
pub const COMPUTE_NODE_POLICY: &[Field] = &[
    req("computer_guid", Kind::Str),
    opt(
        "allocation_scope",
        Kind::Enum(&["open", "personal", "friends", "closed"]),
    ),
    opt("friends", Kind::Str),
    opt("legacy_node_agent", Kind::Bool),
];
pub const PRICE: &[Field] = &[
    req("resource", Kind::Str),
    req("price", Kind::Str),
    req("currency", Kind::Str),
    opt("unit", Kind::Str),
    opt("computer_guid", Kind::Str),
    opt("region", Kind::Str),
];
pub const PERIOD_CLOSE: &[Field] = &[req("until", Kind::Str)];
pub const INVOICE: &[Field] = &[
    req("from", Kind::Str),
    req("to", Kind::Str),
    opt("customer", Kind::Str),
];
pub const MOVEMENT_LIST: &[Field] = &[
    req("from", Kind::Str),
    req("to", Kind::Str),
    opt("customer", Kind::Str),
    opt("provider", Kind::Str),
    opt("computer_guid", Kind::Str),
];

/// A read of the ledger: the movements of `[from, to)` it needs, then an answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedgerRead {
    pub what: LedgerWhat,
    pub from: Timestamp,
    pub to: Timestamp,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LedgerWhat {
    Invoice {
        customer: String,
    },
    Movements {
        customer: Option<String>,
        provider: Option<String>,
        computer: Option<String>,
    },
}

impl LedgerRead {
    /// The (customer, provider) the master's `Query::Ledger` filters on.
    pub fn filter(&self) -> (Option<String>, Option<String>) {
        match &self.what {
            LedgerWhat::Invoice { customer } => (Some(customer.clone()), None),
            LedgerWhat::Movements {
                customer, provider, ..
            } => (customer.clone(), provider.clone()),
        }
    }

    pub fn value(&self, state: &State) -> Result<Value, JsonError> {
        match &self.what {
            LedgerWhat::Invoice { customer } => state
                .invoice(customer, self.from, self.to, wall_clock())
                .map(|i| invoice_json(&i))
                .map_err(|e| JsonError::new(400, e.to_string())),
            LedgerWhat::Movements {
                customer,
                provider,
                computer,
            } => {
                let movements = state.usage(
                    customer.as_deref(),
                    provider.as_deref(),
                    computer.as_deref(),
                    self.from,
                    self.to,
                );
                Ok(json!({
                    "from": format_date(self.from),
                    "to": format_date(self.to),
                    "computed_at": format_date(state.clock()),
                    "closed_until": closed(state.books_closed_until()),
                    "result_list": movements.iter().map(|m| movement_json(m)).collect::<Vec<_>>(),
                }))
            }
        }
    }
}

/// The gateway's clock: open hosting is counted until now, not until the last command.
fn wall_clock() -> Timestamp {
    let micros = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64);
    Timestamp::from_micros(micros)
}

fn closed(until: Timestamp) -> Value {
    if until == Timestamp::default() {
        Value::Null
    } else {
        Value::String(format_date(until))
    }
}

fn decimal(d: Option<Decimal>) -> Value {
    d.map_or(Value::Null, |d| Value::String(d.to_string()))
}

pub fn movement_json(m: &Movement) -> Value {
    json!({
        "id": m.id,
        "kind": m.kind.as_str(),
        "resource": m.resource,
        "quantity": decimal(m.quantity),
        "start": format_date(m.start),
        "stop": m.stop.map(format_date),
        "source": m.source,
        "destination": m.destination,
        "computer_guid": m.computer,
        "compute_partition_id": m.partition,
        "region": m.region,
        "instance_guid": m.instance.map(|i| i.to_string()),
        "instance_tree_guid": m.tree.map(|i| i.to_string()),
        "instance_tree_title": m.tree_title,
        "software_release_uri": m.software_release,
        "journal": m.journal,
    })
}

pub fn invoice_json(invoice: &Invoice) -> Value {
    let lines: Vec<Value> = invoice
        .lines
        .iter()
        .map(|l| {
            json!({
                "instance_tree_guid": l.tree.map(|i| i.to_string()),
                "instance_tree_title": l.tree_title,
                "resource": l.resource,
                "unit": l.unit,
                "currency": l.currency,
                "quantity": l.quantity.to_string(),
                "amount": l.amount.to_string(),
                "items": l.items.iter().map(|i| json!({
                    "movement": i.movement,
                    "kind": i.kind.as_str(),
                    "computer_guid": i.computer,
                    "compute_partition_id": i.partition,
                    "instance_guid": i.instance.map(|x| x.to_string()),
                    "start": format_date(i.start),
                    "stop": format_date(i.stop),
                    "quantity": i.quantity.to_string(),
                    "unit_price": decimal(i.unit_price),
                    "amount": i.amount.to_string(),
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    let totals: Map<String, Value> = invoice
        .totals
        .iter()
        .map(|(c, t)| (c.clone(), Value::String(t.to_string())))
        .collect();
    json!({
        "customer": invoice.customer,
        "from": format_date(invoice.from),
        "to": format_date(invoice.to),
        "closed": invoice.closed,
        "computed_at": format_date(invoice.computed_at),
        "line_list": lines,
        "total": totals,
    })
}

fn forbidden(message: impl Into<String>) -> JsonError {
    JsonError::new(403, message)
}

fn date(map: &Map<String, Value>, key: &str) -> Result<Timestamp, JsonError> {
    let text = map.get(key).and_then(Value::as_str).unwrap_or("");
    parse_date(text).map_err(|e| JsonError::new(400, format!("{key}: {e}")))
}

fn text(map: &Map<String, Value>, key: &str) -> Option<String> {
    map.get(key).and_then(Value::as_str).map(str::to_string)
}

fn is_admin(ctx: &SlapContext) -> bool {
    ctx.admin
}

/// `compute_node_usage`: the journal of `useComputer`, as JSON, posted by the
/// computer's owner (or an admin).
pub fn usage(ctx: &SlapContext, map: &Map<String, Value>) -> Result<Call, JsonError> {
    let computer = text(map, "computer_guid").unwrap_or_default();
    let xml = text(map, "tioxml").unwrap_or_default();
    let mut op = crate::slap::forms::usage_op(computer, &xml, &ctx.limits.document)
        .map_err(|e| JsonError::new(400, format!("tioxml: {e}")))?;
    // a person posting a computer's journal must own it (nodes post with useComputer)
    if let Op::RecordUsage { reporter, .. } = &mut op {
        *reporter = (!is_admin(ctx)).then(|| ctx.person.clone());
    }
    Ok(Call::Write {
        op,
        title: "Usage recorded",
    })
}

/// `compute_node`: register a computer owned by the caller.
pub fn register(ctx: &SlapContext, map: &Map<String, Value>) -> Result<Call, JsonError> {
    let computer = text(map, "computer_guid").unwrap_or_default();
    let attributes = map
        .get("attributes")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                .collect()
        })
        .unwrap_or_default();
    Ok(Call::Write {
        op: Op::RegisterComputer {
            title: text(map, "title").unwrap_or_else(|| computer.clone()),
            computer,
            owner: ctx.person.clone(),
            region: text(map, "region"),
            network: text(map, "network"),
            attributes,
        },
        title: "Registered",
    })
}

/// `compute_node_policy`: the owner (or an admin) sets who may have instances allocated
/// on the computer (`allocation_scope`; `friends`: ids separated by spaces or commas),
/// and whether its node is SlapOS's Python agent (`legacy_node_agent`).
pub fn policy(ctx: &SlapContext, map: &Map<String, Value>) -> Result<Call, JsonError> {
    use slapos_domain::AllocationScope;
    let friends: std::collections::BTreeSet<String> = text(map, "friends")
        .unwrap_or_default()
        .split([' ', ','])
        .filter(|f| !f.is_empty())
        .map(str::to_owned)
        .collect();
    let scope = match text(map, "allocation_scope").as_deref() {
        None if !friends.is_empty() => {
            return Err(JsonError::new(
                400,
                "friends go with allocation_scope 'friends'",
            ))
        }
        None => None,
        Some("open") => Some(AllocationScope::Open),
        Some("personal") => Some(AllocationScope::Personal),
        Some("closed") => Some(AllocationScope::Closed),
        Some("friends") if friends.is_empty() => {
            return Err(JsonError::new(
                400,
                "allocation_scope 'friends' needs friends",
            ))
        }
        Some("friends") => Some(AllocationScope::Friends(friends)),
        Some(other) => {
            return Err(JsonError::new(
                400,
                format!(
                    "allocation_scope: '{other}' is not one of open, personal, friends, closed"
                ),
            ))
        }
    };
    Ok(Call::Write {
        op: Op::SetComputerPolicy {
            computer: text(map, "computer_guid").unwrap_or_default(),
            by: (!is_admin(ctx)).then(|| ctx.person.clone()),
            allocation_scope: scope,
            legacy_partition_keys: map.get("legacy_node_agent").and_then(Value::as_bool),
        },
        title: "Policy set",
    })
}

/// `price`: the caller prices a resource on one computer or in a region.
pub fn price(ctx: &SlapContext, map: &Map<String, Value>) -> Result<Call, JsonError> {
    let scope = match (text(map, "computer_guid"), text(map, "region")) {
        (Some(c), None) => PriceScope::Computer(c),
        (None, Some(r)) => PriceScope::Region(r),
        _ => return Err(JsonError::new(400, "give either computer_guid or region")),
    };
    let resource = text(map, "resource").unwrap_or_default();
    let unit = text(map, "unit").unwrap_or_else(|| {
        if resource == slapos_domain::HOSTING {
            "hour".to_string()
        } else {
            "unit".to_string()
        }
    });
    Ok(Call::Write {
        op: Op::SetPrice {
            provider: ctx.person.clone(),
            scope,
            resource,
            price: text(map, "price").unwrap_or_default(),
            currency: text(map, "currency").unwrap_or_default(),
            unit,
        },
        title: "Price set",
    })
}

/// `accounting_period_close`: admins only.
pub fn close(ctx: &SlapContext, map: &Map<String, Value>) -> Result<Call, JsonError> {
    if !is_admin(ctx) {
        return Err(forbidden(format!("{} may not close periods", ctx.person)));
    }
    Ok(Call::Write {
        op: Op::CloseBooks {
            until: date(map, "until")?,
        },
        title: "Closed",
    })
}

fn period(map: &Map<String, Value>) -> Result<(Timestamp, Timestamp), JsonError> {
    let (from, to) = (date(map, "from")?, date(map, "to")?);
    if from >= to {
        return Err(JsonError::new(400, "the period must end after it starts"));
    }
    Ok((from, to))
}

/// `invoice`: the caller's own, or anyone's for an admin.
pub fn invoice(ctx: &SlapContext, map: &Map<String, Value>) -> Result<Call, JsonError> {
    let (from, to) = period(map)?;
    let customer = text(map, "customer").unwrap_or_else(|| ctx.person.clone());
    if customer != ctx.person && !is_admin(ctx) {
        return Err(forbidden(format!(
            "{} may not read the invoices of {customer}",
            ctx.person
        )));
    }
    Ok(Call::Read(Read::Ledger(LedgerRead {
        what: LedgerWhat::Invoice { customer },
        from,
        to,
    })))
}

/// `movement_list`: the caller's consumption, or (`provider`) what their computers
/// provided; an admin may name anyone.
pub fn movements(ctx: &SlapContext, map: &Map<String, Value>) -> Result<Call, JsonError> {
    let (from, to) = period(map)?;
    let provider = text(map, "provider");
    let customer = match (&provider, text(map, "customer")) {
        (Some(_), c) => c,
        (None, c) => Some(c.unwrap_or_else(|| ctx.person.clone())),
    };
    let mine = |who: &Option<String>| who.as_ref().is_none_or(|w| *w == ctx.person);
    let allowed = if provider.is_some() {
        provider.as_deref() == Some(ctx.person.as_str())
    } else {
        mine(&customer)
    };
    if !allowed && !is_admin(ctx) {
        return Err(forbidden(format!(
            "{} may only list their own movements or those of their computers",
            ctx.person
        )));
    }
    Ok(Call::Read(Read::Ledger(LedgerRead {
        what: LedgerWhat::Movements {
            customer,
            provider,
            computer: text(map, "computer_guid"),
        },
        from,
        to,
    })))
}
