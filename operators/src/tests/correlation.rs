//! Correlation rules: fixed cases with exact transitions, and random out-of-order input
//! against the reference.

use citybrain_model::{Metric, Reading, TransitionState};
use ordered_float::OrderedFloat;
use proptest::prelude::*;

use super::{alarm, from_start, reading, reading_of, registry, run, run_delayed, values};
use crate::kinds::correlation::{Condition, CorrelationRule};
use crate::reference::rule_transitions;
use crate::rule::{Direction, GroupBy, RuleRow, ThresholdRule};

fn correlation(
    alarm: ThresholdRule,
    with: (Metric, Direction, f64, f64),
    group_by: GroupBy,
    tolerance_ms: u64,
) -> RuleRow {
    RuleRow::Correlation(CorrelationRule {
        alarm,
        with: Condition {
            metric: with.0,
            direction: with.1,
            threshold: OrderedFloat(with.2),
            clear: OrderedFloat(with.3),
        },
        group_by,
        tolerance_ms,
    })
}

fn velocity(entity: &str, time: u64, value: f64) -> Reading {
    reading_of(entity, Metric::AirVelocity, time, value)
}

#[test]
fn ventilation_failure_with_methane_on_one_face() {
    let mut rule = alarm("ventilation-failure", Direction::Above, 0.8, 0.7, 0, &[]);
    rule.summary =
        "Ventilation failure with methane on {face}: CH4 {ch4}%, air velocity {air_velocity} m/s"
            .into();
    let rules = [correlation(
        rule,
        (Metric::AirVelocity, Direction::Below, 0.25, 0.3),
        GroupBy::Face,
        10_000,
    )];
    let readings = vec![
        reading("s1", 1_000, 0.5),   // no air velocity yet: not evaluated
        velocity("v1", 2_000, 1.0),  // level 0
        reading("s1", 5_000, 0.9),   // methane high, air still moving: 0
        velocity("v1", 6_000, 0.2),  // both: firing
        reading("s3", 7_000, 0.5),   // the other CH4 sensor is low, s1 still 0.9: 2
        reading("s1", 8_000, 0.75),  // between the levels: 1
        velocity("v1", 9_000, 0.28), // between the levels: 1
        reading("s1", 12_000, 0.6),  // max(0.6, 0.5) < 0.7: resolved
        reading("s1", 25_000, 0.9),  // air velocity 16 s old: not evaluated
        reading("s2", 3_000, 1.0),   // face 2
        velocity("v2", 30_000, 0.1), // methane 27 s old: not evaluated
        reading("s2", 35_000, 1.0),  // both within 10 s: firing
        velocity("v3", 6_000, 0.1),  // face 3 has no methane sensor
    ];
    let got = run(&readings, &registry(), &from_start(&rules), 4);
    assert_eq!(
        values(&got),
        vec![
            (6_000, "m1/f1", TransitionState::Firing, 0.9),
            (12_000, "m1/f1", TransitionState::Resolved, 0.6),
            (35_000, "m1/f2", TransitionState::Firing, 1.0),
        ]
    );
    assert_eq!(
        got[0].summary,
        "Ventilation failure with methane on m1/f1: CH4 0.9%, air velocity 0.2 m/s"
    );
    assert_eq!(got[0].labels.get("mine").map(String::as_str), Some("m1"));
    assert_eq!(got[0].labels.get("kind"), None);
    assert_eq!(got, rule_transitions(&readings, &registry(), &rules));
}

/// Two values of one sensor at its latest time: the worse counts (the proptests draw one value
/// per sensor and instant, so none has two).
#[test]
fn two_values_of_a_sensor_at_one_time_count_the_worse() {
    let rules = [correlation(
        alarm("ventilation-failure", Direction::Above, 0.8, 0.7, 0, &[]),
        (Metric::AirVelocity, Direction::Below, 0.25, 0.3),
        GroupBy::Face,
        10_000,
    )];
    let readings = vec![
        reading("s1", 0, 0.9),
        reading("s1", 0, 0.5),
        velocity("v1", 1_000, 0.3),
        velocity("v1", 1_000, 0.2),
    ];
    let got = run(&readings, &registry(), &from_start(&rules), 1);
    // The methane side is 0.9, not 0.5, and the air velocity side 0.2 (below 0.25), not 0.3
    // (between the levels); whichever of a pair comes first.
    assert_eq!(
        values(&got),
        vec![(1_000, "m1/f1", TransitionState::Firing, 0.9)]
    );
    assert_eq!(got, rule_transitions(&readings, &registry(), &rules));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]
    #[test]
    fn out_of_order_within_lateness_equals_reference(
        raw in proptest::collection::vec((0usize..7, 0u64..300, 0u32..16, 0u64..40), 0..120),
        duplicates in proptest::collection::vec(0usize..100, 0..10),
        lateness in prop_oneof![Just(0u64), Just(10), Just(40)],
        step_every in 1usize..20,
        hold in prop_oneof![Just(0u64), Just(15), Just(40)],
        tolerance in prop_oneof![Just(0u64), Just(10), Just(30)],
    ) {
        let entities = [
            ("s1", Metric::Ch4), ("s2", Metric::Ch4), ("s3", Metric::Ch4), ("ghost", Metric::Ch4),
            ("v1", Metric::AirVelocity), ("v2", Metric::AirVelocity), ("v3", Metric::AirVelocity),
        ];
        let mut readings = super::distinct_readings(raw, &entities);
        let copies: Vec<_> = duplicates.iter().filter_map(|i| readings.get(*i).cloned()).collect();
        readings.extend(copies);
        let rules = vec![
            correlation(
                alarm("face", Direction::Above, 0.8, 0.6, hold, &[]),
                (Metric::AirVelocity, Direction::Below, 0.5, 0.8),
                GroupBy::Face,
                tolerance,
            ),
            correlation(
                alarm("mine", Direction::Below, 0.5, 0.5, hold / 2, &[]),
                (Metric::AirVelocity, Direction::Above, 1.0, 0.9),
                GroupBy::Mine,
                tolerance + 5,
            ),
        ];
        let got = run_delayed(&readings, lateness, &registry(), &from_start(&rules), step_every);
        let plain: Vec<Reading> = readings.into_iter().map(|(r, _)| r).collect();
        prop_assert_eq!(got, rule_transitions(&plain, &registry(), &rules));
    }
}
