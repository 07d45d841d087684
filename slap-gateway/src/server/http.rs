//! The HTTP side of the gateway: routing `<prefix>/<methodName>` to the SLAP layer,
//! decoding query strings and form bodies (bounded), and answering with the status,
//! content type and body the SLAP layer rendered.

use std::future::poll_fn;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes, HttpBody};
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, Method as HttpMethod, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use tracing::field::Empty;
use tracing::Instrument;

use super::app::{App, GATEWAYS_HEADER};
use super::views;
use crate::jsonrpc;
use crate::slap::forms::{self, SlapCall};
use crate::slap::{render, Endpoint, Method, SlapResponse};

/// How long a client may take to send its request body.
const BODY_TIMEOUT: Duration = Duration::from_secs(60);
/// A body over the limit is still read (and thrown away) up to this many times the
/// limit, so that a client that sends it all before reading gets its 413 instead of a
/// broken connection; beyond, the connection is closed after the answer.
const DRAIN_FACTOR: usize = 4;

/// The gateway's routes: `GET /metrics`, `GET /healthz`, the releases it serves
/// (`/software/...`, see `releases.rs`), the web portal (`/portal/...`), and every SLAP
/// method under the prefix.
pub fn router(app: Arc<App>) -> Router {
    let prefix = app.prefix.clone();
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route(
            &format!("{prefix}/software/blob/{{sha256}}"),
            axum::routing::head(super::releases::has_blob).put(super::releases::put_blob),
        )
        .route(
            &format!("{prefix}/software/{{release}}/{{*name}}"),
            get(super::releases::get),
        )
        // The web portal (`slapos-portal`): its pages read and write through this
        // gateway's master paths, checked by the same table (`portal.rs`).
        .route(
            &format!("{}/", slapos_portal::BASE),
            get(|| async {
                axum::response::Redirect::to(&format!("{}/sign-in", slapos_portal::BASE))
            }),
        )
        .nest(
            slapos_portal::BASE,
            slapos_portal::router(
                Arc::new(super::portal::PortalBackend { app: app.clone() }),
                slapos_portal::PortalConfig::default(),
            ),
        )
        .fallback(slap)
        .with_state(app)
}

async fn metrics(State(app): State<Arc<App>>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        app.metrics.render(),
    )
        .into_response()
}

async fn healthz() -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        "ok\n",
    )
        .into_response()
}

fn respond(r: SlapResponse) -> Response {
    let mut response = Response::new(Body::from(r.body));
    *response.status_mut() =
        StatusCode::from_u16(r.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    if r.status != 304 {
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(r.content_type),
        );
    }
    response
}

/// The headers a node view's answer adds: its `ETag`, and `Preference-Applied` when
/// the request was held as `Prefer: wait=N` asked.
#[derive(Debug, Default)]
struct ViewHeaders {
    etag: Option<String>,
    waited: Option<Duration>,
}

impl ViewHeaders {
    fn apply(&self, response: &mut Response) {
        if let Some(v) = self
            .etag
            .as_deref()
            .and_then(|e| HeaderValue::from_str(e).ok())
        {
            response.headers_mut().insert(header::ETAG, v);
        }
        if let Some(w) = self.waited {
            if let Ok(v) = HeaderValue::from_str(&format!("wait={}", w.as_secs())) {
                response.headers_mut().insert("preference-applied", v);
            }
        }
    }
}

/// `getFullComputerInformation`: the view, with its version as `ETag`. With
/// `If-None-Match` of the current version: 304; with `Prefer: wait=N` as well, held until
/// the view changes (200) or the wait ends (304). See `views.rs`.
async fn node_view(
    app: &App,
    query: &forms::Query,
    computer: &str,
    conditions: views::Conditions,
    extra: &mut ViewHeaders,
) -> SlapResponse {
    let (mut held, deadline) = match (conditions.have, conditions.wait) {
        // Registered before the first read: a change applied after it wakes us.
        (Some(_), Some(wait)) => (
            Some(app.views.hold(computer)),
            Some(tokio::time::Instant::now() + views::with_jitter(wait)),
        ),
        _ => (None, None),
    };
    let mut at_least = conditions.have.unwrap_or(0);
    let mut holding = None;
    loop {
        // The state read lives in this block only, not across the wait: a held request
        // costs its connection, not a copy of its computer (50,000 of them wait on one
        // gateway). The read itself is boxed: a held request keeps its handler's future
        // for the whole wait, and a future is as large as its largest await.
        let have = {
            let view = match Box::pin(app.masters.read_view(computer, at_least)).await {
                Ok(v) => v,
                Err(e) => return SlapResponse::text(e.status(), e.to_string()),
            };
            let known = view.state.computer(computer).is_ok();
            match conditions.have {
                // Not reached: a version no replica has (not one this group gave).
                Some(have) if view.version <= have && known && view.reached => have,
                _ => {
                    if holding.is_some() {
                        app.metrics.poll_woken();
                    }
                    let answer = render::query(&app.ctx, &view.state, query);
                    if answer.status == 200 {
                        extra.etag = Some(views::etag(view.version));
                    }
                    return answer;
                }
            }
        };
        // Unchanged since the version the client holds (which it keeps: never older).
        let wake = match (held.as_mut(), deadline) {
            (Some(held), Some(deadline)) => {
                if holding.is_none() {
                    holding = Some(app.metrics.hold());
                    extra.waited = conditions.wait;
                }
                held.wait(deadline).await
            }
            _ => views::Wake::Timeout,
        };
        match wake {
            views::Wake::Changed(index) => {
                app.metrics.poll_wakeup();
                at_least = at_least.max(index);
            }
            views::Wake::Reset(index) => {
                app.metrics.poll_wakeup();
                tokio::time::sleep(views::random_part(views::RESET_SPREAD)).await;
                at_least = at_least.max(index);
            }
            views::Wake::Timeout | views::Wake::Closing | views::Wake::Gateways => {
                app.metrics.not_modified();
                extra.etag = Some(views::etag(have));
                return SlapResponse {
                    status: 304,
                    content_type: crate::slap::CONTENT_TYPE_TEXT,
                    body: Vec::new(),
                };
            }
        }
    }
}

impl App {
    /// The SLAP method a path names: `<prefix>/<methodName>` (a trailing `/` tolerated).
    fn endpoint(&self, path: &str) -> Option<Endpoint> {
        let rest = path.strip_prefix(self.prefix.as_str())?;
        let name = rest.strip_prefix('/')?;
        let name = name.strip_suffix('/').unwrap_or(name);
        Endpoint::ALL.iter().copied().find(|e| e.name() == name)
    }
}

impl App {
    /// The JSON-RPC method a path names: `<prefix>/slapos.<...>`.
    fn jsonrpc_name(&self, path: &str) -> Option<String> {
        let rest = path.strip_prefix(self.prefix.as_str())?;
        let name = rest.strip_prefix('/')?;
        let name = name.strip_suffix('/').unwrap_or(name);
        jsonrpc::is_jsonrpc_name(name).then(|| name.to_string())
    }
}

/// A JSON-RPC v0 call: checks, bounded JSON body, then reads or writes through the
/// masters. Every answer, errors included, is JSON.
async fn handle_jsonrpc(app: Arc<App>, name: String, request: Request) -> SlapResponse {
    let (parts, body) = request.into_parts();
    let accept = match parts.headers.get(header::ACCEPT).map(|v| v.to_str()) {
        None => None,
        Some(Ok(v)) => Some(v),
        Some(Err(_)) => {
            return jsonrpc::JsonError::new(400, "malformed Accept header").to_response()
        }
    };
    let jname = match jsonrpc::check_http(&name, parts.method.as_str(), accept) {
        Ok(n) => n,
        Err(e) => return e.to_response(),
    };
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let bytes = match read_body(body, declared, app.max_body_bytes).await {
        Ok(b) => b,
        Err(e) => {
            return jsonrpc::JsonError::new(e.status, e.body_text().into_owned()).to_response()
        }
    };
    let authorization = match parts.headers.get(header::AUTHORIZATION).map(|v| v.to_str()) {
        None => None,
        Some(Ok(v)) => Some(v),
        Some(Err(_)) => {
            return jsonrpc::JsonError::new(400, "malformed Authorization header: not ASCII text")
                .to_response()
        }
    };
    // With client certificates the caller is the certificate's identity and the table
    // of `authz.rs` applies, as to the XML endpoints.
    let caller = match super::authz::caller_of(&app, &parts) {
        Ok(None) => None,
        Ok(Some(Some(caller))) => Some(caller),
        Ok(Some(None)) => {
            return jsonrpc::JsonError::new(403, "forbidden: a client certificate is required")
                .to_response()
        }
        Err(refusal) => return refusal,
    };
    let ctx = context_for(&app, caller.as_ref());
    let mut call = match jsonrpc::parse(ctx.as_ref(), jname, &bytes, authorization) {
        Ok(c) => c,
        Err(e) => return e.to_response(),
    };
    if let Some(who) = &caller {
        match super::authz::check_jsonrpc(who, &mut call) {
            Err(why) => {
                return jsonrpc::JsonError::new(403, format!("forbidden: {why}")).to_response()
            }
            Ok(super::authz::JsonNeeds::OwnerOf(computer)) => {
                let owner = match app.masters.computer_owner(&computer).await {
                    Ok(o) => o,
                    Err(e) => {
                        return jsonrpc::JsonError::new(e.status(), e.to_string()).to_response()
                    }
                };
                if let Err(refusal) = super::authz::owner_check(who, &computer, owner.as_deref()) {
                    return jsonrpc::JsonError::new(
                        refusal.status,
                        refusal.body_text().into_owned(),
                    )
                    .to_response();
                }
            }
            Ok(_) => {}
        }
    }
    // Writes in their own task, as the XML endpoints' (see `handle`).
    let span = tracing::Span::current();
    let task = tokio::spawn(
        async move { jsonrpc::remote::serve(&app.masters, call, caller.as_ref()).await }
            .instrument(span),
    );
    task.await
        .unwrap_or_else(|e| jsonrpc::JsonError::internal(format!("interrupted: {e}")).to_response())
}

/// Every request that is not `/metrics` nor `/healthz`.
async fn slap(State(app): State<Arc<App>>, request: Request) -> Response {
    let started = Instant::now();
    let _in_flight = app.metrics.start();
    let endpoint = app.endpoint(request.uri().path());
    let span = tracing::info_span!(
        "slap",
        endpoint = endpoint.map_or("-", Endpoint::name),
        computer_id = Empty,
        partition_id = Empty,
        request_id = Empty,
        status = Empty,
    );
    let jsonrpc = app.jsonrpc_name(request.uri().path());
    let mut extra = ViewHeaders::default();
    let registration = request
        .uri()
        .path()
        .strip_prefix(app.prefix.as_str())
        .filter(|p| {
            matches!(
                *p,
                "/registerComputerWithToken"
                    | "/enrollServerWithToken"
                    | "/createComputerToken"
                    | "/renewCertificate"
                    | "/signComputerPartitionCertificate"
            )
        })
        .map(str::to_owned);
    let answer = match endpoint {
        None if registration.is_some() => {
            Box::pin(
                handle_registration(app.clone(), registration.unwrap_or_default(), request)
                    .instrument(span.clone()),
            )
            .await
        }
        None if jsonrpc.is_some() => {
            let name = jsonrpc.clone().unwrap_or_default();
            Box::pin(handle_jsonrpc(app.clone(), name, request).instrument(span.clone())).await
        }
        None => SlapResponse::text(
            404,
            format!(
                "unknown SLAP method: {} (methods live at {}/<methodName>)",
                request.uri().path(),
                app.prefix
            ),
        ),
        Some(endpoint) => {
            handle(app.clone(), endpoint, request, &mut extra)
                .instrument(span.clone())
                .await
        }
    };
    let status = answer.status;
    let elapsed = started.elapsed();
    // A held long poll's time is its wait, not the gateway's: it would drown the
    // latency of the method in the histogram.
    if extra.waited.is_some() {
        app.metrics.request_held(endpoint, status);
    } else {
        app.metrics.request(endpoint, status, elapsed);
    }
    span.record("status", status);
    span.in_scope(|| {
        if status >= 500 {
            tracing::warn!(status, ms = elapsed.as_millis() as u64, message = %answer.body_text(), "answered");
        } else {
            tracing::debug!(status, ms = elapsed.as_millis() as u64, "answered");
        }
    });
    let allow = (status == 405).then(|| match endpoint.map(Endpoint::method) {
        Some(Method::Post) => "POST",
        _ if jsonrpc.is_some() => "POST",
        _ => "GET",
    });
    let mut response = respond(answer);
    extra.apply(&mut response);
    if let Some(gateways) = app.gateways.get() {
        response.headers_mut().insert(GATEWAYS_HEADER, gateways);
    }
    if let Some(allow) = allow {
        response
            .headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static(allow));
    }
    response
}

/// The token registration calls (POST, form body).
async fn handle_registration(app: Arc<App>, path: String, request: Request) -> SlapResponse {
    let (parts, body) = request.into_parts();
    if parts.method != HttpMethod::POST {
        return SlapResponse::text(405, format!("{path} is called with POST"));
    }
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let fields = match read_body(body, declared, app.max_body_bytes).await {
        Ok(bytes) => match decode_form(&bytes) {
            Ok(f) => f,
            Err(message) => return SlapResponse::text(400, message),
        },
        Err(e) => return e,
    };
    let caller = match super::authz::caller_of(&app, &parts) {
        Ok(c) => c,
        Err(refusal) => return refusal,
    };
    match (path.as_str(), caller) {
        // Only a gateway that checks certificates registers nodes.
        (_, None) => SlapResponse::text(
            404,
            format!("{path}: this gateway takes no client certificates"),
        ),
        ("/registerComputerWithToken", _) => super::register::register(&app, &fields).await,
        ("/enrollServerWithToken", _) => super::register::enroll(&app, &fields).await,
        ("/renewCertificate", Some(caller)) => {
            super::register::renew(&app, caller.as_ref(), &fields).await
        }
        ("/signComputerPartitionCertificate", Some(caller)) => {
            super::register::sign_partition(&app, caller.as_ref(), &fields).await
        }
        (_, Some(caller)) => super::register::create_token(&app, caller.as_ref(), &fields).await,
    }
}

/// The SLAP context of one request: a person caller requests as themselves; any other
/// certificate stands for its identity (`computer:C` ...), never for the configured
/// `[slap] person` nor for an admin.
fn context_for<'a>(
    app: &'a App,
    caller: Option<&super::authz::Caller>,
) -> std::borrow::Cow<'a, crate::slap::SlapContext> {
    let ctx = &app.ctx;
    match caller {
        Some(caller) => std::borrow::Cow::Owned(crate::slap::SlapContext {
            person: caller
                .person()
                .map_or_else(|| caller.identity().common_name(), str::to_owned),
            admin: caller.is_admin(),
            ..ctx.clone()
        }),
        // Without certificates: the configured person, an admin if the group says so.
        None if app.admins.contains(&ctx.person) => {
            std::borrow::Cow::Owned(crate::slap::SlapContext {
                admin: true,
                ..ctx.clone()
            })
        }
        None => std::borrow::Cow::Borrowed(ctx),
    }
}

/// What [`prepare`] leaves to do once the request is read and checked.
enum Prepared {
    Answer(SlapResponse),
    /// A node view, possibly held (`node_view`).
    NodeView {
        query: forms::Query,
        computer: String,
        conditions: views::Conditions,
    },
}

/// A SLAP method. A node view's long poll is held here, after the request was read and
/// checked in a boxed future of its own ([`prepare`]): what stays for the whole wait is
/// the small future of `node_view`, not the request nor the futures of the other paths.
async fn handle(
    app: Arc<App>,
    endpoint: Endpoint,
    request: Request,
    extra: &mut ViewHeaders,
) -> SlapResponse {
    match Box::pin(prepare(app.clone(), endpoint, request)).await {
        Prepared::Answer(answer) => answer,
        Prepared::NodeView {
            query,
            computer,
            conditions,
        } => node_view(&app, &query, &computer, conditions, extra).await,
    }
}

/// Reads and checks a SLAP call and answers it, except a node view ([`handle`]).
async fn prepare(app: Arc<App>, endpoint: Endpoint, request: Request) -> Prepared {
    let (parts, body) = request.into_parts();
    let expected = match endpoint.method() {
        Method::Get => HttpMethod::GET,
        Method::Post => HttpMethod::POST,
    };
    if parts.method != expected {
        return Prepared::Answer(SlapResponse::text(
            405,
            format!("{endpoint} is called with {expected}, not {}", parts.method),
        ));
    }
    let fields = match endpoint.method() {
        Method::Get => decode_form(parts.uri.query().unwrap_or("").as_bytes()),
        Method::Post => {
            if let Some(ct) = parts.headers.get(header::CONTENT_TYPE) {
                let mime = ct
                    .to_str()
                    .unwrap_or("")
                    .split(';')
                    .next()
                    .unwrap_or("")
                    .trim();
                if !mime.eq_ignore_ascii_case("application/x-www-form-urlencoded") {
                    return Prepared::Answer(SlapResponse::text(
                        415,
                        format!(
                            "{endpoint} takes an application/x-www-form-urlencoded body, not '{}'",
                            String::from_utf8_lossy(ct.as_bytes())
                        ),
                    ));
                }
            }
            let declared = parts
                .headers
                .get(header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok());
            match read_body(body, declared, app.max_body_bytes).await {
                Ok(bytes) => decode_form(&bytes),
                Err(e) => return Prepared::Answer(e),
            }
        }
    };
    let fields = match fields {
        Ok(f) => f,
        Err(message) => return Prepared::Answer(SlapResponse::text(400, message)),
    };
    let span = tracing::Span::current();
    if let Some(c) = field(&fields, &["computer_id", "computer_reference"]) {
        span.record("computer_id", c);
    }
    if let Some(p) = field(
        &fields,
        &["computer_partition_id", "computer_partition_reference"],
    ) {
        span.record("partition_id", p);
    }
    let authorization = match parts.headers.get(header::AUTHORIZATION).map(|v| v.to_str()) {
        None => None,
        Some(Ok(v)) => Some(v),
        Some(Err(_)) => {
            return Prepared::Answer(SlapResponse::text(
                400,
                "malformed Authorization header: not ASCII text",
            ))
        }
    };
    // With client certificates the caller is who the certificate names (persons request
    // as themselves); without, the configured `[slap] person` (proxy mode).
    let caller = match super::authz::caller_of(&app, &parts) {
        Ok(c) => c,
        Err(refusal) => return Prepared::Answer(refusal),
    };
    let ctx = context_for(&app, caller.as_ref().and_then(Option::as_ref));
    let ctx = ctx.as_ref();
    let call = match forms::parse(ctx, endpoint, &fields, authorization) {
        Ok(call) => call,
        Err(e) => return Prepared::Answer(e.to_response()),
    };
    match &caller {
        None => {}
        Some(None) => {
            return Prepared::Answer(SlapResponse::text(
                403,
                "forbidden: the client certificate names no identity",
            ))
        }
        Some(Some(who)) => match super::authz::check(who, &call) {
            Err(refusal) => return Prepared::Answer(refusal),
            Ok(super::authz::Needs::Nothing) => {}
            Ok(super::authz::Needs::OwnerOf(computer)) => {
                let owner = match app.masters.computer_owner(&computer).await {
                    Ok(o) => o,
                    Err(e) => {
                        return Prepared::Answer(SlapResponse::text(e.status(), e.to_string()))
                    }
                };
                if let Err(refusal) = super::authz::owner_check(who, &computer, owner.as_deref()) {
                    return Prepared::Answer(refusal);
                }
            }
        },
    }
    Prepared::Answer(match call {
        SlapCall::Answer(response) => response,
        // With certificates, a partition's own certificate comes from the group's
        // authority (slapproxy's answer, empty strings, otherwise).
        SlapCall::Query(crate::slap::forms::Query::PartitionCertificate {
            computer,
            partition,
        }) if caller.is_some() => {
            match app
                .masters
                .partition_certificate(&computer, &partition)
                .await
            {
                Ok((cert, key)) => render::certificate_pair(&cert, &key),
                Err(e) => SlapResponse::text(e.status(), e.to_string()),
            }
        }
        SlapCall::Query(crate::slap::forms::Query::Computer { computer }) => {
            return Prepared::NodeView {
                query: crate::slap::forms::Query::Computer {
                    computer: computer.clone(),
                },
                conditions: views::Conditions::of(&parts.headers),
                computer,
            }
        }
        SlapCall::Query(query) => match app.masters.read(&query).await {
            Ok(state) => render::query(&app.ctx, &state, &query),
            Err(e) => SlapResponse::text(e.status(), e.to_string()),
        },
        SlapCall::Write(write) => {
            if let slapos_domain::Op::FormatComputer { computer, .. } = &write.op {
                span.record("computer_id", computer.as_str());
            }
            // In its own task: a client that hangs up does not cut a write in the middle
            // of its retries (it is applied or not, and its lane stays consistent).
            let task = tokio::spawn(
                async move {
                    match app.masters.write(write.op.clone()).await {
                        Ok(w) => render::write(&w.state, &write, &w.outcome),
                        Err(e) => SlapResponse::text(e.status(), e.to_string()),
                    }
                }
                .instrument(span),
            );
            task.await.unwrap_or_else(|e| {
                SlapResponse::text(500, format!("the write was interrupted: {e}"))
            })
        }
    })
}

fn field<'a>(fields: &'a [(String, String)], names: &[&str]) -> Option<&'a str> {
    names
        .iter()
        .find_map(|n| fields.iter().find(|(k, _)| k == n).map(|(_, v)| v.as_str()))
}

/// Reads a request body of at most `max` bytes. Over it: 413 (after draining a bounded
/// excess, see [`DRAIN_FACTOR`]).
async fn read_body(
    mut body: Body,
    declared: Option<u64>,
    max: usize,
) -> Result<Bytes, SlapResponse> {
    let too_large = |size: String| {
        SlapResponse::text(
            413,
            format!("request body of {size} bytes is over the limit of {max} bytes"),
        )
    };
    let cap = max.saturating_mul(DRAIN_FACTOR);
    if let Some(n) = declared {
        if n > cap as u64 {
            return Err(too_large(n.to_string()));
        }
    }
    let read = async {
        let mut buf = Vec::with_capacity(declared.map_or(0, |n| (n as usize).min(max)));
        let mut total = 0usize;
        while let Some(frame) = poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await {
            let frame = frame.map_err(|e| {
                SlapResponse::text(400, format!("cannot read the request body: {e}"))
            })?;
            if let Ok(data) = frame.into_data() {
                total += data.len();
                if total > cap {
                    return Err(too_large(format!("more than {total}")));
                }
                if total <= max {
                    buf.extend_from_slice(&data);
                }
            }
        }
        if total > max {
            return Err(too_large(total.to_string()));
        }
        Ok(Bytes::from(buf))
    };
    match tokio::time::timeout(BODY_TIMEOUT, read).await {
        Ok(r) => r,
        Err(_) => Err(SlapResponse::text(
            408,
            format!(
                "the request body did not arrive within {} s",
                BODY_TIMEOUT.as_secs()
            ),
        )),
    }
}

/// Decodes `application/x-www-form-urlencoded` pairs (a query string or a form body) the
/// way werkzeug does: `&`-separated, split on the first `=` (none: empty value), `+` is a
/// space, `%XX` escapes decoded (malformed ones kept as they are), empty items skipped.
/// Names and values must be UTF-8 once decoded.
pub fn decode_form(bytes: &[u8]) -> Result<Vec<(String, String)>, String> {
    let decode = |part: &[u8], what: &str, index: usize| -> Result<String, String> {
        let plus: Vec<u8> = part
            .iter()
            .map(|&b| if b == b'+' { b' ' } else { b })
            .collect();
        percent_encoding::percent_decode(&plus)
            .decode_utf8()
            .map(|s| s.into_owned())
            .map_err(|_| format!("form item {index}: the {what} is not UTF-8 once decoded"))
    };
    bytes
        .split(|&b| b == b'&')
        .filter(|item| !item.is_empty())
        .enumerate()
        .map(|(i, item)| {
            let (name, value) = match item.iter().position(|&b| b == b'=') {
                Some(at) => (&item[..at], &item[at + 1..]),
                None => (item, &b""[..]),
            };
            Ok((decode(name, "name", i)?, decode(value, "value", i)?))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A held long poll keeps its handler's future for its whole wait, tens of thousands
    /// at once on one gateway: that future stays small (the request, its checks and the
    /// reads are in futures boxed apart, dropped before the wait): 2.1 KiB, where it was 6 KiB.
    #[tokio::test]
    async fn a_held_node_view_keeps_a_small_future() {
        let metrics = Arc::new(super::super::Metrics::default());
        let masters = super::super::Masters::new(
            &["127.0.0.1:1".to_owned()],
            Duration::from_secs(1),
            Duration::from_secs(1),
            4,
            2000,
            metrics.clone(),
        );
        let app = Arc::new(App {
            ctx: crate::slap::SlapContext {
                person: "user".into(),
                partition_header: true,
                default_computer: None,
                software_products: Vec::new(),
                run_id: None,
                admin: false,
                limits: crate::slap::FieldLimits::DEFAULT,
            },
            prefix: String::new(),
            max_body_bytes: 1024,
            masters,
            metrics,
            revoked: None,
            admins: Default::default(),
            gateways: Default::default(),
            views: Default::default(),
            releases: None,
        });
        let request = || {
            Request::builder()
                .uri("/getFullComputerInformation?computer_id=C")
                .body(Body::empty())
                .expect("a request")
        };
        let held = std::mem::size_of_val(&slap(State(app.clone()), request()));
        assert!(held <= 3072, "the handler's future is {held} bytes");
    }

    fn pairs(v: &[(&str, &str)]) -> Vec<(String, String)> {
        v.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn decodes_forms_like_werkzeug() {
        assert_eq!(
            decode_form(b"computer_id=COMP-1&url=http%3A%2F%2Fx%2Fa+b.cfg&&flag&e=").unwrap(),
            pairs(&[
                ("computer_id", "COMP-1"),
                ("url", "http://x/a b.cfg"),
                ("flag", ""),
                ("e", ""),
            ])
        );
        assert_eq!(decode_form(b"").unwrap(), pairs(&[]));
        assert_eq!(
            decode_form(b"a=%zz%2&b=1=2").unwrap(),
            pairs(&[("a", "%zz%2"), ("b", "1=2")])
        );
        assert_eq!(
            decode_form("x=%C3%A9t%C3%A9".as_bytes()).unwrap(),
            pairs(&[("x", "été")])
        );
        let err = decode_form(b"ok=1&bad=%ff").unwrap_err();
        assert!(err.contains("form item 1: the value is not UTF-8"), "{err}");
    }
}
