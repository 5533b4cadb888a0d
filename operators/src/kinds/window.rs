//! The `window` rule kind: an aggregate of a metric over tumbling or hopping event-time
//! windows, per entity or per group (face, mine, greenhouse, ...), compared with the alarm
//! side at each window's end.
//!
//! Windows are aligned to the epoch: with window length `W` and hop `H` (`H = W`: tumbling),
//! window `k` covers `[k H, k H + W)` and ends at `k H + W`. A reading at `t` belongs to every
//! window that covers `t`.
//!
//! Built with the temporal filter: each reading is placed, for each window it belongs to, at
//! that window's end time and retracted one millisecond later ([`crate::during`]); a
//! differential `reduce` per (rule, group, window end) then computes the aggregate once, at
//! the window's end, when the frontier has passed it. State holds only the readings of open
//! windows (times `W / H` for hopping windows): it grows with live keys and window lengths,
//! not with readings seen. The result is joined with the rule as of the window's end, so an
//! edited threshold applies to the windows that end after the edit.
//!
//! A window without readings has no value and is not evaluated (it neither raises nor clears;
//! silence is the absence kind's business). Identical readings (same entity, time and value)
//! count once.

use std::sync::Arc;

use citybrain_model::{Domain, Labels, Metric};
use differential_dataflow::VecCollection;
use ordered_float::OrderedFloat;
use serde::{Deserialize, Serialize};

use crate::during::{During, Span};
use crate::hit::{HitRow, RuleHit};
use crate::kinds::Sources;
use crate::matching::{Events, MatchEvents};
use crate::rule::{GroupBy, RuleRow, ThresholdRule};
use crate::{Diff, Time};

/// The aggregate of a window's values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Aggregate {
    /// Number of readings.
    Count,
    /// Sum of the values (added in ascending order).
    Sum,
    /// Mean of the values (the sum divided by the count).
    Avg,
    /// Smallest value.
    Min,
    /// Largest value.
    Max,
    /// Nearest-rank percentile `p` (1..=100): the smallest value such that at least `p`% of
    /// the values are less or equal, i.e. the `ceil(p n / 100)`-th smallest.
    Percentile(u8),
}

impl Aggregate {
    /// The name used in rule files: `count`, `sum`, `avg`, `min`, `max`, `p50`, ...
    pub fn name(self) -> String {
        match self {
            Aggregate::Count => "count".into(),
            Aggregate::Sum => "sum".into(),
            Aggregate::Avg => "avg".into(),
            Aggregate::Min => "min".into(),
            Aggregate::Max => "max".into(),
            Aggregate::Percentile(p) => format!("p{p}"),
        }
    }

    /// The aggregate of `sorted` (ascending) values; `None` when there are none.
    pub fn of(self, sorted: &[f64]) -> Option<f64> {
        let (first, last) = (sorted.first()?, sorted.last()?);
        let n = sorted.len();
        let sum = || sorted.iter().fold(0.0, |sum, v| sum + v);
        Some(match self {
            Aggregate::Count => n as f64,
            Aggregate::Sum => sum(),
            Aggregate::Avg => sum() / n as f64,
            Aggregate::Min => *first,
            Aggregate::Max => *last,
            Aggregate::Percentile(p) => {
                let rank = (usize::from(p.clamp(1, 100)) * n).div_ceil(100).max(1);
                sorted.get(rank - 1).copied().unwrap_or(*last)
            }
        })
    }
}

/// A window rule as a collection row.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct WindowRule {
    /// Id, domain, metric, scope, and the levels the aggregate is compared with.
    pub alarm: ThresholdRule,
    /// Window length, milliseconds (at least 1).
    pub window_ms: u64,
    /// Distance between window starts, milliseconds (1..=window; = window: tumbling).
    pub hop_ms: u64,
    /// Per entity, or per group label; the group is the alert entity.
    pub group_by: GroupBy,
    /// What is computed over a window.
    pub aggregate: Aggregate,
}

impl WindowRule {
    /// The ends of the windows a reading at `time` belongs to, earliest first.
    pub fn window_ends(&self, time: Time) -> impl Iterator<Item = Time> + use<> {
        let window = self.window_ms.max(1);
        let hop = self.hop_ms.max(1);
        let first = if time < window {
            0
        } else {
            (time - window) / hop + 1
        };
        let last = time / hop;
        (first..=last).map(move |k| k.saturating_mul(hop).saturating_add(window))
    }

    /// What decides which readings a window holds and how they are aggregated.
    pub fn shape(&self) -> WindowShape {
        WindowShape {
            domain: self.alarm.domain,
            metric: self.alarm.metric,
            scope: self.alarm.scope.clone(),
            window_ms: self.window_ms,
            hop_ms: self.hop_ms,
            group_by: self.group_by,
            aggregate: self.aggregate,
        }
    }
}

/// Everything but the alarm side of a window rule. Windows are kept per (rule id, shape), so
/// editing a rule's levels, hold, severity or summary keeps its open windows, while editing
/// its shape starts new ones (and drops the old ones).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct WindowShape {
    /// Domain of the readings.
    pub domain: Domain,
    /// Metric of the readings.
    pub metric: Metric,
    /// Label selectors.
    pub scope: Labels,
    /// Window length, milliseconds.
    pub window_ms: u64,
    /// Hop, milliseconds.
    pub hop_ms: u64,
    /// Grouping.
    pub group_by: GroupBy,
    /// Aggregate.
    pub aggregate: Aggregate,
}

/// One window of one group under one rule.
///
/// The group and the end come first: keys are sorted and compared all the time, and those two
/// tell most keys apart; the rule id and shape are shared by every key of the rule.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct WindowKey {
    /// The group (alert entity).
    pub group: String,
    /// End of the window (exclusive), when it is evaluated.
    pub end: Time,
    /// Rule id.
    pub rule: Arc<str>,
    /// The rule's shape when the reading arrived.
    pub shape: Arc<WindowShape>,
}

/// A reading in a window: value first, so a window's values arrive sorted.
type WindowValue = (OrderedFloat<f64>, Time, String, Arc<Labels>);

/// Aggregates events over windows.
pub trait WindowAggregates<'s> {
    /// One hit per (rule, group, window with readings), at the window's end, valued with the
    /// aggregate and carrying the group's labels.
    ///
    /// ```
    /// use citybrain_model::{Domain, Metric, Severity};
    /// use citybrain_operators::kinds::window::{Aggregate, WindowAggregates, WindowRule};
    /// use citybrain_operators::matching::events;
    /// use citybrain_operators::ordered_float::OrderedFloat;
    /// use citybrain_operators::rule::{Direction, GroupBy, ThresholdRule};
    /// use differential_dataflow::input::Input;
    ///
    /// timely::example(|scope| {
    ///     let (mut readings, reading_rows) = scope.new_collection();
    ///     let (_registry, registry_rows) = scope.new_collection();
    ///     let (mut rules, rule_rows) = scope.new_collection();
    ///     events(reading_rows, registry_rows)
    ///         .window_hits(rule_rows)
    ///         .inspect(|(((_, entity), hit), time, diff)| {
    ///             if *diff > 0 {
    ///                 // The window [0, 100) ends at 100: the mean of 0.6 and 1.0.
    ///                 assert_eq!((entity.as_str(), *time, hit.value.0), ("s1", 100, 0.8));
    ///             }
    ///         });
    ///     rules.insert(WindowRule {
    ///         alarm: ThresholdRule {
    ///             id: "ch4-avg".into(),
    ///             domain: Domain::Mine,
    ///             metric: Metric::Ch4,
    ///             scope: vec![],
    ///             direction: Direction::Above,
    ///             threshold: OrderedFloat(0.8),
    ///             clear: OrderedFloat(0.8),
    ///             hold_ms: 0,
    ///             severity: Severity::Warning,
    ///             summary: "average methane".into(),
    ///             labels: vec![],
    ///         },
    ///         window_ms: 100,
    ///         hop_ms: 100,
    ///         group_by: GroupBy::Entity,
    ///         aggregate: Aggregate::Avg,
    ///     });
    ///     let s1 = (Domain::Mine, "s1".to_string());
    ///     readings.update_at((s1.clone(), (Metric::Ch4, OrderedFloat(0.6))), 10, 1);
    ///     readings.update_at((s1, (Metric::Ch4, OrderedFloat(1.0))), 60, 1);
    /// });
    /// ```
    fn window_hits(
        self,
        rules: VecCollection<'s, Time, WindowRule, Diff>,
    ) -> VecCollection<'s, Time, HitRow, Diff>;
}

impl<'s> WindowAggregates<'s> for Events<'s> {
    fn window_hits(
        self,
        rules: VecCollection<'s, Time, WindowRule, Diff>,
    ) -> VecCollection<'s, Time, HitRow, Diff> {
        // The id and shape are built once per rule and shared by its windows' keys.
        let windowed = rules
            .clone()
            .map(|rule| {
                let id: Arc<str> = Arc::from(rule.alarm.id.as_str());
                let shape = Arc::new(rule.shape());
                ((rule.alarm.domain, rule.alarm.metric), (rule, id, shape))
            })
            .match_events(&self, |(rule, _, _), event| {
                rule.alarm.selects(&event.labels)
            })
            .flat_map(|(rule, event)| {
                let (rule, id, shape) = &*rule;
                let Some((group, labels)) = rule.group_by.group(&event.entity, &event.labels)
                else {
                    return Vec::new();
                };
                let value: WindowValue = (event.value, event.time, event.entity, labels);
                rule.window_ends(event.time)
                    .map(|end| {
                        let key = WindowKey {
                            group: group.clone(),
                            end,
                            rule: Arc::clone(id),
                            shape: Arc::clone(shape),
                        };
                        (key, value.clone())
                    })
                    .collect()
            })
            .during(|(key, (_, time, _, _))| Span {
                at: *time,
                from: key.end,
                until: key.end.saturating_add(1),
            });

        let results = windowed.reduce(|key, input, output| {
            let present = input.iter().filter(|(_, diff)| *diff > 0);
            // Values arrive sorted by value (the first field).
            let values: Vec<f64> = present.clone().map(|((value, ..), _)| value.0).collect();
            let labels = present.map(|((_, _, _, labels), _)| labels).min();
            if let (Some(result), Some(labels)) = (key.shape.aggregate.of(&values), labels) {
                output.push(((OrderedFloat(result), labels.clone()), 1));
            }
        });

        let current = rules.map(|rule| {
            let id: Arc<str> = Arc::from(rule.alarm.id.as_str());
            ((id, Arc::new(rule.shape())), Arc::new(rule.alarm))
        });
        results
            .map(|(key, (result, labels))| {
                ((key.rule, key.shape), (key.group, key.end, result, labels))
            })
            .join_map(current, |_, (group, end, result, labels), alarm| {
                (
                    (alarm.id.clone(), group.clone()),
                    RuleHit::new(*end, result.0, Arc::clone(labels), Arc::clone(alarm)),
                )
            })
    }
}

/// The registry entry: the window rows of `rules`.
pub(crate) fn hits<'s>(
    sources: &Sources<'s>,
    rules: VecCollection<'s, Time, RuleRow, Diff>,
) -> VecCollection<'s, Time, HitRow, Diff> {
    sources
        .events
        .clone()
        .window_hits(rules.flat_map(|row| row.as_window().cloned()))
}
