//! Both ends of a tunnel in process, with certificates of a real `slapos_ca::Authority`
//! (as the group issues them: partitions get client certificates only): what is
//! relayed, who is refused, renewals, half-close and the limits.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use slapos_ca::{Authority, IssueRequest};
use slapos_domain::Identity;
use slapos_tunnel::{Limits, Options, Role, TlsFiles, Tunnel};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

fn id(s: &str) -> Identity {
    Identity::parse(s).unwrap()
}

struct Ca {
    authority: Authority,
    ca_file: PathBuf,
    dir: PathBuf,
    serial: std::sync::atomic::AtomicU64,
}

impl Ca {
    fn new(dir: &Path, name: &str) -> Ca {
        let (authority, _) = Authority::create(name, SystemTime::now(), 1).unwrap();
        let ca_file = dir.join(format!("{name}-ca.pem"));
        std::fs::write(&ca_file, authority.cert_pem()).unwrap();
        Ca {
            authority,
            ca_file,
            dir: dir.to_owned(),
            serial: 1.into(),
        }
    }

    /// A certificate for `identity` valid over [from, to] seconds from now, written to
    /// `<file>.crt` and `<file>.key`; the files.
    fn issue_between(&self, identity: &str, file: &str, from: i64, to: i64) -> TlsFiles {
        let identity = id(identity);
        let (key, csr) = slapos_ca::new_key_and_csr(&identity).unwrap();
        let now = SystemTime::now();
        let at = |s: i64| {
            if s >= 0 {
                now + Duration::from_secs(s as u64)
            } else {
                now - Duration::from_secs((-s) as u64)
            }
        };
        let serial = 1000
            + self
                .serial
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst) as u128;
        let issued = self
            .authority
            .issue(&IssueRequest {
                csr_pem: &csr,
                identity,
                serial,
                not_before: at(from),
                not_after: at(to),
                dns_names: vec![],
                ip_addresses: vec![],
            })
            .unwrap();
        let cert = self.dir.join(format!("{file}.crt"));
        let key_file = self.dir.join(format!("{file}.key"));
        std::fs::write(&cert, issued.pem).unwrap();
        std::fs::write(&key_file, key).unwrap();
        TlsFiles {
            cert,
            key: key_file,
            ca: self.ca_file.clone(),
        }
    }

    fn issue(&self, identity: &str, file: &str) -> TlsFiles {
        self.issue_between(identity, file, -60, 86400)
    }
}

/// A target that reads until EOF, then answers `got <n>: <what it read>` and closes:
/// the answer comes only after the client half-closed. Counts its connections.
async fn echo_after_eof() -> (SocketAddr, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let count = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let c = count.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            c.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buf = Vec::new();
                if s.read_to_end(&mut buf).await.is_ok() {
                    let mut answer = format!("got {}: ", buf.len()).into_bytes();
                    answer.extend_from_slice(&buf);
                    let _ = s.write_all(&answer).await;
                    let _ = s.shutdown().await;
                }
            });
        }
    });
    (addr, count)
}

fn limits() -> Limits {
    Limits {
        reload_every: Duration::from_millis(100),
        handshake_timeout: Duration::from_secs(2),
        ..Limits::default()
    }
}

async fn start(options: Options) -> SocketAddr {
    let tunnel = Tunnel::bind(options).await.unwrap();
    let addr = tunnel.local_addr().unwrap();
    tokio::spawn(tunnel.serve(std::future::pending()));
    addr
}

async fn server_end(
    files: TlsFiles,
    allow: &[&str],
    target: SocketAddr,
    limits: Limits,
) -> SocketAddr {
    start(Options {
        listen: "127.0.0.1:0".parse().unwrap(),
        tls: files,
        role: Role::Server {
            allow: allow.iter().map(|a| id(a)).collect(),
            target: target.to_string(),
        },
        limits,
    })
    .await
}

async fn client_end(files: TlsFiles, server: SocketAddr, expected: &str) -> SocketAddr {
    start(Options {
        listen: "127.0.0.1:0".parse().unwrap(),
        tls: files,
        role: Role::Client {
            server: server.to_string(),
            server_identity: id(expected),
        },
        limits: limits(),
    })
    .await
}

/// Sends `data`, half-closes, reads the answer until EOF (empty: refused).
async fn exchange(local: SocketAddr, data: &[u8]) -> Vec<u8> {
    let mut s = TcpStream::connect(local).await.unwrap();
    let _ = s.write_all(data).await;
    let _ = s.shutdown().await;
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out))
        .await
        .expect("an answer or a close within 10 s");
    out
}

const SERVER: &str = "partition:COMP-1:slappart2";
const CLIENT: &str = "partition:COMP-2:slappart3";

#[tokio::test]
async fn relays_both_ways_with_half_close_for_the_identities_allowed() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new(dir.path(), "g");
    let (target, _) = echo_after_eof().await;
    let server = server_end(ca.issue(SERVER, "server"), &[CLIENT], target, limits()).await;
    let client = client_end(ca.issue(CLIENT, "client"), server, SERVER).await;
    assert_eq!(exchange(client, b"hello").await, b"got 5: hello");
    // Large, both ways (the answer is sent only after the whole upload ended).
    let big: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    let out = exchange(client, &big).await;
    assert_eq!(&out[..14], b"got 3000000: \0");
    assert_eq!(&out[13..], &big[..]);
}

#[tokio::test]
async fn a_client_off_the_allow_list_another_ca_or_expired_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new(dir.path(), "g");
    let other = Ca::new(dir.path(), "other");
    let (target, count) = echo_after_eof().await;
    let server = server_end(ca.issue(SERVER, "server"), &[CLIENT], target, limits()).await;
    for files in [
        ca.issue("partition:COMP-9:slappart0", "stranger"),
        other.issue(CLIENT, "forged"),
        ca.issue_between(CLIENT, "expired", -7200, -3600),
    ] {
        let client = client_end(files, server, SERVER).await;
        assert_eq!(exchange(client, b"secret").await, b"");
    }
    // No certificate at all: a plain TLS client is refused too (it gets no data).
    let mut raw = TcpStream::connect(server).await.unwrap();
    raw.write_all(b"get key\r\n").await.unwrap();
    let mut out = Vec::new();
    let _ = raw.read_to_end(&mut out).await;
    assert!(!String::from_utf8_lossy(&out).contains("got"), "{out:?}");
    assert_eq!(
        count.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "the target was reached"
    );
}

#[tokio::test]
async fn a_server_with_another_identity_is_refused_by_the_client() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new(dir.path(), "g");
    let (target, count) = echo_after_eof().await;
    // The impostor is a partition of the group, allowing our client.
    let impostor = server_end(
        ca.issue("partition:COMP-1:slappart9", "impostor"),
        &[CLIENT],
        target,
        limits(),
    )
    .await;
    let client = client_end(ca.issue(CLIENT, "client"), impostor, SERVER).await;
    assert_eq!(exchange(client, b"secret").await, b"");
    assert_eq!(count.load(std::sync::atomic::Ordering::SeqCst), 0);
}

#[tokio::test]
async fn renewed_certificates_are_used_without_dropping_open_connections() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new(dir.path(), "g");
    let (target, _) = echo_after_eof().await;
    let server = server_end(ca.issue(SERVER, "server"), &[CLIENT], target, limits()).await;
    // The client end starts with a certificate the server refuses...
    let files = ca.issue("partition:COMP-2:slappart4", "client");
    let client = client_end(files.clone(), server, SERVER).await;
    assert_eq!(exchange(client, b"a").await, b"");
    // ...and is renewed with one it admits (files rewritten in place).
    ca.issue(CLIENT, "client");
    tokio::time::sleep(Duration::from_millis(500)).await;
    // A connection opened now, kept open across the server's own renewal.
    let mut open = TcpStream::connect(client).await.unwrap();
    open.write_all(b"before ").await.unwrap();
    ca.issue(SERVER, "server");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(exchange(client, b"b").await, b"got 1: b");
    open.write_all(b"after").await.unwrap();
    open.shutdown().await.unwrap();
    let mut out = Vec::new();
    open.read_to_end(&mut out).await.unwrap();
    assert_eq!(out, b"got 12: before after");
    // A renewal that does not make a pair (a key of another certificate) is not used:
    // the previous pair keeps serving.
    let stray = ca.issue(SERVER, "stray");
    std::fs::copy(&stray.key, dir.path().join("server.key")).unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(exchange(client, b"c").await, b"got 1: c");
}

#[tokio::test]
async fn handshakes_are_bounded_and_connections_limited() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new(dir.path(), "g");
    let (target, _) = echo_after_eof().await;
    let mut l = limits();
    l.handshake_timeout = Duration::from_millis(300);
    l.max_connections = 1;
    let server = server_end(ca.issue(SERVER, "server"), &[CLIENT], target, l).await;
    // A peer that says nothing is dropped after the handshake time, which also frees
    // the only connection slot.
    let mut silent = TcpStream::connect(server).await.unwrap();
    let started = std::time::Instant::now();
    let mut buf = [0u8; 1];
    let n = tokio::time::timeout(Duration::from_secs(5), silent.read(&mut buf))
        .await
        .expect("closed within 5 s")
        .unwrap_or(0);
    assert_eq!(n, 0);
    assert!(started.elapsed() < Duration::from_secs(3));
    let client = client_end(ca.issue(CLIENT, "client"), server, SERVER).await;
    // One connection open: the next waits until it ends.
    let mut first = TcpStream::connect(client).await.unwrap();
    first.write_all(b"1").await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let second = tokio::spawn(async move { exchange(client, b"2").await });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!second.is_finished(), "a second connection was relayed");
    first.shutdown().await.unwrap();
    let mut out = Vec::new();
    first.read_to_end(&mut out).await.unwrap();
    assert_eq!(out, b"got 1: 1");
    assert_eq!(second.await.unwrap(), b"got 1: 2");
}

#[tokio::test]
async fn options_that_make_no_tunnel_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new(dir.path(), "g");
    let files = ca.issue(SERVER, "server");
    let base = Options {
        listen: "127.0.0.1:0".parse().unwrap(),
        tls: files.clone(),
        role: Role::Server {
            allow: vec![],
            target: "127.0.0.1:11211".into(),
        },
        limits: limits(),
    };
    let e = Tunnel::bind(base.clone()).await.unwrap_err().to_string();
    assert!(e.contains("no identity allowed"), "{e}");
    let mut o = base.clone();
    o.role = Role::Server {
        allow: vec![id(CLIENT)],
        target: "nowhere".into(),
    };
    let e = Tunnel::bind(o).await.unwrap_err().to_string();
    assert!(e.contains("target"), "{e}");
    let mut o = base.clone();
    o.role = Role::Client {
        server: "[::1]".into(),
        server_identity: id(SERVER),
    };
    let e = Tunnel::bind(o).await.unwrap_err().to_string();
    assert!(e.contains("server address"), "{e}");
    // A key that is not the certificate's.
    let other = ca.issue(CLIENT, "client");
    let mut o = base.clone();
    o.tls.key = other.key;
    o.role = Role::Server {
        allow: vec![id(CLIENT)],
        target: "127.0.0.1:11211".into(),
    };
    let e = Tunnel::bind(o).await.unwrap_err().to_string();
    assert!(e.contains("not the key"), "{e}");
}
