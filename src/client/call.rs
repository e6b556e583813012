//! One RPC, the way every call is made: the routing header, the
//! per-attempt deadline, the retry loop, a tracing span, and errors with any
//! echoed credential scrubbed.

use std::future::Future;

use tokio::time::Instant;
use tonic::metadata::{Ascii, MetadataMap, MetadataValue};
use tracing::Instrument;

use super::handle::{Client, Stubs};
use crate::{
    error::{Error, Result},
    policy::RetryPolicy,
    transport::headers::{grpc_timeout, routing_header, GRPC_TIMEOUT, REQUEST_PARAMS_STR},
};

/// The headers a call carries: `grpc-timeout`, `x-goog-request-params`;
/// tonic's `te`, `content-type`, `user-agent`; the layer's `authorization`,
/// `x-goog-api-client`, `x-goog-user-project`.
const HEADERS_PER_CALL: usize = 8;

/// The routing parameter of one call (`name` or `parent` and its value),
/// sent as `x-goog-request-params` and named in the call's tracing span.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Routing<'a> {
    key: &'static str,
    value: &'a str,
}

impl<'a> Routing<'a> {
    pub(crate) fn name(value: &'a str) -> Self {
        Routing { key: "name", value }
    }

    pub(crate) fn endpoint(value: &'a str) -> Self {
        Routing {
            key: "endpoint",
            value,
        }
    }

    pub(crate) fn parent(value: &'a str) -> Self {
        Routing {
            key: "parent",
            value,
        }
    }
}

impl Client {
    /// Runs one RPC under the retry policy (when `idempotent`), with a
    /// per-attempt deadline, a tracing span and the routing header.
    pub(crate) async fn call<Req, Resp, F, Fut>(
        &self,
        method: &'static str,
        routing: Routing<'_>,
        idempotent: bool,
        request: Req,
        rpc: F,
    ) -> Result<Resp>
    where
        Req: Clone,
        F: Fn(&Stubs, tonic::Request<Req>) -> Fut,
        Fut: Future<Output = std::result::Result<tonic::Response<Resp>, tonic::Status>>,
    {
        let once;
        let policy = if idempotent {
            &self.inner.retry
        } else {
            once = self.inner.retry.clone().with_max_attempts(1);
            &once
        };
        let routing_value = routing_header(routing.key, routing.value);
        let started = Instant::now();
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let span = tracing::debug_span!(
                "vertex_batch.rpc",
                method,
                resource = %routing.value,
                attempt,
                code = tracing::field::Empty,
                latency_ms = tracing::field::Empty,
            );
            let mut req = tonic::Request::new(request.clone());
            let metadata = req.metadata_mut();
            // Room for every header the call will carry (ours, tonic's, the
            // layer's), so the map is allocated once and never rehashed.
            *metadata = MetadataMap::with_capacity(HEADERS_PER_CALL);
            if let Some(value) = &routing_value {
                metadata.insert(REQUEST_PARAMS_STR, value.clone());
            }
            // The channel enforces this deadline locally too, so no timer of
            // our own is needed.
            if let Some(deadline) = self.attempt_deadline(policy, attempt, started) {
                metadata.insert(GRPC_TIMEOUT, deadline);
            }
            // The latency is measured only for a span that records it.
            let sent = (!span.is_disabled()).then(std::time::Instant::now);
            let outcome = rpc(&self.inner.stubs, req)
                .instrument(span.clone())
                .await
                .map_err(|s| deadline_as_deadline(s, method));
            if let Some(sent) = sent {
                span.record("latency_ms", sent.elapsed().as_millis() as u64);
            }
            match outcome {
                Ok(resp) => {
                    span.record("code", "OK");
                    span.in_scope(|| tracing::debug!("rpc ok"));
                    return Ok(resp.into_inner());
                }
                Err(status) => {
                    span.record("code", tracing::field::debug(status.code()));
                    let mut err = Error::from_status(status, &self.inner.endpoint);
                    // A server may echo the credentials back: never keep them.
                    if let Some(secret) = self.inner.tokens.secret() {
                        err.redact(&secret);
                    }
                    match policy.next_delay(attempt, &err, started.elapsed()) {
                        Some(delay) => {
                            span.in_scope(
                                || tracing::debug!(error = %err, ?delay, "rpc failed, retrying"),
                            );
                            tokio::time::sleep(delay).await;
                        }
                        None => {
                            span.in_scope(|| tracing::debug!(error = %err, "rpc failed"));
                            return Err(err);
                        }
                    }
                }
            }
        }
    }
}

impl Client {
    /// Runs an idempotent RPC on one job: `name` is resolved and checked
    /// ([`Client::job_path`]), the request built from the full name, and the
    /// call routed by it.
    pub(crate) async fn call_on_job<Req, Resp, F, Fut>(
        &self,
        method: &'static str,
        name: &str,
        request: impl FnOnce(String) -> Req,
        rpc: F,
    ) -> Result<Resp>
    where
        Req: Clone,
        F: Fn(&Stubs, tonic::Request<Req>) -> Fut,
        Fut: Future<Output = std::result::Result<tonic::Response<Resp>, tonic::Status>>,
    {
        let name = self.job_path(name)?;
        let request = request(name.clone());
        self.call(method, Routing::name(&name), true, request, rpc)
            .await
    }

    /// The `grpc-timeout` of attempt `attempt` of a call begun at `started`:
    /// the policy's per-attempt deadline, or what is left of its total
    /// budget when that is shorter, so no attempt outlives the budget.
    fn attempt_deadline(
        &self,
        policy: &RetryPolicy,
        attempt: u32,
        started: Instant,
    ) -> Option<MetadataValue<Ascii>> {
        // The first attempt has the whole budget: no clock to read.
        let left = policy.total_timeout().map(|total| match attempt {
            1 => total,
            _ => total.saturating_sub(started.elapsed()),
        });
        match (policy.attempt_timeout(), left) {
            (Some(each), Some(left)) if left < each => grpc_timeout(left),
            // The common case: the per-attempt deadline, formatted once.
            (Some(_), _) => self.inner.attempt_deadline.clone(),
            (None, Some(left)) => grpc_timeout(left),
            (None, None) => None,
        }
    }
}

/// Tonic reports a locally expired `grpc-timeout` as `CANCELLED` ("Timeout
/// expired"); it is a deadline, and retryable like one.
fn deadline_as_deadline(status: tonic::Status, method: &str) -> tonic::Status {
    let mut expired = false;
    let mut cur = std::error::Error::source(&status);
    while let Some(e) = cur {
        expired |= e.is::<tonic::TimeoutExpired>();
        cur = e.source();
    }
    if expired {
        tonic::Status::deadline_exceeded(format!(
            "{method}: no answer before the per-attempt deadline"
        ))
    } else {
        status
    }
}
