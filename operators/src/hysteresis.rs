//! The `for`/hysteresis state machine per (rule, entity), in event time.
//!
//! A frontier-driven timely operator, exchanged by alert key. It buffers rule hits per time
//! and processes each time only once the input frontier has passed it, in time order, so
//! out-of-order input within the allowed lateness gives exactly the in-order result. Its state
//! is one small record per key that is pending or firing; normal keys cost nothing.
//!
//! Semantics (evaluated on each reading):
//! - normal, reading on the alarm side: firing at once when `for` is 0, else pending since it;
//! - pending, reading on the alarm side for at least `for` since the first: firing;
//! - pending, reading off the alarm side: back to normal (the hold restarts);
//! - firing, reading past the clear threshold: resolved; otherwise it stays firing, so values
//!   between the clear and the alarm threshold do not flap.

use std::collections::BTreeMap;

use citybrain_model::alert::transition_id;
use citybrain_model::time::format_event_time;
use citybrain_model::{AlertTransition, Labels, TransitionState};
use differential_dataflow::Hashable;
use differential_dataflow::collection::vec;
use differential_dataflow::consolidation::consolidate;
use rustc_hash::FxHashMap;
use timely::dataflow::StreamVec;
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::Capability;
use timely::dataflow::operators::generic::Operator;

use crate::rule::ThresholdRule;
use crate::threshold::{HitRow, RuleHit};
use crate::{Diff, Time};

/// Where an alert key stands; keys in the normal state are not stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AlertState {
    /// On the alarm side since this event time, not yet for the hold time.
    Pending {
        /// Event time of the first reading on the alarm side.
        since: Time,
    },
    /// Firing.
    Firing,
}

/// Applies one reading to a key's state; returns the new state and the transition, if any.
pub fn step(
    state: Option<AlertState>,
    rule: &ThresholdRule,
    value: f64,
    time: Time,
) -> (Option<AlertState>, Option<TransitionState>) {
    match state {
        Some(AlertState::Firing) if rule.clears(value) => (None, Some(TransitionState::Resolved)),
        Some(AlertState::Firing) => (state, None),
        _ if !rule.triggers(value) => (None, None),
        Some(AlertState::Pending { since }) if time.saturating_sub(since) >= rule.hold_ms => {
            (Some(AlertState::Firing), Some(TransitionState::Firing))
        }
        Some(AlertState::Pending { .. }) => (state, None),
        None if rule.hold_ms == 0 => (Some(AlertState::Firing), Some(TransitionState::Firing)),
        None => (Some(AlertState::Pending { since: time }), None),
    }
}

/// Builds the transition record: labels are the entity's, then the rule's, then `rule`,
/// `severity`, `metric` and `domain`; `{label}` and `{value}` in the summary are filled in.
pub fn make_transition(
    rule: &ThresholdRule,
    entity: &str,
    entity_labels: &Labels,
    state: TransitionState,
    value: f64,
    time: Time,
) -> AlertTransition {
    let mut labels: std::collections::BTreeMap<String, String> =
        entity_labels.iter().cloned().collect();
    labels.extend(rule.labels.iter().cloned());
    labels.insert("rule".into(), rule.id.clone());
    labels.insert("severity".into(), rule.severity.as_str().into());
    labels.insert("metric".into(), rule.metric.as_str().into());
    labels.insert("domain".into(), rule.domain.as_str().into());
    labels.insert("entity".into(), entity.into());
    let mut summary = rule.summary.replace("{value}", &format!("{value}"));
    for (name, label) in &labels {
        summary = summary.replace(&format!("{{{name}}}"), label);
    }
    AlertTransition {
        id: transition_id(&rule.id, entity, state, time),
        rule: rule.id.clone(),
        entity: entity.to_string(),
        domain: rule.domain,
        state,
        severity: rule.severity,
        summary,
        value,
        event_time: time,
        event_time_rfc3339: format_event_time(time),
        labels,
    }
}

/// Updates of one time, held until the frontier passes it, with the capability to emit at it.
type Waiting = (Capability<Time>, Vec<(HitRow, Diff)>);

/// Runs the state machine over rule hits.
pub trait HoldAndHysteresis<'s> {
    /// Emits alert transitions, each at the logical time of the reading that caused it.
    fn hold_and_hysteresis(self) -> StreamVec<'s, Time, AlertTransition>;
}

impl<'s> HoldAndHysteresis<'s> for vec::Collection<'s, Time, HitRow, Diff> {
    fn hold_and_hysteresis(self) -> StreamVec<'s, Time, AlertTransition> {
        let exchange = Exchange::new(|update: &(HitRow, Time, Diff)| update.0.0.hashed());
        self.inner
            .unary_frontier(exchange, "HoldAndHysteresis", |_capability, _info| {
                // Updates waiting for the frontier to pass their time, with a capability to emit at it.
                let mut waiting: BTreeMap<Time, Waiting> = BTreeMap::new();
                let mut states: FxHashMap<(String, String), AlertState> = FxHashMap::default();
                move |(input, frontier), output| {
                    input.for_each(|capability, data| {
                        for (row, time, diff) in data.drain(..) {
                            waiting
                                .entry(time)
                                .or_insert_with(|| (capability.delayed(&time, 0), Vec::new()))
                                .1
                                .push((row, diff));
                        }
                    });
                    while let Some(entry) = waiting.first_entry() {
                        let time = *entry.key();
                        if frontier.less_equal(&time) {
                            break;
                        }
                        let (capability, mut updates) = entry.remove();
                        // Insertions and retractions of one row at one time cancel; only net
                        // insertions are readings (see `instant`).
                        consolidate(&mut updates);
                        let mut session = output.session(&capability);
                        for (
                            (
                                (rule_id, entity),
                                RuleHit {
                                    value,
                                    labels,
                                    rule,
                                },
                            ),
                            diff,
                        ) in updates
                        {
                            if diff <= 0 {
                                continue;
                            }
                            let key = (rule_id, entity);
                            let (next, transition) =
                                step(states.get(&key).copied(), &rule, value.0, time);
                            if let Some(state) = transition {
                                session.give(make_transition(
                                    &rule, &key.1, &labels, state, value.0, time,
                                ));
                            }
                            match next {
                                Some(next) => {
                                    states.insert(key, next);
                                }
                                None => {
                                    states.remove(&key);
                                }
                            }
                        }
                    }
                }
            })
    }
}
