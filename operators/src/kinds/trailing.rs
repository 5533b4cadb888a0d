//! What the kinds that look back over a trailing window share (rate of rise, baseline): each
//! reading `(t, v)` of an entity is evaluated against the same entity's distinct readings in
//! `[t - W, t)` (readings of one time do not see each other), kept in one frontier-driven
//! operator on the entity's worker (where its matches are).
//!
//! The matches of a time are applied once the frontier has passed it, in time order
//! ([`crate::agenda`]), so readings out of order within the allowed lateness give the in-order
//! result. Each history keeps its readings of the last window in (time, value) order, an
//! identical reading once, and a [`Summary`] of them kept as they come and go (the baseline's
//! exact sum): a reading is evaluated before the readings of its time join, after those older
//! than the window left from the front. A history no reading reached for a window is forgotten
//! by a timer. State holds the readings of the last `W` per live entity.
//!
//! A differential `reduce` over the temporal filter kept the same state but re-read a
//! history's whole window at every reading: 15 µs per reading at 1 Hz and two minutes, and a
//! day of a collar read every 30 s is 2,880 readings.

use std::collections::VecDeque;
use std::sync::Arc;

use citybrain_model::{Domain, Labels, Metric};
use differential_dataflow::{AsCollection, VecCollection};
use fsum::FSum;
use indexmap::IndexMap;
use ordered_float::OrderedFloat;
use rustc_hash::FxBuildHasher;
use serde::{Deserialize, Serialize};
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::vec::Map;

use crate::agenda::{Agenda, KeyTimer};
use crate::hit::{HitRow, RuleHit};
use crate::matching::{Match, MatchedRule, Matches};
use crate::rule::RuleRow;
use crate::woken_while_holding::WokenWhileHolding;
use crate::{Diff, EntityId, Time};

/// What a history keeps of its readings besides the readings, updated as each joins and
/// leaves.
pub(crate) trait Summary: Default + 'static {
    /// A reading of `value` joined.
    fn add(&mut self, value: f64);
    /// A reading of `value` left.
    fn remove(&mut self, value: f64);
}

/// Nothing besides the readings (rate of rise reads the first).
impl Summary for () {
    fn add(&mut self, _: f64) {}
    fn remove(&mut self, _: f64) {}
}

/// The exact sum of the readings' values (`fsum`: one rounding, when read), so a mean does not
/// depend on the order readings came and left in.
#[derive(Default)]
pub(crate) struct ExactSum(FSum);

impl ExactSum {
    /// The sum, rounded once.
    pub(crate) fn value(&self) -> f64 {
        self.0.value()
    }
}

impl Summary for ExactSum {
    fn add(&mut self, value: f64) {
        self.0 += value;
    }
    fn remove(&mut self, value: f64) {
        self.0 -= value;
    }
}

/// One history: its distinct readings `(time, value)` in order, their summary, and the
/// earliest timer set to forget the expired ones.
#[derive(Default)]
pub(crate) struct History<S> {
    readings: VecDeque<(Time, OrderedFloat<f64>)>,
    summary: S,
    timer: KeyTimer,
}

impl<S: Summary> History<S> {
    /// The first reading (the earliest; among several at its time the smallest value).
    pub(crate) fn first(&self) -> Option<(Time, f64)> {
        self.readings.front().map(|(time, value)| (*time, value.0))
    }

    /// How many distinct readings it holds.
    pub(crate) fn len(&self) -> usize {
        self.readings.len()
    }

    /// The summary of the readings held.
    pub(crate) fn summary(&self) -> &S {
        &self.summary
    }

    /// Forgets the readings before `time - window_ms`: what is left is `[time - W, ...)`.
    fn expire(&mut self, time: Time, window_ms: u64) {
        while let Some((at, value)) = self.readings.front()
            && at.saturating_add(window_ms) < time
        {
            self.summary.remove(value.0);
            self.readings.pop_front();
        }
    }

    /// Adds a reading at `time`, at or after every one held, unless it holds it already.
    fn add(&mut self, time: Time, value: OrderedFloat<f64>) {
        let reading = (time, value);
        // Almost always after the newest: no search (a search reached cold readings of the
        // window, 6 % of a worker's time with the shipped mine rules).
        match self.readings.back() {
            Some(newest) if *newest == reading => return,
            Some(newest) if *newest > reading => match self.readings.binary_search(&reading) {
                Ok(_) => return,
                Err(at) => self.readings.insert(at, reading),
            },
            _ => self.readings.push_back(reading),
        }
        self.summary.add(value.0);
    }

    /// Returns when a timer must be set to forget the newest reading (one `window_ms` after
    /// it): none is set at or before that.
    fn timer_for(&mut self, window_ms: u64) -> Option<Time> {
        let (newest, _) = self.readings.back()?;
        self.timer
            .due_at(newest.saturating_add(window_ms).saturating_add(1))
    }
}

/// The history of one entity's readings under one rule. Everything that decides *which*
/// readings are kept is part of the key, so editing a rule's alarm side (levels, hold,
/// severity, ...) keeps its history, while editing what it watches starts a new one.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub(crate) struct HistoryKey {
    /// Rule id, shared by the rule's matches.
    rule: Arc<str>,
    /// Domain of the entity.
    domain: Domain,
    /// Metric of the readings.
    metric: Metric,
    /// How far back the history reaches, milliseconds.
    window_ms: u64,
    /// Sensor or device id.
    entity: EntityId,
}

impl HistoryKey {
    /// `entity`'s history under `matched`, reaching `window_ms` back: the match's rule id and
    /// entity are taken, not copied.
    fn new(matched: &MatchedRule, window_ms: u64, entity: EntityId) -> Self {
        HistoryKey {
            rule: Arc::clone(&matched.id),
            domain: matched.alarm.domain,
            metric: matched.alarm.metric,
            window_ms,
            entity,
        }
    }
}

/// A match filed under its history: (history, the reading's value, the entity's labels, rule).
type Filed = (HistoryKey, OrderedFloat<f64>, Arc<Labels>, Arc<MatchedRule>);

/// A reading's derived value from its rule and its history, given its (time, value); `None`:
/// no hit.
pub(crate) type Evaluate<S> = fn(&RuleRow, &History<S>, (Time, f64)) -> Option<f64>;

/// The hits of a trailing kind's matches: `window_of` gives how far back a rule's histories
/// reach (`None`: not the kind's rule), `evaluate` a reading's derived value from the rule and
/// its history (`None`: no hit), in an operator called `name`.
pub(crate) fn trailing_hits<'s, S: Summary>(
    matches: Matches<'s>,
    name: &str,
    window_of: fn(&RuleRow) -> Option<u64>,
    evaluate: Evaluate<S>,
) -> VecCollection<'s, Time, HitRow, Diff> {
    let filed = matches.flat_map(move |(Match { rule, event, .. }, time, diff)| {
        let key = HistoryKey::new(&rule, window_of(&rule.row)?, event.entity);
        Some(((key, event.value, event.labels, rule), time, diff))
    });
    // Matches are on their entity's worker, and so is each history (keyed by the match's
    // entity): read where they are, not exchanged.
    filed
        .unary_frontier_while_holding(Pipeline, name, |_capability| {
            let mut agenda: Agenda<Filed, HistoryKey> = Agenda::new();
            let mut histories: IndexMap<HistoryKey, History<S>, FxBuildHasher> =
                IndexMap::default();
            // Where each update's history was found in the evaluation pass, for the add pass.
            let mut slots: Vec<Option<usize>> = Vec::new();
            move |(input, frontier), output| {
                input.for_each(|capability, data| agenda.append(&capability, data));
                if frontier.is_empty() {
                    // Nothing comes after the end of the input: nothing to forget.
                    agenda.close();
                }
                let step = |agenda: &mut Agenda<Filed, HistoryKey>,
                            time: Time,
                            updates: &mut Vec<(Filed, Diff)>,
                            due: &mut Vec<HistoryKey>,
                            out: &mut Vec<_>| {
                    // Every reading of the time against its history, then all of them into
                    // their histories (readings of one time do not see each other). A history
                    // is looked up once: the evaluation notes where it is for the add.
                    slots.clear();
                    for ((key, value, labels, matched), diff) in updates.iter() {
                        let slot = (*diff > 0).then(|| histories.get_index_of(key)).flatten();
                        slots.push(slot);
                        let Some((_, history)) =
                            slot.and_then(|slot| histories.get_index_mut(slot))
                        else {
                            continue;
                        };
                        history.expire(time, key.window_ms);
                        let Some(derived) = evaluate(&matched.row, history, (time, value.0)) else {
                            continue;
                        };
                        let rule = Arc::clone(&matched.alarm);
                        let hit = RuleHit::new(time, derived, Arc::clone(labels), rule);
                        let row = ((Arc::clone(&matched.id), key.entity.clone()), hit);
                        out.push((row, time, *diff));
                    }
                    for (((key, value, ..), diff), slot) in updates.drain(..).zip(&slots) {
                        if diff <= 0 {
                            continue;
                        }
                        let window_ms = key.window_ms;
                        let history = match slot.and_then(|s| histories.get_index_mut(s)) {
                            Some((_, history)) => history,
                            None => histories.entry(key.clone()).or_default(),
                        };
                        history.add(time, value);
                        if let Some(at) = history.timer_for(window_ms) {
                            agenda.schedule(key, at);
                        }
                    }
                    for key in due.drain(..) {
                        let Some(history) = histories.get_mut(&key) else {
                            continue;
                        };
                        history.timer.came_due(time);
                        history.expire(time, key.window_ms);
                        if history.readings.is_empty() {
                            histories.swap_remove(&key);
                        } else if let Some(at) = history.timer_for(key.window_ms) {
                            agenda.schedule(key, at);
                        }
                    }
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
