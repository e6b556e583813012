//! The crate's one error type.
//!
//! Every fallible call returns [`Error`]. It keeps the cause chain
//! ([`std::error::Error::source`]) and answers the questions callers ask:
//! [`Error::code`] (the gRPC code, for service errors), [`Error::is_retryable`]
//! (is trying again sensible?), and for service errors the decoded
//! `google.rpc.Status` details ([`ServiceError::details`]).
//!
//! No variant ever carries a credential: tokens are kept out of messages and
//! `Debug` output by construction.

pub(crate) mod service;

pub use service::{status_with_details, ServiceError, StatusDetail};

use std::time::Duration;

use crate::job::Job;
pub use crate::validation::ValidationError;

/// A boxed error kept as the source of an [`Error`].
///
/// ```
/// use vertex_batch::error::BoxError;
/// let source: BoxError = "connection reset".into();
/// assert_eq!(source.to_string(), "connection reset");
/// ```
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Everything that can go wrong in this crate.
///
/// # Troubleshooting
///
/// * [`Error::Validation`]: the request was rejected locally, before any
///   network call. [`ValidationError::field`] names the offending field
///   (e.g. `output_uri`).
/// * [`Error::Config`]: the client could not be built (missing project,
///   bad endpoint, plaintext to a remote host without opt-in, …).
/// * [`Error::Auth`]: no access token could be obtained. Check Application
///   Default Credentials (`gcloud auth application-default login`,
///   `GOOGLE_APPLICATION_CREDENTIALS`, or the metadata server).
/// * [`Error::Transport`]: the connection failed (DNS, TLS, refused, reset).
/// * [`Error::Service`]: the service answered with a gRPC status; inspect
///   [`ServiceError::code`] and [`ServiceError::details`].
/// * [`Error::NotGrpc`]: something answered that is not a gRPC server — a
///   common problem when the endpoint or the location is wrong.
/// * [`Error::Timeout`]: a deadline set on the call or on a wait ran out.
/// * [`Error::JobNotSucceeded`]: a waited-for job ended in a state that is not
///   `SUCCEEDED`; the final job is inside ([`Error::job`]).
/// * [`Error::Storage`]: a Cloud Storage call failed; `http_status` is the
///   HTTP status when the server answered (404: the bucket or object does not
///   exist; 401/403: the credentials lack access to the bucket).
/// * [`Error::BigQuery`]: a BigQuery call failed; `http_status` as for
///   Cloud Storage (404: no such dataset, table or job).
/// * [`Error::Output`]: a line of a job's output could not be read; `file`
///   and `line` say where. The rest of the output is still read.
///
/// Struct variants are `#[non_exhaustive]` (match them with `..`) and the
/// tuple variants hold opaque types, so every variant can gain fields
/// without a breaking change.
///
/// ```no_run
/// # async fn demo(client: vertex_batch::Client) -> vertex_batch::Result<()> {
/// use vertex_batch::Error;
/// match client.get("1234567890").await {
///     Ok(job) => println!("{}", job.state()),
///     Err(Error::Validation(v)) => eprintln!("fix {}: {}", v.field(), v.message()),
///     Err(Error::Auth { message, .. }) => eprintln!("credentials: {message}"),
///     Err(e) if e.code() == Some(tonic::Code::NotFound) => eprintln!("no such job"),
///     Err(e) if e.is_retryable() => eprintln!("try again later: {e}"),
///     Err(e) => return Err(e),
/// }
/// # Ok(()) }
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A request or value was rejected locally, before any network call;
    /// [`ValidationError::field`] names what is wrong.
    #[error(transparent)]
    Validation(ValidationError),
    /// The client could not be configured.
    #[error("configuration error: {message}")]
    #[non_exhaustive]
    Config {
        /// What is wrong with the configuration.
        message: String,
    },
    /// Credentials could not produce an access token.
    #[error("authentication failed: {message}")]
    #[non_exhaustive]
    Auth {
        /// What failed (never contains a token).
        message: String,
        /// The underlying error.
        #[source]
        source: Option<BoxError>,
    },
    /// The connection to the endpoint failed.
    #[error("transport error talking to {endpoint}: {message}")]
    #[non_exhaustive]
    Transport {
        /// The endpoint the client talks to.
        endpoint: String,
        /// A description of the failure.
        message: String,
        /// The underlying error.
        #[source]
        source: Option<BoxError>,
    },
    /// The service answered with a non-OK gRPC status.
    #[error(transparent)]
    Service(Box<ServiceError>),
    /// The endpoint answered, but not with gRPC (HTML, plain HTTP error...).
    #[error(
        "the server at {endpoint} did not answer with gRPC ({detail}); this is a common problem \
         when using an invalid endpoint, or a location that does not match the endpoint's region"
    )]
    #[non_exhaustive]
    NotGrpc {
        /// The endpoint the client talks to.
        endpoint: String,
        /// What came back instead.
        detail: String,
    },
    /// A deadline ran out.
    #[error("timed out after {after:?} {during}")]
    #[non_exhaustive]
    Timeout {
        /// How long was waited.
        after: Duration,
        /// What was being waited for.
        during: String,
    },
    /// A job ended in a terminal state other than `SUCCEEDED`.
    ///
    /// Returned by [`crate::Client::wait`]; the final job is kept so
    /// the caller can inspect its error, stats and partial failures.
    #[error("job {} ended {:?}{}", .0.name(), .0.state(), .0.error().map(|e| format!(": {e}")).unwrap_or_default())]
    JobNotSucceeded(Box<Job>),
    /// A Cloud Storage call failed.
    #[error("Cloud Storage: {message}")]
    #[non_exhaustive]
    Storage {
        /// What failed, naming the object or bucket (never a token).
        message: String,
        /// The HTTP status, when the server answered.
        http_status: Option<u16>,
        /// The underlying error.
        #[source]
        source: Option<BoxError>,
    },
    /// A BigQuery call failed.
    #[error("BigQuery: {message}")]
    #[non_exhaustive]
    BigQuery {
        /// What failed, naming the dataset, table or job (never a token).
        message: String,
        /// The HTTP status, when the server answered.
        http_status: Option<u16>,
        /// The underlying error.
        #[source]
        source: Option<BoxError>,
    },
    /// A line of a batch job's output could not be read.
    #[error("{file}:{line}: {message}")]
    #[non_exhaustive]
    Output {
        /// The output file (`gs://…` or a local path).
        file: String,
        /// The 1-based line number.
        line: u64,
        /// What is wrong with the line.
        message: String,
    },
}

impl Error {
    /// Replaces `secret` (a token a server echoed back) in every message.
    pub(crate) fn redact(&mut self, secret: &str) {
        const MARK: &str = "[REDACTED]";
        match self {
            Error::Service(s) => s.redact(secret, MARK),
            Error::Transport { message, .. } => *message = message.replace(secret, MARK),
            Error::NotGrpc { detail, .. } => *detail = detail.replace(secret, MARK),
            _ => {}
        }
    }

    pub(crate) fn validation(field: impl Into<String>, message: impl Into<String>) -> Self {
        Error::Validation(ValidationError::new(field, message))
    }

    pub(crate) fn config(message: impl Into<String>) -> Self {
        Error::Config {
            message: message.into(),
        }
    }

    /// The failed job, for [`Error::JobNotSucceeded`].
    ///
    /// ```no_run
    /// # async fn demo(client: vertex_batch::Client) -> vertex_batch::Result<()> {
    /// match client.wait("1234567890", &vertex_batch::WaitOptions::new()).await {
    ///     Ok(job) => println!("{} succeeded", job.name()),
    ///     Err(e) => match e.job() {
    ///         Some(job) => println!("{} ended {}", job.name(), job.state()),
    ///         None => return Err(e),
    ///     },
    /// }
    /// # Ok(()) }
    /// ```
    pub fn job(&self) -> Option<&Job> {
        match self {
            Error::JobNotSucceeded(job) => Some(job),
            _ => None,
        }
    }

    /// The gRPC status code, for errors the service (or the transport) reported.
    ///
    /// | variant | `code()` |
    /// |---|---|
    /// | [`Error::Service`] | the service's code |
    /// | [`Error::Transport`] | `Some(Unavailable)` (the connection failed) |
    /// | [`Error::Timeout`] | `Some(DeadlineExceeded)` (a local deadline ran out) |
    /// | [`Error::Validation`], [`Error::Config`], [`Error::Auth`], [`Error::NotGrpc`], [`Error::JobNotSucceeded`], [`Error::Storage`], [`Error::BigQuery`], [`Error::Output`] | `None`: local conditions (or another protocol) with no gRPC code; match the variant instead |
    ///
    /// ```
    /// # use vertex_batch::Error;
    /// let err = Error::from_status(tonic::Status::not_found("no such job"), "emulator");
    /// assert_eq!(err.code(), Some(tonic::Code::NotFound));
    /// ```
    pub fn code(&self) -> Option<tonic::Code> {
        match self {
            Error::Service(s) => Some(s.code()),
            Error::Transport { .. } => Some(tonic::Code::Unavailable),
            Error::Timeout { .. } => Some(tonic::Code::DeadlineExceeded),
            _ => None,
        }
    }

    /// Whether trying the same call again may succeed: `UNAVAILABLE`,
    /// `RESOURCE_EXHAUSTED`, `DEADLINE_EXCEEDED` (and transport failures and
    /// timeouts). Whether it is *safe* to retry depends on the call: a create
    /// is not idempotent (see [`crate::Client::submit`]).
    ///
    /// ```
    /// use vertex_batch::Error;
    /// assert!(Error::from_status(tonic::Status::unavailable("x"), "endpoint").is_retryable());
    /// assert!(!Error::from_status(tonic::Status::invalid_argument("x"), "endpoint").is_retryable());
    /// ```
    pub fn is_retryable(&self) -> bool {
        if let Error::Storage { http_status, .. } | Error::BigQuery { http_status, .. } = self {
            // No status: the request never got an answer (connection failure).
            return http_status.is_none_or(|s| s == 408 || s == 429 || s >= 500);
        }
        matches!(
            self.code(),
            Some(
                tonic::Code::Unavailable
                    | tonic::Code::ResourceExhausted
                    | tonic::Code::DeadlineExceeded
            )
        )
    }

    /// The service error, if this is one.
    ///
    /// ```
    /// use vertex_batch::Error;
    /// let err = Error::from_status(tonic::Status::not_found("no such job"), "endpoint");
    /// assert_eq!(err.as_service().unwrap().message(), "no such job");
    /// ```
    pub fn as_service(&self) -> Option<&ServiceError> {
        match self {
            Error::Service(s) => Some(s),
            _ => None,
        }
    }

    /// The delay the service asked for in a `google.rpc.RetryInfo`, if any.
    ///
    /// ```
    /// use std::time::Duration;
    /// use vertex_batch::{proto::{protobuf, rpc}, error::{status_with_details, StatusDetail}, Error};
    /// let delay = Some(protobuf::Duration { seconds: 30, nanos: 0 });
    /// let retry = StatusDetail::RetryInfo(rpc::RetryInfo { retry_delay: delay });
    /// let status = status_with_details(tonic::Code::ResourceExhausted, "quota", &[retry]);
    /// let err = Error::from_status(status, "endpoint");
    /// assert_eq!(err.retry_delay(), Some(Duration::from_secs(30)));
    /// ```
    pub fn retry_delay(&self) -> Option<Duration> {
        self.as_service().and_then(ServiceError::retry_delay)
    }

    /// Builds an error from a gRPC status received from `endpoint`.
    ///
    /// Decodes `google.rpc.Status` details and recognises answers that were
    /// not gRPC at all (an HTML page or an HTTP error from a wrong endpoint).
    ///
    /// ```
    /// use vertex_batch::Error;
    /// let err = Error::from_status(tonic::Status::unavailable("x"), "endpoint");
    /// assert!(matches!(err, Error::Service(_)));
    /// assert_eq!(err.code(), Some(tonic::Code::Unavailable));
    /// ```
    pub fn from_status(status: tonic::Status, endpoint: &str) -> Self {
        if let Some(auth) = find_source::<AuthFailure>(&status) {
            return Error::Auth {
                message: auth.0.clone(),
                source: None,
            };
        }
        if let Some(not_grpc) = find_source::<NotGrpcResponse>(&status) {
            return Error::NotGrpc {
                endpoint: endpoint.to_owned(),
                detail: not_grpc.to_string(),
            };
        }
        if is_transport(&status) {
            return Error::Transport {
                endpoint: endpoint.to_owned(),
                message: status.message().to_owned(),
                // The whole status: its source chain (tonic's transport
                // error, hyper's, the io::Error) stays downcastable.
                source: Some(Box::new(status)),
            };
        }
        Error::Service(Box::new(ServiceError::from_status(&status)))
    }
}

/// An authentication failure travelling through tonic as a boxed error; the
/// facade turns it back into [`Error::Auth`].
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct AuthFailure(pub(crate) String);

/// An answer that is not gRPC (an HTML page, a plain HTTP error from a
/// wrong endpoint or a proxy), recognised by its `content-type`; the facade
/// turns it into [`Error::NotGrpc`].
#[derive(Debug, thiserror::Error)]
#[error("HTTP {status} with content-type {content_type:?}")]
pub(crate) struct NotGrpcResponse {
    pub(crate) status: u16,
    pub(crate) content_type: String,
}

/// Finds an error of type `E` in the status's source chain.
fn find_source<E: std::error::Error + 'static>(status: &tonic::Status) -> Option<&E> {
    use std::error::Error as _;
    let mut cur = status.source();
    while let Some(e) = cur {
        if let Some(found) = e.downcast_ref::<E>() {
            return Some(found);
        }
        cur = e.source();
    }
    None
}

/// A status tonic synthesised from a failed connection carries the
/// transport error in its source chain.
fn is_transport(status: &tonic::Status) -> bool {
    use std::error::Error as _;
    let mut cur = status.source();
    while let Some(e) = cur {
        if e.is::<tonic::transport::Error>() || e.is::<std::io::Error>() {
            return true;
        }
        cur = e.source();
    }
    false
}

/// A `Result` with this crate's [`Error`].
///
/// ```
/// fn location(name: &str) -> vertex_batch::Result<vertex_batch::LocationName> {
///     Ok(name.parse()?)
/// }
/// assert!(location("projects/p/locations/us-central1").is_ok());
/// assert!(location("nonsense").is_err());
/// ```
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl From<ValidationError> for Error {
    fn from(e: ValidationError) -> Self {
        Error::Validation(e)
    }
}
