//! `report_deadline` and `follow_up` by hand: each report's events in time order (lifecycle
//! order within one instant), walking the report's timers between its events.

use std::collections::{BTreeMap, BTreeSet};

use citybrain_model::{ReportKind, TransitionState};

use crate::Time;
use crate::kinds::follow_up::FollowUpRule;
use crate::kinds::report_deadline::ReportDeadlineRule;

/// A report event: (report id, kind, category, event time).
pub type ReportEventAt = (String, ReportKind, String, Time);

/// A transition as the fixed cases compare them: (event time, report, state, level label).
pub type DeadlineTransition = (Time, String, TransitionState, String);

const LEVELS: [&str; 3] = ["village", "town", "district"];

/// Where each kind falls among events of one report at one instant.
fn rank(kind: ReportKind) -> u8 {
    match kind {
        ReportKind::Created => 0,
        ReportKind::Dispatched => 1,
        ReportKind::Escalated => 2,
        ReportKind::Resolved => 3,
        ReportKind::Reopened => 4,
        ReportKind::FollowedUp => 5,
    }
}

/// Each report's distinct events, in (time, lifecycle) order.
fn by_report(events: &[ReportEventAt]) -> BTreeMap<&str, BTreeSet<(Time, u8, ReportKind, &str)>> {
    let mut out: BTreeMap<&str, BTreeSet<(Time, u8, ReportKind, &str)>> = BTreeMap::new();
    for (report, kind, category, time) in events {
        out.entry(report)
            .or_default()
            .insert((*time, rank(*kind), *kind, category));
    }
    out
}

/// The deadline of `category` under `rule`, by reading the rule's fields.
fn deadline_of(rule: &ReportDeadlineRule, category: &str) -> Option<u64> {
    if !rule.categories.is_empty() && !rule.categories.contains(&category.to_string()) {
        return None;
    }
    for (c, ms) in &rule.category_deadlines {
        if c == category {
            return Some(*ms);
        }
    }
    rule.deadline_ms
}

/// Where a report's deadline timer stands between two events.
struct Timer {
    deadline: Option<u64>,
    open: bool,
    start: Time,
    level: usize,
}

impl Timer {
    /// The next change of an open, watched report's alert: (due, level it fires at).
    fn next(&self, rule: &ReportDeadlineRule, alert: Option<usize>) -> Option<(Time, usize)> {
        let d = self.deadline?;
        if !self.open {
            return None;
        }
        match alert {
            None => Some((self.start + d, self.level)),
            Some(a) => {
                for step in &rule.escalation {
                    if step.level > a {
                        return Some((self.start + d + step.overdue_ms, step.level));
                    }
                }
                None
            }
        }
    }

    /// Fires the timers due strictly before `until` (events at an instant come before its
    /// timers).
    fn run(
        &self,
        rule: &ReportDeadlineRule,
        until: Time,
        alert: &mut Option<usize>,
        emit: &mut dyn FnMut(Time, TransitionState, usize),
    ) {
        while let Some((at, to)) = self.next(rule, *alert) {
            if at >= until {
                break;
            }
            if let Some(from) = *alert {
                emit(at, TransitionState::Resolved, from);
            }
            emit(at, TransitionState::Firing, to);
            *alert = Some(to);
        }
    }
}

/// The transitions of `rule` (present from time 0) over `events`, with timers firing only
/// before `end` (when the input closes; events after it still apply); sorted.
pub fn report_deadline_transitions(
    rule: &ReportDeadlineRule,
    events: &[ReportEventAt],
    end: Time,
) -> Vec<DeadlineTransition> {
    let mut out = Vec::new();
    for (report, events) in by_report(events) {
        let mut known = false;
        let mut deadline: Option<u64> = None;
        let mut open = false;
        let mut level = 0;
        let mut start: Time = 0;
        // The level the alert fires at, while it fires.
        let mut alert: Option<usize> = None;
        let mut emit = |time: Time, state: TransitionState, level: usize| {
            out.push((time, report.to_string(), state, LEVELS[level].to_string()));
        };
        for (time, _, kind, category) in events {
            let timer = Timer {
                deadline,
                open,
                start,
                level,
            };
            timer.run(rule, time.min(end), &mut alert, &mut emit);
            match kind {
                ReportKind::Created if !known => {
                    known = true;
                    deadline = deadline_of(rule, category);
                    open = true;
                    start = time;
                }
                ReportKind::Escalated if known && open && level < 2 => {
                    if let Some(from) = alert.take() {
                        emit(time, TransitionState::Resolved, from);
                    }
                    level += 1;
                    start = time;
                }
                ReportKind::Resolved if known && open => {
                    if let Some(from) = alert.take() {
                        emit(time, TransitionState::Resolved, from);
                    }
                    open = false;
                }
                ReportKind::Reopened if known && !open => {
                    open = true;
                    start = time;
                }
                _ => {}
            }
        }
        let timer = Timer {
            deadline,
            open,
            start,
            level,
        };
        timer.run(rule, end, &mut alert, &mut emit);
    }
    out.sort();
    out
}

/// The transitions of the follow-up `rule` (present from time 0) over `events`, with timers
/// firing only before `end`; sorted.
pub fn follow_up_transitions(
    rule: &FollowUpRule,
    events: &[ReportEventAt],
    end: Time,
) -> Vec<DeadlineTransition> {
    let mut out = Vec::new();
    for (report, events) in by_report(events) {
        let mut known = false;
        let mut watched = false;
        let mut open = false;
        let mut visited = false;
        let mut level = 0;
        let mut due: Option<Time> = None;
        let mut firing = false;
        let mut emit = |time: Time, state: TransitionState, level: usize| {
            out.push((time, report.to_string(), state, LEVELS[level].to_string()));
        };
        for (time, _, kind, category) in events {
            if let Some(at) = due
                && at < time.min(end)
            {
                emit(at, TransitionState::Firing, level);
                firing = true;
                due = None;
            }
            match kind {
                ReportKind::Created if !known => {
                    known = true;
                    watched = rule.categories.is_empty()
                        || rule.categories.contains(&category.to_string());
                    open = true;
                }
                ReportKind::Escalated if known && open && level < 2 => level += 1,
                ReportKind::Resolved if known && open => {
                    open = false;
                    visited = false;
                    due = watched.then_some(time + rule.due_ms);
                }
                ReportKind::Reopened if known && !open => {
                    if firing {
                        emit(time, TransitionState::Resolved, level);
                        firing = false;
                    }
                    due = None;
                    open = true;
                }
                ReportKind::FollowedUp if known && !open && !visited => {
                    if firing {
                        emit(time, TransitionState::Resolved, level);
                        firing = false;
                    }
                    due = None;
                    visited = true;
                }
                _ => {}
            }
        }
        if let Some(at) = due
            && at < end
        {
            emit(at, TransitionState::Firing, level);
        }
    }
    out.sort();
    out
}
