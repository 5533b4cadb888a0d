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
use serde::Deserialize;
use serde_spanned::Spanned;
use toml::de::DeValue;

use super::common::{
    Alarm, DurationValue, Fields, LevelNames, duration_words, hold_words, millis, side_words,
};
use crate::config::de::{SpannedPairs, WordOrPairs, deserialize_reporting};
use crate::config::diagnostic::FileCx;
use crate::config::duration;

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
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBaseline {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    #[allow(dead_code)]
    kind: Option<String>,
    #[serde(default)]
    domain: Option<Spanned<String>>,
    #[serde(default)]
    metric: Option<Spanned<String>>,
    #[serde(default)]
    scope: Option<Spanned<WordOrPairs>>,
    #[serde(default)]
    baseline: Option<Spanned<DurationValue>>,
    #[serde(default)]
    above_ratio: Option<Spanned<f64>>,
    #[serde(default)]
    below_ratio: Option<Spanned<f64>>,
    #[serde(default)]
    clear: Option<Spanned<f64>>,
    #[serde(default, rename = "for", with = "duration::option")]
    hold: Option<Duration>,
    #[serde(default)]
    severity: Option<Spanned<String>>,
    #[serde(default)]
    summary: Option<String>,
    #[serde(default)]
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
