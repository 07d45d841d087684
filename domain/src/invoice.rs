//! Invoices: a customer's movements over a period, priced.
//!
//! A pure function of the ledger (movements, price histories, the closed watermark and
//! the clock), so it can be computed on the leader or on a reader's partial state built
//! from a `Query::Ledger` answer. Hosting counts the hours of each movement that fall in
//! the period (an open movement runs until the master's clock), split where its price
//! changed; usage counts in the period its journal stops in, at the price in force then.
//! Each item's amount is rounded at the ninth decimal; lines and totals are exact sums of
//! items.

use super::decimal::Decimal;
use super::error::DomainError;
use super::ids::{InstanceId, Timestamp};
use super::movements::{Movement, MovementKind, PriceEntry};
use super::state::State;
use serde::Serialize;
use std::collections::BTreeMap;

/// One priced piece of a movement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InvoiceItem {
    pub movement: u64,
    pub kind: MovementKind,
    pub computer: String,
    pub partition: String,
    pub instance: Option<InstanceId>,
    /// The part of the movement this item counts.
    pub start: Timestamp,
    pub stop: Timestamp,
    pub quantity: Decimal,
    /// None when no price was set for it: counted, not charged.
    pub unit_price: Option<Decimal>,
    pub amount: Decimal,
}

/// Everything one instance tree consumed of one resource, in one currency.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InvoiceLine {
    pub tree: Option<InstanceId>,
    pub tree_title: Option<String>,
    pub resource: String,
    pub unit: String,
    /// Empty when unpriced.
    pub currency: String,
    pub quantity: Decimal,
    pub amount: Decimal,
    pub items: Vec<InvoiceItem>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Invoice {
    pub customer: String,
    pub from: Timestamp,
    pub to: Timestamp,
    /// The period lies before the closed watermark: this invoice is final.
    pub closed: bool,
    /// The master clock the invoice was computed at (open hosting runs until then).
    pub computed_at: Timestamp,
    pub lines: Vec<InvoiceLine>,
    /// Per currency.
    pub totals: BTreeMap<String, Decimal>,
}

fn overflow() -> DomainError {
    DomainError::invalid("invoice", "amount out of range")
}

impl State {
    /// Whether a movement counts in `[from, to)`: hosting when it overlaps (an open one
    /// runs on, whatever the master's clock says), usage when it stops inside.
    pub fn movement_in(m: &Movement, from: Timestamp, to: Timestamp) -> bool {
        match m.kind {
            MovementKind::Hosting => m.start < to && m.stop.is_none_or(|s| s > from),
            MovementKind::Usage => m.stop.is_some_and(|s| s >= from && s < to),
        }
    }

    /// The invoice of `customer` for `[from, to)`, with open hosting counted until `now`
    /// (the reader's clock; the master's when that is later). A closed period does not
    /// depend on `now`: it ends before the master's clock.
    pub fn invoice(
        &self,
        customer: &str,
        from: Timestamp,
        to: Timestamp,
        now: Timestamp,
    ) -> Result<Invoice, DomainError> {
        if from >= to {
            return Err(DomainError::invalid("period", "must end after it starts"));
        }
        let clock = self.clock.max(now);
        let mut lines: BTreeMap<(Option<InstanceId>, String, String, String), InvoiceLine> =
            BTreeMap::new();
        for m in self.movements_of(Some(customer)) {
            if !State::movement_in(m, from, to) {
                continue;
            }
            for (item, price) in self.items(m, from, to, clock)? {
                let currency = price.map(|p| p.currency.clone()).unwrap_or_default();
                let unit = price
                    .map(|p| p.unit.clone())
                    .unwrap_or_else(|| match m.kind {
                        MovementKind::Hosting => "hour".to_string(),
                        MovementKind::Usage => String::new(),
                    });
                let line = lines
                    .entry((
                        m.tree,
                        m.resource.to_string(),
                        unit.clone(),
                        currency.clone(),
                    ))
                    .or_insert_with(|| InvoiceLine {
                        tree: m.tree,
                        tree_title: m.tree_title.as_deref().map(str::to_string),
                        resource: m.resource.to_string(),
                        unit,
                        currency,
                        quantity: Decimal::ZERO,
                        amount: Decimal::ZERO,
                        items: Vec::new(),
                    });
                line.quantity = line
                    .quantity
                    .checked_add(item.quantity)
                    .ok_or_else(overflow)?;
                line.amount = line.amount.checked_add(item.amount).ok_or_else(overflow)?;
                line.items.push(item);
            }
        }
        let lines: Vec<InvoiceLine> = lines.into_values().collect();
        let mut totals = BTreeMap::new();
        for line in lines.iter().filter(|l| !l.currency.is_empty()) {
            let total: &mut Decimal = totals.entry(line.currency.clone()).or_default();
            *total = total.checked_add(line.amount).ok_or_else(overflow)?;
        }
        Ok(Invoice {
            customer: customer.to_string(),
            from,
            to,
            closed: to <= self.books_closed_until,
            computed_at: clock,
            lines,
            totals,
        })
    }

    /// A movement's priced pieces within `[from, to)`, each with the price it was
    /// priced at (None: unpriced).
    fn items(
        &self,
        m: &Movement,
        from: Timestamp,
        to: Timestamp,
        clock: Timestamp,
    ) -> Result<Vec<(InvoiceItem, Option<&PriceEntry>)>, DomainError> {
        let item = |start: Timestamp, stop: Timestamp, quantity: Decimal, at: Timestamp| {
            let entry = self.price_at(m, at);
            let price = entry.map(|p| p.price);
            let amount = match price {
                Some(p) => quantity.checked_mul(p).ok_or_else(overflow)?,
                None => Decimal::ZERO,
            };
            let item = InvoiceItem {
                movement: m.id,
                kind: m.kind,
                computer: m.computer.to_string(),
                partition: m.partition.to_string(),
                instance: m.instance,
                start,
                stop,
                quantity,
                unit_price: price,
                amount,
            };
            Ok((item, entry))
        };
        match m.kind {
            MovementKind::Usage => {
                let stop = m.stop.unwrap_or(m.start);
                Ok(vec![item(
                    m.start,
                    stop,
                    m.quantity.unwrap_or_default(),
                    stop,
                )?])
            }
            MovementKind::Hosting => {
                let start = m.start.max(from);
                let stop = m.stop.unwrap_or(clock).min(to);
                if stop <= start {
                    return Ok(Vec::new());
                }
                let mut cuts = vec![start];
                cuts.extend(self.price_changes(m, start, stop));
                cuts.push(stop);
                cuts.windows(2)
                    .map(|w| {
                        let hours = Decimal::hours_of_micros(w[1].micros() - w[0].micros());
                        item(w[0], w[1], hours, w[0])
                    })
                    .collect()
            }
        }
    }

    /// Movements that count in `[from, to)`: one customer's (Some) or everyone's (None,
    /// those billed to no one included), optionally of one provider and on one computer.
    pub fn usage<'a>(
        &'a self,
        customer: Option<&'a str>,
        provider: Option<&'a str>,
        computer: Option<&'a str>,
        from: Timestamp,
        to: Timestamp,
    ) -> Vec<&'a Movement> {
        let keep = move |m: &&Movement| {
            State::movement_in(m, from, to)
                && provider.is_none_or(|p| *m.source == *p)
                && computer.is_none_or(|c| *m.computer == *c)
        };
        match customer {
            Some(c) => self.movements_of(Some(c)).filter(keep).collect(),
            None => self.all_movements().filter(keep).collect(),
        }
    }
}
