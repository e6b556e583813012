//! [`ValidationError`]: a value rejected locally, before any network call.
//!
//! It sits at the bottom of the crate, beside the names and URIs that
//! produce it, and converts into [`crate::Error::Validation`] with `?`.

use std::fmt;

/// A value (a name, a URI, a field of a spec) that was rejected locally.
///
/// ```
/// use vertex_batch::{GcsUri, error::ValidationError};
/// let err: ValidationError = "s3://bucket/x".parse::<GcsUri>().unwrap_err();
/// assert_eq!(err.field(), "uri");
/// assert!(err.message().contains("gs://"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidationError {
    field: String,
    message: String,
}

impl ValidationError {
    pub(crate) fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        ValidationError {
            field: field.into(),
            message: message.into(),
        }
    }

    /// The field (or argument) that is wrong, e.g. `output_uri` or `labels`.
    ///
    /// ```
    /// use vertex_batch::{error::ValidationError, GcsUri};
    /// let err: ValidationError = "s3://bucket/x".parse::<GcsUri>().unwrap_err();
    /// assert_eq!(err.field(), "uri");
    /// ```
    pub fn field(&self) -> &str {
        &self.field
    }

    /// What is wrong with it.
    ///
    /// ```
    /// use vertex_batch::{error::ValidationError, GcsUri};
    /// let err: ValidationError = "s3://bucket/x".parse::<GcsUri>().unwrap_err();
    /// assert!(err.message().contains("gs://"));
    /// ```
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for ValidationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid {}: {}", self.field, self.message)
    }
}

impl std::error::Error for ValidationError {}
