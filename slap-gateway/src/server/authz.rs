//! Who may do what, when callers present certificates of the group's authority (the
//! gateway's `client_ca`). One table, here and in DESIGN.md ("Authorization"):
//!
//! | caller | may |
//! |---|---|
//! | computer `C` | read `C` and its partitions; report for them (format, software and instance states, connection parameters, bangs, destroyed, usage); request on behalf of its partitions (`X-SlapPartition` honoured only for its own) |
//! | partition `C/P` | read itself; report its own state, connection parameters and bangs; request in its own tree (as itself) |
//! | person `X` | request instance trees as `X`; supply software to computers `X` owns; register computers as owner `X` |
//! | admin (a person in `[slap] admins`) | anything |
//! | replica, gateway | nothing through SLAP |
//!
//! Everything else is 403 with the reason, and nothing reaches the master. Product lookups
//! and `getHateoasUrl` are open to any authenticated caller.

use master_node::ca::Identity;
use master_node::domain::Requester;
use master_node::Op;

use crate::slap::forms::{Query, SlapCall};
use crate::slap::SlapResponse;

/// The authenticated caller of one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// The certificate's identity (and whether a person is an admin), its serial (checked
    /// against the revoked set on every request, not only at the handshake) and its
    /// lifetime (a renewal never outlives what was granted).
    Identity {
        identity: Identity,
        admin: bool,
        serial: u128,
        lifetime_secs: u64,
    },
}

impl Caller {
    /// The person id, when the caller is a person.
    pub fn serial(&self) -> u128 {
        let Caller::Identity { serial, .. } = self;
        *serial
    }

    pub fn is_admin(&self) -> bool {
        let Caller::Identity { admin, .. } = self;
        *admin
    }

    pub fn person(&self) -> Option<&str> {
        match self {
            Caller::Identity {
                identity: Identity::Person(p),
                ..
            } => Some(p),
            _ => None,
        }
    }
}

/// What the check needs from the state (a person supplying software must own the
/// computer): answered by the caller of [`check`].
pub enum Needs {
    Nothing,
    OwnerOf(String),
}

fn forbidden(why: String) -> SlapResponse {
    SlapResponse::text(403, format!("forbidden: {why}"))
}

fn own_partition(identity: &Identity, computer: &str, partition: &str) -> bool {
    match identity {
        Identity::Computer(c) => c == computer,
        Identity::Partition {
            computer: c,
            partition: p,
        } => c == computer && p == partition,
        _ => false,
    }
}

/// Whether `caller` may make `call`. `Ok(Needs::OwnerOf(c))`: allowed if the person owns
/// computer `c` (the handler reads it and calls [`owner_check`]).
pub fn check(caller: &Caller, call: &SlapCall) -> Result<Needs, SlapResponse> {
    let Caller::Identity {
        identity, admin, ..
    } = caller;
    if *admin {
        return Ok(Needs::Nothing);
    }
    let who = identity.common_name();
    let refuse = |what: String| Err(forbidden(format!("{who} may not {what}")));
    match call {
        SlapCall::Answer(_) => Ok(Needs::Nothing),
        SlapCall::Query(q) => match q {
            Query::SoftwareReleaseList(_) | Query::HateoasUrl | Query::RunId => Ok(Needs::Nothing),
            Query::Computer { computer } | Query::ComputerStatus { computer } => {
                if matches!(identity, Identity::Computer(c) if c == computer) {
                    Ok(Needs::Nothing)
                } else {
                    refuse(format!("read computer {computer}"))
                }
            }
            Query::Partition {
                computer,
                partition,
            }
            | Query::PartitionCertificate {
                computer,
                partition,
            }
            | Query::PartitionStatus {
                computer,
                partition,
            }
            | Query::HostingSubscriptionIpList {
                computer,
                partition,
            } => {
                if own_partition(identity, computer, partition) {
                    Ok(Needs::Nothing)
                } else {
                    refuse(format!("read partition {partition} of {computer}"))
                }
            }
        },
        SlapCall::Write(w) => {
            write_rule(identity, &w.op).map_err(|what| forbidden(format!("{who} may not {what}")))
        }
    }
}

fn write_rule(identity: &Identity, op: &Op) -> Result<Needs, String> {
    let node_side = |computer: &str, partition: Option<&str>| -> Result<Needs, String> {
        let ok = match partition {
            Some(p) => own_partition(identity, computer, p),
            None => matches!(identity, Identity::Computer(c) if c == computer),
        };
        if ok {
            Ok(Needs::Nothing)
        } else {
            Err(match partition {
                Some(p) => format!("act for partition {p} of {computer}"),
                None => format!("act for computer {computer}"),
            })
        }
    };
    match op {
        Op::FormatComputer { computer, .. } | Op::ReportSoftware { computer, .. } => {
            node_side(computer, None)
        }
        Op::RecordUsage {
            computer, reporter, ..
        } => {
            if reporter.is_some() {
                return Err("post usage as a person through SLAP".into());
            }
            node_side(computer, None)
        }
        Op::BangComputer { computer, .. } => node_side(computer, None),
        Op::DestroyedPartition {
            computer,
            partition,
        } => {
            // The node reports its partitions wiped; a partition cannot free itself.
            if matches!(identity, Identity::Computer(c) if c == computer) {
                Ok(Needs::Nothing)
            } else {
                Err(format!("free partition {partition} of {computer}"))
            }
        }
        Op::ReportStatus {
            computer,
            partition,
            ..
        }
        | Op::SetConnection {
            computer,
            partition,
            ..
        }
        | Op::Bang {
            computer,
            partition,
            ..
        }
        | Op::Rename {
            computer,
            partition,
            ..
        } => node_side(computer, Some(partition)),
        Op::RequestInstance { requester, .. } => match (requester, identity) {
            (Requester::Person(p), Identity::Person(me)) if p == me => Ok(Needs::Nothing),
            (
                Requester::Partition {
                    computer,
                    partition,
                },
                _,
            ) => node_side(computer, Some(partition))
                .map_err(|_| format!("request on behalf of partition {partition} of {computer}")),
            _ => Err("request instances".into()),
        },
        Op::Supply { computer, .. } => match identity {
            Identity::Person(_) => Ok(Needs::OwnerOf(computer.clone())),
            _ => Err(format!("supply software to {computer}")),
        },
        Op::RegisterComputer { owner, .. } => match identity {
            Identity::Person(me) if me == owner => Ok(Needs::Nothing),
            _ => Err(format!("register computers for {owner}")),
        },
        Op::UpdateComputer { computer, .. } => match identity {
            Identity::Person(_) => Ok(Needs::OwnerOf(computer.clone())),
            _ => Err(format!("change computer {computer}")),
        },
        other => Err(format!("{} through SLAP", other.name())),
    }
}

/// The second half of a [`Needs::OwnerOf`] check.
pub fn owner_check(
    caller: &Caller,
    computer: &str,
    owner: Option<&str>,
) -> Result<(), SlapResponse> {
    let Caller::Identity { identity, .. } = caller;
    match (identity, owner) {
        (Identity::Person(me), Some(o)) if me == o => Ok(()),
        (_, None) => Err(SlapResponse::text(
            404,
            format!("unknown computer '{computer}'"),
        )),
        _ => Err(forbidden(format!(
            "{} does not own computer {computer}",
            identity.common_name()
        ))),
    }
}
