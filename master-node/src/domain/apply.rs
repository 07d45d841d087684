//! Deterministic application of commands.
//!
//! Each operation validates everything it needs before its first mutation, so a refused
//! command leaves the state untouched. Time comes from the command (through the state's
//! monotonic clock), ids from counters in the state.

use super::alloc::{allocate, declared_attributes, SlaFilter};
use super::command::{Command, ComputerSpec, Op, Outcome, Reply, Requester, SoftwareReport};
use super::error::DomainError;
use super::ids::{InstanceId, Timestamp};
use super::param::{stringify, Params, StringParams};
use super::state::{
    AccessStatus, Address, Computer, Instance, Partition, Placement, RequestedState, Session,
    SoftwareInstallation, SoftwareState, State, StatusKind,
};
use std::collections::{BTreeMap, BTreeSet};

/// Outcomes remembered per client. A client retries only its latest few requests.
pub const OUTCOMES_PER_CLIENT: usize = 256;
/// Sessions idle longer than this (in command time) are forgotten.
pub const SESSION_TTL_MICROS: u64 = 24 * 3600 * 1_000_000;
/// Sessions are pruned every this many applied commands.
const PRUNE_EVERY: u64 = 1024;
/// Longest accepted id or title, in bytes.
const MAX_NAME: usize = 255;
/// Longest accepted software release URL, in bytes.
const MAX_URL: usize = 4096;

fn check_name(field: &str, value: &str) -> Result<(), DomainError> {
    if value.is_empty() {
        return Err(DomainError::invalid(field, "must not be empty"));
    }
    if value.len() > MAX_NAME {
        return Err(DomainError::invalid(
            field,
            format!("{} bytes, over the limit of {MAX_NAME}", value.len()),
        ));
    }
    if value.chars().any(char::is_control) {
        return Err(DomainError::invalid(field, "contains control characters"));
    }
    Ok(())
}

/// A person's id as their certificate names it (`person:<id>`).
fn check_person(field: &str, value: &str) -> Result<(), DomainError> {
    crate::ca::Identity::Person(value.to_owned())
        .check()
        .map_err(|_| {
            DomainError::invalid(
                field,
                format!("'{value}' is not a person's id (letters, digits and . _ @ + -)"),
            )
        })
}

fn check_url(value: &str) -> Result<(), DomainError> {
    if value.is_empty() {
        return Err(DomainError::invalid(
            "software_release",
            "must not be empty",
        ));
    }
    if value.len() > MAX_URL {
        return Err(DomainError::invalid(
            "software_release",
            format!("{} bytes, over the limit of {MAX_URL}", value.len()),
        ));
    }
    if value.chars().any(char::is_control) {
        return Err(DomainError::invalid(
            "software_release",
            "contains control characters",
        ));
    }
    Ok(())
}

fn parse_state(state: &Option<String>) -> Result<Option<RequestedState>, DomainError> {
    match state.as_deref() {
        None => Ok(None),
        Some(s) => RequestedState::parse(s).map(Some).ok_or_else(|| {
            DomainError::invalid(
                "state",
                format!("'{s}' is not one of started, stopped, destroyed"),
            )
        }),
    }
}

/// A new timestamp that is never equal to the old one, so nodes always see the change.
fn bumped(old: Timestamp, now: Timestamp) -> Timestamp {
    now.max(old.succ())
}

/// How long after its end a certificate or token record is kept (microseconds): a day,
/// so that clocks a little apart never see a live certificate forgotten.
pub const FORGET_AFTER: u64 = 86_400 * 1_000_000;

impl State {
    pub fn new() -> Self {
        State {
            instances: super::tracked::Tracked::watched(),
            ..State::default()
        }
    }

    /// Apply one command. A request id seen before returns its first outcome and changes
    /// nothing.
    pub fn apply(&mut self, cmd: &Command) -> Outcome {
        let client = &cmd.request_id.client;
        let seq = cmd.request_id.seq;
        if let Some(outcome) = self.outcomes.get(&(client.clone(), seq)) {
            return outcome.clone();
        }
        let remembered = self.sessions.get(client).map_or(0, |s| s.remembered);
        if remembered as usize >= OUTCOMES_PER_CLIENT {
            if let Some(&(_, oldest)) = self.client_outcomes(client).next() {
                if seq < oldest {
                    return Err(DomainError::RequestExpired {
                        request: cmd.request_id.to_string(),
                    });
                }
            }
        }
        // The leader stamped `at` (never earlier than its previous entry, and a
        // proposer's own time outside a small bound of it refused): time only moves with
        // a command that applies, so a refused one changes nothing, the clock included.
        let now = self.clock.max(cmd.at);
        self.applied += 1;
        if !self.hosting_synced {
            self.clock = now;
            self.sync_all_hosting();
            self.sync_hosting(now);
        }
        let outcome = self.execute(&cmd.op, now);
        match &outcome {
            Ok(_) => {
                self.clock = now;
                self.sync_hosting(now)
            }
            Err(_) => {
                self.instances.take_touched();
            }
        }
        if let Err(e) = &outcome {
            tracing::debug!(request_id = %cmd.request_id, op = cmd.op.name(), error = %e, "command refused");
        }
        self.outcomes.insert((client.clone(), seq), outcome.clone());
        let mut remembered = remembered + 1;
        while remembered as usize > OUTCOMES_PER_CLIENT {
            let Some(oldest) = self.client_outcomes(client).next().cloned() else {
                break;
            };
            self.outcomes.remove(&oldest);
            remembered -= 1;
        }
        self.sessions.insert(
            client.clone(),
            Session {
                last_seen: now,
                remembered,
            },
        );
        if self.applied.is_multiple_of(PRUNE_EVERY) {
            let horizon = now.micros().saturating_sub(SESSION_TTL_MICROS);
            let stale: Vec<String> = self
                .sessions
                .iter()
                .filter(|(_, s)| s.last_seen.micros() < horizon)
                .map(|(c, _)| c.clone())
                .collect();
            for c in stale {
                let keys: Vec<(String, u64)> = self.client_outcomes(&c).cloned().collect();
                for key in keys {
                    self.outcomes.remove(&key);
                }
                self.sessions.remove(&c);
            }
        }
        outcome
    }

    /// Keys of the outcomes remembered for one client, oldest first.
    fn client_outcomes<'a>(&'a self, client: &str) -> impl Iterator<Item = &'a (String, u64)> + 'a {
        self.outcomes
            .range((client.to_string(), 0)..=(client.to_string(), u64::MAX))
            .map(|(k, _)| k)
    }

    fn execute(&mut self, op: &Op, now: Timestamp) -> Outcome {
        match op {
            Op::RegisterComputer {
                computer,
                title,
                owner,
                region,
                network,
                attributes,
            } => {
                check_name("computer_id", computer)?;
                if self.computers.contains_key(computer) {
                    return Err(DomainError::ComputerExists(computer.clone()));
                }
                let mut c = Computer::new(computer, owner, now);
                if !title.is_empty() {
                    c.title = title.clone();
                }
                c.region = region.clone();
                c.network = network.clone();
                c.attributes = attributes.clone();
                self.computers.insert(computer.clone(), c);
                Ok(Reply::Done)
            }
            Op::UpdateComputer {
                computer,
                region,
                network,
                attributes,
            } => {
                let c = self.computer_mut(computer)?;
                c.region = region.clone();
                c.network = network.clone();
                c.attributes = attributes.clone();
                Ok(Reply::Done)
            }
            Op::SetComputerPolicy {
                computer,
                by,
                allocation_scope,
                legacy_partition_keys,
            } => {
                if let Some(person) = by {
                    let owner = &self.computer(computer)?.owner;
                    if owner != person && !self.admins.contains_key(person) {
                        return Err(DomainError::NotOwner {
                            who: person.clone(),
                            what: format!("computer '{computer}'"),
                        });
                    }
                }
                if let Some(super::state::AllocationScope::Friends(friends)) = allocation_scope {
                    for f in friends {
                        check_person("friend", f)?;
                    }
                }
                let c = self.computer_mut(computer)?;
                if let Some(scope) = allocation_scope {
                    c.allocation_scope = scope.clone();
                }
                if let Some(legacy) = legacy_partition_keys {
                    c.legacy_partition_keys = *legacy;
                }
                Ok(Reply::Done)
            }
            Op::SetAdmin { person, admin } => {
                check_person("person", person)?;
                if *admin {
                    if !self.admins.contains_key(person) {
                        self.admins.insert(person.clone(), now);
                    }
                } else {
                    self.admins.remove(person);
                }
                Ok(Reply::Done)
            }
            Op::FormatComputer { computer, spec } => self.format(computer, spec, now),
            Op::Supply {
                computer,
                url,
                state,
            } => {
                check_url(url)?;
                let requested = match state.as_str() {
                    "available" => SoftwareState::Available,
                    "destroyed" => SoftwareState::Destroyed,
                    other => {
                        return Err(DomainError::invalid(
                            "state",
                            format!("'{other}' is not one of available, destroyed"),
                        ))
                    }
                };
                self.computer(computer)?;
                let key = (computer.clone(), url.clone());
                // Every supply moves the release to the end of the node's list (as
                // slapproxy's INSERT OR REPLACE does).
                self.next_supply += 1;
                let order = self.next_supply;
                match self.software.get_mut(&key) {
                    Some(sw) => {
                        sw.requested = requested;
                        sw.supplied_at = now;
                        sw.order = order;
                    }
                    None => {
                        self.software.insert(
                            key,
                            SoftwareInstallation {
                                requested,
                                reported: None,
                                reported_at: None,
                                supplied_at: now,
                                order,
                            },
                        );
                    }
                }
                Ok(Reply::Done)
            }
            Op::ReportSoftware {
                computer,
                url,
                report,
            } => {
                self.computer(computer)?;
                let key = (computer.clone(), url.clone());
                let Some(sw) = self.software.get(&key) else {
                    return Err(DomainError::UnknownSoftware {
                        computer: computer.clone(),
                        url: url.clone(),
                    });
                };
                if *report == SoftwareReport::Destroyed {
                    if sw.requested != SoftwareState::Destroyed {
                        return Err(DomainError::SoftwareNotDestroyed {
                            computer: computer.clone(),
                            url: url.clone(),
                        });
                    }
                    self.software.remove(&key);
                    self.touch(computer, now);
                    return Ok(Reply::SoftwareRemoved);
                }
                if let Some(sw) = self.software.get_mut(&key) {
                    sw.reported = Some(report.clone());
                    sw.reported_at = Some(now);
                }
                self.touch(computer, now);
                Ok(Reply::Done)
            }
            Op::RequestInstance {
                requester,
                title,
                software_release,
                software_type,
                state,
                shared,
                parameters,
                sla,
            } => {
                let req = InstanceRequest {
                    title,
                    software_release,
                    software_type: if software_type.is_empty() {
                        "default"
                    } else {
                        software_type.as_str()
                    },
                    state: parse_state(state)?,
                    parameters,
                    sla,
                };
                check_name("partition_reference", title)?;
                check_url(software_release)?;
                check_name("software_type", req.software_type)?;
                let scope = self.requester_scope(requester)?;
                if *shared {
                    self.request_shared(&scope, &req, now)
                } else {
                    self.request_regular(&scope, &req, now)
                }
            }
            Op::SetConnection {
                computer,
                partition,
                shared,
                connection,
            } => {
                let id = self.partition_instance(computer, partition)?;
                let target = match shared {
                    None => id,
                    Some(reference) => self.hosted_shared(id, computer, partition, reference)?,
                };
                let (changed, requester) = {
                    let inst = self.instance_ref(target)?;
                    (&inst.connection != connection, inst.requester)
                };
                if changed {
                    if let Some(inst) = self.instances.get_mut(&target) {
                        inst.connection = connection.clone();
                    }
                    // The requester reads these parameters: make its node reprocess it.
                    if let Some(req) = requester {
                        self.bump_regular(req, now);
                    }
                }
                self.touch(computer, now);
                Ok(Reply::Done)
            }
            Op::ReportStatus {
                computer,
                partition,
                shared,
                kind,
                message,
            } => {
                let id = self.partition_instance(computer, partition)?;
                let target = match shared {
                    None => id,
                    Some(reference) => self.hosted_shared(id, computer, partition, reference)?,
                };
                if let Some(inst) = self.instances.get_mut(&target) {
                    inst.access_status = Some(AccessStatus {
                        kind: *kind,
                        message: message.clone(),
                        at: now,
                    });
                }
                self.touch(computer, now);
                Ok(Reply::Done)
            }
            Op::Bang {
                computer,
                partition,
                message,
            } => {
                let id = self.partition_instance(computer, partition)?;
                let root = self.instance_ref(id)?.root;
                let members: Vec<InstanceId> = self
                    .tree_members(root)
                    .filter(|m| !m.shared)
                    .map(|m| m.id)
                    .collect();
                for m in &members {
                    self.bump_regular(*m, now);
                }
                if let Some(inst) = self.instances.get_mut(&id) {
                    inst.access_status = Some(AccessStatus {
                        kind: StatusKind::Bang,
                        message: message.clone(),
                        at: now,
                    });
                }
                Ok(Reply::Banged {
                    instances: members.len(),
                })
            }
            Op::BangComputer { computer, message } => {
                let ids: Vec<InstanceId> = self
                    .computer(computer)?
                    .partitions
                    .iter()
                    .filter_map(|p| p.instance)
                    .collect();
                for id in &ids {
                    self.bump_regular(*id, now);
                    if let Some(inst) = self.instances.get_mut(id) {
                        inst.access_status = Some(AccessStatus {
                            kind: StatusKind::Bang,
                            message: message.clone(),
                            at: now,
                        });
                    }
                }
                Ok(Reply::Banged {
                    instances: ids.len(),
                })
            }
            Op::Rename {
                computer,
                partition,
                shared,
                new_name,
            } => {
                check_name("new_name", new_name)?;
                let id = self.partition_instance(computer, partition)?;
                let target = match shared {
                    None => id,
                    Some(reference) => self.owned_shared(id, computer, partition, reference)?,
                };
                self.rename(target, new_name)?;
                Ok(Reply::Done)
            }
            Op::DestroyedPartition {
                computer,
                partition,
            } => {
                let outcome = self.destroyed_partition(computer, partition, now);
                if matches!(outcome, Ok(Reply::PartitionFreed)) {
                    // The freed partition's certificates die with its instance.
                    self.revoke_identity(
                        &crate::ca::Identity::Partition {
                            computer: computer.clone(),
                            partition: partition.clone(),
                        },
                        now,
                    );
                }
                outcome
            }
            Op::RecordUsage {
                computer,
                reporter,
                transactions,
            } => {
                let (recorded, known) =
                    self.record_usage(computer, reporter.as_deref(), transactions, now)?;
                Ok(Reply::UsageRecorded { recorded, known })
            }
            Op::SetPrice {
                provider,
                scope,
                resource,
                price,
                currency,
                unit,
            } => {
                let key = (provider.clone(), scope.clone(), resource.clone());
                self.set_price(key, price, currency, unit, now)?;
                Ok(Reply::Done)
            }
            Op::CloseBooks { until } => {
                self.close_books(*until, now)?;
                Ok(Reply::Done)
            }
            Op::RetireReplica { id } => {
                if !self.retired_replicas.contains_key(id) {
                    self.retired_replicas.insert(*id, now);
                }
                // Its certificates, and those of the gateway that served beside it
                // (`gateway:r<id>` by convention), end with it: a retired seed's keys
                // must not outlive its membership.
                let replica = crate::ca::Identity::Replica(*id);
                let gateway = crate::ca::Identity::Gateway(format!("r{id}"));
                self.revoke_where(now, |_, r| r.identity == replica || r.identity == gateway);
                Ok(Reply::Done)
            }
            Op::InstallAuthority { material } => match self.authority.get(&0) {
                Some(installed) if installed == material => Ok(Reply::Done),
                Some(_) => Err(DomainError::AuthorityInstalled),
                None => {
                    if material.cert_pem.is_empty() || material.key_pem.is_empty() {
                        return Err(DomainError::invalid("authority", "empty material"));
                    }
                    self.authority.insert(0, material.clone());
                    Ok(Reply::Done)
                }
            },
            Op::RecordCertificate {
                serial,
                identity,
                not_after,
                pair,
            } => {
                if self.authority.get(&0).is_none() {
                    return Err(DomainError::NoAuthority);
                }
                let key = parse_serial(serial)?;
                self.prune_expired(now);
                identity
                    .check()
                    .map_err(|e| DomainError::invalid("identity", e.to_string()))?;
                if self.certificates.contains_key(&key) {
                    return Err(DomainError::CertificateKnown(serial.clone()));
                }
                self.certificates.insert(
                    key,
                    super::state::CertificateRecord {
                        identity: identity.clone(),
                        issued_at: now,
                        not_after: *not_after,
                        revoked_at: None,
                    },
                );
                if let Some(pair) = pair {
                    self.issued_keys.insert(key, pair.clone());
                }
                Ok(Reply::Done)
            }
            Op::RemoveComputer { computer } => {
                let c = self
                    .computers
                    .get(computer)
                    .ok_or_else(|| DomainError::UnknownComputer(computer.clone()))?;
                let busy: Vec<String> = c
                    .partitions
                    .iter()
                    .filter(|p| p.instance.is_some())
                    .map(|p| p.id.clone())
                    .collect();
                if !busy.is_empty() {
                    return Err(DomainError::PartitionsInUse {
                        computer: computer.clone(),
                        partitions: busy,
                    });
                }
                let rows: Vec<(String, String)> = self
                    .software
                    .keys()
                    .filter(|(c, _)| c == computer)
                    .cloned()
                    .collect();
                for row in rows {
                    self.software.remove(&row);
                }
                self.computers.remove(computer);
                let count = self.revoke_where(now, |_, r| match &r.identity {
                    crate::ca::Identity::Computer(c) => c == computer,
                    crate::ca::Identity::Partition { computer: c, .. } => c == computer,
                    _ => false,
                });
                Ok(Reply::Revoked { count })
            }
            Op::CreateToken {
                hash,
                owner,
                computer,
                expires_at,
                server: Some(grant),
            } => {
                if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return Err(DomainError::invalid("hash", "expected a hex SHA-256"));
                }
                if !computer.is_empty() {
                    return Err(DomainError::invalid(
                        "computer_id",
                        "a server token registers no computer",
                    ));
                }
                grant
                    .identity
                    .check()
                    .map_err(|e| DomainError::invalid("identity", e.to_string()))?;
                if !grant.identity.is_server() {
                    return Err(DomainError::invalid(
                        "identity",
                        "server tokens enroll replicas and gateways",
                    ));
                }
                for ip in &grant.ip_addresses {
                    ip.parse::<std::net::IpAddr>()
                        .map_err(|_| DomainError::invalid("ip", format!("{ip:?}")))?;
                }
                if expires_at.0 <= now.0 {
                    return Err(DomainError::invalid("expires_at", "already expired"));
                }
                self.prune_expired(now);
                if self.tokens.contains_key(hash) {
                    return Err(DomainError::BadToken("already exists".into()));
                }
                self.tokens.insert(
                    hash.clone(),
                    super::state::TokenRecord {
                        owner: owner.clone(),
                        computer: String::new(),
                        created_at: now,
                        expires_at: *expires_at,
                        used_at: None,
                        server: Some(grant.clone()),
                    },
                );
                Ok(Reply::Done)
            }
            Op::CreateToken {
                hash,
                owner,
                computer,
                expires_at,
                server: None,
            } => {
                if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return Err(DomainError::invalid("hash", "expected a hex SHA-256"));
                }
                check_name("computer_id", computer)?;
                crate::ca::Identity::Computer(computer.clone())
                    .check()
                    .map_err(|e| DomainError::invalid("computer_id", e.to_string()))?;
                if expires_at.0 <= now.0 {
                    return Err(DomainError::invalid("expires_at", "already expired"));
                }
                if let Some(c) = self.computers.get(computer) {
                    if c.owner != *owner {
                        return Err(DomainError::NotOwner {
                            who: owner.clone(),
                            what: format!("computer '{computer}'"),
                        });
                    }
                }
                self.prune_expired(now);
                if self.tokens.contains_key(hash) {
                    return Err(DomainError::BadToken("already exists".into()));
                }
                self.tokens.insert(
                    hash.clone(),
                    super::state::TokenRecord {
                        owner: owner.clone(),
                        computer: computer.clone(),
                        created_at: now,
                        expires_at: *expires_at,
                        used_at: None,
                        server: None,
                    },
                );
                Ok(Reply::Done)
            }
            Op::ConsumeToken { hash } => {
                let record = self
                    .tokens
                    .get(hash)
                    .cloned()
                    .ok_or_else(|| DomainError::BadToken("unknown".into()))?;
                if record.used_at.is_some() {
                    return Err(DomainError::BadToken("already used".into()));
                }
                if record.expires_at.0 <= now.0 {
                    return Err(DomainError::BadToken("expired".into()));
                }
                if let Some(grant) = record.server {
                    if let Some(t) = self.tokens.get_mut(hash) {
                        t.used_at = Some(now);
                    }
                    return Ok(Reply::Enrolled { grant });
                }
                match self.computers.get(&record.computer) {
                    Some(c) if c.owner != record.owner => {
                        return Err(DomainError::BadToken(format!(
                            "computer '{}' belongs to someone else now",
                            record.computer
                        )))
                    }
                    Some(_) => {}
                    None => {
                        self.computers.insert(
                            record.computer.clone(),
                            Computer::new(&record.computer, &record.owner, now),
                        );
                    }
                }
                if let Some(t) = self.tokens.get_mut(hash) {
                    t.used_at = Some(now);
                }
                Ok(Reply::Registered {
                    computer: record.computer,
                    owner: record.owner,
                })
            }
            Op::Revoke { serial, identity } => {
                let serial = serial.as_deref().map(parse_serial).transpose()?;
                if serial.is_none() && identity.is_none() {
                    return Err(DomainError::invalid(
                        "revoke",
                        "name a serial or an identity",
                    ));
                }
                let count = self.revoke_where(now, |s, r| {
                    serial.is_none_or(|want| s == want)
                        && identity.as_ref().is_none_or(|want| r.identity == *want)
                });
                Ok(Reply::Revoked { count })
            }
        }
    }

    // ----- certificates ----------------------------------------------------------------

    /// Revokes every unrevoked certificate `matches` selects; how many.
    fn revoke_where(
        &mut self,
        now: Timestamp,
        matches: impl Fn(u128, &super::state::CertificateRecord) -> bool,
    ) -> usize {
        let targets: Vec<u128> = self
            .certificates
            .iter()
            .filter(|(s, r)| r.revoked_at.is_none() && matches(**s, r))
            .map(|(s, _)| *s)
            .collect();
        for s in &targets {
            if let Some(r) = self.certificates.get_mut(s) {
                r.revoked_at = Some(now);
            }
        }
        targets.len()
    }

    /// Forgets certificates and tokens that ended more than [`FORGET_AFTER`] ago: an
    /// expired certificate fails every handshake by its dates alone, and an expired token
    /// is refused, so neither record is needed; without this, renewals and tokens would
    /// grow the state (and the revoked list every gateway reads) forever. Run when a new
    /// record is added, so the records stay bounded by what is alive.
    fn prune_expired(&mut self, now: Timestamp) {
        let horizon = now.0.saturating_sub(FORGET_AFTER);
        let ended: Vec<u128> = self
            .certificates
            .iter()
            .filter(|(_, r)| r.not_after.0 < horizon)
            .map(|(s, _)| *s)
            .collect();
        for s in &ended {
            self.certificates.remove(s);
            self.issued_keys.remove(s);
        }
        let spent: Vec<String> = self
            .tokens
            .iter()
            .filter(|(_, t)| t.expires_at.0 < horizon)
            .map(|(h, _)| h.clone())
            .collect();
        for h in &spent {
            self.tokens.remove(h);
        }
    }

    /// Revokes every certificate of `identity` (a freed partition).
    pub(crate) fn revoke_identity(
        &mut self,
        identity: &crate::ca::Identity,
        now: Timestamp,
    ) -> usize {
        self.revoke_where(now, |_, r| r.identity == *identity)
    }

    // ----- computers -------------------------------------------------------------------

    fn computer_mut(&mut self, id: &str) -> Result<&mut Computer, DomainError> {
        self.computers
            .get_mut(id)
            .ok_or_else(|| DomainError::UnknownComputer(id.to_string()))
    }

    fn touch(&mut self, computer: &str, now: Timestamp) {
        if let Some(c) = self.computers.get_mut(computer) {
            c.last_contact = Some(now);
        }
    }

    fn format(&mut self, computer: &str, spec: &ComputerSpec, now: Timestamp) -> Outcome {
        check_name("computer_id", computer)?;
        let mut seen = BTreeSet::new();
        for p in &spec.partitions {
            check_name("partition reference", &p.id)?;
            if !seen.insert(p.id.as_str()) {
                return Err(DomainError::invalid(
                    "partition_list",
                    format!("partition '{}' is declared twice", p.id),
                ));
            }
            for a in &p.addresses {
                if a.addr.is_empty() {
                    return Err(DomainError::invalid(
                        "address_list",
                        format!("an address of partition '{}' is empty", p.id),
                    ));
                }
            }
        }
        if let Some(existing) = self.computers.get(computer) {
            // A partition that hosts an instance is never dropped silently.
            let dropped_busy: Vec<String> = existing
                .partitions
                .iter()
                .filter(|p| p.instance.is_some() && !seen.contains(p.id.as_str()))
                .map(|p| p.id.clone())
                .collect();
            if !dropped_busy.is_empty() {
                return Err(DomainError::PartitionsInUse {
                    computer: computer.to_string(),
                    partitions: dropped_busy,
                });
            }
        }
        let c = self
            .computers
            .get_or_insert_with(computer.to_string(), || Computer::new(computer, "", now));
        let old: BTreeMap<String, Option<InstanceId>> = c
            .partitions
            .iter()
            .map(|p| (p.id.clone(), p.instance))
            .collect();
        c.partitions = spec
            .partitions
            .iter()
            .map(|p| {
                let tap = p.tap.clone().filter(|t| !t.is_empty());
                Partition {
                    id: p.id.clone(),
                    interface: tap.clone().unwrap_or_else(|| p.id.clone()),
                    tap,
                    addresses: p
                        .addresses
                        .iter()
                        .map(|a| Address {
                            addr: a.addr.clone(),
                            netmask: a.netmask.clone(),
                            gateway: a.gateway.clone(),
                            network: a.network.clone(),
                        })
                        .collect(),
                    instance: old.get(&p.id).copied().flatten(),
                }
            })
            .collect();
        c.address = spec.address.clone();
        c.netmask = spec.netmask.clone();
        c.last_contact = Some(now);
        let kept: BTreeSet<&str> = c.partitions.iter().map(|p| p.id.as_str()).collect();
        let computer = c.id.clone();
        let dropped: Vec<(String, String)> = old
            .keys()
            .filter(|id| !kept.contains(id.as_str()))
            .map(|id| (computer.clone(), id.clone()))
            .collect();
        self.dropped_partitions.0.extend(dropped);
        Ok(Reply::Done)
    }

    // ----- instances: lookups ----------------------------------------------------------

    fn instance_ref(&self, id: InstanceId) -> Result<&Instance, DomainError> {
        self.instances
            .get(&id)
            .ok_or_else(|| DomainError::UnknownInstance(id.to_string()))
    }

    /// The instance a partition hosts.
    fn partition_instance(
        &self,
        computer: &str,
        partition: &str,
    ) -> Result<InstanceId, DomainError> {
        let c = self.computer(computer)?;
        let p = c
            .partition(partition)
            .ok_or_else(|| DomainError::UnknownPartition {
                computer: computer.to_string(),
                partition: partition.to_string(),
            })?;
        p.instance.ok_or_else(|| DomainError::PartitionFree {
            computer: computer.to_string(),
            partition: partition.to_string(),
        })
    }

    /// The name slapproxy gives a shared instance (`<root title>_<title>`, with an empty
    /// root title for a root), accepted beside our ids from hosts that publish with it.
    fn legacy_shared_reference(&self, inst: &Instance) -> String {
        let root_title = if inst.is_root() {
            ""
        } else {
            self.instances
                .get(&inst.root)
                .map(|r| r.title.as_str())
                .unwrap_or("")
        };
        format!("{root_title}_{}", inst.title)
    }

    /// A shared instance hosted by `host`, named by id (or slapproxy's reference).
    fn hosted_shared(
        &self,
        host: InstanceId,
        computer: &str,
        partition: &str,
        reference: &str,
    ) -> Result<InstanceId, DomainError> {
        let h = self.instance_ref(host)?;
        let found = h.hosted.iter().copied().find(|id| {
            InstanceId::parse(reference) == Some(*id)
                || self
                    .instances
                    .get(id)
                    .is_some_and(|s| self.legacy_shared_reference(s) == reference)
        });
        found.ok_or_else(|| DomainError::UnknownSharedInstance {
            computer: computer.to_string(),
            partition: partition.to_string(),
            reference: reference.to_string(),
        })
    }

    /// A shared instance the caller hosts or requested.
    fn owned_shared(
        &self,
        caller: InstanceId,
        computer: &str,
        partition: &str,
        reference: &str,
    ) -> Result<InstanceId, DomainError> {
        if let Ok(id) = self.hosted_shared(caller, computer, partition, reference) {
            return Ok(id);
        }
        self.instances
            .values()
            .find(|s| {
                s.shared
                    && s.requester == Some(caller)
                    && (InstanceId::parse(reference) == Some(s.id)
                        || self.legacy_shared_reference(s) == reference)
            })
            .map(|s| s.id)
            .ok_or_else(|| DomainError::UnknownSharedInstance {
                computer: computer.to_string(),
                partition: partition.to_string(),
                reference: reference.to_string(),
            })
    }

    fn requester_scope(&self, requester: &Requester) -> Result<Scope, DomainError> {
        match requester {
            Requester::Person(person) => {
                check_name("person", person)?;
                Ok(Scope {
                    owner: person.clone(),
                    tree: None,
                })
            }
            Requester::Partition {
                computer,
                partition,
            } => {
                let id = self.partition_instance(computer, partition)?;
                let inst = self.instance_ref(id)?;
                Ok(Scope {
                    owner: inst.owner.clone(),
                    tree: Some((inst.root, id)),
                })
            }
        }
    }

    fn lookup(&self, scope: &Scope, title: &str) -> Option<InstanceId> {
        match scope.tree {
            None => self.roots.get(&(scope.owner.clone(), title.to_string())),
            Some((root, _)) => self.members.get(&(root, title.to_string())),
        }
        .copied()
    }

    // ----- instances: requests ---------------------------------------------------------

    fn request_regular(&mut self, scope: &Scope, req: &InstanceRequest, now: Timestamp) -> Outcome {
        let declared = declared_attributes(self);
        let filter = SlaFilter::parse(req.sla, &declared)?;
        match self.lookup(scope, req.title) {
            Some(id) => {
                let inst = self.instance_ref(id)?;
                if inst.shared {
                    return Err(DomainError::TitleTaken {
                        title: req.title.to_string(),
                        scope: "tree, by a shared instance".to_string(),
                    });
                }
                if let Some((root, requester)) = scope.tree {
                    if id == root || id == requester {
                        return Err(DomainError::invalid(
                            "partition_reference",
                            format!(
                                "'{}' is the requesting instance or its tree's root; an instance cannot request itself or its root",
                                req.title
                            ),
                        ));
                    }
                }
                // Moving an instance to another release: the provider of its computer
                // must have supplied that one too (what runs there is theirs to decide).
                if inst.software_release != req.software_release {
                    if let Placement::Partition { computer, .. } = &inst.placement {
                        let key = (computer.clone(), req.software_release.to_string());
                        if self
                            .software
                            .get(&key)
                            .is_none_or(|sw| sw.requested != SoftwareState::Available)
                        {
                            return Err(DomainError::NotSupplied {
                                computer: computer.clone(),
                                url: req.software_release.to_string(),
                            });
                        }
                    }
                }
                let own = req.state.unwrap_or(inst.own_state);
                let changed = inst.software_release != req.software_release
                    || inst.software_type != req.software_type
                    || &inst.parameters != req.parameters
                    || inst.own_state != own;
                let is_root = inst.is_root();
                let root_state = if is_root {
                    None
                } else {
                    Some(self.instance_ref(inst.root)?.requested_state)
                };
                let effective = root_state.map_or(own, |r| own.max(r));
                let state_changed = effective != inst.requested_state;
                let Some(inst) = self.instances.get_mut(&id) else {
                    return Err(DomainError::UnknownInstance(id.to_string()));
                };
                if let Some((_, requester)) = scope.tree {
                    inst.requester = Some(requester);
                }
                inst.sla = req.sla.clone();
                if changed {
                    inst.software_release = req.software_release.to_string();
                    inst.software_type = req.software_type.to_string();
                    inst.parameters = req.parameters.clone();
                    inst.parameter_strings = stringify(req.parameters);
                    inst.own_state = own;
                    inst.requested_state = effective;
                    inst.timestamp = bumped(inst.timestamp, now);
                }
                if is_root && state_changed {
                    self.push_root_state(id, now);
                }
                Ok(Reply::Instance { id, changed })
            }
            None => {
                let Some(own) = req.state.or(Some(RequestedState::Started)) else {
                    return Err(DomainError::invalid("state", "missing"));
                };
                if own == RequestedState::Destroyed {
                    return Err(DomainError::UnknownInstance(format!(
                        "{} (nothing to destroy)",
                        req.title
                    )));
                }
                let root_state = match scope.tree {
                    Some((root, _)) => Some(self.instance_ref(root)?.requested_state),
                    None => None,
                };
                let placement = allocate(
                    self,
                    req.title,
                    req.software_release,
                    &scope.owner,
                    &filter,
                    scope.tree.map(|(root, _)| root),
                )?;
                let id = InstanceId(self.next_instance + 1);
                self.next_instance += 1;
                let root = scope.tree.map_or(id, |(root, _)| root);
                let effective = root_state.map_or(own, |r| own.max(r));
                let instance = Instance {
                    id,
                    title: req.title.to_string(),
                    owner: scope.owner.clone(),
                    root,
                    requester: scope.tree.map(|(_, requester)| requester),
                    software_release: req.software_release.to_string(),
                    software_type: req.software_type.to_string(),
                    parameters: req.parameters.clone(),
                    parameter_strings: stringify(req.parameters),
                    sla: req.sla.clone(),
                    own_state: own,
                    requested_state: effective,
                    shared: false,
                    placement: Placement::Partition {
                        computer: placement.computer.clone(),
                        partition: placement.partition.clone(),
                    },
                    connection: StringParams::new(),
                    hosted: Vec::new(),
                    timestamp: now,
                    access_status: None,
                    created_at: now,
                };
                if let Some(p) = self
                    .computers
                    .get_mut(&placement.computer)
                    .and_then(|c| c.partition_mut(&placement.partition))
                {
                    p.instance = Some(id);
                }
                self.index_new(&instance, &scope.owner);
                self.instances.insert(id, instance);
                Ok(Reply::Instance { id, changed: true })
            }
        }
    }

    fn request_shared(&mut self, scope: &Scope, req: &InstanceRequest, now: Timestamp) -> Outcome {
        let declared = declared_attributes(self);
        let filter = SlaFilter::parse(req.sla, &declared)?;
        match self.lookup(scope, req.title) {
            Some(id) => {
                let inst = self.instance_ref(id)?;
                if !inst.shared {
                    return Err(DomainError::TitleTaken {
                        title: req.title.to_string(),
                        scope: "tree, by a regular instance".to_string(),
                    });
                }
                if req.state == Some(RequestedState::Destroyed) {
                    let host = match inst.placement {
                        Placement::Hosted { host } => Some(host),
                        _ => None,
                    };
                    let connection = inst.connection.clone();
                    self.remove_shared(id, now);
                    return Ok(Reply::SharedRemoved {
                        id,
                        host,
                        connection,
                    });
                }
                let current_host = match inst.placement {
                    Placement::Hosted { host } => Some(host),
                    _ => None,
                };
                let keep = current_host.filter(|h| self.host_admits(*h, req, &filter));
                let host = match keep {
                    Some(h) => h,
                    None => self.find_host(req, &filter)?,
                };
                let inst = self.instance_ref(id)?;
                let changed = inst.software_release != req.software_release
                    || inst.software_type != req.software_type
                    || &inst.parameters != req.parameters;
                let moved = current_host != Some(host);
                let Some(inst) = self.instances.get_mut(&id) else {
                    return Err(DomainError::UnknownInstance(id.to_string()));
                };
                if let Some((_, requester)) = scope.tree {
                    inst.requester = Some(requester);
                }
                inst.sla = req.sla.clone();
                if changed {
                    inst.software_release = req.software_release.to_string();
                    inst.software_type = req.software_type.to_string();
                    inst.parameters = req.parameters.clone();
                    inst.parameter_strings = stringify(req.parameters);
                    inst.timestamp = bumped(inst.timestamp, now);
                }
                if moved {
                    inst.placement = Placement::Hosted { host };
                    if let Some(old) = current_host {
                        self.detach(old, id, now);
                    }
                    self.attach(host, id, now);
                } else if changed {
                    self.bump_regular(host, now);
                }
                Ok(Reply::Instance {
                    id,
                    changed: changed || moved,
                })
            }
            None => {
                if req.state == Some(RequestedState::Destroyed) {
                    return Err(DomainError::UnknownInstance(format!(
                        "{} (nothing to destroy)",
                        req.title
                    )));
                }
                let host = self.find_host(req, &filter)?;
                let id = InstanceId(self.next_instance + 1);
                self.next_instance += 1;
                let root = scope.tree.map_or(id, |(root, _)| root);
                let instance = Instance {
                    id,
                    title: req.title.to_string(),
                    owner: scope.owner.clone(),
                    root,
                    requester: scope.tree.map(|(_, requester)| requester),
                    software_release: req.software_release.to_string(),
                    software_type: req.software_type.to_string(),
                    parameters: req.parameters.clone(),
                    parameter_strings: stringify(req.parameters),
                    sla: req.sla.clone(),
                    own_state: RequestedState::Started,
                    requested_state: RequestedState::Started,
                    shared: true,
                    placement: Placement::Hosted { host },
                    connection: StringParams::new(),
                    hosted: Vec::new(),
                    timestamp: now,
                    access_status: None,
                    created_at: now,
                };
                self.index_new(&instance, &scope.owner);
                self.instances.insert(id, instance);
                self.attach(host, id, now);
                Ok(Reply::Instance { id, changed: true })
            }
        }
    }

    /// Whether a regular instance can host the requested shared instance.
    fn host_admits(&self, host: InstanceId, req: &InstanceRequest, filter: &SlaFilter) -> bool {
        let Some(h) = self.instances.get(&host) else {
            return false;
        };
        if h.shared
            || h.requested_state == RequestedState::Destroyed
            || h.software_release != req.software_release
            || h.software_type != req.software_type
        {
            return false;
        }
        let Placement::Partition {
            computer,
            partition,
        } = &h.placement
        else {
            return false;
        };
        if let Some(pin) = &filter.instance {
            let pinned = InstanceId::parse(pin) == Some(host)
                || *pin == format!("{computer}-{partition}")
                || pin == partition;
            if !pinned {
                return false;
            }
        }
        self.computers
            .get(computer)
            .is_some_and(|c| filter.admits(self, c))
    }

    /// The first admitting host in (computer id, format order).
    fn find_host(
        &self,
        req: &InstanceRequest,
        filter: &SlaFilter,
    ) -> Result<InstanceId, DomainError> {
        for c in self.computers.values() {
            for p in &c.partitions {
                if let Some(id) = p.instance {
                    if self.host_admits(id, req, filter) {
                        return Ok(id);
                    }
                }
            }
        }
        let mut reason = format!(
            "no started or stopped instance of '{}' with software type '{}'",
            req.software_release, req.software_type
        );
        if let Some(pin) = &filter.instance {
            reason.push_str(&format!(" matching instance_guid '{pin}'"));
        }
        if let Some(c) = &filter.computer {
            reason.push_str(&format!(" on computer '{c}'"));
        }
        Err(DomainError::NoSharedHost {
            title: req.title.to_string(),
            reason,
        })
    }

    fn attach(&mut self, host: InstanceId, shared: InstanceId, now: Timestamp) {
        if let Some(h) = self.instances.get_mut(&host) {
            if !h.hosted.contains(&shared) {
                h.hosted.push(shared);
            }
        }
        self.bump_regular(host, now);
    }

    fn detach(&mut self, host: InstanceId, shared: InstanceId, now: Timestamp) {
        let mut was_there = false;
        if let Some(h) = self.instances.get_mut(&host) {
            let before = h.hosted.len();
            h.hosted.retain(|s| *s != shared);
            was_there = h.hosted.len() != before;
        }
        if was_there {
            self.bump_regular(host, now);
        }
    }

    fn remove_shared(&mut self, id: InstanceId, now: Timestamp) {
        if let Some(inst) = self.instances.get(&id) {
            if let Placement::Hosted { host } = inst.placement {
                self.detach(host, id, now);
            }
        }
        self.unindex(id);
        self.instances.remove(&id);
    }

    fn index_new(&mut self, instance: &Instance, owner: &str) {
        if instance.is_root() {
            self.roots
                .insert((owner.to_string(), instance.title.clone()), instance.id);
            self.trees
                .insert(instance.id, BTreeSet::from([instance.id]));
        } else {
            self.trees
                .entry(instance.root)
                .or_default()
                .insert(instance.id);
        }
        self.members
            .insert((instance.root, instance.title.clone()), instance.id);
    }

    fn unindex(&mut self, id: InstanceId) {
        let Some(inst) = self.instances.get(&id) else {
            return;
        };
        let (root, title, owner) = (inst.root, inst.title.clone(), inst.owner.clone());
        if inst.is_root() {
            self.roots.remove(&(owner, title.clone()));
            self.trees.remove(&id);
        } else if let Some(t) = self.trees.get_mut(&root) {
            t.remove(&id);
        }
        self.members.remove(&(root, title));
    }

    /// Give a regular instance a new timestamp (shared instances have none of their own
    /// that a node reads: their host's changes instead).
    fn bump_regular(&mut self, id: InstanceId, now: Timestamp) {
        if let Some(inst) = self.instances.get_mut(&id) {
            if !inst.shared {
                inst.timestamp = bumped(inst.timestamp, now);
            }
        }
    }

    /// A root's effective state changed: recompute every member's and bump those that
    /// changed, so their nodes stop, start or destroy them.
    fn push_root_state(&mut self, root: InstanceId, now: Timestamp) {
        let Some(root_state) = self.instances.get(&root).map(|r| r.requested_state) else {
            return;
        };
        let members: Vec<InstanceId> = self
            .trees
            .get(&root)
            .map(|t| t.iter().copied().filter(|m| *m != root).collect())
            .unwrap_or_default();
        for m in members {
            if let Some(inst) = self.instances.get_mut(&m) {
                if inst.shared {
                    continue;
                }
                let effective = inst.own_state.max(root_state);
                if effective != inst.requested_state {
                    inst.requested_state = effective;
                    inst.timestamp = bumped(inst.timestamp, now);
                }
            }
        }
    }

    fn rename(&mut self, id: InstanceId, new_name: &str) -> Result<(), DomainError> {
        let inst = self.instance_ref(id)?;
        if inst.title == new_name {
            return Ok(());
        }
        let (root, owner, old) = (inst.root, inst.owner.clone(), inst.title.clone());
        if self.members.contains_key(&(root, new_name.to_string())) {
            return Err(DomainError::TitleTaken {
                title: new_name.to_string(),
                scope: "tree".to_string(),
            });
        }
        if inst.is_root()
            && self
                .roots
                .contains_key(&(owner.clone(), new_name.to_string()))
        {
            return Err(DomainError::TitleTaken {
                title: new_name.to_string(),
                scope: "account".to_string(),
            });
        }
        if inst.is_root() {
            self.roots.remove(&(owner.clone(), old.clone()));
            self.roots.insert((owner, new_name.to_string()), id);
        }
        self.members.remove(&(root, old));
        self.members.insert((root, new_name.to_string()), id);
        if let Some(inst) = self.instances.get_mut(&id) {
            inst.title = new_name.to_string();
        }
        Ok(())
    }

    fn destroyed_partition(&mut self, computer: &str, partition: &str, now: Timestamp) -> Outcome {
        let id = self.partition_instance(computer, partition)?;
        let inst = self.instance_ref(id)?;
        if inst.requested_state != RequestedState::Destroyed {
            return Err(DomainError::NotRequestedDestroyed {
                title: inst.title.clone(),
                state: inst.requested_state.as_str().to_string(),
            });
        }
        if inst.is_root() {
            let mut remaining: Vec<String> = self
                .tree_members(id)
                .filter(|m| m.id != id && !m.shared)
                .map(|m| m.title.clone())
                .collect();
            if !remaining.is_empty() {
                remaining.sort();
                self.push_root_state(id, now);
                return Ok(Reply::DestroyDeferred { remaining });
            }
            // The tree goes with its root: its shared instances too.
            let shared: Vec<InstanceId> = self
                .tree_members(id)
                .filter(|m| m.shared)
                .map(|m| m.id)
                .collect();
            for s in shared {
                self.remove_shared(s, now);
            }
        }
        // Shared instances this one hosted wait for a new host.
        let hosted = self.instance_ref(id)?.hosted.clone();
        for s in hosted {
            if let Some(si) = self.instances.get_mut(&s) {
                si.placement = Placement::Unplaced;
            }
        }
        if let Some(p) = self
            .computers
            .get_mut(computer)
            .and_then(|c| c.partition_mut(partition))
        {
            p.instance = None;
        }
        self.unindex(id);
        self.instances.remove(&id);
        self.touch(computer, now);
        Ok(Reply::PartitionFreed)
    }
}

/// Where a request comes from: the owner of the tree, and for a request made by an
/// instance, its tree's root and the instance itself.
struct Scope {
    owner: String,
    tree: Option<(InstanceId, InstanceId)>,
}

struct InstanceRequest<'a> {
    title: &'a str,
    software_release: &'a str,
    software_type: &'a str,
    state: Option<RequestedState>,
    parameters: &'a Params,
    sla: &'a BTreeMap<String, String>,
}

/// A certificate serial as commands carry it: 1 to 32 hex digits, not zero.
pub(crate) fn parse_serial(text: &str) -> Result<u128, DomainError> {
    let bad = || DomainError::invalid("serial", format!("{text:?} is not a certificate serial"));
    if text.is_empty() || text.len() > 32 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(bad());
    }
    match u128::from_str_radix(text, 16) {
        Ok(0) | Err(_) => Err(bad()),
        Ok(n) => Ok(n),
    }
}
