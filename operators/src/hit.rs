//! What every rule kind produces and the `for`/hysteresis state machine consumes: a derived
//! value per (rule, alert entity, event time), with the rule's alarm side as of that time.

use std::sync::Arc;

use citybrain_model::Labels;
use ordered_float::OrderedFloat;
use serde::{Deserialize, Serialize};

use crate::rule::ThresholdRule;
use crate::{EntityId, Time};

/// One evaluation of a rule for one alert entity.
///
/// Fields are ordered so that evaluations of one key at one time are processed in order of
/// their value.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct RuleHit {
    /// The event time evaluated (a reading's time, or a window's end).
    pub time: Time,
    /// The derived value compared with the alarm side's threshold and clear levels.
    pub value: OrderedFloat<f64>,
    /// The value an alert transition reports; equal to `value` except where the compared
    /// value is a code (correlation rules report their first metric).
    pub reported: OrderedFloat<f64>,
    /// The alert entity's labels (and, for some kinds, values such as `ch4` for summaries).
    /// Shared: every hit of an entity carries the same labels, and a hit is cloned on its way
    /// through the dataflow.
    pub labels: Arc<Labels>,
    /// The alarm side as of `time` (so a changed threshold applies from its change on); shared
    /// by every hit of the rule for the same reason.
    pub rule: Arc<ThresholdRule>,
}

impl RuleHit {
    /// An evaluation that reports the value it compares.
    pub fn new(
        time: Time,
        value: f64,
        labels: impl Into<Arc<Labels>>,
        rule: impl Into<Arc<ThresholdRule>>,
    ) -> Self {
        RuleHit {
            time,
            value: OrderedFloat(value),
            reported: OrderedFloat(value),
            labels: labels.into(),
            rule: rule.into(),
        }
    }
}

/// The alert a hit belongs to: (rule id, alert entity). The id is shared by the rule's hits
/// ([`crate::matching::MatchedRule::id`]): a hit counts it instead of copying it.
pub type AlertKey = (Arc<str>, EntityId);

/// A rule hit keyed by the alert it belongs to.
pub type HitRow = (AlertKey, RuleHit);
