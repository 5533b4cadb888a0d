//! Reads a topic whole, from each partition's first to its last offset at the time of the
//! call: what an engine taking over from another (see [`crate::lease`]) learns from the shared
//! alerts topic about the transitions the other one already published.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};

/// A topic could not be read to its end.
#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    /// The brokers refused or did not answer.
    #[error("reading topic `{topic}`: {source}")]
    Kafka {
        /// The topic.
        topic: String,
        /// What librdkafka said.
        source: KafkaError,
    },
    /// The end was not reached in time.
    #[error("reading topic `{topic}`: {missing} messages not read within {timeout:?}")]
    Timeout {
        /// The topic.
        topic: String,
        /// Messages between what was read and the end offsets.
        missing: i64,
        /// The time allowed.
        timeout: Duration,
    },
}

/// How long reading goes on after the end offsets while more messages still arrive.
const QUIET: Duration = Duration::from_millis(1000);

/// The payloads of every message of `topic` up to the end offsets as of now and on until
/// nothing more arrives for a second (partition by partition, in offset order), within
/// `timeout`. `properties` are extra librdkafka settings.
pub fn read_whole(
    brokers: &str,
    properties: &[(String, String)],
    topic: &str,
    timeout: Duration,
) -> Result<Vec<Vec<u8>>, HistoryError> {
    let kafka = |source| HistoryError::Kafka {
        topic: topic.to_string(),
        source,
    };
    let mut config = ClientConfig::new();
    for (name, value) in properties {
        config.set(name, value);
    }
    // Partitions are assigned and nothing is committed: the group id is only a name
    // librdkafka's consumer wants.
    config
        .set("bootstrap.servers", brokers)
        .set("group.id", "citybrain-history")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false");
    let consumer: BaseConsumer = config.create().map_err(kafka)?;
    let metadata = consumer
        .fetch_metadata(Some(topic), timeout)
        .map_err(kafka)?;
    let mut assignment = TopicPartitionList::new();
    // Per partition: the end offset still to reach.
    let mut ends: HashMap<i32, i64> = HashMap::new();
    for partition in metadata
        .topics()
        .iter()
        .filter(|t| t.name() == topic)
        .flat_map(|t| t.partitions())
    {
        let (low, high) = consumer
            .fetch_watermarks(topic, partition.id(), timeout)
            .map_err(kafka)?;
        // Every partition is read, an empty-looking one too (its end offset may lag).
        assignment
            .add_partition_offset(topic, partition.id(), Offset::Offset(low))
            .map_err(kafka)?;
        if high > low {
            ends.insert(partition.id(), high);
        }
    }
    let mut payloads = Vec::new();
    if assignment.count() == 0 {
        return Ok(payloads);
    }
    consumer.assign(&assignment).map_err(kafka)?;
    let deadline = Instant::now() + timeout;
    let mut next: HashMap<i32, i64> = HashMap::new();
    // When the end offsets are reached, read on until nothing comes for `QUIET`: tansu 0.6.0
    // reports end offsets that lag what it has stored (seen: 480 for 539 messages).
    let mut quiet_since: Option<Instant> = None;
    loop {
        if ends.is_empty() {
            let since = *quiet_since.get_or_insert_with(Instant::now);
            if since.elapsed() >= QUIET {
                break;
            }
        }
        if Instant::now() >= deadline {
            if ends.is_empty() {
                // The end offsets were reached; more kept coming (a producer still writes).
                break;
            }
            let missing = ends
                .iter()
                .map(|(p, end)| end - next.get(p).copied().unwrap_or(0))
                .sum();
            return Err(HistoryError::Timeout {
                topic: topic.to_string(),
                missing,
                timeout,
            });
        }
        let Some(message) = consumer.poll(Duration::from_millis(100)) else {
            continue;
        };
        let message = message.map_err(kafka)?;
        if ends.is_empty() {
            quiet_since = None;
        }
        if let Some(payload) = message.payload() {
            payloads.push(payload.to_vec());
        }
        let partition = message.partition();
        next.insert(partition, message.offset() + 1);
        if ends
            .get(&partition)
            .is_some_and(|end| message.offset() + 1 >= *end)
        {
            ends.remove(&partition);
        }
    }
    Ok(payloads)
}
