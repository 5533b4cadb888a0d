//! Replays the committed fuzz corpus of the decoders (`fuzz/corpus/decode_*/`) through the
//! properties the fuzz targets check, so every corpus input is checked on stable Rust in the
//! normal test run (the fuzzing itself needs nightly: `scripts/fuzz.sh`).

use citybrain_model::fuzzing::{
    check_farm_reading, check_mine_reading, check_registry, check_report, replay_corpus,
};

#[test]
fn decode_mine_reading_corpus() {
    replay_corpus("decode_mine_reading", check_mine_reading);
}

#[test]
fn decode_farm_reading_corpus() {
    replay_corpus("decode_farm_reading", check_farm_reading);
}

#[test]
fn decode_report_corpus() {
    replay_corpus("decode_report", check_report);
}

#[test]
fn decode_registry_corpus() {
    replay_corpus("decode_registry", check_registry);
}
