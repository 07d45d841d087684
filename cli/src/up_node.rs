//! The node side of `slapos up`: node agents (`slapos node daemon`) formatted into
//! partitions, the sample native release of `deploy/software/hello` supplied to them, and
//! one instance of it requested, its connection parameters printed once published.
//!
//! Under mTLS each node registers with a one-time token the admin made for its computer
//! (`slapos token create`, then `slapos node register --token`: the key is made on the
//! node), before it formats; the admin supplies and requests with their certificate.
//!
//! As root the partitions get real Unix users (a prefix unique to this cluster, removed
//! with `slapos node unformat` at the end); otherwise they are directories of the current
//! user (slapgrid's standalone mode). As root each node can also run in a network
//! namespace of its own (the self-hosted default of `slapos up`): its agent formats the
//! network there (an IPv6 address of the node's /64 per partition), and its supervisor
//! and partitions run there; otherwise the addresses are loopback.

use crate::up::UpTls;
use anyhow::{bail, Context, Result};
use serde::Serialize;
use slapgrid::client::SlapClient;
use slapos_proto::marshal::Value;
use slapos_proto::slap::SoftwareInstance;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

const HELLO_MANIFEST: &str = include_str!("../../deploy/software/hello/software.toml");
const HELLO_SCRIPT: &str = include_str!("../../deploy/software/hello/hello.sh");

#[derive(Serialize, Clone)]
pub struct NodeInfo {
    pub computer_id: String,
    /// The region its computer declares (under mTLS, where the admin registers it).
    pub region: Option<String>,
    /// The network namespace the node runs in (its agent, supervisor and partitions),
    /// with its own IPv6 /64 on `eth0`; None: the node shares loopback with the others.
    pub netns: Option<String>,
    /// The node's own IPv6 address in its namespace.
    pub address: Option<String>,
    pub config: PathBuf,
    pub dir: PathBuf,
    pub log: PathBuf,
    /// The partitions' user prefix when they are real users (root).
    pub users: Option<String>,
    pub partitions: usize,
}

/// The admin's SLAP client of the cluster (its certificate under mTLS).
pub fn admin_client(urls: &[String], tls: Option<&UpTls>) -> Result<SlapClient> {
    Ok(SlapClient::new(
        urls,
        tls.map(UpTls::identity),
        tls.map(|t| t.ca.as_path()),
    )?)
}

/// Writes each node's slapos.cfg, registers it with a token under mTLS, and formats it
/// (which posts the computer).
pub fn format_nodes(
    bin: &Path,
    dir: &Path,
    urls: &[String],
    nodes: usize,
    partitions: usize,
    tls: Option<&UpTls>,
    net: Option<&slapos_operator::netns::Network>,
) -> Result<Vec<NodeInfo>> {
    let admin = match tls {
        Some(_) => Some(admin_client(urls, tls)?),
        None => None,
    };
    let root = slapgrid::process::is_root();
    let mut out = Vec::new();
    for n in 1..=nodes {
        let node_dir = dir.join(format!("node-{n}"));
        for d in ["etc", "soft", "inst", "var/run", "var/log"] {
            std::fs::create_dir_all(node_dir.join(d))?;
        }
        let computer_id = format!("COMP-{n}");
        let netns = net.map(|net| net.host_ns(n));
        let region = format!("region-{n}");
        let users = root.then(|| format!("up{:04x}n{n}", std::process::id() & 0xffff));
        let r = node_dir.display();
        let user_part = match &users {
            Some(u) => format!("alter_user = true\nuser_base_name = {u}u\nsoftware_user = {u}s\n"),
            None => "alter_user = false\n".into(),
        };
        let identity = match tls {
            Some(t) => format!(
                "key_file = {r}/etc/computer.key\ncert_file = {r}/etc/computer.crt\n\
                 master_ca_file = {}\ncertificate_repository_path = {r}/etc/certificates\n",
                t.ca.display()
            ),
            None => String::new(),
        };
        // In its own namespace the node formats its network: an IPv6 address of its /64
        // and a local IPv4 per partition, on eth0.
        let network_part = match net {
            Some(_) => format!(
                "alter_network = true\ninterface_name = eth0\nipv4_local_network = 10.{}.0.0/16\n",
                100 + n
            ),
            None => "alter_network = false\n".into(),
        };
        let config = node_dir.join("etc/slapos.cfg");
        std::fs::write(
            &config,
            format!(
                "# A node of the local cluster of `slapos up`.\n[slapos]\ncomputer_id = {computer_id}\n{identity}\
                 master_url = {urls}\nsoftware_root = {r}/soft\ninstance_root = {r}/inst\n\
                 root_check = false\npidfile_software = {r}/var/run/sw.pid\n\
                 pidfile_instance = {r}/var/run/cp.pid\npidfile_report = {r}/var/run/ur.pid\n\
                 software_interval = 5\ninstance_interval = 5\nreport_interval = 3600\n\
                 format_interval = 3600\n\n[slapformat]\npartition_amount = {partitions}\n\
                 {user_part}{network_part}create_tap = false\npartition_has_ipv6_range = false\n\
                 computer_xml = {r}/etc/slapos.xml\ncomputer_json = {r}/etc/slapos.json\n",
                urls = urls.join(" "),
            ),
        )?;
        // Partition users must traverse the cluster directory (only the search bit is
        // added to a directory the user chose; the node's own is ours).
        if root {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir)?.permissions().mode();
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode | 0o711))?;
            std::fs::set_permissions(&node_dir, std::fs::Permissions::from_mode(0o755))?;
        }
        if let (Some(admin), Some(t)) = (&admin, tls) {
            // The computer first, with its region (a node stands for one): the token then
            // registers the node as this computer.
            let rpc = slap_gateway::client::JsonRpcClient::new(
                &urls[0],
                Some(t.ca.as_path()),
                Some(t.identity()),
            )?;
            tokio::runtime::Handle::current()
                .block_on(rpc.call(
                    "slapos.post.v0.compute_node",
                    &serde_json::json!({"computer_guid": computer_id, "region": region}),
                ))
                .with_context(|| format!("registering {computer_id} in {region}"))?;
            let token = admin
                .post(
                    "createComputerToken",
                    &[("computer_id", &computer_id), ("ttl", "600")],
                    None,
                )
                .with_context(|| format!("a registration token for {computer_id}"))?;
            let token = String::from_utf8_lossy(&token).trim().to_string();
            let register = in_netns(bin, netns.as_deref())
                .args(["node", "register", "--token", &token, "--cfg"])
                .arg(&config)
                .output()?;
            if !register.status.success() {
                bail!(
                    "registering node {n} failed: {}",
                    String::from_utf8_lossy(&register.stderr)
                );
            }
        }
        let format = in_netns(bin, netns.as_deref())
            .args(["node", "format", "--cfg"])
            .arg(&config)
            .output()?;
        if !format.status.success() {
            bail!(
                "formatting node {n} failed: {}",
                String::from_utf8_lossy(&format.stderr)
            );
        }
        out.push(NodeInfo {
            computer_id,
            region: tls.map(|_| region),
            address: net.map(|net| net.v6(n).to_string()),
            netns,
            log: node_dir.join("var/log/daemon.log"),
            dir: node_dir,
            config,
            users,
            partitions,
        });
    }
    Ok(out)
}

/// `bin`, inside `netns` when given (`ip netns exec` execs it: the child's pid is its).
pub fn in_netns(bin: &Path, netns: Option<&str>) -> Command {
    match netns {
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns]).arg(bin);
            c
        }
        None => Command::new(bin),
    }
}

/// `slapos node daemon` for a node (in its namespace).
pub fn spawn_daemon(bin: &Path, node: &NodeInfo) -> Result<Child> {
    // 0640, root's: the partition users may not read what the agent logs.
    let log = slapgrid::node::open_log(&node.log, false)?;
    Ok(in_netns(bin, node.netns.as_deref())
        .args(["node", "daemon", "-v", "--cfg"])
        .arg(&node.config)
        .env("RUST_LOG", "info")
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()?)
}

/// Stops a node's services and supervisor, and removes its users (root): whatever a
/// partition's user still runs (a promise the stopped agent left, a one-shot) is killed
/// before the users go.
pub fn teardown(bin: &Path, node: &NodeInfo) {
    let _ = Command::new(bin)
        .args(["node", "shutdown", "--cfg"])
        .arg(&node.config)
        .output();
    // The supervisor answers the shutdown once its services stopped, and exits right
    // after; one still there after a minute (a shutdown that timed out) is killed.
    let supervisor = format!("node supervisord --cfg {}", node.config.display());
    let running = || {
        Command::new("pgrep")
            .args(["-f", &supervisor])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while running() {
        if Instant::now() > deadline {
            let _ = Command::new("pkill")
                .args(["-KILL", "-f", &supervisor])
                .output();
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    if let Some(prefix) = &node.users {
        let users = (0..node.partitions)
            .map(|i| format!("{prefix}u{i}"))
            .chain([format!("{prefix}s")]);
        for user in users {
            let _ = Command::new("pkill").args(["-KILL", "-u", &user]).output();
        }
    }
    if node.users.is_some() {
        let _ = in_netns(bin, node.netns.as_deref())
            .args(["node", "unformat", "--cfg"])
            .arg(&node.config)
            .output();
    }
}

/// Writes the sample release (its artifact's checksum filled in) and returns its URL.
pub fn write_sample_release(dir: &Path) -> Result<String> {
    let release = dir.join("software/hello");
    std::fs::create_dir_all(&release)?;
    let script = release.join("hello.sh");
    std::fs::write(&script, HELLO_SCRIPT)?;
    let sum = slapgrid::digest::sha256_file(&script)?;
    let manifest = release.join("software.toml");
    std::fs::write(&manifest, HELLO_MANIFEST.replace("@HELLO_SHA256@", &sum))?;
    if slapgrid::process::is_root() {
        use std::os::unix::fs::PermissionsExt;
        for d in [dir.join("software"), release.clone()] {
            std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755))?;
        }
        for f in [&script, &manifest] {
            std::fs::set_permissions(f, std::fs::Permissions::from_mode(0o644))?;
        }
    }
    Ok(manifest.display().to_string())
}

/// Supplies `software` to every node and requests one started instance `title` (a
/// person's request: the master picks the partition).
pub fn supply_and_request(
    urls: &[String],
    tls: Option<&UpTls>,
    software: &str,
    nodes: &[NodeInfo],
    title: &str,
) -> Result<SlapClient> {
    let client = admin_client(urls, tls)?;
    for node in nodes {
        client
            .supply(software, &node.computer_id, "available")
            .with_context(|| format!("supplying {software} to {}", node.computer_id))?;
    }
    request(&client, software, title)?;
    Ok(client)
}

fn request(client: &SlapClient, software: &str, title: &str) -> Result<Option<SoftwareInstance>> {
    Ok(client.request_instance(software, title, &[("name", "SlapOS")], &[], "started")?)
}

/// Waits (up to `timeout`) until the instance publishes its connection parameters.
pub fn wait_connection(
    client: &SlapClient,
    software: &str,
    title: &str,
    timeout: Duration,
) -> Result<Vec<(String, String)>> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(instance) = request(client, software, title)? {
            let published: Vec<(String, String)> = instance
                .connection_dict
                .get()
                .map(|d| {
                    d.iter()
                        .filter_map(|(k, v)| match v {
                            Value::Str(s) => Some((k.clone(), s.clone())),
                            _ => None,
                        })
                        .collect()
                })
                .unwrap_or_default();
            if !published.is_empty() {
                return Ok(published);
            }
        }
        if Instant::now() > deadline {
            bail!("the instance {title} published nothing within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}
