//! The dispatch unit of `citybrain demo` and `citybrain receiver`: it accepts what the
//! dispatcher sends (signature verified), marks a repeated id, and refuses a tampered body or a
//! stale timestamp with 401.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use citybrain_connectors::dispatch::signing::unix_now;
use citybrain_connectors::dispatch::{Dispatcher, Secret, sign};
use citybrain_engine::receiver::DemoReceiver;
use citybrain_model::TransitionState::{Firing, Resolved};
use citybrain_tests::{http_get, http_request};
use serde_json::Value;

use crate::webhook_support::{SECRET, settings, transition};

const T0: u64 = 1_795_910_400_000;

#[test]
fn the_demo_dispatch_unit_verifies_what_the_dispatcher_sends_and_refuses_forgeries() {
    let lines = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&lines);
    let unit = DemoReceiver::start(
        "127.0.0.1:0".parse().unwrap(),
        Secret::parse(SECRET).unwrap(),
        10,
        Box::new(move |r| sink.lock().unwrap().push(r.line())),
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let dispatcher = Dispatcher::start(
        settings(dir.path(), &unit.url()),
        &prometheus::Registry::new(),
    )
    .unwrap();
    let firing = transition("ch4-alarm", "jungar-1/face-2/ch4", Firing, T0);
    let resolved = transition("ch4-alarm", "jungar-1/face-2/ch4", Resolved, T0 + 60_000);
    dispatcher.submit(&firing).unwrap();
    dispatcher.submit(&resolved).unwrap();
    assert!(dispatcher.wait_idle(Duration::from_secs(10)));
    dispatcher.shutdown(Duration::from_secs(1)).unwrap();
    assert_eq!(
        *lines.lock().unwrap(),
        vec![
            format!(
                "firing ch4-alarm jungar-1/face-2/ch4 (critical) [webhook-id {}; signature ok]",
                firing.id
            ),
            format!(
                "resolved ch4-alarm jungar-1/face-2/ch4 (critical) [webhook-id {}; signature ok]",
                resolved.id
            ),
        ]
    );

    // A correctly signed repeat of an id: accepted, marked as a repeat.
    let secret = Secret::parse(SECRET).unwrap();
    let body = br#"{"version":1,"transitions":[]}"#;
    let post = |id: &str, timestamp: i64, signed: &[u8], sent: &[u8]| {
        let signature = sign(&secret, id, timestamp, signed);
        let timestamp = timestamp.to_string();
        http_request(
            unit.addr,
            "POST",
            "/hook",
            &[
                ("webhook-id", id),
                ("webhook-timestamp", &timestamp),
                ("webhook-signature", &signature),
                ("content-type", "application/json"),
            ],
            std::str::from_utf8(sent).unwrap(),
        )
        .0
    };
    assert_eq!(post(&firing.id, unix_now(), body, body), 200);
    // One byte changed, and a timestamp 301 s old: refused.
    let tampered = br#"{"version":2,"transitions":[]}"#;
    assert_eq!(post("forged", unix_now(), body, tampered), 401);
    assert_eq!(post("stale", unix_now() - 301, body, body), 401);

    let (status, list) = http_get(unit.addr, "/");
    assert_eq!(status, 200);
    let list: Value = serde_json::from_str(&list).unwrap();
    let summary: Vec<(String, bool, bool)> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["webhook_id"].as_str().unwrap().to_string(),
                r["verified"].as_bool().unwrap(),
                r["duplicate"].as_bool().unwrap(),
            )
        })
        .collect();
    // Newest first.
    assert_eq!(
        summary,
        vec![
            ("stale".to_string(), false, false),
            ("forged".to_string(), false, false),
            (firing.id.clone(), true, true),
            (resolved.id.clone(), true, false),
            (firing.id.clone(), true, false),
        ]
    );
    assert_eq!(list[1]["error"], "no matching v1 signature");
    assert!(
        list[0]["error"]
            .as_str()
            .unwrap()
            .ends_with("s away from now (tolerance 300 s)"),
        "{}",
        list[0]["error"]
    );
    unit.shutdown();
}
