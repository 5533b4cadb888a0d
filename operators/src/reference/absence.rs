//! Absence rules, from scratch: per (rule, entity), a walk over the times something happens to
//! it (rule changes, its readings) with the deadline of its silence, in time order.
//!
//! Watched: a registered entity of the rule's domain with a cadence, of the rule's sensor kind
//! (`kind` label) and in its scope. After a reading at `t`, silent at `t + cadences × cadence +
//! for` unless another reading comes at or before it; the next reading resolves. A rule change
//! recomputes the deadline from the last reading (not before the change); losing the watch
//! resolves and forgets. Deadlines at or after `end` (where the input stopped, after every
//! reading and rule change) never fire. While the entity's partition is stalled for the rule
//! (the stall edges of [`super::stall`]) a deadline raises nothing; when the stall ends with
//! the entity still silent, its deadline restarts from the end.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use citybrain_model::{EntityInfo, Labels, Reading};
use ordered_float::OrderedFloat;

use super::stall::StallEdges;
use super::{Evaluation, Timeline, in_scope};
use crate::kinds::absence::AbsenceRule;
use crate::rule::{Direction, RuleRow, ThresholdRule};
use crate::{EntityKey, Time};

/// (rule id, entity).
type Key = (String, String);

/// What a watch is: the rule, the cadence, the entity's labels.
type Watch = (AbsenceRule, u64, Labels);

/// The watched (rule, entity) pairs of the rules present at `time`.
fn watched_at(
    timeline: &Timeline,
    registry: &HashMap<EntityKey, EntityInfo>,
    time: Time,
) -> BTreeMap<Key, Watch> {
    let mut out = BTreeMap::new();
    for row in timeline.at(time) {
        let RuleRow::Absence(rule) = row else {
            continue;
        };
        let kind = ("kind".to_string(), rule.alarm.metric.as_str().to_string());
        for ((domain, entity), info) in registry {
            if *domain == rule.alarm.domain
                && info.cadence_ms > 0
                && info.labels.contains(&kind)
                && in_scope(&rule.alarm.scope, &info.labels)
            {
                out.insert(
                    (rule.alarm.id.clone(), entity.to_string()),
                    (rule.clone(), info.cadence_ms, info.labels.clone()),
                );
            }
        }
    }
    out
}

/// One evaluation: silent (1) or back (0), reporting the seconds since `last`.
fn evaluation(
    key: &Key,
    (rule, _, labels): &Watch,
    time: Time,
    silent: bool,
    last: Time,
) -> Evaluation {
    let mut labels = labels.clone();
    labels.push(("rule_kind".to_string(), "absence".to_string()));
    labels.sort();
    let alarm = ThresholdRule {
        direction: Direction::Above,
        threshold: OrderedFloat(1.0),
        clear: OrderedFloat(1.0),
        hold_ms: 0,
        ..rule.alarm.clone()
    };
    Evaluation {
        rule: key.0.clone(),
        entity: key.1.clone(),
        time,
        value: if silent { 1.0 } else { 0.0 },
        reported: (time - last) as f64 / 1000.0,
        labels,
        alarm,
    }
}

/// The silence limit of a watch.
fn limit((rule, cadence, _): &Watch) -> Time {
    cadence * u64::from(rule.cadences) + rule.alarm.hold_ms
}

/// Every absence evaluation over `readings` (any order) with the rules of `timeline`, the
/// input ending at `end`, the entities' partitions stalled at `stalls`.
pub(super) fn evaluations(
    readings: &[Reading],
    registry: &HashMap<EntityKey, EntityInfo>,
    timeline: &Timeline,
    end: Time,
    stalls: &StallEdges,
) -> Vec<Evaluation> {
    let mut change_times: BTreeSet<Time> = timeline.changes.iter().map(|c| c.0).collect();
    change_times.insert(0);
    let watches: BTreeMap<Time, BTreeMap<Key, Watch>> = change_times
        .iter()
        .map(|t| (*t, watched_at(timeline, registry, *t)))
        .collect();

    // Reading times per key, of readings the rule (as of the reading) matches.
    let mut heard: BTreeMap<Key, BTreeSet<Time>> = BTreeMap::new();
    for reading in readings {
        let labels = registry
            .get(&(reading.domain, reading.entity.clone()))
            .map(|info| info.labels.clone())
            .unwrap_or_default();
        for row in timeline.at(reading.time) {
            if let RuleRow::Absence(rule) = row
                && rule.alarm.domain == reading.domain
                && rule.alarm.metric == reading.metric
                && in_scope(&rule.alarm.scope, &labels)
            {
                heard
                    .entry((rule.alarm.id.clone(), reading.entity.to_string()))
                    .or_default()
                    .insert(reading.time);
            }
        }
    }
    let mut keys: BTreeSet<Key> = heard.keys().cloned().collect();
    for watched in watches.values() {
        keys.extend(watched.keys().cloned());
    }
    keys.extend(stalls.keys().cloned());
    let no_edges = BTreeMap::new();

    let mut out = Vec::new();
    for key in keys {
        let readings = heard.get(&key).cloned().unwrap_or_default();
        let edges = stalls.get(&key).unwrap_or(&no_edges);
        let mut times: BTreeSet<Time> = change_times.union(&readings).copied().collect();
        times.extend(edges.keys().copied());
        let mut times = times.into_iter().peekable();
        let mut watch: Option<Watch> = None;
        let mut last: Option<Time> = None;
        let mut firing = false;
        let mut deadline: Option<Time> = None;
        let mut stalled = false;
        loop {
            let next = times.peek().copied();
            let timer = deadline.filter(|d| !firing && *d < end);
            if let Some(d) = timer
                && next.is_none_or(|t| d < t)
                && let (Some(w), Some(l)) = (&watch, last)
            {
                if !stalled {
                    out.push(evaluation(&key, w, d, true, l));
                    firing = true;
                }
                deadline = None;
                continue;
            }
            let Some(t) = times.next() else {
                break;
            };
            let before = watch.clone();
            if let Some(now) = watches.get(&t) {
                watch = now.get(&key).cloned();
            }
            let edge = edges.get(&t).copied();
            let stall_ended = stalled && edge == Some(false);
            if let Some(edge) = edge {
                stalled = edge;
            }
            let Some(w) = watch.clone() else {
                if firing && let (Some(old), Some(l)) = (&before, last) {
                    out.push(evaluation(&key, old, t, false, l));
                }
                (last, firing, deadline, stalled) = (None, false, None, false);
                continue;
            };
            if readings.contains(&t) {
                if firing && let Some(l) = last {
                    out.push(evaluation(&key, &w, t, false, l));
                }
                firing = false;
                last = Some(t);
                deadline = Some(t + limit(&w));
            } else if stall_ended && !firing && last.is_some() {
                deadline = Some(t + limit(&w));
            } else if before.as_ref() != Some(&w)
                && !firing
                && let Some(l) = last
            {
                deadline = Some((l + limit(&w)).max(t));
            }
        }
    }
    out
}
