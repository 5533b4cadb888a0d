//! The HTTP API on a scripted input: exact JSON of `/api/alerts`, health, readiness, metrics,
//! the OpenAPI document and the wall page's embedded assets.

use std::time::Duration;

use citybrain_model::TransitionState;
use citybrain_model::alert::transition_id;
use citybrain_tests::{MockKafka, TOPICS, TestEngine, http_get, test_config};
use serde_json::{Value, json};

const RULES: &str = r#"
[[rule]]
id = "ch4-alarm"
domain = "mine"
metric = "ch4"
above = 1.0
clear = 0.9
severity = "critical"
summary = "Methane at alarm level on {face}"
labels = { team = "ventilation" }
"#;

/// 2026-11-01T00:00:00Z.
const T0: u64 = 1_793_491_200_000;

#[test]
fn alerts_api_serves_exact_json_for_a_scripted_input() {
    let kafka = MockKafka::new(&TOPICS);
    for (sensor, face) in [("s1", "m1/f1"), ("s2", "m1/f2")] {
        let record = format!(r#"{{"mine":"m1","face":"{face}","kind":"ch4","cadence_ms":1000}}"#);
        kafka.produce("registry.sensors", Some(sensor), Some(record.as_bytes()));
    }
    for (sensor, dt, value) in [("s1", 0, 1.2), ("s2", 500, 1.5), ("s1", 1000, 0.5)] {
        let m = format!(
            r#"{{"sensor":"{sensor}","ts":{},"metric":"ch4","value":{value}}}"#,
            T0 + dt
        );
        kafka.produce("mine.readings", Some(sensor), Some(m.as_bytes()));
    }
    kafka.flush();
    let engine = TestEngine::start(&test_config(&kafka.brokers), RULES);
    let got = engine.wait_until(Duration::from_secs(60), |t, _| t.len() >= 3);
    assert_eq!(got.len(), 3);
    let addr = engine.http_addr();

    // The board's watermark is refreshed once a second: wait until it covers the input.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let alerts = loop {
        let (status, body) = http_get(addr, "/api/alerts");
        assert_eq!(status, 200);
        let alerts: Value = serde_json::from_str(&body).expect("json");
        if alerts["watermark"].as_u64().unwrap_or(0) > T0 + 1000
            || std::time::Instant::now() > deadline
        {
            break alerts;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let transition = |sensor: &str, face: &str, state: TransitionState, dt: u64, value: f64| {
        let time = T0 + dt;
        json!({
            "id": transition_id("ch4-alarm", sensor, state, time),
            "rule": "ch4-alarm",
            "entity": sensor,
            "domain": "mine",
            "state": state.as_str(),
            "severity": "critical",
            "summary": format!("Methane at alarm level on {face}"),
            "value": value,
            "event_time": time,
            "event_time_rfc3339": citybrain_model::time::format_event_time(time),
            "labels": {
                "domain": "mine", "entity": sensor, "face": face, "kind": "ch4", "metric": "ch4",
                "mine": "m1", "rule": "ch4-alarm", "severity": "critical", "team": "ventilation"
            }
        })
    };
    assert_eq!(
        alerts["active"],
        json!([transition("s2", "m1/f2", TransitionState::Firing, 500, 1.5)])
    );
    assert_eq!(
        alerts["recent"],
        json!([
            transition("s1", "m1/f1", TransitionState::Resolved, 1000, 0.5),
            transition("s2", "m1/f2", TransitionState::Firing, 500, 1.5),
            transition("s1", "m1/f1", TransitionState::Firing, 0, 1.2),
        ])
    );
    assert!(alerts["watermark"].as_u64().unwrap_or(0) > T0 + 1000);

    assert_eq!(http_get(addr, "/healthz"), (200, "ok\n".to_string()));
    assert_eq!(http_get(addr, "/readyz"), (200, "ready\n".to_string()));

    let (status, metrics) = http_get(addr, "/metrics");
    assert_eq!(status, 200);
    assert!(
        metrics.contains("citybrain_events_total{stream=\"mine\"} 3"),
        "{metrics}"
    );
    assert!(
        metrics
            .contains("citybrain_alert_transitions_total{rule=\"ch4-alarm\",state=\"firing\"} 2"),
        "{metrics}"
    );

    // Per-partition event-time lag, refreshed every second by the workers.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let partition_lag = loop {
        let (_, metrics) = http_get(addr, "/metrics");
        let line = metrics
            .lines()
            .find(|l| {
                l.starts_with("citybrain_partition_event_lag_milliseconds{")
                    && l.contains("topic=\"mine.readings\"")
            })
            .map(str::to_string);
        match line {
            Some(line) => break line,
            None if std::time::Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(100))
            }
            None => panic!("no partition lag in {metrics}"),
        }
    };
    let lag: i64 = partition_lag
        .rsplit(' ')
        .next()
        .and_then(|v| v.parse().ok())
        .unwrap_or(-1);
    assert!(lag >= 0, "{partition_lag}");

    let (status, openapi) = http_get(addr, "/api/openapi.json");
    assert_eq!(status, 200);
    let openapi: Value = serde_json::from_str(&openapi).expect("openapi json");
    assert_eq!(openapi["openapi"], "3.0.3");
    assert!(openapi["paths"]["/api/stream"].is_object());

    let (status, page) = http_get(addr, "/");
    assert_eq!(status, 200);
    assert!(page.contains("/assets/wall.js") && page.contains("/assets/wall.css"));
    assert!(
        !page.contains("http://") && !page.contains("https://"),
        "no external assets"
    );
    assert_eq!(http_get(addr, "/assets/wall.js").0, 200);
    assert_eq!(http_get(addr, "/assets/wall.css").0, 200);
    assert_eq!(http_get(addr, "/nope").0, 404);
    engine.stop();
}

#[test]
fn silences_api_needs_the_bearer_token() {
    let kafka = MockKafka::new(&TOPICS);
    let dir = tempfile::tempdir().expect("tempdir");
    // The token comes from an environment variable: use one cargo sets for every test run.
    let token = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets it");
    let config = format!(
        r#"{}
[dispatch]
dir = "{}"

[dispatch.receivers.duty]
url = "http://127.0.0.1:9/hook"

[[dispatch.route]]
receivers = ["duty"]
"#,
        test_config(&kafka.brokers).replace(
            "bind = \"127.0.0.1:0\"",
            "bind = \"127.0.0.1:0\"\napi_token_env = \"CARGO_MANIFEST_DIR\""
        ),
        dir.path().join("dispatch").display()
    );
    let engine = TestEngine::start(&config, RULES);
    let addr = engine.http_addr();
    let body = r#"{"matchers":["mine = \"m1\""],"duration":"2h","created_by":"duty officer","comment":"ventilation works"}"#;
    let bearer = format!("Bearer {token}");

    let (status, _) = citybrain_tests::http_request(addr, "POST", "/api/silences", &[], body);
    assert_eq!(status, 401, "no token");
    let (status, _) = citybrain_tests::http_request(
        addr,
        "POST",
        "/api/silences",
        &[("Authorization", "Bearer wrong")],
        body,
    );
    assert_eq!(status, 401, "wrong token");
    let (status, created) = citybrain_tests::http_request(
        addr,
        "POST",
        "/api/silences",
        &[("Authorization", &bearer)],
        body,
    );
    assert_eq!(status, 201, "{created}");
    let huge = format!(
        r#"{{"matchers":["mine = \"m1\""],"duration":"2h","created_by":"x","comment":"{}"}}"#,
        "x".repeat(100_000)
    );
    let (status, _) = citybrain_tests::http_request(
        addr,
        "POST",
        "/api/silences",
        &[("Authorization", &bearer)],
        &huge,
    );
    assert_eq!(status, 413, "a body over 64 KiB");
    let created: Value = serde_json::from_str(&created).expect("json");
    let id = created["id"].as_str().expect("id").to_string();

    let (status, list) = http_get(addr, "/api/silences");
    assert_eq!(status, 200);
    let list: Value = serde_json::from_str(&list).expect("json");
    assert_eq!(list.as_array().map(Vec::len), Some(1));
    assert_eq!(list[0]["id"], json!(id));

    let (status, bad) = citybrain_tests::http_request(
        addr,
        "POST",
        "/api/silences",
        &[("Authorization", &bearer)],
        r#"{"matchers":[],"duration":"1h"}"#,
    );
    assert_eq!(status, 400, "{bad}");

    let path = format!("/api/silences/{id}");
    assert_eq!(
        citybrain_tests::http_request(addr, "DELETE", &path, &[], "").0,
        401
    );
    assert_eq!(
        citybrain_tests::http_request(addr, "DELETE", &path, &[("Authorization", &bearer)], "").0,
        204
    );
    assert_eq!(http_get(addr, "/api/dispatch").0, 200);
    engine.stop();
}

/// The status code of a GET, read from the status line alone (the stream never ends).
#[allow(clippy::expect_used)] // a test helper: a server that cannot answer fails the test
fn status_of(addr: std::net::SocketAddr, path: &str, headers: &[(&str, &str)]) -> u16 {
    use std::io::{BufRead, Write};
    let mut stream = std::net::TcpStream::connect(addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).expect("send");
    let mut line = String::new();
    std::io::BufReader::new(stream)
        .read_line(&mut line)
        .expect("status line");
    line.split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

#[test]
fn read_endpoints_refuse_requests_without_the_read_token() {
    // An environment variable every test process has, so no test has to set one.
    let token = env!("CARGO_PKG_NAME");
    let api_token = env!("CARGO_MANIFEST_DIR");
    let kafka = MockKafka::new(&TOPICS);
    let config = test_config(&kafka.brokers).replace(
        "bind = \"127.0.0.1:0\"",
        "bind = \"127.0.0.1:0\"\napi_token_env = \"CARGO_MANIFEST_DIR\"\nread_token_env = \"CARGO_PKG_NAME\"",
    );
    let engine = TestEngine::start(&config, RULES);
    let addr = engine.http_addr();
    let bearer = format!("Bearer {token}");
    let reads = [
        "/api/alerts",
        "/api/kpis",
        "/api/stream",
        "/api/silences",
        "/api/config/status",
        "/metrics",
    ];
    for path in reads {
        assert_eq!(status_of(addr, path, &[]), 401, "{path} without a token");
        assert_eq!(
            status_of(addr, path, &[("Authorization", "Bearer wrong")]),
            401,
            "{path} with a wrong token"
        );
        assert_eq!(
            status_of(addr, path, &[("Authorization", &bearer)]),
            200,
            "{path} with the read token"
        );
        let api = format!("Bearer {api_token}");
        assert_eq!(
            status_of(addr, path, &[("Authorization", &api)]),
            200,
            "{path} with the API token"
        );
    }
    // The stream, which a browser's EventSource opens, takes the token in its query too;
    // nothing else does (query strings end up in logs).
    assert_eq!(
        status_of(addr, &format!("/api/stream?token={token}"), &[]),
        200
    );
    assert_eq!(status_of(addr, "/api/stream?token=wrong", &[]), 401);
    assert_eq!(
        status_of(addr, &format!("/api/alerts?token={token}"), &[]),
        401
    );
    // A write needs the API token; the read token is not enough.
    let (status, _) = citybrain_tests::http_request(
        addr,
        "POST",
        "/api/config/reload",
        &[("Authorization", &bearer)],
        "",
    );
    assert_eq!(status, 401, "a write with the read token");
    // The page, its assets, probes and the API description stay open.
    for path in ["/", "/assets/wall.js", "/healthz", "/api/openapi.json"] {
        assert_eq!(status_of(addr, path, &[]), 200, "{path}");
    }
    assert_ne!(status_of(addr, "/readyz", &[]), 401);
    engine.stop();
}

#[test]
fn a_read_token_variable_without_a_token_stops_the_start() {
    let config = citybrain_engine::config::load_str(
        std::path::Path::new("test.toml"),
        &test_config("127.0.0.1:9").replace(
            "bind = \"127.0.0.1:0\"",
            "bind = \"127.0.0.1:0\"\nread_token_env = \"CITYBRAIN_TEST_UNSET_READ_TOKEN\"",
        ),
    )
    .expect("config");
    let loaded = citybrain_engine::config::LoadedConfig {
        config,
        rules: Vec::new(),
        base_dir: std::env::temp_dir(),
    };
    let error =
        citybrain_engine::runtime::EngineSettings::from_config(&loaded).expect_err("refused");
    assert!(
        error
            .to_string()
            .contains("CITYBRAIN_TEST_UNSET_READ_TOKEN"),
        "{error}"
    );
}
