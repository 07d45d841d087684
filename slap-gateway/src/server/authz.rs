//! Who may do what, when callers present certificates of the group's authority (the
//! gateway's `client_ca`). One table, here and in DESIGN.md ("Authorization"):
//!
//! | caller | may |
//! |---|---|
//! | computer `C` | read `C` and its partitions; report for them (format, software and instance states, connection parameters, bangs, destroyed, usage); request on behalf of its partitions (`X-SlapPartition` honoured only for its own) |
//! | partition `C/P` | read itself; report its own state, connection parameters and bangs; request in its own tree (as itself) |
//! | person `X` | request instance trees as `X` and read them; supply software to, and read, computers `X` owns; register computers as owner `X`; `X`'s own ledger |
//! | admin (a person the group records as one: `slapos user admin`) | anything |
//! | replica, gateway | nothing through SLAP |
//!
//! The portal (`slapos-portal`, mounted at `/portal/`) follows the same table: its
//! requests are `Op::RequestInstance` as the person ([`check_op`]), its reads are the
//! person's own ([`portal_reader`]), a person sets their own password
//! (`Op::SetPassword` with `by` = themselves), and only an admin sees the master group's
//! status ([`portal_operator`]).
//!
//! Everything else is 403 with the reason, and nothing reaches the master. Product lookups
//! and `getHateoasUrl` are open to any authenticated caller.
//!
//! JSON-RPC ([`check_jsonrpc`]) follows the same table: its writes become the same ops
//! and go through the same rules; an instance is read by its partition, the computer
//! carrying it, a partition of its tree and the person owning the tree
//! ([`instance_access`]); a computer's lists by the computer and its owner; the ledger by
//! persons only (each call already limits a person to their own invoices, movements,
//! computers and prices, `jsonrpc/ledger.rs`), and usage also by the computer itself.

use slapos_domain::Identity;
use slapos_domain::Requester;
use slapos_domain::{InstanceId, Op, State};

use crate::jsonrpc::{Call, Read};
use crate::slap::forms::{Query, SlapCall};
use crate::slap::SlapResponse;

/// The authenticated caller of one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// The certificate's identity (and whether a person has the group's admin rights,
    /// as the replicated state says at the time of the request), its serial (checked
    /// against the revoked set on every request, not only at the handshake), its
    /// lifetime, and the certificate itself (DER: what a renewal relays to the masters
    /// with the caller's proof).
    Identity {
        identity: Identity,
        admin: bool,
        serial: u128,
        lifetime_secs: u64,
        certificate: std::sync::Arc<[u8]>,
    },
}

impl Caller {
    /// The certificate's serial.
    pub fn serial(&self) -> u128 {
        let Caller::Identity { serial, .. } = self;
        *serial
    }

    pub fn is_admin(&self) -> bool {
        let Caller::Identity { admin, .. } = self;
        *admin
    }

    pub fn identity(&self) -> &Identity {
        let Caller::Identity { identity, .. } = self;
        identity
    }

    /// The person id, when the caller is a person.
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
        Op::UpdateComputer { computer, .. } | Op::SetComputerPolicy { computer, .. } => {
            match identity {
                Identity::Person(_) => Ok(Needs::OwnerOf(computer.clone())),
                _ => Err(format!("change computer {computer}")),
            }
        }
        // The portal: a person sets their own password (the domain also lets an admin
        // set anyone's, and checks `by` again).
        Op::SetPassword { person, by, .. } => match identity {
            Identity::Person(me) if by.as_deref() == Some(me.as_str()) => Ok(Needs::Nothing),
            _ => Err(format!("set the password of {person}")),
        },
        other => Err(format!("{} through SLAP", other.name())),
    }
}

/// The portal's reads (`slapos-portal`, `server/portal.rs`): a person reads their own
/// trees, the computers they provide and the releases offered to them, and nobody
/// else's: the owner of what is read is always the caller, never a name from the
/// request. Others are refused.
pub fn portal_reader(caller: &Caller) -> Result<&str, String> {
    match caller.person() {
        Some(p) => Ok(p),
        None => Err(format!(
            "{} may not use the portal: persons only",
            caller.identity().common_name()
        )),
    }
}

/// The portal's group page (the master group's members, lag, round trips and timers,
/// as `slapos cluster status` shows them): for an admin only. A person who is not one is
/// refused (and the portal shows them no such page).
pub fn portal_operator(caller: &Caller) -> Result<(), String> {
    if caller.is_admin() && caller.person().is_some() {
        Ok(())
    } else {
        Err(format!(
            "{} may not see the master group: admins only",
            caller.identity().common_name()
        ))
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

// ----- JSON-RPC ---------------------------------------------------------------------------

/// What a JSON-RPC call still needs checked once the master answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JsonNeeds {
    Nothing,
    /// Allowed if the caller (a person) owns this computer ([`owner_check`]).
    OwnerOf(String),
    /// A read of an instance: [`instance_access`] on the state read.
    Instance(InstanceId),
    /// A write on an instance: the op it becomes once located goes through the table
    /// ([`check_op`]).
    Located,
}

/// Whether `caller` may make the JSON-RPC `call`; `Err` is the reason of the 403. A
/// partition's `post software_instance` without the `X-SlapPartition` header requests as
/// that partition (the certificate says who it is), so `call` may be rewritten.
pub fn check_jsonrpc(caller: &Caller, call: &mut Call) -> Result<JsonNeeds, String> {
    let Caller::Identity {
        identity, admin, ..
    } = caller;
    if *admin {
        return Ok(JsonNeeds::Nothing);
    }
    let who = identity.common_name();
    let refuse = |what: String| Err(format!("{who} may not {what}"));
    let person = matches!(identity, Identity::Person(_));
    match call {
        Call::Read(Read::ComputerInstances(computer) | Read::ComputerSoftware(computer)) => {
            match identity {
                Identity::Computer(c) if c == computer => Ok(JsonNeeds::Nothing),
                Identity::Person(_) => Ok(JsonNeeds::OwnerOf(computer.clone())),
                _ => refuse(format!("read computer {computer}")),
            }
        }
        Call::Read(Read::Partition {
            computer,
            partition,
        }) => {
            if own_partition(identity, computer, partition) {
                Ok(JsonNeeds::Nothing)
            } else if person {
                Ok(JsonNeeds::OwnerOf(computer.clone()))
            } else {
                refuse(format!("read partition {partition} of {computer}"))
            }
        }
        Call::Read(Read::Hosted(id) | Read::Instance(id)) => Ok(JsonNeeds::Instance(*id)),
        Call::Read(Read::Ledger(_)) if person => Ok(JsonNeeds::Nothing),
        Call::Read(Read::Ledger(_)) => refuse("read the ledger".into()),
        // The owner is the caller (`parse` takes it from the context): a person lists and
        // reads their own trees; other identities own none.
        Call::Read(Read::Trees { .. } | Read::Tree { .. }) if person => Ok(JsonNeeds::Nothing),
        Call::Read(Read::Trees { .. } | Read::Tree { .. }) => {
            refuse("read instance trees (only persons have them)".into())
        }
        Call::InstanceWrite { .. } => Ok(JsonNeeds::Located),
        Call::Write { op, .. } | Call::Request(op) => {
            match (identity, &mut *op) {
                // A computer posts its own journal as a node does (no reporter).
                (
                    Identity::Computer(c),
                    Op::RecordUsage {
                        computer, reporter, ..
                    },
                ) if c == computer => {
                    *reporter = None;
                    return Ok(JsonNeeds::Nothing);
                }
                // A person's ledger writes: the call named them (`provider`, `reporter`,
                // `owner`) and the master checks what they touch is theirs.
                (Identity::Person(_), Op::RecordUsage { reporter, .. }) if reporter.is_some() => {
                    return Ok(JsonNeeds::Nothing);
                }
                (Identity::Person(me), Op::SetPrice { provider, .. }) if provider == me => {
                    return Ok(JsonNeeds::Nothing);
                }
                (
                    Identity::Partition {
                        computer,
                        partition,
                    },
                    Op::RequestInstance { requester, .. },
                ) if matches!(requester, Requester::Person(_)) => {
                    *requester = Requester::Partition {
                        computer: computer.clone(),
                        partition: partition.clone(),
                    };
                }
                _ => {}
            }
            check_op(caller, op)
        }
    }
}

/// The table's rule for one op (what an XML write or a located JSON-RPC instance write
/// becomes): `Err` is the reason of the 403.
pub fn check_op(caller: &Caller, op: &Op) -> Result<JsonNeeds, String> {
    let Caller::Identity {
        identity, admin, ..
    } = caller;
    if *admin {
        return Ok(JsonNeeds::Nothing);
    }
    match write_rule(identity, op) {
        Ok(Needs::Nothing) => Ok(JsonNeeds::Nothing),
        Ok(Needs::OwnerOf(c)) => Ok(JsonNeeds::OwnerOf(c)),
        Err(what) => Err(format!("{} may not {what}", identity.common_name())),
    }
}

/// Who may read instance `id` (`state` holds it, as [`crate::server::master::Masters::read_instance`]
/// reads it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Access {
    Allowed,
    Refused(String),
    /// Allowed if partition `partition` of `computer` (the caller) hosts an instance of
    /// tree `root`: the caller's partition is read to tell.
    IfInTree {
        computer: String,
        partition: String,
        root: InstanceId,
    },
}

pub fn instance_access(caller: &Caller, state: &State, id: InstanceId) -> Access {
    let Caller::Identity {
        identity, admin, ..
    } = caller;
    if *admin {
        return Access::Allowed;
    }
    let refused = || {
        Access::Refused(format!(
            "{} may not read instance {id}",
            identity.common_name()
        ))
    };
    let Ok(view) = state.instance_view(id) else {
        // Unknown: the read answers 404 itself; nothing about it is disclosed.
        return Access::Allowed;
    };
    let placed = |c: &str, p: &str| {
        view.computer.is_some_and(|x| x.id == c) && view.partition.is_some_and(|x| x.id == p)
    };
    match identity {
        Identity::Person(me) if *me == view.instance.owner => Access::Allowed,
        Identity::Computer(c) if view.computer.is_some_and(|x| x.id == *c) => Access::Allowed,
        Identity::Partition {
            computer,
            partition,
        } => {
            if placed(computer, partition) {
                Access::Allowed
            } else {
                Access::IfInTree {
                    computer: computer.clone(),
                    partition: partition.clone(),
                    root: view.instance.root,
                }
            }
        }
        _ => refused(),
    }
}

/// The second half of [`Access::IfInTree`]: `state` holds the caller's computer.
pub fn in_tree(state: &State, computer: &str, partition: &str, root: InstanceId) -> bool {
    state
        .computer(computer)
        .ok()
        .and_then(|c| c.partition(partition))
        .and_then(|p| p.instance)
        .and_then(|i| state.instance_view(i).ok())
        .is_some_and(|v| v.instance.root == root)
}

/// The request's caller: `None` without client certificates; `Some(None)` for a client
/// without a certificate; a revoked or expired certificate is refused here.
pub(super) fn caller_of(
    app: &super::app::App,
    parts: &axum::http::request::Parts,
) -> Result<Option<Option<Caller>>, SlapResponse> {
    let mut caller = parts.extensions.get::<Option<Caller>>().cloned();
    if let (Some(Some(c)), Some(revoked)) = (&caller, &app.revoked) {
        if revoked.refuses(c.serial()) {
            return Err(SlapResponse::text(403, "forbidden: certificate revoked"));
        }
    }
    if let Some(Some(Caller::Identity {
        identity: slapos_domain::Identity::Person(p),
        admin,
        ..
    })) = &mut caller
    {
        *admin = app.admins.contains(p);
    }
    Ok(caller)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jsonrpc::ledger::{LedgerRead, LedgerWhat};
    use slapos_domain::Timestamp;

    fn as_(identity: Identity) -> Caller {
        Caller::Identity {
            identity,
            admin: false,
            serial: 1,
            lifetime_secs: 3600,
            certificate: std::sync::Arc::from(Vec::new()),
        }
    }

    fn partition(c: &str, p: &str) -> Identity {
        Identity::Partition {
            computer: c.into(),
            partition: p.into(),
        }
    }

    fn request(requester: Requester) -> Call {
        Call::Request(Op::RequestInstance {
            requester,
            title: "child".into(),
            software_release: "https://example.com/sr.cfg".into(),
            software_type: "default".into(),
            state: None,
            shared: false,
            parameters: Default::default(),
            sla: Default::default(),
        })
    }

    #[test]
    fn a_partition_requests_as_itself_and_nobody_borrows_a_partition() {
        let me = as_(partition("COMP-A", "slappart1"));
        let mut call = request(Requester::Person("computer:COMP-A".into()));
        assert_eq!(check_jsonrpc(&me, &mut call), Ok(JsonNeeds::Nothing));
        assert_eq!(
            call,
            request(Requester::Partition {
                computer: "COMP-A".into(),
                partition: "slappart1".into()
            })
        );
        // The header naming another partition is refused, for a partition as for a person.
        let neighbour = || {
            request(Requester::Partition {
                computer: "COMP-A".into(),
                partition: "slappart2".into(),
            })
        };
        assert!(check_jsonrpc(&me, &mut neighbour()).is_err());
        assert!(check_jsonrpc(&as_(Identity::Person("bob".into())), &mut neighbour()).is_err());
        // The computer may, for its own partition only.
        let comp_a = as_(Identity::Computer("COMP-A".into()));
        assert_eq!(
            check_jsonrpc(&comp_a, &mut neighbour()),
            Ok(JsonNeeds::Nothing)
        );
        assert!(
            check_jsonrpc(&as_(Identity::Computer("COMP-B".into())), &mut neighbour()).is_err()
        );
        // A person requests as themselves; a computer without the header does not request.
        let alice = as_(Identity::Person("alice".into()));
        assert_eq!(
            check_jsonrpc(&alice, &mut request(Requester::Person("alice".into()))),
            Ok(JsonNeeds::Nothing)
        );
        assert!(check_jsonrpc(
            &comp_a,
            &mut request(Requester::Person("computer:COMP-A".into()))
        )
        .is_err());
    }

    #[test]
    fn the_ledger_is_for_persons_and_usage_also_for_the_computer_itself() {
        let ledger = || {
            Call::Read(Read::Ledger(LedgerRead {
                what: LedgerWhat::Invoice {
                    customer: "computer:COMP-A".into(),
                },
                from: Timestamp::default(),
                to: Timestamp::from_micros(1),
            }))
        };
        let comp_a = as_(Identity::Computer("COMP-A".into()));
        assert!(check_jsonrpc(&comp_a, &mut ledger()).is_err());
        assert!(check_jsonrpc(&as_(partition("COMP-A", "slappart0")), &mut ledger()).is_err());
        assert_eq!(
            check_jsonrpc(&as_(Identity::Person("alice".into())), &mut ledger()),
            Ok(JsonNeeds::Nothing)
        );
        let usage = |computer: &str, reporter: Option<&str>| Call::Write {
            op: Op::RecordUsage {
                computer: computer.into(),
                reporter: reporter.map(str::to_string),
                transactions: Vec::new(),
            },
            title: "Usage recorded",
        };
        // The gateway's parse names the caller as reporter; the computer posts as a node.
        let mut own = usage("COMP-A", Some("computer:COMP-A"));
        assert_eq!(check_jsonrpc(&comp_a, &mut own), Ok(JsonNeeds::Nothing));
        assert_eq!(own, usage("COMP-A", None));
        assert!(check_jsonrpc(&comp_a, &mut usage("COMP-B", Some("computer:COMP-A"))).is_err());
        // A person's journal keeps them as reporter (the master checks they own it).
        let mut hers = usage("COMP-B", Some("alice"));
        assert_eq!(
            check_jsonrpc(&as_(Identity::Person("alice".into())), &mut hers),
            Ok(JsonNeeds::Nothing)
        );
        assert_eq!(hers, usage("COMP-B", Some("alice")));
    }

    #[test]
    fn only_persons_list_and_read_their_trees() {
        let trees = || {
            Call::Read(Read::Trees {
                owner: "alice".into(),
            })
        };
        let tree = || {
            Call::Read(Read::Tree {
                owner: "alice".into(),
                title: "t".into(),
            })
        };
        let alice = as_(Identity::Person("alice".into()));
        assert_eq!(check_jsonrpc(&alice, &mut trees()), Ok(JsonNeeds::Nothing));
        assert_eq!(check_jsonrpc(&alice, &mut tree()), Ok(JsonNeeds::Nothing));
        for other in [
            Identity::Computer("COMP-A".into()),
            partition("COMP-A", "slappart0"),
            Identity::Gateway("gw".into()),
        ] {
            assert!(check_jsonrpc(&as_(other.clone()), &mut trees()).is_err());
            assert!(check_jsonrpc(&as_(other), &mut tree()).is_err());
        }
    }

    #[test]
    fn computer_lists_go_to_the_computer_and_its_owner() {
        let list = || Call::Read(Read::ComputerInstances("COMP-A".into()));
        assert_eq!(
            check_jsonrpc(&as_(Identity::Computer("COMP-A".into())), &mut list()),
            Ok(JsonNeeds::Nothing)
        );
        assert_eq!(
            check_jsonrpc(&as_(Identity::Person("alice".into())), &mut list()),
            Ok(JsonNeeds::OwnerOf("COMP-A".into()))
        );
        for other in [
            Identity::Computer("COMP-B".into()),
            partition("COMP-A", "slappart0"),
            Identity::Gateway("gw".into()),
            Identity::Replica(1),
        ] {
            assert!(check_jsonrpc(&as_(other), &mut list()).is_err());
        }
    }

    #[test]
    fn only_an_admin_sees_the_master_group() {
        let alice = as_(Identity::Person("alice".into()));
        assert!(portal_operator(&alice).is_err());
        assert!(portal_operator(&as_(Identity::Computer("COMP-1".into()))).is_err());
        let mut root = as_(Identity::Person("root".into()));
        let Caller::Identity { admin, .. } = &mut root;
        *admin = true;
        assert!(portal_operator(&root).is_ok());
    }
}
