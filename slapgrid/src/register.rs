//! `slapos node register --token T`: a new node gets its computer certificate. The key is
//! made here and never leaves the node; only a signing request travels, with the one-time
//! token its owner made (`slapos token create`). The certificate, and the group's CA,
//! land where `[slapos] cert_file`, `key_file` and `master_ca_file` say.

use std::path::Path;

use crate::client::SlapClient;
use crate::keyfiles::{finish_renewal, staged};
use crate::node::{io_err, NodeError};
use crate::NodeConfig;

/// What the registration wrote.
#[derive(Debug)]
pub struct Registered {
    pub computer_id: String,
}

fn write_file(path: &Path, content: &str, mode: u32) -> Result<(), NodeError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io_err(dir))?;
    }
    let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .map_err(io_err(&tmp))?;
    f.write_all(content.as_bytes()).map_err(io_err(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io_err(path))
}

pub fn register(cfg: &NodeConfig, token: &str, ca: Option<&Path>) -> Result<Registered, NodeError> {
    let (Some(key_file), Some(cert_file)) = (&cfg.key_file, &cfg.cert_file) else {
        return Err(NodeError::Invalid(
            "set key_file and cert_file in [slapos]: where the node keeps its key and certificate"
                .into(),
        ));
    };
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
        .map_err(|e| NodeError::Invalid(format!("cannot make a key: {e}")))?;
    let mut params = rcgen::CertificateParams::default();
    params.distinguished_name.push(
        rcgen::DnType::CommonName,
        format!("computer:{}", cfg.computer_id),
    );
    let csr = params
        .serialize_request(&key)
        .and_then(|r| r.pem())
        .map_err(|e| NodeError::Invalid(format!("cannot make a signing request: {e}")))?;
    // No client certificate yet: the token is the credential, and it is only sent to a
    // gateway verified against the group's CA (else a man in the middle could take it and
    // plant a CA of its own).
    let ca = ca
        .or(cfg.master_ca_file.as_deref())
        .filter(|p| p.exists())
        .ok_or_else(|| {
            NodeError::Invalid(
                "registration needs the group's CA to verify the gateway: --ca FILE, or an \
                 existing master_ca_file"
                    .into(),
            )
        })?;
    let client = SlapClient::new(&cfg.master_urls, None, Some(ca))?;
    let body = client.post(
        "registerComputerWithToken",
        &[("token", token), ("csr", &csr)],
        None,
    )?;
    let answer: serde_json::Value = serde_json::from_slice(&body)
        .map_err(|e| NodeError::Invalid(format!("registration answer: {e}")))?;
    let field = |name: &str| {
        answer[name]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| NodeError::Invalid(format!("registration answer without {name}")))
    };
    let computer_id = field("computer_id")?;
    if computer_id != cfg.computer_id {
        return Err(NodeError::Invalid(format!(
            "the token registers {computer_id}, but this node is {} (computer_id in {})",
            cfg.computer_id,
            cfg.path.display()
        )));
    }
    write_file(key_file, &key.serialize_pem(), 0o600)?;
    write_file(cert_file, &field("certificate")?, 0o644)?;
    if let Some(ca_file) = &cfg.master_ca_file {
        write_file(ca_file, &field("ca")?, 0o644)?;
    }
    Ok(Registered { computer_id })
}

/// When a PEM certificate ends (seconds since the epoch).
pub fn not_after(pem: &str) -> Option<i64> {
    use x509_parser::prelude::{FromDer, X509Certificate};
    let der = x509_parser::pem::parse_x509_pem(pem.as_bytes()).ok()?.1;
    let (_, cert) = X509Certificate::from_der(&der.contents).ok()?;
    Some(cert.validity().not_after.timestamp())
}

/// Renews the node's own certificate (a new key; the request authenticated by the
/// current certificate) when it ends within `within`, or always with `force`. The new
/// key and certificate replace the old ones atomically; running commands pick them up at
/// their next connection, no restart. `Ok(false)`: nothing to do.
pub fn renew_if_needed(
    cfg: &NodeConfig,
    within: std::time::Duration,
    force: bool,
) -> Result<bool, NodeError> {
    let (Some(key_file), Some(cert_file)) = (&cfg.key_file, &cfg.cert_file) else {
        return Ok(false);
    };
    let current = std::fs::read_to_string(cert_file).map_err(io_err(cert_file))?;
    let ends = not_after(&current).ok_or_else(|| {
        NodeError::Invalid(format!(
            "{} is not a readable certificate",
            cert_file.display()
        ))
    })?;
    let now = crate::node::now_unix() as i64;
    if !force && ends - now > within.as_secs() as i64 {
        return Ok(false);
    }
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
        .map_err(|e| NodeError::Invalid(format!("cannot make a key: {e}")))?;
    let csr = rcgen::CertificateParams::default()
        .serialize_request(&key)
        .and_then(|r| r.pem())
        .map_err(|e| NodeError::Invalid(format!("cannot make a signing request: {e}")))?;
    let client = SlapClient::from_config(cfg)?;
    let proof = proof(key_file, &slapos_proto::proof::Purpose::Renew, &csr)?;
    let body = client.post(
        "renewCertificate",
        &[("csr", &csr), ("proof", &proof)],
        None,
    )?;
    let answer: serde_json::Value = serde_json::from_slice(&body)
        .map_err(|e| NodeError::Invalid(format!("renewal answer: {e}")))?;
    let certificate = answer["certificate"]
        .as_str()
        .ok_or_else(|| NodeError::Invalid("renewal answer without certificate".into()))?;
    // Both staged beside the files they replace, then swapped in: a crash anywhere
    // leaves either the old pair or what `finish_renewal` completes into the new one.
    let (key_next, cert_next) = (staged(key_file), staged(cert_file));
    write_file(&key_next, &key.serialize_pem(), 0o600)?;
    write_file(&cert_next, certificate, 0o644)?;
    finish_renewal(key_file, cert_file)?;
    tracing::info!(computer_id = %cfg.computer_id, "node certificate renewed");
    Ok(true)
}

/// The caller's proof for a renewal or a partition's certificate: `csr` signed with the
/// node's key (`key_file`), for `purpose` (`slapos_proto::proof`). The gateway relays it
/// with the node's certificate; the masters check it, so a gateway cannot ask for a
/// certificate the node did not.
pub(crate) fn proof(
    key_file: &Path,
    purpose: &slapos_proto::proof::Purpose<'_>,
    csr: &str,
) -> Result<String, NodeError> {
    use rcgen::SigningKey;
    let pem = std::fs::read_to_string(key_file).map_err(io_err(key_file))?;
    let key = rcgen::KeyPair::from_pem(&pem).map_err(|e| {
        NodeError::Invalid(format!("{} is not a usable key: {e}", key_file.display()))
    })?;
    let signature = key
        .sign(&slapos_proto::proof::message(purpose, csr))
        .map_err(|e| NodeError::Invalid(format!("cannot sign with the node's key: {e}")))?;
    Ok(slapos_proto::proof::to_hex(&signature))
}
