//! Fuzz target: `decode_mine_reading` on arbitrary bytes (properties: `citybrain_model::fuzzing::check_mine_reading`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| citybrain_model::fuzzing::check_mine_reading(data));
