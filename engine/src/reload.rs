//! Live rule reload: replacing the running rule set without a restart or lost state.
//!
//! A reload is triggered by a change of a rule file or of the main config (watched with
//! `notify`, debounced), by `SIGHUP` (the `citybrain run` binary) or by
//! `POST /api/config/reload`. It loads and validates every rule file; when they are valid and
//! the compiled rules differ from the running ones, the new set is published in the
//! [`RuleSlot`] as a new version, and worker 0 feeds the *difference* into the dataflow's
//! `rules` input at its next logical time ([`RuleSetDiff::updates`]). Rules whose rows did not
//! change keep all their state (windows, `for` timers, firing alerts); an edited rule keeps its
//! alerts' states and applies its new alarm side from the switch on; a removed rule's firing
//! alerts resolve with reason `rule removed` (see `citybrain_operators::hysteresis`).
//!
//! When the files are invalid, the previous rules keep running and the problems (each with
//! file:line:column) are kept in the [`ReloadStatus`] served at `/api/config/status`, the
//! `citybrain_config_last_reload_successful` gauge drops to 0 and the wall page shows a banner
//! until a later reload succeeds. Every applied change is appended to the audit log as one
//! JSON line ([`AuditRecord`]).

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{RecvTimeoutError, channel};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use citybrain_model::time::{format_event_time, now_millis};
use citybrain_operators::Diff;
use citybrain_operators::rule::RuleRow;
use notify::Watcher;
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::board::AlertBoard;
use crate::config::{Diagnostic, Diagnostics};
use crate::metrics::Metrics;

/// The difference between two rule sets, by rule id and as collection updates.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct RuleSetDiff {
    /// Ids only in the new set, sorted.
    pub added: Vec<String>,
    /// Ids only in the old set, sorted.
    pub removed: Vec<String>,
    /// Ids in both whose rows differ, sorted.
    pub changed: Vec<String>,
    /// The updates that turn the old rows into the new ones: `-1` for every row only in the
    /// old set, `+1` for every row only in the new one (rows in both are left alone, so their
    /// state is kept).
    #[serde(skip)]
    pub updates: Vec<(RuleRow, Diff)>,
}

impl RuleSetDiff {
    /// What changes from `old` to `new`.
    pub fn between(old: &[RuleRow], new: &[RuleRow]) -> Self {
        let mut counts: BTreeMap<&RuleRow, Diff> = BTreeMap::new();
        for row in old {
            *counts.entry(row).or_default() -= 1;
        }
        for row in new {
            *counts.entry(row).or_default() += 1;
        }
        let updates: Vec<(RuleRow, Diff)> = counts
            .into_iter()
            .filter(|(_, diff)| *diff != 0)
            .map(|(row, diff)| (row.clone(), diff))
            .collect();
        let old_ids: BTreeSet<&str> = old.iter().map(RuleRow::id).collect();
        let new_ids: BTreeSet<&str> = new.iter().map(RuleRow::id).collect();
        let touched: BTreeSet<&str> = updates.iter().map(|(row, _)| row.id()).collect();
        let owned = |ids: Vec<&str>| ids.into_iter().map(str::to_string).collect();
        RuleSetDiff {
            added: owned(new_ids.difference(&old_ids).copied().collect()),
            removed: owned(old_ids.difference(&new_ids).copied().collect()),
            changed: owned(
                touched
                    .iter()
                    .filter(|id| old_ids.contains(*id) && new_ids.contains(*id))
                    .copied()
                    .collect(),
            ),
            updates,
        }
    }

    /// True when the two sets hold the same rows.
    pub fn is_empty(&self) -> bool {
        self.updates.is_empty()
    }
}

/// The content hash of a rule set: SHA-256 (hex) of its compiled rows in a canonical order,
/// so it names what runs; an edit of comments or layout does not change it.
pub fn rules_hash(rules: &[RuleRow]) -> String {
    let mut sorted: Vec<&RuleRow> = rules.iter().collect();
    sorted.sort();
    let mut hasher = Sha256::new();
    for row in sorted {
        // Rule rows are plain data: serializing them cannot fail.
        hasher.update(serde_json::to_vec(row).unwrap_or_default());
        hasher.update([b'\n']);
    }
    hex::encode(hasher.finalize())
}

/// The rule set the workers should run, as versions: the reloader publishes, worker 0 applies.
#[derive(Debug, Default)]
pub struct RuleSlot {
    /// The newest published version (1 is the set at start).
    version: AtomicU64,
    rules: Mutex<Arc<Vec<RuleRow>>>,
    /// The version worker 0 has fed into the dataflow.
    applied: AtomicU64,
    /// The logical time (event time, epoch ms) it was fed in at.
    applied_at: AtomicU64,
}

impl RuleSlot {
    /// A slot holding `rules` as version 1.
    pub fn new(rules: Vec<RuleRow>) -> Self {
        RuleSlot {
            version: AtomicU64::new(1),
            rules: Mutex::new(Arc::new(rules)),
            applied: AtomicU64::new(0),
            applied_at: AtomicU64::new(0),
        }
    }

    /// Publishes `rules` as the next version; returns it.
    pub fn publish(&self, rules: Vec<RuleRow>) -> u64 {
        let mut slot = self.rules.lock().unwrap_or_else(PoisonError::into_inner);
        *slot = Arc::new(rules);
        // Under the lock, so a reader that sees the version also sees its rules.
        self.version.fetch_add(1, Ordering::SeqCst) + 1
    }

    /// The newest version and its rules, when it is newer than `seen`.
    pub fn newer_than(&self, seen: u64) -> Option<(u64, Arc<Vec<RuleRow>>)> {
        if self.version.load(Ordering::SeqCst) <= seen {
            return None;
        }
        let slot = self.rules.lock().unwrap_or_else(PoisonError::into_inner);
        Some((self.version.load(Ordering::SeqCst), Arc::clone(&slot)))
    }

    /// The newest published version.
    pub fn version(&self) -> u64 {
        self.version.load(Ordering::SeqCst)
    }

    /// Records that `version` is in the dataflow from logical time `time` on.
    pub fn mark_applied(&self, version: u64, time: u64) {
        self.applied_at.store(time, Ordering::SeqCst);
        self.applied.store(version, Ordering::SeqCst);
    }

    /// The version in the dataflow and the logical time it was applied at.
    pub fn applied(&self) -> (u64, u64) {
        (
            self.applied.load(Ordering::SeqCst),
            self.applied_at.load(Ordering::SeqCst),
        )
    }
}

/// Where the rules come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RuleSource {
    /// These rule files (e.g. when the config was given as text).
    Files(Vec<PathBuf>),
    /// The main config file: its `[rules] files` are reloaded too, so adding a file to the
    /// list is a reload like any other. Only the rules of a reloaded config apply live.
    Config {
        /// The main config file.
        config: PathBuf,
        /// Its rule files at start, resolved.
        files: Vec<PathBuf>,
    },
    /// Rules given at start only (the demo's embedded rules): reloads from files do nothing,
    /// [`Reloader::apply`] still replaces them.
    Fixed,
}

/// How reloads work, from the config's `[reload]` section.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReloadSettings {
    /// Where the rules come from.
    pub source: RuleSource,
    /// Watch the files for changes.
    pub watch: bool,
    /// Quiet time after the last file event before reloading (editors write in bursts).
    pub debounce: Duration,
    /// The audit log (JSON lines), resolved; `None`: no audit log.
    pub audit_log: Option<PathBuf>,
}

/// What caused a reload attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Trigger {
    /// The rules loaded at start.
    Start,
    /// A watched file changed.
    FileChange,
    /// `SIGHUP`.
    Signal,
    /// `POST /api/config/reload`.
    Api,
    /// A program called [`Reloader::apply`] with compiled rules.
    Call,
}

/// The outcome of the last reload attempt and what runs now: `GET /api/config/status`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ReloadStatus {
    /// Wall clock of the last attempt, epoch ms.
    pub last_attempt_ms: u64,
    /// The same as RFC 3339.
    pub last_attempt: String,
    /// What caused it.
    pub trigger: Trigger,
    /// True when the last attempt loaded valid rules (changed or not).
    pub success: bool,
    /// The problems of a failed attempt, one `file:line:column: error: ...` per line.
    pub error: Option<String>,
    /// The same problems, structured.
    pub diagnostics: Vec<Diagnostic>,
    /// [`rules_hash`] of the rules running now.
    pub rules_hash: String,
    /// How many rules run now.
    pub rules: usize,
    /// The rule files, as last loaded.
    pub files: Vec<PathBuf>,
    /// Rule-set versions applied since start (1: the rules loaded at start).
    pub version: u64,
    /// The version worker 0 has fed into the dataflow (lags `version` by at most a step).
    pub running_version: u64,
    /// The logical time (event time, epoch ms) the running version was applied at.
    pub running_since: u64,
    /// The rule-level difference of the last applied change.
    pub last_change: Option<RuleSetDiff>,
}

/// One line of the audit log: an applied rule change.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct AuditRecord {
    /// Wall clock, epoch ms.
    pub time_ms: u64,
    /// The same as RFC 3339.
    pub time: String,
    /// What caused the change.
    pub trigger: Trigger,
    /// The version it became.
    pub version: u64,
    /// The rule files loaded.
    pub files: Vec<PathBuf>,
    /// [`rules_hash`] of the new rules.
    pub hash: String,
    /// [`rules_hash`] of the rules before.
    pub previous_hash: String,
    /// Ids of added rules.
    pub added: Vec<String>,
    /// Ids of removed rules.
    pub removed: Vec<String>,
    /// Ids of changed rules.
    pub changed: Vec<String>,
}

/// The reloader's view of what runs.
struct Current {
    rules: Vec<RuleRow>,
    files: Vec<PathBuf>,
    status: ReloadStatus,
}

/// Loads, validates and applies rule changes; keeps the status. One reload at a time.
pub struct Reloader {
    settings: ReloadSettings,
    slot: Arc<RuleSlot>,
    metrics: Metrics,
    board: Arc<AlertBoard>,
    current: Mutex<Current>,
}

impl Reloader {
    /// A reloader whose rules at start are `rules` (already in `slot` as version 1), read from
    /// `files`.
    pub fn new(
        settings: ReloadSettings,
        slot: Arc<RuleSlot>,
        rules: Vec<RuleRow>,
        metrics: Metrics,
        board: Arc<AlertBoard>,
    ) -> Self {
        let now = now_millis();
        let files = match &settings.source {
            RuleSource::Files(files) | RuleSource::Config { files, .. } => files.clone(),
            RuleSource::Fixed => Vec::new(),
        };
        let status = ReloadStatus {
            last_attempt_ms: now,
            last_attempt: format_event_time(now),
            trigger: Trigger::Start,
            success: true,
            error: None,
            diagnostics: Vec::new(),
            rules_hash: rules_hash(&rules),
            rules: rules.len(),
            files: files.clone(),
            version: slot.version(),
            running_version: 0,
            running_since: 0,
            last_change: None,
        };
        metrics.config_last_reload_successful.set(1);
        board.set_config(status.clone());
        Reloader {
            settings,
            slot,
            metrics,
            board,
            current: Mutex::new(Current {
                rules,
                files,
                status,
            }),
        }
    }

    /// The status now.
    pub fn status(&self) -> ReloadStatus {
        let mut status = self
            .current
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .status
            .clone();
        (status.running_version, status.running_since) = self.slot.applied();
        status
    }

    /// The files to watch: the rule files, and the main config when there is one.
    pub fn watched_files(&self) -> Vec<PathBuf> {
        let mut files = self
            .current
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .files
            .clone();
        if let RuleSource::Config { config, .. } = &self.settings.source {
            files.push(config.clone());
        }
        files
    }

    /// Loads and validates the rule files; applies them when valid. Returns the status after
    /// the attempt.
    pub fn reload(&self, trigger: Trigger) -> ReloadStatus {
        let loaded = match &self.settings.source {
            RuleSource::Files(files) => {
                crate::config::load_rule_files(files).map(|rules| (rules, files.clone()))
            }
            RuleSource::Config { config, .. } => crate::config::load(config)
                .map(|loaded| (loaded.rules.clone(), loaded.rule_files())),
            RuleSource::Fixed => {
                tracing::info!(?trigger, "the rules are fixed at start: nothing to reload");
                return self.status();
            }
        };
        match loaded {
            Ok((rules, files)) => self.apply_loaded(rules, files, trigger),
            Err(diagnostics) => self.fail(trigger, diagnostics),
        }
    }

    /// Applies compiled `rules` (bypassing the files), e.g. from a program embedding the engine.
    pub fn apply(&self, rules: Vec<RuleRow>, trigger: Trigger) -> ReloadStatus {
        let files = self
            .current
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .files
            .clone();
        self.apply_loaded(rules, files, trigger)
    }

    fn apply_loaded(
        &self,
        rules: Vec<RuleRow>,
        files: Vec<PathBuf>,
        trigger: Trigger,
    ) -> ReloadStatus {
        let now = now_millis();
        let mut current = self.current.lock().unwrap_or_else(PoisonError::into_inner);
        let diff = RuleSetDiff::between(&current.rules, &rules);
        let previous_hash = current.status.rules_hash.clone();
        let status = &mut current.status;
        status.last_attempt_ms = now;
        status.last_attempt = format_event_time(now);
        status.trigger = trigger;
        status.success = true;
        status.error = None;
        status.diagnostics.clear();
        status.files = files.clone();
        if !diff.is_empty() {
            let version = self.slot.publish(rules.clone());
            status.version = version;
            status.rules_hash = rules_hash(&rules);
            status.rules = rules.len();
            let record = AuditRecord {
                time_ms: now,
                time: format_event_time(now),
                trigger,
                version,
                files: files.clone(),
                hash: status.rules_hash.clone(),
                previous_hash,
                added: diff.added.clone(),
                removed: diff.removed.clone(),
                changed: diff.changed.clone(),
            };
            tracing::info!(
                version,
                added = ?record.added,
                removed = ?record.removed,
                changed = ?record.changed,
                "rules reloaded"
            );
            status.last_change = Some(diff);
            if let Some(path) = &self.settings.audit_log
                && let Err(error) = append_audit(path, &record)
            {
                tracing::error!(path = %path.display(), %error, "cannot write the audit log");
            }
            current.rules = rules;
        } else {
            tracing::info!(?trigger, "rules reloaded: no change");
        }
        current.files = files;
        self.metrics
            .config_reloads
            .with_label_values(&["success"])
            .inc();
        self.metrics.config_last_reload_successful.set(1);
        let status = current.status.clone();
        drop(current);
        self.board.set_config(status.clone());
        self.status()
    }

    fn fail(&self, trigger: Trigger, diagnostics: Diagnostics) -> ReloadStatus {
        let now = now_millis();
        tracing::warn!(%diagnostics, "rule reload failed; the previous rules keep running");
        let mut current = self.current.lock().unwrap_or_else(PoisonError::into_inner);
        let status = &mut current.status;
        status.last_attempt_ms = now;
        status.last_attempt = format_event_time(now);
        status.trigger = trigger;
        status.success = false;
        status.error = Some(diagnostics.to_string());
        status.diagnostics = diagnostics.0;
        self.metrics
            .config_reloads
            .with_label_values(&["failure"])
            .inc();
        self.metrics.config_last_reload_successful.set(0);
        let status = current.status.clone();
        drop(current);
        self.board.set_config(status);
        self.status()
    }
}

fn append_audit(path: &Path, record: &AuditRecord) -> std::io::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let mut line = serde_json::to_vec(record).map_err(std::io::Error::other)?;
    line.push(b'\n');
    // One write of the whole line, so concurrent readers never see half a record.
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?
        .write_all(&line)
}

/// Watches the rule files (and the main config) and reloads after changes settle.
pub struct FileWatcher {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

/// The file watcher could not start.
#[derive(Debug, thiserror::Error)]
#[error("cannot watch the rule files: {0}")]
pub struct WatchError(#[from] notify::Error);

impl FileWatcher {
    /// Starts watching `reloader`'s files; a burst of changes causes one reload, `debounce`
    /// after the last event.
    pub fn start(reloader: Arc<Reloader>, debounce: Duration) -> Result<Self, WatchError> {
        let (events, received) = channel::<notify::Result<notify::Event>>();
        let mut watcher = notify::recommended_watcher(move |event| {
            // The receiver is gone only when the watcher stops.
            let _ = events.send(event);
        })?;
        let mut watched_dirs = BTreeSet::new();
        let mut files = absolute_files(&reloader.watched_files());
        watch_dirs(&mut watcher, &files, &mut watched_dirs)?;
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("citybrain-rule-watch".into())
            .spawn(move || {
                let mut due: Option<Instant> = None;
                while !stopping.load(Ordering::Relaxed) {
                    let wait = due.map_or(Duration::from_millis(100), |at| {
                        at.saturating_duration_since(Instant::now())
                            .min(Duration::from_millis(100))
                    });
                    match received.recv_timeout(wait) {
                        Ok(Ok(event)) => {
                            // Editors replace files by renaming: watch directories, match names.
                            if changes_content(&event.kind)
                                && event.paths.iter().any(|p| files.contains(p))
                            {
                                due = Some(Instant::now() + debounce);
                            }
                        }
                        Ok(Err(error)) => tracing::warn!(%error, "rule file watch"),
                        Err(RecvTimeoutError::Timeout) => {}
                        Err(RecvTimeoutError::Disconnected) => break,
                    }
                    if due.is_some_and(|at| Instant::now() >= at) {
                        due = None;
                        reloader.reload(Trigger::FileChange);
                        // The config may list other rule files now.
                        files = absolute_files(&reloader.watched_files());
                        if let Err(error) = watch_dirs(&mut watcher, &files, &mut watched_dirs) {
                            tracing::warn!(%error, "cannot watch a new rule file directory");
                        }
                    }
                }
            })
            .map_err(|e| WatchError(notify::Error::io(e)))?;
        Ok(FileWatcher {
            stop,
            thread: Some(thread),
        })
    }

    /// Stops watching and waits for the thread.
    pub fn shutdown(mut self) {
        self.stop_thread();
    }

    fn stop_thread(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for FileWatcher {
    fn drop(&mut self) {
        self.stop_thread();
    }
}

/// True for events that can change what a file holds. Reading a file (as every reload does)
/// causes access events, which must not cause another reload.
fn changes_content(kind: &notify::EventKind) -> bool {
    use notify::EventKind;
    use notify::event::{AccessKind, AccessMode, ModifyKind};
    match kind {
        EventKind::Create(_) | EventKind::Remove(_) | EventKind::Any => true,
        EventKind::Modify(ModifyKind::Metadata(_)) => false,
        EventKind::Modify(_) => true,
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        EventKind::Access(_) | EventKind::Other => false,
    }
}

/// `files` as absolute paths, as the watcher reports them.
fn absolute_files(files: &[PathBuf]) -> BTreeSet<PathBuf> {
    files
        .iter()
        .map(|f| std::path::absolute(f).unwrap_or_else(|_| f.clone()))
        .collect()
}

/// Watches the directory of every file not watched yet.
fn watch_dirs(
    watcher: &mut notify::RecommendedWatcher,
    files: &BTreeSet<PathBuf>,
    watched: &mut BTreeSet<PathBuf>,
) -> Result<(), notify::Error> {
    for file in files {
        let Some(dir) = file.parent() else { continue };
        if watched.insert(dir.to_path_buf()) {
            watcher.watch(dir, notify::RecursiveMode::NonRecursive)?;
        }
    }
    Ok(())
}

/// Reloads the rule files on every `SIGHUP` to this process, from a thread of its own for the
/// process's life (`kill -HUP <pid>`, as daemons are told to re-read their config).
pub fn reload_on_sighup(reloader: Arc<Reloader>) -> std::io::Result<()> {
    on_signal(
        tokio::signal::unix::SignalKind::hangup(),
        "citybrain-sighup",
        move || {
            tracing::info!("SIGHUP: reloading the rule files");
            reloader.reload(Trigger::Signal);
        },
    )
}

/// Runs `handler` on a thread of its own (named `thread`) each time the process receives the
/// signal `kind`; from the call on, the signal no longer has its default effect.
pub fn on_signal(
    kind: tokio::signal::unix::SignalKind,
    thread: &str,
    mut handler: impl FnMut() + Send + 'static,
) -> std::io::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let mut signals = runtime.block_on(async { tokio::signal::unix::signal(kind) })?;
    std::thread::Builder::new()
        .name(thread.into())
        .spawn(move || {
            runtime.block_on(async move {
                while signals.recv().await.is_some() {
                    handler();
                }
            });
        })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use citybrain_model::{Domain, Metric, Severity};
    use citybrain_operators::ordered_float::OrderedFloat;
    use citybrain_operators::rule::{Direction, ThresholdRule};

    use super::*;

    fn rule(id: &str, threshold: f64) -> RuleRow {
        RuleRow::Threshold(ThresholdRule {
            id: id.into(),
            domain: Domain::Mine,
            metric: Metric::Ch4,
            scope: vec![],
            direction: Direction::Above,
            threshold: OrderedFloat(threshold),
            clear: OrderedFloat(threshold),
            hold_ms: 0,
            severity: Severity::Critical,
            summary: "s".into(),
            labels: vec![],
        })
    }

    #[test]
    fn diff_by_id_and_as_updates() {
        let old = vec![rule("a", 1.0), rule("b", 1.0), rule("c", 1.0)];
        let new = vec![rule("c", 1.0), rule("b", 1.5), rule("d", 2.0)];
        let diff = RuleSetDiff::between(&old, &new);
        assert_eq!(diff.added, vec!["d"]);
        assert_eq!(diff.removed, vec!["a"]);
        assert_eq!(diff.changed, vec!["b"]);
        // The unchanged `c` is not touched, whatever its position.
        assert_eq!(
            diff.updates,
            vec![
                (rule("a", 1.0), -1),
                (rule("b", 1.0), -1),
                (rule("b", 1.5), 1),
                (rule("d", 2.0), 1),
            ]
        );
    }

    #[test]
    fn same_rows_in_another_order_is_no_change() {
        let old = vec![rule("a", 1.0), rule("b", 1.0)];
        let new = vec![rule("b", 1.0), rule("a", 1.0)];
        let diff = RuleSetDiff::between(&old, &new);
        assert!(diff.is_empty());
        assert_eq!(diff, RuleSetDiff::default());
        assert_eq!(rules_hash(&old), rules_hash(&new));
        assert_ne!(rules_hash(&old), rules_hash(&[rule("a", 1.0)]));
        assert_eq!(rules_hash(&old).len(), 64);
    }

    #[test]
    fn from_and_to_nothing() {
        let all = vec![rule("a", 1.0), rule("b", 1.0)];
        let start = RuleSetDiff::between(&[], &all);
        assert_eq!((start.added.len(), start.removed.len()), (2, 0));
        assert!(start.updates.iter().all(|(_, d)| *d == 1));
        let end = RuleSetDiff::between(&all, &[]);
        assert_eq!(end.removed, vec!["a", "b"]);
        assert!(end.changed.is_empty());
        assert!(end.updates.iter().all(|(_, d)| *d == -1));
    }

    fn write(path: &Path, text: &str) {
        if let Some(dir) = path.parent()
            && let Err(e) = std::fs::create_dir_all(dir)
        {
            panic!("{}: {e}", dir.display());
        }
        if let Err(e) = std::fs::write(path, text) {
            panic!("{}: {e}", path.display());
        }
    }

    fn rule_text(id: &str, above: f64) -> String {
        format!("[[rule]]\nid = \"{id}\"\ndomain = \"mine\"\nmetric = \"ch4\"\nabove = {above}\n")
    }

    fn reloader(dir: &Path, source: RuleSource, rules: Vec<RuleRow>) -> (Reloader, Arc<RuleSlot>) {
        let slot = Arc::new(RuleSlot::new(rules.clone()));
        let metrics = match Metrics::new() {
            Ok(metrics) => metrics,
            Err(e) => panic!("{e}"),
        };
        let settings = ReloadSettings {
            source,
            watch: false,
            debounce: Duration::from_millis(50),
            audit_log: Some(dir.join("audit/rules.jsonl")),
        };
        let reloader = Reloader::new(
            settings,
            Arc::clone(&slot),
            rules,
            metrics,
            Arc::new(AlertBoard::new()),
        );
        (reloader, slot)
    }

    fn audit(dir: &Path) -> Vec<serde_json::Value> {
        std::fs::read_to_string(dir.join("audit/rules.jsonl"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    #[test]
    fn a_config_source_follows_its_list_of_rule_files() {
        let Ok(dir) = tempfile::tempdir() else {
            panic!("no temp dir");
        };
        let config = dir.path().join("citybrain.toml");
        write(&config, "[rules]\nfiles = [\"a.toml\"]\n");
        write(&dir.path().join("a.toml"), &rule_text("a", 1.0));
        write(&dir.path().join("b.toml"), &rule_text("b", 2.0));
        let loaded = match crate::config::load(&config) {
            Ok(loaded) => loaded,
            Err(e) => panic!("{e}"),
        };
        let source = RuleSource::Config {
            config: config.clone(),
            files: loaded.rule_files(),
        };
        let (reloader, slot) = reloader(dir.path(), source, loaded.rules.clone());
        assert_eq!(
            reloader.watched_files(),
            vec![dir.path().join("a.toml"), config.clone()]
        );
        // Nothing changed: success, no new version, nothing audited.
        let status = reloader.reload(Trigger::Signal);
        assert!(status.success);
        assert_eq!((status.version, slot.version()), (1, 1));
        assert!(audit(dir.path()).is_empty());

        // A second file in the list: its rules are added and it is watched from now on.
        write(&config, "[rules]\nfiles = [\"a.toml\", \"b.toml\"]\n");
        let status = reloader.reload(Trigger::FileChange);
        assert_eq!((status.success, status.version, status.rules), (true, 2, 2));
        assert_eq!(
            status.last_change.as_ref().map(|c| c.added.clone()),
            Some(vec!["b".to_string()])
        );
        assert!(
            reloader
                .watched_files()
                .contains(&dir.path().join("b.toml"))
        );
        assert_eq!(
            slot.newer_than(1).map(|(v, rules)| (v, rules.len())),
            Some((2, 2))
        );

        // A broken main config is a failed reload like a broken rule file.
        write(&config, "[rules]\nfiles = [\"a.toml\", \"missing.toml\"]\n");
        let status = reloader.reload(Trigger::Api);
        assert!(!status.success);
        assert_eq!(status.version, 2);
        assert_eq!(
            status.error.as_deref().and_then(|e| e.lines().next()),
            Some(
                format!(
                    "{}:2:20: error: rule file `{}` not found",
                    config.display(),
                    dir.path().join("missing.toml").display()
                )
                .as_str()
            )
        );
        assert_eq!(reloader.metrics.config_last_reload_successful.get(), 0);

        let records = audit(dir.path());
        assert_eq!(records.len(), 1);
        assert_eq!(records[0]["trigger"], "file_change");
        assert_eq!(records[0]["added"], serde_json::json!(["b"]));
        assert_eq!(
            records[0]["previous_hash"],
            rules_hash(&loaded.rules).as_str()
        );
        assert_eq!(records[0]["hash"], status.rules_hash.as_str());
    }

    #[test]
    fn the_watcher_reloads_once_after_a_burst_of_writes() {
        let Ok(dir) = tempfile::tempdir() else {
            panic!("no temp dir");
        };
        let file = dir.path().join("rules/a.toml");
        write(&file, &rule_text("a", 1.0));
        let rules = match crate::config::load_rule_files(std::slice::from_ref(&file)) {
            Ok(rules) => rules,
            Err(e) => panic!("{e}"),
        };
        let (reloader, slot) = reloader(dir.path(), RuleSource::Files(vec![file.clone()]), rules);
        let reloader = Arc::new(reloader);
        let watcher = match FileWatcher::start(Arc::clone(&reloader), Duration::from_millis(500)) {
            Ok(watcher) => watcher,
            Err(e) => panic!("{e}"),
        };
        // An unrelated file in the same directory changes nothing.
        write(&dir.path().join("rules/notes.txt"), "x");
        for above in [1.1, 1.2, 1.3, 1.4, 1.5] {
            write(&file, &rule_text("a", above));
            std::thread::sleep(Duration::from_millis(10));
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while slot.version() < 2 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        // Long enough for a second reload, were there one.
        std::thread::sleep(Duration::from_millis(800));
        watcher.shutdown();
        let success = reloader
            .metrics
            .config_reloads
            .with_label_values(&["success"])
            .get();
        assert_eq!((slot.version(), success), (2, 1));
        let running = slot.newer_than(0).map(|(_, rules)| rules.as_ref().clone());
        assert_eq!(
            running.and_then(|r| r.first().map(|r| r.alarm().threshold.0)),
            Some(1.5)
        );
    }

    #[test]
    fn slot_versions() {
        let slot = RuleSlot::new(vec![rule("a", 1.0)]);
        assert_eq!(slot.version(), 1);
        let Some((version, rules)) = slot.newer_than(0) else {
            panic!("version 1 is newer than 0");
        };
        assert_eq!((version, rules.len()), (1, 1));
        assert!(slot.newer_than(1).is_none());
        assert_eq!(slot.publish(vec![]), 2);
        assert_eq!(slot.newer_than(1).map(|(v, r)| (v, r.len())), Some((2, 0)));
        slot.mark_applied(2, 42);
        assert_eq!(slot.applied(), (2, 42));
    }
}
