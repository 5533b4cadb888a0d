//! A second engine joining the consumer group neither double-processes nor loses anything:
//! with `[kafka] lease_topic` the engines of one group take turns. The one holding the lease
//! consumes; the other waits as a standby (`/readyz` 503 "standby", reading nothing) and, when
//! the active one leaves, takes over from the committed offsets, after reading the shared
//! alerts topic for what the active one published. Together their alert logs hold exactly the
//! transitions of one uninterrupted run over the real methane data, none of them twice.

#![allow(clippy::expect_used)] // test helpers: a broker that cannot answer fails the test

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use citybrain_model::AlertTransition;
use citybrain_tests::{MockKafka, TOPICS, TestEngine, http_get, read_jsonl, test_config};

use crate::real_data_methane::{
    ROW_MS, RULES, T0, expected_transitions, methane_columns, produce_methane, summary,
};

fn config(brokers: &str) -> String {
    let config = test_config(brokers).replace(
        "group_id = \"citybrain-test\"\n",
        "group_id = \"citybrain-test\"\nlease_topic = \"citybrain.lease\"\n\
         properties = { \"session.timeout.ms\" = \"6000\" }\n",
    );
    assert!(
        config.contains("lease_topic"),
        "the test config names its group"
    );
    format!("{config}\n[recovery]\ncommit_interval = \"100ms\"\n")
}

/// Polls `done` every 100 ms for up to `limit`; panics naming `what` when it never holds.
fn eventually(what: &str, limit: Duration, done: impl Fn() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(Instant::now() < deadline, "timed out: {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_standby_engine_reads_nothing_and_takes_over_when_the_active_one_leaves() {
    // The mock cluster does not answer CreateTopics: the lease topic is made here.
    let mut topics = TOPICS.to_vec();
    topics.push(("citybrain.lease", 1));
    take_turns(MockKafka::new(&topics));
}

#[test]
fn engines_take_turns_on_a_real_broker_process() {
    // tansu does not create topics on use: the first engine creates the lease topic.
    take_turns(MockKafka::tansu(&TOPICS));
}

fn take_turns(kafka: MockKafka) {
    let (mm116, mm31) = methane_columns();
    let expected = expected_transitions(&mm116, &mm31);
    let half = mm116.len() / 2;
    let half_time = T0 + ROW_MS * half as u64;
    let first_part = expected
        .iter()
        .filter(|e| e.3 + 10 * 60_000 < half_time)
        .count();
    assert!(first_part > 50, "the first half exercises the rules");

    produce_methane(&kafka, &mm116, &mm31, 0..half);
    let active = TestEngine::start(&config(&kafka.brokers), RULES);
    active.wait_until(Duration::from_secs(120), |t, _| t.len() >= first_part);
    assert!(
        active.transitions().len() >= first_part,
        "the first engine is the active one"
    );

    let standby = TestEngine::start(&config(&kafka.brokers), RULES);
    let standby_addr = standby.http_addr();
    let (status, body) = http_get(standby_addr, "/readyz");
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("standby"), "{body}");
    // Long enough for it to join the group and, were it consuming, read the first half.
    std::thread::sleep(Duration::from_secs(8));
    assert_eq!(
        standby.engine().status().events,
        0,
        "the standby reads nothing"
    );
    assert!(standby.transitions().is_empty());
    assert_eq!(http_get(standby_addr, "/readyz").0, 503);

    produce_methane(&kafka, &mm116, &mm31, half..mm116.len());
    // Let the active engine take in some of the second half, then leave.
    std::thread::sleep(Duration::from_secs(2));
    let (first_log, _) = active.stop();
    eventually("the standby takes over", Duration::from_secs(60), || {
        http_get(standby_addr, "/readyz").0 == 200
    });
    let dir = standby.dir.path().to_path_buf();
    let merged = || {
        let mut by_id: BTreeMap<String, AlertTransition> = BTreeMap::new();
        for t in first_log
            .iter()
            .cloned()
            .chain(read_jsonl::<AlertTransition>(&dir.join("alerts.jsonl")))
        {
            by_id.insert(t.id.clone(), t);
        }
        by_id
    };
    eventually("every transition logged", Duration::from_secs(180), || {
        merged().len() >= expected.len()
    });
    std::thread::sleep(Duration::from_millis(500));
    let (second_log, dead_letters) = standby.stop();
    assert!(dead_letters.is_empty(), "{dead_letters:?}");

    // What the active engine published to the alerts topic, the one taking over read before
    // it started: it derives those transitions again from the re-read history but logs none.
    let first: BTreeMap<&str, &AlertTransition> =
        first_log.iter().map(|t| (t.id.as_str(), t)).collect();
    let repeated: Vec<&AlertTransition> = second_log
        .iter()
        .filter(|t| first.contains_key(t.id.as_str()))
        .collect();
    assert!(repeated.is_empty(), "logged by both: {repeated:?}");
    // (The standby's directory went with it: its log is `second_log` now.)
    let all: Vec<AlertTransition> = first_log
        .iter()
        .chain(&second_log)
        .map(|t| (t.id.clone(), t.clone()))
        .collect::<BTreeMap<_, _>>()
        .into_values()
        .collect();
    let got = summary(&all);
    let missing: Vec<_> = expected.iter().filter(|e| !got.contains(e)).collect();
    let extra: Vec<_> = got.iter().filter(|g| !expected.contains(g)).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "the log of one uninterrupted run: {} extra {extra:?}, {} missing {missing:?} (half at {half_time}; first engine {}, second {})",
        extra.len(),
        missing.len(),
        first_log.len(),
        second_log.len()
    );
    assert!(
        second_log
            .iter()
            .all(|t| t.event_time + 20 * 60_000 >= T0 + ROW_MS * (half as u64 / 2)),
        "the second engine starts from the first one's committed offsets, not the beginning"
    );
}
