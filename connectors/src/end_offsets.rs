//! The brokers' current end offsets (high watermarks) of a source's reading partitions,
//! fetched on a thread of its own so a timely worker never waits on the network.
//!
//! The source needs them for two things:
//! - **Idleness.** A partition counts as caught up, and so may go idle and stop holding the
//!   event-time watermark back, only when it has read up to an end offset fetched *recently*
//!   (and asked for after its last message came: with slow fetches an older one is passed
//!   while the producer's next messages are still on the way).
//!   Comparing with the end offset seen at assignment made a partition stalled by fetch errors
//!   or an unreachable broker look idle: the other partitions' watermark then ran ahead and the
//!   stalled readings turned into late dead letters once they arrived.
//! - **Reachability.** Whether the brokers answer at all: readiness, a metric and the wall's
//!   banner report a broker that went away.
//!
//! One round asks for the end offset of every partition (a `ListOffsets` request each); the
//! next round starts `refresh` after the previous one ended. librdkafka caches end offsets from
//! fetch responses too, but a partition whose fetches fail would keep a stale one, and
//! `rdkafka` only exposes the blocking broker query, hence the thread.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use citybrain_model::time::now_millis;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};

/// What the last rounds found.
#[derive(Clone, Debug, Default)]
pub struct Known {
    /// Per partition, in the order given to [`EndOffsets::start`]: the end offset and when
    /// the round that fetched it started.
    pub ends: Vec<(i64, Instant)>,
    /// Since when (epoch ms) the brokers have not answered, with the error of the last round;
    /// `None` while they answer (or before the first round ended).
    pub away: Option<(u64, String)>,
}

/// Fetches end offsets in the background until dropped.
pub struct EndOffsets {
    known: Arc<Mutex<Known>>,
    stop: Arc<AtomicBool>,
}

impl EndOffsets {
    /// Starts fetching the end offsets of `partitions` ((topic, partition, end offset fetched
    /// just now)) every `refresh` with a client made from `client` (the source's settings),
    /// each request waiting at most `timeout`.
    pub fn start(
        client: &ClientConfig,
        partitions: Vec<(String, i32, i64)>,
        refresh: Duration,
        timeout: Duration,
    ) -> Result<Self, rdkafka::error::KafkaError> {
        let consumer: BaseConsumer = client.create()?;
        let now = Instant::now();
        let known = Arc::new(Mutex::new(Known {
            ends: partitions.iter().map(|p| (p.2, now)).collect(),
            away: None,
        }));
        let partitions: Vec<(String, i32)> = partitions.into_iter().map(|p| (p.0, p.1)).collect();
        let stop = Arc::new(AtomicBool::new(false));
        {
            let known = Arc::clone(&known);
            let stop = Arc::clone(&stop);
            // Detached: a request in flight when the source stops ends within `timeout`.
            std::thread::Builder::new()
                .name("citybrain-end-offsets".into())
                .spawn(move || run(&consumer, &partitions, &known, &stop, refresh, timeout))
                .map_err(|e| {
                    rdkafka::error::KafkaError::ClientCreation(format!("end-offset thread: {e}"))
                })?;
        }
        Ok(EndOffsets { known, stop })
    }

    /// Calls `f` with what the rounds so far found, without copying it.
    pub fn with_known<R>(&self, f: impl FnOnce(&Known) -> R) -> R {
        f(&self.known.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

impl Drop for EndOffsets {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn run(
    consumer: &BaseConsumer,
    partitions: &[(String, i32)],
    known: &Mutex<Known>,
    stop: &AtomicBool,
    refresh: Duration,
    timeout: Duration,
) {
    while !stop.load(Ordering::Relaxed) {
        let started = Instant::now();
        let mut failure = None;
        for (index, (topic, partition)) in partitions.iter().enumerate() {
            match consumer.fetch_watermarks(topic, *partition, timeout) {
                Ok((_, end)) => {
                    let mut known = known.lock().unwrap_or_else(PoisonError::into_inner);
                    if let Some(slot) = known.ends.get_mut(index) {
                        *slot = (end, started);
                    }
                }
                Err(error) => {
                    failure = Some(format!("{topic}/{partition}: {error}"));
                    break;
                }
            }
            if stop.load(Ordering::Relaxed) {
                return;
            }
        }
        {
            let mut known = known.lock().unwrap_or_else(PoisonError::into_inner);
            match failure {
                Some(error) => {
                    if known.away.is_none() {
                        tracing::warn!(%error, "Kafka brokers do not answer; waiting for them");
                    }
                    let since = known.away.as_ref().map_or_else(now_millis, |a| a.0);
                    known.away = Some((since, error));
                }
                None => {
                    if let Some((since, _)) = known.away.take() {
                        let seconds = now_millis().saturating_sub(since) / 1000;
                        tracing::info!(seconds, "Kafka brokers answer again");
                    }
                }
            }
        }
        // Sleep in short steps so a stopped source's thread ends soon.
        let resume = Instant::now() + refresh;
        while !stop.load(Ordering::Relaxed) && Instant::now() < resume {
            std::thread::sleep(refresh.min(Duration::from_millis(50)));
        }
    }
}
