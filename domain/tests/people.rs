//! Portal passwords and sessions in the replicated state: who may set a password, that
//! only hashes are kept, sessions opened and ended (on every replica alike), expired ones
//! forgotten, a new password ending older sessions, and all of it through persistence.

mod common;

use common::Harness;
use slapos_domain::{DomainError, Op, Query, State, Timestamp};

const HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA";

fn token(c: char) -> String {
    c.to_string().repeat(64)
}

#[test]
fn a_person_or_an_admin_sets_a_password_and_sessions_live_in_the_state() {
    let mut h = Harness::new();
    let set = |person: &str, by: Option<&str>, hash: Option<&str>| Op::SetPassword {
        person: person.into(),
        by: by.map(str::to_owned),
        hash: hash.map(str::to_owned),
    };
    h.ok(set("alice", Some("alice"), Some(HASH)));
    assert_eq!(h.state.password_hash("alice"), Some(HASH));
    // Bob is no admin: refused; an admin may.
    assert!(matches!(
        h.refused(set("alice", Some("bob"), None)),
        DomainError::NotOwner { .. }
    ));
    h.ok(Op::SetAdmin {
        person: "ops".into(),
        admin: true,
    });
    h.ok(set("bob", Some("ops"), Some(HASH)));
    // Only argon2id hashes, never a password in clear.
    assert!(matches!(
        h.refused(set("alice", Some("alice"), Some("hunter2"))),
        DomainError::InvalidArgument { .. }
    ));

    let now = h.now;
    let open = |c: char, person: &str, secs: u64| Op::OpenWebSession {
        hash: token(c),
        person: person.into(),
        expires_at: Timestamp(now + secs * 1_000_000),
    };
    h.ok(open('a', "alice", 3600));
    h.ok(open('b', "bob", 5));
    assert_eq!(h.state.web_session(&token('a')).unwrap().person, "alice");
    // A token's hash is used once; not a hash: refused; too long a session: refused.
    assert!(matches!(
        h.refused(open('a', "bob", 60)),
        DomainError::InvalidArgument { .. }
    ));
    assert!(matches!(
        h.refused(Op::OpenWebSession {
            hash: "x".into(),
            person: "bob".into(),
            expires_at: Timestamp(now + 60_000_000)
        }),
        DomainError::InvalidArgument { .. }
    ));
    assert!(matches!(
        h.refused(open('c', "bob", 31 * 24 * 3600)),
        DomainError::InvalidArgument { .. }
    ));

    // Through persistence: the rebuilt state answers the same, a person's read carries
    // their hash, a session's read its session.
    let rebuilt = State::from_entries(h.state.entries().unwrap()).unwrap();
    assert_eq!(rebuilt, h.state);
    let read = State::from_entries(
        h.state
            .query_entries(&Query::Person {
                person: "alice".into(),
            })
            .unwrap(),
    )
    .unwrap();
    assert_eq!(read.password_hash("alice"), Some(HASH));
    assert_eq!(read.password_hash("bob"), None);
    let read = State::from_entries(
        h.state
            .query_entries(&Query::WebSession { hash: token('a') })
            .unwrap(),
    )
    .unwrap();
    assert_eq!(read.web_session(&token('a')).unwrap().person, "alice");
    assert!(read.web_session(&token('b')).is_none());

    // Sign-out ends it (twice is no error).
    h.ok(Op::EndWebSession { hash: token('a') });
    h.ok(Op::EndWebSession { hash: token('a') });
    assert!(h.state.web_session(&token('a')).is_none());

    // Bob's session expired (5 s): the next sign-in forgets it.
    h.now += 10_000_000;
    let later = h.now;
    h.ok(Op::OpenWebSession {
        hash: token('d'),
        person: "alice".into(),
        expires_at: Timestamp(later + 3_600_000_000),
    });
    assert!(h.state.web_session(&token('b')).is_none());
    // A new password ends the person's sessions.
    h.ok(set("alice", Some("alice"), Some(HASH)));
    assert!(h.state.web_session(&token('d')).is_none());
}

/// The portal's servers page reads a provider's computers: theirs only, with every
/// partition (which instance holds it) and software row, and no instance.
#[test]
fn a_providers_computers_are_read_with_partitions_and_software_and_nothing_else() {
    let mut h = Harness::new();
    for (computer, owner) in [("COMP-A", "prov"), ("COMP-B", "prov"), ("COMP-C", "other")] {
        h.ok(Op::RegisterComputer {
            computer: computer.into(),
            title: format!("<b>{computer}</b>"),
            owner: owner.into(),
            region: Some("eu".into()),
            network: None,
            attributes: Default::default(),
        });
        h.format(computer, 3);
    }
    let id = h.request(
        slapos_domain::Requester::Person("alice".into()),
        "a service",
    );
    let (on, _) = h.partition_of(id);
    let read = State::from_entries(
        h.state
            .query_entries(&Query::Computers {
                owner: "prov".into(),
            })
            .unwrap(),
    )
    .unwrap();
    let ids: Vec<&str> = read.computers().map(|c| c.id.as_str()).collect();
    assert_eq!(ids, ["COMP-A", "COMP-B"]);
    assert_eq!(read.instances().count(), 0);
    for c in ["COMP-A", "COMP-B"] {
        let v = read.computer_view(c).unwrap();
        assert_eq!(v.partitions.len(), 3);
        assert_eq!(v.software.len(), 2, "{c}");
        let used = v
            .partitions
            .iter()
            .filter(|p| p.partition.instance.is_some())
            .count();
        assert_eq!(used, usize::from(on == c), "{c}");
    }
    let none = State::from_entries(
        h.state
            .query_entries(&Query::Computers {
                owner: "nobody".into(),
            })
            .unwrap(),
    )
    .unwrap();
    assert_eq!(none.computers().count(), 0);
}

/// The portal's services list reads a person's roots alone: no member, no computer.
#[test]
fn a_persons_roots_are_read_alone() {
    let mut h = Harness::new();
    h.ok(Op::RegisterComputer {
        computer: "COMP-A".into(),
        title: "a".into(),
        owner: "prov".into(),
        region: None,
        network: None,
        attributes: Default::default(),
    });
    h.format("COMP-A", 4);
    let alice = slapos_domain::Requester::Person("alice".into());
    let b = h.request(alice.clone(), "b service");
    let a = h.request(alice, "a service");
    h.request(slapos_domain::Requester::Person("bob".into()), "his");
    let read = State::from_entries(
        h.state
            .query_entries(&Query::Roots {
                owner: "alice".into(),
            })
            .unwrap(),
    )
    .unwrap();
    let roots: Vec<_> = read.roots_of("alice").collect();
    assert_eq!(roots, [("a service", a), ("b service", b)]);
    assert_eq!(read.instances().count(), 2);
    assert_eq!(read.computers().count(), 0);
    assert_eq!(read.roots_of("bob").count(), 0);
}
