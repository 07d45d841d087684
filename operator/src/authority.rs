//! The operator's commands on the master API that touch who may do what: certificates
//! issued to files (the key made here, only its signing request sent), one-time server
//! tokens, persons and their admin rights, revocations, and the plain submission of an
//! operator's command these are made of. The process presents its own certificate to
//! the masters (`master_client::tls`), set up by the caller.

use crate::error::OperatorError;
use crate::files;
use master_client::MasterClient;
use slapos_domain::{Identity, Op, Reply};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A certificate issued to files.
#[derive(Debug, Clone)]
pub struct Issued {
    pub cert: PathBuf,
    /// 0600.
    pub key: PathBuf,
    pub serial: String,
}

/// A key made here, its CSR signed by the group for `identity`: writes
/// `<out>/<identity with - for :>.key` (0600) and `.crt`.
pub async fn issue_to_files(
    via: Vec<String>,
    identity: &str,
    out: &Path,
    dns: Vec<String>,
    ip: Vec<String>,
    validity_secs: Option<u64>,
) -> Result<Issued, OperatorError> {
    let parsed = Identity::parse(identity)?;
    let (key, csr) = slapos_ca::new_key_and_csr(&parsed)?;
    let mut client = MasterClient::new(via).with_deadline(Duration::from_secs(30));
    let (pem, serial) = client
        .issue(&slapos_proto::rpc::master::IssueRequest {
            csr_pem: csr,
            identity: identity.to_owned(),
            validity_secs: validity_secs.unwrap_or(0),
            dns_names: dns,
            ip_addresses: ip,
            ..Default::default()
        })
        .await?;
    let (cert, key) = write_pair(out, identity, &key, &pem)?;
    Ok(Issued { cert, key, serial })
}

/// Writes `<out>/<identity with - for :>.key` (0600) and `.crt`; (certificate, key).
fn write_pair(
    out: &Path,
    identity: &str,
    key: &str,
    cert: &str,
) -> Result<(PathBuf, PathBuf), OperatorError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    files::create_dir_all(out)?;
    let name = identity.replace(':', "-");
    let key_path = out.join(format!("{name}.key"));
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&key_path)
        .and_then(|mut f| f.write_all(key.as_bytes()))
        .map_err(OperatorError::io("write", &key_path))?;
    let cert_path = out.join(format!("{name}.crt"));
    files::write(&cert_path, cert)?;
    Ok((cert_path, key_path))
}

/// A one-time token enrolling `identity` (a replica or gateway) with these names, valid
/// for `ttl`, made through the master API (an operator's command); the token itself.
pub async fn server_token(
    via: Vec<String>,
    identity: Identity,
    dns_names: Vec<String>,
    ip_addresses: Vec<String>,
    ttl: Duration,
) -> Result<String, OperatorError> {
    let (token, hash) =
        slap_gateway::server::register::new_token().ok_or(OperatorError::NoRandomness)?;
    let expires_at = slapos_domain::Timestamp(
        master_client::proposer_time()
            .0
            .saturating_add(ttl.as_micros() as u64),
    );
    let op = Op::CreateToken {
        hash,
        owner: "operator".into(),
        computer: String::new(),
        expires_at,
        server: Some(slapos_domain::ServerGrant {
            identity,
            dns_names,
            ip_addresses,
        }),
    };
    match submit_op(via, "token", op).await? {
        Reply::Done => Ok(token),
        other => Err(unexpected(other)),
    }
}

/// Submits an operator's command to the group (through the master API); `what` names
/// it in the request id (`cli-<what>-<pid>`).
pub async fn submit_op(via: Vec<String>, what: &str, op: Op) -> Result<Reply, OperatorError> {
    let mut client = MasterClient::new(via).with_deadline(Duration::from_secs(30));
    let now = master_client::proposer_time();
    let command = slapos_domain::Command {
        request_id: slapos_domain::RequestId::new(
            format!("cli-{what}-{}", std::process::id()),
            now.0,
        ),
        at: now,
        op,
    };
    let (outcome, _) = client.submit(&command).await?;
    Ok(outcome?)
}

/// Records (or takes back) a person's admin rights in the group.
pub async fn set_admin(via: Vec<String>, person: &str, admin: bool) -> Result<(), OperatorError> {
    let op = Op::SetAdmin {
        person: person.to_owned(),
        admin,
    };
    match submit_op(via, "admin", op).await? {
        Reply::Done => Ok(()),
        other => Err(unexpected(other)),
    }
}

/// Sets (or with None removes) a person's portal password on the master API, as an
/// operator: `hash` is the argon2id PHC string the caller made (the password itself
/// never leaves the operator's machine). Ends the person's portal sessions.
pub async fn set_password(
    via: Vec<String>,
    person: &str,
    hash: Option<String>,
) -> Result<(), OperatorError> {
    let op = Op::SetPassword {
        person: person.to_owned(),
        by: None,
        hash,
    };
    match submit_op(via, "password", op).await? {
        Reply::Done => Ok(()),
        other => Err(unexpected(other)),
    }
}

/// Submits a command answering `Revoked` (a revocation, a person or a computer
/// removed); how many certificates it revoked.
pub async fn revoke(via: Vec<String>, op: Op) -> Result<usize, OperatorError> {
    match submit_op(via, "revoke", op).await? {
        Reply::Revoked { count } => Ok(count),
        other => Err(unexpected(other)),
    }
}

/// The group's CA certificate (PEM).
pub async fn authority(via: Vec<String>) -> Result<String, OperatorError> {
    let mut client = MasterClient::new(via).with_deadline(Duration::from_secs(20));
    Ok(client.authority().await?)
}

/// A person added with their own files.
#[derive(Debug, Clone)]
pub struct Person {
    pub issued: Issued,
    /// The group's CA certificate.
    pub ca: PathBuf,
    /// A client configuration for `slapos request --cfg` pointing at the gateway.
    pub client_config: PathBuf,
}

/// Adds a person: (with `admin`, their admin rights first,) their certificate and key,
/// the group's CA and a client configuration for `gateway` in `out`.
pub async fn add_person(
    via: Vec<String>,
    person: &str,
    gateway: &str,
    out: &Path,
    admin: bool,
) -> Result<Person, OperatorError> {
    let identity = format!("person:{person}");
    if admin {
        set_admin(via.clone(), person, true).await?;
    }
    let issued = issue_to_files(via.clone(), &identity, out, Vec::new(), Vec::new(), None).await?;
    let ca = out.join("ca.pem");
    files::write(&ca, authority(via).await?)?;
    let cfg = out.join("slapos-client.cfg");
    write_client_config(&cfg, person, gateway, &issued.cert, &issued.key, &ca)?;
    Ok(Person {
        issued,
        ca,
        client_config: cfg,
    })
}

/// Writes (whole, replacing any) a person's client configuration, slapos.core's format
/// (`[slapos] master_url`, `[slapconsole] cert_file`, `key_file`) with our
/// `[slapconsole] master_ca_file`: what `slapos request --cfg` and slapos.core read.
pub fn write_client_config(
    path: &Path,
    person: &str,
    gateway: &str,
    cert: &Path,
    key: &Path,
    ca: &Path,
) -> Result<(), OperatorError> {
    files::write(
        path,
        format!(
            "# {person}'s client configuration: slapos request --cfg {}\n[slapos]\nmaster_url = {gateway}\n\n\
             [slapconsole]\ncert_file = {}\nkey_file = {}\nmaster_ca_file = {}\n",
            path.display(),
            cert.display(),
            key.display(),
            ca.display()
        ),
    )
}

/// A one-time token for `identity` with `ips`, valid an hour, through the master API
/// (what a hosted replica or gateway enrolls with).
pub(crate) async fn partition_token(
    via: &[String],
    identity: &str,
    ips: &[String],
) -> Result<String, OperatorError> {
    server_token(
        via.to_vec(),
        Identity::parse(identity)?,
        Vec::new(),
        ips.to_vec(),
        Duration::from_secs(3600),
    )
    .await
}

fn unexpected(reply: Reply) -> OperatorError {
    OperatorError::UnexpectedAnswer(format!("{reply:?}"))
}

/// A server's certificate got with a one-time token an operator made ([`server_token`];
/// `slapos master enroll`, which a hosted replica and gateway run in their partitions):
/// the key is made here, the CSR and the token go to `gateway`, verified against `ca`;
/// refused, with nothing written, unless the token granted `identity`. Writes the pair
/// as [`issue_to_files`] does and the group's CA as `<out>/ca.pem`.
pub fn enroll(
    gateway: &str,
    token: &str,
    identity: &str,
    ca: &Path,
    out: &Path,
) -> Result<Issued, OperatorError> {
    let wanted = Identity::parse(identity)?;
    let (key, csr) = slapos_ca::new_key_and_csr(&wanted)?;
    let client = slapgrid::client::SlapClient::new(
        &[slapgrid::config::normalize_master_url(gateway)],
        None,
        Some(ca),
    )?;
    let answer = client.post(
        "enrollServerWithToken",
        &[("token", token.trim()), ("csr", &csr)],
        None,
    )?;
    let answer: serde_json::Value =
        serde_json::from_slice(&answer).map_err(|e| OperatorError::BadAnswer {
            what: "the gateway's answer is not JSON",
            source: Some(e),
        })?;
    let certificate = answer["certificate"]
        .as_str()
        .ok_or(OperatorError::BadAnswer {
            what: "the gateway's answer has no certificate",
            source: None,
        })?;
    let (granted, serial) = slapos_ca::identity_of_pem(certificate)?;
    if granted != wanted {
        crate::error::refuse!(
            "the token granted {} where {} was expected: nothing written",
            granted.common_name(),
            wanted.common_name()
        );
    }
    let (cert, key) = write_pair(out, identity, &key, certificate)?;
    if let Some(ca_pem) = answer["ca"].as_str() {
        files::write(&out.join("ca.pem"), ca_pem)?;
    }
    Ok(Issued {
        cert,
        key,
        serial: format!("{serial:x}"),
    })
}
