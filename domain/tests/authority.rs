//! The certificate authority in the replicated state: installed once, certificates
//! recorded once, revocation by serial or by identity, everything surviving persistence,
//! and the authority's key never leaving through a read.

mod common;

use common::Harness;
use slapos_domain::{CaMaterial, Identity};
use slapos_domain::{DomainError, Query};
use slapos_domain::{Op, Reply, State, Timestamp};

/// A distinct authority's material each time: the state keeps and compares it, never
/// reads it (signing is `slapos-ca`'s, tested there).
fn material() -> CaMaterial {
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    CaMaterial {
        cert_pem: format!("-----BEGIN CERTIFICATE-----\nca {n}\n-----END CERTIFICATE-----\n"),
        key_pem: format!("-----BEGIN PRIVATE KEY-----\nkey {n}\n-----END PRIVATE KEY-----\n"),
        group: format!("group-{n}"),
    }
}

fn record(serial: &str, identity: Identity) -> Op {
    Op::RecordCertificate {
        serial: serial.into(),
        identity,
        not_after: Timestamp(u64::MAX / 2),
        pair: None,
    }
}

#[test]
fn the_authority_is_installed_once() {
    let mut h = Harness::new();
    let m = material();
    assert!(matches!(
        h.refused(record("1f", Identity::Computer("C".into()))),
        DomainError::NoAuthority
    ));
    h.ok(Op::InstallAuthority {
        material: m.clone(),
    });
    // The same again (a retried init) is fine; another authority is refused.
    h.ok(Op::InstallAuthority {
        material: m.clone(),
    });
    assert!(matches!(
        h.refused(Op::InstallAuthority {
            material: material()
        }),
        DomainError::AuthorityInstalled
    ));
    assert_eq!(h.state.authority(), Some(&m));
}

#[test]
fn certificates_are_recorded_once_and_revoked_by_serial_or_identity() {
    let mut h = Harness::new();
    h.ok(Op::InstallAuthority {
        material: material(),
    });
    let part = Identity::Partition {
        computer: "COMP-1".into(),
        partition: "slappart0".into(),
    };
    h.ok(record("a1", part.clone()));
    h.ok(record("a2", part.clone()));
    h.ok(record("b1", Identity::Computer("COMP-1".into())));
    assert!(matches!(
        h.refused(record("a1", Identity::Person("p".into()))),
        DomainError::CertificateKnown(_)
    ));
    for bad in ["", "0", "xyz", &"f".repeat(33)] {
        assert!(matches!(
            h.refused(record(bad, Identity::Person("p".into()))),
            DomainError::InvalidArgument { .. }
        ));
    }
    assert!(matches!(
        h.refused(record("c1", Identity::Computer("a/b".into()))),
        DomainError::InvalidArgument { .. }
    ));
    // A destroyed partition: every certificate of its identity goes at once.
    assert_eq!(
        h.ok(Op::Revoke {
            serial: None,
            identity: Some(part.clone())
        }),
        Reply::Revoked { count: 2 }
    );
    assert_eq!(h.state.revoked_serials(), vec![0xa1, 0xa2]);
    // Revocation is final and counted once.
    assert_eq!(
        h.ok(Op::Revoke {
            serial: None,
            identity: Some(part)
        }),
        Reply::Revoked { count: 0 }
    );
    assert_eq!(
        h.ok(Op::Revoke {
            serial: Some("b1".into()),
            identity: None
        }),
        Reply::Revoked { count: 1 }
    );
    assert!(h.state.certificate(0xb1).unwrap().revoked_at.is_some());
    assert!(matches!(
        h.refused(Op::Revoke {
            serial: None,
            identity: None
        }),
        DomainError::InvalidArgument { .. }
    ));
}

#[test]
fn the_authority_survives_persistence_and_never_leaves_through_a_read() {
    let mut h = Harness::new();
    let m = material();
    h.ok(Op::InstallAuthority {
        material: m.clone(),
    });
    h.ok(record("77", Identity::Person("alice".into())));
    h.ok(Op::Revoke {
        serial: Some("77".into()),
        identity: None,
    });
    let mut disk = std::collections::BTreeMap::new();
    for (k, v) in h.state.take_changes().unwrap() {
        if let Some(v) = v {
            disk.insert(k, v);
        }
    }
    let restored = State::from_entries(disk.iter().map(|(k, v)| (k.clone(), v.clone()))).unwrap();
    assert_eq!(restored.authority(), Some(&m));
    assert_eq!(restored.revoked_serials(), vec![0x77]);
    let from_snapshot = State::from_snapshot(&h.state.to_snapshot().unwrap()).unwrap();
    assert_eq!(from_snapshot.authority(), Some(&m));
    // A read of everything (what a gateway could ask) has the records, not the key.
    let read = h.state.query_entries(&Query::All).unwrap();
    let reader = State::from_entries(read).unwrap();
    assert_eq!(reader.authority(), None);
    assert_eq!(reader.revoked_serials(), vec![0x77]);
}

#[test]
fn a_freed_partition_s_certificates_are_revoked() {
    use slapos_domain::Requester;
    let mut h = Harness::new();
    h.ok(Op::InstallAuthority {
        material: material(),
    });
    h.format("COMP-1", 2);
    let id = h.request(Requester::Person("alice".into()), "tree");
    let (computer, partition) = h.partition_of(id);
    let identity = Identity::Partition {
        computer: computer.clone(),
        partition: partition.clone(),
    };
    h.ok(record("5", identity.clone()));
    h.ok(record("6", Identity::Computer(computer.clone())));
    h.ok(Op::RequestInstance {
        requester: Requester::Person("alice".into()),
        title: "tree".into(),
        software_release: common::SR.into(),
        software_type: "default".into(),
        state: Some("destroyed".into()),
        shared: false,
        parameters: Default::default(),
        sla: Default::default(),
    });
    assert!(
        h.state.revoked_serials().is_empty(),
        "revoked before the node freed it"
    );
    assert_eq!(
        h.ok(Op::DestroyedPartition {
            computer: computer.clone(),
            partition
        }),
        Reply::PartitionFreed
    );
    assert_eq!(
        h.state.revoked_serials(),
        vec![5],
        "only the partition's certificate"
    );
}

#[test]
fn registration_tokens_work_once_before_they_expire() {
    let mut h = Harness::new();
    let hash = |c: char| c.to_string().repeat(64);
    let later = Timestamp(common::T0 + 3_600_000_000);
    h.ok(Op::CreateToken {
        hash: hash('a'),
        owner: "alice".into(),
        computer: "COMP-T".into(),
        expires_at: later,
        server: None,
    });
    assert_eq!(
        h.ok(Op::ConsumeToken { hash: hash('a') }),
        Reply::Registered {
            computer: "COMP-T".into(),
            owner: "alice".into()
        }
    );
    assert_eq!(h.state.computer_owner("COMP-T").as_deref(), Some("alice"));
    assert!(matches!(
        h.refused(Op::ConsumeToken { hash: hash('a') }),
        DomainError::BadToken(_)
    ));
    assert!(matches!(
        h.refused(Op::ConsumeToken { hash: hash('b') }),
        DomainError::BadToken(_)
    ));
    // Nobody makes tokens for someone else's computer.
    assert!(matches!(
        h.refused(Op::CreateToken {
            hash: hash('c'),
            owner: "bob".into(),
            computer: "COMP-T".into(),
            expires_at: later,
            server: None,
        }),
        DomainError::NotOwner { .. }
    ));
    // Expired tokens are refused.
    h.ok(Op::CreateToken {
        hash: hash('d'),
        owner: "bob".into(),
        computer: "COMP-U".into(),
        expires_at: Timestamp(h.now + 2_000_000),
        server: None,
    });
    h.ok(Op::CloseBooks {
        until: Timestamp(common::T0),
    });
    h.now += 10_000_000;
    assert!(matches!(
        h.refused(Op::ConsumeToken { hash: hash('d') }),
        DomainError::BadToken(_)
    ));
    // Never read out.
    let reader = State::from_entries(h.state.query_entries(&Query::All).unwrap()).unwrap();
    assert_eq!(reader.computer_owner("COMP-T").as_deref(), Some("alice"));
    let keys: Vec<Vec<u8>> = h
        .state
        .query_entries(&Query::All)
        .unwrap()
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    assert!(keys.iter().all(|k| k[0] != b'g'), "a read carried tokens");
}

#[test]
fn a_removed_computer_takes_its_certificates_with_it() {
    use slapos_domain::Requester;
    let mut h = Harness::new();
    h.ok(Op::InstallAuthority {
        material: material(),
    });
    h.format("COMP-1", 2);
    h.format("COMP-2", 1);
    h.ok(record("1", Identity::Computer("COMP-1".into())));
    h.ok(record(
        "2",
        Identity::Partition {
            computer: "COMP-1".into(),
            partition: "slappart1".into(),
        },
    ));
    h.ok(record("3", Identity::Computer("COMP-2".into())));
    // Not while it hosts an instance.
    let id = h.request(Requester::Person("alice".into()), "tree");
    let (busy, _) = h.partition_of(id);
    assert!(matches!(
        h.refused(Op::RemoveComputer {
            computer: busy.clone()
        }),
        DomainError::PartitionsInUse { .. }
    ));
    let free = if busy == "COMP-1" { "COMP-2" } else { "COMP-1" };
    let reply = h.ok(Op::RemoveComputer {
        computer: free.into(),
    });
    let expected: Vec<u128> = if free == "COMP-1" {
        vec![1, 2]
    } else {
        vec![3]
    };
    assert_eq!(
        reply,
        Reply::Revoked {
            count: expected.len()
        }
    );
    assert_eq!(h.state.revoked_serials(), expected);
    assert_eq!(h.state.computer_owner(free), None, "the computer is gone");
    assert!(matches!(
        h.refused(Op::RemoveComputer {
            computer: free.into()
        }),
        DomainError::UnknownComputer(_)
    ));
    // Gone from storage too.
    let mut disk = std::collections::BTreeMap::new();
    for (k, v) in h.state.take_changes().unwrap() {
        match v {
            Some(v) => disk.insert(k, v),
            None => disk.remove(&k),
        };
    }
    let restored = State::from_entries(disk).unwrap();
    assert_eq!(restored.computer_owner(free), None);
    assert_eq!(restored.revoked_serials(), expected);
}

#[test]
fn ended_certificates_and_tokens_are_forgotten_a_day_later_and_live_ones_kept() {
    let mut h = Harness::new();
    h.ok(Op::InstallAuthority {
        material: material(),
    });
    let ends = |h: &Harness, secs: u64| Timestamp(h.now + secs * 1_000_000);
    let part = Identity::Partition {
        computer: "COMP-1".into(),
        partition: "slappart0".into(),
    };
    // A short-lived certificate, revoked; a long-lived one; a token that expires soon.
    let short = ends(&h, 60);
    h.ok(Op::RecordCertificate {
        serial: "a1".into(),
        identity: part.clone(),
        not_after: short,
        pair: None,
    });
    h.ok(Op::Revoke {
        serial: Some("a1".into()),
        identity: None,
    });
    h.ok(record("b1", part.clone()));
    let token_ends = ends(&h, 60);
    h.ok(Op::CreateToken {
        hash: "ab".repeat(32),
        owner: "alice".into(),
        computer: "COMP-2".into(),
        expires_at: token_ends,
        server: None,
    });
    assert_eq!(h.state.revoked_serials(), vec![0xa1]);
    let hash = "ab".repeat(32);
    assert!(h.state.token(&hash).is_some());
    // Ended, but less than a day ago: still known (clocks may be a little apart).
    h.now = short.0 + slapos_domain::FORGET_AFTER / 2;
    h.ok(record("c1", Identity::Person("p".into())));
    assert!(h.state.certificate(0xa1).is_some());
    assert!(h.state.token(&hash).is_some());
    // More than a day after: the next record forgets it, and the token, not the others.
    h.now = token_ends.0.max(short.0) + slapos_domain::FORGET_AFTER + 1_000_000;
    h.ok(record("d1", Identity::Person("p".into())));
    assert!(h.state.certificate(0xa1).is_none());
    assert_eq!(h.state.revoked_serials(), Vec::<u128>::new());
    assert!(h.state.token(&hash).is_none());
    for live in [0xb1, 0xc1, 0xd1] {
        assert!(
            h.state.certificate(live).is_some(),
            "{live:x} was forgotten"
        );
    }
    let read = h.state.query_entries(&Query::All).unwrap();
    let reader = State::from_entries(read).unwrap();
    assert!(reader.certificate(0xa1).is_none());
    // The forgotten token is gone from what persists too.
    let mut disk = std::collections::BTreeMap::new();
    for (k, v) in h.state.take_changes().unwrap() {
        match v {
            Some(v) => disk.insert(k, v),
            None => disk.remove(&k),
        };
    }
    let restored = State::from_entries(disk).unwrap();
    assert!(restored.certificate(0xa1).is_none());
    assert!(restored.certificate(0xb1).is_some());
    assert!(restored.token(&hash).is_none());
}

#[test]
fn a_server_token_grants_its_identity_once_and_registers_no_computer() {
    let mut h = Harness::new();
    h.ok(Op::InstallAuthority {
        material: material(),
    });
    let grant = slapos_domain::ServerGrant {
        identity: Identity::Replica(4),
        dns_names: vec!["r4.example".into()],
        ip_addresses: vec!["2001:db8::4".into()],
    };
    let expires_at = Timestamp(h.now + 3_600_000_000);
    let create = |hash: &str, grant: slapos_domain::ServerGrant, computer: &str| Op::CreateToken {
        hash: hash.into(),
        owner: "operator".into(),
        computer: computer.into(),
        expires_at,
        server: Some(grant),
    };
    let hash = "cd".repeat(32);
    h.ok(create(&hash, grant.clone(), ""));
    assert_eq!(
        h.ok(Op::ConsumeToken { hash: hash.clone() }),
        Reply::Enrolled {
            grant: grant.clone()
        }
    );
    assert!(matches!(
        h.refused(Op::ConsumeToken { hash }),
        DomainError::BadToken(_)
    ));
    // No computer came of it.
    assert!(h.state.computer_owner("").is_none());
    // Only servers, with real addresses, and no computer named.
    for (bad, computer) in [
        (
            slapos_domain::ServerGrant {
                identity: Identity::Computer("C".into()),
                ..grant.clone()
            },
            "",
        ),
        (
            slapos_domain::ServerGrant {
                ip_addresses: vec!["not-an-ip".into()],
                ..grant.clone()
            },
            "",
        ),
        (grant.clone(), "COMP-1"),
    ] {
        assert!(matches!(
            h.refused(create(&"ef".repeat(32), bad, computer)),
            DomainError::InvalidArgument { .. }
        ));
    }
}

/// A refused command moves nothing, the clock included: a gateway's refused command
/// stamped two years ahead (finding 5 of the security review) cannot make a revoked
/// certificate's record look ended and be forgotten, which would admit it again.
#[test]
fn a_refused_command_from_the_future_moves_no_clock_and_forgets_no_revocation() {
    let mut h = Harness::new();
    h.ok(Op::InstallAuthority {
        material: material(),
    });
    let gw = Identity::Gateway("gw1".into());
    h.ok(Op::RecordCertificate {
        serial: "a1".into(),
        identity: gw.clone(),
        not_after: Timestamp(h.now + 365 * 86_400 * 1_000_000),
        pair: None,
    });
    h.ok(Op::Revoke {
        serial: Some("a1".into()),
        identity: None,
    });
    let clock = h.state.clock();
    let two_years = 2 * 365 * 86_400 * 1_000_000;
    h.seq += 1;
    let refused = slapos_domain::Command {
        request_id: slapos_domain::RequestId::new("gateway:gw1/lane", h.seq),
        at: Timestamp(h.now + two_years),
        op: Op::CreateToken {
            hash: "not hex".into(),
            owner: "alice".into(),
            computer: "COMP-1".into(),
            expires_at: Timestamp(h.now + two_years + 1),
            server: None,
        },
    };
    assert!(h.state.apply(&refused).is_err());
    assert_eq!(h.state.clock(), clock, "a refused command moved the clock");
    // The next certificate recorded prunes what ended a day before the clock: the
    // revoked one is still far from its end.
    h.ok(record("b1", Identity::Person("p".into())));
    assert_eq!(h.state.revoked_serials(), vec![0xa1]);
}

/// A replica that leaves takes its certificates with it, and those of the gateway that
/// served beside it (`gateway:r<id>`): a retired seed's keys must not outlive it.
#[test]
fn retiring_a_replica_revokes_its_and_its_gateways_certificates() {
    let mut h = Harness::new();
    h.ok(Op::InstallAuthority {
        material: material(),
    });
    h.ok(record("a1", Identity::Replica(1)));
    h.ok(record("a2", Identity::Gateway("r1".into())));
    h.ok(record("a3", Identity::Replica(2)));
    h.ok(record("a4", Identity::Gateway("r2".into())));
    h.ok(Op::RetireReplica { id: 1 });
    assert_eq!(h.state.revoked_serials(), vec![0xa1, 0xa2]);
    assert!(h.state.is_retired_replica(1));
}

/// Admin rights are data of the group, granted and taken back by an operator.
#[test]
fn admins_are_recorded_and_read_with_the_certificates() {
    let mut h = Harness::new();
    h.ok(Op::SetAdmin {
        person: "root".into(),
        admin: true,
    });
    assert!(h.state.is_admin("root"));
    assert!(matches!(
        h.refused(Op::SetAdmin {
            person: "bad/name".into(),
            admin: true
        }),
        DomainError::InvalidArgument { .. }
    ));
    let read = h.state.query_entries(&Query::Certificates).unwrap();
    let reader = State::from_entries(read).unwrap();
    assert_eq!(reader.admins().collect::<Vec<_>>(), vec!["root"]);
    h.ok(Op::SetAdmin {
        person: "root".into(),
        admin: false,
    });
    assert!(!h.state.is_admin("root"));
}
