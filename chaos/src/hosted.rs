//! The group under test hosted in partitions: `slapos up`'s self-hosted default (a node
//! per replica, each in its own network namespace, the replica and its gateway each in a
//! partition of their own, so as two Unix users, supervised by the node's slapgrid,
//! every link under mTLS), driven from outside as an operator and its users would.
//!
//! Faults act on the nodes: a crash kills a node outright (its agent, its supervisor and
//! every process of its partitions' users, SIGKILL) and recovery starts its agent again
//! in its namespace (the supervisor then restarts the replica from its data); a pause
//! stops the replica's process; cuts are made in the router of `slapos up`'s network; a
//! gateway is killed as its partition's user (every process of that user), and the
//! node's supervisor restarts it on its own. The workload talks to
//! the gateways in the partitions with certificates: the admin person's, and those of
//! the two computers it formats, issued by the operator through the master API.

use crate::cluster::ClusterError;
use crate::faults::FaultKind;
use crate::group::Group;
use crate::workload::{Identities, COMPUTER, SPARE_COMPUTER};
use master_client::MasterClient;
use serde_json::Value;
use slapos_operator::netns::Network;
use slapos_proto::rpc::master::IssueRequest;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

struct Replica {
    api_addr: String,
    host: usize,
    /// The Unix user of its partition.
    user: String,
    /// The Unix user of its gateway's partition.
    gateway_user: String,
}

struct Node {
    computer: String,
    netns: String,
    config: PathBuf,
    /// Partition users are `<users>u<i>`.
    users: String,
    partitions: usize,
    /// The agent `slapos up` started, until a crash killed it.
    first_agent: Option<u32>,
    /// The agent this harness started again after a crash.
    agent: Option<Child>,
    down: bool,
}

/// `slapos up`, stopped as its Ctrl-C would (SIGTERM: it stops the nodes, removes their
/// users and its namespaces) when dropped, also on an error while starting.
struct UpProcess(Child);

impl Drop for UpProcess {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .output();
        let deadline = Instant::now() + Duration::from_secs(120);
        while Instant::now() < deadline && matches!(self.0.try_wait(), Ok(None)) {
            std::thread::sleep(Duration::from_millis(200));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub struct HostedCluster {
    bin: PathBuf,
    dir: PathBuf,
    up: Option<UpProcess>,
    replicas: BTreeMap<u64, Replica>,
    nodes: BTreeMap<usize, Node>,
    gateways: BTreeMap<usize, String>,
    /// The network of `slapos up`, attached (cuts and heals only): the run takes it.
    pub net: Option<Network>,
    pub identities: Identities,
}

fn io(what: &str, e: std::io::Error) -> ClusterError {
    ClusterError::Io(what.to_string(), e)
}

fn bad(what: impl Into<String>) -> ClusterError {
    ClusterError::Domain(what.into())
}

/// `pkill -<signal> <args>` (nothing matching is not an error).
fn pkill(signal: &str, args: &[&str]) {
    let _ = Command::new("pkill")
        .arg(format!("-{signal}"))
        .args(args)
        .output();
}

impl HostedCluster {
    /// `slapos up` with `replicas` nodes (and replicas) under `dir/up`, once it described
    /// the group; the computers' certificates issued.
    pub async fn start(bin: &Path, dir: &Path, replicas: u64) -> Result<Self, ClusterError> {
        let up_dir = dir.join("up");
        let log = |name: &str| {
            std::fs::File::create(dir.join(name)).map_err(|e| io(&format!("create {name}"), e))
        };
        let up = Command::new(bin)
            .args([
                "up",
                "--replicas",
                &replicas.to_string(),
                "--partitions",
                "3",
            ])
            .arg("--dir")
            .arg(&up_dir)
            .stdin(Stdio::null())
            .stdout(log("up.log")?)
            .stderr(log("up.err")?)
            .spawn()
            .map_err(|e| io("start slapos up", e))?;
        let mut up = UpProcess(up);
        let json = up_dir.join("cluster.json");
        let deadline = Instant::now() + Duration::from_secs(400);
        while !json.exists() {
            let tail = || std::fs::read_to_string(dir.join("up.err")).unwrap_or_default();
            if let Ok(Some(status)) = up.0.try_wait() {
                return Err(bad(format!("slapos up exited ({status}): {}", tail())));
            }
            if Instant::now() > deadline {
                return Err(ClusterError::Timeout(format!(
                    "slapos up described no group within 400 s: {}",
                    tail()
                )));
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        let text = std::fs::read(&json).map_err(|e| io("read cluster.json", e))?;
        let cluster: Value =
            serde_json::from_slice(&text).map_err(|e| bad(format!("cluster.json: {e}")))?;
        let mut this = HostedCluster::describe(bin, dir, up, &cluster)?;
        this.identities = this.issue_identities(&cluster).await?;
        Ok(this)
    }

    /// Nodes, replicas and gateways from `cluster.json` (a placeholder identity set until
    /// the certificates are issued).
    fn describe(bin: &Path, dir: &Path, up: UpProcess, c: &Value) -> Result<Self, ClusterError> {
        let s = |v: &Value| v.as_str().unwrap_or_default().to_string();
        let admin = &c["admin"];
        let operator_env = s(&admin["master_tls_env"]);
        let env: BTreeMap<&str, &str> = operator_env
            .split(' ')
            .filter_map(|kv| kv.split_once('='))
            .collect();
        let file = |k: &str| {
            env.get(k)
                .map(PathBuf::from)
                .ok_or_else(|| bad(format!("cluster.json: no {k} in master_tls_env")))
        };
        master_client::tls::set_client(&master_client::tls::TlsFiles {
            cert: file("SLAPOS_MASTER_TLS_CERT")?,
            key: file("SLAPOS_MASTER_TLS_KEY")?,
            ca: file("SLAPOS_MASTER_TLS_CA")?,
        })
        .map_err(|e| bad(format!("the operator's certificate: {e}")))?;
        let first_agents: BTreeMap<String, u32> = c["processes"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|p| p["role"] == "node")
            .filter_map(|p| Some((s(&p["config"]), p["pid"].as_u64()? as u32)))
            .collect();
        let mut nodes = BTreeMap::new();
        let mut pid = None;
        for n in c["nodes"].as_array().into_iter().flatten() {
            let netns = s(&n["netns"]);
            // slapos-up-<pid>-h<i>
            let mut parts = netns.rsplit('-');
            let host = parts
                .next()
                .and_then(|h| h.strip_prefix('h'))
                .and_then(|h| h.parse::<usize>().ok());
            pid = parts.next().and_then(|p| p.parse::<u32>().ok()).or(pid);
            let (Some(host), false) = (host, n["users"].is_null()) else {
                return Err(bad(format!(
                    "node {} runs in no namespace of its own with partition users \
                     (run as root, without --loopback)",
                    s(&n["computer_id"])
                )));
            };
            let config = s(&n["config"]);
            nodes.insert(
                host,
                Node {
                    computer: s(&n["computer_id"]),
                    netns,
                    first_agent: first_agents.get(&config).copied(),
                    config: PathBuf::from(config),
                    users: s(&n["users"]),
                    partitions: n["partitions"].as_u64().unwrap_or(3) as usize,
                    agent: None,
                    down: false,
                },
            );
        }
        let pid = pid.ok_or_else(|| bad("cluster.json: no node namespace"))?;
        let mut replicas = BTreeMap::new();
        let mut gateways = BTreeMap::new();
        for h in c["hosted_replicas"].as_array().into_iter().flatten() {
            let id = h["id"]
                .as_u64()
                .ok_or_else(|| bad("cluster.json: a hosted replica without id"))?;
            let computer = s(&h["computer"]);
            let (&host, node) = nodes
                .iter()
                .find(|(_, n)| n.computer == computer)
                .ok_or_else(|| bad(format!("replica {id}: no node {computer}")))?;
            // slappart<i> runs as <users>u<i>
            let user_of = |partition: &str| {
                format!(
                    "{}u{}",
                    node.users,
                    partition.trim_start_matches("slappart")
                )
            };
            let gateway_partition = s(&h["gateway_partition"]);
            if gateway_partition.is_empty() {
                return Err(bad(format!(
                    "cluster.json: replica {id}'s gateway partition"
                )));
            }
            replicas.insert(
                id,
                Replica {
                    api_addr: s(&h["api_addr"]),
                    host,
                    user: user_of(&s(&h["partition"])),
                    gateway_user: user_of(&gateway_partition),
                },
            );
            let url = s(&h["gateway_url"]);
            let addr = url
                .trim_start_matches("https://")
                .trim_end_matches('/')
                .to_string();
            gateways.insert(host, addr);
        }
        if replicas.is_empty() {
            return Err(bad("cluster.json: no hosted replica"));
        }
        let ca = PathBuf::from(s(&admin["ca"]));
        let person = client_config(
            Some((
                Path::new(&s(&admin["certificate"])),
                Path::new(&s(&admin["key"])),
            )),
            &ca,
        )?;
        eprintln!(
            "chaos: slapos up (pid {pid}) runs its nodes in {}",
            nodes
                .values()
                .map(|n| n.netns.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
        Ok(HostedCluster {
            bin: bin.to_owned(),
            dir: dir.to_owned(),
            up: Some(up),
            net: Some(Network::attach("up", pid, nodes.len())),
            replicas,
            nodes,
            gateways,
            identities: Identities {
                computer: person.clone(),
                spare: person.clone(),
                person,
            },
        })
    }

    /// The admin's certificate for the person; the two computers' issued now by the
    /// operator (a key made here, only its signing request sent).
    async fn issue_identities(&self, c: &Value) -> Result<Identities, ClusterError> {
        let admin = &c["admin"];
        let ca = PathBuf::from(admin["ca"].as_str().unwrap_or_default());
        let tls = self.dir.join("tls");
        std::fs::create_dir_all(&tls).map_err(|e| io("create tls/", e))?;
        let mut client = self.client().with_deadline(Duration::from_secs(30));
        let mut issue = async |computer: &str| -> Result<Arc<rustls::ClientConfig>, ClusterError> {
            let identity = slapos_domain::Identity::Computer(computer.to_string());
            let (key, csr) = slapos_ca::new_key_and_csr(&identity)
                .map_err(|e| bad(format!("a key for {computer}: {e}")))?;
            let (cert, _) = client
                .issue(&IssueRequest {
                    csr_pem: csr,
                    identity: identity.common_name(),
                    ..Default::default()
                })
                .await?;
            let (cert_path, key_path) = (
                tls.join(format!("{computer}.crt")),
                tls.join(format!("{computer}.key")),
            );
            std::fs::write(&cert_path, cert).map_err(|e| io("write a certificate", e))?;
            std::fs::write(&key_path, key).map_err(|e| io("write a key", e))?;
            client_config(Some((&cert_path, &key_path)), &ca)
        };
        let computer = issue(COMPUTER).await?;
        let spare = issue(SPARE_COMPUTER).await?;
        Ok(Identities {
            person: self.identities.person.clone(),
            computer,
            spare,
        })
    }

    /// The gateways in the partitions (`[address]:port`), by host.
    pub fn gateways(&self) -> Vec<String> {
        self.gateways.values().cloned().collect()
    }

    pub fn api_addrs(&self) -> Vec<String> {
        self.replicas.values().map(|r| r.api_addr.clone()).collect()
    }

    /// The pid of replica `id`'s process (`slapos master run` as its partition's user).
    fn replica_pid(&self, id: u64) -> Option<u32> {
        let r = self.replicas.get(&id)?;
        let out = Command::new("pgrep")
            .args(["-u", &r.user, "-f", "master run --config"])
            .output()
            .ok()?;
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .next()
            .and_then(|p| p.parse().ok())
    }

    fn node_of(&self, id: u64) -> Result<usize, ClusterError> {
        self.replicas
            .get(&id)
            .map(|r| r.host)
            .ok_or(ClusterError::Unknown(id))
    }
}

fn client_config(
    identity: Option<(&Path, &Path)>,
    ca: &Path,
) -> Result<Arc<rustls::ClientConfig>, ClusterError> {
    slapgrid::client::client_tls_config(identity, ca)
        .map(Arc::new)
        .map_err(|e| bad(format!("TLS client: {e}")))
}

impl Group for HostedCluster {
    fn ids(&self) -> Vec<u64> {
        self.replicas.keys().copied().collect()
    }

    fn api_addr(&self, id: u64) -> Option<&str> {
        self.replicas.get(&id).map(|r| r.api_addr.as_str())
    }

    fn is_running(&self, id: u64) -> bool {
        self.replicas
            .get(&id)
            .and_then(|r| self.nodes.get(&r.host))
            .is_some_and(|n| !n.down)
    }

    fn host_of(&self, id: u64) -> Option<usize> {
        self.replicas.get(&id).map(|r| r.host)
    }

    fn client(&self) -> MasterClient {
        MasterClient::new(self.api_addrs())
    }

    /// The node of replica `id`, killed outright.
    fn crash(&mut self, id: u64) -> Result<String, ClusterError> {
        let host = self.node_of(id)?;
        let node = self.nodes.get_mut(&host).ok_or(ClusterError::Unknown(id))?;
        if let Some(pid) = node.first_agent.take() {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).output();
        }
        if let Some(mut agent) = node.agent.take() {
            let _ = agent.kill();
            let _ = agent.wait();
        }
        let supervisor = format!("node supervisord --cfg {}", node.config.display());
        pkill("KILL", &["-f", &supervisor]);
        for i in 0..node.partitions {
            pkill("KILL", &["-u", &format!("{}u{i}", node.users)]);
        }
        // and whatever its software user was building
        pkill("KILL", &["-u", &format!("{}s", node.users)]);
        node.down = true;
        Ok(format!("node {} (replica {id})", node.computer))
    }

    /// Its node's agent started again in its namespace: the supervisor comes back and
    /// restarts the replica and its gateway from the partition's data.
    fn recover(&mut self, id: u64) -> Result<(), ClusterError> {
        let host = self.node_of(id)?;
        let bin = self.bin.clone();
        let log_path = self.dir.join(format!("agent-{host}.log"));
        let node = self.nodes.get_mut(&host).ok_or(ClusterError::Unknown(id))?;
        // 0640, root's: the partition users may not read what the agent logs.
        let log =
            slapgrid::node::open_log(&log_path, true).map_err(|e| io("open the agent's log", e))?;
        let err = log.try_clone().map_err(|e| io("the agent's log", e))?;
        let child = Command::new("ip")
            .args(["netns", "exec", &node.netns])
            .arg(&bin)
            .args(["node", "daemon", "--cfg"])
            .arg(&node.config)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err)
            .spawn()
            .map_err(|e| io("start a node agent", e))?;
        node.agent = Some(child);
        node.down = false;
        Ok(())
    }

    fn signal(&self, id: u64, signal: &str) -> Result<(), ClusterError> {
        let pid = self
            .replica_pid(id)
            .ok_or_else(|| bad(format!("replica {id} runs no process")))?;
        let out = Command::new("kill")
            .args([&format!("-{signal}"), &pid.to_string()])
            .output()
            .map_err(|e| io("kill", e))?;
        if !out.status.success() {
            return Err(ClusterError::Command {
                args: format!("kill -{signal} {pid}"),
                output: String::from_utf8_lossy(&out.stderr).into(),
            });
        }
        Ok(())
    }

    async fn replace_wiped(&mut self, _old: u64, _new: u64) -> Result<(), ClusterError> {
        Err(bad(
            "a hosted replica is replaced with `slapos cluster add-replica` and \
             `remove-replica` (tests/self_hosting*.rs), not within a fault's hold",
        ))
    }

    fn gateway_addrs(&self) -> Vec<(usize, String)> {
        self.gateways.iter().map(|(h, a)| (*h, a.clone())).collect()
    }

    /// Every process of the gateway's partition user (the gateway, and whatever promise
    /// of its partition runs).
    fn kill_gateway(&mut self, host: usize) {
        if let Some(r) = self.replicas.values().find(|r| r.host == host) {
            pkill("KILL", &["-u", &r.gateway_user]);
        }
    }

    /// Nothing to do: the gateway is a watched service of its partition, which the
    /// node's supervisor restarts by itself.
    fn recover_gateway(&mut self, _host: usize) -> Result<(), ClusterError> {
        Ok(())
    }

    fn restore_all(&mut self) {
        let ids = self.ids();
        for id in &ids {
            if self.is_running(*id) {
                let _ = self.signal(*id, "CONT");
            } else if let Err(e) = self.recover(*id) {
                tracing::warn!(id, error = %e, "recover a node");
            }
        }
    }

    /// Every replica's process killed: its supervisor restarts it from the partition's
    /// data.
    fn restart_all_from_disk(&mut self) -> Result<(), ClusterError> {
        for r in self.replicas.values() {
            pkill("KILL", &["-u", &r.user, "-f", "master run --config"]);
        }
        Ok(())
    }

    fn not_injectable(&self) -> Vec<FaultKind> {
        vec![FaultKind::WipeRejoin]
    }
}

impl Drop for HostedCluster {
    /// The agents this harness started, then `slapos up` (which stops the nodes, removes
    /// their users and its namespaces).
    fn drop(&mut self) {
        for node in self.nodes.values_mut() {
            if let Some(mut agent) = node.agent.take() {
                let _ = Command::new("kill")
                    .args(["-TERM", &agent.id().to_string()])
                    .output();
                let deadline = Instant::now() + Duration::from_secs(20);
                while Instant::now() < deadline && matches!(agent.try_wait(), Ok(None)) {
                    std::thread::sleep(Duration::from_millis(100));
                }
                let _ = agent.kill();
                let _ = agent.wait();
            }
        }
        // then `slapos up` itself (UpProcess's drop)
        self.up.take();
    }
}
