//! A small harness around the state machine: it stamps request ids and times the way a
//! proposer would, one second apart.
#![allow(dead_code)]

use slapos_domain::{
    AddressSpec, ComputerSpec, ParamValue, Params, PartitionSpec, Requester, StringParams,
};
use slapos_domain::{Command, InstanceId, Op, Outcome, Reply, RequestId, State, Timestamp};
use std::collections::BTreeMap;

pub const T0: u64 = 1_795_626_900_000_000;
pub const SR: &str = "https://example.com/software/demo/software.cfg";
pub const FRONTEND: &str = "https://example.com/software/frontend/software.cfg";

pub struct Harness {
    pub state: State,
    pub seq: u64,
    pub now: u64,
}

impl Harness {
    pub fn new() -> Self {
        Harness {
            state: State::new(),
            seq: 0,
            now: T0,
        }
    }

    pub fn command(&mut self, op: Op) -> Command {
        self.seq += 1;
        self.now += 1_000_000;
        Command {
            request_id: RequestId::new("test-client", self.seq),
            at: Timestamp(self.now),
            op,
        }
    }

    pub fn run(&mut self, op: Op) -> Outcome {
        let cmd = self.command(op);
        self.state.apply(&cmd)
    }

    /// Apply, insist on success and on the invariants.
    pub fn ok(&mut self, op: Op) -> Reply {
        let name = op.name();
        let reply = match self.run(op) {
            Ok(r) => r,
            Err(e) => panic!("{name} refused: {e}"),
        };
        if let Err(e) = self.state.check_invariants() {
            panic!("invariant broken after {name}: {e}");
        }
        reply
    }

    /// Apply, insist on refusal, and check that the domain did not change.
    pub fn refused(&mut self, op: Op) -> slapos_domain::DomainError {
        let before = domain_bytes(&self.state);
        let name = op.name();
        match self.run(op) {
            Ok(r) => panic!("{name} should have been refused, got {r:?}"),
            Err(e) => {
                assert_eq!(
                    before,
                    domain_bytes(&self.state),
                    "refused {name} changed the state"
                );
                e
            }
        }
    }

    /// Formats a computer and has its provider supply the releases the tests request
    /// ([`SR`], [`FRONTEND`]): instances are allocated only where their release is
    /// supplied.
    pub fn format(&mut self, computer: &str, partitions: usize) {
        self.ok(format_op(computer, partitions));
        for url in [SR, FRONTEND] {
            self.supply(computer, url);
        }
    }

    /// Formats a computer that supplies nothing.
    pub fn format_bare(&mut self, computer: &str, partitions: usize) {
        self.ok(format_op(computer, partitions));
    }

    pub fn supply(&mut self, computer: &str, url: &str) {
        self.ok(Op::Supply {
            computer: computer.into(),
            url: url.into(),
            state: "available".into(),
        });
    }

    pub fn request(&mut self, requester: Requester, title: &str) -> InstanceId {
        match self.ok(request_op(requester, title)) {
            Reply::Instance { id, .. } => id,
            other => panic!("unexpected reply {other:?}"),
        }
    }

    pub fn instance(&self, id: InstanceId) -> &slapos_domain::Instance {
        self.state.instance(id).expect("instance exists")
    }

    pub fn partition_of(&self, id: InstanceId) -> (String, String) {
        match &self.instance(id).placement {
            slapos_domain::Placement::Partition {
                computer,
                partition,
            } => (computer.clone(), partition.clone()),
            other => panic!("{id} is not on a partition: {other:?}"),
        }
    }

    pub fn as_requester(&self, id: InstanceId) -> Requester {
        let (computer, partition) = self.partition_of(id);
        Requester::Partition {
            computer,
            partition,
        }
    }
}

/// The domain entities of the state, without the bookkeeping every command touches
/// (sessions, remembered outcomes, clock and counters).
pub fn domain_bytes(state: &State) -> Vec<u8> {
    let mut out = Vec::new();
    for (k, v) in state.entries().expect("entries encode") {
        if slapos_domain::KeyKind::of(&k).is_some_and(|kind| kind.is_domain()) {
            out.extend_from_slice(&(k.len() as u32).to_be_bytes());
            out.extend_from_slice(&k);
            out.extend_from_slice(&(v.len() as u32).to_be_bytes());
            out.extend_from_slice(&v);
        }
    }
    out
}

pub fn person() -> Requester {
    Requester::Person("alice".into())
}

pub fn format_op(computer: &str, partitions: usize) -> Op {
    Op::FormatComputer {
        computer: computer.into(),
        spec: ComputerSpec {
            address: Some("10.0.1.1".into()),
            netmask: Some("255.255.255.0".into()),
            partitions: (0..partitions)
                .map(|i| PartitionSpec {
                    id: format!("slappart{i}"),
                    tap: Some(format!("slaptap{i}")),
                    addresses: vec![
                        AddressSpec {
                            addr: format!("10.0.1.{}", 10 + i),
                            netmask: "255.255.255.0".into(),
                            gateway: None,
                            network: None,
                        },
                        AddressSpec {
                            addr: format!("2001:db8:1::{:x}", 10 + i),
                            netmask: "ffff:ffff:ffff:ffff::".into(),
                            gateway: None,
                            network: None,
                        },
                    ],
                })
                .collect(),
        },
    }
}

pub fn request_op(requester: Requester, title: &str) -> Op {
    Op::RequestInstance {
        requester,
        title: title.into(),
        software_release: SR.into(),
        software_type: "default".into(),
        state: Some("started".into()),
        shared: false,
        parameters: Params::new(),
        sla: BTreeMap::new(),
    }
}

pub fn with_state(mut op: Op, new_state: Option<&str>) -> Op {
    if let Op::RequestInstance { state, .. } = &mut op {
        *state = new_state.map(str::to_string);
    }
    op
}

pub fn with_param(mut op: Op, key: &str, value: ParamValue) -> Op {
    if let Op::RequestInstance { parameters, .. } = &mut op {
        parameters.insert(key.into(), value);
    }
    op
}

pub fn with_sla(mut op: Op, key: &str, value: &str) -> Op {
    if let Op::RequestInstance { sla, .. } = &mut op {
        sla.insert(key.into(), value.into());
    }
    op
}

pub fn shared_op(requester: Requester, title: &str, software: &str, software_type: &str) -> Op {
    Op::RequestInstance {
        requester,
        title: title.into(),
        software_release: software.into(),
        software_type: software_type.into(),
        state: None,
        shared: true,
        parameters: Params::new(),
        sla: BTreeMap::new(),
    }
}

pub fn connection(pairs: &[(&str, &str)]) -> StringParams {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), Some(v.to_string())))
        .collect()
}
