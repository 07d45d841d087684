//! `slapos bench tunnel`: Debian's memcached reached directly, through our tunnel
//! (`slapos tunnel server` + `client`, real processes of this binary) and through
//! Debian's stunnel4 configured as the same pair (server + client, TLS 1.3, both
//! certificates checked against the same CA), side by side in one run. The server ends
//! listen on `[::1]`, the client ends and memcached on 127.0.0.1, as in a partition.
//!
//! Per path and round: `set` and `get` operations per second and their latency p50/p99
//! with 1 and 32 clients (one connection each, one request outstanding), then the bulk
//! throughput of one client setting and getting large values. Paths are interleaved
//! within each round, and the report gives the median of the rounds for each figure.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub use crate::local::LocalBenchError;
use crate::local::{self, io, median, percentile, port, spawn, version, wait_listening, Proc};

/// The tunnel bench's options.
#[derive(Debug, Clone)]
pub struct TunnelBenchOptions {
    /// The `slapos` binary (its `tunnel` command is what is measured).
    pub bin: PathBuf,
    /// Working directory (certificates, configurations, logs).
    pub dir: PathBuf,
    /// Rounds over the three paths.
    pub rounds: usize,
    /// Seconds of each measure.
    pub seconds: f64,
    /// Numbers of concurrent clients of the small-value measures.
    pub clients: Vec<usize>,
    /// Bytes of a small value.
    pub value_bytes: usize,
    /// Bytes of a bulk value.
    pub bulk_bytes: usize,
    /// Keys the small-value measures spread over.
    pub keys: usize,
}

/// What stops the tunnel bench.
pub type TunnelBenchError = LocalBenchError;

/// One small-value measure (medians over the rounds).
#[derive(Debug, Clone, Serialize)]
pub struct OpFigures {
    pub op: String,
    pub clients: usize,
    pub ops_per_sec: f64,
    pub p50_us: f64,
    pub p99_us: f64,
}

/// One path's figures (medians over the rounds).
#[derive(Debug, Clone, Serialize)]
pub struct PathFigures {
    /// `direct`, `tunnel` or `stunnel`.
    pub path: String,
    pub ops: Vec<OpFigures>,
    /// Value bytes carried per second by one client setting then getting bulk values
    /// (both directions counted), MiB/s.
    pub bulk_mib_per_sec: f64,
    /// One bulk set+get round trip, p50, ms.
    pub bulk_p50_ms: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct TunnelBenchReport {
    pub rounds: usize,
    pub seconds: f64,
    pub value_bytes: usize,
    pub bulk_bytes: usize,
    pub memcached: String,
    pub stunnel: String,
    pub paths: Vec<PathFigures>,
}

impl TunnelBenchReport {
    /// The figures of `path`.
    pub fn path(&self, path: &str) -> Option<&PathFigures> {
        self.paths.iter().find(|p| p.path == path)
    }
}

/// A CA and the server's and client's pairs, as PEM files in `dir`: (ca, server cert,
/// server key, client cert, client key).
fn certificates(dir: &Path) -> Result<[PathBuf; 5], TunnelBenchError> {
    let leaf = |identity| local::Leaf {
        identity,
        dns_names: vec![],
    };
    let (ca, pairs) = local::certificates(dir, &[leaf(SERVER), leaf(CLIENT)])
        .map_err(TunnelBenchError::Certificates)?;
    match <[(PathBuf, PathBuf); 2]>::try_from(pairs) {
        Ok([(sc, sk), (cc, ck)]) => Ok([ca, sc, sk, cc, ck]),
        Err(_) => Err(TunnelBenchError::Certificates("two pairs".into())),
    }
}

/// The server end's identity: a server identity (its certificate carries `serverAuth`
/// besides `clientAuth`), since OpenSSL's client (stunnel's) requires the server purpose,
/// where our client end checks the identity; both pairs use the same certificates.
const SERVER: &str = "gateway:bench-server";
const CLIENT: &str = "partition:BENCH:slappart1";

fn stunnel_config(
    path: &Path,
    client: bool,
    accept: &str,
    connect: &str,
    cert: &Path,
    key: &Path,
    ca: &Path,
) -> Result<(), TunnelBenchError> {
    let mut text = String::from("foreground = yes\npid =\nsyslog = no\ndebug = 4\n\n[memcached]\n");
    if client {
        text.push_str("client = yes\n");
    }
    text.push_str(&format!(
        "accept = {accept}\nconnect = {connect}\ncert = {}\nkey = {}\nCAfile = {}\n\
         verifyChain = yes\nrequireCert = yes\nsslVersionMin = TLSv1.3\n\
         socket = l:TCP_NODELAY=1\nsocket = r:TCP_NODELAY=1\n",
        cert.display(),
        key.display(),
        ca.display()
    ));
    std::fs::write(path, text).map_err(io(format!("write {}", path.display())))
}

/// memcached, our pair and stunnel's pair, running; the three local addresses.
struct Setup {
    _procs: Vec<Proc>,
    paths: Vec<(String, String)>,
}

async fn setup(o: &TunnelBenchOptions) -> Result<Setup, TunnelBenchError> {
    let dir = &o.dir;
    std::fs::create_dir_all(dir).map_err(io(format!("create {}", dir.display())))?;
    let [ca, server_cert, server_key, client_cert, client_key] = certificates(dir)?;
    let mut procs = Vec::new();
    let mc_port = port()?;
    let direct = format!("127.0.0.1:{mc_port}");
    let mut mc = Command::new("memcached");
    mc.args([
        "-l",
        "127.0.0.1",
        "-p",
        &mc_port.to_string(),
        "-U",
        "0",
        "-m",
        "256",
    ])
    // The item size limit in MiB (memcached wants a multiple of its 512 KiB chunks).
    .args(["-I", &format!("{}m", o.bulk_bytes.div_ceil(1 << 20) + 1)]);
    if nix::unistd::geteuid().is_root() {
        mc.args(["-u", "nobody"]);
    }
    procs.push(spawn(mc, &dir.join("memcached.log"), "memcached")?);
    wait_listening(&direct, "memcached").await?;

    // Ours.
    let server = format!("[::1]:{}", port()?);
    let local = format!("127.0.0.1:{}", port()?);
    let tls_args = |cert: &Path, key: &Path| -> Vec<String> {
        vec![
            format!("--cert={}", cert.display()),
            format!("--key={}", key.display()),
            format!("--cacert={}", ca.display()),
        ]
    };
    let mut cmd = Command::new(&o.bin);
    cmd.args(["tunnel", "server", "--listen", &server, "--target", &direct])
        .args(["--allow", CLIENT])
        .args(tls_args(&server_cert, &server_key));
    procs.push(spawn(
        cmd,
        &dir.join("tunnel-server.log"),
        "slapos tunnel server",
    )?);
    wait_listening(&server, "slapos tunnel server").await?;
    let mut cmd = Command::new(&o.bin);
    cmd.args(["tunnel", "client", "--listen", &local, "--target", &server])
        .args(["--server-identity", SERVER])
        .args(tls_args(&client_cert, &client_key));
    procs.push(spawn(
        cmd,
        &dir.join("tunnel-client.log"),
        "slapos tunnel client",
    )?);
    wait_listening(&local, "slapos tunnel client").await?;

    // stunnel's, the same pair.
    let s_port = port()?;
    let s_local = format!("127.0.0.1:{}", port()?);
    let server_conf = dir.join("stunnel-server.conf");
    stunnel_config(
        &server_conf,
        false,
        &format!("::1:{s_port}"),
        &direct,
        &server_cert,
        &server_key,
        &ca,
    )?;
    let client_conf = dir.join("stunnel-client.conf");
    stunnel_config(
        &client_conf,
        true,
        &s_local,
        &format!("::1:{s_port}"),
        &client_cert,
        &client_key,
        &ca,
    )?;
    let mut cmd = Command::new("stunnel4");
    cmd.arg(&server_conf);
    procs.push(spawn(
        cmd,
        &dir.join("stunnel-server.log"),
        "stunnel4 (server)",
    )?);
    wait_listening(&format!("[::1]:{s_port}"), "stunnel4 (server)").await?;
    let mut cmd = Command::new("stunnel4");
    cmd.arg(&client_conf);
    procs.push(spawn(
        cmd,
        &dir.join("stunnel-client.log"),
        "stunnel4 (client)",
    )?);
    wait_listening(&s_local, "stunnel4 (client)").await?;

    Ok(Setup {
        _procs: procs,
        paths: vec![
            ("direct".into(), direct),
            ("tunnel".into(), local),
            ("stunnel".into(), s_local),
        ],
    })
}

/// One memcached text-protocol connection.
struct Conn {
    s: TcpStream,
    buf: Vec<u8>,
}

impl Conn {
    async fn open(addr: &str) -> Result<Conn, TunnelBenchError> {
        let s = TcpStream::connect(addr)
            .await
            .map_err(io(format!("connect {addr}")))?;
        let _ = s.set_nodelay(true);
        Ok(Conn { s, buf: Vec::new() })
    }

    /// Sends `request` and reads exactly `answer_len` bytes, which must end with `end`.
    async fn call(
        &mut self,
        request: &[u8],
        answer_len: usize,
        end: &[u8],
    ) -> Result<(), TunnelBenchError> {
        self.s.write_all(request).await.map_err(io("send"))?;
        self.buf.resize(answer_len, 0);
        self.s
            .read_exact(&mut self.buf)
            .await
            .map_err(io("read an answer"))?;
        if !self.buf.ends_with(end) {
            let shown = String::from_utf8_lossy(&self.buf[..self.buf.len().min(80)]).into_owned();
            return Err(TunnelBenchError::Answer {
                peer: "memcached".into(),
                request: String::from_utf8_lossy(&request[..request.len().min(40)]).into_owned(),
                answer: shown,
            });
        }
        Ok(())
    }

    async fn set(&mut self, key: &str, value: &[u8]) -> Result<(), TunnelBenchError> {
        let mut req = format!("set {key} 0 0 {}\r\n", value.len()).into_bytes();
        req.extend_from_slice(value);
        req.extend_from_slice(b"\r\n");
        self.call(&req, b"STORED\r\n".len(), b"STORED\r\n").await
    }

    async fn get(&mut self, key: &str, len: usize) -> Result<(), TunnelBenchError> {
        let req = format!("get {key}\r\n");
        let answer = format!("VALUE {key} 0 {len}\r\n").len() + len + "\r\nEND\r\n".len();
        self.call(req.as_bytes(), answer, b"\r\nEND\r\n").await
    }
}

fn key(i: usize) -> String {
    format!("bench:{i:06}")
}

fn value(len: usize) -> Vec<u8> {
    (0..len).map(|i| b'a' + (i % 26) as u8).collect()
}

/// `clients` connections doing `op` for `seconds`: (ops/s, p50 µs, p99 µs).
async fn small(
    addr: &str,
    op: &'static str,
    clients: usize,
    o: &TunnelBenchOptions,
) -> Result<(f64, f64, f64), TunnelBenchError> {
    let mut conns = Vec::new();
    for _ in 0..clients {
        conns.push(Conn::open(addr).await?);
    }
    let deadline = Instant::now() + Duration::from_secs_f64(o.seconds);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for (c, mut conn) in conns.into_iter().enumerate() {
        let value = value(o.value_bytes);
        let keys = o.keys;
        let len = o.value_bytes;
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut i = c * 7919;
            while Instant::now() < deadline {
                let k = key(i % keys);
                i += 1;
                let t = Instant::now();
                match op {
                    "set" => conn.set(&k, &value).await?,
                    _ => conn.get(&k, len).await?,
                }
                lat.push(t.elapsed().as_secs_f64() * 1e6);
            }
            Ok::<_, TunnelBenchError>(lat)
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        match t.await {
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

/// One client setting then getting bulk values for `seconds`: (MiB/s, p50 ms).
async fn bulk(addr: &str, o: &TunnelBenchOptions) -> Result<(f64, f64), TunnelBenchError> {
    let mut conn = Conn::open(addr).await?;
    let v = value(o.bulk_bytes);
    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(o.seconds);
    let mut lat = Vec::new();
    while Instant::now() < deadline {
        let t = Instant::now();
        conn.set("bench:bulk", &v).await?;
        conn.get("bench:bulk", v.len()).await?;
        lat.push(t.elapsed().as_secs_f64() * 1e3);
    }
    let elapsed = started.elapsed().as_secs_f64();
    let bytes = (lat.len() * 2 * v.len()) as f64;
    lat.sort_by(f64::total_cmp);
    Ok((bytes / elapsed / (1024.0 * 1024.0), percentile(&lat, 0.50)))
}

/// Runs the bench (processes stopped at the end, the directory left to the caller).
pub async fn run_tunnel_bench(
    o: &TunnelBenchOptions,
) -> Result<TunnelBenchReport, TunnelBenchError> {
    let setup = setup(o).await?;
    // The keys the gets read, through the direct path.
    let mut conn = Conn::open(&setup.paths[0].1).await?;
    let v = value(o.value_bytes);
    for i in 0..o.keys {
        conn.set(&key(i), &v).await?;
    }
    // Warm-up: every path once (first connections, page cache, allocator).
    for (_, addr) in &setup.paths {
        let mut c = Conn::open(addr).await?;
        for i in 0..100 {
            c.get(&key(i % o.keys), o.value_bytes).await?;
        }
    }
    // raw[path][measure] = values over the rounds.
    type Raw = Vec<(Vec<f64>, Vec<f64>, Vec<f64>)>;
    let measures: Vec<(&'static str, usize)> = o
        .clients
        .iter()
        .flat_map(|&c| [("set", c), ("get", c)])
        .collect();
    let mut raw: Vec<Raw> =
        vec![vec![(vec![], vec![], vec![]); measures.len() + 1]; setup.paths.len()];
    for round in 0..o.rounds {
        for (p, (name, addr)) in setup.paths.iter().enumerate() {
            for (m, (op, clients)) in measures.iter().enumerate() {
                let (ops, p50, p99) = small(addr, op, *clients, o).await?;
                tracing::info!(round, path = %name, op, clients, ops, p50, p99, "measured");
                raw[p][m].0.push(ops);
                raw[p][m].1.push(p50);
                raw[p][m].2.push(p99);
            }
            let (mib, p50) = bulk(addr, o).await?;
            tracing::info!(round, path = %name, mib, p50, "bulk");
            raw[p][measures.len()].0.push(mib);
            raw[p][measures.len()].1.push(p50);
        }
    }
    let paths = setup
        .paths
        .iter()
        .zip(raw)
        .map(|((name, _), r)| PathFigures {
            path: name.clone(),
            ops: measures
                .iter()
                .zip(&r)
                .map(|((op, clients), (ops, p50, p99))| OpFigures {
                    op: (*op).into(),
                    clients: *clients,
                    ops_per_sec: median(ops.clone()),
                    p50_us: median(p50.clone()),
                    p99_us: median(p99.clone()),
                })
                .collect(),
            bulk_mib_per_sec: median(r[measures.len()].0.clone()),
            bulk_p50_ms: median(r[measures.len()].1.clone()),
        })
        .collect();
    Ok(TunnelBenchReport {
        rounds: o.rounds,
        seconds: o.seconds,
        value_bytes: o.value_bytes,
        bulk_bytes: o.bulk_bytes,
        memcached: version("memcached", "-V"),
        stunnel: version("stunnel4", "-version"),
        paths,
    })
}
