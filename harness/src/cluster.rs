//! A cluster of real `slapos master run` processes, with a gateway beside each when
//! asked: on loopback ports, or each on its own host (network namespace) of a
//! [`Network`].
//!
//! Every replica gets its configuration file, data directory and log file (appended to,
//! a line marking each start) in the cluster's directory. The calls that start or wait
//! return a [`HarnessError`] with what they saw; nothing here panics. Every child is
//! SIGKILLed when the cluster is dropped.

use crate::faultyfs::FaultyDisk;
use crate::port::free_port;
use crate::HarnessError;
use master_client::MasterClient;
use master_replica::node::{ReplicaConfig, SnapshotPolicy, Timers};
use slapos_domain::{Entry, Query};
use slapos_operator::netns::Network;
use slapos_proto::rpc::master::{read_response, Consistency, StatusResponse};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs::File;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

struct ReplicaProcess {
    config: ReplicaConfig,
    config_path: PathBuf,
    log_path: PathBuf,
    child: Option<Child>,
    /// The host (namespace index) it runs on; 0 on loopback.
    host: usize,
    /// How many times its process was started.
    starts: u32,
    /// Its data directory's faulty disk, when the cluster gives each one
    /// ([`ProcessCluster::faulty_disk_mb`]); dropped (unmounted) after the process.
    disk: Option<FaultyDisk>,
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
    /// `RUST_LOG` of the replicas and gateways it starts (`warn` unless set).
    pub log_level: String,
    /// When set (root only), every replica configured from then on keeps its data
    /// directory on a [`FaultyDisk`] of this many MiB: a tmpfs seen through the FUSE
    /// passthrough, for disk faults ([`ProcessCluster::disk`]).
    pub faulty_disk_mb: Option<u64>,
}

/// Start `command <config>` with its output appended to `log`, after a line that says
/// which start of what this is.
fn spawn_logged(
    mut command: Command,
    config: &Path,
    log: &Path,
    banner: &str,
    log_level: &str,
) -> Result<Child, HarnessError> {
    let mut out = File::options()
        .create(true)
        .append(true)
        .open(log)
        .map_err(|e| HarnessError::Io(log.display().to_string(), e))?;
    writeln!(out, "===== {banner} =====")
        .map_err(|e| HarnessError::Io(log.display().to_string(), e))?;
    let err = out
        .try_clone()
        .map_err(|e| HarnessError::Io("log".into(), e))?;
    command
        .arg(config)
        .env("NO_COLOR", "1")
        .env("RUST_LOG", log_level)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .map_err(|e| HarnessError::Io(format!("spawn {}", config.display()), e))
}

/// The last `lines` lines of a log file, for failure reports.
pub fn tail(path: &Path, lines: usize) -> String {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let all: Vec<&str> = text.lines().collect();
            let from = all.len().saturating_sub(lines);
            let mut out = String::new();
            if from > 0 {
                let _ = writeln!(out, "[... {from} earlier lines]");
            }
            for l in &all[from..] {
                let _ = writeln!(out, "{l}");
            }
            out
        }
        Err(e) => format!("(cannot read {}: {e})\n", path.display()),
    }
}

/// What a finished command printed, for failure reports.
pub fn describe(output: &Output) -> String {
    format!(
        "exit: {}\nstdout:\n{}\nstderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// The status of the replica at `addr`, None when it does not answer within `timeout`.
pub async fn status_at(addr: &str, timeout: Duration) -> Option<StatusResponse> {
    let mut c = MasterClient::single(addr);
    c.call_timeout = timeout;
    c.status_of(addr).await.ok()
}

/// The first of these replicas (id, API address) that reports itself leader, waiting up
/// to `timeout`.
pub async fn wait_leader_among(
    replicas: &[(u64, String)],
    timeout: Duration,
) -> Result<u64, HarnessError> {
    let deadline = Instant::now() + timeout;
    loop {
        for (id, addr) in replicas {
            if let Some(s) = status_at(addr, Duration::from_millis(500)).await {
                if s.state == "leader" && s.id == *id {
                    return Ok(*id);
                }
            }
        }
        if Instant::now() > deadline {
            return Err(HarnessError::Timeout(format!(
                "no leader within {} s",
                timeout.as_secs()
            )));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The status each of these replicas reports (unreachable ones are left out).
pub async fn statuses_of(replicas: &[(u64, String)]) -> Vec<StatusResponse> {
    let mut out = Vec::new();
    for (_, addr) in replicas {
        if let Some(s) = status_at(addr, Duration::from_millis(500)).await {
            out.push(s);
        }
    }
    out
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
            log_level: "warn".into(),
            faulty_disk_mb: None,
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
    fn addresses(&self, host: usize) -> Result<[String; 4], HarnessError> {
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

    /// Run `slapos` with these arguments to completion (a command, not a replica) and
    /// return what it did; whether it succeeded is the caller's to judge.
    pub fn slapos_output(&self, args: &[&str]) -> Result<Output, HarnessError> {
        Command::new(&self.bin)
            .args(args)
            .env("NO_COLOR", "1")
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .output()
            .map_err(|e| HarnessError::Io(format!("run {} {args:?}", self.bin.display()), e))
    }

    /// Run `slapos` with these arguments, which must succeed; what it printed.
    pub fn slapos(&self, args: &[&str]) -> Result<String, HarnessError> {
        let out = self.slapos_output(args)?;
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        if !out.status.success() {
            return Err(HarnessError::Command {
                args: args.join(" "),
                output: text,
            });
        }
        Ok(text)
    }

    /// Write the configuration of replica `id` (new ports) without starting it; on
    /// hosts, it goes to host `id`.
    pub fn configure(&mut self, id: u64) -> Result<(), HarnessError> {
        let host = if self.hosts.is_some() { id as usize } else { 0 };
        self.configure_on(id, host)
    }

    /// Write the configuration of replica `id` on `host` without starting it.
    pub fn configure_on(&mut self, id: u64, host: usize) -> Result<(), HarnessError> {
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
            .map_err(|e| HarnessError::Io(config_path.display().to_string(), e))?;
        let disk = match self.faulty_disk_mb {
            Some(mb) => Some(FaultyDisk::mount(&config.data_dir, mb)?),
            None => None,
        };
        self.replicas.insert(
            id,
            ReplicaProcess {
                config,
                config_path,
                log_path: self.dir.join(format!("replica-{id}.log")),
                child: None,
                host,
                starts: 0,
                disk,
            },
        );
        Ok(())
    }

    /// Start the process of a configured replica (again).
    pub fn spawn(&mut self, id: u64) -> Result<(), HarnessError> {
        let host = self
            .replicas
            .get(&id)
            .ok_or(HarnessError::Unknown(id))?
            .host;
        let mut command = self.command_on(host);
        let r = self
            .replicas
            .get_mut(&id)
            .ok_or(HarnessError::Unknown(id))?;
        command.args(["master", "run", "--config"]);
        r.starts += 1;
        let banner = format!("start #{} of replica {id}", r.starts);
        r.child = Some(spawn_logged(
            command,
            &r.config_path,
            &r.log_path,
            &banner,
            &self.log_level,
        )?);
        Ok(())
    }

    /// Start the process of a configured replica (again) and wait until it serves its
    /// master API; an early exit or `timeout` is an error.
    pub async fn run(&mut self, id: u64, timeout: Duration) -> Result<(), HarnessError> {
        if self.is_running(id) {
            return Err(HarnessError::Domain(format!("replica {id} already runs")));
        }
        self.spawn(id)?;
        let deadline = Instant::now() + timeout;
        loop {
            if self.status(id).await.is_some() {
                return Ok(());
            }
            let r = self
                .replicas
                .get_mut(&id)
                .ok_or(HarnessError::Unknown(id))?;
            let exited = r.child.as_mut().and_then(|c| c.try_wait().ok().flatten());
            if let Some(status) = exited {
                r.child = None;
                return Err(HarnessError::Exited { id, status });
            }
            if Instant::now() > deadline {
                return Err(HarnessError::Timeout(format!(
                    "replica {id} does not serve its master API within {timeout:?}"
                )));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// `slapos master init`: bootstrap a group of one with replica `id` (not running).
    pub fn init(&self, id: u64) -> Result<(), HarnessError> {
        let config = self.config_path(id)?.display().to_string();
        self.slapos(&["master", "init", "--config", &config])
            .map(|_| ())
    }

    /// `slapos master join` of replica `id` via every other running replica (the real
    /// command, where [`ProcessCluster::join`] calls the master API itself); the caller
    /// judges the outcome.
    pub fn master_join(&self, id: u64) -> Result<Output, HarnessError> {
        let config = self.config_path(id)?.display().to_string();
        let via = self.running_api_addrs_except(&[id]).join(",");
        self.slapos_output(&["master", "join", "--config", &config, "--via", &via])
    }

    /// `slapos master leave --id <id>` via the running replicas other than `id`; the
    /// caller judges the outcome.
    pub fn master_leave(&self, id: u64) -> Result<Output, HarnessError> {
        let via = self.running_api_addrs_except(&[id]).join(",");
        self.slapos_output(&["master", "leave", "--id", &id.to_string(), "--via", &via])
    }

    /// Start `n` replicas: init the first, then join the others one at a time.
    pub async fn start(&mut self, n: u64) -> Result<(), HarnessError> {
        std::fs::create_dir_all(&self.dir)
            .map_err(|e| HarnessError::Io(self.dir.display().to_string(), e))?;
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

    pub async fn join(&mut self, id: u64) -> Result<(), HarnessError> {
        let r = self.replicas.get(&id).ok_or(HarnessError::Unknown(id))?;
        let request = r.config.add_replica_request(true);
        let mut client = self.client().with_deadline(Duration::from_secs(60));
        client.call_timeout = Duration::from_secs(50);
        client.add_replica(&request).await?;
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
    pub fn kill9(&mut self, id: u64) -> Result<(), HarnessError> {
        let r = self
            .replicas
            .get_mut(&id)
            .ok_or(HarnessError::Unknown(id))?;
        if let Some(mut c) = r.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        Ok(())
    }

    pub fn is_running(&self, id: u64) -> bool {
        self.replicas.get(&id).is_some_and(|r| r.child.is_some())
    }

    /// Whether replica `id`'s process exited by itself (a replica whose disk failed or
    /// filled exits); if so it is reaped, and no longer counts as running.
    pub fn reap_exited(&mut self, id: u64) -> bool {
        let Some(r) = self.replicas.get_mut(&id) else {
            return false;
        };
        let exited = r
            .child
            .as_mut()
            .is_some_and(|c| c.try_wait().ok().flatten().is_some());
        if exited {
            r.child = None;
        }
        exited
    }

    /// Replica `id`'s faulty disk, when the cluster gives each replica one.
    pub fn disk(&self, id: u64) -> Option<&FaultyDisk> {
        self.replicas.get(&id)?.disk.as_ref()
    }

    /// After a disk fault was healed: start replica `id` again if it stopped. A replica
    /// that stopped for its disk exits by itself (at once after an I/O error, within
    /// 2 s once a full disk has room again); one whose status says it runs is left
    /// alone. Waits up to `timeout` for either; true when it was started again.
    pub async fn restart_if_stopped(
        &mut self,
        id: u64,
        timeout: Duration,
    ) -> Result<bool, HarnessError> {
        let deadline = Instant::now() + timeout;
        loop {
            if self.reap_exited(id) || !self.is_running(id) {
                self.spawn(id)?;
                return Ok(true);
            }
            if let Some(s) = self.status(id).await {
                if !s.state.starts_with("stopped") {
                    return Ok(false);
                }
            }
            if Instant::now() > deadline {
                return Err(HarnessError::Timeout(format!(
                    "replica {id} neither runs nor exited within {timeout:?} after its disk was healed"
                )));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The leader that a running replica reports, waiting up to `timeout`.
    pub async fn wait_leader(&self, timeout: Duration) -> Result<u64, HarnessError> {
        wait_leader_among(&self.running_replicas(), timeout).await
    }

    /// Configure and start a gateway on `host` (1.. on hosts; any key on loopback) that
    /// talks to every replica, the one beside it first; its address comes back.
    pub fn start_gateway(&mut self, host: usize) -> Result<String, HarnessError> {
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
            .map_err(|e| HarnessError::Io(config_path.display().to_string(), e))?;
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
    pub async fn start_gateways(&mut self, n: usize) -> Result<Vec<String>, HarnessError> {
        let mut addrs = Vec::new();
        for host in 1..=n {
            let addr = self.start_gateway(host)?;
            let deadline = Instant::now() + Duration::from_secs(20);
            while tokio::net::TcpStream::connect(&addr).await.is_err() {
                if Instant::now() > deadline {
                    return Err(HarnessError::Timeout(format!(
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
    pub fn spawn_gateway(&mut self, host: usize) -> Result<(), HarnessError> {
        let mut command = self.command_on(host);
        let g = self
            .gateways
            .get_mut(&host)
            .ok_or(HarnessError::Unknown(host as u64))?;
        command.args(["gateway", "run", "--insecure-http", "--config"]);
        let banner = format!("start of the gateway on host {host}");
        g.child = Some(spawn_logged(
            command,
            &g.config_path,
            &g.log_path,
            &banner,
            &self.log_level,
        )?);
        Ok(())
    }

    /// SIGKILL a gateway's process.
    pub fn kill_gateway(&mut self, host: usize) {
        if let Some(mut c) = self.gateways.get_mut(&host).and_then(|g| g.child.take()) {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// The process id of a running gateway (the benchmarks read its CPU and memory).
    pub fn gateway_pid(&self, host: usize) -> Option<u32> {
        self.gateways.get(&host)?.child.as_ref().map(Child::id)
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
    pub fn signal(&self, id: u64, signal: &str) -> Result<(), HarnessError> {
        let pid = self
            .replicas
            .get(&id)
            .and_then(|r| r.child.as_ref())
            .map(|c| c.id())
            .ok_or(HarnessError::Unknown(id))?;
        let out = Command::new("kill")
            .args([&format!("-{signal}"), &pid.to_string()])
            .output()
            .map_err(|e| HarnessError::Io("kill".into(), e))?;
        if !out.status.success() {
            return Err(HarnessError::Command {
                args: format!("kill -{signal} {pid}"),
                output: String::from_utf8_lossy(&out.stderr).into(),
            });
        }
        Ok(())
    }

    /// Take replica `old` out of the group, kill it, wipe its data directory, and bring
    /// the same host back as a new, empty replica `new` that joins (and catches up).
    pub async fn replace_wiped(&mut self, old: u64, new: u64) -> Result<(), HarnessError> {
        let host = self.host_of(old).ok_or(HarnessError::Unknown(old))?;
        // A removal whose outcome was unknown (the group had no quorum) may have applied
        // since: the leader's membership says whether `old` is still to be removed.
        let still_member = self
            .statuses()
            .await
            .iter()
            .find(|s| s.state == "leader")
            .is_none_or(|s| s.members.iter().any(|m| m.id == old));
        if still_member {
            let mut client = self.client().with_deadline(Duration::from_secs(30));
            client.remove_replica(old).await?;
        }
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
                .map_err(|e| HarnessError::Io(r.config_path.display().to_string(), e))?;
        }
        self.spawn(new)?;
        self.join(new).await
    }

    /// Undo whatever a fault may have left: SIGCONT every replica, respawn every replica
    /// and gateway that is not running.
    pub fn restore_all(&mut self) {
        for id in self.ids() {
            self.reap_exited(id);
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
    pub async fn statuses(&self) -> Vec<StatusResponse> {
        statuses_of(&self.running_replicas()).await
    }

    /// The replica's log, for failure reports.
    pub fn log(&self, id: u64) -> String {
        self.replicas
            .get(&id)
            .and_then(|r| std::fs::read_to_string(&r.log_path).ok())
            .unwrap_or_default()
    }

    /// The directory the cluster writes its files in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The configuration replica `id` runs with.
    pub fn replica_config(&self, id: u64) -> Option<&ReplicaConfig> {
        self.replicas.get(&id).map(|r| &r.config)
    }

    /// Where replica `id`'s configuration file is.
    pub fn config_path(&self, id: u64) -> Result<&Path, HarnessError> {
        self.replicas
            .get(&id)
            .map(|r| r.config_path.as_path())
            .ok_or(HarnessError::Unknown(id))
    }

    /// Ids of the replicas whose process runs.
    pub fn running(&self) -> Vec<u64> {
        self.replicas
            .iter()
            .filter(|(_, r)| r.child.is_some())
            .map(|(id, _)| *id)
            .collect()
    }

    /// (id, API address) of the replicas whose process runs.
    fn running_replicas(&self) -> Vec<(u64, String)> {
        self.replicas
            .iter()
            .filter(|(_, r)| r.child.is_some())
            .map(|(id, r)| (*id, r.config.api_addr.clone()))
            .collect()
    }

    /// Master API addresses of the running replicas, except those of `except`.
    pub fn running_api_addrs_except(&self, except: &[u64]) -> Vec<String> {
        self.running_replicas()
            .into_iter()
            .filter(|(id, _)| !except.contains(id))
            .map(|(_, addr)| addr)
            .collect()
    }

    /// The status of replica `id`, None when it does not answer within 2 s.
    pub async fn status(&self, id: u64) -> Option<StatusResponse> {
        status_at(self.api_addr(id)?, Duration::from_secs(2)).await
    }

    /// Wait until one running replica leads, as a voter of its membership, and every
    /// running member of that membership agrees (same leader, same term): stricter than
    /// [`ProcessCluster::wait_leader`]. The leader's id, or what each replica said.
    pub async fn wait_agreed_leader(&self, timeout: Duration) -> Result<u64, HarnessError> {
        let deadline = Instant::now() + timeout;
        loop {
            let mut seen = BTreeMap::new();
            for id in self.running() {
                seen.insert(id, self.status(id).await);
            }
            for (id, s) in &seen {
                let Some(s) = s else { continue };
                // A replica that removed itself from the group may still call itself
                // leader for a moment: a leader must be a voter of its own membership.
                let voter = s.members.iter().any(|m| m.id == *id && m.role == "voter");
                if s.state != "leader" || !voter {
                    continue;
                }
                let agreed = s
                    .members
                    .iter()
                    .filter(|m| seen.contains_key(&m.id))
                    .all(|m| {
                        seen.get(&m.id)
                            .and_then(Option::as_ref)
                            .is_some_and(|o| o.has_leader && o.leader_id == *id && o.term == s.term)
                    });
                if agreed {
                    return Ok(*id);
                }
            }
            if Instant::now() > deadline {
                let mut view = String::new();
                for (id, s) in &seen {
                    let _ = match s {
                        Some(s) => writeln!(
                            view,
                            "  replica {id}: {} term {} leader {} (known: {}) members {:?}",
                            s.state,
                            s.term,
                            s.leader_id,
                            s.has_leader,
                            s.members.iter().map(|m| m.id).collect::<Vec<_>>()
                        ),
                        None => writeln!(view, "  replica {id}: no answer"),
                    };
                }
                return Err(HarnessError::Timeout(format!(
                    "no leader agreed on by the running replicas within {timeout:?}:\n{view}"
                )));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Wait until replica `id` has applied `index`; its status then.
    pub async fn wait_applied(
        &self,
        id: u64,
        index: u64,
        timeout: Duration,
    ) -> Result<StatusResponse, HarnessError> {
        let deadline = Instant::now() + timeout;
        let mut last = None;
        loop {
            if let Some(s) = self.status(id).await {
                if s.applied_index >= index {
                    return Ok(s);
                }
                last = Some(s.applied_index);
            }
            if Instant::now() > deadline {
                return Err(HarnessError::Timeout(format!(
                    "replica {id} did not apply index {index} within {timeout:?} \
                     (last seen applied: {last:?})"
                )));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The whole state of replica `id` as it has applied it, read from that replica only
    /// (the read is marked forwarded, so it is never answered by another replica), and
    /// the applied index it reflects.
    pub async fn local_state(&self, id: u64) -> Result<(Vec<Entry>, u64), HarnessError> {
        let addr = self.api_addr(id).ok_or(HarnessError::Unknown(id))?;
        let mut client = MasterClient::single(addr).forwarded();
        client.call_timeout = Duration::from_secs(5);
        let r = client
            .read_once(&Query::All, Consistency::Local, u64::MAX)
            .await
            .map_err(|e| HarnessError::Read(e.to_string()))?;
        match r.result {
            Some(read_response::Result::Entries(e)) => Ok((
                e.entries.into_iter().map(|e| (e.key, e.value)).collect(),
                r.applied_index,
            )),
            Some(read_response::Result::Unavailable(why)) => Err(HarnessError::Read(why)),
            Some(read_response::Result::NotLeader(h)) => Err(HarnessError::Read(format!(
                "not answered locally; leader is {}",
                h.leader_id
            ))),
            None => Err(HarnessError::Read("empty answer".into())),
        }
    }

    /// Wait until replica `id` answers a local read at or past `min_index` (a replica
    /// answers locally once it has heard from a leader since it started).
    pub async fn wait_local_state(
        &self,
        id: u64,
        min_index: u64,
        timeout: Duration,
    ) -> Result<(Vec<Entry>, u64), HarnessError> {
        let deadline = Instant::now() + timeout;
        loop {
            let last = match self.local_state(id).await {
                Ok((entries, applied)) if applied >= min_index => return Ok((entries, applied)),
                Ok((_, applied)) => format!("applied {applied}"),
                Err(e) => e.to_string(),
            };
            if Instant::now() > deadline {
                return Err(HarnessError::Timeout(format!(
                    "replica {id} did not answer a local read at index {min_index} or past \
                     within {timeout:?}; last answer: {last}"
                )));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Wait until the replicas `ids` have applied at least `min_index` and the same index,
    /// and check that their states are then byte-identical (a difference at an equal
    /// applied index is [`HarnessError::Diverged`] at once). The common applied index and
    /// state.
    pub async fn wait_converged(
        &self,
        ids: &[u64],
        min_index: u64,
        timeout: Duration,
    ) -> Result<(u64, Vec<Entry>), HarnessError> {
        let deadline = Instant::now() + timeout;
        loop {
            let mut reads = Vec::new();
            for &id in ids {
                reads.push((id, self.local_state(id).await));
            }
            let applied: Vec<Option<u64>> = reads
                .iter()
                .map(|(_, r)| r.as_ref().ok().map(|(_, a)| *a))
                .collect();
            let first = applied.first().copied().flatten();
            if let (Some(index), Some((id0, Ok((entries0, _))))) = (first, reads.first()) {
                if index >= min_index && applied.iter().all(|a| *a == first) {
                    for (id, r) in &reads[1..] {
                        if let Ok((entries, _)) = r {
                            if entries != entries0 {
                                return Err(HarnessError::Diverged(format!(
                                    "replicas {id0} and {id} both applied up to index {index} \
                                     but their states differ: {}",
                                    diff(entries0, entries)
                                )));
                            }
                        }
                    }
                    return Ok((index, entries0.clone()));
                }
            }
            if Instant::now() > deadline {
                let view: Vec<String> = reads
                    .iter()
                    .map(|(id, r)| match r {
                        Ok((e, a)) => format!("replica {id}: applied {a}, {} entries", e.len()),
                        Err(e) => format!("replica {id}: {e}"),
                    })
                    .collect();
                return Err(HarnessError::Timeout(format!(
                    "replicas {ids:?} did not converge at or past index {min_index} within \
                     {timeout:?}: {}",
                    view.join("; ")
                )));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The last `lines` lines of every replica's log, each under a header saying whether
    /// it runs.
    pub fn logs(&self, lines: usize) -> String {
        let mut out = String::new();
        for (id, r) in &self.replicas {
            let _ = writeln!(
                out,
                "----- replica {id} ({}; {}) log {} -----",
                if r.child.is_some() {
                    "running"
                } else {
                    "stopped"
                },
                r.config.api_addr,
                r.log_path.display()
            );
            out.push_str(&tail(&r.log_path, lines));
        }
        out
    }

    /// SIGKILL every gateway and replica and reap them (what dropping the cluster does).
    pub fn kill_all(&mut self) {
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

/// The first difference between two states, for failure messages.
fn diff(a: &[Entry], b: &[Entry]) -> String {
    let a: BTreeMap<&[u8], &[u8]> = a.iter().map(|(k, v)| (&k[..], &v[..])).collect();
    let b: BTreeMap<&[u8], &[u8]> = b.iter().map(|(k, v)| (&k[..], &v[..])).collect();
    for (k, va) in &a {
        match b.get(k) {
            None => return format!("key {:?} only in the first", String::from_utf8_lossy(k)),
            Some(vb) if vb != va => {
                return format!(
                    "key {:?}: {} vs {}",
                    String::from_utf8_lossy(k),
                    String::from_utf8_lossy(va),
                    String::from_utf8_lossy(vb)
                )
            }
            _ => {}
        }
    }
    for k in b.keys() {
        if !a.contains_key(k) {
            return format!("key {:?} only in the second", String::from_utf8_lossy(k));
        }
    }
    "same entries in a different order".into()
}

impl Drop for ProcessCluster {
    fn drop(&mut self) {
        self.kill_all();
    }
}
