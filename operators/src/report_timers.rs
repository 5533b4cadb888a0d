//! The frontier-driven timely operator every citizen-report rule kind is built on: per-report
//! state with event-time timers, driven by a [`ReportTimerLogic`].
//!
//! Report events are exchanged by report id, rules are sent to every worker. Updates are
//! buffered per time and applied once the input frontier has passed it, in time order: first
//! the rule changes of that time, then each report's events in lifecycle order (so duplicates
//! and out-of-order events within the allowed lateness give the in-order result), then the
//! timers due at that time. Timers fire only while the input is open: when it ends (shutdown,
//! the end of a replay), pending timers are dropped.
//!
//! Every hit the logic emits is an instant: `+1` at its time and `-1` one millisecond later.
//! Hits carrying a `grid` label get the labels of that grid from the registry (`village`,
//! `town`, `district`) as of their time, so an alert can be routed to the level it names.
//! Reports that are idle (no timer, no firing alert) and whose last event is older than the
//! retention are forgotten ([`ReportTimerLogic::prune`]), so the state is one record per live
//! report.

use std::fmt::Debug;
use std::sync::Arc;

use citybrain_model::{Labels, ReportKind};
use differential_dataflow::consolidation::consolidate;
use differential_dataflow::{AsCollection, ExchangeData, VecCollection};
use serde::{Deserialize, Serialize};
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::generic::Operator;

use crate::agenda::Agenda;
use crate::entity_route;
use crate::hit::HitRow;
use crate::instant::push_instants;
use crate::report_state::{ReportEventRow, lifecycle_rank};
use crate::{Diff, Time};
use rustc_hash::FxHashMap;

/// What one step of a [`ReportTimerLogic`] produces: hits to emit at the current time, and
/// timers to set as (report id, due time); a due time not after the current time fires at the
/// current time, after the step.
#[derive(Debug, Default)]
pub struct Effects {
    /// Rule hits at the current time.
    pub hits: Vec<HitRow>,
    /// Timers to set: (report id, event time it is due).
    pub timers: Vec<(String, Time)>,
}

/// The per-report rules of one kind: how its state follows rules, report events and timers.
/// A timer may come due after the state it was set for moved on; the logic checks that it is
/// still the live one.
pub trait ReportTimerLogic: 'static {
    /// The kind's rule row.
    type Rule: ExchangeData + Ord + Debug + std::hash::Hash;

    /// Applies the (consolidated) rule changes of `time`.
    fn rules(&mut self, changes: Vec<(Self::Rule, Diff)>, time: Time, out: &mut Effects);

    /// Applies one report event at `time`.
    fn event(
        &mut self,
        report: &str,
        event: (ReportKind, &str, &str),
        time: Time,
        out: &mut Effects,
    );

    /// A timer of `report` set for `time` came due.
    fn timer(&mut self, report: &str, time: Time, out: &mut Effects);

    /// Forgets every report with neither a live timer nor a firing alert whose last event is
    /// before `cutoff`.
    fn prune(&mut self, cutoff: Time);
}

/// What the operator receives, with the worker-routing key in front.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
enum Input<R> {
    /// A rule (one copy per worker), `+1` while it exists.
    Rule(R),
    /// A report event.
    Event(ReportEventRow),
    /// A grid's registry labels (one copy per worker).
    Grid(String, Labels),
}

/// How often (event time) idle reports are looked for: a quarter of the retention, at least
/// once a second and at most once an hour of event time (a report is forgotten between one
/// and one and a quarter retentions after its last event).
fn prune_every(retention_ms: Time) -> Time {
    (retention_ms / 4).clamp(1_000, 3_600_000)
}

/// Runs a [`ReportTimerLogic`] over report events and rules.
pub trait ReportTimerHits<'s> {
    /// The hits `logic` emits over these report events and `rules`, with the labels of their
    /// grid in `grids` (grid id, labels); reports idle for `retention_ms` of event time are
    /// forgotten.
    ///
    /// ```
    /// use citybrain_model::{Domain, Metric, ReportKind, Severity};
    /// use citybrain_operators::hit::RuleHit;
    /// use citybrain_operators::ordered_float::OrderedFloat;
    /// use citybrain_operators::report_timers::{Effects, ReportTimerHits, ReportTimerLogic};
    /// use citybrain_operators::rule::{Direction, ThresholdRule};
    /// use citybrain_operators::{Diff, Time};
    /// use differential_dataflow::input::Input;
    /// use timely::dataflow::operators::Inspect;
    ///
    /// /// A hit 10 ms after each report's `created`.
    /// struct Ten(Vec<String>);
    /// impl ReportTimerLogic for Ten {
    ///     type Rule = String;
    ///     fn rules(&mut self, _: Vec<(String, Diff)>, _: Time, _: &mut Effects) {}
    ///     fn event(&mut self, id: &str, e: (ReportKind, &str, &str), t: Time, out: &mut Effects) {
    ///         if e.0 == ReportKind::Created {
    ///             out.timers.push((id.to_string(), t + 10));
    ///         }
    ///     }
    ///     fn timer(&mut self, id: &str, t: Time, out: &mut Effects) {
    ///         let rule = ThresholdRule {
    ///             id: "r".into(), domain: Domain::Citizen, metric: Metric::Ch4, scope: vec![],
    ///             direction: Direction::Above, threshold: OrderedFloat(1.0),
    ///             clear: OrderedFloat(1.0), hold_ms: 0, severity: Severity::Info,
    ///             summary: String::new(), labels: vec![],
    ///         };
    ///         let hit = RuleHit::new(t, 1.0, vec![], rule);
    ///         out.hits.push((("r".into(), id.into()), hit));
    ///     }
    ///     fn prune(&mut self, _: Time) {}
    /// }
    ///
    /// timely::example(|scope| {
    ///     let (mut events, reports) = scope.new_collection();
    ///     let (_, rules) = scope.new_collection::<String, Diff>();
    ///     let (_, grids) = scope.new_collection();
    ///     reports
    ///         .report_timer_hits(rules, grids, Ten(vec![]), "Ten", 1000)
    ///         .inspect(|((key, hit), time, diff)| {
    ///             assert_eq!((key.1.as_str(), hit.time), ("R-1", 15));
    ///             assert!((*time, *diff) == (15, 1) || (*time, *diff) == (16, -1));
    ///         });
    ///     let created = (ReportKind::Created, "noise".to_string(), "g".to_string(), None);
    ///     events.update_at(("R-1".to_string(), created), 5, 1);
    ///     events.advance_to(100);
    /// });
    /// ```
    fn report_timer_hits<L: ReportTimerLogic>(
        self,
        rules: VecCollection<'s, Time, L::Rule, Diff>,
        grids: VecCollection<'s, Time, (String, Labels), Diff>,
        logic: L,
        name: &str,
        retention_ms: Time,
    ) -> VecCollection<'s, Time, HitRow, Diff>;
}

impl<'s> ReportTimerHits<'s> for VecCollection<'s, Time, ReportEventRow, Diff> {
    fn report_timer_hits<L: ReportTimerLogic>(
        self,
        rules: VecCollection<'s, Time, L::Rule, Diff>,
        grids: VecCollection<'s, Time, (String, Labels), Diff>,
        mut logic: L,
        name: &str,
        retention_ms: Time,
    ) -> VecCollection<'s, Time, HitRow, Diff> {
        let peers = self.scope().peers() as u64;
        // Every worker needs every rule: one copy per worker, routed by its index.
        let rules = rules.flat_map(move |rule| {
            (0..peers).map(move |worker| (worker, Input::Rule(rule.clone())))
        });
        let grids = grids.flat_map(move |(grid, labels)| {
            (0..peers).map(move |worker| (worker, Input::Grid(grid.clone(), labels.clone())))
        });
        let events = self.map(|row| (entity_route(&row.0), Input::Event(row)));
        let exchange = Exchange::new(|update: &((u64, Input<L::Rule>), Time, Diff)| update.0.0);
        rules
            .concat(grids)
            .concat(events)
            .inner
            .unary_frontier(exchange, name, move |_capability, _info| {
                let mut agenda: Agenda<Input<L::Rule>, String> = Agenda::new();
                let mut next_prune: Time = 0;
                let mut grid_labels: FxHashMap<String, Labels> = FxHashMap::default();
                move |(input, frontier), output| {
                    input.for_each(|capability, data| {
                        let mut data: Vec<_> = data
                            .drain(..)
                            .map(|((_, update), time, diff)| (update, time, diff))
                            .collect();
                        agenda.append(&capability, &mut data);
                    });
                    if frontier.is_empty() {
                        // At the end of the input nothing comes due: timers are dropped.
                        agenda.close();
                    }
                    let step = |agenda: &mut Agenda<Input<L::Rule>, String>,
                                time: Time,
                                updates: &mut Vec<(Input<L::Rule>, Diff)>,
                                ids: &mut Vec<String>,
                                out: &mut Vec<_>| {
                        let mut effects = Effects::default();
                        consolidate(updates);
                        let mut changes = Vec::new();
                        let mut events = Vec::new();
                        for (update, diff) in updates.drain(..) {
                            match update {
                                Input::Rule(rule) => changes.push((rule, diff)),
                                Input::Event(row) if diff > 0 => events.push(row),
                                Input::Event(_) => {}
                                Input::Grid(grid, labels) if diff > 0 => {
                                    grid_labels.insert(grid, labels);
                                }
                                Input::Grid(grid, labels) => {
                                    if grid_labels.get(&grid) == Some(&labels) {
                                        grid_labels.remove(&grid);
                                    }
                                }
                            }
                        }
                        if !changes.is_empty() {
                            logic.rules(changes, time, &mut effects);
                        }
                        events.sort_by(|(a, (ka, ..)), (b, (kb, ..))| {
                            (a, lifecycle_rank(*ka)).cmp(&(b, lifecycle_rank(*kb)))
                        });
                        for (id, (kind, category, grid, _unit)) in &events {
                            logic.event(id, (*kind, category, grid), time, &mut effects);
                        }
                        ids.sort();
                        ids.dedup();
                        for id in ids.drain(..) {
                            logic.timer(&id, time, &mut effects);
                        }
                        if time >= next_prune {
                            logic.prune(time.saturating_sub(retention_ms));
                            next_prune = time.saturating_add(prune_every(retention_ms));
                        }
                        for (id, at) in effects.timers {
                            agenda.schedule(id, at.max(time));
                        }
                        let mut hits = effects.hits;
                        for (_, hit) in &mut hits {
                            with_grid_labels(Arc::make_mut(&mut hit.labels), &grid_labels);
                        }
                        push_instants(out, time, hits);
                    };
                    agenda.run_ready(
                        |t| !frontier.less_equal(t),
                        step,
                        |capability, out| {
                            output.session(capability).give_container(out);
                        },
                    );
                }
            })
            .as_collection()
    }
}

/// Adds the registry labels of the hit's grid to `labels` (those it does not carry already).
fn with_grid_labels(labels: &mut Labels, grids: &FxHashMap<String, Labels>) {
    let Some(grid) = labels.iter().find(|(k, _)| k == "grid").map(|(_, v)| v) else {
        return;
    };
    let Some(extra) = grids.get(grid) else {
        return;
    };
    let added: Labels = extra
        .iter()
        .filter(|(k, _)| !labels.iter().any(|(have, _)| have == k))
        .cloned()
        .collect();
    if !added.is_empty() {
        labels.extend(added);
        labels.sort();
    }
}
