//! Every kind together through [`crate::rule_alerts`], with rules edited while readings flow:
//! the alarm sides change (levels, hold) and so do the shapes (window lengths, tolerance).

use citybrain_model::{AlertTransition, Metric, Reading, TransitionState};
use ordered_float::OrderedFloat;
use proptest::prelude::*;

use super::{alarm, registry, run_delayed};
use crate::kinds::baseline::BaselineRule;
use crate::kinds::correlation::{Condition, CorrelationRule};
use crate::kinds::rate_of_rise::RateOfRiseRule;
use crate::kinds::window::{Aggregate, WindowRule};
use crate::reference::{RuleChange, rule_transitions_over_time};
use crate::rule::{Direction, GroupBy, RuleRow};

/// One rule of each kind; `v` picks one of two versions of levels and shapes.
pub(super) fn rules(v: usize) -> Vec<RuleRow> {
    let pick = |a: f64, b: f64| if v == 0 { a } else { b };
    let pick_ms = |a: u64, b: u64| if v == 0 { a } else { b };
    vec![
        RuleRow::Threshold(alarm(
            "threshold",
            Direction::Above,
            pick(1.0, 0.9),
            0.8,
            pick_ms(0, 20),
            &[],
        )),
        RuleRow::Window(WindowRule {
            alarm: alarm(
                "window",
                Direction::Above,
                pick(0.8, 0.6),
                0.5,
                pick_ms(20, 0),
                &[],
            ),
            window_ms: pick_ms(40, 60),
            hop_ms: 20,
            group_by: GroupBy::Face,
            aggregate: Aggregate::Avg,
        }),
        RuleRow::RateOfRise(RateOfRiseRule {
            alarm: alarm("rate", Direction::Above, pick(600.0, 300.0), 100.0, 0, &[]),
            window_ms: pick_ms(50, 30),
            min_span_ms: 5,
        }),
        RuleRow::Baseline(BaselineRule {
            alarm: alarm(
                "baseline",
                Direction::Below,
                pick(0.5, 0.7),
                0.8,
                pick_ms(10, 0),
                &[],
            ),
            baseline_ms: pick_ms(80, 40),
        }),
        RuleRow::Correlation(CorrelationRule {
            alarm: alarm("correlation", Direction::Above, pick(0.8, 1.0), 0.6, 0, &[]),
            with: Condition {
                metric: Metric::AirVelocity,
                direction: Direction::Below,
                threshold: OrderedFloat(pick(0.5, 0.4)),
                clear: OrderedFloat(0.8),
            },
            group_by: GroupBy::Face,
            tolerance_ms: pick_ms(20, 35),
        }),
    ]
}

/// Raw readings as (entity index, time, value code, delay), see `super::distinct_readings`.
type RawReading = (usize, u64, u32, u64);

/// Runs the rules of every kind, with `edits` (time, which rule swaps its version) applied,
/// over `raw` readings, and returns (what the engine gave, what the reference gives).
fn engine_and_reference(
    raw: Vec<RawReading>,
    lateness: u64,
    step_every: usize,
    mut edits: Vec<(u64, usize)>,
) -> (Vec<AlertTransition>, Vec<AlertTransition>) {
    let entities = [
        ("s1", Metric::Ch4),
        ("s2", Metric::Ch4),
        ("s3", Metric::Ch4),
        ("ghost", Metric::Ch4),
        ("v1", Metric::AirVelocity),
        ("v2", Metric::AirVelocity),
    ];
    let readings = super::distinct_readings(raw, &entities);
    // Each edit swaps one rule's version at a time.
    let mut changes: Vec<RuleChange> = rules(0).into_iter().map(|r| (0, r, 1)).collect();
    let mut version = [0usize; 5];
    edits.sort();
    for (time, which) in edits {
        let old = rules(version[which]).swap_remove(which);
        version[which] = 1 - version[which];
        let new = rules(version[which]).swap_remove(which);
        changes.push((time, old, -1));
        changes.push((time, new, 1));
    }
    let got = run_delayed(&readings, lateness, &registry(), &changes, step_every);
    let plain: Vec<Reading> = readings.into_iter().map(|(r, _)| r).collect();
    (
        got,
        rule_transitions_over_time(&plain, &registry(), &changes),
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]
    #[test]
    fn every_kind_with_rule_edits_equals_reference(
        raw in proptest::collection::vec((0usize..6, 0u64..300, 0u32..16, 0u64..30), 0..120),
        lateness in prop_oneof![Just(0u64), Just(30)],
        step_every in 1usize..20,
        edits in proptest::collection::vec((0u64..300, 0usize..5), 0..4),
    ) {
        let (got, expected) = engine_and_reference(raw, lateness, step_every, edits);
        prop_assert_eq!(got, expected);
    }
}

/// An air velocity reading of 0.4 at 216 ms counts until 251 ms under the correlation rule's
/// second version (35 ms tolerance); the edit at 221 ms back to 20 ms comes with a reading of
/// 0 that counts until 241 ms. At 249 ms the side is unknown: the newer reading supersedes the
/// older one, which does not come back (the reference once paired CH4 at 249 ms with the 0.4
/// and resolved the alert there; the engine did not).
#[test]
fn a_superseded_correlation_reading_does_not_come_back_after_a_tolerance_edit() {
    let raw = vec![
        (4, 221, 0, 0),
        (4, 216, 4, 9),
        (2, 240, 13, 21),
        (2, 249, 3, 28),
    ];
    let (got, expected) = engine_and_reference(raw, 0, 13, vec![(77, 4), (221, 4)]);
    assert_eq!(got, expected);
    let correlation: Vec<_> = got
        .iter()
        .filter(|t| t.rule == "correlation")
        .map(|t| (t.state, t.event_time))
        .collect();
    assert_eq!(correlation, vec![(TransitionState::Firing, 240)]);
}
