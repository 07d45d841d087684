//! Self-hosting, its first part: the master as a software release
//! (`deploy/software/slapos-master`). On a cluster `slapos up` runs under mTLS (two
//! replicas and a node), the admin supplies the release to the node and requests one
//! instance of it with the real `slapos request`; slapgrid installs the `slapos` binary
//! (checksum verified) and runs, as the partition's user, a third replica and a gateway in
//! the partition: they enroll with one-time tokens the operator made, the replica joins
//! the group over mTLS and becomes a voter, its gateway serves SLAP from the replicated
//! state, and the instance publishes its addresses. Destroying the instance removes the
//! replica from the group before the partition is wiped.
//!
//! Runs as root (the node makes a Unix user per partition, removed at the end).

use slapos_e2e::agent::is_root;
use slapos_e2e::slapos_bin;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

struct Up(Child);

impl Drop for Up {
    fn drop(&mut self) {
        let _ = Command::new("kill").arg(self.0.id().to_string()).status();
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn text(out: &Output) -> String {
    format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn sha256(path: &Path) -> String {
    let out = Command::new("sha256sum").arg(path).output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("[::1]:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The release as a supplier writes it: the binary's path and the checksums filled in,
/// readable by the node's software user.
fn write_release(dir: &Path) -> String {
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/software/slapos-master");
    std::fs::create_dir_all(dir).unwrap();
    let script = dir.join("slapos-master.sh");
    std::fs::copy(source.join("slapos-master.sh"), &script).unwrap();
    let binary = slapos_bin();
    let manifest = std::fs::read_to_string(source.join("software.toml"))
        .unwrap()
        .replace("@SLAPOS_BINARY@", binary.to_str().unwrap())
        .replace("@SLAPOS_SHA256@", &sha256(&binary))
        .replace("@SCRIPT_SHA256@", &sha256(&script));
    let path = dir.join("software.toml");
    std::fs::write(&path, manifest).unwrap();
    use std::os::unix::fs::PermissionsExt;
    for f in [&script, &path] {
        std::fs::set_permissions(f, std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    path.display().to_string()
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
    let cluster_dir = root.join("c");
    let up = Up(Command::new(slapos_bin())
        .args([
            "up",
            "--replicas",
            "2",
            "--nodes",
            "1",
            "--partitions",
            "2",
            "--dir",
        ])
        .arg(&cluster_dir)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(root.join("up.log")).unwrap())
        .stderr(std::fs::File::create(root.join("up.err")).unwrap())
        .spawn()
        .unwrap());
    let json = cluster_dir.join("cluster.json");
    let deadline = Instant::now() + Duration::from_secs(90);
    while !json.exists() {
        assert!(Instant::now() < deadline, "no cluster.json");
        std::thread::sleep(Duration::from_millis(200));
    }
    let cluster: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    let admin = &cluster["admin"];
    let (cert, key, ca) = (
        admin["certificate"].as_str().unwrap().to_string(),
        admin["key"].as_str().unwrap().to_string(),
        admin["ca"].as_str().unwrap().to_string(),
    );
    let client_cfg = admin["client_config"].as_str().unwrap().to_string();
    let env: Vec<(String, String)> = admin["master_tls_env"]
        .as_str()
        .unwrap()
        .split(' ')
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap();
            (k.to_string(), v.to_string())
        })
        .collect();
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

    // The operator's one-time tokens for the new replica and its gateway, naming the
    // partition's addresses (a node of `slapos up` gives its partitions ::1/127.0.0.1).
    let token = |identity: &str| {
        let out = operator(&[
            "cluster",
            "ca",
            "token",
            "--via",
            &via,
            "--identity",
            identity,
            "--ip",
            "::1",
            "--ip",
            "127.0.0.1",
        ]);
        assert!(out.status.success(), "{}", text(&out));
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    let (replica_token, gateway_token) = (token("replica:3"), token("gateway:r3"));
    let release = write_release(&root.join("release"));
    let venv = slapos_e2e::compat::venv();
    let slapos_py = |args: &[&str]| {
        Command::new(venv.join("bin/slapos"))
            .args(args)
            .args(["--cfg", &client_cfg])
            .output()
            .unwrap()
    };
    let out = slapos_py(&["supply", &release, &computer]);
    assert!(out.status.success(), "{}", text(&out));
    let (raft_port, api_port, gateway_port) = (free_port(), free_port(), free_port());
    let group_ca = std::fs::read_to_string(&ca).unwrap();
    let params = [
        "replica-id=3".to_string(),
        "region=node-1".to_string(),
        format!("join-via={via}"),
        format!("enroll-gateway={gateway}"),
        format!("replica-token={replica_token}"),
        format!("gateway-token={gateway_token}"),
        format!("group-ca={group_ca}"),
        format!("raft-port={raft_port}"),
        format!("api-port={api_port}"),
        format!("gateway-port={gateway_port}"),
    ];
    let request = |state: &str| {
        let mut args = vec![
            "request".to_string(),
            "master-3".to_string(),
            release.clone(),
            "--node".to_string(),
            format!("computer_guid={computer}"),
            "--state".to_string(),
            state.to_string(),
            "--parameters".to_string(),
        ];
        args.extend(params.iter().cloned());
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        slapos_py(&args)
    };
    let out = request("started");
    assert!(out.status.success(), "{}", text(&out));

    // The node installs the release and runs the instance: replica 3 joins as a voter.
    let deadline = Instant::now() + Duration::from_secs(240);
    loop {
        let status = members();
        if voter(&status, 3) {
            eprintln!("replica 3 joined: {status}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "replica 3 did not join: {status}\n{}",
            logs(&cluster_dir)
        );
        std::thread::sleep(Duration::from_secs(1));
    }
    // Its gateway, in the partition, serves SLAP to the admin from the group's state.
    let own = format!("https://[::1]:{gateway_port}/");
    let deadline = Instant::now() + Duration::from_secs(60);
    let answer = loop {
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
        let answer = String::from_utf8_lossy(&out.stdout).into_owned();
        if answer.ends_with("\n200") {
            break answer;
        }
        assert!(
            Instant::now() < deadline,
            "the partition's gateway does not serve: {answer} {}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    assert!(
        answer.contains(&release),
        "the group's state, read through the new gateway: {answer}"
    );
    // The instance publishes its addresses once its promise (a voter with a leader) holds.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let out = request("started");
        let said = text(&out);
        if said.contains(&format!("https://[::1]:{gateway_port}/"))
            && said.contains(&format!("[::1]:{api_port}"))
        {
            eprintln!("the instance published:\n{said}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no connection parameters: {said}"
        );
        std::thread::sleep(Duration::from_secs(2));
    }

    // Destroyed: the replica leaves the group before its partition is wiped.
    let out = request("destroyed");
    assert!(out.status.success(), "{}", text(&out));
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let status = members();
        if status["leader"].is_u64() && !member(&status, 3) {
            eprintln!("replica 3 left: {status}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "replica 3 is still a member: {status}\n{}",
            logs(&cluster_dir)
        );
        std::thread::sleep(Duration::from_secs(1));
    }
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
