//! Updates waiting for a frontier, kept sorted by time without a map entry per time.
//!
//! Frontier-driven operators used to file what waits by time, a map entry and a list per
//! distinct time. Readings stamped by the sensors' own clocks have a time each (at 1,000
//! sensors reading once a second, one per millisecond), so each reading cost a map entry and
//! an allocation in every such operator on its path: the operators bench with a batch's
//! readings one millisecond apart ran the engine at 0.75x the hand-written floor, its lookups
//! and state machine 4-5x slower than with the same readings at one time.
//!
//! Here updates come into a list in arrival order. Once the frontier has passed the earliest
//! of them, that list is sorted by time (a stable sort: a message in time order is one run)
//! and filed as one run behind the runs waiting, in time order (almost always: readings come
//! about in time order; else the waiting updates after the earliest new one are merged with
//! the new ones into one run, in one pass). Runs leave from the front: a run that is all ready
//! leaves whole (its list is handed over or appended in one copy), the first that is not
//! leaves its ready front. What waits longer (the allowed lateness: 250 ms of readings by
//! default) is neither sorted nor moved again, so a take costs what came since the last one
//! and what leaves, not what waits. One list of everything waiting moved each update in and
//! out of it one at a time: 7-10 % of a worker's time with the shipped mine rules.

use std::collections::VecDeque;
use std::hash::{BuildHasher, Hash};

use itertools::Itertools;
use rustc_hash::{FxBuildHasher, FxHashSet};

use crate::{Diff, Time};

/// Updates `(data, time, diff)` waiting until their time is ready.
pub(crate) struct Pending<D> {
    /// Taken in: runs sorted by time, none empty, each starting at or after the end of the one
    /// before; a time's updates in arrival order. A run is a deque so that its ready front
    /// leaves without shifting the rest: a frontier moving a millisecond at a time through a
    /// long run shifted the whole run at each step (50 ms stalls in the `paced` bench).
    runs: VecDeque<VecDeque<(D, Time, Diff)>>,
    /// Come since the last take, in arrival order.
    fresh: Vec<(D, Time, Diff)>,
    /// The earliest time in `fresh`.
    fresh_earliest: Option<Time>,
    /// An emptied list kept for its room: the next fresh list.
    spare: Vec<(D, Time, Diff)>,
}

impl<D> Default for Pending<D> {
    fn default() -> Self {
        Pending {
            runs: VecDeque::new(),
            fresh: Vec::new(),
            fresh_earliest: None,
            spare: Vec::new(),
        }
    }
}

/// The earliest time among `updates`.
fn earliest_time<D>(updates: &[(D, Time, Diff)]) -> Option<Time> {
    updates.iter().map(|(_, time, _)| *time).min()
}

/// Sorts `updates` by time, a time's by data, and adds up the diffs of equal (data, time)
/// pairs, dropping those that cancel: `consolidate_updates` in time order.
pub(crate) fn consolidate_by_time<D: Ord>(updates: &mut Vec<(D, Time, Diff)>) {
    updates.sort_by(|(a, at, _), (b, bt, _)| at.cmp(bt).then_with(|| a.cmp(b)));
    updates.dedup_by(|(data, time, diff), (kept, kept_time, kept_diff)| {
        let same = time == kept_time && data == kept;
        if same {
            *kept_diff += *diff;
        }
        same
    });
    updates.retain(|(_, _, diff)| *diff != 0);
}

/// [`consolidate_by_time`] for updates already in time order (as [`Pending::take_ready`]
/// hands them out) whose data have a key that orders them only among themselves (an alert's
/// hits: its state moves through them in order; other alerts' hits do not touch it). A time
/// whose updates all have distinct keys has nothing to add up, so its updates keep their
/// order; only when some time has a key twice (or the updates are not in time order) are they
/// consolidated. Sorting every time's hits by their whole row, to order the few repeats, was
/// ~10 % of the `paced` bench with the mine rules on two workers. `seen` is scratch room.
pub(crate) fn consolidate_repeated_keys_by_time<D: Ord, K: Hash + ?Sized>(
    updates: &mut Vec<(D, Time, Diff)>,
    key_of: impl Fn(&D) -> &K,
    seen: &mut FxHashSet<u64>,
) {
    let mut previous: Option<Time> = None;
    let repeated = updates.iter().any(|(data, time, diff)| {
        if previous != Some(*time) {
            if previous.is_some_and(|previous| previous > *time) {
                return true;
            }
            previous = Some(*time);
            seen.clear();
        }
        *diff == 0 || !seen.insert(FxBuildHasher.hash_one(key_of(data)))
    });
    if repeated {
        consolidate_by_time(updates);
    }
}

/// The time of an update.
fn time_of<D>((_, time, _): &(D, Time, Diff)) -> Time {
    *time
}

impl<D> Pending<D> {
    /// Takes all of `updates` (a message's), leaving it empty; returns their earliest time
    /// (what the operator must hold a capability for), `None` for no updates.
    pub(crate) fn append(&mut self, updates: &mut Vec<(D, Time, Diff)>) -> Option<Time> {
        let time = earliest_time(updates)?;
        self.fresh_earliest = Some(
            self.fresh_earliest
                .map_or(time, |earliest| earliest.min(time)),
        );
        if self.fresh.is_empty() && self.fresh.capacity() < updates.len() {
            // The message's list becomes the fresh list: taken, not copied. Not when the fresh
            // list has room: a message's list is full, so the next message's would move it to
            // a larger allocation, and the one after that again (copying a step's updates
            // about twice where appending them to the room kept copies them once).
            std::mem::swap(&mut self.fresh, updates);
        } else {
            self.fresh.append(updates);
        }
        Some(time)
    }

    /// The earliest time still waiting.
    pub(crate) fn earliest(&self) -> Option<Time> {
        let filed = self.runs.front().and_then(|run| run.front()).map(time_of);
        filed.into_iter().chain(self.fresh_earliest).min()
    }

    /// Moves the updates at the times `ready` accepts to the end of `into`, in time order (a
    /// time's updates in the order they came). `ready` must accept every time before one it
    /// accepts, as "the frontier has passed it" does.
    pub(crate) fn take_ready(
        &mut self,
        ready: impl Fn(&Time) -> bool,
        into: &mut Vec<(D, Time, Diff)>,
    ) {
        if !self.earliest().is_some_and(|earliest| ready(&earliest)) {
            return;
        }
        self.file_fresh();
        while let Some(run) = self.runs.front_mut() {
            let split = run.partition_point(|update| ready(&time_of(update)));
            if split < run.len() {
                into.extend(run.drain(..split));
                return;
            }
            let Some(run) = self.runs.pop_front() else {
                return;
            };
            // Without a copy unless part of it left before.
            let mut run = Vec::from(run);
            if into.is_empty() {
                // The run itself leaves; the list it replaces is kept for its room.
                std::mem::swap(into, &mut run);
            } else {
                into.append(&mut run);
            }
            if run.capacity() > self.spare.capacity() {
                self.spare = run;
            }
        }
    }

    /// Sorts the fresh updates and files them as a run.
    fn file_fresh(&mut self) {
        self.fresh_earliest = None;
        self.fresh.sort_by_key(time_of);
        let Some(first) = self.fresh.first().map(time_of) else {
            return;
        };
        let mut fresh = std::mem::replace(&mut self.fresh, std::mem::take(&mut self.spare));
        let last = self.runs.back().and_then(|run| run.back()).map(time_of);
        if last.is_none_or(|last| last <= first) {
            self.runs.push_back(VecDeque::from(fresh));
            return;
        }
        // Some fresh update comes before what waits: the waiting updates after the earliest
        // fresh one are merged with the fresh ones in one pass (a time's updates that waited
        // first) into one run. Inserting each fresh update behind what waits shifted the
        // whole tail per update, quadratic when messages interleave in time (two partitions a
        // few seconds apart; the 10k-sensor spread bench spent 90 % of its time there).
        let mut waited = Vec::new();
        while let Some(run) = self.runs.back()
            && run.back().is_some_and(|update| time_of(update) > first)
        {
            if let Some(run) = self.runs.pop_back() {
                // Runs are in order: this one goes before those popped after it.
                let mut run = Vec::from(run);
                run.append(&mut waited);
                waited = run;
            }
        }
        let keep = waited.partition_point(|update| time_of(update) <= first);
        let later = waited.split_off(keep);
        if !waited.is_empty() {
            self.runs.push_back(VecDeque::from(waited));
        }
        // Of one time, the updates that waited first.
        let mut merged = Vec::with_capacity(later.len() + fresh.len());
        let in_order = later
            .into_iter()
            .merge_by(fresh.drain(..), |waited, fresh| {
                time_of(waited) <= time_of(fresh)
            });
        merged.extend(in_order);
        self.spare = fresh;
        self.runs.push_back(VecDeque::from(merged));
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        /// Whatever the order updates come in and the frontiers they are taken at, each comes
        /// out once, at the first frontier past its time, in time order, a time's updates in
        /// arrival order; the earliest time is that of what still waits.
        #[test]
        fn each_update_leaves_once_in_time_order_when_ready(
            messages in prop::collection::vec(prop::collection::vec(0u64..40, 0..8), 0..12),
            frontiers in prop::collection::vec(0u64..50, 0..12),
        ) {
            let mut pending = Pending::default();
            let mut waiting: Vec<(usize, Time, Diff)> = Vec::new();
            let mut serial = 0;
            let mut frontier = 0;
            for (message, step) in messages.iter().zip(frontiers.iter().chain(std::iter::repeat(&0))) {
                let mut updates: Vec<(usize, Time, Diff)> = message
                    .iter()
                    .map(|time| {
                        serial += 1;
                        (serial, frontier + time, 1)
                    })
                    .collect();
                waiting.extend(updates.iter().copied());
                pending.append(&mut updates);
                prop_assert!(updates.is_empty());
                frontier += step;
                let mut taken = Vec::new();
                pending.take_ready(|time| *time < frontier, &mut taken);
                // The reference: the ready ones, stably sorted by time.
                let (mut expected, rest): (Vec<_>, Vec<_>) =
                    waiting.iter().partition(|(_, time, _)| *time < frontier);
                expected.sort_by_key(|(_, time, _)| *time);
                prop_assert_eq!(taken, expected);
                waiting = rest;
                prop_assert_eq!(pending.earliest(), waiting.iter().map(|u| u.1).min());
            }
        }
    }

    proptest! {
        /// Against `consolidate_by_time`: the same updates, and each key's updates at each
        /// time in the same order; only different keys' updates at one time may keep the
        /// order they came in.
        #[test]
        fn repeated_keys_are_consolidated_and_the_rest_keep_their_order(
            mut updates in prop::collection::vec(((0u8..4, 0u8..3), 0u64..4, prop_oneof![Just(1isize), Just(-1)]), 0..24),
            in_time_order in any::<bool>(),
        ) {
            if in_time_order {
                updates.sort_by_key(|(_, time, _)| *time);
            }
            let mut expected = updates.clone();
            consolidate_by_time(&mut expected);
            let mut got = updates;
            consolidate_repeated_keys_by_time(&mut got, |data: &(u8, u8)| &data.0, &mut FxHashSet::default());
            let per_key_and_time = |updates: &[((u8, u8), Time, Diff)], key: u8, time: Time| {
                updates.iter().filter(|((k, _), t, _)| (*k, *t) == (key, time)).copied().collect::<Vec<_>>()
            };
            for key in 0..4 {
                for time in 0..4 {
                    prop_assert_eq!(per_key_and_time(&got, key, time), per_key_and_time(&expected, key, time));
                }
            }
            got.sort_by_key(|(data, time, _)| (*time, *data));
            prop_assert_eq!(got, expected);
        }
    }

    fn first<A, B>((a, _): &(A, B)) -> &A {
        a
    }

    /// A time whose keys are all distinct keeps its order; one with a key twice is
    /// consolidated.
    #[test]
    fn only_a_time_with_a_repeated_key_is_consolidated() {
        let distinct = vec![(("b", 1), 1, 1), (("a", 1), 1, 1), (("c", 1), 2, 1)];
        let mut updates = distinct.clone();
        consolidate_repeated_keys_by_time(&mut updates, first, &mut FxHashSet::default());
        assert_eq!(updates, distinct);
        let mut updates = vec![
            (("b", 2), 1, 1),
            (("a", 1), 1, 1),
            (("b", 1), 1, 1),
            (("b", 2), 1, -1),
        ];
        consolidate_repeated_keys_by_time(&mut updates, first, &mut FxHashSet::default());
        assert_eq!(updates, vec![(("a", 1), 1, 1), (("b", 1), 1, 1)]);
    }

    /// Equal (data, time) pairs add up and those that cancel go; the rest in (time, data)
    /// order.
    #[test]
    fn consolidating_adds_up_equal_updates_in_time_order() {
        let mut updates = vec![
            ("b", 2, 1),
            ("a", 5, 1),
            ("b", 2, 1),
            ("c", 2, 1),
            ("a", 2, 1),
            ("c", 2, -1),
            ("a", 1, -1),
        ];
        consolidate_by_time(&mut updates);
        assert_eq!(
            updates,
            vec![("a", 1, -1), ("a", 2, 1), ("b", 2, 2), ("a", 5, 1)]
        );
    }

    /// Taking into a list that holds updates already appends after them.
    #[test]
    fn taking_appends_to_what_the_list_holds() {
        let mut pending = Pending::default();
        pending.append(&mut vec![("b", 5, 1), ("a", 3, 1)]);
        let mut into = vec![("x", 1, 1)];
        pending.take_ready(|time| *time < 10, &mut into);
        assert_eq!(into, vec![("x", 1, 1), ("a", 3, 1), ("b", 5, 1)]);
        assert_eq!(pending.earliest(), None);
    }
}
