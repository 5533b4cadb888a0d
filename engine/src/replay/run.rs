//! Driving the engine's dataflow over recorded events, as fast as it goes.
//!
//! The inputs are merged by event time (each input in its own file order, like partitions of a
//! topic) into a [`Schedule`] built once: every event with the watermarks after it, decided the
//! way the live source decides them (per clock, the newest event time less the domain's allowed
//! lateness), so out-of-order data beyond the lateness is dead-lettered as `late` exactly as it
//! would be live. A run feeds the schedule into [`crate::dataflow::build`], the same dataflow
//! `citybrain run` builds, with a given rule set; runs of several rule sets over one schedule
//! see identical input. Replay ends at the newest event time: timers due later (a sensor that
//! would fall silent, a report deadline) do not fire.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, VecDeque};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use citybrain_connectors::dead_letter::DeadLetter;
use citybrain_model::{AlertTransition, DeadLetterReason, Domain, EntityInfo, RegistryUpdate};
use citybrain_operators::hysteresis::FiringSeed;
use citybrain_operators::kpi::KpiDef;
use citybrain_operators::ordered_float::OrderedFloat;
use citybrain_operators::reference::sort_transitions;
use citybrain_operators::rule::RuleRow;
use citybrain_operators::{EntityKey, Time};

use super::input::{LoadedInput, ReplayEvent};
use crate::dataflow::{Output, clock_of};
use crate::kpi::{KpiClock, KpiSnapshot, KpiStores};

/// Events fed between two advances of the inputs.
const CHUNK: usize = 4096;

/// Chunks fed before the worker waits for the oldest of them to come out of the dataflow:
/// waiting for each chunk before feeding the next left the workers idle in turn (every operator
/// drained before the input moved on); a few in flight keep them busy while memory stays
/// bounded.
const CHUNKS_IN_FLIGHT: usize = 4;

/// How a replay runs.
#[derive(Clone, Debug)]
pub struct ReplaySettings {
    /// Timely worker threads.
    pub workers: usize,
    /// The KPIs to maintain.
    pub kpis: Vec<KpiDef>,
    /// Allowed lateness per domain: mine, farm, citizen.
    pub lateness: [Duration; 3],
    /// How long reports are remembered after their last event (`[recovery]`; the rules'
    /// longest deadline when longer).
    pub recovery: crate::config::RecoveryConfig,
}

/// One chunk of the schedule: events in feeding order, then the watermarks of the sensor and the
/// citizen clock.
struct Step {
    events: Vec<ReplayEvent>,
    watermarks: [Time; 2],
}

/// The merged inputs, ready to feed any number of runs.
pub struct Schedule {
    /// Reference data as the inputs leave it (the last record per key wins).
    registry: Vec<(EntityKey, EntityInfo)>,
    steps: Vec<Step>,
    /// Unusable lines and rows, and events behind the watermark.
    pub dead_letters: Vec<DeadLetter>,
    /// Events fed (not counting dead letters).
    pub events: u64,
    /// Empty value cells in mapped files.
    pub empty_cells: u64,
    /// Where replay ends: one past the newest event time.
    pub end: Time,
}

fn clock_of_domain(domain: Domain) -> usize {
    match domain {
        Domain::Citizen => KpiClock::Citizen as usize,
        Domain::Mine | Domain::Farm => KpiClock::Sensors as usize,
    }
}

fn domain_of(event: &ReplayEvent) -> Domain {
    match event {
        ReplayEvent::Reading(r) => r.domain,
        ReplayEvent::Report(_) => Domain::Citizen,
    }
}

impl Schedule {
    /// Merges the streams of `inputs` by event time, keeping each stream's own order.
    pub fn build(inputs: Vec<LoadedInput>, lateness: [Duration; 3]) -> Schedule {
        let lateness_ms = lateness.map(|l| u64::try_from(l.as_millis()).unwrap_or(u64::MAX));
        let mut registry: BTreeMap<EntityKey, Option<EntityInfo>> = BTreeMap::new();
        let mut dead_letters = Vec::new();
        let mut empty_cells = 0;
        let mut names = Vec::new();
        let mut queues = Vec::new();
        for input in inputs {
            for RegistryUpdate { kind, key, info } in input.registry {
                registry.insert((kind.domain(), key), info);
            }
            dead_letters.extend(input.dead_letters);
            empty_cells += input.empty_cells;
            for stream in input.streams {
                names.push(input.name.clone());
                queues.push(
                    stream
                        .into_iter()
                        .enumerate()
                        .collect::<Vec<_>>()
                        .into_iter(),
                );
            }
        }
        // The head of each input, smallest event time first (ties: the earlier input).
        let mut heads = BinaryHeap::new();
        let mut pending: Vec<Option<(usize, ReplayEvent)>> = Vec::new();
        for (input, queue) in queues.iter_mut().enumerate() {
            let head = queue.next();
            if let Some((_, event)) = &head {
                heads.push(Reverse((event.time(), input)));
            }
            pending.push(head);
        }
        let mut watermarks: [Time; 2] = [0, 0];
        let mut newest: Option<Time> = None;
        let mut steps = Vec::new();
        let mut chunk = Vec::with_capacity(CHUNK);
        let mut events = 0;
        while let Some(Reverse((_, input))) = heads.pop() {
            let Some((index, event)) = pending[input].take() else {
                continue;
            };
            let next = queues[input].next();
            if let Some((_, next_event)) = &next {
                heads.push(Reverse((next_event.time(), input)));
            }
            pending[input] = next;
            let domain = domain_of(&event);
            let clock = clock_of_domain(domain);
            let time = event.time();
            if time < watermarks[clock] {
                dead_letters.push(late_letter(&names[input], index, &event, watermarks[clock]));
                continue;
            }
            let allowed = lateness_ms[match domain {
                Domain::Mine => 0,
                Domain::Farm => 1,
                Domain::Citizen => 2,
            }];
            watermarks[clock] = watermarks[clock].max(time.saturating_sub(allowed));
            newest = Some(newest.map_or(time, |n| n.max(time)));
            chunk.push(event);
            events += 1;
            if chunk.len() == CHUNK {
                steps.push(Step {
                    events: std::mem::replace(&mut chunk, Vec::with_capacity(CHUNK)),
                    watermarks,
                });
            }
        }
        if !chunk.is_empty() {
            steps.push(Step {
                events: chunk,
                watermarks,
            });
        }
        Schedule {
            registry: registry
                .into_iter()
                .filter_map(|(key, info)| info.map(|info| (key, info)))
                .collect(),
            steps,
            dead_letters,
            events,
            empty_cells,
            end: newest.map_or(0, |n| n.saturating_add(1)),
        }
    }
}

fn late_letter(input: &str, index: usize, event: &ReplayEvent, watermark: Time) -> DeadLetter {
    let payload = match event {
        ReplayEvent::Reading(r) => serde_json::json!({
            "entity": r.entity, "ts": r.time, "metric": r.metric.as_str(), "value": r.value,
        }),
        ReplayEvent::Report(r) => serde_json::json!({
            "report": r.report, "ts": r.time, "kind": r.kind, "category": r.category,
            "grid": r.grid,
        }),
    };
    DeadLetter::new(
        DeadLetterReason::Late,
        format!(
            "event time {} is behind the watermark {watermark} (event {} of the input)",
            event.time(),
            index + 1
        ),
        input,
        0,
        i64::try_from(index + 1).unwrap_or(i64::MAX),
        None,
        payload.to_string().as_bytes(),
    )
}

/// What one run produced.
#[derive(Clone, Debug)]
pub struct ReplayRun {
    /// Every alert transition before the end, sorted by event time, rule, entity, state.
    pub transitions: Vec<AlertTransition>,
    /// The KPIs at the end.
    pub kpis: KpiSnapshot,
    /// Events of reports never created (dead letters `unknown_report`), as decoded.
    pub unknown_reports: Vec<DeadLetter>,
    /// Wall-clock time of the run.
    pub elapsed: Duration,
}

/// A run could not execute.
#[derive(Debug, thiserror::Error)]
#[error("replay: {0}")]
pub struct ReplayError(String);

impl ReplayError {
    /// An error saying `message`.
    pub fn new(message: impl Into<String>) -> Self {
        ReplayError(message.into())
    }
}

/// Runs `rules` over `schedule`; `progress` is told how many events were fed.
pub fn run(
    schedule: &Arc<Schedule>,
    settings: &ReplaySettings,
    rules: &[RuleRow],
    progress: &indicatif::ProgressBar,
) -> Result<ReplayRun, ReplayError> {
    let started = Instant::now();
    let (sender, receiver) = channel();
    let workers = settings.workers.max(1);
    let names = settings
        .kpis
        .iter()
        .map(|d| (d.name.clone(), clock_of(d)))
        .collect();
    let end = schedule.end;
    let collector = std::thread::Builder::new()
        .name("replay-outputs".into())
        .spawn(move || collect(receiver, KpiStores::new(1, names), end))
        .map_err(|e| ReplayError(e.to_string()))?;
    let shared = Arc::new(Mutex::new(sender));
    let schedule = Arc::clone(schedule);
    let kpis = settings.kpis.clone();
    let retention =
        crate::runtime::replay_history(&settings.recovery, rules)[KpiClock::Citizen as usize];
    let rules = rules.to_vec();
    let progress = progress.clone();
    let guards = timely::execute(timely::Config::process(workers), move |worker| {
        let sender: Sender<Output> = shared
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        feed(
            worker, &schedule, &kpis, retention, &rules, &sender, &progress,
        );
    })
    .map_err(ReplayError)?;
    for result in guards.join() {
        result.map_err(ReplayError)?;
    }
    let (transitions, kpis, unknown_reports) = collector
        .join()
        .map_err(|_| ReplayError("the output thread panicked".into()))?;
    Ok(ReplayRun {
        transitions,
        kpis,
        unknown_reports,
        elapsed: started.elapsed(),
    })
}

/// One worker's part: its share of every step, then the end.
fn feed(
    worker: &mut timely::worker::Worker,
    schedule: &Schedule,
    kpis: &[KpiDef],
    report_retention_ms: Time,
    rules: &[RuleRow],
    sender: &Sender<Output>,
    progress: &indicatif::ProgressBar,
) {
    let (mut inputs, probes) = crate::dataflow::build(
        worker,
        kpis,
        FiringSeed::default(),
        report_retention_ms,
        sender,
        worker.peers(),
    );
    let (index, peers) = (worker.index(), worker.peers());
    if index == 0 {
        for row in &schedule.registry {
            inputs.registry.insert(row.clone());
        }
        for rule in rules {
            inputs.rules.insert(rule.clone());
        }
    }
    let mut in_flight: VecDeque<[Time; 2]> = VecDeque::with_capacity(CHUNKS_IN_FLIGHT + 1);
    for step in &schedule.steps {
        for (i, event) in step.events.iter().enumerate() {
            if i % peers != index {
                continue;
            }
            match event {
                ReplayEvent::Reading(r) => inputs.readings.update_at(
                    (
                        (r.domain, r.entity.clone()),
                        (r.metric, OrderedFloat(r.value)),
                    ),
                    r.time,
                    1,
                ),
                ReplayEvent::Report(r) => inputs.reports.update_at(
                    (
                        r.report.clone(),
                        (r.kind, r.category.clone(), r.grid.clone(), r.unit.clone()),
                    ),
                    r.time,
                    1,
                ),
            }
        }
        in_flight.push_back(advance(&mut inputs, step.watermarks));
        if in_flight.len() > CHUNKS_IN_FLIGHT
            && let Some(oldest) = in_flight.pop_front()
        {
            wait_for(worker, &probes, oldest);
        }
        if index == 0 {
            progress.inc(step.events.len() as u64);
        }
    }
    let end = advance(&mut inputs, [schedule.end, schedule.end]);
    wait_for(worker, &probes, end);
    // Closing the inputs lets the dataflow finish; what it emits at or after the end (timers
    // due later) is left out by the collector.
}

/// Advances the inputs to the clocks' watermarks; returns the times they were advanced to.
fn advance(inputs: &mut crate::dataflow::Inputs, [sensors, citizen]: [Time; 2]) -> [Time; 2] {
    let readings = sensors.max(*inputs.readings.time());
    let reports = citizen.max(*inputs.reports.time());
    let newest = readings.max(reports).max(*inputs.registry.time());
    inputs.readings.advance_to(readings);
    inputs.partitions.advance_to(readings);
    inputs.reports.advance_to(reports);
    inputs.registry.advance_to(newest);
    inputs.rules.advance_to(newest);
    inputs.readings.flush();
    inputs.partitions.flush();
    inputs.reports.flush();
    inputs.registry.flush();
    inputs.rules.flush();
    [readings, reports]
}

/// Steps the worker until the outputs of both clocks caught up with `[readings, reports]`.
fn wait_for(
    worker: &mut timely::worker::Worker,
    [sensor_probe, citizen_probe, ..]: &[timely::dataflow::ProbeHandle<Time>; 5],
    [readings, reports]: [Time; 2],
) {
    while sensor_probe.less_than(&readings) || citizen_probe.less_than(&reports) {
        worker.step();
    }
}

/// Collects the outputs of a run: the transitions before `end`, the KPIs at `end`, and the
/// events of unknown reports as dead letters.
fn collect(
    receiver: Receiver<Output>,
    mut kpis: KpiStores,
    end: Time,
) -> (Vec<AlertTransition>, KpiSnapshot, Vec<DeadLetter>) {
    let mut transitions = Vec::new();
    let mut unknown = Vec::new();
    while let Ok(output) = receiver.recv() {
        match output {
            Output::Alert(t) if t.event_time < end => transitions.push(t),
            Output::UnknownReport(((report, (kind, category, grid, _)), time)) if time < end => {
                let payload = serde_json::json!({
                    "report": report, "ts": time, "kind": kind, "category": category, "grid": grid,
                });
                unknown.push(DeadLetter::new(
                    DeadLetterReason::UnknownReport,
                    format!("report `{report}` was never created: its event is not applied"),
                    "replay",
                    0,
                    0,
                    None,
                    payload.to_string().as_bytes(),
                ));
            }
            Output::KpiUpdates(clock, updates) => kpis.push(
                clock,
                updates
                    .into_iter()
                    .filter(|(_, time, _)| *time < end)
                    .map(|((key, value), time, diff)| (key, value.0, time, diff as i64))
                    .collect(),
            ),
            Output::KpiFrontier(clock, worker, time) => {
                kpis.frontier(clock, worker, time.min(end));
            }
            Output::Alert(_)
            | Output::BoardAlert(_)
            | Output::UnknownReport(_)
            | Output::DeadLetter(_)
            | Output::ReportOrigin(..)
            | Output::AlertFrontier(..) => {}
        }
    }
    sort_transitions(&mut transitions);
    (transitions, kpis.snapshot(), unknown)
}

#[cfg(test)]
mod tests {
    use citybrain_model::{Metric, Reading, ReportEvent, ReportKind};

    use super::*;

    fn reading(time: u64) -> ReplayEvent {
        ReplayEvent::Reading(Reading {
            domain: Domain::Mine,
            entity: "s".into(),
            metric: Metric::Ch4,
            value: 1.0,
            time,
        })
    }

    fn report(time: u64) -> ReplayEvent {
        ReplayEvent::Report(ReportEvent {
            report: "r".into(),
            time,
            kind: ReportKind::Created,
            category: "c".into(),
            grid: "g".into(),
            unit: None,
        })
    }

    fn input(streams: Vec<Vec<ReplayEvent>>) -> LoadedInput {
        LoadedInput {
            name: "in".into(),
            streams,
            ..LoadedInput::default()
        }
    }

    #[test]
    fn streams_merge_by_time_and_events_behind_their_clock_are_late() {
        let lateness = [
            Duration::from_millis(100),
            Duration::ZERO,
            Duration::from_secs(60),
        ];
        let schedule = Schedule::build(
            vec![
                // 1_150 arrives after 1_200 (within 100 ms: kept); 900 after 1_100 is late.
                input(vec![vec![
                    reading(1_000),
                    reading(1_200),
                    reading(1_150),
                    reading(1_300),
                ]]),
                input(vec![
                    vec![reading(1_100), reading(900)],
                    vec![report(500), report(2_000)],
                ]),
            ],
            lateness,
        );
        let fed: Vec<u64> = schedule
            .steps
            .iter()
            .flat_map(|s| s.events.iter().map(ReplayEvent::time))
            .collect();
        assert_eq!(fed, [500, 1_000, 1_100, 1_200, 1_150, 1_300, 2_000]);
        let late: Vec<(DeadLetterReason, &str, i64)> = schedule
            .dead_letters
            .iter()
            .map(|d| (d.reason, d.topic.as_str(), d.offset))
            .collect();
        assert_eq!(late, [(DeadLetterReason::Late, "in", 2)]);
        assert_eq!(schedule.events, 7);
        assert_eq!(schedule.end, 2_001);
        // Reports follow their own clock with their own lateness (a minute).
        assert_eq!(schedule.steps[0].watermarks, [1_200, 0]);
    }
}
