//! A gateway that requires client certificates of the group's authority (`client_ca`),
//! through real HTTPS: the real Python slapos.slap client with its `key_file` /
//! `cert_file`, and curl. Each forbidden row of the authorization table
//! (slap-gateway/DESIGN.md, "Authorization") is tried and refused with 403 and the
//! reason, nothing reaching the master; no certificate, another authority's and a
//! revoked one fail the handshake.

use slapos_e2e::agent::{open_dir, slapos, text, Up};
use slapos_e2e::slapos_bin;
use slapos_harness::free_port;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Certs {
    dir: PathBuf,
}

impl Certs {
    fn key(&self, identity: &str) -> String {
        self.dir
            .join(format!("{}.key", identity.replace(':', "-")))
            .display()
            .to_string()
    }
    fn crt(&self, identity: &str) -> String {
        self.dir
            .join(format!("{}.crt", identity.replace(':', "-")))
            .display()
            .to_string()
    }
}

struct Gateway(Child);

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The real client, as `identity`.
fn python(url: &str, certs: &Certs, identity: &str, args: &[&str]) -> (bool, String) {
    let venv = slapos_e2e::compat::venv();
    let out = Command::new(venv.join("bin/python"))
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("compat/mtls.py"))
        .arg(url)
        .arg(certs.key(identity))
        .arg(certs.crt(identity))
        .args(args)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    match out.status.code() {
        Some(0) => (true, stdout),
        Some(3) => (false, stdout),
        _ => panic!("mtls.py {args:?}: {}", text(&out)),
    }
}

/// curl as `identity` (None: no client certificate): (HTTP status, body), or None when
/// the TLS handshake failed.
fn curl(
    url: &str,
    ca: &Path,
    cert: Option<(&str, &str)>,
    path: &str,
    post: Option<&str>,
) -> Option<(u16, String)> {
    let mut c = Command::new("curl");
    c.args(["-sS", "--max-time", "10", "--cacert"]).arg(ca);
    if let Some((crt, key)) = cert {
        c.args(["--cert", crt, "--key", key]);
    }
    if let Some(body) = post {
        c.args(["--data", body]);
    }
    c.args(["-w", "\n%{http_code}"]).arg(format!("{url}{path}"));
    let out = c.output().unwrap();
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, status) = text.rsplit_once('\n')?;
    Some((status.trim().parse().ok()?, body.to_owned()))
}

#[test]
fn the_gateway_identifies_callers_by_certificate_and_enforces_the_table() {
    let dir = tempfile::tempdir().unwrap();
    let root = open_dir(&dir);
    let up = Up::start_replicas(&root, 1);
    let apis = up.api_addrs();
    let via = apis.join(",");
    let certs = Certs {
        dir: root.join("certs"),
    };
    let issue = |identity: &str, extra: &[&str]| {
        let mut args = vec![
            "cluster",
            "ca",
            "issue",
            "--via",
            &via,
            "--identity",
            identity,
            "--out",
        ];
        let out_dir = certs.dir.display().to_string();
        args.push(&out_dir);
        args.extend_from_slice(extra);
        let out = slapos(&args);
        assert!(out.status.success(), "issue {identity}: {}", text(&out));
    };
    issue("gateway:gw-test", &["--ip", "127.0.0.1"]);
    for who in [
        "computer:COMP-A",
        "computer:COMP-B",
        "partition:COMP-A:slappart0",
        "person:alice",
        "person:bob",
        "person:root",
    ] {
        issue(who, &[]);
    }
    slapos_e2e::grant_admin(&apis, "root");
    let ca = root.join("ca.pem");
    let exported = slapos(&["cluster", "ca", "export", "--via", &via]);
    std::fs::write(&ca, &exported.stdout).unwrap();

    // The gateway: HTTPS with its own certificate, client certificates required.
    let port = free_port().expect("a free port");
    let config = root.join("gw.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:{port}\"\nmasters = {apis:?}\ntls_cert = \"{}\"\ntls_key = \"{}\"\n\
             client_ca = \"{}\"\nrevocation_refresh_ms = 200\n",
            certs.crt("gateway:gw-test"),
            certs.key("gateway:gw-test"),
            ca.display()
        ),
    )
    .unwrap();
    let _gw = Gateway(
        Command::new(slapos_bin())
            .args(["gateway", "run", "--config"])
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(root.join("gw.log")).unwrap())
            .spawn()
            .unwrap(),
    );
    let url = format!("https://127.0.0.1:{port}/");
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "the gateway did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    let as_ = |who: &str| Some((certs.crt(who), certs.key(who)));
    let (url_ref, ca_ref) = (&url, &ca);
    let with = |who: &'static str| {
        let (c, k) = as_(who).unwrap();
        move |path: &str, post: Option<&str>| curl(url_ref, ca_ref, Some((&c, &k)), path, post)
    };

    // No certificate: nothing is served but registration (403); another authority's: no
    // handshake.
    let (status, body) = curl(
        &url,
        &ca,
        None,
        "getFullComputerInformation?computer_id=COMP-A",
        None,
    )
    .expect("a client without a certificate completes the handshake");
    assert_eq!(status, 403, "served without a certificate: {body}");
    let foreign = root.join("foreign");
    std::fs::create_dir_all(&foreign).unwrap();
    let made = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=computer:COMP-A",
            "-keyout",
        ])
        .arg(foreign.join("k.pem"))
        .arg("-out")
        .arg(foreign.join("c.pem"))
        .output()
        .unwrap();
    assert!(made.status.success(), "{}", text(&made));
    let forged = curl(
        &url,
        &ca,
        Some((
            foreign.join("c.pem").to_str().unwrap(),
            foreign.join("k.pem").to_str().unwrap(),
        )),
        "getFullComputerInformation?computer_id=COMP-A",
        None,
    );
    assert!(
        forged.is_none(),
        "a self-signed certificate naming COMP-A was served: {forged:?}"
    );

    // The real client, each as itself: computers format themselves...
    assert_eq!(
        python(&url, &certs, "computer:COMP-A", &["format", "COMP-A", "3"]),
        (true, "OK".into())
    );
    assert_eq!(
        python(&url, &certs, "computer:COMP-B", &["format", "COMP-B", "2"]),
        (true, "OK".into())
    );
    // ...but not each other.
    let (ok, why) = python(&url, &certs, "computer:COMP-B", &["format", "COMP-A", "1"]);
    assert!(
        !ok && why.contains("403")
            && why.contains("computer:COMP-B may not act for computer COMP-A"),
        "{why}"
    );
    let comp_a = with("computer:COMP-A");
    assert_eq!(
        comp_a("getFullComputerInformation?computer_id=COMP-A", None)
            .unwrap()
            .0,
        200
    );
    let (status, body) = comp_a("getFullComputerInformation?computer_id=COMP-B", None).unwrap();
    assert_eq!(status, 403, "{body}");
    let (status, body) = comp_a(
        "startedComputerPartition",
        Some("computer_id=COMP-B&computer_partition_id=slappart0"),
    )
    .unwrap();
    assert_eq!(status, 403, "{body}");

    // Software goes only to computers one owns (the admin supplies here).
    let sr = "https://example.com/software/demo/software.cfg";
    let (ok, why) = python(&url, &certs, "person:alice", &["supply", sr, "COMP-A"]);
    assert!(
        !ok && why.contains("403") && why.contains("does not own computer COMP-A"),
        "{why}"
    );
    for computer in ["COMP-A", "COMP-B"] {
        assert_eq!(
            python(&url, &certs, "person:root", &["supply", sr, computer]),
            (true, "OK".into())
        );
    }

    // A person requests as themselves; the partition is theirs.
    let (ok, partition) = python(
        &url,
        &certs,
        "person:alice",
        &["request", sr, "alice-tree", "COMP-A"],
    );
    assert!(ok, "{partition}");
    assert!(partition.starts_with("slappart"), "{partition}");

    // A partition reads itself, not its neighbour; it publishes only for itself.
    let part = with("partition:COMP-A:slappart0");
    assert_eq!(
        part("registerComputerPartition?computer_reference=COMP-A&computer_partition_reference=slappart0", None)
            .unwrap()
            .0,
        200
    );
    let (status, body) = part(
        "registerComputerPartition?computer_reference=COMP-A&computer_partition_reference=slappart1",
        None,
    )
    .unwrap();
    assert_eq!(status, 403, "{body}");
    let (status, body) = part("getFullComputerInformation?computer_id=COMP-A", None).unwrap();
    assert_eq!(status, 403, "a partition read its whole computer: {body}");
    let (status, body) = part(
        "setComputerPartitionConnectionXml",
        Some("computer_id=COMP-A&computer_partition_id=slappart1&connection_xml=%3Cmarshal%3E%3Cdictionary%20id%3D%22i2%22%2F%3E%3C%2Fmarshal%3E&slave_reference=None"),
    )
    .unwrap();
    assert_eq!(status, 403, "{body}");

    // A person cannot act as a partition (the header is a computer's privilege), nor can a
    // computer for another computer's partition.
    let bob = as_("person:bob").unwrap();
    let header = |c: &str, p: &str| {
        format!("Authorization: X-SlapPartition computer_id={c}, computer_partition_id={p}")
    };
    let request_form = "software_release=https%3A%2F%2Fexample.com%2Fsoftware%2Fdemo%2Fsoftware.cfg&partition_reference=child&partition_parameter_xml=%3Cmarshal%3E%3Cdictionary%20id%3D%22i2%22%2F%3E%3C%2Fmarshal%3E&filter_xml=%3Cmarshal%3E%3Cdictionary%20id%3D%22i2%22%2F%3E%3C%2Fmarshal%3E&software_type=default&state=%3Cmarshal%3E%3Cstring%3Estarted%3C%2Fstring%3E%3C%2Fmarshal%3E&shared_xml=%3Cmarshal%3E%3Cbool%3E0%3C%2Fbool%3E%3C%2Fmarshal%3E";
    for (who, c, p) in [
        (&bob, "COMP-A", partition.as_str()),
        (&as_("computer:COMP-A").unwrap(), "COMP-B", "slappart0"),
    ] {
        let out = Command::new("curl")
            .args(["-sS", "--max-time", "10", "--cacert"])
            .arg(&ca)
            .args([
                "--cert",
                &who.0,
                "--key",
                &who.1,
                "-H",
                &header(c, p),
                "--data",
                request_form,
                "-w",
                "\n%{http_code}",
            ])
            .arg(format!("{url}requestComputerPartition"))
            .output()
            .unwrap();
        let answer = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(answer.ends_with("\n403"), "acting for {c}/{p}: {answer}");
    }

    // A partition does not renew its own certificate (its computer fetches it).
    let (status, body) = part("renewCertificate", Some("csr=x")).unwrap();
    assert_eq!(status, 403, "{body}");

    // JSON-RPC follows the same table.
    let rpc = |who: &str, method: &str, body: serde_json::Value| -> (u16, serde_json::Value) {
        let out = Command::new("curl")
            .args(["-sS", "--max-time", "10", "--cacert"])
            .arg(&ca)
            .args(["--cert", &certs.crt(who), "--key", &certs.key(who)])
            .args([
                "-H",
                "Content-Type: application/json",
                "-H",
                "Accept: application/json",
            ])
            .args(["--data", &body.to_string(), "-w", "\n%{http_code}"])
            .arg(format!("{url}{method}"))
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, status) = text.rsplit_once('\n').unwrap_or(("", "0"));
        let body = serde_json::from_str(body).unwrap_or(serde_json::Value::String(body.into()));
        (status.trim().parse().unwrap_or(0), body)
    };
    let refused = |(status, body): (u16, serde_json::Value), what: &str| {
        assert_eq!(status, 403, "{what}: {body}");
        assert_eq!(body["type"], "Forbidden", "{what}: {body}");
        assert!(
            body["title"]
                .as_str()
                .is_some_and(|t| t.contains("may not") || t.contains("does not own")),
            "{what}: {body}"
        );
    };
    let list = serde_json::json!({"computer_guid": "COMP-A"});
    let (status, listed) = rpc(
        "computer:COMP-A",
        "slapos.allDocs.v0.compute_node_instance_list",
        list.clone(),
    );
    assert_eq!(status, 200, "COMP-A lists its instances: {listed}");
    let guid = listed["result_list"]
        .as_array()
        .and_then(|l| {
            l.iter()
                .find(|i| i["compute_partition_id"] == partition.as_str())
        })
        .and_then(|i| i["instance_guid"].as_str())
        .unwrap_or_else(|| panic!("alice-tree ({partition}) is not listed: {listed}"))
        .to_string();
    refused(
        rpc(
            "computer:COMP-B",
            "slapos.allDocs.v0.compute_node_instance_list",
            list.clone(),
        ),
        "a computer lists another's instances",
    );
    refused(
        rpc(
            "person:alice",
            "slapos.allDocs.v0.compute_node_instance_list",
            list,
        ),
        "a person lists a computer not hers",
    );
    let get = serde_json::json!({"instance_guid": guid});
    let (status, doc) = rpc(
        "person:alice",
        "slapos.get.v0.software_instance",
        get.clone(),
    );
    assert_eq!(status, 200, "alice reads her instance: {doc}");
    assert_eq!(doc["title"], "alice-tree", "{doc}");
    refused(
        rpc("person:bob", "slapos.get.v0.software_instance", get.clone()),
        "bob reads alice's instance",
    );
    // Her instance's partition reads itself, publishes for itself and requests in its tree
    // (as itself, no header needed); another partition does none of it.
    let mine = format!("partition:COMP-A:{partition}");
    issue(&mine, &[]);
    let other = if partition == "slappart0" {
        "partition:COMP-A:slappart1"
    } else {
        "partition:COMP-A:slappart0"
    };
    issue(other, &[]);
    assert_eq!(
        rpc(&mine, "slapos.get.v0.software_instance", get.clone()).0,
        200
    );
    let publish = serde_json::json!({"instance_guid": guid, "connection_parameter_dict": {"url": "https://alice.example"}});
    let (status, body) = rpc(
        &mine,
        "slapos.put.v0.software_instance_connection_parameter",
        publish.clone(),
    );
    assert_eq!(status, 200, "the partition publishes for itself: {body}");
    refused(
        rpc(
            other,
            "slapos.put.v0.software_instance_connection_parameter",
            publish,
        ),
        "a partition publishes for another",
    );
    refused(
        rpc(other, "slapos.get.v0.software_instance", get.clone()),
        "a partition reads an instance of another tree",
    );
    let child = serde_json::json!({"title": "alice-child", "software_release_uri": sr, "software_type": "default"});
    let (status, made) = rpc(&mine, "slapos.post.v0.software_instance", child.clone());
    assert_eq!(status, 200, "the partition requests in its tree: {made}");
    let child_get = serde_json::json!({"instance_guid": made["instance_guid"]});
    let (status, doc) = rpc(
        "person:alice",
        "slapos.get.v0.software_instance",
        child_get.clone(),
    );
    assert_eq!(status, 200, "the child is in alice's tree: {doc}");
    assert_eq!(
        rpc(&mine, "slapos.get.v0.software_instance", child_get).0,
        200,
        "a partition reads its tree"
    );
    // bob cannot request as alice's partition through the header.
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "10", "--cacert"])
        .arg(&ca)
        .args([
            "--cert",
            &certs.crt("person:bob"),
            "--key",
            &certs.key("person:bob"),
        ])
        .args([
            "-H",
            "Content-Type: application/json",
            "-H",
            "Accept: application/json",
        ])
        .args(["-H", &header("COMP-A", &partition)])
        .args(["--data", &child.to_string(), "-w", "\n%{http_code}"])
        .arg(format!("{url}slapos.post.v0.software_instance"))
        .output()
        .unwrap();
    let answer = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        answer.ends_with("\n403"),
        "bob as alice's partition: {answer}"
    );
    // Node calls are the computer's own.
    let bang = serde_json::json!({"computer_guid": "COMP-A", "message": "check"});
    refused(
        rpc(
            "computer:COMP-B",
            "slapos.put.v0.compute_node_bang",
            bang.clone(),
        ),
        "COMP-B bangs COMP-A",
    );
    refused(
        rpc(
            "person:alice",
            "slapos.put.v0.compute_node_bang",
            bang.clone(),
        ),
        "a person bangs a computer",
    );
    assert_eq!(
        rpc("computer:COMP-A", "slapos.put.v0.compute_node_bang", bang).0,
        200
    );
    // The ledger is for persons, each their own.
    let period = serde_json::json!({"from": "2026-01-01", "to": "2027-01-01"});
    let (status, invoice) = rpc("person:alice", "slapos.get.v0.invoice", period.clone());
    assert_eq!(status, 200, "alice reads her invoice: {invoice}");
    assert_eq!(invoice["customer"], "alice", "{invoice}");
    refused(
        rpc(
            "person:alice",
            "slapos.get.v0.invoice",
            serde_json::json!({"from": "2026-01-01", "to": "2027-01-01", "customer": "bob"}),
        ),
        "alice reads bob's invoice",
    );
    refused(
        rpc("computer:COMP-A", "slapos.get.v0.invoice", period),
        "a computer reads the ledger",
    );
    // A person's titles are their own: bob asking to stop "alice-tree" gets a tree of his
    // own (elsewhere), and alice's keeps running where it was.
    let (status, his) = rpc(
        "person:bob",
        "slapos.post.v0.software_instance",
        serde_json::json!({"title": "alice-tree", "software_release_uri": sr,
            "software_type": "default", "state": "stopped",
            "sla_parameters": {"computer_guid": "COMP-B"}}),
    );
    assert_eq!(status, 200, "{his}");
    assert!(his["instance_guid"].is_string(), "{his}");
    assert_ne!(
        his["instance_guid"],
        guid.as_str(),
        "bob reached alice's instance: {his}"
    );
    let (status, hers) = rpc(
        "person:alice",
        "slapos.get.v0.software_instance",
        get.clone(),
    );
    assert_eq!(status, 200, "{hers}");
    assert_eq!(
        hers["state"], "started",
        "bob's request changed alice's tree: {hers}"
    );
    assert_eq!(hers["compute_partition_id"], partition.as_str(), "{hers}");

    // Partition certificates made whole by the masters (key included) leave them only
    // for a computer marked as running SlapOS's Python agent, which cannot make its
    // partitions' keys; ours sends a CSR instead (below, COMP-C).
    let (status, body) = comp_a(
        &format!(
            "getComputerPartitionCertificate?computer_id=COMP-A&computer_partition_id={partition}"
        ),
        None,
    )
    .unwrap();
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("make their own keys"), "{body}");
    slapos_e2e::operator(
        &[
            "computer",
            "policy",
            "--id",
            "COMP-A",
            "--legacy-node-agent",
            "true",
        ],
        &apis,
        &[],
    );
    // Then the node fetches one for its own partition (made once and kept), never for
    // another computer's; a free partition has none.
    let (status, body) = comp_a(
        &format!(
            "getComputerPartitionCertificate?computer_id=COMP-A&computer_partition_id={partition}"
        ),
        None,
    )
    .unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(
        body.contains("BEGIN CERTIFICATE") && body.contains("PRIVATE KEY"),
        "{body}"
    );
    let again = comp_a(
        &format!(
            "getComputerPartitionCertificate?computer_id=COMP-A&computer_partition_id={partition}"
        ),
        None,
    )
    .unwrap();
    assert_eq!(again.1, body, "a second fetch made another certificate");
    let (status, _) = with("computer:COMP-B")(
        &format!(
            "getComputerPartitionCertificate?computer_id=COMP-A&computer_partition_id={partition}"
        ),
        None,
    )
    .unwrap();
    assert_eq!(status, 403);
    let taken = [
        partition.clone(),
        made["compute_partition_id"]
            .as_str()
            .unwrap_or("")
            .to_string(),
    ];
    let free = ["slappart0", "slappart1", "slappart2"]
        .into_iter()
        .find(|p| !taken.iter().any(|t| t == p))
        .expect("COMP-A has a free partition");
    let (status, body) = comp_a(
        &format!("getComputerPartitionCertificate?computer_id=COMP-A&computer_partition_id={free}"),
        None,
    )
    .unwrap();
    assert_eq!(status, 404, "{body}");

    // Our node agent on a formatted node (a user per partition) over this gateway, as
    // its computer: the partition's certificate lands 0400, owned by the partition's
    // user, and authenticates the partition.
    issue("computer:COMP-C", &[]);
    let node_root = root.join("node-c");
    let node = slapos_e2e::agent::AgentNode::new(
        &node_root,
        "COMP-C",
        std::slice::from_ref(&url),
        &slapos_e2e::agent::prefix("m"),
        2,
    );
    let repo = node_root.join("certificates");
    let cfg = std::fs::read_to_string(&node.cfg).unwrap().replacen(
        "[slapos]\n",
        &format!(
            "[slapos]\nkey_file = {}\ncert_file = {}\nmaster_ca_file = {}\ncertificate_repository_path = {}\n",
            certs.key("computer:COMP-C"),
            certs.crt("computer:COMP-C"),
            ca.display(),
            repo.display()
        ),
        1,
    );
    std::fs::write(&node.cfg, cfg).unwrap();
    node.ok(&["format"]);
    // The chain's first step (security review, finding 1): a person requests, through
    // the real client, a release nobody supplied to COMP-C (a local path, a file the
    // node holds, a partition-writable file): refused with the reason, and COMP-C is
    // asked to install none of them.
    for evil in [
        "/x.toml".to_string(),
        "file:///etc/opt/slapos/computer.key.toml".to_string(),
        node_root.join("slappart0/x.toml").display().to_string(),
    ] {
        let (ok, answer) = python(
            &url,
            &certs,
            "person:bob",
            &["request", &evil, "evil", "COMP-C"],
        );
        assert!(!ok, "an unsupplied release was allocated: {answer}");
        // The client turns our 404 (the reason is in its body) into NotFoundError, as
        // for slapproxy when nothing fits.
        assert!(answer.contains("NotFoundError"), "{answer}");
    }
    let (status, info) = curl(
        &url,
        &ca,
        Some((&certs.crt("computer:COMP-C"), &certs.key("computer:COMP-C"))),
        "getFullComputerInformation?computer_id=COMP-C",
        None,
    )
    .unwrap();
    assert_eq!(status, 200, "{info}");
    assert!(
        !info.contains("x.toml") && !info.contains("computer.key"),
        "COMP-C was asked to install an unsupplied release: {info}"
    );
    let release = slapos_e2e::agent::beat_release(&root.join("beat"));
    assert_eq!(
        python(&url, &certs, "person:root", &["supply", &release, "COMP-C"]),
        (true, "OK".into())
    );
    let (ok, pid) = python(
        &url,
        &certs,
        "person:alice",
        &["request", &release, "alice-beat", "COMP-C"],
    );
    assert!(ok, "{pid}");
    node.ok(&["software"]);
    let out = node.ok(&["instance"]);
    assert!(out.contains("1 processed"), "{out}");
    let owner = slapos_e2e::agent::uid_of(&format!(
        "{}u{}",
        node.users,
        pid.trim_start_matches("slappart")
    ));
    for ext in ["crt", "key"] {
        let f = repo.join(format!("{pid}.{ext}"));
        let meta = std::fs::metadata(&f).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        use std::os::unix::fs::MetadataExt;
        assert_eq!(meta.mode() & 0o777, 0o400, "{} mode", f.display());
        assert_eq!(meta.uid(), owner, "{} owner", f.display());
    }
    let pcrt = repo.join(format!("{pid}.crt")).display().to_string();
    let pkey = repo.join(format!("{pid}.key")).display().to_string();
    let me = curl(
        &url,
        &ca,
        Some((&pcrt, &pkey)),
        &format!("registerComputerPartition?computer_reference=COMP-C&computer_partition_reference={pid}"),
        None,
    )
    .unwrap();
    assert_eq!(
        me.0, 200,
        "the partition's own certificate was refused: {}",
        me.1
    );
    drop(node);

    // Registration with a one-time token: alice makes one for COMP-NEW, the node registers
    // with it (its key made on the node) and then works as COMP-NEW, alice's computer.
    let token_create = |who: &str, computer: &str| {
        slapos(&[
            "token",
            "create",
            "--gateway",
            &url,
            "--cert",
            &certs.crt(who),
            "--key",
            &certs.key(who),
            "--ca",
            ca.to_str().unwrap(),
            "--computer",
            computer,
        ])
    };
    let made = token_create("person:alice", "COMP-NEW");
    assert!(made.status.success(), "{}", text(&made));
    let token = String::from_utf8_lossy(&made.stdout).trim().to_owned();
    assert_eq!(token.len(), 64, "{token}");
    let refused = token_create("person:bob", "COMP-A");
    assert!(
        !refused.status.success(),
        "bob made a token for a computer that is not his"
    );
    let refused = token_create("computer:COMP-A", "COMP-X");
    assert!(!refused.status.success(), "a computer made a token");
    let new_root = root.join("node-new");
    let node_new = slapos_e2e::agent::AgentNode::new(
        &new_root,
        "COMP-NEW",
        std::slice::from_ref(&url),
        &slapos_e2e::agent::prefix("n"),
        1,
    );
    let identity_dir = new_root.join("identity");
    let cfg = std::fs::read_to_string(&node_new.cfg).unwrap().replacen(
        "[slapos]\n",
        &format!(
            "[slapos]\nkey_file = {0}/computer.key\ncert_file = {0}/computer.crt\nmaster_ca_file = {0}/ca.pem\n",
            identity_dir.display()
        ),
        1,
    );
    std::fs::write(&node_new.cfg, cfg).unwrap();
    let cfg_path = node_new.cfg.to_str().unwrap().to_owned();
    // Without the group's CA the token is not sent anywhere (and stays valid).
    let blind = slapos(&["node", "register", "--token", &token, "--cfg", &cfg_path]);
    assert!(!blind.status.success());
    assert!(
        String::from_utf8_lossy(&blind.stderr).contains("needs the group's CA"),
        "{}",
        text(&blind)
    );
    let out = slapos(&[
        "node",
        "register",
        "--token",
        &token,
        "--cfg",
        &cfg_path,
        "--ca",
        ca.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out));
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(identity_dir.join("computer.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let subject = Command::new("openssl")
        .args(["x509", "-noout", "-subject", "-in"])
        .arg(identity_dir.join("computer.crt"))
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&subject.stdout).contains("CN = computer:COMP-NEW"));
    node_new.ok(&["format"]);
    // Used once: a second registration with the same token is refused.
    let again = slapos(&["node", "register", "--token", &token, "--cfg", &cfg_path]);
    assert!(!again.status.success());
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("already used"),
        "{}",
        text(&again)
    );
    let bad = slapos(&[
        "node",
        "register",
        "--token",
        &"0".repeat(64),
        "--cfg",
        &cfg_path,
    ]);
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("unknown"),
        "{}",
        text(&bad)
    );
    // Renewal: a new key and certificate for the same computer, used at once.
    let before = std::fs::read_to_string(identity_dir.join("computer.crt")).unwrap();
    let out = slapos(&["node", "renew", "--force", "--cfg", &cfg_path]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("renewed"),
        "{}",
        text(&out)
    );
    let after = std::fs::read_to_string(identity_dir.join("computer.crt")).unwrap();
    assert_ne!(before, after, "the certificate did not change");
    let out = slapos(&["node", "renew", "--cfg", &cfg_path]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("not renewed"),
        "{}",
        text(&out)
    );
    node_new.ok(&["format"]);
    // COMP-NEW is alice's: she supplies it, bob cannot.
    let rel = "https://example.com/software/other/software.cfg";
    assert_eq!(
        python(&url, &certs, "person:alice", &["supply", rel, "COMP-NEW"]),
        (true, "OK".into())
    );
    assert!(!python(&url, &certs, "person:bob", &["supply", rel, "COMP-NEW"]).0);
    drop(node_new);

    // A person added by an admin gets a certificate and a client configuration the real
    // `slapos request` uses as is.
    let carol = root.join("carol");
    let out = slapos(&[
        "user",
        "add",
        "--via",
        &via,
        "--person",
        "carol",
        "--gateway",
        &url,
        "--out",
        carol.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let venv = slapos_e2e::compat::venv();
    let requested = Command::new(venv.join("bin/slapos"))
        .args([
            "request",
            "carol-instance",
            sr,
            "--node",
            "computer_guid=COMP-A",
            "--cfg",
        ])
        .arg(carol.join("slapos-client.cfg"))
        .output()
        .unwrap();
    assert!(
        requested.status.success(),
        "slapos request as carol: {}",
        text(&requested)
    );
    let (_, full) = comp_a("getFullComputerInformation?computer_id=COMP-A", None).unwrap();
    assert!(
        full.contains("carol-instance"),
        "carol's instance is not on COMP-A"
    );

    // Expired: a certificate of the group that ended is refused at the handshake.
    let short = root.join("short");
    let out = slapos(&[
        "cluster",
        "ca",
        "issue",
        "--via",
        &via,
        "--identity",
        "computer:COMP-A",
        "--seconds",
        "6",
        "--out",
        short.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let (sc, sk) = (
        short.join("computer-COMP-A.crt").display().to_string(),
        short.join("computer-COMP-A.key").display().to_string(),
    );
    assert_eq!(
        curl(
            &url,
            &ca,
            Some((&sc, &sk)),
            "getFullComputerInformation?computer_id=COMP-A",
            None
        )
        .map(|r| r.0),
        Some(200),
        "a fresh short-lived certificate works"
    );
    std::thread::sleep(Duration::from_secs(7));
    assert!(
        curl(
            &url,
            &ca,
            Some((&sc, &sk)),
            "getFullComputerInformation?computer_id=COMP-A",
            None
        )
        .is_none(),
        "an expired certificate was served"
    );

    // Revoked: the next handshake fails.
    let out = slapos(&[
        "cluster",
        "ca",
        "revoke",
        "--via",
        &via,
        "--identity",
        "computer:COMP-B",
    ]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("revoked 1"),
        "{}",
        text(&out)
    );
    let comp_b = with("computer:COMP-B");
    let deadline = Instant::now() + Duration::from_secs(10);
    while comp_b("getFullComputerInformation?computer_id=COMP-B", None).is_some() {
        assert!(
            Instant::now() < deadline,
            "a revoked certificate is still served"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // A removed person, and a retired computer, lose their certificates at once.
    let out = slapos(&["user", "remove", "--via", &via, "--person", "bob"]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("revoked 1"),
        "{}",
        text(&out)
    );
    let out = slapos(&[
        "cluster",
        "remove-computer",
        "--via",
        &via,
        "--computer",
        "COMP-NEW",
    ]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("revoked"),
        "{}",
        text(&out)
    );
    let new_cert = (
        identity_dir.join("computer.crt").display().to_string(),
        identity_dir.join("computer.key").display().to_string(),
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while curl(&url, &ca, Some((&bob.0, &bob.1)), "getHateoasUrl", None).is_some()
        || curl(
            &url,
            &ca,
            Some((&new_cert.0, &new_cert.1)),
            "getHateoasUrl",
            None,
        )
        .is_some()
    {
        assert!(
            Instant::now() < deadline,
            "a removed person or computer is still served"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // A computer that hosts an instance is not retired.
    let out = slapos(&[
        "cluster",
        "remove-computer",
        "--via",
        &via,
        "--computer",
        "COMP-A",
    ]);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("host instances"),
        "{}",
        text(&out)
    );
    // Others are unaffected.
    assert_eq!(
        comp_a("getFullComputerInformation?computer_id=COMP-A", None)
            .unwrap()
            .0,
        200
    );

    // A server enrolls with a one-time token the operator made: through the gateway,
    // without a certificate, it gets exactly the identity and names the token grants.
    let token = |identity: &str| {
        let out = slapos(&[
            "cluster",
            "ca",
            "token",
            "--via",
            &via,
            "--identity",
            identity,
            "--ip",
            "127.0.0.1",
            "--dns",
            "gw-new.example",
        ]);
        assert!(out.status.success(), "{}", text(&out));
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    let enrolled = root.join("enrolled");
    let enroll = |token: &str, identity: &str| {
        slapos(&[
            "master",
            "enroll",
            "--gateway",
            &url,
            "--token",
            token,
            "--identity",
            identity,
            "--ca",
            ca.to_str().unwrap(),
            "--out",
            enrolled.to_str().unwrap(),
        ])
    };
    let t = token("gateway:gw-new");
    let out = enroll(&t, "gateway:gw-new");
    assert!(out.status.success(), "{}", text(&out));
    let crt = enrolled.join("gateway-gw-new.crt");
    let shown = Command::new("openssl")
        .args([
            "x509",
            "-noout",
            "-subject",
            "-ext",
            "subjectAltName",
            "-in",
        ])
        .arg(&crt)
        .output()
        .unwrap();
    let shown = String::from_utf8_lossy(&shown.stdout).into_owned();
    assert!(
        shown.contains("gateway:gw-new")
            && shown.contains("IP Address:127.0.0.1")
            && shown.contains("DNS:gw-new.example"),
        "{shown}"
    );
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(enrolled.join("gateway-gw-new.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "the enrolled key is private");
    }
    // Once only; and a token for one identity never yields another.
    let again = enroll(&t, "gateway:gw-new");
    assert!(!again.status.success(), "a token enrolled twice");
    assert!(text(&again).contains("already used"), "{}", text(&again));
    let t2 = token("replica:9");
    let wrong = enroll(&t2, "gateway:gw-other");
    assert!(!wrong.status.success(), "{}", text(&wrong));
    assert!(
        text(&wrong).contains("granted replica:9"),
        "{}",
        text(&wrong)
    );
    assert!(!enrolled.join("gateway-gw-other.crt").exists());
    // A computer's registration token is not a server's, and the reverse.
    let t3 = token("gateway:gw-third");
    let cfg3 = root.join("node3.cfg");
    std::fs::write(
        &cfg3,
        format!(
            "[slapos]\ncomputer_id = COMP-X\nmaster_url = {url}\nkey_file = {0}/x.key\n\
             cert_file = {0}/x.crt\nmaster_ca_file = {1}\n",
            root.display(),
            ca.display()
        ),
    )
    .unwrap();
    let out = slapos(&[
        "node",
        "register",
        "--token",
        &t3,
        "--cfg",
        cfg3.to_str().unwrap(),
    ]);
    assert!(
        !out.status.success(),
        "a server token registered a computer"
    );
    assert!(!root.join("x.crt").exists());
    drop(up);
}
