//! Where an entity's work runs. Every exchange keyed by an entity routes by
//! [`crate::entity_route`], so a reading is enriched, judged by its rules and alerted on one
//! worker. An exchange hashing something else (as the state machine once hashed (rule id,
//! entity)) moves half the hits to another worker, serialized across processes: correct, but
//! slow, so only this test notices.

use std::sync::{Arc, Mutex};

use citybrain_model::{Domain, EntityInfo, Metric};
use differential_dataflow::input::Input;
use ordered_float::OrderedFloat;
use timely::dataflow::operators::Inspect;

use super::alarm;
use crate::kinds::baseline::BaselineRule;
use crate::kinds::correlation::{Condition, CorrelationRule};
use crate::kinds::rate_of_rise::RateOfRiseRule;
use crate::kinds::window::{Aggregate, WindowRule};
use crate::matching::events;
use crate::rule::{Direction, GroupBy, RuleRow};
use crate::{entity_route, rule_alerts};

const WORKERS: usize = 2;
const SENSORS: usize = 16;

/// (what ran, entity, worker): "enriched" per enriched reading, "alerted" per transition.
type Placements = Arc<Mutex<Vec<(&'static str, String, usize)>>>;

#[test]
fn a_reading_is_enriched_and_alerted_on_its_entitys_worker() {
    let placements: Placements = Arc::default();
    let sink = Arc::clone(&placements);
    timely::execute(timely::Config::process(WORKERS), move |worker| {
        let index = worker.index();
        let (enriched_sink, alerted_sink) = (Arc::clone(&sink), Arc::clone(&sink));
        let (mut readings, mut registry, mut rules) = worker.dataflow(|scope| {
            let (readings, reading_rows) = scope.new_collection();
            let (registry, registry_rows) = scope.new_collection();
            let (rules, rule_rows) = scope.new_collection();
            let (_, reports) = scope.new_collection();
            events(reading_rows.clone(), registry_rows.clone()).inspect(
                move |((_, event), _, _)| {
                    let placement = ("enriched", event.entity.to_string(), index);
                    enriched_sink.lock().expect("not poisoned").push(placement);
                },
            );
            rule_alerts(reading_rows, registry_rows, reports, rule_rows).inspect(
                move |transition| {
                    let placement = ("alerted", transition.entity.clone(), index);
                    alerted_sink.lock().expect("not poisoned").push(placement);
                },
            );
            (readings, registry, rules)
        });
        // Everything enters on worker 0: where it ends up is the exchanges' doing.
        if index == 0 {
            for rule in rules_firing_once_per_sensor() {
                rules.insert(rule);
            }
            for sensor in 0..SENSORS {
                let key = (Domain::Mine, format!("s{sensor}").into());
                let info = EntityInfo::new([("face", Some("m1/f1".into()))], 1_000);
                registry.insert((key.clone(), info));
                for (time, value) in [(10, 1.0), (20, 2.0)] {
                    for metric in [Metric::Ch4, Metric::Co] {
                        readings.update_at((key.clone(), (metric, OrderedFloat(value))), time, 1);
                    }
                }
            }
        }
    })
    .expect("timely runs");
    let placements = placements.lock().expect("not poisoned").clone();
    let count = |what| placements.iter().filter(|(w, ..)| *w == what).count();
    assert_eq!(count("enriched"), 4 * SENSORS, "four readings per sensor");
    let rules = rules_firing_once_per_sensor().len();
    assert_eq!(
        count("alerted"),
        rules * SENSORS,
        "one alert per rule and sensor"
    );
    for (what, entity, worker) in placements {
        let home = usize::try_from(entity_route(&entity) % WORKERS as u64).expect("a worker");
        assert_eq!(
            worker, home,
            "{entity} {what} on worker {worker}, not {home}"
        );
    }
}

/// A rule of each kind whose hits the state machine reads where they are made (threshold,
/// window and correlation by entity, rate of rise, baseline): each fires once per sensor on
/// CH4 and CO readings of 1.0 at 10 ms and 2.0 at 20 ms, and never clears. The window and the
/// correlation by entity skip their exchange ([`crate::place`]): they trust that the matches
/// are on their entity's worker, which an alert on another worker would disprove.
fn rules_firing_once_per_sensor() -> Vec<RuleRow> {
    let fires_above = |id, level| alarm(id, Direction::Above, level, -1.0, 0, &[]);
    vec![
        RuleRow::Threshold(fires_above("any", 0.5)),
        RuleRow::Window(WindowRule {
            alarm: fires_above("window", 0.5),
            window_ms: 1_000,
            hop_ms: 1_000,
            group_by: GroupBy::Entity,
            aggregate: Aggregate::Avg,
        }),
        // 1.0 per 10 ms is 6,000 per minute.
        RuleRow::RateOfRise(RateOfRiseRule {
            alarm: fires_above("rising", 100.0),
            window_ms: 60_000,
            min_span_ms: 0,
        }),
        // The second reading is twice the mean before it.
        RuleRow::Baseline(BaselineRule {
            alarm: fires_above("above-baseline", 1.5),
            baseline_ms: 60_000,
        }),
        RuleRow::Correlation(CorrelationRule {
            alarm: fires_above("with-co", 0.5),
            with: Condition {
                metric: Metric::Co,
                direction: Direction::Above,
                threshold: OrderedFloat(0.5),
                clear: OrderedFloat(-1.0),
            },
            group_by: GroupBy::Entity,
            tolerance_ms: 1_000,
        }),
    ]
}
