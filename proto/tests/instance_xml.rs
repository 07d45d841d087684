//! Instance XML (`dict2xml` / `xml2dict`) and JSON-in-XML.
//!
//! Expected bytes come from slapos.core's `dict2xml` run with lxml 6.1, and from the
//! captured exchanges in testdata/vectors (cited as [vNN]).

use proptest::prelude::*;
use slapos_proto::instance_xml::{
    self, decode, encode, json_dumps, json_in_xml_decode, json_in_xml_encode, InstanceDict,
    JSON_KEY,
};
use slapos_proto::{DecodeError, Limits};

fn dict(entries: &[(&str, Option<&str>)]) -> InstanceDict {
    entries
        .iter()
        .map(|(k, v)| (k.to_string(), v.map(str::to_string)))
        .collect()
}

fn decode_str(xml: &str) -> Result<InstanceDict, DecodeError> {
    decode(xml.as_bytes(), &Limits::DEFAULT)
}

fn error_of(xml: &str) -> String {
    match decode_str(xml) {
        Ok(d) => panic!("{xml:?} decoded to {d:?}, expected an error"),
        Err(e) => e.to_string(),
    }
}

/// The example of slap-protocol.md §6.1, byte for byte.
const PROTOCOL_EXAMPLE: &str = "<?xml version='1.0' encoding='utf-8'?>\n<instance>\n  \
<parameter id=\"count\">4</parameter>\n  <parameter id=\"greeting\">héllo wörld</parameter>\n\
</instance>\n";

#[test]
fn protocol_example_exact_bytes() {
    let d = dict(&[("greeting", Some("héllo wörld")), ("count", Some("4"))]);
    assert_eq!(encode(&d), PROTOCOL_EXAMPLE);
    assert_eq!(decode_str(PROTOCOL_EXAMPLE).unwrap(), d);
}

/// The `connection_xml` of [v25] (a real slapproxy answer), unescaped once from the wire.
#[test]
fn captured_connection_xml_round_trips() {
    let captured = "<?xml version='1.0' encoding='utf-8'?>\n<instance>\n  \
<parameter id=\"password\">p&amp;ss&lt;w&gt;rd</parameter>\n  \
<parameter id=\"port\">8443</parameter>\n  \
<parameter id=\"url\">https://[2001:db8::10]:8443/</parameter>\n</instance>\n";
    let d = decode_str(captured).unwrap();
    assert_eq!(
        d,
        dict(&[
            ("password", Some("p&ss<w>rd")),
            ("port", Some("8443")),
            ("url", Some("https://[2001:db8::10]:8443/")),
        ])
    );
    assert_eq!(encode(&d), captured);
}

#[test]
fn empty_dict_is_self_closed_instance() {
    // lxml: etree.tostring(Element('instance'), pretty_print=True, ...) ends in "<instance/>\n".
    let xml = encode(&InstanceDict::new());
    assert_eq!(xml, "<?xml version='1.0' encoding='utf-8'?>\n<instance/>\n");
    assert_eq!(decode_str(&xml).unwrap(), InstanceDict::new());
    assert_eq!(
        decode_str("<instance></instance>").unwrap(),
        InstanceDict::new()
    );
}

#[test]
fn none_and_empty_string() {
    let d = dict(&[("a", None), ("b", Some(""))]);
    assert_eq!(
        encode(&d),
        "<?xml version='1.0' encoding='utf-8'?>\n<instance>\n  <parameter id=\"a\">None</parameter>\n  \
<parameter id=\"b\"></parameter>\n</instance>\n"
    );
    // None is written as str(None) and comes back as the string; "" comes back as None.
    assert_eq!(
        decode_str(&encode(&d)).unwrap(),
        dict(&[("a", Some("None")), ("b", None)])
    );
}

#[test]
fn escaping_matches_lxml() {
    // Checked with lxml 6.1: text escapes & < > and CR; the attribute also " TAB LF CR.
    let d = dict(&[
        ("b", Some("x&<>\"'\r\n\t y")),
        ("é\"&<>'\t\n\r", Some("héllo 😀 ]]>")),
    ]);
    assert_eq!(
        encode(&d),
        "<?xml version='1.0' encoding='utf-8'?>\n<instance>\n  \
<parameter id=\"b\">x&amp;&lt;&gt;\"'&#13;\n\t y</parameter>\n  \
<parameter id=\"é&quot;&amp;&lt;&gt;'&#9;&#10;&#13;\">héllo 😀 ]]&gt;</parameter>\n</instance>\n"
    );
    assert_eq!(decode_str(&encode(&d)).unwrap(), d);
}

#[test]
fn multiline_value_is_not_indented() {
    let d = dict(&[("a", Some("\n  x\n"))]);
    assert_eq!(
        encode(&d),
        "<?xml version='1.0' encoding='utf-8'?>\n<instance>\n  <parameter id=\"a\">\n  x\n</parameter>\n</instance>\n"
    );
    assert_eq!(decode_str(&encode(&d)).unwrap(), d);
}

#[test]
fn keys_are_sorted_by_code_point() {
    let d = dict(&[
        ("b", Some("2")),
        ("a", Some("1")),
        ("B", Some("3")),
        ("é", Some("4")),
    ]);
    let xml = encode(&d);
    let order: Vec<usize> = ["\"B\"", "\"a\"", "\"b\"", "\"é\""]
        .iter()
        .map(|k| xml.find(k).unwrap())
        .collect();
    assert!(order.windows(2).all(|w| w[0] < w[1]), "{xml}");
}

#[test]
fn repeated_ids_are_concatenated_with_a_space() {
    let xml = "<instance><parameter id=\"a\">x</parameter><parameter id=\"b\">1</parameter>\
<parameter id=\"a\">y z</parameter><parameter id=\"a\">w</parameter></instance>";
    assert_eq!(
        decode_str(xml).unwrap(),
        dict(&[("a", Some("x y z w")), ("b", Some("1"))])
    );
    // An empty first one is replaced (xml2dict: `value is None` so it takes the new text).
    let xml = "<instance><parameter id=\"a\"/><parameter id=\"a\">z</parameter></instance>";
    assert_eq!(decode_str(xml).unwrap(), dict(&[("a", Some("z"))]));
    // A later empty one: xml2dict raises TypeError (str + None); refused with the reason.
    let message =
        error_of("<instance><parameter id=\"a\">x</parameter><parameter id=\"a\"/></instance>");
    assert!(message.contains("\"a\""), "{message}");
    assert!(message.contains("repeated"), "{message}");
}

#[test]
fn empty_elements_give_none() {
    let xml = "<instance><parameter id=\"a\"/><parameter id=\"b\"></parameter>\
<parameter id=\"c\"><!-- only a comment --></parameter><parameter id=\"d\"> </parameter></instance>";
    assert_eq!(
        decode_str(xml).unwrap(),
        dict(&[("a", None), ("b", None), ("c", None), ("d", Some(" "))])
    );
}

#[test]
fn text_is_lxml_text() {
    // .text stops at the first child node; CDATA and references are part of the text;
    // line ends are normalized; attribute values are whitespace-normalized.
    let xml = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\r\n<instance>\
<parameter id=\"a\">x<!--c-->y</parameter>\
<parameter id=\"b\"><![CDATA[<x>]]>&amp;&#233;&#x1F600;</parameter>\
<parameter id=\"c\">\r\nq\rr</parameter>\
<parameter id=\"d\ne\tf&#10;\">v</parameter>\
<other><parameter id=\"nested\">n</parameter></other>\
<parameter id=\"g\" extra=\"ignored\">s<b>t</b>u</parameter>\
</instance>";
    assert_eq!(
        decode_str(xml).unwrap(),
        dict(&[
            ("a", Some("x")),
            ("b", Some("<x>&é😀")),
            ("c", Some("\nq\nr")),
            ("d e f\n", Some("v")),
            ("nested", Some("n")),
            ("g", Some("s")),
        ])
    );
}

#[test]
fn byte_order_mark_is_accepted() {
    let mut input = vec![0xEF, 0xBB, 0xBF];
    input.extend_from_slice(PROTOCOL_EXAMPLE.as_bytes());
    assert_eq!(decode(&input, &Limits::DEFAULT).unwrap().len(), 2);
}

#[test]
fn too_large_is_checked_first() {
    let limits = Limits {
        max_bytes: 10,
        ..Limits::DEFAULT
    };
    // Not even XML: the size is refused before parsing.
    let err = decode(b"this is not XML at all", &limits).unwrap_err();
    assert_eq!(
        err,
        DecodeError::TooLarge {
            size: 22,
            limit: 10
        }
    );
    assert!(err.to_string().contains("22 bytes"), "{err}");
}

#[test]
fn too_deep() {
    let limits = Limits {
        max_depth: 3,
        ..Limits::DEFAULT
    };
    let ok = "<instance><a><parameter id=\"x\">1</parameter></a></instance>";
    assert_eq!(
        decode(ok.as_bytes(), &limits).unwrap(),
        dict(&[("x", Some("1"))])
    );
    let deep = "<instance><a><b><parameter id=\"x\">1</parameter></b></a></instance>";
    let err = decode(deep.as_bytes(), &limits).unwrap_err();
    assert_eq!(
        err,
        DecodeError::TooDeep {
            limit: 3,
            offset: 16
        }
    );
    assert!(err.to_string().contains("deeper than 3"), "{err}");
}

#[test]
fn too_many_elements() {
    let limits = Limits {
        max_elements: 3,
        ..Limits::DEFAULT
    };
    let xml = "<instance><parameter id=\"a\">1</parameter><parameter id=\"b\">2</parameter>\
<parameter id=\"c\">3</parameter></instance>";
    let err = decode(xml.as_bytes(), &limits).unwrap_err();
    assert!(
        matches!(err, DecodeError::TooManyElements { limit: 3, offset } if offset == xml.find("<parameter id=\"c\"").unwrap()),
        "{err:?}"
    );
    assert!(err.to_string().contains("more than 3 elements"), "{err}");
}

#[test]
fn bad_root() {
    let err = decode_str("<marshal><parameter id=\"a\">1</parameter></marshal>").unwrap_err();
    assert!(
        matches!(err, DecodeError::Unexpected { offset: 0, .. }),
        "{err:?}"
    );
    let message = err.to_string();
    assert!(message.contains("<marshal>"), "{message}");
    assert!(message.contains("<instance>"), "{message}");
}

#[test]
fn missing_id_says_where() {
    let xml =
        "<instance>\n  <parameter id=\"a\">1</parameter>\n  <parameter>2</parameter>\n</instance>";
    let err = decode_str(xml).unwrap_err();
    let offset = xml.find("<parameter>").unwrap();
    assert_eq!(
        err,
        DecodeError::Invalid {
            what: "parameter",
            offset,
            message: "<parameter> has no id attribute".into()
        }
    );
    assert!(err.to_string().contains(&format!("byte {offset}")), "{err}");
}

#[test]
fn malformed_xml() {
    for (xml, fragment) in [
        ("<instance><parameter id=\"a\">1</instance>", "byte"),
        ("<instance>", "not closed"),
        ("", "no root element"),
        ("   ", "no root element"),
        ("<instance/><instance/>", "after the root element"),
        ("<instance/>trailing", "outside the root"),
        (
            "<instance><parameter id=\"a\">&nbsp;</parameter></instance>",
            "&nbsp;",
        ),
        (
            "<instance><parameter id=\"a\">&#1;</parameter></instance>",
            "U+0001",
        ),
        (
            "<instance><parameter id=\"a\">\u{1}</parameter></instance>",
            "U+0001",
        ),
        (
            "<instance><parameter id=\"a\" id=\"b\"/></instance>",
            "byte",
        ),
        ("<instance><parameter id=\"a<\"/></instance>", "'<'"),
        ("<instance><parameter id=a/></instance>", "byte"),
        ("<instance>]]></instance>", "]]>"),
        ("<instance><!-- a -- b --></instance>", "byte"),
        ("<instance><1bad/></instance>", "invalid element name"),
        (
            " <?xml version=\"1.0\"?><instance/>",
            "start of the document",
        ),
        (
            "<?xml version=\"1.0\" encoding=\"latin-1\"?><instance/>",
            "latin-1",
        ),
        ("<p:instance xmlns:p=\"urn:x\"/>", "namespaces"),
        ("<instance xmlns=\"urn:x\"/>", "namespaces"),
    ] {
        let message = error_of(xml);
        assert!(message.contains(fragment), "{xml:?}: {message}");
    }
    let err = decode(b"<instance>\xff</instance>", &Limits::DEFAULT).unwrap_err();
    assert_eq!(
        err,
        DecodeError::Syntax {
            offset: 10,
            message: "invalid UTF-8 (documents must be UTF-8)".into()
        }
    );
}

#[test]
fn doctype_and_entities_are_refused() {
    let billion_laughs = "<?xml version=\"1.0\"?>\n<!DOCTYPE lolz [<!ENTITY lol \"lol\">\
<!ENTITY lol2 \"&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;\">]>\n\
<instance><parameter id=\"a\">&lol2;</parameter></instance>";
    let err = decode_str(billion_laughs).unwrap_err();
    assert!(
        matches!(
            err,
            DecodeError::Invalid {
                what: "document",
                offset: 22,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("DOCTYPE"), "{err}");
    let message = error_of("<!DOCTYPE instance SYSTEM \"file:///etc/passwd\"><instance/>");
    assert!(message.contains("DOCTYPE"), "{message}");
}

// JSON-in-XML ---------------------------------------------------------------------------

/// The `_` value of [v22], as `slapos request` sends it.
const V22_JSON: &str = r#"{"replicas": 2, "name": "child", "tags": ["a", "b"]}"#;

/// Whether serde_json keeps insertion order in this build (its `preserve_order` feature;
/// off by default, so maps are sorted by key).
fn serde_json_preserves_order() -> bool {
    let mut map = serde_json::Map::new();
    map.insert("b".into(), serde_json::Value::Null);
    map.insert("a".into(), serde_json::Value::Null);
    map.keys().next().map(String::as_str) == Some("b")
}

#[test]
fn json_in_xml_v22() {
    let stored = "<?xml version='1.0' encoding='utf-8'?>\n<instance>\n  \
<parameter id=\"_\">{\"replicas\": 2, \"name\": \"child\", \"tags\": [\"a\", \"b\"]}</parameter>\n</instance>\n";
    let d = dict(&[(JSON_KEY, Some(V22_JSON))]);
    assert_eq!(encode(&d), stored);
    assert_eq!(decode_str(stored).unwrap(), d);

    let value = json_in_xml_decode(&d).unwrap().unwrap();
    assert_eq!(
        value,
        serde_json::json!({"replicas": 2, "name": "child", "tags": ["a", "b"]})
    );
    let expected = if serde_json_preserves_order() {
        V22_JSON
    } else {
        // serde_json's default Map is a BTreeMap: the keys come back sorted.
        r#"{"name": "child", "replicas": 2, "tags": ["a", "b"]}"#
    };
    assert_eq!(json_dumps(&value), expected);
    assert_eq!(
        json_in_xml_encode(&value),
        dict(&[(JSON_KEY, Some(expected))])
    );
}

#[test]
fn json_in_xml_only_for_a_single_underscore_key() {
    assert_eq!(json_in_xml_decode(&InstanceDict::new()), None);
    assert_eq!(json_in_xml_decode(&dict(&[("a", Some("1"))])), None);
    assert_eq!(
        json_in_xml_decode(&dict(&[("_", Some("1")), ("a", Some("1"))])),
        None
    );
    let err = json_in_xml_decode(&dict(&[("_", Some("{not json"))]))
        .unwrap()
        .unwrap_err();
    assert!(err.contains("invalid JSON"), "{err}");
    let err = json_in_xml_decode(&dict(&[("_", None)]))
        .unwrap()
        .unwrap_err();
    assert!(err.contains("empty"), "{err}");
    assert_eq!(
        json_in_xml_decode(&dict(&[("_", Some("[1, \"x\"]"))])),
        Some(Ok(serde_json::json!([1, "x"])))
    );
}

#[test]
fn json_dumps_matches_python() {
    // Python 3: json.dumps({"a": [1, 2.0, 1e16, 1e15, 0.0001, 0.00001, -0.0, 1.5e-7,
    //   123456789.123, "é\x7f😀\n\x01"], "b": {}, "c": [], "d": None, "e": True})
    let value = serde_json::json!({
        "a": [1, 2.0, 1e16, 1e15, 0.0001, 0.00001, -0.0, 1.5e-7, 123456789.123,
              "é\u{7f}😀\n\u{1}"],
        "b": {}, "c": [], "d": null, "e": true
    });
    assert_eq!(
        json_dumps(&value),
        r#"{"a": [1, 2.0, 1e+16, 1000000000000000.0, 0.0001, 1e-05, -0.0, 1.5e-07, 123456789.123, "\u00e9\u007f\ud83d\ude00\n\u0001"], "b": {}, "c": [], "d": null, "e": true}"#
    );
    let value = serde_json::json!([
        -1,
        18446744073709551615u64,
        -9223372036854775808i64,
        0.1,
        1e300,
        -2.5e-300,
        0.0,
        "\"\\\u{8}\u{c}\r\t/",
        123456789012345680.0
    ]);
    assert_eq!(
        json_dumps(&value),
        r#"[-1, 18446744073709551615, -9223372036854775808, 0.1, 1e+300, -2.5e-300, 0.0, "\"\\\b\f\r\t/", 1.2345678901234568e+17]"#
    );
}

#[test]
fn json_round_trips_through_instance_xml() {
    let value = serde_json::json!({"a": "<&>\"'", "b": [true, null, 1.5], "ü": {"x": "é"}});
    let xml = encode(&json_in_xml_encode(&value));
    let back = decode_str(&xml).unwrap();
    assert_eq!(json_in_xml_decode(&back), Some(Ok(value)));
    assert!(xml.is_ascii(), "json.dumps escapes non-ASCII: {xml}");
}

// Properties -----------------------------------------------------------------------------

/// Strings lxml accepts: no control characters other than TAB, LF, CR.
fn xml_string() -> BoxedStrategy<String> {
    let any_text = proptest::string::string_regex(
        "[^\\x00-\\x08\\x0B\\x0C\\x0E-\\x1F\\u{FFFE}\\u{FFFF}]{0,12}",
    )
    .unwrap();
    let tricky = proptest::collection::vec(
        proptest::sample::select(vec![
            '&', '<', '>', '"', '\'', 'é', '😀', ' ', '\n', '\r', '\t', ']', 'a',
        ]),
        0..12,
    )
    .prop_map(|chars| chars.into_iter().collect::<String>());
    prop_oneof![any_text, tricky].boxed()
}

proptest! {
    #[test]
    fn round_trip(entries in proptest::collection::btree_map(
        xml_string(), proptest::option::of(xml_string()), 0..8)) {
        let xml = encode(&entries);
        let back = decode(xml.as_bytes(), &Limits::DEFAULT).unwrap();
        // What xml2dict(dict2xml(d)) gives: None is written "None", "" reads back as None.
        let expected: InstanceDict = entries
            .iter()
            .map(|(k, v)| {
                let v = match v.as_deref() {
                    None => Some("None".to_string()),
                    Some("") => None,
                    Some(s) => Some(s.to_string()),
                };
                (k.clone(), v)
            })
            .collect();
        prop_assert_eq!(back, expected);
    }

    #[test]
    fn json_in_xml_round_trip(keys in proptest::collection::vec(xml_string(), 0..5),
                              numbers in proptest::collection::vec(any::<f64>(), 0..5)) {
        let numbers: Vec<serde_json::Value> = numbers
            .into_iter()
            .filter_map(|n| serde_json::Number::from_f64(n).map(serde_json::Value::Number))
            .collect();
        let value = serde_json::Value::Object(
            keys.into_iter().map(|k| (k, serde_json::Value::Array(numbers.clone()))).collect(),
        );
        let d = json_in_xml_encode(&value);
        let back = decode(encode(&d).as_bytes(), &Limits::DEFAULT).unwrap();
        let back = json_in_xml_decode(&back).unwrap().unwrap();
        // Keys exactly; floats to within serde_json's parsing error (without its
        // `float_roundtrip` feature it may read the shortest repr one ulp off, subnormals
        // included).
        let (Some(back), Some(value)) = (back.as_object(), value.as_object()) else {
            panic!("not objects: {back:?}");
        };
        prop_assert_eq!(back.keys().collect::<Vec<_>>(), value.keys().collect::<Vec<_>>());
        for (got, want) in back.values().zip(value.values()) {
            let (Some(got), Some(want)) = (got.as_array(), want.as_array()) else {
                panic!("not arrays: {got:?}");
            };
            prop_assert_eq!(got.len(), want.len());
            for (g, w) in got.iter().zip(want) {
                let (g, w) = (g.as_f64().unwrap(), w.as_f64().unwrap());
                let ulps = g.to_bits().abs_diff(w.to_bits());
                prop_assert!(g == w || ulps <= 2, "{:e} != {:e}", g, w);
            }
        }
    }

    #[test]
    fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        let _ = decode(&bytes, &Limits::SMALL);
    }

    #[test]
    fn decode_never_panics_on_near_xml(
        parts in proptest::collection::vec(prop_oneof![
            Just("<instance>"), Just("</instance>"), Just("<parameter id=\"a\">"),
            Just("<parameter>"), Just("</parameter>"), Just("<parameter id=\"a\"/>"),
            Just("&amp;"), Just("&#"), Just("x"), Just("<!--"), Just("-->"), Just("<![CDATA["),
            Just("]]>"), Just("<?xml version=\"1.0\"?>"), Just("<!DOCTYPE x>"), Just("\u{feff}"),
            Just("\r\n"), Just("é"), Just("<"), Just(">"), Just("\""),
        ], 0..24)) {
        let xml: String = parts.concat();
        let _ = decode(xml.as_bytes(), &Limits { max_depth: 4, max_elements: 8, ..Limits::SMALL });
    }
}

#[test]
fn module_path_is_public() {
    // The type alias and the constants are reachable under their documented paths.
    let _: instance_xml::InstanceDict = InstanceDict::new();
    assert_eq!(instance_xml::JSON_KEY, "_");
}
