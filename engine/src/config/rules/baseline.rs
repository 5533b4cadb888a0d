//! The `baseline` rule kind: each reading against the entity's own trailing mean.
//!
//! ```toml
//! [[rule]]
//! id = "cow-inactive"         # required, unique across all rule files
//! kind = "baseline"
//! domain = "farm"             # mine | farm
//! metric = "activity"         # a metric of the domain
//! scope = { herd = "uxin-ranch/herd-1" }   # or "all"
//! baseline = "24h"            # required: the trailing window of the mean
//! below_ratio = 0.5           # exactly one of below_ratio / above_ratio: reading / mean
//! clear = 0.7                 # optional, a ratio too; default = the ratio
//! for = "2h"                  # optional hold time
//! severity = "warning"
//! summary = "{animal} at {value} of its usual activity"
//! ```
//!
//! The mean is over the sensor's readings in the `baseline` before each reading (the reading
//! itself excluded). Readings without earlier ones in the window, or whose mean is not
//! positive, are not evaluated. Alerts report the ratio. The alert entity is the sensor.

use std::time::Duration;

use citybrain_model::Metric;
use citybrain_operators::kinds::baseline::BaselineRule;
use citybrain_operators::rule::{Direction, RuleRow};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_spanned::Spanned;
use toml::de::DeValue;

use super::common::{
    Alarm, DurationValue, Fields, LevelNames, duration_words, hold_words, millis, side_words,
};
use crate::config::de::{SpannedPairs, WordOrPairs, deserialize_reporting};
use crate::config::diagnostic::FileCx;
use crate::config::duration::{self, DurationString};

/// The levels of a baseline rule are ratios.
const RATIO_LEVELS: LevelNames<'static> = LevelNames {
    above: "above_ratio",
    below: "below_ratio",
    clear: "clear",
    owner: "a baseline rule",
    example: "e.g. below_ratio = 0.5 alarms at readings at most half the trailing mean",
};

/// A `[[rule]]` table of kind `baseline` as written; everything optional so that [`compile`]
/// reports every problem.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(
    rename = "BaselineRule",
    extend("required" = ["id", "kind", "domain", "metric", "baseline"]),
    description = "A `baseline` rule: each reading against the entity's own trailing mean."
)]
pub(super) struct RawBaseline {
    /// Rule id: required, unique across all rule files.
    #[serde(default)]
    id: Option<String>,
    /// Rule kind.
    #[serde(default)]
    #[allow(dead_code)]
    #[schemars(with = "String", extend("const" = "baseline"))]
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
    /// Required: the trailing window of the entity's mean.
    #[serde(default)]
    #[schemars(with = "DurationString")]
    baseline: Option<Spanned<DurationValue>>,
    /// Alarm when reading / mean is at or above this. Exactly one of `above_ratio` / `below_ratio`.
    #[serde(default)]
    #[schemars(with = "f64")]
    above_ratio: Option<Spanned<f64>>,
    /// Alarm when reading / mean is at or below this. Exactly one of `above_ratio` / `below_ratio`.
    #[serde(default)]
    #[schemars(with = "f64")]
    below_ratio: Option<Spanned<f64>>,
    /// Resolve once the ratio is back past this. Default: the alarm ratio.
    #[serde(default)]
    #[schemars(with = "f64")]
    clear: Option<Spanned<f64>>,
    /// Hold time: on the alarm side this long before firing. Default: `"0s"`.
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

/// E.g. `activity at or below 0.5 x its 24h mean for 2h`.
fn default_summary(
    metric: Metric,
    baseline_ms: u64,
    (direction, threshold, _): (Direction, f64, f64),
    hold_ms: u64,
) -> String {
    format!(
        "{} {} {threshold} x its {} mean{}",
        metric.as_str(),
        side_words(direction),
        duration_words(baseline_ms),
        hold_words(hold_ms)
    )
}

/// Compiles one `[[rule]]` table of kind `baseline` into one rule row.
pub(super) fn compile(cx: &mut FileCx<'_>, item: Spanned<DeValue<'_>>) -> Vec<RuleRow> {
    let header = item.span();
    let before = cx.count();
    let (raw, removed) = deserialize_reporting::<RawBaseline>(cx, item, "");
    let Some(raw) = raw else {
        return Vec::new();
    };
    let mut f = Fields::new(cx, header.clone(), before, removed);
    let id = f.id(raw.id);
    let domain = f.domain(&raw.domain, "baseline");
    let metric = f.metric(&raw.metric, domain, "metric");
    let scope = f.scope(&raw.scope, domain, metric, false);
    let baseline_ms = f.positive_duration(
        "baseline",
        &raw.baseline,
        None,
        "the trailing window of the mean, e.g. baseline = \"24h\"",
    );
    let levels = f.levels(
        &raw.above_ratio,
        &raw.below_ratio,
        &raw.clear,
        &RATIO_LEVELS,
        header,
    );
    let severity = f.severity(&raw.severity);
    let labels = f.labels(&raw.labels, domain, &[]);
    if !f.ok() {
        return Vec::new();
    }
    let (Some(id), Some(domain), Some(metric), Some(baseline_ms), Some(levels), Some(severity)) =
        (id, domain, metric, baseline_ms, levels, severity)
    else {
        return Vec::new();
    };
    let hold_ms = millis(raw.hold.unwrap_or_default());
    let summary = raw
        .summary
        .unwrap_or_else(|| default_summary(metric, baseline_ms, levels, hold_ms));
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
    vec![RuleRow::Baseline(BaselineRule {
        alarm: alarm.into_rule(),
        baseline_ms,
    })]
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::load_rules_str;

    fn baseline(text: &str) -> BaselineRule {
        match load_rules_str(Path::new("r.toml"), text).as_deref() {
            Ok([RuleRow::Baseline(rule)]) => rule.clone(),
            other => panic!("expected one baseline rule, got {other:?}"),
        }
    }

    use super::super::test_support::errors;

    #[test]
    fn a_rule_and_its_defaults() {
        let r = baseline(
            "[[rule]]\nid = \"cow\"\nkind = \"baseline\"\ndomain = \"farm\"\nmetric = \"activity\"\nbaseline = \"24h\"\nbelow_ratio = 0.5\nclear = 0.7\nfor = \"2h\"\n",
        );
        assert_eq!(r.baseline_ms, 86_400_000);
        assert_eq!(
            (
                r.alarm.direction,
                r.alarm.threshold.0,
                r.alarm.clear.0,
                r.alarm.hold_ms
            ),
            (Direction::Below, 0.5, 0.7, 7_200_000)
        );
        assert_eq!(
            r.alarm.summary,
            "activity at or below 0.5 x its 24h mean for 2h"
        );
    }

    #[test]
    fn every_problem_is_reported() {
        let text = "[[rule]]\nid = \"b\"\nkind = \"baseline\"\ndomain = \"farm\"\nmetric = \"activity\"\nbaseline = \"soon\"\nbelow = 0.5\n\n[[rule]]\nid = \"c\"\nkind = \"baseline\"\ndomain = \"farm\"\nmetric = \"activity\"\nbaseline = \"1h\"\nbelow_ratio = 0.5\nabove_ratio = 2\nclear = 0.4\n";
        let found = errors(text);
        assert_eq!(
            found,
            vec![
                "1:1: rule without threshold: set `above_ratio` or `below_ratio`",
                "6:12: `baseline`: invalid duration \"soon\": expected number at 0",
                "7:1: unknown field `below`",
                "16:15: a baseline rule has exactly one of `above_ratio` and `below_ratio`, this one has both",
            ]
        );
    }
}
