//! Closing Kafka clients within a time limit.
//!
//! Dropping a librdkafka client waits without limit: rust-rdkafka's `BaseConsumer` polls
//! until librdkafka says the consumer closed (rust-rdkafka issue #509: one that never did),
//! and `rd_kafka_destroy` waits for the client's own threads. An engine stopping must not
//! wait on that forever (a service manager would have to kill it, and a test would hang), so
//! the engine's long-lived clients are dropped here: on a thread of their own, waited for up
//! to [`CLOSE_LIMIT`]. A client still closing then is left to its thread, which the process's
//! exit ends, and a warning names it.

use std::ops::{Deref, DerefMut};
use std::sync::mpsc;
use std::time::Duration;

/// How long a stop waits for one Kafka client to close: a consumer leaving its group and a
/// producer's last flush take well under a second on a reachable broker.
pub const CLOSE_LIMIT: Duration = Duration::from_secs(10);

/// Drops `client` on a thread of its own and waits up to `limit` for it; true when it closed
/// in time. `what` names it in the warning when it did not (or when no thread could start:
/// the client was then dropped on this one, without a limit, as the failed spawn let go of
/// it).
///
/// ```
/// use std::time::Duration;
/// use citybrain_connectors::closing::close_within;
///
/// assert!(close_within(vec![1, 2, 3], "a vector", Duration::from_secs(1)));
/// ```
pub fn close_within<T: Send + 'static>(client: T, what: &'static str, limit: Duration) -> bool {
    let (closed, wait) = mpsc::channel();
    let spawned = std::thread::Builder::new()
        .name(format!("citybrain-close:{what}"))
        .spawn(move || {
            drop(client);
            // The waiter may have given up: nobody to tell then.
            let _ = closed.send(());
        });
    if let Err(error) = spawned {
        tracing::warn!(%error, what, "no thread to close a Kafka client on; closed it on this one");
        return true;
    }
    match wait.recv_timeout(limit) {
        Ok(()) => true,
        // The thread ended without sending: the drop panicked, and it is over either way.
        Err(mpsc::RecvTimeoutError::Disconnected) => true,
        Err(mpsc::RecvTimeoutError::Timeout) => {
            tracing::warn!(
                what,
                limit_secs = limit.as_secs_f64(),
                "a Kafka client did not close within the limit; left closing in the background"
            );
            false
        }
    }
}

/// A Kafka client closed by [`close_within`] with [`CLOSE_LIMIT`] when it is dropped; used
/// as the client itself otherwise.
pub struct ClosedWithin<T: Send + 'static> {
    client: Option<T>,
    what: &'static str,
}

impl<T: Send + 'static> ClosedWithin<T> {
    /// Wraps `client`, named `what` in the warning of a close that took too long.
    pub fn new(client: T, what: &'static str) -> Self {
        Self {
            client: Some(client),
            what,
        }
    }
}

impl<T: Send + 'static> Deref for ClosedWithin<T> {
    type Target = T;

    fn deref(&self) -> &T {
        // Taken only by `drop`.
        self.client.as_ref().unwrap_or_else(|| unreachable!())
    }
}

impl<T: Send + 'static> DerefMut for ClosedWithin<T> {
    fn deref_mut(&mut self) -> &mut T {
        self.client.as_mut().unwrap_or_else(|| unreachable!())
    }
}

impl<T: Send + 'static> Drop for ClosedWithin<T> {
    fn drop(&mut self) {
        if let Some(client) = self.client.take() {
            close_within(client, self.what, CLOSE_LIMIT);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Instant;

    use super::*;

    /// Blocks in its drop until `release` is set, as a consumer whose close never ends.
    struct StuckClose {
        release: Arc<AtomicBool>,
        dropped: Arc<AtomicBool>,
    }

    impl Drop for StuckClose {
        fn drop(&mut self) {
            while !self.release.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(5));
            }
            self.dropped.store(true, Ordering::SeqCst);
        }
    }

    fn stuck() -> (StuckClose, Arc<AtomicBool>, Arc<AtomicBool>) {
        let (release, dropped) = (Arc::default(), Arc::<AtomicBool>::default());
        let client = StuckClose {
            release: Arc::clone(&release),
            dropped: Arc::clone(&dropped),
        };
        (client, release, dropped)
    }

    #[test]
    fn a_close_that_never_ends_is_left_behind_at_the_limit() {
        let (client, release, dropped) = stuck();
        let started = Instant::now();
        assert!(!close_within(client, "stuck", Duration::from_millis(100)));
        assert!(started.elapsed() >= Duration::from_millis(100));
        assert!(!dropped.load(Ordering::SeqCst));
        // The close goes on in the background and finishes when it can.
        release.store(true, Ordering::SeqCst);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !dropped.load(Ordering::SeqCst) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(dropped.load(Ordering::SeqCst));
    }

    #[test]
    fn a_close_within_the_limit_is_waited_for() {
        let (client, release, dropped) = stuck();
        release.store(true, Ordering::SeqCst);
        assert!(close_within(client, "quick", Duration::from_secs(10)));
        assert!(dropped.load(Ordering::SeqCst));
    }

    #[test]
    fn a_wrapped_client_is_closed_when_dropped() {
        let (client, release, dropped) = stuck();
        release.store(true, Ordering::SeqCst);
        let wrapped = ClosedWithin::new(client, "wrapped");
        assert!(!wrapped.dropped.load(Ordering::SeqCst));
        drop(wrapped);
        assert!(dropped.load(Ordering::SeqCst));
    }
}
