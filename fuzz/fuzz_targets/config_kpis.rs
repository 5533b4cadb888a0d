//! Fuzz target: `config::load_kpis_str` (a KPI file) on arbitrary text (properties: `citybrain_engine::fuzzing::check_kpis`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| citybrain_engine::fuzzing::check_kpis(data));
