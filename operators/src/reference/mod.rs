//! A plain-loop reference implementation of every rule kind, written from scratch without
//! timely or differential, that the dataflow is tested against (and that tests over real data
//! use to compute expected transitions).
//!
//! It sorts the readings, computes each kind's evaluations with loops over the sorted
//! readings (one file per kind, none of them calling the operators' helpers), then runs a
//! plain `for`/hysteresis loop per (rule, alert entity). Only the formatting of a transition
//! ([`make_transition`]) is shared with the dataflow.
//!
//! Rules may change over time ([`RuleChange`]): each reading is matched with the rules as of
//! its time, and each evaluation uses the alarm side as of its time, like the dataflow.

mod absence;
mod baseline;
mod correlation;
mod rate_of_rise;
mod report_deadline;
mod stall;
mod threshold;
mod window;

use std::collections::{BTreeMap, HashMap};

use citybrain_model::alert::RULE_REMOVED;
use citybrain_model::{AlertTransition, EntityInfo, Labels, Reading};

use crate::hysteresis::make_transition;
use crate::rule::{Direction, RuleRow, ThresholdRule};
use crate::{EntityKey, Time};

pub use report_deadline::{
    DeadlineTransition, ReportEventAt, RuleLife, follow_up_transitions, follow_up_transitions_over,
    report_deadline_transitions, report_deadline_transitions_over,
};

/// A change of the rules collection: `(time, row, +1 | -1)`.
pub type RuleChange = (Time, RuleRow, isize);

/// One evaluation of a rule for an alert entity at an event time.
#[derive(Clone, Debug, PartialEq, PartialOrd)]
pub struct Evaluation {
    /// Rule id.
    pub rule: String,
    /// Alert entity.
    pub entity: String,
    /// Event time.
    pub time: Time,
    /// The value compared with the alarm side.
    pub value: f64,
    /// The value a transition reports.
    pub reported: f64,
    /// The alert's entity labels.
    pub labels: Labels,
    /// The alarm side as of `time`.
    pub alarm: ThresholdRule,
}

/// A reading matched with a rule as of the reading's time.
#[derive(Clone, Debug)]
pub(crate) struct Match<'a> {
    /// The rule (version) the reading was matched with.
    pub rule: RuleRow,
    /// The reading.
    pub reading: &'a Reading,
    /// Its entity's labels (empty when not registered).
    pub labels: Labels,
}

/// The rules collection over time.
pub(crate) struct Timeline {
    changes: Vec<RuleChange>,
}

impl Timeline {
    /// The rows present at `time`.
    pub fn at(&self, time: Time) -> Vec<RuleRow> {
        let mut counts: BTreeMap<&RuleRow, isize> = BTreeMap::new();
        for (at, row, diff) in &self.changes {
            if *at <= time {
                *counts.entry(row).or_default() += diff;
            }
        }
        counts
            .into_iter()
            .filter(|(_, count)| *count > 0)
            .map(|(row, _)| row.clone())
            .collect()
    }
}

/// True when every selector is among the labels.
fn in_scope(scope: &Labels, labels: &Labels) -> bool {
    scope.iter().all(|selector| labels.contains(selector))
}

/// The metrics a rule reads.
fn metrics_of(rule: &RuleRow) -> Vec<citybrain_model::Metric> {
    match rule {
        RuleRow::Correlation(c) => vec![c.alarm.metric, c.with.metric],
        other => vec![other.alarm().metric],
    }
}

/// Computes the transitions of `rules` (present from time 0) over `readings`, whatever their
/// order. Identical readings count once. Sorted by (event time, rule, entity, state).
pub fn rule_transitions(
    readings: &[Reading],
    registry: &HashMap<EntityKey, EntityInfo>,
    rules: &[RuleRow],
) -> Vec<AlertTransition> {
    let changes: Vec<RuleChange> = rules.iter().map(|r| (0, r.clone(), 1)).collect();
    rule_transitions_over_time(readings, registry, &changes)
}

/// The same for threshold rules.
pub fn threshold_transitions(
    readings: &[Reading],
    registry: &HashMap<EntityKey, EntityInfo>,
    rules: &[ThresholdRule],
) -> Vec<AlertTransition> {
    let rows: Vec<RuleRow> = rules.iter().cloned().map(RuleRow::Threshold).collect();
    rule_transitions(readings, registry, &rows)
}

/// [`rule_transitions`] with rules that change over time.
pub fn rule_transitions_over_time(
    readings: &[Reading],
    registry: &HashMap<EntityKey, EntityInfo>,
    changes: &[RuleChange],
) -> Vec<AlertTransition> {
    let evaluations = evaluations(readings, registry, changes);
    with_rule_removals(run_state_machine(evaluations), changes)
}

/// The transitions of absence rules (and any others) over `readings`, whatever their order,
/// with the input ending at `end` (after every reading and rule change): silences whose
/// deadline is at or after `end` do not fire, as when the input stops. The other kinds' evaluations are those of
/// [`rule_transitions_over_time`]; [`evaluations`] leaves absence out because it needs `end`.
pub fn absence_transitions(
    readings: &[Reading],
    registry: &HashMap<EntityKey, EntityInfo>,
    changes: &[RuleChange],
    end: Time,
) -> Vec<AlertTransition> {
    let timeline = Timeline {
        changes: changes.to_vec(),
    };
    let mut all = evaluations(readings, registry, changes);
    all.extend(absence::evaluations(
        readings,
        registry,
        &timeline,
        end,
        &Default::default(),
    ));
    with_rule_removals(run_state_machine(all), changes)
}

/// [`absence_transitions`] with the readings of each entity coming from its partition in
/// `placements`, for rules present from the start (`rules`): the `ingest stalled` transitions
/// of the absence rules with a `stall_after`, and their absence transitions without the
/// silences of stalled partitions.
pub fn stall_transitions(
    readings: &[Reading],
    registry: &HashMap<EntityKey, EntityInfo>,
    rules: &[RuleRow],
    placements: &HashMap<EntityKey, citybrain_model::PartitionId>,
    end: Time,
) -> Vec<AlertTransition> {
    let changes: Vec<RuleChange> = rules.iter().map(|r| (0, r.clone(), 1)).collect();
    let timeline = Timeline {
        changes: changes.clone(),
    };
    let absence_rules: Vec<_> = rules
        .iter()
        .filter_map(|r| r.as_absence().cloned())
        .collect();
    let (mut all, edges) = stall::evaluations(readings, &absence_rules, placements, end);
    all.extend(evaluations(readings, registry, &changes));
    all.extend(absence::evaluations(
        readings, registry, &timeline, end, &edges,
    ));
    run_state_machine(all)
}

/// Resolves the alerts of removed rules: when a rule's last row (of its kind) goes away at a
/// time, each of its alerts still firing then resolves at that time with reason
/// [`RULE_REMOVED`], reporting the value it fired with; one its own evaluation resolves at
/// that very time carries the reason too. (Not modelled: a rule removed and added again later,
/// whose alerts would start afresh in the dataflow, and an edit that changes a rule's scope,
/// kind, domain or metric, which resolves the alerts it no longer covers with reason
/// `out of scope` or `rule changed`; `hysteresis`'s unit tests check those.)
pub fn with_rule_removals(
    mut transitions: Vec<AlertTransition>,
    changes: &[RuleChange],
) -> Vec<AlertTransition> {
    use citybrain_model::TransitionState::{Firing, Resolved};

    let mut sorted = changes.to_vec();
    sorted.sort_by_key(|(time, _, _)| *time);
    let mut rows: BTreeMap<(&str, String), isize> = BTreeMap::new();
    let mut removals: Vec<(Time, ThresholdRule)> = Vec::new();
    for (i, (time, row, diff)) in sorted.iter().enumerate() {
        let key = (row.kind(), row.id().to_string());
        *rows.entry(key.clone()).or_default() += diff;
        let last_of_time = sorted.get(i + 1).is_none_or(|next| next.0 != *time);
        if !last_of_time {
            continue;
        }
        // Every rule touched at this time whose rows are all gone now.
        let touched: Vec<&RuleRow> = sorted
            .iter()
            .filter(|(t, _, d)| t == time && *d < 0)
            .map(|(_, r, _)| r)
            .collect();
        for row in touched {
            let key = (row.kind(), row.id().to_string());
            if rows.get(&key).is_some_and(|n| *n <= 0)
                && !removals.iter().any(|(t, r)| t == time && r.id == row.id())
            {
                removals.push((*time, row.alarm().clone()));
            }
        }
    }
    for (time, rule) in removals {
        let mut last: BTreeMap<String, usize> = BTreeMap::new();
        for (i, t) in transitions.iter().enumerate() {
            if t.rule == rule.id && t.event_time <= time {
                last.insert(t.entity.clone(), i);
            }
        }
        for (entity, i) in last {
            let t = &mut transitions[i];
            if t.state == Resolved && t.event_time == time {
                t.reason = Some(RULE_REMOVED.to_string());
            } else if t.state == Firing {
                let labels: Labels = t.labels.clone().into_iter().collect();
                let mut resolved =
                    make_transition(&rule, &entity, &labels, Resolved, t.value, time);
                resolved.reason = Some(RULE_REMOVED.to_string());
                transitions.push(resolved);
            }
        }
    }
    sort_transitions(&mut transitions);
    transitions
}

/// Every kind's evaluations over `readings`, except absence (see [`absence_transitions`]).
pub fn evaluations(
    readings: &[Reading],
    registry: &HashMap<EntityKey, EntityInfo>,
    changes: &[RuleChange],
) -> Vec<Evaluation> {
    let mut ordered: Vec<&Reading> = readings.iter().collect();
    ordered.sort_by(|a, b| {
        (a.time, a.domain, &a.entity, a.metric)
            .cmp(&(b.time, b.domain, &b.entity, b.metric))
            .then(a.value.total_cmp(&b.value))
    });
    ordered.dedup_by(|a, b| a == b);

    let timeline = Timeline {
        changes: changes.to_vec(),
    };
    let mut matches = Vec::new();
    for reading in ordered {
        let labels = registry
            .get(&(reading.domain, reading.entity.clone()))
            .map(|info| info.labels.clone())
            .unwrap_or_default();
        for rule in timeline.at(reading.time) {
            let alarm = rule.alarm();
            if alarm.domain == reading.domain
                && metrics_of(&rule).contains(&reading.metric)
                && in_scope(&alarm.scope, &labels)
            {
                matches.push(Match {
                    rule,
                    reading,
                    labels: labels.clone(),
                });
            }
        }
    }

    let mut out = threshold::evaluations(&matches);
    out.extend(window::evaluations(&matches, &timeline));
    out.extend(rate_of_rise::evaluations(&matches));
    out.extend(baseline::evaluations(&matches));
    out.extend(correlation::evaluations(&matches));
    out
}

/// The `for`/hysteresis loop over evaluations, per (rule, entity) in time order (ties in
/// order of value); identical evaluations count once.
pub fn run_state_machine(mut evaluations: Vec<Evaluation>) -> Vec<AlertTransition> {
    evaluations.sort_by(|a, b| {
        (a.time, &a.rule, &a.entity)
            .cmp(&(b.time, &b.rule, &b.entity))
            .then(a.value.total_cmp(&b.value))
            .then(a.reported.total_cmp(&b.reported))
            .then(a.labels.cmp(&b.labels))
            .then(a.alarm.cmp(&b.alarm))
    });
    evaluations.dedup();

    // (rule, entity) -> (firing, start of the current run on the alarm side)
    let mut alerts: BTreeMap<(String, String), (bool, Option<u64>)> = BTreeMap::new();
    let mut out = Vec::new();
    for e in &evaluations {
        let rule = &e.alarm;
        let (firing, run_start) = alerts
            .entry((e.rule.clone(), e.entity.clone()))
            .or_insert((false, None));
        let v = e.value;
        let mut emit = None;
        if *firing {
            let cleared = match rule.direction {
                Direction::Above => v < rule.clear.0,
                Direction::Below => v > rule.clear.0,
            };
            if cleared {
                *firing = false;
                emit = Some(citybrain_model::TransitionState::Resolved);
            }
        } else {
            let on_alarm_side = match rule.direction {
                Direction::Above => v >= rule.threshold.0,
                Direction::Below => v <= rule.threshold.0,
            };
            if on_alarm_side {
                let start = *run_start.get_or_insert(e.time);
                if e.time - start >= rule.hold_ms {
                    *firing = true;
                    *run_start = None;
                    emit = Some(citybrain_model::TransitionState::Firing);
                }
            } else {
                *run_start = None;
            }
        }
        if let Some(state) = emit {
            out.push(make_transition(
                rule, &e.entity, &e.labels, state, e.reported, e.time,
            ));
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

/// The group of an entity with `labels` under a `group_by` name: (group value, the labels an
/// alert on the group carries). `None` when the entity lacks the label.
pub(crate) fn group_of(group_by: &str, entity: &str, labels: &Labels) -> Option<(String, Labels)> {
    if group_by == "entity" {
        return Some((entity.to_string(), labels.clone()));
    }
    // Each group label with the coarser labels its members share.
    let hierarchy: &[(&str, &[&str])] = &[
        ("mine", &["mine"]),
        ("face", &["mine", "face"]),
        ("farm", &["farm"]),
        ("greenhouse", &["farm", "greenhouse"]),
        ("herd", &["farm", "herd"]),
        ("animal", &["farm", "herd", "animal"]),
    ];
    let (_, carried) = hierarchy.iter().find(|(name, _)| *name == group_by)?;
    let (_, value) = labels.iter().find(|(name, _)| name == group_by)?;
    let mut kept: Labels = labels
        .iter()
        .filter(|(name, _)| carried.contains(&name.as_str()))
        .cloned()
        .collect();
    kept.sort();
    Some((value.clone(), kept))
}
