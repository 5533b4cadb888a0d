//! One capability at the earliest time an operator still owes output for, instead of one per
//! buffered time.
//!
//! Frontier-driven operators buffer their input by time until the frontier passes it. Readings
//! carry their own event times (milliseconds), so one poll of Kafka brings hundreds of distinct
//! times, and a capability per buffered time made timely track each of them: created, published,
//! propagated to every downstream frontier, dropped. A collection's updates carry their own
//! times, so one message under the earliest ready time's capability carries every later one;
//! an operator emitting one needs just a capability at the earliest time it still owes output
//! for, moved on as it finishes times. (An operator whose output times are the message's, such
//! as alert transitions, takes a capability for a time only when it emits at it.)

use timely::dataflow::operators::{Capability, InputCapability};

use crate::Time;

/// A capability held at the earliest pending time, or none while nothing is pending.
#[derive(Default)]
pub(crate) struct Earliest {
    held: Option<Capability<Time>>,
}

impl Earliest {
    /// Holds a capability at `time` unless one at or before it is held already; `capability`
    /// is the input message's that brings something at `time`.
    pub(crate) fn hold(&mut self, capability: &InputCapability<Time>, time: Time) {
        self.hold_for_output(capability, time, 0);
    }

    /// [`Earliest::hold`] for output `port` of an operator with several.
    pub(crate) fn hold_for_output(
        &mut self,
        capability: &InputCapability<Time>,
        time: Time,
        port: usize,
    ) {
        if self.held.as_ref().is_none_or(|held| time < *held.time()) {
            self.held = Some(capability.delayed(&time, port));
        }
    }

    /// The capability held, at or before every pending time.
    pub(crate) fn capability(&self) -> Option<&Capability<Time>> {
        self.held.as_ref()
    }

    /// Moves on once the times before `next` are done: holds at `next`, the earliest time
    /// still owing output, or at nothing when `next` is `None`.
    pub(crate) fn advance(&mut self, next: Option<Time>) {
        match (&mut self.held, next) {
            (Some(held), Some(next)) if *held.time() != next => held.downgrade(&next),
            (_, None) => self.held = None,
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use timely::dataflow::channels::pact::Pipeline;
    use timely::dataflow::operators::capture::Extract;
    use timely::dataflow::operators::{Capture, ToStream};

    use super::Earliest;
    use crate::woken_while_holding::WokenWhileHolding;

    /// Holds numbers for later times (out of order) under one capability, then emits every
    /// ready one in one message: each number comes out once, in a message at or before its own
    /// time, and the capability is let go at the end (else the example would not finish).
    #[test]
    fn one_capability_serves_every_pending_time() {
        let captured = timely::example(|scope| {
            vec![(5u64, 5u64), (2, 2), (9, 9), (2, 2)]
                .to_stream(scope)
                .unary_frontier_while_holding(Pipeline, "Earliest", |_capability| {
                    let mut pending: std::collections::BTreeMap<u64, Vec<u64>> =
                        std::collections::BTreeMap::new();
                    let mut earliest = Earliest::default();
                    move |(input, frontier), output| {
                        input.for_each(|capability, data: &mut Vec<(u64, u64)>| {
                            for (number, time) in data.drain(..) {
                                earliest.hold(&capability, time);
                                pending.entry(time).or_default().push(number);
                            }
                        });
                        let Some(held) = earliest.capability() else {
                            return;
                        };
                        let mut ready = Vec::new();
                        while let Some(entry) = pending.first_entry() {
                            if frontier.less_equal(entry.key()) {
                                break;
                            }
                            let time = *entry.key();
                            ready.extend(entry.remove().into_iter().map(|n| (n, time)));
                        }
                        if !ready.is_empty() {
                            output.session(held).give_container(&mut ready);
                        }
                        earliest.advance(pending.keys().next().copied());
                    }
                })
                .capture()
        });
        let messages = captured.extract();
        assert_eq!(
            messages.len(),
            1,
            "one message for every ready time: {messages:?}"
        );
        for (message_time, data) in &messages {
            assert!(data.iter().all(|(_, time)| time >= message_time));
        }
        let mut seen: Vec<(u64, u64)> = messages.into_iter().flat_map(|(_, d)| d).collect();
        seen.sort();
        assert_eq!(seen, vec![(2, 2), (2, 2), (5, 5), (9, 9)]);
    }
}
