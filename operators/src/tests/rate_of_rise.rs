//! Rate-of-rise rules: fixed cases with exact transitions, and random out-of-order input
//! against the reference.

use citybrain_model::{Metric, Reading, TransitionState};
use proptest::prelude::*;

use super::{alarm, from_start, reading, registry, run, run_delayed, values};
use crate::kinds::rate_of_rise::RateOfRiseRule;
use crate::reference::rule_transitions;
use crate::rule::{Direction, RuleRow, ThresholdRule};

fn rate(alarm: ThresholdRule, window_ms: u64, min_span_ms: u64) -> RuleRow {
    RuleRow::RateOfRise(RateOfRiseRule {
        alarm,
        window_ms,
        min_span_ms,
    })
}

#[test]
fn ch4_rising_per_minute_over_two_minutes() {
    let rules = [rate(
        alarm("ch4-rising", Direction::Above, 0.3, 0.1, 0, &[]),
        120_000,
        60_000,
    )];
    let s1 = [
        0.40, 0.42, 0.45, 0.60, 0.80, 1.00, 1.10, 1.12, 1.13, 1.13, 1.12,
    ];
    let mut readings: Vec<Reading> = s1
        .iter()
        .enumerate()
        .map(|(i, v)| reading("s1", 30_000 * i as u64, *v))
        .collect();
    // A flat sensor, and a jump that is too recent to count until a minute has passed.
    readings.extend((0..10).map(|i| reading("s2", 30_000 * i, 0.3)));
    readings.extend([
        reading("s3", 0, 0.4),
        reading("s3", 10_000, 1.0),
        reading("s3", 70_000, 1.0),
    ]);
    let got = run(&readings, &registry(), &from_start(&rules), 3);
    // s1 at 180 s: from 0.45 at 60 s, 0.325 %/min; at 270 s: from 1.00 at 150 s, 0.065.
    assert_eq!(
        values(&got),
        vec![
            (
                70_000,
                "s3",
                TransitionState::Firing,
                (1.0 - 0.4) / (70_000.0 / 60_000.0)
            ),
            (180_000, "s1", TransitionState::Firing, (1.10 - 0.45) / 2.0),
            (
                270_000,
                "s1",
                TransitionState::Resolved,
                (1.13 - 1.00) / 2.0
            ),
        ]
    );
    assert_eq!(got, rule_transitions(&readings, &registry(), &rules));
}

/// Among several readings at the first instant of the window, the smallest value is the first
/// (the readings' proptests draw one value per sensor and instant, so none has two).
#[test]
fn two_values_at_the_first_instant_rate_from_the_smaller() {
    let rules = [rate(
        alarm("ch4-rising", Direction::Above, 0.3, 0.1, 0, &[]),
        120_000,
        30_000,
    )];
    let readings = [
        reading("s1", 0, 0.5),
        reading("s1", 0, 0.3),
        reading("s1", 60_000, 0.7),
    ];
    let got = run(&readings, &registry(), &from_start(&rules), 1);
    // From 0.3: 0.4 %/min, above 0.3 (from 0.5 it would be 0.2, below).
    assert_eq!(
        values(&got),
        vec![(60_000, "s1", TransitionState::Firing, 0.7 - 0.3)]
    );
    assert_eq!(got, rule_transitions(&readings, &registry(), &rules));
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
        min_span in prop_oneof![Just(0u64), Just(5), Just(20)],
    ) {
        let entities = [("s1", Metric::Ch4), ("s2", Metric::Ch4), ("s3", Metric::Ch4), ("ghost", Metric::Ch4)];
        let mut readings = super::distinct_readings(raw, &entities);
        let copies: Vec<_> = duplicates.iter().filter_map(|i| readings.get(*i).cloned()).collect();
        readings.extend(copies);
        // Times are milliseconds here: 0.1 in 10 ms is 600 per minute.
        let rules = vec![
            rate(alarm("rising", Direction::Above, 600.0, 300.0, hold, &[]), 50, min_span),
            rate(alarm("falling", Direction::Below, -600.0, -100.0, hold / 2, &[("mine", "m1")]), 30, min_span / 2),
            rate(alarm("steady", Direction::Above, 0.0, 0.0, 0, &[("face", "m1/f1")]), 80, 0),
        ];
        let got = run_delayed(&readings, lateness, &registry(), &from_start(&rules), step_every);
        let plain: Vec<Reading> = readings.into_iter().map(|(r, _)| r).collect();
        prop_assert_eq!(got, rule_transitions(&plain, &registry(), &rules));
    }
}
