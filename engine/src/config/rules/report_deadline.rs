//! The `report_deadline` rule kind: a citizen report left unresolved for longer than a
//! deadline after it was created (or last escalated, or reopened) raises an alert about the
//! report; its `resolved` event resolves it.
//!
//! ```toml
//! [[rule]]
//! id = "report-escalation"      # required, unique across all rule files
//! kind = "report_deadline"
//! domain = "citizen"            # the only domain with reports
//! categories = ["land_dispute"] # optional; default every category
//! deadline = "48h"              # required: unresolved this long after its timer started
//! severity = "warning"
//! summary = "Report {entity} ({category}) unresolved for 48 h at {level} level"
//! ```
//!
//! The alert entity is the report id; alerts carry the labels `category`, `grid`, `level`
//! (village | town | district) and `rule_kind = "report_deadline"`, and no `metric`. There
//! are no levels (`above`, `below`, `clear`), scope or `for`: the deadline is the hold time.

use citybrain_model::{Domain, Metric};
use citybrain_operators::kinds::absence::RULE_KIND_LABEL;
use citybrain_operators::kinds::report_deadline::ReportDeadlineRule;
use citybrain_operators::ordered_float::OrderedFloat;
use citybrain_operators::rule::{Direction, RuleRow, ThresholdRule};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_spanned::Spanned;
use toml::de::DeValue;

use super::common::{DurationValue, Fields, duration_words};
use crate::config::de::{SpannedPairs, deserialize_reporting};
use crate::config::diagnostic::{FileCx, one_of_hint};
use crate::config::duration::DurationString;

/// Labels the alerts of this kind carry already.
const OWN_LABELS: [&str; 4] = [RULE_KIND_LABEL, "category", "grid", "level"];

/// A `[[rule]]` table of kind `report_deadline` as written; everything optional so that
/// [`compile`] reports every problem.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(
    rename = "ReportDeadlineRule",
    extend("required" = ["id", "kind", "domain", "deadline"]),
    description = "A `report_deadline` rule: a citizen report left unresolved for longer than a deadline raises an alert; its `resolved` event resolves it."
)]
pub(super) struct RawReportDeadline {
    /// Rule id: required, unique across all rule files.
    #[serde(default)]
    id: Option<String>,
    /// Rule kind.
    #[serde(default)]
    #[allow(dead_code)]
    #[schemars(with = "String", extend("const" = "report_deadline"))]
    kind: Option<String>,
    /// `citizen`, the only domain with reports.
    #[serde(default)]
    #[schemars(with = "String", extend("enum" = ["citizen"]))]
    domain: Option<Spanned<String>>,
    /// Report categories the rule watches. Default: every category.
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    categories: Option<Spanned<Vec<Spanned<String>>>>,
    /// Required: unresolved this long after the report's timer started.
    #[serde(default)]
    #[schemars(with = "DurationString")]
    deadline: Option<Spanned<DurationValue>>,
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

/// Checks that the domain is `citizen`.
fn citizen(f: &mut Fields<'_, '_>, domain: &Option<Spanned<String>>) -> bool {
    match domain {
        None => {
            f.missing(
                "domain",
                "rule without `domain`".to_string(),
                Some(
                    "report_deadline rules watch citizen reports: domain = \"citizen\"".to_string(),
                ),
            );
            false
        }
        Some(name) if name.get_ref() == "citizen" => true,
        Some(name) => {
            let other = name.get_ref();
            let message = if other == "mine" || other == "farm" {
                format!("report_deadline rules watch citizen reports, not domain `{other}`")
            } else {
                format!("unknown domain `{other}`")
            };
            f.error(name.span(), message, Some(one_of_hint(other, &["citizen"])));
            false
        }
    }
}

/// The watched categories, sorted and deduplicated (empty: every category).
fn categories(
    f: &mut Fields<'_, '_>,
    written: &Option<Spanned<Vec<Spanned<String>>>>,
) -> Option<Vec<String>> {
    let Some(written) = written else {
        return Some(Vec::new());
    };
    if written.get_ref().is_empty() {
        f.error(
            written.span(),
            "`categories` must not be empty".to_string(),
            Some("leave `categories` out to watch reports of every category".to_string()),
        );
        return None;
    }
    let mut ok = true;
    let mut names = Vec::new();
    for name in written.get_ref() {
        if name.get_ref().trim().is_empty() {
            f.error(
                name.span(),
                "report categories must not be empty".to_string(),
                None,
            );
            ok = false;
        } else {
            names.push(name.get_ref().clone());
        }
    }
    names.sort();
    names.dedup();
    ok.then_some(names)
}

/// Compiles one `[[rule]]` table of kind `report_deadline` into one rule row.
pub(super) fn compile(cx: &mut FileCx<'_>, item: Spanned<DeValue<'_>>) -> Vec<RuleRow> {
    let header = item.span();
    let before = cx.count();
    let (raw, removed) = deserialize_reporting::<RawReportDeadline>(cx, item, "");
    let Some(raw) = raw else {
        return Vec::new();
    };
    let mut f = Fields::new(cx, header, before, removed);
    let id = f.id(raw.id);
    let is_citizen = citizen(&mut f, &raw.domain);
    let categories = categories(&mut f, &raw.categories);
    let deadline_ms = f.positive_duration(
        "deadline",
        &raw.deadline,
        None,
        "how long a report may stay unresolved, e.g. deadline = \"48h\"",
    );
    let severity = f.severity(&raw.severity);
    let labels = f.labels(&raw.labels, Some(Domain::Citizen), &OWN_LABELS);
    if !f.ok() || !is_citizen {
        return Vec::new();
    }
    let (Some(id), Some(categories), Some(deadline_ms), Some(severity)) =
        (id, categories, deadline_ms, severity)
    else {
        return Vec::new();
    };
    let summary = raw.summary.unwrap_or_else(|| {
        format!(
            "Report {{entity}} ({{category}}) unresolved for {} at {{level}} level",
            duration_words(deadline_ms)
        )
    });
    let alarm = ThresholdRule {
        id,
        domain: Domain::Citizen,
        // Unused: reports carry no metric, and citizen transitions no `metric` label.
        metric: Metric::Ch4,
        scope: Vec::new(),
        // Overdue (1) fires, resolved (0) clears.
        direction: Direction::Above,
        threshold: OrderedFloat(1.0),
        clear: OrderedFloat(1.0),
        hold_ms: 0,
        severity,
        summary,
        labels,
    };
    vec![RuleRow::ReportDeadline(ReportDeadlineRule {
        alarm,
        categories,
        deadline_ms,
    })]
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::load_rules_str;

    fn rule(text: &str) -> ReportDeadlineRule {
        match load_rules_str(Path::new("r.toml"), text).as_deref() {
            Ok([RuleRow::ReportDeadline(rule)]) => rule.clone(),
            other => panic!("expected one report_deadline rule, got {other:?}"),
        }
    }

    fn errors(text: &str) -> Vec<String> {
        match load_rules_str(Path::new("r.toml"), text) {
            Ok(rules) => panic!("expected errors, got {rules:?}"),
            Err(all) => all
                .iter()
                .map(|d| {
                    format!(
                        "{}:{}:{}: {}",
                        d.file.display(),
                        d.line,
                        d.column,
                        d.message
                    )
                })
                .collect(),
        }
    }

    #[test]
    fn a_rule_and_its_defaults() {
        let r = rule(
            "[[rule]]\nid = \"report-escalation\"\nkind = \"report_deadline\"\ndomain = \"citizen\"\ncategories = [\"wage_dispute\", \"land_dispute\"]\ndeadline = \"48h\"\nseverity = \"warning\"\nsummary = \"Report {entity}\"\n",
        );
        assert_eq!(r.deadline_ms, 48 * 3_600_000);
        assert_eq!(r.categories, vec!["land_dispute", "wage_dispute"]);
        assert_eq!(r.alarm.domain, Domain::Citizen);
        assert_eq!(r.alarm.summary, "Report {entity}");
        assert!(r.watches("land_dispute") && !r.watches("noise"));
        let r = rule(
            "[[rule]]\nid = \"any\"\nkind = \"report_deadline\"\ndomain = \"citizen\"\ndeadline = \"2h\"\nlabels = { team = \"petitions\" }\n",
        );
        assert!(r.categories.is_empty() && r.watches("noise"));
        assert_eq!(
            r.alarm.summary,
            "Report {entity} ({category}) unresolved for 2h at {level} level"
        );
        assert_eq!(
            r.alarm.labels,
            vec![("team".to_string(), "petitions".to_string())]
        );
    }

    #[test]
    fn every_problem_is_reported() {
        let text = "[[rule]]\nid = \"a\"\nkind = \"report_deadline\"\ndomain = \"mine\"\ndeadline = \"0s\"\ncategories = []\n\n[[rule]]\nid = \"b\"\nkind = \"report_deadline\"\ndomain = \"citizen\"\ncategories = [\"\"]\nabove = 1\nlabels = { level = \"x\" }\n\n[[rule]]\nid = \"c\"\nkind = \"report_deadline\"\ndomain = \"citizen\"\ndeadline = \"soon\"\n\n[[rule]]\nid = \"d\"\nkind = \"report_deadline\"\n";
        assert_eq!(
            errors(text),
            vec![
                "r.toml:4:10: report_deadline rules watch citizen reports, not domain `mine`",
                "r.toml:5:12: `deadline` must be at least 1ms",
                "r.toml:6:14: `categories` must not be empty",
                "r.toml:8:1: rule without `deadline`",
                "r.toml:12:15: report categories must not be empty",
                "r.toml:13:1: unknown field `above`",
                "r.toml:14:12: label `level` is set by the engine",
                "r.toml:20:12: `deadline`: invalid duration \"soon\": expected number at 0",
                "r.toml:22:1: rule without `domain`",
                "r.toml:22:1: rule without `deadline`",
            ]
        );
    }
}
