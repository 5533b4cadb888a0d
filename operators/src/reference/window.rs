//! Window rules, from scratch: readings bucketed into every epoch-aligned window
//! `[k hop, k hop + window)` that covers them, each bucket aggregated at its end with the rule
//! as of that end.

use std::collections::BTreeMap;

use citybrain_model::{Domain, Labels, Metric};
use xsum::XsumExt;

use super::{Evaluation, Match, Timeline, group_of};
use crate::Time;
use crate::kinds::window::Aggregate;
use crate::rule::RuleRow;

/// What the windows of a rule depend on: (id, domain, metric, scope, window, hop, group by,
/// aggregate).
type Shape = (
    String,
    Domain,
    Metric,
    Labels,
    u64,
    u64,
    &'static str,
    Aggregate,
);

fn shape(rule: &crate::kinds::window::WindowRule) -> Shape {
    (
        rule.alarm.id.clone(),
        rule.alarm.domain,
        rule.alarm.metric,
        rule.alarm.scope.clone(),
        rule.window_ms,
        rule.hop_ms,
        rule.group_by.as_str(),
        rule.aggregate,
    )
}

/// The readings of a window and the labels of its group, by (shape, group, end).
type Windows = BTreeMap<(Shape, String, Time), (Vec<f64>, Vec<Labels>)>;

/// The aggregate of `values`, from scratch.
fn aggregate(aggregate: Aggregate, values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    // The exact sum, rounded once: all at once here, where the operator adds each reading as
    // it comes.
    let sum = values.xsum();
    let (Some(first), Some(last)) = (values.first().copied(), values.last().copied()) else {
        return f64::NAN;
    };
    match aggregate {
        Aggregate::Count => n as f64,
        Aggregate::Sum => sum,
        Aggregate::Avg => sum / n as f64,
        Aggregate::Min => first,
        Aggregate::Max => last,
        Aggregate::Percentile(p) => {
            // The smallest rank r with r / n >= p / 100 (p taken within 1 ..= 100).
            let p = usize::from(p.clamp(1, 100));
            let mut rank = 1;
            while rank < n && rank * 100 < p * n {
                rank += 1;
            }
            values.get(rank - 1).copied().unwrap_or(last)
        }
    }
}

/// One evaluation per (rule, group, window with readings), at the window's end.
pub(super) fn evaluations(matches: &[Match<'_>], timeline: &Timeline) -> Vec<Evaluation> {
    // (shape, group, end) -> (values, labels of the group)
    let mut windows: Windows = BTreeMap::new();
    for m in matches {
        let RuleRow::Window(rule) = &m.rule else {
            continue;
        };
        let Some((group, labels)) = group_of(rule.group_by.as_str(), &m.reading.entity, &m.labels)
        else {
            continue;
        };
        let t = m.reading.time;
        let hop = rule.hop_ms.max(1);
        let mut k = t / hop;
        loop {
            let start = k * hop;
            let end = start.saturating_add(rule.window_ms);
            if end <= t {
                break;
            }
            let bucket = windows
                .entry((shape(rule), group.clone(), end))
                .or_default();
            bucket.0.push(m.reading.value);
            bucket.1.push(labels.clone());
            if k == 0 {
                break;
            }
            k -= 1;
        }
    }
    let mut out = Vec::new();
    for ((shape_of, group, end), (mut values, labels)) in windows {
        let alarm = timeline.at(end).into_iter().find_map(|row| match row {
            RuleRow::Window(rule) if shape(&rule) == shape_of => Some(rule.alarm),
            _ => None,
        });
        let (Some(alarm), Some(labels)) = (alarm, labels.into_iter().min()) else {
            continue;
        };
        let value = aggregate(shape_of.7, &mut values);
        out.push(Evaluation {
            rule: alarm.id.clone(),
            entity: group,
            time: end,
            value,
            reported: value,
            labels,
            alarm,
        });
    }
    out
}
