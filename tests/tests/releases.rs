//! Releases served by a gateway over HTTPS (`[releases]`, `slapos release publish`): an
//! admin publishes a release directory as it is in the repository (checksums filled in by
//! the command, no manifest edited by hand); anyone fetches it, a node's software user
//! included, verified against the group's CA, the address's digest and the checksums;
//! a person who is not an admin cannot publish, a blob is kept only under its own digest,
//! and a gateway of another authority is refused by the node.

use slapos_e2e::agent::{open_dir, slapos, text, TlsGateway, Up};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(path)
}

/// curl, verifying the gateway with `ca`, presenting `cert` when given: (status, body).
fn curl(url: &str, ca: &Path, cert: Option<(&str, &str)>, extra: &[&str]) -> (u16, Vec<u8>) {
    let mut c = Command::new("curl");
    c.args(["-sS", "--path-as-is", "--max-time", "20", "--cacert"])
        .arg(ca);
    if let Some((cert, key)) = cert {
        c.args(["--cert", cert, "--key", key]);
    }
    let out = c
        .args(extra)
        .args(["-o", "-", "-w", "\n%{http_code}"])
        .arg(url)
        .output()
        .unwrap();
    assert!(out.status.success(), "curl {url}: {}", text(&out));
    let split = out.stdout.iter().rposition(|b| *b == b'\n').unwrap();
    let status = String::from_utf8_lossy(&out.stdout[split + 1..])
        .trim()
        .parse()
        .unwrap();
    (status, out.stdout[..split].to_vec())
}

fn cfg_value(cfg: &Path, key: &str) -> String {
    let text = std::fs::read_to_string(cfg).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{key} = ")))
        .unwrap_or_else(|| panic!("no {key} in {text}"))
        .to_owned()
}

fn publish(cfg: &Path, dir: &Path) -> Output {
    slapos(&[
        "release",
        "publish",
        dir.to_str().unwrap(),
        "--json",
        "--cfg",
        cfg.to_str().unwrap(),
    ])
}

fn sha256_hex(bytes: &[u8]) -> String {
    slapgrid::digest::sha256_hex(bytes)
}

#[test]
fn an_admin_publishes_a_release_that_nodes_fetch_over_https_verified() {
    let dir = tempfile::tempdir().unwrap();
    let root = open_dir(&dir);
    let up = Up::start_replicas(&root, 1);
    let via = up.api_addrs().join(",");
    let store = root.join("releases");
    let gw = TlsGateway::start(
        &root,
        &up,
        "gw-rel",
        &format!(
            "revocation_refresh_ms = 200\n\n[releases]\ndir = \"{}\"\n",
            store.display()
        ),
    );
    let (url, ca) = (gw.url.clone(), gw.ca.clone());
    let add = |person: &str| gw.add_user(person);
    let admin = add("ops");
    let alice = add("alice");
    let out = slapos(&["user", "admin", "--via", &via, "--person", "ops"]);
    assert!(out.status.success(), "{}", text(&out));

    // The sample release as the repository has it: its checksum is a placeholder.
    let hello = repo("deploy/software/hello");
    assert!(std::fs::read_to_string(hello.join("software.toml"))
        .unwrap()
        .contains("@HELLO_SHA256@"));

    // Alice is no admin: refused, saying who may publish; nothing is stored.
    let refused = publish(&alice, &hello);
    assert!(!refused.status.success());
    assert!(
        text(&refused).contains("only an admin of the group publishes releases"),
        "{}",
        text(&refused)
    );

    // The admin (once the gateway read the grant) publishes it.
    let deadline = Instant::now() + Duration::from_secs(15);
    let published = loop {
        let o = publish(&admin, &hello);
        if o.status.success() {
            break o;
        }
        assert!(Instant::now() < deadline, "publish: {}", text(&o));
        std::thread::sleep(Duration::from_millis(300));
    };
    let answer: serde_json::Value = serde_json::from_slice(&published.stdout).unwrap();
    let release = answer[0]["url"].as_str().unwrap().to_owned();
    let digest = answer[0]["sha256"].as_str().unwrap().to_owned();
    assert_eq!(release, format!("{url}software/{digest}/software.toml"));
    assert_eq!(
        answer[0]["uploaded"], 4,
        "the script, the parameters' description and schema, and the manifest: {answer}"
    );
    // Again: the same address, nothing sent.
    let again: serde_json::Value = serde_json::from_slice(&publish(&admin, &hello).stdout).unwrap();
    assert_eq!(again[0]["url"], release.as_str());
    assert_eq!(again[0]["uploaded"], 0, "{again}");

    // Anyone who trusts the group's CA reads it, no certificate needed: the manifest
    // hashes to its address and carries the script's real checksum.
    let (status, manifest) = curl(&release, &ca, None, &[]);
    assert_eq!(status, 200);
    assert_eq!(sha256_hex(&manifest), digest);
    let script = std::fs::read(hello.join("hello.sh")).unwrap();
    let manifest = String::from_utf8(manifest).unwrap();
    assert!(manifest.contains(&sha256_hex(&script)), "{manifest}");
    assert!(!manifest.contains("@HELLO_SHA256@"));
    let (status, body) = curl(&format!("{url}software/{digest}/hello.sh"), &ca, None, &[]);
    assert_eq!((status, body), (200, script.clone()));

    // Only what the manifest names, never a path of the gateway's disk.
    for path in [
        format!("software/{digest}/nothing"),
        format!("software/{digest}/../../blobs/{digest}"),
        format!("software/{digest}/%2e%2e/%2e%2e/gw.toml"),
        format!("software/{}/software.toml", "0".repeat(64)),
    ] {
        let (status, _) = curl(&format!("{url}{path}"), &ca, None, &[]);
        assert!(status == 404 || status == 400, "{path}: {status}");
    }
    let (status, _) = curl(&format!("{url}software/../gw.toml/x"), &ca, None, &[]);
    assert_ne!(status, 200);

    // A blob is kept only under its own digest, even from an admin.
    let cert = (
        cfg_value(&admin, "cert_file"),
        cfg_value(&admin, "key_file"),
    );
    let lie = sha256_hex(b"what the name promises");
    let (status, body) = curl(
        &format!("{url}software/blob/{lie}"),
        &ca,
        Some((&cert.0, &cert.1)),
        &["-X", "PUT", "--data-binary", "something else"],
    );
    assert_eq!(status, 422, "{}", String::from_utf8_lossy(&body));
    let (status, _) = curl(
        &format!("{url}software/blob/{lie}"),
        &ca,
        Some((&cert.0, &cert.1)),
        &["-I"],
    );
    assert_eq!(status, 404);
    assert!(!store.join("blobs").join(&lie).exists());
    assert_eq!(std::fs::read_dir(store.join("tmp")).unwrap().count(), 0);

    // A node installs it over HTTPS (what slapgrid does as the software user), trusting
    // the group's CA: the artifact lands verified.
    let ca_pem = std::fs::read(&ca).unwrap();
    let sr = root.join("sr");
    slapgrid::software::install_native_here(&release, &sr, std::slice::from_ref(&ca_pem), false)
        .unwrap();
    assert_eq!(std::fs::read(sr.join("bin/hello")).unwrap(), script);
    // The address of another manifest at this gateway is not installed.
    let forged = format!("{url}software/{}/software.toml", "f".repeat(64));
    assert!(
        slapgrid::software::install_native_here(&forged, &root.join("sr2"), &[ca_pem], false)
            .is_err()
    );
    // A node of another group (another CA) refuses this gateway.
    let other_ca = rcgen::generate_simple_self_signed(vec!["elsewhere".to_string()])
        .unwrap()
        .cert
        .pem();
    let e = slapgrid::software::install_native_here(
        &release,
        &root.join("sr3"),
        &[other_ca.into_bytes()],
        false,
    )
    .unwrap_err();
    assert!(!root.join("sr3").exists(), "{e}");
}
