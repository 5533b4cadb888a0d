//! Ingest stalls: a fixed case with exact transitions (one `ingest stalled` alert for a
//! partition that stops, none of its sensors silent, a sensor on a healthy partition still
//! silent, the stall resolving and a sensor still silent afterwards timed from its end), and
//! random out-of-order input against the reference.

use std::collections::HashMap;

use citybrain_model::alert::RULE_REMOVED;
use citybrain_model::{AlertTransition, Domain, Metric, PartitionId, Reading, TransitionState};
use proptest::prelude::*;

use super::{alarm, reading, reading_of, registry, run_placed_until};
use crate::EntityKey;
use crate::kinds::absence::AbsenceRule;
use crate::reference::{RuleChange, stall_transitions};
use crate::rule::{Direction, RuleRow};

/// An absence rule on CH4 sensors (3 cadences of 1 s) that also times partitions.
fn absence(stall_after_ms: u64, hold_ms: u64) -> RuleRow {
    let mut alarm = alarm("ch4-silent", Direction::Above, 1.0, 1.0, hold_ms, &[]);
    alarm.summary = "Gas sensor {entity} silent for {value} s".into();
    RuleRow::Absence(AbsenceRule {
        alarm,
        cadences: 3,
        stall_after_ms: Some(stall_after_ms),
    })
}

/// Partition `n` of `mine.readings`.
fn partition(n: i32) -> PartitionId {
    PartitionId {
        domain: Domain::Mine,
        topic: "mine.readings".into(),
        partition: n,
    }
}

/// s1 and v1 on partition 0, s2 and s3 on partition 1.
fn placements() -> HashMap<EntityKey, PartitionId> {
    [("s1", 0), ("v1", 0), ("s2", 1), ("s3", 1)]
        .into_iter()
        .map(|(entity, n)| ((Domain::Mine, entity.into()), partition(n)))
        .collect()
}

/// (event time, entity, state, value) of each transition.
fn seen(transitions: &[AlertTransition]) -> Vec<(u64, &str, TransitionState, f64)> {
    super::values(transitions)
}

fn plain(readings: &[(Reading, u64)]) -> Vec<Reading> {
    readings.iter().map(|(r, _)| r.clone()).collect()
}

#[test]
fn a_stalled_partition_raises_one_alert_instead_of_its_sensors_silences() {
    use TransitionState::{Firing, Resolved};
    let mut readings = Vec::new();
    for second in 0..=20u64 {
        let t = second * 1_000;
        // Partition 0 keeps going (v1); s1 stops after 12 s.
        readings.push(reading_of("v1", Metric::AirVelocity, t, 1.0));
        if second <= 12 {
            readings.push(reading("s1", t, 0.3));
        }
        // Partition 1 stops after 3 s and comes back at 10 s with s2 only.
        if second <= 3 {
            readings.push(reading("s2", t, 0.2));
            readings.push(reading("s3", t, 0.2));
        }
        if second >= 10 {
            readings.push(reading("s2", t, 0.2));
        }
    }
    // Out of order: each arrives up to 1.5 s late.
    let readings: Vec<(Reading, u64)> = readings
        .into_iter()
        .enumerate()
        .map(|(i, r)| (r, (i as u64 * 700) % 1_500))
        .collect();
    let rules = [absence(2_000, 0)];
    let changes = super::from_start(&rules);
    let got = run_placed_until(
        &readings,
        1_500,
        &registry(),
        &changes,
        3,
        20_500,
        &placements(),
    );
    assert_eq!(
        seen(&got),
        vec![
            // Partition 1 last heard at 3 s: stalled at 5 s; s2 and s3 (deadline 6 s) quiet.
            (5_000, "mine.readings/1", Firing, 2.0),
            (10_000, "mine.readings/1", Resolved, 7.0),
            // s3 still silent: timed from the end of the stall.
            (13_000, "s3", Firing, 10.0),
            // s1 on the healthy partition 0 goes silent as before.
            (15_000, "s1", Firing, 3.0),
        ]
    );
    let stall = &got[0];
    assert_eq!(
        stall.summary,
        "ingest stalled: mine.readings/1 delivered no readings for 2 s"
    );
    let label = |name: &str| stall.labels.get(name).map(String::as_str);
    assert_eq!(label("rule_kind"), Some("ingest_stall"));
    assert_eq!(label("topic"), Some("mine.readings"));
    assert_eq!(label("partition"), Some("1"));
    assert_eq!(label("domain"), Some("mine"));
    assert_eq!(stall.rule, "ch4-silent");
    assert_eq!(
        got,
        stall_transitions(
            &plain(&readings),
            &registry(),
            &rules,
            &placements(),
            20_500
        )
    );
}

#[test]
fn without_stall_after_partitions_are_not_watched() {
    let mut rule = absence(2_000, 0);
    if let RuleRow::Absence(r) = &mut rule {
        r.stall_after_ms = None;
    }
    let readings: Vec<(Reading, u64)> = (0..=3u64)
        .map(|s| (reading("s2", s * 1_000, 0.2), 0))
        .chain((0..=10u64).map(|s| (reading("s1", s * 1_000, 0.2), 0)))
        .collect();
    let changes = super::from_start(&[rule]);
    let got = run_placed_until(
        &readings,
        0,
        &registry(),
        &changes,
        2,
        10_500,
        &placements(),
    );
    assert_eq!(
        seen(&got),
        vec![(6_000, "s2", TransitionState::Firing, 3.0)]
    );
}

/// s1 and v1 (partition 0) every second up to 12 s; s2 and s3 (partition 1) up to 3 s.
fn partition_one_stops() -> Vec<(Reading, u64)> {
    let mut readings = Vec::new();
    for second in 0..=12u64 {
        let t = second * 1_000;
        readings.push((reading_of("v1", Metric::AirVelocity, t, 1.0), 0));
        readings.push((reading("s1", t, 0.3), 0));
        if second <= 3 {
            readings.push((reading("s2", t, 0.2), 0));
            readings.push((reading("s3", t, 0.2), 0));
        }
    }
    readings
}

#[test]
fn dropping_stall_after_ends_the_stall_and_the_silences_count_from_then() {
    use TransitionState::{Firing, Resolved};
    let with = absence(2_000, 0);
    let mut without = with.clone();
    if let RuleRow::Absence(r) = &mut without {
        r.stall_after_ms = None;
    }
    let changes: Vec<RuleChange> =
        vec![(0, with.clone(), 1), (8_000, with, -1), (8_000, without, 1)];
    let got = run_placed_until(
        &partition_one_stops(),
        0,
        &registry(),
        &changes,
        2,
        12_500,
        &placements(),
    );
    assert_eq!(
        seen(&got),
        vec![
            (5_000, "mine.readings/1", Firing, 2.0),
            (8_000, "mine.readings/1", Resolved, 5.0),
            (11_000, "s2", Firing, 8.0),
            (11_000, "s3", Firing, 8.0),
        ]
    );
}

#[test]
fn removing_the_rule_resolves_the_stall() {
    use TransitionState::{Firing, Resolved};
    let rule = absence(2_000, 0);
    let changes: Vec<RuleChange> = vec![(0, rule.clone(), 1), (8_000, rule, -1)];
    let got = run_placed_until(
        &partition_one_stops(),
        0,
        &registry(),
        &changes,
        2,
        12_500,
        &placements(),
    );
    assert_eq!(
        seen(&got),
        vec![
            (5_000, "mine.readings/1", Firing, 2.0),
            (8_000, "mine.readings/1", Resolved, 5.0),
        ]
    );
    assert_eq!(got[1].reason.as_deref(), Some(RULE_REMOVED));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]
    #[test]
    fn out_of_order_within_lateness_equals_reference(
        raw in proptest::collection::vec((0usize..5, 0u64..400, 0u32..16, 0u64..30), 0..100),
        lateness in prop_oneof![Just(0u64), Just(1_000), Just(3_000)],
        step_every in 1usize..20,
        hold in prop_oneof![Just(0u64), Just(500)],
        stall_after in prop_oneof![Just(1_000u64), Just(2_000), Just(2_500)],
    ) {
        let entities = [
            ("s1", Metric::Ch4),
            ("s2", Metric::Ch4),
            ("s3", Metric::Ch4),
            ("v1", Metric::AirVelocity),
            ("ghost", Metric::Ch4),
        ];
        // Times and delays in steps of 100 ms over 40 s: gaps of several cadences (1 s).
        let scaled: Vec<_> = raw.into_iter().map(|(e, t, v, d)| (e, t * 100, v, d * 100)).collect();
        let readings = super::distinct_readings(scaled, &entities);
        let rules = [
            absence(stall_after, hold),
            RuleRow::Threshold(alarm("ch4-high", Direction::Above, 1.0, 0.8, 0, &[])),
        ];
        let changes = super::from_start(&rules);
        let got = run_placed_until(
            &readings, lateness, &registry(), &changes, step_every, 45_000, &placements(),
        );
        prop_assert_eq!(
            got,
            stall_transitions(&plain(&readings), &registry(), &rules, &placements(), 45_000)
        );
    }
}
