//! Threshold rules, from scratch: every matched reading is an evaluation of its own value.

use super::{Evaluation, Match};
use crate::rule::RuleRow;

/// One evaluation per reading matched with a threshold rule.
pub(super) fn evaluations(matches: &[Match<'_>]) -> Vec<Evaluation> {
    matches
        .iter()
        .filter_map(|m| match &m.rule {
            RuleRow::Threshold(rule) => Some(Evaluation {
                rule: rule.id.clone(),
                entity: m.reading.entity.to_string(),
                time: m.reading.time,
                value: m.reading.value,
                reported: m.reading.value,
                labels: m.labels.clone(),
                alarm: rule.clone(),
            }),
            _ => None,
        })
        .collect()
}
