//! A cluster of real `slapos master run` processes on loopback.

use master_node::raft::client::MasterClient;
use master_node::raft::node::{ReplicaConfig, SnapshotPolicy, Timers};
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
    Client(#[from] master_node::raft::client::ClientError),
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
}

/// Replicas as child processes; all are killed when the cluster is dropped.
pub struct ProcessCluster {
    bin: PathBuf,
    dir: PathBuf,
    replicas: BTreeMap<u64, ReplicaProcess>,
    pub timers: Timers,
    pub snapshot: SnapshotPolicy,
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
            timers: Timers::default(),
            snapshot: SnapshotPolicy::default(),
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

    /// Write the configuration of replica `id` (new ports) without starting it.
    pub fn configure(&mut self, id: u64) -> Result<(), ClusterError> {
        let config = ReplicaConfig {
            metrics_addr: Some(format!("127.0.0.1:{}", free_port()?)),
            region: format!("region-{id}"),
            timers: self.timers.clone(),
            snapshot: self.snapshot.clone(),
            ..ReplicaConfig::new(
                id,
                format!("127.0.0.1:{}", free_port()?),
                format!("127.0.0.1:{}", free_port()?),
                self.dir.join(format!("replica-{id}")),
            )
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
            },
        );
        Ok(())
    }

    /// Start the process of a configured replica (again).
    pub fn spawn(&mut self, id: u64) -> Result<(), ClusterError> {
        let r = self
            .replicas
            .get_mut(&id)
            .ok_or(ClusterError::Unknown(id))?;
        let log = File::options()
            .create(true)
            .append(true)
            .open(&r.log_path)
            .map_err(|e| ClusterError::Io(r.log_path.display().to_string(), e))?;
        let err = log
            .try_clone()
            .map_err(|e| ClusterError::Io("log".into(), e))?;
        let child = Command::new(&self.bin)
            .args(["master", "run", "--config"])
            .arg(&r.config_path)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err)
            .spawn()
            .map_err(|e| ClusterError::Io("spawn".into(), e))?;
        r.child = Some(child);
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

    pub fn api_addr(&self, id: u64) -> Option<&str> {
        self.replicas.get(&id).map(|r| r.config.api_addr.as_str())
    }

    pub fn ids(&self) -> Vec<u64> {
        self.replicas.keys().copied().collect()
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
        let deadline = Instant::now() + timeout;
        loop {
            for (id, r) in &self.replicas {
                if r.child.is_none() {
                    continue;
                }
                let mut c = MasterClient::single(&r.config.api_addr);
                c.call_timeout = Duration::from_millis(500);
                if let Ok(s) = c.status_of(&r.config.api_addr).await {
                    if s.state == "leader" && s.id == *id {
                        return Ok(*id);
                    }
                }
            }
            if Instant::now() > deadline {
                return Err(ClusterError::Timeout(format!(
                    "no leader within {} s",
                    timeout.as_secs()
                )));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
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
        for r in self.replicas.values_mut() {
            if let Some(mut c) = r.child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}
