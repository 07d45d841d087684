//! Python's `repr()` (and `str()`) of the values the wire formats carry.
//!
//! `xml_marshaller` writes a float as `str(value)`, which in Python 3 is the same text as
//! `repr(value)`: the shortest decimal string that reads back as the same double, laid out
//! the way CPython's `float_repr_style = 'short'` does (`2.5`, `1.0`, `-0.1`, `1e-05`,
//! `1e+16`, `inf`, `nan`). [`float_repr`] reproduces that text exactly.
//!
//! [`repr`] renders a whole [`Value`] the way Python would; the marshaller needs it to sort
//! dictionary keys of mixed types (it compares their reprs when Python's `<` refuses).

use std::fmt::Write as _;

use crate::marshal::{Object, Value};

/// Python's `repr(x)` of a float.
///
/// Shortest round-trip digits (Rust's formatter and CPython's `dtoa` mode 0 both produce the
/// shortest, closest digit string), positional notation when the decimal exponent is in
/// `-4 <= exp < 16`, scientific notation with a signed, at least two-digit exponent otherwise.
///
/// ```
/// use slapos_proto::pyrepr::float_repr;
/// assert_eq!(float_repr(2.5), "2.5");
/// assert_eq!(float_repr(1.0), "1.0");
/// assert_eq!(float_repr(1e16), "1e+16");
/// assert_eq!(float_repr(1e-5), "1e-05");
/// assert_eq!(float_repr(f64::NAN), "nan");
/// ```
pub fn float_repr(x: f64) -> String {
    let mut out = String::with_capacity(24);
    write_float_repr(x, &mut out);
    out
}

/// Python 3's `str(x)` of a float, which is the same text as [`float_repr`].
pub fn float_str(x: f64) -> String {
    float_repr(x)
}

/// Appends [`float_repr`]`(x)` to `out` without an intermediate allocation for the result.
pub fn write_float_repr(x: f64, out: &mut String) {
    if x.is_nan() {
        out.push_str("nan");
        return;
    }
    if x.is_sign_negative() {
        out.push('-');
    }
    if x.is_infinite() {
        out.push_str("inf");
        return;
    }
    if x == 0.0 {
        out.push_str("0.0");
        return;
    }
    // `{:e}` gives the shortest round-trip digits as `d[.ddd]e<exp>`.
    let mut sci = String::with_capacity(32);
    // Writing into a String cannot fail.
    let _ = write!(sci, "{:e}", x.abs());
    let (mantissa, exp) = sci.split_once('e').unwrap_or((sci.as_str(), "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    let n = digits.len() as i32;
    // Position of the decimal point relative to the start of `digits`.
    let decpt = exp + 1;
    if (-4 < decpt) && (decpt <= 16) {
        if decpt <= 0 {
            out.push_str("0.");
            for _ in 0..(-decpt) {
                out.push('0');
            }
            out.push_str(&digits);
        } else if decpt >= n {
            out.push_str(&digits);
            for _ in 0..(decpt - n) {
                out.push('0');
            }
            out.push_str(".0");
        } else {
            let (int_part, frac_part) = digits.split_at(decpt as usize);
            out.push_str(int_part);
            out.push('.');
            out.push_str(frac_part);
        }
    } else {
        let (first, rest) = digits.split_at(1.min(digits.len()));
        out.push_str(first);
        if !rest.is_empty() {
            out.push('.');
            out.push_str(rest);
        }
        let e = decpt - 1;
        out.push('e');
        out.push(if e < 0 { '-' } else { '+' });
        let _ = write!(out, "{:02}", e.unsigned_abs());
    }
}

/// Python's `repr()` of a string: single quotes unless the text holds a `'` and no `"`,
/// backslash escapes for the quote, `\\`, `\t`, `\n`, `\r` and non-printable characters.
///
/// Printability of non-ASCII characters is approximated (C1 controls, no-break and other
/// separator spaces, soft hyphen, line/paragraph separators, BOM, private use and
/// noncharacters are escaped; everything else is printed), which is exact for the text SLAP
/// carries.
pub fn str_repr(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    write_str_repr(s, &mut out);
    out
}

fn write_str_repr(s: &str, out: &mut String) {
    let quote = if s.contains('\'') && !s.contains('"') {
        '"'
    } else {
        '\''
    };
    out.push(quote);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            c if is_printable(c) => out.push(c),
            c => {
                let code = u32::from(c);
                let _ = if code <= 0xff {
                    write!(out, "\\x{code:02x}")
                } else if code <= 0xffff {
                    write!(out, "\\u{code:04x}")
                } else {
                    write!(out, "\\U{code:08x}")
                };
            }
        }
    }
    out.push(quote);
}

fn is_printable(c: char) -> bool {
    let code = u32::from(c);
    match code {
        0x20..=0x7e => true,
        0..=0x1f | 0x7f..=0xa0 | 0xad => false,
        0x1680 | 0x2000..=0x200f | 0x2028..=0x202f | 0x205f..=0x206f | 0x3000 => false,
        0xd800..=0xf8ff | 0xfeff | 0xfff9..=0xfffb | 0xfffe | 0xffff => false,
        0xe0000..=0xe0fff | 0xf0000..=0x10ffff => false,
        _ => true,
    }
}

/// Python's `repr()` of a marshalled value: `None`, `True`, `3`, `2.5`, `'text'`,
/// `(1,)`, `[1, 2]`, `{'k': 'v'}`. An object renders as `<slapos.slap.slap.Class object>`
/// (Python would add its memory address, which is not deterministic).
pub fn repr(value: &Value) -> String {
    let mut out = String::new();
    write_repr(value, &mut out);
    out
}

fn write_repr(value: &Value, out: &mut String) {
    match value {
        Value::None => out.push_str("None"),
        Value::Bool(true) => out.push_str("True"),
        Value::Bool(false) => out.push_str("False"),
        Value::Int(i) => {
            let _ = write!(out, "{i}");
        }
        Value::Long(digits) => out.push_str(digits),
        Value::Float(f) => write_float_repr(*f, out),
        Value::Str(s) => write_str_repr(s, out),
        Value::Tuple(items) => {
            out.push('(');
            write_items(items, out);
            if items.len() == 1 {
                out.push(',');
            }
            out.push(')');
        }
        Value::List(items) => {
            out.push('[');
            write_items(items, out);
            out.push(']');
        }
        Value::Dict(entries) => {
            out.push('{');
            for (i, (k, v)) in entries.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_repr(k, out);
                out.push_str(": ");
                write_repr(v, out);
            }
            out.push('}');
        }
        Value::Object(object) => write_object_repr(object, out),
    }
}

fn write_items(items: &[Value], out: &mut String) {
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        write_repr(item, out);
    }
}

fn write_object_repr(object: &Object, out: &mut String) {
    out.push_str("<slapos.slap.slap.");
    out.push_str(object.class.name());
    out.push_str(" object>");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floats_render_as_python_repr() {
        let cases: &[(f64, &str)] = &[
            (0.0, "0.0"),
            (-0.0, "-0.0"),
            (1.0, "1.0"),
            (2.5, "2.5"),
            (-0.1, "-0.1"),
            (0.1 + 0.2, "0.30000000000000004"),
            (1e-5, "1e-05"),
            (0.0001, "0.0001"),
            (1e16, "1e+16"),
            (1e15, "1000000000000000.0"),
            (1.5e16, "1.5e+16"),
            (123456789012345680.0, "1.2345678901234568e+17"),
            (1e300, "1e+300"),
            (1e-300, "1e-300"),
            (5e-324, "5e-324"),
            (f64::MAX, "1.7976931348623157e+308"),
            (f64::INFINITY, "inf"),
            (f64::NEG_INFINITY, "-inf"),
            (f64::NAN, "nan"),
            (1795626843.2386878, "1795626843.2386878"),
            (100.0, "100.0"),
            (0.5, "0.5"),
            (12.34, "12.34"),
        ];
        for (x, want) in cases {
            assert_eq!(float_repr(*x), *want, "repr of {x:?}");
            assert_eq!(float_str(*x), *want);
        }
    }

    #[test]
    fn strings_render_as_python_repr() {
        assert_eq!(str_repr("abc"), "'abc'");
        assert_eq!(str_repr("it's"), "\"it's\"");
        assert_eq!(str_repr("'\""), "'\\'\"'");
        assert_eq!(str_repr("a\tb\n\\"), "'a\\tb\\n\\\\'");
        assert_eq!(str_repr("\u{1}é\u{a0}"), "'\\x01é\\xa0'");
    }

    #[test]
    fn values_render_as_python_repr() {
        let v = Value::Tuple(vec![Value::Int(1)]);
        assert_eq!(repr(&v), "(1,)");
        let v = Value::List(vec![Value::None, Value::Bool(true), Value::Float(2.0)]);
        assert_eq!(repr(&v), "[None, True, 2.0]");
        let v = Value::Dict(vec![(Value::from("k"), Value::Tuple(vec![]))]);
        assert_eq!(repr(&v), "{'k': ()}");
    }
}
