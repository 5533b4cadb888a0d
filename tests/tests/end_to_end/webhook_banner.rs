//! A receiver that answers 410 Gone is disabled loudly: the engine's status (what the wall
//! reads, on `/api/status` and in the stream) and `/api/dispatch` name it with the answer,
//! through a restart with the same config, and no longer once its config changed.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use citybrain_model::time::now_millis;
use citybrain_tests::{MockKafka, TOPICS, TestEngine, http_get, test_config};
use serde_json::{Value, json};

use crate::webhook_support::{Reply, SECRET, TestReceiver};

const RULES: &str = r#"
[[rule]]
id = "ch4-alarm"
domain = "mine"
metric = "ch4"
above = 1.0
clear = 0.9
severity = "critical"
summary = "Methane at alarm level on {face}"
"#;

/// 2026-11-01T00:00:00Z.
const T0: u64 = 1_793_491_200_000;

fn config(brokers: &str, url: &str) -> String {
    format!(
        r#"{}
[dispatch]
fsync = "always"

[dispatch.receivers.mine-rescue]
url = "{url}"
secret = "{SECRET}"
timeout = "5s"
retry_base = "10ms"
retry_max = "100ms"

[[dispatch.route]]
receivers = ["mine-rescue"]
"#,
        test_config(brokers)
    )
}

fn get_json(engine: &TestEngine, path: &str) -> Value {
    let (status, body) = http_get(engine.http_addr(), path);
    assert_eq!(status, 200, "{path}: {body}");
    serde_json::from_str(&body).expect("json")
}

/// Waits until the status names a disabled receiver (the dispatcher disables it when the
/// 410 answer comes back, after the transition was handed over) and the queue has let go of
/// the refused transition (the two are published one after the other: a status read between
/// them showed the receiver disabled with the transition still queued).
fn wait_disabled(engine: &TestEngine) -> Value {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let status = get_json(engine, "/api/status");
        let disabled = status["receivers_disabled"]
            .as_array()
            .is_some_and(|a| !a.is_empty());
        if (disabled && status["dispatch_queue"] == 0) || Instant::now() > deadline {
            return status;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_gone_receiver_is_named_on_the_wall_status_until_its_config_changes() {
    let kafka = MockKafka::new(&TOPICS);
    kafka.produce(
        "registry.sensors",
        Some("s1"),
        Some(br#"{"mine":"m1","face":"m1/f1","kind":"ch4","cadence_ms":1000}"#),
    );
    let reading = format!(r#"{{"sensor":"s1","ts":{T0},"metric":"ch4","value":1.2}}"#);
    kafka.produce("mine.readings", Some("s1"), Some(reading.as_bytes()));
    kafka.flush();
    let gone = TestReceiver::start(|_, _| {
        let mut reply = Reply::status(410);
        reply.body = "unit retired".into();
        reply
    });

    let before = now_millis();
    let engine = TestEngine::start(&config(&kafka.brokers, &gone.url), RULES);
    let got = engine.wait_until(Duration::from_secs(60), |t, _| !t.is_empty());
    assert_eq!(got.len(), 1);
    let status = wait_disabled(&engine);
    let disabled = status["receivers_disabled"].as_array().unwrap().clone();
    assert_eq!(disabled.len(), 1, "{status}");
    let since = disabled[0]["since"].as_u64().unwrap();
    assert!(since >= before && since <= now_millis(), "{since}");
    let expected = json!([{
        "name": "mine-rescue",
        "reason": "410 Gone: unit retired",
        "since": since,
    }]);
    assert_eq!(status["receivers_disabled"], expected);
    assert_eq!(status["dispatch_queue"], 0);
    assert_eq!(
        get_json(&engine, "/api/dispatch"),
        json!({ "disabled_receivers": expected, "queue_depth": 0 })
    );
    let (_, metrics) = http_get(engine.http_addr(), "/metrics");
    assert!(
        metrics.contains("citybrain_dispatch_receiver_disabled{receiver=\"mine-rescue\"} 1"),
        "{metrics}"
    );
    // The wall page has the banner and reads the field.
    let (_, page) = http_get(engine.http_addr(), "/");
    assert!(page.contains(r#"id="dispatch-banner""#));
    let (_, script) = http_get(engine.http_addr(), "/assets/wall.js");
    assert!(script.contains("receivers_disabled"));
    assert_eq!(gone.requests().len(), 1);

    // Restarted with the same config: still disabled, from the start, with the same answer.
    let engine = engine.restart(&config(&kafka.brokers, &gone.url), RULES);
    let status = get_json(&engine, "/api/status");
    assert_eq!(status["receivers_disabled"], expected);

    // Restarted with the receiver's URL changed: enabled, and the banner is gone.
    let fixed = TestReceiver::start(|_, _| Reply::ok());
    let engine = engine.restart(&config(&kafka.brokers, &fixed.url), RULES);
    let status = get_json(&engine, "/api/status");
    assert_eq!(status["receivers_disabled"], json!([]));
    assert_eq!(
        get_json(&engine, "/api/dispatch")["disabled_receivers"],
        json!([])
    );
    let (_, metrics) = http_get(engine.http_addr(), "/metrics");
    assert!(
        metrics.contains("citybrain_dispatch_receiver_disabled{receiver=\"mine-rescue\"} 0"),
        "{metrics}"
    );
    engine.stop();
    // The transition went to the dead letter when the receiver was disabled, not to the new URL.
    assert!(fixed.requests().is_empty());
}
