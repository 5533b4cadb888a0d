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
use crate::matching::events;
use crate::rule::{Direction, RuleRow};
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
            // Fires at every sensor's first reading and never clears.
            let rule = alarm("any", Direction::Above, 0.5, -1.0, 0, &[]);
            rules.insert(RuleRow::Threshold(rule));
            for sensor in 0..SENSORS {
                let key = (Domain::Mine, format!("s{sensor}").into());
                let info = EntityInfo::new([("face", Some("m1/f1".into()))], 1_000);
                registry.insert((key.clone(), info));
                readings.update_at((key, (Metric::Ch4, OrderedFloat(1.0))), 10, 1);
            }
        }
    })
    .expect("timely runs");
    let placements = placements.lock().expect("not poisoned").clone();
    for what in ["enriched", "alerted"] {
        let seen = placements.iter().filter(|(w, ..)| *w == what).count();
        assert_eq!(seen, SENSORS, "one {what} per sensor");
    }
    for (what, entity, worker) in placements {
        let home = usize::try_from(entity_route(&entity) % WORKERS as u64).expect("a worker");
        assert_eq!(
            worker, home,
            "{entity} {what} on worker {worker}, not {home}"
        );
    }
}
