//! `slapos tunnel server|client` as real processes in front of Debian's memcached, with
//! certificates the group's CA issued (a one-replica group, `slapos cluster ca issue`):
//! set/get through the tunnel; a client whose identity is not on the allow-list refused
//! at the handshake and logged with its identity; a server whose certificate names
//! another identity refused by the client end; and, captured by a relay of this test
//! between the two ends, nothing of memcached's traffic in clear on the network side.

use slapos_e2e::agent::{open_dir, slapos, text, wait_for, Up};
use slapos_e2e::slapos_bin;
use slapos_harness::free_port;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A child process killed and reaped when dropped.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn listening(addr: &str) -> bool {
    TcpStream::connect(addr).is_ok()
}

/// memcached on 127.0.0.1:<port>.
fn memcached(port: u16, log: &Path) -> Proc {
    let mut cmd = Command::new("memcached");
    cmd.args(["-l", "127.0.0.1", "-p", &port.to_string(), "-U", "0"]);
    if slapos_e2e::agent::is_root() {
        cmd.args(["-u", "nobody"]);
    }
    let child = cmd
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .expect("memcached (scripts/install-deps installs it)");
    let p = Proc(child);
    wait_for("memcached", Duration::from_secs(10), || {
        listening(&format!("127.0.0.1:{port}"))
    });
    p
}

/// `slapos tunnel <args>` with its log (stderr, warnings and up) in `log`; once it
/// listens on `listen`.
fn tunnel(args: &[&str], listen: &str, log: &Path) -> Proc {
    let child = Command::new(slapos_bin())
        .arg("tunnel")
        .args(args)
        .args(["--listen", listen])
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap();
    let mut p = Proc(child);
    wait_for(
        &format!("the tunnel on {listen}"),
        Duration::from_secs(20),
        || {
            if let Ok(Some(status)) = p.0.try_wait() {
                panic!(
                    "slapos tunnel exited ({status}): {}",
                    std::fs::read_to_string(log).unwrap_or_default()
                );
            }
            listening(listen)
        },
    );
    p
}

/// Waits until a line of the log at `path` satisfies `pred` (10 s), or fails showing it.
fn wait_log(path: &Path, what: &str, pred: impl Fn(&str) -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let log = std::fs::read_to_string(path).unwrap_or_default();
        if log.lines().any(&pred) {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{what} not in {}:\n{log}",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A TCP relay on [::1]:<port> to `to`, recording every byte it carries (both ways).
fn capturing_relay(port: u16, to: String) -> Arc<Mutex<Vec<u8>>> {
    let captured = Arc::new(Mutex::new(Vec::new()));
    let listener = TcpListener::bind(("::1", port)).unwrap();
    let c = captured.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(a) = conn else { return };
            let Ok(b) = TcpStream::connect(&to) else {
                continue;
            };
            for (mut from, mut into) in [(a.try_clone().unwrap(), b.try_clone().unwrap()), (b, a)] {
                let c = c.clone();
                std::thread::spawn(move || {
                    let mut buf = [0u8; 16384];
                    loop {
                        match from.read(&mut buf) {
                            Ok(0) | Err(_) => {
                                let _ = into.shutdown(Shutdown::Write);
                                return;
                            }
                            Ok(n) => {
                                c.lock().unwrap().extend_from_slice(&buf[..n]);
                                if into.write_all(&buf[..n]).is_err() {
                                    return;
                                }
                            }
                        }
                    }
                });
            }
        }
    });
    captured
}

/// Sends `request` to memcached at `addr`, then reads until `until` ends the answer or
/// the connection closes; what came back.
fn memcache(addr: &str, request: &[u8], until: &[u8]) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let _ = s.write_all(request);
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    while !out.ends_with(until) {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
        }
    }
    out
}

#[test]
fn memcached_through_the_tunnel_checked_both_ways_and_never_in_clear() {
    let dir = tempfile::tempdir().unwrap();
    let root = open_dir(&dir);
    let up = Up::start_replicas(&root, 1);
    let via = up.api_addrs().join(",");
    let certs = root.join("certs");
    let issue = |identity: &str| -> (String, String) {
        let out = slapos(&[
            "cluster",
            "ca",
            "issue",
            "--via",
            &via,
            "--identity",
            identity,
            "--out",
            certs.to_str().unwrap(),
        ]);
        assert!(out.status.success(), "issue {identity}: {}", text(&out));
        let name = identity.replace(':', "-");
        let path = |ext: &str| certs.join(format!("{name}.{ext}")).display().to_string();
        (path("crt"), path("key"))
    };
    const SERVER: &str = "partition:COMP-1:slappart2";
    const CLIENT: &str = "partition:COMP-2:slappart3";
    let server = issue(SERVER);
    let client = issue(CLIENT);
    let stranger = issue("partition:COMP-9:slappart1");
    let impostor = issue("partition:COMP-1:slappart9");
    let ca: PathBuf = root.join("ca.pem");
    let exported = slapos(&["cluster", "ca", "export", "--via", &via]);
    assert!(exported.status.success(), "{}", text(&exported));
    std::fs::write(&ca, &exported.stdout).unwrap();
    let ca = ca.display().to_string();
    let port = || free_port().expect("a free port");

    let mc_port = port();
    let _mc = memcached(mc_port, &root.join("memcached.log"));
    let target = format!("127.0.0.1:{mc_port}");
    let server_end = |(cert, key): &(String, String), listen: &str, log: &str| {
        tunnel(
            &[
                "server", "--target", &target, "--allow", CLIENT, "--cert", cert, "--key", key,
                "--cacert", &ca,
            ],
            listen,
            &root.join(log),
        )
    };
    let client_end = |(cert, key): &(String, String), server: &str, listen: &str, log: &str| {
        tunnel(
            &[
                "client",
                "--target",
                server,
                "--server-identity",
                SERVER,
                "--cert",
                cert,
                "--key",
                key,
                "--cacert",
                &ca,
            ],
            listen,
            &root.join(log),
        )
    };

    // The server end on the IPv6 side, the client end on 127.0.0.1, this test's relay
    // between them.
    let server_addr = format!("[::1]:{}", port());
    let _server = server_end(&server, &server_addr, "server.log");
    let relay_port = port();
    let captured = capturing_relay(relay_port, server_addr.clone());
    let local = format!("127.0.0.1:{}", port());
    let _client = client_end(
        &client,
        &format!("[::1]:{relay_port}"),
        &local,
        "client.log",
    );

    let key = "tunnelkey-7f3a9c";
    let value = "payload-that-must-never-travel-in-clear-5e1d";
    let stored = memcache(
        &local,
        format!("set {key} 0 0 {}\r\n{value}\r\n", value.len()).as_bytes(),
        b"\r\n",
    );
    assert_eq!(
        stored,
        b"STORED\r\n",
        "{}",
        String::from_utf8_lossy(&stored)
    );
    let got = memcache(&local, format!("get {key}\r\n").as_bytes(), b"END\r\n");
    assert_eq!(
        String::from_utf8_lossy(&got),
        format!("VALUE {key} 0 {}\r\n{value}\r\nEND\r\n", value.len())
    );
    // Directly, memcached has it: the tunnel reached the real one.
    let direct = memcache(&target, format!("get {key}\r\n").as_bytes(), b"END\r\n");
    assert_eq!(direct, got);
    // A large value both ways, and memcached's `quit` (it closes first: the tunnel
    // passes the close on).
    let big = "x".repeat(512 * 1024);
    let stored = memcache(
        &local,
        format!("set big 0 0 {}\r\n{big}\r\n", big.len()).as_bytes(),
        b"\r\n",
    );
    assert_eq!(stored, b"STORED\r\n");
    let got = memcache(&local, b"get big\r\nquit\r\n", b"END\r\n");
    assert_eq!(
        got.len(),
        big.len() + "VALUE big 0 524288\r\n\r\nEND\r\n".len()
    );

    // Nothing of it in clear between the two ends: TLS records only.
    let wire = captured.lock().unwrap().clone();
    assert!(
        wire.len() > 512 * 1024,
        "the relay carried {} bytes",
        wire.len()
    );
    for needle in [key, value, "STORED", "VALUE", "xxxxxxxxxxxxxxxx"] {
        assert!(
            !wire.windows(needle.len()).any(|w| w == needle.as_bytes()),
            "{needle:?} in clear on the network side"
        );
    }
    assert_eq!(wire[0], 0x16, "a TLS handshake record first");

    // A partition not on the allow-list: refused at the handshake, logged with its
    // identity; memcached never answers it.
    let stranger_local = format!("127.0.0.1:{}", port());
    let _stranger = client_end(&stranger, &server_addr, &stranger_local, "stranger.log");
    let answer = memcache(
        &stranger_local,
        format!("get {key}\r\n").as_bytes(),
        b"END\r\n",
    );
    assert!(answer.is_empty(), "{}", String::from_utf8_lossy(&answer));
    wait_log(&root.join("server.log"), "the stranger's refusal", |l| {
        l.contains("refused")
            && l.contains("partition:COMP-9:slappart1")
            && l.contains("not on the allow-list")
    });
    // A certificate that is not the group's (a CA of its own, same identity as the
    // allowed client): refused, saying why.
    let own_ca = root.join("own");
    std::fs::create_dir_all(&own_ca).unwrap();
    let openssl = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(&own_ca)
            .output()
            .unwrap();
        assert!(out.status.success(), "openssl {args:?}: {}", text(&out));
    };
    let subject = format!("/O=SlapOS/CN={CLIENT}");
    std::fs::write(
        own_ca.join("leaf.ext"),
        "basicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth\n",
    )
    .unwrap();
    for step in [
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            "own-ca.key",
            "-out",
            "own-ca.crt",
            "-days",
            "1",
            "-subj",
            "/CN=Own CA",
        ][..],
        &[
            "req",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            "forged.key",
            "-out",
            "forged.csr",
            "-subj",
            &subject,
        ],
        &[
            "x509",
            "-req",
            "-in",
            "forged.csr",
            "-CA",
            "own-ca.crt",
            "-CAkey",
            "own-ca.key",
            "-set_serial",
            "4242",
            "-days",
            "1",
            "-extfile",
            "leaf.ext",
            "-out",
            "forged.crt",
        ],
    ] {
        openssl(step);
    }
    let forged = (
        own_ca.join("forged.crt").display().to_string(),
        own_ca.join("forged.key").display().to_string(),
    );
    let forged_local = format!("127.0.0.1:{}", port());
    let _forged = client_end(&forged, &server_addr, &forged_local, "forged.log");
    let answer = memcache(
        &forged_local,
        format!("get {key}\r\n").as_bytes(),
        b"END\r\n",
    );
    assert!(answer.is_empty(), "{}", String::from_utf8_lossy(&answer));
    wait_log(
        &root.join("server.log"),
        "the forged certificate's refusal",
        |l| {
            l.contains("refused")
                && l.contains(CLIENT)
                && l.contains("not issued by the group's CA")
        },
    );

    // A server end whose certificate names another partition of the group (which would
    // even admit our client): the client end refuses it, and says so.
    let impostor_addr = format!("[::1]:{}", port());
    let _impostor = server_end(&impostor, &impostor_addr, "impostor.log");
    let fooled_local = format!("127.0.0.1:{}", port());
    let _fooled = client_end(&client, &impostor_addr, &fooled_local, "fooled.log");
    let answer = memcache(
        &fooled_local,
        format!("get {key}\r\n").as_bytes(),
        b"END\r\n",
    );
    assert!(answer.is_empty(), "{}", String::from_utf8_lossy(&answer));
    wait_log(&root.join("fooled.log"), "the impostor's refusal", |l| {
        l.contains("partition:COMP-1:slappart9")
            && l.contains("not the server identity expected (partition:COMP-1:slappart2)")
    });
    drop(up);
}
