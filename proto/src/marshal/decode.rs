//! The reader: a SAX-like loop over [`Tokenizer`] tokens with an explicit stack (so depth
//! costs heap, not call stack), mirroring `xml_marshaller`'s `Unmarshaller`.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};

use super::keys::{self, Unhashable};
use super::xml::{self, syntax, RawAttr, Token, Tokenizer};
use super::{Object, SlapClass, Value, SLAP_MODULE};
use crate::{DecodeError, Limits};

/// Longest integer text accepted (CPython 3.11's default `int_max_str_digits`).
const MAX_INT_DIGITS: usize = 4300;

/// Most namespace prefixes declared at once (real documents declare one at most); keeps
/// prefix lookups cheap.
const MAX_PREFIXES: usize = 64;

/// Unmarshals one document, bounded by `limits`.
///
/// Accepts what Python's `xml_marshaller.loads` accepts from real clients: the root
/// `<marshal>` with one value, elements recognised by local name (so the form prefixed with
/// a namespace is accepted), `<string/>`, `<unicode>`, `<long>`, `<reference id="iN"/>`
/// (resolved to a copy of the earlier list, dictionary or object with that id; the copy
/// counts against `max_elements`, `max_depth` and `max_expanded_bytes`, and a document whose
/// references would cross one of them is refused before any copy is made), and the second
/// unescaping of `&lt;`, `&gt;`, `&amp;` in strings. Objects must be one of the four
/// `slapos.slap.slap` classes.
///
/// Refuses, with the byte offset of the problem: documents over `max_bytes` (checked before
/// anything else), deeper than `max_depth`, with more than `max_elements` elements or whose
/// references expand them beyond `max_expanded_bytes`, malformed XML, DOCTYPE, text outside
/// values, unknown elements, bad numbers, dictionaries with an odd number of children or
/// unhashable keys, and references that are unknown or point into a value that is not
/// complete yet (a cycle).
pub fn decode(input: &[u8], limits: &Limits) -> Result<Value, DecodeError> {
    if input.len() > limits.max_bytes {
        return Err(DecodeError::TooLarge {
            size: input.len(),
            limit: limits.max_bytes,
        });
    }
    let text = xml::checked_text(input)?;
    match Decoder::new(text, limits, None).run() {
        Err(Restart::NeedReferences) => {
            let wanted = referenced_ids(text)?;
            // Sizes every copy the second pass would make, without making any: a document
            // that references would blow up is refused here, in time and memory
            // proportional to its own size.
            check_expansion(text, limits, &wanted)?;
            Decoder::new(text, limits, Some(wanted))
                .run()
                .map_err(Restart::into_error)
        }
        other => other.map_err(Restart::into_error),
    }
}

/// Either a real error, or the signal that the document uses `<reference>` and must be read
/// again remembering the containers it refers to.
enum Restart {
    Error(DecodeError),
    NeedReferences,
}

impl From<DecodeError> for Restart {
    fn from(e: DecodeError) -> Self {
        Restart::Error(e)
    }
}

impl Restart {
    fn into_error(self) -> DecodeError {
        match self {
            Restart::Error(e) => e,
            // Unreachable in practice: the second pass knows every referenced id.
            Restart::NeedReferences => DecodeError::Invalid {
                what: "reference",
                offset: 0,
                message: "unresolvable reference".into(),
            },
        }
    }
}

/// The ids named by `<reference>` elements (a quick pass over the tokens).
fn referenced_ids(text: &str) -> Result<HashSet<String>, DecodeError> {
    let mut tokenizer = Tokenizer::new(text);
    let mut ids = HashSet::new();
    loop {
        match tokenizer.next_token()? {
            Token::Eof => return Ok(ids),
            Token::Start { name, .. } if local_name(name) == "reference" => {
                for attr in tokenizer.attrs() {
                    if local_name(attr.name) == "id" {
                        ids.insert(xml::decode_attr(attr.value, attr.value_offset)?.into_owned());
                    }
                }
            }
            _ => {}
        }
    }
}

/// What one copy of a referenced container costs, and how tall it is.
#[derive(Debug, Clone, Copy)]
struct Extent {
    /// Elements in the container, the copies inside it included.
    elements: usize,
    /// Its bytes in the document (from its start tag to its end tag) plus the expanded
    /// bytes of every reference inside it: an upper bound on the text a copy holds.
    bytes: usize,
    /// Levels in the container, the copies inside it included.
    height: usize,
}

/// The counters behind `max_elements`, `max_depth` and `max_expanded_bytes`, shared by
/// [`check_expansion`] and the second pass so that both count alike.
struct Budget<'l> {
    limits: &'l Limits,
    elements: usize,
    /// The document's size plus every copy made so far.
    bytes: usize,
}

impl<'l> Budget<'l> {
    fn new(limits: &'l Limits, len: usize) -> Self {
        Budget {
            limits,
            elements: 0,
            bytes: len,
        }
    }

    fn add_elements(&mut self, n: usize, offset: usize) -> Result<(), DecodeError> {
        self.elements = self.elements.saturating_add(n);
        if self.elements > self.limits.max_elements {
            return Err(DecodeError::TooManyElements {
                limit: self.limits.max_elements,
                offset,
            });
        }
        Ok(())
    }

    fn add_bytes(&mut self, n: usize, offset: usize) -> Result<(), DecodeError> {
        self.bytes = self.bytes.saturating_add(n);
        if self.bytes > self.limits.max_expanded_bytes {
            return Err(DecodeError::ExpandedTooLarge {
                limit: self.limits.max_expanded_bytes,
                offset,
            });
        }
        Ok(())
    }

    /// An element starting at `offset`, `depth` levels down (the root is 1).
    fn element(&mut self, offset: usize, depth: usize) -> Result<(), DecodeError> {
        self.add_elements(1, offset)?;
        if depth > self.limits.max_depth {
            return Err(DecodeError::TooDeep {
                limit: self.limits.max_depth,
                offset,
            });
        }
        Ok(())
    }

    /// The copy a `<reference>` at `offset`, `depth` levels down, stands for.
    fn reference(
        &mut self,
        extent: Extent,
        offset: usize,
        depth: usize,
    ) -> Result<(), DecodeError> {
        self.add_elements(extent.elements, offset)?;
        if depth - 1 + extent.height > self.limits.max_depth {
            return Err(DecodeError::TooDeep {
                limit: self.limits.max_depth,
                offset,
            });
        }
        self.add_bytes(extent.bytes, offset)
    }

    /// The copy kept of a referenced container that starts at `offset`.
    fn keep(&mut self, extent: Extent, offset: usize) -> Result<(), DecodeError> {
        self.add_elements(extent.elements, offset)?;
        self.add_bytes(extent.bytes, offset)
    }
}

/// The id of a list, dictionary, object or reference: the attribute whose local name is
/// `id` (namespace declarations aside), as the second pass reads it.
fn id_attr<'a>(attrs: &[RawAttr<'a>]) -> Result<Option<Cow<'a, str>>, DecodeError> {
    attrs
        .iter()
        .find(|a| {
            !(a.name == "xmlns" || a.name.starts_with("xmlns:")) && local_name(a.name) == "id"
        })
        .map(|a| xml::decode_attr(a.value, a.value_offset))
        .transpose()
}

/// Runs the second pass's counting (elements, depth, expanded bytes) over the tokens alone,
/// keeping only the [`Extent`] of each referenced container, and fails with the limit the
/// second pass would cross first, at the same offset. Nothing here grows with what the
/// references expand to, so a reference bomb costs one pass over the document.
///
/// Everything else (well-formedness beyond the tokens, unknown or cyclic references) is
/// left to the second pass, which applies the same limits again while it copies.
fn check_expansion(
    text: &str,
    limits: &Limits,
    wanted: &HashSet<String>,
) -> Result<(), DecodeError> {
    struct Open<'a> {
        /// The id, when this is a container some reference names.
        id: Option<Cow<'a, str>>,
        offset: usize,
        elements: usize,
        height: usize,
        /// Expanded bytes of the references inside.
        extra: usize,
    }
    let mut budget = Budget::new(limits, text.len());
    let mut tokenizer = Tokenizer::new(text);
    let mut open: Vec<Open<'_>> = Vec::new();
    // `None` while the container is open (a reference to it would be a cycle).
    let mut done: HashMap<Cow<'_, str>, Option<Extent>> = HashMap::new();
    loop {
        let (start, end) = match tokenizer.next_token()? {
            Token::Eof => return Ok(()),
            Token::Start {
                name,
                offset,
                self_closing,
            } => (Some((name, offset)), self_closing.then_some(offset)),
            Token::End { offset, .. } => (None, Some(offset)),
            Token::Text { .. } | Token::CData { .. } => continue,
        };
        if let Some((qname, offset)) = start {
            let depth = open.len() + 1;
            budget.element(offset, depth)?;
            let mut frame = Open {
                id: None,
                offset,
                elements: 1,
                height: 1,
                extra: 0,
            };
            match local_name(qname) {
                "reference" => {
                    let target = id_attr(tokenizer.attrs())?;
                    if let Some(Some(extent)) = target.and_then(|id| done.get(&id).copied()) {
                        budget.reference(extent, offset, depth)?;
                        frame.elements = extent.elements;
                        frame.height = extent.height;
                        frame.extra = extent.bytes;
                    }
                }
                "list" | "dictionary" | "object" => {
                    if let Some(id) = id_attr(tokenizer.attrs())? {
                        if wanted.contains(id.as_ref()) {
                            done.insert(id.clone(), None);
                            frame.id = Some(id);
                        }
                    }
                }
                _ => {}
            }
            open.push(frame);
        }
        let Some(end) = end else { continue };
        // An unmatched end tag is the second pass's to report.
        let Some(frame) = open.pop() else { continue };
        if let Some(id) = frame.id {
            let extent = Extent {
                elements: frame.elements,
                bytes: end.saturating_sub(frame.offset).saturating_add(frame.extra),
                height: frame.height,
            };
            budget.keep(extent, frame.offset)?;
            done.insert(id, Some(extent));
        }
        if let Some(parent) = open.last_mut() {
            parent.elements = parent.elements.saturating_add(frame.elements);
            parent.height = parent.height.max(frame.height + 1);
            parent.extra = parent.extra.saturating_add(frame.extra);
        }
    }
}

fn name_is_reference(qname: &str) -> bool {
    local_name(qname) == "reference"
}

fn local_name(qname: &str) -> &str {
    match qname.bytes().rposition(|b| b == b':') {
        Some(i) => qname.get(i + 1..).unwrap_or(""),
        None => qname,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ScalarKind {
    Str,
    Int,
    Long,
    Float,
    Bool,
}

impl ScalarKind {
    fn tag(self) -> &'static str {
        match self {
            ScalarKind::Str => "string",
            ScalarKind::Int => "int",
            ScalarKind::Long => "long",
            ScalarKind::Float => "float",
            ScalarKind::Bool => "bool",
        }
    }
}

enum Kind {
    Root(Option<Value>),
    Scalar(ScalarKind, String),
    None,
    Tuple(Vec<Value>),
    List(Vec<Value>),
    Dict(Vec<Value>),
    Object(SlapClass, Vec<Value>),
    /// A resolved `<reference>`, waiting for its end tag.
    Reference(Value),
}

struct Frame<'a> {
    qname: &'a str,
    offset: usize,
    /// The `id` attribute, kept only when some `<reference>` names it.
    ref_id: Option<String>,
    kind: Kind,
    /// Elements in this subtree, this one included.
    elements: usize,
    /// Levels in this subtree, this one included.
    height: usize,
    /// Expanded bytes of the references in this subtree (see [`Extent::bytes`]).
    extra: usize,
}

/// A copy of a container that some `<reference>` names, with its extent (the map of these
/// holds `None` while the container is still open).
struct Stored {
    value: Value,
    extent: Extent,
}

struct Decoder<'a, 'l> {
    tokens: Tokenizer<'a>,
    /// Length of the input, the offset of errors at its end.
    len: usize,
    budget: Budget<'l>,
    stack: Vec<Frame<'a>>,
    /// Namespace prefixes in scope, with the depth that declared them.
    prefixes: Vec<(&'a str, usize)>,
    /// `Some` on the second pass: the referenced ids and what they resolved to.
    wanted: Option<HashSet<String>>,
    stored: HashMap<String, Option<Stored>>,
}

fn unexpected(offset: usize, found: impl Into<String>, expected: impl Into<String>) -> DecodeError {
    DecodeError::Unexpected {
        offset,
        found: found.into(),
        expected: expected.into(),
    }
}

fn invalid(what: &'static str, offset: usize, message: impl Into<String>) -> DecodeError {
    DecodeError::Invalid {
        what,
        offset,
        message: message.into(),
    }
}

impl<'a, 'l> Decoder<'a, 'l> {
    fn new(text: &'a str, limits: &'l Limits, wanted: Option<HashSet<String>>) -> Self {
        Decoder {
            tokens: Tokenizer::new(text),
            len: text.len(),
            budget: Budget::new(limits, text.len()),
            stack: Vec::new(),
            prefixes: Vec::new(),
            wanted,
            stored: HashMap::new(),
        }
    }

    fn run(mut self) -> Result<Value, Restart> {
        let mut result: Option<Value> = None;
        loop {
            match self.tokens.next_token()? {
                Token::Eof => break,
                Token::Start {
                    name,
                    offset,
                    self_closing,
                } => {
                    if result.is_some() {
                        return Err(syntax(offset, "content after the root element").into());
                    }
                    self.start(name, offset)?;
                    if self_closing {
                        if let Some(v) = self.end(name, offset)? {
                            result = Some(v);
                        }
                    }
                }
                Token::End { name, offset } => {
                    if let Some(v) = self.end(name, offset)? {
                        result = Some(v);
                    }
                }
                Token::Text { raw, offset } => self.text(raw, offset, false)?,
                Token::CData { raw, offset } => self.text(raw, offset, true)?,
            }
        }
        if let Some(frame) = self.stack.last() {
            return Err(syntax(
                self.len,
                format!(
                    "the document ends inside <{}> (opened at byte {})",
                    frame.qname, frame.offset
                ),
            )
            .into());
        }
        result.ok_or_else(|| syntax(0, "the document has no root element").into())
    }

    fn text(&mut self, raw: &str, offset: usize, cdata: bool) -> Result<(), DecodeError> {
        match self.stack.last_mut().map(|f| &mut f.kind) {
            Some(Kind::Scalar(_, buf)) => {
                if cdata {
                    xml::decode_cdata(raw, buf);
                    Ok(())
                } else {
                    xml::decode_text(raw, offset, buf)
                }
            }
            // Python ignores the content of <none>.
            Some(Kind::None) => Ok(()),
            _ if !cdata && xml::is_blank(raw) => Ok(()),
            Some(_) => Err(unexpected(offset, "text", "an element")),
            None => Err(syntax(offset, "text outside the root element")),
        }
    }

    /// Checks namespace prefixes, records declarations, and returns the raw `id`, `module`
    /// and `class` attributes (by local name, as Python's SAX handler reads them).
    fn start_attrs(
        &mut self,
        qname: &'a str,
        offset: usize,
        depth: usize,
    ) -> Result<[Option<RawAttr<'a>>; 3], DecodeError> {
        let mut found: [Option<RawAttr<'a>>; 3] = [None, None, None];
        let mut any_prefixed = qname.contains(':');
        for attr in self.tokens.attrs() {
            if !attr.name.contains(':') {
                continue;
            }
            any_prefixed = true;
            if let Some(prefix) = attr.name.strip_prefix("xmlns:") {
                if prefix.contains(':') || attr.value.is_empty() {
                    return Err(syntax(attr.value_offset, "malformed namespace declaration"));
                }
                if self.prefixes.len() >= MAX_PREFIXES {
                    return Err(invalid(
                        "document",
                        attr.value_offset,
                        format!("more than {MAX_PREFIXES} namespace prefixes declared at once"),
                    ));
                }
                self.prefixes.push((prefix, depth));
            }
        }
        if any_prefixed {
            check_prefix(&self.prefixes, qname, offset)?;
        }
        for attr in self.tokens.attrs() {
            if attr.name == "xmlns" || attr.name.starts_with("xmlns:") {
                continue;
            }
            if any_prefixed {
                check_prefix(&self.prefixes, attr.name, attr.value_offset)?;
            }
            let slot = match local_name(attr.name) {
                "id" => 0,
                "module" => 1,
                "class" => 2,
                _ => continue,
            };
            if let Some(s) = found.get_mut(slot) {
                if s.is_some() {
                    return Err(syntax(
                        attr.value_offset,
                        format!("duplicate attribute `{}`", local_name(attr.name)),
                    ));
                }
                *s = Some(*attr);
            }
        }
        Ok(found)
    }

    fn start(&mut self, qname: &'a str, offset: usize) -> Result<(), Restart> {
        let depth = self.stack.len() + 1;
        self.budget.element(offset, depth)?;
        let [raw_id, raw_module, raw_class] = self.start_attrs(qname, offset, depth)?;
        let decode_raw = |attr: Option<RawAttr<'a>>| -> Result<Option<Cow<'a, str>>, DecodeError> {
            attr.map(|a| xml::decode_attr(a.value, a.value_offset))
                .transpose()
        };
        // The id matters only when a reference may name it (second pass).
        let id = match (&self.wanted, name_is_reference(qname)) {
            (None, false) => None,
            _ => decode_raw(raw_id)?,
        };
        let name = local_name(qname);

        match self.stack.last().map(|f| &f.kind) {
            None if name != "marshal" => {
                return Err(
                    unexpected(offset, format!("<{qname}>"), "the root element <marshal>").into(),
                )
            }
            None => {}
            Some(Kind::Root(Some(_))) => {
                return Err(unexpected(
                    offset,
                    format!("<{qname}>"),
                    "the end of <marshal> (it holds one value)",
                )
                .into())
            }
            Some(Kind::Scalar(k, _)) => {
                return Err(unexpected(
                    offset,
                    format!("<{qname}>"),
                    format!("text inside <{}>", k.tag()),
                )
                .into())
            }
            Some(Kind::None) | Some(Kind::Reference(_)) => {
                return Err(unexpected(offset, format!("<{qname}>"), "an empty element").into())
            }
            Some(Kind::Object(_, parts)) if parts.len() >= 2 => {
                return Err(unexpected(
                    offset,
                    format!("<{qname}>"),
                    "the end of <object> (it holds a tuple and a dictionary)",
                )
                .into())
            }
            Some(_) => {}
        }

        let mut height = 1;
        let mut elements = 1;
        let mut extra = 0;
        let kind = match name {
            "marshal" if self.stack.is_empty() => Kind::Root(None),
            "marshal" => {
                return Err(invalid(
                    "document",
                    offset,
                    "<marshal> found elsewhere than at the root",
                )
                .into())
            }
            "string" | "unicode" => Kind::Scalar(ScalarKind::Str, String::new()),
            "int" => Kind::Scalar(ScalarKind::Int, String::new()),
            "long" => Kind::Scalar(ScalarKind::Long, String::new()),
            "float" => Kind::Scalar(ScalarKind::Float, String::new()),
            "bool" => Kind::Scalar(ScalarKind::Bool, String::new()),
            "none" => Kind::None,
            "tuple" => Kind::Tuple(Vec::new()),
            "list" => Kind::List(Vec::new()),
            "dictionary" => Kind::Dict(Vec::new()),
            "object" => {
                let module = decode_raw(raw_module)?
                    .ok_or_else(|| invalid("object", offset, "missing `module` attribute"))?;
                let class = decode_raw(raw_class)?
                    .ok_or_else(|| invalid("object", offset, "missing `class` attribute"))?;
                if module != SLAP_MODULE {
                    return Err(invalid(
                        "object",
                        offset,
                        format!("module `{module}` is not {SLAP_MODULE}"),
                    )
                    .into());
                }
                let class = SlapClass::from_name(&class).ok_or_else(|| {
                    invalid(
                        "object",
                        offset,
                        format!(
                            "class `{class}` is not one of Computer, ComputerPartition, \
                             SoftwareRelease, SoftwareInstance"
                        ),
                    )
                })?;
                Kind::Object(class, Vec::new())
            }
            "reference" => {
                let Some(wanted) = &self.wanted else {
                    return Err(Restart::NeedReferences);
                };
                let id = id
                    .clone()
                    .ok_or_else(|| invalid("reference", offset, "missing `id` attribute"))?;
                if !wanted.contains(id.as_ref()) {
                    return Err(Restart::NeedReferences);
                }
                let stored = match self.stored.get(id.as_ref()) {
                    Some(Some(stored)) => stored,
                    Some(None) => {
                        return Err(invalid(
                            "reference",
                            offset,
                            format!(
                            "`{id}` refers to an enclosing value that is not complete (a cycle)"
                        ),
                        )
                        .into())
                    }
                    None => {
                        return Err(invalid(
                            "reference",
                            offset,
                            format!("`{id}` names no earlier list, dictionary or object"),
                        )
                        .into())
                    }
                };
                // Counted before the copy is made (`check_expansion` already counted the
                // same, so this refuses only if the two ever disagree).
                self.budget.reference(stored.extent, offset, depth)?;
                height = stored.extent.height;
                elements = stored.extent.elements;
                extra = stored.extent.bytes;
                Kind::Reference(stored.value.clone())
            }
            "set" | "complex" | "code" => {
                return Err(invalid(
                    "value",
                    offset,
                    format!("<{name}> is not supported (SLAP never uses it)"),
                )
                .into())
            }
            _ => {
                return Err(
                    unexpected(offset, format!("element <{qname}>"), "a marshalled value").into(),
                )
            }
        };
        let ref_id = match (&kind, &self.wanted, id) {
            (Kind::List(_) | Kind::Dict(_) | Kind::Object(..), Some(wanted), Some(id))
                if wanted.contains(id.as_ref()) =>
            {
                let id = id.into_owned();
                self.stored.insert(id.clone(), None);
                Some(id)
            }
            _ => None,
        };
        self.stack.push(Frame {
            qname,
            offset,
            ref_id,
            kind,
            elements,
            height,
            extra,
        });
        Ok(())
    }

    /// Closes the current element; returns the document's value when the root closes.
    fn end(&mut self, qname: &str, offset: usize) -> Result<Option<Value>, Restart> {
        let depth = self.stack.len();
        let Some(frame) = self.stack.pop() else {
            return Err(syntax(offset, format!("</{qname}> closes nothing")).into());
        };
        if frame.qname != qname {
            return Err(syntax(
                offset,
                format!(
                    "</{qname}> does not close <{}> (opened at byte {})",
                    frame.qname, frame.offset
                ),
            )
            .into());
        }
        // Declarations are pushed in document order, so the closing element's are last.
        while self.prefixes.last().is_some_and(|(_, d)| *d >= depth) {
            self.prefixes.pop();
        }
        let Frame {
            offset: start,
            ref_id,
            kind,
            elements,
            height,
            extra,
            ..
        } = frame;
        let value = match kind {
            Kind::Root(value) => {
                return value.map(Some).ok_or_else(|| {
                    unexpected(offset, "</marshal>", "a value inside <marshal>").into()
                })
            }
            Kind::Scalar(kind, text) => scalar(kind, text, start)?,
            Kind::None => Value::None,
            Kind::Tuple(items) => Value::Tuple(items),
            Kind::List(items) => Value::List(items),
            Kind::Dict(flat) => Value::Dict(dict(flat, start)?),
            Kind::Object(class, parts) => object(class, parts, start)?,
            Kind::Reference(value) => value,
        };
        if let Some(id) = ref_id {
            // The kept copy counts like any other copy, so nested references cannot make
            // memory grow faster than the limits allow. `offset` is the end tag's (the
            // start tag's for `<list id=".."/>`), so the bytes are the element's own up to
            // its end tag.
            let extent = Extent {
                elements,
                bytes: offset.saturating_sub(start).saturating_add(extra),
                height,
            };
            self.budget.keep(extent, start)?;
            self.stored.insert(
                id,
                Some(Stored {
                    value: value.clone(),
                    extent,
                }),
            );
        }
        if let Some(parent) = self.stack.last_mut() {
            parent.elements = parent.elements.saturating_add(elements);
            parent.height = parent.height.max(height + 1);
            parent.extra = parent.extra.saturating_add(extra);
            match &mut parent.kind {
                Kind::Root(slot) => *slot = Some(value),
                Kind::Tuple(items)
                | Kind::List(items)
                | Kind::Dict(items)
                | Kind::Object(_, items) => items.push(value),
                // `start` refuses children in the other kinds.
                _ => {}
            }
        }
        Ok(None)
    }
}

fn check_prefix(prefixes: &[(&str, usize)], qname: &str, offset: usize) -> Result<(), DecodeError> {
    let Some((prefix, local)) = qname.split_once(':') else {
        return Ok(());
    };
    if prefix.is_empty() || local.is_empty() || local.contains(':') {
        return Err(syntax(
            offset,
            format!("malformed qualified name `{qname}`"),
        ));
    }
    if prefix != "xml" && !prefixes.iter().rev().any(|(p, _)| *p == prefix) {
        return Err(syntax(
            offset,
            format!("unbound namespace prefix `{prefix}`"),
        ));
    }
    Ok(())
}

fn dict(flat: Vec<Value>, offset: usize) -> Result<Vec<(Value, Value)>, DecodeError> {
    if !flat.len().is_multiple_of(2) {
        return Err(invalid(
            "dictionary",
            offset,
            format!(
                "an odd number of children ({}), not alternating keys and values",
                flat.len()
            ),
        ));
    }
    keys::merge_entries(flat).map_err(|Unhashable(kind)| {
        invalid(
            "dictionary",
            offset,
            format!("unhashable key of type {kind}"),
        )
    })
}

fn object(class: SlapClass, parts: Vec<Value>, offset: usize) -> Result<Value, DecodeError> {
    let mut parts = parts.into_iter();
    let (Some(Value::Tuple(args)), Some(Value::Dict(entries)), None) =
        (parts.next(), parts.next(), parts.next())
    else {
        return Err(invalid(
            "object",
            offset,
            "an <object> holds a <tuple> of constructor arguments and a <dictionary> of attributes",
        ));
    };
    let attrs = entries
        .into_iter()
        .map(|(k, v)| match k {
            Value::Str(name) => Ok((name, v)),
            other => Err(invalid(
                "object",
                offset,
                format!("attribute name of type {} (must be str)", other.type_name()),
            )),
        })
        .collect::<Result<_, _>>()?;
    Ok(Value::Object(Box::new(Object { class, args, attrs })))
}

fn scalar(kind: ScalarKind, text: String, offset: usize) -> Result<Value, DecodeError> {
    match kind {
        ScalarKind::Str => Ok(Value::Str(unescape_second(text))),
        ScalarKind::Int | ScalarKind::Long => {
            parse_int(&text).map_err(|m| invalid(kind.tag(), offset, m))
        }
        ScalarKind::Bool => match parse_int(&text) {
            Ok(Value::Int(0)) => Ok(Value::Bool(false)),
            Ok(_) => Ok(Value::Bool(true)),
            Err(m) => Err(invalid("bool", offset, m)),
        },
        ScalarKind::Float => parse_float(&text).map(Value::Float).ok_or_else(|| {
            invalid(
                "float",
                offset,
                format!("`{}` is not a number", shorten(&text)),
            )
        }),
    }
}

/// `saxutils.unescape`: `&lt;`, `&gt;`, then `&amp;`. The three patterns cannot overlap,
/// so one left-to-right pass gives the same result as Python's three replaces.
fn unescape_second(text: String) -> String {
    if !text.contains('&') {
        return text;
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text.as_str();
    while let Some(i) = rest.find('&') {
        out.push_str(rest.get(..i).unwrap_or(""));
        let tail = rest.get(i..).unwrap_or("");
        let (c, len) = if tail.starts_with("&lt;") {
            ('<', 4)
        } else if tail.starts_with("&gt;") {
            ('>', 4)
        } else if tail.starts_with("&amp;") {
            ('&', 5)
        } else {
            ('&', 1)
        };
        out.push(c);
        rest = tail.get(len..).unwrap_or("");
    }
    out.push_str(rest);
    out
}

fn shorten(text: &str) -> String {
    let mut s: String = text.chars().take(40).collect();
    if s.len() < text.len() {
        s.push('…');
    }
    s
}

/// Python's `str.strip()` for the ASCII white space `int()` and `float()` skip.
fn py_strip(text: &str) -> &str {
    text.trim_matches(|c: char| matches!(c, ' ' | '\t' | '\n' | '\r' | '\x0b' | '\x0c'))
}

/// Removes PEP 515 underscores (each must sit between two digits); `None` if misplaced.
fn strip_underscores(s: &str) -> Option<std::borrow::Cow<'_, str>> {
    if !s.contains('_') {
        return Some(std::borrow::Cow::Borrowed(s));
    }
    let bytes = s.as_bytes();
    for (i, &b) in bytes.iter().enumerate() {
        if b == b'_' {
            let before = i.checked_sub(1).and_then(|j| bytes.get(j));
            let after = bytes.get(i + 1);
            if !before.is_some_and(u8::is_ascii_digit) || !after.is_some_and(u8::is_ascii_digit) {
                return None;
            }
        }
    }
    Some(std::borrow::Cow::Owned(s.replace('_', "")))
}

/// Python's `int(text)`: surrounding white space, a sign, decimal digits (leading zeros and
/// PEP 515 underscores allowed). Gives `Int`, or `Long` outside the `i64` range.
fn parse_int(text: &str) -> Result<Value, String> {
    let bad = || format!("`{}` is not a decimal integer", shorten(text));
    let s = py_strip(text);
    let (negative, body) = match s.as_bytes().first() {
        Some(b'-') => (true, s.get(1..).unwrap_or("")),
        Some(b'+') => (false, s.get(1..).unwrap_or("")),
        _ => (false, s),
    };
    let body = strip_underscores(body).ok_or_else(bad)?;
    if body.is_empty() || !body.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    if body.len() > MAX_INT_DIGITS {
        return Err(format!(
            "integer with more than {MAX_INT_DIGITS} digits (Python's limit)"
        ));
    }
    let digits = body.trim_start_matches('0');
    if digits.is_empty() {
        return Ok(Value::Int(0));
    }
    let mut canonical = String::with_capacity(digits.len() + 1);
    if negative {
        canonical.push('-');
    }
    canonical.push_str(digits);
    Ok(match canonical.parse::<i64>() {
        Ok(i) => Value::Int(i),
        Err(_) => Value::Long(canonical),
    })
}

/// Python's `float(text)`: surrounding white space, `inf`/`infinity`/`nan` in any case with
/// an optional sign, decimal and scientific notation, PEP 515 underscores.
fn parse_float(text: &str) -> Option<f64> {
    let s = py_strip(text);
    let s = strip_underscores(s)?;
    // Rust accepts the same grammar, but also nothing Python refuses except these words.
    let (sign, word) = match s.as_bytes().first() {
        Some(b'-' | b'+') => (s.get(..1).unwrap_or(""), s.get(1..).unwrap_or("")),
        _ => ("", s.as_ref()),
    };
    let lower = word.to_ascii_lowercase();
    if lower.starts_with("inf") || lower.starts_with("nan") {
        return match lower.as_str() {
            "inf" | "infinity" => Some(if sign == "-" {
                f64::NEG_INFINITY
            } else {
                f64::INFINITY
            }),
            "nan" => Some(f64::NAN),
            _ => None,
        };
    }
    if !word
        .bytes()
        .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'e' | b'E' | b'+' | b'-'))
    {
        return None;
    }
    s.parse::<f64>().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_python_ints() {
        assert_eq!(parse_int(" 42\n"), Ok(Value::Int(42)));
        assert_eq!(parse_int("-007"), Ok(Value::Int(-7)));
        assert_eq!(parse_int("+1_000"), Ok(Value::Int(1000)));
        assert_eq!(parse_int("-0"), Ok(Value::Int(0)));
        assert_eq!(
            parse_int("9223372036854775808"),
            Ok(Value::Long("9223372036854775808".into()))
        );
        assert_eq!(parse_int("-9223372036854775808"), Ok(Value::Int(i64::MIN)));
        for bad in ["", "1.0", "0x10", "1__0", "_1", "1_", "--1", "1 2", "١"] {
            assert!(parse_int(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn parses_python_floats() {
        assert_eq!(parse_float("2.5"), Some(2.5));
        assert_eq!(parse_float(" 1e+300 "), Some(1e300));
        assert_eq!(parse_float("-Infinity"), Some(f64::NEG_INFINITY));
        assert!(parse_float("nan").is_some_and(f64::is_nan));
        assert_eq!(parse_float("1_0.5"), Some(10.5));
        assert_eq!(parse_float(".5"), Some(0.5));
        for bad in ["", "1.2.3", "infinit", "0x1p3", "1e", "e5", "nan1"] {
            assert!(parse_float(bad).is_none(), "{bad}");
        }
    }

    /// The second pass alone, without `check_expansion` before it.
    fn second_pass(text: &str, limits: &Limits) -> Result<Value, DecodeError> {
        let wanted = referenced_ids(text)?;
        Decoder::new(text, limits, Some(wanted))
            .run()
            .map_err(Restart::into_error)
    }

    #[test]
    fn the_scan_and_the_second_pass_count_alike() {
        let docs = [
            "<marshal><list id=\"i2\"><list id=\"a\"><string>abc</string></list>\
             <list id=\"b\"><reference id=\"a\"/><reference id=\"a\"></reference></list>\
             <tuple><reference id=\"b\"/></tuple><reference id=\"b\"/></list></marshal>",
            "<marshal><list id=\"i2\"><list id=\"a\"/><dictionary id=\"a\"><int>1</int>\
             <list><string>xyz</string></list></dictionary><reference id=\"a\"/>\
             <reference id=\"a\"/><reference id=\"a\"/></list></marshal>",
            "<m:marshal xmlns:m=\"http://www.erp5.org/namespaces/marshaller\"><m:list m:id=\"i2\">\
             <m:list m:id=\"i3\"><m:list m:id=\"i4\"><m:none/></m:list></m:list>\
             <m:reference m:id=\"i3\"/><m:reference m:id=\"i4\"/></m:list></m:marshal>",
            "<marshal><tuple><object module=\"slapos.slap.slap\" class=\"Computer\" id=\"o\">\
             <tuple><string>c</string></tuple><dictionary id=\"d\"><string>k</string>\
             <string>v</string></dictionary></object><reference id=\"o\"/><reference id=\"d\"/>\
             </tuple></marshal>",
        ];
        for doc in docs {
            let whole = decode(doc.as_bytes(), &Limits::SMALL);
            assert!(whole.is_ok(), "{doc}: {whole:?}");
            for max_elements in (1..40).step_by(2) {
                for max_depth in 1..7 {
                    for max_expanded_bytes in (0..=4 * doc.len()).step_by(11) {
                        let limits = Limits {
                            max_bytes: doc.len(),
                            max_depth,
                            max_elements,
                            max_expanded_bytes,
                        };
                        let scan = referenced_ids(doc)
                            .and_then(|wanted| check_expansion(doc, &limits, &wanted));
                        let second = second_pass(doc, &limits);
                        match scan {
                            Err(e) => assert_eq!(second, Err(e), "{doc} {limits:?}"),
                            Ok(()) => assert!(second.is_ok(), "{doc} {limits:?}: {second:?}"),
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn the_second_pass_checks_expansion_on_its_own() {
        let doc = "<marshal><list id=\"i2\"><list id=\"i3\"><string>abc</string></list>\
                   <reference id=\"i3\"/></list></marshal>";
        let limits = Limits {
            max_expanded_bytes: doc.len() + 34 + 33,
            ..Limits::SMALL
        };
        assert_eq!(
            second_pass(doc, &limits),
            Err(DecodeError::ExpandedTooLarge {
                limit: limits.max_expanded_bytes,
                offset: doc.find("<reference").unwrap_or(0),
            })
        );
    }

    #[test]
    fn second_unescape_matches_python() {
        assert_eq!(
            unescape_second("a&lt;b&amp;lt;&gt;&amp;&x".into()),
            "a<b&lt;>&&x"
        );
    }
}
