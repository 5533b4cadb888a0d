//! The durable outbox: an append-only alert log on disk that every transition is written to
//! before any delivery is attempted, together with the delivery state per receiver.
//!
//! # Format
//!
//! The log is a directory of segment files named `<20-digit number>.seg`, read in number
//! order. A segment is a sequence of records, each framed as
//!
//! ```text
//! u32 LE  length of the payload in bytes
//! u32 LE  CRC-32 (IEEE) of the payload
//! [u8]    payload: one JSON object, tagged by its "k" field
//! ```
//!
//! Record kinds: `transition` (the transition, the receivers it was routed to, when it was
//! logged), `ack` (ids delivered to, or dead-lettered for, one receiver), `group` (the members
//! of a grouped request, so a restart re-sends the same group under the same id), `disabled` /
//! `enabled` (a receiver answered 410 Gone), `silence` / `silence_expired`, and `seen` (ids kept
//! for deduplication by compaction).
//!
//! # Durability
//!
//! Transition records are written with one `write` call before [`Outbox::append_transition`]
//! returns, and flushed to disk according to the [`FsyncPolicy`]. Other records are written
//! but not synced on their own: losing an acknowledgement in a power cut only means the
//! transition is delivered again, under the same `webhook-id`.
//!
//! # Bounds
//!
//! When the active segment grows past `segment_bytes` (or twice the last snapshot, whichever
//! is larger), the live state is written to a new segment (a snapshot: pending transitions,
//! pending groups, the latest transition of each firing alert, disabled receivers, active
//! silences and the last `dedupe_ids` ids) and older segments are deleted. Fully acknowledged
//! transitions are dropped from the log, except for their ids.
//!
//! # Recovery
//!
//! On open, a record with a bad length or checksum (a torn write at a crash, or corruption)
//! ends its segment: the file is truncated to the last good record and a warning is logged
//! and kept in [`Outbox::recovery_warnings`]. A record with a good checksum that does not
//! decode (written by another version) is skipped with a warning.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use citybrain_model::{AlertTransition, TransitionState};
use serde::{Deserialize, Serialize};

use super::silence::SilenceRecord;

/// When appended transitions are flushed to disk (`fsync`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FsyncPolicy {
    /// After every transition, before [`Outbox::append_transition`] returns.
    Always,
    /// At most this long after a transition was written (a background task syncs).
    Interval(Duration),
    /// Never explicitly: the operating system writes back when it wants. A process crash loses
    /// nothing, a power cut may.
    Never,
}

/// Where and how the outbox is kept.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutboxSettings {
    /// The directory of the segment files; created if missing.
    pub dir: PathBuf,
    /// When transitions are flushed to disk.
    pub fsync: FsyncPolicy,
    /// Compact when the active segment exceeds this many bytes.
    pub segment_bytes: u64,
    /// How many of the most recent transition ids are remembered for deduplication.
    pub dedupe_ids: usize,
}

impl OutboxSettings {
    /// Defaults (fsync every 100 ms, 64 MiB segments, 100 000 ids) in `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        OutboxSettings {
            dir: dir.into(),
            fsync: FsyncPolicy::Interval(Duration::from_millis(100)),
            segment_bytes: 64 * 1024 * 1024,
            dedupe_ids: 100_000,
        }
    }
}

/// The outbox could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    /// A file operation failed.
    #[error("alert log {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A record could not be encoded.
    #[error("alert log: cannot encode a record: {0}")]
    Encode(String),
}

/// How a delivery of a transition to a receiver ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AckOutcome {
    /// The receiver accepted it.
    Delivered,
    /// It went to the receiver's dead-letter file.
    DeadLetter,
}

/// A receiver disabled by a 410 Gone answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DisabledState {
    /// Fingerprint of the receiver's settings when it was disabled; other settings enable it.
    pub fingerprint: String,
    /// Why (the response).
    pub reason: String,
    /// When, epoch ms.
    pub at: u64,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "k", rename_all = "snake_case")]
enum Record {
    Transition {
        t: AlertTransition,
        receivers: Vec<String>,
        at: u64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        starts_at: Option<u64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        silenced: Option<String>,
    },
    Ack {
        ids: Vec<String>,
        receiver: String,
        outcome: AckOutcome,
    },
    Group {
        id: String,
        receiver: String,
        members: Vec<String>,
    },
    Disabled {
        receiver: String,
        #[serde(flatten)]
        state: DisabledState,
    },
    Enabled {
        receiver: String,
    },
    Silence {
        silence: SilenceRecord,
    },
    SilenceExpired {
        id: String,
        at: u64,
    },
    Seen {
        ids: Vec<String>,
        /// The first chunk of a snapshot: forget the ids known before.
        #[serde(default)]
        reset: bool,
    },
}

/// A transition not yet acknowledged by every receiver it was routed to.
#[derive(Clone, Debug, PartialEq)]
pub struct PendingTransition {
    /// The transition.
    pub transition: Arc<AlertTransition>,
    /// The receivers still owed it, in routing order.
    pub receivers: Vec<String>,
    /// When it was logged, epoch ms.
    pub logged_at: u64,
    /// When the alert started firing (for a resolved transition: the event time of the firing
    /// transition before it, when known), epoch ms.
    pub starts_at: Option<u64>,
}

/// A grouped request that was formed but not acknowledged.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PendingGroup {
    /// The receiver.
    pub receiver: String,
    /// The member transition ids, in request order.
    pub members: Vec<String>,
}

type AlertKey = (String, String);

fn key_of(t: &AlertTransition) -> AlertKey {
    (t.rule.clone(), t.entity.clone())
}

/// The log's state, rebuilt by applying its records in order.
#[derive(Debug, Default)]
struct State {
    next_seq: u64,
    pending: BTreeMap<u64, PendingTransition>,
    by_id: HashMap<String, u64>,
    groups: BTreeMap<String, PendingGroup>,
    seen: HashSet<String>,
    seen_order: VecDeque<String>,
    dedupe_ids: usize,
    firing: HashMap<AlertKey, Arc<AlertTransition>>,
    disabled: BTreeMap<String, DisabledState>,
    silences: BTreeMap<String, SilenceRecord>,
}

impl State {
    fn remember(&mut self, id: &str) {
        if self.seen.insert(id.to_string()) {
            self.seen_order.push_back(id.to_string());
            while self.seen_order.len() > self.dedupe_ids {
                if let Some(old) = self.seen_order.pop_front() {
                    self.seen.remove(&old);
                }
            }
        }
    }

    fn apply(&mut self, record: Record) {
        match record {
            Record::Transition {
                t,
                receivers,
                at,
                starts_at,
                silenced: _,
            } => {
                let t = Arc::new(t);
                match t.state {
                    TransitionState::Firing => {
                        self.firing.insert(key_of(&t), Arc::clone(&t));
                    }
                    TransitionState::Resolved => {
                        self.firing.remove(&key_of(&t));
                    }
                }
                if receivers.is_empty() {
                    // Pending ids are known through `by_id`; they join the dedupe window
                    // once acknowledged.
                    if !self.by_id.contains_key(&t.id) {
                        self.remember(&t.id);
                    }
                    return;
                }
                if let Some(seq) = self.by_id.get(&t.id)
                    && let Some(entry) = self.pending.get_mut(seq)
                {
                    for r in receivers {
                        if !entry.receivers.contains(&r) {
                            entry.receivers.push(r);
                        }
                    }
                    return;
                }
                let seq = self.next_seq;
                self.next_seq += 1;
                self.by_id.insert(t.id.clone(), seq);
                self.pending.insert(
                    seq,
                    PendingTransition {
                        transition: t,
                        receivers,
                        logged_at: at,
                        starts_at,
                    },
                );
            }
            Record::Ack {
                ids,
                receiver,
                outcome: _,
            } => {
                for id in &ids {
                    let Some(&seq) = self.by_id.get(id) else {
                        continue;
                    };
                    let done = match self.pending.get_mut(&seq) {
                        Some(entry) => {
                            entry.receivers.retain(|r| *r != receiver);
                            entry.receivers.is_empty()
                        }
                        None => true,
                    };
                    if done {
                        self.pending.remove(&seq);
                        self.by_id.remove(id);
                        self.remember(id);
                    }
                }
                self.groups.retain(|_, g| {
                    g.receiver != receiver || !g.members.iter().any(|m| ids.contains(m))
                });
            }
            Record::Group {
                id,
                receiver,
                members,
            } => {
                self.groups.insert(id, PendingGroup { receiver, members });
            }
            Record::Disabled { receiver, state } => {
                self.disabled.insert(receiver, state);
            }
            Record::Enabled { receiver } => {
                self.disabled.remove(&receiver);
            }
            Record::Silence { silence } => {
                self.silences.insert(silence.id.clone(), silence);
            }
            Record::SilenceExpired { id, at } => {
                if let Some(s) = self.silences.get_mut(&id) {
                    s.ends_at = s.ends_at.min(at);
                }
            }
            Record::Seen { ids, reset } => {
                if reset {
                    self.seen.clear();
                    self.seen_order.clear();
                }
                for id in ids {
                    self.remember(&id);
                }
            }
        }
    }

    /// The records that rebuild this state (see the module docs), oldest facts first.
    fn snapshot(&self, now: u64) -> Vec<Record> {
        let mut out = Vec::new();
        // First, so the snapshot defines the dedupe window (older segments left over from an
        // interrupted compaction are replayed before it).
        let ids: Vec<String> = self.seen_order.iter().cloned().collect();
        for (i, chunk) in ids.chunks(1000).enumerate() {
            out.push(Record::Seen {
                ids: chunk.to_vec(),
                reset: i == 0,
            });
        }
        for (receiver, state) in &self.disabled {
            out.push(Record::Disabled {
                receiver: receiver.clone(),
                state: state.clone(),
            });
        }
        for silence in self.silences.values().filter(|s| s.ends_at > now) {
            out.push(Record::Silence {
                silence: silence.clone(),
            });
        }
        let mut firing: Vec<&Arc<AlertTransition>> = self
            .firing
            .values()
            .filter(|t| !self.by_id.contains_key(&t.id))
            .collect();
        firing.sort_by(|a, b| (a.event_time, &a.id).cmp(&(b.event_time, &b.id)));
        for t in firing {
            out.push(Record::Transition {
                t: (**t).clone(),
                receivers: Vec::new(),
                at: now,
                starts_at: Some(t.event_time),
                silenced: None,
            });
        }
        for entry in self.pending.values() {
            out.push(Record::Transition {
                t: (*entry.transition).clone(),
                receivers: entry.receivers.clone(),
                at: entry.logged_at,
                starts_at: entry.starts_at,
                silenced: None,
            });
        }
        for (id, group) in &self.groups {
            out.push(Record::Group {
                id: id.clone(),
                receiver: group.receiver.clone(),
                members: group.members.clone(),
            });
        }
        out
    }
}

/// Largest accepted record payload; a longer length field is corruption.
const MAX_RECORD: usize = 64 * 1024 * 1024;

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> OutboxError + '_ {
    move |source| OutboxError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn frame(record: &Record) -> Result<Vec<u8>, OutboxError> {
    let payload = serde_json::to_vec(record).map_err(|e| OutboxError::Encode(e.to_string()))?;
    let len = u32::try_from(payload.len())
        .ok()
        .filter(|&l| (l as usize) <= MAX_RECORD)
        .ok_or_else(|| OutboxError::Encode(format!("record of {} bytes", payload.len())))?;
    let mut out = Vec::with_capacity(payload.len() + 8);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
    out.extend_from_slice(&payload);
    Ok(out)
}

/// Reads the records of one segment's bytes: the records, the length of the good prefix, and
/// the problem that ended it early (if any), plus warnings about skipped records.
fn parse_segment(bytes: &[u8]) -> (Vec<Record>, usize, Option<String>, Vec<String>) {
    let mut records = Vec::new();
    let mut warnings = Vec::new();
    let mut at = 0usize;
    while at < bytes.len() {
        let Some(header) = bytes.get(at..at + 8) else {
            return (
                records,
                at,
                Some(format!("torn record header at byte {at}")),
                warnings,
            );
        };
        let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
        let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
        if len > MAX_RECORD {
            return (
                records,
                at,
                Some(format!("impossible record length {len} at byte {at}")),
                warnings,
            );
        }
        let Some(payload) = bytes.get(at + 8..at + 8 + len) else {
            return (
                records,
                at,
                Some(format!("torn record at byte {at}")),
                warnings,
            );
        };
        if crc32fast::hash(payload) != crc {
            return (
                records,
                at,
                Some(format!("checksum mismatch at byte {at}")),
                warnings,
            );
        }
        match serde_json::from_slice::<Record>(payload) {
            Ok(record) => records.push(record),
            Err(e) => warnings.push(format!("skipped an unreadable record at byte {at}: {e}")),
        }
        at += 8 + len;
    }
    (records, at, None, warnings)
}

fn segment_number(path: &Path) -> Option<u64> {
    let name = path.file_name()?.to_str()?;
    name.strip_suffix(".seg")?.parse().ok()
}

fn segment_path(dir: &Path, number: u64) -> PathBuf {
    dir.join(format!("{number:020}.seg"))
}

fn sync_dir(dir: &Path) -> Result<(), OutboxError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_error(dir))
}

/// The alert log. Not thread-safe by itself: the dispatcher keeps it behind a mutex.
#[derive(Debug)]
pub struct Outbox {
    settings: OutboxSettings,
    state: State,
    active: File,
    active_path: PathBuf,
    active_number: u64,
    active_bytes: u64,
    snapshot_bytes: u64,
    dirty: bool,
    last_sync: Instant,
    warnings: Vec<String>,
}

impl Outbox {
    /// Opens (or creates) the log in `settings.dir` and replays it. A corrupt or torn tail is
    /// truncated to the last good record, with a warning.
    pub fn open(settings: &OutboxSettings) -> Result<Outbox, OutboxError> {
        let dir = &settings.dir;
        fs::create_dir_all(dir).map_err(io_error(dir))?;
        let mut segments: Vec<(u64, PathBuf)> = Vec::new();
        for entry in fs::read_dir(dir).map_err(io_error(dir))? {
            let path = entry.map_err(io_error(dir))?.path();
            if path.extension().is_some_and(|e| e == "tmp") {
                // A compaction that did not finish; the segments it would replace are intact.
                let _ = fs::remove_file(&path);
                continue;
            }
            if let Some(number) = segment_number(&path) {
                segments.push((number, path));
            }
        }
        segments.sort();
        let mut state = State {
            dedupe_ids: settings.dedupe_ids,
            ..State::default()
        };
        let mut warnings = Vec::new();
        for (_, path) in &segments {
            let bytes = fs::read(path).map_err(io_error(path))?;
            let (records, good, problem, skipped) = parse_segment(&bytes);
            for warning in skipped {
                tracing::warn!(file = %path.display(), "{warning}");
                warnings.push(format!("{}: {warning}", path.display()));
            }
            for record in records {
                state.apply(record);
            }
            if let Some(problem) = problem {
                let message = format!(
                    "{}: {problem}; truncated {} bytes to the last good record",
                    path.display(),
                    bytes.len() - good
                );
                tracing::warn!("alert log: {message}");
                warnings.push(message);
                let file = OpenOptions::new()
                    .write(true)
                    .open(path)
                    .map_err(io_error(path))?;
                file.set_len(good as u64).map_err(io_error(path))?;
                file.sync_all().map_err(io_error(path))?;
            }
        }
        let (number, path) = match segments.last() {
            Some((number, path)) => (*number, path.clone()),
            None => (1, segment_path(dir, 1)),
        };
        let active = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(io_error(&path))?;
        let active_bytes = active.metadata().map_err(io_error(&path))?.len();
        if segments.is_empty() {
            sync_dir(dir)?;
        }
        let mut outbox = Outbox {
            settings: settings.clone(),
            state,
            active,
            active_path: path,
            active_number: number,
            active_bytes,
            snapshot_bytes: 0,
            dirty: false,
            last_sync: Instant::now(),
            warnings,
        };
        if segments.len() > 1 || active_bytes > settings.segment_bytes {
            outbox.compact()?;
        }
        Ok(outbox)
    }

    /// Problems found (and repaired) when the log was opened.
    pub fn recovery_warnings(&self) -> &[String] {
        &self.warnings
    }

    /// Whether a transition with this id was logged (it is pending or among the last
    /// `dedupe_ids` ids). The engine uses this to suppress transitions a replay repeats.
    pub fn contains(&self, id: &str) -> bool {
        self.state.by_id.contains_key(id) || self.state.seen.contains(id)
    }

    fn append(&mut self, record: &Record) -> Result<(), OutboxError> {
        let bytes = frame(record)?;
        self.active
            .write_all(&bytes)
            .map_err(io_error(&self.active_path))?;
        self.active_bytes += bytes.len() as u64;
        self.dirty = true;
        Ok(())
    }

    fn after_append(&mut self) -> Result<(), OutboxError> {
        let limit = self
            .settings
            .segment_bytes
            .max(self.snapshot_bytes.saturating_mul(2));
        if self.active_bytes > limit
            && let Err(error) = self.compact()
        {
            // The record itself is written; keep appending to the current segment.
            tracing::error!(%error, "alert log compaction failed");
        }
        Ok(())
    }

    /// Appends a transition routed to `receivers` (empty when silenced or unrouted) and flushes
    /// it according to the fsync policy. `at` is the wall-clock time, epoch ms.
    pub fn append_transition(
        &mut self,
        transition: &AlertTransition,
        receivers: &[String],
        silenced: Option<&str>,
        at: u64,
    ) -> Result<(), OutboxError> {
        let starts_at = match transition.state {
            TransitionState::Firing => Some(transition.event_time),
            TransitionState::Resolved => self
                .state
                .firing
                .get(&key_of(transition))
                .map(|t| t.event_time),
        };
        let record = Record::Transition {
            t: transition.clone(),
            receivers: receivers.to_vec(),
            at,
            starts_at,
            silenced: silenced.map(str::to_string),
        };
        self.append(&record)?;
        match self.settings.fsync {
            FsyncPolicy::Always => self.sync()?,
            FsyncPolicy::Interval(interval) if self.last_sync.elapsed() >= interval => {
                self.sync()?;
            }
            FsyncPolicy::Interval(_) | FsyncPolicy::Never => {}
        }
        self.state.apply(record);
        self.after_append()
    }

    /// Records that `ids` were delivered to (or dead-lettered for) `receiver`.
    pub fn append_ack(
        &mut self,
        ids: &[String],
        receiver: &str,
        outcome: AckOutcome,
    ) -> Result<(), OutboxError> {
        let record = Record::Ack {
            ids: ids.to_vec(),
            receiver: receiver.to_string(),
            outcome,
        };
        self.append(&record)?;
        self.state.apply(record);
        self.after_append()
    }

    /// Records a grouped request before it is first sent.
    pub fn append_group(
        &mut self,
        id: &str,
        receiver: &str,
        members: &[String],
    ) -> Result<(), OutboxError> {
        self.append_state(Record::Group {
            id: id.to_string(),
            receiver: receiver.to_string(),
            members: members.to_vec(),
        })
    }

    /// Records that `receiver` is disabled (410 Gone).
    pub fn append_disabled(
        &mut self,
        receiver: &str,
        state: DisabledState,
    ) -> Result<(), OutboxError> {
        self.append_state(Record::Disabled {
            receiver: receiver.to_string(),
            state,
        })
    }

    /// Records that `receiver` is enabled again (its settings changed).
    pub fn append_enabled(&mut self, receiver: &str) -> Result<(), OutboxError> {
        self.append_state(Record::Enabled {
            receiver: receiver.to_string(),
        })
    }

    /// Records a silence added at run time.
    pub fn append_silence(&mut self, silence: &SilenceRecord) -> Result<(), OutboxError> {
        self.append_state(Record::Silence {
            silence: silence.clone(),
        })?;
        // Operators expect a silence they were told is in place to survive a crash.
        self.sync()
    }

    /// Records that a silence was ended at `at` (epoch ms).
    pub fn append_silence_expired(&mut self, id: &str, at: u64) -> Result<(), OutboxError> {
        self.append_state(Record::SilenceExpired {
            id: id.to_string(),
            at,
        })?;
        self.sync()
    }

    fn append_state(&mut self, record: Record) -> Result<(), OutboxError> {
        self.append(&record)?;
        self.state.apply(record);
        self.after_append()
    }

    /// Transitions not acknowledged by every receiver, in log order.
    pub fn pending(&self) -> impl Iterator<Item = &PendingTransition> {
        self.state.pending.values()
    }

    /// How many transitions are pending.
    pub fn pending_count(&self) -> usize {
        self.state.pending.len()
    }

    /// Grouped requests formed but not acknowledged, by group id.
    pub fn pending_groups(&self) -> &BTreeMap<String, PendingGroup> {
        &self.state.groups
    }

    /// The latest transition of every alert whose latest transition is `firing`.
    pub fn firing(&self) -> impl Iterator<Item = &Arc<AlertTransition>> {
        self.state.firing.values()
    }

    /// Receivers disabled by a 410 Gone, by name.
    pub fn disabled(&self) -> &BTreeMap<String, DisabledState> {
        &self.state.disabled
    }

    /// Silences added at run time (including ended ones not yet compacted away).
    pub fn silences(&self) -> impl Iterator<Item = &SilenceRecord> {
        self.state.silences.values()
    }

    /// Flushes everything written to disk.
    pub fn sync(&mut self) -> Result<(), OutboxError> {
        self.active
            .sync_data()
            .map_err(io_error(&self.active_path))?;
        self.dirty = false;
        self.last_sync = Instant::now();
        Ok(())
    }

    /// [`sync`](Self::sync) when something was written since the last one.
    pub fn sync_if_dirty(&mut self) -> Result<(), OutboxError> {
        if self.dirty { self.sync() } else { Ok(()) }
    }

    /// Bytes in the active segment.
    pub fn active_bytes(&self) -> u64 {
        self.active_bytes
    }

    /// Writes the live state to a new segment and deletes the older ones.
    pub fn compact(&mut self) -> Result<(), OutboxError> {
        let dir = self.settings.dir.clone();
        let number = self.active_number + 1;
        let path = segment_path(&dir, number);
        let tmp = path.with_extension("seg.tmp");
        let now = citybrain_model::time::now_millis();
        let mut bytes = Vec::new();
        for record in self.state.snapshot(now) {
            bytes.extend_from_slice(&frame(&record)?);
        }
        {
            let mut file = File::create(&tmp).map_err(io_error(&tmp))?;
            file.write_all(&bytes).map_err(io_error(&tmp))?;
            file.sync_all().map_err(io_error(&tmp))?;
        }
        fs::rename(&tmp, &path).map_err(io_error(&path))?;
        sync_dir(&dir)?;
        let active = OpenOptions::new()
            .append(true)
            .open(&path)
            .map_err(io_error(&path))?;
        let previous = self.active_number;
        self.active = active;
        self.active_path = path;
        self.active_number = number;
        self.active_bytes = bytes.len() as u64;
        self.snapshot_bytes = bytes.len() as u64;
        self.dirty = false;
        self.last_sync = Instant::now();
        for entry in fs::read_dir(&dir).map_err(io_error(&dir))?.flatten() {
            let old = entry.path();
            if segment_number(&old).is_some_and(|n| n <= previous) {
                fs::remove_file(&old).map_err(io_error(&old))?;
            }
        }
        sync_dir(&dir)?;
        self.state.silences.retain(|_, s| s.ends_at > now);
        tracing::debug!(
            segment = number,
            bytes = self.active_bytes,
            pending = self.state.pending.len(),
            "alert log compacted"
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use citybrain_model::alert::transition_id;
    use citybrain_model::{Domain, Severity};

    use super::*;

    pub(crate) fn transition(
        rule: &str,
        entity: &str,
        state: TransitionState,
        time: u64,
    ) -> AlertTransition {
        AlertTransition {
            id: transition_id(rule, entity, state, time),
            rule: rule.into(),
            entity: entity.into(),
            domain: Domain::Mine,
            state,
            severity: Severity::Critical,
            summary: format!("{rule} on {entity}"),
            value: 1.25,
            event_time: time,
            event_time_rfc3339: citybrain_model::time::format_event_time(time),
            labels: BTreeMap::from([("mine".to_string(), "jungar-1".to_string())]),
            reason: None,
        }
    }

    fn settings(dir: &Path) -> OutboxSettings {
        OutboxSettings {
            dir: dir.to_path_buf(),
            fsync: FsyncPolicy::Always,
            segment_bytes: 1 << 20,
            dedupe_ids: 1000,
        }
    }

    fn receivers(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    fn pending_view(outbox: &Outbox) -> Vec<(String, Vec<String>)> {
        outbox
            .pending()
            .map(|p| (p.transition.id.clone(), p.receivers.clone()))
            .collect()
    }

    fn segments(dir: &Path) -> Vec<PathBuf> {
        let mut all: Vec<PathBuf> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| segment_number(p).is_some())
            .collect();
        all.sort();
        all
    }

    #[test]
    fn append_ack_and_replay() {
        let dir = tempfile::tempdir().unwrap();
        let a = transition("ch4", "s1", TransitionState::Firing, 1000);
        let b = transition("ch4", "s2", TransitionState::Firing, 1001);
        let c = transition("ch4", "s1", TransitionState::Resolved, 2000);
        {
            let mut outbox = Outbox::open(&settings(dir.path())).unwrap();
            assert!(outbox.recovery_warnings().is_empty());
            outbox
                .append_transition(&a, &receivers(&["x", "y"]), None, 5)
                .unwrap();
            outbox
                .append_transition(&b, &receivers(&["x"]), None, 6)
                .unwrap();
            outbox.append_transition(&c, &[], Some("s-1"), 7).unwrap();
            outbox
                .append_ack(&[a.id.clone(), b.id.clone()], "x", AckOutcome::Delivered)
                .unwrap();
            outbox
                .append_group("g", "y", std::slice::from_ref(&a.id))
                .unwrap();
            assert!(outbox.contains(&c.id));
        }
        let outbox = Outbox::open(&settings(dir.path())).unwrap();
        assert_eq!(
            pending_view(&outbox),
            vec![(a.id.clone(), receivers(&["y"]))]
        );
        assert_eq!(outbox.pending().next().map(|p| p.logged_at), Some(5));
        assert!(outbox.contains(&a.id) && outbox.contains(&b.id) && outbox.contains(&c.id));
        assert!(!outbox.contains("nope"));
        assert_eq!(
            outbox.pending_groups().get("g"),
            Some(&PendingGroup {
                receiver: "y".into(),
                members: vec![a.id.clone()]
            })
        );
        // c resolved s1, so only s2 is firing.
        let firing: Vec<&str> = outbox.firing().map(|t| t.entity.as_str()).collect();
        assert_eq!(firing, vec!["s2"]);
    }

    #[test]
    fn resolved_remembers_when_the_alert_started() {
        let dir = tempfile::tempdir().unwrap();
        let mut outbox = Outbox::open(&settings(dir.path())).unwrap();
        let a = transition("r", "e", TransitionState::Firing, 1000);
        let b = transition("r", "e", TransitionState::Resolved, 3000);
        outbox
            .append_transition(&a, &receivers(&["x"]), None, 1)
            .unwrap();
        outbox
            .append_ack(std::slice::from_ref(&a.id), "x", AckOutcome::Delivered)
            .unwrap();
        outbox
            .append_transition(&b, &receivers(&["x"]), None, 2)
            .unwrap();
        let starts: Vec<Option<u64>> = outbox.pending().map(|p| p.starts_at).collect();
        assert_eq!(starts, vec![Some(1000)]);
        outbox.compact().unwrap();
        drop(outbox);
        let outbox = Outbox::open(&settings(dir.path())).unwrap();
        let starts: Vec<Option<u64>> = outbox.pending().map(|p| p.starts_at).collect();
        assert_eq!(starts, vec![Some(1000)]);
    }

    #[test]
    fn a_torn_or_corrupt_tail_is_truncated_with_a_warning() {
        let dir = tempfile::tempdir().unwrap();
        let a = transition("r", "a", TransitionState::Firing, 1);
        let b = transition("r", "b", TransitionState::Firing, 2);
        {
            let mut outbox = Outbox::open(&settings(dir.path())).unwrap();
            outbox
                .append_transition(&a, &receivers(&["x"]), None, 1)
                .unwrap();
            outbox
                .append_transition(&b, &receivers(&["x"]), None, 2)
                .unwrap();
        }
        let path = segments(dir.path()).pop().unwrap();
        let full = fs::read(&path).unwrap();
        let first_len = 8 + u32::from_le_bytes(full[0..4].try_into().unwrap()) as usize;

        // Torn: the second record is cut in the middle.
        fs::write(&path, &full[..full.len() - 5]).unwrap();
        let outbox = Outbox::open(&settings(dir.path())).unwrap();
        assert_eq!(
            pending_view(&outbox),
            vec![(a.id.clone(), receivers(&["x"]))]
        );
        assert_eq!(outbox.recovery_warnings().len(), 1);
        assert!(
            outbox.recovery_warnings()[0].contains(&format!("torn record at byte {first_len}")),
            "{:?}",
            outbox.recovery_warnings()
        );
        drop(outbox);
        assert_eq!(fs::metadata(&path).unwrap().len(), first_len as u64);

        // Corrupt: a flipped byte in the payload of the second record; garbage after it.
        let mut bad = full.clone();
        bad[first_len + 20] ^= 0x40;
        bad.extend_from_slice(b"garbage");
        fs::write(&path, &bad).unwrap();
        let mut outbox = Outbox::open(&settings(dir.path())).unwrap();
        assert_eq!(pending_view(&outbox).len(), 1);
        assert!(outbox.recovery_warnings()[0].contains("checksum mismatch"));
        // Appending after the repair works and survives the next open.
        outbox
            .append_transition(&b, &receivers(&["x"]), None, 3)
            .unwrap();
        drop(outbox);
        let outbox = Outbox::open(&settings(dir.path())).unwrap();
        assert_eq!(pending_view(&outbox).len(), 2);
        assert!(outbox.recovery_warnings().is_empty());

        // A header cut short, and an absurd length.
        let mut short = full[..first_len].to_vec();
        short.extend_from_slice(&[1, 2, 3]);
        fs::write(&path, &short).unwrap();
        let outbox = Outbox::open(&settings(dir.path())).unwrap();
        assert!(outbox.recovery_warnings()[0].contains("torn record header"));
        drop(outbox);
        let mut huge = full[..first_len].to_vec();
        huge.extend_from_slice(&u32::MAX.to_le_bytes());
        huge.extend_from_slice(&[0; 12]);
        fs::write(&path, &huge).unwrap();
        let outbox = Outbox::open(&settings(dir.path())).unwrap();
        assert!(outbox.recovery_warnings()[0].contains("impossible record length"));
        assert_eq!(pending_view(&outbox).len(), 1);
    }

    #[test]
    fn compaction_drops_acknowledged_records_and_keeps_ids() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = settings(dir.path());
        s.segment_bytes = 4096;
        s.dedupe_ids = 50;
        let mut outbox = Outbox::open(&s).unwrap();
        let mut ids = Vec::new();
        for i in 0..200u64 {
            let t = transition("r", &format!("e{}", i % 7), TransitionState::Firing, i);
            outbox
                .append_transition(&t, &receivers(&["x"]), None, i)
                .unwrap();
            if i % 10 != 3 {
                outbox
                    .append_ack(std::slice::from_ref(&t.id), "x", AckOutcome::Delivered)
                    .unwrap();
            }
            ids.push(t.id);
        }
        // Rotated and compacted along the way: one segment, small.
        let files = segments(dir.path());
        assert_eq!(files.len(), 1);
        assert!(segment_number(&files[0]).unwrap() > 1);
        assert!(outbox.active_bytes() < 40_000, "{}", outbox.active_bytes());
        let unacked: Vec<String> = (0..200)
            .filter(|i| i % 10 == 3)
            .map(|i| ids[i].clone())
            .collect();
        let view: Vec<String> = outbox.pending().map(|p| p.transition.id.clone()).collect();
        assert_eq!(view, unacked);
        drop(outbox);
        let outbox = Outbox::open(&s).unwrap();
        let view: Vec<String> = outbox.pending().map(|p| p.transition.id.clone()).collect();
        assert_eq!(view, unacked);
        // The last 50 ids are remembered, and every pending one; old acknowledged ones are not.
        let missing: Vec<usize> = (150..200).filter(|&i| !outbox.contains(&ids[i])).collect();
        assert_eq!(missing, Vec::<usize>::new());
        assert!(unacked.iter().all(|id| outbox.contains(id)));
        assert!(!outbox.contains(&ids[0]));
        // The latest transition of each of the 7 firing alerts survives compaction.
        assert_eq!(outbox.firing().count(), 7);
    }

    #[test]
    fn leftover_segments_from_an_interrupted_compaction_replay_the_same() {
        let dir = tempfile::tempdir().unwrap();
        let s = settings(dir.path());
        let a = transition("r", "a", TransitionState::Firing, 1);
        let b = transition("r", "b", TransitionState::Firing, 2);
        let old_copy;
        {
            let mut outbox = Outbox::open(&s).unwrap();
            outbox
                .append_transition(&a, &receivers(&["x", "y"]), None, 1)
                .unwrap();
            outbox
                .append_transition(&b, &receivers(&["x"]), None, 2)
                .unwrap();
            outbox
                .append_ack(std::slice::from_ref(&a.id), "x", AckOutcome::Delivered)
                .unwrap();
            old_copy = fs::read(segments(dir.path()).pop().unwrap()).unwrap();
            outbox.compact().unwrap();
            outbox
                .append_ack(std::slice::from_ref(&b.id), "x", AckOutcome::Delivered)
                .unwrap();
        }
        // As if the old segment had not been deleted, plus a stray temporary file.
        fs::write(segment_path(dir.path(), 1), &old_copy).unwrap();
        fs::write(dir.path().join("00000000000000000009.seg.tmp"), b"junk").unwrap();
        let outbox = Outbox::open(&s).unwrap();
        assert_eq!(
            pending_view(&outbox),
            vec![(a.id.clone(), receivers(&["y"]))]
        );
        assert_eq!(segments(dir.path()).len(), 1);
        assert!(!dir.path().join("00000000000000000009.seg.tmp").exists());
    }

    #[test]
    fn disabled_receivers_and_silences_survive_compaction() {
        let dir = tempfile::tempdir().unwrap();
        let s = settings(dir.path());
        let now = citybrain_model::time::now_millis();
        let mut outbox = Outbox::open(&s).unwrap();
        let state = DisabledState {
            fingerprint: "f".into(),
            reason: "410".into(),
            at: 9,
        };
        outbox.append_disabled("x", state.clone()).unwrap();
        outbox.append_disabled("y", state.clone()).unwrap();
        outbox.append_enabled("y").unwrap();
        let silence = |id: &str, ends_at| SilenceRecord {
            id: id.into(),
            matchers: vec!["a=\"b\"".into()],
            starts_at: 0,
            ends_at,
            created_by: String::new(),
            comment: String::new(),
        };
        outbox
            .append_silence(&silence("live", now + 60_000))
            .unwrap();
        outbox
            .append_silence(&silence("ended", now + 60_000))
            .unwrap();
        outbox.append_silence_expired("ended", now - 1).unwrap();
        outbox.compact().unwrap();
        drop(outbox);
        let outbox = Outbox::open(&s).unwrap();
        assert_eq!(outbox.disabled().keys().collect::<Vec<_>>(), vec!["x"]);
        assert_eq!(outbox.disabled().get("x"), Some(&state));
        let ids: Vec<&str> = outbox.silences().map(|s| s.id.as_str()).collect();
        assert_eq!(ids, vec!["live"]);
    }
}
