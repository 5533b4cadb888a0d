//! Looking events up in a slowly changing table as of each event's time: a half join.
//!
//! Readings are many and each is an instant (see [`crate::instant`]); reference data and rules
//! are few and change rarely. A differential `join` of the two arranges both sides, so every
//! reading is sorted and merged into an arrangement only to be matched once and forgotten.
//! Here only the table is kept, as plain per-key state; each event is matched against the
//! table as it stands at the event's time and passed on. For instants that is the same
//! result: an event present only at `t` meets exactly the table rows present at `t`.
//!
//! Events wait until the table's frontier has passed their time (its rows at that time are
//! final); table changes wait until no event before them can arrive any more. Both are
//! applied in time order, so out-of-order input within the frontiers gives the in-order
//! result. Downstream operators wait for the same frontiers anyway, so nothing is held back
//! longer than before.

use std::collections::BTreeMap;
use std::hash::Hash;

use differential_dataflow::consolidation::{consolidate, consolidate_slice};
use differential_dataflow::{Data, ExchangeData};
use rustc_hash::FxHashMap;
use smallvec::SmallVec;
use timely::dataflow::StreamVec;
use timely::dataflow::channels::pact::ParallelizationContract;

use crate::earliest::Earliest;
use crate::pending::Pending;
use crate::woken_while_holding::WokenWhileHolding;
use crate::{Diff, Time};

/// A table change: a `(key, value)` row inserted (`+1`) or removed (`-1`) at a time.
pub type TableUpdate<K, V> = ((K, V), Time, Diff);

/// A slowly changing table as plain per-key state: each key's rows with their counts. Also
/// [`crate::latest`]'s registry.
///
/// A key has one row almost always (an entity's labels), kept inline: a lookup then reads the
/// map's slot only, not a second allocation (at 100k entities, a cache miss per reading).
pub(crate) struct Table<K, V> {
    rows: FxHashMap<K, SmallVec<[(V, Diff); 1]>>,
}

impl<K, V> Default for Table<K, V> {
    fn default() -> Self {
        Table {
            rows: FxHashMap::default(),
        }
    }
}

impl<K: Hash + Eq + Clone, V: Ord> Table<K, V> {
    /// Applies one change; a key whose rows all cancel out is forgotten.
    pub(crate) fn update(&mut self, key: K, value: V, diff: Diff) {
        let values = self.rows.entry(key.clone()).or_default();
        values.push((value, diff));
        let distinct = consolidate_slice(values);
        values.truncate(distinct);
        if values.is_empty() {
            self.rows.remove(&key);
        }
    }

    /// The rows under `key` (none: an empty slice).
    pub(crate) fn rows(&self, key: &K) -> &[(V, Diff)] {
        self.rows.get(key).map_or(&[][..], SmallVec::as_slice)
    }
}

/// Matches events with the rows of a table as of the event's time.
pub trait LookupAsOf<'s, D> {
    /// For each event, `logic(event, time, rows, output)` with the table's rows under
    /// `key_of(event)` at the event's time (each row with its count, positive for a present
    /// row; an empty slice when the key has none). What `logic` pushes is emitted with the
    /// event's diff at its time, as the event came: a stream of occurrences. `logic` owns the
    /// event, so what it passes on can be moved rather than copied.
    ///
    /// `event_pact` and `table_pact` route both inputs: the same key must reach the same
    /// worker (exchange both by the key), or every worker must see the whole table (broadcast
    /// it and keep events where they are). The table is a set: a row's count is not
    /// multiplied into the output.
    ///
    /// ```
    /// use citybrain_operators::lookup::LookupAsOf;
    /// use timely::dataflow::channels::pact::Pipeline;
    /// use timely::dataflow::operators::{Capture, ToStream};
    /// use timely::dataflow::operators::capture::Extract;
    ///
    /// let captured = timely::example(|scope| {
    ///     // The table: sensor -> face; sensor 1 moves from face 10 to face 20 at time 5.
    ///     let table = vec![((1u32, 10u32), 0, 1), ((1, 10), 5, -1), ((1, 20), 5, 1)].to_stream(scope);
    ///     let readings = vec![(1u32, 3, 1), (1, 5, 1), (9, 6, 1)].to_stream(scope);
    ///     readings
    ///         .lookup_as_of(table, Pipeline, Pipeline, |s: &u32| s, |s, _, rows, out| {
    ///             // 0: not in the table.
    ///             let face = rows.first().map_or(0, |(face, _)| *face);
    ///             out.push((s, face));
    ///         })
    ///         .capture()
    /// });
    /// let mut seen: Vec<_> = captured.extract().into_iter().flat_map(|(_, data)| data).collect();
    /// seen.sort();
    /// assert_eq!(seen, vec![((1, 10), 3, 1), ((1, 20), 5, 1), ((9, 0), 6, 1)]);
    /// ```
    fn lookup_as_of<K, V, O, P1, P2, F, L>(
        self,
        table: StreamVec<'s, Time, TableUpdate<K, V>>,
        event_pact: P1,
        table_pact: P2,
        key_of: F,
        logic: L,
    ) -> StreamVec<'s, Time, (O, Time, Diff)>
    where
        K: ExchangeData + Hash + Eq,
        V: ExchangeData,
        O: Data,
        P1: ParallelizationContract<Time, Vec<(D, Time, Diff)>>,
        P2: ParallelizationContract<Time, Vec<TableUpdate<K, V>>>,
        F: for<'e> Fn(&'e D) -> &'e K + 'static,
        L: FnMut(D, Time, &[(V, Diff)], &mut Vec<O>) + 'static;
}

impl<'s, D: Data> LookupAsOf<'s, D> for StreamVec<'s, Time, (D, Time, Diff)> {
    fn lookup_as_of<K, V, O, P1, P2, F, L>(
        self,
        table: StreamVec<'s, Time, TableUpdate<K, V>>,
        event_pact: P1,
        table_pact: P2,
        key_of: F,
        mut logic: L,
    ) -> StreamVec<'s, Time, (O, Time, Diff)>
    where
        K: ExchangeData + Hash + Eq,
        V: ExchangeData,
        O: Data,
        P1: ParallelizationContract<Time, Vec<(D, Time, Diff)>>,
        P2: ParallelizationContract<Time, Vec<TableUpdate<K, V>>>,
        F: for<'e> Fn(&'e D) -> &'e K + 'static,
        L: FnMut(D, Time, &[(V, Diff)], &mut Vec<O>) + 'static,
    {
        self.binary_frontier_while_holding(
            table,
            event_pact,
            table_pact,
            "LookupAsOf",
            move |_capability| {
                let mut events_waiting: Pending<D> = Pending::default();
                let mut changes_waiting: ChangesByTime<K, V> = BTreeMap::new();
                // At the earliest time with events: only events are looked up and emitted.
                let mut earliest = Earliest::default();
                let mut table: Table<K, V> = Table::default();
                let mut events_ready = Vec::new();
                let mut out: Vec<O> = Vec::new();
                // Outputs per event in the last message, rounded up: the next one's room.
                let mut outputs_per_event = 1;
                move |(events, events_frontier), (changes, table_frontier), output| {
                    events.for_each(|capability, data| {
                        if let Some(time) = events_waiting.append(data) {
                            earliest.hold(&capability, time);
                        }
                    });
                    changes.for_each(|_capability, data| {
                        for (row, time, diff) in data.drain(..) {
                            changes_waiting.entry(time).or_default().push((row, diff));
                        }
                    });
                    // A time is ready when the table's rows at it are final and no event
                    // before it can still arrive (its changes must not reach earlier events).
                    let is_ready = |time: &Time| {
                        !table_frontier.less_equal(time) && !events_frontier.less_than(time)
                    };
                    events_waiting.take_ready(is_ready, &mut events_ready);
                    // Everything ready leaves in one message under the earliest capability
                    // (each update carries its own time): a message per time and operator would
                    // cost an allocation and a progress change per time. Room for as many
                    // outputs per event as the last message had (a CH4 reading meets seven of
                    // the shipped mine rules: grown by doubling, the list was copied three
                    // times over).
                    let events_count = events_ready.len();
                    let room = events_count.saturating_mul(outputs_per_event);
                    let mut ready: Vec<(O, Time, Diff)> = Vec::with_capacity(room);
                    for (event, time, diff) in events_ready.drain(..) {
                        // The table as of `time`: its changes up to and at it applied.
                        apply_changes(&mut changes_waiting, &mut table, |at| *at <= time);
                        let rows = table.rows(key_of(&event));
                        logic(event, time, rows, &mut out);
                        for o in out.drain(..) {
                            ready.push((o, time, diff));
                        }
                    }
                    apply_changes(&mut changes_waiting, &mut table, is_ready);
                    if events_count > 0 {
                        outputs_per_event = ready.len().div_ceil(events_count).max(1);
                    }
                    if let Some(capability) = earliest.capability()
                        && !ready.is_empty()
                    {
                        output.session(capability).give_container(&mut ready);
                    }
                    earliest.advance(events_waiting.earliest());
                }
            },
        )
    }
}

/// Table changes waiting for their time, by time.
type ChangesByTime<K, V> = BTreeMap<Time, Vec<((K, V), Diff)>>;

/// Applies to `table` the waiting changes at the times `through` accepts (a prefix of times),
/// in time order.
fn apply_changes<K: Hash + Ord + Clone, V: Ord>(
    waiting: &mut ChangesByTime<K, V>,
    table: &mut Table<K, V>,
    through: impl Fn(&Time) -> bool,
) {
    while let Some(entry) = waiting.first_entry() {
        if !through(entry.key()) {
            break;
        }
        let mut changes = entry.remove();
        consolidate(&mut changes);
        for ((key, value), diff) in changes {
            table.update(key, value, diff);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;
    use timely::dataflow::channels::pact::Pipeline;
    use timely::dataflow::operators::capture::Extract;
    use timely::dataflow::operators::{Capture, Concatenate, ToStream};

    use super::LookupAsOf;

    type Change = (u8, u8, u64, isize);

    /// The reference: each event meets the rows present at its time (changes at its time
    /// included), computed from scratch.
    fn reference(events: &[(u8, u64)], changes: &[Change]) -> Vec<((u8, u8), u64, isize)> {
        let mut out = Vec::new();
        for &(key, time) in events {
            let mut counts: BTreeMap<u8, isize> = BTreeMap::new();
            for &(k, v, t, d) in changes {
                if k == key && t <= time {
                    *counts.entry(v).or_default() += d;
                }
            }
            let mut present: Vec<u8> = counts
                .into_iter()
                .filter(|(_, n)| *n > 0)
                .map(|(v, _)| v)
                .collect();
            if present.is_empty() {
                // Unmatched: a distinct value, so a wrong match stands out.
                present.push(u8::MAX);
            }
            for v in present {
                out.push(((key, v), time, 1));
            }
        }
        out.sort();
        out
    }

    proptest! {
        #[test]
        fn every_event_meets_the_rows_of_its_time(
            events in proptest::collection::vec((0u8..4, 0u64..20), 0..40),
            inserts in proptest::collection::vec((0u8..4, 0u8..3, 0u64..20, 0u64..10), 0..12),
            per_message in 1usize..8,
        ) {
            // Rows inserted at a time and (maybe) removed some time later.
            let mut changes: Vec<(u8, u8, u64, isize)> = Vec::new();
            for (k, v, t, life) in inserts {
                changes.push((k, v, t, 1));
                if life > 0 {
                    changes.push((k, v, t + life, -1));
                }
            }
            let (events_in, changes_in) = (events.clone(), changes.clone());
            let captured = timely::example(move |scope| {
                let table = changes_in
                    .iter()
                    .map(|&(k, v, t, d)| ((k, v), t, d))
                    .collect::<Vec<_>>()
                    .to_stream(scope);
                // Events in several messages, each of many times, out of order between them.
                let messages: Vec<_> = events_in
                    .chunks(per_message)
                    .map(|chunk| {
                        chunk
                            .iter()
                            .map(|&(k, t)| (k, t, 1))
                            .collect::<Vec<_>>()
                            .to_stream(scope)
                    })
                    .collect();
                scope
                    .concatenate(messages)
                    .lookup_as_of(table, Pipeline, Pipeline, |k: &u8| k, |k, _, rows, out| {
                        let present: Vec<u8> = rows.iter().filter(|(_, n)| *n > 0).map(|(v, _)| *v).collect();
                        if present.is_empty() {
                            out.push((k, u8::MAX));
                        }
                        out.extend(present.into_iter().map(|v| (k, v)));
                    })
                    .capture()
            });
            let mut got: Vec<_> = captured.extract().into_iter().flat_map(|(_, d)| d).collect();
            got.sort();
            prop_assert_eq!(got, reference(&events, &changes));
        }
    }
}
