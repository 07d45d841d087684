//! The form encoder against what SlapOS's real Python client sent
//! (the repository's `testdata/vectors/*.txt`, captured from `slapos.core` 1.26.1): every
//! `application/x-www-form-urlencoded` body and every query string is decoded into its
//! fields, and [`http_client::form_urlencode`] of those fields must give back the very
//! bytes the client sent.

use std::path::{Path, PathBuf};

use http_client::form_urlencode;

/// The repository's captured data (`testdata/`, its README says where each file came
/// from): the first ancestor of this crate holding it.
fn testdata() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .map(|dir| dir.join("testdata"))
        .find(|dir| dir.join("README.md").is_file())
        .expect("testdata/ (the captured SLAP exchanges) in an ancestor of this crate")
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// The `N` bytes after the line `--- raw request body (N bytes) ---`.
fn raw_request_body(file: &[u8]) -> Option<&[u8]> {
    let start = find(file, b"--- raw request body (")?;
    let line_end = start + find(&file[start..], b"\n")?;
    let line = std::str::from_utf8(&file[start..line_end]).ok()?;
    let n: usize = line.split('(').nth(1)?.split(' ').next()?.parse().ok()?;
    file.get(line_end + 1..line_end + 1 + n)
}

/// The request's line and headers (up to the first blank line after `=== REQUEST ===`).
fn request_head(text: &str) -> Option<&str> {
    let start = text.find("=== REQUEST ===\n")? + "=== REQUEST ===\n".len();
    let rest = &text[start..];
    Some(&rest[..rest.find("\n\n").unwrap_or(rest.len())])
}

/// The fields of a form as a server reads it (`+` is a space, `%XX` a byte, UTF-8).
fn decode(form: &str) -> Vec<(String, String)> {
    let part = |s: &str| {
        let spaced = s.replace('+', " ");
        percent_encoding::percent_decode_str(&spaced)
            .decode_utf8()
            .unwrap_or_else(|e| panic!("{s:?}: not UTF-8: {e}"))
            .into_owned()
    };
    form.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (part(k), part(v))
        })
        .collect()
}

/// Where two encodings part, with a little of each around it.
fn first_difference(sent: &str, ours: &str) -> String {
    let at = sent
        .bytes()
        .zip(ours.bytes())
        .position(|(a, b)| a != b)
        .unwrap_or(sent.len().min(ours.len()));
    let around = |s: &str| {
        let from = at.saturating_sub(20);
        s.get(from..(at + 20).min(s.len())).unwrap_or("").to_owned()
    };
    format!(
        "byte {at}: sent ...{}... ours ...{}...",
        around(sent),
        around(ours)
    )
}

fn reencode(form: &str) -> String {
    let fields = decode(form);
    let fields: Vec<(&str, &str)> = fields
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    form_urlencode(&fields)
}

#[test]
fn encodes_every_captured_form_and_query_as_the_python_client() {
    let dir = testdata().join("vectors");
    let entries = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot read the SLAP vectors in {} ({e})", dir.display()));
    let mut paths: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "txt"))
        .collect();
    paths.sort();
    let (mut bodies, mut queries, mut fields, mut escaped) = (0, 0, 0, 0);
    let mut failures = Vec::new();
    for path in &paths {
        let name = path
            .file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
        let file = std::fs::read(path).unwrap_or_else(|e| panic!("{name}: {e}"));
        let text = String::from_utf8_lossy(&file);
        let Some(head) = request_head(&text) else {
            continue;
        };
        let mut sent = Vec::new();
        let request_line = head.lines().next().unwrap_or("");
        if let Some(target) = request_line.split(' ').nth(1) {
            if let Some((_, query)) = target.split_once('?') {
                sent.push(query.to_owned());
                queries += 1;
            }
        }
        let form = head.lines().any(|l| {
            l.to_ascii_lowercase()
                .starts_with("content-type: application/x-www-form-urlencoded")
        });
        if form {
            let body = raw_request_body(&file).unwrap_or_else(|| panic!("{name}: no raw body"));
            sent.push(String::from_utf8(body.to_vec()).expect("an encoded form is ASCII"));
            bodies += 1;
        }
        for wire in sent {
            fields += decode(&wire).len();
            escaped += wire.matches('%').count() + wire.matches('+').count();
            let ours = reencode(&wire);
            if ours != wire {
                failures.push(format!("{name}: {}", first_difference(&wire, &ours)));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    // What the vectors hold (so that this cannot pass on an empty or moved folder):
    // 54 form bodies, 14 query strings, escapes of every kind the client makes.
    assert!(
        bodies >= 50 && queries >= 10,
        "{bodies} bodies, {queries} queries"
    );
    assert!(
        fields > 200 && escaped > 1000,
        "{fields} fields, {escaped} escapes"
    );
    eprintln!("{bodies} form bodies and {queries} query strings ({fields} fields, {escaped} escapes) byte for byte");
}

/// The characters the vectors hold, and the ones `quote_plus` treats specially that they
/// may not: Python's answers (`urllib.parse.urlencode`, Python 3.11).
#[test]
fn agrees_with_python_on_the_edge_characters() {
    // python3 -c 'from urllib.parse import urlencode; print(urlencode({"k ~": "a+b/c?d=e&f#g%h é\x00\n*()!\x27"}))'
    assert_eq!(
        form_urlencode(&[("k ~", "a+b/c?d=e&f#g%h é\u{0}\n*()!'")]),
        "k+~=a%2Bb%2Fc%3Fd%3De%26f%23g%25h+%C3%A9%00%0A%2A%28%29%21%27"
    );
}
