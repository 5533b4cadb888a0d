//! The `report_deadline` rule kind: a citizen report left unresolved for longer than a deadline
//! raises an alert about the report.
//!
//! Semantics, in event time, per (rule, report), from the report's lifecycle events
//! ([`ReportEventRow`]s, the same rows [`crate::report_state`] folds):
//! - the timer starts at the report's `created` event and restarts at each `escalated` event
//!   (one level up: village -> town -> district; an escalation past `district`, or of a
//!   resolved report, changes nothing, as in the report states);
//! - when no `resolved` event arrives in `(start, start + deadline)`, the rule fires at event
//!   time `start + deadline` for the alert entity *report id*, with the labels `category`,
//!   `grid`, `level` and `rule_kind = "report_deadline"`. A `resolved` event exactly at the
//!   deadline is in time (events apply before timers of the same instant);
//! - a `resolved` event resolves a firing alert at its time and stops the timer; `reopened`
//!   restarts the timer at its time; an `escalated` event resolves a firing alert at its time
//!   (the report moved up) and restarts the timer, so each unresolved level is one alert;
//! - a rule with `categories` watches reports of those categories only (empty: all);
//! - duplicate events (same report, kind and time) are idempotent, a second `created` of a
//!   known report is ignored, and events of a report whose `created` was never seen are
//!   ignored (the ingest layer counts them as dead letters);
//! - a rule added or edited later times the open reports already known from their last start
//!   (at the earliest, the time of the change); a rule deleted resolves its firing alerts at
//!   that time;
//! - timers fire only while the input is open: when it ends (shutdown, the end of a replay),
//!   pending timers are dropped.
//!
//! The derived value handed to the `for`/hysteresis state machine is `1` (overdue) at a timer
//! and `0` when it ends, against a fixed alarm side (at or above 1, clear below 1, no hold);
//! the reported value is the hours since the timer started.
//!
//! Built as one frontier-driven timely operator: report events are exchanged by report id,
//! rules are sent to every worker; updates are buffered per time and applied once the input
//! frontier has passed it, in time order (rules, then each report's events in lifecycle order,
//! then due timers), so out-of-order events within the allowed lateness give the in-order
//! result. State: one record per known report (its category, grid, level, timer start and one
//! entry per rule timing it) and the pending deadlines.

use std::collections::BTreeMap;

use citybrain_model::{Domain, Labels, ReportKind};
use differential_dataflow::consolidation::consolidate;
use differential_dataflow::{AsCollection, Hashable, VecCollection};
use ordered_float::OrderedFloat;
use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::Capability;
use timely::dataflow::operators::generic::Operator;

use crate::hit::{HitRow, RuleHit};
use crate::kinds::Sources;
use crate::kinds::absence::RULE_KIND_LABEL;
use crate::report_state::{LEVELS, ReportEventRow, lifecycle_rank};
use crate::rule::{Direction, RuleRow, ThresholdRule};
use crate::{Diff, Time};

/// The value of the `rule_kind` label on alerts of this kind.
pub const RULE_KIND: &str = "report_deadline";

/// Milliseconds per hour.
const HOUR_MS: f64 = 3_600_000.0;

/// A report-deadline rule as a collection row.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ReportDeadlineRule {
    /// Id, domain (citizen), severity, summary and labels; the metric, scope, levels and hold
    /// are not used (citizen transitions carry no `metric` label).
    pub alarm: ThresholdRule,
    /// The report categories watched, sorted; empty for every category.
    pub categories: Vec<String>,
    /// How long a report may stay unresolved after its timer starts, milliseconds (at least 1).
    pub deadline_ms: u64,
}

impl ReportDeadlineRule {
    /// True when reports of `category` are watched by this rule.
    pub fn watches(&self, category: &str) -> bool {
        self.categories.is_empty() || self.categories.iter().any(|c| c == category)
    }

    /// The alarm side the hits are compared with: overdue (1) fires at once, 0 clears.
    pub fn hit_alarm(&self) -> ThresholdRule {
        ThresholdRule {
            domain: Domain::Citizen,
            direction: Direction::Above,
            threshold: OrderedFloat(1.0),
            clear: OrderedFloat(1.0),
            hold_ms: 0,
            ..self.alarm.clone()
        }
    }
}

/// What the operator receives, with the worker-routing key in front.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
enum Input {
    /// A rule (one copy per worker), `+1` while it exists.
    Rule(ReportDeadlineRule),
    /// A report event: report id -> (kind, category, grid, unit).
    Event(ReportEventRow),
}

/// One rule's timer of one report.
struct Track {
    /// The rule as it was when the timer was set or fired (to resolve with it).
    rule: ReportDeadlineRule,
    /// The live deadline, when not firing.
    deadline: Option<Time>,
    /// True while the alert fires.
    firing: bool,
}

/// What the operator keeps per known report.
struct Report {
    category: String,
    grid: String,
    /// Escalations seen (index into [`LEVELS`], at most 2).
    level: usize,
    /// When the timer last started (`created`, `escalated` or `reopened`).
    start: Time,
    /// True until resolved (and again after `reopened`).
    open: bool,
    /// Per rule id.
    tracks: BTreeMap<String, Track>,
}

impl Report {
    /// The hit of `rule` for report `id` at `time`: overdue (fires) or not (clears).
    fn hit(&self, rule: &ReportDeadlineRule, id: &str, time: Time, overdue: bool) -> HitRow {
        let mut labels: Labels = vec![
            ("category".to_string(), self.category.clone()),
            ("grid".to_string(), self.grid.clone()),
            ("level".to_string(), LEVELS[self.level.min(2)].to_string()),
            (RULE_KIND_LABEL.to_string(), RULE_KIND.to_string()),
        ];
        labels.sort();
        let hours = time.saturating_sub(self.start) as f64 / HOUR_MS;
        let alarm = rule.hit_alarm();
        (
            (alarm.id.clone(), id.to_string()),
            RuleHit {
                time,
                value: OrderedFloat(if overdue { 1.0 } else { 0.0 }),
                reported: OrderedFloat(hours),
                labels,
                rule: alarm,
            },
        )
    }

    /// Resolves every firing alert at `time` and drops the pending deadlines.
    fn stop(&mut self, id: &str, time: Time, hits: &mut Vec<HitRow>) {
        let tracks = std::mem::take(&mut self.tracks);
        for track in tracks.values() {
            if track.firing {
                hits.push(self.hit(&track.rule, id, time, false));
            }
        }
    }

    /// Starts the timer of every watching rule at `time`; returns the deadlines to schedule.
    fn restart(
        &mut self,
        rules: &BTreeMap<String, ReportDeadlineRule>,
        time: Time,
        scheduled: &mut Vec<Time>,
    ) {
        self.start = time;
        for (id, rule) in rules {
            if rule.watches(&self.category) {
                let deadline = time.saturating_add(rule.deadline_ms);
                self.tracks.insert(
                    id.clone(),
                    Track {
                        rule: rule.clone(),
                        deadline: Some(deadline),
                        firing: false,
                    },
                );
                scheduled.push(deadline);
            }
        }
    }
}

/// Applies the rule changes of one time: returns the (report, deadline) pairs to schedule.
fn apply_rules(
    rules: &mut BTreeMap<String, ReportDeadlineRule>,
    reports: &mut FxHashMap<String, Report>,
    changes: Vec<(ReportDeadlineRule, Diff)>,
    time: Time,
    hits: &mut Vec<HitRow>,
) -> Vec<(String, Time)> {
    let mut touched: Vec<String> = Vec::new();
    for (rule, diff) in &changes {
        if *diff < 0 && rules.get(&rule.alarm.id) == Some(rule) {
            rules.remove(&rule.alarm.id);
            touched.push(rule.alarm.id.clone());
        }
    }
    for (rule, diff) in changes {
        if diff > 0 {
            touched.push(rule.alarm.id.clone());
            rules.insert(rule.alarm.id.clone(), rule);
        }
    }
    touched.sort();
    touched.dedup();
    let mut scheduled = Vec::new();
    for (id, report) in reports.iter_mut() {
        for rule_id in &touched {
            let rule = rules.get(rule_id).filter(|r| r.watches(&report.category));
            let old = report.tracks.remove(rule_id);
            match (rule, old) {
                (None, Some(old)) => {
                    if old.firing {
                        hits.push(report.hit(&old.rule, id, time, false));
                    }
                }
                (None, None) => {}
                (Some(rule), Some(old)) if old.firing => {
                    report.tracks.insert(
                        rule_id.clone(),
                        Track {
                            rule: rule.clone(),
                            deadline: None,
                            firing: true,
                        },
                    );
                }
                (Some(rule), _) if report.open => {
                    let deadline = report.start.saturating_add(rule.deadline_ms).max(time);
                    report.tracks.insert(
                        rule_id.clone(),
                        Track {
                            rule: rule.clone(),
                            deadline: Some(deadline),
                            firing: false,
                        },
                    );
                    scheduled.push((id.clone(), deadline));
                }
                (Some(_), _) => {}
            }
        }
    }
    scheduled
}

/// Applies one event of report `id` at `time`; returns the deadlines to schedule.
fn apply_event(
    rules: &BTreeMap<String, ReportDeadlineRule>,
    reports: &mut FxHashMap<String, Report>,
    id: &str,
    (kind, category, grid): (ReportKind, &str, &str),
    time: Time,
    hits: &mut Vec<HitRow>,
) -> Vec<Time> {
    let mut scheduled = Vec::new();
    match (reports.get_mut(id), kind) {
        (None, ReportKind::Created) => {
            let mut report = Report {
                category: category.to_string(),
                grid: grid.to_string(),
                level: 0,
                start: time,
                open: true,
                tracks: BTreeMap::new(),
            };
            report.restart(rules, time, &mut scheduled);
            reports.insert(id.to_string(), report);
        }
        (None, _) => {}
        (Some(report), ReportKind::Escalated) if report.open && report.level < 2 => {
            report.stop(id, time, hits);
            report.level += 1;
            report.restart(rules, time, &mut scheduled);
        }
        (Some(report), ReportKind::Resolved) if report.open => {
            report.stop(id, time, hits);
            report.open = false;
        }
        (Some(report), ReportKind::Reopened) if !report.open => {
            report.open = true;
            report.restart(rules, time, &mut scheduled);
        }
        (Some(_), _) => {}
    }
    scheduled
}

/// A deadline of report `id` came due at `time`: fires every rule whose live deadline it is.
fn on_timer(reports: &mut FxHashMap<String, Report>, id: &str, time: Time, hits: &mut Vec<HitRow>) {
    let Some(report) = reports.get_mut(id) else {
        return;
    };
    if !report.open {
        return;
    }
    let mut fired = Vec::new();
    for track in report.tracks.values_mut() {
        if !track.firing && track.deadline == Some(time) {
            track.firing = true;
            track.deadline = None;
            fired.push(track.rule.clone());
        }
    }
    for rule in fired {
        hits.push(report.hit(&rule, id, time, true));
    }
}

/// Updates of one time, held until the frontier passes it, with the capability to emit at it.
type Waiting = (Capability<Time>, Vec<(Input, Diff)>);

/// Deadlines of one time, with the capability to emit at it.
type Due = (Capability<Time>, Vec<String>);

/// Times unresolved citizen reports.
pub trait ReportDeadlineHits<'s> {
    /// One hit (value 1) per (rule, report) at the event time the report has been unresolved
    /// for the rule's deadline since its timer started, and one (value 0) when that ends
    /// (resolved, escalated, rule deleted); each reports the hours since the timer started.
    fn report_deadline_hits(
        self,
        rules: VecCollection<'s, Time, ReportDeadlineRule, Diff>,
    ) -> VecCollection<'s, Time, HitRow, Diff>;
}

impl<'s> ReportDeadlineHits<'s> for VecCollection<'s, Time, ReportEventRow, Diff> {
    fn report_deadline_hits(
        self,
        rules: VecCollection<'s, Time, ReportDeadlineRule, Diff>,
    ) -> VecCollection<'s, Time, HitRow, Diff> {
        let peers = self.scope().peers() as u64;
        // Every worker needs every rule: one copy per worker, routed by its index.
        let rules = rules.flat_map(move |rule| {
            (0..peers).map(move |worker| (worker, Input::Rule(rule.clone())))
        });
        let events = self.map(|row| (row.0.hashed(), Input::Event(row)));
        let exchange = Exchange::new(|update: &((u64, Input), Time, Diff)| update.0.0);
        rules
            .concat(events)
            .inner
            .unary_frontier(exchange, "ReportDeadline", |_capability, _info| {
                let mut waiting: BTreeMap<Time, Waiting> = BTreeMap::new();
                let mut timers: BTreeMap<Time, Due> = BTreeMap::new();
                let mut rules: BTreeMap<String, ReportDeadlineRule> = BTreeMap::new();
                let mut reports: FxHashMap<String, Report> = FxHashMap::default();
                move |(input, frontier), output| {
                    input.for_each(|capability, data| {
                        for ((_, update), time, diff) in data.drain(..) {
                            waiting
                                .entry(time)
                                .or_insert_with(|| (capability.delayed(&time, 0), Vec::new()))
                                .1
                                .push((update, diff));
                        }
                    });
                    // At the end of the input nothing is overdue: deadlines are dropped.
                    let closed = frontier.is_empty();
                    if closed {
                        timers.clear();
                    }
                    loop {
                        let next_update = waiting.keys().next().copied();
                        let next_timer = timers.keys().next().copied();
                        let Some(time) = next_update.into_iter().chain(next_timer).min() else {
                            break;
                        };
                        if frontier.less_equal(&time) {
                            break;
                        }
                        let updates = waiting.remove(&time);
                        let due = timers.remove(&time);
                        let capability = match (&updates, &due) {
                            (Some((capability, _)), _) | (None, Some((capability, _))) => {
                                capability.clone()
                            }
                            (None, None) => break,
                        };
                        let mut hits = Vec::new();
                        let mut scheduled: Vec<(String, Time)> = Vec::new();
                        if let Some((_, mut updates)) = updates {
                            consolidate(&mut updates);
                            let mut changes = Vec::new();
                            let mut events = Vec::new();
                            for (update, diff) in updates {
                                match update {
                                    Input::Rule(rule) => changes.push((rule, diff)),
                                    Input::Event(row) if diff > 0 => events.push(row),
                                    Input::Event(_) => {}
                                }
                            }
                            if !changes.is_empty() {
                                scheduled.extend(apply_rules(
                                    &mut rules,
                                    &mut reports,
                                    changes,
                                    time,
                                    &mut hits,
                                ));
                            }
                            events.sort_by(|(a, (ka, ..)), (b, (kb, ..))| {
                                (a, lifecycle_rank(*ka)).cmp(&(b, lifecycle_rank(*kb)))
                            });
                            for (id, (kind, category, grid, _unit)) in &events {
                                for deadline in apply_event(
                                    &rules,
                                    &mut reports,
                                    id,
                                    (*kind, category, grid),
                                    time,
                                    &mut hits,
                                ) {
                                    scheduled.push((id.clone(), deadline));
                                }
                            }
                        }
                        if let Some((_, ids)) = due {
                            for id in &ids {
                                on_timer(&mut reports, id, time, &mut hits);
                            }
                        }
                        if !closed {
                            super::schedule(&mut timers, &capability, scheduled);
                        }
                        if !hits.is_empty() {
                            output
                                .session(&capability)
                                .give_iterator(hits.iter().map(|hit| (hit.clone(), time, 1)));
                            let next = time.saturating_add(1);
                            output
                                .session(&capability.delayed(&next))
                                .give_iterator(hits.into_iter().map(|hit| (hit, next, -1)));
                        }
                    }
                }
            })
            .as_collection()
    }
}

/// The registry entry: the report-deadline rows of `rules` over the report events.
pub(crate) fn hits<'s>(
    sources: &Sources<'s>,
    rules: VecCollection<'s, Time, RuleRow, Diff>,
) -> VecCollection<'s, Time, HitRow, Diff> {
    sources
        .reports
        .clone()
        .report_deadline_hits(rules.flat_map(|row| row.as_report_deadline().cloned()))
}
