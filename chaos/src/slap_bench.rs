//! `slapos bench slap`: the client workload of the slapproxy baseline (the team's
//! `slapproxy_bench.py`, not in this repository: format a computer, sequential instance
//! requests, `getFullComputerInformation` through the real Python client and as plain
//! HTTP), run by `chaos/bench/slap_workload.py` with the real slapos.core against a fresh
//! slapproxy and against a fresh three-replica cluster (durable log writes) behind one
//! gateway, per partition count; then concurrent pollers of `getFullComputerInformation`
//! (plain HTTP/1.1 keep-alive GETs from Rust) against both.

use crate::cluster::ProcessCluster;
use crate::http::HttpConn;
use http_client::Request;
use serde::Serialize;
use serde_json::Value;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tokio::net::TcpStream;

/// The driver, shipped inside the binary.
pub const WORKLOAD_PY: &str = include_str!("../bench/slap_workload.py");

/// The computer both masters are asked about (slapproxy's `computer_id`, the gateway's
/// `default_computer`).
pub const COMPUTER_ID: &str = "COMP-BENCH";

pub struct SlapBenchOptions {
    /// The `slapos` binary to run replicas and the gateway with.
    pub bin: PathBuf,
    /// A fresh working directory.
    pub dir: PathBuf,
    /// A virtualenv with slapos.core 1.26.1 and slapos.libnetworkcache.
    pub venv: PathBuf,
    pub replicas: u64,
    /// One scenario (a fresh master of each kind) per partition count.
    pub partitions: Vec<usize>,
    /// Sequential instance requests per scenario (at most its partition count).
    pub requests: usize,
    /// `getFullComputerInformation` calls per way of calling.
    pub calls: usize,
    /// Concurrent pollers, one measurement each, at the largest partition count.
    pub pollers: Vec<usize>,
    pub poll_duration: Duration,
    /// Also poll slapproxy.
    pub poll_slapproxy: bool,
    /// Concurrent requesters re-requesting the allocated instances, one measurement each,
    /// at the largest partition count (both masters).
    pub requesters: Vec<usize>,
}

#[derive(Debug, thiserror::Error)]
pub enum SlapBenchError {
    #[error("{0}")]
    Setup(String),
    #[error("{0}: {1}")]
    Io(String, std::io::Error),
    #[error("cluster: {0}")]
    Cluster(#[from] crate::cluster::ClusterError),
    #[error("the workload failed against {side} ({partitions} partitions): {detail}")]
    Workload {
        side: String,
        partitions: usize,
        detail: String,
    },
}

#[derive(Debug, Clone, Serialize)]
pub struct PollResult {
    pub pollers: usize,
    pub partitions: usize,
    pub ok: u64,
    pub errors: u64,
    pub first_error: Option<String>,
    pub seconds: f64,
    pub per_sec: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub response_bytes: usize,
}

#[derive(Debug, Serialize)]
pub struct SideReport {
    pub name: String,
    /// What `slap_workload.py` printed, per partition count.
    pub scenarios: Vec<Value>,
    pub polls: Vec<PollResult>,
    /// Concurrent re-requests (writes), per number of requesters.
    pub rerequests: Vec<PollResult>,
}

#[derive(Debug, Serialize)]
pub struct SlapBenchReport {
    pub replicas: u64,
    pub requests: usize,
    pub calls: usize,
    pub slapproxy: SideReport,
    pub cluster: SideReport,
}

/// Check the venv and say how to get it.
pub fn check_venv(venv: &Path) -> Result<PathBuf, SlapBenchError> {
    let python = venv.join("bin/python");
    let ok = Command::new(&python)
        .args(["-c", "import slapos.slap, slapos.proxy, requests"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !ok {
        return Err(SlapBenchError::Setup(format!(
            "no Python venv with slapos.core 1.26.1 at {} (set SLAPOS_VENV, or run scripts/install-deps, \
             which creates it)",
            venv.display()
        )));
    }
    Ok(python)
}

/// A child process stopped (SIGTERM, then SIGKILL after 10 s) when dropped.
struct Proc(Option<Child>);

impl Proc {
    fn pid(&self) -> u32 {
        self.0.as_ref().map(|c| c.id()).unwrap_or(0)
    }
    fn exited(&mut self) -> bool {
        self.0
            .as_mut()
            .is_none_or(|c| matches!(c.try_wait(), Ok(Some(_))))
    }
    fn stop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = Command::new("kill")
                .arg(c.id().to_string())
                .stderr(Stdio::null())
                .status();
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                match c.try_wait() {
                    Ok(Some(_)) | Err(_) => break,
                    Ok(None) if Instant::now() > deadline => {
                        let _ = c.kill();
                        let _ = c.wait();
                        break;
                    }
                    Ok(None) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stop();
    }
}

fn spawn_logged(cmd: &mut Command, log: &Path) -> Result<Proc, SlapBenchError> {
    let out = File::create(log).map_err(|e| SlapBenchError::Io(log.display().to_string(), e))?;
    let err = out
        .try_clone()
        .map_err(|e| SlapBenchError::Io("log".into(), e))?;
    let child = cmd
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .map_err(|e| SlapBenchError::Io("spawn".into(), e))?;
    Ok(Proc(Some(child)))
}

async fn wait_listening(addr: &str, proc: &mut Proc, log: &Path) -> Result<(), SlapBenchError> {
    let deadline = Instant::now() + Duration::from_secs(60);
    while TcpStream::connect(addr).await.is_err() {
        if proc.exited() || Instant::now() > deadline {
            return Err(SlapBenchError::Setup(format!(
                "nothing listens at {addr}; see {}",
                log.display()
            )));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

/// A master under test: slapproxy, or replicas and a gateway.
struct Server {
    addr: String,
    main: Proc,
    cluster: Option<ProcessCluster>,
    /// Processes whose CPU time counts as the server's.
    pids: Vec<u32>,
}

impl Server {
    fn url(&self) -> String {
        format!("http://{}/", self.addr)
    }

    fn stop(mut self) {
        self.main.stop();
        self.cluster.take();
    }
}

async fn start_slapproxy(python: &Path, dir: &Path) -> Result<Server, SlapBenchError> {
    std::fs::create_dir_all(dir).map_err(|e| SlapBenchError::Io(dir.display().to_string(), e))?;
    let port = crate::cluster::free_port()?;
    let cfg = dir.join("slapos.cfg");
    let text = format!(
        "[slapos]\ncomputer_id = {COMPUTER_ID}\nmaster_url = http://127.0.0.1:{port}/\n\
         [slapproxy]\nhost = 127.0.0.1\nport = {port}\ndatabase_uri = {}\n",
        dir.join("proxy.db").display()
    );
    std::fs::write(&cfg, text).map_err(|e| SlapBenchError::Io(cfg.display().to_string(), e))?;
    let log = dir.join("proxy.log");
    let mut main = spawn_logged(
        Command::new(python)
            .args(["-m", "slapos.cli.entry", "proxy", "start", "--cfg"])
            .arg(&cfg)
            .current_dir(dir),
        &log,
    )?;
    let addr = format!("127.0.0.1:{port}");
    wait_listening(&addr, &mut main, &log).await?;
    let pids = vec![main.pid()];
    Ok(Server {
        addr,
        main,
        cluster: None,
        pids,
    })
}

/// Pids of processes whose command line mentions `needle` (the replicas of a cluster in
/// a directory of ours).
fn pids_mentioning(needle: &str) -> Vec<u32> {
    let mut pids = Vec::new();
    if let Ok(rd) = std::fs::read_dir("/proc") {
        for e in rd.flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            if let Ok(cmd) = std::fs::read(e.path().join("cmdline")) {
                if String::from_utf8_lossy(&cmd).contains(needle) {
                    pids.push(pid);
                }
            }
        }
    }
    pids
}

async fn start_cluster(bin: &Path, dir: &Path, replicas: u64) -> Result<Server, SlapBenchError> {
    let mut cluster = ProcessCluster::new(bin, dir);
    cluster.start(replicas).await?;
    let pids = pids_mentioning(&dir.join("replica-").display().to_string());
    let port = crate::cluster::free_port()?;
    let addr = format!("127.0.0.1:{port}");
    let config = dir.join("gateway.toml");
    let text = format!(
        "listen = \"{addr}\"\nmasters = {:?}\ninsecure_http = true\n\n[slap]\ndefault_computer = \"{COMPUTER_ID}\"\n",
        cluster.api_addrs()
    );
    std::fs::write(&config, text)
        .map_err(|e| SlapBenchError::Io(config.display().to_string(), e))?;
    let log = dir.join("gateway.log");
    let mut main = spawn_logged(
        Command::new(bin)
            .args(["gateway", "run", "--insecure-http", "--config"])
            .arg(&config)
            .env("RUST_LOG", "warn"),
        &log,
    )?;
    wait_listening(&addr, &mut main, &log).await?;
    let mut all = vec![main.pid()];
    all.extend(pids);
    Ok(Server {
        addr,
        main,
        cluster: Some(cluster),
        pids: all,
    })
}

fn run_workload(
    python: &Path,
    script: &Path,
    server: &Server,
    side: &str,
    partitions: usize,
    opts: &SlapBenchOptions,
) -> Result<Value, SlapBenchError> {
    let mut cmd = Command::new(python);
    cmd.arg(script)
        .args(["--url", &server.url()])
        .args(["--partitions", &partitions.to_string()])
        .args(["--requests", &opts.requests.to_string()])
        .args(["--calls", &opts.calls.to_string()]);
    for pid in &server.pids {
        cmd.args(["--server-pid", &pid.to_string()]);
    }
    let out = cmd
        .output()
        .map_err(|e| SlapBenchError::Io(format!("run {}", python.display()), e))?;
    let fail = |detail: String| SlapBenchError::Workload {
        side: side.to_string(),
        partitions,
        detail,
    };
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let tail: Vec<&str> = err.lines().rev().take(15).collect();
        return Err(fail(tail.into_iter().rev().collect::<Vec<_>>().join("\n")));
    }
    serde_json::from_slice(&out.stdout).map_err(|e| fail(format!("bad JSON output: {e}")))
}

fn percentile_ms(sorted_us: &[u64], p: f64) -> f64 {
    if sorted_us.is_empty() {
        return 0.0;
    }
    // nearest rank, as the Python side
    let k = ((p / 100.0 * sorted_us.len() as f64).ceil() as usize).max(1);
    sorted_us[k.min(sorted_us.len()) - 1] as f64 / 1000.0
}

/// `pollers` connections GET `getFullComputerInformation` back to back for `duration`
/// (requests in flight at the end are waited for and counted).
pub async fn poll_full_info(
    addr: &str,
    pollers: usize,
    partitions: usize,
    duration: Duration,
) -> PollResult {
    let request = Request::get_query(
        "/getFullComputerInformation",
        &[("computer_id", COMPUTER_ID)],
    )
    .header("Accept", "*/*");
    hammer(addr, pollers, partitions, duration, move |_, _| {
        request.clone()
    })
    .await
}

/// `clients` connections re-request the `partitions` instances the workload allocated
/// (`bench-NNN`), each time with a new parameter value, back to back for `duration`:
/// every call is a write that changes the instance.
pub async fn rerequest_instances(
    addr: &str,
    clients: usize,
    partitions: usize,
    duration: Duration,
) -> PollResult {
    hammer(addr, clients, partitions, duration, move |c, n| {
        let i = (c + n * clients) % partitions.max(1);
        let fields = rerequest_form(i, c, n);
        let fields: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
        Request::post_form("/requestComputerPartition", &fields)
    })
    .await
}

/// The form of the Python client's `request(SR, 'bench-NNN', {...})`, with a parameter
/// that changes with every call.
fn rerequest_form(i: usize, c: usize, n: usize) -> Vec<(&'static str, String)> {
    use slapos_proto::marshal::Value;
    let params = Value::str_dict([
        ("index", Value::from(i.to_string().as_str())),
        ("name", Value::from("bench")),
        ("round", Value::from(format!("{c}-{n}").as_str())),
    ]);
    let enc = |v: &Value| v.encode().unwrap_or_default();
    vec![
        (
            "software_release",
            "https://example.com/bench/software.cfg".to_string(),
        ),
        ("software_type", "default".to_string()),
        ("partition_reference", format!("bench-{i:03}")),
        ("partition_parameter_xml", enc(&params)),
        ("filter_xml", enc(&Value::Dict(Vec::new()))),
        ("state", enc(&Value::from("started"))),
        ("shared_xml", enc(&Value::Bool(false))),
    ]
}

/// `clients` keep-alive connections send `request(client, n)` back to back for
/// `duration`; 200 answers count, anything else is an error.
async fn hammer(
    addr: &str,
    clients: usize,
    partitions: usize,
    duration: Duration,
    request: impl Fn(usize, usize) -> Request + Send + Sync + 'static,
) -> PollResult {
    let request = std::sync::Arc::new(request);
    let start = Instant::now();
    let deadline = start + duration;
    let mut tasks = Vec::new();
    for c in 0..clients {
        let request = request.clone();
        let addr = addr.to_string();
        tasks.push(tokio::spawn(async move {
            let mut conn = HttpConn::new(addr);
            let mut lat = Vec::new();
            let mut errors = 0u64;
            let mut first_error = None;
            let mut bytes = 0;
            let mut n = 0;
            while Instant::now() < deadline {
                let req = request(c, n);
                n += 1;
                let t0 = Instant::now();
                match tokio::time::timeout(Duration::from_secs(120), conn.get(req)).await {
                    Ok(Ok(len)) => {
                        lat.push(t0.elapsed().as_micros() as u64);
                        bytes = len;
                    }
                    Ok(Err(e)) => {
                        errors += 1;
                        first_error.get_or_insert(e);
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                    Err(_) => {
                        errors += 1;
                        // the cancelled exchange dropped its connection
                        first_error.get_or_insert("timeout (120 s)".to_string());
                    }
                }
            }
            (lat, errors, first_error, bytes)
        }));
    }
    let mut lat = Vec::new();
    let mut errors = 0;
    let mut first_error = None;
    let mut bytes = 0;
    for t in tasks {
        if let Ok((l, e, f, b)) = t.await {
            lat.extend(l);
            errors += e;
            if first_error.is_none() {
                first_error = f;
            }
            bytes = bytes.max(b);
        }
    }
    let seconds = start.elapsed().as_secs_f64();
    lat.sort_unstable();
    PollResult {
        pollers: clients,
        partitions,
        ok: lat.len() as u64,
        errors,
        first_error,
        seconds,
        per_sec: lat.len() as f64 / seconds,
        p50_ms: percentile_ms(&lat, 50.0),
        p99_ms: percentile_ms(&lat, 99.0),
        response_bytes: bytes,
    }
}

/// The whole benchmark; every process it starts is stopped before it returns.
pub async fn run_slap_bench(
    opts: &SlapBenchOptions,
    mut progress: impl FnMut(&str),
) -> Result<SlapBenchReport, SlapBenchError> {
    let python = check_venv(&opts.venv)?;
    std::fs::create_dir_all(&opts.dir)
        .map_err(|e| SlapBenchError::Io(opts.dir.display().to_string(), e))?;
    let script = opts.dir.join("slap_workload.py");
    std::fs::write(&script, WORKLOAD_PY)
        .map_err(|e| SlapBenchError::Io(script.display().to_string(), e))?;
    let poll_at = opts.partitions.iter().copied().max().unwrap_or(0);
    let mut proxy_side = SideReport {
        name: "slapproxy".into(),
        scenarios: Vec::new(),
        polls: Vec::new(),
        rerequests: Vec::new(),
    };
    let mut cluster_side = SideReport {
        name: format!("{}-replica cluster + gateway", opts.replicas),
        scenarios: Vec::new(),
        polls: Vec::new(),
        rerequests: Vec::new(),
    };
    for &n in &opts.partitions {
        for cluster in [false, true] {
            let side = if cluster {
                &mut cluster_side
            } else {
                &mut proxy_side
            };
            let dir = opts.dir.join(format!(
                "{}-{n}",
                if cluster { "cluster" } else { "slapproxy" }
            ));
            progress(&format!("{}: {n} partitions: starting", side.name));
            let server = if cluster {
                start_cluster(&opts.bin, &dir, opts.replicas).await?
            } else {
                start_slapproxy(&python, &dir).await?
            };
            progress(&format!(
                "{}: {n} partitions: workload at {}",
                side.name,
                server.url()
            ));
            let py = python.clone();
            let sc = script.clone();
            let name = side.name.clone();
            let r = tokio::task::block_in_place(|| run_workload(&py, &sc, &server, &name, n, opts));
            let r = match r {
                Ok(v) => v,
                Err(e) => {
                    server.stop();
                    return Err(e);
                }
            };
            side.scenarios.push(r);
            if n == poll_at {
                for &c in &opts.requesters {
                    progress(&format!(
                        "{}: {c} concurrent requesters for {:?}",
                        side.name, opts.poll_duration
                    ));
                    side.rerequests.push(
                        rerequest_instances(
                            &server.addr,
                            c,
                            opts.requests.min(n),
                            opts.poll_duration,
                        )
                        .await,
                    );
                }
            }
            if n == poll_at && (cluster || opts.poll_slapproxy) {
                for &p in &opts.pollers {
                    progress(&format!(
                        "{}: {p} pollers for {:?}",
                        side.name, opts.poll_duration
                    ));
                    side.polls
                        .push(poll_full_info(&server.addr, p, n, opts.poll_duration).await);
                }
            }
            tokio::task::block_in_place(|| server.stop());
        }
    }
    Ok(SlapBenchReport {
        replicas: opts.replicas,
        requests: opts.requests,
        calls: opts.calls,
        slapproxy: proxy_side,
        cluster: cluster_side,
    })
}

fn table_row(label: String, a: Option<f64>, b: Option<f64>, better: Better) -> String {
    let f = |x: Option<f64>| x.map(|x| format!("{x:.2}")).unwrap_or_else(|| "-".into());
    let ratio = match (a, b, better) {
        (Some(a), Some(b), Better::Higher) if a > 0.0 => format!("{:.1}", b / a),
        (Some(a), Some(b), Better::Lower) if b > 0.0 => format!("{:.1}", a / b),
        _ => "-".into(),
    };
    format!("{label:<58} {:>12} {:>12} {ratio:>9}\n", f(a), f(b))
}

fn num(v: &Value, path: &[&str]) -> Option<f64> {
    let mut v = v;
    for p in path {
        v = v.get(*p)?;
    }
    v.as_f64()
}

/// Which way a figure is better.
#[derive(Clone, Copy)]
enum Better {
    Higher,
    Lower,
}

impl SlapBenchReport {
    /// The comparison table: one row per figure, both sides and the factor by which the
    /// cluster is better (>1) or worse (<1).
    pub fn table(&self) -> String {
        let mut out = String::new();
        out.push_str(&format!(
            "{:<58} {:>12} {:>12} {:>9}\n",
            "figure", "slapproxy", "cluster", "better x"
        ));
        let row =
            |out: &mut String, label: String, a: Option<f64>, b: Option<f64>, better: Better| {
                out.push_str(&table_row(label, a, b, better))
            };
        for (i, a) in self.slapproxy.scenarios.iter().enumerate() {
            let b = self.cluster.scenarios.get(i);
            let n = num(a, &["partitions"]).unwrap_or(0.0) as usize;
            let both = |path: &[&str]| (num(a, path), b.and_then(|b| num(b, path)));
            let nreq = num(a, &["request", "n"]).unwrap_or(0.0) as usize;
            let (x, y) = both(&["format_s"]);
            row(
                &mut out,
                format!("[{n}] format {n} partitions, s"),
                x,
                y,
                Better::Lower,
            );
            let (x, y) = both(&["request", "per_s"]);
            row(
                &mut out,
                format!("[{n}] {nreq} sequential requests, instances/s"),
                x,
                y,
                Better::Higher,
            );
            for (k, l) in [("p50_ms", "p50"), ("p99_ms", "p99")] {
                let (x, y) = both(&["request", "latency", k]);
                row(
                    &mut out,
                    format!("[{n}]   request latency {l}, ms"),
                    x,
                    y,
                    Better::Lower,
                );
            }
            let (x, y) = both(&["request", "cpu", "client_cpu_ms_per_call"]);
            row(
                &mut out,
                format!("[{n}]   Python client CPU per request, ms"),
                x,
                y,
                Better::Lower,
            );
            let (x, y) = both(&["request", "cpu", "server_cpu_ms_per_call"]);
            row(
                &mut out,
                format!("[{n}]   server CPU per request, ms"),
                x,
                y,
                Better::Lower,
            );
            for (way, wl) in [
                ("slap_library", "slap client"),
                ("plain_http", "plain HTTP"),
            ] {
                for (k, l) in [("p50_ms", "p50"), ("p99_ms", "p99")] {
                    let (x, y) = both(&["full_info", way, k]);
                    row(
                        &mut out,
                        format!("[{n}] getFullComputerInformation, {wl} {l}, ms"),
                        x,
                        y,
                        Better::Lower,
                    );
                }
                let (x, y) = both(&["full_info", &format!("{way}_cpu"), "server_cpu_ms_per_call"]);
                row(
                    &mut out,
                    format!("[{n}]   server CPU per call ({wl}), ms"),
                    x,
                    y,
                    Better::Lower,
                );
            }
            let (x, y) = both(&["full_info", "client_unmarshal_only", "p50_ms"]);
            row(
                &mut out,
                format!("[{n}]   client unmarshal alone p50, ms"),
                x,
                y,
                Better::Lower,
            );
            let (x, y) = both(&["full_info", "response_bytes"]);
            out.push_str(&format!(
                "{:<58} {:>12} {:>12}\n",
                format!("[{n}]   response bytes"),
                x.map(|v| format!("{v:.0}")).unwrap_or_default(),
                y.map(|v| format!("{v:.0}")).unwrap_or_default()
            ));
        }
        for p in &self.cluster.polls {
            let a = self.slapproxy.polls.iter().find(|q| q.pollers == p.pollers);
            let n = p.partitions;
            row(
                &mut out,
                format!("[{n}] {} Rust pollers (HTTP/1.1), requests/s", p.pollers),
                a.map(|a| a.per_sec),
                Some(p.per_sec),
                Better::Higher,
            );
            row(
                &mut out,
                format!("[{n}]   poll latency p50, ms"),
                a.map(|a| a.p50_ms),
                Some(p.p50_ms),
                Better::Lower,
            );
            row(
                &mut out,
                format!("[{n}]   poll latency p99, ms"),
                a.map(|a| a.p99_ms),
                Some(p.p99_ms),
                Better::Lower,
            );
        }
        for p in &self.cluster.rerequests {
            let a = self
                .slapproxy
                .rerequests
                .iter()
                .find(|q| q.pollers == p.pollers);
            let n = p.partitions;
            row(
                &mut out,
                format!("[{n}] {} concurrent Rust requesters, requests/s", p.pollers),
                a.map(|a| a.per_sec),
                Some(p.per_sec),
                Better::Higher,
            );
            row(
                &mut out,
                format!("[{n}]   request latency p50, ms"),
                a.map(|a| a.p50_ms),
                Some(p.p50_ms),
                Better::Lower,
            );
        }
        for s in [&self.slapproxy, &self.cluster] {
            for p in s.polls.iter().chain(&s.rerequests) {
                if p.errors > 0 {
                    out.push_str(&format!(
                        "note: {} with {} pollers: {} errors (first: {})\n",
                        s.name,
                        p.pollers,
                        p.errors,
                        p.first_error.as_deref().unwrap_or("?")
                    ));
                }
            }
        }
        out
    }

    /// The goal at the largest partition count: request throughput at least 10x,
    /// server-side getFullComputerInformation latency (plain HTTP p50) at most a tenth.
    pub fn goal(&self) -> String {
        let idx = self
            .slapproxy
            .scenarios
            .iter()
            .enumerate()
            .max_by_key(|(_, v)| num(v, &["partitions"]).unwrap_or(0.0) as u64)
            .map(|(i, _)| i);
        let Some(i) = idx else {
            return String::new();
        };
        let (Some(a), Some(b)) = (
            self.slapproxy.scenarios.get(i),
            self.cluster.scenarios.get(i),
        ) else {
            return String::new();
        };
        let n = num(a, &["partitions"]).unwrap_or(0.0);
        let thr = num(b, &["request", "per_s"]).unwrap_or(0.0)
            / num(a, &["request", "per_s"]).unwrap_or(f64::NAN);
        let lat = num(a, &["full_info", "plain_http", "p50_ms"]).unwrap_or(f64::NAN)
            / num(b, &["full_info", "plain_http", "p50_ms"]).unwrap_or(f64::NAN);
        let verdict = |x: f64| if x >= 10.0 { "met" } else { "NOT met" };
        let mut text = format!(
            "goal at {n} partitions, {} replicas: request throughput {thr:.1}x slapproxy (>= 10x: {}); \
             server-side getFullComputerInformation latency (Python plain HTTP p50) 1/{lat:.1} of slapproxy's (<= 1/10: {})\n",
            self.replicas,
            verdict(thr),
            verdict(lat)
        );
        // Request throughput as a server's capacity: many requesters at once.
        if let Some(p) = self.cluster.rerequests.iter().max_by_key(|p| p.pollers) {
            if let Some(a) = self
                .slapproxy
                .rerequests
                .iter()
                .find(|q| q.pollers == p.pollers)
            {
                if a.per_sec > 0.0 {
                    let r = p.per_sec / a.per_sec;
                    text.push_str(&format!(
                        "  request throughput with {} concurrent requesters: {:.0}/s vs {:.0}/s, {r:.1}x (>= 10x: {})\n",
                        p.pollers,
                        p.per_sec,
                        a.per_sec,
                        verdict(r)
                    ));
                }
            }
        }
        // The same from a Rust client, one connection (no Python HTTP overhead).
        let one = |s: &SideReport| s.polls.iter().find(|p| p.pollers == 1).map(|p| p.p50_ms);
        if let (Some(x), Some(y)) = (one(&self.slapproxy), one(&self.cluster)) {
            if y > 0.0 {
                let r = x / y;
                text.push_str(&format!(
                    "  the same latency from one Rust connection: p50 {y:.2} ms vs {x:.2} ms, 1/{r:.1} (<= 1/10: {})\n",
                    verdict(r)
                ));
            }
        }
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank() {
        let v: Vec<u64> = (1..=100).map(|x| x * 1000).collect();
        assert_eq!(percentile_ms(&v, 50.0), 50.0);
        assert_eq!(percentile_ms(&v, 99.0), 99.0);
        assert_eq!(percentile_ms(&[], 50.0), 0.0);
    }
}
