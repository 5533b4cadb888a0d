//! Real data through Kafka and the engine: the Polish coal mine's methane sensors MM116 and
//! MM31 (`../shared/data/coalmine/methane.arff`, one row every 30 s), each replayed as one
//! sensor. The alert transitions must equal, one for one, a plain loop over the file.

use std::time::Duration;

use citybrain_model::{AlertTransition, TransitionState};
use citybrain_tests::{MockKafka, TOPICS, TestEngine, arff_column, shared_data, test_config};

/// 2026-11-01T00:00:00Z: row i of the file is at T0 + 30 s * i.
pub(crate) const T0: u64 = 1_793_491_200_000;
pub(crate) const ROW_MS: u64 = 30_000;

/// One expected transition: (rule, sensor, state, event time, value).
pub(crate) type Expected = (String, String, TransitionState, u64, f64);

/// The plain loop: alarm when value >= above for at least `hold_ms` (consecutive rows),
/// clear when value < clear.
fn reference(
    rule: &str,
    sensor: &str,
    values: &[f64],
    above: f64,
    clear: f64,
    hold_ms: u64,
) -> Vec<Expected> {
    let mut out = Vec::new();
    let mut firing = false;
    let mut since: Option<u64> = None;
    for (i, &v) in values.iter().enumerate() {
        let t = T0 + ROW_MS * i as u64;
        if firing {
            if v < clear {
                firing = false;
                out.push((
                    rule.to_string(),
                    sensor.to_string(),
                    TransitionState::Resolved,
                    t,
                    v,
                ));
            }
        } else if v >= above {
            let start = *since.get_or_insert(t);
            if t - start >= hold_ms {
                firing = true;
                since = None;
                out.push((
                    rule.to_string(),
                    sensor.to_string(),
                    TransitionState::Firing,
                    t,
                    v,
                ));
            }
        } else {
            since = None;
        }
    }
    out
}

pub(crate) const RULES: &str = r#"
[[rule]]
id = "mm116-alarm"
domain = "mine"
metric = "ch4"
scope = { face = "polish-mine/face-116" }
above = 1.0
clear = 1.0
for = "0s"
severity = "critical"

[[rule]]
id = "mm116-power-cut"
domain = "mine"
metric = "ch4"
scope = { face = "polish-mine/face-116" }
above = 1.5
clear = 1.2
for = "60s"
severity = "critical"

[[rule]]
id = "mm31-warning"
domain = "mine"
metric = "ch4"
scope = { face = "polish-mine/face-31" }
above = 0.7
clear = 0.6
for = "120s"
severity = "warning"
"#;

/// The file's MM116 and MM31 columns.
pub(crate) fn methane_columns() -> (Vec<f64>, Vec<f64>) {
    let file = shared_data().join("coalmine/methane.arff");
    let mm116 = arff_column(&file, "MM116");
    let mm31 = arff_column(&file, "MM31");
    assert_eq!(mm116.len(), 19_096, "rows in {}", file.display());
    assert_eq!(
        mm116.iter().filter(|v| **v >= 1.0).count(),
        6_776,
        "the data README's count"
    );
    (mm116, mm31)
}

/// What [`RULES`] must raise over the columns, in (time, rule) order.
pub(crate) fn expected_transitions(mm116: &[f64], mm31: &[f64]) -> Vec<Expected> {
    let mut expected = reference("mm116-alarm", "MM116", mm116, 1.0, 1.0, 0);
    expected.extend(reference(
        "mm116-power-cut",
        "MM116",
        mm116,
        1.5,
        1.2,
        60_000,
    ));
    expected.extend(reference("mm31-warning", "MM31", mm31, 0.7, 0.6, 120_000));
    expected.sort_by(|a, b| (a.3, &a.0).cmp(&(b.3, &b.0)));
    expected
}

/// Transitions as [`Expected`] rows, in (time, rule) order.
pub(crate) fn summary(transitions: &[AlertTransition]) -> Vec<Expected> {
    let mut out: Vec<Expected> = transitions
        .iter()
        .map(|t| {
            (
                t.rule.clone(),
                t.entity.clone(),
                t.state,
                t.event_time,
                t.value,
            )
        })
        .collect();
    out.sort_by(|a, b| (a.3, &a.0).cmp(&(b.3, &b.0)));
    out
}

/// Registry records of the two sensors, then one reading per sensor and row of `rows`.
pub(crate) fn produce_methane(
    kafka: &MockKafka,
    mm116: &[f64],
    mm31: &[f64],
    rows: std::ops::Range<usize>,
) {
    if rows.start == 0 {
        for (sensor, face) in [
            ("MM116", "polish-mine/face-116"),
            ("MM31", "polish-mine/face-31"),
        ] {
            let record = format!(
                r#"{{"mine":"polish-mine","face":"{face}","kind":"ch4","cadence_ms":30000}}"#
            );
            kafka.produce("registry.sensors", Some(sensor), Some(record.as_bytes()));
        }
    }
    for i in rows {
        let t = T0 + ROW_MS * i as u64;
        for (sensor, value) in [("MM116", mm116[i]), ("MM31", mm31[i])] {
            let message =
                format!(r#"{{"sensor":"{sensor}","ts":{t},"metric":"ch4","value":{value}}}"#);
            kafka.produce("mine.readings", Some(sensor), Some(message.as_bytes()));
        }
    }
    kafka.flush();
}

#[test]
fn methane_mm116_and_mm31_transitions_equal_a_plain_loop_over_the_file() {
    let (mm116, mm31) = methane_columns();
    let expected = expected_transitions(&mm116, &mm31);
    assert!(
        expected.len() > 100,
        "the file should exercise the rules: {}",
        expected.len()
    );

    let kafka = MockKafka::new(&TOPICS);
    produce_methane(&kafka, &mm116, &mm31, 0..mm116.len());

    let engine = TestEngine::start(&test_config(&kafka.brokers), RULES);
    let got = engine.wait_until(Duration::from_secs(240), |t, _| t.len() >= expected.len());
    // A little longer: nothing beyond the expected may arrive.
    std::thread::sleep(Duration::from_millis(500));
    let (file_transitions, dead_letters) = engine.stop();
    assert!(
        dead_letters.is_empty(),
        "no dead letters expected: {dead_letters:?}"
    );

    let got = summary(&got);
    assert_eq!(got.len(), expected.len());
    assert_eq!(got, expected);
    assert_eq!(
        file_transitions.len(),
        expected.len(),
        "the alerts JSONL file holds every transition"
    );

    let on_topic = kafka.read_all("alerts");
    assert_eq!(
        on_topic.len(),
        expected.len(),
        "the alerts topic holds every transition"
    );
}
