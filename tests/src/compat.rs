//! What `tests/compat.rs` runs beside a [`Cluster`]: the Python venv holding the real
//! slapos.core 1.26.1, a real `slapos proxy start` (the reference), a `slapos gateway run`
//! process in front of the cluster (plain HTTP, or HTTPS requiring client certificates of
//! the group's authority), and Python scripts with a deadline.
//!
//! Every process is SIGKILLed when its guard is dropped, also when a test fails; a guard
//! dropped by a failing test prints the tail of its log and keeps its directory.

use crate::cluster::Cluster;
use crate::slapos_bin;
use slapos_harness::free_port;
use std::fmt::Write as _;
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The slapos.core version the compatibility tests are written against.
pub const SLAPOS_CORE: &str = "1.26.1";

/// How long a process may take to serve after its start.
const START: Duration = Duration::from_secs(30);

/// The venv (`$SLAPOS_VENV`, default `/var/tmp/slapos-venv`) with slapos.core 1.26.1 and
/// slapos.libnetworkcache. Fails the test, saying how to get it, when it is missing: a
/// compatibility test that silently passes without the real client proves nothing.
pub fn venv() -> PathBuf {
    let dir = PathBuf::from(
        std::env::var_os("SLAPOS_VENV").unwrap_or_else(|| "/var/tmp/slapos-venv".into()),
    );
    let python = dir.join("bin/python");
    let help = format!(
        "The compatibility tests need a Python 3.12 venv with slapos.core=={SLAPOS_CORE} and \
         slapos.libnetworkcache at {} ($SLAPOS_VENV, default /var/tmp/slapos-venv). \
         Run scripts/install-deps once (it creates the venv; .ci/run does so), or create it by hand: \
         python3.12 -m venv {0} && {0}/bin/pip install slapos.core=={SLAPOS_CORE} \
         slapos.libnetworkcache",
        dir.display()
    );
    assert!(
        python.exists() && dir.join("bin/slapos").exists(),
        "{} or bin/slapos is missing.\n{help}",
        python.display()
    );
    let check = Command::new(&python)
        .args([
            "-c",
            "import slapos.slap, slapos.libnetworkcache, importlib.metadata as m; \
             print(m.version('slapos.core'))",
        ])
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}\n{help}", python.display()));
    let version = String::from_utf8_lossy(&check.stdout).trim().to_string();
    assert!(
        check.status.success() && version == SLAPOS_CORE,
        "the venv does not import slapos.slap {SLAPOS_CORE} (found {version:?}): {}\n{help}",
        String::from_utf8_lossy(&check.stderr)
    );
    dir
}

/// The folder of the Python side (`tests/compat/`).
pub fn compat_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("compat")
}

/// `GET path` over plain HTTP/1.0: the status and body, None when nothing answers.
pub fn http_get(addr: &str, path: &str) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect(addr).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).ok()?;
    let status = answer.split_whitespace().nth(1)?.parse().ok()?;
    let body = answer.split_once("\r\n\r\n").map(|(_, b)| b.to_string());
    Some((status, body.unwrap_or_default()))
}

fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// A process with a log file, killed when dropped.
struct Guarded {
    what: String,
    child: Option<Child>,
    log: PathBuf,
    dir: Option<tempfile::TempDir>,
}

impl Guarded {
    fn spawn(what: &str, mut command: Command, dir: tempfile::TempDir) -> Guarded {
        let log = dir.path().join(format!("{what}.log"));
        let out = File::create(&log).expect("create the log");
        let err = out.try_clone().expect("clone the log handle");
        let child = command
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start the {what}: {e}"));
        Guarded {
            what: what.into(),
            child: Some(child),
            log,
            dir: Some(dir),
        }
    }

    fn dir(&self) -> &Path {
        self.dir.as_ref().expect("directory").path()
    }

    /// Poll `ready` until it holds; fail with the log if the process exits or time runs out.
    fn wait(&mut self, ready: impl Fn() -> bool) {
        let deadline = Instant::now() + START;
        while !ready() {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!(
                    "the {} exited at start-up ({status}); its log:\n{}",
                    self.what,
                    tail(&self.log, 40)
                );
            }
            assert!(
                Instant::now() < deadline,
                "the {} does not serve within {START:?}; its log:\n{}",
                self.what,
                tail(&self.log, 40)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn log_tail(&self) -> String {
        format!(
            "----- {} log {} -----\n{}",
            self.what,
            self.log.display(),
            tail(&self.log, 60)
        )
    }
}

impl Drop for Guarded {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            eprintln!("{}", self.log_tail());
            if let Some(dir) = self.dir.take() {
                eprintln!("[{}] kept {}", self.what, dir.keep().display());
            }
        }
    }
}

/// The status of `GET path` over HTTPS with a client certificate, the server verified
/// against `ca` (curl); `None` when no answer came.
pub fn https_status(addr: &str, path: &str, ca: &Path, client: &ClientCert) -> Option<u16> {
    let out = Command::new("curl")
        .args([
            "-sS",
            "--max-time",
            "5",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
        ])
        .arg("--cacert")
        .arg(ca)
        .arg("--cert")
        .arg(&client.cert)
        .arg("--key")
        .arg(&client.key)
        .arg(format!("https://{addr}{path}"))
        .output()
        .ok()?;
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .ok()
        .filter(|s| *s != 0)
}

/// A real slapproxy (`slapos proxy start`) on a fresh database and a free port.
pub struct Proxy {
    process: Guarded,
    computer_id: String,
    pub addr: String,
    /// `http://127.0.0.1:<port>/`
    pub url: String,
}

impl Proxy {
    /// Start it with `computer_id` as its computer and slapproxy's `software_product_list`
    /// (`<reference> <url>` lines); returns once it answers.
    pub fn start(venv: &Path, computer_id: &str, software_product_list: &[&str]) -> Proxy {
        let mut proxy = Proxy::spawn(venv, computer_id, software_product_list);
        proxy.wait_ready();
        proxy
    }

    /// Start it without waiting (see [`Proxy::wait_ready`]).
    pub fn spawn(venv: &Path, computer_id: &str, software_product_list: &[&str]) -> Proxy {
        let dir = tempfile::Builder::new()
            .prefix("slapos-compat-proxy-")
            .tempdir()
            .expect("temporary directory");
        let port = free_port().expect("a free loopback port");
        let addr = format!("127.0.0.1:{port}");
        let url = format!("http://{addr}/");
        let mut products = String::new();
        for line in software_product_list {
            let _ = write!(products, "\n  {line}");
        }
        // ConfigParser keeps inline `#`: no comments on value lines.
        let config = format!(
            "[slapos]\ncomputer_id = {computer_id}\nmaster_url = {url}\n\n[slapproxy]\n\
             host = 127.0.0.1\nport = {port}\ndatabase_uri = {}\n\
             software_product_list ={products}\n",
            dir.path().join("proxy.db").display()
        );
        let cfg = dir.path().join("proxy.cfg");
        std::fs::write(&cfg, config).expect("write proxy.cfg");
        let mut command = Command::new(venv.join("bin/slapos"));
        command.args(["proxy", "start", "--cfg"]).arg(&cfg);
        let process = Guarded::spawn("slapproxy", command, dir);
        Proxy {
            process,
            computer_id: computer_id.into(),
            addr,
            url,
        }
    }

    /// Wait until it answers `getFullComputerInformation` of its computer.
    pub fn wait_ready(&mut self) {
        let addr = self.addr.clone();
        let path = format!(
            "/getFullComputerInformation?computer_id={}",
            self.computer_id
        );
        self.process
            .wait(|| http_get(&addr, &path).is_some_and(|(s, _)| s == 200));
    }

    pub fn log_tail(&self) -> String {
        self.process.log_tail()
    }
}

/// Settings of the gateway's `[slap]` section (what slapproxy's configuration says).
pub struct SlapSettings<'a> {
    pub default_computer: &'a str,
    pub software_product_list: &'a [&'a str],
}

/// Certificates of the group's authority for the callers of a TLS gateway, issued on
/// demand through the masters' API (`slapos cluster ca issue`), as an operator does.
pub struct Certificates {
    dir: PathBuf,
    via: String,
    /// The authority's certificate (`slapos cluster ca export`).
    pub ca: PathBuf,
}

/// A client's key and certificate files.
#[derive(Debug, Clone)]
pub struct ClientCert {
    pub key: PathBuf,
    pub cert: PathBuf,
}

impl Certificates {
    fn new(dir: &Path, masters: &[String]) -> Certificates {
        let via = masters.join(",");
        let ca = dir.join("ca.pem");
        let out = Command::new(slapos_bin())
            .args(["cluster", "ca", "export", "--via", &via])
            .env("RUST_LOG", "warn")
            .output()
            .expect("run slapos cluster ca export");
        assert!(
            out.status.success() && out.stdout.starts_with(b"-----BEGIN CERTIFICATE-----"),
            "slapos cluster ca export: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::fs::write(&ca, &out.stdout).expect("write ca.pem");
        Certificates {
            dir: dir.join("certs"),
            via,
            ca,
        }
    }

    /// The key and certificate of `identity` (`person:root`, `computer:COMP-A` ...),
    /// issued the first time it is asked for.
    pub fn of(&self, identity: &str) -> ClientCert {
        self.issue(identity, &[])
    }

    fn issue(&self, identity: &str, extra: &[&str]) -> ClientCert {
        let stem = identity.replace(':', "-");
        let files = ClientCert {
            key: self.dir.join(format!("{stem}.key")),
            cert: self.dir.join(format!("{stem}.crt")),
        };
        if files.cert.exists() {
            return files;
        }
        let out_dir = self.dir.display().to_string();
        let mut args = vec![
            "cluster",
            "ca",
            "issue",
            "--via",
            &self.via,
            "--identity",
            identity,
            "--out",
            &out_dir,
        ];
        args.extend_from_slice(extra);
        let out = Command::new(slapos_bin())
            .args(&args)
            .env("RUST_LOG", "warn")
            .output()
            .expect("run slapos cluster ca issue");
        assert!(
            out.status.success() && files.key.exists() && files.cert.exists(),
            "slapos cluster ca issue --identity {identity}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        files
    }
}

/// `slapos gateway run` in front of a running cluster: on plain HTTP
/// ([`GatewayProcess::start`]) or as in production, HTTPS requiring client certificates
/// of the group ([`GatewayProcess::start_tls`]).
pub struct GatewayProcess {
    process: Guarded,
    pub addr: String,
    /// `http://127.0.0.1:<port>/` or `https://127.0.0.1:<port>/`
    pub url: String,
    pub config: PathBuf,
    /// With TLS: the certificates callers present (`person:root` is granted the group's
    /// admin rights).
    pub certificates: Option<Certificates>,
}

impl GatewayProcess {
    /// Start a gateway on plain HTTP whose masters are `masters` in that order (the first
    /// serves the node's local reads); returns once `/healthz` answers.
    pub fn start(masters: &[String], slap: &SlapSettings<'_>) -> GatewayProcess {
        Self::spawn(masters, slap, false)
    }

    /// The same on HTTPS with the gateway's own certificate, client certificates of the
    /// group required (`client_ca`); returns once an admin's handshake and `/healthz`
    /// succeed (the gateway refuses every certificate until it knows the revoked ones).
    pub fn start_tls(masters: &[String], slap: &SlapSettings<'_>) -> GatewayProcess {
        Self::spawn(masters, slap, true)
    }

    fn spawn(masters: &[String], slap: &SlapSettings<'_>, tls: bool) -> GatewayProcess {
        let dir = tempfile::Builder::new()
            .prefix("slapos-compat-gateway-")
            .tempdir()
            .expect("temporary directory");
        let port = free_port().expect("a free loopback port");
        let addr = format!("127.0.0.1:{port}");
        let quoted: Vec<String> = masters.iter().map(|m| format!("{m:?}")).collect();
        let mut products = String::new();
        for line in slap.software_product_list {
            products.push_str(line);
            products.push('\n');
        }
        let certificates = tls.then(|| Certificates::new(dir.path(), masters));
        crate::grant_admin(masters, "root");
        let mut config = format!("listen = \"{addr}\"\nmasters = [{}]\n", quoted.join(", "));
        match &certificates {
            None => config.push_str("insecure_http = true\n"),
            Some(certs) => {
                let own = certs.issue("gateway:compat", &["--ip", "127.0.0.1"]);
                let _ = write!(
                    config,
                    "tls_cert = {:?}\ntls_key = {:?}\nclient_ca = {:?}\n",
                    own.cert.display().to_string(),
                    own.key.display().to_string(),
                    certs.ca.display().to_string()
                );
            }
        }
        let _ = write!(
            config,
            "\n[slap]\nperson = \"user\"\npartition_header = true\n\
             default_computer = {:?}\nsoftware_product_list = {:?}\n",
            slap.default_computer, products
        );
        let path = dir.path().join("gateway.toml");
        std::fs::write(&path, config).expect("write gateway.toml");
        let mut command = Command::new(slapos_bin());
        command.args(["gateway", "run", "--config"]).arg(&path);
        if !tls {
            command.arg("--insecure-http");
        }
        command.env("NO_COLOR", "1").env(
            "RUST_LOG",
            std::env::var("SLAPOS_E2E_LOG").unwrap_or_else(|_| "info".into()),
        );
        let process = Guarded::spawn("gateway", command, dir);
        let scheme = if tls { "https" } else { "http" };
        let mut gateway = GatewayProcess {
            process,
            url: format!("{scheme}://{addr}/"),
            addr,
            config: path,
            certificates,
        };
        let a = gateway.addr.clone();
        match &gateway.certificates {
            None => gateway
                .process
                .wait(|| http_get(&a, "/healthz").is_some_and(|(s, _)| s == 200)),
            Some(certs) => {
                let admin = certs.of("person:root");
                let ca = certs.ca.clone();
                gateway
                    .process
                    .wait(|| https_status(&a, "/healthz", &ca, &admin) == Some(200));
            }
        }
        gateway
    }

    /// The admin's certificate of a TLS gateway (`person:root`).
    pub fn admin(&self) -> Option<ClientCert> {
        self.certificates.as_ref().map(|c| c.of("person:root"))
    }

    pub fn dir(&self) -> &Path {
        self.process.dir()
    }

    pub fn log_tail(&self) -> String {
        self.process.log_tail()
    }
}

/// The masters of `cluster` with `first` in front (the gateway reads locally from it).
pub fn masters_starting_with(cluster: &Cluster, first: u64) -> Vec<String> {
    let mut masters = vec![cluster.api(first)];
    masters.extend(cluster.apis_except(&[first]));
    masters
}

/// A Python process of the venv whose stdout is collected; killed when dropped.
pub struct PythonRun {
    child: Option<Child>,
    stdin: Option<ChildStdin>,
    stderr_lines: mpsc::Receiver<String>,
    stderr_seen: Vec<String>,
    stdout: Option<std::thread::JoinHandle<Vec<u8>>>,
    what: String,
}

impl PythonRun {
    /// `<venv>/bin/<program> args...` with stdin, stdout and stderr piped.
    pub fn spawn(venv: &Path, program: &str, args: &[&str], what: &str) -> PythonRun {
        let mut child = Command::new(venv.join("bin").join(program))
            .args(args)
            .env("PYTHONIOENCODING", "utf-8")
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {program} {args:?}: {e}"));
        let mut out = child.stdout.take().expect("stdout");
        let stdout = std::thread::spawn(move || {
            let mut bytes = Vec::new();
            let _ = out.read_to_end(&mut bytes);
            bytes
        });
        let err = child.stderr.take().expect("stderr");
        let (tx, stderr_lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        PythonRun {
            stdin: child.stdin.take(),
            child: Some(child),
            stderr_lines,
            stderr_seen: Vec::new(),
            stdout: Some(stdout),
            what: what.into(),
        }
    }

    /// Wait for a stderr line starting with `prefix` (fails after `timeout`, or when the
    /// process ends first).
    pub fn wait_for_stderr(&mut self, prefix: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.stderr_lines.recv_timeout(left) {
                Ok(line) => {
                    let found = line.starts_with(prefix);
                    self.stderr_seen.push(line);
                    if found {
                        return;
                    }
                }
                Err(_) => panic!(
                    "{}: no stderr line starting with {prefix:?} within {timeout:?}; stderr:\n{}",
                    self.what,
                    self.stderr_seen.join("\n")
                ),
            }
        }
    }

    /// Send one line to its stdin.
    pub fn send_line(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin");
        writeln!(stdin, "{line}").expect("write to the script");
        stdin.flush().expect("flush");
    }

    /// Wait for its end (killed after `timeout`): exit status, stdout and stderr.
    pub fn finish(mut self, timeout: Duration) -> Output {
        drop(self.stdin.take());
        let mut child = self.child.take().expect("child");
        let deadline = Instant::now() + timeout;
        let status = loop {
            if let Some(status) = child.try_wait().expect("wait") {
                break status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                let mut stderr = std::mem::take(&mut self.stderr_seen);
                stderr.extend(self.stderr_lines.try_iter());
                panic!(
                    "{} did not finish within {timeout:?}; stderr:\n{}",
                    self.what,
                    stderr.join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let stdout = self
            .stdout
            .take()
            .and_then(|t| t.join().ok())
            .unwrap_or_default();
        let mut stderr = std::mem::take(&mut self.stderr_seen);
        // The reader thread ends with the process's stderr.
        let end = Instant::now() + Duration::from_secs(5);
        while let Ok(line) = self
            .stderr_lines
            .recv_timeout(end.saturating_duration_since(Instant::now()))
        {
            stderr.push(line);
        }
        let mut stderr = stderr.join("\n");
        if !stderr.is_empty() {
            stderr.push('\n');
        }
        Output {
            status,
            stdout,
            stderr: stderr.into_bytes(),
        }
    }
}

impl Drop for PythonRun {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Run a Python program of the venv to its end within `timeout`.
pub fn run_python(venv: &Path, program: &str, args: &[&str], timeout: Duration) -> Output {
    PythonRun::spawn(venv, program, args, &format!("{program} {args:?}")).finish(timeout)
}
