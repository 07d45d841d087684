//! The Rust client of a person (`slapos supply`, `slapos request`, `slapos instance
//! list|show`) against a gateway that requires client certificates, over real HTTPS:
//! the client configuration `slapos user add` writes, used as is; the gateway verified
//! against the group's CA (another CA's configuration is refused, saying so); a person
//! sees only their own trees; the errors name what is wrong.

use slapos_e2e::agent::{open_dir, slapos, text, TlsGateway, Up};
use slapos_e2e::slapos_bin;
use slapos_harness::free_port;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant, SystemTime};

/// `slapos <args> --cfg <cfg>`.
fn client(cfg: &Path, args: &[&str]) -> Output {
    let mut all: Vec<&str> = args.to_vec();
    let cfg = cfg.display().to_string();
    all.extend(["--cfg", &cfg]);
    slapos(&all)
}

fn stdout_json(out: &Output) -> serde_json::Value {
    assert!(out.status.success(), "{}", text(out));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(out)))
}

/// The value of `key = ...` in a client configuration.
fn cfg_value(cfg: &Path, key: &str) -> String {
    let text = std::fs::read_to_string(cfg).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{key} = ")))
        .unwrap_or_else(|| panic!("no {key} in {text}"))
        .to_owned()
}

/// A JSON-RPC call with curl as the certificate (cert, key): (status, body).
fn curl_json(url: &str, ca: &Path, cert: (&str, &str), method: &str, body: &str) -> (u16, String) {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "10", "--cacert"])
        .arg(ca)
        .args(["--cert", cert.0, "--key", cert.1])
        .args(["-H", "Content-Type: application/json", "--data", body])
        .args(["-w", "\n%{http_code}"])
        .arg(format!("{url}{method}"))
        .output()
        .unwrap();
    assert!(out.status.success(), "curl {method}: {}", text(&out));
    let t = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, status) = t.rsplit_once('\n').unwrap();
    (status.trim().parse().unwrap(), body.to_owned())
}

#[test]
fn a_person_supplies_requests_and_reads_their_instances_through_a_verified_gateway() {
    let dir = tempfile::tempdir().unwrap();
    let root = open_dir(&dir);
    let up = Up::start_replicas(&root, 1);
    let apis = up.api_addrs();
    let via = apis.join(",");
    let gw = TlsGateway::start(&root, &up, "gw-test", "");
    let (url, ca, certs) = (gw.url.clone(), gw.ca.clone(), gw.certs.clone());
    let out = slapos(&[
        "cluster",
        "ca",
        "issue",
        "--via",
        &via,
        "--identity",
        "computer:COMP-A",
        "--out",
        certs.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "issue computer:COMP-A: {}",
        text(&out)
    );
    let file = |name: &str| certs.join(name).display().to_string();

    // Alice and Bob, each with the client configuration `slapos user add` writes.
    let add = |person: &str| gw.add_user(person);
    let alice = add("alice");
    let bob = add("bob");
    assert_eq!(
        cfg_value(&alice, "master_ca_file"),
        root.join("alice/ca.pem").display().to_string(),
        "the client configuration names the group's CA"
    );

    // COMP-A is Alice's, and its node formats it.
    let out = slapos(&[
        "computer",
        "register",
        "--gateway",
        &url,
        "--ca",
        ca.to_str().unwrap(),
        "--cert",
        &cfg_value(&alice, "cert_file"),
        "--key",
        &cfg_value(&alice, "key_file"),
        "--id",
        "COMP-A",
    ]);
    assert!(out.status.success(), "computer register: {}", text(&out));
    let comp = (file("computer-COMP-A.crt"), file("computer-COMP-A.key"));
    let venv = slapos_e2e::compat::venv();
    let formatted = Command::new(venv.join("bin/python"))
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("compat/mtls.py"))
        .args([&url, &comp.1, &comp.0, "format", "COMP-A", "2"])
        .output()
        .unwrap();
    assert!(formatted.status.success(), "format: {}", text(&formatted));

    // Supply, then request: allocated at once, not ready until its node publishes.
    let sr = "https://example.com/software/demo/software.cfg";
    let supplied = stdout_json(&client(&alice, &["supply", sr, "COMP-A", "--json"]));
    assert_eq!(supplied["result"], "Supplied", "{supplied}");
    let requested = client(
        &alice,
        &[
            "request",
            "my-demo",
            sr,
            "--node",
            "computer_guid=COMP-A",
            "--parameters",
            "greeting=hello",
            "size=2",
        ],
    );
    assert_eq!(requested.status.code(), Some(2), "{}", text(&requested));
    assert!(
        String::from_utf8_lossy(&requested.stderr).contains("Master is provisioning it"),
        "{}",
        text(&requested)
    );
    let shown = stdout_json(&client(&alice, &["instance", "show", "my-demo", "--json"]));
    assert_eq!(shown["title"], "my-demo");
    assert_eq!(shown["state"], "started");
    assert_eq!(shown["software_release_uri"], sr);
    assert_eq!(shown["computer_guid"], "COMP-A");
    assert_eq!(shown["parameters"]["greeting"], "hello");
    assert_eq!(shown["parameters"]["size"], "2");
    assert_eq!(shown["connection_parameters"], serde_json::json!({}));

    // The node publishes the instance's connection parameters (as COMP-A).
    let guid = shown["instance_guid"].as_str().unwrap().to_owned();
    let (status, body) = curl_json(
        &url,
        &ca,
        (&comp.0, &comp.1),
        "slapos.put.v0.software_instance_connection_parameter",
        &format!(
            "{{\"instance_guid\": \"{guid}\", \"connection_parameter_dict\": {{\"url\": \"https://demo.example/\"}}}}"
        ),
    );
    assert_eq!(status, 200, "{body}");
    // A computer has no trees of its own to list.
    let (status, body) = curl_json(
        &url,
        &ca,
        (&comp.0, &comp.1),
        "slapos.allDocs.v0.instance_tree_list",
        "{}",
    );
    assert_eq!(status, 403, "{body}");

    // Now the request is answered with them (a read through another replica may lag a
    // little: the gateway's bounded staleness).
    let deadline = Instant::now() + Duration::from_secs(10);
    let ready = loop {
        let again = client(
            &alice,
            &["request", "my-demo", sr, "--node", "computer_guid=COMP-A"],
        );
        if again.status.success() || Instant::now() > deadline {
            break again;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let printed = String::from_utf8_lossy(&ready.stdout);
    assert!(
        ready.status.success() && printed.contains("url = https://demo.example/"),
        "{}",
        text(&ready)
    );
    let shown = stdout_json(&client(&alice, &["instance", "show", "my-demo", "--json"]));
    assert_eq!(
        shown["connection_parameters"]["url"], "https://demo.example/",
        "{shown}"
    );
    let listed = stdout_json(&client(&alice, &["instance", "list", "--json"]));
    let titles: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["title"].as_str().unwrap())
        .collect();
    assert_eq!(titles, ["my-demo"], "{listed}");
    let text_show = client(&alice, &["instance", "show", "my-demo"]);
    assert!(text_show.status.success(), "{}", text(&text_show));
    assert!(String::from_utf8_lossy(&text_show.stdout).contains("requested state: started"));

    // Unknown names are said so; Bob sees none of Alice's trees.
    for cfg in [&alice, &bob] {
        let out = client(cfg, &["instance", "show", "no-such-tree"]);
        assert!(!out.status.success());
        assert!(
            String::from_utf8_lossy(&out.stderr)
                .contains("no instance named \"no-such-tree\": not one of your instance trees"),
            "{}",
            text(&out)
        );
    }
    let out = client(&bob, &["instance", "show", "my-demo"]);
    assert!(
        !out.status.success() && String::from_utf8_lossy(&out.stderr).contains("no instance named"),
        "{}",
        text(&out)
    );
    assert_eq!(
        stdout_json(&client(&bob, &["instance", "list", "--json"])),
        serde_json::json!([])
    );

    // A configuration naming another authority's CA: the gateway is refused, and the
    // error says why.
    let (foreign, material) =
        slapos_ca::Authority::create("other-group", SystemTime::now(), 1).unwrap();
    drop(material);
    let foreign_ca = root.join("foreign-ca.pem");
    std::fs::write(&foreign_ca, foreign.cert_pem()).unwrap();
    let with = |name: &str, text: String| -> PathBuf {
        let p = root.join(name);
        std::fs::write(&p, text).unwrap();
        p
    };
    let cfg_with = |master_url: &str, cert: &str, ca: &str| {
        format!(
            "[slapos]\nmaster_url = {master_url}\n\n[slapconsole]\ncert_file = {cert}\nkey_file = {}\n\
             master_ca_file = {ca}\n",
            cfg_value(&alice, "key_file")
        )
    };
    let alice_cert = cfg_value(&alice, "cert_file");
    let wrong = with(
        "wrong-ca.cfg",
        cfg_with(&url, &alice_cert, foreign_ca.to_str().unwrap()),
    );
    let out = client(&wrong, &["instance", "list"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success()
            && err.contains("not from the group's CA")
            && err.contains(foreign_ca.to_str().unwrap()),
        "{}",
        text(&out)
    );
    let out = client(&wrong, &["supply", sr, "COMP-A"]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not from the group's CA"),
        "{}",
        text(&out)
    );

    // A missing certificate file is named; so is a gateway nobody listens at.
    let missing = root.join("nowhere/alice.crt");
    let gone = with(
        "missing.cfg",
        cfg_with(&url, missing.to_str().unwrap(), ca.to_str().unwrap()),
    );
    let out = client(&gone, &["instance", "list"]);
    assert!(
        !out.status.success()
            && String::from_utf8_lossy(&out.stderr).contains(missing.to_str().unwrap()),
        "{}",
        text(&out)
    );
    let closed = format!("https://127.0.0.1:{}/", free_port().unwrap());
    let refused = with(
        "refused.cfg",
        cfg_with(&closed, &alice_cert, ca.to_str().unwrap()),
    );
    let out = client(&refused, &["instance", "list"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains(&closed) && err.contains("connection refused"),
        "{}",
        text(&out)
    );
    // No configuration at all: the default path is named.
    let out = Command::new(slapos_bin())
        .args(["instance", "list"])
        .env("HOME", &root)
        .env_remove("SLAPOS_CLIENT_CONFIGURATION")
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(".slapos/slapos-client.cfg"),
        "{}",
        text(&out)
    );

    // Destroying the tree through the same command.
    let out = client(&alice, &["request", "my-demo", sr, "--state", "destroyed"]);
    assert!(out.status.success(), "{}", text(&out));
    let shown = stdout_json(&client(&alice, &["instance", "show", "my-demo", "--json"]));
    assert_eq!(shown["state"], "destroyed", "{shown}");
    drop(up);
}
