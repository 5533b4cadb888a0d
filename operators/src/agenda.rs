//! The bookkeeping of a frontier-driven operator with event-time timers: input updates held
//! per time, timers filed under the time they are due, and both handed out in time order once
//! the input frontier has passed them, with the capability to emit at that time.
//!
//! The agenda holds one capability, at its earliest time ([`crate::earliest`]), and hands out
//! a capability for a time only when the time is ready: timers at many distinct times (one per
//! key) cost timely no progress tracking per time.
//!
//! Used by the operators that keep per-key state and wake up on their own deadlines
//! ([`crate::kinds::absence`], [`crate::report_timers`], [`crate::stall`],
//! [`crate::windowed_presence`]).

use std::collections::BTreeMap;

use timely::dataflow::operators::{Capability, InputCapability};

use crate::Time;
use crate::earliest::Earliest;

/// What is complete at one time: its input updates and the keys whose timers are due.
pub(crate) struct Ready<U, K> {
    /// The time.
    pub time: Time,
    /// A capability at `time`.
    pub capability: Capability<Time>,
    /// The input updates of `time` (possibly none).
    pub updates: Vec<U>,
    /// The keys whose timers are due at `time` (possibly none).
    pub due: Vec<K>,
}

/// Input updates and timers by time, with a capability at the earliest of them.
pub(crate) struct Agenda<U, K> {
    waiting: BTreeMap<Time, Vec<U>>,
    timers: BTreeMap<Time, Vec<K>>,
    earliest: Earliest,
}

impl<U, K> Agenda<U, K> {
    /// An empty agenda.
    pub(crate) fn new() -> Self {
        Agenda {
            waiting: BTreeMap::new(),
            timers: BTreeMap::new(),
            earliest: Earliest::default(),
        }
    }

    /// Holds a run of updates of one `time` (see [`crate::lookup::drain_by_time`]) until it is
    /// complete, filed at once; `capability` is the input batch's.
    pub(crate) fn push_run(
        &mut self,
        capability: &InputCapability<Time>,
        time: Time,
        run: impl IntoIterator<Item = U>,
    ) {
        self.earliest.hold(capability, time);
        self.waiting.entry(time).or_default().extend(run);
    }

    /// Sets a timer for `key` at `at`; `capability` is at or before `at` (a ready time's).
    pub(crate) fn schedule(&mut self, capability: &Capability<Time>, key: K, at: Time) {
        self.earliest.hold_from(capability, at);
        self.timers.entry(at).or_default().push(key);
    }

    /// Drops every pending timer (at the end of the input nothing comes due).
    pub(crate) fn clear_timers(&mut self) {
        self.timers.clear();
        self.settle();
    }

    /// Holds the capability at the earliest time left, or none.
    fn settle(&mut self) {
        let next_update = self.waiting.keys().next().copied();
        let next_timer = self.timers.keys().next().copied();
        self.earliest
            .advance(next_update.into_iter().chain(next_timer).min());
    }

    /// The earliest time with updates or timers, when `complete` says the frontier has passed
    /// it; `None` otherwise.
    pub(crate) fn next_ready(&mut self, complete: impl Fn(&Time) -> bool) -> Option<Ready<U, K>> {
        let next_update = self.waiting.keys().next().copied();
        let next_timer = self.timers.keys().next().copied();
        let time = next_update.into_iter().chain(next_timer).min()?;
        if !complete(&time) {
            return None;
        }
        let capability = self.earliest.capability()?.delayed(&time);
        let updates = self.waiting.remove(&time).unwrap_or_default();
        let due = self.timers.remove(&time).unwrap_or_default();
        self.settle();
        Some(Ready {
            time,
            capability,
            updates,
            due,
        })
    }
}
