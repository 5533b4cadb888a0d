//! Baseline rules: fixed cases with exact transitions, and random out-of-order input against
//! the reference.

use citybrain_model::{Domain, Metric, Reading, TransitionState};
use proptest::prelude::*;

use super::{alarm, from_start, reading, registry, run, run_delayed, values};
use crate::kinds::baseline::BaselineRule;
use crate::reference::rule_transitions;
use crate::rule::{Direction, RuleRow, ThresholdRule};

fn baseline(alarm: ThresholdRule, baseline_ms: u64) -> RuleRow {
    RuleRow::Baseline(BaselineRule { alarm, baseline_ms })
}

fn activity(entity: &str, time: u64, value: f64) -> Reading {
    Reading {
        domain: Domain::Farm,
        entity: entity.into(),
        metric: Metric::Activity,
        value,
        time,
    }
}

#[test]
fn activity_below_half_of_the_trailing_mean_for_a_while() {
    let mut inactive = alarm("inactive", Direction::Below, 0.5, 0.7, 20, &[]);
    inactive.domain = Domain::Farm;
    inactive.metric = Metric::Activity;
    inactive.summary = "{animal} at {value} of its usual activity".into();
    let rules = [baseline(inactive, 100)];
    let readings: Vec<Reading> = [
        (0, 20.0),
        (10, 20.0),
        (20, 20.0),
        (30, 20.0),
        (40, 8.0),  // 0.4 of 20: pending
        (50, 8.0),  // 8 / 17.6: still pending
        (60, 8.0),  // 8 / 16 = 0.5, held 20 ms: firing
        (70, 9.0),  // 9 / 14.86: between the levels
        (80, 12.0), // 12 / 14.125: resolved
    ]
    .iter()
    .map(|(t, v)| activity("collar-1", *t, *v))
    .chain([
        // The other collar's mean is its own; its first reading has no baseline.
        activity("collar-2", 40, 1.0),
        activity("collar-2", 300, 30.0), // 260 ms after its only earlier reading: no baseline
    ])
    .collect();
    let got = run(&readings, &registry(), &from_start(&rules), 3);
    assert_eq!(
        values(&got),
        vec![
            (60, "collar-1", TransitionState::Firing, 0.5),
            (
                80,
                "collar-1",
                TransitionState::Resolved,
                12.0 / (113.0 / 8.0)
            ),
        ]
    );
    assert_eq!(got[0].summary, "a1 at 0.5 of its usual activity");
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
    ) {
        let entities = [("s1", Metric::Ch4), ("s2", Metric::Ch4), ("s3", Metric::Ch4), ("ghost", Metric::Ch4)];
        let mut readings = super::distinct_readings(raw, &entities);
        let copies: Vec<_> = duplicates.iter().filter_map(|i| readings.get(*i).cloned()).collect();
        readings.extend(copies);
        let rules = vec![
            baseline(alarm("low", Direction::Below, 0.5, 0.8, hold, &[]), 60),
            baseline(alarm("high", Direction::Above, 2.0, 1.5, hold / 2, &[("mine", "m1")]), 100),
            baseline(alarm("short", Direction::Above, 1.0, 1.0, 0, &[]), 15),
        ];
        let got = run_delayed(&readings, lateness, &registry(), &from_start(&rules), step_every);
        let plain: Vec<Reading> = readings.into_iter().map(|(r, _)| r).collect();
        prop_assert_eq!(got, rule_transitions(&plain, &registry(), &rules));
    }
}

#[test]
fn readings_with_the_same_value_as_ch4_baseline() {
    // A constant sensor sits at ratio 1: never below half.
    let rules = [baseline(
        alarm("low", Direction::Below, 0.5, 0.5, 0, &[]),
        50,
    )];
    let readings: Vec<Reading> = (0..20).map(|i| reading("s1", i * 5, 0.4)).collect();
    let got = run(&readings, &registry(), &from_start(&rules), 2);
    assert!(got.is_empty(), "{got:?}");
}
