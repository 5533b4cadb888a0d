//! Nothing lost across restarts: a dispatcher stopped (or SIGKILLed) with undelivered
//! transitions, and a new one started on the same outbox directory, delivers every one of them
//! under its original `webhook-id`; what was acknowledged is not sent again.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::webhook_support::{
    Reply, Request, TestReceiver, assert_all_verified, settings, transition,
};
use citybrain_connectors::dispatch::{Dispatcher, FsyncPolicy, Submitted};
use citybrain_model::AlertTransition;
use citybrain_model::TransitionState::Firing;

const T0: u64 = 1_795_910_400_000;

#[test]
fn a_restart_redelivers_what_was_not_acknowledged_under_the_same_ids() {
    let receiver = TestReceiver::start(|n, _| {
        if n == 0 {
            Reply::ok()
        } else {
            Reply::status(503)
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let t1 = transition("ch4-alarm", "s1", Firing, T0);
    let t2 = transition("ch4-alarm", "s2", Firing, T0 + 1);
    let t3 = transition("co-alarm", "s3", Firing, T0 + 2);
    {
        let dispatcher = Dispatcher::start(
            settings(dir.path(), &receiver.url),
            &prometheus::Registry::new(),
        )
        .unwrap();
        dispatcher.submit(&t1).unwrap();
        receiver.wait_for(Duration::from_secs(5), "t1 accepted", |r| r.len() == 1);
        dispatcher.submit(&t2).unwrap();
        dispatcher.submit(&t3).unwrap();
        receiver.wait_for(Duration::from_secs(5), "t2 and t3 failed", |r| {
            r.iter().any(|r| r.id == t2.id) && r.iter().any(|r| r.id == t3.id)
        });
        let status = dispatcher.status();
        assert_eq!(status.receivers[0].queue_depth, 2);
        assert!(status.receivers[0].oldest_undelivered.is_some());
        assert_eq!(status.pending_transitions, 2);
        dispatcher.shutdown(Duration::from_millis(50)).unwrap();
    }
    let before = receiver.requests().len();
    receiver.set_script(|_, _| Reply::ok());

    let dispatcher = Dispatcher::start(
        settings(dir.path(), &receiver.url),
        &prometheus::Registry::new(),
    )
    .unwrap();
    assert!(dispatcher.wait_idle(Duration::from_secs(5)));
    let status = dispatcher.status();
    assert_eq!(status.queue_depth(), 0);
    assert_eq!(status.oldest_undelivered(), None);
    // Known after the restart: a replayed transition is not sent again.
    assert_eq!(dispatcher.submit(&t1).unwrap(), Submitted::Duplicate);
    assert_eq!(dispatcher.submit(&t2).unwrap(), Submitted::Duplicate);
    dispatcher.shutdown(Duration::from_secs(1)).unwrap();

    let requests = receiver.requests();
    assert_all_verified(&requests);
    let after: BTreeSet<String> = requests[before..].iter().map(|r| r.id.clone()).collect();
    assert_eq!(after, BTreeSet::from([t2.id.clone(), t3.id.clone()]));
    assert_eq!(requests[before..].len(), 2);
    // Each accepted once (t2 and t3 are different alerts: any order).
    let accepted = receiver.accepted();
    assert_eq!(accepted.len(), 3);
    assert_eq!(accepted[0], t1.id);
    assert_eq!(
        accepted.into_iter().collect::<BTreeSet<_>>(),
        BTreeSet::from([t1.id.clone(), t2.id.clone(), t3.id.clone()])
    );
    // t1 was sent exactly once.
    assert_eq!(requests.iter().filter(|r| r.id == t1.id).count(), 1);
}

/// Set in the child process of [`sigkill_during_delivery_loses_nothing`]: the outbox directory
/// and the receiver URL, separated by a newline.
const CHILD_ENV: &str = "CITYBRAIN_WEBHOOK_SIGKILL_CHILD";

const KILLED_COUNT: u64 = 40;

fn killed_transitions() -> Vec<AlertTransition> {
    (0..KILLED_COUNT)
        .map(|i| {
            transition(
                "ch4-alarm",
                &format!("jungar-1/face-{i}/ch4"),
                Firing,
                T0 + i,
            )
        })
        .collect()
}

/// Not a test on its own: the "engine" process of [`sigkill_during_delivery_loses_nothing`],
/// run by re-executing this test binary. Does nothing unless [`CHILD_ENV`] is set.
#[test]
fn sigkill_child_process() {
    let Ok(spec) = std::env::var(CHILD_ENV) else {
        return;
    };
    let (dir, url) = spec.split_once('\n').unwrap();
    let mut s = settings(std::path::Path::new(dir), url);
    s.outbox.fsync = FsyncPolicy::Interval(Duration::from_millis(10));
    s.receivers[0].max_concurrency = 2;
    let dispatcher = Dispatcher::start(s, &prometheus::Registry::new()).unwrap();
    for t in killed_transitions() {
        dispatcher.submit(&t).unwrap();
    }
    println!("submitted");
    std::thread::sleep(Duration::from_secs(30));
    // Never reached in the real run: the parent kills this process first.
    std::mem::forget(dispatcher);
}

#[test]
fn sigkill_during_delivery_loses_nothing() {
    let receiver = TestReceiver::start(|_, _| {
        let mut reply = Reply::ok();
        reply.delay = Duration::from_millis(20);
        reply
    });
    let dir = tempfile::tempdir().unwrap();
    let exe: PathBuf = std::env::current_exe().unwrap();
    let mut child = Command::new(exe)
        .args([
            "--exact",
            "webhook_restart::sigkill_child_process",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(
            CHILD_ENV,
            format!("{}\n{}", dir.path().display(), receiver.url),
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        match lines.next() {
            Some(Ok(line)) if line.contains("submitted") => break,
            Some(_) if Instant::now() < deadline => {}
            _ => {
                let _ = child.kill();
                panic!("the child never submitted");
            }
        }
    }
    // Kill it in the middle of delivering.
    receiver.wait_for(Duration::from_secs(10), "some deliveries", |r| r.len() >= 6);
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let delivered_before = receiver.accepted().len();
    assert!(
        (delivered_before as u64) < KILLED_COUNT,
        "the child delivered everything before it was killed"
    );

    let mut s = settings(dir.path(), &receiver.url);
    s.receivers[0].max_concurrency = 8;
    let dispatcher = Dispatcher::start(s, &prometheus::Registry::new()).unwrap();
    assert!(dispatcher.wait_idle(Duration::from_secs(10)));
    dispatcher.shutdown(Duration::from_secs(1)).unwrap();

    let all: BTreeSet<String> = killed_transitions().into_iter().map(|t| t.id).collect();
    let requests = receiver.requests();
    assert_all_verified(&requests);
    // Every transition arrived, and nothing but them.
    let accepted: BTreeSet<String> = receiver.accepted().into_iter().collect();
    assert_eq!(accepted, all);
    assert!(requests.iter().all(|r| all.contains(&r.id)));
    // A duplicate only ever repeats an id the receiver already had: at most the requests that
    // were in flight when the child died (its concurrency was 2).
    let duplicates = requests.iter().filter(|r| r.duplicate).count();
    assert!(duplicates <= 2, "{duplicates} duplicates");
}

#[test]
fn a_grouped_request_is_resent_as_the_same_group_after_a_restart() {
    let receiver = TestReceiver::start(|_, _| Reply::status(503));
    let dir = tempfile::tempdir().unwrap();
    let grouped = |url: &str| {
        let mut s = settings(dir.path(), url);
        s.routes[0].group_wait = Duration::from_millis(100);
        s
    };
    let members: Vec<AlertTransition> = (0..3)
        .map(|i| transition("ch4-alarm", &format!("s{i}"), Firing, T0 + i))
        .collect();
    {
        let dispatcher =
            Dispatcher::start(grouped(&receiver.url), &prometheus::Registry::new()).unwrap();
        for t in &members {
            dispatcher.submit(t).unwrap();
        }
        receiver.wait_for(Duration::from_secs(5), "the group tried twice", |r| {
            r.len() >= 2
        });
        dispatcher.shutdown(Duration::from_millis(10)).unwrap();
    }
    let first = receiver.requests()[0].clone();
    assert_eq!(
        first.transition_ids(),
        members.iter().map(|t| t.id.clone()).collect::<Vec<_>>()
    );
    receiver.set_script(|_, _| Reply::ok());
    // A new transition arrives right after the restart: it must not join the logged group.
    let late = transition("co-alarm", "s9", Firing, T0 + 9);
    let dispatcher =
        Dispatcher::start(grouped(&receiver.url), &prometheus::Registry::new()).unwrap();
    dispatcher.submit(&late).unwrap();
    assert!(dispatcher.wait_idle(Duration::from_secs(5)));
    dispatcher.shutdown(Duration::from_secs(1)).unwrap();
    let requests = receiver.requests();
    assert_all_verified(&requests);
    let accepted: Vec<Request> = requests.into_iter().filter(|r| r.answered == 200).collect();
    assert_eq!(accepted.len(), 2, "{accepted:#?}");
    let group = accepted.iter().find(|r| r.id == first.id).unwrap();
    assert_eq!(group.transition_ids(), first.transition_ids());
    let alone = accepted.iter().find(|r| r.id != first.id).unwrap();
    assert_eq!(alone.transition_ids(), vec![late.id.clone()]);
}
