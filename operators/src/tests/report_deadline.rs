//! Report-deadline rules: fixed cases with exact transitions (no resolve fires at the deadline,
//! resolved in time never fires, escalation restarts the timer, resolved after firing resolves,
//! reopened restarts, duplicates and unknown reports change nothing, categories filter,
//! per-category deadlines and the escalation ladder), and random report lifecycles under random
//! rules, sent out of order, against the plain-loop reference.

use std::cell::RefCell;
use std::rc::Rc;

use citybrain_model::{
    AlertTransition, Domain, EntityInfo, Metric, ReportKind, Severity, TransitionState,
};
use differential_dataflow::input::Input;
use ordered_float::OrderedFloat;
use timely::dataflow::operators::{Inspect, Probe};

use crate::kinds::report_deadline::{EscalationStep, ReportDeadlineRule};
use crate::reference::{
    RuleChange, RuleLife, report_deadline_transitions, report_deadline_transitions_over,
    sort_transitions,
};
use crate::rule::{Direction, RuleRow, ThresholdRule};
use crate::rule_alerts;

/// An hour, milliseconds.
pub(super) const H: u64 = 3_600_000;

/// The alarm side of the test rules.
pub(super) fn alarm() -> ThresholdRule {
    ThresholdRule {
        id: "report-escalation".into(),
        domain: Domain::Citizen,
        metric: Metric::Ch4,
        scope: vec![],
        direction: Direction::Above,
        threshold: OrderedFloat(1.0),
        clear: OrderedFloat(1.0),
        hold_ms: 0,
        severity: Severity::Warning,
        summary: "Report {entity} ({category}) unresolved at {level} level".into(),
        labels: vec![],
    }
}

/// A 48 h deadline on land and wage disputes.
fn rule() -> RuleRow {
    RuleRow::ReportDeadline(ReportDeadlineRule::new(
        alarm(),
        vec!["land_dispute".into(), "wage_dispute".into()],
        48 * H,
    ))
}

/// 48 h for every category, 24 h for land disputes; to town 24 h past the deadline, to the
/// district 72 h past it.
fn ladder_rule() -> ReportDeadlineRule {
    ReportDeadlineRule {
        alarm: alarm(),
        categories: vec![],
        deadline_ms: Some(48 * H),
        category_deadlines: vec![("land_dispute".into(), 24 * H)],
        escalation: vec![
            EscalationStep {
                overdue_ms: 24 * H,
                level: 1,
            },
            EscalationStep {
                overdue_ms: 72 * H,
                level: 2,
            },
        ],
    }
}

/// A report event: (report, kind, category, time).
pub(super) type Event = (&'static str, ReportKind, &'static str, u64);

/// Generated events: (report index, kind index, hour) on a coarse grid of hours, so events of
/// one report often share an instant and deadlines often fall exactly on an event; even
/// reports are land disputes, odd ones noise.
pub(super) fn random_events(raw: &[(usize, usize, u64)]) -> Vec<Event> {
    raw.iter()
        .map(|&(report, kind, hour)| {
            let category = if report % 2 == 0 {
                "land_dispute"
            } else {
                "noise"
            };
            (REPORTS[report], KINDS[kind], category, hour * H)
        })
        .collect()
}

/// `events` as the references take them.
pub(super) fn owned(events: &[Event]) -> Vec<(String, ReportKind, String, u64)> {
    events
        .iter()
        .map(|(r, k, c, t)| (r.to_string(), *k, c.to_string(), *t))
        .collect()
}

/// Runs [`rule_alerts`] with `rules` from time 0 over report `events` sent in reverse order
/// (all before the frontier moves), up to `end`, then closes the input. Every report is in
/// grid `g1`, registered in town `t1` of district `d1`.
pub(super) fn run(rules: &[RuleRow], events: &[Event], end: u64) -> Vec<AlertTransition> {
    let changes: Vec<RuleChange> = rules.iter().map(|r| (0, r.clone(), 1)).collect();
    run_changes(&changes, events, end)
}

/// [`run`] with the rules changing at given times (all sent before the frontier moves).
pub(super) fn run_changes(
    changes: &[RuleChange],
    events: &[Event],
    end: u64,
) -> Vec<AlertTransition> {
    let changes = changes.to_vec();
    let events = events.to_vec();
    timely::execute_directly(move |worker| {
        let out = Rc::new(RefCell::new(Vec::new()));
        let sink = Rc::clone(&out);
        let (mut reports, mut rule_input, probe) = worker.dataflow::<u64, _, _>(|scope| {
            let (_, readings) = scope.new_collection();
            let grid = EntityInfo::new(
                [
                    ("village", Some("g1".to_string())),
                    ("town", Some("t1".to_string())),
                    ("district", Some("d1".to_string())),
                ],
                0,
            );
            let (_, registry) =
                scope.new_collection_from(vec![((Domain::Citizen, "g1".into()), grid)]);
            let (report_input, reports) = scope.new_collection();
            let (rule_input, rules) = scope.new_collection();
            let (probe, _) = rule_alerts(readings, registry, reports, rules)
                .inspect(move |t: &AlertTransition| sink.borrow_mut().push(t.clone()))
                .probe();
            (report_input, rule_input, probe)
        });
        for (time, rule, diff) in changes {
            rule_input.update_at(rule, time, diff);
        }
        rule_input.close();
        for (report, kind, category, time) in events.into_iter().rev() {
            reports.update_at(
                (
                    report.to_string(),
                    (kind, category.to_string(), "g1".to_string(), None),
                ),
                time,
                1,
            );
        }
        reports.advance_to(end);
        reports.flush();
        while probe.less_than(&end) {
            worker.step();
        }
        reports.close();
        while !probe.done() {
            worker.step();
        }
        let mut result = out.borrow().clone();
        sort_transitions(&mut result);
        result
    })
}

/// (event time, report, state, level label) of each transition.
pub(super) fn seen(transitions: &[AlertTransition]) -> Vec<(u64, String, TransitionState, String)> {
    transitions
        .iter()
        .map(|t| {
            (
                t.event_time,
                t.entity.clone(),
                t.state,
                t.labels.get("level").cloned().unwrap_or_default(),
            )
        })
        .collect()
}

pub(super) fn firing(
    time: u64,
    report: &str,
    level: &str,
) -> (u64, String, TransitionState, String) {
    (time, report.into(), TransitionState::Firing, level.into())
}

pub(super) fn resolved(
    time: u64,
    report: &str,
    level: &str,
) -> (u64, String, TransitionState, String) {
    (time, report.into(), TransitionState::Resolved, level.into())
}

#[test]
fn unresolved_reports_fire_at_the_deadline_and_resolve() {
    use ReportKind::*;
    let events: Vec<Event> = vec![
        // r1: never resolved: fires at 1 h + 48 h.
        ("r1", Created, "land_dispute", H),
        // r2: resolved before the deadline: nothing.
        ("r2", Created, "wage_dispute", H),
        ("r2", Dispatched, "wage_dispute", 2 * H),
        ("r2", Resolved, "wage_dispute", 40 * H),
        // r3: escalated at 30 h (timer restarts), fires at 78 h at town level; resolved at
        // 100 h after firing.
        ("r3", Created, "land_dispute", 0),
        ("r3", Escalated, "land_dispute", 30 * H),
        ("r3", Resolved, "land_dispute", 100 * H),
        // r4: resolved exactly at the deadline: in time.
        ("r4", Created, "land_dispute", 0),
        ("r4", Resolved, "land_dispute", 48 * H),
        // r5: fires at 48 h, escalated at 50 h (resolves, restarts), fires again at 98 h at
        // town level; reopened after resolution restarts the timer.
        ("r5", Created, "wage_dispute", 0),
        ("r5", Escalated, "wage_dispute", 50 * H),
        ("r5", Resolved, "wage_dispute", 99 * H),
        ("r5", Reopened, "wage_dispute", 110 * H),
        // r6: another category: not watched.
        ("r6", Created, "noise", 0),
        // r7: events without `created`: ignored.
        ("r7", Escalated, "land_dispute", H),
    ];
    // Duplicates change nothing.
    let mut doubled = events.clone();
    doubled.extend(events.iter().cloned());
    let expected = vec![
        firing(48 * H, "r5", "village"),
        firing(49 * H, "r1", "village"),
        resolved(50 * H, "r5", "village"),
        firing(78 * H, "r3", "town"),
        firing(98 * H, "r5", "town"),
        resolved(99 * H, "r5", "town"),
        resolved(100 * H, "r3", "town"),
        firing(158 * H, "r5", "town"),
    ];
    let end = 200 * H;
    let once = run(&[rule()], &events, end);
    let mut got = seen(&once);
    got.sort();
    let mut want = expected.clone();
    want.sort();
    assert_eq!(got, want);
    let mut twice = seen(&run(&[rule()], &doubled, end));
    twice.sort();
    assert_eq!(twice, want);
    // Labels and summary of the first transition of r3.
    let r3 = once.iter().find(|t| t.entity == "r3");
    let labels = r3.map(|t| {
        (
            t.labels.get("category").cloned(),
            t.labels.get("grid").cloned(),
            t.labels.get("rule_kind").cloned(),
            t.labels.contains_key("metric"),
            t.summary.clone(),
        )
    });
    assert_eq!(
        labels,
        Some((
            Some("land_dispute".to_string()),
            Some("g1".to_string()),
            Some("report_deadline".to_string()),
            false,
            "Report r3 (land_dispute) unresolved at town level".to_string()
        ))
    );
}

#[test]
fn the_ladder_hands_overdue_reports_up_per_category_deadline() {
    use ReportKind::*;
    let events: Vec<Event> = vec![
        // a: 24 h deadline; village at 24 h, town at 48 h, district at 96 h, resolved at 100 h.
        ("a", Created, "land_dispute", 0),
        ("a", Dispatched, "land_dispute", H),
        ("a", Resolved, "land_dispute", 100 * H),
        // b: the default 48 h; village at 48 h, resolved at 60 h before the town step.
        ("b", Created, "noise", 0),
        ("b", Resolved, "noise", 60 * H),
        // c: escalated to town by people at 10 h: its deadline fires at town (34 h), the
        // ladder's town step is skipped, the district step comes 72 h past the deadline.
        ("c", Created, "land_dispute", 0),
        ("c", Escalated, "land_dispute", 10 * H),
        // d: resolved in time.
        ("d", Created, "noise", 0),
        ("d", Resolved, "noise", 30 * H),
        // e: resolved exactly at the town step: in time for it.
        ("e", Created, "land_dispute", 0),
        ("e", Resolved, "land_dispute", 48 * H),
    ];
    let mut expected = vec![
        firing(24 * H, "a", "village"),
        firing(24 * H, "e", "village"),
        firing(34 * H, "c", "town"),
        firing(48 * H, "a", "town"),
        firing(48 * H, "b", "village"),
        resolved(48 * H, "a", "village"),
        resolved(48 * H, "e", "village"),
        resolved(60 * H, "b", "village"),
        firing(96 * H, "a", "district"),
        resolved(96 * H, "a", "town"),
        resolved(100 * H, "a", "district"),
        firing(106 * H, "c", "district"),
        resolved(106 * H, "c", "town"),
    ];
    expected.sort();
    let mut doubled = events.clone();
    doubled.extend(events.iter().cloned());
    let end = 200 * H;
    let got = run(&[RuleRow::ReportDeadline(ladder_rule())], &doubled, end);
    let mut seen_sorted = seen(&got);
    seen_sorted.sort();
    assert_eq!(seen_sorted, expected);
    let owned = owned(&events);
    assert_eq!(
        report_deadline_transitions(&ladder_rule(), &owned, end),
        expected
    );
    // The step's firing and the lower level's resolve carry distinct ids and their levels.
    let mut at_town: Vec<_> = got
        .iter()
        .filter(|t| t.entity == "a" && t.event_time == 48 * H)
        .map(|t| (t.state, t.labels.get("level").cloned(), t.value))
        .collect();
    // The registry labels of the report's grid name where the alert is routed.
    assert!(
        got.iter()
            .all(|t| t.labels.get("town").map(String::as_str) == Some("t1")
                && t.labels.get("district").map(String::as_str) == Some("d1"))
    );
    at_town.sort_by(|a, b| a.1.cmp(&b.1));
    assert_eq!(
        at_town,
        vec![
            (TransitionState::Firing, Some("town".to_string()), 48.0),
            (TransitionState::Resolved, Some("village".to_string()), 48.0),
        ]
    );
}

#[test]
fn pending_deadlines_are_dropped_at_the_end_of_the_input() {
    let events: Vec<Event> = vec![("r1", ReportKind::Created, "land_dispute", H)];
    assert!(run(&[rule()], &events, 10 * H).is_empty());
}

#[test]
fn an_edited_deadline_re_times_open_reports_at_the_edit() {
    use ReportKind::*;
    let version =
        |hours: u64| RuleRow::ReportDeadline(ReportDeadlineRule::new(alarm(), vec![], hours * H));
    let events: Vec<Event> = vec![
        ("a", Created, "noise", 0),
        ("b", Created, "noise", 10 * H),
        ("c", Created, "noise", 0),
        ("c", Resolved, "noise", 30 * H),
    ];
    // 24 h until 30 h, then 48 h; deleted at 70 h.
    let changes = vec![
        (0, version(24), 1),
        (30 * H, version(24), -1),
        (30 * H, version(48), 1),
        (70 * H, version(48), -1),
    ];
    let got = seen(&run_changes(&changes, &events, 200 * H));
    assert_eq!(
        got,
        vec![
            // a and c overdue at 24 h; at 30 h a is no longer overdue under 48 h (resolves,
            // fires again at 48 h), c is resolved by its own event at 30 h.
            firing(24 * H, "a", "village"),
            firing(24 * H, "c", "village"),
            resolved(30 * H, "a", "village"),
            resolved(30 * H, "c", "village"),
            firing(48 * H, "a", "village"),
            firing(58 * H, "b", "village"),
            // Deleting the rule resolves what it fired.
            resolved(70 * H, "a", "village"),
            resolved(70 * H, "b", "village"),
        ]
    );
}

#[test]
fn an_open_report_idle_past_the_retention_is_timed_by_a_rule_added_later() {
    use ReportKind::*;
    let rule = ReportDeadlineRule::new(alarm(), vec![], 24 * H);
    let events: Vec<Event> = vec![("a", Created, "noise", 0), ("b", Created, "noise", 180 * H)];
    // No rule until 200 h: by then `a` has been idle for more than the 168 h retention.
    let changes = vec![(200 * H, RuleRow::ReportDeadline(rule.clone()), 1)];
    let got = seen(&run_changes(&changes, &events, 210 * H));
    assert_eq!(
        got,
        vec![
            firing(200 * H, "a", "village"),
            firing(204 * H, "b", "village")
        ]
    );
    let life = vec![(200 * H, Some(rule))];
    let expected = report_deadline_transitions_over(&life, &owned(&events), 210 * H);
    assert_eq!(got, expected);
}

/// The rule of [`rule`], as its kind's row.
fn deadline_rule() -> ReportDeadlineRule {
    match rule() {
        RuleRow::ReportDeadline(rule) => rule,
        _ => unreachable!("rule() is a report deadline rule"),
    }
}

pub(super) const REPORTS: [&str; 5] = ["r0", "r1", "r2", "r3", "r4"];
pub(super) const KINDS: [ReportKind; 6] = [
    ReportKind::Created,
    ReportKind::Dispatched,
    ReportKind::Escalated,
    ReportKind::Resolved,
    ReportKind::Reopened,
    ReportKind::FollowedUp,
];

/// A rule of the property test: default deadline, land-dispute deadline, ladder, filter.
fn random_rule(default: usize, land: usize, ladder: usize, only_land: bool) -> ReportDeadlineRule {
    let step = |overdue_h: u64, level: usize| EscalationStep {
        overdue_ms: overdue_h * H,
        level,
    };
    ReportDeadlineRule {
        alarm: alarm(),
        categories: if only_land {
            vec!["land_dispute".into()]
        } else {
            vec![]
        },
        deadline_ms: [None, Some(48 * H), Some(30 * H)][default],
        category_deadlines: match land {
            0 => vec![],
            1 => vec![("land_dispute".into(), 24 * H)],
            _ => vec![("land_dispute".into(), 36 * H)],
        },
        escalation: match ladder {
            0 => vec![],
            1 => vec![step(20, 1)],
            2 => vec![step(12, 2)],
            _ => vec![step(10, 1), step(30, 2)],
        },
    }
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]
    #[test]
    fn random_lifecycles_match_the_reference(
        raw in proptest::collection::vec((0usize..5, 0usize..6, 0u64..160), 1..40),
        end_hours in 100u64..260,
    ) {
        // Even reports (land disputes) are watched.
        let events = random_events(&raw);
        let end = end_hours * H;
        let mut got = seen(&run(&[rule()], &events, end));
        got.sort();
        let owned = owned(&events);
        let expected = report_deadline_transitions(&deadline_rule(), &owned, end);
        proptest::prop_assert_eq!(got, expected);
    }

    #[test]
    fn random_ladders_match_the_reference(
        raw in proptest::collection::vec((0usize..5, 0usize..6, 0u64..200), 1..40),
        end_hours in 100u64..300,
        shape in (0usize..3, 0usize..3, 0usize..4, proptest::bool::ANY),
    ) {
        let (default, land, ladder, only_land) = shape;
        proptest::prop_assume!(default > 0 || land > 0);
        let rule = random_rule(default, land, ladder, only_land);
        let events = random_events(&raw);
        let end = end_hours * H;
        let mut got = seen(&run(&[RuleRow::ReportDeadline(rule.clone())], &events, end));
        got.sort();
        let owned = owned(&events);
        let expected = report_deadline_transitions(&rule, &owned, end);
        proptest::prop_assert_eq!(got, expected);
    }
}

/// A rule's life as rule changes: each version retracted when the next takes over.
pub(super) fn changes_of<R: Clone>(
    life: &RuleLife<R>,
    row: impl Fn(R) -> RuleRow,
) -> Vec<RuleChange> {
    let mut changes = Vec::new();
    let mut current: Option<R> = None;
    for (time, rule) in life {
        if let Some(old) = current.take() {
            changes.push((*time, row(old), -1));
        }
        if let Some(new) = rule {
            changes.push((*time, row(new.clone()), 1));
        }
        current = rule.clone();
    }
    changes
}

/// A random life of one rule id: a version (or none) from time 0, then a change at each of
/// `edits` (hours before 100 h, so before the input ends), skipping changes to the same
/// version; versions are shapes for [`random_rule`], `None` deletes the rule.
pub(super) fn random_life<R: Clone + PartialEq>(
    first: Option<R>,
    edits: &[(u64, Option<R>)],
) -> Vec<(u64, Option<R>)> {
    let mut life = vec![(0, first)];
    let mut edits = edits.to_vec();
    edits.sort_by_key(|(hour, _)| *hour);
    for (hour, rule) in edits {
        let time = hour * H;
        let Some((last_time, last)) = life.last() else {
            continue;
        };
        if *last_time < time && *last != rule {
            life.push((time, rule));
        }
    }
    life
}

/// A rule shape for [`random_rule`]: (default, land, ladder, only land).
fn shape() -> impl proptest::strategy::Strategy<Value = (usize, usize, usize, bool)> {
    (0usize..3, 0usize..3, 0usize..4, proptest::bool::ANY)
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]
    /// Rules added, edited (deadlines longer or shorter, other ladders, other categories) and
    /// deleted while reports are open or firing: the operator re-times them as the reference.
    #[test]
    fn random_rule_edits_match_the_reference(
        // Events and edits reach past the 168 h retention: reports idle that long must still
        // be timed by a rule that arrives later.
        raw in proptest::collection::vec((0usize..5, 0usize..6, 0u64..200), 1..40),
        end_hours in 100u64..300,
        first in proptest::option::weighted(0.8, shape()),
        edits in proptest::collection::vec((1u64..260, proptest::option::weighted(0.8, shape())), 1..4),
    ) {
        let version = |(default, land, ladder, only_land): (usize, usize, usize, bool)| {
            // A rule without any deadline is no rule: give it the default one.
            random_rule(if default == 0 && land == 0 { 1 } else { default }, land, ladder, only_land)
        };
        // An edit at or after the end would re-time reports when the input closes, when no
        // timer fires any more.
        let edits: Vec<_> = edits
            .into_iter()
            .filter(|(h, _)| *h < end_hours)
            .map(|(h, v)| (h, v.map(version)))
            .collect();
        let life = random_life(first.map(version), &edits);
        let changes = changes_of(&life, RuleRow::ReportDeadline);
        let events = random_events(&raw);
        let end = end_hours * H;
        let mut got = seen(&run_changes(&changes, &events, end));
        got.sort();
        let owned = owned(&events);
        let expected = report_deadline_transitions_over(&life, &owned, end);
        proptest::prop_assert_eq!(got, expected);
    }
}
