//! The running engine: timely workers that each own a Kafka consumer for their share of the
//! partitions and feed the dataflow, plus one output thread that writes alert transitions and
//! dead letters to their sinks.
//!
//! Each worker loop: poll a batch of messages, send readings into the `readings` collection at
//! their event time, registry changes into `registry`, dead letters to the output thread;
//! recompute the watermarks and advance the inputs to them; step the dataflow; when Kafka had
//! nothing new, park until the dataflow has work again, a reading partition receives messages
//! (librdkafka wakes the worker) or 1 ms passes. Watermarks are
//! shared between the workers of this process so a worker whose partitions are idle follows
//! the others instead of holding the frontier back.
//!
//! Nothing acknowledged is lost: worker 0 reports the alert output frontier of each clock to
//! the output thread, which every `commit_interval` makes its outputs durable and publishes the
//! frontier as durable; the workers then commit offsets up to that frontier minus the rules'
//! history ([`citybrain_connectors::commit`]). A restart re-reads from there and
//! [`RecoveredAlerts`] leaves out what the alert log already holds.
//!
//! With a lease (`[kafka] lease_topic`, [`citybrain_connectors::lease`]) the output thread first
//! waits until this engine holds it, reads the shared alerts topic into [`RecoveredAlerts`] and
//! the firing seed, and only then lets the workers build the dataflow and consume
//! (`take_over`); a standby serves HTTP and reads nothing.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, channel};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use citybrain_connectors::closing::ClosedWithin;
use citybrain_connectors::dead_letter::{DeadLetter, Origin};
use citybrain_connectors::kafka::{
    Clock, KafkaSource, SourceConfig, SourceEvent, StreamKind, TopicSpec,
};
use citybrain_connectors::lease::{Lease, LeaseConfig};
use citybrain_connectors::sink::{DurableRequest, OutputConfig, Outputs, SinkError};
use citybrain_model::time::now_millis;
use citybrain_model::{AlertTransition, DeadLetterReason, RegistryKind, ReportKind};
use citybrain_operators::Time;
use citybrain_operators::hysteresis::FiringSeed;
use citybrain_operators::kpi::KpiDef;
use citybrain_operators::ordered_float::OrderedFloat;
use citybrain_operators::report_state::UnknownReportEvent;
use citybrain_operators::rule::RuleRow;
use citybrain_operators::stall::PartitionRow;
use hdrhistogram::Histogram;

use crate::board::{AlertBoard, LiveStatus};
use crate::config::LoadedConfig;
use crate::config::RecoveryConfig;
use crate::dataflow::Output;
use crate::health::Health;
use crate::http::{HttpServer, HttpState};
use crate::kpi::{KpiClock, KpiStores};
use crate::metrics::Metrics;
use crate::recovery::RecoveredAlerts;
use crate::reload::{
    FileWatcher, ReloadSettings, ReloadStatus, Reloader, RuleSetDiff, RuleSlot, RuleSource, Trigger,
};
use citybrain_connectors::dispatch::settings::KafkaConnection;
use citybrain_connectors::dispatch::{DispatchSettings, Dispatcher, Submitted};

/// Everything the runtime needs, resolved from the config.
#[derive(Clone, Debug)]
pub struct EngineSettings {
    /// Timely worker threads.
    pub workers: usize,
    /// The Kafka source (worker index and count are filled in per worker).
    pub source: SourceConfig,
    /// Where alerts and dead letters go.
    pub outputs: OutputConfig,
    /// Where to serve HTTP (API, stream, wall page, metrics), if at all.
    pub http: Option<SocketAddr>,
    /// The KPIs to maintain.
    pub kpis: Vec<KpiDef>,
    /// Alert dispatch (webhooks, Kafka receivers), when receivers are configured.
    pub dispatch: Option<DispatchSettings>,
    /// The bearer token of mutating API calls (from `[http] api_token_env`).
    pub api_token: Option<String>,
    /// The bearer token read endpoints require, if any (from `[http] read_token_env`).
    pub read_token: Option<String>,
    /// Offset commits and replay history.
    pub recovery: RecoveryConfig,
    /// Live rule reload: where the rules come from, watching, the audit log.
    pub reload: ReloadSettings,
    /// Take turns with other engines of the group through a lease, if configured.
    pub lease: Option<LeaseConfig>,
    /// This process's place in a timely cluster of several processes, if it is one.
    pub cluster: Option<ClusterSettings>,
}

/// A timely cluster of several processes, each running `workers` threads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterSettings {
    /// This process's index.
    pub process: usize,
    /// Every process's `host:port`, in process order.
    pub addresses: Vec<String>,
}

impl ClusterSettings {
    /// Reads a hostfile: one `host:port` per line (blank lines and `#` comments skipped), which
    /// must name exactly `processes` processes; `process` is this one's index among them
    /// ([`EngineConfig::problems`](crate::config::EngineConfig::problems) checks it).
    pub fn from_hostfile(
        path: &std::path::Path,
        processes: usize,
        process: usize,
    ) -> Result<Self, EngineError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| EngineError::Config(format!("hostfile {}: {e}", path.display())))?;
        let addresses: Vec<String> = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(str::to_string)
            .collect();
        if addresses.len() != processes {
            return Err(EngineError::Config(format!(
                "hostfile {} names {} processes, [engine] processes is {processes}",
                path.display(),
                addresses.len()
            )));
        }
        Ok(ClusterSettings { process, addresses })
    }
}

/// The engine could not start or failed while running.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The config lacks Kafka brokers.
    #[error("no Kafka brokers configured ([kafka] brokers)")]
    NoBrokers,
    /// An output could not be opened or written.
    #[error(transparent)]
    Sink(#[from] SinkError),
    /// timely could not start its workers.
    #[error("timely: {0}")]
    Timely(String),
    /// A worker failed (e.g. the Kafka source could not connect).
    #[error("worker: {0}")]
    Worker(String),
    /// Metrics could not be registered.
    #[error(transparent)]
    Metrics(#[from] crate::metrics::MetricsError),
    /// The HTTP server could not start.
    #[error(transparent)]
    Http(#[from] crate::http::HttpError),
    /// The KPI or dispatch configuration could not be used.
    #[error("config: {0}")]
    Config(String),
    /// Alert dispatch failed.
    #[error("dispatch: {0}")]
    Dispatch(String),
    /// The lease could not be joined.
    #[error(transparent)]
    Lease(#[from] citybrain_connectors::lease::LeaseError),
    /// The rule files could not be watched.
    #[error(transparent)]
    Watch(#[from] crate::reload::WatchError),
}

impl EngineSettings {
    /// Resolves the settings of a loaded config; paths are relative to the config's directory.
    pub fn from_config(loaded: &LoadedConfig) -> Result<Self, EngineError> {
        let config = &loaded.config;
        let problems = config.engine.problems();
        if !problems.is_empty() {
            let messages: Vec<String> = problems.into_iter().map(|p| p.message).collect();
            return Err(EngineError::Config(messages.join("; ")));
        }
        let brokers = config.kafka.brokers.clone().ok_or(EngineError::NoBrokers)?;
        let properties: Vec<(String, String)> = config
            .kafka
            .properties
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let mut topics = Vec::new();
        for (kind, source) in [
            (StreamKind::Mine, &config.sources.mine),
            (StreamKind::Farm, &config.sources.farm),
            (StreamKind::Citizen, &config.sources.citizen),
        ] {
            topics.push(TopicSpec {
                topic: source.topic.clone(),
                kind,
                allowed_lateness: source.allowed_lateness,
                idle_timeout: source.idle_timeout,
                max_message_bytes: source.max_message_bytes,
                max_future: source.max_future,
                max_partition_skew: source.max_partition_skew,
            });
        }
        for (kind, topic) in [
            (RegistryKind::Sensors, &config.registry.sensors),
            (RegistryKind::Devices, &config.registry.devices),
            (RegistryKind::Grids, &config.registry.grids),
        ] {
            topics.push(TopicSpec {
                topic: topic.clone(),
                kind: StreamKind::Registry(kind),
                allowed_lateness: Duration::ZERO,
                idle_timeout: Duration::ZERO,
                max_message_bytes: config.sources.mine.max_message_bytes,
                max_future: Duration::MAX,
                max_partition_skew: Duration::MAX,
            });
        }
        let relative = |p: &std::path::PathBuf| loaded.base_dir.join(p);
        Ok(EngineSettings {
            workers: config.engine.workers.max(1),
            source: SourceConfig {
                brokers: brokers.clone(),
                group_id: config.kafka.group_id.clone(),
                properties: properties.clone(),
                topics,
                registry_load_timeout: config.registry.load_timeout,
                worker_index: 0,
                workers: 1,
                commit_granularity: Duration::from_secs(1),
                end_offsets_refresh: config.kafka.end_offsets_refresh,
            },
            outputs: OutputConfig {
                brokers: Some(brokers.clone()),
                properties: properties.clone(),
                alerts_topic: config.outputs.alerts_topic.clone(),
                alerts_file: config.outputs.alerts_file.as_ref().map(relative),
                dead_letter_topic: config.outputs.dead_letter_topic.clone(),
                dead_letter_file: config.outputs.dead_letter_file.as_ref().map(relative),
            },
            http: config.http.enabled.then_some(config.http.bind),
            recovery: config.recovery.clone(),
            lease: config.kafka.lease_topic.as_ref().map(|topic| LeaseConfig {
                brokers: brokers.clone(),
                group_id: config.kafka.group_id.clone(),
                topic: topic.clone(),
                properties: properties.clone(),
            }),
            cluster: match &config.engine.hostfile {
                Some(hostfile) if config.engine.processes > 1 => {
                    Some(ClusterSettings::from_hostfile(
                        &loaded.resolve(hostfile),
                        config.engine.processes,
                        config.engine.process_id,
                    )?)
                }
                _ => None,
            },
            kpis: load_kpis(loaded)?,
            reload: ReloadSettings {
                source: RuleSource::Files(loaded.rule_files()),
                watch: config.reload.watch,
                debounce: config.reload.debounce,
                audit_log: Some(loaded.audit_log()),
            },
            api_token: std::env::var(&config.http.api_token_env)
                .ok()
                .filter(|t| !t.is_empty()),
            read_token: match &config.http.read_token_env {
                Some(name) => Some(
                    std::env::var(name)
                        .ok()
                        .filter(|t| !t.is_empty())
                        .ok_or_else(|| {
                            EngineError::Config(format!(
                                "[http] read_token_env names `{name}`, which holds no token"
                            ))
                        })?,
                ),
                None => None,
            },
            dispatch: match config.dispatch.is_enabled() {
                true => Some(
                    config
                        .dispatch
                        .to_settings(
                            &loaded.base_dir,
                            Some(KafkaConnection {
                                brokers: brokers.clone(),
                                properties: properties.clone(),
                            }),
                        )
                        .map_err(|e| EngineError::Config(e.to_string()))?,
                ),
                false => None,
            },
        })
    }
}

/// The built-in KPIs (`config/kpis.toml`), used when the config names no KPI files.
pub const BUILT_IN_KPIS: &str = include_str!("../../config/kpis.toml");

/// The KPIs of the config's `[kpis] files`, or the built-in set.
pub fn load_kpis(loaded: &LoadedConfig) -> Result<Vec<KpiDef>, EngineError> {
    let fail = |d: crate::config::Diagnostics| EngineError::Config(d.to_string());
    if loaded.config.kpis.files.is_empty() {
        return crate::config::load_kpis_str(
            std::path::Path::new("config/kpis.toml"),
            BUILT_IN_KPIS,
        )
        .map_err(fail);
    }
    let mut defs = Vec::new();
    for file in &loaded.config.kpis.files {
        let path = loaded.resolve(file);
        let text = std::fs::read_to_string(&path)
            .map_err(|e| EngineError::Config(format!("{}: {e}", path.display())))?;
        defs.extend(crate::config::load_kpis_str(&path, &text).map_err(fail)?);
    }
    Ok(defs)
}

/// A point-in-time summary for the status line.
#[derive(Clone, Debug, Default)]
pub struct Status {
    /// Alerts firing now.
    pub firing: usize,
    /// Transitions emitted since start.
    pub transitions: u64,
    /// Dead letters since start.
    pub dead_letters: u64,
    /// Kafka messages read since start (registry, readings, reports).
    pub events: u64,
    /// Event-time-to-output latency of transitions, milliseconds: (p50, p99, max).
    pub latency_ms: Option<(u64, u64, u64)>,
    /// Sensor-clock watermark, epoch ms.
    pub sensor_watermark: u64,
}

struct Shared {
    stop: AtomicBool,
    watermarks: [AtomicU64; 2],
    /// Per clock: every alert transition before this time is durable in the outputs.
    durable: [AtomicU64; 2],
    failure: Mutex<Option<String>>,
    latency: Mutex<Option<Histogram<u64>>>,
    events: AtomicU64,
    transitions: AtomicU64,
    dead_letters: AtomicU64,
    /// Workers whose registry is loaded and that consume readings.
    loaded: AtomicUsize,
    ready: Arc<AtomicBool>,
    workers: usize,
    board: Arc<AlertBoard>,
    /// Ongoing problems: brokers away, outputs not writable.
    health: Arc<Health>,
    /// The lease this engine takes turns with, if configured.
    lease: Option<Lease>,
    /// Set once the workers may start: at once without a lease, else when it is taken.
    launched: AtomicBool,
}

impl Shared {
    /// Records `error` as the engine's failure unless one came first (what `Engine::wait`
    /// returns) and asks every thread to stop.
    fn fail(&self, error: String) {
        self.failure
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get_or_insert(error);
        self.stop.store(true, Ordering::SeqCst);
    }

    fn latency_quantiles(&self) -> Option<(u64, u64, u64)> {
        self.latency
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .filter(|h| !h.is_empty())
            .map(|h| (h.value_at_quantile(0.5), h.value_at_quantile(0.99), h.max()))
    }

    fn live_status(&self) -> LiveStatus {
        let latency = self.latency_quantiles();
        LiveStatus {
            sensor_watermark: self.watermarks[0].load(Ordering::Relaxed),
            citizen_watermark: self.watermarks[1].load(Ordering::Relaxed),
            events: self.events.load(Ordering::Relaxed),
            dead_letters: self.dead_letters.load(Ordering::Relaxed),
            transitions: self.transitions.load(Ordering::Relaxed),
            latency_p50_ms: latency.map(|l| l.0),
            latency_p99_ms: latency.map(|l| l.1),
            wall_time: now_millis(),
            kafka_away: self.health.kafka_away(),
            outputs_blocked: self.health.outputs_blocked(),
            // Filled in by `with_dispatch` where the dispatcher is at hand.
            receivers_disabled: Vec::new(),
            dispatch_queue: None,
        }
    }
}

/// A running engine.
pub struct Engine {
    shared: Arc<Shared>,
    workers: Option<timely::communication::WorkerGuards<()>>,
    output: Option<JoinHandle<Result<(), EngineError>>>,
    http: Option<HttpServer>,
    reloader: Arc<Reloader>,
    watcher: Option<FileWatcher>,
    /// The engine's metrics.
    pub metrics: Metrics,
}

/// Called by the output thread for every transition after it was written to the outputs.
pub type TransitionCallback = Box<dyn FnMut(&AlertTransition) + Send>;

/// Makes a file-size limit (`ulimit -f`, `RLIMIT_FSIZE`) fail the write that crosses it, as
/// a full disk does, instead of killing the process with `SIGXFSZ`: the output thread then
/// holds and retries until the limit is raised. Installed once for the process's life.
fn survive_file_size_limit() {
    static INSTALLED: std::sync::Once = std::sync::Once::new();
    INSTALLED.call_once(|| {
        let installed = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()
            .and_then(|runtime| {
                runtime.block_on(async {
                    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::from_raw(
                        libc::SIGXFSZ,
                    ))
                    .map(drop)
                })
            });
        if let Err(error) = installed {
            tracing::warn!(%error, "cannot handle SIGXFSZ: a file-size limit would end the process");
        }
    });
}

/// Starts the workers and the output thread.
pub fn start(
    settings: EngineSettings,
    rules: Vec<RuleRow>,
    mut on_transition: TransitionCallback,
) -> Result<Engine, EngineError> {
    survive_file_size_limit();
    let metrics = Metrics::new()?;
    let board = Arc::new(AlertBoard::new());
    let ready = Arc::new(AtomicBool::new(false));
    let health = Arc::new(Health::new(
        metrics.kafka_brokers_up.clone(),
        metrics.outputs_writable.clone(),
    ));
    let lease = match &settings.lease {
        Some(config) => {
            let lease = Lease::join(config)?;
            health.set_standby(Some(format!(
                "waiting for the lease `{}` (group `{}`): another engine of the group may be the active one",
                config.topic,
                lease.group()
            )));
            Some(lease)
        }
        None => None,
    };
    let shared = Arc::new(Shared {
        stop: AtomicBool::new(false),
        watermarks: [AtomicU64::new(0), AtomicU64::new(0)],
        durable: [AtomicU64::new(0), AtomicU64::new(0)],
        failure: Mutex::new(None),
        latency: Mutex::new(Histogram::new(3).ok()),
        events: AtomicU64::new(0),
        transitions: AtomicU64::new(0),
        dead_letters: AtomicU64::new(0),
        loaded: AtomicUsize::new(0),
        ready: Arc::clone(&ready),
        workers: settings.workers.max(1),
        board: Arc::clone(&board),
        health: Arc::clone(&health),
        lease,
        launched: AtomicBool::new(false),
    });
    // From the rules at start: a reload that lengthens a window takes effect on the next start.
    let history = replay_history(&settings.recovery, &rules);
    let slot = Arc::new(RuleSlot::new(rules));
    let reloader = Arc::new(Reloader::new(
        settings.reload.clone(),
        Arc::clone(&slot),
        slot.newer_than(0)
            .map(|(_, rules)| rules.as_ref().clone())
            .unwrap_or_default(),
        metrics.clone(),
        Arc::clone(&board),
    ));
    let dispatcher = match settings.dispatch.clone() {
        Some(dispatch) => Some(Arc::new(
            Dispatcher::start(dispatch, &metrics.registry)
                .map_err(|e| EngineError::Dispatch(e.to_string()))?,
        )),
        None => None,
    };
    let http = match settings.http {
        Some(addr) => Some(crate::http::serve(
            addr,
            HttpState {
                board,
                metrics: metrics.clone(),
                ready,
                dispatcher: dispatcher.clone(),
                api_token: settings.api_token.clone(),
                read_token: settings.read_token.clone(),
                reloader: Some(Arc::clone(&reloader)),
                health,
            },
        )?),
        None => None,
    };
    let recovered = match &settings.outputs.alerts_file {
        Some(path) => RecoveredAlerts::load(path).map_err(|source| {
            EngineError::Sink(SinkError::File {
                path: path.clone(),
                source,
            })
        })?,
        None => RecoveredAlerts::default(),
    };
    if recovered.pending() > 0 {
        tracing::info!(
            alerts = recovered.pending(),
            "alert log read: re-derived transitions it holds are left out"
        );
    }
    let seed: FiringSeed = Arc::new(Mutex::new(recovered.firing()));
    let commit_interval = settings.recovery.commit_interval;
    let mut outputs = Outputs::open(&settings.outputs)?;
    let (sender, receiver) = channel::<Output>();
    let names = settings
        .kpis
        .iter()
        .map(|d| (d.name.clone(), crate::dataflow::clock_of(d)))
        .collect();
    // One worker per process sends the KPIs (see `dataflow::build`).
    let mut kpis = KpiStores::new(1, names);
    shared.board.set_kpis(kpis.snapshot());

    // With a lease, an engine taking over learns from the shared alerts topic what the
    // engine before it published.
    let alerts_history = settings
        .lease
        .clone()
        .zip(settings.outputs.alerts_topic.clone());
    let output = {
        let shared = Arc::clone(&shared);
        let metrics = metrics.clone();
        let seed = Arc::clone(&seed);
        std::thread::Builder::new()
            .name("citybrain-output".into())
            .spawn(move || {
                let mut recovered = recovered;
                let result =
                    match take_over(&shared, &mut recovered, &seed, alerts_history.as_ref()) {
                        Ok(true) => output_loop(
                            &mut outputs,
                            receiver,
                            &shared,
                            &metrics,
                            &mut kpis,
                            dispatcher.as_deref(),
                            &mut on_transition,
                            recovered,
                            commit_interval,
                        ),
                        Ok(false) => Ok(()),
                        Err(error) => Err(error),
                    };
                // What is undelivered stays in the alert log for the next start. (If the HTTP
                // server still holds a reference, dropping ours stops the dispatcher too.)
                if let Some(Ok(dispatcher)) = dispatcher.map(Arc::try_unwrap)
                    && let Err(error) = dispatcher.shutdown(Duration::from_secs(5))
                {
                    tracing::warn!(%error, "dispatch shutdown");
                }
                if let Err(error) = &result {
                    tracing::error!(%error, "output thread failed; stopping");
                    shared.stop.store(true, Ordering::SeqCst);
                }
                result
            })
            .map_err(|e| EngineError::Worker(e.to_string()))?
    };

    let workers = {
        let shared = Arc::clone(&shared);
        let metrics = metrics.clone();
        let sender = Mutex::new(sender);
        let config = match &settings.cluster {
            None => timely::Config::process(settings.workers),
            Some(cluster) => {
                watch_timely_panics();
                tracing::info!(
                    process = cluster.process,
                    processes = cluster.addresses.len(),
                    "joining the timely cluster (waits for every process)"
                );
                timely::Config {
                    communication: timely::CommunicationConfig::Cluster {
                        threads: settings.workers,
                        process: cluster.process,
                        addresses: cluster.addresses.clone(),
                        report: false,
                        zerocopy: false,
                    },
                    worker: timely::WorkerConfig::default(),
                }
            }
        };
        timely::execute(config, move |worker| {
            tracing::debug!(
                worker = worker.index(),
                peers = worker.peers(),
                "worker started"
            );
            let sender = sender
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone();
            let mut source_config = settings.source.clone();
            source_config.worker_index = worker.index();
            source_config.workers = worker.peers();
            if let Err(error) = worker_loop(
                worker,
                &source_config,
                &slot,
                &settings.kpis,
                Arc::clone(&seed),
                sender,
                &shared,
                &metrics,
                Commits {
                    interval: commit_interval,
                    history,
                },
            ) {
                tracing::error!(worker = worker.index(), %error, "worker failed");
                shared.fail(error);
            }
            if let Err(error) = finish_dataflows(worker, DRAIN_LIMIT) {
                tracing::error!("{error}");
                shared.fail(error);
            }
        })
        .map_err(EngineError::Timely)?
    };
    let watcher = match settings.reload.watch {
        true => Some(FileWatcher::start(
            Arc::clone(&reloader),
            settings.reload.debounce,
        )?),
        false => None,
    };
    Ok(Engine {
        shared,
        workers: Some(workers),
        output: Some(output),
        http,
        reloader,
        watcher,
        metrics,
    })
}

/// The event-time history a restart re-reads per clock (sensors, citizen), milliseconds: the
/// configured history, or the longest a rule's state needs when longer.
/// Per clock (sensors, citizen), the milliseconds of event time a restart re-reads: the
/// configured history, or the rules' longest window, hold or deadline when longer.
pub fn replay_history(config: &RecoveryConfig, rules: &[RuleRow]) -> [u64; 2] {
    let millis = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
    let mut history = [
        millis(config.sensor_history),
        millis(config.citizen_history),
    ];
    for rule in rules {
        let clock = match rule.domain() {
            citybrain_model::Domain::Citizen => Clock::Citizen,
            _ => Clock::Sensors,
        };
        let slot = &mut history[clock as usize];
        *slot = (*slot).max(rule.history_ms());
    }
    history
}

/// When and how far back the workers commit offsets.
#[derive(Clone, Copy)]
struct Commits {
    interval: Duration,
    /// Per clock, milliseconds of event time re-read on restart.
    history: [u64; 2],
}

/// The first panic of a timely thread (worker or network) in this process, if any.
static TIMELY_FAILURE: Mutex<Option<String>> = Mutex::new(None);

/// Set with [`TIMELY_FAILURE`], so the workers' loop reads an atomic, not a lock.
static TIMELY_FAILED: AtomicBool = AtomicBool::new(false);

/// Records panics of timely's threads: when a process of a cluster dies, the threads
/// talking to it panic ("timely communication error: reading data: socket closed") and the
/// workers would wait for its progress forever; the workers look here and stop instead.
/// Installed once per process; other panics pass through to the previous hook unchanged.
fn watch_timely_panics() {
    static INSTALLED: std::sync::Once = std::sync::Once::new();
    INSTALLED.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let thread = std::thread::current();
            let name = thread.name().unwrap_or_default();
            if name.starts_with("timely:") {
                let message = info
                    .payload()
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| info.payload().downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                TIMELY_FAILURE
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .get_or_insert(format!("{name}: {message}"));
                TIMELY_FAILED.store(true, Ordering::SeqCst);
            }
            previous(info);
        }));
    });
}

/// What a timely thread of this process panicked with, if one did.
fn timely_failure() -> Option<String> {
    if !TIMELY_FAILED.load(Ordering::Relaxed) {
        return None;
    }
    TIMELY_FAILURE
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone()
}

/// Newest watermark per clock (sensors, citizen) of any worker of the cluster.
type ClusterMarks = Arc<[AtomicU64; 2]>;

/// A dataflow of its own that tells every worker the watermarks every other worker reached:
/// an input (never advanced, so the marks flow at once) broadcast to all workers.
fn cluster_watermarks(
    worker: &mut timely::worker::Worker,
) -> (
    timely::dataflow::operators::vec::input::Handle<Time, (usize, u64)>,
    ClusterMarks,
) {
    use timely::dataflow::operators::Operator;
    use timely::dataflow::operators::vec::{Broadcast, Input};
    let marks: ClusterMarks = Arc::new([AtomicU64::new(0), AtomicU64::new(0)]);
    let seen = Arc::clone(&marks);
    let input = worker.dataflow::<Time, _, _>(|scope| {
        let (input, stream) = scope.new_input::<(usize, u64)>();
        stream.broadcast().sink(
            timely::dataflow::channels::pact::Pipeline,
            "ClusterWatermarks",
            move |(input, _frontier)| {
                input.for_each(|_, data| {
                    for (clock, mark) in data.drain(..) {
                        if let Some(slot) = seen.get(clock) {
                            slot.fetch_max(mark, Ordering::Relaxed);
                        }
                    }
                });
            },
        );
        input
    });
    (input, marks)
}

/// How long an engine taking over may take to read the alerts topic.
const HISTORY_TIMEOUT: Duration = Duration::from_secs(120);

/// Waits for the lease, if there is one (false: stopped first), then adds what the shared
/// alerts topic holds to `recovered` and its firing alerts to `seed`, and lets the workers
/// start ([`Shared::launched`]).
fn take_over(
    shared: &Shared,
    recovered: &mut RecoveredAlerts,
    seed: &FiringSeed,
    history: Option<&(LeaseConfig, String)>,
) -> Result<bool, EngineError> {
    if let Some(lease) = &shared.lease {
        if !lease.wait_held(&shared.stop, Duration::MAX) {
            return Ok(false);
        }
        if let Some((kafka, topic)) = history {
            let payloads = citybrain_connectors::topic_history::read_whole(
                &kafka.brokers,
                &kafka.properties,
                topic,
                HISTORY_TIMEOUT,
            )
            .map_err(|e| EngineError::Worker(e.to_string()))?;
            let skipped = recovered.merge_payloads(&payloads);
            if skipped > 0 {
                tracing::warn!(skipped, topic, "alerts topic messages that do not parse");
            }
            tracing::info!(
                messages = payloads.len(),
                topic,
                "lease taken: alerts published before are left out when derived again"
            );
            seed.lock()
                .unwrap_or_else(PoisonError::into_inner)
                .extend(recovered.firing());
        }
        shared.health.set_standby(None);
    }
    shared.launched.store(true, Ordering::SeqCst);
    Ok(true)
}

#[allow(clippy::too_many_arguments)] // the worker's whole context, passed once at start
fn worker_loop(
    worker: &mut timely::worker::Worker,
    source_config: &SourceConfig,
    rule_slot: &RuleSlot,
    kpis: &[KpiDef],
    seed: FiringSeed,
    sender: Sender<Output>,
    shared: &Shared,
    metrics: &Metrics,
    commits: Commits,
) -> Result<(), String> {
    // A standby builds nothing until it takes over: the firing seed is complete only then.
    while !shared.launched.load(Ordering::SeqCst) {
        if shared.stop.load(Ordering::Relaxed) {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let retention = commits.history[Clock::Citizen as usize];
    let (inputs, probes) =
        crate::dataflow::build(worker, kpis, seed, retention, &sender, shared.workers);
    let mut reported = [0; 2];
    let mut unfinished: VecDeque<Time> = VecDeque::new();
    let mut next_commit = Instant::now() + commits.interval;
    let mut next_partition_metrics = Instant::now();
    let mut next_health = Instant::now();
    let crate::dataflow::Inputs {
        mut readings,
        mut registry,
        rules: mut rule_input,
        mut reports,
        mut partitions,
        mut durable,
    } = inputs;
    // The first worker of this process talks to its output thread about alert frontiers.
    let first_local = worker.index().is_multiple_of(shared.workers);
    // In a cluster, workers whose partitions are all idle follow the newest watermark of any
    // worker of the cluster, as they follow their own process's in one process.
    let mut cluster_marks = (worker.peers() > shared.workers).then(|| cluster_watermarks(worker));
    let mut sent_marks = [0u64; 2];
    // Worker 0 feeds the rules: the set at start (at time 0, before any reading), then the
    // difference to each reloaded set.
    let mut running_rules: Vec<RuleRow> = Vec::new();
    let mut running_version = 0;
    if worker.index() == 0 {
        apply_rule_changes(
            &mut rule_input,
            rule_slot,
            &mut running_rules,
            &mut running_version,
        );
    }
    // Closed within a limit when the loop ends: a consumer's close can wait forever.
    let mut source = ClosedWithin::new(
        KafkaSource::connect(source_config).map_err(|e| e.to_string())?,
        "kafka source",
    );
    // A worker parked below (nothing from Kafka) wakes as soon as readings arrive.
    let this_worker = std::thread::current();
    source.wake_on_readings(move || this_worker.unpark());
    let mut events = Vec::new();
    let mut counted_loaded = false;
    while !shared.stop.load(Ordering::Relaxed) {
        if let Some(failure) = timely_failure() {
            return Err(format!(
                "the timely cluster failed ({failure}): a process of the cluster died or was cut off; restart every process (they resume from the committed offsets)"
            ));
        }
        if shared.lease.as_ref().is_some_and(Lease::lost) {
            return Err(
                "lost the lease to another engine of the group (this one did not heartbeat within session.timeout.ms); stopping so only one consumes"
                    .to_string(),
            );
        }
        // While the outputs cannot be written, read nothing more (backpressure).
        if let Err(error) = source.hold(shared.health.consumption_held()) {
            tracing::warn!(%error, "cannot pause or resume the reading partitions");
        }
        if Instant::now() >= next_health {
            next_health = Instant::now() + Duration::from_millis(250);
            shared
                .health
                .set_kafka_away(worker.index(), source.brokers_away());
        }
        let batch = 4096;
        // Read more only while few polls are unfinished: what the dataflow cannot keep up with
        // stays in Kafka, not in memory, and what it has is not queued behind a backlog.
        let finished = probes[4].with_frontier(|f| f.first().copied().unwrap_or(Time::MAX));
        while unfinished.front().is_some_and(|time| *time <= finished) {
            unfinished.pop_front();
        }
        // Never wait for Kafka here: the dataflow may have work (see the park below).
        let read = if unfinished.len() < POLLS_IN_FLIGHT {
            source.poll(batch, &mut events)
        } else {
            0
        };
        shared.events.fetch_add(read as u64, Ordering::Relaxed);
        if !counted_loaded && source.registry_loaded() {
            counted_loaded = true;
            if shared.loaded.fetch_add(1, Ordering::SeqCst) + 1 == shared.workers {
                shared.ready.store(true, Ordering::SeqCst);
            }
        }
        for event in events.drain(..) {
            match event {
                SourceEvent::Reading(r) => {
                    metrics.events.with_label_values(&[r.domain.as_str()]).inc();
                    readings.update_at(
                        ((r.domain, r.entity), (r.metric, OrderedFloat(r.value))),
                        r.time,
                        1,
                    );
                }
                SourceEvent::Report(r, origin) => {
                    metrics.events.with_label_values(&["citizen"]).inc();
                    let _ = sender.send(Output::ReportOrigin(
                        r.time,
                        r.report.clone(),
                        r.kind,
                        origin,
                    ));
                    reports.update_at((r.report, (r.kind, r.category, r.grid, r.unit)), r.time, 1);
                }
                SourceEvent::Registry { update, previous } => {
                    metrics.events.with_label_values(&["registry"]).inc();
                    let key = (update.kind.domain(), update.key);
                    if let Some(previous) = previous {
                        registry.update((key.clone(), previous), -1);
                    }
                    if let Some(info) = update.info {
                        registry.update((key, info), 1);
                    }
                }
                SourceEvent::DeadLetter(letter) => {
                    let _ = sender.send(Output::DeadLetter(letter));
                }
                SourceEvent::Heard { partition, times } => {
                    for time in times {
                        partitions.update_at(PartitionRow::Heard(partition.clone()), time, 1);
                    }
                }
                SourceEvent::Placement {
                    entity,
                    partition,
                    previous,
                    time,
                } => {
                    if let Some(previous) = previous {
                        partitions.update_at(
                            PartitionRow::Placement(entity.clone(), previous),
                            time,
                            -1,
                        );
                    }
                    partitions.update_at(PartitionRow::Placement(entity, partition), time, 1);
                }
            }
        }
        let mut others = [
            shared.watermarks[0].load(Ordering::Relaxed),
            shared.watermarks[1].load(Ordering::Relaxed),
        ];
        if let Some((_, seen)) = &cluster_marks {
            for (other, mark) in others.iter_mut().zip(seen.iter()) {
                *other = (*other).max(mark.load(Ordering::Relaxed));
            }
        }
        let watermarks = source.advance_watermarks(others);
        for (slot, value) in shared.watermarks.iter().zip(watermarks) {
            slot.fetch_max(value, Ordering::Relaxed);
        }
        if let Some((input, _)) = &mut cluster_marks
            && watermarks != sent_marks
        {
            for (clock, (&mark, sent)) in watermarks.iter().zip(sent_marks.iter_mut()).enumerate() {
                if mark > *sent {
                    *sent = mark;
                    input.send((clock, mark));
                }
            }
            input.flush();
        }
        let sensors = watermarks[Clock::Sensors as usize];
        let citizen = watermarks[Clock::Citizen as usize];
        let newest = watermarks.iter().copied().max().unwrap_or(0);
        if sensors > *readings.time() {
            readings.advance_to(sensors);
            partitions.advance_to(sensors);
        }
        if read > 0 {
            // Done once the sensor work has passed the input frontier after this poll (its
            // readings at or past the frontier wait for the watermark, not for the worker).
            unfinished.push_back(*readings.time());
        }
        if citizen > *reports.time() {
            reports.advance_to(citizen);
        }
        if newest > *registry.time() {
            registry.advance_to(newest);
            rule_input.advance_to(newest);
        }
        if worker.index() == 0 {
            apply_rule_changes(
                &mut rule_input,
                rule_slot,
                &mut running_rules,
                &mut running_version,
            );
        }
        readings.flush();
        partitions.flush();
        reports.flush();
        registry.flush();
        rule_input.flush();
        worker.step();
        if first_local {
            // Probes see every worker's progress: one worker per process reporting is enough
            // (its output thread holds the transitions this process's workers own).
            for (clock, probe) in [KpiClock::Sensors, KpiClock::Citizen]
                .into_iter()
                .zip(&probes)
            {
                let frontier = probe.with_frontier(|f| f.first().copied().unwrap_or(Time::MAX));
                let slot = &mut reported[clock as usize];
                if frontier > *slot {
                    *slot = frontier;
                    let _ = sender.send(Output::AlertFrontier(clock, frontier));
                }
            }
        }
        if Instant::now() >= next_partition_metrics {
            next_partition_metrics = Instant::now() + Duration::from_secs(1);
            record_partitions(&source, metrics);
        }
        for (input, slot) in durable.iter_mut().zip(&shared.durable) {
            let time = slot.load(Ordering::Relaxed);
            if time > *input.time() {
                input.advance_to(time);
            }
        }
        if Instant::now() >= next_commit {
            next_commit = Instant::now() + commits.interval;
            // Durable on every process of the cluster (each process owns the alerts of its
            // workers' keys, whatever partition their readings came from).
            // A closed input (a worker that stopped) says nothing: no commit then.
            let durable_now = [2, 3].map(|i| probes[i].with_frontier(|f| f.first().copied()));
            if let [Some(sensors), Some(citizen)] = durable_now {
                let cutoffs = [
                    sensors.saturating_sub(commits.history[0]),
                    citizen.saturating_sub(commits.history[1]),
                ];
                if let Err(error) = source.commit(cutoffs) {
                    tracing::warn!(%error, "offset commit failed; a restart re-reads more");
                }
            }
        }
        if worker.index() == 0 {
            let lag = i64::try_from(now_millis().saturating_sub(sensors)).unwrap_or(i64::MAX);
            metrics
                .watermark_lag
                .with_label_values(&["sensors"])
                .set(lag);
        }
        if read == 0 {
            // Nothing new from Kafka: step on while the dataflow has work, else park until
            // another worker sends data or progress or a reading partition receives messages
            // (each unparks this thread) or for at most IDLE_PARK, then look at Kafka again.
            // Each operator of a chain runs in a step of its own, so a worker that slept
            // between steps added its sleep per operator.
            worker.step_or_park(Some(IDLE_PARK));
        }
    }
    drop(probes);
    Ok(())
}

/// Steps this worker's dataflows to their end once its inputs are closed, for at most
/// `limit`; any still running then are dropped and reported. timely would step them without a
/// time limit after the worker's closure returns, so an operator that never let go of a
/// capability would hang the stop.
fn finish_dataflows(worker: &mut timely::worker::Worker, limit: Duration) -> Result<(), String> {
    let deadline = Instant::now() + limit;
    while worker.has_dataflows() {
        if Instant::now() >= deadline {
            for dataflow in worker.installed_dataflows() {
                worker.drop_dataflow(dataflow);
            }
            return Err(format!(
                "worker {} did not finish its dataflow within {} s of the stop; dropped it (what was not committed is read again at the next start)",
                worker.index(),
                limit.as_secs_f64()
            ));
        }
        worker.step_or_park(Some(IDLE_PARK));
    }
    Ok(())
}

/// Sets the per-partition gauges of this worker's partitions.
fn record_partitions(source: &KafkaSource, metrics: &Metrics) {
    let now = now_millis();
    for status in source.partition_status() {
        let partition = status.partition.to_string();
        let labels = [status.topic.as_str(), partition.as_str()];
        if let Some(newest) = status.newest_event {
            let lag = i64::try_from(now.saturating_sub(newest)).unwrap_or(i64::MAX);
            metrics
                .partition_event_lag
                .with_label_values(&labels)
                .set(lag);
        }
    }
}

/// Feeds the difference between the running rules and a newer published version into the rules
/// input, at the input's current time: readings from there on meet the new rules.
fn apply_rule_changes(
    rule_input: &mut differential_dataflow::input::InputSession<
        citybrain_operators::Time,
        RuleRow,
        citybrain_operators::Diff,
    >,
    slot: &RuleSlot,
    running_rules: &mut Vec<RuleRow>,
    running_version: &mut u64,
) {
    let Some((version, rules)) = slot.newer_than(*running_version) else {
        return;
    };
    for (row, diff) in RuleSetDiff::between(running_rules, &rules).updates {
        rule_input.update(row, diff);
    }
    *running_rules = rules.as_ref().clone();
    *running_version = version;
    slot.mark_applied(version, *rule_input.time());
}

#[allow(clippy::too_many_arguments)] // the output thread's whole context, passed once at start
fn output_loop(
    outputs: &mut Outputs,
    receiver: Receiver<Output>,
    shared: &Shared,
    metrics: &Metrics,
    kpis: &mut KpiStores,
    dispatcher: Option<&Dispatcher>,
    on_transition: &mut TransitionCallback,
    mut recovered: RecoveredAlerts,
    commit_interval: Duration,
) -> Result<(), EngineError> {
    let mut dirty = false;
    // Per clock: the alert frontier received, and the one last made durable.
    let mut received = [0u64; 2];
    let mut published = [0u64; 2];
    let mut next_durable = Instant::now() + commit_interval;
    // What the outputs were asked to make durable, not yet durable: (the alert frontiers it
    // covers, the request, when it was made).
    let mut durable_request: Option<([u64; 2], DurableRequest, Instant)> = None;
    // True while the outputs are not durable a commit interval after the request (logged once
    // per episode).
    let mut waiting_for_kafka = false;
    let mut next_status = Instant::now();
    let mut last_kpis = Instant::now();
    // KPI values changed, or only their time moved on, since the last snapshot pushed.
    let (mut kpis_changed, mut kpis_moved) = (false, false);
    // True while a file cannot be written: the workers hold, this thread retries.
    let mut blocked = false;
    let mut origins = ReportOrigins::default();
    loop {
        if Instant::now() >= next_status {
            shared
                .board
                .set_status(shared.live_status().with_dispatch(dispatcher));
            next_status += Duration::from_secs(1);
        }
        if blocked {
            // What arrived stays in the channel; what was taken stays buffered in the outputs.
            if shared.stop.load(Ordering::Relaxed) {
                let reason = shared.health.outputs_blocked().map(|p| p.reason);
                return Err(EngineError::Worker(format!(
                    "stopped while the outputs could not be written ({}); a restart re-derives what they lack",
                    reason.unwrap_or_default()
                )));
            }
            std::thread::sleep(OUTPUT_RETRY);
            if unless_blocked(outputs.flush_files(), &shared.health)?.is_some() {
                blocked = false;
                shared.health.set_outputs_blocked(None);
                tracing::info!("the outputs can be written again; consuming again");
            }
            continue;
        }
        let message = match receiver.recv_timeout(Duration::from_millis(50)) {
            Ok(message) => Some(message),
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => break,
        };
        if Instant::now() >= next_durable {
            next_durable = Instant::now() + commit_interval;
            // One request at a time: the next one marks what came meanwhile.
            if received != published && durable_request.is_none() {
                // Everything before `received` arrived before its frontier message: once what
                // is written now is durable, so is everything before it.
                match unless_blocked(outputs.request_durable(), &shared.health)? {
                    Some(request) => durable_request = Some((received, request, Instant::now())),
                    None => blocked = true,
                }
                dirty = false;
            }
        }
        if let Some((frontier, request, since)) = durable_request {
            // Never waits: alerts go on to their sinks while the disk and the brokers catch
            // up; during a broker outage offsets simply wait.
            match unless_blocked(outputs.is_durable(&request), &shared.health)? {
                Some(true) => {
                    for (slot, time) in shared.durable.iter().zip(frontier) {
                        slot.store(time, Ordering::Relaxed);
                    }
                    published = frontier;
                    durable_request = None;
                    waiting_for_kafka = false;
                }
                Some(false) if !waiting_for_kafka && since.elapsed() >= commit_interval => {
                    waiting_for_kafka = true;
                    tracing::warn!(
                        "alert outputs not yet acknowledged by Kafka or synced to disk; offset commits wait for them"
                    );
                }
                Some(false) => {}
                None => {
                    blocked = true;
                    durable_request = None;
                }
            }
        }
        match message {
            Some(Output::AlertFrontier(clock, time)) => {
                let slot = &mut received[clock as usize];
                *slot = (*slot).max(time);
                if clock == KpiClock::Citizen {
                    origins.forget_before(time);
                }
            }
            Some(Output::ReportOrigin(time, report, kind, origin)) => {
                origins.keep(time, report, kind, origin);
            }
            Some(Output::UnknownReport(event)) => {
                for letter in origins.dead_letters(&event) {
                    metrics
                        .dead_letters
                        .with_label_values(&[letter.reason.as_str()])
                        .inc();
                    shared.dead_letters.fetch_add(1, Ordering::Relaxed);
                    outputs.write_dead_letter(&letter)?;
                    dirty = true;
                }
            }
            Some(Output::Alert(transition)) => {
                if !recovered.admit(&transition) {
                    continue;
                }
                if unless_blocked(outputs.write_alert(&transition), &shared.health)?.is_none() {
                    // Buffered: it is written when the file can be; go on delivering it.
                    blocked = true;
                }
                dirty = true;
                if let Some(dispatcher) = dispatcher {
                    // Durable in the alert log before anything else sees it.
                    match dispatcher.submit(&transition) {
                        Ok(Submitted::Duplicate) => continue,
                        Ok(_) => {}
                        Err(error) => return Err(EngineError::Dispatch(error.to_string())),
                    }
                }
                let latency = now_millis().saturating_sub(transition.event_time);
                metrics.alert_latency.observe(latency as f64 / 1000.0);
                metrics
                    .transitions
                    .with_label_values(&[transition.rule.as_str(), transition.state.as_str()])
                    .inc();
                if let Some(h) = shared
                    .latency
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .as_mut()
                {
                    h.saturating_record(latency);
                }
                shared.board.apply(&transition);
                shared.transitions.fetch_add(1, Ordering::Relaxed);
                on_transition(&transition);
            }
            Some(Output::BoardAlert(transition)) => shared.board.apply(&transition),
            Some(Output::DeadLetter(letter)) => {
                metrics
                    .dead_letters
                    .with_label_values(&[letter.reason.as_str()])
                    .inc();
                shared.dead_letters.fetch_add(1, Ordering::Relaxed);
                if unless_blocked(outputs.write_dead_letter(&letter), &shared.health)?.is_none() {
                    blocked = true;
                }
                dirty = true;
            }
            Some(Output::KpiUpdates(clock, updates)) => {
                kpis.push(
                    clock,
                    updates
                        .into_iter()
                        .map(|((key, value), time, diff)| (key, value.0, time, diff as i64))
                        .collect(),
                );
            }
            Some(Output::KpiFrontier(clock, worker, time)) => {
                kpis_changed |= kpis.frontier(clock, worker, time);
                kpis_moved = true;
            }
            None if dirty => {
                blocked = unless_blocked(outputs.flush_files(), &shared.health)?.is_none();
                dirty = false;
            }
            None => {}
        }
        // Values changed: pushed within `KPI_PUSH_EVERY`. Only time moved on: at most 4 times
        // a second.
        let since = last_kpis.elapsed();
        if (kpis_changed && since >= KPI_PUSH_EVERY) || (kpis_moved && since >= KPI_REFRESH) {
            last_kpis = Instant::now();
            (kpis_changed, kpis_moved) = (false, false);
            push_kpis(kpis, metrics, &shared.board);
        }
    }
    // The last values, however soon after the previous push the dataflow ended.
    if kpis_changed || kpis_moved {
        push_kpis(kpis, metrics, &shared.board);
    }
    if recovered.left_out() > 0 {
        tracing::info!(
            left_out = recovered.left_out(),
            "re-derived transitions the alert log already held"
        );
    }
    Ok(outputs.flush(Duration::from_secs(10))?)
}

/// Publishes the KPIs' current snapshot to the metrics and the board (the wall and the API).
fn push_kpis(kpis: &KpiStores, metrics: &Metrics, board: &AlertBoard) {
    let snapshot = kpis.snapshot();
    metrics.set_kpis(&snapshot);
    board.set_kpis(snapshot);
}

/// How long an idle worker parks before it polls Kafka again (it wakes earlier when another
/// worker sends it data or progress, or when one of its reading partitions receives
/// messages). Registry updates wait at most this long in the consumer.
const IDLE_PARK: Duration = Duration::from_millis(1);

/// How long a stopped worker's dataflows may take to finish what they hold (see
/// [`finish_dataflows`]): milliseconds normally, seconds behind a large backlog on a loaded
/// machine.
const DRAIN_LIMIT: Duration = Duration::from_secs(30);

/// Polls of a worker (each up to 4,096 messages) the sensor clock's alerts and KPIs may not
/// have finished before the worker stops reading: bounds the readings held in the dataflow
/// (memory) and what a new reading queues behind (latency) when input outruns the worker.
const POLLS_IN_FLIGHT: usize = 4;

/// How soon changed KPI values reach the board and metrics. Under load the KPI frontier moves
/// with almost every message, and a snapshot per move (~135 a second in the end-to-end bench,
/// up to 10 ms each) took 6 % of the output thread, which also hands alerts to their sinks.
/// A wall display gains nothing from more than 20 pushes a second.
const KPI_PUSH_EVERY: Duration = Duration::from_millis(50);

/// How often a snapshot is pushed when only the KPIs' time moved on.
const KPI_REFRESH: Duration = Duration::from_millis(250);

/// How often the output thread retries writing a file that could not be written.
const OUTPUT_RETRY: Duration = Duration::from_millis(250);

/// `Some` with the result when an output call succeeded; `None` when a file could not be
/// written (recorded in `health`, so the workers stop consuming; the lines stay buffered);
/// other failures stop the engine.
fn unless_blocked<T>(
    result: Result<T, SinkError>,
    health: &Health,
) -> Result<Option<T>, EngineError> {
    match result {
        Ok(value) => Ok(Some(value)),
        Err(error @ SinkError::File { .. }) => {
            if health.set_outputs_blocked(Some(error.to_string())) {
                tracing::error!(
                    %error,
                    "cannot write the outputs: consuming stops until they can be written; offsets are committed only up to what is durable"
                );
            }
            Ok(None)
        }
        Err(error) => Err(error.into()),
    }
}

/// The messages citizen report events came from, by event time, until the citizen clock
/// passes it: what an unknown report's dead letter is made of.
#[derive(Default)]
struct ReportOrigins {
    by_time: std::collections::BTreeMap<Time, Vec<(String, ReportKind, Origin)>>,
}

impl ReportOrigins {
    /// Keeps the message of one event.
    fn keep(&mut self, time: Time, report: String, kind: ReportKind, origin: Origin) {
        self.by_time
            .entry(time)
            .or_default()
            .push((report, kind, origin));
    }

    /// Forgets the messages of events before `time`: their reports are judged.
    fn forget_before(&mut self, time: Time) {
        self.by_time = self.by_time.split_off(&time);
    }

    /// The dead letters of an unknown report's event: one per message that carried it (a
    /// duplicate is judged once but was sent twice). Without its message (e.g. a replay that
    /// re-read it before a restart), one record of the event as decoded.
    fn dead_letters(
        &mut self,
        ((report, (kind, category, grid, unit)), time): &UnknownReportEvent,
    ) -> Vec<DeadLetter> {
        let detail = format!(
            "report `{report}` was never created (or was forgotten): its `{}` event at {} is not applied",
            kind_name(*kind),
            citybrain_model::time::format_event_time(*time)
        );
        let mut letters = Vec::new();
        if let Some(entries) = self.by_time.get_mut(time) {
            entries.retain(|(r, k, origin)| {
                if r == report && k == kind {
                    letters
                        .push(origin.dead_letter(DeadLetterReason::UnknownReport, detail.clone()));
                    false
                } else {
                    true
                }
            });
        }
        if letters.is_empty() {
            let payload = serde_json::json!({
                "report": report,
                "ts": time,
                "kind": kind_name(*kind),
                "category": category,
                "grid": grid,
                "unit": unit,
            })
            .to_string();
            letters.push(DeadLetter::new(
                DeadLetterReason::UnknownReport,
                detail,
                "",
                -1,
                -1,
                Some(report.as_bytes()),
                payload.as_bytes(),
            ));
        }
        letters
    }
}

/// The wire name of a report event kind (`created`, `followed_up`, ...).
fn kind_name(kind: ReportKind) -> String {
    serde_json::to_value(kind)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

impl Engine {
    /// Asks the workers to stop (they finish their current step).
    pub fn stop(&self) {
        self.shared.stop.store(true, Ordering::SeqCst);
    }

    /// True once stop was requested or a worker failed.
    pub fn stopping(&self) -> bool {
        self.shared.stop.load(Ordering::Relaxed)
    }

    /// A summary for the status line.
    pub fn status(&self) -> Status {
        Status {
            firing: self.shared.board.firing(),
            transitions: self.shared.transitions.load(Ordering::Relaxed),
            dead_letters: self.shared.dead_letters.load(Ordering::Relaxed),
            events: self.shared.events.load(Ordering::Relaxed),
            latency_ms: self.shared.latency_quantiles(),
            sensor_watermark: self.shared.watermarks[0].load(Ordering::Relaxed),
        }
    }

    /// The address the HTTP server listens on, if it runs.
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http.as_ref().map(|h| h.addr)
    }

    /// Loads and validates the rule files and applies them when valid (what a changed file,
    /// `SIGHUP` and `POST /api/config/reload` do); invalid files leave the running rules in
    /// place. Returns the status after the attempt.
    pub fn reload(&self, trigger: Trigger) -> ReloadStatus {
        self.reloader.reload(trigger)
    }

    /// Replaces the running rules with `rules`: worker 0 feeds the difference into the
    /// dataflow at its next logical time. Returns the status after the change.
    pub fn reload_rules(&self, rules: Vec<RuleRow>) -> ReloadStatus {
        self.reloader.apply(rules, Trigger::Call)
    }

    /// The reloader (for triggers outside the engine, such as a signal handler).
    pub fn reloader(&self) -> Arc<Reloader> {
        Arc::clone(&self.reloader)
    }

    /// The alert board (active alerts, recent transitions, KPIs, live feed).
    pub fn board(&self) -> Arc<AlertBoard> {
        Arc::clone(&self.shared.board)
    }

    /// Waits for the workers and the output thread to finish (after [`Engine::stop`] or a
    /// failure); returns the first failure.
    pub fn wait(mut self) -> Result<(), EngineError> {
        if let Some(watcher) = self.watcher.take() {
            watcher.shutdown();
        }
        if let Some(http) = self.http.take() {
            http.shutdown();
        }
        if let Some(workers) = self.workers.take() {
            for result in workers.join() {
                if let Err(e) = result {
                    return Err(EngineError::Worker(e));
                }
            }
        }
        if let Some(output) = self.output.take() {
            match output.join() {
                Ok(result) => result?,
                Err(_) => return Err(EngineError::Worker("output thread panicked".into())),
            }
        }
        match self
            .shared
            .failure
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        {
            Some(failure) => Err(EngineError::Worker(failure)),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use timely::container::CapacityContainerBuilder;
    use timely::dataflow::operators::Probe;
    use timely::dataflow::operators::generic::operator::source;
    use timely::dataflow::operators::vec::Input;

    use super::*;

    /// A stop once hung a CI run for its whole budget in a test that stops engines; whatever
    /// holds a dataflow open, the stop now ends.
    #[test]
    fn a_dataflow_holding_a_capability_forever_is_dropped_at_the_limit() {
        timely::execute_directly(|worker| {
            worker.dataflow::<u64, _, _>(|scope| {
                source::<_, CapacityContainerBuilder<Vec<u64>>, _, _>(
                    scope,
                    "HoldsForever",
                    |capability, _| {
                        move |_output| {
                            let _held = &capability;
                        }
                    },
                )
                .probe();
            });
            let error = finish_dataflows(worker, Duration::from_millis(50)).unwrap_err();
            assert_eq!(
                error,
                "worker 0 did not finish its dataflow within 0.05 s of the stop; dropped it (what was not committed is read again at the next start)"
            );
            assert!(!worker.has_dataflows());
        });
    }

    #[test]
    fn a_dataflow_whose_inputs_are_closed_finishes() {
        timely::execute_directly(|worker| {
            let mut input = worker.dataflow::<u64, _, _>(|scope| {
                let (input, stream) = scope.new_input::<u64>();
                stream.probe();
                input
            });
            input.send(1);
            drop(input);
            assert_eq!(finish_dataflows(worker, Duration::from_secs(60)), Ok(()));
            assert!(!worker.has_dataflows());
        });
    }
}
