//! Accounting in the state machine: a simulated day of two customers on two computers
//! with different prices, checked against a hand computation; re-posted journals; forged
//! and malformed journals; closed periods; the ledger surviving persistence and partial
//! reads.

mod common;

use common::{domain_bytes, format_op, request_op, with_sla, with_state};
use slapos_domain::{
    format_date, parse_date, usage_disk_range, usage_disk_target, Decimal, DomainError, Invoice,
    MovementKind, PriceScope, Query, Requester, UsageLine, UsageTransaction,
};
use slapos_domain::{Command, Op, Outcome, Reply, RequestId, State, Timestamp};
use std::collections::BTreeMap;

const DAY: &str = "2026-11-25";

fn at(time: &str) -> Timestamp {
    parse_date(&format!("{DAY}T{time}Z")).unwrap()
}

fn dec(s: &str) -> Decimal {
    Decimal::parse(s).unwrap()
}

/// The state machine and a model of its disk: every command's changes are written to
/// `disk` as the Raft store writes them, and the ledger is read back as a replica serves
/// it (the memory's part, then the period's usage from disk).
struct Ledger {
    state: State,
    seq: u64,
    disk: BTreeMap<Vec<u8>, Vec<u8>>,
}

impl Ledger {
    fn new() -> Ledger {
        Ledger {
            state: State::new(),
            seq: 0,
            disk: BTreeMap::new(),
        }
    }

    fn run(&mut self, when: Timestamp, op: Op) -> Outcome {
        self.seq += 1;
        let outcome = self.state.apply(&Command {
            request_id: RequestId::new("ledger-test", self.seq),
            at: when,
            op,
        });
        if let Err(e) = self.state.check_invariants() {
            panic!("invariant broken: {e}");
        }
        for (k, v) in self.state.take_changes().unwrap() {
            match v {
                Some(v) => self.disk.insert(k, v),
                None => self.disk.remove(&k),
            };
        }
        outcome
    }

    /// What a replica answers to a ledger read, as a reader's state.
    fn read(
        &self,
        customer: Option<&str>,
        provider: Option<&str>,
        from: Timestamp,
        to: Timestamp,
    ) -> State {
        let query = Query::Ledger {
            customer: customer.map(str::to_string),
            provider: provider.map(str::to_string),
            from,
            to,
        };
        let mut entries = self.state.query_entries(&query).unwrap();
        if let Some((a, b)) = usage_disk_range(&query) {
            for (k, v) in self.disk.range(a..b) {
                if let Some(target) = usage_disk_target(k, v) {
                    if let Some(value) = self.disk.get(&target) {
                        entries.push((target, value.clone()));
                    }
                }
            }
        }
        State::from_read(entries).unwrap()
    }

    /// Everything recorded, usage included.
    fn everything(&self) -> State {
        self.read(None, None, Timestamp::default(), Timestamp(u64::MAX))
    }

    fn ok(&mut self, when: Timestamp, op: Op) -> Reply {
        let name = op.name();
        self.run(when, op)
            .unwrap_or_else(|e| panic!("{name} refused: {e}"))
    }

    fn refused(&mut self, when: Timestamp, op: Op) -> DomainError {
        let before = (domain_bytes(&self.state), self.usage_on_disk());
        let e = self.run(when, op).expect_err("should be refused");
        let after = (domain_bytes(&self.state), self.usage_on_disk());
        assert_eq!(before, after, "a refusal changed the ledger");
        e
    }

    fn usage_on_disk(&self) -> usize {
        self.disk.keys().filter(|k| k[0] == b'u').count()
    }

    fn invoice(&self, customer: &str) -> Invoice {
        self.read(Some(customer), None, at("00:00:00"), day_end())
            .invoice(customer, at("00:00:00"), day_end(), Timestamp::default())
            .unwrap()
    }
}

fn day_end() -> Timestamp {
    parse_date("2026-11-26").unwrap()
}

fn register(computer: &str, region: &str) -> Op {
    Op::RegisterComputer {
        computer: computer.into(),
        title: computer.into(),
        owner: "provider".into(),
        region: Some(region.into()),
        network: None,
        attributes: BTreeMap::new(),
    }
}

fn price(scope: PriceScope, resource: &str, price: &str) -> Op {
    Op::SetPrice {
        provider: "provider".into(),
        scope,
        resource: resource.into(),
        price: price.into(),
        currency: "EUR".into(),
        unit: if resource == "hosting" {
            "hour"
        } else {
            "unit"
        }
        .into(),
    }
}

fn order(customer: &str, title: &str, computer: &str, state: &str) -> Op {
    with_state(
        with_sla(
            request_op(Requester::Person(customer.into()), title),
            "computer_guid",
            computer,
        ),
        Some(state),
    )
}

fn journal(computer: &str, stop: &str, lines: &[(&str, &str, &str)]) -> Op {
    Op::RecordUsage {
        computer: computer.into(),
        reporter: None,
        transactions: vec![UsageTransaction {
            reference: computer.into(),
            start_date: String::new(),
            stop_date: stop.into(),
            lines: lines
                .iter()
                .map(|(p, r, q)| UsageLine {
                    partition: Some(p.to_string()),
                    resource: r.to_string(),
                    quantity: q.to_string(),
                })
                .collect(),
        }],
    }
}

/// COMP-1's journal of the evening: A's partition reports twice (two report files),
/// the free partition once.
fn comp1_evening(stop: &str) -> Op {
    journal(
        "COMP-1",
        stop,
        &[
            ("slappart0", "cpu", "60"),
            ("slappart0", "cpu", "4e1"),
            ("slappart1", "cpu", "7"),
        ],
    )
}

/// Two customers, two computers priced differently (one by its own price, the other by
/// its region's), a price change in the middle of a hosting period, usage journals.
fn simulated_day() -> Ledger {
    let mut l = Ledger::new();
    let t = at("00:00:00").micros();
    let early = |s: u64| Timestamp(t - 3_600_000_000 + s * 1_000_000);
    l.ok(early(1), register("COMP-1", "eu"));
    l.ok(early(2), register("COMP-2", "us"));
    l.ok(early(3), format_op("COMP-1", 4));
    l.ok(early(4), format_op("COMP-2", 4));
    // The provider supplies the release the customers request.
    for c in ["COMP-1", "COMP-2"] {
        l.ok(
            early(4),
            Op::Supply {
                computer: c.into(),
                url: common::SR.into(),
                state: "available".into(),
            },
        );
    }
    l.ok(
        early(5),
        price(PriceScope::Computer("COMP-1".into()), "hosting", "0.5"),
    );
    l.ok(
        early(6),
        price(PriceScope::Computer("COMP-1".into()), "cpu", "0.01"),
    );
    l.ok(
        early(7),
        price(PriceScope::Region("us".into()), "hosting", "0.2"),
    );
    l.ok(
        early(8),
        price(PriceScope::Computer("COMP-2".into()), "cpu", "0.02"),
    );
    l.ok(
        early(9),
        price(PriceScope::Region("eu".into()), "hosting", "99"),
    );

    l.ok(at("00:00:00"), order("alice", "A", "COMP-1", "started"));
    l.ok(at("00:00:00"), order("bob", "B", "COMP-2", "started"));
    l.ok(at("06:00:00"), order("alice", "A", "COMP-1", "stopped"));
    l.ok(at("12:00:00"), order("alice", "A", "COMP-1", "started"));
    l.ok(
        at("15:00:00"),
        price(PriceScope::Computer("COMP-1".into()), "hosting", "1.0"),
    );
    l.ok(at("18:00:00"), order("bob", "B", "COMP-2", "destroyed"));
    let reply = l.ok(
        at("18:05:00"),
        journal(
            "COMP-2",
            &format!("{DAY} at 18:00:00"),
            &[("slappart0", "cpu", "50")],
        ),
    );
    assert_eq!(
        reply,
        Reply::UsageRecorded {
            recorded: 1,
            known: 0
        }
    );
    l.ok(at("23:00:00"), comp1_evening(&format!("{DAY} at 23:00:00")));
    // the clock moves past the end of the day (any command does)
    l.ok(
        Timestamp(day_end().micros() + 60_000_000),
        price(PriceScope::Computer("COMP-2".into()), "cpu", "0.03"),
    );
    l
}

fn line<'a>(invoice: &'a Invoice, resource: &str) -> &'a slapos_domain::InvoiceLine {
    invoice
        .lines
        .iter()
        .find(|l| l.resource == resource)
        .unwrap_or_else(|| panic!("no {resource} line in {invoice:#?}"))
}

#[test]
fn a_simulated_day_invoices_as_computed_by_hand() {
    let l = simulated_day();
    let alice = l.invoice("alice");
    // hosting: 00-06 at 0.5 (3), 12-15 at 0.5 (1.5), 15-24 at 1.0 (9): 18 h, 13.5 EUR;
    // the region price of eu (99) never applies, COMP-1 has its own
    let hosting = line(&alice, "hosting");
    assert_eq!((hosting.quantity, hosting.amount), (dec("18"), dec("13.5")));
    assert_eq!(hosting.items.len(), 3, "{hosting:#?}");
    assert_eq!(hosting.unit, "hour");
    assert_eq!(hosting.tree_title.as_deref(), Some("A"));
    // cpu: 60 + 40 at 0.01 on A's partition = 1 EUR; slappart1 hosts nothing: no one's
    let cpu = line(&alice, "cpu");
    assert_eq!((cpu.quantity, cpu.amount), (dec("100"), dec("1")));
    assert_eq!(alice.totals.get("EUR"), Some(&dec("14.5")));
    assert!(!alice.closed);

    let bob = l.invoice("bob");
    // hosting 00-18 at the us region's 0.2 = 3.6; cpu 50 at 0.02 = 1
    let hosting = line(&bob, "hosting");
    assert_eq!((hosting.quantity, hosting.amount), (dec("18"), dec("3.6")));
    assert_eq!(line(&bob, "cpu").amount, dec("1"));
    assert_eq!(bob.totals.get("EUR"), Some(&dec("4.6")));

    // the unassigned partition's usage is recorded, billed to no one
    let everything = l.read(None, Some("provider"), at("00:00:00"), day_end());
    let unbilled = everything.usage(None, None, Some("COMP-1"), at("00:00:00"), day_end());
    assert!(unbilled
        .iter()
        .any(|m| m.partition == "slappart1" && m.destination.is_none()));
    // nobody else pays anything
    assert!(l.invoice("carol").lines.is_empty());
}

#[test]
fn a_journal_posted_again_records_nothing_and_a_changed_one_is_refused() {
    let mut l = simulated_day();
    let before = (l.invoice("alice"), (domain_bytes(&l.state), l.disk.clone()));
    let later = Timestamp(day_end().micros() + 120_000_000);
    let again = comp1_evening(&format!("{DAY} at 23:00:00"));
    assert_eq!(
        l.ok(later, again),
        Reply::UsageRecorded {
            recorded: 0,
            known: 1
        }
    );
    let after = (domain_bytes(&l.state), l.disk.clone());
    // (the meta key moves with every command: compare the rest)
    let strip = |(b, mut d): (Vec<u8>, BTreeMap<Vec<u8>, Vec<u8>>)| {
        d.remove(b"m".as_slice());
        d.retain(|k, _| !matches!(k[0], b'o' | b'n'));
        (b, d)
    };
    assert_eq!(
        strip(before.1),
        strip(after),
        "a re-post changed the ledger"
    );
    assert_eq!(before.0.lines, l.invoice("alice").lines);

    let changed = journal(
        "COMP-1",
        &format!("{DAY} at 23:00:00"),
        &[("slappart0", "cpu", "61")],
    );
    assert!(matches!(
        l.refused(later, changed),
        DomainError::JournalConflict { .. }
    ));
}

#[test]
fn forged_and_malformed_journals_are_refused_and_change_nothing() {
    let mut l = simulated_day();
    let now = Timestamp(day_end().micros() + 120_000_000);
    let stop = "2026-11-26 at 00:01:00";
    // a computer reporting for a partition of another computer (COMP-2 has slappart0 too,
    // but COMP-1 has no slappart9)
    let e = l.refused(now, journal("COMP-1", stop, &[("slappart9", "cpu", "1")]));
    assert!(matches!(e, DomainError::Forbidden(_)), "{e}");
    // a journal that says it is another computer's
    let mut other = journal("COMP-1", stop, &[("slappart0", "cpu", "1")]);
    if let Op::RecordUsage { transactions, .. } = &mut other {
        transactions[0].reference = "COMP-2".into();
    }
    assert!(matches!(l.refused(now, other), DomainError::Forbidden(_)));
    // negative, not a number, infinite, absurdly large
    for q in ["-1", "NaN", "INF", "abc", "1e13"] {
        let e = l.refused(now, journal("COMP-1", stop, &[("slappart0", "cpu", q)]));
        assert!(matches!(e, DomainError::UsageRefused { .. }), "{q}: {e}");
    }
    // a period in the future (beyond the allowed clock skew), a bad date
    let e = l.refused(
        now,
        journal(
            "COMP-1",
            "2026-11-27 at 00:00:00",
            &[("slappart0", "cpu", "1")],
        ),
    );
    assert!(e.to_string().contains("future"), "{e}");
    let e = l.refused(
        now,
        journal("COMP-1", "tomorrow", &[("slappart0", "cpu", "1")]),
    );
    assert!(matches!(e, DomainError::UsageRefused { .. }), "{e}");
    // a line naming no partition; an unknown computer
    let mut nameless = journal("COMP-1", stop, &[("slappart0", "cpu", "1")]);
    if let Op::RecordUsage { transactions, .. } = &mut nameless {
        transactions[0].lines[0].partition = None;
    }
    assert!(matches!(
        l.refused(now, nameless),
        DomainError::UsageRefused { .. }
    ));
    assert!(matches!(
        l.refused(now, journal("COMP-9", stop, &[("slappart0", "cpu", "1")])),
        DomainError::UnknownComputer(_)
    ));
    // a provider pricing a computer that is not theirs
    let e = l.refused(
        now,
        Op::SetPrice {
            provider: "mallory".into(),
            scope: PriceScope::Computer("COMP-1".into()),
            resource: "hosting".into(),
            price: "0".into(),
            currency: "EUR".into(),
            unit: "hour".into(),
        },
    );
    assert!(matches!(e, DomainError::NotOwner { .. }), "{e}");
    let e = l.refused(
        now,
        price(PriceScope::Computer("COMP-1".into()), "hosting", "-1"),
    );
    assert!(matches!(e, DomainError::InvalidArgument { .. }), "{e}");
}

#[test]
fn a_closed_period_never_changes() {
    let mut l = simulated_day();
    let now = Timestamp(day_end().micros() + 3_600_000_000);
    l.ok(now, Op::CloseBooks { until: day_end() });
    let closed = l.invoice("alice");
    assert!(closed.closed);
    // later prices, later hosting, a late journal for the closed day
    let later = Timestamp(now.micros() + 3_600_000_000);
    l.ok(
        later,
        price(PriceScope::Computer("COMP-1".into()), "hosting", "7"),
    );
    l.ok(
        later,
        price(PriceScope::Computer("COMP-1".into()), "cpu", "7"),
    );
    l.ok(later, order("alice", "A", "COMP-1", "stopped"));
    let e = l.refused(
        later,
        journal(
            "COMP-1",
            &format!("{DAY} at 22:00:00"),
            &[("slappart0", "cpu", "1")],
        ),
    );
    assert!(matches!(e, DomainError::PeriodClosed { .. }), "{e}");
    let mut after = l.invoice("alice");
    after.computed_at = closed.computed_at;
    assert_eq!(after, closed);
    // the watermark only moves forward, and never past the clock
    assert!(matches!(
        l.refused(
            later,
            Op::CloseBooks {
                until: at("12:00:00")
            }
        ),
        DomainError::PeriodClosed { .. }
    ));
    let future = Timestamp(later.micros() + 3_600_000_000);
    assert!(matches!(
        l.refused(later, Op::CloseBooks { until: future }),
        DomainError::InvalidArgument { .. }
    ));
}

#[test]
fn the_ledger_survives_persistence_and_partial_reads() {
    let l = simulated_day();
    let rebuilt = State::from_entries(l.state.entries().unwrap()).unwrap();
    assert_eq!(rebuilt, l.state);
    rebuilt.check_invariants().unwrap();
    let snapshot = State::from_snapshot(&l.state.to_snapshot().unwrap()).unwrap();
    assert_eq!(snapshot, l.state);
    // a replica restarted from its disk serves the same ledger; usage stays on disk
    let restarted = State::from_entries(l.disk.clone()).unwrap();
    assert_eq!(restarted, l.state);
    assert!(restarted
        .all_movements()
        .all(|m| m.kind == MovementKind::Hosting));
    let reread = Ledger {
        state: restarted,
        seq: l.seq,
        disk: l.disk.clone(),
    };
    for customer in ["alice", "bob"] {
        assert_eq!(reread.invoice(customer), l.invoice(customer));
    }
}

#[test]
fn an_sla_price_ceiling_is_held_against_the_ledger_prices() {
    let mut l = simulated_day();
    let now = Timestamp(day_end().micros() + 3_600_000_000);
    // COMP-1 hosts at 1.0 an hour since 15:00, COMP-2 at its region's 0.2
    let ceiling = |title: &str, max: &str| {
        with_sla(
            request_op(Requester::Person("carol".into()), title),
            "max_price",
            max,
        )
    };
    l.ok(now, ceiling("cheap", "0.5"));
    let placed = |l: &Ledger, title: &str| {
        l.everything()
            .all_movements()
            .find(|m| m.tree_title.as_deref() == Some(title))
            .map(|m| m.computer.to_string())
    };
    assert_eq!(placed(&l, "cheap").as_deref(), Some("COMP-2"));
    l.ok(now, ceiling("any", "1"));
    assert!(matches!(
        l.refused(now, ceiling("too-cheap", "0.1")),
        DomainError::NoCapacity { .. }
    ));
    // the movement names the software release it hosts
    let everything = l.everything();
    let m = everything
        .all_movements()
        .find(|m| m.tree_title.as_deref() == Some("any"));
    assert_eq!(
        m.and_then(|m| m.software_release.as_deref()),
        Some(common::SR)
    );
}

fn transaction(
    reference: &str,
    start: &str,
    stop: &str,
    lines: &[(&str, &str, &str)],
) -> UsageTransaction {
    UsageTransaction {
        reference: reference.into(),
        start_date: start.into(),
        stop_date: stop.into(),
        lines: lines
            .iter()
            .map(|(p, r, q)| UsageLine {
                partition: Some(p.to_string()),
                resource: r.to_string(),
                quantity: q.to_string(),
            })
            .collect(),
    }
}

#[test]
fn the_same_period_written_differently_is_the_same_journal() {
    let mut l = simulated_day();
    let now = Timestamp(day_end().micros() + 120_000_000);
    // recorded at 23:00 in slapgrid's form; ISO 8601 in UTC names the same instant (a
    // partition may report a resource several times: slapgrid sends one line per file)
    let again = comp1_evening(&format!("{DAY}T23:00:00Z"));
    assert_eq!(
        l.ok(now, again),
        Reply::UsageRecorded {
            recorded: 0,
            known: 1
        }
    );
    let iso = journal(
        "COMP-2",
        &format!("{DAY}T18:00:00+00:00"),
        &[("slappart0", "cpu", "50")],
    );
    assert_eq!(
        l.ok(now, iso),
        Reply::UsageRecorded {
            recorded: 0,
            known: 1
        }
    );
    let other = journal(
        "COMP-2",
        &format!("{DAY}T18:00:00Z"),
        &[("slappart0", "cpu", "51")],
    );
    assert!(matches!(
        l.refused(now, other),
        DomainError::JournalConflict { .. }
    ));
}

#[test]
fn periods_chain_and_explicit_periods_do_not_overlap() {
    let mut l = simulated_day();
    let now = Timestamp(day_end().micros() + 3_600_000_000);
    let day = |t: &str| format!("2026-11-26T{t}Z");
    // two transactions without start dates in one journal: the second starts where the
    // first stopped, the first where the computer's last journal (23:00) stopped
    let op = Op::RecordUsage {
        computer: "COMP-1".into(),
        reporter: None,
        transactions: vec![
            transaction(
                "COMP-1",
                "",
                &day("00:20:00"),
                &[("slappart2", "disk", "1")],
            ),
            transaction(
                "COMP-1",
                "",
                &day("00:40:00"),
                &[("slappart2", "disk", "2")],
            ),
        ],
    };
    assert_eq!(
        l.ok(now, op),
        Reply::UsageRecorded {
            recorded: 2,
            known: 0
        }
    );
    let everything = l.everything();
    let disk: Vec<_> = everything
        .all_movements()
        .filter(|m| *m.resource == *"disk")
        .map(|m| (m.start, m.stop))
        .collect();
    assert_eq!(
        disk,
        vec![
            (at("23:00:00"), Some(parse_date(&day("00:20:00")).unwrap())),
            (
                parse_date(&day("00:20:00")).unwrap(),
                Some(parse_date(&day("00:40:00")).unwrap())
            ),
        ]
    );
    // explicit periods: 00:00-00:30 is taken, 00:15-00:45 overlaps it, 00:30-00:45 does not
    let explicit = |start: &str, stop: &str| Op::RecordUsage {
        computer: "COMP-1".into(),
        reporter: None,
        transactions: vec![transaction(
            "COMP-1",
            &day(start),
            &day(stop),
            &[("slappart3", "disk", "1")],
        )],
    };
    l.ok(now, explicit("00:00:00", "00:30:00"));
    let e = l.refused(now, explicit("00:15:00", "00:45:00"));
    assert!(e.to_string().contains("overlaps"), "{e}");
    l.ok(now, explicit("00:30:00", "00:45:00"));
}

#[test]
fn late_usage_is_billed_to_the_instance_of_its_period() {
    let mut l = simulated_day();
    let now = Timestamp(day_end().micros() + 3_600_000_000);
    // B (bob) was destroyed at 18:00; the node frees the partition, carol takes it
    l.ok(
        now,
        Op::DestroyedPartition {
            computer: "COMP-2".into(),
            partition: "slappart0".into(),
        },
    );
    let later = Timestamp(now.micros() + 1_000_000);
    l.ok(later, order("carol", "C", "COMP-2", "started"));
    // a journal of 17:00 arrives now: bob's; one of a minute after carol started: hers
    l.ok(
        later,
        journal(
            "COMP-2",
            &format!("{DAY} at 17:00:00"),
            &[("slappart0", "cpu", "3")],
        ),
    );
    l.ok(
        Timestamp(later.micros() + 120_000_000),
        journal(
            "COMP-2",
            &format_date(Timestamp(later.micros() + 60_000_000)),
            &[("slappart0", "cpu", "4")],
        ),
    );
    let everything = l.everything();
    let of = |who: &str| {
        everything
            .movements_of(Some(who))
            .filter(|m| *m.resource == *"cpu")
            .map(|m| m.quantity.unwrap().to_string())
            .collect::<Vec<_>>()
    };
    assert_eq!(of("bob"), vec!["50", "3"]);
    assert_eq!(of("carol"), vec!["4"]);
}

#[test]
fn people_and_units_are_checked() {
    let mut l = simulated_day();
    let now = Timestamp(day_end().micros() + 3_600_000_000);
    // a person posting the journal of a computer they do not own
    let mut op = journal(
        "COMP-1",
        "2026-11-26 at 00:10:00",
        &[("slappart0", "cpu", "1")],
    );
    if let Op::RecordUsage { reporter, .. } = &mut op {
        *reporter = Some("mallory".into());
    }
    assert!(matches!(
        l.refused(now, op.clone()),
        DomainError::NotOwner { .. }
    ));
    if let Op::RecordUsage { reporter, .. } = &mut op {
        *reporter = Some("provider".into());
    }
    l.ok(now, op);
    // hosting is priced per hour only
    let mut per_day = price(PriceScope::Computer("COMP-1".into()), "hosting", "12");
    if let Op::SetPrice { unit, .. } = &mut per_day {
        *unit = "day".into();
    }
    assert!(matches!(
        l.refused(now, per_day),
        DomainError::InvalidArgument { .. }
    ));
    // a node's local time may run up to 14 h ahead of UTC; an explicit UTC date may not
    let ahead = Timestamp(now.micros() + 10 * 3_600_000_000);
    let local = format_date(ahead)
        .trim_end_matches('Z')
        .replacen('T', " at ", 1);
    l.ok(now, journal("COMP-1", &local, &[("slappart0", "cpu", "1")]));
    let e = l.refused(
        now,
        journal("COMP-1", &format_date(ahead), &[("slappart2", "cpu", "1")]),
    );
    assert!(e.to_string().contains("future"), "{e}");
}

#[test]
fn a_state_from_before_the_ledger_bills_its_started_instances_at_the_next_command() {
    let l = simulated_day();
    // the same state as an older master wrote it (JSON): no movements, no ledger flag
    let entries: Vec<_> = l
        .state
        .query_entries_as(&slapos_domain::Query::All, slapos_domain::Encoding::Json)
        .unwrap()
        .into_iter()
        .filter(|(k, _)| k[0] != b'v' && k[0] != b'j')
        .map(|(k, v)| {
            if k == b"m" {
                let mut meta: serde_json::Value = serde_json::from_slice(&v).unwrap();
                meta.as_object_mut().unwrap().remove("hosting_synced");
                (k, serde_json::to_vec(&meta).unwrap())
            } else {
                (k, v)
            }
        })
        .collect();
    let mut old = Ledger {
        state: State::from_entries(entries).unwrap(),
        seq: 100,
        disk: BTreeMap::new(),
    };
    assert!(old.state.check_invariants().is_err(), "A runs unbilled");
    let now = Timestamp(day_end().micros() + 3_600_000_000);
    old.ok(now, price(PriceScope::Region("us".into()), "cpu", "0.02"));
    let open: Vec<_> = old
        .state
        .all_movements()
        .filter(|m| m.stop.is_none())
        .collect();
    assert_eq!(open.len(), 1);
    assert_eq!(
        (open[0].start, open[0].tree_title.as_deref()),
        (now, Some("A"))
    );
}

#[test]
fn hosting_opens_and_closes_with_the_instance_state() {
    let l = simulated_day();
    let hosting: Vec<_> = l
        .state
        .all_movements()
        .filter(|m| m.resource == "hosting")
        .collect();
    // A: 00-06 closed, 12- open; B: 00-18 closed
    assert_eq!(hosting.len(), 3, "{hosting:#?}");
    let open: Vec<_> = hosting.iter().filter(|m| m.stop.is_none()).collect();
    assert_eq!(open.len(), 1);
    assert_eq!(open[0].destination.as_deref(), Some("alice"));
    assert_eq!(open[0].start, at("12:00:00"));
    let b = hosting
        .iter()
        .find(|m| m.destination.as_deref() == Some("bob"))
        .unwrap();
    assert_eq!(
        (b.stop, b.quantity),
        (Some(at("18:00:00")), Some(dec("18")))
    );
    assert_eq!(b.source, "provider");
}

/// An instance of a partition size is billed as `hosting/<size>`, priced per size; a
/// change of size closes the movement and opens one of the new size.
#[test]
fn partition_sizes_are_billed_at_their_own_price() {
    let mut l = Ledger::new();
    let t = at("00:00:00").micros();
    let early = |s: u64| Timestamp(t - 3_600_000_000 + s * 1_000_000);
    l.ok(
        early(1),
        Op::RegisterComputer {
            computer: "COMP-1".into(),
            title: "COMP-1".into(),
            owner: "provider".into(),
            region: Some("eu".into()),
            network: None,
            attributes: [("partition_sizes".to_string(), "small large".to_string())]
                .into_iter()
                .collect(),
        },
    );
    l.ok(early(2), format_op("COMP-1", 2));
    l.ok(
        early(3),
        Op::Supply {
            computer: "COMP-1".into(),
            url: common::SR.into(),
            state: "available".into(),
        },
    );
    let hourly = |resource: &str, p: &str| {
        let mut op = price(PriceScope::Computer("COMP-1".into()), resource, p);
        if let Op::SetPrice { unit, .. } = &mut op {
            *unit = "hour".into();
        }
        op
    };
    l.ok(early(4), hourly("hosting", "1"));
    l.ok(early(5), hourly("hosting/small", "0.25"));
    l.ok(early(6), hourly("hosting/large", "2"));
    // a size is hosting: priced per hour only
    let mut per_unit = hourly("hosting/small", "1");
    if let Op::SetPrice { unit, .. } = &mut per_unit {
        *unit = "unit".into();
    }
    assert!(matches!(
        l.refused(early(7), per_unit),
        DomainError::InvalidArgument { .. }
    ));
    let sized = |size: &str| with_sla(order("alice", "A", "COMP-1", "started"), "size", size);
    l.ok(at("00:00:00"), sized("small"));
    l.ok(at("10:00:00"), sized("large"));
    l.ok(at("12:00:00"), order("alice", "A", "COMP-1", "stopped"));
    let invoice = l.invoice("alice");
    let small = line(&invoice, "hosting/small");
    let large = line(&invoice, "hosting/large");
    assert_eq!((small.quantity, small.amount), (dec("10"), dec("2.5")));
    assert_eq!((large.quantity, large.amount), (dec("2"), dec("4")));
    assert!(invoice.lines.iter().all(|l| l.resource != "hosting"));
    // max_price holds against the size's price
    let ceiling = |title: &str, max: &str| {
        with_sla(
            with_sla(
                request_op(Requester::Person("carol".into()), title),
                "size",
                "small",
            ),
            "max_price",
            max,
        )
    };
    l.ok(at("13:00:00"), ceiling("cheap", "0.5"));
}
