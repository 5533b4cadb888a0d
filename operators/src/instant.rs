//! The temporal filter with a one-millisecond window: each update is retracted again one tick
//! after its time, so a collection of events holds only the events at the current frontier.
//!
//! Downstream joins and the state machine then see each event exactly once (a `+1` at its
//! event time), and arrangements compact to nothing once the frontier has moved on: memory
//! grows with live keys, not with events seen.

use differential_dataflow::VecCollection;
use differential_dataflow::collection::vec;

use crate::{Diff, Time};

/// Turns a collection of events into a collection of instants.
pub trait IntoInstants<'s, D> {
    /// Every `(d, t, +r)` is followed by `(d, t + 1, -r)`.
    ///
    /// ```
    /// use citybrain_operators::instant::IntoInstants;
    /// use differential_dataflow::input::Input;
    ///
    /// timely::example(|scope| {
    ///     let (mut input, events) = scope.new_collection::<&'static str, isize>();
    ///     events.into_instants().inspect(|x| assert!(x.1 == 5 || x.1 == 6));
    ///     input.advance_to(5);
    ///     input.insert("ch4 reading");
    /// });
    /// ```
    fn into_instants(self) -> VecCollection<'s, Time, D, Diff>;
}

impl<'s, D: differential_dataflow::Data> IntoInstants<'s, D>
    for vec::Collection<'s, Time, D, Diff>
{
    fn into_instants(self) -> VecCollection<'s, Time, D, Diff> {
        let retractions = self.clone().delay(|t| t.saturating_add(1)).negate();
        self.concat(retractions)
    }
}
