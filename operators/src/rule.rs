//! Compiled rules: the rows of the differential `rules` collection. Rules are data: a rule file
//! compiles to these rows, and a reload feeds the difference between old and new rows.
//!
//! Every rule kind is one variant of [`RuleRow`]. Each kind carries a [`ThresholdRule`], its
//! *alarm side*: id, domain, metric, scope, the threshold and clear levels its derived value is
//! compared with, the `for` hold time, severity, summary and labels. Every kind reduces to a
//! derived value per (rule, alert entity, event time) that the one `for`/hysteresis state
//! machine ([`crate::hysteresis`]) compares with that alarm side.

use std::sync::Arc;

use citybrain_model::{Domain, Labels, Metric, Severity};
use ordered_float::OrderedFloat;
use rustc_hash::FxHashSet;
use serde::{Deserialize, Serialize};

use crate::by_address::{ByAddress, sweep_due};
use crate::kinds::absence::AbsenceRule;
use crate::kinds::baseline::BaselineRule;
use crate::kinds::correlation::CorrelationRule;
use crate::kinds::follow_up::FollowUpRule;
use crate::kinds::rate_of_rise::RateOfRiseRule;
use crate::kinds::report_deadline::ReportDeadlineRule;
use crate::kinds::window::WindowRule;
use crate::place::Placement;

/// Which side of the threshold is the alarm side.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// Alarm when `value >= threshold`; clear when `value < clear`.
    Above,
    /// Alarm when `value <= threshold`; clear when `value > clear`.
    Below,
}

/// One threshold rule with `for` hold time and hysteresis, as a collection row. It is also the
/// alarm side of every other rule kind.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ThresholdRule {
    /// Unique rule id.
    pub id: String,
    /// Domain of the readings it watches.
    pub domain: Domain,
    /// Metric it watches.
    pub metric: Metric,
    /// Label selector: every `(name, value)` pair must match the entity's labels. Empty = all.
    pub scope: Labels,
    /// Alarm side.
    pub direction: Direction,
    /// Alarm threshold (inclusive).
    pub threshold: OrderedFloat<f64>,
    /// Clear threshold (exclusive); for `Above` it is `<= threshold`, for `Below` `>= threshold`.
    pub clear: OrderedFloat<f64>,
    /// How long the alarm condition must hold before firing, milliseconds.
    pub hold_ms: u64,
    /// Severity of the alert.
    pub severity: Severity,
    /// Human-readable summary carried by the alert.
    pub summary: String,
    /// Extra labels carried by the alert (sorted).
    pub labels: Labels,
}

impl ThresholdRule {
    /// True when `value` is on the alarm side of the threshold.
    pub fn triggers(&self, value: f64) -> bool {
        match self.direction {
            Direction::Above => value >= self.threshold.0,
            Direction::Below => value <= self.threshold.0,
        }
    }

    /// True when `value` has crossed back past the clear threshold.
    pub fn clears(&self, value: f64) -> bool {
        match self.direction {
            Direction::Above => value < self.clear.0,
            Direction::Below => value > self.clear.0,
        }
    }

    /// True when an entity with `labels` is in this rule's scope.
    pub fn selects(&self, labels: &Labels) -> bool {
        selects(&self.scope, labels)
    }
}

/// True when every `(name, value)` selector of `scope` is among `labels`.
pub fn selects(scope: &Labels, labels: &Labels) -> bool {
    scope
        .iter()
        .all(|(k, v)| labels.iter().any(|(lk, lv)| lk == k && lv == v))
}

/// What the readings of a rule are grouped by: the alert entity of window and correlation
/// rules. A reading whose entity lacks the label (e.g. an unregistered sensor) belongs to no
/// group and is not counted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GroupBy {
    /// Each sensor or device on its own; the alert entity is its id.
    Entity,
    /// A mine (mine domain).
    Mine,
    /// A working face (mine domain).
    Face,
    /// A farm or ranch (farm domain).
    Farm,
    /// A greenhouse (farm domain).
    Greenhouse,
    /// A herd (farm domain).
    Herd,
    /// An animal, all devices of its collar (farm domain).
    Animal,
}

impl GroupBy {
    /// Every grouping, in declaration order.
    pub const ALL: [GroupBy; 7] = [
        GroupBy::Entity,
        GroupBy::Mine,
        GroupBy::Face,
        GroupBy::Farm,
        GroupBy::Greenhouse,
        GroupBy::Herd,
        GroupBy::Animal,
    ];

    /// The name used in rule files (`entity`, or the label's name).
    pub fn as_str(self) -> &'static str {
        match self {
            GroupBy::Entity => "entity",
            GroupBy::Mine => "mine",
            GroupBy::Face => "face",
            GroupBy::Farm => "farm",
            GroupBy::Greenhouse => "greenhouse",
            GroupBy::Herd => "herd",
            GroupBy::Animal => "animal",
        }
    }

    /// Where a rule grouped by `self` keeps a match's group: a group of one entity on the
    /// worker the match is on (matches are made on their entity's worker,
    /// [`crate::entity_route`]), so it skips the exchange; a larger group on the worker its
    /// name routes to.
    pub fn placement(self) -> Placement {
        match self {
            GroupBy::Entity => Placement::Here,
            _ => Placement::ByKey,
        }
    }

    /// The domain whose entities carry the label; `None` for [`GroupBy::Entity`] (any domain).
    pub fn domain(self) -> Option<Domain> {
        match self {
            GroupBy::Entity => None,
            GroupBy::Mine | GroupBy::Face => Some(Domain::Mine),
            GroupBy::Farm | GroupBy::Greenhouse | GroupBy::Herd | GroupBy::Animal => {
                Some(Domain::Farm)
            }
        }
    }

    /// The labels an alert about a group carries: the group's label and the coarser ones every
    /// member shares (a face's mine). Empty for [`GroupBy::Entity`], which carries them all.
    pub fn carried(self) -> &'static [&'static str] {
        match self {
            GroupBy::Entity => &[],
            GroupBy::Mine => &["mine"],
            GroupBy::Face => &["mine", "face"],
            GroupBy::Farm => &["farm"],
            GroupBy::Greenhouse => &["farm", "greenhouse"],
            GroupBy::Herd => &["farm", "herd"],
            GroupBy::Animal => &["farm", "herd", "animal"],
        }
    }

    /// The name of the group a reading of `entity` with `labels` belongs to (the alert
    /// entity); `None` when the entity lacks the group's label.
    pub fn name_of<'a>(self, entity: &'a str, labels: &'a Labels) -> Option<&'a str> {
        if self == GroupBy::Entity {
            return Some(entity);
        }
        let name = self.as_str();
        Some(labels.iter().find(|(k, _)| k == name)?.1.as_str())
    }

    /// Of an entity's `labels`, those its group's alerts carry ([`GroupBy::carried`]).
    fn carried_of(self, labels: &Labels) -> Labels {
        let carried = self.carried();
        labels
            .iter()
            .filter(|(k, _)| carried.contains(&k.as_str()))
            .cloned()
            .collect()
    }
}

/// The labels each entity's groups carry ([`GroupBy::carried`]), worked out once per entity
/// instead of at every reading, and shared by the entities with the same ones: a reading's
/// labels are its entity's `Arc`, the same for all its readings, so the entity is known by its
/// address; and a face's sixteen sensors then give one `Arc` for the face, which a window
/// keeping the least labels of its readings finds equal without comparing them. (Built at
/// every reading, the labels of a face window cost ~6 % of a worker's time with the shipped
/// mine rules.)
///
/// One per worker: an `Arc` whose count moved on two cores' workers would bounce between them.
#[derive(Default)]
pub struct CarriedLabels {
    /// Per (entity's labels, grouping): what the group carries.
    by_entity: ByAddress<Labels, GroupBy, Arc<Labels>>,
    /// Each distinct carried labels once.
    distinct: FxHashSet<Arc<Labels>>,
    /// Distinct carried labels left by the last sweep.
    distinct_after_sweep: usize,
}

impl CarriedLabels {
    /// What `group_by`'s group carries of an entity's `labels` (for [`GroupBy::Entity`], the
    /// labels themselves).
    pub fn of(&mut self, group_by: GroupBy, labels: Arc<Labels>) -> Arc<Labels> {
        if group_by == GroupBy::Entity {
            return labels;
        }
        let (distinct, after_sweep) = (&mut self.distinct, &mut self.distinct_after_sweep);
        let carried = self
            .by_entity
            .get_or_make(&labels, group_by, |labels, group_by| {
                let kept = group_by.carried_of(labels);
                if let Some(carried) = distinct.get(&kept) {
                    return Arc::clone(carried);
                }
                // Those nothing carries any more (only this set holds them) go whenever the set
                // has doubled, as in `ByAddress`.
                if sweep_due(distinct.len(), *after_sweep) {
                    distinct.retain(|carried| Arc::strong_count(carried) > 1);
                    *after_sweep = distinct.len();
                }
                let carried = Arc::new(kept);
                distinct.insert(Arc::clone(&carried));
                carried
            });
        Arc::clone(carried)
    }
}

/// One row of the rules collection: a rule of one kind.
///
/// Adding a kind is one file in [`crate::kinds`] (its rule type and operator), one variant
/// here and one line in [`crate::kinds::KINDS`].
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RuleRow {
    /// `kind = "threshold"`: each reading against a level.
    Threshold(ThresholdRule),
    /// `kind = "window"`: an aggregate over tumbling or hopping event-time windows.
    Window(WindowRule),
    /// `kind = "rate_of_rise"`: change per minute over a trailing window.
    RateOfRise(RateOfRiseRule),
    /// `kind = "baseline"`: each reading against the entity's own trailing mean.
    Baseline(BaselineRule),
    /// `kind = "correlation"`: two metrics of one group within a time tolerance.
    Correlation(CorrelationRule),
    /// `kind = "absence"`: an entity silent for longer than a number of its cadences.
    Absence(AbsenceRule),
    /// `kind = "report_deadline"`: a citizen report unresolved for longer than a deadline.
    ReportDeadline(ReportDeadlineRule),
    /// `kind = "follow_up"`: a resolved citizen report's return visit overdue.
    FollowUp(FollowUpRule),
}

impl RuleRow {
    /// The rule's alarm side: id, domain, metric, scope, levels, hold, severity, summary.
    pub fn alarm(&self) -> &ThresholdRule {
        match self {
            RuleRow::Threshold(rule) => rule,
            RuleRow::Window(rule) => &rule.alarm,
            RuleRow::RateOfRise(rule) => &rule.alarm,
            RuleRow::Baseline(rule) => &rule.alarm,
            RuleRow::Correlation(rule) => &rule.alarm,
            RuleRow::Absence(rule) => &rule.alarm,
            RuleRow::ReportDeadline(rule) => &rule.alarm,
            RuleRow::FollowUp(rule) => &rule.alarm,
        }
    }

    /// The event-time history the rule's state is built from (window, baseline, deadline,
    /// tolerance, plus the `for` hold): how far back a restart must re-read its input.
    /// Absence rules count only their hold: their silence limit depends on each entity's
    /// cadence, which the engine's configured history covers.
    pub fn history_ms(&self) -> u64 {
        let own = match self {
            RuleRow::Threshold(_) | RuleRow::Absence(_) => 0,
            RuleRow::Window(rule) => rule.window_ms,
            RuleRow::RateOfRise(rule) => rule.window_ms,
            RuleRow::Baseline(rule) => rule.baseline_ms,
            RuleRow::Correlation(rule) => rule.tolerance_ms,
            RuleRow::ReportDeadline(rule) => rule.longest_ms(),
            RuleRow::FollowUp(rule) => rule.due_ms,
        };
        own.saturating_add(self.alarm().hold_ms)
    }

    /// The rule id.
    pub fn id(&self) -> &str {
        &self.alarm().id
    }

    /// The domain the rule watches.
    pub fn domain(&self) -> Domain {
        self.alarm().domain
    }

    /// The kind's name in rule files (`kind = "..."`).
    pub fn kind(&self) -> &'static str {
        match self {
            RuleRow::Threshold(_) => "threshold",
            RuleRow::Window(_) => "window",
            RuleRow::RateOfRise(_) => "rate_of_rise",
            RuleRow::Baseline(_) => "baseline",
            RuleRow::Correlation(_) => "correlation",
            RuleRow::Absence(_) => "absence",
            RuleRow::ReportDeadline(_) => "report_deadline",
            RuleRow::FollowUp(_) => "follow_up",
        }
    }

    /// The (domain, metric) pairs whose readings the rule reads (none for the citizen-report
    /// kinds, which read report events): the readings it is matched with
    /// ([`crate::matching::match_by_kind`]).
    pub fn watched(&self) -> Vec<(Domain, Metric)> {
        match self {
            RuleRow::Correlation(rule) => rule
                .conditions()
                .iter()
                .map(|side| (rule.alarm.domain, side.metric))
                .collect(),
            RuleRow::ReportDeadline(_) | RuleRow::FollowUp(_) => Vec::new(),
            _ => vec![(self.alarm().domain, self.alarm().metric)],
        }
    }

    /// The threshold rule, if this is one.
    pub fn as_threshold(&self) -> Option<&ThresholdRule> {
        match self {
            RuleRow::Threshold(rule) => Some(rule),
            _ => None,
        }
    }

    /// The window rule, if this is one.
    pub fn as_window(&self) -> Option<&WindowRule> {
        match self {
            RuleRow::Window(rule) => Some(rule),
            _ => None,
        }
    }

    /// The rate-of-rise rule, if this is one.
    pub fn as_rate_of_rise(&self) -> Option<&RateOfRiseRule> {
        match self {
            RuleRow::RateOfRise(rule) => Some(rule),
            _ => None,
        }
    }

    /// The baseline rule, if this is one.
    pub fn as_baseline(&self) -> Option<&BaselineRule> {
        match self {
            RuleRow::Baseline(rule) => Some(rule),
            _ => None,
        }
    }

    /// The correlation rule, if this is one.
    pub fn as_correlation(&self) -> Option<&CorrelationRule> {
        match self {
            RuleRow::Correlation(rule) => Some(rule),
            _ => None,
        }
    }

    /// The absence rule, if this is one.
    pub fn as_absence(&self) -> Option<&AbsenceRule> {
        match self {
            RuleRow::Absence(rule) => Some(rule),
            _ => None,
        }
    }

    /// The report-deadline rule, if this is one.
    pub fn as_report_deadline(&self) -> Option<&ReportDeadlineRule> {
        match self {
            RuleRow::ReportDeadline(rule) => Some(rule),
            _ => None,
        }
    }

    /// The follow-up rule, if this is one.
    pub fn as_follow_up(&self) -> Option<&FollowUpRule> {
        match self {
            RuleRow::FollowUp(rule) => Some(rule),
            _ => None,
        }
    }
}

impl From<ThresholdRule> for RuleRow {
    fn from(rule: ThresholdRule) -> Self {
        RuleRow::Threshold(rule)
    }
}

impl From<WindowRule> for RuleRow {
    fn from(rule: WindowRule) -> Self {
        RuleRow::Window(rule)
    }
}

impl From<RateOfRiseRule> for RuleRow {
    fn from(rule: RateOfRiseRule) -> Self {
        RuleRow::RateOfRise(rule)
    }
}

impl From<BaselineRule> for RuleRow {
    fn from(rule: BaselineRule) -> Self {
        RuleRow::Baseline(rule)
    }
}

impl From<CorrelationRule> for RuleRow {
    fn from(rule: CorrelationRule) -> Self {
        RuleRow::Correlation(rule)
    }
}

impl From<AbsenceRule> for RuleRow {
    fn from(rule: AbsenceRule) -> Self {
        RuleRow::Absence(rule)
    }
}

impl From<ReportDeadlineRule> for RuleRow {
    fn from(rule: ReportDeadlineRule) -> Self {
        RuleRow::ReportDeadline(rule)
    }
}

impl From<FollowUpRule> for RuleRow {
    fn from(rule: FollowUpRule) -> Self {
        RuleRow::FollowUp(rule)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> Arc<Labels> {
        Arc::new(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    #[test]
    fn entities_of_one_face_share_what_the_face_carries() {
        let s1 = labels(&[("face", "f1"), ("kind", "ch4"), ("mine", "m1")]);
        let s2 = labels(&[("face", "f1"), ("kind", "co"), ("mine", "m1")]);
        let s3 = labels(&[("face", "f2"), ("kind", "ch4"), ("mine", "m1")]);
        let mut carried = CarriedLabels::default();
        let of_s1 = carried.of(GroupBy::Face, Arc::clone(&s1));
        let of_s2 = carried.of(GroupBy::Face, Arc::clone(&s2));
        assert_eq!(*of_s1, *labels(&[("face", "f1"), ("mine", "m1")]));
        assert!(Arc::ptr_eq(&of_s1, &of_s2));
        assert!(Arc::ptr_eq(&of_s1, &carried.of(GroupBy::Face, s1)));
        let of_s3 = carried.of(GroupBy::Face, Arc::clone(&s3));
        assert_eq!(*of_s3, *labels(&[("face", "f2"), ("mine", "m1")]));
        assert_eq!(*carried.of(GroupBy::Mine, s3), *labels(&[("mine", "m1")]));
        // A group of one entity carries the entity's own labels.
        assert!(Arc::ptr_eq(
            &carried.of(GroupBy::Entity, Arc::clone(&s2)),
            &s2
        ));
        assert_eq!(GroupBy::Face.name_of("s2", &s2), Some("f1"));
        assert_eq!(GroupBy::Entity.name_of("s2", &s2), Some("s2"));
        assert_eq!(GroupBy::Herd.name_of("s2", &s2), None);
    }
}
