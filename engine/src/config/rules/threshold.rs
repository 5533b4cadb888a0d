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

use std::collections::BTreeMap;
use std::ops::Range;
use std::time::Duration;

use citybrain_model::{Domain, Labels, Metric, Severity};
use citybrain_operators::rule::{Direction, ThresholdRule};
use serde::Deserialize;
use serde_spanned::Spanned;
use toml::de::DeValue;

use crate::config::de::{SpannedPairs, WordOrPairs, deserialize_reporting};
use crate::config::diagnostic::{FileCx, closest, one_of_hint};
use crate::config::duration;

/// A `[[rule]]` table of kind `threshold` as written. Everything is optional here so that
/// every problem, including missing fields, is reported by [`compile`] with a clear message.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawThreshold {
    /// Checked for uniqueness by the rule-file layer.
    #[serde(default)]
    id: Option<String>,
    /// Selects the kind (read by the rule-file layer); only its type is checked here.
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
    above: Option<Spanned<f64>>,
    #[serde(default)]
    below: Option<Spanned<f64>>,
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

/// The domains a threshold rule can watch.
const DOMAINS: [&str; 2] = ["mine", "farm"];

/// The severities, by name.
const SEVERITIES: [&str; 3] = ["info", "warning", "critical"];

/// Alert labels the engine sets itself.
const RESERVED_LABELS: [&str; 3] = ["rule", "severity", "metric"];

/// The entity labels rules of `domain` can select on (see the registry records).
pub(crate) fn entity_labels(domain: Domain) -> &'static [&'static str] {
    match domain {
        Domain::Mine => &["mine", "face", "kind"],
        Domain::Farm => &["farm", "greenhouse", "herd", "animal", "kind"],
        Domain::Citizen => &["district", "town", "village"],
    }
}

fn metric_names(domain: Domain) -> Vec<&'static str> {
    Metric::ALL
        .iter()
        .filter(|m| m.domain() == domain)
        .map(|m| m.as_str())
        .collect()
}

/// Looks `name` up among `domain`'s metrics, reporting an unknown one at `span`.
fn metric_of(
    cx: &mut FileCx<'_>,
    name: &str,
    domain: Domain,
    span: Range<usize>,
    what: &str,
) -> Option<Metric> {
    if let Some(metric) = Metric::parse(name, domain) {
        return Some(metric);
    }
    let known = metric_names(domain);
    let elsewhere = Metric::ALL
        .iter()
        .find(|m| m.as_str() == name)
        .map(|m| m.domain().as_str());
    let hint = match elsewhere {
        Some(other) => format!(
            "`{name}` is a {other} metric; {} metrics: {}",
            domain.as_str(),
            known.join(", ")
        ),
        None => one_of_hint(name, &known),
    };
    cx.error(
        span,
        format!("unknown {} {what} `{name}`", domain.as_str()),
        Some(hint),
    );
    None
}

/// A number that must be finite, or a report at its position.
fn finite(cx: &mut FileCx<'_>, field: &str, value: &Spanned<f64>) -> Option<f64> {
    let number = *value.get_ref();
    if number.is_finite() {
        Some(number)
    } else {
        cx.error(
            value.span(),
            format!("`{field}` must be a finite number, found {number}"),
            None,
        );
        None
    }
}

/// The summary used when a rule has none, e.g. `ch4 at or above 1% for 10s`.
fn default_summary(metric: Metric, direction: Direction, threshold: f64, hold: Duration) -> String {
    let side = match direction {
        Direction::Above => "at or above",
        Direction::Below => "at or below",
    };
    let unit = match metric.unit() {
        "%" => "%".to_string(),
        unit => format!(" {unit}"),
    };
    let mut summary = format!("{} {side} {threshold}{unit}", metric.as_str());
    if !hold.is_zero() {
        summary.push_str(&format!(" for {}", humantime::format_duration(hold)));
    }
    summary
}

/// Compiles one `[[rule]]` table of kind `threshold` into one rule row.
pub(super) fn compile(cx: &mut FileCx<'_>, item: Spanned<DeValue<'_>>) -> Vec<ThresholdRule> {
    let header = item.span();
    let problems_before = cx.count();
    let (raw, removed) = deserialize_reporting::<RawThreshold>(cx, item, "");
    let Some(raw) = raw else {
        return Vec::new();
    };
    // A field whose entry had an error, or was misspelled, is reported already: not as missing.
    let reported = |field: &str| {
        removed
            .iter()
            .any(|key| key == field || closest(key, &[field]).is_some())
    };

    let id = raw.id;
    if id.is_none() && !reported("id") {
        cx.missing(
            header.clone(),
            "rule without `id`",
            Some("give every rule a unique id, e.g. id = \"ch4-alarm\"".to_string()),
        );
    }

    let domain = match &raw.domain {
        None if reported("domain") => None,
        None => {
            cx.missing(
                header.clone(),
                "rule without `domain`",
                Some(format!("expected one of: {}", DOMAINS.join(", "))),
            );
            None
        }
        Some(name) => match name.get_ref().as_str() {
            "mine" => Some(Domain::Mine),
            "farm" => Some(Domain::Farm),
            other => {
                let message = if other == "citizen" {
                    "threshold rules cannot watch domain `citizen`: citizen reports carry no metric"
                        .to_string()
                } else {
                    format!("unknown domain `{other}`")
                };
                cx.error(name.span(), message, Some(one_of_hint(other, &DOMAINS)));
                None
            }
        },
    };

    let metric = match (&raw.metric, domain) {
        (None, _) if reported("metric") => None,
        (None, _) => {
            let hint =
                domain.map(|d| format!("{} metrics: {}", d.as_str(), metric_names(d).join(", ")));
            cx.missing(header.clone(), "rule without `metric`", hint);
            None
        }
        (Some(name), Some(domain)) => metric_of(cx, name.get_ref(), domain, name.span(), "metric"),
        (Some(_), None) => None,
    };

    let mut scope = BTreeMap::new();
    match (&raw.scope, domain) {
        (None, _) | (Some(_), None) => {}
        (Some(written), Some(domain)) => match written.get_ref() {
            WordOrPairs::Word(word) if word == "all" => {}
            WordOrPairs::Word(word) => cx.error(
                written.span(),
                format!("`scope` must be \"all\" or a table of label selectors, found \"{word}\""),
                Some(format!(
                    "e.g. scope = {{ {} = \"...\" }}; {} labels: {}",
                    entity_labels(domain).first().copied().unwrap_or("kind"),
                    domain.as_str(),
                    entity_labels(domain).join(", ")
                )),
            ),
            WordOrPairs::Pairs(pairs) => {
                for (name, value) in &pairs.0 {
                    let allowed = entity_labels(domain);
                    if !allowed.contains(&name.get_ref().as_str()) {
                        cx.error(
                            name.span(),
                            format!(
                                "unknown scope label `{}` for {} rules",
                                name.get_ref(),
                                domain.as_str()
                            ),
                            Some(one_of_hint(name.get_ref(), allowed)),
                        );
                        continue;
                    }
                    if value.get_ref().is_empty() {
                        cx.error(
                            value.span(),
                            format!("scope label `{}` must not be empty", name.get_ref()),
                            None,
                        );
                        continue;
                    }
                    if name.get_ref() == "kind"
                        && let Some(kind) =
                            metric_of(cx, value.get_ref(), domain, value.span(), "sensor kind")
                        && let Some(metric) = metric
                        && kind != metric
                    {
                        cx.error(
                            value.span(),
                            format!(
                                "this rule can never fire: it watches `{}` readings but selects sensors of kind `{}`",
                                metric.as_str(),
                                kind.as_str()
                            ),
                            Some("a sensor's kind is the metric it measures; drop the `kind` selector".to_string()),
                        );
                    }
                    scope.insert(name.get_ref().clone(), value.get_ref().clone());
                }
            }
        },
    }

    let threshold = match (&raw.above, &raw.below) {
        (Some(above), Some(below)) => {
            let later = if above.span().start > below.span().start {
                above
            } else {
                below
            };
            cx.error(
                later.span(),
                "a threshold rule has exactly one of `above` and `below`, this one has both",
                Some("for a band, write two rules".to_string()),
            );
            None
        }
        (None, None) if reported("above") || reported("below") => None,
        (None, None) => {
            cx.missing(
                header.clone(),
                "rule without threshold: set `above` or `below`",
                Some("e.g. above = 1.0 alarms at values >= 1.0".to_string()),
            );
            None
        }
        (Some(above), None) => finite(cx, "above", above).map(|t| (Direction::Above, t)),
        (None, Some(below)) => finite(cx, "below", below).map(|t| (Direction::Below, t)),
    };

    let clear = match (&raw.clear, threshold) {
        (None, threshold) => threshold.map(|(_, t)| t),
        (Some(clear), threshold) => {
            let value = finite(cx, "clear", clear);
            match (value, threshold) {
                (Some(c), Some((Direction::Above, t))) if c > t => {
                    cx.error(
                        clear.span(),
                        format!("`clear` ({c}) must not be greater than `above` ({t})"),
                        Some("an `above` rule resolves once the value falls below `clear`, so clear <= above".to_string()),
                    );
                    None
                }
                (Some(c), Some((Direction::Below, t))) if c < t => {
                    cx.error(
                        clear.span(),
                        format!("`clear` ({c}) must not be less than `below` ({t})"),
                        Some("a `below` rule resolves once the value rises above `clear`, so clear >= below".to_string()),
                    );
                    None
                }
                (value, _) => value,
            }
        }
    };

    let severity = match &raw.severity {
        None => Some(Severity::Warning),
        Some(name) => match name.get_ref().as_str() {
            "info" => Some(Severity::Info),
            "warning" => Some(Severity::Warning),
            "critical" => Some(Severity::Critical),
            other => {
                cx.error(
                    name.span(),
                    format!("unknown severity `{other}`"),
                    Some(one_of_hint(other, &SEVERITIES)),
                );
                None
            }
        },
    };

    let mut labels = BTreeMap::new();
    for (name, value) in raw.labels.iter().flat_map(|l| l.0.iter()) {
        let text = name.get_ref().as_str();
        if text.trim().is_empty() {
            cx.error(name.span(), "label names must not be empty", None);
        } else if RESERVED_LABELS.contains(&text)
            || domain.is_some_and(|d| entity_labels(d).contains(&text))
        {
            let hint = if RESERVED_LABELS.contains(&text) {
                "alerts carry `rule`, `severity` and `metric` already".to_string()
            } else {
                "alerts carry the entity's labels (mine, face, ...) already".to_string()
            };
            cx.error(
                name.span(),
                format!("label `{text}` is set by the engine"),
                Some(hint),
            );
        } else {
            labels.insert(text.to_string(), value.get_ref().clone());
        }
    }

    if cx.count() > problems_before {
        return Vec::new();
    }
    let (
        Some(id),
        Some(domain),
        Some(metric),
        Some((direction, threshold)),
        Some(clear),
        Some(severity),
    ) = (id, domain, metric, threshold, clear, severity)
    else {
        return Vec::new();
    };
    let hold = raw.hold.unwrap_or_default();
    let summary = raw
        .summary
        .unwrap_or_else(|| default_summary(metric, direction, threshold, hold));
    let scope: Labels = scope.into_iter().collect();
    let labels: Labels = labels.into_iter().collect();
    vec![ThresholdRule {
        id,
        domain,
        metric,
        scope,
        direction,
        threshold: threshold.into(),
        clear: clear.into(),
        hold_ms: u64::try_from(hold.as_millis()).unwrap_or(u64::MAX),
        severity,
        summary,
        labels,
    }]
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::load_rules_str;

    fn rules(text: &str) -> Vec<ThresholdRule> {
        match load_rules_str(Path::new("r.toml"), text) {
            Ok(rules) => rules,
            Err(all) => panic!("expected valid rules, got:\n{all}"),
        }
    }

    fn rule(text: &str) -> ThresholdRule {
        match rules(text).as_slice() {
            [one] => one.clone(),
            other => panic!("expected one rule, got {other:?}"),
        }
    }

    /// `line:col: message` of every problem.
    fn errors(text: &str) -> Vec<String> {
        match load_rules_str(Path::new("r.toml"), text) {
            Ok(rules) => panic!("expected errors, got {rules:?}"),
            Err(all) => all
                .iter()
                .map(|d| format!("{}:{}: {}", d.line, d.column, d.message))
                .collect(),
        }
    }

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
                Some("`soil_water` is a farm metric; mine metrics: ch4, co, air_velocity, airflow, temperature".into()),
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
