//! `citybrain latency`: how long after its event time a change becomes visible on a running
//! engine's `/api/stream`.
//!
//! The client subscribes to the Server-Sent Events stream and, for every event, takes the wall
//! clock at arrival (epoch ms) minus the event time the event carries:
//!
//! - an `alert`: its transition's `event_time` (the reading or report that caused it);
//! - a `kpis` snapshot: its `time` (the sensor clock's completed logical time: every reading
//!   before it is reflected) and, separately, its `citizen_time`.
//!
//! The figures mean "event to screen" only when event time is the wall clock at which the
//! event happened, as with `citybrain demo` and `citybrain simulate --speed 1`, and when the
//! client runs on the engine's machine (one clock). Citizen reports are reported apart: their
//! clock trails by the citizen stream's allowed lateness (minutes in production) by design.
//!
//! At the start and the end the client also reads `/metrics` for the number of events
//! dead-lettered as `late`, so a faster configuration that loses events shows it.

use std::time::{Duration, Instant};

use citybrain_model::time::now_millis;
use hdrhistogram::Histogram;
use serde_json::Value;

/// Failure of a latency measurement.
#[derive(Debug, thiserror::Error)]
pub enum LatencyError {
    /// The HTTP request failed or the stream broke.
    #[error("{0}")]
    Http(#[from] reqwest::Error),
    /// The server answered with an error status.
    #[error("{url}: HTTP {status}")]
    Status {
        /// The URL requested.
        url: String,
        /// The status code.
        status: u16,
    },
    /// The stream ended before the measurement did.
    #[error("the event stream ended after {0:?}")]
    Ended(Duration),
    /// The async runtime could not be built.
    #[error("tokio runtime: {0}")]
    Runtime(#[from] std::io::Error),
}

/// Percentiles of one kind of change, milliseconds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Summary {
    /// Changes measured.
    pub count: u64,
    /// Median.
    pub p50: u64,
    /// 90th percentile.
    pub p90: u64,
    /// 99th percentile.
    pub p99: u64,
    /// Largest.
    pub max: u64,
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.count == 0 {
            return write!(f, "none");
        }
        write!(
            f,
            "n={:<6} p50 {:>5} ms  p90 {:>5} ms  p99 {:>5} ms  max {:>5} ms",
            self.count, self.p50, self.p90, self.p99, self.max
        )
    }
}

/// Latency histogram of one kind of change.
#[derive(Clone, Debug)]
pub struct Series {
    /// 3 significant digits, auto-resizing (`None` only if hdrhistogram refused that).
    histogram: Option<Histogram<u64>>,
}

impl Default for Series {
    fn default() -> Self {
        Series {
            histogram: Histogram::new(3).ok(),
        }
    }
}

impl Series {
    /// Records one latency, milliseconds.
    pub fn record(&mut self, millis: u64) {
        // `record` grows the auto-resizing histogram; `saturating_record` does not, and clamped
        // a 5 s latency to the initial range's top bucket.
        if let Some(h) = &mut self.histogram
            && h.record(millis).is_err()
        {
            h.saturating_record(millis);
        }
    }

    /// Count and percentiles so far.
    pub fn summary(&self) -> Summary {
        let Some(h) = &self.histogram else {
            return Summary {
                count: 0,
                p50: 0,
                p90: 0,
                p99: 0,
                max: 0,
            };
        };
        Summary {
            count: h.len(),
            p50: h.value_at_quantile(0.50),
            p90: h.value_at_quantile(0.90),
            p99: h.value_at_quantile(0.99),
            max: h.max(),
        }
    }
}

/// Latencies per kind of change seen on the stream.
#[derive(Clone, Debug, Default)]
pub struct Latencies {
    /// Transitions of mine and farm rules.
    pub sensor_alerts: Series,
    /// Transitions of citizen-report rules (their clock trails by minutes by design).
    pub citizen_alerts: Series,
    /// KPI snapshots, by their sensor clock time.
    pub sensor_kpis: Series,
    /// KPI snapshots, by their citizen clock time.
    pub citizen_kpis: Series,
}

impl Latencies {
    /// Records one SSE event named `name` with JSON `data` that arrived at `arrival` (epoch
    /// ms). Events without an event time (status, config, the first snapshot) are ignored.
    pub fn observe(&mut self, name: &str, data: &str, arrival: u64) {
        let Ok(value) = serde_json::from_str::<Value>(data) else {
            return;
        };
        match name {
            "alert" => {
                let transition = &value["transition"];
                let Some(time) = transition["event_time"].as_u64() else {
                    return;
                };
                let series = match transition["domain"].as_str() {
                    Some("citizen") => &mut self.citizen_alerts,
                    _ => &mut self.sensor_alerts,
                };
                series.record(arrival.saturating_sub(time));
            }
            "kpis" => {
                let snapshot = &value["snapshot"];
                for (field, series) in [
                    ("time", &mut self.sensor_kpis),
                    ("citizen_time", &mut self.citizen_kpis),
                ] {
                    // 0: nothing complete yet; near u64::MAX: the clock has no input at all.
                    if let Some(time) = snapshot[field].as_u64()
                        && time > 0
                        && time < u64::MAX / 2
                    {
                        series.record(arrival.saturating_sub(time));
                    }
                }
            }
            _ => {}
        }
    }
}

/// Splits complete SSE events (ended by a blank line) off the front of `buffer`, returning
/// each one's event name and data (data lines joined by `\n`).
pub fn take_events(buffer: &mut String) -> Vec<(String, String)> {
    let mut events = Vec::new();
    while let Some(end) = buffer.find("\n\n") {
        let block: String = buffer.drain(..end + 2).collect();
        let mut name = String::from("message");
        let mut data: Vec<&str> = Vec::new();
        for line in block.lines() {
            if let Some(rest) = line.strip_prefix("event:") {
                name = rest.trim_start().to_string();
            } else if let Some(rest) = line.strip_prefix("data:") {
                data.push(rest.strip_prefix(' ').unwrap_or(rest));
            }
        }
        if !data.is_empty() {
            events.push((name, data.join("\n")));
        }
    }
    events
}

/// Parses the `late` count out of a Prometheus exposition of `/metrics`.
pub fn late_dead_letters(metrics: &str) -> Option<u64> {
    metrics.lines().find_map(|line| {
        let rest = line.strip_prefix("citybrain_dead_letters_total{reason=\"late\"}")?;
        rest.trim().parse::<f64>().ok().map(|v| v as u64)
    })
}

/// What one measurement found.
#[derive(Clone, Debug)]
pub struct Report {
    /// Latencies after the warm-up.
    pub latencies: Latencies,
    /// Events dead-lettered as `late` during the measurement (`None`: `/metrics` unreadable).
    pub late: Option<u64>,
    /// How long the measurement ran (after the warm-up).
    pub measured: Duration,
}

/// Measures for `seconds` after `warmup` seconds against the engine at `base` (e.g.
/// `http://127.0.0.1:8080`); `token` is sent as a bearer token when the API needs one.
pub fn measure(
    base: &str,
    warmup: Duration,
    duration: Duration,
    token: Option<&str>,
) -> Result<Report, LatencyError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(measure_async(base, warmup, duration, token))
}

async fn get(
    client: &reqwest::Client,
    url: String,
    token: Option<&str>,
) -> Result<reqwest::Response, LatencyError> {
    let mut request = client.get(&url);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await?;
    if !response.status().is_success() {
        return Err(LatencyError::Status {
            url,
            status: response.status().as_u16(),
        });
    }
    Ok(response)
}

async fn late_count(client: &reqwest::Client, base: &str, token: Option<&str>) -> Option<u64> {
    let response = get(client, format!("{base}/metrics"), token).await.ok()?;
    late_dead_letters(&response.text().await.ok()?)
}

async fn measure_async(
    base: &str,
    warmup: Duration,
    duration: Duration,
    token: Option<&str>,
) -> Result<Report, LatencyError> {
    let base = base.trim_end_matches('/');
    let client = reqwest::Client::new();
    let mut response = get(&client, format!("{base}/api/stream"), token).await?;
    let started = Instant::now();
    let mut measuring_since = None;
    let mut late_before = None;
    let mut latencies = Latencies::default();
    let mut buffer = String::new();
    let deadline = started + warmup + duration;
    loop {
        let now = Instant::now();
        if now >= deadline {
            break;
        }
        if measuring_since.is_none() && now >= started + warmup {
            measuring_since = Some(now);
            late_before = late_count(&client, base, token).await;
            latencies = Latencies::default();
        }
        let next_mark = match measuring_since {
            None => (started + warmup).min(deadline),
            Some(_) => deadline,
        };
        let wait = next_mark.saturating_duration_since(now);
        let chunk = match tokio::time::timeout(wait, response.chunk()).await {
            Err(_) => continue,
            Ok(chunk) => chunk?,
        };
        let Some(chunk) = chunk else {
            return Err(LatencyError::Ended(started.elapsed()));
        };
        let arrival = now_millis();
        // Line ends may be CRLF; a chunk can split one, so drop every CR.
        buffer.extend(
            String::from_utf8_lossy(&chunk)
                .chars()
                .filter(|&c| c != '\r'),
        );
        for (name, data) in take_events(&mut buffer) {
            latencies.observe(&name, &data, arrival);
        }
    }
    let late_after = late_count(&client, base, token).await;
    let late = match (late_before, late_after) {
        (Some(before), Some(after)) => Some(after.saturating_sub(before)),
        _ => None,
    };
    Ok(Report {
        latencies,
        late,
        measured: measuring_since.map_or(Duration::ZERO, |s| s.elapsed()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_events_and_keeps_the_unfinished_tail() {
        let mut buffer = String::from(
            "event: alert\ndata: {\"a\":1}\n\n: keep-alive\n\nevent: kpis\r\ndata: x\r\n\r\nevent: st",
        );
        // A CRLF stream: normalise like a client would before splitting.
        buffer = buffer.replace("\r\n", "\n");
        let events = take_events(&mut buffer);
        assert_eq!(
            events,
            vec![
                ("alert".to_string(), "{\"a\":1}".to_string()),
                ("kpis".to_string(), "x".to_string())
            ]
        );
        assert_eq!(buffer, "event: st");
    }

    #[test]
    fn alerts_and_snapshots_by_clock() {
        let mut l = Latencies::default();
        l.observe(
            "alert",
            r#"{"type":"alert","transition":{"event_time":1000,"domain":"mine"}}"#,
            1040,
        );
        l.observe(
            "alert",
            r#"{"type":"alert","transition":{"event_time":1000,"domain":"citizen"}}"#,
            6000,
        );
        l.observe(
            "kpis",
            r#"{"type":"kpis","snapshot":{"time":2000,"citizen_time":0,"values":{}}}"#,
            2070,
        );
        l.observe("status", r#"{"type":"status"}"#, 5000);
        assert_eq!(l.sensor_alerts.summary().count, 1);
        assert_eq!(l.sensor_alerts.summary().max, 40);
        // Three significant digits: 5000 lands in a bucket a few ms wide.
        let p50 = l.citizen_alerts.summary().p50;
        assert!((5000..5010).contains(&p50), "{p50}");
        assert_eq!(l.sensor_kpis.summary().p99, 70);
        assert_eq!(l.citizen_kpis.summary().count, 0);
    }

    #[test]
    fn reads_the_late_counter() {
        let text = "# HELP x\ncitybrain_dead_letters_total{reason=\"bad_timestamp\"} 3\ncitybrain_dead_letters_total{reason=\"late\"} 12\n";
        assert_eq!(late_dead_letters(text), Some(12));
        assert_eq!(late_dead_letters("nothing"), None);
    }
}
