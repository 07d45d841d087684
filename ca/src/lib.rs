//! The master's certificate authority: one key pair for the whole group, from which every
//! identity gets its certificate (computers, partitions, persons, replicas, gateways).
//!
//! Only the proposer touches key material and randomness: the CA is created by
//! `slapos master init` and travels to the replicas as data ([`CaMaterial`]); a
//! certificate is signed by the leader from a certificate signing request and only its
//! record goes through Raft. `apply` stays deterministic.
//!
//! Who a certificate names is decided here, never by the requester: the subject of an
//! issued certificate is the [`Identity`] the caller was entitled to, and a CSR only
//! contributes its public key (and proves, by its signature, that the requester holds the
//! private key). The identity is the certificate's common name, `<kind>:<id>`
//! (`computer:COMP-1`, `partition:COMP-1:slappart0`, `person:alice`, `replica:3`,
//! `gateway:gw-eu`), parsed back by [`identity_of`] on every connection.

use std::net::IpAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
pub use slapos_domain::identity::{CaMaterial, Identity};

/// Largest CSR accepted (a P-384 or RSA-4096 request with a few names is far below).
pub const MAX_CSR_BYTES: usize = 16 * 1024;
/// The organisation every certificate of the group names.
const ORGANIZATION: &str = "SlapOS";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CaError {
    #[error(transparent)]
    BadIdentity(#[from] slapos_domain::identity::BadIdentity),
    #[error("certificate signing request refused: {0}")]
    BadRequest(String),
    #[error("certificate not readable: {0}")]
    BadCertificate(String),
    #[error("certificate authority material unusable: {0}")]
    BadMaterial(String),
    #[error("validity {0}")]
    BadValidity(String),
    #[error("signing failed: {0}")]
    Signing(String),
}

/// What a certificate is issued for.
#[derive(Debug, Clone)]
pub struct IssueRequest<'a> {
    /// The requester's CSR (PEM): its public key, proven by its signature.
    pub csr_pem: &'a str,
    pub identity: Identity,
    /// Unique per issued certificate (the leader draws it at random; records refuse reuse).
    pub serial: u128,
    pub not_before: SystemTime,
    pub not_after: SystemTime,
    /// Server certificates: the names and addresses the server is reached by.
    pub dns_names: Vec<String>,
    pub ip_addresses: Vec<IpAddr>,
}

/// An issued certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issued {
    pub pem: String,
    pub serial: u128,
    pub identity: Identity,
    pub not_after_unix: u64,
}

fn unix(t: SystemTime) -> Result<i64, CaError> {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .map_err(|_| CaError::BadValidity("before 1970".into()))
}

fn offset(t: SystemTime) -> Result<time::OffsetDateTime, CaError> {
    time::OffsetDateTime::from_unix_timestamp(unix(t)?)
        .map_err(|e| CaError::BadValidity(e.to_string()))
}

fn serial_number(serial: u128) -> SerialNumber {
    // Positive and without leading zeros, as DER INTEGERs want.
    let bytes = serial.to_be_bytes();
    let start = bytes.iter().position(|b| *b != 0).unwrap_or(15);
    let mut v = bytes[start..].to_vec();
    if v[0] & 0x80 != 0 {
        v.insert(0, 0);
    }
    SerialNumber::from_slice(&v)
}

fn name(common_name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, ORGANIZATION);
    dn.push(DnType::CommonName, common_name);
    dn
}

/// The group's certificate authority, ready to sign.
pub struct Authority {
    issuer: Issuer<'static, KeyPair>,
    cert_pem: String,
}

impl std::fmt::Debug for Authority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authority").finish_non_exhaustive()
    }
}

impl Authority {
    /// A new CA (ECDSA P-256), valid `years` from `now`, named after the group.
    pub fn create(
        group: &str,
        now: SystemTime,
        years: u32,
    ) -> Result<(Authority, CaMaterial), CaError> {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
            .map_err(|e| CaError::Signing(e.to_string()))?;
        let mut params = CertificateParams::default();
        params.distinguished_name = name(&format!("SlapOS CA {group}"));
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.not_before = offset(now - Duration::from_secs(3600))?;
        params.not_after = offset(now + Duration::from_secs(u64::from(years) * 365 * 86400))?;
        params.serial_number = Some(serial_number(1));
        let cert = params
            .self_signed(&key)
            .map_err(|e| CaError::Signing(e.to_string()))?;
        let material = CaMaterial {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            group: new_group_id()?,
        };
        let authority = Authority::load(&material)?;
        Ok((authority, material))
    }

    /// The CA from its stored material.
    pub fn load(material: &CaMaterial) -> Result<Authority, CaError> {
        let key = KeyPair::from_pem(&material.key_pem)
            .map_err(|e| CaError::BadMaterial(format!("key: {e}")))?;
        let issuer = Issuer::from_ca_cert_pem(&material.cert_pem, key)
            .map_err(|e| CaError::BadMaterial(format!("certificate: {e}")))?;
        Ok(Authority {
            issuer,
            cert_pem: material.cert_pem.clone(),
        })
    }

    /// The CA certificate (what clients and servers trust).
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// Signs the CSR's public key for `request.identity`.
    pub fn issue(&self, request: &IssueRequest<'_>) -> Result<Issued, CaError> {
        request.identity.check()?;
        if request.csr_pem.len() > MAX_CSR_BYTES {
            return Err(CaError::BadRequest(format!(
                "larger than {MAX_CSR_BYTES} bytes"
            )));
        }
        if request.serial == 0 {
            return Err(CaError::BadRequest("serial 0".into()));
        }
        if request.not_after <= request.not_before {
            return Err(CaError::BadValidity("ends before it starts".into()));
        }
        // Parses and checks the CSR's own signature (proof of possession of the key).
        let csr = CertificateSigningRequestParams::from_pem(request.csr_pem)
            .map_err(|e| CaError::BadRequest(e.to_string()))?;
        let mut params = CertificateParams::default();
        params.distinguished_name = name(&request.identity.common_name());
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = if request.identity.is_server() {
            vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ]
        } else {
            vec![ExtendedKeyUsagePurpose::ClientAuth]
        };
        if request.identity.is_server() {
            for dns in &request.dns_names {
                let name = dns
                    .as_str()
                    .try_into()
                    .map_err(|_| CaError::BadRequest(format!("not a DNS name: {dns:?}")))?;
                params.subject_alt_names.push(SanType::DnsName(name));
            }
            for ip in &request.ip_addresses {
                params.subject_alt_names.push(SanType::IpAddress(*ip));
            }
        } else if !request.dns_names.is_empty() || !request.ip_addresses.is_empty() {
            return Err(CaError::BadRequest(
                "only replicas and gateways get server names".into(),
            ));
        }
        params.not_before = offset(request.not_before)?;
        params.not_after = offset(request.not_after)?;
        params.serial_number = Some(serial_number(request.serial));
        params.use_authority_key_identifier_extension = true;
        let cert = params
            .signed_by(&csr.public_key, &self.issuer)
            .map_err(|e| CaError::Signing(e.to_string()))?;
        Ok(Issued {
            pem: cert.pem(),
            serial: request.serial,
            identity: request.identity.clone(),
            not_after_unix: unix(request.not_after)? as u64,
        })
    }
}

/// How long a certificate lasts when the caller does not say: servers and computers a
/// year, partitions 90 days (renewed by the node), persons a year.
pub fn default_validity(identity: &Identity) -> Duration {
    match identity {
        Identity::Partition { .. } => Duration::from_secs(90 * 86400),
        _ => Duration::from_secs(365 * 86400),
    }
}

/// A new group id: 128 random bits, hex.
pub fn new_group_id() -> Result<String, CaError> {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 16];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| CaError::Signing("no randomness for a group id".into()))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// A random, positive, 127-bit serial (RFC 5280 wants them unpredictable and unique).
pub fn random_serial() -> Result<u128, CaError> {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 16];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| CaError::Signing("no randomness".into()))?;
    let serial = u128::from_be_bytes(bytes) >> 1;
    Ok(serial.max(1))
}

/// The identity and serial a certificate (DER) carries. The chain to the CA is the TLS
/// layer's business; this reads who it names.
/// [`identity_of`] a PEM certificate.
pub fn identity_of_pem(pem: &str) -> Result<(Identity, u128), CaError> {
    let (_, block) = x509_parser::pem::parse_x509_pem(pem.as_bytes())
        .map_err(|e| CaError::BadCertificate(e.to_string()))?;
    identity_of(&block.contents)
}

pub fn identity_of(der: &[u8]) -> Result<(Identity, u128), CaError> {
    use x509_parser::prelude::{FromDer, X509Certificate};
    let (_, cert) =
        X509Certificate::from_der(der).map_err(|e| CaError::BadCertificate(e.to_string()))?;
    let mut names = cert.subject().iter_common_name();
    let cn = names
        .next()
        .and_then(|a| a.as_str().ok())
        .ok_or_else(|| CaError::BadCertificate("no common name".into()))?;
    if names.next().is_some() {
        return Err(CaError::BadCertificate("several common names".into()));
    }
    let raw = cert.tbs_certificate.raw_serial();
    if raw.len() > 17 {
        return Err(CaError::BadCertificate(
            "serial longer than 128 bits".into(),
        ));
    }
    let serial = raw.iter().fold(0u128, |acc, b| (acc << 8) | u128::from(*b));
    Ok((Identity::parse(cn)?, serial))
}

/// (not_before, not_after) of a certificate (DER), seconds since the epoch.
pub fn validity_of(der: &[u8]) -> Option<(i64, i64)> {
    use x509_parser::prelude::{FromDer, X509Certificate};
    let (_, cert) = X509Certificate::from_der(der).ok()?;
    let v = cert.validity();
    Some((v.not_before.timestamp(), v.not_after.timestamp()))
}

/// Whether a CSR (PEM) reads and its signature holds: checked before a one-time token is
/// spent on it.
pub fn check_csr(pem: &str) -> Result<(), CaError> {
    if pem.len() > MAX_CSR_BYTES {
        return Err(CaError::BadRequest(format!(
            "larger than {MAX_CSR_BYTES} bytes"
        )));
    }
    CertificateSigningRequestParams::from_pem(pem)
        .map(|_| ())
        .map_err(|e| CaError::BadRequest(e.to_string()))
}

/// A certificate a caller presented, as the group checked it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Presented {
    pub identity: Identity,
    pub serial: u128,
    /// Seconds since the epoch.
    pub not_before: i64,
    pub not_after: i64,
}

impl Presented {
    /// How long it was granted for.
    pub fn lifetime(&self) -> Duration {
        Duration::from_secs((self.not_after - self.not_before).max(0) as u64)
    }
}

/// Checks a certificate (PEM) a gateway relays for its caller: signed by the group's
/// authority (`ca_pem`) and current at `now` (seconds since the epoch). Revocation is
/// the caller's to check against the state.
pub fn check_presented(ca_pem: &str, presented_pem: &str, now: i64) -> Result<Presented, CaError> {
    use x509_parser::prelude::{FromDer, X509Certificate};
    let bad = |why: String| CaError::BadCertificate(why);
    if presented_pem.len() > MAX_CSR_BYTES {
        return Err(bad(format!("larger than {MAX_CSR_BYTES} bytes")));
    }
    let (_, ca_block) = x509_parser::pem::parse_x509_pem(ca_pem.as_bytes())
        .map_err(|e| CaError::BadMaterial(e.to_string()))?;
    let (_, ca) = X509Certificate::from_der(&ca_block.contents)
        .map_err(|e| CaError::BadMaterial(e.to_string()))?;
    let (_, block) = x509_parser::pem::parse_x509_pem(presented_pem.as_bytes())
        .map_err(|e| bad(e.to_string()))?;
    let (_, cert) = X509Certificate::from_der(&block.contents).map_err(|e| bad(e.to_string()))?;
    cert.verify_signature(Some(ca.public_key()))
        .map_err(|_| bad("not issued by the group's authority".into()))?;
    let (identity, serial) = identity_of(&block.contents)?;
    let v = cert.validity();
    let (not_before, not_after) = (v.not_before.timestamp(), v.not_after.timestamp());
    if now < not_before || now > not_after {
        return Err(bad(format!("{} is not current", identity.common_name())));
    }
    Ok(Presented {
        identity,
        serial,
        not_before,
        not_after,
    })
}

/// The PEM text of a DER certificate (what a gateway relays of its caller's).
pub fn certificate_pem(der: &[u8]) -> String {
    pem::encode(&pem::Pem::new("CERTIFICATE", der.to_vec()))
}

/// Checks `proof` (hex, `slapos_proto::proof`): a signature over `message` by the key of
/// the certificate `presented_pem` (ECDSA P-256 or P-384, or Ed25519: the keys the group's
/// tools make).
pub fn check_proof(presented_pem: &str, message: &[u8], proof: &str) -> Result<(), CaError> {
    use x509_parser::prelude::{FromDer, X509Certificate};
    let refused = |why: &str| CaError::BadRequest(format!("proof of possession: {why}"));
    let signature = slapos_proto::proof::from_hex(proof).ok_or_else(|| refused("not hex"))?;
    let (_, block) = x509_parser::pem::parse_x509_pem(presented_pem.as_bytes())
        .map_err(|e| CaError::BadCertificate(e.to_string()))?;
    let (_, cert) = X509Certificate::from_der(&block.contents)
        .map_err(|e| CaError::BadCertificate(e.to_string()))?;
    let spki = cert.public_key();
    let key = &spki.subject_public_key.data;
    let algorithm: &'static dyn ring::signature::VerificationAlgorithm =
        match spki.algorithm.algorithm.to_id_string().as_str() {
            // id-ecPublicKey, by curve
            "1.2.840.10045.2.1" => {
                let curve = spki
                    .algorithm
                    .parameters
                    .as_ref()
                    .and_then(|p| p.as_oid().ok())
                    .map(|o| o.to_id_string());
                match curve.as_deref() {
                    Some("1.2.840.10045.3.1.7") => &ring::signature::ECDSA_P256_SHA256_ASN1,
                    Some("1.3.132.0.34") => &ring::signature::ECDSA_P384_SHA384_ASN1,
                    _ => return Err(refused("unsupported elliptic curve")),
                }
            }
            "1.3.101.112" => &ring::signature::ED25519,
            _ => return Err(refused("unsupported key type")),
        };
    ring::signature::UnparsedPublicKey::new(algorithm, key.as_ref())
        .verify(message, &signature)
        .map_err(|_| refused("the signature does not match the presented certificate's key"))
}

/// Signs `message` with a private key (PEM) for [`check_proof`]: what the `slapos`
/// tools run for a renewal.
pub fn sign_proof(key_pem: &str, message: &[u8]) -> Result<String, CaError> {
    use rcgen::SigningKey;
    let key = KeyPair::from_pem(key_pem).map_err(|e| CaError::Signing(e.to_string()))?;
    let signature = key
        .sign(message)
        .map_err(|e| CaError::Signing(e.to_string()))?;
    Ok(slapos_proto::proof::to_hex(&signature))
}

/// A fresh key pair and a CSR for it (what a node, a person or a replica runs before
/// asking for a certificate): (key PEM, CSR PEM). The CSR's subject is informative only.
pub fn new_key_and_csr(identity: &Identity) -> Result<(String, String), CaError> {
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
        .map_err(|e| CaError::Signing(e.to_string()))?;
    let mut params = CertificateParams::default();
    params.distinguished_name = name(&identity.common_name());
    let csr = params
        .serialize_request(&key)
        .map_err(|e| CaError::Signing(e.to_string()))?;
    let pem = csr.pem().map_err(|e| CaError::Signing(e.to_string()))?;
    Ok((key.serialize_pem(), pem))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, UnixTime};

    fn now() -> SystemTime {
        SystemTime::now()
    }

    fn request<'a>(csr: &'a str, identity: Identity, serial: u128) -> IssueRequest<'a> {
        IssueRequest {
            csr_pem: csr,
            identity,
            serial,
            not_before: now() - Duration::from_secs(60),
            not_after: now() + Duration::from_secs(86400),
            dns_names: Vec::new(),
            ip_addresses: Vec::new(),
        }
    }

    /// Whether `cert_pem` is accepted as a client certificate by a rustls server that
    /// trusts `ca_pem` (what the gateway will do).
    fn accepted_by(ca_pem: &str, cert_pem: &str) -> bool {
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_slice(ca_pem.as_bytes()).unwrap())
            .unwrap();
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let verifier =
            rustls::server::WebPkiClientVerifier::builder_with_provider(roots.into(), provider)
                .build()
                .unwrap();
        let cert = CertificateDer::from_pem_slice(cert_pem.as_bytes()).unwrap();
        verifier
            .verify_client_cert(&cert, &[], UnixTime::now())
            .is_ok()
    }

    #[test]
    fn issues_certificates_a_tls_server_accepts_and_that_name_the_identity() {
        let (ca, material) = Authority::create("test", now(), 10).unwrap();
        let reloaded = Authority::load(&material).unwrap();
        for (i, identity) in [
            Identity::Computer("COMP-1".into()),
            Identity::Partition {
                computer: "COMP-1".into(),
                partition: "slappart0".into(),
            },
            Identity::Person("alice@example.org".into()),
        ]
        .into_iter()
        .enumerate()
        {
            let (_key, csr) = new_key_and_csr(&identity).unwrap();
            let serial = 1000 + i as u128 + (u128::MAX >> 1);
            let issued = reloaded
                .issue(&request(&csr, identity.clone(), serial))
                .unwrap();
            assert!(accepted_by(ca.cert_pem(), &issued.pem), "{identity:?}");
            let der = CertificateDer::from_pem_slice(issued.pem.as_bytes()).unwrap();
            assert_eq!(identity_of(&der).unwrap(), (identity, serial));
        }
    }

    #[test]
    fn the_csr_subject_never_decides_the_identity() {
        let (ca, _) = Authority::create("test", now(), 10).unwrap();
        // A CSR claiming to be a person; the caller is entitled to a computer identity.
        let (_key, csr) = new_key_and_csr(&Identity::Person("admin".into())).unwrap();
        let issued = ca
            .issue(&request(&csr, Identity::Computer("COMP-2".into()), 7))
            .unwrap();
        let der = CertificateDer::from_pem_slice(issued.pem.as_bytes()).unwrap();
        assert_eq!(
            identity_of(&der).unwrap().0,
            Identity::Computer("COMP-2".into())
        );
    }

    #[test]
    fn another_authoritys_certificate_is_not_accepted() {
        let (ours, _) = Authority::create("ours", now(), 10).unwrap();
        let (theirs, _) = Authority::create("theirs", now(), 10).unwrap();
        let (_k, csr) = new_key_and_csr(&Identity::Computer("COMP-1".into())).unwrap();
        let foreign = theirs
            .issue(&request(&csr, Identity::Computer("COMP-1".into()), 9))
            .unwrap();
        assert!(!accepted_by(ours.cert_pem(), &foreign.pem));
        // And an expired one of ours is not either.
        let expired = ours
            .issue(&IssueRequest {
                not_before: now() - Duration::from_secs(7200),
                not_after: now() - Duration::from_secs(3600),
                ..request(&csr, Identity::Computer("COMP-1".into()), 10)
            })
            .unwrap();
        assert!(!accepted_by(ours.cert_pem(), &expired.pem));
    }

    #[test]
    fn server_names_only_for_servers_and_bad_requests_are_refused() {
        let (ca, _) = Authority::create("t", now(), 10).unwrap();
        let (_k, csr) = new_key_and_csr(&Identity::Replica(1)).unwrap();
        let mut r = request(&csr, Identity::Replica(1), 11);
        r.dns_names = vec!["replica-1.example".into()];
        r.ip_addresses = vec!["2001:db8::1".parse().unwrap()];
        assert!(ca.issue(&r).is_ok());
        r.identity = Identity::Computer("C".into());
        assert!(matches!(ca.issue(&r), Err(CaError::BadRequest(_))));
        let r = request(&csr, Identity::Computer("a/b".into()), 12);
        assert!(matches!(ca.issue(&r), Err(CaError::BadIdentity(_))));
        let r = request(
            "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n",
            Identity::Computer("C".into()),
            13,
        );
        assert!(matches!(ca.issue(&r), Err(CaError::BadRequest(_))));
        // A CSR whose signature does not match its key: refused.
        let tampered = csr.replacen('A', "B", 1);
        let r = request(&tampered, Identity::Computer("C".into()), 14);
        assert!(ca.issue(&r).is_err());
        let r = request(&csr, Identity::Computer("C".into()), 0);
        assert!(ca.issue(&r).is_err());
    }

    #[test]
    fn a_presented_certificate_and_its_proof_are_checked_against_the_group() {
        let (ours, _) = Authority::create("ours", now(), 10).unwrap();
        let (theirs, _) = Authority::create("theirs", now(), 10).unwrap();
        let identity = Identity::Computer("COMP-1".into());
        let (key, csr) = new_key_and_csr(&identity).unwrap();
        let cert = ours.issue(&request(&csr, identity.clone(), 7)).unwrap().pem;
        let secs = unix(now()).unwrap();
        let presented = check_presented(ours.cert_pem(), &cert, secs).unwrap();
        assert_eq!(presented.identity, identity);
        assert_eq!(presented.serial, 7);
        // Another authority's certificate, or one out of its dates, is refused.
        assert!(check_presented(theirs.cert_pem(), &cert, secs).is_err());
        assert!(check_presented(ours.cert_pem(), &cert, secs + 2 * 86400).is_err());
        // The proof: the holder of the key signs the new CSR for one purpose.
        let (_, new_csr) = new_key_and_csr(&identity).unwrap();
        let renew = slapos_proto::proof::message(&slapos_proto::proof::Purpose::Renew, &new_csr);
        let proof = sign_proof(&key, &renew).unwrap();
        check_proof(&cert, &renew, &proof).unwrap();
        // Not for another CSR, another purpose, or by another key.
        let (_, other_csr) = new_key_and_csr(&identity).unwrap();
        let other = slapos_proto::proof::message(&slapos_proto::proof::Purpose::Renew, &other_csr);
        assert!(check_proof(&cert, &other, &proof).is_err());
        let part = slapos_proto::proof::message(
            &slapos_proto::proof::Purpose::Partition {
                computer: "COMP-1",
                partition: "slappart0",
            },
            &new_csr,
        );
        assert!(check_proof(&cert, &part, &proof).is_err());
        let (stranger, _) = new_key_and_csr(&identity).unwrap();
        let forged = sign_proof(&stranger, &renew).unwrap();
        assert!(check_proof(&cert, &renew, &forged).is_err());
        assert!(check_proof(&cert, &renew, "zz").is_err());
    }

    #[test]
    fn identities_round_trip_and_malformed_names_are_refused() {
        for good in [
            "computer:COMP-1",
            "partition:COMP-1:slappart0",
            "person:alice@example.org",
            "replica:3",
            "gateway:gw-eu",
        ] {
            assert_eq!(Identity::parse(good).unwrap().common_name(), good);
        }
        for bad in [
            "",
            "computer:",
            "computer:a b",
            "computer:a:b",
            "partition:COMP-1",
            "replica:0",
            "replica:03",
            "admin:root",
            "person:../x",
        ] {
            assert!(Identity::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    proptest! {
        #[test]
        fn any_common_name_parses_to_itself_or_is_refused(s in "\\PC{0,80}") {
            if let Ok(identity) = Identity::parse(&s) {
                prop_assert_eq!(identity.common_name(), s);
            }
        }

        #[test]
        fn any_csr_text_is_refused_or_issued_without_panicking(
            body in proptest::collection::vec(any::<u8>(), 0..600),
            armour in any::<bool>(),
        ) {
            let (ca, _) = Authority::create("p", SystemTime::now(), 1).unwrap();
            let text = if armour {
                use std::fmt::Write;
                let mut b64 = String::new();
                for chunk in body.chunks(3) {
                    for b in chunk { let _ = write!(b64, "{b:02x}"); }
                }
                format!("-----BEGIN CERTIFICATE REQUEST-----\n{b64}\n-----END CERTIFICATE REQUEST-----\n")
            } else {
                String::from_utf8_lossy(&body).into_owned()
            };
            let r = request(&text, Identity::Computer("C".into()), 5);
            prop_assert!(ca.issue(&r).is_err());
        }
    }
}
