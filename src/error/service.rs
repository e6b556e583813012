//! What the service says when a call fails: [`ServiceError`] (a gRPC status
//! with its `google.rpc.Status` details decoded) and [`StatusDetail`].
//!
//! A job's own `error` and `partial_failures` use the same types.

use std::{fmt, time::Duration};

use prost::Message;

use crate::proto::google::rpc;

/// A non-OK gRPC status from the service, with its details decoded.
///
/// ```
/// use vertex_batch::{proto::rpc, error::{status_with_details, ServiceError, StatusDetail}};
/// let violation = rpc::bad_request::FieldViolation {
///     field: "batch_prediction_job.model".into(),
///     description: "unknown model".into(),
///     ..Default::default()
/// };
/// let status = status_with_details(
///     tonic::Code::InvalidArgument,
///     "bad request",
///     &[StatusDetail::BadRequest(rpc::BadRequest { field_violations: vec![violation] })],
/// );
/// let err = ServiceError::from_status(&status);
/// assert_eq!(err.code(), tonic::Code::InvalidArgument);
/// assert_eq!(err.field_violations()[0].field, "batch_prediction_job.model");
/// ```
#[derive(Clone, PartialEq)]
pub struct ServiceError {
    code: tonic::Code,
    message: String,
    details: Vec<StatusDetail>,
}

impl ServiceError {
    /// Decodes a tonic status, including its `google.rpc.Status` details.
    ///
    /// ```
    /// use vertex_batch::error::ServiceError;
    /// let err = ServiceError::from_status(&tonic::Status::permission_denied("no access"));
    /// assert_eq!(err.code(), tonic::Code::PermissionDenied);
    /// assert!(err.details().is_empty());
    /// ```
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
    ///
    /// ```
    /// use vertex_batch::{proto::rpc, error::ServiceError};
    /// let status = rpc::Status { code: 3, message: "bad input".into(), details: vec![] };
    /// let err = ServiceError::from_rpc_status(&status);
    /// assert_eq!(err.code(), tonic::Code::InvalidArgument);
    /// ```
    pub fn from_rpc_status(status: &rpc::Status) -> Self {
        ServiceError {
            code: tonic::Code::from_i32(status.code),
            message: status.message.clone(),
            details: status.details.iter().map(StatusDetail::from_any).collect(),
        }
    }

    /// Replaces `secret` in the message with `mark`.
    pub(crate) fn redact(&mut self, secret: &str, mark: &str) {
        self.message = self.message.replace(secret, mark);
    }

    /// The gRPC code.
    ///
    /// ```
    /// use vertex_batch::error::ServiceError;
    /// let err = ServiceError::from_status(&tonic::Status::resource_exhausted("quota"));
    /// assert_eq!(err.code(), tonic::Code::ResourceExhausted);
    /// ```
    pub fn code(&self) -> tonic::Code {
        self.code
    }

    /// The status message.
    ///
    /// ```
    /// use vertex_batch::error::ServiceError;
    /// let err = ServiceError::from_status(&tonic::Status::not_found("job 42 not found"));
    /// assert_eq!(err.message(), "job 42 not found");
    /// ```
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The decoded details, in the order the service sent them.
    ///
    /// ```
    /// use vertex_batch::{proto::rpc, error::{status_with_details, ServiceError, StatusDetail}};
    /// let info = rpc::ErrorInfo { reason: "RATE_LIMIT_EXCEEDED".into(), ..Default::default() };
    /// let detail = StatusDetail::ErrorInfo(info);
    /// let status = status_with_details(tonic::Code::ResourceExhausted, "quota", &[detail]);
    /// assert!(matches!(ServiceError::from_status(&status).details(), [StatusDetail::ErrorInfo(_)]));
    /// ```
    pub fn details(&self) -> &[StatusDetail] {
        &self.details
    }

    /// The field violations of every `google.rpc.BadRequest` detail.
    ///
    /// ```
    /// use vertex_batch::{proto::rpc, error::{status_with_details, ServiceError, StatusDetail}};
    /// let v = rpc::bad_request::FieldViolation { field: "display_name".into(), ..Default::default() };
    /// let bad = StatusDetail::BadRequest(rpc::BadRequest { field_violations: vec![v] });
    /// let status = status_with_details(tonic::Code::InvalidArgument, "bad request", &[bad]);
    /// let err = ServiceError::from_status(&status);
    /// assert_eq!(err.field_violations()[0].field, "display_name");
    /// ```
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
    ///
    /// ```
    /// use vertex_batch::{proto::rpc, error::{status_with_details, ServiceError, StatusDetail}};
    /// let info = rpc::ErrorInfo { reason: "RATE_LIMIT_EXCEEDED".into(), ..Default::default() };
    /// let detail = StatusDetail::ErrorInfo(info);
    /// let status = status_with_details(tonic::Code::ResourceExhausted, "quota", &[detail]);
    /// let err = ServiceError::from_status(&status);
    /// assert_eq!(err.error_info().unwrap().reason, "RATE_LIMIT_EXCEEDED");
    /// ```
    pub fn error_info(&self) -> Option<&rpc::ErrorInfo> {
        self.details.iter().find_map(|d| match d {
            StatusDetail::ErrorInfo(e) => Some(e),
            _ => None,
        })
    }

    /// The delay asked for by a `google.rpc.RetryInfo` detail, if present.
    ///
    /// ```
    /// use std::time::Duration;
    /// use vertex_batch::{proto::{protobuf, rpc}, error::{status_with_details, ServiceError, StatusDetail}};
    /// let delay = Some(protobuf::Duration { seconds: 30, nanos: 0 });
    /// let retry = StatusDetail::RetryInfo(rpc::RetryInfo { retry_delay: delay });
    /// let err = ServiceError::from_status(&status_with_details(tonic::Code::Unavailable, "busy", &[retry]));
    /// assert_eq!(err.retry_delay(), Some(Duration::from_secs(30)));
    /// ```
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
///
/// ```
/// use vertex_batch::{proto::rpc, error::StatusDetail};
/// let retry = StatusDetail::RetryInfo(rpc::RetryInfo {
///     retry_delay: Some(pbjson_types::Duration { seconds: 30, nanos: 0 }),
/// });
/// let any = retry.to_any();
/// assert_eq!(any.type_url, "type.googleapis.com/google.rpc.RetryInfo");
/// ```
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
    ///
    /// ```
    /// use vertex_batch::{proto::rpc, error::StatusDetail};
    /// let any = StatusDetail::BadRequest(rpc::BadRequest::default()).to_any();
    /// assert_eq!(any.type_url, "type.googleapis.com/google.rpc.BadRequest");
    /// ```
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
///
/// ```
/// use vertex_batch::{proto::rpc, error::{status_with_details, ServiceError, StatusDetail}};
/// let detail = StatusDetail::ErrorInfo(rpc::ErrorInfo { reason: "RATE_LIMIT_EXCEEDED".into(), ..Default::default() });
/// let status = status_with_details(tonic::Code::ResourceExhausted, "quota", &[detail.clone()]);
/// assert_eq!(status.code(), tonic::Code::ResourceExhausted);
/// assert_eq!(ServiceError::from_status(&status).details(), &[detail]);
/// ```
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
