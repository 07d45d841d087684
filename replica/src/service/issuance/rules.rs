//! What a gateway may have the group's authority issue.
//!
//! A gateway relays its callers' certificate requests; it holds none of their keys. So
//! that a compromised gateway is not a compromised master, the masters issue for a
//! gateway only what a registration or a renewal it is relaying needs, each proven by
//! something the gateway cannot make:
//!
//! | request | proof | issued |
//! |---|---|---|
//! | registration or enrollment | a one-time token (its SHA-256), spent by the masters | what the token grants: `computer:C` for a person's token, the operator's server grant |
//! | renewal of `computer:C` / `person:X` | the caller's current certificate of that identity (the group's, unrevoked, current) and a signature over the new CSR by its key | the same identity, no longer-lived than the one presented |
//! | `partition:C:P` | `computer:C`'s current certificate and its key's signature over the CSR; `P` hosts an instance | the partition's certificate (90 days) |
//!
//! Anything else (servers, operators, another identity, names and addresses, a chosen
//! validity) is refused. Operators and replicas are trusted with the authority and are
//! not limited here.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use slapos_proto::proof::Purpose;
use slapos_proto::rpc::master::IssueRequest;
use tonic::Status;

use slapos_ca::{self as ca, Identity};
use slapos_domain::State;

/// Checks a gateway's `Issue` request against the table above, and sets the validity
/// the masters will grant (the gateway's own choice is ignored).
pub(crate) fn check_gateway_request(
    state: &State,
    gateway: &str,
    req: &mut IssueRequest,
    now: SystemTime,
) -> Result<(), Status> {
    let refuse = |why: String| {
        Err(Status::permission_denied(format!(
            "gateway {gateway}: {why}"
        )))
    };
    if req.token_sha256.is_empty()
        && (!req.dns_names.is_empty()
            || !req.ip_addresses.is_empty()
            || Identity::parse(&req.identity).is_ok_and(|w| w.is_privileged()))
    {
        return refuse(
            "a gateway may not have server certificates issued (nor an operator's)".into(),
        );
    }
    req.dns_names.clear();
    req.ip_addresses.clear();
    req.validity_secs = 0;
    if !req.token_sha256.is_empty() {
        // The token decides (the masters spend it before issuing).
        return Ok(());
    }
    if req.presented_cert_pem.is_empty() || req.proof.is_empty() {
        return refuse(
            "may have issued only a registration (with its token), or a renewal or a partition's certificate its caller proved (presented certificate and proof)"
                .into(),
        );
    }
    let Some(authority) = state.authority() else {
        return Err(Status::failed_precondition(
            slapos_domain::DomainError::NoAuthority.to_string(),
        ));
    };
    let secs = now
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or_default();
    let presented = ca::check_presented(&authority.cert_pem, &req.presented_cert_pem, secs)
        .map_err(|e| Status::permission_denied(format!("presented certificate refused: {e}")))?;
    match state.certificate(presented.serial) {
        None => {
            return refuse(format!(
                "the presented certificate of {} is unknown to the group",
                presented.identity.common_name()
            ))
        }
        Some(r) if r.revoked_at.is_some() => {
            return refuse(format!(
                "the presented certificate of {} is revoked",
                presented.identity.common_name()
            ))
        }
        Some(_) => {}
    }
    let wanted =
        Identity::parse(&req.identity).map_err(|e| Status::invalid_argument(e.to_string()))?;
    let (purpose, validity) = match &wanted {
        Identity::Partition {
            computer,
            partition,
        } => {
            if presented.identity != Identity::Computer(computer.clone()) {
                return refuse(format!(
                    "{} may not have a certificate of {} issued",
                    presented.identity.common_name(),
                    wanted.common_name()
                ));
            }
            if !state.partition_hosts_instance(computer, partition) {
                return Err(Status::failed_precondition(format!(
                    "partition {partition} of {computer} hosts no instance: no certificate"
                )));
            }
            (
                Purpose::Partition {
                    computer,
                    partition,
                },
                ca::default_validity(&wanted),
            )
        }
        Identity::Computer(_) | Identity::Person(_) => {
            if presented.identity != wanted {
                return refuse(format!(
                    "{} may renew only its own certificate, not {}'s",
                    presented.identity.common_name(),
                    wanted.common_name()
                ));
            }
            if let Identity::Computer(c) = &wanted {
                if state.computer(c).is_err() {
                    return refuse(format!("computer {c} is no longer registered"));
                }
            }
            (
                Purpose::Renew,
                presented.lifetime().min(ca::default_validity(&wanted)),
            )
        }
        _ => {
            return refuse(format!(
                "may not have a certificate of {} issued",
                wanted.common_name()
            ))
        }
    };
    let message = slapos_proto::proof::message(&purpose, &req.csr_pem);
    ca::check_proof(&req.presented_cert_pem, &message, &req.proof)
        .map_err(|e| Status::permission_denied(e.to_string()))?;
    req.validity_secs = validity.max(Duration::from_secs(3600)).as_secs();
    Ok(())
}

/// Whether the partition certificates the masters make whole (key included) may be read
/// for `computer`: only when its owner said its node is SlapOS's Python agent, which
/// cannot make its partitions' keys. `caller` names who asked, for the refusal.
pub(crate) fn check_key_delivery(
    state: &State,
    caller: &str,
    computer: &str,
) -> Result<(), Status> {
    match state.computer(computer) {
        Ok(c) if c.legacy_partition_keys => Ok(()),
        Ok(_) => Err(Status::permission_denied(format!(
            "{caller}: the partitions of {computer} make their own keys (signComputerPartitionCertificate); the masters hand keys out only for a computer marked as running SlapOS's Python node agent"
        ))),
        Err(e) => Err(Status::not_found(e.to_string())),
    }
}
