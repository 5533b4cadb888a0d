//! citybrain's dataflow operators: timely + differential building blocks that keep every rule
//! incrementally up to date in event time.
//!
//! Each operator is one extension trait in one file:
//! - [`instant::IntoInstants`]: a stream of events as a collection that holds each event for one
//!   millisecond (the temporal-filter pattern with the shortest window), so joins see every
//!   event without the collection growing with the history.
//! - [`enrich::Enrich`]: attaches reference-data labels (mine, face, ...) to readings.
//! - [`threshold::MatchRules`]: joins enriched readings with the rules collection.
//! - [`hysteresis::HoldAndHysteresis`]: the per-(rule, entity) `for`/hysteresis state machine,
//!   a frontier-driven timely operator that emits alert transitions.
//!
//! [`threshold_alerts`] assembles them; [`reference`] is a plain-loop implementation the
//! operators are tested against.
//!
//! Timestamps are event time in epoch milliseconds ([`Time`]).

pub mod enrich;
pub mod hysteresis;
pub mod instant;
pub mod reference;
pub mod rule;
pub mod threshold;

use citybrain_model::{AlertTransition, Domain, EntityInfo, Metric};
use differential_dataflow::VecCollection;
use ordered_float::OrderedFloat;
use timely::dataflow::StreamVec;

pub use ordered_float;

/// Logical time of every dataflow: event time, epoch milliseconds.
pub type Time = u64;

/// Difference type of every collection.
pub type Diff = isize;

/// Identifies an entity within its domain: (domain, sensor/device/grid id).
pub type EntityKey = (Domain, String);

/// A reading as a collection row: entity -> (metric, value).
pub type ReadingRow = (EntityKey, (Metric, OrderedFloat<f64>));

/// A registry row: entity -> what we know about it.
pub type RegistryRow = (EntityKey, EntityInfo);

/// Builds the threshold-rule pipeline: readings (each present at its event time only) joined
/// with reference data and rules, then the `for`/hysteresis state machine.
///
/// `readings` must hold each reading as `+1` at its event time; [`instant::IntoInstants`] turns
/// that into an instant so nothing accumulates.
pub fn threshold_alerts<'s>(
    readings: VecCollection<'s, Time, ReadingRow, Diff>,
    registry: VecCollection<'s, Time, RegistryRow, Diff>,
    rules: VecCollection<'s, Time, rule::ThresholdRule, Diff>,
) -> StreamVec<'s, Time, AlertTransition> {
    use enrich::Enrich;
    use hysteresis::HoldAndHysteresis;
    use instant::IntoInstants;
    use threshold::MatchRules;

    readings
        .into_instants()
        .enrich(registry)
        .match_rules(rules)
        .hold_and_hysteresis()
}

#[cfg(test)]
mod tests;
