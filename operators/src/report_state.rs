//! The current state of every citizen report as a collection, from its lifecycle events.
//!
//! A frontier-driven timely operator, exchanged by report id, applies each report's events in
//! event-time order once the frontier has passed them (so late-arriving but allowed events
//! give exactly the in-order result) and emits the change of the report's row: the old row
//! retracted and the new one inserted at the event's time.
//!
//! Row labels: `report` (its id), `category`, `grid`, `status` (`open` | `resolved`), `stage`
//! (`created` | `dispatched` | `resolved`), `level` (`village` | `town` | `district`, one step
//! up per `escalated`), `followed_up` (`yes` | `no`). Row value: hours from creation to resolution
//! for resolved reports, 0 for open ones. Duplicate events change nothing.
//!
//! An event of a report whose `created` was never seen (or was forgotten, see below) changes
//! nothing and comes out of [`ReportStates::report_states_checked`] as an *unknown report*
//! event, once the frontier has passed its time: a `created` that arrives later but within
//! the allowed lateness (at an earlier event time) is applied first, so such an event is not
//! unknown. The caller turns unknown events into dead letters.
//!
//! State: one record per open report, and per resolved report until `retention` of event time
//! after its last event; then the record is forgotten (its row stays in the collection, so
//! counts over every report are unchanged) and later events of it are unknown.

use std::collections::BTreeMap;

use citybrain_model::{Domain, Labels, ReportKind};
use differential_dataflow::collection::vec;
use differential_dataflow::consolidation::consolidate;
use differential_dataflow::{AsCollection, VecCollection};
use ordered_float::OrderedFloat;
use rustc_hash::FxHashMap;
use timely::dataflow::StreamVec;
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::Capability;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::vec::Map;

use crate::entity_route;
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

/// The level names, by number of escalations: village, town, district.
pub const LEVELS: [&str; 3] = ["village", "town", "district"];

/// What the operator keeps per report.
#[derive(Clone, Debug)]
struct Report {
    id: String,
    category: String,
    grid: String,
    created: Time,
    resolved: Option<Time>,
    dispatched: bool,
    level: usize,
    followed_up: bool,
    /// The time of its last event.
    last: Time,
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
            ("report".into(), self.id.clone()),
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
            (Domain::Citizen, self.grid.as_str().into()),
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

/// An event of a report the operator does not know, with its event time.
pub type UnknownReportEvent = (ReportEventRow, Time);

/// What the operator emits: a change of a report's row, or an unknown report's event.
#[derive(Clone, Debug)]
enum Out {
    Row(ReportRow),
    Unknown(ReportEventRow),
}

/// How often (event time) reports to forget are looked for: a quarter of the retention, at
/// least once a second and at most once an hour of event time (a report is forgotten between
/// one and one and a quarter retentions after its last event).
fn prune_every(retention_ms: Time) -> Time {
    (retention_ms / 4).clamp(1_000, 3_600_000)
}

/// Folds report events into report states.
pub trait ReportStates<'s> {
    /// One row per known report, changing as its events arrive (resolved reports are
    /// remembered for [`crate::DEFAULT_REPORT_RETENTION_MS`]).
    fn report_states(self) -> VecCollection<'s, Time, ReportRow, Diff>;

    /// [`ReportStates::report_states`], remembering a resolved report `retention_ms` after its
    /// last event, and the events of unknown reports, each once (duplicates of it count once)
    /// at its event time.
    ///
    /// ```
    /// use citybrain_model::ReportKind;
    /// use citybrain_operators::report_state::ReportStates;
    /// use differential_dataflow::input::Input;
    /// use timely::dataflow::operators::Inspect;
    ///
    /// timely::example(|scope| {
    ///     let (mut events, reports) = scope.new_collection();
    ///     let (_states, unknown) = reports.report_states_checked(1_000);
    ///     unknown.inspect(|((id, (kind, ..)), time)| {
    ///         // R-1's `created` came later but at an earlier time: only R-2 is unknown.
    ///         assert_eq!((id.as_str(), *kind, *time), ("R-2", ReportKind::Resolved, 30));
    ///     });
    ///     let event = |kind| (kind, "noise".to_string(), "g".to_string(), None);
    ///     events.update_at(("R-1".to_string(), event(ReportKind::Resolved)), 20, 1);
    ///     events.update_at(("R-2".to_string(), event(ReportKind::Resolved)), 30, 1);
    ///     events.update_at(("R-1".to_string(), event(ReportKind::Created)), 10, 1);
    ///     events.advance_to(100);
    /// });
    /// ```
    fn report_states_checked(
        self,
        retention_ms: Time,
    ) -> (
        VecCollection<'s, Time, ReportRow, Diff>,
        StreamVec<'s, Time, UnknownReportEvent>,
    );
}

impl<'s> ReportStates<'s> for vec::Collection<'s, Time, ReportEventRow, Diff> {
    fn report_states(self) -> VecCollection<'s, Time, ReportRow, Diff> {
        self.report_states_checked(crate::DEFAULT_REPORT_RETENTION_MS)
            .0
    }

    fn report_states_checked(
        self,
        retention_ms: Time,
    ) -> (
        VecCollection<'s, Time, ReportRow, Diff>,
        StreamVec<'s, Time, UnknownReportEvent>,
    ) {
        let exchange =
            Exchange::new(|update: &(ReportEventRow, Time, Diff)| entity_route(&update.0.0));
        let out = self
            .inner
            .unary_frontier(exchange, "ReportStates", |_capability, _info| {
                let mut waiting: BTreeMap<Time, Waiting> = BTreeMap::new();
                let mut reports: FxHashMap<String, Report> = FxHashMap::default();
                let mut next_prune: Time = 0;
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
                        for ((id, (kind, category, grid, unit)), diff) in updates {
                            if diff <= 0 {
                                continue;
                            }
                            match reports.get_mut(&id) {
                                None if kind == ReportKind::Created => {
                                    let report = Report {
                                        id: id.clone(),
                                        category,
                                        grid,
                                        created: time,
                                        resolved: None,
                                        dispatched: false,
                                        level: 0,
                                        followed_up: false,
                                        last: time,
                                    };
                                    session.give((Out::Row(report.row()), time, 1));
                                    reports.insert(id, report);
                                }
                                None => {
                                    let row = (id, (kind, category, grid, unit));
                                    session.give((Out::Unknown(row), time, 1));
                                }
                                Some(report) => {
                                    report.last = report.last.max(time);
                                    let before = report.row();
                                    if report.apply(kind, time) {
                                        session.give((Out::Row(before), time, -1));
                                        session.give((Out::Row(report.row()), time, 1));
                                    }
                                }
                            }
                        }
                        if time >= next_prune {
                            let cutoff = time.saturating_sub(retention_ms);
                            reports.retain(|_, r| r.resolved.is_none() || r.last >= cutoff);
                            next_prune = time.saturating_add(prune_every(retention_ms));
                        }
                    }
                }
            });
        let rows = out
            .clone()
            .flat_map(|(out, time, diff)| match out {
                Out::Row(row) => Some((row, time, diff)),
                Out::Unknown(_) => None,
            })
            .as_collection();
        let unknown = out.flat_map(|(out, time, _)| match out {
            Out::Unknown(row) => Some((row, time)),
            Out::Row(_) => None,
        });
        (rows, unknown)
    }
}
