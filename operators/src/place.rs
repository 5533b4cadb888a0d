//! Exchanging only what is not where it belongs: a flat map whose records either stay on this
//! worker or go to the worker their key routes to.
//!
//! A kind whose state is kept by group (window, correlation) exchanges its matches by group,
//! but a group of one entity (`group_by = "entity"`) is already on its worker: the matches are
//! made where the entity's readings were enriched ([`crate::entity_route`]). Timely's exchange
//! hashes and copies every record into a per-worker buffer whenever there is more than one
//! worker, even one that routes every record back to its own worker: on two workers the
//! window's placement with its exchange took 40-49 ms per worker, about what one worker took
//! for all the readings (~50 ms), and 12-16 ms without it (`benches/README.md`, thirtieth
//! session). Records placed [`Placement::Here`] skip the exchange; the rest go through it, and
//! the two streams meet again before the operator that keeps the state.

use differential_dataflow::{Data, ExchangeData};
use timely::container::CapacityContainerBuilder;
use timely::dataflow::StreamVec;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::core::{Concat, Exchange};
use timely::dataflow::operators::generic::OutputBuilder;
use timely::dataflow::operators::generic::builder_rc::OperatorBuilder;
use timely::progress::operate::FrontierInterest;

use crate::Time;

/// Where a record of [`FlatMapPlaced::flat_map_placed`] goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Placement {
    /// It stays on this worker: its key routes here.
    Here,
    /// It goes to the worker its key routes to.
    ByKey,
}

/// A flat map that exchanges only the records that are not on their key's worker already.
pub trait FlatMapPlaced<'s, D> {
    /// Each record becomes at most one record of `D2` and a placement: those placed
    /// [`Placement::Here`] stay on this worker, the others go to worker `route(record)`
    /// (modulo the number of workers). The caller vouches that `route` of a record placed
    /// here is this worker's: it is not checked.
    ///
    /// ```
    /// use citybrain_operators::place::{FlatMapPlaced, Placement};
    /// use timely::dataflow::operators::{Capture, ToStream};
    /// use timely::dataflow::operators::capture::Extract;
    ///
    /// let captured = timely::example(|scope| {
    ///     (0..6u64)
    ///         .to_stream(scope)
    ///         .flat_map_placed(
    ///             // Even numbers are where they belong; 5 is dropped.
    ///             |n| {
    ///                 let placement = if n % 2 == 0 { Placement::Here } else { Placement::ByKey };
    ///                 (n != 5).then_some((placement, n * 10))
    ///             },
    ///             |n| *n,
    ///         )
    ///         .capture()
    /// });
    /// let batches = captured.extract();
    /// let mut seen: Vec<u64> = batches.into_iter().flat_map(|(_, data)| data).collect();
    /// seen.sort();
    /// assert_eq!(seen, vec![0, 10, 20, 30, 40]);
    /// ```
    fn flat_map_placed<D2, L, R>(self, logic: L, route: R) -> StreamVec<'s, Time, D2>
    where
        D2: ExchangeData,
        L: FnMut(D) -> Option<(Placement, D2)> + 'static,
        R: Fn(&D2) -> u64 + 'static;
}

impl<'s, D: Data> FlatMapPlaced<'s, D> for StreamVec<'s, Time, D> {
    fn flat_map_placed<D2, L, R>(self, mut logic: L, route: R) -> StreamVec<'s, Time, D2>
    where
        D2: ExchangeData,
        L: FnMut(D) -> Option<(Placement, D2)> + 'static,
        R: Fn(&D2) -> u64 + 'static,
    {
        let mut builder = OperatorBuilder::new("FlatMapPlaced".to_owned(), self.scope());
        let mut input = builder.new_input(self, Pipeline);
        builder.set_notify_for(0, FrontierInterest::Never);
        let (here_output, here) = builder.new_output();
        let mut here_output = OutputBuilder::<Time, CapacityContainerBuilder<_>>::from(here_output);
        let (away_output, away) = builder.new_output();
        let mut away_output = OutputBuilder::<Time, CapacityContainerBuilder<_>>::from(away_output);
        builder.build(move |_capabilities| {
            move |_frontiers| {
                let (mut here_handle, mut away_handle) =
                    (here_output.activate(), away_output.activate());
                input.for_each(|capability, data| {
                    let mut here = here_handle.session(&capability);
                    let mut away = away_handle.session(&capability);
                    for record in data.drain(..) {
                        match logic(record) {
                            Some((Placement::Here, placed)) => here.give(placed),
                            Some((Placement::ByKey, placed)) => away.give(placed),
                            None => {}
                        }
                    }
                });
            }
        });
        here.concat(away.exchange(move |record: &D2| route(record)))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use proptest::prelude::*;
    use timely::dataflow::operators::{Inspect, ToStream};

    use super::{FlatMapPlaced, Placement};

    proptest! {
        /// On several workers, every record kept comes out exactly once: a record placed here
        /// on the worker it was made on, any other on the worker its key routes to.
        #[test]
        fn each_record_arrives_once_here_or_on_its_keys_worker(
            records in proptest::collection::vec((0u64..50, any::<bool>(), any::<bool>()), 0..60),
            workers in 1usize..4,
        ) {
            // A record: (key, placed here, dropped). Worker `w` makes every `workers`-th one.
            let mut expected: Vec<(usize, u64, usize)> = Vec::new();
            for (index, &(key, here, dropped)) in records.iter().enumerate() {
                let made_on = index % workers;
                if !dropped {
                    let on = if here { made_on } else { key as usize % workers };
                    expected.push((on, key, index));
                }
            }
            expected.sort();
            let seen = Arc::new(Mutex::new(Vec::new()));
            let sink = Arc::clone(&seen);
            let input = records.clone();
            let config = timely::Config::process(workers);
            let guards = timely::execute(config, move |worker| {
                let (index, peers) = (worker.index(), worker.peers());
                let mine: Vec<(usize, (u64, bool, bool))> = input
                    .iter()
                    .copied()
                    .enumerate()
                    .filter(|(at, _)| at % peers == index)
                    .collect();
                let sink = Arc::clone(&sink);
                worker.dataflow::<crate::Time, _, _>(move |scope| {
                    mine.to_stream(scope)
                        .flat_map_placed(
                            |(at, (key, here, dropped))| {
                                let placement =
                                    if here { Placement::Here } else { Placement::ByKey };
                                (!dropped).then_some((placement, (key, at)))
                            },
                            |(key, _)| *key,
                        )
                        .inspect(move |(key, at)| {
                            if let Ok(mut seen) = sink.lock() {
                                seen.push((index, *key, *at));
                            }
                        });
                });
            });
            prop_assert!(guards.is_ok());
            drop(guards);
            let mut seen = seen.lock().map(|seen| seen.clone()).unwrap_or_default();
            seen.sort();
            prop_assert_eq!(seen, expected);
        }
    }
}
