//! Building and driving the two pipelines the benches compare, the way the engine drives its
//! dataflow: readings through an `InputSession` at their event time, the input advanced past
//! each batch, the worker stepped until the probe on the alerts passes it.

use std::cell::RefCell;
use std::rc::Rc;

use citybrain_model::{AlertTransition, TransitionState};
use citybrain_operators::report_state::ReportEventRow;
use citybrain_operators::rule::RuleRow;
use citybrain_operators::{Diff, ReadingRow, RegistryRow, Time, rule_alerts};
use differential_dataflow::input::{Input, InputSession};
use timely::dataflow::ProbeHandle;
use timely::dataflow::operators::{Inspect, Probe};
use timely::worker::Worker;

use crate::floor::{FloorAlarm, FloorRules, FloorTransition, floor_alerts};
use crate::workload::{self, START};

/// Which dataflow computes the alerts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pipeline {
    /// citybrain's operators: [`rule_alerts`] over the workload's rules as data.
    Engine,
    /// The hand-written floor ([`crate::floor`]).
    Floor,
}

impl Pipeline {
    /// Short name for bench ids.
    pub fn name(self) -> &'static str {
        match self {
            Pipeline::Engine => "engine",
            Pipeline::Floor => "floor",
        }
    }
}

/// What identifies a transition across both pipelines: (rule, entity, state, event time).
pub type TransitionKey = (String, String, TransitionState, Time);

/// The transitions one worker saw, in arrival order.
pub type Seen = Rc<RefCell<Vec<TransitionKey>>>;

/// One worker's handles on a built pipeline.
pub struct Handles {
    /// Readings, each `+1` at its event time.
    pub readings: InputSession<Time, ReadingRow, Diff>,
    /// Reference data, until [`load`] closes it.
    pub registry: Option<InputSession<Time, RegistryRow, Diff>>,
    /// Rule rows (only the engine reads them; the floor's rules are constants), until [`load`]
    /// closes them.
    pub rules: Option<InputSession<Time, RuleRow, Diff>>,
    /// Probe on the alert transitions.
    pub probe: ProbeHandle<Time>,
    /// Transitions seen by this worker (collected only when asked for).
    pub seen: Seen,
}

/// The floor's rules, with the same levels as [`workload::engine_rules`].
pub fn floor_rules() -> FloorRules {
    FloorRules {
        scope: (workload::SCOPE.0.into(), workload::SCOPE.1.into()),
        threshold: FloorAlarm {
            id: workload::THRESHOLD_RULE.into(),
            threshold: workload::THRESHOLD,
            clear: workload::THRESHOLD_CLEAR,
            hold_ms: workload::HOLD_MS,
        },
        window: FloorAlarm {
            id: workload::WINDOW_RULE.into(),
            threshold: workload::WINDOW_THRESHOLD,
            clear: workload::WINDOW_CLEAR,
            hold_ms: 0,
        },
        window_ms: workload::WINDOW_MS,
    }
}

/// Builds `pipeline` in `worker`. With `collect`, every transition's key is kept in
/// [`Handles::seen`]; otherwise nothing is kept (benches skip the bookkeeping).
pub fn build(worker: &mut Worker, pipeline: Pipeline, collect: bool) -> Handles {
    build_watched(worker, pipeline, collect, |_, _| {})
}

/// [`build`], calling `emitted` with each transition's rule and event time when the dataflow
/// emits it (the paced bench's latency).
pub fn build_watched(
    worker: &mut Worker,
    pipeline: Pipeline,
    collect: bool,
    emitted: impl Fn(&str, Time) + 'static,
) -> Handles {
    let seen: Seen = Rc::new(RefCell::new(Vec::new()));
    let sink = Rc::clone(&seen);
    worker.dataflow::<Time, _, _>(|scope| {
        let (readings_input, readings) = scope.new_collection::<ReadingRow, Diff>();
        let (registry_input, registry) = scope.new_collection::<RegistryRow, Diff>();
        let (rules_input, rules) = scope.new_collection::<RuleRow, Diff>();
        let probe = match pipeline {
            Pipeline::Engine => {
                let (_, reports) = scope.new_collection::<ReportEventRow, Diff>();
                rule_alerts(readings, registry, reports, rules)
                    .inspect(move |t: &AlertTransition| {
                        emitted(&t.rule, t.event_time);
                        if collect {
                            let key = (t.rule.clone(), t.entity.clone(), t.state, t.event_time);
                            sink.borrow_mut().push(key);
                        }
                    })
                    .probe()
                    .0
            }
            Pipeline::Floor => {
                drop(rules);
                floor_alerts(readings, registry, floor_rules())
                    .inspect(move |t: &FloorTransition| {
                        emitted(&t.rule, t.time);
                        if collect {
                            let key = (t.rule.clone(), t.entity.clone(), t.state, t.time);
                            sink.borrow_mut().push(key);
                        }
                    })
                    .probe()
                    .0
            }
        };
        Handles {
            readings: readings_input,
            registry: Some(registry_input),
            rules: Some(rules_input),
            probe,
            seen,
        }
    })
}

/// Loads the registry and the rules at time 0 (on this worker; give other workers empty
/// slices), closes those inputs (dropping an input closes it), and runs until the readings can start at [`START`].
pub fn load(
    worker: &mut Worker,
    handles: &mut Handles,
    registry: &[RegistryRow],
    rules: &[RuleRow],
) {
    if let Some(mut input) = handles.registry.take() {
        for row in registry {
            input.insert(row.clone());
        }
    }
    if let Some(mut input) = handles.rules.take() {
        for rule in rules {
            input.insert(rule.clone());
        }
    }
    handles.readings.advance_to(START);
    handles.readings.flush();
    while handles.probe.less_than(&START) {
        step(worker);
    }
}

/// Feeds one batch of readings, each at its event time (`time` or later), advances the input
/// past `time` and steps the worker until every alert up to `time` is out.
pub fn feed_batch(
    worker: &mut Worker,
    handles: &mut Handles,
    time: Time,
    rows: impl IntoIterator<Item = (ReadingRow, Time)>,
) {
    let next = time.saturating_add(1);
    feed_batch_ahead(worker, handles, time, rows, next);
}

/// [`feed_batch`] with batches in flight: steps the worker only until every alert before
/// `settled` is out (e.g. the previous batch's), as the engine keeps reading while its dataflow
/// works, so the workers' exchanges of one batch overlap with the next.
pub fn feed_batch_ahead(
    worker: &mut Worker,
    handles: &mut Handles,
    time: Time,
    rows: impl IntoIterator<Item = (ReadingRow, Time)>,
    settled: Time,
) {
    handles.readings.advance_to(time);
    for (row, at) in rows {
        handles.readings.update_at(row, at.max(time), 1);
    }
    handles.readings.advance_to(time.saturating_add(1));
    handles.readings.flush();
    while handles.probe.less_than(&settled) {
        step(worker);
    }
}

/// One step of the worker, parking up to a millisecond when it has nothing to do, as the
/// engine's worker loop does: a worker waiting for another's data then leaves the core to it
/// instead of spinning on the shared channels.
fn step(worker: &mut Worker) {
    worker.step_or_park(Some(std::time::Duration::from_millis(1)));
}

/// Closes the readings and runs until the dataflow is done (open windows are evaluated);
/// returns what this worker saw.
pub fn finish(worker: &mut Worker, handles: Handles) -> Seen {
    let Handles {
        readings,
        probe,
        seen,
        ..
    } = handles;
    drop(readings);
    while !probe.done() {
        step(worker);
    }
    seen
}

/// Runs `pipeline` over `workload` on one worker; returns every transition's key, sorted.
pub fn run_single(pipeline: Pipeline, workload: workload::Workload) -> Vec<TransitionKey> {
    timely::execute_directly(move |worker| {
        let mut handles = build(worker, pipeline, true);
        load(
            worker,
            &mut handles,
            &workload.registry(),
            &workload::engine_rules(),
        );
        for (time, rows) in workload.batches() {
            feed_batch(
                worker,
                &mut handles,
                time,
                rows.into_iter().map(|row| (row, time)),
            );
        }
        let seen = finish(worker, handles);
        let mut keys = seen.take();
        keys.sort();
        keys
    })
}

/// The small run the pipeline comparisons share: 40 sensors, 20 per batch (several batches per
/// second of event time), 200 s; it raises and resolves both rules.
#[cfg(test)]
pub(crate) const SMALL_RUN: workload::Workload = workload::Workload {
    sensors: 40,
    batch: 20,
    events: 40 * 200,
};

/// Panics unless `keys` hold a firing and a resolved transition of both rules: two runs in
/// which nothing happens would compare equal and prove nothing.
#[cfg(test)]
pub(crate) fn assert_both_rules_fire_and_resolve(keys: &[TransitionKey]) {
    for rule in [workload::THRESHOLD_RULE, workload::WINDOW_RULE] {
        for state in [TransitionState::Firing, TransitionState::Resolved] {
            assert!(
                keys.iter().any(|k| k.0 == rule && k.2 == state),
                "{rule} {state:?} never happens"
            );
        }
    }
}
