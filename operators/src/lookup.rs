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
use timely::container::CapacityContainerBuilder;
use timely::dataflow::StreamVec;
use timely::dataflow::channels::pact::ParallelizationContract;
use timely::dataflow::operators::generic::OutputBuilder;
use timely::dataflow::operators::generic::builder_rc::OperatorBuilder;
use timely::progress::operate::FrontierInterest;

use crate::earliest::Earliest;
use crate::pending::Pending;
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

    /// [`LookupAsOf::lookup_as_of`] with `parts` outputs: `logic(event, rows, outputs)` sends
    /// each record to the output of its choice ([`PartOutputs::push`]), at the event's time and
    /// with its diff. What one lookup serves several consumers with (the rule matching: one
    /// output per rule kind) goes straight to its consumer's output: a stream split after the
    /// lookup wrote each record twice more (the lookup's list, the split's buffer).
    ///
    /// ```
    /// use citybrain_operators::lookup::LookupAsOf;
    /// use timely::dataflow::channels::pact::Pipeline;
    /// use timely::dataflow::operators::{Capture, ToStream};
    /// use timely::dataflow::operators::capture::Extract;
    ///
    /// let (small, large) = timely::example(|scope| {
    ///     // The table: sensor -> limit.
    ///     let table = vec![((1u32, 10u32), 0, 1), ((2, 10), 0, 1)].to_stream(scope);
    ///     let readings = vec![((1u32, 3u32), 1, 1), ((2, 30), 2, 1)].to_stream(scope);
    ///     let mut parts = readings
    ///         .lookup_as_of_into_parts(table, Pipeline, Pipeline, |(s, _): &(u32, u32)| s, 2, |(s, value), rows, out| {
    ///             let limit = rows.first().map_or(0, |(limit, _)| *limit);
    ///             out.push(usize::from(value > limit), s);
    ///         })
    ///         .into_iter()
    ///         .map(|part| part.capture());
    ///     (parts.next().unwrap(), parts.next().unwrap())
    /// });
    /// let records = |captured: Vec<(u64, Vec<(u32, u64, isize)>)>| -> Vec<_> {
    ///     captured.into_iter().flat_map(|(_, data)| data).collect()
    /// };
    /// assert_eq!(records(small.extract()), vec![(1, 1, 1)]);
    /// assert_eq!(records(large.extract()), vec![(2, 2, 1)]);
    /// ```
    fn lookup_as_of_into_parts<K, V, O, P1, P2, F, L>(
        self,
        table: StreamVec<'s, Time, TableUpdate<K, V>>,
        event_pact: P1,
        table_pact: P2,
        key_of: F,
        parts: usize,
        logic: L,
    ) -> Vec<StreamVec<'s, Time, (O, Time, Diff)>>
    where
        K: ExchangeData + Hash + Eq,
        V: ExchangeData,
        O: Data,
        P1: ParallelizationContract<Time, Vec<(D, Time, Diff)>>,
        P2: ParallelizationContract<Time, Vec<TableUpdate<K, V>>>,
        F: for<'e> Fn(&'e D) -> &'e K + 'static,
        L: FnMut(D, &[(V, Diff)], &mut PartOutputs<'_, O>) + 'static;
}

/// The outputs of [`LookupAsOf::lookup_as_of_into_parts`] as one event sees them.
pub struct PartOutputs<'a, O> {
    buffers: &'a mut [Vec<(O, Time, Diff)>],
    time: Time,
    diff: Diff,
}

impl<O> PartOutputs<'_, O> {
    /// Sends `record` to output `part`, at the event's time and with its diff; a part past the
    /// last drops it.
    pub fn push(&mut self, part: usize, record: O) {
        if let Some(buffer) = self.buffers.get_mut(part) {
            buffer.push((record, self.time, self.diff));
        }
    }
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
        // One part: what `logic` pushes goes out with the event's time and diff.
        let mut out: Vec<O> = Vec::new();
        let mut parts = self.lookup_as_of_into_parts(
            table,
            event_pact,
            table_pact,
            key_of,
            1,
            move |event, rows, outputs| {
                logic(event, outputs.time, rows, &mut out);
                for o in out.drain(..) {
                    outputs.push(0, o);
                }
            },
        );
        match parts.pop() {
            Some(stream) => stream,
            None => unreachable!("one part asked for, one stream built"),
        }
    }

    fn lookup_as_of_into_parts<K, V, O, P1, P2, F, L>(
        self,
        table: StreamVec<'s, Time, TableUpdate<K, V>>,
        event_pact: P1,
        table_pact: P2,
        key_of: F,
        parts: usize,
        mut logic: L,
    ) -> Vec<StreamVec<'s, Time, (O, Time, Diff)>>
    where
        K: ExchangeData + Hash + Eq,
        V: ExchangeData,
        O: Data,
        P1: ParallelizationContract<Time, Vec<(D, Time, Diff)>>,
        P2: ParallelizationContract<Time, Vec<TableUpdate<K, V>>>,
        F: for<'e> Fn(&'e D) -> &'e K + 'static,
        L: FnMut(D, &[(V, Diff)], &mut PartOutputs<'_, O>) + 'static,
    {
        let mut builder = OperatorBuilder::new("LookupAsOf".to_owned(), self.scope());
        let mut events = builder.new_input(self, event_pact);
        let mut changes = builder.new_input(table, table_pact);
        // Scheduled for a frontier change only while it holds a capability (as
        // `WokenWhileHolding`'s operators): without one it has nothing to send.
        builder.set_notify_for(0, FrontierInterest::IfCapability);
        builder.set_notify_for(1, FrontierInterest::IfCapability);
        let (mut outputs, streams): (Vec<_>, Vec<_>) = (0..parts)
            .map(|_| {
                let (output, stream) = builder.new_output();
                let output = OutputBuilder::<Time, CapacityContainerBuilder<_>>::from(output);
                (output, stream)
            })
            .unzip();
        builder.build(move |_capabilities| {
            let mut as_of = AsOf::default();
            // Per output, at the earliest time with events.
            let mut earliest: Vec<Earliest> = (0..parts).map(|_| Earliest::default()).collect();
            let mut buffers: Vec<Vec<(O, Time, Diff)>> = (0..parts).map(|_| Vec::new()).collect();
            // Per output, records per event in the last message, rounded up: the next one's
            // room (a CH4 reading meets seven of the shipped mine rules: grown by doubling, a
            // list was copied three times over).
            let mut per_event: Vec<usize> = vec![0; parts];
            move |frontiers| {
                let (events_frontier, table_frontier) = (&frontiers[0], &frontiers[1]);
                events.for_each(|capability, data| {
                    if let Some(time) = as_of.events_waiting.append(data) {
                        for (port, earliest) in earliest.iter_mut().enumerate() {
                            earliest.hold_for_output(&capability, time, port);
                        }
                    }
                });
                changes.for_each(|_capability, data| as_of.file_changes(data));
                // A time is ready when the table's rows at it are final and no event before it
                // can still arrive (its changes must not reach earlier events).
                let is_ready = |time: &Time| {
                    !table_frontier.less_equal(time) && !events_frontier.less_than(time)
                };
                let events_count = as_of.take_ready(is_ready);
                for (buffer, per_event) in buffers.iter_mut().zip(&per_event) {
                    buffer.reserve(events_count.saturating_mul(*per_event));
                }
                as_of.look_up(&key_of, is_ready, |event, time, diff, rows| {
                    let buffers = &mut buffers[..];
                    logic(
                        event,
                        rows,
                        &mut PartOutputs {
                            buffers,
                            time,
                            diff,
                        },
                    );
                });
                // Everything ready leaves in one message per output under the earliest
                // capability (each update carries its own time): a message per time would cost
                // an allocation and a progress change per time.
                let next = as_of.events_waiting.earliest();
                let each_output = outputs.iter_mut().zip(&mut buffers).zip(&mut per_event);
                for (((output, buffer), per_event), earliest) in
                    each_output.zip(earliest.iter_mut())
                {
                    if events_count > 0 {
                        *per_event = buffer.len().div_ceil(events_count);
                    }
                    if let Some(capability) = earliest.capability()
                        && !buffer.is_empty()
                    {
                        output.activate().session(capability).give_container(buffer);
                    }
                    earliest.advance(next);
                }
            }
        });
        streams
    }
}

/// What a lookup holds: the events waiting for their time, the table changes waiting for
/// theirs, and the table as of the last time applied.
struct AsOf<D, K, V> {
    events_waiting: Pending<D>,
    changes_waiting: ChangesByTime<K, V>,
    table: Table<K, V>,
    /// The events taken to be looked up.
    events_ready: Vec<(D, Time, Diff)>,
}

impl<D, K, V> Default for AsOf<D, K, V> {
    fn default() -> Self {
        AsOf {
            events_waiting: Pending::default(),
            changes_waiting: BTreeMap::new(),
            table: Table::default(),
            events_ready: Vec::new(),
        }
    }
}

impl<D, K: Hash + Ord + Clone, V: Ord> AsOf<D, K, V> {
    /// Files a message of table changes under their times.
    fn file_changes(&mut self, data: &mut Vec<TableUpdate<K, V>>) {
        for (row, time, diff) in data.drain(..) {
            self.changes_waiting
                .entry(time)
                .or_default()
                .push((row, diff));
        }
    }

    /// Takes the events at the times `ready` accepts (see [`Pending::take_ready`]) to be looked
    /// up; how many.
    fn take_ready(&mut self, ready: impl Fn(&Time) -> bool) -> usize {
        self.events_waiting
            .take_ready(ready, &mut self.events_ready);
        self.events_ready.len()
    }

    /// Passes each event taken, in time order, to `visit` with its time, its diff and the
    /// table's rows under its key as of its time (its changes up to and at that time applied);
    /// then applies the changes at the times `ready` accepts.
    fn look_up<F>(
        &mut self,
        key_of: &F,
        ready: impl Fn(&Time) -> bool,
        mut visit: impl FnMut(D, Time, Diff, &[(V, Diff)]),
    ) where
        F: for<'e> Fn(&'e D) -> &'e K,
    {
        for (event, time, diff) in self.events_ready.drain(..) {
            apply_changes(&mut self.changes_waiting, &mut self.table, |at| *at <= time);
            let rows = self.table.rows(key_of(&event));
            visit(event, time, diff, rows);
        }
        apply_changes(&mut self.changes_waiting, &mut self.table, ready);
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
                let events = scope.concatenate(messages);
                let present = |rows: &[(u8, isize)]| -> Vec<u8> {
                    let present: Vec<u8> = rows.iter().filter(|(_, n)| *n > 0).map(|(v, _)| *v).collect();
                    if present.is_empty() { vec![u8::MAX] } else { present }
                };
                let single = events
                    .clone()
                    .lookup_as_of(table.clone(), Pipeline, Pipeline, |k: &u8| k, move |k, _, rows, out| {
                        out.extend(present(rows).into_iter().map(|v| (k, v)));
                    })
                    .capture();
                // The same through two outputs, an even row to the first, an odd one to the
                // second.
                let parts = events
                    .lookup_as_of_into_parts(table, Pipeline, Pipeline, |k: &u8| k, 2, move |k, rows, out| {
                        for v in present(rows) {
                            out.push(usize::from(v % 2), (k, v));
                        }
                    })
                    .into_iter()
                    .map(|part| part.capture())
                    .collect::<Vec<_>>();
                (single, parts)
            });
            let (single, parts) = captured;
            let mut got: Vec<_> = single.extract().into_iter().flat_map(|(_, d)| d).collect();
            got.sort();
            let expected = reference(&events, &changes);
            prop_assert_eq!(&got, &expected);
            let mut from_parts = Vec::new();
            for (part, captured) in parts.into_iter().enumerate() {
                for (_, data) in captured.extract() {
                    for ((k, v), time, diff) in data {
                        prop_assert_eq!(usize::from(v % 2), part);
                        from_parts.push(((k, v), time, diff));
                    }
                }
            }
            from_parts.sort();
            prop_assert_eq!(from_parts, expected);
        }
    }
}
