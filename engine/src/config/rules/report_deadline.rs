//! The `report_deadline` rule kind: a citizen report left unresolved for longer than its
//! category's deadline after it was created (or last escalated, or reopened) raises an alert
//! about the report, and an escalation ladder hands it up (village -> town -> district) the
//! longer it stays unresolved; its `resolved` event resolves it.
//!
//! ```toml
//! [[rule]]
//! id = "report-escalation"      # required, unique across all rule files
//! kind = "report_deadline"
//! domain = "citizen"            # the only domain with reports
//! categories = ["land_dispute"] # optional; default every category
//! deadline = "48h"              # unresolved this long after its timer started; required
//!                               # unless every watched category has its own deadline
//! category_deadlines = { road_damage = "24h" }   # optional: per-category deadlines
//! escalation = [                # optional: the ladder, measured past the deadline
//!   { overdue = "2d", level = "town" },
//!   { overdue = "7d", level = "district" },
//! ]
//! severity = "warning"
//! summary = "Report {entity} ({category}) unresolved for 48 h at {level} level"
//! ```
//!
//! The alert entity is the report id; alerts carry the labels `category`, `grid`, `level`
//! (village | town | district) and `rule_kind = "report_deadline"`, and no `metric`. There
//! are no levels (`above`, `below`, `clear`), scope or `for`: the deadline is the hold time.
//! A ladder step resolves the alert at the lower level and fires it at the step's level, at
//! the same event time. Steps go up (town before district) and each comes later than the one
//! before.

use std::collections::BTreeMap;

use citybrain_model::{Domain, Metric};
use citybrain_operators::kinds::absence::RULE_KIND_LABEL;
use citybrain_operators::kinds::report_deadline::{EscalationStep, ReportDeadlineRule};
use citybrain_operators::ordered_float::OrderedFloat;
use citybrain_operators::rule::{Direction, RuleRow, ThresholdRule};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_spanned::Spanned;
use toml::de::DeValue;

use super::common::{DurationValue, Fields, duration_words, millis};
use crate::config::de::{SpannedPairs, deserialize_reporting};
use crate::config::diagnostic::{FileCx, one_of_hint};
use crate::config::duration::DurationString;

/// Labels the alerts of this kind carry already.
pub(super) const OWN_LABELS: [&str; 4] = [RULE_KIND_LABEL, "category", "grid", "level"];

/// The levels a ladder step may hand a report to, by their index in the report levels.
const STEP_LEVELS: [(&str, usize); 2] = [("town", 1), ("district", 2)];

/// One step of an escalation ladder as written.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(
    rename = "EscalationStep",
    extend("required" = ["overdue", "level"]),
    description = "A step of the escalation ladder: when a report is still unresolved `overdue` past its deadline, its alert moves to `level`."
)]
struct RawStep {
    /// How long past its deadline the report must still be unresolved, e.g. `"2d"`.
    #[serde(default)]
    #[schemars(with = "DurationString")]
    overdue: Option<Spanned<DurationValue>>,
    /// The level the alert moves to: `town` or `district`.
    #[serde(default)]
    #[schemars(with = "String", extend("enum" = ["town", "district"]))]
    level: Option<Spanned<String>>,
}

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
    /// Unresolved this long after the report's timer started: the deadline of categories
    /// without their own. Required unless `category_deadlines` covers every watched category.
    #[serde(default)]
    #[schemars(with = "DurationString")]
    deadline: Option<Spanned<DurationValue>>,
    /// Deadlines of single categories, category to duration, e.g.
    /// `{ road_damage = "24h", land_dispute = "7d" }`. Default: none (every category has
    /// `deadline`). Without `deadline` only these categories are watched.
    #[serde(default)]
    #[schemars(with = "BTreeMap<String, DurationString>")]
    category_deadlines: Option<Spanned<BTreeMap<String, Spanned<DurationValue>>>>,
    /// The escalation ladder: steps `{ overdue = "2d", level = "town" }`, measured past the
    /// deadline, going up (town, then district), each later than the one before. Default: none
    /// (the alert stays at the report's level).
    #[serde(default)]
    #[schemars(with = "Vec<RawStep>")]
    escalation: Option<Spanned<Vec<Spanned<RawStep>>>>,
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

/// Checks that the domain of a rule of `kind` is `citizen`.
pub(super) fn citizen(
    f: &mut Fields<'_, '_>,
    domain: &Option<Spanned<String>>,
    kind: &str,
) -> bool {
    match domain {
        None => {
            f.missing(
                "domain",
                "rule without `domain`".to_string(),
                Some(format!(
                    "{kind} rules watch citizen reports: domain = \"citizen\""
                )),
            );
            false
        }
        Some(name) if name.get_ref() == "citizen" => true,
        Some(name) => {
            let other = name.get_ref();
            let message = if other == "mine" || other == "farm" {
                format!("{kind} rules watch citizen reports, not domain `{other}`")
            } else {
                format!("unknown domain `{other}`")
            };
            f.error(name.span(), message, Some(one_of_hint(other, &["citizen"])));
            false
        }
    }
}

/// The watched categories, sorted and deduplicated (empty: every category).
pub(super) fn categories(
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

/// The per-category deadlines, sorted by category; `None` after a problem.
fn category_deadlines(
    f: &mut Fields<'_, '_>,
    written: &Option<Spanned<BTreeMap<String, Spanned<DurationValue>>>>,
    categories: Option<&[String]>,
) -> Option<Vec<(String, u64)>> {
    let Some(written) = written else {
        return Some(Vec::new());
    };
    if written.get_ref().is_empty() {
        f.error(
            written.span(),
            "`category_deadlines` must not be empty".to_string(),
            Some("leave it out to give every category `deadline`".to_string()),
        );
        return None;
    }
    let mut ok = true;
    let mut out = Vec::new();
    for (category, value) in written.get_ref() {
        let ms = millis(value.get_ref().0);
        if category.trim().is_empty() {
            f.error(
                value.span(),
                "report categories must not be empty".to_string(),
                None,
            );
            ok = false;
        } else if ms == 0 {
            f.error(
                value.span(),
                format!("the deadline of `{category}` must be at least 1ms"),
                None,
            );
            ok = false;
        } else if let Some(watched) = categories
            && !watched.is_empty()
            && !watched.contains(category)
        {
            f.error(
                value.span(),
                format!("category `{category}` has a deadline but is not in `categories`"),
                Some(format!(
                    "add \"{category}\" to `categories` or remove its deadline"
                )),
            );
            ok = false;
        } else {
            out.push((category.clone(), ms));
        }
    }
    ok.then_some(out)
}

/// The escalation ladder; `None` after a problem.
fn escalation(
    f: &mut Fields<'_, '_>,
    written: &Option<Spanned<Vec<Spanned<RawStep>>>>,
) -> Option<Vec<EscalationStep>> {
    let Some(written) = written else {
        return Some(Vec::new());
    };
    if written.get_ref().is_empty() {
        f.error(
            written.span(),
            "`escalation` must not be empty".to_string(),
            Some("leave it out for no ladder, or add steps like { overdue = \"2d\", level = \"town\" }".to_string()),
        );
        return None;
    }
    let mut ok = true;
    let mut steps: Vec<EscalationStep> = Vec::new();
    for step in written.get_ref() {
        let raw = step.get_ref();
        let overdue = match &raw.overdue {
            None => {
                f.error(
                    step.span(),
                    "escalation step without `overdue`".to_string(),
                    Some("how long past the deadline, e.g. overdue = \"2d\"".to_string()),
                );
                None
            }
            Some(value) if millis(value.get_ref().0) == 0 => {
                f.error(
                    value.span(),
                    "`overdue` must be at least 1ms".to_string(),
                    Some("the deadline itself fires at the report's level".to_string()),
                );
                None
            }
            Some(value) => Some(millis(value.get_ref().0)),
        };
        let names: Vec<&str> = STEP_LEVELS.iter().map(|(n, _)| *n).collect();
        let level = match &raw.level {
            None => {
                f.error(
                    step.span(),
                    "escalation step without `level`".to_string(),
                    Some("level = \"town\" or level = \"district\"".to_string()),
                );
                None
            }
            Some(name) => match STEP_LEVELS.iter().find(|(n, _)| n == name.get_ref()) {
                Some((_, index)) => Some(*index),
                None => {
                    f.error(
                        name.span(),
                        format!("unknown escalation level `{}`", name.get_ref()),
                        Some(one_of_hint(name.get_ref(), &names)),
                    );
                    None
                }
            },
        };
        let (Some(overdue_ms), Some(level)) = (overdue, level) else {
            ok = false;
            continue;
        };
        if let Some(before) = steps.last()
            && (level <= before.level || overdue_ms <= before.overdue_ms)
        {
            f.error(
                step.span(),
                "escalation steps must go up and come later: each step's `level` above and `overdue` longer than the one before".to_string(),
                Some("e.g. [{ overdue = \"2d\", level = \"town\" }, { overdue = \"7d\", level = \"district\" }]".to_string()),
            );
            ok = false;
            continue;
        }
        steps.push(EscalationStep { overdue_ms, level });
    }
    ok.then_some(steps)
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
    let is_citizen = citizen(&mut f, &raw.domain, "report_deadline");
    let categories = categories(&mut f, &raw.categories);
    let per_category = category_deadlines(&mut f, &raw.category_deadlines, categories.as_deref());
    // `deadline` may be left out when `category_deadlines` covers every watched category.
    let has_own = raw.category_deadlines.is_some() || f.reported("category_deadlines");
    let deadline_ms = match (&raw.deadline, has_own) {
        (None, true) => None,
        (deadline, _) => f.positive_duration(
            "deadline",
            deadline,
            None,
            "how long a report may stay unresolved, e.g. deadline = \"48h\", or per category: category_deadlines = { road_damage = \"24h\" }",
        ),
    };
    if raw.deadline.is_none()
        && let (Some(watched), Some(own), Some(spanned)) =
            (&categories, &raw.category_deadlines, &raw.categories)
    {
        for category in watched {
            if !own.get_ref().contains_key(category) {
                f.error(
                    spanned.span(),
                    format!("category `{category}` has no deadline"),
                    Some(format!(
                        "set `deadline` for every category, or add {category} to `category_deadlines`"
                    )),
                );
            }
        }
    }
    let ladder = escalation(&mut f, &raw.escalation);
    let severity = f.severity(&raw.severity);
    let labels = f.labels(&raw.labels, Some(Domain::Citizen), &OWN_LABELS);
    if !f.ok() || !is_citizen {
        return Vec::new();
    }
    let (Some(id), Some(categories), Some(category_deadlines), Some(escalation), Some(severity)) =
        (id, categories, per_category, ladder, severity)
    else {
        return Vec::new();
    };
    let summary = raw.summary.unwrap_or_else(|| match deadline_ms {
        Some(ms) if category_deadlines.is_empty() && escalation.is_empty() => format!(
            "Report {{entity}} ({{category}}) unresolved for {} at {{level}} level",
            duration_words(ms)
        ),
        _ => "Report {entity} ({category}) unresolved for {value} h, at {level} level".to_string(),
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
        category_deadlines,
        escalation,
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
        assert_eq!(r.deadline_ms, Some(48 * 3_600_000));
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

    #[test]
    fn category_deadlines_and_the_escalation_ladder() {
        let r = rule(
            "[[rule]]\nid = \"ladder\"\nkind = \"report_deadline\"\ndomain = \"citizen\"\ncategories = [\"road_damage\", \"noise\"]\ncategory_deadlines = { road_damage = \"24h\", noise = \"2d\" }\nescalation = [\n  { overdue = \"2d\", level = \"town\" },\n  { overdue = \"7d\", level = \"district\" },\n]\n",
        );
        let day = 86_400_000;
        assert_eq!(r.deadline_ms, None);
        assert_eq!(
            r.category_deadlines,
            vec![
                ("noise".to_string(), 2 * day),
                ("road_damage".to_string(), day)
            ]
        );
        assert_eq!(
            r.escalation,
            vec![
                EscalationStep {
                    overdue_ms: 2 * day,
                    level: 1
                },
                EscalationStep {
                    overdue_ms: 7 * day,
                    level: 2
                },
            ]
        );
        assert_eq!(
            (r.deadline_for("noise"), r.deadline_for("other")),
            (Some(2 * day), None)
        );
        assert_eq!(
            r.alarm.summary,
            "Report {entity} ({category}) unresolved for {value} h, at {level} level"
        );
        assert_eq!(RuleRow::ReportDeadline(r).history_ms(), 9 * day);
        // A default deadline for the other categories.
        let r = rule(
            "[[rule]]\nid = \"x\"\nkind = \"report_deadline\"\ndomain = \"citizen\"\ndeadline = \"3d\"\ncategory_deadlines = { road_damage = \"1d\" }\n",
        );
        assert_eq!(
            (r.deadline_for("road_damage"), r.deadline_for("noise")),
            (Some(86_400_000), Some(3 * 86_400_000))
        );
    }

    #[test]
    fn ladder_and_category_deadline_problems() {
        let text = "[[rule]]\nid = \"a\"\nkind = \"report_deadline\"\ndomain = \"citizen\"\ncategories = [\"noise\", \"road_damage\"]\ncategory_deadlines = { noise = \"1d\", wage = \"2d\" }\nescalation = [\n  { overdue = \"2d\", level = \"district\" },\n  { overdue = \"1d\", level = \"town\" },\n  { overdue = \"0s\", level = \"county\" },\n  { level = \"town\", after = \"1d\" },\n]\n\n[[rule]]\nid = \"b\"\nkind = \"report_deadline\"\ndomain = \"citizen\"\ncategory_deadlines = {}\nescalation = []\n";
        assert_eq!(
            errors(text),
            vec![
                "r.toml:5:14: category `road_damage` has no deadline",
                "r.toml:6:45: category `wage` has a deadline but is not in `categories`",
                "r.toml:9:3: escalation steps must go up and come later: each step's `level` above and `overdue` longer than the one before",
                "r.toml:10:15: `overdue` must be at least 1ms",
                "r.toml:10:29: unknown escalation level `county`",
                "r.toml:11:3: escalation step without `overdue`",
                "r.toml:11:21: unknown field `escalation[3].after`",
                "r.toml:18:22: `category_deadlines` must not be empty",
                "r.toml:19:14: `escalation` must not be empty",
            ]
        );
    }
}
