//! One request: the site by Host (and the connection's SNI), then the HTTPS redirect,
//! the `redirect` type, the body bound, and the backend with the forwarding headers,
//! hop-by-hop headers removed, a WebSocket upgrade passed through when the site allows
//! it; the answer counted and written to the site's access log.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Instant, SystemTime};

use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::{Bytes, Frame, Incoming, SizeHint};
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::http::uri::Authority;
use hyper::{Request, Response, StatusCode, Uri, Version};
use hyper_util::rt::TokioIo;

use crate::access_log::{clf_time, AccessLog};
use crate::config::{printable, SiteType};
use crate::io::{ConnState, InFlight};
use crate::sites::Site;
use crate::Shared;

pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;
type Inner = UnsyncBoxBody<Bytes, BoxError>;

/// What the proxy knows of a client connection.
#[derive(Debug)]
pub(crate) struct ConnInfo {
    pub(crate) peer: SocketAddr,
    pub(crate) https: bool,
    /// The name the client's TLS handshake asked for (lower case).
    pub(crate) sni: Option<String>,
    pub(crate) state: Arc<ConnState>,
}

/// An answer's body: counts what is sent, and when done (or dropped) ends the request
/// in flight and writes the access log line.
pub struct Body {
    inner: Inner,
    sent: u64,
    done: Option<Done>,
}

struct Done {
    _in_flight: InFlight,
    log: Option<(Arc<AccessLog>, String, StatusCode, Instant)>,
}

impl Drop for Body {
    fn drop(&mut self) {
        if let Some(Done {
            log: Some((log, head, status, start)),
            ..
        }) = self.done.take()
        {
            let (before, after) = head.split_once('\u{0}').unwrap_or((&head, ""));
            log.write(format!(
                "{before} {} {}{after} {}",
                status.as_u16(),
                self.sent,
                start.elapsed().as_millis()
            ));
        }
    }
}

impl hyper::body::Body for Body {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled {
            if let Some(data) = frame.data_ref() {
                this.sent += data.len() as u64;
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

fn full(text: impl Into<Bytes>) -> Inner {
    Full::new(text.into())
        .map_err(|never: Infallible| match never {})
        .boxed_unsync()
}

fn answer(status: StatusCode, text: &str) -> Response<Inner> {
    let mut r = Response::new(full(format!("{text}\n")));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

fn redirect(status: StatusCode, location: &str) -> Response<Inner> {
    match HeaderValue::from_str(location) {
        Ok(v) => {
            let mut r = answer(status, location);
            r.headers_mut().insert(header::LOCATION, v);
            r
        }
        Err(_) => answer(StatusCode::BAD_REQUEST, "bad request target"),
    }
}

/// The host a request names (its authority, or its Host header), lower case, without
/// port or final dot.
fn host_of<B>(req: &Request<B>) -> Option<String> {
    let host = match req.uri().authority() {
        Some(a) => a.host().to_owned(),
        None => {
            let raw = req.headers().get(header::HOST)?.to_str().ok()?;
            raw.parse::<Authority>().ok()?.host().to_owned()
        }
    };
    let host = host.to_ascii_lowercase();
    Some(host.strip_suffix('.').unwrap_or(&host).to_owned())
}

/// The service of every client connection.
pub(crate) async fn handle(
    shared: Arc<Shared>,
    conn: Arc<ConnInfo>,
    req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let in_flight = conn.state.begin();
    let start = Instant::now();
    shared.counters.requests.fetch_add(1, Ordering::Relaxed);
    let head = log_head(&conn, &req);
    let (resp, site) = route(&shared, &conn, req).await;
    let status = resp.status();
    let log = site
        .and_then(|s| s.log.clone())
        .map(|l| (l, head, status, start));
    Ok(resp.map(|inner| Body {
        inner,
        sent: 0,
        done: Some(Done {
            _in_flight: in_flight,
            log,
        }),
    }))
}

/// The access log line but status, size and time: `client - - [time] "request"`, a NUL
/// where status and size go, then ` "referer" "user agent"`.
fn log_head<B>(conn: &ConnInfo, req: &Request<B>) -> String {
    let target = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    let header = |name: HeaderName| {
        req.headers()
            .get(name)
            .map(|v| printable(&String::from_utf8_lossy(v.as_bytes()), 512))
            .unwrap_or_else(|| "-".into())
    };
    format!(
        "{} - - [{}] \"{} {} {:?}\"\u{0} \"{}\" \"{}\"",
        conn.peer.ip(),
        clf_time(SystemTime::now()),
        printable(req.method().as_str(), 32),
        printable(target, 2048),
        req.version(),
        header(header::REFERER),
        header(header::USER_AGENT),
    )
}

async fn route(
    shared: &Arc<Shared>,
    conn: &ConnInfo,
    req: Request<Incoming>,
) -> (Response<Inner>, Option<Arc<Site>>) {
    let table = shared.table();
    let Some(host) = host_of(&req) else {
        return (answer(StatusCode::BAD_REQUEST, "no host named"), None);
    };
    let Some(site) = table.site_of(&host).cloned() else {
        shared.counters.not_found.fetch_add(1, Ordering::Relaxed);
        return (
            answer(StatusCode::NOT_FOUND, "no site at this address"),
            None,
        );
    };
    if let Some(sni) = &conn.sni {
        // The certificate the client checked was another site's (or the default one):
        // it must ask again on a connection of its own.
        let same = table.site_of(sni).is_some_and(|s| Arc::ptr_eq(s, &site));
        if !same {
            return (
                answer(StatusCode::MISDIRECTED_REQUEST, "misdirected request"),
                Some(site),
            );
        }
    }
    let path_and_query = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "/".into());
    if !conn.https && site.spec.https_only {
        let port = table.https_port.unwrap_or(shared.https_port);
        let location = if port == 443 {
            format!("https://{host}{path_and_query}")
        } else {
            format!("https://{host}:{port}{path_and_query}")
        };
        return (
            redirect(StatusCode::PERMANENT_REDIRECT, &location),
            Some(site),
        );
    }
    let mut resp = if site.spec.kind == SiteType::Redirect {
        let location = format!(
            "{}{}{path_and_query}",
            site.spec.url.to_string().trim_end_matches('/'),
            site.spec.path
        );
        redirect(StatusCode::FOUND, &location)
    } else {
        forward(shared, conn, &site, &host, &path_and_query, req).await
    };
    if conn.https && site.spec.hsts_seconds > 0 {
        if let Ok(v) = HeaderValue::from_str(&format!("max-age={}", site.spec.hsts_seconds)) {
            resp.headers_mut()
                .insert(header::STRICT_TRANSPORT_SECURITY, v);
        }
    }
    (resp, Some(site))
}

/// Headers that concern one connection only (RFC 9110 7.6.1), never forwarded.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// Removes the hop-by-hop headers and those the Connection header names.
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<String> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().to_ascii_lowercase())
        .filter(|t| !t.is_empty())
        .collect();
    for name in HOP_BY_HOP
        .iter()
        .copied()
        .chain(named.iter().map(String::as_str))
    {
        headers.remove(name);
    }
}

fn has_token(headers: &HeaderMap, name: HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// Whether this site lets a WebSocket upgrade through on this path: on every path for
/// `type = websocket` without a list, else on the paths of `websocket-path-list`.
fn websocket_allowed(site: &Site, path: &str) -> bool {
    let paths = &site.spec.websocket_paths;
    if paths.is_empty() {
        return site.spec.kind == SiteType::Websocket;
    }
    paths.iter().any(|p| {
        p == "/"
            || path == p
            || path
                .strip_prefix(p.as_str())
                .is_some_and(|rest| rest.starts_with('/') || rest.starts_with('?'))
    })
}

async fn forward(
    shared: &Arc<Shared>,
    conn: &ConnInfo,
    site: &Arc<Site>,
    host: &str,
    path_and_query: &str,
    mut req: Request<Incoming>,
) -> Response<Inner> {
    let counters = &shared.counters;
    let max = shared.limits.max_body_bytes;
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max) {
        counters.body_too_large.fetch_add(1, Ordering::Relaxed);
        return answer(StatusCode::PAYLOAD_TOO_LARGE, "request body too large");
    }
    let backend = match (&site.spec.https_url, conn.https) {
        (Some(u), true) => u,
        _ => &site.spec.url,
    };
    let (Some(scheme), Some(authority)) = (backend.scheme_str(), backend.authority()) else {
        return answer(StatusCode::BAD_GATEWAY, "no backend");
    };
    let target = format!(
        "{scheme}://{authority}{}{}{path_and_query}",
        backend.path().trim_end_matches('/'),
        site.spec.path
    );
    let Ok(uri) = target.parse::<Uri>() else {
        return answer(StatusCode::BAD_REQUEST, "bad request target");
    };
    let upgrade = req.version() == Version::HTTP_11
        && has_token(req.headers(), header::CONNECTION, "upgrade")
        && has_token(req.headers(), header::UPGRADE, "websocket")
        && websocket_allowed(site, req.uri().path());
    let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
    let (parts, body) = req.into_parts();
    let mut headers = parts.headers;
    let upgrade_value = headers.get(header::UPGRADE).cloned();
    strip_hop_by_hop(&mut headers);
    if let (true, Some(v)) = (upgrade, upgrade_value) {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, v);
    }
    if let Ok(v) = HeaderValue::from_str(authority.as_str()) {
        headers.insert(header::HOST, v);
    }
    join_cookies(&mut headers);
    forwarding_headers(&mut headers, conn, host);
    let mut breq = Request::new(Limited::new(body, max as usize));
    *breq.method_mut() = parts.method;
    *breq.uri_mut() = uri;
    *breq.headers_mut() = headers;
    let sent = tokio::time::timeout(site.spec.request_timeout, site.client.request(breq)).await;
    let mut resp = match sent {
        Err(_) => {
            counters.request_timeouts.fetch_add(1, Ordering::Relaxed);
            return answer(
                StatusCode::GATEWAY_TIMEOUT,
                "the backend did not answer in time",
            );
        }
        Ok(Err(e)) => {
            if e.is_connect() {
                counters.connect_failures.fetch_add(1, Ordering::Relaxed);
                tracing::info!(site = %site.spec.reference, "backend connect: {e:?}");
                return answer(StatusCode::BAD_GATEWAY, "the backend cannot be reached");
            }
            if body_too_large(&e) {
                counters.body_too_large.fetch_add(1, Ordering::Relaxed);
                return answer(StatusCode::PAYLOAD_TOO_LARGE, "request body too large");
            }
            counters.backend_errors.fetch_add(1, Ordering::Relaxed);
            tracing::info!(site = %site.spec.reference, "backend: {e:?}");
            return answer(StatusCode::BAD_GATEWAY, "the backend failed");
        }
        Ok(Ok(resp)) => resp,
    };
    if let (Some(client_upgrade), StatusCode::SWITCHING_PROTOCOLS) = (client_upgrade, resp.status())
    {
        let backend_upgrade = hyper::upgrade::on(&mut resp);
        conn.state.upgraded();
        let reference = site.spec.reference.clone();
        tokio::spawn(async move {
            match tokio::try_join!(client_upgrade, backend_upgrade) {
                Ok((client, backend)) => {
                    let mut client = TokioIo::new(client);
                    let mut backend = TokioIo::new(backend);
                    if let Err(e) = tokio::io::copy_bidirectional(&mut client, &mut backend).await {
                        tracing::debug!(site = %reference, "websocket: {e}");
                    }
                }
                Err(e) => tracing::info!(site = %reference, "websocket upgrade: {e}"),
            }
        });
        let (parts, _) = resp.into_parts();
        return Response::from_parts(parts, full(Bytes::new()));
    }
    let (mut parts, body) = resp.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    Response::from_parts(
        parts,
        body.map_err(|e| Box::new(e) as BoxError).boxed_unsync(),
    )
}

/// HTTP/2 clients may split `Cookie` into several fields; an HTTP/1.1 backend reads one
/// (RFC 9113, 8.2.3).
fn join_cookies(headers: &mut HeaderMap) {
    if headers.get_all(header::COOKIE).iter().count() < 2 {
        return;
    }
    let joined = headers
        .get_all(header::COOKIE)
        .iter()
        .map(|v| v.as_bytes())
        .collect::<Vec<_>>()
        .join(&b"; "[..]);
    if let Ok(v) = HeaderValue::from_bytes(&joined) {
        headers.insert(header::COOKIE, v);
    }
}

fn body_too_large(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if err.downcast_ref::<LengthLimitError>().is_some() {
            return true;
        }
        cur = err.source();
    }
    false
}

/// `X-Forwarded-For` gets the client's address appended (what the client sent is kept
/// before it, never trusted: the last entry is this frontend's); `X-Forwarded-Proto` and
/// `X-Forwarded-Host` are set (a client's are replaced); `Forwarded` gets this hop's
/// element appended.
fn forwarding_headers(headers: &mut HeaderMap, conn: &ConnInfo, host: &str) {
    let ip = conn.peer.ip().to_canonical();
    let proto = if conn.https { "https" } else { "http" };
    let xff_name = HeaderName::from_static("x-forwarded-for");
    let earlier: Vec<String> = headers
        .get_all(&xff_name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .map(str::to_owned)
        .collect();
    let mut xff = earlier.join(", ");
    if !xff.is_empty() {
        xff.push_str(", ");
    }
    xff.push_str(&ip.to_string());
    headers.remove(&xff_name);
    if let Ok(v) = HeaderValue::from_str(&xff) {
        headers.insert(xff_name, v);
    }
    headers.insert(
        HeaderName::from_static("x-forwarded-proto"),
        HeaderValue::from_static(if conn.https { "https" } else { "http" }),
    );
    if let Ok(v) = HeaderValue::from_str(host) {
        headers.insert(HeaderName::from_static("x-forwarded-host"), v);
    }
    let node = match ip {
        std::net::IpAddr::V4(v4) => v4.to_string(),
        std::net::IpAddr::V6(v6) => format!("\"[{v6}]\""),
    };
    let element = format!("for={node};proto={proto};host={host}");
    let earlier: Vec<String> = headers
        .get_all(header::FORWARDED)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .map(str::to_owned)
        .collect();
    let mut forwarded = earlier.join(", ");
    if !forwarded.is_empty() {
        forwarded.push_str(", ");
    }
    forwarded.push_str(&element);
    headers.remove(header::FORWARDED);
    if let Ok(v) = HeaderValue::from_str(&forwarded) {
        headers.insert(header::FORWARDED, v);
    }
}
