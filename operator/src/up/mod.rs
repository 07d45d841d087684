//! `slapos up`: a local cluster of real processes in one directory, described in
//! `<dir>/cluster.json`: the same `slapos master init/run`, `slapos gateway run` and
//! `slapos node ...` processes an operator would start, and the membership calls of
//! `slapos master join`.
//!
//! By default every link is under mTLS, set up as README's "Certificates on every link"
//! tells an operator ([`tls`]), and the master then moves into partitions of the nodes
//! through [`crate::bootstrap`]'s own code (as root each node is a network namespace of
//! its own, [`crate::netns::Network`]), the seed leaving; `unhosted` keeps the replicas
//! and gateways as plain processes, `insecure` runs it all on plain loopback HTTP/gRPC.
//!
//! [`LocalCluster::start`] returns once the cluster is described; everything it made so
//! far is undone when its future is dropped (an interrupted start), when it fails, and
//! when the cluster is stopped: its processes stopped, the nodes' services stopped and
//! their users removed, its namespaces deleted.

mod dirs;
mod nodes;
pub mod plan;
mod ports;
mod processes;
mod tls;

pub use nodes::NodeInfo;
pub use tls::ClusterTls;

use crate::bootstrap::{bootstrap, Bootstrap, Host, SeedProcesses};
use crate::error::{Context, OperatorError};
use crate::files;
use crate::group::Operator;
use crate::netns::Network;
use crate::progress::Progress;
use crate::replicas::{Added, Ports};
use master_client::MasterClient;
use master_replica::node::{ReplicaConfig, Timers};
use nodes::{format_nodes, run_checked, spawn_daemon, teardown, NodesPlan};
use ports::consecutive_unused_ports;
use processes::{spawn, Children};
use serde::Serialize;
use slap_gateway::server::GatewayConfig;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// What `slapos up` makes.
#[derive(Clone, Debug)]
pub struct UpOptions {
    /// Directory for configurations, data, logs and cluster.json.
    pub dir: PathBuf,
    /// Master replicas (each with a gateway beside it); at least 1.
    pub replicas: u64,
    /// First port to use; each seed replica takes four consecutive ports (Raft, API,
    /// metrics, gateway). None: free ports picked by the system.
    pub base_port: Option<u16>,
    /// Node agents, each formatted into partitions; the first node gets the sample
    /// release and one instance of it. Self-hosted: at least one per replica.
    pub nodes: usize,
    /// Partitions per node (self-hosted: at least 3).
    pub partitions: usize,
    /// No TLS anywhere (implies `unhosted`).
    pub insecure: bool,
    /// The replicas as plain processes of this one instead of hosted in partitions.
    pub unhosted: bool,
    /// The nodes of the self-hosted group on loopback rather than in namespaces.
    pub loopback: bool,
    /// Regions apart: node `n` in region `(n - 1) % regions` of this matrix, behind the
    /// WAN emulator (its delays, jitter, loss between their namespaces), the replicas'
    /// timers chosen for its largest round trip, each node reading first from the
    /// gateway of its own region. Needs root and the self-hosted group in namespaces.
    pub regions: Option<slapos_wan::Matrix>,
}

impl UpOptions {
    fn self_hosted(&self) -> bool {
        !self.unhosted && !self.insecure && self.replicas > 0
    }

    /// Nodes, one per replica at least when self-hosted.
    /// The region of each node (in the order of `regions`), when given.
    fn node_regions(&self) -> Option<Vec<slapos_wan::RegionId>> {
        let m = self.regions.as_ref().filter(|m| !m.is_empty())?;
        Some((0..self.node_count()).map(|i| i % m.len()).collect())
    }

    /// The replicas' Raft timers: for the largest round trip between the regions of the
    /// nodes that host them (`Timers::for_round_trip`), else the LAN defaults.
    pub fn timers(&self) -> Timers {
        match (&self.regions, self.node_regions()) {
            (Some(m), Some(regions)) => {
                let hosts = &regions[..(self.replicas as usize).min(regions.len())];
                Timers::for_round_trip(m.worst_round_trip(hosts))
            }
            _ => Timers::default(),
        }
    }

    pub fn node_count(&self) -> usize {
        if self.self_hosted() {
            self.nodes.max(self.replicas as usize)
        } else {
            self.nodes
        }
    }

    /// Partitions per node, a replica, its gateway and the sample's when self-hosted.
    pub fn partition_count(&self) -> usize {
        if self.self_hosted() {
            self.partitions.max(3)
        } else {
            self.partitions
        }
    }
}

/// A process of the cluster's own, as cluster.json lists it.
#[derive(Serialize, Clone, Debug)]
pub struct ProcessInfo {
    pub role: &'static str,
    pub id: u64,
    pub pid: u32,
    pub config: PathBuf,
    pub log: PathBuf,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub raft_addr: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api_addr: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metrics_addr: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
}

#[derive(Serialize, Clone, Debug)]
pub struct AdminClient {
    /// A `slapos request`/`slapos supply` client configuration pointing at a gateway.
    pub client_config: PathBuf,
    /// Its certificate and key (the person `admin`), and the group's CA that verifies
    /// the gateways; none with `insecure`.
    pub certificate: Option<PathBuf>,
    pub key: Option<PathBuf>,
    pub ca: Option<PathBuf>,
    /// With mTLS: the environment `slapos cluster ...` and `slapos user ...` need to
    /// reach the masters' API (the operator's certificate).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub master_tls_env: Option<String>,
}

/// `cluster.json`.
#[derive(Serialize, Clone, Debug)]
pub struct ClusterFile {
    pub dir: PathBuf,
    pub started_at_unix: u64,
    pub processes: Vec<ProcessInfo>,
    pub gateway_urls: Vec<String>,
    pub master_api_addrs: Vec<String>,
    pub admin: AdminClient,
    pub nodes: Vec<NodeInfo>,
    /// Self-hosted: the replicas in partitions (no process of this command's own).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub hosted_replicas: Vec<Added>,
    /// The sample instance: its software release and title.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sample: Option<Sample>,
    /// Where the nodes' software and instance roots and the releases are when not in
    /// `dir` (a directory above it is closed to other users); removed at the end.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub partitions_dir: Option<PathBuf>,
}

#[derive(Serialize, Clone, Debug)]
pub struct Sample {
    pub software_release: String,
    pub title: String,
}

/// What a start made, undone in this order when dropped: the processes stopped (the
/// node agents first of all, so that none starts anything again), then each node's
/// services stopped and its users removed, then the namespaces deleted, and the
/// partitions' directory outside the cluster's own removed.
struct Made {
    bin: PathBuf,
    children: Children,
    nodes: Vec<NodeInfo>,
    net: Option<Network>,
    /// The partitions' and releases' directory outside the cluster's own.
    outside: Option<PathBuf>,
}

impl Drop for Made {
    fn drop(&mut self) {
        self.children.stop();
        for node in &self.nodes {
            teardown(&self.bin, node);
        }
        self.net.take();
        if let Some(outside) = self.outside.take() {
            let _ = std::fs::remove_dir_all(outside);
        }
    }
}

/// A running local cluster; stopped by [`LocalCluster::stop`] or when dropped.
pub struct LocalCluster {
    made: Made,
    file: ClusterFile,
    json: PathBuf,
    tls: Option<ClusterTls>,
}

fn port(base: Option<u16>, offset: u16) -> Result<u16, OperatorError> {
    match base {
        Some(b) => b
            .checked_add(offset)
            .ok_or_else(|| OperatorError::Precondition("--base-port too high".into())),
        None => consecutive_unused_ports(1),
    }
}

impl LocalCluster {
    /// Starts the cluster and describes it in `<dir>/cluster.json`; returns then, its
    /// processes running. Steps and warnings go to `progress`. Dropping this future
    /// before it returns (Ctrl-C) undoes whatever it made so far, as an error does.
    pub async fn start(
        opts: &UpOptions,
        progress: Arc<dyn Progress>,
    ) -> Result<LocalCluster, OperatorError> {
        if opts.replicas == 0 {
            crate::error::refuse!("a cluster needs at least one replica");
        }
        let dir = files::absolute(&opts.dir)?;
        if dir.join("cluster.json").exists() || dir.join("replica-1").exists() {
            crate::error::refuse!(
                "{} holds an earlier cluster; remove it or choose another --dir",
                dir.display()
            );
        }
        let self_hosted = opts.self_hosted();
        let node_count = opts.node_count();
        let partitions = opts.partition_count();
        let root = slapgrid::process::is_root();
        let bin = files::current_exe()?;
        let dirs = dirs::prepare(&dir, root && node_count > 0)?;
        let mut made = Made {
            bin: bin.clone(),
            children: Children::new(progress.clone()),
            nodes: Vec::new(),
            net: None,
            outside: dirs.outside.then(|| dirs.shared.clone()),
        };
        if let Some((closed, mode)) = &dirs.closed {
            progress.line(&format!(
                "{} is under {} (mode {mode:04o}), which other users may not enter: the \
                 partitions and the releases go to {} instead (removed when the cluster stops)",
                dir.display(),
                closed.display(),
                dirs.shared.display()
            ));
        }
        let mut processes = Vec::new();

        // Replicas.
        // Self-hosted (the default): one seed outside partitions; the group's replicas
        // come later, in partitions of nodes (one node per replica, standing for a region:
        // a partition for the replica, another for its gateway, and one for the sample on
        // the first node), and the seed leaves.
        let seeds = if self_hosted { 1 } else { opts.replicas };
        if let Some(m) = &opts.regions {
            if !self_hosted || opts.loopback || !root || node_count == 0 {
                crate::error::refuse!(
                    "--regions puts each node in a region behind the WAN emulator: it needs \
                     root, network namespaces (no --loopback) and the group hosted in the \
                     nodes' partitions (no --unhosted, no --insecure)"
                );
            }
            if opts.replicas as usize > m.len() {
                crate::error::refuse!(
                    "{} replicas in {} regions: the group keeps one replica per region; \
                     give --replicas {} at most, or more regions",
                    opts.replicas,
                    m.len(),
                    m.len()
                );
            }
        }
        // Each node in a network namespace of its own (its own IPv6 /64, standing for a
        // region), the seed reachable from them on this namespace's end of the router.
        let node_regions = opts.regions.as_ref().zip(opts.node_regions());
        if self_hosted && !opts.loopback && node_count > 0 && root {
            let net = match &node_regions {
                Some((m, regions)) => Network::create_with_regions("up", m, regions),
                _ => Network::create_tagged("up", node_count),
            };
            made.net =
                Some(net.context(
                    "network namespaces for the nodes (--loopback keeps them on loopback)",
                )?);
        }
        let region_names: Option<Vec<String>> = node_regions
            .map(|(m, regions)| regions.iter().map(|r| m.names()[*r].clone()).collect());
        let seed_host = match &made.net {
            Some(n) => format!("[{}]", n.harness_v6()),
            None => "127.0.0.1".to_string(),
        };
        let mut replicas = Vec::new();
        for id in 1..=seeds {
            let o = ((id - 1) * 4) as u16;
            let config = ReplicaConfig {
                metrics_addr: Some(format!("127.0.0.1:{}", port(opts.base_port, o + 2)?)),
                region: "local".into(),
                ..ReplicaConfig::new(
                    id,
                    format!("{seed_host}:{}", port(opts.base_port, o)?),
                    format!("{seed_host}:{}", port(opts.base_port, o + 1)?),
                    dir.join(format!("replica-{id}")),
                )
            };
            let path = dir.join(format!("replica-{id}.toml"));
            files::write(&path, config.to_toml())?;
            replicas.push((config, path));
        }
        run_checked(
            Command::new(&bin)
                .args(["master", "init", "--config"])
                .arg(&replicas[0].1),
            "master init",
        )?;
        let tls = if opts.insecure {
            None
        } else {
            let mut ips = vec!["127.0.0.1".to_string()];
            ips.extend(made.net.as_ref().map(|n| n.harness_v6().to_string()));
            Some(tls::bootstrap_tls(&bin, &dir, &mut replicas, seeds, ips, progress.clone()).await?)
        };
        for (config, path) in &replicas {
            let log = dir.join(format!("replica-{}.log", config.id));
            let child = spawn(&bin, &["master", "run", "--config"], path, &log)?;
            processes.push(ProcessInfo {
                role: "master",
                id: config.id,
                pid: child.id(),
                config: path.clone(),
                log: log.clone(),
                data_dir: Some(config.data_dir.clone()),
                raft_addr: Some(config.raft_addr.clone()),
                api_addr: Some(config.api_addr.clone()),
                metrics_addr: config.metrics_addr.clone(),
                url: None,
            });
            made.children
                .push(format!("replica {}", config.id), child, &log);
        }
        let api_addrs: Vec<String> = replicas.iter().map(|(c, _)| c.api_addr.clone()).collect();
        let mut client =
            MasterClient::single(&replicas[0].0.api_addr).with_deadline(Duration::from_secs(60));
        client.call_timeout = Duration::from_secs(50);
        // Each step fails at once when a replica exits meanwhile (a port taken between
        // the choice and the bind, a data directory it cannot open), with its log's end.
        made.children
            .while_running(async { client.status().await.map_err(OperatorError::from) })
            .await
            .context("the first replica does not answer")?;
        for (config, _) in replicas.iter().skip(1) {
            let request = config.add_replica_request(true);
            made.children
                .while_running(async {
                    client
                        .add_replica(&request)
                        .await
                        .map_err(OperatorError::from)
                })
                .await
                .with_context(|| format!("replica {} could not join", config.id))?;
        }
        if tls.is_none() {
            // the local cluster's one person operates it: they may close periods
            made.children
                .while_running(crate::authority::set_admin(api_addrs.clone(), "user", true))
                .await
                .context("granting the admin's rights")?;
        }

        // A gateway beside each replica, reading from it first.
        let mut urls = Vec::new();
        for (i, (config, _)) in replicas.iter().enumerate() {
            let mut masters = vec![config.api_addr.clone()];
            masters.extend(api_addrs.iter().filter(|a| **a != config.api_addr).cloned());
            let listen = format!("{seed_host}:{}", port(opts.base_port, (i as u16) * 4 + 3)?);
            let text = match &tls {
                None => {
                    format!("listen = \"{listen}\"\nmasters = {masters:?}\ninsecure_http = true\n")
                }
                Some(t) => {
                    let (cert, key) = tls::gateway_files(&dir, config.id);
                    // It serves the releases published to it (the slapos-master release
                    // the hosted replicas install, over HTTPS).
                    let releases = dir.join(format!("releases-{}", config.id));
                    format!(
                        "listen = \"{listen}\"\nmasters = {masters:?}\ntls_cert = {cert:?}\n\
                         tls_key = {key:?}\nclient_ca = {ca:?}\n\n[master_tls]\ncert = {cert:?}\n\
                         key = {key:?}\nca = {ca:?}\n\n[releases]\ndir = {releases:?}\n",
                        ca = t.ca
                    )
                }
            };
            let gw = GatewayConfig::parse(&text).map_err(OperatorError::Precondition)?;
            let path = dir.join(format!("gateway-{}.toml", config.id));
            files::write(&path, gw.to_toml())?;
            let log = dir.join(format!("gateway-{}.log", config.id));
            let child = spawn(&bin, &["gateway", "run", "--config"], &path, &log)?;
            let scheme = if tls.is_some() { "https" } else { "http" };
            let url = format!("{scheme}://{}/", gw.listen);
            processes.push(ProcessInfo {
                role: "gateway",
                id: config.id,
                pid: child.id(),
                config: path,
                log: log.clone(),
                data_dir: None,
                raft_addr: None,
                api_addr: None,
                metrics_addr: None,
                url: Some(url.clone()),
            });
            made.children
                .push(format!("gateway {}", config.id), child, &log);
            urls.push(url);
        }
        // Wait until every gateway answers.
        for url in &urls {
            let addr = url
                .trim_start_matches("https://")
                .trim_start_matches("http://")
                .trim_end_matches('/');
            let deadline = Instant::now() + Duration::from_secs(20);
            made.children
                .while_running(async {
                    while tokio::net::TcpStream::connect(addr).await.is_err() {
                        if Instant::now() > deadline {
                            return Err(OperatorError::Timeout(format!(
                                "the gateway at {url} did not start; see its log in {}",
                                dir.display()
                            )));
                        }
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    Ok(())
                })
                .await?;
        }

        // Node agents, the sample release and its instance.
        format_nodes(
            NodesPlan {
                bin: &bin,
                dir: &dir,
                roots: &dirs.shared,
                urls: &urls,
                nodes: node_count,
                partitions,
                tls: tls.as_ref(),
                net: made.net.as_ref(),
                regions: region_names.as_deref(),
            },
            &mut made.nodes,
        )
        .await?;
        let nodes = made.nodes.clone();
        for node in &nodes {
            let child = spawn_daemon(&bin, node)?;
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
            made.children
                .push(format!("node {}", node.computer_id), child, &node.log);
        }
        let mut hosted = Vec::new();
        let (mut urls, mut api_addrs) = (urls, api_addrs);
        if let (true, Some(t)) = (self_hosted, &tls) {
            progress.line(&format!(
                "bootstrapping: the master moves into partitions of {} nodes",
                opts.replicas
            ));
            let ports = match made.net {
                Some(_) => ReplicaPorts::OwnAddresses,
                None => ReplicaPorts::Loopback(opts.base_port),
            };
            let timers = opts.timers();
            if opts.regions.is_some() {
                progress.line(&format!(
                    "regions apart: Raft heartbeat {} ms, elections after {} to {} ms",
                    timers.heartbeat_ms,
                    timers.election_timeout_min_ms,
                    timers.election_timeout_max_ms
                ));
            }
            hosted = self_host(
                &dirs.shared,
                t,
                &api_addrs,
                &urls[0],
                &nodes,
                SelfHostPlan {
                    count: opts.replicas,
                    ports,
                    timers,
                },
                &*progress,
            )
            .await?;
            // The nodes now talk to the gateways in the partitions (restarted with the new
            // list; their supervisors keep every service running meanwhile), and the seed's
            // processes go.
            urls = hosted.iter().map(|h| h.gateway_url.clone()).collect();
            api_addrs = hosted.iter().map(|h| h.api_addr.clone()).collect();
            for node in &nodes {
                let text = files::read_to_string(&node.config)?;
                // With regions, its own region's gateway first; else as before, in the
                // replicas' order.
                let mine = match opts.regions {
                    Some(_) => own_region_first(&hosted, node.region.as_deref()),
                    None => urls.clone(),
                };
                let text: Vec<String> = text
                    .lines()
                    .map(|l| {
                        if l.starts_with("master_url =") {
                            format!("master_url = {}", mine.join(" "))
                        } else {
                            l.to_string()
                        }
                    })
                    .collect();
                files::write(&node.config, text.join("\n") + "\n")?;
                let name = format!("node {}", node.computer_id);
                made.children.stop_named(&name);
                let child = spawn_daemon(&bin, node)?;
                for p in processes.iter_mut() {
                    if p.role == "node" && p.config == node.config {
                        p.pid = child.id();
                    }
                }
                made.children.push(name, child, &node.log);
            }
            for name in ["gateway 1", "replica 1"] {
                made.children.stop_named(name);
            }
            processes.retain(|p| p.role == "node");
            progress.line(&format!(
                "the seed replica left: the master lives in {} partitions",
                hosted.len()
            ));
        }
        let sample = match nodes.first() {
            None => None,
            Some(first) => {
                let mut software = crate::release::write_sample_release(&dirs.shared)?;
                if let Some(t) = &tls {
                    // Published to the group's gateways: the nodes fetch it over HTTPS
                    // (verified against the group's CA and its checksums), as nodes on
                    // other machines would, from any gateway that is up.
                    let client_of = |url: &str| {
                        Ok(slap_gateway::client::JsonRpcClient::new(
                            url,
                            Some(t.ca.as_path()),
                            Some((t.admin_cert.as_path(), t.admin_key.as_path())),
                        )?)
                    };
                    let (first, others) = crate::release::publish_to_group(
                        &dirs.shared.join("software/hello"),
                        &urls[0],
                        &client_of,
                    )
                    .await
                    .context("publishing the sample release")?;
                    for (gateway, outcome) in others {
                        if let Err(e) = outcome {
                            progress.warn(&format!("the sample release is not on {gateway}: {e}"));
                        }
                    }
                    software = first.url;
                }
                let title = "hello".to_string();
                let client = nodes::admin_client(&urls, tls.as_ref())?;
                let (software2, first, title2) = (software.clone(), first.clone(), title.clone());
                tokio::task::spawn_blocking(move || {
                    nodes::supply_and_request(&client, &software2, &[first], &title2)
                })
                .await
                .expect("the sample's request does not panic")?;
                Some(Sample {
                    software_release: software,
                    title,
                })
            }
        };

        let client_config = dir.join("client.cfg");
        let console = match &tls {
            Some(t) => format!(
                "cert_file = {}\nkey_file = {}\nmaster_ca_file = {}\n",
                t.admin_cert.display(),
                t.admin_key.display(),
                t.ca.display()
            ),
            None => String::new(),
        };
        files::write(
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
        let file = ClusterFile {
            dir: dir.clone(),
            started_at_unix: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or_default(),
            processes,
            gateway_urls: urls,
            master_api_addrs: api_addrs,
            admin: AdminClient {
                client_config,
                certificate: tls.as_ref().map(|t| t.admin_cert.clone()),
                key: tls.as_ref().map(|t| t.admin_key.clone()),
                ca: tls.as_ref().map(|t| t.ca.clone()),
                master_tls_env,
            },
            nodes,
            hosted_replicas: hosted,
            sample,
            partitions_dir: made.outside.clone(),
        };
        let json = dir.join("cluster.json");
        // whole or not at all: whoever waits for it reads it once it exists
        let tmp = dir.join("cluster.json.tmp");
        files::write(
            &tmp,
            serde_json::to_vec_pretty(&file).expect("cluster.json serializes"),
        )?;
        files::rename(&tmp, &json)?;
        Ok(LocalCluster {
            made,
            file,
            json,
            tls,
        })
    }

    /// What cluster.json says.
    pub fn description(&self) -> &ClusterFile {
        &self.file
    }

    /// Where cluster.json is.
    pub fn description_path(&self) -> &Path {
        &self.json
    }

    /// The admin's and operator's certificates (None with `insecure`).
    pub fn tls(&self) -> Option<&ClusterTls> {
        self.tls.as_ref()
    }

    /// Waits (up to `timeout`) until the sample instance publishes its connection
    /// parameters; None without a sample (no node).
    pub async fn sample_connection(
        &self,
        timeout: Duration,
    ) -> Option<Result<Vec<(String, String)>, OperatorError>> {
        let sample = self.file.sample.clone()?;
        let urls = self.file.gateway_urls.clone();
        let tls = self.tls.clone();
        let waiting = tokio::task::spawn_blocking(move || {
            let client = nodes::admin_client(&urls, tls.as_ref())?;
            nodes::wait_connection(&client, &sample.software_release, &sample.title, timeout)
        });
        Some(
            waiting
                .await
                .expect("waiting for the sample does not panic"),
        )
    }

    /// Forever: every second, reports (as warnings) the processes of its own that exited.
    pub async fn watch(&mut self, progress: &dyn Progress) {
        let mut ticker = tokio::time::interval(Duration::from_secs(1));
        loop {
            ticker.tick().await;
            for (name, status) in self.made.children.reap() {
                progress.warn(&format!(
                    "{name} exited ({status}); see its log in {}",
                    self.file.dir.display()
                ));
            }
        }
    }

    /// Stops every process, the nodes' services, removes the partitions' users and the
    /// namespaces, and cluster.json (the rest of the directory stays). Blocks until done.
    pub fn stop(self) {
        let LocalCluster { made, json, .. } = self;
        drop(made);
        let _ = std::fs::remove_file(&json);
    }
}

/// The gateways a node reads from, those of its own region first (a node fails over to
/// the others in the order given).
fn own_region_first(hosted: &[Added], region: Option<&str>) -> Vec<String> {
    let (mut mine, others): (Vec<&Added>, Vec<&Added>) = hosted
        .iter()
        .partition(|h| Some(h.region.as_str()) == region);
    mine.extend(others);
    mine.into_iter().map(|h| h.gateway_url.clone()).collect()
}

/// How many replicas `self_host` puts in partitions, where they listen, and their timers.
struct SelfHostPlan {
    count: u64,
    ports: ReplicaPorts,
    timers: Timers,
}

/// Where the hosted replicas listen.
enum ReplicaPorts {
    /// Each partition has an address of its own (namespaced nodes): the default ports.
    OwnAddresses,
    /// The partitions share loopback: three consecutive ports each, after --base-port
    /// when given, else free ones.
    Loopback(Option<u16>),
}

/// The master moves into partitions: `slapos cluster bootstrap` onto the first `count`
/// nodes (one region each), the seed (replica 1) leaving at its end; the release is
/// written into `<shared>/software/slapos-master`. In namespaces each
/// partition has its own address and the default ports; on loopback the partitions share
/// one, so each replica gets three consecutive free ports of its own.
async fn self_host(
    shared: &Path,
    tls: &ClusterTls,
    seed_apis: &[String],
    seed_gateway: &str,
    nodes: &[NodeInfo],
    plan: SelfHostPlan,
    progress: &dyn Progress,
) -> Result<Vec<Added>, OperatorError> {
    let SelfHostPlan {
        count,
        ports,
        timers,
    } = plan;
    let operator = Operator {
        via: seed_apis.to_vec(),
        gateway: seed_gateway.to_string(),
        cert: tls.admin_cert.clone(),
        key: tls.admin_key.clone(),
        ca: tls.ca.clone(),
        release: None,
        release_dir: shared.join("software/slapos-master"),
        timeout_secs: 300,
    };
    // The releases are read by the nodes' software users.
    let software = shared.join("software");
    files::create_dir_all(&software)?;
    if slapgrid::process::is_root() {
        files::set_mode(&software, 0o755)?;
    }
    let mut computers = Vec::new();
    for (i, node) in nodes.iter().take(count as usize).enumerate() {
        let ports = match ports {
            // the default ports, on each partition's own address
            ReplicaPorts::OwnAddresses => None,
            ReplicaPorts::Loopback(base) => {
                let first = match base {
                    // after the seed's four ports
                    Some(b) => b.checked_add(4 + 3 * i as u16),
                    None => Some(consecutive_unused_ports(3)?),
                };
                match first.map(|p| (p, p.checked_add(1), p.checked_add(2))) {
                    Some((raft_port, Some(api_port), Some(gateway_port))) => Some(Ports {
                        raft_port,
                        api_port,
                        gateway_port,
                    }),
                    _ => crate::error::refuse!("--base-port too high"),
                }
            }
        };
        computers.push(Host {
            computer: node.computer_id.clone(),
            ports,
        });
    }
    bootstrap(
        &Bootstrap {
            operator,
            computers,
            first_id: Some(2),
            ports: Default::default(),
            timers,
            backups: Default::default(),
            presented_cert: None,
            // `up` writes its own (client.cfg, every gateway) and stops its seed itself
            client_config: None,
            seed: SeedProcesses::Caller,
        },
        progress,
    )
    .await
}
