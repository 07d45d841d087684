//! One test (or a few) per command, each error included. Every refused command is checked
//! to leave the state unchanged (`Harness::refused`).

mod common;

use common::*;
use slapos_domain::{DomainError, Reply, RequestedState, Timestamp};
use slapos_domain::{Op, ParamValue, Placement, Requester, SoftwareReport, StatusKind};
use std::collections::BTreeMap;

fn timestamp(h: &Harness, id: slapos_domain::InstanceId) -> Timestamp {
    h.instance(id).timestamp
}

// ----- format ---------------------------------------------------------------------------

#[test]
fn format_creates_free_partitions_in_order_and_is_idempotent() {
    let mut h = Harness::new();
    h.format("COMP-1", 3);
    let view = h.state.computer_view("COMP-1").unwrap();
    let ids: Vec<_> = view
        .partitions
        .iter()
        .map(|p| p.partition.id.as_str())
        .collect();
    assert_eq!(ids, ["slappart0", "slappart1", "slappart2"]);
    assert!(view.partitions.iter().all(|p| p.instance.is_none()));
    assert_eq!(view.partitions[1].partition.interface, "slaptap1");
    let before = h.state.computer("COMP-1").unwrap().clone();
    h.format("COMP-1", 3);
    let after = h.state.computer("COMP-1").unwrap();
    assert_eq!(before.partitions, after.partitions);
    assert!(
        after.last_contact > before.last_contact,
        "only the last contact moves"
    );
}

#[test]
fn reformat_keeps_allocations_and_refuses_to_drop_busy_partitions() {
    let mut h = Harness::new();
    h.format("COMP-1", 3);
    let id = h.request(person(), "root");
    let (_, part) = h.partition_of(id);
    assert_eq!(part, "slappart0");
    // Growing and re-addressing keeps the instance where it is.
    h.format("COMP-1", 5);
    assert_eq!(h.partition_of(id).1, "slappart0");
    assert_eq!(h.state.computer("COMP-1").unwrap().partitions.len(), 5);
    // Shrinking below the busy partition is refused and names it.
    let err = h.refused(format_op("COMP-1", 0));
    assert_eq!(
        err,
        DomainError::PartitionsInUse {
            computer: "COMP-1".into(),
            partitions: vec!["slappart0".into()]
        }
    );
    assert!(err.to_string().contains("slappart0"));
    // Dropping free partitions is fine.
    h.format("COMP-1", 1);
    assert_eq!(h.state.computer("COMP-1").unwrap().partitions.len(), 1);
}

#[test]
fn format_rejects_duplicate_and_empty_partition_ids() {
    let mut h = Harness::new();
    let mut op = format_op("COMP-1", 2);
    if let Op::FormatComputer { spec, .. } = &mut op {
        spec.partitions[1].id = "slappart0".into();
    }
    let err = h.refused(op);
    assert!(err.to_string().contains("declared twice"), "{err}");
    let err = h.refused(format_op("", 1));
    assert!(err.to_string().contains("computer_id"), "{err}");
    assert!(h.state.computer("").is_err());
}

#[test]
fn register_then_update_computer() {
    let mut h = Harness::new();
    h.ok(Op::RegisterComputer {
        computer: "COMP-9".into(),
        title: "edge node".into(),
        owner: "alice".into(),
        region: Some("eu-west".into()),
        network: None,
        attributes: BTreeMap::from([("arch".into(), "x86_64".into())]),
    });
    let err = h.refused(Op::RegisterComputer {
        computer: "COMP-9".into(),
        title: String::new(),
        owner: "bob".into(),
        region: None,
        network: None,
        attributes: BTreeMap::new(),
    });
    assert_eq!(err, DomainError::ComputerExists("COMP-9".into()));
    h.ok(Op::UpdateComputer {
        computer: "COMP-9".into(),
        region: Some("eu-central".into()),
        network: None,
        attributes: BTreeMap::new(),
    });
    h.ok(Op::SetComputerPolicy {
        computer: "COMP-9".into(),
        by: Some("alice".into()),
        allocation_scope: Some(slapos_domain::AllocationScope::Closed),
        legacy_partition_keys: None,
    });
    let c = h.state.computer("COMP-9").unwrap();
    assert_eq!(c.region.as_deref(), Some("eu-central"));
    assert_eq!(c.allocation_scope, slapos_domain::AllocationScope::Closed);
    assert!(!c.legacy_partition_keys);
    assert_eq!(c.owner, "alice");
    let err = h.refused(Op::UpdateComputer {
        computer: "COMP-NOPE".into(),
        region: None,
        network: None,
        attributes: BTreeMap::new(),
    });
    assert!(err.is_not_found());
    // Only the owner (or an admin) sets the policy.
    let err = h.refused(Op::SetComputerPolicy {
        computer: "COMP-9".into(),
        by: Some("bob".into()),
        allocation_scope: Some(slapos_domain::AllocationScope::Open),
        legacy_partition_keys: Some(true),
    });
    assert!(matches!(err, DomainError::NotOwner { .. }), "{err}");
    h.ok(Op::SetAdmin {
        person: "bob".into(),
        admin: true,
    });
    h.ok(Op::SetComputerPolicy {
        computer: "COMP-9".into(),
        by: Some("bob".into()),
        allocation_scope: None,
        legacy_partition_keys: Some(true),
    });
    let c = h.state.computer("COMP-9").unwrap();
    assert_eq!(c.allocation_scope, slapos_domain::AllocationScope::Closed);
    assert!(c.legacy_partition_keys);
}

// ----- software -------------------------------------------------------------------------

#[test]
fn supply_report_and_remove_software() {
    let mut h = Harness::new();
    h.format_bare("COMP-1", 1);
    let supply = |state: &str| Op::Supply {
        computer: "COMP-1".into(),
        url: SR.into(),
        state: state.into(),
    };
    h.ok(supply("available"));
    let report = |r: SoftwareReport| Op::ReportSoftware {
        computer: "COMP-1".into(),
        url: SR.into(),
        report: r,
    };
    h.ok(report(SoftwareReport::Building));
    h.ok(report(SoftwareReport::Error("buildout failed".into())));
    h.ok(report(SoftwareReport::Available));
    {
        let view = h.state.computer_view("COMP-1").unwrap();
        assert_eq!(view.software.len(), 1);
        assert_eq!(view.software[0].url, SR);
        assert_eq!(
            view.software[0].installation.reported,
            Some(SoftwareReport::Available)
        );
    }
    // A node may only report destroyed what was asked to be destroyed.
    let err = h.refused(report(SoftwareReport::Destroyed));
    assert!(matches!(err, DomainError::SoftwareNotDestroyed { .. }));
    h.ok(supply("destroyed"));
    assert_eq!(
        h.state.computer_view("COMP-1").unwrap().software[0]
            .installation
            .requested
            .as_str(),
        "destroyed"
    );
    assert_eq!(
        h.ok(report(SoftwareReport::Destroyed)),
        Reply::SoftwareRemoved
    );
    assert!(h.state.computer_view("COMP-1").unwrap().software.is_empty());
    let err = h.refused(report(SoftwareReport::Building));
    assert!(matches!(err, DomainError::UnknownSoftware { .. }));
}

#[test]
fn supply_errors() {
    let mut h = Harness::new();
    h.format("COMP-1", 1);
    let err = h.refused(Op::Supply {
        computer: "COMP-1".into(),
        url: SR.into(),
        state: "started".into(),
    });
    assert!(err
        .to_string()
        .contains("'started' is not one of available, destroyed"));
    let err = h.refused(Op::Supply {
        computer: "COMP-X".into(),
        url: SR.into(),
        state: "available".into(),
    });
    assert_eq!(err, DomainError::UnknownComputer("COMP-X".into()));
    let err = h.refused(Op::Supply {
        computer: "COMP-1".into(),
        url: String::new(),
        state: "available".into(),
    });
    assert!(err.to_string().contains("software_release"));
}

// ----- requests -------------------------------------------------------------------------

#[test]
fn new_request_allocates_supplies_and_rerequests_change_timestamps_only_on_change() {
    let mut h = Harness::new();
    h.format("COMP-1", 2);
    let op = with_param(request_op(person(), "root"), "count", ParamValue::Int(3));
    let id = match h.ok(op.clone()) {
        Reply::Instance { id, changed } => {
            assert!(changed);
            id
        }
        r => panic!("{r:?}"),
    };
    assert_eq!(id.to_string(), "SOFTINST-1");
    let t1 = timestamp(&h, id);
    assert_eq!(t1, Timestamp(h.now));
    // Allocating supplies the software release to the chosen computer.
    let view = h.state.computer_view("COMP-1").unwrap();
    assert_eq!(view.software[0].url, SR);
    let p = &view.partitions[0];
    assert_eq!(p.instance.map(|i| i.id), Some(id));
    assert_eq!(p.root_title, Some("root"));
    assert_eq!(
        p.instance.unwrap().parameter_strings["count"].as_deref(),
        Some("3")
    );
    // Identical re-request: nothing changes.
    assert_eq!(h.ok(op.clone()), Reply::Instance { id, changed: false });
    assert_eq!(timestamp(&h, id), t1);
    // state=None keeps the stored state and changes nothing.
    assert_eq!(
        h.ok(with_state(op.clone(), None)),
        Reply::Instance { id, changed: false }
    );
    // A changed parameter gives a new timestamp.
    h.ok(with_param(op.clone(), "count", ParamValue::Int(4)));
    let t2 = timestamp(&h, id);
    assert!(t2 > t1);
    // So does a new state.
    h.ok(with_state(
        with_param(op, "count", ParamValue::Int(4)),
        Some("stopped"),
    ));
    assert!(timestamp(&h, id) > t2);
    assert_eq!(h.instance(id).requested_state, RequestedState::Stopped);
}

#[test]
fn request_errors_change_nothing() {
    let mut h = Harness::new();
    h.format("COMP-1", 1);
    let err = h.refused(with_state(request_op(person(), "x"), Some("running")));
    assert!(err
        .to_string()
        .contains("'running' is not one of started, stopped, destroyed"));
    let err = h.refused(request_op(person(), ""));
    assert!(err.to_string().contains("partition_reference"));
    // Destroying what does not exist.
    let err = h.refused(with_state(request_op(person(), "ghost"), Some("destroyed")));
    assert!(err.is_not_found());
    // A partition that hosts nothing cannot request.
    let err = h.refused(request_op(
        Requester::Partition {
            computer: "COMP-1".into(),
            partition: "slappart0".into(),
        },
        "child",
    ));
    assert!(matches!(err, DomainError::PartitionFree { .. }));
    let err = h.refused(request_op(
        Requester::Partition {
            computer: "COMP-1".into(),
            partition: "slappart77".into(),
        },
        "child",
    ));
    assert!(matches!(err, DomainError::UnknownPartition { .. }));
    // Full.
    h.request(person(), "one");
    let err = h.refused(request_op(person(), "two"));
    assert!(matches!(err, DomainError::NoCapacity { .. }), "{err}");
    assert!(err.to_string().contains("busy"), "{err}");
}

#[test]
fn trees_are_flat_and_titles_are_scoped_by_tree() {
    let mut h = Harness::new();
    h.format("COMP-1", 6);
    let root = h.request(person(), "root");
    let child = h.request(h.as_requester(root), "child");
    let grandchild = h.request(h.as_requester(child), "grandchild");
    assert_eq!(h.instance(child).root, root);
    assert_eq!(h.instance(grandchild).root, root);
    assert_eq!(h.instance(grandchild).requester, Some(child));
    // The same title from another member of the tree is the same instance.
    assert_eq!(h.request(h.as_requester(root), "grandchild"), grandchild);
    assert_eq!(h.instance(grandchild).requester, Some(root));
    // The same title in another tree is another instance.
    let root2 = h.request(person(), "root2");
    let child2 = h.request(h.as_requester(root2), "child");
    assert_ne!(child2, child);
    // Another person's root of the same title is another tree.
    let bob_root = h.request(Requester::Person("bob".into()), "root");
    assert_ne!(bob_root, root);
    let tree = h.state.tree(root).unwrap();
    let titles: Vec<_> = tree.iter().map(|m| m.title.as_str()).collect();
    assert_eq!(titles, ["root", "child", "grandchild"]);
    // An instance cannot request its own root or itself.
    let err = h.refused(request_op(h.as_requester(child), "root"));
    assert!(
        err.to_string()
            .contains("cannot request itself or its root"),
        "{err}"
    );
    let err = h.refused(request_op(h.as_requester(child), "child"));
    assert!(matches!(err, DomainError::InvalidArgument { .. }));
}

#[test]
fn root_state_is_pushed_to_the_tree_and_released() {
    let mut h = Harness::new();
    h.format("COMP-1", 4);
    let root = h.request(person(), "root");
    let child = h.request(h.as_requester(root), "child");
    let t_child = timestamp(&h, child);
    h.ok(with_state(request_op(person(), "root"), Some("stopped")));
    assert_eq!(h.instance(child).requested_state, RequestedState::Stopped);
    assert!(
        timestamp(&h, child) > t_child,
        "pushed state must be reprocessed"
    );
    // The child re-requested started while its root is stopped stays stopped.
    assert_eq!(
        h.ok(request_op(h.as_requester(root), "child")),
        Reply::Instance {
            id: child,
            changed: false
        }
    );
    assert_eq!(h.instance(child).requested_state, RequestedState::Stopped);
    // Restarting the root restores each member's own state.
    let t = timestamp(&h, child);
    h.ok(request_op(person(), "root"));
    assert_eq!(h.instance(child).requested_state, RequestedState::Started);
    assert!(timestamp(&h, child) > t);
    // A child stopped on its own stays stopped when the root starts.
    h.ok(with_state(
        request_op(h.as_requester(root), "child"),
        Some("stopped"),
    ));
    h.ok(with_state(request_op(person(), "root"), Some("stopped")));
    h.ok(request_op(person(), "root"));
    assert_eq!(h.instance(child).requested_state, RequestedState::Stopped);
}

#[test]
fn destruction_waits_for_the_tree_then_frees_partitions() {
    let mut h = Harness::new();
    h.format("COMP-1", 4);
    h.format("COMP-2", 1);
    let root = h.request(person(), "root");
    let child = h.request(h.as_requester(root), "child");
    let grandchild = h.request(h.as_requester(child), "grandchild");
    let (c0, p0) = h.partition_of(root);
    let (c1, p1) = h.partition_of(child);
    let (c2, p2) = h.partition_of(grandchild);
    let destroyed = |c: &str, p: &str| Op::DestroyedPartition {
        computer: c.into(),
        partition: p.into(),
    };
    // Not requested destroyed: refused.
    let err = h.refused(destroyed(&c1, &p1));
    assert_eq!(
        err,
        DomainError::NotRequestedDestroyed {
            title: "child".into(),
            state: "started".into()
        }
    );
    h.ok(with_state(request_op(person(), "root"), Some("destroyed")));
    for id in [root, child, grandchild] {
        assert_eq!(h.instance(id).requested_state, RequestedState::Destroyed);
    }
    // The root waits for its members.
    assert_eq!(
        h.ok(destroyed(&c0, &p0)),
        Reply::DestroyDeferred {
            remaining: vec!["child".into(), "grandchild".into()]
        }
    );
    assert_eq!(h.ok(destroyed(&c1, &p1)), Reply::PartitionFreed);
    assert_eq!(h.ok(destroyed(&c2, &p2)), Reply::PartitionFreed);
    assert_eq!(h.ok(destroyed(&c0, &p0)), Reply::PartitionFreed);
    assert!(h.state.instances().next().is_none());
    let view = h.state.computer_view("COMP-1").unwrap();
    assert!(view.partitions.iter().all(|p| p.instance.is_none()));
    // Freed partitions are reported as free, and a new request may use them.
    let err = h.refused(destroyed(&c0, &p0));
    assert!(matches!(err, DomainError::PartitionFree { .. }));
    let err = h.refused(destroyed("COMP-1", "slappart77"));
    assert!(err
        .to_string()
        .contains("unknown partition 'slappart77' on 'COMP-1'"));
    let again = h.request(person(), "root");
    assert_ne!(again, root, "ids are never reused");
}

#[test]
fn a_destroyed_root_revives_before_it_is_freed() {
    let mut h = Harness::new();
    h.format("COMP-1", 2);
    let root = h.request(person(), "root");
    let child = h.request(h.as_requester(root), "child");
    h.ok(with_state(request_op(person(), "root"), Some("destroyed")));
    h.ok(request_op(person(), "root"));
    assert_eq!(h.instance(root).requested_state, RequestedState::Started);
    assert_eq!(h.instance(child).requested_state, RequestedState::Started);
}

// ----- shared instances -----------------------------------------------------------------

fn with_host(h: &mut Harness) -> (slapos_domain::InstanceId, slapos_domain::InstanceId) {
    h.format("COMP-1", 4);
    let root = h.request(person(), "root");
    let host = match h.ok(Op::RequestInstance {
        requester: person(),
        title: "frontend".into(),
        software_release: FRONTEND.into(),
        software_type: "custom-frontend".into(),
        state: None,
        shared: false,
        parameters: Default::default(),
        sla: BTreeMap::new(),
    }) {
        Reply::Instance { id, .. } => id,
        r => panic!("{r:?}"),
    };
    (root, host)
}

#[test]
fn shared_instances_land_on_a_matching_host_and_bump_it() {
    let mut h = Harness::new();
    let (root, host) = with_host(&mut h);
    let t_host = timestamp(&h, host);
    let op = with_param(
        shared_op(
            h.as_requester(root),
            "my-shared",
            FRONTEND,
            "custom-frontend",
        ),
        "port",
        ParamValue::Int(8080),
    );
    let shared = match h.ok(op.clone()) {
        Reply::Instance { id, .. } => id,
        r => panic!("{r:?}"),
    };
    assert_eq!(h.instance(shared).placement, Placement::Hosted { host });
    assert_eq!(h.instance(shared).root, root);
    let t1 = timestamp(&h, host);
    assert!(t1 > t_host);
    let (c, p) = h.partition_of(host);
    let pv = h.state.partition_view(&c, &p).unwrap();
    assert_eq!(pv.shared.len(), 1);
    assert_eq!(pv.shared[0].instance.id, shared);
    // Typed parameters survive for the host.
    assert_eq!(
        pv.shared[0].instance.parameters["port"],
        ParamValue::Int(8080)
    );
    // Identical re-request: the host is not bothered.
    h.ok(op.clone());
    assert_eq!(timestamp(&h, host), t1);
    // Changed parameters: it is.
    h.ok(with_param(op.clone(), "port", ParamValue::Int(8081)));
    let t2 = timestamp(&h, host);
    assert!(t2 > t1);
    // Destroyed: removed from the host, which reprocesses.
    assert_eq!(
        h.ok(with_state(op, Some("destroyed"))),
        Reply::SharedRemoved {
            id: shared,
            host: Some(host),
            connection: Default::default()
        }
    );
    assert!(h.instance(host).hosted.is_empty());
    assert!(timestamp(&h, host) > t2);
}

#[test]
fn shared_requests_without_a_host_or_with_a_pin() {
    let mut h = Harness::new();
    let (_root, host) = with_host(&mut h);
    let err = h.refused(shared_op(
        person(),
        "orphan",
        "https://example.com/unused.cfg",
        "default",
    ));
    assert!(matches!(err, DomainError::NoSharedHost { .. }), "{err}");
    assert!(err.to_string().contains("unused.cfg"));
    // Wrong software type: no host either.
    let err = h.refused(shared_op(person(), "orphan", FRONTEND, "default"));
    assert!(matches!(err, DomainError::NoSharedHost { .. }));
    // Pinned by our id, by slapproxy's `<computer>-<partition>`, or a wrong pin.
    let (c, p) = h.partition_of(host);
    for (title, pin) in [("a", host.to_string()), ("b", format!("{c}-{p}"))] {
        let id = match h.ok(with_sla(
            shared_op(person(), title, FRONTEND, "custom-frontend"),
            "instance_guid",
            &pin,
        )) {
            Reply::Instance { id, .. } => id,
            r => panic!("{r:?}"),
        };
        assert_eq!(h.instance(id).placement, Placement::Hosted { host });
    }
    let err = h.refused(with_sla(
        shared_op(person(), "c", FRONTEND, "custom-frontend"),
        "instance_guid",
        "SOFTINST-999",
    ));
    assert!(err.to_string().contains("SOFTINST-999"));
    // A shared title cannot be re-requested as a regular instance, nor the reverse.
    let err = h.refused(request_op(person(), "a"));
    assert!(matches!(err, DomainError::TitleTaken { .. }));
    let err = h.refused(shared_op(person(), "root", FRONTEND, "custom-frontend"));
    assert!(matches!(err, DomainError::TitleTaken { .. }));
}

#[test]
fn freeing_a_host_unplaces_its_shared_instances_until_rerequested() {
    let mut h = Harness::new();
    let (root, host) = with_host(&mut h);
    let op = shared_op(h.as_requester(root), "s", FRONTEND, "custom-frontend");
    let s = match h.ok(op.clone()) {
        Reply::Instance { id, .. } => id,
        r => panic!("{r:?}"),
    };
    let (c, p) = h.partition_of(host);
    h.ok(Op::RequestInstance {
        requester: person(),
        title: "frontend".into(),
        software_release: FRONTEND.into(),
        software_type: "custom-frontend".into(),
        state: Some("destroyed".into()),
        shared: false,
        parameters: Default::default(),
        sla: BTreeMap::new(),
    });
    h.ok(Op::DestroyedPartition {
        computer: c,
        partition: p,
    });
    assert_eq!(h.instance(s).placement, Placement::Unplaced);
    let err = h.refused(op);
    assert!(matches!(err, DomainError::NoSharedHost { .. }));
}

// ----- connection parameters ------------------------------------------------------------

#[test]
fn publishing_connection_bumps_the_direct_requester_only_on_change() {
    let mut h = Harness::new();
    h.format("COMP-1", 4);
    let root = h.request(person(), "root");
    let child = h.request(h.as_requester(root), "child");
    let grandchild = h.request(h.as_requester(child), "grandchild");
    let (c, p) = h.partition_of(grandchild);
    let publish = |conn| Op::SetConnection {
        computer: c.clone(),
        partition: p.clone(),
        shared: None,
        connection: conn,
    };
    let (t_root, t_child) = (timestamp(&h, root), timestamp(&h, child));
    h.ok(publish(connection(&[("url", "http://x")])));
    assert_eq!(
        h.instance(grandchild).connection["url"].as_deref(),
        Some("http://x")
    );
    assert!(
        timestamp(&h, child) > t_child,
        "direct requester reprocesses"
    );
    assert_eq!(timestamp(&h, root), t_root, "not further up");
    let t = timestamp(&h, child);
    h.ok(publish(connection(&[("url", "http://x")])));
    assert_eq!(timestamp(&h, child), t, "same parameters: no reprocessing");
    let err = h.refused(Op::SetConnection {
        computer: "COMP-1".into(),
        partition: "slappart3".into(),
        shared: None,
        connection: connection(&[]),
    });
    assert!(matches!(err, DomainError::PartitionFree { .. }));
}

#[test]
fn hosts_publish_for_their_shared_instances() {
    let mut h = Harness::new();
    let (root, host) = with_host(&mut h);
    let s = match h.ok(shared_op(
        h.as_requester(root),
        "my-shared",
        FRONTEND,
        "custom-frontend",
    )) {
        Reply::Instance { id, .. } => id,
        r => panic!("{r:?}"),
    };
    let (c, p) = h.partition_of(host);
    let t_root = timestamp(&h, root);
    h.ok(Op::SetConnection {
        computer: c.clone(),
        partition: p.clone(),
        shared: Some(s.to_string()),
        connection: connection(&[("site_url", "https://a.example.org")]),
    });
    assert_eq!(
        h.instance(s).connection["site_url"].as_deref(),
        Some("https://a.example.org")
    );
    assert!(
        timestamp(&h, root) > t_root,
        "the requester of the shared instance reprocesses"
    );
    // slapproxy's reference form is accepted too.
    h.ok(Op::SetConnection {
        computer: c.clone(),
        partition: p.clone(),
        shared: Some("root_my-shared".into()),
        connection: connection(&[("site_url", "https://b.example.org")]),
    });
    assert_eq!(
        h.instance(s).connection["site_url"].as_deref(),
        Some("https://b.example.org")
    );
    let err = h.refused(Op::SetConnection {
        computer: c,
        partition: p,
        shared: Some("SOFTINST-404".into()),
        connection: connection(&[]),
    });
    assert!(matches!(err, DomainError::UnknownSharedInstance { .. }));
}

// ----- status, bang, rename -------------------------------------------------------------

#[test]
fn status_reports_are_kept_as_access_status() {
    let mut h = Harness::new();
    h.format("COMP-1", 1);
    let id = h.request(person(), "root");
    let (c, p) = h.partition_of(id);
    let t = timestamp(&h, id);
    h.ok(Op::ReportStatus {
        computer: c.clone(),
        partition: p.clone(),
        shared: None,
        kind: StatusKind::Error,
        message: "buildout failed".into(),
    });
    let status = h.instance(id).access_status.clone().unwrap();
    assert_eq!(status.kind, StatusKind::Error);
    assert_eq!(status.message, "buildout failed");
    assert_eq!(
        timestamp(&h, id),
        t,
        "a status report is not a change to reprocess"
    );
    assert_eq!(
        h.state.computer("COMP-1").unwrap().last_contact,
        Some(Timestamp(h.now))
    );
}

#[test]
fn bang_reprocesses_the_whole_tree_and_computer_bang_the_whole_computer() {
    let mut h = Harness::new();
    h.format("COMP-1", 4);
    let root = h.request(person(), "root");
    let child = h.request(h.as_requester(root), "child");
    let other = h.request(person(), "other");
    let before: Vec<_> = [root, child, other]
        .iter()
        .map(|i| timestamp(&h, *i))
        .collect();
    let (c, p) = h.partition_of(child);
    assert_eq!(
        h.ok(Op::Bang {
            computer: c,
            partition: p,
            message: "please".into()
        }),
        Reply::Banged { instances: 2 }
    );
    assert!(timestamp(&h, root) > before[0]);
    assert!(timestamp(&h, child) > before[1]);
    assert_eq!(timestamp(&h, other), before[2]);
    assert_eq!(
        h.ok(Op::BangComputer {
            computer: "COMP-1".into(),
            message: String::new()
        }),
        Reply::Banged { instances: 3 }
    );
    assert!(timestamp(&h, other) > before[2]);
}

#[test]
fn rename_keeps_the_tree_and_refuses_taken_titles() {
    let mut h = Harness::new();
    h.format("COMP-1", 4);
    let root = h.request(person(), "root");
    let a = h.request(h.as_requester(root), "a");
    let b = h.request(h.as_requester(root), "b");
    let rename = |h: &Harness, id, name: &str| {
        let (computer, partition) = h.partition_of(id);
        Op::Rename {
            computer,
            partition,
            shared: None,
            new_name: name.into(),
        }
    };
    let err = h.refused(rename(&h, a, "b"));
    assert!(matches!(err, DomainError::TitleTaken { .. }));
    // Swapping titles takes three renames.
    h.ok(rename(&h, a, "tmp"));
    h.ok(rename(&h, b, "a"));
    h.ok(rename(&h, a, "b"));
    assert_eq!(h.state.member_by_title(root, "a"), Some(b));
    assert_eq!(h.state.member_by_title(root, "b"), Some(a));
    // A renamed root carries its tree.
    h.ok(rename(&h, root, "new-root"));
    assert_eq!(h.state.root_by_title("alice", "new-root"), Some(root));
    assert_eq!(h.state.root_by_title("alice", "root"), None);
    assert_eq!(h.instance(a).root, root);
    let pv = {
        let (c, p) = h.partition_of(a);
        h.state
            .partition_view(&c, &p)
            .unwrap()
            .root_title
            .map(str::to_string)
    };
    assert_eq!(pv.as_deref(), Some("new-root"));
    let err = h.refused(rename(&h, root, ""));
    assert!(err.to_string().contains("new_name"));
}

// ----- exactly once and time ------------------------------------------------------------

#[test]
fn a_retried_request_id_returns_the_first_outcome_and_changes_nothing() {
    let mut h = Harness::new();
    h.format("COMP-1", 2);
    let cmd = h.command(request_op(person(), "root"));
    let first = h.state.apply(&cmd);
    let snapshot = h.state.to_snapshot().unwrap();
    // Same id, later time (a retry after a leader change): same outcome, same bytes.
    let mut retry = cmd.clone();
    retry.at = Timestamp(cmd.at.micros() + 5_000_000);
    assert_eq!(h.state.apply(&retry), first);
    assert_eq!(h.state.to_snapshot().unwrap(), snapshot);
    // Errors are remembered too.
    let bad = h.command(request_op(person(), ""));
    let e1 = h.state.apply(&bad);
    assert!(e1.is_err());
    h.format("COMP-1", 2);
    assert_eq!(h.state.apply(&bad), e1);
}

#[test]
fn requests_older_than_the_remembered_window_are_refused_as_expired() {
    let mut h = Harness::new();
    h.format("COMP-1", 1);
    let first = h.command(Op::BangComputer {
        computer: "COMP-1".into(),
        message: String::new(),
    });
    let early = Command0::from(&first);
    h.state.apply(&first).unwrap();
    for _ in 0..slapos_domain::OUTCOMES_PER_CLIENT + 1 {
        h.ok(Op::BangComputer {
            computer: "COMP-1".into(),
            message: String::new(),
        });
    }
    let err = h.state.apply(&early.0).unwrap_err();
    assert!(matches!(err, DomainError::RequestExpired { .. }), "{err}");
}

struct Command0(slapos_domain::Command);
impl From<&slapos_domain::Command> for Command0 {
    fn from(c: &slapos_domain::Command) -> Self {
        Command0(c.clone())
    }
}

#[test]
fn time_never_runs_backwards_inside_the_state() {
    let mut h = Harness::new();
    h.format("COMP-1", 1);
    let id = h.request(person(), "root");
    let t = timestamp(&h, id);
    // A new leader whose clock is an hour behind bangs the tree.
    h.seq += 1;
    let cmd = slapos_domain::Command {
        request_id: slapos_domain::RequestId::new("test-client", h.seq),
        at: Timestamp(t.micros() - 3_600_000_000),
        op: Op::BangComputer {
            computer: "COMP-1".into(),
            message: String::new(),
        },
    };
    h.state.apply(&cmd).unwrap();
    assert!(timestamp(&h, id) > t);
}

#[test]
fn the_software_list_follows_supply_order_and_a_resupply_moves_to_the_end() {
    let mut h = Harness::new();
    h.format_bare("COMP-1", 1);
    let supply = |url: &str| Op::Supply {
        computer: "COMP-1".into(),
        url: url.into(),
        state: "available".into(),
    };
    for url in [
        "https://z.example/a.cfg",
        "https://a.example/b.cfg",
        "https://m.example/c.cfg",
    ] {
        h.ok(supply(url));
    }
    h.ok(supply("https://z.example/a.cfg"));
    let view = h.state.computer_view("COMP-1").unwrap();
    let urls: Vec<_> = view.software.iter().map(|s| s.url).collect();
    assert_eq!(
        urls,
        [
            "https://a.example/b.cfg",
            "https://m.example/c.cfg",
            "https://z.example/a.cfg"
        ]
    );
}

/// Partitions are entities of their own: a read about one instance carries its
/// computer's header and its own partition only, however large the computer; a format
/// that takes partitions away deletes their keys; the state rebuilds from the pieces.
#[test]
fn an_instance_read_carries_only_its_partition_and_dropped_partitions_are_deleted() {
    use slapos_domain::State;
    use slapos_domain::{KeyKind, Query};
    let mut h = Harness::new();
    h.format("COMP-BIG", 50);
    let _ = h.state.take_changes().unwrap();
    let id = h.request(person(), "one");
    let (computer, partition) = h.partition_of(id);
    // allocating writes the one partition that changed, not the whole computer
    let written: Vec<KeyKind> = h
        .state
        .take_changes()
        .unwrap()
        .iter()
        .filter_map(|(k, _)| KeyKind::of(k))
        .filter(|k| matches!(k, KeyKind::Partition | KeyKind::Computer))
        .collect();
    assert_eq!(written, vec![KeyKind::Partition]);
    let entries = h.state.query_entries(&Query::Instance { id }).unwrap();
    let partitions: Vec<&Vec<u8>> = entries
        .iter()
        .map(|(k, _)| k)
        .filter(|k| KeyKind::of(k) == Some(KeyKind::Partition))
        .collect();
    assert_eq!(partitions.len(), 1, "only the instance's partition");
    let partial = State::from_entries(entries.clone()).unwrap();
    let view = partial.instance_view(id).unwrap();
    assert_eq!(view.computer.map(|c| c.id.clone()), Some(computer.clone()));
    assert_eq!(view.partition.map(|p| p.id.clone()), Some(partition));
    // merged with the computer's own read, the whole computer is back, in format order
    let mut merged = entries;
    merged.extend(
        h.state
            .query_entries(&Query::Computer {
                computer: computer.clone(),
            })
            .unwrap(),
    );
    let whole = State::from_entries(merged).unwrap();
    let ids: Vec<String> = whole
        .computer(&computer)
        .unwrap()
        .partitions
        .iter()
        .map(|p| p.id.clone())
        .collect();
    let expected: Vec<String> = (0..50).map(|i| format!("slappart{i}")).collect();
    assert_eq!(ids, expected);
    // a reformat with fewer (free) partitions deletes the others' keys
    h.ok(format_op("COMP-BIG", 10));
    let changes = h.state.take_changes().unwrap();
    let deleted = changes
        .iter()
        .filter(|(k, v)| v.is_none() && KeyKind::of(k) == Some(KeyKind::Partition))
        .count();
    assert_eq!(deleted, 40);
}

/// A computer written before allocation scopes existed (`allocation_open`) reads back
/// with the matching scope: a group upgraded in place keeps its closed computers closed.
#[test]
fn a_computer_written_with_allocation_open_reads_back_as_a_scope() {
    let mut h = Harness::new();
    h.format("COMP-1", 1);
    for (flag, scope) in [
        ("false", slapos_domain::AllocationScope::Closed),
        ("true", slapos_domain::AllocationScope::Open),
    ] {
        // as an earlier release wrote it: JSON
        let entries: Vec<(Vec<u8>, Vec<u8>)> = h
            .state
            .query_entries_as(&slapos_domain::Query::All, slapos_domain::Encoding::Json)
            .unwrap()
            .into_iter()
            .map(|(k, v)| {
                if k.first() == Some(&b'c') {
                    let text = String::from_utf8(v).unwrap();
                    let old = text
                        .replace(
                            r#""allocation_scope":"open","#,
                            &format!(r#""allocation_open":{flag},"#),
                        )
                        .replace(r#""legacy_partition_keys":false,"#, "");
                    assert!(old.contains("allocation_open"), "{old}");
                    (k, old.into_bytes())
                } else {
                    (k, v)
                }
            })
            .collect();
        let state = slapos_domain::State::from_entries(entries).unwrap();
        let c = state.computer("COMP-1").unwrap();
        assert_eq!(c.allocation_scope, scope);
        assert!(!c.legacy_partition_keys);
    }
}

// ----- which node views a command changed -------------------------------------------------

#[test]
fn the_computers_whose_views_changed_are_named() {
    let mut h = Harness::new();
    h.format("COMP-1", 2);
    h.format("COMP-2", 2);
    let _ = h.state.take_changes().unwrap();
    let root = h.request(person(), "root");
    let (c1, p1) = h.partition_of(root);
    assert!(
        h.state.touched_computers().iter().eq([&c1]),
        "{:?}",
        h.state.touched_computers()
    );
    let _ = h.state.take_changes().unwrap();
    let other = if c1 == "COMP-1" { "COMP-2" } else { "COMP-1" };
    let child = match h.ok(with_sla(
        request_op(h.as_requester(root), "child"),
        "computer_guid",
        other,
    )) {
        Reply::Instance { id, .. } => id,
        r => panic!("{r:?}"),
    };
    assert_eq!(h.partition_of(child).0, other);
    let _ = h.state.take_changes().unwrap();
    // The child publishes: its own computer, and its requester's (reprocessed).
    let (c2, p2) = h.partition_of(child);
    h.ok(Op::SetConnection {
        computer: c2.clone(),
        partition: p2,
        shared: None,
        connection: connection(&[("url", "http://x")]),
    });
    let touched = h.state.touched_computers();
    assert!(
        touched.contains(&c2) && touched.contains(&c1),
        "{touched:?}"
    );
    let _ = h.state.take_changes().unwrap();
    // Renaming the root changes the title every member's view shows, wherever it runs.
    h.ok(Op::Rename {
        computer: c1.clone(),
        partition: p1,
        shared: None,
        new_name: "renamed".into(),
    });
    let touched = h.state.touched_computers();
    assert!(touched.contains(&c2), "the child's computer: {touched:?}");
    let _ = h.state.take_changes().unwrap();
    // A software report touches its computer only.
    h.ok(Op::ReportSoftware {
        computer: c2.clone(),
        url: SR.into(),
        report: SoftwareReport::Available,
    });
    assert_eq!(
        h.state.touched_computers().into_iter().collect::<Vec<_>>(),
        [c2]
    );
}

/// A state whose pairs disagree (a partition's value naming another partition, a
/// partition without its computer) is refused with the pair named, not loaded with a
/// partition silently dropped (found by the `raft_snapshot` fuzz target).
#[test]
fn pairs_that_disagree_are_refused_rather_than_loaded_with_a_loss() {
    use slapos_domain::{KeyKind, State};
    let mut h = Harness::new();
    h.format("COMP-1", 3);
    let entries = h.state.entries().unwrap();
    assert_eq!(
        State::from_entries(entries.clone())
            .unwrap()
            .entries()
            .unwrap(),
        entries
    );
    let key_of = |kind: KeyKind, tail: &str| {
        entries
            .iter()
            .position(|(k, _)| KeyKind::of(k) == Some(kind) && k.ends_with(tail.as_bytes()))
            .unwrap()
    };
    // slappart2's key holding slappart1's value
    let mut swapped = entries.clone();
    swapped[key_of(KeyKind::Partition, "slappart2")].1 =
        entries[key_of(KeyKind::Partition, "slappart1")].1.clone();
    let err = State::from_entries(swapped).unwrap_err();
    assert!(
        matches!(err, slapos_domain::PersistError::Inconsistent { .. }),
        "{err}"
    );
    assert!(err.to_string().contains("slappart2"), "{err}");
    // the partitions without their computer
    let mut orphans = entries.clone();
    orphans.remove(key_of(KeyKind::Computer, "COMP-1"));
    let err = State::from_entries(orphans).unwrap_err();
    assert!(
        err.to_string().contains("a partition of no computer"),
        "{err}"
    );
}
