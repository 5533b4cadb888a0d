//! Restarts lose nothing and repeat nothing: the engine commits offsets only up to what its
//! alert log holds (minus the rules' history), a restarted engine resumes from the committed
//! offsets, and the alert log of a run cut in two equals that of one uninterrupted run over
//! the real methane data, also when the engine is killed with SIGKILL twenty times.

#![allow(clippy::expect_used)] // test helpers: a broker that cannot answer fails the test

use std::collections::HashSet;
use std::time::{Duration, Instant};

use citybrain_model::AlertTransition;
use citybrain_tests::{
    MockKafka, SeededRandom, TOPICS, TestEngine, engine_child, read_jsonl, spawn_engine_child,
    test_config,
};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};

use crate::real_data_methane::{
    ROW_MS, RULES, T0, expected_transitions, methane_columns, produce_methane, summary,
};

fn config(brokers: &str) -> String {
    format!(
        "{}\n[recovery]\ncommit_interval = \"100ms\"\n",
        test_config(brokers)
    )
}

/// The offsets the engine's group committed on `mine.readings` (partitions 0 and 1).
fn committed(brokers: &str) -> Vec<Option<i64>> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "citybrain-test")
        .create()
        .expect("consumer");
    let mut list = TopicPartitionList::new();
    list.add_partition("mine.readings", 0);
    list.add_partition("mine.readings", 1);
    let committed = consumer
        .committed_offsets(list, Duration::from_secs(10))
        .expect("committed offsets");
    (0..2)
        .map(|p| {
            match committed
                .find_partition("mine.readings", p)
                .map(|e| e.offset())
            {
                Some(Offset::Offset(o)) => Some(o),
                _ => None,
            }
        })
        .collect()
}

#[test]
fn a_restart_resumes_from_committed_offsets_and_repeats_no_transition() {
    restart_on(MockKafka::new(&TOPICS));
}

#[test]
fn a_restart_on_a_real_broker_process_resumes_from_its_committed_offsets() {
    restart_on(MockKafka::tansu(&TOPICS));
}

#[allow(clippy::expect_used)] // the body of two tests
fn restart_on(kafka: MockKafka) {
    let (mm116, mm31) = methane_columns();
    let expected = expected_transitions(&mm116, &mm31);
    // Cut a few rows after a transition near the middle, so the history the second run
    // re-reads holds logged transitions it must not repeat.
    let middle = T0 + ROW_MS * (mm116.len() / 2) as u64;
    let cut_after = expected
        .iter()
        .find(|e| e.3 >= middle)
        .map(|e| e.3)
        .expect("a transition after the middle");
    let half = usize::try_from((cut_after - T0) / ROW_MS).expect("row index") + 5;
    let half_time = T0 + ROW_MS * half as u64;
    // Transitions the first run must have emitted: well before its last reading.
    let first_part = expected
        .iter()
        .filter(|e| e.3 + 10 * 60_000 < half_time)
        .count();
    assert!(first_part > 50, "the first half exercises the rules");
    let replayed = expected
        .iter()
        .filter(|e| e.3 + 15 * 60_000 >= half_time && e.3 < half_time)
        .count();
    assert!(
        replayed > 0,
        "the history the second run re-reads holds logged transitions it must not repeat"
    );

    produce_methane(&kafka, &mm116, &mm31, 0..half);
    let engine = TestEngine::start(&config(&kafka.brokers), RULES);
    engine.wait_until(Duration::from_secs(120), |t, _| t.len() >= first_part);
    // Let the output thread make the tail durable and the workers commit it.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let mut offsets = committed(&kafka.brokers);
    while offsets.iter().map(|o| o.unwrap_or(0)).sum::<i64>() < half as i64
        && std::time::Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(100));
        offsets = committed(&kafka.brokers);
    }
    // Commits trail the durable frontier by the rules' history (15 min = 30 rows per sensor),
    // so they are past most of the first half and short of its end.
    let total: i64 = offsets.iter().map(|o| o.unwrap_or(0)).sum();
    assert!(
        total >= half as i64 && total < 2 * half as i64,
        "committed offsets {offsets:?} for {} messages",
        2 * half
    );

    produce_methane(&kafka, &mm116, &mm31, half..mm116.len());
    let engine = engine.restart(&config(&kafka.brokers), RULES);
    let dir = engine.dir.path().to_path_buf();
    let log = || read_jsonl::<AlertTransition>(&dir.join("alerts.jsonl"));
    let deadline = std::time::Instant::now() + Duration::from_secs(180);
    while log().len() < expected.len() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(500));
    let second_run = engine.transitions();
    let (alerts, dead_letters) = engine.stop();
    assert!(dead_letters.is_empty(), "{dead_letters:?}");

    let ids: HashSet<&str> = alerts.iter().map(|t| t.id.as_str()).collect();
    assert_eq!(ids.len(), alerts.len(), "no transition logged twice");
    assert_eq!(
        summary(&alerts),
        expected,
        "the log of one uninterrupted run"
    );
    assert!(
        second_run
            .iter()
            .all(|t| t.event_time + 20 * 60_000 >= half_time),
        "the second run only adds what the first had not logged"
    );
}

const CHILD_ENV: &str = "CITYBRAIN_RECOVERY_CHILD";

/// Not a test on its own: the engine process the kill test starts and kills. Runs an engine on
/// the brokers and directory named in `CITYBRAIN_RECOVERY_CHILD` until killed.
#[test]
fn engine_child_process() {
    engine_child(CHILD_ENV, config, RULES);
}

#[test]
fn twenty_kill_9s_at_random_points_log_what_one_uninterrupted_run_logs() {
    let (mm116, mm31) = methane_columns();
    let expected = expected_transitions(&mm116, &mm31);
    let kafka = MockKafka::new(&TOPICS);
    let dir = tempfile::tempdir().expect("tempdir");
    let log_path = dir.path().join("alerts.jsonl");
    let logged = || -> Vec<AlertTransition> {
        // A kill can cut the last line short: it is not a transition (and is re-derived).
        std::fs::read_to_string(&log_path)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    };
    let spawn = || {
        spawn_engine_child(
            "recovery::engine_child_process",
            CHILD_ENV,
            &kafka.brokers,
            dir.path(),
        )
    };
    // Twenty rounds: a twentieth of the file arrives, an engine starts, and is killed at a
    // random point once it has logged something new (or after 8 s).
    let kills = 20;
    let rows = mm116.len();
    let mut delays = SeededRandom(20_261_129);
    let mut progress = Vec::new();
    for round in 0..kills {
        produce_methane(
            &kafka,
            &mm116,
            &mm31,
            rows * round / kills..rows * (round + 1) / kills,
        );
        let before = logged().len();
        let mut child = spawn();
        let started = Instant::now();
        while logged().len() == before && started.elapsed() < Duration::from_secs(8) {
            std::thread::sleep(Duration::from_millis(20));
        }
        std::thread::sleep(Duration::from_millis(delays.between(0, 400)));
        child.kill().expect("SIGKILL");
        child.wait().expect("reaped");
        progress.push(logged().len());
    }
    // The last run goes on until the log is complete (back in service well within 60 s).
    let mut child = spawn();
    let started = Instant::now();
    while logged().len() < expected.len() && started.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(500));
    child.kill().expect("SIGKILL");
    child.wait().expect("reaped");

    let alerts = logged();
    let ids: HashSet<&str> = alerts.iter().map(|t| t.id.as_str()).collect();
    assert_eq!(
        ids.len(),
        alerts.len(),
        "no transition logged twice ({progress:?})"
    );
    assert_eq!(
        summary(&alerts),
        expected,
        "after {kills} kills ({progress:?})"
    );
}
