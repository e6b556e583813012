//! Retrying Cloud Storage calls, and turning their failures into
//! [`Error::Storage`].

use std::time::Duration;

use crate::error::Result;

/// How many times an idempotent call (a listing page, the start of a read,
/// a metadata look-up) is tried again after a retryable failure (no answer,
/// 408, 429, 5xx).
pub(super) const RETRIES: u32 = 4;

/// The wait before retry `attempt` (1-based): 200 ms doubling, jittered
/// to between half and all of it.
pub(super) fn retry_delay(attempt: u32) -> Duration {
    Duration::from_millis(100u64 << attempt.min(16)).mul_f64(0.5 + fastrand::f64() / 2.0)
}

/// Runs `call`, trying it again (with jittered exponential backoff from
/// 100 ms) while it fails with a retryable status, at most [`RETRIES`]
/// times. `what` names the call in logs (`call` names it in its errors).
pub(crate) async fn retrying<T, F, Fut>(what: &str, mut call: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T>>,
{
    let mut attempt = 0u32;
    loop {
        match call().await {
            Ok(v) => return Ok(v),
            Err(err) => {
                if attempt >= RETRIES || !err.is_retryable() {
                    return Err(err);
                }
                attempt += 1;
                let delay = retry_delay(attempt);
                tracing::warn!(call = what, attempt, ?delay, error = %err, "Cloud Storage call failed; trying again");
                tokio::time::sleep(delay).await;
            }
        }
    }
}
