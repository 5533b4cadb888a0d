//! Matching readings with threshold rules: rules are a collection (rules are data), joined with
//! enriched readings on (domain, metric) and filtered by each rule's label scope.

use citybrain_model::Labels;
use differential_dataflow::VecCollection;
use differential_dataflow::collection::vec;
use ordered_float::OrderedFloat;
use serde::{Deserialize, Serialize};

use crate::enrich::EnrichedRow;
use crate::rule::ThresholdRule;
use crate::{Diff, Time};

/// A reading that one rule applies to.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct RuleHit {
    /// The reading's value.
    pub value: OrderedFloat<f64>,
    /// The entity's labels.
    pub labels: Labels,
    /// The rule as of the reading's time (so a changed threshold applies from its change on).
    pub rule: ThresholdRule,
}

/// A rule hit keyed by the alert it belongs to: (rule id, entity).
pub type HitRow = ((String, String), RuleHit);

/// Joins enriched readings with rules.
pub trait MatchRules<'s> {
    /// One output row per (reading, rule in scope).
    fn match_rules(
        self,
        rules: VecCollection<'s, Time, ThresholdRule, Diff>,
    ) -> VecCollection<'s, Time, HitRow, Diff>;
}

impl<'s> MatchRules<'s> for vec::Collection<'s, Time, EnrichedRow, Diff> {
    fn match_rules(
        self,
        rules: VecCollection<'s, Time, ThresholdRule, Diff>,
    ) -> VecCollection<'s, Time, HitRow, Diff> {
        let rules = rules.map(|rule| ((rule.domain, rule.metric), rule));
        self.join(rules)
            .flat_map(|(_, ((entity, value, labels), rule))| {
                rule.selects(&labels).then(|| {
                    (
                        (rule.id.clone(), entity),
                        RuleHit {
                            value,
                            labels,
                            rule,
                        },
                    )
                })
            })
    }
}
