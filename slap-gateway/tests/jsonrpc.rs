//! The JSON-RPC v0 API: a replay of the captured slapproxy exchanges 73-80 against a
//! local state that the XML exchanges 00-72 built (through `serve_local`, as
//! `vectors_replay.rs` does), and the error cases.
//!
//! Deliberate differences, applied as normalisations to both sides (see `DESIGN.md`):
//! * `instance_guid` is the instance id `SOFTINST-n`, not `<title>___<requested_by>___<0|1>`:
//!   each side's guid is replaced by `<guid of TITLE>`; ours must be a `SOFTINST-n`. The
//!   requests of 76-78 name slapproxy's guid: it is translated to ours through the guids
//!   learned from earlier answers.
//! * `processing_timestamp` is an integer on both sides; its value is the replay's clock.
//! * quirk 1 (`ip_list` of a request lists every computer's partition of that id): the
//!   expected list keeps only the addresses the partition was formatted with.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{anyhow, Context, Result};
use serde_json::Value;
use slap_gateway::jsonrpc;
use slap_gateway::{serve_local, Endpoint, SlapContext, SlapResponse};
use slapos_domain::{RequestId, State, Timestamp};

const T0: u64 = 1_795_626_000_000_000;
/// XML exchanges the replay cannot reproduce (see `vectors_replay.rs`).
const XML_SKIPPED: &[u32] = &[40, 47, 48, 49, 50];

struct Exchange {
    number: u32,
    method: String,
    path: String,
    authorization: Option<String>,
    body: Vec<u8>,
    query: String,
    status: u16,
    response: Vec<u8>,
}

/// The repository's captured data (`testdata/`, its README says where each file came
/// from): the first ancestor of this crate holding it.
fn testdata() -> PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .map(|dir| dir.join("testdata"))
        .find(|dir| dir.join("README.md").is_file())
        .expect("testdata/ (the captured SLAP exchanges) in an ancestor of this crate")
}

fn find(h: &[u8], n: &[u8], from: usize) -> Option<usize> {
    h.get(from..)?
        .windows(n.len())
        .position(|w| w == n)
        .map(|p| p + from)
}

fn line_at(b: &[u8], at: usize) -> (&str, usize) {
    let end = find(b, b"\n", at).unwrap_or(b.len());
    (std::str::from_utf8(&b[at..end]).unwrap_or(""), end + 1)
}

fn raw_block(b: &[u8], marker: &str, from: usize) -> Result<Vec<u8>> {
    let at = find(b, marker.as_bytes(), from).ok_or_else(|| anyhow!("no '{marker}'"))?;
    let (line, next) = line_at(b, at);
    let size: usize = line[marker.len()..]
        .trim_start_matches(" (")
        .split(' ')
        .next()
        .unwrap_or("")
        .parse()?;
    b.get(next..next + size)
        .map(<[u8]>::to_vec)
        .ok_or_else(|| anyhow!("'{marker}' runs past the end"))
}

fn parse_exchange(file: &str, b: &[u8]) -> Result<Exchange> {
    let number: u32 = file.split('-').next().unwrap_or("").parse()?;
    let req = find(b, b"=== REQUEST ===\n", 0).ok_or_else(|| anyhow!("no request"))?;
    let (request_line, mut at) = line_at(b, req + "=== REQUEST ===\n".len());
    let mut parts = request_line.split(' ');
    let method = parts.next().unwrap_or("").to_string();
    let target = parts.next().unwrap_or("").to_string();
    let mut authorization = None;
    loop {
        let (line, next) = line_at(b, at);
        if line.is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(": ") {
            if k.eq_ignore_ascii_case("authorization") {
                authorization = Some(v.to_string());
            }
        }
        at = next;
    }
    let (path, query) = target.split_once('?').unwrap_or((&target, ""));
    let resp = find(b, b"=== RESPONSE ===\n", at).ok_or_else(|| anyhow!("no response"))?;
    let body = if method == "POST" {
        raw_block(b, "--- raw request body", at)?
    } else {
        Vec::new()
    };
    let (status_line, _) = line_at(b, resp + "=== RESPONSE ===\n".len());
    let status = status_line
        .split(' ')
        .nth(1)
        .ok_or_else(|| anyhow!("status"))?
        .parse()?;
    Ok(Exchange {
        number,
        method,
        path: path.to_string(),
        authorization,
        body,
        query: query.to_string(),
        status,
        response: raw_block(b, "--- raw response body", resp)?,
    })
}

fn load() -> Result<Vec<Exchange>> {
    let dir = testdata().join("vectors");
    let mut files: Vec<String> = std::fs::read_dir(&dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".txt") && n.as_bytes()[0].is_ascii_digit())
        .collect();
    files.sort();
    files
        .iter()
        .map(|f| parse_exchange(f, &std::fs::read(dir.join(f))?).with_context(|| f.clone()))
        .collect()
}

fn form(encoded: &[u8]) -> Vec<(String, String)> {
    slap_gateway::server::http::decode_form(encoded).expect("form")
}

fn ctx() -> SlapContext {
    SlapContext::proxy(Some("COMP-TEST")).with_software_product_list(
        "my-product https://example.com/products/my-product/software.cfg\n\
         other-product https://example.com/products/other/software.cfg",
    )
}

fn at(n: u32) -> Timestamp {
    Timestamp(T0 + u64::from(n) * 1_000_000)
}

/// The state after the XML exchanges 00-72.
fn xml_state(exchanges: &[Exchange]) -> State {
    let ctx = ctx();
    let mut state = State::new();
    for ex in exchanges.iter().filter(|e| e.number <= 72) {
        if XML_SKIPPED.contains(&ex.number) {
            continue;
        }
        let endpoint = Endpoint::from_path(&ex.path).expect("endpoint");
        let fields = if ex.method == "POST" {
            form(&ex.body)
        } else {
            form(ex.query.as_bytes())
        };
        serve_local(
            &ctx,
            &mut state,
            endpoint,
            &fields,
            ex.authorization.as_deref(),
            RequestId::new("jsonrpc-replay", u64::from(ex.number)),
            at(ex.number),
        );
    }
    state
}

fn json_call(state: &mut State, name: &str, body: &Value, n: u64) -> SlapResponse {
    jsonrpc::serve_local(
        &ctx(),
        state,
        name,
        "POST",
        Some("*/*"),
        body.to_string().as_bytes(),
        None,
        RequestId::new("jsonrpc-test", n),
        Timestamp(T0 + 100_000_000 + n),
    )
}

fn body_json(r: &SlapResponse) -> Value {
    serde_json::from_slice(&r.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", r.body_text()))
}

/// Replaces every `instance_guid` with `<guid of TITLE>`, recording (guid -> title).
fn normalize_guids(v: &mut Value, seen: &mut BTreeMap<String, String>) {
    match v {
        Value::Object(map) => {
            let title = map.get("title").and_then(Value::as_str).map(str::to_string);
            if let (Some(title), Some(Value::String(guid))) = (title, map.get_mut("instance_guid"))
            {
                seen.insert(guid.clone(), title.clone());
                *guid = format!("<guid of {title}>");
            }
            for (_, item) in map.iter_mut() {
                normalize_guids(item, seen);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|i| normalize_guids(i, seen)),
        _ => {}
    }
}

fn normalize_timestamp(v: &mut Value) -> Result<(), String> {
    if let Some(ts) = v.get_mut("processing_timestamp") {
        if !ts.is_u64() {
            return Err(format!("processing_timestamp {ts} is not an integer"));
        }
        *ts = Value::from(0);
    }
    Ok(())
}

#[test]
fn replay_jsonrpc_exchanges() -> Result<()> {
    let exchanges = load()?;
    let mut state = xml_state(&exchanges);
    // slapproxy guid -> title, and our guid by title.
    let mut theirs: BTreeMap<String, String> = BTreeMap::new();
    let mut ours_by_title: BTreeMap<String, String> = BTreeMap::new();
    let mut compared = 0;
    let mut shared_dropped = 0;
    let mut failures = Vec::new();
    for ex in exchanges.iter().filter(|e| (73..=80).contains(&e.number)) {
        let name = ex.path.trim_start_matches('/');
        // The request names slapproxy's guid: ours for the same title.
        let mut body: Value = serde_json::from_slice(&ex.body)?;
        if let Some(Value::String(guid)) = body.get_mut("instance_guid") {
            let title = theirs
                .get(guid.as_str())
                .ok_or_else(|| anyhow!("vector {}: guid {guid} not seen before", ex.number))?;
            *guid = ours_by_title
                .get(title)
                .ok_or_else(|| anyhow!("no guid of ours for {title}"))?
                .clone();
        }
        let ours = jsonrpc::serve_local(
            &ctx(),
            &mut state,
            name,
            &ex.method,
            Some("*/*"),
            body.to_string().as_bytes(),
            ex.authorization.as_deref(),
            RequestId::new("jsonrpc-replay", u64::from(ex.number)),
            at(ex.number),
        );
        compared += 1;
        assert_eq!(ours.content_type, "application/json");
        if ours.status != ex.status {
            failures.push(format!(
                "vector {}: status {} instead of {}: {}",
                ex.number,
                ours.status,
                ex.status,
                ours.body_text()
            ));
            continue;
        }
        let mut expected: Value = serde_json::from_slice(&ex.response)?;
        let dropped = tree_destruction_removes_shared(&mut expected, &state);
        if dropped > 0 {
            shared_dropped += dropped;
        }
        let mut actual = body_json(&ours);
        normalize_guids(&mut expected, &mut theirs);
        let mut mine = BTreeMap::new();
        normalize_guids(&mut actual, &mut mine);
        for (guid, title) in mine {
            if slapos_domain::InstanceId::parse(&guid).is_none() {
                failures.push(format!(
                    "vector {}: guid {guid} is not an instance id",
                    ex.number
                ));
            }
            ours_by_title.insert(title, guid);
        }
        if let Err(e) = normalize_timestamp(&mut expected).and(normalize_timestamp(&mut actual)) {
            failures.push(format!("vector {}: {e}", ex.number));
        }
        // Quirk 1: only the partition's own addresses.
        if let (Some(c), Some(p)) = (
            actual.get("computer_guid").and_then(Value::as_str),
            actual.get("compute_partition_id").and_then(Value::as_str),
        ) {
            let own: Vec<String> = state
                .computer(c)
                .ok()
                .and_then(|c| c.partition(p))
                .map(|p| p.addresses.iter().map(|a| a.addr.clone()).collect())
                .unwrap_or_default();
            if let Some(Value::Array(list)) = expected.get_mut("ip_list") {
                list.retain(|pair| pair[1].as_str().is_some_and(|a| own.iter().any(|o| o == a)));
            }
        }
        if expected != actual {
            failures.push(format!(
                "vector {}: bodies differ\nexpected {expected}\nactual   {actual}",
                ex.number
            ));
        }
    }
    for f in &failures {
        eprintln!("MISMATCH {f}\n");
    }
    assert!(failures.is_empty(), "{} exchange(s) differ", failures.len());
    assert_eq!(compared, 8, "exchanges 73-80 compared");
    assert_eq!(
        shared_dropped, 1,
        "vector 78's my-shared went with its tree"
    );
    shared_instance_listing(&mut state);
    Ok(())
}

/// The deliberate difference `shared` of DESIGN.md: destroying a tree destroys its shared
/// instances (slapproxy keeps them on their host). An expected shared entry whose
/// requester (`<title>___<requested_by>___1`) is no longer an instance of ours is dropped.
fn tree_destruction_removes_shared(v: &mut Value, state: &State) -> usize {
    let Some(Value::Array(list)) = v.get_mut("result_list") else {
        return 0;
    };
    let before = list.len();
    list.retain(|item| {
        let guid = item["instance_guid"].as_str().unwrap_or("");
        let parts: Vec<&str> = guid.splitn(3, "___").collect();
        match parts.as_slice() {
            [_, requester, "1"] if !requester.is_empty() => {
                state.instances().any(|i| i.title == *requester)
            }
            _ => true,
        }
    });
    before - list.len()
}

/// What 78 would have shown had the tree lived: a shared instance requested through the
/// API is listed by its host with exactly the fields of the capture.
fn shared_instance_listing(state: &mut State) {
    let r = json_call(
        state,
        "slapos.post.v0.software_instance",
        &serde_json::json!({
            "title": "json-shared",
            "software_release_uri": "https://example.com/software/frontend/software.cfg",
            "software_type": "custom-frontend",
            "shared": true,
            "parameters": {"url": "http://x", "n": 2},
        }),
        50,
    );
    assert_eq!(r.status, 200, "{}", r.body_text());
    let doc = body_json(&r);
    assert_eq!(doc["shared"], true);
    assert_eq!(doc["ip_list"], serde_json::json!([]));
    assert_eq!(
        doc["parameters"],
        serde_json::json!({"url": "http://x", "n": 2})
    );
    let partition = doc["compute_partition_id"].as_str().unwrap().to_string();
    let host = state
        .computer(doc["computer_guid"].as_str().unwrap())
        .unwrap()
        .partition(&partition)
        .and_then(|p| p.instance)
        .expect("a host");
    let r = json_call(
        state,
        "slapos.allDocs.v0.instance_node_instance_list",
        &serde_json::json!({"instance_guid": host.to_string()}),
        51,
    );
    let v = body_json(&r);
    let item = v["result_list"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["title"] == "json-shared")
        .expect("listed by its host")
        .clone();
    assert_eq!(
        item,
        serde_json::json!({
            "title": "json-shared",
            "instance_guid": doc["instance_guid"],
            "software_type": "custom-frontend",
            "state": "started",
            "parameters": {"url": "http://x", "n": 2},
            "compute_partition_id": partition,
        })
    );
    // Its host publishes for it: the shared instance's document shows it.
    let r = json_call(
        state,
        "slapos.put.v0.software_instance_connection_parameter",
        &serde_json::json!({"instance_guid": doc["instance_guid"],
            "connection_parameter_dict": {"site": "https://s"}}),
        52,
    );
    assert_eq!(r.status, 200, "{}", r.body_text());
    let r = json_call(
        state,
        "slapos.get.v0.software_instance",
        &serde_json::json!({"instance_guid": doc["instance_guid"]}),
        53,
    );
    assert_eq!(
        body_json(&r)["connection_parameters"],
        serde_json::json!({"site": "https://s"})
    );
}

fn fresh_state() -> State {
    let exchanges = load().expect("vectors");
    xml_state(&exchanges)
}

fn assert_error(r: &SlapResponse, status: u16, kind: &str, title_has: &str) {
    assert_eq!(r.status, status, "{}", r.body_text());
    assert_eq!(r.content_type, "application/json");
    let v = body_json(r);
    assert_eq!(v["status"], status);
    assert_eq!(v["type"], kind);
    let title = v["title"].as_str().expect("title");
    assert!(title.contains(title_has), "{title}");
    assert_eq!(v.as_object().map(|m| m.len()), Some(3));
}

#[test]
fn schema_violations_are_400() {
    let mut state = State::new();
    let cases: &[(&str, &str, &str)] = &[
        (
            "slapos.post.v0.software_instance",
            r#"{"title": "x"}"#,
            "'software_release_uri' is a required property",
        ),
        (
            "slapos.post.v0.software_instance",
            r#"{"title": "x", "software_release_uri": "u", "software_type": 3}"#,
            "3 is not of type 'string'",
        ),
        (
            "slapos.post.v0.software_instance",
            r#"{"title": "x", "software_release_uri": "u", "software_type": "t", "state": "up"}"#,
            "'up' is not one of ['started', 'stopped', 'destroyed']",
        ),
        (
            "slapos.post.v0.software_instance",
            r#"{"title": "x", "software_release_uri": "u", "software_type": "t", "foo": 1}"#,
            "Additional properties are not allowed ('foo' was unexpected)",
        ),
        (
            "slapos.post.v0.software_instance",
            r#"{"title": "x", "software_release_uri": "u", "software_type": "t", "shared": "yes"}"#,
            "'yes' is not of type 'boolean'",
        ),
        (
            "slapos.post.v0.software_instance",
            r#"{"title": "x", "software_release_uri": "u", "software_type": "t", "parameters": []}"#,
            "[] is not of type 'object'",
        ),
        (
            "slapos.allDocs.v0.compute_node_instance_list",
            r#"[]"#,
            "[] is not of type 'object'",
        ),
        (
            "slapos.allDocs.v0.compute_node_instance_list",
            r#"{"computer_guid": "#,
            "the request body is not JSON",
        ),
        (
            "slapos.put.v0.software_instance_connection_parameter",
            r#"{"instance_guid": "SOFTINST-1", "connection_parameter_dict": {"a": [1]}}"#,
            "is not a string",
        ),
        (
            "slapos.put.v0.software_instance_reported_state",
            r#"{"instance_guid": "SOFTINST-1", "reported_state": "error"}"#,
            "is not one of",
        ),
    ];
    for (name, body, message) in cases {
        let r = jsonrpc::serve_local(
            &ctx(),
            &mut state,
            name,
            "POST",
            None,
            body.as_bytes(),
            None,
            RequestId::new("t", 1),
            Timestamp(T0),
        );
        assert_error(&r, 400, "Bad Request", message);
    }
    let long = "x".repeat(201);
    let r = json_call(
        &mut state,
        "slapos.post.v0.software_instance",
        &serde_json::json!({"title": long, "software_release_uri": "u", "software_type": "t"}),
        1,
    );
    assert_error(&r, 400, "Bad Request", "is too long");
}

#[test]
fn unknown_things_are_403() {
    let mut state = fresh_state();
    let r = json_call(
        &mut state,
        "slapos.allDocs.v0.compute_node_software_installation_list",
        &serde_json::json!({"computer_guid": "COMP-NOPE"}),
        1,
    );
    assert_error(&r, 403, "Forbidden", "COMP-NOPE is not registered.");
    for guid in ["SOFTINST-999999", "json-instance______0"] {
        for name in [
            "slapos.get.v0.software_instance",
            "slapos.allDocs.v0.instance_node_instance_list",
        ] {
            let r = json_call(
                &mut state,
                name,
                &serde_json::json!({"instance_guid": guid}),
                2,
            );
            assert_error(&r, 403, "Forbidden", "No software instance");
        }
    }
    let r = json_call(
        &mut state,
        "slapos.get.v0.compute_partition",
        &serde_json::json!({"computer_guid": "COMP-TEST", "compute_partition_id": "nope"}),
        3,
    );
    assert_error(&r, 403, "Forbidden", "No instance on partition nope found.");
}

/// `allDocs instance_tree_list` and `get instance_tree`: the context's person's trees.
#[test]
fn a_person_lists_and_reads_their_trees() {
    let mut state = fresh_state();
    let r = json_call(
        &mut state,
        "slapos.post.v0.software_instance",
        &serde_json::json!({
            "title": "listed", "software_release_uri": "https://example.com/software/demo/software.cfg",
            "software_type": "default", "parameters": {"n": 1},
            "sla_parameters": {"computer_guid": "COMP-TEST"}
        }),
        1,
    );
    assert_eq!(r.status, 200, "{}", r.body_text());
    let r = json_call(
        &mut state,
        "slapos.allDocs.v0.instance_tree_list",
        &serde_json::json!({}),
        2,
    );
    assert_eq!(r.status, 200, "{}", r.body_text());
    let titles: Vec<String> = body_json(&r)["result_list"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["title"].as_str().unwrap().to_string())
        .collect();
    assert!(titles.contains(&"listed".to_string()), "{titles:?}");
    let r = json_call(
        &mut state,
        "slapos.get.v0.instance_tree",
        &serde_json::json!({"title": "listed"}),
        3,
    );
    assert_eq!(r.status, 200, "{}", r.body_text());
    let doc = body_json(&r);
    assert_eq!(doc["title"], "listed");
    assert_eq!(doc["parameters"], serde_json::json!({"n": "1"}));
    assert_eq!(doc["computer_guid"], "COMP-TEST");
    let r = json_call(
        &mut state,
        "slapos.get.v0.instance_tree",
        &serde_json::json!({"title": "nope"}),
        4,
    );
    assert_error(&r, 403, "Forbidden", "No instance tree nope found.");
    let r = json_call(
        &mut state,
        "slapos.allDocs.v0.instance_tree_list",
        &serde_json::json!({"title": "x"}),
        5,
    );
    assert_error(&r, 400, "Bad Request", "Additional properties");
}

#[test]
fn method_accept_and_names() {
    let mut state = State::new();
    let call = |state: &mut State, name: &str, method: &str, accept: Option<&str>| {
        jsonrpc::serve_local(
            &ctx(),
            state,
            name,
            method,
            accept,
            br#"{"computer_guid": "COMP-TEST"}"#,
            None,
            RequestId::new("t", 1),
            Timestamp(T0),
        )
    };
    let list = "slapos.allDocs.v0.compute_node_instance_list";
    assert_error(
        &call(&mut state, list, "GET", None),
        405,
        "Method Not Allowed",
        "",
    );
    assert_error(
        &call(&mut state, list, "POST", Some("text/html")),
        406,
        "Not Acceptable",
        "",
    );
    assert_error(
        &call(
            &mut state,
            list,
            "POST",
            Some("application/json;q=0, text/*"),
        ),
        406,
        "Not Acceptable",
        "",
    );
    for ok in [
        None,
        Some(""),
        Some("*/*"),
        Some("application/json"),
        Some("text/html, application/*;q=0.5"),
    ] {
        // Unknown computer: past the HTTP checks.
        assert_eq!(call(&mut state, list, "POST", ok).status, 403, "{ok:?}");
    }
    assert_error(
        &call(
            &mut state,
            "slapos.allDocs.v0.nothing_like_this",
            "POST",
            None,
        ),
        404,
        "Not Found",
        "not a JSON-RPC method",
    );
    assert_error(
        &call(
            &mut state,
            "slapos.put.v0.compute_node_format",
            "POST",
            None,
        ),
        501,
        "Not Implemented",
        "not implemented",
    );
}

/// The writes that locate an instance first, on the replayed state.
#[test]
fn instance_writes_reach_the_domain() {
    let mut state = fresh_state();
    let r = json_call(
        &mut state,
        "slapos.post.v0.software_instance",
        &serde_json::json!({
            "title": "w", "software_release_uri": "https://example.com/software/demo/software.cfg",
            "software_type": "default", "parameters": {"n": 1, "b": true},
            "sla_parameters": {"computer_guid": "COMP-TEST"}
        }),
        1,
    );
    assert_eq!(r.status, 200, "{}", r.body_text());
    let doc = body_json(&r);
    let guid = doc["instance_guid"].as_str().unwrap().to_string();
    assert_eq!(
        doc["parameters"],
        serde_json::json!({"n": "1", "b": "True"})
    );
    assert_eq!(
        doc["sla_parameters"],
        serde_json::json!({"computer_guid": "COMP-TEST"})
    );
    assert_eq!(doc["computer_guid"], "COMP-TEST");
    let put = |state: &mut State, name: &str, extra: Value, n: u64| {
        let mut body = serde_json::json!({"instance_guid": guid});
        body.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        json_call(state, name, &body, n)
    };
    let r = put(
        &mut state,
        "slapos.put.v0.software_instance_error",
        serde_json::json!({"message": "boom"}),
        2,
    );
    assert_eq!(
        body_json(&r)["title"],
        "Error reported",
        "{}",
        r.body_text()
    );
    let r = json_call(
        &mut state,
        "slapos.get.v0.software_instance",
        &serde_json::json!({"instance_guid": guid}),
        3,
    );
    assert_eq!(body_json(&r)["access_status_message"], "boom");
    let r = put(
        &mut state,
        "slapos.put.v0.software_instance_bang",
        serde_json::json!({"message": "again"}),
        4,
    );
    assert_eq!(r.status, 200, "{}", r.body_text());
    let r = put(
        &mut state,
        "slapos.put.v0.software_instance_title",
        serde_json::json!({"title": "w2"}),
        5,
    );
    assert_eq!(r.status, 200, "{}", r.body_text());
    let r = json_call(
        &mut state,
        "slapos.get.v0.software_instance",
        &serde_json::json!({"instance_guid": guid}),
        6,
    );
    assert_eq!(body_json(&r)["title"], "w2");
    let r = put(
        &mut state,
        "slapos.put.v0.software_instance_reported_state",
        serde_json::json!({"reported_state": "stopped"}),
        7,
    );
    assert_eq!(r.status, 200, "{}", r.body_text());
    // Not requested destroyed: the domain refuses to free the partition.
    let r = put(
        &mut state,
        "slapos.put.v0.software_instance_reported_state",
        serde_json::json!({"reported_state": "destroyed"}),
        8,
    );
    assert_error(&r, 409, "Conflict", "not destroyed");
    let r = json_call(
        &mut state,
        "slapos.put.v0.compute_node_bang",
        &serde_json::json!({"computer_guid": "COMP-TEST", "message": "all"}),
        9,
    );
    assert_eq!(body_json(&r)["title"], "Bang handled");
    let r = json_call(
        &mut state,
        "slapos.put.v0.software_installation_reported_state",
        &serde_json::json!({"computer_guid": "COMP-TEST",
            "software_release_uri": "https://example.com/software/demo/software.cfg",
            "reported_state": "building"}),
        10,
    );
    assert_eq!(r.status, 200, "{}", r.body_text());
    let r = json_call(
        &mut state,
        "slapos.post.v0.software_installation",
        &serde_json::json!({"computer_guid": "COMP-TEST",
            "software_release_uri": "https://example.com/software/new/software.cfg"}),
        11,
    );
    assert_eq!(r.status, 200, "{}", r.body_text());
    let r = json_call(
        &mut state,
        "slapos.allDocs.v0.compute_node_software_installation_list",
        &serde_json::json!({"computer_guid": "COMP-TEST"}),
        12,
    );
    let list = body_json(&r)["result_list"].as_array().unwrap().clone();
    assert!(list.iter().any(|i| i["software_release_uri"]
        == "https://example.com/software/new/software.cfg"
        && i["state"] == "available"));
    // A request naming a partition the proxy does not know.
    let r = jsonrpc::serve_local(
        &ctx(),
        &mut state,
        "slapos.post.v0.software_instance",
        "POST",
        None,
        br#"{"title": "c", "software_release_uri": "u", "software_type": "t"}"#,
        Some("X-SlapPartition computer_id=COMP-TEST, computer_partition_id=nope"),
        RequestId::new("t", 13),
        Timestamp(T0 + 200_000_000),
    );
    assert!(r.status == 403 || r.status == 400, "{}", r.body_text());
}

#[test]
fn a_local_master_records_usage_and_invoices_it() {
    use slapos_domain::{format_date, ComputerSpec, PartitionSpec};
    use slapos_domain::{Command, Op};
    let mut state = State::new();
    let ok = |r: SlapResponse| {
        assert_eq!(r.status, 200, "{}", r.body_text());
        body_json(&r)
    };
    ok(json_call(
        &mut state,
        "slapos.post.v0.compute_node",
        &serde_json::json!({"computer_guid": "COMP-L", "region": "eu"}),
        1,
    ));
    let spec = ComputerSpec {
        address: None,
        netmask: None,
        partitions: vec![PartitionSpec {
            id: "slappart0".into(),
            tap: None,
            addresses: Vec::new(),
        }],
    };
    let format = Op::FormatComputer {
        computer: "COMP-L".into(),
        spec,
    };
    let cmd = Command {
        request_id: RequestId::new("format", 1),
        at: Timestamp(T0),
        op: format,
    };
    assert!(state.apply(&cmd).is_ok());
    // The provider supplies the release the customer requests.
    let supply = Command {
        request_id: RequestId::new("format", 2),
        at: Timestamp(T0),
        op: Op::Supply {
            computer: "COMP-L".into(),
            url: "https://example.com/sr.cfg".into(),
            state: "available".into(),
        },
    };
    assert!(state.apply(&supply).is_ok());
    ok(json_call(
        &mut state,
        "slapos.post.v0.software_instance",
        &serde_json::json!({"title": "app", "software_release_uri": "https://example.com/sr.cfg",
            "software_type": "default", "sla_parameters": {"computer_guid": "COMP-L"}}),
        2,
    ));
    ok(json_call(
        &mut state,
        "slapos.put.v0.price",
        &serde_json::json!({"region": "eu", "resource": "cpu", "price": "0.5", "currency": "EUR"}),
        3,
    ));
    let stop = format_date(Timestamp(T0 + 100_000_010));
    let journal = format!(
        "<?xml version=\"1.0\"?><journal><transaction type=\"Sale Packing List\"><start_date></start_date>\
         <stop_date>{stop}</stop_date><reference>COMP-L</reference><currency></currency>\
         <payment_mode></payment_mode><arrow type=\"Administration\"></arrow><movement>\
         <resource>cpu</resource><reference>slappart0</reference><quantity>4</quantity>\
         <price>0</price><VAT></VAT></movement></transaction></journal>"
    );
    let usage = serde_json::json!({"computer_guid": "COMP-L", "tioxml": journal});
    ok(json_call(
        &mut state,
        "slapos.post.v0.compute_node_usage",
        &usage,
        4,
    ));
    // posted again: recognised
    ok(json_call(
        &mut state,
        "slapos.post.v0.compute_node_usage",
        &usage,
        5,
    ));
    let invoice = ok(json_call(
        &mut state,
        "slapos.get.v0.invoice",
        &serde_json::json!({"from": "2000-01-01", "to": "2100-01-01"}),
        6,
    ));
    let cpu = invoice["line_list"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["resource"] == "cpu")
        .unwrap_or_else(|| panic!("no cpu line: {invoice}"));
    assert_eq!(
        (&cpu["quantity"], &cpu["amount"]),
        (&Value::from("4"), &Value::from("2"))
    );
    // someone else's invoice needs an admin
    let r = json_call(
        &mut state,
        "slapos.get.v0.invoice",
        &serde_json::json!({"from": "2000-01-01", "to": "2100-01-01", "customer": "other"}),
        7,
    );
    assert_eq!(r.status, 403, "{}", r.body_text());
}

// ----- through the HTTP server, in front of a real master process ----------------------

struct Answer {
    status: u16,
    headers: hyper::http::HeaderMap,
    body: String,
}

async fn http(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> Result<Answer> {
    use hyper_util::rt::TokioIo;
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await?;
    tokio::spawn(conn);
    let mut b = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header("host", addr.to_string());
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    let response = sender
        .send_request(b.body(axum::body::Body::from(body))?)
        .await?;
    let (parts, body) = response.into_parts();
    let bytes = axum::body::to_bytes(axum::body::Body::new(body), usize::MAX).await?;
    Ok(Answer {
        status: parts.status.as_u16(),
        headers: parts.headers,
        body: String::from_utf8(bytes.to_vec())?,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn through_the_http_server() -> Result<()> {
    use slap_gateway::server::{Gateway, GatewayConfig};
    let dir = tempfile::tempdir()?;
    let mut masters =
        slapos_harness::ProcessCluster::new(&slapos_e2e::slapos_bin(), &dir.path().join("m"));
    masters
        .start(1)
        .await
        .map_err(|e| anyhow!("cluster start: {e}"))?;
    let mut config = GatewayConfig::insecure("127.0.0.1:0", masters.api_addrs());
    config.max_body_bytes = 64 * 1024;
    let gateway = Gateway::start(&config).await?;
    let addr = gateway.local_addr();
    // Format COMP-TEST and supply the demo release with the captured XML calls (04, 08).
    let exchanges = load()?;
    for n in [4, 8] {
        let ex = exchanges.iter().find(|e| e.number == n).expect("vector");
        let a = http(
            addr,
            "POST",
            &ex.path,
            &[("content-type", "application/x-www-form-urlencoded")],
            ex.body.clone(),
        )
        .await?;
        assert_eq!(a.status, 200, "vector {n}: {}", a.body);
    }
    let json = [("content-type", "application/json"), ("accept", "*/*")];
    let post = |path: &'static str, body: Value| {
        let body = body.to_string().into_bytes();
        async move { http(addr, "POST", path, &json, body).await }
    };
    let a = post(
        "/slapos.post.v0.software_instance",
        serde_json::json!({"title": "over-http",
            "software_release_uri": "https://example.com/software/demo/software.cfg",
            "software_type": "default", "parameters": {"foo": "bar"}}),
    )
    .await?;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.headers["content-type"], "application/json");
    let doc: Value = serde_json::from_str(&a.body)?;
    assert_eq!(doc["computer_guid"], "COMP-TEST");
    assert!(doc["processing_timestamp"].is_u64());
    let guid = doc["instance_guid"].as_str().unwrap().to_string();
    let a = post(
        "/slapos.put.v0.software_instance_connection_parameter",
        serde_json::json!({"instance_guid": guid, "connection_parameter_dict": {"url": "http://h"}}),
    )
    .await?;
    assert_eq!(
        serde_json::from_str::<Value>(&a.body)?,
        serde_json::json!({"type": "success", "title": "Updated"})
    );
    let a = post(
        "/slapos.get.v0.software_instance",
        serde_json::json!({"instance_guid": guid}),
    )
    .await?;
    let got: Value = serde_json::from_str(&a.body)?;
    assert_eq!(
        got["connection_parameters"],
        serde_json::json!({"url": "http://h"})
    );
    assert_eq!(got["parameters"], serde_json::json!({"foo": "bar"}));
    let a = post(
        "/slapos.allDocs.v0.compute_node_instance_list",
        serde_json::json!({"computer_guid": "COMP-TEST"}),
    )
    .await?;
    let list: Value = serde_json::from_str(&a.body)?;
    assert_eq!(list["result_list"][0]["instance_guid"], guid.as_str());
    // Errors, all JSON.
    let a = post(
        "/slapos.allDocs.v0.compute_node_instance_list",
        serde_json::json!({"computer_guid": "COMP-UNKNOWN"}),
    )
    .await?;
    assert_eq!(
        (a.status, serde_json::from_str::<Value>(&a.body)?),
        (
            403,
            serde_json::json!({"status": 403, "type": "Forbidden",
                "title": "COMP-UNKNOWN is not registered."})
        )
    );
    let a = post(
        "/slapos.post.v0.software_instance",
        serde_json::json!({"title": "missing-fields"}),
    )
    .await?;
    assert_eq!(a.status, 400, "{}", a.body);
    assert!(a
        .body
        .contains("'software_release_uri' is a required property"));
    let a = http(
        addr,
        "GET",
        "/slapos.get.v0.software_instance",
        &[],
        Vec::new(),
    )
    .await?;
    assert_eq!(a.status, 405, "{}", a.body);
    assert_eq!(a.headers["allow"], "POST");
    assert_eq!(a.headers["content-type"], "application/json");
    let a = http(
        addr,
        "POST",
        "/slapos.get.v0.software_instance",
        &[("accept", "text/html")],
        b"{}".to_vec(),
    )
    .await?;
    assert_eq!(a.status, 406, "{}", a.body);
    let a = http(addr, "POST", "/slapos.get.v0.nothing", &[], b"{}".to_vec()).await?;
    assert_eq!(a.status, 404, "{}", a.body);
    assert_eq!(a.headers["content-type"], "application/json");
    let a = http(
        addr,
        "POST",
        "/slapos.get.v0.software_instance",
        &json,
        vec![b' '; 100 * 1024],
    )
    .await?;
    assert_eq!(a.status, 413, "{}", a.body);
    assert_eq!(serde_json::from_str::<Value>(&a.body)?["status"], 413);
    gateway.shutdown().await;
    Ok(())
}
