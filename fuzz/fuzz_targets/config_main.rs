//! Fuzz target: `config::load_str` (the main config file) on arbitrary text (properties: `citybrain_engine::fuzzing::check_config`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| citybrain_engine::fuzzing::check_config(data));
