//! Shared inputs and pipelines of citybrain's benches: synthetic mine readings shaped like the
//! simulator's ([`ch4_readings`], [`workload`]), the hand-written timely + differential floor
//! the engine's operators are compared with ([`floor`]), the driver that feeds either the
//! way the engine does ([`pipeline`]), and the load benches' knobs and clock ([`env_or`],
//! [`now_us`]).

#[cfg(feature = "dbsp")]
pub mod dbsp_peer;
pub mod floor;
pub mod pipeline;
pub mod workload;

use std::time::{SystemTime, UNIX_EPOCH};

use citybrain_model::time::format_event_time;
use citybrain_model::{Domain, Metric, Reading};

/// A size from the environment variable `name` (the load benches' knobs), else `default`.
pub fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The wall clock, microseconds since the epoch (latencies against event times).
pub fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// `count` ch4 readings of `sensors` sensors at 1 s cadence, drifting around the 1.0% alarm.
pub fn ch4_readings(sensors: usize, count: usize) -> Vec<Reading> {
    (0..count)
        .map(|i| {
            let sensor = i % sensors.max(1);
            let step = (i / sensors.max(1)) as u64;
            let wave = ((i as f64) * 0.017).sin() * 0.6 + 0.7;
            Reading {
                domain: Domain::Mine,
                entity: format!("mine-1/face-{}/ch4-{sensor}", sensor % 8).into(),
                metric: Metric::Ch4,
                value: (wave * 100.0).round() / 100.0,
                time: 1_795_910_400_000 + step * 1_000,
            }
        })
        .collect()
}

/// The same readings as wire JSON, the event time as epoch milliseconds.
pub fn ch4_messages(sensors: usize, count: usize) -> Vec<Vec<u8>> {
    encode_ch4(sensors, count, |time| time.to_string())
}

/// The same readings as wire JSON, the event time as RFC 3339 text (what many devices send).
pub fn ch4_messages_rfc3339(sensors: usize, count: usize) -> Vec<Vec<u8>> {
    encode_ch4(sensors, count, |time| {
        format!("\"{}\"", format_event_time(time))
    })
}

/// [`ch4_readings`] as wire JSON, `ts` writing each event time's JSON value.
fn encode_ch4(sensors: usize, count: usize, ts: impl Fn(u64) -> String) -> Vec<Vec<u8>> {
    ch4_readings(sensors, count)
        .into_iter()
        .map(|r| {
            format!(
                r#"{{"sensor":"{}","ts":{},"metric":"ch4","value":{}}}"#,
                r.entity,
                ts(r.time),
                r.value
            )
            .into_bytes()
        })
        .collect()
}
