//! `citybrain demo`: the whole engine on an embedded default. An in-process Kafka (librdkafka's
//! mock cluster), the built-in city simulator producing in real time, the engine consuming it
//! with the rules in `config/rules/`, until stopped. Critical alerts are dispatched, signed,
//! to an in-process dispatch unit ([`crate::receiver`]) that checks every signature.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use citybrain_connectors::simulate::{SimulationProducer, SimulationTopics, run_real_time};
use citybrain_connectors::simulator::{Scale, SimStream, Simulator, SimulatorConfig};
use citybrain_model::time::now_millis;
use rdkafka::mocking::MockCluster;

use crate::config::ConfigSecret;
use crate::config::{self, Diagnostics, LoadedConfig};
use crate::receiver::{DemoReceiver, OnRequest, ReceiverError};
use crate::runtime::{self, EngineError, EngineSettings, Status, TransitionCallback};
use citybrain_connectors::dispatch::Secret;

/// The demo's receiver in `config/demo.toml`.
pub const DISPATCH_UNIT: &str = "dispatch-unit";
/// How many requests the demo's dispatch unit lists.
const DISPATCH_UNIT_KEEPS: usize = 50;

/// The demo's engine config.
pub const DEMO_CONFIG: &str = include_str!("../../config/demo.toml");
/// The built-in mine rules.
pub const MINE_RULES: &str = include_str!("../../config/rules/mine.toml");
/// The built-in farm rules.
pub const FARM_RULES: &str = include_str!("../../config/rules/farm.toml");
/// The built-in citizen report rules.
pub const CITIZEN_RULES: &str = include_str!("../../config/rules/citizen.toml");

/// Options of `citybrain demo`.
#[derive(Clone, Debug)]
pub struct DemoOptions {
    /// Stop after this long (default: run until stopped).
    pub duration: Option<Duration>,
    /// Worker threads (default: the demo config's).
    pub workers: Option<usize>,
    /// Simulator seed.
    pub seed: u64,
    /// Simulator scale.
    pub scale: Scale,
    /// Where to serve the wall page and API (default: the demo config's, 127.0.0.1:8080).
    pub http: Option<std::net::SocketAddr>,
}

/// The demo could not run.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// The embedded config or rules are invalid (a build problem).
    #[error("embedded config: {0}")]
    Config(#[from] Diagnostics),
    /// The mock cluster failed.
    #[error("in-process kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    /// The engine failed.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// The simulator thread failed.
    #[error("simulator: {0}")]
    Simulator(String),
    /// The dispatch unit could not start.
    #[error(transparent)]
    Receiver(#[from] ReceiverError),
}

/// Where the running demo serves.
#[derive(Clone, Debug)]
pub struct DemoAddresses {
    /// The wall page and API, when served.
    pub http: Option<std::net::SocketAddr>,
    /// The dispatch unit (`GET /` lists the last requests, `POST /hook` takes webhooks).
    pub dispatch_unit: std::net::SocketAddr,
}

/// A signing secret for one demo run: 32 random bytes as hex.
fn fresh_secret() -> String {
    hex::encode(rand::random::<[u8; 32]>())
}

/// Points the demo config's dispatch unit at `url` with `secret`, its alert log in `dir`.
fn use_dispatch_unit(loaded: &mut LoadedConfig, url: &str, secret: &str, dir: &Path) {
    let dispatch = &mut loaded.config.dispatch;
    dispatch.dir = dir.to_path_buf();
    if let Some(unit) = dispatch.receivers.get_mut(DISPATCH_UNIT) {
        unit.url = Some(url.to_string());
        unit.secret = Some(ConfigSecret(secret.to_string()));
    }
}

/// Partitions per topic in the demo's broker.
const DEMO_TOPICS: [(&str, i32); 8] = [
    ("mine.readings", 4),
    ("farm.readings", 2),
    ("citizen.reports", 2),
    ("registry.sensors", 1),
    ("registry.devices", 1),
    ("registry.grids", 1),
    ("alerts", 1),
    ("dead-letters", 1),
];

/// A few broken messages the demo sends at start, so the dead-letter path shows.
fn broken_messages() -> Vec<(SimStream, &'static str, &'static [u8])> {
    vec![
        (
            SimStream::Mine,
            "bad-1",
            b"{\"sensor\": \"jungar-1/face-1/ch4-upper\", \"ts\": ",
        ),
        (
            SimStream::Mine,
            "bad-2",
            br#"{"sensor":"x","ts":1,"metric":"radon","value":1}"#,
        ),
        (
            SimStream::Farm,
            "bad-3",
            br#"{"device":"gh-1/soil","ts":"soon","metric":"soil_water","value":20}"#,
        ),
    ]
}

/// The demo's loaded config with `brokers` filled in.
pub fn demo_config(
    brokers: &str,
    workers: Option<usize>,
    http: Option<std::net::SocketAddr>,
) -> Result<LoadedConfig, Diagnostics> {
    let mut config = config::load_str(Path::new("config/demo.toml"), DEMO_CONFIG)?;
    config.kafka.brokers = Some(brokers.to_string());
    if let Some(workers) = workers {
        config.engine.workers = workers;
    }
    if let Some(http) = http {
        config.http.bind = http;
    }
    let mut rules = config::load_rules_str(Path::new("config/rules/mine.toml"), MINE_RULES)?;
    rules.extend(config::load_rules_str(
        Path::new("config/rules/farm.toml"),
        FARM_RULES,
    )?);
    rules.extend(config::load_rules_str(
        Path::new("config/rules/citizen.toml"),
        CITIZEN_RULES,
    )?);
    Ok(LoadedConfig {
        config,
        rules,
        base_dir: std::env::current_dir().unwrap_or_default(),
    })
}

/// Runs the demo until `stop` is set or the duration passes. `on_status` is called every
/// status interval; `on_transition` for every alert transition; `on_dispatched` for every
/// request the dispatch unit gets.
pub fn run(
    options: &DemoOptions,
    stop: Arc<AtomicBool>,
    on_transition: TransitionCallback,
    on_dispatched: OnRequest,
    on_started: impl FnOnce(&DemoAddresses),
    mut on_status: impl FnMut(&Status, &[String]),
) -> Result<Status, DemoError> {
    let cluster = MockCluster::new(1)?;
    for (topic, partitions) in DEMO_TOPICS {
        cluster.create_topic(topic, partitions, 1)?;
    }
    let brokers = cluster.bootstrap_servers();
    let mut loaded = demo_config(&brokers, options.workers, options.http)?;
    let secret = fresh_secret();
    let unit = DemoReceiver::start(
        std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
        Secret::from_bytes(secret.as_bytes().to_vec()),
        DISPATCH_UNIT_KEEPS,
        on_dispatched,
    )?;
    // A fresh alert log per run, removed at the end: nothing of an earlier demo is redelivered.
    let state = std::env::temp_dir().join(format!("citybrain-demo-{}", std::process::id()));
    use_dispatch_unit(&mut loaded, &unit.url(), &secret, &state);
    let status_interval = loaded.config.engine.status_interval;

    let mut simulator = Simulator::new(SimulatorConfig {
        seed: options.seed,
        start_ms: now_millis(),
        scale: options.scale,
    });
    let incidents = simulator.incidents();
    let mut producer = SimulationProducer::new(&brokers, SimulationTopics::default())?;
    for (stream, key, payload) in broken_messages() {
        producer.send(stream, key, payload)?;
    }
    let sim_stop = Arc::new(AtomicBool::new(false));
    let simulation = {
        let sim_stop = Arc::clone(&sim_stop);
        std::thread::Builder::new()
            .name("citybrain-simulator".into())
            .spawn(move || run_real_time(&mut simulator, &mut producer, 1.0, &sim_stop))
            .map_err(|e| DemoError::Simulator(e.to_string()))?
    };

    let mut settings = EngineSettings::from_config(&loaded)?;
    // The demo's rules are embedded in the binary: there are no files to watch or reload.
    settings.reload.source = crate::reload::RuleSource::Fixed;
    settings.reload.watch = false;
    let engine = runtime::start(settings, loaded.rules.clone(), on_transition)?;
    on_started(&DemoAddresses {
        http: engine.http_addr(),
        dispatch_unit: unit.addr,
    });
    let started = Instant::now();
    let mut next_status = started + status_interval;
    while !stop.load(Ordering::Relaxed) && !engine.stopping() {
        if options.duration.is_some_and(|d| started.elapsed() >= d) {
            break;
        }
        if Instant::now() >= next_status {
            on_status(&engine.status(), &incidents);
            next_status += status_interval;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let status = engine.status();
    engine.stop();
    sim_stop.store(true, Ordering::SeqCst);
    let engine_result = engine.wait();
    let simulation_result = simulation.join();
    unit.shutdown();
    if let Err(error) = std::fs::remove_dir_all(&state) {
        tracing::debug!(%error, dir = %state.display(), "demo dispatch state not removed");
    }
    engine_result?;
    match simulation_result {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(DemoError::Simulator(e.to_string())),
        Err(_) => return Err(DemoError::Simulator("simulator thread panicked".into())),
    }
    drop(cluster);
    Ok(status)
}
