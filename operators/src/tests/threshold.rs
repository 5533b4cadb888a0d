//! Threshold rules: the dataflow against the reference, and fixed cases.

use citybrain_model::{Reading, TransitionState};
use proptest::prelude::*;

use super::{alarm, from_start, reading, registry, run, run_delayed, states};
use crate::reference::{rule_transitions, threshold_transitions};
use crate::rule::{Direction, RuleRow, ThresholdRule};

fn th(
    id: &str,
    direction: Direction,
    threshold: f64,
    clear: f64,
    hold_ms: u64,
    scope: &[(&str, &str)],
) -> ThresholdRule {
    alarm(id, direction, threshold, clear, hold_ms, scope)
}

fn rows(rules: &[ThresholdRule]) -> Vec<crate::reference::RuleChange> {
    let rows: Vec<RuleRow> = rules.iter().cloned().map(RuleRow::Threshold).collect();
    from_start(&rows)
}

#[test]
fn for_and_hysteresis_on_one_sensor() {
    let rules = [th("ch4-hold", Direction::Above, 1.0, 0.8, 20, &[])];
    let values = [0.5, 1.0, 1.1, 0.9, 1.2, 1.3, 1.4, 0.9, 0.85, 0.7, 1.0];
    let readings: Vec<Reading> = values
        .iter()
        .enumerate()
        .map(|(i, v)| reading("s1", i as u64 * 10, *v))
        .collect();
    let got = run(&readings, &registry(), &rows(&rules), 3);
    // 1.0@10, 1.1@20, then 0.9@30 breaks the hold; 1.2@40 .. 1.3@50 .. 1.4@60 (held 20 ms) fires;
    // 0.9 and 0.85 stay above the clear threshold 0.8; 0.7@90 resolves.
    assert_eq!(
        states(&got),
        vec![
            (60, "ch4-hold", "s1", TransitionState::Firing),
            (90, "ch4-hold", "s1", TransitionState::Resolved)
        ]
    );
    assert_eq!(got[0].summary, "CH4 1.4 on m1/f1");
    assert_eq!(
        got[0].labels.get("team").map(String::as_str),
        Some("ventilation")
    );
    assert_eq!(got, threshold_transitions(&readings, &registry(), &rules));
}

#[test]
fn scope_and_unregistered_sensors() {
    let rules = [
        alarm(
            "face-2-only",
            Direction::Above,
            1.0,
            1.0,
            0,
            &[("face", "m1/f2")],
        ),
        alarm("everywhere", Direction::Above, 1.0, 1.0, 0, &[]),
    ];
    let readings = vec![
        reading("s1", 5, 1.5),
        reading("s2", 5, 1.5),
        reading("ghost", 5, 1.5),
    ];
    let got = run(&readings, &registry(), &rows(&rules), 1);
    assert_eq!(
        states(&got),
        vec![
            (5, "everywhere", "ghost", TransitionState::Firing),
            (5, "everywhere", "s1", TransitionState::Firing),
            (5, "everywhere", "s2", TransitionState::Firing),
            (5, "face-2-only", "s2", TransitionState::Firing),
        ]
    );
}

#[test]
fn below_rules_and_duplicates() {
    let rules = [th("low", Direction::Below, 0.25, 0.3, 0, &[])];
    let readings = vec![
        reading("s1", 1, 0.2),
        reading("s1", 1, 0.2),
        reading("s1", 2, 0.28),
        reading("s1", 3, 0.31),
    ];
    let got = run(&readings, &registry(), &rows(&rules), 2);
    assert_eq!(
        states(&got),
        vec![
            (1, "low", "s1", TransitionState::Firing),
            (3, "low", "s1", TransitionState::Resolved)
        ]
    );
    assert_eq!(got, threshold_transitions(&readings, &registry(), &rules));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]
    #[test]
    fn dataflow_equals_reference(
        raw in proptest::collection::vec((0usize..3, 0u64..400, 0u32..16), 0..120),
        batches in 1usize..6,
        hold in prop_oneof![Just(0u64), Just(15), Just(40)],
    ) {
        let entities = ["s1", "s2", "ghost"];
        // Distinct (entity, time) pairs: a sensor sends one value per instant.
        let mut seen = std::collections::HashSet::new();
        let readings: Vec<Reading> = raw
            .into_iter()
            .filter(|(e, t, _)| seen.insert((*e, *t)))
            .map(|(e, t, v)| reading(entities[e], t, f64::from(v) / 10.0))
            .collect();
        let rules = [
            alarm("above", Direction::Above, 1.0, 0.8, hold, &[]),
            alarm("below", Direction::Below, 0.3, 0.5, hold / 2, &[("mine", "m1")]),
            alarm("f1", Direction::Above, 1.2, 1.2, 0, &[("face", "m1/f1")]),
        ];
        let got = run(&readings, &registry(), &rows(&rules), batches);
        let expected = threshold_transitions(&readings, &registry(), &rules);
        prop_assert_eq!(got, expected);
    }
}

#[test]
fn identical_values_one_millisecond_apart_are_two_readings() {
    // The retraction of the first instant must not cancel the second reading.
    let rules = [th("hold-1", Direction::Above, 1.0, 1.0, 1, &[])];
    let readings = vec![reading("s1", 10, 1.0), reading("s1", 11, 1.0)];
    let got = run(&readings, &registry(), &rows(&rules), 1);
    assert_eq!(
        states(&got),
        vec![(11, "hold-1", "s1", TransitionState::Firing)]
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]
    #[test]
    fn out_of_order_within_lateness_equals_reference(
        raw in proptest::collection::vec((0usize..4, 0u64..300, 0u32..16, 0u64..40), 0..100),
        duplicates in proptest::collection::vec(0usize..100, 0..10),
        lateness in prop_oneof![Just(0u64), Just(10), Just(40)],
        step_every in 1usize..20,
        hold in prop_oneof![Just(0u64), Just(15), Just(40)],
    ) {
        use citybrain_model::Metric;
        let entities = [("s1", Metric::Ch4), ("s2", Metric::Ch4), ("s3", Metric::Ch4), ("ghost", Metric::Ch4)];
        let mut readings = super::distinct_readings(raw, &entities);
        let copies: Vec<_> = duplicates.iter().filter_map(|i| readings.get(*i).cloned()).collect();
        readings.extend(copies);
        let rules: Vec<RuleRow> = [
            alarm("above", Direction::Above, 1.0, 0.8, hold, &[]),
            alarm("below", Direction::Below, 0.3, 0.5, hold / 2, &[("mine", "m1")]),
        ]
        .into_iter()
        .map(RuleRow::Threshold)
        .collect();
        let got = run_delayed(&readings, lateness, &registry(), &from_start(&rules), step_every);
        let plain: Vec<Reading> = readings.into_iter().map(|(r, _)| r).collect();
        prop_assert_eq!(got, rule_transitions(&plain, &registry(), &rules));
    }
}

#[test]
fn a_removed_rule_resolves_its_firing_alerts_an_edit_keeps_state() {
    use TransitionState::{Firing, Resolved};
    use citybrain_model::alert::RULE_REMOVED;
    let high = th("ch4-high", Direction::Above, 1.0, 0.8, 0, &[]);
    let held = th("ch4-held", Direction::Above, 1.0, 0.8, 30, &[]);
    // The edit lowers the level of `ch4-held` at 25: its hold, pending since 10, goes on.
    let held_lower = th("ch4-held", Direction::Above, 0.6, 0.5, 30, &[]);
    let changes = vec![
        (0, RuleRow::Threshold(high.clone()), 1),
        (0, RuleRow::Threshold(held.clone()), 1),
        (25, RuleRow::Threshold(held), -1),
        (25, RuleRow::Threshold(held_lower), 1),
        (55, RuleRow::Threshold(high), -1),
    ];
    let readings = vec![
        reading("s1", 10, 1.2), // ch4-high fires; ch4-held pending
        reading("s2", 10, 0.7),
        reading("s1", 20, 1.1),
        reading("s1", 30, 0.85), // ch4-held (0.6 now) still on the alarm side; ch4-high stays firing
        reading("s1", 40, 0.9),  // held 30 ms since 10: fires under the edited level
        reading("s2", 60, 1.5),  // ch4-high is gone
    ];
    let got = run(&readings, &registry(), &changes, 2);
    let seen: Vec<_> = got
        .iter()
        .map(|t| {
            (
                t.event_time,
                t.rule.as_str(),
                t.entity.as_str(),
                t.state,
                t.value,
                t.reason.as_deref(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        vec![
            (10, "ch4-high", "s1", Firing, 1.2, None),
            (40, "ch4-held", "s1", Firing, 0.9, None),
            (55, "ch4-high", "s1", Resolved, 1.2, Some(RULE_REMOVED)),
        ]
    );
    assert_eq!(
        got,
        crate::reference::rule_transitions_over_time(&readings, &registry(), &changes)
    );
}
