//! Follow-up rules: fixed cases with exact transitions (a visit in time or exactly at the due
//! time never fires, an overdue visit fires and its `followed_up` resolves it, `reopened`
//! resolves and a new resolution starts a new visit, a visit while open is no visit,
//! duplicates and unknown reports change nothing, the level label follows escalations), and
//! random report lifecycles, sent out of order, against the plain-loop reference.

use citybrain_model::{ReportKind, TransitionState};

use super::report_deadline::{
    Event, H, alarm, changes_of, firing, owned, random_events, random_life, resolved, run,
    run_changes, seen,
};
use crate::kinds::follow_up::FollowUpRule;
use crate::kinds::report_deadline::ReportDeadlineRule;
use crate::reference::{
    follow_up_transitions, follow_up_transitions_over, report_deadline_transitions,
};
use crate::rule::RuleRow;

/// A return visit due 100 h after resolution, for every category unless `only` is given.
fn visit_rule(only: &[&str]) -> FollowUpRule {
    let mut alarm = alarm();
    alarm.id = "follow-up-overdue".into();
    alarm.summary = "Follow-up of {entity} ({category}) overdue at {level} level".into();
    FollowUpRule {
        alarm,
        categories: only.iter().map(|c| c.to_string()).collect(),
        due_ms: 100 * H,
    }
}

#[test]
fn overdue_visits_fire_and_visits_resolve_them() {
    use ReportKind::*;
    let events: Vec<Event> = vec![
        // f1: due at 110 h, visited at 130 h.
        ("f1", Created, "road_damage", 0),
        ("f1", Resolved, "road_damage", 10 * H),
        ("f1", FollowedUp, "road_damage", 130 * H),
        // f2: visited in time; f3: visited exactly at the due time.
        ("f2", Created, "road_damage", 0),
        ("f2", Resolved, "road_damage", 10 * H),
        ("f2", FollowedUp, "road_damage", 50 * H),
        ("f3", Created, "road_damage", 0),
        ("f3", Resolved, "road_damage", 10 * H),
        ("f3", FollowedUp, "road_damage", 110 * H),
        // f4: at town level; overdue at 110 h, reopened at 150 h (resolves), resolved again
        // at 160 h: the next visit is overdue at 260 h.
        ("f4", Created, "land_dispute", 0),
        ("f4", Escalated, "land_dispute", 5 * H),
        ("f4", Resolved, "land_dispute", 10 * H),
        ("f4", Reopened, "land_dispute", 150 * H),
        ("f4", Resolved, "land_dispute", 160 * H),
        // f5: a visit while open is none.
        ("f5", Created, "road_damage", 0),
        ("f5", FollowedUp, "road_damage", 5 * H),
        ("f5", Resolved, "road_damage", 20 * H),
        // f6: never created.
        ("f6", Resolved, "road_damage", 10 * H),
        // f7: never resolved.
        ("f7", Created, "road_damage", 0),
    ];
    let mut doubled = events.clone();
    doubled.extend(events.iter().cloned());
    let mut expected = vec![
        firing(110 * H, "f1", "village"),
        resolved(130 * H, "f1", "village"),
        firing(110 * H, "f4", "town"),
        resolved(150 * H, "f4", "town"),
        firing(260 * H, "f4", "town"),
        firing(120 * H, "f5", "village"),
    ];
    expected.sort();
    let end = 300 * H;
    let got = run(&[RuleRow::FollowUp(visit_rule(&[]))], &doubled, end);
    let mut got_seen = seen(&got);
    got_seen.sort();
    assert_eq!(got_seen, expected);
    assert_eq!(
        follow_up_transitions(&visit_rule(&[]), &owned(&events), end),
        expected
    );
    let first = got.iter().find(|t| t.entity == "f1").map(|t| {
        (
            t.summary.clone(),
            t.value,
            t.labels.get("rule_kind").cloned(),
        )
    });
    assert_eq!(
        first,
        Some((
            "Follow-up of f1 (road_damage) overdue at village level".to_string(),
            100.0,
            Some("follow_up".to_string())
        ))
    );
    // A category filter.
    let only_land = run(
        &[RuleRow::FollowUp(visit_rule(&["land_dispute"]))],
        &events,
        end,
    );
    assert!(only_land.iter().all(|t| t.entity == "f4") && only_land.len() == 3);
}

/// The retention (7 days) forgot an open report with no timer when another report's event
/// came 180 h later, so its resolution at 181 h started no visit timer (found by the proptest
/// below).
#[test]
fn an_open_report_idle_past_the_retention_still_gets_its_visit_timed() {
    use ReportKind::*;
    let events: Vec<Event> = vec![
        ("r", Created, "noise", 0),
        ("s", Created, "noise", 180 * H),
        ("r", Resolved, "noise", 181 * H),
    ];
    let got = run(&[RuleRow::FollowUp(visit_rule(&[]))], &events, 282 * H);
    let seen: Vec<_> = got.iter().map(|t| (t.event_time / H, t.state)).collect();
    assert_eq!(seen, vec![(281, TransitionState::Firing)]);
}

#[test]
fn deadline_and_follow_up_rules_run_side_by_side() {
    use ReportKind::*;
    let events: Vec<Event> = vec![
        ("r", Created, "road_damage", 0),
        ("r", Resolved, "road_damage", 60 * H),
    ];
    let deadline = ReportDeadlineRule::new(alarm(), vec![], 48 * H);
    let rules = [
        RuleRow::ReportDeadline(deadline.clone()),
        RuleRow::FollowUp(visit_rule(&[])),
    ];
    let got = run(&rules, &events, 200 * H);
    let by_rule: Vec<_> = got
        .iter()
        .map(|t| (t.rule.clone(), t.event_time / H, t.state))
        .collect();
    assert_eq!(
        by_rule,
        vec![
            ("report-escalation".to_string(), 48, TransitionState::Firing),
            (
                "report-escalation".to_string(),
                60,
                TransitionState::Resolved
            ),
            (
                "follow-up-overdue".to_string(),
                160,
                TransitionState::Firing
            ),
        ]
    );
    let o = owned(&events);
    assert_eq!(report_deadline_transitions(&deadline, &o, 200 * H).len(), 2);
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]
    #[test]
    fn random_lifecycles_match_the_reference(
        raw in proptest::collection::vec((0usize..5, 0usize..6, 0u64..200), 1..40),
        end_hours in 100u64..320,
        only_land in proptest::bool::ANY,
    ) {
        let rule = visit_rule(if only_land { &["land_dispute"] } else { &[] });
        let events = random_events(&raw);
        let end = end_hours * H;
        let mut got = seen(&run(&[RuleRow::FollowUp(rule.clone())], &events, end));
        got.sort();
        let expected = follow_up_transitions(&rule, &owned(&events), end);
        proptest::prop_assert_eq!(got, expected);
    }
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]
    /// Follow-up rules added, edited (visits due sooner or later, other categories) and
    /// deleted while visits are pending or overdue: the operator re-times them as the
    /// reference.
    #[test]
    fn random_rule_edits_match_the_reference(
        raw in proptest::collection::vec((0usize..5, 0usize..6, 0u64..160), 1..40),
        end_hours in 100u64..320,
        first in proptest::option::weighted(0.8, (0usize..3, proptest::bool::ANY)),
        edits in proptest::collection::vec(
            (1u64..100, proptest::option::weighted(0.8, (0usize..3, proptest::bool::ANY))),
            1..4,
        ),
    ) {
        let version = |(due, only_land): (usize, bool)| FollowUpRule {
            due_ms: [30, 60, 100][due] * H,
            ..visit_rule(if only_land { &["land_dispute"] } else { &[] })
        };
        let edits: Vec<_> = edits.into_iter().map(|(h, v)| (h, v.map(version))).collect();
        let life = random_life(first.map(version), &edits);
        let changes = changes_of(&life, RuleRow::FollowUp);
        let events = random_events(&raw);
        let end = end_hours * H;
        let mut got = seen(&run_changes(&changes, &events, end));
        got.sort();
        let expected = follow_up_transitions_over(&life, &owned(&events), end);
        proptest::prop_assert_eq!(got, expected);
    }
}
