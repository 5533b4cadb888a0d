//! The `absence` rule kind: a sensor or device silent for longer than a number of its expected
//! cadences (`EntityInfo::cadence_ms` from the registry) raises `sensor silent`; its next
//! reading resolves it.
//!
//! Semantics, in event time, per (rule, watched entity):
//! - *watched*: a registry row of the rule's domain with `cadence_ms > 0`, a `kind` label equal
//!   to the rule's metric and labels in the rule's scope, while the rule exists;
//! - after a reading at `t`, the silence limit is `cadences × cadence_ms + for`; when no
//!   further reading of the rule's metric arrives in `(t, t + limit]`, the rule fires at event
//!   time `t + limit`. A reading exactly at the deadline is in time;
//! - the next reading resolves it at the reading's event time;
//! - an entity that was never heard from is not timed: registry rows enter the dataflow at the
//!   ingest watermark (the initial load at time 0), which is not a time the sensor was expected
//!   to report at;
//! - when the entity stops being watched (registry row deleted, labels changed out of scope,
//!   rule deleted), a firing alert resolves at that time and the entity is forgotten; when
//!   the watch changes (rule or cadence edited), the deadline is recomputed from the last
//!   reading with the new limit (at the earliest, the time of the change);
//! - timers fire only while the input is open: when the input ends (shutdown, the end of a
//!   replay), pending timers are dropped rather than reported as silences;
//! - with a `stall_after` ([`AbsenceRule::stall_after_ms`]), the rule also times the Kafka
//!   partitions of its domain ([`crate::stall`]): while the partition an entity's readings
//!   come from is stalled, its deadline raises nothing (the partition's one `ingest stalled`
//!   alert stands for it); when the stall ends and the entity is still silent, its deadline
//!   restarts from the end of the stall. An alert already firing when the stall starts stays.
//!
//! The derived value handed to the `for`/hysteresis state machine is `1` (silent) at a timer
//! and `0` at the resolving reading, against a fixed alarm side (at or above 1, clear below 1,
//! no hold: `for` is part of the limit); the reported value is the silence in seconds (the
//! limit when firing, the whole gap when resolving). So transitions get their ids, labels and
//! summaries the same way as every other kind, plus the label `rule_kind = "absence"` (alerts
//! already carry the entity's `kind` label, the sensor kind).
//!
//! Built as one frontier-driven timely operator keyed by entity (watches are exchanged to it;
//! readings are read where they are matched, on their entity's worker): watches (registry
//! joined with rules) and readings wait in an agenda (`agenda.rs`) and are applied once the
//! input frontier has passed their time, in time order, so out-of-order readings within the
//! allowed lateness give the in-order result; deadlines are the agenda's timers. State: one
//! record per watched (rule, entity), and the pending timers (a record sets one only when its
//! deadline moves before the one it has set; a timer that finds the deadline moved on sets the
//! next).

use std::sync::Arc;

use citybrain_model::Labels;
use differential_dataflow::consolidation::consolidate;
use differential_dataflow::{AsCollection, VecCollection};
use ordered_float::OrderedFloat;
use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::core::{Concat, Exchange};
use timely::dataflow::operators::vec::Map;

use crate::agenda::{Agenda, KeyTimer};
use crate::entity_route;
use crate::hit::{AlertKey, HitRow, RuleHit};
use crate::instant::push_instants;
use crate::kinds::{KindHits, Sources};
use crate::matching::{Events, Match, Matches, match_rules};
use crate::rule::{Direction, RuleRow, ThresholdRule};
use crate::stall::PartitionStalls;
use crate::woken_while_holding::WokenWhileHolding;
use crate::{Diff, EntityId, RegistryRow, Time};

/// The label every alert of this kind carries, with the value `absence`.
pub const RULE_KIND_LABEL: &str = "rule_kind";

/// An absence rule as a collection row.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct AbsenceRule {
    /// Id, domain, metric (the sensor kind whose readings count), scope, `for` (added to the
    /// limit), severity, summary and labels; the levels are not used.
    pub alarm: ThresholdRule,
    /// How many expected cadences without a reading make an entity silent (at least 1).
    pub cadences: u32,
    /// When set, a Kafka partition of the rule's domain that delivers nothing for this long
    /// (event time, milliseconds) raises one `ingest stalled` alert, and the entities it
    /// carries raise no `sensor silent` while it is stalled ([`crate::stall`]). `None`: no
    /// stall tracking.
    pub stall_after_ms: Option<u64>,
}

impl AbsenceRule {
    /// The silence limit of an entity with `cadence_ms`: `cadences × cadence_ms + for`.
    pub fn limit_ms(&self, cadence_ms: u64) -> u64 {
        cadence_ms
            .saturating_mul(u64::from(self.cadences))
            .saturating_add(self.alarm.hold_ms)
    }

    /// True when an entity with `labels` and `cadence_ms` is watched by this rule: it has a
    /// cadence, is of the rule's sensor kind and in its scope.
    pub fn watches(&self, labels: &Labels, cadence_ms: u64) -> bool {
        cadence_ms > 0
            && labels
                .iter()
                .any(|(k, v)| k == "kind" && v == self.alarm.metric.as_str())
            && self.alarm.selects(labels)
    }

    /// The alarm side the hits are compared with: silent (1) fires at once, data (0) clears.
    pub fn hit_alarm(&self) -> ThresholdRule {
        ThresholdRule {
            direction: Direction::Above,
            threshold: OrderedFloat(1.0),
            clear: OrderedFloat(1.0),
            hold_ms: 0,
            ..self.alarm.clone()
        }
    }
}

/// A watched (rule, entity): the rule, the entity's cadence and labels.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Watch {
    /// The rule.
    pub rule: AbsenceRule,
    /// The entity's expected interval between readings, milliseconds.
    pub cadence_ms: u64,
    /// The entity's labels.
    pub labels: Labels,
}

impl Watch {
    /// The silence limit, milliseconds.
    fn limit_ms(&self) -> u64 {
        self.rule.limit_ms(self.cadence_ms)
    }
}

/// What the operator receives per (rule id, entity).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
enum Input {
    /// The entity is watched (`+1`) or no longer (`-1`).
    Watch(Watch),
    /// A reading at this event time (an instant: `+1` at it, `-1` a millisecond later).
    Reading(Time),
    /// The partition the entity's readings come from is stalled (`+1` at the start of the
    /// stall, `-1` at its end).
    Stalled,
}

/// (rule id, entity): the alert's key. The rule id is shared by the rule's matches: a
/// reading's key costs no copy of it.
type Key = AlertKey;

/// Where a watched (rule, entity) stands.
#[derive(Default)]
struct State {
    /// The watch, if any (a record without one lives only while an update is applied). Out
    /// of line: a watch holds its rule and the entity's labels, and a reading reads none of
    /// it (its silence limit is kept below), so the records a reading touches stay small
    /// enough to share cache lines with the map's keys (10k watched sensors).
    watch: Option<Box<Watch>>,
    /// The watch's silence limit, milliseconds (0 without a watch).
    limit_ms: u64,
    /// Event time of the last reading.
    last: Option<Time>,
    /// True while the alert fires.
    firing: bool,
    /// The live deadline, when not firing and heard from.
    deadline: Option<Time>,
    /// The earliest timer set for this record and not yet due: a sensor reading every second
    /// moves its deadline at every reading, but sets a timer only about once per silence
    /// limit.
    timer: KeyTimer,
    /// True while the partition the entity's readings come from is stalled.
    stalled: bool,
}

/// The hit of `watch` for `key` at `time`: silent (fires) or not (clears), reporting the
/// silence since `last` in seconds.
fn hit(watch: &Watch, key: &Key, time: Time, silent: bool, last: Time) -> HitRow {
    let mut labels = watch.labels.clone();
    labels.retain(|(k, _)| k != RULE_KIND_LABEL);
    labels.push((RULE_KIND_LABEL.to_string(), "absence".to_string()));
    labels.sort();
    let seconds = time.saturating_sub(last) as f64 / 1000.0;
    let alarm = watch.rule.hit_alarm();
    (
        key.clone(),
        RuleHit {
            time,
            value: OrderedFloat(if silent { 1.0 } else { 0.0 }),
            reported: OrderedFloat(seconds),
            labels: Arc::new(labels),
            rule: Arc::new(alarm),
        },
    )
}

/// Applies the updates of one key at `time` (a stall starting or ending, watch changes, then
/// a reading); returns a timer to set, if any.
fn apply(
    states: &mut FxHashMap<Key, State>,
    key: &Key,
    time: Time,
    changes: Vec<(Watch, Diff)>,
    reading: bool,
    stall: Option<bool>,
    hits: &mut Vec<HitRow>,
) -> Option<Time> {
    if changes.is_empty() && stall.is_none() {
        // Most updates: a reading alone. An entity without a record is not watched.
        let state = states.get_mut(key).filter(|_| reading)?;
        let deadline = heard(state, key, time, hits)?;
        return state.set_deadline(deadline);
    }
    let state = states.entry(key.clone()).or_default();
    let before = state.watch.clone();
    let stall_ended = state.stalled && stall == Some(false);
    if let Some(stalled) = stall {
        state.stalled = stalled;
    }
    for (watch, diff) in &changes {
        if *diff < 0 && state.watch.as_deref() == Some(watch) {
            state.set_watch(None);
        }
    }
    if let Some((watch, _)) = changes.into_iter().rev().find(|(_, diff)| *diff > 0) {
        state.set_watch(Some(watch));
    }
    let Some(watch) = &state.watch else {
        // Not (or no longer) watched: resolve a firing alert and forget the entity.
        if state.firing
            && let (Some(old), Some(last)) = (&before, state.last)
        {
            hits.push(hit(old, key, time, false, last));
        }
        states.remove(key);
        return None;
    };
    let deadline = if reading {
        heard(state, key, time, hits)
    } else if stall_ended && !state.firing && state.last.is_some() {
        // Still silent when the stall ends: the silence counts from here.
        Some(time.saturating_add(watch.limit_ms()))
    } else if before.as_deref() != Some(&**watch)
        && !state.firing
        && let Some(last) = state.last
    {
        Some(last.saturating_add(watch.limit_ms()).max(time))
    } else {
        None
    };
    state.set_deadline(deadline?)
}

/// A reading of a watched entity at `time`: resolves a firing alert; returns the new deadline
/// (`None` when not watched).
fn heard(state: &mut State, key: &Key, time: Time, hits: &mut Vec<HitRow>) -> Option<Time> {
    state.watch.as_ref()?;
    if state.firing
        && let (Some(watch), Some(last)) = (&state.watch, state.last)
    {
        hits.push(hit(watch, key, time, false, last));
    }
    state.firing = false;
    state.last = Some(time);
    Some(time.saturating_add(state.limit_ms))
}

impl State {
    /// Watches by `watch` (or no longer, for `None`).
    fn set_watch(&mut self, watch: Option<Watch>) {
        self.limit_ms = watch.as_ref().map_or(0, Watch::limit_ms);
        self.watch = watch.map(Box::new);
    }

    /// Makes `deadline` the live one; returns it when a timer must be set for it (none is set
    /// at or before it).
    fn set_deadline(&mut self, deadline: Time) -> Option<Time> {
        self.deadline = Some(deadline);
        self.timer.due_at(deadline)
    }
}

/// A timer of `key` came due at `time`: fires when the live deadline is due; returns a timer
/// to set for a later live deadline.
fn on_timer(
    states: &mut FxHashMap<Key, State>,
    key: &Key,
    time: Time,
    hits: &mut Vec<HitRow>,
) -> Option<Time> {
    let state = states.get_mut(key)?;
    state.timer.came_due(time);
    let (Some(watch), Some(last)) = (&state.watch, state.last) else {
        return None;
    };
    if state.firing {
        return None;
    }
    match state.deadline {
        Some(deadline) if deadline > time => {
            // Moved on by readings since this timer was set.
            let deadline = state.set_deadline(deadline);
            return deadline;
        }
        Some(deadline) if deadline == time => {}
        _ => return None,
    }
    if state.stalled {
        // Its partition's `ingest stalled` alert stands for it; the end of the stall restarts
        // the deadline.
        state.deadline = None;
        return None;
    }
    hits.push(hit(watch, key, time, true, last));
    state.firing = true;
    state.deadline = None;
    None
}

/// Times silences.
pub trait AbsenceHits<'s> {
    /// One hit (value 1) per (rule, entity) at the event time its silence exceeds the limit,
    /// and one (value 0) at the reading that ends it; each reports the silence in seconds.
    ///
    /// ```
    /// use citybrain_operators::EntityId;
    /// use citybrain_model::{Domain, EntityInfo, Metric, Severity};
    /// use citybrain_operators::kinds::absence::{AbsenceHits, AbsenceRule};
    /// use citybrain_operators::matching::events;
    /// use citybrain_operators::ordered_float::OrderedFloat;
    /// use citybrain_operators::rule::{Direction, ThresholdRule};
    /// use differential_dataflow::input::Input;
    /// use std::{cell::RefCell, rc::Rc};
    /// use timely::dataflow::operators::Probe;
    ///
    /// timely::execute_directly(|worker| {
    ///     let seen = Rc::new(RefCell::new(Vec::new()));
    ///     let sink = Rc::clone(&seen);
    ///     let (mut readings, mut registry, mut rules, probe) = worker.dataflow::<u64, _, _>(|scope| {
    ///         let (readings, reading_rows) = scope.new_collection();
    ///         let (registry, registry_rows) = scope.new_collection();
    ///         let (rules, rule_rows) = scope.new_collection();
    ///         let (probe, _) = events(reading_rows, registry_rows.clone())
    ///             .absence_hits(registry_rows, rule_rows)
    ///             .inspect(move |((_, hit), time, diff)| {
    ///                 if *diff > 0 {
    ///                     sink.borrow_mut().push((*time, hit.value.0, hit.reported.0));
    ///                 }
    ///             })
    ///             .inner
    ///             .probe();
    ///         (readings, registry, rules, probe)
    ///     });
    ///     let s1 = (Domain::Mine, EntityId::from("s1"));
    ///     let info = EntityInfo::new([("kind", Some("ch4".to_string()))], 1_000);
    ///     registry.insert((s1.clone(), info));
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
    ///         stall_after_ms: None,
    ///     });
    ///     readings.update_at((s1.clone(), (Metric::Ch4, OrderedFloat(0.3))), 1_000, 1);
    ///     readings.update_at((s1, (Metric::Ch4, OrderedFloat(0.3))), 10_000, 1);
    ///     readings.advance_to(20_000);
    ///     registry.advance_to(20_000);
    ///     rules.advance_to(20_000);
    ///     readings.flush();
    ///     registry.flush();
    ///     rules.flush();
    ///     while probe.less_than(&20_000) {
    ///         worker.step();
    ///     }
    ///     // Silent at 4 s (3 cadences after 1 s), back at 10 s, silent again at 13 s.
    ///     assert_eq!(
    ///         *seen.borrow(),
    ///         vec![(4_000, 1.0, 3.0), (10_000, 0.0, 9.0), (13_000, 1.0, 3.0)]
    ///     );
    /// });
    /// ```
    fn absence_hits(
        self,
        registry: VecCollection<'s, Time, RegistryRow, Diff>,
        rules: VecCollection<'s, Time, AbsenceRule, Diff>,
    ) -> VecCollection<'s, Time, HitRow, Diff>;

    /// [`AbsenceHits::absence_hits`], except that an entity raises nothing while it is in
    /// `stalled`, a collection of `(rule id, entity)` present while the partition its readings
    /// come from is stalled (see [`crate::stall::PartitionStalls`]); when it leaves `stalled`
    /// still silent, its deadline restarts from then.
    fn absence_hits_unless_stalled(
        self,
        registry: VecCollection<'s, Time, RegistryRow, Diff>,
        rules: VecCollection<'s, Time, AbsenceRule, Diff>,
        stalled: VecCollection<'s, Time, (String, String), Diff>,
    ) -> VecCollection<'s, Time, HitRow, Diff>;
}

impl<'s> AbsenceHits<'s> for Events<'s> {
    fn absence_hits(
        self,
        registry: VecCollection<'s, Time, RegistryRow, Diff>,
        rules: VecCollection<'s, Time, AbsenceRule, Diff>,
    ) -> VecCollection<'s, Time, HitRow, Diff> {
        let never = rules.clone().flat_map(|_| None);
        self.absence_hits_unless_stalled(registry, rules, never)
    }

    fn absence_hits_unless_stalled(
        self,
        registry: VecCollection<'s, Time, RegistryRow, Diff>,
        rules: VecCollection<'s, Time, AbsenceRule, Diff>,
        stalled: VecCollection<'s, Time, (String, String), Diff>,
    ) -> VecCollection<'s, Time, HitRow, Diff> {
        let matches = match_rules(&self, &rules.clone().map(RuleRow::Absence));
        hits_of_matches(matches, registry, rules, stalled)
    }
}

/// The hits of `rules`: silences of the entities `registry` gives a cadence, ended by the
/// rules' `matches`.
fn hits_of_matches<'s>(
    matches: Matches<'s>,
    registry: VecCollection<'s, Time, RegistryRow, Diff>,
    rules: VecCollection<'s, Time, AbsenceRule, Diff>,
    stalled: VecCollection<'s, Time, (String, String), Diff>,
) -> VecCollection<'s, Time, HitRow, Diff> {
    let by_kind = rules.map(|rule| {
        (
            (rule.alarm.domain, rule.alarm.metric.as_str().to_string()),
            rule,
        )
    });
    let watches = registry
        .flat_map(|((domain, entity), info)| {
            let kind = info.label("kind")?.to_string();
            (info.cadence_ms > 0).then_some(((domain, kind), (entity, info)))
        })
        .join_map(by_kind, |_, (entity, info), rule| {
            (
                (Arc::from(rule.alarm.id.as_str()), entity.clone()),
                (rule.clone(), info.clone()),
            )
        })
        .flat_map(|(key, (rule, info))| {
            rule.watches(&info.labels, info.cadence_ms).then(|| {
                let watch = Watch {
                    rule,
                    cadence_ms: info.cadence_ms,
                    labels: info.labels,
                };
                (key, Input::Watch(watch))
            })
        });
    // Occurrences, not instants: the operator reads a reading at its own time only, so a
    // retraction a tick later would be one more update to route and file per reading.
    let readings = matches
        .map(|(Match { rule, event, .. }, time, diff)| {
            let key = (Arc::clone(&rule.id), event.entity);
            ((key, Input::Reading(time)), time, diff)
        })
        .as_collection();
    let stalled =
        stalled.map(|(id, entity)| ((Arc::from(id), EntityId::from(entity)), Input::Stalled));

    // The readings are on their entity's worker already (the matches are made there): only the
    // watches and stalls are exchanged.
    let route = |update: &((Key, Input), Time, Diff)| entity_route(&update.0.0.1);
    watches
        .concat(stalled)
        .inner
        .exchange(route)
        .concat(readings.inner)
        .unary_frontier_while_holding(Pipeline, "Absence", |_capability| {
            let mut agenda: Agenda<(Key, Input), Key> = Agenda::new();
            let mut states: FxHashMap<Key, State> = FxHashMap::default();
            let (mut hits, mut scheduled) = (Vec::new(), Vec::new());
            move |(input, frontier), output| {
                input.for_each(|capability, data| agenda.append(&capability, data));
                if frontier.is_empty() {
                    // At the end of the input nothing is silent: deadlines are dropped.
                    agenda.close();
                }
                let step = |agenda: &mut Agenda<_, _>,
                            time,
                            updates: &mut Vec<_>,
                            keys: &mut Vec<_>,
                            out: &mut Vec<_>| {
                    consolidate(updates);
                    // Sorted by key: apply each key's updates together.
                    let mut rest = updates.as_slice();
                    while let Some(((key, _), _)) = rest.first() {
                        let len = rest
                            .iter()
                            .take_while(|((other, _), _)| other == key)
                            .count();
                        let (group, tail) = rest.split_at(len);
                        rest = tail;
                        let mut changes = Vec::new();
                        let mut reading = false;
                        let mut stall = None;
                        for ((_, item), diff) in group {
                            match item {
                                Input::Watch(watch) => {
                                    changes.push((watch.clone(), *diff));
                                }
                                Input::Stalled => stall = Some(*diff > 0),
                                Input::Reading(at) if *at == time && *diff > 0 => {
                                    reading = true;
                                }
                                Input::Reading(_) => {}
                            }
                        }
                        if let Some(deadline) =
                            apply(&mut states, key, time, changes, reading, stall, &mut hits)
                        {
                            scheduled.push((key.clone(), deadline));
                        }
                    }
                    for key in keys.drain(..) {
                        if let Some(deadline) = on_timer(&mut states, &key, time, &mut hits) {
                            scheduled.push((key, deadline));
                        }
                    }
                    for (key, deadline) in scheduled.drain(..) {
                        agenda.schedule(key, deadline);
                    }
                    push_instants(out, time, hits.drain(..));
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

/// The registry entry: the absence rows of `rules`, with the `ingest stalled` hits of those
/// with a `stall_after`.
pub(crate) fn hits<'s>(
    sources: &Sources<'s>,
    rules: VecCollection<'s, Time, RuleRow, Diff>,
) -> KindHits<'s> {
    let rules = rules.flat_map(|row| row.as_absence().cloned());
    let (stall_hits, stalled) = sources.partitions.clone().partition_stalls(rules.clone());
    let registry = sources.registry.clone();
    KindHits::anywhere(
        hits_of_matches(sources.matches.clone(), registry, rules, stalled).concat(stall_hits),
    )
}
