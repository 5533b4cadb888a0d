//! An alert log that cannot be written: the engine stops consuming, says why (`/readyz`,
//! `citybrain_outputs_writable`), commits nothing that is not durable, and resumes when the
//! log can be written again; the log ends up that of an undisturbed run.
//!
//! The engine runs as a child process under a file-size limit (`prlimit --fsize`, the
//! `RLIMIT_FSIZE` resource): a write crossing it fails with `EFBIG`, as one on a full disk
//! fails with `ENOSPC`, and raising the limit of the running process (`prlimit --pid`) is the
//! disk getting space back. Limitation: a real full disk also fails `fsync` and the writes of
//! other processes; only the write path's error handling is the same. (`chmod` would not do:
//! the tests run as root, and an open file stays writable.)

#![allow(clippy::expect_used)] // test helpers: a broker that cannot answer fails the test

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use citybrain_model::AlertTransition;
use citybrain_tests::{MockKafka, TOPICS, http_get, read_jsonl, start_engine, test_config};

use crate::real_data_methane::{
    RULES, expected_transitions, methane_columns, produce_methane, summary,
};

const CHILD_ENV: &str = "CITYBRAIN_UNWRITABLE_CHILD";

/// The alert log may grow to about a fifth of its full size (539 lines of ~400 bytes).
const FILE_SIZE_LIMIT: u64 = 40_000;

fn config(brokers: &str) -> String {
    format!(
        "{}\n[recovery]\ncommit_interval = \"100ms\"\n",
        test_config(brokers)
    )
}

/// Not a test on its own: the engine process the tests below start under a file-size limit.
/// Runs an engine on the brokers and directory named in `CITYBRAIN_UNWRITABLE_CHILD`, writes
/// its HTTP address to `http-addr` there, and runs until killed.
#[test]
fn engine_child_process() {
    let Ok(spec) = std::env::var(CHILD_ENV) else {
        return;
    };
    let (brokers, dir) = spec.split_once('\n').expect("brokers\\ndir");
    let engine = start_engine(
        Path::new(dir),
        &config(brokers),
        RULES,
        Box::new(|_: &AlertTransition| {}),
    );
    let addr = engine.http_addr().expect("http");
    std::fs::write(Path::new(dir).join("http-addr"), addr.to_string()).expect("write address");
    loop {
        std::thread::sleep(Duration::from_secs(60));
    }
}

/// Waits (at most 120 s) until `done` holds; fails the test with `what` otherwise.
fn eventually(what: &str, done: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while !done() {
        assert!(Instant::now() < deadline, "not within 120 s: {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

struct Blocked {
    child: Child,
    addr: SocketAddr,
}

impl Drop for Blocked {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Produces the first half of the methane file, starts the engine child under the file-size
/// limit, waits until it reports the alert log unwritable and has stopped consuming, then
/// produces the second half and checks that none of it is read while the log stays unwritable.
fn blocked_engine(kafka: &MockKafka, dir: &Path) -> Blocked {
    let (mm116, mm31) = methane_columns();
    let half = mm116.len() / 2;
    produce_methane(kafka, &mm116, &mm31, 0..half);
    let child = Command::new("prlimit")
        .arg(format!("--fsize={FILE_SIZE_LIMIT}:unlimited"))
        .arg(std::env::current_exe().expect("test binary"))
        .args([
            "--exact",
            "unwritable_outputs::engine_child_process",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, format!("{}\n{}", kafka.brokers, dir.display()))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn the engine under prlimit (util-linux)");
    let address = dir.join("http-addr");
    eventually("the child serves HTTP", || address.exists());
    let addr: SocketAddr = std::fs::read_to_string(&address)
        .expect("address")
        .parse()
        .expect("an address");
    let engine = Blocked { child, addr };

    eventually("/readyz reports the unwritable alert log", || {
        let (status, body) = http_get(addr, "/readyz");
        status == 503
            && body.contains("the outputs cannot be written")
            && body.contains("alerts.jsonl")
    });
    let metrics = http_get(addr, "/metrics").1;
    assert!(metrics.lines().any(|l| l == "citybrain_outputs_writable 0"));
    // Consumption stops: the count of readings read comes to rest short of the whole file.
    let read = || {
        http_get(addr, "/metrics")
            .1
            .lines()
            .find_map(|l| l.strip_prefix("citybrain_events_total{stream=\"mine\"} "))
            .and_then(|n| n.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let last = std::cell::Cell::new(read());
    eventually("reading stops", || {
        std::thread::sleep(Duration::from_secs(1));
        let now = read();
        last.replace(now) == now
    });
    let last = last.get();
    // A fast engine may read all of the first half before its first failed write; what must
    // hold is that readings produced while the log is unwritable wait.
    produce_methane(kafka, &mm116, &mm31, half..mm116.len());
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(read(), last, "nothing read while the log is unwritable");
    assert!(
        last <= 2 * half as u64,
        "stopped within the first half: {last} readings read"
    );
    let size = std::fs::metadata(dir.join("alerts.jsonl"))
        .expect("log")
        .len();
    assert!(size <= FILE_SIZE_LIMIT, "{size}");
    engine
}

fn assert_exact(log: &[AlertTransition]) {
    let (mm116, mm31) = methane_columns();
    let ids: HashSet<&str> = log.iter().map(|t| t.id.as_str()).collect();
    assert_eq!(ids.len(), log.len(), "no transition logged twice");
    assert_eq!(summary(log), expected_transitions(&mm116, &mm31));
}

#[test]
fn an_unwritable_alert_log_stops_consumption_until_it_is_writable_again() {
    let kafka = MockKafka::new(&TOPICS);
    let dir = tempfile::tempdir().expect("tempdir");
    let mut engine = blocked_engine(&kafka, dir.path());

    // Space again: raise the running engine's limit.
    let status = Command::new("prlimit")
        .arg(format!("--pid={}", engine.child.id()))
        .arg("--fsize=unlimited:unlimited")
        .status()
        .expect("prlimit");
    assert!(status.success(), "{status}");
    let (mm116, mm31) = methane_columns();
    let expected = expected_transitions(&mm116, &mm31).len();
    let log_path = dir.path().join("alerts.jsonl");
    eventually("the whole log", || {
        read_jsonl::<AlertTransition>(&log_path).len() >= expected
    });
    eventually("ready again", || http_get(engine.addr, "/readyz").0 == 200);
    let metrics = http_get(engine.addr, "/metrics").1;
    assert!(metrics.lines().any(|l| l == "citybrain_outputs_writable 1"));
    std::thread::sleep(Duration::from_millis(500));
    engine.child.kill().expect("kill");
    engine.child.wait().expect("reaped");
    assert_exact(&read_jsonl(&log_path));
}

#[test]
fn a_crash_while_the_alert_log_is_unwritable_loses_nothing_committed() {
    let kafka = MockKafka::new(&TOPICS);
    let dir = tempfile::tempdir().expect("tempdir");
    let engine = blocked_engine(&kafka, dir.path());
    // SIGKILL while blocked: what the log lacks must not have been committed.
    drop(engine);

    let (mm116, mm31) = methane_columns();
    let expected = expected_transitions(&mm116, &mm31).len();
    let log_path = dir.path().join("alerts.jsonl");
    let restarted = start_engine(
        dir.path(),
        &config(&kafka.brokers),
        RULES,
        Box::new(|_: &AlertTransition| {}),
    );
    eventually("the whole log after a restart", || {
        read_jsonl::<AlertTransition>(&log_path).len() >= expected
    });
    std::thread::sleep(Duration::from_millis(500));
    restarted.stop();
    restarted.wait().expect("engine ran cleanly");
    assert_exact(&read_jsonl(&log_path));
}
