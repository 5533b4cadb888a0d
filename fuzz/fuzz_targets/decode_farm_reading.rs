//! Fuzz target: `decode_farm_reading` on arbitrary bytes (properties: `citybrain_model::fuzzing::check_farm_reading`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| citybrain_model::fuzzing::check_farm_reading(data));
