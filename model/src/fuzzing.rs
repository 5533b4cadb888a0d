//! The properties the fuzz targets in `fuzz/` check for the decoders, shared with the test
//! that replays the committed corpus (`model/tests/fuzz_corpus.rs`) so CI checks every corpus
//! input on stable Rust too.
//!
//! Each `check_*` function takes one arbitrary input, decodes it and panics when a property
//! does not hold:
//!
//! - decoding never panics, and a failure has one of the reasons the decoder can give (never
//!   `late` or `oversized`, which the source decides);
//! - a decoded reading has a finite value, a metric of its domain and a time not before
//!   [`EARLIEST_PLAUSIBLE_TIME`];
//! - re-encoding a decoded event in the wire format (time as epoch milliseconds, and as
//!   RFC 3339 when it has a date) and decoding it again gives the same event.
//!
//! Not a stable API: only the fuzz targets and tests use it.

use std::path::{Path, PathBuf};

use serde_json::{Map, Value, json};

use crate::decode::{
    DeadLetterReason, DecodeError, EARLIEST_PLAUSIBLE_TIME, LATEST_WRITABLE_TIME,
    decode_farm_reading, decode_mine_reading, decode_registry, decode_report,
};
use crate::reading::{Domain, Reading};
use crate::registry::{EntityInfo, RegistryKind, RegistryUpdate};
use crate::report::ReportEvent;
use crate::time::{EventTime, format_event_time};

/// The reasons an event decoder may give.
const EVENT_REASONS: [DeadLetterReason; 7] = [
    DeadLetterReason::MalformedJson,
    DeadLetterReason::MissingField,
    DeadLetterReason::WrongType,
    DeadLetterReason::UnknownMetric,
    DeadLetterReason::NonFiniteValue,
    DeadLetterReason::BadTimestamp,
    DeadLetterReason::TimeOutOfRange,
];

/// The reasons the registry decoder may give.
const REGISTRY_REASONS: [DeadLetterReason; 5] = [
    DeadLetterReason::MalformedJson,
    DeadLetterReason::MissingField,
    DeadLetterReason::WrongType,
    DeadLetterReason::NonFiniteValue,
    DeadLetterReason::MissingKey,
];

fn check_reason(error: &DecodeError, allowed: &[DeadLetterReason], input: &[u8]) {
    assert!(
        allowed.contains(&error.reason),
        "unexpected reason {:?} ({}) for {:?}",
        error.reason,
        error.detail,
        String::from_utf8_lossy(input)
    );
}

/// The wire forms of `time`: epoch milliseconds and RFC 3339.
fn wire_times(time: EventTime) -> [Value; 2] {
    [json!(time), json!(format_event_time(time))]
}

fn check_time(time: EventTime, event: &dyn std::fmt::Debug) {
    assert!(
        (EARLIEST_PLAUSIBLE_TIME..=LATEST_WRITABLE_TIME).contains(&time),
        "time out of range: {event:?}"
    );
}

fn to_bytes(value: &Value) -> Vec<u8> {
    // Serializing a `Value` cannot fail: its map keys are strings.
    serde_json::to_vec(value).unwrap_or_default()
}

fn check_reading(
    decoded: Result<Reading, DecodeError>,
    input: &[u8],
    domain: Domain,
    decode: fn(&[u8]) -> Result<Reading, DecodeError>,
) {
    let reading = match decoded {
        Ok(reading) => reading,
        Err(error) => return check_reason(&error, &EVENT_REASONS, input),
    };
    assert_eq!(reading.domain, domain, "{reading:?}");
    assert_eq!(reading.metric.domain(), domain, "{reading:?}");
    assert!(reading.value.is_finite(), "{reading:?}");
    check_time(reading.time, &reading);
    let entity_field = match domain {
        Domain::Mine => "sensor",
        _ => "device",
    };
    for ts in wire_times(reading.time) {
        let wire = json!({
            entity_field: reading.entity,
            "ts": ts,
            "metric": reading.metric.as_str(),
            "value": reading.value,
        });
        let again = decode(&to_bytes(&wire));
        assert_eq!(
            again.as_ref(),
            Ok(&reading),
            "re-encoded as {wire} from {:?}",
            String::from_utf8_lossy(input)
        );
    }
}

/// Decodes `input` as a `mine.readings` message and checks the properties.
pub fn check_mine_reading(input: &[u8]) {
    check_reading(
        decode_mine_reading(input),
        input,
        Domain::Mine,
        decode_mine_reading,
    );
}

/// Decodes `input` as a `farm.readings` message and checks the properties.
pub fn check_farm_reading(input: &[u8]) {
    check_reading(
        decode_farm_reading(input),
        input,
        Domain::Farm,
        decode_farm_reading,
    );
}

/// Decodes `input` as a `citizen.reports` message and checks the properties.
pub fn check_report(input: &[u8]) {
    let report: ReportEvent = match decode_report(input) {
        Ok(report) => report,
        Err(error) => return check_reason(&error, &EVENT_REASONS, input),
    };
    check_time(report.time, &report);
    for ts in wire_times(report.time) {
        let wire = json!({
            "report": report.report,
            "ts": ts,
            "kind": report.kind,
            "category": report.category,
            "grid": report.grid,
            "unit": report.unit,
        });
        let again = decode_report(&to_bytes(&wire));
        assert_eq!(
            again.as_ref(),
            Ok(&report),
            "re-encoded as {wire} from {:?}",
            String::from_utf8_lossy(input)
        );
    }
}

/// The wire value of `info` in registry `kind`: the labels are the record's fields.
fn registry_value(kind: RegistryKind, info: &EntityInfo) -> Value {
    let mut fields: Map<String, Value> = info
        .labels
        .iter()
        .map(|(name, value)| (name.clone(), json!(value)))
        .collect();
    if kind != RegistryKind::Grids {
        fields.insert("cadence_ms".to_string(), json!(info.cadence_ms));
    }
    Value::Object(fields)
}

/// Splits a fuzz input into a registry message: the key is everything before the first
/// newline, the value everything after it (no newline: no value, a tombstone).
pub fn split_registry_input(input: &[u8]) -> (&[u8], Option<&[u8]>) {
    match input.iter().position(|&b| b == b'\n') {
        Some(at) => (&input[..at], Some(&input[at + 1..])),
        None => (input, None),
    }
}

/// Decodes `input` (see [`split_registry_input`]) as a message of each registry and checks
/// the properties.
pub fn check_registry(input: &[u8]) {
    let (key, value) = split_registry_input(input);
    for kind in [
        RegistryKind::Sensors,
        RegistryKind::Devices,
        RegistryKind::Grids,
    ] {
        let update: RegistryUpdate = match decode_registry(kind, Some(key), value) {
            Ok(update) => update,
            Err(error) => {
                check_reason(&error, &REGISTRY_REASONS, input);
                continue;
            }
        };
        assert_eq!(update.kind, kind);
        assert_eq!(update.key.as_bytes(), key);
        let Some(info) = &update.info else {
            assert!(value.is_none_or(<[u8]>::is_empty), "{update:?}");
            continue;
        };
        assert!(info.labels.is_sorted(), "{info:?}");
        if kind == RegistryKind::Grids {
            assert_eq!(info.cadence_ms, 0, "{info:?}");
        }
        let wire = registry_value(kind, info);
        let again = decode_registry(kind, Some(key), Some(&to_bytes(&wire)));
        assert_eq!(
            again.as_ref(),
            Ok(&update),
            "re-encoded as {wire} from {:?}",
            String::from_utf8_lossy(input)
        );
    }
}

/// The committed corpus of fuzz target `target`: `fuzz/corpus/<target>/` of this repository.
pub fn corpus_dir(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target)
}

/// Runs `check` on every file of the committed corpus of `target` (see [`corpus_dir`]) and
/// returns how many there were. Panics naming the file whose check panics, and when the
/// corpus is missing or empty (so a moved corpus is noticed). For the corpus replay tests.
pub fn replay_corpus(target: &str, check: fn(&[u8])) -> usize {
    let dir = corpus_dir(target);
    let mut files: Vec<PathBuf> = match std::fs::read_dir(&dir) {
        Ok(entries) => entries
            .filter_map(Result::ok)
            .map(|entry| entry.path())
            .filter(|path| path.is_file())
            .collect(),
        Err(e) => panic!("cannot read the corpus {}: {e}", dir.display()),
    };
    files.sort();
    assert!(!files.is_empty(), "no corpus in {}", dir.display());
    for path in &files {
        let bytes = match std::fs::read(path) {
            Ok(bytes) => bytes,
            Err(e) => panic!("cannot read {}: {e}", path.display()),
        };
        let result = std::panic::catch_unwind(|| check(&bytes));
        assert!(
            result.is_ok(),
            "{target}: the input {} fails",
            path.display()
        );
    }
    files.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_examples_hold() {
        check_mine_reading(
            br#"{"sensor":"s1","ts":"2026-11-29T08:00:00.000+08:00","metric":"ch4","value":0.42}"#,
        );
        check_farm_reading(br#"{"device":"d","ts":1795910400000,"metric":"activity","value":3}"#);
        check_report(
            br#"{"report":"R1","ts":1795910400000,"kind":"created","category":"c","grid":"g"}"#,
        );
        check_registry(b"s1\n{\"mine\":\"m\",\"face\":\"m/f\",\"kind\":\"ch4\",\"cadence_ms\":5}");
        check_registry(b"g1\n{\"village\":\"v\",\"town\":\"t\",\"district\":\"d\"}");
        check_registry(b"g1");
        check_registry(b"");
        check_mine_reading(b"\xff");
    }
}
