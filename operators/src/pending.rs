//! Updates held until their time is complete, for frontier-driven operators whose input
//! messages carry many times.
//!
//! Readings from Kafka carry their own event times (milliseconds): one poll brings hundreds of
//! distinct times in one message. Filed under a map of time -> list, each distinct time cost a
//! list of its own (an allocation, every update copied into it, a tree insert and removal).
//! Here each message is kept whole, its container taken, ordered by time once on arrival (a
//! linear pass when it is in order already, as a partition's readings are). Taking what is
//! ready hands a message over whole when all of it is ready and splits it otherwise, so a
//! step costs what it takes, not what stays behind (while one partition lags, the others'
//! readings pile up here).

use std::mem;

use crate::{Diff, Time};

/// Updates waiting for their times to complete, as the messages they came in.
pub(crate) struct Pending<D> {
    /// Each in time order, none empty.
    messages: Vec<Vec<(D, Time, Diff)>>,
    /// The earliest time among `messages`, `None` when empty.
    earliest: Option<Time>,
}

impl<D> Default for Pending<D> {
    fn default() -> Self {
        Pending {
            messages: Vec::new(),
            earliest: None,
        }
    }
}

impl<D> Pending<D> {
    /// Holds a message's updates (leaving `message` empty); returns the message's earliest
    /// time, `None` for an empty message.
    pub(crate) fn file(&mut self, message: &mut Vec<(D, Time, Diff)>) -> Option<Time> {
        message.sort_by_key(|(_, time, _)| *time);
        let earliest = message.first()?.1;
        self.messages.push(mem::take(message));
        self.earliest = Some(self.earliest.map_or(earliest, |held| held.min(earliest)));
        Some(earliest)
    }

    /// The earliest time held, `None` when nothing is.
    pub(crate) fn earliest(&self) -> Option<Time> {
        self.earliest
    }

    /// Takes the updates whose times `complete` accepts, in no particular order (each
    /// message's in time order). `complete` must accept every time before one it accepts, as
    /// "the frontier has passed it" does.
    pub(crate) fn take_ready(&mut self, complete: impl Fn(&Time) -> bool) -> Vec<(D, Time, Diff)> {
        let mut ready = Vec::new();
        if !self.earliest.is_some_and(|time| complete(&time)) {
            return ready;
        }
        let mut earliest = None;
        self.messages.retain_mut(|message| {
            let split = message.partition_point(|(_, time, _)| complete(time));
            if split == message.len() && ready.is_empty() {
                mem::swap(&mut ready, message);
            } else if split == message.len() {
                ready.append(message);
            } else {
                ready.extend(message.drain(..split));
                let first = message[0].1;
                earliest = Some(earliest.map_or(first, |held: Time| held.min(first)));
            }
            !message.is_empty()
        });
        self.earliest = earliest;
        ready
    }

    /// [`Pending::take_ready`] in time order, updates of one time in the order they came.
    pub(crate) fn take_ready_in_order(
        &mut self,
        complete: impl Fn(&Time) -> bool,
    ) -> Vec<(D, Time, Diff)> {
        let mut ready = self.take_ready(complete);
        // A run per message: merged, not sorted from scratch.
        ready.sort_by_key(|(_, time, _)| *time);
        ready
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::Pending;
    use crate::{Diff, Time};

    #[test]
    fn takes_what_is_complete_in_time_order() {
        let mut pending = Pending::default();
        let mut first = vec![('a', 5, 1), ('b', 3, 1), ('c', 5, -1)];
        assert_eq!(pending.file(&mut first), Some(3));
        assert!(first.is_empty());
        assert_eq!(pending.file(&mut Vec::new()), None);
        assert_eq!(pending.file(&mut vec![('d', 9, 1), ('e', 4, 1)]), Some(4));
        assert_eq!(pending.earliest(), Some(3));
        assert_eq!(pending.take_ready(|t| *t < 3), vec![]);
        assert_eq!(
            pending.take_ready_in_order(|t| *t < 6),
            vec![('b', 3, 1), ('e', 4, 1), ('a', 5, 1), ('c', 5, -1)]
        );
        assert_eq!(pending.earliest(), Some(9));
        assert_eq!(pending.take_ready_in_order(|_| true), vec![('d', 9, 1)]);
        assert_eq!(pending.earliest(), None);
    }

    proptest! {
        /// Against a reference that keeps every update and, at each take, picks out the
        /// complete ones in time order, ties in arrival order.
        #[test]
        fn equals_a_filter_of_everything_filed(
            steps in prop::collection::vec(
                (prop::collection::vec((0u8..4, 0u64..12), 0..8), 0u64..14),
                1..12,
            ),
            in_order in any::<bool>(),
        ) {
            let mut pending = Pending::default();
            let mut reference: Vec<(u8, Time, Diff)> = Vec::new();
            let mut arrivals = 0;
            let mut bound = 0;
            for (message, advance) in steps {
                // Times behind what was taken already cannot come (the frontier passed them).
                let mut message: Vec<(u8, Time, Diff)> = message
                    .into_iter()
                    .map(|(data, time)| {
                        arrivals += 1;
                        (data, bound + time, arrivals)
                    })
                    .collect();
                let earliest = message.iter().map(|u| u.1).min();
                reference.extend(message.iter().copied());
                prop_assert_eq!(pending.file(&mut message), earliest);
                bound += advance;
                let mut expected: Vec<_> =
                    reference.iter().copied().filter(|u| u.1 < bound).collect();
                expected.sort_by_key(|u| (u.1, u.2));
                reference.retain(|u| u.1 >= bound);
                if in_order {
                    prop_assert_eq!(pending.take_ready_in_order(|t| *t < bound), expected);
                } else {
                    let mut taken = pending.take_ready(|t| *t < bound);
                    taken.sort_by_key(|u| (u.1, u.2));
                    prop_assert_eq!(taken, expected);
                }
                prop_assert_eq!(pending.earliest(), reference.iter().map(|u| u.1).min());
            }
        }
    }
}
