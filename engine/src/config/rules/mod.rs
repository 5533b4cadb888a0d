//! Rule files: `[[rule]]` tables, each compiled to rows of the differential `rules` collection.
//!
//! ```toml
//! [[rule]]
//! id = "ch4-alarm"      # required, unique across all rule files
//! kind = "threshold"    # optional; default "threshold"
//! # ... the fields of the kind, see `threshold`
//! ```
//!
//! Each rule table is checked on its own, so one bad rule does not hide the problems of the
//! next. Rule ids are unique across every file loaded together; a duplicate is reported at the
//! second occurrence with the location of the first.
//!
//! A new rule kind is one file in this directory plus one line in [`KINDS`]; [`common`] holds
//! the checks of the fields every kind shares.
//!
//! | kind | file | evaluates |
//! |---|---|---|
//! | `threshold` (default) | [`threshold`] | each reading against a level |
//! | `window` | [`window`] | count/sum/avg/min/max/pNN over tumbling or hopping windows |
//! | `rate_of_rise` | [`rate_of_rise`] | change per minute over a trailing window |
//! | `baseline` | [`baseline`] | each reading against the entity's trailing mean |
//! | `correlation` | [`correlation`] | two metrics of one group within a tolerance |
//! | `absence` | [`absence`] | silence longer than a number of the entity's cadences; with `stall_after`, a Kafka partition delivering nothing (`ingest stalled`) |
//! | `report_deadline` | [`report_deadline`] | a citizen report unresolved longer than its category's deadline, with an escalation ladder |
//! | `follow_up` | [`follow_up`] | a resolved report's return visit overdue |

mod absence;
mod baseline;
mod common;
mod correlation;
mod follow_up;
mod rate_of_rise;
mod report_deadline;
mod threshold;
mod window;

use std::borrow::Cow;
use std::collections::HashMap;
use std::path::Path;

use citybrain_operators::rule::RuleRow;
use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde_spanned::Spanned;
use toml::de::DeValue;

use super::de::{parse_document, root_table};
use super::diagnostic::{Diagnostic, Diagnostics, FileCx, one_of_hint};

/// Compiles one `[[rule]]` table into rows, reporting every problem to the file context. A
/// rule with problems yields no rows.
type Compile = fn(&mut FileCx<'_>, Spanned<DeValue<'_>>) -> Vec<RuleRow>;

/// The rule kinds by their `kind = "..."` name.
const KINDS: &[(&str, Compile)] = &[
    ("threshold", threshold::compile),
    ("window", window::compile),
    ("rate_of_rise", rate_of_rise::compile),
    ("baseline", baseline::compile),
    ("correlation", correlation::compile),
    ("absence", absence::compile),
    ("report_deadline", report_deadline::compile),
    ("follow_up", follow_up::compile),
];

/// The kind of a rule without `kind`.
const DEFAULT_KIND: Compile = threshold::compile;

/// The names of the rule kinds.
pub(crate) fn kind_names() -> Vec<&'static str> {
    KINDS.iter().map(|(name, _)| *name).collect()
}

/// One `[[rule]]` table, for the JSON Schema of rule files: exactly one of the kinds, told
/// apart by `kind` (which only `threshold`, the default, may leave out).
pub(crate) struct RuleTable;

impl JsonSchema for RuleTable {
    fn schema_name() -> Cow<'static, str> {
        "Rule".into()
    }

    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        // One entry per kind of `KINDS`, in the same order (a test in `config::schema` checks).
        json_schema!({
            "description": "A rule: the fields of its kind, chosen by `kind` (default \"threshold\").",
            "oneOf": [
                generator.subschema_for::<threshold::RawThreshold>(),
                generator.subschema_for::<window::RawWindow>(),
                generator.subschema_for::<rate_of_rise::RawRateOfRise>(),
                generator.subschema_for::<baseline::RawBaseline>(),
                generator.subschema_for::<correlation::RawCorrelation>(),
                generator.subschema_for::<absence::RawAbsence>(),
                generator.subschema_for::<report_deadline::RawReportDeadline>(),
                generator.subschema_for::<follow_up::RawFollowUp>(),
            ],
        })
    }
}

/// The rules of several files loaded together, and every problem found in them.
#[derive(Default)]
pub(crate) struct RuleSet {
    /// Rule id to `path:line:col` of its first definition.
    first_seen: HashMap<String, String>,
    /// The compiled rows, in file order.
    pub(crate) rules: Vec<RuleRow>,
    /// Every problem, in file order.
    pub(crate) diagnostics: Vec<Diagnostic>,
}

impl RuleSet {
    /// Compiles the rule file `text`, read from `path`.
    pub(crate) fn add_text(&mut self, path: &Path, text: &str) {
        let mut cx = FileCx::new(path, text);
        let root = parse_document(&mut cx, text);
        if let Some(table) = root_table(&root) {
            for (key, value) in table.iter() {
                if key.get_ref() != "rule" {
                    cx.error(
                        key.span(),
                        format!("unknown top-level key `{}` in a rule file", key.get_ref()),
                        Some("a rule file holds only [[rule]] tables".to_string()),
                    );
                    continue;
                }
                match value.get_ref() {
                    DeValue::Array(items) => {
                        for item in items.iter() {
                            self.add_rule(&mut cx, item.clone());
                        }
                    }
                    _ => cx.error(
                        value.span(),
                        "`rule` must be an array of tables",
                        Some("start each rule with a [[rule]] line (two brackets)".to_string()),
                    ),
                }
            }
        }
        self.diagnostics.extend(cx.finish());
    }

    /// Checks the id and kind of one `[[rule]]` table and compiles it with its kind.
    fn add_rule(&mut self, cx: &mut FileCx<'_>, item: Spanned<DeValue<'_>>) {
        let DeValue::Table(table) = item.get_ref() else {
            cx.error(
                item.span(),
                "each rule must be a table",
                Some("start each rule with a [[rule]] line".to_string()),
            );
            return;
        };
        // Type errors of `id` and `kind` are left to the kind's own checks.
        if let Some(id) = table.get("id")
            && let DeValue::String(name) = id.get_ref()
        {
            if name.trim().is_empty() {
                cx.error(id.span(), "rule id must not be empty", None);
            } else if let Some(first) = self.first_seen.get(name.as_ref()) {
                cx.error(
                    id.span(),
                    format!("duplicate rule id `{name}` (first defined at {first})"),
                    Some("rule ids must be unique across all rule files".to_string()),
                );
            } else {
                self.first_seen
                    .insert(name.to_string(), cx.location(&id.span()));
            }
        }
        let compile = match table.get("kind") {
            Some(kind) => match kind.get_ref() {
                DeValue::String(name) => {
                    match KINDS.iter().find(|(known, _)| *known == name.as_ref()) {
                        Some((_, compile)) => *compile,
                        None => {
                            cx.error(
                                kind.span(),
                                format!("unknown rule kind `{name}`"),
                                Some(one_of_hint(name, &kind_names())),
                            );
                            return;
                        }
                    }
                }
                _ => DEFAULT_KIND,
            },
            None => DEFAULT_KIND,
        };
        self.rules.extend(compile(cx, item));
    }

    /// The rules, or every problem found.
    pub(crate) fn finish(self) -> Result<Vec<RuleRow>, Diagnostics> {
        Diagnostics(self.diagnostics).into_result(self.rules)
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    fn messages(path: &str, text: &str) -> Vec<String> {
        let mut set = RuleSet::default();
        set.add_text(Path::new(path), text);
        set.diagnostics
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
            .collect()
    }

    #[test]
    fn duplicate_ids_across_files_point_at_the_second() {
        let mut set = RuleSet::default();
        set.add_text(
            Path::new("rules/a.toml"),
            "[[rule]]\nid = \"ch4\"\ndomain = \"mine\"\nmetric = \"ch4\"\nabove = 1.0\n",
        );
        set.add_text(
            Path::new("rules/b.toml"),
            "# b\n[[rule]]\nid = \"co\"\ndomain = \"mine\"\nmetric = \"co\"\nabove = 24\n\n[[rule]]\nid   = \"ch4\"\ndomain = \"mine\"\nmetric = \"ch4\"\nabove = 1.5\n",
        );
        let all = match set.finish() {
            Ok(rules) => panic!("expected a duplicate, got {rules:?}"),
            Err(all) => all,
        };
        assert_eq!(all.len(), 1);
        let d = &all.0[0];
        assert_eq!(
            (d.file.clone(), d.line, d.column),
            (PathBuf::from("rules/b.toml"), 9, 8)
        );
        assert_eq!(
            d.message,
            "duplicate rule id `ch4` (first defined at rules/a.toml:2:6)"
        );
    }

    #[test]
    fn duplicates_within_one_file_and_empty_ids() {
        let text = "[[rule]]\nid = \"x\"\ndomain = \"mine\"\nmetric = \"co\"\nabove = 1\n[[rule]]\nid = \"x\"\ndomain = \"mine\"\nmetric = \"co\"\nabove = 2\n[[rule]]\nid = \" \"\ndomain = \"mine\"\nmetric = \"co\"\nabove = 3\n";
        assert_eq!(
            messages("r.toml", text),
            vec![
                "r.toml:7:6: duplicate rule id `x` (first defined at r.toml:2:6)",
                "r.toml:12:6: rule id must not be empty",
            ]
        );
    }

    #[test]
    fn file_structure_problems() {
        let text = "title = \"mine rules\"\n[rule]\nid = \"x\"\n";
        assert_eq!(
            messages("r.toml", text),
            vec![
                "r.toml:1:1: unknown top-level key `title` in a rule file",
                "r.toml:2:1: `rule` must be an array of tables",
            ]
        );
        let inline =
            "rule = [{ id = \"a\", domain = \"mine\", metric = \"ch4\", above = 1.0 }, 5]\n";
        assert_eq!(
            messages("r.toml", inline),
            vec!["r.toml:1:69: each rule must be a table"]
        );
    }

    #[test]
    fn unknown_kind_lists_the_kinds() {
        let mut set = RuleSet::default();
        set.add_text(
            Path::new("r.toml"),
            "[[rule]]\nid = \"x\"\nkind = \"treshold\"\n",
        );
        let d = &set.diagnostics;
        assert_eq!(d.len(), 1);
        assert_eq!((d[0].line, d[0].column), (3, 8));
        assert_eq!(d[0].message, "unknown rule kind `treshold`");
        assert_eq!(
            d[0].hint.as_deref(),
            Some(
                "did you mean `threshold`? expected one of: threshold, window, rate_of_rise, baseline, correlation, absence, report_deadline, follow_up"
            )
        );
    }

    #[test]
    fn an_empty_rule_file_has_no_rules() {
        let mut set = RuleSet::default();
        set.add_text(Path::new("r.toml"), "# nothing yet\n");
        assert_eq!(set.finish(), Ok(Vec::new()));
    }
}

/// What every kind's tests share.
#[cfg(test)]
pub(crate) mod test_support {
    use std::path::Path;

    use crate::config::load_rules_str;

    /// `line:col: message` of every problem in a rule file that must not load.
    pub(crate) fn errors(text: &str) -> Vec<String> {
        match load_rules_str(Path::new("r.toml"), text) {
            Ok(rules) => panic!("expected errors, got {rules:?}"),
            Err(all) => all
                .iter()
                .map(|d| format!("{}:{}: {}", d.line, d.column, d.message))
                .collect(),
        }
    }
}
