//! Persons' portal sign-in: password hashes (argon2id PHC strings a gateway made; the
//! password never reaches the masters) and web sessions (by the SHA-256 of their token,
//! which only the browser holds), so that sign-out ends a session on every gateway.

use super::check_person;
use crate::command::{Outcome, Reply};
use crate::error::DomainError;
use crate::ids::Timestamp;
use crate::records::{PasswordRecord, WebSession};
use crate::state::State;

/// Longest accepted password hash (a PHC string of argon2id is about 100 bytes).
const MAX_HASH: usize = 512;
/// Longest a web session may last from its opening.
pub const MAX_WEB_SESSION_MICROS: u64 = 30 * 24 * 3600 * 1_000_000;

fn check_sha256(value: &str) -> Result<(), DomainError> {
    if value.len() != 64
        || !value
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return Err(DomainError::invalid(
            "hash",
            "must be a SHA-256 in lowercase hex",
        ));
    }
    Ok(())
}

impl State {
    pub(super) fn set_password(
        &mut self,
        person: &str,
        by: &Option<String>,
        hash: &Option<String>,
        now: Timestamp,
    ) -> Outcome {
        check_person("person", person)?;
        if let Some(by) = by {
            if by != person && !self.is_admin(by) {
                return Err(DomainError::NotOwner {
                    who: by.clone(),
                    what: format!("the password of {person}"),
                });
            }
        }
        match hash {
            Some(h) => {
                if !h.starts_with("$argon2id$")
                    || h.len() > MAX_HASH
                    || h.chars().any(char::is_control)
                {
                    return Err(DomainError::invalid(
                        "hash",
                        "must be an argon2id PHC string ($argon2id$...)",
                    ));
                }
                self.passwords.insert(
                    person.to_owned(),
                    PasswordRecord {
                        hash: h.clone(),
                        set_at: now,
                    },
                );
            }
            None => {
                self.passwords.remove(person);
            }
        }
        // A new password ends the person's sessions opened before it.
        let ended: Vec<String> = self
            .web_sessions
            .iter()
            .filter(|(_, s)| s.person == person)
            .map(|(k, _)| k.clone())
            .collect();
        for k in ended {
            self.web_sessions.remove(&k);
        }
        Ok(Reply::Done)
    }

    pub(super) fn open_web_session(
        &mut self,
        hash: &str,
        person: &str,
        expires_at: Timestamp,
        now: Timestamp,
    ) -> Outcome {
        check_sha256(hash)?;
        check_person("person", person)?;
        if expires_at <= now || expires_at.0 - now.0 > MAX_WEB_SESSION_MICROS {
            return Err(DomainError::invalid(
                "expires_at",
                "must be in the future, within 30 days",
            ));
        }
        if self.web_sessions.contains_key(hash) {
            return Err(DomainError::invalid(
                "hash",
                "a session with this token exists",
            ));
        }
        // Forget the sessions that ended (deterministic: the command's time).
        let expired: Vec<String> = self
            .web_sessions
            .iter()
            .filter(|(_, s)| s.expires_at <= now)
            .map(|(k, _)| k.clone())
            .collect();
        for k in expired {
            self.web_sessions.remove(&k);
        }
        self.web_sessions.insert(
            hash.to_owned(),
            WebSession {
                person: person.to_owned(),
                opened_at: now,
                expires_at,
            },
        );
        Ok(Reply::Done)
    }

    pub(super) fn end_web_session(&mut self, hash: &str) -> Outcome {
        check_sha256(hash)?;
        self.web_sessions.remove(hash);
        Ok(Reply::Done)
    }

    /// A person's portal password hash, if they set one.
    pub fn password_hash(&self, person: &str) -> Option<&str> {
        self.passwords.get(person).map(|r| r.hash.as_str())
    }

    /// The portal session of a token's SHA-256 (hex), ended or not: the reader compares
    /// `expires_at` with its own time.
    pub fn web_session(&self, hash: &str) -> Option<&WebSession> {
        self.web_sessions.get(hash)
    }
}

impl State {
    /// The software releases requested available on each computer of this state, by
    /// URL (a [`crate::Query::Catalog`] read: those a person may be given).
    pub fn supplied_releases(&self) -> std::collections::BTreeMap<&str, Vec<&str>> {
        let mut out: std::collections::BTreeMap<&str, Vec<&str>> = Default::default();
        for ((computer, url), sw) in self.software.iter() {
            if sw.requested == crate::records::SoftwareState::Available {
                out.entry(url.as_str()).or_default().push(computer.as_str());
            }
        }
        out
    }
}
