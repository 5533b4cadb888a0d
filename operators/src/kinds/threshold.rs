//! The `threshold` rule kind: each reading of a metric in the rule's scope, as it is.

use std::sync::Arc;

use differential_dataflow::{AsCollection, VecCollection};
use timely::dataflow::operators::vec::Map;

use crate::hit::{HitRow, RuleHit};
use crate::kinds::{KindHits, Sources};
use crate::matching::{Events, Match, Matches, match_rules};
use crate::rule::{RuleRow, ThresholdRule};
use crate::{Diff, Time};

/// Matches events with threshold rules.
pub trait ThresholdHits<'s> {
    /// One hit per (reading, rule in scope), keyed by (rule id, sensor/device), valued with the
    /// reading, at the reading's time.
    ///
    /// ```
    /// use citybrain_operators::EntityId;
    /// use citybrain_model::{Domain, Metric, Severity};
    /// use citybrain_operators::kinds::threshold::ThresholdHits;
    /// use citybrain_operators::matching::events;
    /// use citybrain_operators::ordered_float::OrderedFloat;
    /// use citybrain_operators::rule::{Direction, ThresholdRule};
    /// use differential_dataflow::input::Input;
    ///
    /// timely::example(|scope| {
    ///     let (mut readings, reading_rows) = scope.new_collection();
    ///     let (_registry, registry_rows) = scope.new_collection();
    ///     let (mut rules, rule_rows) = scope.new_collection();
    ///     events(reading_rows, registry_rows)
    ///         .threshold_hits(rule_rows)
    ///         .inspect(|(((rule, entity), hit), time, diff)| {
    ///             if *diff > 0 {
    ///                 assert_eq!((&**rule, entity.as_str(), *time), ("ch4-alarm", "s1", 3));
    ///                 assert_eq!(hit.value.0, 1.2);
    ///             }
    ///         });
    ///     rules.insert(ThresholdRule {
    ///         id: "ch4-alarm".into(),
    ///         domain: Domain::Mine,
    ///         metric: Metric::Ch4,
    ///         scope: vec![],
    ///         direction: Direction::Above,
    ///         threshold: OrderedFloat(1.0),
    ///         clear: OrderedFloat(1.0),
    ///         hold_ms: 0,
    ///         severity: Severity::Critical,
    ///         summary: "methane".into(),
    ///         labels: vec![],
    ///     });
    ///     readings.advance_to(3);
    ///     readings.insert(((Domain::Mine, EntityId::from("s1")), (Metric::Ch4, OrderedFloat(1.2))));
    /// });
    /// ```
    fn threshold_hits(
        self,
        rules: VecCollection<'s, Time, ThresholdRule, Diff>,
    ) -> VecCollection<'s, Time, HitRow, Diff>;
}

impl<'s> ThresholdHits<'s> for Events<'s> {
    fn threshold_hits(
        self,
        rules: VecCollection<'s, Time, ThresholdRule, Diff>,
    ) -> VecCollection<'s, Time, HitRow, Diff> {
        hits_of_matches(match_rules(&self, &rules.map(RuleRow::Threshold)))
    }
}

/// One hit per match. Occurrences, not instants: the state machine reads only insertions, so
/// the retraction of each hit one tick later would be made only to be dropped.
fn hits_of_matches(matches: Matches<'_>) -> VecCollection<'_, Time, HitRow, Diff> {
    matches
        .map(|(Match { rule, event, .. }, time, diff)| {
            let key = (Arc::clone(&rule.id), event.entity);
            let hit = RuleHit::new(
                event.time,
                event.value.0,
                event.labels,
                Arc::clone(&rule.alarm),
            );
            ((key, hit), time, diff)
        })
        .as_collection()
}

/// The registry entry: hits of the threshold rules' matches, each made where its match is:
/// on its entity's worker.
pub(crate) fn hits<'s>(
    sources: &Sources<'s>,
    _rules: VecCollection<'s, Time, RuleRow, Diff>,
) -> KindHits<'s> {
    KindHits::on_entity_worker(hits_of_matches(sources.matches.clone()))
}
