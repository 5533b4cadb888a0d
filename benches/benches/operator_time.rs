//! Where the engine's operator time goes, operator by operator: the operators bench's engine
//! pipeline on one worker, with timely's own scheduling log summed per operator (how often
//! it was scheduled and for how long). A profiler attributes inlined operator code to timely's
//! generic builder closures; this names each operator.
//!
//! `cargo bench -p citybrain-benches --bench operator_time -- [SENSORS] [BATCH] [EVENTS]`
//! (defaults 1000 1000 1000000). The log costs time of its own: read the shares, not the
//! throughput.

// A bench binary's report is its output.
#![allow(clippy::print_stdout)]

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::time::{Duration, Instant};

use citybrain_benches::pipeline::{self, Pipeline};
use citybrain_benches::workload::{self, Workload};
use timely::logging::{StartStop, TimelyEvent, TimelyEventBuilder};

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

fn main() {
    let workload = Workload {
        sensors: argument(0, 1_000),
        batch: argument(1, 1_000),
        events: argument(2, 1_000_000),
    };
    let (summary, elapsed) = timely::execute_directly(move |worker| {
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
        let registry = workload.registry();
        pipeline::load(worker, &mut handles, &registry, &workload::engine_rules());
        let batches = workload.batches();
        summary.borrow_mut().spent.clear();
        let start = Instant::now();
        for (time, rows) in batches {
            let rows = rows.into_iter().map(|row| (row, time));
            pipeline::feed_batch(worker, &mut handles, time, rows);
        }
        let fed = start.elapsed();
        // Closing the input ends every open window: part of what the criterion bench times.
        drop(pipeline::finish(worker, handles));
        let drained = start.elapsed() - fed;
        let summary = summary.take();
        (summary, (fed, drained))
    });
    let (fed, drained) = elapsed;
    let mut rows: Vec<(Duration, usize, String)> = summary
        .spent
        .iter()
        .filter_map(|(id, (runs, time))| {
            let name = summary.names.get(id)?;
            // The dataflow itself is scheduled around its operators: its time holds theirs.
            (!name.starts_with("Dataflow")).then(|| (*time, *runs, name.clone()))
        })
        .collect();
    rows.sort_by_key(|row| std::cmp::Reverse(row.0));
    let in_operators: Duration = rows.iter().map(|row| row.0).sum();
    println!(
        "{} sensors, {} per step, {} events: {:.0} ms wall feeding + {:.0} ms draining, \
         {:.0} ms in operators",
        workload.sensors,
        workload.batch,
        workload.events,
        fed.as_secs_f64() * 1e3,
        drained.as_secs_f64() * 1e3,
        in_operators.as_secs_f64() * 1e3,
    );
    println!("| operator [address] | scheduled | ms | share of operator time |");
    println!("|---|---|---|---|");
    for (time, runs, name) in rows.iter().filter(|row| row.0 >= in_operators / 200) {
        println!(
            "| {name} | {runs} | {:.1} | {:.1} % |",
            time.as_secs_f64() * 1e3,
            100.0 * time.as_secs_f64() / in_operators.as_secs_f64().max(f64::MIN_POSITIVE),
        );
    }
}
