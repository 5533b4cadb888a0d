//! The bookkeeping of a frontier-driven operator with event-time timers: input updates held
//! per time, timers filed under the time they are due, and both handed out in time order once
//! the input frontier has passed them, with the capability to emit at that time.
//!
//! Used by the operators that keep per-key state and wake up on their own deadlines
//! ([`crate::kinds::absence`], [`crate::report_timers`]).

use std::collections::BTreeMap;

use timely::dataflow::operators::{Capability, InputCapability};

use crate::Time;

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

/// Input updates and timers by time, each time holding a capability until handed out.
pub(crate) struct Agenda<U, K> {
    waiting: BTreeMap<Time, (Capability<Time>, Vec<U>)>,
    timers: BTreeMap<Time, (Capability<Time>, Vec<K>)>,
}

impl<U, K> Agenda<U, K> {
    /// An empty agenda.
    pub(crate) fn new() -> Self {
        Agenda {
            waiting: BTreeMap::new(),
            timers: BTreeMap::new(),
        }
    }

    /// Holds `update` until `time` is complete; `capability` is the input batch's.
    pub(crate) fn push(&mut self, capability: &InputCapability<Time>, time: Time, update: U) {
        self.push_run(capability, time, std::iter::once(update));
    }

    /// Holds a run of updates of one `time` (see [`crate::lookup::drain_by_time`]) until it is
    /// complete, filed at once; `capability` is the input batch's.
    pub(crate) fn push_run(
        &mut self,
        capability: &InputCapability<Time>,
        time: Time,
        run: impl IntoIterator<Item = U>,
    ) {
        self.waiting
            .entry(time)
            .or_insert_with(|| (capability.delayed(&time, 0), Vec::new()))
            .1
            .extend(run);
    }

    /// Sets a timer for `key` at `at`, with a capability delayed from `capability`.
    pub(crate) fn schedule(&mut self, capability: &Capability<Time>, key: K, at: Time) {
        self.timers
            .entry(at)
            .or_insert_with(|| (capability.delayed(&at), Vec::new()))
            .1
            .push(key);
    }

    /// Drops every pending timer (at the end of the input nothing comes due).
    pub(crate) fn clear_timers(&mut self) {
        self.timers.clear();
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
        let updates = self.waiting.remove(&time);
        let due = self.timers.remove(&time);
        let capability = match (&updates, &due) {
            (Some((capability, _)), _) | (None, Some((capability, _))) => capability.clone(),
            (None, None) => return None,
        };
        Some(Ready {
            time,
            capability,
            updates: updates.map(|(_, u)| u).unwrap_or_default(),
            due: due.map(|(_, k)| k).unwrap_or_default(),
        })
    }
}
