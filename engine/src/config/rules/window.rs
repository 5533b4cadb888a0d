//! The `window` rule kind: an aggregate over tumbling or hopping event-time windows, per
//! entity or per location group, compared with a level at each window's end.
//!
//! ```toml
//! [[rule]]
//! id = "ch4-avg-face"         # required, unique across all rule files
//! kind = "window"
//! domain = "mine"             # mine | farm
//! metric = "ch4"              # a metric of the domain
//! scope = "all"               # or label selectors, as for threshold rules
//! window = "2m"               # required: window length
//! hop = "30s"                 # optional: distance between window starts, default = window (tumbling)
//! group_by = "face"           # entity (default) | mine | face (mine) | farm | greenhouse | herd | animal (farm)
//! aggregate = "avg"           # required: count | sum | avg | min | max | p50 | p90 | p99 (any pNN)
//! above = 0.8                 # exactly one of above / below, compared with the aggregate
//! clear = 0.7                 # optional, as for threshold rules
//! for = "0s"                  # optional: consecutive windows on the alarm side for this long
//! severity = "warning"
//! summary = "Average methane over 2 min at {value}% on {face}"
//! labels = { team = "ventilation" }
//! ```
//!
//! Windows are aligned to the epoch (`[k hop, k hop + window)`) and evaluated at their end;
//! the alert entity is the group (the face id for `group_by = "face"`), and alerts carry the
//! group's labels (a face's mine and face). Identical readings (same entity, time and value,
//! e.g. redelivered) count once; `sum` and `avg` are exact sums rounded once, so a window's
//! value does not depend on the order its readings arrive in. An open window keeps 16 bytes
//! per distinct reading (to tell a repeated one) and its aggregate so far: memory grows with
//! the readings per window (rate x window length x groups), not with readings seen.

use std::time::Duration;

use citybrain_model::Metric;
use citybrain_operators::kinds::window::{Aggregate, WindowRule};
use citybrain_operators::rule::{Direction, GroupBy, RuleRow};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_spanned::Spanned;
use toml::de::DeValue;

use super::common::{
    Alarm, DurationValue, Fields, PLAIN_LEVELS, duration_words, hold_words, millis, side_words,
    with_unit,
};
use crate::config::de::{SpannedPairs, WordOrPairs, deserialize_reporting};
use crate::config::diagnostic::{FileCx, one_of_hint};
use crate::config::duration::{self, DurationString};

/// The most windows one reading may belong to (`window / hop`): each is a copy in memory.
const MAX_WINDOWS_PER_READING: u64 = 1000;

/// The aggregates by name (besides any `pNN`).
const AGGREGATES: [&str; 8] = ["count", "sum", "avg", "min", "max", "p50", "p90", "p99"];

/// A `[[rule]]` table of kind `window` as written; everything optional so that [`compile`]
/// reports every problem.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(
    rename = "WindowRule",
    extend("required" = ["id", "kind", "domain", "metric", "window", "aggregate"]),
    description = "A `window` rule: an aggregate over tumbling or hopping event-time windows, per entity or per location group, compared with a level at each window's end."
)]
pub(super) struct RawWindow {
    /// Rule id: required, unique across all rule files.
    #[serde(default)]
    id: Option<String>,
    /// Rule kind.
    #[serde(default)]
    #[allow(dead_code)]
    #[schemars(with = "String", extend("const" = "window"))]
    kind: Option<String>,
    /// The domain whose events the rule evaluates: `mine` or `farm`.
    #[serde(default)]
    #[schemars(with = "String", extend("enum" = ["mine", "farm"]))]
    domain: Option<Spanned<String>>,
    /// A metric of the domain (e.g. `ch4`, `co`, `humidity`).
    #[serde(default)]
    #[schemars(with = "String")]
    metric: Option<Spanned<String>>,
    /// `"all"` (the default) or label selectors such as `{ mine = "jungar-1" }`.
    #[serde(default)]
    #[schemars(with = "WordOrPairs")]
    scope: Option<Spanned<WordOrPairs>>,
    /// Required: the window length.
    #[serde(default)]
    #[schemars(with = "DurationString")]
    window: Option<Spanned<DurationValue>>,
    /// Distance between window starts. Default: the window (tumbling windows).
    #[serde(default)]
    #[schemars(with = "DurationString")]
    hop: Option<Spanned<DurationValue>>,
    /// `entity` (the default), or a location: `mine`, `face` (mine); `farm`, `greenhouse`, `herd`,
    /// `animal` (farm).
    #[serde(default)]
    #[schemars(with = "String")]
    group_by: Option<Spanned<String>>,
    /// Required: `count`, `sum`, `avg`, `min`, `max` or a percentile `pNN` (e.g. `p90`).
    #[serde(default)]
    #[schemars(with = "String")]
    aggregate: Option<Spanned<String>>,
    /// Alarm when the aggregate is at or above this. Exactly one of `above` / `below`.
    #[serde(default)]
    #[schemars(with = "f64")]
    above: Option<Spanned<f64>>,
    /// Alarm when the aggregate is at or below this. Exactly one of `above` / `below`.
    #[serde(default)]
    #[schemars(with = "f64")]
    below: Option<Spanned<f64>>,
    /// Resolve once back past this level (hysteresis); `above`: at most `above`, `below`: at least
    /// `below`. Default: the alarm level.
    #[serde(default)]
    #[schemars(with = "f64")]
    clear: Option<Spanned<f64>>,
    /// Consecutive windows on the alarm side for this long before firing. Default: `"0s"`.
    #[serde(default, rename = "for", with = "duration::option")]
    #[schemars(with = "DurationString")]
    hold: Option<Duration>,
    /// `info`, `warning` or `critical`. Default: `"warning"`.
    #[serde(default)]
    #[schemars(with = "String", extend("enum" = ["info", "warning", "critical"]))]
    severity: Option<Spanned<String>>,
    /// Alert summary; `{label}` and `{value}` placeholders are filled in. Default: generated.
    #[serde(default)]
    summary: Option<String>,
    /// Extra alert labels, name to value, e.g. `{ team = "ventilation" }`. Default: none.
    #[serde(default)]
    #[schemars(with = "SpannedPairs")]
    labels: Option<SpannedPairs>,
}

/// `count`, `avg`, ..., or `pNN` with 1 <= NN <= 100.
fn parse_aggregate(name: &str) -> Option<Aggregate> {
    match name {
        "count" => Some(Aggregate::Count),
        "sum" => Some(Aggregate::Sum),
        "avg" => Some(Aggregate::Avg),
        "min" => Some(Aggregate::Min),
        "max" => Some(Aggregate::Max),
        _ => name
            .strip_prefix('p')
            .filter(|digits| !digits.is_empty() && digits.chars().all(|c| c.is_ascii_digit()))
            .and_then(|digits| digits.parse::<u8>().ok())
            .filter(|p| (1..=100).contains(p))
            .map(Aggregate::Percentile),
    }
}

/// E.g. `avg ch4 over 2m windows per face at or above 0.8%`.
fn default_summary(
    metric: Metric,
    aggregate: Aggregate,
    window_ms: u64,
    group_by: GroupBy,
    (direction, threshold, _): (Direction, f64, f64),
    hold_ms: u64,
) -> String {
    let level = if aggregate == Aggregate::Count {
        format!("{threshold} readings")
    } else {
        with_unit(threshold, metric)
    };
    format!(
        "{} {} over {} windows per {} {} {level}{}",
        aggregate.name(),
        metric.as_str(),
        duration_words(window_ms),
        group_by.as_str(),
        side_words(direction),
        hold_words(hold_ms)
    )
}

/// Compiles one `[[rule]]` table of kind `window` into one rule row.
pub(super) fn compile(cx: &mut FileCx<'_>, item: Spanned<DeValue<'_>>) -> Vec<RuleRow> {
    let header = item.span();
    let before = cx.count();
    let (raw, removed) = deserialize_reporting::<RawWindow>(cx, item, "");
    let Some(raw) = raw else {
        return Vec::new();
    };
    let mut f = Fields::new(cx, header.clone(), before, removed);
    let id = f.id(raw.id);
    let domain = f.domain(&raw.domain, "window");
    let metric = f.metric(&raw.metric, domain, "metric");
    let scope = f.scope(&raw.scope, domain, metric, false);
    let window_ms = f.positive_duration(
        "window",
        &raw.window,
        None,
        "the window length, e.g. window = \"2m\"",
    );
    let hop_ms = match (&raw.hop, window_ms) {
        (Some(hop), Some(window_ms)) => {
            let hop_ms = f.positive_duration(
                "hop",
                &raw.hop,
                None,
                "the distance between window starts, e.g. hop = \"30s\"",
            );
            match hop_ms {
                Some(hop_ms) if hop_ms > window_ms => {
                    f.error(
                        hop.span(),
                        format!(
                            "`hop` ({}) must not be longer than `window` ({})",
                            duration_words(hop_ms),
                            duration_words(window_ms)
                        ),
                        Some("readings between windows would be ignored; leave `hop` out for tumbling windows".to_string()),
                    );
                    None
                }
                Some(hop_ms) if window_ms.div_ceil(hop_ms) > MAX_WINDOWS_PER_READING => {
                    f.error(
                        hop.span(),
                        format!(
                            "`hop` ({}) is too short for `window` ({}): each reading would be kept in {} windows",
                            duration_words(hop_ms),
                            duration_words(window_ms),
                            window_ms.div_ceil(hop_ms)
                        ),
                        Some(format!("window / hop must be at most {MAX_WINDOWS_PER_READING}")),
                    );
                    None
                }
                other => other,
            }
        }
        (None, window_ms) => window_ms,
        (Some(_), None) => None,
    };
    let group_by = f.group_by(&raw.group_by, domain, true, Some(GroupBy::Entity));
    let aggregate = match &raw.aggregate {
        None => {
            f.missing(
                "aggregate",
                "rule without `aggregate`".to_string(),
                Some(format!("expected one of: {}", AGGREGATES.join(", "))),
            );
            None
        }
        Some(name) => {
            let parsed = parse_aggregate(name.get_ref());
            if parsed.is_none() {
                let known_as = match name.get_ref().as_str() {
                    "median" => Some("p50"),
                    "mean" | "average" => Some("avg"),
                    "total" => Some("sum"),
                    _ => None,
                };
                let hint = match known_as {
                    Some(known) => format!(
                        "write `{known}`; expected one of: {} (any percentile p1 .. p100)",
                        AGGREGATES.join(", ")
                    ),
                    None => format!(
                        "{} (any percentile p1 .. p100)",
                        one_of_hint(name.get_ref(), &AGGREGATES)
                    ),
                };
                f.error(
                    name.span(),
                    format!("unknown aggregate `{}`", name.get_ref()),
                    Some(hint),
                );
            }
            parsed
        }
    };
    let levels = f.levels(&raw.above, &raw.below, &raw.clear, &PLAIN_LEVELS, header);
    let severity = f.severity(&raw.severity);
    let labels = f.labels(&raw.labels, domain, &[]);
    if !f.ok() {
        return Vec::new();
    }
    let (
        Some(id),
        Some(domain),
        Some(metric),
        Some(window_ms),
        Some(hop_ms),
        Some(group_by),
        Some(aggregate),
        Some(levels),
        Some(severity),
    ) = (
        id, domain, metric, window_ms, hop_ms, group_by, aggregate, levels, severity,
    )
    else {
        return Vec::new();
    };
    let hold_ms = millis(raw.hold.unwrap_or_default());
    let summary = raw.summary.unwrap_or_else(|| {
        default_summary(metric, aggregate, window_ms, group_by, levels, hold_ms)
    });
    let alarm = Alarm {
        id,
        domain,
        metric,
        scope,
        levels,
        hold_ms,
        severity,
        summary,
        labels,
    };
    vec![RuleRow::Window(WindowRule {
        alarm: alarm.into_rule(),
        window_ms,
        hop_ms,
        group_by,
        aggregate,
    })]
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use citybrain_model::Domain;

    use super::*;
    use crate::config::load_rules_str;

    fn window(text: &str) -> WindowRule {
        match load_rules_str(Path::new("r.toml"), text).as_deref() {
            Ok([RuleRow::Window(rule)]) => rule.clone(),
            other => panic!("expected one window rule, got {other:?}"),
        }
    }

    use super::super::test_support::errors;

    #[test]
    fn a_full_rule_and_defaults() {
        let r = window(
            r#"[[rule]]
id = "ch4-avg-face"
kind = "window"
domain = "mine"
metric = "ch4"
window = "2m"
hop = "30s"
group_by = "face"
aggregate = "p90"
above = 0.8
clear = 0.7
for = "1m"
severity = "critical"
labels = { team = "ventilation" }
"#,
        );
        assert_eq!(r.alarm.id, "ch4-avg-face");
        assert_eq!(r.alarm.domain, Domain::Mine);
        assert_eq!((r.window_ms, r.hop_ms), (120_000, 30_000));
        assert_eq!(r.group_by, GroupBy::Face);
        assert_eq!(r.aggregate, Aggregate::Percentile(90));
        assert_eq!(
            (r.alarm.direction, r.alarm.threshold.0, r.alarm.clear.0),
            (Direction::Above, 0.8, 0.7)
        );
        assert_eq!(r.alarm.hold_ms, 60_000);
        assert_eq!(
            r.alarm.summary,
            "p90 ch4 over 2m windows per face at or above 0.8% for 1m"
        );
        let d = window(
            "[[rule]]\nid = \"c\"\nkind = \"window\"\ndomain = \"farm\"\nmetric = \"activity\"\nwindow = \"1h\"\naggregate = \"count\"\nbelow = 3\n",
        );
        assert_eq!((d.hop_ms, d.group_by), (3_600_000, GroupBy::Entity));
        assert_eq!(
            d.alarm.summary,
            "count activity over 1h windows per entity at or below 3 readings"
        );
    }

    #[test]
    fn every_problem_of_a_window_rule_is_reported() {
        let text = r#"[[rule]]
id = "w"
kind = "window"
domain = "mine"
metric = "ch4"
window = "0s"
hop = 5
group_by = "greenhouse"
aggregate = "mean"
above = 1

[[rule]]
id = "x"
kind = "window"
domain = "farm"
metric = "soil_water"
window = "30s"
hop = "1m"
group_by = "flock"
below = 15

[[rule]]
id = "y"
kind = "window"
domain = "mine"
metric = "co"
window = "1h"
hop = "1s"
aggregate = "p0"
"#;
        assert_eq!(
            errors(text),
            vec![
                "6:10: `window` must be at least 1ms",
                "7:7: `hop` must be a duration string such as \"250ms\", \"30s\" or \"5m\", found integer `5`",
                "8:12: `greenhouse` is a farm label: mine rules cannot group by it",
                "9:13: unknown aggregate `mean`",
                "12:1: rule without `aggregate`",
                "18:7: `hop` (1m) must not be longer than `window` (30s)",
                "19:12: unknown `group_by` value `flock`",
                "22:1: rule without threshold: set `above` or `below`",
                "28:7: `hop` (1s) is too short for `window` (1h): each reading would be kept in 3600 windows",
                "29:13: unknown aggregate `p0`",
            ]
        );
    }

    #[test]
    fn missing_window() {
        let text = "[[rule]]\nid = \"w\"\nkind = \"window\"\ndomain = \"mine\"\nmetric = \"ch4\"\naggregate = \"max\"\nabove = 1\n";
        assert_eq!(errors(text), vec!["1:1: rule without `window`"]);
    }
}
