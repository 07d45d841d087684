//! The routes: who is signed in, CSRF checks, and each page's reads and writes through
//! the [`Backend`].

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::{Form, Path, Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use maud::Markup;
use tokio_stream::StreamExt;

use crate::auth::{self, CSRF_COOKIE, SESSION_COOKIE};
use crate::pages::{self, Frame};
use crate::schema;
use crate::{
    Backend, BackendError, Portal, PortalConfig, Principal, Service, ServiceRequest, SignedInBy,
    BASE,
};

type Shared<B> = Arc<Portal<B>>;
type Fields = BTreeMap<String, String>;

/// The portal's routes, to be nested under [`BASE`] by the gateway.
pub fn router<B: Backend, S: Clone + Send + Sync + 'static>(
    backend: Arc<B>,
    config: PortalConfig,
) -> Router<S> {
    let portal = Arc::new(Portal {
        backend,
        limiter: auth::Limiter::new(
            config.sign_in_burst,
            Duration::from_secs(config.sign_in_refill_secs),
        ),
        config,
        hashing: tokio::sync::Semaphore::new(2),
    });
    Router::new()
        .route("/", get(home::<B>))
        .route("/static/portal.css", get(css))
        .route("/static/portal.js", get(js))
        .route("/sign-in", get(sign_in_page::<B>).post(sign_in::<B>))
        .route("/sign-out", post(sign_out::<B>))
        .route("/services", get(services::<B>))
        .route("/services/{id}", get(service::<B>))
        .route("/services/{id}/events", get(service_events::<B>))
        .route("/services/{id}/state", post(set_state::<B>))
        .route(
            "/services/{id}/destroy",
            get(destroy_page::<B>).post(destroy::<B>),
        )
        .route(
            "/services/{id}/parameters",
            get(parameters_page::<B>).post(set_parameters::<B>),
        )
        .route("/servers", get(servers::<B>))
        .route("/group", get(group::<B>))
        .route("/request", get(request_page::<B>).post(request::<B>))
        .route("/account", get(account::<B>))
        .route("/account/password", post(set_password::<B>))
        .fallback(not_found)
        .with_state(portal)
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Who asks, and the CSRF token their forms carry.
struct Ctx {
    who: Option<Principal>,
    csrf: String,
    /// A CSRF cookie to set (a caller without a session who had none).
    set_csrf: Option<String>,
}

impl Ctx {
    fn frame(&self) -> Frame<'_> {
        Frame {
            who: self.who.as_ref(),
            csrf: &self.csrf,
        }
    }
}

fn cookie_header(headers: &HeaderMap) -> &str {
    headers
        .get(header::COOKIE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

async fn context<B: Backend>(
    portal: &Portal<B>,
    parts: &axum::http::request::Parts,
) -> Result<Ctx, BackendError> {
    let cookies = cookie_header(&parts.headers);
    let csrf_cookie = auth::cookie(cookies, CSRF_COOKIE)
        .filter(|v| v.len() == 64 && v.bytes().all(|b| b.is_ascii_hexdigit()))
        .map(str::to_owned);
    let session_token = auth::cookie(cookies, SESSION_COOKIE)
        .filter(|v| v.len() == 64 && v.bytes().all(|b| b.is_ascii_hexdigit()));
    // A certificate wins over a cookie.
    let mut who = portal.backend.certificate_person(parts)?;
    let mut session_csrf = None;
    if who.is_none() {
        if let Some(token) = session_token {
            let hash = auth::sha256_hex(token);
            if let Some(s) = portal.backend.session(&hash).await? {
                if s.expires_at > now_secs() {
                    who = Some(Principal {
                        person: s.person,
                        admin: s.admin,
                        via: SignedInBy::Session { hash },
                    });
                    session_csrf = Some(auth::csrf_of_session(token));
                }
            }
        }
    }
    let (csrf, set_csrf) = match (session_csrf, csrf_cookie) {
        (Some(c), _) => (c, None),
        (None, Some(c)) => (c, None),
        (None, None) => {
            let c = auth::new_token().map_err(|e| BackendError::Unavailable(e.to_string()))?;
            (c.clone(), Some(c))
        }
    };
    Ok(Ctx {
        who,
        csrf,
        set_csrf,
    })
}

/// Headers every portal answer carries: no caching, no framing, no inline script.
fn secure(mut r: Response) -> Response {
    let h = r.headers_mut();
    for (k, v) in [
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
             connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::CACHE_CONTROL, "no-store"),
    ] {
        h.insert(k, HeaderValue::from_static(v));
    }
    r
}

fn cookie_value(name: &str, value: &str, max_age: Option<u64>) -> String {
    let age = match max_age {
        Some(a) => format!("; Max-Age={a}"),
        None => String::new(),
    };
    format!("{name}={value}; Path={BASE}; Secure; HttpOnly; SameSite=Strict{age}")
}

fn page(ctx: &Ctx, status: StatusCode, markup: Markup) -> Response {
    let mut r = (
        status,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        markup.into_string(),
    )
        .into_response();
    if let Some(c) = &ctx.set_csrf {
        if let Ok(v) = HeaderValue::from_str(&cookie_value(CSRF_COOKIE, c, None)) {
            r.headers_mut().append(header::SET_COOKIE, v);
        }
    }
    secure(r)
}

fn redirect(to: &str) -> Response {
    let mut r = StatusCode::SEE_OTHER.into_response();
    if let Ok(v) = HeaderValue::from_str(to) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    secure(r)
}

fn problem(ctx: &Ctx, e: &BackendError) -> Response {
    let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    if status.is_server_error() {
        tracing::warn!(error = %e, "portal");
    }
    page(
        ctx,
        status,
        pages::problem(&ctx.frame(), e.status(), &e.to_string()),
    )
}

/// A minimal context for failures before one could be built.
fn bare_problem(e: &BackendError) -> Response {
    let ctx = Ctx {
        who: None,
        csrf: String::new(),
        set_csrf: None,
    };
    problem(&ctx, e)
}

/// The context of a signed-in person, or the answer to give instead.
async fn signed_in<B: Backend>(
    portal: &Portal<B>,
    parts: &axum::http::request::Parts,
) -> Result<(Ctx, Principal), Box<Response>> {
    match context(portal, parts).await {
        Ok(ctx) => match ctx.who.clone() {
            Some(who) => Ok((ctx, who)),
            None => Err(Box::new(redirect(&format!("{BASE}/sign-in")))),
        },
        Err(e) => Err(Box::new(bare_problem(&e))),
    }
}

fn csrf_ok(ctx: &Ctx, form: &Fields) -> bool {
    // A token made for this very answer (no cookie came) proves nothing.
    ctx.set_csrf.is_none() && form.get("csrf").is_some_and(|t| auth::same(t, &ctx.csrf))
}

fn csrf_refused(ctx: &Ctx) -> Response {
    problem(
        ctx,
        &BackendError::Forbidden(
            "the form's security token does not match: reload the page and try again".into(),
        ),
    )
}

async fn css() -> Response {
    secure(
        (
            [(header::CONTENT_TYPE, "text/css; charset=utf-8")],
            crate::assets::CSS,
        )
            .into_response(),
    )
}

async fn js() -> Response {
    secure(
        (
            [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
            crate::assets::JS,
        )
            .into_response(),
    )
}

async fn not_found() -> Response {
    bare_problem(&BackendError::NotFound("no such page".into()))
}

async fn home<B: Backend>(State(portal): State<Shared<B>>, req: Request) -> Response {
    let (parts, _) = req.into_parts();
    match context(&portal, &parts).await {
        Ok(ctx) if ctx.who.is_some() => redirect(&format!("{BASE}/services")),
        Ok(_) => redirect(&format!("{BASE}/sign-in")),
        Err(e) => bare_problem(&e),
    }
}

async fn sign_in_page<B: Backend>(State(portal): State<Shared<B>>, req: Request) -> Response {
    let (parts, _) = req.into_parts();
    match context(&portal, &parts).await {
        Ok(ctx) if ctx.who.is_some() => redirect(&format!("{BASE}/services")),
        Ok(ctx) => page(&ctx, StatusCode::OK, pages::sign_in(&ctx.frame(), None, "")),
        Err(e) => bare_problem(&e),
    }
}

async fn sign_in<B: Backend>(
    State(portal): State<Shared<B>>,
    headers: HeaderMap,
    Form(form): Form<Fields>,
) -> Response {
    let cookies = cookie_header(&headers);
    let csrf_cookie = auth::cookie(cookies, CSRF_COOKIE).unwrap_or("").to_owned();
    let ctx = Ctx {
        who: None,
        csrf: csrf_cookie.clone(),
        set_csrf: None,
    };
    if csrf_cookie.is_empty() || !csrf_ok(&ctx, &form) {
        return csrf_refused(&ctx);
    }
    let person = form.get("person").map(|s| s.trim()).unwrap_or("");
    let password = form.get("password").map(String::as_str).unwrap_or("");
    let refuse = |msg: &str, status| {
        page(
            &ctx,
            status,
            pages::sign_in(&ctx.frame(), Some(msg), person),
        )
    };
    if person.is_empty() || person.len() > 255 || password.len() > auth::MAX_PASSWORD {
        return refuse(
            "Unknown person or wrong password.",
            StatusCode::UNAUTHORIZED,
        );
    }
    if !portal.limiter.allows(person) {
        tracing::info!(person, "portal sign-in refused: too many attempts");
        return refuse(
            "Too many failed attempts: wait a minute before trying again.",
            StatusCode::TOO_MANY_REQUESTS,
        );
    }
    let hash = match portal.backend.password_hash(person).await {
        Ok(h) => h,
        Err(e) => return problem(&ctx, &e),
    };
    let Ok(_permit) = portal.hashing.acquire().await else {
        return problem(&ctx, &BackendError::Unavailable("shutting down".into()));
    };
    let password = password.to_owned();
    let verified = tokio::task::spawn_blocking(move || match hash {
        Some(h) => auth::verify_password(&password, &h),
        None => {
            // The same work for an unknown person, so time does not tell.
            let _ = auth::hash_password(&password);
            false
        }
    })
    .await
    .unwrap_or(false);
    if !verified {
        portal.limiter.failed(person);
        tracing::info!(person, "portal sign-in: wrong password");
        return refuse(
            "Unknown person or wrong password.",
            StatusCode::UNAUTHORIZED,
        );
    }
    let token = match auth::new_token() {
        Ok(t) => t,
        Err(e) => return problem(&ctx, &BackendError::Unavailable(e.to_string())),
    };
    let expires = now_secs() + portal.config.session_secs;
    if let Err(e) = portal
        .backend
        .open_session(person, &auth::sha256_hex(&token), expires)
        .await
    {
        return problem(&ctx, &e);
    }
    tracing::info!(person, "portal sign-in");
    let mut r = redirect(&format!("{BASE}/services"));
    if let Ok(v) = HeaderValue::from_str(&cookie_value(
        SESSION_COOKIE,
        &token,
        Some(portal.config.session_secs),
    )) {
        r.headers_mut().append(header::SET_COOKIE, v);
    }
    r
}

async fn sign_out<B: Backend>(State(portal): State<Shared<B>>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let (ctx, who) = match signed_in(&portal, &parts).await {
        Ok(x) => x,
        Err(r) => return *r,
    };
    let Some(form) = read_form(&parts, body).await else {
        return csrf_refused(&ctx);
    };
    if !csrf_ok(&ctx, &form) {
        return csrf_refused(&ctx);
    }
    if let SignedInBy::Session { hash } = &who.via {
        if let Err(e) = portal.backend.end_session(hash).await {
            return problem(&ctx, &e);
        }
    }
    let mut r = redirect(&format!("{BASE}/sign-in"));
    if let Ok(v) = HeaderValue::from_str(&cookie_value(SESSION_COOKIE, "", Some(0))) {
        r.headers_mut().append(header::SET_COOKIE, v);
    }
    r
}

/// The form of a POST (urlencoded, at most 1 MiB).
async fn read_form(parts: &axum::http::request::Parts, body: axum::body::Body) -> Option<Fields> {
    let bytes = axum::body::to_bytes(body, 1 << 20).await.ok()?;
    let ct = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !ct.starts_with("application/x-www-form-urlencoded") {
        return None;
    }
    let pairs: Vec<(String, String)> = serde_urlencoded_pairs(&bytes)?;
    let mut out = Fields::new();
    for (k, v) in pairs {
        out.entry(k).or_insert(v);
    }
    Some(out)
}

fn serde_urlencoded_pairs(bytes: &[u8]) -> Option<Vec<(String, String)>> {
    serde_urlencoded::from_bytes(bytes).ok()
}

async fn services<B: Backend>(State(portal): State<Shared<B>>, req: Request) -> Response {
    let (parts, _) = req.into_parts();
    let (ctx, who) = match signed_in(&portal, &parts).await {
        Ok(x) => x,
        Err(r) => return *r,
    };
    // `?page=N&state=S`: a number and one of the known states; anything else is the
    // first page of all (nothing from the query string is echoed but these).
    let q = query_of(&parts);
    let page_no = page_of(&q);
    let state = q
        .get("state")
        .and_then(|s| pages::STATES.iter().find(|x| **x == s.as_str()).copied());
    match portal.backend.services(&who).await {
        Ok(list) => page(
            &ctx,
            StatusCode::OK,
            pages::services(
                &ctx.frame(),
                &pages::ServicesPage::of(&list, page_no, state),
                None,
            ),
        ),
        Err(e) => problem(&ctx, &e),
    }
}

/// The query string's fields (none when it does not parse).
fn query_of(parts: &axum::http::request::Parts) -> Fields {
    parts
        .uri
        .query()
        .and_then(|q| serde_urlencoded::from_str(q).ok())
        .unwrap_or_default()
}

/// `?page=N` (1 when absent or not a number).
fn page_of(q: &Fields) -> usize {
    q.get("page")
        .and_then(|p| p.parse::<usize>().ok())
        .unwrap_or(1)
}

/// The computers `who` provides, a page at a time (`?page=N`).
async fn servers<B: Backend>(State(portal): State<Shared<B>>, req: Request) -> Response {
    let (parts, _) = req.into_parts();
    let (ctx, who) = match signed_in(&portal, &parts).await {
        Ok(x) => x,
        Err(r) => return *r,
    };
    let q = query_of(&parts);
    match portal.backend.servers(&who).await {
        Ok(list) => page(
            &ctx,
            StatusCode::OK,
            pages::servers(
                &ctx.frame(),
                &pages::ServersPage::of(&list, page_of(&q), now_secs()),
            ),
        ),
        Err(e) => problem(&ctx, &e),
    }
}

/// The master group, for an admin only: anyone else is told there is no such page
/// (the same answer as any unknown path), and the gateway checks it again.
async fn group<B: Backend>(State(portal): State<Shared<B>>, req: Request) -> Response {
    let (parts, _) = req.into_parts();
    let (ctx, who) = match signed_in(&portal, &parts).await {
        Ok(x) => x,
        Err(r) => return *r,
    };
    if !who.admin {
        return not_found().await;
    }
    match portal.backend.group(&who).await {
        Ok(g) => page(&ctx, StatusCode::OK, pages::group(&ctx.frame(), &g)),
        Err(e) => problem(&ctx, &e),
    }
}

/// One of `who`'s services, by its root's id: another person's is not found (the read
/// is of `who`'s own trees only).
async fn find<B: Backend>(
    portal: &Portal<B>,
    who: &Principal,
    id: &str,
) -> Result<Service, BackendError> {
    portal.backend.service(who, id).await
}

async fn service<B: Backend>(
    State(portal): State<Shared<B>>,
    Path(id): Path<String>,
    req: Request,
) -> Response {
    let (parts, _) = req.into_parts();
    let (ctx, who) = match signed_in(&portal, &parts).await {
        Ok(x) => x,
        Err(r) => return *r,
    };
    match find(&portal, &who, &id).await {
        Ok(s) => page(&ctx, StatusCode::OK, pages::service(&ctx.frame(), &s, None)),
        Err(e) => problem(&ctx, &e),
    }
}

/// How long a live page waits for a change before it looks again (and sends a comment,
/// so that a closed page is noticed and its task ends).
const LIVE_WAIT: Duration = Duration::from_secs(25);

/// `text/event-stream` of a service's live part: its HTML (the same template as the
/// page's, escaped alike) each time it changes, read again whenever the gateway hears
/// that the service's computer changed. One task per open page; it ends when the page
/// is closed (the next send fails), the person's session ends, or the service is gone.
async fn service_events<B: Backend>(
    State(portal): State<Shared<B>>,
    Path(id): Path<String>,
    req: Request,
) -> Response {
    use axum::response::sse::{Event, Sse};
    let (parts, _) = req.into_parts();
    let (ctx, who) = match signed_in(&portal, &parts).await {
        Ok(x) => x,
        Err(r) => return *r,
    };
    if let Err(e) = find(&portal, &who, &id).await {
        return problem(&ctx, &e);
    }
    let (tx, rx) = tokio::sync::mpsc::channel::<Event>(4);
    let csrf = ctx.csrf.clone();
    tokio::spawn(async move {
        let mut last = String::new();
        loop {
            // A session that ended (sign-out elsewhere) ends the stream.
            if let SignedInBy::Session { hash } = &who.via {
                if !matches!(portal.backend.session(hash).await, Ok(Some(_))) {
                    return;
                }
            }
            let Ok(s) = find(&portal, &who, &id).await else {
                return;
            };
            let frame = Frame {
                who: Some(&who),
                csrf: &csrf,
            };
            let html = pages::service_live(&frame, &s).into_string();
            let event = if html != last {
                last = html.clone();
                Event::default().event("live").data(html)
            } else {
                Event::default().comment("unchanged")
            };
            if tx.send(event).await.is_err() {
                return;
            }
            if !portal.backend.wait_for_change(&s, LIVE_WAIT).await {
                return;
            }
        }
    });
    let stream =
        tokio_stream::wrappers::ReceiverStream::new(rx).map(Ok::<_, std::convert::Infallible>);
    secure(Sse::new(stream).into_response())
}

/// The same service requested again with another state or parameters.
fn again(
    s: &Service,
    state: Option<&str>,
    parameters: Option<BTreeMap<String, String>>,
) -> ServiceRequest {
    ServiceRequest {
        title: s.title.clone(),
        software_release: s.software_release.clone(),
        software_type: s.software_type.clone(),
        state: state.map(str::to_owned),
        parameters: parameters.unwrap_or_else(|| s.parameters.clone()),
        sla: s.sla.clone(),
    }
}

/// A POST on one of `who`'s services: signed in, CSRF checked, the service found.
async fn post_on<B: Backend>(
    portal: &Portal<B>,
    id: &str,
    req: Request,
) -> Result<(Ctx, Principal, Service, Fields), Box<Response>> {
    let (parts, body) = req.into_parts();
    let (ctx, who) = signed_in(portal, &parts).await?;
    let Some(form) = read_form(&parts, body).await else {
        return Err(Box::new(csrf_refused(&ctx)));
    };
    if !csrf_ok(&ctx, &form) {
        return Err(Box::new(csrf_refused(&ctx)));
    }
    match find(portal, &who, id).await {
        Ok(s) => Ok((ctx, who, s, form)),
        Err(e) => Err(Box::new(problem(&ctx, &e))),
    }
}

async fn set_state<B: Backend>(
    State(portal): State<Shared<B>>,
    Path(id): Path<String>,
    req: Request,
) -> Response {
    let (ctx, who, s, form) = match post_on(&portal, &id, req).await {
        Ok(x) => x,
        Err(r) => return *r,
    };
    let state = match form.get("state").map(String::as_str) {
        Some(st @ ("started" | "stopped")) => st,
        _ => {
            return problem(
                &ctx,
                &BackendError::Invalid("state: started or stopped".into()),
            )
        }
    };
    match portal
        .backend
        .request(&who, again(&s, Some(state), None))
        .await
    {
        Ok(_) => redirect(&format!("{BASE}/services/{id}")),
        Err(e) => problem(&ctx, &e),
    }
}

async fn destroy_page<B: Backend>(
    State(portal): State<Shared<B>>,
    Path(id): Path<String>,
    req: Request,
) -> Response {
    let (parts, _) = req.into_parts();
    let (ctx, who) = match signed_in(&portal, &parts).await {
        Ok(x) => x,
        Err(r) => return *r,
    };
    match find(&portal, &who, &id).await {
        Ok(s) => page(
            &ctx,
            StatusCode::OK,
            pages::confirm_destroy(&ctx.frame(), &s),
        ),
        Err(e) => problem(&ctx, &e),
    }
}

async fn destroy<B: Backend>(
    State(portal): State<Shared<B>>,
    Path(id): Path<String>,
    req: Request,
) -> Response {
    let (ctx, who, s, _) = match post_on(&portal, &id, req).await {
        Ok(x) => x,
        Err(r) => return *r,
    };
    match portal
        .backend
        .request(&who, again(&s, Some("destroyed"), None))
        .await
    {
        Ok(_) => redirect(&format!("{BASE}/services/{id}")),
        Err(e) => problem(&ctx, &e),
    }
}

async fn schema_fields<B: Backend>(
    portal: &Portal<B>,
    release: &str,
    software_type: &str,
) -> Option<Vec<schema::Field>> {
    let s = portal
        .backend
        .parameter_schema(release, software_type)
        .await?;
    schema::fields(&s)
}

/// The parameters a submitted form carries (generated form or raw JSON).
fn submitted(
    fields: Option<&[schema::Field]>,
    form: &Fields,
) -> Result<BTreeMap<String, String>, String> {
    match (fields, form.get("form").map(String::as_str)) {
        (Some(f), Some("schema")) => schema::parameters(f, form),
        _ => schema::raw_parameters(form.get("raw").map(String::as_str).unwrap_or("")),
    }
}

async fn parameters_page<B: Backend>(
    State(portal): State<Shared<B>>,
    Path(id): Path<String>,
    req: Request,
) -> Response {
    let (parts, _) = req.into_parts();
    let (ctx, who) = match signed_in(&portal, &parts).await {
        Ok(x) => x,
        Err(r) => return *r,
    };
    let s = match find(&portal, &who, &id).await {
        Ok(s) => s,
        Err(e) => return problem(&ctx, &e),
    };
    let fields = schema_fields(&portal, &s.software_release, &s.software_type).await;
    page(
        &ctx,
        StatusCode::OK,
        pages::parameters_form(&ctx.frame(), &s, fields.as_deref(), &s.parameters, None),
    )
}

async fn set_parameters<B: Backend>(
    State(portal): State<Shared<B>>,
    Path(id): Path<String>,
    req: Request,
) -> Response {
    let (ctx, who, s, form) = match post_on(&portal, &id, req).await {
        Ok(x) => x,
        Err(r) => return *r,
    };
    let fields = schema_fields(&portal, &s.software_release, &s.software_type).await;
    let params = match submitted(fields.as_deref(), &form) {
        Ok(p) => p,
        Err(msg) => {
            return page(
                &ctx,
                StatusCode::BAD_REQUEST,
                pages::parameters_form(
                    &ctx.frame(),
                    &s,
                    fields.as_deref(),
                    &s.parameters,
                    Some(&msg),
                ),
            )
        }
    };
    match portal
        .backend
        .request(&who, again(&s, None, Some(params)))
        .await
    {
        Ok(_) => redirect(&format!("{BASE}/services/{id}")),
        Err(e) => problem(&ctx, &e),
    }
}

async fn request_page<B: Backend>(
    State(portal): State<Shared<B>>,
    Query(q): Query<Fields>,
    req: Request,
) -> Response {
    let (parts, _) = req.into_parts();
    let (ctx, who) = match signed_in(&portal, &parts).await {
        Ok(x) => x,
        Err(r) => return *r,
    };
    let offers = match portal.backend.catalog(&who).await {
        Ok(o) => o,
        Err(e) => return problem(&ctx, &e),
    };
    let Some(release) = q.get("release") else {
        return page(&ctx, StatusCode::OK, pages::catalog(&ctx.frame(), &offers));
    };
    if !offers.iter().any(|o| &o.url == release) {
        return problem(
            &ctx,
            &BackendError::NotFound("this release is not offered to you".into()),
        );
    }
    let software_type = q
        .get("software_type")
        .map(String::as_str)
        .unwrap_or("default");
    let fields = schema_fields(&portal, release, software_type).await;
    page(
        &ctx,
        StatusCode::OK,
        pages::request_form(
            &ctx.frame(),
            &pages::RequestForm {
                release,
                software_type,
                title: "",
                fields: fields.as_deref(),
                values: &BTreeMap::new(),
                error: None,
            },
        ),
    )
}

async fn request<B: Backend>(State(portal): State<Shared<B>>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let (ctx, who) = match signed_in(&portal, &parts).await {
        Ok(x) => x,
        Err(r) => return *r,
    };
    let Some(form) = read_form(&parts, body).await else {
        return csrf_refused(&ctx);
    };
    if !csrf_ok(&ctx, &form) {
        return csrf_refused(&ctx);
    }
    let release = form.get("release").cloned().unwrap_or_default();
    let title = form
        .get("title")
        .map(|t| t.trim().to_owned())
        .unwrap_or_default();
    let software_type = form
        .get("software_type")
        .map(|t| t.trim())
        .filter(|t| !t.is_empty())
        .unwrap_or("default")
        .to_owned();
    let fields = schema_fields(&portal, &release, &software_type).await;
    let again = |msg: &str| {
        page(
            &ctx,
            StatusCode::BAD_REQUEST,
            pages::request_form(
                &ctx.frame(),
                &pages::RequestForm {
                    release: &release,
                    software_type: &software_type,
                    title: &title,
                    fields: fields.as_deref(),
                    values: &BTreeMap::new(),
                    error: Some(msg),
                },
            ),
        )
    };
    if title.is_empty() || title.chars().count() > 200 {
        return again("The title must have 1 to 200 characters.");
    }
    let parameters = match submitted(fields.as_deref(), &form) {
        Ok(p) => p,
        Err(msg) => return again(&msg),
    };
    let r = ServiceRequest {
        title: title.clone(),
        software_release: release.clone(),
        software_type: software_type.clone(),
        state: Some("started".into()),
        parameters,
        sla: BTreeMap::new(),
    };
    match portal.backend.request(&who, r).await {
        Ok(id) => redirect(&format!("{BASE}/services/{id}")),
        Err(
            e @ (BackendError::Invalid(_) | BackendError::Conflict(_) | BackendError::NotFound(_)),
        ) => again(&e.to_string()),
        Err(e) => problem(&ctx, &e),
    }
}

async fn account<B: Backend>(State(portal): State<Shared<B>>, req: Request) -> Response {
    let (parts, _) = req.into_parts();
    let (ctx, who) = match signed_in(&portal, &parts).await {
        Ok(x) => x,
        Err(r) => return *r,
    };
    page(
        &ctx,
        StatusCode::OK,
        pages::account(&ctx.frame(), &who, None, None),
    )
}

async fn set_password<B: Backend>(State(portal): State<Shared<B>>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let (ctx, who) = match signed_in(&portal, &parts).await {
        Ok(x) => x,
        Err(r) => return *r,
    };
    let Some(form) = read_form(&parts, body).await else {
        return csrf_refused(&ctx);
    };
    if !csrf_ok(&ctx, &form) {
        return csrf_refused(&ctx);
    }
    let password = form.get("password").cloned().unwrap_or_default();
    let n = password.chars().count();
    if n < auth::MIN_PASSWORD || password.len() > auth::MAX_PASSWORD {
        return page(
            &ctx,
            StatusCode::BAD_REQUEST,
            pages::account(
                &ctx.frame(),
                &who,
                None,
                Some("The password is too short or too long."),
            ),
        );
    }
    let Ok(_permit) = portal.hashing.acquire().await else {
        return problem(&ctx, &BackendError::Unavailable("shutting down".into()));
    };
    let hash = match tokio::task::spawn_blocking(move || auth::hash_password(&password)).await {
        Ok(Ok(h)) => h,
        _ => {
            return problem(
                &ctx,
                &BackendError::Unavailable("could not hash the password".into()),
            )
        }
    };
    if let Err(e) = portal
        .backend
        .set_password(&who, &who.person, Some(hash))
        .await
    {
        return problem(&ctx, &e);
    }
    // Its sessions ended with the new password: this one too.
    match who.via {
        SignedInBy::Session { .. } => redirect(&format!("{BASE}/sign-in")),
        SignedInBy::Certificate => page(
            &ctx,
            StatusCode::OK,
            pages::account(&ctx.frame(), &who, Some("Password set."), None),
        ),
    }
}
