//! Window rules: fixed cases with exact transitions and aggregates, and random out-of-order
//! input against the reference.

use citybrain_model::alert::RULE_REMOVED;
use citybrain_model::{Metric, Reading, TransitionState};
use proptest::prelude::*;

use super::{alarm, from_start, reading, registry, run, run_delayed, values};
use crate::kinds::window::{Aggregate, WindowRule};
use crate::reference::{rule_transitions, rule_transitions_over_time};
use crate::rule::{Direction, GroupBy, RuleRow, ThresholdRule};

fn window(
    alarm: ThresholdRule,
    window_ms: u64,
    hop_ms: u64,
    group_by: GroupBy,
    aggregate: Aggregate,
) -> RuleRow {
    RuleRow::Window(WindowRule {
        alarm,
        window_ms,
        hop_ms,
        group_by,
        aggregate,
    })
}

#[test]
fn tumbling_average_per_face() {
    let rules = [window(
        alarm("ch4-avg", Direction::Above, 0.8, 0.6, 0, &[]),
        100,
        100,
        GroupBy::Face,
        Aggregate::Avg,
    )];
    let readings = vec![
        reading("s1", 10, 0.7),
        reading("s3", 20, 1.0),
        reading("s2", 50, 0.9),
        reading("ghost", 30, 5.0), // no face: in no group
        reading("s1", 110, 0.7),
        reading("s3", 150, 0.6), // [100, 200): 0.65, between clear and alarm: still firing
        reading("s1", 250, 0.5),
    ];
    let got = run(&readings, &registry(), &from_start(&rules), 3);
    assert_eq!(
        values(&got),
        vec![
            (100, "m1/f1", TransitionState::Firing, 0.85),
            (100, "m1/f2", TransitionState::Firing, 0.9),
            (300, "m1/f1", TransitionState::Resolved, 0.5),
        ]
    );
    assert_eq!(got[0].summary, "CH4 0.85 on m1/f1");
    let labels: Vec<(&str, &str)> = got[0]
        .labels
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    assert_eq!(
        labels,
        vec![
            ("domain", "mine"),
            ("entity", "m1/f1"),
            ("face", "m1/f1"),
            ("metric", "ch4"),
            ("mine", "m1"),
            ("rule", "ch4-avg"),
            ("severity", "critical"),
            ("team", "ventilation"),
        ]
    );
    assert_eq!(got, rule_transitions(&readings, &registry(), &rules));
}

#[test]
fn hopping_count_per_mine_with_hold() {
    // Windows [0,100) [50,150) [100,200) [150,250): 5, 5, 4, 1 readings of mine m1.
    let rules = [window(
        alarm("busy", Direction::Above, 3.0, 2.0, 50, &[]),
        100,
        50,
        GroupBy::Mine,
        Aggregate::Count,
    )];
    let readings: Vec<Reading> = [10, 20, 30, 60, 70, 120, 130, 140, 160]
        .iter()
        .enumerate()
        .map(|(i, t)| reading(["s1", "s2", "s3"][i % 3], *t, 0.5))
        .collect();
    let got = run(&readings, &registry(), &from_start(&rules), 2);
    assert_eq!(
        values(&got),
        vec![
            (150, "m1", TransitionState::Firing, 5.0),
            (250, "m1", TransitionState::Resolved, 1.0),
        ]
    );
    assert_eq!(got, rule_transitions(&readings, &registry(), &rules));
}

#[test]
fn every_aggregate_of_one_window() {
    let aggregates = [
        ("count", Aggregate::Count, 10.0),
        ("sum", Aggregate::Sum, 55.0),
        ("avg", Aggregate::Avg, 5.5),
        ("min", Aggregate::Min, 1.0),
        ("max", Aggregate::Max, 10.0),
        ("p50", Aggregate::Percentile(50), 5.0),
        ("p90", Aggregate::Percentile(90), 9.0),
        ("p99", Aggregate::Percentile(99), 10.0),
    ];
    let rules: Vec<RuleRow> = aggregates
        .iter()
        .map(|(id, aggregate, _)| {
            window(
                alarm(id, Direction::Above, -1e9, -1e9, 0, &[]),
                1000,
                1000,
                GroupBy::Entity,
                *aggregate,
            )
        })
        .collect();
    // Values 1..=10 at shuffled times, plus an exact duplicate that counts once.
    let mut readings: Vec<Reading> = [7, 3, 10, 1, 5, 9, 2, 8, 4, 6]
        .iter()
        .enumerate()
        .map(|(i, v)| reading("s1", 900 - 90 * i as u64, f64::from(*v)))
        .collect();
    readings.push(readings[4].clone());
    let got = run(&readings, &registry(), &from_start(&rules), 4);
    let mut found: Vec<(&str, f64)> = got.iter().map(|t| (t.rule.as_str(), t.value)).collect();
    found.sort_by(|a, b| a.0.cmp(b.0));
    let mut expected: Vec<(&str, f64)> = aggregates.iter().map(|(id, _, v)| (*id, *v)).collect();
    expected.sort_by(|a, b| a.0.cmp(b.0));
    assert_eq!(found, expected);
    assert!(got.iter().all(|t| t.event_time == 1000));
}

/// Rule `avg`: the tumbling per-sensor average of `window_ms` windows, alarm and clear at
/// `threshold`, no hold.
fn average(threshold: f64, window_ms: u64) -> RuleRow {
    window(
        alarm("avg", Direction::Above, threshold, threshold, 0, &[]),
        window_ms,
        window_ms,
        GroupBy::Entity,
        Aggregate::Avg,
    )
}

#[test]
fn editing_levels_keeps_windows_editing_the_shape_starts_new_ones() {
    let (v1, v2, v3) = (average(0.8, 100), average(0.5, 100), average(0.5, 50));
    let changes = vec![
        (0, v1.clone(), 1),
        (150, v1, -1),
        (150, v2.clone(), 1),
        (250, v2, -1),
        (250, v3, 1),
    ];
    let readings = vec![
        reading("s1", 10, 0.6),  // [0, 100) under v1: 0.6 < 0.8
        reading("s1", 120, 0.6), // [100, 200) ends under v2: 0.6 >= 0.5 fires
        reading("s1", 240, 0.9), // [200, 300) of the old shape: dropped at 300
        reading("s1", 260, 0.3), // [250, 300) of the new shape: resolves
    ];
    let got = run(&readings, &registry(), &changes, 2);
    assert_eq!(
        values(&got),
        vec![
            (200, "s1", TransitionState::Firing, 0.6),
            (300, "s1", TransitionState::Resolved, 0.3),
        ]
    );
    assert_eq!(
        got,
        rule_transitions_over_time(&readings, &registry(), &changes)
    );
}

/// A rule change at a window's very end applies to that window (it meets its rule as of its
/// end), and a removal at a window's end leaves it without a rule: the window operator applies
/// a time's rule changes before it closes the windows ending at that time.
#[test]
fn a_rule_change_at_a_windows_end_applies_to_that_window() {
    let (strict, lax) = (average(0.8, 100), average(0.5, 100));
    let changes = vec![
        (0, strict.clone(), 1),
        (100, strict, -1),
        (100, lax.clone(), 1),
        (200, lax, -1),
    ];
    let readings = vec![
        // [0, 100) ends at 100 under the lax rule: fires (the strict one would not).
        reading("s1", 10, 0.6),
        // [100, 200) ends at 200, when the rule is gone: no evaluation. The alert resolves
        // for the removal, with the value it fired with; under the lax rule still it would
        // have resolved with this 0.3.
        reading("s1", 150, 0.3),
    ];
    let got = run(&readings, &registry(), &changes, 2);
    assert_eq!(
        values(&got),
        vec![
            (100, "s1", TransitionState::Firing, 0.6),
            (200, "s1", TransitionState::Resolved, 0.6),
        ]
    );
    assert_eq!(got[1].reason.as_deref(), Some(RULE_REMOVED));
    assert_eq!(
        got,
        rule_transitions_over_time(&readings, &registry(), &changes)
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
        hold in prop_oneof![Just(0u64), Just(20), Just(50)],
    ) {
        let entities = [("s1", Metric::Ch4), ("s2", Metric::Ch4), ("s3", Metric::Ch4), ("ghost", Metric::Ch4)];
        let mut readings = super::distinct_readings(raw, &entities);
        let copies: Vec<_> = duplicates.iter().filter_map(|i| readings.get(*i).cloned()).collect();
        readings.extend(copies);
        let rules = vec![
            window(alarm("avg-face", Direction::Above, 0.8, 0.6, hold, &[]), 50, 50, GroupBy::Face, Aggregate::Avg),
            window(alarm("max-entity", Direction::Above, 1.2, 1.0, 0, &[]), 60, 20, GroupBy::Entity, Aggregate::Max),
            window(alarm("count-mine", Direction::Above, 3.0, 2.0, hold, &[]), 40, 20, GroupBy::Mine, Aggregate::Count),
            window(alarm("p90-face", Direction::Below, 0.3, 0.5, 0, &[("mine", "m1")]), 30, 10, GroupBy::Face, Aggregate::Percentile(90)),
            window(alarm("sum", Direction::Above, 2.0, 1.5, hold / 2, &[]), 25, 25, GroupBy::Entity, Aggregate::Sum),
            window(alarm("min-p50", Direction::Below, 0.4, 0.4, 0, &[]), 35, 35, GroupBy::Face, Aggregate::Min),
            // A hop that does not divide the window: a window's last hop reaches past its end.
            window(alarm("count-odd-hop", Direction::Above, 2.0, 1.0, 0, &[]), 50, 20, GroupBy::Face, Aggregate::Count),
        ];
        let got = run_delayed(&readings, lateness, &registry(), &from_start(&rules), step_every);
        let plain: Vec<Reading> = readings.into_iter().map(|(r, _)| r).collect();
        prop_assert_eq!(got, rule_transitions(&plain, &registry(), &rules));
    }
}
