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

use std::{fmt, time::Duration};

use prost::Message;

use crate::proto::google::rpc;

/// A boxed error kept as the source of an [`Error`].
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Everything that can go wrong in this crate.
///
/// # Troubleshooting
///
/// * [`Error::Validation`]: the request was rejected locally, before any
///   network call. `field` names the offending field (e.g. `output_uri`).
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
///   `SUCCEEDED`; the final job is inside.
/// * [`Error::Storage`]: a Cloud Storage call failed; `http_status` is the
///   HTTP status when the server answered (404: the bucket or object does not
///   exist; 401/403: the credentials lack access to the bucket).
/// * [`Error::Output`]: a line of a job's output could not be read; `file`
///   and `line` say where. The rest of the output is still read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A request or value was rejected locally, before any network call.
    #[error("invalid {field}: {message}")]
    Validation {
        /// The field (or argument) that is wrong, e.g. `output_uri` or `labels`.
        field: String,
        /// What is wrong with it.
        message: String,
    },
    /// The client could not be configured.
    #[error("configuration error: {0}")]
    Config(String),
    /// Credentials could not produce an access token.
    #[error("authentication failed: {message}")]
    Auth {
        /// What failed (never contains a token).
        message: String,
        /// The underlying error.
        #[source]
        source: Option<BoxError>,
    },
    /// The connection to the endpoint failed.
    #[error("transport error talking to {endpoint}: {message}")]
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
    NotGrpc {
        /// The endpoint the client talks to.
        endpoint: String,
        /// What came back instead.
        detail: String,
    },
    /// A deadline ran out.
    #[error("timed out after {after:?} {during}")]
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
    JobNotSucceeded(Box<crate::Job>),
    /// A Cloud Storage call failed.
    #[error("Cloud Storage: {message}")]
    Storage {
        /// What failed, naming the object or bucket (never a token).
        message: String,
        /// The HTTP status, when the server answered.
        http_status: Option<u16>,
        /// The underlying error.
        #[source]
        source: Option<BoxError>,
    },
    /// A line of a batch job's output could not be read.
    #[error("{file}:{line}: {message}")]
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
            Error::Service(s) => s.message = s.message.replace(secret, MARK),
            Error::Transport { message, .. } => *message = message.replace(secret, MARK),
            Error::NotGrpc { detail, .. } => *detail = detail.replace(secret, MARK),
            _ => {}
        }
    }

    pub(crate) fn validation(field: impl Into<String>, message: impl Into<String>) -> Self {
        Error::Validation {
            field: field.into(),
            message: message.into(),
        }
    }

    /// The gRPC status code, for errors the service (or the transport) reported.
    ///
    /// ```
    /// # use vertex_batch::Error;
    /// let err = Error::from_status(tonic::Status::not_found("no such job"), "emulator");
    /// assert_eq!(err.code(), Some(tonic::Code::NotFound));
    /// ```
    pub fn code(&self) -> Option<tonic::Code> {
        match self {
            Error::Service(s) => Some(s.code),
            Error::Transport { .. } => Some(tonic::Code::Unavailable),
            Error::Timeout { .. } => Some(tonic::Code::DeadlineExceeded),
            _ => None,
        }
    }

    /// Whether trying the same call again may succeed: `UNAVAILABLE`,
    /// `RESOURCE_EXHAUSTED`, `DEADLINE_EXCEEDED` (and transport failures and
    /// timeouts). Whether it is *safe* to retry depends on the call: a create
    /// is not idempotent (see [`crate::Client::submit`]).
    pub fn is_retryable(&self) -> bool {
        if let Error::Storage { http_status, .. } = self {
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
    pub fn as_service(&self) -> Option<&ServiceError> {
        match self {
            Error::Service(s) => Some(s),
            _ => None,
        }
    }

    /// The delay the service asked for in a `google.rpc.RetryInfo`, if any.
    pub fn retry_delay(&self) -> Option<Duration> {
        self.as_service().and_then(ServiceError::retry_delay)
    }

    /// Builds an error from a gRPC status received from `endpoint`.
    ///
    /// Decodes `google.rpc.Status` details and recognises answers that were
    /// not gRPC at all (an HTML page or an HTTP error from a wrong endpoint).
    pub fn from_status(status: tonic::Status, endpoint: &str) -> Self {
        if let Some(auth) = find_source::<crate::client::layer::AuthFailure>(&status) {
            return Error::Auth {
                message: auth.0.clone(),
                source: None,
            };
        }
        if let Some(not_grpc) = find_source::<crate::client::layer::NotGrpcResponse>(&status) {
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

/// A non-OK gRPC status from the service, with its details decoded.
#[derive(Clone, PartialEq)]
pub struct ServiceError {
    code: tonic::Code,
    message: String,
    details: Vec<StatusDetail>,
}

impl ServiceError {
    /// Decodes a tonic status, including its `google.rpc.Status` details.
    pub fn from_status(status: &tonic::Status) -> Self {
        let details = if status.details().is_empty() {
            Vec::new()
        } else {
            match rpc::Status::decode(status.details()) {
                Ok(s) => s.details.iter().map(StatusDetail::from_any).collect(),
                Err(_) => Vec::new(),
            }
        };
        ServiceError {
            code: status.code(),
            message: status.message().to_owned(),
            details,
        }
    }

    /// Builds one from a `google.rpc.Status` (e.g. a job's `error` field).
    pub fn from_rpc_status(status: &rpc::Status) -> Self {
        ServiceError {
            code: tonic::Code::from_i32(status.code),
            message: status.message.clone(),
            details: status.details.iter().map(StatusDetail::from_any).collect(),
        }
    }

    /// The gRPC code.
    pub fn code(&self) -> tonic::Code {
        self.code
    }

    /// The status message.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The decoded details, in the order the service sent them.
    pub fn details(&self) -> &[StatusDetail] {
        &self.details
    }

    /// The field violations of every `google.rpc.BadRequest` detail.
    pub fn field_violations(&self) -> Vec<&rpc::bad_request::FieldViolation> {
        self.details
            .iter()
            .filter_map(|d| match d {
                StatusDetail::BadRequest(b) => Some(b.field_violations.iter()),
                _ => None,
            })
            .flatten()
            .collect()
    }

    /// The `google.rpc.ErrorInfo` detail, if present.
    pub fn error_info(&self) -> Option<&rpc::ErrorInfo> {
        self.details.iter().find_map(|d| match d {
            StatusDetail::ErrorInfo(e) => Some(e),
            _ => None,
        })
    }

    /// The delay asked for by a `google.rpc.RetryInfo` detail, if present.
    pub fn retry_delay(&self) -> Option<Duration> {
        self.details.iter().find_map(|d| match d {
            StatusDetail::RetryInfo(r) => r
                .retry_delay
                .as_ref()
                .and_then(|d| Duration::try_from(*d).ok()),
            _ => None,
        })
    }
}

impl fmt::Debug for ServiceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServiceError")
            .field("code", &self.code)
            .field("message", &self.message)
            .field("details", &self.details)
            .finish()
    }
}

impl fmt::Display for ServiceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}: {}", self.code, self.message)?;
        for d in &self.details {
            match d {
                StatusDetail::BadRequest(b) => {
                    for v in &b.field_violations {
                        write!(f, "; field {}: {}", v.field, v.description)?;
                    }
                }
                StatusDetail::ErrorInfo(e) => {
                    write!(f, "; reason {} ({})", e.reason, e.domain)?;
                }
                StatusDetail::QuotaFailure(q) => {
                    for v in &q.violations {
                        write!(f, "; quota {}: {}", v.subject, v.description)?;
                    }
                }
                StatusDetail::RetryInfo(_) => {
                    if let Some(d) = self.retry_delay() {
                        write!(f, "; retry after {d:?}")?;
                    }
                }
                StatusDetail::PreconditionFailure(p) => {
                    for v in &p.violations {
                        write!(
                            f,
                            "; precondition {} {}: {}",
                            v.r#type, v.subject, v.description
                        )?;
                    }
                }
                StatusDetail::ResourceInfo(r) => {
                    write!(f, "; resource {} {}", r.resource_type, r.resource_name)?;
                }
                StatusDetail::LocalizedMessage(m) => write!(f, "; {}", m.message)?,
                StatusDetail::Help(_)
                | StatusDetail::DebugInfo(_)
                | StatusDetail::RequestInfo(_)
                | StatusDetail::Other(_) => {}
            }
        }
        Ok(())
    }
}

impl std::error::Error for ServiceError {}

/// One decoded detail of a `google.rpc.Status`.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum StatusDetail {
    /// `google.rpc.BadRequest`: which request fields are wrong.
    BadRequest(rpc::BadRequest),
    /// `google.rpc.ErrorInfo`: a machine-readable reason and domain.
    ErrorInfo(rpc::ErrorInfo),
    /// `google.rpc.QuotaFailure`: which quota ran out.
    QuotaFailure(rpc::QuotaFailure),
    /// `google.rpc.RetryInfo`: how long to wait before retrying.
    RetryInfo(rpc::RetryInfo),
    /// `google.rpc.PreconditionFailure`.
    PreconditionFailure(rpc::PreconditionFailure),
    /// `google.rpc.ResourceInfo`.
    ResourceInfo(rpc::ResourceInfo),
    /// `google.rpc.Help`.
    Help(rpc::Help),
    /// `google.rpc.LocalizedMessage`.
    LocalizedMessage(rpc::LocalizedMessage),
    /// `google.rpc.DebugInfo`.
    DebugInfo(rpc::DebugInfo),
    /// `google.rpc.RequestInfo`.
    RequestInfo(rpc::RequestInfo),
    /// A detail of a type this crate does not decode (or that failed to decode).
    Other(pbjson_types::Any),
}

const TYPE_PREFIX: &str = "type.googleapis.com/google.rpc.";

impl StatusDetail {
    fn from_any(any: &pbjson_types::Any) -> Self {
        fn dec<M: Message + Default>(any: &pbjson_types::Any) -> Option<M> {
            M::decode(any.value.as_ref()).ok()
        }
        let name = any.type_url.strip_prefix(TYPE_PREFIX).unwrap_or("");
        let decoded = match name {
            "BadRequest" => dec(any).map(StatusDetail::BadRequest),
            "ErrorInfo" => dec(any).map(StatusDetail::ErrorInfo),
            "QuotaFailure" => dec(any).map(StatusDetail::QuotaFailure),
            "RetryInfo" => dec(any).map(StatusDetail::RetryInfo),
            "PreconditionFailure" => dec(any).map(StatusDetail::PreconditionFailure),
            "ResourceInfo" => dec(any).map(StatusDetail::ResourceInfo),
            "Help" => dec(any).map(StatusDetail::Help),
            "LocalizedMessage" => dec(any).map(StatusDetail::LocalizedMessage),
            "DebugInfo" => dec(any).map(StatusDetail::DebugInfo),
            "RequestInfo" => dec(any).map(StatusDetail::RequestInfo),
            _ => None,
        };
        decoded.unwrap_or_else(|| StatusDetail::Other(any.clone()))
    }

    /// Packs this detail into a `google.protobuf.Any` (used by the emulator
    /// and by tests that script service errors).
    pub fn to_any(&self) -> pbjson_types::Any {
        fn pack<M: Message>(name: &str, m: &M) -> pbjson_types::Any {
            pbjson_types::Any {
                type_url: format!("{TYPE_PREFIX}{name}"),
                value: m.encode_to_vec().into(),
            }
        }
        match self {
            StatusDetail::BadRequest(m) => pack("BadRequest", m),
            StatusDetail::ErrorInfo(m) => pack("ErrorInfo", m),
            StatusDetail::QuotaFailure(m) => pack("QuotaFailure", m),
            StatusDetail::RetryInfo(m) => pack("RetryInfo", m),
            StatusDetail::PreconditionFailure(m) => pack("PreconditionFailure", m),
            StatusDetail::ResourceInfo(m) => pack("ResourceInfo", m),
            StatusDetail::Help(m) => pack("Help", m),
            StatusDetail::LocalizedMessage(m) => pack("LocalizedMessage", m),
            StatusDetail::DebugInfo(m) => pack("DebugInfo", m),
            StatusDetail::RequestInfo(m) => pack("RequestInfo", m),
            StatusDetail::Other(a) => a.clone(),
        }
    }
}

/// Builds a `tonic::Status` carrying `google.rpc.Status` details, the way
/// Google services send them (in the `grpc-status-details-bin` trailer).
pub fn status_with_details(
    code: tonic::Code,
    message: impl Into<String>,
    details: &[StatusDetail],
) -> tonic::Status {
    let message = message.into();
    let rpc_status = rpc::Status {
        code: code as i32,
        message: message.clone(),
        details: details.iter().map(StatusDetail::to_any).collect(),
    };
    tonic::Status::with_details(code, message, rpc_status.encode_to_vec().into())
}

/// A `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
