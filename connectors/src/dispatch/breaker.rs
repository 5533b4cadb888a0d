//! A per-receiver circuit breaker.
//!
//! Closed: requests go out. After `failures` failed attempts in a row it opens: no attempt
//! for `cooldown`. Then it is half-open: one attempt (the probe) goes out while the others
//! wait; the probe's success closes the breaker, its failure opens it for another cooldown.
//! An answer that is not worth retrying (a 4xx) counts as a success here: the receiver is up.

use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use serde::Serialize;
use tokio::sync::Notify;
use tokio::time::Instant;

use super::settings::BreakerSettings;

/// What the breaker currently does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BreakerState {
    /// Requests go out.
    Closed,
    /// No request goes out until the cooldown ends.
    Open,
    /// One probe request goes out.
    HalfOpen,
}

#[derive(Debug)]
enum Inner {
    Closed { failures: u32 },
    Open { until: Instant },
    HalfOpen { probing: bool },
}

/// The breaker; shared by the request tasks of one receiver.
#[derive(Debug)]
pub(crate) struct Breaker {
    settings: BreakerSettings,
    inner: Mutex<Inner>,
    changed: Notify,
}

/// Leave to make one attempt. `probe` is set for the half-open probe.
#[derive(Debug)]
pub(crate) struct Permit {
    probe: bool,
}

impl Breaker {
    pub(crate) fn new(settings: BreakerSettings) -> Self {
        Breaker {
            settings,
            inner: Mutex::new(Inner::Closed { failures: 0 }),
            changed: Notify::new(),
        }
    }

    /// The state, for status reports.
    pub(crate) fn state(&self) -> BreakerState {
        match *self.inner.lock().unwrap_or_else(PoisonError::into_inner) {
            Inner::Closed { .. } => BreakerState::Closed,
            Inner::Open { until } if until > Instant::now() => BreakerState::Open,
            Inner::Open { .. } | Inner::HalfOpen { .. } => BreakerState::HalfOpen,
        }
    }

    /// Either a permit now, or how long to wait before asking again (`None`: until notified).
    fn try_acquire(&self) -> Result<Permit, Option<Duration>> {
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        match *inner {
            Inner::Closed { .. } => Ok(Permit { probe: false }),
            Inner::Open { until } if until > now => Err(Some(until - now)),
            Inner::Open { .. } | Inner::HalfOpen { probing: false } => {
                *inner = Inner::HalfOpen { probing: true };
                Ok(Permit { probe: true })
            }
            Inner::HalfOpen { probing: true } => Err(None),
        }
    }

    /// Waits until an attempt may be made.
    pub(crate) async fn acquire(&self) -> Permit {
        loop {
            let notified = self.changed.notified();
            match self.try_acquire() {
                Ok(permit) => return permit,
                Err(wait) => {
                    // Re-check at least every second: a probe task may have been cancelled.
                    let wait = wait
                        .unwrap_or(Duration::from_secs(1))
                        .min(Duration::from_secs(1));
                    tokio::select! {
                        () = notified => {}
                        () = tokio::time::sleep(wait) => {}
                    }
                }
            }
        }
    }

    /// Reports the attempt made with `permit`.
    pub(crate) fn record(&self, permit: Permit, success: bool) {
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let open = || Inner::Open {
            until: Instant::now() + self.settings.cooldown,
        };
        let next = match (&*inner, success) {
            (_, true) => Inner::Closed { failures: 0 },
            (Inner::Closed { failures }, false) => {
                let failures = failures.saturating_add(1);
                if self.settings.failures > 0 && failures >= self.settings.failures {
                    tracing::warn!(failures, cooldown = ?self.settings.cooldown, "circuit breaker open");
                    open()
                } else {
                    Inner::Closed { failures }
                }
            }
            (Inner::HalfOpen { .. }, false) if permit.probe => open(),
            // A non-probe attempt that started before the breaker opened.
            (Inner::HalfOpen { probing }, false) => Inner::HalfOpen { probing: *probing },
            (Inner::Open { until }, false) => Inner::Open { until: *until },
        };
        *inner = next;
        drop(inner);
        self.changed.notify_waiters();
    }

    /// Gives a permit back without an outcome (the attempt was not made).
    pub(crate) fn release(&self, permit: Permit) {
        if permit.probe {
            let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
            if let Inner::HalfOpen { probing: true } = *inner {
                *inner = Inner::HalfOpen { probing: false };
            }
            drop(inner);
            self.changed.notify_waiters();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn opens_after_n_failures_then_probes_once() {
        let breaker = Breaker::new(BreakerSettings {
            failures: 3,
            cooldown: Duration::from_secs(10),
        });
        for _ in 0..2 {
            let p = breaker.acquire().await;
            breaker.record(p, false);
        }
        assert_eq!(breaker.state(), BreakerState::Closed);
        let p = breaker.acquire().await;
        breaker.record(p, false);
        assert_eq!(breaker.state(), BreakerState::Open);
        assert!(breaker.try_acquire().is_err());

        let start = tokio::time::Instant::now();
        let probe = breaker.acquire().await;
        assert!(start.elapsed() >= Duration::from_secs(10));
        assert!(probe.probe);
        // While the probe is out, nobody else goes.
        assert!(matches!(breaker.try_acquire(), Err(None)));
        breaker.record(probe, false);
        assert_eq!(breaker.state(), BreakerState::Open);

        tokio::time::advance(Duration::from_secs(10)).await;
        let probe = breaker.acquire().await;
        breaker.record(probe, true);
        assert_eq!(breaker.state(), BreakerState::Closed);
        assert!(breaker.try_acquire().is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn a_released_probe_lets_the_next_one_go() {
        let breaker = Breaker::new(BreakerSettings {
            failures: 1,
            cooldown: Duration::from_millis(5),
        });
        let p = breaker.acquire().await;
        breaker.record(p, false);
        tokio::time::advance(Duration::from_millis(5)).await;
        let probe = breaker.acquire().await;
        breaker.release(probe);
        let again = breaker.acquire().await;
        assert!(again.probe);
        // failures = 0 never opens.
        let never = Breaker::new(BreakerSettings {
            failures: 0,
            cooldown: Duration::from_secs(1),
        });
        for _ in 0..100 {
            let p = never.acquire().await;
            never.record(p, false);
        }
        assert_eq!(never.state(), BreakerState::Closed);
    }
}
