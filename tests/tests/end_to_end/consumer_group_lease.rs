//! A second engine joining the consumer group neither double-processes nor loses anything:
//! with `[kafka] lease_topic` the engines of one group take turns. The one holding the lease
//! consumes; the other waits as a standby (`/readyz` 503 "standby", reading nothing) and, when
//! the active one leaves, takes over from the committed offsets, after reading the shared
//! alerts topic for what the active one published. Together their alert logs hold exactly the
//! transitions of one uninterrupted run over the real methane data, none of them twice (on the
//! mock cluster also with the group coordinator refusing the first joins). When
//! the active engine is killed (`SIGKILL`) instead, the standby takes over once the group
//! notices (`session.timeout.ms`, 6 s here), and the logs together are again that run; a
//! transition both logged (written by the killed engine but not yet published) repeats its
//! id with the same body.

#![allow(clippy::expect_used)] // test helpers: a broker that cannot answer fails the test

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use citybrain_model::AlertTransition;
use citybrain_tests::{
    MockKafka, TOPICS, TestEngine, engine_child, http_get, read_jsonl, spawn_engine_child,
    test_config,
};
use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};

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

/// The transitions of two logs, one per id.
fn union_by_id(a: &[AlertTransition], b: &[AlertTransition]) -> Vec<AlertTransition> {
    a.iter()
        .chain(b)
        .map(|t| (t.id.clone(), t.clone()))
        .collect::<BTreeMap<_, _>>()
        .into_values()
        .collect()
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
    let kafka = MockKafka::new(&topics);
    // The group coordinator refuses the first joins: the engines join all the same.
    if let Some(cluster) = kafka.mock_cluster() {
        cluster.request_errors(
            RDKafkaApiKey::JoinGroup,
            &[
                RDKafkaRespErr::RD_KAFKA_RESP_ERR_COORDINATOR_LOAD_IN_PROGRESS,
                RDKafkaRespErr::RD_KAFKA_RESP_ERR_COORDINATOR_NOT_AVAILABLE,
                RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_COORDINATOR,
            ],
        );
    }
    take_turns(kafka);
}

#[test]
#[ignore = "passed 5 of 5 runs alone, but timed out waiting for the takeover once in a full CI run on tansu 0.6.0; run with --ignored while investigating"]
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
    let all = union_by_id(&first_log, &second_log);
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

const CHILD_ENV: &str = "CITYBRAIN_LEASE_CHILD";

/// Not a test on its own: the active engine the kill test starts and kills. Runs an engine
/// with the lease config on the brokers and directory named in `CITYBRAIN_LEASE_CHILD`.
#[test]
fn lease_engine_child_process() {
    engine_child(CHILD_ENV, config, RULES);
}

#[test]
fn a_standby_takes_over_from_an_engine_killed_with_sigkill() {
    let (mm116, mm31) = methane_columns();
    let expected = expected_transitions(&mm116, &mm31);
    let mut topics = TOPICS.to_vec();
    topics.push(("citybrain.lease", 1));
    let kafka = MockKafka::new(&topics);
    let half = mm116.len() / 2;
    produce_methane(&kafka, &mm116, &mm31, 0..half);

    let child_dir = tempfile::tempdir().expect("tempdir");
    let child_log = child_dir.path().join("alerts.jsonl");
    let logged = |path: &Path| -> Vec<AlertTransition> {
        // A kill can cut the last line short: it is not a transition.
        std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    };
    let mut child = spawn_engine_child(
        "consumer_group_lease::lease_engine_child_process",
        CHILD_ENV,
        &kafka.brokers,
        child_dir.path(),
    );
    eventually(
        "the child engine logs alerts",
        Duration::from_secs(120),
        || logged(&child_log).len() > 50,
    );
    let standby = TestEngine::start(&config(&kafka.brokers), RULES);
    let standby_addr = standby.http_addr();
    produce_methane(&kafka, &mm116, &mm31, half..mm116.len());
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        standby.engine().status().events,
        0,
        "the standby reads nothing"
    );
    child.kill().expect("SIGKILL");
    let killed = Instant::now();
    child.wait().expect("reaped");
    eventually(
        "the standby takes over within the session timeout + 10 s",
        Duration::from_secs(6 + 10),
        || http_get(standby_addr, "/readyz").0 == 200,
    );
    let took_over = killed.elapsed();
    let dir = standby.dir.path().to_path_buf();
    let first_log = logged(&child_log);
    let merged = || {
        let mut ids: Vec<String> = first_log.iter().map(|t| t.id.clone()).collect();
        ids.extend(logged(&dir.join("alerts.jsonl")).into_iter().map(|t| t.id));
        ids.sort();
        ids.dedup();
        ids.len()
    };
    let deadline = Instant::now() + Duration::from_secs(180);
    while merged() < expected.len() {
        // Say where it stuck: how far the standby got, and whether it dropped anything.
        assert!(
            Instant::now() < deadline,
            "timed out: every transition logged: {} of {} ({} by the killed engine); the standby: {:?}, readyz {:?}",
            merged(),
            expected.len(),
            first_log.len(),
            standby.engine().status(),
            http_get(standby_addr, "/readyz"),
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(500));
    let (second_log, dead_letters) = standby.stop();
    assert!(dead_letters.is_empty(), "{dead_letters:?}");
    let first: BTreeMap<&str, &AlertTransition> =
        first_log.iter().map(|t| (t.id.as_str(), t)).collect();
    for t in &second_log {
        if let Some(before) = first.get(t.id.as_str()) {
            assert_eq!(
                summary(std::slice::from_ref(*before)),
                summary(std::slice::from_ref(t)),
                "a repeated id repeats its body"
            );
        }
    }
    let all = union_by_id(&first_log, &second_log);
    assert_eq!(
        summary(&all),
        expected,
        "the log of one uninterrupted run (took over {took_over:?} after the kill)"
    );
}
