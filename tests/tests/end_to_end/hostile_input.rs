//! Thousands of hostile messages interleaved with good readings: random bytes, truncated and
//! deeply nested JSON, oversized payloads (over the 64 KiB limit; the mock cluster's retention
//! rules out 10 MB ones here), wrong types, infinite values, timestamps in 1970
//! and the year 3000, missing fields, unknown metrics and duplicated events. The good readings
//! give exactly their alerts, every bad message is one dead letter with its reason, and the
//! engine stays up with bounded memory.

use std::collections::BTreeMap;
use std::time::Duration;

use citybrain_model::TransitionState;
use citybrain_model::time::now_millis;
use citybrain_tests::{MockKafka, SeededRandom, TOPICS, TestEngine, test_config};

const RULES: &str = r#"
[[rule]]
id = "ch4-alarm"
domain = "mine"
metric = "ch4"
scope = "all"
above = 1.0
clear = 0.8
severity = "critical"
"#;

fn reading(sensor: &str, time: u64, value: &str) -> String {
    format!(r#"{{"sensor":"{sensor}","ts":{time},"metric":"ch4","value":{value}}}"#)
}

/// The resident set size of this process, in MiB.
fn rss_mib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb / 1024)
}

#[test]
fn hostile_messages_become_dead_letters_and_good_ones_give_exactly_their_alerts() {
    let kafka = MockKafka::new(&TOPICS);
    for sensor in ["s1", "s2"] {
        let record = r#"{"mine":"m1","face":"m1/f1","kind":"ch4","cadence_ms":1000}"#;
        kafka.produce("registry.sensors", Some(sensor), Some(record.as_bytes()));
    }
    let t0 = now_millis() - 3_600_000;
    let mut rng = SeededRandom(20_261_129);
    let mut expected_alerts = Vec::new();
    let mut expected_dead: BTreeMap<&str, usize> = BTreeMap::new();
    let mut firing = [false, false];
    let good_json = reading("s1", t0, "0.5");
    let before = rss_mib();
    for i in 0..3_000u64 {
        let time = t0 + i * 1_000;
        for (s, sensor) in ["s1", "s2"].into_iter().enumerate() {
            // A slow wave with noise: crosses 1.0 and falls below 0.8 now and then.
            let phase = (i as f64 / 40.0 + s as f64).sin();
            let value = ((0.9 + 0.25 * phase) * 100.0).round() / 100.0;
            let message = reading(sensor, time, &value.to_string());
            kafka.produce("mine.readings", Some(sensor), Some(message.as_bytes()));
            if rng.between(0, 10) == 0 {
                // A duplicate changes nothing.
                kafka.produce("mine.readings", Some(sensor), Some(message.as_bytes()));
            }
            if !firing[s] && value >= 1.0 {
                firing[s] = true;
                expected_alerts.push((time, sensor.to_string(), TransitionState::Firing));
            } else if firing[s] && value < 0.8 {
                firing[s] = false;
                expected_alerts.push((time, sensor.to_string(), TransitionState::Resolved));
            }
        }
        let (reason, hostile): (&str, Vec<u8>) = match rng.between(0, 12) {
            0 => {
                let mut bytes = vec![0xFF];
                bytes.extend((0..rng.between(0, 200)).map(|_| rng.between(0, 256) as u8));
                ("malformed_json", bytes)
            }
            1 => {
                let cut = 1 + rng.between(0, good_json.len() as u64 - 1) as usize;
                ("malformed_json", good_json.as_bytes()[..cut].to_vec())
            }
            2 => {
                // Far beyond serde_json's recursion limit (128); small, because the mock
                // cluster keeps only so many bytes per partition.
                let depth = 1_000;
                let nested = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
                ("wrong_type", nested.into_bytes())
            }
            3 if i % 4 == 0 => ("oversized", vec![b' '; 70_000]),
            4 => ("wrong_type", reading("s1", time, "\"high\"").into_bytes()),
            5 => (
                "non_finite_value",
                reading("s2", time, "1e999").into_bytes(),
            ),
            6 => (
                "time_out_of_range",
                reading("s1", 1_000, "2.0").into_bytes(),
            ),
            7 => (
                "time_out_of_range",
                reading("s2", 32_503_680_000_000, "2.0").into_bytes(),
            ),
            8 => (
                "missing_field",
                format!(r#"{{"sensor":"s1","ts":{time},"value":2.0}}"#).into_bytes(),
            ),
            9 => (
                "unknown_metric",
                format!(r#"{{"sensor":"s1","ts":{time},"metric":"radon","value":2.0}}"#)
                    .into_bytes(),
            ),
            _ => continue,
        };
        *expected_dead.entry(reason).or_default() += 1;
        kafka.produce("mine.readings", Some("s1"), Some(&hostile));
    }
    kafka.flush();
    let hostile: usize = expected_dead.values().sum();
    // The figure in tests/README.md (a seeded generator: the same every run).
    assert_eq!(hostile, 2_292, "hostile messages");
    assert!(expected_alerts.len() > 20, "the good readings raise alerts");

    let engine = TestEngine::start(&test_config(&kafka.brokers), RULES);
    engine.wait_until(Duration::from_secs(120), |t, dead| {
        t.len() >= expected_alerts.len() && dead as usize >= hostile
    });
    std::thread::sleep(Duration::from_millis(500));
    let (alerts, dead_letters) = engine.stop();
    let growth = rss_mib().saturating_sub(before);

    let mut dead: BTreeMap<&str, usize> = BTreeMap::new();
    for letter in &dead_letters {
        *dead.entry(letter.reason.as_str()).or_default() += 1;
    }
    assert_eq!(
        dead, expected_dead,
        "one dead letter per hostile message, with its reason"
    );
    let mut got: Vec<(u64, String, TransitionState)> = alerts
        .iter()
        .map(|t| (t.event_time, t.entity.clone(), t.state))
        .collect();
    got.sort();
    expected_alerts.sort();
    assert_eq!(got, expected_alerts, "the good readings' alerts, exactly");
    assert!(growth < 512, "resident memory grew by {growth} MiB");
}
