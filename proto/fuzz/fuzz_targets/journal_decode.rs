//! The usage documents (`consumption` per partition, `journal` per computer): decoding
//! never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use slapos_proto::{journal, Limits};

fuzz_target!(|data: &[u8]| {
    let limits = Limits::default();
    let _ = journal::decode_computer_journal(data, &limits);
    let _ = journal::decode_partition_consumption(data, &limits);
});
