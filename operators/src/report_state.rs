//! The current state of every citizen report as a collection, from its lifecycle events.
//!
//! A frontier-driven timely operator, exchanged by report id, applies each report's events in
//! event-time order once the frontier has passed them (so late-arriving but allowed events
//! give exactly the in-order result) and emits the change of the report's row: the old row
//! retracted and the new one inserted at the event's time.
//!
//! Row labels: `category`, `grid`, `status` (`open` | `resolved`), `stage` (`created` |
//! `dispatched` | `resolved`), `level` (`village` | `town` | `district`, one step up per
//! `escalated`), `followed_up` (`yes` | `no`). Row value: hours from creation to resolution
//! for resolved reports, 0 for open ones. Duplicate events change nothing; events of a report
//! whose `created` was never seen are ignored (and counted by the caller's dead letters).

use std::collections::BTreeMap;

use citybrain_model::{Domain, Labels, ReportKind};
use differential_dataflow::collection::vec;
use differential_dataflow::consolidation::consolidate;
use differential_dataflow::{AsCollection, Hashable, VecCollection};
use ordered_float::OrderedFloat;
use rustc_hash::FxHashMap;
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::Capability;
use timely::dataflow::operators::generic::Operator;

use crate::kpi::KpiRow;
use crate::{Diff, EntityKey, Time};

/// A report event as a collection row: report id -> (kind, category, grid, unit).
pub type ReportEventRow = (String, (ReportKind, String, String, Option<String>));

/// A report's row keyed by its grid (to join with the grid registry).
pub type ReportRow = (EntityKey, KpiRow);

/// Milliseconds per hour.
const HOUR_MS: f64 = 3_600_000.0;

/// The order in which events of one report at one instant apply.
pub(crate) fn lifecycle_rank(kind: ReportKind) -> u8 {
    match kind {
        ReportKind::Created => 0,
        ReportKind::Dispatched => 1,
        ReportKind::Escalated => 2,
        ReportKind::Resolved => 3,
        ReportKind::Reopened => 4,
        ReportKind::FollowedUp => 5,
    }
}

/// The level names, by number of escalations.
pub(crate) const LEVELS: [&str; 3] = ["village", "town", "district"];

/// What the operator keeps per report.
#[derive(Clone, Debug)]
struct Report {
    category: String,
    grid: String,
    created: Time,
    resolved: Option<Time>,
    dispatched: bool,
    level: usize,
    followed_up: bool,
}

impl Report {
    fn row(&self) -> ReportRow {
        let stage = match (self.resolved, self.dispatched) {
            (Some(_), _) => "resolved",
            (None, true) => "dispatched",
            (None, false) => "created",
        };
        let mut labels: Labels = vec![
            ("category".into(), self.category.clone()),
            (
                "followed_up".into(),
                if self.followed_up { "yes" } else { "no" }.into(),
            ),
            ("grid".into(), self.grid.clone()),
            ("level".into(), LEVELS[self.level.min(2)].into()),
            ("stage".into(), stage.into()),
            (
                "status".into(),
                if self.resolved.is_some() {
                    "resolved"
                } else {
                    "open"
                }
                .into(),
            ),
        ];
        labels.sort();
        let hours = self
            .resolved
            .map_or(0.0, |r| r.saturating_sub(self.created) as f64 / HOUR_MS);
        (
            (Domain::Citizen, self.grid.clone()),
            (labels, OrderedFloat(hours)),
        )
    }

    /// Applies one event; returns false when it changes nothing.
    fn apply(&mut self, kind: ReportKind, time: Time) -> bool {
        match kind {
            ReportKind::Created => false,
            ReportKind::Dispatched if self.dispatched => false,
            ReportKind::Dispatched => {
                self.dispatched = true;
                true
            }
            ReportKind::Escalated if self.level >= 2 || self.resolved.is_some() => false,
            ReportKind::Escalated => {
                self.level += 1;
                true
            }
            ReportKind::Resolved if self.resolved.is_some() => false,
            ReportKind::Resolved => {
                self.resolved = Some(time);
                true
            }
            ReportKind::Reopened if self.resolved.is_none() => false,
            ReportKind::Reopened => {
                self.resolved = None;
                self.followed_up = false;
                true
            }
            ReportKind::FollowedUp if self.followed_up => false,
            ReportKind::FollowedUp => {
                self.followed_up = true;
                true
            }
        }
    }
}

/// Updates of one time, held until the frontier passes it, with the capability to emit at it.
type Waiting = (Capability<Time>, Vec<(ReportEventRow, Diff)>);

/// Folds report events into report states.
pub trait ReportStates<'s> {
    /// One row per known report, changing as its events arrive.
    fn report_states(self) -> VecCollection<'s, Time, ReportRow, Diff>;
}

impl<'s> ReportStates<'s> for vec::Collection<'s, Time, ReportEventRow, Diff> {
    fn report_states(self) -> VecCollection<'s, Time, ReportRow, Diff> {
        let exchange = Exchange::new(|update: &(ReportEventRow, Time, Diff)| (update.0).0.hashed());
        self.inner
            .unary_frontier(exchange, "ReportStates", |_capability, _info| {
                let mut waiting: BTreeMap<Time, Waiting> = BTreeMap::new();
                let mut reports: FxHashMap<String, Report> = FxHashMap::default();
                move |(input, frontier), output| {
                    input.for_each(|capability, data| {
                        for (row, time, diff) in data.drain(..) {
                            waiting
                                .entry(time)
                                .or_insert_with(|| (capability.delayed(&time, 0), Vec::new()))
                                .1
                                .push((row, diff));
                        }
                    });
                    while let Some(entry) = waiting.first_entry() {
                        let time = *entry.key();
                        if frontier.less_equal(&time) {
                            break;
                        }
                        let (capability, mut updates) = entry.remove();
                        consolidate(&mut updates);
                        updates.sort_by(|((a, (ka, ..)), _), ((b, (kb, ..)), _)| {
                            (a, lifecycle_rank(*ka)).cmp(&(b, lifecycle_rank(*kb)))
                        });
                        let mut session = output.session(&capability);
                        for ((id, (kind, category, grid, _unit)), diff) in updates {
                            if diff <= 0 {
                                continue;
                            }
                            match reports.get_mut(&id) {
                                None if kind == ReportKind::Created => {
                                    let report = Report {
                                        category,
                                        grid,
                                        created: time,
                                        resolved: None,
                                        dispatched: false,
                                        level: 0,
                                        followed_up: false,
                                    };
                                    session.give((report.row(), time, 1));
                                    reports.insert(id, report);
                                }
                                None => {}
                                Some(report) => {
                                    let before = report.row();
                                    if report.apply(kind, time) {
                                        session.give((before, time, -1));
                                        session.give((report.row(), time, 1));
                                    }
                                }
                            }
                        }
                    }
                }
            })
            .as_collection()
    }
}
