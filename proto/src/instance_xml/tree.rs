//! A small bounded XML reader shared by the instance XML and journal decoders.
//!
//! It reads a whole document into a tree of [`Element`]s, the way lxml's `fromstring` does
//! for the Python code we mirror, and refuses what lxml would refuse for the documents SLAP
//! uses: malformed XML, invalid UTF-8 and characters XML 1.0 forbids, undefined entities,
//! text outside the root element. It also refuses, on purpose, what SLAP documents never
//! contain and what makes XML parsers dangerous: any `DOCTYPE` (so no entity declarations
//! and no entity expansion), and namespaces (SLAP documents use none; refusing them keeps
//! element names literal). Size is checked before anything else, depth and element count
//! while reading, so work and memory stay proportional to [`Limits`].

use std::borrow::Cow;

use quick_xml::events::{BytesStart, Event};
use quick_xml::{Reader, XmlVersion};

use crate::{DecodeError, Limits};

/// One element: its name, attributes (normalized values) and children in document order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Element {
    pub name: String,
    /// Byte offset of the `<` that opens the element.
    pub offset: usize,
    pub attributes: Vec<(String, String)>,
    pub children: Vec<Node>,
}

/// A child node. Adjacent text, CDATA sections and references are merged into one `Text`;
/// comments and processing instructions are kept as `Other` because they end lxml's
/// `.text` (the text before the first child node).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Node {
    Element(Element),
    Text(String),
    Other,
}

impl Element {
    pub fn attribute(&self, name: &str) -> Option<&str> {
        self.attributes
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }

    /// lxml's `element.text`: the text before the first child node, `None` when there is
    /// none (an empty element, or one that starts with a child element or comment).
    pub fn leading_text(&self) -> Option<&str> {
        match self.children.first() {
            Some(Node::Text(text)) if !text.is_empty() => Some(text),
            _ => None,
        }
    }

    /// All the text directly inside the element (comments and processing instructions
    /// skipped): the value XML Schema validates for an element of simple type.
    pub fn text_content(&self) -> String {
        let mut out = String::new();
        for child in &self.children {
            if let Node::Text(text) = child {
                out.push_str(text);
            }
        }
        out
    }

    pub fn child_elements(&self) -> impl Iterator<Item = &Element> {
        self.children.iter().filter_map(|child| match child {
            Node::Element(element) => Some(element),
            _ => None,
        })
    }

    /// Every element below this one, in document order (lxml's `iter()` minus the root).
    pub fn descendants(&self) -> Vec<&Element> {
        let mut out = Vec::new();
        let mut stack: Vec<&Element> = self.child_elements().collect();
        stack.reverse();
        while let Some(element) = stack.pop() {
            out.push(element);
            let first = stack.len();
            stack.extend(element.child_elements());
            stack[first..].reverse();
        }
        out
    }
}

/// XML whitespace (the `S` production).
pub(crate) fn is_xml_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\r')
}

/// The `Char` production of XML 1.0 (Rust strings hold no surrogates).
fn is_xml_char(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}')
        || c >= '\u{10000}'
}

/// The `Name` production, exact for ASCII and permissive above it (every non-ASCII
/// character XML allows in names is accepted; a few it does not, such as U+00D7, are too).
/// Colons are handled by the caller (namespaces are refused).
fn is_xml_name(name: &str) -> bool {
    let mut chars = name.chars();
    let Some(first) = chars.next() else {
        return false;
    };
    let start = |c: char| c.is_ascii_alphabetic() || c == '_' || c == ':' || !c.is_ascii();
    start(first) && chars.all(|c| start(c) || c.is_ascii_digit() || c == '-' || c == '.')
}

fn predefined_entity(name: &str) -> Option<&'static str> {
    match name {
        "amp" => Some("&"),
        "lt" => Some("<"),
        "gt" => Some(">"),
        "quot" => Some("\""),
        "apos" => Some("'"),
        _ => None,
    }
}

fn syntax(offset: usize, message: impl Into<String>) -> DecodeError {
    DecodeError::Syntax {
        offset,
        message: message.into(),
    }
}

/// Reads `input` into its root element.
pub(crate) fn parse(input: &[u8], limits: &Limits) -> Result<Element, DecodeError> {
    if input.len() > limits.max_bytes {
        return Err(DecodeError::TooLarge {
            size: input.len(),
            limit: limits.max_bytes,
        });
    }
    let text = std::str::from_utf8(input)
        .map_err(|e| syntax(e.valid_up_to(), "invalid UTF-8 (documents must be UTF-8)"))?;
    if let Some((offset, c)) = text.char_indices().find(|&(_, c)| !is_xml_char(c)) {
        return Err(syntax(
            offset,
            format!("character U+{:04X} is not allowed in XML 1.0", u32::from(c)),
        ));
    }
    let (base, body) = match text.strip_prefix('\u{FEFF}') {
        Some(rest) => ('\u{FEFF}'.len_utf8(), rest),
        None => (0, text),
    };
    Parser {
        limits,
        base,
        stack: Vec::new(),
        root: None,
        elements: 0,
    }
    .run(body)
}

struct Parser<'l> {
    limits: &'l Limits,
    /// Offset of the parsed text in the input (3 after a byte order mark).
    base: usize,
    stack: Vec<Element>,
    root: Option<Element>,
    elements: usize,
}

impl Parser<'_> {
    fn run(mut self, body: &str) -> Result<Element, DecodeError> {
        let mut reader = Reader::from_str(body);
        reader.config_mut().check_comments = true;
        loop {
            let offset = self.base + to_usize(reader.buffer_position());
            let event = match reader.read_event() {
                Ok(event) => event,
                Err(e) => {
                    return Err(syntax(
                        self.base + to_usize(reader.error_position()),
                        e.to_string(),
                    ))
                }
            };
            match event {
                Event::Decl(decl) => self.declaration(offset, &decl)?,
                Event::DocType(_) => {
                    return Err(DecodeError::Invalid {
                        what: "document",
                        offset,
                        message: "DOCTYPE declarations (and so entity declarations) are refused"
                            .into(),
                    })
                }
                Event::Start(start) => {
                    let element = self.open(offset, &start)?;
                    self.stack.push(element);
                }
                Event::Empty(start) => {
                    let element = self.open(offset, &start)?;
                    self.close(element);
                }
                Event::End(_) => match self.stack.pop() {
                    Some(element) => self.close(element),
                    None => return Err(syntax(offset, "end tag without a start tag")),
                },
                Event::Text(text) => {
                    if text.contains("]]>") {
                        return Err(syntax(offset, "']]>' is not allowed in text"));
                    }
                    self.text(offset, text.xml10_content())?;
                }
                Event::CData(cdata) => {
                    if self.stack.is_empty() {
                        return Err(syntax(offset, "CDATA section outside the root element"));
                    }
                    self.text(offset, cdata.xml10_content())?;
                }
                Event::GeneralRef(reference) => {
                    let resolved = match reference.resolve_char_ref() {
                        Ok(Some(c)) if is_xml_char(c) => c.to_string(),
                        Ok(Some(c)) => {
                            return Err(syntax(
                                offset,
                                format!(
                                    "character reference to U+{:04X}, not allowed in XML 1.0",
                                    u32::from(c)
                                ),
                            ))
                        }
                        Ok(None) => match predefined_entity(&reference) {
                            Some(value) => value.to_string(),
                            None => {
                                return Err(syntax(
                                    offset,
                                    format!("undefined entity &{};", &*reference),
                                ))
                            }
                        },
                        Err(e) => return Err(syntax(offset, e.to_string())),
                    };
                    if self.stack.is_empty() {
                        return Err(syntax(offset, "reference outside the root element"));
                    }
                    self.text(offset, Cow::Owned(resolved))?;
                }
                Event::Comment(_) | Event::PI(_) => {
                    if let Some(top) = self.stack.last_mut() {
                        top.children.push(Node::Other);
                    }
                }
                Event::Eof => break,
            }
        }
        if let Some(open) = self.stack.last() {
            return Err(syntax(
                self.base + body.len(),
                format!(
                    "element <{}> opened at byte {} is not closed",
                    open.name, open.offset
                ),
            ));
        }
        self.root
            .ok_or_else(|| syntax(self.base + body.len(), "no root element"))
    }

    fn declaration(
        &self,
        offset: usize,
        decl: &quick_xml::events::BytesDecl<'_>,
    ) -> Result<(), DecodeError> {
        if offset != self.base {
            return Err(syntax(
                offset,
                "the XML declaration is only allowed at the start of the document",
            ));
        }
        decl.version().map_err(|e| syntax(offset, e.to_string()))?;
        if let Some(encoding) = decl.encoding() {
            let encoding = encoding.map_err(|e| syntax(offset, e.to_string()))?;
            let known = ["utf-8", "utf8", "us-ascii", "ascii"];
            if !known.iter().any(|k| encoding.eq_ignore_ascii_case(k)) {
                return Err(syntax(
                    offset,
                    format!("encoding {encoding:?} is not supported (only UTF-8)"),
                ));
            }
        }
        Ok(())
    }

    fn open(&mut self, offset: usize, start: &BytesStart<'_>) -> Result<Element, DecodeError> {
        if self.root.is_some() && self.stack.is_empty() {
            return Err(syntax(offset, "content after the root element"));
        }
        if self.stack.len() >= self.limits.max_depth {
            return Err(DecodeError::TooDeep {
                limit: self.limits.max_depth,
                offset,
            });
        }
        if self.elements >= self.limits.max_elements {
            return Err(DecodeError::TooManyElements {
                limit: self.limits.max_elements,
                offset,
            });
        }
        self.elements += 1;
        let name = start.name().as_ref().to_string();
        check_name(offset, &name, "element")?;
        let mut attributes: Vec<(String, String)> = Vec::new();
        for attribute in start.attributes() {
            let attribute = attribute.map_err(|e| syntax(offset, e.to_string()))?;
            let key = attribute.key.as_ref().to_string();
            check_name(offset, &key, "attribute")?;
            if attribute.value.contains('<') {
                return Err(syntax(
                    offset,
                    format!("'<' in the value of attribute {key}"),
                ));
            }
            let value = attribute
                .normalized_value_with(XmlVersion::Implicit1_0, 1, predefined_entity)
                .map_err(|e| syntax(offset, format!("attribute {key}: {e}")))?;
            if let Some(c) = value.chars().find(|&c| !is_xml_char(c)) {
                return Err(syntax(
                    offset,
                    format!(
                        "attribute {key}: character reference to U+{:04X}, not allowed in XML 1.0",
                        u32::from(c)
                    ),
                ));
            }
            attributes.push((key, value.into_owned()));
        }
        Ok(Element {
            name,
            offset,
            attributes,
            children: Vec::new(),
        })
    }

    fn close(&mut self, element: Element) {
        match self.stack.last_mut() {
            Some(parent) => parent.children.push(Node::Element(element)),
            None => self.root = Some(element),
        }
    }

    fn text(&mut self, offset: usize, text: Cow<'_, str>) -> Result<(), DecodeError> {
        let Some(top) = self.stack.last_mut() else {
            if text.chars().all(is_xml_space) {
                return Ok(());
            }
            return Err(syntax(offset, "text outside the root element"));
        };
        if text.is_empty() {
            return Ok(());
        }
        match top.children.last_mut() {
            Some(Node::Text(previous)) => previous.push_str(&text),
            _ => top.children.push(Node::Text(text.into_owned())),
        }
        Ok(())
    }
}

fn check_name(offset: usize, name: &str, what: &str) -> Result<(), DecodeError> {
    let namespaced = name == "xmlns"
        || (name.contains(':') && !(what == "attribute" && name.starts_with("xml:")));
    if namespaced {
        return Err(DecodeError::Invalid {
            what: "document",
            offset,
            message: format!(
                "{what} name {name:?}: XML namespaces are not supported (SLAP documents use none)"
            ),
        });
    }
    if !is_xml_name(name) {
        return Err(syntax(offset, format!("invalid {what} name {name:?}")));
    }
    Ok(())
}

/// Reader positions are `u64`; the input is a slice, so they always fit in `usize`.
fn to_usize(position: u64) -> usize {
    usize::try_from(position).unwrap_or(usize::MAX)
}
