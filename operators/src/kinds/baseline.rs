//! The `baseline` rule kind: each reading against the entity's own trailing mean.
//!
//! At a reading `(t, v)` of an entity, the baseline is the mean of the same entity's readings
//! in `[t - B, t)` (the reading itself excluded; identical readings count once). The derived
//! value is the ratio `v / mean`, compared with the alarm side (e.g. `below = 0.5`: the
//! reading is at most half the entity's usual level; `clear` is a ratio too). A reading
//! without earlier readings in the window, or whose baseline mean is not positive, is not
//! evaluated: ratios of means at or below zero mean nothing.
//!
//! The mean is exact: the readings' sum is kept exactly as they come and go and rounded once
//! when read, then divided by their count, so it does not depend on the order readings came in.
//!
//! Built on `kinds/trailing.rs`: one frontier-driven operator keeps each entity's
//! readings of the last `B` and their exact sum, and evaluates each reading against them.
//! State holds the readings of the last `B` per live entity.

use differential_dataflow::VecCollection;
use serde::{Deserialize, Serialize};

use crate::hit::HitRow;
use crate::kinds::trailing::{ExactSum, History, trailing_hits};
use crate::kinds::{KindHits, Sources};
use crate::matching::{Events, Matches, match_rules};
use crate::rule::{RuleRow, ThresholdRule};
use crate::{Diff, Time};

/// A baseline rule as a collection row.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct BaselineRule {
    /// Id, domain, metric, scope, and the levels the ratio `reading / mean` is compared with.
    pub alarm: ThresholdRule,
    /// Length of the trailing window the mean is taken over, milliseconds.
    pub baseline_ms: u64,
}

impl BaselineRule {
    /// The ratio of `value` to `mean`; `None` when the mean is not positive.
    pub fn ratio(value: f64, mean: f64) -> Option<f64> {
        (mean > 0.0).then(|| value / mean)
    }
}

/// Compares readings with their entity's trailing mean.
pub trait Baselines<'s> {
    /// One hit per reading in scope with a positive baseline, at the reading's time, valued
    /// with `reading / mean`.
    ///
    /// ```
    /// use citybrain_operators::EntityId;
    /// use citybrain_model::{Domain, Metric, Severity};
    /// use citybrain_operators::kinds::baseline::{BaselineRule, Baselines};
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
    ///         .baseline_hits(rule_rows)
    ///         .inspect(|((_, hit), time, diff)| {
    ///             if *diff > 0 && *time == 30 {
    ///                 // 10 against the mean of 20 and 40.
    ///                 assert_eq!(hit.value.0, 10.0 / 30.0);
    ///             }
    ///         });
    ///     rules.insert(BaselineRule {
    ///         alarm: ThresholdRule {
    ///             id: "activity-low".into(),
    ///             domain: Domain::Farm,
    ///             metric: Metric::Activity,
    ///             scope: vec![],
    ///             direction: Direction::Below,
    ///             threshold: OrderedFloat(0.5),
    ///             clear: OrderedFloat(0.7),
    ///             hold_ms: 0,
    ///             severity: Severity::Warning,
    ///             summary: "inactive".into(),
    ///             labels: vec![],
    ///         },
    ///         baseline_ms: 1_000,
    ///     });
    ///     let cow = (Domain::Farm, EntityId::from("cow-1"));
    ///     for (time, value) in [(10, 20.0), (20, 40.0), (30, 10.0)] {
    ///         readings.update_at((cow.clone(), (Metric::Activity, OrderedFloat(value))), time, 1);
    ///     }
    /// });
    /// ```
    fn baseline_hits(
        self,
        rules: VecCollection<'s, Time, BaselineRule, Diff>,
    ) -> VecCollection<'s, Time, HitRow, Diff>;
}

impl<'s> Baselines<'s> for Events<'s> {
    fn baseline_hits(
        self,
        rules: VecCollection<'s, Time, BaselineRule, Diff>,
    ) -> VecCollection<'s, Time, HitRow, Diff> {
        hits_of_matches(match_rules(&self, &rules.map(RuleRow::Baseline)))
    }
}

/// The hits of the rules' matches: each reading against its history's exact mean
/// ([`crate::kinds::trailing`]).
fn hits_of_matches(matches: Matches<'_>) -> VecCollection<'_, Time, HitRow, Diff> {
    trailing_hits(
        matches,
        "Baseline",
        |row| Some(row.as_baseline()?.baseline_ms),
        |row, history: &History<ExactSum>, (_, value)| {
            row.as_baseline()?;
            let count = history.len();
            if count == 0 {
                return None;
            }
            BaselineRule::ratio(value, history.summary().value() / count as f64)
        },
    )
}

/// The registry entry: hits of the baseline rules' matches, made where the matches are: on
/// the entity's worker, the alert's.
pub(crate) fn hits<'s>(
    sources: &Sources<'s>,
    _rules: VecCollection<'s, Time, RuleRow, Diff>,
) -> KindHits<'s> {
    KindHits::on_entity_worker(hits_of_matches(sources.matches.clone()))
}
