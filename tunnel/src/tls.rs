//! The TLS side of a tunnel: PEM files read and compared (so that a renewal is noticed),
//! rustls configurations for both ends (TLS 1.3 only, no resumption), and the two
//! verifiers that check the peer's identity besides its chain.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{NoServerSessionStorage, WebPkiClientVerifier};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, DistinguishedName, OtherError,
    RootCertStore, ServerConfig, SignatureScheme,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use slapos_domain::Identity;

use crate::error::TunnelError;

/// The PEM files of one end: its certificate (chain), its key, and the group's CA its
/// peers' certificates must come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub ca: PathBuf,
}

/// The bytes of the three files, as last read: a renewal is a change of these bytes.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Material {
    cert: Vec<u8>,
    key: Vec<u8>,
    ca: Vec<u8>,
}

/// Refuses files larger than this (a PEM chain and key are a few KiB).
const MAX_FILE: u64 = 1 << 20;

async fn read_file(path: &Path) -> Result<Vec<u8>, TunnelError> {
    let err = |message: String| TunnelError::File {
        path: path.to_owned(),
        message,
    };
    let meta = tokio::fs::metadata(path)
        .await
        .map_err(|e| err(e.to_string()))?;
    if meta.len() > MAX_FILE {
        return Err(err(format!("larger than {MAX_FILE} bytes")));
    }
    tokio::fs::read(path).await.map_err(|e| err(e.to_string()))
}

impl TlsFiles {
    pub(crate) async fn read(&self) -> Result<Material, TunnelError> {
        Ok(Material {
            cert: read_file(&self.cert).await?,
            key: read_file(&self.key).await?,
            ca: read_file(&self.ca).await?,
        })
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The certificate chain, key and roots of `m`, checked to belong together.
struct Parsed {
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    roots: Arc<RootCertStore>,
    identity: String,
}

fn parse(
    files: &TlsFiles,
    m: &Material,
    provider: &Arc<CryptoProvider>,
) -> Result<Parsed, TunnelError> {
    let file = |path: &Path, message: String| TunnelError::File {
        path: path.to_owned(),
        message,
    };
    let chain = CertificateDer::pem_slice_iter(&m.cert)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file(&files.cert, e.to_string()))?;
    let Some(leaf) = chain.first() else {
        return Err(file(&files.cert, "no certificate".into()));
    };
    let identity = slapos_ca::identity_of(leaf)
        .map(|(id, _)| id.common_name())
        .map_err(|e| file(&files.cert, e.to_string()))?;
    if let Some((_, not_after)) = slapos_ca::validity_of(leaf) {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        if not_after <= now {
            tracing::warn!(cert = %files.cert.display(), %identity, "our certificate has expired: peers will refuse it until it is renewed");
        }
    }
    let key = PrivateKeyDer::from_pem_slice(&m.key).map_err(|e| file(&files.key, e.to_string()))?;
    // The key must be the certificate's (a renewal writes two files: between the two
    // writes they do not match, and the previous pair is kept).
    rustls::sign::CertifiedKey::from_der(chain.clone(), key.clone_key(), provider).map_err(
        |e| {
            file(
                &files.key,
                format!("not the key of {}: {e}", files.cert.display()),
            )
        },
    )?;
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&m.ca) {
        let cert = cert.map_err(|e| file(&files.ca, e.to_string()))?;
        roots
            .add(cert)
            .map_err(|e| file(&files.ca, e.to_string()))?;
    }
    if roots.is_empty() {
        return Err(file(&files.ca, "no certificate authority".into()));
    }
    Ok(Parsed {
        chain,
        key,
        roots: Arc::new(roots),
        identity,
    })
}

/// Why a peer was refused, carried inside rustls's error so that the accept loop logs
/// it with the peer's address.
#[derive(Debug)]
pub struct Refused {
    /// The identity its certificate names (whether or not the chain holds), if any.
    pub identity: Option<String>,
    pub reason: String,
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.identity {
            Some(id) => write!(f, "{id}: {}", self.reason),
            None => write!(f, "a certificate without an identity: {}", self.reason),
        }
    }
}

impl std::error::Error for Refused {}

fn refused(identity: Option<String>, reason: String) -> rustls::Error {
    rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(Refused {
        identity,
        reason,
    }))))
}

/// A chain check's failure in words an operator reads in the log.
fn chain_reason(e: &rustls::Error) -> String {
    match e {
        rustls::Error::InvalidCertificate(c) => match c {
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => "expired".into(),
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                "not valid yet".into()
            }
            CertificateError::UnknownIssuer => "not issued by the group's CA".into(),
            CertificateError::Revoked => "revoked".into(),
            CertificateError::InvalidPurpose | CertificateError::InvalidPurposeContext { .. } => {
                "not a client certificate (extended key usage)".into()
            }
            CertificateError::Other(OtherError(o)) => format!("invalid certificate ({o})"),
            other => format!("invalid certificate ({other:?})"),
        },
        other => other.to_string(),
    }
}

/// The identity a certificate claims, read before its chain is checked (for the log).
fn claimed(der: &CertificateDer<'_>) -> Option<String> {
    slapos_ca::identity_of(der)
        .ok()
        .map(|(id, _)| id.common_name())
}

/// Checks a peer's chain against the group's CA, then its identity against `accept`.
fn check_peer(
    chain: &dyn ClientCertVerifier,
    end_entity: &CertificateDer<'_>,
    intermediates: &[CertificateDer<'_>],
    now: UnixTime,
    accept: impl Fn(&Identity) -> Result<(), String>,
) -> Result<(), rustls::Error> {
    chain
        .verify_client_cert(end_entity, intermediates, now)
        .map_err(|e| refused(claimed(end_entity), chain_reason(&e)))?;
    let (identity, _) =
        slapos_ca::identity_of(end_entity).map_err(|e| refused(None, e.to_string()))?;
    accept(&identity).map_err(|reason| refused(Some(identity.common_name()), reason))
}

/// The server's check of a client: the group's CA, then the allow-list.
#[derive(Debug)]
struct AllowList {
    chain: Arc<dyn ClientCertVerifier>,
    allow: Arc<Vec<Identity>>,
}

impl ClientCertVerifier for AllowList {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.chain.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        check_peer(&*self.chain, end_entity, intermediates, now, |id| {
            if self.allow.contains(id) {
                Ok(())
            } else {
                Err("not on the allow-list".into())
            }
        })?;
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.chain.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.chain.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.chain.supported_verify_schemes()
    }
}

/// The client's check of the server: the group's CA, then the one identity expected.
/// The group issues partitions client certificates only (`clientAuth`), so the server's
/// chain is checked as a client's would be; the identity replaces the host name.
#[derive(Debug)]
struct ExpectedServer {
    chain: Arc<dyn ClientCertVerifier>,
    expected: Identity,
}

impl ServerCertVerifier for ExpectedServer {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        check_peer(&*self.chain, end_entity, intermediates, now, |id| {
            if *id == self.expected {
                Ok(())
            } else {
                Err(format!(
                    "not the server identity expected ({})",
                    self.expected.common_name()
                ))
            }
        })?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.chain.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.chain.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.chain.supported_verify_schemes()
    }
}

fn chain_verifier(
    roots: Arc<RootCertStore>,
    provider: &Arc<CryptoProvider>,
) -> Result<Arc<dyn ClientCertVerifier>, TunnelError> {
    WebPkiClientVerifier::builder_with_provider(roots, provider.clone())
        .build()
        .map_err(|e| TunnelError::Tls(e.to_string()))
}

/// The server end's configuration: TLS 1.3, a client certificate of the group's CA
/// required and its identity on `allow`; no session resumption, so every connection is
/// checked in full.
pub(crate) fn server_config(
    files: &TlsFiles,
    m: &Material,
    allow: &Arc<Vec<Identity>>,
) -> Result<(Arc<ServerConfig>, String), TunnelError> {
    let provider = provider();
    let p = parse(files, m, &provider)?;
    let verifier = Arc::new(AllowList {
        chain: chain_verifier(p.roots, &provider)?,
        allow: allow.clone(),
    });
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| TunnelError::Tls(e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(p.chain, p.key)
        .map_err(|e| TunnelError::Tls(e.to_string()))?;
    config.session_storage = Arc::new(NoServerSessionStorage {});
    config.send_tls13_tickets = 0;
    Ok((Arc::new(config), p.identity))
}

/// The client end's configuration: TLS 1.3, its certificate presented, the server's
/// chain checked against the group's CA and its identity against `expected`.
pub(crate) fn client_config(
    files: &TlsFiles,
    m: &Material,
    expected: &Identity,
) -> Result<(Arc<ClientConfig>, String), TunnelError> {
    let provider = provider();
    let p = parse(files, m, &provider)?;
    let verifier = Arc::new(ExpectedServer {
        chain: chain_verifier(p.roots, &provider)?,
        expected: expected.clone(),
    });
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| TunnelError::Tls(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_client_auth_cert(p.chain, p.key)
        .map_err(|e| TunnelError::Tls(e.to_string()))?;
    config.resumption = rustls::client::Resumption::disabled();
    Ok((Arc::new(config), p.identity))
}

/// What a failed handshake's error says, for the log: the refusal with the peer's
/// identity when our verifier refused it, rustls's words otherwise.
pub fn describe(e: &std::io::Error) -> String {
    let Some(inner) = e.get_ref() else {
        return e.to_string();
    };
    match inner.downcast_ref::<rustls::Error>() {
        Some(rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(o)))) => {
            match o.downcast_ref::<Refused>() {
                Some(r) => r.to_string(),
                None => o.to_string(),
            }
        }
        Some(rustls::Error::NoCertificatesPresented) => "no certificate".into(),
        Some(rustls::Error::AlertReceived(a)) => format!("the peer refused us ({a:?})"),
        Some(other) => other.to_string(),
        None => e.to_string(),
    }
}
