//! Fuzz target: `config::load_mapping_str` (a replay mapping file) on arbitrary text (properties: `citybrain_engine::fuzzing::check_mapping`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| citybrain_engine::fuzzing::check_mapping(data));
