//! The main config file (`citybrain.toml`): engine threads, Kafka connection, input sources,
//! reference-data registry, rule files and outputs.
//!
//! Every section and field is optional; missing ones take the defaults documented on each
//! field, so a file holding only `[kafka] brokers = "..."` is a complete config. Unknown fields
//! are errors. Durations are strings such as `"250ms"`, `"30s"`, `"5m"`.

use std::collections::{BTreeMap, HashMap};
use std::ops::Range;
use std::path::PathBuf;
use std::time::Duration;

use citybrain_model::Domain;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_spanned::Spanned;
use toml::de::DeValue;

use super::de::{Seg, display_path, key_span_at, path, value_at};
use super::diagnostic::FileCx;
use super::duration;

/// The main config file. Every section is optional.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// `[engine]`: worker threads and status logging.
    pub engine: EngineConfig,
    /// `[kafka]`: how to reach the brokers.
    pub kafka: KafkaConfig,
    /// `[sources.mine]`, `[sources.farm]`, `[sources.citizen]`: the input topics.
    pub sources: SourcesConfig,
    /// `[registry]`: the compacted reference-data topics.
    pub registry: RegistryConfig,
    /// `[rules]`: the rule files.
    pub rules: RulesConfig,
    /// `[outputs]`: where alert transitions and dead letters go.
    pub outputs: OutputsConfig,
    /// `[http]`: the JSON API, live stream, wall page and `/metrics`.
    pub http: HttpConfig,
    /// `[dispatch]`: alert delivery to webhooks and Kafka topics, routes, silences and the
    /// durable alert log. Default: no receivers (dispatch off).
    #[serde(default)]
    pub dispatch: super::dispatch::DispatchConfig,
    /// `[kpis]`: the KPI definition files.
    pub kpis: KpisConfig,
    /// `[recovery]`: offset commits and how much history a restart re-reads.
    pub recovery: RecoveryConfig,
    /// `[reload]`: live reload of the rule files.
    pub reload: ReloadConfig,
}

/// `[recovery]`: what a restart resumes from. Offsets are committed only up to what the alert
/// outputs hold durably, minus the history the rules' state is rebuilt from; on restart the
/// engine re-reads from there and leaves out the transitions its alert log already has.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct RecoveryConfig {
    /// How often outputs are made durable and offsets committed. Greater than zero.
    /// Default: `"1s"`.
    #[serde(with = "duration")]
    #[schemars(with = "duration::DurationString")]
    pub commit_interval: Duration,
    /// Event-time history of mine and farm readings re-read on restart, to rebuild windows,
    /// `for` holds and silence timers. The longest window, hold or silence limit of the rules
    /// is used when longer. Default: `"15m"`.
    #[serde(with = "duration")]
    #[schemars(with = "duration::DurationString")]
    pub sensor_history: Duration,
    /// Event-time history of citizen report events re-read on restart, to rebuild the state of
    /// open reports. The longest report deadline (plus escalation ladder) or follow-up due
    /// time of the rules is used when longer. It is also how long a report that needs nothing
    /// more (resolved, no timer, no firing alert) is remembered after its last event; a later
    /// event of a forgotten report is a dead letter (`unknown_report`). Default: `"7d"`.
    #[serde(with = "duration")]
    #[schemars(with = "duration::DurationString")]
    pub citizen_history: Duration,
}

impl Default for RecoveryConfig {
    fn default() -> Self {
        RecoveryConfig {
            commit_interval: Duration::from_secs(1),
            sensor_history: Duration::from_secs(15 * 60),
            citizen_history: Duration::from_secs(7 * 24 * 3600),
        }
    }
}

/// `[reload]`: live reload of the rule files without a restart. A reload is triggered by a
/// change of a rule file or of this file's `[rules] files` (when `watch` is on), by `SIGHUP`
/// and by `POST /api/config/reload`; invalid files leave the running rules in place.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct ReloadConfig {
    /// Watch the rule files and this file for changes. Default: `true`.
    pub watch: bool,
    /// Quiet time after the last change of a watched file before reloading, so an editor's
    /// burst of writes is one reload. Greater than zero. Default: `"200ms"`.
    #[serde(with = "duration")]
    #[schemars(with = "duration::DurationString")]
    pub debounce: Duration,
    /// JSON-lines file every applied rule change is appended to (time, files, content hash,
    /// added/removed/changed rule ids), relative to the directory of this file.
    /// Default: `"citybrain-audit.jsonl"`.
    pub audit_log: PathBuf,
}

impl Default for ReloadConfig {
    fn default() -> Self {
        ReloadConfig {
            watch: true,
            debounce: Duration::from_millis(200),
            audit_log: PathBuf::from("citybrain-audit.jsonl"),
        }
    }
}

/// `[kpis]`: which KPIs the engine maintains.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct KpisConfig {
    /// KPI files (`[[kpi]]` tables), relative to the directory of this file.
    /// Default: none, which means the built-in set (`config/kpis.toml`, embedded in the binary).
    pub files: Vec<PathBuf>,
}

/// `[http]`: the JSON API, Server-Sent Events stream, wall display page and Prometheus
/// `/metrics`, served by the engine.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Serve HTTP at all. Default: `true`.
    pub enabled: bool,
    /// Address and port to listen on; port 0 picks a free port (logged at start).
    /// Default: `"127.0.0.1:8080"` (loopback only: put a reverse proxy in front to expose it).
    pub bind: std::net::SocketAddr,
    /// Environment variable holding the bearer token that mutating API calls (silences)
    /// require (`Authorization: Bearer <token>`). Default: `"CITYBRAIN_API_TOKEN"`; when the
    /// variable is unset or empty, those calls are refused (403).
    pub api_token_env: String,
    /// Environment variable holding the bearer token that read endpoints require too
    /// (`/api/*`, `/metrics`; not the wall page and its assets, `/healthz`, `/readyz` or the
    /// OpenAPI document). The API token is accepted as well. `/api/stream` also takes it as
    /// `?token=`, since a browser's `EventSource` cannot send headers: open the wall as
    /// `/?token=...`. Default: none (reads are open to whoever reaches the bind address); when
    /// set, the variable must hold a non-empty token or the engine does not start.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub read_token_env: Option<String>,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            enabled: true,
            bind: std::net::SocketAddr::from(([127, 0, 0, 1], 8080)),
            api_token_env: "CITYBRAIN_API_TOKEN".to_string(),
            read_token_env: None,
        }
    }
}

/// `[engine]`: worker threads and status logging.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct EngineConfig {
    /// Number of timely worker threads in this process. At least 1.
    /// Default: the number of available CPU cores (at least 1).
    #[schemars(range(min = 1))]
    pub workers: usize,
    /// How often the status line (throughput, lag, watermarks) is logged. Greater than zero.
    /// Default: `"5s"`.
    #[serde(with = "duration")]
    #[schemars(with = "duration::DurationString")]
    pub status_interval: Duration,
    /// Processes of one timely cluster (`1`: this process alone). With more, every process
    /// runs the same config with its own `process_id`, and Kafka partitions, state and alerts
    /// are spread over all workers of all processes. Default: `1`.
    #[schemars(range(min = 1))]
    pub processes: usize,
    /// This process's index in the cluster, `0` to `processes - 1`. Default: `0`.
    pub process_id: usize,
    /// With `processes` above 1: a file of `host:port` lines, one per process in process
    /// order (timely's cluster addresses; process `i` listens on line `i`), relative to this
    /// file. Default: none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hostfile: Option<std::path::PathBuf>,
}

/// The default number of workers: the available CPU cores, at least 1.
pub fn default_workers() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            workers: default_workers(),
            status_interval: Duration::from_secs(5),
            processes: 1,
            process_id: 0,
            hostfile: None,
        }
    }
}

/// A value of `[engine]` out of range.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EngineProblem {
    /// The field's name within `[engine]`.
    pub field: &'static str,
    /// What is wrong, naming the field.
    pub message: String,
    /// How to put it right.
    pub hint: &'static str,
}

impl EngineConfig {
    /// Every value out of range. Config validation reports them at their place in the file;
    /// the engine checks again after command-line flags have overridden the file.
    pub fn problems(&self) -> Vec<EngineProblem> {
        let mut problems = Vec::new();
        let mut problem = |field, message: String, hint| {
            problems.push(EngineProblem {
                field,
                message,
                hint,
            })
        };
        if self.workers == 0 {
            problem(
                "workers",
                "`engine.workers` must be at least 1".to_string(),
                "leave it out to run one worker per available CPU core",
            );
        }
        if self.processes == 0 {
            problem(
                "processes",
                "`engine.processes` must be at least 1".to_string(),
                "leave it out to run this process alone",
            );
        } else if self.process_id >= self.processes {
            problem(
                "process_id",
                format!(
                    "`engine.process_id` {} is not below `engine.processes` {}",
                    self.process_id, self.processes
                ),
                "processes are numbered from 0",
            );
        }
        if self.processes > 1 && self.hostfile.is_none() {
            problem(
                "processes",
                "`engine.processes` above 1 needs `engine.hostfile`".to_string(),
                "a file of host:port lines, one per process",
            );
        }
        problems
    }
}

/// `[kafka]`: how to reach the brokers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaConfig {
    /// Bootstrap servers, comma-separated `host:port` (librdkafka `bootstrap.servers`).
    /// No default: `citybrain run` requires it; `citybrain demo` fills in its own broker.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub brokers: Option<String>,
    /// Consumer group id (librdkafka `group.id`). Default: `"citybrain"`.
    pub group_id: String,
    /// Extra librdkafka properties, name to value, both strings, e.g.
    /// `{ "session.timeout.ms" = "6000" }`. `bootstrap.servers`, `group.id` and
    /// `enable.auto.commit` are managed by the engine and rejected here. Default: none.
    pub properties: BTreeMap<String, String>,
    /// How often the brokers' end offsets of the reading partitions are fetched, on a thread of
    /// their own. A partition counts as caught up, and may go idle, only when it has read up to
    /// an end offset asked for after its last message came and at most 8 times this (and at
    /// least 2 s) ago; while a fetch fails the brokers count as away (`/readyz`,
    /// `citybrain_kafka_brokers_up`, the wall's banner). Default: `"250ms"`.
    #[serde(with = "duration")]
    #[schemars(with = "duration::DurationString")]
    pub end_offsets_refresh: Duration,
    /// A lease topic (one partition, created when missing): engines sharing `group_id` take
    /// turns, one consuming and the others waiting as hot standbys (`/readyz` 503 "standby")
    /// until it leaves or stops heartbeating for `session.timeout.ms`; then one takes over from
    /// the committed offsets, after reading `[outputs] alerts_topic` for what the active one
    /// published (left out when derived again). An active engine that loses the lease (it was unresponsive for
    /// longer than the session timeout) stops with an error. Members join the group
    /// `<group_id>.lease`. Default: none (the engine consumes at once, and a second engine with
    /// the same `group_id` would read everything again).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lease_topic: Option<String>,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        KafkaConfig {
            brokers: None,
            group_id: "citybrain".to_string(),
            properties: BTreeMap::new(),
            end_offsets_refresh: Duration::from_millis(250),
            lease_topic: None,
        }
    }
}

/// The librdkafka properties the engine sets itself, and what to use instead.
const MANAGED_PROPERTIES: [(&str, &str); 3] = [
    ("bootstrap.servers", "set `brokers` in [kafka] instead"),
    ("group.id", "set `group_id` in [kafka] instead"),
    (
        "enable.auto.commit",
        "the engine commits offsets itself, once the outputs of an event are durable",
    ),
];

/// `[sources.*]`: one input topic per domain. Each sub-table is optional.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(from = "RawSources")]
pub struct SourcesConfig {
    /// `[sources.mine]`: mine sensor readings.
    pub mine: SourceConfig,
    /// `[sources.farm]`: farm and ranch device readings.
    pub farm: SourceConfig,
    /// `[sources.citizen]`: citizen report events.
    pub citizen: SourceConfig,
}

impl SourcesConfig {
    /// The source of `domain`.
    pub fn get(&self, domain: Domain) -> &SourceConfig {
        match domain {
            Domain::Mine => &self.mine,
            Domain::Farm => &self.farm,
            Domain::Citizen => &self.citizen,
        }
    }
}

impl Default for SourcesConfig {
    fn default() -> Self {
        SourcesConfig {
            mine: SourceConfig::defaults(Domain::Mine),
            farm: SourceConfig::defaults(Domain::Farm),
            citizen: SourceConfig::defaults(Domain::Citizen),
        }
    }
}

/// One input topic and how its events are admitted.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, JsonSchema)]
pub struct SourceConfig {
    /// Kafka topic. Default: `"mine.readings"`, `"farm.readings"` or `"citizen.reports"`.
    pub topic: String,
    /// How far behind the newest event time an event may arrive and still count; the
    /// watermark trails the newest event by this much, older events are dead-lettered as
    /// late. Default: `"250ms"` for mine and farm, `"5m"` for citizen.
    #[serde(with = "duration")]
    #[schemars(with = "duration::DurationString")]
    pub allowed_lateness: Duration,
    /// A partition that has caught up and stays silent this long stops holding the watermark
    /// back. Default: `"500ms"`.
    #[serde(with = "duration")]
    #[schemars(with = "duration::DurationString")]
    pub idle_timeout: Duration,
    /// Largest accepted message, in bytes; larger ones are dead-lettered as oversized. At
    /// least 1. Default: 65536 (64 KiB).
    pub max_message_bytes: usize,
    /// Events whose time is more than this ahead of the wall clock are dead-lettered as out of
    /// range. Default: `"1h"`.
    #[serde(with = "duration")]
    #[schemars(with = "duration::DurationString")]
    pub max_future: Duration,
    /// A worker reads on in a partition only while its newest event time, less the allowed
    /// lateness, is at most this far ahead of the partition furthest behind (or of the
    /// watermark, when later); a partition further ahead waits for the others. Bounds what a
    /// backlog holds in memory waiting for the watermark: roughly this much event time of the
    /// partitions' readings. Default: `"5s"`.
    #[serde(with = "duration")]
    #[schemars(with = "duration::DurationString")]
    pub max_partition_skew: Duration,
}

impl SourceConfig {
    /// The defaults of `domain`'s source.
    pub fn defaults(domain: Domain) -> Self {
        let (topic, lateness) = match domain {
            Domain::Mine => ("mine.readings", Duration::from_millis(250)),
            Domain::Farm => ("farm.readings", Duration::from_millis(250)),
            Domain::Citizen => ("citizen.reports", Duration::from_secs(5 * 60)),
        };
        SourceConfig {
            topic: topic.to_string(),
            allowed_lateness: lateness,
            idle_timeout: Duration::from_millis(500),
            max_message_bytes: 64 * 1024,
            max_future: Duration::from_secs(60 * 60),
            max_partition_skew: Duration::from_secs(5),
        }
    }
}

/// `[sources]` as written: defaults depend on the domain, so they are filled in afterwards.
/// Each sub-table is optional.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Sources")]
struct RawSources {
    /// `[sources.mine]`: mine sensor readings.
    #[serde(default)]
    mine: Option<RawSource>,
    /// `[sources.farm]`: farm and ranch device readings.
    #[serde(default)]
    farm: Option<RawSource>,
    /// `[sources.citizen]`: citizen report events.
    #[serde(default)]
    citizen: Option<RawSource>,
}

/// `[sources.*]` as written: one input topic and how its events are admitted.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Source")]
struct RawSource {
    /// Kafka topic. Default: `"mine.readings"`, `"farm.readings"` or `"citizen.reports"`.
    #[serde(default)]
    topic: Option<String>,
    /// How far behind the newest event time an event may arrive and still count; the
    /// watermark trails the newest event by this much, older events are dead-lettered as
    /// late. Default: `"250ms"` for mine and farm, `"5m"` for citizen.
    #[serde(default, with = "duration::option")]
    #[schemars(with = "Option<duration::DurationString>")]
    allowed_lateness: Option<Duration>,
    /// A partition that has caught up and stays silent this long stops holding the watermark
    /// back. Default: `"500ms"`.
    #[serde(default, with = "duration::option")]
    #[schemars(with = "Option<duration::DurationString>")]
    idle_timeout: Option<Duration>,
    /// Largest accepted message, in bytes; larger ones are dead-lettered as oversized. At
    /// least 1. Default: 65536 (64 KiB).
    #[serde(default)]
    #[schemars(range(min = 1))]
    max_message_bytes: Option<usize>,
    /// Events whose time is more than this ahead of the wall clock are dead-lettered as out of
    /// range. Default: `"1h"`.
    #[serde(default, with = "duration::option")]
    #[schemars(with = "Option<duration::DurationString>")]
    max_future: Option<Duration>,
    /// A worker reads on in a partition only while its newest event time, less the allowed
    /// lateness, is at most this far ahead of the partition furthest behind (or of the
    /// watermark, when later); a partition further ahead waits for the others. Bounds what a
    /// backlog holds in memory waiting for the watermark: roughly this much event time of the
    /// partitions' readings. Default: `"5s"`.
    #[serde(default, with = "duration::option")]
    #[schemars(with = "Option<duration::DurationString>")]
    max_partition_skew: Option<Duration>,
}

impl RawSource {
    fn over(self, defaults: SourceConfig) -> SourceConfig {
        SourceConfig {
            topic: self.topic.unwrap_or(defaults.topic),
            allowed_lateness: self.allowed_lateness.unwrap_or(defaults.allowed_lateness),
            idle_timeout: self.idle_timeout.unwrap_or(defaults.idle_timeout),
            max_message_bytes: self.max_message_bytes.unwrap_or(defaults.max_message_bytes),
            max_future: self.max_future.unwrap_or(defaults.max_future),
            max_partition_skew: self
                .max_partition_skew
                .unwrap_or(defaults.max_partition_skew),
        }
    }
}

impl From<RawSources> for SourcesConfig {
    fn from(raw: RawSources) -> Self {
        let source = |raw: Option<RawSource>, domain| {
            let defaults = SourceConfig::defaults(domain);
            match raw {
                Some(raw) => raw.over(defaults),
                None => defaults,
            }
        };
        SourcesConfig {
            mine: source(raw.mine, Domain::Mine),
            farm: source(raw.farm, Domain::Farm),
            citizen: source(raw.citizen, Domain::Citizen),
        }
    }
}

/// `[registry]`: the compacted reference-data topics, read to their end at start-up.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct RegistryConfig {
    /// Topic of mine sensors (sensor id to mine, face, kind). Default: `"registry.sensors"`.
    pub sensors: String,
    /// Topic of farm devices (device id to farm, greenhouse or herd, kind).
    /// Default: `"registry.devices"`.
    pub devices: String,
    /// Topic of citizen grids (grid id to village, town, district).
    /// Default: `"registry.grids"`.
    pub grids: String,
    /// Longest wait for reading the registry topics to their end at start-up. Greater than
    /// zero. Default: `"30s"`.
    #[serde(with = "duration")]
    #[schemars(with = "duration::DurationString")]
    pub load_timeout: Duration,
}

impl Default for RegistryConfig {
    fn default() -> Self {
        RegistryConfig {
            sensors: "registry.sensors".to_string(),
            devices: "registry.devices".to_string(),
            grids: "registry.grids".to_string(),
            load_timeout: Duration::from_secs(30),
        }
    }
}

/// `[rules]`: the rule files.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct RulesConfig {
    /// Rule files, relative to the directory of the config file (absolute paths are kept).
    /// Default: none.
    pub files: Vec<PathBuf>,
}

/// `[outputs]`: where alert transitions and dead letters go. Every output is optional.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct OutputsConfig {
    /// Kafka topic alert transitions are written to. Default: none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alerts_topic: Option<String>,
    /// JSON-lines file alert transitions are appended to, relative to the directory of the
    /// config file. Default: none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alerts_file: Option<PathBuf>,
    /// Kafka topic dead letters are written to. Default: none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dead_letter_topic: Option<String>,
    /// JSON-lines file dead letters are appended to, relative to the directory of the config
    /// file. Default: none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dead_letter_file: Option<PathBuf>,
}

/// Why `name` is not a usable Kafka topic name, if it is not.
fn topic_problem(name: &str) -> Option<(String, Option<String>)> {
    if name.is_empty() {
        return Some(("must not be empty".to_string(), None));
    }
    let legal = name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if !legal || name == "." || name == ".." || name.len() > 249 {
        return Some((
            format!("`{name}` is not a valid Kafka topic name"),
            Some(
                "topic names use letters, digits, `.`, `_` and `-`, at most 249 of them"
                    .to_string(),
            ),
        ));
    }
    None
}

/// Checks what the types alone cannot, reporting at the position of each offending value.
/// `root` is the parsed document `config` was read from.
pub(crate) fn validate(config: &Config, root: &Spanned<DeValue<'_>>, cx: &mut FileCx<'_>) {
    let span = |p: &[Seg]| value_at(root, p).map_or(0..0, Spanned::span);
    super::dispatch::validate(&config.dispatch, root, cx);

    for problem in config.engine.problems() {
        cx.error(
            span(&path(&["engine", problem.field])),
            problem.message,
            Some(problem.hint.to_string()),
        );
    }
    for (value, keys) in [
        (config.engine.status_interval, ["engine", "status_interval"]),
        (config.registry.load_timeout, ["registry", "load_timeout"]),
        (
            config.recovery.commit_interval,
            ["recovery", "commit_interval"],
        ),
        (config.reload.debounce, ["reload", "debounce"]),
    ] {
        if value.is_zero() {
            let p = path(&keys);
            cx.error(
                span(&p),
                format!("`{}` must be greater than zero", display_path("", &p)),
                None,
            );
        }
    }

    if let Some(brokers) = &config.kafka.brokers
        && brokers.trim().is_empty()
    {
        cx.error(
            span(&path(&["kafka", "brokers"])),
            "`kafka.brokers` must not be empty",
            Some("a comma-separated list of host:port, e.g. \"127.0.0.1:9092\"".to_string()),
        );
    }
    if config.kafka.group_id.trim().is_empty() {
        cx.error(
            span(&path(&["kafka", "group_id"])),
            "`kafka.group_id` must not be empty",
            None,
        );
    }
    for name in config.kafka.properties.keys() {
        let p = path(&["kafka", "properties", name]);
        let at = key_span_at(root, &p).unwrap_or(0..0);
        if name.trim().is_empty() {
            cx.error(at, "librdkafka property names must not be empty", None);
        } else if let Some((_, instead)) = MANAGED_PROPERTIES
            .iter()
            .find(|(managed, _)| managed == name)
        {
            cx.error(
                at,
                format!("librdkafka property `{name}` is managed by the engine"),
                Some((*instead).to_string()),
            );
        }
    }

    // Every topic, with the path it is configured at; inputs and outputs must all differ.
    let mut topics: Vec<(Vec<Seg>, &str)> = Vec::new();
    for (name, source) in [
        ("mine", &config.sources.mine),
        ("farm", &config.sources.farm),
        ("citizen", &config.sources.citizen),
    ] {
        topics.push((path(&["sources", name, "topic"]), &source.topic));
        if source.max_message_bytes == 0 {
            let p = path(&["sources", name, "max_message_bytes"]);
            cx.error(
                span(&p),
                format!("`{}` must be at least 1", display_path("", &p)),
                None,
            );
        }
    }
    topics.push((path(&["registry", "sensors"]), &config.registry.sensors));
    topics.push((path(&["registry", "devices"]), &config.registry.devices));
    topics.push((path(&["registry", "grids"]), &config.registry.grids));
    if let Some(topic) = &config.outputs.alerts_topic {
        topics.push((path(&["outputs", "alerts_topic"]), topic));
    }
    if let Some(topic) = &config.outputs.dead_letter_topic {
        topics.push((path(&["outputs", "dead_letter_topic"]), topic));
    }
    let mut first_use: HashMap<&str, &[Seg]> = HashMap::new();
    for (p, topic) in &topics {
        if let Some((problem, hint)) = topic_problem(topic) {
            cx.error(
                span(p),
                format!("`{}` {problem}", display_path("", p)),
                hint,
            );
            continue;
        }
        match first_use.get(topic) {
            Some(first) => {
                // Point at whichever of the two is written in the file (a default is not).
                let at: Range<usize> = value_at(root, p)
                    .or_else(|| value_at(root, first))
                    .map_or(0..0, Spanned::span);
                cx.error(
                    at,
                    format!(
                        "topic `{topic}` is used by both `{}` and `{}`",
                        display_path("", first),
                        display_path("", p)
                    ),
                    Some("every input and output needs its own topic".to_string()),
                );
            }
            None => {
                first_use.insert(topic, p);
            }
        }
    }

    for (i, file) in config.rules.files.iter().enumerate() {
        if file.as_os_str().is_empty() {
            let mut p = path(&["rules", "files"]);
            p.push(Seg::Index(i));
            cx.error(span(&p), "rule file paths must not be empty", None);
        }
    }
    if config.reload.audit_log.as_os_str().is_empty() {
        cx.error(
            span(&path(&["reload", "audit_log"])),
            "`reload.audit_log` must not be empty",
            Some("leave it out for the default \"citybrain-audit.jsonl\"".to_string()),
        );
    }
    for (file, key) in [
        (&config.outputs.alerts_file, "alerts_file"),
        (&config.outputs.dead_letter_file, "dead_letter_file"),
    ] {
        if file.as_ref().is_some_and(|f| f.as_os_str().is_empty()) {
            cx.error(
                span(&path(&["outputs", key])),
                format!("`outputs.{key}` must not be empty"),
                None,
            );
        }
    }
    if let (Some(alerts), Some(dead)) = (
        &config.outputs.alerts_file,
        &config.outputs.dead_letter_file,
    ) && alerts == dead
        && !alerts.as_os_str().is_empty()
    {
        cx.error(
            span(&path(&["outputs", "dead_letter_file"])),
            "`outputs.dead_letter_file` is the same file as `outputs.alerts_file`",
            Some("alerts and dead letters need separate files".to_string()),
        );
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::load_str;

    fn errors(text: &str) -> Vec<String> {
        match load_str(Path::new("citybrain.toml"), text) {
            Ok(config) => panic!("expected errors, got {config:?}"),
            Err(all) => all
                .iter()
                .map(|d| format!("{}:{}: {}", d.line, d.column, d.message))
                .collect(),
        }
    }

    #[test]
    fn command_line_overrides_are_checked_like_the_file() {
        // `citybrain run --processes 2 --process-id 2` over a config without a hostfile.
        let engine = EngineConfig {
            processes: 2,
            process_id: 2,
            ..EngineConfig::default()
        };
        let problems: Vec<(&str, String)> = engine
            .problems()
            .into_iter()
            .map(|p| (p.field, p.message))
            .collect();
        assert_eq!(
            problems,
            [
                (
                    "process_id",
                    "`engine.process_id` 2 is not below `engine.processes` 2".to_string()
                ),
                (
                    "processes",
                    "`engine.processes` above 1 needs `engine.hostfile`".to_string()
                ),
            ]
        );
        assert!(EngineConfig::default().problems().is_empty());
    }

    fn valid(text: &str) -> Config {
        match load_str(Path::new("citybrain.toml"), text) {
            Ok(config) => config,
            Err(all) => panic!("expected a valid config, got:\n{all}"),
        }
    }

    #[test]
    fn only_brokers_is_a_complete_config() {
        let config = valid("[kafka]\nbrokers = \"127.0.0.1:9092\"\n");
        assert_eq!(config.kafka.brokers.as_deref(), Some("127.0.0.1:9092"));
        assert_eq!(config.kafka.group_id, "citybrain");
        assert!(config.kafka.properties.is_empty());
        assert_eq!(config.engine.workers, default_workers());
        assert!(config.engine.workers >= 1);
        assert_eq!(config.engine.status_interval, Duration::from_secs(5));
        assert_eq!(config.sources.mine.topic, "mine.readings");
        assert_eq!(config.sources.farm.topic, "farm.readings");
        assert_eq!(config.sources.citizen.topic, "citizen.reports");
        assert_eq!(
            config.sources.mine.allowed_lateness,
            Duration::from_millis(250)
        );
        assert_eq!(
            config.sources.citizen.allowed_lateness,
            Duration::from_secs(300)
        );
        assert_eq!(config.sources.farm.idle_timeout, Duration::from_millis(500));
        assert_eq!(config.sources.mine.max_message_bytes, 65_536);
        assert_eq!(config.sources.citizen.max_future, Duration::from_secs(3600));
        assert_eq!(config.registry, RegistryConfig::default());
        assert_eq!(config.registry.load_timeout, Duration::from_secs(30));
        assert_eq!(config.registry.grids, "registry.grids");
        assert!(config.rules.files.is_empty());
        assert_eq!(config.outputs, OutputsConfig::default());
        // An empty file is valid too (the demo fills in the brokers).
        assert_eq!(valid("").kafka.brokers, None);
    }

    #[test]
    fn partial_source_keeps_its_domain_defaults() {
        let config = valid(
            "[sources.citizen]\ntopic = \"reports\"\n[sources.mine]\nallowed_lateness = \"1s\"\n",
        );
        assert_eq!(config.sources.citizen.topic, "reports");
        assert_eq!(
            config.sources.citizen.allowed_lateness,
            Duration::from_secs(300)
        );
        assert_eq!(config.sources.mine.topic, "mine.readings");
        assert_eq!(config.sources.mine.allowed_lateness, Duration::from_secs(1));
        assert_eq!(config.sources.get(Domain::Citizen).topic, "reports");
    }

    #[test]
    fn every_field_is_read() {
        let config = valid(
            r#"
[engine]
workers = 3
status_interval = "10s"
[kafka]
brokers = "k1:9092,k2:9092"
group_id = "cb-test"
properties = { "session.timeout.ms" = "6000" }
[sources.farm]
topic = "farm.in"
allowed_lateness = "1s"
idle_timeout = "2s"
max_message_bytes = 1024
max_future = "5m"
max_partition_skew = "2s"
[registry]
sensors = "s"
devices = "d"
grids = "g"
load_timeout = "1m"
[rules]
files = ["rules/a.toml", "/abs/b.toml"]
[outputs]
alerts_topic = "alerts"
alerts_file = "alerts.jsonl"
dead_letter_topic = "dead-letters"
dead_letter_file = "dead.jsonl"
"#,
        );
        assert_eq!(config.engine.workers, 3);
        assert_eq!(config.engine.status_interval, Duration::from_secs(10));
        assert_eq!(config.kafka.group_id, "cb-test");
        assert_eq!(
            config
                .kafka
                .properties
                .get("session.timeout.ms")
                .map(String::as_str),
            Some("6000")
        );
        assert_eq!(
            config.sources.farm,
            SourceConfig {
                topic: "farm.in".into(),
                allowed_lateness: Duration::from_secs(1),
                idle_timeout: Duration::from_secs(2),
                max_message_bytes: 1024,
                max_future: Duration::from_secs(300),
                max_partition_skew: Duration::from_secs(2),
            }
        );
        assert_eq!(config.registry.load_timeout, Duration::from_secs(60));
        assert_eq!(
            config.rules.files,
            vec![PathBuf::from("rules/a.toml"), PathBuf::from("/abs/b.toml")]
        );
        assert_eq!(
            config.outputs.dead_letter_file,
            Some(PathBuf::from("dead.jsonl"))
        );
        // The effective config serializes (e.g. for `citybrain config --print`).
        let json = serde_json::to_value(&config).ok();
        assert_eq!(
            json.as_ref()
                .and_then(|j| j.pointer("/sources/farm/max_future"))
                .and_then(|v| v.as_str()),
            Some("5m")
        );
    }

    #[test]
    fn workers_zero_and_empty_topics() {
        let text = "[engine]\nworkers = 0\n[sources.mine]\ntopic = \"\"\n[registry]\ngrids = \"\"\n[outputs]\nalerts_topic = \"a b\"\n";
        assert_eq!(
            errors(text),
            vec![
                "2:11: `engine.workers` must be at least 1",
                "4:9: `sources.mine.topic` must not be empty",
                "6:9: `registry.grids` must not be empty",
                "8:16: `outputs.alerts_topic` `a b` is not a valid Kafka topic name",
            ]
        );
    }

    #[test]
    fn cluster_settings_are_checked() {
        assert_eq!(
            errors("[engine]\nprocesses = 2\nprocess_id = 2\n"),
            vec![
                "2:13: `engine.processes` above 1 needs `engine.hostfile`",
                "3:14: `engine.process_id` 2 is not below `engine.processes` 2",
            ]
        );
        assert_eq!(
            errors("[engine]\nprocesses = 0\n"),
            vec!["2:13: `engine.processes` must be at least 1"]
        );
        let config = valid("[engine]\nprocesses = 2\nprocess_id = 1\nhostfile = \"h\"\n");
        assert_eq!((config.engine.processes, config.engine.process_id), (2, 1));
        assert_eq!(config.engine.hostfile, Some(PathBuf::from("h")));
    }

    #[test]
    fn unknown_fields_wrong_types_and_bad_durations_all_at_once() {
        let text = r#"[engine]
wrokers = 2
status_interval = "5 parsecs"
[kafka]
brokers = "b:9092"
properties = { "fetch.min.bytes" = 1 }
[sources.mien]
topic = "x"
[sources.farm]
max_message_bytes = "big"
idle_timeout = 500
"#;
        let all = match load_str(Path::new("c.toml"), text) {
            Ok(c) => panic!("expected errors, got {c:?}"),
            Err(all) => all,
        };
        // humantime's list of units after the reason varies between its versions.
        let lines: Vec<String> = all
            .iter()
            .map(|d| format!("{}:{}: {}", d.line, d.column, d.message))
            .map(|line| match line.split_once(", supported units") {
                Some((reason, _)) => reason.to_string(),
                None => line,
            })
            .collect();
        assert_eq!(
            lines,
            vec![
                "2:1: unknown field `engine.wrokers`",
                "3:19: `engine.status_interval`: invalid duration \"5 parsecs\": unknown time unit \"parsecs\"",
                "6:36: `kafka.properties.\"fetch.min.bytes\"` must be a string, found integer `1`",
                "7:10: unknown field `sources.mien`",
                "10:21: `sources.farm.max_message_bytes` must be a non-negative integer, found string \"big\"",
                "11:16: `sources.farm.idle_timeout` must be a duration string such as \"250ms\", \"30s\" or \"5m\", found integer `500`",
            ]
        );
        let hints: Vec<Option<&str>> = all.iter().map(|d| d.hint.as_deref()).collect();
        assert_eq!(
            hints[0],
            Some(
                "did you mean `workers`? expected one of: workers, status_interval, processes, process_id, hostfile"
            )
        );
        assert_eq!(hints[1], Some(duration::HINT));
        assert_eq!(hints[2], Some("strings are written in quotes: \"1\""));
        assert_eq!(
            hints[3],
            Some("did you mean `mine`? expected one of: mine, farm, citizen")
        );
    }

    #[test]
    fn recovery_section() {
        assert_eq!(
            errors("[recovery]\ncommit_interval = \"0s\"\ncitizen_history = \"3 fortnights\"\n"),
            vec![
                "2:19: `recovery.commit_interval` must be greater than zero",
                "3:19: `recovery.citizen_history`: invalid duration \"3 fortnights\": unknown time unit \"fortnights\", supported units: ns, us/µs, ms, sec, min, hours, days, weeks, months, years (and few variations)",
            ]
        );
        assert_eq!(
            errors("[recovery]\ncommit_interval = \"0s\"\n"),
            vec!["2:19: `recovery.commit_interval` must be greater than zero"]
        );
        let defaults = RecoveryConfig::default();
        assert_eq!(defaults.citizen_history, Duration::from_secs(604_800));
        assert_eq!(defaults.sensor_history, Duration::from_secs(900));
    }

    #[test]
    fn kafka_checks() {
        let text = "[kafka]\nbrokers = \" \"\ngroup_id = \"\"\nproperties = { \"group.id\" = \"x\", \"enable.auto.commit\" = \"true\", \"linger.ms\" = \"5\" }\n";
        assert_eq!(
            errors(text),
            vec![
                "2:11: `kafka.brokers` must not be empty",
                "3:12: `kafka.group_id` must not be empty",
                "4:16: librdkafka property `group.id` is managed by the engine",
                "4:34: librdkafka property `enable.auto.commit` is managed by the engine",
            ]
        );
    }

    #[test]
    fn topics_must_differ_and_durations_be_positive() {
        let text = "[engine]\nstatus_interval = \"0s\"\n[sources.farm]\ntopic = \"mine.readings\"\nmax_message_bytes = 0\n[outputs]\nalerts_topic = \"registry.grids\"\nalerts_file = \"a.jsonl\"\ndead_letter_file = \"a.jsonl\"\n";
        assert_eq!(
            errors(text),
            vec![
                "2:19: `engine.status_interval` must be greater than zero",
                "4:9: topic `mine.readings` is used by both `sources.mine.topic` and `sources.farm.topic`",
                "5:21: `sources.farm.max_message_bytes` must be at least 1",
                "7:16: topic `registry.grids` is used by both `registry.grids` and `outputs.alerts_topic`",
                "9:20: `outputs.dead_letter_file` is the same file as `outputs.alerts_file`",
            ]
        );
    }

    #[test]
    fn reload_section_defaults_and_errors() {
        let config = valid("[kafka]\nbrokers = \"b:9092\"\n");
        assert_eq!(config.reload, ReloadConfig::default());
        assert!(config.reload.watch);
        assert_eq!(config.reload.debounce, Duration::from_millis(200));
        assert_eq!(
            config.reload.audit_log,
            PathBuf::from("citybrain-audit.jsonl")
        );
        let set = valid(
            "[reload]\nwatch = false\ndebounce = \"1s\"\naudit_log = \"audit/rules.jsonl\"\n",
        );
        assert_eq!(
            set.reload,
            ReloadConfig {
                watch: false,
                debounce: Duration::from_secs(1),
                audit_log: PathBuf::from("audit/rules.jsonl"),
            }
        );
        assert_eq!(
            errors(
                "[reload]\nwatch = \"yes\"\ndebounce = \"0s\"\naudit_log = \"\"\nwatched = true\n"
            ),
            vec![
                "2:9: `reload.watch` must be a boolean, found string \"yes\"",
                "3:12: `reload.debounce` must be greater than zero",
                "4:13: `reload.audit_log` must not be empty",
                "5:1: unknown field `reload.watched`",
            ]
        );
    }

    #[test]
    fn rule_tables_in_the_main_config_are_pointed_out() {
        let text = "[kafka]\nbrokers = \"b:9092\"\n[[rule]]\nid = \"x\"\n";
        assert_eq!(
            errors(text),
            vec!["3:3: `[[rule]]` tables belong in a rule file"]
        );
    }

    #[test]
    fn syntax_errors_are_reported_with_other_errors() {
        let text = "[engine]\nworkers = 0\nstatus_interval = \n[kafka]\nbrokers = \"b\"\n";
        assert_eq!(
            errors(text),
            vec![
                "2:11: `engine.workers` must be at least 1",
                "3:19: TOML syntax error: string values must be quoted",
            ]
        );
    }
}
