//! What the rule kinds share: checking the fields every kind has (id, domain, metric, scope,
//! levels, `for`, severity, summary, labels) and the building blocks of the others
//! (durations, `group_by`), each problem reported at its position.
//!
//! A kind's compile function deserializes its table, then checks each field with a [`Fields`]
//! and builds its row only when none of the checks found a problem.

use std::collections::BTreeMap;
use std::ops::Range;
use std::time::Duration;

use citybrain_model::{Domain, Labels, Metric, Severity};
use citybrain_operators::rule::{Direction, GroupBy, ThresholdRule};
use serde::{Deserialize, Deserializer};
use serde_spanned::Spanned;

use crate::config::de::{SpannedPairs, WordOrPairs};
use crate::config::diagnostic::{FileCx, closest, one_of_hint};
use crate::config::duration;

/// The domains rules can watch.
pub(super) const DOMAINS: [&str; 2] = ["mine", "farm"];

/// The severities, by name.
const SEVERITIES: [&str; 3] = ["info", "warning", "critical"];

/// Alert labels the engine sets itself.
const RESERVED_LABELS: [&str; 3] = ["rule", "severity", "metric"];

/// A duration string (`"2m"`, `"24h"`) in a rule table; wrap it in [`Spanned`] to report
/// problems with its value at its position.
#[derive(Clone, Copy, Debug)]
pub(super) struct DurationValue(pub(super) Duration);

impl<'de> Deserialize<'de> for DurationValue {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        duration::deserialize(deserializer).map(DurationValue)
    }
}

/// Milliseconds of a duration (saturating).
pub(super) fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// The entity labels rules of `domain` can select on (see the registry records).
pub(crate) fn entity_labels(domain: Domain) -> &'static [&'static str] {
    match domain {
        Domain::Mine => &["mine", "face", "kind"],
        Domain::Farm => &["farm", "greenhouse", "herd", "animal", "kind"],
        Domain::Citizen => &["district", "town", "village"],
    }
}

/// The names of `domain`'s metrics.
pub(super) fn metric_names(domain: Domain) -> Vec<&'static str> {
    Metric::ALL
        .iter()
        .filter(|m| m.domain() == domain)
        .map(|m| m.as_str())
        .collect()
}

/// `%` right after the number, other units after a space: `1%`, `24 ppm`.
pub(super) fn with_unit(value: f64, metric: Metric) -> String {
    match metric.unit() {
        "%" => format!("{value}%"),
        unit => format!("{value} {unit}"),
    }
}

/// `at or above` / `at or below`.
pub(super) fn side_words(direction: Direction) -> &'static str {
    match direction {
        Direction::Above => "at or above",
        Direction::Below => "at or below",
    }
}

/// ` for 10s`, or nothing without a hold time.
pub(super) fn hold_words(hold_ms: u64) -> String {
    if hold_ms == 0 {
        String::new()
    } else {
        format!(" for {}", duration_words(hold_ms))
    }
}

/// A duration for summaries and messages, in the largest of h, m, s, ms that divides it:
/// `2m`, `24h`, `90m`, `1500ms`.
pub(super) fn duration_words(ms: u64) -> String {
    match ms {
        0 => "0s".to_string(),
        ms if ms % 3_600_000 == 0 => format!("{}h", ms / 3_600_000),
        ms if ms % 60_000 == 0 => format!("{}m", ms / 60_000),
        ms if ms % 1000 == 0 => format!("{}s", ms / 1000),
        ms => format!("{ms}ms"),
    }
}

/// The field names of a pair of alarm levels and its clear level, for messages: e.g.
/// `above`, `below`, `clear` or `above_ratio`, `below_ratio`, `clear`.
pub(super) struct LevelNames<'n> {
    /// The field of an alarm at or above the level.
    pub(super) above: &'n str,
    /// The field of an alarm at or below the level.
    pub(super) below: &'n str,
    /// The clear level's field.
    pub(super) clear: &'n str,
    /// What has these levels, e.g. "a threshold rule" or "`with`".
    pub(super) owner: &'n str,
    /// An example for the hint when both levels are missing.
    pub(super) example: &'n str,
}

/// The levels of the plain rule kinds.
pub(super) const PLAIN_LEVELS: LevelNames<'static> = LevelNames {
    above: "above",
    below: "below",
    clear: "clear",
    owner: "a threshold rule",
    example: "e.g. above = 1.0 alarms at values >= 1.0",
};

/// Checks the fields of one rule table, reporting each problem to the file context.
pub(super) struct Fields<'a, 'c> {
    /// The file's problems.
    pub(super) cx: &'a mut FileCx<'c>,
    /// The span of the rule's table (missing fields are reported there).
    pub(super) header: Range<usize>,
    /// Top-level keys whose entries had an error (so they are not reported as missing too).
    removed: Vec<String>,
    /// Problems in the file before this rule.
    before: usize,
}

impl<'a, 'c> Fields<'a, 'c> {
    /// Starts checking the table at `header`; `before` is the problem count before it was
    /// deserialized, `removed` the keys deserialization dropped.
    pub(super) fn new(
        cx: &'a mut FileCx<'c>,
        header: Range<usize>,
        before: usize,
        removed: Vec<String>,
    ) -> Self {
        Fields {
            cx,
            header,
            removed,
            before,
        }
    }

    /// True when no problem was found in this rule.
    pub(super) fn ok(&self) -> bool {
        self.cx.count() == self.before
    }

    /// True when `field` had an error (or a misspelled key close to it): it is reported
    /// already, not to be reported as missing.
    pub(super) fn reported(&self, field: &str) -> bool {
        self.removed
            .iter()
            .any(|key| key == field || closest(key, &[field]).is_some())
    }

    /// Reports a missing required field at the rule's header, unless it was reported already.
    pub(super) fn missing(&mut self, field: &str, message: String, hint: Option<String>) {
        if !self.reported(field) {
            self.cx.missing(self.header.clone(), message, hint);
        }
    }

    /// Reports a problem at `span`.
    pub(super) fn error(&mut self, span: Range<usize>, message: String, hint: Option<String>) {
        self.cx.error(span, message, hint);
    }

    /// The rule id (uniqueness is checked by the rule-file layer).
    pub(super) fn id(&mut self, id: Option<String>) -> Option<String> {
        if id.is_none() {
            self.missing(
                "id",
                "rule without `id`".to_string(),
                Some("give every rule a unique id, e.g. id = \"ch4-alarm\"".to_string()),
            );
        }
        id
    }

    /// The domain; `kind` names the rule kind in the message about `citizen`.
    pub(super) fn domain(
        &mut self,
        domain: &Option<Spanned<String>>,
        kind: &str,
    ) -> Option<Domain> {
        match domain {
            None => {
                self.missing(
                    "domain",
                    "rule without `domain`".to_string(),
                    Some(format!("expected one of: {}", DOMAINS.join(", "))),
                );
                None
            }
            Some(name) => match name.get_ref().as_str() {
                "mine" => Some(Domain::Mine),
                "farm" => Some(Domain::Farm),
                other => {
                    let message = if other == "citizen" {
                        format!(
                            "{kind} rules cannot watch domain `citizen`: citizen reports carry no metric"
                        )
                    } else {
                        format!("unknown domain `{other}`")
                    };
                    self.error(name.span(), message, Some(one_of_hint(other, &DOMAINS)));
                    None
                }
            },
        }
    }

    /// A metric of `domain` named at `span`; `what` names it in messages (`metric`,
    /// `sensor kind`).
    pub(super) fn metric_of(
        &mut self,
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
        self.error(
            span,
            format!("unknown {} {what} `{name}`", domain.as_str()),
            Some(hint),
        );
        None
    }

    /// The required metric field `field` (`metric`, `with.metric`).
    pub(super) fn metric(
        &mut self,
        metric: &Option<Spanned<String>>,
        domain: Option<Domain>,
        field: &str,
    ) -> Option<Metric> {
        match (metric, domain) {
            (None, _) => {
                let hint = domain
                    .map(|d| format!("{} metrics: {}", d.as_str(), metric_names(d).join(", ")));
                self.missing(
                    field.rsplit('.').next().unwrap_or(field),
                    format!("rule without `{field}`"),
                    hint,
                );
                None
            }
            (Some(name), Some(domain)) => {
                self.metric_of(name.get_ref(), domain, name.span(), "metric")
            }
            (Some(_), None) => None,
        }
    }

    /// The label selectors. `metric` is the metric the rule reads, for the check that a `kind`
    /// selector does not exclude it; `None` when it reads several (a `kind` selector is then
    /// an error).
    pub(super) fn scope(
        &mut self,
        scope: &Option<Spanned<WordOrPairs>>,
        domain: Option<Domain>,
        metric: Option<Metric>,
        several_metrics: bool,
    ) -> Labels {
        let mut selected = BTreeMap::new();
        let (Some(written), Some(domain)) = (scope, domain) else {
            return Labels::new();
        };
        match written.get_ref() {
            WordOrPairs::Word(word) if word == "all" => {}
            WordOrPairs::Word(word) => self.error(
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
                        self.error(
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
                        self.error(
                            value.span(),
                            format!("scope label `{}` must not be empty", name.get_ref()),
                            None,
                        );
                        continue;
                    }
                    if name.get_ref() == "kind" && several_metrics {
                        self.error(
                            name.span(),
                            "a correlation reads two metrics: a `kind` selector would hide one of them".to_string(),
                            Some("select by location (mine, face, greenhouse, ...) instead".to_string()),
                        );
                        continue;
                    }
                    if name.get_ref() == "kind"
                        && let Some(kind) =
                            self.metric_of(value.get_ref(), domain, value.span(), "sensor kind")
                        && let Some(metric) = metric
                        && kind != metric
                    {
                        self.error(
                            value.span(),
                            format!(
                                "this rule can never fire: it watches `{}` readings but selects sensors of kind `{}`",
                                metric.as_str(),
                                kind.as_str()
                            ),
                            Some("a sensor's kind is the metric it measures; drop the `kind` selector".to_string()),
                        );
                    }
                    selected.insert(name.get_ref().clone(), value.get_ref().clone());
                }
            }
        }
        selected.into_iter().collect()
    }

    /// A number that must be finite, or a report at its position.
    pub(super) fn finite(&mut self, field: &str, value: &Spanned<f64>) -> Option<f64> {
        let number = *value.get_ref();
        if number.is_finite() {
            Some(number)
        } else {
            self.error(
                value.span(),
                format!("`{field}` must be a finite number, found {number}"),
                None,
            );
            None
        }
    }

    /// Exactly one of the `above`/`below` levels and the clear level (default: the level; on
    /// the safe side of it). `span` is where a missing level is reported (the rule's header
    /// for top-level fields).
    pub(super) fn levels(
        &mut self,
        above: &Option<Spanned<f64>>,
        below: &Option<Spanned<f64>>,
        clear: &Option<Spanned<f64>>,
        names: &LevelNames<'_>,
        span: Range<usize>,
    ) -> Option<(Direction, f64, f64)> {
        let level = match (above, below) {
            (Some(a), Some(b)) => {
                let later = if a.span().start > b.span().start {
                    a
                } else {
                    b
                };
                self.error(
                    later.span(),
                    format!(
                        "{} has exactly one of `{}` and `{}`, this one has both",
                        names.owner, names.above, names.below
                    ),
                    Some("for a band, write two rules".to_string()),
                );
                None
            }
            (None, None) if self.reported(names.above) || self.reported(names.below) => None,
            (None, None) => {
                let what = if names.owner.starts_with('`') {
                    names.owner.to_string()
                } else {
                    "rule".to_string()
                };
                let message = if names.above == "above" {
                    format!("{what} without threshold: set `above` or `below`")
                } else {
                    format!(
                        "{what} without threshold: set `{}` or `{}`",
                        names.above, names.below
                    )
                };
                self.cx
                    .missing(span, message, Some(names.example.to_string()));
                None
            }
            (Some(a), None) => self.finite(names.above, a).map(|t| (Direction::Above, t)),
            (None, Some(b)) => self.finite(names.below, b).map(|t| (Direction::Below, t)),
        };
        let clear = match (clear, level) {
            (None, level) => level.map(|(_, t)| t),
            (Some(written), level) => {
                let value = self.finite(names.clear, written);
                match (value, level) {
                    (Some(c), Some((Direction::Above, t))) if c > t => {
                        self.error(
                            written.span(),
                            format!(
                                "`{}` ({c}) must not be greater than `{}` ({t})",
                                names.clear, names.above
                            ),
                            Some(format!(
                                "an `{}` rule resolves once the value falls below `{}`, so {} <= {}",
                                names.above, names.clear, names.clear, names.above
                            )),
                        );
                        None
                    }
                    (Some(c), Some((Direction::Below, t))) if c < t => {
                        self.error(
                            written.span(),
                            format!(
                                "`{}` ({c}) must not be less than `{}` ({t})",
                                names.clear, names.below
                            ),
                            Some(format!(
                                "a `{}` rule resolves once the value rises above `{}`, so {} >= {}",
                                names.below, names.clear, names.clear, names.below
                            )),
                        );
                        None
                    }
                    (value, _) => value,
                }
            }
        };
        match (level, clear) {
            (Some((direction, threshold)), Some(clear)) => Some((direction, threshold, clear)),
            _ => None,
        }
    }

    /// The severity (default warning).
    pub(super) fn severity(&mut self, severity: &Option<Spanned<String>>) -> Option<Severity> {
        match severity {
            None => Some(Severity::Warning),
            Some(name) => match name.get_ref().as_str() {
                "info" => Some(Severity::Info),
                "warning" => Some(Severity::Warning),
                "critical" => Some(Severity::Critical),
                other => {
                    self.error(
                        name.span(),
                        format!("unknown severity `{other}`"),
                        Some(one_of_hint(other, &SEVERITIES)),
                    );
                    None
                }
            },
        }
    }

    /// The extra alert labels; `also_reserved` are label names this kind sets itself.
    pub(super) fn labels(
        &mut self,
        labels: &Option<SpannedPairs>,
        domain: Option<Domain>,
        also_reserved: &[&str],
    ) -> Labels {
        let mut kept = BTreeMap::new();
        for (name, value) in labels.iter().flat_map(|l| l.0.iter()) {
            let text = name.get_ref().as_str();
            if text.trim().is_empty() {
                self.error(
                    name.span(),
                    "label names must not be empty".to_string(),
                    None,
                );
            } else if RESERVED_LABELS.contains(&text)
                || also_reserved.contains(&text)
                || domain.is_some_and(|d| entity_labels(d).contains(&text))
            {
                let hint = if RESERVED_LABELS.contains(&text) {
                    "alerts carry `rule`, `severity` and `metric` already".to_string()
                } else if also_reserved.contains(&text) {
                    format!("alerts of this rule carry `{text}` already")
                } else {
                    "alerts carry the entity's labels (mine, face, ...) already".to_string()
                };
                self.error(
                    name.span(),
                    format!("label `{text}` is set by the engine"),
                    Some(hint),
                );
            } else {
                kept.insert(text.to_string(), value.get_ref().clone());
            }
        }
        kept.into_iter().collect()
    }

    /// A duration field that must be positive: its milliseconds. `default` is used when it
    /// is absent; without a default it is required, with `hint` in the message.
    pub(super) fn positive_duration(
        &mut self,
        field: &str,
        value: &Option<Spanned<DurationValue>>,
        default: Option<u64>,
        hint: &str,
    ) -> Option<u64> {
        match value {
            None => {
                if default.is_none() {
                    self.missing(
                        field,
                        format!("rule without `{field}`"),
                        Some(hint.to_string()),
                    );
                }
                default
            }
            Some(written) => {
                let ms = millis(written.get_ref().0);
                if ms == 0 {
                    self.error(
                        written.span(),
                        format!("`{field}` must be at least 1ms"),
                        Some(hint.to_string()),
                    );
                    None
                } else {
                    Some(ms)
                }
            }
        }
    }

    /// The grouping: `entity` (when `entity_allowed`) or a location label of `domain`.
    /// `default` is used when absent; without one it is required.
    pub(super) fn group_by(
        &mut self,
        value: &Option<Spanned<String>>,
        domain: Option<Domain>,
        entity_allowed: bool,
        default: Option<GroupBy>,
    ) -> Option<GroupBy> {
        let allowed: Vec<&'static str> = GroupBy::ALL
            .iter()
            .filter(|g| match g.domain() {
                None => entity_allowed,
                Some(d) => domain.is_none_or(|domain| d == domain),
            })
            .map(|g| g.as_str())
            .collect();
        let Some(written) = value else {
            if default.is_none() {
                self.missing(
                    "group_by",
                    "rule without `group_by`".to_string(),
                    Some(format!(
                        "the label whose value is the alert entity; expected one of: {}",
                        allowed.join(", ")
                    )),
                );
            }
            return default;
        };
        let name = written.get_ref().as_str();
        match GroupBy::ALL.iter().find(|g| g.as_str() == name) {
            Some(group) if allowed.contains(&name) => Some(*group),
            Some(GroupBy::Entity) => {
                self.error(
                    written.span(),
                    "a correlation cannot group by `entity`: a sensor measures one metric"
                        .to_string(),
                    Some(format!("expected one of: {}", allowed.join(", "))),
                );
                None
            }
            Some(group) => {
                let other = group.domain().map_or("", Domain::as_str);
                let this = domain.map_or("", Domain::as_str);
                self.error(
                    written.span(),
                    format!("`{name}` is a {other} label: {this} rules cannot group by it"),
                    Some(format!("expected one of: {}", allowed.join(", "))),
                );
                None
            }
            None => {
                self.error(
                    written.span(),
                    format!("unknown `group_by` value `{name}`"),
                    Some(one_of_hint(name, &allowed)),
                );
                None
            }
        }
    }
}

/// The parts of the alarm side every kind checks the same way, already validated.
pub(super) struct Alarm {
    /// Rule id.
    pub(super) id: String,
    /// Domain.
    pub(super) domain: Domain,
    /// Metric (the first one, for correlations).
    pub(super) metric: Metric,
    /// Label selectors.
    pub(super) scope: Labels,
    /// Direction, level and clear level.
    pub(super) levels: (Direction, f64, f64),
    /// Hold time, milliseconds.
    pub(super) hold_ms: u64,
    /// Severity.
    pub(super) severity: Severity,
    /// Summary (already defaulted by the kind).
    pub(super) summary: String,
    /// Extra labels.
    pub(super) labels: Labels,
}

impl Alarm {
    /// The alarm side as a [`ThresholdRule`].
    pub(super) fn into_rule(self) -> ThresholdRule {
        let (direction, threshold, clear) = self.levels;
        ThresholdRule {
            id: self.id,
            domain: self.domain,
            metric: self.metric,
            scope: self.scope,
            direction,
            threshold: threshold.into(),
            clear: clear.into(),
            hold_ms: self.hold_ms,
            severity: self.severity,
            summary: self.summary,
            labels: self.labels,
        }
    }
}
