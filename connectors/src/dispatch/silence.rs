//! Silences: matchers plus a time window during which matching transitions are not sent.
//!
//! Silences come from the config (`[[dispatch.silence]]`) and from operators through
//! [`Dispatcher::add_silence`](super::Dispatcher::add_silence), whose request body is
//! [`SilenceRequest`]. Silences added at run time are kept in the alert log, so they survive
//! a restart until they end. A silenced transition is still written to the alert log (so it
//! is known and deduplicated) but goes to no receiver.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::routing::{Matcher, MatcherError, all_match};

/// A silence, as stored in the alert log and shown by [`Dispatcher::silences`](super::Dispatcher::silences).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SilenceRecord {
    /// Unique id (`cfg-N` for silences from the config).
    pub id: String,
    /// Matchers in their written form, e.g. `mine="jungar-1"`.
    pub matchers: Vec<String>,
    /// Start, epoch milliseconds (inclusive).
    pub starts_at: u64,
    /// End, epoch milliseconds (exclusive).
    pub ends_at: u64,
    /// Who created it.
    #[serde(default)]
    pub created_by: String,
    /// Why.
    #[serde(default)]
    pub comment: String,
}

/// The body of a request to add a silence (for the HTTP API).
///
/// ```json
/// {"matchers": ["mine = \"jungar-1\"", "severity =~ \"warning|info\""],
///  "starts_at": "2026-11-29T08:00:00+08:00", "ends_at": "2026-11-29T10:00:00+08:00",
///  "created_by": "duty-officer", "comment": "planned ventilation maintenance"}
/// ```
///
/// `starts_at` defaults to now; instead of `ends_at`, `duration` (e.g. `"2h"`) may be given.
/// Times are RFC 3339 strings or epoch milliseconds.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SilenceRequest {
    /// At least one matcher, each `label = "value"`, `!=`, `=~` or `!~`.
    pub matchers: Vec<String>,
    /// Start (RFC 3339 or epoch ms). Default: now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub starts_at: Option<serde_json::Value>,
    /// End (RFC 3339 or epoch ms). Exactly one of `ends_at` and `duration`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ends_at: Option<serde_json::Value>,
    /// Length, e.g. `"2h"`. Exactly one of `ends_at` and `duration`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<String>,
    /// Who creates it.
    #[serde(default)]
    pub created_by: String,
    /// Why.
    #[serde(default)]
    pub comment: String,
}

/// A silence request or record is not usable.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SilenceError {
    /// No matchers: a silence must not silence everything by accident.
    #[error("a silence needs at least one matcher")]
    NoMatchers,
    /// A matcher does not parse.
    #[error("matcher `{text}`: {error}")]
    Matcher {
        /// The matcher as given.
        text: String,
        /// What is wrong with it.
        error: MatcherError,
    },
    /// A time does not parse.
    #[error("`{field}`: {message}")]
    Time {
        /// `starts_at`, `ends_at` or `duration`.
        field: &'static str,
        /// What is wrong.
        message: String,
    },
    /// Not exactly one of `ends_at` and `duration`.
    #[error("give exactly one of `ends_at` and `duration`")]
    End,
    /// The end is not after the start, or already past.
    #[error("the silence ends ({ends_at}) before it starts ({starts_at}) or before now")]
    Window {
        /// Start, epoch ms.
        starts_at: u64,
        /// End, epoch ms.
        ends_at: u64,
    },
}

/// A silence with parsed matchers.
#[derive(Clone, Debug)]
pub(crate) struct Silence {
    pub(crate) record: SilenceRecord,
    matchers: Vec<Matcher>,
}

impl Silence {
    /// Parses the record's matchers.
    pub(crate) fn new(record: SilenceRecord) -> Result<Silence, SilenceError> {
        if record.matchers.is_empty() {
            return Err(SilenceError::NoMatchers);
        }
        let matchers = record
            .matchers
            .iter()
            .map(|text| {
                Matcher::parse(text).map_err(|error| SilenceError::Matcher {
                    text: text.clone(),
                    error,
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Silence { record, matchers })
    }

    /// Whether it is in force at `now` (epoch ms) for `labels`.
    pub(crate) fn silences(&self, labels: &BTreeMap<String, String>, now: u64) -> bool {
        self.record.starts_at <= now
            && now < self.record.ends_at
            && all_match(&self.matchers, labels)
    }
}

fn parse_time(field: &'static str, value: &serde_json::Value) -> Result<u64, SilenceError> {
    citybrain_model::time::parse_event_time(value)
        .map_err(|message| SilenceError::Time { field, message })
}

impl SilenceRequest {
    /// Checks the request and turns it into a record with `id`, relative to `now` (epoch ms).
    pub fn into_record(self, id: String, now: u64) -> Result<SilenceRecord, SilenceError> {
        let starts_at = match &self.starts_at {
            Some(value) => parse_time("starts_at", value)?,
            None => now,
        };
        let ends_at = match (&self.ends_at, &self.duration) {
            (Some(value), None) => parse_time("ends_at", value)?,
            (None, Some(text)) => {
                let length = humantime::parse_duration(text).map_err(|e| SilenceError::Time {
                    field: "duration",
                    message: format!("invalid duration \"{text}\": {e}"),
                })?;
                let ms = u64::try_from(length.as_millis()).unwrap_or(u64::MAX);
                starts_at.saturating_add(ms)
            }
            _ => return Err(SilenceError::End),
        };
        if ends_at <= starts_at || ends_at <= now {
            return Err(SilenceError::Window { starts_at, ends_at });
        }
        let record = SilenceRecord {
            id,
            matchers: self.matchers,
            starts_at,
            ends_at,
            created_by: self.created_by,
            comment: self.comment,
        };
        // Checks the matchers.
        Silence::new(record.clone())?;
        Ok(record)
    }
}

/// The silences in force or to come.
#[derive(Clone, Debug, Default)]
pub(crate) struct Silences {
    list: Vec<Silence>,
}

impl Silences {
    /// Adds or replaces (same id) a silence.
    pub(crate) fn insert(&mut self, silence: Silence) {
        self.list.retain(|s| s.record.id != silence.record.id);
        self.list.push(silence);
    }

    /// Ends a silence now; false when there is none with `id`.
    pub(crate) fn expire(&mut self, id: &str, now: u64) -> bool {
        let mut found = false;
        for silence in self.list.iter_mut().filter(|s| s.record.id == id) {
            silence.record.ends_at = silence.record.ends_at.min(now);
            found = true;
        }
        found
    }

    /// The id of a silence in force for `labels` at `now`, if any.
    pub(crate) fn silencing(&self, labels: &BTreeMap<String, String>, now: u64) -> Option<&str> {
        self.list
            .iter()
            .find(|s| s.silences(labels, now))
            .map(|s| s.record.id.as_str())
    }

    /// Forgets silences that ended before `now`.
    pub(crate) fn prune(&mut self, now: u64) {
        self.list.retain(|s| s.record.ends_at > now);
    }

    /// The records, in insertion order.
    pub(crate) fn records(&self) -> Vec<SilenceRecord> {
        self.list.iter().map(|s| s.record.clone()).collect()
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const NOW: u64 = 1_795_910_400_000;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn window_is_start_inclusive_end_exclusive() {
        let silence = Silence::new(SilenceRecord {
            id: "s".into(),
            matchers: vec!["mine = \"jungar-1\"".into()],
            starts_at: NOW,
            ends_at: NOW + 1000,
            created_by: String::new(),
            comment: String::new(),
        })
        .unwrap();
        let mine = labels(&[("mine", "jungar-1")]);
        assert!(!silence.silences(&mine, NOW - 1));
        assert!(silence.silences(&mine, NOW));
        assert!(silence.silences(&mine, NOW + 999));
        assert!(!silence.silences(&mine, NOW + 1000));
        assert!(!silence.silences(&labels(&[("mine", "dalad-2")]), NOW));

        let mut all = Silences::default();
        all.insert(silence);
        assert_eq!(all.silencing(&mine, NOW), Some("s"));
        assert!(all.expire("s", NOW + 10));
        assert_eq!(all.silencing(&mine, NOW + 10), None);
        assert_eq!(all.silencing(&mine, NOW + 5), Some("s"));
        all.prune(NOW + 11);
        assert!(all.records().is_empty());
        assert!(!all.expire("s", NOW));
    }

    #[test]
    fn requests_are_checked() {
        let request = SilenceRequest {
            matchers: vec!["face =~ \"jungar-1/.*\"".into()],
            starts_at: Some(json!("2026-11-29T08:00:00+08:00")),
            duration: Some("2h".into()),
            created_by: "duty".into(),
            ..SilenceRequest::default()
        };
        let record = request.clone().into_record("x".into(), NOW).unwrap();
        assert_eq!(record.starts_at, NOW);
        assert_eq!(record.ends_at, NOW + 7_200_000);
        assert_eq!(record.created_by, "duty");

        let from_json: SilenceRequest = serde_json::from_value(json!({
            "matchers": ["mine = \"jungar-1\""],
            "ends_at": NOW + 60_000,
        }))
        .unwrap();
        let record = from_json.into_record("y".into(), NOW).unwrap();
        assert_eq!((record.starts_at, record.ends_at), (NOW, NOW + 60_000));

        let bad = |r: SilenceRequest| r.into_record("z".into(), NOW).unwrap_err();
        assert_eq!(
            bad(SilenceRequest {
                matchers: vec![],
                duration: Some("1h".into()),
                ..SilenceRequest::default()
            }),
            SilenceError::NoMatchers
        );
        assert_eq!(
            bad(SilenceRequest {
                matchers: vec!["a = b".into()],
                ..SilenceRequest::default()
            }),
            SilenceError::End
        );
        assert_eq!(
            bad(SilenceRequest {
                matchers: vec!["a = b".into()],
                ends_at: Some(json!(NOW - 1)),
                ..SilenceRequest::default()
            }),
            SilenceError::Window {
                starts_at: NOW,
                ends_at: NOW - 1
            }
        );
        assert!(matches!(
            bad(SilenceRequest {
                matchers: vec!["a ~ b".into()],
                duration: Some("1h".into()),
                ..SilenceRequest::default()
            }),
            SilenceError::Matcher { .. }
        ));
        assert!(matches!(
            bad(SilenceRequest {
                matchers: vec!["a = b".into()],
                duration: Some("1 fortnight".into()),
                ..SilenceRequest::default()
            }),
            SilenceError::Time {
                field: "duration",
                ..
            }
        ));
        assert!(
            serde_json::from_value::<SilenceRequest>(json!({"matchers": [], "until": 1})).is_err()
        );
    }
}
