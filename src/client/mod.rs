//! The [`Client`]: a cheap-to-clone handle on one regional JobService
//! endpoint. Topic files hold one `impl Client` block each.

pub(crate) mod auth;
pub(crate) mod builder;
pub(crate) mod layer;
pub(crate) mod lifecycle;
pub(crate) mod multi;
pub(crate) mod submit;
pub(crate) mod wait;

use std::{fmt, future::Future, sync::Arc};

use tokio::time::Instant;
use tonic::transport::Channel;
use tracing::Instrument;

use tonic::metadata::{Ascii, MetadataMap, MetadataValue};

use self::layer::{routing_header, HeaderService, REQUEST_PARAMS_STR};
use crate::{
    error::{Error, Result},
    job::Job,
    names::{check_job_id, is_bare_id, JobName, JobNameRef, LocationName},
    proto::{
        aiplatform::{self as pb, job_service_client::JobServiceClient},
        longrunning::operations_client::OperationsClient,
    },
    retry::RetryPolicy,
    spec::JobSpec,
};

pub(crate) type Svc = HeaderService<Channel>;

/// The generated stubs over the header-adding channel.
#[derive(Clone)]
pub(crate) struct Stubs {
    pub(crate) jobs: JobServiceClient<Svc>,
    pub(crate) ops: OperationsClient<Svc>,
}

pub(crate) struct Inner {
    parent: LocationName,
    /// `parent` as a string, formatted once.
    parent_path: String,
    endpoint: String,
    stubs: Stubs,
    retry: RetryPolicy,
    /// The `grpc-timeout` value of the retry policy's per-attempt deadline,
    /// formatted once.
    attempt_deadline: Option<MetadataValue<Ascii>>,
    /// The token cache the header layer uses, shared with Cloud Storage.
    pub(crate) tokens: Arc<auth::TokenCache>,
}

impl Inner {
    pub(crate) fn new(
        parent: LocationName,
        endpoint: String,
        svc: Svc,
        retry: RetryPolicy,
        tokens: Arc<auth::TokenCache>,
    ) -> Self {
        let stubs = Stubs {
            jobs: JobServiceClient::new(svc.clone()),
            ops: OperationsClient::new(svc),
        };
        Inner::with_stubs(parent, endpoint, stubs, retry, tokens)
    }

    fn with_stubs(
        parent: LocationName,
        endpoint: String,
        stubs: Stubs,
        retry: RetryPolicy,
        tokens: Arc<auth::TokenCache>,
    ) -> Self {
        Inner {
            tokens,
            parent_path: parent.to_string(),
            parent,
            endpoint,
            stubs,
            attempt_deadline: retry.get_attempt_timeout().and_then(grpc_timeout),
            retry,
        }
    }
}

/// The `grpc-timeout` header value for `d`, in tonic's own format.
fn grpc_timeout(d: std::time::Duration) -> Option<MetadataValue<Ascii>> {
    let mut probe = tonic::Request::new(());
    probe.set_timeout(d);
    probe.metadata().get(GRPC_TIMEOUT).cloned()
}

const GRPC_TIMEOUT: &str = "grpc-timeout";

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

    pub(crate) fn parent(value: &'a str) -> Self {
        Routing {
            key: "parent",
            value,
        }
    }
}

/// A client for Vertex AI batch prediction jobs in one project and location.
///
/// Cloning is cheap (one `Arc`); every method takes `&self`, so one client
/// can serve a whole program concurrently over one HTTP/2 connection.
///
/// ```no_run
/// # async fn demo() -> vertex_batch::Result<()> {
/// use serde_json::json;
/// use vertex_batch::{Client, JobSpec};
///
/// let client = Client::builder().project("my-project").location("us-central1").build()?;
/// let job = client
///     .create(
///         &JobSpec::new("gemini-2.0-flash-001")
///             .input("gs://cloud-samples-data/batch/prompt_for_batch_gemini_predict.jsonl")
///             .output("gs://my-bucket/out")
///             .model_parameters(json!({"temperature": 0.2, "maxOutputTokens": 200})),
///     )
///     .await?;
/// println!("{} is {}", job.name(), job.state());
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Client {
    pub(crate) inner: Arc<Inner>,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("parent", &self.inner.parent.to_string())
            .field("endpoint", &self.inner.endpoint)
            .field("retry", &self.inner.retry)
            .finish_non_exhaustive()
    }
}

/// # Building and configuration
impl Client {
    /// Starts a [`builder::ClientBuilder`].
    pub fn builder() -> builder::ClientBuilder {
        builder::ClientBuilder::new()
    }

    /// The `projects/*/locations/*` this client works in.
    pub fn parent(&self) -> &LocationName {
        &self.inner.parent
    }

    /// The endpoint URI the client talks to.
    pub fn endpoint(&self) -> &str {
        &self.inner.endpoint
    }

    /// The retry policy for idempotent calls.
    pub fn retry_policy(&self) -> &RetryPolicy {
        &self.inner.retry
    }

    /// A client sharing this one's connection and credentials, with another
    /// retry policy.
    pub fn with_retry_policy(&self, retry: RetryPolicy) -> Client {
        Client {
            inner: Arc::new(Inner::with_stubs(
                self.inner.parent.clone(),
                self.inner.endpoint.clone(),
                self.inner.stubs.clone(),
                retry,
                self.inner.tokens.clone(),
            )),
        }
    }

    /// Resolves a full job name or a bare numeric id, checking that the job
    /// lives in this client's location (the service rejects a location that
    /// does not match its endpoint).
    pub fn job_name(&self, name: &str) -> Result<JobName> {
        self.job_path(name)?.parse()
    }

    /// [`Client::job_name`] as the full name string the RPCs take, checked
    /// without building a [`JobName`].
    pub(crate) fn job_path(&self, name: &str) -> Result<String> {
        if is_bare_id(name) {
            check_job_id(name)?;
            return Ok(format!(
                "{}/batchPredictionJobs/{name}",
                self.inner.parent_path
            ));
        }
        let job = JobNameRef::parse(name)?;
        if job.location != self.inner.parent.location() {
            return Err(Error::validation(
                "name",
                format!(
                    "job {name} is in location {:?} but this client talks to the {:?} endpoint; \
                     build a client for that location",
                    job.location,
                    self.inner.parent.location()
                ),
            ));
        }
        Ok(name.to_owned())
    }

    /// `projects/*/locations/*` as a string.
    pub(crate) fn parent_path(&self) -> &str {
        &self.inner.parent_path
    }

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
            once = self.inner.retry.clone().max_attempts(1);
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
        let left = policy.get_total_timeout().map(|total| match attempt {
            1 => total,
            _ => total.saturating_sub(started.elapsed()),
        });
        match (policy.get_attempt_timeout(), left) {
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

/// # Creating and reading jobs
impl Client {
    /// Creates a batch prediction job from `spec` after validating it locally.
    ///
    /// Not retried: the service has no request id, so a blind retry after a
    /// lost answer could start a second, billed job. Use
    /// [`Client::submit`] for a create that is safe to retry.
    pub async fn create(&self, spec: &JobSpec) -> Result<Job> {
        let request = spec.to_request(&self.inner.parent)?;
        self.create_request(request).await
    }

    /// Sends a prepared `CreateBatchPredictionJobRequest` as it is (no retry).
    pub async fn create_request(
        &self,
        request: pb::CreateBatchPredictionJobRequest,
    ) -> Result<Job> {
        let _valid: LocationName = request.parent.parse()?;
        let parent = request.parent.clone();
        let job = self
            .call(
                "CreateBatchPredictionJob",
                Routing::parent(&parent),
                false,
                request,
                |s, r| {
                    let mut stub = s.jobs.clone();
                    async move { stub.create_batch_prediction_job(r).await }
                },
            )
            .await?;
        Ok(Job::from(job))
    }

    /// Gets a job by full name or bare numeric id.
    ///
    /// ```no_run
    /// # async fn demo(client: vertex_batch::Client) -> vertex_batch::Result<()> {
    /// let job = client.get("1234567890").await?;
    /// println!("{}: {} ({} rows done)", job.name(), job.state(), job.completion_stats().done());
    /// # Ok(()) }
    /// ```
    pub async fn get(&self, name: impl AsRef<str>) -> Result<Job> {
        let job = self
            .call_on_job(
                "GetBatchPredictionJob",
                name.as_ref(),
                |name| pb::GetBatchPredictionJobRequest { name },
                |s, r| {
                    let mut stub = s.jobs.clone();
                    async move { stub.get_batch_prediction_job(r).await }
                },
            )
            .await?;
        Ok(Job::from(job))
    }
}
