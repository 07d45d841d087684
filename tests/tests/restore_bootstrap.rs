//! Restore followed by bootstrap (issue 25): a master lost whole comes back from its
//! backup as a new group and is hosted in partitions again, while its nodes keep running
//! their services.
//!
//! A seed group (`slapos up --unhosted --replicas 1 --nodes 3`) runs the sample on its
//! first node. An instance is requested, a backup taken (`slapos cluster backup`), then a
//! second instance requested after it. The disaster: the only replica is killed and its
//! data directory removed. `slapos cluster restore` starts a new group from the backup
//! under the same address, so the nodes and the seed's gateway find it again; `slapos
//! cluster bootstrap` then hosts it in partitions of the three nodes, which deploy its
//! replicas through the restored master. At the end the group is three hosted voters
//! under a new group id, it knows the instance requested before the backup and not the
//! one requested after it, and the sample's service kept its process throughout.
//!
//! Runs as root (the nodes make a Unix user per partition, removed at the end).

use slapos_e2e::agent::{is_root, kill9, open_dir, running_pid, text, three_ports, wait_for, Up};
use slapos_e2e::slapos_bin;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The restored replica's process, killed when the test ends however it ends.
struct Restored(Child);

impl Drop for Restored {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_lost_master_is_restored_from_its_backup_and_hosted_again_while_nodes_keep_serving() {
    assert!(is_root(), "runs as root (a Unix user per partition)");
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
            "5",
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
    let operator = [
        ("SLAPOS_MASTER_TLS_CERT", tls.join("operator-admin.crt")),
        ("SLAPOS_MASTER_TLS_KEY", tls.join("operator-admin.key")),
        ("SLAPOS_MASTER_TLS_CA", tls.join("ca.pem")),
    ];
    let slapos = |args: &[&str]| {
        let mut c = Command::new(slapos_bin());
        c.args(args).env_remove("RUST_BACKTRACE");
        for (k, v) in &operator {
            c.env(k, v);
        }
        c
    };
    let status = |via: &str| -> serde_json::Value {
        let out = slapos(&["cluster", "status", "--json", "--via", via])
            .output()
            .unwrap();
        serde_json::from_slice(&out.stdout).unwrap_or_default()
    };
    let seed = cluster["processes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["role"] == "master" && p["id"] == 1)
        .unwrap_or_else(|| panic!("no master 1 in {cluster}"))
        .clone();
    let seed_config = seed["config"].as_str().unwrap().to_string();
    let seed_data = std::path::PathBuf::from(seed["data_dir"].as_str().unwrap());
    let gateway_pid = cluster["processes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["role"] == "gateway" && p["id"] == 1)
        .and_then(|p| p["pid"].as_u64())
        .unwrap_or_else(|| panic!("no gateway 1 in {cluster}"));
    let old_group = status(&seed_api)["group"].clone();
    assert!(old_group.is_string(), "no group id in the status");

    // The sample runs on the first node.
    let nodes = cluster["nodes"].as_array().unwrap();
    let node1 = nodes[0]["config"].as_str().unwrap().to_string();
    let mut hello = None;
    wait_for("the sample running", Duration::from_secs(120), || {
        hello = running_pid(&node1, "hello-on-watch");
        hello.is_some()
    });
    let hello = hello.unwrap();

    // One instance before the backup, one after.
    let urls = vec![seed_gateway.clone()];
    let client = slapgrid::client::SlapClient::new(
        &urls,
        Some((cert.as_ref(), key.as_ref())),
        Some(ca.as_ref()),
    )
    .expect("the admin's SLAP client");
    let software = cluster["sample"]["software_release"].as_str().unwrap();
    let request = |title: &str| {
        client
            .request_instance(software, title, &[("name", title)], &[], "stopped")
            .unwrap_or_else(|e| panic!("request {title}: {e}"));
    };
    request("before-backup");
    let backup = root.join("master.backup");
    let out = slapos(&["cluster", "backup", "--via", &seed_api, "--out"])
        .arg(&backup)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    request("after-backup");

    // The disaster: the group's only replica and its disk are gone.
    kill9(seed["pid"].as_u64().unwrap() as u32);
    std::fs::remove_dir_all(&seed_data).unwrap();
    let out = slapos(&["instance", "list", "--json", "--cfg"])
        .arg(root.join("admin/slapos-client.cfg"))
        .env_remove("SLAPOS_CLIENT_CONFIGURATION")
        .output()
        .unwrap();
    assert!(!out.status.success(), "the lost master answered");

    // Restored under the same address: a new group.
    let started = Instant::now();
    let out = slapos(&["cluster", "restore"])
        .arg(&backup)
        .arg("--config")
        .arg(&seed_config)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let restore_secs = started.elapsed().as_secs_f64();
    let log = std::fs::File::create(root.join("restored-replica.log")).unwrap();
    let restored = Restored(
        Command::new(slapos_bin())
            .args(["master", "run", "--config", &seed_config])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap(),
    );
    let mut new_group = serde_json::Value::Null;
    wait_for(
        "the restored replica leading",
        Duration::from_secs(60),
        || {
            let s = status(&seed_api);
            new_group = s["group"].clone();
            s["leader"] == 1
        },
    );
    let serving_secs = started.elapsed().as_secs_f64();
    assert!(new_group.is_string(), "no group id: {new_group}");
    assert_ne!(new_group, old_group, "the restored group kept the old id");

    // Hosted in partitions again: the nodes, which kept running, deploy its replicas.
    let release_dir = root.join("release");
    let client_cfg = root.join("admin/slapos-client.cfg");
    let computers = (1..=3)
        .map(|n| format!("COMP-{n}:{}", three_ports()))
        .collect::<Vec<_>>()
        .join(",");
    let out = slapos(&["cluster", "bootstrap", "--via", &seed_api, "--gateway"])
        .arg(&seed_gateway)
        .args(["--cert", &cert, "--key", &key, "--ca", &ca])
        .arg("--release-dir")
        .arg(&release_dir)
        .arg("--client-config")
        .arg(&client_cfg)
        .args(["--timeout-secs", "240", "--computer", &computers])
        .arg("--seed-pid")
        .arg(format!("{},{}", restored.0.id(), gateway_pid))
        .output()
        .unwrap();
    let said = text(&out);
    assert!(out.status.success(), "{said}");
    assert!(said.contains("the seed is stopped"), "{said}");
    let hosted_secs = started.elapsed().as_secs_f64();

    let via = said
        .lines()
        .find_map(|l| l.split("slapos cluster status --via ").nth(1))
        .unwrap_or_else(|| panic!("no status line: {said}"))
        .trim()
        .to_string();
    let mut hosted = serde_json::Value::Null;
    wait_for("a hosted leader", Duration::from_secs(30), || {
        hosted = status(&via);
        hosted["leader"].is_u64()
    });
    assert_eq!(hosted["group"], new_group, "{hosted}");
    let members = hosted["members"].as_array().unwrap();
    assert_eq!(members.len(), 3, "{hosted}");
    assert!(
        members
            .iter()
            .all(|m| m["role"] == "voter" && m["hosted_by"].is_string()),
        "{hosted}"
    );

    // What the backup held is there; what came after it is not.
    let out = slapos(&["instance", "list", "--json", "--cfg"])
        .arg(&client_cfg)
        .env_remove("SLAPOS_CLIENT_CONFIGURATION")
        .output()
        .unwrap();
    let listed = text(&out);
    assert!(out.status.success(), "{listed}");
    assert!(listed.contains("\"before-backup\""), "{listed}");
    assert!(!listed.contains("\"after-backup\""), "{listed}");
    assert!(listed.contains("\"hello\""), "{listed}");

    // The sample's service never stopped.
    assert_eq!(
        running_pid(&node1, "hello-on-watch"),
        Some(hello),
        "the sample's service was restarted or stopped"
    );
    eprintln!(
        "restore: {restore_secs:.1} s; the restored replica served after {serving_secs:.1} s; \
         hosted in partitions after {hosted_secs:.1} s"
    );
    drop(restored);
    drop(up);
}
