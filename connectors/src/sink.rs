//! Outputs: alert transitions and dead letters to Kafka topics and/or JSONL files.
//!
//! Alerts are keyed by `rule/entity` on Kafka so every transition of one alert lands in one
//! partition, in order; the transition id travels as the `citybrain-id` header.
//!
//! Durability is what offset commits wait for: files synced to disk and every produced message
//! acknowledged by the brokers (librdkafka retries failed sends itself; a message it finally
//! gives up on fails the check, so nothing is committed past it). It never holds up writing:
//! [`Outputs::request_durable`] marks what is written so far (the files are synced on a thread
//! of their own, each produced message carries a sequence number its acknowledgement settles)
//! and [`Outputs::is_durable`] says, without waiting, whether all of it is durable yet. Waiting
//! for the producer's whole queue instead (`flush`) would, while alerts keep coming, wait for
//! the messages produced after the mark too, and send them without linger meanwhile.
//!
//! A file that cannot be written (disk full, a file-size limit, an I/O error) fails the calls
//! that write it with [`SinkError::File`] but loses nothing: its lines stay buffered, a partly
//! written line is cut off again, and the next successful flush writes them whole.

use std::collections::BTreeSet;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::PathBuf;
use std::sync::mpsc::{Receiver, Sender, TryRecvError};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use citybrain_model::AlertTransition;
use rdkafka::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};

use crate::dead_letter::DeadLetter;

/// Where outputs go; each destination is optional.
#[derive(Clone, Debug, Default)]
pub struct OutputConfig {
    /// `bootstrap.servers`, needed when a topic is set.
    pub brokers: Option<String>,
    /// Extra librdkafka producer properties.
    pub properties: Vec<(String, String)>,
    /// Topic for alert transitions.
    pub alerts_topic: Option<String>,
    /// JSONL file for alert transitions (appended).
    pub alerts_file: Option<PathBuf>,
    /// Topic for dead letters.
    pub dead_letter_topic: Option<String>,
    /// JSONL file for dead letters (appended).
    pub dead_letter_file: Option<PathBuf>,
}

/// An output failed.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// A file could not be opened or written.
    #[error("{path}: {source}")]
    File {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The producer failed.
    #[error("kafka: {0}")]
    Kafka(#[from] KafkaError),
    /// A topic is configured but no brokers.
    #[error("an output topic is configured but no Kafka brokers")]
    NoBrokers,
    /// The thread that syncs the files could not start or ended.
    #[error("the thread that syncs the output files: {0}")]
    SyncThread(std::io::Error),
    /// The brokers never acknowledged some produced messages.
    #[error("kafka: {0} produced messages were not delivered")]
    Undelivered(u64),
}

/// The producer's deliveries, by the sequence number each message is sent with: which are
/// settled (acknowledged by the brokers, or given up on by librdkafka after its own retries).
#[derive(Clone, Default)]
struct Deliveries(Arc<Mutex<Settled>>);

/// Settled deliveries. Acknowledgements come in order within a partition but not across
/// partitions, so those that come before an earlier message's wait in `ahead`.
#[derive(Debug, Default)]
struct Settled {
    /// Every message numbered below this is settled.
    through: usize,
    /// Settled messages numbered above `through`.
    ahead: BTreeSet<usize>,
    /// Messages given up on, in all.
    failed: u64,
}

impl Settled {
    fn settle(&mut self, sequence: usize) {
        if sequence != self.through {
            self.ahead.insert(sequence);
            return;
        }
        self.through += 1;
        while self.ahead.remove(&self.through) {
            self.through += 1;
        }
    }
}

impl Deliveries {
    fn settle(&self, sequence: usize, failed: bool) {
        let mut settled = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        settled.settle(sequence);
        settled.failed += u64::from(failed);
    }

    /// (every message numbered below this is settled, messages given up on in all).
    fn settled(&self) -> (usize, u64) {
        let settled = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        (settled.through, settled.failed)
    }
}

impl ClientContext for Deliveries {}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, sequence: usize) {
        if let Err((error, message)) = result {
            use rdkafka::message::Message;
            tracing::error!(%error, topic = message.topic(), "output message not delivered");
        }
        self.settle(sequence, result.is_err());
    }
}

/// Syncs the output files to disk on a thread of its own, so writing goes on meanwhile. Each
/// request is numbered; one sync serves every request made before it started.
struct FileSyncer {
    requests: Sender<u64>,
    done: Receiver<(u64, Result<(), SinkError>)>,
    /// Requests made so far (the last one's number).
    requested: u64,
    /// Every request numbered up to this is synced.
    synced: u64,
}

impl FileSyncer {
    /// Starts the thread with second handles of `files`.
    fn start(files: Vec<(PathBuf, File)>) -> Result<Self, SinkError> {
        let (requests, requested) = std::sync::mpsc::channel::<u64>();
        let (finished, done) = std::sync::mpsc::channel();
        let spawned = std::thread::Builder::new()
            .name("citybrain-sync".to_string())
            .spawn(move || {
                // Ends when the outputs are dropped (the requests' sender with them).
                while let Ok(mut request) = requested.recv() {
                    while let Ok(later) = requested.try_recv() {
                        request = later;
                    }
                    let result = files.iter().try_for_each(|(path, file)| {
                        file.sync_data().map_err(|source| SinkError::File {
                            path: path.clone(),
                            source,
                        })
                    });
                    if finished.send((request, result)).is_err() {
                        break;
                    }
                }
            });
        spawned.map_err(SinkError::SyncThread)?;
        Ok(FileSyncer {
            requests,
            done,
            requested: 0,
            synced: 0,
        })
    }

    /// Asks for what is written now to be synced; returns the request's number.
    fn request(&mut self) -> u64 {
        self.requested += 1;
        // The thread only ends once this sender is dropped.
        let _ = self.requests.send(self.requested);
        self.requested
    }

    /// Every request numbered up to the result is synced; fails when a sync failed.
    fn synced(&mut self) -> Result<u64, SinkError> {
        loop {
            match self.done.try_recv() {
                Ok((request, result)) => {
                    result?;
                    self.synced = self.synced.max(request);
                }
                Err(TryRecvError::Empty) => return Ok(self.synced),
                Err(TryRecvError::Disconnected) => {
                    return Err(SinkError::SyncThread(std::io::Error::other("it ended")));
                }
            }
        }
    }
}

/// The producer of the output topics.
struct KafkaOutput {
    producer: ThreadedProducer<Deliveries>,
    deliveries: Deliveries,
    /// Messages produced so far: the next one's sequence number.
    produced: usize,
    /// Delivery failures already reported by [`Outputs::is_durable`].
    reported_failures: u64,
}

impl KafkaOutput {
    fn send(&mut self, topic: &str, key: &str, value: &str, id: &str) -> Result<(), SinkError> {
        let headers = OwnedHeaders::new().insert(Header {
            key: "citybrain-id",
            value: Some(id),
        });
        let sequence = self.produced;
        self.produced += 1;
        let mut record = BaseRecord::with_opaque_to(topic, sequence)
            .key(key)
            .payload(value)
            .headers(headers);
        loop {
            match self.producer.send(record) {
                Ok(()) => return Ok(()),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), returned)) => {
                    record = returned;
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err((error, _)) => {
                    // Never sent: settled, so the messages after it can still be durable.
                    self.deliveries.settle(sequence, false);
                    return Err(error.into());
                }
            }
        }
    }
}

/// What was written when [`Outputs::request_durable`] was called; durable once
/// [`Outputs::is_durable`] says so.
#[derive(Clone, Copy, Debug)]
pub struct DurableRequest {
    /// The file sync request that covers it (0: no files).
    sync: u64,
    /// Messages produced before it.
    produced: usize,
}

/// An appended JSONL file. Lines are buffered in memory and written by [`JsonlFile::flush`];
/// a write that fails (disk full, file-size limit, I/O error) is undone (the file is cut back
/// to its last whole line) and the lines stay buffered, so a later flush writes them whole.
struct JsonlFile {
    path: PathBuf,
    file: File,
    /// Lines not yet written to the file.
    pending: Vec<u8>,
    /// The file's length after the last successful write.
    written: u64,
}

/// Buffered lines beyond this are written at once rather than at the next flush.
const FLUSH_AT_BYTES: usize = 1 << 20;

impl JsonlFile {
    fn open(path: &PathBuf) -> Result<Self, SinkError> {
        let error = |source| SinkError::File {
            path: path.clone(),
            source,
        };
        let file = OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(path)
            .map_err(error)?;
        let written = file.metadata().map_err(error)?.len();
        let mut jsonl = JsonlFile {
            path: path.clone(),
            file,
            pending: Vec::new(),
            written,
        };
        // A crash can cut the last line short: end it, so the next line stays whole.
        if written > 0 {
            let mut last = [0u8];
            std::os::unix::fs::FileExt::read_exact_at(&jsonl.file, &mut last, written - 1)
                .map_err(error)?;
            if last[0] != b'\n' {
                jsonl.pending.push(b'\n');
            }
        }
        Ok(jsonl)
    }

    fn error(&self, source: std::io::Error) -> SinkError {
        SinkError::File {
            path: self.path.clone(),
            source,
        }
    }

    /// Buffers one line; writes the buffer when it is large.
    fn write(&mut self, line: &str) -> Result<(), SinkError> {
        self.pending.extend_from_slice(line.as_bytes());
        self.pending.push(b'\n');
        if self.pending.len() >= FLUSH_AT_BYTES {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), SinkError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        match self.file.write_all(&self.pending) {
            Ok(()) => {
                self.written += self.pending.len() as u64;
                self.pending.clear();
                Ok(())
            }
            Err(source) => {
                // Part of the buffer may have been written: cut it off, so the file holds
                // whole lines only and the retry writes them once.
                if let Err(error) = self.file.set_len(self.written) {
                    tracing::warn!(path = %self.path.display(), %error, "cannot cut back a partly written line");
                }
                Err(self.error(source))
            }
        }
    }

    /// A second handle of the file, for the sync thread.
    fn handle(&self) -> Result<(PathBuf, File), SinkError> {
        let handle = self.file.try_clone().map_err(|source| self.error(source))?;
        Ok((self.path.clone(), handle))
    }

    fn pending_bytes(&self) -> usize {
        self.pending.len()
    }
}

/// The open outputs.
pub struct Outputs {
    /// `None` without topics.
    kafka: Option<KafkaOutput>,
    /// `None` without files.
    syncer: Option<FileSyncer>,
    alerts_topic: Option<String>,
    dead_letter_topic: Option<String>,
    alerts_file: Option<JsonlFile>,
    dead_letter_file: Option<JsonlFile>,
}

impl Outputs {
    /// Opens files (appending) and the producer.
    pub fn open(config: &OutputConfig) -> Result<Self, SinkError> {
        let kafka = if config.alerts_topic.is_some() || config.dead_letter_topic.is_some() {
            let brokers = config.brokers.as_ref().ok_or(SinkError::NoBrokers)?;
            let mut client = ClientConfig::new();
            client
                .set("bootstrap.servers", brokers)
                .set("linger.ms", "5")
                // Retries must not reorder an alert's transitions on its partition: one request
                // in flight per broker. (Idempotence would allow more, but tansu 0.6.0 kept only
                // the first of ten idempotent dead letters.)
                .set("enable.idempotence", "false")
                .set("max.in.flight.requests.per.connection", "1");
            for (k, v) in &config.properties {
                client.set(k, v);
            }
            let deliveries = Deliveries::default();
            let producer = client
                .create_with_context::<_, ThreadedProducer<Deliveries>>(deliveries.clone())?;
            Some(KafkaOutput {
                producer,
                deliveries,
                produced: 0,
                reported_failures: 0,
            })
        } else {
            None
        };
        let alerts_file = config
            .alerts_file
            .as_ref()
            .map(JsonlFile::open)
            .transpose()?;
        let dead_letter_file = config
            .dead_letter_file
            .as_ref()
            .map(JsonlFile::open)
            .transpose()?;
        let handles = [&alerts_file, &dead_letter_file]
            .into_iter()
            .flatten()
            .map(JsonlFile::handle)
            .collect::<Result<Vec<_>, _>>()?;
        let syncer = if handles.is_empty() {
            None
        } else {
            Some(FileSyncer::start(handles)?)
        };
        Ok(Outputs {
            kafka,
            syncer,
            alerts_topic: config.alerts_topic.clone(),
            dead_letter_topic: config.dead_letter_topic.clone(),
            alerts_file,
            dead_letter_file,
        })
    }

    /// Writes one alert transition to every alert output.
    pub fn write_alert(&mut self, transition: &AlertTransition) -> Result<(), SinkError> {
        let line = serde_json::to_string(transition).unwrap_or_default();
        // A file that cannot be written keeps the line buffered: send it on regardless.
        let written = match &mut self.alerts_file {
            Some(file) => file.write(&line),
            None => Ok(()),
        };
        if let (Some(kafka), Some(topic)) = (&mut self.kafka, &self.alerts_topic) {
            let key = format!("{}/{}", transition.rule, transition.entity);
            kafka.send(topic, &key, &line, &transition.id)?;
        }
        written
    }

    /// Writes one dead letter to every dead-letter output.
    pub fn write_dead_letter(&mut self, letter: &DeadLetter) -> Result<(), SinkError> {
        let line = serde_json::to_string(letter).unwrap_or_default();
        // A file that cannot be written keeps the line buffered: send it on regardless.
        let written = match &mut self.dead_letter_file {
            Some(file) => file.write(&line),
            None => Ok(()),
        };
        if let (Some(kafka), Some(topic)) = (&mut self.kafka, &self.dead_letter_topic) {
            let id = format!("{}/{}/{}", letter.topic, letter.partition, letter.offset);
            kafka.send(topic, &id, &line, &id)?;
        }
        written
    }

    /// Flushes files and waits (up to `timeout`) for the producer's queue to drain.
    pub fn flush(&mut self, timeout: Duration) -> Result<(), SinkError> {
        self.flush_files()?;
        if let Some(kafka) = &self.kafka {
            kafka.producer.flush(timeout)?;
        }
        Ok(())
    }

    /// Bytes of lines buffered for the files and not yet written (they stay buffered while a
    /// file cannot be written).
    pub fn pending_file_bytes(&self) -> usize {
        [&self.alerts_file, &self.dead_letter_file]
            .into_iter()
            .flatten()
            .map(JsonlFile::pending_bytes)
            .sum()
    }

    /// Flushes the files' buffers (the producer sends in the background).
    pub fn flush_files(&mut self) -> Result<(), SinkError> {
        if let Some(file) = &mut self.alerts_file {
            file.flush()?;
        }
        if let Some(file) = &mut self.dead_letter_file {
            file.flush()?;
        }
        Ok(())
    }

    /// Marks everything written so far, to be made durable: writes the files' buffers and asks
    /// for them to be synced (on the sync thread). Never waits for the disk or the brokers.
    pub fn request_durable(&mut self) -> Result<DurableRequest, SinkError> {
        self.flush_files()?;
        let sync = self.syncer.as_mut().map_or(0, FileSyncer::request);
        Ok(DurableRequest {
            sync,
            produced: self.kafka.as_ref().map_or(0, |kafka| kafka.produced),
        })
    }

    /// Whether everything `request` marked is durable: the files synced to disk, every message
    /// produced before it acknowledged by the brokers. Never waits: `false` while that is not
    /// so yet (during a broker outage librdkafka keeps retrying; ask again later). Fails when a
    /// sync failed, or when a message was given up on since the last call, so the caller does
    /// not treat what it marked as durable.
    pub fn is_durable(&mut self, request: &DurableRequest) -> Result<bool, SinkError> {
        let synced = match &mut self.syncer {
            Some(syncer) => syncer.synced()?,
            None => 0,
        };
        let settled = match &mut self.kafka {
            Some(kafka) => {
                let (settled, failed) = kafka.deliveries.settled();
                if failed > kafka.reported_failures {
                    let new = failed - kafka.reported_failures;
                    kafka.reported_failures = failed;
                    return Err(SinkError::Undelivered(new));
                }
                settled
            }
            None => 0,
        };
        Ok(synced >= request.sync && settled >= request.produced)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_that_cannot_be_written_keeps_its_lines_for_the_next_flush() {
        // /dev/full fails every write with ENOSPC, like a full disk.
        let mut full = JsonlFile::open(&PathBuf::from("/dev/full")).unwrap();
        full.write("{\"a\":1}").unwrap();
        let error = full.flush().unwrap_err();
        assert!(error.to_string().contains("/dev/full"), "{error}");
        assert_eq!(full.pending_bytes(), 8);
        // The same lines, moved to a writable file, are written whole, once.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("alerts.jsonl");
        let mut file = JsonlFile::open(&path).unwrap();
        file.pending = std::mem::take(&mut full.pending);
        file.write("{\"b\":2}").unwrap();
        file.flush().unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "{\"a\":1}\n{\"b\":2}\n"
        );
        assert_eq!(file.pending_bytes(), 0);
    }

    #[test]
    fn a_line_cut_short_by_a_crash_does_not_swallow_the_next_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("alerts.jsonl");
        std::fs::write(&path, "{\"whole\":1}\n{\"cut sh").unwrap();
        let mut outputs = Outputs::open(&OutputConfig {
            alerts_file: Some(path.clone()),
            ..OutputConfig::default()
        })
        .unwrap();
        outputs
            .alerts_file
            .as_mut()
            .unwrap()
            .write("{\"next\":2}")
            .unwrap();
        let request = outputs.request_durable().unwrap();
        wait_durable(&mut outputs, &request);
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "{\"whole\":1}\n{\"cut sh\n{\"next\":2}\n"
        );
    }

    /// Polls [`Outputs::is_durable`] until it says yes (fails after 10 s).
    fn wait_durable(outputs: &mut Outputs, request: &DurableRequest) {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !outputs.is_durable(request).unwrap() {
            assert!(std::time::Instant::now() < deadline, "not durable in 10 s");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    #[test]
    fn deliveries_settle_in_order_whatever_order_their_acknowledgements_come_in() {
        let mut settled = Settled::default();
        for (sequence, through) in [(1, 0), (3, 0), (0, 2), (2, 4), (5, 4), (4, 6)] {
            settled.settle(sequence);
            assert_eq!(settled.through, through, "after {sequence}");
        }
        assert!(settled.ahead.is_empty());
    }

    /// A request covers what was written before it: the lines written after it do not hold it
    /// up, and are written all the same.
    #[test]
    fn a_durable_request_covers_what_was_written_before_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("alerts.jsonl");
        let mut outputs = Outputs::open(&OutputConfig {
            alerts_file: Some(path.clone()),
            ..OutputConfig::default()
        })
        .unwrap();
        let file = outputs.alerts_file.as_mut().unwrap();
        file.write("{\"before\":1}").unwrap();
        let first = outputs.request_durable().unwrap();
        // Requesting wrote the buffer: the line is in the file at once.
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "{\"before\":1}\n");
        outputs
            .alerts_file
            .as_mut()
            .unwrap()
            .write("{\"after\":2}")
            .unwrap();
        wait_durable(&mut outputs, &first);
        let second = outputs.request_durable().unwrap();
        wait_durable(&mut outputs, &second);
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "{\"before\":1}\n{\"after\":2}\n"
        );
    }

    /// While the broker is down, a request stays not durable (nothing waits for it meanwhile);
    /// once the broker is back and has acknowledged every message produced before it, it is.
    #[test]
    fn a_durable_request_waits_for_the_brokers_acknowledgement() {
        let cluster = rdkafka::mocking::MockCluster::new(1).unwrap();
        cluster.create_topic("dead", 3, 1).unwrap();
        let mut outputs = Outputs::open(&OutputConfig {
            brokers: Some(cluster.bootstrap_servers()),
            dead_letter_topic: Some("dead".to_string()),
            ..OutputConfig::default()
        })
        .unwrap();
        let letter = |offset| {
            DeadLetter::new(
                citybrain_model::DeadLetterReason::MalformedJson,
                "test",
                "in",
                0,
                offset,
                None,
                b"{",
            )
        };
        outputs.write_dead_letter(&letter(0)).unwrap();
        let delivered = outputs.request_durable().unwrap();
        wait_durable(&mut outputs, &delivered);
        cluster.broker_down(1).unwrap();
        for offset in 1..10 {
            outputs.write_dead_letter(&letter(offset)).unwrap();
        }
        let pending = outputs.request_durable().unwrap();
        std::thread::sleep(Duration::from_millis(500));
        assert!(!outputs.is_durable(&pending).unwrap());
        // An earlier request stays durable.
        assert!(outputs.is_durable(&delivered).unwrap());
        cluster.broker_up(1).unwrap();
        wait_durable(&mut outputs, &pending);
    }
}
