//! The HTTPS server's TLS configuration (rustls on ring).

use std::path::Path;
use std::sync::Arc;

use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use super::GatewayError;

/// Makes ring the process's default crypto provider (once; later calls are no-ops). The
/// workspace builds rustls with ring only, but another dependency could enable aws-lc-rs
/// too, and then `ServerConfig::builder()` panics without a default.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// A server configuration from PEM files: the certificate chain (leaf first) and its
/// private key. No client certificates are asked for yet (the identity issue adds them).
pub fn server_config(cert: &Path, key: &Path) -> Result<ServerConfig, GatewayError> {
    install_crypto_provider();
    let tls = |what: &Path, message: String| GatewayError::Tls {
        path: what.display().to_string(),
        message,
    };
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| tls(cert, e.to_string()))?
        .collect::<Result<_, _>>()
        .map_err(|e| tls(cert, e.to_string()))?;
    if chain.is_empty() {
        return Err(tls(cert, "no CERTIFICATE block found".into()));
    }
    let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| tls(key, e.to_string()))?;
    let mut config =
        ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|e| tls(cert, e.to_string()))?
            .with_no_client_auth()
            .with_single_cert(chain, key_der)
            .map_err(|e| {
                tls(
                    cert,
                    format!("certificate and key do not fit together: {e}"),
                )
            })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}
