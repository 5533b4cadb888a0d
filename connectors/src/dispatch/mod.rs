//! Alert dispatch: routes alert transitions to receivers (signed webhooks, Kafka topics),
//! retries until they are acknowledged, and never loses one.
//!
//! ```text
//! engine output thread ── submit() ──► route + silences ──► alert log (outbox, fsync policy)
//!                                                              │ one queue per receiver
//!                                                              ▼
//!        receiver task: per-alert FIFO · group_wait · max_concurrency · reminders
//!                                                              │ one task per request
//!                                                              ▼
//!        circuit breaker ─► signed POST / Kafka produce ─► retry with backoff + jitter
//!                                                              │
//!                     ack (or dead letter, or 410 → disabled) ─► alert log
//! ```
//!
//! [`Dispatcher::start`] opens the alert log in the outbox directory and re-queues every
//! (transition, receiver) pair not acknowledged before the last stop, under the same
//! `webhook-id`. [`Dispatcher::submit`] returns once the transition is in the log (synced per
//! the [`FsyncPolicy`]); delivery happens on the dispatcher's own tokio runtime.
//!
//! Modules: [`routing`] (routes and matchers), [`silence`], [`signing`] (Standard Webhooks),
//! [`payload`] (request bodies), [`retry`] (backoff), [`outbox`] (the alert log),
//! [`settings`], [`metrics`].

pub mod breaker;
pub mod metrics;
pub mod outbox;
pub mod payload;
mod receiver;
pub mod retry;
pub mod routing;
pub mod settings;
pub mod signing;
pub mod silence;
mod transport;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use citybrain_model::AlertTransition;
use citybrain_model::time::now_millis;
use serde::Serialize;
use tokio::sync::{mpsc, watch};

pub use breaker::BreakerState;
pub use metrics::DispatchMetrics;
pub use outbox::{
    AckOutcome, DisabledState, FsyncPolicy, Outbox, OutboxError, OutboxSettings, PendingTransition,
};
pub use payload::PayloadFormat;
pub use routing::{MatchOp, Matcher, MatcherError, RouteSettings, alert_labels};
pub use settings::{
    BreakerSettings, DispatchSettings, HostRule, KafkaConnection, KafkaKey, KafkaReceiverSettings,
    ReceiverKind, ReceiverSettings, RetrySettings, UrlError, WebhookSettings, validate_url,
};
pub use signing::{Secret, SecretError, VerifyError, sign, verify};
pub use silence::{SilenceError, SilenceRecord, SilenceRequest};

use receiver::{Command, Context, Item, ReceiverShared, ReceiverTask};
use routing::Router;
use silence::{Silence, Silences};
use transport::{KafkaTransport, Transport, WebhookTransport};

/// The dispatcher could not start or do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum DispatchError {
    /// The alert log failed.
    #[error(transparent)]
    Outbox(#[from] OutboxError),
    /// The settings are inconsistent (the engine's config validation prevents this).
    #[error("dispatch settings: {0}")]
    Settings(String),
    /// A receiver's client or producer could not be created.
    #[error("receiver `{receiver}`: {message}")]
    Receiver {
        /// The receiver.
        receiver: String,
        /// What failed.
        message: String,
    },
    /// The tokio runtime could not be started.
    #[error("cannot start the dispatch runtime: {0}")]
    Runtime(std::io::Error),
    /// Metrics could not be registered.
    #[error("dispatch metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    /// A silence request is not valid.
    #[error(transparent)]
    Silence(#[from] SilenceError),
    /// The dispatcher was shut down.
    #[error("the dispatcher is shut down")]
    Stopped,
}

/// What [`Dispatcher::submit`] did with a transition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Submitted {
    /// Logged and queued for this many receivers.
    Queued(usize),
    /// Already in the alert log (e.g. repeated by a replay): ignored.
    Duplicate,
    /// Logged; a silence with this id is in force, so it goes nowhere.
    Silenced(String),
    /// Logged; no route matched.
    Unrouted,
}

/// A receiver disabled by a 410 Gone (for the wall banner).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DisabledReceiver {
    /// The receiver.
    pub name: String,
    /// The response that disabled it.
    pub reason: String,
    /// Since when, epoch ms.
    pub since: u64,
}

/// The state of one receiver.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ReceiverStatus {
    /// The receiver.
    pub name: String,
    /// `webhook` or `kafka`.
    pub kind: &'static str,
    /// Transitions not yet acknowledged (including reminders being sent).
    pub queue_depth: usize,
    /// Requests in flight (including those waiting to retry).
    pub in_flight: usize,
    /// Age of the oldest unacknowledged transition, since it was logged.
    pub oldest_undelivered: Option<Duration>,
    /// The circuit breaker.
    pub breaker: BreakerState,
    /// Set while disabled by a 410 Gone.
    pub disabled: Option<DisabledState>,
}

/// A snapshot of the dispatcher's state.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct DispatchStatus {
    /// Every receiver, in config order.
    pub receivers: Vec<ReceiverStatus>,
    /// Transitions in the alert log not acknowledged by all their receivers.
    pub pending_transitions: usize,
    /// Problems repaired when the alert log was opened (e.g. a truncated tail).
    pub recovery_warnings: Vec<String>,
}

impl DispatchStatus {
    /// Total unacknowledged (transition, receiver) pairs.
    pub fn queue_depth(&self) -> usize {
        self.receivers.iter().map(|r| r.queue_depth).sum()
    }

    /// The oldest undelivered age over all receivers.
    pub fn oldest_undelivered(&self) -> Option<Duration> {
        self.receivers
            .iter()
            .filter_map(|r| r.oldest_undelivered)
            .max()
    }
}

struct ReceiverHandle {
    settings: ReceiverSettings,
    shared: Arc<ReceiverShared>,
    commands: mpsc::UnboundedSender<Command>,
}

struct Inner {
    outbox: Arc<Mutex<Outbox>>,
    router: Router,
    silences: Mutex<Silences>,
    receivers: Vec<ReceiverHandle>,
    metrics: DispatchMetrics,
    accepting: AtomicBool,
}

/// The running dispatcher. Its methods are synchronous and may be called from any thread.
pub struct Dispatcher {
    inner: Arc<Inner>,
    runtime: Option<tokio::runtime::Runtime>,
    stop: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// Receiver names become file names: letters, digits, `-`, `_`, `.`, not starting with `.`.
pub fn is_valid_receiver_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Dispatcher {
    /// Opens the alert log, re-queues what was not acknowledged, and starts delivering on a
    /// runtime of its own. Metrics are registered in `registry`.
    pub fn start(
        settings: DispatchSettings,
        registry: &prometheus::Registry,
    ) -> Result<Dispatcher, DispatchError> {
        let names: Vec<String> = settings.receivers.iter().map(|r| r.name.clone()).collect();
        for (i, name) in names.iter().enumerate() {
            if !is_valid_receiver_name(name) {
                return Err(DispatchError::Settings(format!(
                    "receiver name `{name}` must be letters, digits, `-`, `_` and `.`"
                )));
            }
            if names[..i].contains(name) {
                return Err(DispatchError::Settings(format!(
                    "receiver `{name}` is defined twice"
                )));
            }
        }
        for r in &settings.receivers {
            if r.max_concurrency == 0 || r.max_batch == 0 {
                return Err(DispatchError::Settings(format!(
                    "receiver `{}`: max_concurrency and max_batch must be at least 1",
                    r.name
                )));
            }
        }
        let router = Router::new(&settings.routes, &names).map_err(DispatchError::Settings)?;
        let metrics = DispatchMetrics::new(registry)?;
        let mut outbox = Outbox::open(&settings.outbox)?;
        for warning in outbox.recovery_warnings() {
            tracing::warn!(warning, "alert log repaired");
        }

        let now = now_millis();
        let mut silences = Silences::default();
        for (i, record) in settings.silences.iter().enumerate() {
            let mut record = record.clone();
            if record.id.is_empty() {
                record.id = format!("cfg-{i}");
            }
            silences.insert(Silence::new(record)?);
        }
        for record in outbox.silences() {
            match Silence::new(record.clone()) {
                Ok(silence) => silences.insert(silence),
                Err(error) => tracing::warn!(id = %record.id, %error, "ignoring a logged silence"),
            }
        }
        silences.prune(now);

        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("citybrain-dispatch")
            .enable_all()
            .build()
            .map_err(DispatchError::Runtime)?;

        let (stop, stop_rx) = watch::channel(false);
        let outbox_ref;
        let mut handles = Vec::new();
        let mut tasks_to_run = Vec::new();
        {
            let mut transports = Vec::new();
            for r in &settings.receivers {
                let err = |message: String| DispatchError::Receiver {
                    receiver: r.name.clone(),
                    message,
                };
                let transport = match &r.kind {
                    ReceiverKind::Webhook(w) => {
                        Transport::Webhook(WebhookTransport::new(w.clone()).map_err(|e| err(e.0))?)
                    }
                    ReceiverKind::Kafka(k) => {
                        let connection = settings.kafka.as_ref().ok_or_else(|| {
                            err("a Kafka receiver needs Kafka brokers".to_string())
                        })?;
                        let _guard = runtime.enter();
                        Transport::Kafka(
                            KafkaTransport::new(connection, k.clone()).map_err(|e| err(e.0))?,
                        )
                    }
                };
                transports.push(transport);
            }
            // Disabled receivers stay disabled while their settings are the same.
            let mut disabled = Vec::new();
            for r in &settings.receivers {
                let state = outbox.disabled().get(&r.name).cloned();
                match state {
                    Some(state) if state.fingerprint == r.fingerprint() => {
                        tracing::error!(receiver = %r.name, reason = %state.reason, "receiver is disabled (410 Gone); change its config to enable it");
                        metrics.disabled.with_label_values(&[&r.name]).set(1);
                        disabled.push(Some(state));
                    }
                    Some(_) => {
                        tracing::info!(receiver = %r.name, "receiver config changed: enabled again");
                        outbox.append_enabled(&r.name)?;
                        disabled.push(None);
                    }
                    None => disabled.push(None),
                }
            }
            outbox_ref = Arc::new(Mutex::new(outbox));
            let context = Arc::new(Context {
                outbox: Arc::clone(&outbox_ref),
                metrics: metrics.clone(),
                dead_letter_dir: settings.dead_letter_dir.clone(),
                external_url: settings.external_url.clone(),
            });
            for ((r, transport), disabled) in
                settings.receivers.iter().zip(transports).zip(disabled)
            {
                metrics.init_receiver(&r.name);
                let shared = Arc::new(ReceiverShared::new(r, disabled));
                let (tx, rx) = mpsc::unbounded_channel();
                let task = ReceiverTask::new(
                    r.clone(),
                    Arc::clone(&shared),
                    Arc::clone(&context),
                    transport,
                    rx,
                    stop_rx.clone(),
                );
                tasks_to_run.push(task);
                handles.push(ReceiverHandle {
                    settings: r.clone(),
                    shared,
                    commands: tx,
                });
            }
        }

        let inner = Arc::new(Inner {
            outbox: outbox_ref,
            router,
            silences: Mutex::new(silences),
            receivers: handles,
            metrics,
            accepting: AtomicBool::new(true),
        });
        inner.replay();

        let mut tasks: Vec<tokio::task::JoinHandle<()>> = tasks_to_run
            .into_iter()
            .map(|t| runtime.spawn(t.run()))
            .collect();
        if let FsyncPolicy::Interval(interval) = settings.outbox.fsync {
            let outbox = Arc::clone(&inner.outbox);
            let mut stop = stop_rx.clone();
            tasks.push(runtime.spawn(async move {
                let mut tick = tokio::time::interval(interval.max(Duration::from_millis(1)));
                loop {
                    tokio::select! {
                        _ = tick.tick() => {}
                        _ = stop.changed() => break,
                    }
                    if let Err(error) = lock(&outbox).sync_if_dirty() {
                        tracing::error!(%error, "alert log fsync failed");
                    }
                }
            }));
        }
        Ok(Dispatcher {
            inner,
            runtime: Some(runtime),
            stop,
            tasks,
        })
    }

    /// Logs `transition` durably (per the fsync policy) and queues it for its receivers;
    /// returns after the append. A transition whose id is already in the log is ignored.
    pub fn submit(&self, transition: &AlertTransition) -> Result<Submitted, DispatchError> {
        self.inner.submit(transition)
    }

    /// Whether a transition with this id is in the alert log (pending or recent).
    pub fn contains(&self, id: &str) -> bool {
        lock(&self.inner.outbox).contains(id)
    }

    /// Adds a silence (e.g. from the authenticated HTTP API); it is kept in the alert log.
    pub fn add_silence(&self, request: SilenceRequest) -> Result<SilenceRecord, DispatchError> {
        let now = now_millis();
        let id = format!("sil-{:016x}", rand::random::<u64>());
        let record = request.into_record(id, now)?;
        let silence = Silence::new(record.clone())?;
        lock(&self.inner.outbox).append_silence(&record)?;
        lock(&self.inner.silences).insert(silence);
        tracing::info!(id = %record.id, matchers = ?record.matchers, created_by = %record.created_by, "silence added");
        Ok(record)
    }

    /// Ends a silence now; false when there is no silence with `id`.
    pub fn expire_silence(&self, id: &str) -> Result<bool, DispatchError> {
        let now = now_millis();
        let found = lock(&self.inner.silences).expire(id, now);
        if found {
            lock(&self.inner.outbox).append_silence_expired(id, now)?;
        }
        Ok(found)
    }

    /// The silences in force or to come.
    pub fn silences(&self) -> Vec<SilenceRecord> {
        let now = now_millis();
        let mut silences = lock(&self.inner.silences);
        silences.prune(now);
        silences.records()
    }

    /// Receivers disabled by a 410 Gone.
    pub fn disabled_receivers(&self) -> Vec<DisabledReceiver> {
        self.inner
            .receivers
            .iter()
            .filter_map(|r| {
                r.shared.disabled().map(|state| DisabledReceiver {
                    name: r.settings.name.clone(),
                    reason: state.reason,
                    since: state.at,
                })
            })
            .collect()
    }

    /// Queue depths, in-flight requests, oldest undelivered ages, breakers, disabled receivers.
    pub fn status(&self) -> DispatchStatus {
        let now = now_millis();
        let (pending, warnings) = {
            let outbox = lock(&self.inner.outbox);
            (outbox.pending_count(), outbox.recovery_warnings().to_vec())
        };
        DispatchStatus {
            receivers: self
                .inner
                .receivers
                .iter()
                .map(|r| {
                    let oldest = r.shared.oldest_logged_at.load(Ordering::Relaxed);
                    ReceiverStatus {
                        name: r.settings.name.clone(),
                        kind: r.settings.kind_name(),
                        queue_depth: r.shared.depth.load(Ordering::Relaxed),
                        in_flight: r.shared.in_flight.load(Ordering::Relaxed),
                        oldest_undelivered: (oldest > 0)
                            .then(|| Duration::from_millis(now.saturating_sub(oldest))),
                        breaker: r.shared.breaker.state(),
                        disabled: r.shared.disabled(),
                    }
                })
                .collect(),
            pending_transitions: pending,
            recovery_warnings: warnings,
        }
    }

    /// Waits up to `timeout` until every receiver's queue is empty; true when it is.
    pub fn wait_idle(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            let idle = self
                .inner
                .receivers
                .iter()
                .all(|r| r.shared.depth.load(Ordering::Relaxed) == 0)
                && lock(&self.inner.outbox).pending().all(|p| {
                    p.receivers.iter().all(|name| {
                        !self
                            .inner
                            .receivers
                            .iter()
                            .any(|r| r.settings.name == *name)
                    })
                });
            if idle {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Stops accepting transitions, lets deliveries finish for up to `timeout`, then stops.
    /// What is still unacknowledged stays in the alert log for the next start.
    pub fn shutdown(mut self, timeout: Duration) -> Result<(), DispatchError> {
        self.inner.accepting.store(false, Ordering::SeqCst);
        let idle = self.wait_idle(timeout);
        if !idle {
            tracing::warn!(status = ?self.status(), "dispatcher stopping with undelivered transitions; they are delivered after the next start");
        }
        self.stop_now();
        lock(&self.inner.outbox).sync()?;
        Ok(())
    }

    fn stop_now(&mut self) {
        self.inner.accepting.store(false, Ordering::SeqCst);
        let _ = self.stop.send(true);
        if let Some(runtime) = self.runtime.take() {
            let tasks = std::mem::take(&mut self.tasks);
            let finish = move || {
                runtime.block_on(async {
                    for task in tasks {
                        let _ = tokio::time::timeout(Duration::from_secs(1), task).await;
                    }
                });
                runtime.shutdown_timeout(Duration::from_secs(1));
            };
            // A runtime cannot be blocked on or dropped from inside another one.
            if tokio::runtime::Handle::try_current().is_ok() {
                let _ = std::thread::spawn(finish).join();
            } else {
                finish();
            }
        }
    }
}

impl Drop for Dispatcher {
    fn drop(&mut self) {
        self.stop_now();
        let _ = lock(&self.inner.outbox).sync();
    }
}

impl Inner {
    fn submit(&self, transition: &AlertTransition) -> Result<Submitted, DispatchError> {
        if !self.accepting.load(Ordering::SeqCst) {
            return Err(DispatchError::Stopped);
        }
        let labels = alert_labels(transition);
        let now = now_millis();
        let targets = self.router.route(&labels);
        let silenced = lock(&self.silences)
            .silencing(&labels, now)
            .map(str::to_string);
        let live: Vec<&routing::Target> = if silenced.is_some() {
            Vec::new()
        } else {
            targets.iter().collect()
        };
        let names: Vec<String> = live
            .iter()
            .map(|t| self.receivers[t.receiver].settings.name.clone())
            .collect();
        // Holding the log's lock while queueing keeps every queue in log order.
        let mut outbox = lock(&self.outbox);
        if outbox.contains(&transition.id) {
            self.metrics
                .submitted
                .with_label_values(&["duplicate"])
                .inc();
            return Ok(Submitted::Duplicate);
        }
        outbox.append_transition(transition, &names, silenced.as_deref(), now)?;
        let starts_at = outbox
            .pending()
            .last()
            .filter(|p| p.transition.id == transition.id)
            .and_then(|p| p.starts_at);
        let shared = Arc::new(transition.clone());
        for target in &live {
            let item = Item {
                id: transition.id.clone(),
                transition: Arc::clone(&shared),
                starts_at,
                logged_at: now,
                group_wait: target.group_wait,
                repeat_interval: target.repeat_interval,
                repeat: None,
                group: None,
            };
            let _ = self.receivers[target.receiver]
                .commands
                .send(Command::Item(item));
        }
        drop(outbox);
        let outcome = match (&silenced, live.len()) {
            (Some(id), _) => {
                tracing::info!(id = %transition.id, rule = %transition.rule, entity = %transition.entity, silence = %id, "transition silenced");
                Submitted::Silenced(id.clone())
            }
            (None, 0) => {
                tracing::debug!(id = %transition.id, rule = %transition.rule, "no route matched");
                Submitted::Unrouted
            }
            (None, n) => Submitted::Queued(n),
        };
        let label = match outcome {
            Submitted::Queued(_) => "queued",
            Submitted::Duplicate => "duplicate",
            Submitted::Silenced(_) => "silenced",
            Submitted::Unrouted => "unrouted",
        };
        self.metrics.submitted.with_label_values(&[label]).inc();
        Ok(outcome)
    }

    /// Queues what the alert log holds unacknowledged, and reminders of firing alerts.
    fn replay(&self) {
        let outbox = lock(&self.outbox);
        let mut queued = 0usize;
        let mut orphaned = 0usize;
        for pending in outbox.pending() {
            let labels = alert_labels(&pending.transition);
            let targets = self.router.route(&labels);
            for name in &pending.receivers {
                let Some(index) = self.receivers.iter().position(|r| r.settings.name == *name)
                else {
                    orphaned += 1;
                    continue;
                };
                let target = targets.iter().find(|t| t.receiver == index);
                let group = outbox
                    .pending_groups()
                    .iter()
                    .find(|(_, g)| {
                        g.receiver == *name && g.members.contains(&pending.transition.id)
                    })
                    .map(|(id, _)| id.clone());
                let item = Item {
                    id: pending.transition.id.clone(),
                    transition: Arc::clone(&pending.transition),
                    starts_at: pending.starts_at,
                    logged_at: pending.logged_at,
                    group_wait: target.map_or(Duration::ZERO, |t| t.group_wait),
                    repeat_interval: target.and_then(|t| t.repeat_interval),
                    repeat: None,
                    group,
                };
                let _ = self.receivers[index].commands.send(Command::Item(item));
                queued += 1;
            }
        }
        let pending_ids: std::collections::HashSet<&str> =
            outbox.pending().map(|p| p.transition.id.as_str()).collect();
        for firing in outbox.firing() {
            if pending_ids.contains(firing.id.as_str()) {
                continue;
            }
            let labels = alert_labels(firing);
            for target in self.router.route(&labels) {
                if let Some(interval) = target.repeat_interval {
                    let _ = self.receivers[target.receiver]
                        .commands
                        .send(Command::Remind {
                            transition: Arc::clone(firing),
                            starts_at: Some(firing.event_time),
                            interval,
                        });
                }
            }
        }
        if queued > 0 {
            tracing::info!(
                queued,
                "re-queued unacknowledged transitions from the alert log"
            );
        }
        if orphaned > 0 {
            tracing::warn!(
                orphaned,
                "unacknowledged transitions for receivers no longer configured stay in the alert log"
            );
        }
    }
}
