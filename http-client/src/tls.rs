//! Client TLS configurations (rustls on ring) from PEM files.

use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WantsClientCert;
use rustls::crypto::CryptoProvider;
use rustls::{ClientConfig, ConfigBuilder, DigitallySignedStruct, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};

use crate::Error;

fn tls(message: String) -> Error {
    Error::Tls(message)
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The caller's certificate chain and key, presented to servers that ask for one.
pub struct Identity {
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Identity {{ {} certificate(s), key }}", self.chain.len())
    }
}

impl Identity {
    /// The chain of the PEM file `cert` and the key (PKCS#8, PKCS#1 or SEC1) of `key`.
    pub fn from_pem_files(cert: &Path, key: &Path) -> Result<Identity, Error> {
        let chain = CertificateDer::pem_file_iter(cert)
            .and_then(|it| it.collect::<Result<Vec<_>, _>>())
            .map_err(|e| tls(format!("{}: {e}", cert.display())))?;
        let key = PrivateKeyDer::from_pem_file(key)
            .map_err(|e| tls(format!("{}: {e}", key.display())))?;
        Ok(Identity { chain, key })
    }
}

/// The contents of these PEM files (certificate authorities), read once (so that they
/// can be used where the files are not readable).
pub fn read_bundles(paths: &[&Path]) -> Result<Vec<Vec<u8>>, Error> {
    paths
        .iter()
        .map(|p| std::fs::read(p).map_err(|e| tls(format!("{}: {e}", p.display()))))
        .collect()
}

/// Servers verified against every certificate of the PEM bundles `cas` (a system bundle
/// may hold certificates rustls cannot use: those are skipped; none usable is an error);
/// `identity` presented when given.
pub fn verified(cas: &[Vec<u8>], identity: Option<Identity>) -> Result<ClientConfig, Error> {
    let mut roots = rustls::RootCertStore::empty();
    for ca in cas {
        for cert in CertificateDer::pem_slice_iter(ca) {
            let cert = cert.map_err(|e| tls(format!("certificate authority: {e}")))?;
            let _ = roots.add(cert);
        }
    }
    if roots.is_empty() {
        return Err(tls("no usable certificate authority".into()));
    }
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| tls(e.to_string()))?
        .with_root_certificates(roots);
    with_identity(builder, identity)
}

/// [`verified`] against the PEM file `ca`, presenting the identity of the PEM files
/// (certificate, key) when given.
pub fn verified_by_file(
    ca: &Path,
    identity: Option<(&Path, &Path)>,
) -> Result<ClientConfig, Error> {
    let identity = identity
        .map(|(cert, key)| Identity::from_pem_files(cert, key))
        .transpose()?;
    verified(&read_bundles(&[ca])?, identity)
}

/// Any server certificate accepted (the signatures of the handshake are still checked):
/// SlapOS's reference client (`verify=False`) when no CA is configured. For that
/// compatibility only.
pub fn unverified(identity: Option<Identity>) -> Result<ClientConfig, Error> {
    let provider = provider();
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| tls(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAnyServer(provider)));
    with_identity(builder, identity)
}

fn with_identity(
    builder: ConfigBuilder<ClientConfig, WantsClientCert>,
    identity: Option<Identity>,
) -> Result<ClientConfig, Error> {
    match identity {
        None => Ok(builder.with_no_client_auth()),
        Some(Identity { chain, key }) => builder
            .with_client_auth_cert(chain, key)
            .map_err(|e| tls(e.to_string())),
    }
}

#[derive(Debug)]
struct AcceptAnyServer(Arc<CryptoProvider>);

impl ServerCertVerifier for AcceptAnyServer {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
