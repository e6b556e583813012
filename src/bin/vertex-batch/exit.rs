//! Exit codes, and how a command that ran ends ([`Exit`]).
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
//! | 7 | over `--max-cost` (`run`) |
//! | 130 | interrupted (Ctrl-C) |

use std::process::ExitCode;

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
/// The batch's cost was over `--max-cost`: estimated before submitting
/// (nothing submitted), or read while it ran (its jobs cancelled).
pub const OVER_BUDGET: u8 = 7;
/// Ctrl-C.
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
