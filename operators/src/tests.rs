//! The dataflow against the plain-loop reference, on fixed cases and on random ones.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use citybrain_model::{
    AlertTransition, Domain, EntityInfo, Metric, Reading, Severity, TransitionState,
};
use differential_dataflow::input::Input;
use ordered_float::OrderedFloat;
use proptest::prelude::*;
use timely::dataflow::operators::{Inspect, Probe};

use crate::reference::{sort_transitions, threshold_transitions};
use crate::rule::{Direction, ThresholdRule};
use crate::{EntityKey, threshold_alerts};

fn rule(
    id: &str,
    direction: Direction,
    threshold: f64,
    clear: f64,
    hold_ms: u64,
    scope: &[(&str, &str)],
) -> ThresholdRule {
    ThresholdRule {
        id: id.into(),
        domain: Domain::Mine,
        metric: Metric::Ch4,
        scope: scope
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        direction,
        threshold: OrderedFloat(threshold),
        clear: OrderedFloat(clear),
        hold_ms,
        severity: Severity::Critical,
        summary: "CH4 {value} on {face}".into(),
        labels: vec![("team".into(), "ventilation".into())],
    }
}

fn reading(entity: &str, time: u64, value: f64) -> Reading {
    Reading {
        domain: Domain::Mine,
        entity: entity.into(),
        metric: Metric::Ch4,
        value,
        time,
    }
}

fn registry() -> HashMap<EntityKey, EntityInfo> {
    let sensor = |mine: &str, face: &str| {
        EntityInfo::new(
            [
                ("mine", Some(mine.to_string())),
                ("face", Some(face.to_string())),
                ("kind", Some("ch4".to_string())),
            ],
            1000,
        )
    };
    HashMap::from([
        ((Domain::Mine, "s1".to_string()), sensor("m1", "m1/f1")),
        ((Domain::Mine, "s2".to_string()), sensor("m1", "m1/f2")),
    ])
}

/// Runs the dataflow with every reading sent out of order at logical time 0 .. their times,
/// in `batches` rounds of input that advance the input frontier in between.
fn run(
    readings: &[Reading],
    registry: &HashMap<EntityKey, EntityInfo>,
    rules: &[ThresholdRule],
    batches: usize,
) -> Vec<AlertTransition> {
    let readings = readings.to_vec();
    let registry = registry.clone();
    let rules = rules.to_vec();
    timely::execute_directly(move |worker| {
        let out = Rc::new(RefCell::new(Vec::new()));
        let sink = Rc::clone(&out);
        let (mut reading_input, mut registry_input, mut rule_input, probe) = worker
            .dataflow::<u64, _, _>(|scope| {
                let (reading_input, readings) = scope.new_collection();
                let (registry_input, registry) = scope.new_collection();
                let (rule_input, rules) = scope.new_collection();
                let (probe, _) = threshold_alerts(readings, registry, rules)
                    .inspect(move |t: &AlertTransition| sink.borrow_mut().push(t.clone()))
                    .probe();
                (reading_input, registry_input, rule_input, probe)
            });
        for (key, info) in registry {
            registry_input.insert((key, info));
        }
        for rule in rules {
            rule_input.insert(rule);
        }
        registry_input.close();
        rule_input.close();
        // Each batch holds readings in reverse order; the input only advances to the least
        // time of what is still to come, as a watermark would.
        let mut remaining = readings;
        remaining.sort_by_key(|r| r.time);
        let chunk = remaining.len().div_ceil(batches.max(1)).max(1);
        let chunks: Vec<Vec<Reading>> = remaining.chunks(chunk).map(|c| c.to_vec()).collect();
        for batch in chunks {
            if let Some(first) = batch.first() {
                reading_input.advance_to(first.time);
            }
            for r in batch.into_iter().rev() {
                reading_input.update_at(
                    ((r.domain, r.entity), (r.metric, OrderedFloat(r.value))),
                    r.time,
                    1,
                );
            }
            reading_input.flush();
            worker.step();
        }
        reading_input.close();
        while !probe.done() {
            worker.step();
        }
        let mut result = out.borrow().clone();
        sort_transitions(&mut result);
        result
    })
}

fn states(transitions: &[AlertTransition]) -> Vec<(u64, &str, &str, TransitionState)> {
    transitions
        .iter()
        .map(|t| (t.event_time, t.rule.as_str(), t.entity.as_str(), t.state))
        .collect()
}

#[test]
fn for_and_hysteresis_on_one_sensor() {
    let rules = [rule("ch4-hold", Direction::Above, 1.0, 0.8, 20, &[])];
    let values = [0.5, 1.0, 1.1, 0.9, 1.2, 1.3, 1.4, 0.9, 0.85, 0.7, 1.0];
    let readings: Vec<Reading> = values
        .iter()
        .enumerate()
        .map(|(i, v)| reading("s1", i as u64 * 10, *v))
        .collect();
    let got = run(&readings, &registry(), &rules, 3);
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
        rule(
            "face-2-only",
            Direction::Above,
            1.0,
            1.0,
            0,
            &[("face", "m1/f2")],
        ),
        rule("everywhere", Direction::Above, 1.0, 1.0, 0, &[]),
    ];
    let readings = vec![
        reading("s1", 5, 1.5),
        reading("s2", 5, 1.5),
        reading("ghost", 5, 1.5),
    ];
    let got = run(&readings, &registry(), &rules, 1);
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
    let rules = [rule("low", Direction::Below, 0.25, 0.3, 0, &[])];
    let readings = vec![
        reading("s1", 1, 0.2),
        reading("s1", 1, 0.2),
        reading("s1", 2, 0.28),
        reading("s1", 3, 0.31),
    ];
    let got = run(&readings, &registry(), &rules, 2);
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
            rule("above", Direction::Above, 1.0, 0.8, hold, &[]),
            rule("below", Direction::Below, 0.3, 0.5, hold / 2, &[("mine", "m1")]),
            rule("f1", Direction::Above, 1.2, 1.2, 0, &[("face", "m1/f1")]),
        ];
        let got = run(&readings, &registry(), &rules, batches);
        let expected = threshold_transitions(&readings, &registry(), &rules);
        prop_assert_eq!(got, expected);
    }
}
