//! The node side of `slapos up`: node agents (`slapos node daemon`) formatted into
//! partitions, the sample release supplied to them and one instance of it requested, its
//! connection parameters read once published.
//!
//! Under mTLS each node registers with a one-time token the admin made for its computer
//! (`slapos token create`, then `slapos node register --token`: the key is made on the
//! node), before it formats; the admin supplies and requests with their certificate.
//!
//! As root the partitions get real Unix users (a prefix unique to this cluster, removed
//! with `slapos node unformat` at the end), who must be able to enter every directory
//! above their partitions (`super::dirs`); otherwise they are directories of the current
//! user (slapgrid's standalone mode). As root each node can also run in a
//! network namespace of its own (the self-hosted default of `slapos up`): its agent
//! formats the network there (an IPv6 address of the node's /64 per partition), and its
//! supervisor and partitions run there; otherwise the addresses are loopback.

use super::tls::ClusterTls;
use crate::error::{Context, OperatorError};
use crate::files;
use crate::netns::Network;
use serde::Serialize;
use slapgrid::client::SlapClient;
use slapos_proto::marshal::Value;
use slapos_proto::slap::SoftwareInstance;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

#[derive(Serialize, Clone, Debug)]
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
    /// Where its software and instance roots (`soft`, `inst`) are when not in `dir`
    /// (a directory above it is closed to the partitions' users).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub roots: Option<PathBuf>,
    pub log: PathBuf,
    /// The partitions' user prefix when they are real users (root).
    pub users: Option<String>,
    pub partitions: usize,
}

/// The admin's SLAP client of the cluster (its certificate under mTLS).
pub(crate) fn admin_client(
    urls: &[String],
    tls: Option<&ClusterTls>,
) -> Result<SlapClient, OperatorError> {
    Ok(SlapClient::new(
        urls,
        tls.map(ClusterTls::identity),
        tls.map(|t| t.ca.as_path()),
    )?)
}

/// What the nodes are to be.
pub(crate) struct NodesPlan<'a> {
    pub bin: &'a Path,
    /// Where each node's own files go (`node-<n>`: its configuration, certificates,
    /// pid files, logs).
    pub dir: &'a Path,
    /// Where each node's software and instance roots go (`node-<n>/soft`, `/inst`):
    /// somewhere the partitions' users reach.
    pub roots: &'a Path,
    pub urls: &'a [String],
    pub nodes: usize,
    pub partitions: usize,
    pub tls: Option<&'a ClusterTls>,
    pub net: Option<&'a Network>,
    /// Each node's region by name (`--regions`); else node `n` is in `region-<n>`.
    pub regions: Option<&'a [String]>,
}

/// Writes each node's slapos.cfg, registers it with a token under mTLS, and formats it
/// (which posts the computer). Each node goes into `made` before anything of it is
/// made, so that whoever holds `made` tears it down even if this fails halfway.
pub(crate) async fn format_nodes(
    plan: NodesPlan<'_>,
    made: &mut Vec<NodeInfo>,
) -> Result<(), OperatorError> {
    let NodesPlan {
        bin,
        dir,
        roots,
        urls,
        nodes,
        partitions,
        tls,
        net,
        regions,
    } = plan;
    let admin = match tls {
        Some(_) => Some(admin_client(urls, tls)?),
        None => None,
    };
    let root = slapgrid::process::is_root();
    for n in 1..=nodes {
        let node_dir = dir.join(format!("node-{n}"));
        let node_roots = roots.join(format!("node-{n}"));
        for d in ["etc", "var/run", "var/log"] {
            files::create_dir_all(&node_dir.join(d))?;
        }
        for d in ["soft", "inst"] {
            files::create_dir_all(&node_roots.join(d))?;
        }
        let computer_id = format!("COMP-{n}");
        let netns = net.map(|net| net.host_ns(n));
        let region = match regions.and_then(|r| r.get(n - 1)) {
            Some(name) => name.clone(),
            None => format!("region-{n}"),
        };
        let users = root.then(|| format!("up{:04x}n{n}", std::process::id() & 0xffff));
        let (r, roots_of) = (node_dir.display(), node_roots.display());
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
        // The software and instance periods are left at SlapOS's (300 s): the agent's long
        // poll runs them as soon as the node's view changes (slapgrid/DESIGN.md, "The
        // daemon: woken within a second"); shortening them would only hide its latency.
        let config = node_dir.join("etc/slapos.cfg");
        files::write(
            &config,
            format!(
                "# A node of the local cluster of `slapos up`.\n[slapos]\ncomputer_id = {computer_id}\n{identity}\
                 master_url = {urls}\nsoftware_root = {roots_of}/soft\ninstance_root = {roots_of}/inst\n\
                 root_check = false\npidfile_software = {r}/var/run/sw.pid\n\
                 pidfile_instance = {r}/var/run/cp.pid\npidfile_report = {r}/var/run/ur.pid\n\
                 report_interval = 3600\nformat_interval = 3600\n\n[slapformat]\npartition_amount = {partitions}\n\
                 {user_part}{network_part}create_tap = false\npartition_has_ipv6_range = false\n\
                 computer_xml = {r}/etc/slapos.xml\ncomputer_json = {r}/etc/slapos.json\n",
                urls = urls.join(" "),
            ),
        )?;
        // Partition users must traverse the node's directories (ours).
        if root {
            files::set_mode(&node_dir, 0o755)?;
            files::set_mode(&node_roots, 0o755)?;
        }
        made.push(NodeInfo {
            computer_id: computer_id.clone(),
            region: tls.map(|_| region.clone()),
            address: net.map(|net| net.v6(n).to_string()),
            netns: netns.clone(),
            log: node_dir.join("var/log/daemon.log"),
            roots: (node_roots != node_dir).then(|| node_roots.clone()),
            dir: node_dir,
            config: config.clone(),
            users,
            partitions,
        });
        if let (Some(admin), Some(t)) = (&admin, tls) {
            // The computer first, with its region (a node stands for one): the token then
            // registers the node as this computer.
            let rpc = slap_gateway::client::JsonRpcClient::new(
                &urls[0],
                Some(t.ca.as_path()),
                Some(t.identity()),
            )?;
            rpc.call(
                "slapos.post.v0.compute_node",
                &serde_json::json!({"computer_guid": computer_id, "region": region}),
            )
            .await
            .with_context(|| format!("registering {computer_id} in {region}"))?;
            let token = tokio::task::block_in_place(|| {
                admin.post(
                    "createComputerToken",
                    &[("computer_id", &computer_id), ("ttl", "600")],
                    None,
                )
            })
            .with_context(|| format!("a registration token for {computer_id}"))?;
            let token = String::from_utf8_lossy(&token).trim().to_string();
            run_checked(
                in_netns(bin, netns.as_deref())
                    .args(["node", "register", "--token", &token, "--cfg"])
                    .arg(&config),
                &format!("registering node {n}"),
            )?;
        }
        run_checked(
            in_netns(bin, netns.as_deref())
                .args(["node", "format", "--cfg"])
                .arg(&config),
            &format!("formatting node {n}"),
        )?;
    }
    Ok(())
}

/// Runs `command` to its end; its standard error when it fails.
pub(crate) fn run_checked(command: &mut Command, what: &str) -> Result<(), OperatorError> {
    let program = command.get_program().to_string_lossy().into_owned();
    let out = tokio::task::block_in_place(|| command.output())
        .map_err(|source| OperatorError::Spawn { program, source })?;
    if !out.status.success() {
        return Err(OperatorError::Command {
            what: what.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        });
    }
    Ok(())
}

/// `bin`, inside `netns` when given (`ip netns exec` execs it: the child's pid is its).
pub(crate) fn in_netns(bin: &Path, netns: Option<&str>) -> Command {
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
pub(crate) fn spawn_daemon(bin: &Path, node: &NodeInfo) -> Result<Child, OperatorError> {
    // 0640, root's: the partition users may not read what the agent logs.
    let log =
        slapgrid::node::open_log(&node.log, false).map_err(OperatorError::io("open", &node.log))?;
    let out = log
        .try_clone()
        .map_err(OperatorError::io("open", &node.log))?;
    in_netns(bin, node.netns.as_deref())
        .args(["node", "daemon", "-v", "--cfg"])
        .arg(&node.config)
        .env("RUST_LOG", "info")
        .stdin(std::process::Stdio::null())
        .stdout(out)
        .stderr(log)
        .spawn()
        .map_err(|source| OperatorError::Spawn {
            program: bin.display().to_string(),
            source,
        })
}

/// Stops a node's services and supervisor, and removes its users (root): whatever a
/// partition's user still runs (a promise the stopped agent left, a one-shot, a release
/// being installed) is killed before the users go.
pub(crate) fn teardown(bin: &Path, node: &NodeInfo) {
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

/// Supplies `software` to every node and requests one started instance `title` (a
/// person's request: the master picks the partition).
pub(crate) fn supply_and_request(
    client: &SlapClient,
    software: &str,
    nodes: &[NodeInfo],
    title: &str,
) -> Result<(), OperatorError> {
    for node in nodes {
        client
            .supply(software, &node.computer_id, "available")
            .with_context(|| format!("supplying {software} to {}", node.computer_id))?;
    }
    request(client, software, title)?;
    Ok(())
}

fn request(
    client: &SlapClient,
    software: &str,
    title: &str,
) -> Result<Option<SoftwareInstance>, OperatorError> {
    Ok(client.request_instance(software, title, &[("name", "SlapOS")], &[], "started")?)
}

/// Waits (up to `timeout`) until the instance publishes its connection parameters.
pub(crate) fn wait_connection(
    client: &SlapClient,
    software: &str,
    title: &str,
    timeout: Duration,
) -> Result<Vec<(String, String)>, OperatorError> {
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
            return Err(OperatorError::Timeout(format!(
                "the instance {title} published nothing within {timeout:?}"
            )));
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}
