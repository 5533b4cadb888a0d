//! Event time: milliseconds since the Unix epoch, parsed from RFC 3339 strings or integers.

use serde_json::Value;

/// Event time in milliseconds since 1970-01-01T00:00:00Z. This is also the timely timestamp.
pub type EventTime = u64;

/// Parses a wire timestamp: an RFC 3339 string (any offset, e.g. `2026-11-29T08:00:00+08:00`)
/// or a non-negative integer of epoch milliseconds.
pub fn parse_event_time(value: &Value) -> Result<EventTime, String> {
    match value {
        Value::String(text) => parse_rfc3339_time(text),
        Value::Number(n) => n
            .as_u64()
            .ok_or_else(|| format!("`{n}` is not a non-negative integer of epoch milliseconds")),
        other => Err(format!(
            "expected an RFC 3339 string or epoch milliseconds, found {other}"
        )),
    }
}

/// Parses an RFC 3339 event time (any offset) into epoch milliseconds.
pub fn parse_rfc3339_time(text: &str) -> Result<EventTime, String> {
    chrono::DateTime::parse_from_rfc3339(text)
        .map_err(|e| format!("`{text}` is not RFC 3339: {e}"))
        .and_then(|t| {
            u64::try_from(t.timestamp_millis()).map_err(|_| format!("`{text}` is before 1970"))
        })
}

/// Formats epoch milliseconds as RFC 3339 UTC with millisecond precision.
pub fn format_event_time(time: EventTime) -> String {
    i64::try_from(time)
        .ok()
        .and_then(chrono::DateTime::from_timestamp_millis)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_else(|| time.to_string())
}

/// Wall-clock now in epoch milliseconds.
pub fn now_millis() -> EventTime {
    u64::try_from(chrono::Utc::now().timestamp_millis()).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_rfc3339_with_offsets_and_epoch_millis() {
        assert_eq!(
            parse_event_time(&json!("2026-11-29T08:00:00+08:00")),
            Ok(1_795_910_400_000)
        );
        assert_eq!(
            parse_event_time(&json!("2026-11-29T00:00:00.250Z")),
            Ok(1_795_910_400_250)
        );
        assert_eq!(
            parse_event_time(&json!(1_795_910_400_250u64)),
            Ok(1_795_910_400_250)
        );
    }

    #[test]
    fn rejects_other_shapes() {
        assert!(parse_event_time(&json!("yesterday")).is_err());
        assert!(parse_event_time(&json!(-5)).is_err());
        assert!(parse_event_time(&json!(1.5)).is_err());
        assert!(parse_event_time(&json!(null)).is_err());
        assert!(parse_event_time(&json!("1960-01-01T00:00:00Z")).is_err());
    }

    #[test]
    fn formats_back() {
        assert_eq!(
            format_event_time(1_795_910_400_250),
            "2026-11-29T00:00:00.250Z"
        );
    }
}
