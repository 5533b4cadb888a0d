//! What an open window keeps of its readings: enough to tell a repeated reading, and its
//! aggregate so far, so that closing a window reads a result instead of passing over every
//! reading it holds.
//!
//! Closing windows used to sort, deduplicate and sum all of a window's readings at its end:
//! at ~800 K readings/s into a one-minute rule that is ~16 M readings per worker closed in one
//! step, ~1.5 s during which no alert moved. Now each reading is checked and aggregated as it
//! is filed, and a close is a constant-time read (a percentile still selects its rank from
//! its values: it needs them all).
//!
//! A reading is kept once, by one window: of the windows it belongs to, the one that ends
//! first ([`WindowReadings::keep`]), which hands the new ones on; the others only count it
//! ([`WindowReadings::count`]). A repeat of the reading can come only while the frontier has
//! not passed the reading's time, when that window is still open, and the answer there is the
//! answer for every window the reading belongs to. A reading of a two-minute window
//! hopping every 30 s used to be kept, searched for and compared in each of its four windows,
//! and held for the two minutes; now once, and for at most the hop.
//!
//! Kept per reading: its time and value, 16 bytes, per entity in ascending order. An entity's
//! readings mostly come in time order, so a new one is appended after one comparison with the
//! last; only one that comes out of order is searched for. The aggregate runs alongside: a
//! count is the number of distinct readings, a min or max a running value, a sum or average an
//! exact sum rounded once at the end (`fsum`: Shewchuk's non-overlapping partials, usually one
//! or two floats), so a window sums to the same bits whatever order its readings come in, over
//! however many partitions, workers or processes; a percentile keeps the values it counted.

use fsum::FSum;
use ordered_float::OrderedFloat;
use smallvec::SmallVec;

use super::Aggregate;
use crate::{EntityId, Time};

/// One entity's distinct readings in a window, (time, value) ascending. The first is kept
/// inline: a window of one reading (a sensor that reads less often than its windows end) then
/// costs no allocation of its own.
type EntityReadings = SmallVec<[(Time, OrderedFloat<f64>); 1]>;

/// The readings one window keeps and its aggregate so far.
pub(super) struct WindowReadings {
    /// The readings kept here, per entity, by entity; the entity is empty in a group of one
    /// entity (the group is the entity).
    entities: SmallVec<[(EntityId, EntityReadings); 1]>,
    /// The distinct readings counted, kept here or by a later window.
    count: usize,
    running: Running,
}

/// An aggregate so far.
enum Running {
    /// The count of distinct readings (the window's `count`).
    Count,
    /// The least value so far.
    Min(f64),
    /// The largest value so far.
    Max(f64),
    /// The exact sum so far.
    Sum(FSum),
    /// The exact sum so far, divided by the count at the end.
    Avg(FSum),
    /// A percentile: taken from the values counted, at the end.
    Percentile(u8, Vec<f64>),
}

impl WindowReadings {
    /// No readings yet, for `aggregate`.
    pub(super) fn new(aggregate: Aggregate) -> Self {
        let running = match aggregate {
            Aggregate::Count => Running::Count,
            Aggregate::Min => Running::Min(f64::INFINITY),
            Aggregate::Max => Running::Max(f64::NEG_INFINITY),
            Aggregate::Sum => Running::Sum(FSum::new()),
            Aggregate::Avg => Running::Avg(FSum::new()),
            Aggregate::Percentile(p) => Running::Percentile(p, Vec::new()),
        };
        WindowReadings {
            entities: SmallVec::new(),
            count: 0,
            running,
        }
    }

    /// Keeps and counts `entity`'s reading of `value` at `time` unless the window keeps it
    /// already; whether it is new.
    pub(super) fn keep(&mut self, entity: EntityId, time: Time, value: f64) -> bool {
        let reading = (time, OrderedFloat(value));
        let found = match self.entities.as_slice() {
            // A group of one entity (its readings name none) or a window of one entity so
            // far: no search. Emptiness first: testing two empty strings equal still calls
            // `memcmp`, per reading (the operators bench at 1k sensors ~10 % slower).
            [(known, _)] if known.is_empty() && entity.is_empty() => Ok(0),
            [(known, _)] if *known == entity => Ok(0),
            entities => entities.binary_search_by(|(known, _)| known.cmp(&entity)),
        };
        let at = found.unwrap_or_else(|at| {
            let new = (entity, EntityReadings::new());
            self.entities.insert(at, new);
            at
        });
        let Some((_, readings)) = self.entities.get_mut(at) else {
            return false;
        };
        match readings.last() {
            None => readings.push(reading),
            Some(last) if *last < reading => {
                if readings.len() == 1 {
                    // Spilling out of line: room for four at once, as a `Vec` would start with.
                    readings.reserve(3);
                }
                readings.push(reading);
            }
            Some(_) => match readings.binary_search(&reading) {
                Ok(_) => return false,
                Err(before) => readings.insert(before, reading),
            },
        }
        self.count(value);
        true
    }

    /// Counts a new reading of `value` kept by an earlier window.
    pub(super) fn count(&mut self, value: f64) {
        self.count += 1;
        match &mut self.running {
            Running::Min(least) => *least = least.min(value),
            Running::Max(largest) => *largest = largest.max(value),
            Running::Sum(sum) | Running::Avg(sum) => *sum += value,
            Running::Percentile(_, values) => values.push(value),
            Running::Count => {}
        }
    }

    /// The window's aggregate over its distinct readings; `None` when it has none.
    pub(super) fn aggregate(self) -> Option<f64> {
        if self.count == 0 {
            return None;
        }
        let count = self.count as f64;
        Some(match self.running {
            Running::Count => count,
            Running::Min(value) | Running::Max(value) => value,
            Running::Sum(sum) => sum.value(),
            Running::Avg(sum) => sum.value() / count,
            Running::Percentile(p, mut values) => {
                // The nearest rank: the `ceil(p n / 100)`-th smallest. Selecting it is linear
                // in the values; sorting them all (n log n) made a busy window's close stall.
                let rank = (usize::from(p.clamp(1, 100)) * values.len()).div_ceil(100);
                let index = rank.max(1) - 1;
                if index >= values.len() {
                    return None;
                }
                *values.select_nth_unstable_by(index, f64::total_cmp).1
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each aggregate of `readings` ((entity, time, value), in the order given).
    fn every_aggregate(readings: &[(&str, Time, f64)]) -> Vec<(String, Option<f64>)> {
        let aggregates = [
            Aggregate::Count,
            Aggregate::Sum,
            Aggregate::Avg,
            Aggregate::Min,
            Aggregate::Max,
            Aggregate::Percentile(50),
            Aggregate::Percentile(100),
        ];
        aggregates
            .iter()
            .map(|aggregate| {
                let mut window = WindowReadings::new(*aggregate);
                for (entity, time, value) in readings {
                    window.keep(EntityId::from(*entity), *time, *value);
                }
                (aggregate.name(), window.aggregate())
            })
            .collect()
    }

    fn expected(values: [f64; 7]) -> Vec<(String, Option<f64>)> {
        ["count", "sum", "avg", "min", "max", "p50", "p100"]
            .iter()
            .zip(values)
            .map(|(name, value)| (name.to_string(), Some(value)))
            .collect()
    }

    #[test]
    fn a_window_without_readings_has_no_aggregate() {
        assert!(
            every_aggregate(&[])
                .iter()
                .all(|(_, value)| value.is_none())
        );
    }

    #[test]
    fn identical_readings_count_once_in_or_out_of_order() {
        let readings = [
            ("s1", 30, 3.0),
            ("s1", 10, 1.0),
            ("s1", 30, 3.0), // the last one again
            ("s2", 30, 3.0), // another entity: another reading
            ("s1", 10, 1.0), // an earlier one again
            ("s1", 10, 2.0), // same time, another value: another reading
            ("s1", 20, 5.0),
        ];
        assert_eq!(
            every_aggregate(&readings),
            expected([5.0, 14.0, 2.8, 1.0, 5.0, 3.0, 5.0])
        );
    }

    /// Summed left to right, 2^53 + 1 + 1 is 2^53 (each 1 is lost to rounding); summed from the
    /// smallest, 2^53 + 2. The exact sum is 2^53 + 2 in every order.
    #[test]
    fn sums_are_exact_whatever_the_order() {
        let big = 2f64.powi(53);
        let orders = [[big, 1.0, 1.0], [1.0, big, 1.0], [1.0, 1.0, big]];
        for order in orders {
            let readings: Vec<(&str, Time, f64)> = order
                .iter()
                .enumerate()
                .map(|(i, value)| ("s1", i as Time, *value))
                .collect();
            let sum = &every_aggregate(&readings)[1];
            assert_eq!(sum, &("sum".to_string(), Some(big + 2.0)), "{order:?}");
        }
        let cancelling = [("s1", 1, 1e16), ("s1", 2, 1.0), ("s1", 3, -1e16)];
        assert_eq!(every_aggregate(&cancelling)[1].1, Some(1.0));
    }

    #[test]
    fn percentiles_take_the_nearest_rank() {
        let readings: Vec<(&str, Time, f64)> = [7.0, 3.0, 10.0, 1.0, 5.0, 9.0, 2.0, 8.0, 4.0, 6.0]
            .iter()
            .enumerate()
            .map(|(i, value)| ("s1", 100 - i as Time, *value))
            .collect();
        for (p, rank) in [
            (1, 1.0),
            (10, 1.0),
            (11, 2.0),
            (50, 5.0),
            (90, 9.0),
            (99, 10.0),
        ] {
            let mut window = WindowReadings::new(Aggregate::Percentile(p));
            for (entity, time, value) in &readings {
                window.keep(EntityId::from(*entity), *time, *value);
            }
            assert_eq!(window.aggregate(), Some(rank), "p{p}");
        }
    }
}
