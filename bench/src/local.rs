//! What the side-by-side benches (`tunnel`, `frontend`) share: Debian's servers and our
//! own processes started on this machine and stopped when dropped, a certificate
//! authority of the bench's own, and the statistics of their rounds.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use tokio::net::TcpStream;

/// What stops a side-by-side bench (`tunnel`, `frontend`).
#[derive(Debug, thiserror::Error)]
pub enum LocalBenchError {
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("certificates: {0}")]
    Certificates(String),
    #[error("{0} did not start listening within 20 s (see its log in the bench directory)")]
    NotListening(String),
    /// A server answered what the bench did not ask for (`peer`: memcached, a path).
    #[error("{peer} answered {answer:?} to {request}")]
    Answer {
        peer: String,
        request: String,
        answer: String,
    },
    #[error("no free port: {0}")]
    Port(String),
}

/// An I/O error, with what the bench was doing.
pub(crate) fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> LocalBenchError {
    let what = what.into();
    move |source| LocalBenchError::Io { what, source }
}

/// A free TCP port of this machine.
pub(crate) fn port() -> Result<u16, LocalBenchError> {
    slapos_harness::free_port().map_err(|e| LocalBenchError::Port(e.to_string()))
}

/// A process of the bench, stopped and reaped when dropped: SIGTERM first, so that a
/// server with processes of its own (nginx's master and its workers) stops them all,
/// then SIGKILL if it has not exited within 5 s.
pub(crate) struct Proc {
    child: Child,
}

impl Drop for Proc {
    fn drop(&mut self) {
        use nix::sys::signal::{kill, Signal};
        let pid = i32::try_from(self.child.id()).map(nix::unistd::Pid::from_raw);
        if let Ok(pid) = pid {
            let _ = kill(pid, Signal::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = self.child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `cmd` (`what`) with its standard error in `log` (created).
pub(crate) fn spawn(mut cmd: Command, log: &Path, what: &str) -> Result<Proc, LocalBenchError> {
    let file = std::fs::File::create(log).map_err(io(format!("create {}", log.display())))?;
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(file)
        .spawn()
        .map_err(io(format!("start {what}")))?;
    Ok(Proc { child })
}

/// Waits until `addr` (`what`) accepts a TCP connection, for at most 20 s.
pub(crate) async fn wait_listening(addr: &str, what: &str) -> Result<(), LocalBenchError> {
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(addr).await.is_err() {
        if Instant::now() > deadline {
            return Err(LocalBenchError::NotListening(what.into()));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

/// The first line of `program arg`'s output that has a digit (its version), or "".
pub(crate) fn version(program: &str, arg: &str) -> String {
    Command::new(program)
        .arg(arg)
        .output()
        .map(|o| {
            let all = [o.stdout, o.stderr].concat();
            String::from_utf8_lossy(&all)
                .lines()
                .find(|l| l.contains(char::is_numeric) && !l.contains("inetd"))
                .unwrap_or_default()
                .trim()
                .to_owned()
        })
        .unwrap_or_default()
}

/// The `p` quantile (0..=1, nearest index) of sorted values.
pub(crate) fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// The median of the rounds' values (0 when there are none).
pub(crate) fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        return 0.0;
    }
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// One certificate the bench's authority issues.
pub(crate) struct Leaf<'a> {
    /// Its identity (`gateway:…` for a server: its certificate carries `serverAuth`).
    pub identity: &'a str,
    pub dns_names: Vec<String>,
}

/// A CA of the bench's own (`dir/ca.pem`) and a certificate and key for each leaf
/// (`dir/<identity>.crt` and `.key`): the CA's path and the pairs' paths.
pub(crate) fn certificates(
    dir: &Path,
    leaves: &[Leaf<'_>],
) -> Result<(PathBuf, Vec<(PathBuf, PathBuf)>), String> {
    use slapos_ca::{Authority, IssueRequest};
    use slapos_domain::Identity;
    let now = SystemTime::now();
    let (authority, _) = Authority::create("bench", now, 1).map_err(|e| e.to_string())?;
    let ca = dir.join("ca.pem");
    std::fs::write(&ca, authority.cert_pem()).map_err(|e| format!("write ca.pem: {e}"))?;
    let mut pairs = Vec::new();
    for (serial, leaf) in (2u128..).zip(leaves) {
        let identity = Identity::parse(leaf.identity).map_err(|e| e.to_string())?;
        let (key, csr) = slapos_ca::new_key_and_csr(&identity).map_err(|e| e.to_string())?;
        let issued = authority
            .issue(&IssueRequest {
                csr_pem: &csr,
                identity: identity.clone(),
                serial,
                not_before: now - Duration::from_secs(60),
                not_after: now + Duration::from_secs(86400),
                dns_names: leaf.dns_names.clone(),
                ip_addresses: vec![],
            })
            .map_err(|e| e.to_string())?;
        let name = identity.common_name().replace(':', "-");
        let cert = dir.join(format!("{name}.crt"));
        let key_file = dir.join(format!("{name}.key"));
        std::fs::write(&cert, issued.pem).map_err(|e| format!("write a certificate: {e}"))?;
        std::fs::write(&key_file, key).map_err(|e| format!("write a key: {e}"))?;
        pairs.push((cert, key_file));
    }
    Ok((ca, pairs))
}
