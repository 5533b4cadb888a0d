//! One task per receiver: its queue, per-alert ordering, grouping, concurrency, reminders,
//! and what happens when a request ends.
//!
//! Transitions of one alert (rule, entity) wait in a FIFO of their own: only the head of each
//! FIFO may be sent, and the next one only after the head was acknowledged, so a receiver
//! never gets a resolved transition before the firing one it follows, however the retries of
//! the two go. Heads whose route has a `group_wait` are collected for that long and sent in
//! one request (at most `max_batch` members, one per alert). At most `max_concurrency`
//! requests are in flight. Each request retries on its own (see [`deliver`]) and reports back
//! here, where the outcome is written to the alert log.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use citybrain_model::time::{format_event_time, now_millis};
use citybrain_model::{AlertTransition, TransitionState};
use serde::Serialize;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use super::breaker::Breaker;
use super::metrics::DispatchMetrics;
use super::outbox::{AckOutcome, DisabledState, Outbox};
use super::payload::{Member, derived_id};
use super::retry::retry_delay;
use super::settings::ReceiverSettings;
use super::transport::{Attempt, Transport};

type AlertKey = (String, String);

/// A transition waiting for one receiver.
#[derive(Clone, Debug)]
pub(crate) struct Item {
    /// The message id: the transition id, or a derived id for a reminder.
    pub(crate) id: String,
    pub(crate) transition: Arc<AlertTransition>,
    pub(crate) starts_at: Option<u64>,
    /// When it was logged (wall clock, epoch ms).
    pub(crate) logged_at: u64,
    pub(crate) group_wait: Duration,
    pub(crate) repeat_interval: Option<Duration>,
    /// Reminder number; reminders are not in the alert log.
    pub(crate) repeat: Option<u32>,
    /// The grouped request it belongs to, when the alert log says so.
    pub(crate) group: Option<String>,
}

/// What the dispatcher tells a receiver task.
#[derive(Debug)]
pub(crate) enum Command {
    /// Deliver this.
    Item(Item),
    /// Remind of this firing alert every `interval` from now on (after a restart).
    Remind {
        transition: Arc<AlertTransition>,
        starts_at: Option<u64>,
        interval: Duration,
    },
}

/// State of a receiver shared with the dispatcher (for status reports).
#[derive(Debug)]
pub(crate) struct ReceiverShared {
    pub(crate) depth: AtomicUsize,
    pub(crate) in_flight: AtomicUsize,
    /// Logged-at time of the oldest undelivered transition, epoch ms; 0 when none.
    pub(crate) oldest_logged_at: AtomicU64,
    pub(crate) disabled: Mutex<Option<DisabledState>>,
    pub(crate) breaker: Breaker,
}

impl ReceiverShared {
    pub(crate) fn new(settings: &ReceiverSettings, disabled: Option<DisabledState>) -> Self {
        ReceiverShared {
            depth: AtomicUsize::new(0),
            in_flight: AtomicUsize::new(0),
            oldest_logged_at: AtomicU64::new(0),
            disabled: Mutex::new(disabled),
            breaker: Breaker::new(settings.breaker.clone()),
        }
    }

    pub(crate) fn disabled(&self) -> Option<DisabledState> {
        self.disabled
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// What every receiver task shares.
pub(crate) struct Context {
    pub(crate) outbox: Arc<Mutex<Outbox>>,
    pub(crate) metrics: DispatchMetrics,
    pub(crate) dead_letter_dir: PathBuf,
    pub(crate) external_url: String,
}

/// One line of a receiver's dead-letter file.
#[derive(Debug, Serialize)]
pub(crate) struct DeadLetterEntry<'a> {
    /// When it was written, RFC 3339.
    pub(crate) at: String,
    pub(crate) receiver: &'a str,
    /// The `webhook-id` of the request.
    pub(crate) webhook_id: &'a str,
    pub(crate) reason: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) status: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) response_body: Option<&'a str>,
    pub(crate) transitions: Vec<&'a AlertTransition>,
}

/// Appends one entry to `<dir>/<receiver>.jsonl`.
pub(crate) fn write_dead_letter(dir: &Path, entry: &DeadLetterEntry<'_>) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let path = dir.join(format!("{}.jsonl", entry.receiver));
    let mut line = serde_json::to_vec(entry).map_err(std::io::Error::other)?;
    line.push(b'\n');
    let mut file = OpenOptions::new().create(true).append(true).open(&path)?;
    file.write_all(&line)?;
    file.sync_data()
}

/// How a request ended.
#[derive(Debug)]
enum Outcome {
    Delivered,
    DeadLetter {
        reason: String,
        status: Option<u16>,
        body: Option<String>,
    },
    Gone {
        reason: String,
    },
    /// The dispatcher is stopping; nothing is recorded.
    Stopped,
}

/// A request being sent.
struct Unit {
    id: String,
    seqs: Vec<u64>,
    items: Vec<Item>,
}

struct Done {
    seqs: Vec<u64>,
    id: String,
    outcome: Outcome,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum EntryState {
    Waiting,
    Batched,
    InFlight,
}

struct Entry {
    item: Item,
    key: AlertKey,
    state: EntryState,
}

struct Reminder {
    transition: Arc<AlertTransition>,
    starts_at: Option<u64>,
    interval: Duration,
    due: Instant,
    /// The number of the last reminder sent (0: none).
    last: u32,
}

/// The receiver task.
pub(crate) struct ReceiverTask {
    name: String,
    settings: ReceiverSettings,
    groups_allowed: bool,
    shared: Arc<ReceiverShared>,
    context: Arc<Context>,
    transport: Arc<Transport>,
    commands: mpsc::UnboundedReceiver<Command>,
    stop: watch::Receiver<bool>,
    done_tx: mpsc::UnboundedSender<Done>,
    done_rx: mpsc::UnboundedReceiver<Done>,
    next_seq: u64,
    entries: BTreeMap<u64, Entry>,
    keys: HashMap<AlertKey, VecDeque<u64>>,
    /// Waiting heads of their alert's FIFO.
    ready: BTreeSet<u64>,
    fixed_groups: HashMap<String, Vec<u64>>,
    batch: Vec<u64>,
    batch_deadline: Option<Instant>,
    reminders: HashMap<AlertKey, Reminder>,
    in_flight: usize,
}

fn key_of(t: &AlertTransition) -> AlertKey {
    (t.rule.clone(), t.entity.clone())
}

impl ReceiverTask {
    pub(crate) fn new(
        settings: ReceiverSettings,
        shared: Arc<ReceiverShared>,
        context: Arc<Context>,
        transport: Transport,
        commands: mpsc::UnboundedReceiver<Command>,
        stop: watch::Receiver<bool>,
    ) -> Self {
        let (done_tx, done_rx) = mpsc::unbounded_channel();
        let groups_allowed = matches!(transport, Transport::Webhook(_)) && settings.max_batch > 1;
        ReceiverTask {
            name: settings.name.clone(),
            settings,
            groups_allowed,
            shared,
            context,
            transport: Arc::new(transport),
            commands,
            stop,
            done_tx,
            done_rx,
            next_seq: 0,
            entries: BTreeMap::new(),
            keys: HashMap::new(),
            ready: BTreeSet::new(),
            fixed_groups: HashMap::new(),
            batch: Vec::new(),
            batch_deadline: None,
            reminders: HashMap::new(),
            in_flight: 0,
        }
    }

    /// Runs until the dispatcher stops.
    pub(crate) async fn run(mut self) {
        let mut gauges = tokio::time::interval(Duration::from_secs(1));
        gauges.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let wake = self.next_wake();
            tokio::select! {
                command = self.commands.recv() => {
                    let Some(command) = command else { break };
                    self.command(command);
                    while let Ok(command) = self.commands.try_recv() {
                        self.command(command);
                    }
                }
                Some(done) = self.done_rx.recv() => self.done(done),
                () = sleep_until(wake) => {}
                _ = gauges.tick() => {}
                changed = self.stop.changed() => {
                    if changed.is_err() {
                        break;
                    }
                }
            }
            if *self.stop.borrow() {
                break;
            }
            self.remind();
            self.pump();
            self.publish();
        }
        // In-flight requests see the stop signal and end; what they carried stays pending in
        // the alert log.
        self.publish();
    }

    fn next_wake(&self) -> Option<Instant> {
        let reminder = self.reminders.values().map(|r| r.due).min();
        match (self.batch_deadline, reminder) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn command(&mut self, command: Command) {
        match command {
            Command::Item(item) => self.enqueue(item),
            Command::Remind {
                transition,
                starts_at,
                interval,
            } => {
                let key = key_of(&transition);
                if !self.keys.contains_key(&key) {
                    self.reminders.insert(
                        key,
                        Reminder {
                            transition,
                            starts_at,
                            interval,
                            due: Instant::now() + interval,
                            last: 0,
                        },
                    );
                }
            }
        }
    }

    fn enqueue(&mut self, item: Item) {
        if let Some(state) = self.shared.disabled() {
            // Nothing goes to a disabled receiver; keep the transition in its dead letter.
            let reason = format!("receiver disabled: {}", state.reason);
            self.dead_letter(&item.id, std::slice::from_ref(&item), &reason, None, None);
            return;
        }
        let key = key_of(&item.transition);
        self.reminders.remove(&key);
        let seq = self.next_seq;
        self.next_seq += 1;
        if let Some(group) = &item.group {
            self.fixed_groups
                .entry(group.clone())
                .or_default()
                .push(seq);
        }
        let queue = self.keys.entry(key.clone()).or_default();
        if queue.is_empty() {
            self.ready.insert(seq);
        }
        queue.push_back(seq);
        self.entries.insert(
            seq,
            Entry {
                item,
                key,
                state: EntryState::Waiting,
            },
        );
    }

    /// Turns due reminders into items.
    fn remind(&mut self) {
        let now = Instant::now();
        let due: Vec<AlertKey> = self
            .reminders
            .iter()
            .filter(|(_, r)| r.due <= now)
            .map(|(k, _)| k.clone())
            .collect();
        for key in due {
            let Some(reminder) = self.reminders.remove(&key) else {
                continue;
            };
            let t = &reminder.transition;
            let interval_ms = u64::try_from(reminder.interval.as_millis())
                .unwrap_or(u64::MAX)
                .max(1);
            // Numbered by intervals since the alert started, so a restart does not reuse a
            // number (and so an id) already sent.
            let started = reminder.starts_at.unwrap_or(t.event_time);
            let n = u32::try_from(now_millis().saturating_sub(started) / interval_ms)
                .unwrap_or(u32::MAX)
                .max(reminder.last.saturating_add(1));
            self.enqueue(Item {
                id: derived_id("repeat", &[&t.id, &n.to_string()]),
                transition: Arc::clone(t),
                starts_at: reminder.starts_at,
                logged_at: now_millis(),
                group_wait: Duration::ZERO,
                repeat_interval: Some(reminder.interval),
                repeat: Some(n),
                group: None,
            });
        }
    }

    /// Sends what may be sent.
    fn pump(&mut self) {
        let now = Instant::now();
        let ready: Vec<u64> = self.ready.iter().copied().collect();
        for seq in ready {
            // Sent above as a member of a logged group.
            if !self.ready.contains(&seq) {
                continue;
            }
            let Some(entry) = self.entries.get(&seq) else {
                self.ready.remove(&seq);
                continue;
            };
            if let Some(group) = entry.item.group.clone() {
                let members = self.fixed_groups.get(&group).cloned().unwrap_or_default();
                let all_ready =
                    !members.is_empty() && members.iter().all(|m| self.ready.contains(m));
                if all_ready && self.in_flight < self.settings.max_concurrency {
                    self.fixed_groups.remove(&group);
                    self.send(group, members);
                }
                continue;
            }
            if self.groups_allowed && !entry.item.group_wait.is_zero() {
                let wait = entry.item.group_wait;
                self.ready.remove(&seq);
                if let Some(e) = self.entries.get_mut(&seq) {
                    e.state = EntryState::Batched;
                }
                self.batch.push(seq);
                let deadline = now + wait;
                self.batch_deadline =
                    Some(self.batch_deadline.map_or(deadline, |d| d.min(deadline)));
                continue;
            }
            if self.in_flight >= self.settings.max_concurrency {
                continue;
            }
            let id = entry.item.id.clone();
            self.send(id, vec![seq]);
        }
        let batch_due = self.batch_deadline.is_some_and(|d| d <= now)
            || self.batch.len() >= self.settings.max_batch;
        while batch_due && !self.batch.is_empty() && self.in_flight < self.settings.max_concurrency
        {
            let take = self.batch.len().min(self.settings.max_batch);
            let seqs: Vec<u64> = self.batch.drain(..take).collect();
            let id = if let [only] = seqs.as_slice() {
                self.entries
                    .get(only)
                    .map(|e| e.item.id.clone())
                    .unwrap_or_default()
            } else {
                let ids: Vec<&str> = seqs
                    .iter()
                    .filter_map(|s| self.entries.get(s))
                    .map(|e| e.item.id.as_str())
                    .collect();
                let id = derived_id("group", &ids);
                let members: Vec<String> = ids.iter().map(|s| s.to_string()).collect();
                let logged = self
                    .context
                    .outbox
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .append_group(&id, &self.name, &members);
                if let Err(error) = logged {
                    tracing::error!(receiver = %self.name, %error, "cannot log a grouped request");
                }
                id
            };
            self.send(id, seqs);
        }
        if self.batch.is_empty() {
            self.batch_deadline = None;
        }
    }

    fn send(&mut self, id: String, seqs: Vec<u64>) {
        let mut items = Vec::with_capacity(seqs.len());
        for seq in &seqs {
            self.ready.remove(seq);
            if let Some(entry) = self.entries.get_mut(seq) {
                entry.state = EntryState::InFlight;
                items.push(entry.item.clone());
            }
        }
        self.in_flight += 1;
        let unit = Unit {
            id: id.clone(),
            seqs: seqs.clone(),
            items,
        };
        let request = Request {
            receiver: self.name.clone(),
            settings: self.settings.clone(),
            shared: Arc::clone(&self.shared),
            context: Arc::clone(&self.context),
            transport: Arc::clone(&self.transport),
            stop: self.stop.clone(),
        };
        let done = self.done_tx.clone();
        tokio::spawn(async move {
            let outcome = request.deliver(&unit).await;
            let _ = done.send(Done {
                seqs: unit.seqs,
                id: unit.id,
                outcome,
            });
        });
    }

    /// Removes finished entries and makes the next of each alert ready.
    fn finish(&mut self, seqs: &[u64]) -> Vec<Entry> {
        let mut removed = Vec::new();
        for seq in seqs {
            self.ready.remove(seq);
            let Some(entry) = self.entries.remove(seq) else {
                continue;
            };
            if let Some(queue) = self.keys.get_mut(&entry.key) {
                queue.retain(|s| s != seq);
                match queue.front() {
                    Some(next) => {
                        if self
                            .entries
                            .get(next)
                            .is_some_and(|e| e.state == EntryState::Waiting)
                        {
                            self.ready.insert(*next);
                        }
                    }
                    None => {
                        self.keys.remove(&entry.key);
                    }
                }
            }
            removed.push(entry);
        }
        removed
    }

    fn ack(&self, items: &[&Item], outcome: AckOutcome) {
        // Reminders are not in the alert log.
        let ids: Vec<String> = items
            .iter()
            .filter(|i| i.repeat.is_none())
            .map(|i| i.id.clone())
            .collect();
        if ids.is_empty() {
            return;
        }
        let logged = self
            .context
            .outbox
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .append_ack(&ids, &self.name, outcome);
        if let Err(error) = logged {
            // Not fatal: without the acknowledgement it is delivered again after a restart,
            // under the same id.
            tracing::error!(receiver = %self.name, %error, "cannot log an acknowledgement");
        }
    }

    fn dead_letter(
        &self,
        id: &str,
        items: &[Item],
        reason: &str,
        status: Option<u16>,
        body: Option<&str>,
    ) {
        let entry = DeadLetterEntry {
            at: format_event_time(now_millis()),
            receiver: &self.name,
            webhook_id: id,
            reason,
            status,
            response_body: body,
            transitions: items.iter().map(|i| &*i.transition).collect(),
        };
        if let Err(error) = write_dead_letter(&self.context.dead_letter_dir, &entry) {
            tracing::error!(receiver = %self.name, %error, "cannot write the dead letter");
        }
        tracing::warn!(receiver = %self.name, webhook_id = id, reason, "dead-lettered");
        self.context
            .metrics
            .dead_letters
            .with_label_values(&[&self.name])
            .inc_by(items.len() as u64);
        self.ack(&items.iter().collect::<Vec<_>>(), AckOutcome::DeadLetter);
    }

    fn done(&mut self, done: Done) {
        self.in_flight = self.in_flight.saturating_sub(1);
        match done.outcome {
            Outcome::Stopped => {
                for seq in &done.seqs {
                    if let Some(e) = self.entries.get_mut(seq) {
                        e.state = EntryState::Waiting;
                    }
                }
            }
            Outcome::Delivered => {
                let entries = self.finish(&done.seqs);
                let items: Vec<&Item> = entries.iter().map(|e| &e.item).collect();
                self.ack(&items, AckOutcome::Delivered);
                tracing::debug!(receiver = %self.name, webhook_id = %done.id, transitions = items.len(), "delivered");
                for entry in &entries {
                    let item = &entry.item;
                    if let (TransitionState::Firing, Some(interval)) =
                        (item.transition.state, item.repeat_interval)
                        && !self.keys.contains_key(&entry.key)
                    {
                        self.reminders.insert(
                            entry.key.clone(),
                            Reminder {
                                transition: Arc::clone(&item.transition),
                                starts_at: item.starts_at,
                                interval,
                                due: Instant::now() + interval,
                                last: item.repeat.unwrap_or(0),
                            },
                        );
                    }
                }
            }
            Outcome::DeadLetter {
                reason,
                status,
                body,
            } => {
                let entries = self.finish(&done.seqs);
                let items: Vec<Item> = entries.into_iter().map(|e| e.item).collect();
                self.dead_letter(&done.id, &items, &reason, status, body.as_deref());
            }
            Outcome::Gone { reason } => {
                self.disable(&reason);
                let entries = self.finish(&done.seqs);
                let items: Vec<Item> = entries.into_iter().map(|e| e.item).collect();
                let why = format!("receiver disabled: {reason}");
                self.dead_letter(&done.id, &items, &why, Some(410), None);
                // Everything else still waiting goes to the dead letter too.
                let waiting: Vec<u64> = self
                    .entries
                    .iter()
                    .filter(|(_, e)| e.state != EntryState::InFlight)
                    .map(|(s, _)| *s)
                    .collect();
                self.batch.clear();
                self.batch_deadline = None;
                self.fixed_groups.clear();
                for seq in waiting {
                    let entries = self.finish(&[seq]);
                    for entry in entries {
                        let id = entry.item.id.clone();
                        self.dead_letter(&id, &[entry.item], &why, None, None);
                    }
                }
                self.reminders.clear();
            }
        }
    }

    fn disable(&mut self, reason: &str) {
        let state = DisabledState {
            fingerprint: self.settings.fingerprint(),
            reason: reason.to_string(),
            at: now_millis(),
        };
        tracing::error!(
            receiver = %self.name,
            reason,
            "receiver answered 410 Gone: disabled until its config changes"
        );
        *self
            .shared
            .disabled
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(state.clone());
        self.context
            .metrics
            .disabled
            .with_label_values(&[&self.name])
            .set(1);
        let logged = self
            .context
            .outbox
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .append_disabled(&self.name, state);
        if let Err(error) = logged {
            tracing::error!(receiver = %self.name, %error, "cannot log the disabled receiver");
        }
    }

    /// Updates the shared status and the gauges.
    fn publish(&self) {
        let depth = self.entries.len();
        let oldest = self
            .entries
            .values()
            .next()
            .map_or(0, |e| e.item.logged_at.max(1));
        self.shared.depth.store(depth, Ordering::Relaxed);
        self.shared
            .in_flight
            .store(self.in_flight, Ordering::Relaxed);
        self.shared
            .oldest_logged_at
            .store(oldest, Ordering::Relaxed);
        let metrics = &self.context.metrics;
        metrics
            .queue_depth
            .with_label_values(&[&self.name])
            .set(i64::try_from(depth).unwrap_or(i64::MAX));
        let age = if oldest == 0 {
            0.0
        } else {
            now_millis().saturating_sub(oldest) as f64 / 1000.0
        };
        metrics
            .oldest_undelivered
            .with_label_values(&[&self.name])
            .set(age);
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// Resolves when the dispatcher stops.
async fn stopped(mut stop: watch::Receiver<bool>) {
    while !*stop.borrow_and_update() {
        if stop.changed().await.is_err() {
            return;
        }
    }
}

/// What a request task needs.
struct Request {
    receiver: String,
    settings: ReceiverSettings,
    shared: Arc<ReceiverShared>,
    context: Arc<Context>,
    transport: Arc<Transport>,
    stop: watch::Receiver<bool>,
}

impl Request {
    /// Sends one request until it is delivered, rejected, gives up, or the dispatcher stops.
    async fn deliver(&self, unit: &Unit) -> Outcome {
        let members: Vec<Member<'_>> = unit
            .items
            .iter()
            .map(|i| Member {
                transition: &i.transition,
                starts_at: i.starts_at,
                repeat: i.repeat,
            })
            .collect();
        let metrics = &self.context.metrics;
        let count = |outcome: &str| {
            metrics
                .deliveries
                .with_label_values(&[&self.receiver, outcome])
                .inc();
        };
        let first = Instant::now();
        let mut attempt: u32 = 0;
        loop {
            if let Some(state) = self.shared.disabled() {
                return Outcome::DeadLetter {
                    reason: format!("receiver disabled: {}", state.reason),
                    status: None,
                    body: None,
                };
            }
            let permit = tokio::select! {
                permit = self.shared.breaker.acquire() => permit,
                () = stopped(self.stop.clone()) => return Outcome::Stopped,
            };
            let result = tokio::select! {
                result = self.transport.send(&unit.id, &self.receiver, &members, &self.context.external_url) => result,
                () = stopped(self.stop.clone()) => {
                    self.shared.breaker.release(permit);
                    return Outcome::Stopped;
                }
            };
            match result {
                Attempt::Delivered => {
                    self.shared.breaker.record(permit, true);
                    count("delivered");
                    return Outcome::Delivered;
                }
                Attempt::Reject { status, body } => {
                    self.shared.breaker.record(permit, true);
                    count("rejected");
                    return Outcome::DeadLetter {
                        reason: format!("rejected with HTTP {status}"),
                        status: Some(status),
                        body: Some(body),
                    };
                }
                Attempt::Gone { reason } => {
                    self.shared.breaker.record(permit, true);
                    count("gone");
                    return Outcome::Gone { reason };
                }
                Attempt::Retry {
                    reason,
                    retry_after,
                } => {
                    self.shared.breaker.record(permit, false);
                    if let Some(limit) = self.settings.retry.give_up_after
                        && first.elapsed() >= limit
                    {
                        count("gave_up");
                        return Outcome::DeadLetter {
                            reason: format!("gave up after {attempt} retries: {reason}"),
                            status: None,
                            body: None,
                        };
                    }
                    count("failed");
                    let delay =
                        retry_delay(&self.settings.retry, attempt, retry_after, &mut rand::rng());
                    tracing::warn!(
                        receiver = %self.receiver,
                        webhook_id = %unit.id,
                        attempt,
                        %reason,
                        retry_in = ?delay,
                        "delivery failed; will retry"
                    );
                    metrics.retries.with_label_values(&[&self.receiver]).inc();
                    attempt = attempt.saturating_add(1);
                    tokio::select! {
                        () = tokio::time::sleep(delay) => {}
                        () = stopped(self.stop.clone()) => return Outcome::Stopped,
                    }
                }
            }
        }
    }
}
