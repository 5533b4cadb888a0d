//! Active alerts as a collection: a firing transition inserts the alert's row at its event
//! time, the matching resolved transition retracts exactly that row. KPIs such as "faces in
//! alarm" or "animals with fever" are then plain differential aggregates over it.

use std::collections::{BTreeMap, HashMap};

use citybrain_model::{AlertTransition, Labels, TransitionState};
use differential_dataflow::{AsCollection, VecCollection};
use ordered_float::OrderedFloat;
use timely::dataflow::StreamVec;
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::Capability;
use timely::dataflow::operators::generic::Operator;

use crate::entity_route;
use crate::kpi::KpiRow;
use crate::{Diff, Time};

/// Transitions of one time, held until the frontier passes it, with the capability to emit at it.
type Waiting = (Capability<Time>, Vec<AlertTransition>);

/// Turns alert transitions into the collection of active alerts.
pub trait ActiveAlerts<'s> {
    /// One row per firing alert: its labels (entity, rule, severity, metric, ...) and the value
    /// that made it fire.
    fn active_alerts(self) -> VecCollection<'s, Time, KpiRow, Diff>;
}

impl<'s> ActiveAlerts<'s> for StreamVec<'s, Time, AlertTransition> {
    fn active_alerts(self) -> VecCollection<'s, Time, KpiRow, Diff> {
        let exchange = Exchange::new(|t: &AlertTransition| entity_route(&t.entity));
        self.unary_frontier(exchange, "ActiveAlerts", |_capability, _info| {
            let mut waiting: BTreeMap<Time, Waiting> = BTreeMap::new();
            let mut active: HashMap<(String, String), KpiRow> = HashMap::new();
            move |(input, frontier), output| {
                input.for_each(|capability, data| {
                    let Some(&time) = capability.least() else {
                        return;
                    };
                    waiting
                        .entry(time)
                        .or_insert_with(|| (capability.delayed(&time, 0), Vec::new()))
                        .1
                        .append(data);
                });
                while let Some(entry) = waiting.first_entry() {
                    let time = *entry.key();
                    if frontier.less_equal(&time) {
                        break;
                    }
                    let (capability, transitions) = entry.remove();
                    let mut session = output.session(&capability);
                    for t in transitions {
                        let key = (t.rule.clone(), t.entity.clone());
                        if let Some(previous) = active.remove(&key) {
                            session.give((previous, time, -1));
                        }
                        if t.state == TransitionState::Firing {
                            let labels: Labels = t.labels.into_iter().collect();
                            let row = (labels, OrderedFloat(t.value));
                            session.give((row.clone(), time, 1));
                            active.insert(key, row);
                        }
                    }
                }
            }
        })
        .as_collection()
    }
}
