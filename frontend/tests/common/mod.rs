//! What the frontend's tests share: a test CA (rcgen), backends (small hyper servers),
//! a client on hyper and rustls that trusts the test CA (or records the certificate it
//! was shown), and a frontend on ephemeral ports over a sites file in a temporary
//! directory.

#![allow(dead_code)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use serde_json::{json, Value};
use slapos_frontend::{Frontend, Handle, Limits, Options};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;

pub struct Pki {
    pub ca_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl Pki {
    pub fn new() -> Pki {
        let key = KeyPair::generate().unwrap();
        let mut ca = CertificateParams::default();
        ca.distinguished_name
            .push(DnType::CommonName, "frontend test CA");
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let cert = ca.self_signed(&key).unwrap();
        Pki {
            ca_pem: cert.pem(),
            issuer: Issuer::new(ca, key),
        }
    }

    /// A server certificate for `name` (its own subject DN) and its key, as PEM.
    pub fn leaf(&self, name: &str) -> (String, String) {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::default();
        p.distinguished_name.push(DnType::CommonName, name);
        p.subject_alt_names = vec![SanType::DnsName(name.try_into().unwrap())];
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        p.use_authority_key_identifier_extension = true;
        let cert = p.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }
}

/// The DER of the first certificate of a PEM.
pub fn der(pem: &str) -> Vec<u8> {
    CertificateDer::from_pem_slice(pem.as_bytes())
        .unwrap()
        .as_ref()
        .to_vec()
}

/// A backend: answers with its name, the path and every header it got, and the size
/// of the body; `/hang` never answers; `/slow` tells `arrived` and waits for `gate`;
/// an upgrade request gets a 101 and an echo of what follows.
pub struct Backend {
    pub addr: SocketAddr,
    pub arrived: Arc<Notify>,
    pub gate: Arc<Notify>,
}

pub async fn backend(name: &'static str) -> Backend {
    backend_with(name, None).await
}

/// A backend over TLS, with a certificate of `pki` for `localhost`.
pub async fn tls_backend(name: &'static str, pki: &Pki) -> Backend {
    let (cert, key) = pki.leaf("localhost");
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(
        vec![CertificateDer::from_pem_slice(cert.as_bytes()).unwrap()],
        rustls_pki_types::PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap(),
    )
    .unwrap();
    backend_with(
        name,
        Some(tokio_rustls::TlsAcceptor::from(Arc::new(config))),
    )
    .await
}

async fn backend_with(name: &'static str, tls: Option<tokio_rustls::TlsAcceptor>) -> Backend {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let arrived = Arc::new(Notify::new());
    let gate = Arc::new(Notify::new());
    let (a, g) = (arrived.clone(), gate.clone());
    tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            let (a, g) = (a.clone(), g.clone());
            let tls = tls.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req| {
                    backend_answer(name, a.clone(), g.clone(), req)
                });
                let builder = hyper::server::conn::http1::Builder::new();
                match tls {
                    None => {
                        let _ = builder
                            .serve_connection(TokioIo::new(s), service)
                            .with_upgrades()
                            .await;
                    }
                    Some(acceptor) => {
                        let Ok(s) = acceptor.accept(s).await else {
                            return;
                        };
                        let _ = builder
                            .serve_connection(TokioIo::new(s), service)
                            .with_upgrades()
                            .await;
                    }
                }
            });
        }
    });
    Backend {
        addr,
        arrived,
        gate,
    }
}

async fn backend_answer(
    name: &'static str,
    arrived: Arc<Notify>,
    gate: Arc<Notify>,
    mut req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_default();
    if path.starts_with("/hang") {
        std::future::pending::<()>().await;
    }
    if path.starts_with("/slow") {
        arrived.notify_one();
        gate.notified().await;
    }
    if req.headers().contains_key(hyper::header::UPGRADE) {
        let on = hyper::upgrade::on(&mut req);
        tokio::spawn(async move {
            let Ok(upgraded) = on.await else { return };
            let mut io = TokioIo::new(upgraded);
            let mut buf = [0u8; 1024];
            loop {
                match io.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => {
                        if io.write_all(&buf[..n]).await.is_err() {
                            return;
                        }
                    }
                }
            }
        });
        let mut r = Response::new(Full::new(Bytes::new()));
        *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        r.headers_mut()
            .insert("upgrade", "websocket".parse().unwrap());
        r.headers_mut()
            .insert("connection", "upgrade".parse().unwrap());
        return Ok(r);
    }
    let mut text = format!("backend {name}\npath {path}\n");
    for (k, v) in req.headers() {
        text.push_str(&format!("{k}: {}\n", String::from_utf8_lossy(v.as_bytes())));
    }
    let size = match req.into_body().collect().await {
        Ok(b) => b.to_bytes().len(),
        Err(_) => 0,
    };
    text.push_str(&format!("body {size}\n"));
    let mut r = Response::new(Full::new(Bytes::from(text)));
    r.headers_mut()
        .insert("keep-alive", "timeout=5".parse().unwrap());
    Ok(r)
}

/// The values of a header in a backend's answer text.
pub fn seen(text: &str, name: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| l.strip_prefix(&format!("{name}: ")))
        .map(str::to_owned)
        .collect()
}

/// A verifier that takes any certificate and keeps the one it was shown.
#[derive(Debug, Default)]
pub struct Recorder(pub Mutex<Option<Vec<u8>>>);

impl ServerCertVerifier for Recorder {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        *self.0.lock().unwrap() = Some(end_entity.as_ref().to_vec());
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }
    fn verify_tls13_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        rustls::crypto::ring::default_provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}

pub enum Trust<'a> {
    Ca(&'a str),
    Record(Arc<Recorder>),
}

pub fn client_config(trust: Trust<'_>, alpn: &[&[u8]]) -> Arc<ClientConfig> {
    let builder =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap();
    let mut config = match trust {
        Trust::Ca(pem) => {
            let mut roots = RootCertStore::empty();
            roots
                .add(CertificateDer::from_pem_slice(pem.as_bytes()).unwrap())
                .unwrap();
            builder.with_root_certificates(roots).with_no_client_auth()
        }
        Trust::Record(r) => builder
            .dangerous()
            .with_custom_certificate_verifier(r)
            .with_no_client_auth(),
    };
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(config)
}

pub type Sender = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

/// An HTTP/1.1 connection over TLS to `addr` with the name `sni`.
pub async fn tls_conn(addr: SocketAddr, sni: &str, config: Arc<ClientConfig>) -> Sender {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = ServerName::try_from(sni.to_owned()).unwrap();
    let tls = tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await
        .unwrap();
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(async move {
        let _ = conn.with_upgrades().await;
    });
    sender
}

/// A plain HTTP/1.1 connection.
pub async fn plain_conn(addr: SocketAddr) -> Sender {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .unwrap();
    tokio::spawn(async move {
        let _ = conn.with_upgrades().await;
    });
    sender
}

/// An HTTP/2 connection over TLS.
pub async fn h2_conn(
    addr: SocketAddr,
    sni: &str,
    config: Arc<ClientConfig>,
) -> hyper::client::conn::http2::SendRequest<Full<Bytes>> {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = ServerName::try_from(sni.to_owned()).unwrap();
    let tls = tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await
        .unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
            .await
            .unwrap();
    tokio::spawn(conn);
    sender
}

pub fn get(host: &str, path: &str) -> Request<Full<Bytes>> {
    Request::builder()
        .uri(path)
        .header("host", host)
        .body(Full::new(Bytes::new()))
        .unwrap()
}

/// Sends and reads the whole answer.
pub async fn send(
    sender: &mut Sender,
    req: Request<Full<Bytes>>,
) -> (StatusCode, hyper::HeaderMap, String) {
    sender.ready().await.unwrap();
    let resp = sender.send_request(req).await.unwrap();
    let (parts, body) = resp.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    (
        parts.status,
        parts.headers,
        String::from_utf8_lossy(&body).into_owned(),
    )
}

/// A frontend on ephemeral ports, over a sites file of `tmp`.
pub struct Env {
    pub tmp: tempfile::TempDir,
    pub pki: Pki,
    pub handle: Handle,
    pub https: SocketAddr,
    pub http: SocketAddr,
    pub sites_file: PathBuf,
    pub default_der: Vec<u8>,
}

impl Env {
    pub async fn start(sites: Vec<Value>, limits: Limits) -> Env {
        let tmp = tempfile::tempdir().unwrap();
        let pki = Pki::new();
        let (cert, key) = pki.leaf("default.frontend.invalid");
        std::fs::write(tmp.path().join("default.crt"), &cert).unwrap();
        std::fs::write(tmp.path().join("default.key"), &key).unwrap();
        let sites_file = tmp.path().join("sites.json");
        write_sites(&tmp, &pki, &sites_file, sites, true);
        let default_der = der(&cert);
        let frontend = Frontend::bind(Options {
            sites_file: sites_file.clone(),
            listen_https: "127.0.0.1:0".parse().unwrap(),
            listen_http: Some("127.0.0.1:0".parse().unwrap()),
            limits,
        })
        .await
        .unwrap();
        let handle = frontend.handle();
        let https = frontend.https_addr().unwrap();
        let http = frontend.http_addr().unwrap().unwrap();
        tokio::spawn(frontend.serve(std::future::pending()));
        Env {
            tmp,
            pki,
            handle,
            https,
            http,
            sites_file,
            default_der,
        }
    }

    /// Rewrites the sites file and reloads it.
    pub fn reload(&self, sites: Vec<Value>) -> slapos_frontend::Status {
        write_sites(&self.tmp, &self.pki, &self.sites_file, sites, true);
        self.handle.reload().unwrap()
    }

    /// Rewrites the sites file without `allow-local-backends` and reloads it.
    pub fn reload_strict(&self, sites: Vec<Value>) -> slapos_frontend::Status {
        write_sites(&self.tmp, &self.pki, &self.sites_file, sites, false);
        self.handle.reload().unwrap()
    }

    pub fn ca(&self) -> Arc<ClientConfig> {
        client_config(Trust::Ca(&self.pki.ca_pem), &[b"http/1.1"])
    }

    /// An HTTPS connection that trusts the test CA.
    pub async fn conn(&self, sni: &str) -> Sender {
        tls_conn(self.https, sni, self.ca()).await
    }

    pub fn log_dir(&self) -> PathBuf {
        self.tmp.path().join("logs")
    }

    pub fn status_file(&self) -> PathBuf {
        self.tmp.path().join("status.json")
    }
}

/// Writes the sites file: each site with a certificate of the test CA for its first
/// domain (`custom_domain`) when it has one, unless it says `"certificate": false`.
fn write_sites(
    tmp: &tempfile::TempDir,
    pki: &Pki,
    path: &PathBuf,
    sites: Vec<Value>,
    allow_local: bool,
) {
    let mut out = Vec::new();
    for mut site in sites {
        let domain = site["parameters"]["custom_domain"]
            .as_str()
            .map(str::to_owned);
        let wants = site.get("certificate") != Some(&Value::Bool(false));
        if let Some(obj) = site.as_object_mut() {
            obj.remove("certificate");
        }
        if let (Some(domain), true) = (domain, wants) {
            // One certificate per domain, kept across reloads.
            let c = tmp.path().join(format!("{domain}.crt"));
            let k = tmp.path().join(format!("{domain}.key"));
            if !c.exists() {
                let (cert, key) = pki.leaf(&domain);
                std::fs::write(&c, cert).unwrap();
                std::fs::write(&k, key).unwrap();
            }
            site["certificate"] = json!(c);
            site["key"] = json!(k);
        }
        out.push(site);
    }
    let file = json!({
        "domain": "frontend.example.net",
        "default-certificate": tmp.path().join("default.crt"),
        "default-key": tmp.path().join("default.key"),
        "log-dir": tmp.path().join("logs"),
        "status-file": tmp.path().join("status.json"),
        "allow-local-backends": allow_local,
        "sites": out,
    });
    let tmp_path = path.with_extension("new");
    std::fs::write(&tmp_path, serde_json::to_vec_pretty(&file).unwrap()).unwrap();
    std::fs::rename(tmp_path, path).unwrap();
}

pub fn site(reference: &str, params: Value) -> Value {
    json!({"reference": reference, "parameters": params})
}

/// Waits (without a bound of its own: the test harness's) until `f` holds.
pub async fn eventually(mut f: impl FnMut() -> bool) {
    while !f() {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
