//! A partition's certificate (slapgrid-behaviour.md 4.8), its key **made on the node**,
//! where it is used: the agent makes the key in the certificate repository (0400, owned
//! by the partition's user), sends a signing request with `signComputerPartitionCertificate`
//! (the master names the identity `partition:<computer>:<partition>`; the caller is the
//! computer's certificate) and writes the certificate beside it. A gateway that does not
//! know the method (404: an older gateway, slapproxy) gets the legacy
//! `getComputerPartitionCertificate`, where the master made the key, written as before.
//!
//! A pair is re-issued with a fresh key when one of the two is missing, when they do not
//! match (or do not parse), or when the certificate is within a third of its lifetime of
//! its end. The new key and certificate are staged as `<file>.next` and renamed into
//! place (as `register.rs` does for the node's own pair), so the two files always form a
//! pair, even after a crash.

use std::path::{Path, PathBuf};

use crate::client::{SlapClient, SlapError};
use crate::fsutil::write_in;
use crate::node::{io_err, NodeError};
use crate::register::finish_renewal;

/// What [`refresh`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refreshed {
    /// The pair in place is good for now: nothing asked.
    Kept,
    /// A new key made here, its certificate signed by the master.
    Issued,
    /// An older master: the pair it made and delivered was written (`false`: it had none,
    /// as slapproxy).
    Legacy(bool),
    /// The master says the partition hosts no instance (409): nothing written.
    NoInstance,
}

/// Why a pair needs a new certificate (`None`: it does not).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Due {
    Missing,
    /// The key and the certificate are no pair (or one does not parse).
    Mismatch,
    /// Within a third of its lifetime of its end (or past it).
    Ending,
}

/// The validity (not before, not after; seconds since the epoch) and public key of a PEM
/// certificate.
fn certificate_facts(pem: &str) -> Option<(i64, i64, Vec<u8>)> {
    use x509_parser::prelude::{FromDer, X509Certificate};
    let der = x509_parser::pem::parse_x509_pem(pem.as_bytes()).ok()?.1;
    let (_, cert) = X509Certificate::from_der(&der.contents).ok()?;
    let validity = cert.validity();
    Some((
        validity.not_before.timestamp(),
        validity.not_after.timestamp(),
        cert.public_key().subject_public_key.data.to_vec(),
    ))
}

/// Whether the pair (`key`, `cert`, PEM texts) needs a new certificate at `now`.
pub fn due(key: Option<&str>, cert: Option<&str>, now: i64) -> Option<Due> {
    let (Some(key), Some(cert)) = (key, cert) else {
        return Some(Due::Missing);
    };
    let Some((start, end, public)) = certificate_facts(cert) else {
        return Some(Due::Mismatch);
    };
    match rcgen::KeyPair::from_pem(key) {
        Ok(k) if k.public_key_raw() == public.as_slice() => {}
        _ => return Some(Due::Mismatch),
    }
    let lifetime = (end - start).max(0);
    (end - now <= lifetime / 3).then_some(Due::Ending)
}

fn read(path: &Path) -> Option<String> {
    std::fs::read_to_string(path).ok()
}

/// `<file>.next`, where a new key or certificate is staged.
fn staged(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".next");
    path.with_file_name(name)
}

/// Writes `content` at `path` (0400, owned by `owner` when given) without following a
/// link; the certificate repository is the agent's own directory.
fn write_private(path: &Path, content: &str, owner: Option<(u32, u32)>) -> Result<bool, NodeError> {
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return Err(NodeError::Invalid(format!(
            "{} is not a file path",
            path.display()
        )));
    };
    write_in(dir, Path::new(name), content.as_bytes(), 0o400, owner).map_err(io_err(path))
}

/// Makes sure `key_path` and `cert_path` hold a good pair for partition `pid` of
/// `computer_id` at `now` (see the module). `owner` (uid, gid) owns both files when
/// given. A failed renewal of a pair that still works is logged and the pair kept; one
/// without a usable pair is an error.
pub fn refresh(
    client: &SlapClient,
    node_key: Option<&Path>,
    computer_id: &str,
    pid: &str,
    (key_path, cert_path): (&Path, &Path),
    owner: Option<(u32, u32)>,
    now: i64,
) -> Result<Refreshed, NodeError> {
    // A renewal a crash cut is completed (or dropped) first.
    finish_renewal(key_path, cert_path)?;
    let current_key = read(key_path);
    let current_cert = read(cert_path);
    let Some(why) = due(current_key.as_deref(), current_cert.as_deref(), now) else {
        return Ok(Refreshed::Kept);
    };
    // A pair that still works (ending, not ended) survives a failed renewal.
    let usable = why == Due::Ending
        && current_cert
            .as_deref()
            .and_then(certificate_facts)
            .is_some_and(|(_, end, _)| end > now);
    tracing::info!(partition = pid, reason = ?why, "issuing the partition's certificate");
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
        .map_err(|e| NodeError::Invalid(format!("cannot make a key: {e}")))?;
    let mut params = rcgen::CertificateParams::default();
    params.distinguished_name.push(
        rcgen::DnType::CommonName,
        format!("partition:{computer_id}:{pid}"),
    );
    let csr = params
        .serialize_request(&key)
        .and_then(|r| r.pem())
        .map_err(|e| NodeError::Invalid(format!("cannot make a signing request: {e}")))?;
    // Signed with the computer's key: the masters issue a partition's certificate only
    // for a request its computer made (without a key there is no mTLS, and the gateway
    // takes the legacy path).
    let proof = match node_key {
        Some(k) => crate::register::proof(
            k,
            &slapos_proto::proof::Purpose::Partition {
                computer: computer_id,
                partition: pid,
            },
            &csr,
        )?,
        None => String::new(),
    };
    let answer = match client.sign_partition_certificate(computer_id, pid, &csr, &proof) {
        Ok(Some(signed)) => signed,
        Ok(None) => return legacy(client, computer_id, pid, key_path, cert_path, owner),
        Err(SlapError::Refused { status: 409, .. }) => {
            tracing::warn!(
                partition = pid,
                "the master says the partition hosts no instance: no certificate"
            );
            return Ok(Refreshed::NoInstance);
        }
        Err(e) if usable && !e.is_unreachable() => {
            tracing::warn!(partition = pid, error = %e, "certificate renewal refused: the current one is kept");
            return Ok(Refreshed::Kept);
        }
        Err(e) => return Err(e.into()),
    };
    let key_pem = key.serialize_pem();
    if due(Some(&key_pem), Some(&answer.certificate), now) == Some(Due::Mismatch) {
        return Err(NodeError::Invalid(format!(
            "signComputerPartitionCertificate: the certificate for {pid} is not for the key sent"
        )));
    }
    // Staged, then swapped in: the key first, then the certificate (finish_renewal's
    // order), so that the two files always form a pair.
    write_private(&staged(key_path), &key_pem, owner)?;
    write_private(&staged(cert_path), &answer.certificate, owner)?;
    finish_renewal(key_path, cert_path)?;
    Ok(Refreshed::Issued)
}

/// The legacy call: the master made the key; both are written as they come (0400, the
/// partition user's), nothing when the master has none (slapproxy).
fn legacy(
    client: &SlapClient,
    computer_id: &str,
    pid: &str,
    key_path: &Path,
    cert_path: &Path,
    owner: Option<(u32, u32)>,
) -> Result<Refreshed, NodeError> {
    let (cert, key) = client.partition_certificate(computer_id, pid)?;
    if cert.is_empty() && key.is_empty() {
        return Ok(Refreshed::Legacy(false));
    }
    write_private(cert_path, &cert, owner)?;
    write_private(key_path, &key, owner)?;
    Ok(Refreshed::Legacy(true))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::TcpListener;
    use std::os::unix::fs::MetadataExt;

    fn ts(y: i32, m: u32, d: u32) -> i64 {
        chrono::NaiveDate::from_ymd_opt(y, m, d)
            .and_then(|d| d.and_hms_opt(0, 0, 0))
            .map(|d| d.and_utc().timestamp())
            .unwrap()
    }

    /// A test authority signing a public key from `from` to `to` (y, m, d).
    struct Ca {
        issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
    }

    impl Ca {
        fn new() -> Ca {
            let mut params = rcgen::CertificateParams::default();
            params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
            let key = rcgen::KeyPair::generate().unwrap();
            Ca {
                issuer: rcgen::Issuer::new(params, key),
            }
        }

        fn sign(
            &self,
            public: &impl rcgen::PublicKeyData,
            from: (i32, u8, u8),
            to: (i32, u8, u8),
        ) -> String {
            let mut params = rcgen::CertificateParams::default();
            params.not_before = rcgen::date_time_ymd(from.0, from.1, from.2);
            params.not_after = rcgen::date_time_ymd(to.0, to.1, to.2);
            params.signed_by(public, &self.issuer).unwrap().pem()
        }

        fn sign_csr(&self, csr: &str, from: (i32, u8, u8), to: (i32, u8, u8)) -> String {
            let csr = rcgen::CertificateSigningRequestParams::from_pem(csr).unwrap();
            self.sign(&csr.public_key, from, to)
        }
    }

    #[test]
    fn a_pair_is_due_when_missing_mismatched_or_in_its_last_third() {
        let ca = Ca::new();
        let key = rcgen::KeyPair::generate().unwrap();
        let other = rcgen::KeyPair::generate().unwrap();
        // 90 days: due from the 60th on.
        let cert = ca.sign(&key, (2030, 1, 1), (2030, 4, 1));
        let k = key.serialize_pem();
        assert_eq!(due(Some(&k), Some(&cert), ts(2030, 2, 1)), None);
        assert_eq!(
            due(Some(&k), Some(&cert), ts(2030, 3, 5)),
            Some(Due::Ending)
        );
        assert_eq!(
            due(Some(&k), Some(&cert), ts(2031, 1, 1)),
            Some(Due::Ending)
        );
        assert_eq!(due(None, Some(&cert), ts(2030, 2, 1)), Some(Due::Missing));
        assert_eq!(due(Some(&k), None, ts(2030, 2, 1)), Some(Due::Missing));
        let o = other.serialize_pem();
        assert_eq!(
            due(Some(&o), Some(&cert), ts(2030, 2, 1)),
            Some(Due::Mismatch)
        );
        assert_eq!(
            due(Some("junk"), Some(&cert), ts(2030, 2, 1)),
            Some(Due::Mismatch)
        );
        assert_eq!(
            due(Some(&k), Some("junk"), ts(2030, 2, 1)),
            Some(Due::Mismatch)
        );
    }

    /// A local gateway: each connection gets `answer(request line, form)` as (status,
    /// body); the requests it saw come back from the handle.
    fn gateway(
        answers: usize,
        answer: impl Fn(&str, &BTreeMap<String, String>) -> (u16, String) + Send + 'static,
    ) -> (String, std::thread::JoinHandle<Vec<String>>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/", listener.local_addr().unwrap());
        let handle = std::thread::spawn(move || {
            let mut seen = Vec::new();
            for _ in 0..answers {
                let (mut s, _) = listener.accept().unwrap();
                let mut raw = Vec::new();
                let mut buf = [0u8; 65536];
                loop {
                    let n = s.read(&mut buf).unwrap();
                    raw.extend_from_slice(&buf[..n]);
                    let text = String::from_utf8_lossy(&raw).to_string();
                    if let Some((head, body)) = text.split_once("\r\n\r\n") {
                        let len = head
                            .lines()
                            .find_map(|l| {
                                l.to_ascii_lowercase()
                                    .strip_prefix("content-length:")
                                    .map(|v| v.trim().parse::<usize>().unwrap())
                            })
                            .unwrap_or(0);
                        if body.len() >= len {
                            break;
                        }
                    }
                    if n == 0 {
                        break;
                    }
                }
                let text = String::from_utf8_lossy(&raw).to_string();
                let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
                let line = head.lines().next().unwrap_or_default().to_owned();
                let form: BTreeMap<String, String> = body
                    .split('&')
                    .filter_map(|kv| kv.split_once('='))
                    .map(|(k, v)| (k.to_owned(), unescape(v)))
                    .collect();
                let (status, body) = answer(&line, &form);
                // (one exchange per connection: says so, or the client's pool may reuse
                // it while the close is on its way and see a reset)
                let reply = format!(
                    "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                );
                s.write_all(reply.as_bytes()).unwrap();
                seen.push(line);
            }
            seen
        });
        (url, handle)
    }

    fn unescape(v: &str) -> String {
        let v = v.replace('+', " ");
        let mut out = Vec::new();
        let b = v.as_bytes();
        let mut i = 0;
        while i < b.len() {
            if b[i] == b'%' && i + 2 < b.len() + 1 {
                out.push(u8::from_str_radix(&v[i + 1..i + 3], 16).unwrap());
                i += 3;
            } else {
                out.push(b[i]);
                i += 1;
            }
        }
        String::from_utf8(out).unwrap()
    }

    use std::collections::BTreeMap;

    fn repo() -> (tempfile::TempDir, PathBuf, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let (k, c) = (
            dir.path().join("slappart0.key"),
            dir.path().join("slappart0.crt"),
        );
        (dir, k, c)
    }

    #[test]
    fn the_key_is_made_here_and_only_a_signing_request_travels() {
        let ca = std::sync::Arc::new(Ca::new());
        let signer = ca.clone();
        let (url, server) = gateway(1, move |line, form| {
            assert!(
                line.starts_with("POST /signComputerPartitionCertificate "),
                "{line}"
            );
            assert_eq!(form["computer_id"], "COMP-1");
            assert_eq!(form["computer_partition_id"], "slappart0");
            assert!(!form.contains_key("key"));
            let cert = signer.sign_csr(&form["csr"], (2020, 1, 1), (2100, 1, 1));
            (
                200,
                serde_json::json!({"certificate": cert, "ca": "CA PEM"}).to_string(),
            )
        });
        let client = SlapClient::new(&[url], None, None).unwrap();
        let (_dir, key, cert) = repo();
        let owner = crate::process::is_root().then_some((65534, 65534));
        let now = crate::node::now_unix() as i64;
        let done = refresh(
            &client,
            None,
            "COMP-1",
            "slappart0",
            (&key, &cert),
            owner,
            now,
        )
        .unwrap();
        assert_eq!(done, Refreshed::Issued);
        server.join().unwrap();
        let (k, c) = (read(&key).unwrap(), read(&cert).unwrap());
        assert!(k.contains("PRIVATE KEY"));
        assert_eq!(due(Some(&k), Some(&c), now), None, "a matching pair");
        for f in [&key, &cert] {
            let meta = std::fs::metadata(f).unwrap();
            assert_eq!(meta.mode() & 0o777, 0o400);
            if let Some((uid, gid)) = owner {
                assert_eq!((meta.uid(), meta.gid()), (uid, gid));
            }
            assert!(!staged(f).exists());
        }
        // Good for a while: nothing is asked (no gateway listens any more).
        let done = refresh(
            &client,
            None,
            "COMP-1",
            "slappart0",
            (&key, &cert),
            owner,
            now,
        )
        .unwrap();
        assert_eq!(done, Refreshed::Kept);
    }

    #[test]
    fn an_ending_or_mismatched_pair_gets_a_fresh_key() {
        let ca = std::sync::Arc::new(Ca::new());
        let (_dir, key, cert) = repo();
        let old = rcgen::KeyPair::generate().unwrap();
        std::fs::write(&key, old.serialize_pem()).unwrap();
        std::fs::write(&cert, ca.sign(&old, (2030, 1, 1), (2030, 4, 1))).unwrap();
        let signer = ca.clone();
        let (url, server) = gateway(2, move |_, form| {
            (200, serde_json::json!({"certificate": signer.sign_csr(&form["csr"], (2030, 3, 1), (2030, 6, 1))}).to_string())
        });
        let client = SlapClient::new(&[url], None, None).unwrap();
        // 2030-03-15: in the last third of the old one.
        let now = ts(2030, 3, 15);
        assert_eq!(
            refresh(&client, None, "C", "slappart0", (&key, &cert), None, now).unwrap(),
            Refreshed::Issued
        );
        let (k, c) = (read(&key).unwrap(), read(&cert).unwrap());
        assert_ne!(k, old.serialize_pem(), "a fresh key");
        assert_eq!(due(Some(&k), Some(&c), now), None);
        // A certificate that is not the key's: issued again.
        let stray = rcgen::KeyPair::generate().unwrap();
        std::fs::remove_file(&cert).unwrap();
        std::fs::write(&cert, ca.sign(&stray, (2030, 3, 1), (2030, 6, 1))).unwrap();
        assert_eq!(
            refresh(&client, None, "C", "slappart0", (&key, &cert), None, now).unwrap(),
            Refreshed::Issued
        );
        server.join().unwrap();
        let (k, c) = (read(&key).unwrap(), read(&cert).unwrap());
        assert_eq!(due(Some(&k), Some(&c), now), None);
    }

    #[test]
    fn an_older_gateway_gets_the_legacy_call_and_refusals_are_typed() {
        // 404 on the new method: the pair the master made, as before.
        let (url, server) = gateway(2, |line, _| {
            if line.starts_with("POST /signComputerPartitionCertificate") {
                (404, "unknown method".into())
            } else {
                assert!(
                    line.starts_with("GET /getComputerPartitionCertificate?"),
                    "{line}"
                );
                use slapos_proto::marshal::{encode, Value};
                let dict = Value::Dict(vec![
                    (Value::Str("certificate".into()), Value::Str("CERT".into())),
                    (Value::Str("key".into()), Value::Str("KEY".into())),
                ]);
                (200, encode(&dict).unwrap())
            }
        });
        let client = SlapClient::new(&[url], None, None).unwrap();
        let (_dir, key, cert) = repo();
        let now = crate::node::now_unix() as i64;
        assert_eq!(
            refresh(&client, None, "C", "slappart0", (&key, &cert), None, now).unwrap(),
            Refreshed::Legacy(true)
        );
        server.join().unwrap();
        assert_eq!(
            (read(&key).unwrap(), read(&cert).unwrap()),
            ("KEY".into(), "CERT".into())
        );

        // 409: no instance there, nothing written; 403: an error.
        let (_dir, key, cert) = repo();
        let (url, server) = gateway(2, |_, form| {
            if form["computer_partition_id"] == "slappart0" {
                (409, "no instance".into())
            } else {
                (403, "not yours".into())
            }
        });
        let client = SlapClient::new(&[url], None, None).unwrap();
        assert_eq!(
            refresh(&client, None, "C", "slappart0", (&key, &cert), None, now).unwrap(),
            Refreshed::NoInstance
        );
        assert!(!key.exists() && !cert.exists());
        let err = refresh(&client, None, "C", "slappart9", (&key, &cert), None, now).unwrap_err();
        assert!(
            matches!(err, NodeError::Slap(SlapError::Refused { status: 403, .. })),
            "{err}"
        );
        server.join().unwrap();
        assert!(!key.exists() && !staged(&key).exists());
    }

    #[test]
    fn a_certificate_for_another_key_is_refused_and_nothing_replaced() {
        let ca = std::sync::Arc::new(Ca::new());
        let signer = ca.clone();
        let (url, server) = gateway(1, move |_, _| {
            let stray = rcgen::KeyPair::generate().unwrap();
            (
                200,
                serde_json::json!({"certificate": signer.sign(&stray, (2020, 1, 1), (2100, 1, 1))})
                    .to_string(),
            )
        });
        let client = SlapClient::new(&[url], None, None).unwrap();
        let (_dir, key, cert) = repo();
        let now = crate::node::now_unix() as i64;
        assert!(refresh(&client, None, "C", "slappart0", (&key, &cert), None, now).is_err());
        server.join().unwrap();
        assert!(!key.exists() && !cert.exists() && !staged(&key).exists());
    }
}
