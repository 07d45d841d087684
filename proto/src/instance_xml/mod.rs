//! Instance XML: the `<instance><parameter id="..">` documents that hold instance
//! parameters (`xml`), connection dictionaries (`connection_xml`) and SLA (`sla_xml`), as
//! slapos.core's `slapos.slap.util.dict2xml` / `xml2dict` write and read them; and the
//! JSON-in-XML convention (one parameter `_` holding a JSON document).
//!
//! ```text
//! <?xml version='1.0' encoding='utf-8'?>
//! <instance>
//!   <parameter id="count">4</parameter>
//!   <parameter id="greeting">héllo wörld</parameter>
//! </instance>
//! ```

mod json;
pub(crate) mod tree;

use std::collections::BTreeMap;

use crate::{DecodeError, Limits};

pub use json::json_dumps;

/// A parameter dictionary. Keys are sorted (as the stored documents are); a value is
/// `None` where `xml2dict` gives Python `None`: an empty `<parameter>` element.
pub type InstanceDict = BTreeMap<String, Option<String>>;

/// The one key of a JSON-in-XML dictionary.
pub const JSON_KEY: &str = "_";

/// Reads an instance XML document with the semantics of `xml2dict`:
///
/// * every `parameter` element gives one entry, keyed by its `id` attribute; like
///   `tree.iter()` in `xml2dict` this takes `parameter` elements at any depth below the
///   root, in document order, and ignores other elements;
/// * the value is the element's text as lxml gives it (`.text`: the text before the first
///   child node, entities resolved, CDATA included, line ends normalized); an empty
///   element gives `None`, so an empty-string parameter comes back as `None`;
/// * a repeated id is concatenated with a single space; when the earlier value is `None`
///   the later one replaces it; when the later element is empty `xml2dict` raises a
///   `TypeError` (`str + None`), so this is an error here too.
///
/// Stricter than `xml2dict`, on purpose: the root must be `<instance>` (`xml2dict` does
/// not look at it), a `parameter` without `id` is an error (`xml2dict` would store the key
/// `None`), and DOCTYPEs and namespaces are refused (see the tree reader). Input must be
/// UTF-8 (`xml2dict` encodes its `str` argument to UTF-8 first).
pub fn decode(input: &[u8], limits: &Limits) -> Result<InstanceDict, DecodeError> {
    let root = tree::parse(input, limits)?;
    if root.name != "instance" {
        return Err(DecodeError::Unexpected {
            offset: root.offset,
            found: format!("root element <{}>", root.name),
            expected: "root element <instance>".into(),
        });
    }
    let mut dict = InstanceDict::new();
    for element in root.descendants() {
        if element.name != "parameter" {
            continue;
        }
        let Some(id) = element.attribute("id") else {
            return Err(DecodeError::Invalid {
                what: "parameter",
                offset: element.offset,
                message: "<parameter> has no id attribute".into(),
            });
        };
        let text = element.leading_text();
        match (dict.get_mut(id), text) {
            (Some(Some(previous)), Some(text)) => {
                previous.push(' ');
                previous.push_str(text);
            }
            (Some(Some(_)), None) => {
                return Err(DecodeError::Invalid {
                    what: "parameter",
                    offset: element.offset,
                    message: format!(
                        "id {id:?} repeated by an empty element, which xml2dict cannot \
                         concatenate"
                    ),
                });
            }
            (Some(slot @ None), text) => *slot = text.map(str::to_owned),
            (None, text) => {
                dict.insert(id.to_owned(), text.map(str::to_owned));
            }
        }
    }
    Ok(dict)
}

/// Writes `dict` exactly as `dict2xml` does (lxml, `pretty_print=True`,
/// `xml_declaration=True`, `encoding='utf-8'`), checked against lxml 6.1:
///
/// * declaration `<?xml version='1.0' encoding='utf-8'?>`, then one `<parameter>` per key
///   in key order (a `BTreeMap` sorts by code point, as Python's `sorted` does), indented
///   by two spaces, a newline after every line;
/// * an empty dict is `<instance/>` (lxml self-closes an element without children);
/// * `None` is written as the text `None` (`str(None)`); an empty string as
///   `<parameter id="k"></parameter>` (lxml writes an explicit empty text node so);
/// * text escapes `&`, `<`, `>` and CR (`&#13;`); the attribute escapes `&`, `<`, `>`,
///   `"` and TAB, LF, CR as `&#9;`, `&#10;`, `&#13;` (libxml2's serializer); quotes and
///   apostrophes in text, and non-ASCII anywhere, are written as they are.
///
/// lxml refuses to store control characters (other than TAB, LF, CR), so `dict2xml`
/// raises `ValueError` for them; this function cannot fail and writes them as they are,
/// which gives a document that [`decode`] refuses. Callers that accept arbitrary strings
/// should check for them first.
pub fn encode(dict: &InstanceDict) -> String {
    const DECLARATION: &str = "<?xml version='1.0' encoding='utf-8'?>\n";
    if dict.is_empty() {
        return format!("{DECLARATION}<instance/>\n");
    }
    let size: usize = dict
        .iter()
        .map(|(k, v)| k.len() + v.as_deref().map_or(4, str::len) + 40)
        .sum();
    let mut out = String::with_capacity(DECLARATION.len() + 24 + size);
    out.push_str(DECLARATION);
    out.push_str("<instance>\n");
    for (key, value) in dict {
        out.push_str("  <parameter id=\"");
        escape_attribute(&mut out, key);
        out.push_str("\">");
        escape_text(&mut out, value.as_deref().unwrap_or("None"));
        out.push_str("</parameter>\n");
    }
    out.push_str("</instance>\n");
    out
}

fn escape_text(out: &mut String, text: &str) {
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '\r' => out.push_str("&#13;"),
            c => out.push(c),
        }
    }
}

fn escape_attribute(out: &mut String, text: &str) {
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\t' => out.push_str("&#9;"),
            '\n' => out.push_str("&#10;"),
            '\r' => out.push_str("&#13;"),
            c => out.push(c),
        }
    }
}

/// The JSON document of a JSON-in-XML dictionary: `Some` when `dict` consists of exactly
/// the one key [`JSON_KEY`] (what `slapos request` decodes), with the parsed value or why
/// it does not parse; `None` for an ordinary dictionary.
///
/// Differences from Python's `json.loads`: serde_json refuses `NaN`/`Infinity`, and
/// without its `arbitrary_precision` feature reads integers beyond 64 bits as floats. An
/// empty `_` (`None`) is an error (Python would raise `TypeError`).
pub fn json_in_xml_decode(dict: &InstanceDict) -> Option<Result<serde_json::Value, String>> {
    if dict.len() != 1 {
        return None;
    }
    let value = dict.get(JSON_KEY)?;
    Some(match value {
        Some(text) => serde_json::from_str(text).map_err(|e| format!("invalid JSON in `_`: {e}")),
        None => Err("the `_` parameter is empty".to_owned()),
    })
}

/// The JSON-in-XML dictionary of `value`: `{"_": json.dumps(value)}` with Python's default
/// `json.dumps` formatting (see [`json_dumps`]).
pub fn json_in_xml_encode(value: &serde_json::Value) -> InstanceDict {
    InstanceDict::from([(JSON_KEY.to_owned(), Some(json_dumps(value)))])
}
