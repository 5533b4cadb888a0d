//! Live KPIs as differential aggregates: each KPI definition filters the rows of one source,
//! groups them by a label and reduces each group to one number, maintained incrementally.
//!
//! State sources (latest readings, active alerts, report states) hold one row per live thing;
//! event sources (readings, report events) hold each event for the KPI's window only (an event
//! enters at its event time and is retracted at event time + window), so memory grows with live
//! keys and window lengths, not with events seen.
//!
//! Counts, sums, averages and ratios are differential `count_total`s; order statistics and
//! distinct counts are kept per group by [`crate::group_aggregate`] (no arrangement), and a
//! distinct count over a window of events reads only when each tag starts and stops occurring
//! ([`crate::windowed_presence`]).
//!
//! Rows are read through [`KpiFields`]: readings and latest readings are the enriched
//! [`Event`](crate::enrich::Event)s the rules already share, so no label list is built per
//! reading and no reading is arranged to join it with the registry. Each KPI keeps only what its
//! aggregate reads of a row (a [`Point`]) before any window or arrangement.

use std::collections::BTreeSet;

use citybrain_model::Labels;
use differential_dataflow::{AsCollection, VecCollection};
use ordered_float::OrderedFloat;
use serde::{Deserialize, Serialize};
use timely::dataflow::operators::vec::Map;

use crate::enrich::{EnrichedRow, Events};
use crate::group_aggregate::{AggregateByGroup, DistinctTags, OrderedValues, Statistic};
use crate::windowed_presence::WindowedPresence;
use crate::{Diff, EntityKey, RegistryRow, Time};

/// One row of a KPI source: labels (sorted) and a value.
pub type KpiRow = (Labels, OrderedFloat<f64>);

/// One KPI value: (KPI name, group) -> value. The group is `""` for ungrouped KPIs.
pub type KpiValue = ((String, String), OrderedFloat<f64>);

/// Where a KPI's rows come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KpiSource {
    /// Every reading (event source: needs a window). Labels: the entity's, plus `domain`,
    /// `entity`, `metric`. Value: the reading.
    Readings,
    /// The latest reading per (entity, metric). Same labels and value as `readings`.
    Latest,
    /// Active alerts. Labels: the alert's. Value: the value that made it fire.
    Alerts,
    /// The current state of every citizen report (see `report_state`), with its grid's
    /// `village`, `town`, `district`. Value: hours to resolve (0 while open).
    Reports,
    /// Every citizen report event (event source: needs a window). Labels: `kind`, `category`,
    /// `grid`, `village`, `town`, `district`. Value: 1.
    ReportEvents,
}

impl KpiSource {
    /// Event sources grow with every event unless windowed.
    pub fn is_event_source(self) -> bool {
        matches!(self, KpiSource::Readings | KpiSource::ReportEvents)
    }
}

/// How a group's rows become one number.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Aggregate {
    /// Number of rows.
    Count,
    /// Number of distinct values of a label.
    DistinctCount(String),
    /// Sum of values.
    Sum,
    /// Mean of values.
    Avg,
    /// Least value.
    Min,
    /// Greatest value.
    Max,
    /// Nearest-rank percentile of values (e.g. 50 = median, 90).
    Percentile(u8),
    /// Share of rows matching these labels among all rows of the group (0..1).
    Ratio(Labels),
    /// Rows per minute over the KPI's window.
    RatePerMinute,
}

/// A KPI definition (from config).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct KpiDef {
    /// Unique name, e.g. `open_backlog`.
    pub name: String,
    /// Where the rows come from.
    pub source: KpiSource,
    /// Rows must carry every `(label, value)`; the value `*` only requires the label.
    pub filter: Labels,
    /// The label to group by (`None`: one group, `""`).
    pub group_by: Option<String>,
    /// How each group becomes a number.
    pub aggregate: Aggregate,
    /// Event sources: how long an event counts, ms.
    pub window_ms: Option<u64>,
}

/// What a KPI reads of a source row: its labels by name and its value.
///
/// Rows of state and report sources carry their labels as a list ([`KpiRow`]); readings are
/// read straight off the enriched [`Event`](crate::enrich::Event)s the rules share, so a KPI
/// over millions of readings builds no label list per reading.
pub trait KpiFields {
    /// The value of label `name`, if the row has it.
    fn label(&self, name: &str) -> Option<&str>;
    /// The row's value.
    fn value(&self) -> f64;
}

impl KpiFields for KpiRow {
    fn label(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    fn value(&self) -> f64 {
        self.1.0
    }
}

/// A reading's labels are `domain`, `entity` and `metric`, then its entity's registry labels
/// (the reading's own win).
impl KpiFields for EnrichedRow {
    fn label(&self, name: &str) -> Option<&str> {
        let ((domain, metric), event) = self;
        match name {
            "domain" => Some(domain.as_str()),
            "entity" => Some(event.entity.as_str()),
            "metric" => Some(metric.as_str()),
            _ => event
                .labels
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.as_str()),
        }
    }

    fn value(&self) -> f64 {
        self.1.value.0
    }
}

/// True when `row` carries every selector (`*` matches any value of the label).
pub fn matches(row: &impl KpiFields, selectors: &Labels) -> bool {
    selectors.iter().all(|(name, wanted)| {
        row.label(name)
            .is_some_and(|v| wanted == "*" || v == wanted)
    })
}

/// The group a row falls in: the value of `group_by`, `unknown` when the row lacks it.
pub fn group_of(row: &impl KpiFields, group_by: Option<&str>) -> String {
    match group_by {
        None => String::new(),
        Some(name) => row.label(name).unwrap_or("unknown").to_string(),
    }
}

/// Reduces one group's rows (with multiplicities) to its KPI value; `None` for no rows.
///
/// The definition of every aggregate, from scratch: what the incremental [`kpi_values`] is
/// tested against.
pub fn aggregate(
    rows: &[(&KpiRow, Diff)],
    aggregate: &Aggregate,
    window_ms: Option<u64>,
) -> Option<f64> {
    let count: Diff = rows.iter().map(|(_, n)| *n).filter(|n| *n > 0).sum();
    if count <= 0 {
        return None;
    }
    let n = count as f64;
    let values = || {
        rows.iter()
            .filter(|(_, m)| *m > 0)
            .flat_map(|((_, v), m)| std::iter::repeat_n(v.0, usize::try_from(*m).unwrap_or(0)))
    };
    Some(match aggregate {
        Aggregate::Count => n,
        Aggregate::DistinctCount(label) => rows
            .iter()
            .filter(|(_, m)| *m > 0)
            .filter_map(|((labels, _), _)| labels.iter().find(|(k, _)| k == label).map(|(_, v)| v))
            .collect::<BTreeSet<_>>()
            .len() as f64,
        Aggregate::Sum => values().sum(),
        Aggregate::Avg => values().sum::<f64>() / n,
        Aggregate::Min => values().fold(f64::INFINITY, f64::min),
        Aggregate::Max => values().fold(f64::NEG_INFINITY, f64::max),
        Aggregate::Percentile(p) => {
            let mut sorted: Vec<f64> = values().collect();
            sorted.sort_by(f64::total_cmp);
            let rank = ((f64::from(*p) / 100.0) * sorted.len() as f64).ceil() as usize;
            sorted[rank.clamp(1, sorted.len()) - 1]
        }
        Aggregate::Ratio(numerator) => {
            let hits: Diff = rows
                .iter()
                .filter(|(row, m)| *m > 0 && matches(*row, numerator))
                .map(|(_, m)| *m)
                .sum();
            hits as f64 / n
        }
        Aggregate::RatePerMinute => n / (window_ms.unwrap_or(60_000).max(1) as f64 / 60_000.0),
    })
}

/// The KPI sources of one dataflow; `None` for a source no KPI reads (it is then not built).
pub struct KpiSources<'s> {
    /// Every reading, enriched, as it occurs (`+1` at its event time, never retracted): the
    /// stream the rules share ([`crate::matching::events`]).
    pub readings: Option<Events<'s>>,
    /// The latest reading per (entity, metric), enriched ([`crate::latest::Latest`]).
    pub latest: Option<VecCollection<'s, Time, EnrichedRow, Diff>>,
    /// Active alerts.
    pub alerts: Option<VecCollection<'s, Time, KpiRow, Diff>>,
    /// Report states, enriched with their grid.
    pub reports: Option<VecCollection<'s, Time, KpiRow, Diff>>,
    /// Every report event, enriched, each at its event time (+1, never retracted).
    pub report_events: Option<VecCollection<'s, Time, KpiRow, Diff>>,
}

impl<'s> KpiSources<'s> {
    /// The rows of `def`'s source that it counts, as [`Point`]s (`None`: the source is not
    /// built).
    fn points(&self, def: &KpiDef) -> Option<VecCollection<'s, Time, Point, Diff>> {
        let rows_of = |rows: &VecCollection<'s, Time, KpiRow, Diff>| {
            let def = def.clone();
            rows.clone().flat_map(move |row| point(&def, &row))
        };
        Some(match def.source {
            KpiSource::Readings => {
                let def = def.clone();
                self.readings
                    .clone()?
                    .flat_map(move |(row, time, diff)| {
                        point(&def, &row).map(|point| (point, time, diff))
                    })
                    .as_collection()
            }
            KpiSource::Latest => {
                let def = def.clone();
                self.latest.clone()?.flat_map(move |row| point(&def, &row))
            }
            KpiSource::Alerts => rows_of(self.alerts.as_ref()?),
            KpiSource::Reports => rows_of(self.reports.as_ref()?),
            KpiSource::ReportEvents => rows_of(self.report_events.as_ref()?),
        })
    }
}

/// A source row as one KPI counts it: group -> (tag, value). Only what the KPI's aggregate
/// reads is kept, so rows that count the same consolidate: the tag is the distinct-counted
/// label's value (else empty); the value is the row's value for sums, averages and order
/// statistics, 1 or 0 for a ratio (in the numerator or not), else 0.
pub type Point = (String, (String, OrderedFloat<f64>));

/// `row` as `def` counts it; `None` when the filter drops it (or it lacks the distinct-counted
/// label).
pub fn point(def: &KpiDef, row: &impl KpiFields) -> Option<Point> {
    if !matches(row, &def.filter) {
        return None;
    }
    let (tag, value) = match &def.aggregate {
        Aggregate::Count | Aggregate::RatePerMinute => (String::new(), 0.0),
        Aggregate::DistinctCount(label) => (row.label(label)?.to_string(), 0.0),
        Aggregate::Ratio(numerator) => {
            (String::new(), f64::from(u8::from(matches(row, numerator))))
        }
        Aggregate::Sum
        | Aggregate::Avg
        | Aggregate::Min
        | Aggregate::Max
        | Aggregate::Percentile(_) => (String::new(), row.value()),
    };
    Some((
        group_of(row, def.group_by.as_deref()),
        (tag, OrderedFloat(value)),
    ))
}

/// Adds each row's entity labels from the registry (left join: rows of unregistered entities
/// keep their own labels). Labels of the row win over the registry's.
pub fn with_registry_labels<'s>(
    rows: VecCollection<'s, Time, (EntityKey, KpiRow), Diff>,
    registry: VecCollection<'s, Time, RegistryRow, Diff>,
) -> VecCollection<'s, Time, KpiRow, Diff> {
    let known = rows
        .clone()
        .join(registry.clone())
        .map(|(_, ((mut labels, value), info))| {
            for (name, label) in info.labels {
                if !labels.iter().any(|(k, _)| *k == name) {
                    labels.push((name, label));
                }
            }
            labels.sort();
            (labels, value)
        });
    let unknown = rows
        .antijoin(registry.map(|(key, _)| key))
        .map(|(_, row)| row);
    known.concat(unknown)
}

/// The insertions of a collection of instants (see `instant`) as append-only events: each
/// `+1` at its time, never retracted. Windowed KPIs then retract them after their window.
pub fn insertions<'s, D: differential_dataflow::ExchangeData + std::hash::Hash>(
    instants: VecCollection<'s, Time, D, Diff>,
) -> VecCollection<'s, Time, D, Diff> {
    instants.consolidate_stream().filter_diff_positive()
}

/// Keeps only the positive updates of a collection.
trait FilterDiffPositive<'s, D> {
    fn filter_diff_positive(self) -> VecCollection<'s, Time, D, Diff>;
}

impl<'s, D: differential_dataflow::Data> FilterDiffPositive<'s, D>
    for VecCollection<'s, Time, D, Diff>
{
    fn filter_diff_positive(self) -> VecCollection<'s, Time, D, Diff> {
        use differential_dataflow::AsCollection;
        use timely::dataflow::operators::vec::Filter;
        self.inner.filter(|(_, _, diff)| *diff > 0).as_collection()
    }
}

/// Fixed-point scale of summed values (micro-units), so sums are exact integer differences.
const SUM_SCALE: f64 = 1e6;

/// Maintains every KPI in `defs` over `sources`: one row `((name, group), value)` per group
/// that has rows. An event source's rows count for the KPI's window only. A KPI whose source
/// is not built has no rows.
///
/// Each KPI first projects its source's rows to [`Point`]s (filter, group, and only the field
/// its aggregate reads). Counts, ratios, sums and averages are kept as accumulated differences
/// (`count_total`), so a change costs the same however large its group; min, max and
/// percentiles reduce over the group's distinct values.
pub fn kpi_values<'s>(
    sources: &KpiSources<'s>,
    defs: &[KpiDef],
) -> Option<VecCollection<'s, Time, KpiValue, Diff>> {
    use differential_dataflow::operators::CountTotal;

    let mut outputs = Vec::new();
    for def in defs {
        let Some(mut points) = sources.points(def) else {
            continue;
        };
        let window = def.window_ms.filter(|_| def.source.is_event_source());
        if let (Some(window), Aggregate::DistinctCount(_)) = (window, &def.aggregate) {
            // A distinct count asks only whether a tag occurred within the window: each worker
            // sends when that starts and ends, not every event and its expiry.
            points = points.windowed_presence(window);
        } else {
            if matches!(
                def.aggregate,
                Aggregate::Count
                    | Aggregate::RatePerMinute
                    | Aggregate::DistinctCount(_)
                    | Aggregate::Ratio(_)
            ) {
                // Few distinct points: merging them per time before the window halves the work.
                points = points.consolidate_stream();
            }
            if let Some(window) = window {
                let expired = points
                    .clone()
                    .delay(move |t| t.saturating_add(window))
                    .negate();
                points = points.concat(expired);
            }
        }
        let minutes = def.window_ms.unwrap_or(60_000).max(1) as f64 / 60_000.0;
        let values = match def.aggregate.clone() {
            Aggregate::Count | Aggregate::RatePerMinute => {
                let per_minute = def.aggregate == Aggregate::RatePerMinute;
                points
                    .map(|(group, _)| group)
                    .count_total()
                    .flat_map(move |(group, n)| {
                        let value = if per_minute {
                            n as f64 / minutes
                        } else {
                            n as f64
                        };
                        (n > 0).then_some((group, value))
                    })
            }
            Aggregate::DistinctCount(_) => points
                .aggregate_by_group(DistinctTags::default)
                .map(|(group, value)| (group, value.0)),
            Aggregate::Ratio(_) => points
                .explode(|(group, (_, hit))| Some((group, (hit.0 as isize, 1isize))))
                .count_total()
                .flat_map(|(group, (hits, n))| (n > 0).then(|| (group, hits as f64 / n as f64))),
            Aggregate::Sum | Aggregate::Avg => {
                let average = def.aggregate == Aggregate::Avg;
                points
                    .explode(|(group, (_, value))| {
                        let fixed = (value.0 * SUM_SCALE).round() as isize;
                        Some((group, (1isize, fixed)))
                    })
                    .count_total()
                    .flat_map(move |(group, (n, sum))| {
                        let total = sum as f64 / SUM_SCALE;
                        let value = if average { total / n as f64 } else { total };
                        (n > 0).then_some((group, value))
                    })
            }
            Aggregate::Min => by_statistic(points, Statistic::Min),
            Aggregate::Max => by_statistic(points, Statistic::Max),
            Aggregate::Percentile(p) => by_statistic(points, Statistic::Percentile(p)),
        };
        let name = def.name.clone();
        outputs
            .push(values.map(move |(group, value)| ((name.clone(), group), OrderedFloat(value))));
    }
    let first = outputs.first()?.clone();
    Some(differential_dataflow::collection::concatenate(
        first.scope(),
        outputs,
    ))
}

/// Each group's `statistic` of its points' values.
fn by_statistic<'s>(
    points: VecCollection<'s, Time, Point, Diff>,
    statistic: Statistic,
) -> VecCollection<'s, Time, (String, f64), Diff> {
    points
        .aggregate_by_group(move || OrderedValues::new(statistic))
        .map(|(group, value)| (group, value.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(pairs: &[(&str, &str)], value: f64) -> KpiRow {
        let mut labels: Labels = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        labels.sort();
        (labels, OrderedFloat(value))
    }

    #[test]
    fn aggregates_with_multiplicities() {
        let a = row(&[("face", "f1"), ("status", "open")], 1.0);
        let b = row(&[("face", "f2"), ("status", "resolved")], 3.0);
        let c = row(&[("face", "f2"), ("status", "open")], 8.0);
        let rows = [(&a, 2), (&b, 1), (&c, 1)];
        assert_eq!(aggregate(&rows, &Aggregate::Count, None), Some(4.0));
        assert_eq!(
            aggregate(&rows, &Aggregate::DistinctCount("face".into()), None),
            Some(2.0)
        );
        assert_eq!(aggregate(&rows, &Aggregate::Sum, None), Some(13.0));
        assert_eq!(aggregate(&rows, &Aggregate::Avg, None), Some(3.25));
        assert_eq!(aggregate(&rows, &Aggregate::Min, None), Some(1.0));
        assert_eq!(aggregate(&rows, &Aggregate::Max, None), Some(8.0));
        // Values 1, 1, 3, 8: nearest rank.
        assert_eq!(
            aggregate(&rows, &Aggregate::Percentile(50), None),
            Some(1.0)
        );
        assert_eq!(
            aggregate(&rows, &Aggregate::Percentile(75), None),
            Some(3.0)
        );
        assert_eq!(
            aggregate(&rows, &Aggregate::Percentile(90), None),
            Some(8.0)
        );
        let resolved = vec![("status".to_string(), "resolved".to_string())];
        assert_eq!(
            aggregate(&rows, &Aggregate::Ratio(resolved), None),
            Some(0.25)
        );
        assert_eq!(
            aggregate(&rows, &Aggregate::RatePerMinute, Some(120_000)),
            Some(2.0)
        );
        assert_eq!(aggregate(&[], &Aggregate::Count, None), None);
    }

    #[test]
    fn filters_and_groups() {
        let labels = row(&[("district", "uxin"), ("status", "open")], 0.0);
        let selectors = |pairs: &[(&str, &str)]| -> Labels {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        assert!(matches(&labels, &selectors(&[("status", "open")])));
        assert!(matches(&labels, &selectors(&[("district", "*")])));
        assert!(!matches(&labels, &selectors(&[("status", "resolved")])));
        assert!(!matches(&labels, &selectors(&[("face", "*")])));
        assert_eq!(group_of(&labels, Some("district")), "uxin");
        assert_eq!(group_of(&labels, Some("face")), "unknown");
        assert_eq!(group_of(&labels, None), "");
    }
}
