//! Retry timing: exponential backoff with full jitter, and `Retry-After` parsing.
//!
//! Retry `n` (0-based) waits a uniformly random time in `[0, min(max, base * 2^n)]` ("full
//! jitter", so many engines retrying one receiver spread out). When the receiver answers
//! with `Retry-After`, that wait is used instead (capped at `max_retry_after`).

use std::time::Duration;

use chrono::{DateTime, Utc};
use rand::Rng;

use super::settings::RetrySettings;

/// The backoff ceiling before retry `attempt` (0-based): `min(max, base * 2^attempt)`.
pub fn backoff_cap(settings: &RetrySettings, attempt: u32) -> Duration {
    let factor = 1u32.checked_shl(attempt.min(31)).unwrap_or(u32::MAX);
    settings
        .base
        .checked_mul(factor)
        .unwrap_or(settings.max)
        .min(settings.max)
}

/// A full-jitter backoff before retry `attempt`: uniform in `[0, backoff_cap]`.
pub fn backoff(settings: &RetrySettings, attempt: u32, rng: &mut impl Rng) -> Duration {
    let cap = backoff_cap(settings, attempt);
    let nanos = u64::try_from(cap.as_nanos()).unwrap_or(u64::MAX);
    Duration::from_nanos(rng.random_range(0..=nanos))
}

/// The wait a `Retry-After` value asks for, relative to `now`: delay-seconds (`120`) or an
/// HTTP date (`Wed, 21 Oct 2015 07:28:00 GMT`; a date in the past means now). `None` when it
/// is neither.
pub fn parse_retry_after(value: &str, now: DateTime<Utc>) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = DateTime::parse_from_rfc2822(value).ok()?;
    Some(
        (at.with_timezone(&Utc) - now)
            .to_std()
            .unwrap_or(Duration::ZERO),
    )
}

/// The wait before retry `attempt`: `Retry-After` when given (capped), else [`backoff`].
pub fn retry_delay(
    settings: &RetrySettings,
    attempt: u32,
    retry_after: Option<Duration>,
    rng: &mut impl Rng,
) -> Duration {
    match retry_after {
        Some(wait) => wait.min(settings.max_retry_after),
        None => backoff(settings, attempt, rng),
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    use super::*;

    fn settings() -> RetrySettings {
        RetrySettings {
            base: Duration::from_millis(100),
            max: Duration::from_secs(5),
            max_retry_after: Duration::from_secs(60),
            give_up_after: None,
        }
    }

    #[test]
    fn caps_double_up_to_the_max() {
        let s = settings();
        let caps: Vec<u128> = (0..8).map(|a| backoff_cap(&s, a).as_millis()).collect();
        assert_eq!(caps, vec![100, 200, 400, 800, 1600, 3200, 5000, 5000]);
        assert_eq!(backoff_cap(&s, 40), Duration::from_secs(5));
        assert_eq!(backoff_cap(&s, u32::MAX), Duration::from_secs(5));
    }

    #[test]
    fn jitter_stays_within_bounds_and_spreads() {
        let s = settings();
        let mut rng = StdRng::seed_from_u64(7);
        for attempt in 0..10 {
            let cap = backoff_cap(&s, attempt);
            let samples: Vec<Duration> = (0..500).map(|_| backoff(&s, attempt, &mut rng)).collect();
            assert!(samples.iter().all(|d| *d <= cap));
            // Full jitter: both halves of the range are used.
            assert!(samples.iter().any(|d| *d < cap / 2));
            assert!(samples.iter().any(|d| *d > cap / 2));
        }
    }

    #[test]
    fn retry_after_seconds_and_dates() {
        let now = DateTime::parse_from_rfc3339("2015-10-21T07:27:00Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(
            parse_retry_after("120", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(parse_retry_after(" 0 ", now), Some(Duration::ZERO));
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now),
            Some(Duration::from_secs(60))
        );
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("-5", now), None);
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("1.5", now), None);

        let s = settings();
        let mut rng = StdRng::seed_from_u64(1);
        assert_eq!(
            retry_delay(&s, 0, Some(Duration::from_secs(2)), &mut rng),
            Duration::from_secs(2)
        );
        assert_eq!(
            retry_delay(&s, 0, Some(Duration::from_secs(3600)), &mut rng),
            Duration::from_secs(60)
        );
        assert!(retry_delay(&s, 0, None, &mut rng) <= Duration::from_millis(100));
    }
}
