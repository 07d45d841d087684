//! Registering a node with a one-time token (the one call served without a client
//! certificate), and the tokens persons make for it:
//!
//! * `POST <prefix>/createComputerToken` (a person's certificate; form `computer_id`,
//!   optional `ttl` in seconds, default an hour, at most a week): a random token is made
//!   here, only its SHA-256 goes to the master (`Op::CreateToken`), the token is answered
//!   as plain text, once.
//! * `POST <prefix>/registerComputerWithToken` (no certificate needed; form `token`,
//!   `csr`): the master consumes the token (valid once, before it expires; the computer is
//!   created for the token's owner), then issues the computer's certificate for the CSR's
//!   key. Answer (JSON): `computer_id`, `certificate`, `ca` (the group's CA, PEM).
//! * `POST <prefix>/renewCertificate` (a valid certificate; form `csr`, `proof`): a new
//!   certificate for the caller's own identity (the node renews before expiry, with a
//!   new key, without a restart). `proof` is the new CSR signed with the key being
//!   renewed (`slapos_proto::proof`, purpose `renew`): the masters check it against the
//!   certificate presented here, so this gateway cannot renew anyone by itself. Answer
//!   (JSON): `certificate`, `ca`.
//! * `POST <prefix>/signComputerPartitionCertificate` (a computer's certificate; form
//!   `computer_id`, `computer_partition_id`, `csr`, `proof`): the certificate of one of
//!   the computer's partitions for a key the node made in the partition (the masters
//!   hand out no private key), the CSR signed with the computer's key (purpose
//!   `partition:C:P`). 409 when the partition hosts no instance. Answer (JSON):
//!   `certificate`, `ca`.

use std::time::Duration;

use serde_json::json;
use slapos_domain::Op;

use super::app::App;
use super::authz::Caller;
use crate::slap::SlapResponse;

const DEFAULT_TTL: u64 = 3600;
const MAX_TTL: u64 = 7 * 86400;

fn field<'a>(fields: &'a [(String, String)], name: &str) -> Option<&'a str> {
    fields
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
        .filter(|v| !v.is_empty())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A new one-time token (256 random bits, hex) and its SHA-256; `None` without
/// randomness.
pub fn new_token() -> Option<(String, String)> {
    let mut secret = [0u8; 32];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut secret).ok()?;
    let token = hex(&secret);
    let hash = token_hash(&token);
    Some((token, hash))
}

/// SHA-256 (hex) of a token: what the master keeps.
pub fn token_hash(token: &str) -> String {
    hex(ring::digest::digest(&ring::digest::SHA256, token.trim().as_bytes()).as_ref())
}

pub async fn create_token(
    app: &App,
    caller: Option<&Caller>,
    fields: &[(String, String)],
) -> SlapResponse {
    let owner = match caller {
        Some(Caller::Identity {
            identity: slapos_domain::Identity::Person(p),
            ..
        }) => p.clone(),
        _ => return SlapResponse::text(403, "forbidden: only a person makes registration tokens"),
    };
    let Some(computer) = field(fields, "computer_id") else {
        return SlapResponse::text(400, "missing required field 'computer_id'");
    };
    let ttl = match field(fields, "ttl").map(str::parse::<u64>) {
        None => DEFAULT_TTL,
        Some(Ok(t)) if (1..=MAX_TTL).contains(&t) => t,
        Some(_) => return SlapResponse::text(400, format!("ttl: seconds, 1 to {MAX_TTL}")),
    };
    let Some((token, hash)) = new_token() else {
        return SlapResponse::text(500, "no randomness for a token");
    };
    let expires_at = slapos_domain::Timestamp(
        master_client::proposer_time()
            .0
            .saturating_add(Duration::from_secs(ttl).as_micros() as u64),
    );
    let op = Op::CreateToken {
        hash,
        owner,
        computer: computer.to_owned(),
        expires_at,
        server: None,
    };
    match app.masters.write(op).await {
        Ok(w) => match w.outcome {
            Ok(_) => SlapResponse::text(200, token),
            Err(e) => crate::slap::render::domain_error(&e),
        },
        Err(e) => SlapResponse::text(e.status(), e.to_string()),
    }
}

/// The one-time token and the CSR of a registration or enrollment, the CSR checked before
/// the token is spent on it.
pub fn token_and_csr(fields: &[(String, String)]) -> Result<(&str, &str), SlapResponse> {
    let (Some(token), Some(csr)) = (field(fields, "token"), field(fields, "csr")) else {
        return Err(SlapResponse::text(
            400,
            "missing required field 'token' or 'csr'",
        ));
    };
    if csr.len() > slapos_ca::MAX_CSR_BYTES {
        return Err(SlapResponse::text(
            413,
            "certificate signing request too large",
        ));
    }
    if let Err(e) = slapos_ca::check_csr(csr) {
        return Err(SlapResponse::text(400, e.to_string()));
    }
    Ok((token, csr))
}

pub async fn register(app: &App, fields: &[(String, String)]) -> SlapResponse {
    let (token, csr) = match token_and_csr(fields) {
        Ok(t) => t,
        Err(refused) => return refused,
    };
    // The masters spend the token and issue what it grants (this gateway cannot have a
    // computer's certificate issued without one).
    let (certificate, ca) = match app.masters.enroll(csr, &token_hash(token)).await {
        Ok(issued) => issued,
        Err(e) => return SlapResponse::text(e.status(), e.to_string()),
    };
    let computer = match slapos_ca::identity_of_pem(&certificate) {
        Ok((slapos_domain::Identity::Computer(c), _)) => c,
        Ok((other, _)) => {
            return SlapResponse::text(
                400,
                format!(
                    "this token enrolls {} (enrollServerWithToken), not a computer; it is spent",
                    other.common_name()
                ),
            )
        }
        Err(e) => return SlapResponse::text(502, e.to_string()),
    };
    SlapResponse {
        status: 200,
        content_type: "application/json",
        body: json!({"computer_id": computer, "certificate": certificate, "ca": ca})
            .to_string()
            .into_bytes(),
    }
}

/// `enrollServerWithToken` (no certificate needed: the token is the credential): a
/// replica or gateway being set up (in a partition, say) sends its CSR with the one-time
/// token an operator made (`slapos cluster token`); the masters spend the token and issue
/// the certificate it grants. The answer names the identity, the certificate and the CA.
pub async fn enroll(app: &App, fields: &[(String, String)]) -> SlapResponse {
    let (token, csr) = match token_and_csr(fields) {
        Ok(t) => t,
        Err(refused) => return refused,
    };
    match app.masters.enroll(csr, &token_hash(token)).await {
        Ok((certificate, ca)) => {
            let identity = slapos_ca::identity_of_pem(&certificate)
                .map(|(i, _)| i.common_name())
                .unwrap_or_default();
            SlapResponse {
                status: 200,
                content_type: "application/json",
                body: json!({"identity": identity, "certificate": certificate, "ca": ca})
                    .to_string()
                    .into_bytes(),
            }
        }
        Err(e) => SlapResponse::text(e.status(), e.to_string()),
    }
}

pub async fn sign_partition(
    app: &App,
    caller: Option<&Caller>,
    fields: &[(String, String)],
) -> SlapResponse {
    let Some(Caller::Identity {
        identity: slapos_domain::Identity::Computer(me),
        certificate,
        ..
    }) = caller
    else {
        return SlapResponse::text(
            403,
            "forbidden: only a computer has its partitions' certificates signed",
        );
    };
    let (Some(computer), Some(partition), Some(csr), Some(proof)) = (
        field(fields, "computer_id"),
        field(fields, "computer_partition_id"),
        field(fields, "csr"),
        field(fields, "proof"),
    ) else {
        return SlapResponse::text(
            400,
            "missing required field 'computer_id', 'computer_partition_id', 'csr' or 'proof'",
        );
    };
    if computer != me {
        return SlapResponse::text(
            403,
            format!("forbidden: computer:{me} may not have partitions of {computer} certified"),
        );
    }
    if csr.len() > slapos_ca::MAX_CSR_BYTES {
        return SlapResponse::text(413, "certificate signing request too large");
    }
    if let Err(e) = slapos_ca::check_csr(csr) {
        return SlapResponse::text(400, e.to_string());
    }
    let identity = slapos_domain::Identity::Partition {
        computer: computer.to_owned(),
        partition: partition.to_owned(),
    };
    if let Err(e) = identity.check() {
        return SlapResponse::text(400, e.to_string());
    }
    match app
        .masters
        .issue_relayed(
            csr,
            &identity.common_name(),
            &slapos_ca::certificate_pem(certificate),
            proof,
        )
        .await
    {
        Ok((certificate, ca)) => SlapResponse {
            status: 200,
            content_type: "application/json",
            body: json!({"certificate": certificate, "ca": ca})
                .to_string()
                .into_bytes(),
        },
        Err(e) => SlapResponse::text(e.status(), e.to_string()),
    }
}

pub async fn renew(
    app: &App,
    caller: Option<&Caller>,
    fields: &[(String, String)],
) -> SlapResponse {
    let Some(Caller::Identity {
        identity,
        certificate,
        ..
    }) = caller
    else {
        return SlapResponse::text(
            403,
            "forbidden: renewal needs the certificate being renewed",
        );
    };
    match identity {
        slapos_domain::Identity::Computer(c) => {
            // A removed computer renews nothing.
            match app.masters.computer_owner(c).await {
                Ok(Some(_)) => {}
                Ok(None) => {
                    return SlapResponse::text(403, format!("forbidden: computer {c} was removed"))
                }
                Err(e) => return SlapResponse::text(e.status(), e.to_string()),
            }
        }
        slapos_domain::Identity::Person(_) => {}
        // Partitions get theirs from the master through their computer (and lose it with
        // their instance); servers renew through the master API.
        _ => {
            return SlapResponse::text(
                403,
                format!("forbidden: {} does not renew here", identity.common_name()),
            )
        }
    }
    let (Some(csr), Some(proof)) = (field(fields, "csr"), field(fields, "proof")) else {
        return SlapResponse::text(
            400,
            "missing required field 'csr' or 'proof' (the new CSR signed with the key being renewed)",
        );
    };
    if csr.len() > slapos_ca::MAX_CSR_BYTES {
        return SlapResponse::text(413, "certificate signing request too large");
    }
    // The masters check the proof against the certificate presented here, and grant no
    // longer than it was granted.
    match app
        .masters
        .issue_relayed(
            csr,
            &identity.common_name(),
            &slapos_ca::certificate_pem(certificate),
            proof,
        )
        .await
    {
        Ok((certificate, ca)) => SlapResponse {
            status: 200,
            content_type: "application/json",
            body: json!({"certificate": certificate, "ca": ca})
                .to_string()
                .into_bytes(),
        },
        Err(e) => SlapResponse::text(e.status(), e.to_string()),
    }
}
