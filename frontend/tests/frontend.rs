//! The frontend over real sockets: a frontend on ephemeral ports, backends that are small
//! hyper servers, clients on hyper and rustls trusting a test CA. No test asserts a
//! duration: a timeout test waits for the answer the timeout gives.

mod common;

use std::sync::Arc;

use common::*;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{Request, StatusCode, Version};
use hyper_util::rt::TokioIo;
use serde_json::json;
use slapos_frontend::Limits;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn url(b: &Backend) -> String {
    format!("http://{}", b.addr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_by_host_and_sni() {
    let (a, b) = (backend("A").await, backend("B").await);
    let env = Env::start(
        vec![
            site(
                "SITE-A",
                json!({"url": url(&a), "custom_domain": "a.example.com"}),
            ),
            site(
                "SITE-B",
                json!({"url": url(&b), "custom_domain": "b.example.com",
                       "server-alias": "www.b.example.com alias.example.org"}),
            ),
        ],
        Limits::default(),
    )
    .await;
    let mut ca = env.conn("a.example.com").await;
    let (status, _, text) = send(&mut ca, get("a.example.com", "/hello")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(text.starts_with("backend A\npath /hello\n"), "{text}");
    // The same connection, another site's Host: the client checked A's certificate.
    let (status, _, _) = send(&mut ca, get("b.example.com", "/")).await;
    assert_eq!(status, StatusCode::MISDIRECTED_REQUEST);

    let mut cb = env.conn("b.example.com").await;
    let (status, _, text) = send(&mut cb, get("b.example.com:443", "/x")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(text.starts_with("backend B\npath /x\n"), "{text}");
    // An alias is served with its site's certificate (the test CA signed it for the
    // first domain only, so the SNI is the site's domain and Host the alias).
    let (status, _, text) = send(&mut cb, get("WWW.B.example.com.", "/y")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(text.starts_with("backend B\npath /y\n"), "{text}");

    // SNI picks the certificate: the site's, or the default one for an unknown name.
    for (sni, expected) in [
        ("a.example.com", Some("a.example.com")),
        ("unknown.example.com", None),
    ] {
        let recorder = Arc::new(Recorder::default());
        let config = client_config(Trust::Record(recorder.clone()), &[b"http/1.1"]);
        let mut c = tls_conn(env.https, sni, config).await;
        let shown = recorder.0.lock().unwrap().clone().unwrap();
        match expected {
            Some(_) => assert_ne!(shown, env.default_der),
            None => assert_eq!(shown, env.default_der),
        }
        let (status, _, _) = send(&mut c, get("nowhere.example.com", "/")).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        if expected.is_none() {
            // A known Host on a connection whose certificate was not its own.
            let (status, _, _) = send(&mut c, get("a.example.com", "/")).await;
            assert_eq!(status, StatusCode::MISDIRECTED_REQUEST);
        }
    }

    // HTTP/2 by ALPN.
    let mut h2 = h2_conn(
        env.https,
        "a.example.com",
        client_config(Trust::Ca(&env.pki.ca_pem), &[b"h2", b"http/1.1"]),
    )
    .await;
    let req = Request::builder()
        .uri("https://a.example.com/over-h2")
        .header("cookie", "a=1")
        .header("cookie", "b=2")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = h2.send_request(req).await.unwrap();
    assert_eq!(resp.version(), Version::HTTP_2);
    assert_eq!(resp.status(), StatusCode::OK);
    let text = resp.into_body().collect().await.unwrap().to_bytes();
    let text = String::from_utf8_lossy(&text);
    assert!(text.starts_with("backend A\npath /over-h2\n"), "{text}");
    assert_eq!(seen(&text, "cookie"), ["a=1; b=2"]);
    assert_eq!(seen(&text, "host"), [a.addr.to_string()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_http_redirects_to_https_or_proxies() {
    let a = backend("A").await;
    let env = Env::start(
        vec![
            site(
                "SITE-A",
                json!({"url": url(&a), "custom_domain": "a.example.com"}),
            ),
            site(
                "SITE-C",
                json!({"url": url(&a), "custom_domain": "c.example.com", "https-only": "false"}),
            ),
        ],
        Limits::default(),
    )
    .await;
    let mut c = plain_conn(env.http).await;
    let req = Request::builder()
        .method("POST")
        .uri("/form?x=1")
        .header("host", "a.example.com")
        .body(Full::new(Bytes::from_static(b"k=v")))
        .unwrap();
    let (status, headers, _) = send(&mut c, req).await;
    assert_eq!(status, StatusCode::PERMANENT_REDIRECT);
    assert_eq!(
        headers["location"],
        format!("https://a.example.com:{}/form?x=1", env.https.port())
    );
    let (status, _, text) = send(&mut c, get("c.example.com", "/plain")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(seen(&text, "x-forwarded-proto"), ["http"]);
    assert!(text.contains("path /plain\n"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_sees_forwarding_headers_and_no_hop_by_hop_ones() {
    let a = backend("A").await;
    let env = Env::start(
        vec![site(
            "SITE-A",
            json!({"url": format!("{}/app/", url(&a)), "custom_domain": "a.example.com",
                   "path": "/prefix", "strict-transport-security": "600"}),
        )],
        Limits::default(),
    )
    .await;
    let mut c = env.conn("a.example.com").await;
    let req = Request::builder()
        .uri("/x?q=1")
        .header("host", "a.example.com")
        .header("x-forwarded-for", "6.6.6.6")
        .header("x-forwarded-proto", "http")
        .header("x-forwarded-host", "evil.example")
        .header("forwarded", "for=6.6.6.6")
        .header("connection", "keep-alive, x-secret")
        .header("x-secret", "1")
        .header("keep-alive", "timeout=5")
        .header("proxy-authorization", "Basic eDp4")
        .header("x-kept", "yes")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let (status, headers, text) = send(&mut c, req).await;
    assert_eq!(status, StatusCode::OK);
    assert!(text.contains("path /app/prefix/x?q=1\n"), "{text}");
    assert_eq!(seen(&text, "x-forwarded-for"), ["6.6.6.6, 127.0.0.1"]);
    assert_eq!(seen(&text, "x-forwarded-proto"), ["https"]);
    assert_eq!(seen(&text, "x-forwarded-host"), ["a.example.com"]);
    assert_eq!(
        seen(&text, "forwarded"),
        ["for=6.6.6.6, for=127.0.0.1;proto=https;host=a.example.com"]
    );
    assert_eq!(seen(&text, "host"), [a.addr.to_string()]);
    assert_eq!(seen(&text, "x-kept"), ["yes"]);
    for gone in [
        "x-secret",
        "keep-alive",
        "proxy-authorization",
        "connection",
    ] {
        assert!(seen(&text, gone).is_empty(), "{gone} forwarded: {text}");
    }
    // The answer: HSTS added, the backend's hop-by-hop headers removed.
    assert_eq!(headers["strict-transport-security"], "max-age=600");
    assert!(!headers.contains_key("keep-alive"));

    // One line in the site's access log, with the client's values escaped.
    let req = Request::builder()
        .uri("/logged")
        .header("host", "a.example.com")
        .header("user-agent", "agent \"quoted\" \\ end")
        .body(Full::new(Bytes::new()))
        .unwrap();
    assert_eq!(send(&mut c, req).await.0, StatusCode::OK);
    let log = env.log_dir().join("SITE-A.log");
    eventually(|| std::fs::read_to_string(&log).is_ok_and(|t| t.contains("/logged"))).await;
    let text = std::fs::read_to_string(&log).unwrap();
    let line = text.lines().find(|l| l.contains("/logged")).unwrap();
    assert!(line.starts_with("127.0.0.1 - - ["), "{line}");
    assert!(line.contains("\"GET /logged HTTP/1.1\" 200 "), "{line}");
    assert!(line.contains("\"agent \\\"quoted\\\" \\\\ end\""), "{line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_upgrade_round_trip() {
    let a = backend("A").await;
    let env = Env::start(
        vec![
            site(
                "SITE-WS",
                json!({"url": url(&a), "custom_domain": "ws.example.com", "type": "websocket"}),
            ),
            site(
                "SITE-LIST",
                json!({"url": url(&a), "custom_domain": "list.example.com",
                       "websocket-path-list": "/socket /other"}),
            ),
        ],
        Limits::default(),
    )
    .await;
    let upgrade = |host: &str, path: &str| {
        Request::builder()
            .uri(path)
            .header("host", host)
            .header("connection", "Upgrade")
            .header("upgrade", "websocket")
            .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
            .header("sec-websocket-version", "13")
            .body(Full::new(Bytes::new()))
            .unwrap()
    };
    for (host, path) in [
        ("ws.example.com", "/any"),
        ("list.example.com", "/socket/1"),
    ] {
        let mut c = env.conn(host).await;
        c.ready().await.unwrap();
        let resp = c.send_request(upgrade(host, path)).await.unwrap();
        assert_eq!(
            resp.status(),
            StatusCode::SWITCHING_PROTOCOLS,
            "{host}{path}"
        );
        let upgraded = hyper::upgrade::on(resp).await.unwrap();
        let mut io = TokioIo::new(upgraded);
        for message in [&b"ping"[..], b"a second frame"] {
            io.write_all(message).await.unwrap();
            let mut buf = vec![0; message.len()];
            io.read_exact(&mut buf).await.unwrap();
            assert_eq!(buf, message);
        }
    }
    // Not a WebSocket path of the list: the backend is asked without the upgrade.
    let mut c = env.conn("list.example.com").await;
    let (status, _, text) = send(&mut c, upgrade("list.example.com", "/page")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(seen(&text, "upgrade").is_empty(), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirect_type_keeps_the_path() {
    let env = Env::start(
        vec![site(
            "SITE-R",
            json!({"url": "https://elsewhere.example.org/base/", "custom_domain": "r.example.com",
                   "type": "redirect"}),
        )],
        Limits::default(),
    )
    .await;
    let mut c = env.conn("r.example.com").await;
    let (status, headers, _) = send(&mut c, get("r.example.com", "/x/y?z=1")).await;
    assert_eq!(status, StatusCode::FOUND);
    assert_eq!(
        headers["location"],
        "https://elsewhere.example.org/base/x/y?z=1"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_answer_431_413_408() {
    let a = backend("A").await;
    let limits = Limits {
        max_header_bytes: 16 * 1024,
        max_body_bytes: 1024,
        header_timeout: std::time::Duration::from_millis(300),
        ..Limits::default()
    };
    let env = Env::start(
        vec![site(
            "SITE-A",
            json!({"url": url(&a), "custom_domain": "a.example.com", "https-only": false}),
        )],
        limits,
    )
    .await;
    let mut c = env.conn("a.example.com").await;
    let req = Request::builder()
        .uri("/")
        .header("host", "a.example.com")
        .header("x-big", "x".repeat(20 * 1024))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let (status, _, _) = send(&mut c, req).await;
    assert_eq!(status, StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);

    // The same over HTTP/2 (h2 answers the header list over the bound).
    let mut h2 = h2_conn(
        env.https,
        "a.example.com",
        client_config(Trust::Ca(&env.pki.ca_pem), &[b"h2"]),
    )
    .await;
    let req = Request::builder()
        .uri("https://a.example.com/")
        .header("x-big", "x".repeat(20 * 1024))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = h2.send_request(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);

    let mut c = env.conn("a.example.com").await;
    let post = |size: usize| {
        Request::builder()
            .method("POST")
            .uri("/upload")
            .header("host", "a.example.com")
            .body(Full::new(Bytes::from(vec![b'x'; size])))
            .unwrap()
    };
    let (status, _, text) = send(&mut c, post(1024)).await;
    assert_eq!(status, StatusCode::OK);
    assert!(text.contains("body 1024\n"), "{text}");
    let (status, _, _) = send(&mut c, post(1025)).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);

    // A body without a length (chunked) that passes the bound on the way.
    let mut raw = tokio::net::TcpStream::connect(env.http).await.unwrap();
    let chunk = "x".repeat(800);
    raw.write_all(
        format!(
            "POST /chunked HTTP/1.1\r\nhost: a.example.com\r\ntransfer-encoding: chunked\r\n\r\n\
             320\r\n{chunk}\r\n320\r\n{chunk}\r\n0\r\n\r\n"
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let mut answer = vec![0; 12];
    raw.read_exact(&mut answer).await.unwrap();
    assert_eq!(&answer, b"HTTP/1.1 413");

    // A request head that never ends.
    let mut raw = tokio::net::TcpStream::connect(env.http).await.unwrap();
    raw.write_all(b"GET / HTTP/1.1\r\nhost: a.exa")
        .await
        .unwrap();
    let mut answer = Vec::new();
    raw.read_to_end(&mut answer).await.unwrap();
    assert!(answer.starts_with(b"HTTP/1.1 408 "), "{answer:?}");

    let counters = env.handle.counters();
    assert_eq!(counters.header_too_large, 1);
    assert_eq!(counters.body_too_large, 2);
    assert_eq!(counters.header_timeouts, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeouts_answer_504_and_502() {
    let a = backend("A").await;
    // A port nothing listens on.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let env = Env::start(
        vec![
            site(
                "SITE-SLOW",
                json!({"url": url(&a), "custom_domain": "slow.example.com", "request-timeout": "1"}),
            ),
            site(
                "SITE-DOWN",
                json!({"url": format!("http://{closed}"), "custom_domain": "down.example.com",
                       "backend-connect-timeout": 1}),
            ),
        ],
        Limits::default(),
    )
    .await;
    let mut c = env.conn("slow.example.com").await;
    let (status, _, _) = send(&mut c, get("slow.example.com", "/hang")).await;
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT);
    let mut c = env.conn("down.example.com").await;
    let (status, _, _) = send(&mut c, get("down.example.com", "/")).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    let counters = env.handle.counters();
    assert_eq!(
        (counters.request_timeouts, counters.connect_failures),
        (1, 1)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_adds_changes_removes_while_a_long_request_completes() {
    let (a, b, b2, d, e) = (
        backend("A").await,
        backend("B").await,
        backend("B2").await,
        backend("D").await,
        backend("E").await,
    );
    let a_site = site(
        "SITE-A",
        json!({"url": url(&a), "custom_domain": "a.example.com"}),
    );
    let env = Env::start(
        vec![
            a_site.clone(),
            site(
                "SITE-B",
                json!({"url": url(&b), "custom_domain": "b.example.com"}),
            ),
            site(
                "SITE-E",
                json!({"url": url(&e), "custom_domain": "e.example.com"}),
            ),
        ],
        Limits::default(),
    )
    .await;
    // A long request to A, under way before the reload.
    let mut long = env.conn("a.example.com").await;
    let mut kept = env.conn("a.example.com").await;
    assert_eq!(
        send(&mut kept, get("a.example.com", "/")).await.0,
        StatusCode::OK
    );
    long.ready().await.unwrap();
    let pending = tokio::spawn(long.send_request(get("a.example.com", "/slow")));
    a.arrived.notified().await;
    let mut to_e = env.conn("e.example.com").await;
    assert_eq!(
        send(&mut to_e, get("e.example.com", "/")).await.0,
        StatusCode::OK
    );

    let status = env.reload(vec![
        a_site,
        site(
            "SITE-B",
            json!({"url": url(&b2), "custom_domain": "b.example.com"}),
        ),
        site(
            "SITE-D",
            json!({"url": url(&d), "custom_domain": "d.example.com"}),
        ),
    ]);
    assert_eq!(status["SITE-D"].state, "serving");
    assert!(!status.contains_key("SITE-E"));

    let mut c = env.conn("d.example.com").await;
    let (s, _, text) = send(&mut c, get("d.example.com", "/")).await;
    assert_eq!(
        (s, text.lines().next()),
        (StatusCode::OK, Some("backend D"))
    );
    let mut c = env.conn("b.example.com").await;
    let (s, _, text) = send(&mut c, get("b.example.com", "/")).await;
    assert_eq!(
        (s, text.lines().next()),
        (StatusCode::OK, Some("backend B2"))
    );
    // The removed site, even on the connection opened before.
    let (s, _, _) = send(&mut to_e, get("e.example.com", "/")).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    // The unchanged site's keep-alive connection is still there.
    let (s, _, text) = send(&mut kept, get("a.example.com", "/again")).await;
    assert_eq!(
        (s, text.lines().next()),
        (StatusCode::OK, Some("backend A"))
    );

    a.gate.notify_one();
    let resp = pending.await.unwrap().unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let text = resp.into_body().collect().await.unwrap().to_bytes();
    assert!(text.starts_with(b"backend A\npath /slow\n"));

    // A file that cannot be used at all keeps the sites in force.
    std::fs::write(&env.sites_file, b"{ not json").unwrap();
    assert!(env.handle.reload().is_err());
    let (s, _, text) = send(&mut kept, get("a.example.com", "/after")).await;
    assert_eq!(
        (s, text.lines().next()),
        (StatusCode::OK, Some("backend A"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_domain_clash_refuses_the_second_site() {
    let (x, y) = (backend("X").await, backend("Y").await);
    let first = site(
        "SITE-X",
        json!({"url": url(&x), "custom_domain": "shop.example.com"}),
    );
    let env = Env::start(
        vec![
            first.clone(),
            site(
                "SITE-Y",
                json!({"url": url(&y), "custom_domain": "other.example.com",
                       "server-alias": "SHOP.example.com"}),
            ),
        ],
        Limits::default(),
    )
    .await;
    let status = env.handle.status();
    assert_eq!(status["SITE-X"].state, "serving");
    assert_eq!(status["SITE-Y"].state, "refused");
    assert_eq!(
        status["SITE-Y"].request_error_list,
        ["shop.example.com: already served by another site of this frontend"]
    );
    let mut c = env.conn("shop.example.com").await;
    let (_, _, text) = send(&mut c, get("shop.example.com", "/")).await;
    assert!(text.starts_with("backend X\n"));
    // The refused site's other domain is not served either.
    let mut c = env.conn("shop.example.com").await;
    assert_eq!(
        send(&mut c, get("other.example.com", "/")).await.0,
        StatusCode::NOT_FOUND
    );

    // A new site listed before the one serving the domain does not take it.
    let status = env.reload(vec![
        site(
            "SITE-Z",
            json!({"url": url(&y), "custom_domain": "shop.example.com"}),
        ),
        first,
    ]);
    assert_eq!(status["SITE-X"].state, "serving");
    assert_eq!(status["SITE-Z"].state, "refused");
    let (_, _, text) = send(&mut c, get("shop.example.com", "/")).await;
    assert!(text.starts_with("backend X\n"));
    // What the release publishes.
    let published: serde_json::Value =
        serde_json::from_slice(&std::fs::read(env.status_file()).unwrap()).unwrap();
    assert_eq!(published["SITE-X"]["domain"], "shop.example.com");
    assert_eq!(
        published["SITE-X"]["secure_access"],
        format!("https://shop.example.com:{}", env.https.port())
    );
    assert_eq!(
        published["SITE-Z"]["request-error-list"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_parameters_are_refused_and_the_others_served() {
    let good = backend("GOOD").await;
    let bad_site = |reference: &str, params: serde_json::Value| {
        let mut s = site(reference, params);
        s["certificate"] = json!(false);
        s
    };
    let u = url(&good);
    let cases = vec![
        (
            "file-url",
            json!({"url": "file:///etc/passwd", "custom_domain": "f.example.com"}),
            "url: only http and https",
        ),
        (
            "ftp-url",
            json!({"url": "ftp://h.example.com/", "custom_domain": "f2.example.com"}),
            "url: only http and https",
        ),
        (
            "creds",
            json!({"url": "http://user:pw@h.example.com/", "custom_domain": "f3.example.com"}),
            "url: credentials",
        ),
        (
            "no-url",
            json!({"custom_domain": "f4.example.com"}),
            "url: missing",
        ),
        (
            "bad-type",
            json!({"url": u, "custom_domain": "f5.example.com", "type": "zope"}),
            "type: \"zope\"",
        ),
        (
            "wildcard",
            json!({"url": u, "custom_domain": "*.example.com"}),
            "wildcards",
        ),
        (
            "ipv4",
            json!({"url": u, "custom_domain": "127.0.0.1"}),
            "IP address",
        ),
        (
            "ipv6",
            json!({"url": u, "custom_domain": "[::1]"}),
            "IP address",
        ),
        (
            "space",
            json!({"url": u, "custom_domain": "exa mple.com"}),
            "only letters",
        ),
        (
            "crlf",
            json!({"url": u, "custom_domain": "a.example.com\r\nx-evil: 1"}),
            "only letters",
        ),
        (
            "slash",
            json!({"url": u, "custom_domain": "example.com/../x"}),
            "only letters",
        ),
        (
            "unicode",
            json!({"url": u, "custom_domain": "exämple.com"}),
            "punycode",
        ),
        (
            "long",
            json!({"url": u, "custom_domain": format!("{}.com", "a".repeat(260))}),
            "longer than 253",
        ),
        (
            "label",
            json!({"url": u, "custom_domain": format!("{}.com", "a".repeat(64))}),
            "63 bytes",
        ),
        (
            "alias",
            json!({"url": u, "custom_domain": "f6.example.com", "server-alias": "ok.example.com *.evil.com"}),
            "server-alias",
        ),
        (
            "path",
            json!({"url": u, "custom_domain": "f7.example.com", "path": "/../etc"}),
            "path:",
        ),
        (
            "hsts",
            json!({"url": u, "custom_domain": "f8.example.com", "strict-transport-security": "-1"}),
            "strict-transport-security",
        ),
        (
            "flag",
            json!({"url": u, "custom_domain": "f9.example.com", "https-only": "maybe"}),
            "https-only",
        ),
    ];
    let mut sites: Vec<_> = cases
        .iter()
        .map(|(r, p, _)| bad_site(r, p.clone()))
        .collect();
    sites.push(site(
        "../../escape",
        json!({"url": u, "custom_domain": "good.example.com", "enable_cache": "true"}),
    ));
    let env = Env::start(sites, Limits::default()).await;
    let status = env.handle.status();
    for (reference, _, message) in &cases {
        let s = &status[*reference];
        assert_eq!(s.state, "refused", "{reference}");
        assert!(
            s.request_error_list.iter().any(|e| e.contains(message)),
            "{reference}: {:?} lacks {message:?}",
            s.request_error_list
        );
    }
    let good_status = &status["../../escape"];
    assert_eq!(good_status.state, "serving");
    assert_eq!(
        good_status.warning_list,
        ["enable_cache: not supported by this frontend, ignored"]
    );
    let mut c = env.conn("good.example.com").await;
    let (s, _, text) = send(&mut c, get("good.example.com", "/")).await;
    assert_eq!(
        (s, text.lines().next()),
        (StatusCode::OK, Some("backend GOOD"))
    );
    // Its log file is inside the log directory, named without a path.
    let log = env.log_dir().join("_2E_2E_2F_2E_2E_2Fescape.log");
    eventually(|| log.exists()).await;
    assert_eq!(std::fs::read_dir(env.log_dir()).unwrap().count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_backends_checked_only_when_asked() {
    let backend_pki = Pki::new();
    let t = tls_backend("T", &backend_pki).await;
    let u = format!("https://localhost:{}", t.addr.port());
    let env = Env::start(
        vec![
            site("SITE-U", json!({"url": u, "custom_domain": "u.example.com"})),
            site(
                "SITE-V",
                json!({"url": u, "custom_domain": "v.example.com", "ssl-proxy-verify": "true",
                       "ssl_proxy_ca_crt": backend_pki.ca_pem}),
            ),
            site(
                "SITE-W",
                json!({"url": u, "custom_domain": "w.example.com", "ssl-proxy-verify": true,
                       "ssl_proxy_ca_crt": Pki::new().ca_pem}),
            ),
            // The HTTPS side has its own backend.
            site(
                "SITE-H",
                json!({"url": "http://localhost:1", "https-url": u, "custom_domain": "h.example.com"}),
            ),
        ],
        Limits::default(),
    )
    .await;
    for (host, expected) in [
        ("u.example.com", StatusCode::OK),
        ("v.example.com", StatusCode::OK),
        ("w.example.com", StatusCode::BAD_GATEWAY),
        ("h.example.com", StatusCode::OK),
    ] {
        let mut c = env.conn(host).await;
        let (status, _, text) = send(&mut c, get(host, "/tls")).await;
        assert_eq!(status, expected, "{host}: {text}");
        if status == StatusCode::OK {
            assert!(text.starts_with("backend T\npath /tls\n"), "{text}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_backends_refused_unless_allowed() {
    let a = backend("A").await;
    let sites = vec![
        site(
            "SITE-IP",
            json!({"url": url(&a), "custom_domain": "ip.example.com"}),
        ),
        site(
            "SITE-NAME",
            json!({"url": format!("http://localhost:{}", a.addr.port()),
                   "custom_domain": "name.example.com"}),
        ),
    ];
    let env = Env::start(sites.clone(), Limits::default()).await;
    let mut c = env.conn("ip.example.com").await;
    assert_eq!(
        send(&mut c, get("ip.example.com", "/")).await.0,
        StatusCode::OK
    );
    env.reload_strict(sites);
    for host in ["ip.example.com", "name.example.com"] {
        let mut c = env.conn(host).await;
        assert_eq!(
            send(&mut c, get(host, "/")).await.0,
            StatusCode::BAD_GATEWAY,
            "{host}"
        );
    }
    assert_eq!(env.handle.counters().connect_failures, 2);
}
