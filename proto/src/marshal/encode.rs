//! The writer: one pass over the value, straight into one `String`.

use std::fmt::Write as _;

use super::keys::{self, Order};
use super::{EncodeError, Object, Value, SLAP_MODULE};
use crate::pyrepr::write_float_repr;

/// Marshals `value` exactly as Python's `xml_marshaller.dumps` (as slapos calls it) does.
///
/// Fails only on what Python refuses too: a string holding a character XML 1.0 cannot carry
/// (C0 controls other than tab, LF and CR; U+FFFE; U+FFFF), or a [`Value::Long`] that is
/// not an integer.
pub fn encode(value: &Value) -> Result<String, EncodeError> {
    let mut out = String::with_capacity(size_hint(value));
    encode_into(value, &mut out)?;
    Ok(out)
}

/// Appends the marshalled form of `value` to `out`. On error `out` is left as it was.
pub fn encode_into(value: &Value, out: &mut String) -> Result<(), EncodeError> {
    let start = out.len();
    let mut writer = Writer { out, next_id: 1 };
    writer.out.push_str("<marshal>");
    let result = writer.value(value);
    match result {
        Ok(()) => {
            writer.out.push_str("</marshal>");
            Ok(())
        }
        Err(e) => {
            writer.out.truncate(start);
            Err(e)
        }
    }
}

/// A cheap estimate of the encoded size, so the output is allocated once.
fn size_hint(value: &Value) -> usize {
    fn walk(v: &Value) -> usize {
        match v {
            Value::Str(s) => 17 + s.len() + s.len() / 8,
            Value::Long(s) => 13 + s.len(),
            Value::Tuple(items) | Value::List(items) => 30 + items.iter().map(walk).sum::<usize>(),
            Value::Dict(entries) => {
                30 + entries
                    .iter()
                    .map(|(k, v)| walk(k) + walk(v))
                    .sum::<usize>()
            }
            Value::Object(o) => {
                100 + o.args.iter().map(walk).sum::<usize>()
                    + o.attrs
                        .iter()
                        .map(|(k, v)| 17 + k.len() + walk(v))
                        .sum::<usize>()
            }
            _ => 24,
        }
    }
    20 + walk(value)
}

struct Writer<'o> {
    out: &'o mut String,
    next_id: u64,
}

impl Writer<'_> {
    fn open_with_id(&mut self, tag: &str) {
        self.next_id += 1;
        self.out.push('<');
        self.out.push_str(tag);
        self.out.push_str(" id=\"i");
        let _ = write!(self.out, "{}", self.next_id);
        self.out.push('"');
    }

    fn value(&mut self, value: &Value) -> Result<(), EncodeError> {
        match value {
            Value::None => self.out.push_str("<none/>"),
            Value::Bool(b) => self.out.push_str(if *b {
                "<bool>1</bool>"
            } else {
                "<bool>0</bool>"
            }),
            Value::Int(i) => {
                let _ = write!(self.out, "<int>{i}</int>");
            }
            Value::Long(digits) => self.long(digits)?,
            Value::Float(f) => {
                self.out.push_str("<float>");
                write_float_repr(*f, self.out);
                self.out.push_str("</float>");
            }
            Value::Str(s) => self.string(s)?,
            Value::Tuple(items) => {
                if items.is_empty() {
                    self.out.push_str("<tuple/>");
                } else {
                    self.out.push_str("<tuple>");
                    for item in items {
                        self.value(item)?;
                    }
                    self.out.push_str("</tuple>");
                }
            }
            Value::List(items) => {
                self.open_with_id("list");
                if items.is_empty() {
                    self.out.push_str("/>");
                } else {
                    self.out.push('>');
                    for item in items {
                        self.value(item)?;
                    }
                    self.out.push_str("</list>");
                }
            }
            Value::Dict(entries) => self.dict(entries)?,
            Value::Object(object) => self.object(object)?,
        }
        Ok(())
    }

    fn dict(&mut self, entries: &[(Value, Value)]) -> Result<(), EncodeError> {
        self.open_with_id("dictionary");
        if entries.is_empty() {
            self.out.push_str("/>");
            return Ok(());
        }
        self.out.push('>');
        match keys::dict_order(entries) {
            Order::AsIs => {
                for (k, v) in entries {
                    self.value(k)?;
                    self.value(v)?;
                }
            }
            Order::Permuted(order) => {
                for (k, v) in order.into_iter().filter_map(|i| entries.get(i)) {
                    self.value(k)?;
                    self.value(v)?;
                }
            }
        }
        self.out.push_str("</dictionary>");
        Ok(())
    }

    fn object(&mut self, object: &Object) -> Result<(), EncodeError> {
        self.open_with_id("object");
        self.out.push_str(" module=\"");
        self.out.push_str(SLAP_MODULE);
        self.out.push_str("\" class=\"");
        self.out.push_str(object.class.name());
        self.out.push_str("\">");
        if object.args.is_empty() {
            self.out.push_str("<tuple/>");
        } else {
            self.out.push_str("<tuple>");
            for arg in &object.args {
                self.value(arg)?;
            }
            self.out.push_str("</tuple>");
        }
        self.open_with_id("dictionary");
        if object.attrs.is_empty() {
            self.out.push_str("/>");
        } else {
            self.out.push('>');
            match keys::str_key_order(&object.attrs) {
                Order::AsIs => {
                    for (k, v) in &object.attrs {
                        self.string(k)?;
                        self.value(v)?;
                    }
                }
                Order::Permuted(order) => {
                    for (k, v) in order.into_iter().filter_map(|i| object.attrs.get(i)) {
                        self.string(k)?;
                        self.value(v)?;
                    }
                }
            }
            self.out.push_str("</dictionary>");
        }
        self.out.push_str("</object>");
        Ok(())
    }

    /// `<int>` below 1e24 in magnitude (Python compares with the float 1e24, whose exact
    /// value is 999999999999999983222784), `<long>` from there.
    fn long(&mut self, digits: &str) -> Result<(), EncodeError> {
        const FLOAT_1E24: &str = "999999999999999983222784";
        let magnitude = digits.strip_prefix('-').unwrap_or(digits);
        let canonical = !magnitude.is_empty()
            && magnitude.bytes().all(|b| b.is_ascii_digit())
            && (magnitude == "0" || !magnitude.starts_with('0'))
            && digits != "-0";
        if !canonical {
            return Err(EncodeError::InvalidLong(digits.to_owned()));
        }
        let small = magnitude.len() < FLOAT_1E24.len()
            || (magnitude.len() == FLOAT_1E24.len() && magnitude < FLOAT_1E24);
        let tag = if small { "int" } else { "long" };
        let _ = write!(self.out, "<{tag}>{digits}</{tag}>");
        Ok(())
    }

    /// `<string>` with the text escaped twice (`saxutils.escape`, then lxml), ASCII only.
    fn string(&mut self, s: &str) -> Result<(), EncodeError> {
        self.out.push_str("<string>");
        let bytes = s.as_bytes();
        let mut run_start = 0;
        let mut i = 0;
        while let Some(&b) = bytes.get(i) {
            let plain =
                matches!(b, b' '..=b'~' | b'\t' | b'\n') && !matches!(b, b'&' | b'<' | b'>');
            if plain {
                i += 1;
                continue;
            }
            self.out.push_str(s.get(run_start..i).unwrap_or(""));
            match b {
                b'&' => self.out.push_str("&amp;amp;"),
                b'<' => self.out.push_str("&amp;lt;"),
                b'>' => self.out.push_str("&amp;gt;"),
                b'\r' => self.out.push_str("&#13;"),
                0x7f => self.out.push('\u{7f}'),
                0..=0x1f => return Err(EncodeError::ForbiddenChar { code: u32::from(b) }),
                _ => {
                    let c = s
                        .get(i..)
                        .and_then(|rest| rest.chars().next())
                        .unwrap_or('\u{fffd}');
                    let code = u32::from(c);
                    if code == 0xfffe || code == 0xffff {
                        return Err(EncodeError::ForbiddenChar { code });
                    }
                    let _ = write!(self.out, "&#{code};");
                    i += c.len_utf8();
                    run_start = i;
                    continue;
                }
            }
            i += 1;
            run_start = i;
        }
        self.out.push_str(s.get(run_start..).unwrap_or(""));
        self.out.push_str("</string>");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc(v: &Value) -> String {
        encode(v).unwrap_or_else(|e| format!("error: {e}"))
    }

    #[test]
    fn writes_the_small_examples_of_the_protocol() {
        assert_eq!(enc(&Value::None), "<marshal><none/></marshal>");
        assert_eq!(
            enc(&"started".into()),
            "<marshal><string>started</string></marshal>"
        );
        assert_eq!(enc(&Value::Bool(true)), "<marshal><bool>1</bool></marshal>");
        assert_eq!(
            enc(&Value::Dict(vec![])),
            "<marshal><dictionary id=\"i2\"/></marshal>"
        );
        assert_eq!(enc(&"".into()), "<marshal><string></string></marshal>");
        assert_eq!(enc(&Value::Tuple(vec![])), "<marshal><tuple/></marshal>");
    }

    #[test]
    fn escapes_twice_and_writes_ascii() {
        assert_eq!(
            enc(&"a<b & \"c\" > 'd'".into()),
            "<marshal><string>a&amp;lt;b &amp;amp; \"c\" &amp;gt; 'd'</string></marshal>"
        );
        assert_eq!(
            enc(&"h\u{e9}llo\r\n\t\u{1f600}".into()),
            "<marshal><string>h&#233;llo&#13;\n\t&#128512;</string></marshal>"
        );
        assert_eq!(
            encode(&"a\u{0}b".into()),
            Err(EncodeError::ForbiddenChar { code: 0 })
        );
        assert_eq!(
            encode(&"\u{ffff}".into()),
            Err(EncodeError::ForbiddenChar { code: 0xffff })
        );
    }

    #[test]
    fn numbers_follow_python() {
        assert_eq!(
            enc(&Value::Float(1e300)),
            "<marshal><float>1e+300</float></marshal>"
        );
        assert_eq!(enc(&Value::Int(-3)), "<marshal><int>-3</int></marshal>");
        assert_eq!(
            enc(&Value::Long("10000000000000000000000000".into())),
            "<marshal><long>10000000000000000000000000</long></marshal>"
        );
        assert_eq!(
            enc(&Value::Long("-999999999999999983222783".into())),
            "<marshal><int>-999999999999999983222783</int></marshal>"
        );
        assert_eq!(
            enc(&Value::Long("999999999999999983222784".into())),
            "<marshal><long>999999999999999983222784</long></marshal>"
        );
        assert!(encode(&Value::Long("12a".into())).is_err());
        assert!(encode(&Value::Long("007".into())).is_err());
    }

    #[test]
    fn ids_are_pre_order_and_keys_sorted() {
        let v = Value::Dict(vec![
            ("b".into(), Value::List(vec![Value::Dict(vec![])])),
            ("a".into(), Value::Tuple(vec![Value::List(vec![])])),
        ]);
        assert_eq!(
            enc(&v),
            "<marshal><dictionary id=\"i2\"><string>a</string><tuple><list id=\"i3\"/></tuple>\
             <string>b</string><list id=\"i4\"><dictionary id=\"i5\"/></list></dictionary></marshal>"
        );
    }

    #[test]
    fn failed_encode_leaves_the_buffer_alone() {
        let mut out = String::from("prefix");
        let v = Value::List(vec!["ok".into(), "\u{1}".into()]);
        assert!(encode_into(&v, &mut out).is_err());
        assert_eq!(out, "prefix");
    }
}
