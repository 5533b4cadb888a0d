//! `report_deadline` and `follow_up` by hand: each report's events in time order (lifecycle
//! order within one instant), walking the report's timers between its events, with the rule
//! itself changing (added, edited, deleted) at given times.

use std::collections::{BTreeMap, BTreeSet};

use citybrain_model::{ReportKind, TransitionState};

use crate::Time;
use crate::kinds::follow_up::FollowUpRule;
use crate::kinds::report_deadline::ReportDeadlineRule;

/// A report event: (report id, kind, category, event time).
pub type ReportEventAt = (String, ReportKind, String, Time);

/// A transition as the fixed cases compare them: (event time, report, state, level label).
pub type DeadlineTransition = (Time, String, TransitionState, String);

/// One rule id's life: from each time on, the rule as it then is (`None`: deleted), in time
/// order.
pub type RuleLife<R> = [(Time, Option<R>)];

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

/// The level the alert of an open report stands at `now` under `rule`, counting every step
/// due at or before `now` from the timer's `start`, and its next change after `now`.
fn standing(
    rule: &ReportDeadlineRule,
    category: &str,
    (start, level): (Time, usize),
    now: Time,
) -> (Option<usize>, Option<Time>) {
    let Some(deadline) = deadline_of(rule, category) else {
        return (None, None);
    };
    let mut alert = None;
    loop {
        match next_change(rule, deadline, start, level, alert) {
            Some((at, to)) if at <= now => alert = Some(to),
            next => return (alert, next.map(|(at, _)| at)),
        }
    }
}

/// The next change of an alert timed from `start`: not firing, the deadline at the report's
/// level; firing at level `a`, the first ladder step above `a`.
fn next_change(
    rule: &ReportDeadlineRule,
    deadline: u64,
    start: Time,
    level: usize,
    alert: Option<usize>,
) -> Option<(Time, usize)> {
    match alert {
        None => Some((start + deadline, level)),
        Some(a) => rule
            .escalation
            .iter()
            .find(|step| step.level > a)
            .map(|step| (start + deadline + step.overdue_ms, step.level)),
    }
}

/// Walks the alert of an open report (category, open, timer start, level) through the steps
/// of `rule` due strictly before `until` (events at an instant come before its timers).
fn walk_timers(
    rule: Option<&ReportDeadlineRule>,
    (category, open, start, level): (&str, bool, Time, usize),
    until: Time,
    alert: &mut Option<usize>,
    emit: &mut dyn FnMut(Time, TransitionState, usize),
) {
    let Some(rule) = rule.filter(|_| open) else {
        return;
    };
    let Some(deadline) = deadline_of(rule, category) else {
        return;
    };
    while let Some((at, to)) = next_change(rule, deadline, start, level, *alert) {
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

/// The rule of `life` in force at `time`, and whether it changes at `time`.
fn rule_at<R: Clone>(life: &RuleLife<R>, time: Time) -> (Option<R>, bool) {
    let mut rule = None;
    let mut changes = false;
    for (at, r) in life {
        if *at <= time {
            rule = r.clone();
            changes = *at == time;
        }
    }
    (rule, changes)
}

/// The instants of one report: its event times and the rule's change times, in order.
fn instants<R>(
    events: &BTreeSet<(Time, u8, ReportKind, &str)>,
    life: &RuleLife<R>,
) -> BTreeSet<Time> {
    events
        .iter()
        .map(|(t, ..)| *t)
        .chain(life.iter().map(|(t, _)| *t))
        .collect()
}

/// The transitions of `rule` (present from time 0) over `events`, with timers firing only
/// before `end` (when the input closes; events after it still apply); sorted.
pub fn report_deadline_transitions(
    rule: &ReportDeadlineRule,
    events: &[ReportEventAt],
    end: Time,
) -> Vec<DeadlineTransition> {
    report_deadline_transitions_over(&[(0, Some(rule.clone()))], events, end)
}

/// The transitions of one rule id living `life` over `events`, timers firing only before
/// `end`; sorted. A change applies before that instant's events, except that re-timing the
/// open reports under the new rule happens after them (as a timer of that instant); changes
/// must come before `end`.
pub fn report_deadline_transitions_over(
    life: &RuleLife<ReportDeadlineRule>,
    events: &[ReportEventAt],
    end: Time,
) -> Vec<DeadlineTransition> {
    let mut out = Vec::new();
    for (report, events) in by_report(events) {
        let mut known = false;
        let mut category = "";
        let mut open = false;
        let mut level = 0;
        let mut start: Time = 0;
        // The level the alert fires at, while it fires.
        let mut alert: Option<usize> = None;
        let mut emit = |time: Time, state: TransitionState, level: usize| {
            out.push((time, report.to_string(), state, LEVELS[level].to_string()));
        };
        let mut rule: Option<ReportDeadlineRule> = None;
        for time in instants(&events, life) {
            walk_timers(
                rule.as_ref(),
                (category, open, start, level),
                time.min(end),
                &mut alert,
                &mut emit,
            );
            let (now_rule, changes) = rule_at(life, time);
            let mut retime = false;
            if changes {
                rule = now_rule;
                let watching = rule
                    .as_ref()
                    .is_some_and(|r| deadline_of(r, category).is_some());
                if !watching && let Some(from) = alert.take() {
                    emit(time, TransitionState::Resolved, from);
                }
                retime = watching && known && open;
            }
            for (t, _, kind, event_category) in &events {
                if *t != time {
                    continue;
                }
                match kind {
                    ReportKind::Created if !known => {
                        known = true;
                        category = event_category;
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
            if retime
                && open
                && let Some(rule) = &rule
            {
                let (now, _) = standing(rule, category, (start, level), time);
                if now != alert {
                    if let Some(from) = alert {
                        emit(time, TransitionState::Resolved, from);
                    }
                    if let Some(to) = now {
                        emit(time, TransitionState::Firing, to);
                    }
                    alert = now;
                }
            }
        }
        walk_timers(
            rule.as_ref(),
            (category, open, start, level),
            end,
            &mut alert,
            &mut emit,
        );
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
    follow_up_transitions_over(&[(0, Some(rule.clone()))], events, end)
}

/// The transitions of one follow-up rule id living `life` over `events`, timers firing only
/// before `end`; sorted. A change applies before that instant's events, except that re-timing
/// the resolved, unvisited reports under the new rule happens after them; changes must come
/// before `end`.
pub fn follow_up_transitions_over(
    life: &RuleLife<FollowUpRule>,
    events: &[ReportEventAt],
    end: Time,
) -> Vec<DeadlineTransition> {
    let watches = |rule: &FollowUpRule, category: &str| {
        rule.categories.is_empty() || rule.categories.iter().any(|c| c == category)
    };
    let mut out = Vec::new();
    for (report, events) in by_report(events) {
        let mut known = false;
        let mut category = "";
        let mut open = false;
        let mut visited = false;
        let mut level = 0;
        let mut resolved: Time = 0;
        let mut due: Option<Time> = None;
        let mut firing = false;
        let mut emit = |time: Time, state: TransitionState, level: usize| {
            out.push((time, report.to_string(), state, LEVELS[level].to_string()));
        };
        let mut rule: Option<FollowUpRule> = None;
        for time in instants(&events, life) {
            if let Some(at) = due
                && at < time.min(end)
            {
                emit(at, TransitionState::Firing, level);
                firing = true;
                due = None;
            }
            let (now_rule, changes) = rule_at(life, time);
            let mut retime = false;
            if changes {
                rule = now_rule;
                let watching = rule.as_ref().is_some_and(|r| watches(r, category));
                if !watching {
                    if firing {
                        emit(time, TransitionState::Resolved, level);
                        firing = false;
                    }
                    due = None;
                }
                retime = watching && known && !open && !visited;
            }
            for (t, _, kind, event_category) in &events {
                if *t != time {
                    continue;
                }
                match kind {
                    ReportKind::Created if !known => {
                        known = true;
                        category = event_category;
                        open = true;
                    }
                    ReportKind::Escalated if known && open && level < 2 => level += 1,
                    ReportKind::Resolved if known && open => {
                        open = false;
                        visited = false;
                        resolved = time;
                        due = rule
                            .as_ref()
                            .filter(|r| watches(r, category))
                            .map(|r| time + r.due_ms);
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
            if retime
                && !open
                && !visited
                && let Some(rule) = &rule
            {
                let due_at = resolved + rule.due_ms;
                let overdue = due_at <= time;
                if overdue != firing {
                    let state = if overdue {
                        TransitionState::Firing
                    } else {
                        TransitionState::Resolved
                    };
                    emit(time, state, level);
                    firing = overdue;
                }
                due = (!overdue).then_some(due_at);
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
