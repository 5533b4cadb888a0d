//! The dataflow against the plain-loop reference ([`crate::reference`]), on fixed cases with
//! exact expected transitions and on random out-of-order input (proptest), one file per kind.
//!
//! Two harnesses feed the dataflow: [`run`] sends batches of readings in reverse time order,
//! advancing the input only to the least time still to come; [`run_delayed`] delivers each
//! reading a random delay within the allowed lateness after its event time, with the input
//! following a watermark of "newest arrival minus lateness", as the Kafka source does. Either
//! way the result must equal the reference over the sorted readings.

mod absence;
mod all_kinds;
mod baseline;
mod correlation;
mod exchange;
mod follow_up;
mod kpi;
mod locality;
mod rate_of_rise;
mod report_deadline;
mod stall;
mod threshold;
mod window;

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::{Arc, Mutex};

use citybrain_model::{
    AlertTransition, Domain, EntityInfo, Metric, PartitionId, Reading, Severity,
};
use differential_dataflow::VecCollection;
use differential_dataflow::input::Input;
use ordered_float::OrderedFloat;
use timely::dataflow::operators::{Concat, Inspect, Probe};

use crate::reference::{RuleChange, sort_transitions};
use crate::rule::{Direction, RuleRow, ThresholdRule};
use crate::stall::PartitionRow;
use crate::{Diff, EntityKey, Time, rule_alerts_by_clock_seeded};

/// An alarm side on mine CH4 (tests change the metric where they need another).
pub(crate) fn alarm(
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

/// A reading of `metric` on the mine domain.
pub(crate) fn reading_of(entity: &str, metric: Metric, time: u64, value: f64) -> Reading {
    Reading {
        domain: Domain::Mine,
        entity: entity.into(),
        metric,
        value,
        time,
    }
}

/// A CH4 reading.
pub(crate) fn reading(entity: &str, time: u64, value: f64) -> Reading {
    reading_of(entity, Metric::Ch4, time, value)
}

/// Sensors: s1 (CH4, m1/f1), s2 (CH4, m1/f2), s3 (CH4, m1/f1), v1 (air velocity, m1/f1),
/// v2 (air velocity, m1/f2), v3 (air velocity, m2/f3); farm devices `collar-1` and `collar-2`
/// (activity of animals a1 and a2 in herd h1 of ranch r1). `ghost` is not registered.
pub(crate) fn registry() -> HashMap<EntityKey, EntityInfo> {
    let sensor = |mine: &str, face: &str, kind: &str| {
        EntityInfo::new(
            [
                ("mine", Some(mine.to_string())),
                ("face", Some(face.to_string())),
                ("kind", Some(kind.to_string())),
            ],
            1000,
        )
    };
    let collar = |animal: &str| {
        EntityInfo::new(
            [
                ("farm", Some("r1".to_string())),
                ("herd", Some("h1".to_string())),
                ("animal", Some(animal.to_string())),
                ("kind", Some("activity".to_string())),
            ],
            60_000,
        )
    };
    HashMap::from([
        ((Domain::Mine, "s1".into()), sensor("m1", "m1/f1", "ch4")),
        ((Domain::Mine, "s2".into()), sensor("m1", "m1/f2", "ch4")),
        ((Domain::Mine, "s3".into()), sensor("m1", "m1/f1", "ch4")),
        (
            (Domain::Mine, "v1".into()),
            sensor("m1", "m1/f1", "air_velocity"),
        ),
        (
            (Domain::Mine, "v2".into()),
            sensor("m1", "m1/f2", "air_velocity"),
        ),
        (
            (Domain::Mine, "v3".into()),
            sensor("m2", "m2/f3", "air_velocity"),
        ),
        ((Domain::Farm, "collar-1".into()), collar("a1")),
        ((Domain::Farm, "collar-2".into()), collar("a2")),
    ])
}

/// Rules present from time 0.
pub(crate) fn from_start(rules: &[RuleRow]) -> Vec<RuleChange> {
    rules.iter().map(|r| (0, r.clone(), 1)).collect()
}

/// Runs every rule kind ([`crate::rule_alerts_by_clock_seeded`]) over `arrivals`: `(reading, time of the input frontier when it is
/// sent)`, in order, stepping the worker every `step_every` readings. With `end`, the input
/// then advances to `end` and the dataflow runs up to it before the input closes (timers of
/// absence rules fire only while the input is open). The entities in `placements` are on
/// those partitions from time 0, and each of their readings says its partition was heard
/// from, as the Kafka source does.
fn run_arrivals(
    arrivals: Vec<(Reading, u64)>,
    registry: &HashMap<EntityKey, EntityInfo>,
    changes: &[RuleChange],
    step_every: usize,
    end: Option<u64>,
    placements: &HashMap<EntityKey, PartitionId>,
) -> Vec<AlertTransition> {
    let registry = registry.clone();
    let changes = changes.to_vec();
    let placements = placements.clone();
    timely::execute_directly(move |worker| {
        let out = Rc::new(RefCell::new(Vec::new()));
        let sink = Rc::clone(&out);
        let (mut reading_input, mut registry_input, mut rule_input, mut partition_input, probe) =
            worker.dataflow::<u64, _, _>(|scope| {
                let (reading_input, readings) = scope.new_collection();
                let (registry_input, registry) = scope.new_collection();
                let (rule_input, rules) = scope.new_collection();
                let (partition_input, partitions) = scope.new_collection();
                let (_, reports) = scope.new_collection();
                let (sensor, citizen) = rule_alerts_by_clock_seeded(
                    crate::matching::events(readings, registry.clone()),
                    registry,
                    reports,
                    partitions,
                    rules,
                    Default::default(),
                    crate::DEFAULT_REPORT_RETENTION_MS,
                );
                let (probe, _) = sensor
                    .concat(citizen)
                    .inspect(move |t: &AlertTransition| sink.borrow_mut().push(t.clone()))
                    .probe();
                (
                    reading_input,
                    registry_input,
                    rule_input,
                    partition_input,
                    probe,
                )
            });
        for (key, info) in registry {
            registry_input.insert((key, info));
        }
        for (entity, partition) in &placements {
            partition_input.insert(PartitionRow::Placement(entity.clone(), partition.clone()));
        }
        for (time, rule, diff) in changes {
            rule_input.update_at(rule, time, diff);
        }
        registry_input.close();
        rule_input.close();
        for (i, (r, frontier)) in arrivals.into_iter().enumerate() {
            if frontier > *reading_input.time() {
                reading_input.advance_to(frontier);
                partition_input.advance_to(frontier);
            }
            if let Some(partition) = placements.get(&(r.domain, r.entity.clone())) {
                partition_input.update_at(PartitionRow::Heard(partition.clone()), r.time, 1);
            }
            reading_input.update_at(
                ((r.domain, r.entity), (r.metric, OrderedFloat(r.value))),
                r.time,
                1,
            );
            if (i + 1) % step_every.max(1) == 0 {
                reading_input.flush();
                partition_input.flush();
                worker.step();
            }
        }
        if let Some(end) = end {
            if end > *reading_input.time() {
                reading_input.advance_to(end);
                partition_input.advance_to(end);
            }
            reading_input.flush();
            partition_input.flush();
            while probe.less_than(&end) {
                worker.step();
            }
        }
        reading_input.close();
        partition_input.close();
        while !probe.done() {
            worker.step();
        }
        let mut result = out.borrow().clone();
        sort_transitions(&mut result);
        result
    })
}

/// Runs the dataflow with the readings sent in `batches` rounds, each in reverse time order;
/// the input only advances to the least time of what is still to come, as a watermark would.
pub(crate) fn run(
    readings: &[Reading],
    registry: &HashMap<EntityKey, EntityInfo>,
    changes: &[RuleChange],
    batches: usize,
) -> Vec<AlertTransition> {
    let mut remaining = readings.to_vec();
    remaining.sort_by_key(|r| r.time);
    let chunk = remaining.len().div_ceil(batches.max(1)).max(1);
    let mut arrivals = Vec::new();
    for batch in remaining.chunks(chunk) {
        let frontier = batch.first().map_or(0, |r| r.time);
        arrivals.extend(batch.iter().rev().map(|r| (r.clone(), frontier)));
    }
    run_arrivals(arrivals, registry, changes, chunk, None, &HashMap::new())
}

/// Runs the dataflow with each reading arriving `delay` after its event time (`delay <=
/// lateness`), in arrival order; the input frontier follows "newest arrival - lateness", so no
/// reading is ever late. Steps the worker every `step_every` readings.
pub(crate) fn run_delayed(
    readings: &[(Reading, u64)],
    lateness: u64,
    registry: &HashMap<EntityKey, EntityInfo>,
    changes: &[RuleChange],
    step_every: usize,
) -> Vec<AlertTransition> {
    run_arrivals(
        delayed(readings, lateness),
        registry,
        changes,
        step_every,
        None,
        &HashMap::new(),
    )
}

/// Each reading at `delay` (at most `lateness`) after its event time, in arrival order, with
/// the input frontier at "newest arrival - lateness".
fn delayed(readings: &[(Reading, u64)], lateness: u64) -> Vec<(Reading, u64)> {
    let mut ordered: Vec<(u64, usize, &Reading)> = readings
        .iter()
        .enumerate()
        .map(|(i, (r, delay))| (r.time + delay.min(&lateness), i, r))
        .collect();
    ordered.sort_by_key(|(arrival, i, _)| (*arrival, *i));
    ordered
        .into_iter()
        .map(|(arrival, _, r)| (r.clone(), arrival.saturating_sub(lateness)))
        .collect()
}

/// [`run_delayed`], then the input advances to `end` (after every reading) before it closes.
pub(crate) fn run_delayed_until(
    readings: &[(Reading, u64)],
    lateness: u64,
    registry: &HashMap<EntityKey, EntityInfo>,
    changes: &[RuleChange],
    step_every: usize,
    end: u64,
) -> Vec<AlertTransition> {
    run_arrivals(
        delayed(readings, lateness),
        registry,
        changes,
        step_every,
        Some(end),
        &HashMap::new(),
    )
}

/// [`run_delayed_until`] with the entities of `placements` on those partitions.
pub(crate) fn run_placed_until(
    readings: &[(Reading, u64)],
    lateness: u64,
    registry: &HashMap<EntityKey, EntityInfo>,
    changes: &[RuleChange],
    step_every: usize,
    end: u64,
    placements: &HashMap<EntityKey, PartitionId>,
) -> Vec<AlertTransition> {
    run_arrivals(
        delayed(readings, lateness),
        registry,
        changes,
        step_every,
        Some(end),
        placements,
    )
}

/// (event time, rule, entity, state) of each transition.
pub(crate) fn states(
    transitions: &[AlertTransition],
) -> Vec<(u64, &str, &str, citybrain_model::TransitionState)> {
    transitions
        .iter()
        .map(|t| (t.event_time, t.rule.as_str(), t.entity.as_str(), t.state))
        .collect()
}

/// (event time, entity, state, value) of each transition.
pub(crate) fn values(
    transitions: &[AlertTransition],
) -> Vec<(u64, &str, citybrain_model::TransitionState, f64)> {
    transitions
        .iter()
        .map(|t| (t.event_time, t.entity.as_str(), t.state, t.value))
        .collect()
}

/// Distinct (entity, time) readings from proptest tuples `(entity index, time, value / 10,
/// delay)`: a sensor sends one value per instant.
pub(crate) fn distinct_readings(
    raw: Vec<(usize, u64, u32, u64)>,
    entities: &[(&str, Metric)],
) -> Vec<(Reading, u64)> {
    let mut seen = std::collections::HashSet::new();
    raw.into_iter()
        .filter(|(e, t, _, _)| seen.insert((*e % entities.len(), *t)))
        .map(|(e, t, v, delay)| {
            let (entity, metric) = entities[e % entities.len()];
            (reading_of(entity, metric, t, f64::from(v) / 10.0), delay)
        })
        .collect()
}

/// Runs `operator` over a collection on `workers` workers, each inserting what `feed` gives it
/// (`feed(worker, workers)`: `(row, time, diff)`s, sent before the input advances), and returns
/// every update of the operator's output, from all workers.
pub(crate) fn output_of<I, O, F, B>(workers: usize, feed: F, operator: B) -> Vec<(O, Time, Diff)>
where
    I: differential_dataflow::ExchangeData,
    O: differential_dataflow::ExchangeData,
    F: Fn(usize, usize) -> Vec<(I, Time, Diff)> + Send + Sync + 'static,
    B: for<'s> Fn(VecCollection<'s, Time, I, Diff>) -> VecCollection<'s, Time, O, Diff>
        + Send
        + Sync
        + 'static,
{
    let output: Arc<Mutex<Vec<(O, Time, Diff)>>> = Arc::default();
    let sink = Arc::clone(&output);
    let run = timely::execute(timely::Config::process(workers), move |worker| {
        let sink = Arc::clone(&sink);
        let (index, peers) = (worker.index(), worker.peers());
        let (mut input, probe) = worker.dataflow::<Time, _, _>(|scope| {
            let (input, rows) = scope.new_collection();
            let probe = operator(rows)
                .inspect(move |row| {
                    if let Ok(mut sink) = sink.lock() {
                        sink.push(row.clone());
                    }
                })
                .probe()
                .0;
            (input, probe)
        });
        for (row, time, diff) in feed(index, peers) {
            input.update_at(row, time, diff);
        }
        input.close();
        while !probe.done() {
            worker.step();
        }
    });
    assert!(run.is_ok(), "the dataflow ran");
    drop(run);
    output.lock().map(|o| o.clone()).unwrap_or_default()
}

/// `collection` with each update in a message of its own: an operator fed by it sees many
/// messages of few times, out of time order between them (as an exchange of Kafka readings
/// brings), which a single consolidated input message never shows.
pub(crate) fn one_per_message<'s, D: differential_dataflow::Data>(
    collection: VecCollection<'s, Time, D, Diff>,
) -> VecCollection<'s, Time, D, Diff> {
    use differential_dataflow::AsCollection;
    use timely::dataflow::channels::pact::Pipeline;
    use timely::dataflow::operators::Operator;
    collection
        .inner
        .unary(Pipeline, "OnePerMessage", |_, _| {
            move |input, output| {
                input.for_each(|capability, data| {
                    for update in data.drain(..) {
                        output
                            .session(&capability)
                            .give_container(&mut vec![update]);
                    }
                });
            }
        })
        .as_collection()
}
