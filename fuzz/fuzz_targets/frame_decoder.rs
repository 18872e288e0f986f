//! `frame_decoder`: see `sillok_fuzz_harness::frame_decoder` for the input format and invariants.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| sillok_fuzz_harness::frame_decoder::run(data));
