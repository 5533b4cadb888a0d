//! Frontier-driven operators that timely wakes for frontier changes only while they hold a
//! capability.
//!
//! timely's `unary_frontier` and `binary_frontier` ask to be scheduled at every change of an
//! input frontier. A dataflow carries the operators of every rule kind, also of kinds that
//! have no rules right now (rules can be reloaded into any kind), and each of those was
//! scheduled at every input time only to find nothing to do. The operators built here are
//! scheduled for a frontier change only while they hold a capability
//! ([`FrontierInterest::IfCapability`]); new input wakes them as always.
//!
//! That is right for an operator whose frontier-driven work is all about data it holds a
//! capability for (buffered times, timers): without a capability there is nothing it could
//! send. Work it may do on the side without one (applying buffered reference changes) waits
//! for its next wake-up. Operators that must see every frontier (probes, anything reporting
//! progress without data) keep timely's own builders.

use timely::Container;
use timely::container::CapacityContainerBuilder;
use timely::dataflow::Stream;
use timely::dataflow::channels::pact::ParallelizationContract;
use timely::dataflow::operators::Capability;
use timely::dataflow::operators::generic::builder_rc::OperatorBuilder;
use timely::dataflow::operators::generic::{InputHandleCore, OutputBuilder, OutputBuilderSession};
use timely::progress::Timestamp;
use timely::progress::frontier::MutableAntichain;
use timely::progress::operate::FrontierInterest;

/// An input handle with its frontier, as the logic of a frontier operator gets it.
pub type FrontierInput<'a, T, C, P> = (
    &'a mut InputHandleCore<T, C, <P as ParallelizationContract<T, C>>::Puller>,
    &'a MutableAntichain<T>,
);

/// The output session of an operator whose output is a vector of `D`.
pub type VecSession<'a, T, D> = OutputBuilderSession<'a, T, CapacityContainerBuilder<Vec<D>>>;

/// Frontier-driven operators woken by frontier changes only while they hold a capability.
pub trait WokenWhileHolding<'s, T: Timestamp, C1: Container> {
    /// `unary_frontier`, woken by frontier changes only while holding a capability.
    ///
    /// ```
    /// use timely::dataflow::channels::pact::Pipeline;
    /// use timely::dataflow::operators::capture::Extract;
    /// use timely::dataflow::operators::{Capture, ToStream};
    /// use citybrain_operators::woken_while_holding::WokenWhileHolding;
    ///
    /// let captured = timely::example(|scope| {
    ///     // Holds each number until the frontier passes it, then sends its double.
    ///     (1u64..4).to_stream(scope).unary_frontier_while_holding(
    ///         Pipeline,
    ///         "Double",
    ///         |_capability| {
    ///             let mut held = Vec::new();
    ///             move |(input, frontier), output| {
    ///                 let port = output.output_index();
    ///                 input.for_each(|capability, data: &mut Vec<u64>| {
    ///                     if let Some(capability) = capability.retain_least(port) {
    ///                         held.push((capability, std::mem::take(data)));
    ///                     }
    ///                 });
    ///                 held.retain_mut(|(capability, data)| {
    ///                     if frontier.less_equal(capability.time()) {
    ///                         return true;
    ///                     }
    ///                     let doubled = data.iter().map(|n| n * 2).collect::<Vec<_>>();
    ///                     output.session(&*capability).give_iterator(doubled.into_iter());
    ///                     false
    ///                 });
    ///             }
    ///         },
    ///     )
    ///     .capture()
    /// });
    /// let doubled: Vec<u64> = captured.extract().into_iter().flat_map(|(_, d)| d).collect();
    /// assert_eq!(doubled, vec![2, 4, 6]);
    /// ```
    fn unary_frontier_while_holding<D, P, B, L>(
        self,
        pact: P,
        name: &str,
        constructor: B,
    ) -> Stream<'s, T, Vec<D>>
    where
        D: Clone + 'static,
        P: ParallelizationContract<T, C1>,
        B: FnOnce(Capability<T>) -> L,
        L: FnMut(FrontierInput<'_, T, C1, P>, &mut VecSession<'_, T, D>) + 'static;

    /// `binary_frontier`, woken by frontier changes only while holding a capability.
    fn binary_frontier_while_holding<C2, D, P1, P2, B, L>(
        self,
        other: Stream<'s, T, C2>,
        pact1: P1,
        pact2: P2,
        name: &str,
        constructor: B,
    ) -> Stream<'s, T, Vec<D>>
    where
        C2: Container,
        D: Clone + 'static,
        P1: ParallelizationContract<T, C1>,
        P2: ParallelizationContract<T, C2>,
        B: FnOnce(Capability<T>) -> L,
        L: FnMut(
                FrontierInput<'_, T, C1, P1>,
                FrontierInput<'_, T, C2, P2>,
                &mut VecSession<'_, T, D>,
            ) + 'static;
}

impl<'s, T: Timestamp, C1: Container> WokenWhileHolding<'s, T, C1> for Stream<'s, T, C1> {
    fn unary_frontier_while_holding<D, P, B, L>(
        self,
        pact: P,
        name: &str,
        constructor: B,
    ) -> Stream<'s, T, Vec<D>>
    where
        D: Clone + 'static,
        P: ParallelizationContract<T, C1>,
        B: FnOnce(Capability<T>) -> L,
        L: FnMut(FrontierInput<'_, T, C1, P>, &mut VecSession<'_, T, D>) + 'static,
    {
        let mut builder = OperatorBuilder::new(name.to_owned(), self.scope());
        let mut input = builder.new_input(self, pact);
        builder.set_notify_for(0, FrontierInterest::IfCapability);
        let (output, stream) = builder.new_output();
        let mut output = OutputBuilder::<T, CapacityContainerBuilder<Vec<D>>>::from(output);
        builder.build(move |capabilities| {
            let mut logic = constructor(only_capability(capabilities));
            move |frontiers| logic((&mut input, &frontiers[0]), &mut output.activate())
        });
        stream
    }

    fn binary_frontier_while_holding<C2, D, P1, P2, B, L>(
        self,
        other: Stream<'s, T, C2>,
        pact1: P1,
        pact2: P2,
        name: &str,
        constructor: B,
    ) -> Stream<'s, T, Vec<D>>
    where
        C2: Container,
        D: Clone + 'static,
        P1: ParallelizationContract<T, C1>,
        P2: ParallelizationContract<T, C2>,
        B: FnOnce(Capability<T>) -> L,
        L: FnMut(
                FrontierInput<'_, T, C1, P1>,
                FrontierInput<'_, T, C2, P2>,
                &mut VecSession<'_, T, D>,
            ) + 'static,
    {
        let mut builder = OperatorBuilder::new(name.to_owned(), self.scope());
        let mut input1 = builder.new_input(self, pact1);
        let mut input2 = builder.new_input(other, pact2);
        builder.set_notify_for(0, FrontierInterest::IfCapability);
        builder.set_notify_for(1, FrontierInterest::IfCapability);
        let (output, stream) = builder.new_output();
        let mut output = OutputBuilder::<T, CapacityContainerBuilder<Vec<D>>>::from(output);
        builder.build(move |capabilities| {
            let mut logic = constructor(only_capability(capabilities));
            move |frontiers| {
                logic(
                    (&mut input1, &frontiers[0]),
                    (&mut input2, &frontiers[1]),
                    &mut output.activate(),
                )
            }
        });
        stream
    }
}

/// The one initial capability of a one-output operator.
fn only_capability<T: Timestamp>(mut capabilities: Vec<Capability<T>>) -> Capability<T> {
    match capabilities.pop() {
        Some(capability) if capabilities.is_empty() => capability,
        // The builders above add exactly one output, so timely hands exactly one capability.
        _ => unreachable!("a one-output operator gets one initial capability"),
    }
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;
    use std::rc::Rc;

    use timely::dataflow::channels::pact::Pipeline;
    use timely::dataflow::operators::{Input, Probe};

    use super::WokenWhileHolding;

    /// Counts schedules of an operator that holds no capability after its first one, while its
    /// input's frontier advances 100 times without data: timely's `unary_frontier` would be
    /// scheduled at each advance.
    #[test]
    fn an_operator_without_capabilities_sleeps_through_frontier_changes() {
        let schedules = timely::execute_directly(move |worker| {
            let schedules = Rc::new(RefCell::new(0));
            let counted = Rc::clone(&schedules);
            let (mut input, probe) = worker.dataflow::<u64, _, _>(|scope| {
                let (input, stream) = scope.new_input::<Vec<u64>>();
                let probe = stream
                    .unary_frontier_while_holding::<u64, _, _, _>(Pipeline, "Idle", |capability| {
                        drop(capability);
                        move |(input, _frontier), _output| {
                            *counted.borrow_mut() += 1;
                            input.for_each(|_, _| {});
                        }
                    })
                    .probe()
                    .0;
                (input, probe)
            });
            for time in 1..=100 {
                input.advance_to(time);
                while probe.less_than(&time) {
                    worker.step();
                }
            }
            *schedules.borrow()
        });
        // Scheduled once at the start (it held its initial capability), then never again.
        assert_eq!(schedules, 1);
    }
}
