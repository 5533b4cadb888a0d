//! Rows that cross workers: timely encodes data sent to another process with bincode, which
//! cannot read back what serde leaves out (`skip_serializing_if`, `untagged`, `flatten`). In
//! one process nothing is encoded, so only a cluster would fail: every row type exchanged
//! between operators must come back from bincode as it went in.

use std::fmt::Debug;
use std::sync::Arc;

use citybrain_model::{Domain, Metric, PartitionId, ReportKind};
use ordered_float::OrderedFloat;
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{alarm, all_kinds, registry};
use crate::enrich::Event;
use crate::hit::RuleHit;
use crate::kinds::window::Placed;
use crate::matching::{Match, MatchedRule};
use crate::rule::{Direction, RuleRow};
use crate::stall::PartitionRow;
use crate::{ReadingRow, RegistryRow};

fn round_trip<T: Serialize + DeserializeOwned + PartialEq + Debug>(value: T) {
    let bytes = bincode::serialize(&value).expect("bincode encodes it");
    let back: T = bincode::deserialize(&bytes).expect("bincode decodes what it encoded");
    assert_eq!(back, value);
}

#[test]
fn every_exchanged_row_type_survives_bincode() {
    let reading: ReadingRow = (
        (Domain::Mine, "s1".into()),
        (Metric::Ch4, OrderedFloat(1.25)),
    );
    round_trip(reading);
    let mut rows: Vec<RegistryRow> = registry().into_iter().collect();
    rows.sort();
    round_trip(rows);
    let mut rules = all_kinds::rules(0);
    rules.push(RuleRow::Threshold(alarm(
        "scoped",
        Direction::Below,
        0.2,
        0.3,
        5_000,
        &[("face", "m1/f1")],
    )));
    round_trip(rules.clone());
    let labels = Arc::new(vec![("face".to_string(), "m1/f1".to_string())]);
    round_trip((
        (Domain::Mine, Metric::Ch4),
        Event {
            time: 7,
            entity: "s1".into(),
            value: OrderedFloat(0.5),
            labels: Arc::clone(&labels),
        },
    ));
    round_trip((
        ("threshold".to_string(), "s1".to_string()),
        RuleHit::new(7, 1.1, Arc::clone(&labels), rules[0].alarm().clone()),
    ));
    let window = rules
        .iter()
        .find_map(RuleRow::as_window)
        .expect("the kinds' rules have a window rule");
    let matched = Arc::new(MatchedRule::from(RuleRow::Window(window.clone())));
    let placed: Placed = (
        "m1/f1".into(),
        Arc::clone(&matched),
        (OrderedFloat(0.4), 7, "s1".into()),
        Arc::clone(&labels),
    );
    round_trip(placed);
    // The kinds that join their matches in arrangements exchange them.
    round_trip(Match {
        rule: matched,
        metric: Metric::Ch4,
        event: Event {
            time: 7,
            entity: "s1".into(),
            value: OrderedFloat(0.5),
            labels: Arc::clone(&labels),
        },
    });
    round_trip((
        "r-1".to_string(),
        (
            ReportKind::Escalated,
            "g1".to_string(),
            "pothole".to_string(),
            Some("town".to_string()),
        ),
    ));
    let partition = PartitionId {
        domain: Domain::Mine,
        topic: "mine.readings".into(),
        partition: 2,
    };
    round_trip(PartitionRow::Heard(partition.clone()));
    round_trip(PartitionRow::Placement(
        (Domain::Mine, "s1".into()),
        partition,
    ));
}
