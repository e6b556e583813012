//! Exit codes and errors for a person: one line each, saying what to do.
//!
//! | code | meaning |
//! |---|---|
//! | 0 | done; for `run`, `results`, `watch`: every row succeeded |
//! | 1 | another failure (not found, rejected by the service, unreadable output) |
//! | 2 | bad usage: a flag, a URI or a prompts file is wrong |
//! | 3 | a job did not succeed (failed, cancelled, expired) |
//! | 4 | some rows failed, were blocked or are missing |
//! | 5 | authentication or permission failure |
//! | 6 | network failure or the service unavailable; for `run`: gave up following (the jobs still run; it prints the command that picks them up) |
//! | 130 | interrupted (Ctrl-C) |

use std::process::ExitCode;

use vertex_batch::Error;

use crate::Global;

/// Another failure.
pub const OTHER: u8 = 1;
/// Bad usage or input.
pub const USAGE: u8 = 2;
/// A job did not succeed.
pub const JOB_NOT_SUCCEEDED: u8 = 3;
/// Some rows did not succeed.
pub const ROWS_NOT_SUCCEEDED: u8 = 4;
/// Authentication or permission.
pub const AUTH: u8 = 5;
/// Network or service availability; for `run`, also: gave up following,
/// the jobs still running.
pub const NETWORK: u8 = 6;
/// Ctrl-C.
/// The batch's cost was over `--max-cost`: estimated before submitting
/// (nothing submitted), or read while it ran (its jobs cancelled).
pub const OVER_BUDGET: u8 = 7;
pub const INTERRUPTED: u8 = 130;

/// How a command that ran ends.
pub enum Exit {
    /// One of the codes above.
    Code(u8),
    /// A code chosen elsewhere (the emulator's).
    Process(ExitCode),
}

impl From<Exit> for ExitCode {
    fn from(e: Exit) -> Self {
        match e {
            Exit::Code(c) => ExitCode::from(c),
            Exit::Process(c) => c,
        }
    }
}

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
