//! A small, strict XML 1.0 tokenizer for the marshaller: elements, attributes, character
//! data, CDATA, comments and processing instructions; DOCTYPE (and with it every entity
//! declaration) is refused. It works on a `&str` that was checked for UTF-8 and for
//! characters XML forbids before tokenizing starts, never panics, and reports byte offsets
//! into the original input.

use std::borrow::Cow;

use crate::DecodeError;

/// Most attributes accepted on one element (keeps the duplicate check cheap).
const MAX_ATTRIBUTES: usize = 32;

/// One attribute of a start tag, its value still raw (references not yet decoded).
#[derive(Debug, Clone, Copy)]
pub(crate) struct RawAttr<'a> {
    pub name: &'a str,
    pub value: &'a str,
    /// Byte offset of the first byte of the value.
    pub value_offset: usize,
}

#[derive(Debug)]
pub(crate) enum Token<'a> {
    /// A start tag; its attributes are in [`Tokenizer::attrs`] until the next token.
    Start {
        name: &'a str,
        offset: usize,
        self_closing: bool,
    },
    End {
        name: &'a str,
        offset: usize,
    },
    /// Character data with its entity and character references still encoded.
    Text {
        raw: &'a str,
        offset: usize,
    },
    /// The content of a CDATA section (no references inside).
    CData {
        raw: &'a str,
        offset: usize,
    },
    Eof,
}

pub(crate) struct Tokenizer<'a> {
    src: &'a str,
    pos: usize,
    attrs: Vec<RawAttr<'a>>,
}

pub(crate) fn syntax(offset: usize, message: impl Into<String>) -> DecodeError {
    DecodeError::Syntax {
        offset,
        message: message.into(),
    }
}

/// Checks that `input` is UTF-8 and holds only characters XML 1.0 allows (no C0 controls
/// other than tab, LF and CR; no U+FFFE or U+FFFF), and returns it as text.
pub(crate) fn checked_text(input: &[u8]) -> Result<&str, DecodeError> {
    let text = std::str::from_utf8(input).map_err(|e| {
        syntax(
            e.valid_up_to(),
            "the document is not valid UTF-8 (only UTF-8 is accepted)",
        )
    })?;
    let bytes = text.as_bytes();
    let mut from = 0;
    // Only C0 controls and the lead byte of U+FFFE/U+FFFF (EF BF BE/BF) need a closer look.
    while let Some(found) = bytes
        .get(from..)
        .and_then(|rest| rest.iter().position(|&b| b < 0x20 || b == 0xef))
    {
        let i = from + found;
        let b = bytes.get(i).copied().unwrap_or(0);
        let bad = match b {
            b'\t' | b'\n' | b'\r' => false,
            0xef => {
                bytes.get(i + 1) == Some(&0xbf) && matches!(bytes.get(i + 2), Some(0xbe | 0xbf))
            }
            _ => true,
        };
        if bad {
            let shown = text.get(i..).and_then(|s| s.chars().next()).unwrap_or('?');
            return Err(syntax(
                i,
                format!("character U+{:04X} is not allowed in XML", u32::from(shown)),
            ));
        }
        from = i + 1;
    }
    Ok(text)
}

fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r')
}

pub(crate) fn is_blank(s: &str) -> bool {
    s.bytes().all(is_space)
}

impl<'a> Tokenizer<'a> {
    pub(crate) fn new(src: &'a str) -> Self {
        let mut pos = 0;
        if src.starts_with('\u{feff}') {
            pos = '\u{feff}'.len_utf8();
        }
        Tokenizer {
            src,
            pos,
            attrs: Vec::new(),
        }
    }

    /// The attributes of the last [`Token::Start`].
    pub(crate) fn attrs(&self) -> &[RawAttr<'a>] {
        &self.attrs
    }

    fn rest(&self) -> &'a str {
        self.src.get(self.pos..).unwrap_or("")
    }

    fn peek_byte(&self) -> Option<u8> {
        self.src.as_bytes().get(self.pos).copied()
    }

    fn skip_space(&mut self) -> bool {
        let start = self.pos;
        while self.peek_byte().is_some_and(is_space) {
            self.pos += 1;
        }
        self.pos > start
    }

    /// Reads an XML name at the current position.
    fn name(&mut self, what: &str) -> Result<&'a str, DecodeError> {
        let start = self.pos;
        let rest = self.rest();
        let bytes = rest.as_bytes();
        let mut end = 0;
        while let Some(&b) = bytes.get(end) {
            if b.is_ascii() {
                let ok = if end == 0 {
                    b.is_ascii_alphabetic() || b == b'_' || b == b':'
                } else {
                    b.is_ascii_alphanumeric() || matches!(b, b'_' | b':' | b'-' | b'.')
                };
                if !ok {
                    break;
                }
                end += 1;
            } else {
                // Every non-ASCII character is accepted in names.
                let c = rest
                    .get(end..)
                    .and_then(|r| r.chars().next())
                    .unwrap_or('a');
                end += c.len_utf8();
            }
        }
        if end == 0 {
            return Err(syntax(start, format!("expected {what}")));
        }
        self.pos += end;
        Ok(rest.get(..end).unwrap_or(""))
    }

    /// Finds `pat` from the current position; returns the text before it and moves past it.
    fn take_until(&mut self, pat: &str, unterminated: &str) -> Result<&'a str, DecodeError> {
        let rest = self.rest();
        match rest.find(pat) {
            Some(i) => {
                self.pos += i + pat.len();
                Ok(rest.get(..i).unwrap_or(""))
            }
            None => Err(syntax(self.pos, unterminated.to_string())),
        }
    }

    pub(crate) fn next_token(&mut self) -> Result<Token<'a>, DecodeError> {
        loop {
            let start = self.pos;
            let rest = self.rest();
            if rest.is_empty() {
                return Ok(Token::Eof);
            }
            if !rest.starts_with('<') {
                let len = rest.find('<').unwrap_or(rest.len());
                let raw = rest.get(..len).unwrap_or("");
                if let Some(i) = raw.contains(']').then(|| raw.find("]]>")).flatten() {
                    return Err(syntax(start + i, "`]]>` is not allowed in character data"));
                }
                self.pos += len;
                return Ok(Token::Text { raw, offset: start });
            }
            if rest.starts_with("</") {
                self.pos += 2;
                let name = self.name("an element name after `</`")?;
                self.skip_space();
                if self.peek_byte() != Some(b'>') {
                    return Err(syntax(
                        self.pos,
                        format!("expected `>` to close `</{name}`"),
                    ));
                }
                self.pos += 1;
                return Ok(Token::End {
                    name,
                    offset: start,
                });
            }
            if rest.starts_with("<!--") {
                self.pos += 4;
                let body = self.take_until("-->", "unterminated comment")?;
                if let Some(i) = body.find("--") {
                    return Err(syntax(
                        start + 4 + i,
                        "`--` is not allowed inside a comment",
                    ));
                }
                if body.ends_with('-') {
                    return Err(syntax(self.pos - 4, "a comment may not end with `--->`"));
                }
                continue;
            }
            if rest.starts_with("<![CDATA[") {
                self.pos += 9;
                let raw = self.take_until("]]>", "unterminated CDATA section")?;
                return Ok(Token::CData {
                    raw,
                    offset: start + 9,
                });
            }
            if rest.starts_with("<!DOCTYPE") {
                return Err(DecodeError::Invalid {
                    what: "document",
                    offset: start,
                    message: "DOCTYPE declarations (and with them DTDs and entity declarations) are refused".into(),
                });
            }
            if rest.starts_with("<!") {
                return Err(syntax(start, "unexpected markup declaration"));
            }
            if rest.starts_with("<?") {
                self.pos += 2;
                self.processing_instruction(start)?;
                continue;
            }
            self.pos += 1;
            return self.start_tag(start);
        }
    }

    fn processing_instruction(&mut self, start: usize) -> Result<(), DecodeError> {
        let target = self.name("a processing instruction target after `<?`")?;
        let had_space = self.skip_space();
        let body = self.take_until("?>", "unterminated processing instruction")?;
        if !had_space && !body.is_empty() {
            return Err(syntax(
                start,
                "expected a space after the processing instruction target",
            ));
        }
        if target.eq_ignore_ascii_case("xml") {
            let at_start = start == 0 || (start == 3 && self.src.starts_with('\u{feff}'));
            if !at_start || target != "xml" {
                return Err(syntax(
                    start,
                    "the XML declaration is only allowed at the very start of the document",
                ));
            }
            check_declaration(body, start)?;
        }
        Ok(())
    }

    fn start_tag(&mut self, start: usize) -> Result<Token<'a>, DecodeError> {
        let name = self.name("an element name after `<`")?;
        self.attrs.clear();
        loop {
            let had_space = self.skip_space();
            match self.peek_byte() {
                Some(b'>') => {
                    self.pos += 1;
                    return Ok(Token::Start {
                        name,
                        offset: start,
                        self_closing: false,
                    });
                }
                Some(b'/') => {
                    self.pos += 1;
                    if self.peek_byte() != Some(b'>') {
                        return Err(syntax(self.pos, "expected `>` after `/` in a tag"));
                    }
                    self.pos += 1;
                    return Ok(Token::Start {
                        name,
                        offset: start,
                        self_closing: true,
                    });
                }
                None => return Err(syntax(start, format!("unterminated tag <{name}"))),
                Some(_) => {
                    if !had_space {
                        return Err(syntax(self.pos, "expected a space before an attribute"));
                    }
                    self.attribute()?;
                }
            }
        }
    }

    fn attribute(&mut self) -> Result<(), DecodeError> {
        let name_offset = self.pos;
        let name = self.name("an attribute name")?;
        self.skip_space();
        if self.peek_byte() != Some(b'=') {
            return Err(syntax(
                self.pos,
                format!("expected `=` after attribute `{name}`"),
            ));
        }
        self.pos += 1;
        self.skip_space();
        let quote = match self.peek_byte() {
            Some(q @ (b'"' | b'\'')) => q,
            _ => return Err(syntax(self.pos, "expected a quoted attribute value")),
        };
        self.pos += 1;
        let value_offset = self.pos;
        let rest = self.rest();
        let Some(len) = rest.bytes().position(|b| b == quote) else {
            return Err(syntax(value_offset, "unterminated attribute value"));
        };
        let value = rest.get(..len).unwrap_or("");
        if let Some(i) = value.find('<') {
            return Err(syntax(
                value_offset + i,
                "`<` is not allowed in an attribute value",
            ));
        }
        self.pos += len + 1;
        if self.attrs.iter().any(|a| a.name == name) {
            return Err(syntax(name_offset, format!("duplicate attribute `{name}`")));
        }
        if self.attrs.len() >= MAX_ATTRIBUTES {
            return Err(syntax(
                name_offset,
                format!("more than {MAX_ATTRIBUTES} attributes on one element"),
            ));
        }
        self.attrs.push(RawAttr {
            name,
            value,
            value_offset,
        });
        Ok(())
    }
}

/// Accepts `<?xml version="1.x" encoding="utf-8"|"ascii" standalone=...?>`: the document has
/// already been read as UTF-8, so any other declared encoding is refused.
fn check_declaration(body: &str, offset: usize) -> Result<(), DecodeError> {
    let lower = body.to_ascii_lowercase();
    let Some(i) = lower.find("encoding") else {
        return Ok(());
    };
    let after = lower.get(i + "encoding".len()..).unwrap_or("");
    let after = after
        .trim_start()
        .strip_prefix('=')
        .unwrap_or("")
        .trim_start();
    let Some(q) = after.chars().next().filter(|c| *c == '"' || *c == '\'') else {
        return Err(syntax(offset, "malformed encoding in the XML declaration"));
    };
    let value = after.get(1..).and_then(|v| v.split(q).next()).unwrap_or("");
    if matches!(value, "utf-8" | "utf8" | "us-ascii" | "ascii") {
        Ok(())
    } else {
        Err(DecodeError::Invalid {
            what: "encoding",
            offset,
            message: format!("`{value}` is not supported (only UTF-8)"),
        })
    }
}

fn is_xml_char(c: char) -> bool {
    matches!(u32::from(c), 0x9 | 0xa | 0xd | 0x20..=0xd7ff | 0xe000..=0xfffd | 0x10000..=0x10ffff)
}

/// Decodes one `&...;` reference at the start of `s` (which starts with `&`): returns the
/// character and the length of the reference in bytes.
fn reference(s: &str, offset: usize) -> Result<(char, usize), DecodeError> {
    let body_end = s
        .bytes()
        .take(16)
        .position(|b| b == b';')
        .ok_or_else(|| syntax(offset, "`&` must start an entity or character reference"))?;
    let body = s.get(1..body_end).unwrap_or("");
    let c = match body {
        "lt" => '<',
        "gt" => '>',
        "amp" => '&',
        "quot" => '"',
        "apos" => '\'',
        _ => {
            let (digits, radix) = if let Some(hex) = body.strip_prefix("#x") {
                (hex, 16)
            } else if let Some(dec) = body.strip_prefix('#') {
                (dec, 10)
            } else {
                return Err(syntax(offset, format!("undefined entity `&{body};`")));
            };
            let code = if digits.is_empty() || !digits.chars().all(|c| c.is_digit(radix)) {
                None
            } else {
                u32::from_str_radix(digits, radix).ok()
            };
            code.and_then(char::from_u32)
                .filter(|c| is_xml_char(*c))
                .ok_or_else(|| {
                    syntax(
                        offset,
                        format!("`&{body};` does not name a character allowed in XML"),
                    )
                })?
        }
    };
    Ok((c, body_end + 1))
}

/// Appends character data to `out`, decoding references and normalising line ends
/// (`\r\n` and a lone `\r` become `\n`; a `&#13;` reference stays `\r`).
pub(crate) fn decode_text(raw: &str, offset: usize, out: &mut String) -> Result<(), DecodeError> {
    decode_into(raw, offset, out, false)
}

/// Appends CDATA content to `out` (only line ends are normalised).
pub(crate) fn decode_cdata(raw: &str, out: &mut String) {
    let mut rest = raw;
    while let Some(i) = rest.find('\r') {
        out.push_str(rest.get(..i).unwrap_or(""));
        out.push('\n');
        rest = rest.get(i + 1..).unwrap_or("");
        if let Some(stripped) = rest.strip_prefix('\n') {
            rest = stripped;
        }
    }
    out.push_str(rest);
}

/// Decodes an attribute value (references, and literal white space becomes a space);
/// borrows when there is nothing to decode.
pub(crate) fn decode_attr(raw: &str, offset: usize) -> Result<Cow<'_, str>, DecodeError> {
    if !raw
        .bytes()
        .any(|b| matches!(b, b'&' | b'\t' | b'\n' | b'\r'))
    {
        return Ok(Cow::Borrowed(raw));
    }
    let mut out = String::with_capacity(raw.len());
    decode_into(raw, offset, &mut out, true)?;
    Ok(Cow::Owned(out))
}

fn decode_into(
    raw: &str,
    offset: usize,
    out: &mut String,
    attribute: bool,
) -> Result<(), DecodeError> {
    let special = |b: u8| b == b'&' || b == b'\r' || (attribute && (b == b'\t' || b == b'\n'));
    let bytes = raw.as_bytes();
    let mut run_start = 0;
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes.get(i).copied().unwrap_or(0);
        if !special(b) {
            i += 1;
            continue;
        }
        out.push_str(raw.get(run_start..i).unwrap_or(""));
        match b {
            b'&' => {
                let (c, len) = reference(raw.get(i..).unwrap_or(""), offset + i)?;
                out.push(c);
                i += len;
            }
            b'\r' => {
                out.push(if attribute { ' ' } else { '\n' });
                i += 1;
                if bytes.get(i) == Some(&b'\n') {
                    i += 1;
                }
            }
            _ => {
                out.push(' ');
                i += 1;
            }
        }
        run_start = i;
    }
    out.push_str(raw.get(run_start..).unwrap_or(""));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens(src: &str) -> Result<Vec<String>, DecodeError> {
        let mut t = Tokenizer::new(src);
        let mut out = Vec::new();
        loop {
            match t.next_token()? {
                Token::Eof => return Ok(out),
                Token::Start {
                    name, self_closing, ..
                } => {
                    let attrs: Vec<String> = t
                        .attrs()
                        .iter()
                        .map(|a| format!("{}={}", a.name, a.value))
                        .collect();
                    out.push(format!(
                        "<{name} {}{}>",
                        attrs.join(" "),
                        if self_closing { "/" } else { "" }
                    ));
                }
                Token::End { name, .. } => out.push(format!("</{name}>")),
                Token::Text { raw, .. } => out.push(format!("text:{raw}")),
                Token::CData { raw, .. } => out.push(format!("cdata:{raw}")),
            }
        }
    }

    #[test]
    fn tokenizes_tags_attributes_and_text() {
        let got =
            tokens("<?xml version='1.0'?><!-- c --><a x=\"1\" y='2'>t<![CDATA[<x>]]><b/></a>")
                .unwrap_or_default();
        assert_eq!(
            got,
            vec!["<a x=1 y=2>", "text:t", "cdata:<x>", "<b /", "</a>"]
                .into_iter()
                .map(|s| if s == "<b /" {
                    "<b />".to_string()
                } else {
                    s.to_string()
                })
                .collect::<Vec<_>>()
        );
    }

    #[test]
    fn refuses_doctype_and_bad_markup() {
        assert!(matches!(
            tokens("<!DOCTYPE x [<!ENTITY a 'b'>]><x/>"),
            Err(DecodeError::Invalid {
                what: "document",
                ..
            })
        ));
        assert!(tokens("<a x='1' x='2'/>").is_err());
        assert!(tokens("<a x='<'/>").is_err());
        assert!(tokens("<a x=1/>").is_err());
        assert!(tokens("<a/><?xml version='1.0'?>").is_err());
        assert!(tokens("<!-- a -- b -->").is_err());
        assert!(tokens("a]]>b").is_err());
    }

    #[test]
    fn decodes_references_and_line_ends() {
        let mut out = String::new();
        decode_text("a&amp;b&lt;&#233;&#x1F600;\r\nx\ry&#13;", 0, &mut out).unwrap_or(());
        assert_eq!(out, "a&b<é😀\nx\ny\r");
        for bad in [
            "&#0;",
            "&#xFFFE;",
            "&foo;",
            "& x",
            "&#;",
            "&#xD800;",
            "&#99999999999;",
        ] {
            let mut out = String::new();
            assert!(decode_text(bad, 0, &mut out).is_err(), "{bad}");
        }
        assert_eq!(
            decode_attr("a\tb\r\nc&#9;", 0).unwrap_or_default(),
            "a b c\t"
        );
    }

    #[test]
    fn checks_characters() {
        assert!(checked_text(b"<a>\x01</a>").is_err());
        assert!(checked_text("<a>\u{fffe}</a>".as_bytes()).is_err());
        assert!(checked_text(b"<a>\xff</a>").is_err());
        assert!(checked_text("<a>\t\r\n é</a>".as_bytes()).is_ok());
    }
}
