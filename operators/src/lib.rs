//! citybrain's dataflow operators: timely + differential building blocks that keep every rule
//! incrementally up to date in event time.
//!
//! Each operator is one extension trait in one file:
//! - [`instant::IntoInstants`]: a stream of events as a collection that holds each event for one
//!   millisecond (the temporal-filter pattern with the shortest window), so joins see every
//!   event without the collection growing with the history.
//! - [`lookup::LookupAsOf`]: a half join: events looked up in a slowly changing table as of
//!   their time, keeping only the table as state.
//! - [`enrich::Enrich`]: attaches reference-data labels (mine, face, ...) to readings.
//! - [`matching::match_by_kind`]: looks up each enriched reading's rules, for every kind at once,
//!   each match straight into its kind's stream ([`lookup::LookupAsOf::lookup_as_of_into_parts`]).
//! - one per rule kind in [`kinds`] (threshold, window, rate of rise, baseline, correlation,
//!   absence, report deadline, follow-up): each turns events and its rules into [`hit::RuleHit`]s, a derived value per
//!   (rule, alert entity, event time).
//! - [`group_aggregate::AggregateByGroup`]: one number per group of KPI points (an order
//!   statistic, a distinct count), each group's live rows kept in place instead of arranged.
//! - [`windowed_presence::WindowedPresence`]: whether each row of an event stream occurred
//!   within a trailing window, as its starts and ends (for distinct counts over a window).
//! - [`place::FlatMapPlaced`]: a flat map that exchanges only the records not on their key's
//!   worker already (a window or correlation grouped by entity).
//! - [`overdue::MarkOverdue`]: marks citizen report rows overdue while a deadline alert about
//!   the report fires.
//! - [`stall::PartitionStalls`]: the Kafka partitions that stopped delivering (`ingest
//!   stalled`), and the entities they carry, for absence rules with a `stall_after`.
//! - [`hysteresis::HoldAndHysteresis`]: the per-(rule, entity) `for`/hysteresis state machine
//!   every kind feeds, a frontier-driven timely operator that emits alert transitions.
//!
//! [`rule_alerts`] assembles them; [`reference`](mod@reference) is a plain-loop implementation the
//! operators are tested against.
//!
//! Timestamps are event time in epoch milliseconds ([`Time`]).

pub mod active_alerts;
mod agenda;
mod by_address;
mod earliest;
pub mod enrich;
pub mod group_aggregate;
pub mod hit;
pub mod hysteresis;
pub mod instant;
pub mod kinds;
pub mod kpi;
pub mod latest;
pub mod lookup;
pub mod matching;
pub mod overdue;
mod pending;
pub mod place;
pub mod reference;
pub mod report_state;
pub mod report_timers;
pub mod rule;
pub mod stall;
pub mod windowed_presence;
pub mod woken_while_holding;

use std::sync::Arc;

use citybrain_model::{AlertTransition, Domain, EntityInfo, Metric};
use differential_dataflow::VecCollection;
use ordered_float::OrderedFloat;
use timely::dataflow::StreamVec;

pub use ordered_float;

/// Logical time of every dataflow: event time, epoch milliseconds.
pub type Time = u64;

/// Difference type of every collection.
pub type Diff = isize;

/// Identifies an entity within its domain: (domain, sensor/device/grid id).
pub type EntityKey = (Domain, EntityId);

pub use citybrain_model::EntityId;

/// Where an entity's state lives: the hash every exchange keyed by an entity (or an alert
/// entity) routes by. One hash for all of them keeps a reading, its rule hits, its per-entity
/// windows and its alerts on the worker that enriched it, so they never cross to another
/// worker (or, across processes, get serialized) after the first exchange. The domain is left
/// out: a rule's alert key has its entity but not always its domain.
pub fn entity_route(entity: &str) -> u64 {
    use differential_dataflow::Hashable;
    entity.hashed()
}

/// A reading as a collection row: entity -> (metric, value).
pub type ReadingRow = (EntityKey, (Metric, OrderedFloat<f64>));

/// A registry row: entity -> what we know about it.
pub type RegistryRow = (EntityKey, EntityInfo);

/// How long the citizen-report operators remember a report that needs nothing more (no timer,
/// no firing alert) after its last event, by default: 7 days of event time, the default
/// `[recovery] citizen_history`.
pub const DEFAULT_REPORT_RETENTION_MS: Time = 7 * 24 * 3_600_000;

/// Builds the pipeline of every rule kind: readings (each present at its event time only)
/// joined with reference data and rules, and citizen report events, each kind's derived values
/// ([`kinds::KINDS`]), then the `for`/hysteresis state machine.
///
/// `readings` must hold each reading as `+1` at its event time; [`instant::IntoInstants`] turns
/// that into an instant so nothing accumulates. `reports` holds each citizen report event as
/// `+1` at its event time (on the citizen clock). `rules` holds one row per rule; a reload
/// feeds the difference between the old and the new rows.
///
/// Each kind has its own state machine (each rule belongs to one kind, so this is the same
/// per-(rule, entity) state machine): a kind waits only for the inputs it reads, so the
/// minutes of lateness allowed for citizen reports never delay a sensor alert.
pub fn rule_alerts<'s>(
    readings: VecCollection<'s, Time, ReadingRow, Diff>,
    registry: VecCollection<'s, Time, RegistryRow, Diff>,
    reports: VecCollection<'s, Time, report_state::ReportEventRow, Diff>,
    rules: VecCollection<'s, Time, rule::RuleRow, Diff>,
) -> StreamVec<'s, Time, AlertTransition> {
    use timely::dataflow::operators::Concat;

    let (sensor, citizen) = rule_alerts_by_clock(readings, registry, reports, rules);
    sensor.concat(citizen)
}

/// [`rule_alerts`] split by clock: (transitions of the sensor kinds, transitions of the
/// citizen-report kinds). Consumers that must follow the sensor clock (live KPIs over active
/// alerts) take the first stream only, so report lateness never holds them back.
pub fn rule_alerts_by_clock<'s>(
    readings: VecCollection<'s, Time, ReadingRow, Diff>,
    registry: VecCollection<'s, Time, RegistryRow, Diff>,
    reports: VecCollection<'s, Time, report_state::ReportEventRow, Diff>,
    rules: VecCollection<'s, Time, rule::RuleRow, Diff>,
) -> (
    StreamVec<'s, Time, AlertTransition>,
    StreamVec<'s, Time, AlertTransition>,
) {
    let partitions = no_partitions(&rules);
    rule_alerts_by_clock_seeded(
        matching::events(readings, registry.clone()),
        registry,
        reports,
        partitions,
        rules,
        Default::default(),
        DEFAULT_REPORT_RETENTION_MS,
    )
}

/// An empty partitions collection (no stall tracking), in the scope of `rules`.
pub fn no_partitions<'s>(
    rules: &VecCollection<'s, Time, rule::RuleRow, Diff>,
) -> VecCollection<'s, Time, stall::PartitionRow, Diff> {
    rules.clone().flat_map(|_| None)
}

/// [`rule_alerts_by_clock`] after a restart: the alert keys in `seed` start as firing (see
/// [`hysteresis::FiringSeed`]); the citizen-report kinds forget a report that needs nothing
/// more `report_retention_ms` after its last event. `partitions` is what the Kafka source
/// says about its reading partitions ([`stall::PartitionRow`]; [`no_partitions`] without
/// one), what absence rules with a `stall_after` time.
///
/// Readings come enriched ([`matching::events`] of the readings and `registry`), so other
/// readers of the enriched readings (the KPIs) share them.
#[allow(clippy::too_many_arguments)] // every input of the dataflow, passed once
pub fn rule_alerts_by_clock_seeded<'s>(
    events: matching::Events<'s>,
    registry: VecCollection<'s, Time, RegistryRow, Diff>,
    reports: VecCollection<'s, Time, report_state::ReportEventRow, Diff>,
    partitions: VecCollection<'s, Time, stall::PartitionRow, Diff>,
    rules: VecCollection<'s, Time, rule::RuleRow, Diff>,
    seed: hysteresis::FiringSeed,
    report_retention_ms: Time,
) -> (
    StreamVec<'s, Time, AlertTransition>,
    StreamVec<'s, Time, AlertTransition>,
) {
    use timely::dataflow::operators::Concatenate;

    let scope = rules.scope();
    let matched = kinds_matches(&events, &rules);
    let (mut sensor, mut citizen) = (Vec::new(), Vec::new());
    for ((name, hits_of), matches) in kinds::KINDS.iter().zip(matched) {
        let sources = kinds::Sources {
            matches,
            registry: registry.clone(),
            reports: reports.clone(),
            partitions: partitions.clone(),
            report_retention_ms,
        };
        let kinds::KindHits {
            hits,
            on_entity_worker,
        } = hits_of(&sources, rules.clone());
        let kind_rules = rules_of_kind(&rules, name);
        let transitions =
            hysteresis::hold_and_hysteresis(hits, kind_rules, Arc::clone(&seed), on_entity_worker);
        if kinds::CITIZEN_KINDS.contains(name) {
            citizen.push(transitions);
        } else {
            sensor.push(transitions);
        }
    }
    (
        scope.clone().concatenate(sensor),
        scope.concatenate(citizen),
    )
}

/// The matches of each kind of [`kinds::KINDS`], in its order ([`matching::match_by_kind`]).
fn kinds_matches<'s>(
    events: &matching::Events<'s>,
    rules: &VecCollection<'s, Time, rule::RuleRow, Diff>,
) -> Vec<matching::Matches<'s>> {
    let names = kinds::KINDS.iter().map(|(name, _)| *name).collect();
    matching::match_by_kind(events, rules, names)
}

/// The rows of one kind: what its state machine watches for removed rules (a rule whose kind
/// changed is removed from its old kind).
fn rules_of_kind<'s>(
    rules: &VecCollection<'s, Time, rule::RuleRow, Diff>,
    kind: &'static str,
) -> VecCollection<'s, Time, rule::RuleRow, Diff> {
    rules.clone().filter(move |row| row.kind() == kind)
}

#[cfg(test)]
mod tests;
