//! The `rate_of_rise` rule kind: how fast a metric changes, per minute, at each reading.
//!
//! At a reading `(t, v)` of an entity, the first reading of the same entity in the trailing
//! window `[t - W, t)` is `(t0, v0)` (the earliest; among several at `t0` the smallest
//! value). If `t - t0` is at least the rule's minimum span (and positive), the derived value
//! is `(v - v0) / ((t - t0) / 1 min)`, in the metric's unit per minute (e.g. CH4 rising by
//! 0.3 %/min), compared with the alarm side like a reading of a threshold rule. A reading
//! without such a predecessor is not evaluated.
//!
//! Built on `kinds/trailing.rs`: one frontier-driven operator keeps each entity's
//! readings of the last `W` in time order and evaluates each reading against the first of
//! them. State holds the readings of the last `W` per live entity.

use differential_dataflow::VecCollection;
use serde::{Deserialize, Serialize};

use crate::hit::HitRow;
use crate::kinds::trailing::{History, trailing_hits};
use crate::kinds::{KindHits, Sources};
use crate::matching::{Events, Matches, match_rules};
use crate::rule::{RuleRow, ThresholdRule};
use crate::{Diff, Time};

/// Milliseconds per minute, the rate's time unit.
const MINUTE_MS: f64 = 60_000.0;

/// A rate-of-rise rule as a collection row.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct RateOfRiseRule {
    /// Id, domain, metric, scope, and the levels the rate (unit per minute) is compared with.
    pub alarm: ThresholdRule,
    /// How far back the first reading may be, milliseconds.
    pub window_ms: u64,
    /// How far back the first reading must at least be, milliseconds (a rate over a few
    /// seconds is mostly noise).
    pub min_span_ms: u64,
}

impl RateOfRiseRule {
    /// The rate from `(t0, v0)` to `(t, v)`, per minute; `None` when the span is shorter than
    /// the minimum span or not positive.
    pub fn rate(&self, (t0, v0): (Time, f64), (t, v): (Time, f64)) -> Option<f64> {
        let span = t
            .checked_sub(t0)
            .filter(|span| *span > 0 && *span >= self.min_span_ms)?;
        Some((v - v0) / (span as f64 / MINUTE_MS))
    }
}

/// Computes rates of change.
pub trait RatesOfRise<'s> {
    /// One hit per reading in scope that has a first reading in its window, at the reading's
    /// time, valued with the rate per minute.
    ///
    /// ```
    /// use citybrain_operators::EntityId;
    /// use citybrain_model::{Domain, Metric, Severity};
    /// use citybrain_operators::kinds::rate_of_rise::{RateOfRiseRule, RatesOfRise};
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
    ///         .rate_of_rise_hits(rule_rows)
    ///         .inspect(|((_, hit), time, diff)| {
    ///             if *diff > 0 {
    ///                 // 0.4 % at 0 s, 0.7 % at 60 s: 0.3 %/min.
    ///                 assert_eq!(*time, 60_000);
    ///                 assert!((hit.value.0 - 0.3).abs() < 1e-9);
    ///             }
    ///         });
    ///     rules.insert(RateOfRiseRule {
    ///         alarm: ThresholdRule {
    ///             id: "ch4-rising".into(),
    ///             domain: Domain::Mine,
    ///             metric: Metric::Ch4,
    ///             scope: vec![],
    ///             direction: Direction::Above,
    ///             threshold: OrderedFloat(0.3),
    ///             clear: OrderedFloat(0.1),
    ///             hold_ms: 0,
    ///             severity: Severity::Warning,
    ///             summary: "methane rising".into(),
    ///             labels: vec![],
    ///         },
    ///         window_ms: 120_000,
    ///         min_span_ms: 30_000,
    ///     });
    ///     let s1 = (Domain::Mine, EntityId::from("s1"));
    ///     readings.update_at((s1.clone(), (Metric::Ch4, OrderedFloat(0.4))), 0, 1);
    ///     readings.update_at((s1, (Metric::Ch4, OrderedFloat(0.7))), 60_000, 1);
    /// });
    /// ```
    fn rate_of_rise_hits(
        self,
        rules: VecCollection<'s, Time, RateOfRiseRule, Diff>,
    ) -> VecCollection<'s, Time, HitRow, Diff>;
}

impl<'s> RatesOfRise<'s> for Events<'s> {
    fn rate_of_rise_hits(
        self,
        rules: VecCollection<'s, Time, RateOfRiseRule, Diff>,
    ) -> VecCollection<'s, Time, HitRow, Diff> {
        hits_of_matches(match_rules(&self, &rules.map(RuleRow::RateOfRise)))
    }
}

/// The hits of the rules' matches: each reading rated from its history's first reading
/// ([`crate::kinds::trailing`]).
fn hits_of_matches(matches: Matches<'_>) -> VecCollection<'_, Time, HitRow, Diff> {
    trailing_hits(
        matches,
        "RateOfRise",
        |row| Some(row.as_rate_of_rise()?.window_ms),
        |row, history: &History<()>, reading| {
            row.as_rate_of_rise()?.rate(history.first()?, reading)
        },
    )
}

/// The registry entry: hits of the rate-of-rise rules' matches, made where the matches are: on
/// the entity's worker, the alert's.
pub(crate) fn hits<'s>(
    sources: &Sources<'s>,
    _rules: VecCollection<'s, Time, RuleRow, Diff>,
) -> KindHits<'s> {
    KindHits::on_entity_worker(hits_of_matches(sources.matches.clone()))
}
