//! `instance_xml::decode` never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use slapos_proto::{instance_xml, Limits};

fuzz_target!(|data: &[u8]| {
    let _ = instance_xml::decode(data, &Limits::default());
});
