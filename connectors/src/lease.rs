//! One active engine per consumer group: a lease held through Kafka's own group membership.
//!
//! The engine assigns its partitions to its timely workers itself (a static split, so the
//! frontier of every partition is known; scale-out is timely's cluster mode), so it never
//! joins the consumer group whose offsets it commits, and a second engine started with the
//! same `group_id` would otherwise read everything again. With a lease, engines sharing a
//! group take turns instead: each joins the group `<group_id>.lease` subscribed to a lease
//! topic of one partition (created when missing), and the member assigned that partition is
//! the active engine. The others wait as hot standbys; when the active one leaves (shutdown)
//! or stops heartbeating (crash, `session.timeout.ms`), the group rebalances and a standby
//! takes the partition and starts from the committed offsets (the recovery path). The
//! `cooperative-sticky` assignor keeps the partition where it is when a standby joins, so
//! joining never moves work. A member that loses the partition while active (it was
//! unresponsive past the session timeout) must stop: [`Lease::lost`] says so.
//!
//! The lease group is not the offsets group: an engine commits its offsets as a simple
//! consumer (no generation), which a broker refuses for a group that has live members.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;

use crate::closing::{CLOSE_LIMIT, close_within};

/// How to take part in a lease.
#[derive(Clone, Debug)]
pub struct LeaseConfig {
    /// Bootstrap servers.
    pub brokers: String,
    /// The group whose offsets the engine commits; members join `<group_id>.lease`.
    pub group_id: String,
    /// The lease topic (one partition; created when missing).
    pub topic: String,
    /// Extra librdkafka properties (e.g. `session.timeout.ms`), as for the sources.
    pub properties: Vec<(String, String)>,
}

/// A lease could not be taken part in.
#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    /// The client could not be created, or the topic created or subscribed to.
    #[error("lease topic `{topic}`: {source}")]
    Kafka {
        /// The lease topic.
        topic: String,
        /// What librdkafka said.
        source: KafkaError,
    },
    /// The lease thread could not be started.
    #[error("lease thread: {0}")]
    Thread(#[from] std::io::Error),
}

/// Where this member stands.
const WAITING: u8 = 0;
const HELD: u8 = 1;
const LOST: u8 = 2;

/// This engine's part in the lease: a thread keeps the membership alive.
pub struct Lease {
    state: Arc<AtomicU8>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    group: String,
}

impl Lease {
    /// Creates the lease topic when missing and joins the lease group; returns at once (the
    /// lease is held when [`Lease::held`] says so).
    pub fn join(config: &LeaseConfig) -> Result<Self, LeaseError> {
        let kafka = |source| LeaseError::Kafka {
            topic: config.topic.clone(),
            source,
        };
        create_topic(config).map_err(kafka)?;
        let group = format!("{}.lease", config.group_id);
        let mut client = ClientConfig::new();
        client
            .set("bootstrap.servers", &config.brokers)
            .set("group.id", &group)
            .set("enable.auto.commit", "false")
            .set("partition.assignment.strategy", "cooperative-sticky");
        for (name, value) in &config.properties {
            client.set(name, value);
        }
        let consumer: BaseConsumer = client.create().map_err(kafka)?;
        consumer.subscribe(&[&config.topic]).map_err(kafka)?;
        let state = Arc::new(AtomicU8::new(WAITING));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (state, stop, topic) =
                (Arc::clone(&state), Arc::clone(&stop), config.topic.clone());
            std::thread::Builder::new()
                .name("citybrain-lease".into())
                .spawn(move || {
                    keep_membership(&consumer, &topic, &state, &stop);
                    // Joined by `Lease::drop`: the close must not hold a stop forever.
                    close_within(consumer, "lease consumer", CLOSE_LIMIT);
                })?
        };
        Ok(Lease {
            state,
            stop,
            thread: Some(thread),
            group,
        })
    }

    /// True while this engine holds the lease (it is the active one).
    pub fn held(&self) -> bool {
        self.state.load(Ordering::SeqCst) == HELD
    }

    /// True once this engine held the lease and lost it: another engine is active now.
    pub fn lost(&self) -> bool {
        self.state.load(Ordering::SeqCst) == LOST
    }

    /// The lease group's id.
    pub fn group(&self) -> &str {
        &self.group
    }

    /// Waits until the lease is held (true), `stop` is set or `timeout` passes (false).
    pub fn wait_held(&self, stop: &AtomicBool, timeout: Duration) -> bool {
        // `None`: too far to tell, i.e. no deadline.
        let deadline = Instant::now().checked_add(timeout);
        while !self.held() {
            if stop.load(Ordering::Relaxed) || deadline.is_some_and(|d| Instant::now() >= d) {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        true
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        // Leaving the group hands the lease over at once instead of after the session timeout.
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Polls the membership (heartbeats, rebalances) until `stop`, publishing whether this member
/// holds partition 0 of `topic`; then leaves the group.
fn keep_membership(consumer: &BaseConsumer, topic: &str, state: &AtomicU8, stop: &AtomicBool) {
    while !stop.load(Ordering::SeqCst) {
        // The lease topic carries no messages; polling serves the group protocol.
        if let Some(Err(error)) = consumer.poll(Duration::from_millis(100)) {
            tracing::debug!(%error, "lease group");
        }
        let holds = consumer
            .assignment()
            .map(|list| {
                list.elements()
                    .iter()
                    .any(|e| e.topic() == topic && e.partition() == 0)
            })
            .unwrap_or(false);
        let now = state.load(Ordering::SeqCst);
        match (now, holds) {
            (WAITING, true) => {
                tracing::info!(topic, "lease taken: this engine is the active one");
                state.store(HELD, Ordering::SeqCst);
            }
            (HELD, false) => {
                tracing::error!(topic, "lease lost: another engine is the active one now");
                state.store(LOST, Ordering::SeqCst);
            }
            _ => {}
        }
    }
    consumer.unsubscribe();
    // Serves the leave; `close` happens on drop.
    let _ = consumer.poll(Duration::from_millis(100));
}

/// Creates the lease topic with one partition unless it exists.
fn create_topic(config: &LeaseConfig) -> Result<(), KafkaError> {
    let mut client = ClientConfig::new();
    client.set("bootstrap.servers", &config.brokers);
    let admin: AdminClient<DefaultClientContext> = client.create()?;
    // Asked first, since not every broker creates topics (librdkafka's mock cluster does not
    // answer CreateTopics).
    let metadata = admin
        .inner()
        .fetch_metadata(Some(&config.topic), Duration::from_secs(10))?;
    if metadata
        .topics()
        .iter()
        .any(|t| t.name() == config.topic && t.error().is_none() && !t.partitions().is_empty())
    {
        return Ok(());
    }
    let topic = NewTopic::new(&config.topic, 1, TopicReplication::Fixed(1));
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| KafkaError::AdminOpCreation(e.to_string()))?;
    let results = runtime.block_on(admin.create_topics([&topic], &options))?;
    for result in results {
        match result {
            Ok(_) => tracing::info!(topic = config.topic, "lease topic created"),
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((_, code)) => return Err(KafkaError::AdminOp(code)),
        }
    }
    Ok(())
}
