//! The command line: `vertex-batch` and `vertex-batch-emulator` as a user
//! runs them (`cli`), and `run` killed at each step and run again
//! (`crash`).

#[path = "../common/mod.rs"]
mod common;

mod cli;
mod crash;
