//! `slapos bench alloc`: what allocation costs the state machine in a large fleet. A
//! state of N computers (P partitions each, spread over regions, every one supplying the
//! release) is built in this process through `State::apply`, as a replica applies the
//! log; then requests are applied one by one and timed, without an SLA and with a
//! `region` condition, once walking the allocation index and once scanning every
//! computer (`State::without_alloc_index`, the allocation of earlier releases), side by
//! side in one run. Only the state machine is measured: no Raft, no network.

use serde::Serialize;
use slapos_domain::{
    AddressSpec, Command, ComputerSpec, Op, PartitionSpec, RequestId, Requester, State, Timestamp,
};
use std::collections::BTreeMap;
use std::time::Instant;

use crate::raft::percentile;

pub struct AllocBenchOptions {
    pub computers: usize,
    pub partitions: usize,
    pub regions: usize,
    /// Requests timed per (method, condition).
    pub requests: usize,
}

#[derive(Debug, Serialize)]
pub struct AllocRun {
    /// `index` or `scan`.
    pub method: &'static str,
    /// `none` or `region`.
    pub sla: &'static str,
    pub requests: usize,
    /// The first request of the run (for the index: its build after a load).
    pub first_ms: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

#[derive(Debug, Serialize)]
pub struct AllocReport {
    pub computers: usize,
    pub partitions: usize,
    pub regions: usize,
    pub build_seconds: f64,
    pub runs: Vec<AllocRun>,
}

#[derive(Debug, thiserror::Error)]
pub enum AllocBenchError {
    #[error("command {op} refused: {error}")]
    Refused { op: &'static str, error: String },
}

const RELEASE: &str = "https://example.com/bench/software.cfg";
const AT: u64 = 1_795_000_000_000_000;

struct Applier {
    seq: u64,
}

impl Applier {
    fn apply(&mut self, state: &mut State, op: Op) -> Result<(), AllocBenchError> {
        self.seq += 1;
        let name = op.name();
        let command = Command {
            request_id: RequestId::new("bench-alloc", self.seq),
            at: Timestamp(AT + self.seq),
            op,
        };
        state
            .apply(&command)
            .map(|_| ())
            .map_err(|e| AllocBenchError::Refused {
                op: name,
                error: e.to_string(),
            })
    }
}

fn region(i: usize) -> String {
    format!("region-{i}")
}

fn build(opts: &AllocBenchOptions, applier: &mut Applier) -> Result<State, AllocBenchError> {
    let mut state = State::new();
    for c in 0..opts.computers {
        let computer = format!("COMP-{c}");
        applier.apply(
            &mut state,
            Op::RegisterComputer {
                computer: computer.clone(),
                title: computer.clone(),
                owner: "provider".into(),
                region: Some(region(c % opts.regions.max(1))),
                network: None,
                attributes: BTreeMap::new(),
            },
        )?;
        let partitions = (0..opts.partitions)
            .map(|p| PartitionSpec {
                id: format!("slappart{p}"),
                tap: None,
                addresses: vec![AddressSpec {
                    addr: format!("fd00:{:x}:{:x}::{:x}", c >> 16, c & 0xffff, p + 1),
                    netmask: "ffff:ffff:ffff:ffff::".into(),
                    gateway: None,
                    network: None,
                }],
            })
            .collect();
        applier.apply(
            &mut state,
            Op::FormatComputer {
                computer: computer.clone(),
                spec: ComputerSpec {
                    address: None,
                    netmask: None,
                    partitions,
                },
            },
        )?;
        applier.apply(
            &mut state,
            Op::Supply {
                computer,
                url: RELEASE.into(),
                state: "available".into(),
            },
        )?;
    }
    Ok(state)
}

fn timed(
    mut state: State,
    method: &'static str,
    sla: &'static str,
    opts: &AllocBenchOptions,
    applier: &mut Applier,
) -> Result<AllocRun, AllocBenchError> {
    let mut samples = Vec::with_capacity(opts.requests);
    let mut first_ms = 0.0;
    for r in 0..=opts.requests {
        let sla = match sla {
            "region" => BTreeMap::from([(
                "region".to_string(),
                region((r * 7 + 3) % opts.regions.max(1)),
            )]),
            _ => BTreeMap::new(),
        };
        let op = Op::RequestInstance {
            requester: Requester::Person(format!("customer-{}", r % 97)),
            title: format!("{method}-{r}"),
            software_release: RELEASE.into(),
            software_type: "default".into(),
            state: None,
            shared: false,
            parameters: BTreeMap::new(),
            sla,
        };
        let started = Instant::now();
        applier.apply(&mut state, op)?;
        let ms = started.elapsed().as_secs_f64() * 1000.0;
        if r == 0 {
            first_ms = ms;
        } else {
            samples.push((ms * 1000.0) as u64);
        }
    }
    samples.sort_unstable();
    Ok(AllocRun {
        method,
        sla: if sla == "region" { "region" } else { "none" },
        requests: opts.requests,
        first_ms,
        p50_ms: percentile(&samples, 0.50),
        p99_ms: percentile(&samples, 0.99),
        max_ms: samples.last().copied().unwrap_or(0) as f64 / 1000.0,
    })
}

pub fn run_alloc_bench(opts: &AllocBenchOptions) -> Result<AllocReport, AllocBenchError> {
    let mut applier = Applier { seq: 0 };
    let started = Instant::now();
    let state = build(opts, &mut applier)?;
    let build_seconds = started.elapsed().as_secs_f64();
    let mut runs = Vec::new();
    for sla in ["none", "region"] {
        runs.push(timed(state.clone(), "index", sla, opts, &mut applier)?);
        runs.push(timed(
            state.clone().without_alloc_index(),
            "scan",
            sla,
            opts,
            &mut applier,
        )?);
    }
    Ok(AllocReport {
        computers: opts.computers,
        partitions: opts.partitions,
        regions: opts.regions,
        build_seconds,
        runs,
    })
}

impl AllocReport {
    pub fn summary(&self) -> String {
        let mut out = format!(
            "alloc bench: {} computers x {} partitions in {} regions (state built in {:.1} s)\n method  sla       first ms    p50 ms    p99 ms    max ms\n",
            self.computers, self.partitions, self.regions, self.build_seconds
        );
        for r in &self.runs {
            out.push_str(&format!(
                " {:<7} {:<8} {:>9.2} {:>9.3} {:>9.3} {:>9.3}\n",
                r.method, r.sla, r.first_ms, r.p50_ms, r.p99_ms, r.max_ms
            ));
        }
        out
    }
}
