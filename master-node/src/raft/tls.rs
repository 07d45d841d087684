//! mTLS on the master's gRPC (Raft between replicas, the master API for gateways and
//! operators), with certificates of the group's own authority (`ca.rs`): a replica serves
//! both with its server certificate and requires a client certificate chained to the
//! group's CA whose identity is a replica or a gateway (computers, partitions and persons
//! talk to gateways, never to the masters). Outgoing channels (a replica's Raft and
//! forwarding, a gateway's, the operator's `slapos cluster ...`) present the process's
//! certificate: one per process, set once at start ([`set_client`]).

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use serde::{Deserialize, Serialize};
use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};

/// A process's certificate, key and the group's CA (PEM files).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub ca: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("TLS is already set up for this process with other files")]
    AlreadySet,
}

fn read(path: &Path) -> Result<String, TlsError> {
    std::fs::read_to_string(path).map_err(|source| TlsError::Read {
        path: path.to_owned(),
        source,
    })
}

static CLIENT: OnceLock<(TlsFiles, ClientTlsConfig)> = OnceLock::new();

/// Every gRPC channel this process opens presents `files`' certificate and verifies the
/// server against its CA. Once per process (the same files again are fine).
pub fn set_client(files: &TlsFiles) -> Result<(), TlsError> {
    if let Some((set, _)) = CLIENT.get() {
        return if set == files {
            Ok(())
        } else {
            Err(TlsError::AlreadySet)
        };
    }
    let config = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(read(&files.ca)?))
        .identity(Identity::from_pem(read(&files.cert)?, read(&files.key)?));
    let _ = CLIENT.set((files.clone(), config));
    Ok(())
}

/// The outgoing TLS configuration, when set.
pub fn client() -> Option<&'static ClientTlsConfig> {
    CLIENT.get().map(|(_, c)| c)
}

/// The serving side: this replica's certificate, clients verified against the CA.
pub fn server(files: &TlsFiles) -> Result<ServerTlsConfig, TlsError> {
    Ok(ServerTlsConfig::new()
        .identity(Identity::from_pem(read(&files.cert)?, read(&files.key)?))
        .client_ca_root(Certificate::from_pem(read(&files.ca)?)))
}

/// The identity of a request's client certificate (None without TLS).
pub fn peer_identity<T>(request: &tonic::Request<T>) -> Option<crate::ca::Identity> {
    request
        .peer_certs()
        .and_then(|certs| certs.first().cloned())
        .and_then(|cert| crate::ca::identity_of(&cert).ok())
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
        .and_then(|cert| crate::ca::identity_of(&cert).ok());
    let Some((identity, serial)) = peer else {
        return Err(tonic::Status::unauthenticated(
            "a certificate of the group's authority is required",
        ));
    };
    let allowed = matches!(
        (&identity, admits),
        (crate::ca::Identity::Replica(_), _)
            | (
                crate::ca::Identity::Gateway(_) | crate::ca::Identity::Operator(_),
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
            matches!(identity, crate::ca::Identity::Replica(id) if s.is_retired_replica(id)),
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
