//! `slapos bench portal`: the web portal's server time per page and page weight, for a
//! person with many services (default 1,000) and for a provider with many computers
//! (default 1,000: the servers page), against a real replica group and a real gateway.
//!
//! The state is written through the master API (computers of one provider, the release
//! supplied and reported installed, the person's services pinned round robin on them,
//! each reported started with connection parameters); both persons get a password with
//! `slapos user password` and sign in through the portal's own form. Then each page is
//! fetched `requests` times in a row on one keep-alive HTTP/1.1 connection: the time
//! from sending the request to the last byte of the answer is the server time (loopback,
//! plain HTTP: the harness's gateways run without TLS, so no handshake and no record
//! encryption are counted; see `DESIGN.md`).

use std::collections::BTreeMap;
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command as Process, Stdio};
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use master_client::MasterClient;
use serde::Serialize;
use slapos_domain::{Op, Placement, Query, Requester, SoftwareReport, State, StatusKind};
use slapos_harness::{HarnessError, ProcessCluster};
use slapos_proto::rpc::master::Consistency;

use crate::backup::fill;
use crate::raft::percentile;

pub struct PortalBenchOptions {
    /// The `slapos` binary.
    pub bin: PathBuf,
    /// A fresh working directory.
    pub dir: PathBuf,
    pub replicas: u64,
    /// The person's services.
    pub services: usize,
    /// The provider's computers (the services run on them, round robin).
    pub computers: usize,
    /// Partitions per computer.
    pub partitions: usize,
    /// Timed GETs per page (after 10% more, at least 10, not timed).
    pub requests: usize,
    /// Concurrent writers filling the state.
    pub fill_writers: usize,
}

/// One page's figures.
#[derive(Debug, Serialize)]
pub struct PageRun {
    pub page: String,
    pub path: String,
    pub requests: usize,
    /// Server time (ms): from sending the request to the answer's last byte.
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    /// The answer's body, in bytes (HTML, no images: the stylesheet and the script are
    /// separate files of about 4 KB, cached by nobody since every answer is `no-store`).
    pub bytes: usize,
}

#[derive(Debug, Serialize)]
pub struct PortalBenchReport {
    pub replicas: u64,
    pub services: usize,
    pub computers: usize,
    pub partitions: usize,
    pub fill_seconds: f64,
    /// "plain HTTP on loopback, one keep-alive connection"
    pub transport: String,
    pub pages: Vec<PageRun>,
    /// The goals of issue 23.
    pub goal_p99_ms: f64,
    pub goal_bytes: usize,
}

impl PortalBenchReport {
    pub fn summary(&self) -> String {
        let mut s = format!(
            "portal bench: {} replica(s), a person with {} services on a provider's {} computers of {} partitions (filled in {:.1} s); {}\n",
            self.replicas,
            self.services,
            self.computers,
            self.partitions,
            self.fill_seconds,
            self.transport
        );
        s.push_str(&format!(
            "{:<34} {:>8} {:>9} {:>9} {:>9} {:>9}\n",
            "page", "GETs", "p50 ms", "p99 ms", "max ms", "bytes"
        ));
        for p in &self.pages {
            let flag = if p.p99_ms > self.goal_p99_ms || p.bytes > self.goal_bytes {
                "  (over the goal)"
            } else {
                ""
            };
            s.push_str(&format!(
                "{:<34} {:>8} {:>9.2} {:>9.2} {:>9.2} {:>9}{flag}\n",
                p.page, p.requests, p.p50_ms, p.p99_ms, p.max_ms, p.bytes
            ));
        }
        s.push_str(&format!(
            "goal: p99 under {} ms, pages under {} bytes\n",
            self.goal_p99_ms, self.goal_bytes
        ));
        s
    }
}

const RELEASE: &str = "https://bench.invalid/portal/software.cfg";
const PERSON: &str = "bench-person";
const PROVIDER: &str = "bench-provider";
const PASSWORD: &str = "the bench's long passphrase";

fn computer(i: usize) -> String {
    format!("COMP-{i:06}")
}

fn register_op(i: usize) -> Op {
    Op::RegisterComputer {
        computer: computer(i),
        title: format!("rack {} machine {}", i / 40, i % 40),
        owner: PROVIDER.into(),
        region: Some(format!("region-{}", i % 5)),
        network: None,
        attributes: BTreeMap::new(),
    }
}

fn request_op(i: usize, on: &str) -> Op {
    Op::RequestInstance {
        requester: Requester::Person(PERSON.into()),
        title: format!("service {i:04}"),
        software_release: RELEASE.into(),
        software_type: "default".into(),
        state: None,
        shared: false,
        parameters: BTreeMap::from([(
            "name".to_owned(),
            slapos_domain::ParamValue::Str(format!("visitor {i}")),
        )]),
        sla: BTreeMap::from([("computer_guid".to_owned(), on.to_owned())]),
    }
}

fn io(what: &str, e: impl std::fmt::Display) -> HarnessError {
    HarnessError::Domain(format!("{what}: {e}"))
}

/// `slapos user password --via ... --person P`, the password on standard input.
fn set_password(bin: &PathBuf, via: &str, person: &str) -> Result<(), HarnessError> {
    let mut child = Process::new(bin)
        .args(["user", "password", "--via", via, "--person", person])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| HarnessError::Io(bin.display().to_string(), e))?;
    if let Some(mut stdin) = child.stdin.take() {
        writeln!(stdin, "{PASSWORD}").map_err(|e| io("user password's input", e))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| io("user password", e))?;
    if !out.status.success() {
        return Err(HarnessError::Domain(format!(
            "slapos user password --person {person}: {}",
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    Ok(())
}

/// One keep-alive HTTP/1.1 connection to the gateway.
struct Http {
    sender: SendRequest<Full<Bytes>>,
    host: String,
}

/// An answer: status, `Set-Cookie` values, body length.
struct Answer {
    status: u16,
    cookies: Vec<String>,
    bytes: usize,
}

impl Http {
    async fn open(addr: &str) -> Result<Http, HarnessError> {
        let dest: SocketAddr = addr.parse().map_err(|e| io(addr, e))?;
        let stream = tokio::net::TcpStream::connect(dest)
            .await
            .map_err(|e| io(addr, e))?;
        let _ = stream.set_nodelay(true);
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| io("handshake", e))?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "portal bench connection ended");
            }
        });
        Ok(Http {
            sender,
            host: addr.to_owned(),
        })
    }

    async fn send(
        &mut self,
        method: hyper::Method,
        target: &str,
        cookie: &str,
        form: Option<String>,
    ) -> Result<Answer, HarnessError> {
        self.sender.ready().await.map_err(|e| io("connection", e))?;
        let mut request = hyper::Request::builder()
            .method(method)
            .uri(target)
            .header(hyper::header::HOST, &self.host);
        if !cookie.is_empty() {
            request = request.header(hyper::header::COOKIE, cookie);
        }
        let body = match form {
            Some(f) => {
                request = request.header(
                    hyper::header::CONTENT_TYPE,
                    "application/x-www-form-urlencoded",
                );
                Full::new(Bytes::from(f))
            }
            None => Full::new(Bytes::new()),
        };
        let request = request.body(body).map_err(|e| io("request", e))?;
        let answer = self
            .sender
            .send_request(request)
            .await
            .map_err(|e| io(target, e))?;
        let status = answer.status().as_u16();
        let cookies = answer
            .headers()
            .get_all(hyper::header::SET_COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .filter_map(|v| v.split(';').next())
            .map(str::to_owned)
            .collect();
        let mut body = answer.into_body();
        let mut bytes = 0;
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| io("body", e))?;
            if let Ok(data) = frame.into_data() {
                bytes += data.len();
            }
        }
        Ok(Answer {
            status,
            cookies,
            bytes,
        })
    }
}

/// Signs `person` in through the portal's form: the `slapos_session=...` cookie.
async fn sign_in(http: &mut Http, person: &str) -> Result<String, HarnessError> {
    let page = http
        .send(hyper::Method::GET, "/portal/sign-in", "", None)
        .await?;
    let csrf = page
        .cookies
        .iter()
        .find_map(|c| c.strip_prefix("slapos_csrf="))
        .ok_or_else(|| io("sign-in page", "no CSRF cookie"))?
        .to_owned();
    let form = format!(
        "person={person}&password={}&csrf={csrf}",
        PASSWORD.replace(' ', "+").replace('\'', "%27")
    );
    let answer = http
        .send(
            hyper::Method::POST,
            "/portal/sign-in",
            &format!("slapos_csrf={csrf}"),
            Some(form),
        )
        .await?;
    answer
        .cookies
        .into_iter()
        .find(|c| c.starts_with("slapos_session="))
        .ok_or_else(|| {
            io(
                "sign-in",
                format!("{person} not signed in (status {})", answer.status),
            )
        })
}

/// `requests` timed GETs of `path` (after some untimed ones), each answered 200.
async fn timed(
    http: &mut Http,
    page: &str,
    path: &str,
    cookie: &str,
    requests: usize,
) -> Result<PageRun, HarnessError> {
    let warm = (requests / 10).max(10);
    let mut us = Vec::with_capacity(requests);
    let mut bytes = 0;
    for i in 0..warm + requests {
        let t = Instant::now();
        let a = http.send(hyper::Method::GET, path, cookie, None).await?;
        let elapsed = t.elapsed().as_micros() as u64;
        if a.status != 200 {
            return Err(io(path, format!("answered {}", a.status)));
        }
        if i >= warm {
            us.push(elapsed);
        }
        bytes = a.bytes;
    }
    us.sort_unstable();
    Ok(PageRun {
        page: page.to_owned(),
        path: path.to_owned(),
        requests,
        p50_ms: percentile(&us, 0.50),
        p99_ms: percentile(&us, 0.99),
        max_ms: us.last().copied().unwrap_or(0) as f64 / 1000.0,
        bytes,
    })
}

/// The leader first, so that the fill's writes go straight to it.
async fn leader_first(cluster: &ProcessCluster) -> Result<MasterClient, HarnessError> {
    let leader = cluster.wait_leader(Duration::from_secs(20)).await?;
    let mut addrs: Vec<String> = cluster
        .api_addr(leader)
        .into_iter()
        .map(str::to_owned)
        .collect();
    addrs.extend(
        cluster
            .api_addrs()
            .into_iter()
            .filter(|a| Some(a.as_str()) != cluster.api_addr(leader)),
    );
    Ok(MasterClient::new(addrs))
}

pub async fn run_portal_bench(
    opts: &PortalBenchOptions,
) -> Result<PortalBenchReport, HarnessError> {
    let mut cluster = ProcessCluster::new(&opts.bin, &opts.dir);
    cluster.start(opts.replicas).await?;
    let gateway = cluster
        .start_gateways(1)
        .await?
        .into_iter()
        .next()
        .ok_or_else(|| io("gateway", "none started"))?;
    let mut client = leader_first(&cluster).await?;
    let computers = opts.computers.max(1);

    let started = Instant::now();
    let w = opts.fill_writers;
    fill(
        &client,
        (0..computers).map(register_op).collect(),
        w,
        "register",
    )
    .await?;
    let formats = (0..computers)
        .map(|i| crate::backup::format_op(&computer(i), opts.partitions))
        .collect();
    fill(&client, formats, w, "format").await?;
    // Supplied, then reported installed (in two rounds: the writers are concurrent).
    let supplies = (0..computers)
        .map(|i| Op::Supply {
            computer: computer(i),
            url: RELEASE.into(),
            state: "available".into(),
        })
        .collect();
    fill(&client, supplies, w, "supply").await?;
    let installed = (0..computers)
        .map(|i| Op::ReportSoftware {
            computer: computer(i),
            url: RELEASE.into(),
            report: SoftwareReport::Available,
        })
        .collect();
    fill(&client, installed, w, "installed").await?;
    let requests = (0..opts.services)
        .map(|i| request_op(i, &computer(i % computers)))
        .collect();
    fill(&client, requests, w, "request").await?;
    // Each service reported started with connection parameters, as its node would.
    let (entries, _) = client
        .read(
            &Query::Trees {
                owner: PERSON.into(),
                title: None,
            },
            Consistency::Linearizable,
            0,
        )
        .await?;
    let state = State::from_entries(entries).map_err(|e| io("trees", e))?;
    let mut reports = Vec::new();
    let roots: Vec<_> = state.roots_of(PERSON).map(|(_, id)| id).collect();
    // A service from the middle of the list.
    let a_service = roots
        .get(roots.len() / 2)
        .map_or_else(|| "SOFTINST-1".to_owned(), ToString::to_string);
    for id in roots {
        let Some(Placement::Partition {
            computer,
            partition,
        }) = state.instance(id).map(|i| i.placement.clone())
        else {
            continue;
        };
        reports.push(Op::SetConnection {
            computer: computer.clone(),
            partition: partition.clone(),
            shared: None,
            connection: BTreeMap::from([
                (
                    "url".to_owned(),
                    Some(format!("https://[2001:db8::{}]:8443/", id.0)),
                ),
                ("password".to_owned(), Some(format!("secret-{}", id.0))),
            ]),
        });
        reports.push(Op::ReportStatus {
            computer,
            partition,
            shared: None,
            kind: StatusKind::Started,
            message: String::new(),
        });
    }
    fill(&client, reports, w, "report").await?;
    let fill_seconds = started.elapsed().as_secs_f64();
    eprintln!(
        "filled {computers} computers and {} services in {fill_seconds:.1} s",
        opts.services
    );

    let via = cluster.api_addrs().join(",");
    set_password(&opts.bin, &via, PERSON)?;
    set_password(&opts.bin, &via, PROVIDER)?;
    let mut http = Http::open(&gateway).await?;
    let person = sign_in(&mut http, PERSON).await?;
    let provider = sign_in(&mut http, PROVIDER).await?;

    let mut pages = Vec::new();
    let last = opts.services.div_ceil(50).max(1);
    let last_servers = computers.div_ceil(50).max(1);
    for (name, path, cookie) in [
        (
            "services, first page".to_owned(),
            "/portal/services".to_owned(),
            &person,
        ),
        (
            format!("services, page {last} (last)"),
            format!("/portal/services?page={last}"),
            &person,
        ),
        (
            "services, running only".to_owned(),
            "/portal/services?state=running&page=2".to_owned(),
            &person,
        ),
        (
            "a service".to_owned(),
            format!("/portal/services/{a_service}"),
            &person,
        ),
        (
            "servers, first page".to_owned(),
            "/portal/servers".to_owned(),
            &provider,
        ),
        (
            format!("servers, page {last_servers} (last)"),
            format!("/portal/servers?page={last_servers}"),
            &provider,
        ),
    ] {
        let run = timed(&mut http, &name, &path, cookie, opts.requests).await?;
        eprintln!(
            "{name}: p50 {:.2} ms, p99 {:.2} ms, {} bytes",
            run.p50_ms, run.p99_ms, run.bytes
        );
        pages.push(run);
    }
    cluster.kill_all();
    Ok(PortalBenchReport {
        replicas: opts.replicas,
        services: opts.services,
        computers,
        partitions: opts.partitions,
        fill_seconds,
        transport: "plain HTTP on loopback, one keep-alive connection, requests in sequence".into(),
        pages,
        goal_p99_ms: 20.0,
        goal_bytes: 100_000,
    })
}
