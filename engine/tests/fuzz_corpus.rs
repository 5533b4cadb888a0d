//! Replays the committed fuzz corpus of the config parsers (`fuzz/corpus/config_*/`) through
//! the properties the fuzz targets check, so every corpus input is checked on stable Rust in
//! the normal test run (the fuzzing itself needs nightly: `scripts/fuzz.sh`).

use citybrain_engine::fuzzing::{check_config, check_kpis, check_mapping, check_rules};
use citybrain_model::fuzzing::replay_corpus;

#[test]
fn config_main_corpus() {
    replay_corpus("config_main", check_config);
}

#[test]
fn config_rules_corpus() {
    replay_corpus("config_rules", check_rules);
}

#[test]
fn config_kpis_corpus() {
    replay_corpus("config_kpis", check_kpis);
}

#[test]
fn config_mapping_corpus() {
    replay_corpus("config_mapping", check_mapping);
}
