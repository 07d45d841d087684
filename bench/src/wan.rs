//! `slapos bench wan`: the master group as it is deployed across regions. Three replicas
//! (one per region of a regions file, by default the repository's example: Lille,
//! Montréal and Tokyo, 90 to 230 ms apart) in network namespaces behind the WAN
//! emulator (`slapos-wan`), their Raft timers from the largest round trip
//! (`Timers::for_round_trip`), a gateway beside each. Measured, per region: acknowledged
//! writes submitted to that region's replica (followers forward them to the leader) with
//! 1 and 32 writers, and node polls (`getFullComputerInformation`) of that region's
//! gateway, which reads its own replica within its staleness bound; then the time from a
//! `kill -9` of the leader to the first acknowledged write.

use crate::raft::LevelResult;
use crate::raft::{failover_once, failover_summary, level, writers_client, FailoverResult};
use crate::slap::{poll_full_info, PollResult};
use master_client::MasterClient;
use master_replica::node::Timers;
use serde::Serialize;
use slapos_harness::{HarnessError, Hosts, ProcessCluster};
use slapos_operator::netns::{NetError, Network};
use slapos_wan::Matrix;
use std::path::PathBuf;
use std::time::Duration;

/// The regions the bench runs in unless given a file (the repository's example).
pub const DEFAULT_REGIONS: &str = include_str!("../../examples/regions.toml");

pub struct WanBenchOptions {
    /// The `slapos` binary to run replicas and gateways with.
    pub bin: PathBuf,
    /// A fresh working directory.
    pub dir: PathBuf,
    /// The regions (one replica in each of the first three).
    pub matrix: Matrix,
    /// Concurrent writers per measurement.
    pub writers: Vec<usize>,
    /// Concurrent pollers of each region's gateway.
    pub pollers: usize,
    pub duration: Duration,
    /// Leader kills for the failover measurement (0 to skip).
    pub kills: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum WanBenchError {
    #[error(transparent)]
    Harness(#[from] HarnessError),
    #[error(transparent)]
    Network(#[from] NetError),
    #[error("the regions file names {0} regions: the bench needs at least 3 (one replica each)")]
    TooFewRegions(usize),
}

#[derive(Debug, Serialize)]
pub struct RegionResult {
    pub region: String,
    /// Whether this region's replica led while it was measured.
    pub leads: bool,
    /// The emulator's round trip from this region to the leader's, in ms.
    pub rtt_to_leader_ms: f64,
    /// Writes submitted to this region's replica, one entry per number of writers.
    pub writes: Vec<LevelResult>,
    /// `getFullComputerInformation` from this region's gateway.
    pub polls: PollResult,
}

#[derive(Debug, Serialize)]
pub struct WanBenchReport {
    pub regions: Vec<String>,
    pub timers: Timers,
    pub leader_region: String,
    pub per_region: Vec<RegionResult>,
    pub failover: Option<FailoverResult>,
}

pub async fn run_wan_bench(opts: &WanBenchOptions) -> Result<WanBenchReport, WanBenchError> {
    if opts.matrix.len() < 3 {
        return Err(WanBenchError::TooFewRegions(opts.matrix.len()));
    }
    let hosts: Vec<slapos_wan::RegionId> = vec![0, 1, 2];
    let net = Network::create_with_regions("chaos", &opts.matrix, &hosts)?;
    let timers = Timers::for_round_trip(opts.matrix.worst_round_trip(&hosts));
    let mut cluster = ProcessCluster::new(&opts.bin, &opts.dir).on_hosts(Hosts::of(&net));
    cluster.timers = timers.clone();
    cluster.start(3).await?;
    let mut gateways = Vec::new();
    for host in 1..=3 {
        gateways.push(cluster.start_gateway(host)?);
    }
    // The computer the writers supply releases to, and the nodes poll.
    let _ = writers_client(&cluster).await?;
    let leader = cluster.wait_leader(Duration::from_secs(60)).await?;
    let leader_host = cluster.host_of(leader).unwrap_or(1);
    let region_of = |host: usize| hosts[host - 1];
    let names = opts.matrix.names();
    let mut per_region = Vec::new();
    for host in 1..=3usize {
        let region = region_of(host);
        let replica = cluster
            .replica_on(host)
            .ok_or(HarnessError::Unknown(host as u64))?;
        let addr = cluster
            .api_addr(replica)
            .ok_or(HarnessError::Unknown(replica))?
            .to_string();
        let client = MasterClient::single(&addr);
        let mut writes = Vec::new();
        for (i, &w) in opts.writers.iter().enumerate() {
            let r = level(&client, w, opts.duration, host * 100 + i).await;
            eprintln!(
                "{:<10} writers {:>3}: p50 {:>7.1} ms  p99 {:>7.1} ms  {:>6.0}/s  ({} errors)",
                names[region], r.writers, r.p50_ms, r.p99_ms, r.commits_per_sec, r.errors
            );
            writes.push(r);
        }
        let polls = poll_full_info(&gateways[host - 1], opts.pollers, 1, opts.duration).await;
        eprintln!(
            "{:<10} polls ({} pollers): p50 {:>6.2} ms  p99 {:>6.2} ms  {:>6.0}/s  ({} errors)",
            names[region], polls.pollers, polls.p50_ms, polls.p99_ms, polls.per_sec, polls.errors
        );
        per_region.push(RegionResult {
            region: names[region].clone(),
            leads: host == leader_host,
            rtt_to_leader_ms: opts
                .matrix
                .rtt(region, region_of(leader_host))
                .as_secs_f64()
                * 1000.0,
            writes,
            polls,
        });
    }
    let failover = if opts.kills > 0 {
        let mut samples = Vec::new();
        for k in 0..opts.kills {
            // Elections wait out the leader's lease (the maximum election timeout,
            // seconds across regions), sometimes twice: give each kill two minutes.
            let ms = failover_once(&mut cluster, k as u64, Duration::from_secs(120)).await?;
            eprintln!("kill {:>2}: first write after {:>7.1} ms", k + 1, ms);
            samples.push(ms);
        }
        Some(failover_summary(samples))
    } else {
        None
    };
    drop(cluster);
    drop(net);
    Ok(WanBenchReport {
        regions: hosts.iter().map(|r| names[*r].clone()).collect(),
        timers,
        leader_region: names[region_of(leader_host)].clone(),
        per_region,
        failover,
    })
}
