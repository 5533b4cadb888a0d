//! The `correlation` rule kind: two metrics of the same group (e.g. one working face) on
//! their alarm sides together, within a time tolerance: an as-of join.
//!
//! The state of a side (metric) of a group at time `t`: for each of the group's sensors of
//! that metric, its latest reading in `[t - tolerance, t]` (the worst value if several share
//! that time); of those, the worst (the largest for an `above` side, the smallest for a
//! `below` side), so a sensor reading low does not hide another reading high. A side without
//! readings in the tolerance is unknown.
//!
//! The rule is evaluated at each reading of either metric in the group, when both sides are
//! known. Its derived value is a level: `2` when both sides are on their alarm side, `0` when
//! either side is past its clear level, else `1` (between the levels: no change). The alarm
//! side the state machine sees is "level >= 2, clear below 1", so each side keeps its own
//! hysteresis and `for` applies to "both conditions held on every evaluation". Alerts report
//! the first metric's side value and carry both side values as labels named after the
//! metrics (e.g. `{ch4}` and `{air_velocity}` in summaries). The alert entity is the group.
//!
//! Built with the temporal filter: each reading is present in its side's history during
//! `[t, t + tolerance + 1)`; a differential `reduce` keeps each side's state; each reading
//! instant joins the state of both sides. State holds the readings of the last `tolerance` per
//! live group.

use std::sync::Arc;

use citybrain_model::{Domain, Labels, Metric};
use differential_dataflow::VecCollection;
use ordered_float::OrderedFloat;
use serde::{Deserialize, Serialize};

use crate::during::{During, Span};
use crate::hit::{HitRow, RuleHit};
use crate::kinds::Sources;
use crate::matching::{Events, Match, Matches, as_instants, match_rules};
use crate::rule::{Direction, GroupBy, RuleRow, ThresholdRule};
use crate::{Diff, Time};

/// One side of a correlation: a metric on one side of a level, with its own clear level.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Condition {
    /// The metric.
    pub metric: Metric,
    /// Alarm side.
    pub direction: Direction,
    /// Alarm threshold (inclusive).
    pub threshold: OrderedFloat<f64>,
    /// Clear threshold (exclusive).
    pub clear: OrderedFloat<f64>,
}

impl Condition {
    /// True when `value` is on the alarm side.
    pub fn triggers(&self, value: f64) -> bool {
        match self.direction {
            Direction::Above => value >= self.threshold.0,
            Direction::Below => value <= self.threshold.0,
        }
    }

    /// True when `value` is past the clear level.
    pub fn clears(&self, value: f64) -> bool {
        match self.direction {
            Direction::Above => value < self.clear.0,
            Direction::Below => value > self.clear.0,
        }
    }

    /// The worse of two values: the larger for an `above` side, the smaller for `below`.
    pub fn worse(&self, a: f64, b: f64) -> f64 {
        match self.direction {
            Direction::Above => a.max(b),
            Direction::Below => a.min(b),
        }
    }
}

/// A correlation rule as a collection row.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct CorrelationRule {
    /// Id, domain, scope, hold, severity, summary, labels; its metric, direction, threshold
    /// and clear are the first condition.
    pub alarm: ThresholdRule,
    /// The second condition (another metric of the same domain).
    pub with: Condition,
    /// The group both metrics must share; the alert entity.
    pub group_by: GroupBy,
    /// How far back a side's latest reading may be, milliseconds.
    pub tolerance_ms: u64,
}

impl CorrelationRule {
    /// The first condition (from the alarm side).
    pub fn first(&self) -> Condition {
        Condition {
            metric: self.alarm.metric,
            direction: self.alarm.direction,
            threshold: self.alarm.threshold,
            clear: self.alarm.clear,
        }
    }

    /// Both conditions, first and second.
    pub fn conditions(&self) -> [Condition; 2] {
        [self.first(), self.with.clone()]
    }

    /// The level of the two sides' values: 2 both alarm, 0 either cleared, 1 in between.
    pub fn level(&self, first: f64, second: f64) -> f64 {
        let [a, b] = self.conditions();
        if a.triggers(first) && b.triggers(second) {
            2.0
        } else if a.clears(first) || b.clears(second) {
            0.0
        } else {
            1.0
        }
    }

    /// The alarm side the state machine applies to levels: fire at 2, resolve below 1.
    pub fn level_rule(&self) -> ThresholdRule {
        ThresholdRule {
            direction: Direction::Above,
            threshold: OrderedFloat(2.0),
            clear: OrderedFloat(1.0),
            ..self.alarm.clone()
        }
    }

    /// The key of one side's state in `group`.
    pub fn side_key(&self, side: &Condition, group: &str) -> SideKey {
        SideKey {
            rule: self.alarm.id.clone(),
            domain: self.alarm.domain,
            metric: side.metric,
            direction: side.direction,
            group: group.to_string(),
        }
    }

    /// The alert labels: the group's, plus each side's value under its metric's name.
    pub fn labels(&self, group_labels: &Labels, first: f64, second: f64) -> Labels {
        let mut labels = group_labels.clone();
        labels.push((self.alarm.metric.as_str().to_string(), format!("{first}")));
        labels.push((self.with.metric.as_str().to_string(), format!("{second}")));
        labels.sort();
        labels
    }
}

/// One side of one group under one rule.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct SideKey {
    /// Rule id.
    pub rule: String,
    /// Domain.
    pub domain: Domain,
    /// The side's metric.
    pub metric: Metric,
    /// The side's direction (what "worst" means).
    pub direction: Direction,
    /// The group.
    pub group: String,
}

/// A reading in a side's history: (sensor, time, value), so each sensor's readings arrive
/// together and in time order.
type SideReading = (String, Time, OrderedFloat<f64>);

/// A pending evaluation: the rule as of the reading, the group's labels, the reading's time.
type Evaluation = (CorrelationRule, Arc<Labels>, Time);

/// Joins two metrics of a group as of each reading.
pub trait Correlations<'s> {
    /// One hit per (rule, group, time of a reading of either metric) when both sides are
    /// known, valued with the level.
    ///
    /// ```
    /// use citybrain_model::{Domain, EntityInfo, Metric, Severity};
    /// use citybrain_operators::kinds::correlation::{Condition, CorrelationRule, Correlations};
    /// use citybrain_operators::matching::events;
    /// use citybrain_operators::ordered_float::OrderedFloat;
    /// use citybrain_operators::rule::{Direction, GroupBy, ThresholdRule};
    /// use differential_dataflow::input::Input;
    ///
    /// timely::example(|scope| {
    ///     let (mut readings, reading_rows) = scope.new_collection();
    ///     let (mut registry, registry_rows) = scope.new_collection();
    ///     let (mut rules, rule_rows) = scope.new_collection();
    ///     events(reading_rows, registry_rows)
    ///         .correlation_hits(rule_rows)
    ///         .inspect(|(((_, face), hit), time, diff)| {
    ///             if *diff > 0 {
    ///                 // At 5 s the air velocity reading meets the methane reading of 2 s.
    ///                 assert_eq!((face.as_str(), *time, hit.value.0), ("m/f1", 5_000, 2.0));
    ///             }
    ///         });
    ///     rules.insert(CorrelationRule {
    ///         alarm: ThresholdRule {
    ///             id: "ventilation-failure".into(),
    ///             domain: Domain::Mine,
    ///             metric: Metric::Ch4,
    ///             scope: vec![],
    ///             direction: Direction::Above,
    ///             threshold: OrderedFloat(0.8),
    ///             clear: OrderedFloat(0.8),
    ///             hold_ms: 0,
    ///             severity: Severity::Critical,
    ///             summary: "ventilation failure with methane on {face}".into(),
    ///             labels: vec![],
    ///         },
    ///         with: Condition {
    ///             metric: Metric::AirVelocity,
    ///             direction: Direction::Below,
    ///             threshold: OrderedFloat(0.25),
    ///             clear: OrderedFloat(0.25),
    ///         },
    ///         group_by: GroupBy::Face,
    ///         tolerance_ms: 10_000,
    ///     });
    ///     for sensor in ["ch4-1", "velocity-1"] {
    ///         let info = EntityInfo::new([("mine", Some("m".into())), ("face", Some("m/f1".into()))], 1000);
    ///         registry.insert(((Domain::Mine, sensor.to_string()), info));
    ///     }
    ///     let reading = |sensor: &str, metric, value| {
    ///         ((Domain::Mine, sensor.to_string()), (metric, OrderedFloat(value)))
    ///     };
    ///     readings.update_at(reading("ch4-1", Metric::Ch4, 0.9), 2_000, 1);
    ///     readings.update_at(reading("velocity-1", Metric::AirVelocity, 0.2), 5_000, 1);
    /// });
    /// ```
    fn correlation_hits(
        self,
        rules: VecCollection<'s, Time, CorrelationRule, Diff>,
    ) -> VecCollection<'s, Time, HitRow, Diff>;
}

impl<'s> Correlations<'s> for Events<'s> {
    fn correlation_hits(
        self,
        rules: VecCollection<'s, Time, CorrelationRule, Diff>,
    ) -> VecCollection<'s, Time, HitRow, Diff> {
        hits_of_matches(match_rules(&self, &rules.map(RuleRow::Correlation)))
    }
}

/// The hits of the rules' matches.
fn hits_of_matches(matches: Matches<'_>) -> VecCollection<'_, Time, HitRow, Diff> {
    // Each rule watches two metrics (as `RuleRow::watched` says): a reading is on the side of
    // its metric, or on both when they watch the same one.
    let matched = as_instants(matches).flat_map(
        |Match {
             rule,
             metric,
             event,
         }| {
            let mut sides = Vec::new();
            if let Some(rule) = rule.row.as_correlation()
                && let Some((group, labels)) = rule.group_by.group(&event.entity, &event.labels)
            {
                for side in rule.conditions() {
                    if side.metric == metric {
                        let (group, labels) = (group.clone(), labels.clone());
                        sides.push((rule.clone(), side, group, labels, event.clone()));
                    }
                }
            }
            sides
        },
    );

    let states = matched
        .clone()
        .map(|(rule, side, group, _, event)| {
            let reading: SideReading = (event.entity, event.time, event.value);
            ((rule.side_key(&side, &group), rule.tolerance_ms), reading)
        })
        .during(|((_, tolerance), (_, time, _))| Span {
            at: *time,
            from: *time,
            until: time.saturating_add(*tolerance).saturating_add(1),
        })
        .map(|((key, _), reading)| (key, reading))
        .reduce(|key, input, output| {
            let side = Condition {
                metric: key.metric,
                direction: key.direction,
                threshold: OrderedFloat(0.0),
                clear: OrderedFloat(0.0),
            };
            // Per sensor (readings sorted by sensor, then time): its latest time's worst
            // value; then the worst over the sensors.
            let mut worst: Option<f64> = None;
            let mut latest: Option<(&String, Time, f64)> = None;
            for ((sensor, time, value), _) in input.iter().filter(|(_, diff)| *diff > 0) {
                latest = match latest {
                    Some((s, t, v)) if s == sensor && t == *time => {
                        Some((s, t, side.worse(v, value.0)))
                    }
                    Some((s, _, _)) if s == sensor => Some((sensor, *time, value.0)),
                    Some((_, _, v)) => {
                        worst = Some(worst.map_or(v, |w| side.worse(w, v)));
                        Some((sensor, *time, value.0))
                    }
                    None => Some((sensor, *time, value.0)),
                };
            }
            if let Some((_, _, v)) = latest {
                worst = Some(worst.map_or(v, |w| side.worse(w, v)));
            }
            if let Some(worst) = worst {
                output.push((OrderedFloat(worst), 1));
            }
        })
        .arrange_by_key();

    let evaluations = matched.map(|(rule, _, group, labels, event)| {
        let key = rule.side_key(&rule.first(), &group);
        let evaluation: Evaluation = (rule, labels, event.time);
        (key, evaluation)
    });
    evaluations
        .join_core(states.clone(), |key, evaluation, first| {
            let (rule, _, _) = evaluation;
            let first: &OrderedFloat<f64> = first;
            let second_key = rule.side_key(&rule.with, &key.group);
            Some((second_key, (evaluation.clone(), *first)))
        })
        .join_core(states, |key, ((rule, labels, time), first), second| {
            let second: &OrderedFloat<f64> = second;
            let level = rule.level(first.0, second.0);
            let hit = RuleHit {
                time: *time,
                value: OrderedFloat(level),
                reported: *first,
                labels: Arc::new(rule.labels(labels, first.0, second.0)),
                rule: Arc::new(rule.level_rule()),
            };
            Some(((rule.alarm.id.as_str().into(), key.group.clone()), hit))
        })
}

/// The registry entry: hits of the correlation rules' matches.
pub(crate) fn hits<'s>(
    sources: &Sources<'s>,
    _rules: VecCollection<'s, Time, RuleRow, Diff>,
) -> VecCollection<'s, Time, HitRow, Diff> {
    hits_of_matches(sources.matches.clone())
}
