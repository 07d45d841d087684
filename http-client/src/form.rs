//! `application/x-www-form-urlencoded`, as SlapOS's client sends it.
//!
//! The Python client posts `requests.post(url, data={...})`, which encodes with
//! `urllib.parse.urlencode`, that is `quote_plus(.., safe='')` of each key and value
//! (UTF-8): the letters, digits and `_.-~` stay, a space becomes `+`, every other byte
//! `%XX` with upper-case hex. Query strings (`params=`) are encoded the same way.
//! `tests/form_vectors.rs` checks this against the bodies and query strings the real
//! client sent (`testdata/vectors`).

/// `k=v&k=v`, each key and value escaped as `urllib.parse.quote_plus` does.
pub fn form_urlencode(fields: &[(&str, &str)]) -> String {
    let mut out = String::new();
    for (i, (k, v)) in fields.iter().enumerate() {
        if i > 0 {
            out.push('&');
        }
        quote_plus(k, &mut out);
        out.push('=');
        quote_plus(v, &mut out);
    }
    out
}

fn quote_plus(s: &str, out: &mut String) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'_' | b'.' | b'-' | b'~' => {
                out.push(char::from(b))
            }
            b' ' => out.push('+'),
            _ => {
                out.push('%');
                out.push(char::from(HEX[usize::from(b >> 4)]));
                out.push(char::from(HEX[usize::from(b & 15)]));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_as_quote_plus() {
        assert_eq!(
            form_urlencode(&[("a b", "<x y=\"1\"/>"), ("c", "é&"), ("t", "~_.-+/")]),
            "a+b=%3Cx+y%3D%221%22%2F%3E&c=%C3%A9%26&t=~_.-%2B%2F"
        );
        assert_eq!(form_urlencode(&[]), "");
        assert_eq!(form_urlencode(&[("k", "")]), "k=");
    }
}
