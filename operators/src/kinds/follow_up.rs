//! The `follow_up` rule kind: a return visit falls due a configured time after a citizen report
//! is resolved (the city does half-month return visits); when no `followed_up` event arrives by
//! then, `follow-up overdue` fires about the report.
//!
//! Semantics, in event time, per (rule, report), from the report's lifecycle events
//! ([`ReportEventRow`]s, the same rows [`crate::report_state`] folds):
//! - the visit falls due `due` after the report's `resolved` event; when no `followed_up`
//!   event arrives in `(resolved, resolved + due)`, the rule fires at event time
//!   `resolved + due` for the alert entity *report id*, with the labels `category`, `grid`,
//!   `level` (the report's level: village, town or district, one step up per `escalated`)
//!   and `rule_kind = "follow_up"`. A `followed_up` event exactly at the due time is in time
//!   (events apply before timers of the same instant);
//! - a `followed_up` event after resolution resolves a firing alert at its time and stops the
//!   timer; one while the report is open is not a return visit and changes nothing;
//! - `reopened` resolves a firing alert at its time and stops the timer (the case is open
//!   again); the next `resolved` starts a new one;
//! - a rule with `categories` watches reports of those categories only (empty: all);
//! - duplicate events (same report, kind and time) are idempotent, a second `created` of a
//!   known report is ignored, and events of a report whose `created` was never seen are
//!   ignored (the report states count them as dead letters);
//! - a rule added or edited later times the resolved, not yet visited reports already known:
//!   at the time of the change, after that time's events, a visit overdue under the new rule
//!   fires and one no longer overdue (a longer `due`) resolves and is timed again; a rule
//!   deleted, or no longer watching the category, resolves its firing alerts at the time of
//!   the change, before that time's events;
//! - timers fire only while the input is open: pending ones are dropped when it ends.
//!
//! The derived value handed to the `for`/hysteresis state machine is `1` (overdue) at the due
//! time and `0` when it ends, against a fixed alarm side (at or above 1, clear below 1, no
//! hold); the reported value is the hours since the report was resolved.
//!
//! Built on [`crate::report_timers`]. State: one record per live report (category, grid,
//! level, whether it is open, when it was resolved, one entry per rule timing it); resolved
//! reports with neither a timer nor a firing alert are forgotten after the retention.

use std::collections::BTreeMap;

use citybrain_model::{Domain, Labels, ReportKind};
use differential_dataflow::VecCollection;
use ordered_float::OrderedFloat;
use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};

use crate::hit::HitRow;
use crate::kinds::report_deadline::report_hit;
use crate::kinds::{KindHits, Sources};
use crate::report_state::ReportEventRow;
use crate::report_timers::{Effects, ReportTimerHits, ReportTimerLogic};
use crate::rule::{Direction, RuleRow, ThresholdRule};
use crate::{Diff, Time};

/// The value of the `rule_kind` label on alerts of this kind.
pub const RULE_KIND: &str = "follow_up";

/// A follow-up rule as a collection row.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct FollowUpRule {
    /// Id, domain (citizen), severity, summary and labels; the metric, scope, levels and hold
    /// are not used (citizen transitions carry no `metric` label).
    pub alarm: ThresholdRule,
    /// The report categories watched, sorted; empty for every category.
    pub categories: Vec<String>,
    /// How long after resolution the return visit falls due, milliseconds (at least 1).
    pub due_ms: u64,
}

impl FollowUpRule {
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

/// One rule's timer of one report.
struct Track {
    /// The rule as it was when the timer was set or fired (to resolve with it).
    rule: FollowUpRule,
    /// The live due time, when not firing.
    due: Option<Time>,
    /// True while the alert fires.
    firing: bool,
}

/// What the operator keeps per known report.
struct Report {
    category: String,
    grid: String,
    /// Escalations seen (index into the levels, at most 2).
    level: usize,
    /// True until resolved (and again after `reopened`).
    open: bool,
    /// When it was last resolved.
    resolved: Time,
    /// True once visited after its last resolution.
    visited: bool,
    /// The time of its last event.
    last: Time,
    /// Per rule id.
    tracks: BTreeMap<String, Track>,
}

impl Report {
    fn hit(&self, rule: &FollowUpRule, id: &str, time: Time, on: bool) -> HitRow {
        report_hit(
            rule.hit_alarm(),
            (id, &self.category, &self.grid),
            (self.level, RULE_KIND),
            (self.resolved, time),
            on,
        )
    }

    /// Resolves every firing alert at `time` and drops the timers.
    fn stop(&mut self, id: &str, time: Time, hits: &mut Vec<HitRow>) {
        let tracks = std::mem::take(&mut self.tracks);
        for track in tracks.values() {
            if track.firing {
                hits.push(self.hit(&track.rule, id, time, false));
            }
        }
    }
}

/// The state of the operator: the rules and the known reports.
#[derive(Default)]
struct FollowUps {
    rules: BTreeMap<String, FollowUpRule>,
    reports: FxHashMap<String, Report>,
}

impl ReportTimerLogic for FollowUps {
    type Rule = FollowUpRule;

    fn rules(&mut self, changes: Vec<(FollowUpRule, Diff)>, time: Time, out: &mut Effects) {
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
                        if old.firing {
                            out.hits.push(report.hit(&old.rule, id, time, false));
                        }
                    }
                    (None, None) => {}
                    (Some(rule), old) if !report.open && !report.visited => {
                        // Re-evaluated under the new rule by a timer at `time`, after this
                        // time's events: fires when the new due time is past, resolves when
                        // it no longer is.
                        report.tracks.insert(
                            rule_id.clone(),
                            Track {
                                rule: rule.clone(),
                                due: Some(time),
                                firing: old.is_some_and(|t| t.firing),
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
                self.reports.insert(
                    id.to_string(),
                    Report {
                        category: category.to_string(),
                        grid: grid.to_string(),
                        level: 0,
                        open: true,
                        resolved: time,
                        visited: false,
                        last: time,
                        tracks: BTreeMap::new(),
                    },
                );
            }
            (None, _) => {}
            (Some(report), kind) => {
                report.last = report.last.max(time);
                match kind {
                    ReportKind::Escalated if report.open && report.level < 2 => {
                        report.level += 1;
                    }
                    ReportKind::Resolved if report.open => {
                        report.open = false;
                        report.resolved = time;
                        report.visited = false;
                        for (rule_id, rule) in &self.rules {
                            if rule.watches(&report.category) {
                                let due = time.saturating_add(rule.due_ms);
                                report.tracks.insert(
                                    rule_id.clone(),
                                    Track {
                                        rule: rule.clone(),
                                        due: Some(due),
                                        firing: false,
                                    },
                                );
                                out.timers.push((id.to_string(), due));
                            }
                        }
                    }
                    ReportKind::Reopened if !report.open => {
                        report.stop(id, time, &mut out.hits);
                        report.open = true;
                    }
                    ReportKind::FollowedUp if !report.open && !report.visited => {
                        report.stop(id, time, &mut out.hits);
                        report.visited = true;
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
        if report.open || report.visited {
            return;
        }
        // Each due track goes to where its rule puts it now (an edited rule may end it).
        let mut changed = Vec::new();
        for track in report.tracks.values_mut() {
            if track.due != Some(time) {
                continue;
            }
            let due_at = report.resolved.saturating_add(track.rule.due_ms);
            let overdue = due_at <= time;
            if overdue != track.firing {
                changed.push((track.rule.clone(), overdue));
            }
            track.firing = overdue;
            track.due = (!overdue).then_some(due_at);
            if !overdue {
                out.timers.push((id.to_string(), due_at));
            }
        }
        for (rule, on) in changed {
            out.hits.push(report.hit(&rule, id, time, on));
        }
    }

    fn prune(&mut self, cutoff: Time) {
        // An open report is kept however long it idles: its resolution starts the visit timer,
        // and the report states keep open reports too, so that resolution is no dead letter.
        self.reports.retain(|_, report| {
            report.open
                || report.last >= cutoff
                || report.tracks.values().any(|t| t.due.is_some() || t.firing)
        });
    }
}

/// Times the return visits after resolution.
pub trait FollowUpHits<'s> {
    /// One hit (value 1) per (rule, report) at the event time its return visit is overdue, and
    /// one (value 0) when that ends (`followed_up`, `reopened`, rule deleted); each reports
    /// the hours since the report was resolved; they carry the registry labels of the report's
    /// grid in `grids`. Reports idle for `retention_ms` are forgotten.
    ///
    /// ```
    /// use citybrain_model::{Domain, Metric, ReportKind, Severity};
    /// use citybrain_operators::Diff;
    /// use citybrain_operators::kinds::follow_up::{FollowUpHits, FollowUpRule};
    /// use citybrain_operators::ordered_float::OrderedFloat;
    /// use citybrain_operators::rule::{Direction, ThresholdRule};
    /// use differential_dataflow::input::Input;
    /// use timely::dataflow::operators::Inspect;
    ///
    /// timely::example(|scope| {
    ///     let (mut events, reports) = scope.new_collection();
    ///     let (mut rules, rule_rows) = scope.new_collection::<FollowUpRule, Diff>();
    ///     let (_, grids) = scope.new_collection();
    ///     reports
    ///         .follow_up_hits(rule_rows, grids, 1_000_000)
    ///         .inspect(|((key, hit), _time, diff)| {
    ///             if *diff > 0 {
    ///                 // Resolved at 20, due 15 later, visited at 50.
    ///                 let expected = if hit.value.0 > 0.0 { 35 } else { 50 };
    ///                 assert_eq!((key.1.as_str(), hit.time), ("R-1", expected));
    ///             }
    ///         });
    ///     let alarm = ThresholdRule {
    ///         id: "visit".into(), domain: Domain::Citizen, metric: Metric::Ch4, scope: vec![],
    ///         direction: Direction::Above, threshold: OrderedFloat(1.0),
    ///         clear: OrderedFloat(1.0), hold_ms: 0, severity: Severity::Info,
    ///         summary: "follow-up overdue".into(), labels: vec![],
    ///     };
    ///     rules.insert(FollowUpRule { alarm, categories: vec![], due_ms: 15 });
    ///     for (kind, time) in [
    ///         (ReportKind::Created, 5),
    ///         (ReportKind::Resolved, 20),
    ///         (ReportKind::FollowedUp, 50),
    ///     ] {
    ///         let event = (kind, "noise".to_string(), "g".to_string(), None);
    ///         events.update_at(("R-1".to_string(), event), time, 1);
    ///     }
    ///     events.advance_to(100);
    ///     rules.advance_to(100);
    /// });
    /// ```
    fn follow_up_hits(
        self,
        rules: VecCollection<'s, Time, FollowUpRule, Diff>,
        grids: VecCollection<'s, Time, (String, Labels), Diff>,
        retention_ms: Time,
    ) -> VecCollection<'s, Time, HitRow, Diff>;
}

impl<'s> FollowUpHits<'s> for VecCollection<'s, Time, ReportEventRow, Diff> {
    fn follow_up_hits(
        self,
        rules: VecCollection<'s, Time, FollowUpRule, Diff>,
        grids: VecCollection<'s, Time, (String, Labels), Diff>,
        retention_ms: Time,
    ) -> VecCollection<'s, Time, HitRow, Diff> {
        self.report_timer_hits(rules, grids, FollowUps::default(), "FollowUp", retention_ms)
    }
}

/// The registry entry: the follow-up rows of `rules` over the report events.
pub(crate) fn hits<'s>(
    sources: &Sources<'s>,
    rules: VecCollection<'s, Time, RuleRow, Diff>,
) -> KindHits<'s> {
    KindHits::anywhere(sources.reports.clone().follow_up_hits(
        rules.flat_map(|row| row.as_follow_up().cloned()),
        sources.citizen_grids(),
        sources.report_retention_ms,
    ))
}
