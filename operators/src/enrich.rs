//! Attaching reference data to readings: a left join of readings with the registry, keyed by
//! entity, so a reading of an unregistered sensor is still seen by rules scoped to `all`.
//!
//! The enriched readings are keyed for the rules join by (domain, metric, shard of the
//! entity) rather than by (domain, metric) alone: one metric is most of the traffic (every
//! methane sensor), and a key is processed by one worker, so without the shard every
//! operator after the join would run on one worker whatever the worker count.

use std::sync::Arc;

use citybrain_model::{Domain, Labels, Metric};
use differential_dataflow::collection::vec;
use differential_dataflow::{AsCollection, Hashable, VecCollection};
use ordered_float::OrderedFloat;
use serde::{Deserialize, Serialize};
use timely::dataflow::operators::vec::Map;

use crate::{Diff, EntityKey, ReadingRow, RegistryRow, Time};

/// A reading before enrichment: (metric, value, event time).
type Unlabeled = (Metric, OrderedFloat<f64>, Time);

/// One reading with what the registry knows about its entity.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Event {
    /// Event time of the reading.
    pub time: Time,
    /// Sensor or device id.
    pub entity: String,
    /// The reading's value.
    pub value: OrderedFloat<f64>,
    /// The entity's labels (empty when it is not registered), shared with the registry's row.
    pub labels: Arc<Labels>,
}

/// How many shards the readings of one (domain, metric) are split into by entity. Several per
/// worker, so that the hash of the key spreads them evenly; the rules join holds a copy of
/// each rule per shard (rules are few).
pub const SHARDS: u16 = 128;

/// The shard of an entity's readings (below [`SHARDS`]).
pub fn shard_of(entity: &str) -> u16 {
    // The remainder is below SHARDS, so it fits.
    (entity.hashed() % u64::from(SHARDS)) as u16
}

/// What enriched readings are keyed by for the rules join: (domain, metric, shard).
pub type EventKey = (Domain, Metric, u16);

/// An enriched reading keyed for the rules join: (domain, metric, shard) -> event.
pub type EnrichedRow = (EventKey, Event);

/// Left-joins readings with reference data.
pub trait Enrich<'s> {
    /// Each reading instant (stamped with its event time, see [`crate::instant`]) gets its
    /// entity's labels (empty when the entity is not registered), keyed by (domain, metric)
    /// for the rules join.
    ///
    /// ```
    /// use citybrain_model::{Domain, EntityInfo, Metric};
    /// use citybrain_operators::enrich::Enrich;
    /// use citybrain_operators::instant::IntoInstants;
    /// use citybrain_operators::ordered_float::OrderedFloat;
    /// use differential_dataflow::input::Input;
    ///
    /// timely::example(|scope| {
    ///     let (mut readings, reading_rows) = scope.new_collection();
    ///     let (mut registry, registry_rows) = scope.new_collection();
    ///     // The left join's "unknown" side is inserted and retracted again at the same time:
    ///     // consolidated, only the known reading remains.
    ///     reading_rows
    ///         .into_instants()
    ///         .enrich(registry_rows)
    ///         .consolidate()
    ///         .inspect(|((key, event), _, diff)| {
    ///             if *diff > 0 {
    ///                 assert_eq!((key.0, key.1), (Domain::Mine, Metric::Ch4));
    ///                 assert_eq!(*event.labels, vec![("face".to_string(), "m/f1".to_string())]);
    ///             }
    ///         });
    ///     let sensor = (Domain::Mine, "s1".to_string());
    ///     registry.insert((sensor.clone(), EntityInfo::new([("face", Some("m/f1".into()))], 1000)));
    ///     readings.advance_to(7);
    ///     readings.insert((sensor, (Metric::Ch4, OrderedFloat(0.4))));
    /// });
    /// ```
    fn enrich(
        self,
        registry: VecCollection<'s, Time, RegistryRow, Diff>,
    ) -> VecCollection<'s, Time, EnrichedRow, Diff>;
}

impl<'s> Enrich<'s> for vec::Collection<'s, Time, (ReadingRow, Time), Diff> {
    fn enrich(
        self,
        registry: VecCollection<'s, Time, RegistryRow, Diff>,
    ) -> VecCollection<'s, Time, EnrichedRow, Diff> {
        let keyed = self.map(|((entity, (metric, value)), time)| (entity, (metric, value, time)));
        let labels = registry
            .map(|(key, info)| (key, Arc::new(info.labels)))
            .arrange_by_key();
        let event = |(domain, entity): &EntityKey,
                     (metric, value, time): &Unlabeled,
                     labels: Arc<Labels>| {
            let event = Event {
                time: *time,
                entity: entity.clone(),
                value: *value,
                labels,
            };
            ((*domain, *metric, shard_of(entity)), event)
        };
        // Every reading unlabeled, plus, for the registered ones, the labelled reading and the
        // unlabeled one negated: one join, with the readings arranged once (`join` and
        // `antijoin` would each arrange them).
        let registered = keyed
            .clone()
            .arrange_by_key()
            .join_core(labels, move |key, reading, labels| {
                [
                    (event(key, reading, Arc::clone(labels)), false),
                    (event(key, reading, Arc::default()), true),
                ]
            })
            .inner
            .map(|((row, negated), time, diff)| (row, time, if negated { -diff } else { diff }))
            .as_collection();
        let unknown = keyed.map(move |(key, reading)| event(&key, &reading, Arc::default()));
        registered.concat(unknown)
    }
}
