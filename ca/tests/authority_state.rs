//! The authority as the leader uses it with the replicated state: loaded from the
//! material the state keeps, it signs, and the group records what it issued.

use slapos_ca::{new_key_and_csr, Authority, Identity, IssueRequest};
use slapos_domain::{Command, Op, RequestId, State, Timestamp};
use std::time::{Duration, SystemTime};

fn apply(state: &mut State, seq: u64, op: Op) {
    let command = Command {
        request_id: RequestId::new("test", seq),
        at: Timestamp::from_secs(1_795_626_900 + seq),
        op,
    };
    state.apply(&command).expect("applied");
}

#[test]
fn an_installed_authority_issues_what_the_group_records() {
    let mut state = State::new();
    let (_, m) = Authority::create("g", SystemTime::now(), 10).unwrap();
    apply(&mut state, 1, Op::InstallAuthority { material: m });
    // What the leader does: load the authority from the state, sign, record.
    let ca = Authority::load(state.authority().unwrap()).unwrap();
    let identity = Identity::Computer("COMP-9".into());
    let (_key, csr) = new_key_and_csr(&identity).unwrap();
    let issued = ca
        .issue(&IssueRequest {
            csr_pem: &csr,
            identity: identity.clone(),
            serial: 0x1234,
            not_before: SystemTime::now(),
            not_after: SystemTime::now() + Duration::from_secs(86400),
            dns_names: vec![],
            ip_addresses: vec![],
        })
        .unwrap();
    apply(
        &mut state,
        2,
        Op::RecordCertificate {
            serial: format!("{:x}", issued.serial),
            identity: identity.clone(),
            not_after: Timestamp(u64::MAX / 2),
            pair: None,
        },
    );
    assert_eq!(state.certificate(0x1234).unwrap().identity, identity);
}
