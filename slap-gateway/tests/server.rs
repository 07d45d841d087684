//! The gateway over real sockets, in front of real master processes (`slapos master run`,
//! through the harness's `ProcessCluster`): the node's round trip through a three-replica
//! group (each answer compared with what the SLAP layer renders over a local state), bad
//! input, an unavailable master, a write across a leader kill, and HTTPS through the
//! `slapos gateway run` process.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command as Process;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, ensure, Context, Result};
use axum::body::Body;
use hyper::http::{header, HeaderMap, Method};
use hyper_util::rt::TokioIo;
use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};
use slap_gateway::server::{Gateway, GatewayConfig};
use slap_gateway::slap::{serve_local, Endpoint, Method as SlapMethod, SlapContext};
use slapos_domain::Query as MasterQuery;
use slapos_domain::{RequestId, State, Timestamp};
use slapos_e2e::slapos_bin;
use slapos_harness::{free_port, ProcessCluster};
use slapos_proto::marshal::{self, Value};
use slapos_proto::rpc::master::Consistency;
use slapos_proto::slap::{Computer, ComputerPartition, SoftwareInstance};
use slapos_proto::Limits;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

const SR: &str = "https://lab.example/software/demo/software.cfg";

// ----- harness ---------------------------------------------------------------------------

async fn cluster(dir: &Path, replicas: u64) -> Result<ProcessCluster> {
    let mut c = ProcessCluster::new(&slapos_bin(), &dir.join("masters"));
    c.start(replicas)
        .await
        .map_err(|e| anyhow!("cluster start: {e}"))?;
    Ok(c)
}

/// One HTTP/1.1 exchange per connection, over TCP or TLS.
#[derive(Clone)]
struct Client {
    addr: SocketAddr,
    prefix: String,
    tls: Option<(
        tokio_rustls::TlsConnector,
        rustls_pki_types::ServerName<'static>,
    )>,
}

struct Answer {
    status: u16,
    headers: HeaderMap,
    body: String,
}

impl std::fmt::Debug for Answer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.status, self.body)
    }
}

fn urlencode(pairs: &[(&str, String)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| {
            format!(
                "{}={}",
                utf8_percent_encode(k, NON_ALPHANUMERIC),
                utf8_percent_encode(v, NON_ALPHANUMERIC)
            )
        })
        .collect::<Vec<_>>()
        .join("&")
}

async fn exchange<S>(stream: S, request: hyper::Request<Body>) -> Result<Answer>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    let response = sender.send_request(request).await?;
    let (parts, body) = response.into_parts();
    let bytes = axum::body::to_bytes(Body::new(body), usize::MAX).await?;
    Ok(Answer {
        status: parts.status.as_u16(),
        headers: parts.headers,
        body: String::from_utf8(bytes.to_vec())?,
    })
}

impl Client {
    fn plain(gateway: &Gateway) -> Self {
        Client {
            addr: gateway.local_addr(),
            prefix: String::new(),
            tls: None,
        }
    }

    async fn send(&self, request: hyper::Request<Body>) -> Result<Answer> {
        let tcp = TcpStream::connect(self.addr).await?;
        match &self.tls {
            None => exchange(tcp, request).await,
            Some((connector, name)) => {
                let tls = connector.connect(name.clone(), tcp).await?;
                exchange(tls, request).await
            }
        }
    }

    fn builder(&self, method: Method, path_and_query: &str) -> hyper::http::request::Builder {
        hyper::Request::builder()
            .method(method)
            .uri(format!("{}/{path_and_query}", self.prefix))
            .header(header::HOST, self.addr.to_string())
            .header(header::USER_AGENT, "slapos.core/1.26.1")
    }

    async fn get(&self, method: &str, pairs: &[(&str, String)]) -> Result<Answer> {
        let request = self
            .builder(Method::GET, &format!("{method}?{}", urlencode(pairs)))
            .body(Body::empty())?;
        self.send(request).await
    }

    async fn post(
        &self,
        method: &str,
        pairs: &[(&str, String)],
        authorization: Option<&str>,
    ) -> Result<Answer> {
        let mut builder = self
            .builder(Method::POST, method)
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
        if let Some(a) = authorization {
            builder = builder.header(header::AUTHORIZATION, a);
        }
        self.send(builder.body(Body::from(urlencode(pairs)))?).await
    }

    /// Call a SLAP endpoint with the method the client uses for it.
    async fn call(
        &self,
        endpoint: Endpoint,
        pairs: &[(&str, String)],
        authorization: Option<&str>,
    ) -> Result<Answer> {
        match endpoint.method() {
            SlapMethod::Get => self.get(endpoint.name(), pairs).await,
            SlapMethod::Post => self.post(endpoint.name(), pairs, authorization).await,
        }
    }
}

fn m(value: &Value) -> String {
    marshal::encode(value).expect("marshal")
}

/// The dictionary `slapos node format` posts.
fn computer_dict(computer: &str, partitions: usize) -> Value {
    let partition = |i: usize| {
        Value::Dict(vec![
            (
                Value::from("address_list"),
                Value::List(vec![Value::str_dict([
                    ("addr", format!("10.0.0.{}", 10 + i).as_str()),
                    ("netmask", "255.255.255.0"),
                ])]),
            ),
            (
                Value::from("reference"),
                Value::from(format!("slappart{i}")),
            ),
            (
                Value::from("tap"),
                Value::str_dict([("name", format!("slaptap{i}").as_str())]),
            ),
        ])
    };
    Value::Dict(vec![
        (Value::from("address"), Value::from("10.0.0.1")),
        (Value::from("netmask"), Value::from("255.255.255.0")),
        (
            Value::from("partition_list"),
            Value::List((0..partitions).map(partition).collect()),
        ),
        (Value::from("reference"), Value::from(computer)),
    ])
}

fn request_fields(title: &str, parameters: &[(&str, &str)]) -> Vec<(&'static str, String)> {
    vec![
        ("software_release", SR.to_string()),
        ("software_type", "default".to_string()),
        ("partition_reference", title.to_string()),
        ("state", m(&Value::from("started"))),
        ("shared_xml", m(&Value::Bool(false))),
        (
            "partition_parameter_xml",
            m(&Value::str_dict(parameters.iter().copied())),
        ),
        ("filter_xml", m(&Value::Dict(Vec::new()))),
    ]
}

/// Timestamps (`1795626904.594212`, stamped from each side's clock) blanked out.
fn normalise(body: &str) -> String {
    let bytes = body.as_bytes();
    let mut out = String::with_capacity(body.len());
    let mut i = 0;
    while i < bytes.len() {
        let digits = bytes[i..].iter().take_while(|b| b.is_ascii_digit()).count();
        if digits >= 9 && bytes.get(i + digits) == Some(&b'.') {
            let frac = bytes[i + digits + 1..]
                .iter()
                .take_while(|b| b.is_ascii_digit())
                .count();
            if frac > 0 {
                out.push_str("<timestamp>");
                i += digits + 1 + frac;
                continue;
            }
        }
        let ch = body[i..].chars().next().expect("char");
        out.push(ch);
        i += ch.len_utf8();
    }
    out
}

/// The same calls through `serve_local` over a local state: what the gateway must
/// answer, byte for byte but for timestamps.
struct Local {
    ctx: SlapContext,
    state: State,
    seq: u64,
}

impl Local {
    fn call(
        &mut self,
        endpoint: Endpoint,
        pairs: &[(&str, String)],
        authorization: Option<&str>,
    ) -> (u16, String) {
        self.seq += 1;
        let fields: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect();
        let micros = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_micros() as u64;
        let r = serve_local(
            &self.ctx,
            &mut self.state,
            endpoint,
            &fields,
            authorization,
            RequestId::new("local", self.seq),
            Timestamp(micros),
        );
        (r.status, r.body_text().into_owned())
    }
}

/// Call both and require the same status and body. Reads are retried for a while: the
/// gateway reads a replica with a bounded staleness, which may lag the write just made.
async fn same(
    client: &Client,
    local: &mut Local,
    endpoint: Endpoint,
    pairs: &[(&str, String)],
    authorization: Option<&str>,
) -> Result<Answer> {
    let (status, body) = local.call(endpoint, pairs, authorization);
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let a = client.call(endpoint, pairs, authorization).await?;
        if a.status == status && normalise(&a.body) == normalise(&body) {
            if status == 200 || status >= 400 {
                let ct = a
                    .headers
                    .get(header::CONTENT_TYPE)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("");
                ensure!(
                    ct.contains("charset=utf-8"),
                    "{endpoint}: content type {ct}"
                );
            }
            return Ok(a);
        }
        if endpoint.method() == SlapMethod::Post || Instant::now() > deadline {
            bail!(
                "{endpoint}: the gateway answered {} {:?}\nthe SLAP layer renders {status} {body:?}",
                a.status,
                a.body
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn computer(body: &str) -> Result<Computer> {
    Ok(Computer::decode(body.as_bytes(), &Limits::DEFAULT)?)
}

fn instance(body: &str) -> Result<SoftwareInstance> {
    Ok(SoftwareInstance::decode(body.as_bytes(), &Limits::DEFAULT)?)
}

fn partition_of<'c>(c: &'c Computer, partition: &str) -> Result<&'c ComputerPartition> {
    c.partitions()
        .iter()
        .find(|p| p.partition_id == partition)
        .ok_or_else(|| anyhow!("no partition {partition} in {:?}", c.partitions()))
}

async fn every_instance(cluster: &ProcessCluster) -> Result<State> {
    let (entries, _) = cluster
        .client()
        .read(&MasterQuery::All, Consistency::Linearizable, 0)
        .await?;
    Ok(State::from_entries(entries)?)
}

// ----- tests -----------------------------------------------------------------------------

/// What a node and its user do, over HTTP through a three-replica group: format, supply,
/// request, poll, register, publish, re-request; each answer equal to what the SLAP layer
/// renders over a local state given the same calls.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_round_trip_through_three_replicas() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let masters = cluster(dir.path(), 3).await?;
    let gateway =
        Gateway::start(&GatewayConfig::insecure("127.0.0.1:0", masters.api_addrs())).await?;
    let client = Client::plain(&gateway);
    let mut local = Local {
        ctx: GatewayConfig::insecure("127.0.0.1:0", vec!["127.0.0.1:1".into()]).slap_context(),
        state: State::new(),
        seq: 0,
    };
    let comp = |extra: &[(&'static str, String)]| {
        let mut v = vec![("computer_id", "COMP-1".to_string())];
        v.extend_from_slice(extra);
        v
    };

    // Unknown before it is formatted.
    let a = same(
        &client,
        &mut local,
        Endpoint::GetFullComputerInformation,
        &comp(&[]),
        None,
    )
    .await?;
    assert_eq!(a.status, 404);

    let a = same(
        &client,
        &mut local,
        Endpoint::LoadComputerConfigurationFromXml,
        &[("xml", m(&computer_dict("COMP-1", 3)))],
        None,
    )
    .await?;
    assert_eq!(a.body, "done");
    let a = same(
        &client,
        &mut local,
        Endpoint::SupplySupply,
        &comp(&[("url", SR.into()), ("state", "available".into())]),
        None,
    )
    .await?;
    assert_eq!(a.body, format!("Supplied '{SR}' to be available"));

    let a = same(
        &client,
        &mut local,
        Endpoint::RequestComputerPartition,
        &request_fields("root", &[("color", "blue")]),
        None,
    )
    .await?;
    let root = instance(&a.body)?;
    assert_eq!(
        root.slap_computer_id.get().map(String::as_str),
        Some("COMP-1")
    );
    let part = root
        .slap_computer_partition_id
        .get()
        .cloned()
        .ok_or_else(|| anyhow!("no partition in {a:?}"))?;

    // The node polls and sees it.
    let a = same(
        &client,
        &mut local,
        Endpoint::GetFullComputerInformation,
        &comp(&[]),
        None,
    )
    .await?;
    let c = computer(&a.body)?;
    assert_eq!(c.software_releases().len(), 1);
    let p = partition_of(&c, &part)?;
    assert_eq!(p.requested_state.get().map(String::as_str), Some("started"));
    assert_eq!(p.instance_guid.get(), root.instance_guid.get());
    same(
        &client,
        &mut local,
        Endpoint::GetComputerInformation,
        &comp(&[]),
        None,
    )
    .await?;
    same(
        &client,
        &mut local,
        Endpoint::RegisterComputerPartition,
        &[
            ("computer_reference", "COMP-1".into()),
            ("computer_partition_reference", part.clone()),
        ],
        None,
    )
    .await?;

    // The instance requests a child and publishes its connection parameters.
    let header = format!("X-SlapPartition computer_id=COMP-1, computer_partition_id={part}");
    let a = same(
        &client,
        &mut local,
        Endpoint::RequestComputerPartition,
        &request_fields("child", &[]),
        Some(&header),
    )
    .await?;
    assert!(instance(&a.body)?.slap_computer_partition_id.get() != Some(&part));
    same(
        &client,
        &mut local,
        Endpoint::SetComputerPartitionConnectionXml,
        &comp(&[
            ("computer_partition_id", part.clone()),
            (
                "connection_xml",
                m(&Value::str_dict([("url", "https://x/")])),
            ),
            ("slave_reference", "None".into()),
        ]),
        Some(&header),
    )
    .await?;
    for endpoint in [
        Endpoint::StartedComputerPartition,
        Endpoint::SoftwareInstanceBang,
    ] {
        same(
            &client,
            &mut local,
            endpoint,
            &comp(&[
                ("computer_partition_id", part.clone()),
                ("message", "m".into()),
            ]),
            Some(&header),
        )
        .await?;
    }
    same(
        &client,
        &mut local,
        Endpoint::AvailableSoftwareRelease,
        &comp(&[("url", SR.into())]),
        None,
    )
    .await?;
    // The requester sees the connection parameters.
    let a = same(
        &client,
        &mut local,
        Endpoint::RequestComputerPartition,
        &request_fields("root", &[("color", "blue")]),
        None,
    )
    .await?;
    let again = instance(&a.body)?;
    assert_eq!(
        again.connection_dict.get().and_then(|d| d.get("url")),
        Some(&Value::from("https://x/"))
    );
    for endpoint in [
        Endpoint::GetComputerPartitionStatus,
        Endpoint::GetHostingSubscriptionIpList,
        Endpoint::GetComputerPartitionCertificate,
    ] {
        same(
            &client,
            &mut local,
            endpoint,
            &comp(&[("computer_partition_id", part.clone())]),
            None,
        )
        .await?;
    }
    same(
        &client,
        &mut local,
        Endpoint::GetComputerStatus,
        &comp(&[]),
        None,
    )
    .await?;
    let a = same(&client, &mut local, Endpoint::GetHateoasUrl, &[], None).await?;
    assert_eq!(a.status, 404);
    same(
        &client,
        &mut local,
        Endpoint::GetFullComputerInformation,
        &comp(&[]),
        None,
    )
    .await?;

    // Metrics and health.
    let h = client
        .send(client.builder(Method::GET, "healthz").body(Body::empty())?)
        .await?;
    assert_eq!((h.status, h.body.as_str()), (200, "ok\n"));
    let metrics = client
        .send(client.builder(Method::GET, "metrics").body(Body::empty())?)
        .await?;
    assert_eq!(metrics.status, 200);
    for line in [
        "slapos_gateway_requests_total{endpoint=\"requestComputerPartition\",status=\"200\"} 3",
        "slapos_gateway_requests_total{endpoint=\"getFullComputerInformation\",status=\"404\"} 1",
        "slapos_gateway_request_duration_seconds_count{endpoint=\"supplySupply\"} 1",
        "slapos_gateway_requests_in_flight 0",
    ] {
        assert!(
            metrics.body.contains(line),
            "{line} missing from\n{}",
            metrics.body
        );
    }
    gateway.shutdown().await;
    Ok(())
}

/// Bad input gets a 4xx that says what was wrong, and changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused_with_a_message() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let masters = cluster(dir.path(), 1).await?;
    let mut config = GatewayConfig::insecure("127.0.0.1:0", masters.api_addrs());
    config.max_body_bytes = 64 * 1024;
    let gateway = Gateway::start(&config).await?;
    let client = Client::plain(&gateway);

    // A missing field.
    let a = client
        .post(
            "supplySupply",
            &[("url", SR.into()), ("computer_id", "COMP-1".into())],
            None,
        )
        .await?;
    assert_eq!(
        (a.status, a.body.as_str()),
        (400, "missing required field 'state'")
    );
    let a = client.get("getFullComputerInformation", &[]).await?;
    assert_eq!(
        (a.status, a.body.as_str()),
        (400, "missing required field 'computer_id'")
    );

    // Malformed XML, with the decoder's message; nothing formatted.
    let a = client
        .post(
            "loadComputerConfigurationFromXML",
            &[("xml", "<marshal><dictionary id=\"i2\"><string>reference</string><string>COMP-BAD</string>".into())],
            None,
        )
        .await?;
    assert_eq!(a.status, 400, "{a:?}");
    assert!(
        a.body
            .starts_with("field 'xml' is not a valid marshalled document: "),
        "{a:?}"
    );
    // Ill-shaped, with the path to the value.
    let mut bad = computer_dict("COMP-BAD", 1);
    if let Value::Dict(entries) = &mut bad {
        entries.retain(|(k, _)| k.as_str() != Some("partition_list"));
    }
    let a = client
        .post(
            "loadComputerConfigurationFromXML",
            &[("xml", m(&bad))],
            None,
        )
        .await?;
    assert_eq!(
        (a.status, a.body.as_str()),
        (400, "field 'xml': partition_list: missing")
    );

    // Unknown computer and partition: 404 naming them.
    let a = client
        .get(
            "getFullComputerInformation",
            &[("computer_id", "COMP-BAD".into())],
        )
        .await?;
    assert_eq!(a.status, 404, "{a:?}");
    assert!(a.body.contains("COMP-BAD"), "{a:?}");
    let a = client
        .get(
            "registerComputerPartition",
            &[
                ("computer_reference", "COMP-BAD".into()),
                ("computer_partition_reference", "slappart0".into()),
            ],
        )
        .await?;
    assert_eq!(a.status, 404, "{a:?}");
    let a = client
        .post(
            "requestComputerPartition",
            &request_fields("x", &[]),
            Some("X-SlapPartition computer_id=COMP-BAD, computer_partition_id=slappart0"),
        )
        .await?;
    assert_eq!(
        (a.status, a.body.as_str()),
        (
            400,
            "No partition matching the authorization header: (COMP-BAD / slappart0)"
        )
    );

    // Unknown method, wrong HTTP method, wrong content type.
    let a = client.get("getNothing", &[]).await?;
    assert_eq!(a.status, 404, "{a:?}");
    assert!(a.body.contains("/getNothing"), "{a:?}");
    let a = client.get("supplySupply", &[("url", SR.into())]).await?;
    assert_eq!(a.status, 405, "{a:?}");
    assert_eq!(
        a.headers.get(header::ALLOW).map(|v| v.as_bytes()),
        Some(&b"POST"[..])
    );
    let a = client
        .post(
            "getFullComputerInformation",
            &[("computer_id", "C".into())],
            None,
        )
        .await?;
    assert_eq!(a.status, 405, "{a:?}");
    assert_eq!(
        a.headers.get(header::ALLOW).map(|v| v.as_bytes()),
        Some(&b"GET"[..])
    );
    let a = client
        .send(
            client
                .builder(Method::POST, "supplySupply")
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from("{}"))?,
        )
        .await?;
    assert_eq!(a.status, 415, "{a:?}");

    // Oversized: 413 with the limit, read to the end so the client gets the answer.
    let big = "x".repeat(200 * 1024);
    let a = client
        .post("supplySupply", &[("url", big.clone())], None)
        .await?;
    assert_eq!(a.status, 413, "{a:?}");
    assert!(a.body.contains("over the limit of 65536 bytes"), "{a:?}");
    // A body of unannounced length (chunked) is bounded too.
    let stream = futures_stream(vec![big.into_bytes(); 2]);
    let a = client
        .send(
            client
                .builder(Method::POST, "supplySupply")
                .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
                .body(stream)?,
        )
        .await?;
    assert_eq!(a.status, 413, "{a:?}");

    // Nothing of the above changed anything: the master knows no computer.
    let state = every_instance(&masters).await?;
    assert_eq!(state.computers().count(), 0);
    assert_eq!(state.instances().count(), 0);

    // Under a prefix, the methods live there only.
    let mut prefixed = config.clone();
    prefixed.url_prefix = "/slap".into();
    let gw2 = Gateway::start(&prefixed).await?;
    let mut c2 = Client::plain(&gw2);
    let a = c2
        .get("getFullComputerInformation", &[("computer_id", "X".into())])
        .await?;
    assert_eq!(a.status, 404);
    assert!(a.body.starts_with("unknown SLAP method"), "{a:?}");
    c2.prefix = "/slap".into();
    let a = c2
        .get("getFullComputerInformation", &[("computer_id", "X".into())])
        .await?;
    assert_eq!(a.status, 404);
    assert!(a.body.contains("'X'"), "{a:?}");
    assert!(gw2.url().ends_with("/slap"), "{}", gw2.url());
    gw2.shutdown().await;
    gateway.shutdown().await;
    Ok(())
}

/// A body sent in chunks without a length (chunked transfer encoding).
fn futures_stream(chunks: Vec<Vec<u8>>) -> Body {
    Body::new(Chunks(chunks.into_iter().rev().collect()))
}

struct Chunks(Vec<Vec<u8>>);

impl axum::body::HttpBody for Chunks {
    type Data = axum::body::Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        std::task::Poll::Ready(self.0.pop().map(|c| Ok(hyper::body::Frame::data(c.into()))))
    }
}

/// No master answers: 503 with a message (the client retries on its next run).
#[tokio::test]
async fn an_unavailable_master_is_a_503() -> Result<()> {
    let mut config =
        GatewayConfig::insecure("127.0.0.1:0", vec![format!("127.0.0.1:{}", free_port()?)]);
    config.master_deadline_ms = 600;
    config.master_call_timeout_ms = 300;
    let gateway = Gateway::start(&config).await?;
    let client = Client::plain(&gateway);
    let a = client
        .get("getFullComputerInformation", &[("computer_id", "C".into())])
        .await?;
    assert_eq!(a.status, 503, "{a:?}");
    assert!(a.body.starts_with("the master is unavailable: "), "{a:?}");
    let a = client
        .post(
            "supplySupply",
            &[
                ("url", SR.into()),
                ("computer_id", "C".into()),
                ("state", "available".into()),
            ],
            None,
        )
        .await?;
    assert_eq!(a.status, 503, "{a:?}");
    // Input errors are still answered without the master.
    let a = client.get("getFullComputerInformation", &[]).await?;
    assert_eq!(a.status, 400);
    gateway.shutdown().await;
    Ok(())
}

/// Requests keep being answered, correctly and exactly once, while the leader is killed
/// with SIGKILL in the middle of them: the gateway retries each under its request id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_survive_a_leader_kill() -> Result<()> {
    const N: usize = 8;
    let dir = tempfile::tempdir()?;
    let mut masters = cluster(dir.path(), 3).await?;
    let gateway =
        Gateway::start(&GatewayConfig::insecure("127.0.0.1:0", masters.api_addrs())).await?;
    let client = Client::plain(&gateway);
    let a = client
        .post(
            "loadComputerConfigurationFromXML",
            &[("xml", m(&computer_dict("COMP-1", N + 2)))],
            None,
        )
        .await?;
    assert_eq!(a.status, 200, "{a:?}");
    let a = client
        .post(
            "supplySupply",
            &[
                ("url", SR.into()),
                ("computer_id", "COMP-1".into()),
                ("state", "available".into()),
            ],
            None,
        )
        .await?;
    assert_eq!(a.status, 200, "{a:?}");

    let answered = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let requests = {
        let (client, answered) = (client.clone(), answered.clone());
        tokio::spawn(async move {
            let mut out = Vec::new();
            for i in 0..N {
                let started = Instant::now();
                let a = client
                    .post(
                        "requestComputerPartition",
                        &request_fields(&format!("inst-{i}"), &[]),
                        None,
                    )
                    .await;
                answered.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                out.push((a, started.elapsed()));
            }
            out
        })
    };
    while answered.load(std::sync::atomic::Ordering::SeqCst) < 2 {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let leader = masters
        .wait_leader(Duration::from_secs(5))
        .await
        .map_err(|e| anyhow!("{e}"))?;
    masters.kill9(leader).map_err(|e| anyhow!("{e}"))?;
    let killed_at = answered.load(std::sync::atomic::Ordering::SeqCst);
    let results = tokio::time::timeout(Duration::from_secs(60), requests).await??;

    let mut partitions = std::collections::BTreeSet::new();
    let mut slowest = Duration::ZERO;
    for (i, (a, took)) in results.into_iter().enumerate() {
        let a = a.with_context(|| format!("request {i}"))?;
        assert_eq!(a.status, 200, "request {i}: {a:?}");
        let inst = instance(&a.body)?;
        assert!(
            inst.parameter_dict
                .get()
                .is_some_and(|d| d.contains_key("timestamp")),
            "request {i}: {a:?}"
        );
        let p = inst
            .slap_computer_partition_id
            .get()
            .cloned()
            .ok_or_else(|| anyhow!("request {i} unallocated: {a:?}"))?;
        assert!(partitions.insert(p.clone()), "request {i} got {p} twice");
        slowest = slowest.max(took);
    }
    eprintln!("leader {leader} killed after {killed_at} answers; slowest request {slowest:?}");
    // A new leader, and each instance allocated exactly once.
    let state = every_instance(&masters).await?;
    for i in 0..N {
        let title = format!("inst-{i}");
        let n = state.instances().filter(|x| x.title == title).count();
        assert_eq!(n, 1, "{title} allocated {n} times");
    }
    assert_eq!(state.instances().count(), N);
    // The node sees them all.
    let a = client
        .get(
            "getFullComputerInformation",
            &[("computer_id", "COMP-1".into())],
        )
        .await?;
    let c = computer(&a.body)?;
    let busy = c
        .partitions()
        .iter()
        .filter(|p| p.need_modification.get() == Some(&1))
        .count();
    assert_eq!(busy, N);
    gateway.shutdown().await;
    Ok(())
}

/// `slapos gateway run` over HTTPS with a self-signed certificate; SIGTERM stops it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_gateway_process() -> Result<()> {
    if Process::new("openssl").arg("version").output().is_err() {
        eprintln!("openssl not found: HTTPS test skipped");
        return Ok(());
    }
    let dir = tempfile::tempdir()?;
    let (cert, key) = (dir.path().join("gw.crt"), dir.path().join("gw.key"));
    let out = Process::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
        ])
        .args(["-nodes", "-days", "2", "-subj", "/CN=localhost"])
        .args(["-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"])
        .args(["-addext", "basicConstraints=critical,CA:FALSE"])
        .args(["-addext", "extendedKeyUsage=serverAuth"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()?;
    ensure!(
        out.status.success(),
        "openssl: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    let masters = cluster(dir.path(), 1).await?;
    let port = free_port()?;
    let mut config = GatewayConfig::insecure(format!("127.0.0.1:{port}"), masters.api_addrs());
    config.insecure_http = false;
    config.tls_cert = Some(cert.clone());
    config.tls_key = Some(key.clone());
    let config_path = dir.path().join("gateway.toml");
    std::fs::write(&config_path, config.to_toml())?;
    let log = std::fs::File::create(dir.path().join("gateway.log"))?;
    let mut child = Process::new(slapos_bin())
        .args(["gateway", "run", "--config"])
        .arg(&config_path)
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()?;
    let result = async {
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse()?;
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(addr).await.is_err() {
            ensure!(
                Instant::now() < deadline,
                "the gateway did not listen within 20 s"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let mut roots = rustls::RootCertStore::empty();
        use rustls_pki_types::pem::PemObject;
        roots.add(rustls_pki_types::CertificateDer::from_pem_file(&cert)?)?;
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
        let client = Client {
            addr,
            prefix: String::new(),
            tls: Some((
                tokio_rustls::TlsConnector::from(Arc::new(tls)),
                rustls_pki_types::ServerName::try_from("localhost")?,
            )),
        };
        let a = client
            .get(
                "getFullComputerInformation",
                &[("computer_id", "COMP-1".into())],
            )
            .await?;
        assert_eq!(a.status, 404, "{a:?}");
        let a = client
            .post(
                "loadComputerConfigurationFromXML",
                &[("xml", m(&computer_dict("COMP-1", 2)))],
                None,
            )
            .await?;
        assert_eq!((a.status, a.body.as_str()), (200, "done"));
        let deadline = Instant::now() + Duration::from_secs(3);
        loop {
            let a = client
                .get(
                    "getFullComputerInformation",
                    &[("computer_id", "COMP-1".into())],
                )
                .await?;
            if a.status == 200 {
                assert_eq!(computer(&a.body)?.partitions().len(), 2);
                break;
            }
            ensure!(Instant::now() < deadline, "never formatted: {a:?}");
        }
        // Plain HTTP to the HTTPS port gets no SLAP answer.
        let plain = Client {
            addr,
            prefix: String::new(),
            tls: None,
        };
        let r = plain
            .get(
                "getFullComputerInformation",
                &[("computer_id", "COMP-1".into())],
            )
            .await;
        assert!(r.as_ref().map_or(true, |a| a.status != 200), "{r:?}");
        Ok::<(), anyhow::Error>(())
    }
    .await;
    // SIGTERM: a clean exit.
    let _ = Process::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let deadline = Instant::now() + Duration::from_secs(15);
    let status = loop {
        if let Some(s) = child.try_wait()? {
            break Some(s);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let log = std::fs::read_to_string(dir.path().join("gateway.log")).unwrap_or_default();
    result.with_context(|| format!("gateway log:\n{log}"))?;
    let status = status.ok_or_else(|| anyhow!("no exit within 15 s of SIGTERM; log:\n{log}"))?;
    ensure!(status.success(), "exit {status}; log:\n{log}");
    ensure!(
        log.contains("gateway serving SLAP at https://127.0.0.1:"),
        "log:\n{log}"
    );
    Ok(())
}

// ----- long polls of node views (issue 21) ------------------------------------------------

impl Client {
    /// `getFullComputerInformation` with extra request headers.
    async fn view(&self, computer: &str, headers: &[(&str, &str)]) -> Result<Answer> {
        let mut builder = self.builder(
            Method::GET,
            &format!(
                "getFullComputerInformation?{}",
                urlencode(&[("computer_id", computer.to_string())])
            ),
        );
        for (k, v) in headers {
            builder = builder.header(*k, *v);
        }
        self.send(builder.body(Body::empty())?).await
    }
}

fn etag_of(a: &Answer) -> Result<u64> {
    let tag = a
        .headers
        .get(header::ETAG)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| anyhow!("no ETag in {a:?}"))?;
    tag.trim_matches('"')
        .parse()
        .map_err(|e| anyhow!("ETag {tag}: {e}"))
}

/// A request placed on `computer` (SLA `computer_guid`).
fn request_on(
    title: &str,
    computer: &str,
    parameters: &[(&str, &str)],
) -> Vec<(&'static str, String)> {
    let mut fields = request_fields(title, parameters);
    for f in fields.iter_mut() {
        if f.0 == "filter_xml" {
            f.1 = m(&Value::str_dict([("computer_guid", computer)]));
        }
    }
    fields
}

async fn wait_held(gateway: &Gateway, n: u64) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while gateway.metrics().held_polls() != n {
        ensure!(
            Instant::now() < deadline,
            "{} long polls held, expected {n}",
            gateway.metrics().held_polls()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

/// The protocol of long polls over a three-replica group and two gateways reading
/// different replicas: 304 on an unchanged view, a held request woken by a change of its
/// computer and by nothing else, the cap on the wait, a version from another replica's
/// future, and held requests answered when their gateway shuts down. Timings are
/// printed, not asserted (`slapos bench fleet` measures them).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_polls_of_node_views() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let masters = cluster(dir.path(), 3).await?;
    let gw_a = Gateway::start(&GatewayConfig::insecure("127.0.0.1:0", masters.api_addrs())).await?;
    let mut reversed = masters.api_addrs();
    reversed.reverse();
    let gw_b = Gateway::start(&GatewayConfig::insecure("127.0.0.1:0", reversed)).await?;
    let (a, b) = (Client::plain(&gw_a), Client::plain(&gw_b));
    for c in ["COMP-X", "COMP-Y"] {
        let r = a
            .call(
                Endpoint::LoadComputerConfigurationFromXml,
                &[("xml", m(&computer_dict(c, 2)))],
                None,
            )
            .await?;
        ensure!(r.status == 200, "format {c}: {r:?}");
        let r = a
            .call(
                Endpoint::SupplySupply,
                &[
                    ("computer_id", c.to_string()),
                    ("url", SR.into()),
                    ("state", "available".into()),
                ],
                None,
            )
            .await?;
        ensure!(r.status == 200, "supply {c}: {r:?}");
    }
    let r = a
        .call(
            Endpoint::RequestComputerPartition,
            &request_on("root", "COMP-X", &[("color", "blue")]),
            None,
        )
        .await?;
    ensure!(r.status == 200, "request: {r:?}");

    // A plain read carries the version; the same view asked with it is not modified.
    let first = a.view("COMP-X", &[]).await?;
    ensure!(first.status == 200, "{first:?}");
    let e1 = etag_of(&first)?;
    let tag = format!("\"{e1}\"");
    let r = a.view("COMP-X", &[("if-none-match", &tag)]).await?;
    assert_eq!((r.status, r.body.as_str()), (304, ""), "unchanged view");
    assert_eq!(etag_of(&r)?, e1);
    // An entity tag that is not ours, or an older one: the view, as without the header.
    for other in ["\"abc\"", "*", "\"1\""] {
        let r = a.view("COMP-X", &[("if-none-match", other)]).await?;
        assert_eq!(r.status, 200, "If-None-Match: {other}");
        assert_eq!(
            r.body, first.body,
            "the same body for If-None-Match: {other}"
        );
    }

    // Held on COMP-X; a change of COMP-Y does not wake it, a change of COMP-X answers it.
    let held = {
        let (a, tag) = (a.clone(), tag.clone());
        tokio::spawn(async move {
            let started = Instant::now();
            let r = a
                .view(
                    "COMP-X",
                    &[("if-none-match", tag.as_str()), ("prefer", "wait=100000")],
                )
                .await;
            (r, started.elapsed())
        })
    };
    wait_held(&gw_a, 1).await?;
    let wakeups = gw_a.metrics().poll_wakeups();
    let r = a
        .call(
            Endpoint::RequestComputerPartition,
            &request_on("elsewhere", "COMP-Y", &[]),
            None,
        )
        .await?;
    ensure!(r.status == 200, "request on COMP-Y: {r:?}");
    // The stream has told the gateway about COMP-Y once its view moved past e1.
    let y = a.view("COMP-Y", &[]).await?;
    let y_version = etag_of(&y)?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while gw_a.app_views_followed() < y_version {
        ensure!(
            Instant::now() < deadline,
            "the gateway never heard of index {y_version}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        gw_a.metrics().poll_wakeups(),
        wakeups,
        "a change of COMP-Y woke a poll held on COMP-X"
    );
    assert!(!held.is_finished(), "the poll held on COMP-X was answered");
    let changed_at = Instant::now();
    let r = a
        .call(
            Endpoint::RequestComputerPartition,
            &request_on("root", "COMP-X", &[("color", "green")]),
            None,
        )
        .await?;
    ensure!(r.status == 200, "re-request: {r:?}");
    let (answer, waited) = held.await?;
    let answer = answer?;
    println!(
        "held poll answered {} ms after the write was sent ({} ms held)",
        changed_at.elapsed().as_millis(),
        waited.as_millis()
    );
    assert_eq!(answer.status, 200, "{answer:?}");
    assert!(
        answer.body.contains("green"),
        "the new parameters: {answer:?}"
    );
    let e2 = etag_of(&answer)?;
    assert!(e2 > e1, "version {e2} after {e1}");
    assert_eq!(
        answer
            .headers
            .get("preference-applied")
            .and_then(|v| v.to_str().ok()),
        Some("wait=300"),
        "the wait is capped at 300 s"
    );

    // A version seen through one gateway is never answered with an older view through
    // the other, which reads another replica: it waits for that replica to catch up.
    let r = a
        .call(
            Endpoint::RequestComputerPartition,
            &request_on("root", "COMP-X", &[("color", "red")]),
            None,
        )
        .await?;
    ensure!(r.status == 200, "{r:?}");
    let seen = a.view("COMP-X", &[]).await?;
    let e3 = etag_of(&seen)?;
    let tag3 = format!("\"{e3}\"");
    let r = b.view("COMP-X", &[("if-none-match", &tag3)]).await?;
    assert_eq!(r.status, 304, "the other gateway, same view: {r:?}");
    // A version from no replica's past (not one this group gave): the view as of now.
    let r = b
        .view("COMP-X", &[("if-none-match", "\"999999999999\"")])
        .await?;
    assert_eq!(r.status, 200, "{r:?}");
    assert!(r.body.contains("red"), "{r:?}");

    // A short wait that nothing changes ends in 304, with the version the client holds.
    let r = b
        .view("COMP-X", &[("if-none-match", &tag3), ("prefer", "wait=1")])
        .await?;
    assert_eq!((r.status, etag_of(&r)?), (304, e3));

    // Held requests are answered, not cut, when their gateway shuts down.
    let held = {
        let (b, tag3) = (b.clone(), tag3.clone());
        tokio::spawn(async move {
            b.view(
                "COMP-X",
                &[("if-none-match", tag3.as_str()), ("prefer", "wait=60")],
            )
            .await
        })
    };
    wait_held(&gw_b, 1).await?;
    gw_b.shutdown().await;
    let r = held.await??;
    assert_eq!(r.status, 304, "at shutdown: {r:?}");
    gw_a.shutdown().await;
    Ok(())
}
