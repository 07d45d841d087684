//! Certificates: the ones presented to clients (chosen by SNI among the loaded sites) and
//! the TLS of https backends (not checked by default, as SlapOS's frontend does; checked
//! against the site's own CA with `ssl-proxy-verify`).

use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::ClientConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::Shared;

pub(crate) fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A certificate chain and its key, from PEM bytes; the key must be the certificate's.
pub(crate) fn certified_key(cert_pem: &[u8], key_pem: &[u8]) -> Result<Arc<CertifiedKey>, String> {
    let chain = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("certificate: {e}"))?;
    if chain.is_empty() {
        return Err("no certificate in the PEM".into());
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| format!("key: {e}"))?;
    let ck = CertifiedKey::from_der(chain, key, &provider())
        .map_err(|e| format!("certificate and key: {e}"))?;
    Ok(Arc::new(ck))
}

/// Picks the certificate of the site the client's SNI names, from the table in force at
/// the handshake; the default one for an unknown or absent name.
#[derive(Debug)]
pub(crate) struct SniResolver(pub(crate) Arc<Shared>);

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let table = self.0.table();
        let site = hello
            .server_name()
            .and_then(|name| table.site_of(&name.to_ascii_lowercase()));
        Some(match site {
            Some(site) => site
                .cert
                .clone()
                .unwrap_or_else(|| table.default_cert.clone()),
            None => table.default_cert.clone(),
        })
    }
}

/// The server configuration of the HTTPS listener: HTTP/2 and HTTP/1.1 by ALPN.
pub(crate) fn server_config(shared: Arc<Shared>) -> Result<Arc<rustls::ServerConfig>, String> {
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(SniResolver(shared)));
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The client configuration towards a site's https backend.
pub(crate) fn backend_config(ca_pem: Option<&str>) -> Result<Arc<ClientConfig>, String> {
    // http-client's two configurations: verified against the site's CA, or (SlapOS's
    // frontend default: backends are partitions with certificates of their own making)
    // any certificate, the handshake's signatures still checked
    let mut config = match ca_pem {
        Some(pem) => http_client::tls::verified(&[pem.as_bytes().to_vec()], None),
        None => http_client::tls::unverified(None),
    }
    .map_err(|e| format!("ssl_proxy_ca_crt: {e}"))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}
