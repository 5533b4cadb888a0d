//! Whether each distinct row of an event stream occurred within the last `window` ms of event
//! time: `+1` when that starts and `-1` when it ends, per worker.
//!
//! A KPI such as "mines reporting in the last minute" counts distinct tags over a window of
//! events. Windowing every event (a `+1` at its time, a `-1` one window later) sends two updates
//! per reading to the counting worker, most of them about tags that are present anyway. Here
//! each worker keeps, per row it has seen, when its presence ends, extends it with every newer
//! event, and sends only the start and the end: updates grow with rows appearing and going
//! quiet, not with events. Summed over workers, a row's count is positive exactly while some
//! event of it lies within the window, so a distinct count over this output equals one over
//! the windowed events.

use std::hash::Hash;

use differential_dataflow::{AsCollection, Data, VecCollection};
use rustc_hash::FxHashMap;
use timely::dataflow::channels::pact::Pipeline;

use crate::agenda::Agenda;
use crate::woken_while_holding::WokenWhileHolding;
use crate::{Diff, Time};

/// Presence of rows within a trailing window of event time.
pub trait WindowedPresence<'s, D> {
    /// A collection that holds, on each worker, `row` with count 1 from the time of an event of
    /// `row` on that worker for `window` ms, extended by every later event of it within that
    /// span. Input updates are events: inserts only (a retraction is ignored).
    ///
    /// ```
    /// use citybrain_operators::windowed_presence::WindowedPresence;
    /// use differential_dataflow::input::Input;
    ///
    /// timely::example(|scope| {
    ///     let (mut events, rows) = scope.new_collection();
    ///     // "m1" at 1 and 4 with a window of 5: present from 1 until 9 (4 + 5), one interval.
    ///     rows.windowed_presence(5).inspect(|(row, time, diff)| {
    ///         assert_eq!(row, "m1");
    ///         assert!(matches!((*time, *diff), (1, 1) | (9, -1)));
    ///     });
    ///     events.advance_to(1);
    ///     events.insert("m1".to_string());
    ///     events.advance_to(4);
    ///     events.insert("m1".to_string());
    /// });
    /// ```
    fn windowed_presence(self, window: Time) -> VecCollection<'s, Time, D, Diff>;
}

impl<'s, D> WindowedPresence<'s, D> for VecCollection<'s, Time, D, Diff>
where
    D: Data + Hash,
{
    fn windowed_presence(self, window: Time) -> VecCollection<'s, Time, D, Diff> {
        self.inner
            .unary_frontier_while_holding(Pipeline, "WindowedPresence", |_capability| {
                // Events by time, and a timer per present row at (or before) its end.
                let mut agenda: Agenda<D, D> = Agenda::new();
                // Each present row's end: the latest event's time + `window`.
                let mut ends: FxHashMap<D, Time> = FxHashMap::default();
                let mut timers = Vec::new();
                move |(input, frontier), output| {
                    input.for_each(|capability, data| agenda.append(&capability, data));
                    let step = |agenda: &mut Agenda<D, D>,
                                time: Time,
                                updates: &mut Vec<(D, Diff)>,
                                due: &mut Vec<D>,
                                changes: &mut Vec<(D, Time, Diff)>| {
                        let end = time.saturating_add(window);
                        // Events first: one at a row's end continues its presence.
                        for (row, diff) in updates.drain(..) {
                            if diff <= 0 {
                                continue;
                            }
                            match ends.get_mut(&row) {
                                Some(current) => *current = (*current).max(end),
                                None => {
                                    ends.insert(row.clone(), end);
                                    timers.push((row.clone(), end));
                                    changes.push((row, time, 1));
                                }
                            }
                        }
                        for row in due.drain(..) {
                            match ends.get(&row).copied() {
                                Some(end) if end <= time => {
                                    ends.remove(&row);
                                    changes.push((row, time, -1));
                                }
                                // Extended since the timer was set: one timer per row, reset
                                // when it fires rather than at every event.
                                Some(end) => timers.push((row, end)),
                                None => {}
                            }
                        }
                        for (row, at) in timers.drain(..) {
                            agenda.schedule(row, at);
                        }
                    };
                    agenda.run_ready(
                        |t| !frontier.less_equal(t),
                        step,
                        |capability, changes| {
                            output.session(capability).give_container(changes);
                        },
                    );
                }
            })
            .as_collection()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::*;
    use crate::tests::output_of;

    /// (row, event time).
    type Event = (u8, Time);

    /// From scratch: at every time up to the last event's end, the rows with an event `e` such
    /// that `e <= t < e + window`.
    fn reference(events: &[Event], window: Time) -> BTreeMap<Time, Vec<u8>> {
        let last = events.iter().map(|e| e.1 + window).max().unwrap_or(0);
        (0..=last)
            .map(|t| {
                let mut rows: Vec<u8> = events
                    .iter()
                    .filter(|(_, e)| *e <= t && t < e + window)
                    .map(|(row, _)| *row)
                    .collect();
                rows.sort_unstable();
                rows.dedup();
                (t, rows)
            })
            .collect()
    }

    /// The operator's output summed over workers at every such time: the rows with a positive
    /// count (each count at most one per worker, never negative).
    fn run(events: Vec<Event>, window: Time, workers: usize) -> BTreeMap<Time, Vec<u8>> {
        let last = events.iter().map(|e| e.1 + window).max().unwrap_or(0);
        // Each worker feeds its share, latest first.
        let feed = move |index: usize, peers: usize| {
            let mine = events
                .iter()
                .enumerate()
                .rev()
                .filter(|(i, _)| i % peers == index);
            mine.map(|(_, &(row, time))| (row, time, 1)).collect()
        };
        let output = output_of(workers, feed, move |events| {
            events.windowed_presence(window)
        });
        (0..=last)
            .map(|t| {
                let mut counts: BTreeMap<u8, Diff> = BTreeMap::new();
                for (row, time, diff) in &output {
                    if *time <= t {
                        *counts.entry(*row).or_insert(0) += diff;
                    }
                }
                assert!(
                    counts.values().all(|n| (0..=workers as Diff).contains(n)),
                    "counts {counts:?} at {t}"
                );
                let rows = counts.into_iter().filter(|(_, n)| *n > 0).map(|(r, _)| r);
                (t, rows.collect())
            })
            .collect()
    }

    fn events_strategy() -> impl Strategy<Value = Vec<Event>> {
        proptest::collection::vec((0u8..4, 0u64..30), 0..30)
    }

    proptest! {
        #[test]
        fn random_events_match_the_reference(events in events_strategy(), window in 1u64..8) {
            prop_assert_eq!(run(events.clone(), window, 1), reference(&events, window));
        }

        #[test]
        fn two_workers_match_the_reference(events in events_strategy(), window in 1u64..8) {
            prop_assert_eq!(run(events.clone(), window, 2), reference(&events, window));
        }
    }

    #[test]
    fn an_event_at_a_presences_end_continues_it() {
        // "1" at 0 and at 3 with a window of 3: present 0..6 without a gap at 3.
        let feed = |_, _| vec![(1u8, 0, 1), (1u8, 3, 1)];
        let mut output = output_of(1, feed, |events| events.windowed_presence(3));
        output.sort_unstable();
        assert_eq!(output, vec![(1, 0, 1), (1, 6, -1)]);
    }
}
