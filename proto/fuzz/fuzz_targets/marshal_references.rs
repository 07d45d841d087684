//! Reference-heavy marshal documents, built from the input as a small program (open a list,
//! dictionary or tuple, close, refer to one of the last ids, add a string), so that the
//! fuzzer spends its time on nesting, chains and bombs of references rather than on
//! finding the syntax. Checked as `marshal_expansion` checks arbitrary bytes.
#![no_main]

mod common;

use libfuzzer_sys::fuzz_target;

#[global_allocator]
static ALLOCATOR: common::Counting = common::Counting;

fn build(data: &[u8]) -> String {
    let mut doc = String::from("<marshal><list id=\"i1\">");
    let mut open: Vec<&str> = Vec::new();
    let mut next_id = 2usize;
    let mut bytes = data.iter().copied();
    while let Some(op) = bytes.next() {
        let arg = usize::from(bytes.next().unwrap_or(0));
        match op % 8 {
            0 | 1 => {
                doc.push_str(&format!("<list id=\"i{next_id}\">"));
                next_id += 1;
                open.push("list");
            }
            2 => {
                doc.push_str(&format!("<dictionary id=\"i{next_id}\">"));
                next_id += 1;
                open.push("dictionary");
            }
            3 => {
                doc.push_str("<tuple>");
                open.push("tuple");
            }
            4 => {
                if let Some(tag) = open.pop() {
                    doc.push_str(&format!("</{tag}>"));
                }
            }
            5 | 6 => {
                let id = next_id.saturating_sub(1 + arg % 16).max(1);
                doc.push_str(&format!("<reference id=\"i{id}\"/>"));
            }
            _ => {
                doc.push_str("<string>");
                doc.push_str(&"x".repeat(arg * 16));
                doc.push_str("</string>");
            }
        }
    }
    while let Some(tag) = open.pop() {
        doc.push_str(&format!("</{tag}>"));
    }
    doc.push_str("</list></marshal>");
    doc
}

fuzz_target!(|data: &[u8]| common::check(build(data).as_bytes()));
