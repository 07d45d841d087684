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
    server_config_with(cert, key, None)
}

/// As [`server_config`], asking clients for a certificate that `clients` accepts.
pub fn server_config_with(
    cert: &Path,
    key: &Path,
    clients: Option<Arc<dyn rustls::server::danger::ClientCertVerifier>>,
) -> Result<ServerConfig, GatewayError> {
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
    let builder =
        ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|e| tls(cert, e.to_string()))?;
    let builder = match clients {
        Some(v) => builder.with_client_cert_verifier(v),
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_single_cert(chain, key_der).map_err(|e| {
        tls(
            cert,
            format!("certificate and key do not fit together: {e}"),
        )
    })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// The revoked serials, read from the masters. Until the first successful read every
/// certificate is refused: a gateway that cannot tell revoked ones fails closed.
#[derive(Debug, Clone, Default)]
pub struct Revoked {
    set: Arc<std::sync::RwLock<Option<std::collections::BTreeSet<u128>>>>,
}

impl Revoked {
    pub fn replace(&self, serials: impl IntoIterator<Item = u128>) {
        if let Ok(mut set) = self.set.write() {
            *set = Some(serials.into_iter().collect());
        }
    }

    /// Whether a certificate of this serial must be refused.
    pub fn refuses(&self, serial: u128) -> bool {
        self.set
            .read()
            .map(|s| s.as_ref().is_none_or(|set| set.contains(&serial)))
            .unwrap_or(true)
    }
}

/// The persons the group records as admins (`Op::SetAdmin`), as last read.
#[derive(Debug, Clone, Default)]
pub struct Admins {
    set: Arc<std::sync::RwLock<std::collections::BTreeSet<String>>>,
}

impl Admins {
    pub fn replace(&self, persons: impl IntoIterator<Item = String>) {
        if let Ok(mut set) = self.set.write() {
            *set = persons.into_iter().collect();
        }
    }

    pub fn contains(&self, person: &str) -> bool {
        self.set.read().is_ok_and(|s| s.contains(person))
    }
}

/// Client certificates of the group's authority, minus the revoked ones: the chain is
/// checked by webpki, then the serial against the set the gateway refreshes from the
/// masters, so a revoked certificate fails its next handshake.
#[derive(Debug)]
pub struct GroupClients {
    inner: Arc<dyn rustls::server::danger::ClientCertVerifier>,
    pub revoked: Revoked,
}

impl GroupClients {
    pub fn new(ca: &Path) -> Result<GroupClients, GatewayError> {
        install_crypto_provider();
        let tls = |message: String| GatewayError::Tls {
            path: ca.display().to_string(),
            message,
        };
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_file_iter(ca).map_err(|e| tls(e.to_string()))? {
            roots
                .add(cert.map_err(|e| tls(e.to_string()))?)
                .map_err(|e| tls(e.to_string()))?;
        }
        // Without a certificate the handshake completes, and the caller is no one: only
        // registration with a token is served to no one (see `register.rs`).
        let inner = rustls::server::WebPkiClientVerifier::builder_with_provider(
            Arc::new(roots),
            Arc::new(rustls::crypto::ring::default_provider()),
        )
        .allow_unauthenticated()
        .build()
        .map_err(|e| tls(e.to_string()))?;
        Ok(GroupClients {
            inner,
            revoked: Revoked::default(),
        })
    }
}

impl rustls::server::danger::ClientCertVerifier for GroupClients {
    fn root_hint_subjects(&self) -> &[rustls::DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn offer_client_auth(&self) -> bool {
        self.inner.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.inner.client_auth_mandatory()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: rustls_pki_types::UnixTime,
    ) -> Result<rustls::server::danger::ClientCertVerified, rustls::Error> {
        let verified = self
            .inner
            .verify_client_cert(end_entity, intermediates, now)?;
        let (_, serial) = slapos_ca::identity_of(end_entity)
            .map_err(|e| rustls::Error::General(e.to_string()))?;
        if self.revoked.refuses(serial) {
            return Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::Revoked,
            ));
        }
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}
