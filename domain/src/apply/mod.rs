//! Deterministic application of commands: [`State::apply`] (exactly-once bookkeeping,
//! the clock, hosting) and a one-line dispatch of each operation to the module of what
//! it changes: [`computers`], [`software`], [`instances`] and [`requests`], [`ledger`], [`group`], [`people`] (portal passwords and sessions),
//! [`certificates`].
//!
//! Each operation validates everything it needs before its first mutation, so a refused
//! command leaves the state untouched. Time comes from the command (through the state's
//! monotonic clock), ids from counters in the state.

mod certificates;
mod computers;
mod group;
mod instances;
mod ledger;
mod people;
mod requests;
mod software;

use super::command::{Command, Op, Outcome};
use super::error::DomainError;
use super::ids::{InstanceId, Timestamp};
use super::param::Params;
use super::records::{RequestedState, Session};
use super::state::State;
use std::collections::BTreeMap;

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
    crate::identity::Identity::Person(value.to_owned())
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
            computers: super::tracked::Tracked::watched(),
            software: super::tracked::Tracked::watched(),
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
        // Outcomes are kept in OUTCOMES_PER_CLIENT slots per client (seq modulo): a slot
        // holding a later request means this one's outcome was forgotten.
        let slot = seq % OUTCOMES_PER_CLIENT as u64;
        let occupant = self
            .client_outcomes(client)
            .map(|(_, s)| *s)
            .find(|s| s % OUTCOMES_PER_CLIENT as u64 == slot);
        if occupant.is_some_and(|s| s > seq) {
            return Err(DomainError::RequestExpired {
                request: cmd.request_id.to_string(),
            });
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
        // the outcome takes its slot: the earlier request there is forgotten
        let remembered = match occupant {
            Some(earlier) => {
                self.outcomes.remove(&(client.clone(), earlier));
                remembered
            }
            None => remembered + 1,
        };
        self.outcomes.insert((client.clone(), seq), outcome.clone());
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
            } => self.register_computer(computer, title, owner, region, network, attributes, now),
            Op::UpdateComputer {
                computer,
                region,
                network,
                attributes,
            } => self.update_computer(computer, region, network, attributes, now),
            Op::SetComputerPolicy {
                computer,
                by,
                allocation_scope,
                legacy_partition_keys,
            } => {
                self.set_computer_policy(computer, by, allocation_scope, legacy_partition_keys, now)
            }
            Op::SetAdmin { person, admin } => self.set_admin(person, admin, now),
            Op::FormatComputer { computer, spec } => self.format(computer, spec, now),
            Op::Supply {
                computer,
                url,
                state,
            } => self.supply(computer, url, state, now),
            Op::ReportSoftware {
                computer,
                url,
                report,
            } => self.report_software(computer, url, report, now),
            Op::RequestInstance {
                requester,
                title,
                software_release,
                software_type,
                state,
                shared,
                parameters,
                sla,
            } => self.request_instance(
                requester,
                title,
                software_release,
                software_type,
                state,
                shared,
                parameters,
                sla,
                now,
            ),
            Op::SetConnection {
                computer,
                partition,
                shared,
                connection,
            } => self.set_connection(computer, partition, shared, connection, now),
            Op::ReportStatus {
                computer,
                partition,
                shared,
                kind,
                message,
            } => self.report_status(computer, partition, shared, kind, message, now),
            Op::Bang {
                computer,
                partition,
                message,
            } => self.bang(computer, partition, message, now),
            Op::BangComputer { computer, message } => self.bang_computer(computer, message, now),
            Op::Rename {
                computer,
                partition,
                shared,
                new_name,
            } => self.rename_op(computer, partition, shared, new_name, now),
            Op::DestroyedPartition {
                computer,
                partition,
            } => self.destroyed(computer, partition, now),
            Op::RecordUsage {
                computer,
                reporter,
                transactions,
            } => self.record_usage_op(computer, reporter, transactions, now),
            Op::SetPrice {
                provider,
                scope,
                resource,
                price,
                currency,
                unit,
            } => self.set_price_op(provider, scope, resource, price, currency, unit, now),
            Op::CloseBooks { until } => self.close_books_op(until, now),
            Op::RetireReplica { id } => self.retire_replica(id, now),
            Op::InstallAuthority { material } => self.install_authority(material, now),
            Op::RecordCertificate {
                serial,
                identity,
                not_after,
                pair,
            } => self.record_certificate(serial, identity, not_after, pair, now),
            Op::RemoveComputer { computer } => self.remove_computer(computer, now),
            Op::CreateToken {
                hash,
                owner,
                computer,
                expires_at,
                server: Some(grant),
            } => self.create_server_token(hash, owner, computer, expires_at, grant, now),
            Op::CreateToken {
                hash,
                owner,
                computer,
                expires_at,
                server: None,
            } => self.create_token(hash, owner, computer, expires_at, now),
            Op::ConsumeToken { hash } => self.consume_token(hash, now),
            Op::Revoke { serial, identity } => self.revoke(serial, identity, now),
            Op::SetPassword { person, by, hash } => self.set_password(person, by, hash, now),
            Op::OpenWebSession {
                hash,
                person,
                expires_at,
            } => self.open_web_session(hash, person, *expires_at, now),
            Op::EndWebSession { hash } => self.end_web_session(hash),
        }
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
