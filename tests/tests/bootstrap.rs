//! `slapos cluster bootstrap`: from a seed (one replica and its gateway outside any
//! partition, `slapos up --unhosted --replicas 1`) and three registered nodes, each
//! declaring its own region, to a master that lives only in partitions of those nodes.
//!
//! What an operator sees: the command refuses, before changing anything, two computers
//! in one region, an unknown computer, and the seed replica's own certificate (refused by
//! the group once the seed leaves); interrupted halfway (killed while it hosts the second
//! replica), the same command resumes from its plan; at its end the group is the three
//! hosted replicas (one per region, voting, one of them leading), each with its gateway
//! in another partition of its node, the seed is gone, its certificates and its
//! gateway's (`gateway:r1`, as the certificate it presents says) are revoked and no
//! longer pass the masters while the hosted ones do, the admin's client configuration is
//! rewritten onto a hosted gateway and works (`slapos instance list --cfg`), the last
//! step says how to stop the seed; run again with the seed's pids, it revokes nothing
//! more and stops the seed's processes; and a write goes through a gateway in a
//! partition.
//!
//! Runs as root (the nodes make a Unix user per partition, removed at the end).

use slapos_e2e::agent::{is_root, open_dir, text, three_ports, wait_for, Up};
use slapos_e2e::slapos_bin;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

#[test]
fn bootstrap_moves_the_master_into_partitions_one_per_region_and_resumes_when_interrupted() {
    assert!(
        is_root(),
        "bootstrap runs as root (a Unix user per partition)"
    );
    let tmp = tempfile::tempdir().unwrap();
    let root = open_dir(&tmp);
    let up = Up::launch(
        &root,
        &[
            "--unhosted",
            "--replicas",
            "1",
            "--nodes",
            "3",
            "--partitions",
            "3",
        ],
        Duration::from_secs(240),
    );
    let cluster: serde_json::Value =
        serde_json::from_slice(&std::fs::read(up.dir.join("cluster.json")).unwrap()).unwrap();
    let admin = &cluster["admin"];
    let file = |k: &str| admin[k].as_str().unwrap().to_string();
    let (cert, key, ca) = (file("certificate"), file("key"), file("ca"));
    let seed_api = cluster["master_api_addrs"][0].as_str().unwrap().to_string();
    let seed_gateway = cluster["gateway_urls"][0].as_str().unwrap().to_string();
    let tls = up.dir.join("tls");
    let operator_identity = [
        ("SLAPOS_MASTER_TLS_CERT", tls.join("operator-admin.crt")),
        ("SLAPOS_MASTER_TLS_KEY", tls.join("operator-admin.key")),
        ("SLAPOS_MASTER_TLS_CA", tls.join("ca.pem")),
    ];
    let seed_identity = [
        ("SLAPOS_MASTER_TLS_CERT", tls.join("replica-1.crt")),
        ("SLAPOS_MASTER_TLS_KEY", tls.join("replica-1.key")),
        ("SLAPOS_MASTER_TLS_CA", tls.join("ca.pem")),
    ];
    let release_dir = root.join("release");
    let plan = release_dir.join("bootstrap.json");
    let client_cfg = root.join("admin/slapos-client.cfg");
    let bootstrap = |computers: &str, identity: &[(&str, std::path::PathBuf)]| {
        let mut c = Command::new(slapos_bin());
        c.args(["cluster", "bootstrap", "--via", &seed_api, "--gateway"])
            .arg(&seed_gateway)
            .args(["--cert", &cert, "--key", &key, "--ca", &ca])
            .arg("--release-dir")
            .arg(&release_dir)
            .arg("--client-config")
            .arg(&client_cfg)
            .args(["--timeout-secs", "240", "--computer", computers])
            .env_remove("RUST_BACKTRACE");
        for (k, v) in identity {
            c.env(k, v);
        }
        c
    };

    // Refused before anything changes.
    let out = bootstrap("COMP-1,COMP-1", &operator_identity)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        text(&out).contains("are both in region region-1"),
        "{}",
        text(&out)
    );
    let out = bootstrap("COMP-1,COMP-9", &operator_identity)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        text(&out).contains("computer COMP-9 is not registered"),
        "{}",
        text(&out)
    );
    let out = bootstrap("COMP-1,COMP-2,COMP-3", &seed_identity)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        text(&out).contains("replica 1 leaves at the end"),
        "{}",
        text(&out)
    );
    assert!(!plan.exists(), "a refused bootstrap kept a plan");

    // Interrupted while it hosts the second replica.
    let computers = (1..=3)
        .map(|n| format!("COMP-{n}:{}", three_ports()))
        .collect::<Vec<_>>()
        .join(",");
    let mut first = bootstrap(&computers, &operator_identity)
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(root.join("bootstrap.err")).unwrap())
        .spawn()
        .unwrap();
    let mut said = String::new();
    let mut lines = BufReader::new(first.stdout.take().unwrap()).lines();
    for line in lines.by_ref() {
        let line = line.unwrap();
        said.push_str(&line);
        said.push('\n');
        if line.contains("hosting replica 3 on COMP-2") {
            break;
        }
    }
    let _ = first.kill();
    let _ = first.wait();
    said.push_str(&std::fs::read_to_string(root.join("bootstrap.err")).unwrap_or_default());
    assert!(said.contains("node COMP-1: region region-1"), "{said}");
    assert!(said.contains("replica 2 votes"), "{said}");
    // the seed's gateway, known by the certificate it presents
    assert!(said.contains("is gateway:r1"), "{said}");
    assert!(plan.exists(), "no plan kept: {said}");

    // The same command resumes and finishes.
    let out = bootstrap(&computers, &operator_identity).output().unwrap();
    let said = text(&out);
    assert!(out.status.success(), "{said}");
    assert!(said.contains("resuming the plan"), "{said}");
    assert!(said.contains("replica 2 on COMP-1/"), "{said}");
    assert!(said.contains("votes already"), "{said}");
    assert!(said.contains("seed replica 1 leaves"), "{said}");
    let urls_line = said
        .lines()
        .find(|l| l.contains("master_url = "))
        .unwrap_or_else(|| panic!("no master_url line: {said}"));
    let urls: Vec<&str> = urls_line
        .split("master_url = ")
        .nth(1)
        .unwrap()
        .split(' ')
        .collect();
    assert_eq!(urls.len(), 3, "{urls_line}");

    // It finished the job: the seed's certificates revoked once the hosted gateways
    // serve, the admin's client configuration on a hosted gateway, and, last, how to stop
    // the seed (its processes are `slapos up`'s here, not given with --seed-pid).
    for identity in ["replica:1", "gateway:r1"] {
        assert!(
            said.contains(&format!("every certificate of {identity} is revoked")),
            "{said}"
        );
    }
    let last = said.lines().rfind(|l| l.starts_with("- ")).unwrap_or("");
    assert!(last.contains("to finish, stop the seed"), "{said}");
    assert!(last.contains(&format!("master API {seed_api}")), "{last}");
    assert!(last.contains(&seed_gateway), "{last}");
    assert!(last.contains("archived or removed"), "{last}");
    let cfg = std::fs::read_to_string(&client_cfg).unwrap();
    let master_url = cfg
        .lines()
        .find_map(|l| l.strip_prefix("master_url = "))
        .unwrap_or_else(|| panic!("no master_url: {cfg}"));
    assert!(urls.contains(&master_url), "{master_url} not in {urls:?}");
    assert!(cfg.contains("master_ca_file = "), "{cfg}");
    let out = Command::new(slapos_bin())
        .args(["instance", "list", "--json", "--cfg"])
        .arg(&client_cfg)
        .env_remove("SLAPOS_CLIENT_CONFIGURATION")
        .output()
        .unwrap();
    // the admin's trees, the hosted master's instances among them
    assert!(
        out.status.success() && text(&out).contains("master-2"),
        "{}",
        text(&out)
    );

    // Run again with the seed's pids: nothing more to revoke, and the seed is stopped.
    let pid_of = |role: &str| {
        cluster["processes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["role"] == role && p["id"] == 1)
            .and_then(|p| p["pid"].as_u64())
            .unwrap_or_else(|| panic!("no {role} 1 in {cluster}"))
    };
    let seed_pids = [pid_of("master"), pid_of("gateway")];
    let out = bootstrap(&computers, &operator_identity)
        .arg("--seed-pid")
        .arg(format!("{},{}", seed_pids[0], seed_pids[1]))
        .output()
        .unwrap();
    let again = text(&out);
    assert!(out.status.success(), "{again}");
    assert!(
        again.contains("every certificate of replica:1 is revoked (none was left valid)"),
        "{again}"
    );
    assert!(again.contains("the seed is stopped"), "{again}");
    for pid in seed_pids {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let state = stat
            .rsplit_once(')')
            .map(|(_, r)| r.trim_start())
            .unwrap_or("");
        assert!(
            stat.is_empty() || state.starts_with('Z'),
            "{pid} runs: {stat}"
        );
    }

    // The group is the three hosted replicas, one per region, one of them leading.
    let via_line = said
        .lines()
        .find(|l| l.contains("slapos cluster status --via "))
        .unwrap();
    let via = via_line.split("--via ").nth(1).unwrap().trim().to_string();
    let mut status = serde_json::Value::Null;
    wait_for("a hosted leader", Duration::from_secs(30), || {
        let mut c = Command::new(slapos_bin());
        c.args(["cluster", "status", "--json", "--via", &via]);
        for (k, v) in &operator_identity {
            c.env(k, v);
        }
        status = serde_json::from_slice(&c.output().unwrap().stdout).unwrap_or_default();
        status["leader"].is_u64()
    });
    let members = status["members"].as_array().unwrap();
    let mut placed: Vec<(u64, String, String)> = members
        .iter()
        .map(|m| {
            assert_eq!(m["role"], "voter", "{status}");
            (
                m["id"].as_u64().unwrap(),
                m["region"].as_str().unwrap().to_string(),
                m["hosted_by"]
                    .as_str()
                    .unwrap()
                    .split('/')
                    .next()
                    .unwrap()
                    .to_string(),
            )
        })
        .collect();
    placed.sort();
    assert_eq!(
        placed,
        (1..=3)
            .map(|n| (n + 1, format!("region-{n}"), format!("COMP-{n}")))
            .collect::<Vec<_>>(),
        "{status}"
    );
    let leader = status["leader"].as_u64().unwrap();
    assert!((2..=4).contains(&leader), "{status}");

    // The seed is gone, and so are its certificates: the seed replica's and its
    // gateway's (`gateway:r1`) no longer pass the masters; the operator's, a hosted
    // replica's and a hosted gateway's do.
    let plan_now: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&plan).unwrap()).unwrap();
    let two = plan_now["hosted"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["id"] == 2)
        .unwrap_or_else(|| panic!("replica 2 in the plan: {plan_now}"));
    assert_eq!(two["computer"], "COMP-1", "{plan_now}");
    let inst = up.dir.join("node-1/inst");
    let replica_tls = inst
        .join(two["partition"].as_str().unwrap())
        .join("etc/tls");
    let gateway_tls = inst
        .join(two["gateway_partition"].as_str().unwrap())
        .join("etc/tls");
    let status_as = |cert: std::path::PathBuf, key: std::path::PathBuf| {
        let out = Command::new(slapos_bin())
            .args(["cluster", "status", "--json", "--via", &via])
            .env("SLAPOS_MASTER_TLS_CERT", cert)
            .env("SLAPOS_MASTER_TLS_KEY", key)
            .env("SLAPOS_MASTER_TLS_CA", tls.join("ca.pem"))
            .env_remove("RUST_BACKTRACE")
            .output()
            .unwrap();
        (out.status.success(), text(&out))
    };
    for name in ["replica-1", "gateway-r1"] {
        let (ok, said) = status_as(
            tls.join(format!("{name}.crt")),
            tls.join(format!("{name}.key")),
        );
        assert!(!ok && said.contains("revoked"), "{name}: {said}");
    }
    for (name, dir) in [("replica-2", &replica_tls), ("gateway-r2", &gateway_tls)] {
        let (ok, said) = status_as(
            dir.join(format!("{name}.crt")),
            dir.join(format!("{name}.key")),
        );
        assert!(ok && said.contains("\"leader\""), "{name}: {said}");
    }

    // A write through a gateway in a partition.
    let out = Command::new(slapos_bin())
        .args(["computer", "register", "--gateway", urls[2], "--ca", &ca])
        .args(["--cert", &cert, "--key", &key])
        .args(["--id", "COMP-NEW", "--region", "region-9"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("computer COMP-NEW registered"),
        "{}",
        text(&out)
    );
    drop(up);
}
