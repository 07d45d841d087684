//! Request-body validation for the JSON-RPC v0 methods, by hand: for each method the
//! fields of its request schema in `json_rpc.json` (slapos.core), which are required, and
//! their types. Messages follow python-jsonschema's wording, as slapproxy answers them.

use serde_json::{Map, Value};

/// What a field's value must be.
#[derive(Debug, Clone, Copy)]
pub enum Kind {
    /// A string.
    Str,
    /// A string of at most this many characters.
    StrMax(usize),
    /// A string among these.
    Enum(&'static [&'static str]),
    /// A boolean.
    Bool,
    /// Any JSON object.
    Object,
    /// An object whose values are strings, except the listed keys which may be numbers
    /// (`sla_parameters`: `retention_delay` is a number).
    StringMap(&'static [&'static str]),
}

/// One property of a request schema.
#[derive(Debug, Clone, Copy)]
pub struct Field {
    pub name: &'static str,
    pub kind: Kind,
    pub required: bool,
}

pub(crate) const fn req(name: &'static str, kind: Kind) -> Field {
    Field {
        name,
        kind,
        required: true,
    }
}

pub(crate) const fn opt(name: &'static str, kind: Kind) -> Field {
    Field {
        name,
        kind,
        required: false,
    }
}

pub const INSTANCE_STATES: &[&str] = &["started", "stopped", "destroyed"];
pub const REPORTED_INSTANCE_STATES: &[&str] = &["started", "destroyed", "stopped"];
pub const SOFTWARE_STATES: &[&str] = &["available", "destroyed"];
pub const REPORTED_SOFTWARE_STATES: &[&str] = &["available", "destroyed", "building"];

pub const COMPUTER_GUID: &[Field] = &[req("computer_guid", Kind::Str)];
/// `allDocs instance_tree_list`: an empty object.
pub const NO_FIELDS: &[Field] = &[];
/// `get instance_tree`.
pub const INSTANCE_TREE: &[Field] = &[req("title", Kind::StrMax(200))];
pub const INSTANCE_GUID: &[Field] = &[req("instance_guid", Kind::Str)];
pub const COMPUTE_PARTITION: &[Field] = &[
    req("computer_guid", Kind::Str),
    req("compute_partition_id", Kind::Str),
];
/// `slapos.post.v0.software_instance`, in the order of the schema's `required`.
pub const SOFTWARE_INSTANCE: &[Field] = &[
    req("title", Kind::StrMax(200)),
    req("software_release_uri", Kind::Str),
    req("software_type", Kind::Str),
    opt("parameters", Kind::Object),
    opt("state", Kind::Enum(INSTANCE_STATES)),
    opt("sla_parameters", Kind::StringMap(&["retention_delay"])),
    opt("shared", Kind::Bool),
];
pub const SOFTWARE_INSTALLATION: &[Field] = &[
    req("software_release_uri", Kind::Str),
    req("computer_guid", Kind::Str),
    opt("state", Kind::Enum(SOFTWARE_STATES)),
];
pub const CONNECTION_PARAMETER: &[Field] = &[
    req("instance_guid", Kind::Str),
    req("connection_parameter_dict", Kind::Object),
];
pub const INSTANCE_REPORTED_STATE: &[Field] = &[
    req("instance_guid", Kind::Str),
    req("reported_state", Kind::Enum(REPORTED_INSTANCE_STATES)),
];
pub const INSTANCE_MESSAGE: &[Field] =
    &[req("instance_guid", Kind::Str), req("message", Kind::Str)];
pub const INSTANCE_TITLE: &[Field] = &[
    req("instance_guid", Kind::Str),
    req("title", Kind::StrMax(200)),
];
pub const INSTALLATION_REPORTED_STATE: &[Field] = &[
    req("software_release_uri", Kind::Str),
    req("computer_guid", Kind::Str),
    req("reported_state", Kind::Enum(REPORTED_SOFTWARE_STATES)),
];
pub const INSTALLATION_ERROR: &[Field] = &[
    req("software_release_uri", Kind::Str),
    req("computer_guid", Kind::Str),
    req("message", Kind::Str),
];
pub const COMPUTER_MESSAGE: &[Field] =
    &[req("computer_guid", Kind::Str), req("message", Kind::Str)];

/// Python's `repr()` of a JSON value, as jsonschema puts it in its messages.
pub fn py_repr(v: &Value) -> String {
    match v {
        Value::Null => "None".into(),
        Value::Bool(true) => "True".into(),
        Value::Bool(false) => "False".into(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => py_str(s),
        Value::Array(items) => format!(
            "[{}]",
            items.iter().map(py_repr).collect::<Vec<_>>().join(", ")
        ),
        Value::Object(map) => format!(
            "{{{}}}",
            map.iter()
                .map(|(k, v)| format!("{}: {}", py_str(k), py_repr(v)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

fn py_str(s: &str) -> String {
    if s.contains('\'') && !s.contains('"') {
        format!("\"{s}\"")
    } else {
        format!("'{}'", s.replace('\\', "\\\\").replace('\'', "\\'"))
    }
}

fn not_of_type(v: &Value, ty: &str) -> String {
    let shown = py_repr(v);
    // Keep messages bounded whatever the client sent.
    let shown = if shown.len() > 200 {
        let mut end = 200;
        while !shown.is_char_boundary(end) {
            end -= 1;
        }
        format!("{}...", &shown[..end])
    } else {
        shown
    };
    format!("{shown} is not of type '{ty}'")
}

fn check_kind(name: &str, kind: Kind, v: &Value) -> Result<(), String> {
    match kind {
        Kind::Str => v
            .as_str()
            .map(|_| ())
            .ok_or_else(|| not_of_type(v, "string")),
        Kind::StrMax(max) => {
            let s = v.as_str().ok_or_else(|| not_of_type(v, "string"))?;
            if s.chars().count() > max {
                return Err(format!("{} is too long", py_str(s)));
            }
            Ok(())
        }
        Kind::Enum(allowed) => {
            let ok = v.as_str().is_some_and(|s| allowed.contains(&s));
            if ok {
                Ok(())
            } else {
                let list: Vec<String> = allowed.iter().map(|a| py_str(a)).collect();
                Err(format!(
                    "{} is not one of [{}]",
                    py_repr(v),
                    list.join(", ")
                ))
            }
        }
        Kind::Bool => v
            .as_bool()
            .map(|_| ())
            .ok_or_else(|| not_of_type(v, "boolean")),
        Kind::Object => v
            .as_object()
            .map(|_| ())
            .ok_or_else(|| not_of_type(v, "object")),
        Kind::StringMap(numbers) => {
            let map = v.as_object().ok_or_else(|| not_of_type(v, "object"))?;
            for (k, item) in map {
                if numbers.contains(&k.as_str()) {
                    if !item.is_number() {
                        return Err(not_of_type(item, "number"));
                    }
                } else if !item.is_string() {
                    return Err(format!("{name}: {}", not_of_type(item, "string")));
                }
            }
            Ok(())
        }
    }
}

/// Checks a body against a request schema: an object, the required fields present (in
/// the schema's order), no other field (`additionalProperties: false`), each field of its
/// type. Returns the object.
pub fn validate<'a>(body: &'a Value, fields: &[Field]) -> Result<&'a Map<String, Value>, String> {
    let map = body
        .as_object()
        .ok_or_else(|| not_of_type(body, "object"))?;
    for f in fields.iter().filter(|f| f.required) {
        if !map.contains_key(f.name) {
            return Err(format!("'{}' is a required property", f.name));
        }
    }
    let extra: Vec<String> = map
        .keys()
        .filter(|k| !fields.iter().any(|f| f.name == k.as_str()))
        .map(|k| py_str(k))
        .collect();
    if !extra.is_empty() {
        let verb = if extra.len() == 1 { "was" } else { "were" };
        return Err(format!(
            "Additional properties are not allowed ({} {verb} unexpected)",
            extra.join(", ")
        ));
    }
    for f in fields {
        if let Some(v) = map.get(f.name) {
            check_kind(f.name, f.kind, v)?;
        }
    }
    Ok(map)
}
