//! The temporal filter with a one-millisecond window: each event is retracted again one tick
//! after its time, so a collection of events holds only the events at the current frontier.
//!
//! Each event is stamped with its event time (it becomes `(event, time)`), so two identical
//! events one millisecond apart stay two events instead of the retraction of the first
//! cancelling the second.
//!
//! Downstream joins and the state machine then see each event exactly once (a `+1` at its
//! event time), and arrangements compact to nothing once the frontier has moved on: memory
//! grows with live keys, not with events seen.

use differential_dataflow::collection::vec;
use differential_dataflow::{AsCollection, VecCollection};
use timely::dataflow::operators::vec::Map;

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

/// Adds `rows` as instants to `out`, the updates a frontier-driven operator emits: each `+1`
/// at `time` and `-1` one tick later. For the operators that evaluate timers and readings
/// themselves (absence, report timers) and whose rows the state machine reads once.
pub(crate) fn push_instants<D: Clone>(
    out: &mut Vec<(D, Time, Diff)>,
    time: Time,
    rows: impl IntoIterator<Item = D>,
) {
    let next = time.saturating_add(1);
    for row in rows {
        out.push((row.clone(), time, 1));
        out.push((row, next, -1));
    }
}

#[cfg(test)]
mod tests {
    use super::push_instants;

    /// Each row pushed at its time comes out as `+1` there and `-1` one tick later, after what
    /// the list held; nothing for no rows.
    #[test]
    fn pushed_rows_are_retracted_one_tick_later() {
        let mut out = vec![("x", 1, 1)];
        push_instants(&mut out, 3, ["a", "b"]);
        push_instants(&mut out, 7, []);
        assert_eq!(
            out,
            vec![
                ("x", 1, 1),
                ("a", 3, 1),
                ("a", 4, -1),
                ("b", 3, 1),
                ("b", 4, -1)
            ]
        );
    }
}
