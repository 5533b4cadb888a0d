//! The Kafka source: one `BaseConsumer` per timely worker, each assigned its share of the
//! partitions of every configured topic, decoding messages into events and tracking
//! per-partition watermarks.
//!
//! Reference data (compacted registry topics) is read from its start, to its end, before
//! readings are consumed, so the first readings already see their sensors' labels.
//!
//! The dataflow also learns where readings come from, for ingest-stall alerts: per poll and
//! reading partition, the distinct event times of its readings ([`SourceEvent::Heard`]),
//! and, when an entity is first read or moves, its partition ([`SourceEvent::Placement`]).
//!
//! A worker reads its partitions in event-time step (watermark alignment): each reading
//! partition has a queue of its own, the one furthest behind is read first, and one whose
//! newest event is more than [`TopicSpec::max_partition_skew`] ahead of the partition
//! furthest behind (or of its clock's watermark, when later) is not read until the others
//! catch up. Otherwise, over a backlog, one partition's readings
//! run ahead of the watermark the others hold back and wait in memory for it: one worker
//! reading two partitions of a 300 s backlog held up to 96 s of one partition's readings.
//!
//! Offsets are committed by the engine, never automatically: a reading partition's commit is
//! the offset from which a restart re-reads everything whose outputs are not yet durable plus
//! the history the rules' state is rebuilt from (see [`crate::commit`]). Registry partitions are
//! never committed: they are re-read whole on every start.

use std::sync::Arc;
use std::time::{Duration, Instant};

use citybrain_model::decode::{
    decode_farm_reading, decode_mine_reading, decode_registry, decode_report,
};
use citybrain_model::time::now_millis;
use citybrain_model::{
    DeadLetterReason, DecodeError, Domain, EntityId, EntityInfo, PartitionId, Reading,
    RegistryKind, RegistryUpdate, ReportEvent,
};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::base_consumer::PartitionQueue;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, DefaultConsumerContext};
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::{Offset, TopicPartitionList};
use rustc_hash::FxHashMap;

use crate::commit::CommitTracker;
use crate::dead_letter::{DeadLetter, Origin};
use crate::end_offsets::EndOffsets;
use crate::watermark::{Contribution, PartitionClock, combine};

/// What a topic carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum StreamKind {
    /// `mine.readings`.
    Mine,
    /// `farm.readings`.
    Farm,
    /// `citizen.reports`.
    Citizen,
    /// A compacted registry topic.
    Registry(RegistryKind),
}

impl StreamKind {
    /// The domain of the readings this stream carries (none for reports and registry topics).
    pub fn reading_domain(self) -> Option<Domain> {
        match self {
            StreamKind::Mine => Some(Domain::Mine),
            StreamKind::Farm => Some(Domain::Farm),
            StreamKind::Citizen | StreamKind::Registry(_) => None,
        }
    }

    /// The event-time clock this stream advances (registry topics have none).
    pub fn clock(self) -> Option<Clock> {
        match self {
            StreamKind::Mine | StreamKind::Farm => Some(Clock::Sensors),
            StreamKind::Citizen => Some(Clock::Citizen),
            StreamKind::Registry(_) => None,
        }
    }
}

/// Independent event-time clocks: sensor streams have a small allowed lateness, citizen
/// reports a large one, and one must not hold the other back.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Clock {
    /// Mine and farm readings.
    Sensors = 0,
    /// Citizen reports.
    Citizen = 1,
}

impl Clock {
    /// Both clocks, in index order.
    pub const ALL: [Clock; 2] = [Clock::Sensors, Clock::Citizen];
}

/// One topic to consume.
#[derive(Clone, Debug)]
pub struct TopicSpec {
    /// Topic name.
    pub topic: String,
    /// What it carries.
    pub kind: StreamKind,
    /// How far behind the newest event an event may arrive and still count.
    pub allowed_lateness: Duration,
    /// A caught-up partition silent this long stops holding the watermark back.
    pub idle_timeout: Duration,
    /// Larger messages are dead-lettered as `oversized`.
    pub max_message_bytes: usize,
    /// Event times further than this ahead of the wall clock are dead-lettered.
    pub max_future: Duration,
    /// A partition whose newest event time (less the lateness) is more than this ahead of its
    /// clock's partition furthest behind (or its watermark, when later) is not read further
    /// until the others catch up.
    pub max_partition_skew: Duration,
}

/// What the source needs to connect.
#[derive(Clone, Debug)]
pub struct SourceConfig {
    /// `bootstrap.servers`.
    pub brokers: String,
    /// Consumer group id.
    pub group_id: String,
    /// Extra librdkafka properties (applied last).
    pub properties: Vec<(String, String)>,
    /// Topics to consume.
    pub topics: Vec<TopicSpec>,
    /// How long to wait for the registry topics to be read to their end at start-up.
    pub registry_load_timeout: Duration,
    /// This worker's index.
    pub worker_index: usize,
    /// Number of workers sharing the partitions.
    pub workers: usize,
    /// Event-time spacing of the resume points kept per partition for offset commits.
    pub commit_granularity: Duration,
    /// How often the brokers' end offsets of the reading partitions are fetched (on a thread
    /// of the source's own): a partition counts as caught up, and may go idle, only when it
    /// has read up to an end offset asked for after its last message came and fetched within
    /// [`end_offsets_fresh_for`] of this; the brokers count as away while a fetch fails.
    pub end_offsets_refresh: Duration,
}

/// How long a fetched end offset says anything: 8 refresh periods, at least 2 s (a round
/// delayed by a busy machine then holds the watermark back instead of letting it run ahead).
pub fn end_offsets_fresh_for(refresh: Duration) -> Duration {
    (refresh * 8).max(Duration::from_secs(2))
}

/// How long one end-offset request may wait for the brokers before they count as away.
const END_OFFSET_TIMEOUT: Duration = Duration::from_secs(2);

/// Why the source could not start.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// librdkafka refused the configuration or a call failed.
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    /// A configured topic does not exist on the brokers.
    #[error("topic `{0}` does not exist (create it first; some brokers do not auto-create topics)")]
    UnknownTopic(String),
}

/// A decoded input message.
#[derive(Clone, Debug, PartialEq)]
pub enum SourceEvent {
    /// A mine or farm reading.
    Reading(Reading),
    /// A citizen report event, and the message it came from (it becomes a dead letter when
    /// the report turns out unknown).
    Report(ReportEvent, Origin),
    /// A registry change; `previous` is what it replaces (to retract), if anything.
    Registry {
        /// The update as read.
        update: RegistryUpdate,
        /// The value it replaces.
        previous: Option<EntityInfo>,
    },
    /// An unusable message.
    DeadLetter(DeadLetter),
    /// One poll read readings from this partition (sent after the readings themselves).
    Heard {
        /// The partition.
        partition: PartitionId,
        /// The distinct event times of the readings, epoch ms, ascending (every one: a gap
        /// inside a batch is as much a stall as one between batches).
        times: Vec<u64>,
    },
    /// An entity's readings come from `partition` from the reading at `time` on: its first
    /// reading this worker saw, or it moved from `previous` (sent after that reading).
    Placement {
        /// (domain, sensor or device id).
        entity: (Domain, EntityId),
        /// Where its readings come from.
        partition: PartitionId,
        /// Where they came from before, if this worker saw it elsewhere.
        previous: Option<PartitionId>,
        /// Event time of the reading, epoch ms.
        time: u64,
    },
}

/// Where one assigned partition stands, for metrics.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartitionStatus {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// Newest event time consumed, epoch ms (none yet, or a registry partition).
    pub newest_event: Option<u64>,
}

struct PartitionState {
    spec: usize,
    partition: i32,
    clock: PartitionClock,
    /// Resume points for commits; `None` for registry partitions (never committed).
    commit: Option<CommitTracker>,
}

/// Messages a poll reads from one partition queue before it looks again for the partition
/// furthest behind.
const ALIGNED_CHUNK: usize = 256;

/// The wall clock as a poll reads it: once per chunk of up to [`ALIGNED_CHUNK`] messages, not
/// per message (a monotonic and an epoch reading per message were ~3 % of the workers' time
/// end to end). A chunk is read within a millisecond or so.
#[derive(Clone, Copy)]
struct PollClock {
    /// For the partitions' silence (idle timeouts).
    at: Instant,
    /// For the events' future horizon (`max_future`), epoch milliseconds.
    epoch_ms: u64,
}

impl PollClock {
    fn read() -> Self {
        PollClock {
            at: Instant::now(),
            epoch_ms: now_millis(),
        }
    }
}

/// The event times a message's event may have: not behind `watermark` (late), not more than
/// its topic's `max_future` ahead of `wall_clock_ms`.
#[derive(Clone, Copy)]
struct Admissible {
    watermark: u64,
    wall_clock_ms: u64,
}

/// The queue of one reading partition, split from the consumer's main queue.
struct ReadingQueue {
    /// (spec index, partition).
    key: (usize, i32),
    /// The clock the partition's events advance.
    clock: Clock,
    /// The allowed lateness plus the allowed skew, ms: how far past its clock's reference
    /// ([`KafkaSource::read_limits`]) the partition may be read.
    slack_ms: u64,
    queue: PartitionQueue<DefaultConsumerContext>,
}

/// A worker's Kafka consumer.
pub struct KafkaSource {
    /// Declared before `consumer`, so dropped first: librdkafka wants a partition's queue
    /// destroyed before its consumer is closed.
    queues: Vec<ReadingQueue>,
    /// The main queue serves the registry partitions and the consumer's events.
    consumer: Arc<BaseConsumer>,
    specs: Vec<TopicSpec>,
    by_topic: FxHashMap<String, usize>,
    partitions: FxHashMap<(usize, i32), PartitionState>,
    /// Registry partitions not yet read to their end at start-up.
    registry_pending: FxHashMap<(usize, i32), i64>,
    registry_deadline: Instant,
    readings_paused: bool,
    /// Readings paused by the engine ([`KafkaSource::hold`]).
    held: bool,
    /// Latest registry value per (kind, key), to retract on update or tombstone.
    registry: FxHashMap<(RegistryKind, EntityId), EntityInfo>,
    watermarks: [u64; 2],
    /// When the last poll found nothing buffered (`None`: it stopped with messages left).
    drained_at: Option<Instant>,
    /// Messages skipped because their offset was already consumed.
    redelivered: u64,
    /// The brokers' end offsets of the reading partitions, fetched in the background.
    end_offsets: Option<EndOffsets>,
    /// The reading partitions, in the order [`EndOffsets`] reports them.
    end_offset_keys: Vec<(usize, i32)>,
    /// The partition each entity's readings were last read from, per domain (mine, farm,
    /// citizen), keyed by entity so a reading is looked up by its `&str` without building a
    /// key.
    placements: [FxHashMap<EntityId, (usize, i32)>; 3],
}

impl KafkaSource {
    /// Connects, assigns this worker's partitions (partition `i` of the sorted list of all
    /// (topic, partition) pairs goes to worker `i % workers`) and pauses readings until the
    /// registry is loaded.
    pub fn connect(config: &SourceConfig) -> Result<Self, SourceError> {
        let mut client = ClientConfig::new();
        client
            .set("bootstrap.servers", &config.brokers)
            .set("group.id", &config.group_id)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("enable.partition.eof", "false")
            // Sub-second alerts need the broker to answer fetches promptly.
            .set("fetch.wait.max.ms", "50");
        for (k, v) in &config.properties {
            client.set(k, v);
        }
        let consumer: Arc<BaseConsumer> = Arc::new(client.create()?);
        let timeout = Duration::from_secs(10);
        let mut all: Vec<(usize, i32)> = Vec::new();
        for (index, spec) in config.topics.iter().enumerate() {
            let metadata = consumer.fetch_metadata(Some(&spec.topic), timeout)?;
            let topic = metadata
                .topics()
                .iter()
                .find(|t| t.name() == spec.topic)
                .filter(|t| t.error().is_none() && !t.partitions().is_empty())
                .ok_or_else(|| SourceError::UnknownTopic(spec.topic.clone()))?;
            all.extend(topic.partitions().iter().map(|p| (index, p.id())));
        }
        all.sort();
        let workers = config.workers.max(1);
        let mine: Vec<(usize, i32)> = all
            .into_iter()
            .enumerate()
            .filter(|(i, _)| i % workers == config.worker_index)
            .map(|(_, p)| p)
            .collect();

        let mut wanted = TopicPartitionList::new();
        for (spec, partition) in &mine {
            wanted.add_partition(&config.topics[*spec].topic, *partition);
        }
        let committed = if mine.is_empty() {
            TopicPartitionList::new()
        } else {
            consumer.committed_offsets(wanted, timeout)?
        };
        let now = Instant::now();
        let fresh_for = end_offsets_fresh_for(config.end_offsets_refresh);
        let mut ends: Vec<(String, i32, i64)> = Vec::new();
        let mut end_offset_keys = Vec::new();
        let mut assignment = TopicPartitionList::new();
        let mut partitions = FxHashMap::default();
        let mut registry_pending = FxHashMap::default();
        for (spec_index, partition) in mine {
            let spec = &config.topics[spec_index];
            let (low, high) = consumer.fetch_watermarks(&spec.topic, partition, timeout)?;
            let is_registry = matches!(spec.kind, StreamKind::Registry(_));
            let start = match committed
                .find_partition(&spec.topic, partition)
                .map(|e| e.offset())
            {
                Some(Offset::Offset(o)) if o >= low && !is_registry => o,
                _ => low,
            };
            assignment.add_partition_offset(&spec.topic, partition, Offset::Offset(start))?;
            let mut clock = PartitionClock::new(
                spec.allowed_lateness,
                spec.idle_timeout,
                high,
                fresh_for,
                now,
            );
            if !is_registry {
                ends.push((spec.topic.clone(), partition, high));
                end_offset_keys.push((spec_index, partition));
            }
            clock.observe(start.saturating_sub(1), None, now);
            if is_registry && high > start {
                registry_pending.insert((spec_index, partition), high);
            }
            let granularity = u64::try_from(config.commit_granularity.as_millis()).unwrap_or(1);
            partitions.insert(
                (spec_index, partition),
                PartitionState {
                    spec: spec_index,
                    partition,
                    clock,
                    commit: (!is_registry).then(|| CommitTracker::new(start, granularity)),
                },
            );
        }
        consumer.assign(&assignment)?;
        // Split before the first poll, so no reading waits in the main queue.
        let mut queues = Vec::new();
        for state in partitions.values() {
            let spec = &config.topics[state.spec];
            // Registry partitions have no clock: they stay on the main queue.
            let Some(clock) = spec.kind.clock() else {
                continue;
            };
            let queue = consumer
                .split_partition_queue(&spec.topic, state.partition)
                .ok_or_else(|| SourceError::UnknownTopic(spec.topic.clone()))?;
            let skew_ms = u64::try_from(spec.max_partition_skew.as_millis()).unwrap_or(u64::MAX);
            queues.push(ReadingQueue {
                key: (state.spec, state.partition),
                clock,
                slack_ms: state.clock.lateness_ms().saturating_add(skew_ms),
                queue,
            });
        }
        queues.sort_by_key(|queue| queue.key);
        let end_offsets = if ends.is_empty() {
            None
        } else {
            Some(EndOffsets::start(
                &client,
                ends,
                config.end_offsets_refresh,
                END_OFFSET_TIMEOUT,
            )?)
        };
        let by_topic = config
            .topics
            .iter()
            .enumerate()
            .map(|(i, s)| (s.topic.clone(), i))
            .collect();
        let mut source = KafkaSource {
            queues,
            consumer,
            specs: config.topics.clone(),
            by_topic,
            partitions,
            registry_pending,
            registry_deadline: now + config.registry_load_timeout,
            readings_paused: false,
            held: false,
            registry: FxHashMap::default(),
            watermarks: [0; 2],
            drained_at: None,
            redelivered: 0,
            end_offsets,
            end_offset_keys,
            placements: Default::default(),
        };
        if !source.registry_pending.is_empty() {
            source.set_readings_paused(true)?;
        }
        Ok(source)
    }

    fn readings_list(&self) -> TopicPartitionList {
        let mut list = TopicPartitionList::new();
        for state in self.partitions.values() {
            let spec = &self.specs[state.spec];
            if !matches!(spec.kind, StreamKind::Registry(_)) {
                list.add_partition(&spec.topic, state.partition);
            }
        }
        list
    }

    fn set_readings_paused(&mut self, paused: bool) -> Result<(), SourceError> {
        self.apply_pause(paused, self.held)
    }

    /// Pauses reading partitions while the registry loads or the engine holds them.
    fn apply_pause(&mut self, loading: bool, held: bool) -> Result<(), SourceError> {
        let before = self.readings_paused || self.held;
        let after = loading || held;
        let list = self.readings_list();
        if before != after && list.count() > 0 {
            if after {
                self.consumer.pause(&list)?;
            } else {
                self.consumer.resume(&list)?;
            }
        }
        self.readings_paused = loading;
        self.held = held;
        Ok(())
    }

    /// Stops (`true`) or resumes consuming readings, e.g. while the outputs cannot be written:
    /// the partitions are paused and the watermarks stand still, so what the brokers receive
    /// meanwhile is read, not late, once consumption resumes.
    pub fn hold(&mut self, held: bool) -> Result<(), SourceError> {
        if held == self.held {
            return Ok(());
        }
        self.apply_pause(self.readings_paused, held)
    }

    /// Calls `wake` (from a librdkafka thread) whenever a reading partition's queue, empty
    /// until then, receives messages, so a worker that parks between polls can be unparked as
    /// soon as there is something to read instead of at the end of its park.
    pub fn wake_on_readings(&mut self, wake: impl Fn() + Clone + Send + Sync + 'static) {
        for queue in &mut self.queues {
            queue.queue.set_nonempty_callback(wake.clone());
        }
    }

    /// True once the registry topics were read to their end (or the load timed out).
    pub fn registry_loaded(&self) -> bool {
        !self.readings_paused
    }

    /// The current watermark of a clock: events before it are late.
    pub fn watermark(&self, clock: Clock) -> u64 {
        self.watermarks[clock as usize]
    }

    /// Reads up to `max` messages without waiting and appends the decoded events to `out`:
    /// first the main queue (registry partitions), then the reading partitions in event-time
    /// step (see the module docs). Returns the number of messages read.
    pub fn poll(&mut self, max: usize, out: &mut Vec<SourceEvent>) -> usize {
        let mut count = 0;
        let drained_before = self.drained_at.take();
        // Per reading partition: the event times of the readings of this poll.
        let mut heard: FxHashMap<(usize, i32), Vec<u64>> = FxHashMap::default();
        let consumer = Arc::clone(&self.consumer);
        let mut main_empty = false;
        let mut clock = PollClock::read();
        while count < max {
            if count > 0 && count.is_multiple_of(ALIGNED_CHUNK) {
                clock = PollClock::read();
            }
            match consumer.poll(Duration::ZERO) {
                None => {
                    main_empty = true;
                    break;
                }
                Some(Err(error)) => {
                    tracing::warn!(%error, "kafka consumer error");
                    break;
                }
                Some(Ok(message)) => {
                    count += 1;
                    self.take(&message, clock, out, &mut heard);
                }
            }
        }
        let queues = std::mem::take(&mut self.queues);
        let readings_empty = if self.readings_paused || self.held {
            true
        } else {
            self.poll_aligned(&queues, drained_before, max, &mut count, out, &mut heard)
        };
        self.queues = queues;
        if main_empty && readings_empty {
            self.drained_at = Some(Instant::now());
        }
        let mut heard: Vec<_> = heard.into_iter().collect();
        heard.sort_unstable();
        for ((spec_index, partition), mut times) in heard {
            if let Some(partition) = self.partition_id(spec_index, partition) {
                times.sort_unstable();
                times.dedup();
                out.push(SourceEvent::Heard { partition, times });
            }
        }
        if self.readings_paused
            && (self.registry_pending.is_empty() || Instant::now() >= self.registry_deadline)
        {
            if !self.registry_pending.is_empty() {
                tracing::warn!(
                    partitions = self.registry_pending.len(),
                    "registry load timed out; consuming readings anyway"
                );
            }
            if let Err(error) = self.set_readings_paused(false) {
                tracing::error!(%error, "could not resume reading partitions");
            }
        }
        count
    }

    /// Reads the reading partitions' queues until `count` reaches `max`: always the partition
    /// with the oldest newest event among those not too far ahead ([`Self::read_limits`]). A
    /// partition left unread for being ahead counts as heard from now, so it does not go idle
    /// for the silence this imposes. `drained_before` is when the previous poll found nothing
    /// buffered. True when every queue allowed to be read came back empty.
    fn poll_aligned(
        &mut self,
        queues: &[ReadingQueue],
        drained_before: Option<Instant>,
        max: usize,
        count: &mut usize,
        out: &mut Vec<SourceEvent>,
        heard: &mut FxHashMap<(usize, i32), Vec<u64>>,
    ) -> bool {
        let now = Instant::now();
        let idle: Vec<bool> = queues
            .iter()
            .map(|queue| {
                self.partitions.get(&queue.key).is_some_and(|state| {
                    matches!(
                        state.clock.contribution(now, drained_before),
                        Contribution::Idle(_)
                    )
                })
            })
            .collect();
        let mut empty = vec![false; queues.len()];
        let mut limits = self.read_limits(queues, &idle);
        while *count < max {
            let next = queues
                .iter()
                .zip(&limits)
                .enumerate()
                .filter(|(i, _)| !empty[*i])
                .filter_map(|(i, (queue, limit))| {
                    let newest = self.newest(queue).unwrap_or(0);
                    (newest <= *limit).then_some((newest, i))
                })
                .min();
            let Some((_, i)) = next else {
                break;
            };
            let (queue, limit) = (&queues[i], limits[i]);
            let clock = PollClock::read();
            for _ in 0..ALIGNED_CHUNK.min(max - *count) {
                match queue.queue.poll(Duration::ZERO) {
                    None => {
                        empty[i] = true;
                        break;
                    }
                    Some(Err(error)) => {
                        tracing::warn!(%error, "kafka consumer error");
                        empty[i] = true;
                        break;
                    }
                    Some(Ok(message)) => {
                        *count += 1;
                        self.take(&message, clock, out, heard);
                    }
                }
                if self.newest(queue).is_some_and(|newest| newest > limit) {
                    break;
                }
            }
            limits = self.read_limits(queues, &idle);
        }
        // Held back on purpose: not silent.
        let now = Instant::now();
        let mut all_empty = true;
        for ((queue, limit), empty) in queues.iter().zip(&limits).zip(&empty) {
            let Some(state) = self.partitions.get_mut(&queue.key) else {
                continue;
            };
            if state.clock.newest_event().unwrap_or(0) > *limit {
                state.clock.heard_from(now);
            } else if !empty {
                all_empty = false;
            }
        }
        all_empty
    }

    /// The newest event time read from `queue`'s partition.
    fn newest(&self, queue: &ReadingQueue) -> Option<u64> {
        self.partitions.get(&queue.key)?.clock.newest_event()
    }

    /// Per queue, the newest event time up to which its partition may be read on now: the
    /// least newest event (less the lateness) of its clock's partitions that are not `idle`,
    /// or the clock's watermark when that is later, plus the lateness and the allowed skew. A
    /// partition without events yet counts as 0: the others wait for its first events (or for
    /// it to go idle). The least moves as the partition furthest behind is read, so one poll
    /// reads the partitions in turn, each up to the skew past the others.
    fn read_limits(&self, queues: &[ReadingQueue], idle: &[bool]) -> Vec<u64> {
        let mut least = [u64::MAX; 2];
        for (queue, idle) in queues.iter().zip(idle) {
            let Some(state) = self.partitions.get(&queue.key).filter(|_| !idle) else {
                continue;
            };
            let newest = state.clock.newest_event().unwrap_or(0);
            let slot = &mut least[queue.clock as usize];
            *slot = (*slot).min(newest.saturating_sub(state.clock.lateness_ms()));
        }
        queues
            .iter()
            .map(|queue| {
                let clock = queue.clock as usize;
                let reference = least[clock].max(self.watermarks[clock]);
                reference.saturating_add(queue.slack_ms)
            })
            .collect()
    }

    /// Decodes one message and records it in its partition's state.
    fn take(
        &mut self,
        message: &BorrowedMessage<'_>,
        clock: PollClock,
        out: &mut Vec<SourceEvent>,
        heard: &mut FxHashMap<(usize, i32), Vec<u64>>,
    ) {
        let Some(&spec_index) = self.by_topic.get(message.topic()) else {
            return;
        };
        let partition = message.partition();
        let offset = message.offset();
        if let Some(state) = self.partitions.get(&(spec_index, partition))
            && offset < state.clock.next_offset()
        {
            // Already consumed in this assignment: a broker or client that delivers a
            // batch again (seen with tansu under load) must not turn it into late events.
            self.redelivered += 1;
            return;
        }
        let spec = &self.specs[spec_index];
        let admissible = Admissible {
            watermark: self.watermarks[spec.kind.clock().unwrap_or(Clock::Sensors) as usize],
            wall_clock_ms: clock.epoch_ms,
        };
        let event = decode(
            spec,
            &mut self.registry,
            admissible,
            partition,
            offset,
            message.key(),
            message.payload(),
        );
        let event_time = match &event {
            SourceEvent::Reading(r) => Some(r.time),
            SourceEvent::Report(r, _) => Some(r.time),
            _ => None,
        };
        if let Some(state) = self.partitions.get_mut(&(spec_index, partition)) {
            state.clock.observe(offset, event_time, clock.at);
            if let Some(commit) = &mut state.commit {
                commit.observe(offset, event_time);
            }
        }
        if let Some(end) = self.registry_pending.get(&(spec_index, partition))
            && offset.saturating_add(1) >= *end
        {
            self.registry_pending.remove(&(spec_index, partition));
        }
        let placement = match &event {
            SourceEvent::Reading(r) => {
                heard
                    .entry((spec_index, partition))
                    .or_default()
                    .push(r.time);
                self.place(r, spec_index, partition)
            }
            _ => None,
        };
        out.push(event);
        out.extend(placement);
    }

    /// The partition `partition` of the topic of spec `spec_index`, if it carries readings.
    fn partition_id(&self, spec_index: usize, partition: i32) -> Option<PartitionId> {
        let spec = self.specs.get(spec_index)?;
        Some(PartitionId {
            domain: spec.kind.reading_domain()?,
            topic: spec.topic.clone(),
            partition,
        })
    }

    /// Records that `reading` came from `partition`; the placement event when that is new.
    fn place(
        &mut self,
        reading: &Reading,
        spec_index: usize,
        partition: i32,
    ) -> Option<SourceEvent> {
        let now = (spec_index, partition);
        let placements = &mut self.placements[match reading.domain {
            Domain::Mine => 0,
            Domain::Farm => 1,
            Domain::Citizen => 2,
        }];
        if placements.get(reading.entity.as_str()) == Some(&now) {
            return None;
        }
        let previous = placements
            .insert(reading.entity.clone(), now)
            .and_then(|(spec, p)| self.partition_id(spec, p));
        Some(SourceEvent::Placement {
            entity: (reading.domain, reading.entity.clone()),
            partition: self.partition_id(spec_index, partition)?,
            previous,
            time: reading.time,
        })
    }

    /// Messages delivered again after they were consumed (skipped), since the start.
    pub fn redelivered(&self) -> u64 {
        self.redelivered
    }

    /// Since when (epoch ms) the brokers have not answered, and the last error; `None` while
    /// they answer (or this source has no reading partitions).
    pub fn brokers_away(&self) -> Option<(u64, String)> {
        self.end_offsets
            .as_ref()
            .and_then(|e| e.with_known(|known| known.away.clone()))
    }

    /// Where each assigned partition stands.
    pub fn partition_status(&self) -> Vec<PartitionStatus> {
        let mut out: Vec<PartitionStatus> = self
            .partitions
            .values()
            .map(|state| PartitionStatus {
                topic: self.specs[state.spec].topic.clone(),
                partition: state.partition,
                newest_event: state.clock.newest_event(),
            })
            .collect();
        out.sort_by(|a, b| (&a.topic, a.partition).cmp(&(&b.topic, b.partition)));
        out
    }

    /// Commits, per reading partition, the offset from which a restart re-reads every message
    /// with an event time at or after `cutoffs[clock]` (the durable output frontier of the
    /// partition's clock minus the history its rules need). Asynchronous: a lost commit only
    /// means a longer replay. Returns how many partitions moved on.
    pub fn commit(&mut self, cutoffs: [u64; 2]) -> Result<usize, SourceError> {
        let mut list = TopicPartitionList::new();
        for state in self.partitions.values_mut() {
            let spec = &self.specs[state.spec];
            let (Some(clock), Some(commit)) = (spec.kind.clock(), &mut state.commit) else {
                continue;
            };
            if let Some(offset) = commit.advance(cutoffs[clock as usize]) {
                list.add_partition_offset(&spec.topic, state.partition, Offset::Offset(offset))?;
            }
        }
        let moved = list.count();
        if moved > 0 {
            self.consumer.commit(&list, CommitMode::Async)?;
        }
        Ok(moved)
    }

    /// Recomputes the watermarks from the partitions' clocks. `others` are the newest
    /// watermarks other workers published (see [`combine`]). Returns the new watermarks.
    pub fn advance_watermarks(&mut self, others: [u64; 2]) -> [u64; 2] {
        if self.readings_paused || self.held {
            return self.watermarks;
        }
        let now = Instant::now();
        if let Some(end_offsets) = &self.end_offsets {
            let partitions = &mut self.partitions;
            let keys = &self.end_offset_keys;
            end_offsets.with_known(|known| {
                for (key, &(end, fetched)) in keys.iter().zip(&known.ends) {
                    if let Some(state) = partitions.get_mut(key) {
                        state.clock.set_end(end, fetched);
                    }
                }
            });
        }
        for clock in Clock::ALL {
            let contributions: Vec<Contribution> = self
                .partitions
                .values()
                .filter(|p| self.specs[p.spec].kind.clock() == Some(clock))
                .map(|p| p.clock.contribution(now, self.drained_at))
                .collect();
            let i = clock as usize;
            self.watermarks[i] = combine(self.watermarks[i], contributions, others[i]);
        }
        self.watermarks
    }
}

/// Decodes one message of `spec`'s topic; registry messages update `registry`; events outside
/// the `admissible` times are dead letters.
fn decode(
    spec: &TopicSpec,
    registry: &mut FxHashMap<(RegistryKind, EntityId), EntityInfo>,
    admissible: Admissible,
    partition: i32,
    offset: i64,
    key: Option<&[u8]>,
    payload: Option<&[u8]>,
) -> SourceEvent {
    let bytes = payload.unwrap_or_default();
    let dead = |error: DecodeError| {
        SourceEvent::DeadLetter(DeadLetter::new(
            error.reason,
            error.detail,
            &spec.topic,
            partition,
            offset,
            key,
            bytes,
        ))
    };
    if bytes.len() > spec.max_message_bytes {
        return dead(DecodeError::new(
            DeadLetterReason::Oversized,
            format!(
                "{} bytes exceed the limit of {}",
                bytes.len(),
                spec.max_message_bytes
            ),
        ));
    }
    let decoded = match spec.kind {
        StreamKind::Mine => decode_mine_reading(bytes).map(SourceEvent::Reading),
        StreamKind::Farm => decode_farm_reading(bytes).map(SourceEvent::Reading),
        StreamKind::Citizen => decode_report(bytes).map(|report| {
            let origin = Origin {
                topic: spec.topic.clone(),
                partition,
                offset,
                key: key.map(<[u8]>::to_vec),
                payload: bytes.to_vec(),
            };
            SourceEvent::Report(report, origin)
        }),
        StreamKind::Registry(kind) => decode_registry(kind, key, payload).map(|update| {
            let slot = (kind, update.key.clone());
            let previous = match &update.info {
                Some(info) => registry.insert(slot, info.clone()),
                None => registry.remove(&slot),
            };
            SourceEvent::Registry { update, previous }
        }),
    };
    let event = match decoded {
        Ok(event) => event,
        Err(error) => return dead(error),
    };
    let time = match &event {
        SourceEvent::Reading(r) => r.time,
        SourceEvent::Report(r, _) => r.time,
        _ => return event,
    };
    let horizon = admissible
        .wall_clock_ms
        .saturating_add(u64::try_from(spec.max_future.as_millis()).unwrap_or(u64::MAX));
    if time > horizon {
        return dead(DecodeError::new(
            DeadLetterReason::TimeOutOfRange,
            format!(
                "event time {time} is more than {:?} ahead of the wall clock",
                spec.max_future
            ),
        ));
    }
    let watermark = admissible.watermark;
    if time < watermark {
        return dead(DecodeError::new(
            DeadLetterReason::Late,
            format!(
                "event time {time} is {} ms behind the watermark {watermark}",
                watermark - time
            ),
        ));
    }
    event
}

#[cfg(test)]
mod tests {
    use rdkafka::mocking::MockCluster;
    use rdkafka::producer::{BaseProducer, BaseRecord, DefaultProducerContext, Producer};

    use super::*;

    const TOPIC: &str = "mine.readings";
    const READINGS_PER_PARTITION: u64 = 400;
    const SKEW: Duration = Duration::from_secs(2);

    /// A broker whose `TOPIC` has `partitions` partitions; partitions 0 and 1 hold
    /// `READINGS_PER_PARTITION` readings each, `step_ms` apart in event time, all of
    /// partition 0's before partition 1's.
    fn broker(partitions: i32, step_ms: u64) -> MockCluster<'static, DefaultProducerContext> {
        let cluster = MockCluster::new(1).unwrap();
        cluster.create_topic(TOPIC, partitions, 1).unwrap();
        let producer: BaseProducer = ClientConfig::new()
            .set("bootstrap.servers", cluster.bootstrap_servers())
            .create()
            .unwrap();
        let start = now_millis() - READINGS_PER_PARTITION * step_ms - 60_000;
        for partition in 0..2 {
            for i in 0..READINGS_PER_PARTITION {
                let payload = format!(
                    r#"{{"sensor":"s{partition}","ts":{},"metric":"ch4","value":0.5}}"#,
                    start + i * step_ms
                );
                let record = BaseRecord::<(), _>::to(TOPIC)
                    .partition(partition)
                    .payload(&payload);
                producer.send(record).unwrap();
            }
        }
        producer.flush(Duration::from_secs(10)).unwrap();
        cluster
    }

    /// A source of one worker on `TOPIC`, with the partition skew `skew`.
    fn source(cluster: &MockCluster<'_, DefaultProducerContext>, skew: Duration) -> KafkaSource {
        KafkaSource::connect(&SourceConfig {
            brokers: cluster.bootstrap_servers(),
            group_id: "alignment".to_string(),
            properties: Vec::new(),
            topics: vec![TopicSpec {
                topic: TOPIC.to_string(),
                kind: StreamKind::Mine,
                allowed_lateness: Duration::ZERO,
                idle_timeout: Duration::from_millis(300),
                max_message_bytes: 64 * 1024,
                max_future: Duration::from_secs(3600),
                max_partition_skew: skew,
            }],
            registry_load_timeout: Duration::from_secs(1),
            worker_index: 0,
            workers: 1,
            commit_granularity: Duration::from_secs(1),
            end_offsets_refresh: Duration::from_millis(50),
        })
        .unwrap()
    }

    /// What reading everything took: how far apart partitions 0 and 1's newest events were
    /// after any poll at most, how many polls read something, how many readings were late.
    struct Read {
        widest: u64,
        busy_polls: usize,
        late: usize,
    }

    /// Polls as the engine does (the watermarks advanced after each poll) until every reading
    /// is read.
    fn read_all(source: &mut KafkaSource) -> Read {
        let mut events = Vec::new();
        let mut read = Read {
            widest: 0,
            busy_polls: 0,
            late: 0,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut total = 0;
        while total < 2 * READINGS_PER_PARTITION as usize {
            assert!(Instant::now() < deadline, "read {total} in 30 s");
            events.clear();
            source.poll(1000, &mut events);
            source.advance_watermarks([0, 0]);
            let taken = events
                .iter()
                .filter(|e| matches!(e, SourceEvent::Reading(_) | SourceEvent::DeadLetter(_)))
                .count();
            read.late += events
                .iter()
                .filter(|e| matches!(e, SourceEvent::DeadLetter(_)))
                .count();
            total += taken;
            read.busy_polls += usize::from(taken > 0);
            let status = source.partition_status();
            if let [Some(a), Some(b), ..] =
                status.iter().map(|p| p.newest_event).collect::<Vec<_>>()[..]
            {
                read.widest = read.widest.max(a.abs_diff(b));
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        read
    }

    /// Partition 0's whole backlog is in the broker before partition 1's: read as it comes,
    /// partition 0 runs ahead, and its readings wait in memory for the watermark partition 1
    /// holds back. Aligned, the partitions stay within the skew (and one message) of each
    /// other, and nothing turns late.
    #[test]
    fn a_partition_ahead_of_the_others_waits_for_them() {
        let step_ms = 100;
        let cluster = broker(2, step_ms);
        let read = read_all(&mut source(&cluster, SKEW));
        let bound = u64::try_from(SKEW.as_millis()).unwrap() + step_ms;
        assert!(read.widest <= bound, "{} ms apart", read.widest);
        assert_eq!(read.late, 0);
    }

    /// A worker parks between polls when Kafka had nothing: a reading that reaches an empty
    /// partition queue wakes it, instead of waiting in the queue until the park ends.
    #[test]
    fn a_reading_reaching_an_empty_queue_wakes_the_worker() {
        let cluster = broker(2, 100);
        let mut source = source(&cluster, SKEW);
        let (woken, wakes) = std::sync::mpsc::channel();
        source.wake_on_readings(move || {
            let _ = woken.send(());
        });
        read_all(&mut source);
        while wakes.try_recv().is_ok() {}
        let producer: BaseProducer = ClientConfig::new()
            .set("bootstrap.servers", cluster.bootstrap_servers())
            .create()
            .unwrap();
        let payload = format!(
            r#"{{"sensor":"s0","ts":{},"metric":"ch4","value":0.5}}"#,
            now_millis()
        );
        producer
            .send(
                BaseRecord::<(), _>::to(TOPIC)
                    .partition(0)
                    .payload(&payload),
            )
            .unwrap();
        producer.flush(Duration::from_secs(10)).unwrap();
        assert!(wakes.recv_timeout(Duration::from_secs(10)).is_ok());
        let mut events = Vec::new();
        source.poll(10, &mut events);
        let readings = events
            .iter()
            .filter(|e| matches!(e, SourceEvent::Reading(_)))
            .count();
        assert_eq!(readings, 1);
    }

    /// Readings 10 s apart, twice the skew: one poll still reads the partitions in turn, each
    /// a skew past the other, instead of one reading per partition and poll. An empty
    /// partition holds the others back only until it goes idle.
    #[test]
    fn sparse_readings_are_read_in_turn_within_one_poll() {
        let step_ms = 10_000;
        let cluster = broker(3, step_ms);
        let read = read_all(&mut source(&cluster, SKEW));
        assert!(read.widest <= 2 * step_ms, "{} ms apart", read.widest);
        assert!(
            read.busy_polls < 40,
            "{} polls read something",
            read.busy_polls
        );
        assert_eq!(read.late, 0);
    }
}
