//! `xml_bodies`: see `sillok_fuzz_harness::xml_bodies` for the input format and invariants.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| sillok_fuzz_harness::xml_bodies::run(data));
