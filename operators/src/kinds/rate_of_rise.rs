//! The `rate_of_rise` rule kind: how fast a metric changes, per minute, at each reading.
//!
//! At a reading `(t, v)` of an entity, the first reading of the same entity in the trailing
//! window `[t - W, t)` is `(t0, v0)` (the earliest; among several at `t0` the smallest
//! value). If `t - t0` is at least the rule's minimum span (and positive), the derived value
//! is `(v - v0) / ((t - t0) / 1 min)`, in the metric's unit per minute (e.g. CH4 rising by
//! 0.3 %/min), compared with the alarm side like a reading of a threshold rule. A reading
//! without such a predecessor is not evaluated.
//!
//! Built as one frontier-driven operator that keeps each entity's readings of the last `W` in
//! time order and evaluates each reading against the first of them (see `hits_of_matches`).
//! State holds the readings of the last `W` per live entity.

use std::collections::VecDeque;
use std::sync::Arc;

use differential_dataflow::{AsCollection, VecCollection};
use ordered_float::OrderedFloat;
use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::vec::Map;

use crate::agenda::{Agenda, KeyTimer};
use crate::enrich::Event;
use crate::entity_route;
use crate::hit::{HitRow, RuleHit};
use crate::kinds::{HistoryKey, Sources};
use crate::matching::{Events, Match, MatchedRule, Matches, match_rules};
use crate::rule::{RuleRow, ThresholdRule};
use crate::woken_while_holding::WokenWhileHolding;
use crate::{Diff, Time};

/// Milliseconds per minute, the rate's time unit.
const MINUTE_MS: f64 = 60_000.0;

/// A rate-of-rise rule as a collection row.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct RateOfRiseRule {
    /// Id, domain, metric, scope, and the levels the rate (unit per minute) is compared with.
    pub alarm: ThresholdRule,
    /// How far back the first reading may be, milliseconds.
    pub window_ms: u64,
    /// How far back the first reading must at least be, milliseconds (a rate over a few
    /// seconds is mostly noise).
    pub min_span_ms: u64,
}

impl RateOfRiseRule {
    /// The rate from `(t0, v0)` to `(t, v)`, per minute; `None` when the span is shorter than
    /// the minimum span or not positive.
    pub fn rate(&self, (t0, v0): (Time, f64), (t, v): (Time, f64)) -> Option<f64> {
        let span = t
            .checked_sub(t0)
            .filter(|span| *span > 0 && *span >= self.min_span_ms)?;
        Some((v - v0) / (span as f64 / MINUTE_MS))
    }

    /// The key of `entity`'s history under this rule.
    pub fn history_key(&self, entity: &str) -> HistoryKey {
        HistoryKey {
            rule: self.alarm.id.clone(),
            domain: self.alarm.domain,
            metric: self.alarm.metric,
            window_ms: self.window_ms,
            entity: entity.to_string(),
        }
    }
}

/// Computes rates of change.
pub trait RatesOfRise<'s> {
    /// One hit per reading in scope that has a first reading in its window, at the reading's
    /// time, valued with the rate per minute.
    ///
    /// ```
    /// use citybrain_model::{Domain, Metric, Severity};
    /// use citybrain_operators::kinds::rate_of_rise::{RateOfRiseRule, RatesOfRise};
    /// use citybrain_operators::matching::events;
    /// use citybrain_operators::ordered_float::OrderedFloat;
    /// use citybrain_operators::rule::{Direction, ThresholdRule};
    /// use differential_dataflow::input::Input;
    ///
    /// timely::example(|scope| {
    ///     let (mut readings, reading_rows) = scope.new_collection();
    ///     let (_registry, registry_rows) = scope.new_collection();
    ///     let (mut rules, rule_rows) = scope.new_collection();
    ///     events(reading_rows, registry_rows)
    ///         .rate_of_rise_hits(rule_rows)
    ///         .inspect(|((_, hit), time, diff)| {
    ///             if *diff > 0 {
    ///                 // 0.4 % at 0 s, 0.7 % at 60 s: 0.3 %/min.
    ///                 assert_eq!(*time, 60_000);
    ///                 assert!((hit.value.0 - 0.3).abs() < 1e-9);
    ///             }
    ///         });
    ///     rules.insert(RateOfRiseRule {
    ///         alarm: ThresholdRule {
    ///             id: "ch4-rising".into(),
    ///             domain: Domain::Mine,
    ///             metric: Metric::Ch4,
    ///             scope: vec![],
    ///             direction: Direction::Above,
    ///             threshold: OrderedFloat(0.3),
    ///             clear: OrderedFloat(0.1),
    ///             hold_ms: 0,
    ///             severity: Severity::Warning,
    ///             summary: "methane rising".into(),
    ///             labels: vec![],
    ///         },
    ///         window_ms: 120_000,
    ///         min_span_ms: 30_000,
    ///     });
    ///     let s1 = (Domain::Mine, "s1".to_string());
    ///     readings.update_at((s1.clone(), (Metric::Ch4, OrderedFloat(0.4))), 0, 1);
    ///     readings.update_at((s1, (Metric::Ch4, OrderedFloat(0.7))), 60_000, 1);
    /// });
    /// ```
    fn rate_of_rise_hits(
        self,
        rules: VecCollection<'s, Time, RateOfRiseRule, Diff>,
    ) -> VecCollection<'s, Time, HitRow, Diff>;
}

impl<'s> RatesOfRise<'s> for Events<'s> {
    fn rate_of_rise_hits(
        self,
        rules: VecCollection<'s, Time, RateOfRiseRule, Diff>,
    ) -> VecCollection<'s, Time, HitRow, Diff> {
        hits_of_matches(match_rules(&self, &rules.map(RuleRow::RateOfRise)))
    }
}

/// One history: its readings `(time, value)` in (time, value) order, and the earliest timer
/// set to forget the expired ones.
#[derive(Default)]
struct History {
    readings: VecDeque<(Time, OrderedFloat<f64>)>,
    timer: KeyTimer,
}

impl History {
    /// Forgets the readings before `time - window_ms`: what is left is `[time - W, ...)`.
    fn expire(&mut self, time: Time, window_ms: u64) {
        while let Some((at, _)) = self.readings.front()
            && at.saturating_add(window_ms) < time
        {
            self.readings.pop_front();
        }
    }

    /// Adds a reading at `time`, at or after every one held, after those of its time with a
    /// smaller value.
    fn add(&mut self, time: Time, value: OrderedFloat<f64>) {
        let reading = (time, value);
        // Almost always after the newest: no search (a search reached cold readings of the
        // window, 6 % of a worker's time with the shipped mine rules).
        if self.readings.back().is_none_or(|newest| *newest <= reading) {
            self.readings.push_back(reading);
            return;
        }
        let at = self.readings.partition_point(|held| *held <= reading);
        self.readings.insert(at, reading);
    }

    /// Returns when a timer must be set to forget the newest reading (one `window_ms` after
    /// it): none is set at or before that.
    fn timer_for(&mut self, window_ms: u64) -> Option<Time> {
        let (newest, _) = self.readings.back()?;
        self.timer
            .due_at(newest.saturating_add(window_ms).saturating_add(1))
    }
}

/// A match filed under its history: (history, reading, rule).
type Filed = (HistoryKey, Event, Arc<MatchedRule>);

/// The hits of the rules' matches.
///
/// One frontier-driven operator exchanged by entity: the matches of a time are applied once
/// the frontier has passed it, in time order ([`crate::agenda`]), so readings out of order
/// within the allowed lateness give the in-order result. Each history keeps its readings of
/// the last window in time order: a reading is evaluated against the history's front (its
/// first reading) before the readings of its time join it, and the readings older than the
/// window leave from the front. A history no reading reached for a window is forgotten by a
/// timer. (A differential `reduce` over the temporal filter kept the same state but re-read a
/// history's whole window at every reading: 15 µs per reading at 1 Hz and two minutes.)
fn hits_of_matches(matches: Matches<'_>) -> VecCollection<'_, Time, HitRow, Diff> {
    let filed = matches.flat_map(|(Match { rule, event, .. }, time, diff)| {
        let key = rule.row.as_rate_of_rise()?.history_key(&event.entity);
        Some(((key, event, rule), time, diff))
    });
    let exchange = Exchange::new(|update: &(Filed, Time, Diff)| entity_route(&update.0.0.entity));
    filed
        .unary_frontier_while_holding(exchange, "RateOfRise", |_capability| {
            let mut agenda: Agenda<Filed, HistoryKey> = Agenda::new();
            let mut histories: FxHashMap<HistoryKey, History> = FxHashMap::default();
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
                    // Every reading of the time against its history's first, then all of them
                    // into their histories (readings of one time do not see each other).
                    for ((key, event, matched), diff) in updates.iter() {
                        let Some(rule) = matched.row.as_rate_of_rise().filter(|_| *diff > 0) else {
                            continue;
                        };
                        let Some(history) = histories.get_mut(key) else {
                            continue;
                        };
                        history.expire(time, key.window_ms);
                        let Some(&(t0, v0)) = history.readings.front() else {
                            continue;
                        };
                        let Some(rate) = rule.rate((t0, v0.0), (time, event.value.0)) else {
                            continue;
                        };
                        let hit = RuleHit::new(
                            time,
                            rate,
                            Arc::clone(&event.labels),
                            Arc::clone(&matched.alarm),
                        );
                        let row = ((Arc::clone(&matched.id), event.entity.clone()), hit);
                        out.push((row, time, *diff));
                    }
                    for ((key, event, _), diff) in updates.drain(..) {
                        if diff <= 0 {
                            continue;
                        }
                        let window_ms = key.window_ms;
                        let history = match histories.get_mut(&key) {
                            Some(history) => history,
                            None => histories.entry(key.clone()).or_default(),
                        };
                        history.add(time, event.value);
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
                            histories.remove(&key);
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

/// The registry entry: hits of the rate-of-rise rules' matches.
pub(crate) fn hits<'s>(
    sources: &Sources<'s>,
    _rules: VecCollection<'s, Time, RuleRow, Diff>,
) -> VecCollection<'s, Time, HitRow, Diff> {
    hits_of_matches(sources.matches.clone())
}
