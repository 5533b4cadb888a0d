//! The bookkeeping of a frontier-driven operator with event-time timers: input updates waiting
//! for their time ([`crate::pending`]), timers kept in a heap by the time they are due, and
//! both handed out a time at a time, in time order, once the input frontier has passed them.
//!
//! The agenda holds one capability, at its earliest time ([`crate::earliest`]); everything an
//! operator emits in one activation goes out in one message under it (each update carries its
//! own time). Readings stamped by the sensors' own clocks each have a time, and each sets a
//! deadline of its own: filing updates and timers in a map entry per time, with a capability
//! and a message per ready time, made the absence rule cost more than every other operator
//! together (the operator_time bench with its absence argument).
//!
//! Used by the operators that keep per-key state and wake up on their own deadlines
//! ([`crate::kinds::absence`], [`crate::report_timers`], [`crate::stall`],
//! [`crate::windowed_presence`]).

use std::cmp::Ordering;
use std::collections::{BinaryHeap, VecDeque};

use timely::dataflow::operators::{Capability, InputCapability};

use crate::earliest::Earliest;
use crate::pending::Pending;
use crate::{Diff, Time};

/// A timer for `key` due at `at`; `serial` keeps a time's timers in the order they were set.
struct Timer<K> {
    at: Time,
    serial: u64,
    key: K,
}

impl<K> Timer<K> {
    fn order(&self) -> (Time, u64) {
        (self.at, self.serial)
    }
}

impl<K> PartialEq for Timer<K> {
    fn eq(&self, other: &Self) -> bool {
        self.order() == other.order()
    }
}

impl<K> Eq for Timer<K> {}

impl<K> PartialOrd for Timer<K> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl<K> Ord for Timer<K> {
    /// Reversed: the heap's greatest is the earliest timer.
    fn cmp(&self, other: &Self) -> Ordering {
        other.order().cmp(&self.order())
    }
}

/// The earliest timer one key has set and not yet seen come due. A key whose deadline keeps
/// moving later (a sensor's, at every reading) sets a timer only when the deadline moves
/// before the one set; a timer that comes due early sets the next: about one timer per
/// deadline span instead of one per move.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct KeyTimer(Option<Time>);

impl KeyTimer {
    /// The key is due at `at`: returns `at` when a timer must be set for it (none is set at or
    /// before it).
    pub(crate) fn due_at(&mut self, at: Time) -> Option<Time> {
        if self.0.is_some_and(|set| set <= at) {
            return None;
        }
        self.0 = Some(at);
        Some(at)
    }

    /// A timer of the key came due at `time`.
    pub(crate) fn came_due(&mut self, time: Time) {
        if self.0 == Some(time) {
            self.0 = None;
        }
    }
}

/// Input updates and timers by time, with a capability at the earliest of them.
pub(crate) struct Agenda<D, K> {
    waiting: Pending<D>,
    /// Taken from `waiting` once ready, in time order (the next time's leave from the front:
    /// each update is moved once, not reversed twice around a pop off the end).
    ready: VecDeque<(D, Time, Diff)>,
    timers: BinaryHeap<Timer<K>>,
    serial: u64,
    earliest: Earliest,
    /// Set once the input has ended: no timer is kept.
    closed: bool,
    /// A ready time's updates and due keys, kept for their room.
    updates: Vec<(D, Diff)>,
    due: Vec<K>,
}

impl<D, K> Agenda<D, K> {
    /// An empty agenda.
    pub(crate) fn new() -> Self {
        Agenda {
            waiting: Pending::default(),
            ready: VecDeque::new(),
            timers: BinaryHeap::new(),
            serial: 0,
            earliest: Earliest::default(),
            closed: false,
            updates: Vec::new(),
            due: Vec::new(),
        }
    }

    /// Holds all of `updates` (an input message's, left empty) until their time is complete;
    /// `capability` is the message's.
    pub(crate) fn append(
        &mut self,
        capability: &InputCapability<Time>,
        updates: &mut Vec<(D, Time, Diff)>,
    ) {
        if let Some(time) = self.waiting.append(updates) {
            self.earliest.hold(capability, time);
        }
    }

    /// Sets a timer for `key` at `at`, which is at or after the time being run (an earlier `at`
    /// is moved to it: the agenda holds no capability before it). Ignored once closed.
    pub(crate) fn schedule(&mut self, key: K, at: Time) {
        if self.closed {
            return;
        }
        let Some(held) = self.earliest.capability() else {
            // Nothing handed out, so nothing to time from.
            return;
        };
        let at = at.max(*held.time());
        self.serial += 1;
        self.timers.push(Timer {
            at,
            serial: self.serial,
            key,
        });
    }

    /// The input has ended: pending timers are dropped and none is kept from now on (after
    /// the end of the input nothing comes due).
    pub(crate) fn close(&mut self) {
        self.closed = true;
        self.timers.clear();
        self.settle();
    }

    /// Runs one activation's ready times: for each time `complete` accepts, in time order,
    /// `step(agenda, time, updates, due, out)` with the time's updates (with their diffs, in the
    /// order they came) and due keys (in the order they were set), for `step` to drain (what it
    /// leaves is dropped) and to push its output to `out`; a timer `step` sets at the time it
    /// runs is due in the same activation. Then `emit(capability, out)` once, with everything
    /// pushed, under the one capability held (at or before every time run; each output update
    /// carries its own time), which then moves on to the earliest time left.
    pub(crate) fn run_ready<O>(
        &mut self,
        complete: impl Fn(&Time) -> bool,
        mut step: impl FnMut(&mut Self, Time, &mut Vec<(D, Diff)>, &mut Vec<K>, &mut Vec<O>),
        emit: impl FnOnce(&Capability<Time>, &mut Vec<O>),
    ) {
        let mut updates = std::mem::take(&mut self.updates);
        let mut due = std::mem::take(&mut self.due);
        let mut out = Vec::new();
        while let Some(time) = self.next_ready(&complete, &mut updates, &mut due) {
            step(self, time, &mut updates, &mut due, &mut out);
            updates.clear();
            due.clear();
        }
        self.updates = updates;
        self.due = due;
        if let Some(capability) = self.earliest.capability()
            && !out.is_empty()
        {
            emit(capability, &mut out);
        }
        self.settle();
    }

    /// The earliest time with updates or timers, when `complete` says the frontier has passed
    /// it: its updates go to the end of `updates` and its due keys to the end of `due`. `None`
    /// otherwise. Until [`Agenda::settle`], the capability stays at or before every time
    /// handed out.
    fn next_ready(
        &mut self,
        complete: impl Fn(&Time) -> bool,
        updates: &mut Vec<(D, Diff)>,
        due: &mut Vec<K>,
    ) -> Option<Time> {
        if self.ready.is_empty() {
            // An empty deque and a list convert into each other without a copy, keeping the
            // room.
            let mut ready = Vec::from(std::mem::take(&mut self.ready));
            self.waiting.take_ready(&complete, &mut ready);
            self.ready = VecDeque::from(ready);
        }
        let next_update = self.ready.front().map(|(_, time, _)| *time);
        let next_timer = self.timers.peek().map(|timer| timer.at);
        let time = next_update.into_iter().chain(next_timer).min()?;
        if !complete(&time) {
            return None;
        }
        while let Some((_, at, _)) = self.ready.front()
            && *at == time
        {
            if let Some((update, _, diff)) = self.ready.pop_front() {
                updates.push((update, diff));
            }
        }
        while let Some(timer) = self.timers.peek()
            && timer.at == time
        {
            if let Some(timer) = self.timers.pop() {
                due.push(timer.key);
            }
        }
        Some(time)
    }

    /// Moves the capability on to the earliest time still waiting or timed, or lets it go;
    /// called once the ready times are done and emitted.
    fn settle(&mut self) {
        let next_update = self
            .ready
            .front()
            .map(|(_, time, _)| *time)
            .into_iter()
            .chain(self.waiting.earliest())
            .min();
        let next_timer = self.timers.peek().map(|timer| timer.at);
        self.earliest
            .advance(next_update.into_iter().chain(next_timer).min());
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;
    use timely::dataflow::channels::pact::Pipeline;
    use timely::dataflow::operators::capture::Extract;
    use timely::dataflow::operators::{Capture, Concatenate, ToStream};

    use super::Agenda;
    use crate::Time;
    use crate::woken_while_holding::WokenWhileHolding;

    /// Each update `(n, t)` is emitted at `t` and sets a timer for `n` at `t + n % 4` (so some
    /// fall due at the time that sets them); each timer is emitted when due. The reference:
    /// the same by time, from scratch.
    fn reference(updates: &[(u8, Time)]) -> Vec<(String, Time)> {
        let mut by_time: BTreeMap<Time, Vec<String>> = BTreeMap::new();
        for &(n, t) in updates {
            by_time.entry(t).or_default().push(format!("update {n}"));
            let at = t + Time::from(n % 4);
            by_time.entry(at).or_default().push(format!("timer {n}"));
        }
        let mut out: Vec<_> = by_time
            .into_iter()
            .flat_map(|(t, items)| items.into_iter().map(move |item| (item, t)))
            .collect();
        out.sort();
        out
    }

    proptest! {
        /// Updates in messages of many times, out of order between messages: every update
        /// and timer comes out once, at its own time, in a message at or before it; a time's
        /// updates come before its timers.
        #[test]
        fn updates_and_timers_come_out_at_their_times(
            updates in prop::collection::vec((0u8..20, 0u64..30), 0..40),
            per_message in 1usize..6,
        ) {
            let input = updates.clone();
            let captured = timely::example(move |scope| {
                let messages: Vec<_> = input
                    .chunks(per_message)
                    .rev()
                    .map(|chunk| {
                        chunk.iter().map(|&(n, t)| (n, t, 1)).collect::<Vec<_>>().to_stream(scope)
                    })
                    .collect();
                scope
                    .concatenate(messages)
                    .unary_frontier_while_holding(Pipeline, "Agenda", |_capability| {
                        let mut agenda: Agenda<u8, u8> = Agenda::new();
                        move |(input, frontier), output| {
                            input.for_each(|capability, data| agenda.append(&capability, data));
                            agenda.run_ready(
                                |t| !frontier.less_equal(t),
                                |agenda, time, ready, due, out| {
                                    for (n, _) in ready.drain(..) {
                                        out.push((format!("update {n}"), time, 1));
                                        agenda.schedule(n, time + Time::from(n % 4));
                                    }
                                    for n in due.drain(..) {
                                        out.push((format!("timer {n}"), time, 1));
                                    }
                                },
                                |capability, out| {
                                    output.session(capability).give_container(out);
                                },
                            );
                        }
                    })
                    .capture()
            });
            let mut got = Vec::new();
            for (message_time, data) in captured.extract() {
                for (item, time, _) in data {
                    prop_assert!(time >= message_time);
                    got.push((item, time));
                }
            }
            got.sort();
            prop_assert_eq!(got, reference(&updates));
        }
    }
}
