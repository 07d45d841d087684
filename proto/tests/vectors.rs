//! The captured SLAP exchanges (`testdata/vectors/*.txt`): every marshalled form
//! field and response body decodes, and re-encodes to the very bytes the real slapproxy and
//! client sent, both from the decoded `Value` and through the typed slap objects. Also the
//! differential corpus made with the real Python `xml_marshaller` 1.0.3
//! (`tests/data/python_corpus.jsonl`), and the decoder's errors.

use std::path::{Path, PathBuf};

use slapos_proto::marshal::{self, SlapClass, Value};
use slapos_proto::pyrepr::float_repr;
use slapos_proto::slap::{
    Attr, Computer, ComputerPartition, SlapObject, SoftwareInstance, SoftwareRelease,
};
use slapos_proto::{DecodeError, Limits};

/// The repository's captured data (`testdata/`, its README says where each file came
/// from): the first ancestor of this crate holding it.
fn testdata() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .map(|dir| dir.join("testdata"))
        .find(|dir| dir.join("README.md").is_file())
        .expect("testdata/ (the captured SLAP exchanges) in an ancestor of this crate")
}

struct Exchange {
    name: String,
    request_body: Option<Vec<u8>>,
    response_body: Option<Vec<u8>>,
}

/// The `N` bytes that follow the line starting with `header` and announcing `(N bytes`.
fn raw_section(file: &[u8], header: &str) -> Option<Vec<u8>> {
    let start = find(file, header.as_bytes())?;
    let line_end = start + find(&file[start..], b"\n")?;
    let line = std::str::from_utf8(&file[start..line_end]).ok()?;
    let count = line.split('(').nth(1)?.split(' ').next()?;
    let n: usize = count.parse().ok()?;
    let body = file.get(line_end + 1..line_end + 1 + n)?;
    Some(body.to_vec())
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn load_exchanges() -> Vec<Exchange> {
    let dir = testdata().join("vectors");
    let entries = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot read the SLAP vectors in {} ({e})", dir.display()));
    let mut paths: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "txt"))
        .collect();
    paths.sort();
    paths
        .into_iter()
        .map(|path| {
            let file = std::fs::read(&path).expect("read vector");
            Exchange {
                name: path
                    .file_name()
                    .expect("name")
                    .to_string_lossy()
                    .into_owned(),
                request_body: raw_section(&file, "--- raw request body ("),
                response_body: raw_section(&file, "--- raw response body ("),
            }
        })
        .collect()
}

/// `application/x-www-form-urlencoded` fields, in order.
fn form_fields(body: &[u8]) -> Vec<(String, Vec<u8>)> {
    fn unquote(s: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(s.len());
        let mut i = 0;
        while i < s.len() {
            match s[i] {
                b'+' => out.push(b' '),
                b'%' if i + 2 < s.len() => {
                    let hex = std::str::from_utf8(&s[i + 1..i + 3]).expect("hex");
                    out.push(u8::from_str_radix(hex, 16).expect("percent escape"));
                    i += 2;
                }
                b => out.push(b),
            }
            i += 1;
        }
        out
    }
    body.split(|&b| b == b'&')
        .filter(|kv| !kv.is_empty())
        .map(|kv| {
            let mut parts = kv.splitn(2, |&b| b == b'=');
            let key = unquote(parts.next().unwrap_or_default());
            let value = unquote(parts.next().unwrap_or_default());
            (String::from_utf8(key).expect("utf-8 key"), value)
        })
        .collect()
}

/// Fields that always carry a marshalled value when present.
const MARSHAL_FIELDS: &[&str] = &[
    "partition_parameter_xml",
    "filter_xml",
    "shared_xml",
    "xml",
    "connection_xml",
];

fn assert_no_extra(value: &SlapObject, name: &str) {
    fn partition(p: &ComputerPartition, name: &str) {
        assert!(p.extra.is_empty(), "{name}: unmodelled {:?}", p.extra);
        if let Some(sr) = p.software_release_document.get() {
            release(sr, name);
        }
    }
    fn release(r: &SoftwareRelease, name: &str) {
        assert!(r.extra.is_empty(), "{name}: unmodelled {:?}", r.extra);
    }
    match value {
        SlapObject::Computer(c) => {
            assert!(c.extra.is_empty(), "{name}: unmodelled {:?}", c.extra);
            c.partitions().iter().for_each(|p| partition(p, name));
            c.software_releases().iter().for_each(|r| release(r, name));
        }
        SlapObject::ComputerPartition(p) => partition(p, name),
        SlapObject::SoftwareRelease(r) => release(r, name),
        SlapObject::SoftwareInstance(i) => {
            assert!(i.extra.is_empty(), "{name}: unmodelled {:?}", i.extra)
        }
    }
}

#[test]
fn every_captured_marshal_document_round_trips_byte_for_byte() {
    let exchanges = load_exchanges();
    let limits = Limits::default();
    let mut fields = 0;
    let mut known_fields = 0;
    let mut bodies = 0;
    let mut objects = 0;
    let mut per_class = std::collections::BTreeMap::new();

    for ex in &exchanges {
        if let Some(body) = &ex.request_body {
            for (key, value) in form_fields(body) {
                let is_marshal = value.starts_with(b"<marshal>");
                if MARSHAL_FIELDS.contains(&key.as_str()) {
                    assert!(is_marshal, "{}: field {key} is not marshalled", ex.name);
                    known_fields += 1;
                }
                if !is_marshal {
                    continue;
                }
                let decoded = marshal::decode(&value, &limits)
                    .unwrap_or_else(|e| panic!("{}: field {key}: {e}", ex.name));
                let again = marshal::encode(&decoded).expect("encode");
                assert_eq!(
                    again.as_bytes(),
                    &value[..],
                    "{}: field {key} re-encodes differently",
                    ex.name
                );
                fields += 1;
            }
        }
        let Some(body) = &ex.response_body else {
            continue;
        };
        if !body.starts_with(b"<marshal>") {
            continue;
        }
        let value =
            marshal::decode(body, &limits).unwrap_or_else(|e| panic!("{}: response: {e}", ex.name));
        let again = marshal::encode(&value).expect("encode");
        assert_eq!(
            again,
            String::from_utf8_lossy(body),
            "{}: response re-encodes differently",
            ex.name
        );
        bodies += 1;

        if let Value::Object(object) = &value {
            let typed = SlapObject::from_value(&value)
                .unwrap_or_else(|e| panic!("{}: typed decode: {e}", ex.name));
            assert_eq!(typed.class(), object.class);
            assert_no_extra(&typed, &ex.name);
            let typed_again = typed.encode().expect("encode typed");
            assert_eq!(
                typed_again,
                String::from_utf8_lossy(body),
                "{}: typed object re-encodes differently",
                ex.name
            );
            assert_eq!(SlapObject::decode(body, &limits).as_ref(), Ok(&typed));
            *per_class.entry(object.class.name()).or_insert(0) += 1;
            objects += 1;
        }
    }

    println!(
        "{} exchanges, {fields} marshalled request fields ({known_fields} of the known \
         names), {bodies} marshalled response bodies, {objects} slap objects: {per_class:?}",
        exchanges.len()
    );
    assert!(
        exchanges.len() >= 81,
        "only {} vector files",
        exchanges.len()
    );
    assert!(fields >= 117, "only {fields} marshalled request fields");
    assert!(
        known_fields >= 89,
        "only {known_fields} known marshalled fields"
    );
    assert!(bodies >= 36, "only {bodies} marshalled response bodies");
    assert!(objects >= 31, "only {objects} slap objects");
    assert!(per_class.get("Computer").copied().unwrap_or(0) >= 8);
    assert!(per_class.get("ComputerPartition").copied().unwrap_or(0) >= 3);
    assert!(per_class.get("SoftwareInstance").copied().unwrap_or(0) >= 20);
}

fn response(name_prefix: &str) -> Vec<u8> {
    load_exchanges()
        .into_iter()
        .find(|e| e.name.starts_with(name_prefix))
        .and_then(|e| e.response_body)
        .unwrap_or_else(|| panic!("no vector {name_prefix}"))
}

#[test]
fn typed_objects_carry_what_the_client_reads() {
    let limits = Limits::default();

    // v06: a free partition.
    let p = ComputerPartition::decode(&response("06-"), &limits).expect("v06");
    assert_eq!(
        (p.computer_id.as_str(), p.partition_id.as_str()),
        ("COMP-TEST", "slappart5")
    );
    assert_eq!(p.request_dict, None);
    assert_eq!(p.requested_state, Attr::Set("destroyed".into()));
    assert_eq!(p.need_modification, Attr::Set(0));
    assert_eq!(p.software_release_document, Attr::Null);
    assert_eq!(p.instance_guid, Attr::Set("COMP-TEST-slappart5".into()));
    assert!(p.parameter_dict.is_absent());

    // v15: a regular instance, parameters stringified and double-escaped on the wire.
    let i = SoftwareInstance::decode(&response("15-"), &limits).expect("v15");
    let params = i.parameter_dict.get().expect("parameters");
    assert_eq!(
        params.get("special"),
        Some(&Value::from("a<b & \"c\" > 'd'"))
    );
    assert_eq!(
        params.get("greeting"),
        Some(&Value::from("h\u{e9}llo w\u{f6}rld"))
    );
    assert_eq!(params.get("count"), Some(&Value::from("3")));
    assert_eq!(i.connection_xml, Attr::Null);
    assert_eq!(i.requested_state, Attr::Set("started".into()));
    assert_eq!(
        i.ip_list.get().and_then(|l| l.first()).cloned(),
        Some(("slaptap0".to_string(), "10.0.1.10".to_string()))
    );
    assert_eq!(i.slap_computer_partition_id, Attr::Set("slappart0".into()));

    // v26: connection_xml is the stored instance XML, a multi-line string.
    let i = SoftwareInstance::decode(&response("26-"), &limits).expect("v26");
    let xml = i.connection_xml.get().expect("connection_xml");
    assert!(xml.starts_with("<?xml version='1.0' encoding='utf-8'?>\n<instance>\n"));

    // v33: a shared instance: no guid, no state.
    let i = SoftwareInstance::decode(&response("33-"), &limits).expect("v33");
    assert!(i.instance_guid.is_absent() && i.requested_state.is_absent());
    assert!(i.connection_xml.is_absent());
    assert_eq!(i.slap_computer_partition_id, Attr::Set("slappart5".into()));

    // v35: the host partition lists its slaves in the parameter dict.
    let c = Computer::decode(&response("35-"), &limits).expect("v35");
    assert_eq!(c.partitions().len(), 6);
    assert_eq!(c.software_releases().len(), 3);
    assert!(c
        .software_releases()
        .iter()
        .all(|r| r.requested_state == Attr::Set("available".into())));
    let host = &c.partitions()[5];
    let slaves = host
        .parameter_dict
        .get()
        .and_then(|d| d.get("slave_instance_list"))
        .and_then(Value::as_list)
        .expect("slave_instance_list");
    assert_eq!(slaves.len(), 2);
    assert_eq!(
        slaves[0]
            .dict_get("slave_reference")
            .and_then(Value::as_str),
        Some("root-instance_my-shared")
    );
    let sr = host
        .software_release_document
        .get()
        .expect("software release");
    assert_eq!(
        sr.software_release,
        "https://example.com/software/frontend/software.cfg"
    );
    assert!(sr.requested_state.is_absent());

    // v40: the apache-frontend bypass answers a fake ComputerPartition.
    let p = ComputerPartition::decode(&response("40-"), &limits).expect("v40");
    assert_eq!(p.computer_id, "");
    assert!(p.requested_state.is_absent() && p.instance_guid.is_absent());
    assert_eq!(p.slap_computer_id, Attr::Set(String::new()));
    assert_eq!(
        p.connection_dict.get().and_then(|d| d.get("secure_access")),
        Some(&Value::from("http://[2001:db8::10]:8080/app"))
    );

    // A typed object refuses the wrong class.
    assert!(matches!(
        SoftwareInstance::decode(&response("40-"), &limits),
        Err(DecodeError::Shape {
            what: "SoftwareInstance",
            ..
        })
    ));
}

#[test]
fn typed_objects_built_in_rust_encode_like_slapproxy() {
    // v06, built field by field.
    let mut p = ComputerPartition::new("COMP-TEST", "slappart5");
    p.requested_state = Attr::Set("destroyed".into());
    p.need_modification = Attr::Set(0);
    p.software_release_document = Attr::Null;
    p.instance_guid = Attr::Set("COMP-TEST-slappart5".into());
    assert_eq!(p.encode().expect("encode").as_bytes(), &response("06-")[..]);

    // v01, the empty computer.
    let c = Computer::new("COMP-TEST");
    assert_eq!(c.encode().expect("encode").as_bytes(), &response("01-")[..]);
}

/// Compares a decoded value with what Python's `loads()` returned for the same document,
/// as tagged by `tests/data/gen_python_corpus.py`.
fn same_as_python(v: &Value, py: &serde_json::Value) -> Result<(), String> {
    use serde_json::Value as J;
    let tag = |name: &str| py.get(name);
    let seq = |items: &[Value], py_items: Option<&J>| -> Result<(), String> {
        let py_items = py_items
            .and_then(J::as_array)
            .ok_or_else(|| format!("{v:?} vs {py}"))?;
        if items.len() != py_items.len() {
            return Err(format!("length of {v:?} vs {py}"));
        }
        items
            .iter()
            .zip(py_items)
            .try_for_each(|(a, b)| same_as_python(a, b))
    };
    match v {
        Value::None if py.is_null() => Ok(()),
        Value::Str(s) if py.as_str() == Some(s) => Ok(()),
        Value::Bool(b) if tag("bool") == Some(&J::Bool(*b)) => Ok(()),
        Value::Int(i) if tag("int").and_then(J::as_str) == Some(i.to_string().as_str()) => Ok(()),
        Value::Long(d) if tag("int").and_then(J::as_str) == Some(d.as_str()) => Ok(()),
        Value::Float(f) if tag("float").and_then(J::as_str) == Some(float_repr(*f).as_str()) => {
            Ok(())
        }
        Value::Tuple(items) if tag("tuple").is_some() => seq(items, tag("tuple")),
        Value::List(items) if tag("list").is_some() => seq(items, tag("list")),
        Value::Dict(entries) if tag("dict").is_some() => {
            let py_entries = tag("dict").and_then(J::as_array).ok_or("dict")?;
            if entries.len() != py_entries.len() {
                return Err(format!("length of {v:?} vs {py}"));
            }
            for ((k, x), pair) in entries.iter().zip(py_entries) {
                same_as_python(k, &pair[0])?;
                same_as_python(x, &pair[1])?;
            }
            Ok(())
        }
        Value::Object(o) if tag("object").and_then(J::as_str) == Some(o.class.name()) => {
            // Python's __dict__ also holds what the constructor set; every attribute in the
            // document must be there with the same value.
            let attrs = tag("attrs").ok_or("attrs")?;
            o.attrs.iter().try_for_each(|(k, x)| {
                let py_x = attrs
                    .get(k)
                    .ok_or_else(|| format!("attribute {k} not in {py}"))?;
                same_as_python(x, py_x)
            })
        }
        _ => Err(format!("{v:?} vs Python {py}")),
    }
}

/// One line per document, `{"doc": "<marshal>...</marshal>", "py": <what loads() gave>}`,
/// written by `tests/data/gen_python_corpus.py` with the real `xml_marshaller` 1.0.3 and
/// lxml: every document decodes to what Python decodes, and re-encodes byte for byte.
#[test]
fn python_marshaller_corpus_decodes_like_python_and_round_trips() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/python_corpus.jsonl");
    let text = std::fs::read_to_string(&path).expect("python corpus");
    let mut count = 0;
    let mut objects = 0;
    let mut mixed_keys = 0;
    for (n, line) in text.lines().enumerate() {
        let entry: serde_json::Value = serde_json::from_str(line).expect("json line");
        let doc = entry["doc"].as_str().expect("doc");
        let value = marshal::decode(doc.as_bytes(), &Limits::default())
            .unwrap_or_else(|e| panic!("corpus line {}: {e}\n{doc}", n + 1));
        if let Err(diff) = same_as_python(&value, &entry["py"]) {
            panic!(
                "corpus line {}: decoded differently from Python: {diff}",
                n + 1
            );
        }
        let again = marshal::encode(&value).expect("encode");
        assert_eq!(again, doc, "corpus line {} re-encodes differently", n + 1);
        if doc.contains("<object") {
            objects += 1;
        }
        if let Value::Dict(entries) = &value {
            if entries.iter().any(|(k, _)| !matches!(k, Value::Str(_))) {
                mixed_keys += 1;
            }
        }
        count += 1;
    }
    assert!(count >= 600, "only {count} corpus documents");
    assert!(
        objects >= 100,
        "only {objects} corpus documents with objects"
    );
    assert!(
        mixed_keys >= 100,
        "only {mixed_keys} top-level dicts with mixed keys"
    );
}

// ---------------------------------------------------------------------------------------
// What the decoder accepts beyond what Python writes.

fn decode(doc: &str) -> Result<Value, DecodeError> {
    marshal::decode(doc.as_bytes(), &Limits::default())
}

#[test]
fn accepts_the_namespaced_form_and_input_only_elements() {
    let ns = "<m:marshal xmlns:m=\"http://www.erp5.org/namespaces/marshaller\">\
              <m:list m:id=\"i2\"><m:string>a</m:string><m:unicode>b</m:unicode><m:string/>\
              <m:long>12</m:long><m:int> 7 </m:int><m:none/></m:list></m:marshal>";
    assert_eq!(
        decode(ns),
        Ok(Value::List(vec![
            "a".into(),
            "b".into(),
            "".into(),
            Value::Int(12),
            Value::Int(7),
            Value::None
        ]))
    );
    // Default namespace, declaration, comments and white space between elements.
    let doc = "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<!-- c --><marshal \
               xmlns=\"http://www.erp5.org/namespaces/marshaller\">\n  <tuple>\n    \
               <bool>1</bool>\n  </tuple>\n</marshal>\n";
    assert_eq!(decode(doc), Ok(Value::Tuple(vec![Value::Bool(true)])));
    // Big integers, floats.
    assert_eq!(
        decode("<marshal><long>123456789012345678901234567890</long></marshal>"),
        Ok(Value::Long("123456789012345678901234567890".into()))
    );
    assert_eq!(
        decode("<marshal><float>-inf</float></marshal>"),
        Ok(Value::Float(f64::NEG_INFINITY))
    );
    // Single-escaped text is tolerated; double-escaped is the wire form.
    assert_eq!(
        decode("<marshal><string>a&lt;b &amp; c</string></marshal>"),
        Ok("a<b & c".into())
    );
    assert_eq!(
        decode("<marshal><string>&amp;amp;lt;</string></marshal>"),
        Ok("&lt;".into())
    );
    // Repeated keys: first position, last value.
    assert_eq!(
        decode(
            "<marshal><dictionary id=\"i2\"><string>b</string><int>1</int><string>a</string>\
             <int>2</int><string>b</string><int>3</int></dictionary></marshal>"
        ),
        Ok(Value::Dict(vec![
            ("b".into(), Value::Int(3)),
            ("a".into(), Value::Int(2))
        ]))
    );
}

#[test]
fn resolves_references_to_copies() {
    let doc = "<marshal><list id=\"i2\"><dictionary id=\"i3\"><string>k</string>\
               <list id=\"i4\"><int>1</int></list></dictionary><reference id=\"i3\"/>\
               <reference id=\"i4\"/></list></marshal>";
    let inner = Value::List(vec![Value::Int(1)]);
    let dict = Value::Dict(vec![("k".into(), inner.clone())]);
    assert_eq!(
        decode(doc),
        Ok(Value::List(vec![dict.clone(), dict, inner]))
    );

    // A reference to an enclosing value would be a cycle.
    let cycle = "<marshal><list id=\"i2\"><reference id=\"i2\"/></list></marshal>";
    assert!(matches!(
        decode(cycle),
        Err(DecodeError::Invalid {
            what: "reference",
            offset: 23,
            ..
        })
    ));
    let unknown = "<marshal><list id=\"i2\"><reference id=\"i9\"/></list></marshal>";
    assert!(matches!(
        decode(unknown),
        Err(DecodeError::Invalid {
            what: "reference",
            ..
        })
    ));
}

#[test]
fn refuses_a_reference_bomb() {
    // Each level holds two references to the level below: 2^30 elements once expanded.
    let mut doc = String::from("<marshal><list id=\"i2\"><list id=\"i3\"><int>1</int></list>");
    for level in 4..34 {
        doc.push_str(&format!(
            "<list id=\"i{level}\"><reference id=\"i{}\"/><reference id=\"i{}\"/></list>",
            level - 1,
            level - 1
        ));
    }
    doc.push_str("</list></marshal>");
    let err = decode(&doc).expect_err("bomb");
    assert!(
        matches!(
            err,
            DecodeError::TooManyElements {
                limit: 2_000_000,
                ..
            }
        ),
        "{err}"
    );
    // Depth grows through references too: a 40-level chain referenced 30 levels down.
    let mut deep = String::from("<marshal><list id=\"i2\">");
    for i in 0..40 {
        deep.push_str(&format!("<list id=\"d{i}\">"));
    }
    deep.push_str(&"</list>".repeat(40));
    deep.push_str(&"<list>".repeat(30));
    deep.push_str("<reference id=\"d0\"/>");
    deep.push_str(&"</list>".repeat(30));
    deep.push_str("</list></marshal>");
    assert!(matches!(
        decode(&deep),
        Err(DecodeError::TooDeep {
            limit: 64,
            offset: _
        })
    ));
}

// ---------------------------------------------------------------------------------------
// Errors: each names what is wrong and where.

fn error(doc: &str, limits: &Limits) -> String {
    marshal::decode(doc.as_bytes(), limits)
        .expect_err("must be refused")
        .to_string()
}

#[test]
fn refuses_a_document_over_max_bytes_before_parsing() {
    let limits = Limits {
        max_bytes: 10,
        ..Limits::default()
    };
    // Not even well-formed: the size is checked first.
    assert_eq!(
        error("<marshal><<<<<<<", &limits),
        "document is 16 bytes, over the limit of 10 bytes"
    );
}

#[test]
fn refuses_a_document_nested_too_deep() {
    let limits = Limits {
        max_depth: 3,
        ..Limits::default()
    };
    assert_eq!(
        error(
            "<marshal><tuple><tuple><none/></tuple></tuple></marshal>",
            &limits
        ),
        "elements nested deeper than 3 levels at byte 23"
    );
}

#[test]
fn refuses_too_many_elements() {
    let limits = Limits {
        max_elements: 4,
        ..Limits::default()
    };
    assert_eq!(
        error(
            "<marshal><tuple><none/><none/><none/></tuple></marshal>",
            &limits
        ),
        "more than 4 elements in the document (at byte 30)"
    );
}

#[test]
fn refuses_malformed_xml_with_the_offset() {
    let limits = Limits::default();
    assert_eq!(
        error("<marshal><string>a</strin></marshal>", &limits),
        "malformed XML at byte 18: </strin> does not close <string> (opened at byte 9)"
    );
    assert_eq!(
        error("<marshal><string>a &bogus; b</string></marshal>", &limits),
        "malformed XML at byte 19: undefined entity `&bogus;`"
    );
    assert_eq!(
        error("<marshal><string>x</string>", &limits),
        "malformed XML at byte 27: the document ends inside <marshal> (opened at byte 0)"
    );
    assert_eq!(
        error("<marshal><string>\u{1}</string></marshal>", &limits),
        "malformed XML at byte 17: character U+0001 is not allowed in XML"
    );
    assert_eq!(
        error("<m:marshal><none/></m:marshal>", &limits),
        "malformed XML at byte 0: unbound namespace prefix `m`"
    );
    assert!(error(
        "<!DOCTYPE marshal [<!ENTITY e \"x\">]><marshal><none/></marshal>",
        &limits
    )
    .starts_with("invalid document at byte 0: DOCTYPE"));
    assert_eq!(
        error("<marshal><none/></marshal>junk", &limits),
        "malformed XML at byte 26: text outside the root element"
    );
}

#[test]
fn refuses_unknown_classes_and_modules() {
    let limits = Limits::default();
    assert_eq!(
        error(
            "<marshal><object id=\"i2\" module=\"slapos.slap.slap\" class=\"Evil\">\
             <tuple/><dictionary id=\"i3\"/></object></marshal>",
            &limits
        ),
        "invalid object at byte 9: class `Evil` is not one of Computer, ComputerPartition, \
         SoftwareRelease, SoftwareInstance"
    );
    assert_eq!(
        error(
            "<marshal><object id=\"i2\" module=\"os\" class=\"Computer\">\
             <tuple/><dictionary id=\"i3\"/></object></marshal>",
            &limits
        ),
        "invalid object at byte 9: module `os` is not slapos.slap.slap"
    );
    assert_eq!(
        error("<marshal><set id=\"i2\"/></marshal>", &limits),
        "invalid value at byte 9: <set> is not supported (SLAP never uses it)"
    );
    assert_eq!(
        error("<marshal><blob/></marshal>", &limits),
        "unexpected element <blob> at byte 9, expected a marshalled value"
    );
}

#[test]
fn refuses_bad_numbers_and_shapes() {
    let limits = Limits::default();
    assert_eq!(
        error(
            "<marshal><list id=\"i2\"><int>12x</int></list></marshal>",
            &limits
        ),
        "invalid int at byte 23: `12x` is not a decimal integer"
    );
    assert_eq!(
        error("<marshal><float>1.2.3</float></marshal>", &limits),
        "invalid float at byte 9: `1.2.3` is not a number"
    );
    assert_eq!(
        error("<marshal><bool>yes</bool></marshal>", &limits),
        "invalid bool at byte 9: `yes` is not a decimal integer"
    );
    assert_eq!(
        error(
            "<marshal><dictionary id=\"i2\"><string>k</string></dictionary></marshal>",
            &limits
        ),
        "invalid dictionary at byte 9: an odd number of children (1), not alternating keys and values"
    );
    assert_eq!(
        error(
            "<marshal><dictionary id=\"i2\"><list id=\"i3\"/><none/></dictionary></marshal>",
            &limits
        ),
        "invalid dictionary at byte 9: unhashable key of type list"
    );
    assert_eq!(
        error("<marshal><none/><none/></marshal>", &limits),
        "unexpected <none> at byte 16, expected the end of <marshal> (it holds one value)"
    );
    assert_eq!(
        error("<marshal></marshal>", &limits),
        "unexpected </marshal> at byte 9, expected a value inside <marshal>"
    );
    assert_eq!(
        error("<string>x</string>", &limits),
        "unexpected <string> at byte 0, expected the root element <marshal>"
    );
    assert_eq!(
        error(
            "<marshal><object id=\"i2\" module=\"slapos.slap.slap\" class=\"Computer\">\
             <tuple/></object></marshal>",
            &limits
        ),
        "invalid object at byte 9: an <object> holds a <tuple> of constructor arguments \
         and a <dictionary> of attributes"
    );
}

#[test]
fn typed_decode_names_the_class_and_attribute() {
    let doc = "<marshal><object id=\"i2\" module=\"slapos.slap.slap\" class=\"Computer\">\
               <tuple><string>C</string></tuple><dictionary id=\"i3\">\
               <string>_computer_partition_list</string><list id=\"i4\"><int>1</int></list>\
               </dictionary></object></marshal>";
    let err = Computer::decode(doc.as_bytes(), &Limits::default()).expect_err("refused");
    assert_eq!(
        err.to_string(),
        "invalid Computer: attribute `_computer_partition_list`: item 0: invalid \
         ComputerPartition: expected a ComputerPartition object, found int"
    );
    let value = marshal::decode(doc.as_bytes(), &Limits::default()).expect("decodes");
    assert_eq!(
        value.as_object().map(|o| o.class),
        Some(SlapClass::Computer)
    );
}
