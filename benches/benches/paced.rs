//! Event-time-to-alert latency of the engine's operators with no broker: bytes to alerts,
//! paced.
//!
//! `cargo bench -p citybrain-benches --bench paced` runs, for the engine's operators
//! ([`Pipeline::Engine`]) and then the hand-written differential floor ([`Pipeline::Floor`]),
//! on one process of `PACED_WORKERS` workers (default 2):
//! 1. **max**: each worker builds the workload's readings as wire JSON with event time = the
//!    wall clock (whole milliseconds), decodes them and feeds them in batches of 4,096 with one
//!    batch in flight (as `bytes_to_alerts` does), for `PACED_MAX_SECONDS` (default 5): readings
//!    per second;
//! 2. **paced**: the same at 25 %, 50 % and 80 % of that max (`PACED_MAX_RATE` fixes the rate
//!    they are fractions of) for `PACED_SECONDS` each (default 15): each worker sends its share
//!    of the readings due so far, advances its input to the current millisecond (everything
//!    before it is final: there is no other partition or broker to wait for) and steps its
//!    dataflow. Each transition's latency is the wall clock when the dataflow emits it minus
//!    its event time (hdrhistogram; the first 2 s of a level are not counted).
//!
//! So the figures are the engine's share of the end-to-end latency (`end_to_end`), without the
//! broker's delivery and without waiting for a second partition; with the engine's 5 ms
//! allowed lateness added, they are what a broker that delivered instantly would give. Sizes:
//! `PACED_SENSORS` (default 10,000); `PACED_PIPELINE=engine` (or `floor`) runs only that one
//! (e.g. under a profiler). `PACED_RULES=FILE[,FILE...]` adds the rules of those rule files to
//! the engine's (the floor runs the workload's two whatever it says), e.g.
//! `PACED_PIPELINE=engine PACED_RULES=../config/rules/mine.toml`. Run as a test (no `--bench` argument) it only says how to
//! run it.
#![allow(missing_docs)]
#![allow(clippy::expect_used, clippy::print_stdout)] // a bench binary: a broken setup fails loudly

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use citybrain_benches::pipeline::{Pipeline, build_watched, load};
use citybrain_benches::workload::{Workload, ch4_value, engine_rules, sensor_id};
use citybrain_benches::{env_or, now_us};
use citybrain_model::decode::decode_mine_reading;
use citybrain_operators::ordered_float::OrderedFloat;
use citybrain_operators::rule::RuleRow;
use citybrain_operators::{ReadingRow, Time};
use hdrhistogram::Histogram;

mod common;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The paced levels, as fractions of the measured maximum.
const LEVELS: [f64; 3] = [0.25, 0.5, 0.8];
/// Transitions in the first seconds of a level are not counted (the dataflow settles).
const WARM_UP: Duration = Duration::from_secs(2);
/// Readings per batch of the max run.
const MAX_BATCH: usize = 4_096;
/// How long a worker with nothing to do parks (it wakes when another worker sends it data).
const IDLE_PARK: Duration = Duration::from_micros(100);

/// Waits, stepping, until all `peers` workers have called this `round` times (a blocking
/// barrier would stop a worker whose dataflow another one still waits on).
fn meet(worker: &mut timely::worker::Worker, arrived: &AtomicUsize, round: usize) {
    let peers = worker.peers();
    arrived.fetch_add(1, Ordering::SeqCst);
    while arrived.load(Ordering::SeqCst) < round * peers {
        worker.step_or_park(Some(IDLE_PARK));
    }
}

/// Event time per round of [`ch4_value`]: a swinging sensor's 90 rounds take 9 s whatever the
/// rate, so the threshold rule (held 2 s) fires and resolves at every level alike.
const ROUND_MS: u64 = 100;

/// One worker's readings: its share of the sensors (every `peers`-th from `index`) in turn,
/// each reading [`ch4_value`] of the round its event time falls in.
struct Readings {
    sensors: Vec<usize>,
    next: usize,
    /// The event time of round 0.
    origin: Time,
}

impl Readings {
    fn new(sensors: usize, index: usize, peers: usize, origin: Time) -> Self {
        Readings {
            sensors: (index..sensors).step_by(peers).collect(),
            next: 0,
            origin,
        }
    }

    /// The next reading at `time`: encoded as a device sends it, then decoded as the engine
    /// reads it.
    fn next(&mut self, time: Time) -> Option<(ReadingRow, Time)> {
        let sensor = *self.sensors.get(self.next % self.sensors.len().max(1))?;
        self.next = self.next.wrapping_add(1);
        let value = ch4_value(sensor, time.saturating_sub(self.origin) / ROUND_MS);
        let message = format!(
            r#"{{"sensor":"{}","ts":{time},"metric":"ch4","value":{value}}}"#,
            sensor_id(sensor)
        );
        let reading = decode_mine_reading(message.as_bytes()).ok()?;
        let row = (
            (reading.domain, reading.entity),
            (reading.metric, OrderedFloat(reading.value)),
        );
        Some((row, reading.time))
    }
}

/// Transition latencies of one level, microseconds: all, and per rule (in order of first
/// transition).
struct Latencies {
    all: Histogram<u64>,
    by_rule: Vec<(String, Histogram<u64>)>,
}

impl Default for Latencies {
    fn default() -> Self {
        Latencies {
            all: Histogram::new(3).expect("histogram"),
            by_rule: Vec::new(),
        }
    }
}

impl Latencies {
    fn record(&mut self, rule: &str, latency_us: u64) {
        let latency_us = latency_us.max(1);
        let _ = self.all.record(latency_us);
        let slot = match self.by_rule.iter().position(|(r, _)| r == rule) {
            Some(slot) => slot,
            None => {
                let histogram = Histogram::new(3).expect("histogram");
                self.by_rule.push((rule.to_string(), histogram));
                self.by_rule.len() - 1
            }
        };
        let _ = self.by_rule[slot].1.record(latency_us);
    }

    fn add(&mut self, other: &Latencies) {
        self.all
            .add(&other.all)
            .expect("histograms of one precision");
        for (rule, histogram) in &other.by_rule {
            match self.by_rule.iter_mut().find(|(r, _)| r == rule) {
                Some((_, mine)) => mine.add(histogram).expect("histograms of one precision"),
                None => self.by_rule.push((rule.clone(), histogram.clone())),
            }
        }
    }
}

/// `p50 / p99 / p99.9 / max (count)` of a histogram of microseconds, in milliseconds.
fn summary(histogram: &Histogram<u64>) -> String {
    let ms = |us: u64| us as f64 / 1_000.0;
    format!(
        "p50 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms, max {:.2} ms ({} transitions)",
        ms(histogram.value_at_quantile(0.5)),
        ms(histogram.value_at_quantile(0.99)),
        ms(histogram.value_at_quantile(0.999)),
        ms(histogram.max()),
        histogram.len()
    )
}

/// What one worker measured: readings per second of the max run (its share), and per level
/// (readings sent, latencies).
type WorkerResult = (f64, Vec<(u64, Latencies)>);

/// Runs the max run and the paced levels of `pipeline` on `workers` workers, the engine with
/// `extra_rules` besides the workload's two.
fn run(
    pipeline: Pipeline,
    extra_rules: Vec<RuleRow>,
    workers: usize,
    sensors: usize,
    max_run: Duration,
    level_run: Duration,
    fixed_max: Option<f64>,
) -> (f64, Vec<(u64, Latencies)>) {
    let workload = Workload {
        sensors,
        batch: sensors,
        events: sensors,
    };
    let registry = Arc::new(workload.registry());
    let arrived = Arc::new(AtomicUsize::new(0));
    let origin = now_us() / 1_000;
    // The max the levels are fractions of: the sum of the workers' max rates, published by
    // each worker before the levels start.
    let maxes = Arc::new(std::sync::Mutex::new(Vec::<f64>::new()));
    let guards = timely::execute(timely::Config::process(workers), move |worker| {
        let (index, peers) = (worker.index(), worker.peers());
        // Every transition this worker emits while a level is measured, per rule.
        let latencies: Rc<RefCell<Option<Latencies>>> = Rc::new(RefCell::new(None));
        let sink = Rc::clone(&latencies);
        let mut handles = build_watched(worker, pipeline, false, move |rule, time| {
            if let Some(latencies) = sink.borrow_mut().as_mut() {
                latencies.record(rule, now_us().saturating_sub(time * 1_000));
            }
        });
        let (registry, rules) = if index == 0 {
            let mut rules = engine_rules();
            if pipeline == Pipeline::Engine {
                rules.extend(extra_rules.iter().cloned());
            }
            (registry.as_slice(), rules)
        } else {
            (&[][..], Vec::new())
        };
        load(worker, &mut handles, registry, &rules);
        let mut readings = Readings::new(sensors, index, peers, origin);
        meet(worker, &arrived, 1);

        // Max: batches at the wall clock's millisecond, one in flight.
        let start = Instant::now();
        let mut sent = 0u64;
        let mut settled: Time = 0;
        while start.elapsed() < max_run {
            let time = now_us() / 1_000;
            let time = time.max(*handles.readings.time());
            handles.readings.advance_to(time);
            for _ in 0..MAX_BATCH {
                if let Some((row, at)) = readings.next(time) {
                    handles.readings.update_at(row, at.max(time), 1);
                    sent += 1;
                }
            }
            handles.readings.advance_to(time + 1);
            handles.readings.flush();
            while handles.probe.less_than(&settled) {
                // The other workers' batches wait on this worker's input frontier too: it
                // moves on with the clock (nothing more comes before it).
                let now = (now_us() / 1_000).max(*handles.readings.time());
                handles.readings.advance_to(now);
                handles.readings.flush();
                worker.step_or_park(Some(IDLE_PARK));
            }
            settled = time + 1;
        }
        let own_max = sent as f64 / start.elapsed().as_secs_f64();
        if let Ok(mut all) = maxes.lock() {
            all.push(own_max);
        }
        meet(worker, &arrived, 2);
        let max = fixed_max.unwrap_or_else(|| maxes.lock().map_or(0.0, |m| m.iter().sum()));

        let mut levels = Vec::new();
        for (round, level) in (3..).zip(LEVELS) {
            let rate = max * level / peers as f64;
            let start = Instant::now();
            let mut sent = 0u64;
            let mut recording = false;
            while start.elapsed() < level_run {
                if !recording && start.elapsed() >= WARM_UP {
                    recording = true;
                    *latencies.borrow_mut() = Some(Latencies::default());
                }
                let time = (now_us() / 1_000).max(*handles.readings.time());
                // Everything before this millisecond is final.
                handles.readings.advance_to(time);
                let due = (start.elapsed().as_secs_f64() * rate) as u64;
                while sent < due {
                    if let Some((row, at)) = readings.next(time) {
                        handles.readings.update_at(row, at.max(time), 1);
                    }
                    sent += 1;
                }
                handles.readings.flush();
                worker.step_or_park(Some(IDLE_PARK));
            }
            levels.push((sent, latencies.borrow_mut().take().unwrap_or_default()));
            meet(worker, &arrived, round);
        }
        (own_max, levels)
    })
    .expect("timely workers start");
    let results: Vec<WorkerResult> = guards
        .join()
        .into_iter()
        .map(|r| r.expect("worker finishes"))
        .collect();
    let max = fixed_max.unwrap_or_else(|| results.iter().map(|r| r.0).sum());
    let mut levels: Vec<(u64, Latencies)> =
        LEVELS.iter().map(|_| (0, Latencies::default())).collect();
    for (_, worker_levels) in results {
        for ((sent, latencies), (total, merged)) in worker_levels.into_iter().zip(&mut levels) {
            *total += sent;
            merged.add(&latencies);
        }
    }
    (max, levels)
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!(
            "paced: the operators' event-time-to-alert latency without a broker; run it with `cargo bench -p citybrain-benches --bench paced`"
        );
        return;
    }
    let workers = env_or("PACED_WORKERS", 2).max(1);
    let sensors = env_or("PACED_SENSORS", 10_000).max(workers);
    let max_run = Duration::from_secs(env_or("PACED_MAX_SECONDS", 5) as u64);
    let level_run = Duration::from_secs(env_or("PACED_SECONDS", 15) as u64);
    let fixed_max = std::env::var("PACED_MAX_RATE")
        .ok()
        .and_then(|v| v.parse::<f64>().ok());
    println!("paced: {workers} workers, {sensors} sensors");
    let only = std::env::var("PACED_PIPELINE").ok();
    let extra_rules = common::rules_named_by("PACED_RULES", "paced");
    if !extra_rules.is_empty() {
        println!("paced: the engine with {} more rule(s)", extra_rules.len());
    }
    for pipeline in [Pipeline::Engine, Pipeline::Floor] {
        if only.as_deref().is_some_and(|name| name != pipeline.name()) {
            continue;
        }
        let extra = extra_rules.clone();
        let (max, levels) = run(
            pipeline, extra, workers, sensors, max_run, level_run, fixed_max,
        );
        println!(
            "paced: {}: max (bytes to alerts, one batch of {MAX_BATCH} in flight): {max:.0} readings/s",
            pipeline.name()
        );
        for (level, (sent, latencies)) in LEVELS.iter().zip(levels) {
            println!(
                "paced: {}: {:.0}% = {:.0}/s ({sent} readings): {}",
                pipeline.name(),
                level * 100.0,
                max * level,
                summary(&latencies.all)
            );
            for (rule, histogram) in &latencies.by_rule {
                println!("paced:     {rule}: {}", summary(histogram));
            }
        }
    }
}
