//! Properties of the marshaller: encode then decode gives the value back, encoding is
//! canonical, and decoding never panics, whatever the bytes.

use proptest::prelude::*;
use slapos_proto::marshal::{self, Object, SlapClass, Value};
use slapos_proto::slap::SlapObject;
use slapos_proto::Limits;

/// Characters XML 1.0 can carry (what Python can marshal).
fn xml_char() -> impl Strategy<Value = char> {
    any::<char>().prop_filter("XML 1.0 character", |c| {
        let code = u32::from(*c);
        matches!(code, 0x9 | 0xa | 0xd | 0x20..=0xfffd | 0x10000..=0x10ffff)
    })
}

/// Strings mixing tricky pieces (markup, entity-looking text, line ends) with any character.
fn text() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        3 => xml_char().prop_map(String::from),
        1 => prop::sample::select(vec![
            "&", "<", ">", "\"", "'", "&amp;", "&lt;", "&gt;", "&amp;amp;", "&#233;", "&#x41;",
            "]]>", "\r", "\r\n", "\n", "\t", "\u{7f}", "\u{85}", "\u{2028}", "\u{feff}", "é",
            "😀", "\u{10ffff}", " ", "slappart0",
        ])
        .prop_map(String::from),
    ];
    prop::collection::vec(piece, 0..8).prop_map(|pieces| pieces.concat())
}

fn float() -> impl Strategy<Value = f64> {
    prop_oneof![
        3 => any::<f64>(),
        1 => prop::sample::select(vec![
            0.0, -0.0, 1.0, 2.5, -0.1, 1e16, 1e15, 1e-5, 1e-4, 1e300, 5e-324, f64::MAX,
            f64::MIN_POSITIVE, f64::INFINITY, f64::NEG_INFINITY, f64::NAN,
        ]),
    ]
}

/// Integers outside `i64`, as canonical digits (20 to 40 digits, optional sign).
fn long() -> impl Strategy<Value = String> {
    (any::<bool>(), "[1-9][0-9]{19,39}").prop_map(
        |(neg, digits)| {
            if neg {
                format!("-{digits}")
            } else {
                digits
            }
        },
    )
}

fn scalar() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::None),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::Int),
        long().prop_map(Value::Long),
        float().prop_map(Value::Float),
        text().prop_map(Value::Str),
    ]
}

/// Hashable keys that are never equal to one another across types (no bools, which equal
/// 0 and 1, and no integral floats, which equal ints).
fn key() -> impl Strategy<Value = Value> {
    let simple = prop_oneof![
        6 => text().prop_map(Value::Str),
        2 => any::<i64>().prop_map(Value::Int),
        1 => Just(Value::None),
        1 => (any::<i32>(), 1u8..=3).prop_map(|(i, d)| Value::Float(f64::from(i) + 1.0 / f64::from(d * 2))),
        1 => long().prop_map(Value::Long),
    ];
    prop_oneof![
        8 => simple.clone(),
        1 => prop::collection::vec(simple, 0..3).prop_map(Value::Tuple),
    ]
}

/// Python's dict semantics: keep the first of equal keys.
fn unique_entries(entries: Vec<(Value, Value)>) -> Vec<(Value, Value)> {
    let mut seen = std::collections::HashSet::new();
    entries
        .into_iter()
        .filter(|(k, _)| seen.insert(format!("{k:?}")))
        .collect()
}

fn unique_attrs(entries: Vec<(String, Value)>) -> Vec<(String, Value)> {
    let mut seen = std::collections::HashSet::new();
    entries
        .into_iter()
        .filter(|(k, _)| seen.insert(k.clone()))
        .collect()
}

fn value() -> impl Strategy<Value = Value> {
    scalar().prop_recursive(4, 64, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Tuple),
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::List),
            prop::collection::vec((key(), inner.clone()), 0..6)
                .prop_map(|entries| Value::Dict(unique_entries(entries))),
            (
                prop::sample::select(SlapClass::ALL.to_vec()),
                prop::collection::vec(inner.clone(), 0..3),
                prop::collection::vec((text(), inner), 0..4),
            )
                .prop_map(|(class, args, attrs)| {
                    Value::Object(Box::new(Object {
                        class,
                        args,
                        attrs: unique_attrs(attrs),
                    }))
                }),
        ]
    })
}

/// A form to compare values in: dictionary entries and attributes sorted (the encoder
/// sorts them), floats compared by their bits (so NaN equals NaN and -0.0 differs from 0.0).
fn normalize(v: &Value) -> Value {
    match v {
        Value::Float(f) => Value::Str(if f.is_nan() {
            "float:nan".into()
        } else {
            format!("float:{:x}", f.to_bits())
        }),
        Value::Tuple(items) => Value::Tuple(items.iter().map(normalize).collect()),
        Value::List(items) => Value::List(items.iter().map(normalize).collect()),
        Value::Dict(entries) => {
            let mut entries: Vec<(Value, Value)> = entries
                .iter()
                .map(|(k, v)| (normalize(k), normalize(v)))
                .collect();
            entries.sort_by_key(|(k, _)| format!("{k:?}"));
            Value::Dict(entries)
        }
        Value::Object(o) => {
            let mut attrs: Vec<(String, Value)> = o
                .attrs
                .iter()
                .map(|(k, v)| (k.clone(), normalize(v)))
                .collect();
            attrs.sort_by(|a, b| a.0.cmp(&b.0));
            Value::Object(Box::new(Object {
                class: o.class,
                args: o.args.iter().map(normalize).collect(),
                attrs,
            }))
        }
        other => other.clone(),
    }
}

/// The same value with every dictionary's entries in reverse order.
fn reversed(v: &Value) -> Value {
    match v {
        Value::Tuple(items) => Value::Tuple(items.iter().map(reversed).collect()),
        Value::List(items) => Value::List(items.iter().map(reversed).collect()),
        Value::Dict(entries) => Value::Dict(
            entries
                .iter()
                .rev()
                .map(|(k, v)| (reversed(k), reversed(v)))
                .collect(),
        ),
        Value::Object(o) => Value::Object(Box::new(Object {
            class: o.class,
            args: o.args.iter().map(reversed).collect(),
            attrs: o
                .attrs
                .iter()
                .rev()
                .map(|(k, v)| (k.clone(), reversed(v)))
                .collect(),
        })),
        other => other.clone(),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn encode_then_decode_gives_the_value_back(v in value()) {
        let xml = marshal::encode(&v).expect("every generated value is encodable");
        prop_assert!(xml.is_ascii());
        prop_assert!(xml.starts_with("<marshal>") && xml.ends_with("</marshal>"));
        let back = marshal::decode(xml.as_bytes(), &Limits::default())
            .map_err(|e| TestCaseError::fail(format!("{e}\n{xml}")))?;
        prop_assert_eq!(normalize(&back), normalize(&v));
        // Canonical: the decoded value writes the same bytes again.
        prop_assert_eq!(marshal::encode(&back).expect("encode"), xml);
    }

    #[test]
    fn encoding_does_not_depend_on_dict_order(v in value()) {
        prop_assert_eq!(marshal::encode(&reversed(&v)), marshal::encode(&v));
    }

    #[test]
    fn strings_survive_exactly(s in text()) {
        let xml = marshal::encode(&Value::Str(s.clone())).expect("encode");
        prop_assert_eq!(marshal::decode(xml.as_bytes(), &Limits::SMALL), Ok(Value::Str(s)));
    }

    #[test]
    fn floats_survive_bit_for_bit(f in float()) {
        let xml = marshal::encode(&Value::Float(f)).expect("encode");
        match marshal::decode(xml.as_bytes(), &Limits::SMALL) {
            Ok(Value::Float(g)) if f.is_nan() => prop_assert!(g.is_nan()),
            Ok(Value::Float(g)) => prop_assert_eq!(g.to_bits(), f.to_bits()),
            other => prop_assert!(false, "{:?}", other),
        }
    }

    #[test]
    fn control_characters_are_refused_by_the_encoder(
        prefix in text(),
        c in (0u8..0x20).prop_filter("not tab/LF/CR", |b| !matches!(b, 9 | 10 | 13)),
    ) {
        let s = format!("{prefix}{}", char::from(c));
        prop_assert!(marshal::encode(&Value::Str(s)).is_err());
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2048))]

    #[test]
    fn decode_never_panics_on_arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = marshal::decode(&bytes, &Limits::default());
        let _ = SlapObject::decode(&bytes, &Limits::SMALL);
    }

    #[test]
    fn decode_never_panics_on_markup_soup(
        pieces in prop::collection::vec(
            prop::sample::select(vec![
                "<marshal>", "</marshal>", "<list id=\"i2\">", "</list>", "<tuple>", "</tuple>",
                "<dictionary id=\"i3\">", "</dictionary>", "<string>", "</string>", "<int>",
                "</int>", "<none/>", "<reference id=\"i2\"/>", "<reference id=\"i3\"/>", "1",
                "&amp;", "&", "<", ">", "<object id=\"i4\" module=\"slapos.slap.slap\" class=\"Computer\">",
                "</object>", "<tuple/>", "<dictionary id=\"i5\"/>", "<m:x xmlns:m=\"u\">", "</m:x>",
                "<![CDATA[x]]>", "<!-- c -->", "<?pi x?>", " ", "\u{e9}", "<float>nan</float>",
                "<long>-0</long>", "<bool>2</bool>", "<unicode/>",
            ]),
            0..40,
        )
    ) {
        let doc = pieces.concat();
        if let Ok(v) = marshal::decode(doc.as_bytes(), &Limits::default()) {
            if let Ok(xml) = marshal::encode(&v) {
                let back = marshal::decode(xml.as_bytes(), &Limits::default());
                prop_assert_eq!(back.map(|b| normalize(&b)), Ok(normalize(&v)));
            }
        }
    }
}

/// Mutations of a valid document: flip, insert, delete, truncate.
#[derive(Debug, Clone)]
enum Mutation {
    Flip(usize, u8),
    Insert(usize, &'static str),
    Delete(usize, usize),
    Truncate(usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Mutation::Flip(i, b)),
        (
            any::<usize>(),
            prop::sample::select(vec![
                "<",
                ">",
                "/",
                "&",
                "\"",
                "<reference id=\"i2\"/>",
                "<reference id=\"i3\"/>",
                "</list>",
                "<list id=\"i2\">",
                "<none/>",
                "&#0;",
                "&#233;",
                "]]>",
                "\u{0}",
                "\u{fffe}",
            ]),
        )
            .prop_map(|(i, s)| Mutation::Insert(i, s)),
        (any::<usize>(), 0usize..16).prop_map(|(i, n)| Mutation::Delete(i, n)),
        any::<usize>().prop_map(Mutation::Truncate),
    ]
}

fn apply(doc: &mut Vec<u8>, m: &Mutation) {
    let len = doc.len().max(1);
    match *m {
        Mutation::Flip(i, b) => {
            if let Some(byte) = doc.get_mut(i % len) {
                *byte ^= b | 1;
            }
        }
        Mutation::Insert(i, s) => {
            let at = (i % len).min(doc.len());
            doc.splice(at..at, s.bytes());
        }
        Mutation::Delete(i, n) => {
            let at = (i % len).min(doc.len());
            let end = (at + n).min(doc.len());
            doc.drain(at..end);
        }
        Mutation::Truncate(i) => doc.truncate(i % len),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    #[test]
    fn decode_never_panics_on_mutated_documents(
        v in value(),
        mutations in prop::collection::vec(mutation(), 1..5),
    ) {
        let mut doc = marshal::encode(&v).expect("encode").into_bytes();
        for m in &mutations {
            apply(&mut doc, m);
        }
        for limits in [Limits::default(), Limits::SMALL, Limits { max_bytes: 4096, max_depth: 4, max_elements: 20, max_expanded_bytes: 8192 }] {
            if let Ok(decoded) = marshal::decode(&doc, &limits) {
                // What was accepted is within the limits, references expanded.
                let size = decoded.size();
                prop_assert!(size.values < limits.max_elements, "{:?}", size);
                prop_assert!(size.height < limits.max_depth, "{:?}", size);
                prop_assert!(size.text_bytes <= limits.max_expanded_bytes, "{:?}", size);
                if let Ok(xml) = marshal::encode(&decoded) {
                    let back = marshal::decode(xml.as_bytes(), &Limits::default());
                    prop_assert_eq!(back.map(|b| normalize(&b)), Ok(normalize(&decoded)));
                }
            }
            let _ = SlapObject::decode(&doc, &limits);
        }
    }
}
