//! The temporal filter for longer windows: an event that is an instant (present during
//! `[t, t + 1)`, see [`crate::instant`]) is moved to be present during another interval
//! `[from, until)` with `t <= from < until`, e.g. the history of the last 24 hours
//! (`[t + 1, t + 24 h + 1)`) or the end of the window it belongs to (`[end, end + 1)`).
//!
//! The move is linear (each update on its own): the insertion at `t` moves to
//! `from`, the retraction at `t + 1` to `until`, and any update at a later time `t + 1 + d`
//! (e.g. the join of the instant with a reference-data change that cancels out) to
//! `until + d`, so whatever cancelled before still cancels. A collection built this way holds
//! only what is inside its windows: memory grows with live keys and window lengths, not with
//! events seen.
//!
//! Moved updates are held back in the operator until the input frontier reaches their new
//! time. Handed on at once, they would wait in the merge batcher of the next arrangement,
//! which merges everything it holds again at every frontier advance: with a minute of
//! readings waiting for a window's end, each step cost time linear in that minute
//! (`benches/README.md` has the profile). Here they wait in a map by time instead.

use std::collections::BTreeMap;

use differential_dataflow::collection::vec;
use differential_dataflow::{AsCollection, Data, VecCollection};
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::Capability;

use crate::woken_while_holding::WokenWhileHolding;
use crate::{Diff, Time};

/// Where an instant goes: its event time and the interval it is to be present in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Span {
    /// The event time the instant was stamped with (its insertion is at this time).
    pub at: Time,
    /// First time it is present; at least `at` (earlier values are raised to `at`).
    pub from: Time,
    /// First time it is no longer present; after `from` (earlier values are raised to `from + 1`).
    pub until: Time,
}

impl Span {
    /// The new time of an update at `time` of an instant with this span.
    pub fn retime(&self, time: Time) -> Time {
        let from = self.from.max(self.at);
        let until = self.until.max(from.saturating_add(1));
        if time <= self.at {
            from
        } else {
            until.saturating_add(time - self.at - 1)
        }
    }
}

/// Moves instants to intervals.
pub trait During<'s, D> {
    /// Each instant of `d` moves to the interval `span(&d)` gives.
    ///
    /// ```
    /// use citybrain_operators::during::{During, Span};
    /// use citybrain_operators::instant::IntoInstants;
    /// use differential_dataflow::input::Input;
    ///
    /// timely::example(|scope| {
    ///     let (mut input, events) = scope.new_collection::<&'static str, isize>();
    ///     // Present for the 10 ms after the event, not at the event itself.
    ///     events
    ///         .into_instants()
    ///         .during(|(_, t)| Span { at: *t, from: t + 1, until: t + 11 })
    ///         .inspect(|(_, time, diff)| {
    ///             assert_eq!((*time, *diff), if *diff > 0 { (6, 1) } else { (16, -1) });
    ///         });
    ///     input.advance_to(5);
    ///     input.insert("co reading");
    /// });
    /// ```
    fn during<F>(self, span: F) -> VecCollection<'s, Time, D, Diff>
    where
        F: FnMut(&D) -> Span + 'static;
}

impl<'s, D: Data> During<'s, D> for vec::Collection<'s, Time, D, Diff> {
    fn during<F>(self, mut span: F) -> VecCollection<'s, Time, D, Diff>
    where
        F: FnMut(&D) -> Span + 'static,
    {
        self.inner
            .unary_frontier_while_holding(Pipeline, "During", move |_| {
                // Moved updates by their new time, not yet reached by the input frontier.
                let mut future: BTreeMap<Time, Vec<(D, Time, Diff)>> = BTreeMap::new();
                // A capability no later than every time in `future` (none when it is empty).
                let mut held: Option<Capability<Time>> = None;
                move |(input, frontier), output| {
                    input.for_each(|capability, data| {
                        // New times are never before the old ones, so the message's least
                        // capability covers them.
                        let Some(least) = capability.retain_least(output.output_index()) else {
                            return;
                        };
                        if held.as_ref().is_none_or(|h| least.time() < h.time()) {
                            held = Some(least);
                        }
                        for (datum, time, diff) in data.drain(..) {
                            let time = span(&datum).retime(time).max(time);
                            future.entry(time).or_default().push((datum, time, diff));
                        }
                    });
                    let Some(capability) = held.as_mut() else {
                        return;
                    };
                    let mut ready = Vec::new();
                    while let Some(entry) = future.first_entry() {
                        if frontier.less_than(entry.key()) {
                            break;
                        }
                        ready.append(&mut entry.remove());
                    }
                    if !ready.is_empty() {
                        output.session(&*capability).give_container(&mut ready);
                    }
                    match future.keys().next() {
                        Some(next) => capability.downgrade(next),
                        None => held = None,
                    }
                }
            })
            .as_collection()
    }
}
