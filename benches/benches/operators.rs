//! Throughput of citybrain's rule operators against the hand-written timely + differential
//! floor on the same events (`operators`; with `--features dbsp` also against the same rules in
//! Feldera's DBSP), and of decoding wire JSON plus the operators on two
//! workers (`bytes_to_alerts`). See `benches/README.md` for the workload and the results.
#![allow(missing_docs)]
// criterion_group! generates undocumented items
// A bench whose setup fails should stop loudly rather than report numbers of nothing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

#[cfg(feature = "dbsp")]
use citybrain_benches::dbsp_peer::{DbspPeer, DbspReading, convert};
use citybrain_benches::pipeline::{Pipeline, build, feed_batch, finish, load};
use citybrain_benches::workload::{Workload, engine_rules};
use citybrain_operators::{ReadingRow, RegistryRow, Time};
use criterion::{
    BenchmarkId, Criterion, SamplingMode, Throughput, criterion_group, criterion_main,
};

#[path = "common/bytes.rs"]
mod bytes;
use bytes::{Topology, timed_bytes_run};

/// The engine binary's allocator (`engine/src/main.rs`): both pipelines run on what the engine
/// runs on. With glibc's malloc, rows allocated on one worker and freed on another (after an
/// exchange) contend for the first worker's arena.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Readings per measured run: 100 s of event time at 1k sensors, 10 s at 10k, one reading per
/// sensor at 100k; few enough that the engine's slowest run stays within seconds.
const EVENTS: usize = 100_000;

/// (sensors, readings per batch, each reading at a millisecond of its own) of the operator
/// benches. Not spread, a batch's readings share one logical time, as the sensors' clocks were
/// aligned; spread, the readings of a batch cover its second of event time one millisecond
/// apart, as a backlog of sensors with their own clocks arrives (each distinct time costs
/// every frontier-driven operator some bookkeeping).
const SHAPES: [(usize, usize, bool); 5] = [
    (1_000, 1_000, false),
    (1_000, 1_000, true),
    (10_000, 1_000, false),
    (10_000, 10_000, false),
    (100_000, 10_000, false),
];

type Batches = Vec<(Time, Vec<(ReadingRow, Time)>)>;

fn timed_run(
    pipeline: Pipeline,
    registry: Arc<Vec<RegistryRow>>,
    batches: Arc<Batches>,
) -> Duration {
    timely::execute_directly(move |worker| {
        let mut handles = build(worker, pipeline, false);
        load(worker, &mut handles, &registry, &engine_rules());
        let batches: Batches = (*batches).clone();
        let start = Instant::now();
        for (time, rows) in batches {
            feed_batch(worker, &mut handles, time, rows);
        }
        drop(finish(worker, handles));
        start.elapsed()
    })
}

/// One run of the DBSP peer on one DBSP worker: starts the circuit and loads the registry
/// untimed, then times feeding every batch (one transaction each) and the last transaction.
#[cfg(feature = "dbsp")]
fn timed_dbsp_run(registry: &[RegistryRow], batches: &[(Time, Vec<DbspReading>)]) -> Duration {
    let mut peer = DbspPeer::start(1, false).expect("the DBSP circuit starts");
    peer.load(registry).expect("the registry loads");
    let batches = batches.to_vec();
    let start = Instant::now();
    for (time, readings) in batches {
        peer.feed(time, readings).expect("a transaction runs");
    }
    peer.finish().expect("the last transaction runs");
    start.elapsed()
}

fn operators(c: &mut Criterion) {
    let mut group = c.benchmark_group("operators");
    group
        .sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(8));
    for (sensors, batch, spread) in SHAPES {
        let workload = Workload {
            sensors,
            batch,
            events: EVENTS,
        };
        let registry = Arc::new(workload.registry());
        let batches = Arc::new(workload.timed_batches(spread));
        group.throughput(Throughput::Elements(workload.events as u64));
        let spread_name = if spread { "_spread" } else { "" };
        let shape = format!(
            "{}k_sensors/{}k_batch{spread_name}",
            sensors / 1_000,
            batch / 1_000
        );
        for pipeline in [Pipeline::Engine, Pipeline::Floor] {
            group.bench_function(BenchmarkId::new(pipeline.name(), &shape), |b| {
                b.iter_custom(|iters| {
                    (0..iters)
                        .map(|_| timed_run(pipeline, Arc::clone(&registry), Arc::clone(&batches)))
                        .sum()
                })
            });
        }
        // The DBSP peer takes each batch at one time.
        #[cfg(feature = "dbsp")]
        if !spread {
            let converted: Vec<(Time, Vec<DbspReading>)> = workload
                .batches()
                .iter()
                .map(|(time, rows)| (*time, convert(rows, *time)))
                .collect();
            group.bench_function(BenchmarkId::new("dbsp", &shape), |b| {
                b.iter_custom(|iters| {
                    (0..iters)
                        .map(|_| timed_dbsp_run(&registry, &converted))
                        .sum()
                })
            });
        }
    }
    group.finish();
}

fn bytes_to_alerts(c: &mut Criterion) {
    let workload = Workload {
        sensors: 10_000,
        batch: 10_000,
        events: EVENTS,
    };
    let registry = Arc::new(workload.registry());
    let messages = Arc::new(workload.messages());
    let mut group = c.benchmark_group("bytes_to_alerts");
    group
        .sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(8))
        .throughput(Throughput::Elements(workload.events as u64));
    for pipeline in [Pipeline::Engine, Pipeline::Floor] {
        for topology in [
            Topology::Threads(1),
            Topology::Threads(2),
            Topology::Processes(2),
        ] {
            let id = BenchmarkId::new(
                pipeline.name(),
                format!("10k_sensors/10k_batch/{}", topology.name()),
            );
            group.bench_function(id, |b| {
                b.iter_custom(|iters| {
                    (0..iters)
                        .map(|_| {
                            timed_bytes_run(
                                pipeline,
                                topology,
                                Arc::clone(&registry),
                                Arc::clone(&messages),
                                1,
                            )
                        })
                        .sum()
                })
            });
        }
    }
    group.finish();
}

criterion_group!(benches, operators, bytes_to_alerts);
criterion_main!(benches);
