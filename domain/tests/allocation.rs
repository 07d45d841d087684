//! The marketplace: SLA conditions, spreading, the ordered score, and clear errors.

mod common;

use common::*;
use slapos_domain::{DomainError, Reply};
use slapos_domain::{Op, SoftwareReport};
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
            .contains("no computer open to alice meets the conditions (region=mars)"),
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
    h.format("COMP-B", 4);
    // Supplied everywhere, installed nowhere, equal load: the smallest computer id.
    assert_eq!(placed(&mut h, request_op(person(), "a")), "COMP-A");
    // Then the least loaded (A has one instance, B and C none), then the id.
    assert_eq!(placed(&mut h, request_op(person(), "b")), "COMP-B");
    // A release only C's provider supplied: C, whatever else is free.
    let third = "https://example.com/third.cfg";
    h.supply("COMP-C", third);
    let mut op = request_op(person(), "c0");
    if let Op::RequestInstance {
        software_release, ..
    } = &mut op
    {
        *software_release = third.into();
    }
    assert_eq!(placed(&mut h, op), "COMP-C");
    assert_eq!(
        placed(
            &mut h,
            with_sla(request_op(person(), "b2"), "computer_guid", "COMP-B")
        ),
        "COMP-B"
    );
    // Reported installed beats merely supplied: install "other" on B (load 2, two
    // partitions free), supply it on C (load 1, one partition free).
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
    h.ok(Op::SetComputerPolicy {
        computer: c.clone(),
        by: None,
        allocation_scope: Some(slapos_domain::AllocationScope::Closed),
        legacy_partition_keys: None,
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

/// A release nobody supplied is never allocated, so never installed anywhere: the
/// provider decides what runs on their machines (finding 1 of the security review: a
/// person's request naming an unsupplied release was placed on COMP-1 and installed).
#[test]
fn a_release_supplied_nowhere_is_refused_and_supplies_nothing() {
    let mut h = market();
    for (i, url) in [
        "/x.toml",
        "file:///etc/computer.key",
        "https://evil.example/sr.toml",
    ]
    .into_iter()
    .enumerate()
    {
        let mut op = with_sla(
            request_op(person(), &format!("evil{i}")),
            "computer_guid",
            "COMP-A",
        );
        if let Op::RequestInstance {
            software_release, ..
        } = &mut op
        {
            *software_release = url.into();
        }
        let err = h.refused(op);
        let text = err.to_string();
        assert!(matches!(err, DomainError::NoCapacity { .. }), "{text}");
        assert!(
            text.contains(&format!("software release '{url}' is supplied on none")),
            "{text}"
        );
        // `refused` checked that nothing changed: no supply row for the release.
        for c in ["COMP-A", "COMP-B", "COMP-C"] {
            let view = h.state.computer_view(c).unwrap();
            assert!(view.software.iter().all(|s| s.url != url), "{url} on {c}");
        }
    }
    // Once the provider supplies it, the same request is allocated there.
    h.supply("COMP-A", "/x.toml");
    let mut op = request_op(person(), "evil0");
    if let Op::RequestInstance {
        software_release, ..
    } = &mut op
    {
        *software_release = "/x.toml".into();
    }
    assert_eq!(placed(&mut h, op), "COMP-A");
}

/// Moving an instance to another release needs that release supplied on its computer.
#[test]
fn an_instance_moves_only_to_a_release_its_computer_supplies() {
    let mut h = market();
    let id = h.request(person(), "a");
    let (c, _) = h.partition_of(id);
    let other = "https://example.com/upgrade.cfg";
    let mut op = request_op(person(), "a");
    if let Op::RequestInstance {
        software_release, ..
    } = &mut op
    {
        *software_release = other.into();
    }
    let err = h.refused(op.clone());
    assert_eq!(
        err,
        DomainError::NotSupplied {
            computer: c.clone(),
            url: other.into()
        }
    );
    h.supply(&c, other);
    h.ok(op);
    assert_eq!(h.instance(id).software_release, other);
}

/// The owner's allocation scope: open to anyone, personal (the owner's own trees),
/// friends (and the persons listed), closed.
#[test]
fn allocation_scopes_admit_whom_the_owner_chose() {
    use slapos_domain::AllocationScope;
    let mut h = Harness::new();
    register(&mut h, "COMP-P", "eu", &[]);
    let scope = |h: &mut Harness, s: AllocationScope| {
        h.ok(Op::SetComputerPolicy {
            computer: "COMP-P".into(),
            by: Some("provider".into()),
            allocation_scope: Some(s),
            legacy_partition_keys: None,
        });
    };
    let as_ = |who: &str| slapos_domain::Requester::Person(who.into());
    scope(&mut h, AllocationScope::Personal);
    let err = h.refused(request_op(as_("alice"), "a"));
    assert!(
        err.to_string().contains("no computer open to alice"),
        "{err}"
    );
    assert_eq!(
        placed(&mut h, request_op(as_("provider"), "mine")),
        "COMP-P"
    );
    scope(
        &mut h,
        AllocationScope::Friends(["alice".to_string()].into_iter().collect()),
    );
    assert_eq!(placed(&mut h, request_op(as_("alice"), "a")), "COMP-P");
    let err = h.refused(request_op(as_("mallory"), "m"));
    assert!(matches!(err, DomainError::NoCapacity { .. }), "{err}");
    h.format("COMP-P", 4);
    scope(&mut h, AllocationScope::Closed);
    assert!(matches!(
        h.refused(request_op(as_("provider"), "mine2")),
        DomainError::NoCapacity { .. }
    ));
    scope(&mut h, AllocationScope::Open);
    assert_eq!(placed(&mut h, request_op(as_("mallory"), "m")), "COMP-P");
}

/// A provider sells partition sizes (the `partition_sizes` attribute); an SLA naming a
/// size goes only where it is sold, a size sold nowhere is refused, and a re-request may
/// change the size only to one its computer sells (the instance never moves).
#[test]
fn partition_sizes_go_where_they_are_sold() {
    let mut h = Harness::new();
    register(
        &mut h,
        "COMP-S",
        "eu",
        &[("partition_sizes", "small,medium")],
    );
    register(
        &mut h,
        "COMP-M",
        "eu",
        &[("partition_sizes", "master medium")],
    );
    register(&mut h, "COMP-N", "eu", &[]);
    for c in ["COMP-S", "COMP-M", "COMP-N"] {
        h.supply(c, SR);
    }
    let req = |t: &str, size: &str| with_sla(request_op(person(), t), "size", size);
    assert_eq!(placed(&mut h, req("r", "master")), "COMP-M");
    assert_eq!(placed(&mut h, req("s", "small")), "COMP-S");
    let err = h.refused(req("x", "xl"));
    assert!(
        matches!(&err, DomainError::NoCapacity { reason, .. } if reason.contains("size=xl")),
        "{err}"
    );
    // A size is a name, never a path nor a line of its own: refused before anything.
    let long = "m".repeat(65);
    for hostile in [
        "a b",
        "..",
        "../x",
        "x/y",
        ".hidden",
        "big\nreserved",
        "",
        &long,
    ] {
        assert!(
            matches!(
                h.refused(req("bad", hostile)),
                DomainError::InvalidArgument { .. }
            ),
            "{hostile:?}"
        );
    }
    // Resized in place: medium is sold on COMP-S too; master is not.
    let id = |reply: Reply| match reply {
        Reply::Instance { id, .. } => id,
        r => panic!("{r:?}"),
    };
    let s = id(h.ok(req("s", "small")));
    let before = (h.partition_of(s), h.instance(s).timestamp);
    h.ok(req("s", "medium"));
    let after = (h.partition_of(s), h.instance(s).timestamp);
    assert_eq!(before.0, after.0, "the instance moved");
    assert!(
        after.1 > before.1,
        "a new size is a change the node must see"
    );
    assert!(matches!(
        h.refused(req("s", "master")),
        DomainError::NoCapacity { .. }
    ));
}
