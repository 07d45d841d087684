//! The group's certificate authority through the command line, on a real three-replica
//! group (`slapos up`): created at `master init`, exported, issuing from a follower
//! (forwarded to the leader, recorded through Raft before the certificate is handed
//! out), checked by OpenSSL, and revoked by identity. Identity and mTLS enforcement on
//! the gateways build on this (issue "Identity and security").

use slapos_e2e::agent::{open_dir, slapos, text, Up};
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Output};

fn openssl(args: &[&str]) -> Output {
    Command::new("openssl")
        .args(args)
        .output()
        .expect("openssl")
}

#[test]
fn the_group_issues_exports_and_revokes_certificates() {
    let dir = tempfile::tempdir().unwrap();
    let root = open_dir(&dir);
    let up = Up::start_replicas(&root, 3);
    let apis = up.api_addrs();
    let via = apis.join(",");

    // The CA certificate, the same from every replica.
    let exported: Vec<String> = apis
        .iter()
        .map(|a| {
            let out = slapos(&["cluster", "ca", "export", "--via", a]);
            assert!(out.status.success(), "{}", text(&out));
            String::from_utf8(out.stdout).unwrap()
        })
        .collect();
    assert!(
        exported[0].starts_with("-----BEGIN CERTIFICATE-----"),
        "{}",
        exported[0]
    );
    assert!(
        exported.iter().all(|e| *e == exported[0]),
        "replicas disagree on the CA"
    );
    assert!(
        !exported[0].contains("PRIVATE KEY"),
        "the CA key left the masters"
    );
    let ca = root.join("ca.pem");
    std::fs::write(&ca, &exported[0]).unwrap();

    // Issued through each replica in turn (followers forward to the leader).
    let certs = root.join("certs");
    for (i, api) in apis.iter().enumerate() {
        let identity = format!("computer:COMP-{i}");
        let out = slapos(&[
            "cluster",
            "ca",
            "issue",
            "--via",
            api,
            "--identity",
            &identity,
            "--out",
            certs.to_str().unwrap(),
        ]);
        assert!(out.status.success(), "issue through {api}: {}", text(&out));
        let crt = certs.join(format!("computer-COMP-{i}.crt"));
        let key = certs.join(format!("computer-COMP-{i}.key"));
        assert_eq!(
            std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
            0o600,
            "the private key is readable by others"
        );
        let verify = openssl(&[
            "verify",
            "-CAfile",
            ca.to_str().unwrap(),
            crt.to_str().unwrap(),
        ]);
        assert!(verify.status.success(), "{}", text(&verify));
        let subject = openssl(&[
            "x509",
            "-in",
            crt.to_str().unwrap(),
            "-noout",
            "-subject",
            "-ext",
            "extendedKeyUsage",
        ]);
        let subject = String::from_utf8_lossy(&subject.stdout).into_owned();
        assert!(subject.contains(&format!("CN = {identity}")), "{subject}");
        assert!(
            subject.contains("TLS Web Client Authentication"),
            "{subject}"
        );
        // The key and the certificate belong together.
        let from_key = openssl(&["pkey", "-in", key.to_str().unwrap(), "-pubout"]);
        let from_crt = openssl(&["x509", "-in", crt.to_str().unwrap(), "-noout", "-pubkey"]);
        assert_eq!(from_key.stdout, from_crt.stdout);
    }

    // A replica's server certificate names its addresses.
    let out = slapos(&[
        "cluster",
        "ca",
        "issue",
        "--via",
        &via,
        "--identity",
        "replica:1",
        "--ip",
        "127.0.0.1",
        "--dns",
        "replica-1.local",
        "--out",
        certs.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let sans = openssl(&[
        "x509",
        "-in",
        certs.join("replica-1.crt").to_str().unwrap(),
        "-noout",
        "-ext",
        "subjectAltName,extendedKeyUsage",
    ]);
    let sans = String::from_utf8_lossy(&sans.stdout).into_owned();
    assert!(
        sans.contains("IP Address:127.0.0.1") && sans.contains("DNS:replica-1.local"),
        "{sans}"
    );
    assert!(sans.contains("TLS Web Server Authentication"), "{sans}");

    // Revocation: every certificate of the identity, once.
    let revoke = |args: &[&str]| {
        let mut all = vec!["cluster", "ca", "revoke", "--via", &via];
        all.extend_from_slice(args);
        slapos(&all)
    };
    let out = revoke(&["--identity", "computer:COMP-0"]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("revoked 1 certificate"),
        "{}",
        text(&out)
    );
    let out = revoke(&["--identity", "computer:COMP-0"]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("revoked 0 certificate"),
        "{}",
        text(&out)
    );

    // Bad requests are refused with the reason, and nothing is written.
    let out = slapos(&[
        "cluster",
        "ca",
        "issue",
        "--via",
        &via,
        "--identity",
        "computer:../etc",
        "--out",
        certs.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("invalid identity"),
        "{}",
        text(&out)
    );
    let out = slapos(&[
        "cluster",
        "ca",
        "issue",
        "--via",
        &via,
        "--identity",
        "computer:C",
        "--dns",
        "x.example",
        "--out",
        certs.to_str().unwrap(),
    ]);
    assert!(
        !out.status.success(),
        "a computer got a server name: {}",
        text(&out)
    );
    assert!(!certs.join("computer-C.crt").exists());
    drop(up);
}
