//! Attaching reference data to readings: a left join of readings with the registry, keyed by
//! entity, so a reading of an unregistered sensor is still seen by rules scoped to `all`.

use citybrain_model::{Domain, Labels, Metric};
use differential_dataflow::VecCollection;
use differential_dataflow::collection::vec;
use ordered_float::OrderedFloat;
use serde::{Deserialize, Serialize};

use crate::{Diff, ReadingRow, RegistryRow, Time};

/// One reading with what the registry knows about its entity.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Event {
    /// Event time of the reading.
    pub time: Time,
    /// Sensor or device id.
    pub entity: String,
    /// The reading's value.
    pub value: OrderedFloat<f64>,
    /// The entity's labels (empty when it is not registered).
    pub labels: Labels,
}

/// An enriched reading keyed for the rules join: (domain, metric) -> event.
pub type EnrichedRow = ((Domain, Metric), Event);

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
    ///                 assert_eq!(*key, (Domain::Mine, Metric::Ch4));
    ///                 assert_eq!(event.labels, vec![("face".to_string(), "m/f1".to_string())]);
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
        let known = keyed.clone().join(registry.clone()).map(
            |((domain, entity), ((metric, value, time), info))| {
                let event = Event {
                    time,
                    entity,
                    value,
                    labels: info.labels,
                };
                ((domain, metric), event)
            },
        );
        let unknown = keyed.antijoin(registry.map(|(key, _)| key)).map(
            |((domain, entity), (metric, value, time))| {
                let event = Event {
                    time,
                    entity,
                    value,
                    labels: Labels::new(),
                };
                ((domain, metric), event)
            },
        );
        known.concat(unknown)
    }
}
