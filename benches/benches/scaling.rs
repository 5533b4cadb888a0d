//! One worker to two, measured interleaved: the `bytes_to_alerts` workload (wire JSON decoded
//! and run through the two rules, 10k sensors, 10k readings per batch, by default one batch in
//! flight) on one worker, on two worker threads and on two processes of one worker, for the
//! engine and the hand-written floor, one run of each in turn per round. Criterion measures one
//! configuration after the other, so on a shared host whose speed drifts within a minute the
//! ratio of two of its figures holds the drift; here both sides of a round's ratio ran within
//! a second of each other, and the median of the rounds' ratios is reported.
//!
//! `cargo bench -p citybrain-benches --bench scaling -- [ROUNDS] [EVENTS] [IN_FLIGHT]`
//! (defaults 20, 100000 and 1, as `bytes_to_alerts`); a first round warms up and is not
//! counted. `IN_FLIGHT` batches may wait for their alerts at once: the engine's worker loop
//! does not wait for one batch's alerts before it reads the next, so more than one is how the
//! engine runs.

// A bench binary's report is its output; one whose setup fails should stop loudly rather than
// report numbers of nothing.
#![allow(clippy::print_stdout, clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use citybrain_benches::pipeline::Pipeline;
use citybrain_benches::workload::Workload;

#[path = "common/bytes.rs"]
mod bytes;
use bytes::{Topology, timed_bytes_run};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const TOPOLOGIES: [Topology; 3] = [
    Topology::Threads(1),
    Topology::Threads(2),
    Topology::Processes(2),
];
const PIPELINES: [Pipeline; 2] = [Pipeline::Engine, Pipeline::Floor];

fn main() {
    // Criterion's flags (`--bench`) come along with `cargo bench`: only numbers count.
    let mut numbers = std::env::args()
        .skip(1)
        .filter_map(|arg| arg.parse::<usize>().ok());
    let rounds = numbers.next().unwrap_or(20).max(1);
    let events = numbers.next().unwrap_or(100_000);
    let in_flight = numbers.next().unwrap_or(1).max(1);
    let workload = Workload {
        sensors: 10_000,
        batch: 10_000,
        events,
    };
    let registry = Arc::new(workload.registry());
    let messages = Arc::new(workload.messages());
    // Per (pipeline, topology): each counted round's time.
    let mut times = vec![vec![Vec::new(); TOPOLOGIES.len()]; PIPELINES.len()];
    for round in 0..=rounds {
        for (p, pipeline) in PIPELINES.into_iter().enumerate() {
            for (t, topology) in TOPOLOGIES.into_iter().enumerate() {
                let registry = Arc::clone(&registry);
                let messages = Arc::clone(&messages);
                let elapsed = timed_bytes_run(pipeline, topology, registry, messages, in_flight);
                if round > 0 {
                    times[p][t].push(elapsed);
                }
            }
        }
    }
    println!(
        "{} sensors, {} per batch, {} readings, {in_flight} batch(es) in flight; {rounds} rounds \
         (median):",
        workload.sensors, workload.batch, workload.events
    );
    let [one, threads, processes] = TOPOLOGIES.map(Topology::name);
    println!(
        "| pipeline | {one} ms | {threads} ms | {processes} ms | {one} -> {threads} | {one} -> {processes} | {processes} speed / {threads} |"
    );
    println!("|---|---|---|---|---|---|---|");
    for (p, pipeline) in PIPELINES.into_iter().enumerate() {
        let [one, threads, processes] = [0, 1, 2].map(|t| times[p][t].as_slice());
        println!(
            "| {} | {:.1} | {:.1} | {:.1} | {:.2}x | {:.2}x | {:.2}x |",
            pipeline.name(),
            median_ms(one),
            median_ms(threads),
            median_ms(processes),
            median_ratio(one, threads),
            median_ratio(one, processes),
            median_ratio(threads, processes),
        );
    }
}

/// The median of `times`, ms.
fn median_ms(times: &[Duration]) -> f64 {
    median(times.iter().map(|t| t.as_secs_f64() * 1e3).collect())
}

/// The median over the rounds of `before[i] / after[i]`: how many times faster `after` ran.
fn median_ratio(before: &[Duration], after: &[Duration]) -> f64 {
    let ratios = before
        .iter()
        .zip(after)
        .map(|(b, a)| b.as_secs_f64() / a.as_secs_f64().max(f64::MIN_POSITIVE))
        .collect();
    median(ratios)
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    match values.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => values[n / 2],
        n => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}
