//! Prometheus metrics of the dispatcher. The receiver label takes the configured receiver
//! names, so it is bounded by the config.

use prometheus::{GaugeVec, IntCounterVec, IntGaugeVec, Opts, Registry};

/// The dispatcher's metrics.
#[derive(Clone, Debug)]
pub struct DispatchMetrics {
    /// `citybrain_webhook_deliveries_total{receiver,outcome}`: request attempts by outcome:
    /// `delivered`, `failed` (will be retried), `rejected` (4xx, dead-lettered), `gone` (410)
    /// and `gave_up` (retried for longer than `give_up_after`).
    pub deliveries: IntCounterVec,
    /// `citybrain_webhook_retries_total{receiver}`: retries scheduled.
    pub retries: IntCounterVec,
    /// `citybrain_webhook_dead_letters_total{receiver}`: transitions written to the receiver's
    /// dead-letter file.
    pub dead_letters: IntCounterVec,
    /// `citybrain_dispatch_queue_depth{receiver}`: transitions not yet acknowledged.
    pub queue_depth: IntGaugeVec,
    /// `citybrain_dispatch_oldest_undelivered_seconds{receiver}`: age of the oldest of them
    /// (0 when there is none).
    pub oldest_undelivered: GaugeVec,
    /// `citybrain_dispatch_receiver_disabled{receiver}`: 1 while disabled by a 410 Gone.
    pub disabled: IntGaugeVec,
    /// `citybrain_dispatch_submitted_total{outcome}`: transitions submitted, by outcome
    /// (`queued`, `duplicate`, `silenced`, `unrouted`).
    pub submitted: IntCounterVec,
}

impl DispatchMetrics {
    /// Creates the metrics and registers them in `registry`.
    pub fn new(registry: &Registry) -> Result<Self, prometheus::Error> {
        let deliveries = IntCounterVec::new(
            Opts::new(
                "citybrain_webhook_deliveries_total",
                "Delivery attempts per receiver and outcome.",
            ),
            &["receiver", "outcome"],
        )?;
        let retries = IntCounterVec::new(
            Opts::new(
                "citybrain_webhook_retries_total",
                "Retries scheduled per receiver.",
            ),
            &["receiver"],
        )?;
        let dead_letters = IntCounterVec::new(
            Opts::new(
                "citybrain_webhook_dead_letters_total",
                "Transitions written to a receiver's dead-letter file.",
            ),
            &["receiver"],
        )?;
        let queue_depth = IntGaugeVec::new(
            Opts::new(
                "citybrain_dispatch_queue_depth",
                "Transitions not yet acknowledged by the receiver.",
            ),
            &["receiver"],
        )?;
        let oldest_undelivered = GaugeVec::new(
            Opts::new(
                "citybrain_dispatch_oldest_undelivered_seconds",
                "Age of the oldest transition not yet acknowledged by the receiver.",
            ),
            &["receiver"],
        )?;
        let disabled = IntGaugeVec::new(
            Opts::new(
                "citybrain_dispatch_receiver_disabled",
                "1 while the receiver is disabled after answering 410 Gone.",
            ),
            &["receiver"],
        )?;
        let submitted = IntCounterVec::new(
            Opts::new(
                "citybrain_dispatch_submitted_total",
                "Transitions submitted to the dispatcher, by outcome.",
            ),
            &["outcome"],
        )?;
        registry.register(Box::new(deliveries.clone()))?;
        registry.register(Box::new(retries.clone()))?;
        registry.register(Box::new(dead_letters.clone()))?;
        registry.register(Box::new(queue_depth.clone()))?;
        registry.register(Box::new(oldest_undelivered.clone()))?;
        registry.register(Box::new(disabled.clone()))?;
        registry.register(Box::new(submitted.clone()))?;
        Ok(DispatchMetrics {
            deliveries,
            retries,
            dead_letters,
            queue_depth,
            oldest_undelivered,
            disabled,
            submitted,
        })
    }

    /// Creates every series of `receiver` at zero, so dashboards see it before it is used.
    pub(crate) fn init_receiver(&self, receiver: &str) {
        for outcome in ["delivered", "failed", "rejected", "gone", "gave_up"] {
            self.deliveries.with_label_values(&[receiver, outcome]);
        }
        self.retries.with_label_values(&[receiver]);
        self.dead_letters.with_label_values(&[receiver]);
        self.queue_depth.with_label_values(&[receiver]);
        self.oldest_undelivered.with_label_values(&[receiver]);
        self.disabled.with_label_values(&[receiver]);
    }
}
