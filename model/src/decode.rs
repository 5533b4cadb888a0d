//! Decoding wire bytes into events, and the reasons input is dead-lettered.
//!
//! Every failure maps to one [`DeadLetterReason`], so each bad message has a counted, visible
//! outcome and decoding never panics.

use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;

use serde::de::value::{MapAccessDeserializer, SeqAccessDeserializer};
use serde::de::{self, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

use crate::EntityId;
use crate::reading::{Domain, Metric, Reading};
use crate::registry::{
    DeviceRecord, EntityInfo, GridRecord, RegistryKind, RegistryUpdate, SensorRecord,
};
use crate::report::{ReportEvent, ReportKind};
use crate::time::{parse_event_time, parse_rfc3339_time};

/// Why an input message was not used. The names are stable: they are metric label values and
/// the `reason` field of dead-letter records.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeadLetterReason {
    /// Not valid JSON (or a number out of range).
    MalformedJson,
    /// A required field is missing.
    MissingField,
    /// A field has the wrong JSON type, or the message is not an object.
    WrongType,
    /// The metric is not one of the domain's metrics.
    UnknownMetric,
    /// The value is NaN or infinite.
    NonFiniteValue,
    /// The event time is neither RFC 3339 nor epoch milliseconds.
    BadTimestamp,
    /// The event time is absurdly far from now (far future, before 2000 or after 9999).
    TimeOutOfRange,
    /// The event time is behind the watermark (older than the allowed lateness).
    Late,
    /// The message is larger than the configured limit.
    Oversized,
    /// A message without the key a compacted registry topic requires.
    MissingKey,
    /// A citizen report event (other than `created`) of a report whose `created` was never
    /// seen, judged once the report clock has passed its event time (so a `created` arriving
    /// later within the allowed lateness counts), or of a report forgotten after the
    /// retention.
    UnknownReport,
}

impl DeadLetterReason {
    /// Every reason, for pre-registering metric label values.
    pub const ALL: [DeadLetterReason; 11] = [
        DeadLetterReason::MalformedJson,
        DeadLetterReason::MissingField,
        DeadLetterReason::WrongType,
        DeadLetterReason::UnknownMetric,
        DeadLetterReason::NonFiniteValue,
        DeadLetterReason::BadTimestamp,
        DeadLetterReason::TimeOutOfRange,
        DeadLetterReason::Late,
        DeadLetterReason::Oversized,
        DeadLetterReason::MissingKey,
        DeadLetterReason::UnknownReport,
    ];

    /// The snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            DeadLetterReason::MalformedJson => "malformed_json",
            DeadLetterReason::MissingField => "missing_field",
            DeadLetterReason::WrongType => "wrong_type",
            DeadLetterReason::UnknownMetric => "unknown_metric",
            DeadLetterReason::NonFiniteValue => "non_finite_value",
            DeadLetterReason::BadTimestamp => "bad_timestamp",
            DeadLetterReason::TimeOutOfRange => "time_out_of_range",
            DeadLetterReason::Late => "late",
            DeadLetterReason::Oversized => "oversized",
            DeadLetterReason::MissingKey => "missing_key",
            DeadLetterReason::UnknownReport => "unknown_report",
        }
    }
}

/// A message that could not be used, with the reason and a human-readable detail.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("{}: {detail}", reason.as_str())]
pub struct DecodeError {
    /// The counted reason.
    pub reason: DeadLetterReason,
    /// What exactly was wrong.
    pub detail: String,
}

impl DecodeError {
    /// Builds an error.
    pub fn new(reason: DeadLetterReason, detail: impl Into<String>) -> Self {
        DecodeError {
            reason,
            detail: detail.into(),
        }
    }
}

/// Event times before 2000-01-01 are taken as garbage (e.g. epoch seconds sent as millis).
pub const EARLIEST_PLAUSIBLE_TIME: u64 = 946_684_800_000;

/// The last millisecond of 9999-12-31 UTC: later times have no RFC 3339 form (four-digit
/// years), so alerts could not carry them, and are garbage anyway (e.g. epoch microseconds
/// sent as millis). Sources also reject times too far ahead of the wall clock
/// (`max_future`), but replay has no wall clock to compare with.
pub const LATEST_WRITABLE_TIME: u64 = 253_402_300_799_999;

fn classify(error: serde_json::Error) -> DecodeError {
    use serde_json::error::Category;
    let text = error.to_string();
    let reason = match error.classify() {
        Category::Data if text.starts_with("missing field") => DeadLetterReason::MissingField,
        Category::Data => DeadLetterReason::WrongType,
        _ if text.contains("number out of range") => DeadLetterReason::NonFiniteValue,
        _ => DeadLetterReason::MalformedJson,
    };
    DecodeError::new(reason, text)
}

fn parse_json<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, DecodeError> {
    serde_json::from_slice(bytes).map_err(classify)
}

fn checked_time(ts: &WireTime<'_>) -> Result<u64, DecodeError> {
    let time = match ts {
        WireTime::Millis(millis) => Ok(*millis),
        WireTime::Text(text) => parse_rfc3339_time(text),
        WireTime::Other(value) => parse_event_time(value),
    }
    .map_err(|e| DecodeError::new(DeadLetterReason::BadTimestamp, e))?;
    if time < EARLIEST_PLAUSIBLE_TIME {
        return Err(DecodeError::new(
            DeadLetterReason::TimeOutOfRange,
            format!(
                "event time {time} ms is before 2000-01-01 (epoch seconds instead of milliseconds?)"
            ),
        ));
    }
    if time > LATEST_WRITABLE_TIME {
        return Err(DecodeError::new(
            DeadLetterReason::TimeOutOfRange,
            format!(
                "event time {time} ms is after 9999-12-31 (epoch microseconds instead of milliseconds?)"
            ),
        ));
    }
    Ok(time)
}

fn checked_value(value: f64) -> Result<f64, DecodeError> {
    if value.is_finite() {
        Ok(value)
    } else {
        Err(DecodeError::new(
            DeadLetterReason::NonFiniteValue,
            format!("value {value} is not finite"),
        ))
    }
}

fn checked_metric(name: &str, domain: Domain) -> Result<Metric, DecodeError> {
    Metric::parse(name, domain).ok_or_else(|| {
        let known: Vec<&str> = Metric::ALL
            .iter()
            .filter(|m| m.domain() == domain)
            .map(|m| m.as_str())
            .collect();
        DecodeError::new(
            DeadLetterReason::UnknownMetric,
            format!(
                "unknown {} metric `{name}` (known: {})",
                domain.as_str(),
                known.join(", ")
            ),
        )
    })
}

/// An event time as sent: epoch milliseconds and RFC 3339 text are read without building a
/// `serde_json::Value` (the text borrowed from the message when it has no escapes); any other
/// JSON is kept as a `Value` so it is rejected with the same message as before.
enum WireTime<'a> {
    Millis(u64),
    Text(Cow<'a, str>),
    Other(Value),
}

impl<'de: 'a, 'a> Deserialize<'de> for WireTime<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(WireTimeVisitor(PhantomData))
    }
}

struct WireTimeVisitor<'a>(PhantomData<&'a ()>);

impl<'de: 'a, 'a> Visitor<'de> for WireTimeVisitor<'a> {
    type Value = WireTime<'a>;

    fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
        formatter.write_str("an RFC 3339 time or epoch milliseconds")
    }

    fn visit_u64<E: de::Error>(self, millis: u64) -> Result<Self::Value, E> {
        Ok(WireTime::Millis(millis))
    }

    fn visit_i64<E: de::Error>(self, number: i64) -> Result<Self::Value, E> {
        Ok(WireTime::Other(Value::from(number)))
    }

    fn visit_f64<E: de::Error>(self, number: f64) -> Result<Self::Value, E> {
        Ok(WireTime::Other(Value::from(number)))
    }

    fn visit_bool<E: de::Error>(self, flag: bool) -> Result<Self::Value, E> {
        Ok(WireTime::Other(Value::Bool(flag)))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(WireTime::Other(Value::Null))
    }

    fn visit_borrowed_str<E: de::Error>(self, text: &'de str) -> Result<Self::Value, E> {
        Ok(WireTime::Text(Cow::Borrowed(text)))
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<Self::Value, E> {
        Ok(WireTime::Text(Cow::Owned(text.to_owned())))
    }

    fn visit_string<E: de::Error>(self, text: String) -> Result<Self::Value, E> {
        Ok(WireTime::Text(Cow::Owned(text)))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        Value::deserialize(SeqAccessDeserializer::new(seq)).map(WireTime::Other)
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        Value::deserialize(MapAccessDeserializer::new(map)).map(WireTime::Other)
    }
}

// The metric and time are read in place (borrowed from the message): only the entity, which
// the reading keeps, is copied out.
#[derive(Deserialize)]
struct WireMineReading<'a> {
    sensor: EntityId,
    #[serde(borrow)]
    ts: WireTime<'a>,
    #[serde(borrow)]
    metric: Cow<'a, str>,
    value: f64,
}

#[derive(Deserialize)]
struct WireFarmReading<'a> {
    device: EntityId,
    #[serde(borrow)]
    ts: WireTime<'a>,
    #[serde(borrow)]
    metric: Cow<'a, str>,
    value: f64,
}

#[derive(Deserialize)]
struct WireReport<'a> {
    report: String,
    #[serde(borrow)]
    ts: WireTime<'a>,
    kind: ReportKind,
    category: String,
    grid: String,
    #[serde(default)]
    unit: Option<String>,
}

/// Decodes a `mine.readings` message:
/// `{"sensor": "...", "ts": "RFC 3339" | epoch_ms, "metric": "ch4", "value": 0.8}`.
pub fn decode_mine_reading(bytes: &[u8]) -> Result<Reading, DecodeError> {
    let wire: WireMineReading = parse_json(bytes)?;
    Ok(Reading {
        domain: Domain::Mine,
        metric: checked_metric(&wire.metric, Domain::Mine)?,
        value: checked_value(wire.value)?,
        time: checked_time(&wire.ts)?,
        entity: wire.sensor,
    })
}

/// Decodes a `farm.readings` message:
/// `{"device": "...", "ts": ..., "metric": "soil_water", "value": 22.5}`.
pub fn decode_farm_reading(bytes: &[u8]) -> Result<Reading, DecodeError> {
    let wire: WireFarmReading = parse_json(bytes)?;
    Ok(Reading {
        domain: Domain::Farm,
        metric: checked_metric(&wire.metric, Domain::Farm)?,
        value: checked_value(wire.value)?,
        time: checked_time(&wire.ts)?,
        entity: wire.device,
    })
}

/// Decodes a `citizen.reports` message:
/// `{"report": "...", "ts": ..., "kind": "created", "category": "...", "grid": "...", "unit": null}`.
pub fn decode_report(bytes: &[u8]) -> Result<ReportEvent, DecodeError> {
    let wire: WireReport = parse_json(bytes)?;
    Ok(ReportEvent {
        time: checked_time(&wire.ts)?,
        report: wire.report,
        kind: wire.kind,
        category: wire.category,
        grid: wire.grid,
        unit: wire.unit,
    })
}

/// Decodes a message of a compacted registry topic. `value = None` (or empty) is a tombstone.
pub fn decode_registry(
    kind: RegistryKind,
    key: Option<&[u8]>,
    value: Option<&[u8]>,
) -> Result<RegistryUpdate, DecodeError> {
    let key = key.filter(|k| !k.is_empty()).ok_or_else(|| {
        DecodeError::new(
            DeadLetterReason::MissingKey,
            "registry messages need the entity id as key",
        )
    })?;
    let key = std::str::from_utf8(key)
        .map_err(|_| DecodeError::new(DeadLetterReason::MissingKey, "the key is not UTF-8"))?
        .into();
    let info = match value.filter(|v| !v.is_empty()) {
        None => None,
        Some(bytes) => Some(match kind {
            RegistryKind::Sensors => EntityInfo::from(parse_json::<SensorRecord>(bytes)?),
            RegistryKind::Devices => EntityInfo::from(parse_json::<DeviceRecord>(bytes)?),
            RegistryKind::Grids => EntityInfo::from(parse_json::<GridRecord>(bytes)?),
        }),
    };
    Ok(RegistryUpdate { kind, key, info })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reason(result: Result<Reading, DecodeError>) -> DeadLetterReason {
        match result {
            Ok(r) => panic!("expected an error, decoded {r:?}"),
            Err(e) => e.reason,
        }
    }

    #[test]
    fn decodes_a_mine_reading() {
        let r = decode_mine_reading(
            br#"{"sensor":"s1","ts":"2026-11-29T00:00:00Z","metric":"ch4","value":0.82,"extra":1}"#,
        );
        assert_eq!(
            r,
            Ok(Reading {
                domain: Domain::Mine,
                entity: "s1".into(),
                metric: Metric::Ch4,
                value: 0.82,
                time: 1_795_910_400_000
            })
        );
    }

    #[test]
    fn decodes_a_farm_reading_with_epoch_millis() {
        let r = decode_farm_reading(
            br#"{"device":"d1","ts":1795910400000,"metric":"soil_water","value":14}"#,
        );
        assert_eq!(
            r.map(|r| (r.metric, r.value, r.time)),
            Ok((Metric::SoilWater, 14.0, 1_795_910_400_000))
        );
    }

    #[test]
    fn every_bad_input_reason() {
        use DeadLetterReason::*;
        let cases: [(&[u8], DeadLetterReason); 11] = [
            (b"{not json", MalformedJson),
            (b"", MalformedJson),
            (
                br#"{"sensor":"s1","ts":1795910400000,"metric":"ch4"}"#,
                MissingField,
            ),
            (
                br#"{"sensor":"s1","ts":1795910400000,"metric":"ch4","value":"high"}"#,
                WrongType,
            ),
            (br#"[1,2,3]"#, WrongType),
            (
                br#"{"sensor":"s1","ts":1795910400000,"metric":"soil_water","value":1}"#,
                UnknownMetric,
            ),
            (
                br#"{"sensor":"s1","ts":1795910400000,"metric":"radon","value":1}"#,
                UnknownMetric,
            ),
            (
                br#"{"sensor":"s1","ts":1795910400000,"metric":"ch4","value":1e999}"#,
                NonFiniteValue,
            ),
            (
                br#"{"sensor":"s1","ts":"noon","metric":"ch4","value":1}"#,
                BadTimestamp,
            ),
            (
                br#"{"sensor":"s1","ts":1795910400,"metric":"ch4","value":1}"#,
                TimeOutOfRange,
            ),
            (
                br#"{"sensor":"s1","ts":1795910400000,"metric":"ch4","value":NaN}"#,
                MalformedJson,
            ),
        ];
        for (bytes, expected) in cases {
            assert_eq!(
                reason(decode_mine_reading(bytes)),
                expected,
                "for {}",
                String::from_utf8_lossy(bytes)
            );
        }
        assert_eq!(
            checked_value(f64::NAN).map_err(|e| e.reason),
            Err(NonFiniteValue)
        );
        assert_eq!(
            checked_value(f64::INFINITY).map_err(|e| e.reason),
            Err(NonFiniteValue)
        );
    }

    /// Found by fuzzing (`decode_mine_reading`): epoch microseconds sent as milliseconds were
    /// decoded as a time in the year 58880, which `format_event_time` writes as
    /// `+58880-02-23T17:20:11.000Z`: not RFC 3339, so an alert's `event_time_rfc3339` (and a
    /// re-encoded event) would not parse. Replay has no `max_future` check to catch it.
    #[test]
    fn regression_long_decimal_values_decode_correctly_rounded() {
        // Found by the CI fuzz run: without serde_json's `float_roundtrip` this decoded one ulp
        // off (11.77777777777778), so the value re-encoded and decoded again differed.
        let long = br#"{"device":"d","ts":1795910400000,"metric":"soil_water","value":11.777777777777777777777777777777777777777777777775}"#;
        let value = decode_farm_reading(long).map(|r| r.value);
        assert_eq!(value, Ok(11.777777777777779));
        assert_eq!(
            value,
            Ok("11.777777777777777777777777777777777777777777777775"
                .parse()
                .unwrap_or(0.0))
        );
    }

    #[test]
    fn regression_year_58880_is_out_of_range() {
        let micros = br#"{"sensor":"s","ts":1795910808011000,"metric":"ch4","value":0.03}"#;
        assert_eq!(
            reason(decode_mine_reading(micros)),
            DeadLetterReason::TimeOutOfRange
        );
        let last = format!(
            r#"{{"device":"d","ts":{LATEST_WRITABLE_TIME},"metric":"activity","value":1}}"#
        );
        assert_eq!(
            decode_farm_reading(last.as_bytes()).map(|r| r.time),
            Ok(LATEST_WRITABLE_TIME)
        );
        assert_eq!(
            crate::time::format_event_time(LATEST_WRITABLE_TIME),
            "9999-12-31T23:59:59.999Z"
        );
        let after = format!(
            r#"{{"report":"r","ts":{},"kind":"created","category":"c","grid":"g"}}"#,
            LATEST_WRITABLE_TIME + 1
        );
        assert_eq!(
            decode_report(after.as_bytes()).map_err(|e| e.reason),
            Err(DeadLetterReason::TimeOutOfRange)
        );
    }

    /// The time is read without a `serde_json::Value` for epoch millis and text; every other
    /// form still goes through `parse_event_time`, so its verdict and message are unchanged.
    #[test]
    fn every_form_of_event_time() {
        let decode = |ts: &str| {
            let bytes = format!(r#"{{"sensor":"s","ts":{ts},"metric":"ch4","value":1}}"#);
            decode_mine_reading(bytes.as_bytes())
                .map(|r| r.time)
                .map_err(|e| (e.reason, e.detail))
        };
        let bad = |detail: &str| Err((DeadLetterReason::BadTimestamp, detail.to_string()));
        assert_eq!(decode("1795910400000"), Ok(1_795_910_400_000));
        assert_eq!(decode(r#""2026-11-29T00:00:00Z""#), Ok(1_795_910_400_000));
        // An escape makes serde_json hand over an owned string, not a borrowed one.
        assert_eq!(
            decode(r#""2026-11-29T08:00:00\u002b08:00""#),
            Ok(1_795_910_400_000)
        );
        assert_eq!(
            decode(r#""noon""#),
            bad("`noon` is not RFC 3339: premature end of input")
        );
        assert_eq!(
            decode("-5"),
            bad("`-5` is not a non-negative integer of epoch milliseconds")
        );
        assert_eq!(
            decode("1.5e12"),
            bad("`1500000000000.0` is not a non-negative integer of epoch milliseconds")
        );
        let found = |what: &str| {
            bad(&format!(
                "expected an RFC 3339 string or epoch milliseconds, found {what}"
            ))
        };
        assert_eq!(decode("true"), found("true"));
        assert_eq!(decode("null"), found("null"));
        assert_eq!(decode("[1, 2]"), found("[1,2]"));
        assert_eq!(decode(r#"{"ms": 1}"#), found(r#"{"ms":1}"#));
    }

    #[test]
    fn decodes_reports() {
        let r = decode_report(
            br#"{"report":"R1","ts":"2026-11-29T08:00:00+08:00","kind":"created","category":"road_damage","grid":"uxin/galutu/g1"}"#,
        );
        assert_eq!(r.map(|r| (r.kind, r.unit)), Ok((ReportKind::Created, None)));
        let bad = decode_report(
            br#"{"report":"R1","ts":1795910400000,"kind":"vanished","category":"x","grid":"g"}"#,
        );
        assert_eq!(bad.map_err(|e| e.reason), Err(DeadLetterReason::WrongType));
    }

    #[test]
    fn registry_values_and_tombstones() {
        let up = decode_registry(
            RegistryKind::Sensors,
            Some(b"s1"),
            Some(br#"{"mine":"m1","face":"m1/f1","kind":"ch4","cadence_ms":1000}"#),
        );
        assert_eq!(
            up.map(|u| (u.key, u.info.map(|i| i.labels))),
            Ok((
                "s1".into(),
                Some(vec![
                    ("face".to_string(), "m1/f1".to_string()),
                    ("kind".to_string(), "ch4".to_string()),
                    ("mine".to_string(), "m1".to_string())
                ])
            ))
        );
        assert_eq!(
            decode_registry(RegistryKind::Grids, Some(b"g1"), None).map(|u| u.info),
            Ok(None)
        );
        assert_eq!(
            decode_registry(RegistryKind::Grids, None, Some(b"{}")).map_err(|e| e.reason),
            Err(DeadLetterReason::MissingKey)
        );
    }
}
