//! The JSON-RPC v0 API (`POST /slapos.<verb>.v0.<name>` with a JSON body), the subset
//! that maps onto the master's domain. Like [`crate::slap`] it knows no transport:
//! [`check_http`] and [`parse`] turn a call into a [`Call`] (or a JSON error), which is
//! answered from a [`State`] ([`Read::render`]), applied as a write ([`Call::Write`]),
//! or first located in the state and then written ([`Call::InstanceWrite`]).
//! [`serve_local`] does it all against a local state; `server::http` does it against
//! the Raft group ([`remote`]).
//!
//! `instance_guid` is the instance id (`SOFTINST-n`), not slapproxy's synthetic
//! `<title>___<requested_by>___<0|1>`. See `DESIGN.md`, "JSON-RPC v0".

pub mod ledger;
pub mod remote;
pub mod schema;

use std::collections::BTreeMap;

use serde_json::{json, Map, Value};
use slapos_domain::{
    Command, DomainError, InstanceId, Op, Outcome, Reply, RequestId, State, Timestamp,
};
use slapos_domain::{ParamValue, Requester, SoftwareReport, StatusKind};

use crate::slap::forms::parse_partition_header;
use crate::slap::{SlapContext, SlapResponse};

/// The content type of every answer.
pub const CONTENT_TYPE_JSON: &str = "application/json";

macro_rules! names {
    ($( $variant:ident = $name:literal; )*) => {
        /// The implemented methods.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Name { $( $variant, )* }

        impl Name {
            pub const ALL: &'static [Name] = &[ $( Name::$variant, )* ];

            /// The method name, i.e. the URL path segment.
            pub fn name(self) -> &'static str {
                match self { $( Name::$variant => $name, )* }
            }
        }
    };
}

names! {
    ComputeNodeInstanceList = "slapos.allDocs.v0.compute_node_instance_list";
    ComputeNodeSoftwareInstallationList = "slapos.allDocs.v0.compute_node_software_installation_list";
    InstanceNodeInstanceList = "slapos.allDocs.v0.instance_node_instance_list";
    GetSoftwareInstance = "slapos.get.v0.software_instance";
    GetComputePartition = "slapos.get.v0.compute_partition";
    PostSoftwareInstance = "slapos.post.v0.software_instance";
    PostSoftwareInstallation = "slapos.post.v0.software_installation";
    PutComputeNodeBang = "slapos.put.v0.compute_node_bang";
    PutSoftwareInstallationReportedState = "slapos.put.v0.software_installation_reported_state";
    PutSoftwareInstallationError = "slapos.put.v0.software_installation_error";
    PutSoftwareInstanceReportedState = "slapos.put.v0.software_instance_reported_state";
    PutSoftwareInstanceBang = "slapos.put.v0.software_instance_bang";
    PutSoftwareInstanceTitle = "slapos.put.v0.software_instance_title";
    PutSoftwareInstanceConnectionParameter = "slapos.put.v0.software_instance_connection_parameter";
    PutSoftwareInstanceError = "slapos.put.v0.software_instance_error";
    PostComputeNodeUsage = "slapos.post.v0.compute_node_usage";
    PostComputeNode = "slapos.post.v0.compute_node";
    PutComputeNodePolicy = "slapos.put.v0.compute_node_policy";
    PutPrice = "slapos.put.v0.price";
    PostAccountingPeriodClose = "slapos.post.v0.accounting_period_close";
    GetInvoice = "slapos.get.v0.invoice";
    MovementList = "slapos.allDocs.v0.movement_list";
    InstanceTreeList = "slapos.allDocs.v0.instance_tree_list";
    GetInstanceTree = "slapos.get.v0.instance_tree";
}

/// Methods of slapos.core's `json_rpc.json` that this gateway does not implement: they
/// answer 501 rather than 404 (see `DESIGN.md` for why each one is left out).
pub const NOT_IMPLEMENTED: &[&str] = &[
    "slapos.get.v0.hateoas_url",
    "slapos.get.v0.compute_node_status",
    "slapos.get.v0.software_instance_certificate",
    "slapos.post.v0.compute_node_certificate",
    "slapos.put.v0.compute_node_format",
    "slapos.remove.v0.compute_node_certificate",
    "slapos.allDocs.WIP.compute_node_list",
];

impl Name {
    pub fn from_name(name: &str) -> Option<Name> {
        Name::ALL.iter().copied().find(|n| n.name() == name)
    }

    fn schema(self) -> &'static [schema::Field] {
        use schema::*;
        match self {
            Name::ComputeNodeInstanceList | Name::ComputeNodeSoftwareInstallationList => {
                COMPUTER_GUID
            }
            Name::InstanceNodeInstanceList | Name::GetSoftwareInstance => INSTANCE_GUID,
            Name::GetComputePartition => COMPUTE_PARTITION,
            Name::PostSoftwareInstance => SOFTWARE_INSTANCE,
            Name::PostSoftwareInstallation => SOFTWARE_INSTALLATION,
            Name::PutComputeNodeBang => COMPUTER_MESSAGE,
            Name::PutSoftwareInstallationReportedState => INSTALLATION_REPORTED_STATE,
            Name::PutSoftwareInstallationError => INSTALLATION_ERROR,
            Name::PutSoftwareInstanceReportedState => INSTANCE_REPORTED_STATE,
            Name::PutSoftwareInstanceBang | Name::PutSoftwareInstanceError => INSTANCE_MESSAGE,
            Name::PutSoftwareInstanceTitle => INSTANCE_TITLE,
            Name::PutSoftwareInstanceConnectionParameter => CONNECTION_PARAMETER,
            Name::PostComputeNodeUsage => ledger::COMPUTE_NODE_USAGE,
            Name::PostComputeNode => ledger::COMPUTE_NODE,
            Name::PutComputeNodePolicy => ledger::COMPUTE_NODE_POLICY,
            Name::PutPrice => ledger::PRICE,
            Name::PostAccountingPeriodClose => ledger::PERIOD_CLOSE,
            Name::GetInvoice => ledger::INVOICE,
            Name::MovementList => ledger::MOVEMENT_LIST,
            Name::InstanceTreeList => NO_FIELDS,
            Name::GetInstanceTree => INSTANCE_TREE,
        }
    }
}

/// Whether a path segment is in the JSON-RPC namespace (`slapos.` + anything): such
/// paths are answered in JSON, known or not.
pub fn is_jsonrpc_name(name: &str) -> bool {
    name.starts_with("slapos.")
}

/// An error answer: `{"status": <code>, "type": "<reason phrase>", "title": "<message>"}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsonError {
    pub status: u16,
    pub title: String,
}

impl JsonError {
    pub fn new(status: u16, title: impl Into<String>) -> Self {
        JsonError {
            status,
            title: title.into(),
        }
    }

    /// The uncaught-exception answer (slapproxy's wording); the cause goes to the log.
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        tracing::error!(%cause, "JSON-RPC internal error");
        JsonError::new(500, "Internal server error")
    }

    pub fn to_response(&self) -> SlapResponse {
        json_response(
            self.status,
            &json!({
                "status": self.status,
                "type": reason_phrase(self.status),
                "title": self.title,
            }),
        )
    }
}

/// werkzeug's reason phrases for the codes this module answers.
pub fn reason_phrase(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        406 => "Not Acceptable",
        408 => "Request Timeout",
        409 => "Conflict",
        413 => "Request Entity Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        _ => "Unknown Error",
    }
}

/// A JSON answer with `status`.
pub fn json_response(status: u16, value: &Value) -> SlapResponse {
    SlapResponse {
        status,
        content_type: CONTENT_TYPE_JSON,
        body: value.to_string().into_bytes(),
    }
}

fn success(title: &str) -> SlapResponse {
    json_response(200, &json!({"type": "success", "title": title}))
}

/// Whether an `Accept` header admits `application/json` (absent or empty admits all).
pub fn accepts_json(accept: Option<&str>) -> bool {
    let Some(accept) = accept.map(str::trim).filter(|a| !a.is_empty()) else {
        return true;
    };
    accept.split(',').any(|range| {
        let mut parts = range.split(';');
        let mime = parts.next().unwrap_or("").trim().to_ascii_lowercase();
        let q_zero = parts.any(|p| {
            p.trim()
                .strip_prefix("q=")
                .and_then(|q| q.trim().parse::<f32>().ok())
                .is_some_and(|q| q <= 0.0)
        });
        !q_zero && matches!(mime.as_str(), "*/*" | "application/*" | "application/json")
    })
}

/// The checks made before the body is read: the method name (404 unknown, 501 not
/// implemented), the HTTP method (405 unless POST) and `Accept` (406).
pub fn check_http(name: &str, method: &str, accept: Option<&str>) -> Result<Name, JsonError> {
    let known = Name::from_name(name);
    if known.is_none() && !NOT_IMPLEMENTED.contains(&name) {
        return Err(JsonError::new(
            404,
            format!("{name} is not a JSON-RPC method of this master"),
        ));
    }
    if method != "POST" {
        return Err(JsonError::new(
            405,
            "The method is not allowed for the requested URL.",
        ));
    }
    if !accepts_json(accept) {
        return Err(JsonError::new(
            406,
            "The resource identified by the request is only capable of generating response \
             entities which have content characteristics not acceptable according to the \
             accept headers sent in the request.",
        ));
    }
    known.ok_or_else(|| JsonError::new(501, format!("{name} is not implemented by this master")))
}

/// A read: what it needs from the state, and how it is answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Read {
    ComputerInstances(String),
    ComputerSoftware(String),
    /// Shared instances hosted by an instance.
    Hosted(InstanceId),
    Instance(InstanceId),
    Partition {
        computer: String,
        partition: String,
    },
    /// Invoices and movement lists.
    Ledger(ledger::LedgerRead),
    /// The titles of the trees a person requested (`allDocs instance_tree_list`).
    Trees {
        owner: String,
    },
    /// The root of a person's tree, by title (`get instance_tree`).
    Tree {
        owner: String,
        title: String,
    },
}

/// A write on an instance named by its guid: the op depends on where it lives.
#[derive(Debug, Clone, PartialEq)]
pub enum InstanceAction {
    Connection(BTreeMap<String, Option<String>>),
    Reported(String),
    Bang(String),
    Title(String),
    Error(String),
}

#[derive(Debug, Clone, PartialEq)]
pub enum Call {
    Read(Read),
    /// A write answered `{"type": "success", "title": <title>}`.
    Write {
        op: Op,
        title: &'static str,
    },
    /// `post software_instance`: a request answered with the instance document.
    Request(Op),
    /// A write on an instance: located first ([`InstanceAction::op`]), then applied.
    InstanceWrite {
        id: InstanceId,
        action: InstanceAction,
    },
}

fn bad(message: impl Into<String>) -> JsonError {
    JsonError::new(400, message)
}

fn str_of<'a>(map: &'a Map<String, Value>, key: &str) -> &'a str {
    map.get(key).and_then(Value::as_str).unwrap_or("")
}

fn instance_guid(map: &Map<String, Value>) -> Result<InstanceId, JsonError> {
    let guid = str_of(map, "instance_guid");
    InstanceId::parse(guid)
        .ok_or_else(|| JsonError::new(403, format!("No software instance {guid} found.")))
}

/// A JSON value as an instance parameter (typed, as SLAP's marshalled ones).
pub fn param_from_json(v: &Value) -> ParamValue {
    match v {
        Value::Null => ParamValue::None,
        Value::Bool(b) => ParamValue::Bool(*b),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                ParamValue::Int(i)
            } else if n.is_u64() {
                ParamValue::Long(n.to_string())
            } else {
                ParamValue::Float(n.as_f64().unwrap_or(0.0))
            }
        }
        Value::String(s) => ParamValue::Str(s.clone()),
        Value::Array(items) => ParamValue::List(items.iter().map(param_from_json).collect()),
        Value::Object(map) => ParamValue::Dict(
            map.iter()
                .map(|(k, v)| (k.clone(), param_from_json(v)))
                .collect(),
        ),
    }
}

/// An instance parameter as JSON.
pub fn param_to_json(p: &ParamValue) -> Value {
    match p {
        ParamValue::None => Value::Null,
        ParamValue::Bool(b) => Value::Bool(*b),
        ParamValue::Int(i) => json!(i),
        ParamValue::Long(digits) => digits
            .parse::<serde_json::Number>()
            .map(Value::Number)
            .unwrap_or_else(|_| Value::String(digits.clone())),
        ParamValue::Float(f) => json!(f),
        ParamValue::Str(s) => Value::String(s.clone()),
        ParamValue::List(items) | ParamValue::Tuple(items) => {
            Value::Array(items.iter().map(param_to_json).collect())
        }
        ParamValue::Dict(map) => Value::Object(
            map.iter()
                .map(|(k, v)| (k.clone(), param_to_json(v)))
                .collect(),
        ),
    }
}

/// Parses and validates a body. `authorization` is the `Authorization` header: its
/// `X-SlapPartition` identity is the requester of `post software_instance` when the
/// context honours it.
pub fn parse(
    ctx: &SlapContext,
    name: Name,
    body: &[u8],
    authorization: Option<&str>,
) -> Result<Call, JsonError> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| bad(format!("the request body is not JSON: {e}")))?;
    let map = schema::validate(&value, name.schema()).map_err(bad)?;
    let s = |key: &str| str_of(map, key).to_string();
    Ok(match name {
        Name::PostComputeNodeUsage => ledger::usage(ctx, map)?,
        Name::PostComputeNode => ledger::register(ctx, map)?,
        Name::PutComputeNodePolicy => ledger::policy(ctx, map)?,
        Name::PutPrice => ledger::price(ctx, map)?,
        Name::PostAccountingPeriodClose => ledger::close(ctx, map)?,
        Name::GetInvoice => ledger::invoice(ctx, map)?,
        Name::MovementList => ledger::movements(ctx, map)?,
        Name::ComputeNodeInstanceList => Call::Read(Read::ComputerInstances(s("computer_guid"))),
        Name::ComputeNodeSoftwareInstallationList => {
            Call::Read(Read::ComputerSoftware(s("computer_guid")))
        }
        Name::InstanceNodeInstanceList => Call::Read(Read::Hosted(instance_guid(map)?)),
        Name::GetSoftwareInstance => Call::Read(Read::Instance(instance_guid(map)?)),
        // A person's own trees: the caller is the owner (no field names anyone else).
        Name::InstanceTreeList => Call::Read(Read::Trees {
            owner: ctx.person.clone(),
        }),
        Name::GetInstanceTree => Call::Read(Read::Tree {
            owner: ctx.person.clone(),
            title: s("title"),
        }),
        Name::GetComputePartition => Call::Read(Read::Partition {
            computer: s("computer_guid"),
            partition: s("compute_partition_id"),
        }),
        Name::PostSoftwareInstance => {
            let identity = match authorization.filter(|_| ctx.partition_header) {
                Some(header) => parse_partition_header(header).map_err(|e| bad(e.to_string()))?,
                None => None,
            };
            let requester = match identity {
                Some(p) => Requester::Partition {
                    computer: p.computer,
                    partition: p.partition,
                },
                None => Requester::Person(ctx.person.clone()),
            };
            let parameters = map
                .get("parameters")
                .and_then(Value::as_object)
                .map(|m| {
                    m.iter()
                        .map(|(k, v)| (k.clone(), param_from_json(v)))
                        .collect()
                })
                .unwrap_or_default();
            let sla = map
                .get("sla_parameters")
                .and_then(Value::as_object)
                .map(|m| {
                    m.iter()
                        .map(|(k, v)| {
                            let text = v
                                .as_str()
                                .map(str::to_string)
                                .unwrap_or_else(|| v.to_string());
                            (k.clone(), text)
                        })
                        .collect()
                })
                .unwrap_or_default();
            Call::Request(Op::RequestInstance {
                requester,
                title: s("title"),
                software_release: s("software_release_uri"),
                software_type: s("software_type"),
                // The schema's default.
                state: Some(
                    map.get("state")
                        .and_then(Value::as_str)
                        .unwrap_or("started")
                        .to_string(),
                ),
                shared: map.get("shared").and_then(Value::as_bool).unwrap_or(false),
                parameters,
                sla,
            })
        }
        Name::PostSoftwareInstallation => Call::Write {
            op: Op::Supply {
                computer: s("computer_guid"),
                url: s("software_release_uri"),
                state: map
                    .get("state")
                    .and_then(Value::as_str)
                    .unwrap_or("available")
                    .to_string(),
            },
            title: "Supplied",
        },
        Name::PutComputeNodeBang => Call::Write {
            op: Op::BangComputer {
                computer: s("computer_guid"),
                message: s("message"),
            },
            title: "Bang handled",
        },
        Name::PutSoftwareInstallationReportedState => Call::Write {
            op: Op::ReportSoftware {
                computer: s("computer_guid"),
                url: s("software_release_uri"),
                report: match str_of(map, "reported_state") {
                    "available" => SoftwareReport::Available,
                    "building" => SoftwareReport::Building,
                    _ => SoftwareReport::Destroyed,
                },
            },
            title: "State reported",
        },
        Name::PutSoftwareInstallationError => Call::Write {
            op: Op::ReportSoftware {
                computer: s("computer_guid"),
                url: s("software_release_uri"),
                report: SoftwareReport::Error(s("message")),
            },
            title: "Error reported",
        },
        Name::PutSoftwareInstanceReportedState => Call::InstanceWrite {
            id: instance_guid(map)?,
            action: InstanceAction::Reported(s("reported_state")),
        },
        Name::PutSoftwareInstanceBang => Call::InstanceWrite {
            id: instance_guid(map)?,
            action: InstanceAction::Bang(s("message")),
        },
        Name::PutSoftwareInstanceTitle => Call::InstanceWrite {
            id: instance_guid(map)?,
            action: InstanceAction::Title(s("title")),
        },
        Name::PutSoftwareInstanceError => Call::InstanceWrite {
            id: instance_guid(map)?,
            action: InstanceAction::Error(s("message")),
        },
        Name::PutSoftwareInstanceConnectionParameter => {
            let dict = map
                .get("connection_parameter_dict")
                .and_then(Value::as_object)
                .cloned()
                .unwrap_or_default();
            let mut connection = BTreeMap::new();
            for (k, v) in dict {
                let text = match v {
                    Value::Null => None,
                    Value::String(s) => Some(s),
                    Value::Bool(b) => Some(if b { "True" } else { "False" }.to_string()),
                    Value::Number(n) => Some(n.to_string()),
                    other => {
                        return Err(bad(format!(
                            "connection_parameter_dict['{k}']: {} is not a string",
                            schema::py_repr(&other)
                        )))
                    }
                };
                connection.insert(k, text);
            }
            Call::InstanceWrite {
                id: instance_guid(map)?,
                action: InstanceAction::Connection(connection),
            }
        }
    })
}

fn not_found_instance(id: InstanceId) -> JsonError {
    JsonError::new(403, format!("No software instance {id} found."))
}

fn not_registered(computer: &str) -> JsonError {
    JsonError::new(403, format!("{computer} is not registered."))
}

/// Where an instance lives, as the (computer, partition, shared reference) of the
/// partition that carries it (its host's for a shared instance).
fn locate(state: &State, id: InstanceId) -> Result<(String, String, Option<String>), JsonError> {
    let view = state
        .instance_view(id)
        .map_err(|_| not_found_instance(id))?;
    let (Some(c), Some(p)) = (view.computer, view.partition) else {
        return Err(JsonError::new(
            403,
            format!("{id} is not allocated on any partition."),
        ));
    };
    let shared = view.instance.shared.then(|| id.to_string());
    Ok((c.id.clone(), p.id.clone(), shared))
}

impl InstanceAction {
    /// The op this action is once the instance is located in `state`, and the title of
    /// its success answer; `Ok(None)` when nothing is to be written (a shared instance's
    /// destroyed report: its requester destroys it).
    pub fn op(
        &self,
        state: &State,
        id: InstanceId,
    ) -> Result<Option<(Op, &'static str)>, JsonError> {
        let (computer, partition, shared) = locate(state, id)?;
        Ok(Some(match self {
            InstanceAction::Connection(connection) => (
                Op::SetConnection {
                    computer,
                    partition,
                    shared,
                    connection: connection.clone(),
                },
                "Updated",
            ),
            InstanceAction::Reported(reported) if reported == "destroyed" => {
                if shared.is_some() {
                    return Ok(None);
                }
                (
                    Op::DestroyedPartition {
                        computer,
                        partition,
                    },
                    "Destroyed",
                )
            }
            InstanceAction::Reported(reported) => (
                Op::ReportStatus {
                    computer,
                    partition,
                    shared,
                    kind: if reported == "stopped" {
                        StatusKind::Stopped
                    } else {
                        StatusKind::Started
                    },
                    message: String::new(),
                },
                "State reported",
            ),
            InstanceAction::Error(message) => (
                Op::ReportStatus {
                    computer,
                    partition,
                    shared,
                    kind: StatusKind::Error,
                    message: message.clone(),
                },
                "Error reported",
            ),
            InstanceAction::Bang(message) => {
                if shared.is_some() {
                    return Err(bad(format!(
                        "{id} is a shared instance: bang its requester's tree instead"
                    )));
                }
                (
                    Op::Bang {
                        computer,
                        partition,
                        message: message.clone(),
                    },
                    "Bang handled",
                )
            }
            InstanceAction::Title(title) => (
                Op::Rename {
                    computer,
                    partition,
                    shared,
                    new_name: title.clone(),
                },
                "Renamed",
            ),
        }))
    }
}

/// A refused write as a JSON error: "not found" and allocation failures are 403 (as
/// slapproxy), bad arguments 400, conflicts 409, a proposer's clock out of bounds 503,
/// the rest 500.
pub fn domain_error(err: &DomainError) -> JsonError {
    let status = match err {
        DomainError::UnknownComputer(_)
        | DomainError::UnknownPartition { .. }
        | DomainError::UnknownInstance(_)
        | DomainError::UnknownSharedInstance { .. }
        | DomainError::UnknownSoftware { .. }
        | DomainError::PartitionFree { .. }
        | DomainError::NoCapacity { .. }
        | DomainError::NoSharedHost { .. } => 403,
        DomainError::InvalidArgument { .. }
        | DomainError::UnknownSlaKey(_)
        | DomainError::UsageRefused { .. } => 400,
        DomainError::Forbidden(_) | DomainError::NotOwner { .. } => 403,
        DomainError::ComputerExists(_)
        | DomainError::PartitionsInUse { .. }
        | DomainError::TitleTaken { .. }
        | DomainError::NotRequestedDestroyed { .. }
        | DomainError::SoftwareNotDestroyed { .. }
        | DomainError::NotSupplied { .. }
        | DomainError::JournalConflict { .. }
        | DomainError::PeriodClosed { .. }
        | DomainError::AuthorityInstalled
        | DomainError::BadToken(_)
        | DomainError::CertificateKnown(_) => 409,
        DomainError::ClockSkew { .. } => 503,
        DomainError::RequestExpired { .. } | DomainError::NoAuthority => {
            return JsonError::internal(err)
        }
    };
    JsonError::new(status, err.to_string())
}

/// The answer of a plain write.
pub fn render_write(outcome: &Outcome, title: &str) -> SlapResponse {
    match outcome {
        Ok(_) => success(title),
        Err(e) => domain_error(e).to_response(),
    }
}

/// The answer of `post software_instance`, from the state after the write.
pub fn render_request(state: &State, outcome: &Outcome) -> SlapResponse {
    match outcome {
        Ok(Reply::Instance { id, .. }) => match instance_document(state, *id) {
            Ok(doc) => json_response(200, &doc),
            Err(e) => e.to_response(),
        },
        Ok(other) => {
            JsonError::internal(format!("unexpected reply to a request: {other:?}")).to_response()
        }
        Err(e) => domain_error(e).to_response(),
    }
}

fn string_params(params: &BTreeMap<String, Option<String>>) -> Value {
    Value::Object(
        params
            .iter()
            .map(|(k, v)| (k.clone(), v.clone().map_or(Value::Null, Value::String)))
            .collect(),
    )
}

fn typed_params(params: &BTreeMap<String, ParamValue>) -> Value {
    Value::Object(
        params
            .iter()
            .map(|(k, v)| (k.clone(), param_to_json(v)))
            .collect(),
    )
}

/// The software instance document (`get software_instance`, `post software_instance`).
pub fn instance_document(state: &State, id: InstanceId) -> Result<Value, JsonError> {
    let view = state
        .instance_view(id)
        .map_err(|_| not_found_instance(id))?;
    let inst = view.instance;
    // A regular instance's parameters as instance XML reads them back (strings); a
    // shared one's with their types, as its host receives them.
    let parameters = if inst.shared {
        typed_params(&inst.parameters)
    } else {
        string_params(&inst.parameter_strings)
    };
    let (ip_list, full_ip_list): (Vec<Value>, Vec<Value>) = match (view.partition, inst.shared) {
        (Some(p), false) => (
            p.addresses
                .iter()
                .map(|a| json!([p.interface, a.addr]))
                .collect(),
            p.addresses
                .iter()
                .filter_map(|a| {
                    let gw = a.gateway.as_ref()?;
                    let net = a.network.as_ref()?;
                    Some(json!([p.interface, a.addr, gw, a.netmask, net]))
                })
                .collect(),
        ),
        _ => (Vec::new(), Vec::new()),
    };
    Ok(json!({
        "title": inst.title,
        "instance_guid": inst.id.to_string(),
        "software_release_uri": inst.software_release,
        "software_type": inst.software_type,
        "state": inst.requested_state.as_str(),
        "connection_parameters": string_params(&inst.connection),
        "parameters": parameters,
        "shared": inst.shared,
        "root_instance_title": view.root_title,
        "ip_list": ip_list,
        "full_ip_list": full_ip_list,
        "sla_parameters": inst.sla,
        "computer_guid": view.computer.map(|c| c.id.as_str()).unwrap_or(""),
        "compute_partition_id": view.partition.map(|p| p.id.as_str()).unwrap_or(""),
        "processing_timestamp": inst.timestamp.secs(),
        "access_status_message": inst.access_status.as_ref().map(|s| s.message.as_str()).unwrap_or(""),
    }))
}

impl Read {
    /// The answer, from a state holding what the read needs ([`remote`] says what).
    pub fn render(&self, state: &State) -> SlapResponse {
        match self.value(state) {
            Ok(v) => json_response(200, &v),
            Err(e) => e.to_response(),
        }
    }

    fn value(&self, state: &State) -> Result<Value, JsonError> {
        match self {
            Read::Ledger(read) => read.value(state),
            Read::ComputerInstances(computer) => {
                let view = state
                    .computer_view(computer)
                    .map_err(|_| not_registered(computer))?;
                let list: Vec<Value> = view
                    .partitions
                    .iter()
                    .filter_map(|p| {
                        let inst = p.instance?;
                        Some(json!({
                            "title": inst.title,
                            "instance_guid": inst.id.to_string(),
                            "state": inst.requested_state.as_str(),
                            "compute_partition_id": p.partition.id,
                            "software_release_uri": inst.software_release,
                        }))
                    })
                    .collect();
                Ok(json!({ "result_list": list }))
            }
            Read::ComputerSoftware(computer) => {
                let view = state
                    .computer_view(computer)
                    .map_err(|_| not_registered(computer))?;
                let list: Vec<Value> = view
                    .software
                    .iter()
                    .map(|s| {
                        json!({
                            "software_release_uri": s.url,
                            "state": s.installation.requested.as_str(),
                        })
                    })
                    .collect();
                Ok(json!({ "result_list": list }))
            }
            Read::Hosted(id) => {
                let (computer, partition, shared) = locate(state, *id)?;
                if shared.is_some() {
                    return Err(not_found_instance(*id));
                }
                let view = state
                    .partition_view(&computer, &partition)
                    .map_err(|_| not_found_instance(*id))?;
                let list: Vec<Value> = view
                    .shared
                    .iter()
                    .map(|s| {
                        let inst = s.instance;
                        json!({
                            "title": inst.title,
                            "instance_guid": inst.id.to_string(),
                            "software_type": inst.software_type,
                            "state": inst.requested_state.as_str(),
                            "parameters": typed_params(&inst.parameters),
                            "compute_partition_id": partition,
                        })
                    })
                    .collect();
                Ok(json!({ "result_list": list }))
            }
            Read::Instance(id) => instance_document(state, *id),
            Read::Trees { owner } => {
                let list: Vec<Value> = state
                    .roots_of(owner)
                    .map(|(title, _)| json!({ "title": title }))
                    .collect();
                Ok(json!({ "result_list": list }))
            }
            Read::Tree { owner, title } => match state.root_by_title(owner, title) {
                Some(id) => instance_document(state, id),
                // slapproxy's wording and status
                None => Err(JsonError::new(
                    403,
                    format!("No instance tree {title} found."),
                )),
            },
            Read::Partition {
                computer,
                partition,
            } => {
                let view = state.partition_view(computer, partition).map_err(|_| {
                    JsonError::new(403, format!("No instance on partition {partition} found."))
                })?;
                let inst = view.instance.ok_or_else(|| {
                    JsonError::new(403, format!("No instance on partition {partition} found."))
                })?;
                instance_document(state, inst.id)
            }
        }
    }
}

/// One call served against a local state, start to end (proxy mode, tests): the HTTP
/// checks, parsing, then a read, a write (stamped with `request_id` and `at`) or a
/// located write.
#[allow(clippy::too_many_arguments)]
pub fn serve_local(
    ctx: &SlapContext,
    state: &mut State,
    name: &str,
    method: &str,
    accept: Option<&str>,
    body: &[u8],
    authorization: Option<&str>,
    request_id: RequestId,
    at: Timestamp,
) -> SlapResponse {
    let name = match check_http(name, method, accept) {
        Ok(n) => n,
        Err(e) => return e.to_response(),
    };
    let call = match parse(ctx, name, body, authorization) {
        Ok(c) => c,
        Err(e) => return e.to_response(),
    };
    let apply = |state: &mut State, op: Op| {
        let outcome = state.apply(&Command {
            request_id: request_id.clone(),
            at,
            op,
        });
        // no storage behind a local state: its usage stays where reads find it
        state.keep_usage_in_memory();
        outcome
    };
    match call {
        Call::Read(read) => read.render(state),
        Call::Write { op, title } => render_write(&apply(state, op), title),
        Call::Request(op) => {
            let outcome = apply(state, op);
            render_request(state, &outcome)
        }
        Call::InstanceWrite { id, action } => match action.op(state, id) {
            Ok(Some((op, title))) => render_write(&apply(state, op), title),
            Ok(None) => success("Ignored"),
            Err(e) => e.to_response(),
        },
    }
}
