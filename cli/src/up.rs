//! `slapos up`: a local cluster of real processes (N master replicas, a gateway beside
//! each) in one directory, described in `D/cluster.json`, until interrupted.
//!
//! Wiring only: configuration files for the replica and gateway commands, the same
//! `slapos master init/run` and `slapos gateway run` processes an operator would start,
//! and the membership calls of `slapos master join`.
//!
//! By default every link is under mTLS, set up as README's "Certificates on every link"
//! tells an operator: the first replica is initialised (which makes the group's
//! authority) and run alone to have the certificates issued (replicas, gateways, the
//! admin), then restarted with its own; the others join over mTLS; the gateways require
//! client certificates; each node registers with a one-time token its owner (the admin)
//! made. `--insecure` keeps everything on plain loopback HTTP/gRPC (tests, debugging).

use anyhow::{bail, Context, Result};
use clap::Args;
use master_client::MasterClient;
use master_replica::node::ReplicaConfig;
use serde::Serialize;
use slap_gateway::server::GatewayConfig;
use slapos_proto::rpc::master::AddReplicaRequest;
use std::fs::File;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

#[derive(Args)]
pub struct UpArgs {
    /// Directory for configurations, data, logs and cluster.json.
    #[arg(long, default_value = "slapos-up")]
    dir: PathBuf,
    /// Master replicas (each with a gateway beside it).
    #[arg(long, default_value_t = 3)]
    replicas: u64,
    /// First port to use; each replica takes four consecutive ports (Raft, API,
    /// metrics, gateway). Default: free ports picked by the system.
    #[arg(long)]
    base_port: Option<u16>,
    /// Node agents (`slapos node daemon`), each formatted into partitions; the first
    /// node gets the sample release and one instance of it. 0: the master group only.
    #[arg(long, default_value_t = 1)]
    nodes: usize,
    /// Partitions per node (self-hosted: at least 3, a replica and its gateway in two of
    /// each node, the sample in a third of the first).
    #[arg(long, default_value_t = 4)]
    partitions: usize,
    /// No TLS anywhere: plain HTTP gateways without client certificates and plain gRPC
    /// between masters (loopback tests and debugging only).
    #[arg(long)]
    insecure: bool,
    /// Run the replicas as plain processes of this command, beside the nodes, instead of
    /// hosting them in partitions (the default, below). Implied by --insecure.
    #[arg(long)]
    unhosted: bool,
    /// Keep the nodes of the self-hosted group on loopback (as root they otherwise run in
    /// network namespaces of their own, each with its own IPv6 /64, joined by a router).
    #[arg(long)]
    loopback: bool,
}

/// The admin's client identity on a cluster under mTLS (`D/tls/`).
#[derive(Clone, Debug)]
pub struct UpTls {
    pub ca: PathBuf,
    pub admin_cert: PathBuf,
    pub admin_key: PathBuf,
    /// `operator:admin`: what the operator presents to the master API (membership,
    /// tokens, status), whichever replicas come and go.
    pub operator_cert: PathBuf,
    pub operator_key: PathBuf,
}

impl UpTls {
    pub fn identity(&self) -> (&Path, &Path) {
        (&self.admin_cert, &self.admin_key)
    }
}

/// The person `slapos up` makes its admin (`[slap] admins`).
const ADMIN: &str = "admin";

#[derive(Serialize)]
struct ProcessInfo {
    role: &'static str,
    id: u64,
    pid: u32,
    config: PathBuf,
    log: PathBuf,
    #[serde(skip_serializing_if = "Option::is_none")]
    data_dir: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    raft_addr: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    api_addr: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    metrics_addr: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    url: Option<String>,
}

#[derive(Serialize)]
struct AdminClient {
    /// A `slapos request`/`slapos supply` client configuration pointing at a gateway.
    client_config: PathBuf,
    /// Its certificate and key (the person `admin`), and the group's CA that verifies
    /// the gateways; none with `--insecure`.
    certificate: Option<PathBuf>,
    key: Option<PathBuf>,
    ca: Option<PathBuf>,
    /// With mTLS: the environment `slapos cluster ...` and `slapos user ...` need to
    /// reach the masters' API (a replica's certificate: the masters admit replicas and
    /// gateways only).
    #[serde(skip_serializing_if = "Option::is_none")]
    master_tls_env: Option<String>,
}

#[derive(Serialize)]
struct ClusterFile {
    dir: PathBuf,
    started_at_unix: u64,
    processes: Vec<ProcessInfo>,
    gateway_urls: Vec<String>,
    master_api_addrs: Vec<String>,
    admin: AdminClient,
    nodes: Vec<crate::up_node::NodeInfo>,
    /// Self-hosted: the replicas in partitions (no process of this command's own).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    hosted_replicas: Vec<crate::selfhost::Added>,
    /// The sample instance: its software release and title.
    #[serde(skip_serializing_if = "Option::is_none")]
    sample: Option<Sample>,
}

#[derive(Serialize)]
struct Sample {
    software_release: String,
    title: String,
}

struct Children(Vec<(String, Child)>);

impl Children {
    /// SIGTERM everyone, then SIGKILL whoever is still there after 10 s.
    fn stop(&mut self) {
        for (_, c) in &self.0 {
            let _ = Command::new("kill").arg(c.id().to_string()).status();
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        for (name, c) in &mut self.0 {
            loop {
                match c.try_wait() {
                    Ok(Some(_)) | Err(_) => break,
                    Ok(None) if Instant::now() > deadline => {
                        eprintln!("{name} did not stop within 10 s: killing it");
                        let _ = c.kill();
                        let _ = c.wait();
                        break;
                    }
                    Ok(None) => std::thread::sleep(Duration::from_millis(50)),
                }
            }
        }
        self.0.clear();
    }
}

impl Children {
    /// SIGTERM the child named `name` and wait for it (SIGKILL after 10 s).
    fn stop_named(&mut self, name: &str) {
        let (mut mine, others): (Vec<_>, Vec<_>) = std::mem::take(&mut self.0)
            .into_iter()
            .partition(|(n, _)| n == name);
        self.0 = others;
        let mut stopping = Children(std::mem::take(&mut mine));
        stopping.stop();
    }
}

impl Drop for Children {
    fn drop(&mut self) {
        self.stop();
    }
}

fn port(base: Option<u16>, offset: u16) -> Result<u16> {
    match base {
        Some(b) => b.checked_add(offset).context("--base-port too high"),
        None => Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port()),
    }
}

fn spawn(bin: &Path, args: &[&str], config: &Path, log: &Path) -> Result<Child> {
    let out = File::create(log).with_context(|| format!("create {}", log.display()))?;
    let err = out.try_clone()?;
    Command::new(bin)
        .args(args)
        .arg(config)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .with_context(|| format!("start {}", bin.display()))
}

pub async fn run(args: UpArgs) -> Result<()> {
    if args.replicas == 0 {
        bail!("--replicas must be at least 1");
    }
    let dir = std::path::absolute(&args.dir)?;
    if dir.join("cluster.json").exists() || dir.join("replica-1").exists() {
        bail!(
            "{} holds an earlier cluster; remove it or choose another --dir",
            dir.display()
        );
    }
    std::fs::create_dir_all(&dir)?;
    // Installed now, so that a SIGTERM or Ctrl-C during the start-up is kept for the
    // loop below (which stops everything) instead of killing this process and leaving
    // its children behind.
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut int = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;
    let bin = std::env::current_exe()?;
    let mut children = Children(Vec::new());
    let mut processes = Vec::new();

    // Replicas.
    // Self-hosted (the default): one seed outside partitions; the group's replicas come
    // later, in partitions of nodes (one node per replica, standing for a region: a
    // partition for the replica, another for its gateway, and one for the sample on the
    // first node), and the seed leaves.
    let self_hosted = !args.unhosted && !args.insecure && args.replicas > 0;
    let seeds = if self_hosted { 1 } else { args.replicas };
    let node_count = if self_hosted {
        args.nodes.max(args.replicas as usize)
    } else {
        args.nodes
    };
    let partitions = if self_hosted {
        args.partitions.max(3)
    } else {
        args.partitions
    };
    // Each node in a network namespace of its own (its own IPv6 /64, standing for a
    // region), the seed reachable from them on this namespace's end of the router.
    let net = if self_hosted && !args.loopback && node_count > 0 && slapgrid::process::is_root() {
        Some(
            slapos_operator::netns::Network::create_tagged("up", node_count)
                .context("network namespaces for the nodes (--loopback keeps them on loopback)")?,
        )
    } else {
        None
    };
    let seed_host = match &net {
        Some(n) => format!("[{}]", n.harness_v6()),
        None => "127.0.0.1".to_string(),
    };
    let mut replicas = Vec::new();
    for id in 1..=seeds {
        let o = ((id - 1) * 4) as u16;
        let config = ReplicaConfig {
            metrics_addr: Some(format!("127.0.0.1:{}", port(args.base_port, o + 2)?)),
            region: "local".into(),
            ..ReplicaConfig::new(
                id,
                format!("{seed_host}:{}", port(args.base_port, o)?),
                format!("{seed_host}:{}", port(args.base_port, o + 1)?),
                dir.join(format!("replica-{id}")),
            )
        };
        let path = dir.join(format!("replica-{id}.toml"));
        std::fs::write(&path, config.to_toml())?;
        replicas.push((config, path));
    }
    let init = Command::new(&bin)
        .args(["master", "init", "--config"])
        .arg(&replicas[0].1)
        .output()?;
    if !init.status.success() {
        bail!(
            "master init failed: {}",
            String::from_utf8_lossy(&init.stderr)
        );
    }
    let tls = if args.insecure {
        None
    } else {
        let mut ips = vec!["127.0.0.1".to_string()];
        ips.extend(net.as_ref().map(|n| n.harness_v6().to_string()));
        Some(bootstrap_tls(&bin, &dir, &mut replicas, seeds, ips).await?)
    };
    for (config, path) in &replicas {
        let log = dir.join(format!("replica-{}.log", config.id));
        let child = spawn(&bin, &["master", "run", "--config"], path, &log)?;
        processes.push(ProcessInfo {
            role: "master",
            id: config.id,
            pid: child.id(),
            config: path.clone(),
            log,
            data_dir: Some(config.data_dir.clone()),
            raft_addr: Some(config.raft_addr.clone()),
            api_addr: Some(config.api_addr.clone()),
            metrics_addr: config.metrics_addr.clone(),
            url: None,
        });
        children.0.push((format!("replica {}", config.id), child));
    }
    let api_addrs: Vec<String> = replicas.iter().map(|(c, _)| c.api_addr.clone()).collect();
    let mut client =
        MasterClient::single(&replicas[0].0.api_addr).with_deadline(Duration::from_secs(60));
    client.call_timeout = Duration::from_secs(50);
    client
        .status()
        .await
        .context("the first replica does not answer")?;
    for (config, _) in replicas.iter().skip(1) {
        let node = config.node_info();
        client
            .add_replica(&AddReplicaRequest {
                id: config.id,
                raft_addr: node.raft_addr,
                api_addr: node.api_addr,
                region: node.region,
                hosted_by: node.hosted_by,
                gateway_url: node.gateway_url,
                voter: true,
            })
            .await
            .with_context(|| format!("replica {} could not join", config.id))?;
    }
    if tls.is_none() {
        // the local cluster's one person operates it: they may close periods
        crate::master::set_admin(api_addrs.clone(), "user", true)
            .await
            .context("granting the admin's rights")?;
    }

    // A gateway beside each replica, reading from it first.
    let mut urls = Vec::new();
    for (i, (config, _)) in replicas.iter().enumerate() {
        let mut masters = vec![config.api_addr.clone()];
        masters.extend(api_addrs.iter().filter(|a| **a != config.api_addr).cloned());
        let listen = format!("{seed_host}:{}", port(args.base_port, (i as u16) * 4 + 3)?);
        let text = match &tls {
            None => format!("listen = \"{listen}\"\nmasters = {masters:?}\ninsecure_http = true\n"),
            Some(t) => {
                let (cert, key) = gateway_files(&dir, config.id);
                format!(
                    "listen = \"{listen}\"\nmasters = {masters:?}\ntls_cert = {cert:?}\n\
                     tls_key = {key:?}\nclient_ca = {ca:?}\n\n[master_tls]\ncert = {cert:?}\n\
                     key = {key:?}\nca = {ca:?}\n",
                    ca = t.ca
                )
            }
        };
        let gw = GatewayConfig::parse(&text).map_err(anyhow::Error::msg)?;
        let path = dir.join(format!("gateway-{}.toml", config.id));
        std::fs::write(&path, gw.to_toml())?;
        let log = dir.join(format!("gateway-{}.log", config.id));
        let child = spawn(&bin, &["gateway", "run", "--config"], &path, &log)?;
        let scheme = if tls.is_some() { "https" } else { "http" };
        let url = format!("{scheme}://{}/", gw.listen);
        processes.push(ProcessInfo {
            role: "gateway",
            id: config.id,
            pid: child.id(),
            config: path,
            log,
            data_dir: None,
            raft_addr: None,
            api_addr: None,
            metrics_addr: None,
            url: Some(url.clone()),
        });
        children.0.push((format!("gateway {}", config.id), child));
        urls.push(url);
    }
    // Wait until every gateway answers.
    for url in &urls {
        let addr = url
            .trim_start_matches("https://")
            .trim_start_matches("http://")
            .trim_end_matches('/');
        let deadline = Instant::now() + Duration::from_secs(20);
        while tokio::net::TcpStream::connect(addr).await.is_err() {
            if Instant::now() > deadline {
                bail!(
                    "the gateway at {url} did not start; see its log in {}",
                    dir.display()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    // Node agents, the sample release and its instance.
    let nodes = {
        let (bin, dir, urls, tls) = (bin.clone(), dir.clone(), urls.clone(), tls.clone());
        let (n, partitions) = (node_count, partitions);
        let net = net.as_ref();
        tokio::task::block_in_place(move || {
            crate::up_node::format_nodes(&bin, &dir, &urls, n, partitions, tls.as_ref(), net)
        })?
    };
    let teardown = NodesTeardown(bin.clone(), nodes.clone());
    for node in &nodes {
        let child = crate::up_node::spawn_daemon(&bin, node)?;
        processes.push(ProcessInfo {
            role: "node",
            id: processes.len() as u64,
            pid: child.id(),
            config: node.config.clone(),
            log: node.log.clone(),
            data_dir: Some(node.dir.clone()),
            raft_addr: None,
            api_addr: None,
            metrics_addr: None,
            url: None,
        });
        children
            .0
            .push((format!("node {}", node.computer_id), child));
    }
    let mut hosted = Vec::new();
    let (mut urls, mut api_addrs) = (urls, api_addrs);
    if let (true, Some(t)) = (self_hosted, &tls) {
        hosted = self_host(
            &dir,
            t,
            &api_addrs,
            &urls[0],
            &nodes,
            args.replicas,
            match net {
                Some(_) => ReplicaPorts::OwnAddresses,
                None => ReplicaPorts::Loopback(args.base_port),
            },
        )
        .await?;
        // The nodes now talk to the gateways in the partitions (restarted with the new
        // list; their supervisors keep every service running meanwhile), and the seed's
        // processes go.
        urls = hosted.iter().map(|h| h.gateway_url.clone()).collect();
        api_addrs = hosted.iter().map(|h| h.api_addr.clone()).collect();
        for node in &nodes {
            let text = std::fs::read_to_string(&node.config)?;
            let text: Vec<String> = text
                .lines()
                .map(|l| {
                    if l.starts_with("master_url =") {
                        format!("master_url = {}", urls.join(" "))
                    } else {
                        l.to_string()
                    }
                })
                .collect();
            std::fs::write(&node.config, text.join("\n") + "\n")?;
            let name = format!("node {}", node.computer_id);
            children.stop_named(&name);
            let child = crate::up_node::spawn_daemon(&bin, node)?;
            for p in processes.iter_mut() {
                if p.role == "node" && p.config == node.config {
                    p.pid = child.id();
                }
            }
            children.0.push((name, child));
        }
        for name in ["gateway 1", "replica 1"] {
            children.stop_named(name);
        }
        processes.retain(|p| p.role == "node");
        println!(
            "the seed replica left: the master lives in {} partitions",
            hosted.len()
        );
    }
    let sample = if nodes.is_empty() {
        None
    } else {
        let software = crate::up_node::write_sample_release(&dir)?;
        let title = "hello".to_string();
        let (urls, software2, nodes2, title2, tls2) = (
            urls.clone(),
            software.clone(),
            nodes.clone(),
            title.clone(),
            tls.clone(),
        );
        tokio::task::spawn_blocking(move || {
            crate::up_node::supply_and_request(
                &urls,
                tls2.as_ref(),
                &software2,
                &nodes2[..1],
                &title2,
            )
            .map(|_| ())
        })
        .await??;
        Some(Sample {
            software_release: software,
            title,
        })
    };

    let client_config = dir.join("client.cfg");
    let console = match &tls {
        Some(t) => format!(
            "cert_file = {}\nkey_file = {}\n",
            t.admin_cert.display(),
            t.admin_key.display()
        ),
        None => String::new(),
    };
    std::fs::write(
        &client_config,
        format!(
            "# slapos request / slapos supply against this cluster: slapos request --cfg {}\n[slapos]\nmaster_url = {}\n\n[slapconsole]\n{console}",
            client_config.display(),
            urls[0]
        ),
    )?;
    let master_tls_env = tls.as_ref().map(|t| {
        format!(
            "SLAPOS_MASTER_TLS_CERT={} SLAPOS_MASTER_TLS_KEY={} SLAPOS_MASTER_TLS_CA={}",
            t.operator_cert.display(),
            t.operator_key.display(),
            t.ca.display()
        )
    });
    let cluster = ClusterFile {
        dir: dir.clone(),
        started_at_unix: SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs(),
        processes,
        gateway_urls: urls.clone(),
        master_api_addrs: api_addrs.clone(),
        admin: AdminClient {
            client_config,
            certificate: tls.as_ref().map(|t| t.admin_cert.clone()),
            key: tls.as_ref().map(|t| t.admin_key.clone()),
            ca: tls.as_ref().map(|t| t.ca.clone()),
            master_tls_env: master_tls_env.clone(),
        },
        nodes: nodes.clone(),
        hosted_replicas: hosted.clone(),
        sample,
    };
    let json = dir.join("cluster.json");
    // whole or not at all: whoever waits for it reads it once it exists
    let tmp = dir.join("cluster.json.tmp");
    std::fs::write(&tmp, serde_json::to_vec_pretty(&cluster)?)?;
    std::fs::rename(&tmp, &json)?;
    println!(
        "slapos up: {} master replicas{} and {} gateways in {}",
        args.replicas,
        if hosted.is_empty() {
            ""
        } else {
            " hosted in partitions"
        },
        urls.len(),
        dir.display()
    );
    for (i, url) in urls.iter().enumerate() {
        match hosted.get(i) {
            Some(h) => println!(
                "  SLAP gateway  {url}  (beside replica {} of {}/{}, in {}/{})",
                h.id, h.computer, h.partition, h.computer, h.gateway_partition
            ),
            None => println!("  SLAP gateway  {url}"),
        }
    }
    println!(
        "  cluster       {}slapos cluster status --via {}",
        master_tls_env
            .as_ref()
            .map(|e| format!("{e} "))
            .unwrap_or_default(),
        api_addrs.join(",")
    );
    if let Some(t) = &tls {
        println!(
            "  mTLS          every link; the admin's certificate {} (CA {})",
            t.admin_cert.display(),
            t.ca.display()
        );
    }
    for node in &nodes {
        let place = match (&node.netns, &node.address, &node.region) {
            (Some(ns), Some(a), region) => format!(
                ", namespace {ns} at {a}{}",
                region
                    .as_ref()
                    .map(|r| format!(" ({r})"))
                    .unwrap_or_default()
            ),
            _ => String::new(),
        };
        println!(
            "  node          {} ({} partitions{place}) in {}",
            node.computer_id,
            partitions,
            node.dir.display()
        );
    }
    println!("  described in  {}", json.display());
    let mut interrupted = false;
    if let Some(sample) = &cluster.sample {
        println!(
            "waiting for the sample instance {:?} to publish its connection parameters...",
            sample.title
        );
        let (urls, software, title, tls) = (
            urls.clone(),
            sample.software_release.clone(),
            sample.title.clone(),
            tls.clone(),
        );
        let waiting = tokio::task::spawn_blocking(move || {
            let client = crate::up_node::admin_client(&urls, tls.as_ref())?;
            crate::up_node::wait_connection(&client, &software, &title, Duration::from_secs(180))
        });
        tokio::select! {
            _ = term.recv() => interrupted = true,
            _ = int.recv() => interrupted = true,
            published = waiting => match published? {
                Ok(params) => {
                    println!(
                        "instance {:?} is running; its connection parameters:",
                        sample.title
                    );
                    for (k, v) in params {
                        println!("  {k:<12}  {v}");
                    }
                }
                Err(e) => eprintln!("{e}; see the node logs in {}", dir.display()),
            },
        }
    }
    if !interrupted {
        println!("interrupt (Ctrl-C) to stop every process");
        // Until interrupted; report children that exit on their own.
        let mut ticker = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                _ = term.recv() => break,
                _ = int.recv() => break,
                _ = ticker.tick() => {
                    for (name, c) in &mut children.0 {
                        if let Ok(Some(status)) = c.try_wait() {
                            eprintln!("{name} exited ({status}); see its log in {}", dir.display());
                        }
                    }
                    children.0.retain_mut(|(_, c)| !matches!(c.try_wait(), Ok(Some(_))));
                }
            }
        }
    }
    println!("stopping");
    children.stop();
    drop(teardown);
    let _ = std::fs::remove_file(&json);
    Ok(())
}

/// Stops the nodes' services and removes their users, also on an early error return.
struct NodesTeardown(PathBuf, Vec<crate::up_node::NodeInfo>);

impl Drop for NodesTeardown {
    fn drop(&mut self) {
        for node in &self.1 {
            crate::up_node::teardown(&self.0, node);
        }
    }
}

fn replica_files(dir: &Path, id: u64) -> (PathBuf, PathBuf) {
    let tls = dir.join("tls");
    (
        tls.join(format!("replica-{id}.crt")),
        tls.join(format!("replica-{id}.key")),
    )
}

fn gateway_files(dir: &Path, id: u64) -> (PathBuf, PathBuf) {
    let tls = dir.join("tls");
    (
        tls.join(format!("gateway-r{id}.crt")),
        tls.join(format!("gateway-r{id}.key")),
    )
}

/// Puts the new group under mTLS as an operator would: replica 1 (initialised, with the
/// group's authority) runs alone on plain gRPC while the certificates are issued through
/// its API (replicas and gateways with 127.0.0.1 in their names, the admin person), then
/// stops; every replica's configuration gets its `[tls]`, and this process presents
/// replica 1's certificate from now on (membership calls).
async fn bootstrap_tls(
    bin: &Path,
    dir: &Path,
    replicas: &mut [(ReplicaConfig, PathBuf)],
    count: u64,
    local: Vec<String>,
) -> Result<UpTls> {
    let out = dir.join("tls");
    std::fs::create_dir_all(&out)?;
    let (first, first_path) = &replicas[0];
    let log = dir.join("replica-1-bootstrap.log");
    let mut seed = Children(vec![(
        "replica 1 (bootstrap)".into(),
        spawn(bin, &["master", "run", "--config"], first_path, &log)?,
    )]);
    let via = vec![first.api_addr.clone()];
    let mut client = MasterClient::single(&first.api_addr).with_deadline(Duration::from_secs(30));
    client
        .status()
        .await
        .context("the first replica does not answer")?;
    let ca = out.join("ca.pem");
    std::fs::write(&ca, client.authority().await?)?;
    for id in 1..=count {
        // `gateway:r<id>`: the gateway beside replica <id>, whose certificates end with
        // the replica's membership (`RetireReplica`).
        for identity in [format!("replica:{id}"), format!("gateway:r{id}")] {
            crate::master::issue_to_files(
                via.clone(),
                &identity,
                &out,
                vec![],
                local.clone(),
                None,
            )
            .await
            .with_context(|| format!("issuing the certificate of {identity}"))?;
        }
    }
    let (admin_cert, admin_key, _) = crate::master::issue_to_files(
        via.clone(),
        &format!("person:{ADMIN}"),
        &out,
        vec![],
        vec![],
        None,
    )
    .await
    .context("issuing the admin's certificate")?;
    crate::master::set_admin(via.clone(), ADMIN, true)
        .await
        .context("granting the admin's rights")?;
    let (operator_cert, operator_key, _) = crate::master::issue_to_files(
        via.clone(),
        &format!("operator:{ADMIN}"),
        &out,
        vec![],
        vec![],
        None,
    )
    .await
    .context("issuing the operator's certificate")?;
    seed.stop();
    for (config, path) in replicas.iter_mut() {
        let (cert, key) = replica_files(dir, config.id);
        config.tls = Some(master_client::tls::TlsFiles {
            cert,
            key,
            ca: ca.clone(),
        });
        std::fs::write(&*path, config.to_toml())?;
    }
    // This process is the operator: it presents an operator's certificate to the masters
    // (the seed replica's own stops being accepted once the seed leaves the group).
    master_client::tls::set_client(&master_client::tls::TlsFiles {
        cert: operator_cert.clone(),
        key: operator_key.clone(),
        ca: ca.clone(),
    })?;
    Ok(UpTls {
        ca,
        admin_cert,
        admin_key,
        operator_cert,
        operator_key,
    })
}

/// The master moves into partitions: `slapos cluster bootstrap` onto the first `count`
/// nodes (one region each), the seed (replica 1) leaving at its end. In namespaces each
/// partition has its own address and the default ports; on loopback the partitions share
/// one, so each replica gets three consecutive free ports of its own.
async fn self_host(
    dir: &Path,
    tls: &UpTls,
    seed_apis: &[String],
    seed_gateway: &str,
    nodes: &[crate::up_node::NodeInfo],
    count: u64,
    ports: ReplicaPorts,
) -> Result<Vec<crate::selfhost::Added>> {
    let operator = crate::selfhost::Operator {
        via: seed_apis.to_vec(),
        gateway: seed_gateway.to_string(),
        cert: tls.admin_cert.clone(),
        key: tls.admin_key.clone(),
        ca: tls.ca.clone(),
        release: None,
        release_dir: dir.join("software/slapos-master"),
        timeout_secs: 300,
    };
    let mut computers = Vec::new();
    for (i, node) in nodes.iter().take(count as usize).enumerate() {
        let base_port = match ports {
            // the default ports, on each partition's own address
            ReplicaPorts::OwnAddresses => {
                computers.push(node.computer_id.clone());
                continue;
            }
            ReplicaPorts::Loopback(base) => base,
        };
        let first = match base_port {
            // after the seed's four ports
            Some(b) => b
                .checked_add(4 + 3 * i as u16)
                .context("--base-port too high")?,
            None => free_ports(3)?,
        };
        computers.push(format!("{}:{first}", node.computer_id));
    }
    crate::bootstrap::bootstrap(&crate::bootstrap::BootstrapArgs {
        operator,
        computers,
        first_id: Some(2),
        ports: Default::default(),
        timers: Default::default(),
    })
    .await
}

/// Where the hosted replicas listen.
enum ReplicaPorts {
    /// Each partition has an address of its own (namespaced nodes): the default ports.
    OwnAddresses,
    /// The partitions share loopback: three consecutive ports each, after --base-port
    /// when given, else free ones.
    Loopback(Option<u16>),
}

/// The first of `n` consecutive ports free on loopback now.
fn free_ports(n: u16) -> Result<u16> {
    for _ in 0..100 {
        let first = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let held: Vec<_> = (0..n)
            .map_while(|k| first.checked_add(k))
            .map_while(|p| TcpListener::bind(("127.0.0.1", p)).ok())
            .collect();
        if held.len() == n as usize {
            return Ok(first);
        }
    }
    bail!("no {n} consecutive free ports on loopback")
}
