//! Proofs of possession that a gateway relays but cannot make.
//!
//! A renewal or a partition's certificate is issued by the masters for a CSR that a
//! gateway passes on. So that a gateway (which holds no caller's key) cannot have a
//! certificate issued that no caller asked for, the caller signs the CSR with the key of
//! the certificate it presented: its own old key for a renewal, the computer's key for
//! one of its partitions. The masters check the signature against the presented
//! certificate, which must be theirs, unrevoked and current.
//!
//! The signed bytes name what the proof is for, so a proof made for one purpose is
//! worth nothing for another: `slapos-proof-v1`, a line with the purpose, then the CSR's
//! PEM text exactly as sent. The signature travels as lowercase hex.

/// What a proof authorises.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Purpose<'a> {
    /// A new certificate for the presented certificate's own identity.
    Renew,
    /// The certificate of partition `partition` of the presented computer.
    Partition {
        computer: &'a str,
        partition: &'a str,
    },
}

/// The bytes a caller signs for `purpose` and `csr_pem`.
pub fn message(purpose: &Purpose<'_>, csr_pem: &str) -> Vec<u8> {
    let line = match purpose {
        Purpose::Renew => "renew".to_string(),
        Purpose::Partition {
            computer,
            partition,
        } => format!("partition:{computer}:{partition}"),
    };
    let mut out = Vec::with_capacity(32 + line.len() + csr_pem.len());
    out.extend_from_slice(b"slapos-proof-v1\n");
    out.extend_from_slice(line.as_bytes());
    out.push(b'\n');
    out.extend_from_slice(csr_pem.as_bytes());
    out
}

/// Lowercase hex of a signature.
pub fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The bytes of a hex signature (two hex digits a byte, either case, surrounding
/// whitespace ignored); `None` when it is not hex or longer than any signature (an ECDSA
/// P-384 signature is at most 104 bytes, RSA-4096 512).
pub fn from_hex(text: &str) -> Option<Vec<u8>> {
    let text = text.trim().as_bytes();
    if !text.len().is_multiple_of(2) || text.len() > 2 * 1024 {
        return None;
    }
    // Digit by digit: `u8::from_str_radix` would also take a sign ("+f" is 15).
    let digit = |b: u8| char::from(b).to_digit(16);
    text.chunks_exact(2)
        .map(|pair| Some((digit(pair[0])? * 16 + digit(pair[1])?) as u8))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn purposes_sign_different_bytes() {
        let csr = "-----BEGIN CERTIFICATE REQUEST-----\nAA==\n-----END CERTIFICATE REQUEST-----\n";
        let renew = message(&Purpose::Renew, csr);
        let part = message(
            &Purpose::Partition {
                computer: "COMP-1",
                partition: "slappart0",
            },
            csr,
        );
        assert_ne!(renew, part);
        assert!(renew.starts_with(b"slapos-proof-v1\nrenew\n-----BEGIN"));
        assert!(part.starts_with(b"slapos-proof-v1\npartition:COMP-1:slappart0\n"));
    }

    #[test]
    fn hex_round_trips_and_refuses_junk() {
        let bytes = vec![0u8, 1, 0xab, 0xff];
        assert_eq!(from_hex(&to_hex(&bytes)), Some(bytes));
        assert_eq!(from_hex("abc"), None);
        assert_eq!(from_hex("zz"), None);
        assert_eq!(from_hex(&"00".repeat(2000)), None);
        assert_eq!(from_hex(" AbfF\n"), Some(vec![0xab, 0xff]));
    }

    /// Found by the `ca_proof` fuzz target (`fuzz/regressions/ca_proof/`): "+b" was read
    /// as the byte 0x0b, so one signature had several spellings.
    #[test]
    fn hex_refuses_signs() {
        assert_eq!(from_hex("+b"), None);
        assert_eq!(from_hex("ab+b"), None);
        assert_eq!(from_hex("-0"), None);
        assert_eq!(from_hex("0x"), None);
    }
}
