//! Marks each citizen report's row as overdue or not: `overdue = yes` while a `report_deadline`
//! alert about the report is firing (at any level of its escalation ladder), `no` otherwise.
//! The wall's "overdue share" KPI is then a plain ratio over open reports.
//!
//! A differential semijoin (and its complement) of the report rows (keyed by their `report` label, see
//! [`crate::report_state`]) with the ids of the reports that have a firing deadline alert, so
//! a report's row changes at the very times its alert fires and resolves.

use citybrain_model::Labels;
use differential_dataflow::VecCollection;

use crate::kinds::absence::RULE_KIND_LABEL;
use crate::kinds::report_deadline::RULE_KIND;
use crate::kpi::KpiRow;
use crate::report_state::ReportRow;
use crate::{Diff, Time};

/// The label added to every report row, `yes` or `no`.
pub const OVERDUE_LABEL: &str = "overdue";

/// Adds the `overdue` label to report rows.
pub trait MarkOverdue<'s> {
    /// `self`: report rows (labels include `report`); `active_alerts`: the active citizen
    /// alerts (labels include `rule_kind` and `entity`, the report id for deadline alerts).
    ///
    /// ```
    /// use citybrain_operators::EntityId;
    /// use citybrain_model::Domain;
    /// use citybrain_operators::ordered_float::OrderedFloat;
    /// use citybrain_operators::overdue::MarkOverdue;
    /// use differential_dataflow::input::Input;
    /// use timely::dataflow::operators::Inspect;
    ///
    /// timely::example(|scope| {
    ///     let labels = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
    ///         pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    ///     };
    ///     let (mut reports, report_rows) = scope.new_collection();
    ///     let (mut alerts, active) = scope.new_collection();
    ///     report_rows.mark_overdue(active).inner.inspect(|(((_, grid), (labels, _)), time, diff)| {
    ///         let overdue = labels.iter().find(|(k, _)| k == "overdue").map(|(_, v)| v.as_str());
    ///         // R-1 is "no" from 0 and "yes" from 5 on, when its deadline alert fires.
    ///         let expected = match (*time, *diff) {
    ///             (0, 1) => Some("no"),
    ///             (5, -1) => Some("no"),
    ///             (5, 1) => Some("yes"),
    ///             _ => None,
    ///         };
    ///         assert_eq!((grid.as_str(), overdue), ("g", expected));
    ///     });
    ///     let row = labels(&[("report", "R-1"), ("status", "open")]);
    ///     reports.update_at(((Domain::Citizen, EntityId::from("g")), (row, OrderedFloat(0.0))), 0, 1);
    ///     let alert = labels(&[("entity", "R-1"), ("rule_kind", "report_deadline")]);
    ///     alerts.update_at((alert, OrderedFloat(1.0)), 5, 1);
    /// });
    /// ```
    fn mark_overdue(
        self,
        active_alerts: VecCollection<'s, Time, KpiRow, Diff>,
    ) -> VecCollection<'s, Time, ReportRow, Diff>;
}

fn label<'a>(labels: &'a Labels, name: &str) -> Option<&'a str> {
    labels
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

fn with_overdue(row: ReportRow, overdue: bool) -> ReportRow {
    let (key, (mut labels, value)) = row;
    let mark = (
        OVERDUE_LABEL.to_string(),
        if overdue { "yes" } else { "no" }.to_string(),
    );
    let at = labels.partition_point(|(k, _)| k.as_str() < OVERDUE_LABEL);
    labels.insert(at, mark);
    (key, (labels, value))
}

impl<'s> MarkOverdue<'s> for VecCollection<'s, Time, ReportRow, Diff> {
    fn mark_overdue(
        self,
        active_alerts: VecCollection<'s, Time, KpiRow, Diff>,
    ) -> VecCollection<'s, Time, ReportRow, Diff> {
        let overdue_ids = active_alerts
            .flat_map(|(labels, _)| {
                (label(&labels, RULE_KIND_LABEL) == Some(RULE_KIND))
                    .then(|| label(&labels, "entity").map(str::to_string))
                    .flatten()
            })
            .distinct();
        let by_report = self.flat_map(|row| {
            let id = label(&(row.1).0, "report").map(str::to_string);
            id.map(|id| (id, row))
        });
        // The rows not overdue are all rows less the overdue ones: `antijoin` would compute the
        // same semijoin a second time.
        let overdue = by_report.clone().semijoin(overdue_ids);
        let on_time = by_report.concat(overdue.clone().negate());
        overdue
            .map(|(_, row)| with_overdue(row, true))
            .concat(on_time.map(|(_, row)| with_overdue(row, false)))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use citybrain_model::Domain;
    use differential_dataflow::input::Input;
    use ordered_float::OrderedFloat;
    use proptest::prelude::*;
    use timely::dataflow::operators::Inspect;

    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// Reports 0..4 all open at 0; each (report, fire, resolve) is a deadline alert interval;
    /// rows of other rule kinds never count. Returns (report, overdue) at `at`, by the operator.
    fn overdue_at(alerts: &[(usize, u64, u64)], at: u64) -> Vec<(String, String)> {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&seen);
        let alerts = alerts.to_vec();
        timely::example(move |scope| {
            let (mut reports, rows) = scope.new_collection();
            let (mut active, alert_rows) = scope.new_collection();
            rows.mark_overdue(alert_rows).inner.inspect(move |update| {
                if let Ok(mut seen) = sink.lock() {
                    seen.push(update.clone());
                }
            });
            for r in 0..4 {
                let id = format!("R-{r}");
                let row = labels(&[("report", &id), ("status", "open")]);
                reports.update_at(
                    ((Domain::Citizen, "g".into()), (row, OrderedFloat(0.0))),
                    0,
                    1,
                );
            }
            for &(r, fire, resolve) in &alerts {
                let id = format!("R-{r}");
                for kind in ["report_deadline", "follow_up"] {
                    let row = (
                        labels(&[("entity", &id), ("rule_kind", kind)]),
                        OrderedFloat(1.0),
                    );
                    active.update_at(row.clone(), fire, 1);
                    active.update_at(row, resolve, -1);
                }
            }
        });
        let updates = seen.lock().map(|s| s.clone()).unwrap_or_default();
        let mut state: Vec<((String, String), isize)> = Vec::new();
        for ((_, (labels, _)), time, diff) in updates {
            if time > at {
                continue;
            }
            let key = (
                label(&labels, "report").unwrap_or_default().to_string(),
                label(&labels, OVERDUE_LABEL)
                    .unwrap_or_default()
                    .to_string(),
            );
            match state.iter_mut().find(|(k, _)| *k == key) {
                Some(entry) => entry.1 += diff,
                None => state.push((key, diff)),
            }
        }
        let mut present: Vec<(String, String)> = state
            .into_iter()
            .filter(|(_, n)| *n > 0)
            .map(|(k, _)| k)
            .collect();
        present.sort();
        present
    }

    /// The reference: a report is overdue at `at` when one of its intervals covers it.
    fn reference(alerts: &[(usize, u64, u64)], at: u64) -> Vec<(String, String)> {
        (0..4)
            .map(|r| {
                let overdue = alerts
                    .iter()
                    .any(|&(a, fire, resolve)| a == r && fire <= at && at < resolve);
                (
                    format!("R-{r}"),
                    if overdue { "yes" } else { "no" }.to_string(),
                )
            })
            .collect()
    }

    #[test]
    fn a_report_is_overdue_while_its_deadline_alert_fires() {
        let alerts = [(1, 10, 20)];
        assert_eq!(overdue_at(&alerts, 5), reference(&alerts, 5));
        assert_eq!(overdue_at(&alerts, 15)[1], ("R-1".into(), "yes".into()));
        assert_eq!(overdue_at(&alerts, 25)[1], ("R-1".into(), "no".into()));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]
        #[test]
        fn overdue_equals_the_reference(
            intervals in proptest::collection::vec((0usize..4, 1u64..50, 1u64..30), 0..6),
            at in 0u64..90,
        ) {
            // Intervals of one report do not overlap: one firing alert at a time per report.
            let mut alerts: Vec<(usize, u64, u64)> = Vec::new();
            for (r, fire, length) in intervals {
                let overlaps = alerts
                    .iter()
                    .any(|&(a, f, e)| a == r && fire < e && f < fire + length);
                if !overlaps {
                    alerts.push((r, fire, fire + length));
                }
            }
            prop_assert_eq!(overdue_at(&alerts, at), reference(&alerts, at));
        }
    }
}
