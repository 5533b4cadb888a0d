//! Matching readings with rules: enriched reading instants are arranged once by
//! (domain, metric) and every rule kind joins its rules with that one arrangement, keeping the
//! readings in each rule's label scope.

use citybrain_model::{Domain, Metric};
use differential_dataflow::operators::arrange::{Arranged, TraceAgent};
use differential_dataflow::trace::implementations::ValSpine;
use differential_dataflow::{ExchangeData, VecCollection};

use crate::enrich::{Enrich, Event};
use crate::instant::IntoInstants;
use crate::{Diff, ReadingRow, RegistryRow, Time};

/// Reading instants with their entity's labels, arranged by (domain, metric): built once,
/// shared by every rule kind.
pub type Events<'s> = Arranged<'s, TraceAgent<ValSpine<(Domain, Metric), Event, Time, Diff>>>;

/// The shared event arrangement: readings (each `+1` at its event time) as instants, enriched
/// with reference data.
pub fn events<'s>(
    readings: VecCollection<'s, Time, ReadingRow, Diff>,
    registry: VecCollection<'s, Time, RegistryRow, Diff>,
) -> Events<'s> {
    readings.into_instants().enrich(registry).arrange_by_key()
}

/// Joins rules keyed by the (domain, metric) they watch with the events.
pub trait MatchEvents<'s, R> {
    /// One `(rule, event)` per event of the rule's (domain, metric) for which `selects` holds
    /// (usually: the entity is in the rule's scope). The output is an instant per match.
    fn match_events<F>(
        self,
        events: &Events<'s>,
        selects: F,
    ) -> VecCollection<'s, Time, (R, Event), Diff>
    where
        F: Fn(&R, &Event) -> bool + 'static;
}

impl<'s, R: ExchangeData> MatchEvents<'s, R>
    for VecCollection<'s, Time, ((Domain, Metric), R), Diff>
{
    fn match_events<F>(
        self,
        events: &Events<'s>,
        selects: F,
    ) -> VecCollection<'s, Time, (R, Event), Diff>
    where
        F: Fn(&R, &Event) -> bool + 'static,
    {
        self.join_core(events.clone(), move |_, rule, event| {
            selects(rule, event).then(|| (rule.clone(), event.clone()))
        })
    }
}
