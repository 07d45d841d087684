//! The self-hosted group loses a node: `slapos up` (its default, the master in partitions
//! of three nodes standing for three regions); the node hosting the leader is killed
//! outright (its agent, its supervisor and every process of its partitions, SIGKILL). A
//! new leader is elected among the other two, the write acknowledged before the loss is
//! still there, new writes go through the surviving gateways, and the surviving nodes'
//! agents, whose configuration lists every gateway, keep deploying. The node comes back
//! (its agent started again): its supervisor restarts the replica from its data, and the
//! replica rejoins and catches up.
//!
//! Runs as root (a Unix user per partition, removed at the end).

use slapos_e2e::agent::{is_root, Up};
use slapos_e2e::slapos_bin;
use slapos_harness::free_port;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The test's own node agent, stopped before `slapos up` (so that up's teardown, which
/// removes the partition users, is not raced).
struct Procs(Vec<Child>);

impl Drop for Procs {
    fn drop(&mut self) {
        for c in self.0.iter_mut().rev() {
            let _ = Command::new("kill").arg(c.id().to_string()).status();
            let deadline = Instant::now() + Duration::from_secs(60);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn text(out: &Output) -> String {
    format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn the_group_survives_losing_the_node_of_its_leader_and_the_node_rejoins() {
    assert!(is_root(), "runs as root (a Unix user per partition)");
    let dir = tempfile::tempdir().unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let (up, cluster) = start_up(dir.path(), &[]);
    let mut procs = Procs(Vec::new());
    let op = Operator::of(&cluster);
    let (cert, key, ca) = (op.cert.clone(), op.key.clone(), op.ca.clone());
    let hosted = cluster["hosted_replicas"].as_array().unwrap().clone();
    let nodes = cluster["nodes"].as_array().unwrap().clone();
    let status_via = |apis: &[String]| op.status(apis);
    let all_apis: Vec<String> = hosted
        .iter()
        .map(|h| h["api_addr"].as_str().unwrap().to_string())
        .collect();
    let status = status_via(&all_apis);
    let leader = status["leader"].as_u64().expect("a leader");
    let lost = hosted
        .iter()
        .find(|h| h["id"] == leader)
        .expect("the leader is a hosted replica")
        .clone();
    let lost_computer = lost["computer"].as_str().unwrap().to_string();
    let survivors: Vec<serde_json::Value> = hosted
        .iter()
        .filter(|h| h["id"] != leader)
        .cloned()
        .collect();
    let survivor_apis: Vec<String> = survivors
        .iter()
        .map(|h| h["api_addr"].as_str().unwrap().to_string())
        .collect();
    let survivor_gateway = survivors[0]["gateway_url"].as_str().unwrap().to_string();

    // An acknowledged write before the loss.
    let register = |gateway: &str, id: &str| {
        let out = Command::new(slapos_bin())
            .args(["computer", "register", "--gateway", gateway, "--ca", &ca])
            .args(["--cert", &cert, "--key", &key, "--id", id])
            .output()
            .unwrap();
        assert!(out.status.success(), "register {id}: {}", text(&out));
    };
    let exists = |gateway: &str, id: &str| -> u16 {
        let out = Command::new("curl")
            .args([
                "-sS",
                "--max-time",
                "20",
                "--cacert",
                &ca,
                "--cert",
                &cert,
                "--key",
                &key,
            ])
            .args(["-H", "Content-Type: application/json", "-o", "/dev/null"])
            .args(["-w", "%{http_code}", "--data"])
            .arg(format!("{{\"computer_guid\": \"{id}\"}}"))
            .arg(format!(
                "{gateway}slapos.allDocs.v0.compute_node_instance_list"
            ))
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .unwrap_or(0)
    };
    let lost_gateway = lost["gateway_url"].as_str().unwrap().to_string();
    register(&lost_gateway, "COMP-BEFORE");

    // The node of the leader is lost: its agent, its supervisor and every process of its
    // partitions' users, all SIGKILLed.
    let node_cfg = nodes
        .iter()
        .find(|n| n["computer_id"] == lost_computer.as_str())
        .and_then(|n| n["config"].as_str())
        .unwrap()
        .to_string();
    kill_node(&cluster, &lost_computer);
    let killed = Instant::now();

    // A new leader among the other two.
    let deadline = Instant::now() + Duration::from_secs(60);
    let new_leader = loop {
        let s = status_via(&survivor_apis);
        if let Some(l) = s["leader"].as_u64().filter(|l| *l != leader) {
            break l;
        }
        assert!(Instant::now() < deadline, "no new leader: {s}");
        std::thread::sleep(Duration::from_millis(300));
    };
    eprintln!(
        "replica {leader} lost with {lost_computer}; replica {new_leader} leads after {:?}",
        killed.elapsed()
    );
    // Nothing acknowledged is lost; the survivors take writes.
    assert_eq!(exists(&survivor_gateway, "COMP-BEFORE"), 200);
    register(&survivor_gateway, "COMP-AFTER");
    assert_eq!(exists(&survivor_gateway, "COMP-AFTER"), 200);
    // (what was never written is not there: 403 "... is not registered", as JSON-RPC
    // answers an unknown computer)
    assert_eq!(exists(&survivor_gateway, "COMP-NEVER"), 403);

    // The surviving nodes keep deploying: an instance of the sample on one of them
    // (its agent lists every gateway, the lost one among them).
    let sample = cluster["sample"]["software_release"]
        .as_str()
        .unwrap()
        .to_string();
    let other = survivors[0]["computer"].as_str().unwrap().to_string();
    // (the real client names one master: a surviving gateway)
    let client_cfg = dir.path().join("client.cfg");
    std::fs::write(
        &client_cfg,
        format!(
            "[slapos]\nmaster_url = {survivor_gateway}\n\n[slapconsole]\ncert_file = {cert}\n\
             key_file = {key}\n"
        ),
    )
    .unwrap();
    let client_cfg = client_cfg.display().to_string();
    let venv = slapos_e2e::compat::venv();
    let out = Command::new(venv.join("bin/slapos"))
        .args(["supply", &sample, &other, "--cfg", &client_cfg])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let out = Command::new(venv.join("bin/slapos"))
        .args(["request", "after-loss", &sample, "--node"])
        .arg(format!("computer_guid={other}"))
        .args(["--cfg", &client_cfg])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let other_cfg = nodes
        .iter()
        .find(|n| n["computer_id"] == other.as_str())
        .unwrap()["config"]
        .as_str()
        .unwrap()
        .to_string();
    let deadline = Instant::now() + Duration::from_secs(120);
    while slapos_e2e::agent::running_pid(&other_cfg, "hello-on-watch").is_none() {
        assert!(
            Instant::now() < deadline,
            "the surviving node does not deploy: {}",
            slapos_e2e::agent::node_status(&other_cfg)
        );
        std::thread::sleep(Duration::from_millis(500));
    }

    // The node comes back: its agent starts its supervisor, which restarts the replica
    // from its data; the replica rejoins and catches up.
    let log = std::fs::File::create(dir.path().join("node-back.log")).unwrap();
    let netns = nodes
        .iter()
        .find(|n| n["computer_id"] == lost_computer.as_str())
        .and_then(|n| n["netns"].as_str());
    let mut agent = match netns {
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns]).arg(slapos_bin());
            c
        }
        None => Command::new(slapos_bin()),
    };
    procs.0.push(
        agent
            .args(["node", "daemon", "--cfg", &node_cfg])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let s = status_via(&all_apis);
        let back = s["members"].as_array().and_then(|m| {
            m.iter().find(|r| {
                r["id"] == leader && r["state"] == "follower" && r["lag"].as_u64() == Some(0)
            })
        });
        if back.is_some() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "replica {leader} did not rejoin: {s}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    // Its own gateway serves what was written while it was away.
    let deadline = Instant::now() + Duration::from_secs(60);
    while exists(&lost_gateway, "COMP-AFTER") != 200 {
        assert!(
            Instant::now() < deadline,
            "the node's gateway does not catch up"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    // `slapos up`'s teardown stops the node again (its agent is ours: stopped first).
    drop(procs);
    drop(up);
}

/// How many partitions a node of `slapos up` has (from its slapos.cfg).
fn cluster_partitions(node: &serde_json::Value) -> usize {
    let cfg = std::fs::read_to_string(node["config"].as_str().unwrap()).unwrap_or_default();
    cfg.lines()
        .find_map(|l| l.strip_prefix("partition_amount = "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(4)
}

/// A group `slapos up` hosts in partitions (with `args`), once cluster.json is written.
fn start_up(dir: &Path, args: &[&str]) -> (Up, serde_json::Value) {
    let up = Up::launch(dir, args, Duration::from_secs(300));
    let json = up.dir.join("cluster.json");
    let cluster = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    (up, cluster)
}

/// The operator of a group `slapos up` made: the admin's files and the master API's
/// environment, from cluster.json.
struct Operator {
    cert: String,
    key: String,
    ca: String,
    env: Vec<(String, String)>,
}

impl Operator {
    fn of(cluster: &serde_json::Value) -> Operator {
        let admin = &cluster["admin"];
        let s = |k: &str| admin[k].as_str().unwrap().to_string();
        Operator {
            cert: s("certificate"),
            key: s("key"),
            ca: s("ca"),
            env: slapos_e2e::agent::master_tls_env(cluster),
        }
    }

    fn slapos(&self, args: &[&str]) -> Output {
        let mut c = Command::new(slapos_bin());
        c.args(args);
        for (k, v) in &self.env {
            c.env(k, v);
        }
        c.output().unwrap()
    }

    fn status(&self, apis: &[String]) -> serde_json::Value {
        let out = self.slapos(&["cluster", "status", "--json", "--via", &apis.join(",")]);
        serde_json::from_slice(&out.stdout).unwrap_or_default()
    }

    /// `slapos cluster add-replica|remove-replica` through `gateway`, with `extra`.
    fn replica_command(
        &self,
        command: &str,
        apis: &[String],
        gateway: &str,
        release_dir: &Path,
        extra: &[String],
    ) -> Output {
        let mut args: Vec<String> = ["cluster", command, "--via", &apis.join(","), "--gateway"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        args.push(gateway.to_string());
        for (flag, v) in [
            ("--cert", &self.cert),
            ("--key", &self.key),
            ("--ca", &self.ca),
        ] {
            args.push(flag.to_string());
            args.push(v.clone());
        }
        args.push("--release-dir".into());
        args.push(release_dir.display().to_string());
        args.extend_from_slice(extra);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        self.slapos(&args)
    }
}

/// A free port, as an argument.
fn port() -> String {
    free_port().expect("a free port").to_string()
}

fn voters(status: &serde_json::Value) -> Vec<u64> {
    status["members"]
        .as_array()
        .map(|m| {
            m.iter()
                .filter(|r| r["role"] == "voter")
                .filter_map(|r| r["id"].as_u64())
                .collect()
        })
        .unwrap_or_default()
}

/// Kills a node of `slapos up` outright: its agent, its supervisor and every process of
/// its partitions' users.
fn kill_node(cluster: &serde_json::Value, computer: &str) {
    let node = cluster["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["computer_id"] == computer)
        .unwrap();
    let cfg = node["config"].as_str().unwrap();
    let users = node["users"].as_str().expect("partition users (root)");
    if let Some(pid) = cluster["processes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["config"] == cfg)
        .and_then(|p| p["pid"].as_u64())
    {
        let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
    }
    let _ = Command::new("pkill")
        .args(["-9", "-f", &format!("node supervisord --cfg {cfg}")])
        .status();
    for i in 0..cluster_partitions(node) {
        let _ = Command::new("pkill")
            .args(["-9", "-u", &format!("{users}u{i}")])
            .status();
    }
}

/// A region is lost for good: its replica is replaced by one on a spare node (one
/// command to add, one to remove the dead one without its node), then the group grows
/// from three to five voters, each step through `slapos cluster add-replica`, and all
/// five move to a new release with one rolling `slapos cluster upgrade`.
#[test]
fn a_lost_region_s_replica_is_replaced_and_the_group_grows_to_five() {
    assert!(is_root(), "runs as root (a Unix user per partition)");
    let dir = tempfile::tempdir().unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    // (a replica and its gateway take two partitions: COMP-3 and COMP-4 host two of each)
    let (up, cluster) = start_up(dir.path(), &["--nodes", "4", "--partitions", "4"]);
    let op = Operator::of(&cluster);
    let hosted = cluster["hosted_replicas"].as_array().unwrap().clone();
    // COMP-1 hosts the replica whose certificate the operator presents: lose COMP-2.
    let lost = hosted
        .iter()
        .find(|h| h["computer"] == "COMP-2")
        .expect("a replica on COMP-2")
        .clone();
    let lost_id = lost["id"].as_u64().unwrap();
    let survivors: Vec<&serde_json::Value> = hosted.iter().filter(|h| h["id"] != lost_id).collect();
    let apis: Vec<String> = survivors
        .iter()
        .map(|h| h["api_addr"].as_str().unwrap().to_string())
        .collect();
    let gateway = survivors[0]["gateway_url"].as_str().unwrap().to_string();
    let release_dir = cluster_dir_of(&cluster).join("software/slapos-master");
    kill_node(&cluster, "COMP-2");

    // Replace: a new replica on the spare node, in another region, then the dead one out.
    let add = |computer: &str, id: u64, region: &str, apis: &[String]| {
        let extra: Vec<String> = [
            "--computer",
            computer,
            "--id",
            &id.to_string(),
            "--region",
            region,
            "--raft-port",
            &port(),
            "--api-port",
            &port(),
            "--gateway-port",
            &port(),
            "--timeout-secs",
            "180",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let out = op.replica_command("add-replica", apis, &gateway, &release_dir, &extra);
        assert!(out.status.success(), "add-replica {id}: {}", text(&out));
    };
    add("COMP-4", 5, "region-4", &apis);
    let out = op.replica_command(
        "remove-replica",
        &apis,
        &gateway,
        &release_dir,
        &["--id".into(), lost_id.to_string(), "--lost".into()],
    );
    assert!(
        out.status.success(),
        "remove-replica --lost: {}",
        text(&out)
    );
    let mut expected: Vec<u64> = survivors
        .iter()
        .map(|h| h["id"].as_u64().unwrap())
        .collect();
    expected.push(5);
    expected.sort();
    let status = op.status(&apis);
    assert_eq!(voters(&status), expected, "{status}");
    assert!(status["leader"].is_u64(), "{status}");

    // Grow from three to five: two more, on the other partitions of two nodes.
    add("COMP-3", 6, "region-3", &apis);
    add("COMP-4", 7, "region-4", &apis);
    expected.extend([6, 7]);
    expected.sort();
    let status = op.status(&apis);
    assert_eq!(voters(&status), expected, "{status}");
    let hosts: std::collections::BTreeSet<String> = status["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["hosted_by"].as_str().unwrap_or("").to_string())
        .collect();
    assert_eq!(hosts.len(), 5, "five replicas in five partitions: {status}");
    // Each member names the gateway beside it, and the node agents learn the five from
    // their gateways' answers (kept beside their configuration, which nobody rewrote).
    let urls: std::collections::BTreeSet<String> = status["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["gateway_url"].as_str().expect("gateway_url").to_string())
        .collect();
    assert_eq!(urls.len(), 5, "{status}");
    let node_cfg = cluster["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["computer_id"] == "COMP-1")
        .and_then(|n| n["config"].as_str())
        .unwrap()
        .to_string();
    let learned_path = format!("{node_cfg}.gateways");
    // An agent learns the list from any answer of a gateway; with SlapOS's periods its
    // calls are its long poll, which the gateway answers (304, with the new list) as
    // soon as it reads that the group's gateways changed (every 10 s).
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let learned: std::collections::BTreeSet<String> = std::fs::read_to_string(&learned_path)
            .unwrap_or_default()
            .split_whitespace()
            .map(str::to_string)
            .collect();
        if learned == urls {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "COMP-1's agent learned {learned:?}, not {urls:?}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    let configured = std::fs::read_to_string(&node_cfg).unwrap();
    assert!(
        !urls.iter().all(|u| configured.contains(u.as_str())),
        "the configuration was rewritten: {configured}"
    );

    // A rolling upgrade to another release: a new version of it (this binary again,
    // its manifest changed, so another content address), published by the admin with
    // `slapos release publish`; one replica at a time, each back, voting and caught up
    // before the next; the group keeps a leader throughout and every replica ends on
    // the new release. (The same files written again would be the same release, which
    // every replica runs already.)
    let new_release_dir = dir.path().join("release-2");
    std::fs::create_dir_all(&new_release_dir).unwrap();
    for f in ["slapos", "slapos-master.sh", "software.toml"] {
        std::fs::copy(release_dir.join(f), new_release_dir.join(f)).unwrap();
    }
    let manifest = new_release_dir.join("software.toml");
    let text_2 = std::fs::read_to_string(&manifest).unwrap() + "\n# version 2 (the test's)\n";
    std::fs::write(&manifest, text_2).unwrap();
    let cfg = dir.path().join("admin-client.cfg");
    std::fs::write(
        &cfg,
        format!(
            "[slapos]\nmaster_url = {gateway}\n\n[slapconsole]\ncert_file = {}\nkey_file = {}\nmaster_ca_file = {}\n",
            op.cert, op.key, op.ca
        ),
    )
    .unwrap();
    let published = op.slapos(&[
        "release",
        "publish",
        new_release_dir.to_str().unwrap(),
        "--cfg",
        cfg.to_str().unwrap(),
        "--json",
    ]);
    assert!(published.status.success(), "{}", text(&published));
    let published: serde_json::Value = serde_json::from_slice(&published.stdout).unwrap();
    let new_release = published[0]["url"].as_str().unwrap().to_string();
    let out = op.replica_command(
        "upgrade",
        &apis,
        &gateway,
        &new_release_dir,
        &[
            "--release".into(),
            new_release.clone(),
            "--timeout-secs".into(),
            "240".into(),
        ],
    );
    assert!(out.status.success(), "upgrade: {}", text(&out));
    let said = text(&out);
    for id in &expected {
        assert!(
            said.contains(&format!("replica {id} runs the new release")),
            "{said}"
        );
    }
    let status = op.status(&apis);
    assert_eq!(voters(&status), expected, "{status}");
    assert!(status["leader"].is_u64(), "{status}");
    let again = op.replica_command(
        "upgrade",
        &apis,
        &gateway,
        &new_release_dir,
        &["--release".into(), new_release],
    );
    assert!(again.status.success(), "{}", text(&again));
    assert!(
        text(&again).contains("runs this release already"),
        "{}",
        text(&again)
    );
    drop(up);
}

fn cluster_dir_of(cluster: &serde_json::Value) -> std::path::PathBuf {
    std::path::PathBuf::from(cluster["dir"].as_str().unwrap())
}
