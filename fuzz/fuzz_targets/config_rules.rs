//! Fuzz target: `config::load_rules_str` (a rule file) on arbitrary text (properties: `citybrain_engine::fuzzing::check_rules`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| citybrain_engine::fuzzing::check_rules(data));
