//! The rule kinds: each turns the shared reading events and its rules into [`HitRow`]s, the
//! derived values the one `for`/hysteresis state machine ([`crate::hysteresis`]) works on.
//!
//! Each kind is one file: its rule type (a variant of [`RuleRow`]) and its operator, an
//! extension trait on [`crate::matching::Events`] for use on its own. [`KINDS`] lists them;
//! [`crate::rule_alerts`] concatenates the hits of all of them. Adding a kind is one file
//! here, one variant of [`RuleRow`] and one line in [`KINDS`]. A kind gets the shared
//! [`Sources`]: its rules met by readings, and the registry for kinds that need more than
//! labels ([`absence`] takes each entity's cadence from it and emits evaluations from
//! frontier-driven timers; the state machine does the rest). A kind also says whether its
//! hits are on their alert entity's worker already ([`KindHits`]), which spares them an
//! exchange.
//!
//! | kind | evaluated | derived value | alert entity |
//! |---|---|---|---|
//! | [`threshold`] | at each reading | the reading | the sensor/device |
//! | [`window`] | at each window's end | count/sum/avg/min/max/pNN of the window | the entity or group |
//! | [`rate_of_rise`] | at each reading | change per minute since the first reading in the window | the sensor/device |
//! | [`baseline`] | at each reading | reading / trailing mean | the sensor/device |
//! | [`correlation`] | at each reading of either metric | both conditions held (as-of join) | the group |
//! | [`absence`] | when a silence exceeds `cadences` × the entity's cadence, and at the reading ending it; with `stall_after`, also when a Kafka partition of its domain delivers nothing for that long, and when it is heard from again ([`crate::stall`]) | silent (1) or not (0); reports the silence in seconds | the sensor/device; `topic/partition` for a stall |
//! | [`report_deadline`] | when a citizen report is unresolved its category's `deadline` after `created` or its last escalation, at each step of the escalation ladder, and when that ends | overdue (1) or not (0); reports the hours since the timer started | the report |
//! | [`follow_up`] | when a resolved report's return visit falls due without a `followed_up` event, and when that ends | overdue (1) or not (0); reports the hours since resolution | the report |

pub mod absence;
pub mod baseline;
pub mod correlation;
pub mod follow_up;
pub mod rate_of_rise;
pub mod report_deadline;
pub mod threshold;
mod trailing;
pub mod window;

use citybrain_model::Domain;
use differential_dataflow::VecCollection;

use crate::hit::HitRow;
use crate::matching::Matches;
use crate::report_state::ReportEventRow;
use crate::rule::RuleRow;
use crate::{Diff, RegistryRow, Time};

/// What every kind builds on, built once per dataflow.
#[derive(Clone)]
pub struct Sources<'s> {
    /// The kind's rules met by readings (with their entity's labels), as they occur, on the
    /// worker of their entity ([`crate::matching::match_by_kind`]).
    pub matches: Matches<'s>,
    /// The registry (labels and expected cadence per entity): what a kind that looks at
    /// silences, such as absence timers, needs besides the events.
    pub registry: VecCollection<'s, Time, RegistryRow, Diff>,
    /// Citizen report lifecycle events, each `+1` at its event time (on the citizen clock):
    /// what report kinds ([`report_deadline`], [`follow_up`]) time.
    pub reports: VecCollection<'s, Time, ReportEventRow, Diff>,
    /// What the Kafka source says about its reading partitions (when each was heard from,
    /// which one each entity's readings come from): what absence rules with a `stall_after`
    /// time ([`crate::stall`]). Empty where there are no partitions (file replay).
    pub partitions: VecCollection<'s, Time, crate::stall::PartitionRow, Diff>,
    /// How long the report kinds remember a report with neither a timer nor a firing alert
    /// after its last event, milliseconds of event time.
    pub report_retention_ms: Time,
}

impl<'s> Sources<'s> {
    /// The citizen grids of the registry: grid id -> its labels (`village`, `town`,
    /// `district`), what the report kinds add to their alerts.
    pub fn citizen_grids(
        &self,
    ) -> VecCollection<'s, Time, (String, citybrain_model::Labels), Diff> {
        self.registry.clone().flat_map(|((domain, grid), info)| {
            (domain == Domain::Citizen).then_some((grid.to_string(), info.labels))
        })
    }
}

/// Builds the hits of one kind from the shared sources and the whole rules collection (each
/// kind picks its own rows). The state machine reads only a hit's insertion at its time, so a
/// kind may give its hits as instants or as occurrences (never retracted).
pub type HitsOf = for<'s> fn(&Sources<'s>, VecCollection<'s, Time, RuleRow, Diff>) -> KindHits<'s>;

/// A kind's hits, and whether each is on its alert entity's worker already.
pub struct KindHits<'s> {
    /// The hits.
    pub hits: VecCollection<'s, Time, HitRow, Diff>,
    /// True when each hit is on the worker [`crate::entity_route`] picks for its alert's
    /// entity: made where its match was (matches are on their entity's worker), or behind
    /// the kind's own exchange by the alert's entity. The state machine then reads the hits
    /// where they are; otherwise it exchanges them, which on more than one worker moves every
    /// hit once more.
    pub on_entity_worker: bool,
}

impl<'s> KindHits<'s> {
    /// Hits on the worker of their alert's entity.
    pub fn on_entity_worker(hits: VecCollection<'s, Time, HitRow, Diff>) -> Self {
        KindHits {
            hits,
            on_entity_worker: true,
        }
    }

    /// Hits on any worker: the state machine exchanges them by their alert's entity.
    pub fn anywhere(hits: VecCollection<'s, Time, HitRow, Diff>) -> Self {
        KindHits {
            hits,
            on_entity_worker: false,
        }
    }
}

/// The kinds that follow the citizen-report clock (the others follow the sensor clock).
pub const CITIZEN_KINDS: &[&str] = &["report_deadline", "follow_up"];

/// Every rule kind by its name in rule files.
pub const KINDS: &[(&str, HitsOf)] = &[
    ("threshold", threshold::hits),
    ("window", window::hits),
    ("rate_of_rise", rate_of_rise::hits),
    ("baseline", baseline::hits),
    ("correlation", correlation::hits),
    ("absence", absence::hits),
    ("report_deadline", report_deadline::hits),
    ("follow_up", follow_up::hits),
];
