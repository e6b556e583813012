//! Exponential backoff: the one schedule behind call retries
//! ([`super::RetryPolicy`]), polls that show no progress or fail
//! ([`super::PollPolicy`]) and the wait for a long-running operation.

use std::time::Duration;

/// `initial × multiplier^step`, capped; saturating, never panicking, on
/// huge settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Backoff {
    pub(crate) initial: Duration,
    pub(crate) multiplier: f64,
    pub(crate) cap: Duration,
}

impl Backoff {
    /// The delay before the retry after `step` earlier ones (step 0: `initial`).
    pub(crate) fn delay(&self, step: u32) -> Duration {
        let exp = self.multiplier.powi(step.min(64) as i32);
        Duration::try_from_secs_f64(self.initial.as_secs_f64() * exp)
            .unwrap_or(Duration::MAX)
            .min(self.cap)
    }
}

/// A multiplier that is finite and at least 1 (`fallback` when not finite).
pub(crate) fn sane_multiplier(m: f64, fallback: f64) -> f64 {
    if m.is_finite() {
        m.max(1.0)
    } else {
        fallback
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_to_the_cap_and_saturate() {
        let b = Backoff {
            initial: Duration::from_millis(100),
            multiplier: 2.0,
            cap: Duration::from_secs(5),
        };
        let ms: Vec<u128> = (0..8).map(|s| b.delay(s).as_millis()).collect();
        assert_eq!(ms, [100, 200, 400, 800, 1600, 3200, 5000, 5000]);
        let huge = Backoff {
            initial: Duration::MAX,
            multiplier: 1e300,
            cap: Duration::MAX,
        };
        assert_eq!(huge.delay(u32::MAX), Duration::MAX);
    }
}
