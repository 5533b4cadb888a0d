//! Live rule reload through the real engine on the mock Kafka: rule files edited while the
//! stream runs switch the rules at one logical time, keep the state of what did not change,
//! resolve the alerts of removed rules, and leave everything running when an edit is invalid.

use std::time::{Duration, Instant};

use citybrain_engine::reload::ReloadStatus;
use citybrain_model::alert::{RULE_REMOVED, transition_id};
use citybrain_model::time::now_millis;
use citybrain_model::{AlertTransition, TransitionState};
use citybrain_tests::{
    MockKafka, TOPICS, TestEngine, http_request, read_jsonl, test_config, write_file,
};
use serde_json::Value;

use TransitionState::{Firing, Resolved};

/// The test config with a short debounce and `CARGO_MANIFEST_DIR` as the API token variable
/// (cargo sets it for tests, so the token is this crate's directory).
fn config(brokers: &str) -> String {
    test_config(brokers).replace(
        "bind = \"127.0.0.1:0\"",
        "bind = \"127.0.0.1:0\"\napi_token_env = \"CARGO_MANIFEST_DIR\"",
    ) + "\n[reload]\ndebounce = \"100ms\"\n"
}

fn token() -> String {
    format!("Bearer {}", env!("CARGO_MANIFEST_DIR"))
}

/// An hour ago, to the second: recent enough for `max_future`, old enough to be replay.
fn start_time() -> u64 {
    (now_millis() - 3_600_000) / 1000 * 1000
}

fn register(kafka: &MockKafka, sensors: &[(&str, &str)]) {
    for (sensor, face) in sensors {
        let record = format!(r#"{{"mine":"m1","face":"{face}","kind":"ch4","cadence_ms":1000}}"#);
        kafka.produce("registry.sensors", Some(sensor), Some(record.as_bytes()));
    }
}

/// Produces the readings in event-time order, all to one partition: an idle partition does not
/// hold the watermark back, so a reading of another partition consumed first could make the
/// older readings late.
fn produce(kafka: &MockKafka, t0: u64, readings: &[(&str, u64, f64)]) {
    let mut readings = readings.to_vec();
    readings.sort_by_key(|(_, dt, _)| *dt);
    for (sensor, dt, value) in readings {
        let m = format!(
            r#"{{"sensor":"{sensor}","ts":{},"metric":"ch4","value":{value}}}"#,
            t0 + dt
        );
        kafka.produce("mine.readings", Some("one-partition"), Some(m.as_bytes()));
    }
    kafka.flush();
}

/// Waits until `done` holds (or 30 s pass); returns whether it did.
fn wait_for(mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if done() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    done()
}

/// Waits until the sensor watermark has reached `time`, so everything before it is final.
fn wait_for_watermark(engine: &TestEngine, time: u64) {
    assert!(
        wait_for(|| engine.engine().status().sensor_watermark >= time),
        "the watermark did not reach {time}"
    );
}

/// Waits until the dataflow runs rule-set `version`; returns the status then.
fn wait_for_version(engine: &TestEngine, version: u64) -> ReloadStatus {
    let reloader = engine.engine().reloader();
    assert!(
        wait_for(|| reloader.status().running_version >= version),
        "version {version} was not applied: {:?}",
        reloader.status()
    );
    reloader.status()
}

type Seen = (
    String,
    String,
    String,
    TransitionState,
    u64,
    f64,
    Option<String>,
);

/// (id, rule, entity, state, event time, value, reason), in event-time order.
fn seen(transitions: &[AlertTransition]) -> Vec<Seen> {
    let mut out: Vec<Seen> = transitions
        .iter()
        .map(|t| {
            (
                t.id.clone(),
                t.rule.clone(),
                t.entity.clone(),
                t.state,
                t.event_time,
                t.value,
                t.reason.clone(),
            )
        })
        .collect();
    out.sort_by(|a, b| (a.4, &a.1, &a.2).cmp(&(b.4, &b.1, &b.2)));
    out
}

fn expected(rule: &str, entity: &str, state: TransitionState, time: u64, value: f64) -> Seen {
    (
        transition_id(rule, entity, state, time),
        rule.to_string(),
        entity.to_string(),
        state,
        time,
        value,
        None,
    )
}

/// The value of the metric line `name` (with its labels, as rendered), if present.
fn metric(engine: &TestEngine, name: &str) -> Option<f64> {
    engine
        .engine()
        .metrics
        .render()
        .lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

const HELD: &str = r#"
[[rule]]
id = "ch4-held"
domain = "mine"
metric = "ch4"
scope = { face = "m1/f2" }
above = 0.5
clear = 0.4
for = "5s"
"#;

fn alarm(above: f64, clear: f64) -> String {
    format!(
        "[[rule]]\nid = \"ch4-alarm\"\ndomain = \"mine\"\nmetric = \"ch4\"\nabove = {above}\nclear = {clear}\nseverity = \"critical\"\n"
    )
}

#[test]
fn editing_a_threshold_switches_at_one_time_and_keeps_the_state_of_the_rest() {
    let t0 = start_time();
    let kafka = MockKafka::new(&TOPICS);
    register(
        &kafka,
        &[
            ("s1", "m1/f1"),
            ("s2", "m1/f2"),
            ("s3", "m1/f1"),
            ("s4", "m1/f2"),
            ("s9", "m1/f9"),
        ],
    );
    let engine = TestEngine::start_with_rule_files(
        &config(&kafka.brokers),
        &[("rules/mine.toml", &(alarm(1.0, 0.9) + HELD))],
    );
    produce(
        &kafka,
        t0,
        &[
            ("s1", 1000, 0.85), // below 1.0
            ("s3", 1000, 1.1),  // ch4-alarm fires
            ("s3", 3000, 0.95), // above the clear level 0.9: still firing
            ("s4", 0, 0.6),     // ch4-held pending since 0 ...
            ("s4", 5000, 0.6),  // ... held 5 s: fires
            ("s2", 2000, 0.6),  // ch4-held pending since 2000
            ("s2", 4000, 0.6),
            ("s9", 6000, 0.1), // moves the watermark past everything before the edit
        ],
    );
    let before = engine.wait_until(Duration::from_secs(60), |t, _| t.len() >= 2);
    wait_for_watermark(&engine, t0 + 5900);
    assert_eq!(
        seen(&before),
        vec![
            expected("ch4-alarm", "s3", Firing, t0 + 1000, 1.1),
            expected("ch4-held", "s4", Firing, t0 + 5000, 0.6),
        ]
    );

    // Lower ch4-alarm's levels; ch4-held stays as it is.
    write_file(
        &engine.dir.path().join("rules/mine.toml"),
        &(alarm(0.8, 0.7) + HELD),
    );
    let status = wait_for_version(&engine, 2);
    assert!(status.success, "{status:?}");
    assert_eq!(
        status.trigger,
        citybrain_engine::reload::Trigger::FileChange
    );
    assert_eq!(status.version, 2);
    // The switch happens at the watermark (which moves on with the wall clock while the
    // stream is quiet): every reading after it meets the new rules.
    let switch = status.running_since;
    assert!((t0 + 5900..t0 + 60_000).contains(&switch), "{switch}");
    let change = status.last_change.clone().expect("a change");
    assert_eq!(
        (change.added.len(), change.removed.len(), change.changed),
        (0, 0, vec!["ch4-alarm".to_string()])
    );

    produce(
        &kafka,
        t0,
        &[
            ("s1", 60_000, 0.85), // above the new level 0.8: fires at once
            ("s3", 60_000, 0.75), // above the new clear level 0.7 (below the old one): firing
            ("s3", 61_000, 0.65), // resolves
            ("s2", 60_000, 0.6),  // ch4-held pending since 2000: its timer survived the switch
            ("s4", 60_000, 0.6),  // ch4-held firing since 5000: not raised again
            ("s4", 61_000, 0.3),  // resolves
            ("s9", 62_000, 0.1),
        ],
    );
    let all = engine.wait_until(Duration::from_secs(60), |t, _| t.len() >= 6);
    wait_for_watermark(&engine, t0 + 61_900);
    std::thread::sleep(Duration::from_millis(300));
    let expected_all = vec![
        expected("ch4-alarm", "s3", Firing, t0 + 1000, 1.1),
        expected("ch4-held", "s4", Firing, t0 + 5000, 0.6),
        expected("ch4-alarm", "s1", Firing, t0 + 60_000, 0.85),
        expected("ch4-held", "s2", Firing, t0 + 60_000, 0.6),
        expected("ch4-alarm", "s3", Resolved, t0 + 61_000, 0.65),
        expected("ch4-held", "s4", Resolved, t0 + 61_000, 0.3),
    ];
    assert_eq!(seen(&all), expected_all);
    assert_eq!(seen(&engine.transitions()), expected_all);

    // (The temporary directory goes with the engine: read the audit log first.)
    let audit: Vec<Value> = read_jsonl(&engine.dir.path().join("citybrain-audit.jsonl"));
    let (alerts, dead) = engine.stop();
    assert!(dead.is_empty(), "{dead:?}");
    assert_eq!(seen(&alerts), expected_all);
    assert_eq!(audit.len(), 1, "{audit:?}");
    assert_eq!(audit[0]["changed"], serde_json::json!(["ch4-alarm"]));
    assert_eq!(audit[0]["version"], 2);
    assert_eq!(audit[0]["hash"].as_str(), Some(status.rules_hash.as_str()));
    assert_eq!(
        (
            &audit[0]["trigger"],
            &audit[0]["added"],
            &audit[0]["removed"]
        ),
        (
            &Value::from("file_change"),
            &serde_json::json!([]),
            &serde_json::json!([])
        )
    );
    assert!(
        audit[0]["files"][0]
            .as_str()
            .is_some_and(|f| f.ends_with("rules/mine.toml"))
    );
}

#[test]
fn removing_a_rule_resolves_its_firing_alerts() {
    let t0 = start_time();
    let kafka = MockKafka::new(&TOPICS);
    register(&kafka, &[("s1", "m1/f1"), ("s9", "m1/f9")]);
    let warn = "[[rule]]\nid = \"ch4-warn\"\ndomain = \"mine\"\nmetric = \"ch4\"\nabove = 0.8\nclear = 0.7\n";
    let engine = TestEngine::start_with_rule_files(
        &config(&kafka.brokers),
        &[("rules/mine.toml", &(alarm(1.0, 0.9) + warn))],
    );
    produce(&kafka, t0, &[("s1", 1000, 1.2), ("s9", 3000, 0.1)]);
    engine.wait_until(Duration::from_secs(60), |t, _| t.len() >= 2);
    wait_for_watermark(&engine, t0 + 2900);

    write_file(&engine.dir.path().join("rules/mine.toml"), warn);
    let status = wait_for_version(&engine, 2);
    let switch = status.running_since;
    assert!((t0 + 2900..t0 + 60_000).contains(&switch), "{switch}");
    assert_eq!(
        status.last_change.map(|c| c.removed),
        Some(vec!["ch4-alarm".to_string()])
    );
    // ch4-alarm is gone: 1.2 raises nothing; ch4-warn kept firing and resolves on its own.
    produce(
        &kafka,
        t0,
        &[
            ("s1", 60_000, 1.2),
            ("s1", 61_000, 0.5),
            ("s9", 62_000, 0.1),
        ],
    );
    let all = engine.wait_until(Duration::from_secs(60), |t, _| t.len() >= 4);
    wait_for_watermark(&engine, t0 + 61_900);
    std::thread::sleep(Duration::from_millis(300));
    // Resolved at the switch, with the value it fired with.
    let mut removed = expected("ch4-alarm", "s1", Resolved, switch, 1.2);
    removed.6 = Some(RULE_REMOVED.to_string());
    assert_eq!(
        seen(&engine.transitions()),
        vec![
            expected("ch4-alarm", "s1", Firing, t0 + 1000, 1.2),
            expected("ch4-warn", "s1", Firing, t0 + 1000, 1.2),
            removed,
            expected("ch4-warn", "s1", Resolved, t0 + 61_000, 0.5),
        ]
    );
    let resolved = all
        .iter()
        .find(|t| t.reason.is_some())
        .expect("the rule-removed transition");
    assert_eq!(resolved.severity.as_str(), "critical");
    assert_eq!(
        resolved.labels.get("face").map(String::as_str),
        Some("m1/f1")
    );
    // The board no longer shows it.
    assert!(
        engine
            .engine()
            .board()
            .alerts()
            .active
            .iter()
            .all(|t| t.rule != "ch4-alarm")
    );
    let (alerts, _) = engine.stop();
    let json = serde_json::to_value(alerts.iter().find(|t| t.reason.is_some())).expect("json");
    assert_eq!(json["reason"], "rule removed");
}

#[test]
fn an_invalid_edit_changes_nothing_is_reported_and_fixing_it_applies() {
    let t0 = start_time();
    let kafka = MockKafka::new(&TOPICS);
    register(&kafka, &[("s1", "m1/f1"), ("s2", "m1/f1"), ("s9", "m1/f9")]);
    let engine = TestEngine::start_with_rule_files(
        &config(&kafka.brokers),
        &[("rules/mine.toml", &alarm(1.0, 0.9))],
    );
    let addr = engine.http_addr();
    let reloader = engine.engine().reloader();
    let start_hash = reloader.status().rules_hash;
    assert_eq!(
        metric(&engine, "citybrain_config_last_reload_successful"),
        Some(1.0)
    );

    // (d) Reloading needs the bearer token.
    let (code, _) = http_request(addr, "POST", "/api/config/reload", &[], "");
    assert_eq!(code, 401);
    let (code, _) = http_request(
        addr,
        "POST",
        "/api/config/reload",
        &[("Authorization", "Bearer wrong")],
        "",
    );
    assert_eq!(code, 401);
    assert_eq!(
        reloader.status().trigger,
        citybrain_engine::reload::Trigger::Start
    );

    // A typo: the file does not load, the old rules keep running.
    let path = engine.dir.path().join("rules/mine.toml");
    write_file(
        &path,
        "[[rule]]\nid = \"ch4-alarm\"\ndomain = \"mine\"\nmetric = \"ch4\"\nabve = 0.8\n",
    );
    assert!(wait_for(|| !reloader.status().success));
    let (code, body) = http_request(addr, "GET", "/api/config/status", &[], "");
    assert_eq!(code, 200);
    let status: Value = serde_json::from_str(&body).expect("json");
    let location = format!("{}:5:1", path.display());
    assert_eq!(
        status["error"],
        format!(
            "{location}: error: unknown field `abve`\n  hint: did you mean `above`? expected one of: id, kind, domain, metric, scope, above, below, clear, for, severity, summary, labels"
        )
    );
    assert_eq!(
        (
            &status["diagnostics"][0]["line"],
            &status["diagnostics"][0]["column"]
        ),
        (&Value::from(5), &Value::from(1))
    );
    assert_eq!(status["success"], false);
    assert_eq!(status["trigger"], "file_change");
    assert_eq!(status["version"], 1);
    assert_eq!(status["rules_hash"], start_hash.as_str());
    assert_eq!(
        metric(&engine, "citybrain_config_last_reload_successful"),
        Some(0.0)
    );
    assert_eq!(
        metric(
            &engine,
            "citybrain_config_reloads_total{result=\"failure\"}"
        ),
        Some(1.0)
    );
    // The wall's feed carries the failure (the page shows a banner while it lasts).
    assert_eq!(
        engine.engine().board().config().map(|c| c.success),
        Some(false)
    );
    // An API reload of the same files fails the same way: 422 with the diagnostics.
    let (code, body) = http_request(
        addr,
        "POST",
        "/api/config/reload",
        &[("Authorization", &token())],
        "",
    );
    assert_eq!(code, 422, "{body}");
    assert!(body.contains("unknown field `abve`"), "{body}");

    // Still the old level: 0.85 raises nothing, 1.05 fires.
    produce(
        &kafka,
        t0,
        &[("s1", 1000, 0.85), ("s2", 1000, 1.05), ("s9", 2000, 0.1)],
    );
    engine.wait_until(Duration::from_secs(60), |t, _| !t.is_empty());
    wait_for_watermark(&engine, t0 + 1900);
    assert_eq!(
        seen(&engine.transitions()),
        vec![expected("ch4-alarm", "s2", Firing, t0 + 1000, 1.05)]
    );

    // The fix applies.
    write_file(&path, &alarm(0.8, 0.7));
    let status = wait_for_version(&engine, 2);
    assert!(status.success);
    assert_eq!(status.error, None);
    assert_ne!(status.rules_hash, start_hash);
    assert_eq!(
        metric(&engine, "citybrain_config_last_reload_successful"),
        Some(1.0)
    );
    assert_eq!(
        engine.engine().board().config().map(|c| c.success),
        Some(true)
    );
    // With the token, a reload of unchanged files succeeds and changes nothing.
    let (code, body) = http_request(
        addr,
        "POST",
        "/api/config/reload",
        &[("Authorization", &token())],
        "",
    );
    assert_eq!(code, 200, "{body}");
    let after: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(
        (&after["version"], &after["trigger"]),
        (&Value::from(2), &Value::from("api"))
    );
    assert_eq!(
        metric(
            &engine,
            "citybrain_config_reloads_total{result=\"success\"}"
        ),
        Some(2.0)
    );
    produce(&kafka, t0, &[("s1", 60_000, 0.85), ("s9", 61_000, 0.1)]);
    engine.wait_until(Duration::from_secs(60), |t, _| t.len() >= 2);
    assert_eq!(
        seen(&engine.transitions()),
        vec![
            expected("ch4-alarm", "s2", Firing, t0 + 1000, 1.05),
            expected("ch4-alarm", "s1", Firing, t0 + 60_000, 0.85),
        ]
    );
    let audit: Vec<Value> = read_jsonl(&engine.dir.path().join("citybrain-audit.jsonl"));
    assert_eq!(
        audit.len(),
        1,
        "only applied changes are audited: {audit:?}"
    );
}

#[test]
fn sighup_reloads_the_rule_files() {
    let kafka = MockKafka::new(&TOPICS);
    // No file watching: only the signal can pick up the edit.
    let engine = TestEngine::start_with_rule_files(
        &config(&kafka.brokers).replace(
            "debounce = \"100ms\"",
            "debounce = \"100ms\"\nwatch = false",
        ),
        &[("rules/mine.toml", &alarm(1.0, 0.9))],
    );
    let reloader = engine.engine().reloader();
    citybrain_engine::reload::reload_on_sighup(reloader.clone()).expect("SIGHUP handler");
    write_file(&engine.dir.path().join("rules/mine.toml"), &alarm(1.2, 0.9));
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        reloader.status().version,
        1,
        "not reloaded before the signal"
    );
    let status = std::process::Command::new("kill")
        .args(["-HUP", &std::process::id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    let status = wait_for_version(&engine, 2);
    assert_eq!(status.trigger, citybrain_engine::reload::Trigger::Signal);
    assert!(status.success);
    engine.stop();
}
