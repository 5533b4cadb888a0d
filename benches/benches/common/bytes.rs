//! Decoding wire JSON and running the rules on it, with the workers laid out as threads of
//! one timely process or as processes of a cluster: the `bytes_to_alerts` group of the
//! operators bench and the `scaling` bench (a module of each, not a bench of its own).

use std::collections::VecDeque;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use citybrain_benches::pipeline::{Pipeline, build, feed_batch_ahead, finish, load};
use citybrain_benches::workload::engine_rules;
use citybrain_model::decode::decode_mine_reading;
use citybrain_operators::ordered_float::OrderedFloat;
use citybrain_operators::{RegistryRow, Time};

pub type Messages = Vec<(Time, Vec<Vec<u8>>)>;

/// How the workers of a run are laid out.
#[derive(Clone, Copy, Debug)]
pub enum Topology {
    /// One timely process with this many worker threads.
    Threads(usize),
    /// This many timely processes of one worker each, connected over TCP on 127.0.0.1 the way
    /// `citybrain run --processes` connects them (here each runs as a thread of the bench
    /// process, with its own communication layer: data between them is serialized).
    Processes(usize),
}

impl Topology {
    pub fn workers(self) -> usize {
        match self {
            Topology::Threads(n) | Topology::Processes(n) => n,
        }
    }

    pub fn name(self) -> String {
        match self {
            Topology::Threads(n) => format!("1x{n}"),
            Topology::Processes(n) => format!("{n}x1"),
        }
    }
}

/// `count` free TCP addresses on 127.0.0.1 for the timely processes to bind.
fn free_addresses(count: usize) -> Vec<String> {
    (0..count)
        .map(|_| format!("127.0.0.1:{}", citybrain_tests::free_port()))
        .collect()
}

/// One run of `pipeline` laid out as `topology`, fed wire JSON: each worker decodes every
/// `workers`-th message of each batch and feeds the readings, with up to `in_flight` batches
/// (at least one) whose alerts are not all out yet. Times from a barrier after the untimed
/// setup to the last worker done.
pub fn timed_bytes_run(
    pipeline: Pipeline,
    topology: Topology,
    registry: Arc<Vec<RegistryRow>>,
    messages: Arc<Messages>,
    in_flight: usize,
) -> Duration {
    let barrier = Arc::new(Barrier::new(topology.workers()));
    let work = move |worker: &mut timely::worker::Worker| {
        let (index, peers) = (worker.index(), worker.peers());
        let mut handles = build(worker, pipeline, false);
        let (registry, rules) = if index == 0 {
            (registry.as_slice(), engine_rules())
        } else {
            (&[][..], Vec::new())
        };
        load(worker, &mut handles, registry, &rules);
        barrier.wait();
        let start = Instant::now();
        // Each batch waits only for the alerts of the batch `in_flight` before it.
        let mut fed: VecDeque<Time> = VecDeque::new();
        for (time, batch) in messages.iter() {
            let readings = batch.iter().skip(index).step_by(peers).filter_map(|bytes| {
                let reading = decode_mine_reading(bytes).ok()?;
                let row = (
                    (reading.domain, reading.entity),
                    (reading.metric, OrderedFloat(reading.value)),
                );
                Some((row, reading.time))
            });
            fed.push_back(*time);
            let settled = if fed.len() > in_flight.max(1) {
                fed.pop_front().map_or(0, |t| t.saturating_add(1))
            } else {
                0
            };
            feed_batch_ahead(worker, &mut handles, *time, readings, settled);
        }
        drop(finish(worker, handles));
        start.elapsed()
    };
    let configs: Vec<timely::Config> = match topology {
        Topology::Threads(n) => vec![timely::Config::process(n)],
        Topology::Processes(n) => {
            let addresses = free_addresses(n);
            (0..n)
                .map(|process| timely::Config {
                    communication: timely::CommunicationConfig::Cluster {
                        threads: 1,
                        process,
                        addresses: addresses.clone(),
                        report: false,
                        zerocopy: false,
                    },
                    worker: timely::WorkerConfig::default(),
                })
                .collect()
        }
    };
    // Each process's `execute` waits for the others to connect: start them side by side.
    let processes: Vec<_> = configs
        .into_iter()
        .map(|config| {
            let work = work.clone();
            std::thread::spawn(move || {
                timely::execute(config, work)
                    .expect("timely workers start")
                    .join()
                    .into_iter()
                    .map(|elapsed| elapsed.expect("worker finishes"))
                    .max()
                    .unwrap_or_default()
            })
        })
        .collect();
    processes
        .into_iter()
        .map(|process| process.join().expect("process thread finishes"))
        .max()
        .unwrap_or_default()
}
