//! The `absence` rule kind: a sensor or device silent for longer than a number of its
//! expected cadences (the registry's `cadence_ms`) raises `sensor silent`; its next reading
//! resolves it.
//!
//! ```toml
//! [[rule]]
//! id = "gas-sensor-silent"    # required, unique across all rule files
//! kind = "absence"
//! domain = "mine"             # mine | farm
//! metric = "ch4"              # the sensor kind whose readings count as data
//! scope = "all"               # or label selectors, as for threshold rules
//! cadences = 3                # optional, default 3: silent after 3 x cadence without a reading
//! for = "0s"                  # optional, added to the silence limit
//! stall_after = "5m"          # optional, default none: also watch the Kafka partitions
//! severity = "critical"
//! summary = "Gas sensor {entity} silent"
//! ```
//!
//! Watched are the registered entities of the domain whose `kind` is the metric, with a
//! cadence, in scope. The alert fires at the event time the limit has passed since the last
//! reading (an entity never heard from is not timed) and reports the silence in seconds; its
//! alerts carry the label `rule_kind = "absence"`. There are no levels (`above`, `below`,
//! `clear`): data resolves the alert.
//!
//! With `stall_after`, the rule also watches the Kafka partitions of its domain's topic: a
//! partition that delivers no readings for `stall_after` of event time (its watermark stops
//! while the others move on) raises one `ingest stalled` alert for it, entity
//! `topic/partition` (e.g. `mine.readings/2`), labels `topic`, `partition` and
//! `rule_kind = "ingest_stall"`, instead of one `sensor silent` per sensor on it; its data
//! returning resolves it. While a partition is stalled its sensors raise no `sensor silent`;
//! one still silent when the stall ends is timed again from then. When a whole topic stalls,
//! each of its partitions raises its own alert. A stall is noticed `stall_after` after the
//! partition's newest reading, so keep `stall_after` at most `(cadences - 1) x cadence + for`
//! of the rule's sensors, or some go `sensor silent` first. Set it on one absence rule per
//! domain: each rule with it raises its own stall alerts. File replays have no partitions and
//! no stalls.

use std::time::Duration;

use citybrain_model::Metric;
use citybrain_operators::kinds::absence::{AbsenceRule, RULE_KIND_LABEL};
use citybrain_operators::rule::{Direction, RuleRow};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_spanned::Spanned;
use toml::de::DeValue;

use super::common::{Alarm, DurationValue, Fields, hold_words, millis};
use crate::config::de::{SpannedPairs, WordOrPairs, deserialize_reporting};
use crate::config::diagnostic::FileCx;
use crate::config::duration::{self, DurationString};

/// The number of cadences without `cadences`.
const DEFAULT_CADENCES: u32 = 3;

/// A `[[rule]]` table of kind `absence` as written; everything optional so that [`compile`]
/// reports every problem.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(
    rename = "AbsenceRule",
    extend("required" = ["id", "kind", "domain", "metric"]),
    description = "An `absence` rule: a sensor or device silent for longer than a number of its expected cadences raises `sensor silent`; its next reading resolves it."
)]
pub(super) struct RawAbsence {
    /// Rule id: required, unique across all rule files.
    #[serde(default)]
    id: Option<String>,
    /// Rule kind.
    #[serde(default)]
    #[allow(dead_code)]
    #[schemars(with = "String", extend("const" = "absence"))]
    kind: Option<String>,
    /// The domain whose events the rule evaluates: `mine` or `farm`.
    #[serde(default)]
    #[schemars(with = "String", extend("enum" = ["mine", "farm"]))]
    domain: Option<Spanned<String>>,
    /// The sensor kind whose readings count as data.
    #[serde(default)]
    #[schemars(with = "String")]
    metric: Option<Spanned<String>>,
    /// `"all"` (the default) or label selectors such as `{ mine = "jungar-1" }`.
    #[serde(default)]
    #[schemars(with = "WordOrPairs")]
    scope: Option<Spanned<WordOrPairs>>,
    /// Silent after this many expected cadences without a reading. At least 1. Default: 3.
    #[serde(default)]
    #[schemars(with = "i64")]
    #[schemars(range(min = 1))]
    cadences: Option<Spanned<i64>>,
    /// Added to the silence limit. Default: `"0s"`.
    #[serde(default, rename = "for", with = "duration::option")]
    #[schemars(with = "DurationString")]
    hold: Option<Duration>,
    /// Also watch the Kafka partitions of the domain: one that delivers no readings for this
    /// long (event time, at least 1ms) raises one `ingest stalled` alert (entity
    /// `topic/partition`), and its sensors raise no `sensor silent` while it is stalled.
    /// Default: none (partitions are not watched).
    #[serde(default)]
    #[schemars(with = "DurationString")]
    stall_after: Option<Spanned<DurationValue>>,
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

/// E.g. `ch4 sensor {entity} silent for 3 cadences`.
fn default_summary(metric: Metric, cadences: u32, hold_ms: u64) -> String {
    let unit = if cadences == 1 { "cadence" } else { "cadences" };
    format!(
        "{} sensor {{entity}} silent for {cadences} {unit}{}",
        metric.as_str(),
        hold_words(hold_ms)
    )
}

/// Compiles one `[[rule]]` table of kind `absence` into one rule row.
pub(super) fn compile(cx: &mut FileCx<'_>, item: Spanned<DeValue<'_>>) -> Vec<RuleRow> {
    let header = item.span();
    let before = cx.count();
    let (raw, removed) = deserialize_reporting::<RawAbsence>(cx, item, "");
    let Some(raw) = raw else {
        return Vec::new();
    };
    let mut f = Fields::new(cx, header, before, removed);
    let id = f.id(raw.id);
    let domain = f.domain(&raw.domain, "absence");
    let metric = f.metric(&raw.metric, domain, "metric");
    let scope = f.scope(&raw.scope, domain, metric, false);
    let cadences = match &raw.cadences {
        None => Some(DEFAULT_CADENCES),
        Some(written) => match u32::try_from(*written.get_ref()) {
            Ok(n) if n >= 1 => Some(n),
            _ => {
                f.error(
                    written.span(),
                    format!(
                        "`cadences` must be a whole number of at least 1, found {}",
                        written.get_ref()
                    ),
                    Some(
                        "how many expected intervals without a reading make a sensor silent, e.g. cadences = 3"
                            .to_string(),
                    ),
                );
                None
            }
        },
    };
    let stall_after_ms = raw
        .stall_after
        .is_some()
        .then(|| {
            f.positive_duration(
                "stall_after",
                &raw.stall_after,
                None,
                "how long a Kafka partition may deliver nothing before it counts as stalled, e.g. stall_after = \"5m\"",
            )
        })
        .flatten();
    let severity = f.severity(&raw.severity);
    let labels = f.labels(&raw.labels, domain, &[RULE_KIND_LABEL]);
    if !f.ok() {
        return Vec::new();
    }
    let (Some(id), Some(domain), Some(metric), Some(cadences), Some(severity)) =
        (id, domain, metric, cadences, severity)
    else {
        return Vec::new();
    };
    let hold_ms = millis(raw.hold.unwrap_or_default());
    let summary = raw
        .summary
        .unwrap_or_else(|| default_summary(metric, cadences, hold_ms));
    let alarm = Alarm {
        id,
        domain,
        metric,
        scope,
        // Silent (1) fires, data (0) clears.
        levels: (Direction::Above, 1.0, 1.0),
        hold_ms,
        severity,
        summary,
        labels,
    };
    vec![RuleRow::Absence(AbsenceRule {
        alarm: alarm.into_rule(),
        cadences,
        stall_after_ms,
    })]
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::load_rules_str;

    fn absence(text: &str) -> AbsenceRule {
        match load_rules_str(Path::new("r.toml"), text).as_deref() {
            Ok([RuleRow::Absence(rule)]) => rule.clone(),
            other => panic!("expected one absence rule, got {other:?}"),
        }
    }

    use super::super::test_support::errors;

    #[test]
    fn a_rule_and_its_defaults() {
        let r = absence(
            "[[rule]]\nid = \"gas-sensor-silent\"\nkind = \"absence\"\ndomain = \"mine\"\nmetric = \"ch4\"\nscope = \"all\"\nseverity = \"critical\"\nsummary = \"Gas sensor {entity} silent\"\n",
        );
        assert_eq!(r.cadences, 3);
        assert_eq!(r.alarm.hold_ms, 0);
        assert_eq!(r.alarm.summary, "Gas sensor {entity} silent");
        assert_eq!(r.limit_ms(1_000), 3_000);
        assert_eq!(r.stall_after_ms, None);
        let r = absence(
            "[[rule]]\nid = \"collar\"\nkind = \"absence\"\ndomain = \"farm\"\nmetric = \"activity\"\nscope = { herd = \"h1\" }\ncadences = 1\nfor = \"30s\"\nstall_after = \"5m\"\nlabels = { team = \"ranch\" }\n",
        );
        assert_eq!((r.cadences, r.limit_ms(60_000)), (1, 90_000));
        assert_eq!(
            r.alarm.summary,
            "activity sensor {entity} silent for 1 cadence for 30s"
        );
        assert_eq!(r.alarm.scope, vec![("herd".to_string(), "h1".to_string())]);
        assert_eq!(r.stall_after_ms, Some(300_000));
    }

    #[test]
    fn every_problem_is_reported() {
        let text = "[[rule]]\nid = \"a\"\nkind = \"absence\"\ndomain = \"mine\"\nmetric = \"ch4\"\ncadences = 0\nabove = 1\nlabels = { rule_kind = \"x\" }\n\n[[rule]]\nid = \"b\"\nkind = \"absence\"\ndomain = \"mine\"\nmetric = \"co\"\nscope = { kind = \"ch4\" }\ncadences = \"3\"\n\n[[rule]]\nid = \"c\"\nkind = \"absence\"\ndomain = \"citizen\"\nstall_after = \"0s\"\n";
        assert_eq!(
            errors(text),
            vec![
                "6:12: `cadences` must be a whole number of at least 1, found 0",
                "7:1: unknown field `above`",
                "8:12: label `rule_kind` is set by the engine",
                "15:18: this rule can never fire: it watches `co` readings but selects sensors of kind `ch4`",
                "16:12: `cadences` must be an integer, found string \"3\"",
                "18:1: rule without `metric`",
                "21:10: absence rules cannot watch domain `citizen`: citizen reports carry no metric",
                "22:15: `stall_after` must be at least 1ms",
            ]
        );
    }
}
