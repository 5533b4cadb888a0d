//! The `correlation` rule kind: two metrics of the same location group on their alarm sides
//! together, within a time tolerance (an as-of join).
//!
//! ```toml
//! [[rule]]
//! id = "ventilation-failure"  # required, unique across all rule files
//! kind = "correlation"
//! domain = "mine"             # mine | farm
//! metric = "ch4"              # the first condition: a metric of the domain ...
//! above = 0.8                 # ... with exactly one of above / below
//! clear = 0.7                 # optional, as for threshold rules
//! with = { metric = "air_velocity", below = 0.25, clear = 0.3 }   # the second condition
//! group_by = "face"           # required: mine | face (mine); farm | greenhouse | herd | animal (farm)
//! tolerance = "10s"           # required: how old a side's latest reading may be
//! scope = { mine = "jungar-1" }   # optional label selectors (not `kind`)
//! for = "0s"                  # optional: both conditions held on every evaluation this long
//! severity = "critical"
//! summary = "Ventilation failure with methane on {face}: CH4 {ch4}%, air velocity {air_velocity} m/s"
//! ```
//!
//! Evaluated at each reading of either metric in a group: each side's value is the worst of
//! its sensors' latest readings within the tolerance (the largest for `above`, the smallest
//! for `below`). It fires when both sides are on their alarm side and resolves when either is
//! past its clear level. The alert entity is the group (the face id); alerts carry the group's
//! labels and both side values under the metrics' names (`{ch4}`, `{air_velocity}`).

use std::time::Duration;

use citybrain_model::Metric;
use citybrain_operators::kinds::correlation::{Condition, CorrelationRule};
use citybrain_operators::rule::{Direction, GroupBy, RuleRow};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_spanned::Spanned;
use toml::de::DeValue;

use super::common::{
    Alarm, DurationValue, Fields, LevelNames, PLAIN_LEVELS, duration_words, hold_words, millis,
    side_words, with_unit,
};
use crate::config::de::{SpannedPairs, WordOrPairs, deserialize_reporting};
use crate::config::diagnostic::FileCx;
use crate::config::duration::{self, DurationString};

/// The levels of the second condition.
const WITH_LEVELS: LevelNames<'static> = LevelNames {
    above: "above",
    below: "below",
    clear: "clear",
    owner: "`with`",
    example: "e.g. with = { metric = \"air_velocity\", below = 0.25 }",
};

/// A `[[rule]]` table of kind `correlation` as written; everything optional so that
/// [`compile`] reports every problem.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(
    rename = "CorrelationRule",
    extend("required" = ["id", "kind", "domain", "metric", "with", "group_by", "tolerance"]),
    description = "A `correlation` rule: two metrics of the same location group on their alarm sides together, within a time tolerance."
)]
pub(super) struct RawCorrelation {
    /// Rule id: required, unique across all rule files.
    #[serde(default)]
    id: Option<String>,
    /// Rule kind.
    #[serde(default)]
    #[allow(dead_code)]
    #[schemars(with = "String", extend("const" = "correlation"))]
    kind: Option<String>,
    /// The domain whose events the rule evaluates: `mine` or `farm`.
    #[serde(default)]
    #[schemars(with = "String", extend("enum" = ["mine", "farm"]))]
    domain: Option<Spanned<String>>,
    /// The first condition: a metric of the domain, with exactly one of `above` / `below`.
    #[serde(default)]
    #[schemars(with = "String")]
    metric: Option<Spanned<String>>,
    /// Label selectors such as `{ mine = "jungar-1" }`, or `"all"` (the default).
    #[serde(default)]
    #[schemars(with = "WordOrPairs")]
    scope: Option<Spanned<WordOrPairs>>,
    /// Alarm at or above this level. Exactly one of `above` / `below`.
    #[serde(default)]
    #[schemars(with = "f64")]
    above: Option<Spanned<f64>>,
    /// Alarm at or below this level. Exactly one of `above` / `below`.
    #[serde(default)]
    #[schemars(with = "f64")]
    below: Option<Spanned<f64>>,
    /// Resolve once back past this level (hysteresis); `above`: at most `above`, `below`: at least
    /// `below`. Default: the alarm level.
    #[serde(default)]
    #[schemars(with = "f64")]
    clear: Option<Spanned<f64>>,
    /// The second condition: `{ metric = "...", above|below = ..., clear = ... }`.
    #[serde(default)]
    #[schemars(with = "RawCondition")]
    with: Option<Spanned<RawCondition>>,
    /// Required: the location group both metrics are joined on: `mine`, `face` (mine); `farm`,
    /// `greenhouse`, `herd`, `animal` (farm).
    #[serde(default)]
    #[schemars(with = "String")]
    group_by: Option<Spanned<String>>,
    /// Required: how old a side's latest reading may be.
    #[serde(default)]
    #[schemars(with = "DurationString")]
    tolerance: Option<Spanned<DurationValue>>,
    /// Both conditions held on every evaluation this long before firing. Default: `"0s"`.
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

/// The `with` table: the second condition.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(
    rename = "CorrelationCondition",
    description = "The second condition of a `correlation` rule: a metric with exactly one of `above` / `below`."
)]
pub(super) struct RawCondition {
    /// A metric of the domain.
    #[serde(default)]
    #[schemars(with = "String")]
    metric: Option<Spanned<String>>,
    /// Alarm at or above this level. Exactly one of `above` / `below`.
    #[serde(default)]
    #[schemars(with = "f64")]
    above: Option<Spanned<f64>>,
    /// Alarm at or below this level. Exactly one of `above` / `below`.
    #[serde(default)]
    #[schemars(with = "f64")]
    below: Option<Spanned<f64>>,
    /// Resolve once back past this level (hysteresis); `above`: at most `above`, `below`: at least
    /// `below`. Default: the alarm level.
    #[serde(default)]
    #[schemars(with = "f64")]
    clear: Option<Spanned<f64>>,
}

/// E.g. `ch4 at or above 0.8% with air_velocity at or below 0.25 m/s on one face within 10s`.
fn default_summary(
    (metric, (direction, threshold, _)): (Metric, (Direction, f64, f64)),
    with: &Condition,
    group_by: GroupBy,
    tolerance_ms: u64,
    hold_ms: u64,
) -> String {
    format!(
        "{} {} {} with {} {} {} on one {} within {}{}",
        metric.as_str(),
        side_words(direction),
        with_unit(threshold, metric),
        with.metric.as_str(),
        side_words(with.direction),
        with_unit(with.threshold.0, with.metric),
        group_by.as_str(),
        duration_words(tolerance_ms),
        hold_words(hold_ms)
    )
}

/// Compiles one `[[rule]]` table of kind `correlation` into one rule row.
pub(super) fn compile(cx: &mut FileCx<'_>, item: Spanned<DeValue<'_>>) -> Vec<RuleRow> {
    let header = item.span();
    let before = cx.count();
    let (raw, removed) = deserialize_reporting::<RawCorrelation>(cx, item, "");
    let Some(raw) = raw else {
        return Vec::new();
    };
    let mut f = Fields::new(cx, header.clone(), before, removed);
    let id = f.id(raw.id);
    let domain = f.domain(&raw.domain, "correlation");
    let metric = f.metric(&raw.metric, domain, "metric");
    let scope = f.scope(&raw.scope, domain, None, true);
    let levels = f.levels(&raw.above, &raw.below, &raw.clear, &PLAIN_LEVELS, header);

    let with = match &raw.with {
        None => {
            f.missing(
                "with",
                "rule without `with`: the second condition".to_string(),
                Some(WITH_LEVELS.example.to_string()),
            );
            None
        }
        // A problem inside `with` was reported already; its other checks would only repeat it.
        Some(_) if f.reported("with") => None,
        Some(written) => {
            let condition = written.get_ref();
            let second = match (&condition.metric, domain) {
                (None, _) => {
                    f.error(
                        written.span(),
                        "`with` without `metric`".to_string(),
                        Some(WITH_LEVELS.example.to_string()),
                    );
                    None
                }
                (Some(name), Some(domain)) => {
                    let found = f.metric_of(name.get_ref(), domain, name.span(), "metric");
                    if found.is_some() && found == metric {
                        f.error(
                            name.span(),
                            format!(
                                "a correlation needs two different metrics, `with` repeats `{}`",
                                name.get_ref()
                            ),
                            Some(
                                "for two levels of one metric, write two threshold rules"
                                    .to_string(),
                            ),
                        );
                        None
                    } else {
                        found
                    }
                }
                (Some(_), None) => None,
            };
            let levels = f.levels(
                &condition.above,
                &condition.below,
                &condition.clear,
                &WITH_LEVELS,
                written.span(),
            );
            second
                .zip(levels)
                .map(|(metric, (direction, threshold, clear))| Condition {
                    metric,
                    direction,
                    threshold: threshold.into(),
                    clear: clear.into(),
                })
        }
    };
    let group_by = f.group_by(&raw.group_by, domain, false, None);
    let tolerance_ms = f.positive_duration(
        "tolerance",
        &raw.tolerance,
        None,
        "how old the other metric's latest reading may be, e.g. tolerance = \"10s\"",
    );
    let severity = f.severity(&raw.severity);
    let metric_labels: Vec<&str> = [metric, with.as_ref().map(|w| w.metric)]
        .into_iter()
        .flatten()
        .map(Metric::as_str)
        .collect();
    let labels = f.labels(&raw.labels, domain, &metric_labels);
    if !f.ok() {
        return Vec::new();
    }
    let (
        Some(id),
        Some(domain),
        Some(metric),
        Some(levels),
        Some(with),
        Some(group_by),
        Some(tolerance_ms),
        Some(severity),
    ) = (
        id,
        domain,
        metric,
        levels,
        with,
        group_by,
        tolerance_ms,
        severity,
    )
    else {
        return Vec::new();
    };
    let hold_ms = millis(raw.hold.unwrap_or_default());
    let summary = raw.summary.unwrap_or_else(|| {
        default_summary((metric, levels), &with, group_by, tolerance_ms, hold_ms)
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
    vec![RuleRow::Correlation(CorrelationRule {
        alarm: alarm.into_rule(),
        with,
        group_by,
        tolerance_ms,
    })]
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::load_rules_str;

    fn correlation(text: &str) -> CorrelationRule {
        match load_rules_str(Path::new("r.toml"), text).as_deref() {
            Ok([RuleRow::Correlation(rule)]) => rule.clone(),
            other => panic!("expected one correlation rule, got {other:?}"),
        }
    }

    use super::super::test_support::errors;

    #[test]
    fn ventilation_failure_with_methane() {
        let r = correlation(
            r#"[[rule]]
id = "ventilation-failure"
kind = "correlation"
domain = "mine"
metric = "ch4"
above = 0.8
with = { metric = "air_velocity", below = 0.25, clear = 0.3 }
group_by = "face"
tolerance = "10s"
severity = "critical"
"#,
        );
        assert_eq!(
            (
                r.alarm.metric,
                r.alarm.direction,
                r.alarm.threshold.0,
                r.alarm.clear.0
            ),
            (Metric::Ch4, Direction::Above, 0.8, 0.8)
        );
        assert_eq!(
            (
                r.with.metric,
                r.with.direction,
                r.with.threshold.0,
                r.with.clear.0
            ),
            (Metric::AirVelocity, Direction::Below, 0.25, 0.3)
        );
        assert_eq!((r.group_by, r.tolerance_ms), (GroupBy::Face, 10_000));
        assert_eq!(
            r.alarm.summary,
            "ch4 at or above 0.8% with air_velocity at or below 0.25 m/s on one face within 10s"
        );
    }

    #[test]
    fn every_problem_is_reported() {
        let text = r#"[[rule]]
id = "a"
kind = "correlation"
domain = "mine"
metric = "ch4"
above = 0.8
with = { metric = "ch4", above = 1 }
group_by = "entity"
scope = { kind = "ch4" }
labels = { ch4 = "x" }

[[rule]]
id = "b"
kind = "correlation"
domain = "farm"
metric = "body_temp"
above = 40.5
with = { metric = "activity", below = 5, above = 50, clear = 4 }
group_by = "face"
tolerance = "0s"

[[rule]]
id = "c"
kind = "correlation"
domain = "farm"
metric = "humidity"
below = 40
with = { metric = "air_temp", clea = 30 }
group_by = "greenhouse"
"#;
        assert_eq!(
            errors(text),
            vec![
                "1:1: rule without `tolerance`",
                "7:19: a correlation needs two different metrics, `with` repeats `ch4`",
                "8:12: a correlation cannot group by `entity`: a sensor measures one metric",
                "9:11: a correlation reads two metrics: a `kind` selector would hide one of them",
                "10:12: label `ch4` is set by the engine",
                "18:50: `with` has exactly one of `above` and `below`, this one has both",
                "19:12: `face` is a mine label: farm rules cannot group by it",
                "20:13: `tolerance` must be at least 1ms",
                "22:1: rule without `tolerance`",
                "28:31: unknown field `with.clea`",
            ]
        );
    }

    #[test]
    fn with_is_required() {
        let text = "[[rule]]\nid = \"a\"\nkind = \"correlation\"\ndomain = \"mine\"\nmetric = \"ch4\"\nabove = 0.8\ngroup_by = \"face\"\ntolerance = \"10s\"\n";
        assert_eq!(
            errors(text),
            vec!["1:1: rule without `with`: the second condition"]
        );
    }
}
