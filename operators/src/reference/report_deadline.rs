//! `report_deadline` by hand: each report's events in time order (lifecycle order within one
//! instant), a timer per report, fired when its deadline passes before the next event.

use std::collections::{BTreeMap, BTreeSet};

use citybrain_model::{ReportKind, TransitionState};

use crate::Time;
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

/// The transitions of `rule` (present from time 0) over `events`, with timers firing only
/// before `end` (when the input closes; events after it still apply); sorted.
pub fn report_deadline_transitions(
    rule: &ReportDeadlineRule,
    events: &[ReportEventAt],
    end: Time,
) -> Vec<DeadlineTransition> {
    // Duplicates count once; per report, in (time, lifecycle) order.
    let mut by_report: BTreeMap<&str, BTreeSet<(Time, u8, ReportKind, &str)>> = BTreeMap::new();
    for (report, kind, category, time) in events {
        by_report
            .entry(report)
            .or_default()
            .insert((*time, rank(*kind), *kind, category));
    }
    let mut out = Vec::new();
    for (report, events) in by_report {
        let mut known = false;
        let mut watched = false;
        let mut open = false;
        let mut level = 0;
        // The running timer's start, while the report is open and not firing.
        let mut start: Option<Time> = None;
        let mut firing = false;
        let mut emit = |time: Time, state: TransitionState, level: usize| {
            out.push((time, report.to_string(), state, LEVELS[level].to_string()));
        };
        for (time, _, kind, category) in events {
            // A deadline strictly before this event fired first (if the input was still open).
            if let Some(s) = start
                && s + rule.deadline_ms < time.min(end)
            {
                emit(s + rule.deadline_ms, TransitionState::Firing, level);
                firing = true;
                start = None;
            }
            match kind {
                ReportKind::Created if !known => {
                    known = true;
                    watched = rule.watches(category);
                    open = true;
                    start = watched.then_some(time);
                }
                ReportKind::Escalated if known && open && level < 2 => {
                    if firing {
                        emit(time, TransitionState::Resolved, level);
                        firing = false;
                    }
                    level += 1;
                    start = watched.then_some(time);
                }
                ReportKind::Resolved if known && open => {
                    if firing {
                        emit(time, TransitionState::Resolved, level);
                        firing = false;
                    }
                    open = false;
                    start = None;
                }
                ReportKind::Reopened if known && !open => {
                    open = true;
                    start = watched.then_some(time);
                }
                _ => {}
            }
        }
        if let Some(s) = start
            && s + rule.deadline_ms < end
        {
            emit(s + rule.deadline_ms, TransitionState::Firing, level);
        }
    }
    out.sort();
    out
}
