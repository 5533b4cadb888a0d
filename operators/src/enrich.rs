//! Attaching reference data to readings: a left join of readings with the registry, keyed by
//! entity, so a reading of an unregistered sensor is still seen by rules scoped to `all`.
//!
//! Readings are looked up in the registry as of their event time ([`crate::lookup`]): only the
//! registry is kept as state, readings pass through. Both are spread over the workers by
//! entity, so the enriched readings are too, and the rule kinds after them share the load.

use std::sync::Arc;

use citybrain_model::{Domain, Labels, Metric};
use differential_dataflow::VecCollection;
use differential_dataflow::collection::vec;
use ordered_float::OrderedFloat;
use serde::{Deserialize, Serialize};
use timely::dataflow::StreamVec;
use timely::dataflow::channels::pact::Exchange;

use crate::entity_route;
use crate::lookup::LookupAsOf;
use crate::{Diff, EntityId, EntityKey, ReadingRow, RegistryRow, Time};

/// One reading with what the registry knows about its entity.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Event {
    /// Event time of the reading.
    pub time: Time,
    /// Sensor or device id.
    pub entity: EntityId,
    /// The reading's value.
    pub value: OrderedFloat<f64>,
    /// The entity's labels (empty when it is not registered), shared with the registry's row.
    pub labels: Arc<Labels>,
}

/// An enriched reading keyed for the rules: (domain, metric) -> event. Shared: every rule kind
/// reads the one stream, and timely copies a stream's data for each reader.
pub type EnrichedRow = ((Domain, Metric), Arc<Event>);

/// Enriched readings as they occur: each `+1` at its event time, never retracted (the rule
/// matching makes instants of what it keeps, see [`crate::matching`]).
pub type Events<'s> = StreamVec<'s, Time, (EnrichedRow, Time, Diff)>;

/// Left-joins readings with reference data.
pub trait Enrich<'s> {
    /// Each reading (`+1` at its event time) gets its entity's labels as of that time (empty
    /// when the entity is not registered), keyed by (domain, metric) for the rules.
    ///
    /// ```
    /// use citybrain_operators::EntityId;
    /// use citybrain_model::{Domain, EntityInfo, Metric};
    /// use citybrain_operators::enrich::Enrich;
    /// use citybrain_operators::ordered_float::OrderedFloat;
    /// use differential_dataflow::input::Input;
    /// use timely::dataflow::operators::Inspect;
    ///
    /// timely::example(|scope| {
    ///     let (mut readings, reading_rows) = scope.new_collection();
    ///     let (mut registry, registry_rows) = scope.new_collection();
    ///     reading_rows.enrich(registry_rows).inspect(|((key, event), time, diff)| {
    ///         assert_eq!(*key, (Domain::Mine, Metric::Ch4));
    ///         assert_eq!((event.entity.as_str(), *time, *diff), ("s1", 7, 1));
    ///         assert_eq!(*event.labels, vec![("face".to_string(), "m/f1".to_string())]);
    ///     });
    ///     let sensor = (Domain::Mine, EntityId::from("s1"));
    ///     registry.insert((sensor.clone(), EntityInfo::new([("face", Some("m/f1".into()))], 1000)));
    ///     readings.advance_to(7);
    ///     readings.insert((sensor, (Metric::Ch4, OrderedFloat(0.4))));
    /// });
    /// ```
    fn enrich(self, registry: VecCollection<'s, Time, RegistryRow, Diff>) -> Events<'s>;
}

impl<'s> Enrich<'s> for vec::Collection<'s, Time, ReadingRow, Diff> {
    fn enrich(self, registry: VecCollection<'s, Time, RegistryRow, Diff>) -> Events<'s> {
        let labels = registry
            .map(|(key, info)| (key, Arc::new(info.labels)))
            .inner;
        self.inner.lookup_as_of(
            labels,
            Exchange::new(|(row, _, _): &(ReadingRow, Time, Diff)| entity_route(&row.0.1)),
            Exchange::new(
                |((key, _), _, _): &((EntityKey, Arc<Labels>), Time, Diff)| entity_route(&key.1),
            ),
            |(key, _): &ReadingRow| key,
            |((domain, entity), (metric, value)), time, rows, out| {
                let event = |entity, labels| {
                    let event = Event {
                        time,
                        entity,
                        value,
                        labels,
                    };
                    ((domain, metric), Arc::new(event))
                };
                // An entity has one labels row; the last (or the unknown entity's empty
                // labels) takes the id.
                let mut known = rows.iter().filter(|(_, count)| *count > 0).peekable();
                while let Some((labels, _)) = known.next() {
                    if known.peek().is_none() {
                        out.push(event(entity, Arc::clone(labels)));
                        return;
                    }
                    out.push(event(entity.clone(), Arc::clone(labels)));
                }
                out.push(event(entity, Arc::default()));
            },
        )
    }
}
