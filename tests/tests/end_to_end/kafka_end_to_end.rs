//! End to end through Kafka (librdkafka's in-process mock cluster): reference data and readings
//! in, bad messages mixed in, the exact alert transitions and dead letters out.

use std::collections::BTreeMap;
use std::time::Duration;

use citybrain_model::alert::transition_id;
use citybrain_model::time::now_millis;
use citybrain_model::{DeadLetterReason, TransitionState};
use citybrain_tests::{MockKafka, TOPICS, TestEngine, test_config};

const RULES: &str = r#"
[[rule]]
id = "ch4-alarm"
domain = "mine"
metric = "ch4"
above = 1.0
clear = 0.9
severity = "critical"
summary = "Methane {value}% on {face}"

[[rule]]
id = "face2-rising"
domain = "mine"
metric = "ch4"
scope = { face = "m1/f2" }
above = 0.8
clear = 0.7
for = "2s"

[[rule]]
id = "irrigation-needed"
domain = "farm"
metric = "soil_water"
below = 15
clear = 18
for = "30s"
"#;

fn reading(sensor: &str, t: u64, value: f64) -> String {
    format!(r#"{{"sensor":"{sensor}","ts":{t},"metric":"ch4","value":{value}}}"#)
}

fn soil(device: &str, t: u64, value: f64) -> String {
    format!(
        r#"{{"device":"{device}","ts":"{}","metric":"soil_water","value":{value}}}"#,
        rfc3339(t)
    )
}

fn rfc3339(t: u64) -> String {
    citybrain_model::time::format_event_time(t)
}

#[test]
fn readings_and_reference_data_in_exact_transitions_and_dead_letters_out() {
    readings_and_reference_data_on(MockKafka::new(&TOPICS));
}

#[test]
fn the_same_on_a_real_broker_process() {
    readings_and_reference_data_on(MockKafka::tansu(&TOPICS));
}

#[allow(clippy::expect_used)] // the body of two tests
fn readings_and_reference_data_on(kafka: MockKafka) {
    // An hour ago, to the second: recent enough for `max_future`, old enough to be replay.
    let t0 = (now_millis() - 3_600_000) / 1000 * 1000;
    let sensor =
        |face: &str| format!(r#"{{"mine":"m1","face":"{face}","kind":"ch4","cadence_ms":1000}}"#);
    kafka.produce(
        "registry.sensors",
        Some("s1"),
        Some(sensor("m1/f1").as_bytes()),
    );
    kafka.produce(
        "registry.sensors",
        Some("s2"),
        Some(sensor("m1/f1").as_bytes()),
    );
    // s2 moves to face 2 (latest value wins); s3 is registered and deleted again (tombstone).
    kafka.produce(
        "registry.sensors",
        Some("s2"),
        Some(sensor("m1/f2").as_bytes()),
    );
    kafka.produce(
        "registry.sensors",
        Some("s3"),
        Some(sensor("m1/f2").as_bytes()),
    );
    kafka.produce("registry.sensors", Some("s3"), None);
    kafka.produce("registry.sensors", None, Some(sensor("m1/f9").as_bytes()));
    kafka.produce(
        "registry.devices",
        Some("gh1-soil"),
        Some(br#"{"farm":"f1","greenhouse":"f1/gh1","kind":"soil_water","cadence_ms":10000}"#),
    );

    let s = 1000;
    let readings = [
        ("s1", 0, 0.5),
        ("s1", s, 1.2), // ch4-alarm firing
        ("s1", 2 * s, 0.95),
        ("s1", 3 * s, 0.85), // resolved
        ("s2", s, 0.9),      // face2-rising pending
        ("s2", 2 * s, 0.9),
        ("s2", 3500, 0.95),  // held 2.5 s: firing
        ("s2", 4 * s, 0.6),  // resolved
        ("s3", 2 * s, 0.85), // deleted from the registry: only `all` rules see it
        ("s3", 3 * s, 1.1),  // ch4-alarm firing (scope all)
    ];
    for (sensor, dt, value) in readings {
        kafka.produce(
            "mine.readings",
            Some(sensor),
            Some(reading(sensor, t0 + dt, value).as_bytes()),
        );
    }
    for (dt, value) in [
        (0, 16.0),
        (10 * s, 14.0),
        (20 * s, 13.5),
        (40 * s, 13.0),
        (50 * s, 19.0),
    ] {
        kafka.produce(
            "farm.readings",
            Some("gh1-soil"),
            Some(soil("gh1-soil", t0 + dt, value).as_bytes()),
        );
    }
    let far_future = now_millis() + 86_400_000;
    let oversized = format!(
        r#"{{"sensor":"s1","ts":{t0},"metric":"ch4","value":1,"pad":"{}"}}"#,
        "x".repeat(70_000)
    );
    let bad: [(&str, String); 8] = [
        ("mine.readings", "{\"sensor\": \"s1\", \"ts\": ".into()),
        (
            "mine.readings",
            format!(r#"{{"sensor":"s1","ts":{t0},"metric":"ch4"}}"#),
        ),
        (
            "mine.readings",
            format!(r#"{{"sensor":"s1","ts":{t0},"metric":"ch4","value":"high"}}"#),
        ),
        (
            "mine.readings",
            format!(r#"{{"sensor":"s1","ts":{t0},"metric":"radon","value":1}}"#),
        ),
        (
            "mine.readings",
            format!(r#"{{"sensor":"s1","ts":{t0},"metric":"ch4","value":1e999}}"#),
        ),
        (
            "farm.readings",
            r#"{"device":"gh1-soil","ts":"tomorrow","metric":"soil_water","value":1}"#.into(),
        ),
        ("mine.readings", reading("s1", far_future, 0.1)),
        ("mine.readings", oversized),
    ];
    for (topic, payload) in &bad {
        kafka.produce(topic, Some("bad"), Some(payload.as_bytes()));
    }
    kafka.flush();

    let engine = TestEngine::start(&test_config(&kafka.brokers), RULES);
    let got = engine.wait_until(Duration::from_secs(60), |t, _| t.len() >= 7);
    assert_eq!(got.len(), 7, "{got:#?}");

    // Now the watermark is past t0 + 50 s: a reading from t0 + 1 s is late.
    kafka.produce(
        "mine.readings",
        Some("s1"),
        Some(reading("s1", t0 + s, 2.0).as_bytes()),
    );
    kafka.flush();
    engine.wait_until(Duration::from_secs(30), |_, dead| dead >= 10);
    std::thread::sleep(Duration::from_millis(300));
    let (file, dead_letters) = engine.stop();

    let mut got: Vec<(u64, String, String, TransitionState, f64)> = got
        .iter()
        .map(|t| {
            (
                t.event_time - t0,
                t.rule.clone(),
                t.entity.clone(),
                t.state,
                t.value,
            )
        })
        .collect();
    got.sort_by(|a, b| (a.0, &a.1, &a.2).cmp(&(b.0, &b.1, &b.2)));
    let row = |dt: u64, rule: &str, entity: &str, state, value| {
        (dt, rule.to_string(), entity.to_string(), state, value)
    };
    use TransitionState::{Firing, Resolved};
    assert_eq!(
        got,
        vec![
            row(s, "ch4-alarm", "s1", Firing, 1.2),
            row(3 * s, "ch4-alarm", "s1", Resolved, 0.85),
            row(3 * s, "ch4-alarm", "s3", Firing, 1.1),
            row(3500, "face2-rising", "s2", Firing, 0.95),
            row(4 * s, "face2-rising", "s2", Resolved, 0.6),
            row(40 * s, "irrigation-needed", "gh1-soil", Firing, 13.0),
            row(50 * s, "irrigation-needed", "gh1-soil", Resolved, 19.0),
        ]
    );

    // The file holds the same transitions, with deterministic ids and labels from the registry.
    assert_eq!(file.len(), 7);
    let first = file
        .iter()
        .find(|t| t.rule == "ch4-alarm" && t.entity == "s1" && t.state == Firing)
        .expect("s1 firing");
    assert_eq!(first.id, transition_id("ch4-alarm", "s1", Firing, t0 + s));
    assert_eq!(first.summary, "Methane 1.2% on m1/f1");
    let labels: BTreeMap<&str, &str> = first
        .labels
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    assert_eq!(labels.get("face"), Some(&"m1/f1"));
    assert_eq!(labels.get("severity"), Some(&"critical"));
    let s3 = file.iter().find(|t| t.entity == "s3").expect("s3");
    assert_eq!(
        s3.labels.get("face"),
        None,
        "s3 was deleted from the registry"
    );

    let mut reasons: Vec<(DeadLetterReason, String)> = dead_letters
        .iter()
        .map(|d| (d.reason, d.topic.clone()))
        .collect();
    reasons.sort();
    use DeadLetterReason::*;
    let mut expected = vec![
        (MalformedJson, "mine.readings".to_string()),
        (MissingField, "mine.readings".to_string()),
        (WrongType, "mine.readings".to_string()),
        (UnknownMetric, "mine.readings".to_string()),
        (NonFiniteValue, "mine.readings".to_string()),
        (BadTimestamp, "farm.readings".to_string()),
        (TimeOutOfRange, "mine.readings".to_string()),
        (Oversized, "mine.readings".to_string()),
        (MissingKey, "registry.sensors".to_string()),
        (Late, "mine.readings".to_string()),
    ];
    expected.sort();
    assert_eq!(reasons, expected);
    let malformed = dead_letters
        .iter()
        .find(|d| d.reason == MalformedJson)
        .expect("malformed");
    assert_eq!(malformed.payload(), b"{\"sensor\": \"s1\", \"ts\": ");
    assert!(dead_letters.iter().all(|d| d.offset >= 0));
    assert_eq!(
        kafka.read_all("dead-letters").len(),
        10,
        "the dead-letter topic holds every record"
    );
    assert_eq!(kafka.read_all("alerts").len(), 7);
}
