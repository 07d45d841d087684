//! Instance parameters as requesters send them, and their stringified form.
//!
//! SLAP carries request parameters as a marshalled dictionary whose values keep their
//! Python types. The master stores regular instances' parameters as instance XML, where
//! every value becomes Python's `str()` of it and an empty string reads back as None; but
//! it hands shared instances' parameters to their host with their original types
//! (`slave_instance_list`). So the state keeps the typed values and derives the strings.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A parameter value with the types SLAP can carry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ParamValue {
    None,
    Bool(bool),
    Int(i64),
    /// An integer beyond i64, kept as its decimal digits.
    Long(String),
    /// Finite only: what JSON carries; a NaN or an infinity is refused when decoded, in
    /// either encoding, so that a value a replica accepts is one every reader can read.
    Float(#[serde(deserialize_with = "finite")] f64),
    Str(String),
    List(Vec<ParamValue>),
    Tuple(Vec<ParamValue>),
    /// Keys are strings in every SLAP use; kept ordered.
    Dict(BTreeMap<String, ParamValue>),
}

/// A float that is neither NaN nor infinite.
fn finite<'de, D: serde::Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    let x = f64::deserialize(d)?;
    if x.is_finite() {
        Ok(x)
    } else {
        Err(serde::de::Error::custom(
            "a parameter cannot be NaN or infinite",
        ))
    }
}

/// Typed parameters of an instance, by name.
pub type Params = BTreeMap<String, ParamValue>;
/// Parameters as instance XML gives them back: a string, or None for an empty value.
pub type StringParams = BTreeMap<String, Option<String>>;

impl ParamValue {
    /// Python's `str()` of the value (what `dict2xml` writes into instance XML).
    pub fn py_str(&self) -> String {
        match self {
            ParamValue::Str(s) => s.clone(),
            other => other.py_repr(),
        }
    }

    /// Python's `repr()` of the value, used inside containers.
    pub fn py_repr(&self) -> String {
        match self {
            ParamValue::None => "None".to_string(),
            ParamValue::Bool(true) => "True".to_string(),
            ParamValue::Bool(false) => "False".to_string(),
            ParamValue::Int(i) => i.to_string(),
            ParamValue::Long(digits) => digits.clone(),
            ParamValue::Float(f) => slapos_proto::pyrepr::float_repr(*f),
            ParamValue::Str(s) => py_str_repr(s),
            ParamValue::List(items) => format!("[{}]", join_repr(items)),
            ParamValue::Tuple(items) if items.len() == 1 => {
                format!("({},)", join_repr(items))
            }
            ParamValue::Tuple(items) => format!("({})", join_repr(items)),
            ParamValue::Dict(map) => {
                let inner: Vec<String> = map
                    .iter()
                    .map(|(k, v)| format!("{}: {}", py_str_repr(k), v.py_repr()))
                    .collect();
                format!("{{{}}}", inner.join(", "))
            }
        }
    }
}

fn join_repr(items: &[ParamValue]) -> String {
    items
        .iter()
        .map(ParamValue::py_repr)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Python 3's `repr()` of a str: single quotes unless the text holds a single quote and
/// no double quote; backslash escapes for the quote, `\\`, `\t`, `\n`, `\r` and other
/// non-printable characters.
fn py_str_repr(s: &str) -> String {
    let quote = if s.contains('\'') && !s.contains('"') {
        '"'
    } else {
        '\''
    };
    let mut out = String::with_capacity(s.len() + 2);
    out.push(quote);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                out.push_str(&format!("\\x{:02x}", c as u32));
            }
            c => out.push(c),
        }
    }
    out.push(quote);
    out
}

/// The parameters as a node or requester reads them back from instance XML: `str()` of
/// each value, and None where that string is empty.
pub fn stringify(params: &Params) -> StringParams {
    params
        .iter()
        .map(|(k, v)| {
            let s = v.py_str();
            (k.clone(), if s.is_empty() { None } else { Some(s) })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stringified_like_dict2xml_then_xml2dict() {
        let mut p = Params::new();
        p.insert("count".into(), ParamValue::Int(3));
        p.insert("flag".into(), ParamValue::Bool(true));
        p.insert("empty".into(), ParamValue::Str(String::new()));
        p.insert("none".into(), ParamValue::None);
        p.insert("ratio".into(), ParamValue::Float(2.5));
        p.insert(
            "list".into(),
            ParamValue::List(vec![ParamValue::Str("a'b".into()), ParamValue::Int(1)]),
        );
        p.insert(
            "pair".into(),
            ParamValue::Tuple(vec![ParamValue::Str("x".into())]),
        );
        let s = stringify(&p);
        assert_eq!(s["count"].as_deref(), Some("3"));
        assert_eq!(s["flag"].as_deref(), Some("True"));
        assert_eq!(s["empty"], None);
        assert_eq!(s["none"].as_deref(), Some("None"));
        assert_eq!(s["ratio"].as_deref(), Some("2.5"));
        assert_eq!(s["list"].as_deref(), Some("[\"a'b\", 1]"));
        assert_eq!(s["pair"].as_deref(), Some("('x',)"));
    }

    #[test]
    fn non_finite_floats_are_refused_in_both_encodings() {
        let ok = ParamValue::Float(2.5);
        let bin = crate::codec::encode(&ok).unwrap();
        assert_eq!(crate::codec::decode::<ParamValue>(&bin).unwrap(), ok);
        for x in [f64::NAN, f64::INFINITY] {
            let bin = crate::codec::encode(&ParamValue::Float(x)).unwrap();
            assert!(
                crate::codec::decode::<ParamValue>(&bin).is_err(),
                "{x} decoded"
            );
        }
        // JSON has no NaN; an overflowing number is no float either
        assert!(serde_json::from_str::<ParamValue>(r#"{"Float":1e999}"#).is_err());
    }
}
