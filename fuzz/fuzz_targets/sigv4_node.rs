//! `sigv4_node`: see `sillok_fuzz_harness::sigv4_node` for the input format and invariants.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| sillok_fuzz_harness::sigv4_node::run(data));
