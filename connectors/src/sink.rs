//! Outputs: alert transitions and dead letters to Kafka topics and/or JSONL files.
//!
//! Alerts are keyed by `rule/entity` on Kafka so every transition of one alert lands in one
//! partition, in order; the transition id travels as the `citybrain-id` header.
//!
//! [`Outputs::make_durable`] is what offset commits wait for: files synced to disk and every
//! produced message acknowledged by the brokers (librdkafka retries failed sends itself; a
//! message it finally gives up on fails the call, so nothing is committed past it).
//!
//! A file that cannot be written (disk full, a file-size limit, an I/O error) fails the calls
//! that write it with [`SinkError::File`] but loses nothing: its lines stay buffered, a partly
//! written line is cut off again, and the next successful flush writes them whole.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
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
    /// The brokers never acknowledged some produced messages.
    #[error("kafka: {0} produced messages were not delivered")]
    Undelivered(u64),
}

/// Counts messages librdkafka gave up delivering (after its own retries).
#[derive(Clone, Default)]
struct DeliveryFailures(Arc<AtomicU64>);

impl ClientContext for DeliveryFailures {}

impl ProducerContext for DeliveryFailures {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: Self::DeliveryOpaque) {
        if let Err((error, message)) = result {
            use rdkafka::message::Message;
            tracing::error!(%error, topic = message.topic(), "output message not delivered");
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }
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

    fn sync(&mut self) -> Result<(), SinkError> {
        self.flush()?;
        self.file.sync_data().map_err(|source| self.error(source))
    }

    fn pending_bytes(&self) -> usize {
        self.pending.len()
    }
}

/// The open outputs.
pub struct Outputs {
    producer: Option<ThreadedProducer<DeliveryFailures>>,
    failures: DeliveryFailures,
    /// Failures already reported by [`Outputs::make_durable`].
    reported_failures: u64,
    alerts_topic: Option<String>,
    dead_letter_topic: Option<String>,
    alerts_file: Option<JsonlFile>,
    dead_letter_file: Option<JsonlFile>,
}

impl Outputs {
    /// Opens files (appending) and the producer.
    pub fn open(config: &OutputConfig) -> Result<Self, SinkError> {
        let failures = DeliveryFailures::default();
        let producer = if config.alerts_topic.is_some() || config.dead_letter_topic.is_some() {
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
            Some(
                client.create_with_context::<_, ThreadedProducer<DeliveryFailures>>(
                    failures.clone(),
                )?,
            )
        } else {
            None
        };
        Ok(Outputs {
            producer,
            failures,
            reported_failures: 0,
            alerts_topic: config.alerts_topic.clone(),
            dead_letter_topic: config.dead_letter_topic.clone(),
            alerts_file: config
                .alerts_file
                .as_ref()
                .map(JsonlFile::open)
                .transpose()?,
            dead_letter_file: config
                .dead_letter_file
                .as_ref()
                .map(JsonlFile::open)
                .transpose()?,
        })
    }

    fn send(&self, topic: &str, key: &str, value: &str, id: &str) -> Result<(), SinkError> {
        let Some(producer) = &self.producer else {
            return Ok(());
        };
        let headers = OwnedHeaders::new().insert(Header {
            key: "citybrain-id",
            value: Some(id),
        });
        let mut record = BaseRecord::to(topic)
            .key(key)
            .payload(value)
            .headers(headers);
        loop {
            match producer.send(record) {
                Ok(()) => return Ok(()),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), returned)) => {
                    record = returned;
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err((error, _)) => return Err(error.into()),
            }
        }
    }

    /// Writes one alert transition to every alert output.
    pub fn write_alert(&mut self, transition: &AlertTransition) -> Result<(), SinkError> {
        let line = serde_json::to_string(transition).unwrap_or_default();
        // A file that cannot be written keeps the line buffered: send it on regardless.
        let written = match &mut self.alerts_file {
            Some(file) => file.write(&line),
            None => Ok(()),
        };
        if let Some(topic) = &self.alerts_topic {
            let key = format!("{}/{}", transition.rule, transition.entity);
            self.send(topic, &key, &line, &transition.id)?;
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
        if let Some(topic) = &self.dead_letter_topic {
            let id = format!("{}/{}/{}", letter.topic, letter.partition, letter.offset);
            self.send(topic, &id, &line, &id)?;
        }
        written
    }

    /// Flushes files and waits (up to `timeout`) for the producer's queue to drain.
    pub fn flush(&mut self, timeout: Duration) -> Result<(), SinkError> {
        self.flush_files()?;
        if let Some(producer) = &self.producer {
            producer.flush(timeout)?;
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

    /// Makes everything written so far durable: files synced to disk, every produced message
    /// acknowledged. Returns `false` when the brokers have not acknowledged everything within
    /// `timeout` (e.g. during a broker outage: librdkafka keeps retrying; call again later).
    /// Fails when a message was given up on since the last call, so the caller does not
    /// treat it as durable.
    pub fn make_durable(&mut self, timeout: Duration) -> Result<bool, SinkError> {
        if let Some(file) = &mut self.alerts_file {
            file.sync()?;
        }
        if let Some(file) = &mut self.dead_letter_file {
            file.sync()?;
        }
        let acknowledged = match &self.producer {
            Some(producer) => match producer.flush(timeout) {
                Ok(()) => true,
                Err(KafkaError::Flush(RDKafkaErrorCode::OperationTimedOut)) => false,
                Err(error) => return Err(error.into()),
            },
            None => true,
        };
        let failed = self.failures.0.load(Ordering::Relaxed);
        if failed > self.reported_failures {
            let new = failed - self.reported_failures;
            self.reported_failures = failed;
            return Err(SinkError::Undelivered(new));
        }
        Ok(acknowledged)
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
        file.sync().unwrap();
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
        assert!(outputs.make_durable(Duration::from_secs(1)).unwrap());
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "{\"whole\":1}\n{\"cut sh\n{\"next\":2}\n"
        );
    }
}
