//! The certificate authority's decoders: CSRs (`slapos_ca::check_csr`, then
//! `Authority::issue`), proofs of possession (`slapos_proto::proof::from_hex`,
//! `slapos_ca::check_proof`) and the certificates a gateway relays
//! (`slapos_ca::check_presented`, `identity_of`).
//!
//! The fixtures (`fixtures/`, made with openssl for the fuzz targets only, never used
//! elsewhere): a CA, a computer certificate `computer:COMP-FUZZ` it issued (serial
//! 4660), and a proof (`renew.proof`) made with that computer's key over
//! `proof::message(Renew, renew.csr)`.

use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

use slapos_ca::{Authority, IssueRequest, MAX_CSR_BYTES};
use slapos_domain::{CaMaterial, Identity};
use slapos_proto::proof::{self, Purpose};

pub const CA_PEM: &str = include_str!("../fixtures/ca.pem");
const CA_KEY: &str = include_str!("../fixtures/ca.key");
pub const COMPUTER_PEM: &str = include_str!("../fixtures/computer.pem");
pub const COMPUTER_KEY: &str = include_str!("../fixtures/computer.key");
pub const RENEW_CSR: &str = include_str!("../fixtures/renew.csr");
pub const RENEW_PROOF: &str = include_str!("../fixtures/renew.proof");

/// Seconds since the epoch at which the fixtures are current (2030-01-01).
pub const NOW: i64 = 1_893_456_000;

fn authority() -> &'static Authority {
    static AUTHORITY: OnceLock<Authority> = OnceLock::new();
    AUTHORITY.get_or_init(|| {
        Authority::load(&CaMaterial {
            cert_pem: CA_PEM.to_string(),
            key_pem: CA_KEY.to_string(),
            group: "fuzz".to_string(),
        })
        .expect("the fixture CA loads")
    })
}

/// PEM text of `der` under `label`.
pub fn pem_of(label: &str, der: &[u8]) -> String {
    pem::encode(&pem::Pem::new(label, der.to_vec()))
}

/// The text an input stands for: byte 0's low bit says whether the rest is the text
/// itself (it must be UTF-8) or DER bytes to wrap in PEM under `label`, so the fuzzer
/// explores both the PEM layer and the DER inside.
fn text_of(data: &[u8], label: &str) -> Option<(u8, String)> {
    let (&mode, rest) = data.split_first()?;
    if mode & 1 == 0 {
        Some((mode, std::str::from_utf8(rest).ok()?.to_string()))
    } else {
        Some((mode, pem_of(label, rest)))
    }
}

/// `ca_csr`: a CSR ([`text_of`], label `CERTIFICATE REQUEST`). Asserts that what
/// `check_csr` accepts (what a gateway checks before a one-time token is spent on it) is
/// within `MAX_CSR_BYTES` and is what the authority then signs: `issue` succeeds, and
/// the certificate names the identity and serial asked for.
pub fn csr(data: &[u8]) {
    let Some((_, text)) = text_of(data, "CERTIFICATE REQUEST") else {
        return;
    };
    if slapos_ca::check_csr(&text).is_err() {
        return;
    }
    assert!(text.len() <= MAX_CSR_BYTES);
    let not_before = SystemTime::UNIX_EPOCH + Duration::from_secs(NOW as u64);
    let identity = Identity::Computer("COMP-FUZZ".to_string());
    let issued = authority().issue(&IssueRequest {
        csr_pem: &text,
        identity: identity.clone(),
        serial: 7,
        not_before,
        not_after: not_before + Duration::from_secs(86400),
        dns_names: Vec::new(),
        ip_addresses: Vec::new(),
    });
    let issued = match issued {
        Ok(i) => i,
        Err(e) => panic!("check_csr accepted a CSR the authority refuses: {e}"),
    };
    match slapos_ca::identity_of_pem(&issued.pem) {
        Ok(read) => assert_eq!(read, (identity, 7)),
        Err(e) => panic!("an issued certificate does not read: {e}"),
    }
}

/// `ca_proof`: byte 0 picks what the rest is.
/// * `0 mod 3`: the hex of a proof: `from_hex` accepts at most 1024 bytes, and only
///   what is two hex digits per byte (`to_hex` gives it back, lowercased); `check_proof`
///   of it against the fixture certificate and renewal never panics, and accepts it only
///   when `from_hex` does.
/// * `1 mod 3`: DER of a presented certificate (wrapped in PEM); `2 mod 3`: its PEM text.
///   `check_presented` accepts only a certificate the fixture CA signed, current at
///   [`NOW`], naming the identity and serial `identity_of` reads; `check_proof` of the
///   fixture proof against it never panics.
pub fn proof(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let message = proof::message(&Purpose::Renew, RENEW_CSR);
    match mode % 3 {
        0 => {
            let Ok(text) = std::str::from_utf8(rest) else {
                return;
            };
            let bytes = proof::from_hex(text);
            if let Some(bytes) = &bytes {
                assert!(bytes.len() <= 1024);
                assert_eq!(
                    proof::to_hex(bytes),
                    text.trim().to_ascii_lowercase(),
                    "from_hex accepted what is not hex"
                );
            }
            if slapos_ca::check_proof(COMPUTER_PEM, &message, text).is_ok() {
                assert!(
                    bytes.is_some(),
                    "check_proof accepted what from_hex refuses"
                );
            }
        }
        m => {
            let text = if m == 1 {
                pem_of("CERTIFICATE", rest)
            } else {
                match std::str::from_utf8(rest) {
                    Ok(t) => t.to_string(),
                    Err(_) => return,
                }
            };
            let read = slapos_ca::identity_of_pem(&text);
            if let Ok(presented) = slapos_ca::check_presented(CA_PEM, &text, NOW) {
                assert!(presented.not_before <= NOW && NOW <= presented.not_after);
                match read {
                    Ok(r) => assert_eq!(r, (presented.identity, presented.serial)),
                    Err(e) => panic!("check_presented accepted what identity_of refuses: {e}"),
                }
            }
            let _ = slapos_ca::check_proof(&text, &message, RENEW_PROOF);
        }
    }
}
