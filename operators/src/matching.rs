//! Matching readings with rules: every rule kind looks its rules up for each enriched reading
//! ([`crate::lookup`]), keeping the readings in each rule's label scope. The rules are few and
//! every worker holds all of them, so readings stay on the worker that enriched them.

use std::sync::Arc;

use citybrain_model::{Domain, Metric};
use differential_dataflow::{AsCollection, ExchangeData, VecCollection};
use timely::dataflow::StreamVec;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::vec::{Broadcast, Partition};

pub use crate::enrich::Events;
use crate::enrich::{Enrich, EnrichedRow, Event};
use crate::lookup::{Emit, LookupAsOf};
use crate::rule::RuleRow;
use crate::{Diff, ReadingRow, RegistryRow, Time};

/// The shared enriched readings: readings (each `+1` at its event time) with reference data.
pub fn events<'s>(
    readings: VecCollection<'s, Time, ReadingRow, Diff>,
    registry: VecCollection<'s, Time, RegistryRow, Diff>,
) -> Events<'s> {
    readings.enrich(registry)
}

/// The events each of `kinds` reads: an event reaches a kind only when a rule of that kind
/// watches its (domain, metric) at the event's time ([`RuleRow::watched`]), so a kind with no
/// rule for a metric never buffers its readings. One lookup for every kind: each kind's own
/// matching then sees only its share. The result has one stream per entry of `kinds`, in order.
pub fn route_by_kind<'s>(
    events: &Events<'s>,
    rules: &VecCollection<'s, Time, RuleRow, Diff>,
    kinds: Vec<&'static str>,
) -> Vec<Events<'s>> {
    let parts = kinds.len() as u64;
    let table = rules
        .clone()
        .flat_map(move |row| {
            let kind = kinds.iter().position(|name| *name == row.kind());
            row.watched()
                .into_iter()
                .filter_map(move |watched| Some((watched, kind?)))
        })
        .inner
        .broadcast();
    events
        .clone()
        .lookup_as_of(
            table,
            Pipeline,
            Pipeline,
            |(watched, _): &EnrichedRow| watched,
            Emit::Once,
            |row, _, rows, out| {
                // The table is consolidated: one row per kind, counting its rules.
                for (kind, count) in rows {
                    if *count > 0 {
                        out.push((*kind, row.clone()));
                    }
                }
            },
        )
        .partition(parts, |((kind, row), time, diff)| {
            (kind as u64, (row, time, diff))
        })
}

/// Matches rules keyed by the (domain, metric) they watch with the events.
pub trait MatchEvents<'s, R> {
    /// One `(rule, event)` per event of the rule's (domain, metric) for which `selects` holds
    /// (usually: the entity is in the rule's scope), with the rules as of the event's time.
    /// The output is an instant per match (see [`crate::instant`]). The rule is shared by its
    /// matches (one allocation per rule, not per match).
    ///
    /// ```
    /// use citybrain_model::{Domain, Metric};
    /// use citybrain_operators::matching::{MatchEvents, events};
    /// use citybrain_operators::ordered_float::OrderedFloat;
    /// use differential_dataflow::input::Input;
    ///
    /// timely::example(|scope| {
    ///     let (mut readings, reading_rows) = scope.new_collection();
    ///     let (_registry, registry_rows) = scope.new_collection();
    ///     let (mut rules, rule_rows) = scope.new_collection();
    ///     let events = events(reading_rows, registry_rows);
    ///     // A "rule" here is any data keyed by what it watches; keep readings above its level.
    ///     rule_rows
    ///         .match_events(&events, |level: &OrderedFloat<f64>, event| event.value >= *level)
    ///         .inspect(|((level, event), time, diff)| {
    ///             assert_eq!((level.0, event.entity.as_str()), (1.0, "s2"));
    ///             assert_eq!((*time, *diff), if *diff > 0 { (4, 1) } else { (5, -1) });
    ///         });
    ///     rules.insert(((Domain::Mine, Metric::Ch4), OrderedFloat(1.0)));
    ///     readings.advance_to(4);
    ///     readings.insert(((Domain::Mine, "s1".to_string()), (Metric::Ch4, OrderedFloat(0.5))));
    ///     readings.insert(((Domain::Mine, "s2".to_string()), (Metric::Ch4, OrderedFloat(1.5))));
    /// });
    /// ```
    fn match_events<F>(
        self,
        events: &Events<'s>,
        selects: F,
    ) -> VecCollection<'s, Time, (Arc<R>, Event), Diff>
    where
        F: Fn(&R, &Event) -> bool + 'static;

    /// [`MatchEvents::match_events`] as occurrences: each match `+1` at its event's time, never
    /// retracted, for operators that keep what they need themselves.
    fn match_occurrences<F>(self, events: &Events<'s>, selects: F) -> Matches<'s, R>
    where
        F: Fn(&R, &Event) -> bool + 'static;
}

/// Matches as occurrences: `((rule, event), time, diff)`.
pub type Matches<'s, R> = StreamVec<'s, Time, ((Arc<R>, Event), Time, Diff)>;

impl<'s, R: ExchangeData + Sync> MatchEvents<'s, R>
    for VecCollection<'s, Time, ((Domain, Metric), R), Diff>
{
    fn match_events<F>(
        self,
        events: &Events<'s>,
        selects: F,
    ) -> VecCollection<'s, Time, (Arc<R>, Event), Diff>
    where
        F: Fn(&R, &Event) -> bool + 'static,
    {
        matches(self, events, selects, Emit::Instant).as_collection()
    }

    fn match_occurrences<F>(self, events: &Events<'s>, selects: F) -> Matches<'s, R>
    where
        F: Fn(&R, &Event) -> bool + 'static,
    {
        matches(self, events, selects, Emit::Once)
    }
}

/// Looks each event's rules up (every worker holds all rules), keeping those `selects`.
fn matches<'s, R, F>(
    rules: VecCollection<'s, Time, ((Domain, Metric), R), Diff>,
    events: &Events<'s>,
    selects: F,
    emit: Emit,
) -> Matches<'s, R>
where
    R: ExchangeData + Sync,
    F: Fn(&R, &Event) -> bool + 'static,
{
    let rules = rules
        .map(|(watched, rule)| (watched, Arc::new(rule)))
        .inner
        .broadcast();
    // The rules an event matches; kept to reuse its allocation.
    let mut selected: Vec<Arc<R>> = Vec::new();
    events.clone().lookup_as_of(
        rules,
        Pipeline,
        Pipeline,
        |(watched, _): &EnrichedRow| watched,
        emit,
        move |(_, event), _, rules, out| {
            selected.extend(
                rules
                    .iter()
                    .filter(|(rule, count)| *count > 0 && selects(rule, &event))
                    .map(|(rule, _)| Arc::clone(rule)),
            );
            let last = selected.pop();
            for rule in selected.drain(..) {
                out.push((rule, Event::clone(&event)));
            }
            // The last match takes the event itself when no other kind still holds it.
            if let Some(rule) = last {
                out.push((rule, Arc::unwrap_or_clone(event)));
            }
        },
    )
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use citybrain_model::{Domain, Metric};
    use differential_dataflow::input::Input;
    use ordered_float::OrderedFloat;
    use proptest::prelude::*;
    use timely::dataflow::operators::Inspect;

    use super::{events, route_by_kind};
    use crate::kinds::window::{Aggregate, WindowRule};
    use crate::rule::{Direction, GroupBy, RuleRow};
    use crate::tests::alarm;

    const KINDS: [&str; 2] = ["threshold", "window"];
    const METRICS: [Metric; 2] = [Metric::Ch4, Metric::Co];

    /// A rule of `KINDS[kind]` on `METRICS[metric]`.
    fn rule(id: usize, kind: u8, metric: u8) -> RuleRow {
        let mut side = alarm(&format!("r{id}"), Direction::Above, 1.0, 0.5, 0, &[]);
        side.metric = METRICS[metric as usize];
        match kind {
            0 => RuleRow::Threshold(side),
            _ => RuleRow::Window(WindowRule {
                alarm: side,
                window_ms: 10,
                hop_ms: 10,
                group_by: GroupBy::Entity,
                aggregate: Aggregate::Avg,
            }),
        }
    }

    proptest! {
        /// Each kind gets a reading exactly once when, at the reading's time, at least one
        /// rule of that kind watches its metric, and never otherwise; rules come and go.
        #[test]
        fn each_kind_gets_the_readings_its_rules_watch_at_their_time(
            readings in proptest::collection::vec((0u8..2, 0u64..30), 0..30),
            rules in proptest::collection::vec((0u8..2, 0u8..2, 0u64..30, 0u64..15), 0..6),
        ) {
            // (kind, metric, from, life): present from `from`, removed `life` later (0: never).
            let present = |kind: u8, metric: u8, time: u64| {
                rules.iter().any(|&(k, m, from, life)| {
                    k == kind && m == metric && from <= time && (life == 0 || time < from + life)
                })
            };
            let mut expected: Vec<(usize, Metric, u64)> = Vec::new();
            for &(metric, time) in &readings {
                for kind in 0..2u8 {
                    if present(kind, metric, time) {
                        expected.push((kind as usize, METRICS[metric as usize], time));
                    }
                }
            }
            expected.sort();

            let seen = Arc::new(Mutex::new(Vec::new()));
            let sink = Arc::clone(&seen);
            let (readings_in, rules_in) = (readings.clone(), rules.clone());
            timely::example(move |scope| {
                let (mut reading_input, reading_rows) = scope.new_collection();
                let (_registry_input, registry_rows) = scope.new_collection();
                let (mut rule_input, rule_rows) = scope.new_collection();
                let routed = route_by_kind(&events(reading_rows, registry_rows), &rule_rows, KINDS.to_vec());
                for (kind, stream) in routed.into_iter().enumerate() {
                    let sink = Arc::clone(&sink);
                    stream.inspect(move |(((_, metric), event), time, diff)| {
                        assert_eq!((*time, *diff), (event.time, 1));
                        sink.lock().expect("one worker").push((kind, *metric, *time));
                    });
                }
                for &(metric, time) in &readings_in {
                    let row = ((Domain::Mine, "s1".to_string()), (METRICS[metric as usize], OrderedFloat(1.0)));
                    reading_input.update_at(row, time, 1);
                }
                for (id, &(kind, metric, from, life)) in rules_in.iter().enumerate() {
                    rule_input.update_at(rule(id, kind, metric), from, 1);
                    if life > 0 {
                        rule_input.update_at(rule(id, kind, metric), from + life, -1);
                    }
                }
            });
            let mut got = std::mem::take(&mut *seen.lock().expect("one worker"));
            got.sort();
            prop_assert_eq!(got, expected);
        }
    }
}
