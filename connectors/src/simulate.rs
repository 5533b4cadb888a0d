//! Drives the [`Simulator`](crate::simulator::Simulator) in real time into Kafka: the
//! `citybrain simulate` subcommand and the producer side of `citybrain demo`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use citybrain_model::time::now_millis;

use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};

use crate::simulator::{SimMessage, SimStream, Simulator};

/// Topic names per simulated stream.
#[derive(Clone, Debug)]
pub struct SimulationTopics {
    /// Mine readings.
    pub mine: String,
    /// Farm readings.
    pub farm: String,
    /// Citizen report events.
    pub citizen: String,
    /// Sensor registry.
    pub sensors: String,
    /// Device registry.
    pub devices: String,
    /// Grid registry.
    pub grids: String,
}

impl Default for SimulationTopics {
    fn default() -> Self {
        SimulationTopics {
            mine: "mine.readings".into(),
            farm: "farm.readings".into(),
            citizen: "citizen.reports".into(),
            sensors: "registry.sensors".into(),
            devices: "registry.devices".into(),
            grids: "registry.grids".into(),
        }
    }
}

impl SimulationTopics {
    /// The topic of a stream.
    pub fn topic(&self, stream: SimStream) -> &str {
        match stream {
            SimStream::Mine => &self.mine,
            SimStream::Farm => &self.farm,
            SimStream::Citizen => &self.citizen,
            SimStream::Sensors => &self.sensors,
            SimStream::Devices => &self.devices,
            SimStream::Grids => &self.grids,
        }
    }
}

/// A producer for simulated traffic.
pub struct SimulationProducer {
    producer: ThreadedProducer<DefaultProducerContext>,
    topics: SimulationTopics,
    sent: u64,
}

impl SimulationProducer {
    /// Connects a producer to `brokers`.
    pub fn new(brokers: &str, topics: SimulationTopics) -> Result<Self, KafkaError> {
        let producer = ClientConfig::new()
            .set("bootstrap.servers", brokers)
            // Every millisecond here is alert latency on the demo; batching 1 ms still sends
            // each tick's messages together.
            .set("linger.ms", "1")
            .set("queue.buffering.max.messages", "1000000")
            .create()?;
        Ok(SimulationProducer {
            producer,
            topics,
            sent: 0,
        })
    }

    /// Produces one message to the topic of `stream`, waiting while the local queue is full.
    pub fn send(&mut self, stream: SimStream, key: &str, payload: &[u8]) -> Result<(), KafkaError> {
        let mut record = BaseRecord::to(self.topics.topic(stream))
            .key(key)
            .payload(payload);
        loop {
            match self.producer.send(record) {
                Ok(()) => {
                    self.sent += 1;
                    return Ok(());
                }
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), returned)) => {
                    record = returned;
                    std::thread::sleep(Duration::from_millis(2));
                }
                Err((error, _)) => return Err(error),
            }
        }
    }

    /// Produces simulated messages.
    pub fn send_all(&mut self, messages: &[SimMessage]) -> Result<(), KafkaError> {
        for m in messages {
            self.send(m.stream, &m.key, &m.payload)?;
        }
        Ok(())
    }

    /// Messages produced so far.
    pub fn sent(&self) -> u64 {
        self.sent
    }

    /// Waits for everything produced to be acknowledged.
    pub fn flush(&self, timeout: Duration) -> Result<(), KafkaError> {
        self.producer.flush(timeout)
    }
}

/// How often [`run_real_time`] produces what became due: an event reaches the producer at most
/// this long (plus the thread's scheduling delay) after its event time.
pub const TICK: Duration = Duration::from_millis(5);

/// Produces the registry, then the simulation's events in real time (event time = the
/// simulation's start plus the wall-clock time elapsed, times `speed`) until `stop` is set.
pub fn run_real_time(
    simulator: &mut Simulator,
    producer: &mut SimulationProducer,
    speed: f64,
    stop: &AtomicBool,
) -> Result<(), KafkaError> {
    producer.send_all(&simulator.registry())?;
    producer.flush(Duration::from_secs(10))?;
    // Event time is anchored to the wall clock at the simulation's start, so with speed 1 an
    // event's time is when it is produced.
    let start_ms = simulator.config().start_ms;
    let mut batch = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        let elapsed = now_millis().saturating_sub(start_ms) as f64 * speed;
        let to = start_ms.saturating_add(elapsed as u64);
        batch.clear();
        simulator.advance(to, &mut batch);
        producer.send_all(&batch)?;
        std::thread::sleep(TICK);
    }
    producer.flush(Duration::from_secs(5))
}
