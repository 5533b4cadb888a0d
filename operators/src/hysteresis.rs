//! The `for`/hysteresis state machine per (rule, entity), in event time.
//!
//! A frontier-driven timely operator on the worker of the alert's entity
//! ([`crate::entity_route`]: every key of an entity on one worker, the one its readings were
//! enriched on): hits made elsewhere are exchanged there, the hits of kinds that make them
//! there already are read where they are ([`crate::kinds::KindHits`]). It buffers rule hits
//! per time and processes each time only once the input frontier has passed it, in time
//! order, so out-of-order input within the allowed lateness gives exactly the in-order
//! result. Its state is one small record per key that is pending or firing; normal keys cost
//! nothing.
//!
//! Every rule kind feeds it: an evaluation ([`RuleHit`]) is a derived value of a (rule, alert
//! entity) at an event time, e.g. a reading, a window's aggregate or a rate of change.
//!
//! Semantics (applied to each evaluation, in event-time order):
//! - normal, value on the alarm side: firing at once when `for` is 0, else pending since it;
//! - pending, value on the alarm side for at least `for` since the first: firing;
//! - pending, value off the alarm side: back to normal (the hold restarts);
//! - firing, value past the clear threshold: resolved; otherwise it stays firing, so values
//!   between the clear and the alarm threshold do not flap.
//!
//! Several evaluations of one key at one time are applied in order of their value; identical
//! ones count once.
//!
//! After a restart the history re-read from Kafka may not reach back to where a firing alert
//! started; [`HoldAndHysteresis::hold_and_hysteresis_seeded`] starts such keys as firing (the
//! state the alert log last recorded) instead of normal, so they still resolve.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};

use citybrain_model::alert::{OUT_OF_SCOPE, RULE_CHANGED, RULE_REMOVED, transition_id};
use citybrain_model::time::format_event_time;
use citybrain_model::{AlertTransition, Labels, TransitionState};
use differential_dataflow::collection::vec;
use differential_dataflow::consolidation::consolidate;
use rustc_hash::{FxHashMap, FxHashSet};
use timely::dataflow::StreamVec;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::Exchange;
use timely::dataflow::operators::vec::{Broadcast, Filter};

use crate::earliest::Earliest;
use crate::entity_route;
use crate::hit::{AlertKey, HitRow, RuleHit};
use crate::pending::{Pending, consolidate_repeated_keys_by_time};
use crate::rule::{RuleRow, ThresholdRule};
use crate::woken_while_holding::WokenWhileHolding;
use crate::{Diff, Time};

/// Where an alert key stands; keys in the normal state are not stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AlertState {
    /// On the alarm side since this event time, not yet for the hold time.
    Pending {
        /// Event time of the first reading on the alarm side.
        since: Time,
    },
    /// Firing.
    Firing,
}

/// Applies one reading to a key's state; returns the new state and the transition, if any.
pub fn step(
    state: Option<AlertState>,
    rule: &ThresholdRule,
    value: f64,
    time: Time,
) -> (Option<AlertState>, Option<TransitionState>) {
    match state {
        Some(AlertState::Firing) if rule.clears(value) => (None, Some(TransitionState::Resolved)),
        Some(AlertState::Firing) => (state, None),
        _ if !rule.triggers(value) => (None, None),
        Some(AlertState::Pending { since }) if time.saturating_sub(since) >= rule.hold_ms => {
            (Some(AlertState::Firing), Some(TransitionState::Firing))
        }
        Some(AlertState::Pending { .. }) => (state, None),
        None if rule.hold_ms == 0 => (Some(AlertState::Firing), Some(TransitionState::Firing)),
        None => (Some(AlertState::Pending { since: time }), None),
    }
}

/// A value for people, in summaries: four significant digits, at least two decimals, no
/// trailing zeros (`1.4`, `1.123` for 1.1228679, `0.0004567`, `1100.3`). The transition's
/// `value` keeps the exact number.
///
/// ```
/// use citybrain_operators::hysteresis::display_value;
///
/// assert_eq!(display_value(1.4), "1.4");
/// assert_eq!(display_value(1.1228679245283024), "1.123");
/// assert_eq!(display_value(0.000456789), "0.0004568");
/// assert_eq!(display_value(1100.3), "1100.3");
/// assert_eq!(display_value(24.0), "24");
/// ```
pub fn display_value(value: f64) -> String {
    if !value.is_finite() || value == 0.0 {
        return format!("{value}");
    }
    let magnitude = value.abs().log10().floor();
    // Within 0 ..= 12, so the conversion is exact.
    let decimals = (3.0 - magnitude).clamp(2.0, 12.0) as usize;
    let text = format!("{value:.decimals$}");
    text.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// Builds the transition record: labels are the entity's, then the rule's, then `rule`,
/// `severity`, `metric` (not for citizen rules) and `domain`; `{label}` and `{value}` in the summary are filled in
/// (the value with [`display_value`]).
pub fn make_transition(
    rule: &ThresholdRule,
    entity: &str,
    entity_labels: &Labels,
    state: TransitionState,
    value: f64,
    time: Time,
) -> AlertTransition {
    let mut pairs: Vec<(String, String)> =
        Vec::with_capacity(entity_labels.len() + rule.labels.len() + 5);
    pairs.extend(entity_labels.iter().cloned());
    pairs.extend(rule.labels.iter().cloned());
    pairs.push(("rule".into(), rule.id.clone()));
    pairs.push(("severity".into(), rule.severity.as_str().into()));
    // Citizen rules watch reports, which carry no metric.
    if rule.domain != citybrain_model::Domain::Citizen {
        pairs.push(("metric".into(), rule.metric.as_str().into()));
    }
    pairs.push(("domain".into(), rule.domain.as_str().into()));
    pairs.push(("entity".into(), entity.into()));
    let labels = label_map(pairs);
    let summary = fill_summary(&rule.summary, &display_value(value), &labels);
    AlertTransition {
        id: transition_id(&rule.id, entity, state, time),
        rule: rule.id.clone(),
        entity: entity.to_string(),
        domain: rule.domain,
        state,
        severity: rule.severity,
        summary,
        value,
        event_time: time,
        event_time_rfc3339: format_event_time(time),
        labels,
        reason: None,
    }
}

/// The map of `pairs` where a later pair overrides an earlier one of the same name, as
/// inserting them in turn would; built at once from the sorted pairs (a transition's ~14
/// labels inserted one by one cost a search and a node shift each).
fn label_map(mut pairs: Vec<(String, String)>) -> std::collections::BTreeMap<String, String> {
    // Stable: of one name, the pairs stay in their order, and the last one is kept.
    pairs.sort_by(|a, b| a.0.cmp(&b.0));
    pairs.dedup_by(|later, kept| {
        let same = later.0 == kept.0;
        if same {
            std::mem::swap(later, kept);
        }
        same
    });
    pairs.into_iter().collect()
}

/// `template` with `{value}` replaced by `value` and each `{name}` of a label by the label's
/// value; any other `{...}` is kept as written. One pass: replacing label by label built a new
/// string per label (nine or more per transition), a share of the state machine's time when
/// many alerts change at once.
fn fill_summary(
    template: &str,
    value: &str,
    labels: &std::collections::BTreeMap<String, String>,
) -> String {
    let mut summary = String::with_capacity(template.len() + value.len());
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        summary.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        let Some(close) = after.find('}') else {
            rest = &rest[open..];
            break;
        };
        let name = &after[..close];
        if name.contains('{') {
            // `{{name}`: the first brace is text, the placeholder starts at the next one.
            summary.push('{');
            rest = after;
            continue;
        }
        match labels.get(name) {
            _ if name == "value" => summary.push_str(value),
            Some(label) => summary.push_str(label),
            None => summary.push_str(&rest[open..open + close + 2]),
        }
        rest = &after[close + 1..];
    }
    summary.push_str(rest);
    summary
}

/// Alert keys `(rule id, entity)` to start as firing rather than normal, shared by the workers;
/// each key is taken out by the worker that owns it at the key's first evaluation.
pub type FiringSeed = Arc<Mutex<FxHashSet<AlertKey>>>;

/// What a firing alert was raised with, to resolve it when its rule is removed.
struct Fired {
    labels: Arc<Labels>,
    value: f64,
}

/// Runs the state machine over rule hits.
pub trait HoldAndHysteresis<'s> {
    /// Emits alert transitions, each at the logical time of the evaluation that caused it.
    ///
    /// `rules` are the rule rows of the kind whose hits these are. When a reload removes a rule
    /// (its id has no row any more), every alert of it that is firing resolves at the time of
    /// the removal with reason [`RULE_REMOVED`], reporting the value it fired with; its
    /// pending alerts are forgotten. A rule whose row is replaced by another with the same id
    /// (an edit) keeps its alerts' states, and its next evaluation uses the new alarm side.
    ///
    /// ```
    /// use citybrain_model::{Domain, Metric, Severity, TransitionState};
    /// use citybrain_operators::hit::RuleHit;
    /// use citybrain_operators::hysteresis::HoldAndHysteresis;
    /// use citybrain_operators::instant::IntoInstants;
    /// use citybrain_operators::ordered_float::OrderedFloat;
    /// use citybrain_operators::rule::{Direction, RuleRow, ThresholdRule};
    /// use differential_dataflow::input::Input;
    /// use timely::dataflow::operators::Inspect;
    ///
    /// timely::example(|scope| {
    ///     let (mut input, hits) = scope.new_collection();
    ///     let (mut rules, rule_rows) = scope.new_collection();
    ///     hits.into_instants()
    ///         .map(|(hit, _)| hit)
    ///         .hold_and_hysteresis(rule_rows)
    ///         .inspect(|t| {
    ///             let expected = if t.event_time == 20 {
    ///                 TransitionState::Firing // held for 10 ms
    ///             } else {
    ///                 TransitionState::Resolved // 0.7 is below the clear level
    ///             };
    ///             assert_eq!((t.rule.as_str(), t.entity.as_str(), t.state), ("r", "s1", expected));
    ///         });
    ///     let rule = ThresholdRule {
    ///         id: "r".into(),
    ///         domain: Domain::Mine,
    ///         metric: Metric::Ch4,
    ///         scope: vec![],
    ///         direction: Direction::Above,
    ///         threshold: OrderedFloat(1.0),
    ///         clear: OrderedFloat(0.8),
    ///         hold_ms: 10,
    ///         severity: Severity::Critical,
    ///         summary: "methane".into(),
    ///         labels: vec![],
    ///     };
    ///     rules.insert(RuleRow::Threshold(rule.clone()));
    ///     for (time, value) in [(10, 1.1), (20, 1.2), (30, 0.9), (40, 0.7)] {
    ///         let hit = RuleHit::new(time, value, vec![], rule.clone());
    ///         input.update_at((("r".into(), "s1".into()), hit), time, 1);
    ///     }
    ///     rules.advance_to(50);
    ///     input.advance_to(50);
    /// });
    /// ```
    fn hold_and_hysteresis(
        self,
        rules: vec::Collection<'s, Time, RuleRow, Diff>,
    ) -> StreamVec<'s, Time, AlertTransition>;

    /// [`HoldAndHysteresis::hold_and_hysteresis`], with the keys in `seed` starting as firing.
    fn hold_and_hysteresis_seeded(
        self,
        rules: vec::Collection<'s, Time, RuleRow, Diff>,
        seed: FiringSeed,
    ) -> StreamVec<'s, Time, AlertTransition>;
}

impl<'s> HoldAndHysteresis<'s> for vec::Collection<'s, Time, HitRow, Diff> {
    fn hold_and_hysteresis(
        self,
        rules: vec::Collection<'s, Time, RuleRow, Diff>,
    ) -> StreamVec<'s, Time, AlertTransition> {
        self.hold_and_hysteresis_seeded(rules, FiringSeed::default())
    }

    fn hold_and_hysteresis_seeded(
        self,
        rules: vec::Collection<'s, Time, RuleRow, Diff>,
        seed: FiringSeed,
    ) -> StreamVec<'s, Time, AlertTransition> {
        hold_and_hysteresis(self, rules, seed, false)
    }
}

/// [`HoldAndHysteresis::hold_and_hysteresis_seeded`] over `hits`, exchanged by alert entity
/// unless `on_entity_worker`: each hit already on the worker of its alert's entity
/// ([`crate::entity_route`], see [`crate::kinds::KindHits`]) is read where it is. Hits
/// elsewhere would split a key's state over workers.
pub(crate) fn hold_and_hysteresis<'s>(
    hits: vec::Collection<'s, Time, HitRow, Diff>,
    rules: vec::Collection<'s, Time, RuleRow, Diff>,
    seed: FiringSeed,
    on_entity_worker: bool,
) -> StreamVec<'s, Time, AlertTransition> {
    // Alert states are spread over the workers by entity: every worker needs every rule
    // change to find the alerts of a removed rule among its keys.
    let rule_changes = rules.inner.broadcast();
    // Hits are instants: at a time `t` the hits present all have `hit.time == t`, so the
    // updates at `t` about earlier hits (the retractions one tick after them, see
    // `instant`, and a join's insertions and retractions that cancel with them) add up
    // to retractions, which change nothing here: only insertions are evaluations.
    // Dropping them before the exchange halves what crosses to the key's worker and
    // waits for the frontier.
    let evaluations = hits.inner.filter(|((_, hit), time, _)| hit.time >= *time);
    // By alert entity only (not rule and entity): a reading's hits all go to the worker its
    // readings were enriched on.
    let evaluations = match on_entity_worker {
        true => evaluations,
        false => evaluations.exchange(|update| entity_route(&update.0.0.1)),
    };
    evaluations.binary_frontier_while_holding(
        rule_changes,
        Pipeline,
        Pipeline,
        "HoldAndHysteresis",
        |_capability| {
            let mut hits_waiting: Pending<HitRow> = Pending::default();
            let mut rules_waiting: BTreeMap<Time, Vec<(RuleRow, Diff)>> = BTreeMap::new();
            let mut ready: Vec<(HitRow, Time, Diff)> = Vec::new();
            let mut keys_seen = FxHashSet::default();
            // Transitions are rare: a capability at their time is taken from this one only
            // for a time that has some.
            let mut earliest = Earliest::default();
            let mut states: FxHashMap<AlertKey, AlertState> = FxHashMap::default();
            let mut seeded = !seed
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .is_empty();
            let mut fired: FxHashMap<AlertKey, Fired> = FxHashMap::default();
            // Rows per rule id, over every time processed so far.
            let mut rule_rows: FxHashMap<String, Diff> = FxHashMap::default();
            move |(hits, hits_frontier), (rules, rules_frontier), output| {
                hits.for_each(|capability, data| {
                    if let Some(time) = hits_waiting.append(data) {
                        earliest.hold(&capability, time);
                    }
                });
                rules.for_each(|capability, data| {
                    for (row, time, diff) in data.drain(..) {
                        earliest.hold(&capability, time);
                        rules_waiting.entry(time).or_default().push((row, diff));
                    }
                });
                let is_ready = |time: &Time| {
                    !hits_frontier.less_equal(time) && !rules_frontier.less_equal(time)
                };
                hits_waiting.take_ready(is_ready, &mut ready);
                // Insertions and retractions of one row at one time cancel; only net
                // insertions are evaluations (see `instant`: a hit carries its event time,
                // so the retraction of one never cancels the next). An alert's hits at one
                // time in order; different alerts' in the order they came.
                consolidate_repeated_keys_by_time(&mut ready, |(key, _)| key, &mut keys_seen);
                let mut ready_hits = ready.drain(..).peekable();
                loop {
                    // The next time with hits or rule changes, in time order.
                    let next_hits = ready_hits.peek().map(|(_, time, _)| *time);
                    let next_rules = rules_waiting.keys().next().copied().filter(is_ready);
                    let Some(time) = next_hits.into_iter().chain(next_rules).min() else {
                        break;
                    };
                    let rule_changes = if next_rules == Some(time) {
                        rules_waiting.remove(&time).unwrap_or_default()
                    } else {
                        Vec::new()
                    };
                    let hits = std::iter::from_fn(|| ready_hits.next_if(|(_, at, _)| *at == time));
                    // Most times have hits only: no rule edits to look at.
                    let RuleEdits { removed, changed } = if rule_changes.is_empty() {
                        RuleEdits::default()
                    } else {
                        rule_edits(&mut rule_rows, rule_changes)
                    };
                    // An edited rule first lets go of the alerts it no longer covers; then
                    // this time's hits meet the new rule.
                    let mut ended = Vec::new();
                    for (before, after) in &changed {
                        for (key, Fired { labels, .. }) in &fired {
                            if *key.0 != *before.id() {
                                continue;
                            }
                            if let Some(reason) = resolved_by_edit(before, after, labels) {
                                ended.push((key.clone(), before.alarm().clone(), reason));
                            }
                        }
                    }
                    let mut emitted = end_alerts(ended, &mut states, &mut fired, time);
                    for (
                        (
                            key,
                            RuleHit {
                                value,
                                reported,
                                labels,
                                rule,
                                ..
                            },
                        ),
                        _,
                        diff,
                    ) in hits
                    {
                        if diff <= 0 {
                            continue;
                        }
                        let mut state = states.get(&key).copied();
                        if state.is_none() && seeded {
                            let mut seed = seed.lock().unwrap_or_else(PoisonError::into_inner);
                            if seed.remove(&key) {
                                state = Some(AlertState::Firing);
                                fired.insert(
                                    key.clone(),
                                    Fired {
                                        labels: labels.clone(),
                                        value: reported.0,
                                    },
                                );
                            }
                            seeded = !seed.is_empty();
                        }
                        let (next, transition) = step(state, &rule, value.0, time);
                        match transition {
                            Some(TransitionState::Firing) => {
                                fired.insert(
                                    key.clone(),
                                    Fired {
                                        labels: labels.clone(),
                                        value: reported.0,
                                    },
                                );
                            }
                            Some(TransitionState::Resolved) => {
                                fired.remove(&key);
                            }
                            None => {}
                        }
                        if let Some(state) = transition {
                            let mut transition =
                                make_transition(&rule, &key.1, &labels, state, reported.0, time);
                            // A kind that evaluates its alerts at the removal itself
                            // (absence) resolves them here: it is still the removal.
                            if state == TransitionState::Resolved
                                && removed.iter().any(|r| *r.id == *key.0)
                            {
                                transition.reason = Some(RULE_REMOVED.to_string());
                            }
                            emitted.push(transition);
                        }
                        match next {
                            Some(next) => {
                                states.insert(key, next);
                            }
                            // A normal key that stays normal was never stored: no second
                            // hash of its two strings (most readings are this case).
                            None if state.is_none() => {}
                            None => {
                                states.remove(&key);
                            }
                        }
                    }
                    if !removed.is_empty() {
                        let mut ended = Vec::new();
                        for rule in removed {
                            ended.extend(
                                states
                                    .keys()
                                    .filter(|key| *key.0 == *rule.id)
                                    .map(|key| (key.clone(), rule.clone(), RULE_REMOVED)),
                            );
                        }
                        emitted.extend(end_alerts(ended, &mut states, &mut fired, time));
                    }
                    if let Some(held) = earliest.capability()
                        && !emitted.is_empty()
                    {
                        output
                            .session(&held.delayed(&time))
                            .give_container(&mut emitted);
                    }
                }
                drop(ready_hits);
                let next_hits = hits_waiting.earliest();
                let next_rules = rules_waiting.keys().next().copied();
                earliest.advance(next_hits.into_iter().chain(next_rules).min());
            }
        },
    )
}

/// Resolves the alerts `ended` (key, the rule as they fired under it, the reason) at `time`:
/// their state goes; the firing ones give a resolved transition with the reason, in key
/// order so the output does not depend on hashing.
fn end_alerts(
    mut ended: Vec<(AlertKey, ThresholdRule, &'static str)>,
    states: &mut FxHashMap<AlertKey, AlertState>,
    fired: &mut FxHashMap<AlertKey, Fired>,
    time: Time,
) -> Vec<AlertTransition> {
    if ended.is_empty() {
        return Vec::new();
    }
    ended.sort_by(|a, b| a.0.cmp(&b.0));
    let mut out = Vec::new();
    for (key, rule, reason) in ended {
        let state = states.remove(&key);
        let Some(Fired { labels, value }) = fired.remove(&key) else {
            continue;
        };
        if state != Some(AlertState::Firing) {
            continue;
        }
        let mut transition = make_transition(
            &rule,
            &key.1,
            &labels,
            TransitionState::Resolved,
            value,
            time,
        );
        transition.reason = Some(reason.to_string());
        out.push(transition);
    }
    out
}

/// What the rule-row changes of one time do to the rules' alerts.
#[derive(Default)]
struct RuleEdits {
    /// The alarm side of each rule whose last row went away (its alerts must be resolved).
    removed: Vec<ThresholdRule>,
    /// Rules edited in place: (the row before, the row after).
    changed: Vec<(RuleRow, RuleRow)>,
}

/// Applies the rule-row changes of one time to the row count per rule id. An edit retracts one
/// row and inserts another with the same id, so its count never reaches zero: it is a change.
fn rule_edits(
    rule_rows: &mut FxHashMap<String, Diff>,
    mut changes: Vec<(RuleRow, Diff)>,
) -> RuleEdits {
    consolidate(&mut changes);
    let mut retracted: BTreeMap<String, RuleRow> = BTreeMap::new();
    let mut inserted: BTreeMap<String, RuleRow> = BTreeMap::new();
    for (row, diff) in changes {
        let id = row.id().to_string();
        *rule_rows.entry(id.clone()).or_default() += diff;
        if diff < 0 {
            // The retracted row names the rule as it was while its alerts fired.
            retracted.insert(id, row);
        } else {
            inserted.insert(id, row);
        }
    }
    let mut edits = RuleEdits::default();
    for (id, before) in retracted {
        let gone = rule_rows.get(&id).is_none_or(|n| *n <= 0);
        if gone {
            rule_rows.remove(&id);
            edits.removed.push(before.alarm().clone());
        } else if let Some(after) = inserted.remove(&id) {
            edits.changed.push((before, after));
        }
    }
    edits
}

/// Why a firing alert of an edited rule resolves now, if it does: the rule now watches another
/// kind, domain or metric ([`RULE_CHANGED`]), or its scope no longer selects the alert's entity
/// ([`OUT_OF_SCOPE`]). Otherwise the alert keeps its state and meets the new rule at its next
/// evaluation.
fn resolved_by_edit(before: &RuleRow, after: &RuleRow, labels: &Labels) -> Option<&'static str> {
    let (old, new) = (before.alarm(), after.alarm());
    if before.kind() != after.kind() || old.domain != new.domain || old.metric != new.metric {
        Some(RULE_CHANGED)
    } else if old.scope != new.scope && !new.selects(labels) {
        Some(OUT_OF_SCOPE)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;
    use std::rc::Rc;

    use citybrain_model::{Domain, Metric, Severity};
    use differential_dataflow::input::Input;
    use timely::dataflow::operators::{Inspect, Probe};

    use super::*;
    use crate::instant::IntoInstants;
    use crate::ordered_float::OrderedFloat;
    use crate::rule::Direction;

    /// The labels the summary tests fill in.
    fn summary_labels() -> std::collections::BTreeMap<String, String> {
        [
            ("entity", "s1"),
            ("face", "f2"),
            ("mine", "m1"),
            ("rule", "ch4-high"),
        ]
        .into_iter()
        .map(|(name, label)| (name.to_string(), label.to_string()))
        .collect()
    }

    /// The reference: the summary as the label-by-label replacement filled it (`{value}`
    /// first, then each label in name order), value 1.25.
    fn summary_by_replacing(
        template: &str,
        labels: &std::collections::BTreeMap<String, String>,
    ) -> String {
        let mut summary = template.replace("{value}", "1.25");
        for (name, label) in labels {
            summary = summary.replace(&format!("{{{name}}}"), label);
        }
        summary
    }

    proptest::proptest! {
        /// Any string of braces, label names, `value` and other text.
        #[test]
        fn any_summary_is_filled_as_replacing_label_by_label_did(
            tokens in proptest::collection::vec(
                proptest::sample::select(vec!["{", "}", "mine", "face", "value", "zz", " "]),
                0..24,
            ),
        ) {
            let (template, labels) = (tokens.concat(), summary_labels());
            proptest::prop_assert_eq!(
                fill_summary(&template, "1.25", &labels),
                summary_by_replacing(&template, &labels)
            );
        }
    }

    proptest::proptest! {
        /// Pairs with repeated names (few names, so most repeat): a later pair overrides an
        /// earlier one, as inserting them one by one into a map did.
        #[test]
        fn labels_are_mapped_as_inserting_them_in_turn_did(
            pairs in proptest::collection::vec((0u8..4, 0u8..4), 0..16),
        ) {
            let pairs: Vec<(String, String)> =
                pairs.iter().map(|(name, value)| (format!("n{name}"), format!("v{value}"))).collect();
            let mut inserted = std::collections::BTreeMap::new();
            for (name, value) in pairs.clone() {
                inserted.insert(name, value);
            }
            proptest::prop_assert_eq!(label_map(pairs), inserted);
        }
    }

    /// The rule's labels override the entity's, and the fixed ones (`rule`, `entity`, ...)
    /// both.
    #[test]
    fn a_transitions_labels_override_in_order() {
        let mut rule = crate::tests::alarm("r1", Direction::Above, 1.0, 0.5, 0, &[]);
        rule.labels = vec![
            ("face".into(), "from-rule".into()),
            ("team".into(), "b".into()),
        ];
        let entity_labels = vec![
            ("entity".to_string(), "from-entity".to_string()),
            ("face".to_string(), "f1".to_string()),
            ("mine".to_string(), "m1".to_string()),
        ];
        let transition =
            make_transition(&rule, "s1", &entity_labels, TransitionState::Firing, 1.5, 7);
        let labels: Vec<(&str, &str)> = transition
            .labels
            .iter()
            .map(|(name, value)| (name.as_str(), value.as_str()))
            .collect();
        assert_eq!(
            labels,
            [
                ("domain", "mine"),
                ("entity", "s1"),
                ("face", "from-rule"),
                ("metric", "ch4"),
                ("mine", "m1"),
                ("rule", "r1"),
                ("severity", rule.severity.as_str()),
                ("team", "b"),
            ]
        );
    }

    /// Templates with placeholders of labels, of the value, unknown ones, braces doubled and
    /// unclosed, and text that is not ASCII.
    #[test]
    fn a_summary_is_filled_as_replacing_label_by_label_did() {
        let labels = summary_labels();
        let reference = |template: &str| summary_by_replacing(template, &labels);
        for template in [
            "",
            "methane high",
            "methane {value} % at {face} of {mine}",
            "{entity}{value}{entity}",
            "{unknown} stays, {face} does not",
            "{{mine}} and {value}}",
            "unclosed {mine",
            "} {",
            "{}{mine}{",
            "ünïcode {face} ✓ {value}",
        ] {
            assert_eq!(
                fill_summary(template, "1.25", &labels),
                reference(template),
                "{template:?}"
            );
        }
    }

    /// Rule `r`: methane alarm at 1.0, clear below 0.8, critical.
    fn rule_r() -> ThresholdRule {
        ThresholdRule {
            id: "r".into(),
            domain: Domain::Mine,
            metric: Metric::Ch4,
            scope: vec![],
            direction: Direction::Above,
            threshold: OrderedFloat(1.0),
            clear: OrderedFloat(0.8),
            hold_ms: 0,
            severity: Severity::Critical,
            summary: "methane".into(),
            labels: vec![],
        }
    }

    /// Transitions of rule `r` (alarm at 1.0, clear below 0.8) over `values` of s1 and s2 at
    /// times 10, 20, ..., with `seeded` keys starting as firing; sorted.
    fn transitions(values: &[f64], seeded: &[&str]) -> Vec<(u64, String, TransitionState)> {
        let seed: FiringSeed = Arc::new(Mutex::new(
            seeded.iter().map(|e| ("r".into(), (*e).into())).collect(),
        ));
        let values = values.to_vec();
        timely::execute_directly(move |worker| {
            let out = Rc::new(RefCell::new(Vec::new()));
            let sink = Rc::clone(&out);
            let (mut input, probe) = worker.dataflow::<Time, _, _>(|scope| {
                let (input, hits) = scope.new_collection();
                let (_, rules) = scope.new_collection::<RuleRow, Diff>();
                let (probe, _) = hits
                    .into_instants()
                    .map(|(hit, _)| hit)
                    .hold_and_hysteresis_seeded(rules, seed)
                    .inspect(move |t: &AlertTransition| {
                        sink.borrow_mut()
                            .push((t.event_time, t.entity.clone(), t.state))
                    })
                    .probe();
                (input, probe)
            });
            let rule = rule_r();
            for (i, value) in values.iter().enumerate() {
                let time = 10 * (i as u64 + 1);
                for entity in ["s1", "s2"] {
                    let hit = RuleHit::new(time, *value, vec![], rule.clone());
                    input.update_at((("r".into(), entity.into()), hit), time, 1);
                }
            }
            input.close();
            while !probe.done() {
                worker.step();
            }
            let mut result = out.borrow().clone();
            result.sort();
            result
        })
    }

    #[test]
    fn a_seeded_key_starts_firing_so_it_resolves_out_of_the_hysteresis_band() {
        let values = [0.9, 0.85, 0.7, 1.1];
        assert_eq!(
            transitions(&values, &[]),
            vec![
                (40, "s1".to_string(), TransitionState::Firing),
                (40, "s2".to_string(), TransitionState::Firing),
            ]
        );
        assert_eq!(
            transitions(&values, &["s1"]),
            vec![
                (30, "s1".to_string(), TransitionState::Resolved),
                (40, "s1".to_string(), TransitionState::Firing),
                (40, "s2".to_string(), TransitionState::Firing),
            ]
        );
    }

    /// Transitions (time, entity, state, reason) when rule `r` fires for s1 (face f1) and s2
    /// (face f2) at time 10 and is replaced by `edited` at time 20.
    fn after_edit(
        edited: impl Fn(&mut ThresholdRule),
    ) -> Vec<(u64, String, TransitionState, Option<String>)> {
        let rule = rule_r();
        let mut new_rule = rule.clone();
        edited(&mut new_rule);
        timely::execute_directly(move |worker| {
            let out = Rc::new(RefCell::new(Vec::new()));
            let sink = Rc::clone(&out);
            let (mut input, mut rules, probe) = worker.dataflow::<Time, _, _>(|scope| {
                let (input, hits) = scope.new_collection();
                let (rules, rule_rows) = scope.new_collection::<RuleRow, Diff>();
                let (probe, _) = hits
                    .into_instants()
                    .map(|(hit, _)| hit)
                    .hold_and_hysteresis(rule_rows)
                    .inspect(move |t: &AlertTransition| {
                        sink.borrow_mut().push((
                            t.event_time,
                            t.entity.clone(),
                            t.state,
                            t.reason.clone(),
                        ))
                    })
                    .probe();
                (input, rules, probe)
            });
            rules.insert(RuleRow::Threshold(rule.clone()));
            for (entity, face) in [("s1", "f1"), ("s2", "f2")] {
                let labels = vec![("face".to_string(), face.to_string())];
                let hit = RuleHit::new(10, 1.2, labels, rule.clone());
                input.update_at((("r".into(), entity.into()), hit), 10, 1);
            }
            rules.advance_to(20);
            rules.remove(RuleRow::Threshold(rule.clone()));
            rules.insert(RuleRow::Threshold(new_rule.clone()));
            input.close();
            rules.close();
            while !probe.done() {
                worker.step();
            }
            let mut result = out.borrow().clone();
            result.sort();
            result
        })
    }

    #[test]
    fn an_edit_resolves_the_alerts_its_new_scope_leaves_out_and_keeps_the_rest() {
        let fired = |entity: &str| (10, entity.to_string(), TransitionState::Firing, None);
        assert_eq!(
            after_edit(|r| r.scope = vec![("face".into(), "f2".into())]),
            vec![
                fired("s1"),
                fired("s2"),
                (
                    20,
                    "s1".to_string(),
                    TransitionState::Resolved,
                    Some(OUT_OF_SCOPE.to_string())
                ),
            ]
        );
        // A new threshold keeps every alert: each meets the new rule at its next reading.
        assert_eq!(
            after_edit(|r| r.threshold = OrderedFloat(1.1)),
            vec![fired("s1"), fired("s2")]
        );
        // Another metric is another rule in all but its id.
        let changed = |entity: &str| {
            (
                20,
                entity.to_string(),
                TransitionState::Resolved,
                Some(RULE_CHANGED.to_string()),
            )
        };
        assert_eq!(
            after_edit(|r| r.metric = Metric::Co),
            vec![fired("s1"), fired("s2"), changed("s1"), changed("s2")]
        );
    }
}
