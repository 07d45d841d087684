//! Self-hosting: the master as a software release (`deploy/software/slapos-master`). On a
//! group `slapos up --unhosted` runs under mTLS (two replicas as plain processes and a
//! node), the operator adds a third replica hosted in a partition with one command
//! (`slapos cluster add-replica`): the release, written for this binary, is supplied and
//! two instances requested, a `replica` and a `gateway`; slapgrid installs the `slapos`
//! binary (checksum verified) and runs each in a partition of its own, as that
//! partition's user; they enroll with one-time tokens the operator made for their own
//! partition's addresses, the replica joins over mTLS and votes, `slapos cluster status`
//! says where it is hosted, its gateway serves SLAP from the replicated state, and the
//! instances publish their addresses. Adding it again with other timers reconfigures it
//! (its node restarts it, its data stays). `slapos cluster remove-replica` destroys both
//! instances: the replica leaves the group before its partition is wiped.
//!
//! Runs as root (the node makes a Unix user per partition, removed at the end).

use slapos_e2e::agent::{is_root, Up};
use slapos_e2e::slapos_bin;
use slapos_harness::free_port;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

fn text(out: &Output) -> String {
    format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn port() -> u16 {
    free_port().expect("a free port")
}

#[test]
fn a_replica_in_a_partition_joins_the_group_over_mtls_and_leaves_when_destroyed() {
    assert!(
        is_root(),
        "self_hosting runs as root (a Unix user per partition)"
    );
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let up = Up::launch(
        &root,
        &[
            "--unhosted",
            "--replicas",
            "2",
            "--nodes",
            "1",
            "--partitions",
            "3",
        ],
        Duration::from_secs(180),
    );
    let cluster_dir = up.dir.clone();
    let json = cluster_dir.join("cluster.json");
    let cluster: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    let admin = &cluster["admin"];
    let (cert, key, ca) = (
        admin["certificate"].as_str().unwrap().to_string(),
        admin["key"].as_str().unwrap().to_string(),
        admin["ca"].as_str().unwrap().to_string(),
    );
    let env = slapos_e2e::agent::master_tls_env(&cluster);
    let apis: Vec<String> = cluster["master_api_addrs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_string())
        .collect();
    let via = apis.join(",");
    let gateway = cluster["gateway_urls"][0].as_str().unwrap().to_string();
    let computer = cluster["nodes"][0]["computer_id"]
        .as_str()
        .unwrap()
        .to_string();
    let operator = |args: &[&str]| {
        let mut c = Command::new(slapos_bin());
        c.args(args);
        for (k, v) in &env {
            c.env(k, v);
        }
        c.output().unwrap()
    };
    let members = || -> serde_json::Value {
        let out = operator(&["cluster", "status", "--json", "--via", &via]);
        serde_json::from_slice(&out.stdout).unwrap_or_default()
    };
    let voter = |status: &serde_json::Value, id: u64| {
        status["members"]
            .as_array()
            .is_some_and(|m| m.iter().any(|r| r["id"] == id && r["role"] == "voter"))
    };
    let member = |status: &serde_json::Value, id: u64| {
        status["members"]
            .as_array()
            .is_some_and(|m| m.iter().any(|r| r["id"] == id))
    };

    // One command: the release (written for this binary) supplied to the node, the
    // instance requested, the operator's tokens made for the partition's addresses, and
    // the group watched until replica 3 votes.
    let release_dir = root.join("release");
    let (raft_port, api_port, gateway_port) = (port(), port(), port());
    let operator_args = |extra: &[String]| -> Vec<String> {
        let mut args: Vec<String> = [
            "--via",
            &via,
            "--gateway",
            &gateway,
            "--cert",
            &cert,
            "--key",
            &key,
            "--ca",
            &ca,
            "--release-dir",
            release_dir.to_str().unwrap(),
            "--timeout-secs",
            "240",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.extend_from_slice(extra);
        args
    };
    let mut add = vec!["cluster".to_string(), "add-replica".to_string()];
    add.extend(operator_args(&[
        "--computer".into(),
        computer.clone(),
        "--id".into(),
        "3".into(),
        "--region".into(),
        "node-1".into(),
        "--raft-port".into(),
        raft_port.to_string(),
        "--api-port".into(),
        api_port.to_string(),
        "--gateway-port".into(),
        gateway_port.to_string(),
    ]));
    let add: Vec<&str> = add.iter().map(String::as_str).collect();
    let out = operator(&add);
    assert!(
        out.status.success(),
        "{}\n{}",
        text(&out),
        logs(&cluster_dir)
    );
    let said = text(&out);
    assert!(said.contains("replica 3 votes"), "{said}");
    let status = members();
    assert!(voter(&status, 3), "{status}");
    let three = status["members"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["id"] == 3)
        .unwrap()
        .clone();
    assert_eq!(three["raft_addr"], format!("[::1]:{raft_port}"), "{three}");
    assert_eq!(three["region"], "node-1", "{three}");
    // `slapos cluster status` says where it is hosted.
    assert!(
        three["hosted_by"]
            .as_str()
            .is_some_and(|h| h.starts_with(&format!("{computer}/slappart"))),
        "{three}"
    );
    // The replica and its gateway run in two partitions (two users) of the node.
    let node_cfg = cluster["nodes"][0]["config"].as_str().unwrap().to_string();
    let group_of = |name: &str| {
        slapos_e2e::agent::node_status(&node_cfg)
            .as_array()
            .and_then(|a| a.iter().find(|p| p["name"] == name).cloned())
            .map(|p| p["group"].as_str().unwrap_or_default().to_string())
            .unwrap_or_else(|| panic!("no {name} on the node"))
    };
    let (replica_group, gateway_group) =
        (group_of("replica-on-watch"), group_of("gateway-on-watch"));
    assert!(
        three["hosted_by"]
            .as_str()
            .is_some_and(|h| h.ends_with(&format!("/{replica_group}"))),
        "{three}"
    );
    assert_ne!(replica_group, gateway_group);
    // Running it again with other timers reconfigures it: the node restarts the
    // replica with them, its data stays, and it votes again.
    let replica_pid = || slapos_e2e::agent::running_pid(&node_cfg, "replica-on-watch");
    let before = replica_pid().expect("the replica runs under the node's supervisor");
    let mut again: Vec<String> = add.iter().map(|a| a.to_string()).collect();
    again.extend(
        [
            "--heartbeat-ms",
            "150",
            "--election-timeout-min-ms",
            "600",
            "--backup-every-minutes",
            "1",
        ]
        .map(String::from),
    );
    again.extend(["--election-timeout-max-ms", "1200"].map(String::from));
    let again: Vec<&str> = again.iter().map(String::as_str).collect();
    let out = operator(&again);
    assert!(
        out.status.success(),
        "{}\n{}",
        text(&out),
        logs(&cluster_dir)
    );
    assert!(text(&out).contains("already votes"), "{}", text(&out));
    let partition = three["hosted_by"]
        .as_str()
        .unwrap()
        .split('/')
        .nth(1)
        .unwrap()
        .to_string();
    let partition_dir = cluster_dir.join("node-1/inst").join(&partition);
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let rendered =
            std::fs::read_to_string(partition_dir.join("etc/replica.toml")).unwrap_or_default();
        let now = replica_pid();
        if rendered.contains("heartbeat_ms = 150") && now.is_some_and(|p| p != before) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not reconfigured ({now:?} was {before}): {rendered}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while !voter(&members(), 3) {
        assert!(Instant::now() < deadline, "replica 3 does not vote again");
        std::thread::sleep(Duration::from_millis(500));
    }
    assert!(
        partition_dir.join("srv/master").is_dir(),
        "the data directory stays"
    );
    // Asked for scheduled backups, the replica takes one at once into its partition
    // (then one a minute), an intact one.
    let backups = partition_dir.join("srv/backups");
    let deadline = Instant::now() + Duration::from_secs(60);
    let first = loop {
        let found = slapos_operator::backup_schedule::backups(&backups).unwrap();
        if let Some((path, _)) = found.first() {
            break path.clone();
        }
        assert!(
            Instant::now() < deadline,
            "no scheduled backup in {}",
            backups.display()
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    let verify = Command::new(slapos_bin())
        .args(["cluster", "backup", "verify"])
        .arg(&first)
        .output()
        .unwrap();
    assert!(verify.status.success(), "{}", text(&verify));
    // The release was published to the operator's gateway and the node installed it
    // from there over HTTPS: its address names the gateway and the manifest's digest,
    // and no path of the operator's machine reaches the node.
    let release = format!("{gateway}software/");
    let local = release_dir.display().to_string();

    // Its gateway, in its partition, serves SLAP to the admin from the group's state.
    let own = format!("https://[::1]:{gateway_port}/");
    // The node's view, as the admin reads it through the partition's gateway: the body
    // and the HTTP status on its last line, and curl's complaints.
    let view = || {
        let out = Command::new("curl")
            .args([
                "-sS",
                "--max-time",
                "10",
                "--cacert",
                &ca,
                "--cert",
                &cert,
                "--key",
                &key,
            ])
            .args(["-w", "\n%{http_code}"])
            .arg(format!(
                "{own}getFullComputerInformation?computer_id={computer}"
            ))
            .output()
            .unwrap();
        (
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    let answer = loop {
        let (answer, complaint) = view();
        if answer.ends_with("\n200") {
            break answer;
        }
        assert!(
            Instant::now() < deadline,
            "the partition's gateway does not serve: {answer} {complaint}"
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    assert!(
        answer.contains(&release) && !answer.contains(&local),
        "the group's state, read through the new gateway: {answer}"
    );
    // The partition's gateway serves the release it runs, at the same address under it
    // (what a node installs from when the operator's gateway is gone).
    // (the manifest as published: `release publish --dry-run` prints it)
    let dry = Command::new(slapos_bin())
        .args(["release", "publish", "--dry-run"])
        .arg(&release_dir)
        .output()
        .unwrap();
    assert!(dry.status.success(), "{}", text(&dry));
    let digest = slapgrid::digest::sha256_hex(&dry.stdout);
    assert!(
        answer.contains(&format!("{release}{digest}/software.toml")),
        "{answer}"
    );
    let manifest = Command::new("curl")
        .args(["-sS", "--fail", "--cacert", &ca])
        .arg(format!("{own}software/{digest}/software.toml"))
        .output()
        .unwrap();
    assert!(manifest.status.success(), "{}", text(&manifest));
    assert_eq!(slapgrid::digest::sha256_hex(&manifest.stdout), digest);
    // The instances publish their addresses once their promises (a voter with a
    // leader; a gateway that serves) hold: the node's view, read by the admin through
    // the new gateway, has them.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let (view, _) = view();
        if view.contains(&format!("https://[::1]:{gateway_port}/"))
            && view.contains(&format!("[::1]:{api_port}"))
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no connection parameters: {view}"
        );
        std::thread::sleep(Duration::from_secs(1));
    }

    // Removed (its instance destroyed): the replica leaves the group before its
    // partition is wiped.
    let mut remove = vec!["cluster".to_string(), "remove-replica".to_string()];
    remove.extend(operator_args(&["--id".into(), "3".into()]));
    let remove: Vec<&str> = remove.iter().map(String::as_str).collect();
    let out = operator(&remove);
    assert!(
        out.status.success(),
        "{}\n{}",
        text(&out),
        logs(&cluster_dir)
    );
    let status = members();
    assert!(status["leader"].is_u64() && !member(&status, 3), "{status}");
    assert!(voter(&members(), 1) && voter(&members(), 2));
    drop(up);
    let _ = std::fs::remove_dir_all(&root);
}

/// The node's and instance's logs, for a failure message.
fn logs(cluster: &Path) -> String {
    let mut out = String::new();
    let node = cluster.join("node-1");
    let mut files: Vec<PathBuf> = vec![node.join("var/log/daemon.log")];
    if let Ok(parts) = std::fs::read_dir(node.join("inst")) {
        for p in parts.flatten() {
            if let Ok(entries) = std::fs::read_dir(p.path()) {
                for e in entries.flatten() {
                    let name = e.file_name().to_string_lossy().into_owned();
                    if name.ends_with(".log") {
                        files.push(e.path());
                    }
                }
            }
        }
    }
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap_or_default();
        let tail: Vec<&str> = text.lines().rev().take(30).collect();
        out.push_str(&format!("--- {} ---\n", f.display()));
        for l in tail.into_iter().rev() {
            out.push_str(l);
            out.push('\n');
        }
    }
    out
}
