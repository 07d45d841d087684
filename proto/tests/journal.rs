//! Usage documents: partition consumption files and computer journals.
//!
//! The examples are the repository's `testdata/examples` (its README says where each came
//! from). What the XSDs accept was checked with lxml 6.1 (libxml2) and slapos.core's two
//! schemas.

use std::path::{Path, PathBuf};

use proptest::prelude::*;
use slapos_proto::journal::{
    decode_computer_journal, decode_partition_consumption, encode_computer_journal,
    journal_from_partition_reports, Amount, Arrow, Consumption, Journal, Movement, Transaction,
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

fn example(name: &str) -> Vec<u8> {
    let path = testdata().join("examples").join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// The example files end with a newline that the tool that saved them added; slapgrid's
/// `asXML` returns the document without one (`''.join(xml)`).
fn without_final_newline(bytes: &[u8]) -> &[u8] {
    bytes.strip_suffix(b"\n").unwrap_or(bytes)
}

fn amount(text: &str) -> Amount {
    Amount::parse(text).unwrap()
}

fn movement_doc(quantity: &str) -> String {
    format!(
        "<consumption><movement><resource>r</resource><quantity>{quantity}</quantity>\
<price>0</price><VAT/></movement></consumption>"
    )
}

fn consumption_error(xml: &str) -> DecodeError {
    match decode_partition_consumption(xml.as_bytes(), &Limits::DEFAULT) {
        Ok(c) => panic!("{xml:?} decoded to {c:?}, expected an error"),
        Err(e) => e,
    }
}

fn journal_error(xml: &str) -> DecodeError {
    match decode_computer_journal(xml.as_bytes(), &Limits::DEFAULT) {
        Ok(j) => panic!("{xml:?} decoded to {j:?}, expected an error"),
        Err(e) => e,
    }
}

#[test]
fn partition_example_decodes() {
    let c = decode_partition_consumption(&example("partition-consumption.xml"), &Limits::DEFAULT)
        .unwrap();
    assert_eq!(
        c,
        Consumption {
            movements: vec![
                Movement {
                    resource: "service_module/cpu_load_percent".into(),
                    title: Some("Average CPU load of the web frontend".into()),
                    reference: Some(
                        "anything (slapgrid overwrites it with the partition id)".into()
                    ),
                    quantity: amount("3.75"),
                    price: amount("0.0"),
                    vat: String::new(),
                    categories: vec!["cpu".into()],
                },
                Movement {
                    resource: "service_module/memory_used".into(),
                    title: None,
                    reference: None,
                    quantity: amount("512"),
                    price: amount("0"),
                    vat: "none".into(),
                    categories: vec![],
                },
            ]
        }
    );
    assert_eq!(c.movements[0].quantity.value(), 3.75);
    assert_eq!(c.movements[1].quantity.text(), "512");
}

#[test]
fn slapgrid_journal_is_reproduced_byte_for_byte() {
    let partition =
        decode_partition_consumption(&example("partition-consumption.xml"), &Limits::DEFAULT)
            .unwrap();
    let journal = journal_from_partition_reports(
        "COMP-1234",
        "2026-11-25 at 17:20:31",
        &[("slappart3".to_string(), partition)],
    );
    let expected = example("computer-journal-from-slapgrid.xml");
    assert_eq!(
        encode_computer_journal(&journal),
        std::str::from_utf8(without_final_newline(&expected)).unwrap()
    );
    // And the example decodes to the same journal.
    assert_eq!(
        decode_computer_journal(&expected, &Limits::DEFAULT).unwrap(),
        journal
    );
}

#[test]
fn slapgrid_journal_re_encodes_byte_for_byte() {
    let bytes = example("computer-journal-from-slapgrid.xml");
    let journal = decode_computer_journal(&bytes, &Limits::DEFAULT).unwrap();
    assert_eq!(
        encode_computer_journal(&journal).as_bytes(),
        without_final_newline(&bytes)
    );
    let t = &journal.transactions[0];
    assert_eq!(t.kind, "Sale Packing List");
    assert_eq!(t.title.as_deref(), Some("Resource consumptions"));
    assert_eq!(t.start_date, "");
    assert_eq!(t.stop_date, "2026-11-25 at 17:20:31");
    assert_eq!(t.reference, "COMP-1234");
    assert_eq!(t.categories, vec![String::new()]);
    assert_eq!(
        t.arrows,
        vec![Arrow {
            kind: "Administration".into(),
            source: Some(String::new()),
            destination: Some(String::new()),
        }]
    );
    assert_eq!(t.movements.len(), 2);
    assert_eq!(t.movements[0].vat, "None");
    assert_eq!(t.movements[0].reference.as_deref(), Some("slappart3"));
}

#[test]
fn collect_journal_decodes() {
    let bytes = example("computer-journal-from-collect.xml");
    let journal = decode_computer_journal(&bytes, &Limits::DEFAULT).unwrap();
    assert_eq!(journal.transactions.len(), 1);
    let t = &journal.transactions[0];
    assert_eq!(t.title.as_deref(), Some("Eco Information for COMP-1234 "));
    assert_eq!(t.start_date, "2026-11-24 00:00:00");
    assert_eq!(t.reference, "2026-11-24-global");
    assert_eq!(
        t.arrows,
        vec![Arrow {
            kind: "Destination".into(),
            source: None,
            destination: None,
        }]
    );
    assert_eq!(t.movements.len(), 5);
    assert_eq!(t.movements[1].quantity.text(), "2147483648.0");
    assert_eq!(t.movements[1].quantity.value(), 2147483648.0);
    assert_eq!(t.movements[4].reference.as_deref(), Some("slapuser0"));
    assert_eq!(t.movements[4].categories, vec![String::new()]);
    // It is lxml's form, not slapgrid's: re-encoding differs in bytes but not in content.
    let encoded = encode_computer_journal(&journal);
    assert!(
        encoded.contains("<arrow type=\"Destination\"></arrow>"),
        "{encoded}"
    );
    assert_eq!(
        decode_computer_journal(encoded.as_bytes(), &Limits::DEFAULT).unwrap(),
        journal
    );
}

#[test]
fn several_partitions_and_files_go_into_one_transaction() {
    let file = |resource: &str, reference: Option<&str>| Consumption {
        movements: vec![Movement {
            resource: resource.into(),
            title: Some(String::new()),
            reference: reference.map(str::to_string),
            quantity: amount(" 1e3 "),
            price: amount("INF"),
            vat: String::new(),
            categories: vec![String::new(), "c".into()],
        }],
    };
    let journal = journal_from_partition_reports(
        "COMP-9",
        "2026-01-02 at 03:04:05",
        &[
            ("slappart0".into(), file("a", Some("x"))),
            ("slappart1".into(), file("b", None)),
            ("slappart0".into(), file("", Some(""))),
        ],
    );
    assert_eq!(journal.transactions.len(), 1);
    assert_eq!(
        encode_computer_journal(&journal),
        "<?xml version=\"1.0\"?><journal><transaction type=\"Sale Packing List\">\
<title>Resource consumptions</title><start_date></start_date>\
<stop_date>2026-01-02 at 03:04:05</stop_date><reference>COMP-9</reference><currency></currency>\
<payment_mode></payment_mode><category></category><arrow type=\"Administration\"><source></source>\
<destination></destination></arrow>\
<movement><resource>a</resource><title>None</title><reference>slappart0</reference>\
<quantity> 1e3 </quantity><price>INF</price><VAT>None</VAT><category>None</category><category>c</category></movement>\
<movement><resource>b</resource><title>None</title>\
<quantity> 1e3 </quantity><price>INF</price><VAT>None</VAT><category>None</category><category>c</category></movement>\
<movement><resource>None</resource><title>None</title><reference>slappart0</reference>\
<quantity> 1e3 </quantity><price>INF</price><VAT>None</VAT><category>None</category><category>c</category></movement>\
</transaction></journal>"
    );
    let back = decode_computer_journal(
        encode_computer_journal(&journal).as_bytes(),
        &Limits::DEFAULT,
    )
    .unwrap();
    assert_eq!(back, journal);
}

#[test]
fn encoding_escapes_only_what_breaks_the_document() {
    let mut journal = journal_from_partition_reports(
        "C&<>\"1",
        "d",
        &[(
            "p".into(),
            Consumption {
                movements: vec![Movement {
                    resource: "a > b ]]> c\r".into(),
                    title: None,
                    reference: None,
                    quantity: amount("1"),
                    price: amount("1"),
                    vat: "\"'é".into(),
                    categories: vec![],
                }],
            },
        )],
    );
    journal.transactions[0].arrows[0].kind = "x\"&<\t\n".into();
    let xml = encode_computer_journal(&journal);
    assert!(
        xml.contains("<reference>C&amp;&lt;>\"1</reference>"),
        "{xml}"
    );
    assert!(
        xml.contains("<resource>a > b ]]&gt; c&#13;</resource>"),
        "{xml}"
    );
    assert!(xml.contains("<VAT>\"'é</VAT>"), "{xml}");
    assert!(
        xml.contains("<arrow type=\"x&quot;&amp;&lt;&#9;&#10;\">"),
        "{xml}"
    );
    assert_eq!(
        decode_computer_journal(xml.as_bytes(), &Limits::DEFAULT).unwrap(),
        journal
    );
}

#[test]
fn amounts_follow_libxml2() {
    // Each verdict checked with lxml 6.1 against partition_consumption.xsd.
    let valid = [
        ("1e", 1.0),
        ("1e+", 1.0),
        (" 3.5 ", 3.5),
        ("\n3.5\t", 3.5),
        (" -INF", f64::NEG_INFINITY),
        ("INF", f64::INFINITY),
        ("-0", -0.0),
        (".5", 0.5),
        ("5.", 5.0),
        ("+.5e-3", 0.0005),
        ("1E5", 100000.0),
        ("+1", 1.0),
        ("00012", 12.0),
        ("1e+05", 100000.0),
        ("1 ", 1.0),
        ("3.4e39", 3.4e39),
    ];
    for (text, value) in valid {
        let a = Amount::parse(text).unwrap_or_else(|e| panic!("{text:?}: {e}"));
        assert_eq!(a.value(), value, "{text:?}");
        assert_eq!(a.text(), text);
        assert!(
            decode_partition_consumption(movement_doc(text).as_bytes(), &Limits::DEFAULT).is_ok()
        );
    }
    assert!(Amount::parse("NaN").unwrap().value().is_nan());
    assert!(Amount::parse(" NaN").unwrap().value().is_nan());
    assert_eq!(Amount::parse(" 3.5 ").unwrap().trimmed(), "3.5");
    assert_eq!(Amount::parse("1e400").unwrap().value(), f64::INFINITY);
    let invalid = [
        "+INF", "INF ", " NaN ", "-NaN", ".", "", " ", "0x10", "1_0", "\u{661}", "1.5f", "1e5.5",
        "+-1", "--1", "1,5", "inf", "-.e1", "- 1", "1\u{a0}", "e5", "+", "-", "1.2.3", "NaN\n",
        "-INF ",
    ];
    for text in invalid {
        assert!(Amount::parse(text).is_err(), "{text:?} should be refused");
        let err = consumption_error(&movement_doc(text));
        assert!(
            matches!(err, DecodeError::Invalid { what: "number", .. }),
            "{text:?}: {err:?}"
        );
        assert!(err.to_string().contains("<quantity>"), "{err}");
    }
    // Comments inside a number are skipped, as in XSD ("1<!--c-->2" is 12).
    let c = decode_partition_consumption(movement_doc("1<!--c-->2").as_bytes(), &Limits::DEFAULT)
        .unwrap();
    assert_eq!(c.movements[0].quantity.text(), "12");
    let c = decode_partition_consumption(
        movement_doc("<![CDATA[7]]>&#32;").as_bytes(),
        &Limits::DEFAULT,
    )
    .unwrap();
    assert_eq!(c.movements[0].quantity.value(), 7.0);
}

#[test]
fn schema_violations_say_what_and_where() {
    let m = "<resource>r</resource><quantity>1</quantity><price>0</price><VAT/>";
    let cases: Vec<(String, &str)> = vec![
        ("<consumption/>".into(), "expected <movement>"),
        (format!("<consumption>text<movement>{m}</movement></consumption>"), "found text \"text\""),
        (format!("<consumption a=\"1\"><movement>{m}</movement></consumption>"), "attribute a is not allowed on <consumption>"),
        (format!("<consumption><movement b=\"x\">{m}</movement></consumption>"), "attribute b"),
        ("<consumption><movement><resource c=\"1\">r</resource><quantity>1</quantity><price>0</price><VAT/></movement></consumption>".into(), "attribute c is not allowed on <resource>"),
        (format!("<consumption><movement> x {m}</movement></consumption>"), "found text \"x\""),
        (format!("<consumption><movement>{m}<foo/></movement></consumption>"), "element <foo> in <movement>, expected <category> or the end of <movement>"),
        (format!("<consumption><movement>{m}<category><b/></category></movement></consumption>"), "holds text only, found element <b>"),
        ("<consumption><movement><resource>r</resource><price>0</price><quantity>1</quantity><VAT/></movement></consumption>".into(), "element <price> in <movement>, expected <title> or <reference> or <quantity>"),
        ("<consumption><movement><resource>r</resource><quantity>1</quantity><price>0</price></movement></consumption>".into(), "end of <movement>, expected <VAT>"),
        ("<consumption><movement><quantity>1</quantity></movement></consumption>".into(), "expected <resource>"),
        (format!("<consumption><movement>{m}</movement><other/></consumption>"), "expected <movement> or the end of <consumption>"),
        (format!("<journal><movement>{m}</movement></journal>"), "root element <journal>"),
    ];
    for (xml, fragment) in cases {
        let message = consumption_error(&xml).to_string();
        // "found, expected" fragments: the message puts "at byte N" between the two.
        for part in fragment.split(", ") {
            assert!(message.contains(part), "{xml}\n{message}");
        }
        assert!(message.contains("byte "), "{message}");
    }
    // Whitespace, comments and processing instructions between elements are fine.
    let ok = format!(
        "<?xml version=\"1.0\"?>\n<!-- c --><consumption>\n <movement><!--x-->{m}<?pi x?>\
<category>a</category><category>b</category></movement>\n</consumption>\n<!-- end -->\n"
    );
    let c = decode_partition_consumption(ok.as_bytes(), &Limits::DEFAULT).unwrap();
    assert_eq!(c.movements[0].categories, vec!["a", "b"]);
}

#[test]
fn offsets_point_at_the_element() {
    let xml = "<consumption><movement><resource>r</resource><quantity>x</quantity>\
<price>0</price><VAT/></movement></consumption>";
    let err = consumption_error(xml);
    assert_eq!(
        err,
        DecodeError::Invalid {
            what: "number",
            offset: xml.find("<quantity>").unwrap(),
            message: "<quantity>: \"x\" is not a valid xs:float number".into(),
        }
    );
}

#[test]
fn journal_schema() {
    let m =
        "<movement><resource>r</resource><quantity>1</quantity><price>0</price><VAT/></movement>";
    let head = "<start_date/><stop_date/><reference/><currency/><payment_mode/>";
    let arrow = "<arrow type=\"A\"/>";
    let ok = format!("<journal><transaction type=\"T\">{head}{arrow}{m}</transaction>\
<transaction type=\"\"><title>t</title>{head}<category>c</category><category/>\
<arrow type=\"B\"><source>s</source></arrow><arrow type=\"C\"><destination>d</destination></arrow>{m}{m}\
</transaction></journal>");
    let j = decode_computer_journal(ok.as_bytes(), &Limits::DEFAULT).unwrap();
    assert_eq!(j.transactions.len(), 2);
    assert_eq!(j.transactions[0].title, None);
    assert_eq!(j.transactions[1].kind, "");
    assert_eq!(j.transactions[1].categories, vec!["c", ""]);
    assert_eq!(
        j.transactions[1].arrows,
        vec![
            Arrow {
                kind: "B".into(),
                source: Some("s".into()),
                destination: None
            },
            Arrow {
                kind: "C".into(),
                source: None,
                destination: Some("d".into())
            },
        ]
    );
    assert_eq!(j.transactions[1].movements.len(), 2);
    assert_eq!(
        decode_computer_journal(encode_computer_journal(&j).as_bytes(), &Limits::DEFAULT).unwrap(),
        j
    );

    let cases: Vec<(String, &str)> = vec![
        ("<journal/>".into(), "expected <transaction>"),
        (format!("<journal><transaction>{head}{arrow}{m}</transaction></journal>"), "<transaction> has no type attribute"),
        (format!("<journal><transaction type=\"T\">{head}<arrow/>{m}</transaction></journal>"), "<arrow> has no type attribute"),
        (format!("<journal><transaction type=\"T\" x=\"1\">{head}{arrow}{m}</transaction></journal>"), "attribute x is not allowed on <transaction>"),
        (format!("<journal><transaction type=\"T\">{head}{m}</transaction></journal>"), "element <movement> in <transaction>, expected <category> or <arrow>"),
        (format!("<journal><transaction type=\"T\">{head}{arrow}</transaction></journal>"), "end of <transaction>, expected <arrow> or <movement>"),
        (format!("<journal><transaction type=\"T\"><start_date/>{arrow}{m}</transaction></journal>"), "expected <stop_date>"),
        (format!("<journal><transaction type=\"T\">{head}<arrow type=\"A\"><destination/><source/></arrow>{m}</transaction></journal>"), "element <source> in <arrow>, expected the end of <arrow>"),
        (format!("<journal><transaction type=\"T\">{head}{arrow}{m}</transaction>x</journal>"), "found text \"x\""),
        (format!("<consumption>{m}</consumption>"), "expected root element <journal>"),
    ];
    for (xml, fragment) in cases {
        let message = journal_error(&xml).to_string();
        for part in fragment.split(", ") {
            assert!(message.contains(part), "{xml}\n{message}");
        }
    }
}

#[test]
fn limits_and_malformed_input() {
    let bytes = example("computer-journal-from-slapgrid.xml");
    let small = Limits {
        max_bytes: 100,
        ..Limits::DEFAULT
    };
    assert_eq!(
        decode_computer_journal(&bytes, &small).unwrap_err(),
        DecodeError::TooLarge {
            size: bytes.len(),
            limit: 100
        }
    );
    let shallow = Limits {
        max_depth: 3,
        ..Limits::DEFAULT
    };
    assert!(matches!(
        decode_computer_journal(&bytes, &shallow).unwrap_err(),
        DecodeError::TooDeep { limit: 3, .. }
    ));
    let few = Limits {
        max_elements: 10,
        ..Limits::DEFAULT
    };
    assert!(matches!(
        decode_computer_journal(&bytes, &few).unwrap_err(),
        DecodeError::TooManyElements { limit: 10, .. }
    ));
    let partition = example("partition-consumption.xml");
    let few = Limits {
        max_elements: 3,
        ..Limits::DEFAULT
    };
    assert!(matches!(
        decode_partition_consumption(&partition, &few).unwrap_err(),
        DecodeError::TooManyElements { limit: 3, .. }
    ));
    for xml in [
        "<consumption><movement></consumption>",
        "<!DOCTYPE consumption [<!ENTITY e \"1\">]><consumption/>",
        "<consumption>&e;</consumption>",
        "",
    ] {
        let err = consumption_error(xml);
        assert!(
            matches!(
                err,
                DecodeError::Syntax { .. }
                    | DecodeError::Invalid {
                        what: "document",
                        ..
                    }
            ),
            "{xml}: {err:?}"
        );
    }
}

/// A consumption with arbitrary text (no control characters) survives the journal.
fn text() -> impl Strategy<Value = String> {
    proptest::string::string_regex("[^\\x00-\\x08\\x0B\\x0C\\x0E-\\x1F\\u{FFFE}\\u{FFFF}]{0,10}")
        .unwrap()
}

fn amount_text() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<f64>().prop_map(|f| format!("{f:?}").replace("inf", "INF")),
        any::<i64>().prop_map(|i| i.to_string()),
        Just("NaN".to_string()),
        Just(" 1e ".to_string()),
    ]
}

proptest! {
    #[test]
    fn journal_round_trip(
        kind in text(), title in proptest::option::of(text()), dates in (text(), text()),
        categories in proptest::collection::vec(text(), 0..3),
        movements in proptest::collection::vec(
            (text(), proptest::option::of(text()), proptest::option::of(text()),
             amount_text(), amount_text(), text(), proptest::collection::vec(text(), 0..2)),
            1..4),
    ) {
        let movements: Vec<Movement> = movements
            .into_iter()
            .map(|(resource, title, reference, q, p, vat, categories)| Movement {
                resource, title, reference,
                quantity: Amount::parse(&q).unwrap(),
                price: Amount::parse(&p).unwrap(),
                vat, categories,
            })
            .collect();
        let journal = Journal {
            transactions: vec![Transaction {
                kind: kind.clone(),
                title,
                start_date: dates.0,
                stop_date: dates.1,
                reference: "r".into(),
                currency: String::new(),
                payment_mode: String::new(),
                categories,
                arrows: vec![Arrow { kind, source: None, destination: Some("d".into()) }],
                movements,
            }],
        };
        let xml = encode_computer_journal(&journal);
        prop_assert_eq!(decode_computer_journal(xml.as_bytes(), &Limits::DEFAULT).unwrap(), journal);
    }

    #[test]
    fn decoders_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        let _ = decode_partition_consumption(&bytes, &Limits::SMALL);
        let _ = decode_computer_journal(&bytes, &Limits::SMALL);
    }

    #[test]
    fn decoders_never_panic_on_near_xml(
        parts in proptest::collection::vec(prop_oneof![
            Just("<consumption>"), Just("</consumption>"), Just("<journal>"), Just("</journal>"),
            Just("<transaction type=\"t\">"), Just("</transaction>"), Just("<movement>"),
            Just("</movement>"), Just("<resource>r</resource>"), Just("<quantity>"),
            Just("</quantity>"), Just("<price>0</price>"), Just("<VAT/>"), Just("<arrow type=\"a\"/>"),
            Just("<start_date/>"), Just("1e"), Just("-INF"), Just("&#"), Just("<!--"), Just("-->"),
            Just("<"), Just(">"), Just("é"), Just(" "),
        ], 0..30)) {
        let xml: String = parts.concat();
        let limits = Limits { max_depth: 5, max_elements: 20, ..Limits::SMALL };
        let _ = decode_partition_consumption(xml.as_bytes(), &limits);
        let _ = decode_computer_journal(xml.as_bytes(), &limits);
    }

    #[test]
    fn amount_parse_never_panics(text in "\\PC{0,12}") {
        if let Ok(a) = Amount::parse(&text) {
            prop_assert_eq!(a.text(), text.as_str());
        }
    }
}
