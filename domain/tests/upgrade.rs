//! A state written by the release before the binary encoding (JSON values, outcomes by
//! sequence number, sessions apart) reads back in this release and upgrades in place.
//! `fixtures/state-json-v1.txt` was written by that release (`write_fixture`, run at
//! commit 1c8474a): one pair per line, key and value in hex, as its storage held them.

use slapos_domain::{
    AddressSpec, AllocationScope, CaMaterial, Command, ComputerSpec, Identity, Op, ParamValue,
    PartitionSpec, PriceScope, RequestId, Requester, SoftwareReport, State, StatusKind, Timestamp,
    UsageLine, UsageTransaction,
};
use std::collections::BTreeMap;

const T0: u64 = 1_790_000_000_000_000;
const HOUR: u64 = 3_600_000_000;

fn ops() -> Vec<(u64, Op)> {
    let partitions = (0..3)
        .map(|p| PartitionSpec {
            id: format!("slappart{p}"),
            tap: Some(format!("tap{p}")),
            addresses: vec![AddressSpec {
                addr: format!("10.0.0.{}", p + 2),
                netmask: "255.255.255.0".into(),
                gateway: Some("10.0.0.1".into()),
                network: None,
            }],
        })
        .collect();
    let mut attributes = BTreeMap::new();
    attributes.insert("arch".to_string(), "x86_64".to_string());
    let mut params = BTreeMap::new();
    params.insert("s".to_string(), ParamValue::Str("text".into()));
    params.insert("f".to_string(), ParamValue::Float(1.5));
    params.insert(
        "l".to_string(),
        ParamValue::List(vec![
            ParamValue::Int(-3),
            ParamValue::None,
            ParamValue::Bool(true),
        ]),
    );
    let mut sla = BTreeMap::new();
    sla.insert("region".to_string(), "eu".to_string());
    let mut connection = BTreeMap::new();
    connection.insert("url".to_string(), Some("https://x".to_string()));
    connection.insert("empty".to_string(), None);
    let mut friends = std::collections::BTreeSet::new();
    friends.insert("bob".to_string());
    vec![
        (
            0,
            Op::InstallAuthority {
                material: CaMaterial {
                    cert_pem: "CERT".into(),
                    key_pem: "KEY".into(),
                    group: String::new(),
                },
            },
        ),
        (
            0,
            Op::RegisterComputer {
                computer: "COMP-1".into(),
                title: "one".into(),
                owner: "provider".into(),
                region: Some("eu".into()),
                network: Some("net".into()),
                attributes,
            },
        ),
        (
            0,
            Op::FormatComputer {
                computer: "COMP-1".into(),
                spec: ComputerSpec {
                    address: Some("10.0.0.1".into()),
                    netmask: Some("255.255.255.0".into()),
                    partitions,
                },
            },
        ),
        (
            0,
            Op::Supply {
                computer: "COMP-1".into(),
                url: "https://sr/a.cfg".into(),
                state: "available".into(),
            },
        ),
        (
            0,
            Op::ReportSoftware {
                computer: "COMP-1".into(),
                url: "https://sr/a.cfg".into(),
                report: SoftwareReport::Available,
            },
        ),
        (
            0,
            Op::SetPrice {
                provider: "provider".into(),
                scope: PriceScope::Region("eu".into()),
                resource: "hosting".into(),
                price: "0.25".into(),
                currency: "EUR".into(),
                unit: "hour".into(),
            },
        ),
        (
            1,
            Op::RequestInstance {
                requester: Requester::Person("alice".into()),
                title: "root".into(),
                software_release: "https://sr/a.cfg".into(),
                software_type: "default".into(),
                state: None,
                shared: false,
                parameters: params,
                sla,
            },
        ),
        (
            1,
            Op::SetConnection {
                computer: "COMP-1".into(),
                partition: "slappart0".into(),
                shared: None,
                connection,
            },
        ),
        (
            1,
            Op::ReportStatus {
                computer: "COMP-1".into(),
                partition: "slappart0".into(),
                shared: None,
                kind: StatusKind::Started,
                message: "ok".into(),
            },
        ),
        // refused: its outcome is remembered
        (
            1,
            Op::Supply {
                computer: "COMP-404".into(),
                url: "https://sr/a.cfg".into(),
                state: "available".into(),
            },
        ),
        (
            2,
            Op::RecordUsage {
                computer: "COMP-1".into(),
                reporter: None,
                transactions: vec![UsageTransaction {
                    reference: "COMP-1".into(),
                    start_date: String::new(),
                    stop_date: "2026-09-21T10:00:00Z".into(),
                    lines: vec![UsageLine {
                        partition: Some("slappart0".into()),
                        resource: "cpu".into(),
                        quantity: "2.5".into(),
                    }],
                }],
            },
        ),
        (
            3,
            Op::SetComputerPolicy {
                computer: "COMP-1".into(),
                by: None,
                allocation_scope: Some(AllocationScope::Friends(friends)),
                legacy_partition_keys: Some(true),
            },
        ),
        (
            3,
            Op::SetAdmin {
                person: "alice".into(),
                admin: true,
            },
        ),
        (3, Op::RetireReplica { id: 7 }),
        (
            3,
            Op::RecordCertificate {
                serial: "1f".into(),
                identity: Identity::Computer("COMP-1".into()),
                not_after: Timestamp(T0 + 1000 * HOUR),
                pair: None,
            },
        ),
        (
            3,
            Op::CreateToken {
                hash: "ab".repeat(32),
                owner: "alice".into(),
                computer: "COMP-2".into(),
                expires_at: Timestamp(T0 + 10 * HOUR),
                server: None,
            },
        ),
        (
            4,
            Op::CloseBooks {
                until: Timestamp(T0 + 4 * HOUR),
            },
        ),
    ]
}

/// The state after the commands, and every pair its storage holds.
fn build() -> (State, BTreeMap<Vec<u8>, Vec<u8>>) {
    let mut state = State::new();
    let mut disk = BTreeMap::new();
    for (seq, (hours, op)) in ops().into_iter().enumerate() {
        let cmd = Command {
            request_id: RequestId::new(format!("client-{}", seq % 3), seq as u64 + 1),
            at: Timestamp(T0 + hours * HOUR + seq as u64),
            op,
        };
        let _ = state.apply(&cmd);
        for (k, v) in state.take_changes().expect("changes") {
            match v {
                Some(v) => disk.insert(k, v),
                None => disk.remove(&k),
            };
        }
    }
    (state, disk)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
#[ignore = "writes the fixture; run on the release that wrote JSON"]
fn write_fixture() {
    let (_, disk) = build();
    let text: String = disk
        .iter()
        .map(|(k, v)| format!("{} {}\n", hex(k), hex(v)))
        .collect();
    std::fs::write(
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/state-json-v1.txt"
        ),
        text,
    )
    .expect("write fixture");
}

fn unhex(text: &str) -> Vec<u8> {
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).expect("hex"))
        .collect()
}

fn fixture() -> Vec<(Vec<u8>, Vec<u8>)> {
    include_str!("fixtures/state-json-v1.txt")
        .lines()
        .map(|l| {
            let (k, v) = l.split_once(' ').expect("pair");
            (unhex(k), unhex(v))
        })
        .collect()
}

#[test]
fn a_state_written_in_json_by_the_previous_release_reads_back_equal() {
    let (state, _) = build();
    let old = State::from_entries(fixture()).expect("the previous release's pairs load");
    assert_eq!(old, state);
    old.check_invariants().expect("invariants");
}

#[test]
fn upgrading_in_place_rewrites_every_pair_in_binary_and_keeps_the_state() {
    let (state, disk) = build();
    let mut pairs: BTreeMap<Vec<u8>, Vec<u8>> = fixture().into_iter().collect();
    let loaded = State::from_entries(pairs.clone()).expect("load");
    let mut changes = Vec::new();
    for (k, v) in &pairs {
        changes.extend(loaded.upgrade_pair(k, v).expect("upgrade"));
    }
    changes.extend(loaded.upgrade_outcomes().expect("outcomes"));
    for (k, v) in changes {
        match v {
            Some(v) => pairs.insert(k, v),
            None => pairs.remove(&k),
        };
    }
    // what this release writes for the same commands, byte for byte, but for the time
    // an outcome record carries (its client's last command time when it was written)
    let outside_outcomes = |m: &BTreeMap<Vec<u8>, Vec<u8>>| -> BTreeMap<Vec<u8>, Vec<u8>> {
        m.iter()
            .filter(|(k, _)| k[0] != b'o')
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    };
    assert_eq!(outside_outcomes(&pairs), outside_outcomes(&disk));
    assert_eq!(
        pairs.keys().collect::<Vec<_>>(),
        disk.keys().collect::<Vec<_>>()
    );
    assert!(pairs
        .iter()
        .all(|(_, v)| v.is_empty() || slapos_domain::codec::is_binary(v)));
    let upgraded = State::from_entries(pairs.clone()).expect("load upgraded");
    assert_eq!(upgraded, state);
    // once upgraded, nothing is left to do
    let again: Vec<_> = disk
        .iter()
        .flat_map(|(k, v)| upgraded.upgrade_pair(k, v).expect("upgrade"))
        .collect();
    assert!(again.is_empty(), "{again:?}");
}
