//! Inputs of the legacy SLAP endpoints: form fields (POST) or query parameters (GET), as
//! (name, value) pairs already URL-decoded by the transport, plus the `Authorization`
//! header. Each endpoint becomes a [`Write`] carrying a [`slapos_domain::Op`], a [`Query`],
//! or an answer that needs no state.
//!
//! Rules (protocol reference sections 1-3):
//! * a field given twice counts once, its first value (what Flask's `request.form[..]`
//!   returns);
//! * optional fields holding `None` (any case) or nothing are absent: the client sends
//!   Python's None as the string `None`;
//! * a missing required field is a [`FormError::MissingField`] naming it (400);
//! * marshalled fields go through the bounded `xml_marshaller` decoder with the limits of
//!   their kind ([`crate::slap::FieldLimits`]); every other field is bounded in bytes;
//! * a value of the wrong shape is refused with the path to it
//!   (`partition_list[2].address_list[0].addr`).

use std::collections::BTreeMap;

use slapos_domain::Op;
use slapos_domain::{
    AddressSpec, ComputerSpec, ParamValue, Params, PartitionSpec, Requester, SoftwareReport,
    StatusKind, StringParams, UsageLine, UsageTransaction,
};
use slapos_proto::marshal::{self, Value};
use slapos_proto::{DecodeError, Limits};

use super::{Endpoint, SlapContext, SlapResponse};

/// Why the inputs of a call were refused. Every variant is a client error (400); the
/// message names the field, and for marshalled fields the decoder's message says where.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum FormError {
    #[error("missing required field '{field}'")]
    MissingField { field: &'static str },
    #[error("field '{field}' is {size} bytes, over the limit of {limit} bytes")]
    TooLarge {
        field: &'static str,
        size: usize,
        limit: usize,
    },
    #[error("field '{field}' is not a valid marshalled document: {source}")]
    Marshal {
        field: &'static str,
        #[source]
        source: DecodeError,
    },
    #[error("field '{field}': {}{message}", at(.path))]
    Shape {
        field: &'static str,
        /// Where in the decoded value, empty for the value itself.
        path: String,
        message: String,
    },
    #[error("malformed Authorization header: {0}")]
    Authorization(String),
    #[error("{0}")]
    Conflict(String),
}

fn at(path: &str) -> String {
    if path.is_empty() {
        String::new()
    } else {
        format!("{path}: ")
    }
}

impl FormError {
    /// Always 400: the request itself is wrong.
    pub fn status(&self) -> u16 {
        400
    }

    pub fn to_response(&self) -> SlapResponse {
        SlapResponse::text(self.status(), self.to_string())
    }

    fn shape(field: &'static str, path: impl Into<String>, message: impl Into<String>) -> Self {
        FormError::Shape {
            field,
            path: path.into(),
            message: message.into(),
        }
    }
}

/// Who the `requester` of a `requestComputerPartition` came from; decides how an unknown
/// requesting partition is answered (400 for the header, as slapproxy; 404 for the form).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Identity {
    /// Not a request: the op names its partition itself.
    NotApplicable,
    /// The `X-SlapPartition` Authorization header.
    AuthorizationHeader,
    /// The `computer_id` / `computer_partition_id` form fields.
    FormFields,
    /// No partition named: a person's root request.
    Person,
}

/// A write: wrap `op` into a [`slapos_domain::Command`], apply it, and answer with
/// [`super::render::write`].
#[derive(Debug, Clone, PartialEq)]
pub struct Write {
    pub endpoint: Endpoint,
    pub op: Op,
    pub identity: Identity,
}

/// How `getSoftwareReleaseListFromSoftwareProduct` was asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProductLookup {
    /// `software_product_reference`: the releases of that product.
    Product(String),
    /// `software_release_url`: the releases of the product(s) listing that URL.
    SoftwareRelease(String),
}

/// A read, answered by [`super::render::query`] from a view of the state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Query {
    /// `getFullComputerInformation` and its legacy alias `getComputerInformation`.
    Computer { computer: String },
    /// `registerComputerPartition`.
    Partition { computer: String, partition: String },
    /// `getComputerPartitionCertificate`.
    PartitionCertificate { computer: String, partition: String },
    /// `getComputerPartitionStatus`.
    PartitionStatus { computer: String, partition: String },
    /// `getHostingSubscriptionIpList`: the addresses of the partition's whole tree.
    HostingSubscriptionIpList { computer: String, partition: String },
    /// `getComputerStatus`.
    ComputerStatus { computer: String },
    /// `getSoftwareReleaseListFromSoftwareProduct`.
    SoftwareReleaseList(ProductLookup),
    /// `getHateoasUrl`.
    HateoasUrl,
    /// `getRunId`.
    RunId,
}

/// What one call asks for.
#[derive(Debug, Clone, PartialEq)]
pub enum SlapCall {
    Write(Write),
    Query(Query),
    /// Answered without the state: the no-op
    /// `updateComputerPartitionRelatedInstanceList`, endpoints this gateway does not offer.
    Answer(SlapResponse),
}

/// The partition an `X-SlapPartition` header names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionIdentity {
    pub computer: String,
    pub partition: String,
}

/// Parses an `Authorization` header the way slapproxy does: the scheme (up to the first
/// whitespace) compared case-insensitively to `X-SlapPartition`; the rest split on `,`,
/// each item split on its first `=`, keys and values stripped. Another scheme is no
/// identity (`Ok(None)`); an item without `=`, or a header lacking `computer_id` or
/// `computer_partition_id`, is malformed (slapproxy fails with a 500 there; we say 400).
/// A computer's usage journal (`computer_consumption.xsd`, the body of `useComputer` and
/// the `tioxml` of `compute_node_usage`) as the op that records it: validated against
/// the schema here, against the state by the master.
pub fn usage_op(computer: String, journal: &str, limits: &Limits) -> Result<Op, String> {
    let journal = slapos_proto::journal::decode_computer_journal(journal.as_bytes(), limits)
        .map_err(|e| format!("not a valid computer consumption journal: {e}"))?;
    let transactions = journal
        .transactions
        .into_iter()
        .map(|t| UsageTransaction {
            reference: t.reference,
            start_date: t.start_date,
            stop_date: t.stop_date,
            lines: t
                .movements
                .into_iter()
                .map(|m| UsageLine {
                    partition: m.reference,
                    resource: m.resource,
                    quantity: m.quantity.trimmed().to_string(),
                })
                .collect(),
        })
        .collect();
    Ok(Op::RecordUsage {
        computer,
        reporter: None,
        transactions,
    })
}

pub fn parse_partition_header(value: &str) -> Result<Option<PartitionIdentity>, FormError> {
    let value = value.trim();
    let (scheme, rest) = value.split_once(char::is_whitespace).unwrap_or((value, ""));
    if !scheme.eq_ignore_ascii_case("x-slappartition") {
        return Ok(None);
    }
    let mut computer = None;
    let mut partition = None;
    for item in rest.split(',') {
        let Some((key, val)) = item.split_once('=') else {
            return Err(FormError::Authorization(format!(
                "X-SlapPartition item '{}' is not key=value",
                item.trim()
            )));
        };
        match key.trim() {
            "computer_id" => computer = Some(val.trim()),
            "computer_partition_id" => partition = Some(val.trim()),
            _ => {}
        }
    }
    match (computer, partition) {
        (Some(c), Some(p)) if !c.is_empty() && !p.is_empty() => Ok(Some(PartitionIdentity {
            computer: c.to_string(),
            partition: p.to_string(),
        })),
        (Some(c), _) if !c.is_empty() => Err(FormError::Authorization(
            "X-SlapPartition lacks computer_partition_id".to_string(),
        )),
        _ => Err(FormError::Authorization(
            "X-SlapPartition lacks computer_id".to_string(),
        )),
    }
}

/// The fields of one call.
struct Fields<'a> {
    pairs: &'a [(String, String)],
    ctx: &'a SlapContext,
}

fn is_absent(value: &str) -> bool {
    value.is_empty() || value.eq_ignore_ascii_case("none")
}

impl<'a> Fields<'a> {
    fn raw(&self, name: &str) -> Option<&'a str> {
        self.pairs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    fn bounded(
        &self,
        name: &'static str,
        value: &'a str,
        limit: usize,
    ) -> Result<&'a str, FormError> {
        if value.len() > limit {
            return Err(FormError::TooLarge {
                field: name,
                size: value.len(),
                limit,
            });
        }
        Ok(value)
    }

    /// A required plain field (its value as sent, even `None`).
    fn required(&self, name: &'static str) -> Result<String, FormError> {
        let value = self
            .raw(name)
            .ok_or(FormError::MissingField { field: name })?;
        Ok(self
            .bounded(name, value, self.ctx.limits.text_max_bytes)?
            .to_string())
    }

    /// An optional plain field; empty and `None` are absent.
    fn optional(&self, name: &'static str) -> Result<Option<String>, FormError> {
        match self.raw(name) {
            Some(v) if !is_absent(v) => Ok(Some(
                self.bounded(name, v, self.ctx.limits.text_max_bytes)?
                    .to_string(),
            )),
            _ => Ok(None),
        }
    }

    fn decode(&self, name: &'static str, value: &str, limits: &Limits) -> Result<Value, FormError> {
        marshal::decode(value.as_bytes(), limits).map_err(|source| FormError::Marshal {
            field: name,
            source,
        })
    }

    fn marshal_required(&self, name: &'static str, limits: &Limits) -> Result<Value, FormError> {
        let value = self
            .raw(name)
            .ok_or(FormError::MissingField { field: name })?;
        self.decode(name, value, limits)
    }

    fn marshal_optional(
        &self,
        name: &'static str,
        limits: &Limits,
    ) -> Result<Option<Value>, FormError> {
        match self.raw(name) {
            Some(v) if !is_absent(v) => self.decode(name, v, limits).map(Some),
            _ => Ok(None),
        }
    }
}

/// Parses the inputs of `endpoint`. `fields` are the form fields of a POST or the query
/// parameters of a GET; `authorization` the `Authorization` header, if any.
pub fn parse(
    ctx: &SlapContext,
    endpoint: Endpoint,
    fields: &[(String, String)],
    authorization: Option<&str>,
) -> Result<SlapCall, FormError> {
    let f = Fields { pairs: fields, ctx };
    let limits = &ctx.limits;
    let write = |op: Op| {
        Ok(SlapCall::Write(Write {
            endpoint,
            op,
            identity: Identity::NotApplicable,
        }))
    };
    let query = |q: Query| Ok(SlapCall::Query(q));
    match endpoint {
        Endpoint::GetFullComputerInformation | Endpoint::GetComputerInformation => {
            query(Query::Computer {
                computer: f.required("computer_id")?,
            })
        }
        Endpoint::LoadComputerConfigurationFromXml => {
            let value = f.marshal_required("xml", &limits.document)?;
            let (computer, spec) = computer_spec(&value)?;
            write(Op::FormatComputer { computer, spec })
        }
        Endpoint::SupplySupply => write(Op::Supply {
            url: f.required("url")?,
            computer: f.required("computer_id")?,
            state: f.required("state")?,
        }),
        Endpoint::RequestComputerPartition => request(&f, authorization),
        Endpoint::RegisterComputerPartition => query(Query::Partition {
            computer: f.required("computer_reference")?,
            partition: f.required("computer_partition_reference")?,
        }),
        Endpoint::SetComputerPartitionConnectionXml => {
            let computer = f.required("computer_id")?;
            let partition = f.required("computer_partition_id")?;
            let value = f.marshal_required("connection_xml", &limits.parameters)?;
            let connection = string_dict("connection_xml", &value)?;
            write(Op::SetConnection {
                computer,
                partition,
                shared: f.optional("slave_reference")?,
                connection,
            })
        }
        Endpoint::SoftwareInstanceBang => write(Op::Bang {
            computer: f.required("computer_id")?,
            partition: f.required("computer_partition_id")?,
            message: f.required("message")?,
        }),
        Endpoint::SoftwareInstanceRename => write(Op::Rename {
            computer: f.required("computer_id")?,
            partition: f.required("computer_partition_id")?,
            shared: f.optional("slave_reference")?,
            new_name: f.required("new_name")?,
        }),
        Endpoint::StartedComputerPartition | Endpoint::StoppedComputerPartition => {
            write(Op::ReportStatus {
                computer: f.required("computer_id")?,
                partition: f.required("computer_partition_id")?,
                shared: f.optional("slave_reference")?,
                kind: if endpoint == Endpoint::StartedComputerPartition {
                    StatusKind::Started
                } else {
                    StatusKind::Stopped
                },
                message: String::new(),
            })
        }
        Endpoint::SoftwareInstanceError => write(Op::ReportStatus {
            computer: f.required("computer_id")?,
            partition: f.required("computer_partition_id")?,
            shared: f.optional("slave_reference")?,
            kind: StatusKind::Error,
            message: f.required("error_log")?,
        }),
        Endpoint::DestroyedComputerPartition => write(Op::DestroyedPartition {
            computer: f.required("computer_id")?,
            partition: f.required("computer_partition_id")?,
        }),
        Endpoint::BuildingSoftwareRelease
        | Endpoint::AvailableSoftwareRelease
        | Endpoint::DestroyedSoftwareRelease
        | Endpoint::SoftwareReleaseError => {
            let url = f.required("url")?;
            let computer = f.required("computer_id")?;
            let report = match endpoint {
                Endpoint::BuildingSoftwareRelease => SoftwareReport::Building,
                Endpoint::AvailableSoftwareRelease => SoftwareReport::Available,
                Endpoint::DestroyedSoftwareRelease => SoftwareReport::Destroyed,
                _ => SoftwareReport::Error(f.required("error_log")?),
            };
            write(Op::ReportSoftware {
                computer,
                url,
                report,
            })
        }
        Endpoint::UseComputer => {
            let computer = f.required("computer_id")?;
            let journal = f.raw("use_string").ok_or(FormError::MissingField {
                field: "use_string",
            })?;
            let op = usage_op(computer, journal, &limits.document).map_err(|message| {
                FormError::Shape {
                    field: "use_string",
                    path: String::new(),
                    message,
                }
            })?;
            write(op)
        }
        Endpoint::ComputerBang => write(Op::BangComputer {
            computer: f.required("computer_id")?,
            message: f.required("message")?,
        }),
        Endpoint::GetComputerPartitionCertificate => query(Query::PartitionCertificate {
            computer: f.required("computer_id")?,
            partition: f.required("computer_partition_id")?,
        }),
        Endpoint::GetSoftwareReleaseListFromSoftwareProduct => {
            let product = f.optional("software_product_reference")?;
            let url = f.optional("software_release_url")?;
            match (product, url) {
                (Some(p), None) => query(Query::SoftwareReleaseList(ProductLookup::Product(p))),
                (None, Some(u)) => query(Query::SoftwareReleaseList(
                    ProductLookup::SoftwareRelease(u),
                )),
                (Some(_), Some(_)) => Err(FormError::Conflict(
                    "give software_product_reference or software_release_url, not both".to_string(),
                )),
                (None, None) => Err(FormError::MissingField {
                    field: "software_product_reference",
                }),
            }
        }
        Endpoint::GetComputerPartitionStatus => query(Query::PartitionStatus {
            computer: f.required("computer_id")?,
            partition: f.required("computer_partition_id")?,
        }),
        Endpoint::GetRunId => query(Query::RunId),
        Endpoint::GetHateoasUrl => query(Query::HateoasUrl),
        Endpoint::GetHostingSubscriptionIpList => query(Query::HostingSubscriptionIpList {
            computer: f.required("computer_id")?,
            partition: f.required("computer_partition_id")?,
        }),
        Endpoint::GetComputerStatus => query(Query::ComputerStatus {
            computer: f.required("computer_id")?,
        }),
        Endpoint::GenerateComputerCertificate | Endpoint::RevokeComputerCertificate => {
            f.required("computer_id")?;
            Ok(SlapCall::Answer(SlapResponse::text(
                501,
                format!(
                    "{endpoint} is not offered yet: certificates come with the master's certificate authority"
                ),
            )))
        }
        Endpoint::RequestComputer => {
            f.required("computer_title")?;
            Ok(SlapCall::Answer(SlapResponse::text(
                501,
                "requestComputer is not offered yet: computers register with `slapos node register`",
            )))
        }
        Endpoint::UpdateComputerPartitionRelatedInstanceList => {
            f.required("computer_id")?;
            f.required("computer_partition_id")?;
            let value = f.marshal_required("instance_reference_xml", &limits.small)?;
            let items = value.as_list().ok_or_else(|| {
                FormError::shape(
                    "instance_reference_xml",
                    "",
                    format!("expected a list, got {}", value.type_name()),
                )
            })?;
            for (i, item) in items.iter().enumerate() {
                expect_str("instance_reference_xml", &format!("[{i}]"), item)?;
            }
            // The real master disabled this feature: it answers an empty 200.
            Ok(SlapCall::Answer(SlapResponse::text(200, "")))
        }
    }
}

/// `requestComputerPartition`.
fn request(f: &Fields<'_>, authorization: Option<&str>) -> Result<SlapCall, FormError> {
    let ctx = f.ctx;
    let limits = &ctx.limits;
    let software_release = f.required("software_release")?;
    let software_type = f.required("software_type")?;
    let title = f.required("partition_reference")?;
    let state = match f.marshal_required("state", &limits.small)? {
        Value::None => None,
        Value::Str(s) => Some(s),
        other => {
            return Err(FormError::shape(
                "state",
                "",
                format!("expected str or None, got {}", other.type_name()),
            ))
        }
    };
    let shared = match f.marshal_optional("shared_xml", &limits.small)? {
        None | Some(Value::None) => false,
        Some(Value::Bool(b)) => b,
        Some(Value::Int(i)) => i != 0,
        Some(other) => {
            return Err(FormError::shape(
                "shared_xml",
                "",
                format!("expected bool, got {}", other.type_name()),
            ))
        }
    };
    let parameters = match f.marshal_optional("partition_parameter_xml", &limits.parameters)? {
        None | Some(Value::None) => Params::new(),
        Some(v) => params("partition_parameter_xml", &v)?,
    };
    let sla = match f.marshal_optional("filter_xml", &limits.small)? {
        None | Some(Value::None) => BTreeMap::new(),
        Some(v) => sla("filter_xml", &v)?,
    };

    let header = match authorization {
        Some(h) if ctx.partition_header => parse_partition_header(h)?,
        _ => None,
    };
    let form_computer = f.optional("computer_id")?;
    let form_partition = f.optional("computer_partition_id")?;
    let (requester, identity) = match (header, form_computer, form_partition) {
        (Some(id), _, _) => (
            Requester::Partition {
                computer: id.computer,
                partition: id.partition,
            },
            Identity::AuthorizationHeader,
        ),
        (None, Some(computer), Some(partition)) => (
            Requester::Partition {
                computer,
                partition,
            },
            Identity::FormFields,
        ),
        (None, None, None) => (Requester::Person(ctx.person.clone()), Identity::Person),
        (None, Some(_), None) => {
            return Err(FormError::MissingField {
                field: "computer_partition_id",
            })
        }
        (None, None, Some(_)) => {
            return Err(FormError::MissingField {
                field: "computer_id",
            })
        }
    };
    Ok(SlapCall::Write(Write {
        endpoint: Endpoint::RequestComputerPartition,
        op: Op::RequestInstance {
            requester,
            title,
            software_release,
            software_type,
            state,
            shared,
            parameters,
            sla,
        },
        identity,
    }))
}

/// A marshalled value as a parameter value. Objects cannot be parameters; dictionary keys
/// must be strings (they are in every SLAP use).
pub fn param_value(
    field: &'static str,
    path: &str,
    value: &Value,
) -> Result<ParamValue, FormError> {
    Ok(match value {
        Value::None => ParamValue::None,
        Value::Bool(b) => ParamValue::Bool(*b),
        Value::Int(i) => ParamValue::Int(*i),
        Value::Long(digits) => ParamValue::Long(digits.clone()),
        Value::Float(x) if !x.is_finite() => {
            return Err(FormError::shape(
                field,
                path,
                "a parameter cannot be NaN or infinite",
            ))
        }
        Value::Float(x) => ParamValue::Float(*x),
        Value::Str(s) => ParamValue::Str(s.clone()),
        Value::List(items) => ParamValue::List(
            items
                .iter()
                .enumerate()
                .map(|(i, v)| param_value(field, &format!("{path}[{i}]"), v))
                .collect::<Result<_, _>>()?,
        ),
        Value::Tuple(items) => ParamValue::Tuple(
            items
                .iter()
                .enumerate()
                .map(|(i, v)| param_value(field, &format!("{path}[{i}]"), v))
                .collect::<Result<_, _>>()?,
        ),
        Value::Dict(entries) => {
            let mut map = BTreeMap::new();
            for (k, v) in entries {
                let key = dict_key(field, path, k)?;
                let inner = param_value(field, &join(path, &key), v)?;
                map.insert(key, inner);
            }
            ParamValue::Dict(map)
        }
        Value::Object(o) => {
            return Err(FormError::shape(
                field,
                path,
                format!("a {} object cannot be a parameter", o.class),
            ))
        }
    })
}

/// The inverse of [`param_value`], for rendering.
pub fn param_to_value(value: &ParamValue) -> Value {
    match value {
        ParamValue::None => Value::None,
        ParamValue::Bool(b) => Value::Bool(*b),
        ParamValue::Int(i) => Value::Int(*i),
        ParamValue::Long(digits) => match digits.parse::<i64>() {
            Ok(i) => Value::Int(i),
            Err(_) => Value::Long(digits.clone()),
        },
        ParamValue::Float(x) => Value::Float(*x),
        ParamValue::Str(s) => Value::Str(s.clone()),
        ParamValue::List(items) => Value::List(items.iter().map(param_to_value).collect()),
        ParamValue::Tuple(items) => Value::Tuple(items.iter().map(param_to_value).collect()),
        ParamValue::Dict(map) => Value::Dict(
            map.iter()
                .map(|(k, v)| (Value::Str(k.clone()), param_to_value(v)))
                .collect(),
        ),
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

fn dict_key(field: &'static str, path: &str, key: &Value) -> Result<String, FormError> {
    key.as_str().map(str::to_string).ok_or_else(|| {
        FormError::shape(
            field,
            path,
            format!(
                "dictionary keys must be strings, found a {} key",
                key.type_name()
            ),
        )
    })
}

fn expect_dict<'v>(
    field: &'static str,
    path: &str,
    value: &'v Value,
) -> Result<&'v [(Value, Value)], FormError> {
    value.as_dict().ok_or_else(|| {
        FormError::shape(
            field,
            path,
            format!("expected a dict, got {}", value.type_name()),
        )
    })
}

fn expect_str<'v>(field: &'static str, path: &str, value: &'v Value) -> Result<&'v str, FormError> {
    value.as_str().ok_or_else(|| {
        FormError::shape(
            field,
            path,
            format!("expected a str, got {}", value.type_name()),
        )
    })
}

/// Request parameters: a dictionary with string keys, values of any type.
fn params(field: &'static str, value: &Value) -> Result<Params, FormError> {
    let mut out = Params::new();
    for (k, v) in expect_dict(field, "", value)? {
        let key = dict_key(field, "", k)?;
        let pv = param_value(field, &key, v)?;
        out.insert(key, pv);
    }
    Ok(out)
}

/// The SLA (`filter_kw`): string keys; values as `str()` of what was sent; a None value
/// is no condition.
fn sla(field: &'static str, value: &Value) -> Result<BTreeMap<String, String>, FormError> {
    let mut out = BTreeMap::new();
    for (k, v) in expect_dict(field, "", value)? {
        let key = dict_key(field, "", k)?;
        match param_value(field, &key, v)? {
            ParamValue::None => {}
            pv => {
                out.insert(key, pv.py_str());
            }
        }
    }
    Ok(out)
}

/// A connection dictionary as the master stores it: instance XML of `str()` of every
/// value, read back (an empty string reads back as None).
fn string_dict(field: &'static str, value: &Value) -> Result<StringParams, FormError> {
    let mut out = StringParams::new();
    for (k, v) in expect_dict(field, "", value)? {
        let key = dict_key(field, "", k)?;
        let s = param_value(field, &key, v)?.py_str();
        out.insert(key, if s.is_empty() { None } else { Some(s) });
    }
    Ok(out)
}

fn get<'v>(entries: &'v [(Value, Value)], key: &str) -> Option<&'v Value> {
    entries
        .iter()
        .find(|(k, _)| k.as_str() == Some(key))
        .map(|(_, v)| v)
}

fn required_str(
    field: &'static str,
    entries: &[(Value, Value)],
    path: &str,
    key: &str,
) -> Result<String, FormError> {
    let at = join(path, key);
    match get(entries, key) {
        Some(v) => expect_str(field, &at, v).map(str::to_string),
        None => Err(FormError::shape(field, at, "missing")),
    }
}

fn optional_str(
    field: &'static str,
    entries: &[(Value, Value)],
    path: &str,
    key: &str,
) -> Result<Option<String>, FormError> {
    match get(entries, key) {
        None | Some(Value::None) => Ok(None),
        Some(v) => expect_str(field, &join(path, key), v).map(|s| Some(s.to_string())),
    }
}

/// The computer dictionary `slapos node format` sends to
/// `loadComputerConfigurationFromXML`: `reference`, `address`, `netmask`, and per
/// partition `reference`, `address_list[*].addr/.netmask` and `tap.name` (a `tap` of
/// None, or none at all, is a partition without tap). Everything else is ignored.
pub fn computer_spec(value: &Value) -> Result<(String, ComputerSpec), FormError> {
    const F: &str = "xml";
    let root = expect_dict(F, "", value)?;
    let reference = required_str(F, root, "", "reference")?;
    let address = optional_str(F, root, "", "address")?;
    let netmask = optional_str(F, root, "", "netmask")?;
    let list = get(root, "partition_list")
        .ok_or_else(|| FormError::shape(F, "partition_list", "missing"))?;
    let list = list.as_list().ok_or_else(|| {
        FormError::shape(
            F,
            "partition_list",
            format!("expected a list, got {}", list.type_name()),
        )
    })?;
    let mut partitions = Vec::with_capacity(list.len());
    for (i, p) in list.iter().enumerate() {
        let path = format!("partition_list[{i}]");
        let entries = expect_dict(F, &path, p)?;
        let id = required_str(F, entries, &path, "reference")?;
        let tap = match get(entries, "tap") {
            None | Some(Value::None) => None,
            Some(t) => {
                let tap_path = join(&path, "tap");
                let tap = expect_dict(F, &tap_path, t)?;
                optional_str(F, tap, &tap_path, "name")?
            }
        };
        let addr_path = join(&path, "address_list");
        let addresses = match get(entries, "address_list") {
            None => return Err(FormError::shape(F, addr_path, "missing")),
            Some(v) => v.as_list().ok_or_else(|| {
                FormError::shape(
                    F,
                    addr_path.clone(),
                    format!("expected a list, got {}", v.type_name()),
                )
            })?,
        };
        let addresses = addresses
            .iter()
            .enumerate()
            .map(|(j, a)| {
                let a_path = format!("{addr_path}[{j}]");
                let entries = expect_dict(F, &a_path, a)?;
                Ok(AddressSpec {
                    addr: required_str(F, entries, &a_path, "addr")?,
                    netmask: required_str(F, entries, &a_path, "netmask")?,
                    gateway: None,
                    network: None,
                })
            })
            .collect::<Result<Vec<_>, FormError>>()?;
        partitions.push(PartitionSpec { id, tap, addresses });
    }
    Ok((
        reference,
        ComputerSpec {
            address,
            netmask,
            partitions,
        },
    ))
}
