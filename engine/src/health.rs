//! What keeps the engine from doing its work right now, said in one place: `/readyz` answers
//! 503 with the reasons, the `citybrain_kafka_brokers_up` and `citybrain_outputs_writable`
//! gauges follow them, and the wall shows a banner while one lasts.
//!
//! - **Kafka brokers away.** A source's end-offset requests fail (see
//!   [`citybrain_connectors::end_offsets`]). The engine waits: partitions without fresh end
//!   offsets hold the watermark, so nothing turns late, and librdkafka reconnects by itself.
//! - **Outputs not writable.** The alert log or dead-letter file cannot be written (disk full,
//!   file-size limit, I/O error). The output thread keeps what it could not write and retries;
//!   the workers stop consuming until it succeeds, and offsets are committed only up to what
//!   is durable.
//! - **Standby.** With a lease (`[kafka] lease_topic`), another engine of the same group is
//!   the active one; this one waits to take over (see [`citybrain_connectors::lease`]).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, PoisonError};

use citybrain_model::time::now_millis;
use prometheus::IntGauge;
use serde::Serialize;

/// One ongoing problem.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Problem {
    /// When it began, epoch ms.
    pub since: u64,
    /// What is wrong, for people.
    pub reason: String,
}

/// The engine's ongoing problems.
pub struct Health {
    /// Per worker whose source reports its brokers away.
    kafka_away: Mutex<BTreeMap<usize, Problem>>,
    outputs_blocked: Mutex<Option<Problem>>,
    /// Waiting for the lease another engine holds.
    standby: Mutex<Option<Problem>>,
    /// Mirrors `outputs_blocked.is_some()` for the workers' loop.
    blocked: AtomicBool,
    brokers_up: IntGauge,
    outputs_writable: IntGauge,
}

impl Health {
    /// No problems; the gauges are set to match.
    pub fn new(brokers_up: IntGauge, outputs_writable: IntGauge) -> Self {
        brokers_up.set(1);
        outputs_writable.set(1);
        Health {
            kafka_away: Mutex::new(BTreeMap::new()),
            outputs_blocked: Mutex::new(None),
            standby: Mutex::new(None),
            blocked: AtomicBool::new(false),
            brokers_up,
            outputs_writable,
        }
    }

    /// Records whether `worker`'s brokers answer (`away`: since when, epoch ms, and why).
    pub fn set_kafka_away(&self, worker: usize, away: Option<(u64, String)>) {
        let mut map = self
            .kafka_away
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        match away {
            Some((since, error)) => {
                map.insert(
                    worker,
                    Problem {
                        since,
                        reason: format!("Kafka brokers do not answer: {error}"),
                    },
                );
            }
            None => {
                map.remove(&worker);
            }
        }
        self.brokers_up.set(i64::from(map.is_empty()));
    }

    /// The earliest of the workers' broker problems.
    pub fn kafka_away(&self) -> Option<Problem> {
        self.kafka_away
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .min_by_key(|p| p.since)
            .cloned()
    }

    /// Records that the outputs cannot be written (`Some(reason)`) or can again (`None`).
    /// Returns true when this changed the state.
    pub fn set_outputs_blocked(&self, reason: Option<String>) -> bool {
        let mut slot = self
            .outputs_blocked
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let changed = slot.is_some() != reason.is_some();
        *slot = match (slot.take(), reason) {
            (_, None) => None,
            (Some(previous), Some(reason)) => Some(Problem {
                since: previous.since,
                reason,
            }),
            (None, Some(reason)) => Some(Problem {
                since: now_millis(),
                reason,
            }),
        };
        let blocked = slot.is_some();
        self.blocked.store(blocked, Ordering::SeqCst);
        self.outputs_writable.set(i64::from(!blocked));
        changed
    }

    /// The output problem, if any.
    pub fn outputs_blocked(&self) -> Option<Problem> {
        self.outputs_blocked
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Records that this engine waits as a standby for the lease (`Some(reason)`) or is the
    /// active one (`None`).
    pub fn set_standby(&self, reason: Option<String>) {
        let mut slot = self.standby.lock().unwrap_or_else(PoisonError::into_inner);
        *slot = reason.map(|reason| Problem {
            since: slot.as_ref().map_or_else(now_millis, |p| p.since),
            reason,
        });
    }

    /// The standby state, if this engine waits for the lease.
    pub fn standby(&self) -> Option<Problem> {
        self.standby
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// True while the outputs cannot be written (the workers stop consuming).
    pub fn consumption_held(&self) -> bool {
        self.blocked.load(Ordering::SeqCst)
    }

    /// Every ongoing problem as one line each, with how long it has lasted.
    pub fn reasons(&self) -> Vec<String> {
        let now = now_millis();
        let line = |what: &str, p: &Problem| {
            format!(
                "{what} for {} s: {}",
                now.saturating_sub(p.since) / 1000,
                p.reason
            )
        };
        let mut out = Vec::new();
        if let Some(p) = self.standby() {
            out.push(line("standby", &p));
        }
        if let Some(p) = self.kafka_away() {
            out.push(line("waiting for the Kafka brokers", &p));
        }
        if let Some(p) = self.outputs_blocked() {
            out.push(line("not consuming: the outputs cannot be written", &p));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn problems_set_the_gauges_and_reasons_and_clear_again() {
        let up = IntGauge::new("up", "up").unwrap();
        let writable = IntGauge::new("writable", "writable").unwrap();
        let health = Health::new(up.clone(), writable.clone());
        assert!(health.reasons().is_empty());
        health.set_kafka_away(1, Some((now_millis(), "timed out".into())));
        health.set_kafka_away(0, None);
        assert_eq!(up.get(), 0);
        assert!(health.set_outputs_blocked(Some("alerts.jsonl: disk full".into())));
        assert!(!health.set_outputs_blocked(Some("alerts.jsonl: still full".into())));
        assert!(health.consumption_held());
        assert_eq!(writable.get(), 0);
        let reasons = health.reasons();
        assert_eq!(reasons.len(), 2);
        assert!(reasons[0].contains("timed out"), "{reasons:?}");
        assert!(reasons[1].contains("still full"), "{reasons:?}");
        health.set_kafka_away(1, None);
        assert!(health.set_outputs_blocked(None));
        assert_eq!((up.get(), writable.get()), (1, 1));
        assert!(!health.consumption_held());
        assert!(health.reasons().is_empty());
    }
}
