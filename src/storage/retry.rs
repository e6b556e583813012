//! Retrying Cloud Storage calls under the client's [`RetryPolicy`] (the
//! one budget the JobService calls use too).

use std::time::Duration;

use tokio::time::Instant;

use crate::{
    error::{Error, Result},
    policy::RetryPolicy,
};

/// Runs `call` (given the attempt number, from 1), trying it again after
/// a retryable failure (no answer, 408, 429, 5xx) while `policy` allows:
/// its attempts, jittered backoff and total budget. `what` names the call
/// in logs (`call` names it in its errors). An error that used up the
/// budget says so.
pub(crate) async fn retrying<T, F, Fut>(policy: &RetryPolicy, what: &str, mut call: F) -> Result<T>
where
    F: FnMut(u32) -> Fut,
    Fut: std::future::Future<Output = Result<T>>,
{
    let started = Instant::now();
    let mut attempt = 0u32;
    loop {
        attempt += 1;
        match call(attempt).await {
            Ok(v) => return Ok(v),
            Err(err) => match next_delay(policy, attempt, &err, started) {
                Some(delay) => {
                    tracing::warn!(call = what, attempt, ?delay, error = %err, "Cloud Storage call failed; trying again");
                    tokio::time::sleep(delay).await;
                }
                None => return Err(gave_up(err, attempt, started.elapsed())),
            },
        }
    }
}

/// The wait before trying again after attempt `attempt` failed with
/// `err`, in a call begun at `started`; `None` to give up.
pub(super) fn next_delay(
    policy: &RetryPolicy,
    attempt: u32,
    err: &Error,
    started: Instant,
) -> Option<Duration> {
    policy.next_delay(attempt, err, started.elapsed())
}

/// `err` from the last of `attempts`, its message saying the retries were
/// used up (when there were retries and the error was worth more).
pub(super) fn gave_up(err: Error, attempts: u32, elapsed: Duration) -> Error {
    match err {
        Error::Storage {
            message,
            http_status,
            source,
        } if attempts > 1 && err_is_retryable(http_status) => Error::Storage {
            message: format!(
                "{message} (gave up after {attempts} attempts in {:.1} s: the retry budget is spent)",
                elapsed.as_secs_f64()
            ),
            http_status,
            source,
        },
        other => other,
    }
}

/// [`Error::is_retryable`] for a storage error's status.
fn err_is_retryable(http_status: Option<u16>) -> bool {
    Error::Storage {
        message: String::new(),
        http_status,
        source: None,
    }
    .is_retryable()
}
