//! The group's certificate authority in the state: the authority, the certificates it
//! issued and their revocation, one-time tokens.

use super::{check_name, parse_serial};
use crate::command::{Outcome, Reply};
use crate::error::DomainError;
use crate::ids::Timestamp;
use crate::records::Computer;
use crate::state::State;

impl State {
    pub(super) fn install_authority(
        &mut self,
        material: &crate::identity::CaMaterial,
        _now: Timestamp,
    ) -> Outcome {
        match self.authority.get(&0) {
            Some(installed) if installed == material => Ok(Reply::Done),
            Some(_) => Err(DomainError::AuthorityInstalled),
            None => {
                if material.cert_pem.is_empty() || material.key_pem.is_empty() {
                    return Err(DomainError::invalid("authority", "empty material"));
                }
                self.authority.insert(0, material.clone());
                Ok(Reply::Done)
            }
        }
    }

    pub(super) fn record_certificate(
        &mut self,
        serial: &str,
        identity: &crate::identity::Identity,
        not_after: &Timestamp,
        pair: &Option<crate::records::IssuedPair>,
        now: Timestamp,
    ) -> Outcome {
        if self.authority.get(&0).is_none() {
            return Err(DomainError::NoAuthority);
        }
        let key = parse_serial(serial)?;
        self.prune_expired(now);
        identity
            .check()
            .map_err(|e| DomainError::invalid("identity", e.to_string()))?;
        if self.certificates.contains_key(&key) {
            return Err(DomainError::CertificateKnown(serial.to_owned()));
        }
        self.certificates.insert(
            key,
            crate::records::CertificateRecord {
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

    pub(super) fn create_server_token(
        &mut self,
        hash: &str,
        owner: &str,
        computer: &str,
        expires_at: &Timestamp,
        grant: &crate::command::ServerGrant,
        now: Timestamp,
    ) -> Outcome {
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
            hash.to_owned(),
            crate::records::TokenRecord {
                owner: owner.to_owned(),
                computer: String::new(),
                created_at: now,
                expires_at: *expires_at,
                used_at: None,
                server: Some(grant.clone()),
            },
        );
        Ok(Reply::Done)
    }

    pub(super) fn create_token(
        &mut self,
        hash: &str,
        owner: &str,
        computer: &str,
        expires_at: &Timestamp,
        now: Timestamp,
    ) -> Outcome {
        if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(DomainError::invalid("hash", "expected a hex SHA-256"));
        }
        check_name("computer_id", computer)?;
        crate::identity::Identity::Computer(computer.to_owned())
            .check()
            .map_err(|e| DomainError::invalid("computer_id", e.to_string()))?;
        if expires_at.0 <= now.0 {
            return Err(DomainError::invalid("expires_at", "already expired"));
        }
        if let Some(c) = self.computers.get(computer) {
            if c.owner != *owner {
                return Err(DomainError::NotOwner {
                    who: owner.to_owned(),
                    what: format!("computer '{computer}'"),
                });
            }
        }
        self.prune_expired(now);
        if self.tokens.contains_key(hash) {
            return Err(DomainError::BadToken("already exists".into()));
        }
        self.tokens.insert(
            hash.to_owned(),
            crate::records::TokenRecord {
                owner: owner.to_owned(),
                computer: computer.to_owned(),
                created_at: now,
                expires_at: *expires_at,
                used_at: None,
                server: None,
            },
        );
        Ok(Reply::Done)
    }

    pub(super) fn consume_token(&mut self, hash: &str, now: Timestamp) -> Outcome {
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
                    record.computer.to_owned(),
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

    pub(super) fn revoke(
        &mut self,
        serial: &Option<String>,
        identity: &Option<crate::identity::Identity>,
        now: Timestamp,
    ) -> Outcome {
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

    // ----- certificates ----------------------------------------------------------------

    /// Revokes every unrevoked certificate `matches` selects; how many.
    pub(super) fn revoke_where(
        &mut self,
        now: Timestamp,
        matches: impl Fn(u128, &crate::records::CertificateRecord) -> bool,
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

    /// Forgets certificates and tokens that ended more than [`super::FORGET_AFTER`] ago: an
    /// expired certificate fails every handshake by its dates alone, and an expired token
    /// is refused, so neither record is needed; without this, renewals and tokens would
    /// grow the state (and the revoked list every gateway reads) forever. Run when a new
    /// record is added, so the records stay bounded by what is alive.
    pub(super) fn prune_expired(&mut self, now: Timestamp) {
        let horizon = now.0.saturating_sub(super::FORGET_AFTER);
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
        identity: &crate::identity::Identity,
        now: Timestamp,
    ) -> usize {
        self.revoke_where(now, |_, r| r.identity == *identity)
    }
}
