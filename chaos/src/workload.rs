//! The chaos workload: concurrent clients that drive SLAP through the gateways and read
//! the master, recording every operation with its invocation and completion times and
//! its outcome, so that the checkers can judge the history afterwards.
//!
//! Every key is a root instance (`chaos-K<n>`) with two registers: its parameters and
//! requested state, written by re-requesting it (`requestComputerPartition`), and its
//! connection parameters, written as its computer does (`setComputerPartitionConnectionXml`).
//! Every write carries a value no other write uses, so a read names the write it saw.
//! Registers are read linearizably from the master (gRPC, any replica, forwarded to the
//! leader); the gateway's own reads (`getFullComputerInformation`) are bounded-staleness
//! by design and get the weaker "no phantom value" check.

use master_client::MasterClient;
use serde::Serialize;
use slapos_domain::Query as MasterQuery;
use slapos_domain::{InstanceId, RequestedState, State};
use slapos_harness::http::{HttpConn, HttpError};
use slapos_proto::marshal::Value;
use slapos_proto::rpc::master::Consistency;
use slapos_proto::slap;
use slapos_proto::Limits;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const COMPUTER: &str = "COMP-CHAOS";
/// Where instances with unique references land (once the first computer is full).
pub const SPARE_COMPUTER: &str = "COMP-CHAOS-SPARE";
/// Partitions of the spare computer: the most unique instances a run creates.
pub const SPARE_PARTITIONS: usize = 240;
/// The prefix of unique references.
pub const NEW_PREFIX: &str = "chaos-new-";
pub const SOFTWARE: &str = "https://lab.example/chaos/software.cfg";
/// The parameter (and connection parameter) each write sets.
pub const PARAM: &str = "chaos";

#[derive(Debug, thiserror::Error)]
pub enum WorkloadError {
    #[error("setup: {0}")]
    Setup(String),
}

/// One key of the workload.
#[derive(Debug, Clone, Serialize)]
pub struct Key {
    pub reference: String,
    pub instance: u64,
    pub computer: String,
    pub partition: String,
}

impl Key {
    /// The register of the parameters and requested state.
    pub fn request_register(&self) -> String {
        self.reference.clone()
    }

    /// The register of the connection parameters.
    pub fn connection_register(&self) -> String {
        format!("{}/connection", self.reference)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Acknowledged (a write) or answered (a read).
    Ok,
    /// Definitely not applied (refused, or never sent).
    Fail,
    /// Timed out or failed ambiguously: may have been applied.
    Unknown,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OpKind {
    Write { value: String },
    Read { value: Option<String> },
}

/// One operation as its client saw it. Times are microseconds since the run began.
#[derive(Debug, Clone, Serialize)]
pub struct OpRecord {
    pub client: usize,
    pub register: String,
    pub kind: OpKind,
    pub invoke_us: u64,
    pub complete_us: Option<u64>,
    pub outcome: Outcome,
    /// The gateway or master the client used.
    pub via: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// A bounded-staleness read of the computer through a gateway: what every key showed.
#[derive(Debug, Clone, Serialize)]
pub struct ViewRecord {
    pub client: usize,
    pub invoke_us: u64,
    pub complete_us: u64,
    pub via: String,
    pub seen: Vec<(String, String)>,
}

/// A usage journal a client posted for the spare computer (`useComputer`), or posted
/// again after it was acknowledged. Its stop date (microseconds, unique per journal) is
/// its identity; its lines are (partition, quantity), every quantity unique.
#[derive(Debug, Clone, Serialize)]
pub struct UsageRecord {
    pub client: usize,
    pub stop_us: u64,
    pub lines: Vec<(String, String)>,
    pub repost: bool,
    pub invoke_us: u64,
    pub complete_us: Option<u64>,
    pub outcome: Outcome,
    /// The HTTP status, when one came back.
    pub status: Option<u16>,
    pub via: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Everything the clients did.
#[derive(Debug, Default)]
pub struct History {
    pub ops: Vec<OpRecord>,
    pub usage: Vec<UsageRecord>,
    pub views: Vec<ViewRecord>,
    /// Local reads that failed (not part of the checks; counted in the report).
    pub failed_views: u64,
}

/// A tiny deterministic generator (SplitMix64): runs replay from their seed without a
/// dependency.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    /// Uniform in `lo..=hi` milliseconds.
    pub fn millis(&mut self, lo: u64, hi: u64) -> Duration {
        Duration::from_millis(lo + self.below(hi.saturating_sub(lo) + 1))
    }
}

fn marshal(v: &Value) -> Result<String, String> {
    v.encode().map_err(|e| e.to_string())
}

fn str_dict(pairs: &[(&str, &str)]) -> Value {
    Value::str_dict(pairs.iter().map(|(k, v)| (*k, Value::from(*v))))
}

/// The form of a re-request of `reference` setting `value` and `state`.
fn request_form(
    reference: &str,
    value: &str,
    state: &str,
) -> Result<Vec<(String, String)>, String> {
    Ok(vec![
        ("software_release".into(), SOFTWARE.into()),
        ("software_type".into(), "default".into()),
        ("partition_reference".into(), reference.into()),
        (
            "partition_parameter_xml".into(),
            marshal(&str_dict(&[(PARAM, value)]))?,
        ),
        ("filter_xml".into(), marshal(&Value::Dict(Vec::new()))?),
        ("state".into(), marshal(&Value::from(state))?),
        ("shared_xml".into(), marshal(&Value::Bool(false))?),
    ])
}

/// What the request answer says about the instance: (id, computer, partition).
fn parse_instance(body: &[u8]) -> Result<(u64, String, String), String> {
    let i = slap::SoftwareInstance::decode(body, &Limits::default()).map_err(|e| e.to_string())?;
    let id = i
        .instance_guid
        .get()
        .and_then(|g| InstanceId::parse(g))
        .ok_or("no instance_guid")?;
    let computer = i.slap_computer_id.get().ok_or("no slap_computer_id")?;
    let partition = i
        .slap_computer_partition_id
        .get()
        .ok_or("no slap_computer_partition_id")?;
    Ok((id.0, computer.clone(), partition.clone()))
}

pub async fn post(
    conn: &mut HttpConn,
    path: &str,
    form: &[(String, String)],
) -> Result<u16, HttpError> {
    let fields: Vec<(&str, &str)> = form.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    conn.post_form(path, &fields).await
}

/// What `slapos node format` would post for `partitions` partitions on the IPv6 network
/// `<prefix>::`.
pub fn computer_dict(reference: &str, partitions: usize, prefix: &str) -> Value {
    let list: Vec<Value> = (0..partitions)
        .map(|i| {
            Value::str_dict([
                ("reference", Value::from(format!("slappart{i}").as_str())),
                (
                    "address_list",
                    Value::List(vec![str_dict(&[
                        ("addr", &format!("{prefix}::{:x}", i + 1)),
                        ("netmask", "ffff:ffff:ffff:ffff::"),
                    ])]),
                ),
                ("tap", str_dict(&[("name", &format!("slaptap{i}"))])),
            ])
        })
        .collect();
    Value::str_dict([
        ("reference", Value::from(reference)),
        ("address", Value::from(format!("{prefix}::1").as_str())),
        ("netmask", Value::from("ffff:ffff:ffff:ffff::")),
        ("partition_list", Value::List(list)),
    ])
}

/// Format `computer` with `partitions` partitions (as that computer: the spare one's
/// connection when `spare`) and supply the software to it (as the person). Under mTLS
/// the person registers the computer first (its owner).
async fn format_and_supply(
    conns: &mut Conns,
    tls: bool,
    spare: bool,
    computer: &str,
    partitions: usize,
    net: u8,
) -> Result<(), WorkloadError> {
    let fail = |what: &str, e: String| WorkloadError::Setup(format!("{what} {computer}: {e}"));
    if tls {
        let person = conns.person();
        let body = serde_json::json!({ "computer_guid": computer }).to_string();
        let r = person
            .post_json("/slapos.post.v0.compute_node", &body)
            .await;
        expect_ok(r, person).map_err(|e| fail("register", e))?;
    }
    let xml = marshal(&computer_dict(computer, partitions, &format!("fd0{net}")))
        .map_err(|e| fail("format", e))?;
    let form = vec![
        ("computer_id".to_string(), computer.to_string()),
        ("xml".to_string(), xml),
    ];
    let conn = if spare {
        conns.spare()
    } else {
        conns.computer()
    };
    expect_ok(
        post(conn, "/loadComputerConfigurationFromXML", &form).await,
        conn,
    )
    .map_err(|e| fail("format", e))?;
    let form = vec![
        ("url".to_string(), SOFTWARE.to_string()),
        ("computer_id".to_string(), computer.to_string()),
        ("state".to_string(), "available".to_string()),
    ];
    let person = conns.person();
    expect_ok(post(person, "/supplySupply", &form).await, person).map_err(|e| fail("supply", e))
}

/// Format the keys' computer, request every key once (before any fault), then format the
/// spare computer, all through `gateway` (under mTLS, each as its role).
pub async fn setup(
    gateway: &str,
    keys: usize,
    ids: Option<&Identities>,
) -> Result<Vec<Key>, WorkloadError> {
    let fail = |what: &str, e: String| WorkloadError::Setup(format!("{what}: {e}"));
    let mut conns = Conns::new(gateway, ids);
    let tls = ids.is_some();
    format_and_supply(&mut conns, tls, false, COMPUTER, keys, 1).await?;
    let mut out = Vec::new();
    for k in 0..keys {
        let reference = format!("chaos-K{k}");
        let form = request_form(&reference, &format!("init-{k}"), "started")
            .map_err(|e| fail("request", e))?;
        let conn = conns.person();
        expect_ok(post(conn, "/requestComputerPartition", &form).await, conn)
            .map_err(|e| fail(&format!("request {reference}"), e))?;
        let (instance, computer, partition) =
            parse_instance(&conn.buf).map_err(|e| fail(&format!("request {reference}"), e))?;
        out.push(Key {
            reference,
            instance,
            computer,
            partition,
        });
    }
    format_and_supply(&mut conns, tls, true, SPARE_COMPUTER, SPARE_PARTITIONS, 2).await?;
    Ok(out)
}

pub fn expect_ok(r: Result<u16, HttpError>, conn: &HttpConn) -> Result<(), String> {
    match r {
        Ok(200) => Ok(()),
        Ok(s) => Err(format!(
            "status {s}: {}",
            String::from_utf8_lossy(&conn.buf)
                .chars()
                .take(300)
                .collect::<String>()
        )),
        Err(e) => Err(e.to_string()),
    }
}

/// The client certificates the workload presents to gateways under mTLS: the person who
/// supplies and requests, and the two computers it formats and reports for.
#[derive(Clone)]
pub struct Identities {
    pub person: Arc<rustls::ClientConfig>,
    pub computer: Arc<rustls::ClientConfig>,
    pub spare: Arc<rustls::ClientConfig>,
}

impl std::fmt::Debug for Identities {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Identities { person, computer, spare }")
    }
}

/// One client's connections to one gateway, one per role under mTLS (each role its
/// certificate); without, one connection for every role.
pub(crate) struct Conns {
    person: HttpConn,
    computer: Option<HttpConn>,
    spare: Option<HttpConn>,
}

impl Conns {
    pub(crate) fn new(gateway: &str, ids: Option<&Identities>) -> Conns {
        match ids {
            None => Conns {
                person: HttpConn::new(gateway),
                computer: None,
                spare: None,
            },
            Some(i) => Conns {
                person: HttpConn::with_tls(gateway, i.person.clone()),
                computer: Some(HttpConn::with_tls(gateway, i.computer.clone())),
                spare: Some(HttpConn::with_tls(gateway, i.spare.clone())),
            },
        }
    }

    pub(crate) fn person(&mut self) -> &mut HttpConn {
        &mut self.person
    }

    /// As the computer of the keys.
    pub(crate) fn computer(&mut self) -> &mut HttpConn {
        match &mut self.computer {
            Some(c) => c,
            None => &mut self.person,
        }
    }

    /// As the spare computer.
    pub(crate) fn spare(&mut self) -> &mut HttpConn {
        match &mut self.spare {
            Some(c) => c,
            None => &mut self.person,
        }
    }
}

/// How the clients behave.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    pub clients: usize,
    /// Gateway addresses; client `c` starts with gateway `c % len` and moves on to the next
    /// one when its gateway does not answer.
    pub gateways: Vec<String>,
    /// Master API addresses for linearizable reads.
    pub masters: Vec<String>,
    /// How long a client waits for one operation before calling its outcome unknown.
    pub timeout: Duration,
    /// Instances with unique references each client may create.
    pub creations: usize,
    pub seed: u64,
    /// Under mTLS: the certificates of each role.
    pub identities: Option<Identities>,
}

/// The shared clock and the switch that stops the clients.
#[derive(Clone)]
pub struct RunClock {
    pub start: Instant,
    pub stop: Arc<AtomicBool>,
}

impl RunClock {
    pub fn new() -> Self {
        RunClock {
            start: Instant::now(),
            stop: Arc::new(AtomicBool::new(false)),
        }
    }

    pub fn us(&self) -> u64 {
        self.start.elapsed().as_micros() as u64
    }
}

impl Default for RunClock {
    fn default() -> Self {
        Self::new()
    }
}

/// Run the clients until `clock.stop` is set; their history comes back.
pub async fn run_clients(keys: Arc<Vec<Key>>, opts: ClientOptions, clock: RunClock) -> History {
    let history = Arc::new(Mutex::new(History::default()));
    let mut tasks = Vec::new();
    for c in 0..opts.clients {
        let keys = keys.clone();
        let opts = opts.clone();
        let clock = clock.clone();
        let history = history.clone();
        tasks.push(tokio::spawn(async move {
            client_loop(c, &keys, &opts, &clock, &history).await;
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    let mut h = history
        .lock()
        .map(|mut h| std::mem::take(&mut *h))
        .unwrap_or_default();
    h.ops.sort_by_key(|o| o.invoke_us);
    h
}

fn record(history: &Mutex<History>, op: OpRecord) {
    if let Ok(mut h) = history.lock() {
        h.ops.push(op);
    }
}

/// Keys are shared by two clients each, so that operations on a key overlap.
fn my_keys(c: usize, clients: usize, keys: usize) -> Vec<usize> {
    (0..keys)
        .filter(|k| k % clients == c || (k + 1) % clients == c)
        .collect()
}

async fn client_loop(
    c: usize,
    keys: &[Key],
    opts: &ClientOptions,
    clock: &RunClock,
    history: &Mutex<History>,
) {
    let mut rng = Rng::new(opts.seed ^ (0xC11E_0000 + c as u64).wrapping_mul(0x9E37_79B9));
    let mine = my_keys(c, opts.clients, keys.len());
    if mine.is_empty() || opts.gateways.is_empty() {
        return;
    }
    let mut g = c % opts.gateways.len();
    let mut conns = Conns::new(&opts.gateways[g], opts.identities.as_ref());
    let mut master = MasterClient::new(opts.masters.clone()).with_deadline(opts.timeout);
    master.call_timeout = Duration::from_millis(1500);
    let mut n = 0u64;
    let mut created: Vec<Key> = Vec::new();
    let mut creations = 0;
    // acknowledged journals, for re-posting; the last stop date used
    let mut journals: Vec<(u64, Vec<(String, String)>)> = Vec::new();
    let mut last_stop = 0u64;
    while !clock.stop.load(Ordering::Acquire) {
        n += 1;
        let key = &keys[mine[rng.below(mine.len() as u64) as usize]];
        let dice = rng.below(100);
        let moved = if dice < 1 && creations < opts.creations {
            // a new instance with a reference nobody used
            creations += 1;
            let reference = format!("{NEW_PREFIX}c{c}n{n}");
            let (moved, acked) = request(
                c,
                &reference,
                (n, "started"),
                conns.person(),
                opts,
                clock,
                history,
            )
            .await;
            if acked {
                if let Ok((instance, computer, partition)) = parse_instance(&conns.person().buf) {
                    created.push(Key {
                        reference,
                        instance,
                        computer,
                        partition,
                    });
                }
            }
            moved
        } else if dice < 40 {
            let state = if rng.below(5) == 0 {
                "stopped"
            } else {
                "started"
            };
            request(
                c,
                &key.request_register(),
                (n, state),
                conns.person(),
                opts,
                clock,
                history,
            )
            .await
            .0
        } else if dice < 55 {
            let value = format!("c{c}n{n}");
            let Ok(xml) = marshal(&str_dict(&[(PARAM, &value)])) else {
                continue;
            };
            let form = vec![
                ("computer_id".to_string(), key.computer.clone()),
                ("computer_partition_id".to_string(), key.partition.clone()),
                ("connection_xml".to_string(), xml),
            ];
            write(
                c,
                &key.connection_register(),
                value,
                conns.computer(),
                "/setComputerPartitionConnectionXml",
                &form,
                opts,
                clock,
                history,
            )
            .await
            .0
        } else if dice < 61 {
            // usage: a new journal, or one acknowledged before posted again
            let (stop_us, lines, repost) = match journals.len() {
                m if m > 0 && rng.below(5) == 0 => {
                    let (stop, lines) = journals[rng.below(m as u64) as usize].clone();
                    (stop, lines, true)
                }
                _ => {
                    last_stop = unique_stop(c, last_stop);
                    let lines = (0..=rng.below(2))
                        .map(|i| {
                            let p = rng.below(SPARE_PARTITIONS as u64);
                            (format!("slappart{p}"), format!("{}{n:07}{i}", c + 1))
                        })
                        .collect();
                    (last_stop, lines, false)
                }
            };
            let (moved, acked) = post_usage(
                c,
                stop_us,
                &lines,
                repost,
                conns.spare(),
                opts,
                clock,
                history,
            )
            .await;
            if acked && !repost {
                journals.push((stop_us, lines));
            }
            moved
        } else if dice < 85 {
            match created.len() {
                // now and then, read back an instance this client created
                m if m > 0 && rng.below(4) == 0 => {
                    let k = created[rng.below(m as u64) as usize].clone();
                    read_linearizable(c, &k, false, &mut master, clock, history).await
                }
                _ => read_linearizable(c, key, true, &mut master, clock, history).await,
            }
            false
        } else {
            read_view(c, conns.computer(), opts, clock, history).await
        };
        if moved {
            g = (g + 1) % opts.gateways.len();
            conns = Conns::new(&opts.gateways[g], opts.identities.as_ref());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Client `c`'s `n`-th operation: (re-)request the root instance `reference` with its
/// parameter set to `c<c>n<n>` and this requested state, recorded as a write of the
/// register `reference`. As [`write`].
async fn request(
    c: usize,
    reference: &str,
    (n, state): (u64, &str),
    conn: &mut HttpConn,
    opts: &ClientOptions,
    clock: &RunClock,
    history: &Mutex<History>,
) -> (bool, bool) {
    let value = format!("c{c}n{n}");
    let Ok(form) = request_form(reference, &value, state) else {
        return (false, false);
    };
    let path = "/requestComputerPartition";
    let register_value = format!("{value}|{state}");
    write(
        c,
        reference,
        register_value,
        conn,
        path,
        &form,
        opts,
        clock,
        history,
    )
    .await
}

/// One write through the gateway: whether the gateway did not answer (move on), and
/// whether the write was acknowledged (its answer is in `conn.buf`).
#[allow(clippy::too_many_arguments)]
async fn write(
    c: usize,
    register: &str,
    value: String,
    conn: &mut HttpConn,
    path: &str,
    form: &[(String, String)],
    opts: &ClientOptions,
    clock: &RunClock,
    history: &Mutex<History>,
) -> (bool, bool) {
    let via = conn.addr().to_string();
    let invoke_us = clock.us();
    let r = tokio::time::timeout(opts.timeout, post(conn, path, form)).await;
    let complete_us = clock.us();
    let (outcome, complete, error, moved) = match r {
        Ok(Ok(200)) => (Outcome::Ok, Some(complete_us), None, false),
        // refused by validation: nothing was applied
        Ok(Ok(s @ 400..=499)) => (
            Outcome::Fail,
            Some(complete_us),
            Some(format!("{s}: {}", String::from_utf8_lossy(&conn.buf))),
            false,
        ),
        // the gateway gave up on the master (deadline, no leader): maybe applied
        Ok(Ok(s)) => (
            Outcome::Unknown,
            None,
            Some(format!("{s}: {}", String::from_utf8_lossy(&conn.buf))),
            false,
        ),
        Ok(Err(HttpError::NotSent(e))) => {
            (Outcome::Fail, Some(complete_us), Some(e.to_string()), true)
        }
        Ok(Err(e)) => (Outcome::Unknown, None, Some(e.to_string()), true),
        Err(_) => (Outcome::Unknown, None, Some("timed out".into()), true),
    };
    record(
        history,
        OpRecord {
            client: c,
            register: register.to_string(),
            kind: OpKind::Write { value },
            invoke_us,
            complete_us: complete,
            outcome,
            via,
            error,
        },
    );
    (moved, outcome == Outcome::Ok)
}

/// A stop date no other client uses (its remainder modulo 64 is the client's) and later
/// than this client's last, from the wall clock (the master refuses future periods).
fn unique_stop(c: usize, last: u64) -> u64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64);
    let mine = now / 64 * 64 + (c as u64 % 64);
    if mine > last {
        mine
    } else {
        last + 64
    }
}

/// The journal `slapos node report` would post for `computer`, stopping at `stop_date`:
/// one partition report per (partition, resource, quantity), put together by proto's
/// own rendition of slapgrid (`journal_from_partition_reports`).
pub fn journal_xml<'a>(
    computer: &str,
    stop_date: &str,
    lines: impl IntoIterator<Item = (&'a str, &'a str, &'a str)>,
) -> Result<String, String> {
    use slapos_proto::journal::{
        encode_computer_journal, journal_from_partition_reports, Amount, Consumption, Movement,
    };
    let reports = lines
        .into_iter()
        .map(|(partition, resource, quantity)| {
            let movement = Movement {
                resource: resource.into(),
                title: None,
                reference: Some(partition.into()),
                quantity: Amount::parse(quantity)?,
                price: Amount::parse("0")?,
                vat: "None".into(),
                categories: Vec::new(),
            };
            Ok((
                partition.to_string(),
                Consumption {
                    movements: vec![movement],
                },
            ))
        })
        .collect::<Result<Vec<_>, String>>()?;
    Ok(encode_computer_journal(&journal_from_partition_reports(
        computer, stop_date, &reports,
    )))
}

/// The journal of the spare computer's usage, `cpu` lines.
pub fn usage_journal(stop_us: u64, lines: &[(String, String)]) -> Result<String, String> {
    let stop = slapos_domain::format_date(slapos_domain::Timestamp::from_micros(stop_us));
    journal_xml(
        SPARE_COMPUTER,
        &stop,
        lines.iter().map(|(p, q)| (p.as_str(), "cpu", q.as_str())),
    )
}

/// Post a usage journal through the gateway: whether the gateway did not answer (move
/// on) and whether it was acknowledged. Outcomes as [`write`]'s.
#[allow(clippy::too_many_arguments)]
async fn post_usage(
    c: usize,
    stop_us: u64,
    lines: &[(String, String)],
    repost: bool,
    conn: &mut HttpConn,
    opts: &ClientOptions,
    clock: &RunClock,
    history: &Mutex<History>,
) -> (bool, bool) {
    let Ok(xml) = usage_journal(stop_us, lines) else {
        return (false, false);
    };
    let form = vec![
        ("computer_id".to_string(), SPARE_COMPUTER.to_string()),
        ("use_string".to_string(), xml),
    ];
    let via = conn.addr().to_string();
    let invoke_us = clock.us();
    let r = tokio::time::timeout(opts.timeout, post(conn, "/useComputer", &form)).await;
    let complete_us = clock.us();
    let body = |conn: &HttpConn| String::from_utf8_lossy(&conn.buf).into_owned();
    let (outcome, status, error, moved) = match r {
        Ok(Ok(200)) => (Outcome::Ok, Some(200), None, false),
        Ok(Ok(s @ 400..=499)) => (Outcome::Fail, Some(s), Some(body(conn)), false),
        Ok(Ok(s)) => (Outcome::Unknown, Some(s), Some(body(conn)), false),
        Ok(Err(HttpError::NotSent(e))) => (Outcome::Fail, None, Some(e.to_string()), true),
        Ok(Err(e)) => (Outcome::Unknown, None, Some(e.to_string()), true),
        Err(_) => (Outcome::Unknown, None, Some("timed out".into()), true),
    };
    if let Ok(mut h) = history.lock() {
        h.usage.push(UsageRecord {
            client: c,
            stop_us,
            lines: lines.to_vec(),
            repost,
            invoke_us,
            complete_us: (outcome != Outcome::Unknown).then_some(complete_us),
            outcome,
            status,
            via,
            error,
        });
    }
    (moved, outcome == Outcome::Ok)
}

/// The two registers of `key` as a state shows them.
pub fn registers_of(state: &State, key: &Key) -> (Option<String>, Option<String>) {
    let Some(inst) = state.instance(InstanceId(key.instance)) else {
        return (None, None);
    };
    let value = inst.parameter_strings.get(PARAM).cloned().flatten();
    let request = value.map(|v| {
        let s = match inst.own_state {
            RequestedState::Started => "started",
            RequestedState::Stopped => "stopped",
            RequestedState::Destroyed => "destroyed",
        };
        format!("{v}|{s}")
    });
    let connection = inst.connection.get(PARAM).cloned().flatten();
    (request, connection)
}

/// The request register of the root instance titled `title`, if it exists in `state`.
pub fn register_by_title(state: &State, title: &str) -> Option<Option<String>> {
    let inst = state
        .instances()
        .find(|i| i.is_root() && i.title == title)?;
    let key = Key {
        reference: title.to_string(),
        instance: inst.id.0,
        computer: String::new(),
        partition: String::new(),
    };
    Some(registers_of(state, &key).0)
}

/// Read one key's registers linearizably; returns them, or None when the read failed.
pub async fn read_key(
    master: &mut MasterClient,
    key: &Key,
) -> Result<(Option<String>, Option<String>), String> {
    let (entries, _) = master
        .read(
            &MasterQuery::Instance {
                id: InstanceId(key.instance),
            },
            Consistency::Linearizable,
            0,
        )
        .await
        .map_err(|e| e.to_string())?;
    let state = State::from_entries(entries).map_err(|e| e.to_string())?;
    Ok(registers_of(&state, key))
}

async fn read_linearizable(
    c: usize,
    key: &Key,
    with_connection: bool,
    master: &mut MasterClient,
    clock: &RunClock,
    history: &Mutex<History>,
) {
    let invoke_us = clock.us();
    let r = read_key(master, key).await;
    let complete_us = clock.us();
    let via = master.current_addr().unwrap_or("").to_string();
    match r {
        Ok((request, connection)) => {
            // setup wrote every request register, so "never written" is a real answer only
            // for the connection register
            let mut registers = vec![(key.request_register(), request)];
            if with_connection {
                registers.push((key.connection_register(), connection));
            }
            for (register, value) in registers {
                record(
                    history,
                    OpRecord {
                        client: c,
                        register,
                        kind: OpKind::Read { value },
                        invoke_us,
                        complete_us: Some(complete_us),
                        outcome: Outcome::Ok,
                        via: via.clone(),
                        error: None,
                    },
                );
            }
        }
        Err(e) => record(
            history,
            OpRecord {
                client: c,
                register: key.request_register(),
                kind: OpKind::Read { value: None },
                invoke_us,
                complete_us: None,
                outcome: Outcome::Fail,
                via,
                error: Some(e),
            },
        ),
    }
}

/// Every key's request register as a computer document shows it: `(reference, value)`.
fn view_of(body: &[u8]) -> Result<Vec<(String, String)>, String> {
    let computer = slap::Computer::decode(body, &Limits::default()).map_err(|e| e.to_string())?;
    let mut seen = Vec::new();
    for p in computer.partitions() {
        let Some(params) = p.parameter_dict.get() else {
            continue;
        };
        let title = params.get("instance_title").and_then(Value::as_str);
        let value = params.get(PARAM).and_then(Value::as_str);
        let state = p.requested_state.get();
        if let (Some(t), Some(v), Some(s)) = (title, value, state) {
            seen.push((t.to_string(), format!("{v}|{s}")));
        }
    }
    Ok(seen)
}

async fn read_view(
    c: usize,
    conn: &mut HttpConn,
    opts: &ClientOptions,
    clock: &RunClock,
    history: &Mutex<History>,
) -> bool {
    let via = conn.addr().to_string();
    let invoke_us = clock.us();
    let r = tokio::time::timeout(
        opts.timeout,
        conn.get_query("/getFullComputerInformation", &[("computer_id", COMPUTER)]),
    )
    .await;
    let complete_us = clock.us();
    let seen = match r {
        Ok(Ok(200)) => view_of(&conn.buf).ok(),
        _ => None,
    };
    let moved = !matches!(r, Ok(Ok(_)));
    if let Ok(mut h) = history.lock() {
        match seen {
            Some(seen) => h.views.push(ViewRecord {
                client: c,
                invoke_us,
                complete_us,
                via,
                seen,
            }),
            None => h.failed_views += 1,
        }
    }
    moved
}
