//! Kafka faults on the mock cluster: the broker going away for seconds while readings flow,
//! and injected request errors on Fetch, Produce and OffsetCommit. The engine waits and
//! retries, and the alert log ends up exactly that of an undisturbed run over the real methane
//! data: nothing lost, nothing repeated.

#![allow(clippy::expect_used)] // test helpers: a broker that cannot answer fails the test

use std::collections::HashSet;
use std::time::{Duration, Instant};

use citybrain_model::AlertTransition;
use citybrain_tests::{MockKafka, TOPICS, TestEngine, read_jsonl, test_config};
use rdkafka::types::RDKafkaApiKey;
use rdkafka::types::RDKafkaRespErr;

use crate::real_data_methane::{
    RULES, expected_transitions, methane_columns, produce_methane, summary,
};

/// Partitions whose fetches fail or whose broker is away are silent without being caught up;
/// the source cannot tell that from a quiet partition (it compares with the high watermark at
/// assignment), so a short idle timeout would let the other partition's watermark run ahead
/// and turn the stalled readings late. 10 s outlasts the faults injected here.
fn config(brokers: &str) -> String {
    format!(
        "{}\n[recovery]\ncommit_interval = \"100ms\"\n",
        test_config(brokers).replace("idle_timeout = \"200ms\"", "idle_timeout = \"10s\"")
    )
}

/// Waits until the engine's alert log holds `count` transitions (at most 120 s); returns it.
fn log_of(engine: &TestEngine, count: usize) -> Vec<AlertTransition> {
    let path = engine.dir.path().join("alerts.jsonl");
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let log: Vec<AlertTransition> = read_jsonl(&path);
        if log.len() >= count || Instant::now() >= deadline {
            return log;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn assert_exact(log: &[AlertTransition], expected: &[crate::real_data_methane::Expected]) {
    let ids: HashSet<&str> = log.iter().map(|t| t.id.as_str()).collect();
    assert_eq!(ids.len(), log.len(), "no transition logged twice");
    assert_eq!(summary(log), expected, "the log of an undisturbed run");
}

#[test]
fn the_broker_going_away_for_three_seconds_loses_nothing() {
    let (mm116, mm31) = methane_columns();
    let expected = expected_transitions(&mm116, &mm31);
    let kafka = MockKafka::new(&TOPICS);
    let cluster = kafka.mock_cluster().expect("mock cluster");
    let third = mm116.len() / 3;
    produce_methane(&kafka, &mm116, &mm31, 0..third);
    let engine = TestEngine::start(&config(&kafka.brokers), RULES);
    engine.wait_until(Duration::from_secs(60), |t, _| !t.is_empty());

    cluster.broker_down(1).expect("broker down");
    std::thread::sleep(Duration::from_secs(3));
    cluster.broker_up(1).expect("broker up");
    produce_methane(&kafka, &mm116, &mm31, third..mm116.len());

    let log = log_of(&engine, expected.len());
    std::thread::sleep(Duration::from_millis(500));
    // Before the fix the engine stopped here: its producer flush timed out during the outage.
    let (_, dead_letters) = engine.stop();
    assert!(dead_letters.is_empty(), "{dead_letters:?}");
    assert_exact(&log, &expected);
}

#[test]
fn injected_fetch_produce_and_commit_errors_lose_nothing() {
    let (mm116, mm31) = methane_columns();
    let expected = expected_transitions(&mm116, &mm31);
    let kafka = MockKafka::new(&TOPICS);
    let cluster = kafka.mock_cluster().expect("mock cluster");
    let half = mm116.len() / 2;
    produce_methane(&kafka, &mm116, &mm31, 0..half);
    let engine = TestEngine::start(&config(&kafka.brokers), RULES);
    engine.wait_until(Duration::from_secs(60), |t, _| !t.is_empty());

    // Retriable errors, several in a row, on what the engine does all the time.
    let errors = [
        RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION,
        RDKafkaRespErr::RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT,
        RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS,
    ];
    for key in [
        RDKafkaApiKey::Fetch,
        RDKafkaApiKey::Produce,
        RDKafkaApiKey::OffsetCommit,
    ] {
        cluster.request_errors(key, &errors);
    }
    produce_methane(&kafka, &mm116, &mm31, half..mm116.len());

    let log = log_of(&engine, expected.len());
    std::thread::sleep(Duration::from_millis(500));
    let (_, dead_letters) = engine.stop();
    // Before the test producer kept its partitions in order (enable.idempotence), an injected
    // Produce error reordered a batch of 10,000 readings behind newer ones: 10,000 late dead
    // letters and 435 of the 539 transitions.
    assert!(dead_letters.is_empty(), "{dead_letters:?}");
    assert_exact(&log, &expected);
}
