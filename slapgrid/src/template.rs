//! The templates of native releases, safe by default: `{{name}}` and `{{name|default}}`
//! and nothing else, each file of a declared kind, and **every substituted value escaped
//! for that kind** so that an instance parameter is data, never code:
//!
//! | kind    | a value becomes                                                              |
//! |---------|------------------------------------------------------------------------------|
//! | `shell` | one single-quoted word (`'…'`, a `'` inside as `'\''`)                         |
//! | `toml`  | a basic string `"…"` with TOML escapes; inside a `"…"` the same escapes only  |
//! | `json`  | a JSON string `"…"`; inside a `"…"` the same escapes only                     |
//! | `plain` | itself; NUL and control characters other than tab and newline are refused   |
//!
//! A parameter the release types `integer` (`[instance.parameter.port] type =
//! "integer"`) must be one, and is written bare (`port = {{param.port}}` is a TOML
//! integer); any other value is refused.
//!
//! Escaping is only sound where the value lands where the escape means what we think, so
//! each template is read once, when the manifest is parsed, with a small lexer of its
//! kind, and a substitution is refused where the escape would not protect it:
//!
//! - shell: inside single or double quotes (`'{{x}}'` would close the quotes around the
//!   escaped value), inside backquotes, in a comment (a newline in the value would end
//!   it), in a here-document (quotes mean nothing there and `$(…)` runs), right after a
//!   backslash or a `$`, and as a here-document's delimiter. Inside `$(…)` that is not
//!   in double quotes a value is a word as anywhere else. A `case` inside a double-quoted
//!   `$(…)` is refused too: its patterns' `)` would hide where the substitution ends.
//! - toml: in a comment or a literal string (`'…'`, `'''…'''`), where no escape exists;
//!   right after a backslash.
//! - json: right after a backslash.
//!
//! What the lexers guarantee is syntactic: a value is one word, one string. A release that
//! hands a value to `eval` or `sh -c` still runs it; that is the release's own code.
//!
//! NUL is refused in every value of every kind.

use std::collections::BTreeMap;

use serde::Deserialize;

/// How the values of a file are escaped (`kind` of an `[[instance.file]]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FileKind {
    Shell,
    Toml,
    Json,
    Plain,
}

impl FileKind {
    pub fn name(self) -> &'static str {
        match self {
            FileKind::Shell => "shell",
            FileKind::Toml => "toml",
            FileKind::Json => "json",
            FileKind::Plain => "plain",
        }
    }
}

/// What a release says a parameter must be (`[instance.parameter.<name>]`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ParamType {
    #[default]
    String,
    Integer,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ParameterSpec {
    #[serde(rename = "type", default)]
    pub kind: ParamType,
}

/// Parameter types by parameter name (without the `param.` prefix).
pub type ParameterTypes = BTreeMap<String, ParameterSpec>;

#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    /// The template itself: a syntax error or a substitution where escaping cannot work.
    #[error("template {file}, line {line}: {message}")]
    Syntax {
        file: String,
        line: usize,
        message: String,
    },
    #[error("template {file}: unknown variable {variable:?}")]
    Unknown { file: String, variable: String },
    /// A value that may not go into this file (NUL, a control character in a plain
    /// file, not an integer where the release wants one).
    #[error("{file}: the value of {variable} is refused: {reason}")]
    Value {
        file: String,
        variable: String,
        reason: String,
    },
}

/// Where a substitution lands, as the lexer of its kind saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Place {
    /// shell: anywhere a word can be (one single-quoted word).
    Word,
    /// toml/json: a whole value (a quoted string, or a bare integer).
    Value,
    /// toml/json: inside a `"…"` string (the escapes, without quotes).
    InString,
    /// plain: as is.
    Raw,
}

#[derive(Debug, Clone)]
enum Piece {
    Text(String),
    Var {
        name: String,
        default: Option<String>,
        place: Place,
    },
}

/// A template read and checked for its kind; render it with [`Template::render`].
#[derive(Debug, Clone)]
pub struct Template {
    kind: FileKind,
    file: String,
    pieces: Vec<Piece>,
}

/// One token of a template for the lexers: a character, or the n-th substitution.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tok {
    Char(char),
    Var(usize),
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

impl Template {
    /// Reads `text` as a template of `kind` (`file` names it in errors).
    pub fn compile(text: &str, kind: FileKind, file: &str) -> Result<Template, TemplateError> {
        let syntax = |line: usize, message: String| TemplateError::Syntax {
            file: file.to_owned(),
            line,
            message,
        };
        let mut pieces = Vec::new();
        let mut toks = Vec::new();
        let mut vars = Vec::new();
        let mut rest = text;
        let mut line = 1;
        while let Some(start) = rest.find("{{") {
            let before = &rest[..start];
            line += before.matches('\n').count();
            toks.extend(before.chars().map(Tok::Char));
            pieces.push(Piece::Text(before.to_owned()));
            let after = &rest[start + 2..];
            let end = after
                .find("}}")
                .ok_or_else(|| syntax(line, "unclosed {{".into()))?;
            let expr = after[..end].trim();
            let (name, default) = match expr.split_once('|') {
                Some((n, d)) => (n.trim(), Some(d.trim().to_owned())),
                None => (expr, None),
            };
            if !valid_name(name) {
                return Err(syntax(line, format!("{{{{{expr}}}}} names no variable")));
            }
            toks.push(Tok::Var(vars.len()));
            vars.push(line);
            pieces.push(Piece::Var {
                name: name.to_owned(),
                default,
                place: Place::Raw,
            });
            line += after[..end].matches('\n').count();
            rest = &after[end + 2..];
        }
        toks.extend(rest.chars().map(Tok::Char));
        pieces.push(Piece::Text(rest.to_owned()));
        let places = match kind {
            FileKind::Shell => shell_places(&toks),
            FileKind::Toml => toml_places(&toks),
            FileKind::Json => json_places(&toks),
            FileKind::Plain => Ok(vec![Place::Raw; vars.len()]),
        }
        .map_err(|(var, message)| {
            // A refusal names the line of the substitution it is about (else the end).
            let line = var
                .and_then(|v| vars.get(v).copied())
                .unwrap_or_else(|| text.matches('\n').count() + 1);
            syntax(line, message)
        })?;
        let mut places = places.into_iter();
        for piece in &mut pieces {
            if let Piece::Var { place, .. } = piece {
                *place = places.next().unwrap_or(Place::Raw);
            }
        }
        Ok(Template {
            kind,
            file: file.to_owned(),
            pieces,
        })
    }

    /// The variables the template names.
    pub fn variables(&self) -> impl Iterator<Item = &str> {
        self.pieces.iter().filter_map(|p| match p {
            Piece::Var { name, .. } => Some(name.as_str()),
            Piece::Text(_) => None,
        })
    }

    /// The text with every variable substituted and escaped for the file's kind. A
    /// variable the template names but `vars` lacks (and no default) is an error naming
    /// it, never an empty string.
    pub fn render(
        &self,
        vars: &BTreeMap<String, String>,
        types: &ParameterTypes,
    ) -> Result<String, TemplateError> {
        let mut out = String::new();
        for piece in &self.pieces {
            match piece {
                Piece::Text(t) => out.push_str(t),
                Piece::Var {
                    name,
                    default,
                    place,
                } => {
                    let value = vars.get(name).or(default.as_ref()).ok_or_else(|| {
                        TemplateError::Unknown {
                            file: self.file.clone(),
                            variable: name.clone(),
                        }
                    })?;
                    let refuse = |reason: String| TemplateError::Value {
                        file: self.file.clone(),
                        variable: name.clone(),
                        reason,
                    };
                    let typed = check_value(name, value, types).map_err(refuse)?;
                    escape_into(&mut out, self.kind, *place, &typed).map_err(refuse)?;
                }
            }
        }
        Ok(out)
    }
}

/// A value checked against its parameter's type: integers come back canonical.
enum Typed<'a> {
    Text(&'a str),
    Integer(i64),
}

/// A parameter's value against its type (and NUL), as rendering checks it.
pub fn check_parameter(
    name: &str,
    value: &str,
    types: &ParameterTypes,
) -> Result<(), TemplateError> {
    check_value(name, value, types)
        .map(|_| ())
        .map_err(|reason| TemplateError::Value {
            file: "parameters".into(),
            variable: name.to_owned(),
            reason,
        })
}

/// Refuses NUL everywhere and a value that is not what its parameter's type says.
fn check_value<'a>(
    name: &str,
    value: &'a str,
    types: &ParameterTypes,
) -> Result<Typed<'a>, String> {
    if value.contains('\0') {
        return Err("it contains NUL".into());
    }
    let spec = name.strip_prefix("param.").and_then(|p| types.get(p));
    match spec.map(|s| s.kind) {
        Some(ParamType::Integer) => value
            .parse::<i64>()
            .map(Typed::Integer)
            .map_err(|_| "the release wants an integer".into()),
        _ => Ok(Typed::Text(value)),
    }
}

fn escape_into(
    out: &mut String,
    kind: FileKind,
    place: Place,
    value: &Typed,
) -> Result<(), String> {
    let text;
    let (s, integer) = match value {
        Typed::Text(s) => (*s, false),
        Typed::Integer(n) => {
            text = n.to_string();
            (text.as_str(), true)
        }
    };
    match (kind, place) {
        (FileKind::Shell, _) => shell_quote_into(out, s),
        (FileKind::Toml, Place::Value) if integer => out.push_str(s),
        (FileKind::Toml, Place::Value) => {
            out.push('"');
            toml_escape_into(out, s);
            out.push('"');
        }
        (FileKind::Toml, _) => toml_escape_into(out, s),
        (FileKind::Json, Place::Value) if integer => out.push_str(s),
        (FileKind::Json, Place::Value) => {
            out.push('"');
            json_escape_into(out, s);
            out.push('"');
        }
        (FileKind::Json, _) => json_escape_into(out, s),
        (FileKind::Plain, _) => {
            check_plain(s)?;
            out.push_str(s);
        }
    }
    Ok(())
}

/// Plain values (plain files, connection parameters): no control character but tab and
/// newline.
pub fn check_plain(s: &str) -> Result<(), String> {
    match s
        .chars()
        .find(|c| c.is_control() && *c != '\t' && *c != '\n')
    {
        Some(c) => Err(format!("it contains the control character {c:?}")),
        None => Ok(()),
    }
}

/// `'…'` with every `'` as `'\''`: one shell word, whatever `s` holds (but NUL).
pub fn shell_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    shell_quote_into(&mut out, s);
    out
}

fn shell_quote_into(out: &mut String, s: &str) {
    out.push('\'');
    for c in s.chars() {
        if c == '\'' {
            out.push_str("'\\''");
        } else {
            out.push(c);
        }
    }
    out.push('\'');
}

fn toml_escape_into(out: &mut String, s: &str) {
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push(c),
        }
    }
}

fn json_escape_into(out: &mut String, s: &str) {
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 || c == '\u{2028}' || c == '\u{2029}' => {
                out.push_str(&format!("\\u{:04X}", c as u32))
            }
            c => out.push(c),
        }
    }
}

/// A refusal: (the substitution it is about, if any; why).
type Refusal = (Option<usize>, String);

fn refuse(var: usize, why: &str) -> Refusal {
    (Some(var), why.to_owned())
}

/// The shell lexer's frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sh {
    /// Shell code: the top level, or inside `$(…)` (with its open parentheses).
    Code {
        parens: u32,
    },
    Single,
    Double,
    Backtick,
    Comment,
}

fn shell_places(toks: &[Tok]) -> Result<Vec<Place>, Refusal> {
    let mut places = Vec::new();
    let mut stack = vec![Sh::Code { parens: 0 }];
    let mut word_start = true;
    let mut word = String::new();
    // Here-documents whose body starts at the next newline: (delimiter, strip tabs).
    let mut pending: Vec<(String, bool)> = Vec::new();
    let mut i = 0;
    let next = |i: usize| toks.get(i + 1).copied();
    // Inside a `$(…)` that double quotes or backquotes enclose.
    let quoted_below = |stack: &[Sh]| stack.iter().any(|f| matches!(f, Sh::Double | Sh::Backtick));
    while i < toks.len() {
        let top = *stack.last().unwrap_or(&Sh::Code { parens: 0 });
        let c = match toks[i] {
            Tok::Var(v) => {
                let why = match top {
                    Sh::Code { .. } => None,
                    Sh::Single => Some(
                        "a value inside single quotes: write {{x}} without quotes, it is quoted for you",
                    ),
                    Sh::Double => Some(
                        "a value inside double quotes: write {{x}} without quotes, it is quoted for you",
                    ),
                    Sh::Backtick => Some("a value inside backquotes: use $(…)"),
                    Sh::Comment => {
                        Some("a value in a comment: a newline in it would end the comment")
                    }
                };
                if let Some(why) = why {
                    return Err(refuse(v, why));
                }
                places.push(Place::Word);
                word.push('\u{1}');
                word_start = false;
                i += 1;
                continue;
            }
            Tok::Char(c) => c,
        };
        match top {
            Sh::Comment => {
                if c == '\n' {
                    stack.pop();
                    i = newline(toks, i, &mut pending)?;
                    word_start = true;
                    continue;
                }
            }
            Sh::Single => {
                if c == '\'' {
                    stack.pop();
                }
            }
            Sh::Double => match c {
                '\\' => {
                    if let Some(Tok::Var(v)) = next(i) {
                        return Err(refuse(v, "a value right after a backslash"));
                    }
                    i += 1;
                }
                '"' => {
                    stack.pop();
                }
                '$' if next(i) == Some(Tok::Char('(')) => {
                    stack.push(Sh::Code { parens: 0 });
                    i += 1;
                }
                '$' => {
                    if let Some(Tok::Var(v)) = next(i) {
                        return Err(refuse(v, "a value right after a $"));
                    }
                }
                '`' => stack.push(Sh::Backtick),
                _ => {}
            },
            Sh::Backtick => match c {
                '\\' => i += 1,
                '`' => {
                    stack.pop();
                }
                _ => {}
            },
            Sh::Code { parens } => {
                let mut boundary = false;
                match c {
                    '\\' => {
                        match next(i) {
                            Some(Tok::Var(v)) => {
                                return Err(refuse(v, "a value right after a backslash"))
                            }
                            Some(Tok::Char(_)) => i += 1,
                            None => {}
                        }
                        word.push('\\');
                        word_start = false;
                    }
                    '\'' => {
                        stack.push(Sh::Single);
                        word_start = false;
                    }
                    '"' => {
                        stack.push(Sh::Double);
                        word_start = false;
                    }
                    '`' => {
                        stack.push(Sh::Backtick);
                        word_start = false;
                    }
                    '$' if next(i) == Some(Tok::Char('(')) => {
                        end_word(&mut word, &stack, quoted_below)?;
                        stack.push(Sh::Code { parens: 0 });
                        i += 1;
                        word_start = true;
                    }
                    '$' => {
                        if let Some(Tok::Var(v)) = next(i) {
                            return Err(refuse(v, "a value right after a $"));
                        }
                        word.push('$');
                        word_start = false;
                    }
                    '#' if word_start => {
                        stack.push(Sh::Comment);
                    }
                    '(' => {
                        if let Some(Sh::Code { parens }) = stack.last_mut() {
                            *parens += 1;
                        }
                        boundary = true;
                    }
                    ')' => {
                        end_word(&mut word, &stack, quoted_below)?;
                        if parens > 0 {
                            if let Some(Sh::Code { parens }) = stack.last_mut() {
                                *parens -= 1;
                            }
                        } else if stack.len() > 1 {
                            stack.pop();
                        }
                        boundary = true;
                    }
                    '<' if next(i) == Some(Tok::Char('<')) => {
                        end_word(&mut word, &stack, quoted_below)?;
                        i = heredoc(toks, i + 2, &mut pending)?;
                        word_start = true;
                        continue;
                    }
                    '\n' => {
                        end_word(&mut word, &stack, quoted_below)?;
                        i = newline(toks, i, &mut pending)?;
                        word_start = true;
                        continue;
                    }
                    ' ' | '\t' | ';' | '&' | '|' | '<' | '>' => boundary = true,
                    c => {
                        word.push(c);
                        word_start = false;
                    }
                }
                if boundary {
                    end_word(&mut word, &stack, quoted_below)?;
                    word_start = true;
                }
            }
        }
        i += 1;
    }
    match stack.last() {
        Some(Sh::Single) | Some(Sh::Double) | Some(Sh::Backtick) => {
            Err((None, "the template ends inside quotes".into()))
        }
        _ => Ok(places),
    }
}

/// The end of a bare word: a `case` inside a `$(…)` that quotes enclose is refused (its
/// patterns' unbalanced `)` would hide where the `$(…)` ends).
fn end_word(
    word: &mut String,
    stack: &[Sh],
    quoted_below: impl Fn(&[Sh]) -> bool,
) -> Result<(), Refusal> {
    if word == "case" && stack.len() > 1 && quoted_below(stack) {
        return Err((
            None,
            "a `case` inside a double-quoted $(…): move it out of the quotes".into(),
        ));
    }
    word.clear();
    Ok(())
}

/// After `<<` (at `i`): the delimiter of a here-document, whose body starts at the next
/// newline. Returns where the lexer goes on.
fn heredoc(
    toks: &[Tok],
    mut i: usize,
    pending: &mut Vec<(String, bool)>,
) -> Result<usize, Refusal> {
    // `<<<`: a here-string (bash), a word like any other.
    if toks.get(i) == Some(&Tok::Char('<')) {
        return Ok(i + 1);
    }
    let strip = toks.get(i) == Some(&Tok::Char('-'));
    if strip {
        i += 1;
    }
    while let Some(Tok::Char(' ' | '\t')) = toks.get(i) {
        i += 1;
    }
    let mut delimiter = String::new();
    while let Some(t) = toks.get(i) {
        match *t {
            Tok::Var(v) => return Err(refuse(v, "a value as a here-document's delimiter")),
            Tok::Char(c) if c.is_whitespace() || ";&|<>()".contains(c) => break,
            Tok::Char('\'' | '"' | '\\') => {}
            Tok::Char(c) => delimiter.push(c),
        }
        i += 1;
    }
    pending.push((delimiter, strip));
    Ok(i)
}

/// At a newline (`i`): the bodies of the pending here-documents are skipped (a value in
/// one is refused: quotes mean nothing there and `$(…)` runs). Returns the index after.
fn newline(
    toks: &[Tok],
    mut i: usize,
    pending: &mut Vec<(String, bool)>,
) -> Result<usize, Refusal> {
    i += 1;
    for (delimiter, strip) in pending.drain(..) {
        loop {
            if i >= toks.len() {
                return Ok(i);
            }
            let mut line = String::new();
            while let Some(t) = toks.get(i) {
                i += 1;
                match *t {
                    Tok::Var(v) => {
                        return Err(refuse(
                            v,
                            "a value in a here-document: quotes mean nothing there and $(…) runs",
                        ))
                    }
                    Tok::Char('\n') => break,
                    Tok::Char(c) => line.push(c),
                }
            }
            let line = if strip {
                line.trim_start_matches('\t')
            } else {
                line.as_str()
            };
            if line == delimiter {
                break;
            }
        }
    }
    Ok(i)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TomlState {
    Normal,
    Basic,
    MultiBasic,
    Literal,
    MultiLiteral,
    Comment,
}

fn toml_places(toks: &[Tok]) -> Result<Vec<Place>, Refusal> {
    use TomlState::*;
    let mut places = Vec::new();
    let mut state = Normal;
    let c_at = |i: usize| match toks.get(i) {
        Some(Tok::Char(c)) => Some(*c),
        _ => None,
    };
    let triple = |i: usize, q: char| c_at(i + 1) == Some(q) && c_at(i + 2) == Some(q);
    let mut i = 0;
    while i < toks.len() {
        match toks[i] {
            Tok::Var(v) => {
                let place = match state {
                    Normal => Place::Value,
                    Basic | MultiBasic => Place::InString,
                    Literal | MultiLiteral => return Err(refuse(
                        v,
                        "a value inside a literal string ('…'), which has no escapes: use \"…\"",
                    )),
                    Comment => {
                        return Err(refuse(
                            v,
                            "a value in a comment: a newline in it would end the comment",
                        ))
                    }
                };
                places.push(place);
            }
            Tok::Char(c) => match (state, c) {
                (Normal, '#') => state = Comment,
                (Normal, '"') if triple(i, '"') => {
                    state = MultiBasic;
                    i += 2;
                }
                (Normal, '"') => state = Basic,
                (Normal, '\'') if triple(i, '\'') => {
                    state = MultiLiteral;
                    i += 2;
                }
                (Normal, '\'') => state = Literal,
                (Basic | MultiBasic, '\\') => {
                    if let Some(Tok::Var(v)) = toks.get(i + 1) {
                        return Err(refuse(*v, "a value right after a backslash"));
                    }
                    i += 1;
                }
                (Basic, '"') | (Basic, '\n') => state = Normal,
                (MultiBasic, '"') if triple(i, '"') => {
                    state = Normal;
                    i += 2;
                }
                (Literal, '\'') | (Literal, '\n') => state = Normal,
                (MultiLiteral, '\'') if triple(i, '\'') => {
                    state = Normal;
                    i += 2;
                }
                (Comment, '\n') => state = Normal,
                _ => {}
            },
        }
        i += 1;
    }
    if matches!(state, Basic | MultiBasic | Literal | MultiLiteral) {
        return Err((None, "the template ends inside a string".into()));
    }
    Ok(places)
}

fn json_places(toks: &[Tok]) -> Result<Vec<Place>, Refusal> {
    let mut places = Vec::new();
    let mut in_string = false;
    let mut i = 0;
    while i < toks.len() {
        match toks[i] {
            Tok::Var(_) => places.push(if in_string {
                Place::InString
            } else {
                Place::Value
            }),
            Tok::Char('\\') if in_string => {
                if let Some(Tok::Var(v)) = toks.get(i + 1) {
                    return Err(refuse(*v, "a value right after a backslash"));
                }
                i += 1;
            }
            Tok::Char('"') => in_string = !in_string,
            Tok::Char(_) => {}
        }
        i += 1;
    }
    if in_string {
        return Err((None, "the template ends inside a string".into()));
    }
    Ok(places)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn render(text: &str, kind: FileKind, pairs: &[(&str, &str)]) -> Result<String, TemplateError> {
        Template::compile(text, kind, "f")?.render(&vars(pairs), &ParameterTypes::new())
    }

    fn refused(text: &str, kind: FileKind) -> String {
        match Template::compile(text, kind, "f") {
            Err(e) => e.to_string(),
            Ok(_) => panic!("accepted: {text}"),
        }
    }

    #[test]
    fn shell_values_are_single_quoted_words() {
        let out = render(
            "#!/bin/sh\nexec {{sw}}/bin/x --name={{n}} {{n|d}}\n",
            FileKind::Shell,
            &[("sw", "/a b"), ("n", "it's $(id)")],
        )
        .unwrap();
        assert_eq!(
            out,
            "#!/bin/sh\nexec '/a b'/bin/x --name='it'\\''s $(id)' 'it'\\''s $(id)'\n"
        );
        assert_eq!(render("x={{n|}}", FileKind::Shell, &[]).unwrap(), "x=''");
    }

    #[test]
    fn shell_substitutions_where_quoting_cannot_work_are_refused() {
        for (text, why) in [
            ("echo '{{x}}'", "single quotes"),
            ("echo \"{{x}}\"", "double quotes"),
            ("echo \"a $(b) {{x}}\"", "double quotes"),
            ("echo `{{x}}`", "backquotes"),
            ("# restarted when {{x}} changes\n", "comment"),
            ("echo a # {{x}}\n", "comment"),
            ("cat <<EOF\n{{x}}\nEOF\n", "here-document"),
            ("cat <<-'EOF' >f\n\t{{x}}\n\tEOF\n", "here-document"),
            ("cat <<{{x}}\nEOF\n", "delimiter"),
            ("echo \\{{x}}", "backslash"),
            ("echo ${{x}}", "after a $"),
            ("echo \"$(case $a in x) echo;; esac) {{x}}\"", "case"),
            ("echo 'unterminated", "ends inside quotes"),
        ] {
            let e = refused(text, FileKind::Shell);
            assert!(e.contains(why), "{text}: {e}");
        }
        // and where it works
        for text in [
            "a#b {{x}}",
            "echo $(printf %s {{x}}) \"$(echo \"y\")\" {{x}}",
            "cat <<EOF\nbody $HOME\nEOF\necho {{x}}",
            "case {{x}} in a) echo {{x}};; esac",
            "v=$(( 1 + (2) )); echo \"$v\" {{x}}",
            "echo \"#\" {{x}}",
        ] {
            Template::compile(text, FileKind::Shell, "f").unwrap_or_else(|e| panic!("{text}: {e}"));
        }
    }

    #[test]
    fn toml_and_json_values_are_strings_or_typed_integers() {
        let mut types = ParameterTypes::new();
        types.insert(
            "port".into(),
            ParameterSpec {
                kind: ParamType::Integer,
            },
        );
        let t = Template::compile(
            "a = {{param.s}}\nb = \"[{{param.s}}]:{{param.port}}\"\nport = {{param.port}}\n",
            FileKind::Toml,
            "f",
        )
        .unwrap();
        let hostile = "x\"\n[evil]\\\u{1}y";
        let out = t
            .render(
                &vars(&[("param.s", hostile), ("param.port", "+08")]),
                &types,
            )
            .unwrap();
        let doc: toml::Table = out.parse().unwrap();
        assert_eq!(doc["a"].as_str(), Some(hostile));
        assert_eq!(
            doc["b"].as_str().map(str::to_owned),
            Some(format!("[{hostile}]:8"))
        );
        assert_eq!(doc["port"].as_integer(), Some(8));
        assert_eq!(doc.len(), 3);
        let e = t
            .render(&vars(&[("param.s", "a"), ("param.port", "1; x")]), &types)
            .unwrap_err();
        assert!(e.to_string().contains("param.port") && e.to_string().contains("integer"));
        for (text, why) in [
            ("a = '{{x}}'", "literal"),
            ("a = '''{{x}}'''", "literal"),
            ("# {{x}}\n", "comment"),
            ("a = \"\\{{x}}\"", "backslash"),
        ] {
            let e = refused(text, FileKind::Toml);
            assert!(e.contains(why), "{text}: {e}");
        }

        let t =
            Template::compile("{\"a\": {{x}}, \"b\": \"<{{x}}>\"}", FileKind::Json, "f").unwrap();
        let out = t
            .render(&vars(&[("x", hostile)]), &ParameterTypes::new())
            .unwrap();
        let doc: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(doc["a"], hostile);
        assert_eq!(doc["b"], format!("<{hostile}>"));
    }

    #[test]
    fn plain_refuses_control_characters_and_every_kind_refuses_nul() {
        assert_eq!(
            render("{{x}}", FileKind::Plain, &[("x", "a\tb\n'\"$(c)")]).unwrap(),
            "a\tb\n'\"$(c)"
        );
        for bad in ["a\u{1b}[2J", "a\rb", "\u{7f}"] {
            assert!(render("{{x}}", FileKind::Plain, &[("x", bad)]).is_err());
        }
        for kind in [
            FileKind::Shell,
            FileKind::Toml,
            FileKind::Json,
            FileKind::Plain,
        ] {
            let e = render("{{x}}", kind, &[("x", "a\0b")]).unwrap_err();
            assert!(e.to_string().contains("NUL"), "{e}");
        }
    }

    #[test]
    fn unknown_variables_and_bad_names_are_errors() {
        let e = render("{{nope}}", FileKind::Plain, &[]).unwrap_err();
        assert!(e.to_string().contains("nope"), "{e}");
        assert!(Template::compile("{{open", FileKind::Plain, "f").is_err());
        assert!(Template::compile("{{a b}}", FileKind::Plain, "f").is_err());
        let e = refused("line one\nline two '{{x}}'\n", FileKind::Shell);
        assert!(e.contains("line 2"), "{e}");
    }
}
