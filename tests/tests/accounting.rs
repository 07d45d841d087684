//! Accounting end to end: a three-replica cluster, a gateway per person (until
//! certificates identify callers, a gateway's `person` is who calls through it), the real
//! slapos.slap client formatting computers, requesting instances and posting usage
//! journals as `slapos node report` does, and the `slapos` commands reading invoices.
//!
//! A simulated day, compressed into seconds (24 hourly journals per computer, whose stop
//! dates are the real time they are posted): two customers on two computers priced
//! differently (one by its own price, one by its region's), a stop and restart, a destroy,
//! the leader killed in the middle while journals keep coming, every journal posted again
//! at the end. The invoices must match a computation by hand, no movement may be lost or
//! doubled, and forged or malformed journals must be refused without changing anything.

use serde_json::{json, Value};
use slapos_domain::Timestamp;
use slapos_domain::{format_date, parse_date, Decimal};
use slapos_e2e::compat::venv;
use slapos_e2e::slapos_bin;
use slapos_harness::ProcessCluster;
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

/// The real Python client, one call per line (`tests/compat/accounting.py`).
struct Driver {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Driver {
    fn spawn() -> Driver {
        let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("compat/accounting.py");
        let mut child = Command::new(venv().join("bin/python"))
            .arg(script)
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("run the Python driver");
        Driver {
            stdin: child.stdin.take().expect("stdin"),
            stdout: BufReader::new(child.stdout.take().expect("stdout")),
            child,
        }
    }

    fn call(&mut self, url: &str, action: &str, args: &[&str]) -> Result<Value, String> {
        let line = json!({"url": url, "action": action, "args": args});
        writeln!(self.stdin, "{line}").expect("write to the driver");
        self.stdin.flush().expect("flush");
        let mut answer = String::new();
        self.stdout.read_line(&mut answer).expect("read the driver");
        let answer: Value = serde_json::from_str(&answer)
            .unwrap_or_else(|e| panic!("driver answered {answer:?}: {e}"));
        if answer["ok"] == json!(true) {
            Ok(answer["result"].clone())
        } else {
            Err(answer["error"].as_str().unwrap_or("?").to_string())
        }
    }

    /// Retried until accepted, as a node retries: across a leader change a call may fail
    /// (or fail to answer after it was applied).
    fn call_until_ok(&mut self, url: &str, action: &str, args: &[&str]) -> Value {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            match self.call(url, action, args) {
                Ok(v) => return v,
                Err(e) if Instant::now() < deadline => {
                    eprintln!("{action} {args:?}: {e}; retrying");
                    std::thread::sleep(Duration::from_millis(300));
                }
                Err(e) => panic!("{action} {args:?} never accepted: {e}"),
            }
        }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `slapos <args> --gateway <url>`: (success, stdout, stderr).
fn slapos(url: &str, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(slapos_bin())
        .args(args)
        .args(["--gateway", url])
        .output()
        .expect("run slapos");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn slapos_ok(url: &str, args: &[&str]) -> String {
    let (ok, out, err) = slapos(url, args);
    assert!(ok, "slapos {args:?} failed: {err}");
    out
}

fn slapos_json(url: &str, args: &[&str]) -> Value {
    let mut args = args.to_vec();
    args.push("--json");
    serde_json::from_str(&slapos_ok(url, &args)).expect("JSON output")
}

fn now() -> Timestamp {
    let micros = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros() as u64;
    Timestamp::from_micros(micros)
}

fn dec(v: &Value) -> Decimal {
    Decimal::parse(v.as_str().unwrap_or_else(|| panic!("not a decimal: {v}"))).unwrap()
}

fn date(v: &Value) -> Timestamp {
    parse_date(v.as_str().unwrap_or_else(|| panic!("not a date: {v}"))).unwrap()
}

/// Two movement lists are the same, or the first difference is named.
fn same_ledger(before: &Value, after: &Value, what: &str) {
    let (b, a) = (
        before["result_list"].as_array().unwrap(),
        after["result_list"].as_array().unwrap(),
    );
    assert_eq!(
        b.len(),
        a.len(),
        "{what}: {} movements before, {} after",
        b.len(),
        a.len()
    );
    if let Some((x, y)) = b.iter().zip(a).find(|(x, y)| x != y) {
        panic!("{what}: {x} became {y}");
    }
}

fn line<'a>(invoice: &'a Value, resource: &str) -> &'a Value {
    invoice["line_list"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["resource"] == resource)
        .unwrap_or_else(|| panic!("no {resource} line in {invoice:#}"))
}

/// A hosting line as computed by hand from its items: each item's hours are the span it
/// covers, its amount the hours at `price`, the line the sum.
fn check_hosting(line: &Value, price: &str, movements: usize) -> Decimal {
    let price = Decimal::parse(price).unwrap();
    let items = line["items"].as_array().unwrap();
    let ids: std::collections::BTreeSet<_> =
        items.iter().map(|i| i["movement"].to_string()).collect();
    assert_eq!(ids.len(), movements, "{line:#}");
    let (mut quantity, mut amount) = (Decimal::ZERO, Decimal::ZERO);
    for item in items {
        let span = date(&item["stop"]).micros() - date(&item["start"]).micros();
        let hours = Decimal::hours_of_micros(span);
        assert_eq!(dec(&item["quantity"]), hours, "{item:#}");
        assert_eq!(
            dec(&item["amount"]),
            hours.checked_mul(price).unwrap(),
            "{item:#}"
        );
        quantity = quantity.checked_add(hours).unwrap();
        amount = amount.checked_add(dec(&item["amount"])).unwrap();
    }
    assert_eq!(dec(&line["quantity"]), quantity);
    assert_eq!(dec(&line["amount"]), amount);
    assert!(quantity > Decimal::ZERO);
    amount
}

async fn wait_answering(addr: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while tokio::net::TcpStream::connect(addr).await.is_err() {
        assert!(Instant::now() < deadline, "gateway {addr} did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_day_of_two_customers_is_invoiced_as_computed_by_hand_and_nothing_is_lost() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = ProcessCluster::new(&slapos_bin(), dir.path());
    cluster.start(3).await.expect("cluster");
    slapos_e2e::grant_admin(&cluster.api_addrs(), "admin");
    // host 1: the provider (and the nodes' gateway), 2: alice, 3: bob, 4: the admin
    let mut url = std::collections::BTreeMap::new();
    for (host, person) in [(1, "provider"), (2, "alice"), (3, "bob"), (4, "admin")] {
        cluster.gateway_extra = format!("[slap]\nperson = \"{person}\"\n");
        let addr = cluster.start_gateway(host).expect("gateway");
        wait_answering(&addr).await;
        url.insert(person, format!("http://{addr}/"));
    }
    let (provider, alice, bob, admin) = (
        url["provider"].as_str(),
        url["alice"].as_str(),
        url["bob"].as_str(),
        url["admin"].as_str(),
    );
    let from = format_date(Timestamp::from_micros(now().micros() - 60_000_000));

    // The provider's computers and prices; COMP-2 is priced by its region.
    slapos_ok(
        provider,
        &["computer", "register", "--id", "COMP-1", "--region", "eu"],
    );
    slapos_ok(
        provider,
        &["computer", "register", "--id", "COMP-2", "--region", "us"],
    );
    for args in [
        [
            "--computer",
            "COMP-1",
            "--resource",
            "hosting",
            "--price",
            "0.5",
        ],
        [
            "--computer",
            "COMP-1",
            "--resource",
            "cpu",
            "--price",
            "0.01",
        ],
        ["--region", "us", "--resource", "hosting", "--price", "0.2"],
        ["--region", "us", "--resource", "cpu", "--price", "0.02"],
        ["--region", "eu", "--resource", "cpu", "--price", "99"],
    ] {
        let mut all = vec!["price", "set"];
        all.extend(args);
        slapos_ok(provider, &all);
    }
    // someone else's computer cannot be priced
    let (ok, _, err) = slapos(
        alice,
        &[
            "price",
            "set",
            "--computer",
            "COMP-1",
            "--resource",
            "cpu",
            "--price",
            "0",
        ],
    );
    assert!(!ok && err.contains("403"), "{err}");

    let mut py = Driver::spawn();
    py.call(provider, "format", &["COMP-1", "4"]).unwrap();
    py.call(provider, "format", &["COMP-2", "4"]).unwrap();
    // The provider supplies the release its customers request.
    py.call(provider, "supply", &["COMP-1"]).unwrap();
    py.call(provider, "supply", &["COMP-2"]).unwrap();
    let a = py
        .call(alice, "request", &["A", "COMP-1", "started"])
        .unwrap();
    let b = py
        .call(bob, "request", &["B", "COMP-2", "started"])
        .unwrap();
    let (a, b) = (
        a.as_str().unwrap().to_string(),
        b.as_str().unwrap().to_string(),
    );
    let free = if a == "slappart1" {
        "slappart2"
    } else {
        "slappart1"
    };

    // The day: a journal per computer per hour.
    let mut journals: Vec<(&str, String, Vec<String>)> = Vec::new();
    let mut killed = None;
    for h in 0..24u32 {
        match h {
            6 => {
                py.call_until_ok(alice, "request", &["A", "COMP-1", "stopped"]);
            }
            12 => {
                py.call_until_ok(alice, "request", &["A", "COMP-1", "started"]);
                let leader = cluster.wait_leader(Duration::from_secs(20)).await.unwrap();
                cluster.kill9(leader).unwrap();
                killed = Some(leader);
            }
            16 => {
                let id = killed.take().unwrap();
                cluster.spawn(id).unwrap();
            }
            18 => {
                py.call_until_ok(bob, "request", &["B", "COMP-2", "destroyed"]);
            }
            _ => {}
        }
        for (computer, lines) in [
            (
                "COMP-1",
                vec![format!("{a}={}", h + 1), format!("{free}=5")],
            ),
            ("COMP-2", vec![format!("{b}={}", 2 * h)]),
        ] {
            let stop = format_date(now());
            let mut args = vec![computer.to_string(), stop.clone()];
            args.extend(lines.iter().cloned());
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            py.call_until_ok(provider, "report", &args);
            journals.push((computer, stop, lines));
        }
    }
    let to = format_date(Timestamp::from_micros(now().micros() + 3_600_000_000));
    let period = ["--from", from.as_str(), "--to", to.as_str()];
    let provided = |gw: &str| {
        let mut args = vec!["usage", "--provider", "provider"];
        args.extend(period);
        slapos_json(gw, &args)
    };
    let before = provided(provider);
    let usage: Vec<&Value> = before["result_list"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["kind"] == "usage")
        .collect();
    // exactly once: 24 journals of two lines on COMP-1, of one on COMP-2
    assert_eq!(usage.len(), 72, "{before:#}");
    let distinct: std::collections::BTreeSet<_> = usage
        .iter()
        .map(|m| {
            (
                m["computer_guid"].to_string(),
                m["compute_partition_id"].to_string(),
                m["stop"].to_string(),
            )
        })
        .collect();
    assert_eq!(distinct.len(), 72);
    // the free partition's usage is recorded and billed to no one
    assert!(usage
        .iter()
        .any(|m| m["compute_partition_id"] == free && m["destination"].is_null()));

    // Every journal posted again (a node that lost its answers): nothing changes.
    for (computer, stop, lines) in &journals {
        let mut args = vec![computer.to_string(), stop.clone()];
        args.extend(lines.iter().cloned());
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        py.call_until_ok(provider, "report", &args);
    }
    // a replica restarted from its disk serves the same ledger
    let after = provided(admin);
    same_ledger(&before, &after, "re-posted journals changed the ledger");

    // Invoices by hand. alice: cpu 1+2+...+24 = 300 at COMP-1's own 0.01 (not the eu
    // region's 99) = 3; hosting 0-6 and 12-now at 0.5.
    let invoice = |gw: &str, customer: Option<&str>| {
        let mut args = vec!["invoice"];
        args.extend(period);
        if let Some(c) = customer {
            args.extend(["--customer", c]);
        }
        slapos_json(gw, &args)
    };
    let alice_invoice = invoice(alice, None);
    let cpu = line(&alice_invoice, "cpu");
    assert_eq!(
        (dec(&cpu["quantity"]), dec(&cpu["amount"])),
        (Decimal::from_int(300), Decimal::from_int(3))
    );
    let hosting = check_hosting(line(&alice_invoice, "hosting"), "0.5", 2);
    assert_eq!(
        dec(&alice_invoice["total"]["EUR"]),
        hosting.checked_add(Decimal::from_int(3)).unwrap()
    );
    // bob: cpu 0+2+...+46 = 552 at the us region's 0.02 = 11.04; hosting until destroyed
    let bob_invoice = invoice(bob, None);
    let cpu = line(&bob_invoice, "cpu");
    assert_eq!(dec(&cpu["quantity"]), Decimal::from_int(552));
    assert_eq!(dec(&cpu["amount"]), Decimal::parse("11.04").unwrap());
    let hosting = check_hosting(line(&bob_invoice, "hosting"), "0.2", 1);
    assert_eq!(
        dec(&bob_invoice["total"]["EUR"]),
        hosting
            .checked_add(Decimal::parse("11.04").unwrap())
            .unwrap()
    );
    // the admin reads the same; bob may not read alice's
    assert_eq!(
        invoice(admin, Some("alice"))["line_list"][0],
        alice_invoice["line_list"][0]
    );
    let (ok, _, err) = slapos(
        bob,
        &[
            "invoice",
            "--customer",
            "alice",
            "--from",
            &from,
            "--to",
            &to,
        ],
    );
    assert!(!ok && err.contains("403"), "{err}");

    // Forged and malformed journals: refused, nothing changes.
    let stop = format_date(now());
    let future = format_date(Timestamp::from_micros(now().micros() + 86_400_000_000));
    let refusals: Vec<(&str, Vec<String>, &str)> = vec![
        (
            "another computer's partition",
            vec!["COMP-1".into(), stop.clone(), "slappart9=1".into()],
            "403",
        ),
        (
            "negative quantity",
            vec!["COMP-1".into(), stop.clone(), format!("{a}=-4")],
            "400",
        ),
        (
            "period in the future",
            vec!["COMP-1".into(), future, format!("{a}=1")],
            "400",
        ),
        (
            "not a number",
            vec!["COMP-1".into(), stop.clone(), format!("{a}=lots")],
            "400",
        ),
    ];
    for (what, args, status) in &refusals {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let e = py.call(provider, "report", &args).expect_err(what);
        assert!(e.contains(status), "{what}: {e}");
    }
    let as_other = format!(
        "<?xml version=\"1.0\"?><journal><transaction type=\"Sale Packing List\"><start_date></start_date>\
         <stop_date>{stop}</stop_date><reference>COMP-2</reference><currency></currency>\
         <payment_mode></payment_mode><arrow type=\"Administration\"></arrow><movement>\
         <resource>cpu</resource><reference>{b}</reference><quantity>1</quantity><price>0</price>\
         <VAT></VAT></movement></transaction></journal>"
    );
    let e = py
        .call(provider, "raw_report", &["COMP-1", &as_other])
        .unwrap_err();
    assert!(
        e.contains("403"),
        "a computer posting another's journal: {e}"
    );
    let e = py
        .call(
            provider,
            "raw_report",
            &["COMP-1", "<journal><transaction>"],
        )
        .unwrap_err();
    assert!(e.contains("400"), "malformed: {e}");
    let oversized = format!("<journal>{}</journal>", "<!-- padding -->".repeat(17 << 16));
    let e = py
        .call(provider, "raw_report", &["COMP-1", &oversized])
        .unwrap_err();
    assert!(e.contains("413"), "oversized: {e}");
    // the JSON-RPC form of useComputer says why
    let answer = py
        .call(
            provider,
            "jsonrpc",
            &[
                "slapos.post.v0.compute_node_usage",
                &json!({"computer_guid": "COMP-1", "tioxml": as_other}).to_string(),
            ],
        )
        .unwrap();
    assert_eq!(answer["status"], 403, "{answer}");
    assert!(
        answer["body"]["title"]
            .as_str()
            .unwrap()
            .contains("posted a journal for 'COMP-2'"),
        "{answer}"
    );
    same_ledger(
        &before,
        &provided(provider),
        "a refused journal changed the ledger",
    );

    // Closing: the period becomes final, and no journal may land in it any more.
    let until = format_date(now());
    let (ok, _, err) = slapos(alice, &["invoice", "close", "--until", &until]);
    assert!(
        !ok && err.contains("403"),
        "only admins close periods: {err}"
    );
    slapos_ok(admin, &["invoice", "close", "--until", &until]);
    let closed = slapos_json(alice, &["invoice", "--from", &from, "--to", &until]);
    assert_eq!(closed["closed"], json!(true));
    let late = py
        .call(provider, "report", &["COMP-1", &from, &format!("{a}=1")])
        .unwrap_err();
    assert!(late.contains("409"), "{late}");
    let reopened = slapos_json(alice, &["invoice", "--from", &from, "--to", &until]);
    assert_eq!(
        (&reopened["line_list"], &reopened["total"]),
        (&closed["line_list"], &closed["total"])
    );
    // the table output names the lines and the total
    let table = slapos_ok(alice, &["invoice", "--from", &from, "--to", &to]);
    assert!(
        table.contains("hosting") && table.contains("cpu") && table.contains("total"),
        "{table}"
    );
}
