//! A plain-loop reference implementation of threshold rules, written from scratch without
//! timely, that the dataflow is tested against (and that tests over real data use to compute
//! expected transitions).

use std::collections::{BTreeMap, HashMap};

use citybrain_model::{AlertTransition, EntityInfo, Reading, TransitionState};

use crate::EntityKey;
use crate::hysteresis::make_transition;
use crate::rule::ThresholdRule;

/// Computes the transitions threshold rules produce over `readings`, whatever their order.
/// Readings are taken in event-time order (ties by entity, then value); identical readings
/// count once. The result is sorted by (event time, rule, entity).
pub fn threshold_transitions(
    readings: &[Reading],
    registry: &HashMap<EntityKey, EntityInfo>,
    rules: &[ThresholdRule],
) -> Vec<AlertTransition> {
    let mut ordered: Vec<&Reading> = readings.iter().collect();
    ordered.sort_by(|a, b| {
        (a.time, &a.entity, a.metric)
            .cmp(&(b.time, &b.entity, b.metric))
            .then(a.value.total_cmp(&b.value))
    });
    ordered.dedup_by(|a, b| a == b);

    // (rule, entity) -> (firing, start of the current run on the alarm side)
    let mut alerts: BTreeMap<(String, String), (bool, Option<u64>)> = BTreeMap::new();
    let mut out = Vec::new();
    let no_labels = Vec::new();
    for reading in ordered {
        let labels = registry
            .get(&(reading.domain, reading.entity.clone()))
            .map(|info| &info.labels)
            .unwrap_or(&no_labels);
        for rule in rules {
            if rule.domain != reading.domain || rule.metric != reading.metric {
                continue;
            }
            let in_scope = rule.scope.iter().all(|selector| labels.contains(selector));
            if !in_scope {
                continue;
            }
            let (firing, run_start) = alerts
                .entry((rule.id.clone(), reading.entity.clone()))
                .or_insert((false, None));
            let v = reading.value;
            let mut emit = None;
            if *firing {
                let cleared = match rule.direction {
                    crate::rule::Direction::Above => v < rule.clear.0,
                    crate::rule::Direction::Below => v > rule.clear.0,
                };
                if cleared {
                    *firing = false;
                    emit = Some(TransitionState::Resolved);
                }
            } else {
                let on_alarm_side = match rule.direction {
                    crate::rule::Direction::Above => v >= rule.threshold.0,
                    crate::rule::Direction::Below => v <= rule.threshold.0,
                };
                if on_alarm_side {
                    let start = *run_start.get_or_insert(reading.time);
                    if reading.time - start >= rule.hold_ms {
                        *firing = true;
                        *run_start = None;
                        emit = Some(TransitionState::Firing);
                    }
                } else {
                    *run_start = None;
                }
            }
            if let Some(state) = emit {
                out.push(make_transition(
                    rule,
                    &reading.entity,
                    labels,
                    state,
                    v,
                    reading.time,
                ));
            }
        }
    }
    sort_transitions(&mut out);
    out
}

/// The canonical order of transitions for comparisons: (event time, rule, entity, state).
pub fn sort_transitions(transitions: &mut [AlertTransition]) {
    transitions.sort_by(|a, b| {
        (a.event_time, &a.rule, &a.entity, a.state).cmp(&(
            b.event_time,
            &b.rule,
            &b.entity,
            b.state,
        ))
    });
}
