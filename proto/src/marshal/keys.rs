//! Dictionary keys as Python sees them: hashing and equality (to merge duplicate keys on
//! decode, as `d[key] = value` does) and the ordering `xml_marshaller` sorts them by.
//!
//! `xml_marshaller` 1.0.3 sorts `dict.items()` with
//! `cmp_to_key(lambda a, b: cmp(a[0], b[0]) or, on TypeError, cmp(repr(a[0]), repr(b[0])))`.
//! For string keys (every dictionary SLAP uses) that is code point order, which is also the
//! byte order of UTF-8 and so `str::cmp`. Mixed key types follow Python's rules here:
//! numbers (bool, int, float) compare by value, tuples element by element, and any pair
//! Python refuses to order (str against int, `None` against `None`, ...) compares by repr,
//! which puts every string before every non-string.

use std::cmp::Ordering;
use std::collections::HashMap;

use super::Value;

/// A hashable view of a key with Python's equality: `1`, `1.0` and `True` are one key.
#[derive(Debug, PartialEq, Eq, Hash)]
enum KeyRepr<'a> {
    Str(&'a str),
    Int(i64),
    Long(&'a str),
    FloatBits(u64),
    None,
    Tuple(Vec<KeyRepr<'a>>),
    /// A key equal to nothing else (NaN, an object: Python compares them by identity).
    Unique(usize),
}

/// Why a key cannot be a dictionary key: Python's `TypeError: unhashable type`.
pub(crate) struct Unhashable(pub &'static str);

fn key_repr<'a>(key: &'a Value, index: usize) -> Result<KeyRepr<'a>, Unhashable> {
    Ok(match key {
        Value::Str(s) => KeyRepr::Str(s),
        Value::Int(i) => KeyRepr::Int(*i),
        Value::Bool(b) => KeyRepr::Int(i64::from(*b)),
        Value::Long(s) => match s.parse::<i64>() {
            Ok(i) => KeyRepr::Int(i),
            Err(_) => KeyRepr::Long(s),
        },
        Value::Float(f) => {
            if f.is_nan() {
                KeyRepr::Unique(index)
            } else if f.fract() == 0.0 && f.abs() < 9.2e18 {
                // Exact: |f| < 2^63 and integral.
                KeyRepr::Int(*f as i64)
            } else {
                KeyRepr::FloatBits(f.to_bits())
            }
        }
        Value::None => KeyRepr::None,
        Value::Tuple(items) => KeyRepr::Tuple(
            items
                .iter()
                .map(|item| key_repr(item, index))
                .collect::<Result<_, _>>()?,
        ),
        Value::Object(_) => KeyRepr::Unique(index),
        Value::List(_) => return Err(Unhashable("list")),
        Value::Dict(_) => return Err(Unhashable("dict")),
    })
}

/// Builds a dictionary from alternating keys and values the way Python's `d[k] = v` loop
/// does: a repeated key keeps its first position and its first key object, and takes the
/// last value.
pub(crate) fn merge_entries(flat: Vec<Value>) -> Result<Vec<(Value, Value)>, Unhashable> {
    let mut entries = Vec::with_capacity(flat.len() / 2);
    let mut it = flat.into_iter();
    while let (Some(k), Some(v)) = (it.next(), it.next()) {
        entries.push((k, v));
    }
    // Fast path: strictly ascending string keys (everything Python writes) are unique.
    let ascending_strings = entries.iter().all(|(k, _)| matches!(k, Value::Str(_)))
        && entries.windows(2).all(|w| match (&w[0].0, &w[1].0) {
            (Value::Str(a), Value::Str(b)) => a < b,
            _ => false,
        });
    if ascending_strings {
        return Ok(entries);
    }
    let mut first_index: HashMap<KeyRepr<'_>, usize> = HashMap::with_capacity(entries.len());
    // `replace[i] = Some(j)`: entry i is a repeat of entry j.
    let mut repeat_of: Vec<Option<usize>> = Vec::with_capacity(entries.len());
    let mut any_repeat = false;
    for (i, (k, _)) in entries.iter().enumerate() {
        let repr = key_repr(k, i)?;
        match first_index.get(&repr) {
            Some(&j) => {
                repeat_of.push(Some(j));
                any_repeat = true;
            }
            None => {
                first_index.insert(repr, i);
                repeat_of.push(None);
            }
        }
    }
    drop(first_index);
    if !any_repeat {
        return Ok(entries);
    }
    let mut slots: Vec<Option<(Value, Value)>> = entries.into_iter().map(Some).collect();
    for i in 0..slots.len() {
        if let Some(Some(j)) = repeat_of.get(i).copied() {
            let later = slots.get_mut(i).and_then(Option::take);
            if let (Some((_, value)), Some(Some((_, first_value)))) = (later, slots.get_mut(j)) {
                *first_value = value;
            }
        }
    }
    Ok(slots.into_iter().flatten().collect())
}

/// A number as Python compares it.
enum Num<'a> {
    Int(i64),
    /// An integer outside the `i64` range, as canonical decimal digits.
    Big(&'a str),
    Float(f64),
}

fn as_num(v: &Value) -> Option<Num<'_>> {
    match v {
        Value::Bool(b) => Some(Num::Int(i64::from(*b))),
        Value::Int(i) => Some(Num::Int(*i)),
        Value::Long(s) => Some(match s.parse::<i64>() {
            Ok(i) => Num::Int(i),
            Err(_) => Num::Big(s),
        }),
        Value::Float(f) => Some(Num::Float(*f)),
        _ => None,
    }
}

/// Exact comparison of an integer and a finite float.
fn cmp_int_float(i: i64, f: f64) -> Ordering {
    // 2^63 as a float.
    const LIMIT: f64 = 9_223_372_036_854_775_808.0;
    if f >= LIMIT {
        return Ordering::Less;
    }
    if f < -LIMIT {
        return Ordering::Greater;
    }
    let t = f.trunc();
    match i.cmp(&(t as i64)) {
        Ordering::Equal => 0.0_f64.partial_cmp(&(f - t)).unwrap_or(Ordering::Equal),
        other => other,
    }
}

fn cmp_big(a: &str, b: &str) -> Ordering {
    let (a_neg, a_digits) = a.strip_prefix('-').map_or((false, a), |d| (true, d));
    let (b_neg, b_digits) = b.strip_prefix('-').map_or((false, b), |d| (true, d));
    match (a_neg, b_neg) {
        (false, true) => Ordering::Greater,
        (true, false) => Ordering::Less,
        (neg, _) => {
            let magnitude = a_digits
                .len()
                .cmp(&b_digits.len())
                .then_with(|| a_digits.cmp(b_digits));
            if neg {
                magnitude.reverse()
            } else {
                magnitude
            }
        }
    }
}

/// Numeric comparison; `None` when a NaN is involved (then every comparison is false).
fn num_cmp(a: &Num<'_>, b: &Num<'_>) -> Option<Ordering> {
    match (a, b) {
        (Num::Int(x), Num::Int(y)) => Some(x.cmp(y)),
        (Num::Float(x), Num::Float(y)) => x.partial_cmp(y),
        (Num::Int(i), Num::Float(f)) => (!f.is_nan()).then(|| cmp_int_float(*i, *f)),
        (Num::Float(f), Num::Int(i)) => (!f.is_nan()).then(|| cmp_int_float(*i, *f).reverse()),
        (Num::Big(x), Num::Big(y)) => Some(cmp_big(x, y)),
        // A Big is outside the i64 range, so its sign decides.
        (Num::Big(x), Num::Int(_)) => Some(if x.starts_with('-') {
            Ordering::Less
        } else {
            Ordering::Greater
        }),
        (Num::Int(_), Num::Big(y)) => Some(if y.starts_with('-') {
            Ordering::Greater
        } else {
            Ordering::Less
        }),
        // Approximate (Python compares exactly): only differs within one float ulp.
        (Num::Big(x), Num::Float(f)) => x.parse::<f64>().ok().and_then(|b| b.partial_cmp(f)),
        (Num::Float(f), Num::Big(y)) => y.parse::<f64>().ok().and_then(|b| f.partial_cmp(&b)),
    }
}

/// Python's `a == b`.
fn py_eq(a: &Value, b: &Value) -> bool {
    if let (Some(x), Some(y)) = (as_num(a), as_num(b)) {
        return num_cmp(&x, &y) == Some(Ordering::Equal);
    }
    match (a, b) {
        (Value::Str(x), Value::Str(y)) => x == y,
        (Value::None, Value::None) => true,
        (Value::Tuple(x), Value::Tuple(y)) | (Value::List(x), Value::List(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| py_eq(p, q))
        }
        (Value::Dict(x), Value::Dict(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.iter().any(|(k2, v2)| py_eq(k, k2) && py_eq(v, v2)))
        }
        _ => false,
    }
}

/// Python 3's `cmp(a, b)` = `(a > b) - (a < b)`; `None` where Python raises `TypeError`.
fn py_cmp(a: &Value, b: &Value) -> Option<Ordering> {
    if let (Some(x), Some(y)) = (as_num(a), as_num(b)) {
        return Some(num_cmp(&x, &y).unwrap_or(Ordering::Equal));
    }
    match (a, b) {
        (Value::Str(x), Value::Str(y)) => Some(x.cmp(y)),
        (Value::Tuple(x), Value::Tuple(y)) | (Value::List(x), Value::List(y)) => {
            for (p, q) in x.iter().zip(y) {
                if !py_eq(p, q) {
                    return py_cmp(p, q);
                }
            }
            Some(x.len().cmp(&y.len()))
        }
        _ => None,
    }
}

/// `xml_marshaller`'s key comparison: `cmp`, or `cmp` of the reprs where `cmp` raises.
fn key_cmp(a: &Value, b: &Value) -> Ordering {
    py_cmp(a, b).unwrap_or_else(|| crate::pyrepr::repr(a).cmp(&crate::pyrepr::repr(b)))
}

/// The order in which to write a dictionary's entries.
pub(crate) enum Order {
    /// The entries are already in order.
    AsIs,
    /// Write the entries at these indexes, in this order.
    Permuted(Vec<usize>),
}

/// Sorts entries whose keys are strings (object attribute dictionaries).
pub(crate) fn str_key_order<V>(entries: &[(String, V)]) -> Order {
    if entries.windows(2).all(|w| w[0].0 <= w[1].0) {
        return Order::AsIs;
    }
    let mut idx: Vec<usize> = (0..entries.len()).collect();
    idx.sort_by(|&i, &j| entries[i].0.cmp(&entries[j].0));
    Order::Permuted(idx)
}

/// The order `xml_marshaller` writes a dictionary's entries in.
pub(crate) fn dict_order(entries: &[(Value, Value)]) -> Order {
    let all_str = entries.iter().all(|(k, _)| matches!(k, Value::Str(_)));
    if all_str {
        let sorted = entries.windows(2).all(|w| match (&w[0].0, &w[1].0) {
            (Value::Str(a), Value::Str(b)) => a <= b,
            _ => true,
        });
        if sorted {
            return Order::AsIs;
        }
        let mut idx: Vec<usize> = (0..entries.len()).collect();
        // A total order, so the standard (stable) sort is safe.
        idx.sort_by(|&i, &j| match (&entries[i].0, &entries[j].0) {
            (Value::Str(a), Value::Str(b)) => a.cmp(b),
            _ => Ordering::Equal,
        });
        return Order::Permuted(idx);
    }
    let mut idx: Vec<usize> = (0..entries.len()).collect();
    let lt = |i: usize, j: usize| key_cmp(&entries[i].0, &entries[j].0) == Ordering::Less;
    python_sort(&mut idx, lt);
    Order::Permuted(idx)
}

/// Sorts with a comparison that may not be a total order (mixed key types can make
/// Python's comparison cyclic) without ever panicking. Below 64 elements this is exactly
/// CPython's algorithm (`count_run`, then binary insertion), so even a cyclic comparison
/// gives Python's result; above, a stable merge sort that agrees with Python whenever the
/// comparison is consistent.
fn python_sort(idx: &mut Vec<usize>, lt: impl Fn(usize, usize) -> bool) {
    let n = idx.len();
    if n < 2 {
        return;
    }
    if n < 64 {
        // count_run
        let mut run = 2;
        if lt(idx[1], idx[0]) {
            while run < n && lt(idx[run], idx[run - 1]) {
                run += 1;
            }
            idx[..run].reverse();
        } else {
            while run < n && !lt(idx[run], idx[run - 1]) {
                run += 1;
            }
        }
        // binarysort
        for start in run..n {
            let pivot = idx[start];
            let (mut l, mut r) = (0, start);
            while l < r {
                let p = l + ((r - l) >> 1);
                if lt(pivot, idx[p]) {
                    r = p;
                } else {
                    l = p + 1;
                }
            }
            idx.copy_within(l..start, l + 1);
            idx[l] = pivot;
        }
        return;
    }
    // Bottom-up stable merge sort.
    let mut buf = vec![0usize; n];
    let mut width = 1;
    while width < n {
        let mut lo = 0;
        while lo < n {
            let mid = (lo + width).min(n);
            let hi = (lo + 2 * width).min(n);
            let (mut i, mut j, mut k) = (lo, mid, lo);
            while i < mid && j < hi {
                if lt(idx[j], idx[i]) {
                    buf[k] = idx[j];
                    j += 1;
                } else {
                    buf[k] = idx[i];
                    i += 1;
                }
                k += 1;
            }
            buf[k..k + (mid - i)].copy_from_slice(&idx[i..mid]);
            k += mid - i;
            buf[k..k + (hi - j)].copy_from_slice(&idx[j..hi]);
            lo = hi;
        }
        std::mem::swap(idx, &mut buf);
        width *= 2;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sorted_keys(keys: Vec<Value>) -> Vec<Value> {
        let entries: Vec<(Value, Value)> = keys.into_iter().map(|k| (k, Value::None)).collect();
        match dict_order(&entries) {
            Order::AsIs => entries.into_iter().map(|(k, _)| k).collect(),
            Order::Permuted(idx) => idx.into_iter().map(|i| entries[i].0.clone()).collect(),
        }
    }

    #[test]
    fn strings_sort_by_code_point() {
        let keys = ["b", "\u{ff}", "B", "a", "\u{1f600}", "\u{e9}"];
        let got = sorted_keys(keys.iter().map(|k| Value::from(*k)).collect());
        let want = ["B", "a", "b", "\u{e9}", "\u{ff}", "\u{1f600}"];
        assert_eq!(
            got,
            want.iter().map(|k| Value::from(*k)).collect::<Vec<_>>()
        );
    }

    #[test]
    fn mixed_keys_sort_like_python() {
        // sorted({3: 0, 'b': 0, 1.5: 0, None: 0, 'a': 0, -2: 0, (1, 'x'): 0}.items(), key=...)
        // -> ['a', 'b', (1, 'x'), -2, 1.5, 3, None]: str reprs start with a quote, which
        // sorts before '(' and '-' and digits, and 'N' sorts after them.
        let got = sorted_keys(vec![
            Value::Int(3),
            "b".into(),
            Value::Float(1.5),
            Value::None,
            "a".into(),
            Value::Int(-2),
            Value::Tuple(vec![Value::Int(1), "x".into()]),
        ]);
        let want = vec![
            Value::from("a"),
            "b".into(),
            Value::Tuple(vec![Value::Int(1), "x".into()]),
            Value::Int(-2),
            Value::Float(1.5),
            Value::Int(3),
            Value::None,
        ];
        assert_eq!(got, want);
    }

    #[test]
    fn large_mixed_dicts_sort_without_panicking() {
        let mut keys: Vec<Value> = (0..200).map(|i| Value::Int((i * 7919) % 200)).collect();
        keys.push(Value::Bool(true));
        keys.push(Value::None);
        keys.push(Value::Float(f64::INFINITY));
        keys.push(Value::Float(f64::NAN));
        let got = sorted_keys(keys);
        assert_eq!(got.len(), 204);
    }

    #[test]
    fn duplicate_keys_merge_like_python() {
        let flat = vec![
            Value::Int(1),
            "a".into(),
            "k".into(),
            "b".into(),
            Value::Float(1.0),
            "c".into(),
            Value::Bool(true),
            "d".into(),
        ];
        let merged = merge_entries(flat).ok().unwrap_or_default();
        assert_eq!(
            merged,
            vec![(Value::Int(1), Value::from("d")), ("k".into(), "b".into())]
        );
        assert!(merge_entries(vec![Value::List(vec![]), Value::None]).is_err());
    }
}
