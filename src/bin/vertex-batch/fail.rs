//! Errors for a person: one line each, saying what to do, with the exit
//! code (see [`crate::exit`]) they end the command with. [`OrCli::or_cli`]
//! is the one mapping of the library's errors.

use vertex_batch::Error;

use crate::{
    args::Global,
    exit::{AUTH, JOB_NOT_SUCCEEDED, NETWORK, OTHER, USAGE},
};

/// Text from the service (or any other outside source), safe for a
/// terminal: control characters (escape sequences, carriage returns,
/// newlines) are shown escaped, never sent raw.
pub fn clean(s: &str) -> String {
    if !s.chars().any(char::is_control) {
        return s.to_owned();
    }
    s.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// A failure: the line printed after `error: ` and the exit code.
///
/// Made only through [`CliError::new`] (and the helpers over it), which
/// passes the message through [`clean`]: service text in an error (a job's
/// error, a status message) can never move the cursor, clear the screen or
/// hide a line, and the message stays one line.
#[derive(Debug)]
pub struct CliError {
    pub code: u8,
    pub message: String,
}

/// What commands return.
pub type CliResult<T> = Result<T, CliError>;

impl CliError {
    /// An error with exit code `code`; control characters in `message` are
    /// escaped (see [`clean`]).
    pub fn new(code: u8, message: impl Into<String>) -> Self {
        CliError {
            code,
            message: clean(&message.into()),
        }
    }

    /// Bad usage or input (exit 2).
    pub fn usage(message: impl Into<String>) -> Self {
        Self::new(USAGE, message)
    }

    /// Another failure (exit 1).
    pub fn other(message: impl Into<String>) -> Self {
        Self::new(OTHER, message)
    }

    /// A library error, classified, with a hint where one helps. `global`
    /// names the project and region in hints.
    pub fn from_lib(e: Error, global: Option<&Global>) -> Self {
        let region_hint = |what: String| {
            match global {
            Some(g) if !g.emulated() => format!(
                "{what} (check that --location {} is a Vertex AI region and that the network is up)",
                g.location
            ),
            _ => what,
        }
        };
        match &e {
            Error::Validation(_) | Error::Config { .. } => Self::usage(e.to_string()),
            Error::Auth { message, .. } => Self::new(
                AUTH,
                format!(
                    "no usable Google credentials ({message}); run `gcloud auth application-default login` \
                     or set GOOGLE_APPLICATION_CREDENTIALS to a service-account key file"
                ),
            ),
            Error::Transport { .. } | Error::Timeout { .. } => {
                Self::new(NETWORK, region_hint(e.to_string()))
            }
            Error::NotGrpc { .. } => Self::new(NETWORK, e.to_string()),
            Error::JobNotSucceeded(_) => Self::new(JOB_NOT_SUCCEEDED, e.to_string()),
            Error::Storage { http_status, .. } => match http_status {
                Some(401 | 403) => Self::new(
                    AUTH,
                    format!("{e} (the credentials lack access to the bucket)"),
                ),
                Some(404) => Self::other(format!("{e} (no such bucket or object)")),
                None | Some(408 | 429 | 500..=599) => Self::new(NETWORK, e.to_string()),
                Some(_) => Self::other(e.to_string()),
            },
            Error::Service(s) => {
                use tonic::Code;
                match s.code() {
                    Code::Unauthenticated | Code::PermissionDenied => Self::new(
                        AUTH,
                        format!(
                            "{e} (check the credentials' access to project {})",
                            global.and_then(|g| g.project.as_deref()).unwrap_or("?")
                        ),
                    ),
                    Code::Unavailable | Code::DeadlineExceeded => {
                        Self::new(NETWORK, region_hint(e.to_string()))
                    }
                    Code::InvalidArgument => Self::usage(e.to_string()),
                    _ => Self::other(e.to_string()),
                }
            }
            _ => Self::other(e.to_string()),
        }
    }
}

/// A library result, its error as the command line reports it
/// ([`CliError::from_lib`], with the project and region in hints): the one
/// mapping every command uses.
pub trait OrCli<T> {
    /// The result, its error classified for `g`'s command line.
    fn or_cli(self, g: &Global) -> CliResult<T>;
}

impl<T> OrCli<T> for Result<T, Error> {
    fn or_cli(self, g: &Global) -> CliResult<T> {
        self.map_err(|e| CliError::from_lib(e, Some(g)))
    }
}

impl From<Error> for CliError {
    fn from(e: Error) -> Self {
        Self::from_lib(e, None)
    }
}
