//! The [`Client`] handle and the state its clones share: the location,
//! the endpoint, the generated stubs over the header-adding channel, the
//! retry policy and the token cache.

use std::{fmt, sync::Arc};

use tonic::{
    metadata::{Ascii, MetadataValue},
    transport::Channel,
};

use crate::{
    error::{Error, Result},
    job::JobRef,
    names::{check_job_id, is_bare_id, JobName, JobNameRef, LocationName},
    policy::RetryPolicy,
    proto::{
        aiplatform::{
            job_service_client::JobServiceClient,
            llm_utility_service_client::LlmUtilityServiceClient,
        },
        longrunning::operations_client::OperationsClient,
    },
    transport::{
        auth::TokenCache,
        headers::{grpc_timeout, HeaderService},
    },
};

pub(crate) type Svc = HeaderService<Channel>;

/// The generated stubs over the header-adding channel.
#[derive(Clone)]
pub(crate) struct Stubs {
    pub(crate) jobs: JobServiceClient<Svc>,
    pub(crate) ops: OperationsClient<Svc>,
    /// `CountTokens` (v1 serves it on `LlmUtilityService`).
    pub(crate) llm: LlmUtilityServiceClient<Svc>,
}

pub(crate) struct Inner {
    pub(crate) parent: LocationName,
    /// `parent` as a string, formatted once.
    pub(crate) parent_path: String,
    pub(crate) endpoint: String,
    pub(crate) stubs: Stubs,
    pub(crate) retry: RetryPolicy,
    /// The `grpc-timeout` value of the retry policy's per-attempt deadline,
    /// formatted once.
    pub(crate) attempt_deadline: Option<MetadataValue<Ascii>>,
    /// The token cache the header layer uses, shared with Cloud Storage.
    pub(crate) tokens: Arc<TokenCache>,
}

impl Inner {
    pub(crate) fn new(
        parent: LocationName,
        endpoint: String,
        svc: Svc,
        retry: RetryPolicy,
        tokens: Arc<TokenCache>,
    ) -> Self {
        let stubs = Stubs {
            jobs: JobServiceClient::new(svc.clone()),
            llm: LlmUtilityServiceClient::new(svc.clone()),
            ops: OperationsClient::new(svc),
        };
        Inner::with_stubs(parent, endpoint, stubs, retry, tokens)
    }

    fn with_stubs(
        parent: LocationName,
        endpoint: String,
        stubs: Stubs,
        retry: RetryPolicy,
        tokens: Arc<TokenCache>,
    ) -> Self {
        Inner {
            tokens,
            parent_path: parent.to_string(),
            parent,
            endpoint,
            stubs,
            attempt_deadline: retry.attempt_timeout().and_then(grpc_timeout),
            retry,
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
    /// The `projects/*/locations/*` this client works in.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> vertex_batch::Result<()> {
    /// let client = vertex_batch::Client::builder()
    ///     .project("my-project")
    ///     .location("europe-west4")
    ///     .emulator_host("127.0.0.1:8080")
    ///     .build()?;
    /// assert_eq!(client.parent().to_string(), "projects/my-project/locations/europe-west4");
    /// # Ok(()) }
    /// ```
    pub fn parent(&self) -> &LocationName {
        &self.inner.parent
    }

    /// The endpoint URI the client talks to.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> vertex_batch::Result<()> {
    /// let client = vertex_batch::Client::builder()
    ///     .project("my-project")
    ///     .location("europe-west4")
    ///     .emulator_host("127.0.0.1:8080")
    ///     .build()?;
    /// assert_eq!(client.endpoint(), "http://127.0.0.1:8080");
    /// # Ok(()) }
    /// ```
    pub fn endpoint(&self) -> &str {
        &self.inner.endpoint
    }

    /// The retry policy for idempotent calls.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> vertex_batch::Result<()> {
    /// use vertex_batch::{policy::RetryPolicy, Client};
    /// let client = Client::builder().project("p").emulator_host("127.0.0.1:8080").build()?;
    /// assert_eq!(client.retry_policy(), &RetryPolicy::default());
    /// # Ok(()) }
    /// ```
    pub fn retry_policy(&self) -> &RetryPolicy {
        &self.inner.retry
    }

    /// A client sharing this one's connection and credentials, with another
    /// retry policy.
    ///
    /// ```no_run
    /// # async fn demo(client: vertex_batch::Client) -> vertex_batch::Result<()> {
    /// use vertex_batch::policy::RetryPolicy;
    /// let once = client.with_retry_policy(RetryPolicy::none()); // same connection, no retries
    /// let job = once.get("1234567890").await?;
    /// # let _ = job; Ok(()) }
    /// ```
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

    /// Resolves a job — a full name, a bare numeric id, a [`JobName`] or a
    /// [`crate::Job`] — to its full name, checking that it lives in this
    /// client's location (the service rejects a location that does not
    /// match its endpoint).
    ///
    /// ```no_run
    /// # async fn demo(client: vertex_batch::Client) -> vertex_batch::Result<()> {
    /// let name = client.resolve_job("1234567890")?;
    /// assert_eq!(name.id(), "1234567890");
    /// assert_eq!(name.parent(), client.parent());
    /// # Ok(()) }
    /// ```
    pub fn resolve_job<'a>(&self, job: impl Into<JobRef<'a>>) -> Result<JobName> {
        Ok(self.job_path(job.into().as_str())?.parse()?)
    }

    /// [`Client::resolve_job`] as the full name string the RPCs take, checked
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
}
