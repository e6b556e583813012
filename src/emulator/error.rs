//! The emulator's internal error: a gRPC code and a message, for a job's
//! `error` or an RPC's answer.

use std::fmt;

use tonic::Code;

use crate::{proto::rpc, validation::ValidationError};

/// What went wrong inside the emulator: the code a job's `error` (or an
/// RPC's answer) carries, and a message saying what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct EmuError {
    pub(crate) code: Code,
    pub(crate) message: String,
}

impl EmuError {
    pub(crate) fn new(code: Code, message: impl Into<String>) -> EmuError {
        EmuError {
            code,
            message: message.into(),
        }
    }

    /// `INVALID_ARGUMENT`: a job or request the emulator refuses.
    pub(crate) fn invalid(message: impl Into<String>) -> EmuError {
        EmuError::new(Code::InvalidArgument, message)
    }

    /// `NOT_FOUND`: an input that is not there.
    pub(crate) fn not_found(message: impl Into<String>) -> EmuError {
        EmuError::new(Code::NotFound, message)
    }

    /// `INTERNAL`: the emulator's own files or backends failed.
    pub(crate) fn internal(message: impl Into<String>) -> EmuError {
        EmuError::new(Code::Internal, message)
    }

    /// The same message under `code`: what a failure means for the job
    /// is decided where the job's step fails, whatever the cause.
    pub(crate) fn with_code(self, code: Code) -> EmuError {
        EmuError { code, ..self }
    }
}

impl fmt::Display for EmuError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for EmuError {}

/// A file or task of the emulator's own that failed.
impl From<std::io::Error> for EmuError {
    fn from(e: std::io::Error) -> EmuError {
        EmuError::internal(e.to_string())
    }
}

/// A URI or name the emulator cannot take.
impl From<ValidationError> for EmuError {
    fn from(e: ValidationError) -> EmuError {
        EmuError::invalid(e.to_string())
    }
}

/// A Cloud Storage or BigQuery backend call that failed.
impl From<crate::error::Error> for EmuError {
    fn from(e: crate::error::Error) -> EmuError {
        EmuError::internal(e.to_string())
    }
}

impl From<EmuError> for tonic::Status {
    fn from(e: EmuError) -> tonic::Status {
        tonic::Status::new(e.code, e.message)
    }
}

/// A job's `error`.
impl From<EmuError> for rpc::Status {
    fn from(e: EmuError) -> rpc::Status {
        rpc::Status {
            code: e.code as i32,
            message: e.message,
            details: Vec::new(),
        }
    }
}
