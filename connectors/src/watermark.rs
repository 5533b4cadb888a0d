//! Per-partition event-time watermarks.
//!
//! A partition's watermark is its newest event time minus the allowed lateness. The source's
//! watermark is the least over its *active* partitions; a partition that is caught up (it has
//! read up to the broker's end offset, as asked for recently and after its last message came)
//! and has been silent for the idle timeout stops holding the watermark back. A partition
//! whose end offset is unknown or stale (its broker does not answer) or lies ahead of what was
//! read (fetches stall) is never idle: its readings would turn late when they finally arrive.
//! When every partition is idle, event time moves on with wall-clock time from the newest
//! event (less the idle timeout), so a quiet stream still completes its windows and `for`
//! timers.

use std::time::{Duration, Instant};

/// Watermark state of one partition.
#[derive(Clone, Debug)]
pub struct PartitionClock {
    /// Newest event time seen, epoch ms.
    max_event: Option<u64>,
    /// When the last message (any, decodable or not) arrived.
    last_message: Instant,
    /// The broker's end offset (exclusive) as last fetched; until the consumer reaches it the
    /// partition is never idle.
    end: i64,
    /// When the request for that end offset was made (the start of its round): an offset
    /// asked for before the last message says nothing of what came after it.
    end_fetched: Instant,
    /// An end offset fetched longer ago than this says nothing: the partition is not idle.
    end_fresh_for: Duration,
    /// Next offset to read.
    next_offset: i64,
    lateness_ms: u64,
    idle_timeout: Duration,
}

/// A partition's contribution to the source watermark.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Contribution {
    /// Holds the watermark at or below this time (`None`: has backlog but no event yet, so
    /// hold at the current watermark).
    Active(Option<u64>),
    /// Idle; if all partitions are idle the watermark may advance to this (`None`: no data ever).
    Idle(Option<u64>),
}

impl PartitionClock {
    /// A clock for a partition whose end offset was `end` at `now` (fetched at assignment);
    /// end offsets older than `end_fresh_for` do not count (see [`PartitionClock::set_end`]).
    pub fn new(
        lateness: Duration,
        idle_timeout: Duration,
        end: i64,
        end_fresh_for: Duration,
        now: Instant,
    ) -> Self {
        PartitionClock {
            max_event: None,
            last_message: now,
            end,
            end_fetched: now,
            end_fresh_for,
            next_offset: 0,
            lateness_ms: u64::try_from(lateness.as_millis()).unwrap_or(u64::MAX),
            idle_timeout,
        }
    }

    /// Records a message at `offset` (with its event time when it had a usable one).
    pub fn observe(&mut self, offset: i64, event_time: Option<u64>, now: Instant) {
        self.last_message = now;
        self.next_offset = self.next_offset.max(offset.saturating_add(1));
        if let Some(t) = event_time {
            self.max_event = Some(self.max_event.map_or(t, |m| m.max(t)));
        }
    }

    /// Counts the partition as heard from at `now` without a message: the source holds it
    /// back (it is ahead of the others), so its silence is not the broker's.
    pub fn heard_from(&mut self, now: Instant) {
        self.last_message = self.last_message.max(now);
    }

    /// Records the broker's end offset as fetched at `fetched` (older news is ignored).
    pub fn set_end(&mut self, end: i64, fetched: Instant) {
        if fetched >= self.end_fetched {
            self.end = end;
            self.end_fetched = fetched;
        }
    }

    /// True when the partition has read up to an end offset fetched within `end_fresh_for`
    /// and asked for no earlier than its last message came. An end offset asked for before
    /// that says nothing of what the producer wrote since: with slow fetches (half-second
    /// round trips) the partition read up to such an offset, fell silent for the idle
    /// timeout while its next fetch was on the way, and its readings turned late.
    pub fn caught_up(&self, now: Instant) -> bool {
        self.end_fetched >= self.last_message
            && now.saturating_duration_since(self.end_fetched) <= self.end_fresh_for
            && self.next_offset >= self.end
    }

    /// The newest event time seen, epoch ms.
    pub fn newest_event(&self) -> Option<u64> {
        self.max_event
    }

    /// The next offset to read.
    pub fn next_offset(&self) -> i64 {
        self.next_offset
    }

    /// The allowed lateness, milliseconds.
    pub fn lateness_ms(&self) -> u64 {
        self.lateness_ms
    }

    /// This partition's contribution at `now`. `drained_at` is when the consumer's last poll
    /// found nothing buffered (`None`: that poll stopped with messages left, or none came back
    /// empty yet). Silence counts only up to that poll: a worker busy in the dataflow, not
    /// polling, must not take its own inattention for a silent partition, or the readings
    /// waiting for it turn late when it polls again.
    pub fn contribution(&self, now: Instant, drained_at: Option<Instant>) -> Contribution {
        let silent = drained_at.map(|at| at.saturating_duration_since(self.last_message));
        if let Some(silent) = silent.filter(|s| *s >= self.idle_timeout && self.caught_up(now)) {
            // Only the silence beyond the idle timeout moves event time on: deliveries that
            // come in bursts up to `idle_timeout + lateness` apart never produce late events.
            let beyond = silent.saturating_sub(self.idle_timeout);
            let elapsed = u64::try_from(beyond.as_millis()).unwrap_or(u64::MAX);
            Contribution::Idle(
                self.max_event
                    .map(|m| m.saturating_add(elapsed).saturating_sub(self.lateness_ms)),
            )
        } else {
            Contribution::Active(self.max_event.map(|m| m.saturating_sub(self.lateness_ms)))
        }
    }
}

/// Combines partition contributions into the source's next watermark, never moving back from
/// `current`. `others` is the newest watermark other sources published (so a source whose
/// partitions are all idle follows the rest instead of holding the global frontier back).
pub fn combine(
    current: u64,
    contributions: impl IntoIterator<Item = Contribution>,
    others: u64,
) -> u64 {
    let mut active: Option<u64> = None;
    let mut any_active = false;
    let mut idle_best = others;
    for c in contributions {
        match c {
            Contribution::Active(t) => {
                any_active = true;
                let t = t.unwrap_or(current);
                active = Some(active.map_or(t, |a| a.min(t)));
            }
            Contribution::Idle(t) => idle_best = idle_best.max(t.unwrap_or(0)),
        }
    }
    let next = if any_active {
        active.unwrap_or(current)
    } else {
        idle_best
    };
    next.max(current)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LATE: Duration = Duration::from_millis(250);
    const IDLE: Duration = Duration::from_millis(500);
    const FRESH: Duration = Duration::from_secs(3600);

    #[test]
    fn active_partition_trails_its_newest_event_by_the_lateness() {
        let t0 = Instant::now();
        let mut p = PartitionClock::new(LATE, IDLE, 0, FRESH, t0);
        p.observe(0, Some(10_000), t0);
        p.observe(1, Some(9_000), t0);
        assert_eq!(
            p.contribution(t0, Some(t0)),
            Contribution::Active(Some(9_750))
        );
        assert_eq!(combine(0, [p.contribution(t0, Some(t0))], 0), 9_750);
    }

    #[test]
    fn the_slowest_active_partition_holds_the_watermark() {
        let t0 = Instant::now();
        let mut a = PartitionClock::new(LATE, IDLE, 0, FRESH, t0);
        let mut b = PartitionClock::new(LATE, IDLE, 0, FRESH, t0);
        a.observe(0, Some(10_000), t0);
        b.observe(0, Some(5_000), t0);
        let c = [a.contribution(t0, Some(t0)), b.contribution(t0, Some(t0))];
        assert_eq!(combine(0, c, 0), 4_750);
    }

    #[test]
    fn idle_partitions_do_not_hold_back_and_time_moves_when_all_are_idle() {
        let t0 = Instant::now();
        let mut a = PartitionClock::new(LATE, IDLE, 0, FRESH, t0);
        let mut b = PartitionClock::new(LATE, IDLE, 0, FRESH, t0);
        a.observe(0, Some(10_000), t0);
        b.observe(0, Some(5_000), t0);
        let later = t0 + Duration::from_millis(600);
        a.observe(1, Some(10_600), later);
        // An end-offset round asked for after that reading finds nothing more.
        a.set_end(2, later);
        // b silent for 600 ms with nothing buffered: idle.
        let c = [
            a.contribution(later, Some(later)),
            b.contribution(later, Some(later)),
        ];
        assert_eq!(combine(0, c, 0), 10_350);
        // Everything silent: event time follows the wall clock from the newest event, counting
        // only the silence beyond the idle timeout.
        let much_later = later + Duration::from_millis(1_000);
        let c = [
            a.contribution(much_later, Some(much_later)),
            b.contribution(much_later, Some(much_later)),
        ];
        assert_eq!(combine(10_350, c, 0), 10_600 + (1_000 - 500) - 250);
    }

    #[test]
    fn a_busy_worker_that_did_not_poll_does_not_call_its_partition_idle() {
        // A worker stepping the dataflow for longer than the idle timeout, its partition's
        // readings waiting in the client, took the partition for idle; the watermark followed
        // the other worker's and the waiting readings went to the dead letters as late. (Found
        // reading the code while chasing the load bench's late readings, which had another
        // cause: see benches/README.md.)
        let t0 = Instant::now();
        let mut p = PartitionClock::new(LATE, IDLE, 0, FRESH, t0);
        p.observe(0, Some(10_000), t0);
        // Its last poll (right after that reading) found nothing more; then 2 s elsewhere.
        let busy_until = t0 + Duration::from_secs(2);
        assert_eq!(
            p.contribution(busy_until, Some(t0)),
            Contribution::Active(Some(9_750))
        );
        assert_eq!(
            p.contribution(busy_until, None),
            Contribution::Active(Some(9_750))
        );
        // Polling again and still finding nothing, it is idle.
        assert!(matches!(
            p.contribution(busy_until, Some(busy_until)),
            Contribution::Idle(_)
        ));
    }

    #[test]
    fn a_partition_with_backlog_is_never_idle() {
        let t0 = Instant::now();
        let p = PartitionClock::new(LATE, IDLE, 100, FRESH, t0);
        let later = t0 + Duration::from_secs(10);
        assert_eq!(
            p.contribution(later, Some(later)),
            Contribution::Active(None)
        );
        assert_eq!(combine(42, [p.contribution(later, Some(later))], 1_000), 42);
    }

    #[test]
    fn a_source_with_only_idle_partitions_follows_the_others_and_never_goes_back() {
        let t0 = Instant::now();
        let p = PartitionClock::new(LATE, IDLE, 0, FRESH, t0);
        let later = t0 + Duration::from_secs(1);
        assert_eq!(
            combine(0, [p.contribution(later, Some(later))], 7_000),
            7_000
        );
        assert_eq!(combine(8_000, [], 7_000), 8_000);
        assert_eq!(combine(0, [p.contribution(later, None)], 7_000), 0);
    }

    #[test]
    fn a_silent_partition_behind_its_current_end_offset_is_not_idle() {
        // Fetch errors stall a partition that the broker says has new messages.
        let t0 = Instant::now();
        let mut p = PartitionClock::new(LATE, IDLE, 1, Duration::from_secs(2), t0);
        p.observe(0, Some(10_000), t0);
        let later = t0 + Duration::from_secs(1);
        assert!(matches!(
            p.contribution(later, Some(later)),
            Contribution::Idle(_)
        ));
        p.set_end(5, later);
        assert_eq!(
            p.contribution(later, Some(later)),
            Contribution::Active(Some(9_750))
        );
        // Older news does not undo it.
        p.set_end(1, t0);
        assert_eq!(
            p.contribution(later, Some(later)),
            Contribution::Active(Some(9_750))
        );
    }

    #[test]
    fn half_second_round_trips_do_not_make_a_partition_caught_up_to_an_older_end_idle() {
        // The kafka_faults test with 500 ms broker round trips dead-lettered a reading as late
        // (1,518 ms behind the watermark): its partition had read up to the end offset of a
        // round asked for before its last fetch came back, fell silent for the idle timeout
        // while the next fetch was on the way, and the other partition's watermark ran ahead.
        let t0 = Instant::now();
        let mut p = PartitionClock::new(LATE, IDLE, 0, FRESH, t0);
        p.set_end(3, t0 + Duration::from_millis(100));
        p.observe(2, Some(10_000), t0 + Duration::from_millis(600));
        let silent = t0 + Duration::from_millis(1_200);
        assert_eq!(
            p.contribution(silent, Some(silent)),
            Contribution::Active(Some(9_750))
        );
        // A round asked for after that message, finding nothing more: now it is idle.
        p.set_end(3, t0 + Duration::from_millis(700));
        assert!(matches!(
            p.contribution(silent, Some(silent)),
            Contribution::Idle(_)
        ));
    }

    #[test]
    fn a_partition_whose_end_offset_is_stale_is_not_idle() {
        // The broker does not answer: nothing says the partition has nothing more to read.
        let t0 = Instant::now();
        let mut p = PartitionClock::new(LATE, IDLE, 1, Duration::from_secs(2), t0);
        p.observe(0, Some(10_000), t0);
        let later = t0 + Duration::from_secs(3);
        assert_eq!(
            p.contribution(later, Some(later)),
            Contribution::Active(Some(9_750))
        );
        p.set_end(1, later);
        assert!(matches!(
            p.contribution(later, Some(later)),
            Contribution::Idle(_)
        ));
    }
}
