//! The latest reading per (entity, metric) as a collection: the "now" view of every sensor.
//!
//! A frontier-driven timely operator, exchanged by entity, that keeps one value per live
//! (entity, metric) and emits its change (retract the old value, insert the new one) at the
//! event time of each newer reading, once the frontier has passed it. Out-of-order readings
//! inside the allowed lateness give exactly the in-order result.

use std::collections::BTreeMap;

use citybrain_model::Metric;
use differential_dataflow::collection::vec;
use differential_dataflow::consolidation::consolidate;
use differential_dataflow::{AsCollection, Hashable, VecCollection};
use ordered_float::OrderedFloat;
use rustc_hash::FxHashMap;
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::Capability;
use timely::dataflow::operators::generic::Operator;

use crate::{Diff, EntityKey, ReadingRow, Time};

/// The latest value of one metric of one entity.
pub type LatestRow = (EntityKey, (Metric, OrderedFloat<f64>));

/// Updates of one time, held until the frontier passes it, with the capability to emit at it.
type Waiting = (Capability<Time>, Vec<(ReadingRow, Diff)>);

/// Keeps the latest reading per (entity, metric).
pub trait Latest<'s> {
    /// A collection holding, at every time, each (entity, metric)'s newest value.
    ///
    /// ```
    /// use citybrain_model::{Domain, Metric};
    /// use citybrain_operators::latest::Latest;
    /// use citybrain_operators::ordered_float::OrderedFloat;
    /// use differential_dataflow::input::Input;
    ///
    /// timely::example(|scope| {
    ///     let (mut input, readings) = scope.new_collection();
    ///     readings.latest().inspect(|update| assert!(update.1 == 1 || update.1 == 2));
    ///     let key = (Domain::Mine, "s1".to_string());
    ///     input.update_at((key.clone(), (Metric::Ch4, OrderedFloat(0.4))), 1, 1);
    ///     input.update_at((key, (Metric::Ch4, OrderedFloat(0.9))), 2, 1);
    /// });
    /// ```
    fn latest(self) -> VecCollection<'s, Time, LatestRow, Diff>;
}

impl<'s> Latest<'s> for vec::Collection<'s, Time, ReadingRow, Diff> {
    fn latest(self) -> VecCollection<'s, Time, LatestRow, Diff> {
        let exchange = Exchange::new(|update: &(ReadingRow, Time, Diff)| (update.0).0.hashed());
        self.inner
            .unary_frontier(exchange, "Latest", |_capability, _info| {
                let mut waiting: BTreeMap<Time, Waiting> = BTreeMap::new();
                let mut current: FxHashMap<(EntityKey, Metric), OrderedFloat<f64>> =
                    FxHashMap::default();
                move |(input, frontier), output| {
                    input.for_each(|capability, data| {
                        for (row, time, diff) in data.drain(..) {
                            waiting
                                .entry(time)
                                .or_insert_with(|| (capability.delayed(&time, 0), Vec::new()))
                                .1
                                .push((row, diff));
                        }
                    });
                    while let Some(entry) = waiting.first_entry() {
                        let time = *entry.key();
                        if frontier.less_equal(&time) {
                            break;
                        }
                        let (capability, mut updates) = entry.remove();
                        consolidate(&mut updates);
                        let mut session = output.session(&capability);
                        // Of several readings of one key at one time the largest value wins
                        // (updates are sorted), so the result does not depend on arrival order.
                        for ((entity, (metric, value)), diff) in updates {
                            if diff <= 0 {
                                continue;
                            }
                            let key = (entity, metric);
                            let previous = current.insert(key.clone(), value);
                            if previous == Some(value) {
                                continue;
                            }
                            if let Some(previous) = previous {
                                session.give(((key.0.clone(), (metric, previous)), time, -1));
                            }
                            session.give(((key.0, (metric, value)), time, 1));
                        }
                    }
                }
            })
            .as_collection()
    }
}
