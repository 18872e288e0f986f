//! `range_header`: see `sillok_fuzz_harness::range_header` for the input format and invariants.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| sillok_fuzz_harness::range_header::run(data));
