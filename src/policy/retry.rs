//! [`RetryPolicy`]: one policy, applied by the client to every idempotent
//! call (get, list, cancel, delete, GetOperation). Create is never retried
//! blindly; see [`crate::Client::submit`].

use std::time::Duration;

use super::backoff::{sane_multiplier, Backoff};
use crate::error::Error;

/// How idempotent calls are retried.
///
/// Defaults follow AIP-194 and Google's client libraries: retry
/// `UNAVAILABLE`, `RESOURCE_EXHAUSTED` and `DEADLINE_EXCEEDED` (and transport
/// failures) with exponential backoff and full jitter, 1 s doubling to 30 s,
/// at most 6 attempts and 5 minutes in all, 60 s per attempt (less when
/// less is left of the 5 minutes; sent as `grpc-timeout`). A `RetryInfo`
/// delay from the service is honoured when it is longer than the backoff.
/// `INVALID_ARGUMENT`, `NOT_FOUND`, `PERMISSION_DENIED`, … are never retried.
///
/// ```
/// use std::time::Duration;
/// use vertex_batch::policy::RetryPolicy;
/// let policy = RetryPolicy::default()
///     .with_max_attempts(3)
///     .with_attempt_timeout(Some(Duration::from_secs(10)));
/// assert_eq!(policy.max_attempts(), 3);
/// let none = RetryPolicy::none();
/// assert_eq!(none.max_attempts(), 1);
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    max_attempts: u32,
    backoff: Backoff,
    total_timeout: Option<Duration>,
    attempt_timeout: Option<Duration>,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 6,
            backoff: Backoff {
                initial: Duration::from_secs(1),
                multiplier: 2.0,
                cap: Duration::from_secs(30),
            },
            total_timeout: Some(Duration::from_secs(300)),
            attempt_timeout: Some(Duration::from_secs(60)),
        }
    }
}

impl RetryPolicy {
    /// A policy that makes one attempt and never retries.
    ///
    /// ```
    /// use vertex_batch::policy::RetryPolicy;
    /// let policy = RetryPolicy::none();
    /// assert_eq!(policy.max_attempts(), 1);
    /// ```
    pub fn none() -> Self {
        RetryPolicy {
            max_attempts: 1,
            ..Default::default()
        }
    }

    /// At most this many attempts in all (at least 1).
    ///
    /// ```
    /// use vertex_batch::policy::RetryPolicy;
    /// assert_eq!(RetryPolicy::default().with_max_attempts(3).max_attempts(), 3);
    /// assert_eq!(RetryPolicy::default().with_max_attempts(0).max_attempts(), 1);
    /// ```
    pub fn with_max_attempts(mut self, n: u32) -> Self {
        self.max_attempts = n.max(1);
        self
    }

    /// The first backoff delay (before jitter).
    ///
    /// ```
    /// use std::time::Duration;
    /// use vertex_batch::policy::RetryPolicy;
    /// let policy = RetryPolicy::default().with_initial_backoff(Duration::from_millis(200));
    /// assert_eq!(policy.initial_backoff(), Duration::from_millis(200));
    /// assert_eq!(policy.backoff(2), Duration::from_millis(400));
    /// ```
    pub fn with_initial_backoff(mut self, d: Duration) -> Self {
        self.backoff.initial = d;
        self
    }

    /// The longest backoff delay (before jitter).
    ///
    /// ```
    /// use std::time::Duration;
    /// use vertex_batch::policy::RetryPolicy;
    /// let policy = RetryPolicy::default().with_max_backoff(Duration::from_secs(4));
    /// assert_eq!(policy.max_backoff(), Duration::from_secs(4));
    /// assert_eq!(policy.backoff(5), Duration::from_secs(4));
    /// ```
    pub fn with_max_backoff(mut self, d: Duration) -> Self {
        self.backoff.cap = d;
        self
    }

    /// The factor the backoff grows by after each attempt (at least 1).
    ///
    /// ```
    /// use std::time::Duration;
    /// use vertex_batch::policy::RetryPolicy;
    /// let policy = RetryPolicy::default().with_multiplier(3.0);
    /// assert_eq!(policy.backoff(3), Duration::from_secs(9));
    /// assert_eq!(RetryPolicy::default().with_multiplier(0.5).multiplier(), 1.0);
    /// ```
    pub fn with_multiplier(mut self, m: f64) -> Self {
        self.backoff.multiplier = sane_multiplier(m, 2.0);
        self
    }

    /// The time budget for all attempts and delays of one call (`None`: no limit).
    ///
    /// ```
    /// use std::time::Duration;
    /// use vertex_batch::policy::RetryPolicy;
    /// let policy = RetryPolicy::default().with_total_timeout(Some(Duration::from_secs(30)));
    /// assert_eq!(policy.total_timeout(), Some(Duration::from_secs(30)));
    /// assert_eq!(policy.with_total_timeout(None).total_timeout(), None);
    /// ```
    pub fn with_total_timeout(mut self, d: Option<Duration>) -> Self {
        self.total_timeout = d;
        self
    }

    /// The deadline of each attempt (`None`: no limit of its own). An
    /// attempt's deadline is never later than the end of the total budget,
    /// so with both `None` calls carry no deadline at all.
    ///
    /// ```
    /// use std::time::Duration;
    /// use vertex_batch::policy::RetryPolicy;
    /// let policy = RetryPolicy::default().with_attempt_timeout(Some(Duration::from_secs(10)));
    /// assert_eq!(policy.attempt_timeout(), Some(Duration::from_secs(10)));
    /// assert_eq!(policy.with_attempt_timeout(None).attempt_timeout(), None);
    /// ```
    pub fn with_attempt_timeout(mut self, d: Option<Duration>) -> Self {
        self.attempt_timeout = d;
        self
    }

    /// The configured number of attempts.
    ///
    /// ```
    /// use vertex_batch::policy::RetryPolicy;
    /// assert_eq!(RetryPolicy::default().max_attempts(), 6);
    /// ```
    pub fn max_attempts(&self) -> u32 {
        self.max_attempts
    }

    /// The configured per-attempt deadline.
    ///
    /// ```
    /// use std::time::Duration;
    /// use vertex_batch::policy::RetryPolicy;
    /// assert_eq!(RetryPolicy::default().attempt_timeout(), Some(Duration::from_secs(60)));
    /// ```
    pub fn attempt_timeout(&self) -> Option<Duration> {
        self.attempt_timeout
    }

    /// The configured total budget.
    ///
    /// ```
    /// use std::time::Duration;
    /// use vertex_batch::policy::RetryPolicy;
    /// assert_eq!(RetryPolicy::default().total_timeout(), Some(Duration::from_secs(300)));
    /// ```
    pub fn total_timeout(&self) -> Option<Duration> {
        self.total_timeout
    }

    /// The first backoff.
    ///
    /// ```
    /// use std::time::Duration;
    /// use vertex_batch::policy::RetryPolicy;
    /// assert_eq!(RetryPolicy::default().initial_backoff(), Duration::from_secs(1));
    /// ```
    pub fn initial_backoff(&self) -> Duration {
        self.backoff.initial
    }

    /// The longest backoff (and the cap on a server's `RetryInfo` delay).
    ///
    /// ```
    /// use std::time::Duration;
    /// use vertex_batch::policy::RetryPolicy;
    /// assert_eq!(RetryPolicy::default().max_backoff(), Duration::from_secs(30));
    /// ```
    pub fn max_backoff(&self) -> Duration {
        self.backoff.cap
    }

    /// The factor each backoff grows by.
    ///
    /// ```
    /// use vertex_batch::policy::RetryPolicy;
    /// assert_eq!(RetryPolicy::default().multiplier(), 2.0);
    /// ```
    pub fn multiplier(&self) -> f64 {
        self.backoff.multiplier
    }

    /// The backoff before attempt `attempt + 1` (`attempt` counts from 1),
    /// before jitter.
    ///
    /// ```
    /// use vertex_batch::policy::RetryPolicy;
    /// let policy = RetryPolicy::default();
    /// let delays: Vec<u64> = (1..=7).map(|a| policy.backoff(a).as_secs()).collect();
    /// assert_eq!(delays, [1, 2, 4, 8, 16, 30, 30]);
    /// ```
    pub fn backoff(&self, attempt: u32) -> Duration {
        self.backoff.delay(attempt.saturating_sub(1))
    }

    /// What to do after attempt `attempt` failed with `err`, `elapsed` into
    /// the call: `Some(delay)` to retry after `delay`, `None` to give up.
    ///
    /// ```
    /// use std::time::Duration;
    /// use vertex_batch::{policy::RetryPolicy, Error};
    /// let policy = RetryPolicy::default();
    /// let down = Error::from_status(tonic::Status::unavailable("down"), "test");
    /// assert!(policy.next_delay(1, &down, Duration::ZERO).unwrap() <= policy.backoff(1));
    /// assert_eq!(policy.next_delay(6, &down, Duration::ZERO), None); // out of attempts
    /// let bad = Error::from_status(tonic::Status::invalid_argument("bad"), "test");
    /// assert_eq!(policy.next_delay(1, &bad, Duration::ZERO), None); // never retried
    /// ```
    pub fn next_delay(&self, attempt: u32, err: &Error, elapsed: Duration) -> Option<Duration> {
        if !err.is_retryable() || attempt >= self.max_attempts {
            return None;
        }
        let base = self.backoff(attempt);
        // Full jitter spreads the retries of many clients.
        let jittered = base.mul_f64(fastrand::f64());
        // A server's RetryInfo is honoured, but never past the policy's
        // longest backoff: a bogus (or hostile) hour-long delay must not
        // stall a call that has no total budget.
        let delay = match err.retry_delay() {
            Some(asked) => asked.min(self.backoff.cap).max(jittered),
            None => jittered,
        };
        if let Some(total) = self.total_timeout {
            if elapsed.saturating_add(delay) >= total {
                return None;
            }
        }
        Some(delay)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::service::{status_with_details, StatusDetail};
    use crate::proto::rpc::RetryInfo;

    fn unavailable() -> Error {
        Error::from_status(tonic::Status::unavailable("down"), "test")
    }

    #[test]
    fn a_servers_retry_delay_is_capped_even_without_a_budget() {
        let asking = |seconds| {
            let status = status_with_details(
                tonic::Code::ResourceExhausted,
                "slow down",
                &[StatusDetail::RetryInfo(RetryInfo {
                    retry_delay: Some(pbjson_types::Duration { seconds, nanos: 0 }),
                })],
            );
            Error::from_status(status, "test")
        };
        let err = asking(86_400);
        assert_eq!(err.retry_delay(), Some(Duration::from_secs(86_400)));
        let p = RetryPolicy::default().with_total_timeout(None);
        let d = p.next_delay(1, &err, Duration::ZERO).unwrap();
        assert!(d <= Duration::from_secs(30), "{d:?}");
        // A modest ask is honoured.
        let d = p.next_delay(1, &asking(7), Duration::ZERO).unwrap();
        assert!(d >= Duration::from_secs(7), "{d:?}");
    }

    #[test]
    fn backoff_doubles_to_the_cap() {
        let p = RetryPolicy::default();
        let secs: Vec<u64> = (1..=7).map(|a| p.backoff(a).as_secs()).collect();
        assert_eq!(secs, vec![1, 2, 4, 8, 16, 30, 30]);
    }

    #[test]
    fn only_retryable_codes_retry_and_attempts_are_bounded() {
        let p = RetryPolicy::default();
        assert!(p.next_delay(1, &unavailable(), Duration::ZERO).is_some());
        assert!(p.next_delay(6, &unavailable(), Duration::ZERO).is_none());
        for code in [
            tonic::Code::InvalidArgument,
            tonic::Code::NotFound,
            tonic::Code::PermissionDenied,
            tonic::Code::FailedPrecondition,
            tonic::Code::Unauthenticated,
            tonic::Code::Internal,
        ] {
            let e = Error::from_status(tonic::Status::new(code, "x"), "test");
            assert!(p.next_delay(1, &e, Duration::ZERO).is_none(), "{code:?}");
        }
        assert!(p
            .next_delay(1, &unavailable(), Duration::from_secs(300))
            .is_none());
    }

    #[test]
    fn retry_info_delay_is_honoured() {
        let status = status_with_details(
            tonic::Code::ResourceExhausted,
            "slow down",
            &[StatusDetail::RetryInfo(RetryInfo {
                retry_delay: Some(Duration::from_secs(7).into()),
            })],
        );
        let e = Error::from_status(status, "test");
        let d = RetryPolicy::default()
            .next_delay(1, &e, Duration::ZERO)
            .unwrap();
        assert_eq!(d, Duration::from_secs(7));
    }
}
