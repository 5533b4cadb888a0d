//! One number per group of KPI points (an order statistic, a distinct count), kept by a
//! frontier-driven operator that holds each group's live rows and nothing else.
//!
//! differential's `reduce` (and `distinct`) would arrange the points, sorting every update and
//! keeping its history until compaction, and arrange their output again; for KPIs such as
//! "max CH4 per face" over the latest readings or "mines reporting" over a minute of readings,
//! every reading changes a group, and those arrangements were a fifth of the workers' time end
//! to end. Here each group is a [`GroupState`] updated in place (an ordered multiset of values,
//! a count per tag), and its value is recomputed only at the times its rows change, once the
//! input frontier has passed them: the output equals `reduce` with the same function at every
//! time.

use std::collections::BTreeMap;
use std::collections::btree_map::Entry;

use differential_dataflow::{AsCollection, VecCollection};
use ordered_float::OrderedFloat;
use rustc_hash::FxHashMap;
use timely::dataflow::channels::pact::Exchange;

use crate::earliest::Earliest;
use crate::kpi::Point;
use crate::pending::Pending;
use crate::woken_while_holding::WokenWhileHolding;
use crate::{Diff, Time};

/// A group's value as a row of the output: (group, value).
pub type GroupValue = (String, OrderedFloat<f64>);

/// What a group keeps of its rows (the points' `(tag, value)`), and the number they give.
pub trait GroupState: 'static {
    /// Adds `diff` (negative: removes) copies of the row `(tag, value)`.
    fn update(&mut self, tag: String, value: OrderedFloat<f64>, diff: Diff);
    /// The group's number, `None` when its rows give none (e.g. it has no rows).
    fn value(&self) -> Option<f64>;
    /// Whether every row has left.
    fn is_empty(&self) -> bool;
}

/// An order statistic of a group's values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Statistic {
    /// The least value.
    Min,
    /// The greatest value.
    Max,
    /// The nearest-rank percentile (50: the median): the smallest value with at least this
    /// share of the values at or below it.
    Percentile(u8),
}

/// A group's values as an ordered multiset (tags are not read), summarised by a [`Statistic`].
pub struct OrderedValues {
    statistic: Statistic,
    counts: BTreeMap<OrderedFloat<f64>, Diff>,
}

impl OrderedValues {
    /// No values yet.
    pub fn new(statistic: Statistic) -> Self {
        OrderedValues {
            statistic,
            counts: BTreeMap::new(),
        }
    }
}

impl GroupState for OrderedValues {
    fn update(&mut self, _tag: String, value: OrderedFloat<f64>, diff: Diff) {
        match self.counts.entry(value) {
            Entry::Occupied(mut entry) => {
                *entry.get_mut() += diff;
                if *entry.get() == 0 {
                    entry.remove();
                }
            }
            Entry::Vacant(entry) => {
                if diff != 0 {
                    entry.insert(diff);
                }
            }
        }
    }

    fn value(&self) -> Option<f64> {
        let mut present = self.counts.iter().filter(|(_, n)| **n > 0);
        match self.statistic {
            Statistic::Min => present.next().map(|(v, _)| v.0),
            Statistic::Max => present.next_back().map(|(v, _)| v.0),
            Statistic::Percentile(p) => {
                let total: Diff = present.clone().map(|(_, n)| *n).sum();
                let rank = ((f64::from(p) / 100.0) * total as f64).ceil() as Diff;
                let rank = rank.clamp(1, total.max(1));
                let mut seen = 0;
                present
                    .find(|(_, n)| {
                        seen += **n;
                        seen >= rank
                    })
                    .map(|(v, _)| v.0)
            }
        }
    }

    fn is_empty(&self) -> bool {
        self.counts.is_empty()
    }
}

/// The number of distinct tags among a group's rows (values are not read).
#[derive(Default)]
pub struct DistinctTags {
    counts: FxHashMap<String, Diff>,
    /// Tags whose count is positive.
    present: usize,
}

impl GroupState for DistinctTags {
    fn update(&mut self, tag: String, _value: OrderedFloat<f64>, diff: Diff) {
        let count = match self.counts.get_mut(tag.as_str()) {
            Some(count) => count,
            None => self.counts.entry(tag.clone()).or_insert(0),
        };
        let before = *count > 0;
        *count += diff;
        let after = *count > 0;
        let left = *count == 0;
        match (before, after) {
            (false, true) => self.present += 1,
            (true, false) => self.present -= 1,
            _ => {}
        }
        if left {
            self.counts.remove(tag.as_str());
        }
    }

    fn value(&self) -> Option<f64> {
        (self.present > 0).then_some(self.present as f64)
    }

    fn is_empty(&self) -> bool {
        self.counts.is_empty()
    }
}

/// What one group holds: its state, the value last emitted for it, and the last time its rows
/// changed (so a time lists each changed group once).
struct Group<S> {
    state: S,
    value: Option<OrderedFloat<f64>>,
    touched: Option<Time>,
}

/// Aggregates KPI points per group.
pub trait AggregateByGroup<'s> {
    /// A collection holding, at every time, `(group, value)` for each group whose rows (the
    /// points' `(tag, value)` with their counts as of that time), kept in a state made by
    /// `new_group`, give a value. Equal to `reduce` over the points keyed by group with the
    /// state's function; groups are exchanged by their name, so each lives on one worker.
    ///
    /// ```
    /// use citybrain_operators::group_aggregate::{AggregateByGroup, OrderedValues, Statistic};
    /// use citybrain_operators::ordered_float::OrderedFloat;
    /// use differential_dataflow::input::Input;
    ///
    /// timely::example(|scope| {
    ///     let (mut points, rows) = scope.new_collection();
    ///     // The greatest value of each group.
    ///     let max = || OrderedValues::new(Statistic::Max);
    ///     rows.aggregate_by_group(max).inspect(|((group, value), time, diff)| {
    ///         assert_eq!(group, "f1");
    ///         // 0.4 at 1; 0.9 joins at 2; 0.9 leaves at 3.
    ///         let expected = match (*time, *diff) {
    ///             (1, 1) | (2, -1) | (3, 1) => 0.4,
    ///             _ => 0.9,
    ///         };
    ///         assert_eq!(value.0, expected);
    ///     });
    ///     let point = |value: f64| ("f1".to_string(), (String::new(), OrderedFloat(value)));
    ///     points.advance_to(1);
    ///     points.insert(point(0.4));
    ///     points.advance_to(2);
    ///     points.insert(point(0.9));
    ///     points.advance_to(3);
    ///     points.remove(point(0.9));
    /// });
    /// ```
    fn aggregate_by_group<S, F>(self, new_group: F) -> VecCollection<'s, Time, GroupValue, Diff>
    where
        S: GroupState,
        F: Fn() -> S + 'static;
}

impl<'s> AggregateByGroup<'s> for VecCollection<'s, Time, Point, Diff> {
    fn aggregate_by_group<S, F>(self, new_group: F) -> VecCollection<'s, Time, GroupValue, Diff>
    where
        S: GroupState,
        F: Fn() -> S + 'static,
    {
        let route =
            Exchange::new(|((group, _), _, _): &(Point, Time, Diff)| crate::entity_route(group));
        self.inner
            .unary_frontier_while_holding(route, "AggregateByGroup", |_capability| {
                let mut pending: Pending<Point> = Pending::default();
                let mut ready = Vec::new();
                let mut earliest = Earliest::default();
                let mut groups: FxHashMap<String, Group<S>> = FxHashMap::default();
                let mut touched: Vec<String> = Vec::new();
                move |(input, frontier), output| {
                    input.for_each(|capability, data| {
                        if let Some(time) = pending.append(data) {
                            earliest.hold(&capability, time);
                        }
                    });
                    let Some(capability) = earliest.capability() else {
                        return;
                    };
                    pending.take_ready(|time| !frontier.less_equal(time), &mut ready);
                    // Every ready time's changes in one message.
                    let mut changes: Vec<(GroupValue, Time, Diff)> = Vec::new();
                    let mut points = ready.drain(..).peekable();
                    while let Some(time) = points.peek().map(|(_, time, _)| *time) {
                        while let Some(((name, (tag, value)), _, diff)) =
                            points.next_if(|(_, at, _)| *at == time)
                        {
                            let group = match groups.get_mut(name.as_str()) {
                                Some(group) => group,
                                None => groups.entry(name.clone()).or_insert_with(|| Group {
                                    state: new_group(),
                                    value: None,
                                    touched: None,
                                }),
                            };
                            group.state.update(tag, value, diff);
                            if group.touched != Some(time) {
                                group.touched = Some(time);
                                touched.push(name);
                            }
                        }
                        for name in touched.drain(..) {
                            let Some(group) = groups.get_mut(name.as_str()) else {
                                continue;
                            };
                            let value = group.state.value().map(OrderedFloat);
                            let old = std::mem::replace(&mut group.value, value);
                            if group.state.is_empty() && value.is_none() {
                                groups.remove(name.as_str());
                            }
                            if value == old {
                                continue;
                            }
                            match (old, value) {
                                (Some(old), Some(new)) => {
                                    changes.push(((name.clone(), old), time, -1));
                                    changes.push(((name, new), time, 1));
                                }
                                (Some(old), None) => changes.push(((name, old), time, -1)),
                                (None, Some(new)) => changes.push(((name, new), time, 1)),
                                (None, None) => {}
                            }
                        }
                    }
                    drop(points);
                    if !changes.is_empty() {
                        output.session(capability).give_container(&mut changes);
                    }
                    earliest.advance(pending.earliest());
                }
            })
            .as_collection()
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::tests::{one_per_message, output_of};

    /// (group, tag, value, time, diff).
    type Update = (u8, u8, u8, Time, Diff);

    /// Each group's value at every time an update has.
    type Values = BTreeMap<Time, BTreeMap<String, f64>>;

    /// What a test aggregates.
    #[derive(Clone, Copy, Debug)]
    enum Kind {
        Ordered(Statistic),
        Distinct,
    }

    const KINDS: [Kind; 5] = [
        Kind::Ordered(Statistic::Min),
        Kind::Ordered(Statistic::Max),
        Kind::Ordered(Statistic::Percentile(50)),
        Kind::Ordered(Statistic::Percentile(90)),
        Kind::Distinct,
    ];

    fn point(group: u8, tag: u8, value: u8) -> Point {
        (
            format!("g{group}"),
            (format!("t{tag}"), OrderedFloat(f64::from(value))),
        )
    }

    /// From scratch: a group's rows as (tag, value) -> count, read as the kind says.
    fn summarise(kind: Kind, rows: &BTreeMap<(u8, u8), Diff>) -> Option<f64> {
        match kind {
            Kind::Distinct => {
                let mut per_tag: BTreeMap<u8, Diff> = BTreeMap::new();
                for ((tag, _), n) in rows {
                    *per_tag.entry(*tag).or_insert(0) += n;
                }
                let present = per_tag.values().filter(|n| **n > 0).count();
                (present > 0).then_some(present as f64)
            }
            Kind::Ordered(statistic) => {
                let mut per_value: BTreeMap<u8, Diff> = BTreeMap::new();
                for ((_, value), n) in rows {
                    *per_value.entry(*value).or_insert(0) += n;
                }
                let mut sorted: Vec<f64> = Vec::new();
                for (value, n) in per_value {
                    for _ in 0..n.max(0) {
                        sorted.push(f64::from(value));
                    }
                }
                let last = sorted.len().checked_sub(1)?;
                Some(match statistic {
                    Statistic::Min => sorted[0],
                    Statistic::Max => sorted[last],
                    Statistic::Percentile(p) => {
                        let rank = (f64::from(p) / 100.0 * sorted.len() as f64).ceil() as usize;
                        sorted[rank.clamp(1, sorted.len()) - 1]
                    }
                })
            }
        }
    }

    fn reference(kind: Kind, updates: &[Update]) -> Values {
        let times: std::collections::BTreeSet<Time> = updates.iter().map(|u| u.3).collect();
        times
            .into_iter()
            .map(|at| {
                let mut groups: BTreeMap<u8, BTreeMap<(u8, u8), Diff>> = BTreeMap::new();
                for &(group, tag, value, time, diff) in updates {
                    if time <= at {
                        *groups
                            .entry(group)
                            .or_default()
                            .entry((tag, value))
                            .or_insert(0) += diff;
                    }
                }
                let values = groups
                    .into_iter()
                    .filter_map(|(group, rows)| {
                        summarise(kind, &rows).map(|v| (format!("g{group}"), v))
                    })
                    .collect();
                (at, values)
            })
            .collect()
    }

    /// The operator's output accumulated up to every time an update has, on `workers`.
    fn run(kind: Kind, updates: Vec<Update>, workers: usize) -> Values {
        let times: Vec<Time> = updates.iter().map(|u| u.3).collect();
        // Worker 0 feeds every update, latest first.
        let feed = move |index: usize, _| {
            let mine = updates.iter().rev().filter(|_| index == 0);
            mine.map(|&(group, tag, value, time, diff)| (point(group, tag, value), time, diff))
                .collect()
        };
        let output = output_of(workers, feed, move |points| {
            let points = one_per_message(points);
            match kind {
                Kind::Ordered(statistic) => {
                    points.aggregate_by_group(move || OrderedValues::new(statistic))
                }
                Kind::Distinct => points.aggregate_by_group(DistinctTags::default),
            }
        });
        times
            .into_iter()
            .map(|at| {
                let mut values: BTreeMap<GroupValue, Diff> = BTreeMap::new();
                for (row, time, diff) in &output {
                    if *time <= at {
                        *values.entry(row.clone()).or_insert(0) += diff;
                    }
                }
                let values = values
                    .into_iter()
                    .filter(|(_, n)| *n != 0)
                    .map(|((name, v), n)| {
                        assert_eq!(n, 1, "one value per group and time");
                        (name, v.0)
                    })
                    .collect();
                (at, values)
            })
            .collect()
    }

    /// Inserts, and retractions of earlier inserts at later times, as a window makes.
    fn updates_strategy() -> impl Strategy<Value = Vec<Update>> {
        proptest::collection::vec(
            (
                0u8..3,
                0u8..3,
                0u8..5,
                0u64..20,
                proptest::option::of(0u64..10),
            ),
            0..40,
        )
        .prop_map(|rows| {
            let mut updates = Vec::new();
            for (group, tag, value, time, retract_after) in rows {
                updates.push((group, tag, value, time, 1));
                if let Some(after) = retract_after {
                    updates.push((group, tag, value, time + after, -1));
                }
            }
            updates
        })
    }

    /// A point that comes before an earlier one (both ahead of the frontier) waits for it: a
    /// group's value at a time counts every point up to that time, whatever came first.
    #[test]
    fn a_time_waits_for_the_frontier_to_pass_it() {
        use differential_dataflow::input::Input;
        use timely::dataflow::operators::{Inspect, Probe};

        let mut seen = timely::execute_directly(move |worker| {
            let seen = std::rc::Rc::new(std::cell::RefCell::new(Vec::new()));
            let sink = std::rc::Rc::clone(&seen);
            let (mut input, probe) = worker.dataflow::<Time, _, _>(|scope| {
                let (input, points) = scope.new_collection::<Point, Diff>();
                let probe = points
                    .aggregate_by_group(|| OrderedValues::new(Statistic::Max))
                    .inner
                    .inspect(move |update| sink.borrow_mut().push(update.clone()))
                    .probe()
                    .0;
                (input, probe)
            });
            input.update_at(point(1, 1, 5), 5, 1);
            input.flush();
            for _ in 0..10 {
                worker.step();
            }
            input.update_at(point(1, 2, 9), 3, 1);
            input.advance_to(10);
            input.flush();
            while probe.less_than(&10) {
                worker.step();
            }
            seen.take()
        });
        seen.sort();
        let max = |value: f64| ("g1".to_string(), OrderedFloat(value));
        // At 3 the group's max is 9; at 5 it stays 9: no change at 5.
        assert_eq!(seen, vec![(max(9.0), 3, 1)]);
    }

    proptest! {
        #[test]
        fn random_inserts_and_retractions_match_the_reference(updates in updates_strategy()) {
            for kind in KINDS {
                prop_assert_eq!(run(kind, updates.clone(), 1), reference(kind, &updates), "{:?}", kind);
            }
        }

        #[test]
        fn two_workers_match_the_reference(updates in updates_strategy()) {
            for kind in KINDS {
                prop_assert_eq!(run(kind, updates.clone(), 2), reference(kind, &updates), "{:?}", kind);
            }
        }
    }

    #[test]
    fn a_group_emptied_and_refilled_emits_its_value_again() {
        // g0: 3 (tag t0) at 1, gone at 2, 4 (tag t1) and 2 (tag t1) at 3.
        let updates = vec![
            (0, 0, 3, 1, 1),
            (0, 0, 3, 2, -1),
            (0, 1, 4, 3, 1),
            (0, 1, 2, 3, 1),
        ];
        let g0 = |v: f64| BTreeMap::from([("g0".to_string(), v)]);
        let max: Values = BTreeMap::from([(1, g0(3.0)), (2, BTreeMap::new()), (3, g0(4.0))]);
        let distinct: Values = BTreeMap::from([(1, g0(1.0)), (2, BTreeMap::new()), (3, g0(1.0))]);
        let max_kind = Kind::Ordered(Statistic::Max);
        assert_eq!(run(max_kind, updates.clone(), 1), max);
        assert_eq!(reference(max_kind, &updates), max);
        assert_eq!(run(Kind::Distinct, updates.clone(), 1), distinct);
        assert_eq!(reference(Kind::Distinct, &updates), distinct);
    }
}
