//! Fuzz target: `decode_report` on arbitrary bytes (properties: `citybrain_model::fuzzing::check_report`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| citybrain_model::fuzzing::check_report(data));
