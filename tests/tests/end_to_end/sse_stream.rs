//! The live stream (`/api/stream`): every pushed KPI snapshot is complete at its one logical
//! time — it reflects exactly the readings before that time, none after — and it arrives
//! after the events that caused it.

#![allow(clippy::expect_used)] // test helpers: a broken stream must fail the test loudly

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use citybrain_tests::{MockKafka, TOPICS, TestEngine, test_config};
use serde_json::Value;

/// 2026-11-01T00:00:00Z.
const T0: u64 = 1_793_491_200_000;
const READINGS: u64 = 40;

/// Reading i of sensor s1 is at T0 + i s with value (i + 1) / 100.
fn value_of(i: u64) -> f64 {
    (i + 1) as f64 / 100.0
}

/// Reads server-sent events until `until` or the deadline: (event name, JSON data).
fn read_events(
    addr: SocketAddr,
    deadline: Instant,
    mut until: impl FnMut(&str, &Value) -> bool,
) -> Vec<(String, Value)> {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_millis(500)))
        .expect("timeout");
    write!(
        stream,
        "GET /api/stream HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\n\r\n"
    )
    .expect("send");
    let mut reader = BufReader::new(stream);
    let mut events = Vec::new();
    let mut name = String::new();
    let mut line = String::new();
    while Instant::now() < deadline {
        line.clear();
        match reader.read_line(&mut line) {
            Ok(0) => break,
            Ok(_) => {}
            Err(_) => continue,
        }
        let text = line.trim_end();
        if let Some(event) = text.strip_prefix("event: ") {
            name = event.to_string();
        } else if let Some(data) = text.strip_prefix("data: ") {
            let value: Value = serde_json::from_str(data).expect("event data is JSON");
            let done = until(&name, &value);
            events.push((name.clone(), value));
            if done {
                break;
            }
        }
    }
    events
}

#[test]
fn every_kpi_snapshot_is_complete_at_its_logical_time() {
    let kafka = MockKafka::new(&TOPICS);
    kafka.produce(
        "registry.sensors",
        Some("s1"),
        Some(br#"{"mine":"m1","face":"m1/f1","kind":"ch4","cadence_ms":1000}"#),
    );
    kafka.flush();
    let engine = TestEngine::start(&test_config(&kafka.brokers), "");
    let addr = engine.http_addr();
    let producer = std::thread::spawn({
        let brokers = kafka.brokers.clone();
        move || {
            // A second producer on the same cluster, trickling readings so snapshots interleave.
            let kafka = citybrain_tests::TestProducer::new(&brokers);
            for i in 0..READINGS {
                let m = format!(
                    r#"{{"sensor":"s1","ts":{},"metric":"ch4","value":{}}}"#,
                    T0 + i * 1000,
                    value_of(i)
                );
                kafka.produce("mine.readings", "s1", m.as_bytes());
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    });
    let last = value_of(READINGS - 1);
    let events = read_events(
        addr,
        Instant::now() + Duration::from_secs(60),
        |name, data| {
            name == "kpis"
                && data["snapshot"]["values"]["max_ch4_per_face"]["m1/f1"].as_f64() == Some(last)
        },
    );
    producer.join().expect("producer");
    engine.stop();

    assert_eq!(
        events.first().map(|e| e.0.as_str()),
        Some("snapshot"),
        "the stream starts with a snapshot"
    );
    let snapshots: Vec<&Value> = events
        .iter()
        .filter(|(n, _)| n == "kpis")
        .map(|(_, d)| &d["snapshot"])
        .collect();
    assert!(
        snapshots.len() >= 3,
        "several snapshots pushed, got {}",
        snapshots.len()
    );
    let mut previous_time = 0;
    let mut seen_values = 0;
    for snapshot in &snapshots {
        let time = snapshot["time"].as_u64().expect("time");
        assert!(time >= previous_time, "logical time never goes back");
        previous_time = time;
        // Exactly the readings before `time` are reflected: the newest of them is shown.
        let before = (0..READINGS).filter(|i| T0 + i * 1000 < time).max();
        let shown = snapshot["values"]["max_ch4_per_face"]["m1/f1"].as_f64();
        assert_eq!(shown, before.map(value_of), "snapshot at {time}");
        if shown.is_some() {
            seen_values += 1;
        }
        assert_eq!(
            snapshot["values"]["faces_in_alarm"]
                .as_object()
                .map(|o| o.len()),
            Some(0),
            "no alert rules: no faces in alarm"
        );
    }
    assert!(seen_values >= 2, "snapshots with values: {seen_values}");
    assert_eq!(
        snapshots
            .last()
            .and_then(|s| s["values"]["max_ch4_per_face"]["m1/f1"].as_f64()),
        Some(last)
    );
}
