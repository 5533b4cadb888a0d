//! Where the engine's operator time goes, operator by operator: the operators bench's engine
//! pipeline on one or more workers, with timely's own scheduling log summed per operator (how often
//! it was scheduled and for how long). A profiler attributes inlined operator code to timely's
//! generic builder closures; this names each operator.
//!
//! `cargo bench -p citybrain-benches --bench operator_time -- [SENSORS] [BATCH] [EVENTS]
//! [WORKERS] [SPREAD]` (defaults 1000 1000 1000000 1 0). With several workers, each feeds its
//! share of every batch (the registry and rules enter on the first) and each operator's time
//! is given per worker. With `SPREAD` 1 a batch's readings are one millisecond apart instead
//! of at one time ([`Workload::timed_batches`]).
//! `OPERATOR_TIME_RULES=FILE[,FILE...]` adds the rules of those rule files (the engine's TOML,
//! paths relative to `benches/`) to the workload's two: `rules/absence.toml` adds a silence
//! rule (a deadline per reading), `rules/baseline.toml` a baseline (a mean over 5 minutes),
//! `../config/rules/mine.toml` the shipped mine rules. The log
//! costs time of its own: read the shares, not the throughput.

// A bench binary's report is its output.
#![allow(clippy::print_stdout)]

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::time::{Duration, Instant};

use citybrain_benches::pipeline::{self, Pipeline};
use citybrain_benches::workload::{self, Workload};
use timely::logging::{StartStop, TimelyEvent, TimelyEventBuilder};

mod common;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Per operator id: its name and address, how often it ran and for how long.
#[derive(Default)]
struct Summary {
    names: HashMap<usize, String>,
    started: HashMap<usize, Duration>,
    spent: HashMap<usize, (usize, Duration)>,
}

impl Summary {
    fn record(&mut self, at: Duration, event: &TimelyEvent) {
        match event {
            TimelyEvent::Operates(operates) => {
                let name = format!("{} {:?}", operates.name, operates.addr);
                self.names.insert(operates.id, name);
            }
            TimelyEvent::Schedule(schedule) if schedule.start_stop == StartStop::Start => {
                self.started.insert(schedule.id, at);
            }
            TimelyEvent::Schedule(schedule) => {
                if let Some(start) = self.started.remove(&schedule.id) {
                    let entry = self.spent.entry(schedule.id).or_default();
                    entry.0 += 1;
                    entry.1 += at.saturating_sub(start);
                }
            }
            _ => {}
        }
    }
}

fn argument(position: usize, default: usize) -> usize {
    // `cargo bench` passes `--bench`; only numbers are ours.
    std::env::args()
        .skip(1)
        .filter(|arg| !arg.starts_with('-'))
        .nth(position)
        .and_then(|arg| arg.parse().ok())
        .unwrap_or(default)
}

/// One worker's figures: per operator (time, schedules, name), and its wall time feeding and
/// draining.
type WorkerTimes = (Vec<(Duration, usize, String)>, (Duration, Duration));

fn main() {
    let workload = Workload {
        sensors: argument(0, 1_000),
        batch: argument(1, 1_000),
        events: argument(2, 1_000_000),
    };
    let workers = argument(3, 1).max(1);
    let spread = argument(4, 0) == 1;
    let extra_rules = common::rules_named_by("OPERATOR_TIME_RULES", "operator_time");
    let extra = extra_rules.len();
    let guards = timely::execute(timely::Config::process(workers), move |worker| {
        let (index, peers) = (worker.index(), worker.peers());
        let summary = Rc::new(RefCell::new(Summary::default()));
        let log = Rc::clone(&summary);
        if let Some(mut registry) = worker.log_register() {
            registry.insert::<TimelyEventBuilder, _>("timely", move |_, events| {
                for (at, event) in events.iter().flatten() {
                    log.borrow_mut().record(*at, event);
                }
            });
        }
        let mut handles = pipeline::build(worker, Pipeline::Engine, false);
        // Reference data and rules enter on the first worker, as from one Kafka partition.
        let (registry, rules) = if index == 0 {
            let mut rules = workload::engine_rules();
            rules.extend(extra_rules.iter().cloned());
            (workload.registry(), rules)
        } else {
            (Vec::new(), Vec::new())
        };
        pipeline::load(worker, &mut handles, &registry, &rules);
        let batches = workload.timed_batches(spread);
        summary.borrow_mut().spent.clear();
        let start = Instant::now();
        for (time, rows) in batches {
            // Each worker feeds its share of a batch, as each reads its own partitions.
            let rows = rows.into_iter().skip(index).step_by(peers);
            pipeline::feed_batch(worker, &mut handles, time, rows);
        }
        let fed = start.elapsed();
        // Closing the input ends every open window: part of what the criterion bench times.
        drop(pipeline::finish(worker, handles));
        let drained = start.elapsed() - fed;
        let summary = summary.take();
        let rows = summary
            .spent
            .iter()
            .filter_map(|(id, (runs, time))| {
                let name = summary.names.get(id)?;
                // The dataflow itself is scheduled around its operators: its time holds theirs.
                (!name.starts_with("Dataflow")).then(|| (*time, *runs, name.clone()))
            })
            .collect::<Vec<_>>();
        (rows, (fed, drained))
    });
    let per_worker: Vec<WorkerTimes> = match guards {
        Ok(guards) => guards.join().into_iter().filter_map(Result::ok).collect(),
        Err(error) => {
            eprintln!("operator_time: timely did not start: {error}");
            return;
        }
    };
    println!(
        "{} sensors, {} per step{}, {} events, {} worker(s){}:",
        workload.sensors,
        workload.batch,
        if spread { " (1 ms apart)" } else { "" },
        workload.events,
        workers,
        if extra > 0 {
            format!(", {extra} more rule(s)")
        } else {
            String::new()
        },
    );
    // Per operator name: (schedules of worker 0, time per worker).
    let mut operators: HashMap<String, (usize, Vec<Duration>)> = HashMap::new();
    for (index, (rows, (fed, drained))) in per_worker.iter().enumerate() {
        let in_operators: Duration = rows.iter().map(|row| row.0).sum();
        println!(
            "worker {index}: {:.0} ms wall feeding + {:.0} ms draining, {:.0} ms in operators",
            fed.as_secs_f64() * 1e3,
            drained.as_secs_f64() * 1e3,
            in_operators.as_secs_f64() * 1e3,
        );
        for (time, runs, name) in rows {
            let entry = operators
                .entry(name.clone())
                .or_insert_with(|| (*runs, vec![Duration::ZERO; per_worker.len()]));
            entry.1[index] = *time;
        }
    }
    let mut rows: Vec<(Duration, usize, String, Vec<Duration>)> = operators
        .into_iter()
        .map(|(name, (runs, times))| (times.iter().sum(), runs, name, times))
        .collect();
    rows.sort_by_key(|row| std::cmp::Reverse(row.0));
    let in_operators: Duration = rows.iter().map(|row| row.0).sum();
    let workers_ms: Vec<String> = (0..per_worker.len())
        .map(|index| format!("ms, worker {index}"))
        .collect();
    println!(
        "| operator [address] | scheduled | {} | share of operator time |",
        workers_ms.join(" | ")
    );
    println!("|---|---|{}---|", "---|".repeat(per_worker.len()));
    for (total, runs, name, times) in rows.iter().filter(|row| row.0 >= in_operators / 200) {
        let times: Vec<String> = times
            .iter()
            .map(|time| format!("{:.1}", time.as_secs_f64() * 1e3))
            .collect();
        println!(
            "| {name} | {runs} | {} | {:.1} % |",
            times.join(" | "),
            100.0 * total.as_secs_f64() / in_operators.as_secs_f64().max(f64::MIN_POSITIVE),
        );
    }
}
