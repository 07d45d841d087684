//! A cluster of real `slapos master run` processes, with a gateway beside each when
//! asked: on loopback ports, or each on its own host (network namespace) of a
//! [`Network`].

use master_client::MasterClient;
use master_replica::node::{ReplicaConfig, SnapshotPolicy, Timers};
use slapos_operator::netns::Network;
use slapos_proto::rpc::master::AddReplicaRequest;
use std::collections::BTreeMap;
use std::fs::File;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("{0}: {1}")]
    Io(String, std::io::Error),
    #[error("`slapos {args}` failed: {output}")]
    Command { args: String, output: String },
    #[error("{0}")]
    Timeout(String),
    #[error("master client: {0}")]
    Client(#[from] master_client::ClientError),
    #[error("refused by the master: {0}")]
    Domain(String),
    #[error("unknown replica {0}")]
    Unknown(u64),
}

struct ReplicaProcess {
    config: ReplicaConfig,
    config_path: PathBuf,
    log_path: PathBuf,
    child: Option<Child>,
    /// The host (namespace index) it runs on; 0 on loopback.
    host: usize,
}

struct GatewayProcess {
    addr: String,
    config_path: PathBuf,
    log_path: PathBuf,
    child: Option<Child>,
}

/// Where processes run: one namespace per host, or loopback.
#[derive(Debug, Clone)]
pub struct Hosts {
    /// Per host (index 1..): namespace, IPv6 and IPv4 address.
    pub hosts: Vec<(String, std::net::Ipv6Addr, std::net::Ipv4Addr)>,
}

impl Hosts {
    pub fn of(net: &Network) -> Self {
        Hosts {
            hosts: (1..=net.hosts())
                .map(|i| (net.host_ns(i), net.v6(i), net.v4(i)))
                .collect(),
        }
    }
}

/// Replicas (and gateways) as child processes; all are killed when the cluster is dropped.
pub struct ProcessCluster {
    bin: PathBuf,
    dir: PathBuf,
    replicas: BTreeMap<u64, ReplicaProcess>,
    gateways: BTreeMap<usize, GatewayProcess>,
    hosts: Option<Hosts>,
    pub timers: Timers,
    pub snapshot: SnapshotPolicy,
    /// Extra lines for each gateway's configuration (before its `[slap]` table).
    pub gateway_extra: String,
}

/// Start `command <config>` with its output appended to `log`.
fn spawn_logged(mut command: Command, config: &Path, log: &Path) -> Result<Child, ClusterError> {
    let out = File::options()
        .create(true)
        .append(true)
        .open(log)
        .map_err(|e| ClusterError::Io(log.display().to_string(), e))?;
    let err = out
        .try_clone()
        .map_err(|e| ClusterError::Io("log".into(), e))?;
    command
        .arg(config)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .map_err(|e| ClusterError::Io(format!("spawn {}", config.display()), e))
}

/// A loopback port nobody listens on right now.
pub fn free_port() -> Result<u16, ClusterError> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(|e| ClusterError::Io("bind".into(), e))?;
    l.local_addr()
        .map(|a| a.port())
        .map_err(|e| ClusterError::Io("local_addr".into(), e))
}

impl ProcessCluster {
    pub fn new(bin: &Path, dir: &Path) -> Self {
        ProcessCluster {
            bin: bin.to_path_buf(),
            dir: dir.to_path_buf(),
            replicas: BTreeMap::new(),
            gateways: BTreeMap::new(),
            hosts: None,
            timers: Timers::default(),
            snapshot: SnapshotPolicy::default(),
            gateway_extra: String::new(),
        }
    }

    /// Run replica `id` (and gateway) on host `id` of these namespaces.
    pub fn on_hosts(mut self, hosts: Hosts) -> Self {
        self.hosts = Some(hosts);
        self
    }

    /// A command that runs the `slapos` binary on `host` (plainly on loopback).
    fn command_on(&self, host: usize) -> Command {
        match self
            .hosts
            .as_ref()
            .and_then(|h| h.hosts.get(host.wrapping_sub(1)))
        {
            Some((ns, _, _)) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(&self.bin);
                c
            }
            None => Command::new(&self.bin),
        }
    }

    /// Addresses for a process on `host`: (Raft, API, metrics, gateway).
    fn addresses(&self, host: usize) -> Result<[String; 4], ClusterError> {
        match self
            .hosts
            .as_ref()
            .and_then(|h| h.hosts.get(host.wrapping_sub(1)))
        {
            // Raft over IPv4 between hosts; the API, metrics and gateway on IPv6, which the
            // harness reaches from the root namespace.
            Some((_, v6, v4)) => Ok([
                format!("{v4}:7101"),
                format!("[{v6}]:7201"),
                format!("[{v6}]:7301"),
                format!("[{v6}]:8080"),
            ]),
            None => Ok([
                format!("127.0.0.1:{}", free_port()?),
                format!("127.0.0.1:{}", free_port()?),
                format!("127.0.0.1:{}", free_port()?),
                format!("127.0.0.1:{}", free_port()?),
            ]),
        }
    }

    fn slapos(&self, args: &[&str]) -> Result<String, ClusterError> {
        let out = Command::new(&self.bin)
            .args(args)
            .output()
            .map_err(|e| ClusterError::Io(format!("run {}", self.bin.display()), e))?;
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        if !out.status.success() {
            return Err(ClusterError::Command {
                args: args.join(" "),
                output: text,
            });
        }
        Ok(text)
    }

    /// Write the configuration of replica `id` (new ports) without starting it; on
    /// hosts, it goes to host `id`.
    pub fn configure(&mut self, id: u64) -> Result<(), ClusterError> {
        let host = if self.hosts.is_some() { id as usize } else { 0 };
        self.configure_on(id, host)
    }

    /// Write the configuration of replica `id` on `host` without starting it.
    pub fn configure_on(&mut self, id: u64, host: usize) -> Result<(), ClusterError> {
        let [raft, api, metrics, _] = self.addresses(host)?;
        let config = ReplicaConfig {
            metrics_addr: Some(metrics),
            region: format!("region-{}", if host == 0 { id as usize } else { host }),
            timers: self.timers.clone(),
            snapshot: self.snapshot.clone(),
            ..ReplicaConfig::new(id, raft, api, self.dir.join(format!("replica-{id}")))
        };
        let config_path = self.dir.join(format!("replica-{id}.toml"));
        std::fs::write(&config_path, config.to_toml())
            .map_err(|e| ClusterError::Io(config_path.display().to_string(), e))?;
        self.replicas.insert(
            id,
            ReplicaProcess {
                config,
                config_path,
                log_path: self.dir.join(format!("replica-{id}.log")),
                child: None,
                host,
            },
        );
        Ok(())
    }

    /// Start the process of a configured replica (again).
    pub fn spawn(&mut self, id: u64) -> Result<(), ClusterError> {
        let host = self
            .replicas
            .get(&id)
            .ok_or(ClusterError::Unknown(id))?
            .host;
        let mut command = self.command_on(host);
        let r = self
            .replicas
            .get_mut(&id)
            .ok_or(ClusterError::Unknown(id))?;
        command.args(["master", "run", "--config"]);
        r.child = Some(spawn_logged(command, &r.config_path, &r.log_path)?);
        Ok(())
    }

    /// Start `n` replicas: init the first, then join the others one at a time.
    pub async fn start(&mut self, n: u64) -> Result<(), ClusterError> {
        std::fs::create_dir_all(&self.dir)
            .map_err(|e| ClusterError::Io(self.dir.display().to_string(), e))?;
        for id in 1..=n {
            self.configure(id)?;
        }
        let first = self.replicas[&1].config_path.display().to_string();
        self.slapos(&["master", "init", "--config", &first])?;
        for id in 1..=n {
            self.spawn(id)?;
        }
        self.wait_leader(Duration::from_secs(20)).await?;
        for id in 2..=n {
            self.join(id).await?;
        }
        Ok(())
    }

    pub async fn join(&mut self, id: u64) -> Result<(), ClusterError> {
        let r = self.replicas.get(&id).ok_or(ClusterError::Unknown(id))?;
        let node = r.config.node_info();
        let mut client = self.client().with_deadline(Duration::from_secs(60));
        client.call_timeout = Duration::from_secs(50);
        client
            .add_replica(&AddReplicaRequest {
                id,
                raft_addr: node.raft_addr,
                api_addr: node.api_addr,
                region: node.region,
                hosted_by: node.hosted_by,
                gateway_url: node.gateway_url,
                voter: true,
            })
            .await?;
        Ok(())
    }

    /// A client over every replica's API address.
    pub fn client(&self) -> MasterClient {
        MasterClient::new(self.api_addrs())
    }

    pub fn api_addrs(&self) -> Vec<String> {
        self.replicas
            .values()
            .map(|r| r.config.api_addr.clone())
            .collect()
    }

    /// The API addresses of every replica but `id`.
    pub fn api_addrs_except(&self, id: u64) -> Vec<String> {
        self.replicas
            .iter()
            .filter(|(i, _)| **i != id)
            .map(|(_, r)| r.config.api_addr.clone())
            .collect()
    }

    pub fn api_addr(&self, id: u64) -> Option<&str> {
        self.replicas.get(&id).map(|r| r.config.api_addr.as_str())
    }

    pub fn ids(&self) -> Vec<u64> {
        self.replicas.keys().copied().collect()
    }

    /// The process id of a running replica.
    pub fn pid(&self, id: u64) -> Option<u32> {
        self.replicas.get(&id)?.child.as_ref().map(Child::id)
    }

    /// SIGKILL a replica's process.
    pub fn kill9(&mut self, id: u64) -> Result<(), ClusterError> {
        let r = self
            .replicas
            .get_mut(&id)
            .ok_or(ClusterError::Unknown(id))?;
        if let Some(mut c) = r.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        Ok(())
    }

    pub fn is_running(&self, id: u64) -> bool {
        self.replicas.get(&id).is_some_and(|r| r.child.is_some())
    }

    /// The leader that a running replica reports, waiting up to `timeout`.
    pub async fn wait_leader(&self, timeout: Duration) -> Result<u64, ClusterError> {
        crate::group::Group::wait_leader(self, timeout).await
    }

    /// Configure and start a gateway on `host` (1.. on hosts; any key on loopback) that
    /// talks to every replica, the one beside it first; its address comes back.
    pub fn start_gateway(&mut self, host: usize) -> Result<String, ClusterError> {
        let [_, _, _, addr] = self.addresses(host)?;
        let mut masters: Vec<String> = self
            .replicas
            .values()
            .filter(|r| r.host == host)
            .map(|r| r.config.api_addr.clone())
            .collect();
        masters.extend(
            self.replicas
                .values()
                .filter(|r| r.host != host)
                .map(|r| r.config.api_addr.clone()),
        );
        let config_path = self.dir.join(format!("gateway-{host}.toml"));
        let text = format!(
            "listen = \"{addr}\"\nmasters = {masters:?}\ninsecure_http = true\n{}\n",
            self.gateway_extra
        );
        std::fs::write(&config_path, text)
            .map_err(|e| ClusterError::Io(config_path.display().to_string(), e))?;
        self.gateways.insert(
            host,
            GatewayProcess {
                addr: addr.clone(),
                config_path,
                log_path: self.dir.join(format!("gateway-{host}.log")),
                child: None,
            },
        );
        self.spawn_gateway(host)?;
        Ok(addr)
    }

    /// A gateway on each of hosts `1..=n`, returned once each accepts connections.
    pub async fn start_gateways(&mut self, n: usize) -> Result<Vec<String>, ClusterError> {
        let mut addrs = Vec::new();
        for host in 1..=n {
            let addr = self.start_gateway(host)?;
            let deadline = Instant::now() + Duration::from_secs(20);
            while tokio::net::TcpStream::connect(&addr).await.is_err() {
                if Instant::now() > deadline {
                    return Err(ClusterError::Timeout(format!(
                        "gateway {addr} did not start"
                    )));
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            addrs.push(addr);
        }
        Ok(addrs)
    }

    /// Start a configured gateway's process (again).
    pub fn spawn_gateway(&mut self, host: usize) -> Result<(), ClusterError> {
        let mut command = self.command_on(host);
        let g = self
            .gateways
            .get_mut(&host)
            .ok_or(ClusterError::Unknown(host as u64))?;
        command.args(["gateway", "run", "--insecure-http", "--config"]);
        g.child = Some(spawn_logged(command, &g.config_path, &g.log_path)?);
        Ok(())
    }

    /// SIGKILL a gateway's process.
    pub fn kill_gateway(&mut self, host: usize) {
        if let Some(mut c) = self.gateways.get_mut(&host).and_then(|g| g.child.take()) {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Gateway addresses by host.
    pub fn gateway_addrs(&self) -> Vec<(usize, String)> {
        self.gateways
            .iter()
            .map(|(h, g)| (*h, g.addr.clone()))
            .collect()
    }

    /// The host a replica runs on.
    pub fn host_of(&self, id: u64) -> Option<usize> {
        self.replicas.get(&id).map(|r| r.host)
    }

    /// The replica running on `host`.
    pub fn replica_on(&self, host: usize) -> Option<u64> {
        self.replicas
            .iter()
            .find(|(_, r)| r.host == host)
            .map(|(id, _)| *id)
    }

    /// Send a signal (`STOP`, `CONT`...) to a replica's process.
    pub fn signal(&self, id: u64, signal: &str) -> Result<(), ClusterError> {
        let pid = self
            .replicas
            .get(&id)
            .and_then(|r| r.child.as_ref())
            .map(|c| c.id())
            .ok_or(ClusterError::Unknown(id))?;
        let out = Command::new("kill")
            .args([&format!("-{signal}"), &pid.to_string()])
            .output()
            .map_err(|e| ClusterError::Io("kill".into(), e))?;
        if !out.status.success() {
            return Err(ClusterError::Command {
                args: format!("kill -{signal} {pid}"),
                output: String::from_utf8_lossy(&out.stderr).into(),
            });
        }
        Ok(())
    }

    /// Take replica `old` out of the group, kill it, wipe its data directory, and bring
    /// the same host back as a new, empty replica `new` that joins (and catches up).
    pub async fn replace_wiped(&mut self, old: u64, new: u64) -> Result<(), ClusterError> {
        let host = self.host_of(old).ok_or(ClusterError::Unknown(old))?;
        let mut client = self.client().with_deadline(Duration::from_secs(30));
        client.remove_replica(old).await?;
        self.kill9(old)?;
        let addresses = self.replicas.remove(&old).map(|r| {
            let _ = std::fs::remove_dir_all(&r.config.data_dir);
            r.config
        });
        self.configure_on(new, host)?;
        // the same host keeps its addresses (on loopback too), which gateways and
        // clients know
        if let (Some(old), Some(r)) = (addresses, self.replicas.get_mut(&new)) {
            r.config.raft_addr = old.raft_addr;
            r.config.api_addr = old.api_addr;
            r.config.metrics_addr = old.metrics_addr;
            std::fs::write(&r.config_path, r.config.to_toml())
                .map_err(|e| ClusterError::Io(r.config_path.display().to_string(), e))?;
        }
        self.spawn(new)?;
        self.join(new).await
    }

    /// Undo whatever a fault may have left: SIGCONT every replica, respawn every replica
    /// and gateway that is not running.
    pub fn restore_all(&mut self) {
        for id in self.ids() {
            if self.is_running(id) {
                let _ = self.signal(id, "CONT");
            } else if let Err(e) = self.spawn(id) {
                tracing::warn!(id, error = %e, "respawn");
            }
        }
        let down: Vec<usize> = self
            .gateways
            .iter()
            .filter(|(_, g)| g.child.is_none())
            .map(|(h, _)| *h)
            .collect();
        for host in down {
            if let Err(e) = self.spawn_gateway(host) {
                tracing::warn!(host, error = %e, "respawn gateway");
            }
        }
    }

    /// The status every running replica reports (unreachable ones are left out).
    pub async fn statuses(&self) -> Vec<slapos_proto::rpc::master::StatusResponse> {
        crate::group::Group::statuses(self).await
    }

    /// The replica's log, for failure reports.
    pub fn log(&self, id: u64) -> String {
        self.replicas
            .get(&id)
            .and_then(|r| std::fs::read_to_string(&r.log_path).ok())
            .unwrap_or_default()
    }
}

impl Drop for ProcessCluster {
    fn drop(&mut self) {
        for g in self.gateways.values_mut() {
            if let Some(mut c) = g.child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
        for r in self.replicas.values_mut() {
            if let Some(mut c) = r.child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}
