//! `s3_request`: see `sillok_fuzz_harness::s3_request` for the input format and invariants.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| sillok_fuzz_harness::s3_request::run(data));
