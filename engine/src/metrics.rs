//! Prometheus metrics of the engine. Names follow `citybrain_<what>_<unit>`; labels are few
//! and bounded (stream kind, dead-letter reason, rule id from config, transition state).

use citybrain_model::DeadLetterReason;
use prometheus::{
    GaugeVec, Histogram, HistogramOpts, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
};

use crate::kpi::KpiSnapshot;

/// The engine's metrics, registered in their own registry.
#[derive(Clone)]
pub struct Metrics {
    /// Where every metric is registered (served at `/metrics`).
    pub registry: Registry,
    /// `citybrain_events_total{stream}`: messages read per stream kind.
    pub events: IntCounterVec,
    /// `citybrain_dead_letters_total{reason}`: unusable messages per reason.
    pub dead_letters: IntCounterVec,
    /// `citybrain_alert_transitions_total{rule,state}`.
    pub transitions: IntCounterVec,
    /// `citybrain_event_to_alert_latency_seconds`: wall clock at output minus event time.
    pub alert_latency: Histogram,
    /// `citybrain_watermark_lag_milliseconds{clock}`: wall clock minus the watermark.
    pub watermark_lag: IntGaugeVec,
    /// `citybrain_partition_event_lag_milliseconds{topic,partition}`: wall clock minus the
    /// newest event time consumed from the partition.
    pub partition_event_lag: IntGaugeVec,

    /// `citybrain_kpi_value{kpi,group}`: every KPI as a gauge (groups come from config'd
    /// labels such as districts or faces, so the label set is bounded by the city).
    pub kpi: GaugeVec,
    /// `citybrain_config_last_reload_successful`: 1 when the last rule reload (or the load at
    /// start) succeeded, 0 while the last one failed and the previous rules keep running.
    pub config_last_reload_successful: IntGauge,
    /// `citybrain_config_reloads_total{result}`: rule reload attempts, `success` or `failure`.
    pub config_reloads: IntCounterVec,
    /// `citybrain_kafka_brokers_up`: 1 while the brokers answer, 0 while they are away.
    pub kafka_brokers_up: IntGauge,
    /// `citybrain_outputs_writable`: 1 while the alert and dead-letter files can be written,
    /// 0 while they cannot (consumption stops until they can).
    pub outputs_writable: IntGauge,
}

/// A metric could not be registered (a programming error: duplicate name).
#[derive(Debug, thiserror::Error)]
#[error("metrics: {0}")]
pub struct MetricsError(#[from] prometheus::Error);

impl Metrics {
    /// Creates and registers every metric.
    pub fn new() -> Result<Self, MetricsError> {
        let registry = Registry::new();
        let events = IntCounterVec::new(
            Opts::new("citybrain_events_total", "Input messages read, per stream."),
            &["stream"],
        )?;
        let dead_letters = IntCounterVec::new(
            Opts::new(
                "citybrain_dead_letters_total",
                "Input messages dead-lettered, per reason.",
            ),
            &["reason"],
        )?;
        let transitions = IntCounterVec::new(
            Opts::new(
                "citybrain_alert_transitions_total",
                "Alert transitions emitted, per rule and state.",
            ),
            &["rule", "state"],
        )?;
        let alert_latency = Histogram::with_opts(
            HistogramOpts::new(
                "citybrain_event_to_alert_latency_seconds",
                "Wall-clock time at output minus the event time of the reading that caused the transition.",
            )
            .buckets(vec![0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 2.0, 5.0, 10.0, 60.0]),
        )?;
        let watermark_lag = IntGaugeVec::new(
            Opts::new(
                "citybrain_watermark_lag_milliseconds",
                "Wall clock minus the event-time watermark, per clock.",
            ),
            &["clock"],
        )?;
        registry.register(Box::new(events.clone()))?;
        registry.register(Box::new(dead_letters.clone()))?;
        registry.register(Box::new(transitions.clone()))?;
        registry.register(Box::new(alert_latency.clone()))?;
        registry.register(Box::new(watermark_lag.clone()))?;
        let partition_event_lag = IntGaugeVec::new(
            Opts::new(
                "citybrain_partition_event_lag_milliseconds",
                "Wall clock minus the newest event time consumed, per input partition.",
            ),
            &["topic", "partition"],
        )?;
        registry.register(Box::new(partition_event_lag.clone()))?;
        let kpi = GaugeVec::new(
            Opts::new(
                "citybrain_kpi_value",
                "KPI values of the latest complete snapshot, per KPI and group.",
            ),
            &["kpi", "group"],
        )?;
        registry.register(Box::new(kpi.clone()))?;
        let config_last_reload_successful = IntGauge::new(
            "citybrain_config_last_reload_successful",
            "1 when the last rule reload succeeded, 0 while the previous rules keep running after a failed one.",
        )?;
        let config_reloads = IntCounterVec::new(
            Opts::new(
                "citybrain_config_reloads_total",
                "Rule reload attempts, per result (success, failure).",
            ),
            &["result"],
        )?;
        registry.register(Box::new(config_last_reload_successful.clone()))?;
        registry.register(Box::new(config_reloads.clone()))?;
        let kafka_brokers_up = IntGauge::new(
            "citybrain_kafka_brokers_up",
            "1 while the Kafka brokers answer the engine's end-offset requests, 0 while they are away (the engine waits).",
        )?;
        let outputs_writable = IntGauge::new(
            "citybrain_outputs_writable",
            "1 while the alert and dead-letter files can be written, 0 while they cannot (the engine stops consuming until they can).",
        )?;
        registry.register(Box::new(kafka_brokers_up.clone()))?;
        registry.register(Box::new(outputs_writable.clone()))?;
        for result in ["success", "failure"] {
            config_reloads.with_label_values(&[result]);
        }
        for reason in DeadLetterReason::ALL {
            dead_letters.with_label_values(&[reason.as_str()]);
        }
        Ok(Metrics {
            registry,
            events,
            dead_letters,
            transitions,
            alert_latency,
            watermark_lag,
            partition_event_lag,
            kpi,
            config_last_reload_successful,
            config_reloads,
            kafka_brokers_up,
            outputs_writable,
        })
    }

    /// Mirrors a KPI snapshot into the `citybrain_kpi_value` gauges.
    pub fn set_kpis(&self, snapshot: &KpiSnapshot) {
        self.kpi.reset();
        for (name, groups) in &snapshot.values {
            for (group, value) in groups {
                self.kpi
                    .with_label_values(&[name.as_str(), group.as_str()])
                    .set(*value);
            }
        }
    }

    /// The metrics in Prometheus text format.
    pub fn render(&self) -> String {
        prometheus::TextEncoder::new()
            .encode_to_string(&self.registry.gather())
            .unwrap_or_default()
    }
}
