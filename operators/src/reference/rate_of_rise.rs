//! Rate-of-rise rules, from scratch: for each reading, the earliest reading of the same entity
//! (and rule shape) in the window before it, and the change per minute since.

use std::collections::BTreeMap;

use citybrain_model::{Domain, Metric};

use super::{Evaluation, Match};
use crate::Time;
use crate::rule::RuleRow;

/// What a reading's history depends on: (rule id, domain, metric, window, entity).
type Key = (String, Domain, Metric, u64, String);

/// One evaluation per reading with an earlier reading at least the minimum span back.
pub(super) fn evaluations(matches: &[Match<'_>]) -> Vec<Evaluation> {
    let key = |m: &Match<'_>| match &m.rule {
        RuleRow::RateOfRise(rule) => Some((
            (
                rule.alarm.id.clone(),
                rule.alarm.domain,
                rule.alarm.metric,
                rule.window_ms,
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
    }
    let mut out = Vec::new();
    for m in matches {
        let Some((k, rule)) = key(m) else {
            continue;
        };
        let t = m.reading.time;
        let from = t.saturating_sub(rule.window_ms);
        let Some(&(t0, v0)) = histories
            .get(&k)
            .and_then(|h| h.get(h.partition_point(|(time, _)| *time < from)))
        else {
            continue;
        };
        if t0 >= t || t - t0 < rule.min_span_ms {
            continue;
        }
        let rate = (m.reading.value - v0) / ((t - t0) as f64 / 60_000.0);
        out.push(Evaluation {
            rule: rule.alarm.id.clone(),
            entity: m.reading.entity.to_string(),
            time: t,
            value: rate,
            reported: rate,
            labels: m.labels.clone(),
            alarm: rule.alarm,
        });
    }
    out
}
