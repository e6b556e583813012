//! Retrying Cloud Storage calls, and turning their failures into
//! [`Error::Storage`].

use std::{fmt, time::Duration};

use gcloud_storage::http::{self as gcs};

use crate::error::{Error, Result};

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
/// times. `what` names the call in errors and logs.
pub(super) async fn retrying<T, F, Fut>(what: &str, mut call: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = std::result::Result<T, gcs::Error>>,
{
    let mut attempt = 0u32;
    loop {
        match call().await {
            Ok(v) => return Ok(v),
            Err(e) => {
                let err = storage_error(what, e);
                if attempt >= RETRIES || !err.is_retryable() {
                    return Err(err);
                }
                attempt += 1;
                let delay = retry_delay(attempt);
                tracing::warn!(attempt, ?delay, error = %err, "Cloud Storage call failed; trying again");
                tokio::time::sleep(delay).await;
            }
        }
    }
}

/// Maps a gcloud-storage error, naming what was being done.
pub(super) fn storage_error(what: impl fmt::Display, e: gcs::Error) -> Error {
    // reqwest's errors name the URL, and a resumable session's URL is a
    // credential of its own (its `upload_id` lets anyone write the object):
    // keep it out of messages and the source chain.
    let e = match e {
        gcs::Error::HttpClient(r) => gcs::Error::HttpClient(r.without_url()),
        gcs::Error::RawResponse(r, body) => gcs::Error::RawResponse(r.without_url(), body),
        other => other,
    };
    let http_status = match &e {
        gcs::Error::Response(r) => Some(r.code),
        gcs::Error::HttpClient(r) | gcs::Error::RawResponse(r, _) => r.status().map(|s| s.as_u16()),
        _ => None,
    };
    let detail = match &e {
        gcs::Error::TokenSource(_) => "could not obtain an access token".to_owned(),
        other => other.to_string(),
    };
    Error::Storage {
        message: format!("{what}: {detail}"),
        http_status,
        source: Some(Box::new(e)),
    }
}
