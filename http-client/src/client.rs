//! The async client: hyper-util's pooled HTTP/1.1 client over [`crate::connect`].

use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Bytes, Incoming};
use hyper::header::{HeaderMap, HeaderName, HeaderValue, CONNECTION, USER_AGENT};
use hyper::Method;
use hyper_util::client::legacy;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use crate::connect::Connector;
use crate::error::{describe, Error, NotSent};
use crate::{form_urlencode, Endpoint};

/// How a client behaves.
#[derive(Debug, Clone)]
pub struct Options {
    /// Each resolved address's TCP connect, and then the TLS handshake.
    pub connect_timeout: Duration,
    /// From the call to the answer's head, and then between two reads of its body.
    pub timeout: Duration,
    /// The whole call, connection to last byte (a server trickling bytes cannot hold a
    /// call longer).
    pub deadline: Duration,
    /// The largest body read (larger: [`Error::TooLarge`]).
    pub max_body: usize,
    /// Connections kept open between calls for this long (`None`: one connection per
    /// call, sent with `Connection: close`).
    pub keep_alive: Option<Duration>,
    /// The `User-Agent` header, when one is sent.
    pub user_agent: Option<String>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            connect_timeout: Duration::from_secs(10),
            timeout: Duration::from_secs(60),
            deadline: Duration::from_secs(120),
            max_body: 256 << 20,
            keep_alive: Some(Duration::from_secs(30)),
            user_agent: None,
        }
    }
}

/// One call: a method, a target under the endpoint's prefix (path and query), headers and
/// a body.
#[derive(Debug, Clone)]
pub struct Request {
    method: Method,
    target: String,
    headers: Vec<(&'static str, String)>,
    body: Bytes,
}

impl Request {
    /// `GET target`.
    pub fn get(target: impl Into<String>) -> Request {
        Request {
            method: Method::GET,
            target: target.into(),
            headers: Vec::new(),
            body: Bytes::new(),
        }
    }

    /// `HEAD target`.
    pub fn head(target: impl Into<String>) -> Request {
        Request {
            method: Method::HEAD,
            ..Request::get(target)
        }
    }

    /// `PUT target` with `body` of this content type.
    pub fn put(target: impl Into<String>, content_type: &str, body: impl Into<Bytes>) -> Request {
        Request {
            method: Method::PUT,
            ..Request::post(target, content_type, body)
        }
    }

    /// `GET path?k=v&...` (no `?` without fields).
    pub fn get_query(path: &str, fields: &[(&str, &str)]) -> Request {
        if fields.is_empty() {
            Request::get(path)
        } else {
            Request::get(format!("{path}?{}", form_urlencode(fields)))
        }
    }

    /// `POST target` with `body` of this content type.
    pub fn post(target: impl Into<String>, content_type: &str, body: impl Into<Bytes>) -> Request {
        Request {
            method: Method::POST,
            target: target.into(),
            headers: vec![("Content-Type", content_type.to_owned())],
            body: body.into(),
        }
    }

    /// `POST target` with an `application/x-www-form-urlencoded` form.
    pub fn post_form(target: impl Into<String>, fields: &[(&str, &str)]) -> Request {
        Request::post(
            target,
            "application/x-www-form-urlencoded",
            form_urlencode(fields),
        )
    }

    /// `POST target` with a JSON body.
    pub fn post_json(target: impl Into<String>, json: impl Into<Bytes>) -> Request {
        Request::post(target, "application/json", json)
    }

    /// One more header (its value checked when the request is sent).
    pub fn header(mut self, name: &'static str, value: impl Into<String>) -> Request {
        self.headers.push((name, value.into()));
        self
    }

    pub fn method(&self) -> &str {
        self.method.as_str()
    }

    pub fn target(&self) -> &str {
        &self.target
    }
}

/// An answer, whatever its status.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

impl Response {
    /// The last value of the header `name`, when it is text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get_all(name)
            .iter()
            .next_back()
            .and_then(|v| v.to_str().ok())
    }
}

/// An HTTP/1.1 client (plain and, with a TLS configuration, HTTPS), cheap to clone (the
/// clones share its connections).
#[derive(Clone)]
pub struct Client {
    inner: legacy::Client<Connector, Full<Bytes>>,
    options: Arc<Options>,
    tls: bool,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("options", &self.options)
            .field("tls", &self.tls)
            .finish()
    }
}

impl Client {
    /// A client; `tls` for `https` endpoints (without it they are refused).
    pub fn new(tls: Option<Arc<rustls::ClientConfig>>, options: Options) -> Client {
        let connector = Connector::new(tls.clone(), options.connect_timeout);
        let mut builder = legacy::Client::builder(TokioExecutor::new());
        // (as the hand-written clients wrote them, and as `requests` does)
        builder.http1_title_case_headers(true);
        match options.keep_alive {
            Some(idle) => {
                builder
                    .pool_idle_timeout(idle)
                    .pool_timer(TokioTimer::new());
            }
            None => {
                builder.pool_max_idle_per_host(0);
            }
        }
        Client {
            inner: builder.build(connector),
            options: Arc::new(options),
            tls: tls.is_some(),
        }
    }

    pub fn options(&self) -> &Options {
        &self.options
    }

    /// Sends `request` to `endpoint`: the answer, whatever its status.
    pub async fn send(&self, endpoint: &Endpoint, request: Request) -> Result<Response, Error> {
        let deadline = self.options.deadline;
        match tokio::time::timeout(deadline, self.exchange(endpoint, request)).await {
            Ok(answer) => answer,
            Err(_) => Err(Error::Timeout(format!(
                "answer not complete within {deadline:?}"
            ))),
        }
    }

    async fn exchange(&self, endpoint: &Endpoint, request: Request) -> Result<Response, Error> {
        if endpoint.tls && !self.tls {
            return Err(Error::Tls(format!(
                "{}: https without a TLS configuration",
                endpoint.url
            )));
        }
        let bad = |e: String| Error::BadRequest(e);
        let mut http = hyper::Request::builder()
            .method(request.method)
            .uri(endpoint.uri(&request.target)?)
            .body(Full::new(request.body))
            .map_err(|e| bad(e.to_string()))?;
        let headers = http.headers_mut();
        for (name, value) in request.headers {
            let value =
                HeaderValue::from_str(&value).map_err(|_| bad(format!("{name}: {value:?}")))?;
            let name = HeaderName::from_bytes(name.as_bytes()).map_err(|e| bad(e.to_string()))?;
            headers.append(name, value);
        }
        if let Some(agent) = &self.options.user_agent {
            if let Ok(value) = HeaderValue::from_str(agent) {
                headers.entry(USER_AGENT).or_insert(value);
            }
        }
        if self.options.keep_alive.is_none() {
            headers.insert(CONNECTION, HeaderValue::from_static("close"));
        }
        let timeout = self.options.timeout;
        let answer = match tokio::time::timeout(timeout, self.inner.request(http)).await {
            Err(_) => return Err(Error::Timeout(format!("no answer within {timeout:?}"))),
            Ok(Err(e)) if e.is_connect() => return Err(Error::NotSent(NotSent::of(&e))),
            Ok(Err(e)) => return Err(Error::Exchange(describe(&e))),
            Ok(Ok(answer)) => answer,
        };
        let (head, body) = answer.into_parts();
        let body = read_body(body, self.options.max_body, timeout).await?;
        tracing::trace!(
            endpoint = %endpoint.url,
            target = %request.target,
            status = head.status.as_u16(),
            bytes = body.len(),
            "answer"
        );
        Ok(Response {
            status: head.status.as_u16(),
            headers: head.headers,
            body,
        })
    }
}

async fn read_body(mut body: Incoming, max: usize, idle: Duration) -> Result<Vec<u8>, Error> {
    let too_large = || Error::TooLarge { limit: max };
    let hint = body.size_hint();
    if usize::try_from(hint.lower()).map_or(true, |n| n > max) {
        return Err(too_large());
    }
    let mut out = Vec::with_capacity(
        hint.exact()
            .and_then(|n| usize::try_from(n).ok())
            .unwrap_or(0),
    );
    loop {
        let frame = match tokio::time::timeout(idle, body.frame()).await {
            Err(_) => return Err(Error::Timeout(format!("answer stalled for {idle:?}"))),
            Ok(None) => return Ok(out),
            Ok(Some(frame)) => frame.map_err(|e| Error::Exchange(describe(&e)))?,
        };
        if let Ok(data) = frame.into_data() {
            if out.len().saturating_add(data.len()) > max {
                return Err(too_large());
            }
            out.extend_from_slice(&data);
        }
    }
}
