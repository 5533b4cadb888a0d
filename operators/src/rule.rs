//! Compiled rules: the rows of the differential `rules` collection. Rules are data: a rule file
//! compiles to these rows, and a reload feeds the difference between old and new rows.

use citybrain_model::{Domain, Labels, Metric, Severity};
use ordered_float::OrderedFloat;
use serde::{Deserialize, Serialize};

/// Which side of the threshold is the alarm side.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// Alarm when `value >= threshold`; clear when `value < clear`.
    Above,
    /// Alarm when `value <= threshold`; clear when `value > clear`.
    Below,
}

/// One threshold rule with `for` hold time and hysteresis, as a collection row.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ThresholdRule {
    /// Unique rule id.
    pub id: String,
    /// Domain of the readings it watches.
    pub domain: Domain,
    /// Metric it watches.
    pub metric: Metric,
    /// Label selector: every `(name, value)` pair must match the entity's labels. Empty = all.
    pub scope: Labels,
    /// Alarm side.
    pub direction: Direction,
    /// Alarm threshold (inclusive).
    pub threshold: OrderedFloat<f64>,
    /// Clear threshold (exclusive); for `Above` it is `<= threshold`, for `Below` `>= threshold`.
    pub clear: OrderedFloat<f64>,
    /// How long the alarm condition must hold before firing, milliseconds.
    pub hold_ms: u64,
    /// Severity of the alert.
    pub severity: Severity,
    /// Human-readable summary carried by the alert.
    pub summary: String,
    /// Extra labels carried by the alert (sorted).
    pub labels: Labels,
}

impl ThresholdRule {
    /// True when `value` is on the alarm side of the threshold.
    pub fn triggers(&self, value: f64) -> bool {
        match self.direction {
            Direction::Above => value >= self.threshold.0,
            Direction::Below => value <= self.threshold.0,
        }
    }

    /// True when `value` has crossed back past the clear threshold.
    pub fn clears(&self, value: f64) -> bool {
        match self.direction {
            Direction::Above => value < self.clear.0,
            Direction::Below => value > self.clear.0,
        }
    }

    /// True when an entity with `labels` is in this rule's scope.
    pub fn selects(&self, labels: &Labels) -> bool {
        self.scope
            .iter()
            .all(|(k, v)| labels.iter().any(|(lk, lv)| lk == k && lv == v))
    }
}
