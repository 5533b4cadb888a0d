//! Absence rules: fixed cases with exact transitions (silences, a reading exactly at the
//! deadline, rule removal, the end of the input), and random out-of-order input with rule
//! edits against the reference.

use citybrain_model::{AlertTransition, Metric, Reading, TransitionState};
use proptest::prelude::*;

use super::{alarm, from_start, reading, reading_of, registry, run_delayed_until};
use crate::kinds::absence::AbsenceRule;
use crate::reference::{RuleChange, absence_transitions};
use crate::rule::{Direction, RuleRow};

/// An absence rule on CH4 sensors.
fn absence(id: &str, cadences: u32, hold_ms: u64, scope: &[(&str, &str)]) -> RuleRow {
    let mut alarm = alarm(id, Direction::Above, 1.0, 1.0, hold_ms, scope);
    alarm.summary = "Gas sensor {entity} silent for {value} s".into();
    RuleRow::Absence(AbsenceRule {
        alarm,
        cadences,
        stall_after_ms: None,
    })
}

/// (event time, rule, entity, state, value) of each transition.
fn seen(transitions: &[AlertTransition]) -> Vec<(u64, &str, &str, TransitionState, f64)> {
    transitions
        .iter()
        .map(|t| {
            (
                t.event_time,
                t.rule.as_str(),
                t.entity.as_str(),
                t.state,
                t.value,
            )
        })
        .collect()
}

/// s1: 0, 1, 2 s, silent until 10 s, 11 s; s2: 0, 3 s (exactly at its deadline), 5 s; s3
/// never heard from; `ghost` unregistered; v1 measures air velocity.
fn readings() -> Vec<(Reading, u64)> {
    [
        reading("s1", 0, 0.3),
        reading("s1", 1_000, 0.3),
        reading("s1", 2_000, 0.3),
        reading("s1", 10_000, 0.3),
        reading("s1", 11_000, 0.3),
        reading("s2", 0, 0.2),
        reading("s2", 3_000, 0.2),
        reading("s2", 5_000, 0.2),
        reading("ghost", 1_000, 0.2),
        reading_of("v1", Metric::AirVelocity, 0, 1.0),
    ]
    .into_iter()
    // Out of order: each arrives up to 1.5 s late.
    .enumerate()
    .map(|(i, r)| (r, (i as u64 * 700) % 1_500))
    .collect()
}

fn plain(readings: &[(Reading, u64)]) -> Vec<Reading> {
    readings.iter().map(|(r, _)| r.clone()).collect()
}

#[test]
fn silent_sensors_fire_at_the_deadline_and_resolve_on_data() {
    use TransitionState::{Firing, Resolved};
    let rules = [
        absence("ch4-silent", 3, 0, &[]),
        absence("f1-silent", 2, 500, &[("face", "m1/f1")]),
    ];
    let changes = from_start(&rules);
    let readings = readings();
    let got = run_delayed_until(&readings, 1_500, &registry(), &changes, 3, 20_000);
    assert_eq!(
        seen(&got),
        vec![
            (4_500, "f1-silent", "s1", Firing, 2.5),
            (5_000, "ch4-silent", "s1", Firing, 3.0),
            (8_000, "ch4-silent", "s2", Firing, 3.0),
            (10_000, "ch4-silent", "s1", Resolved, 8.0),
            (10_000, "f1-silent", "s1", Resolved, 8.0),
            (13_500, "f1-silent", "s1", Firing, 2.5),
            (14_000, "ch4-silent", "s1", Firing, 3.0),
        ]
    );
    let first = &got[1];
    assert_eq!(first.summary, "Gas sensor s1 silent for 3 s");
    assert!(
        first
            .labels
            .get("rule_kind")
            .is_some_and(|kind| kind == "absence")
    );
    assert!(first.labels.get("kind").is_some_and(|kind| kind == "ch4"));
    assert_eq!(
        got,
        absence_transitions(&plain(&readings), &registry(), &changes, 20_000)
    );
}

#[test]
fn the_end_of_the_input_is_not_a_silence() {
    let rules = [absence("ch4-silent", 3, 0, &[])];
    let changes = from_start(&rules);
    // The input stops at 7 s: s2's deadline at 8 s never comes.
    let readings: Vec<_> = readings()
        .into_iter()
        .filter(|(r, _)| r.time < 7_000)
        .collect();
    let got = run_delayed_until(&readings, 1_500, &registry(), &changes, 2, 7_000);
    assert_eq!(
        super::states(&got),
        vec![(5_000, "ch4-silent", "s1", TransitionState::Firing)]
    );
    assert_eq!(
        got,
        absence_transitions(&plain(&readings), &registry(), &changes, 7_000)
    );
}

#[test]
fn removing_the_rule_resolves_and_an_edit_moves_the_deadline() {
    use TransitionState::{Firing, Resolved};
    let three = absence("ch4-silent", 3, 0, &[]);
    let five = absence("f1-silent", 5, 0, &[("face", "m1/f1")]);
    let eight = absence("f1-silent", 8, 0, &[("face", "m1/f1")]);
    let changes: Vec<RuleChange> = vec![
        (0, three.clone(), 1),
        (9_000, three, -1),
        (0, five.clone(), 1),
        // Before s1's deadline at 7 s: the new one is 2 s + 8 s.
        (6_000, five, -1),
        (6_000, eight, 1),
    ];
    let readings = readings();
    let got = run_delayed_until(&readings, 1_500, &registry(), &changes, 4, 20_000);
    assert_eq!(
        seen(&got),
        vec![
            (5_000, "ch4-silent", "s1", Firing, 3.0),
            (8_000, "ch4-silent", "s2", Firing, 3.0),
            (9_000, "ch4-silent", "s1", Resolved, 7.0),
            (9_000, "ch4-silent", "s2", Resolved, 4.0),
            (19_000, "f1-silent", "s1", Firing, 8.0),
        ]
    );
    assert_eq!(
        got,
        absence_transitions(&plain(&readings), &registry(), &changes, 20_000)
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]
    #[test]
    fn out_of_order_within_lateness_equals_reference(
        raw in proptest::collection::vec((0usize..4, 0u64..400, 0u32..16, 0u64..30), 0..80),
        duplicates in proptest::collection::vec(0usize..80, 0..10),
        lateness in prop_oneof![Just(0u64), Just(1_000), Just(3_000)],
        step_every in 1usize..20,
        hold in prop_oneof![Just(0u64), Just(500), Just(2_000)],
        edit_at in 0u64..40_000,
        // Fewer cadences than before move deadlines earlier, more move them later.
        edited_cadences in 1u32..5,
        remove_at in prop_oneof![Just(None), (0u64..40_000).prop_map(Some)],
    ) {
        let entities = [("s1", Metric::Ch4), ("s2", Metric::Ch4), ("s3", Metric::Ch4), ("ghost", Metric::Ch4)];
        // Times and delays in steps of 100 ms over 40 s: gaps of several cadences (1 s).
        let scaled: Vec<_> = raw.into_iter().map(|(e, t, v, d)| (e, t * 100, v, d * 100)).collect();
        let mut readings = super::distinct_readings(scaled, &entities);
        let copies: Vec<_> = duplicates.iter().filter_map(|i| readings.get(*i).cloned()).collect();
        readings.extend(copies);
        let all = absence("ch4-silent", 3, hold, &[]);
        let f1 = absence("f1-silent", 2, 0, &[("face", "m1/f1")]);
        let f1_edited = absence("f1-silent", edited_cadences, hold, &[("face", "m1/f1")]);
        let mut changes: Vec<RuleChange> = vec![
            (0, all.clone(), 1),
            (0, f1.clone(), 1),
            (edit_at, f1, -1),
            (edit_at, f1_edited, 1),
            (0, RuleRow::Threshold(alarm("ch4-high", Direction::Above, 1.0, 0.8, 0, &[])), 1),
        ];
        if let Some(at) = remove_at {
            changes.push((at, all, -1));
        }
        let got = run_delayed_until(&readings, lateness, &registry(), &changes, step_every, 45_000);
        prop_assert_eq!(got, absence_transitions(&plain(&readings), &registry(), &changes, 45_000));
    }
}
