//! The end-to-end load bench: generator -> Kafka (tansu, a real Kafka-compatible broker
//! process on 127.0.0.1) -> the whole engine (every built-in KPI, the workload's threshold and
//! one-minute window rules) -> alert transitions.
//!
//! `cargo bench -p citybrain-benches --bench end_to_end` prints, in one run:
//! 1. **ceiling**: the input path alone, a `BaseConsumer` reading the pre-produced readings and
//!    decoding each with the engine's decoder, nothing after it;
//! 2. **max**: the engine consuming the same readings from the start, until its KPI snapshot
//!    reflects the last one (so every rule and KPI has seen every reading), and **sustained**:
//!    the readings read between 10 % and 90 % of the backlog over the time between, without
//!    the registry load before and the idle timeout after (meaningful with one partition per
//!    worker, where backpressure keeps reading close to processing), and the span of `max`
//!    split at the registry read, 10 %, 90 % and 100 % of the readings read and the snapshot;
//! 3. **paced**: a producer at 25 %, 50 % and 80 % of that maximum with event time = the wall
//!    clock at production, and each transition's event-time-to-alert latency (wall clock when
//!    the engine hands it to its sinks minus its event time) in an hdrhistogram;
//! 4. the process's resident set after the backlog and after each level, and its peak
//!    (engine, generator and the ceiling's consumer; not tansu's);
//! 5. once the engine has stopped, the broker's own delivery latency (produce -> consume) at
//!    each paced rate: the floor under the alert latency.
//!
//! Needs `tansu` (`scripts/install-test-deps.sh` installs it). Run as a test (`cargo test
//! --benches`, no `--bench` argument) it only says how to run it. Sizes: `LOAD_SENSORS`
//! (default 10,000), `LOAD_EVENTS` (pre-produced readings, default 1,000,000), `LOAD_SECONDS`
//! (each paced level, default 20), `LOAD_WORKERS` (default 2), `LOAD_LATENESS_MS` (the
//! sensor streams' allowed lateness, default 5) and `LOAD_IDLE_MS` (their idle timeout,
//! default 200) and `LOAD_GRAIN_MS` (paced event times are rounded down to it, default 1: how
//! many distinct event times the engine sees per second); `LOAD_MAX_RATE` sets the rate the
//! paced levels are fractions of (default: the measured maximum), to compare runs at equal rates;
//! `LOAD_PACED=0` skips the paced levels (memory sweeps over sensors and events).
//! `LOAD_BROKER=mock` runs it all on librdkafka's in-process mock cluster instead of tansu: the
//! engine's own share of the latency, under a broker that adds little. That cluster keeps only
//! the newest ~50k messages per partition, so the backlog must fit (`LOAD_EVENTS` at most
//! [`MOCK_BACKLOG_PER_PARTITION`] per partition of `mine.readings`) and the rates of the paced
//! levels want `LOAD_MAX_RATE` (a short backlog measures no steady maximum).
#![allow(missing_docs)]
#![allow(clippy::expect_used, clippy::print_stdout)] // a bench binary: a broken setup fails loudly

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, mpsc};
use std::time::{Duration, Instant};

use citybrain_benches::workload::{
    CADENCE_MS, HOLD_MS, START, THRESHOLD, THRESHOLD_CLEAR, WINDOW_CLEAR, WINDOW_THRESHOLD,
    ch4_value, sensor_id,
};
use citybrain_benches::{env_or, now_us};
use citybrain_model::AlertTransition;
use citybrain_model::decode::decode_mine_reading;
use citybrain_model::time::now_millis;
use citybrain_tests::{MockKafka, TOPICS, http_get, start_engine};
use hdrhistogram::Histogram;
use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const READINGS: &str = "mine.readings";
/// The topic the broker's delivery floor is measured on (the engine does not read it).
const PROBE_TOPIC: &str = "latency.probe";
const PROBE_PARTITIONS: i32 = 2;
/// `fetch.wait.max.ms` of the engine's consumer here and of the floor's consumer.
const FETCH_WAIT_MS: &str = "5";
/// The largest backlog per partition `LOAD_BROKER=mock` takes: under the ~50k messages the
/// mock cluster keeps, so no reading is lost before the engine reads it.
const MOCK_BACKLOG_PER_PARTITION: usize = 45_000;
/// The paced levels, as fractions of the measured maximum.
const LEVELS: [f64; 3] = [0.25, 0.5, 0.8];
/// Paced transitions in the first seconds of a level are not counted (the pipeline fills).
const WARM_UP: Duration = Duration::from_secs(2);

/// The engine's config: a short fetch wait (as `config/demo.toml`), the sensor streams'
/// allowed lateness (part of every alert's latency) and idle timeout (a partition silent this
/// long stops holding the clock, and its readings in flight may turn late), alerts to a file
/// and a topic.
fn config_toml(brokers: &str, workers: usize, lateness_ms: usize, idle_ms: usize) -> String {
    format!(
        r#"
[engine]
workers = {workers}

[kafka]
brokers = "{brokers}"
group_id = "citybrain-load"
properties = {{ "fetch.wait.max.ms" = "{FETCH_WAIT_MS}" }}

[sources.mine]
allowed_lateness = "{lateness_ms}ms"
idle_timeout = "{idle_ms}ms"

[sources.farm]
allowed_lateness = "{lateness_ms}ms"
idle_timeout = "{idle_ms}ms"

[http]
bind = "127.0.0.1:0"

[outputs]
alerts_topic = "alerts"
alerts_file = "alerts.jsonl"
dead_letter_topic = "dead-letters"
dead_letter_file = "dead-letters.jsonl"
"#
    )
}

/// The workload's two rules (`citybrain_benches::workload::engine_rules`) as rule-file TOML.
fn rules_toml() -> String {
    format!(
        r#"
[[rule]]
id = "ch4-high"
domain = "mine"
metric = "ch4"
scope = {{ kind = "ch4" }}
above = {THRESHOLD}
clear = {THRESHOLD_CLEAR}
for = "{HOLD_MS}ms"
severity = "critical"

[[rule]]
id = "ch4-avg-1m"
kind = "window"
domain = "mine"
metric = "ch4"
scope = {{ kind = "ch4" }}
window = "1m"
aggregate = "avg"
above = {WINDOW_THRESHOLD}
clear = {WINDOW_CLEAR}
severity = "critical"
"#
    )
}

fn reading(sensor: usize, time: u64, value: f64) -> String {
    format!(
        r#"{{"sensor":"{}","ts":{time},"metric":"ch4","value":{value}}}"#,
        sensor_id(sensor)
    )
}

/// Registers `sensors` CH4 sensors (16 per face, 8 faces per mine, as the workload).
fn produce_registry(kafka: &MockKafka, sensors: usize) {
    for sensor in 0..sensors {
        let face = sensor / 16;
        let record = format!(
            r#"{{"mine":"mine-{}","face":"mine-{}/face-{face}","kind":"ch4","cadence_ms":{CADENCE_MS}}}"#,
            face / 8,
            face / 8
        );
        kafka.produce(
            "registry.sensors",
            Some(&sensor_id(sensor)),
            Some(record.as_bytes()),
        );
    }
}

/// Pre-produces `events` readings, every sensor once per second of event time from
/// [`START`]; returns the last event time.
fn produce_backlog(kafka: &MockKafka, sensors: usize, events: usize) -> u64 {
    let mut last = START;
    for event in 0..events {
        let (sensor, round) = (event % sensors, (event / sensors) as u64);
        // Spread a round's readings over its second, so event time moves smoothly.
        let time = START + round * CADENCE_MS + (sensor * 1_000 / sensors) as u64;
        last = time;
        let message = reading(sensor, time, ch4_value(sensor, round));
        kafka.produce(READINGS, Some(&sensor_id(sensor)), Some(message.as_bytes()));
    }
    kafka.flush();
    last
}

/// A plain consumer of group `group` that commits nothing (it assigns its partitions itself),
/// and the number of partitions of `mine.readings`.
fn readings_consumer(brokers: &str, group: &str) -> (BaseConsumer, i32) {
    let consumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", group)
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    (consumer, readings_partitions())
}

/// The number of partitions of `mine.readings`.
fn readings_partitions() -> i32 {
    TOPICS
        .iter()
        .find(|(t, _)| *t == READINGS)
        .map_or(1, |(_, p)| *p)
}

/// Reads every message of `mine.readings` and decodes it: messages per second.
fn ceiling(brokers: &str, events: usize) -> f64 {
    let (consumer, partitions) = readings_consumer(brokers, "citybrain-load-ceiling");
    let mut list = rdkafka::TopicPartitionList::new();
    for partition in 0..partitions {
        list.add_partition_offset(READINGS, partition, rdkafka::Offset::Beginning)
            .expect("partition");
    }
    consumer.assign(&list).expect("assign");
    let (mut read, mut decoded) = (0, 0);
    let mut started: Option<Instant> = None;
    let deadline = Instant::now() + Duration::from_secs(300);
    while read < events && Instant::now() < deadline {
        if let Some(Ok(message)) = consumer.poll(Duration::from_millis(100)) {
            started.get_or_insert_with(Instant::now);
            read += 1;
            if decode_mine_reading(rdkafka::Message::payload(&message).unwrap_or_default()).is_ok()
            {
                decoded += 1;
            }
        }
    }
    assert_eq!(
        decoded, events,
        "the ceiling consumer decoded every reading"
    );
    events as f64 / started.map_or(f64::NAN, |s| s.elapsed().as_secs_f64())
}

/// Reads `mine.readings` as the broker stored it and counts the readings more than
/// `lateness_ms` behind an earlier reading of their partition: (readings, out of order). Any
/// consumer sees those late, whatever the engine does.
fn out_of_order(brokers: &str, lateness_ms: u64) -> (u64, u64) {
    let (consumer, partitions) = readings_consumer(brokers, "citybrain-load-order");
    let (mut read, mut behind) = (0, 0);
    for partition in 0..partitions {
        let (low, high) = consumer
            .fetch_watermarks(READINGS, partition, Duration::from_secs(10))
            .expect("watermarks");
        let mut list = rdkafka::TopicPartitionList::new();
        list.add_partition_offset(READINGS, partition, rdkafka::Offset::Offset(low))
            .expect("partition");
        consumer.assign(&list).expect("assign");
        let mut newest = 0u64;
        let mut next = low;
        let deadline = Instant::now() + Duration::from_secs(120);
        while next < high && Instant::now() < deadline {
            let Some(Ok(message)) = consumer.poll(Duration::from_millis(100)) else {
                continue;
            };
            next = rdkafka::Message::offset(&message) + 1;
            read += 1;
            let payload = rdkafka::Message::payload(&message).unwrap_or_default();
            if let Ok(reading) = decode_mine_reading(payload) {
                if reading.time + lateness_ms < newest {
                    behind += 1;
                }
                newest = newest.max(reading.time);
            }
        }
    }
    (read, behind)
}

/// The time of the engine's KPI snapshot (every reading before it is reflected).
fn snapshot_time(addr: std::net::SocketAddr) -> u64 {
    let (_, body) = http_get(addr, "/api/kpis");
    serde_json::from_str::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v["time"].as_u64())
        .unwrap_or(0)
}

/// Latencies of the transitions the engine emits while `recording` is set, microseconds.
struct Latencies {
    recording: AtomicBool,
    histogram: Mutex<Histogram<u64>>,
}

/// One paced level: produces `rate` readings per second for `run`, with event time = now
/// rounded down to `grain_ms`; returns (readings produced, latency histogram).
fn paced(
    kafka: &MockKafka,
    sensors: usize,
    rate: f64,
    run: Duration,
    grain_ms: u64,
    latencies: &Latencies,
) -> (u64, Histogram<u64>) {
    if let Ok(mut h) = latencies.histogram.lock() {
        h.reset();
    }
    let start = Instant::now();
    let mut sent: u64 = 0;
    let mut round_of = vec![0u64; sensors];
    while start.elapsed() < run {
        if start.elapsed() >= WARM_UP {
            latencies.recording.store(true, Ordering::Relaxed);
        }
        let due = (start.elapsed().as_secs_f64() * rate) as u64;
        let time = now_millis() / grain_ms * grain_ms;
        while sent < due {
            let sensor = (sent % sensors as u64) as usize;
            let round = round_of[sensor];
            round_of[sensor] += 1;
            let message = reading(sensor, time, ch4_value(sensor, round));
            kafka.produce(READINGS, Some(&sensor_id(sensor)), Some(message.as_bytes()));
            sent += 1;
        }
        std::thread::sleep(Duration::from_micros(500));
    }
    latencies.recording.store(false, Ordering::Relaxed);
    kafka.flush();
    let histogram = latencies
        .histogram
        .lock()
        .map(|h| h.clone())
        .expect("histogram");
    (sent, histogram)
}

/// The broker's own delivery latency at `rate` messages/s for `run`: the generator's producer
/// sends to [`PROBE_TOPIC`], a `BaseConsumer` with the engine's fetch settings reads it; each message carries its send time. Returns the histogram, microseconds.
fn delivery_floor(kafka: &MockKafka, rate: f64, run: Duration) -> Histogram<u64> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &kafka.brokers)
        .set("group.id", "citybrain-load-floor")
        .set("enable.auto.commit", "false")
        .set("fetch.wait.max.ms", FETCH_WAIT_MS)
        .create()
        .expect("consumer");
    let mut list = rdkafka::TopicPartitionList::new();
    for partition in 0..PROBE_PARTITIONS {
        list.add_partition_offset(PROBE_TOPIC, partition, rdkafka::Offset::End)
            .expect("partition");
    }
    consumer.assign(&list).expect("assign");
    // Let the consumer reach the end before the clock starts.
    let _ = consumer.poll(Duration::from_millis(500));
    let stop = Arc::new(AtomicBool::new(false));
    std::thread::scope(|scope| {
        let reader = scope.spawn(|| {
            let mut histogram = Histogram::<u64>::new(3).expect("histogram");
            while !stop.load(Ordering::Relaxed) {
                if let Some(Ok(message)) = consumer.poll(Duration::from_millis(10)) {
                    let sent = std::str::from_utf8(
                        rdkafka::Message::payload(&message).unwrap_or_default(),
                    )
                    .ok()
                    .and_then(|text| text.parse::<u64>().ok());
                    if let Some(sent) = sent {
                        let _ = histogram.record(now_us().saturating_sub(sent).max(1));
                    }
                }
            }
            histogram
        });
        let start = Instant::now();
        let mut sent: u64 = 0;
        while start.elapsed() < run {
            let due = (start.elapsed().as_secs_f64() * rate) as u64;
            while sent < due {
                let key = (sent % 1024).to_string();
                kafka.produce(
                    PROBE_TOPIC,
                    Some(&key),
                    Some(now_us().to_string().as_bytes()),
                );
                sent += 1;
            }
            std::thread::sleep(Duration::from_micros(500));
        }
        std::thread::sleep(Duration::from_millis(500));
        stop.store(true, Ordering::Relaxed);
        reader.join().expect("reader")
    })
}

/// A size from this process's `/proc/self/status` (`VmHWM:` peak, `VmRSS:` now), MiB.
fn status_mib(field: &str) -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(f64::NAN, |kib| kib / 1024.0)
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!(
            "end_to_end: a load bench through a tansu broker; run it with `cargo bench -p citybrain-benches --bench end_to_end`"
        );
        return;
    }
    let sensors = env_or("LOAD_SENSORS", 10_000).max(1);
    // A backlog long enough that the fixed ends of the `max` run (the registry read first,
    // the idle timeout that moves the watermark past the last readings) are a small share of
    // it: 300,000 readings took ~1.4 s, of which the 200 ms idle timeout alone was 14 %.
    let events = env_or("LOAD_EVENTS", 1_000_000).max(1);
    let level_run = Duration::from_secs(env_or("LOAD_SECONDS", 20) as u64);
    let workers = env_or("LOAD_WORKERS", 2).max(1);
    let lateness_ms = env_or("LOAD_LATENESS_MS", 5);
    let idle_ms = env_or("LOAD_IDLE_MS", 200).max(1);
    let grain_ms = env_or("LOAD_GRAIN_MS", 1).max(1) as u64;
    let levels: &[f64] = if env_or("LOAD_PACED", 1) == 0 {
        &[]
    } else {
        &LEVELS
    };

    let mut topics = TOPICS.to_vec();
    topics.push((PROBE_TOPIC, PROBE_PARTITIONS));
    let kafka = match std::env::var("LOAD_BROKER").as_deref() {
        Ok("mock") => {
            let most = MOCK_BACKLOG_PER_PARTITION * readings_partitions() as usize;
            assert!(
                events <= most,
                "LOAD_BROKER=mock keeps only the newest ~50k messages per partition: set LOAD_EVENTS to at most {most}"
            );
            println!("end_to_end: on librdkafka's in-process mock cluster, not tansu");
            MockKafka::new(&topics)
        }
        Ok("tansu") | Err(_) => MockKafka::tansu(&topics),
        Ok(other) => panic!("LOAD_BROKER is `mock` or `tansu` (the default), not `{other}`"),
    };
    produce_registry(&kafka, sensors);
    let produced = Instant::now();
    let last_time = produce_backlog(&kafka, sensors, events);
    let produce_rate = events as f64 / produced.elapsed().as_secs_f64();
    println!("end_to_end: {sensors} sensors, {events} readings produced at {produce_rate:.0}/s");

    let ceiling = ceiling(&kafka.brokers, events);
    println!("end_to_end: ceiling (consume + decode): {ceiling:.0} readings/s");

    let latencies = Arc::new(Latencies {
        recording: AtomicBool::new(false),
        histogram: Mutex::new(Histogram::new(3).expect("histogram")),
    });
    let seen = Arc::clone(&latencies);
    let (first_transition, first_rx) = mpsc::channel::<()>();
    let on_transition = Box::new(move |t: &AlertTransition| {
        let _ = first_transition.send(());
        if seen.recording.load(Ordering::Relaxed) {
            let latency = now_us().saturating_sub(t.event_time * 1_000);
            if let Ok(mut h) = seen.histogram.lock() {
                let _ = h.record(latency.max(1));
            }
        }
    });
    let dir = tempfile::tempdir().expect("tempdir");
    let engine = start_engine(
        dir.path(),
        &config_toml(&kafka.brokers, workers, lateness_ms, idle_ms),
        &rules_toml(),
        on_transition,
    );
    let addr = engine.http_addr().expect("http server");
    let started = Instant::now();
    let mut first_event: Option<Instant> = None;
    // When the engine had read 10 % and 90 % of the readings (after the registry's `sensors`
    // messages): the rate between them leaves out the start (registry load, partitions
    // resumed) and the end (the idle timeout that lets the watermark pass the last readings),
    // which the ceiling's plain consumer does not have. The engine reads at most a few polls
    // ahead of what its dataflow has finished, so reading is processing here.
    // Also when it had read the registry and every reading: the spans between the marks say
    // which part of the `max` run moves between runs (start, steady state, tail).
    let marks = [0, events / 10, events * 9 / 10, events].map(|n| (sensors + n) as u64);
    let mut marked: [Option<(Instant, u64)>; 4] = [None; 4];
    let deadline = started + Duration::from_secs(600);
    loop {
        let status = engine.status();
        if status.events > 0 {
            first_event.get_or_insert_with(Instant::now);
        }
        for (mark, slot) in marks.iter().zip(marked.iter_mut()) {
            if status.events >= *mark && slot.is_none() {
                *slot = Some((Instant::now(), status.events));
            }
        }
        if status.events as usize >= events && snapshot_time(addr) >= last_time {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the engine did not get through the backlog: {status:?}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let finished = Instant::now();
    let first = first_event.unwrap_or(started);
    let max = events as f64 / (finished - first).as_secs_f64();
    let sustained = match marked {
        [_, Some((from, read_from)), Some((to, read_to)), _] if to > from => {
            (read_to - read_from) as f64 / (to - from).as_secs_f64()
        }
        _ => f64::NAN,
    };
    let span_ms = |from: Option<Instant>, to: Option<Instant>| match (from, to) {
        (Some(from), Some(to)) => format!("{:.0}", (to - from).as_secs_f64() * 1_000.0),
        _ => "?".to_string(),
    };
    let at = marked.map(|m| m.map(|(at, _)| at));
    let transitions = engine.status().transitions;
    assert!(first_rx.try_recv().is_ok(), "the backlog raised alerts");
    println!(
        "end_to_end: max (consume to every rule and KPI): {max:.0} readings/s = {:.2}x the ceiling; {transitions} transitions; RSS now {:.0} MiB",
        max / ceiling,
        status_mib("VmRSS:")
    );
    println!(
        "end_to_end: sustained (10 % to 90 % of the readings read): {sustained:.0} readings/s = {:.2}x the ceiling",
        sustained / ceiling
    );
    println!(
        "end_to_end: max's span, ms: registry {}, to 10 % {}, 10-90 % {}, 90-100 % {}, last read -> snapshot {}",
        span_ms(Some(first), at[0]),
        span_ms(at[0], at[1]),
        span_ms(at[1], at[2]),
        span_ms(at[2], at[3]),
        span_ms(at[3], Some(finished)),
    );

    // `LOAD_MAX_RATE` fixes the rate the levels are fractions of, so runs compare at equal rates.
    let base = std::env::var("LOAD_MAX_RATE")
        .ok()
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(max);
    for &level in levels {
        let rate = base * level;
        let dead_before = engine.status().dead_letters;
        let (sent, histogram) = paced(&kafka, sensors, rate, level_run, grain_ms, &latencies);
        let ms = |q: f64| histogram.value_at_quantile(q) as f64 / 1_000.0;
        println!(
            "end_to_end: paced {:.0}% = {rate:.0}/s ({sent} readings, {} dead-lettered): {} transitions, latency p50 {:.1} ms, p99 {:.1} ms, p99.9 {:.1} ms, max {:.1} ms; RSS now {:.0} MiB",
            level * 100.0,
            engine.status().dead_letters - dead_before,
            histogram.len(),
            ms(0.5),
            ms(0.99),
            ms(0.999),
            histogram.max() as f64 / 1_000.0,
            status_mib("VmRSS:")
        );
    }
    println!(
        "end_to_end: peak RSS {:.0} MiB; {} readings dead-lettered (late or undecodable)",
        status_mib("VmHWM:"),
        engine.status().dead_letters
    );
    engine.stop();
    engine.wait().expect("the engine stopped cleanly");
    for &level in levels {
        let rate = base * level;
        let floor = delivery_floor(&kafka, rate, Duration::from_secs(5));
        let ms = |q: f64| floor.value_at_quantile(q) as f64 / 1_000.0;
        println!(
            "end_to_end: broker delivery floor at {rate:.0}/s (produce -> consume, engine stopped): p50 {:.1} ms, p99 {:.1} ms, p99.9 {:.1} ms ({} messages)",
            ms(0.5),
            ms(0.99),
            ms(0.999),
            floor.len()
        );
    }
    let mut reasons = std::collections::BTreeMap::<String, usize>::new();
    let dead = std::fs::read_to_string(dir.path().join("dead-letters.jsonl")).unwrap_or_default();
    for line in dead.lines() {
        let value: serde_json::Value = serde_json::from_str(line).unwrap_or_default();
        let reason = value["reason"].as_str().unwrap_or("?").to_string();
        *reasons.entry(reason).or_default() += 1;
    }
    println!("end_to_end: dead letters by reason: {reasons:?}");
    let (stored, behind) = out_of_order(&kafka.brokers, lateness_ms as u64);
    println!(
        "end_to_end: the broker's log of {READINGS}: {stored} readings, {behind} more than the lateness behind an earlier one of their partition"
    );
    for line in dead.lines().take(3) {
        let value: serde_json::Value = serde_json::from_str(line).unwrap_or_default();
        println!(
            "end_to_end: e.g. partition {} offset {}: {}",
            value["partition"], value["offset"], value["detail"]
        );
    }
}
