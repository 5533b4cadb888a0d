//! citybrain's integration tests live in `tests/tests/`; this library is their shared harness:
//! an in-process Kafka (librdkafka's mock cluster), an engine started on it with a config and
//! rules given as TOML text, and readers for the real data sets in `../shared/data/`.

#![allow(clippy::expect_used)] // a test harness: failing loudly is its job

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use citybrain_connectors::dead_letter::DeadLetter;
use citybrain_engine::config::{self, LoadedConfig};
use citybrain_engine::reload::RuleSource;
use citybrain_engine::runtime::{self, Engine, EngineSettings};
use citybrain_model::AlertTransition;
use citybrain_operators::rule::RuleRow;
use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};

pub mod watchdog;

/// The topics every engine test uses, with their partition counts.
pub const TOPICS: [(&str, i32); 8] = [
    ("mine.readings", 2),
    ("farm.readings", 1),
    ("citizen.reports", 1),
    ("registry.sensors", 1),
    ("registry.devices", 1),
    ("registry.grids", 1),
    ("alerts", 1),
    ("dead-letters", 1),
];

/// A Kafka cluster for tests, with a producer: librdkafka's in-process mock cluster
/// ([`MockKafka::new`]) or a real broker process, tansu ([`MockKafka::tansu`]).
pub struct MockKafka {
    _cluster: Option<MockCluster<'static, DefaultProducerContext>>,
    _tansu: Option<Tansu>,
    /// `bootstrap.servers` of the cluster.
    pub brokers: String,
    producer: ThreadedProducer<DefaultProducerContext>,
}

impl MockKafka {
    /// Starts a one-broker cluster with `topics` created.
    pub fn new(topics: &[(&str, i32)]) -> Self {
        watchdog::watch_this_test();
        let cluster = MockCluster::new(1).expect("mock cluster");
        for (topic, partitions) in topics {
            cluster
                .create_topic(topic, *partitions, 1)
                .expect("create topic");
        }
        let brokers = cluster.bootstrap_servers();
        MockKafka {
            _cluster: Some(cluster),
            _tansu: None,
            producer: producer(&brokers),
            brokers,
        }
    }

    /// Starts a tansu broker process on a free port of 127.0.0.1 with `topics` created (tansu
    /// does not create topics on first use). `scripts/install-test-deps.sh` installs tansu.
    pub fn tansu(topics: &[(&str, i32)]) -> Self {
        watchdog::watch_this_test();
        let tansu = Tansu::start(topics);
        let brokers = tansu.brokers.clone();
        MockKafka {
            _cluster: None,
            _tansu: Some(tansu),
            producer: producer(&brokers),
            brokers,
        }
    }

    /// The in-process mock cluster, to inject faults (`None` on tansu).
    pub fn mock_cluster(&self) -> Option<&MockCluster<'static, DefaultProducerContext>> {
        self._cluster.as_ref()
    }

    /// Sends `signal` (`"STOP"`, `"CONT"`) to the tansu broker process: a stopped broker
    /// keeps its data and connections but answers nothing, as a hung or partitioned one.
    /// Panics on the mock cluster (use [`MockKafka::mock_cluster`] there).
    pub fn signal_broker(&self, signal: &str) {
        let tansu = self._tansu.as_ref().expect("a tansu broker");
        let status = std::process::Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(tansu.child.id().to_string())
            .status()
            .expect("kill");
        assert!(status.success(), "kill -{signal}: {status}");
    }

    /// Produces one message (a `None` payload is a tombstone).
    pub fn produce(&self, topic: &str, key: Option<&str>, payload: Option<&[u8]>) {
        let mut record: BaseRecord<'_, str, [u8]> = BaseRecord::to(topic);
        if let Some(key) = key {
            record = record.key(key);
        }
        if let Some(payload) = payload {
            record = record.payload(payload);
        }
        self.send(record);
    }

    /// Produces one message to partition `partition` of `topic`.
    pub fn produce_to(&self, topic: &str, partition: i32, key: &str, payload: &[u8]) {
        let record: BaseRecord<'_, str, [u8]> = BaseRecord::to(topic)
            .partition(partition)
            .key(key)
            .payload(payload);
        self.send(record);
    }

    /// Queues `record`, waiting while the producer's queue is full.
    fn send(&self, mut record: BaseRecord<'_, str, [u8]>) {
        loop {
            match self.producer.send(record) {
                Ok(()) => return,
                Err((_, returned)) => {
                    record = returned;
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
        }
    }

    /// Waits until everything produced is acknowledged.
    pub fn flush(&self) {
        self.producer.flush(Duration::from_secs(30)).expect("flush");
    }

    /// Reads every message of `topic` (from the beginning) as (key, value) strings.
    pub fn read_all(&self, topic: &str) -> Vec<(String, String)> {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &self.brokers)
            .set("group.id", "citybrain-test-reader")
            .set("auto.offset.reset", "earliest")
            .create()
            .expect("consumer");
        let (low, high) = consumer
            .fetch_watermarks(topic, 0, Duration::from_secs(10))
            .expect("watermarks");
        let mut list = rdkafka::TopicPartitionList::new();
        list.add_partition_offset(topic, 0, rdkafka::Offset::Offset(low))
            .expect("partition");
        consumer.assign(&list).expect("assign");
        let mut out = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        while (out.len() as i64) < high - low && Instant::now() < deadline {
            if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
                let text =
                    |b: Option<&[u8]>| String::from_utf8_lossy(b.unwrap_or_default()).into_owned();
                out.push((text(m.key()), text(m.payload())));
            }
        }
        out
    }
}

/// A producer that keeps each partition in the order messages were sent, also when a request
/// fails and is retried: without idempotence librdkafka retries a failed batch after later
/// batches were appended, which reorders the partition (a batch of 10,000 readings behind newer
/// ones, far beyond any allowed lateness). Sensor gateways must do the same.
fn producer(brokers: &str) -> ThreadedProducer<DefaultProducerContext> {
    ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("linger.ms", "1")
        .set("enable.idempotence", "true")
        // Load benches queue whole backlogs at once.
        .set("queue.buffering.max.messages", "1000000")
        .create()
        .expect("producer")
}

/// A port of 127.0.0.1 nothing listens on now, for a server another process (or a later
/// step) binds. It lies below the kernel's ephemeral range (32768 and up on Linux), so no
/// socket bound to port 0 meanwhile, by this test or any other running beside it, can take
/// it (regression: a cluster test failed with "Address already in use" after such a port,
/// released by the test, was handed to another test's connection).
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU16, Ordering};
    const FIRST: u16 = 20_000;
    const SPAN: u16 = 12_000;
    static NEXT: AtomicU16 = AtomicU16::new(0);
    // A start that differs between the test processes running at once.
    let start = std::process::id();
    for _ in 0..SPAN {
        let step = u32::from(NEXT.fetch_add(7, Ordering::Relaxed));
        let offset = (start.wrapping_add(step) % u32::from(SPAN)) as u16;
        let port = FIRST + offset;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port in {FIRST}..{}", FIRST + SPAN);
}

/// A tansu broker process (in-memory storage), killed when dropped.
struct Tansu {
    child: std::process::Child,
    brokers: String,
}

impl Tansu {
    /// The tansu executable: `$TANSU`, else `tansu` in cargo's bin directory, else on `PATH`.
    fn executable() -> PathBuf {
        if let Some(path) = std::env::var_os("TANSU") {
            return PathBuf::from(path);
        }
        let cargo_home = std::env::var_os("CARGO_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")));
        match cargo_home.map(|h| h.join("bin/tansu")) {
            Some(path) if path.exists() => path,
            _ => PathBuf::from("tansu"),
        }
    }

    fn start(topics: &[(&str, i32)]) -> Self {
        let port = free_port();
        let url = format!("tcp://127.0.0.1:{port}");
        let exe = Self::executable();
        let child = std::process::Command::new(&exe)
            .args(["broker", "--storage-engine", "memory://tansu/"])
            .args(["--listener-url", &url, "--advertised-listener-url", &url])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start {} ({e}): run scripts/install-test-deps.sh",
                    exe.display()
                )
            });
        let tansu = Tansu {
            child,
            brokers: format!("127.0.0.1:{port}"),
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "tansu did not listen on {url}");
            std::thread::sleep(Duration::from_millis(50));
        }
        for (topic, partitions) in topics {
            let status = std::process::Command::new(&exe)
                .args(["topic", "create", topic, "--partitions"])
                .arg(partitions.to_string())
                .args(["--broker", &url])
                .stdout(std::process::Stdio::null())
                .status()
                .expect("tansu topic create");
            assert!(status.success(), "tansu topic create {topic}: {status}");
        }
        tansu
    }
}

impl Drop for Tansu {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An engine running on a [`MockKafka`], collecting its transitions.
pub struct TestEngine {
    engine: Option<Engine>,
    transitions: Arc<Mutex<Vec<AlertTransition>>>,
    /// Holds the engine's output files.
    pub dir: tempfile::TempDir,
}

/// The engine config tests use: short lateness and idle timeout, JSONL and topic outputs.
pub fn test_config(brokers: &str) -> String {
    format!(
        r#"
[engine]
workers = 2

[kafka]
brokers = "{brokers}"
group_id = "citybrain-test"

[sources.mine]
allowed_lateness = "100ms"
idle_timeout = "200ms"

[sources.farm]
allowed_lateness = "100ms"
idle_timeout = "200ms"

[registry]
load_timeout = "10s"

[http]
bind = "127.0.0.1:0"

[outputs]
alerts_topic = "alerts"
alerts_file = "alerts.jsonl"
dead_letter_topic = "dead-letters"
dead_letter_file = "dead-letters.jsonl"
"#
    )
}

impl TestEngine {
    /// Starts an engine with the config and rules given as TOML text; output files go to a
    /// fresh temporary directory. The rules are fixed (nothing to watch or reload).
    pub fn start(config_toml: &str, rules_toml: &str) -> Self {
        Self::start_in(
            tempfile::tempdir().expect("tempdir"),
            config_toml,
            rules_toml,
        )
    }

    /// Stops this engine (cleanly) and starts a new one on the same output directory, as an
    /// operator restarting the process would.
    pub fn restart(mut self, config_toml: &str, rules_toml: &str) -> Self {
        if let Some(engine) = self.engine.take() {
            engine.stop();
            engine.wait().expect("engine ran cleanly");
        }
        let dir = std::mem::replace(&mut self.dir, tempfile::tempdir().expect("tempdir"));
        Self::start_in(dir, config_toml, rules_toml)
    }

    fn start_in(dir: tempfile::TempDir, config_toml: &str, rules_toml: &str) -> Self {
        let (settings, rules) = fixed_rules(dir.path(), config_toml, rules_toml);
        Self::launch(dir, settings, rules)
    }

    /// Starts an engine with the config given as TOML text and rule files written to a fresh
    /// temporary directory (`(name, text)`, listed in `[rules] files`, which is appended to
    /// the config): rule reload watches them as in production. The audit log is
    /// `citybrain-audit.jsonl` there unless the config says otherwise.
    pub fn start_with_rule_files(config_toml: &str, files: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        for (name, text) in files {
            write_file(&dir.path().join(name), text);
        }
        let names: Vec<String> = files.iter().map(|(name, _)| format!("{name:?}")).collect();
        let config_toml = format!("{config_toml}\n[rules]\nfiles = [{}]\n", names.join(", "));
        let config = config::load_str(Path::new("test.toml"), &config_toml)
            .unwrap_or_else(|d| panic!("config: {d}"));
        let mut loaded = LoadedConfig {
            config,
            rules: Vec::new(),
            base_dir: dir.path().to_path_buf(),
        };
        loaded.rules =
            config::load_rule_files(&loaded.rule_files()).unwrap_or_else(|d| panic!("rules: {d}"));
        let settings = EngineSettings::from_config(&loaded).expect("settings");
        Self::launch(dir, settings, loaded.rules)
    }

    fn launch(dir: tempfile::TempDir, settings: EngineSettings, rules: Vec<RuleRow>) -> Self {
        watchdog::watch_this_test();
        let transitions = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&transitions);
        let engine = runtime::start(
            settings,
            rules,
            Box::new(move |t: &AlertTransition| {
                sink.lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push(t.clone())
            }),
        )
        .expect("engine start");
        TestEngine {
            engine: Some(engine),
            transitions,
            dir,
        }
    }

    /// The running engine.
    pub fn engine(&self) -> &Engine {
        self.engine.as_ref().expect("engine running")
    }

    /// The transitions so far.
    pub fn transitions(&self) -> Vec<AlertTransition> {
        self.transitions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Waits until `done` holds for the transitions so far (or `timeout` passes); returns them.
    pub fn wait_until(
        &self,
        timeout: Duration,
        done: impl Fn(&[AlertTransition], u64) -> bool,
    ) -> Vec<AlertTransition> {
        let deadline = Instant::now() + timeout;
        loop {
            let now = self.transitions();
            let dead = self.engine.as_ref().map_or(0, |e| e.status().dead_letters);
            if done(&now, dead) || Instant::now() >= deadline {
                return now;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops the engine and returns everything it wrote: (alerts file, dead-letter file).
    pub fn stop(mut self) -> (Vec<AlertTransition>, Vec<DeadLetter>) {
        if let Some(engine) = self.engine.take() {
            engine.stop();
            engine.wait().expect("engine ran cleanly");
        }
        let alerts = read_jsonl(&self.dir.path().join("alerts.jsonl"));
        let dead = read_jsonl(&self.dir.path().join("dead-letters.jsonl"));
        (alerts, dead)
    }
}

impl Drop for TestEngine {
    fn drop(&mut self) {
        if let Some(engine) = self.engine.take() {
            engine.stop();
            let _ = engine.wait();
        }
    }
}

/// Engine settings and rules of the config and rules given as TOML text, output files in `dir`;
/// the rules are fixed (nothing to watch or reload).
fn fixed_rules(dir: &Path, config_toml: &str, rules_toml: &str) -> (EngineSettings, Vec<RuleRow>) {
    let config = config::load_str(Path::new("test.toml"), config_toml)
        .unwrap_or_else(|d| panic!("config: {d}"));
    let rules = config::load_rules_str(Path::new("rules.toml"), rules_toml)
        .unwrap_or_else(|d| panic!("rules: {d}"));
    let loaded = LoadedConfig {
        config,
        rules,
        base_dir: dir.to_path_buf(),
    };
    let mut settings = EngineSettings::from_config(&loaded).expect("settings");
    settings.reload.source = RuleSource::Fixed;
    settings.reload.watch = false;
    (settings, loaded.rules)
}

/// Starts an engine with the config and rules given as TOML text, output files in `dir`.
pub fn start_engine(
    dir: &Path,
    config_toml: &str,
    rules_toml: &str,
    on_transition: runtime::TransitionCallback,
) -> Engine {
    let (settings, rules) = fixed_rules(dir, config_toml, rules_toml);
    runtime::start(settings, rules, on_transition).expect("engine start")
}

/// The engine process of a kill test: when `env` is set to `brokers\ndir`, runs an engine
/// with `config(brokers)` and `rules`, outputs in `dir`, until the process is killed;
/// otherwise returns at once (run as an ordinary test, it does nothing).
pub fn engine_child(env: &str, config: impl Fn(&str) -> String, rules: &str) {
    let Ok(spec) = std::env::var(env) else {
        return;
    };
    let (brokers, dir) = spec.split_once('\n').expect("brokers\\ndir");
    let _engine = start_engine(
        Path::new(dir),
        &config(brokers),
        rules,
        Box::new(|_: &AlertTransition| {}),
    );
    loop {
        std::thread::sleep(Duration::from_secs(60));
    }
}

/// Starts this test binary again running only the test `name` (an [`engine_child`]) with
/// `env` set to `brokers\ndir`; its output is discarded.
pub fn spawn_engine_child(name: &str, env: &str, brokers: &str, dir: &Path) -> std::process::Child {
    std::process::Command::new(std::env::current_exe().expect("test binary"))
        .args(["--exact", name, "--test-threads=1"])
        .env(env, format!("{brokers}\n{}", dir.display()))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn the engine")
}

/// Writes `text` to `path` at once (a temporary file renamed over it, as editors save), creating
/// its directory.
pub fn write_file(path: &Path, text: &str) {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).expect("create dir");
    }
    let temporary = path.with_extension("tmp-write");
    std::fs::write(&temporary, text).expect("write");
    std::fs::rename(&temporary, path).expect("rename");
}

/// Reads an HTTP/1.1 response to its end (the request said `Connection: close`): (status, body).
fn read_response(stream: &mut std::net::TcpStream) -> (u16, String) {
    use std::io::Read;
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("read");
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let chunked = head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked");
    (
        status,
        if chunked {
            dechunk(body)
        } else {
            body.to_string()
        },
    )
}

/// A fixed-seed pseudo-random generator (64-bit LCG), so a test's random choices reproduce.
pub struct SeededRandom(pub u64);

impl SeededRandom {
    fn step(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        self.0 >> 33
    }

    /// A value in `low..high`.
    pub fn between(&mut self, low: u64, high: u64) -> u64 {
        low + self.step() % (high - low)
    }
}

/// Reads a JSONL file (missing file: empty).
pub fn read_jsonl<T: serde::de::DeserializeOwned>(path: &Path) -> Vec<T> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{}: {e}: {l}", path.display())))
        .collect()
}

/// `../shared/data` next to the repository (or `$CITYBRAIN_SHARED_DATA`).
pub fn shared_data() -> PathBuf {
    if let Ok(dir) = std::env::var("CITYBRAIN_SHARED_DATA") {
        return PathBuf::from(dir);
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/data")
}

/// One numeric column of an ARFF file's `@DATA` rows, by attribute name.
pub fn arff_column(path: &Path, name: &str) -> Vec<f64> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut index = None;
    let mut attributes = 0;
    let mut values = Vec::new();
    let mut in_data = false;
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('%') {
            continue;
        }
        if !in_data {
            let lower = line.to_ascii_lowercase();
            if lower.starts_with("@attribute") {
                if line.split_whitespace().nth(1).map(|n| n.trim_matches('\'')) == Some(name) {
                    index = Some(attributes);
                }
                attributes += 1;
            } else if lower.starts_with("@data") {
                in_data = true;
            }
            continue;
        }
        let column = index.unwrap_or_else(|| panic!("no attribute {name}"));
        let field = line
            .split(',')
            .nth(column)
            .unwrap_or_else(|| panic!("short row {line}"));
        values.push(
            field
                .trim()
                .parse()
                .unwrap_or_else(|e| panic!("{field}: {e}")),
        );
    }
    values
}

/// A plain HTTP/1.1 GET against the engine (no client library needed): (status, body).
pub fn http_get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    use std::io::Write;
    let mut stream = std::net::TcpStream::connect(addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .expect("send");
    read_response(&mut stream)
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let size = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if size == 0 || rest.len() < size {
            break;
        }
        out.push_str(&rest[..size]);
        body = rest[size..].trim_start_matches("\r\n");
    }
    out
}

impl TestEngine {
    /// The address the engine's HTTP server listens on.
    pub fn http_addr(&self) -> std::net::SocketAddr {
        self.engine
            .as_ref()
            .and_then(|e| e.http_addr())
            .expect("http server running")
    }
}

/// A bare producer for a cluster started elsewhere (e.g. from another thread).
pub struct TestProducer {
    producer: ThreadedProducer<DefaultProducerContext>,
}

impl TestProducer {
    /// Connects to `brokers`.
    pub fn new(brokers: &str) -> Self {
        TestProducer {
            producer: producer(brokers),
        }
    }

    /// Produces one keyed message and waits for it to be acknowledged.
    pub fn produce(&self, topic: &str, key: &str, payload: &[u8]) {
        let record: BaseRecord<'_, str, [u8]> = BaseRecord::to(topic).key(key).payload(payload);
        self.producer
            .send(record)
            .map_err(|(e, _)| e)
            .expect("send");
        self.producer.flush(Duration::from_secs(10)).expect("flush");
    }
}

/// A plain HTTP/1.1 request with extra headers and a body: (status, body).
pub fn http_request(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String) {
    use std::io::Write;
    let mut stream = std::net::TcpStream::connect(addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    request.push_str(body);
    stream.write_all(request.as_bytes()).expect("send");
    read_response(&mut stream)
}
