//! The node's SLAP client (slapgrid-behaviour.md 2): the legacy XML endpoints over
//! HTTP/1.1, plain or TLS with the computer's client certificate, blocking (the agent is a
//! sequential program), with **failover**: `master_url` may list several gateways; a call
//! that cannot reach one (connection refused, timeout, 5xx) is retried on the next, and
//! the last one that answered is tried first next time.
//!
//! The transport is the workspace's one HTTP client (`http-client`: hyper on a small
//! current-thread runtime of its own, see DESIGN.md); what is SLAP stays here: the
//! gateways, their order and the learned list, the headers the reference client sends, and
//! which statuses mean what.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use http_client::{BlockingClient, ClientConfig, Endpoint, Options, Request, Response};
use slapos_proto::marshal::{self, Value};
use slapos_proto::slap::{Computer, SoftwareInstance};
use slapos_proto::Limits;

use crate::NodeConfig;

/// Largest answer read (a computer with thousands of partitions and their parameters).
const MAX_ANSWER: usize = 256 << 20;
/// The reference's timeout for one call.
const CALL_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a connection to a gateway is kept for the next call (the calls of a run come
/// back to back; a gateway closes an idle connection after 30 s).
const KEEP_ALIVE: Duration = Duration::from_secs(10);
/// The longest ETag taken from a gateway (ours are short decimals); a longer one, or one
/// that is not plain visible ASCII, is not an ETag the client sends back.
const MAX_ETAG: usize = 256;

#[derive(Debug, thiserror::Error)]
pub enum SlapError {
    #[error("invalid master URL {0:?}")]
    BadUrl(String),
    #[error("TLS setup: {0}")]
    Tls(String),
    /// No gateway answered (connection, timeout or server error on every one).
    #[error("master unreachable: {0}")]
    Unreachable(String),
    /// 404: unknown computer or partition, or a wrong certificate.
    #[error("{method}: not found: {body}")]
    NotFound { method: String, body: String },
    /// 408: the requested instance is not ready yet.
    #[error("{method}: resource not ready")]
    NotReady { method: String },
    #[error("{method}: HTTP {status}: {body}")]
    Refused {
        method: String,
        status: u16,
        body: String,
    },
    #[error("{method}: malformed answer: {message}")]
    BadAnswer { method: String, message: String },
    /// A call that cannot be put on the wire (a header value with a line break...).
    #[error("{method}: cannot send: {message}")]
    BadRequest { method: String, message: String },
}

impl SlapError {
    /// The master could not be reached at all (the instance run goes offline).
    pub fn is_unreachable(&self) -> bool {
        matches!(self, SlapError::Unreachable(_))
    }
}

fn tls_error(e: http_client::Error) -> SlapError {
    match e {
        http_client::Error::Tls(m) => SlapError::Tls(m),
        other => SlapError::Tls(other.to_string()),
    }
}

/// A SLAP client over one or more gateways.
///
/// The gateways tried are those of the configuration, and then those the group names:
/// a gateway of a self-hosted group lists the group's gateways in every answer
/// (`X-Slapos-Gateways`), and the client tries those first from then on (the configured
/// ones stay behind them as a fallback), so a node follows replicas that come and go
/// without its configuration being rewritten.
pub struct SlapClient {
    endpoints: std::sync::RwLock<Vec<Endpoint>>,
    configured: Vec<Endpoint>,
    /// Where the learned gateways are kept across restarts (a node's `<cfg>.gateways`).
    learned_file: Option<std::path::PathBuf>,
    /// Gateways' certificates are verified against a CA (`master_ca_file`): only then is
    /// a gateway list learned from their answers.
    verified: bool,
    preferred: AtomicUsize,
    tls: Option<Arc<ClientConfig>>,
    timeout: Duration,
    /// The HTTP client, made at the first call (after [`Self::with_timeout`]); its
    /// connections are kept between calls.
    http: OnceLock<BlockingClient>,
    /// The long polls' HTTP client (its timeouts exceed the wait it was made for).
    watch_http: Mutex<Option<(Duration, Arc<BlockingClient>)>>,
    /// What the last computer view this client read carried: see [`Self::last_view`].
    view: Mutex<ViewSeen>,
}

/// The ETag of the last computer view read (`None`: the answer had none), and how many
/// views were read so far.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ViewSeen {
    pub count: u64,
    pub etag: Option<String>,
}

/// What a long poll of a computer's view answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Watched {
    /// 304: the view is still the one of the ETag sent (the ETag, as answered).
    NotModified { etag: Option<String> },
    /// 200: the view (its body, as `getFullComputerInformation` answers it) and its new
    /// ETag; `None`: the gateway that answered does not version views (plain polling).
    Changed { etag: Option<String>, body: Vec<u8> },
}

impl SlapClient {
    /// The client of the node described by `cfg` (its gateways and certificate).
    pub fn from_config(cfg: &NodeConfig) -> Result<SlapClient, SlapError> {
        let identity = match (&cfg.cert_file, &cfg.key_file) {
            (Some(c), Some(k)) => {
                // A renewal a crash interrupted is completed before the pair is read.
                if let Err(e) = crate::keyfiles::finish_renewal(k, c) {
                    tracing::warn!(error = %e, "cannot complete an interrupted certificate renewal");
                }
                Some((c.as_path(), k.as_path()))
            }
            _ => None,
        };
        let mut client =
            SlapClient::new(&cfg.master_urls, identity, cfg.master_ca_file.as_deref())?;
        // The gateways the group named before a restart come first again.
        let learned = std::path::PathBuf::from(format!("{}.gateways", cfg.path.display()));
        if let Ok(list) = std::fs::read_to_string(&learned) {
            client.learn(&list, "", true);
        }
        client.learned_file = Some(learned);
        Ok(client)
    }

    /// `identity` = (certificate PEM file, key PEM file) presented on HTTPS; `ca` = the
    /// PEM file the gateway's certificate must chain to (without it the certificate is
    /// not verified, as the reference client never verifies).
    pub fn new(
        urls: &[String],
        identity: Option<(&Path, &Path)>,
        ca: Option<&Path>,
    ) -> Result<SlapClient, SlapError> {
        let endpoints = urls
            .iter()
            .map(|u| Endpoint::parse(u).map_err(|_| SlapError::BadUrl(u.clone())))
            .collect::<Result<Vec<_>, _>>()?;
        if endpoints.is_empty() {
            return Err(SlapError::BadUrl(String::new()));
        }
        let tls = if endpoints.iter().any(|e| e.tls) {
            Some(Arc::new(tls_config(identity, ca)?))
        } else {
            None
        };
        let mut client = SlapClient::build(endpoints, tls);
        client.verified = client.tls.is_some() && ca.is_some();
        Ok(client)
    }

    fn build(endpoints: Vec<Endpoint>, tls: Option<Arc<ClientConfig>>) -> SlapClient {
        SlapClient {
            configured: endpoints.clone(),
            endpoints: std::sync::RwLock::new(endpoints),
            learned_file: None,
            verified: false,
            preferred: AtomicUsize::new(0),
            tls,
            timeout: CALL_TIMEOUT,
            http: OnceLock::new(),
            watch_http: Mutex::new(None),
            view: Mutex::new(ViewSeen::default()),
        }
    }

    /// Shorter per-call timeout (tests, failover drills).
    pub fn with_timeout(mut self, timeout: Duration) -> SlapClient {
        self.timeout = timeout;
        self.http = OnceLock::new();
        self.watch_http = Mutex::new(None);
        self
    }

    /// The HTTP client: connect within the timeout (10 s at most) per address, the
    /// answer's head within the timeout and each read of its body too, the whole call
    /// within twice the timeout (a gateway trickling bytes cannot hold it longer).
    fn http(&self) -> Result<&BlockingClient, SlapError> {
        if let Some(http) = self.http.get() {
            return Ok(http);
        }
        let options = Options {
            connect_timeout: self.timeout.min(Duration::from_secs(10)),
            timeout: self.timeout,
            deadline: self.timeout * 2,
            max_body: MAX_ANSWER,
            keep_alive: Some(KEEP_ALIVE),
            user_agent: Some(format!("slapos-rs/{}", env!("CARGO_PKG_VERSION"))),
        };
        let http = BlockingClient::new(self.tls.clone(), options)
            .map_err(|e| SlapError::Unreachable(e.to_string()))?;
        Ok(self.http.get_or_init(|| http))
    }

    /// The HTTP client of long polls that wait up to `wait`: the answer's head within
    /// `wait + wait/16 + 10 s` (the gateway adds a little jitter to the wait), the rest
    /// as [`Self::http`]'s; connections kept as long as a poll is re-armed at once.
    fn watch_http(&self, wait: Duration) -> Result<Arc<BlockingClient>, SlapError> {
        let mut slot = self
            .watch_http
            .lock()
            .map_err(|_| SlapError::Unreachable("the long poll's client was poisoned".into()))?;
        if let Some((made_for, http)) = slot.as_ref() {
            if *made_for == wait {
                return Ok(http.clone());
            }
        }
        let head = wait + wait / 16 + Duration::from_secs(10);
        let options = Options {
            connect_timeout: self.timeout.min(Duration::from_secs(10)),
            timeout: head.max(self.timeout),
            deadline: head.max(self.timeout) + self.timeout,
            max_body: MAX_ANSWER,
            keep_alive: Some(KEEP_ALIVE),
            user_agent: Some(format!("slapos-rs/{}", env!("CARGO_PKG_VERSION"))),
        };
        let http = Arc::new(
            BlockingClient::new(self.tls.clone(), options)
                .map_err(|e| SlapError::Unreachable(e.to_string()))?,
        );
        *slot = Some((wait, http.clone()));
        Ok(http)
    }

    /// The ETag of the last computer view this client read (by
    /// [`Self::full_computer_information`]), and how many it read: the watch starts its
    /// long polls from what the runs saw, and learns that a gateway versions views.
    pub fn last_view(&self) -> ViewSeen {
        self.view.lock().map(|v| v.clone()).unwrap_or_default()
    }

    fn saw_view(&self, answer: &Response) {
        if let Ok(mut view) = self.view.lock() {
            view.count += 1;
            view.etag = etag_of(answer);
        }
    }

    fn endpoints(&self) -> Vec<Endpoint> {
        match self.endpoints.read() {
            Ok(e) => e.clone(),
            Err(_) => self.configured.clone(),
        }
    }

    /// The gateway URL tried first (the last one that answered).
    pub fn current_url(&self) -> String {
        let endpoints = self.endpoints();
        endpoints[self.preferred.load(Ordering::Relaxed) % endpoints.len()]
            .url
            .clone()
    }

    /// The gateway at `url` is tried first from now on (`i`: its index in the list the
    /// caller went through, which a concurrent [`Self::learn`] may have replaced).
    fn prefer(&self, url: &str, i: usize) {
        let at = match self.endpoints.read() {
            Ok(e) => e.iter().position(|e| e.url == url).unwrap_or(i),
            Err(_) => i,
        };
        self.preferred.store(at, Ordering::Relaxed);
    }

    /// The gateways tried, in order.
    pub fn gateway_urls(&self) -> Vec<String> {
        self.endpoints().into_iter().map(|e| e.url).collect()
    }

    /// Takes the group's gateways (`X-Slapos-Gateways`) as the ones to try first, the
    /// configured ones behind them; the gateway that answered stays preferred. Only from
    /// a gateway whose certificate was verified against the CA (`from_https`), and only
    /// https gateways, which are verified the same way: a list cannot lead the node to a
    /// gateway it would not trust, nor to plain HTTP.
    fn learn(&self, header: &str, answered: &str, from_https: bool) {
        if !self.verified || !from_https {
            return;
        }
        let mut next: Vec<Endpoint> = header
            .split_whitespace()
            .filter_map(|u| Endpoint::parse(u).ok())
            .filter(|e| e.tls)
            .collect();
        if next.is_empty() {
            return;
        }
        let learned: Vec<String> = next.iter().map(|e| e.url.clone()).collect();
        for c in &self.configured {
            if next.iter().all(|e| e.url != c.url) {
                next.push(c.clone());
            }
        }
        let Ok(mut current) = self.endpoints.write() else {
            return;
        };
        if current
            .iter()
            .map(|e| &e.url)
            .eq(next.iter().map(|e| &e.url))
        {
            return;
        }
        let urls: Vec<&str> = next.iter().map(|e| e.url.as_str()).collect();
        tracing::info!(gateways = ?urls, "the group's gateways");
        let preferred = next.iter().position(|e| e.url == answered).unwrap_or(0);
        *current = next;
        self.preferred.store(preferred, Ordering::Relaxed);
        drop(current);
        if let Some(path) = &self.learned_file {
            let tmp = path.with_extension("gateways.tmp");
            let kept =
                std::fs::write(&tmp, learned.join(" ")).and_then(|_| std::fs::rename(&tmp, path));
            if let Err(e) = kept {
                tracing::warn!(path = %path.display(), error = %e, "cannot keep the group's gateways");
            }
        }
    }

    /// `GET <method>?query`: the body of a 200 answer.
    pub fn get(&self, method: &str, query: &[(&str, &str)]) -> Result<Vec<u8>, SlapError> {
        self.call(method, Request::get_query(method, query), None)
    }

    /// `POST <method>` with a form; `partition` adds the `X-SlapPartition` authorization
    /// header of partition-scoped calls.
    pub fn post(
        &self,
        method: &str,
        form: &[(&str, &str)],
        partition: Option<(&str, &str)>,
    ) -> Result<Vec<u8>, SlapError> {
        self.call(method, Request::post_form(method, form), partition)
    }

    /// `request` to each gateway in turn from the preferred one, until one answers with
    /// something other than a server error: its body when 2xx, else the error it means.
    fn call(
        &self,
        method: &str,
        request: Request,
        partition: Option<(&str, &str)>,
    ) -> Result<Vec<u8>, SlapError> {
        let answer = self.send(self.http()?, method, request, partition)?;
        classify(method, answer.status, answer.body)
    }

    /// [`Self::call`] through `http`, the answer whatever its status (but 5xx).
    fn send(
        &self,
        http: &BlockingClient,
        method: &str,
        request: Request,
        partition: Option<(&str, &str)>,
    ) -> Result<Response, SlapError> {
        let mut request = request.header("Accept", "*/*");
        if let Some((computer, partition)) = partition {
            request = request.header(
                "Authorization",
                format!(
                    "X-SlapPartition computer_id={computer}, computer_partition_id={partition}"
                ),
            );
        }
        let endpoints = self.endpoints();
        let n = endpoints.len();
        let first = self.preferred.load(Ordering::Relaxed) % n;
        let mut failures = Vec::new();
        for k in 0..n {
            let i = (first + k) % n;
            let endpoint = &endpoints[i];
            match http.send(endpoint, request.clone()) {
                Ok(answer) if is_server_error(answer.status) => {
                    failures.push(format!("{}: HTTP {}", endpoint.url, answer.status));
                }
                Ok(answer) => {
                    if k > 0 {
                        tracing::info!(gateway = %endpoint.url, "failed over to this gateway");
                    }
                    self.prefer(&endpoint.url, i);
                    if let Some(list) = answer.header("x-slapos-gateways") {
                        self.learn(list, &endpoint.url, endpoint.tls);
                    }
                    return Ok(answer);
                }
                // Not a gateway's fault: no other would take it either.
                Err(e @ (http_client::Error::BadRequest(_) | http_client::Error::BadUrl(_))) => {
                    return Err(SlapError::BadRequest {
                        method: method.into(),
                        message: e.to_string(),
                    });
                }
                Err(e) => failures.push(format!("{}: {e}", endpoint.url)),
            }
        }
        Err(SlapError::Unreachable(format!(
            "{method}: {}",
            failures.join("; ")
        )))
    }

    /// `getFullComputerInformation` (falling back to the legacy `getComputerInformation`
    /// on 404, as the reference does).
    pub fn full_computer_information(&self, computer_id: &str) -> Result<Computer, SlapError> {
        let query = [("computer_id", computer_id)];
        let http = self.http()?;
        let view = |method: &str| -> Result<Response, SlapError> {
            let answer = self.send(http, method, Request::get_query(method, &query), None)?;
            if (200..300).contains(&answer.status) {
                self.saw_view(&answer);
            }
            Ok(answer)
        };
        let mut answer = view("getFullComputerInformation")?;
        let mut method = "getFullComputerInformation";
        if answer.status == 404 {
            method = "getComputerInformation";
            answer = view(method)?;
        }
        let body = classify(method, answer.status, answer.body)?;
        Computer::decode(&body, &Limits::default()).map_err(|e| SlapError::BadAnswer {
            method: "getFullComputerInformation".into(),
            message: e.to_string(),
        })
    }

    /// A long poll of `computer_id`'s view (the gateways' protocol, issue 21):
    /// `getFullComputerInformation` with `If-None-Match: <etag>` and `Prefer: wait=<s>`.
    /// A gateway that versions views holds the request until the view differs from the
    /// one of `etag` (200, the view and its new ETag) or until the wait ends (304); one
    /// that does not answers the view at once, without an ETag. Failover as any call: the
    /// ETag is sent verbatim to whichever gateway answers (a gateway never answers a view
    /// older than the one the ETag names). The legacy `getComputerInformation` on 404.
    pub fn watch_computer(
        &self,
        computer_id: &str,
        etag: &str,
        wait: Duration,
    ) -> Result<Watched, SlapError> {
        let http = self.watch_http(wait)?;
        let query = [("computer_id", computer_id)];
        let poll = |method: &str| {
            let request = Request::get_query(method, &query)
                .header("If-None-Match", etag)
                .header("Prefer", format!("wait={}", wait.as_secs().max(1)));
            self.send(&http, method, request, None)
        };
        let mut method = "getFullComputerInformation";
        let mut answer = poll(method)?;
        if answer.status == 404 {
            method = "getComputerInformation";
            answer = poll(method)?;
        }
        if answer.status == 304 {
            return Ok(Watched::NotModified {
                etag: etag_of(&answer),
            });
        }
        let etag = etag_of(&answer);
        let body = classify(method, answer.status, answer.body)?;
        Ok(Watched::Changed { etag, body })
    }

    /// `supplySupply`: asks `computer_id` to install (`available`) or remove
    /// (`destroyed`) a release.
    pub fn supply(&self, url: &str, computer_id: &str, state: &str) -> Result<(), SlapError> {
        self.post(
            "supplySupply",
            &[("url", url), ("computer_id", computer_id), ("state", state)],
            None,
        )
        .map(|_| ())
    }

    /// `requestComputerPartition` as a person (an instance tree's root): `None` while the
    /// master has not allocated it yet (408). `filter` is the SLA (`computer_guid`, ...).
    pub fn request_instance(
        &self,
        software: &str,
        title: &str,
        parameters: &[(&str, &str)],
        filter: &[(&str, &str)],
        state: &str,
    ) -> Result<Option<SoftwareInstance>, SlapError> {
        self.request_typed_instance(software, "default", title, parameters, filter, state)
    }

    /// [`Self::request_instance`] of an instance of `software_type`.
    pub fn request_typed_instance(
        &self,
        software: &str,
        software_type: &str,
        title: &str,
        parameters: &[(&str, &str)],
        filter: &[(&str, &str)],
        state: &str,
    ) -> Result<Option<SoftwareInstance>, SlapError> {
        let method = "requestComputerPartition";
        let dict = |pairs: &[(&str, &str)]| {
            Value::Dict(
                pairs
                    .iter()
                    .map(|(k, v)| (Value::Str((*k).into()), Value::Str((*v).into())))
                    .collect(),
            )
        };
        let encode = |v: &Value| {
            marshal::encode(v).map_err(|e| SlapError::BadAnswer {
                method: method.into(),
                message: e.to_string(),
            })
        };
        let answer = self.post(
            method,
            &[
                ("software_release", software),
                ("partition_reference", title),
                ("partition_parameter_xml", &encode(&dict(parameters))?),
                ("filter_xml", &encode(&dict(filter))?),
                ("software_type", software_type),
                ("state", &encode(&Value::Str(state.into()))?),
                ("shared_xml", &encode(&Value::Bool(false))?),
            ],
            None,
        );
        match answer {
            Ok(body) => SoftwareInstance::decode(&body, &Limits::default())
                .map(Some)
                .map_err(|e| SlapError::BadAnswer {
                    method: method.into(),
                    message: e.to_string(),
                }),
            Err(SlapError::NotReady { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// `signComputerPartitionCertificate`: the certificate of the partition's own key,
    /// from its signing request (`csr`, PEM; the master names the identity) and the
    /// computer's `proof` (the CSR signed with its key, `register::proof`). `Ok(None)`:
    /// the gateway does not know the method (404: an older gateway or slapproxy).
    pub fn sign_partition_certificate(
        &self,
        computer_id: &str,
        partition_id: &str,
        csr: &str,
        proof: &str,
    ) -> Result<Option<SignedCertificate>, SlapError> {
        let method = "signComputerPartitionCertificate";
        let body = match self.post(
            method,
            &[
                ("computer_id", computer_id),
                ("computer_partition_id", partition_id),
                ("csr", csr),
                ("proof", proof),
            ],
            None,
        ) {
            Ok(body) => body,
            Err(SlapError::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(e),
        };
        let bad = |message: String| SlapError::BadAnswer {
            method: method.into(),
            message,
        };
        let answer: serde_json::Value =
            serde_json::from_slice(&body).map_err(|e| bad(e.to_string()))?;
        let certificate = answer["certificate"]
            .as_str()
            .filter(|c| !c.is_empty())
            .ok_or_else(|| bad("no certificate".into()))?
            .to_owned();
        Ok(Some(SignedCertificate {
            certificate,
            ca: answer["ca"].as_str().map(str::to_owned),
        }))
    }

    /// `getComputerPartitionCertificate`: (certificate, key) PEM texts (empty from
    /// slapproxy).
    pub fn partition_certificate(
        &self,
        computer_id: &str,
        partition_id: &str,
    ) -> Result<(String, String), SlapError> {
        let method = "getComputerPartitionCertificate";
        let body = self.get(
            method,
            &[
                ("computer_id", computer_id),
                ("computer_partition_id", partition_id),
            ],
        )?;
        let bad = |message: String| SlapError::BadAnswer {
            method: method.into(),
            message,
        };
        let value = marshal::decode(&body, &Limits::SMALL).map_err(|e| bad(e.to_string()))?;
        let Value::Dict(entries) = value else {
            return Err(bad("expected a dictionary".into()));
        };
        let field = |name: &str| {
            entries.iter().find_map(|(k, v)| match (k, v) {
                (Value::Str(k), Value::Str(v)) if k == name => Some(v.clone()),
                _ => None,
            })
        };
        Ok((
            field("certificate").unwrap_or_default(),
            field("key").unwrap_or_default(),
        ))
    }
}

/// What `signComputerPartitionCertificate` answers.
#[derive(Debug, Clone)]
pub struct SignedCertificate {
    pub certificate: String,
    /// The group's CA (PEM), when the master sends it.
    pub ca: Option<String>,
}

/// GET of any `http(s)://` URL (a release artifact): the body of a 200 answer. An
/// https:// server must chain to one of `cas` (PEM bundles); with none, https is refused
/// rather than left unverified.
pub fn get_url(url: &str, cas: &[std::path::PathBuf]) -> Result<Vec<u8>, SlapError> {
    let paths: Vec<&Path> = cas.iter().map(|p| p.as_path()).collect();
    let bundles = http_client::tls::read_bundles(&paths).map_err(tls_error)?;
    get_url_trusting(url, &bundles)
}

/// [`get_url`] with the certificate authorities' PEM bundles already read (so that it
/// can run where those files are not readable: as the software user).
pub fn get_url_trusting(url: &str, cas: &[Vec<u8>]) -> Result<Vec<u8>, SlapError> {
    let endpoint = Endpoint::parse(url).map_err(|_| SlapError::BadUrl(url.to_owned()))?;
    let tls = if endpoint.tls {
        if cas.is_empty() {
            return Err(SlapError::Tls(format!(
                "{url}: no certificate authority to verify it with (install ca-certificates or set master_ca_file)"
            )));
        }
        Some(Arc::new(
            http_client::tls::verified(cas, None).map_err(tls_error)?,
        ))
    } else {
        None
    };
    SlapClient::build(vec![endpoint], tls).call(url, Request::get(""), None)
}

/// The answer's ETag, verbatim, when it is one this client can send back.
fn etag_of(answer: &Response) -> Option<String> {
    answer
        .header("etag")
        .filter(|e| !e.is_empty() && e.len() <= MAX_ETAG)
        .filter(|e| e.bytes().all(|b| (0x21..0x7f).contains(&b)))
        .map(str::to_owned)
}

fn is_server_error(status: u16) -> bool {
    matches!(status, 500 | 502 | 503 | 504 | 520 | 523 | 524 | 526)
}

fn classify(method: &str, status: u16, body: Vec<u8>) -> Result<Vec<u8>, SlapError> {
    let text = || {
        let s = String::from_utf8_lossy(&body);
        s.chars().take(2000).collect::<String>()
    };
    match status {
        200..=299 => Ok(body),
        404 => Err(SlapError::NotFound {
            method: method.into(),
            body: text(),
        }),
        408 => Err(SlapError::NotReady {
            method: method.into(),
        }),
        _ => Err(SlapError::Refused {
            method: method.into(),
            status,
            body: text(),
        }),
    }
}

/// A client TLS configuration that verifies servers against `ca` and presents
/// `identity` (certificate, key) when given: what a SLAP client of a gateway under mTLS
/// needs, for other HTTP clients of ours (the chaos workload).
pub fn client_tls_config(
    identity: Option<(&Path, &Path)>,
    ca: &Path,
) -> Result<ClientConfig, SlapError> {
    http_client::tls::verified_by_file(ca, identity).map_err(tls_error)
}

/// The gateways' TLS: verified against `ca` when configured; otherwise not verified, as
/// the reference client never verifies (a warning says so).
fn tls_config(
    identity: Option<(&Path, &Path)>,
    ca: Option<&Path>,
) -> Result<ClientConfig, SlapError> {
    if let Some(ca) = ca {
        return client_tls_config(identity, ca);
    }
    tracing::warn!(
        "https master without master_ca_file: the gateway's certificate is not verified"
    );
    let identity = identity
        .map(|(cert, key)| http_client::tls::Identity::from_pem_files(cert, key))
        .transpose()
        .map_err(tls_error)?;
    http_client::tls::unverified(identity).map_err(tls_error)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::TcpListener;

    /// A one-shot HTTP server answering `answer` to the first request; returns its URL.
    fn serve_once(answer: &'static str) -> (String, std::thread::JoinHandle<String>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/", listener.local_addr().unwrap());
        let handle = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let mut buf = vec![0u8; 65536];
            let n = s.read(&mut buf).unwrap();
            s.write_all(answer.as_bytes()).unwrap();
            String::from_utf8_lossy(&buf[..n]).into_owned()
        });
        (url, handle)
    }

    #[test]
    fn posts_a_form_with_the_partition_header() {
        let (url, server) = serve_once("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
        let client = SlapClient::new(&[url], None, None).unwrap();
        let body = client
            .post(
                "startedComputerPartition",
                &[("computer_id", "COMP 1"), ("x", "a&b=c")],
                Some(("COMP 1", "slappart0")),
            )
            .unwrap();
        assert_eq!(body, b"ok");
        let request = server.join().unwrap();
        assert!(request.starts_with("POST /startedComputerPartition HTTP/1.1\r\n"));
        assert!(request.contains(
            "Authorization: X-SlapPartition computer_id=COMP 1, computer_partition_id=slappart0"
        ));
        assert!(request.ends_with("computer_id=COMP+1&x=a%26b%3Dc"));
    }

    #[test]
    fn fails_over_to_the_next_gateway_and_remembers_it() {
        let dead = TcpListener::bind("127.0.0.1:0").unwrap();
        let dead_url = format!("http://{}/", dead.local_addr().unwrap());
        drop(dead);
        let (url, server) =
            serve_once("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n");
        let client = SlapClient::new(&[dead_url, url.clone()], None, None).unwrap();
        assert_eq!(client.get("getHateoasUrl", &[]).unwrap(), b"ok");
        server.join().unwrap();
        assert_eq!(client.current_url(), url);
    }

    #[test]
    fn learns_the_group_s_gateways_only_from_verified_https_gateways() {
        // Over plain HTTP (nothing verified) a list is ignored.
        let (configured, server) = serve_once(
            "HTTP/1.1 200 OK\r\nX-Slapos-Gateways: https://127.0.0.1:9/\r\n\
             Content-Length: 2\r\n\r\nok",
        );
        let client = SlapClient::new(std::slice::from_ref(&configured), None, None).unwrap();
        assert_eq!(client.get("getHateoasUrl", &[]).unwrap(), b"ok");
        server.join().unwrap();
        assert_eq!(client.gateway_urls(), vec![configured.clone()]);

        // From a verified https gateway: the group's https gateways first (plain HTTP ones
        // and garbage left out), the configured one behind them, the one that answered
        // still preferred.
        let mut client = SlapClient::new(std::slice::from_ref(&configured), None, None).unwrap();
        client.verified = true;
        client.learn(
            "https://[::1]:9/ http://127.0.0.1:9/ not-a-url https://127.0.0.1:9/",
            &configured,
            true,
        );
        assert_eq!(
            client.gateway_urls(),
            vec![
                "https://[::1]:9/".to_string(),
                "https://127.0.0.1:9/".to_string(),
                configured.clone()
            ]
        );
        assert_eq!(client.current_url(), configured);
        // not from a gateway reached over plain HTTP
        client.learn("https://[::2]:9/", &configured, false);
        assert_eq!(client.gateway_urls().len(), 3);
    }

    #[test]
    fn statuses_map_to_errors() {
        let (url, _s) = serve_once("HTTP/1.1 404 Not Found\r\nContent-Length: 3\r\n\r\nno!");
        let client = SlapClient::new(&[url], None, None).unwrap();
        assert!(matches!(
            client.get("registerComputerPartition", &[]),
            Err(SlapError::NotFound { .. })
        ));
        let (url, _s) = serve_once("HTTP/1.1 503 Unavailable\r\nContent-Length: 0\r\n\r\n");
        let client = SlapClient::new(&[url], None, None).unwrap();
        assert!(client.get("x", &[]).unwrap_err().is_unreachable());
    }
}
