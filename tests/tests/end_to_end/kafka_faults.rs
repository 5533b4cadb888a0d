//! Kafka faults: the broker going away for seconds while readings flow (the mock cluster's
//! broker down and up; a tansu broker process stopped with SIGSTOP and continued), and
//! injected request errors on Fetch, Produce and OffsetCommit. The engine waits and retries,
//! says so while the broker is away (`/readyz`, `citybrain_kafka_brokers_up`, the wall's
//! status), and the alert log ends up exactly that of an undisturbed run over the real methane
//! data: nothing lost, nothing repeated.

#![allow(clippy::expect_used)] // test helpers: a broker that cannot answer fails the test

use std::collections::HashSet;
use std::time::{Duration, Instant};

use citybrain_model::AlertTransition;
use citybrain_tests::{MockKafka, TOPICS, TestEngine, http_get, read_jsonl, test_config};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::DefaultProducerContext;
use rdkafka::types::RDKafkaApiKey;
use rdkafka::types::RDKafkaRespErr;

use crate::real_data_methane::{
    RULES, expected_transitions, methane_columns, produce_methane, summary,
};

/// The test config with frequent commits. The idle timeout stays short (200 ms): a partition
/// stalled by fetch errors or an absent broker is not idle, because the source compares what it
/// read with the broker's end offset fetched in the last seconds, not at assignment.
fn config(brokers: &str) -> String {
    format!(
        "{}\n[recovery]\ncommit_interval = \"100ms\"\n",
        test_config(brokers)
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

/// The mock cluster the fault tests disturb.
type Cluster = MockCluster<'static, DefaultProducerContext>;

/// Produces the first `1 / parts` of the methane rows, runs `before_start` on the cluster,
/// starts the engine and waits for its first alert, runs `disturb`, produces the rest: the
/// alert log must be exactly that of an undisturbed run, with no dead letters.
fn loses_nothing_across(
    parts: usize,
    before_start: impl FnOnce(&Cluster),
    disturb: impl FnOnce(&Cluster),
) {
    let (mm116, mm31) = methane_columns();
    let expected = expected_transitions(&mm116, &mm31);
    let kafka = MockKafka::new(&TOPICS);
    let cluster = kafka.mock_cluster().expect("mock cluster");
    let first = mm116.len() / parts;
    produce_methane(&kafka, &mm116, &mm31, 0..first);
    before_start(cluster);
    let engine = TestEngine::start(&config(&kafka.brokers), RULES);
    engine.wait_until(Duration::from_secs(60), |t, _| !t.is_empty());

    disturb(cluster);
    produce_methane(&kafka, &mm116, &mm31, first..mm116.len());

    let log = log_of(&engine, expected.len());
    std::thread::sleep(Duration::from_millis(500));
    let (_, dead_letters) = engine.stop();
    assert!(dead_letters.is_empty(), "{dead_letters:?}");
    assert_exact(&log, &expected);
}

/// Takes the mock broker down for `away`, then up again.
fn broker_down_for(cluster: &Cluster, away: Duration) {
    cluster.broker_down(1).expect("broker down");
    std::thread::sleep(away);
    cluster.broker_up(1).expect("broker up");
}

#[test]
fn the_broker_going_away_for_three_seconds_loses_nothing() {
    // Before the fix the engine stopped: its producer flush timed out during the outage.
    loses_nothing_across(
        3,
        |_| {},
        |cluster| broker_down_for(cluster, Duration::from_secs(3)),
    );
}

#[test]
fn half_second_round_trips_and_a_thirty_second_outage_lose_nothing() {
    loses_nothing_across(
        2,
        |cluster| {
            cluster
                .broker_round_trip_time(1, Duration::from_millis(500))
                .expect("round trip time");
        },
        |cluster| broker_down_for(cluster, Duration::from_secs(30)),
    );
}

#[test]
fn injected_fetch_produce_and_commit_errors_lose_nothing() {
    // Before the test producer kept its partitions in order (enable.idempotence), an injected
    // Produce error reordered a batch of 10,000 readings behind newer ones: 10,000 late dead
    // letters and 435 of the 539 transitions.
    loses_nothing_across(
        2,
        |_| {},
        |cluster| {
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
        },
    );
}

/// Waits (at most 60 s) until `done` holds; fails the test with `what` otherwise.
fn eventually(what: &str, done: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !done() {
        assert!(Instant::now() < deadline, "not within 60 s: {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The broker goes away (`away`) for at least ten seconds while a third of the data has been
/// read, and comes back (`back`); the rest arrives after. The engine reports the outage while
/// it lasts, and ends with the log of an undisturbed run.
fn broker_away_for_ten_seconds(kafka: &MockKafka, away: impl Fn(), back: impl Fn()) {
    let (mm116, mm31) = methane_columns();
    let expected = expected_transitions(&mm116, &mm31);
    let third = mm116.len() / 3;
    produce_methane(kafka, &mm116, &mm31, 0..third);
    let engine = TestEngine::start(&config(&kafka.brokers), RULES);
    engine.wait_until(Duration::from_secs(60), |t, _| !t.is_empty());
    let addr = engine.http_addr();
    eventually("ready", || http_get(addr, "/readyz").0 == 200);
    let metric = |line: &str| http_get(addr, "/metrics").1.lines().any(|l| l == line);
    assert!(metric("citybrain_kafka_brokers_up 1"));

    away();
    let gone = Instant::now();
    eventually("/readyz reports the brokers away", || {
        let (status, body) = http_get(addr, "/readyz");
        status == 503 && body.contains("waiting for the Kafka brokers")
    });
    assert!(metric("citybrain_kafka_brokers_up 0"));
    // The wall's status (pushed every second) names the outage.
    eventually("the wall's status names the outage", || {
        engine
            .engine()
            .board()
            .status()
            .kafka_away
            .is_some_and(|p| p.reason.contains("Kafka brokers do not answer"))
    });
    std::thread::sleep(Duration::from_secs(10).saturating_sub(gone.elapsed()));
    back();
    produce_methane(kafka, &mm116, &mm31, third..mm116.len());

    let log = log_of(&engine, expected.len());
    eventually("ready again", || http_get(addr, "/readyz").0 == 200);
    assert!(metric("citybrain_kafka_brokers_up 1"));
    eventually("the wall's status clears", || {
        engine.engine().board().status().kafka_away.is_none()
    });
    std::thread::sleep(Duration::from_millis(500));
    let (_, dead_letters) = engine.stop();
    assert!(dead_letters.is_empty(), "{dead_letters:?}");
    assert_exact(&log, &expected);
}

#[test]
fn the_mock_broker_down_for_ten_seconds_is_reported_and_loses_nothing() {
    let kafka = MockKafka::new(&TOPICS);
    let cluster = kafka.mock_cluster().expect("mock cluster");
    broker_away_for_ten_seconds(
        &kafka,
        || cluster.broker_down(1).expect("broker down"),
        || cluster.broker_up(1).expect("broker up"),
    );
}

#[test]
fn a_stopped_tansu_broker_for_ten_seconds_is_reported_and_loses_nothing() {
    let kafka = MockKafka::tansu(&TOPICS);
    broker_away_for_ten_seconds(
        &kafka,
        || kafka.signal_broker("STOP"),
        || kafka.signal_broker("CONT"),
    );
}
