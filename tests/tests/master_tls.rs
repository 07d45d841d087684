//! mTLS between masters and on the master API, as an operator sets it up: a group of one
//! made plain (`master init` creates the CA), its replicas' certificates issued, then the
//! replicas restarted with `[tls]` and the others joined over it. Raft and the master API
//! then admit only the group's replicas and gateways: a computer's certificate of the same
//! authority is refused, a plain client too, and a replica of another group cannot join.
//! Replica 1 and a gateway run from the guide's example files (`docs/examples/`, only
//! their addresses and paths changed), so those cannot go stale.

use master_client::tls::TlsFiles;
use master_replica::node::ReplicaConfig;
use slapos_e2e::agent::{open_dir, text};
use slapos_e2e::guide::example;
use slapos_e2e::slapos_bin;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

fn port() -> u16 {
    slapos_harness::free_port().expect("a free port")
}

struct Procs(Vec<Child>);

impl Drop for Procs {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn slapos(args: &[&str], tls: Option<&TlsFiles>) -> Output {
    let mut c = Command::new(slapos_bin());
    c.args(args).env_remove("RUST_BACKTRACE");
    for v in [
        "SLAPOS_MASTER_TLS_CERT",
        "SLAPOS_MASTER_TLS_KEY",
        "SLAPOS_MASTER_TLS_CA",
    ] {
        c.env_remove(v);
    }
    if let Some(t) = tls {
        c.env("SLAPOS_MASTER_TLS_CERT", &t.cert)
            .env("SLAPOS_MASTER_TLS_KEY", &t.key)
            .env("SLAPOS_MASTER_TLS_CA", &t.ca);
    }
    c.output().expect("run slapos")
}

fn run(procs: &mut Procs, dir: &Path, args: &[&str], log: &str) {
    let child = Command::new(slapos_bin())
        .args(args)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join(log)).unwrap())
        .spawn()
        .unwrap();
    procs.0.push(child);
}

fn wait_port(addr: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(addr).is_err() {
        assert!(Instant::now() < deadline, "{addr} never listened");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn replica(dir: &Path, id: u64) -> (ReplicaConfig, PathBuf) {
    let mut c = ReplicaConfig::new(
        id,
        format!("127.0.0.1:{}", port()),
        format!("127.0.0.1:{}", port()),
        dir.join(format!("data-{id}")),
    );
    c.region = "local".into();
    let path = dir.join(format!("replica-{id}.toml"));
    std::fs::write(&path, c.to_toml()).unwrap();
    (c, path)
}

fn issue(via: &str, identity: &str, out: &Path) -> TlsFiles {
    issue_as(via, identity, out, None)
}

/// [`issue`], presenting `tls` to the master API (a group under mTLS).
fn issue_as(via: &str, identity: &str, out: &Path, tls: Option<&TlsFiles>) -> TlsFiles {
    let mut args = vec![
        "cluster",
        "ca",
        "issue",
        "--via",
        via,
        "--identity",
        identity,
        "--out",
        out.to_str().unwrap(),
    ];
    // Servers are reached at their addresses.
    if identity.starts_with("replica:") || identity.starts_with("gateway:") {
        args.extend(["--ip", "127.0.0.1"]);
    }
    let o = slapos(&args, tls);
    assert!(o.status.success(), "issue {identity}: {}", text(&o));
    let name = identity.replace(':', "-");
    TlsFiles {
        cert: out.join(format!("{name}.crt")),
        key: out.join(format!("{name}.key")),
        ca: out.join("ca.pem"),
    }
}

fn export_ca(via: &str, out: &Path) {
    let o = slapos(&["cluster", "ca", "export", "--via", via], None);
    assert!(o.status.success(), "{}", text(&o));
    std::fs::create_dir_all(out).unwrap();
    std::fs::write(out.join("ca.pem"), o.stdout).unwrap();
}

/// A group of one, plain, with its CA: (config, path).
fn plain_group(procs: &mut Procs, dir: &Path, id: u64) -> (ReplicaConfig, PathBuf) {
    let (c, path) = replica(dir, id);
    let o = slapos(
        &["master", "init", "--config", path.to_str().unwrap()],
        None,
    );
    assert!(o.status.success(), "init: {}", text(&o));
    run(
        procs,
        dir,
        &["master", "run", "--config", path.to_str().unwrap()],
        &format!("replica-{id}.log"),
    );
    wait_port(&c.api_addr);
    (c, path)
}

fn members(tls: &TlsFiles, via: &str) -> Result<usize, String> {
    let o = slapos(&["cluster", "status", "--json", "--via", via], Some(tls));
    if !o.status.success() {
        return Err(text(&o));
    }
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).map_err(|e| e.to_string())?;
    Ok(v["members"].as_array().map_or(0, |m| m.len()))
}

#[test]
fn the_masters_admit_only_the_groups_replicas_and_gateways() {
    let dir = tempfile::tempdir().unwrap();
    let root = open_dir(&dir);
    let mut procs = Procs(Vec::new());
    let certs = root.join("certs");

    // 1. A plain group of one with its CA; its replicas' and gateway's certificates.
    let (c1, p1) = plain_group(&mut procs, &root, 1);
    export_ca(&c1.api_addr, &certs);
    let t1 = issue(&c1.api_addr, "replica:1", &certs);
    let t2 = issue(&c1.api_addr, "replica:2", &certs);
    let t3 = issue(&c1.api_addr, "replica:3", &certs);
    let gw = issue(&c1.api_addr, "gateway:gw", &certs);
    let computer = issue(&c1.api_addr, "computer:COMP-1", &certs);

    // 2. Every replica with [tls]; replica 1 restarted, 2 and 3 join over mTLS.
    for c in &mut procs.0 {
        let _ = c.kill();
        let _ = c.wait();
    }
    procs.0.clear();
    let with_tls = |c: &ReplicaConfig, path: &Path, t: &TlsFiles| {
        let mut c = c.clone();
        c.tls = Some(t.clone());
        std::fs::write(path, c.to_toml()).unwrap();
    };
    // Replica 1 from the guide's example file.
    let metrics = format!("127.0.0.1:{}", port());
    let r1_text = example(
        "replica.toml",
        &[
            ("[2001:db8:1::10]:7101", c1.raft_addr.clone()),
            ("[2001:db8:1::10]:7201", c1.api_addr.clone()),
            ("[2001:db8:1::10]:9101", metrics),
            ("/srv/slapos/master-1", c1.data_dir.display().to_string()),
            (
                "/etc/slapos/master/replica-1.crt",
                t1.cert.display().to_string(),
            ),
            (
                "/etc/slapos/master/replica-1.key",
                t1.key.display().to_string(),
            ),
            ("/etc/slapos/ca.pem", t1.ca.display().to_string()),
        ],
    );
    let from_example = ReplicaConfig::parse(&r1_text).unwrap();
    assert_eq!(from_example.tls.as_ref(), Some(&t1));
    std::fs::write(&p1, r1_text).unwrap();
    let (c2, p2) = replica(&root, 2);
    let (c3, p3) = replica(&root, 3);
    with_tls(&c2, &p2, &t2);
    with_tls(&c3, &p3, &t3);
    for (c, p, id) in [(&c1, &p1, 1), (&c2, &p2, 2), (&c3, &p3, 3)] {
        run(
            &mut procs,
            &root,
            &["master", "run", "--config", p.to_str().unwrap()],
            &format!("tls-replica-{id}.log"),
        );
        wait_port(&c.api_addr);
    }
    for p in [&p2, &p3] {
        let o = slapos(
            &[
                "master",
                "join",
                "--config",
                p.to_str().unwrap(),
                "--via",
                &c1.api_addr,
            ],
            None,
        );
        assert!(o.status.success(), "join over mTLS: {}", text(&o));
    }
    let via = [&c1.api_addr, &c2.api_addr, &c3.api_addr]
        .map(|s| s.as_str())
        .join(",");
    assert_eq!(members(&t1, &via), Ok(3));

    // 3. Refused: a computer's certificate of the same authority, and no certificate.
    let err = members(&computer, &c1.api_addr).unwrap_err();
    assert!(
        err.contains("may not use this service of the masters"),
        "{err}"
    );
    // The refusal says which certificate is needed (issue 20).
    assert!(err.contains("--identity operator:NAME"), "{err}");
    let plain = slapos(&["cluster", "status", "--via", &c1.api_addr], None);
    assert!(
        !plain.status.success(),
        "a plain client was served: {}",
        text(&plain)
    );
    // Without a certificate: told at once (no retries until the deadline) that the
    // masters need mutual TLS, and which variables to set.
    let said = String::from_utf8_lossy(&plain.stderr);
    assert!(said.contains("requires mutual TLS"), "{}", text(&plain));
    assert!(!said.contains("attempts"), "retried: {}", text(&plain));
    for var in [
        "SLAPOS_MASTER_TLS_CERT",
        "SLAPOS_MASTER_TLS_KEY",
        "SLAPOS_MASTER_TLS_CA",
    ] {
        assert!(said.contains(var), "{var} not named: {}", text(&plain));
    }

    // What a gateway's certificate may not do, and the reason it is told.
    let stolen = root.join("stolen").display().to_string();
    let refused = |what: &str, args: &[&str], reason: &str| {
        let out = slapos(args, Some(&gw));
        assert!(!out.status.success(), "a gateway {what}");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains(reason),
            "{}",
            text(&out)
        );
    };
    let api = c1.api_addr.as_str();
    // No server certificate (it could pose as a replica), nor an operator's.
    refused(
        "had a replica certificate issued",
        &[
            "cluster",
            "ca",
            "issue",
            "--via",
            api,
            "--identity",
            "replica:7",
            "--ip",
            "127.0.0.1",
            "--out",
            &stolen,
        ],
        "may not have server certificates",
    );
    refused(
        "had an operator certificate issued",
        &[
            "cluster",
            "ca",
            "issue",
            "--via",
            api,
            "--identity",
            "operator:eve",
            "--out",
            &stolen,
        ],
        "may not have server certificates",
    );
    // None of the operator's commands: a server enrollment token, a membership change,
    // a revocation.
    refused(
        "made a server token",
        &[
            "cluster",
            "ca",
            "token",
            "--via",
            api,
            "--identity",
            "replica:7",
            "--ip",
            "127.0.0.1",
        ],
        "may not create_token",
    );
    refused(
        "removed a replica",
        &["master", "leave", "--id", "3", "--via", api],
        "may not remove_replica",
    );
    refused(
        "revoked a replica",
        &[
            "cluster",
            "ca",
            "revoke",
            "--via",
            api,
            "--identity",
            "replica:1",
        ],
        "may not revoke",
    );
    assert_eq!(members(&t1, &via), Ok(3));

    // An operator's certificate (issued through a replica's) runs the group without a
    // replica's key: the status, a server enrollment token; but it is no replica to Raft.
    let op = issue_as(&c1.api_addr, "operator:alice", &certs, Some(&t1));
    assert_eq!(members(&op, &via), Ok(3));
    let out = slapos(
        &[
            "cluster",
            "ca",
            "token",
            "--via",
            &c1.api_addr,
            "--identity",
            "replica:7",
            "--ip",
            "127.0.0.1",
        ],
        Some(&op),
    );
    assert!(out.status.success(), "{}", text(&out));

    // 4. A replica of another group cannot join.
    let other = root.join("other");
    std::fs::create_dir_all(&other).unwrap();
    let (c9, _) = plain_group(&mut procs, &other, 9);
    let other_certs = other.join("certs");
    export_ca(&c9.api_addr, &other_certs);
    let t4 = issue(&c9.api_addr, "replica:4", &other_certs);
    let (c4, p4) = replica(&other, 4);
    with_tls(&c4, &p4, &t4);
    run(
        &mut procs,
        &other,
        &["master", "run", "--config", p4.to_str().unwrap()],
        "replica-4.log",
    );
    wait_port(&c4.api_addr);
    let o = slapos(
        &[
            "master",
            "join",
            "--config",
            p4.to_str().unwrap(),
            "--via",
            &c1.api_addr,
        ],
        None,
    );
    assert!(
        !o.status.success(),
        "a foreign replica joined: {}",
        text(&o)
    );
    assert_eq!(members(&t1, &via), Ok(3));

    // 5. A gateway with the group's certificate reaches the masters; without, it does not.
    let mut serve = |name: &str, master_tls: Option<&TlsFiles>| -> String {
        let listen = format!("127.0.0.1:{}", port());
        let mut cfg = format!(
            "listen = \"{listen}\"\nmasters = [\"{}\"]\ninsecure_http = true\nmaster_deadline_ms = 3000\n",
            c1.api_addr
        );
        if let Some(t) = master_tls {
            cfg.push_str(&format!(
                "[master_tls]\ncert = \"{}\"\nkey = \"{}\"\nca = \"{}\"\n",
                t.cert.display(),
                t.key.display(),
                t.ca.display()
            ));
        }
        let path = root.join(format!("{name}.toml"));
        std::fs::write(&path, cfg).unwrap();
        run(
            &mut procs,
            &root,
            &["gateway", "run", "--config", path.to_str().unwrap()],
            &format!("{name}.log"),
        );
        wait_port(&listen);
        listen
    };
    let ask = |listen: &str| {
        let o = Command::new("curl")
            .args([
                "-sS",
                "--max-time",
                "20",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
            ])
            .arg(format!(
                "http://{listen}/getFullComputerInformation?computer_id=COMP-NONE"
            ))
            .output()
            .unwrap();
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    let good = serve("gw-tls", Some(&gw));
    assert_eq!(
        ask(&good),
        "404",
        "the master (unknown computer) should answer"
    );
    let bad = serve("gw-plain", None);
    assert_eq!(
        ask(&bad),
        "503",
        "a gateway without the group's certificate reached the masters"
    );
    // The guide's example gateway (HTTPS, client certificates, mTLS to the masters):
    // a computer of the group is served over it, a client without a certificate not.
    let listen = format!("127.0.0.1:{}", port());
    let gw_text = example(
        "gateway.toml",
        &[
            ("[2001:db8:1::10]:8443", listen.clone()),
            (
                r#"["[2001:db8:1::10]:7201", "[2001:db8:2::10]:7201", "[2001:db8:3::10]:7201"]"#,
                format!("{:?}", [&c1.api_addr, &c2.api_addr, &c3.api_addr]),
            ),
            (
                "/etc/slapos/gateway/gateway-lille.crt",
                gw.cert.display().to_string(),
            ),
            (
                "/etc/slapos/gateway/gateway-lille.key",
                gw.key.display().to_string(),
            ),
            ("/etc/slapos/ca.pem", gw.ca.display().to_string()),
            (
                "/srv/slapos/releases",
                root.join("gw-releases").display().to_string(),
            ),
        ],
    );
    let path = root.join("gw-example.toml");
    std::fs::write(&path, gw_text).unwrap();
    run(
        &mut procs,
        &root,
        &["gateway", "run", "--config", path.to_str().unwrap()],
        "gw-example.log",
    );
    wait_port(&listen);
    let https = |cert: Option<&TlsFiles>| {
        let mut c = Command::new("curl");
        c.args([
            "-sS",
            "--max-time",
            "20",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
        ])
        .arg("--cacert")
        .arg(&gw.ca);
        if let Some(t) = cert {
            c.arg("--cert").arg(&t.cert).arg("--key").arg(&t.key);
        }
        let o = c
            .arg(format!(
                "https://{listen}/getFullComputerInformation?computer_id=COMP-1"
            ))
            .output()
            .unwrap();
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    let served = https(Some(&computer));
    assert!(
        served == "200" || served == "404",
        "the example gateway did not serve a computer of the group: {served}"
    );
    assert!(
        !matches!(https(None).as_str(), "200" | "404"),
        "the example gateway served a client without a certificate"
    );

    // 6. A compromised gateway is not a compromised master (security review, findings
    // 5 to 7): this process now holds the gateway's certificate and key, as an attacker
    // in the gateway's partition would, and talks to the masters directly.
    compromised_gateway(&via, &gw, &op, &certs);
}

/// What an attacker holding a gateway's certificate and key tries against the masters,
/// and what stops each attempt.
fn compromised_gateway(via: &str, gw: &TlsFiles, op: &TlsFiles, certs: &Path) {
    use master_client::{ClientError, Denial, MasterClient};
    use slapos_ca::{new_key_and_csr, sign_proof, Identity};
    use slapos_domain::{Command, Op, RequestId, Timestamp};
    use slapos_proto::proof::{message, Purpose};
    use slapos_proto::rpc::master::IssueRequest;

    // A second gateway's certificate, revoked by the operator: refused from then on.
    let gw2 = issue_as(
        via.split(',').next().unwrap(),
        "gateway:gw2",
        certs,
        Some(op),
    );
    assert_eq!(members(&gw2, via), Ok(3));
    let out = slapos(
        &[
            "cluster",
            "ca",
            "revoke",
            "--via",
            via,
            "--identity",
            "gateway:gw2",
        ],
        Some(op),
    );
    assert!(out.status.success(), "{}", text(&out));
    let revoked_refused = || {
        let err = members(&gw2, via).expect_err("a revoked gateway certificate was admitted");
        assert!(err.contains("revoked"), "{err}");
    };
    revoked_refused();
    // An admin's certificate (public: any gateway sees it at every handshake).
    let admin = issue_as(
        via.split(',').next().unwrap(),
        "person:admin",
        certs,
        Some(op),
    );
    let admin_pem = std::fs::read_to_string(&admin.cert).unwrap();

    master_client::tls::set_client(gw).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let addrs: Vec<String> = via.split(',').map(str::to_owned).collect();
        let mut client = MasterClient::new(addrs).with_deadline(Duration::from_secs(20));
        let now = master_client::proposer_time();
        let two_years = 2 * 365 * 86_400 * 1_000_000;

        // Finding 5: a command stamped two years ahead is refused before the log, and
        // moves nothing: the revoked certificate is still refused afterwards, even once
        // the next certificate recorded prunes what ended before the master's clock.
        let command = Command {
            request_id: RequestId::new("attacker", 1),
            at: Timestamp(now.micros() + two_years),
            op: Op::CreateToken {
                hash: "ab".repeat(32),
                owner: "admin".into(),
                computer: "COMP-X".into(),
                expires_at: Timestamp(now.micros() + two_years + 1),
                server: None,
            },
        };
        let (outcome, _) = client.submit(&command).await.unwrap();
        match outcome {
            Err(slapos_domain::DomainError::ClockSkew { skew, .. }) => {
                assert!(skew.contains("ahead"), "{skew}")
            }
            other => panic!("a far-future command was not refused: {other:?}"),
        }

        // Finding 6: the request ids a replica uses for its own writes are not the
        // gateway's to spend: 260 commands under `master-<id>-ca` with huge sequence
        // numbers land in the gateway's own namespace.
        for id in 1..=3u64 {
            for n in 0..90u64 {
                let spam = Command {
                    request_id: RequestId::new(format!("master-{id}-ca"), u64::MAX - n),
                    at: master_client::proposer_time(),
                    op: Op::BangComputer {
                        computer: "COMP-NONE".into(),
                        message: String::new(),
                    },
                };
                let (outcome, _) = client.submit(&spam).await.unwrap();
                assert!(outcome.is_err());
            }
        }

        // Finding 7: no partition's private key for a gateway (the computer is not
        // marked as running the Python agent), and no certificate it cannot justify.
        let format = Command {
            request_id: RequestId::new("attacker", 3),
            at: master_client::proposer_time(),
            op: Op::FormatComputer {
                computer: "COMP-1".into(),
                spec: slapos_domain::ComputerSpec {
                    address: None,
                    netmask: None,
                    partitions: vec![slapos_domain::PartitionSpec {
                        id: "slappart0".into(),
                        tap: None,
                        addresses: Vec::new(),
                    }],
                },
            },
        };
        assert!(client.submit(&format).await.unwrap().0.is_ok());
        match client.partition_certificate("COMP-1", "slappart0").await {
            Err(ClientError::Denied {
                kind: Denial::Forbidden,
                message,
            }) => assert!(message.contains("make their own keys"), "{message}"),
            other => panic!("a gateway read a partition's key: {other:?}"),
        }
        let (own_key, csr) = new_key_and_csr(&Identity::Person("admin".into())).unwrap();
        let ask = |presented: &str, proof: &str| IssueRequest {
            csr_pem: csr.clone(),
            identity: "person:admin".into(),
            validity_secs: 10 * 365 * 86400,
            presented_cert_pem: presented.to_owned(),
            proof: proof.to_owned(),
            ..Default::default()
        };
        for (what, req) in [
            ("with no proof", ask("", "")),
            (
                "presenting the admin's certificate, signed with its own key",
                ask(
                    &admin_pem,
                    &sign_proof(&own_key, &message(&Purpose::Renew, &csr)).unwrap(),
                ),
            ),
        ] {
            match client.issue(&req).await {
                Err(ClientError::Denied {
                    kind: Denial::Forbidden,
                    ..
                }) => {}
                other => panic!("a gateway had an admin's certificate issued {what}: {other:?}"),
            }
        }
        // Nor admin rights, which the group records.
        match client
            .submit(&Command {
                request_id: RequestId::new("attacker", 2),
                at: master_client::proposer_time(),
                op: Op::SetAdmin {
                    person: "eve".into(),
                    admin: true,
                },
            })
            .await
        {
            Err(ClientError::Denied {
                kind: Denial::Forbidden,
                message,
            }) => assert!(message.contains("may not set_admin"), "{message}"),
            other => panic!("a gateway made an admin: {other:?}"),
        }
    });
    // The group's own certificate issuance still works (its request ids are its own),
    // and recording one prunes ended records against the master's clock: the revoked
    // gateway certificate stays refused.
    issue_as(
        via.split(',').next().unwrap(),
        "person:after",
        certs,
        Some(op),
    );
    revoked_refused();
}
