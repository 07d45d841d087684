//! The client against small servers of the test's own: keep-alive, every framing, size
//! caps, timeouts, what counts as not sent, TLS with and without verification and client
//! certificates, the certificate a server presents, and the blocking client inside and
//! outside a runtime.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use http_client::{tls, BlockingClient, Client, Endpoint, Error, Options, Request};
use rcgen::{
    BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

/// Reads one request (head and `Content-Length` body): its head, `None` at the end.
async fn read_request<S: AsyncRead + Unpin>(s: &mut BufReader<S>) -> Option<String> {
    let mut head = String::new();
    loop {
        let mut line = String::new();
        if s.read_line(&mut line).await.ok()? == 0 {
            return None;
        }
        head.push_str(&line);
        if line == "\r\n" {
            break;
        }
    }
    let length = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length:")
                .map(|v| v.trim().to_owned())
        })
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(0);
    let mut body = vec![0; length];
    s.read_exact(&mut body).await.ok()?;
    head.push_str(&String::from_utf8_lossy(&body));
    Some(head)
}

/// A server answering every request of every connection with `answer(n)` (n counts the
/// requests); the number of connections it accepted; the requests it read.
async fn serve<F>(answer: F) -> (String, Arc<AtomicUsize>, Arc<std::sync::Mutex<Vec<String>>>)
where
    F: Fn(usize) -> Vec<u8> + Send + Sync + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let accepted = Arc::new(AtomicUsize::new(0));
    let requests = Arc::new(std::sync::Mutex::new(Vec::new()));
    let answer = Arc::new(answer);
    let (a, r) = (accepted.clone(), requests.clone());
    tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            a.fetch_add(1, Ordering::SeqCst);
            let (answer, r) = (answer.clone(), r.clone());
            tokio::spawn(async move {
                let mut s = BufReader::new(s);
                while let Some(head) = read_request(&mut s).await {
                    let n = {
                        let mut r = r.lock().unwrap();
                        r.push(head);
                        r.len() - 1
                    };
                    let bytes = answer(n);
                    if s.get_mut().write_all(&bytes).await.is_err() {
                        return;
                    }
                    if bytes.starts_with(b"HTTP/1.0") {
                        return;
                    }
                }
            });
        }
    });
    (addr, accepted, requests)
}

fn quick() -> Options {
    Options {
        connect_timeout: Duration::from_secs(2),
        timeout: Duration::from_secs(2),
        deadline: Duration::from_secs(4),
        ..Options::default()
    }
}

#[tokio::test]
async fn keep_alive_sends_many_requests_on_one_connection() {
    let (addr, accepted, requests) =
        serve(|_| b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok".to_vec()).await;
    let client = Client::new(None, quick());
    let endpoint = Endpoint::from_addr(&addr, false).unwrap();
    for i in 0..50 {
        let answer = client
            .send(
                &endpoint,
                Request::get_query("/x", &[("i", &i.to_string())]),
            )
            .await
            .unwrap();
        assert_eq!((answer.status, answer.body.as_slice()), (200, &b"ok"[..]));
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 1);
    let requests = requests.lock().unwrap();
    assert!(
        requests[7].starts_with("GET /x?i=7 HTTP/1.1\r\n"),
        "{}",
        requests[7]
    );
    assert!(!requests[7]
        .to_ascii_lowercase()
        .contains("connection: close"));
}

#[tokio::test]
async fn without_keep_alive_each_call_has_its_connection() {
    let (addr, accepted, requests) =
        serve(|_| b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n".to_vec()).await;
    let client = Client::new(
        None,
        Options {
            keep_alive: None,
            user_agent: Some("test/1".into()),
            ..quick()
        },
    );
    let endpoint = Endpoint::parse(&format!("http://{addr}/prefix/")).unwrap();
    for _ in 0..3 {
        let form = Request::post_form("m", &[("a b", "c&d")]).header("Authorization", "X y=1, z=2");
        assert_eq!(client.send(&endpoint, form).await.unwrap().status, 200);
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 3);
    let r = &requests.lock().unwrap()[0];
    assert!(r.starts_with("POST /prefix/m HTTP/1.1\r\n"), "{r}");
    for header in [
        "Connection: close\r\n",
        "User-Agent: test/1\r\n",
        "Authorization: X y=1, z=2\r\n",
        "Content-Type: application/x-www-form-urlencoded\r\n",
        "Content-Length: 9\r\n",
    ] {
        assert!(r.contains(header), "{header:?} not in {r}");
    }
    assert!(r.ends_with("\r\n\r\na+b=c%26d"), "{r}");
}

#[tokio::test]
async fn reads_every_framing_and_keeps_the_headers() {
    let (addr, accepted, _) = serve(|n| match n {
        0 => b"HTTP/1.1 200 OK\r\nX-Slapos-Gateways: a\r\nX-Slapos-Gateways: https://b/\r\nContent-Length: 5\r\n\r\nhello".to_vec(),
        1 => b"HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n4\r\ndefg\r\n0\r\n\r\n".to_vec(),
        _ => b"HTTP/1.0 200 OK\r\n\r\nuntil close".to_vec(),
    })
    .await;
    let client = Client::new(None, quick());
    let endpoint = Endpoint::from_addr(&addr, false).unwrap();
    let a = client.send(&endpoint, Request::get("/")).await.unwrap();
    assert_eq!((a.status, a.body.as_slice()), (200, &b"hello"[..]));
    assert_eq!(a.header("x-slapos-gateways"), Some("https://b/"));
    let a = client.send(&endpoint, Request::get("/")).await.unwrap();
    assert_eq!((a.status, a.body.as_slice()), (404, &b"abcdefg"[..]));
    let a = client.send(&endpoint, Request::get("/")).await.unwrap();
    assert_eq!((a.status, a.body.as_slice()), (200, &b"until close"[..]));
    // the HTTP/1.0 answer closed the connection: the next call opens another
    let a = client.send(&endpoint, Request::get("/")).await.unwrap();
    assert_eq!(a.status, 200);
    assert_eq!(accepted.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn bounds_the_answer() {
    let (addr, _, _) = serve(|n| match n {
        0 => b"HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\n0123456789a".to_vec(),
        1 => b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n6\r\n012345\r\n5\r\n6789a\r\n0\r\n\r\n".to_vec(),
        _ => b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n0123456789".to_vec(),
    })
    .await;
    let client = Client::new(
        None,
        Options {
            max_body: 10,
            ..quick()
        },
    );
    let endpoint = Endpoint::from_addr(&addr, false).unwrap();
    for _ in 0..2 {
        let e = client.send(&endpoint, Request::get("/")).await.unwrap_err();
        assert!(matches!(e, Error::TooLarge { limit: 10 }), "{e}");
    }
    let a = client.send(&endpoint, Request::get("/")).await.unwrap();
    assert_eq!(a.body, b"0123456789");
}

#[tokio::test]
async fn a_refused_connection_is_not_sent_a_silent_server_times_out() {
    let dead = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let dead_addr = dead.local_addr().unwrap().to_string();
    drop(dead);
    let client = Client::new(None, quick());
    let e = client
        .send(
            &Endpoint::from_addr(&dead_addr, false).unwrap(),
            Request::get("/"),
        )
        .await
        .unwrap_err();
    assert!(e.is_not_sent(), "{e}");
    assert!(
        matches!(e, Error::NotSent(ref n) if n.why == http_client::Unreached::Refused),
        "{e:?}"
    );

    // accepts, reads, never answers
    let silent = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_addr = silent.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        let mut kept = Vec::new();
        while let Ok((s, _)) = silent.accept().await {
            kept.push(s);
        }
    });
    let client = Client::new(
        None,
        Options {
            timeout: Duration::from_millis(300),
            ..quick()
        },
    );
    let started = Instant::now();
    let e = client
        .send(
            &Endpoint::from_addr(&silent_addr, false).unwrap(),
            Request::get("/"),
        )
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Timeout(_)) && !e.is_not_sent(), "{e}");
    assert!(started.elapsed() < Duration::from_secs(2));

    // https without a TLS configuration
    let e = client
        .send(
            &Endpoint::from_addr(&silent_addr, true).unwrap(),
            Request::get("/"),
        )
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Tls(_)), "{e}");
}

#[tokio::test]
async fn a_trickling_server_cannot_hold_a_call_past_its_deadline() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        let (s, _) = listener.accept().await.unwrap();
        let mut s = BufReader::new(s);
        read_request(&mut s).await;
        let _ = s
            .get_mut()
            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n")
            .await;
        loop {
            tokio::time::sleep(Duration::from_millis(50)).await;
            if s.get_mut().write_all(b"x").await.is_err() {
                return;
            }
        }
    });
    let client = Client::new(
        None,
        Options {
            deadline: Duration::from_millis(500),
            ..quick()
        },
    );
    let started = Instant::now();
    let e = client
        .send(
            &Endpoint::from_addr(&addr, false).unwrap(),
            Request::get("/"),
        )
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Timeout(_)), "{e}");
    assert!(started.elapsed() < Duration::from_secs(2));
}

struct Pki {
    ca_pem: String,
    server: (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>),
    client_files: (tempfile::TempDir, std::path::PathBuf, std::path::PathBuf),
}

fn make_pki() -> Pki {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::default();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca, ca_key);
    let leaf = |eku: ExtendedKeyUsagePurpose| {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::default();
        p.subject_alt_names = vec![SanType::IpAddress("127.0.0.1".parse().unwrap())];
        p.extended_key_usages = vec![eku];
        p.use_authority_key_identifier_extension = true;
        let cert = p.signed_by(&key, &issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    };
    let (server_cert, server_key) = leaf(ExtendedKeyUsagePurpose::ServerAuth);
    let (client_cert, client_key) = leaf(ExtendedKeyUsagePurpose::ClientAuth);
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("client.crt"), dir.path().join("client.key"));
    std::fs::write(&cert, client_cert).unwrap();
    std::fs::write(&key, client_key).unwrap();
    Pki {
        ca_pem: ca_cert.pem(),
        server: (
            vec![CertificateDer::from_pem_slice(server_cert.as_bytes()).unwrap()],
            PrivateKeyDer::from_pem_slice(server_key.as_bytes()).unwrap(),
        ),
        client_files: (dir, cert, key),
    }
}

/// An HTTPS server requiring a client certificate of the CA; answers `ok` to each request.
async fn serve_mtls(pki: &Pki) -> String {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(pki.ca_pem.as_bytes()).unwrap())
        .unwrap();
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()
    .unwrap();
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_client_cert_verifier(verifier)
        .with_single_cert(pki.server.0.clone(), pki.server.1.clone_key())
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(s).await else {
                    return;
                };
                let mut s = BufReader::new(tls);
                while read_request(&mut s).await.is_some() {
                    let inner: &mut (dyn AsyncWrite + Unpin + Send) = s.get_mut();
                    if inner
                        .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
            });
        }
    });
    addr
}

#[tokio::test]
async fn tls_verified_or_not_with_a_client_certificate() {
    let pki = make_pki();
    let addr = serve_mtls(&pki).await;
    let endpoint = Endpoint::parse(&format!("https://{addr}/")).unwrap();
    let (_, cert, key) = &pki.client_files;
    let ca = vec![pki.ca_pem.clone().into_bytes()];
    let identity = || Some(tls::Identity::from_pem_files(cert, key).unwrap());

    // verified against the CA, presenting the certificate
    let config = Arc::new(tls::verified(&ca, identity()).unwrap());
    let client = Client::new(Some(config), quick());
    let a = client.send(&endpoint, Request::get("/")).await.unwrap();
    assert_eq!((a.status, a.body.as_slice()), (200, &b"ok"[..]));

    // not verified (the reference's verify=False), presenting the certificate
    let client = Client::new(
        Some(Arc::new(tls::unverified(identity()).unwrap())),
        quick(),
    );
    assert_eq!(
        client
            .send(&endpoint, Request::get("/"))
            .await
            .unwrap()
            .status,
        200
    );

    // without the certificate: refused by the server
    let client = Client::new(Some(Arc::new(tls::verified(&ca, None).unwrap())), quick());
    assert!(client.send(&endpoint, Request::get("/")).await.is_err());

    // verified against another CA: refused by the client, before anything is sent
    let other = vec![make_pki().ca_pem.into_bytes()];
    let client = Client::new(
        Some(Arc::new(tls::verified(&other, identity()).unwrap())),
        quick(),
    );
    let e = client.send(&endpoint, Request::get("/")).await.unwrap_err();
    assert!(e.is_not_sent(), "{e}");
    assert!(
        matches!(e, Error::NotSent(ref n) if n.why == http_client::Unreached::UntrustedServer),
        "{e:?}"
    );

    assert!(matches!(
        tls::verified(&[b"no PEM here".to_vec()], None),
        Err(Error::Tls(_))
    ));
}

#[tokio::test]
async fn reads_the_certificate_a_server_presents_verified() {
    let pki = make_pki();
    let addr = serve_mtls(&pki).await;
    let endpoint = Endpoint::parse(&format!("https://{addr}/")).unwrap();
    let (_, cert, key) = &pki.client_files;
    let identity = || Some(tls::Identity::from_pem_files(cert, key).unwrap());
    let ca = vec![pki.ca_pem.clone().into_bytes()];
    let config = Arc::new(tls::verified(&ca, identity()).unwrap());
    let der = http_client::server_certificate(&endpoint, config, Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(der, pki.server.0[0].as_ref());

    // a server the CA does not vouch for: said so, nothing read
    let other = vec![make_pki().ca_pem.into_bytes()];
    let config = Arc::new(tls::verified(&other, identity()).unwrap());
    let e = http_client::server_certificate(&endpoint, config.clone(), Duration::from_secs(5))
        .await
        .unwrap_err();
    assert!(
        matches!(e, Error::NotSent(ref n) if n.why == http_client::Unreached::UntrustedServer),
        "{e:?}"
    );
    // plain http has none
    let plain = Endpoint::parse(&format!("http://{addr}/")).unwrap();
    let e = http_client::server_certificate(&plain, config, Duration::from_secs(5))
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Tls(_)), "{e:?}");
}

#[test]
fn the_blocking_client_works_inside_and_outside_a_runtime() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (addr, accepted, _) = runtime.block_on(serve(|_| {
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok".to_vec()
    }));
    let endpoint = Endpoint::from_addr(&addr, false).unwrap();

    // a plain thread: the calls share one kept-alive connection
    let client = BlockingClient::new(None, quick()).unwrap();
    for _ in 0..5 {
        assert_eq!(
            client.send(&endpoint, Request::get("/")).unwrap().body,
            b"ok"
        );
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 1);
    drop(client);

    // an async task: made, used and dropped there without a panic
    let e = endpoint.clone();
    let body = runtime.block_on(async move {
        let client = BlockingClient::new(None, quick()).unwrap();
        let body = client.send(&e, Request::get("/")).map(|a| a.body);
        drop(client);
        body
    });
    assert_eq!(body.unwrap(), b"ok");

    // several threads at once
    let client = Arc::new(BlockingClient::new(None, quick()).unwrap());
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let (client, endpoint) = (client.clone(), endpoint.clone());
            std::thread::spawn(move || {
                (0..10).all(|_| {
                    client
                        .send(&endpoint, Request::get("/"))
                        .is_ok_and(|a| a.body == b"ok")
                })
            })
        })
        .collect();
    assert!(threads.into_iter().all(|t| t.join().unwrap()));
}
