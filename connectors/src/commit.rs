//! Which offset of a partition is safe to commit.
//!
//! A committed offset is where a restarted engine resumes. Resuming there must re-read every
//! message the engine still needs: those whose outputs are not yet durable, and the history the
//! rules' state (windows, `for` holds, open reports) is rebuilt from. Both come down to one
//! event-time cutoff per clock (durable frontier minus history): every message with an event
//! time at or after the cutoff must lie at or after the committed offset.
//!
//! Event times within a partition are only roughly ordered, so the tracker keeps sparse
//! resume points `(offset, newest event time before it)`, one per `granularity` of event time.
//! Resuming at a point whose newest-before time is below the cutoff loses nothing at or after
//! the cutoff. Memory is bounded by history / granularity points per partition.

use std::collections::VecDeque;

/// Resume points of one partition.
#[derive(Clone, Debug)]
pub struct CommitTracker {
    /// `(offset, newest event time of the messages before offset)`, oldest first; times
    /// ascend by at least `granularity_ms` from one point to the next.
    points: VecDeque<(i64, u64)>,
    granularity_ms: u64,
    /// Newest event time consumed so far.
    newest: u64,
    /// The offset after the last consumed message.
    next_offset: i64,
    /// The last offset handed out for commit (never move backwards).
    committed: i64,
}

impl CommitTracker {
    /// A tracker for a partition whose consumption starts at `start` (messages before it are
    /// covered by an earlier commit). Points are kept every `granularity_ms` of event time.
    pub fn new(start: i64, granularity_ms: u64) -> Self {
        CommitTracker {
            points: VecDeque::from([(start, 0)]),
            granularity_ms: granularity_ms.max(1),
            newest: 0,
            next_offset: start,
            committed: start,
        }
    }

    /// Records a consumed message; `time` is its event time, `None` for messages that carry
    /// no state (dead letters).
    pub fn observe(&mut self, offset: i64, time: Option<u64>) {
        if let Some(time) = time
            && time > self.newest
        {
            let last = self.points.back().map_or(0, |p| p.1);
            if self.newest >= last.saturating_add(self.granularity_ms) {
                self.points.push_back((offset, self.newest));
            }
            self.newest = time;
        }
        self.next_offset = self.next_offset.max(offset.saturating_add(1));
    }

    /// The offset to commit so that every message with event time `>= cutoff` is re-read on
    /// restart, if it moved on since the last call.
    pub fn advance(&mut self, cutoff: u64) -> Option<i64> {
        let safe = if self.newest < cutoff {
            // Everything consumed is older than the cutoff.
            self.next_offset
        } else {
            // The newest point still below the cutoff; older ones are no longer needed.
            while self.points.len() > 1 && self.points.get(1).is_some_and(|p| p.1 < cutoff) {
                self.points.pop_front();
            }
            match self.points.front() {
                Some(&(offset, before)) if before < cutoff => offset,
                _ => return None,
            }
        };
        (safe > self.committed).then(|| {
            self.committed = safe;
            safe
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A plain reference: the smallest offset whose message has a time at or after the cutoff
    /// (or the end), given every message.
    fn reference(messages: &[(i64, u64)], end: i64, cutoff: u64) -> i64 {
        messages
            .iter()
            .filter(|(_, t)| *t >= cutoff)
            .map(|(o, _)| *o)
            .min()
            .unwrap_or(end)
    }

    #[test]
    fn commits_nothing_needed_after_the_cutoff() {
        let mut tracker = CommitTracker::new(100, 1_000);
        let messages: Vec<(i64, u64)> = (0..50)
            .map(|i| (100 + i, 10_000 + (i as u64) * 400 - (i as u64 % 3) * 300))
            .collect();
        for &(offset, time) in &messages {
            tracker.observe(offset, Some(time));
        }
        let mut last = 100;
        for cutoff in (10_000..32_000).step_by(700) {
            if let Some(offset) = tracker.advance(cutoff) {
                assert!(offset > last, "never backwards");
                last = offset;
            }
            assert!(
                last <= reference(&messages, 150, cutoff),
                "cutoff {cutoff}: committed {last} would skip a needed message"
            );
        }
        assert_eq!(tracker.advance(u64::MAX), None, "already at the end");
        assert_eq!(
            last, 150,
            "everything older than the last cutoff is committed"
        );
    }

    #[test]
    fn dead_letters_only_move_the_end() {
        let mut tracker = CommitTracker::new(0, 1_000);
        tracker.observe(0, None);
        tracker.observe(1, None);
        assert_eq!(tracker.advance(5), Some(2));
        assert_eq!(tracker.advance(6), None);
    }

    proptest::proptest! {
        #[test]
        fn never_skips_a_message_at_or_after_the_cutoff(
            jitter in proptest::collection::vec(0u64..5_000, 1..300),
            granularity in 1u64..3_000,
            cutoffs in proptest::collection::vec(0u64..400_000, 1..20),
        ) {
            let mut tracker = CommitTracker::new(0, granularity);
            let messages: Vec<(i64, u64)> = jitter
                .iter()
                .enumerate()
                .map(|(i, j)| (i as i64, (i as u64) * 1_000 + j))
                .collect();
            for &(offset, time) in &messages {
                tracker.observe(offset, Some(time));
            }
            let mut cutoffs = cutoffs;
            cutoffs.sort();
            let mut committed = 0;
            for cutoff in cutoffs {
                if let Some(offset) = tracker.advance(cutoff) {
                    committed = offset;
                }
                let end = messages.len() as i64;
                proptest::prop_assert!(committed <= reference(&messages, end, cutoff));
            }
        }
    }
}
