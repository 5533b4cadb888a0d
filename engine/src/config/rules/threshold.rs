//! The `threshold` rule kind: an alert when a metric stays on the alarm side of a level for a
//! hold time, resolved when it crosses back past a clear level (hysteresis).
//!
//! ```toml
//! [[rule]]
//! id = "ch4-alarm"            # required, unique across all rule files
//! kind = "threshold"          # optional, the default
//! domain = "mine"             # mine | farm
//! metric = "ch4"              # a metric of the domain
//! scope = { mine = "jungar-1" }   # or "all" (the default); label selectors
//! above = 1.0                 # exactly one of above / below (inclusive)
//! clear = 0.8                 # optional, default = the threshold; above: <= above, below: >= below
//! for = "60s"                 # optional hold time, default "0s"
//! severity = "critical"       # info | warning | critical, default warning
//! summary = "Methane at alarm level on {face}"   # optional, default generated
//! labels = { team = "ventilation" }              # optional extra alert labels
//! ```

use std::time::Duration;

use citybrain_model::Metric;
use citybrain_operators::rule::{Direction, RuleRow};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_spanned::Spanned;
use toml::de::DeValue;

use super::common::{Alarm, Fields, PLAIN_LEVELS, hold_words, side_words, with_unit};
use crate::config::de::{SpannedPairs, WordOrPairs, deserialize_reporting};
use crate::config::diagnostic::FileCx;
use crate::config::duration::{self, DurationString};

/// A `[[rule]]` table of kind `threshold` as written. Everything is optional here so that
/// every problem, including missing fields, is reported by [`compile`] with a clear message.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(
    rename = "ThresholdRule",
    extend("required" = ["id", "domain", "metric"]),
    description = "A `threshold` rule: an alert when a metric stays on the alarm side of a level for a hold time, resolved when it crosses back past a clear level."
)]
pub(super) struct RawThreshold {
    /// Checked for uniqueness by the rule-file layer.
    #[serde(default)]
    #[schemars(description = "Rule id: required, unique across all rule files.")]
    id: Option<String>,
    /// Selects the kind (read by the rule-file layer); only its type is checked here.
    #[serde(default)]
    #[allow(dead_code)]
    #[schemars(
        with = "String",
        extend("const" = "threshold"),
        description = "Rule kind; optional for this kind, the default."
    )]
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

/// The summary used when a rule has none, e.g. `ch4 at or above 1% for 10s`.
fn default_summary(metric: Metric, direction: Direction, threshold: f64, hold_ms: u64) -> String {
    format!(
        "{} {} {}{}",
        metric.as_str(),
        side_words(direction),
        with_unit(threshold, metric),
        hold_words(hold_ms)
    )
}

/// Compiles one `[[rule]]` table of kind `threshold` into one rule row.
pub(super) fn compile(cx: &mut FileCx<'_>, item: Spanned<DeValue<'_>>) -> Vec<RuleRow> {
    let header = item.span();
    let before = cx.count();
    let (raw, removed) = deserialize_reporting::<RawThreshold>(cx, item, "");
    let Some(raw) = raw else {
        return Vec::new();
    };
    let mut f = Fields::new(cx, header.clone(), before, removed);
    let id = f.id(raw.id);
    let domain = f.domain(&raw.domain, "threshold");
    let metric = f.metric(&raw.metric, domain, "metric");
    let scope = f.scope(&raw.scope, domain, metric, false);
    let levels = f.levels(&raw.above, &raw.below, &raw.clear, &PLAIN_LEVELS, header);
    let severity = f.severity(&raw.severity);
    let labels = f.labels(&raw.labels, domain, &[]);
    if !f.ok() {
        return Vec::new();
    }
    let (Some(id), Some(domain), Some(metric), Some(levels), Some(severity)) =
        (id, domain, metric, levels, severity)
    else {
        return Vec::new();
    };
    let hold_ms = super::common::millis(raw.hold.unwrap_or_default());
    let summary = raw
        .summary
        .unwrap_or_else(|| default_summary(metric, levels.0, levels.1, hold_ms));
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
    vec![RuleRow::Threshold(alarm.into_rule())]
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use citybrain_model::{Domain, Severity};
    use citybrain_operators::rule::ThresholdRule;

    use super::*;
    use crate::config::load_rules_str;

    fn rules(text: &str) -> Vec<RuleRow> {
        match load_rules_str(Path::new("r.toml"), text) {
            Ok(rules) => rules,
            Err(all) => panic!("expected valid rules, got:\n{all}"),
        }
    }

    fn rule(text: &str) -> ThresholdRule {
        match rules(text).as_slice() {
            [RuleRow::Threshold(one)] => one.clone(),
            other => panic!("expected one threshold rule, got {other:?}"),
        }
    }

    use super::super::test_support::errors;

    fn hints(text: &str) -> Vec<Option<String>> {
        match load_rules_str(Path::new("r.toml"), text) {
            Ok(rules) => panic!("expected errors, got {rules:?}"),
            Err(all) => all.into_iter().map(|d| d.hint).collect(),
        }
    }

    const HEAD: &str = "[[rule]]\nid = \"r1\"\ndomain = \"mine\"\nmetric = \"ch4\"\n";

    #[test]
    fn a_full_rule() {
        let r = rule(
            r#"
[[rule]]
id = "ch4-alarm"
kind = "threshold"
domain = "mine"
metric = "ch4"
scope = { mine = "jungar-1", face = "jungar-1/face-2" }
above = 1.0
clear = 0.8
for = "60s"
severity = "critical"
summary = "Methane at alarm level on {face}"
labels = { team = "ventilation", shift = "night" }
"#,
        );
        assert_eq!(r.id, "ch4-alarm");
        assert_eq!(r.domain, Domain::Mine);
        assert_eq!(r.metric, Metric::Ch4);
        assert_eq!(
            r.scope,
            vec![
                ("face".into(), "jungar-1/face-2".into()),
                ("mine".into(), "jungar-1".into())
            ]
        );
        assert_eq!(r.direction, Direction::Above);
        assert_eq!(r.threshold.0, 1.0);
        assert_eq!(r.clear.0, 0.8);
        assert_eq!(r.hold_ms, 60_000);
        assert_eq!(r.severity, Severity::Critical);
        assert_eq!(r.summary, "Methane at alarm level on {face}");
        assert_eq!(
            r.labels,
            vec![
                ("shift".into(), "night".into()),
                ("team".into(), "ventilation".into())
            ]
        );
    }

    #[test]
    fn defaults() {
        let r =
            rule("[[rule]]\nid = \"sw\"\ndomain = \"farm\"\nmetric = \"soil_water\"\nbelow = 15\n");
        assert_eq!(r.direction, Direction::Below);
        assert_eq!(r.threshold.0, 15.0);
        assert_eq!(r.clear.0, 15.0);
        assert_eq!(r.hold_ms, 0);
        assert_eq!(r.severity, Severity::Warning);
        assert!(r.scope.is_empty());
        assert!(r.labels.is_empty());
        assert_eq!(r.summary, "soil_water at or below 15%");
        let co = rule(
            "[[rule]]\nid = \"co\"\ndomain = \"mine\"\nmetric = \"co\"\nscope = \"all\"\nabove = 24\nfor = \"30s\"\n",
        );
        assert_eq!(co.summary, "co at or above 24 ppm for 30s");
        assert!(co.scope.is_empty());
    }

    #[test]
    fn unknown_field_suggests_the_right_one() {
        let text = format!("{HEAD}abve = 1.0\n");
        assert_eq!(errors(&text), vec!["5:1: unknown field `abve`"]);
        let hint = hints(&text)
            .into_iter()
            .next()
            .flatten()
            .unwrap_or_default();
        assert!(
            hint.starts_with("did you mean `above`? expected one of: id, kind, domain"),
            "{hint}"
        );
    }

    #[test]
    fn wrong_types_and_bad_durations() {
        let text = format!("{HEAD}above = \"high\"\nfor = \"10\"\nseverity = 3\n");
        assert_eq!(
            errors(&text),
            vec![
                "5:9: `above` must be a number, found string \"high\"",
                "6:7: `for`: invalid duration \"10\": time unit needed, for example 10sec or 10ms",
                "7:12: `severity` must be a string, found integer `3`",
            ]
        );
    }

    #[test]
    fn unknown_metric_domain_and_severity() {
        let text = "[[rule]]\nid = \"a\"\ndomain = \"mine\"\nmetric = \"soil_water\"\nabove = 1\nseverity = \"critcal\"\n\n[[rule]]\nid = \"b\"\ndomain = \"mines\"\nmetric = \"ch4\"\nabove = 1\n\n[[rule]]\nid = \"c\"\ndomain = \"farm\"\nmetric = \"humidty\"\nabove = 1\n";
        assert_eq!(
            errors(text),
            vec![
                "4:10: unknown mine metric `soil_water`",
                "6:12: unknown severity `critcal`",
                "10:10: unknown domain `mines`",
                "17:10: unknown farm metric `humidty`",
            ]
        );
        assert_eq!(
            hints(text),
            vec![
                Some("`soil_water` is a farm metric; mine metrics: ch4, co, air_velocity, airflow, temperature, seismic_energy, seismic_bumps".into()),
                Some("did you mean `critical`? expected one of: info, warning, critical".into()),
                Some("did you mean `mine`? expected one of: mine, farm".into()),
                Some(
                    "did you mean `humidity`? expected one of: air_temp, humidity, soil_water, soil_temp, body_temp, activity"
                        .into()
                ),
            ]
        );
    }

    #[test]
    fn scope_problems() {
        let text = "[[rule]]\nid = \"a\"\ndomain = \"mine\"\nmetric = \"ch4\"\nscope = { greenhouse = \"gh-1\", kind = \"co\", face = \"\" }\nabove = 1\n\n[[rule]]\nid = \"b\"\ndomain = \"farm\"\nmetric = \"air_temp\"\nscope = \"everything\"\nabove = 35\n\n[[rule]]\nid = \"c\"\ndomain = \"farm\"\nmetric = \"air_temp\"\nscope = { greenhouse = 1 }\nabove = 35\n";
        assert_eq!(
            errors(text),
            vec![
                "5:11: unknown scope label `greenhouse` for mine rules",
                "5:39: this rule can never fire: it watches `ch4` readings but selects sensors of kind `co`",
                "5:52: scope label `face` must not be empty",
                "12:9: `scope` must be \"all\" or a table of label selectors, found \"everything\"",
                "19:24: `scope.greenhouse` must be a string, found integer `1`",
            ]
        );
        let hint = hints(text).into_iter().next().flatten();
        assert_eq!(hint.as_deref(), Some("expected one of: mine, face, kind"));
        let farm = rule(
            "[[rule]]\nid = \"gh\"\ndomain = \"farm\"\nmetric = \"air_temp\"\nscope = { greenhouse = \"gh-1\", kind = \"air_temp\" }\nabove = 35\n",
        );
        assert_eq!(
            farm.scope,
            vec![
                ("greenhouse".into(), "gh-1".into()),
                ("kind".into(), "air_temp".into())
            ]
        );
    }

    #[test]
    fn thresholds_both_neither_and_not_finite() {
        let text = "[[rule]]\nid = \"a\"\ndomain = \"mine\"\nmetric = \"ch4\"\nabove = 1.0\nbelow = 0.5\n\n[[rule]]\nid = \"b\"\ndomain = \"mine\"\nmetric = \"ch4\"\n\n[[rule]]\nid = \"c\"\ndomain = \"mine\"\nmetric = \"ch4\"\nabove = nan\n\n[[rule]]\nid = \"d\"\ndomain = \"mine\"\nmetric = \"ch4\"\nbelow = 1\nclear = -inf\n";
        assert_eq!(
            errors(text),
            vec![
                "6:9: a threshold rule has exactly one of `above` and `below`, this one has both",
                "8:1: rule without threshold: set `above` or `below`",
                "17:9: `above` must be a finite number, found NaN",
                "24:9: `clear` must be a finite number, found -inf",
            ]
        );
    }

    #[test]
    fn clear_must_be_on_the_safe_side() {
        let text = format!(
            "{HEAD}above = 1.0\nclear = 1.2\n[[rule]]\nid = \"low\"\ndomain = \"mine\"\nmetric = \"air_velocity\"\nbelow = 0.25\nclear = 0.2\n"
        );
        assert_eq!(
            errors(&text),
            vec![
                "6:9: `clear` (1.2) must not be greater than `above` (1)",
                "12:9: `clear` (0.2) must not be less than `below` (0.25)",
            ]
        );
        // Equal is fine: no hysteresis.
        let r = rule(&format!("{HEAD}above = 1.0\nclear = 1.0\n"));
        assert_eq!(r.clear.0, 1.0);
    }

    #[test]
    fn missing_fields_point_at_the_rule() {
        let text = "# x\n[[rule]]\nabove = 1\n";
        assert_eq!(
            errors(text),
            vec![
                "2:1: rule without `id`",
                "2:1: rule without `domain`",
                "2:1: rule without `metric`",
            ]
        );
    }

    #[test]
    fn labels_must_not_shadow_engine_labels() {
        let text = format!(
            "{HEAD}above = 1\nlabels = {{ severity = \"x\", mine = \"m\", team = \"t\" }}\n"
        );
        assert_eq!(
            errors(&text),
            vec![
                "6:12: label `severity` is set by the engine",
                "6:28: label `mine` is set by the engine",
            ]
        );
    }

    #[test]
    fn several_errors_in_one_rule_and_across_rules_are_all_reported() {
        let text = r#"[[rule]]
id = "one"
domain = "mine"
metric = "ch5"
abov = 1.0
severity = "loud"
for = "soon"

[[rule]]
id = "two"
domain = "farm"
metric = "body_temp"
above = 40.5
clear = 41
labels = { vet = 1 }

[[rule]]
id = "three"
domain = "farm"
metric = "soil_water"
below = 15
"#;
        assert_eq!(
            errors(text),
            vec![
                "4:10: unknown mine metric `ch5`",
                "5:1: unknown field `abov`",
                "6:12: unknown severity `loud`",
                "7:7: `for`: invalid duration \"soon\": expected number at 0",
                "14:9: `clear` (41) must not be greater than `above` (40.5)",
                "15:18: `labels.vet` must be a string, found integer `1`",
            ]
        );
    }

    #[test]
    fn syntax_errors_do_not_hide_other_rules() {
        let text = "[[rule]]\nid = \"a\"\ndomain = \"mine\"\nmetric = \"ch4\"\nabove = 1.0.0\n\n[[rule]]\nid = \"b\"\ndomain = \"mine\"\nmetric = \"c4\"\nabove = 1\n";
        let found = errors(text);
        assert_eq!(found.len(), 2, "{found:?}");
        assert!(found[0].starts_with("5:"), "{found:?}");
        assert!(found[0].contains("TOML syntax error"), "{found:?}");
        assert_eq!(found[1], "10:10: unknown mine metric `c4`");
    }
}
