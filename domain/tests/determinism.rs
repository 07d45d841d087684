//! Property tests: replicas that apply the same commands reach the same bytes; a snapshot
//! restored and replayed equals the original; refused commands and retries change
//! nothing; the structural invariants hold after every command.

mod common;

use common::{domain_bytes, format_op};
use slapos_domain::Query;
use slapos_domain::{Command, Op, RequestId, State, Timestamp};
use slapos_domain::{
    ParamValue, Params, PriceScope, Requester, SoftwareReport, StatusKind, UsageLine,
    UsageTransaction,
};

type Summary = Option<
    Vec<(
        String,
        Option<(String, String, String)>,
        Vec<(String, String)>,
    )>,
>;

/// What a node would be told about a computer, as comparable data.
fn view_summary(s: &State, computer: &str) -> Summary {
    let v = s.computer_view(computer).ok()?;
    Some(
        v.partitions
            .iter()
            .map(|p| {
                (
                    p.partition.id.clone(),
                    p.instance.map(|i| {
                        (
                            format!("{:?}", i),
                            p.root_title.unwrap_or_default().to_string(),
                            i.timestamp.to_slap_string(),
                        )
                    }),
                    p.shared
                        .iter()
                        .map(|sh| (format!("{:?}", sh.instance), sh.root_title.to_string()))
                        .collect(),
                )
            })
            .collect(),
    )
}
use proptest::prelude::*;
use std::collections::BTreeMap;

const COMPUTERS: &[&str] = &["COMP-0", "COMP-1", "COMP-2"];
const TITLES: &[&str] = &["root", "a", "b", "c", "front", "s1"];
const URLS: &[&str] = &["https://e.com/a.cfg", "https://e.com/b.cfg"];
const TYPES: &[&str] = &["default", "worker"];

fn computer() -> impl Strategy<Value = String> {
    prop::sample::select(COMPUTERS).prop_map(str::to_string)
}

fn partition() -> impl Strategy<Value = String> {
    (0..5u8).prop_map(|i| format!("slappart{i}"))
}

fn title() -> impl Strategy<Value = String> {
    prop::sample::select(TITLES).prop_map(str::to_string)
}

fn requester() -> impl Strategy<Value = Requester> {
    prop_oneof![
        prop::sample::select(&["alice", "bob"][..]).prop_map(|p| Requester::Person(p.into())),
        (computer(), partition()).prop_map(|(computer, partition)| Requester::Partition {
            computer,
            partition
        }),
    ]
}

fn params() -> impl Strategy<Value = Params> {
    prop::collection::btree_map(
        prop::sample::select(&["x", "y", "_"][..]).prop_map(str::to_string),
        prop_oneof![
            (0..3i64).prop_map(ParamValue::Int),
            "[a-c&<]{0,3}".prop_map(ParamValue::Str),
            any::<bool>().prop_map(ParamValue::Bool),
        ],
        0..3,
    )
}

fn state() -> impl Strategy<Value = Option<String>> {
    prop::option::of(
        prop::sample::select(&["started", "stopped", "destroyed"][..]).prop_map(str::to_string),
    )
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        2 => (prop::sample::select(COMPUTERS), 0..6usize).prop_map(|(c, n)| format_op(c, n)),
        1 => (computer(), prop::sample::select(&["eu", "us"][..])).prop_map(|(computer, region)| Op::RegisterComputer {
            title: computer.clone(),
            computer,
            owner: "provider".into(),
            region: Some(region.into()),
            network: None,
            attributes: BTreeMap::new(),
        }),
        1 => (computer(), prop::sample::select(URLS), prop::sample::select(&["available", "destroyed"][..]))
            .prop_map(|(computer, url, state)| Op::Supply { computer, url: url.into(), state: state.into() }),
        1 => (computer(), prop::sample::select(URLS), 0..4u8).prop_map(|(computer, url, r)| Op::ReportSoftware {
            computer,
            url: url.into(),
            report: match r { 0 => SoftwareReport::Building, 1 => SoftwareReport::Available,
                2 => SoftwareReport::Error("e".into()), _ => SoftwareReport::Destroyed },
        }),
        6 => (requester(), title(), prop::sample::select(URLS), prop::sample::select(TYPES), state(),
              prop::bool::weighted(0.25), params(), prop::option::of(computer()))
            .prop_map(|(requester, title, url, ty, state, shared, parameters, guid)| { let n = parameters.len(); Op::RequestInstance {
                requester,
                title,
                software_release: url.into(),
                software_type: ty.into(),
                state,
                shared,
                parameters,
                sla: match (guid, n) {
                    (Some(g), _) => BTreeMap::from([("computer_guid".to_string(), g)]),
                    // some requests ask for a region instead
                    (None, 1) => BTreeMap::from([("region".to_string(), "eu".to_string())]),
                    (None, _) => BTreeMap::new(),
                },
            }}),
        2 => (computer(), partition(), prop::option::of(prop::sample::select(&["SOFTINST-3", "SOFTINST-5", "_s1"][..])), "[a-z]{0,2}")
            .prop_map(|(computer, partition, shared, v)| Op::SetConnection {
                computer, partition, shared: shared.map(str::to_string),
                connection: BTreeMap::from([("url".to_string(), Some(v))]),
            }),
        1 => (computer(), partition()).prop_map(|(computer, partition)| Op::ReportStatus {
            computer, partition, shared: None, kind: StatusKind::Started, message: String::new(),
        }),
        1 => (computer(), partition()).prop_map(|(computer, partition)| Op::Bang {
            computer, partition, message: "bang".into(),
        }),
        1 => computer().prop_map(|computer| Op::BangComputer { computer, message: String::new() }),
        1 => (computer(), partition(), title()).prop_map(|(computer, partition, new_name)| Op::Rename {
            computer, partition, shared: None, new_name,
        }),
        3 => (computer(), partition()).prop_map(|(computer, partition)| Op::DestroyedPartition { computer, partition }),
        2 => (computer(), partition(), prop::sample::select(&["2026-11-18 at 09:00:00", "2026-11-18 at 09:30:00", "2026-11-18 at 12:00:00"][..]),
              prop::sample::select(&["1", "2.5", "-1"][..]))
            .prop_map(|(computer, partition, stop, quantity)| Op::RecordUsage {
                reporter: None,
                transactions: vec![UsageTransaction {
                    reference: computer.clone(),
                    start_date: String::new(),
                    stop_date: stop.into(),
                    lines: vec![UsageLine { partition: Some(partition), resource: "cpu".into(), quantity: quantity.into() }],
                }],
                computer,
            }),
        1 => (prop::sample::select(&["hosting", "cpu"][..]), prop::sample::select(&["0.5", "2", "-1"][..]))
            .prop_map(|(resource, price)| Op::SetPrice {
                provider: "provider".into(), scope: PriceScope::Region("eu".into()), resource: resource.into(),
                price: price.into(), currency: "EUR".into(), unit: "hour".into(),
            }),
        1 => (0..900u64).prop_map(|s| Op::CloseBooks { until: Timestamp(1_795_000_000_000_000 + s * 1_000_000) }),
        // The portal's passwords and sessions (issue 23).
        1 => (prop::sample::select(&["alice", "bob"][..]), prop::option::of(prop::sample::select(&["alice", "bob"][..])), any::<bool>())
            .prop_map(|(person, by, set)| Op::SetPassword {
                person: person.into(),
                by: by.map(str::to_string),
                hash: set.then(|| "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".to_string()),
            }),
        1 => (prop::sample::select(&["a", "b", "c"][..]), prop::sample::select(&["alice", "bob"][..]), 0..7_200u64)
            .prop_map(|(t, person, secs)| Op::OpenWebSession {
                hash: t.repeat(64),
                person: person.into(),
                expires_at: Timestamp(1_795_000_000_000_000 + secs * 1_000_000),
            }),
        1 => prop::sample::select(&["a", "b", "c"][..]).prop_map(|t| Op::EndWebSession { hash: t.repeat(64) }),
    ]
}

/// Commands with request ids from two clients; `retry` repeats an earlier command.
fn commands() -> impl Strategy<Value = Vec<Command>> {
    prop::collection::vec(
        (
            op(),
            any::<bool>(),
            prop::option::of(any::<prop::sample::Index>()),
            0..3_000_000u64,
        ),
        1..120,
    )
    .prop_map(|steps| {
        let mut out: Vec<Command> = Vec::new();
        let mut seq = [0u64; 2];
        let mut at = 1_795_000_000_000_000u64;
        for (op, second_client, retry, dt) in steps {
            if let (Some(i), false) = (retry, out.is_empty()) {
                let earlier = out[i.index(out.len())].clone();
                out.push(earlier);
                continue;
            }
            let c = usize::from(second_client);
            seq[c] += 1;
            at += dt;
            out.push(Command {
                request_id: RequestId::new(format!("client-{c}"), seq[c]),
                at: Timestamp(at),
                op,
            });
        }
        out
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Allocation walks an index of the computers that supply a release; a state that
    /// scans every computer instead places every instance on the same partition and
    /// ends equal.
    #[test]
    fn allocation_through_the_index_places_as_the_scan_does(cmds in commands()) {
        let (mut indexed, mut scanned) = (State::new(), State::new().without_alloc_index());
        // every computer registered in a region, formatted, supplying both releases:
        // most requests then have several candidates to choose from
        let mut setup = Vec::new();
        for (i, computer) in COMPUTERS.iter().enumerate() {
            setup.push(Op::RegisterComputer {
                computer: computer.to_string(),
                title: computer.to_string(),
                owner: "provider".into(),
                region: Some(if i == 1 { "us" } else { "eu" }.into()),
                network: None,
                attributes: BTreeMap::new(),
            });
            setup.push(format_op(computer, 3));
            for url in URLS {
                setup.push(Op::Supply { computer: computer.to_string(), url: url.to_string(), state: "available".into() });
            }
        }
        let setup = setup.into_iter().enumerate().map(|(i, op)| Command {
            request_id: RequestId::new("setup", i as u64 + 1),
            at: Timestamp(1_794_000_000_000_000),
            op,
        });
        for cmd in setup.chain(cmds) {
            let cmd = &cmd;
            prop_assert_eq!(indexed.apply(cmd), scanned.apply(cmd));
        }
        prop_assert_eq!(indexed, scanned);
    }

    #[test]
    fn replicas_applying_the_same_log_reach_identical_bytes(cmds in commands()) {
        let (mut a, mut b) = (State::new(), State::new());
        for cmd in &cmds {
            let (oa, ob) = (a.apply(cmd), b.apply(cmd));
            prop_assert_eq!(oa, ob);
            if let Err(e) = a.check_invariants() {
                return Err(TestCaseError::fail(format!("after {}: {e}", cmd.op.name())));
            }
        }
        prop_assert_eq!(a.to_snapshot().unwrap(), b.to_snapshot().unwrap());
    }

    #[test]
    fn a_restored_snapshot_replays_to_the_same_state(cmds in commands(), cut in any::<prop::sample::Index>()) {
        let k = cut.index(cmds.len() + 1);
        let mut original = State::new();
        let mut outcomes = Vec::new();
        for cmd in &cmds {
            outcomes.push(original.apply(cmd));
        }
        let mut prefix = State::new();
        for cmd in &cmds[..k] {
            let _ = prefix.apply(cmd);
        }
        let bytes = prefix.to_snapshot().unwrap();
        let mut restored = State::from_snapshot(&bytes).unwrap();
        prop_assert_eq!(&restored, &prefix);
        for (cmd, expected) in cmds[k..].iter().zip(&outcomes[k..]) {
            prop_assert_eq!(&restored.apply(cmd), expected);
        }
        prop_assert_eq!(restored.to_snapshot().unwrap(), original.to_snapshot().unwrap());
    }

    #[test]
    fn persisted_changes_rebuild_the_same_state(cmds in commands()) {
        // A "disk" fed only with each command's changes, as the Raft store writes them.
        let mut disk = std::collections::BTreeMap::new();
        let mut s = State::new();
        for cmd in &cmds {
            let _ = s.apply(cmd);
            for (k, v) in s.take_changes().unwrap() {
                match v {
                    Some(v) => { disk.insert(k, v); }
                    None => { disk.remove(&k); }
                }
            }
        }
        let rebuilt = State::from_entries(disk.iter()).unwrap();
        prop_assert_eq!(&rebuilt, &s);
        prop_assert_eq!(rebuilt.to_snapshot().unwrap(), s.to_snapshot().unwrap());
    }

    #[test]
    fn a_computer_read_carries_everything_its_view_needs(cmds in commands()) {
        let mut s = State::new();
        for cmd in &cmds {
            let _ = s.apply(cmd);
        }
        for c in COMPUTERS {
            let partial = State::from_entries(
                s.query_entries(&Query::Computer { computer: c.to_string() }).unwrap(),
            )
            .unwrap();
            prop_assert_eq!(view_summary(&partial, c), view_summary(&s, c));
        }
        for inst in s.instances() {
            let partial = State::from_entries(s.query_entries(&Query::Instance { id: inst.id }).unwrap()).unwrap();
            let (full, part) = (s.instance_view(inst.id).unwrap(), partial.instance_view(inst.id).unwrap());
            prop_assert_eq!(full.root_title, part.root_title);
            prop_assert_eq!(full.instance, part.instance);
            prop_assert_eq!(full.host, part.host);
            prop_assert_eq!(full.partition, part.partition);
        }
    }

    #[test]
    fn every_computer_whose_view_changed_is_named(cmds in commands()) {
        // What wakes nodes' long polls: a computer missing here would leave its node
        // waiting for a change it was never told about.
        let view = |s: &State, c: &str| format!("{:?}", s.computer_view(c).ok());
        let mut s = State::new();
        for cmd in &cmds {
            let before: Vec<String> = COMPUTERS.iter().map(|c| view(&s, c)).collect();
            let _ = s.apply(cmd);
            let touched = s.touched_computers();
            let _ = s.take_changes().unwrap();
            prop_assert!(s.touched_computers().is_empty(), "nothing is named once the changes are taken");
            for (c, before) in COMPUTERS.iter().zip(before) {
                if view(&s, c) != before {
                    prop_assert!(touched.contains(*c), "{} changed by {} but not named ({:?})", c, cmd.op.name(), touched);
                }
            }
        }
    }

    #[test]
    fn refusals_and_retries_change_nothing(cmds in commands()) {
        let mut s = State::new();
        let mut seen = std::collections::BTreeSet::new();
        for cmd in &cmds {
            let before_domain = domain_bytes(&s);
            let before_all = s.to_snapshot().unwrap();
            let retry = !seen.insert(cmd.request_id.clone());
            let outcome = s.apply(cmd);
            if retry {
                prop_assert_eq!(s.to_snapshot().unwrap(), before_all, "a retry changed the state");
            } else if outcome.is_err() {
                prop_assert_eq!(domain_bytes(&s), before_domain, "refused {} changed the state", cmd.op.name());
            }
        }
    }
}
