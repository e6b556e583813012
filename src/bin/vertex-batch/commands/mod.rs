//! One module a subcommand: its arguments and what it does.
//!
//! * [`run`]: the whole trip, PROMPTS in, RESULTS out;
//! * [`submit`]: a job, or a batch of a prompts file, submitted;
//! * [`status`], [`watch`], [`list`], [`cancel`], [`delete`]: jobs;
//! * [`results`]: a finished job's output as RESULTS;
//! * [`emulator`]: the local JobService emulator.

pub mod cancel;
pub mod delete;
pub mod emulator;
pub mod list;
pub mod results;
pub mod run;
pub mod status;
pub mod submit;
pub mod watch;
