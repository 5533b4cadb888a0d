//! The temporal filter with a one-millisecond window: each event is retracted again one tick
//! after its time, so a collection of events holds only the events at the current frontier.
//!
//! Each event is stamped with its event time (it becomes `(event, time)`), so two identical
//! events one millisecond apart stay two events instead of the retraction of the first
//! cancelling the second.
//!
//! Downstream joins and the state machine then see each event exactly once (a `+1` at its
//! event time), and arrangements compact to nothing once the frontier has moved on: memory
//! grows with live keys, not with events seen. [`crate::during`] moves such instants to the
//! intervals of longer windows.

use differential_dataflow::collection::vec;
use differential_dataflow::{AsCollection, VecCollection};
use timely::dataflow::operators::Capability;
use timely::dataflow::operators::vec::Map;

use crate::woken_while_holding::VecSession;
use crate::{Diff, Time};

/// Turns a collection of events into a collection of instants.
pub trait IntoInstants<'s, D> {
    /// Every `(d, t, +r)` becomes `((d, t), t, +r)` followed by `((d, t), t + 1, -r)`.
    ///
    /// ```
    /// use citybrain_operators::instant::IntoInstants;
    /// use differential_dataflow::input::Input;
    ///
    /// timely::example(|scope| {
    ///     let (mut input, events) = scope.new_collection::<&'static str, isize>();
    ///     events
    ///         .into_instants()
    ///         .inspect(|((event, stamp), time, diff)| {
    ///             assert_eq!((*event, *stamp), ("ch4 reading", 5));
    ///             assert_eq!(*diff, if *time == 5 { 1 } else { -1 });
    ///         });
    ///     input.advance_to(5);
    ///     input.insert("ch4 reading");
    /// });
    /// ```
    fn into_instants(self) -> VecCollection<'s, Time, (D, Time), Diff>;
}

impl<'s, D: differential_dataflow::Data> IntoInstants<'s, D>
    for vec::Collection<'s, Time, D, Diff>
{
    fn into_instants(self) -> VecCollection<'s, Time, (D, Time), Diff> {
        let stamped = self
            .inner
            .map(|(data, time, diff)| ((data, time), time, diff))
            .as_collection();
        let retractions = stamped.clone().delay(|t| t.saturating_add(1)).negate();
        stamped.concat(retractions)
    }
}

/// Gives `rows` from a frontier-driven operator as instants: each `+1` at `time` (which
/// `capability` is for) and `-1` one tick later. For the operators that evaluate timers and
/// readings themselves (absence, report timers) and whose rows the state machine reads once.
pub(crate) fn give_instants<D: Clone + 'static>(
    output: &mut VecSession<'_, Time, (D, Time, Diff)>,
    capability: &Capability<Time>,
    time: Time,
    rows: Vec<D>,
) {
    if rows.is_empty() {
        return;
    }
    output
        .session(capability)
        .give_iterator(rows.iter().map(|row| (row.clone(), time, 1)));
    let next = time.saturating_add(1);
    output
        .session(&capability.delayed(&next))
        .give_iterator(rows.into_iter().map(|row| (row, next, -1)));
}

#[cfg(test)]
mod tests {
    use timely::dataflow::channels::pact::Pipeline;
    use timely::dataflow::operators::capture::Extract;
    use timely::dataflow::operators::{Capture, ToStream};

    use super::give_instants;
    use crate::woken_while_holding::WokenWhileHolding;

    /// Each row given at its time comes out as `+1` there and `-1` one tick later; nothing
    /// comes out for an empty batch.
    #[test]
    fn given_rows_are_retracted_one_tick_later() {
        let captured = timely::example(|scope| {
            vec![(3u64, vec!["a", "b"]), (7, vec![])]
                .to_stream(scope)
                .unary_frontier_while_holding(Pipeline, "GiveInstants", |_capability| {
                    move |(input, _frontier), output| {
                        input.for_each(|capability, data: &mut Vec<(u64, Vec<&str>)>| {
                            for (time, rows) in data.drain(..) {
                                let capability = capability.delayed(&time, 0);
                                give_instants(output, &capability, time, rows);
                            }
                        });
                    }
                })
                .capture()
        });
        let mut got: Vec<_> = captured
            .extract()
            .into_iter()
            .flat_map(|(_, data)| data)
            .collect();
        got.sort();
        assert_eq!(
            got,
            vec![("a", 3, 1), ("a", 4, -1), ("b", 3, 1), ("b", 4, -1)]
        );
    }
}
