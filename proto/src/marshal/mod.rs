//! The `xml_marshaller` wire format (the subset SLAP uses), byte-compatible with
//! `xml_marshaller` 1.0.3 as wrapped by `slapos.slap`.
//!
//! ```
//! use slapos_proto::marshal::{self, Value};
//! use slapos_proto::Limits;
//!
//! let value = Value::Dict(vec![("special".into(), "a<b & \"c\"".into())]);
//! let xml = marshal::encode(&value)?;
//! assert_eq!(
//!     xml,
//!     "<marshal><dictionary id=\"i2\"><string>special</string>\
//!      <string>a&amp;lt;b &amp;amp; \"c\"</string></dictionary></marshal>"
//! );
//! assert_eq!(marshal::decode(xml.as_bytes(), &Limits::SMALL)?, value);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! * [`decode`] is a bounded, namespace-aware reader: it checks [`Limits::max_bytes`] first,
//!   counts depth and elements, refuses DOCTYPE, resolves `<reference>` elements, and never
//!   panics.
//! * [`encode`] writes exactly what Python writes: root `<marshal>`, no declaration, ASCII
//!   only, ids counted in pre-order from `i2`, dictionary keys sorted as Python sorts them,
//!   text escaped twice.
//!
//! See `DESIGN.md` for the decisions behind both.

mod decode;
mod encode;
mod keys;
mod xml;

pub use decode::decode;
pub use encode::{encode, encode_into};

use crate::Limits;

/// The module every marshalled object must come from.
pub const SLAP_MODULE: &str = "slapos.slap.slap";

/// A Python value as `xml_marshaller` carries it.
///
/// `Dict` is an association list: the decoder gives the entries in document order with
/// duplicate keys merged as Python merges them, and the encoder sorts them, so two dicts
/// with the same entries in another order encode to the same bytes.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// `None`, `<none/>`.
    None,
    /// `<bool>1</bool>` / `<bool>0</bool>`.
    Bool(bool),
    /// An integer that fits in `i64`.
    Int(i64),
    /// An integer outside the `i64` range, as canonical decimal digits (optional `-`, no
    /// leading zeros). Written `<int>` below 1e24 in magnitude and `<long>` from there, as
    /// Python does; the decoder only produces it for values outside `i64`.
    Long(String),
    /// `<float>`, written as Python's `repr`.
    Float(f64),
    /// `<string>` (and `<unicode>` on input).
    Str(String),
    /// `<tuple>`: no id.
    Tuple(Vec<Value>),
    /// `<list id="iN">`.
    List(Vec<Value>),
    /// `<dictionary id="iN">`.
    Dict(Vec<(Value, Value)>),
    /// `<object>` of one of the four slap classes.
    Object(Box<Object>),
}

/// An instance of a `slapos.slap.slap` class: constructor arguments (Python's
/// `__getinitargs__`) and the instance attributes (`__dict__`, whose keys are strings since
/// the decoder sets them with `setattr`).
#[derive(Debug, Clone, PartialEq)]
pub struct Object {
    pub class: SlapClass,
    pub args: Vec<Value>,
    pub attrs: Vec<(String, Value)>,
}

/// The four classes of module `slapos.slap.slap` that SLAP marshals.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SlapClass {
    Computer,
    ComputerPartition,
    SoftwareRelease,
    SoftwareInstance,
}

impl SlapClass {
    /// All four classes.
    pub const ALL: [SlapClass; 4] = [
        SlapClass::Computer,
        SlapClass::ComputerPartition,
        SlapClass::SoftwareRelease,
        SlapClass::SoftwareInstance,
    ];

    /// The Python class name (the `class` attribute on the wire).
    pub fn name(self) -> &'static str {
        match self {
            SlapClass::Computer => "Computer",
            SlapClass::ComputerPartition => "ComputerPartition",
            SlapClass::SoftwareRelease => "SoftwareRelease",
            SlapClass::SoftwareInstance => "SoftwareInstance",
        }
    }

    /// The class with this Python name.
    pub fn from_name(name: &str) -> Option<SlapClass> {
        SlapClass::ALL.into_iter().find(|c| c.name() == name)
    }
}

impl std::fmt::Display for SlapClass {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Why a value cannot be marshalled. Python refuses the same values (lxml raises
/// `ValueError` on characters XML cannot carry).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    #[error("a string holds U+{code:04X}, which XML 1.0 cannot carry")]
    ForbiddenChar { code: u32 },
    #[error("`{0}` is not a canonical decimal integer")]
    InvalidLong(String),
}

impl Value {
    /// Python's type name, for messages: `str`, `int`, `NoneType`, `ComputerPartition`, ...
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::None => "NoneType",
            Value::Bool(_) => "bool",
            Value::Int(_) | Value::Long(_) => "int",
            Value::Float(_) => "float",
            Value::Str(_) => "str",
            Value::Tuple(_) => "tuple",
            Value::List(_) => "list",
            Value::Dict(_) => "dict",
            Value::Object(o) => o.class.name(),
        }
    }

    pub fn is_none(&self) -> bool {
        matches!(self, Value::None)
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_int(&self) -> Option<i64> {
        match self {
            Value::Int(i) => Some(*i),
            _ => None,
        }
    }

    pub fn as_bool(&self) -> Option<bool> {
        match self {
            Value::Bool(b) => Some(*b),
            _ => None,
        }
    }

    pub fn as_float(&self) -> Option<f64> {
        match self {
            Value::Float(f) => Some(*f),
            _ => None,
        }
    }

    /// The items of a list.
    pub fn as_list(&self) -> Option<&[Value]> {
        match self {
            Value::List(items) => Some(items),
            _ => None,
        }
    }

    /// The items of a tuple.
    pub fn as_tuple(&self) -> Option<&[Value]> {
        match self {
            Value::Tuple(items) => Some(items),
            _ => None,
        }
    }

    /// The entries of a dictionary.
    pub fn as_dict(&self) -> Option<&[(Value, Value)]> {
        match self {
            Value::Dict(entries) => Some(entries),
            _ => None,
        }
    }

    pub fn as_object(&self) -> Option<&Object> {
        match self {
            Value::Object(o) => Some(o),
            _ => None,
        }
    }

    /// The value under the string key `key` of a dictionary (`None` if this is not a
    /// dictionary or has no such key).
    pub fn dict_get(&self, key: &str) -> Option<&Value> {
        self.as_dict()?
            .iter()
            .find(|(k, _)| k.as_str() == Some(key))
            .map(|(_, v)| v)
    }

    /// A dictionary with string keys.
    pub fn str_dict<K, V, I>(entries: I) -> Value
    where
        K: Into<String>,
        V: Into<Value>,
        I: IntoIterator<Item = (K, V)>,
    {
        Value::Dict(
            entries
                .into_iter()
                .map(|(k, v)| (Value::Str(k.into()), v.into()))
                .collect(),
        )
    }

    /// An object of `class` with these constructor arguments and attributes.
    pub fn object(class: SlapClass, args: Vec<Value>, attrs: Vec<(String, Value)>) -> Value {
        Value::Object(Box::new(Object { class, args, attrs }))
    }

    /// Shorthand for [`decode`].
    pub fn decode(input: &[u8], limits: &Limits) -> Result<Value, crate::DecodeError> {
        decode(input, limits)
    }

    /// Shorthand for [`encode`].
    pub fn encode(&self) -> Result<String, EncodeError> {
        encode(self)
    }

    /// How big this value is, in the terms [`Limits`] bound (walked without recursion).
    /// Whatever [`decode`] accepts measures `values < max_elements`,
    /// `height < max_depth` and `text_bytes <= max(max_bytes, max_expanded_bytes)`, every
    /// copy a `<reference>` stood for counted.
    pub fn size(&self) -> ValueSize {
        let mut size = ValueSize::default();
        let mut stack: Vec<(&Value, usize)> = vec![(self, 1)];
        while let Some((value, level)) = stack.pop() {
            size.values += 1;
            size.height = size.height.max(level);
            match value {
                Value::Str(text) | Value::Long(text) => size.text_bytes += text.len(),
                Value::Tuple(items) | Value::List(items) => {
                    stack.extend(items.iter().map(|item| (item, level + 1)));
                }
                Value::Dict(entries) => {
                    for (key, item) in entries {
                        stack.push((key, level + 1));
                        stack.push((item, level + 1));
                    }
                }
                Value::Object(object) => {
                    stack.extend(object.args.iter().map(|arg| (arg, level + 1)));
                    for (name, item) in &object.attrs {
                        // The name was a string key on the wire.
                        size.values += 1;
                        size.text_bytes += name.len();
                        stack.push((item, level + 1));
                    }
                }
                Value::None | Value::Bool(_) | Value::Int(_) | Value::Float(_) => {}
            }
        }
        size
    }
}

/// The measure of a [`Value`] (see [`Value::size`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ValueSize {
    /// Values in the tree, this one included: every item, key, value, constructor argument,
    /// attribute name and attribute value.
    pub values: usize,
    /// Bytes of text: strings, the digits of long integers, attribute names.
    pub text_bytes: usize,
    /// Levels: 1 for a scalar or an empty container.
    pub height: usize,
}

impl Object {
    /// The attribute `name`, if set.
    pub fn attr(&self, name: &str) -> Option<&Value> {
        self.attrs.iter().find(|(k, _)| k == name).map(|(_, v)| v)
    }
}

impl From<&str> for Value {
    fn from(s: &str) -> Self {
        Value::Str(s.to_owned())
    }
}

impl From<String> for Value {
    fn from(s: String) -> Self {
        Value::Str(s)
    }
}

impl From<i64> for Value {
    fn from(i: i64) -> Self {
        Value::Int(i)
    }
}

impl From<bool> for Value {
    fn from(b: bool) -> Self {
        Value::Bool(b)
    }
}

impl From<f64> for Value {
    fn from(f: f64) -> Self {
        Value::Float(f)
    }
}

impl<T: Into<Value>> From<Option<T>> for Value {
    fn from(v: Option<T>) -> Self {
        v.map_or(Value::None, Into::into)
    }
}

impl From<Object> for Value {
    fn from(o: Object) -> Self {
        Value::Object(Box::new(o))
    }
}
