//! timely cluster mode: two engine processes of two workers each, on 127.0.0.1, give exactly
//! the alert transitions and KPIs of one process with one worker over the same input (the real
//! methane data, with a gap in it, under threshold, `for`, hopping-window, rate-of-rise and
//! absence rules; Los Angeles 311 requests under an escalation ladder); each transition is
//! logged by exactly one process (the one owning its key), and either process's API serves the
//! whole cluster's KPIs. Killing one process makes the other exit non-zero, naming the failure,
//! instead of hanging.

#![allow(clippy::expect_used)] // test helpers: a broker or process that cannot start fails the test

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use citybrain_model::AlertTransition;
use citybrain_tests::{
    MockKafka, TOPICS, TestEngine, free_port, http_get, start_engine, test_config,
};
use serde_json::Value;

use crate::citizen_reports::produce_la311;
use crate::kpi_la311::requests;
use crate::real_data_methane::{ROW_MS, RULES, T0, methane_columns, produce_methane};

/// Rows of the methane data left out, so both sensors fall silent (an absence rule fires) and
/// come back (it resolves) while the data still moves event time on.
const GAP: std::ops::Range<usize> = 9_000..9_010;

/// How many of the LA 311 requests go in (of 10,000): enough for every step of the ladder.
const REQUESTS: usize = 2_000;

/// The methane rules plus a hopping window, a rate of rise and an absence rule, and the LA 311
/// escalation ladder, so keyed state of several kinds is spread over the cluster.
fn rules() -> String {
    format!(
        r#"{RULES}
{ladder}
[[rule]]
id = "ch4-silent"
kind = "absence"
domain = "mine"
metric = "ch4"
cadences = 3
# Not critical: `faces_in_alarm`, compared below, must not count the silence after the data.
severity = "warning"

[[rule]]
id = "ch4-avg-10m"
kind = "window"
domain = "mine"
metric = "ch4"
window = "10m"
hop = "5m"
group_by = "face"
aggregate = "avg"
above = 0.9
clear = 0.8
severity = "warning"

[[rule]]
id = "ch4-rising"
kind = "rate_of_rise"
domain = "mine"
metric = "ch4"
window = "5m"
min_span = "2m"
above = 0.1
clear = 0.05
severity = "warning"
"#,
        ladder = crate::citizen_reports::rules_toml()
    )
}

/// The engine config of process `process` of the cluster (or of a lone one-worker engine when
/// `cluster` is `None`), with its API on `http_port`.
fn config(brokers: &str, cluster: Option<(usize, &Path)>, http_port: u16, group: &str) -> String {
    let engine = match cluster {
        Some((process, hostfile)) => format!(
            "[engine]\nworkers = 2\nprocesses = 2\nprocess_id = {process}\nhostfile = \"{}\"\n",
            hostfile.display()
        ),
        None => "[engine]\nworkers = 1\n".to_string(),
    };
    test_config(brokers)
        .replace("[engine]\nworkers = 2\n", &engine)
        .replace("citybrain-test", group)
        .replace("127.0.0.1:0", &format!("127.0.0.1:{http_port}"))
}

const CHILD_ENV: &str = "CITYBRAIN_CLUSTER_CHILD";

/// Not a test on its own: one process of the cluster. `CITYBRAIN_CLUSTER_CHILD` holds
/// `brokers\ndir\nprocess\nhostfile\nhttp port`. Exits when the engine stops: 0 when it
/// stopped cleanly, 3 (the error on stderr) when it failed.
#[test]
fn cluster_process() {
    let Ok(spec) = std::env::var(CHILD_ENV) else {
        return;
    };
    let parts: Vec<&str> = spec.split('\n').collect();
    let [brokers, dir, process, hostfile, port] = parts[..] else {
        panic!("bad {CHILD_ENV}: {spec}");
    };
    let _ = tracing_subscriber::fmt()
        .with_env_filter("info,librdkafka=warn")
        .with_writer(std::io::stderr)
        .try_init();
    let process: usize = process.parse().expect("process");
    let port: u16 = port.parse().expect("port");
    let config = config(
        brokers,
        Some((process, Path::new(hostfile))),
        port,
        "citybrain-cluster",
    );
    let engine = start_engine(
        Path::new(dir),
        &config,
        &rules(),
        Box::new(|_: &AlertTransition| {}),
    );
    while !engine.stopping() {
        std::thread::sleep(Duration::from_millis(50));
    }
    match engine.wait() {
        Ok(()) => std::process::exit(0),
        Err(error) => {
            eprintln!("engine failed: {error}");
            std::process::exit(3)
        }
    }
}

/// Starts process `process` of the cluster, its stderr to `dir/stderr`.
fn spawn(kafka: &MockKafka, dir: &Path, process: usize, hostfile: &Path, port: u16) -> Child {
    let stderr = std::fs::File::create(dir.join("stderr")).expect("stderr file");
    Command::new(std::env::current_exe().expect("test binary"))
        .args([
            "--exact",
            "cluster_mode::cluster_process",
            "--test-threads=1",
        ])
        .env(
            CHILD_ENV,
            format!(
                "{}\n{}\n{process}\n{}\n{port}",
                kafka.brokers,
                dir.display(),
                hostfile.display()
            ),
        )
        .stdout(stderr.try_clone().expect("stderr file"))
        .stderr(stderr)
        .spawn()
        .expect("spawn a cluster process")
}

fn logged(dir: &Path) -> Vec<AlertTransition> {
    std::fs::read_to_string(dir.join("alerts.jsonl"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// One transition as compared: (rule, entity, state, event time, value, labels).
type Summary = (String, String, String, u64, String, String);

/// The transitions decided by the data, sorted: those at or before `last_event`. Later ones
/// (every sensor falling silent after the data ends) depend on how far wall-clock idleness
/// has moved event time on when a run is read.
fn summary(transitions: &[AlertTransition], last_event: u64) -> Vec<Summary> {
    let mut out: Vec<_> = transitions
        .iter()
        .filter(|t| t.event_time <= last_event)
        .map(|t| {
            (
                t.rule.clone(),
                t.entity.clone(),
                t.state.as_str().to_string(),
                t.event_time,
                format!("{}", t.value),
                format!("{:?}", t.labels),
            )
        })
        .collect();
    out.sort();
    out
}

/// The KPIs whose values do not depend on how far wall-clock idleness moved event time on,
/// from the first snapshot on `port` complete past `last_event` (every reading reflected);
/// waits up to 60 s for it.
fn settled_kpis(port: u16, last_event: u64) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (status, body) = http_get(
            std::net::SocketAddr::from(([127, 0, 0, 1], port)),
            "/api/kpis",
        );
        assert_eq!(status, 200, "{body}");
        let snapshot: Value = serde_json::from_str(&body).expect("json");
        if snapshot["time"].as_u64().is_some_and(|t| t > last_event) {
            let values = &snapshot["values"];
            return serde_json::json!({
                "max_ch4_per_face": values["max_ch4_per_face"],
                "faces_in_alarm": values["faces_in_alarm"],
            });
        }
        assert!(
            Instant::now() < deadline,
            "KPIs on port {port} never complete past {last_event}: {body}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Polls `done` every 200 ms for up to `limit`.
fn eventually(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(Instant::now() < deadline, "timed out: {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn two_processes_of_two_workers_equal_one_process_of_one_worker() {
    let (mm116, mm31) = methane_columns();
    let kafka = MockKafka::new(&TOPICS);
    produce_methane(&kafka, &mm116, &mm31, 0..GAP.start);
    produce_methane(&kafka, &mm116, &mm31, GAP.end..mm116.len());
    let requests = requests();
    produce_la311(&kafka, &requests[..REQUESTS]);

    // The reference: one process, one worker.
    let single_port = free_port();
    let single = TestEngine::start(
        &config(&kafka.brokers, None, single_port, "citybrain-single"),
        &rules(),
    );
    let mut last = (0, Instant::now());
    eventually(
        "the single engine settles",
        Duration::from_secs(240),
        || {
            let n = single.transitions().len();
            if n != last.0 {
                last = (n, Instant::now());
            }
            n > 0 && last.1.elapsed() > Duration::from_secs(5)
        },
    );
    let last_event = T0 + ROW_MS * (mm116.len() as u64 - 1);
    let single_kpis = settled_kpis(single_port, last_event);
    let (single_log, _) = single.stop();
    let expected = summary(&single_log, last_event);
    assert!(expected.len() > 500, "{} transitions", expected.len());
    for rule in ["ch4-silent", "la311-ladder", "ch4-avg-10m"] {
        let states: BTreeSet<&str> = expected
            .iter()
            .filter(|s| s.0 == rule)
            .map(|s| s.2.as_str())
            .collect();
        assert_eq!(
            states,
            BTreeSet::from(["firing", "resolved"]),
            "{rule} fires and resolves"
        );
    }

    let work = tempfile::tempdir().expect("tempdir");
    let hostfile = work.path().join("hosts");
    std::fs::write(
        &hostfile,
        format!("127.0.0.1:{}\n127.0.0.1:{}\n", free_port(), free_port()),
    )
    .expect("hostfile");
    let dirs = [work.path().join("p0"), work.path().join("p1")];
    let ports = [free_port(), free_port()];
    let mut children: Vec<Child> = Vec::new();
    for (process, dir) in dirs.iter().enumerate() {
        std::fs::create_dir_all(dir).expect("dir");
        children.push(spawn(&kafka, dir, process, &hostfile, ports[process]));
    }
    let union = || {
        let mut by_id: BTreeMap<String, AlertTransition> = BTreeMap::new();
        for dir in &dirs {
            for t in logged(dir) {
                by_id.insert(t.id.clone(), t);
            }
        }
        by_id
    };
    let decided = || summary(&union().into_values().collect::<Vec<_>>(), last_event).len();
    let deadline = Instant::now() + Duration::from_secs(240);
    while decided() < expected.len() {
        if Instant::now() >= deadline {
            let stderr: Vec<String> = dirs
                .iter()
                .map(|d| std::fs::read_to_string(d.join("stderr")).unwrap_or_default())
                .collect();
            for child in &mut children {
                let _ = child.kill();
            }
            panic!(
                "the cluster logged {} of {} transitions ({} and {}); stderr: {stderr:?}",
                decided(),
                expected.len(),
                logged(&dirs[0]).len(),
                logged(&dirs[1]).len()
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    std::thread::sleep(Duration::from_secs(1));
    let logs = [logged(&dirs[0]), logged(&dirs[1])];
    let ids: [BTreeSet<&str>; 2] = [0, 1].map(|i| logs[i].iter().map(|t| t.id.as_str()).collect());
    assert!(
        ids[0].is_disjoint(&ids[1]),
        "a transition logged by both processes"
    );
    assert!(
        !logs[0].is_empty() && !logs[1].is_empty(),
        "both processes own alerts ({} and {})",
        logs[0].len(),
        logs[1].len()
    );
    let all: Vec<AlertTransition> = union().into_values().collect();
    assert_eq!(
        summary(&all, last_event),
        expected,
        "the single process's log"
    );
    // Each process's API serves the whole cluster's KPIs.
    for port in ports {
        assert_eq!(
            settled_kpis(port, last_event),
            single_kpis,
            "the cluster's KPIs on port {port}"
        );
    }

    // Killing one process takes the other down with an error, not a hang.
    children[1].kill().expect("SIGKILL");
    children[1].wait().expect("reaped");
    let killed = Instant::now();
    let status = loop {
        if let Some(status) = children[0].try_wait().expect("status") {
            break status;
        }
        if killed.elapsed() > Duration::from_secs(60) {
            let _ = children[0].kill();
            panic!("the surviving process did not exit within 60 s of its peer's death");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(!status.success(), "exit {status:?}");
    let stderr = std::fs::read_to_string(dirs[0].join("stderr")).unwrap_or_default();
    assert!(
        stderr.contains("the timely cluster failed"),
        "the surviving process says why: {stderr}"
    );
}
