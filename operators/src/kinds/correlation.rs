//! The `correlation` rule kind: two metrics of the same group (e.g. one working face) on
//! their alarm sides together, within a time tolerance: an as-of join.
//!
//! The state of a side (metric) of a group at time `t`: for each of the group's sensors of
//! that metric, its latest reading in `[t - tolerance, t]` (the worst value if several share
//! that time); of those, the worst (the largest for an `above` side, the smallest for a
//! `below` side), so a sensor reading low does not hide another reading high. A side without
//! readings in the tolerance is unknown. A sensor's newer reading supersedes its older ones,
//! also where an edit of the rule shortened the tolerance in between and an older one would
//! count for longer: a superseded value does not come back when the newer one expires.
//!
//! The rule is evaluated at each reading of either metric in the group, when both sides are
//! known. Its derived value is a level: `2` when both sides are on their alarm side, `0` when
//! either side is past its clear level, else `1` (between the levels: no change). The alarm
//! side the state machine sees is "level >= 2, clear below 1", so each side keeps its own
//! hysteresis and `for` applies to "both conditions held on every evaluation". Alerts report
//! the first metric's side value and carry both side values as labels named after the
//! metrics (e.g. `{ch4}` and `{air_velocity}` in summaries). The alert entity is the group.
//!
//! Built as one frontier-driven operator that keeps, per side and sensor, the sensor's latest
//! reading while it counts (for `tolerance`), and evaluates each reading against both sides
//! (see `hits_of_matches`). State holds one reading per sensor heard within the last
//! `tolerance`, per live group.

use std::sync::Arc;

use citybrain_model::{Domain, Labels, Metric};
use differential_dataflow::{AsCollection, VecCollection};
use indexmap::{Equivalent, IndexMap};
use ordered_float::OrderedFloat;
use rustc_hash::{FxBuildHasher, FxHashMap};
use serde::{Deserialize, Serialize};
use timely::dataflow::channels::pact::Pipeline;

use crate::agenda::{Agenda, KeyTimer};
use crate::by_address::ByAddress;
use crate::enrich::Event;
use crate::entity_route;
use crate::hit::{HitRow, RuleHit};
use crate::kinds::{KindHits, Sources};
use crate::matching::{Events, Match, MatchedRule, Matches, match_rules};
use crate::place::FlatMapPlaced;
use crate::rule::{CarriedLabels, Direction, GroupBy, RuleRow, ThresholdRule};
use crate::woken_while_holding::WokenWhileHolding;
use crate::{Diff, EntityId, Time};

/// One side of a correlation: a metric on one side of a level, with its own clear level.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Condition {
    /// The metric.
    pub metric: Metric,
    /// Alarm side.
    pub direction: Direction,
    /// Alarm threshold (inclusive).
    pub threshold: OrderedFloat<f64>,
    /// Clear threshold (exclusive).
    pub clear: OrderedFloat<f64>,
}

impl Condition {
    /// True when `value` is on the alarm side.
    pub fn triggers(&self, value: f64) -> bool {
        match self.direction {
            Direction::Above => value >= self.threshold.0,
            Direction::Below => value <= self.threshold.0,
        }
    }

    /// True when `value` is past the clear level.
    pub fn clears(&self, value: f64) -> bool {
        match self.direction {
            Direction::Above => value < self.clear.0,
            Direction::Below => value > self.clear.0,
        }
    }

    /// The worse of two values: the larger for an `above` side, the smaller for `below`.
    pub fn worse(&self, a: f64, b: f64) -> f64 {
        match self.direction {
            Direction::Above => a.max(b),
            Direction::Below => a.min(b),
        }
    }
}

/// A correlation rule as a collection row.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct CorrelationRule {
    /// Id, domain, scope, hold, severity, summary, labels; its metric, direction, threshold
    /// and clear are the first condition.
    pub alarm: ThresholdRule,
    /// The second condition (another metric of the same domain).
    pub with: Condition,
    /// The group both metrics must share; the alert entity.
    pub group_by: GroupBy,
    /// How far back a side's latest reading may be, milliseconds.
    pub tolerance_ms: u64,
}

impl CorrelationRule {
    /// The first condition (from the alarm side).
    pub fn first(&self) -> Condition {
        Condition {
            metric: self.alarm.metric,
            direction: self.alarm.direction,
            threshold: self.alarm.threshold,
            clear: self.alarm.clear,
        }
    }

    /// Both conditions, first and second.
    pub fn conditions(&self) -> [Condition; 2] {
        [self.first(), self.with.clone()]
    }

    /// The level of the two sides' values: 2 both alarm, 0 either cleared, 1 in between.
    pub fn level(&self, first: f64, second: f64) -> f64 {
        let [a, b] = self.conditions();
        if a.triggers(first) && b.triggers(second) {
            2.0
        } else if a.clears(first) || b.clears(second) {
            0.0
        } else {
            1.0
        }
    }

    /// The alarm side the state machine applies to levels: fire at 2, resolve below 1.
    pub fn level_rule(&self) -> ThresholdRule {
        ThresholdRule {
            direction: Direction::Above,
            threshold: OrderedFloat(2.0),
            clear: OrderedFloat(1.0),
            ..self.alarm.clone()
        }
    }

    /// The key of one side's state in `group`, borrowed: finds the side without building a
    /// key (two strings) per reading.
    fn side_of<'a>(&'a self, side: &Condition, group: &'a str) -> SideOf<'a> {
        SideOf {
            rule: &self.alarm.id,
            domain: self.alarm.domain,
            metric: side.metric,
            direction: side.direction,
            group,
        }
    }

    /// The alert labels: the group's, plus each side's value under its metric's name.
    pub fn labels(&self, group_labels: &Labels, first: f64, second: f64) -> Labels {
        let mut labels = group_labels.clone();
        labels.push((self.alarm.metric.as_str().to_string(), format!("{first}")));
        labels.push((self.with.metric.as_str().to_string(), format!("{second}")));
        labels.sort();
        labels
    }
}

/// One side of one group under one rule.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct SideKey {
    /// Rule id.
    pub rule: String,
    /// Domain.
    pub domain: Domain,
    /// The side's metric.
    pub metric: Metric,
    /// The side's direction (what "worst" means).
    pub direction: Direction,
    /// The group.
    pub group: EntityId,
}

/// A [`SideKey`], borrowed. Its fields and their order are `SideKey`'s, so it hashes the same
/// (a `String` or an [`EntityId`] hashes as its `str`).
#[derive(Hash)]
struct SideOf<'a> {
    rule: &'a str,
    domain: Domain,
    metric: Metric,
    direction: Direction,
    group: &'a str,
}

impl SideOf<'_> {
    fn to_owned(&self) -> SideKey {
        SideKey {
            rule: self.rule.to_string(),
            domain: self.domain,
            metric: self.metric,
            direction: self.direction,
            group: EntityId::from(self.group),
        }
    }
}

impl Equivalent<SideKey> for SideOf<'_> {
    fn equivalent(&self, key: &SideKey) -> bool {
        self.rule == key.rule
            && self.domain == key.domain
            && self.metric == key.metric
            && self.direction == key.direction
            && self.group == key.group
    }
}

/// A reading on a side: when it was taken, the last time it counts (its time + the
/// tolerance), its value.
#[derive(Clone, Copy)]
struct SideReading {
    time: Time,
    until: Time,
    value: f64,
}

/// One side of one group: each sensor's latest reading still counting, and the earliest timer
/// set to forget those that no longer count.
///
/// A side is evaluated at the time of the readings just added, after every earlier one
/// (readings join in time order), so of a sensor's readings only the latest can be its latest
/// in `[t - tolerance, t]`: older ones are not kept. Each sensor's readings used to be kept in
/// a list of their own, one allocation per sensor for every evaluation to pass through.
#[derive(Default)]
struct Side {
    sensors: FxHashMap<EntityId, SideReading>,
    /// The last time any reading held counts.
    until: Time,
    timer: KeyTimer,
}

impl Side {
    /// Adds `sensor`'s reading (at or after every one held): it replaces the sensor's latest,
    /// or joins it when both have one time (the side's worst of the two is kept).
    fn add(&mut self, sensor: &str, reading: SideReading, side: &Condition) {
        self.until = self.until.max(reading.until);
        match self.sensors.get_mut(sensor) {
            Some(latest) if latest.time == reading.time => {
                latest.value = side.worse(latest.value, reading.value);
            }
            Some(latest) => *latest = reading,
            None => {
                self.sensors.insert(EntityId::from(sensor), reading);
            }
        }
    }

    /// The side's value at `time` (every reading up to it held, none after): the worst over
    /// the sensors of each one's latest reading, if it counts at `time`; `None` when none
    /// does.
    fn value(&self, side: &Condition, time: Time) -> Option<f64> {
        self.sensors
            .values()
            .filter(|latest| latest.until >= time)
            .map(|latest| latest.value)
            .reduce(|worst, value| side.worse(worst, value))
    }

    /// Forgets the sensors whose latest reading no longer counts at `time`.
    fn expire(&mut self, time: Time) {
        self.sensors.retain(|_, latest| latest.until >= time);
    }

    /// Returns when a timer must be set to forget the side (once no reading counts): none is
    /// set at or before that.
    fn timer_for(&mut self) -> Option<Time> {
        self.timer.due_at(self.until.saturating_add(1))
    }
}

/// A match filed under its group: (group, reading, its metric, rule).
type Filed = (EntityId, Event, Metric, Arc<MatchedRule>);

/// Joins two metrics of a group as of each reading.
pub trait Correlations<'s> {
    /// One hit per (rule, group, time of a reading of either metric) when both sides are
    /// known, valued with the level.
    ///
    /// ```
    /// use citybrain_operators::EntityId;
    /// use citybrain_model::{Domain, EntityInfo, Metric, Severity};
    /// use citybrain_operators::kinds::correlation::{Condition, CorrelationRule, Correlations};
    /// use citybrain_operators::matching::events;
    /// use citybrain_operators::ordered_float::OrderedFloat;
    /// use citybrain_operators::rule::{Direction, GroupBy, ThresholdRule};
    /// use differential_dataflow::input::Input;
    ///
    /// timely::example(|scope| {
    ///     let (mut readings, reading_rows) = scope.new_collection();
    ///     let (mut registry, registry_rows) = scope.new_collection();
    ///     let (mut rules, rule_rows) = scope.new_collection();
    ///     events(reading_rows, registry_rows)
    ///         .correlation_hits(rule_rows)
    ///         .inspect(|(((_, face), hit), time, diff)| {
    ///             if *diff > 0 {
    ///                 // At 5 s the air velocity reading meets the methane reading of 2 s.
    ///                 assert_eq!((face.as_str(), *time, hit.value.0), ("m/f1", 5_000, 2.0));
    ///             }
    ///         });
    ///     rules.insert(CorrelationRule {
    ///         alarm: ThresholdRule {
    ///             id: "ventilation-failure".into(),
    ///             domain: Domain::Mine,
    ///             metric: Metric::Ch4,
    ///             scope: vec![],
    ///             direction: Direction::Above,
    ///             threshold: OrderedFloat(0.8),
    ///             clear: OrderedFloat(0.8),
    ///             hold_ms: 0,
    ///             severity: Severity::Critical,
    ///             summary: "ventilation failure with methane on {face}".into(),
    ///             labels: vec![],
    ///         },
    ///         with: Condition {
    ///             metric: Metric::AirVelocity,
    ///             direction: Direction::Below,
    ///             threshold: OrderedFloat(0.25),
    ///             clear: OrderedFloat(0.25),
    ///         },
    ///         group_by: GroupBy::Face,
    ///         tolerance_ms: 10_000,
    ///     });
    ///     for sensor in ["ch4-1", "velocity-1"] {
    ///         let info = EntityInfo::new([("mine", Some("m".into())), ("face", Some("m/f1".into()))], 1000);
    ///         registry.insert(((Domain::Mine, EntityId::from(sensor)), info));
    ///     }
    ///     let reading = |sensor: &str, metric, value| {
    ///         ((Domain::Mine, EntityId::from(sensor)), (metric, OrderedFloat(value)))
    ///     };
    ///     readings.update_at(reading("ch4-1", Metric::Ch4, 0.9), 2_000, 1);
    ///     readings.update_at(reading("velocity-1", Metric::AirVelocity, 0.2), 5_000, 1);
    /// });
    /// ```
    fn correlation_hits(
        self,
        rules: VecCollection<'s, Time, CorrelationRule, Diff>,
    ) -> VecCollection<'s, Time, HitRow, Diff>;
}

impl<'s> Correlations<'s> for Events<'s> {
    fn correlation_hits(
        self,
        rules: VecCollection<'s, Time, CorrelationRule, Diff>,
    ) -> VecCollection<'s, Time, HitRow, Diff> {
        hits_of_matches(match_rules(&self, &rules.map(RuleRow::Correlation)))
    }
}

/// The hits of the rules' matches.
///
/// One frontier-driven operator keyed by group (exchanged by group unless the group is one
/// entity, [`GroupBy::placement`]): the matches of a time are applied once the frontier has
/// passed it, in time order ([`crate::agenda`]), so readings out of order within the allowed
/// lateness give the in-order result. Each side of a group keeps its sensors' readings that
/// still count; the readings of a time join their sides, then each is evaluated against both.
/// A side no reading reached for a tolerance is forgotten by a timer. (A differential `reduce`
/// over the temporal filter kept the same state but re-read a group's whole tolerance of
/// readings at every reading: 31 µs per reading for 16 sensors a face at 1 Hz and 10 s.)
fn hits_of_matches(matches: Matches<'_>) -> VecCollection<'_, Time, HitRow, Diff> {
    let filed = matches.flat_map_placed(
        |(
            Match {
                rule,
                metric,
                event,
            },
            time,
            diff,
        )| {
            let correlation = rule.row.as_correlation()?;
            let group = correlation.group_by.name_of(&event.entity, &event.labels)?;
            let placement = correlation.group_by.placement();
            let filed = (EntityId::from(group), event, metric, rule);
            Some((placement, (filed, time, diff)))
        },
        |update: &(Filed, Time, Diff)| entity_route(&update.0.0),
    );
    filed
        .unary_frontier_while_holding(Pipeline, "Correlation", |_capability| {
            let mut agenda: Agenda<Filed, SideKey> = Agenda::new();
            let mut sides: IndexMap<SideKey, Side, FxBuildHasher> = IndexMap::default();
            let mut carried = CarriedLabels::default();
            // Each rule's alarm side as levels, built once per rule (per edit), not per hit.
            let mut level_rules: ByAddress<MatchedRule, (), Arc<ThresholdRule>> =
                ByAddress::default();
            move |(input, frontier), output| {
                input.for_each(|capability, data| agenda.append(&capability, data));
                if frontier.is_empty() {
                    // Nothing comes after the end of the input: nothing to forget.
                    agenda.close();
                }
                let step = |agenda: &mut Agenda<Filed, SideKey>,
                            time: Time,
                            updates: &mut Vec<(Filed, Diff)>,
                            due: &mut Vec<SideKey>,
                            out: &mut Vec<_>| {
                    // The time's readings join their sides (a reading is on the side of its
                    // metric, or on both when they watch the same one)...
                    for ((group, event, metric, matched), diff) in updates.iter() {
                        let Some(rule) = matched.row.as_correlation().filter(|_| *diff > 0) else {
                            continue;
                        };
                        for side in rule.conditions() {
                            if side.metric != *metric {
                                continue;
                            }
                            let key = rule.side_of(&side, group);
                            let reading = SideReading {
                                time,
                                until: time.saturating_add(rule.tolerance_ms),
                                value: event.value.0,
                            };
                            let state = match sides.get_mut(&key) {
                                Some(state) => state,
                                None => sides.entry(key.to_owned()).or_default(),
                            };
                            state.add(&event.entity, reading, &side);
                            if let Some(at) = state.timer_for() {
                                agenda.schedule(key.to_owned(), at);
                            }
                        }
                    }
                    // ...then each is evaluated against both sides.
                    for ((group, event, metric, matched), diff) in updates.drain(..) {
                        let Some(rule) = matched.row.as_correlation().filter(|_| diff > 0) else {
                            continue;
                        };
                        let [first_side, second_side] = rule.conditions();
                        let value_of = |side: &Condition| {
                            sides.get(&rule.side_of(side, &group))?.value(side, time)
                        };
                        let (Some(first), Some(second)) =
                            (value_of(&first_side), value_of(&second_side))
                        else {
                            continue;
                        };
                        let level = rule.level(first, second);
                        // Worked out here, for the readings that hit, on the group's worker.
                        let labels = carried.of(rule.group_by, event.labels);
                        let hit = RuleHit {
                            time,
                            value: OrderedFloat(level),
                            reported: OrderedFloat(first),
                            labels: Arc::new(rule.labels(&labels, first, second)),
                            rule: Arc::clone(
                                level_rules
                                    .get_or_make(&matched, (), |_, _| Arc::new(rule.level_rule())),
                            ),
                        };
                        // One evaluation per side the reading is on.
                        let evaluations = rule
                            .conditions()
                            .iter()
                            .filter(|side| side.metric == metric)
                            .count() as Diff;
                        let row = ((Arc::clone(&matched.id), group), hit);
                        out.push((row, time, diff * evaluations));
                    }
                    for key in due.drain(..) {
                        let Some(state) = sides.get_mut(&key) else {
                            continue;
                        };
                        state.timer.came_due(time);
                        state.expire(time);
                        if state.sensors.is_empty() {
                            sides.swap_remove(&key);
                        } else if let Some(at) = state.timer_for() {
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

/// The registry entry: hits of the correlation rules' matches, made on their group's worker,
/// the alert's entity's.
pub(crate) fn hits<'s>(
    sources: &Sources<'s>,
    _rules: VecCollection<'s, Time, RuleRow, Diff>,
) -> KindHits<'s> {
    KindHits::on_entity_worker(hits_of_matches(sources.matches.clone()))
}
