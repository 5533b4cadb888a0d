//! Fuzz target: `decode_registry` of every registry kind on `key` newline `value` (properties: `citybrain_model::fuzzing::check_registry`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| citybrain_model::fuzzing::check_registry(data));
