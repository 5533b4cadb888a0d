//! `[dispatch]`: where alert transitions are delivered (webhooks, Kafka topics), how they are
//! routed and silenced, and the durable alert log (outbox) behind it.
//!
//! ```toml
//! [dispatch]
//! dir = "state/dispatch"            # alert log + dead letters, relative to this file
//! fsync = "interval"                # always | interval | never
//! fsync_interval = "100ms"
//! allowed_hosts = ["10.0.0.0/8", "*.ordos.example"]
//!
//! [dispatch.receivers.mine-rescue]
//! url = "https://rescue.ordos.example/hooks/citybrain"
//! secret_env = "MINE_RESCUE_WEBHOOK_SECRET"
//!
//! [dispatch.receivers.alerts-bus]
//! kind = "kafka"
//! topic = "dispatch.alerts"
//!
//! [[dispatch.route]]
//! matchers = ['domain = "mine"', 'severity = "critical"']
//! receivers = ["mine-rescue", "alerts-bus"]
//! repeat_interval = "30m"
//!
//! [[dispatch.silence]]
//! matchers = ['mine = "dalad-3"']
//! starts_at = "2026-11-29T08:00:00+08:00"
//! ends_at = "2026-11-29T12:00:00+08:00"
//! comment = "planned ventilation maintenance"
//! ```
//!
//! Every field is documented on [`DispatchConfig`], [`ReceiverConfig`], [`RouteConfig`] and
//! [`SilenceConfig`]. Without receivers, dispatch is off. [`DispatchConfig::to_settings`]
//! turns the config into the connectors' [`DispatchSettings`].

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use citybrain_connectors::dispatch::{
    BreakerSettings, DispatchSettings, FsyncPolicy, HostRule, KafkaConnection, KafkaKey,
    KafkaReceiverSettings, Matcher, PayloadFormat, ReceiverKind, ReceiverSettings, RetrySettings,
    RouteSettings, Secret, SilenceRecord, WebhookSettings, is_valid_receiver_name, validate_url,
};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize, Serializer};
use serde_spanned::Spanned;
use toml::de::DeValue;

use super::de::{Seg, display_path, key_span_at, path, value_at};
use super::diagnostic::{FileCx, one_of_hint};
use super::duration;

/// `[dispatch]`. Every field is optional.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct DispatchConfig {
    /// Directory of the alert log (`outbox/`) and of the per-receiver dead-letter files
    /// (`dead-letters/<receiver>.jsonl`), relative to the directory of the config file.
    /// Default: `"state/dispatch"`.
    pub dir: PathBuf,
    /// When transitions appended to the alert log are flushed to disk: `always` (before
    /// `submit` returns), `interval` (within `fsync_interval`) or `never` (left to the OS; a
    /// process crash loses nothing, a power cut may). Default: `"interval"`.
    pub fsync: FsyncMode,
    /// The flush interval of `fsync = "interval"`. Greater than zero. Default: `"100ms"`.
    #[serde(with = "duration")]
    #[schemars(with = "duration::DurationString")]
    pub fsync_interval: Duration,
    /// Compact the alert log when its active segment exceeds this many bytes. At least 4096.
    /// Default: 67108864 (64 MiB).
    #[schemars(range(min = 4096))]
    pub segment_bytes: u64,
    /// How many recent transition ids are remembered to drop transitions a replay repeats.
    /// At least 1. Default: 100000.
    #[schemars(range(min = 1))]
    pub dedupe_ids: usize,
    /// Link to this engine's UI, sent as Alertmanager's `externalURL`. Default: `""`.
    pub external_url: String,
    /// Hosts webhook URLs may point at: host names (`hooks.example`), subdomains
    /// (`*.ordos.example`), IP addresses and CIDR networks (`10.0.0.0/8`). Host names are
    /// compared as written, not resolved. Default: empty, meaning any host.
    pub allowed_hosts: Vec<String>,
    /// `[dispatch.receivers.NAME]`: the receivers by name (letters, digits, `-`, `_`, `.`).
    /// Default: none (dispatch off).
    pub receivers: BTreeMap<String, ReceiverConfig>,
    /// `[[dispatch.route]]`: the routes, tried in order. Default: none.
    #[serde(rename = "route")]
    pub routes: Vec<RouteConfig>,
    /// `[[dispatch.silence]]`: silences. Default: none.
    #[serde(rename = "silence")]
    pub silences: Vec<SilenceConfig>,
}

impl Default for DispatchConfig {
    fn default() -> Self {
        DispatchConfig {
            dir: PathBuf::from("state/dispatch"),
            fsync: FsyncMode::Interval,
            fsync_interval: Duration::from_millis(100),
            segment_bytes: 64 * 1024 * 1024,
            dedupe_ids: 100_000,
            external_url: String::new(),
            allowed_hosts: Vec::new(),
            receivers: BTreeMap::new(),
            routes: Vec::new(),
            silences: Vec::new(),
        }
    }
}

/// `fsync`: when the alert log is flushed to disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum FsyncMode {
    /// After every transition.
    Always,
    /// Every `fsync_interval`.
    Interval,
    /// Never explicitly.
    Never,
}

/// `kind` of a receiver.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ReceiverKindConfig {
    /// A signed HTTP POST.
    #[default]
    Webhook,
    /// A Kafka topic (on the brokers of `[kafka]`).
    Kafka,
}

/// `format` of a webhook receiver.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum FormatConfig {
    /// citybrain's JSON (see `connectors::dispatch::payload`).
    Citybrain,
    /// Alertmanager's webhook JSON, version 4.
    Alertmanager,
}

/// `key` of a Kafka receiver's messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum KafkaKeyConfig {
    /// `rule/entity`.
    Alert,
    /// The rule id.
    Rule,
    /// The entity.
    Entity,
}

/// A signing secret written in the config; never shown by `Debug` or serialization.
#[derive(Clone, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(transparent)]
pub struct ConfigSecret(pub String);

impl fmt::Debug for ConfigSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl Serialize for ConfigSecret {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str("<redacted>")
    }
}

/// `[dispatch.receivers.NAME]`: one receiver.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct ReceiverConfig {
    /// `webhook` or `kafka`. Default: `"webhook"`.
    pub kind: ReceiverKindConfig,
    /// Webhook: the URL, `http` or `https`, allowed by `allowed_hosts`. Required for webhooks.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Webhook: the signing secret, `whsec_<base64>` or any other string (used as bytes).
    /// At most one of `secret` and `secret_env`; with neither, requests are not signed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret: Option<ConfigSecret>,
    /// Webhook: the environment variable holding the secret (read at start).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret_env: Option<String>,
    /// Webhook: `citybrain` or `alertmanager`. Default: `"citybrain"`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub format: Option<FormatConfig>,
    /// Kafka: the topic. Required for Kafka receivers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub topic: Option<String>,
    /// Kafka: the message key, `alert` (`rule/entity`), `rule` or `entity`. Default: `"alert"`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<KafkaKeyConfig>,
    /// Longest wait for one request (webhook: the whole exchange; Kafka: the broker's
    /// acknowledgement). Greater than zero. Default: `"5s"`.
    #[serde(with = "duration")]
    #[schemars(with = "duration::DurationString")]
    pub timeout: Duration,
    /// Requests in flight at once. At least 1. Default: 4.
    #[schemars(range(min = 1))]
    pub max_concurrency: usize,
    /// Most transitions in one grouped request (see `group_wait`). At least 1. Default: 100.
    #[schemars(range(min = 1))]
    pub max_batch: usize,
    /// The first retry waits up to this (full jitter); each retry doubles it. Greater than
    /// zero. Default: `"500ms"`.
    #[serde(with = "duration")]
    #[schemars(with = "duration::DurationString")]
    pub retry_base: Duration,
    /// The retry wait is capped at this. At least `retry_base`. Default: `"1m"`.
    #[serde(with = "duration")]
    #[schemars(with = "duration::DurationString")]
    pub retry_max: Duration,
    /// A receiver's `Retry-After` is honoured up to this long. Default: `"10m"`.
    #[serde(with = "duration")]
    #[schemars(with = "duration::DurationString")]
    pub max_retry_after: Duration,
    /// Give up on a request first tried this long ago and dead-letter it. Default: never
    /// (retry until delivered).
    #[serde(
        default,
        with = "duration::option",
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(with = "Option<duration::DurationString>")]
    pub give_up_after: Option<Duration>,
    /// Failed attempts in a row that open the circuit breaker; 0 disables it. Default: 5.
    pub breaker_failures: u32,
    /// How long the open breaker holds requests back before one probe. Greater than zero.
    /// Default: `"30s"`.
    #[serde(with = "duration")]
    #[schemars(with = "duration::DurationString")]
    pub breaker_cooldown: Duration,
}

impl Default for ReceiverConfig {
    fn default() -> Self {
        let retry = RetrySettings::default();
        let breaker = BreakerSettings::default();
        ReceiverConfig {
            kind: ReceiverKindConfig::Webhook,
            url: None,
            secret: None,
            secret_env: None,
            format: None,
            topic: None,
            key: None,
            timeout: Duration::from_secs(5),
            max_concurrency: 4,
            max_batch: 100,
            retry_base: retry.base,
            retry_max: retry.max,
            max_retry_after: retry.max_retry_after,
            give_up_after: None,
            breaker_failures: breaker.failures,
            breaker_cooldown: breaker.cooldown,
        }
    }
}

/// `[[dispatch.route]]`: one route. A transition goes to the receivers of the first route
/// whose matchers all match its labels, and of later matching routes while the matched ones
/// say `continue = true`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct RouteConfig {
    /// Label matchers, all of which must match: `label = "value"`, `!=`, `=~ "regex"`,
    /// `!~`. Labels: the transition's labels (mine, face, district, town, village, level,
    /// team, ...) plus rule, entity, domain, severity and state. Default: none (match all).
    pub matchers: Vec<String>,
    /// Receiver names. At least one.
    pub receivers: Vec<String>,
    /// Keep trying later routes after this one matched. Default: `false`.
    #[serde(rename = "continue")]
    pub continue_matching: bool,
    /// Webhook receivers get the transitions arriving within this window in one request.
    /// Default: `"0s"` (each on its own).
    #[serde(with = "duration")]
    #[schemars(with = "duration::DurationString")]
    pub group_wait: Duration,
    /// Remind receivers of an alert still firing this long after the last notification.
    /// Default: no reminders.
    #[serde(
        default,
        with = "duration::option",
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(with = "Option<duration::DurationString>")]
    pub repeat_interval: Option<Duration>,
}

/// `[[dispatch.silence]]`: transitions matching every matcher between `starts_at` and
/// `ends_at` go to no receiver (they are still logged).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct SilenceConfig {
    /// Label matchers, as in routes. At least one.
    pub matchers: Vec<String>,
    /// Start, an RFC 3339 string. Default: always started.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub starts_at: Option<String>,
    /// End, an RFC 3339 string, after `starts_at`. Required.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ends_at: Option<String>,
    /// Who set it up. Default: `""`.
    pub created_by: String,
    /// Why. Default: `""`.
    pub comment: String,
}

/// The dispatch config could not be turned into settings.
#[derive(Debug, thiserror::Error)]
pub enum DispatchConfigError {
    /// A receiver's `secret_env` variable is not set.
    #[error("receiver `{receiver}`: environment variable `{var}` (secret_env) is not set")]
    MissingSecretEnv {
        /// The receiver.
        receiver: String,
        /// The variable.
        var: String,
    },
    /// Something the validation should have caught.
    #[error("dispatch config: {0}")]
    Invalid(String),
}

fn parse_rfc3339(text: &str) -> Result<u64, String> {
    citybrain_model::parse_event_time(&serde_json::Value::String(text.to_string()))
}

impl DispatchConfig {
    /// Whether dispatch is configured (at least one receiver).
    pub fn is_enabled(&self) -> bool {
        !self.receivers.is_empty()
    }

    /// The connectors' settings, with paths resolved against `base_dir` and secrets read
    /// from the environment. `kafka` is needed when there are Kafka receivers.
    pub fn to_settings(
        &self,
        base_dir: &Path,
        kafka: Option<KafkaConnection>,
    ) -> Result<DispatchSettings, DispatchConfigError> {
        let invalid = |what: String| DispatchConfigError::Invalid(what);
        let dir = base_dir.join(&self.dir);
        let mut settings = DispatchSettings::new(&dir);
        settings.outbox.fsync = match self.fsync {
            FsyncMode::Always => FsyncPolicy::Always,
            FsyncMode::Interval => FsyncPolicy::Interval(self.fsync_interval),
            FsyncMode::Never => FsyncPolicy::Never,
        };
        settings.outbox.segment_bytes = self.segment_bytes;
        settings.outbox.dedupe_ids = self.dedupe_ids;
        settings.external_url = self.external_url.clone();
        settings.kafka = kafka;
        let allowed = self
            .allowed_hosts
            .iter()
            .map(|h| HostRule::parse(h).map_err(|e| invalid(e.to_string())))
            .collect::<Result<Vec<_>, _>>()?;
        for (name, r) in &self.receivers {
            let kind = match r.kind {
                ReceiverKindConfig::Webhook => {
                    let url = r
                        .url
                        .as_deref()
                        .ok_or_else(|| invalid(format!("receiver `{name}` has no url")))?;
                    let url = validate_url(url, &allowed)
                        .map_err(|e| invalid(format!("receiver `{name}`: {e}")))?;
                    let text = match (&r.secret, &r.secret_env) {
                        (Some(secret), _) => Some(secret.0.clone()),
                        (None, Some(var)) => Some(std::env::var(var).map_err(|_| {
                            DispatchConfigError::MissingSecretEnv {
                                receiver: name.clone(),
                                var: var.clone(),
                            }
                        })?),
                        (None, None) => None,
                    };
                    let secret = text
                        .map(|t| Secret::parse(&t))
                        .transpose()
                        .map_err(|e| invalid(format!("receiver `{name}`: secret: {e}")))?;
                    ReceiverKind::Webhook(WebhookSettings {
                        url,
                        secret,
                        timeout: r.timeout,
                        format: match r.format {
                            Some(FormatConfig::Alertmanager) => PayloadFormat::Alertmanager,
                            Some(FormatConfig::Citybrain) | None => PayloadFormat::Citybrain,
                        },
                    })
                }
                ReceiverKindConfig::Kafka => ReceiverKind::Kafka(KafkaReceiverSettings {
                    topic: r
                        .topic
                        .clone()
                        .ok_or_else(|| invalid(format!("receiver `{name}` has no topic")))?,
                    key: match r.key {
                        Some(KafkaKeyConfig::Rule) => KafkaKey::Rule,
                        Some(KafkaKeyConfig::Entity) => KafkaKey::Entity,
                        Some(KafkaKeyConfig::Alert) | None => KafkaKey::Alert,
                    },
                    timeout: r.timeout,
                }),
            };
            let mut receiver = ReceiverSettings::new(name.clone(), kind);
            receiver.max_concurrency = r.max_concurrency;
            receiver.max_batch = r.max_batch;
            receiver.retry = RetrySettings {
                base: r.retry_base,
                max: r.retry_max,
                max_retry_after: r.max_retry_after,
                give_up_after: r.give_up_after,
            };
            receiver.breaker = BreakerSettings {
                failures: r.breaker_failures,
                cooldown: r.breaker_cooldown,
            };
            settings.receivers.push(receiver);
        }
        let matchers = |list: &[String]| {
            list.iter()
                .map(|m| Matcher::parse(m).map_err(|e| invalid(format!("matcher `{m}`: {e}"))))
                .collect::<Result<Vec<_>, _>>()
        };
        for route in &self.routes {
            settings.routes.push(RouteSettings {
                matchers: matchers(&route.matchers)?,
                receivers: route.receivers.clone(),
                continue_matching: route.continue_matching,
                group_wait: route.group_wait,
                repeat_interval: route.repeat_interval,
            });
        }
        for (i, silence) in self.silences.iter().enumerate() {
            let starts_at = match &silence.starts_at {
                Some(text) => parse_rfc3339(text).map_err(invalid)?,
                None => 0,
            };
            let ends_at = silence
                .ends_at
                .as_deref()
                .ok_or_else(|| invalid(format!("silence {i} has no ends_at")))
                .and_then(|text| parse_rfc3339(text).map_err(invalid))?;
            settings.silences.push(SilenceRecord {
                id: format!("cfg-{i}"),
                matchers: silence.matchers.clone(),
                starts_at,
                ends_at,
                created_by: silence.created_by.clone(),
                comment: silence.comment.clone(),
            });
        }
        Ok(settings)
    }
}

/// Environment variable names: letters, digits and `_`, not starting with a digit.
fn is_env_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Checks `[dispatch]` beyond its types, reporting at the position of each offending value.
pub(crate) fn validate(config: &DispatchConfig, root: &Spanned<DeValue<'_>>, cx: &mut FileCx<'_>) {
    let at = |p: &[Seg]| value_at(root, p).map_or(0..0, Spanned::span);
    let key_at = |p: &[Seg]| key_span_at(root, p).unwrap_or(0..0);
    let field = |rest: &[&str]| {
        let mut p = path(&["dispatch"]);
        p.extend(path(rest));
        p
    };
    let positive = |cx: &mut FileCx<'_>, value: Duration, p: Vec<Seg>| {
        if value.is_zero() {
            cx.error(
                at(&p),
                format!("`{}` must be greater than zero", display_path("", &p)),
                None,
            );
        }
    };

    if config.dir.as_os_str().is_empty() {
        cx.error(
            at(&field(&["dir"])),
            "`dispatch.dir` must not be empty",
            None,
        );
    }
    if config.fsync == FsyncMode::Interval {
        positive(cx, config.fsync_interval, field(&["fsync_interval"]));
    }
    if config.segment_bytes < 4096 {
        cx.error(
            at(&field(&["segment_bytes"])),
            "`dispatch.segment_bytes` must be at least 4096",
            None,
        );
    }
    if config.dedupe_ids == 0 {
        cx.error(
            at(&field(&["dedupe_ids"])),
            "`dispatch.dedupe_ids` must be at least 1",
            None,
        );
    }

    let mut allowed = Vec::new();
    for (i, host) in config.allowed_hosts.iter().enumerate() {
        let mut p = field(&["allowed_hosts"]);
        p.push(Seg::Index(i));
        match HostRule::parse(host) {
            Ok(rule) => allowed.push(rule),
            Err(e) => cx.error(
                at(&p),
                e.to_string(),
                Some("e.g. \"hooks.example\", \"*.ordos.example\", \"10.0.0.0/8\"".to_string()),
            ),
        }
    }

    let names: Vec<&str> = config.receivers.keys().map(String::as_str).collect();
    for (name, r) in &config.receivers {
        let base = field(&["receivers", name]);
        let sub = |key: &str| {
            let mut p = base.clone();
            p.push(Seg::Key(key.to_string()));
            p
        };
        let written = |key: &str| value_at(root, &sub(key)).is_some();
        if !is_valid_receiver_name(name) {
            cx.error(
                key_at(&base),
                format!("receiver name `{name}` is not allowed"),
                Some(
                    "use letters, digits, `-`, `_` and `.` (it names the dead-letter file)".into(),
                ),
            );
        }
        let wrong_kind: &[&str] = match r.kind {
            ReceiverKindConfig::Webhook => &["topic", "key"],
            ReceiverKindConfig::Kafka => &["url", "secret", "secret_env", "format", "max_batch"],
        };
        let kind_name = match r.kind {
            ReceiverKindConfig::Webhook => "webhook",
            ReceiverKindConfig::Kafka => "kafka",
        };
        for key in wrong_kind {
            if written(key) {
                cx.error(
                    key_at(&sub(key)),
                    format!("`{key}` does not apply to a {kind_name} receiver"),
                    Some(match r.kind {
                        ReceiverKindConfig::Webhook => {
                            "set kind = \"kafka\" for a Kafka topic receiver".to_string()
                        }
                        ReceiverKindConfig::Kafka => {
                            "webhook fields need kind = \"webhook\" (the default)".to_string()
                        }
                    }),
                );
            }
        }
        match r.kind {
            ReceiverKindConfig::Webhook => match &r.url {
                None => cx.missing(
                    key_at(&base),
                    format!("webhook receiver `{name}` needs a `url`"),
                    None,
                ),
                Some(url) => {
                    if let Err(e) = validate_url(url, &allowed) {
                        cx.error(
                            at(&sub("url")),
                            format!("`{}`: {e}", display_path("", &sub("url"))),
                            None,
                        );
                    }
                }
            },
            ReceiverKindConfig::Kafka => match &r.topic {
                None => cx.missing(
                    key_at(&base),
                    format!("Kafka receiver `{name}` needs a `topic`"),
                    None,
                ),
                Some(topic) if topic.trim().is_empty() => {
                    cx.error(at(&sub("topic")), "`topic` must not be empty", None);
                }
                Some(_) => {}
            },
        }
        if r.secret.is_some() && r.secret_env.is_some() {
            cx.error(
                key_at(&sub("secret_env")),
                "give at most one of `secret` and `secret_env`",
                None,
            );
        }
        if let Some(secret) = &r.secret
            && let Err(e) = Secret::parse(&secret.0)
        {
            cx.error(at(&sub("secret")), format!("`secret`: {e}"), None);
        }
        if let Some(var) = &r.secret_env
            && !is_env_name(var)
        {
            cx.error(
                at(&sub("secret_env")),
                format!("`{var}` is not an environment variable name"),
                None,
            );
        }
        for (value, key) in [
            (r.timeout, "timeout"),
            (r.retry_base, "retry_base"),
            (r.breaker_cooldown, "breaker_cooldown"),
        ] {
            positive(cx, value, sub(key));
        }
        if r.retry_max < r.retry_base {
            cx.error(
                at(&sub("retry_max")),
                "`retry_max` must be at least `retry_base`",
                None,
            );
        }
        for (value, key) in [
            (r.max_concurrency, "max_concurrency"),
            (r.max_batch, "max_batch"),
        ] {
            if value == 0 {
                cx.error(
                    at(&sub(key)),
                    format!("`{}` must be at least 1", display_path("", &sub(key))),
                    None,
                );
            }
        }
    }

    let check_matchers = |cx: &mut FileCx<'_>, list: &[String], base: &[Seg]| {
        for (j, text) in list.iter().enumerate() {
            if let Err(e) = Matcher::parse(text) {
                let mut p = base.to_vec();
                p.push(Seg::Key("matchers".into()));
                p.push(Seg::Index(j));
                cx.error(
                    at(&p),
                    format!("matcher `{text}`: {e}"),
                    Some("write `label = \"value\"`, `label != \"value\"`, `label =~ \"regex\"` or `label !~ \"regex\"`".to_string()),
                );
            }
        }
    };
    for (i, route) in config.routes.iter().enumerate() {
        let mut base = field(&["route"]);
        base.push(Seg::Index(i));
        check_matchers(cx, &route.matchers, &base);
        if route.receivers.is_empty() {
            cx.missing(
                at(&base),
                "a route needs at least one receiver in `receivers`",
                (!names.is_empty()).then(|| format!("receivers: {}", names.join(", "))),
            );
        }
        for (j, receiver) in route.receivers.iter().enumerate() {
            if !config.receivers.contains_key(receiver) {
                let mut p = base.clone();
                p.push(Seg::Key("receivers".into()));
                p.push(Seg::Index(j));
                let hint = if names.is_empty() {
                    "define it as [dispatch.receivers.NAME]".to_string()
                } else {
                    one_of_hint(receiver, &names)
                };
                cx.error(at(&p), format!("unknown receiver `{receiver}`"), Some(hint));
            }
        }
    }
    for (i, silence) in config.silences.iter().enumerate() {
        let mut base = field(&["silence"]);
        base.push(Seg::Index(i));
        let sub = |key: &str| {
            let mut p = base.clone();
            p.push(Seg::Key(key.to_string()));
            p
        };
        if silence.matchers.is_empty() {
            cx.missing(
                at(&base),
                "a silence needs at least one matcher in `matchers`",
                None,
            );
        }
        check_matchers(cx, &silence.matchers, &base);
        let time = |cx: &mut FileCx<'_>, text: &Option<String>, key: &str| match text {
            Some(text) => match parse_rfc3339(text) {
                Ok(t) => Some(t),
                Err(e) => {
                    cx.error(
                        at(&sub(key)),
                        format!("`{key}`: {e}"),
                        Some(
                            "write an RFC 3339 string, e.g. \"2026-11-29T08:00:00+08:00\""
                                .to_string(),
                        ),
                    );
                    None
                }
            },
            None => None,
        };
        let starts = time(cx, &silence.starts_at, "starts_at");
        let ends = time(cx, &silence.ends_at, "ends_at");
        if silence.ends_at.is_none() {
            cx.missing(at(&base), "a silence needs `ends_at`", None);
        }
        if let (Some(s), Some(e)) = (starts, ends)
            && e <= s
        {
            cx.error(
                at(&sub("ends_at")),
                "`ends_at` must be after `starts_at`",
                None,
            );
        }
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

    fn valid(text: &str) -> DispatchConfig {
        match load_str(Path::new("citybrain.toml"), text) {
            Ok(config) => config.dispatch,
            Err(all) => panic!("expected a valid config, got:\n{all}"),
        }
    }

    #[test]
    fn the_example_is_valid() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/dispatch.example.toml");
        let loaded = match crate::config::load(&path) {
            Ok(loaded) => loaded,
            Err(all) => panic!("the dispatch example is invalid:\n{all}"),
        };
        let dispatch = &loaded.config.dispatch;
        assert_eq!(dispatch.receivers.len(), 4);
        assert_eq!(dispatch.routes.len(), 3);
        assert_eq!(dispatch.silences.len(), 1);
        // With the secrets in the environment it converts.
        let mut config = dispatch.clone();
        for receiver in config.receivers.values_mut() {
            if receiver.secret_env.take().is_some() {
                receiver.secret = Some(ConfigSecret("whsec_c2VjcmV0".into()));
            }
        }
        let kafka = KafkaConnection {
            brokers: "127.0.0.1:9092".into(),
            properties: Vec::new(),
        };
        let settings = match config.to_settings(&loaded.base_dir, Some(kafka)) {
            Ok(settings) => settings,
            Err(e) => panic!("{e}"),
        };
        assert_eq!(settings.receivers.len(), 4);
        // The main example has dispatch off.
        let main = crate::config::load(&path.with_file_name("citybrain.toml"));
        assert!(main.is_ok_and(|m| !m.config.dispatch.is_enabled()));
    }

    #[test]
    fn defaults_mean_dispatch_off() {
        let config = valid("");
        assert_eq!(config, DispatchConfig::default());
        assert!(!config.is_enabled());
        assert_eq!(config.fsync, FsyncMode::Interval);
        assert_eq!(config.fsync_interval, Duration::from_millis(100));
    }

    const FULL: &str = r#"
[dispatch]
dir = "var/dispatch"
fsync = "always"
segment_bytes = 1048576
dedupe_ids = 500
external_url = "http://wall.local"
allowed_hosts = ["127.0.0.1", "*.ordos.example"]

[dispatch.receivers.mine-rescue]
url = "http://127.0.0.1:9000/hook"
secret = "whsec_AQID"
timeout = "2s"
max_concurrency = 2
max_batch = 10
format = "alertmanager"
retry_base = "100ms"
retry_max = "5s"
max_retry_after = "1m"
give_up_after = "1h"
breaker_failures = 3
breaker_cooldown = "10s"

[dispatch.receivers.county]
url = "https://county.ordos.example/alerts"
secret_env = "CITYBRAIN_TEST_COUNTY_SECRET"

[dispatch.receivers.bus]
kind = "kafka"
topic = "dispatch.alerts"
key = "entity"

[[dispatch.route]]
matchers = ['domain = "mine"', 'severity =~ "critical|warning"']
receivers = ["mine-rescue", "bus"]
continue = true
group_wait = "200ms"
repeat_interval = "30m"

[[dispatch.route]]
receivers = ["county"]

[[dispatch.silence]]
matchers = ['mine = "dalad-3"']
starts_at = "2026-11-29T08:00:00+08:00"
ends_at = "2026-11-29T12:00:00+08:00"
comment = "maintenance"
"#;

    #[test]
    fn every_field_is_read_and_converted() {
        let config = valid(FULL);
        assert!(config.is_enabled());
        let rescue = &config.receivers["mine-rescue"];
        assert_eq!(rescue.format, Some(FormatConfig::Alertmanager));
        assert_eq!(rescue.give_up_after, Some(Duration::from_secs(3600)));
        assert_eq!(format!("{:?}", rescue.secret), "Some(<redacted>)");
        assert_eq!(
            config.routes[0].repeat_interval,
            Some(Duration::from_secs(1800))
        );
        assert!(config.routes[0].continue_matching);
        assert!(!config.routes[1].continue_matching);
        // The secret is never written out.
        let json = serde_json::to_string(&config).unwrap_or_default();
        assert!(
            json.contains("<redacted>") && !json.contains("AQID"),
            "{json}"
        );

        let missing = config.to_settings(Path::new("/etc/citybrain"), None);
        assert!(matches!(
            missing,
            Err(DispatchConfigError::MissingSecretEnv { ref var, .. }) if var == "CITYBRAIN_TEST_COUNTY_SECRET"
        ));
        let mut config = config;
        if let Some(county) = config.receivers.get_mut("county") {
            county.secret_env = None;
            county.secret = Some(ConfigSecret("plain".into()));
        }
        let settings = match config.to_settings(Path::new("/etc/citybrain"), None) {
            Ok(s) => s,
            Err(e) => panic!("{e}"),
        };
        assert_eq!(
            settings.outbox.dir,
            Path::new("/etc/citybrain/var/dispatch/outbox")
        );
        assert_eq!(
            settings.dead_letter_dir,
            Path::new("/etc/citybrain/var/dispatch/dead-letters")
        );
        assert_eq!(settings.outbox.fsync, FsyncPolicy::Always);
        assert_eq!(settings.outbox.segment_bytes, 1_048_576);
        let names: Vec<&str> = settings.receivers.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, vec!["bus", "county", "mine-rescue"]);
        let rescue = &settings.receivers[2];
        assert_eq!(rescue.max_concurrency, 2);
        assert_eq!(rescue.retry.base, Duration::from_millis(100));
        assert_eq!(rescue.breaker.failures, 3);
        match &rescue.kind {
            ReceiverKind::Webhook(w) => {
                assert_eq!(w.format, PayloadFormat::Alertmanager);
                assert_eq!(
                    w.secret.as_ref().map(|s| s.as_bytes().to_vec()),
                    Some(vec![1, 2, 3])
                );
                assert_eq!(w.timeout, Duration::from_secs(2));
            }
            ReceiverKind::Kafka(_) => panic!("a webhook"),
        }
        match &settings.receivers[0].kind {
            ReceiverKind::Kafka(k) => {
                assert_eq!(k.topic, "dispatch.alerts");
                assert_eq!(k.key, KafkaKey::Entity);
            }
            ReceiverKind::Webhook(_) => panic!("a Kafka receiver"),
        }
        assert_eq!(settings.routes.len(), 2);
        assert_eq!(settings.routes[0].matchers.len(), 2);
        assert_eq!(settings.routes[0].group_wait, Duration::from_millis(200));
        assert_eq!(settings.silences[0].id, "cfg-0");
        assert_eq!(settings.silences[0].starts_at, 1_795_910_400_000);
        assert_eq!(settings.silences[0].ends_at, 1_795_924_800_000);
    }

    #[test]
    fn problems_are_reported_with_positions() {
        let text = r#"[dispatch]
fsync = "sometimes"
segment_bytes = 10
allowed_hosts = ["10.0.0.0/40"]

[dispatch.receivers.rescue]
url = "ftp://rescue.example/hook"
secret = "whsec_!!"
secret_env = "RESCUE SECRET"
topic = "x"
timeout = "0s"
retry_base = "2s"
retry_max = "1s"

[dispatch.receivers."bad/name"]
kind = "kafka"

[dispatch.receivers.bus]
kind = "kafka"
topic = "t"
format = "citybrain"

[[dispatch.route]]
matchers = ['severity ~ "critical"']
receivers = ["resuce", "bus"]

[[dispatch.silence]]
matchers = []
starts_at = "tomorrow"
"#;
        assert_eq!(
            errors(text),
            vec![
                "2:9: unknown value `sometimes` for `dispatch.fsync`",
                "3:17: `dispatch.segment_bytes` must be at least 4096",
                "4:18: `10.0.0.0/40` is not a host name, IP address or CIDR network",
                "7:7: `dispatch.receivers.rescue.url`: scheme `ftp` is not allowed: use http or https",
                "8:10: `secret`: the secret starts with `whsec_` but the rest is not valid base64: Invalid symbol 33, offset 0.",
                "9:1: give at most one of `secret` and `secret_env`",
                "9:14: `RESCUE SECRET` is not an environment variable name",
                "10:1: `topic` does not apply to a webhook receiver",
                "11:11: `dispatch.receivers.rescue.timeout` must be greater than zero",
                "13:13: `retry_max` must be at least `retry_base`",
                "15:21: receiver name `bad/name` is not allowed",
                "15:21: Kafka receiver `bad/name` needs a `topic`",
                "21:1: `format` does not apply to a kafka receiver",
                "24:13: matcher `severity ~ \"critical\"`: expected `label = \"value\"` (operators: =, !=, =~, !~)",
                "25:14: unknown receiver `resuce`",
                "27:1: a silence needs at least one matcher in `matchers`",
                "27:1: a silence needs `ends_at`",
                "29:13: `starts_at`: `tomorrow` is not RFC 3339: premature end of input",
            ]
        );
    }
}
