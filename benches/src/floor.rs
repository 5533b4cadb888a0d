//! The hand-written floor: the least a timely + differential program has to do for the
//! workload's two rules, with no citybrain operator in it. The engine is measured against it.
//!
//! - readings become instants (present at their event time, retracted a millisecond later, so
//!   nothing accumulates) and are joined in differential with the arranged registry, keeping
//!   CH4 readings of sensors whose labels hold the rules' scope;
//! - one timely operator, exchanged by sensor, then processes each logical time once the
//!   frontier has passed it, in time order: each reading steps the threshold rule's
//!   `for`/hysteresis state of its sensor and adds to its sensor's open one-minute window (a
//!   count and an exact sum); each window whose end the frontier has passed is averaged and
//!   steps the window rule's state, at the window's end.
//!
//! Rules are constants of the program ([`FloorRules`]) instead of data, alerts are
//! [`FloorTransition`] tuples instead of formatted records, and the registry is assumed not to
//! change while readings flow (a change would reach the operator as retractions, which it
//! ignores). It assumes one reading per sensor and logical time, as a sensor sends one value
//! per instant: under that contract its transitions are the engine's.

use std::collections::BTreeMap;

use citybrain_model::{Domain, Metric, TransitionState};
use citybrain_operators::ordered_float::OrderedFloat;
use citybrain_operators::{Diff, EntityId, ReadingRow, RegistryRow, Time};
use differential_dataflow::{AsCollection, Hashable, VecCollection};
use fsum::FSum;
use rustc_hash::FxHashMap;
use timely::dataflow::StreamVec;
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::Capability;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::vec::{Filter, Map};

/// One rule's alarm side: alarm at or above `threshold` held for `hold_ms`, clear below `clear`.
#[derive(Clone, Debug, PartialEq)]
pub struct FloorAlarm {
    /// Rule id, carried by the transitions.
    pub id: String,
    /// Alarm level (inclusive).
    pub threshold: f64,
    /// Clear level (exclusive).
    pub clear: f64,
    /// How long the alarm level must hold before firing, milliseconds.
    pub hold_ms: u64,
}

/// The two rules the floor computes, fixed when the dataflow is built.
#[derive(Clone, Debug, PartialEq)]
pub struct FloorRules {
    /// The label `(name, value)` a sensor must carry to be watched.
    pub scope: (String, String),
    /// The per-reading threshold rule.
    pub threshold: FloorAlarm,
    /// The window rule: the average of each tumbling window of `window_ms`.
    pub window: FloorAlarm,
    /// Window length, milliseconds; windows are aligned to the epoch.
    pub window_ms: u64,
}

/// An alert transition of the floor: which rule, which sensor, firing or resolved, when, and
/// the value that caused it.
#[derive(Clone, Debug, PartialEq)]
pub struct FloorTransition {
    /// Rule id.
    pub rule: String,
    /// Sensor id.
    pub entity: String,
    /// Firing or resolved.
    pub state: TransitionState,
    /// Event time (a reading's time, or a window's end).
    pub time: Time,
    /// The reading or the window's average.
    pub value: f64,
}

/// Where a (rule, sensor) stands; sensors in the normal state are not stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Alarm {
    /// At or above the alarm level since this event time, not yet for the hold time.
    Pending(Time),
    /// Firing.
    Firing,
}

/// The `for`/hysteresis state machine of one (rule, sensor): its next state (`None` is normal)
/// after `value` at `time`, and the transition that step makes, if any. Shared by the floor and
/// the DBSP peer, so both differ from the engine only in the dataflow around it.
pub fn advance(
    current: Option<Alarm>,
    alarm: &FloorAlarm,
    value: f64,
    time: Time,
) -> (Option<Alarm>, Option<TransitionState>) {
    match current {
        Some(Alarm::Firing) if value < alarm.clear => (None, Some(TransitionState::Resolved)),
        Some(Alarm::Firing) => (current, None),
        _ if value < alarm.threshold => (None, None),
        Some(Alarm::Pending(since)) if time.saturating_sub(since) >= alarm.hold_ms => {
            (Some(Alarm::Firing), Some(TransitionState::Firing))
        }
        Some(Alarm::Pending(_)) => (current, None),
        None if alarm.hold_ms == 0 => (Some(Alarm::Firing), Some(TransitionState::Firing)),
        None => (Some(Alarm::Pending(time)), None),
    }
}

/// Applies one value to `entity`'s state under `alarm`; returns the transition, if any.
fn step(
    states: &mut FxHashMap<EntityId, Alarm>,
    alarm: &FloorAlarm,
    entity: &str,
    value: f64,
    time: Time,
) -> Option<TransitionState> {
    let current = states.get(entity).copied();
    let (next, transition) = advance(current, alarm, value, time);
    if next != current {
        match next {
            Some(next) => {
                states.insert(EntityId::from(entity), next);
            }
            None => {
                states.remove(entity);
            }
        }
    }
    transition
}

/// A sensor's open window: its readings so far and their exact sum (rounded once at the end,
/// as the engine's window sums, so both round alike).
type WindowSum = (usize, FSum);

/// A scope reading (sensor, value) at its event time, waiting for the frontier.
type Pending = (Capability<Time>, Vec<(EntityId, f64)>);
/// The readings of one window end per sensor, with the capability to emit at that end.
type Windows = (Capability<Time>, FxHashMap<EntityId, WindowSum>);

/// The floor's transitions of `rules` over `readings` (each `+1` at its event time) and the
/// registry, each at the logical time of the evaluation that caused it.
pub fn floor_alerts<'s>(
    readings: VecCollection<'s, Time, ReadingRow, Diff>,
    registry: VecCollection<'s, Time, RegistryRow, Diff>,
    rules: FloorRules,
) -> StreamVec<'s, Time, FloorTransition> {
    let stamped = readings
        .inner
        .map(|((entity, (metric, value)), time, diff)| {
            ((entity, (metric, value, time)), time, diff)
        })
        .as_collection();
    let instants = stamped
        .clone()
        .concat(stamped.delay(|time| time.saturating_add(1)).negate());
    let scope = rules.scope.clone();
    let watched = instants
        .join_core(
            registry.arrange_by_key(),
            move |(domain, entity), (metric, value, time), info| {
                let in_scope = *domain == Domain::Mine
                    && *metric == Metric::Ch4
                    && info
                        .labels
                        .iter()
                        .any(|(name, label)| *name == scope.0 && *label == scope.1);
                in_scope.then(|| (entity.clone(), *value, *time))
            },
        )
        .inner
        // The retractions of the instants are not readings.
        .filter(|(_, _, diff)| *diff > 0);

    let exchange = Exchange::new(
        |update: &((EntityId, OrderedFloat<f64>, Time), Time, Diff)| update.0.0.hashed(),
    );
    watched.unary_frontier(exchange, "FloorRules", move |_capability, _info| {
        let mut pending: BTreeMap<Time, Pending> = BTreeMap::new();
        let mut windows: BTreeMap<Time, Windows> = BTreeMap::new();
        let mut threshold_states: FxHashMap<EntityId, Alarm> = FxHashMap::default();
        let mut window_states: FxHashMap<EntityId, Alarm> = FxHashMap::default();
        let window_ms = rules.window_ms.max(1);
        move |(input, frontier), output| {
            input.for_each(|capability, data| {
                for ((entity, value, _), time, _) in data.drain(..) {
                    pending
                        .entry(time)
                        .or_insert_with(|| (capability.delayed(&time, 0), Vec::new()))
                        .1
                        .push((entity, value.0));
                }
            });
            // Readings first: a window ending at `end` is complete once every reading before
            // `end` is in, and every such reading is ready when `end` is.
            while let Some(entry) = pending.first_entry() {
                let time = *entry.key();
                if frontier.less_equal(&time) {
                    break;
                }
                let (capability, readings) = entry.remove();
                let end = (time / window_ms + 1) * window_ms;
                let window = windows
                    .entry(end)
                    .or_insert_with(|| (capability.delayed(&end), FxHashMap::default()));
                let mut session = output.session(&capability);
                for (entity, value) in readings {
                    let alarm = &rules.threshold;
                    if let Some(state) = step(&mut threshold_states, alarm, &entity, value, time) {
                        session.give(FloorTransition {
                            rule: alarm.id.clone(),
                            entity: entity.to_string(),
                            state,
                            time,
                            value,
                        });
                    }
                    let (count, sum) = window.1.entry(entity).or_default();
                    *count += 1;
                    sum.add(value);
                }
            }
            while let Some(entry) = windows.first_entry() {
                let end = *entry.key();
                if frontier.less_equal(&end) {
                    break;
                }
                let (capability, sensors) = entry.remove();
                let mut session = output.session(&capability);
                let alarm = &rules.window;
                for (entity, (count, sum)) in sensors {
                    let mean = sum.value() / count as f64;
                    if let Some(state) = step(&mut window_states, alarm, &entity, mean, end) {
                        session.give(FloorTransition {
                            rule: alarm.id.clone(),
                            entity: entity.to_string(),
                            state,
                            time: end,
                            value: mean,
                        });
                    }
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use crate::pipeline::{Pipeline, SMALL_RUN, assert_both_rules_fire_and_resolve, run_single};
    use crate::workload::Workload;

    /// The floor's (rule, sensor, state, time) set equals the engine's on a small run that
    /// raises and resolves both rules, with several batches per second of event time.
    #[test]
    fn floor_transitions_equal_the_engines() {
        let engine = run_single(Pipeline::Engine, SMALL_RUN);
        let floor = run_single(Pipeline::Floor, SMALL_RUN);
        assert_both_rules_fire_and_resolve(&engine);
        assert_eq!(engine.len(), floor.len());
        assert_eq!(engine, floor);
    }

    /// Both agree with one sensor per batch and whole seconds between batches too.
    #[test]
    fn floor_equals_engine_with_one_sensor_per_batch() {
        let workload = Workload {
            sensors: 10,
            batch: 1,
            events: 10 * 150,
        };
        assert_eq!(
            run_single(Pipeline::Engine, workload),
            run_single(Pipeline::Floor, workload)
        );
    }
}
