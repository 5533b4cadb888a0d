//! The workload's two rules in Feldera's DBSP (`dbsp` 0.349), the peer the engine and the
//! hand-written floor are compared with (feature `dbsp`; it brings ~470 crates).
//!
//! Each batch of readings is one DBSP transaction. The circuit, written the way DBSP's own
//! operators allow:
//! - the registry is a Z-set of `(sensor, label, value)` rows; the sensors carrying the rules'
//!   scope label are indexed by sensor and joined (`join_generic`, incremental) with the
//!   readings, indexed by sensor;
//! - the threshold rule is a `chain_aggregate` per sensor (DBSP's O(1)-state fold for
//!   append-only input; it has no `for`/hysteresis operator) running the floor's state machine
//!   ([`advance`]);
//! - the window rule: `average` per `(window end, sensor)`, re-indexed by window end and passed
//!   through `window` with bounds `[0, waterline]`, so a window leaves once its end is reached
//!   (every reading before it is in, as batches come in time order); then the same fold over
//!   the window averages. The waterline (`waterline_monotonic`, the largest time on any
//!   worker) is taken over a clock relation the driver adds each batch's time to: an input
//!   stream's value would read as its default on a transaction's later steps.
//!
//! A state remembers the transition of the step that made it (`fresh`), so a transition is a
//! state with `fresh` set appearing in the output with weight +1.
//!
//! DBSP runs its own worker threads ([`Runtime::init_circuit`]); the caller's thread feeds them,
//! as in Feldera's pipelines.

use citybrain_model::{Domain, Metric, TransitionState};
use citybrain_operators::{ReadingRow, RegistryRow, Time};
use dbsp::algebra::F64;
use dbsp::dynamic::DynData;
use dbsp::typed_batch::IndexedZSetReader;
use dbsp::typed_batch::SpineSnapshot;
use dbsp::utils::{Tup2, Tup3, Tup5};
use dbsp::{
    DBSPHandle, IndexedZSetHandle, OrdIndexedZSet, OutputHandle, RootCircuit, Runtime, Stream,
    TypedBox, ZSetHandle,
};

use crate::floor::{Alarm, FloorAlarm, FloorRules, advance};
use crate::pipeline::{TransitionKey, floor_rules};

/// A reading as DBSP carries it: event time and value, indexed by sensor.
type ReadingValue = Tup2<u64, F64>;
/// A registry row: (sensor, label name, label value).
type LabelRow = Tup3<String, String, String>;
/// The state of one (rule, sensor): (alarm: 0 normal, 1 pending, 2 firing; pending since;
/// fresh transition of the step that made this state: 0 none, 1 firing, 2 resolved; its event
/// time; its value). Unchanged states compare equal, so a quiet sensor makes no output.
type State = Tup5<u8, u64, u8, u64, F64>;
/// The window bounds the circuit reads each step.
type Bounds = (TypedBox<u64, DynData>, TypedBox<u64, DynData>);
/// A stream of states per sensor, as the circuit outputs it.
type States = OrdIndexedZSet<String, State>;
/// A reading converted for [`DbspPeer::feed`]: `Tup2(sensor, Tup2(value, weight))`.
pub type DbspReading = Tup2<String, Tup2<ReadingValue, i64>>;

/// The handles of a running DBSP circuit computing the workload's rules.
pub struct DbspPeer {
    handle: DBSPHandle,
    registry: ZSetHandle<LabelRow>,
    readings: IndexedZSetHandle<String, ReadingValue>,
    clock: ZSetHandle<u64>,
    threshold: OutputHandle<SpineSnapshot<States>>,
    window: OutputHandle<SpineSnapshot<States>>,
    /// The rules' ids name the transitions.
    rules: FloorRules,
    collect: bool,
    seen: Vec<TransitionKey>,
}

/// Encodes `state` (after a step that made `transition`, at `time` with `value`) as a [`State`].
fn encode(
    state: Option<Alarm>,
    transition: Option<TransitionState>,
    time: u64,
    value: f64,
) -> State {
    let (alarm, since) = match state {
        None => (0, 0),
        Some(Alarm::Pending(since)) => (1, since),
        Some(Alarm::Firing) => (2, 0),
    };
    match transition {
        None => Tup5(alarm, since, 0, 0, F64::new(0.0)),
        Some(TransitionState::Firing) => Tup5(alarm, since, 1, time, F64::new(value)),
        Some(TransitionState::Resolved) => Tup5(alarm, since, 2, time, F64::new(value)),
    }
}

/// The alarm state `state` encodes.
fn decode(state: &State) -> Option<Alarm> {
    match state.0 {
        1 => Some(Alarm::Pending(state.1)),
        2 => Some(Alarm::Firing),
        _ => None,
    }
}

/// One step of `alarm`'s state machine as a DBSP fold: `(time, value)` on top of `state`.
fn fold(alarm: &FloorAlarm, state: Option<&State>, input: &ReadingValue) -> State {
    let Tup2(time, value) = *input;
    let (next, transition) = advance(state.and_then(decode), alarm, value.into_inner(), time);
    encode(next, transition, time, value.into_inner())
}

/// The states of `alarm` per sensor over `values` ((time, value) per sensor, in time order): a
/// `chain_aggregate` folding each value into the sensor's state with [`fold`].
fn alarm_states(
    values: &Stream<RootCircuit, OrdIndexedZSet<String, ReadingValue>>,
    alarm: FloorAlarm,
) -> Stream<RootCircuit, States> {
    let first = alarm.clone();
    values.chain_aggregate(
        move |value, _| fold(&first, None, value),
        move |state, value, _| fold(&alarm, Some(&state), value),
    )
}

/// `value` in integer millionths. DBSP's `average` needs an integer-like type (its `F64` has no
/// `From<ZWeight>`); sums of millionths are exact for readings of up to six decimals.
fn to_micros(value: F64) -> i64 {
    (value.into_inner() * 1e6).round() as i64
}

/// A mean in millionths ([`to_micros`]) as a value. `average` truncates, which keeps every
/// comparison with a level of up to six decimals exact (`mean >= level` iff
/// `trunc(mean) >= level` in millionths).
fn from_micros(mean: i64) -> F64 {
    F64::new(mean as f64 / 1e6)
}

/// The transition a state in the output stands for, if it is a fresh one.
fn transition_of(state: &State) -> Option<TransitionState> {
    match state.2 {
        1 => Some(TransitionState::Firing),
        2 => Some(TransitionState::Resolved),
        _ => None,
    }
}

/// Converts the workload's readings for the peer, dropping what no rule watches (the floor
/// drops them in its join).
pub fn convert(rows: &[ReadingRow], time: Time) -> Vec<DbspReading> {
    rows.iter()
        .filter(|((domain, _), (metric, _))| *domain == Domain::Mine && *metric == Metric::Ch4)
        .map(|((_, sensor), (_, value))| {
            Tup2(sensor.clone(), Tup2(Tup2(time, F64::new(value.0)), 1))
        })
        .collect()
}

impl DbspPeer {
    /// Starts the circuit on `workers` DBSP worker threads. With `collect`, every transition's
    /// key is kept (see [`DbspPeer::finish`]).
    pub fn start(workers: usize, collect: bool) -> Result<Self, dbsp::Error> {
        let rules = floor_rules();
        let circuit_rules = rules.clone();
        let (handle, (registry, readings, clock, threshold, window)) =
            Runtime::init_circuit(workers, move |circuit| {
                let rules = circuit_rules;
                let (labels, registry) = circuit.add_input_zset::<LabelRow>();
                let (readings, readings_handle) =
                    circuit.add_input_indexed_zset::<String, ReadingValue>();
                let (clock, clock_handle) = circuit.add_input_zset::<u64>();
                // The largest batch time so far, on every worker.
                let waterline: Stream<_, TypedBox<u64, DynData>> =
                    clock.waterline_monotonic(|| 0, |time| *time);
                let bounds: Stream<_, Bounds> =
                    waterline.apply(|until| (TypedBox::new(0), until.clone()));
                let scope = rules.scope.clone();
                let watched_sensors = labels
                    .filter(move |Tup3(_, name, value)| *name == scope.0 && *value == scope.1)
                    .map_index(|Tup3(sensor, _, _)| (sensor.clone(), ()));
                let watched: Stream<_, OrdIndexedZSet<String, ReadingValue>> = readings
                    .join_generic(&watched_sensors, |sensor, reading, ()| {
                        [(sensor.clone(), *reading)]
                    });

                let threshold = alarm_states(&watched, rules.threshold.clone());

                let window_ms = rules.window_ms.max(1);
                let averages = watched
                    .map_index(move |(sensor, Tup2(time, value))| {
                        (
                            Tup2((time / window_ms + 1) * window_ms, sensor.clone()),
                            *value,
                        )
                    })
                    .average(|value| to_micros(*value));
                let closed = averages
                    .map_index(|(Tup2(end, sensor), mean)| {
                        (*end, Tup2(sensor.clone(), from_micros(*mean)))
                    })
                    .window((true, true), &bounds)
                    .map_index(|(end, Tup2(sensor, mean))| (sensor.clone(), Tup2(*end, *mean)));
                let window = alarm_states(&closed, rules.window.clone());
                let fresh = |(_, state): (&String, &State)| state.2 != 0;
                Ok((
                    registry,
                    readings_handle,
                    clock_handle,
                    threshold.filter(fresh).accumulate_output(),
                    window.filter(fresh).accumulate_output(),
                ))
            })?;
        Ok(Self {
            handle,
            registry,
            readings,
            clock,
            threshold,
            window,
            rules,
            collect,
            seen: Vec::new(),
        })
    }

    /// Loads the registry (one transaction).
    pub fn load(&mut self, registry: &[RegistryRow]) -> Result<(), dbsp::Error> {
        let mut rows: Vec<Tup2<LabelRow, i64>> = registry
            .iter()
            .flat_map(|((_, sensor), info)| {
                info.labels.iter().map(move |(name, value)| {
                    Tup2(Tup3(sensor.clone(), name.to_string(), value.to_string()), 1)
                })
            })
            .collect();
        self.registry.append(&mut rows);
        self.step(0)
    }

    /// Feeds one batch of readings at `time` (converted by [`convert`]) and runs the
    /// transaction that evaluates it and every window ending by `time`.
    pub fn feed(&mut self, time: Time, mut readings: Vec<DbspReading>) -> Result<(), dbsp::Error> {
        self.readings.append(&mut readings);
        self.step(time)
    }

    /// Closes every open window (one last transaction) and returns the transitions' keys,
    /// sorted (empty unless collecting).
    pub fn finish(mut self) -> Result<Vec<TransitionKey>, dbsp::Error> {
        self.step(u64::MAX)?;
        // Dropping the handle stops DBSP's workers.
        let mut seen = std::mem::take(&mut self.seen);
        seen.sort();
        Ok(seen)
    }

    /// One transaction with windows closed up to `until`; collects its transitions.
    fn step(&mut self, until: u64) -> Result<(), dbsp::Error> {
        self.clock.push(until, 1);
        self.handle.transaction()?;
        for (output, rule) in [
            (&self.threshold, &self.rules.threshold),
            (&self.window, &self.rules.window),
        ] {
            // What every worker output over the transaction's steps (a transaction on several
            // workers takes several steps; each key lives on one worker).
            let batch = output.concat();
            if !self.collect {
                continue;
            }
            for (sensor, state, weight) in batch.iter() {
                if let (Some(transition), true) = (transition_of(&state), weight > 0) {
                    self.seen
                        .push((rule.id.clone(), sensor.clone(), transition, state.3));
                }
            }
        }
        Ok(())
    }
}

/// Runs the peer over `workload` on `workers` DBSP workers; every transition's key, sorted.
pub fn run(
    workload: crate::workload::Workload,
    workers: usize,
) -> Result<Vec<TransitionKey>, dbsp::Error> {
    let mut peer = DbspPeer::start(workers, true)?;
    peer.load(&workload.registry())?;
    for (time, rows) in workload.batches() {
        peer.feed(time, convert(&rows, time))?;
    }
    peer.finish()
}

#[cfg(test)]
mod tests {
    use super::run;
    use crate::pipeline::{Pipeline, SMALL_RUN, assert_both_rules_fire_and_resolve, run_single};

    /// DBSP's transitions equal the floor's (and so the engine's) on a run that raises and
    /// resolves both rules, on one DBSP worker and on two.
    #[test]
    fn dbsp_transitions_equal_the_floors() {
        let floor = run_single(Pipeline::Floor, SMALL_RUN);
        assert_both_rules_fire_and_resolve(&floor);
        for workers in [1, 2] {
            let peer = run(SMALL_RUN, workers).expect("the DBSP circuit runs");
            assert_eq!(peer, floor, "{workers} DBSP workers");
        }
    }
}
