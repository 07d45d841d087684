//! Python's `json.dumps(value)` with its default arguments, byte for byte.

use serde_json::Value;

/// Serializes `value` as Python's `json.dumps` does by default: separators `", "` and
/// `": "`, `ensure_ascii=True` (every character outside U+0020..U+007E other than the
/// short escapes `\" \\ \b \f \n \r \t` is written `\uXXXX` in lower-case hex, characters
/// above U+FFFF as a surrogate pair), floats as Python's `repr` (`1.0`, `1e+16`,
/// `1.5e-07`), integers in full.
///
/// Object members are written in the order of the `serde_json::Map`: insertion order only
/// when serde_json's `preserve_order` feature is on; without it (the default, and this
/// workspace's setting when this was written) the map is sorted by key, so a document read
/// with serde_json comes back with its keys sorted, unlike Python which keeps them as
/// written.
pub fn json_dumps(value: &Value) -> String {
    let mut out = String::new();
    write_value(&mut out, value);
    out
}

fn write_value(out: &mut String, value: &Value) {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(true) => out.push_str("true"),
        Value::Bool(false) => out.push_str("false"),
        Value::Number(number) => {
            if number.is_f64() {
                // JSON numbers are finite, so Python's `NaN`/`Infinity` never arise and
                // `repr` is all there is to it.
                match number.as_f64() {
                    Some(float) => crate::pyrepr::write_float_repr(float, out),
                    None => out.push_str(&number.to_string()),
                }
            } else {
                out.push_str(&number.to_string());
            }
        }
        Value::String(text) => write_string(out, text),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_value(out, item);
            }
            out.push(']');
        }
        Value::Object(map) => {
            out.push('{');
            for (i, (key, item)) in map.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_string(out, key);
                out.push_str(": ");
                write_value(out, item);
            }
            out.push('}');
        }
    }
}

fn write_string(out: &mut String, text: &str) {
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            ' '..='~' => out.push(c),
            c => {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    out.push_str(&format!("\\u{unit:04x}"));
                }
            }
        }
    }
    out.push('"');
}
