//! Usage documents: the consumption file a partition's report script writes
//! (`partition_consumption.xsd`, root `consumption`) and the computer journal that
//! `useComputer` carries (`computer_consumption.xsd`, root `journal`), with the journal
//! slapgrid builds from partition files (`slapos node report`).
//!
//! The decoders validate what the two XML Schemas of slapos.core validate (libxml2 via
//! lxml), checked against lxml 6.1:
//!
//! * the root element (`consumption` / `journal`) and, below it, elements in exactly the
//!   schema's sequence with its cardinalities (`movement`+; `resource`, `title`?,
//!   `reference`?, `quantity`, `price`, `VAT`, `category`*; `transaction`+ with `title`?,
//!   `start_date`, `stop_date`, `reference`, `currency`, `payment_mode`, `category`*,
//!   `arrow`+, `movement`+; `arrow` with `source`?, `destination`?);
//! * no attributes except the required `type` of `transaction` and `arrow` (any value);
//! * element-only content: no text other than whitespace between elements (comments and
//!   processing instructions are allowed anywhere, as in XSD);
//! * `xs:string` elements: text only, no child element; the value is all their text,
//!   whitespace kept;
//! * `xs:float` elements (`quantity`, `price`): libxml2's lexical check, see [`Amount`].
//!
//! Beyond the schemas the shared tree reader refuses DOCTYPEs and namespaces.

use std::fmt;
use std::str::FromStr;

use crate::instance_xml::tree::{self, is_xml_space, Element, Node};
use crate::{DecodeError, Limits};

/// A number of the usage documents (`quantity`, `price`; XSD type `xs:float`), kept as the
/// text that was written, with its value as an `f64`.
///
/// The text is the source of truth: re-encoding writes it unchanged (so a journal
/// re-encodes byte for byte, `512` stays `512` and `0.0` stays `0.0`), and accounting can
/// read it as an exact decimal ([`Amount::text`], trimmed of the leading and trailing
/// whitespace XSD allows, via [`Amount::trimmed`]) instead of going through binary
/// floating point. [`Amount::value`] is the nearest `f64`, for everything else (XSD's
/// `xs:float` is single precision; the `f64` is closer to the decimal written, never
/// farther).
///
/// Accepted text is what libxml2 accepts for `xs:float`, which is a little looser than
/// the XSD 1.0 grammar: leading XML whitespace; then `NaN`, `INF` or `-INF` ending the
/// text; or an optional sign, digits with an optional `.` (at least one digit in all), an
/// optional exponent `e`/`E` with an optional sign and *zero or more* digits (`1e` and
/// `1e+` pass; they mean an exponent of 0 here), and trailing XML whitespace. `+INF`,
/// `inf`, `0x10`, `1,5` and the empty text are refused.
#[derive(Debug, Clone)]
pub struct Amount {
    text: String,
    value: f64,
}

impl Amount {
    /// Checks `text` as libxml2 checks an `xs:float` and keeps it.
    pub fn parse(text: &str) -> Result<Amount, String> {
        let value = parse_xs_float(text)
            .ok_or_else(|| format!("{text:?} is not a valid xs:float number"))?;
        Ok(Amount {
            text: text.to_owned(),
            value,
        })
    }

    /// The text exactly as written in the document.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// The text without the surrounding whitespace that XSD ignores: `3.75`, `-INF`.
    pub fn trimmed(&self) -> &str {
        self.text.trim_matches(is_xml_space)
    }

    /// The value as the nearest `f64` (`NaN`, infinities included).
    pub fn value(&self) -> f64 {
        self.value
    }
}

/// Equal when the texts are equal (the value follows from the text).
impl PartialEq for Amount {
    fn eq(&self, other: &Amount) -> bool {
        self.text == other.text
    }
}

impl Eq for Amount {}

impl fmt::Display for Amount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl FromStr for Amount {
    type Err = String;

    fn from_str(text: &str) -> Result<Amount, String> {
        Amount::parse(text)
    }
}

/// libxml2's `xs:float` lexical check (`xmlSchemaValAtomicType`), returning the value.
fn parse_xs_float(text: &str) -> Option<f64> {
    let s = text.trim_start_matches(is_xml_space);
    match s {
        "NaN" => return Some(f64::NAN),
        "INF" => return Some(f64::INFINITY),
        "-INF" => return Some(f64::NEG_INFINITY),
        _ => {}
    }
    let bytes = s.as_bytes();
    let mut i = 0;
    let negative = match bytes.first() {
        Some(b'-') => {
            i += 1;
            true
        }
        Some(b'+') => {
            i += 1;
            false
        }
        _ => false,
    };
    let digits = |from: usize| {
        bytes.get(from..).map_or(0, |rest| {
            rest.iter().take_while(|b| b.is_ascii_digit()).count()
        })
    };
    let whole = &s[i..i + digits(i)];
    i += whole.len();
    let mut fraction = "";
    if bytes.get(i) == Some(&b'.') {
        i += 1;
        fraction = &s[i..i + digits(i)];
        i += fraction.len();
    }
    if whole.is_empty() && fraction.is_empty() {
        return None;
    }
    let mut exponent = String::new();
    if matches!(bytes.get(i), Some(b'e' | b'E')) {
        i += 1;
        if let Some(sign @ (b'+' | b'-')) = bytes.get(i) {
            exponent.push(char::from(*sign));
            i += 1;
        }
        let exponent_digits = &s[i..i + digits(i)];
        i += exponent_digits.len();
        exponent.push_str(exponent_digits);
        if exponent_digits.is_empty() {
            exponent.clear();
        }
    }
    if !s[i..].chars().all(is_xml_space) {
        return None;
    }
    let canonical = format!(
        "{}{}.{}e{}",
        if negative { "-" } else { "" },
        if whole.is_empty() { "0" } else { whole },
        if fraction.is_empty() { "0" } else { fraction },
        if exponent.is_empty() { "0" } else { &exponent },
    );
    canonical.parse().ok()
}

/// One line of usage, as both documents carry it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Movement {
    /// What was consumed, e.g. `service_module/cpu_load_percent`.
    pub resource: String,
    pub title: Option<String>,
    /// In a partition file anything (slapgrid overwrites it with the partition id); in a
    /// journal the partition id (or the computer id / user name in `node collect`'s).
    pub reference: Option<String>,
    pub quantity: Amount,
    pub price: Amount,
    /// The `VAT` element (a string; slapgrid writes `None` for an empty one).
    pub vat: String,
    pub categories: Vec<String>,
}

/// A partition consumption file (`partition_consumption.xsd`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Consumption {
    /// One or more.
    pub movements: Vec<Movement>,
}

/// A computer journal (`computer_consumption.xsd`), the body of `useComputer`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Journal {
    /// One or more.
    pub transactions: Vec<Transaction>,
}

/// One `transaction` of a journal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transaction {
    /// The required `type` attribute (slapgrid: `Sale Packing List`).
    pub kind: String,
    pub title: Option<String>,
    pub start_date: String,
    pub stop_date: String,
    pub reference: String,
    pub currency: String,
    pub payment_mode: String,
    pub categories: Vec<String>,
    /// One or more.
    pub arrows: Vec<Arrow>,
    /// One or more.
    pub movements: Vec<Movement>,
}

/// An `arrow` of a transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Arrow {
    /// The required `type` attribute (slapgrid: `Administration`).
    pub kind: String,
    pub source: Option<String>,
    pub destination: Option<String>,
}

/// Reads and validates a partition consumption file, as slapgrid does before queuing it.
pub fn decode_partition_consumption(
    input: &[u8],
    limits: &Limits,
) -> Result<Consumption, DecodeError> {
    let root = tree::parse(input, limits)?;
    expect_root(&root, "consumption")?;
    let mut children = Sequence::of(&root, &[])?;
    let movements = children
        .one_or_more("movement")?
        .into_iter()
        .map(movement)
        .collect::<Result<_, _>>()?;
    children.finish()?;
    Ok(Consumption { movements })
}

/// Reads and validates a computer journal, as the master does for `useComputer`.
pub fn decode_computer_journal(input: &[u8], limits: &Limits) -> Result<Journal, DecodeError> {
    let root = tree::parse(input, limits)?;
    expect_root(&root, "journal")?;
    let mut children = Sequence::of(&root, &[])?;
    let transactions = children
        .one_or_more("transaction")?
        .into_iter()
        .map(transaction)
        .collect::<Result<_, _>>()?;
    children.finish()?;
    Ok(Journal { transactions })
}

/// Writes a journal in the form slapgrid's `asXML` writes: `<?xml version="1.0"?>` and the
/// document on the same line, no whitespace, every element with a start and an end tag
/// (`<currency></currency>`), optional elements only when present, no trailing newline.
///
/// slapgrid pastes element text in without escaping. This writer escapes the few
/// characters for which that paste gives a document that is not well formed or does not
/// read back the same: `&` and `<` (`&amp;`, `&lt;`), the `>` of `]]>`, and CR (`&#13;`);
/// in the `type` attributes also `"`, TAB and LF. Every other character is written as it
/// is (so `>` alone stays `>`, as slapgrid writes it). For every journal that slapgrid
/// can send (its own output must validate before it is sent) the bytes are identical.
///
/// `node collect` writes its journals with lxml instead (`<?xml version='1.0'
/// encoding='utf-8'?>`, `<arrow type="Destination"/>`); they decode, and re-encode in
/// this form, not in lxml's.
pub fn encode_computer_journal(journal: &Journal) -> String {
    let mut out = String::from("<?xml version=\"1.0\"?><journal>");
    for t in &journal.transactions {
        out.push_str("<transaction type=\"");
        escape_attribute(&mut out, &t.kind);
        out.push_str("\">");
        if let Some(title) = &t.title {
            simple(&mut out, "title", title);
        }
        simple(&mut out, "start_date", &t.start_date);
        simple(&mut out, "stop_date", &t.stop_date);
        simple(&mut out, "reference", &t.reference);
        simple(&mut out, "currency", &t.currency);
        simple(&mut out, "payment_mode", &t.payment_mode);
        for category in &t.categories {
            simple(&mut out, "category", category);
        }
        for arrow in &t.arrows {
            out.push_str("<arrow type=\"");
            escape_attribute(&mut out, &arrow.kind);
            out.push_str("\">");
            if let Some(source) = &arrow.source {
                simple(&mut out, "source", source);
            }
            if let Some(destination) = &arrow.destination {
                simple(&mut out, "destination", destination);
            }
            out.push_str("</arrow>");
        }
        for m in &t.movements {
            out.push_str("<movement>");
            simple(&mut out, "resource", &m.resource);
            if let Some(title) = &m.title {
                simple(&mut out, "title", title);
            }
            if let Some(reference) = &m.reference {
                simple(&mut out, "reference", reference);
            }
            simple(&mut out, "quantity", m.quantity.text());
            simple(&mut out, "price", m.price.text());
            simple(&mut out, "VAT", &m.vat);
            for category in &m.categories {
                simple(&mut out, "category", category);
            }
            out.push_str("</movement>");
        }
        out.push_str("</transaction>");
    }
    out.push_str("</journal>");
    out
}

/// The journal `slapos node report` builds from the valid partition files it found
/// (slapgrid's `asXML`): one transaction of type `Sale Packing List`, title `Resource
/// consumptions`, empty start date, `stop_date` as given (slapgrid: local time formatted
/// `%Y-%m-%d at %H:%M:%S`), reference the computer id, empty currency, payment mode and
/// one empty category, one arrow `Administration` with empty source and destination, and
/// the movements of every report in order. In each movement the `reference`, when the
/// file had one, is replaced by the partition id, and every empty text becomes `None`
/// (slapgrid writes Python's `str(None)` for lxml's `.text` of an empty element); the
/// rest is copied as written. `reports` holds one entry per file, partition id first; a
/// partition with several files appears several times.
///
/// slapgrid sends nothing when no report was found; with `reports` empty this returns a
/// transaction without movements, which the schema refuses: do not send it.
///
/// Known difference: slapgrid copies lxml's `.text`, the text before the first child
/// node; for an element whose text is split by a comment (`<VAT>a<!-- -->b</VAT>`) it
/// would copy `a` where this copies `ab`.
pub fn journal_from_partition_reports(
    computer_id: &str,
    stop_date: &str,
    reports: &[(String, Consumption)],
) -> Journal {
    let none_if_empty = |text: &str| {
        if text.is_empty() {
            "None".to_owned()
        } else {
            text.to_owned()
        }
    };
    let movements = reports
        .iter()
        .flat_map(|(partition_id, consumption)| {
            consumption.movements.iter().map(move |m| (partition_id, m))
        })
        .map(|(partition_id, m)| Movement {
            resource: none_if_empty(&m.resource),
            title: m.title.as_deref().map(none_if_empty),
            reference: m.reference.as_ref().map(|_| partition_id.clone()),
            quantity: m.quantity.clone(),
            price: m.price.clone(),
            vat: none_if_empty(&m.vat),
            categories: m.categories.iter().map(|c| none_if_empty(c)).collect(),
        })
        .collect();
    Journal {
        transactions: vec![Transaction {
            kind: "Sale Packing List".to_owned(),
            title: Some("Resource consumptions".to_owned()),
            start_date: String::new(),
            stop_date: stop_date.to_owned(),
            reference: computer_id.to_owned(),
            currency: String::new(),
            payment_mode: String::new(),
            categories: vec![String::new()],
            arrows: vec![Arrow {
                kind: "Administration".to_owned(),
                source: Some(String::new()),
                destination: Some(String::new()),
            }],
            movements,
        }],
    }
}

fn simple(out: &mut String, tag: &str, text: &str) {
    out.push('<');
    out.push_str(tag);
    out.push('>');
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '\r' => out.push_str("&#13;"),
            // Only the `>` of `]]>` must be escaped; the start tag just written ends in `>`,
            // so `]]` here always comes from this text.
            '>' if out.ends_with("]]") => out.push_str("&gt;"),
            c => out.push(c),
        }
    }
    out.push_str("</");
    out.push_str(tag);
    out.push('>');
}

fn escape_attribute(out: &mut String, text: &str) {
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '"' => out.push_str("&quot;"),
            '\t' => out.push_str("&#9;"),
            '\n' => out.push_str("&#10;"),
            '\r' => out.push_str("&#13;"),
            c => out.push(c),
        }
    }
}

fn expect_root(root: &Element, name: &str) -> Result<(), DecodeError> {
    if root.name == name {
        return Ok(());
    }
    Err(DecodeError::Unexpected {
        offset: root.offset,
        found: format!("root element <{}>", root.name),
        expected: format!("root element <{name}>"),
    })
}

fn transaction(element: &Element) -> Result<Transaction, DecodeError> {
    let mut children = Sequence::of(element, &["type"])?;
    let kind = required_attribute(element, "type")?;
    let title = children.optional("title").map(text).transpose()?;
    let start_date = text(children.required("start_date")?)?;
    let stop_date = text(children.required("stop_date")?)?;
    let reference = text(children.required("reference")?)?;
    let currency = text(children.required("currency")?)?;
    let payment_mode = text(children.required("payment_mode")?)?;
    let categories = children
        .zero_or_more("category")
        .into_iter()
        .map(text)
        .collect::<Result<_, _>>()?;
    let arrows = children
        .one_or_more("arrow")?
        .into_iter()
        .map(arrow)
        .collect::<Result<_, _>>()?;
    let movements = children
        .one_or_more("movement")?
        .into_iter()
        .map(movement)
        .collect::<Result<_, _>>()?;
    children.finish()?;
    Ok(Transaction {
        kind,
        title,
        start_date,
        stop_date,
        reference,
        currency,
        payment_mode,
        categories,
        arrows,
        movements,
    })
}

fn arrow(element: &Element) -> Result<Arrow, DecodeError> {
    let mut children = Sequence::of(element, &["type"])?;
    let kind = required_attribute(element, "type")?;
    let source = children.optional("source").map(text).transpose()?;
    let destination = children.optional("destination").map(text).transpose()?;
    children.finish()?;
    Ok(Arrow {
        kind,
        source,
        destination,
    })
}

fn movement(element: &Element) -> Result<Movement, DecodeError> {
    let mut children = Sequence::of(element, &[])?;
    let resource = text(children.required("resource")?)?;
    let title = children.optional("title").map(text).transpose()?;
    let reference = children.optional("reference").map(text).transpose()?;
    let quantity = amount(children.required("quantity")?)?;
    let price = amount(children.required("price")?)?;
    let vat = text(children.required("VAT")?)?;
    let categories = children
        .zero_or_more("category")
        .into_iter()
        .map(text)
        .collect::<Result<_, _>>()?;
    children.finish()?;
    Ok(Movement {
        resource,
        title,
        reference,
        quantity,
        price,
        vat,
        categories,
    })
}

fn required_attribute(element: &Element, name: &str) -> Result<String, DecodeError> {
    element
        .attribute(name)
        .map(str::to_owned)
        .ok_or_else(|| DecodeError::Invalid {
            what: "element",
            offset: element.offset,
            message: format!("<{}> has no {name} attribute", element.name),
        })
}

/// The value of an element of type `xs:string`.
fn text(element: &Element) -> Result<String, DecodeError> {
    check_attributes(element, &[])?;
    if let Some(child) = element.child_elements().next() {
        return Err(DecodeError::Invalid {
            what: "element",
            offset: child.offset,
            message: format!(
                "<{}> holds text only, found element <{}>",
                element.name, child.name
            ),
        });
    }
    Ok(element.text_content())
}

/// The value of an element of type `xs:float`.
fn amount(element: &Element) -> Result<Amount, DecodeError> {
    let value = text(element)?;
    Amount::parse(&value).map_err(|message| DecodeError::Invalid {
        what: "number",
        offset: element.offset,
        message: format!("<{}>: {message}", element.name),
    })
}

fn check_attributes(element: &Element, allowed: &[&str]) -> Result<(), DecodeError> {
    match element
        .attributes
        .iter()
        .find(|(name, _)| !allowed.contains(&name.as_str()))
    {
        Some((name, _)) => Err(DecodeError::Invalid {
            what: "element",
            offset: element.offset,
            message: format!("attribute {name} is not allowed on <{}>", element.name),
        }),
        None => Ok(()),
    }
}

/// The child elements of an element of element-only content, consumed in schema order.
struct Sequence<'a> {
    parent: &'a Element,
    items: Vec<&'a Element>,
    next: usize,
    /// Optional elements that could have come at the current position (for messages).
    skipped: Vec<&'static str>,
}

impl<'a> Sequence<'a> {
    /// Checks attributes and that the only text is whitespace.
    fn of(parent: &'a Element, attributes: &[&str]) -> Result<Sequence<'a>, DecodeError> {
        check_attributes(parent, attributes)?;
        for child in &parent.children {
            if let Node::Text(text) = child {
                if !text.chars().all(is_xml_space) {
                    return Err(DecodeError::Invalid {
                        what: "element",
                        offset: parent.offset,
                        message: format!(
                            "<{}> holds elements only, found text {:?}",
                            parent.name,
                            text.trim_matches(is_xml_space)
                        ),
                    });
                }
            }
        }
        Ok(Sequence {
            parent,
            items: parent.child_elements().collect(),
            next: 0,
            skipped: Vec::new(),
        })
    }

    fn take(&mut self, name: &'static str) -> Option<&'a Element> {
        let item = self.items.get(self.next).filter(|e| e.name == name)?;
        self.next += 1;
        self.skipped.clear();
        Some(item)
    }

    fn optional(&mut self, name: &'static str) -> Option<&'a Element> {
        let item = self.take(name);
        if item.is_none() {
            self.skipped.push(name);
        }
        item
    }

    fn zero_or_more(&mut self, name: &'static str) -> Vec<&'a Element> {
        let mut out = Vec::new();
        while let Some(item) = self.take(name) {
            out.push(item);
        }
        self.skipped.push(name);
        out
    }

    fn required(&mut self, name: &'static str) -> Result<&'a Element, DecodeError> {
        self.skipped.push(name);
        match self.take(name) {
            Some(item) => Ok(item),
            None => Err(self.unexpected()),
        }
    }

    fn one_or_more(&mut self, name: &'static str) -> Result<Vec<&'a Element>, DecodeError> {
        let first = self.required(name)?;
        let mut out = vec![first];
        out.extend(self.zero_or_more(name));
        Ok(out)
    }

    fn finish(mut self) -> Result<(), DecodeError> {
        if self.next < self.items.len() {
            self.skipped.push("");
            return Err(self.unexpected());
        }
        Ok(())
    }

    /// The error for the element at the current position (or the missing one), listing
    /// what could have come there; `""` in `skipped` stands for the end of the parent.
    fn unexpected(&self) -> DecodeError {
        let expected = self
            .skipped
            .iter()
            .map(|name| match *name {
                "" => format!("the end of <{}>", self.parent.name),
                name => format!("<{name}>"),
            })
            .collect::<Vec<_>>()
            .join(" or ");
        match self.items.get(self.next) {
            Some(found) => DecodeError::Unexpected {
                offset: found.offset,
                found: format!("element <{}> in <{}>", found.name, self.parent.name),
                expected,
            },
            None => DecodeError::Unexpected {
                offset: self.parent.offset,
                found: format!("end of <{}>", self.parent.name),
                expected,
            },
        }
    }
}
