//! `slapos bench frontend`: one backend (Debian's nginx serving a static file over plain
//! HTTP, as a partition's service would), reached directly, through our frontend
//! (`slapos frontend run`, a real process of this binary, over a sites file with one
//! site) and through Debian's nginx configured as the same reverse proxy (TLS 1.3, the
//! same certificate, keep-alive connections to the backend, the forwarding headers,
//! an access log), side by side in one run.
//!
//! Per path and round: requests per second and their latency p50/p99 over 1 and 64
//! keep-alive HTTP/1.1 connections (one request outstanding on each), then, for the two
//! proxies, full TLS handshakes per second (a new connection, no session resumption, one
//! request, closed). Paths are interleaved within each round; the report gives the
//! median of the rounds for each figure, and a proxy's added latency is its p50 (p99)
//! minus the direct path's at the same number of connections.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper::client::conn::http1::{self, SendRequest};
use hyper::Request;
use hyper_util::rt::TokioIo;
use serde::Serialize;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

pub use crate::local::LocalBenchError;
use crate::local::{self, io, median, percentile, port, version, Proc};

/// The site's name (SNI and `Host`), in the sites file and nginx's `server_name`.
const HOST: &str = "bench.example.test";
/// The file the backend serves.
const PATH: &str = "/index.html";

/// The frontend bench's options.
#[derive(Debug, Clone)]
pub struct FrontendBenchOptions {
    /// The `slapos` binary (its `frontend run` is what is measured).
    pub bin: PathBuf,
    /// Working directory (certificates, configurations, logs).
    pub dir: PathBuf,
    /// Rounds over the three paths.
    pub rounds: usize,
    /// Seconds of each measure.
    pub seconds: f64,
    /// Numbers of keep-alive connections of the request measures.
    pub connections: Vec<usize>,
    /// Concurrent clients of the handshake measure.
    pub handshake_clients: usize,
    /// Bytes of the file the backend serves.
    pub body_bytes: usize,
}

/// What stops the frontend bench.
pub type FrontendBenchError = LocalBenchError;

/// One request measure (medians over the rounds).
#[derive(Debug, Clone, Serialize)]
pub struct LoadFigures {
    pub connections: usize,
    pub requests_per_sec: f64,
    pub p50_us: f64,
    pub p99_us: f64,
    /// This path's p50 and p99 minus the direct path's (0 for the direct path).
    pub added_p50_us: f64,
    pub added_p99_us: f64,
}

/// One path's figures.
#[derive(Debug, Clone, Serialize)]
pub struct PathFigures {
    /// `direct`, `frontend` or `nginx`.
    pub path: String,
    pub loads: Vec<LoadFigures>,
    /// Full TLS handshakes (and one request each) per second; none for `direct`.
    pub handshakes_per_sec: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct FrontendBenchReport {
    pub rounds: usize,
    pub seconds: f64,
    pub body_bytes: usize,
    pub handshake_clients: usize,
    pub nginx: String,
    pub paths: Vec<PathFigures>,
}

impl FrontendBenchReport {
    /// The figures of `path`.
    pub fn path(&self, path: &str) -> Option<&PathFigures> {
        self.paths.iter().find(|p| p.path == path)
    }
}

/// Where a path's client connects, and with what TLS.
#[derive(Clone)]
struct Target {
    name: String,
    addr: String,
    tls: Option<TlsConnector>,
}

async fn started(
    cmd: Command,
    dir: &Path,
    name: &str,
    addr: &str,
) -> Result<Proc, FrontendBenchError> {
    let proc = local::spawn(cmd, &dir.join(format!("{name}.log")), name)?;
    local::wait_listening(addr, name).await?;
    Ok(proc)
}

/// nginx's configuration: `server` is the `http` block's server (and upstreams).
fn nginx_config(dir: &Path, name: &str, workers: usize, server: &str) -> String {
    let d = dir.display();
    // As root, nginx's workers would switch to `nobody`, who cannot use this directory.
    let user = if nix::unistd::geteuid().is_root() {
        "user root;\n"
    } else {
        ""
    };
    format!(
        "daemon off;\nmaster_process on;\nworker_processes {workers};\n{user}\
         pid {d}/{name}.pid;\nerror_log {d}/{name}.error.log warn;\n\
         events {{ worker_connections 4096; }}\n\
         http {{\n  default_type text/html;\n  keepalive_requests 100000000;\n\
         keepalive_timeout 120s;\n\
         client_body_temp_path {d}/{name}-tmp/body;\n  proxy_temp_path {d}/{name}-tmp/proxy;\n\
         fastcgi_temp_path {d}/{name}-tmp/fastcgi;\n  uwsgi_temp_path {d}/{name}-tmp/uwsgi;\n\
         scgi_temp_path {d}/{name}-tmp/scgi;\n{server}\n}}\n"
    )
}

/// The backend, our frontend and nginx's proxy, running; the three targets.
struct Setup {
    _procs: Vec<Proc>,
    targets: Vec<Target>,
}

async fn setup(o: &FrontendBenchOptions) -> Result<Setup, FrontendBenchError> {
    let dir = &o.dir;
    for sub in ["www", "logs", "backend-tmp", "nginx-proxy-tmp"] {
        let path = dir.join(sub);
        std::fs::create_dir_all(&path).map_err(io(format!("create {}", path.display())))?;
    }
    let body: Vec<u8> = (0..o.body_bytes).map(|i| b'a' + (i % 26) as u8).collect();
    std::fs::write(dir.join("www/index.html"), &body).map_err(io("write index.html"))?;
    let (ca, pairs) = local::certificates(
        dir,
        &[local::Leaf {
            identity: "gateway:bench-frontend",
            dns_names: vec![HOST.into()],
        }],
    )
    .map_err(FrontendBenchError::Certificates)?;
    let Some((cert, key)) = pairs.into_iter().next() else {
        return Err(FrontendBenchError::Certificates("no pair".into()));
    };
    let mut procs = Vec::new();

    // The backend: one worker serving the file, its access log off (it serves all three
    // paths alike).
    let backend = format!("127.0.0.1:{}", port()?);
    let conf = dir.join("backend.conf");
    let server = format!(
        "  access_log off;\n  server {{ listen {backend}; root {}/www; }}",
        dir.display()
    );
    std::fs::write(&conf, nginx_config(dir, "backend", 1, &server))
        .map_err(io("write backend.conf"))?;
    let mut cmd = Command::new("nginx");
    cmd.arg("-c").arg(&conf).arg("-p").arg(dir);
    procs.push(started(cmd, dir, "backend", &backend).await?);

    // Ours: one site, the backend on this machine allowed.
    let frontend = format!("127.0.0.1:{}", port()?);
    let sites = serde_json::json!({
        "default-certificate": cert,
        "default-key": key,
        "log-dir": dir.join("logs"),
        "allow-local-backends": true,
        "sites": [{
            "reference": "SOFTINST-BENCH",
            "certificate": cert,
            "key": key,
            "parameters": {
                "url": format!("http://{backend}"),
                "custom_domain": HOST,
            },
        }],
    });
    let sites_file = dir.join("sites.json");
    std::fs::write(&sites_file, sites.to_string()).map_err(io("write sites.json"))?;
    let mut cmd = Command::new(&o.bin);
    cmd.args(["frontend", "run", "--listen-https", &frontend])
        .arg("--sites")
        .arg(&sites_file);
    procs.push(started(cmd, dir, "frontend", &frontend).await?);

    // nginx as the same proxy: as many workers as the machine has cores (as the
    // frontend's runtime has threads), keep-alive to the backend, the same headers.
    let proxy = format!("127.0.0.1:{}", port()?);
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get());
    let server = format!(
        "  access_log {d}/logs/nginx-proxy.access.log;\n\
         upstream backend {{ server {backend}; keepalive 128; }}\n\
         server {{\n    listen {proxy} ssl;\n    server_name {HOST};\n\
         ssl_certificate {cert};\n    ssl_certificate_key {key};\n    ssl_protocols TLSv1.3;\n\
         location / {{\n      proxy_pass http://backend;\n      proxy_http_version 1.1;\n\
         proxy_set_header Connection \"\";\n      proxy_set_header Host $host;\n\
         proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;\n\
         proxy_set_header X-Forwarded-Proto $scheme;\n\
         proxy_set_header Forwarded \"for=$remote_addr;proto=$scheme\";\n    }}\n  }}",
        d = dir.display(),
        cert = cert.display(),
        key = key.display(),
    );
    let conf = dir.join("nginx-proxy.conf");
    std::fs::write(&conf, nginx_config(dir, "nginx-proxy", workers, &server))
        .map_err(io("write nginx-proxy.conf"))?;
    let mut cmd = Command::new("nginx");
    cmd.arg("-c").arg(&conf).arg("-p").arg(dir);
    procs.push(started(cmd, dir, "nginx-proxy", &proxy).await?);

    // The client's TLS: the bench's CA, HTTP/1.1, every handshake a full one.
    let cas = http_client::tls::read_bundles(&[ca.as_path()])
        .map_err(|e| FrontendBenchError::Certificates(e.to_string()))?;
    let mut config = http_client::tls::verified(&cas, None)
        .map_err(|e| FrontendBenchError::Certificates(e.to_string()))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    config.resumption = rustls::client::Resumption::disabled();
    let tls = TlsConnector::from(Arc::new(config));
    let target = |name: &str, addr: String, tls: Option<TlsConnector>| Target {
        name: name.into(),
        addr,
        tls,
    };
    Ok(Setup {
        _procs: procs,
        targets: vec![
            target("direct", backend, None),
            target("frontend", frontend, Some(tls.clone())),
            target("nginx", proxy, Some(tls)),
        ],
    })
}

/// A keep-alive HTTP/1.1 connection to `t` (its I/O in a task of its own).
async fn connect(t: &Target) -> Result<SendRequest<Empty<Bytes>>, FrontendBenchError> {
    let tcp = TcpStream::connect(&t.addr)
        .await
        .map_err(io(format!("connect to {}", t.name)))?;
    let _ = tcp.set_nodelay(true);
    let handshake = |e: hyper::Error| FrontendBenchError::Answer {
        peer: t.name.clone(),
        request: "an HTTP/1.1 connection".into(),
        answer: e.to_string(),
    };
    match &t.tls {
        None => {
            let (sender, conn) = http1::handshake(TokioIo::new(tcp))
                .await
                .map_err(handshake)?;
            tokio::spawn(conn);
            Ok(sender)
        }
        Some(connector) => {
            let name = rustls::pki_types::ServerName::try_from(HOST)
                .map_err(|e| FrontendBenchError::Certificates(e.to_string()))?;
            let tls = connector
                .connect(name, tcp)
                .await
                .map_err(io(format!("TLS handshake with {}", t.name)))?;
            let (sender, conn) = http1::handshake(TokioIo::new(tls))
                .await
                .map_err(handshake)?;
            tokio::spawn(conn);
            Ok(sender)
        }
    }
}

/// One GET of the file, its whole body read and checked.
async fn get(
    t: &Target,
    sender: &mut SendRequest<Empty<Bytes>>,
    len: usize,
) -> Result<(), FrontendBenchError> {
    let bad = |answer: String| FrontendBenchError::Answer {
        peer: t.name.clone(),
        request: format!("GET {PATH}"),
        answer,
    };
    let request = Request::get(PATH)
        .header(hyper::header::HOST, HOST)
        .body(Empty::new())
        .map_err(|e| bad(e.to_string()))?;
    // The connection takes the next request once it has finished reading the last.
    sender.ready().await.map_err(|e| bad(e.to_string()))?;
    let answer = sender.send_request(request).await.map_err(|e| {
        // hyper's "operation was canceled" says little without its cause.
        match std::error::Error::source(&e) {
            Some(cause) => bad(format!("{e}: {cause}")),
            None => bad(e.to_string()),
        }
    })?;
    let status = answer.status();
    let body = answer
        .into_body()
        .collect()
        .await
        .map_err(|e| bad(e.to_string()))?
        .to_bytes();
    if status != hyper::StatusCode::OK || body.len() != len {
        return Err(bad(format!("{status} with {} bytes", body.len())));
    }
    Ok(())
}

/// `connections` keep-alive connections requesting for `seconds`: (requests/s, p50 µs,
/// p99 µs).
async fn load(
    t: &Target,
    connections: usize,
    o: &FrontendBenchOptions,
) -> Result<(f64, f64, f64), FrontendBenchError> {
    let mut senders = Vec::new();
    for _ in 0..connections {
        senders.push(connect(t).await?);
    }
    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(o.seconds);
    let mut tasks = Vec::new();
    for mut sender in senders {
        let (t, len) = (t.clone(), o.body_bytes);
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            while Instant::now() < deadline {
                let at = Instant::now();
                get(&t, &mut sender, len).await?;
                lat.push(at.elapsed().as_secs_f64() * 1e6);
            }
            Ok::<_, FrontendBenchError>(lat)
        }));
    }
    let mut all = Vec::new();
    for task in tasks {
        match task.await {
            Ok(r) => all.extend(r?),
            Err(e) => return Err(io("a client task")(std::io::Error::other(e.to_string()))),
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    all.sort_by(f64::total_cmp);
    Ok((
        all.len() as f64 / elapsed,
        percentile(&all, 0.50),
        percentile(&all, 0.99),
    ))
}

/// `clients` clients each opening a connection (a full TLS handshake), making one
/// request and closing it, for `seconds`: connections per second.
async fn handshakes(t: &Target, o: &FrontendBenchOptions) -> Result<f64, FrontendBenchError> {
    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(o.seconds);
    let mut tasks = Vec::new();
    for _ in 0..o.handshake_clients {
        let (t, len) = (t.clone(), o.body_bytes);
        tasks.push(tokio::spawn(async move {
            let mut done = 0u64;
            while Instant::now() < deadline {
                let mut sender = connect(&t).await?;
                get(&t, &mut sender, len).await?;
                done += 1;
            }
            Ok::<_, FrontendBenchError>(done)
        }));
    }
    let mut done = 0;
    for task in tasks {
        match task.await {
            Ok(r) => done += r?,
            Err(e) => return Err(io("a client task")(std::io::Error::other(e.to_string()))),
        }
    }
    Ok(done as f64 / started.elapsed().as_secs_f64())
}

/// Runs the bench (processes stopped at the end, the directory left to the caller).
pub async fn run_frontend_bench(
    o: &FrontendBenchOptions,
) -> Result<FrontendBenchReport, FrontendBenchError> {
    let setup = setup(o).await?;
    // Warm-up: every path (first connections, the proxies' pools to the backend).
    for t in &setup.targets {
        let mut sender = connect(t).await?;
        for _ in 0..200 {
            get(t, &mut sender, o.body_bytes).await?;
        }
    }
    // raw[target][measure] = (requests/s, p50, p99) over the rounds; the last measure
    // is the handshakes' (requests/s only).
    type Raw = Vec<(Vec<f64>, Vec<f64>, Vec<f64>)>;
    let n = o.connections.len();
    let mut raw: Vec<Raw> = vec![vec![(vec![], vec![], vec![]); n + 1]; setup.targets.len()];
    for round in 0..o.rounds {
        for (i, t) in setup.targets.iter().enumerate() {
            for (m, &c) in o.connections.iter().enumerate() {
                let (rps, p50, p99) = load(t, c, o).await?;
                tracing::info!(round, path = %t.name, connections = c, rps, p50, p99, "measured");
                raw[i][m].0.push(rps);
                raw[i][m].1.push(p50);
                raw[i][m].2.push(p99);
            }
            if t.tls.is_some() {
                let per_sec = handshakes(t, o).await?;
                tracing::info!(round, path = %t.name, per_sec, "handshakes");
                raw[i][n].0.push(per_sec);
            }
        }
    }
    let medians: Vec<Vec<(f64, f64, f64)>> = raw
        .iter()
        .map(|r| {
            r.iter()
                .map(|(a, b, c)| (median(a.clone()), median(b.clone()), median(c.clone())))
                .collect()
        })
        .collect();
    let paths = setup
        .targets
        .iter()
        .zip(&medians)
        .map(|(t, m)| PathFigures {
            path: t.name.clone(),
            loads: o
                .connections
                .iter()
                .enumerate()
                .map(|(k, &connections)| LoadFigures {
                    connections,
                    requests_per_sec: m[k].0,
                    p50_us: m[k].1,
                    p99_us: m[k].2,
                    added_p50_us: m[k].1 - medians[0][k].1,
                    added_p99_us: m[k].2 - medians[0][k].2,
                })
                .collect(),
            handshakes_per_sec: t.tls.as_ref().map(|_| m[n].0),
        })
        .collect();
    Ok(FrontendBenchReport {
        rounds: o.rounds,
        seconds: o.seconds,
        body_bytes: o.body_bytes,
        handshake_clients: o.handshake_clients,
        nginx: version("nginx", "-v"),
        paths,
    })
}
