//! Attaching reference data to readings: a left join of readings with the registry, keyed by
//! entity, so a reading of an unregistered sensor is still seen by rules scoped to `all`.

use citybrain_model::{Domain, Labels, Metric};
use differential_dataflow::VecCollection;
use differential_dataflow::collection::vec;
use ordered_float::OrderedFloat;

use crate::{Diff, ReadingRow, RegistryRow, Time};

/// An enriched reading keyed for the rules join: (domain, metric) -> (entity, value, labels).
pub type EnrichedRow = ((Domain, Metric), (String, OrderedFloat<f64>, Labels));

/// Left-joins readings with reference data.
pub trait Enrich<'s> {
    /// Each reading gets its entity's labels (empty when the entity is not registered), keyed
    /// by (domain, metric) for the rules join.
    fn enrich(
        self,
        registry: VecCollection<'s, Time, RegistryRow, Diff>,
    ) -> VecCollection<'s, Time, EnrichedRow, Diff>;
}

impl<'s> Enrich<'s> for vec::Collection<'s, Time, ReadingRow, Diff> {
    fn enrich(
        self,
        registry: VecCollection<'s, Time, RegistryRow, Diff>,
    ) -> VecCollection<'s, Time, EnrichedRow, Diff> {
        let known = self.clone().join(registry.clone()).map(
            |((domain, entity), ((metric, value), info))| {
                ((domain, metric), (entity, value, info.labels))
            },
        );
        let unknown = self.antijoin(registry.map(|(key, _)| key)).map(
            |((domain, entity), (metric, value))| {
                ((domain, metric), (entity, value, Labels::new()))
            },
        );
        known.concat(unknown)
    }
}
