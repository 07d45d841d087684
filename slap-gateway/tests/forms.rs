//! Parsing of every endpoint's inputs: required fields, marshalled fields, the
//! X-SlapPartition header, the computer dictionary of `loadComputerConfigurationFromXML`,
//! and the errors (all 400, each naming the field).

use proptest::prelude::*;
use slap_gateway::slap::forms::{
    self, parse_partition_header, FormError, Identity, PartitionIdentity, ProductLookup, Query,
    SlapCall,
};
use slap_gateway::{Endpoint, Method, SlapContext};
use slapos_domain::Op;
use slapos_domain::{ParamValue, Requester, SoftwareReport, StatusKind};
use slapos_proto::marshal::{self, SlapClass, Value};
use slapos_proto::{DecodeError, Limits};

const SR: &str = "https://example.com/software/demo/software.cfg";
const HEADER: &str = "X-SlapPartition computer_id=COMP-TEST, computer_partition_id=slappart0";

/// The repository's captured data (`testdata/`, its README says where each file came
/// from): the first ancestor of this crate holding it.
fn testdata() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .map(|dir| dir.join("testdata"))
        .find(|dir| dir.join("README.md").is_file())
        .expect("testdata/ (the captured SLAP exchanges) in an ancestor of this crate")
}

fn ctx() -> SlapContext {
    SlapContext::proxy(Some("COMP-TEST"))
}

fn m(value: &Value) -> String {
    marshal::encode(value).expect("encodes")
}

fn fields(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn parse(
    endpoint: Endpoint,
    pairs: &[(&str, &str)],
    auth: Option<&str>,
) -> Result<SlapCall, FormError> {
    forms::parse(&ctx(), endpoint, &fields(pairs), auth)
}

fn op(endpoint: Endpoint, pairs: &[(&str, &str)], auth: Option<&str>) -> (Op, Identity) {
    match parse(endpoint, pairs, auth) {
        Ok(SlapCall::Write(w)) => {
            assert_eq!(w.endpoint, endpoint);
            (w.op, w.identity)
        }
        other => panic!("{endpoint}: expected a write, got {other:?}"),
    }
}

fn query(endpoint: Endpoint, pairs: &[(&str, &str)]) -> Query {
    match parse(endpoint, pairs, None) {
        Ok(SlapCall::Query(q)) => q,
        other => panic!("{endpoint}: expected a query, got {other:?}"),
    }
}

fn request_fields(extra: &[(&'static str, String)]) -> Vec<(String, String)> {
    let mut base = vec![
        ("software_release".to_string(), SR.to_string()),
        ("software_type".to_string(), "default".to_string()),
        ("partition_reference".to_string(), "root".to_string()),
        ("state".to_string(), m(&Value::None)),
    ];
    for (k, v) in extra {
        base.retain(|(kk, _)| kk != k);
        base.push((k.to_string(), v.clone()));
    }
    base
}

fn request(
    extra: &[(&'static str, String)],
    auth: Option<&str>,
) -> Result<(Op, Identity), FormError> {
    match forms::parse(
        &ctx(),
        Endpoint::RequestComputerPartition,
        &request_fields(extra),
        auth,
    )? {
        SlapCall::Write(w) => Ok((w.op, w.identity)),
        other => panic!("expected a write, got {other:?}"),
    }
}

fn computer_dict(partitions: Vec<Value>) -> Value {
    Value::str_dict([
        ("reference", Value::from("COMP-1")),
        ("address", Value::from("10.0.0.1")),
        ("netmask", Value::from("255.255.255.0")),
        ("partition_list", Value::List(partitions)),
    ])
}

fn partition_dict(i: usize, tap: Value, addresses: Vec<Value>) -> Value {
    Value::str_dict([
        ("reference", Value::from(format!("slappart{i}"))),
        ("tap", tap),
        ("address_list", Value::List(addresses)),
    ])
}

fn address(addr: Value) -> Value {
    Value::str_dict([("addr", addr), ("netmask", Value::from("255.255.255.0"))])
}

fn tap(name: &str) -> Value {
    Value::str_dict([("name", name)])
}

// ----- every endpoint and its required fields ------------------------------------------

/// For each endpoint with inputs: a complete, valid set of fields and which are optional.
/// An endpoint, a complete set of its fields, and the names of the optional ones.
type Inputs = (Endpoint, Vec<(&'static str, String)>, Vec<&'static str>);

fn complete_inputs() -> Vec<Inputs> {
    let journal_path = testdata().join("examples/computer-journal-from-slapgrid.xml");
    let journal = std::fs::read_to_string(&journal_path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", journal_path.display()));
    let c = |v: &str| v.to_string();
    let mut out = vec![
        (
            Endpoint::GetFullComputerInformation,
            vec![("computer_id", c("COMP-1"))],
            vec![],
        ),
        (
            Endpoint::GetComputerInformation,
            vec![("computer_id", c("COMP-1"))],
            vec![],
        ),
        (
            Endpoint::LoadComputerConfigurationFromXml,
            vec![("xml", m(&computer_dict(vec![])))],
            vec![],
        ),
        (
            Endpoint::SupplySupply,
            vec![
                ("url", c(SR)),
                ("computer_id", c("COMP-1")),
                ("state", c("available")),
            ],
            vec![],
        ),
        (
            Endpoint::RequestComputerPartition,
            vec![
                ("software_release", c(SR)),
                ("software_type", c("default")),
                ("partition_reference", c("root")),
                ("state", m(&Value::None)),
                ("shared_xml", m(&Value::Bool(false))),
                ("partition_parameter_xml", m(&Value::Dict(vec![]))),
                ("filter_xml", m(&Value::Dict(vec![]))),
            ],
            vec!["shared_xml", "partition_parameter_xml", "filter_xml"],
        ),
        (
            Endpoint::RegisterComputerPartition,
            vec![
                ("computer_reference", c("COMP-1")),
                ("computer_partition_reference", c("slappart0")),
            ],
            vec![],
        ),
        (
            Endpoint::SetComputerPartitionConnectionXml,
            vec![
                ("computer_id", c("COMP-1")),
                ("computer_partition_id", c("slappart0")),
                ("connection_xml", m(&Value::str_dict([("url", "http://x")]))),
                ("slave_reference", c("None")),
            ],
            vec!["slave_reference"],
        ),
        (
            Endpoint::SoftwareInstanceBang,
            vec![
                ("computer_id", c("COMP-1")),
                ("computer_partition_id", c("slappart0")),
                ("message", c("again")),
            ],
            vec![],
        ),
        (
            Endpoint::SoftwareInstanceRename,
            vec![
                ("computer_id", c("COMP-1")),
                ("computer_partition_id", c("slappart0")),
                ("new_name", c("renamed")),
                ("slave_reference", c("None")),
            ],
            vec!["slave_reference"],
        ),
        (
            Endpoint::StartedComputerPartition,
            vec![
                ("computer_id", c("COMP-1")),
                ("computer_partition_id", c("slappart0")),
            ],
            vec![],
        ),
        (
            Endpoint::StoppedComputerPartition,
            vec![
                ("computer_id", c("COMP-1")),
                ("computer_partition_id", c("slappart0")),
            ],
            vec![],
        ),
        (
            Endpoint::DestroyedComputerPartition,
            vec![
                ("computer_id", c("COMP-1")),
                ("computer_partition_id", c("slappart0")),
            ],
            vec![],
        ),
        (
            Endpoint::SoftwareInstanceError,
            vec![
                ("computer_id", c("COMP-1")),
                ("computer_partition_id", c("slappart0")),
                ("error_log", c("boom")),
            ],
            vec![],
        ),
        (
            Endpoint::BuildingSoftwareRelease,
            vec![("url", c(SR)), ("computer_id", c("COMP-1"))],
            vec![],
        ),
        (
            Endpoint::AvailableSoftwareRelease,
            vec![("url", c(SR)), ("computer_id", c("COMP-1"))],
            vec![],
        ),
        (
            Endpoint::SoftwareReleaseError,
            vec![
                ("url", c(SR)),
                ("computer_id", c("COMP-1")),
                ("error_log", c("boom")),
            ],
            vec![],
        ),
        (
            Endpoint::DestroyedSoftwareRelease,
            vec![("url", c(SR)), ("computer_id", c("COMP-1"))],
            vec![],
        ),
        (
            Endpoint::ComputerBang,
            vec![("computer_id", c("COMP-1")), ("message", c("reboot"))],
            vec![],
        ),
        (
            Endpoint::GetComputerPartitionCertificate,
            vec![
                ("computer_id", c("COMP-1")),
                ("computer_partition_id", c("slappart0")),
            ],
            vec![],
        ),
        (
            Endpoint::GetComputerPartitionStatus,
            vec![
                ("computer_id", c("COMP-1")),
                ("computer_partition_id", c("slappart0")),
            ],
            vec![],
        ),
        (
            Endpoint::GetHostingSubscriptionIpList,
            vec![
                ("computer_id", c("COMP-1")),
                ("computer_partition_id", c("slappart0")),
            ],
            vec![],
        ),
        (
            Endpoint::GetComputerStatus,
            vec![("computer_id", c("COMP-1"))],
            vec![],
        ),
        (
            Endpoint::GenerateComputerCertificate,
            vec![("computer_id", c("COMP-1"))],
            vec![],
        ),
        (
            Endpoint::RevokeComputerCertificate,
            vec![("computer_id", c("COMP-1"))],
            vec![],
        ),
        (
            Endpoint::RequestComputer,
            vec![("computer_title", c("node"))],
            vec![],
        ),
        (
            Endpoint::UpdateComputerPartitionRelatedInstanceList,
            vec![
                ("computer_id", c("COMP-1")),
                ("computer_partition_id", c("slappart0")),
                (
                    "instance_reference_xml",
                    m(&Value::List(vec![Value::from("SOFTINST-1")])),
                ),
            ],
            vec![],
        ),
        (Endpoint::GetRunId, vec![], vec![]),
        (Endpoint::GetHateoasUrl, vec![], vec![]),
    ];
    out.push((
        Endpoint::UseComputer,
        vec![("computer_id", c("COMP-1")), ("use_string", journal)],
        vec![],
    ));
    out
}

#[test]
fn every_endpoint_parses_its_complete_inputs() {
    let inputs = complete_inputs();
    for (endpoint, pairs, _) in &inputs {
        let pairs: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect();
        let call = forms::parse(&ctx(), *endpoint, &pairs, None);
        assert!(call.is_ok(), "{endpoint}: {call:?}");
    }
    // Every endpoint but getSoftwareReleaseListFromSoftwareProduct (tested below).
    let covered: Vec<Endpoint> = inputs.iter().map(|(e, _, _)| *e).collect();
    for e in Endpoint::ALL {
        if *e != Endpoint::GetSoftwareReleaseListFromSoftwareProduct {
            assert!(covered.contains(e), "{e} not covered");
        }
    }
}

#[test]
fn a_missing_required_field_is_a_400_naming_it() {
    for (endpoint, pairs, optional) in complete_inputs() {
        for (name, _) in &pairs {
            let without: Vec<(String, String)> = pairs
                .iter()
                .filter(|(k, _)| k != name)
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect();
            let result = forms::parse(&ctx(), endpoint, &without, None);
            if optional.contains(name) {
                assert!(
                    result.is_ok(),
                    "{endpoint} without optional {name}: {result:?}"
                );
                continue;
            }
            let err = result.expect_err(&format!("{endpoint} without {name}"));
            assert_eq!(err, FormError::MissingField { field: name }, "{endpoint}");
            assert_eq!(err.status(), 400);
            let response = err.to_response();
            assert_eq!(response.status, 400);
            assert_eq!(
                response.body_text(),
                format!("missing required field '{name}'")
            );
        }
    }
}

#[test]
fn endpoints_by_path_and_method() {
    assert_eq!(
        Endpoint::from_path("/requestComputerPartition"),
        Some(Endpoint::RequestComputerPartition)
    );
    assert_eq!(
        Endpoint::from_path("/slap/prefix/getFullComputerInformation?computer_id=x"),
        Some(Endpoint::GetFullComputerInformation)
    );
    assert_eq!(
        Endpoint::from_path("loadComputerConfigurationFromXML/"),
        Some(Endpoint::LoadComputerConfigurationFromXml)
    );
    assert_eq!(Endpoint::from_path("/requestcomputerpartition"), None);
    assert_eq!(Endpoint::from_path("/"), None);
    assert_eq!(Endpoint::RegisterComputerPartition.method(), Method::Get);
    assert_eq!(Endpoint::SoftwareInstanceBang.method(), Method::Post);
    assert_eq!(Endpoint::ALL.len(), 30);
    for e in Endpoint::ALL {
        assert_eq!(Endpoint::from_path(&format!("/{}", e.name())), Some(*e));
    }
}

// ----- marshalled fields -----------------------------------------------------------------

#[test]
fn bad_xml_is_a_400_with_the_decoders_message_and_position() {
    let err = request(
        &[(
            "partition_parameter_xml",
            "<marshal><dictionary id=\"i2\"><string>a</string>".to_string(),
        )],
        None,
    )
    .unwrap_err();
    let FormError::Marshal { field, source } = &err else {
        panic!("{err:?}");
    };
    assert_eq!(*field, "partition_parameter_xml");
    let message = err.to_string();
    assert!(message.contains("partition_parameter_xml"), "{message}");
    assert!(message.contains(&source.to_string()), "{message}");
    assert!(message.contains("byte"), "the position is given: {message}");
    assert_eq!(err.to_response().status, 400);

    // Not XML at all.
    let err = request(&[("state", "started".to_string())], None).unwrap_err();
    assert!(
        matches!(err, FormError::Marshal { field: "state", .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("at byte"), "{err}");
}

#[test]
fn oversized_fields_are_refused_naming_them() {
    // A marshalled field beyond its limits: the decoder's TooLarge.
    let mut small = ctx();
    small.limits.parameters = Limits {
        max_bytes: 64,
        max_depth: 8,
        max_elements: 100,
        max_expanded_bytes: 128,
    };
    let big = Value::str_dict([("k", "x".repeat(200))]);
    let err = forms::parse(
        &small,
        Endpoint::RequestComputerPartition,
        &request_fields(&[("partition_parameter_xml", m(&big))]),
        None,
    )
    .unwrap_err();
    match &err {
        FormError::Marshal {
            field: "partition_parameter_xml",
            source: DecodeError::TooLarge { limit: 64, .. },
        } => {}
        other => panic!("{other:?}"),
    }
    assert!(
        err.to_string().contains("over the limit of 64 bytes"),
        "{err}"
    );

    // Too deep.
    let mut deep = Value::None;
    for _ in 0..20 {
        deep = Value::List(vec![deep]);
    }
    let err = forms::parse(
        &small,
        Endpoint::RequestComputerPartition,
        &request_fields(&[("state", m(&deep))]),
        None,
    )
    .unwrap_err();
    assert!(
        matches!(err, FormError::Marshal { field: "state", .. }),
        "{err:?}"
    );

    // A plain field beyond text_max_bytes.
    let mut tiny = ctx();
    tiny.limits.text_max_bytes = 16;
    let err = forms::parse(
        &tiny,
        Endpoint::SoftwareInstanceError,
        &fields(&[
            ("computer_id", "COMP-1"),
            ("computer_partition_id", "slappart0"),
            ("error_log", &"e".repeat(17)),
        ]),
        None,
    )
    .unwrap_err();
    assert_eq!(
        err,
        FormError::TooLarge {
            field: "error_log",
            size: 17,
            limit: 16
        }
    );
    assert_eq!(
        err.to_string(),
        "field 'error_log' is 17 bytes, over the limit of 16 bytes"
    );
    assert_eq!(err.to_response().status, 400);
}

#[test]
fn request_fields_become_a_request_op() {
    let params = Value::str_dict([
        ("count", Value::Int(3)),
        ("flag", Value::Bool(true)),
        ("ratio", Value::Float(2.5)),
        ("big", Value::Long("123456789012345678901234567890".into())),
        ("none", Value::None),
        (
            "nested",
            Value::List(vec![
                Value::Tuple(vec![Value::from("a"), Value::Int(1)]),
                Value::str_dict([("k", "v")]),
            ]),
        ),
        ("text", Value::from("h\u{e9}llo & <b>")),
    ]);
    let sla = Value::str_dict([
        ("computer_guid", Value::from("COMP-1")),
        ("retention_delay", Value::Float(7.0)),
        ("ignored", Value::None),
    ]);
    let (op, identity) = request(
        &[
            ("partition_parameter_xml", m(&params)),
            ("filter_xml", m(&sla)),
            ("state", m(&Value::from("stopped"))),
            ("shared_xml", m(&Value::Bool(true))),
        ],
        None,
    )
    .unwrap();
    assert_eq!(identity, Identity::Person);
    let Op::RequestInstance {
        requester,
        title,
        software_release,
        software_type,
        state,
        shared,
        parameters,
        sla,
    } = op
    else {
        panic!("{op:?}");
    };
    assert_eq!(requester, Requester::Person("user".into()));
    assert_eq!(title, "root");
    assert_eq!(software_release, SR);
    assert_eq!(software_type, "default");
    assert_eq!(state.as_deref(), Some("stopped"));
    assert!(shared);
    assert_eq!(parameters["count"], ParamValue::Int(3));
    assert_eq!(parameters["flag"], ParamValue::Bool(true));
    assert_eq!(parameters["ratio"], ParamValue::Float(2.5));
    assert_eq!(
        parameters["big"],
        ParamValue::Long("123456789012345678901234567890".into())
    );
    assert_eq!(parameters["none"], ParamValue::None);
    assert_eq!(
        parameters["text"],
        ParamValue::Str("h\u{e9}llo & <b>".into())
    );
    assert_eq!(parameters["nested"].py_repr(), "[('a', 1), {'k': 'v'}]");
    assert_eq!(sla.get("computer_guid").map(String::as_str), Some("COMP-1"));
    assert_eq!(sla.get("retention_delay").map(String::as_str), Some("7.0"));
    assert!(
        !sla.contains_key("ignored"),
        "a None SLA value is no condition"
    );

    // Round trip through the renderer's conversion.
    for (k, v) in &parameters {
        let back = forms::param_value("p", k, &forms::param_to_value(v)).unwrap();
        assert_eq!(&back, v);
    }
}

#[test]
fn wrong_shapes_of_marshalled_request_fields() {
    let err = request(&[("state", m(&Value::Int(1)))], None).unwrap_err();
    assert_eq!(
        err.to_string(),
        "field 'state': expected str or None, got int"
    );
    let err = request(&[("shared_xml", m(&Value::from("yes")))], None).unwrap_err();
    assert_eq!(
        err.to_string(),
        "field 'shared_xml': expected bool, got str"
    );
    let err = request(
        &[("partition_parameter_xml", m(&Value::List(vec![])))],
        None,
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "field 'partition_parameter_xml': expected a dict, got list"
    );
    let non_string_key = Value::Dict(vec![(Value::Int(1), Value::from("x"))]);
    let err = request(&[("filter_xml", m(&non_string_key))], None).unwrap_err();
    assert_eq!(
        err.to_string(),
        "field 'filter_xml': dictionary keys must be strings, found a int key"
    );
    let object = Value::str_dict([(
        "inner",
        Value::List(vec![Value::object(
            SlapClass::SoftwareRelease,
            vec![],
            vec![],
        )]),
    )]);
    let err = request(&[("partition_parameter_xml", m(&object))], None).unwrap_err();
    assert_eq!(
        err.to_string(),
        "field 'partition_parameter_xml': inner[0]: a SoftwareRelease object cannot be a parameter"
    );
    // A float the master's JSON could not carry (Python's float('nan'), float('inf')).
    for x in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
        let nan = Value::str_dict([("ratio", Value::List(vec![Value::Float(x)]))]);
        let err = request(&[("partition_parameter_xml", m(&nan))], None).unwrap_err();
        assert_eq!(
            err.to_string(),
            "field 'partition_parameter_xml': ratio[0]: a parameter cannot be NaN or infinite"
        );
    }
    // shared_xml: None and ints are Python truthiness.
    for (v, want) in [
        (Value::None, false),
        (Value::Int(0), false),
        (Value::Int(1), true),
    ] {
        let (op, _) = request(&[("shared_xml", m(&v))], None).unwrap();
        let Op::RequestInstance { shared, .. } = op else {
            panic!()
        };
        assert_eq!(shared, want, "{v:?}");
    }
}

#[test]
fn connection_values_are_stringified_like_instance_xml() {
    let connection = Value::str_dict([
        ("port", Value::Int(8443)),
        ("empty", Value::from("")),
        ("none", Value::None),
        ("flag", Value::Bool(false)),
    ]);
    let (op, _) = op(
        Endpoint::SetComputerPartitionConnectionXml,
        &[
            ("computer_id", "COMP-1"),
            ("computer_partition_id", "slappart0"),
            ("connection_xml", &m(&connection)),
            ("slave_reference", "root_my-shared"),
        ],
        None,
    );
    let Op::SetConnection {
        computer,
        partition,
        shared,
        connection,
    } = op
    else {
        panic!()
    };
    assert_eq!(
        (computer.as_str(), partition.as_str()),
        ("COMP-1", "slappart0")
    );
    assert_eq!(shared.as_deref(), Some("root_my-shared"));
    assert_eq!(connection["port"].as_deref(), Some("8443"));
    assert_eq!(connection["empty"], None);
    assert_eq!(connection["none"].as_deref(), Some("None"));
    assert_eq!(connection["flag"].as_deref(), Some("False"));
}

#[test]
fn the_string_none_is_absent_in_optional_fields() {
    for none in ["None", "none", "NONE", ""] {
        let (op, _) = op(
            Endpoint::SoftwareInstanceRename,
            &[
                ("computer_id", "COMP-1"),
                ("computer_partition_id", "slappart0"),
                ("new_name", "x"),
                ("slave_reference", none),
            ],
            None,
        );
        let Op::Rename { shared, .. } = op else {
            panic!()
        };
        assert_eq!(shared, None, "{none:?}");
        let (op, identity) = request(
            &[
                ("computer_id", none.to_string()),
                ("computer_partition_id", none.to_string()),
            ],
            None,
        )
        .unwrap();
        assert_eq!(identity, Identity::Person, "{none:?}");
        let Op::RequestInstance { requester, .. } = op else {
            panic!()
        };
        assert_eq!(requester, Requester::Person("user".into()));
    }
    // Optional marshalled fields too.
    let (op, _) = request(&[("filter_xml", "None".to_string())], None).unwrap();
    let Op::RequestInstance { sla, shared, .. } = op else {
        panic!()
    };
    assert!(sla.is_empty());
    assert!(!shared);
}

#[test]
fn reports_and_software_ops() {
    let (o, _) = op(
        Endpoint::SoftwareInstanceError,
        &[
            ("computer_id", "C"),
            ("computer_partition_id", "P"),
            ("error_log", "trace"),
            ("slave_reference", "SOFTINST-4"),
        ],
        None,
    );
    assert_eq!(
        o,
        Op::ReportStatus {
            computer: "C".into(),
            partition: "P".into(),
            shared: Some("SOFTINST-4".into()),
            kind: StatusKind::Error,
            message: "trace".into()
        }
    );
    let (o, _) = op(
        Endpoint::StoppedComputerPartition,
        &[("computer_id", "C"), ("computer_partition_id", "P")],
        None,
    );
    assert!(matches!(
        o,
        Op::ReportStatus {
            kind: StatusKind::Stopped,
            ..
        }
    ));
    for (endpoint, report) in [
        (Endpoint::BuildingSoftwareRelease, SoftwareReport::Building),
        (
            Endpoint::AvailableSoftwareRelease,
            SoftwareReport::Available,
        ),
        (
            Endpoint::DestroyedSoftwareRelease,
            SoftwareReport::Destroyed,
        ),
        (
            Endpoint::SoftwareReleaseError,
            SoftwareReport::Error("log".into()),
        ),
    ] {
        let (o, _) = op(
            endpoint,
            &[("url", SR), ("computer_id", "C"), ("error_log", "log")],
            None,
        );
        assert_eq!(
            o,
            Op::ReportSoftware {
                computer: "C".into(),
                url: SR.into(),
                report
            }
        );
    }
    let (o, _) = op(
        Endpoint::SupplySupply,
        &[("url", SR), ("computer_id", "C"), ("state", "destroyed")],
        None,
    );
    assert_eq!(
        o,
        Op::Supply {
            computer: "C".into(),
            url: SR.into(),
            state: "destroyed".into()
        }
    );
}

#[test]
fn software_product_lookup_takes_exactly_one_key() {
    assert_eq!(
        query(
            Endpoint::GetSoftwareReleaseListFromSoftwareProduct,
            &[("software_product_reference", "p")]
        ),
        Query::SoftwareReleaseList(ProductLookup::Product("p".into()))
    );
    assert_eq!(
        query(
            Endpoint::GetSoftwareReleaseListFromSoftwareProduct,
            &[("software_release_url", SR)]
        ),
        Query::SoftwareReleaseList(ProductLookup::SoftwareRelease(SR.into()))
    );
    let both = parse(
        Endpoint::GetSoftwareReleaseListFromSoftwareProduct,
        &[
            ("software_product_reference", "p"),
            ("software_release_url", SR),
        ],
        None,
    )
    .unwrap_err();
    assert_eq!(both.status(), 400);
    let none = parse(
        Endpoint::GetSoftwareReleaseListFromSoftwareProduct,
        &[],
        None,
    )
    .unwrap_err();
    assert_eq!(
        none,
        FormError::MissingField {
            field: "software_product_reference"
        }
    );
}

#[test]
fn first_value_of_a_repeated_field_wins() {
    let q = query(
        Endpoint::GetFullComputerInformation,
        &[("computer_id", "COMP-1"), ("computer_id", "COMP-2")],
    );
    assert_eq!(
        q,
        Query::Computer {
            computer: "COMP-1".into()
        }
    );
}

#[test]
fn usage_reports_are_validated() {
    let err = parse(
        Endpoint::UseComputer,
        &[("computer_id", "C"), ("use_string", "<journal/>")],
        None,
    )
    .unwrap_err();
    assert_eq!(err.status(), 400);
    assert!(
        err.to_string()
            .starts_with("field 'use_string': not a valid computer consumption journal"),
        "{err}"
    );
}

// ----- X-SlapPartition ---------------------------------------------------------------------

#[test]
fn slappartition_header_as_slapproxy_parses_it() {
    let want = Some(PartitionIdentity {
        computer: "COMP-TEST".into(),
        partition: "slappart0".into(),
    });
    assert_eq!(parse_partition_header(HEADER).unwrap(), want);
    for variant in [
        "x-slappartition computer_id=COMP-TEST,computer_partition_id=slappart0",
        "X-SLAPPARTITION   computer_partition_id = slappart0 ,  computer_id=COMP-TEST ",
        "X-SlapPartition computer_id=COMP-TEST, computer_partition_id=slappart0, extra=1",
    ] {
        assert_eq!(parse_partition_header(variant).unwrap(), want, "{variant}");
    }
    // Values keep what follows the first '='.
    assert_eq!(
        parse_partition_header("X-SlapPartition computer_id=a=b, computer_partition_id=p")
            .unwrap()
            .unwrap()
            .computer,
        "a=b"
    );
    // Another scheme is no identity.
    for other in [
        "Basic dXNlcjpwYXNz",
        "Bearer x",
        "",
        "X-SlapPartitionX computer_id=a",
    ] {
        assert_eq!(parse_partition_header(other).unwrap(), None, "{other}");
    }
    // Malformed ones.
    for bad in [
        "X-SlapPartition",
        "X-SlapPartition computer_id",
        "X-SlapPartition computer_id=COMP-TEST, slappart0",
        "X-SlapPartition computer_id=COMP-TEST",
        "X-SlapPartition computer_partition_id=slappart0",
        "X-SlapPartition computer_id=, computer_partition_id=slappart0",
        "X-SlapPartition computer_id=COMP-TEST, computer_partition_id=,",
    ] {
        let err = parse_partition_header(bad).unwrap_err();
        assert!(matches!(err, FormError::Authorization(_)), "{bad}");
        assert!(
            err.to_string()
                .starts_with("malformed Authorization header"),
            "{err}"
        );
        assert_eq!(err.to_response().status, 400);
    }
}

#[test]
fn the_header_names_the_requester_before_the_form() {
    let (op, identity) = request(
        &[
            ("computer_id", "COMP-OTHER".into()),
            ("computer_partition_id", "slappart9".into()),
        ],
        Some(HEADER),
    )
    .unwrap();
    assert_eq!(identity, Identity::AuthorizationHeader);
    let Op::RequestInstance { requester, .. } = op else {
        panic!()
    };
    assert_eq!(
        requester,
        Requester::Partition {
            computer: "COMP-TEST".into(),
            partition: "slappart0".into()
        }
    );
    // Without the header (or with another scheme): the form fields.
    for auth in [None, Some("Basic abc")] {
        let (op, identity) = request(
            &[
                ("computer_id", "COMP-OTHER".into()),
                ("computer_partition_id", "slappart9".into()),
            ],
            auth,
        )
        .unwrap();
        assert_eq!(identity, Identity::FormFields);
        let Op::RequestInstance { requester, .. } = op else {
            panic!()
        };
        assert_eq!(
            requester,
            Requester::Partition {
                computer: "COMP-OTHER".into(),
                partition: "slappart9".into()
            }
        );
    }
    // Half a form identity.
    let err = request(&[("computer_id", "COMP-OTHER".into())], None).unwrap_err();
    assert_eq!(
        err,
        FormError::MissingField {
            field: "computer_partition_id"
        }
    );
    // A malformed header is a 400, even with form fields.
    let err = request(&[], Some("X-SlapPartition nonsense")).unwrap_err();
    assert!(matches!(err, FormError::Authorization(_)));
    // Not honoured when the context says so.
    let mut no_header = ctx();
    no_header.partition_header = false;
    let SlapCall::Write(w) = forms::parse(
        &no_header,
        Endpoint::RequestComputerPartition,
        &request_fields(&[]),
        Some(HEADER),
    )
    .unwrap() else {
        panic!()
    };
    assert_eq!(w.identity, Identity::Person);
}

// ----- loadComputerConfigurationFromXML -----------------------------------------------------

fn format(value: &Value) -> Result<(String, slapos_domain::ComputerSpec), FormError> {
    let SlapCall::Write(w) = parse(
        Endpoint::LoadComputerConfigurationFromXml,
        &[("xml", &m(value)), ("computer_id", "ignored")],
        None,
    )?
    else {
        panic!()
    };
    match w.op {
        Op::FormatComputer { computer, spec } => Ok((computer, spec)),
        other => panic!("{other:?}"),
    }
}

#[test]
fn computer_dict_becomes_a_spec() {
    let value = computer_dict(vec![
        partition_dict(
            0,
            tap("slaptap0"),
            vec![
                address(Value::from("10.0.0.10")),
                address(Value::from("2001:db8::a")),
            ],
        ),
        partition_dict(1, Value::None, vec![]),
        partition_dict(2, tap(""), vec![address(Value::from("10.0.0.12"))]),
        Value::str_dict([
            ("reference", Value::from("slappart3")),
            ("address_list", Value::List(vec![])),
        ]),
    ]);
    let (computer, spec) = format(&value).unwrap();
    assert_eq!(computer, "COMP-1");
    assert_eq!(spec.address.as_deref(), Some("10.0.0.1"));
    assert_eq!(spec.netmask.as_deref(), Some("255.255.255.0"));
    let ids: Vec<&str> = spec.partitions.iter().map(|p| p.id.as_str()).collect();
    assert_eq!(ids, ["slappart0", "slappart1", "slappart2", "slappart3"]);
    assert_eq!(spec.partitions[0].tap.as_deref(), Some("slaptap0"));
    assert_eq!(spec.partitions[1].tap, None, "tap None is allowed");
    assert_eq!(spec.partitions[2].tap.as_deref(), Some(""));
    assert_eq!(spec.partitions[3].tap, None, "no tap at all is allowed");
    assert_eq!(spec.partitions[0].addresses[1].addr, "2001:db8::a");
    assert_eq!(spec.partitions[0].addresses[1].netmask, "255.255.255.0");
}

#[test]
fn the_captured_format_dict_parses() {
    // What `slapos node format` sends (vector 04), with everything slapproxy ignores.
    let file =
        testdata().join("vectors/04-loadComputerConfigurationFromXML-format-6-partitions.txt");
    let text = std::fs::read_to_string(&file)
        .unwrap_or_else(|e| panic!("reading {}: {e}", file.display()));
    let line = text
        .lines()
        .find(|l| l.starts_with("xml = "))
        .expect("form field");
    let value = marshal::decode(&line.as_bytes()["xml = ".len()..], &Limits::DEFAULT).unwrap();
    let (computer, spec) = format(&value).unwrap();
    assert_eq!(computer, "COMP-TEST");
    assert_eq!(spec.partitions.len(), 6);
    assert_eq!(spec.partitions[5].tap.as_deref(), Some("slaptap5"));
    assert_eq!(spec.partitions[5].addresses.len(), 2);
}

#[test]
fn bad_computer_dicts_name_the_path() {
    let good = |i| partition_dict(i, tap("t"), vec![address(Value::from("10.0.0.1"))]);
    let cases: Vec<(Value, &str)> = vec![
        (
            computer_dict(vec![
                good(0),
                good(1),
                partition_dict(2, tap("t"), vec![address(Value::Int(10))]),
            ]),
            "field 'xml': partition_list[2].address_list[0].addr: expected a str, got int",
        ),
        (
            computer_dict(vec![partition_dict(
                0,
                tap("t"),
                vec![Value::str_dict([("addr", "10.0.0.1")])],
            )]),
            "field 'xml': partition_list[0].address_list[0].netmask: missing",
        ),
        (
            computer_dict(vec![good(0), Value::from("slappart1")]),
            "field 'xml': partition_list[1]: expected a dict, got str",
        ),
        (
            computer_dict(vec![partition_dict(0, Value::from("tap0"), vec![])]),
            "field 'xml': partition_list[0].tap: expected a dict, got str",
        ),
        (
            computer_dict(vec![partition_dict(
                0,
                Value::str_dict([("name", Value::Int(1))]),
                vec![],
            )]),
            "field 'xml': partition_list[0].tap.name: expected a str, got int",
        ),
        (
            computer_dict(vec![Value::str_dict([(
                "address_list",
                Value::List(vec![]),
            )])]),
            "field 'xml': partition_list[0].reference: missing",
        ),
        (
            computer_dict(vec![Value::str_dict([("reference", "slappart0")])]),
            "field 'xml': partition_list[0].address_list: missing",
        ),
        (
            computer_dict(vec![Value::str_dict([
                ("reference", Value::from("slappart0")),
                ("address_list", Value::None),
            ])]),
            "field 'xml': partition_list[0].address_list: expected a list, got NoneType",
        ),
        (
            Value::str_dict([("reference", "COMP-1")]),
            "field 'xml': partition_list: missing",
        ),
        (
            Value::str_dict([("partition_list", Value::List(vec![]))]),
            "field 'xml': reference: missing",
        ),
        (
            Value::str_dict([
                ("reference", Value::from("COMP-1")),
                ("address", Value::Int(1)),
                ("partition_list", Value::List(vec![])),
            ]),
            "field 'xml': address: expected a str, got int",
        ),
        (
            Value::List(vec![]),
            "field 'xml': expected a dict, got list",
        ),
    ];
    for (value, message) in cases {
        let err = format(&value).unwrap_err();
        assert_eq!(err.to_string(), message);
        assert_eq!(err.to_response().status, 400);
    }
    // An object where a dict is expected.
    let err = format(&Value::object(SlapClass::Computer, vec![], vec![])).unwrap_err();
    assert_eq!(
        err.to_string(),
        "field 'xml': expected a dict, got Computer"
    );
}

proptest! {
    /// No header value makes the parser panic, and what it accepts names both ids.
    #[test]
    fn any_header_parses_or_is_refused(header in ".{0,80}") {
        if let Ok(Some(id)) = parse_partition_header(&header) {
            prop_assert!(!id.computer.is_empty() && !id.partition.is_empty());
        }
    }

    /// No form field content makes any endpoint panic.
    #[test]
    fn any_field_values_parse_or_are_refused(
        endpoint in 0..Endpoint::ALL.len(),
        values in proptest::collection::vec(("[a-z_]{1,24}", ".{0,60}"), 0..8),
    ) {
        let e = Endpoint::ALL[endpoint];
        let pairs: Vec<(String, String)> = values;
        let _ = forms::parse(&ctx(), e, &pairs, Some("X-SlapPartition a=b"));
    }
}
