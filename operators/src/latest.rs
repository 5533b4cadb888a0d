//! The latest reading per (entity, metric) with its entity's labels: the "now" view of every
//! sensor that KPIs such as "max CH4 per face" read.
//!
//! A frontier-driven timely operator over readings and the registry, both exchanged by entity,
//! that keeps one value per live (entity, metric) and emits its change (retract the old row,
//! insert the new one) at the event time of each newer reading, once both frontiers have passed
//! it. A registry change relabels the entity's latest rows at the change's time, so the output
//! equals a join of the latest readings with the registry as it stands at every time, without
//! arranging either side. Out-of-order readings inside the allowed lateness give exactly the
//! in-order result.

use std::collections::BTreeMap;
use std::sync::Arc;

use citybrain_model::{Labels, Metric};
use differential_dataflow::collection::vec;
use differential_dataflow::consolidation::consolidate;
use differential_dataflow::{AsCollection, VecCollection};
use rustc_hash::FxHashMap;
use timely::dataflow::channels::pact::Exchange;

use crate::earliest::Earliest;
use crate::enrich::{EnrichedRow, Event};
use crate::entity_route;
use crate::lookup::Table;
use crate::pending::{Pending, consolidate_by_time};
use crate::woken_while_holding::WokenWhileHolding;
use crate::{Diff, EntityKey, ReadingRow, RegistryRow, Time};

/// A registry change: an entity's labels inserted (`+1`) or removed (`-1`).
type RegistryChange = ((EntityKey, Arc<Labels>), Diff);

/// Keeps the latest reading per (entity, metric), labelled.
pub trait Latest<'s> {
    /// A collection holding, at every time, each (entity, metric)'s newest reading as an
    /// [`Event`] keyed by (domain, metric), with the entity's labels at that time (empty when
    /// it is not registered). Of several readings of one key at one time the largest value
    /// wins, so the result does not depend on arrival order.
    ///
    /// ```
    /// use citybrain_operators::EntityId;
    /// use citybrain_model::{Domain, EntityInfo, Metric};
    /// use citybrain_operators::latest::Latest;
    /// use citybrain_operators::ordered_float::OrderedFloat;
    /// use differential_dataflow::input::Input;
    ///
    /// timely::example(|scope| {
    ///     let (mut readings, reading_rows) = scope.new_collection();
    ///     let (mut registry, registry_rows) = scope.new_collection();
    ///     reading_rows.latest(registry_rows).inspect(|((key, event), time, diff)| {
    ///         assert_eq!(*key, (Domain::Mine, Metric::Ch4));
    ///         let face = event.labels.first().map(|(_, face)| face.as_str());
    ///         // 0.4 on face f1 at 1; at 2 the sensor moves to f2; at 3 it reads 0.9.
    ///         let expected = match (*time, *diff) {
    ///             (1, 1) | (2, -1) => (0.4, Some("f1")),
    ///             (2, 1) | (3, -1) => (0.4, Some("f2")),
    ///             _ => (0.9, Some("f2")),
    ///         };
    ///         assert_eq!((event.value.0, face), expected);
    ///     });
    ///     let sensor = (Domain::Mine, EntityId::from("s1"));
    ///     let info = |face: &str| EntityInfo::new([("face", Some(face.into()))], 0);
    ///     registry.insert((sensor.clone(), info("f1")));
    ///     readings.advance_to(1);
    ///     registry.advance_to(1);
    ///     readings.insert((sensor.clone(), (Metric::Ch4, OrderedFloat(0.4))));
    ///     readings.advance_to(2);
    ///     registry.advance_to(2);
    ///     registry.remove((sensor.clone(), info("f1")));
    ///     registry.insert((sensor.clone(), info("f2")));
    ///     readings.advance_to(3);
    ///     readings.insert((sensor, (Metric::Ch4, OrderedFloat(0.9))));
    /// });
    /// ```
    fn latest(
        self,
        registry: VecCollection<'s, Time, RegistryRow, Diff>,
    ) -> VecCollection<'s, Time, EnrichedRow, Diff>;
}

impl<'s> Latest<'s> for vec::Collection<'s, Time, ReadingRow, Diff> {
    fn latest(
        self,
        registry: VecCollection<'s, Time, RegistryRow, Diff>,
    ) -> VecCollection<'s, Time, EnrichedRow, Diff> {
        let labels = registry
            .map(|(key, info)| (key, Arc::new(info.labels)))
            .inner;
        let readings_route =
            Exchange::new(|(row, _, _): &(ReadingRow, Time, Diff)| entity_route(&row.0.1));
        let registry_route = Exchange::new(
            |((key, _), _, _): &((EntityKey, Arc<Labels>), Time, Diff)| entity_route(&key.1),
        );
        self.inner
            .binary_frontier_while_holding(
                labels,
                readings_route,
                registry_route,
                "Latest",
                |_capability| {
                    let mut readings_waiting: Pending<ReadingRow> = Pending::default();
                    let mut changes_waiting: BTreeMap<Time, Vec<RegistryChange>> = BTreeMap::new();
                    let mut ready_readings = Vec::new();
                    // Registry changes relabel current readings: both inputs owe output.
                    let mut earliest = Earliest::default();
                    let mut state = State::default();
                    move |(readings, readings_frontier), (changes, registry_frontier), output| {
                        readings.for_each(|capability, data| {
                            if let Some(time) = readings_waiting.append(data) {
                                earliest.hold(&capability, time);
                            }
                        });
                        changes.for_each(|capability, data| {
                            for (row, time, diff) in data.drain(..) {
                                earliest.hold(&capability, time);
                                changes_waiting.entry(time).or_default().push((row, diff));
                            }
                        });
                        // Every ready time in one message, under the earliest capability.
                        let is_ready = |time: &Time| {
                            !readings_frontier.less_equal(time)
                                && !registry_frontier.less_equal(time)
                        };
                        readings_waiting.take_ready(is_ready, &mut ready_readings);
                        // In time order, and of one key's readings at one time the largest
                        // last.
                        consolidate_by_time(&mut ready_readings);
                        // Most readings replace an older one: a retraction and an insertion.
                        let mut ready: Vec<(EnrichedRow, Time, Diff)> =
                            Vec::with_capacity(2 * ready_readings.len());
                        let mut readings = ready_readings.drain(..).peekable();
                        loop {
                            let next_reading = readings.peek().map(|(_, time, _)| *time);
                            let next_change =
                                changes_waiting.keys().next().copied().filter(is_ready);
                            let Some(time) = next_reading.into_iter().chain(next_change).min()
                            else {
                                break;
                            };
                            // Registry changes first: readings of this time see the table as
                            // of it, like the rules' lookups do.
                            if next_change == Some(time) {
                                let changes = changes_waiting.remove(&time).unwrap_or_default();
                                state.relabel(time, changes, &mut ready);
                            }
                            while let Some((reading, _, diff)) =
                                readings.next_if(|(_, at, _)| *at == time)
                            {
                                if diff > 0 {
                                    state.read(reading, time, &mut ready);
                                }
                            }
                        }
                        drop(readings);
                        if let Some(capability) = earliest.capability()
                            && !ready.is_empty()
                        {
                            output.session(capability).give_container(&mut ready);
                        }
                        let next_change = changes_waiting.keys().next().copied();
                        earliest.advance(
                            readings_waiting
                                .earliest()
                                .into_iter()
                                .chain(next_change)
                                .min(),
                        );
                    }
                },
            )
            .as_collection()
    }
}

/// What `Latest` keeps: the registry's labels per entity and each (entity, metric)'s current
/// labelled reading.
#[derive(Default)]
struct State {
    table: Table<EntityKey, Arc<Labels>>,
    current: FxHashMap<EntityKey, Vec<(Metric, Arc<Event>)>>,
}

impl State {
    /// Applies one time's registry `changes`, relabelling the current readings of the entities
    /// whose labels changed (each change a retraction and an insertion at `time`).
    fn relabel(
        &mut self,
        time: Time,
        mut changes: Vec<RegistryChange>,
        ready: &mut Vec<(EnrichedRow, Time, Diff)>,
    ) {
        consolidate(&mut changes);
        let mut changed: Vec<EntityKey> = Vec::new();
        for ((key, labels), diff) in changes {
            self.table.update(key.clone(), labels, diff);
            if changed.last() != Some(&key) {
                changed.push(key);
            }
        }
        for key in &changed {
            let Some(events) = self.current.get_mut(key) else {
                continue;
            };
            let labels = labels_of(&self.table, key);
            for (metric, event) in events.iter_mut() {
                if event.labels == labels {
                    continue;
                }
                let relabelled = Arc::new(Event {
                    labels: Arc::clone(&labels),
                    ..Event::clone(event)
                });
                let metric = *metric;
                let old = std::mem::replace(event, Arc::clone(&relabelled));
                ready.push((((key.0, metric), old), time, -1));
                ready.push((((key.0, metric), relabelled), time, 1));
            }
        }
    }

    /// Takes a reading at `time` as its (entity, metric)'s latest, emitting the change.
    fn read(
        &mut self,
        ((domain, entity), (metric, value)): ReadingRow,
        time: Time,
        ready: &mut Vec<(EnrichedRow, Time, Diff)>,
    ) {
        let key = (domain, entity);
        let labels = labels_of(&self.table, &key);
        // The key is cloned only for an entity's first reading.
        let events = match self.current.get_mut(&key) {
            Some(events) => events,
            None => self.current.entry(key.clone()).or_default(),
        };
        let slot = events.iter().position(|(m, _)| *m == metric);
        if let Some(i) = slot
            && events[i].1.value == value
            && events[i].1.labels == labels
        {
            return;
        }
        let event = Arc::new(Event {
            time,
            entity: key.1,
            value,
            labels,
        });
        let old = match slot {
            Some(i) => Some(std::mem::replace(&mut events[i].1, Arc::clone(&event))),
            None => {
                events.push((metric, Arc::clone(&event)));
                None
            }
        };
        if let Some(old) = old {
            ready.push((((domain, metric), old), time, -1));
        }
        ready.push((((domain, metric), event), time, 1));
    }
}

/// An entity's labels: its (first) registry row's, empty when it has none.
fn labels_of(table: &Table<EntityKey, Arc<Labels>>, key: &EntityKey) -> Arc<Labels> {
    table
        .rows(key)
        .iter()
        .find(|(_, n)| *n > 0)
        .map_or_else(Arc::default, |(labels, _)| Arc::clone(labels))
}
