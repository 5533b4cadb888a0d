//! Matching readings with rules: one lookup of each enriched reading's rules ([`crate::lookup`])
//! serves every rule kind. A reading meets the rules that watch its (domain, metric) at its
//! time and whose label scope holds its entity; each match goes to its rule's kind. The rules
//! are few and every worker holds all of them, so readings stay on the worker that enriched
//! them.
//!
//! One lookup for all kinds, not one per kind: a reading pays for one table probe however many
//! kinds exist, and a kind with no rule for a metric never sees its readings.

use std::sync::Arc;

use citybrain_model::Metric;
use differential_dataflow::VecCollection;
use serde::{Deserialize, Serialize};
use timely::dataflow::StreamVec;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::vec::{Broadcast, Map};

pub use crate::enrich::Events;
use crate::enrich::{Enrich, EnrichedRow, Event};
use crate::lookup::LookupAsOf;
use crate::rule::{RuleRow, ThresholdRule};
use crate::{Diff, ReadingRow, RegistryRow, Time};

/// The shared enriched readings: readings (each `+1` at its event time) with reference data.
pub fn events<'s>(
    readings: VecCollection<'s, Time, ReadingRow, Diff>,
    registry: VecCollection<'s, Time, RegistryRow, Diff>,
) -> Events<'s> {
    readings.enrich(registry)
}

/// A rule as matched: its row, and its alarm side and id built once per rule row so that every
/// hit of the rule shares them ([`crate::hit::RuleHit::rule`], [`crate::hit::HitRow`]'s key).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct MatchedRule {
    /// The rule.
    pub row: RuleRow,
    /// `row`'s alarm side ([`RuleRow::alarm`]), shared.
    pub alarm: Arc<ThresholdRule>,
    /// `row`'s id, shared: a hit's key counts it instead of copying the id.
    pub id: Arc<str>,
}

impl From<RuleRow> for MatchedRule {
    fn from(row: RuleRow) -> Self {
        let alarm = Arc::new(row.alarm().clone());
        let id = Arc::from(alarm.id.as_str());
        MatchedRule { row, alarm, id }
    }
}

/// A reading that met a rule: the rule (shared by its matches), the metric the reading is of
/// (a correlation rule watches two), and the reading.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Match {
    /// The rule met.
    pub rule: Arc<MatchedRule>,
    /// The reading's metric.
    pub metric: Metric,
    /// The reading with its entity's labels.
    pub event: Event,
}

impl Match {
    /// `event` of `metric` met `rule`.
    pub fn new(rule: Arc<MatchedRule>, metric: Metric, event: Event) -> Self {
        Match {
            rule,
            metric,
            event,
        }
    }
}

/// Matches as occurrences: each `+1` at its reading's time, never retracted (the state machine
/// and the frontier-driven kinds keep what they need themselves).
pub type Matches<'s> = StreamVec<'s, Time, (Match, Time, Diff)>;

/// Each of `kinds`' matches, one stream per entry of `kinds`, in order: a reading meets a rule
/// when, at the reading's time, the rule watches the reading's (domain, metric)
/// ([`RuleRow::watched`]) and its label scope selects the reading's entity. A rule whose kind
/// is not in `kinds` meets nothing.
///
/// ```
/// use citybrain_operators::EntityId;
/// use citybrain_model::{Domain, Metric, Severity};
/// use citybrain_operators::matching::{events, match_by_kind};
/// use citybrain_operators::ordered_float::OrderedFloat;
/// use citybrain_operators::rule::{Direction, RuleRow, ThresholdRule};
/// use differential_dataflow::input::Input;
/// use timely::dataflow::operators::Inspect;
///
/// timely::example(|scope| {
///     let (mut readings, reading_rows) = scope.new_collection();
///     let (_registry, registry_rows) = scope.new_collection();
///     let (mut rules, rule_rows) = scope.new_collection();
///     let events = events(reading_rows, registry_rows);
///     let threshold = match_by_kind(&events, &rule_rows, vec!["threshold"]).remove(0);
///     threshold.inspect(|(matched, time, diff)| {
///         assert_eq!(matched.rule.alarm.id, "ch4-alarm");
///         assert_eq!((matched.event.entity.as_str(), *time, *diff), ("s1", 4, 1));
///     });
///     rules.insert(RuleRow::Threshold(ThresholdRule {
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
///     }));
///     readings.advance_to(4);
///     readings.insert(((Domain::Mine, EntityId::from("s1")), (Metric::Ch4, OrderedFloat(0.5))));
///     // Another metric: no rule watches it.
///     readings.insert(((Domain::Mine, EntityId::from("s1")), (Metric::Co, OrderedFloat(9.0))));
/// });
/// ```
pub fn match_by_kind<'s>(
    events: &Events<'s>,
    rules: &VecCollection<'s, Time, RuleRow, Diff>,
    kinds: Vec<&'static str>,
) -> Vec<Matches<'s>> {
    let parts = kinds.len();
    match_into_parts(events, rules, parts, move |row| {
        kinds.iter().position(|name| *name == row.kind())
    })
}

/// The matches of `rules`, all of one kind: what a kind's operator used on its own (outside
/// [`crate::rule_alerts`]) starts from.
pub fn match_rules<'s>(
    events: &Events<'s>,
    rules: &VecCollection<'s, Time, RuleRow, Diff>,
) -> Matches<'s> {
    match_into_parts(events, rules, 1, |_| Some(0)).remove(0)
}

/// [`match_by_kind`] with each rule's part given by `part_of` (`None`: the rule meets nothing).
fn match_into_parts<'s>(
    events: &Events<'s>,
    rules: &VecCollection<'s, Time, RuleRow, Diff>,
    parts: usize,
    part_of: impl Fn(&RuleRow) -> Option<usize> + 'static,
) -> Vec<Matches<'s>> {
    // Every worker builds its own `Arc` of each rule after the broadcast: a rule's count is
    // touched at every match, and one count shared by two cores' workers bounced its cache
    // line between them (2 workers spent 3.8x one worker's time in this lookup).
    let table = rules
        .inner
        .clone()
        .broadcast()
        .flat_map(move |(row, time, diff)| {
            let part = part_of(&row);
            let watched = row.watched();
            let rule = Arc::new(MatchedRule::from(row));
            watched.into_iter().filter_map(move |watched| {
                Some(((watched, (part?, Arc::clone(&rule))), time, diff))
            })
        });
    // The rules a reading meets; kept to reuse its allocation.
    let mut met: Vec<(usize, Arc<MatchedRule>)> = Vec::new();
    events.clone().lookup_as_of_into_parts(
        table,
        Pipeline,
        Pipeline,
        |(watched, _): &EnrichedRow| watched,
        parts,
        move |((_, metric), event), rules, out| {
            met.extend(
                rules
                    .iter()
                    .filter(|((_, rule), count)| *count > 0 && rule.alarm.selects(&event.labels))
                    .map(|((part, rule), _)| (*part, Arc::clone(rule))),
            );
            let last = met.pop();
            for (part, rule) in met.drain(..) {
                out.push(part, Match::new(rule, metric, Event::clone(&event)));
            }
            // The last match takes the event itself when no other reader still holds it.
            if let Some((part, rule)) = last {
                out.push(part, Match::new(rule, metric, Arc::unwrap_or_clone(event)));
            }
        },
    )
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use citybrain_model::{Domain, EntityInfo, Metric};
    use differential_dataflow::input::Input;
    use ordered_float::OrderedFloat;
    use proptest::prelude::*;
    use timely::dataflow::operators::Inspect;

    use super::{events, match_by_kind};
    use crate::kinds::window::{Aggregate, WindowRule};
    use crate::rule::{Direction, GroupBy, RuleRow};
    use crate::tests::alarm;

    const KINDS: [&str; 2] = ["threshold", "window"];
    const METRICS: [Metric; 2] = [Metric::Ch4, Metric::Co];
    const SENSORS: [&str; 2] = ["s1", "s2"];

    /// A rule of `KINDS[kind]` on `METRICS[metric]`, scoped to face `f1` or unscoped.
    fn rule(id: usize, kind: u8, metric: u8, scoped: bool) -> RuleRow {
        let scope: &[(&str, &str)] = if scoped { &[("face", "f1")] } else { &[] };
        let mut side = alarm(&format!("r{id}"), Direction::Above, 1.0, 0.5, 0, scope);
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
        /// Each kind gets a reading once per rule of that kind that watches its metric at the
        /// reading's time and whose scope selects the reading's sensor, and never otherwise;
        /// rules come and go.
        #[test]
        fn each_kind_gets_the_readings_its_rules_watch_at_their_time(
            readings in proptest::collection::vec((0u8..2, 0u64..30, 0usize..2), 0..30),
            rules in proptest::collection::vec((0u8..2, 0u8..2, 0u64..30, 0u64..15, proptest::bool::ANY), 0..6),
        ) {
            // (kind, metric, from, life, scoped): present from `from`, removed `life` later (0:
            // never); a scoped rule selects sensor s1 (face f1) only, s2 is not registered.
            let present = |id: usize, time: u64| {
                let (_, _, from, life, _) = rules[id];
                from <= time && (life == 0 || time < from + life)
            };
            let mut expected: Vec<(usize, Metric, u64, String, String)> = Vec::new();
            for &(metric, time, sensor) in &readings {
                for (id, &(kind, rule_metric, _, _, scoped)) in rules.iter().enumerate() {
                    if rule_metric == metric && present(id, time) && (!scoped || sensor == 0) {
                        let seen = (kind as usize, METRICS[metric as usize], time, format!("r{id}"), SENSORS[sensor].to_string());
                        expected.push(seen);
                    }
                }
            }
            expected.sort();

            let seen = Arc::new(Mutex::new(Vec::new()));
            let sink = Arc::clone(&seen);
            let (readings_in, rules_in) = (readings.clone(), rules.clone());
            timely::example(move |scope| {
                let (mut reading_input, reading_rows) = scope.new_collection();
                let s1 = EntityInfo::new([("face", Some("f1".to_string()))], 1_000);
                let (_registry_input, registry_rows) =
                    scope.new_collection_from(vec![((Domain::Mine, "s1".into()), s1)]);
                let (mut rule_input, rule_rows) = scope.new_collection();
                let matched = match_by_kind(&events(reading_rows, registry_rows), &rule_rows, KINDS.to_vec());
                for (kind, stream) in matched.into_iter().enumerate() {
                    let sink = Arc::clone(&sink);
                    stream.inspect(move |(matched, time, diff)| {
                        assert_eq!((*time, *diff), (matched.event.time, 1));
                        let (rule, sensor) = (matched.rule.alarm.id.clone(), matched.event.entity.to_string());
                        let seen = (kind, matched.metric, *time, rule, sensor);
                        sink.lock().expect("one worker").push(seen);
                    });
                }
                for &(metric, time, sensor) in &readings_in {
                    let row = ((Domain::Mine, SENSORS[sensor].into()), (METRICS[metric as usize], OrderedFloat(1.0)));
                    reading_input.update_at(row, time, 1);
                }
                for (id, &(kind, metric, from, life, scoped)) in rules_in.iter().enumerate() {
                    rule_input.update_at(rule(id, kind, metric, scoped), from, 1);
                    if life > 0 {
                        rule_input.update_at(rule(id, kind, metric, scoped), from + life, -1);
                    }
                }
            });
            let mut got = std::mem::take(&mut *seen.lock().expect("one worker"));
            got.sort();
            prop_assert_eq!(got, expected);
        }
    }
}
