//! Answers of the SLAP layer over a local state: the deliberate differences from
//! slapproxy (status codes of refusals, identity of requesters), the shapes of the slap
//! objects, and the reads slapproxy does not offer.

use slap_gateway::slap::render::{domain_error, domain_status};
use slap_gateway::{serve_local, Endpoint, SlapContext, SlapResponse};
use slapos_domain::{DomainError, RequestId, State, Timestamp};
use slapos_proto::marshal::{self, SlapClass, Value};
use slapos_proto::Limits;

const SR: &str = "https://example.com/software/demo/software.cfg";
const FRONTEND: &str = "https://example.com/software/frontend/software.cfg";

struct Gateway {
    ctx: SlapContext,
    state: State,
    seq: u64,
}

impl Gateway {
    fn new() -> Self {
        Gateway {
            ctx: SlapContext::proxy(Some("COMP-1")).with_software_product_list(
                "p1 https://a/1.cfg\np1 https://a/2.cfg\np2 https://b/1.cfg",
            ),
            state: State::new(),
            seq: 0,
        }
    }

    fn call(
        &mut self,
        endpoint: Endpoint,
        pairs: &[(&str, &str)],
        auth: Option<&str>,
    ) -> SlapResponse {
        self.seq += 1;
        let fields: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        serve_local(
            &self.ctx,
            &mut self.state,
            endpoint,
            &fields,
            auth,
            RequestId::new("render-tests", self.seq),
            Timestamp::from_secs(1_795_626_900 + self.seq),
        )
    }

    fn ok(
        &mut self,
        endpoint: Endpoint,
        pairs: &[(&str, &str)],
        auth: Option<&str>,
    ) -> SlapResponse {
        let r = self.call(endpoint, pairs, auth);
        assert_eq!(r.status, 200, "{endpoint}: {}", r.body_text());
        r
    }

    fn format(&mut self, computer: &str, partitions: usize) {
        let list = (0..partitions)
            .map(|i| {
                Value::str_dict([
                    ("reference", Value::from(format!("slappart{i}"))),
                    ("tap", Value::str_dict([("name", format!("tap{i}"))])),
                    (
                        "address_list",
                        Value::List(vec![Value::str_dict([
                            ("addr", format!("10.0.{}.{}", computer.len(), 10 + i)),
                            ("netmask", "255.255.255.0".to_string()),
                        ])]),
                    ),
                ])
            })
            .collect();
        let dict = Value::str_dict([
            ("reference", Value::from(computer)),
            ("partition_list", Value::List(list)),
        ]);
        let r = self.ok(
            Endpoint::LoadComputerConfigurationFromXml,
            &[("xml", &marshal::encode(&dict).unwrap())],
            None,
        );
        assert_eq!(r.body_text(), "done");
        // The provider supplies the releases the tests request (instances are allocated
        // only where their release is supplied).
        for url in [SR, FRONTEND] {
            self.ok(
                Endpoint::SupplySupply,
                &[
                    ("url", url),
                    ("computer_id", computer),
                    ("state", "available"),
                ],
                None,
            );
        }
    }

    fn request(&mut self, title: &str, extra: &[(&str, &str)], auth: Option<&str>) -> SlapResponse {
        let none = m(&Value::None);
        let mut pairs = vec![
            ("software_release", SR),
            ("software_type", "default"),
            ("partition_reference", title),
            ("state", none.as_str()),
        ];
        for (k, v) in extra {
            pairs.retain(|(kk, _)| kk != k);
            pairs.push((k, v));
        }
        self.call(Endpoint::RequestComputerPartition, &pairs, auth)
    }
}

fn m(v: &Value) -> String {
    marshal::encode(v).unwrap()
}

fn decode(r: &SlapResponse) -> Value {
    assert_eq!(r.content_type, slap_gateway::slap::CONTENT_TYPE_XML);
    marshal::decode(&r.body, &Limits::DEFAULT).expect("marshalled body")
}

fn attr<'a>(v: &'a Value, name: &str) -> &'a Value {
    v.as_object()
        .and_then(|o| o.attr(name))
        .unwrap_or_else(|| panic!("no attribute {name} in {v:?}"))
}

fn keys(v: &Value) -> Vec<String> {
    let mut k: Vec<String> = v
        .as_object()
        .unwrap()
        .attrs
        .iter()
        .map(|(k, _)| k.clone())
        .collect();
    k.sort();
    k
}

fn header(computer: &str, partition: &str) -> String {
    format!("X-SlapPartition computer_id={computer}, computer_partition_id={partition}")
}

#[test]
fn every_domain_error_has_a_status() {
    let cases = [
        (DomainError::UnknownComputer("c".into()), 404),
        (
            DomainError::UnknownPartition {
                computer: "c".into(),
                partition: "p".into(),
            },
            404,
        ),
        (
            DomainError::PartitionFree {
                computer: "c".into(),
                partition: "p".into(),
            },
            404,
        ),
        (DomainError::UnknownInstance("i".into()), 404),
        (
            DomainError::UnknownSharedInstance {
                computer: "c".into(),
                partition: "p".into(),
                reference: "r".into(),
            },
            404,
        ),
        (
            DomainError::UnknownSoftware {
                computer: "c".into(),
                url: "u".into(),
            },
            404,
        ),
        (
            DomainError::NoCapacity {
                title: "t".into(),
                reason: "r".into(),
            },
            404,
        ),
        (
            DomainError::NoSharedHost {
                title: "t".into(),
                reason: "r".into(),
            },
            404,
        ),
        (
            DomainError::InvalidArgument {
                field: "f".into(),
                message: "m".into(),
            },
            400,
        ),
        (DomainError::UnknownSlaKey("k".into()), 400),
        (DomainError::ComputerExists("c".into()), 409),
        (
            DomainError::PartitionsInUse {
                computer: "c".into(),
                partitions: vec!["p".into()],
            },
            409,
        ),
        (
            DomainError::TitleTaken {
                title: "t".into(),
                scope: "tree".into(),
            },
            409,
        ),
        (
            DomainError::NotRequestedDestroyed {
                title: "t".into(),
                state: "started".into(),
            },
            409,
        ),
        (
            DomainError::SoftwareNotDestroyed {
                computer: "c".into(),
                url: "u".into(),
            },
            409,
        ),
        (
            DomainError::RequestExpired {
                request: "r#1".into(),
            },
            500,
        ),
    ];
    for (err, status) in cases {
        assert_eq!(domain_status(&err), status, "{err:?}");
        let r = domain_error(&err);
        assert_eq!(r.status, status);
        assert_eq!(r.content_type, slap_gateway::slap::CONTENT_TYPE_TEXT);
        assert!(!r.body.is_empty());
    }
    assert_eq!(
        domain_error(&DomainError::UnknownPartition {
            computer: "COMP-TEST".into(),
            partition: "slappart77".into()
        })
        .body_text(),
        "Unknown partition 'slappart77' on 'COMP-TEST'"
    );
    assert_eq!(
        domain_error(&DomainError::NoCapacity {
            title: "t".into(),
            reason: "r".into()
        })
        .body_text(),
        "No free computer partition found for: t (r)"
    );
    assert_eq!(
        domain_error(&DomainError::NoSharedHost {
            title: "t".into(),
            reason: "r".into()
        })
        .body_text(),
        "No partition corresponding to slave request: t (r)"
    );
}

#[test]
fn unknown_computers_and_partitions_are_404() {
    let mut g = Gateway::new();
    // The default computer is answered before it is formatted; others are not found.
    let r = g.ok(
        Endpoint::GetFullComputerInformation,
        &[("computer_id", "COMP-1")],
        None,
    );
    let v = decode(&r);
    assert_eq!(attr(&v, "_computer_partition_list"), &Value::List(vec![]));
    let r = g.call(
        Endpoint::GetFullComputerInformation,
        &[("computer_id", "COMP-9")],
        None,
    );
    assert_eq!(r.status, 404);
    assert_eq!(r.body_text(), "Unknown computer 'COMP-9'");
    g.format("COMP-1", 2);
    let r = g.call(
        Endpoint::RegisterComputerPartition,
        &[
            ("computer_reference", "COMP-1"),
            ("computer_partition_reference", "slappart9"),
        ],
        None,
    );
    assert_eq!(r.status, 404);
    // Rename and destroyed reports of unknown partitions: 404 with the message (quirk 4).
    for endpoint in [
        Endpoint::SoftwareInstanceRename,
        Endpoint::DestroyedComputerPartition,
    ] {
        let r = g.call(
            endpoint,
            &[
                ("computer_id", "COMP-1"),
                ("computer_partition_id", "slappart9"),
                ("new_name", "x"),
            ],
            None,
        );
        assert_eq!(r.status, 404, "{endpoint}");
        assert_eq!(r.body_text(), "Unknown partition 'slappart9' on 'COMP-1'");
    }
    // A free partition hosts nothing to report on.
    let r = g.call(
        Endpoint::StartedComputerPartition,
        &[
            ("computer_id", "COMP-1"),
            ("computer_partition_id", "slappart0"),
        ],
        None,
    );
    assert_eq!(r.status, 404);
}

#[test]
fn requester_identity_errors() {
    let mut g = Gateway::new();
    g.format("COMP-1", 3);
    // Header naming an unknown partition: slapproxy's 400 and message.
    let r = g.request("child", &[], Some(&header("COMP-1", "slappart42")));
    assert_eq!(r.status, 400);
    assert_eq!(
        r.body_text(),
        "No partition matching the authorization header: (COMP-1 / slappart42)"
    );
    let r = g.request("child", &[], Some(&header("COMP-NOPE", "slappart0")));
    assert_eq!(r.status, 400);
    // ... or a free one.
    let r = g.request("child", &[], Some(&header("COMP-1", "slappart0")));
    assert_eq!(r.status, 400);
    // The same partition named in the form: 404, never a silent root request (quirk 5).
    let r = g.request(
        "child",
        &[
            ("computer_id", "COMP-1"),
            ("computer_partition_id", "slappart42"),
        ],
        None,
    );
    assert_eq!(r.status, 404);
    assert_eq!(r.body_text(), "Unknown partition 'slappart42' on 'COMP-1'");
    assert_eq!(g.state.instances().count(), 0, "nothing was requested");
    // A malformed header: 400 naming the header.
    let r = g.request("child", &[], Some("X-SlapPartition computer_id"));
    assert_eq!(r.status, 400);
    assert!(r.body_text().starts_with("malformed Authorization header"));
}

#[test]
fn refusals_that_slapproxy_accepts() {
    let mut g = Gateway::new();
    g.format("COMP-1", 2);
    let r = g.request("root", &[], None);
    assert_eq!(r.status, 200, "{}", r.body_text());
    // Re-format dropping the busy partition: 409 (quirk 8).
    let dict = Value::str_dict([
        ("reference", Value::from("COMP-1")),
        ("partition_list", Value::List(vec![])),
    ]);
    let r = g.call(
        Endpoint::LoadComputerConfigurationFromXml,
        &[("xml", &m(&dict))],
        None,
    );
    assert_eq!(r.status, 409);
    assert!(r.body_text().contains("slappart0"), "{}", r.body_text());
    // Destroyed report for a partition not requested destroyed: 409 (quirk 10).
    let r = g.call(
        Endpoint::DestroyedComputerPartition,
        &[
            ("computer_id", "COMP-1"),
            ("computer_partition_id", "slappart0"),
        ],
        None,
    );
    assert_eq!(r.status, 409);
    // An SLA key unknown to the marketplace: 400.
    let filter = m(&Value::str_dict([("colour", "blue")]));
    let r = g.request("other", &[("filter_xml", &filter)], None);
    assert_eq!(r.status, 400);
    assert!(r.body_text().contains("colour"));
    // A bad requested state: 400.
    let state = m(&Value::from("running"));
    let r = g.request("root", &[("state", &state)], None);
    assert_eq!(r.status, 400);
    // A bad supply state: 400 (slapproxy: 500).
    let r = g.call(
        Endpoint::SupplySupply,
        &[("url", SR), ("computer_id", "COMP-1"), ("state", "started")],
        None,
    );
    assert_eq!(r.status, 400);
    // No capacity: 404 with slapproxy's text first.
    let r = g.request("third", &[], None);
    assert_eq!(r.status, 200);
    let r = g.request("fourth", &[], None);
    assert_eq!(r.status, 404);
    assert!(r
        .body_text()
        .starts_with("No free computer partition found for: fourth ("));
}

#[test]
fn request_and_partition_shapes() {
    let mut g = Gateway::new();
    g.format("COMP-1", 3);
    let params = m(&Value::str_dict([
        ("count", Value::Int(3)),
        ("empty", Value::from("")),
    ]));
    let r = g.request("root", &[("partition_parameter_xml", &params)], None);
    let v = decode(&r);
    assert_eq!(v.as_object().unwrap().class, SlapClass::SoftwareInstance);
    assert_eq!(
        keys(&v),
        [
            "_connection_dict",
            "_instance_guid",
            "_parameter_dict",
            "_requested_state",
            "connection_xml",
            "ip_list",
            "slap_computer_id",
            "slap_computer_partition_id",
            "slap_server_url",
            "slap_software_release_url",
            "slap_software_type"
        ]
    );
    assert_eq!(attr(&v, "_instance_guid"), &Value::from("SOFTINST-1"));
    assert_eq!(attr(&v, "_requested_state"), &Value::from("started"));
    assert_eq!(attr(&v, "connection_xml"), &Value::None);
    let p = attr(&v, "_parameter_dict");
    assert_eq!(p.dict_get("count"), Some(&Value::from("3")));
    assert_eq!(p.dict_get("empty"), Some(&Value::None));
    assert!(p.dict_get("timestamp").and_then(Value::as_str).is_some());

    // Publish, then the request response carries the connection and its instance XML.
    let conn = m(&Value::str_dict([("url", Value::from("http://x/?a&b"))]));
    g.ok(
        Endpoint::SetComputerPartitionConnectionXml,
        &[
            ("computer_id", "COMP-1"),
            ("computer_partition_id", "slappart0"),
            ("connection_xml", &conn),
            ("slave_reference", "None"),
        ],
        None,
    );
    // Stopped with state None afterwards: the stored state is answered (quirk 2).
    let stopped = m(&Value::from("stopped"));
    g.request(
        "root",
        &[("partition_parameter_xml", &params), ("state", &stopped)],
        None,
    );
    let r = g.request("root", &[("partition_parameter_xml", &params)], None);
    let v = decode(&r);
    assert_eq!(attr(&v, "_requested_state"), &Value::from("stopped"));
    assert_eq!(
        attr(&v, "_connection_dict").dict_get("url"),
        Some(&Value::from("http://x/?a&b"))
    );
    assert_eq!(
        attr(&v, "connection_xml"),
        &Value::from(
            "<?xml version='1.0' encoding='utf-8'?>\n<instance>\n  <parameter id=\"url\">http://x/?a&amp;b</parameter>\n</instance>\n"
        )
    );

    // registerComputerPartition of the allocated partition.
    let r = g.ok(
        Endpoint::RegisterComputerPartition,
        &[
            ("computer_reference", "COMP-1"),
            ("computer_partition_reference", "slappart0"),
        ],
        None,
    );
    let v = decode(&r);
    assert_eq!(
        keys(&v),
        [
            "_computer_id",
            "_connection_dict",
            "_instance_guid",
            "_need_modification",
            "_parameter_dict",
            "_partition_id",
            "_request_dict",
            "_requested_state",
            "_software_release_document"
        ]
    );
    assert_eq!(attr(&v, "_need_modification"), &Value::Int(1));
    let p = attr(&v, "_parameter_dict");
    for key in [
        "full_address_list",
        "instance_title",
        "ip_list",
        "root_instance_title",
        "slap_computer_id",
        "slap_computer_partition_id",
        "slap_software_release_url",
        "slap_software_type",
        "slave_instance_list",
        "timestamp",
    ] {
        assert!(p.dict_get(key).is_some(), "{key}");
    }
    assert_eq!(
        p.dict_get("ip_list"),
        Some(&Value::List(vec![Value::Tuple(vec![
            Value::from("tap0"),
            Value::from("10.0.6.10")
        ])]))
    );
    // A free partition.
    let r = g.ok(
        Endpoint::RegisterComputerPartition,
        &[
            ("computer_reference", "COMP-1"),
            ("computer_partition_reference", "slappart2"),
        ],
        None,
    );
    let v = decode(&r);
    assert_eq!(attr(&v, "_instance_guid"), &Value::from("COMP-1-slappart2"));
    assert_eq!(attr(&v, "_need_modification"), &Value::Int(0));
    assert_eq!(attr(&v, "_requested_state"), &Value::from("destroyed"));
    assert_eq!(attr(&v, "_software_release_document"), &Value::None);
}

#[test]
fn shared_instances_are_named_by_id_and_removed_with_their_tree() {
    let mut g = Gateway::new();
    g.format("COMP-1", 3);
    let r = g.call(
        Endpoint::RequestComputerPartition,
        &[
            ("software_release", FRONTEND),
            ("software_type", "custom"),
            ("partition_reference", "host"),
            ("state", &m(&Value::None)),
        ],
        None,
    );
    assert_eq!(r.status, 200);
    g.request("root", &[], None);
    let root = header("COMP-1", "slappart1");
    let shared = |extra: (&str, &str)| {
        vec![
            ("software_release".to_string(), FRONTEND.to_string()),
            ("software_type".to_string(), "custom".to_string()),
            ("partition_reference".to_string(), "site".to_string()),
            ("shared_xml".to_string(), m(&Value::Bool(true))),
            (
                "partition_parameter_xml".to_string(),
                m(&Value::str_dict([("port", Value::Int(8080))])),
            ),
            (extra.0.to_string(), extra.1.to_string()),
        ]
    };
    let fields = shared(("state", &m(&Value::None)));
    let pairs: Vec<(&str, &str)> = fields
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let r = g.ok(Endpoint::RequestComputerPartition, &pairs, Some(&root));
    let v = decode(&r);
    assert_eq!(
        keys(&v),
        [
            "_connection_dict",
            "_parameter_dict",
            "ip_list",
            "slap_computer_id",
            "slap_computer_partition_id",
            "slap_server_url",
            "slap_software_release_url",
            "slap_software_type"
        ]
    );
    assert_eq!(
        attr(&v, "slap_computer_partition_id"),
        &Value::from("slappart0")
    );
    assert_eq!(
        attr(&v, "_parameter_dict").dict_get("port"),
        Some(&Value::from("8080"))
    );
    // The host lists it by id, with its typed parameters and its own title.
    let r = g.ok(
        Endpoint::RegisterComputerPartition,
        &[
            ("computer_reference", "COMP-1"),
            ("computer_partition_reference", "slappart0"),
        ],
        None,
    );
    let v = decode(&r);
    let list = attr(&v, "_parameter_dict")
        .dict_get("slave_instance_list")
        .unwrap();
    let entry = &list.as_list().unwrap()[0];
    assert_eq!(
        entry.dict_get("slave_reference"),
        Some(&Value::from("SOFTINST-3"))
    );
    assert_eq!(entry.dict_get("slave_title"), Some(&Value::from("site")));
    assert_eq!(entry.dict_get("port"), Some(&Value::Int(8080)));
    assert_eq!(
        entry.dict_get("slap_software_type"),
        Some(&Value::from("custom"))
    );
    // The host publishes for it by id, and the requester sees it.
    g.ok(
        Endpoint::SetComputerPartitionConnectionXml,
        &[
            ("computer_id", "COMP-1"),
            ("computer_partition_id", "slappart0"),
            (
                "connection_xml",
                &m(&Value::str_dict([("url", "https://site")])),
            ),
            ("slave_reference", "SOFTINST-3"),
        ],
        None,
    );
    let r = g.ok(Endpoint::RequestComputerPartition, &pairs, Some(&root));
    assert_eq!(
        attr(&decode(&r), "_connection_dict").dict_get("url"),
        Some(&Value::from("https://site"))
    );
    // Destroying it answers the host's location with the request's parameters.
    let fields = shared(("state", &m(&Value::from("destroyed"))));
    let pairs: Vec<(&str, &str)> = fields
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let r = g.ok(Endpoint::RequestComputerPartition, &pairs, Some(&root));
    let v = decode(&r);
    assert_eq!(
        attr(&v, "slap_computer_partition_id"),
        &Value::from("slappart0")
    );
    assert_eq!(
        attr(&v, "_connection_dict").dict_get("url"),
        Some(&Value::from("https://site"))
    );
    let r = g.ok(
        Endpoint::RegisterComputerPartition,
        &[
            ("computer_reference", "COMP-1"),
            ("computer_partition_reference", "slappart0"),
        ],
        None,
    );
    let v = decode(&r);
    let list = attr(&v, "_parameter_dict")
        .dict_get("slave_instance_list")
        .unwrap();
    assert_eq!(list, &Value::List(vec![]));
}

#[test]
fn reads_slapproxy_does_not_offer() {
    let mut g = Gateway::new();
    g.format("COMP-1", 3);
    g.request("root", &[], None);
    g.request("child", &[], Some(&header("COMP-1", "slappart0")));
    // The tree's addresses.
    let r = g.ok(
        Endpoint::GetHostingSubscriptionIpList,
        &[
            ("computer_id", "COMP-1"),
            ("computer_partition_id", "slappart1"),
        ],
        None,
    );
    assert_eq!(
        decode(&r),
        Value::List(vec![
            Value::Tuple(vec![Value::from("tap0"), Value::from("10.0.6.10")]),
            Value::Tuple(vec![Value::from("tap1"), Value::from("10.0.6.11")]),
        ])
    );
    // Access status from the stored reports.
    let status = |g: &mut Gateway| {
        decode(&g.ok(
            Endpoint::GetComputerPartitionStatus,
            &[
                ("computer_id", "COMP-1"),
                ("computer_partition_id", "slappart0"),
            ],
            None,
        ))
    };
    let v = status(&mut g);
    assert_eq!(
        v.dict_get("text"),
        Some(&Value::from("#error no data found for SOFTINST-1"))
    );
    let r = g.ok(
        Endpoint::StartedComputerPartition,
        &[
            ("computer_id", "COMP-1"),
            ("computer_partition_id", "slappart0"),
        ],
        None,
    );
    assert_eq!(r.body_text(), "Ignored");
    let v = status(&mut g);
    assert_eq!(
        v.dict_get("text"),
        Some(&Value::from("#access Instance correctly started"))
    );
    assert_eq!(v.dict_get("state"), Some(&Value::from("started")));
    assert_eq!(v.dict_get("user"), Some(&Value::from("COMP-1")));
    assert!(v
        .dict_get("created_at")
        .and_then(Value::as_str)
        .unwrap()
        .ends_with(" GMT"));
    g.ok(
        Endpoint::SoftwareInstanceError,
        &[
            ("computer_id", "COMP-1"),
            ("computer_partition_id", "slappart0"),
            ("error_log", "boom"),
        ],
        None,
    );
    assert_eq!(
        status(&mut g).dict_get("text"),
        Some(&Value::from("#error boom"))
    );
    let v = decode(&g.ok(
        Endpoint::GetComputerStatus,
        &[("computer_id", "COMP-1")],
        None,
    ));
    assert_eq!(v.dict_get("text"), Some(&Value::from("#access")));
    // Certificates: empty until the CA exists; unknown partitions are 404.
    let r = g.ok(
        Endpoint::GetComputerPartitionCertificate,
        &[
            ("computer_id", "COMP-1"),
            ("computer_partition_id", "slappart0"),
        ],
        None,
    );
    assert_eq!(r.body_text(), "<marshal><dictionary id=\"i2\"><string>certificate</string><string></string><string>key</string><string></string></dictionary></marshal>");
    let r = g.call(
        Endpoint::GetComputerPartitionCertificate,
        &[("computer_id", "COMP-1"), ("computer_partition_id", "nope")],
        None,
    );
    assert_eq!(r.status, 404);
    // Software products, by reference and by URL.
    let list = |g: &mut Gateway, k: &str, v: &str| {
        decode(&g.ok(
            Endpoint::GetSoftwareReleaseListFromSoftwareProduct,
            &[(k, v)],
            None,
        ))
    };
    let urls = |xs: &[&str]| Value::List(xs.iter().map(|x| Value::from(*x)).collect());
    assert_eq!(
        list(&mut g, "software_product_reference", "p1"),
        urls(&["https://a/1.cfg", "https://a/2.cfg"])
    );
    assert_eq!(list(&mut g, "software_product_reference", "p3"), urls(&[]));
    assert_eq!(
        list(&mut g, "software_release_url", "https://a/2.cfg"),
        urls(&["https://a/1.cfg", "https://a/2.cfg"])
    );
    assert_eq!(list(&mut g, "software_release_url", "https://x"), urls(&[]));
    // Not offered.
    assert_eq!(g.call(Endpoint::GetHateoasUrl, &[], None).status, 404);
    assert_eq!(g.call(Endpoint::GetRunId, &[], None).status, 404);
    g.ctx.run_id = Some("abc".into());
    assert_eq!(g.ok(Endpoint::GetRunId, &[], None).body_text(), "abc");
    assert_eq!(
        g.call(
            Endpoint::GenerateComputerCertificate,
            &[("computer_id", "COMP-1")],
            None
        )
        .status,
        501
    );
    assert_eq!(
        g.call(Endpoint::RequestComputer, &[("computer_title", "x")], None)
            .status,
        501
    );
    let r = g.ok(
        Endpoint::UpdateComputerPartitionRelatedInstanceList,
        &[
            ("computer_id", "COMP-1"),
            ("computer_partition_id", "slappart0"),
            ("instance_reference_xml", &m(&Value::List(vec![]))),
        ],
        None,
    );
    assert!(r.body.is_empty());
    // computerBang answers a marshalled empty string.
    let r = g.ok(
        Endpoint::ComputerBang,
        &[("computer_id", "COMP-1"), ("message", "reboot")],
        None,
    );
    assert_eq!(r.body_text(), "<marshal><string></string></marshal>");
}

#[test]
fn a_retried_shared_destruction_still_answers_a_software_instance() {
    let mut g = Gateway::new();
    g.format("COMP-1", 2);
    g.request("host", &[], None);
    let shared = |state: &str| {
        vec![
            ("software_release".to_string(), SR.to_string()),
            ("software_type".to_string(), "default".to_string()),
            ("partition_reference".to_string(), "site".to_string()),
            ("shared_xml".to_string(), m(&Value::Bool(true))),
            ("state".to_string(), state.to_string()),
        ]
    };
    let pairs = shared(&m(&Value::None));
    let pairs: Vec<(&str, &str)> = pairs
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    g.ok(Endpoint::RequestComputerPartition, &pairs, None);
    let destroy = shared(&m(&Value::from("destroyed")));
    let mut answers = Vec::new();
    for _ in 0..2 {
        // The same request id twice: the retry gets the first outcome back.
        answers.push(serve_local(
            &g.ctx,
            &mut g.state,
            Endpoint::RequestComputerPartition,
            &destroy,
            None,
            RequestId::new("retrying-client", 1),
            Timestamp::from_secs(1_795_627_000),
        ));
    }
    let first = decode(&answers[0]);
    assert_eq!(
        attr(&first, "slap_computer_partition_id"),
        &Value::from("slappart0")
    );
    let retry = decode(&answers[1]);
    assert_eq!(answers[1].status, 200);
    // Answered from the remembered outcome: the same answer, host location included.
    assert_eq!(retry, first);
}

/// A partition whose instance's SLA names a partition size carries that SLA in
/// `_filter_dict`, as the real master sends it (the node reads the size there); without a
/// size the attribute stays absent, as slapproxy answers.
#[test]
fn a_sized_instance_s_partition_carries_its_sla() {
    let mut g = Gateway::new();
    g.state
        .apply(&slapos_domain::Command {
            request_id: RequestId::new("render-sizes", 1),
            at: Timestamp::from_secs(1_795_626_800),
            op: slapos_domain::Op::RegisterComputer {
                computer: "COMP-1".into(),
                title: "COMP-1".into(),
                owner: "provider".into(),
                region: None,
                network: None,
                attributes: [("partition_sizes".to_string(), "big".to_string())]
                    .into_iter()
                    .collect(),
            },
        })
        .expect("registered");
    g.format("COMP-1", 2);
    let sla = |size: Option<&str>| {
        let mut pairs = vec![("computer_guid", Value::from("COMP-1"))];
        pairs.extend(size.map(|s| ("size", Value::from(s))));
        m(&Value::str_dict(pairs))
    };
    let sized = sla(Some("big"));
    let plain = sla(None);
    let r = g.request("sized", &[("filter_xml", sized.as_str())], None);
    assert_eq!(r.status, 200, "{}", r.body_text());
    let r = g.request("plain", &[("filter_xml", plain.as_str())], None);
    assert_eq!(r.status, 200, "{}", r.body_text());
    let full = decode(&g.ok(
        Endpoint::GetFullComputerInformation,
        &[("computer_id", "COMP-1")],
        None,
    ));
    let partitions = match attr(&full, "_computer_partition_list") {
        Value::List(l) => l.clone(),
        other => panic!("{other:?}"),
    };
    let mut seen = 0;
    for p in &partitions {
        let title = match attr(p, "_parameter_dict").dict_get("instance_title") {
            Some(Value::Str(s)) => s.clone(),
            _ => continue,
        };
        let has_filter = keys(p).contains(&"_filter_dict".to_string());
        match title.as_str() {
            "sized" => {
                seen += 1;
                let filter = attr(p, "_filter_dict");
                assert_eq!(
                    m(filter),
                    m(&Value::str_dict([
                        ("computer_guid", "COMP-1".to_string()),
                        ("size", "big".to_string())
                    ])),
                );
            }
            "plain" => {
                seen += 1;
                assert!(!has_filter, "{p:?}");
            }
            _ => {}
        }
    }
    assert_eq!(seen, 2, "{partitions:?}");
}
