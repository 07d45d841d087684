//! The marketplace: SLA conditions, spreading, the ordered score, and clear errors.

mod common;

use common::*;
use master_node::domain::{Op, SoftwareReport};
use master_node::{DomainError, Reply};
use std::collections::BTreeMap;

fn register(h: &mut Harness, id: &str, region: &str, attrs: &[(&str, &str)]) {
    h.ok(Op::RegisterComputer {
        computer: id.into(),
        title: id.into(),
        owner: "provider".into(),
        region: Some(region.into()),
        network: Some(format!("net-{region}")),
        attributes: attrs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<BTreeMap<_, _>>(),
    });
    h.format(id, 2);
}

fn placed(h: &mut Harness, op: Op) -> String {
    match h.ok(op) {
        Reply::Instance { id, .. } => h.partition_of(id).0,
        r => panic!("{r:?}"),
    }
}

fn market() -> Harness {
    let mut h = Harness::new();
    register(
        &mut h,
        "COMP-A",
        "eu",
        &[("arch", "x86_64"), ("price", "3")],
    );
    register(
        &mut h,
        "COMP-B",
        "us",
        &[("arch", "arm64"), ("price", "1.5")],
    );
    register(
        &mut h,
        "COMP-C",
        "asia",
        &[("arch", "x86_64"), ("price", "2")],
    );
    h
}

#[test]
fn each_sla_condition_narrows_the_candidates() {
    let mut h = market();
    let req = |t: &str| request_op(person(), t);
    assert_eq!(
        placed(&mut h, with_sla(req("a"), "computer_guid", "COMP-C")),
        "COMP-C"
    );
    assert_eq!(placed(&mut h, with_sla(req("b"), "region", "us")), "COMP-B");
    assert_eq!(
        placed(&mut h, with_sla(req("c"), "network_guid", "net-eu")),
        "COMP-A"
    );
    assert_eq!(
        placed(&mut h, with_sla(req("d"), "arch", "arm64")),
        "COMP-B"
    );
    // max_price 2 admits B (1.5) and C (2); C has one instance, B has two: C wins on load.
    assert_eq!(
        placed(&mut h, with_sla(req("e"), "max_price", "2")),
        "COMP-C"
    );
    // Conditions combine.
    let op = with_sla(with_sla(req("f"), "arch", "x86_64"), "region", "eu");
    assert_eq!(placed(&mut h, op), "COMP-A");
}

#[test]
fn impossible_or_unknown_conditions_are_clear_errors() {
    let mut h = market();
    let req = || request_op(person(), "x");
    let err = h.refused(with_sla(req(), "computer_guid", "COMP-NOPE"));
    assert!(
        err.to_string()
            .contains("'COMP-NOPE' is not a known computer"),
        "{err}"
    );
    let err = h.refused(with_sla(req(), "region", "mars"));
    assert!(
        err.to_string()
            .contains("no open computer meets the conditions (region=mars)"),
        "{err}"
    );
    let err = h.refused(with_sla(req(), "colour", "blue"));
    assert_eq!(err, DomainError::UnknownSlaKey("colour".into()));
    let err = h.refused(with_sla(req(), "max_price", "cheap"));
    assert!(err.to_string().contains("'cheap' is not a number"), "{err}");
    let err = h.refused(with_sla(req(), "spread", "galaxy"));
    assert!(
        err.to_string().contains("computer, region, network"),
        "{err}"
    );
    let err = h.refused(with_sla(req(), "instance_guid", "SOFTINST-1"));
    assert!(err.to_string().contains("only shared instances"), "{err}");
    let err = h.refused(with_sla(req(), "master_url", "https://elsewhere"));
    assert!(err.to_string().contains("not supported"), "{err}");
    // Keys SlapOS defines for nodes are accepted and kept.
    let id = match h.ok(with_sla(req(), "retention_delay", "7.0")) {
        Reply::Instance { id, .. } => id,
        r => panic!("{r:?}"),
    };
    assert_eq!(h.instance(id).sla["retention_delay"], "7.0");
}

#[test]
fn trees_spread_over_distinct_computers_or_regions_when_asked() {
    let mut h = market();
    let root = h.request(person(), "root");
    let mut seen = vec![h.partition_of(root).0];
    for title in ["r1", "r2"] {
        let op = with_sla(
            request_op(h.as_requester(root), title),
            "spread",
            "computer",
        );
        let c = placed(&mut h, op);
        assert!(!seen.contains(&c), "{c} used twice in {seen:?}");
        seen.push(c);
    }
    let err = h.refused(with_sla(
        request_op(h.as_requester(root), "r3"),
        "spread",
        "region",
    ));
    assert!(
        err.to_string().contains("spread over distinct regions"),
        "{err}"
    );
    // Without the request to spread, the tree may share a computer.
    let op = request_op(h.as_requester(root), "r4");
    let c = placed(&mut h, op);
    assert!(seen.contains(&c));
}

#[test]
fn the_score_prefers_installed_software_then_low_load_then_stable_keys() {
    let mut h = market();
    // Nothing installed anywhere, equal load: the smallest computer id.
    assert_eq!(placed(&mut h, request_op(person(), "a")), "COMP-A");
    // A now has the release supplied (allocation supplied it): that beats A's higher load.
    assert_eq!(placed(&mut h, request_op(person(), "b")), "COMP-A");
    // A release supplied nowhere: the least loaded computer (A has 2, B and C 0), then id.
    let mut op = request_op(person(), "c0");
    if let Op::RequestInstance {
        software_release, ..
    } = &mut op
    {
        *software_release = "https://example.com/third.cfg".into();
    }
    assert_eq!(placed(&mut h, op), "COMP-B");
    // Reported installed beats merely supplied: install "other" on B (load 1),
    // supply it on C (load 0).
    let other = "https://example.com/other.cfg";
    for c in ["COMP-B", "COMP-C"] {
        h.ok(Op::Supply {
            computer: c.into(),
            url: other.into(),
            state: "available".into(),
        });
    }
    h.ok(Op::ReportSoftware {
        computer: "COMP-B".into(),
        url: other.into(),
        report: SoftwareReport::Available,
    });
    let mut op = request_op(person(), "c");
    if let Op::RequestInstance {
        software_release, ..
    } = &mut op
    {
        *software_release = other.into();
    }
    assert_eq!(
        placed(&mut h, op),
        "COMP-B",
        "installed beats supplied and lower load"
    );
}

#[test]
fn closed_computers_take_no_new_instances_but_keep_theirs() {
    let mut h = market();
    let id = h.request(person(), "a");
    let c = h.partition_of(id).0;
    h.ok(Op::UpdateComputer {
        computer: c.clone(),
        region: Some("eu".into()),
        network: None,
        attributes: BTreeMap::new(),
        allocation_open: false,
    });
    let err = h.refused(with_sla(request_op(person(), "b"), "computer_guid", &c));
    assert!(matches!(err, DomainError::NoCapacity { .. }));
    // Re-requests of what it hosts still work.
    h.ok(with_sla(request_op(person(), "a"), "computer_guid", &c));
    assert_eq!(h.partition_of(id).0, c);
}

#[test]
fn a_rerequest_naming_another_computer_stays_where_it_is() {
    let mut h = market();
    let id = match h.ok(with_sla(
        request_op(person(), "a"),
        "computer_guid",
        "COMP-B",
    )) {
        Reply::Instance { id, .. } => id,
        r => panic!("{r:?}"),
    };
    h.ok(with_sla(
        request_op(person(), "a"),
        "computer_guid",
        "COMP-C",
    ));
    assert_eq!(h.partition_of(id).0, "COMP-B");
}
