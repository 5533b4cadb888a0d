//! The `report_deadline` rule kind: a citizen report left unresolved for longer than its
//! category's deadline raises an alert about the report, and an escalation ladder hands the
//! alert up (village -> town -> district) the longer it stays unresolved.
//!
//! Semantics, in event time, per (rule, report), from the report's lifecycle events
//! ([`ReportEventRow`]s, the same rows [`crate::report_state`] folds):
//! - the timer starts at the report's `created` event and restarts at each `escalated` event
//!   (one level up: village -> town -> district; an escalation past `district`, or of a
//!   resolved report, changes nothing, as in the report states) and at `reopened`;
//! - the deadline is the rule's deadline for the report's category
//!   ([`ReportDeadlineRule::deadline_for`]); when no `resolved` event arrives in
//!   `(start, start + deadline)`, the rule fires at event time `start + deadline` for the alert
//!   entity *report id* at the report's current level, with the labels `category`, `grid`,
//!   `level` and `rule_kind = "report_deadline"`. A `resolved` event exactly at the deadline
//!   is in time (events apply before timers of the same instant);
//! - escalation ladder ([`ReportDeadlineRule::escalation`]): when the report is still
//!   unresolved `overdue` after its deadline, the alert moves to the step's level: at that
//!   event time the alert at the lower level resolves and one at the step's level fires (one
//!   transition each, the `level` label telling where it is routed). Steps at or below the
//!   report's own level are skipped;
//! - a `resolved` event resolves a firing alert at its time and stops the timer; `reopened`
//!   restarts the timer at its time; an `escalated` event resolves a firing alert at its time
//!   (the report moved up) and restarts the timer, so each unresolved level is one alert;
//! - duplicate events (same report, kind and time) are idempotent, a second `created` of a
//!   known report is ignored, and events of a report whose `created` was never seen are
//!   ignored (the report states count them as dead letters);
//! - a rule added or edited later times the open reports already known from their last start:
//!   at the time of the change, after that time's events, each alert moves to where the new
//!   rule puts it (steps already due apply at once, to the highest; an alert the new rule does
//!   not yet call overdue, say after a longer deadline, resolves); a rule deleted, or no
//!   longer watching the category, resolves its firing alerts at the time of the change,
//!   before that time's events;
//! - timers fire only while the input is open: when it ends (shutdown, the end of a replay),
//!   pending timers are dropped.
//!
//! The derived value handed to the `for`/hysteresis state machine is `1` (overdue) at a timer
//! and `0` when it ends, against a fixed alarm side (at or above 1, clear below 1, no hold);
//! the reported value is the hours since the timer started.
//!
//! Built on [`crate::report_timers`]. State: one record per live report (its category, grid,
//! level, timer start and one entry per rule timing it); resolved reports with neither a timer
//! nor a firing alert are forgotten after the retention.

use std::collections::BTreeMap;
use std::sync::Arc;

use citybrain_model::{Domain, Labels, ReportKind};
use differential_dataflow::VecCollection;
use ordered_float::OrderedFloat;
use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};

use crate::hit::{HitRow, RuleHit};
use crate::kinds::absence::RULE_KIND_LABEL;
use crate::kinds::{KindHits, Sources};
use crate::report_state::{LEVELS, ReportEventRow};
use crate::report_timers::{Effects, ReportTimerHits, ReportTimerLogic};
use crate::rule::{Direction, RuleRow, ThresholdRule};
use crate::{Diff, EntityId, Time};

/// The value of the `rule_kind` label on alerts of this kind.
pub const RULE_KIND: &str = "report_deadline";

/// Milliseconds per hour.
const HOUR_MS: f64 = 3_600_000.0;

/// One step of an escalation ladder.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct EscalationStep {
    /// How long past its deadline the report must be unresolved, milliseconds (at least 1).
    pub overdue_ms: u64,
    /// The level the alert moves to: an index into [`LEVELS`] (1 town, 2 district).
    pub level: usize,
}

/// A report-deadline rule as a collection row.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ReportDeadlineRule {
    /// Id, domain (citizen), severity, summary and labels; the metric, scope, levels and hold
    /// are not used (citizen transitions carry no `metric` label).
    pub alarm: ThresholdRule,
    /// The report categories watched, sorted; empty for every category.
    pub categories: Vec<String>,
    /// The deadline of categories without their own, milliseconds (at least 1); `None`: only
    /// the categories of `category_deadlines` are watched.
    pub deadline_ms: Option<u64>,
    /// Deadlines of single categories, milliseconds (at least 1), sorted by category.
    pub category_deadlines: Vec<(String, u64)>,
    /// The escalation ladder: overdue times strictly increasing, levels strictly increasing.
    pub escalation: Vec<EscalationStep>,
}

impl ReportDeadlineRule {
    /// A rule with one deadline for every category of `categories` (empty: all) and no ladder.
    pub fn new(alarm: ThresholdRule, categories: Vec<String>, deadline_ms: u64) -> Self {
        ReportDeadlineRule {
            alarm,
            categories,
            deadline_ms: Some(deadline_ms),
            category_deadlines: Vec::new(),
            escalation: Vec::new(),
        }
    }

    /// The deadline of reports of `category`, milliseconds; `None` when they are not watched.
    pub fn deadline_for(&self, category: &str) -> Option<u64> {
        if !self.categories.is_empty() && !self.categories.iter().any(|c| c == category) {
            return None;
        }
        self.category_deadlines
            .iter()
            .find(|(c, _)| c == category)
            .map(|(_, ms)| *ms)
            .or(self.deadline_ms)
    }

    /// True when reports of `category` are watched by this rule.
    pub fn watches(&self, category: &str) -> bool {
        self.deadline_for(category).is_some()
    }

    /// The longest time from a timer's start to the last step of the ladder, milliseconds.
    pub fn longest_ms(&self) -> u64 {
        let deadline = self
            .category_deadlines
            .iter()
            .map(|(_, ms)| *ms)
            .chain(self.deadline_ms)
            .max()
            .unwrap_or(0);
        let overdue = self.escalation.last().map_or(0, |s| s.overdue_ms);
        deadline.saturating_add(overdue)
    }

    /// The next change of an alert timed from `start` with `deadline`: (event time, level it
    /// fires at). Not firing: the deadline, at the report's `level`; firing at `at`: the first
    /// ladder step above it.
    pub fn next_step(
        &self,
        start: Time,
        deadline: u64,
        firing: Option<usize>,
        level: usize,
    ) -> Option<(Time, usize)> {
        let overdue = start.saturating_add(deadline);
        match firing {
            None => Some((overdue, level)),
            Some(at) => self
                .escalation
                .iter()
                .find(|step| step.level > at)
                .map(|step| (overdue.saturating_add(step.overdue_ms), step.level)),
        }
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

/// The hit of a citizen rule for report `id` at `time`: on (fires) or off (clears), with the
/// labels `category`, `grid`, `level` and `rule_kind`, reporting the hours since `start`.
/// Shared by the citizen kinds.
pub(crate) fn report_hit(
    rule: ThresholdRule,
    (id, category, grid): (&str, &str, &str),
    (level, rule_kind): (usize, &str),
    (start, time): (Time, Time),
    on: bool,
) -> HitRow {
    let mut labels: Labels = vec![
        ("category".to_string(), category.to_string()),
        ("grid".to_string(), grid.to_string()),
        ("level".to_string(), LEVELS[level.min(2)].to_string()),
        (RULE_KIND_LABEL.to_string(), rule_kind.to_string()),
    ];
    labels.sort();
    let hours = time.saturating_sub(start) as f64 / HOUR_MS;
    (
        (rule.id.as_str().into(), EntityId::from(id)),
        RuleHit {
            time,
            value: OrderedFloat(if on { 1.0 } else { 0.0 }),
            reported: OrderedFloat(hours),
            labels: Arc::new(labels),
            rule: Arc::new(rule),
        },
    )
}

/// One rule's timer of one report.
struct Track {
    /// The rule as it was when the timer was set or fired (to resolve with it).
    rule: ReportDeadlineRule,
    /// The live timer: when the alert next changes.
    due: Option<Time>,
    /// The level the alert fires at, while it fires.
    firing: Option<usize>,
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
    /// The time of its last event.
    last: Time,
    /// Per rule id.
    tracks: BTreeMap<String, Track>,
}

impl Report {
    fn hit(
        &self,
        rule: &ReportDeadlineRule,
        id: &str,
        level: usize,
        time: Time,
        on: bool,
    ) -> HitRow {
        report_hit(
            rule.hit_alarm(),
            (id, &self.category, &self.grid),
            (level, RULE_KIND),
            (self.start, time),
            on,
        )
    }

    /// Resolves every firing alert at `time` and drops the timers.
    fn stop(&mut self, id: &str, time: Time, hits: &mut Vec<HitRow>) {
        let tracks = std::mem::take(&mut self.tracks);
        for track in tracks.values() {
            if let Some(level) = track.firing {
                hits.push(self.hit(&track.rule, id, level, time, false));
            }
        }
    }

    /// Starts the timer of every watching rule at `time`.
    fn restart(
        &mut self,
        id: &str,
        rules: &BTreeMap<String, ReportDeadlineRule>,
        time: Time,
        out: &mut Effects,
    ) {
        self.start = time;
        for (rule_id, rule) in rules {
            if let Some(deadline) = rule.deadline_for(&self.category) {
                let due = time.saturating_add(deadline);
                self.tracks.insert(
                    rule_id.clone(),
                    Track {
                        rule: rule.clone(),
                        due: Some(due),
                        firing: None,
                    },
                );
                out.timers.push((id.to_string(), due));
            }
        }
    }

    /// Moves the alert of `rule_id` to where its rule puts it at `now` (every step due at or
    /// before `now`, counted from the timer's start, so an edited rule can also lower or end
    /// it), emitting at most one resolve and one fire, and sets its next timer.
    fn advance(&mut self, id: &str, rule_id: &str, now: Time, out: &mut Effects) {
        let (start, level) = (self.start, self.level);
        let Some(track) = self.tracks.get(rule_id) else {
            return;
        };
        let deadline = track.rule.deadline_for(&self.category);
        let mut target = None;
        let next = loop {
            let Some(deadline) = deadline else {
                break None;
            };
            match track.rule.next_step(start, deadline, target, level) {
                Some((at, step)) if at <= now => target = Some(step),
                next => break next,
            }
        };
        let (rule, was) = (track.rule.clone(), track.firing);
        if target != was {
            if let Some(old) = was {
                out.hits.push(self.hit(&rule, id, old, now, false));
            }
            if let Some(new) = target {
                out.hits.push(self.hit(&rule, id, new, now, true));
            }
        }
        if let Some(track) = self.tracks.get_mut(rule_id) {
            track.firing = target;
            track.due = next.map(|(at, _)| at);
        }
        if let Some((at, _)) = next {
            out.timers.push((id.to_string(), at));
        }
    }
}

/// The state of the operator: the rules and the known reports.
#[derive(Default)]
struct Deadlines {
    rules: BTreeMap<String, ReportDeadlineRule>,
    reports: FxHashMap<String, Report>,
}

impl ReportTimerLogic for Deadlines {
    type Rule = ReportDeadlineRule;

    fn rules(&mut self, changes: Vec<(ReportDeadlineRule, Diff)>, time: Time, out: &mut Effects) {
        let mut touched: Vec<String> = Vec::new();
        for (rule, diff) in &changes {
            if *diff < 0 && self.rules.get(&rule.alarm.id) == Some(rule) {
                self.rules.remove(&rule.alarm.id);
                touched.push(rule.alarm.id.clone());
            }
        }
        for (rule, diff) in changes {
            if diff > 0 {
                touched.push(rule.alarm.id.clone());
                self.rules.insert(rule.alarm.id.clone(), rule);
            }
        }
        touched.sort();
        touched.dedup();
        for (id, report) in self.reports.iter_mut() {
            for rule_id in &touched {
                let rule = self
                    .rules
                    .get(rule_id)
                    .filter(|r| r.watches(&report.category));
                let old = report.tracks.remove(rule_id);
                match (rule, old) {
                    (None, Some(old)) => {
                        if let Some(level) = old.firing {
                            out.hits.push(report.hit(&old.rule, id, level, time, false));
                        }
                    }
                    (None, None) => {}
                    (Some(rule), old) if report.open => {
                        // Re-evaluated under the new rule by a timer at `time`, after this
                        // time's events: the alert moves to where the new rule puts it (fires,
                        // climbs, or resolves when the new deadline is not yet past).
                        report.tracks.insert(
                            rule_id.clone(),
                            Track {
                                rule: rule.clone(),
                                due: Some(time),
                                firing: old.and_then(|t| t.firing),
                            },
                        );
                        out.timers.push((id.clone(), time));
                    }
                    (Some(_), _) => {}
                }
            }
        }
    }

    fn event(
        &mut self,
        id: &str,
        (kind, category, grid): (ReportKind, &str, &str),
        time: Time,
        out: &mut Effects,
    ) {
        match (self.reports.get_mut(id), kind) {
            (None, ReportKind::Created) => {
                let mut report = Report {
                    category: category.to_string(),
                    grid: grid.to_string(),
                    level: 0,
                    start: time,
                    open: true,
                    last: time,
                    tracks: BTreeMap::new(),
                };
                report.restart(id, &self.rules, time, out);
                self.reports.insert(id.to_string(), report);
            }
            (None, _) => {}
            (Some(report), kind) => {
                report.last = report.last.max(time);
                match kind {
                    ReportKind::Escalated if report.open && report.level < 2 => {
                        report.stop(id, time, &mut out.hits);
                        report.level += 1;
                        report.restart(id, &self.rules, time, out);
                    }
                    ReportKind::Resolved if report.open => {
                        report.stop(id, time, &mut out.hits);
                        report.open = false;
                    }
                    ReportKind::Reopened if !report.open => {
                        report.open = true;
                        report.restart(id, &self.rules, time, out);
                    }
                    _ => {}
                }
            }
        }
    }

    fn timer(&mut self, id: &str, time: Time, out: &mut Effects) {
        let Some(report) = self.reports.get_mut(id) else {
            return;
        };
        if !report.open {
            return;
        }
        let due: Vec<String> = report
            .tracks
            .iter()
            .filter(|(_, track)| track.due == Some(time))
            .map(|(rule_id, _)| rule_id.clone())
            .collect();
        for rule_id in due {
            report.advance(id, &rule_id, time, out);
        }
    }

    fn prune(&mut self, cutoff: Time) {
        // An open report is kept however long it is idle: a rule added later for its category
        // times it from its timer's start, as it would have if it had been there all along.
        self.reports.retain(|_, report| {
            report.open
                || report.last >= cutoff
                || report
                    .tracks
                    .values()
                    .any(|t| t.due.is_some() || t.firing.is_some())
        });
    }
}

/// Times unresolved citizen reports.
pub trait ReportDeadlineHits<'s> {
    /// One hit (value 1) per (rule, report) at the event time the report has been unresolved
    /// for its category's deadline since its timer started, one (value 0) when that ends
    /// (resolved, escalated, rule deleted), and at each step of the escalation ladder one of
    /// each (the old level resolves, the new one fires); each reports the hours since the
    /// timer started; they carry the registry labels of the report's grid in `grids`. Resolved
    /// reports idle for `retention_ms` are forgotten.
    ///
    /// ```
    /// use citybrain_model::{Domain, Metric, ReportKind, Severity};
    /// use citybrain_operators::Diff;
    /// use citybrain_operators::kinds::report_deadline::{
    ///     EscalationStep, ReportDeadlineHits, ReportDeadlineRule,
    /// };
    /// use citybrain_operators::ordered_float::OrderedFloat;
    /// use citybrain_operators::rule::{Direction, ThresholdRule};
    /// use differential_dataflow::input::Input;
    /// use timely::dataflow::operators::Inspect;
    ///
    /// timely::example(|scope| {
    ///     let (mut events, reports) = scope.new_collection();
    ///     let (mut rules, rule_rows) = scope.new_collection::<ReportDeadlineRule, Diff>();
    ///     let (_, grids) = scope.new_collection();
    ///     reports
    ///         .report_deadline_hits(rule_rows, grids, 1_000_000)
    ///         .inspect(|((_, hit), _time, diff)| {
    ///             if *diff > 0 {
    ///                 let level = &hit.labels.iter().find(|(k, _)| k == "level").unwrap().1;
    ///                 // Village fires at 5 + 10; at 5 + 10 + 20 village resolves, town fires.
    ///                 let expected = match (hit.time, hit.value.0 > 0.0) {
    ///                     (15, true) => "village",
    ///                     (35, false) => "village",
    ///                     (35, true) => "town",
    ///                     other => panic!("{other:?}"),
    ///                 };
    ///                 assert_eq!(level, expected);
    ///             }
    ///         });
    ///     let alarm = ThresholdRule {
    ///         id: "late".into(), domain: Domain::Citizen, metric: Metric::Ch4, scope: vec![],
    ///         direction: Direction::Above, threshold: OrderedFloat(1.0),
    ///         clear: OrderedFloat(1.0), hold_ms: 0, severity: Severity::Warning,
    ///         summary: "late".into(), labels: vec![],
    ///     };
    ///     let mut rule = ReportDeadlineRule::new(alarm, vec![], 10);
    ///     rule.escalation = vec![EscalationStep { overdue_ms: 20, level: 1 }];
    ///     rules.insert(rule);
    ///     let created = (ReportKind::Created, "noise".to_string(), "g".to_string(), None);
    ///     events.update_at(("R-1".to_string(), created), 5, 1);
    ///     events.advance_to(100);
    ///     rules.advance_to(100);
    /// });
    /// ```
    fn report_deadline_hits(
        self,
        rules: VecCollection<'s, Time, ReportDeadlineRule, Diff>,
        grids: VecCollection<'s, Time, (String, Labels), Diff>,
        retention_ms: Time,
    ) -> VecCollection<'s, Time, HitRow, Diff>;
}

impl<'s> ReportDeadlineHits<'s> for VecCollection<'s, Time, ReportEventRow, Diff> {
    fn report_deadline_hits(
        self,
        rules: VecCollection<'s, Time, ReportDeadlineRule, Diff>,
        grids: VecCollection<'s, Time, (String, Labels), Diff>,
        retention_ms: Time,
    ) -> VecCollection<'s, Time, HitRow, Diff> {
        self.report_timer_hits(
            rules,
            grids,
            Deadlines::default(),
            "ReportDeadline",
            retention_ms,
        )
    }
}

/// The registry entry: the report-deadline rows of `rules` over the report events.
pub(crate) fn hits<'s>(
    sources: &Sources<'s>,
    rules: VecCollection<'s, Time, RuleRow, Diff>,
) -> KindHits<'s> {
    KindHits::anywhere(sources.reports.clone().report_deadline_hits(
        rules.flat_map(|row| row.as_report_deadline().cloned()),
        sources.citizen_grids(),
        sources.report_retention_ms,
    ))
}
