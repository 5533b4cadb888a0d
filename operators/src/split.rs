//! Splitting a stream into parts by an index each record carries: what [`crate::matching`]
//! does with a reading's matches, one part per rule kind.
//!
//! timely's `Partition` routes each record into a map of per-part vectors built for each
//! message, then moves it once more into a container builder per part: three moves and an
//! allocation per part and message (10 % of the engine's operator time at 1k sensors). Here each
//! record moves once, into its part's buffer, which is kept from message to message, and each
//! non-empty buffer leaves as one message.

use std::mem;

use timely::dataflow::StreamVec;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::builder_rc::OperatorBuilder;
use timely::progress::operate::FrontierInterest;

use crate::{Diff, Time};

/// Splits a stream of `((part, record), time, diff)` by part.
pub trait SplitByPart<'s, D> {
    /// `parts` streams: stream `i` has the records whose part is `i`, without it, at their
    /// time and with their diff. A record whose part is `parts` or more is dropped.
    ///
    /// ```
    /// use citybrain_operators::split::SplitByPart;
    /// use timely::dataflow::operators::capture::Extract;
    /// use timely::dataflow::operators::{Capture, ToStream};
    ///
    /// let (evens, odds) = timely::example(|scope| {
    ///     let numbers = (0u64..5).map(|n| ((n as usize % 2, n), 0u64, 1isize));
    ///     let mut parts = numbers.to_stream(scope).split_by_part(2).into_iter();
    ///     let evens = parts.next().unwrap().capture();
    ///     let odds = parts.next().unwrap().capture();
    ///     (evens, odds)
    /// });
    /// let records = |captured: Vec<(u64, Vec<(u64, u64, isize)>)>| {
    ///     captured.into_iter().flat_map(|(_, data)| data).map(|(n, ..)| n).collect::<Vec<_>>()
    /// };
    /// assert_eq!(records(evens.extract()), vec![0, 2, 4]);
    /// assert_eq!(records(odds.extract()), vec![1, 3]);
    /// ```
    fn split_by_part(self, parts: usize) -> Vec<StreamVec<'s, Time, (D, Time, Diff)>>;
}

impl<'s, D: 'static> SplitByPart<'s, D> for StreamVec<'s, Time, ((usize, D), Time, Diff)> {
    fn split_by_part(self, parts: usize) -> Vec<StreamVec<'s, Time, (D, Time, Diff)>> {
        let mut builder = OperatorBuilder::new("SplitByPart".to_owned(), self.scope());
        let mut input = builder.new_input(self, Pipeline);
        // It holds nothing: only new input gives it work.
        builder.set_notify_for(0, FrontierInterest::Never);
        let (mut outputs, streams): (Vec<_>, Vec<_>) =
            (0..parts).map(|_| builder.new_output()).unzip();
        builder.build(move |_capabilities| {
            let mut buffers: Vec<Vec<(D, Time, Diff)>> = (0..parts).map(|_| Vec::new()).collect();
            // Records per part in a message; the last counts those of no part.
            let mut counts = vec![0usize; parts + 1];
            move |_frontiers| {
                let mut handles: Vec<_> = outputs.iter_mut().map(|o| o.activate()).collect();
                input.for_each(|capability, data| {
                    // Sized up front: a buffer leaves with its message, and growing a new one
                    // record by record would copy each record again at every doubling.
                    for ((part, _), _, _) in data.iter() {
                        counts[*part.min(&parts)] += 1;
                    }
                    for (buffer, count) in buffers.iter_mut().zip(&mut counts) {
                        buffer.reserve_exact(mem::take(count));
                    }
                    for ((part, record), time, diff) in data.drain(..) {
                        if let Some(buffer) = buffers.get_mut(part) {
                            buffer.push((record, time, diff));
                        }
                    }
                    for (handle, buffer) in handles.iter_mut().zip(&mut buffers) {
                        if !buffer.is_empty() {
                            handle.give(&capability, buffer);
                        }
                    }
                });
            }
        });
        streams
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use timely::dataflow::operators::capture::Extract;
    use timely::dataflow::operators::{Capture, ToStream};

    use super::SplitByPart;

    proptest! {
        /// Each part gets exactly the records of that part (in any order), and a record of a
        /// part past the last is dropped; against a filter per part.
        #[test]
        fn each_part_gets_its_records(
            records in proptest::collection::vec((0usize..4, 0u32..100, 0u64..5), 0..200),
        ) {
            const PARTS: usize = 3;
            let input: Vec<_> = records
                .iter()
                .map(|&(part, value, time)| ((part, value), time, 1isize))
                .collect();
            let captured = timely::example(move |scope| {
                input
                    .to_stream(scope)
                    .split_by_part(PARTS)
                    .into_iter()
                    .map(|part| part.capture())
                    .collect::<Vec<_>>()
            });
            prop_assert_eq!(captured.len(), PARTS);
            for (part, captured) in captured.into_iter().enumerate() {
                let mut got: Vec<_> = captured
                    .extract()
                    .into_iter()
                    .flat_map(|(_, data)| data)
                    .collect();
                let mut expected: Vec<_> = records
                    .iter()
                    .filter(|(p, ..)| *p == part)
                    .map(|&(_, value, time)| (value, time, 1isize))
                    .collect();
                got.sort();
                expected.sort();
                prop_assert_eq!(got, expected);
            }
        }
    }
}
