//! Correlation rules, from scratch: at each reading of either metric of a group, each side's
//! value is the worst over the group's sensors of that metric of each sensor's latest reading,
//! where it is still within its tolerance; both known gives a level (2 both alarm, 0 either
//! cleared, else 1).

use std::collections::BTreeMap;

use citybrain_model::{Domain, Labels, Metric};

use super::{Evaluation, Match, group_of};
use crate::Time;
use crate::kinds::correlation::CorrelationRule;
use crate::rule::{Direction, RuleRow};

/// A side of a group under a rule: (rule id, domain, metric, direction, group).
type SideKey = (String, Domain, Metric, Direction, String);

/// A reading on a side: (time, time + tolerance, sensor, value).
type SideReading = (Time, Time, String, f64);

/// Side `i` (0 or 1) of `rule`: (metric, direction, threshold, clear).
fn side(rule: &CorrelationRule, i: usize) -> (Metric, Direction, f64, f64) {
    if i == 0 {
        (
            rule.alarm.metric,
            rule.alarm.direction,
            rule.alarm.threshold.0,
            rule.alarm.clear.0,
        )
    } else {
        (
            rule.with.metric,
            rule.with.direction,
            rule.with.threshold.0,
            rule.with.clear.0,
        )
    }
}

fn worse(direction: Direction, a: f64, b: f64) -> f64 {
    match direction {
        Direction::Above => {
            if b > a {
                b
            } else {
                a
            }
        }
        Direction::Below => {
            if b < a {
                b
            } else {
                a
            }
        }
    }
}

/// The value of a side at time `x`: the worst over its sensors of each one's latest reading
/// up to `x`, where that reading is within its tolerance. A sensor's newer reading supersedes
/// its older ones even where an older one would count for longer (a rule edit shortened the
/// tolerance in between): its older value does not come back when the newer one expires.
fn side_value(readings: &[SideReading], direction: Direction, x: Time) -> Option<f64> {
    // sensor -> (latest time, until, worst value at that time)
    let mut latest: BTreeMap<&str, (Time, Time, f64)> = BTreeMap::new();
    for (time, until, sensor, value) in readings {
        if *time > x {
            continue;
        }
        let entry = latest
            .entry(sensor.as_str())
            .or_insert((*time, *until, *value));
        if *time > entry.0 {
            *entry = (*time, *until, *value);
        } else if *time == entry.0 {
            entry.2 = worse(direction, entry.2, *value);
        }
    }
    latest
        .values()
        .filter(|(_, until, _)| *until >= x)
        .map(|(_, _, v)| *v)
        .reduce(|a, b| worse(direction, a, b))
}

fn on_alarm_side(direction: Direction, threshold: f64, v: f64) -> bool {
    match direction {
        Direction::Above => v >= threshold,
        Direction::Below => v <= threshold,
    }
}

fn past_clear(direction: Direction, clear: f64, v: f64) -> bool {
    match direction {
        Direction::Above => v < clear,
        Direction::Below => v > clear,
    }
}

/// One evaluation per (rule, group, time of a reading of either side) with both sides known.
pub(super) fn evaluations(matches: &[Match<'_>]) -> Vec<Evaluation> {
    // Every matched reading as (rule, side index, group, group labels).
    let mut located = Vec::new();
    let mut sides: BTreeMap<SideKey, Vec<SideReading>> = BTreeMap::new();
    for m in matches {
        let RuleRow::Correlation(rule) = &m.rule else {
            continue;
        };
        let Some((group, labels)) = group_of(rule.group_by.as_str(), &m.reading.entity, &m.labels)
        else {
            continue;
        };
        for i in 0..2 {
            let (metric, direction, _, _) = side(rule, i);
            if metric != m.reading.metric {
                continue;
            }
            let key = (
                rule.alarm.id.clone(),
                rule.alarm.domain,
                metric,
                direction,
                group.clone(),
            );
            sides.entry(key).or_default().push((
                m.reading.time,
                m.reading.time.saturating_add(rule.tolerance_ms),
                m.reading.entity.to_string(),
                m.reading.value,
            ));
        }
        located.push((rule.clone(), group, labels, m.reading.time));
    }
    // Readings were added in time order; only the longest tolerance back can matter.
    let longest = located
        .iter()
        .map(|(rule, ..)| rule.tolerance_ms)
        .max()
        .unwrap_or(0);
    let mut out = Vec::new();
    for (rule, group, labels, x) in located {
        let mut values = [None, None];
        for (i, value) in values.iter_mut().enumerate() {
            let (metric, direction, _, _) = side(&rule, i);
            let key = (
                rule.alarm.id.clone(),
                rule.alarm.domain,
                metric,
                direction,
                group.clone(),
            );
            *value = sides.get(&key).and_then(|readings| {
                let lo = readings.partition_point(|r| r.0 < x.saturating_sub(longest));
                let hi = readings.partition_point(|r| r.0 <= x);
                side_value(readings.get(lo..hi).unwrap_or_default(), direction, x)
            });
        }
        let [Some(a), Some(b)] = values else {
            continue;
        };
        let (_, dir_a, threshold_a, clear_a) = side(&rule, 0);
        let (_, dir_b, threshold_b, clear_b) = side(&rule, 1);
        let level = if on_alarm_side(dir_a, threshold_a, a) && on_alarm_side(dir_b, threshold_b, b)
        {
            2.0
        } else if past_clear(dir_a, clear_a, a) || past_clear(dir_b, clear_b, b) {
            0.0
        } else {
            1.0
        };
        let mut alert_labels: Labels = labels;
        alert_labels.push((rule.alarm.metric.as_str().to_string(), a.to_string()));
        alert_labels.push((rule.with.metric.as_str().to_string(), b.to_string()));
        alert_labels.sort();
        let mut alarm = rule.alarm.clone();
        alarm.direction = Direction::Above;
        alarm.threshold = 2.0.into();
        alarm.clear = 1.0.into();
        out.push(Evaluation {
            rule: rule.alarm.id.clone(),
            entity: group,
            time: x,
            value: level,
            reported: a,
            labels: alert_labels,
            alarm,
        });
    }
    out
}
