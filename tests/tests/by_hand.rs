//! The guide's path (`docs/own-machines.md`), by hand, without `slapos up`: three nodes,
//! each a network namespace of its own (its own IPv6 /64, a region) with its own
//! directory tree, and the operator's machine (the seed replica and gateway) in the root
//! namespace. Every file comes from `docs/examples/` with its addresses and paths
//! replaced; every step is the command the guide gives. The nodes share no file with the
//! operator's machine: they fetch every release over HTTPS, verified against the group's
//! CA. Then bootstrap moves the master into the nodes' partitions and retires the seed,
//! the nodes are pointed at the hosted gateways, the admin publishes the sample release
//! and a person's `slapos request` gets its connection parameters.

use slapos_e2e::agent::{is_root, text};
use slapos_e2e::guide::example;
use slapos_e2e::slapos_bin;
use slapos_harness::free_port;
use slapos_operator::netns::Network;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Processes of the test (the seed's, the node agents), killed on drop.
struct Procs(Vec<Child>);

impl Drop for Procs {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A node: its namespace, its configuration and its users' prefix.
struct Node {
    ns: String,
    cfg: PathBuf,
    users: String,
    partitions: usize,
}

/// The nodes, torn down on drop (after their agents are killed, before the namespaces
/// go): services stopped, whatever their users run killed, users removed.
struct Nodes(Vec<Node>);

impl Drop for Nodes {
    fn drop(&mut self) {
        for n in &self.0 {
            let _ = Command::new(slapos_bin())
                .args(["node", "shutdown", "--cfg"])
                .arg(&n.cfg)
                .output();
            let supervisor = format!("node supervisord --cfg {}", n.cfg.display());
            let _ = Command::new("pkill")
                .args(["-KILL", "-f", &supervisor])
                .output();
            for user in (0..n.partitions)
                .map(|i| format!("{}u{i}", n.users))
                .chain([format!("{}s", n.users)])
            {
                let _ = Command::new("pkill").args(["-KILL", "-u", &user]).output();
            }
            let _ = Command::new("ip")
                .args(["netns", "exec", &n.ns])
                .arg(slapos_bin())
                .args(["node", "unformat", "--cfg"])
                .arg(&n.cfg)
                .output();
        }
    }
}

/// `slapos <args>` with the operator's certificate for the master API.
fn slapos(args: &[&str], operator: &[(&str, PathBuf)]) -> Output {
    Command::new(slapos_bin())
        .args(args)
        .envs(operator.iter().map(|(k, v)| (*k, v.as_os_str())))
        .env_remove("RUST_BACKTRACE")
        .output()
        .unwrap()
}

fn ok(out: Output, what: &str) -> String {
    assert!(out.status.success(), "{what}: {}", text(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn in_ns(ns: &str) -> Command {
    let mut c = Command::new("ip");
    c.args(["netns", "exec", ns]).arg(slapos_bin());
    c
}

fn spawn(mut c: Command, log: &Path) -> Child {
    c.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap()
}

fn wait_port(addr: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(addr).is_err() {
        assert!(Instant::now() < deadline, "{addr} never listened");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The value after `prefix` on a line of `said`.
fn line_after<'a>(said: &'a str, prefix: &str) -> &'a str {
    said.lines()
        .find_map(|l| l.trim_start().strip_prefix(prefix))
        .unwrap_or_else(|| panic!("no line {prefix:?} in {said}"))
        .trim()
}

#[test]
fn a_group_set_up_by_hand_on_three_machines_that_share_no_file() {
    if !is_root() {
        eprintln!("skipped: network namespaces and partition users need root");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().to_path_buf();
    {
        use std::os::unix::fs::PermissionsExt;
        // Partition users traverse their node's tree.
        std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let net = Network::create_tagged("up", 3).expect("network namespaces");
    let mut nodes = Nodes(Vec::new());
    let mut procs = Procs(Vec::new());
    let hv6 = net.harness_v6();
    let operator_dir = root.join("operator");
    std::fs::create_dir_all(&operator_dir).unwrap();
    let at = |p: &str| operator_dir.join(p).display().to_string();

    // 1. The seed: a group of one and its authority, first without [tls].
    let (raft, api, gwp) = (
        free_port().unwrap(),
        free_port().unwrap(),
        free_port().unwrap(),
    );
    let api_addr = format!("[{hv6}]:{api}");
    let replica_text = example(
        "replica.toml",
        &[
            ("[2001:db8:1::10]:7101", format!("[{hv6}]:{raft}")),
            ("[2001:db8:1::10]:7201", api_addr.clone()),
            (
                "[2001:db8:1::10]:9101",
                format!("127.0.0.1:{}", free_port().unwrap()),
            ),
            ("/srv/slapos/master-1", at("master-1")),
            ("/etc/slapos/master/replica-1.crt", at("tls/replica-1.crt")),
            ("/etc/slapos/master/replica-1.key", at("tls/replica-1.key")),
            ("/etc/slapos/ca.pem", at("tls/ca.pem")),
        ],
    );
    let replica_cfg = operator_dir.join("replica.toml");
    let first = &replica_text[..replica_text.find("\n[tls]").unwrap()];
    std::fs::write(&replica_cfg, first).unwrap();
    let cfg_arg = replica_cfg.to_str().unwrap();
    ok(
        slapos(&["master", "init", "--config", cfg_arg], &[]),
        "master init",
    );
    let mut seed = Command::new(slapos_bin());
    seed.args(["master", "run", "--config", cfg_arg]);
    let mut replica = spawn(seed, &operator_dir.join("replica-plain.log"));
    wait_port(&api_addr);
    let tls = operator_dir.join("tls");
    std::fs::create_dir_all(&tls).unwrap();
    let ca = tls.join("ca.pem");
    let pem = ok(
        slapos(&["cluster", "ca", "export", "--via", &api_addr], &[]),
        "ca export",
    );
    std::fs::write(&ca, pem).unwrap();
    let issue = |identity: &str, extra: &[&str]| {
        let mut args = vec![
            "cluster",
            "ca",
            "issue",
            "--via",
            &api_addr,
            "--identity",
            identity,
            "--out",
            tls.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        ok(slapos(&args, &[]), identity);
    };
    let v6 = hv6.to_string();
    issue("replica:1", &["--ip", &v6]);
    issue("gateway:lille", &["--ip", &v6]);
    issue("operator:alice", &[]);
    let _ = replica.kill();
    let _ = replica.wait();
    // The [tls] section back; from now on the master API admits only the group's own.
    std::fs::write(&replica_cfg, &replica_text).unwrap();
    let mut seed = Command::new(slapos_bin());
    seed.args(["master", "run", "--config", cfg_arg]);
    let replica = spawn(seed, &operator_dir.join("replica.log"));
    let replica_pid = replica.id();
    procs.0.push(replica);
    wait_port(&api_addr);
    let operator = [
        ("SLAPOS_MASTER_TLS_CERT", tls.join("operator-alice.crt")),
        ("SLAPOS_MASTER_TLS_KEY", tls.join("operator-alice.key")),
        ("SLAPOS_MASTER_TLS_CA", ca.clone()),
    ];
    let deadline = Instant::now() + Duration::from_secs(30);
    while !slapos(&["cluster", "status", "--via", &api_addr], &operator)
        .status
        .success()
    {
        assert!(
            Instant::now() < deadline,
            "the seed does not serve over mTLS"
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    // 2. The seed gateway (with a release store) and the admin.
    let gw_listen = format!("[{hv6}]:{gwp}");
    let gw_text = example(
        "gateway.toml",
        &[
            ("[2001:db8:1::10]:8443", gw_listen.clone()),
            (
                r#"["[2001:db8:1::10]:7201", "[2001:db8:2::10]:7201", "[2001:db8:3::10]:7201"]"#,
                format!("[{api_addr:?}]"),
            ),
            (
                "/etc/slapos/gateway/gateway-lille.crt",
                at("tls/gateway-lille.crt"),
            ),
            (
                "/etc/slapos/gateway/gateway-lille.key",
                at("tls/gateway-lille.key"),
            ),
            ("/etc/slapos/ca.pem", ca.display().to_string()),
            ("/srv/slapos/releases", at("releases")),
        ],
    );
    let gw_cfg = operator_dir.join("gateway.toml");
    std::fs::write(&gw_cfg, gw_text).unwrap();
    let mut gw = Command::new(slapos_bin());
    gw.args(["gateway", "run", "--config"]).arg(&gw_cfg);
    let gateway = spawn(gw, &operator_dir.join("gateway.log"));
    let gateway_pid = gateway.id();
    procs.0.push(gateway);
    let seed_url = format!("https://{gw_listen}/");
    wait_port(&gw_listen);
    ok(
        slapos(
            &[
                "gateway",
                "check",
                "--url",
                &seed_url,
                "--ca",
                ca.to_str().unwrap(),
            ],
            &[],
        ),
        "gateway check",
    );
    let alice_dir = root.join("alice");
    ok(
        slapos(
            &[
                "user",
                "add",
                "--via",
                &api_addr,
                "--person",
                "alice",
                "--admin",
                "--gateway",
                &seed_url,
                "--out",
                alice_dir.to_str().unwrap(),
            ],
            &operator,
        ),
        "user add",
    );
    let client_cfg = alice_dir.join("slapos-client.cfg");
    let (alice_crt, alice_key) = (
        alice_dir.join("person-alice.crt"),
        alice_dir.join("person-alice.key"),
    );
    let gw_args = |url: &str| -> Vec<String> {
        vec![
            "--gateway".into(),
            url.into(),
            "--cert".into(),
            alice_crt.display().to_string(),
            "--key".into(),
            alice_key.display().to_string(),
            "--ca".into(),
            ca.display().to_string(),
        ]
    };

    // 3. and 4. Each computer registered in its region, a token for it; each node
    // configured from the example, registered with its token, formatted and running.
    let tag = format!("bh{:04x}", std::process::id() & 0xffff);
    let mut node_cfgs = Vec::new();
    for i in 1..=3usize {
        let comp = format!("COMP-{i}");
        let region = format!("region-{i}");
        let mut args: Vec<String> = ["computer", "register"].map(String::from).to_vec();
        args.extend(gw_args(&seed_url));
        args.extend(
            [
                "--id",
                &comp,
                "--region",
                &region,
                "--attribute",
                "partition_sizes=master",
            ]
            .map(String::from),
        );
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        ok(slapos(&args, &[]), "computer register");
        let mut args: Vec<String> = ["token", "create"].map(String::from).to_vec();
        args.extend(gw_args(&seed_url));
        args.extend(["--computer".to_string(), comp.clone()]);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let token = ok(slapos(&args, &[]), "token create").trim().to_string();

        // The node's own tree: nothing of the operator's machine.
        let node_dir = root.join(format!("machine-{i}"));
        for d in ["etc", "run", "log", "soft", "inst"] {
            std::fs::create_dir_all(node_dir.join(d)).unwrap();
        }
        {
            use std::os::unix::fs::PermissionsExt;
            for d in [
                node_dir.clone(),
                node_dir.join("soft"),
                node_dir.join("inst"),
            ] {
                std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o755)).unwrap();
            }
        }
        let n = |p: &str| node_dir.join(p).display().to_string();
        let users = format!("{tag}n{i}");
        let cfg_text = example(
            "slapos.cfg",
            &[
                ("computer_id = COMP-1", format!("computer_id = {comp}")),
                (
                    "master_url = https://gw.lille.example:8443/ https://gw.montreal.example:8443/",
                    format!("master_url = {seed_url}"),
                ),
                ("/etc/opt/slapos/ssl/computer.key", n("etc/computer.key")),
                ("/etc/opt/slapos/ssl/computer.crt", n("etc/computer.crt")),
                ("/etc/opt/slapos/ssl/ca.pem", n("etc/ca.pem")),
                ("/etc/opt/slapos/ssl/partition_pki", n("etc/pki")),
                ("/opt/slapgrid", n("soft")),
                ("/srv/slapgrid", n("inst")),
                ("/opt/slapos/slapgrid-sr.pid", n("run/sr.pid")),
                ("/opt/slapos/slapgrid-cp.pid", n("run/cp.pid")),
                ("/opt/slapos/slapgrid-ur.pid", n("run/ur.pid")),
                ("/opt/slapos/slapos.json", n("etc/slapos.json")),
                (
                    "ipv4_local_network = 10.0.0.0/16",
                    format!("ipv4_local_network = 10.{}.0.0/16", 100 + i),
                ),
                ("partition_amount = 10", "partition_amount = 3".into()),
                (
                    "user_base_name = slapuser",
                    format!("user_base_name = {users}u"),
                ),
                (
                    "software_user = slapsoft",
                    format!("software_user = {users}s"),
                ),
            ],
        );
        let cfg = node_dir.join("etc/slapos.cfg");
        std::fs::write(&cfg, cfg_text).unwrap();
        let ns = net.host_ns(i);
        nodes.0.push(Node {
            ns: ns.clone(),
            cfg: cfg.clone(),
            users,
            partitions: 3,
        });
        let out = in_ns(&ns)
            .args(["node", "register", "--token", &token, "--cfg"])
            .arg(&cfg)
            .arg("--ca")
            .arg(&ca)
            .output()
            .unwrap();
        ok(out, "node register");
        let out = in_ns(&ns)
            .args(["node", "format", "--cfg"])
            .arg(&cfg)
            .output()
            .unwrap();
        ok(out, "node format");
        let mut daemon = in_ns(&ns);
        daemon.args(["node", "daemon", "--cfg"]).arg(&cfg);
        procs
            .0
            .push(spawn(daemon, &node_dir.join(format!("log/daemon-{i}.log"))));
        node_cfgs.push((ns, cfg, node_dir));
    }

    // 5. The master moves into the partitions; the seed retires.
    let release_dir = operator_dir.join("slapos-master");
    let mut args: Vec<String> = ["cluster", "bootstrap", "--via", &api_addr]
        .map(String::from)
        .to_vec();
    args.extend(gw_args(&seed_url));
    args.extend(
        [
            "--computer",
            "COMP-1,COMP-2,COMP-3",
            "--heartbeat-ms",
            "250",
            "--election-timeout-min-ms",
            "1000",
            "--election-timeout-max-ms",
            "2000",
            "--release-dir",
            release_dir.to_str().unwrap(),
            "--client-config",
            client_cfg.to_str().unwrap(),
            "--seed-pid",
            &format!("{replica_pid},{gateway_pid}"),
            "--timeout-secs",
            "240",
        ]
        .map(String::from),
    );
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let said = ok(slapos(&args, &operator), "cluster bootstrap");
    let master_url = line_after(&said, "node agents' slapos.cfg: master_url = ").to_string();
    let hosted_apis = line_after(&said, "operators: slapos cluster status --via ").to_string();
    let hosted: Vec<&str> = master_url.split_whitespace().collect();
    assert_eq!(hosted.len(), 3, "{said}");
    assert!(!hosted.contains(&seed_url.as_str()), "{said}");

    // The seed is gone: its processes stopped, the group made of the hosted replicas.
    for (pid, what) in [(replica_pid, "replica"), (gateway_pid, "gateway")] {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Path::new(&format!("/proc/{pid}")).exists()
            && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .unwrap_or_default()
                .contains(") Z ")
        {
            assert!(Instant::now() < deadline, "the seed {what} still runs");
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    let status = ok(
        slapos(
            &["cluster", "status", "--json", "--via", &hosted_apis],
            &operator,
        ),
        "cluster status",
    );
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    let members = status["members"].as_array().unwrap();
    assert_eq!(members.len(), 3, "{status}");
    assert!(
        members.iter().all(|m| m["id"] != 1 && m["role"] == "voter"),
        "{status}"
    );
    // The admin's configuration now names a hosted gateway.
    let cfg_text = std::fs::read_to_string(&client_cfg).unwrap();
    assert!(
        hosted
            .iter()
            .any(|u| cfg_text.contains(&format!("master_url = {u}"))),
        "{cfg_text}"
    );

    // The one step left to the operator: the nodes pointed at the hosted gateways, each
    // agent restarted on its new configuration.
    for c in procs.0.iter_mut().skip(2) {
        let _ = c.kill();
        let _ = c.wait();
    }
    for (ns, cfg, node_dir) in &node_cfgs {
        let text = std::fs::read_to_string(cfg).unwrap();
        let text = text.replace(
            &format!("master_url = {seed_url}"),
            &format!("master_url = {master_url}"),
        );
        std::fs::write(cfg, text).unwrap();
        let mut daemon = in_ns(ns);
        daemon.args(["node", "daemon", "--cfg"]).arg(cfg);
        procs
            .0
            .push(spawn(daemon, &node_dir.join("log/daemon-after.log")));
    }

    // 6. The admin publishes the sample release; Alice's first instance.
    let hello = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/software/hello");
    let published = ok(
        slapos(
            &[
                "release",
                "publish",
                hello.to_str().unwrap(),
                "--json",
                "--cfg",
                client_cfg.to_str().unwrap(),
            ],
            &[],
        ),
        "release publish",
    );
    let published: serde_json::Value = serde_json::from_str(&published).unwrap();
    let release = published[0]["url"].as_str().unwrap().to_string();
    // On every gateway of the group, under one content address.
    let addresses: Vec<&str> = published
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["url"].as_str().unwrap())
        .collect();
    assert_eq!(addresses.len(), 3, "{published}");
    assert!(
        addresses
            .iter()
            .all(|a| slapos_proto::release_address::content_address(a)
                == slapos_proto::release_address::content_address(&release)),
        "{published}"
    );
    assert!(
        hosted.iter().any(|u| release.starts_with(u)),
        "published to a hosted gateway: {release}"
    );
    let client = |args: &[&str]| {
        let mut all = args.to_vec();
        all.extend(["--cfg", client_cfg.to_str().unwrap()]);
        slapos(&all, &[])
    };
    ok(client(&["supply", &release, "COMP-1"]), "supply");
    let deadline = Instant::now() + Duration::from_secs(180);
    let answer = loop {
        let out = client(&[
            "request",
            "by-hand",
            &release,
            "--node",
            "computer_guid=COMP-1",
            "--parameters",
            "name=by-hand",
            "--json",
        ]);
        if out.status.success() {
            break String::from_utf8_lossy(&out.stdout).into_owned();
        }
        assert_eq!(out.status.code(), Some(2), "request: {}", text(&out));
        assert!(
            Instant::now() < deadline,
            "the instance is not ready: {}",
            text(&out)
        );
        std::thread::sleep(Duration::from_secs(1));
    };
    assert!(answer.contains("hello, by-hand"), "{answer}");

    // Every release a node installed came over HTTPS from a gateway of the group; no
    // path of the operator's machine reached any node.
    let operator_path = operator_dir.display().to_string();
    for (_, cfg, node_dir) in &node_cfgs {
        let text = std::fs::read_to_string(cfg).unwrap();
        assert!(!text.contains(&operator_path), "{text}");
        let mut installed = 0;
        for entry in std::fs::read_dir(node_dir.join("soft")).unwrap().flatten() {
            let Ok(url) = std::fs::read_to_string(entry.path().join(".url")) else {
                continue;
            };
            installed += 1;
            assert!(
                url.starts_with("https://")
                    && slapos_proto::release_address::content_address(&url).is_some(),
                "{} installed {url}",
                cfg.display()
            );
        }
        assert!(installed >= 1, "{}: nothing installed", cfg.display());
    }
    drop(procs);
    drop(nodes);
    drop(net);
}
