//! What the tests of our node agent (`slapos node ...`, crate slapgrid) share:
//! tests/tests/slapgrid.rs and tests/tests/slapgrid_faults.rs.
//!
//! They run as root with real Unix users, real services and a real master: an
//! [`AgentNode`] is one computer's directory and slapos.cfg (its users are created by
//! `slapos node format` under a unique [`prefix`] and removed when it is dropped), [`Up`]
//! is a `slapos up` cluster (stopped when dropped), [`python`] runs the real slapos.core
//! client (tests/compat/node/node_helper.py: `supply`, `request`, `full`) against a
//! gateway, and [`native_release`] writes a release in our manifest format
//! (slapgrid/DESIGN.md, "Native releases"), which installs in milliseconds.
//!
//! Prerequisites: root and the node venv (Python 3.12 with slapos.core and zc.buildout<5,
//! made by tests/compat/node/setup-node-venv.sh, which .ci/run calls).

use crate::slapos_bin;
use std::fs::File;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Whether this process runs as root.
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .map(|s| {
            s.lines()
                .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}

/// The node venv (`$SLAPOS_NODE_VENV`, default `/var/tmp/slapos-node-venv`); fails the
/// test, saying how to get it, when it is missing or the test does not run as root.
pub fn node_venv() -> PathBuf {
    let venv = PathBuf::from(
        std::env::var_os("SLAPOS_NODE_VENV").unwrap_or_else(|| "/var/tmp/slapos-node-venv".into()),
    );
    assert!(is_root(), "the slapgrid tests run as root (real users)");
    assert!(
        venv.join("bin/python").exists(),
        "{} missing: run tests/compat/node/setup-node-venv.sh (as root; .ci/run does)",
        venv.join("bin/python").display()
    );
    venv
}

/// tests/compat/node/node_helper.py.
pub fn helper() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("compat/node/node_helper.py")
}

/// A unique user prefix for this test run (users are global to the machine).
pub fn prefix(tag: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("sg{tag}{:04}", (std::process::id() ^ nanos) % 10000)
}

/// A command's status and both outputs, for assertion messages.
pub fn text(o: &Output) -> String {
    format!(
        "status {}\n--- stdout\n{}\n--- stderr\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// The slapos.cfg of a node rooted at `root` (what [`AgentNode::new`] writes).
pub fn node_config(
    root: &Path,
    computer: &str,
    urls: &[String],
    users: &str,
    partitions: usize,
) -> String {
    let venv = node_venv();
    let r = root.display();
    format!(
        "[slapos]\ncomputer_id = {computer}\nmaster_url = {urls}\n\
         software_root = {r}/soft\ninstance_root = {r}/inst\n\
         pidfile_software = {r}/var/run/sw.pid\npidfile_instance = {r}/var/run/cp.pid\n\
         pidfile_report = {r}/var/run/ur.pid\nbuildout_python = {py}\n\
         promise_timeout = 10\nshared_part_list =\n  {r}/shared\n\n\
         [slapformat]\npartition_amount = {partitions}\nuser_base_name = {users}u\n\
         partition_base_name = slappart\nsoftware_user = {users}s\nalter_user = true\n\
         alter_network = false\ncreate_tap = false\npartition_has_ipv6_range = false\n\
         computer_xml = {r}/etc/slapos.xml\ncomputer_json = {r}/etc/slapos.json\n",
        urls = urls.join(" "),
        py = venv.join("bin/python").display(),
    )
}

/// One node of our agent: a directory with its slapos.cfg, and the users it formats.
/// Dropping it shuts its supervisor down and unformats it (users removed).
pub struct AgentNode {
    pub root: PathBuf,
    pub cfg: PathBuf,
    pub users: String,
}

impl AgentNode {
    pub fn new(
        root: &Path,
        computer: &str,
        urls: &[String],
        users: &str,
        partitions: usize,
    ) -> AgentNode {
        for d in ["etc", "soft", "inst", "var/run", "shared"] {
            std::fs::create_dir_all(root.join(d)).unwrap();
        }
        let cfg = root.join("etc/slapos.cfg");
        std::fs::write(&cfg, node_config(root, computer, urls, users, partitions)).unwrap();
        AgentNode {
            root: root.to_owned(),
            cfg,
            users: users.to_owned(),
        }
    }

    /// `slapos node <args> --cfg <cfg> -v`.
    pub fn node(&self, args: &[&str]) -> Output {
        Command::new(slapos_bin())
            .arg("node")
            .args(args)
            .arg("--cfg")
            .arg(&self.cfg)
            .arg("-v")
            .output()
            .expect("run slapos node")
    }

    /// [`AgentNode::node`] that must succeed; its stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.node(args);
        assert!(out.status.success(), "slapos node {args:?}: {}", text(&out));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The directory of partition `slappart<i>`.
    pub fn partition(&self, i: usize) -> PathBuf {
        self.root.join(format!("inst/slappart{i}"))
    }

    /// The directory of the partition named `pid` (`slappart3`).
    pub fn partition_dir(&self, pid: &str) -> PathBuf {
        self.root.join("inst").join(pid)
    }

    /// Where the release of `url` is installed.
    pub fn release_dir(&self, url: &str) -> PathBuf {
        self.root.join("soft").join(md5_hex(url))
    }

    /// The log of the node's supervisor daemon.
    pub fn supervisor_log(&self) -> String {
        std::fs::read_to_string(self.root.join("inst/var/log/supervisor.log")).unwrap_or_default()
    }

    /// `slapos node status --json`.
    pub fn status(&self) -> serde_json::Value {
        let out = self.node(&["status", "--json"]);
        assert!(out.status.success(), "status: {}", text(&out));
        serde_json::from_slice(&out.stdout).expect("status json")
    }

    /// The supervised process named `name` (e.g. `hello-on-watch`) of partition `pid`.
    pub fn process(&self, pid: &str, name: &str) -> Option<serde_json::Value> {
        self.status()
            .as_array()?
            .iter()
            .find(|s| s["group"] == pid && s["name"] == name)
            .cloned()
    }
}

impl Drop for AgentNode {
    fn drop(&mut self) {
        let _ = self.node(&["shutdown"]);
        let out = self.node(&["unformat"]);
        if !out.status.success() {
            eprintln!("unformat of {}: {}", self.users, text(&out));
        }
    }
}

/// The uid of `user`.
pub fn uid_of(user: &str) -> u32 {
    let out = Command::new("id").args(["-u", user]).output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("no user {user}"))
}

/// The uid a process runs as (`u32::MAX` once it is gone).
pub fn pid_uid(pid: u64) -> u32 {
    std::fs::metadata(format!("/proc/{pid}"))
        .map(|m| m.uid())
        .unwrap_or(u32::MAX)
}

/// `python node_helper.py <args>` with the node venv; must succeed; its stdout.
pub fn python(args: &[&str]) -> String {
    let venv = node_venv();
    let out = Command::new(venv.join("bin/python"))
        .arg(helper())
        .args(args)
        .output()
        .expect("run node_helper.py");
    assert!(out.status.success(), "node_helper {args:?}: {}", text(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// node_helper `request` (state `started` unless given): its JSON answer, `partition`
/// and `connection`.
pub fn request(
    url: &str,
    software: &str,
    computer: &str,
    title: &str,
    state: Option<&str>,
) -> serde_json::Value {
    let mut args = vec!["request", url, software, computer, title];
    args.extend(state);
    serde_json::from_str(&python(&args)).expect("request answer")
}

/// Makes a tree readable (and its directories traversable) by every user.
pub fn chmod_tree(p: &Path) {
    let meta = std::fs::metadata(p).unwrap();
    let mode = meta.permissions().mode();
    let extra = if meta.is_dir() { 0o755 } else { 0o644 };
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode | extra)).unwrap();
    if meta.is_dir() {
        for e in std::fs::read_dir(p).unwrap() {
            chmod_tree(&e.unwrap().path());
        }
    }
}

/// The test directory, made traversable by partition users.
pub fn open_dir(dir: &tempfile::TempDir) -> PathBuf {
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    dir.path().to_owned()
}

/// Polls `f` every 100 ms until it holds; fails the test after `timeout`.
pub fn wait_for(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The last lines of every log in a cluster's directory (what a failed start left).
fn log_tails(cluster: &Path) -> String {
    let mut out = String::new();
    let Ok(entries) = std::fs::read_dir(cluster) else {
        return out;
    };
    let mut logs: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .collect();
    logs.sort();
    for log in logs {
        out += &format!(
            "--- {}\n{}",
            log.display(),
            slapos_harness::cluster::tail(&log, 15)
        );
    }
    out
}

/// SIGKILL.
pub fn kill9(pid: u32) {
    let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
}

/// MD5 hex of a release URL (the release directory's name), by the system's md5sum.
pub fn md5_hex(s: &str) -> String {
    let mut child = Command::new("md5sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child.stdin.take().unwrap().write_all(s.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned()
}

/// SHA-256 hex of a file, by the system's sha256sum.
pub fn sha256_hex(path: &Path) -> String {
    let sum = Command::new("sha256sum").arg(path).output().unwrap();
    String::from_utf8_lossy(&sum.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned()
}

/// `slapos up` with its gateways: the child, the gateway URLs and pids. Dropping it stops
/// the cluster.
pub struct Up {
    pub child: Child,
    pub urls: Vec<String>,
    pub gateway_pids: Vec<u32>,
    pub dir: PathBuf,
}

impl Up {
    /// Three replicas, a gateway each, no node.
    pub fn start(dir: &Path) -> Up {
        Up::start_replicas(dir, 3)
    }

    /// `slapos up --insecure --replicas <replicas> --nodes 0` (plain HTTP and gRPC: the
    /// tests that need certificates set them up themselves).
    pub fn start_replicas(dir: &Path, replicas: usize) -> Up {
        Up::launch(
            dir,
            &[
                "--insecure",
                "--replicas",
                &replicas.to_string(),
                "--nodes",
                "0",
            ],
            Duration::from_secs(90),
        )
    }

    /// `slapos up <args> --dir <dir>/cluster`, once it wrote cluster.json (within
    /// `timeout`; logs in `dir/up.log` and `dir/up.err`).
    pub fn launch(dir: &Path, args: &[&str], timeout: Duration) -> Up {
        let cluster = dir.join("cluster");
        let child = Command::new(slapos_bin())
            .arg("up")
            .args(args)
            .arg("--dir")
            .arg(&cluster)
            .stdin(Stdio::null())
            .stdout(File::create(dir.join("up.log")).unwrap())
            .stderr(File::create(dir.join("up.err")).unwrap())
            .spawn()
            .expect("slapos up");
        let json = cluster.join("cluster.json");
        let mut child = child;
        let deadline = Instant::now() + timeout;
        while !json.exists() {
            if let Ok(Some(status)) = child.try_wait() {
                panic!(
                    "slapos up exited ({status}): {}",
                    std::fs::read_to_string(dir.join("up.err")).unwrap_or_default()
                );
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "slapos up wrote no cluster.json within {timeout:?}; it said:\n{}\n{}\n{}",
                    std::fs::read_to_string(dir.join("up.log")).unwrap_or_default(),
                    std::fs::read_to_string(dir.join("up.err")).unwrap_or_default(),
                    log_tails(&cluster)
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let c: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
        let urls = c["gateway_urls"]
            .as_array()
            .unwrap()
            .iter()
            .map(|u| u.as_str().unwrap().to_owned())
            .collect();
        let gateway_pids = c["processes"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|p| p["role"] == "gateway")
            .map(|p| p["pid"].as_u64().unwrap() as u32)
            .collect();
        Up {
            child,
            urls,
            gateway_pids,
            dir: cluster,
        }
    }
}

impl Up {
    /// The master API addresses of the replicas (`cluster.json`).
    pub fn api_addrs(&self) -> Vec<String> {
        let cluster: serde_json::Value =
            serde_json::from_slice(&std::fs::read(self.dir.join("cluster.json")).unwrap()).unwrap();
        cluster["master_api_addrs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap().to_owned())
            .collect()
    }
}

/// `slapos <args>`, its output (without Rust backtraces in error messages).
pub fn slapos(args: &[&str]) -> Output {
    Command::new(slapos_bin())
        .args(args)
        .env_remove("RUST_BACKTRACE")
        .output()
        .expect("run slapos")
}

impl Drop for Up {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg(self.child.id().to_string())
            .status();
        // (its teardown stops the nodes and removes their users: give it time)
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        eprintln!("slapos up in {} had to be killed", self.dir.display());
    }
}

/// A file a native release ships: written next to the manifest as `file`, installed as
/// `dest` in the release directory.
#[derive(Debug, Clone, Copy)]
pub struct Artifact<'a> {
    pub file: &'a str,
    pub content: &'a str,
    pub dest: &'a str,
    pub mode: Option<&'a str>,
    /// The checksum the manifest declares; `None`: the file's true one.
    pub sha256: Option<&'a str>,
}

/// A TOML basic string (JSON's string escapes are TOML's).
pub fn toml_str(s: &str) -> String {
    serde_json::to_string(s).unwrap()
}

/// An `[[instance.file]]` table: `content` is a template (`{{partition_path}}`, ...)
/// whose values are escaped for `kind` (`shell`, `toml`, `json` or `plain`).
pub fn instance_file(path: &str, mode: &str, kind: &str, content: &str) -> String {
    format!(
        "[[instance.file]]\npath = {}\nmode = {}\nkind = {}\ncontent = {}\n\n",
        toml_str(path),
        toml_str(mode),
        toml_str(kind),
        toml_str(content)
    )
}

/// An `[instance.connection]` table.
pub fn connection(params: &[(&str, &str)]) -> String {
    let mut out = String::from("[instance.connection]\n");
    for (k, v) in params {
        out.push_str(&format!("{k} = {}\n", toml_str(v)));
    }
    out
}

/// Writes a native release into `dir` (created): its artifacts and `software.toml`
/// (release `name`, the artifacts, then `instance`: raw TOML, see [`instance_file`] and
/// [`connection`]), readable by every user. Returns the manifest's path: the release URL.
pub fn native_release(dir: &Path, name: &str, artifacts: &[Artifact], instance: &str) -> String {
    std::fs::create_dir_all(dir).unwrap();
    let mut manifest = format!("[release]\nname = {}\n\n", toml_str(name));
    for a in artifacts {
        let file = dir.join(a.file);
        std::fs::write(&file, a.content).unwrap();
        let sum = a
            .sha256
            .map(str::to_owned)
            .unwrap_or_else(|| sha256_hex(&file));
        manifest.push_str(&format!(
            "[[artifact]]\nurl = {}\nsha256 = {}\ndest = {}\n",
            toml_str(a.file),
            toml_str(&sum),
            toml_str(a.dest)
        ));
        if let Some(mode) = a.mode {
            manifest.push_str(&format!("mode = {}\n", toml_str(mode)));
        }
        manifest.push('\n');
    }
    manifest.push_str(instance);
    let path = dir.join("software.toml");
    std::fs::write(&path, manifest).unwrap();
    chmod_tree(dir);
    path.display().to_string()
}

/// The script of [`beat_release`]'s service: writes the time into `$1` every second.
pub const BEAT_SCRIPT: &str =
    "#!/bin/sh\necho \"beat $1\"\nwhile :; do date +%s > \"$1\"; sleep 1; done\n";

/// The `bin/beat` artifact of [`beat_release`].
pub fn beat_artifact() -> Artifact<'static> {
    Artifact {
        file: "beat.sh",
        content: BEAT_SCRIPT,
        dest: "bin/beat",
        mode: Some("0750"),
        sha256: None,
    }
}

/// The watched service `etc/service/beat` of [`beat_release`] (process `beat-on-watch`).
pub fn beat_service() -> String {
    instance_file(
        "etc/service/beat",
        "0750",
        "shell",
        "#!/bin/sh\nexec {{software_path}}/bin/beat {{partition_path}}/beat.txt\n",
    )
}

/// A native release in `dir`: one artifact, a watched service (`beat-on-watch`), a
/// promise and two connection parameters.
pub fn beat_release(dir: &Path) -> String {
    let instance = beat_service()
        + &instance_file(
            "etc/promise/beating",
            "0750",
            "shell",
            // The service may take a moment to write its first beat on a loaded machine:
            // up to 8 s (the agent's promise timeout in these tests is 10 s).
            "#!/bin/sh\nfor i in 1 2 3 4 5 6 7 8; do test -s {{partition_path}}/beat.txt && exit 0; sleep 1; done\necho no beat\nexit 1\n",
        )
        + &connection(&[
            ("beat-file", "{{partition_path}}/beat.txt"),
            (
                "greeting",
                "hello {{param.name|nobody}} from {{partition_id}}",
            ),
        ]);
    native_release(dir, "beat", &[beat_artifact()], &instance)
}

/// `slapos node status --json` for the node of `cfg` (null when it does not answer).
pub fn node_status(cfg: &str) -> serde_json::Value {
    let out = Command::new(slapos_bin())
        .args(["node", "status", "--json", "--cfg", cfg])
        .output()
        .expect("slapos node status");
    serde_json::from_slice(&out.stdout).unwrap_or_default()
}

/// The pid of supervised process `name` (`hello-on-watch` ...) while it runs on the node
/// of `cfg`.
pub fn running_pid(cfg: &str, name: &str) -> Option<u64> {
    node_status(cfg).as_array()?.iter().find_map(|p| {
        (p["name"] == name && p["state"] == "Running")
            .then(|| p["pid"].as_u64())
            .flatten()
    })
}

/// The `VAR=value` pairs of `admin.master_tls_env` in a `slapos up` cluster.json: what
/// `slapos cluster ...` needs to reach the masters.
pub fn master_tls_env(cluster: &serde_json::Value) -> Vec<(String, String)> {
    cluster["admin"]["master_tls_env"]
        .as_str()
        .expect("master_tls_env in cluster.json")
        .split(' ')
        .filter_map(|p| p.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// A gateway that requires client certificates, in front of `up`'s replicas, as a
/// person's tests need one: its certificate `gateway:<id>` issued for 127.0.0.1 into
/// `<root>/certs`, the group's CA exported to `<root>/ca.pem`, `extra` appended to its
/// configuration; stopped on drop.
pub struct TlsGateway {
    child: Child,
    pub url: String,
    pub ca: PathBuf,
    pub certs: PathBuf,
    via: String,
    root: PathBuf,
}

impl TlsGateway {
    pub fn start(root: &Path, up: &Up, id: &str, extra: &str) -> TlsGateway {
        let apis = up.api_addrs();
        let via = apis.join(",");
        let certs = root.join("certs");
        let out = slapos(&[
            "cluster",
            "ca",
            "issue",
            "--via",
            &via,
            "--identity",
            &format!("gateway:{id}"),
            "--ip",
            "127.0.0.1",
            "--out",
            certs.to_str().unwrap(),
        ]);
        assert!(out.status.success(), "issue gateway:{id}: {}", text(&out));
        let ca = root.join("ca.pem");
        let exported = slapos(&["cluster", "ca", "export", "--via", &via]);
        assert!(exported.status.success(), "{}", text(&exported));
        std::fs::write(&ca, &exported.stdout).unwrap();
        let port = slapos_harness::free_port().expect("a free port");
        let config = root.join("gw.toml");
        std::fs::write(
            &config,
            format!(
                "listen = \"127.0.0.1:{port}\"\nmasters = {apis:?}\ntls_cert = \"{c}/gateway-{id}.crt\"\n\
                 tls_key = \"{c}/gateway-{id}.key\"\nclient_ca = \"{}\"\n{extra}",
                ca.display(),
                c = certs.display(),
            ),
        )
        .unwrap();
        let child = Command::new(slapos_bin())
            .args(["gateway", "run", "--config"])
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(File::create(root.join("gw.log")).unwrap())
            .spawn()
            .unwrap();
        let gateway = TlsGateway {
            child,
            url: format!("https://127.0.0.1:{port}/"),
            ca,
            certs,
            via,
            root: root.to_owned(),
        };
        wait_for("the gateway to listen", Duration::from_secs(20), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        gateway
    }

    /// `slapos user add <person>` pointed at this gateway: the client configuration it
    /// writes (in `<root>/<person>`).
    pub fn add_user(&self, person: &str) -> PathBuf {
        let out_dir = self.root.join(person);
        let out = slapos(&[
            "user",
            "add",
            "--via",
            &self.via,
            "--person",
            person,
            "--gateway",
            &self.url,
            "--out",
            out_dir.to_str().unwrap(),
        ]);
        assert!(out.status.success(), "user add {person}: {}", text(&out));
        out_dir.join("slapos-client.cfg")
    }
}

impl Drop for TlsGateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The first of three consecutive ports free on loopback now (Raft, API, gateway of one
/// replica: the nodes' partitions share loopback here), below the ephemeral range as
/// every port the harness picks. Three answers of `free_port` in a row: it hands out
/// ports in turn, so no later call of this process gets one of them again.
pub fn three_ports() -> u16 {
    loop {
        let ports: Vec<u16> = (0..3)
            .map(|_| slapos_harness::free_port().expect("a free port"))
            .collect();
        if ports[1] == ports[0] + 1 && ports[2] == ports[0] + 2 {
            return ports[0];
        }
    }
}
