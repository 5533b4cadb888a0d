//! Durations in config and rule files: strings such as `"250ms"`, `"30s"`, `"5m"` or
//! `"1h 30m"`, parsed with [`humantime`] (the parser behind `humantime-serde`).
//!
//! Used as `#[serde(with = "duration")]` (or `duration::option` for `Option<Duration>`). Unlike
//! `humantime_serde`, a bad string keeps humantime's precise reason (e.g. the unknown unit) in
//! the error, so diagnostics can say what is wrong with it.

use std::fmt;
use std::time::Duration;

use serde::{Deserializer, Serializer, de};

/// What a duration looks like, for `expected ...` messages.
pub(crate) const EXPECTED: &str = "a duration string such as \"250ms\", \"30s\" or \"5m\"";

/// The hint attached to every bad duration.
pub(crate) const HINT: &str =
    "write a number and a unit: ms, s, m (minutes), h, d; e.g. \"250ms\", \"30s\", \"1h 30m\"";

/// The prefix of the error message for a string humantime rejects.
pub(crate) const INVALID: &str = "invalid duration";

struct DurationVisitor;

impl de::Visitor<'_> for DurationVisitor {
    type Value = Duration;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(EXPECTED)
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<Duration, E> {
        humantime::parse_duration(text).map_err(|e| E::custom(format!("{INVALID} \"{text}\": {e}")))
    }
}

/// Deserializes a duration string.
pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Duration, D::Error> {
    deserializer.deserialize_str(DurationVisitor)
}

/// Serializes a duration as a humantime string (e.g. `"1h 30m"`).
pub(crate) fn serialize<S: Serializer>(value: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.collect_str(&humantime::format_duration(*value))
}

/// The same for `Option<Duration>`; use with `#[serde(default)]`.
pub(crate) mod option {
    use std::time::Duration;

    use serde::{Deserializer, Serializer};

    /// Serializes a present duration as a humantime string, an absent one as none.
    pub(crate) fn serialize<S: Serializer>(
        value: &Option<Duration>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        match value {
            Some(duration) => super::serialize(duration, serializer),
            None => serializer.serialize_none(),
        }
    }

    /// Deserializes a present duration string as `Some`.
    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<Duration>, D::Error> {
        super::deserialize(deserializer).map(Some)
    }
}

/// The JSON Schema of a duration string, for `#[schemars(with = "duration::DurationString")]`
/// on duration fields (their Rust type is [`Duration`], their TOML form a string).
pub(crate) struct DurationString;

/// What every duration string matches: numbers each followed by a unit, e.g. `"1h 30m"`.
pub(crate) const PATTERN: &str = r"^\s*([0-9]+\s*[a-zA-Zµ]+\s*)+$";

impl schemars::JsonSchema for DurationString {
    fn inline_schema() -> bool {
        true
    }

    fn schema_name() -> std::borrow::Cow<'static, str> {
        "DurationString".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "pattern": PATTERN,
            "examples": ["250ms", "30s", "5m", "1h 30m"],
        })
    }
}
