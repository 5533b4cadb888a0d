//! Baseline rules, from scratch: for each reading, the exact mean of the same entity's distinct
//! readings (of the same rule shape) in the trailing window before it, and the reading's ratio
//! to it.

use std::collections::BTreeMap;

use citybrain_model::{Domain, Metric};
use fsum::FSum;

use super::{Evaluation, Match};
use crate::Time;
use crate::rule::RuleRow;

/// What a reading's history depends on: (rule id, domain, metric, window, entity).
type Key = (String, Domain, Metric, u64, String);

/// One evaluation per reading whose trailing mean is positive.
pub(super) fn evaluations(matches: &[Match<'_>]) -> Vec<Evaluation> {
    let key = |m: &Match<'_>| match &m.rule {
        RuleRow::Baseline(rule) => Some((
            (
                rule.alarm.id.clone(),
                rule.alarm.domain,
                rule.alarm.metric,
                rule.baseline_ms,
                m.reading.entity.to_string(),
            ),
            rule.clone(),
        )),
        _ => None,
    };
    let mut histories: BTreeMap<Key, Vec<(Time, f64)>> = BTreeMap::new();
    for m in matches {
        if let Some((k, _)) = key(m) {
            histories
                .entry(k)
                .or_default()
                .push((m.reading.time, m.reading.value));
        }
    }
    for history in histories.values_mut() {
        history.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.total_cmp(&b.1)));
        // Identical readings count once.
        history.dedup();
    }
    let mut out = Vec::new();
    for m in matches {
        let Some((k, rule)) = key(m) else {
            continue;
        };
        let t = m.reading.time;
        let from = t.saturating_sub(rule.baseline_ms);
        let Some(history) = histories.get(&k) else {
            continue;
        };
        let lo = history.partition_point(|(time, _)| *time < from);
        let hi = history.partition_point(|(time, _)| *time < t);
        let earlier = history.get(lo..hi).unwrap_or_default();
        if earlier.is_empty() {
            continue;
        }
        // The exact sum, rounded once.
        let sum = FSum::with_all(earlier.iter().map(|(_, value)| *value)).value();
        let mean = sum / earlier.len() as f64;
        if mean <= 0.0 {
            continue;
        }
        let ratio = m.reading.value / mean;
        out.push(Evaluation {
            rule: rule.alarm.id.clone(),
            entity: m.reading.entity.to_string(),
            time: t,
            value: ratio,
            reported: ratio,
            labels: m.labels.clone(),
            alarm: rule.alarm,
        });
    }
    out
}
