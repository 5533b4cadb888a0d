//! Per-alert ordering under retries, grouping windows, routing and silences, against real
//! HTTP receivers on 127.0.0.1.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::webhook_support::{
    Reply, TestReceiver, assert_all_verified, route, settings, transition, webhook,
};
use citybrain_connectors::dispatch::payload::derived_id;
use citybrain_connectors::dispatch::{Dispatcher, SilenceRequest, Submitted};
use citybrain_model::TransitionState::{Firing, Resolved};

const T0: u64 = 1_795_910_400_000;

#[test]
fn resolved_never_reaches_a_receiver_before_its_firing_is_acknowledged() {
    // The first attempt of every transition fails, and every fifth request too, so each
    // transition is retried while the next one of its alert is already queued behind it.
    let seen = Mutex::new(HashSet::new());
    let receiver = TestReceiver::start(move |n, r| {
        let first = seen.lock().unwrap().insert(r.id.clone());
        if first || n % 5 == 0 {
            Reply::status(503)
        } else {
            Reply::ok()
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let mut s = settings(dir.path(), &receiver.url);
    s.receivers[0].max_concurrency = 8;
    let dispatcher = Dispatcher::start(s, &prometheus::Registry::new()).unwrap();
    let mut expected: HashMap<String, Vec<String>> = HashMap::new();
    for i in 0..6 {
        let entity = format!("jungar-1/face-{i}/ch4");
        let firing = transition("ch4-alarm", &entity, Firing, T0 + i);
        let resolved = transition("ch4-alarm", &entity, Resolved, T0 + 1000 + i);
        let again = transition("ch4-alarm", &entity, Firing, T0 + 2000 + i);
        for t in [&firing, &resolved, &again] {
            assert_eq!(dispatcher.submit(t).unwrap(), Submitted::Queued(1));
        }
        expected.insert(entity, vec![firing.id, resolved.id, again.id]);
    }
    assert!(dispatcher.wait_idle(Duration::from_secs(15)));
    dispatcher.shutdown(Duration::from_secs(1)).unwrap();

    let requests = receiver.requests();
    assert_all_verified(&requests);
    // Every transition accepted exactly once, each after at least one failure.
    let accepted = receiver.accepted();
    assert_eq!(accepted.len(), 18);
    assert!(requests.iter().all(|r| !r.duplicate));
    assert!(requests.len() >= 36);
    // Per alert: accepted in order, and no request for a later transition was even sent
    // before the earlier one was acknowledged.
    for (entity, ids) in &expected {
        let order: Vec<&String> = accepted.iter().filter(|id| ids.contains(id)).collect();
        assert_eq!(order, ids.iter().collect::<Vec<_>>(), "{entity}");
        for pair in ids.windows(2) {
            let acked = requests
                .iter()
                .find(|r| r.id == pair[0] && r.answered == 200)
                .map(|r| r.answered_at)
                .unwrap();
            let first_next = requests
                .iter()
                .find(|r| r.id == pair[1])
                .map(|r| r.at)
                .unwrap();
            assert!(
                first_next >= acked,
                "{entity}: {} sent before {} was acknowledged",
                pair[1],
                pair[0]
            );
        }
    }
}

#[test]
fn a_grouping_window_puts_transitions_for_one_receiver_in_one_request() {
    let receiver = TestReceiver::start(|_, _| Reply::ok());
    let dir = tempfile::tempdir().unwrap();
    let mut s = settings(dir.path(), &receiver.url);
    s.routes[0].group_wait = Duration::from_millis(300);
    let dispatcher = Dispatcher::start(s, &prometheus::Registry::new()).unwrap();
    let start = Instant::now();
    let a = transition("ch4-alarm", "s1", Firing, T0);
    let b = transition("ch4-alarm", "s2", Firing, T0 + 1);
    let c = transition("co-alarm", "s3", Firing, T0 + 2);
    let a_resolved = transition("ch4-alarm", "s1", Resolved, T0 + 3);
    for t in [&a, &b, &c, &a_resolved] {
        dispatcher.submit(t).unwrap();
    }
    assert!(dispatcher.wait_idle(Duration::from_secs(10)));
    dispatcher.shutdown(Duration::from_secs(1)).unwrap();
    let requests = receiver.requests();
    assert_all_verified(&requests);
    // One request for the three alerts; a's resolved waits for a's firing, then goes alone.
    assert_eq!(requests.len(), 2);
    assert_eq!(
        requests[0].transition_ids(),
        vec![a.id.clone(), b.id.clone(), c.id.clone()]
    );
    assert_eq!(requests[0].id, derived_id("group", &[&a.id, &b.id, &c.id]));
    assert_eq!(requests[0].body["id"], requests[0].id.as_str());
    assert_eq!(requests[0].body["status"], "firing");
    assert_eq!(requests[1].transition_ids(), vec![a_resolved.id.clone()]);
    assert_eq!(requests[1].id, a_resolved.id);
    assert_eq!(requests[1].body["transitions"][0]["starts_at"], T0);
    // The window held the first request back, and the second one after the first was
    // acknowledged.
    assert!(requests[0].at - start >= Duration::from_millis(290));
    assert!(requests[1].at - requests[0].answered_at >= Duration::from_millis(290));
}

#[test]
fn routes_continue_and_silences_decide_who_gets_what() {
    let rescue = TestReceiver::start(|_, _| Reply::ok());
    let county = TestReceiver::start(|_, _| Reply::ok());
    let dir = tempfile::tempdir().unwrap();
    let mut s = settings(dir.path(), &rescue.url);
    s.receivers = vec![
        webhook("rescue", &rescue.url),
        webhook("county", &county.url),
    ];
    let mut critical = route(
        &["severity = \"critical\"", "mine =~ \"jungar-.*\""],
        &["rescue"],
    );
    critical.continue_matching = true;
    s.routes = vec![critical, route(&["domain = mine"], &["county"])];
    let dispatcher = Dispatcher::start(s, &prometheus::Registry::new()).unwrap();

    let critical = transition("ch4-alarm", "s1", Firing, T0);
    let mut warning = transition("ch4-warn", "s1", Firing, T0);
    warning.severity = citybrain_model::Severity::Warning;
    warning.labels.insert("severity".into(), "warning".into());
    let mut farm = transition("humidity", "gh-1", Firing, T0);
    farm.domain = citybrain_model::Domain::Farm;
    farm.labels.remove("mine");
    assert_eq!(dispatcher.submit(&critical).unwrap(), Submitted::Queued(2));
    assert_eq!(dispatcher.submit(&warning).unwrap(), Submitted::Queued(1));
    assert_eq!(dispatcher.submit(&farm).unwrap(), Submitted::Unrouted);

    let silence = dispatcher
        .add_silence(SilenceRequest {
            matchers: vec!["entity = \"s2\"".into()],
            duration: Some("1h".into()),
            created_by: "duty officer".into(),
            comment: "sensor recalibration".into(),
            ..SilenceRequest::default()
        })
        .unwrap();
    let silenced = transition("ch4-alarm", "s2", Firing, T0);
    assert_eq!(
        dispatcher.submit(&silenced).unwrap(),
        Submitted::Silenced(silence.id.clone())
    );
    assert_eq!(dispatcher.silences(), vec![silence.clone()]);
    assert!(dispatcher.expire_silence(&silence.id).unwrap());
    let after = transition("ch4-alarm", "s2", Resolved, T0 + 5);
    assert_eq!(dispatcher.submit(&after).unwrap(), Submitted::Queued(2));
    assert!(dispatcher.wait_idle(Duration::from_secs(5)));
    dispatcher.shutdown(Duration::from_secs(1)).unwrap();

    // Different alerts are delivered concurrently, so only the set is fixed (the order per
    // alert is checked by the other tests here).
    let sorted = |mut ids: Vec<String>| {
        ids.sort();
        ids
    };
    assert_eq!(
        sorted(rescue.accepted()),
        sorted(vec![critical.id.clone(), after.id.clone()])
    );
    assert_eq!(
        sorted(county.accepted()),
        sorted(vec![
            critical.id.clone(),
            warning.id.clone(),
            after.id.clone()
        ])
    );
}

#[test]
fn reminders_repeat_while_an_alert_keeps_firing() {
    let receiver = TestReceiver::start(|_, _| Reply::ok());
    let dir = tempfile::tempdir().unwrap();
    let mut s = settings(dir.path(), &receiver.url);
    s.routes[0].repeat_interval = Some(Duration::from_millis(300));
    let dispatcher = Dispatcher::start(s, &prometheus::Registry::new()).unwrap();
    let now = citybrain_model::time::now_millis();
    let firing = transition("ch4-alarm", "s1", Firing, now);
    dispatcher.submit(&firing).unwrap();
    receiver.wait_for(Duration::from_secs(5), "two reminders", |r| r.len() >= 3);
    let resolved = transition("ch4-alarm", "s1", Resolved, now + 1000);
    dispatcher.submit(&resolved).unwrap();
    assert!(dispatcher.wait_idle(Duration::from_secs(5)));
    std::thread::sleep(Duration::from_millis(700));
    dispatcher.shutdown(Duration::from_secs(1)).unwrap();

    let requests = receiver.requests();
    assert_all_verified(&requests);
    let last = requests.last().unwrap();
    assert_eq!(last.id, resolved.id);
    assert_eq!(requests[0].id, firing.id);
    let reminders = &requests[1..requests.len() - 1];
    assert!(reminders.len() >= 2, "{}", reminders.len());
    let mut previous = 0;
    for r in reminders {
        let n = r.body["transitions"][0]["repeat"].as_u64().unwrap();
        assert!(n > previous);
        previous = n;
        assert_eq!(r.body["transitions"][0]["id"], firing.id.as_str());
        assert_eq!(r.id, derived_id("repeat", &[&firing.id, &n.to_string()]));
        assert!(r.at - requests[0].at >= Duration::from_millis(290));
    }
    // Nothing after the resolved one.
    assert!(requests.iter().filter(|r| r.id == resolved.id).count() == 1);
}

#[test]
fn no_more_requests_in_flight_than_the_receivers_concurrency_limit() {
    // Every answer takes a second, so requests overlap as much as the limit lets them.
    let receiver = TestReceiver::start(|_, _| {
        let mut reply = Reply::ok();
        reply.delay = Duration::from_secs(1);
        reply
    });
    let dir = tempfile::tempdir().unwrap();
    let mut s = settings(dir.path(), &receiver.url);
    s.receivers[0].max_concurrency = 2;
    if let citybrain_connectors::dispatch::ReceiverKind::Webhook(w) = &mut s.receivers[0].kind {
        w.timeout = Duration::from_secs(30);
    }
    let dispatcher = Dispatcher::start(s, &prometheus::Registry::new()).unwrap();
    let mut ids = Vec::new();
    for i in 0..6 {
        let t = transition("ch4-alarm", &format!("s{i}"), Firing, T0 + i);
        assert_eq!(dispatcher.submit(&t).unwrap(), Submitted::Queued(1));
        ids.push(t.id);
    }
    assert!(dispatcher.wait_idle(Duration::from_secs(30)));
    dispatcher.shutdown(Duration::from_secs(1)).unwrap();
    let requests = receiver.requests();
    assert_all_verified(&requests);
    let mut accepted = receiver.accepted();
    accepted.sort();
    ids.sort();
    assert_eq!(accepted, ids);
    // The most requests open at once, from when each arrived to when it was answered (the
    // dispatcher sends the next one only after it got an answer).
    let peak = requests
        .iter()
        .map(|r| {
            requests
                .iter()
                .filter(|o| o.at <= r.at && r.at < o.answered_at)
                .count()
        })
        .max()
        .unwrap();
    assert_eq!(peak, 2, "{requests:#?}");
}
