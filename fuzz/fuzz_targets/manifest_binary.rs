//! `manifest_binary`: see `sillok_fuzz_harness::manifest_binary` for the input format and invariants.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| sillok_fuzz_harness::manifest_binary::run(data));
