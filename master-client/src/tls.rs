//! The client side of mTLS to the masters: outgoing channels (a replica's Raft and
//! forwarding, a gateway's, the operator's `slapos cluster ...`) present the process's
//! certificate of the group's authority, one per process, set once at start
//! ([`set_client`]). The serving side is the replica's (`master-replica`'s `tls`).

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use serde::{Deserialize, Serialize};
use tonic::transport::{Certificate, ClientTlsConfig, Identity};

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

/// A PEM file, read whole.
pub fn read(path: &Path) -> Result<String, TlsError> {
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
