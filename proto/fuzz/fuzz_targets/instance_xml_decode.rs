//! `instance_xml::decode` never panics, and expands nothing: an accepted document gives
//! keys and values no bigger in total than the document itself (no DTD, no custom
//! entities, and the references XML defines are never longer than what they stand for).
#![no_main]

use libfuzzer_sys::fuzz_target;
use slapos_proto::{instance_xml, Limits};

fuzz_target!(|data: &[u8]| {
    if let Ok(dict) = instance_xml::decode(data, &Limits::default()) {
        let decoded: usize = dict
            .iter()
            .map(|(k, v)| k.len() + v.as_ref().map_or(0, String::len))
            .sum();
        assert!(
            decoded <= data.len(),
            "{decoded} bytes decoded from {}",
            data.len()
        );
    }
});
