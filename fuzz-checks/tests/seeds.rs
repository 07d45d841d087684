//! Writes the seed corpora (`fuzz/seeds/<target>/`) from real inputs: the captured SLAP
//! and JSON-RPC exchanges (`testdata/vectors/`), documents of the Python corpus
//! (`proto/tests/data/python_corpus.jsonl`), the fixtures' CSR, certificate and proof,
//! and Raft messages, commands and snapshots built from the vectors' writes. Run when
//! the inputs change, then minimise (`fuzz/DESIGN.md`):
//!
//! ```text
//! cargo test -p slapos-fuzz-checks --test seeds -- --ignored
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context, Result};
use master_replica::{NodeInfo, TypeConfig};
use openraft::raft::{AppendEntriesRequest, VoteRequest};
use openraft::{
    CommittedLeaderId, Entry, EntryPayload, LogId, Membership, SnapshotMeta, StoredMembership, Vote,
};
use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};
use slap_gateway::jsonrpc::Name;
use slap_gateway::server::http::decode_form;
use slap_gateway::slap::forms::{self, SlapCall};
use slap_gateway::{Endpoint, SlapContext};
use slapos_domain::{Command, InstanceId, Op, Query, RequestId, Timestamp};
use slapos_fuzz_checks::{ca, join};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

struct Seeds {
    dir: PathBuf,
}

impl Seeds {
    fn new(target: &str) -> Result<Seeds> {
        let dir = root().join("fuzz/seeds").join(target);
        std::fs::create_dir_all(&dir)?;
        Ok(Seeds { dir })
    }

    fn put(&self, name: &str, data: &[u8]) -> Result<()> {
        Ok(std::fs::write(self.dir.join(name), data)?)
    }
}

/// One captured request: its method, path (without the query), query string, the
/// `Authorization` header and the raw body.
struct Request {
    path: String,
    query: String,
    authorization: Option<String>,
    body: Vec<u8>,
}

fn find(hay: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    hay.get(from..)?
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|i| i + from)
}

fn request_of(bytes: &[u8]) -> Result<Request> {
    let start = find(bytes, b"=== REQUEST ===\n", 0).ok_or_else(|| anyhow!("no request"))? + 16;
    let head_end = find(bytes, b"\n\n", start).ok_or_else(|| anyhow!("no end of headers"))?;
    let head = std::str::from_utf8(&bytes[start..head_end])?;
    let mut lines = head.lines();
    let line = lines.next().ok_or_else(|| anyhow!("no request line"))?;
    let target = line.split(' ').nth(1).ok_or_else(|| anyhow!("no target"))?;
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let authorization = lines
        .filter_map(|l| l.split_once(": "))
        .find(|(k, _)| k.eq_ignore_ascii_case("authorization"))
        .map(|(_, v)| v.to_string());
    let marker = b"--- raw request body (";
    let body = match find(bytes, marker, head_end) {
        Some(at) => {
            let rest = std::str::from_utf8(&bytes[at + marker.len()..])
                .ok()
                .and_then(|r| r.split_once(' '))
                .ok_or_else(|| anyhow!("no body length"))?;
            let len: usize = rest.0.parse()?;
            let from = find(bytes, b"---\n", at + marker.len()).ok_or_else(|| anyhow!("?"))? + 4;
            bytes
                .get(from..from + len)
                .ok_or_else(|| anyhow!("short body"))?
                .to_vec()
        }
        None => Vec::new(),
    };
    Ok(Request {
        path: path.trim_start_matches('/').to_string(),
        query: query.to_string(),
        authorization,
        body,
    })
}

fn vectors() -> Result<Vec<(String, Request)>> {
    let mut out = Vec::new();
    let mut paths: Vec<PathBuf> = std::fs::read_dir(root().join("testdata/vectors"))?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    paths.sort();
    for p in paths {
        let stem = p
            .file_stem()
            .and_then(|s| s.to_str())
            .context("name")?
            .chars()
            .take(2)
            .collect::<String>();
        if let Ok(r) = request_of(&std::fs::read(&p)?) {
            out.push((stem, r));
        }
    }
    Ok(out)
}

fn form(pairs: &[(&str, &str)]) -> String {
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

fn index<T: PartialEq>(all: &[T], x: &T) -> u8 {
    all.iter().position(|e| e == x).unwrap_or(0) as u8
}

#[test]
#[ignore = "writes fuzz/seeds; run by hand"]
fn write_seeds() -> Result<()> {
    let vectors = vectors()?;
    let ctx = SlapContext::proxy(Some("slaprunner"));
    let mut ops: Vec<Op> = Vec::new();

    // The SLAP endpoints: each captured form body or query string, with its header.
    let s = Seeds::new("gateway_forms")?;
    for (id, r) in &vectors {
        let Some(endpoint) = Endpoint::from_path(&r.path) else {
            continue;
        };
        let body = if r.body.is_empty() {
            r.query.as_bytes()
        } else {
            &r.body
        };
        let seed = join(
            index(Endpoint::ALL, &endpoint),
            r.authorization.as_deref(),
            body,
        );
        s.put(&format!("vector-{id}"), &seed)?;
        if let Ok(pairs) = decode_form(body) {
            if let Ok(SlapCall::Write(w)) =
                forms::parse(&ctx, endpoint, &pairs, r.authorization.as_deref())
            {
                ops.push(w.op);
            }
        }
    }
    // Python's marshalled documents as instance parameters.
    let corpus = std::fs::read_to_string(root().join("proto/tests/data/python_corpus.jsonl"))?;
    let request = index(Endpoint::ALL, &Endpoint::RequestComputerPartition);
    for (i, line) in corpus.lines().step_by(20).enumerate() {
        let v: serde_json::Value = serde_json::from_str(line)?;
        let doc = v["doc"].as_str().context("doc")?;
        let body = form(&[
            (
                "software_release",
                "https://example.com/software/demo/software.cfg",
            ),
            ("partition_reference", "python"),
            ("partition_parameter_xml", doc),
            ("state", "<marshal><string>started</string></marshal>"),
        ]);
        s.put(
            &format!("python-{i:02}"),
            &join(request, None, body.as_bytes()),
        )?;
    }

    // JSON-RPC bodies.
    let s = Seeds::new("gateway_jsonrpc")?;
    for (id, r) in &vectors {
        let Some(name) = Name::from_name(&r.path) else {
            continue;
        };
        let seed = join(index(Name::ALL, &name), r.authorization.as_deref(), &r.body);
        s.put(&format!("vector-{id}"), &seed)?;
    }
    for (i, name) in Name::ALL.iter().enumerate() {
        let body = br#"{"computer_guid": "COMP-0", "instance_guid": "SOFTINST-1", "title": "t", "software_release_uri": "https://example.com/software/demo/software.cfg", "software_type": "default", "state": "started", "parameters": {}, "shared": false, "reported_state": "available", "message": "m", "compute_partition_id": "slappart0"}"#;
        s.put(&format!("name-{}", name.name()), &join(i as u8, None, body))?;
    }

    // Registration requests.
    let s = Seeds::new("gateway_register")?;
    s.put(
        "renew-csr",
        form(&[("token", "0123abcd"), ("csr", ca::RENEW_CSR)]).as_bytes(),
    )?;
    let (_, p256) = slapos_ca::new_key_and_csr(&slapos_domain::Identity::Computer("COMP-1".into()))
        .map_err(|e| anyhow!("{e}"))?;
    s.put(
        "p256-csr",
        form(&[("token", "0123abcd"), ("csr", &p256)]).as_bytes(),
    )?;
    s.put("no-token", form(&[("csr", &p256)]).as_bytes())?;

    // CSRs, as PEM text and as DER.
    let s = Seeds::new("ca_csr")?;
    for (name, text) in [("ed25519", ca::RENEW_CSR), ("p256", p256.as_str())] {
        let der = pem::parse(text)?.into_contents();
        s.put(
            &format!("{name}-pem"),
            &[&[0u8][..], text.as_bytes()].concat(),
        )?;
        s.put(&format!("{name}-der"), &[&[1u8][..], &der].concat())?;
    }

    // Proofs and presented certificates.
    let s = Seeds::new("ca_proof")?;
    s.put("proof", &[&[0u8][..], ca::RENEW_PROOF.as_bytes()].concat())?;
    for (name, text) in [("computer", ca::COMPUTER_PEM), ("ca", ca::CA_PEM)] {
        let der = pem::parse(text)?.into_contents();
        s.put(&format!("{name}-der"), &[&[1u8][..], &der].concat())?;
        s.put(
            &format!("{name}-pem"),
            &[&[2u8][..], text.as_bytes()].concat(),
        )?;
    }

    // What replicas exchange, carrying the vectors' writes.
    let commands: Vec<Command> = ops
        .into_iter()
        .enumerate()
        .map(|(i, op)| Command {
            request_id: RequestId {
                client: "gateway:gw1/node".into(),
                seq: i as u64 + 1,
            },
            at: Timestamp(1_800_000_000_000_000 + i as u64),
            op,
        })
        .collect();
    let leader = CommittedLeaderId::new(3, 1);
    let nodes: BTreeMap<u64, NodeInfo> = (1..=3)
        .map(|n| {
            (
                n,
                NodeInfo {
                    raft_addr: format!("10.0.0.{n}:7000"),
                    api_addr: format!("10.0.0.{n}:7001"),
                    region: "eu".into(),
                    ..NodeInfo::default()
                },
            )
        })
        .collect();
    let membership = Membership::new(vec![BTreeSet::from([1, 2, 3])], nodes);
    let s = Seeds::new("replica_peer")?;
    let mut entries: Vec<Entry<TypeConfig>> = vec![Entry {
        log_id: LogId::new(leader, 1),
        payload: EntryPayload::Membership(membership.clone()),
    }];
    for (i, chunk) in commands.chunks(4).enumerate() {
        entries.push(Entry {
            log_id: LogId::new(leader, i as u64 + 2),
            payload: EntryPayload::Normal(chunk.to_vec()),
        });
    }
    entries.push(Entry {
        log_id: LogId::new(leader, entries.len() as u64 + 1),
        payload: EntryPayload::Blank,
    });
    for (i, window) in entries.chunks(3).enumerate() {
        let req = AppendEntriesRequest::<TypeConfig> {
            vote: Vote::new_committed(3, 1),
            prev_log_id: Some(LogId::new(leader, i as u64 * 3)),
            entries: window.to_vec(),
            leader_commit: Some(LogId::new(leader, i as u64 * 3)),
        };
        s.put(
            &format!("append-{i:02}"),
            &join0(0, &serde_json::to_vec(&req)?),
        )?;
        s.put(&format!("append-{i:02}-bin"), &join0(0, &binary(&req)?))?;
    }
    let heartbeat = AppendEntriesRequest::<TypeConfig> {
        vote: Vote::new_committed(3, 1),
        prev_log_id: None,
        entries: Vec::new(),
        leader_commit: None,
    };
    s.put("heartbeat", &join0(0, &serde_json::to_vec(&heartbeat)?))?;
    s.put("heartbeat-bin", &join0(0, &binary(&heartbeat)?))?;
    let vote = VoteRequest::<u64> {
        vote: Vote::new(4, 2),
        last_log_id: Some(LogId::new(leader, 9)),
    };
    s.put("vote", &join0(1, &serde_json::to_vec(&vote)?))?;
    s.put("vote-bin", &join0(1, &binary(&vote)?))?;
    let meta = SnapshotMeta::<u64, NodeInfo> {
        last_log_id: Some(LogId::new(leader, 9)),
        last_membership: StoredMembership::new(Some(LogId::new(leader, 1)), membership),
        snapshot_id: "3-1-9-1".into(),
    };
    s.put(
        "snapshot-header",
        &join0(2, &serde_json::to_vec(&(Vote::new_committed(3, 1), &meta))?),
    )?;

    // The master API: the commands, and one query of each kind.
    let s = Seeds::new("replica_api")?;
    for (i, c) in commands.iter().enumerate() {
        s.put(
            &format!("command-{i:02}"),
            &join0(0, &serde_json::to_vec(c)?),
        )?;
    }
    let queries = [
        Query::Computer {
            computer: "COMP-0".into(),
        },
        Query::Instance { id: InstanceId(1) },
        Query::Tree {
            root: InstanceId(1),
        },
        Query::Ledger {
            customer: Some("user".into()),
            provider: None,
            from: Timestamp(0),
            to: Timestamp(1_800_000_000_000_000),
        },
        Query::Certificates,
        Query::All,
    ];
    for (i, q) in queries.iter().enumerate() {
        s.put(&format!("query-{i}"), &join0(1, &serde_json::to_vec(q)?))?;
    }

    // Snapshots (without their checksum, which the target appends).
    let s = Seeds::new("raft_snapshot")?;
    let pairs: Vec<(Vec<u8>, Vec<u8>)> = commands
        .iter()
        .enumerate()
        .map(|(i, c)| Ok((format!("c/{i:04}").into_bytes(), serde_json::to_vec(c)?)))
        .collect::<Result<_>>()?;
    for n in [0, 1, 5, pairs.len()] {
        let bytes = raft_store::snapshot::encode(
            &meta,
            pairs[..n.min(pairs.len())]
                .iter()
                .map(|(k, v)| (k.as_slice(), v.as_slice())),
        )?;
        s.put(&format!("pairs-{n}"), &bytes[..bytes.len() - 4])?;
    }
    // What a replica's snapshot holds: the persisted pairs of the state the commands make
    // (binary values), after the first few commands and after all of them.
    let mut state = slapos_domain::State::default();
    for (i, c) in commands.iter().enumerate() {
        // a refused command changes nothing, as on a replica
        let _outcome = state.apply(c);
        if [2, commands.len() - 1].contains(&i) {
            let entries = state.entries()?;
            let bytes = raft_store::snapshot::encode(
                &meta,
                entries.iter().map(|(k, v)| (k.as_slice(), v.as_slice())),
            )?;
            s.put(&format!("state-{}", i + 1), &bytes[..bytes.len() - 4])?;
        }
    }
    Ok(())
}

/// A Raft message in the binary encoding peers send (`bin1`).
fn binary<T: serde::Serialize>(value: &T) -> Result<Vec<u8>> {
    master_replica::network::encode_wire(value, true).map_err(|e| anyhow!(e))
}

fn join0(selector: u8, body: &[u8]) -> Vec<u8> {
    [&[selector][..], body].concat()
}
