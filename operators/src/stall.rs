//! Ingest stalls: a partition of a reading topic that delivers nothing while event time moves
//! on raises one `ingest stalled` alert, instead of every sensor it carries going
//! `sensor silent`.
//!
//! The Kafka source tells the dataflow, as [`PartitionRow`]s, when each partition was heard
//! from (the distinct event times of the readings of each batch it delivered) and which
//! partition each entity's readings come from (only when that is new or changes). Absence rules with a
//! `stall_after` ([`AbsenceRule::stall_after_ms`]) time the partitions of their domain:
//!
//! Semantics, in event time, per (rule, partition):
//! - a partition is timed from the first time it is heard from after the rule exists (like an
//!   entity, a partition never heard from is not timed); that first time is a hit with value 0,
//!   so an alert still firing in the alert log after a restart resolves when data flows;
//! - after it is heard from at `t`, it is stalled at `t + stall_after` unless it is heard from
//!   again in `(t, t + stall_after]`: one hit (value 1, reporting the gap in seconds) with the
//!   entity `topic/partition` (e.g. `mine.readings/2`) and the labels `topic`, `partition` and
//!   `rule_kind = "ingest_stall"` (the alert adds `domain`, `rule`, `severity`);
//! - the next time it is heard from resolves it (value 0, reporting the whole gap);
//! - the rule losing its `stall_after`, changing domain or being removed resolves a stalled
//!   partition at that time and forgets it; a changed `stall_after` recomputes the deadline
//!   from the newest event (at the earliest, the time of the change);
//! - while the partition is stalled, every entity last read from it is *stalled* for the rule
//!   (the second output): the absence operator raises no `sensor silent` for it and restarts
//!   its deadline when the stall ends (see [`crate::kinds::absence`]);
//! - timers fire only while the input is open (as for absence).
//!
//! When every partition of a topic stalls at once (the whole topic, or the brokers, stopped
//! while the watermark moves on with the wall clock or other topics), each partition raises
//! its own alert: one per partition, not one per topic.
//!
//! A sensor silent on a healthy partition still goes `sensor silent`. A stall is noticed
//! `stall_after` after the partition's newest event; an entity whose own deadline comes first
//! (its silence limit is shorter than `stall_after` plus the time between its last reading and
//! the partition's newest event) is reported silent before the stall is known and stays so. So
//! `stall_after` should be at most `(cadences - 1) × cadence + for` of the rule's entities.
//!
//! Built as one frontier-driven timely operator: the partition events exchanged by partition,
//! the rule rows broadcast to every worker; both buffered per time and applied once both
//! frontiers have passed it, in time order, then the timers due at that time. State: one
//! record per (rule with `stall_after`, partition heard from) and at most one pending timer
//! each (being heard from does not set a new one: a timer that comes due before the newest
//! event plus `stall_after` moves there).

use std::sync::Arc;

use citybrain_model::{Labels, PartitionId};
use differential_dataflow::consolidation::consolidate;
use differential_dataflow::{AsCollection, Hashable, VecCollection};
use ordered_float::OrderedFloat;
use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::vec::Broadcast;

use crate::agenda::Agenda;
use crate::hit::{HitRow, RuleHit};
use crate::kinds::absence::{AbsenceRule, RULE_KIND_LABEL};
use crate::rule::{Direction, ThresholdRule};
use crate::{Diff, EntityKey, Time};

/// The value of the `rule_kind` label of `ingest stalled` alerts.
pub const STALL_RULE_KIND: &str = "ingest_stall";

/// The summary of `ingest stalled` alerts (`{entity}` is `topic/partition`, `{value}` the
/// silence in seconds).
pub const STALL_SUMMARY: &str = "ingest stalled: {entity} delivered no readings for {value} s";

/// What the Kafka source tells the dataflow about its reading partitions.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum PartitionRow {
    /// The partition delivered a reading at this row's event time: an event, `+1` at its time
    /// and never retracted (only insertions count).
    Heard(PartitionId),
    /// The entity's readings come from this partition: a set, inserted at the entity's first
    /// reading and moved (a retraction and an insertion) when they come from another one. Each
    /// worker knows the entities of its own partitions only: an entity that moves to a
    /// partition of another worker stays on its old one too (producers key readings by sensor,
    /// so a sensor keeps its partition unless the topic is repartitioned).
    Placement(EntityKey, PartitionId),
}

/// (rule id, partition).
type Key = (String, PartitionId);

/// A rule's stall side: what a rule row with a `stall_after` says about partitions.
#[derive(Clone, Debug, PartialEq)]
struct StallRule {
    alarm: ThresholdRule,
    after_ms: u64,
}

impl StallRule {
    fn of(rule: &AbsenceRule) -> Option<Self> {
        rule.stall_after_ms.map(|after_ms| StallRule {
            alarm: stall_alarm(rule),
            after_ms,
        })
    }
}

/// The alarm of an absence rule's `ingest stalled` alerts: its id, severity and labels, a fixed
/// alarm side (at or above 1, no hold) and the stall summary.
pub(crate) fn stall_alarm(rule: &AbsenceRule) -> ThresholdRule {
    ThresholdRule {
        direction: Direction::Above,
        threshold: OrderedFloat(1.0),
        clear: OrderedFloat(1.0),
        hold_ms: 0,
        summary: STALL_SUMMARY.to_string(),
        ..rule.alarm.clone()
    }
}

/// Where a (rule, partition) stands.
struct State {
    /// Newest event time heard from it.
    newest: Time,
    /// True while stalled.
    stalled: bool,
    /// The pending timer, when not stalled: at or before `newest + stall_after`.
    deadline: Option<Time>,
}

/// What the operator emits.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
enum Out {
    /// An evaluation (an instant: `+1` at its time, `-1` a millisecond later).
    Hit(HitRow),
    /// The partition is stalled for the rule (`+1` at the start, `-1` at the end).
    Stalled(String, PartitionId),
}

/// What one processed time emits: (row, diff at the time, retracted a millisecond later).
type Emitted = Vec<(Out, Diff, bool)>;

/// The hit of `rule` for `partition` at `time`: stalled (fires) or not (clears), reporting the
/// silence since `newest` in seconds.
fn hit(rule: &StallRule, partition: &PartitionId, time: Time, stalled: bool, newest: Time) -> Out {
    let mut labels: Labels = vec![
        ("partition".to_string(), partition.partition.to_string()),
        (RULE_KIND_LABEL.to_string(), STALL_RULE_KIND.to_string()),
        ("topic".to_string(), partition.topic.clone()),
    ];
    labels.sort();
    let seconds = time.saturating_sub(newest) as f64 / 1000.0;
    Out::Hit((
        (rule.alarm.id.as_str().into(), partition.entity().into()),
        RuleHit {
            time,
            value: OrderedFloat(if stalled { 1.0 } else { 0.0 }),
            reported: OrderedFloat(seconds),
            labels: Arc::new(labels),
            rule: Arc::new(rule.alarm.clone()),
        },
    ))
}

/// Ends the stall of `key`, if any, at `time`.
fn end_stall(key: &Key, state: &mut State, rule: &StallRule, time: Time, out: &mut Emitted) {
    if state.stalled {
        out.push((hit(rule, &key.1, time, false, state.newest), 1, true));
        out.push((Out::Stalled(key.0.clone(), key.1.clone()), -1, false));
        state.stalled = false;
    }
}

/// The operator's state: rules with a stall side, and the (rule, partition) records.
#[derive(Default)]
struct StallStates {
    rules: FxHashMap<String, StallRule>,
    states: FxHashMap<Key, State>,
}

impl StallStates {
    /// Applies the rule-row changes of `time`; returns the deadlines to schedule.
    fn rules_changed(
        &mut self,
        time: Time,
        mut changes: Vec<(AbsenceRule, Diff)>,
        out: &mut Emitted,
    ) -> Vec<(Key, Time)> {
        consolidate(&mut changes);
        let mut touched: Vec<String> = Vec::new();
        let mut inserted: FxHashMap<String, StallRule> = FxHashMap::default();
        for (rule, diff) in changes {
            let id = rule.alarm.id.clone();
            if diff > 0
                && let Some(stall) = StallRule::of(&rule)
            {
                inserted.insert(id.clone(), stall);
            }
            touched.push(id);
        }
        touched.sort();
        touched.dedup();
        let mut scheduled = Vec::new();
        for id in touched {
            let before = self.rules.remove(&id);
            let after = inserted.remove(&id);
            if before == after {
                if let Some(rule) = before {
                    self.rules.insert(id, rule);
                }
                continue;
            }
            let mut keys: Vec<Key> = self
                .states
                .keys()
                .filter(|key| key.0 == id)
                .cloned()
                .collect();
            keys.sort();
            for key in keys {
                let Some(state) = self.states.get_mut(&key) else {
                    continue;
                };
                match (&before, &after) {
                    (_, Some(new)) if new.alarm.domain == key.1.domain => {
                        if !state.stalled {
                            let deadline = state.newest.saturating_add(new.after_ms).max(time);
                            state.deadline = Some(deadline);
                            scheduled.push((key.clone(), deadline));
                        }
                    }
                    _ => {
                        if let Some(old) = &before {
                            end_stall(&key, state, old, time, out);
                        }
                        self.states.remove(&key);
                    }
                }
            }
            if let Some(rule) = after {
                self.rules.insert(id, rule);
            }
        }
        scheduled
    }

    /// `partition` was heard from at `time`; returns the deadlines to schedule.
    fn heard(
        &mut self,
        time: Time,
        partition: &PartitionId,
        out: &mut Emitted,
    ) -> Vec<(Key, Time)> {
        let mut ids: Vec<&String> = self
            .rules
            .iter()
            .filter(|(_, rule)| rule.alarm.domain == partition.domain)
            .map(|(id, _)| id)
            .collect();
        ids.sort();
        let mut scheduled = Vec::new();
        for id in ids {
            let Some(rule) = self.rules.get(id) else {
                continue;
            };
            let key = (id.clone(), partition.clone());
            let state = self.states.entry(key.clone()).or_insert_with(|| {
                // Not stalled: resolves an alert seeded as firing after a restart.
                out.push((hit(rule, partition, time, false, time), 1, true));
                State {
                    newest: time,
                    stalled: false,
                    deadline: None,
                }
            });
            end_stall(&key, state, rule, time, out);
            state.newest = state.newest.max(time);
            if state.deadline.is_none() {
                let deadline = state.newest.saturating_add(rule.after_ms);
                state.deadline = Some(deadline);
                scheduled.push((key, deadline));
            }
        }
        scheduled
    }

    /// A timer of `key` came due at `time`: stalls when it is the pending one and nothing was
    /// heard since `time - stall_after`; otherwise returns the timer to set instead.
    fn due(&mut self, key: &Key, time: Time, out: &mut Emitted) -> Option<(Key, Time)> {
        let (Some(state), Some(rule)) = (self.states.get_mut(key), self.rules.get(&key.0)) else {
            return None;
        };
        if state.stalled || state.deadline != Some(time) {
            return None;
        }
        let deadline = state.newest.saturating_add(rule.after_ms);
        if deadline > time {
            state.deadline = Some(deadline);
            return Some((key.clone(), deadline));
        }
        out.push((hit(rule, &key.1, time, true, state.newest), 1, true));
        out.push((Out::Stalled(key.0.clone(), key.1.clone()), 1, false));
        state.stalled = true;
        state.deadline = None;
        None
    }
}

/// What the operator receives: a rule row (broadcast) or a partition heard from.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Update {
    Rule(AbsenceRule),
    Heard(PartitionId),
}

/// What [`PartitionStalls::partition_stalls`] gives: the hits of the `ingest stalled` alerts,
/// and the `(rule id, entity)` pairs stalled with their partition.
pub type Stalls<'s> = (
    VecCollection<'s, Time, HitRow, Diff>,
    VecCollection<'s, Time, (String, String), Diff>,
);

/// Times partition stalls.
pub trait PartitionStalls<'s> {
    /// Per absence rule with a `stall_after` and partition of its domain: one hit (value 1) at
    /// the event time the partition has been silent for `stall_after` since it was last heard
    /// from, one (value 0) when it is heard from again; and the entities stalled for the rule,
    /// `(rule id, entity)`, present while the partition their readings come from is stalled.
    ///
    /// ```
    /// use citybrain_model::{Domain, Metric, PartitionId, Severity};
    /// use citybrain_operators::kinds::absence::AbsenceRule;
    /// use citybrain_operators::ordered_float::OrderedFloat;
    /// use citybrain_operators::rule::{Direction, ThresholdRule};
    /// use citybrain_operators::stall::{PartitionRow, PartitionStalls};
    /// use differential_dataflow::input::Input;
    /// use std::{cell::RefCell, rc::Rc};
    /// use timely::dataflow::operators::Probe;
    ///
    /// timely::execute_directly(|worker| {
    ///     let seen = Rc::new(RefCell::new(Vec::new()));
    ///     let (hits_out, stalled_out) = (Rc::clone(&seen), Rc::clone(&seen));
    ///     let (mut partitions, mut rules, probe) = worker.dataflow::<u64, _, _>(|scope| {
    ///         let (partitions, partition_rows) = scope.new_collection();
    ///         let (rules, rule_rows) = scope.new_collection();
    ///         let (hits, stalled) = partition_rows.partition_stalls(rule_rows);
    ///         let (probe, _) = hits
    ///             .inspect(move |((key, hit), time, diff)| {
    ///                 if *diff > 0 {
    ///                     hits_out.borrow_mut().push(format!("{time} {} {}", key.1, hit.value));
    ///                 }
    ///             })
    ///             .inner
    ///             .probe();
    ///         stalled
    ///             .inspect(move |((_, entity), time, diff)| {
    ///                 stalled_out.borrow_mut().push(format!("{time} {entity} {diff}"));
    ///             })
    ///             .inner
    ///             .probe_with(&probe);
    ///         (partitions, rules, probe)
    ///     });
    ///     rules.insert(AbsenceRule {
    ///         alarm: ThresholdRule {
    ///             id: "ch4-silent".into(),
    ///             domain: Domain::Mine,
    ///             metric: Metric::Ch4,
    ///             scope: vec![],
    ///             direction: Direction::Above,
    ///             threshold: OrderedFloat(1.0),
    ///             clear: OrderedFloat(1.0),
    ///             hold_ms: 0,
    ///             severity: Severity::Critical,
    ///             summary: "silent".into(),
    ///             labels: vec![],
    ///         },
    ///         cadences: 3,
    ///         stall_after_ms: Some(5_000),
    ///     });
    ///     let p2 = PartitionId { domain: Domain::Mine, topic: "mine.readings".into(), partition: 2 };
    ///     partitions.update_at(PartitionRow::Placement((Domain::Mine, "s1".into()), p2.clone()), 1_000, 1);
    ///     partitions.update_at(PartitionRow::Heard(p2.clone()), 1_000, 1);
    ///     partitions.update_at(PartitionRow::Heard(p2), 9_000, 1);
    ///     partitions.advance_to(12_000);
    ///     rules.advance_to(12_000);
    ///     partitions.flush();
    ///     rules.flush();
    ///     while probe.less_than(&12_000) {
    ///         worker.step();
    ///     }
    ///     // Heard from at 1 s (not stalled), silent since: stalled at 6 s (s1 with it), heard
    ///     // from again at 9 s (and stalled again at 14 s, past what this example runs).
    ///     seen.borrow_mut().sort();
    ///     assert_eq!(
    ///         *seen.borrow(),
    ///         vec![
    ///             "1000 mine.readings/2 0",
    ///             "6000 mine.readings/2 1",
    ///             "6000 s1 1",
    ///             "9000 mine.readings/2 0",
    ///             "9000 s1 -1",
    ///         ]
    ///     );
    /// });
    /// ```
    fn partition_stalls(self, rules: VecCollection<'s, Time, AbsenceRule, Diff>) -> Stalls<'s>;
}

impl<'s> PartitionStalls<'s> for VecCollection<'s, Time, PartitionRow, Diff> {
    fn partition_stalls(self, rules: VecCollection<'s, Time, AbsenceRule, Diff>) -> Stalls<'s> {
        let heard = self.clone().flat_map(|row| match row {
            PartitionRow::Heard(partition) => Some(partition),
            PartitionRow::Placement(..) => None,
        });
        let placements = self.flat_map(|row| match row {
            PartitionRow::Placement(entity, partition) => Some((partition, entity)),
            PartitionRow::Heard(_) => None,
        });
        let exchange = Exchange::new(|update: &(PartitionId, Time, Diff)| update.0.hashed());
        let out = heard
            .inner
            .binary_frontier(
                rules.inner.broadcast(),
                exchange,
                timely::dataflow::channels::pact::Pipeline,
                "PartitionStalls",
                |_capability, _info| {
                    let mut agenda: Agenda<Update, Key> = Agenda::new();
                    let mut stalls = StallStates::default();
                    let mut scheduled = Vec::new();
                    move |(heard, heard_frontier), (rules, rules_frontier), output| {
                        heard.for_each(|capability, data| {
                            let mut data: Vec<_> = data
                                .drain(..)
                                .map(|(partition, time, diff)| {
                                    (Update::Heard(partition), time, diff)
                                })
                                .collect();
                            agenda.append(&capability, &mut data);
                        });
                        rules.for_each(|capability, data| {
                            let mut data: Vec<_> = data
                                .drain(..)
                                .map(|(rule, time, diff)| (Update::Rule(rule), time, diff))
                                .collect();
                            agenda.append(&capability, &mut data);
                        });
                        if heard_frontier.is_empty() && rules_frontier.is_empty() {
                            // At the end of the input nothing comes due: timers are dropped.
                            agenda.close();
                        }
                        let step = |agenda: &mut Agenda<Update, Key>,
                                    time: Time,
                                    updates: &mut Vec<(Update, Diff)>,
                                    due: &mut Vec<Key>,
                                    out: &mut Vec<_>| {
                            let mut emitted = Vec::new();
                            updates.sort();
                            let mut rule_changes = Vec::new();
                            let mut partitions = Vec::new();
                            for (update, diff) in updates.drain(..) {
                                match update {
                                    Update::Rule(rule) => rule_changes.push((rule, diff)),
                                    Update::Heard(partition) if diff > 0 => {
                                        partitions.push(partition);
                                    }
                                    Update::Heard(_) => {}
                                }
                            }
                            partitions.dedup();
                            scheduled.extend(stalls.rules_changed(
                                time,
                                rule_changes,
                                &mut emitted,
                            ));
                            for partition in &partitions {
                                scheduled.extend(stalls.heard(time, partition, &mut emitted));
                            }
                            for key in due.drain(..) {
                                scheduled.extend(stalls.due(&key, time, &mut emitted));
                            }
                            for (key, deadline) in scheduled.drain(..) {
                                agenda.schedule(key, deadline);
                            }
                            let next = time.saturating_add(1);
                            for (row, diff, instant) in emitted {
                                if instant {
                                    out.push((row.clone(), next, -diff));
                                }
                                out.push((row, time, diff));
                            }
                        };
                        let complete = |t: &Time| {
                            !heard_frontier.less_equal(t) && !rules_frontier.less_equal(t)
                        };
                        agenda.run_ready(complete, step, |capability, out| {
                            output.session(capability).give_container(out);
                        });
                    }
                },
            )
            .as_collection();
        let hits = out.clone().flat_map(|row| match row {
            Out::Hit(hit) => Some(hit),
            Out::Stalled(..) => None,
        });
        let stalled = out
            .flat_map(|row| match row {
                Out::Stalled(rule, partition) => Some((partition, rule)),
                Out::Hit(_) => None,
            })
            .join_map(placements, |_, rule, (_, entity)| {
                (rule.clone(), entity.to_string())
            });
        (hits, stalled)
    }
}
