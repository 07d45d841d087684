//! Identifiers and time, as they travel inside commands.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Identifies one write for exactly-once application: the client that proposed it and a
/// sequence number that client never reuses. A retry carries the same id and gets the
/// first outcome back.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct RequestId {
    pub client: String,
    pub seq: u64,
}

impl RequestId {
    pub fn new(client: impl Into<String>, seq: u64) -> Self {
        RequestId {
            client: client.into(),
            seq,
        }
    }
}

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}#{}", self.client, self.seq)
    }
}

/// Microseconds since the Unix epoch, stamped on a command by its proposer.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
pub struct Timestamp(pub u64);

impl Timestamp {
    pub const fn from_micros(micros: u64) -> Self {
        Timestamp(micros)
    }

    pub const fn from_secs(secs: u64) -> Self {
        Timestamp(secs * 1_000_000)
    }

    pub const fn micros(self) -> u64 {
        self.0
    }

    pub const fn secs(self) -> u64 {
        self.0 / 1_000_000
    }

    /// The next representable instant: used so that a bump always changes the value a node
    /// compares, even when two bumps share one microsecond.
    pub const fn succ(self) -> Self {
        Timestamp(self.0.saturating_add(1))
    }

    /// The form slapproxy gives `_parameter_dict['timestamp']`: Python's `str()` of the
    /// float seconds, e.g. `1795626904.594212` (and `1795626904.0` on a whole second).
    /// Nodes only test it for equality; this rendering is injective on microseconds.
    pub fn to_slap_string(self) -> String {
        let secs = self.0 / 1_000_000;
        let micros = self.0 % 1_000_000;
        if micros == 0 {
            return format!("{secs}.0");
        }
        let frac = format!("{micros:06}");
        format!("{secs}.{}", frac.trim_end_matches('0'))
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_slap_string())
    }
}

/// A software instance's id, handed out by the state from a counter. Rendered as the real
/// master does (`SOFTINST-<n>`), which is also the `instance_guid` nodes and clients see.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct InstanceId(pub u64);

impl InstanceId {
    pub const PREFIX: &'static str = "SOFTINST-";

    pub fn parse(text: &str) -> Option<Self> {
        let digits = text.strip_prefix(Self::PREFIX)?;
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        digits.parse().ok().map(InstanceId)
    }
}

impl fmt::Display for InstanceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", Self::PREFIX, self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slap_timestamp_looks_like_python_str_of_float() {
        assert_eq!(
            Timestamp(1_795_626_904_594_212).to_slap_string(),
            "1795626904.594212"
        );
        assert_eq!(
            Timestamp(1_795_626_904_750_470).to_slap_string(),
            "1795626904.75047"
        );
        assert_eq!(Timestamp::from_secs(12).to_slap_string(), "12.0");
        assert_eq!(Timestamp(1).to_slap_string(), "0.000001");
    }

    #[test]
    fn instance_ids_parse_only_their_own_form() {
        assert_eq!(InstanceId::parse("SOFTINST-42"), Some(InstanceId(42)));
        assert_eq!(InstanceId(7).to_string(), "SOFTINST-7");
        for bad in [
            "SOFTINST-",
            "SOFTINST-x",
            "COMP-1-slappart0",
            "softinst-1",
            "SOFTINST--1",
        ] {
            assert_eq!(InstanceId::parse(bad), None, "{bad}");
        }
    }
}
