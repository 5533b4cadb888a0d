//! The `follow_up` rule kind: the return visit after a citizen report is resolved falls due a
//! configured time later; without a `followed_up` event by then, `follow-up overdue` fires.
//!
//! ```toml
//! [[rule]]
//! id = "follow-up-overdue"      # required, unique across all rule files
//! kind = "follow_up"
//! domain = "citizen"            # the only domain with reports
//! categories = ["road_damage"]  # optional; default every category
//! due = "15d"                   # required: the visit falls due this long after resolution
//! severity = "info"
//! summary = "Follow-up of report {entity} ({category}) overdue"
//! ```
//!
//! The alert entity is the report id; alerts carry the labels `category`, `grid`, `level`
//! (village | town | district: where the report was resolved) and `rule_kind = "follow_up"`,
//! and no `metric`. The `followed_up` event resolves the alert, and so does `reopened`. There
//! are no levels (`above`, `below`, `clear`), scope or `for`: `due` is the hold time.

use citybrain_model::{Domain, Metric};
use citybrain_operators::kinds::follow_up::FollowUpRule;
use citybrain_operators::ordered_float::OrderedFloat;
use citybrain_operators::rule::{Direction, RuleRow, ThresholdRule};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_spanned::Spanned;
use toml::de::DeValue;

use super::common::{DurationValue, Fields, duration_words};
use super::report_deadline::{OWN_LABELS, categories, citizen};
use crate::config::de::{SpannedPairs, deserialize_reporting};
use crate::config::diagnostic::FileCx;
use crate::config::duration::DurationString;

/// A `[[rule]]` table of kind `follow_up` as written; everything optional so that [`compile`]
/// reports every problem.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(
    rename = "FollowUpRule",
    extend("required" = ["id", "kind", "domain", "due"]),
    description = "A `follow_up` rule: the return visit after a report is resolved falls due `due` later; without a `followed_up` event by then, `follow-up overdue` fires."
)]
pub(super) struct RawFollowUp {
    /// Rule id: required, unique across all rule files.
    #[serde(default)]
    id: Option<String>,
    /// Rule kind.
    #[serde(default)]
    #[allow(dead_code)]
    #[schemars(with = "String", extend("const" = "follow_up"))]
    kind: Option<String>,
    /// `citizen`, the only domain with reports.
    #[serde(default)]
    #[schemars(with = "String", extend("enum" = ["citizen"]))]
    domain: Option<Spanned<String>>,
    /// Report categories the rule watches. Default: every category.
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    categories: Option<Spanned<Vec<Spanned<String>>>>,
    /// Required: the return visit falls due this long after the report's `resolved` event,
    /// e.g. `"15d"`.
    #[serde(default)]
    #[schemars(with = "DurationString")]
    due: Option<Spanned<DurationValue>>,
    /// `info`, `warning` or `critical`. Default: `"warning"`.
    #[serde(default)]
    #[schemars(with = "String", extend("enum" = ["info", "warning", "critical"]))]
    severity: Option<Spanned<String>>,
    /// Alert summary; `{label}` and `{value}` (hours since resolution) placeholders are
    /// filled in. Default: generated.
    #[serde(default)]
    summary: Option<String>,
    /// Extra alert labels, name to value, e.g. `{ team = "return-visits" }`. Default: none.
    #[serde(default)]
    #[schemars(with = "SpannedPairs")]
    labels: Option<SpannedPairs>,
}

/// Compiles one `[[rule]]` table of kind `follow_up` into one rule row.
pub(super) fn compile(cx: &mut FileCx<'_>, item: Spanned<DeValue<'_>>) -> Vec<RuleRow> {
    let header = item.span();
    let before = cx.count();
    let (raw, removed) = deserialize_reporting::<RawFollowUp>(cx, item, "");
    let Some(raw) = raw else {
        return Vec::new();
    };
    let mut f = Fields::new(cx, header, before, removed);
    let id = f.id(raw.id);
    let is_citizen = citizen(&mut f, &raw.domain, "follow_up");
    let categories = categories(&mut f, &raw.categories);
    let due_ms = f.positive_duration(
        "due",
        &raw.due,
        None,
        "how long after resolution the return visit falls due, e.g. due = \"15d\"",
    );
    let severity = f.severity(&raw.severity);
    let labels = f.labels(&raw.labels, Some(Domain::Citizen), &OWN_LABELS);
    if !f.ok() || !is_citizen {
        return Vec::new();
    }
    let (Some(id), Some(categories), Some(due_ms), Some(severity)) =
        (id, categories, due_ms, severity)
    else {
        return Vec::new();
    };
    let summary = raw.summary.unwrap_or_else(|| {
        format!(
            "Follow-up of report {{entity}} ({{category}}) overdue: not visited {} after resolution",
            duration_words(due_ms)
        )
    });
    let alarm = ThresholdRule {
        id,
        domain: Domain::Citizen,
        // Unused: reports carry no metric, and citizen transitions no `metric` label.
        metric: Metric::Ch4,
        scope: Vec::new(),
        // Overdue (1) fires, visited (0) clears.
        direction: Direction::Above,
        threshold: OrderedFloat(1.0),
        clear: OrderedFloat(1.0),
        hold_ms: 0,
        severity,
        summary,
        labels,
    };
    vec![RuleRow::FollowUp(FollowUpRule {
        alarm,
        categories,
        due_ms,
    })]
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::load_rules_str;
    use crate::config::rules::test_support::errors;

    #[test]
    fn a_rule_and_its_defaults() {
        let text = "[[rule]]\nid = \"visit\"\nkind = \"follow_up\"\ndomain = \"citizen\"\ncategories = [\"road_damage\"]\ndue = \"15d\"\nlabels = { team = \"visits\" }\n";
        let rule = match load_rules_str(Path::new("r.toml"), text).as_deref() {
            Ok([RuleRow::FollowUp(rule)]) => rule.clone(),
            other => panic!("expected one follow_up rule, got {other:?}"),
        };
        assert_eq!(rule.due_ms, 15 * 86_400_000);
        assert_eq!(rule.categories, vec!["road_damage"]);
        assert_eq!(rule.alarm.severity, citybrain_model::Severity::Warning);
        assert_eq!(
            rule.alarm.summary,
            "Follow-up of report {entity} ({category}) overdue: not visited 360h after resolution"
        );
        assert_eq!(
            rule.alarm.labels,
            vec![("team".to_string(), "visits".to_string())]
        );
    }

    #[test]
    fn every_problem_is_reported() {
        let text = "[[rule]]\nid = \"a\"\nkind = \"follow_up\"\ndomain = \"farm\"\ndue = \"0s\"\n\n[[rule]]\nid = \"b\"\nkind = \"follow_up\"\ndomain = \"citizen\"\ndeadline = \"2d\"\nlabels = { grid = \"x\" }\n";
        assert_eq!(
            errors(text),
            vec![
                "4:10: follow_up rules watch citizen reports, not domain `farm`",
                "5:7: `due` must be at least 1ms",
                "7:1: rule without `due`",
                "11:1: unknown field `deadline`",
                "12:12: label `grid` is set by the engine",
            ]
        );
    }
}
