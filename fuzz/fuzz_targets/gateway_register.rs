//! `gateway_register`: see `slapos_fuzz_checks::gateway::register` for the input's layout and what is asserted.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| slapos_fuzz_checks::gateway::register(data));
