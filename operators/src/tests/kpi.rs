//! KPIs over readings (windowed) and latest readings against a from-scratch reference: at
//! every checkpoint, each KPI's value per group is [`crate::kpi::aggregate`] over the rows its
//! definition selects, with each entity's labels as the registry held them (at the reading's
//! time for readings, at the checkpoint for latest readings). Readings and registry moves arrive
//! in random order before the input advances, on one worker and on two.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use citybrain_model::{Domain, EntityInfo, Labels, Metric};
use differential_dataflow::input::Input;
use ordered_float::OrderedFloat;
use proptest::prelude::*;

use crate::EntityId;
use crate::kpi::{
    Aggregate, KpiDef, KpiRow, KpiSource, KpiSources, KpiValue, aggregate, kpi_values,
};
use crate::latest::Latest;
use crate::matching::events;
use crate::{Diff, Time};

const SENSORS: u8 = 4;
const FACES: [&str; 2] = ["f0", "f1"];

/// A reading: (sensor, CH4 or CO, event time, value in tenths).
type TestReading = (u8, bool, Time, u8);

/// A registry move: from `time` on, `sensor` is on face `face` (`None`: unregistered).
type Move = (u8, Option<usize>, Time);

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn def(name: &str, source: KpiSource, aggregate: Aggregate, group_by: Option<&str>) -> KpiDef {
    let event = source.is_event_source();
    KpiDef {
        name: name.into(),
        source,
        filter: if name.starts_with("ch4") {
            labels(&[("metric", "ch4")])
        } else {
            labels(&[("domain", "mine")])
        },
        group_by: group_by.map(str::to_string),
        aggregate,
        window_ms: event.then_some(if name.ends_with("long") { 9 } else { 4 }),
    }
}

fn defs() -> Vec<KpiDef> {
    use Aggregate::*;
    use KpiSource::{Latest, Readings};
    let on_f0 = labels(&[("face", "f0")]);
    vec![
        def("ch4_count", Readings, Count, Some("face")),
        def(
            "sensors_long",
            Readings,
            DistinctCount("entity".into()),
            Some("face"),
        ),
        def("avg", Readings, Avg, None),
        def("ch4_on_f0_long", Readings, Ratio(on_f0.clone()), None),
        def("rate", Readings, RatePerMinute, Some("metric")),
        def("ch4_max", Latest, Max, Some("face")),
        def("p50", Latest, Percentile(50), None),
        def("min", Latest, Min, Some("metric")),
        def("ch4_sum", Latest, Sum, Some("face")),
        def("faces", Latest, DistinctCount("face".into()), None),
        def("on_f0", Latest, Ratio(on_f0), Some("metric")),
    ]
}

fn entity(sensor: u8) -> EntityId {
    format!("s{sensor}").into()
}

/// Sensors 0 and 1 start on f0, 2 on f1; 3 is unregistered until a move.
fn initial_face(sensor: u8) -> Option<usize> {
    match sensor {
        0 | 1 => Some(0),
        2 => Some(1),
        _ => None,
    }
}

fn info(face: usize) -> EntityInfo {
    EntityInfo::new([("face", Some(FACES[face].to_string()))], 0)
}

/// The face of `sensor` at `time` (moves at `time` included).
fn face_at(moves: &[Move], sensor: u8, time: Time) -> Option<usize> {
    moves
        .iter()
        .filter(|(s, _, t)| *s == sensor && *t <= time)
        .max_by_key(|(_, _, t)| *t)
        .map_or(initial_face(sensor), |(_, face, _)| *face)
}

fn metric(co: bool) -> Metric {
    if co { Metric::Co } else { Metric::Ch4 }
}

fn row(sensor: u8, co: bool, value: u8, face: Option<usize>) -> KpiRow {
    let mut pairs = vec![
        ("domain", "mine".to_string()),
        ("entity", entity(sensor).to_string()),
        ("metric", metric(co).as_str().to_string()),
    ];
    if let Some(face) = face {
        pairs.push(("face", FACES[face].to_string()));
    }
    let labels = pairs.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
    (labels, OrderedFloat(f64::from(value) / 10.0))
}

/// Every KPI value at `at`, from scratch.
fn reference(
    readings: &[TestReading],
    moves: &[Move],
    at: Time,
) -> BTreeMap<(String, String), f64> {
    let mut latest: BTreeMap<(u8, bool), (Time, u8)> = BTreeMap::new();
    for &(sensor, co, time, value) in readings.iter().filter(|r| r.2 <= at) {
        let slot = latest.entry((sensor, co)).or_insert((time, value));
        if (time, value) > *slot {
            *slot = (time, value);
        }
    }
    let latest_rows: Vec<KpiRow> = latest
        .iter()
        .map(|(&(sensor, co), &(_, value))| row(sensor, co, value, face_at(moves, sensor, at)))
        .collect();
    let mut values = BTreeMap::new();
    for def in defs() {
        let rows: Vec<KpiRow> = match (def.source, def.window_ms) {
            (KpiSource::Readings, Some(window)) => readings
                .iter()
                .filter(|r| r.2 <= at && at < r.2 + window)
                .map(|&(sensor, co, time, value)| {
                    row(sensor, co, value, face_at(moves, sensor, time))
                })
                .collect(),
            _ => latest_rows.clone(),
        };
        let mut groups: BTreeMap<String, Vec<(&KpiRow, Diff)>> = BTreeMap::new();
        for row in rows
            .iter()
            .filter(|row| crate::kpi::matches(*row, &def.filter))
        {
            if let Aggregate::DistinctCount(label) = &def.aggregate
                && crate::kpi::KpiFields::label(row, label).is_none()
            {
                continue;
            }
            let group = crate::kpi::group_of(row, def.group_by.as_deref());
            groups.entry(group).or_default().push((row, 1));
        }
        for (group, rows) in groups {
            if let Some(value) = aggregate(&rows, &def.aggregate, def.window_ms) {
                values.insert((def.name.clone(), group), value);
            }
        }
    }
    values
}

/// The dataflow's KPI values at every checkpoint, on `workers` workers.
fn run(
    readings: &[TestReading],
    moves: &[Move],
    checkpoints: &[Time],
    workers: usize,
) -> Vec<BTreeMap<(String, String), f64>> {
    let updates: Arc<Mutex<Vec<(KpiValue, Time, Diff)>>> = Arc::default();
    let (readings, moves, checkpoints_in) =
        (readings.to_vec(), moves.to_vec(), checkpoints.to_vec());
    let sink = Arc::clone(&updates);
    let config = timely::Config::process(workers);
    timely::execute(config, move |worker| {
        let sink = Arc::clone(&sink);
        let first = worker.index() == 0;
        let (mut reading_input, mut registry_input, probe) =
            worker.dataflow::<Time, _, _>(|scope| {
                let (reading_input, reading_rows) = scope.new_collection();
                let (registry_input, registry) = scope.new_collection();
                let sources = KpiSources {
                    readings: Some(events(reading_rows.clone(), registry.clone())),
                    latest: Some(reading_rows.latest(registry)),
                    alerts: None,
                    reports: None,
                    report_events: None,
                };
                let values = kpi_values(&sources, &defs()).expect("KPIs are defined");
                let (probe, _) = values
                    .inspect(move |update| sink.lock().expect("not poisoned").push(update.clone()))
                    .probe();
                (reading_input, registry_input, probe)
            });
        if first {
            for sensor in 0..SENSORS {
                if let Some(face) = initial_face(sensor) {
                    registry_input.insert(((Domain::Mine, entity(sensor)), info(face)));
                }
            }
            for &(sensor, face, time) in &moves {
                let key = (Domain::Mine, entity(sensor));
                let before = face_at(&moves, sensor, time - 1);
                if let Some(before) = before {
                    registry_input.update_at((key.clone(), info(before)), time, -1);
                }
                if let Some(face) = face {
                    registry_input.update_at((key, info(face)), time, 1);
                }
            }
            for &(sensor, co, time, value) in &readings {
                let reading = (metric(co), OrderedFloat(f64::from(value) / 10.0));
                reading_input.update_at(((Domain::Mine, entity(sensor)), reading), time, 1);
            }
        }
        for &at in &checkpoints_in {
            reading_input.advance_to(at + 1);
            registry_input.advance_to(at + 1);
            reading_input.flush();
            registry_input.flush();
            while probe.less_than(&(at + 1)) {
                worker.step();
            }
        }
    })
    .expect("timely runs");
    let updates = updates.lock().expect("not poisoned").clone();
    checkpoints
        .iter()
        .map(|&at| {
            let mut counts: BTreeMap<((String, String), OrderedFloat<f64>), Diff> = BTreeMap::new();
            for ((key, value), time, diff) in &updates {
                if *time <= at {
                    *counts.entry((key.clone(), *value)).or_default() += diff;
                }
            }
            counts
                .into_iter()
                .filter(|(_, n)| *n != 0)
                .map(|((key, value), _)| (key, value.0))
                .collect()
        })
        .collect()
}

/// Rounds values so fixed-point sums and float sums compare equal.
fn rounded(values: BTreeMap<(String, String), f64>) -> BTreeMap<(String, String), i64> {
    values
        .into_iter()
        .map(|(key, value)| (key, (value * 1e6).round() as i64))
        .collect()
}

fn check(readings: &[TestReading], moves: &[Move], workers: usize) -> Result<(), TestCaseError> {
    let last = readings
        .iter()
        .map(|r| r.2)
        .chain(moves.iter().map(|m| m.2))
        .max()
        .unwrap_or(0);
    let checkpoints: Vec<Time> = (0..=last + 10).step_by(3).collect();
    let got = run(readings, moves, &checkpoints, workers);
    for (at, got) in checkpoints.iter().zip(got) {
        prop_assert_eq!(
            rounded(got),
            rounded(reference(readings, moves, *at)),
            "at {}",
            at
        );
    }
    Ok(())
}

fn readings_strategy() -> impl Strategy<Value = Vec<TestReading>> {
    proptest::collection::vec((0..SENSORS, any::<bool>(), 0u64..30, 0u8..10), 0..40)
}

/// At most one move per (sensor, time), so the registry never holds two rows for a sensor.
fn moves_strategy() -> impl Strategy<Value = Vec<Move>> {
    proptest::collection::btree_map(
        (0..SENSORS, 1u64..30),
        proptest::option::of(0..FACES.len()),
        0..6,
    )
    .prop_map(|moves| {
        moves
            .into_iter()
            .map(|((sensor, time), face)| (sensor, face, time))
            .collect()
    })
}

proptest! {
    #[test]
    fn random_readings_and_registry_moves_match_the_reference(
        readings in readings_strategy(),
        moves in moves_strategy(),
    ) {
        check(&readings, &moves, 1)?;
    }
}

proptest! {
    // Two threads per case: fewer cases, the routing is what they add.
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn two_workers_match_the_reference(
        readings in readings_strategy(),
        moves in moves_strategy(),
    ) {
        check(&readings, &moves, 2)?;
    }
}

#[test]
fn a_registry_move_relabels_the_latest_reading_at_the_move() {
    // s0 reads 0.5 on f0 at 2, moves to f1 at 5, reads nothing more.
    let readings = [(0, false, 2, 5)];
    let moves = [(0, Some(1), 5)];
    let got = run(&readings, &moves, &[4, 5], 1);
    assert_eq!(
        got[0].get(&("ch4_max".to_string(), "f0".to_string())),
        Some(&0.5)
    );
    assert_eq!(got[1].get(&("ch4_max".to_string(), "f0".to_string())), None);
    assert_eq!(
        got[1].get(&("ch4_max".to_string(), "f1".to_string())),
        Some(&0.5)
    );
}
