//! The `window` rule kind: an aggregate of a metric over tumbling or hopping event-time
//! windows, per entity or per group (face, mine, greenhouse, ...), compared with the alarm
//! side at each window's end.
//!
//! Windows are aligned to the epoch: with window length `W` and hop `H` (`H = W`: tumbling),
//! window `k` covers `[k H, k H + W)` and ends at `k H + W`. A reading at `t` belongs to every
//! window that covers `t`.
//!
//! A frontier-driven operator keyed by group (exchanged by group unless the group is one
//! entity, [`GroupBy::placement`]): each reading is filed in the first window it belongs to
//! (the one ending first), whose new readings are counted into the later ones once per step,
//! and a window is evaluated once, at its end, when the frontier has passed it.
//! The result meets the rule as of that time (the operator keeps the window rules as a table
//! of its own, changed in time order between the windows it closes, as [`crate::lookup`]
//! would, without a second operator and a record per closed window): an edited threshold
//! applies to the windows that end after the edit; a rule whose shape was edited, or that was
//! removed, has nothing for its open windows. Windows are kept per (rule id, shape): editing a
//! rule's levels, hold, severity or summary keeps them.
//!
//! The aggregate runs as readings are filed and carried forward (module `readings`), so
//! closing a window reads its result. State holds only open windows (`W / H` per group for
//! hopping windows), their distinct readings' times and values (16 bytes each, to tell a
//! repeated reading; each kept by one window) and each window's aggregate so far: it grows with
//! live keys and window lengths, not with readings seen.
//!
//! A window without readings has no value and is not evaluated (it neither raises nor clears;
//! silence is the absence kind's business). Identical readings (same entity, time and value)
//! count once.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::hash::BuildHasher;
use std::mem;
use std::sync::Arc;

use citybrain_model::{Domain, Labels, Metric};
use differential_dataflow::consolidation::consolidate;
use differential_dataflow::{AsCollection, VecCollection};
use indexmap::IndexMap;
use indexmap::map::RawEntryApiV1;
use indexmap::map::raw_entry_v1::RawEntryMut;
use ordered_float::OrderedFloat;
use rustc_hash::FxBuildHasher;
use serde::{Deserialize, Serialize};
use smallvec::SmallVec;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::vec::Broadcast;
use timely::dataflow::operators::{Capability, InputCapability};

use crate::entity_route;
use crate::hit::{HitRow, RuleHit};
use crate::kinds::{KindHits, Sources};
use crate::lookup::Table;
use crate::matching::{Events, Match, MatchedRule, Matches, match_rules};
use crate::place::FlatMapPlaced;
use crate::rule::{CarriedLabels, GroupBy, RuleRow, ThresholdRule};
use crate::woken_while_holding::WokenWhileHolding;
use crate::{Diff, EntityId, Time};

mod readings;

use readings::WindowReadings;

/// The aggregate of a window's values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Aggregate {
    /// Number of readings.
    Count,
    /// Sum of the values: exact, rounded once (the same whatever order the values come in).
    Sum,
    /// Mean of the values (the sum divided by the count).
    Avg,
    /// Smallest value.
    Min,
    /// Largest value.
    Max,
    /// Nearest-rank percentile `p` (1..=100): the smallest value such that at least `p`% of
    /// the values are less or equal, i.e. the `ceil(p n / 100)`-th smallest.
    Percentile(u8),
}

impl Aggregate {
    /// The name used in rule files: `count`, `sum`, `avg`, `min`, `max`, `p50`, ...
    pub fn name(self) -> String {
        match self {
            Aggregate::Count => "count".into(),
            Aggregate::Sum => "sum".into(),
            Aggregate::Avg => "avg".into(),
            Aggregate::Min => "min".into(),
            Aggregate::Max => "max".into(),
            Aggregate::Percentile(p) => format!("p{p}"),
        }
    }
}

/// A window rule as a collection row.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct WindowRule {
    /// Id, domain, metric, scope, and the levels the aggregate is compared with.
    pub alarm: ThresholdRule,
    /// Window length, milliseconds (at least 1).
    pub window_ms: u64,
    /// Distance between window starts, milliseconds (1..=window; = window: tumbling).
    pub hop_ms: u64,
    /// Per entity, or per group label; the group is the alert entity.
    pub group_by: GroupBy,
    /// What is computed over a window.
    pub aggregate: Aggregate,
}

impl WindowRule {
    /// The ends of the windows a reading at `time` belongs to, earliest first.
    pub fn window_ends(&self, time: Time) -> impl Iterator<Item = Time> + use<> {
        let window = self.window_ms.max(1);
        let hop = self.hop_ms.max(1);
        let first = if time < window {
            0
        } else {
            (time - window) / hop + 1
        };
        let last = time / hop;
        (first..=last).map(move |k| k.saturating_mul(hop).saturating_add(window))
    }

    /// What keeps the rule's windows: its id and shape (what decides which readings a window
    /// holds and how they are aggregated). Readings of two rules with the same identity share
    /// windows, so editing a rule's levels, hold, severity or summary keeps its open windows,
    /// while editing its shape starts new ones (and drops the old ones).
    pub fn identity(&self) -> WindowIdentity<'_> {
        let alarm = &self.alarm;
        (
            alarm.id.as_str(),
            (alarm.domain, alarm.metric, &alarm.scope),
            (self.window_ms, self.hop_ms, self.group_by, self.aggregate),
        )
    }
}

/// A window rule's id and shape: (id, (domain, metric, label scope), (window length, hop,
/// grouping, aggregate)).
pub type WindowIdentity<'a> = (
    &'a str,
    (Domain, Metric, &'a Labels),
    (u64, u64, GroupBy, Aggregate),
);

/// A reading on its way to its windows: (value, time, entity). The entity is
/// empty in a group of one entity (the group is the entity: naming it again in every reading
/// would cost a copy of its id per reading). Its labels are not kept: a window keeps the least
/// labels of its readings ([`OpenWindow::labels`]), and identical readings have the same
/// labels (an entity's as of the reading's time).
pub(crate) type WindowValue = (OrderedFloat<f64>, Time, EntityId);

/// Aggregates events over windows.
pub trait WindowAggregates<'s> {
    /// One hit per (rule, group, window with readings), at the window's end, valued with the
    /// aggregate and carrying the group's labels.
    ///
    /// ```
    /// use citybrain_operators::EntityId;
    /// use citybrain_model::{Domain, Metric, Severity};
    /// use citybrain_operators::kinds::window::{Aggregate, WindowAggregates, WindowRule};
    /// use citybrain_operators::matching::events;
    /// use citybrain_operators::ordered_float::OrderedFloat;
    /// use citybrain_operators::rule::{Direction, GroupBy, ThresholdRule};
    /// use differential_dataflow::input::Input;
    ///
    /// timely::example(|scope| {
    ///     let (mut readings, reading_rows) = scope.new_collection();
    ///     let (_registry, registry_rows) = scope.new_collection();
    ///     let (mut rules, rule_rows) = scope.new_collection();
    ///     events(reading_rows, registry_rows)
    ///         .window_hits(rule_rows)
    ///         .inspect(|(((_, entity), hit), time, diff)| {
    ///             if *diff > 0 {
    ///                 // The window [0, 100) ends at 100: the mean of 0.6 and 1.0.
    ///                 assert_eq!((entity.as_str(), *time, hit.value.0), ("s1", 100, 0.8));
    ///             }
    ///         });
    ///     rules.insert(WindowRule {
    ///         alarm: ThresholdRule {
    ///             id: "ch4-avg".into(),
    ///             domain: Domain::Mine,
    ///             metric: Metric::Ch4,
    ///             scope: vec![],
    ///             direction: Direction::Above,
    ///             threshold: OrderedFloat(0.8),
    ///             clear: OrderedFloat(0.8),
    ///             hold_ms: 0,
    ///             severity: Severity::Warning,
    ///             summary: "average methane".into(),
    ///             labels: vec![],
    ///         },
    ///         window_ms: 100,
    ///         hop_ms: 100,
    ///         group_by: GroupBy::Entity,
    ///         aggregate: Aggregate::Avg,
    ///     });
    ///     let s1 = (Domain::Mine, EntityId::from("s1"));
    ///     readings.update_at((s1.clone(), (Metric::Ch4, OrderedFloat(0.6))), 10, 1);
    ///     readings.update_at((s1, (Metric::Ch4, OrderedFloat(1.0))), 60, 1);
    /// });
    /// ```
    fn window_hits(
        self,
        rules: VecCollection<'s, Time, WindowRule, Diff>,
    ) -> VecCollection<'s, Time, HitRow, Diff>;
}

/// A reading on its way to its windows: (group, rule, value, the entity's labels); exchanged
/// by group unless the group is its entity (already on its worker), and the labels its group
/// carries are worked out there ([`CarriedLabels`]).
pub(crate) type Placed = (EntityId, Arc<MatchedRule>, WindowValue, Arc<Labels>);

/// The open window of one (rule id, shape) and group ending at one time: the rule as the
/// first of its readings met it (a later edit of its levels keeps the window), its distinct
/// readings and aggregate so far, and the least of their labels (what the hit carries).
struct OpenWindow {
    rule: Arc<MatchedRule>,
    readings: WindowReadings,
    labels: Arc<Labels>,
    /// New readings kept here and not yet counted into the group's later windows, (time,
    /// value) ([`carry_forward`]).
    uncarried: Vec<(Time, f64)>,
}

/// Where a window is: its group's place among its window end's groups, and its own among the
/// group's windows (neither moves while the end is open).
#[derive(Clone, Copy)]
struct WindowAt {
    group: usize,
    window: usize,
}

/// A group's open windows ending at one time, one per rule id and shape: almost always one,
/// kept inline so that a group costs one allocation less.
type GroupWindows = SmallVec<[OpenWindow; 1]>;

/// The groups of one window end, in the order their first readings came: closed in that
/// order, a time's hits reach the state machine as their readings came (at 100k sensors read
/// in turn, already in key order, which its sort then checks in one pass) and near where their
/// keys were allocated, instead of in the hash's order.
type GroupsInArrivalOrder = IndexMap<EntityId, GroupWindows, FxBuildHasher>;

/// Everything ending at one time: the capability to emit at it, and per group its windows.
struct Ending {
    capability: Capability<Time>,
    groups: GroupsInArrivalOrder,
}

impl<'s> WindowAggregates<'s> for Events<'s> {
    fn window_hits(
        self,
        rules: VecCollection<'s, Time, WindowRule, Diff>,
    ) -> VecCollection<'s, Time, HitRow, Diff> {
        let matches = match_rules(&self, &rules.clone().map(RuleRow::Window));
        hits_of_matches(matches, rules)
    }
}

/// The hits of `rules`' windows over the rules' matches.
fn hits_of_matches<'s>(
    matches: Matches<'s>,
    rules: VecCollection<'s, Time, WindowRule, Diff>,
) -> VecCollection<'s, Time, HitRow, Diff> {
    let placed = matches.flat_map_placed(
        |(Match { rule, event, .. }, time, diff)| {
            let window = rule.row.as_window()?;
            let (group, entity) = if window.group_by == GroupBy::Entity {
                (event.entity, EntityId::default())
            } else {
                let group = window.group_by.name_of(&event.entity, &event.labels)?;
                (EntityId::from(group), event.entity)
            };
            let value: WindowValue = (event.value, event.time, entity);
            let placement = window.group_by.placement();
            Some((placement, ((group, rule, value, event.labels), time, diff)))
        },
        |((group, ..), _, _): &(Placed, Time, Diff)| entity_route(group),
    );
    // Each window meets its rule as of its end: an edited threshold applies to the windows
    // that end after the edit; a rule removed, or its shape edited, has none for them. Every
    // worker closes windows, so every worker sees every rule change.
    let rule_changes = rules.inner.broadcast();
    placed
        .binary_frontier_while_holding(
            rule_changes,
            Pipeline,
            Pipeline,
            "WindowAggregates",
            |_capability| {
                let mut ending: BTreeMap<Time, Ending> = BTreeMap::new();
                let mut changes: BTreeMap<Time, Vec<(WindowRule, Diff)>> = BTreeMap::new();
                // The window rules by their windows' key, as of the last change applied.
                let mut alarms: Table<WindowKey, Arc<MatchedRule>> = Table::default();
                // Groups in the last window end closed: the next ends' likely size, reserved
                // when they open rather than grown by doubling (at 100k sensors, moving and
                // rehashing every group several times per window end).
                let mut groups_closed = 0;
                let mut carried = CarriedLabels::default();
                // Windows that kept new readings since the last carry ([`carry_forward`]).
                let mut touched: Vec<(Time, WindowAt)> = Vec::new();
                move |(placed, placed_frontier), (rule_rows, rules_frontier), output| {
                    placed.for_each(|capability, data| {
                        for (placed, _, diff) in data.drain(..) {
                            // Occurrences are insertions; a retraction would be a reading
                            // taken back, which the sources never send.
                            if diff > 0 {
                                let at = (&capability, groups_closed);
                                let filed = file_reading(&mut ending, placed, &mut carried, at);
                                touched.extend(filed);
                            }
                        }
                    });
                    carry_forward(&mut ending, &mut touched, groups_closed);
                    rule_rows.for_each(|_capability, data| {
                        for (rule, time, diff) in data.drain(..) {
                            changes.entry(time).or_default().push((rule, diff));
                        }
                    });
                    // Rule changes and window ends in time order, a change before the windows
                    // ending at its time. A change is applied once no window ending before it
                    // can still come; a window is closed once its readings and its time's rule
                    // changes are all in.
                    loop {
                        let next_end = ending.first_key_value().map(|(end, _)| *end);
                        match changes.first_entry() {
                            Some(entry) if next_end.is_none_or(|end| *entry.key() <= end) => {
                                let time = *entry.key();
                                if rules_frontier.less_equal(&time)
                                    || placed_frontier.less_than(&time)
                                {
                                    break;
                                }
                                let mut applied = entry.remove();
                                consolidate(&mut applied);
                                for (rule, diff) in applied {
                                    // Each worker's own `Arc`s: every hit counts its alarm's,
                                    // and a count shared between workers would bounce between
                                    // their cores.
                                    let rule = Arc::new(MatchedRule::from(RuleRow::Window(rule)));
                                    alarms.update(WindowKey(Arc::clone(&rule)), rule, diff);
                                }
                            }
                            _ => {
                                let Some(end) = next_end else { break };
                                if placed_frontier.less_equal(&end)
                                    || rules_frontier.less_equal(&end)
                                {
                                    break;
                                }
                                let Some(Ending { capability, groups }) = ending.remove(&end)
                                else {
                                    break;
                                };
                                // One message for the end's hits (mostly one per group):
                                // the state machine then files them at once, not in
                                // buffer-sized pieces into a list growing by doubling.
                                groups_closed = groups.len();
                                let mut hits = Vec::with_capacity(groups.len());
                                for (group, windows) in groups {
                                    close(windows, group, end, &alarms, |hit| {
                                        hits.push((hit, end, 1));
                                    });
                                }
                                output.session(&capability).give_container(&mut hits);
                            }
                        }
                    }
                }
            },
        )
        .as_collection()
}

/// Files one reading, with the labels its group carries, in the window of its group that ends
/// first among those it belongs to; a window end that opens has room for `expected_groups`.
/// That window keeps the reading if it is new (module `readings`); a new reading of a window
/// with later ones waits there to be counted into them ([`carry_forward`]), and where that
/// window is comes back when it is the first to wait.
fn file_reading(
    ending: &mut BTreeMap<Time, Ending>,
    (group, matched, value, entity_labels): Placed,
    carried: &mut CarriedLabels,
    (capability, expected_groups): (&InputCapability<Time>, usize),
) -> Option<(Time, WindowAt)> {
    let rule = matched.row.as_window()?;
    let (OrderedFloat(value), time, entity) = value;
    let keeper = rule.window_ends(time).next()?;
    let labels = carried.of(rule.group_by, entity_labels);
    let groups = groups_ending_at(ending, keeper, expected_groups, |end| {
        capability.delayed(end, 0)
    });
    let hash = FxBuildHasher.hash_one(group.as_str());
    let filing = (&matched, rule);
    let (at, window) = window_in(groups, hash, filing, Cow::Owned(group), Cow::Owned(labels));
    let hopping = rule.window_ms > rule.hop_ms;
    if !window.readings.keep(entity, time, value) || !hopping {
        return None;
    }
    window.uncarried.push((time, value));
    (window.uncarried.len() == 1).then_some((keeper, at))
}

/// Counts the new readings each `touched` window kept into the later windows of its group they
/// belong to, opening those (with room for `expected_groups` groups in a new end).
///
/// A reading is kept by the first window it belongs to, which is open while a repeat of it can
/// still come. It used to be counted into its later windows as it came: per reading and later
/// window a window end's map, a group probe and a rule search (three more of each with a
/// two-minute window hopping every 30 s). Counted here, once per step, a later window is
/// looked up once per group and step and its readings counted in one pass; a step's work
/// stays a step's (counting a whole hop's readings when the window closed stalled alerts for
/// as long as that took).
fn carry_forward(
    ending: &mut BTreeMap<Time, Ending>,
    touched: &mut Vec<(Time, WindowAt)>,
    expected_groups: usize,
) {
    for (end, at) in touched.drain(..) {
        let Some(keeper) = ending.get_mut(&end) else {
            continue;
        };
        let Some((group, windows)) = keeper.groups.get_index_mut(at.group) else {
            continue;
        };
        let Some(window) = windows.get_mut(at.window) else {
            continue;
        };
        let readings = mem::take(&mut window.uncarried);
        let group = group.clone();
        let (matched, labels) = (Arc::clone(&window.rule), Arc::clone(&window.labels));
        let capability = keeper.capability.clone();
        let Some(rule) = matched.row.as_window() else {
            continue;
        };
        // The later windows: those of the latest reading after `end` (a reading's windows end
        // within a window length of it, so an earlier one's later windows are among them), a
        // hop apart.
        let Some(latest) = readings.iter().map(|(time, _)| *time).max() else {
            continue;
        };
        let mut later_ends = rule.window_ends(latest).filter(|later| *later > end);
        let Some(first) = later_ends.next() else {
            continue;
        };
        let last = later_ends.last().unwrap_or(first);
        let length = rule.window_ms.max(1);
        let hop = usize::try_from(rule.hop_ms.max(1)).unwrap_or(usize::MAX);
        let hash = FxBuildHasher.hash_one(group.as_str());
        for later in (first..=last).step_by(hop) {
            let groups =
                groups_ending_at(ending, later, expected_groups, |at| capability.delayed(at));
            let (group, labels) = (Cow::Borrowed(&group), Cow::Borrowed(&labels));
            let (_, counted) = window_in(groups, hash, (&matched, rule), group, labels);
            // The window ending at `later` covers [later - length, later).
            let start = later.saturating_sub(length);
            for &(time, value) in &readings {
                if start <= time && time < later {
                    counted.readings.count(value);
                }
            }
        }
    }
}

/// The groups of the windows ending at `end`, opened with room for `expected_groups` and
/// `capability(end)` if none were.
fn groups_ending_at(
    ending: &mut BTreeMap<Time, Ending>,
    end: Time,
    expected_groups: usize,
    capability: impl FnOnce(&Time) -> Capability<Time>,
) -> &mut GroupsInArrivalOrder {
    let slot = ending.entry(end).or_insert_with(|| Ending {
        capability: capability(&end),
        groups: GroupsInArrivalOrder::with_capacity_and_hasher(expected_groups, FxBuildHasher),
    });
    &mut slot.groups
}

/// The window of one reading's rule and group among `groups` (one window end's), opened if
/// there is none: `hash` is the group's; the group and the labels are copied only when
/// borrowed and kept; the window keeps the least labels of its readings.
fn window_in<'g>(
    groups: &'g mut GroupsInArrivalOrder,
    hash: u64,
    (matched, rule): (&Arc<MatchedRule>, &WindowRule),
    group: Cow<'_, EntityId>,
    labels: Cow<'_, Arc<Labels>>,
) -> (WindowAt, &'g mut OpenWindow) {
    // One probe, also for a new group (the first reading of each group in each window end):
    // looking it up and then inserting it cost two.
    let (group_at, windows) = match groups
        .raw_entry_mut_v1()
        .from_key_hashed_nocheck(hash, group.as_str())
    {
        RawEntryMut::Occupied(windows) => (windows.index(), windows.into_mut()),
        RawEntryMut::Vacant(vacant) => {
            let at = vacant.index();
            let new = GroupWindows::new();
            let (_, windows) = vacant.insert_hashed_nocheck(hash, group.into_owned(), new);
            (at, windows)
        }
    };
    let at = windows.iter().position(|w| {
        Arc::ptr_eq(&w.rule, matched)
            || w.rule.row.as_window().map(WindowRule::identity) == Some(rule.identity())
    });
    let window_at = at.unwrap_or(windows.len());
    let at = WindowAt {
        group: group_at,
        window: window_at,
    };
    if window_at == windows.len() {
        windows.push(OpenWindow {
            rule: Arc::clone(matched),
            readings: WindowReadings::new(rule.aggregate),
            labels: labels.into_owned(),
            uncarried: Vec::new(),
        });
        return (at, &mut windows[window_at]);
    }
    let window = &mut windows[window_at];
    // An entity's readings share its labels' `Arc`: compared only when another entity's (or
    // an edited registry row) comes in.
    if !Arc::ptr_eq(&window.labels, &labels) && *labels < window.labels {
        window.labels = labels.into_owned();
    }
    (at, window)
}

/// Closes a group's windows ending at `end`: one hit per window with a value and alarm present
/// as of `end`, passed to `emit`.
fn close(
    windows: GroupWindows,
    mut group: EntityId,
    end: Time,
    alarms: &Table<WindowKey, Arc<MatchedRule>>,
    mut emit: impl FnMut(HitRow),
) {
    let mut windows = windows.into_iter().peekable();
    while let Some(window) = windows.next() {
        let last_window = windows.peek().is_none();
        let Some((key, result, labels)) = aggregate(window) else {
            continue;
        };
        let mut present = alarms
            .rows(&key)
            .iter()
            .filter(|(_, count)| *count > 0)
            .peekable();
        while let Some((rule, _)) = present.next() {
            let alert = |group| (Arc::clone(&rule.id), group);
            if present.peek().is_some() {
                let hit = RuleHit::new(end, result, Arc::clone(&labels), Arc::clone(&rule.alarm));
                emit((alert(group.clone()), hit));
                continue;
            }
            // The window's last hit takes its labels, and the group's last its key, without a
            // copy: at 100k sensors an entity's labels are long out of cache when its window
            // closes, and counting one more reference to them cost a cache miss per window.
            let group = match last_window {
                true => mem::take(&mut group),
                false => group.clone(),
            };
            emit((
                alert(group),
                RuleHit::new(end, result, labels, Arc::clone(&rule.alarm)),
            ));
            break;
        }
    }
}

/// A window rule as the key of its windows: two are the same key when they have the same id
/// and shape ([`WindowRule::identity`]), whatever their levels, hold, severity or summary.
#[derive(Clone, Debug)]
struct WindowKey(Arc<MatchedRule>);

impl WindowKey {
    fn identity(&self) -> Option<WindowIdentity<'_>> {
        self.0.row.as_window().map(WindowRule::identity)
    }
}

impl PartialEq for WindowKey {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0) || self.identity() == other.identity()
    }
}

impl Eq for WindowKey {}

impl PartialOrd for WindowKey {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for WindowKey {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        if Arc::ptr_eq(&self.0, &other.0) {
            return std::cmp::Ordering::Equal;
        }
        self.identity().cmp(&other.identity())
    }
}

impl std::hash::Hash for WindowKey {
    // The id alone: keys with the same identity have the same id, and a window's alarm lookup
    // hashes its key once per closed window (the whole identity holds the rule's label scope).
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.identity().map(|(id, ..)| id).hash(state);
    }
}

/// One window at its end: its key, its aggregate over the distinct readings (identical ones
/// count once) and the least of their labels; `None` when the aggregate has no value.
fn aggregate(window: OpenWindow) -> Option<(WindowKey, f64, Arc<Labels>)> {
    let result = window.readings.aggregate()?;
    Some((WindowKey(window.rule), result, window.labels))
}

/// The registry entry: the windows of the window rules' matches; a window's hits are made on
/// its group's worker, the alert's entity's.
pub(crate) fn hits<'s>(
    sources: &Sources<'s>,
    rules: VecCollection<'s, Time, RuleRow, Diff>,
) -> KindHits<'s> {
    let rules = rules.flat_map(|row| row.as_window().cloned());
    KindHits::on_entity_worker(hits_of_matches(sources.matches.clone(), rules))
}
