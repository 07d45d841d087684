//! mTLS on the master's gRPC, the serving side: a replica serves Raft and the master API
//! with its server certificate of the group's own authority (`slapos-ca`) and requires a
//! client certificate chained to the group's CA whose identity is a replica, a gateway or
//! an operator (computers, partitions and persons talk to gateways, never to the
//! masters). The client side (what every outgoing channel presents) is `master-client`'s.

use master_client::tls::{read, TlsError, TlsFiles};
use tonic::transport::{Certificate, Identity, ServerTlsConfig};

/// The serving side: this replica's certificate, clients verified against the CA.
pub fn server(files: &TlsFiles) -> Result<ServerTlsConfig, TlsError> {
    Ok(ServerTlsConfig::new()
        .identity(Identity::from_pem(read(&files.cert)?, read(&files.key)?))
        .client_ca_root(Certificate::from_pem(read(&files.ca)?)))
}

/// The identity of a request's client certificate (None without TLS).
pub fn peer_identity<T>(request: &tonic::Request<T>) -> Option<slapos_ca::Identity> {
    request
        .peer_certs()
        .and_then(|certs| certs.first().cloned())
        .and_then(|cert| slapos_ca::identity_of(&cert).ok())
        .map(|(identity, _)| identity)
}

/// Which identities a service admits.
#[derive(Debug, Clone, Copy)]
pub enum Admits {
    /// Raft: the group's replicas only.
    Replicas,
    /// The master API: replicas, gateways and operators.
    ReplicasAndGateways,
}

/// Admits the identities of `admits` whose certificate the group has not revoked and, for
/// replicas, whose id is not retired (the chain was checked by the handshake).
pub fn admit(
    request: tonic::Request<()>,
    admits: Admits,
    state: &super::types::StateHandle,
) -> Result<tonic::Request<()>, tonic::Status> {
    let peer = request
        .peer_certs()
        .and_then(|certs| certs.first().cloned())
        .and_then(|cert| slapos_ca::identity_of(&cert).ok());
    let Some((identity, serial)) = peer else {
        return Err(tonic::Status::unauthenticated(
            "a certificate of the group's authority is required",
        ));
    };
    let allowed = matches!(
        (&identity, admits),
        (slapos_ca::Identity::Replica(_), _)
            | (
                slapos_ca::Identity::Gateway(_) | slapos_ca::Identity::Operator(_),
                Admits::ReplicasAndGateways
            )
    );
    if !allowed {
        return Err(tonic::Status::permission_denied(format!(
            "{} may not use this service of the masters",
            identity.common_name()
        )));
    }
    let (revoked, retired) = state.read(|s, _| {
        (
            s.certificate(serial)
                .is_some_and(|r| r.revoked_at.is_some()),
            matches!(identity, slapos_ca::Identity::Replica(id) if s.is_retired_replica(id)),
        )
    });
    if revoked || retired {
        return Err(tonic::Status::permission_denied(format!(
            "{}: certificate revoked or replica retired",
            identity.common_name()
        )));
    }
    Ok(request)
}
