//! `marshal::decode` of arbitrary bytes under small limits: whatever it accepts measures
//! within them (`Value::size`: values, height, text bytes with every reference expanded),
//! and the heap it uses stays bounded by the limits, accepted or not.
#![no_main]

mod common;

use libfuzzer_sys::fuzz_target;

#[global_allocator]
static ALLOCATOR: common::Counting = common::Counting;

fuzz_target!(|data: &[u8]| common::check(data));
