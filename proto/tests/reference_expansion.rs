//! Amplification (issue 17, item 4): a `<reference>` makes the marshal decoder copy the
//! container it names, so a small document can stand for a huge value. These tests check
//! that such documents are refused with `ExpandedTooLarge` (or `TooManyElements`) *before*
//! the copies are made, by measuring the heap the decoder allocates: this file's global
//! allocator counts, per thread, the bytes currently allocated and their peak. Nothing here
//! depends on time.
//!
//! They also check that the other decoders have nothing to expand (no DTD, no custom
//! entities), and that legitimate documents with references still decode to the value
//! Python builds.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};

use slapos_proto::marshal::{self, Value, ValueSize};
use slapos_proto::{instance_xml, journal, DecodeError, Limits};

// ----- a counting allocator ----------------------------------------------------------------

/// `System`, counting. Per thread (the tests run in parallel): the bytes this thread holds
/// and their peak since [`peak_heap`] last reset it. Globally: a cap, so that a regression
/// makes the test binary fail (an allocation failure aborts it) instead of eating the
/// machine's memory.
struct Counting;

const CAP: usize = 2 << 30;

static TOTAL: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    static CURRENT: Cell<isize> = const { Cell::new(0) };
    static PEAK: Cell<isize> = const { Cell::new(0) };
}

fn track(delta: isize) {
    let _ = CURRENT.try_with(|current| {
        let now = current.get().saturating_add(delta);
        current.set(now);
        let _ = PEAK.try_with(|peak| peak.set(peak.get().max(now)));
    });
}

fn reserve(size: usize) -> bool {
    if TOTAL
        .fetch_add(size, Ordering::Relaxed)
        .saturating_add(size)
        > CAP
    {
        TOTAL.fetch_sub(size, Ordering::Relaxed);
        return false;
    }
    track(isize::try_from(size).unwrap_or(isize::MAX));
    true
}

fn release(size: usize) {
    TOTAL.fetch_sub(size, Ordering::Relaxed);
    track(-isize::try_from(size).unwrap_or(isize::MAX));
}

// `alloc_zeroed` and `realloc` keep their default bodies, which go through `alloc` and
// `dealloc` (a reallocation counts both buffers while it copies: a true peak).
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if !reserve(layout.size()) {
            return std::ptr::null_mut();
        }
        // SAFETY: forwarded as received.
        let p = unsafe { System.alloc(layout) };
        if p.is_null() {
            release(layout.size());
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded as received.
        unsafe { System.dealloc(ptr, layout) };
        release(layout.size());
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Runs `f` and returns its result with the most heap this thread held meanwhile, above
/// what it held before (the result's own allocations included).
fn peak_heap<T>(f: impl FnOnce() -> T) -> (T, usize) {
    let before = CURRENT.with(Cell::get);
    PEAK.with(|peak| peak.set(before));
    let out = f();
    let peak = PEAK.with(Cell::get).saturating_sub(before);
    (out, usize::try_from(peak).unwrap_or(0))
}

// ----- documents -----------------------------------------------------------------------------

/// The document of the finding: a dictionary whose first value is a list holding one
/// 100 KB string, and whose 49,999 other values are references to that list (the way
/// Python marshals one list object stored under 50,000 keys). About 2.2 MB; 5 GB once
/// expanded.
fn attack_document() -> String {
    let mut doc = String::with_capacity(2_300_000);
    doc.push_str("<marshal><dictionary id=\"i2\"><string>k0</string><list id=\"i3\"><string>");
    doc.push_str(&"x".repeat(100 * 1024));
    doc.push_str("</string></list>");
    for i in 1..50_000 {
        doc.push_str(&format!("<string>k{i}</string><reference id=\"i3\"/>"));
    }
    doc.push_str("</dictionary></marshal>");
    doc
}

/// Billion laughs with references: level 0 is a list holding a 1 KB string, each of the
/// next `levels` levels a list of ten references to the level below.
fn laughs(levels: usize) -> String {
    let mut doc = format!(
        "<marshal><list id=\"i2\"><list id=\"l0\"><string>{}</string></list>",
        "a".repeat(1024)
    );
    for level in 1..=levels {
        doc.push_str(&format!("<list id=\"l{level}\">"));
        for _ in 0..10 {
            doc.push_str(&format!("<reference id=\"l{}\"/>", level - 1));
        }
        doc.push_str("</list>");
    }
    doc.push_str("</list></marshal>");
    doc
}

/// The gateway's limits for `connection_xml` and `partition_parameter_xml`
/// (`slap_gateway::FieldLimits::DEFAULT.parameters`).
const PARAMETERS: Limits = Limits {
    max_bytes: 4 * 1024 * 1024,
    max_depth: 64,
    max_elements: 200_000,
    max_expanded_bytes: 8 * 1024 * 1024,
};

fn is_reference_at(doc: &str, offset: usize) -> bool {
    doc.get(offset..)
        .is_some_and(|rest| rest.starts_with("<reference id=\""))
}

// ----- the attack ----------------------------------------------------------------------------

#[test]
fn the_attack_document_is_refused_before_any_copy() {
    let doc = attack_document();
    assert!((2_100_000..2_400_000).contains(&doc.len()), "{}", doc.len());
    for limits in [Limits::DEFAULT, PARAMETERS] {
        let (result, peak) = peak_heap(|| marshal::decode(doc.as_bytes(), &limits));
        let err = result.expect_err("5 GB of copies must be refused");
        let DecodeError::ExpandedTooLarge { limit, offset } = err else {
            panic!("refused for another reason: {err}");
        };
        assert_eq!(limit, limits.max_expanded_bytes);
        assert!(
            is_reference_at(&doc, offset),
            "offset {offset} is no reference"
        );
        assert_eq!(
            err.to_string(),
            format!(
                "references expand the document beyond the limit of {limit} bytes at byte {offset}"
            )
        );
        eprintln!(
            "attack document of {} bytes, limit {limit}: refused at byte {offset}, peak heap {peak} bytes",
            doc.len()
        );
        assert!(
            peak < 3 * doc.len(),
            "decoding a {} byte document peaked at {peak} bytes of heap",
            doc.len()
        );
    }
}

#[test]
fn nested_references_are_refused_before_any_copy() {
    // 10^8 copies of 1 KB at level 8, refused on bytes long before the element limit.
    let doc = laughs(8);
    let (result, peak) = peak_heap(|| marshal::decode(doc.as_bytes(), &Limits::DEFAULT));
    let err = result.expect_err("a reference bomb must be refused");
    assert!(
        matches!(err, DecodeError::ExpandedTooLarge { limit, offset }
            if limit == Limits::DEFAULT.max_expanded_bytes && is_reference_at(&doc, offset)),
        "{err}"
    );
    eprintln!(
        "nested references ({} bytes): {err}; peak heap {peak} bytes",
        doc.len()
    );
    assert!(peak < 64 * 1024, "peaked at {peak} bytes of heap");

    // Two levels (100 KB once expanded) fit in the default limits and expand in full...
    let small = laughs(2);
    let value = marshal::decode(small.as_bytes(), &Limits::DEFAULT).expect("within limits");
    let size = value.size();
    assert_eq!(size.text_bytes, (1 + 10 + 100) * 1024);
    // ... three (1.1 MB) do not fit in the small ones, and it costs no more than the
    // document to say so.
    let small = laughs(3);
    let (result, peak) = peak_heap(|| marshal::decode(small.as_bytes(), &Limits::SMALL));
    assert!(
        matches!(result, Err(DecodeError::ExpandedTooLarge { limit, .. }) if limit == Limits::SMALL.max_expanded_bytes),
        "{result:?}"
    );
    assert!(peak < 3 * small.len(), "peaked at {peak} bytes of heap");
}

#[test]
fn an_element_bomb_is_refused_before_any_copy() {
    // Each level holds two references to the level below (2^30 elements once expanded):
    // refused on the element count, as before, but now without building the first 2
    // million elements.
    let mut doc = String::from("<marshal><list id=\"i2\"><list id=\"i3\"><int>1</int></list>");
    for level in 4..34 {
        doc.push_str(&format!(
            "<list id=\"i{level}\"><reference id=\"i{}\"/><reference id=\"i{}\"/></list>",
            level - 1,
            level - 1
        ));
    }
    doc.push_str("</list></marshal>");
    let (result, peak) = peak_heap(|| marshal::decode(doc.as_bytes(), &Limits::DEFAULT));
    assert!(
        matches!(
            result,
            Err(DecodeError::TooManyElements {
                limit: 2_000_000,
                ..
            })
        ),
        "{result:?}"
    );
    eprintln!("element bomb ({} bytes): peak heap {peak} bytes", doc.len());
    assert!(peak < 64 * 1024, "peaked at {peak} bytes of heap");
}

#[test]
fn kept_copies_count_too() {
    // To resolve references the decoder keeps a copy of each container a reference names.
    // Sixty nested lists around one 1.2 MB string, each named by a reference at the end
    // (after the ids were given to empty lists, so the references themselves copy
    // nothing): the kept copies alone would be 72 MB.
    let mut doc = String::from("<marshal><tuple>");
    for i in 0..60 {
        doc.push_str(&format!("<list id=\"a{i}\">"));
    }
    doc.push_str("<string>");
    doc.push_str(&"y".repeat(1200 * 1024));
    doc.push_str("</string>");
    doc.push_str(&"</list>".repeat(60));
    for i in 0..60 {
        doc.push_str(&format!("<list id=\"a{i}\"/>"));
    }
    for i in 0..60 {
        doc.push_str(&format!("<reference id=\"a{i}\"/>"));
    }
    doc.push_str("</tuple></marshal>");
    let (result, peak) = peak_heap(|| marshal::decode(doc.as_bytes(), &Limits::DEFAULT));
    let err = result.expect_err("72 MB of kept copies must be refused");
    assert!(
        matches!(err, DecodeError::ExpandedTooLarge { offset, .. }
            if doc.get(offset..).is_some_and(|rest| rest.starts_with("<list id=\"a"))),
        "{err}"
    );
    eprintln!(
        "kept copies ({} bytes): {err}; peak heap {peak} bytes",
        doc.len()
    );
    assert!(peak < 3 * doc.len(), "peaked at {peak} bytes of heap");
}

// ----- the measure, exactly ------------------------------------------------------------------

#[test]
fn the_expanded_size_is_the_document_plus_each_copy() {
    // `i3` spans 34 bytes up to its end tag (`<list id="i3"><string>abc</string>`); it is
    // copied twice: the copy kept to resolve references, and the one the reference stands
    // for.
    let doc = "<marshal><list id=\"i2\"><list id=\"i3\"><string>abc</string></list>\
               <reference id=\"i3\"/></list></marshal>";
    let span = "<list id=\"i3\"><string>abc</string>".len();
    assert_eq!(span, 34);
    let expanded = doc.len() + 2 * span;
    let limits = |max_expanded_bytes| Limits {
        max_bytes: doc.len(),
        max_expanded_bytes,
        ..Limits::SMALL
    };
    let abc = Value::List(vec!["abc".into()]);
    assert_eq!(
        marshal::decode(doc.as_bytes(), &limits(expanded)),
        Ok(Value::List(vec![abc.clone(), abc]))
    );
    let at = |s: &str| doc.find(s).expect("in the document");
    assert_eq!(
        marshal::decode(doc.as_bytes(), &limits(expanded - 1)),
        Err(DecodeError::ExpandedTooLarge {
            limit: expanded - 1,
            offset: at("<reference"),
        })
    );
    assert_eq!(
        marshal::decode(doc.as_bytes(), &limits(doc.len() + span - 1)),
        Err(DecodeError::ExpandedTooLarge {
            limit: doc.len() + span - 1,
            offset: at("<list id=\"i3\""),
        })
    );
    // Without references the document is all there is: a limit equal to its size is enough.
    let plain =
        "<marshal><list id=\"i2\"><list id=\"i3\"><string>abc</string></list></list></marshal>";
    let tight = Limits {
        max_bytes: plain.len(),
        max_expanded_bytes: plain.len(),
        ..Limits::SMALL
    };
    assert!(marshal::decode(plain.as_bytes(), &tight).is_ok());
}

#[test]
fn references_inside_referenced_containers_count_in_each_copy() {
    // `b` holds a reference to `a`: every copy of `b` carries a copy of `a`.
    let doc = "<marshal><list id=\"i2\"><list id=\"a\"><string>abc</string></list>\
               <list id=\"b\"><reference id=\"a\"/></list><reference id=\"b\"/></list></marshal>";
    let a = "<list id=\"a\"><string>abc</string>".len();
    let b = "<list id=\"b\"><reference id=\"a\"/>".len() + a;
    // kept a, the reference in b, kept b, the reference to b
    let expanded = doc.len() + a + a + b + b;
    let limits = |max_expanded_bytes| Limits {
        max_expanded_bytes,
        ..Limits::SMALL
    };
    let value = marshal::decode(doc.as_bytes(), &limits(expanded)).expect("fits exactly");
    let copy_of_a = Value::List(vec!["abc".into()]);
    let copy_of_b = Value::List(vec![copy_of_a.clone()]);
    assert_eq!(
        value,
        Value::List(vec![copy_of_a, copy_of_b.clone(), copy_of_b])
    );
    assert!(matches!(
        marshal::decode(doc.as_bytes(), &limits(expanded - 1)),
        Err(DecodeError::ExpandedTooLarge { offset, .. }) if offset == doc.rfind("<reference").unwrap_or(0)
    ));
}

// ----- legitimate documents ------------------------------------------------------------------

#[test]
fn python_shared_objects_still_decode_to_copies() {
    // Written by xml_marshaller 1.0.3 (lxml, Python 3) for
    //   shared = {'url': 'http://x', 'ports': [1, 2]}; lst = ['a', 'b']
    //   {'first': shared, 'second': shared, 'l': [lst, lst, (lst,)],
    //    'nested': {'again': shared, 'inner': lst}}
    // and read back by its `loads` as
    //   {'first': {'ports': [1, 2], 'url': 'http://x'},
    //    'l': [['a', 'b'], ['a', 'b'], (['a', 'b'],)],
    //    'nested': {'again': {'ports': [1, 2], 'url': 'http://x'}, 'inner': ['a', 'b']},
    //    'second': {'ports': [1, 2], 'url': 'http://x'}}
    let doc = "<marshal><dictionary id=\"i2\"><string>first</string><dictionary id=\"i3\">\
               <string>ports</string><list id=\"i4\"><int>1</int><int>2</int></list>\
               <string>url</string><string>http://x</string></dictionary><string>l</string>\
               <list id=\"i5\"><list id=\"i6\"><string>a</string><string>b</string></list>\
               <reference id=\"i6\"/><tuple><reference id=\"i6\"/></tuple></list>\
               <string>nested</string><dictionary id=\"i7\"><string>again</string>\
               <reference id=\"i3\"/><string>inner</string><reference id=\"i6\"/></dictionary>\
               <string>second</string><reference id=\"i3\"/></dictionary></marshal>";
    let shared = Value::Dict(vec![
        (
            "ports".into(),
            Value::List(vec![Value::Int(1), Value::Int(2)]),
        ),
        ("url".into(), "http://x".into()),
    ]);
    let lst = Value::List(vec!["a".into(), "b".into()]);
    let expected = Value::Dict(vec![
        ("first".into(), shared.clone()),
        (
            "l".into(),
            Value::List(vec![
                lst.clone(),
                lst.clone(),
                Value::Tuple(vec![lst.clone()]),
            ]),
        ),
        (
            "nested".into(),
            Value::Dict(vec![
                ("again".into(), shared.clone()),
                ("inner".into(), lst),
            ]),
        ),
        ("second".into(), shared),
    ]);
    for limits in [Limits::DEFAULT, Limits::SMALL, PARAMETERS] {
        assert_eq!(
            marshal::decode(doc.as_bytes(), &limits),
            Ok(expected.clone())
        );
    }
    assert_eq!(
        expected.size(),
        ValueSize {
            values: 43,
            text_bytes: 84,
            height: 5
        }
    );
}

// ----- the other decoders have nothing to expand ---------------------------------------------

/// The classic billion laughs: ten entities, each ten of the one before.
fn entity_laughs(root: &str) -> String {
    let mut doc =
        String::from("<?xml version=\"1.0\"?>\n<!DOCTYPE lolz [\n<!ENTITY lol0 \"lol\">\n");
    for i in 1..10 {
        doc.push_str(&format!(
            "<!ENTITY lol{i} \"{}\">\n",
            format!("&lol{};", i - 1).repeat(10)
        ));
    }
    doc.push_str("]>\n");
    doc.push_str(&format!("<{root}>&lol9;</{root}>"));
    doc
}

fn refuses_doctype(result: Result<(), DecodeError>) {
    assert!(
        matches!(&result, Err(DecodeError::Invalid { what: "document", message, .. }) if message.contains("DOCTYPE")),
        "{result:?}"
    );
}

#[test]
fn no_decoder_reads_a_dtd() {
    let limits = Limits::DEFAULT;
    let doc = entity_laughs("instance");
    let (result, peak) = peak_heap(|| instance_xml::decode(doc.as_bytes(), &limits).map(drop));
    refuses_doctype(result);
    assert!(peak < 64 * 1024, "peaked at {peak} bytes of heap");
    let doc = entity_laughs("journal");
    let (result, peak) =
        peak_heap(|| journal::decode_computer_journal(doc.as_bytes(), &limits).map(drop));
    refuses_doctype(result);
    assert!(peak < 64 * 1024, "peaked at {peak} bytes of heap");
    let doc = entity_laughs("consumption");
    refuses_doctype(journal::decode_partition_consumption(doc.as_bytes(), &limits).map(drop));
    let doc = entity_laughs("marshal");
    let (result, peak) = peak_heap(|| marshal::decode(doc.as_bytes(), &limits).map(drop));
    refuses_doctype(result);
    assert!(peak < 64 * 1024, "peaked at {peak} bytes of heap");
}

#[test]
fn custom_entities_are_not_expanded() {
    // Without a DTD an entity other than the five XML predefines is undefined, in text and
    // in attribute values, whatever quick-xml (instance XML, journals) or the marshal
    // tokenizer would otherwise do with it.
    let limits = Limits::DEFAULT;
    for doc in [
        "<instance><parameter id=\"a\">&lol;</parameter></instance>",
        "<instance><parameter id=\"&lol;\">x</parameter></instance>",
    ] {
        let err = instance_xml::decode(doc.as_bytes(), &limits).expect_err(doc);
        assert!(
            matches!(&err, DecodeError::Syntax { message, .. } if message.contains("lol")),
            "{doc}: {err}"
        );
    }
    let err = journal::decode_partition_consumption(
        b"<consumption><movement><resource>&lol;</resource></movement></consumption>",
        &limits,
    )
    .expect_err("undefined entity");
    assert!(
        matches!(&err, DecodeError::Syntax { message, .. } if message.contains("lol")),
        "{err}"
    );
    for doc in [
        "<marshal><string>&lol;</string></marshal>",
        "<marshal><reference id=\"&lol;\"/></marshal>",
    ] {
        let err = marshal::decode(doc.as_bytes(), &limits).expect_err(doc);
        assert!(
            matches!(&err, DecodeError::Syntax { message, .. } if message.contains("undefined entity")),
            "{doc}: {err}"
        );
    }
}

#[test]
fn character_references_only_shrink() {
    // The references XML itself defines stand for one character each, never more bytes
    // than the reference: what a decoder reads is at most the size of the document.
    let refs = "&#x10FFFF;&#1114111;&amp;&lt;&gt;&quot;&apos;&#9;".repeat(1000);
    let doc = format!("<instance><parameter id=\"{refs}\">{refs}</parameter></instance>");
    let dict = instance_xml::decode(doc.as_bytes(), &Limits::DEFAULT).expect("valid");
    let decoded: usize = dict
        .iter()
        .map(|(k, v)| k.len() + v.as_ref().map_or(0, String::len))
        .sum();
    assert!(decoded <= doc.len(), "{decoded} > {}", doc.len());
    let doc = format!("<marshal><string>{refs}</string></marshal>");
    let value = marshal::decode(doc.as_bytes(), &Limits::DEFAULT).expect("valid");
    assert!(value.size().text_bytes <= doc.len());
}
