//! Webhook delivery against real HTTP receivers on 127.0.0.1: retries until acknowledged
//! under the same `webhook-id`, timeouts, `Retry-After`, 410 Gone, 4xx dead letters, and
//! signatures checked by an independent Standard Webhooks verifier.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use crate::webhook_support::{
    Reply, TestReceiver, assert_all_verified, metric, settings, transition, webhook,
};
use axum::http::HeaderValue;
use citybrain_connectors::dispatch::{Dispatcher, Submitted};
use citybrain_model::TransitionState;
use serde_json::json;

const T0: u64 = 1_795_910_400_000;

#[test]
fn a_failing_receiver_that_recovers_gets_the_transition_once_under_one_id() {
    let receiver = TestReceiver::start(|n, _| {
        if n < 3 {
            Reply::status(500)
        } else {
            Reply::ok()
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let registry = prometheus::Registry::new();
    let dispatcher = Dispatcher::start(settings(dir.path(), &receiver.url), &registry).unwrap();
    let t = transition(
        "ch4-alarm",
        "jungar-1/face-2/ch4-upper",
        TransitionState::Firing,
        T0,
    );
    assert_eq!(dispatcher.submit(&t).unwrap(), Submitted::Queued(1));
    assert!(dispatcher.wait_idle(Duration::from_secs(60)));

    let requests = receiver.requests();
    assert_eq!(
        requests
            .iter()
            .map(|r| (r.id.as_str(), r.answered))
            .collect::<Vec<_>>(),
        vec![
            (t.id.as_str(), 500),
            (t.id.as_str(), 500),
            (t.id.as_str(), 500),
            (t.id.as_str(), 200)
        ]
    );
    assert_all_verified(&requests);
    assert_eq!(receiver.accepted(), vec![t.id.clone()]);
    let mut expected = serde_json::to_value(&t).unwrap();
    expected["starts_at"] = json!(T0);
    assert_eq!(
        requests[3].body,
        json!({"version": 1, "id": t.id, "receiver": "unit", "status": "firing",
               "transitions": [expected]})
    );
    let m = |name: &str, labels: &[(&str, &str)]| metric(&registry, name, labels);
    let unit = ("receiver", "unit");
    assert_eq!(
        m(
            "citybrain_webhook_deliveries_total",
            &[unit, ("outcome", "delivered")]
        ),
        1.0
    );
    assert_eq!(
        m(
            "citybrain_webhook_deliveries_total",
            &[unit, ("outcome", "failed")]
        ),
        3.0
    );
    assert_eq!(m("citybrain_webhook_retries_total", &[unit]), 3.0);
    assert_eq!(m("citybrain_dispatch_queue_depth", &[unit]), 0.0);
    assert_eq!(
        m(
            "citybrain_dispatch_submitted_total",
            &[("outcome", "queued")]
        ),
        1.0
    );

    // The same transition again (e.g. a replay after a crash) is recognised.
    assert!(dispatcher.contains(&t.id));
    assert_eq!(dispatcher.submit(&t).unwrap(), Submitted::Duplicate);
    dispatcher.shutdown(Duration::from_secs(1)).unwrap();
    assert_eq!(receiver.requests().len(), 4);
}

#[test]
fn the_independent_verifier_rejects_tampered_stale_and_replayed_requests() {
    let receiver = TestReceiver::start(|_, _| Reply::ok());
    let dir = tempfile::tempdir().unwrap();
    let dispatcher = Dispatcher::start(
        settings(dir.path(), &receiver.url),
        &prometheus::Registry::new(),
    )
    .unwrap();
    let t = transition("ch4-alarm", "s1", TransitionState::Firing, T0);
    dispatcher.submit(&t).unwrap();
    receiver.wait_for(Duration::from_secs(5), "one request", |r| r.len() == 1);
    dispatcher.shutdown(Duration::from_secs(1)).unwrap();
    let request = &receiver.requests()[0];
    assert_eq!(request.verified, Ok(()));
    let hook = standardwebhooks::Webhook::new(crate::webhook_support::SECRET).unwrap();
    assert!(hook.verify(&request.raw, &request.headers).is_ok());

    // One byte of the body changed.
    let mut body = request.raw.clone();
    body[10] ^= 1;
    assert!(hook.verify(&body, &request.headers).is_err());
    // The timestamp moved 301 s into the past (signature recomputed by an attacker without the
    // key is impossible; with the old signature the check fails either way).
    let mut headers = request.headers.clone();
    let ts: i64 = request.timestamp.parse().unwrap();
    headers.insert(
        "webhook-timestamp",
        HeaderValue::from_str(&(ts - 301).to_string()).unwrap(),
    );
    assert!(hook.verify(&request.raw, &headers).is_err());
    // Even correctly signed, a timestamp 301 s old is refused.
    let stale = hook.sign(&request.id, ts - 301, &request.raw).unwrap();
    headers.insert("webhook-signature", HeaderValue::from_str(&stale).unwrap());
    assert!(hook.verify(&request.raw, &headers).is_err());
    // A replayed id: the signature is fine, the receiver drops it as a duplicate.
    let seen = receiver.accepted();
    assert_eq!(seen, vec![t.id.clone()]);
    assert!(seen.contains(&request.id));
    // And our own verifier agrees with the independent one.
    let secret =
        citybrain_connectors::dispatch::Secret::parse(crate::webhook_support::SECRET).unwrap();
    let signature = request.headers["webhook-signature"].to_str().unwrap();
    assert_eq!(
        citybrain_connectors::dispatch::verify(
            &secret,
            &request.id,
            &request.timestamp,
            signature,
            &request.raw,
            ts,
            300
        ),
        Ok(())
    );
}

#[test]
fn a_receiver_that_stalls_past_the_timeout_is_retried() {
    let receiver = TestReceiver::start(|n, _| {
        let mut reply = Reply::ok();
        if n == 0 {
            reply.delay = Duration::from_secs(2);
        }
        reply
    });
    let dir = tempfile::tempdir().unwrap();
    let registry = prometheus::Registry::new();
    let dispatcher = Dispatcher::start(settings(dir.path(), &receiver.url), &registry).unwrap();
    let t = transition("ch4-alarm", "s1", TransitionState::Firing, T0);
    dispatcher.submit(&t).unwrap();
    assert!(dispatcher.wait_idle(Duration::from_secs(10)));
    let requests = receiver.requests();
    assert_eq!(requests.len(), 2);
    assert!(requests.iter().all(|r| r.id == t.id));
    assert_all_verified(&requests);
    // The retry went out after the 300 ms timeout, long before the stalled answer (2 s). The
    // receiver stamps arrivals, so the first stamp may trail the client's clock by a few ms
    // on a loaded machine: seen 296.5 ms. Hence the slack on both sides.
    let gap = requests[1].at - requests[0].at;
    assert!(
        gap >= Duration::from_millis(200) && gap < Duration::from_millis(1800),
        "{gap:?}"
    );
    assert_eq!(
        metric(
            &registry,
            "citybrain_webhook_deliveries_total",
            &[("receiver", "unit"), ("outcome", "failed")]
        ),
        1.0
    );
    dispatcher.shutdown(Duration::from_secs(1)).unwrap();
}

#[test]
fn retry_after_is_honoured() {
    let receiver = TestReceiver::start(|n, _| {
        if n == 0 {
            let mut reply = Reply::status(429);
            reply.headers.push(("retry-after", "1".to_string()));
            reply
        } else {
            Reply::ok()
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let dispatcher = Dispatcher::start(
        settings(dir.path(), &receiver.url),
        &prometheus::Registry::new(),
    )
    .unwrap();
    let t = transition("ch4-alarm", "s1", TransitionState::Firing, T0);
    dispatcher.submit(&t).unwrap();
    assert!(dispatcher.wait_idle(Duration::from_secs(10)));
    let requests = receiver.requests();
    assert_eq!(
        requests.iter().map(|r| r.answered).collect::<Vec<_>>(),
        vec![429, 200]
    );
    // The backoff alone would be at most 10 ms; Retry-After asked for 1 s.
    let gap = requests[1].at - requests[0].at;
    assert!(
        gap >= Duration::from_millis(1000) && gap < Duration::from_millis(4000),
        "{gap:?}"
    );
    dispatcher.shutdown(Duration::from_secs(1)).unwrap();
}

#[test]
fn gone_disables_the_receiver_until_its_config_changes() {
    let receiver = TestReceiver::start(|_, _| {
        let mut reply = Reply::status(410);
        reply.body = "unit retired".into();
        reply
    });
    let dir = tempfile::tempdir().unwrap();
    let registry = prometheus::Registry::new();
    let dispatcher = Dispatcher::start(settings(dir.path(), &receiver.url), &registry).unwrap();
    let a = transition("ch4-alarm", "s1", TransitionState::Firing, T0);
    let b = transition("ch4-alarm", "s2", TransitionState::Firing, T0 + 1);
    dispatcher.submit(&a).unwrap();
    assert!(dispatcher.wait_idle(Duration::from_secs(5)));
    let disabled = dispatcher.disabled_receivers();
    assert_eq!(disabled.len(), 1);
    assert_eq!(disabled[0].name, "unit");
    assert_eq!(disabled[0].reason, "410 Gone: unit retired");
    assert_eq!(
        metric(
            &registry,
            "citybrain_dispatch_receiver_disabled",
            &[("receiver", "unit")]
        ),
        1.0
    );
    // Later transitions are not sent; they go to the dead letter.
    dispatcher.submit(&b).unwrap();
    assert!(dispatcher.wait_idle(Duration::from_secs(5)));
    assert_eq!(receiver.requests().len(), 1);
    dispatcher.shutdown(Duration::from_secs(1)).unwrap();
    let letters = read_dead_letters(&dir.path().join("dead-letters/unit.jsonl"));
    let ids: Vec<&str> = letters
        .iter()
        .map(|l| l["transitions"][0]["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec![a.id.as_str(), b.id.as_str()]);
    assert_eq!(letters[0]["status"], 410);
    assert_eq!(
        letters[1]["reason"],
        "receiver disabled: 410 Gone: unit retired"
    );

    // Same config after a restart: still disabled. Another URL: enabled again.
    let dispatcher = Dispatcher::start(
        settings(dir.path(), &receiver.url),
        &prometheus::Registry::new(),
    )
    .unwrap();
    assert_eq!(dispatcher.disabled_receivers().len(), 1);
    dispatcher.shutdown(Duration::from_secs(1)).unwrap();
    let fixed = TestReceiver::start(|_, _| Reply::ok());
    let dispatcher = Dispatcher::start(
        settings(dir.path(), &fixed.url),
        &prometheus::Registry::new(),
    )
    .unwrap();
    assert!(dispatcher.disabled_receivers().is_empty());
    let c = transition("ch4-alarm", "s3", TransitionState::Firing, T0 + 2);
    dispatcher.submit(&c).unwrap();
    assert!(dispatcher.wait_idle(Duration::from_secs(5)));
    assert_eq!(fixed.accepted(), vec![c.id.clone()]);
    dispatcher.shutdown(Duration::from_secs(1)).unwrap();
}

fn read_dead_letters(path: &std::path::Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn other_client_errors_go_to_the_receivers_dead_letter_at_once() {
    let receiver = TestReceiver::start(|n, _| {
        if n == 0 {
            let mut reply = Reply::status(400);
            reply.body = "bad payload: unknown field".into();
            reply
        } else {
            Reply::ok()
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let registry = prometheus::Registry::new();
    let dispatcher = Dispatcher::start(settings(dir.path(), &receiver.url), &registry).unwrap();
    let a = transition("ch4-alarm", "s1", TransitionState::Firing, T0);
    let b = transition("ch4-alarm", "s2", TransitionState::Firing, T0);
    dispatcher.submit(&a).unwrap();
    assert!(dispatcher.wait_idle(Duration::from_secs(5)));
    dispatcher.submit(&b).unwrap();
    assert!(dispatcher.wait_idle(Duration::from_secs(5)));
    dispatcher.shutdown(Duration::from_secs(1)).unwrap();
    // No retry of the rejected one; the receiver stays enabled.
    assert_eq!(
        receiver
            .requests()
            .iter()
            .map(|r| (r.id.clone(), r.answered))
            .collect::<Vec<_>>(),
        vec![(a.id.clone(), 400), (b.id.clone(), 200)]
    );
    let letters = read_dead_letters(&dir.path().join("dead-letters/unit.jsonl"));
    assert_eq!(letters.len(), 1);
    let letter = &letters[0];
    assert_eq!(letter["receiver"], "unit");
    assert_eq!(letter["webhook_id"], a.id.as_str());
    assert_eq!(letter["status"], 400);
    assert_eq!(letter["response_body"], "bad payload: unknown field");
    assert_eq!(letter["reason"], "rejected with HTTP 400");
    assert_eq!(letter["transitions"], json!([a]));
    let m = |name: &str, labels: &[(&str, &str)]| metric(&registry, name, labels);
    assert_eq!(
        m(
            "citybrain_webhook_dead_letters_total",
            &[("receiver", "unit")]
        ),
        1.0
    );
    assert_eq!(
        m(
            "citybrain_webhook_deliveries_total",
            &[("receiver", "unit"), ("outcome", "rejected")]
        ),
        1.0
    );
    assert_eq!(
        m("citybrain_webhook_retries_total", &[("receiver", "unit")]),
        0.0
    );
}

#[test]
fn alertmanager_format_and_unsigned_receivers() {
    let receiver = TestReceiver::start(|_, _| Reply::ok());
    let dir = tempfile::tempdir().unwrap();
    let mut s = settings(dir.path(), &receiver.url);
    let mut am = webhook("am", &receiver.url);
    if let citybrain_connectors::dispatch::ReceiverKind::Webhook(w) = &mut am.kind {
        w.format = citybrain_connectors::dispatch::PayloadFormat::Alertmanager;
        w.secret = None;
    }
    s.receivers = vec![am];
    s.routes = vec![crate::webhook_support::route(
        &["severity = critical"],
        &["am"],
    )];
    let dispatcher = Dispatcher::start(s, &prometheus::Registry::new()).unwrap();
    let t = transition("ch4-alarm", "s1", TransitionState::Resolved, T0);
    dispatcher.submit(&t).unwrap();
    assert!(dispatcher.wait_idle(Duration::from_secs(5)));
    dispatcher.shutdown(Duration::from_secs(1)).unwrap();
    let requests = receiver.requests();
    assert_eq!(requests.len(), 1);
    let r = &requests[0];
    assert!(!r.headers.contains_key("webhook-signature"));
    assert_eq!(r.id, t.id);
    assert_eq!(r.body["version"], "4");
    assert_eq!(r.body["status"], "resolved");
    assert_eq!(r.body["receiver"], "am");
    assert_eq!(r.body["alerts"][0]["labels"]["alertname"], "ch4-alarm");
    assert_eq!(r.body["alerts"][0]["endsAt"], "2026-11-29T00:00:00.000Z");
    assert_eq!(
        r.body["alerts"][0]["annotations"]["transition_id"],
        t.id.as_str()
    );
}

#[test]
fn redirects_to_another_host_are_not_followed() {
    // `elsewhere` is another origin (another port): a 307 there is treated as a failure and
    // retried at the configured URL, never followed.
    let elsewhere = TestReceiver::start(|_, _| Reply::ok());
    let target = elsewhere.url.clone();
    let receiver = TestReceiver::start(move |n, _| {
        if n < 2 {
            let mut reply = Reply::status(307);
            reply.headers.push(("location", target.clone()));
            reply
        } else {
            Reply::ok()
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let registry = prometheus::Registry::new();
    let dispatcher = Dispatcher::start(settings(dir.path(), &receiver.url), &registry).unwrap();
    let t = transition("ch4-alarm", "s1", TransitionState::Firing, T0);
    dispatcher.submit(&t).unwrap();
    assert!(dispatcher.wait_idle(Duration::from_secs(10)));
    dispatcher.shutdown(Duration::from_secs(1)).unwrap();
    assert!(elsewhere.requests().is_empty());
    let requests = receiver.requests();
    assert_all_verified(&requests);
    assert_eq!(
        requests.iter().map(|r| r.answered).collect::<Vec<_>>(),
        vec![307, 307, 200]
    );
    assert!(requests.iter().all(|r| r.id == t.id));
    let unit = [("receiver", "unit")];
    let outcome = |o: &str| {
        metric(
            &registry,
            "citybrain_webhook_deliveries_total",
            &[("receiver", "unit"), ("outcome", o)],
        )
    };
    assert_eq!(outcome("failed"), 2.0);
    assert_eq!(outcome("delivered"), 1.0);
    assert_eq!(
        metric(&registry, "citybrain_webhook_retries_total", &unit),
        2.0
    );
}

#[test]
fn a_redirect_to_the_same_origin_keeps_the_signed_post() {
    // 307 to the same scheme, host and port is followed with the same method, body and
    // headers, so the receiver's new path gets a request that still verifies.
    let receiver = TestReceiver::start(|n, r| {
        if n == 0 {
            let mut reply = Reply::status(307);
            let host = r.headers["host"].to_str().unwrap().to_string();
            reply
                .headers
                .push(("location", format!("http://{host}/hook?moved=1")));
            reply
        } else {
            Reply::ok()
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let registry = prometheus::Registry::new();
    let dispatcher = Dispatcher::start(settings(dir.path(), &receiver.url), &registry).unwrap();
    let t = transition("ch4-alarm", "s1", TransitionState::Firing, T0);
    dispatcher.submit(&t).unwrap();
    assert!(dispatcher.wait_idle(Duration::from_secs(10)));
    dispatcher.shutdown(Duration::from_secs(1)).unwrap();
    let requests = receiver.requests();
    assert_all_verified(&requests);
    assert_eq!(
        requests.iter().map(|r| r.answered).collect::<Vec<_>>(),
        vec![307, 200]
    );
    assert_eq!(requests[0].raw, requests[1].raw);
    assert_eq!(requests[1].id, t.id);
    assert_eq!(
        metric(
            &registry,
            "citybrain_webhook_deliveries_total",
            &[("receiver", "unit"), ("outcome", "delivered")],
        ),
        1.0
    );
    assert_eq!(
        metric(
            &registry,
            "citybrain_webhook_retries_total",
            &[("receiver", "unit")]
        ),
        0.0
    );
}

#[test]
fn queue_depth_and_oldest_undelivered_age_are_exported_while_a_receiver_is_down() {
    let receiver = TestReceiver::start(|_, _| Reply::status(503));
    let dir = tempfile::tempdir().unwrap();
    let registry = prometheus::Registry::new();
    let dispatcher = Dispatcher::start(settings(dir.path(), &receiver.url), &registry).unwrap();
    let unit = [("receiver", "unit")];
    let depth = || metric(&registry, "citybrain_dispatch_queue_depth", &unit);
    let age = || {
        metric(
            &registry,
            "citybrain_dispatch_oldest_undelivered_seconds",
            &unit,
        )
    };
    let wait = |what: &str, done: &dyn Fn() -> bool| {
        // Generous: the machines are shared; the wait ends as soon as `done` holds.
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while !done() {
            assert!(std::time::Instant::now() < deadline, "timed out: {what}");
            std::thread::sleep(Duration::from_millis(10));
        }
    };
    let a = transition("ch4-alarm", "s1", TransitionState::Firing, T0);
    let b = transition("ch4-alarm", "s2", TransitionState::Firing, T0 + 1);
    dispatcher.submit(&a).unwrap();
    dispatcher.submit(&b).unwrap();
    // The gauges are refreshed at least once a second while requests fail.
    wait("queue depth 2", &|| depth() == 2.0);
    wait("a positive age", &|| age() > 0.0);
    let status = dispatcher.status();
    assert_eq!(status.queue_depth(), 2);
    assert_eq!(status.pending_transitions, 2);
    assert!(status.oldest_undelivered().is_some());
    // Depth and age hold from the moment of submission; a retry needs a failed attempt first.
    wait("a retry", &|| {
        metric(&registry, "citybrain_webhook_retries_total", &unit) >= 1.0
    });

    receiver.set_script(|_, _| Reply::ok());
    assert!(dispatcher.wait_idle(Duration::from_secs(10)));
    wait("queue depth 0", &|| depth() == 0.0);
    wait("age 0", &|| age() == 0.0);
    assert_eq!(dispatcher.status().oldest_undelivered(), None);
    dispatcher.shutdown(Duration::from_secs(1)).unwrap();
    let mut accepted = receiver.accepted();
    accepted.sort();
    let mut expected = vec![a.id, b.id];
    expected.sort();
    assert_eq!(accepted, expected);
}

#[test]
fn a_receiver_that_is_down_for_a_while_gets_everything_when_it_comes_back() {
    // A port nothing listens on: every attempt is a connection error until the receiver starts
    // there.
    let port = citybrain_tests::free_port();
    let url = format!("http://127.0.0.1:{port}/hook");
    let dir = tempfile::tempdir().unwrap();
    let registry = prometheus::Registry::new();
    let dispatcher = Dispatcher::start(settings(dir.path(), &url), &registry).unwrap();
    let unit = [("receiver", "unit")];
    let firing = transition("ch4-alarm", "s1", TransitionState::Firing, T0);
    let resolved = transition("ch4-alarm", "s1", TransitionState::Resolved, T0 + 1000);
    let other = transition("co-alarm", "s2", TransitionState::Firing, T0 + 2);
    for t in [&firing, &resolved, &other] {
        assert_eq!(dispatcher.submit(t).unwrap(), Submitted::Queued(1));
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while metric(&registry, "citybrain_webhook_retries_total", &unit) < 4.0 {
        assert!(std::time::Instant::now() < deadline, "no retries");
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(dispatcher.status().queue_depth(), 3);

    let receiver = TestReceiver::start_at(&format!("127.0.0.1:{port}"), |_, _| Reply::ok());
    assert!(dispatcher.wait_idle(Duration::from_secs(10)));
    dispatcher.shutdown(Duration::from_secs(1)).unwrap();
    let requests = receiver.requests();
    assert_all_verified(&requests);
    assert!(requests.iter().all(|r| !r.duplicate));
    let accepted = receiver.accepted();
    assert_eq!(accepted.len(), 3);
    let order: Vec<&String> = accepted.iter().filter(|id| **id != other.id).collect();
    assert_eq!(order, vec![&firing.id, &resolved.id]);
    assert!(accepted.contains(&other.id));
    assert_eq!(
        metric(
            &registry,
            "citybrain_webhook_deliveries_total",
            &[("receiver", "unit"), ("outcome", "delivered")],
        ),
        3.0
    );
}
