//! `slapos up` as a user runs it: a real process that starts a master group under mTLS,
//! describes it in cluster.json, serves SLAP to the admin's certificate only, and stops
//! everything on SIGTERM, also while it is still bootstrapping. By default the group
//! lives in partitions of three nodes (the self-hosted path); `--unhosted` keeps replicas
//! and gateways as plain processes. From a directory whose parent other users may not
//! enter, the partitions go where their users reach them.

use slapos_e2e::slapos_bin;
use std::io::{BufRead, Read};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What a child writes on a pipe, gathered as it comes (so that a test can wait for a
/// line while the child runs, and the pipe never fills).
#[derive(Clone, Default)]
struct Said(Arc<Mutex<String>>);

impl Said {
    fn gather(pipe: impl Read + Send + 'static) -> Said {
        let said = Said::default();
        let into = said.clone();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(pipe).lines() {
                let Ok(line) = line else { break };
                let mut text = into.0.lock().unwrap();
                text.push_str(&line);
                text.push('\n');
            }
        });
        said
    }

    fn text(&self) -> String {
        self.0.lock().unwrap().clone()
    }
}

/// `slapos up`'s standard output and error, gathered.
fn gather(up: &mut Child) -> (Said, Said) {
    (
        Said::gather(up.stdout.take().expect("piped stdout")),
        Said::gather(up.stderr.take().expect("piped stderr")),
    )
}

/// `slapos up` stopped (SIGTERM, then up to two minutes for it to clean up) when a test
/// ends early: a failed assertion must not leave its nodes, users and namespaces running.
struct StopOnDrop(u32);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        let pid = u64::from(self.0);
        if !alive(pid) {
            return;
        }
        let _ = Command::new("kill").arg(pid.to_string()).status();
        let deadline = Instant::now() + Duration::from_secs(120);
        while alive(pid) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

/// A `slapos up` that wrote its cluster.json.
struct Started {
    up: Child,
    out: Said,
    err: Said,
    cluster: serde_json::Value,
    _stop: StopOnDrop,
}

/// `slapos up <args> --dir <cluster_dir>` until it wrote cluster.json (within `timeout`,
/// else the test fails with what it said).
fn start_up(
    args: &[&std::ffi::OsStr],
    cluster_dir: &std::path::Path,
    timeout: Duration,
) -> Started {
    let mut up = Command::new(slapos_bin())
        .arg("up")
        .args(args)
        .arg("--dir")
        .arg(cluster_dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start slapos up");
    let (out, err) = gather(&mut up);
    let stop = StopOnDrop(up.id());
    let json_path = cluster_dir.join("cluster.json");
    let deadline = Instant::now() + timeout;
    while !json_path.exists() {
        if let Ok(Some(status)) = up.try_wait() {
            panic!(
                "slapos up exited early ({status}): {}\n{}",
                out.text(),
                err.text()
            );
        }
        assert!(
            Instant::now() < deadline,
            "no cluster.json after {timeout:?}: {}\n{}",
            out.text(),
            err.text()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let cluster =
        serde_json::from_slice(&std::fs::read(&json_path).unwrap()).expect("cluster.json parses");
    Started {
        up,
        out,
        err,
        cluster,
        _stop: stop,
    }
}

fn alive(pid: u64) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
        && std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| !s.contains(") Z "))
            .unwrap_or(false)
}

/// `GET path` on an https:// gateway with curl, verifying it against `ca`, presenting
/// `client` (certificate, key) if any: (status, body).
fn https_get(url: &str, path: &str, ca: &str, client: Option<(&str, &str)>) -> (u16, String) {
    let mut curl = Command::new("curl");
    curl.args([
        "-sS",
        "--max-time",
        "20",
        "--cacert",
        ca,
        "-w",
        "\n%{http_code}",
    ]);
    if let Some((cert, key)) = client {
        curl.args(["--cert", cert, "--key", key]);
    }
    let out = curl.arg(format!("{url}{path}")).output().expect("run curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, status) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (status.trim().parse().unwrap_or(0), body.to_string())
}

#[test]
fn up_unhosted_starts_a_described_cluster_that_serves_slap_and_stops_cleanly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cluster_dir = dir.path().join("c");
    let json_path = cluster_dir.join("cluster.json");
    let Started {
        mut up,
        err,
        cluster,
        _stop,
        ..
    } = start_up(
        &["--unhosted", "--replicas", "3"].map(std::ffi::OsStr::new),
        &cluster_dir,
        Duration::from_secs(60),
    );
    let procs = cluster["processes"].as_array().expect("processes");
    let masters: Vec<_> = procs.iter().filter(|p| p["role"] == "master").collect();
    let gateways: Vec<_> = procs.iter().filter(|p| p["role"] == "gateway").collect();
    assert_eq!((masters.len(), gateways.len()), (3, 3), "{cluster}");
    let pids: Vec<u64> = procs
        .iter()
        .map(|p| p["pid"].as_u64().expect("pid"))
        .collect();
    assert!(
        pids.iter().all(|p| alive(*p)),
        "every process runs: {pids:?}"
    );
    for m in &masters {
        assert!(std::path::Path::new(m["data_dir"].as_str().unwrap()).is_dir());
    }
    let admin = &cluster["admin"];
    let (cert, key, ca) = (
        admin["certificate"]
            .as_str()
            .expect("the admin's certificate"),
        admin["key"].as_str().expect("the admin's key"),
        admin["ca"].as_str().expect("the group's CA"),
    );
    let client_cfg = std::fs::read_to_string(admin["client_config"].as_str().unwrap()).unwrap();
    assert!(client_cfg.contains("master_url = https://"), "{client_cfg}");
    assert!(
        client_cfg.contains(&format!("cert_file = {cert}")),
        "{client_cfg}"
    );

    // The group has three voters and a leader.
    let via: Vec<&str> = cluster["master_api_addrs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    // The masters' API takes the certificates cluster.json names, and no plain client.
    let env = admin["master_tls_env"].as_str().expect("master_tls_env");
    let mut status = Command::new(slapos_bin());
    status.args(["cluster", "status", "--json", "--via", &via.join(",")]);
    for pair in env.split(' ') {
        let (k, v) = pair.split_once('=').expect("VAR=value");
        status.env(k, v);
    }
    let status = status.output().expect("cluster status");
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).expect("status json");
    assert!(status["leader"].is_u64(), "{status}");
    assert_eq!(status["members"].as_array().unwrap().len(), 3, "{status}");
    let plain = Command::new(slapos_bin())
        .args(["cluster", "status", "--json", "--via", &via.join(",")])
        .output()
        .expect("cluster status");
    let plain: serde_json::Value = serde_json::from_slice(&plain.stdout).unwrap_or_default();
    assert!(
        !plain["leader"].is_u64(),
        "a client without a certificate read the group's status: {plain}"
    );

    // Every gateway speaks SLAP over HTTPS to the admin, and to nobody without a
    // certificate.
    for url in cluster["gateway_urls"].as_array().unwrap() {
        let url = url.as_str().unwrap();
        assert!(url.starts_with("https://"), "{url}");
        let path = "getFullComputerInformation?computer_id=COMP-NONE";
        let (status, body) = https_get(url, path, ca, Some((cert, key)));
        assert_eq!(status, 404, "{body}");
        assert!(body.contains("COMP-NONE"), "{body}");
        let (status, body) = https_get(url, path, ca, None);
        assert_eq!(status, 403, "served without a certificate: {body}");
    }

    // The node formatted its partitions and runs the sample instance under its supervisor.
    let nodes = cluster["nodes"].as_array().expect("nodes");
    assert_eq!(nodes.len(), 1, "{cluster}");
    let node_cfg = nodes[0]["config"].as_str().unwrap().to_string();
    let node_status = || {
        let out = Command::new(slapos_bin())
            .args(["node", "status", "--json", "--cfg", &node_cfg])
            .output()
            .expect("slapos node status");
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap_or_default()
    };
    let deadline = Instant::now() + Duration::from_secs(120);
    let hello_pid = loop {
        let status = node_status();
        let running = status.as_array().and_then(|a| {
            a.iter()
                .find(|p| p["name"] == "hello-on-watch" && p["state"] == "Running")
                .and_then(|p| p["pid"].as_u64())
        });
        if let Some(pid) = running {
            break pid;
        }
        assert!(
            Instant::now() < deadline,
            "the sample instance is not running after 120 s: {status}"
        );
        std::thread::sleep(Duration::from_millis(250));
    };
    let users = nodes[0]["users"].as_str().map(str::to_string);
    // The node registered with a token: its own key (made on the node) and certificate.
    let node_dir = std::path::Path::new(nodes[0]["dir"].as_str().unwrap());
    {
        use std::os::unix::fs::PermissionsExt;
        let key = std::fs::metadata(node_dir.join("etc/computer.key")).expect("the node's key");
        assert_eq!(
            key.permissions().mode() & 0o077,
            0,
            "the node's key is private"
        );
        assert!(node_dir.join("etc/computer.crt").is_file());
        // The agent's log is root's: the partition users, in the software group, may not
        // read what it logs (issue 17.2).
        if users.is_some() {
            use std::os::unix::fs::MetadataExt;
            let log = std::fs::metadata(node_dir.join("var/log/daemon.log")).expect("the log");
            assert_eq!(
                (log.mode() & 0o777, log.gid()),
                (0o640, 0),
                "the agent's log"
            );
        }
    }

    // SIGTERM stops everything, each process on its own (none had to be killed).
    terminate(&mut up, Duration::from_secs(30));
    stopped_on_their_own(&err);
    assert!(
        pids.iter().all(|p| !alive(*p)),
        "children left behind: {pids:?}"
    );
    assert!(
        !json_path.exists(),
        "cluster.json describes a stopped cluster"
    );
    assert!(!alive(hello_pid), "the sample instance's service survived");
    if let Some(users) = users {
        let id = Command::new("id")
            .arg(format!("{users}u0"))
            .output()
            .unwrap();
        assert!(!id.status.success(), "partition users left behind");
    }
}

/// The embedded default: a seed, three nodes standing for three regions, a replica and a
/// gateway in a partition of each, the seed gone, the nodes and the sample instance on
/// the gateways in the partitions.
#[test]
fn up_by_default_hosts_the_master_in_partitions_of_three_nodes() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let cluster_dir = dir.path().join("c");
    let Started {
        mut up,
        err,
        cluster,
        _stop,
        ..
    } = start_up(&[], &cluster_dir, Duration::from_secs(300));
    let hosted = cluster["hosted_replicas"]
        .as_array()
        .expect("hosted_replicas");
    let ids: Vec<u64> = hosted.iter().map(|h| h["id"].as_u64().unwrap()).collect();
    assert_eq!(ids, vec![2, 3, 4], "{cluster}");
    let computers: std::collections::BTreeSet<&str> = hosted
        .iter()
        .map(|h| h["computer"].as_str().unwrap())
        .collect();
    assert_eq!(computers.len(), 3, "one replica per node: {cluster}");
    // As root, each node is a network namespace of its own (its own IPv6 /64, standing
    // for a region), and its replica listens on its partition's address there.
    let nodes = cluster["nodes"].as_array().expect("nodes");
    let mut namespaces = Vec::new();
    for h in hosted {
        let node = nodes
            .iter()
            .find(|n| n["computer_id"] == h["computer"])
            .expect("the node of a hosted replica");
        let ns = node["netns"].as_str().expect("a namespace per node (root)");
        let prefix = node["address"]
            .as_str()
            .and_then(|a| a.rsplit_once("::"))
            .map(|(net, _)| format!("[{net}::"))
            .expect("the node's address");
        let api = h["api_addr"].as_str().unwrap();
        assert!(
            api.starts_with(&prefix),
            "{api} not in {prefix}/64: {cluster}"
        );
        let listening = Command::new("ip")
            .args(["netns", "exec", ns, "ss", "-Htln"])
            .output()
            .unwrap();
        let port = api.rsplit_once(':').unwrap().1;
        assert!(
            String::from_utf8_lossy(&listening.stdout)
                .contains(&format!("{}:{port}", api.rsplit_once(':').unwrap().0)),
            "replica {} does not listen in {ns}: {}",
            h["id"],
            String::from_utf8_lossy(&listening.stdout)
        );
        namespaces.push(ns.to_string());
    }
    namespaces.sort();
    namespaces.dedup();
    assert_eq!(namespaces.len(), 3, "{cluster}");

    // No master or gateway process of its own is left: the nodes run them.
    let procs = cluster["processes"].as_array().expect("processes");
    assert!(procs.iter().all(|p| p["role"] == "node"), "{cluster}");
    assert_eq!(procs.len(), 3, "{cluster}");

    // The group: the three hosted replicas vote, each in its region and partition; the
    // seed is gone.
    let admin = &cluster["admin"];
    let (cert, key, ca) = (
        admin["certificate"].as_str().unwrap(),
        admin["key"].as_str().unwrap(),
        admin["ca"].as_str().unwrap(),
    );
    let via: Vec<&str> = cluster["master_api_addrs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    let out = Command::new(slapos_bin())
        .args(["cluster", "status", "--json", "--via", &via.join(",")])
        .envs(slapos_e2e::agent::master_tls_env(&cluster))
        .output()
        .unwrap();
    let status: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
    assert!(status["leader"].is_u64(), "{status}");
    let members = status["members"].as_array().unwrap();
    assert_eq!(members.len(), 3, "{status}");
    for (m, h) in members.iter().zip(hosted) {
        assert_eq!(m["id"], h["id"], "{status}");
        assert_eq!(m["role"], "voter", "{status}");
        assert_eq!(m["region"], h["region"], "{status}");
        assert_eq!(
            m["hosted_by"],
            format!(
                "{}/{}",
                h["computer"].as_str().unwrap(),
                h["partition"].as_str().unwrap()
            ),
            "{status}"
        );
    }

    // The gateways are those in the partitions, and serve SLAP to the admin only.
    let urls: Vec<&str> = cluster["gateway_urls"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u.as_str().unwrap())
        .collect();
    let hosted_urls: Vec<&str> = hosted
        .iter()
        .map(|h| h["gateway_url"].as_str().unwrap())
        .collect();
    assert_eq!(urls, hosted_urls);
    for url in &urls {
        let path = "getFullComputerInformation?computer_id=COMP-NONE";
        let (status, body) = https_get(url, path, ca, Some((cert, key)));
        assert_eq!(status, 404, "{url}: {body}");
        assert_eq!(https_get(url, path, ca, None).0, 403, "{url}");
    }
    // The nodes talk to them, and the sample instance runs.
    for node in nodes {
        let cfg = std::fs::read_to_string(node["config"].as_str().unwrap()).unwrap();
        assert!(
            cfg.contains(&format!("master_url = {}", urls.join(" "))),
            "{cfg}"
        );
    }
    // Every release a node installs came over HTTPS from a gateway of the group (its
    // address names the manifest's digest); none is a path of this machine, so nodes on
    // other machines would install them the same way.
    for node in nodes {
        let computer = node["computer_id"].as_str().unwrap();
        let path = format!("getFullComputerInformation?computer_id={computer}");
        let (status, body) = https_get(urls[0], &path, ca, Some((cert, key)));
        assert_eq!(status, 200, "{body}");
        let marker = "<string>_software_release</string><string>";
        let releases: Vec<&str> = body
            .match_indices(marker)
            .map(|(i, _)| {
                let rest = &body[i + marker.len()..];
                &rest[..rest.find('<').unwrap()]
            })
            .collect();
        assert!(!releases.is_empty(), "{body}");
        for r in releases {
            assert!(
                r.starts_with("https://")
                    && slapos_proto::release_address::content_address(r).is_some(),
                "{computer} installs {r}"
            );
        }
    }
    // Each replica and its gateway run in partitions of their own, as two Unix users:
    // the gateway's user (what faces every client) reads its own key, not the replica's
    // key nor its Raft data.
    for h in hosted {
        gateway_cannot_read_its_replica(h, nodes);
    }
    let node_cfg = nodes[0]["config"].as_str().unwrap().to_string();
    let deadline = Instant::now() + Duration::from_secs(120);
    while slapos_e2e::agent::running_pid(&node_cfg, "hello-on-watch").is_none() {
        assert!(
            Instant::now() < deadline,
            "the sample instance is not running: {}",
            slapos_e2e::agent::node_status(&node_cfg)
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    a_request_runs_within_seconds_on_nodes_with_slapos_periods(&cluster, &urls);
    let users: Vec<String> = nodes
        .iter()
        .filter_map(|n| n["users"].as_str().map(str::to_string))
        .collect();

    // SIGTERM stops everything, the services in partitions included, the node agents on
    // their own (none had to be killed).
    terminate(&mut up, Duration::from_secs(60));
    stopped_on_their_own(&err);
    slapos_e2e::assert_no_process_naming(&cluster_dir);
    for u in users {
        let id = Command::new("id").arg(format!("{u}u0")).output().unwrap();
        assert!(!id.status.success(), "partition users left behind");
    }
    let list = Command::new("ip").args(["netns", "list"]).output().unwrap();
    for ns in namespaces {
        assert!(
            !String::from_utf8_lossy(&list.stdout).contains(&ns),
            "namespace {ns} left behind"
        );
    }
}

/// From a directory under one that other users may not enter (0700, as `mktemp -d` and
/// `/root` are), where partition users could not reach their partitions: `slapos up` says
/// at once where the partitions and releases go instead (a directory of this run under
/// /var/lib/slapos-up), and the bootstrap goes past the first hosted replica, where it
/// used to wait out 300 s. Then a SIGTERM while it is still bootstrapping stops it at
/// once, and nothing of the run is left: no process naming its directories, no
/// namespace, no partition user, no partitions' directory.
#[test]
fn up_under_a_closed_parent_hosts_its_partitions_within_reach_and_stops_on_sigterm_while_bootstrapping(
) {
    assert!(
        slapos_e2e::agent::is_root(),
        "runs as root (partition users, namespaces)"
    );
    // closed as `mktemp -d` makes it
    let dir = tempfile::tempdir().expect("tempdir");
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    }
    let cluster_dir = dir.path().join("c");
    let mut up = Command::new(slapos_bin())
        .args(["up", "--dir"])
        .arg(&cluster_dir)
        .env_remove("RUST_BACKTRACE")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start slapos up");
    let pid = up.id();
    let (out, err) = gather(&mut up);
    let _stop = StopOnDrop(up.id());
    let mut wait_for = |text: &str, within: Duration| {
        let deadline = Instant::now() + within;
        while !out.text().contains(text) {
            if let Ok(Some(status)) = up.try_wait() {
                panic!(
                    "slapos up exited ({status}) before saying {text:?}: {}\n{}",
                    out.text(),
                    err.text()
                );
            }
            assert!(
                Instant::now() < deadline,
                "slapos up did not say {text:?} within {} s: {}\n{}",
                within.as_secs(),
                out.text(),
                err.text()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    wait_for("bootstrapping", Duration::from_secs(180));
    // Said first, before anything started: why, and where the partitions go.
    let partitions = std::path::PathBuf::from(format!("/var/lib/slapos-up/{pid}"));
    let said = out.text();
    let first = said.lines().next().unwrap_or_default();
    assert!(
        first.contains(&format!(
            "{} is under {}",
            cluster_dir.display(),
            dir.path().display()
        )) && first.contains("other users may not enter")
            && first.contains(&partitions.display().to_string()),
        "{said}"
    );
    assert!(partitions.is_dir(), "{said}");
    // The partitions' users reach them: the first hosted replica comes to vote.
    wait_for("replica 2 votes", Duration::from_secs(240));
    let cfg = std::fs::read_to_string(cluster_dir.join("node-1/etc/slapos.cfg")).unwrap();
    assert!(
        cfg.contains(&format!(
            "instance_root = {}/node-1/inst",
            partitions.display()
        )),
        "{cfg}"
    );

    // SIGTERM while it bootstraps (replicas 3 and 4 to go) stops it, and cleans up.
    terminate(&mut up, Duration::from_secs(90));
    std::thread::sleep(Duration::from_millis(200));
    let said = out.text();
    assert!(
        !said.contains("the seed replica left"),
        "the bootstrap had ended: {said}"
    );
    assert!(said.trim_end().ends_with("stopping"), "{said}");
    stopped_on_their_own(&err);
    slapos_e2e::assert_no_process_naming(&cluster_dir);
    slapos_e2e::assert_no_process_naming(&partitions);
    let prefix = format!("slapos-up-{pid}-");
    let namespaces = Command::new("ip").args(["netns", "list"]).output().unwrap();
    let left: Vec<&str> = std::str::from_utf8(&namespaces.stdout)
        .unwrap()
        .lines()
        .filter(|l| l.starts_with(&prefix))
        .collect();
    assert!(left.is_empty(), "namespaces left behind: {left:?}");
    let users = format!("up{:04x}n", pid & 0xffff);
    let passwd = Command::new("getent").arg("passwd").output().unwrap();
    let left: Vec<&str> = std::str::from_utf8(&passwd.stdout)
        .unwrap()
        .lines()
        .filter(|l| l.starts_with(&users))
        .collect();
    assert!(left.is_empty(), "partition users left behind: {left:?}");
    assert!(!partitions.exists(), "{} left behind", partitions.display());
}

/// Issue 21: the nodes keep SlapOS's periods (300 s: `slapos up` does not shorten them),
/// and yet an instance requested on a node that never ran the sample (its release
/// supplied at the same time) runs within seconds: the node's long poll wakes it. The
/// bound is generous (60 s), far below the period that would otherwise deploy it.
fn a_request_runs_within_seconds_on_nodes_with_slapos_periods(
    cluster: &serde_json::Value,
    urls: &[&str],
) {
    let nodes = cluster["nodes"].as_array().expect("nodes");
    for node in nodes {
        let cfg = std::fs::read_to_string(node["config"].as_str().unwrap()).unwrap();
        assert!(
            !cfg.contains("software_interval") && !cfg.contains("instance_interval"),
            "the node's periods are shortened: {cfg}"
        );
    }
    let admin = &cluster["admin"];
    let path = |k: &str| std::path::PathBuf::from(admin[k].as_str().unwrap());
    let (cert, key, ca) = (path("certificate"), path("key"), path("ca"));
    let urls: Vec<String> = urls.iter().map(|u| u.to_string()).collect();
    let client = slapgrid::client::SlapClient::new(&urls, Some((&cert, &key)), Some(&ca))
        .expect("the admin's SLAP client");
    let software = cluster["sample"]["software_release"].as_str().unwrap();
    let second = &nodes[1];
    let (computer, cfg) = (
        second["computer_id"].as_str().unwrap(),
        second["config"].as_str().unwrap(),
    );
    assert!(slapos_e2e::agent::running_pid(cfg, "hello-on-watch").is_none());
    let asked = Instant::now();
    client
        .supply(software, computer, "available")
        .expect("supply the sample to the second node");
    client
        .request_instance(
            software,
            "hello-2",
            &[("name", "issue 21")],
            &[("computer_guid", computer)],
            "started",
        )
        .expect("request a second sample");
    let deadline = asked + Duration::from_secs(60);
    while slapos_e2e::agent::running_pid(cfg, "hello-on-watch").is_none() {
        assert!(
            Instant::now() < deadline,
            "the second sample does not run 60 s after its request: {}",
            slapos_e2e::agent::node_status(cfg)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    eprintln!(
        "the second sample runs {} ms after its request",
        asked.elapsed().as_millis()
    );
    // What the node is doing shows in `slapos node status`.
    let status = Command::new(slapos_bin())
        .args(["node", "status", "--cfg", cfg])
        .output()
        .expect("slapos node status");
    let status = String::from_utf8_lossy(&status.stdout);
    assert!(status.contains("master: long poll on https://"), "{status}");
}

/// No process of the cluster had to be killed when `slapos up` stopped.
fn stopped_on_their_own(err: &Said) {
    // what the pipe still held when the process exited
    std::thread::sleep(Duration::from_millis(200));
    let err = err.text();
    assert!(!err.contains("did not stop within"), "{err}");
}

/// `cmd` as the Unix user `user` (`runuser`): its output.
fn as_user(user: &str, cmd: &[&str]) -> std::process::Output {
    Command::new("runuser")
        .args(["-u", user, "--"])
        .args(cmd)
        .output()
        .expect("runuser")
}

/// The real uid of process `pid` and its command line.
fn uid_and_command(pid: u64) -> (u32, String) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let uid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|u| u.parse().ok())
        .unwrap_or_else(|| panic!("no Uid in /proc/{pid}/status"));
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
    let command = String::from_utf8_lossy(&cmdline).replace('\0', " ");
    (uid, command)
}

/// The hosted replica `h` (cluster.json) and its gateway: two partitions, two users,
/// two processes; the gateway's user cannot read the replica's key or data, and reads
/// its own key.
fn gateway_cannot_read_its_replica(h: &serde_json::Value, nodes: &[serde_json::Value]) {
    let id = h["id"].as_u64().unwrap();
    let node = nodes
        .iter()
        .find(|n| n["computer_id"] == h["computer"])
        .expect("the node of a hosted replica");
    let users = node["users"].as_str().expect("partition users (root)");
    let inst = std::path::Path::new(node["dir"].as_str().unwrap()).join("inst");
    let (replica_part, gateway_part) = (
        h["partition"].as_str().unwrap(),
        h["gateway_partition"].as_str().expect("gateway_partition"),
    );
    assert_ne!(replica_part, gateway_part, "{h}");
    let user_of = |part: &str| format!("{users}u{}", part.trim_start_matches("slappart"));
    let gateway_user = user_of(gateway_part);
    let replica_dir = inst.join(replica_part);
    let gateway_dir = inst.join(gateway_part);
    let replica_key = replica_dir.join(format!("etc/tls/replica-{id}.key"));
    let replica_data = replica_dir.join("srv/master");
    assert!(replica_key.is_file(), "{} missing", replica_key.display());
    assert!(replica_data.is_dir(), "{} missing", replica_data.display());
    for (what, cmd) in [
        ("the replica's key", ["cat", replica_key.to_str().unwrap()]),
        ("the replica's data", ["ls", replica_data.to_str().unwrap()]),
    ] {
        let out = as_user(&gateway_user, &cmd);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && err.contains("Permission denied"),
            "{gateway_user} (gateway of replica {id}) read {what}: {}{err}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
    let own_key = gateway_dir.join(format!("etc/tls/gateway-r{id}.key"));
    let out = as_user(&gateway_user, &["cat", own_key.to_str().unwrap()]);
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains("PRIVATE KEY"),
        "{gateway_user} cannot read its own key: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !gateway_dir
            .join(format!("etc/tls/replica-{id}.key"))
            .exists(),
        "a replica key in the gateway's partition"
    );
    // The two processes run as the two users.
    let cfg = node["config"].as_str().unwrap();
    let status = slapos_e2e::agent::node_status(cfg);
    let pid_of = |name: &str, group: &str| {
        status
            .as_array()
            .and_then(|a| {
                a.iter()
                    .find(|p| p["name"] == name && p["group"] == group && p["state"] == "Running")
            })
            .and_then(|p| p["pid"].as_u64())
            .unwrap_or_else(|| panic!("no {name} running in {group}: {status}"))
    };
    let (replica_uid, replica_cmd) = uid_and_command(pid_of("replica-on-watch", replica_part));
    let (gateway_uid, gateway_cmd) = uid_and_command(pid_of("gateway-on-watch", gateway_part));
    assert!(replica_cmd.contains("master run"), "{replica_cmd}");
    assert!(gateway_cmd.contains("gateway run"), "{gateway_cmd}");
    assert_eq!(
        (replica_uid, gateway_uid),
        (
            slapos_e2e::agent::uid_of(&user_of(replica_part)),
            slapos_e2e::agent::uid_of(&gateway_user)
        )
    );
    assert_ne!(replica_uid, gateway_uid);
}

/// SIGTERM to `slapos up` (its Ctrl-C), which must exit successfully within `within`.
fn terminate(up: &mut std::process::Child, within: Duration) {
    Command::new("kill")
        .arg(up.id().to_string())
        .status()
        .unwrap();
    let deadline = Instant::now() + within;
    let status = loop {
        if let Ok(Some(s)) = up.try_wait() {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "slapos up did not stop within {} s",
            within.as_secs()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(status.success(), "{status}");
}

/// A replica that cannot start (its port taken by another program) makes `slapos up` fail
/// at once, naming the replica and what its log said, instead of waiting out the join's
/// deadline; nothing it started stays behind.
#[test]
fn up_fails_at_once_naming_a_replica_that_could_not_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Twelve consecutive ports: replica 2's Raft port (base + 4) is held by this test.
    let (base, _held) = (0..200)
        .find_map(|_| {
            let base = slapos_harness::free_port().ok()?;
            let held = std::net::TcpListener::bind(("127.0.0.1", base + 4)).ok()?;
            (0..12u16)
                .filter(|k| *k != 4)
                .all(|k| std::net::TcpListener::bind(("127.0.0.1", base + k)).is_ok())
                .then_some((base, held))
        })
        .expect("twelve free ports");
    let out = Command::new(slapos_bin())
        .args(["up", "--insecure", "--replicas", "3", "--nodes", "0"])
        .args(["--base-port", &base.to_string(), "--dir"])
        .arg(dir.path().join("c"))
        .env_remove("RUST_BACKTRACE")
        .output()
        .expect("run slapos up");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    // The replica's own exit, not the join's deadline (60 s), ended the start.
    assert!(err.contains("replica 2 exited"), "{err}");
    assert!(
        err.contains(&format!("cannot listen on 127.0.0.1:{}", base + 4)),
        "{err}"
    );
    let c = dir.path().join("c");
    assert!(!c.join("cluster.json").exists());
    for port in [base, base + 1, base + 5] {
        assert!(
            std::net::TcpListener::bind(("127.0.0.1", port)).is_ok(),
            "port {port} still taken: a process of the failed start stayed"
        );
    }
}

/// `ip netns exec <ns> ip -6 rule <verb> to <prefix> blackhole`: packets from the
/// namespace to that /64 dropped (or no longer).
fn blackhole(ns: &str, verb: &str, prefix: &str) {
    let out = Command::new("ip")
        .args(["netns", "exec", ns, "ip", "-6", "rule", verb, "to", prefix])
        .args(["blackhole", "pref", "90"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `slapos up --regions` with the repository's example (Lille, Montréal and Tokyo, 90 to
/// 230 ms apart): each node in its region behind the WAN emulator, one replica per
/// region, Raft timers chosen for the largest round trip (and the group's own
/// measurements find them fitting), each node reading first from its own region's
/// gateway; with Tokyo cut off from the others, a request on the Montréal node still
/// deploys there.
#[test]
fn up_with_regions_puts_a_replica_per_region_and_deploys_while_one_is_cut_off() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let regions_file = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples/regions.toml")
        .canonicalize()
        .expect("examples/regions.toml");
    let cluster_dir = dir.path().join("c");
    let Started {
        mut up,
        out,
        cluster,
        _stop,
        ..
    } = start_up(
        &["--regions".as_ref(), regions_file.as_os_str()],
        &cluster_dir,
        Duration::from_secs(600),
    );
    assert!(
        out.text()
            .contains("Raft heartbeat 690 ms, elections after 3450 to 6900 ms"),
        "{}",
        out.text()
    );
    let nodes = cluster["nodes"].as_array().expect("nodes").clone();
    let hosted = cluster["hosted_replicas"]
        .as_array()
        .expect("hosted")
        .clone();
    let region_of = |n: &serde_json::Value| n["region"].as_str().unwrap().to_string();
    let node_regions: Vec<String> = nodes.iter().map(region_of).collect();
    assert_eq!(node_regions, ["lille", "montreal", "tokyo"], "{cluster}");
    let mut hosted_regions: Vec<String> = hosted.iter().map(region_of).collect();
    hosted_regions.sort();
    assert_eq!(hosted_regions, ["lille", "montreal", "tokyo"], "{cluster}");
    // Each node reads first from the gateway of its own region.
    for node in &nodes {
        let own = hosted
            .iter()
            .find(|h| h["region"] == node["region"])
            .expect("a replica in each node's region");
        let cfg = std::fs::read_to_string(node["config"].as_str().unwrap()).unwrap();
        let url = own["gateway_url"].as_str().unwrap();
        assert!(
            cfg.contains(&format!("master_url = {url} ")),
            "{} does not read from {url} first: {cfg}",
            node["computer_id"]
        );
    }

    // The group runs with the chosen timers, and what its leader measures agrees: each
    // round trip at least the emulator's, none too long for the timers.
    let via: Vec<&str> = cluster["master_api_addrs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    let matrix_rtt = |a: &str, b: &str| -> f64 {
        let pair = |x: &str, y: &str| (a == x && b == y) || (a == y && b == x);
        match () {
            _ if a == b => 0.0,
            _ if pair("lille", "montreal") => 90.0,
            _ if pair("montreal", "tokyo") => 150.0,
            _ => 230.0,
        }
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        let out = Command::new(slapos_bin())
            .args(["cluster", "status", "--json", "--via", &via.join(",")])
            .envs(slapos_e2e::agent::master_tls_env(&cluster))
            .output()
            .unwrap();
        let status: serde_json::Value =
            serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null);
        let measured = status["members"].as_array().is_some_and(|m| {
            m.iter()
                .filter(|m| m["id"] != status["leader"])
                .all(|m| m["rtt_ms"].is_f64())
        });
        if measured {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "no leader measured its round trips: {status} {}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    assert_eq!(status["timers"]["heartbeat_ms"], 690, "{status}");
    assert_eq!(
        status["timers"]["election_timeout_min_ms"], 3450,
        "{status}"
    );
    let members = status["members"].as_array().unwrap();
    let leader = members
        .iter()
        .find(|m| m["id"] == status["leader"])
        .expect("the leader is a member");
    let leader_region = leader["region"].as_str().unwrap();
    for m in members.iter().filter(|m| m["id"] != status["leader"]) {
        let rtt = m["rtt_ms"].as_f64().unwrap();
        let expected = matrix_rtt(leader_region, m["region"].as_str().unwrap());
        assert!(rtt >= expected * 0.95, "{rtt} ms < {expected} ms: {status}");
    }
    let warnings = status["warnings"].as_array().unwrap();
    assert!(
        !warnings
            .iter()
            .any(|w| w.as_str().unwrap().contains("round trip")),
        "{status}"
    );

    // Tokyo cut off, both ways (routes of the namespaces; the emulator carries the rest).
    let ns = |n: &serde_json::Value| n["netns"].as_str().unwrap().to_string();
    let prefix = |n: &serde_json::Value| {
        let (net, _) = n["address"].as_str().unwrap().rsplit_once("::").unwrap();
        format!("{net}::/64")
    };
    let tokyo = &nodes[2];
    let cuts: Vec<(String, String)> = nodes[..2]
        .iter()
        .flat_map(|n| [(ns(n), prefix(tokyo)), (ns(tokyo), prefix(n))])
        .collect();
    let tokyo_gateway = hosted.iter().find(|h| h["region"] == "tokyo").unwrap()["gateway_url"]
        .as_str()
        .unwrap()
        .to_string();
    // curl's exit code from the Montréal node to Tokyo's gateway (0: it answered).
    let reach_tokyo = || {
        Command::new("ip")
            .args([
                "netns",
                "exec",
                &ns(&nodes[1]),
                "curl",
                "-sk",
                "-o",
                "/dev/null",
            ])
            .args(["--max-time", "5", &tokyo_gateway])
            .status()
            .unwrap()
            .code()
    };
    assert_eq!(
        reach_tokyo(),
        Some(0),
        "Tokyo's gateway answers before the cut"
    );
    for (ns, p) in &cuts {
        blackhole(ns, "add", p);
    }
    assert_ne!(
        reach_tokyo(),
        Some(0),
        "Tokyo's gateway answers through the cut"
    );
    // A second sample on the Montréal node deploys through Montréal's gateway.
    let admin = &cluster["admin"];
    let path = |k: &str| std::path::PathBuf::from(admin[k].as_str().unwrap());
    let (cert, key, ca) = (path("certificate"), path("key"), path("ca"));
    let montreal = &nodes[1];
    let own = hosted.iter().find(|h| h["region"] == "montreal").unwrap()["gateway_url"]
        .as_str()
        .unwrap()
        .to_string();
    let client = slapgrid::client::SlapClient::new(&[own], Some((&cert, &key)), Some(&ca))
        .expect("the admin's SLAP client");
    let software = cluster["sample"]["software_release"].as_str().unwrap();
    let (computer, cfg) = (
        montreal["computer_id"].as_str().unwrap(),
        montreal["config"].as_str().unwrap(),
    );
    client
        .supply(software, computer, "available")
        .expect("supply the sample to the Montréal node");
    client
        .request_instance(
            software,
            "hello-montreal",
            &[("name", "issue 19")],
            &[("computer_guid", computer)],
            "started",
        )
        .expect("request a sample in Montréal while Tokyo is cut off");
    let deadline = Instant::now() + Duration::from_secs(180);
    while slapos_e2e::agent::running_pid(cfg, "hello-on-watch").is_none() {
        assert!(
            Instant::now() < deadline,
            "the Montréal sample does not run with Tokyo cut off: {}",
            slapos_e2e::agent::node_status(cfg)
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    for (ns, p) in &cuts {
        blackhole(ns, "del", p);
    }
    let namespaces: Vec<String> = nodes.iter().map(ns).collect();
    terminate(&mut up, Duration::from_secs(90));
    slapos_e2e::assert_no_process_naming(&cluster_dir);
    let list = Command::new("ip").args(["netns", "list"]).output().unwrap();
    for ns in namespaces {
        assert!(
            !String::from_utf8_lossy(&list.stdout).contains(&ns),
            "namespace {ns} left behind"
        );
    }
}
