//! Matching readings with rules: enriched reading instants are arranged once by
//! (domain, metric, shard) and every rule kind joins its rules, copied to every shard, with
//! that one arrangement, keeping the readings in each rule's label scope.

use std::sync::Arc;

use citybrain_model::{Domain, Metric};
use differential_dataflow::operators::arrange::{Arranged, TraceAgent};
use differential_dataflow::trace::implementations::ValSpine;
use differential_dataflow::{ExchangeData, VecCollection};

use crate::enrich::{Enrich, Event, EventKey, SHARDS};
use crate::instant::IntoInstants;
use crate::{Diff, ReadingRow, RegistryRow, Time};

/// Reading instants with their entity's labels, arranged by (domain, metric, shard): built
/// once, shared by every rule kind.
pub type Events<'s> = Arranged<'s, TraceAgent<ValSpine<EventKey, Event, Time, Diff>>>;

/// The shared event arrangement: readings (each `+1` at its event time) as instants, enriched
/// with reference data.
pub fn events<'s>(
    readings: VecCollection<'s, Time, ReadingRow, Diff>,
    registry: VecCollection<'s, Time, RegistryRow, Diff>,
) -> Events<'s> {
    readings.into_instants().enrich(registry).arrange_by_key()
}

/// Joins rules keyed by the (domain, metric) they watch with the events.
pub trait MatchEvents<'s, R> {
    /// One `(rule, event)` per event of the rule's (domain, metric) for which `selects` holds
    /// (usually: the entity is in the rule's scope). The output is an instant per match. The
    /// rule is shared by its matches (one allocation per rule, not per match).
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
    ///             if *diff > 0 {
    ///                 assert_eq!((level.0, event.entity.as_str(), *time), (1.0, "s2", 4));
    ///             }
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
}

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
        self.flat_map(|((domain, metric), rule)| {
            let rule = Arc::new(rule);
            (0..SHARDS).map(move |shard| ((domain, metric, shard), Arc::clone(&rule)))
        })
        .join_core(events.clone(), move |_, rule: &Arc<R>, event: &Event| {
            selects(rule, event).then(|| (Arc::clone(rule), event.clone()))
        })
    }
}
