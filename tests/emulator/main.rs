//! The emulator on its own: jobs and their records (`jobs`), the gRPC
//! protocol as Google's clients speak it (`protocol`), and the rows it
//! exports while a job runs (`export`).

#[path = "../common/mod.rs"]
mod common;

mod export;
mod jobs;
mod protocol;
