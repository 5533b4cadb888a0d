//! Ingest stalls end to end through Kafka (the in-process mock cluster): twelve gas sensors
//! over the three partitions of `mine.readings`, one partition stops delivering while the
//! others go on. Exactly one `ingest stalled` alert for that partition and no `sensor silent`
//! for its sensors; a sensor on a healthy partition that goes silent still alerts; the data
//! returning resolves the stall. When all the data ends, the whole topic stalls: one alert per
//! partition, and still no `sensor silent`.
//!
//! The readings are on Kafka before the engine starts: the gap of partition 2 is a gap in
//! event time, which is what the stall operator times (a partition that is caught up and
//! silent does not hold the watermark back, so the live case reaches the same event times;
//! the end of the test, every partition idle and event time following the wall clock, is that
//! live case).

use std::time::Duration;

use citybrain_model::alert::transition_id;
use citybrain_model::time::now_millis;
use citybrain_model::{AlertTransition, TransitionState};
use citybrain_tests::{MockKafka, TOPICS, TestEngine, test_config};

const RULES: &str = r#"
[[rule]]
id = "ch4-silent"
kind = "absence"
domain = "mine"
metric = "ch4"
cadences = 3
stall_after = "2s"
severity = "critical"
summary = "Gas sensor {entity} silent"
"#;

/// The sensors of each partition of `mine.readings`.
const SENSORS: [[&str; 4]; 3] = [
    ["a0", "a1", "a2", "a3"],
    ["b0", "b1", "b2", "b3"],
    ["c0", "c1", "c2", "c3"],
];

/// (event time - t0, rule, entity, state, value), sorted.
fn rows(
    transitions: &[AlertTransition],
    t0: u64,
) -> Vec<(u64, String, String, TransitionState, f64)> {
    let mut rows: Vec<_> = transitions
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
    rows.sort_by(|a, b| (a.0, &a.1, &a.2).cmp(&(b.0, &b.1, &b.2)));
    rows
}

#[test]
fn a_stalled_partition_raises_one_alert_instead_of_a_silence_per_sensor() {
    let topics = TOPICS.map(|(topic, n)| (topic, if topic == "mine.readings" { 3 } else { n }));
    let kafka = MockKafka::new(&topics);
    // An hour ago, to the second: recent enough for `max_future`, old enough to be replay.
    let t0 = (now_millis() - 3_600_000) / 1000 * 1000;
    for sensor in SENSORS.iter().flatten() {
        kafka.produce(
            "registry.sensors",
            Some(sensor),
            Some(br#"{"mine":"m1","face":"m1/f1","kind":"ch4","cadence_ms":1000}"#),
        );
    }
    let s = 1000;
    for second in 0..=30u64 {
        for (partition, sensors) in SENSORS.iter().enumerate() {
            // Partition 2 delivers nothing from 6 s to 19 s.
            if partition == 2 && (6..20).contains(&second) {
                continue;
            }
            for sensor in sensors {
                // a0, on the healthy partition 0, goes silent after 10 s.
                if *sensor == "a0" && second > 10 {
                    continue;
                }
                let payload = format!(
                    r#"{{"sensor":"{sensor}","ts":{},"metric":"ch4","value":0.3}}"#,
                    t0 + second * s
                );
                kafka.produce_to(
                    "mine.readings",
                    i32::try_from(partition).unwrap_or_default(),
                    sensor,
                    payload.as_bytes(),
                );
            }
        }
    }
    kafka.flush();

    let engine = TestEngine::start(&test_config(&kafka.brokers), RULES);
    // After the last readings (30 s) every partition goes idle and event time follows the
    // wall clock: wait until it is past 34 s, after every sensor's deadline (33 s).
    engine.wait_until(Duration::from_secs(60), |t, _| {
        t.len() >= 6 && engine.engine().status().sensor_watermark > t0 + 34 * s
    });
    std::thread::sleep(Duration::from_millis(300));
    let got = engine.transitions();
    let (file, dead_letters) = engine.stop();
    assert!(dead_letters.is_empty(), "{dead_letters:#?}");

    use TransitionState::{Firing, Resolved};
    let row = |dt: u64, entity: &str, state, value| {
        (
            dt,
            "ch4-silent".to_string(),
            entity.to_string(),
            state,
            value,
        )
    };
    assert_eq!(
        rows(&got, t0),
        vec![
            // Partition 2, last heard from at 5 s: one alert at 7 s; its sensors' deadlines
            // (8 s) raise nothing.
            row(7 * s, "mine.readings/2", Firing, 2.0),
            // a0 on the healthy partition 0: silent as before.
            row(13 * s, "a0", Firing, 3.0),
            row(20 * s, "mine.readings/2", Resolved, 15.0),
            // The end of the data: the whole topic stalls, one alert per partition.
            row(32 * s, "mine.readings/0", Firing, 2.0),
            row(32 * s, "mine.readings/1", Firing, 2.0),
            row(32 * s, "mine.readings/2", Firing, 2.0),
        ]
    );
    assert_eq!(
        rows(&file, t0),
        rows(&got, t0),
        "the alert log holds the same"
    );

    let Some(stall) = got.iter().find(|t| t.event_time == t0 + 7 * s) else {
        panic!("no stall alert in {got:#?}");
    };
    assert_eq!(
        stall.id,
        transition_id("ch4-silent", "mine.readings/2", Firing, t0 + 7 * s)
    );
    assert_eq!(
        stall.summary,
        "ingest stalled: mine.readings/2 delivered no readings for 2 s"
    );
    let label = |name: &str| stall.labels.get(name).map(String::as_str);
    assert_eq!(label("rule_kind"), Some("ingest_stall"));
    assert_eq!(label("topic"), Some("mine.readings"));
    assert_eq!(label("partition"), Some("2"));
    assert_eq!(label("domain"), Some("mine"));
}
