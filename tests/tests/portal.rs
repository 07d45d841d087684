//! The web portal (issue 23) in a real Chromium driven through WebDriver (Debian's
//! `chromium` and `chromium-driver`, `scripts/install-deps`), against `slapos up
//! --unhosted --replicas 1`: a real replica, its mTLS gateway serving `/portal/`, and a
//! real node agent that deploys what the portal requests.
//!
//! Alice signs in with a password (set by the operator with `slapos user password`),
//! requests the sample release through the form generated from its JSON schema, with a
//! hostile title and an HTML parameter (both render as text, checked in the DOM), sees it
//! become running and its connection parameters appear, stops it, and signs out (her
//! session then fails on the gateway too). Bob signs in, sees none of it, and Alice's
//! service's URL answers 404 to him. A POST without the form's CSRF token is refused.
//! Alice also provides a computer (registered with her certificate, a hostile title):
//! her servers page lists it, the title as text; Bob's lists nothing. The master group's
//! page answers Bob 404 and shows the admin the one replica leading.
//! Screenshots of each page at 375 and 1440 px go to
//! `$CARGO_TARGET_TMPDIR/portal-screenshots/`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use slapos_e2e::agent::{open_dir, text, wait_for, Up};
use slapos_e2e::slapos_bin;

const ALICE_PASSWORD: &str = "alice's long passphrase";
const BOB_PASSWORD: &str = "bob's own long passphrase";
const ADMIN_PASSWORD: &str = "the operator's long passphrase";
const HOSTILE_TITLE: &str = "<script>alert(1)</script>";
const HTML_PARAMETER: &str = "<b>bold</b> & <i>it</i>";

/// chromedriver on a free port, stopped on drop with the browsers it started (found by
/// their profile directory: a test that fails leaves no browser behind).
struct Driver {
    child: Child,
    port: u16,
    profile: PathBuf,
}

impl Driver {
    fn start(log: &Path, profile: &Path) -> Driver {
        let port = slapos_harness::free_port().expect("a free port");
        let child = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log).unwrap())
            .spawn()
            .expect("chromedriver (apt-get install chromium-driver: scripts/install-deps)");
        wait_for("chromedriver to listen", Duration::from_secs(30), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        Driver {
            child,
            port,
            profile: profile.to_owned(),
        }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let mark = format!("--user-data-dir={}", self.profile.display());
        for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
            if cmdline.split(|b| *b == 0).any(|a| a == mark.as_bytes()) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
    }
}

/// `slapos user password` as the operator `slapos up` made (its master TLS env).
fn set_password(via: &str, env: &str, person: &str, password: &str) {
    let mut cmd = Command::new(slapos_bin());
    cmd.args(["user", "password", "--via", via, "--person", person])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for pair in env.split(' ') {
        let (k, v) = pair.split_once('=').expect("VAR=value");
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("slapos user password");
    writeln!(child.stdin.take().unwrap(), "{password}").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "user password {person}: {}",
        text(&out)
    );
}

/// `slapos user add` for `person` on `gateway` (their certificate and client
/// configuration under `<root>/<person>`), then `slapos computer register` with it: a
/// computer of theirs, titled `title`, in `region`.
fn register_computer(
    via: &str,
    env: &str,
    root: &Path,
    gateway: &str,
    person: &str,
    (id, title, region): (&str, &str, &str),
) {
    let out_dir = root.join(person);
    let mut add = Command::new(slapos_bin());
    add.args(["user", "add", "--via", via, "--person", person])
        .args(["--gateway", gateway, "--out"])
        .arg(&out_dir);
    for pair in env.split(' ') {
        let (k, v) = pair.split_once('=').expect("VAR=value");
        add.env(k, v);
    }
    let out = add.output().unwrap();
    assert!(out.status.success(), "user add {person}: {}", text(&out));
    let cfg = std::fs::read_to_string(out_dir.join("slapos-client.cfg")).unwrap();
    let value = |key: &str| {
        cfg.lines()
            .find_map(|l| l.strip_prefix(&format!("{key} = ")))
            .unwrap_or_else(|| panic!("{key} in {cfg}"))
            .to_owned()
    };
    let out = Command::new(slapos_bin())
        .args(["computer", "register", "--gateway", gateway])
        .args(["--ca", &value("master_ca_file")])
        .args(["--cert", &value("cert_file"), "--key", &value("key_file")])
        .args(["--id", id, "--title", title, "--region", region])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "computer register {id}: {}",
        text(&out)
    );
}

/// `curl -k` (the browser's view of TLS here: the test trusts the gateway): the status.
fn curl_status(url: &str, cookie: &str, extra: &[&str]) -> u16 {
    let out = Command::new("curl")
        .args([
            "-sk",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--max-time",
            "30",
        ])
        .args(["-H", &format!("Cookie: {cookie}")])
        .args(extra)
        .arg(url)
        .output()
        .expect("curl");
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or(0)
}

/// The server's time for a GET (first byte after the TLS handshake, curl's view), in ms:
/// median and maximum of 20. Printed, never asserted.
fn server_time(url: &str, cookie: &str) -> (f64, f64) {
    let mut ms: Vec<f64> = (0..20)
        .map(|_| {
            let out = Command::new("curl")
                .args(["-sk", "-o", "/dev/null", "--max-time", "30"])
                .args(["-w", "%{time_appconnect} %{time_starttransfer}"])
                .args(["-H", &format!("Cookie: {cookie}")])
                .arg(url)
                .output()
                .expect("curl");
            let t = String::from_utf8_lossy(&out.stdout).into_owned();
            let (a, b) = t.split_once(' ').unwrap_or(("0", "0"));
            (b.parse::<f64>().unwrap_or(0.0) - a.parse::<f64>().unwrap_or(0.0)) * 1000.0
        })
        .collect();
    ms.sort_by(f64::total_cmp);
    (ms[10], ms[19])
}

fn shots_dir() -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR")).join("portal-screenshots");
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// The page at 375 and 1440 px wide: saved as `<name>-<width>.png`; nothing wider than
/// the window, every visible form control labelled.
async fn look(c: &Client, name: &str) {
    for width in [375u32, 1440] {
        c.set_window_size(width, 1000).await.unwrap();
        let checks = c
            .execute(
                "const overflow = document.documentElement.scrollWidth > window.innerWidth;
                 const unlabelled = [...document.querySelectorAll('input, select, textarea')]
                   .filter(e => e.type !== 'hidden')
                   .filter(e => !(e.id && document.querySelector('label[for=\"' + e.id + '\"]'))
                                && !e.getAttribute('aria-label'))
                   .map(e => e.name);
                 return [overflow, unlabelled, document.documentElement.scrollWidth, window.innerWidth];",
                vec![],
            )
            .await
            .unwrap();
        assert_eq!(checks[0], false, "{name} at {width} px overflows: {checks}");
        assert_eq!(
            checks[1].as_array().map(Vec::len),
            Some(0),
            "{name} at {width} px has unlabelled controls: {checks}"
        );
        let png = c.screenshot().await.unwrap();
        let path = shots_dir().join(format!("{name}-{width}.png"));
        std::fs::write(&path, png).unwrap();
        eprintln!("screenshot {}", path.display());
    }
    c.set_window_size(1440, 1000).await.unwrap();
}

/// Clicks `locator` and waits until the browser has loaded the page that follows (a
/// marker set on the old page is gone).
async fn click_nav(c: &Client, locator: Locator<'_>) {
    c.execute("window.__before_click = true;", vec![])
        .await
        .unwrap();
    // Found and clicked again if the live part of the page was replaced in between.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let clicked = match c.find(locator).await {
            Ok(e) => e.click().await,
            Err(e) => Err(e),
        };
        match clicked {
            Ok(()) => break,
            Err(e) => {
                assert!(Instant::now() < deadline, "clicking {locator:?}: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let done = c
            .execute(
                "return window.__before_click === undefined && document.readyState === 'complete';",
                vec![],
            )
            .await
            .map(|v| v == true)
            .unwrap_or(false);
        if done {
            return;
        }
        assert!(Instant::now() < deadline, "no new page after a click");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn sign_in(c: &Client, portal: &str, person: &str, password: &str) {
    c.goto(&format!("{portal}sign-in")).await.unwrap();
    assert_eq!(path(c).await, "/portal/sign-in", "already signed in");
    c.find(Locator::Id("person"))
        .await
        .unwrap()
        .send_keys(person)
        .await
        .unwrap();
    c.find(Locator::Id("password"))
        .await
        .unwrap()
        .send_keys(password)
        .await
        .unwrap();
    click_nav(c, Locator::Css("main form button[type=submit]")).await;
    // Signed in (the services page) or refused (the form again, with its error).
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if path(c).await == "/portal/services" || c.find(Locator::Css(".error")).await.is_ok() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "signing in {person}: {} {}",
            path(c).await,
            c.source().await.unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn sign_out(c: &Client) {
    click_nav(c, Locator::Css("form[action='/portal/sign-out'] button")).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while path(c).await != "/portal/sign-in" {
        assert!(
            Instant::now() < deadline,
            "not signed out: {} {}",
            path(c).await,
            c.source().await.unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn path(c: &Client) -> String {
    c.current_url().await.unwrap().path().to_owned()
}

/// Waits until `done` says so, without reloading: the page updates itself from the
/// server's events (a generous deadline: it bounds a hang, it measures nothing).
async fn until(
    c: &Client,
    what: &str,
    within: Duration,
    mut done: impl AsyncFnMut(&Client) -> bool,
) {
    let deadline = Instant::now() + within;
    loop {
        if done(c).await {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: not within {within:?}; the page: {}",
            c.source().await.unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Marks the page, to tell later that it was not reloaded.
async fn mark(c: &Client) {
    c.execute("window.__not_reloaded = true;", vec![])
        .await
        .unwrap();
}

async fn not_reloaded(c: &Client) -> bool {
    c.execute("return window.__not_reloaded === true;", vec![])
        .await
        .unwrap()
        == true
}

/// The state the page shows (read in one script: the live part may be replaced by the
/// server's events at any time, which would make a held element stale).
async fn state(c: &Client) -> String {
    c.execute(
        "const e = document.querySelector('#state [data-state]'); return e ? e.dataset.state : '';",
        vec![],
    )
    .await
    .unwrap()
    .as_str()
    .unwrap_or("")
    .to_owned()
}

#[test]
fn a_person_requests_watches_and_stops_a_service_in_a_real_browser() {
    let dir = tempfile::tempdir().unwrap();
    let root = open_dir(&dir);
    let up = Up::launch(
        &root,
        &["--unhosted", "--replicas", "1"],
        Duration::from_secs(180),
    );
    let cluster: serde_json::Value =
        serde_json::from_slice(&std::fs::read(up.dir.join("cluster.json")).unwrap()).unwrap();
    let via = up.api_addrs().join(",");
    let env = cluster["admin"]["master_tls_env"]
        .as_str()
        .unwrap()
        .to_owned();
    let sample = cluster["sample"]["software_release"]
        .as_str()
        .expect("the sample release")
        .to_owned();
    set_password(&via, &env, "alice", ALICE_PASSWORD);
    set_password(&via, &env, "bob", BOB_PASSWORD);
    set_password(&via, &env, "admin", ADMIN_PASSWORD);
    // Alice provides a computer whose title is hostile (its owner chose it).
    register_computer(
        &via,
        &env,
        &root,
        up.urls[0].trim_end_matches('/'),
        "alice",
        ("COMP-ALICE", HOSTILE_TITLE, "eu-west"),
    );
    // Too short: refused before anything is sent.
    let mut short = Command::new(slapos_bin());
    short
        .args(["user", "password", "--via", &via, "--person", "carol"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = short.spawn().unwrap();
    writeln!(child.stdin.take().unwrap(), "short").unwrap();
    assert!(!child.wait_with_output().unwrap().status.success());

    let portal = format!("{}portal/", up.urls[0]);
    let profile = root.join("chromium-profile");
    let driver = Driver::start(&root.join("chromedriver.log"), &profile);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let mut caps = serde_json::Map::new();
        caps.insert("acceptInsecureCerts".into(), true.into());
        caps.insert(
            "goog:chromeOptions".into(),
            serde_json::json!({
                "binary": "/usr/bin/chromium",
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                    "--disable-gpu", "--window-size=1440,1000", "--hide-scrollbars",
                    // The gateway's certificate is the group's: the test's browser does
                    // not have the group's CA in its store.
                    "--ignore-certificate-errors",
                    format!("--user-data-dir={}", profile.display()),
                ]
            }),
        );
        let c = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(caps)
            .connect(&format!("http://127.0.0.1:{}", driver.port))
            .await
            .expect("a WebDriver session of chromium");

        // Signed out, the portal asks for a password.
        c.goto(&portal).await.unwrap();
        assert_eq!(path(&c).await, "/portal/sign-in");
        look(&c, "sign-in").await;

        // A wrong password is refused, saying nothing of who exists.
        sign_in(&c, &portal, "alice", "not her password").await;
        let error = c
            .find(Locator::Css(".error"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert_eq!(error, "Unknown person or wrong password.");

        sign_in(&c, &portal, "alice", ALICE_PASSWORD).await;
        assert_eq!(path(&c).await, "/portal/services");
        let main = c
            .find(Locator::Css("main"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(main.contains("No service yet."), "{main}");
        look(&c, "services-empty").await;
        // The session cookie as the issue asks.
        let session = c.get_named_cookie("slapos_session").await.unwrap();
        assert_eq!(
            (session.secure(), session.http_only()),
            (Some(true), Some(true))
        );
        assert_eq!(format!("{:?}", session.same_site()), "Some(Strict)");
        let cookie = format!("slapos_session={}", session.value());

        // The catalog offers the sample (supplied to the node); its form comes from the
        // release's JSON schema.
        c.goto(&format!("{portal}request")).await.unwrap();
        look(&c, "catalog").await;
        click_nav(
            &c,
            Locator::Css(&format!("button[aria-label='Request {sample}']")),
        )
        .await;
        let name = c
            .find(Locator::Id("f-name"))
            .await
            .expect("a field from the schema");
        assert_eq!(name.prop("value").await.unwrap().as_deref(), Some("world"));
        name.clear().await.unwrap();
        name.send_keys(HTML_PARAMETER).await.unwrap();
        c.find(Locator::Id("title"))
            .await
            .unwrap()
            .send_keys(HOSTILE_TITLE)
            .await
            .unwrap();
        look(&c, "request-form").await;
        click_nav(&c, Locator::Id("submit-request")).await;
        let service = path(&c).await;
        assert!(
            service.starts_with("/portal/services/SOFTINST-"),
            "{service}"
        );
        let service_url = format!("{}{}", up.urls[0].trim_end_matches('/'), service);

        // Hostile values render as text: the title is the heading's text, no element came
        // out of them, and no dialog opened (WebDriver would fail on an open alert).
        // (Read in one script: the live part of the page may be replaced meanwhile.)
        let dom = c
            .execute(
                "const t = document.getElementById('title');
                 const p = document.getElementById('parameters');
                 return [t.textContent, t.children.length,
                         document.querySelectorAll('main script').length,
                         p.textContent, p.querySelectorAll('b, i').length];",
                vec![],
            )
            .await
            .unwrap();
        assert_eq!(dom[0], HOSTILE_TITLE, "{dom}");
        assert_eq!((dom[1].as_u64(), dom[2].as_u64()), (Some(0), Some(0)), "{dom}");
        assert!(dom[3].as_str().unwrap().contains(HTML_PARAMETER), "{dom}");
        assert_eq!(dom[4].as_u64(), Some(0), "{dom}");

        // The node deploys it: running, and its connection parameters appear (the
        // greeting carries the parameter, as text), without reloading the page.
        mark(&c).await;
        until(
            &c,
            "the service runs with its connection parameters",
            Duration::from_secs(300),
            async |c: &Client| {
                let conn = c
                    .execute(
                        "const e = document.getElementById('connection'); return e ? e.textContent : '';",
                        vec![],
                    )
                    .await
                    .unwrap();
                state(c).await == "running" && conn.as_str().unwrap_or("").contains("greeting")
            },
        )
        .await;
        assert!(not_reloaded(&c).await, "the page was reloaded");
        let conn = c
            .execute(
                "const e = document.getElementById('connection');
                 return [e.textContent, e.querySelectorAll('b, i').length,
                         [...e.querySelectorAll('button[data-copy]')].filter(b => !b.hidden).length];",
                vec![],
            )
            .await
            .unwrap();
        assert!(
            conn[0]
                .as_str()
                .unwrap()
                .contains(&format!("hello, {HTML_PARAMETER}")),
            "{conn}"
        );
        assert_eq!(conn[1].as_u64(), Some(0), "{conn}");
        assert!(conn[2].as_u64().unwrap_or(0) > 0, "copy buttons shown: {conn}");
        look(&c, "service-running").await;
        for page in [format!("{portal}services"), service_url.clone()] {
            let (median, max) = server_time(&page, &cookie);
            eprintln!("server time of {page}: median {median:.1} ms, max {max:.1} ms of 20");
        }

        // A POST without the form's token is refused, even with the session cookie.
        let status = curl_status(
            &format!("{service_url}/state"),
            &cookie,
            &["-X", "POST", "--data", "state=stopped"],
        );
        assert_eq!(status, 403);

        // Stop.
        click_nav(&c, Locator::Id("stop")).await;
        mark(&c).await;
        until(
            &c,
            "the service stops",
            Duration::from_secs(300),
            async |c: &Client| state(c).await == "stopped",
        )
        .await;
        assert!(not_reloaded(&c).await, "the page was reloaded");
        look(&c, "service-stopped").await;
        c.goto(&format!("{service_url}/destroy")).await.unwrap();
        look(&c, "destroy-confirm").await;
        c.goto(&format!("{portal}services")).await.unwrap();
        look(&c, "services").await;

        // Her servers: the computer she provides, its hostile title as text.
        c.goto(&format!("{portal}servers")).await.unwrap();
        let servers = c
            .execute(
                "const t = document.getElementById('servers');
                 return t ? [t.textContent, t.querySelectorAll('tbody tr').length,
                             t.querySelector('.title').textContent,
                             t.querySelector('.title').children.length,
                             document.querySelectorAll('main script').length] : [];",
                vec![],
            )
            .await
            .unwrap();
        assert_eq!(servers[1].as_u64(), Some(1), "{servers}");
        assert_eq!(servers[2], HOSTILE_TITLE, "{servers}");
        assert_eq!((servers[3].as_u64(), servers[4].as_u64()), (Some(0), Some(0)), "{servers}");
        let row = servers[0].as_str().unwrap();
        assert!(row.contains("COMP-ALICE") && row.contains("eu-west"), "{servers}");
        assert!(row.contains("never"), "no node called yet: {servers}");
        look(&c, "servers").await;
        let (median, max) = server_time(&format!("{portal}servers"), &cookie);
        eprintln!("server time of {portal}servers: median {median:.1} ms, max {max:.1} ms of 20");

        // Sign out: the session is over on the gateway too.
        sign_out(&c).await;
        assert_eq!(curl_status(&format!("{portal}services"), &cookie, &[]), 303);

        // Bob sees none of it, and Alice's service is not found for him.
        sign_in(&c, &portal, "bob", BOB_PASSWORD).await;
        assert_eq!(path(&c).await, "/portal/services");
        let main = c
            .find(Locator::Css("main"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(main.contains("No service yet."), "{main}");
        assert!(!main.contains(HOSTILE_TITLE), "{main}");
        // Nor her computer.
        c.goto(&format!("{portal}servers")).await.unwrap();
        let main = c
            .find(Locator::Css("main"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(main.contains("You provide no computer."), "{main}");
        assert!(!main.contains("COMP-ALICE"), "{main}");
        c.goto(&service_url).await.unwrap();
        let h1 = c
            .find(Locator::Css("h1"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert_eq!(h1, "404");
        let bob = c.get_named_cookie("slapos_session").await.unwrap();
        assert_eq!(
            curl_status(
                &service_url,
                &format!("slapos_session={}", bob.value()),
                &[]
            ),
            404
        );
        look(&c, "not-found").await;
        // The master group's page is for admins: Bob is told there is no such page,
        // and his menu has no link to it.
        assert_eq!(
            curl_status(
                &format!("{portal}group"),
                &format!("slapos_session={}", bob.value()),
                &[]
            ),
            404
        );
        c.goto(&format!("{portal}services")).await.unwrap();
        assert!(c.find(Locator::Css("a[href='/portal/group']")).await.is_err());
        sign_out(&c).await;

        // The admin sees it: the one replica leads, no warning (timers of a LAN).
        sign_in(&c, &portal, "admin", ADMIN_PASSWORD).await;
        click_nav(&c, Locator::Css("a[href='/portal/group']")).await;
        let group = c
            .execute(
                "const m = document.getElementById('members');
                 return [m.tBodies[0].rows.length,
                         document.getElementById('group-summary').textContent,
                         m.tBodies[0].rows[0].textContent,
                         !!document.getElementById('group-warnings')];",
                vec![],
            )
            .await
            .unwrap();
        assert_eq!(group[0].as_u64(), Some(1), "{group}");
        let summary = group[1].as_str().unwrap();
        assert!(summary.contains("Leaderreplica "), "{group}");
        assert!(summary.contains("heartbeat"), "{group}");
        assert!(group[2].as_str().unwrap().contains("leader"), "{group}");
        assert_eq!(group[3], false, "{group}");
        look(&c, "group").await;
        sign_out(&c).await;

        // Alice destroys what she made (confirmed on its own page).
        sign_in(&c, &portal, "alice", ALICE_PASSWORD).await;
        c.goto(&format!("{service_url}/destroy")).await.unwrap();
        click_nav(&c, Locator::Id("confirm-destroy")).await;
        assert_eq!(state(&c).await, "destroying");
        sign_out(&c).await;
        c.close().await.unwrap();
    });
    // `slapos up` said where the portal is and how the admin signs in.
    let said = std::fs::read_to_string(root.join("up.log")).unwrap();
    assert!(said.contains(&format!("portal        {portal}")), "{said}");
    assert!(said.contains("slapos user password --via"), "{said}");
    drop(driver);
    drop(up);
}
