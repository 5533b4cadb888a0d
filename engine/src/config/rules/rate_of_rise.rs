//! The `rate_of_rise` rule kind: how fast a metric changes, per minute, at each reading.
//!
//! ```toml
//! [[rule]]
//! id = "ch4-rising"           # required, unique across all rule files
//! kind = "rate_of_rise"
//! domain = "mine"             # mine | farm
//! metric = "ch4"              # a metric of the domain
//! scope = "all"               # or label selectors, as for threshold rules
//! window = "2m"               # required: how far back the first reading may be
//! min_span = "1m"             # optional: how far back it must at least be, default window / 2
//! above = 0.3                 # exactly one of above / below: change per minute, in the metric's unit
//! clear = 0.1                 # optional, as for threshold rules
//! for = "0s"                  # optional hold time
//! severity = "warning"
//! summary = "Methane rising by {value}%/min on {face}"
//! ```
//!
//! At a reading, the rate is (reading - first reading of the sensor in the window) / minutes
//! between them; readings whose first reading is less than `min_span` back are not evaluated
//! (a rate over a few seconds is mostly noise). The alert entity is the sensor.

use std::time::Duration;

use citybrain_model::Metric;
use citybrain_operators::kinds::rate_of_rise::RateOfRiseRule;
use citybrain_operators::rule::{Direction, RuleRow};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_spanned::Spanned;
use toml::de::DeValue;

use super::common::{
    Alarm, DurationValue, Fields, PLAIN_LEVELS, duration_words, hold_words, millis, side_words,
    with_unit,
};
use crate::config::de::{SpannedPairs, WordOrPairs, deserialize_reporting};
use crate::config::diagnostic::FileCx;
use crate::config::duration::{self, DurationString};

/// A `[[rule]]` table of kind `rate_of_rise` as written; everything optional so that
/// [`compile`] reports every problem.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(
    rename = "RateOfRiseRule",
    extend("required" = ["id", "kind", "domain", "metric", "window"]),
    description = "A `rate_of_rise` rule: how fast a metric changes, per minute, at each reading."
)]
pub(super) struct RawRateOfRise {
    /// Rule id: required, unique across all rule files.
    #[serde(default)]
    id: Option<String>,
    /// Rule kind.
    #[serde(default)]
    #[allow(dead_code)]
    #[schemars(with = "String", extend("const" = "rate_of_rise"))]
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
    /// Required: how far back the first reading of the rate may be.
    #[serde(default)]
    #[schemars(with = "DurationString")]
    window: Option<Spanned<DurationValue>>,
    /// How far back the first reading must at least be. Default: half the window.
    #[serde(default)]
    #[schemars(with = "DurationString")]
    min_span: Option<Spanned<DurationValue>>,
    /// Alarm when the change per minute, in the metric's unit, is at or above this. Exactly one of
    /// `above` / `below`.
    #[serde(default)]
    #[schemars(with = "f64")]
    above: Option<Spanned<f64>>,
    /// Alarm when the change per minute, in the metric's unit, is at or below this. Exactly one of
    /// `above` / `below`.
    #[serde(default)]
    #[schemars(with = "f64")]
    below: Option<Spanned<f64>>,
    /// Resolve once back past this level (hysteresis); `above`: at most `above`, `below`: at least
    /// `below`. Default: the alarm level.
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

/// E.g. `ch4 change at or above 0.3%/min over 2m`.
fn default_summary(
    metric: Metric,
    window_ms: u64,
    (direction, threshold, _): (Direction, f64, f64),
    hold_ms: u64,
) -> String {
    format!(
        "{} change {} {}/min over {}{}",
        metric.as_str(),
        side_words(direction),
        with_unit(threshold, metric),
        duration_words(window_ms),
        hold_words(hold_ms)
    )
}

/// Compiles one `[[rule]]` table of kind `rate_of_rise` into one rule row.
pub(super) fn compile(cx: &mut FileCx<'_>, item: Spanned<DeValue<'_>>) -> Vec<RuleRow> {
    let header = item.span();
    let before = cx.count();
    let (raw, removed) = deserialize_reporting::<RawRateOfRise>(cx, item, "");
    let Some(raw) = raw else {
        return Vec::new();
    };
    let mut f = Fields::new(cx, header.clone(), before, removed);
    let id = f.id(raw.id);
    let domain = f.domain(&raw.domain, "rate_of_rise");
    let metric = f.metric(&raw.metric, domain, "metric");
    let scope = f.scope(&raw.scope, domain, metric, false);
    let window_ms = f.positive_duration(
        "window",
        &raw.window,
        None,
        "how far back the first reading may be, e.g. window = \"2m\"",
    );
    let min_span_ms = match (&raw.min_span, window_ms) {
        (None, window_ms) => window_ms.map(|w| w / 2),
        (Some(written), Some(window_ms)) => {
            let ms = millis(written.get_ref().0);
            if ms > window_ms {
                f.error(
                    written.span(),
                    format!(
                        "`min_span` ({}) must not be longer than `window` ({})",
                        duration_words(ms),
                        duration_words(window_ms)
                    ),
                    Some("no reading could ever be evaluated".to_string()),
                );
                None
            } else {
                Some(ms)
            }
        }
        (Some(_), None) => None,
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
        Some(min_span_ms),
        Some(levels),
        Some(severity),
    ) = (id, domain, metric, window_ms, min_span_ms, levels, severity)
    else {
        return Vec::new();
    };
    let hold_ms = millis(raw.hold.unwrap_or_default());
    let summary = raw
        .summary
        .unwrap_or_else(|| default_summary(metric, window_ms, levels, hold_ms));
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
    vec![RuleRow::RateOfRise(RateOfRiseRule {
        alarm: alarm.into_rule(),
        window_ms,
        min_span_ms,
    })]
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::load_rules_str;

    fn rate(text: &str) -> RateOfRiseRule {
        match load_rules_str(Path::new("r.toml"), text).as_deref() {
            Ok([RuleRow::RateOfRise(rule)]) => rule.clone(),
            other => panic!("expected one rate-of-rise rule, got {other:?}"),
        }
    }

    use super::super::test_support::errors;

    #[test]
    fn a_rule_and_its_defaults() {
        let r = rate(
            "[[rule]]\nid = \"ch4-rising\"\nkind = \"rate_of_rise\"\ndomain = \"mine\"\nmetric = \"ch4\"\nwindow = \"2m\"\nabove = 0.3\nclear = 0.1\n",
        );
        assert_eq!((r.window_ms, r.min_span_ms), (120_000, 60_000));
        assert_eq!(
            (r.alarm.direction, r.alarm.threshold.0, r.alarm.clear.0),
            (Direction::Above, 0.3, 0.1)
        );
        assert_eq!(r.alarm.summary, "ch4 change at or above 0.3%/min over 2m");
        let r = rate(
            "[[rule]]\nid = \"co\"\nkind = \"rate_of_rise\"\ndomain = \"mine\"\nmetric = \"co\"\nwindow = \"10m\"\nmin_span = \"0s\"\nabove = 2\nfor = \"1m\"\n",
        );
        assert_eq!(r.min_span_ms, 0);
        assert_eq!(
            r.alarm.summary,
            "co change at or above 2 ppm/min over 10m for 1m"
        );
    }

    #[test]
    fn every_problem_is_reported() {
        let text = "[[rule]]\nid = \"r\"\nkind = \"rate_of_rise\"\ndomain = \"mine\"\nmetric = \"ch4\"\nmin_span = \"5m\"\nwindow = \"2m\"\nabove = 0.3\nclear = 0.5\nwindw = \"1m\"\n\n[[rule]]\nid = \"s\"\nkind = \"rate_of_rise\"\ndomain = \"farm\"\nmetric = \"ch4\"\nbelow = -1\n";
        assert_eq!(
            errors(text),
            vec![
                "6:12: `min_span` (5m) must not be longer than `window` (2m)",
                "9:9: `clear` (0.5) must not be greater than `above` (0.3)",
                "10:1: unknown field `windw`",
                "12:1: rule without `window`",
                "16:10: unknown farm metric `ch4`",
            ]
        );
    }
}
