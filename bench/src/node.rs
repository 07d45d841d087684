//! `slapos bench node`: the node agent's instance run at scale, against a real cluster.
//!
//! One node is formatted into `steady + fresh` partitions (real Unix users when root), a
//! native release is supplied, and `steady` instances are requested and deployed. Then:
//!
//! * **unchanged**: `slapos node instance` over the `steady` partitions when nothing
//!   changed (the reference design expects 5 minutes for 300 reconfigurations; our goal
//!   is under 1 s), several runs, median and spread;
//! * **fresh**: `fresh` more instances requested at once; the time from the request to
//!   every one of them configured and its service running under the supervisor (goal for
//!   100: under 60 s), which includes the agent's run as `slapos node daemon` would do it.
//!
//! Every run is the real `slapos node instance` process (start-up, master poll, the
//! partitions' state machine, the supervisor); the master is a replica group behind a
//! gateway.

use serde::Serialize;
use slapgrid::client::SlapClient;
use slapos_harness::{HarnessError, ProcessCluster};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

pub struct NodeBenchOptions {
    /// The `slapos` binary (replicas, gateways and the node commands).
    pub bin: PathBuf,
    /// A fresh working directory.
    pub dir: PathBuf,
    pub replicas: u64,
    /// Partitions deployed before the unchanged runs.
    pub steady: usize,
    /// Partitions allocated and deployed at once afterwards.
    pub fresh: usize,
    /// Unchanged runs measured.
    pub runs: usize,
    /// Also SlapOS's own agent side by side with ours on a buildout release.
    pub reference: Option<ReferenceOptions>,
    /// The node's partition limits (issue 26): `Off` (`[slapos] cgroup = off`, no
    /// cgroup), `Auto` (the default: a cgroup per partition, no limit set), `Limits`
    /// (a cgroup per partition with CPU weight, memory, process and disk limits).
    pub limits: LimitsMode,
}

/// See [`NodeBenchOptions::limits`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LimitsMode {
    Off,
    Auto,
    Limits,
}

impl LimitsMode {
    /// The `[slapos]` keys and the sections it adds to the node's configuration.
    fn config(self) -> (&'static str, &'static str) {
        match self {
            LimitsMode::Off => ("cgroup = off\n", ""),
            LimitsMode::Auto => ("", ""),
            LimitsMode::Limits => (
                "",
                "\n[partition-limits]\ncpu_weight = 100\nmemory = 1G\npids = 256\ndisk = 10G\n",
            ),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum NodeBenchError {
    #[error("cluster: {0}")]
    Cluster(#[from] HarnessError),
    #[error("{0}")]
    Failed(String),
}

#[derive(Debug, Serialize)]
pub struct NodeBenchReport {
    pub replicas: u64,
    /// Real Unix users per partition (root) or directories of the current user.
    pub real_users: bool,
    pub steady_partitions: usize,
    pub fresh_partitions: usize,
    /// The partition limits of the run, and what the node said of its cgroups.
    pub limits: Option<LimitsMode>,
    pub cgroups: String,
    /// The first run that deployed the steady partitions.
    pub initial_deploy_seconds: f64,
    /// Unchanged runs over the steady partitions.
    pub unchanged_runs_seconds: Vec<f64>,
    pub unchanged_median_seconds: f64,
    /// From the request of the fresh instances to all of them running.
    pub fresh_to_running_seconds: f64,
    /// Of which the one `slapos node instance` run.
    pub fresh_run_seconds: f64,
    /// SlapOS's own node agent and ours on the same buildout release.
    pub reference: Option<SideBySide>,
}

const MANIFEST: &str = r##"[release]
name = "bench"

[[artifact]]
url = "service.sh"
sha256 = "@SHA@"
dest = "bin/service"
mode = "0750"

[[instance.file]]
path = "etc/service/main"
mode = "0750"
kind = "shell"
content = "#!/bin/sh\nexec {{software_path}}/bin/service {{partition_path}}\n"

[[instance.file]]
path = "etc/promise/alive"
mode = "0750"
kind = "shell"
content = "#!/bin/sh\ntest -d {{partition_path}}/etc\n"

[instance.connection]
where = "{{partition_id}} of {{computer_id}}"
"##;

const SERVICE: &str = "#!/bin/sh\nexec sleep 100000\n";

fn failed(m: impl Into<String>) -> NodeBenchError {
    NodeBenchError::Failed(m.into())
}

fn write_release(dir: &Path) -> Result<String, NodeBenchError> {
    let io = |e: std::io::Error| failed(format!("{}: {e}", dir.display()));
    std::fs::create_dir_all(dir).map_err(io)?;
    let service = dir.join("service.sh");
    std::fs::write(&service, SERVICE).map_err(io)?;
    let sum = slapgrid::digest::sha256_file(&service).map_err(io)?;
    let manifest = dir.join("software.toml");
    std::fs::write(&manifest, MANIFEST.replace("@SHA@", &sum)).map_err(io)?;
    Ok(manifest.display().to_string())
}

fn node_cfg(
    dir: &Path,
    urls: &[String],
    partitions: usize,
    users: Option<&str>,
    limits: LimitsMode,
) -> String {
    let r = dir.display();
    let user_part = match users {
        Some(u) => format!("alter_user = true\nuser_base_name = {u}u\nsoftware_user = {u}s\n"),
        None => "alter_user = false\n".into(),
    };
    let (slapos_keys, sections) = limits.config();
    format!(
        "[slapos]\ncomputer_id = COMP-BENCH\nmaster_url = {}\nsoftware_root = {r}/soft\n\
         instance_root = {r}/inst\nroot_check = false\npidfile_software = {r}/var/run/sw.pid\n\
         pidfile_instance = {r}/var/run/cp.pid\npidfile_report = {r}/var/run/ur.pid\n{slapos_keys}\n\
         [slapformat]\npartition_amount = {partitions}\n{user_part}alter_network = false\n\
         create_tap = false\npartition_has_ipv6_range = false\ncomputer_xml = {r}/etc/slapos.xml\n\
         computer_json = {r}/etc/slapos.json\n{sections}",
        urls.join(" ")
    )
}

/// Runs `slapos node <args> --cfg cfg`; its stdout, or the failure.
fn node(bin: &Path, cfg: &Path, args: &[&str]) -> Result<String, NodeBenchError> {
    let out = Command::new(bin)
        .arg("node")
        .args(args)
        .arg("--cfg")
        .arg(cfg)
        .output()
        .map_err(|e| failed(format!("slapos node {args:?}: {e}")))?;
    if !out.status.success() {
        return Err(failed(format!(
            "slapos node {args:?}: {}\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn running_services(bin: &Path, cfg: &Path) -> Result<usize, NodeBenchError> {
    let status: serde_json::Value = serde_json::from_str(&node(bin, cfg, &["status", "--json"])?)
        .map_err(|e| failed(format!("status: {e}")))?;
    Ok(status
        .as_array()
        .map_or(0, |a| a.iter().filter(|p| p["state"] == "Running").count()))
}

fn request_all(
    client: &SlapClient,
    software: &str,
    titles: std::ops::Range<usize>,
) -> Result<(), NodeBenchError> {
    for i in titles {
        let title = format!("bench-{i}");
        client
            .request_instance(
                software,
                &title,
                &[],
                &[("computer_guid", "COMP-BENCH")],
                "started",
            )
            .map_err(|e| failed(format!("request {title}: {e}")))?;
    }
    Ok(())
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    s.get(s.len() / 2).copied().unwrap_or(0.0)
}

/// Runs the bench; `progress` (called from a worker thread) hears each step.
pub async fn run_node_bench(
    opts: &NodeBenchOptions,
    progress: impl Fn(&str) + Send + 'static,
) -> Result<NodeBenchReport, NodeBenchError> {
    let mut cluster = ProcessCluster::new(&opts.bin, &opts.dir);
    cluster.start(opts.replicas).await?;
    let urls: Vec<String> = cluster
        .start_gateways(opts.replicas as usize)
        .await?
        .into_iter()
        .map(|a| format!("http://{a}/"))
        .collect();
    let bin = opts.bin.clone();
    let dir = opts.dir.clone();
    let plan = Plan {
        steady: opts.steady,
        fresh: opts.fresh,
        runs: opts.runs.max(1),
        limits: opts.limits,
    };
    let reference = opts.reference.as_ref().map(|r| ReferenceOptions {
        partitions: r.partitions,
        venv: r.venv.clone(),
        runs: r.runs,
    });
    let blocking = tokio::task::spawn_blocking(move || {
        let mut report = bench_node(&bin, &dir, &urls, plan, &progress)?;
        if let Some(reference) = &reference {
            report.reference = Some(side_by_side(&bin, &dir, &urls, reference, &progress)?);
        }
        Ok(report)
    });
    let report = blocking
        .await
        .map_err(|e| failed(format!("bench thread: {e}")))?;
    report.map(|mut r| {
        r.replicas = opts.replicas;
        r
    })
}

/// What one bench run deploys and measures.
#[derive(Clone, Copy)]
struct Plan {
    steady: usize,
    fresh: usize,
    runs: usize,
    limits: LimitsMode,
}

fn bench_node(
    bin: &Path,
    dir: &Path,
    urls: &[String],
    plan: Plan,
    say: &dyn Fn(&str),
) -> Result<NodeBenchReport, NodeBenchError> {
    let Plan {
        steady,
        fresh,
        runs,
        limits,
    } = plan;
    let root = slapgrid::process::is_root();
    let node_dir = dir.join("node");
    for d in ["etc", "soft", "inst", "var/run"] {
        std::fs::create_dir_all(node_dir.join(d)).map_err(|e| failed(e.to_string()))?;
    }
    if root {
        use std::os::unix::fs::PermissionsExt;
        for d in [dir, node_dir.as_path()] {
            std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755))
                .map_err(|e| failed(e.to_string()))?;
        }
    }
    let users = root.then(|| format!("bn{:04x}", std::process::id() & 0xffff));
    let cfg = node_dir.join("etc/slapos.cfg");
    std::fs::write(
        &cfg,
        node_cfg(&node_dir, urls, steady + fresh, users.as_deref(), limits),
    )
    .map_err(|e| failed(e.to_string()))?;
    let guard = Teardown {
        bin: bin.to_owned(),
        cfg: cfg.clone(),
        users: users.is_some(),
    };
    say(&format!(
        "formatting {} partitions ({})",
        steady + fresh,
        if root { "real users" } else { "directories" }
    ));
    node(bin, &cfg, &["format"])?;
    let cgroups = serde_json::from_str::<serde_json::Value>(&node(
        bin,
        &cfg,
        &["status", "--limits", "--json"],
    )?)
    .ok()
    .and_then(|v| v["cgroups"].as_str().map(str::to_owned))
    .unwrap_or_default();
    say(&format!("cgroups: {cgroups}"));
    let software = write_release(&dir.join("release"))?;
    let client = SlapClient::new(urls, None, None).map_err(|e| failed(e.to_string()))?;
    client
        .supply(&software, "COMP-BENCH", "available")
        .map_err(|e| failed(e.to_string()))?;
    node(bin, &cfg, &["software"])?;
    say(&format!("requesting and deploying {steady} instances"));
    request_all(&client, &software, 0..steady)?;
    let t = Instant::now();
    let out = node(bin, &cfg, &["instance"])?;
    let initial_deploy_seconds = t.elapsed().as_secs_f64();
    if !out.contains(&format!("{steady} processed")) {
        return Err(failed(format!(
            "the first run did not deploy {steady}: {out}"
        )));
    }
    say(&format!("{runs} unchanged runs over {steady} partitions"));
    let mut unchanged = Vec::new();
    for _ in 0..runs {
        let t = Instant::now();
        let out = node(bin, &cfg, &["instance"])?;
        unchanged.push(t.elapsed().as_secs_f64());
        if !out.contains(&format!("0 processed, {steady} unchanged")) {
            return Err(failed(format!("an unchanged run did something: {out}")));
        }
    }
    say(&format!("{fresh} new instances: request to running"));
    let t = Instant::now();
    request_all(&client, &software, steady..steady + fresh)?;
    let run_start = Instant::now();
    let out = node(bin, &cfg, &["instance"])?;
    let fresh_run_seconds = run_start.elapsed().as_secs_f64();
    if !out.contains(&format!("{fresh} processed")) {
        return Err(failed(format!(
            "the run did not deploy the {fresh} new instances: {out}"
        )));
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    while running_services(bin, &cfg)? < steady + fresh {
        if Instant::now() > deadline {
            return Err(failed("the new services are not all running after 120 s"));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let fresh_to_running_seconds = t.elapsed().as_secs_f64();
    drop(guard);
    Ok(NodeBenchReport {
        replicas: 0,
        real_users: root,
        steady_partitions: steady,
        fresh_partitions: fresh,
        limits: Some(limits),
        cgroups,
        initial_deploy_seconds,
        unchanged_median_seconds: median(&unchanged),
        unchanged_runs_seconds: unchanged,
        fresh_to_running_seconds,
        fresh_run_seconds,
        reference: None,
    })
}

/// Stops the services and removes the users the bench created, also on failure.
struct Teardown {
    bin: PathBuf,
    cfg: PathBuf,
    users: bool,
}

impl Drop for Teardown {
    fn drop(&mut self) {
        let _ = node(&self.bin, &self.cfg, &["shutdown"]);
        if self.users {
            let _ = node(&self.bin, &self.cfg, &["unformat"]);
        }
    }
}

impl NodeBenchReport {
    pub fn summary(&self) -> String {
        let (min, max) = self
            .unchanged_runs_seconds
            .iter()
            .fold((f64::MAX, 0.0f64), |(a, b), x| (a.min(*x), b.max(*x)));
        format!(
            "node bench: one node, {} replicas, {}, partition limits {:?} (cgroups: {})\n\
             first deployment of {} partitions: {:.2} s ({:.1} ms per partition)\n\
             unchanged run over {} partitions: median {:.3} s (min {:.3}, max {:.3}, {} runs; goal < 1 s)\n\
             {} new partitions, request to all running: {:.2} s (the instance run: {:.2} s; goal < 60 s)\n",
            self.replicas,
            if self.real_users { "real Unix users" } else { "directories of the current user" },
            self.limits,
            self.cgroups,
            self.steady_partitions,
            self.initial_deploy_seconds,
            self.initial_deploy_seconds * 1000.0 / self.steady_partitions.max(1) as f64,
            self.steady_partitions,
            self.unchanged_median_seconds,
            min,
            max,
            self.unchanged_runs_seconds.len(),
            self.fresh_partitions,
            self.fresh_to_running_seconds,
            self.fresh_run_seconds,
        ) + &self.reference.as_ref().map_or(String::new(), |r| {
            format!(
                concat!(
                    "side by side on {} ({} partitions each, same cluster):\n",
                    "  slapos.core 1.26.1 node agent: deploy {:.2} s, unchanged run median {:.3} s\n",
                    "  ours:                          deploy {:.2} s, unchanged run median {:.3} s ",
                    "({:.0}x faster unchanged)\n"
                ),
                r.release,
                r.partitions,
                r.slapos_core.deploy_seconds,
                r.slapos_core.unchanged_median_seconds,
                r.ours.deploy_seconds,
                r.ours.unchanged_median_seconds,
                r.slapos_core.unchanged_median_seconds / r.ours.unchanged_median_seconds.max(1e-9),
            )
        })
    }
}

// ----- side by side with SlapOS's own node agent ------------------------------------------

/// The reference run: SlapOS's own node agent (slapos.core 1.26.1, Python) and ours,
/// each on its own computer of the same cluster, both deploying `partitions` instances
/// of the buildout release tinysr ([`slapos_harness::tinysr`]), then running again unchanged.
/// The Python agent runs as `nobody` in its unprivileged mode (slapgrid-behaviour.md
/// 8.2/8.3), ours as root with a Unix user per partition.
pub struct ReferenceOptions {
    pub partitions: usize,
    /// The node venv (Python 3.12 with slapos.core 1.26.1, zc.buildout < 5, supervisor),
    /// made by tests/compat/node/setup-node-venv.sh.
    pub venv: PathBuf,
    pub runs: usize,
}

#[derive(Debug, Serialize)]
pub struct AgentFigures {
    pub deploy_seconds: f64,
    pub unchanged_runs_seconds: Vec<f64>,
    pub unchanged_median_seconds: f64,
}

#[derive(Debug, Serialize)]
pub struct SideBySide {
    pub partitions: usize,
    pub release: String,
    pub slapos_core: AgentFigures,
    pub ours: AgentFigures,
}

fn open_tree(p: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(meta) = std::fs::metadata(p) {
        let extra = if meta.is_dir() { 0o755 } else { 0o644 };
        let _ = std::fs::set_permissions(
            p,
            std::fs::Permissions::from_mode(meta.permissions().mode() | extra),
        );
        if meta.is_dir() {
            for e in std::fs::read_dir(p).into_iter().flatten().flatten() {
                open_tree(&e.path());
            }
        }
    }
}

/// tinysr written out under `dir`, readable by every user; its URL.
fn prepare_tinysr(dir: &Path) -> Result<String, NodeBenchError> {
    let url = slapos_harness::tinysr::write(&dir.join("tinysr"))
        .map_err(|e| failed(format!("writing tinysr: {e}")))?;
    open_tree(dir);
    Ok(url.display().to_string())
}

/// `runuser -u nobody -- slapos node <args>` from the venv; the time it took.
fn python_node(venv: &Path, home: &Path, cfg: &Path, args: &[&str]) -> Result<f64, NodeBenchError> {
    let t = Instant::now();
    let out = Command::new("runuser")
        .args(["-u", "nobody", "--", "env"])
        .arg(format!("HOME={}", home.display()))
        .arg(format!("PATH={}:/usr/bin:/bin", venv.join("bin").display()))
        .arg(venv.join("bin/slapos"))
        .arg("node")
        .args(args)
        .arg("--cfg")
        .arg(cfg)
        .arg("--now")
        .current_dir(home)
        .output()
        .map_err(|e| failed(format!("runuser: {e}")))?;
    let took = t.elapsed().as_secs_f64();
    if !out.status.success() {
        return Err(failed(format!(
            "slapos.core's slapos node {args:?}: {}\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    Ok(took)
}

/// Stops what the Python agent left running (its supervisord and programs).
struct PythonTeardown(PathBuf);

impl Drop for PythonTeardown {
    fn drop(&mut self) {
        let pidfile = self.0.join("inst/var/run/supervisord.pid");
        if let Some(pid) = std::fs::read_to_string(&pidfile)
            .ok()
            .and_then(|s| s.trim().parse::<i32>().ok())
        {
            // supervisord stops its programs on TERM.
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGTERM,
            );
            let deadline = Instant::now() + Duration::from_secs(20);
            while Path::new(&format!("/proc/{pid}")).exists() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        let _ = Command::new("pkill")
            .args(["-KILL", "-u", "nobody", "-f"])
            .arg(&self.0)
            .status();
    }
}

fn figures(deploy: f64, unchanged: Vec<f64>) -> AgentFigures {
    AgentFigures {
        deploy_seconds: deploy,
        unchanged_median_seconds: median(&unchanged),
        unchanged_runs_seconds: unchanged,
    }
}

fn side_by_side(
    bin: &Path,
    dir: &Path,
    urls: &[String],
    reference: &ReferenceOptions,
    say: &dyn Fn(&str),
) -> Result<SideBySide, NodeBenchError> {
    let n = reference.partitions;
    let runs = reference.runs.max(1);
    let client = SlapClient::new(urls, None, None).map_err(|e| failed(e.to_string()))?;
    let software = prepare_tinysr(&dir.join("ref"))?;
    let request = |computer: &str| -> Result<(), NodeBenchError> {
        client
            .supply(&software, computer, "available")
            .map_err(|e| failed(e.to_string()))?;
        for i in 0..n {
            client
                .request_instance(
                    &software,
                    &format!("{computer}-{i}"),
                    &[],
                    &[("computer_guid", computer)],
                    "started",
                )
                .map_err(|e| failed(format!("request: {e}")))?;
        }
        Ok(())
    };

    // SlapOS's own agent, unprivileged, as `nobody`.
    say(&format!(
        "slapos.core's node agent: {n} partitions of tinysr"
    ));
    let py = dir.join("ref/py");
    for d in ["etc", "soft", "inst", "var/run", "var/log", "shared"] {
        std::fs::create_dir_all(py.join(d)).map_err(|e| failed(e.to_string()))?;
    }
    let p = py.display();
    let mut def = String::from("[computer]\naddress = 127.0.0.1/255.255.255.255\n");
    for i in 0..n {
        def.push_str(&format!(
            "\n[partition_{i}]\naddress = 127.0.0.1/255.255.255.255 ::1/ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff\n\
             pathname = slappart{i}\nuser = nobody\nnetwork_interface =\n"
        ));
    }
    std::fs::write(py.join("etc/def.cfg"), def).map_err(|e| failed(e.to_string()))?;
    let py_cfg = py.join("etc/slapos.cfg");
    std::fs::write(
        &py_cfg,
        format!(
            "[slapos]\ncomputer_id = COMP-PY\nmaster_url = {}\nsoftware_root = {p}/soft\n\
             instance_root = {p}/inst\nroot_check = False\npidfile_software = {p}/var/run/sw.pid\n\
             pidfile_instance = {p}/var/run/cp.pid\npidfile_report = {p}/var/run/ur.pid\n\
             shared_part_list =\n  {p}/shared\n\n[slapformat]\ninput_definition_file = {p}/etc/def.cfg\n\
             partition_amount = {n}\nalter_user = false\nalter_network = false\ncreate_tap = false\n\
             create_tun = false\ncomputer_xml = {p}/etc/slapos.xml\ncomputer_json = {p}/etc/slapos.json\n\
             partition_has_ipv6_range = false\n",
            urls[0].trim_end_matches('/')
        ),
    )
    .map_err(|e| failed(e.to_string()))?;
    let _ = Command::new("chown")
        .args(["-R", "nobody:"])
        .arg(&py)
        .status();
    let _py_guard = PythonTeardown(py.clone());
    python_node(&reference.venv, &py, &py_cfg, &["format"])?;
    request("COMP-PY")?;
    python_node(&reference.venv, &py, &py_cfg, &["software"])?;
    let py_deploy = python_node(&reference.venv, &py, &py_cfg, &["instance"])?;
    let mut py_unchanged = Vec::new();
    for _ in 0..runs {
        py_unchanged.push(python_node(&reference.venv, &py, &py_cfg, &["instance"])?);
    }

    // Ours, privileged when root.
    say(&format!("our node agent: {n} partitions of tinysr"));
    let rs = dir.join("ref/rs");
    for d in ["etc", "soft", "inst", "var/run"] {
        std::fs::create_dir_all(rs.join(d)).map_err(|e| failed(e.to_string()))?;
    }
    open_tree(&dir.join("ref"));
    let root = slapgrid::process::is_root();
    let users = root.then(|| format!("br{:04x}", std::process::id() & 0xffff));
    let rs_cfg = rs.join("etc/slapos.cfg");
    let text = node_cfg(&rs, urls, n, users.as_deref(), LimitsMode::Auto)
        .replace("COMP-BENCH", "COMP-RS")
        .replace(
            "[slapformat]",
            &format!(
                "buildout_python = {}\n\n[slapformat]",
                reference.venv.join("bin/python").display()
            ),
        );
    std::fs::write(&rs_cfg, text).map_err(|e| failed(e.to_string()))?;
    let _rs_guard = Teardown {
        bin: bin.to_owned(),
        cfg: rs_cfg.clone(),
        users: users.is_some(),
    };
    node(bin, &rs_cfg, &["format"])?;
    request("COMP-RS")?;
    node(bin, &rs_cfg, &["software"])?;
    let t = Instant::now();
    let out = node(bin, &rs_cfg, &["instance"])?;
    let rs_deploy = t.elapsed().as_secs_f64();
    if !out.contains(&format!("{n} processed")) {
        return Err(failed(format!("our agent did not deploy {n}: {out}")));
    }
    let mut rs_unchanged = Vec::new();
    for _ in 0..runs {
        let t = Instant::now();
        node(bin, &rs_cfg, &["instance"])?;
        rs_unchanged.push(t.elapsed().as_secs_f64());
    }
    Ok(SideBySide {
        partitions: n,
        release: "tinysr (buildout)".into(),
        slapos_core: figures(py_deploy, py_unchanged),
        ours: figures(rs_deploy, rs_unchanged),
    })
}
