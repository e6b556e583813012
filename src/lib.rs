//! # vertex-batch
//!
//! A typed gRPC client for **Gemini batch prediction jobs on Google Vertex
//! AI**: submit a job whose prompts sit in Cloud Storage (JSONL) or BigQuery,
//! follow it, and get to its results. It speaks the
//! `google.cloud.aiplatform.v1.JobService` protocol directly (stubs compiled
//! from the vendored protos at build time, no `protoc` needed), adds Google's
//! auth and routing headers on every call, and validates everything it can
//! before the network.
//!
//! ## Quickstart
//!
//! The same as the README's:
//!
//! ```no_run
//! use serde_json::json;
//! use vertex_batch::{Client, Error, JobSpec, WaitOptions};
//!
//! # async fn demo() -> vertex_batch::Result<()> {
//! let client = Client::builder().project("my-project").location("us-central1").build()?;
//! let spec = JobSpec::new("gemini-2.0-flash-001")
//!     .display_name("nightly-summaries")
//!     .input("gs://my-bucket/prompts/*.jsonl")
//!     .output("gs://my-bucket/results")
//!     .model_parameters(json!({"temperature": 0.2, "maxOutputTokens": 200}));
//! let job = client.submit(&spec).await?;          // safe to retry: never two jobs
//! match client.wait(&job, &WaitOptions::new()).await {
//!     Ok(done) => println!("predictions in {}", done.output_location().unwrap()),
//!     Err(Error::JobNotSucceeded(job)) => eprintln!("ended {}: {:?}", job.state(), job.error()),
//!     Err(e) => return Err(e),
//! }
//! # Ok(()) }
//! ```
//!
//! ## From prompts to matched answers
//!
//! ```no_run
//! use futures::StreamExt;
//! use vertex_batch::{storage::Storage, batch::BatchSpec, Client, JobSpec, format::{Outcome, Prompt}};
//!
//! # async fn demo() -> vertex_batch::Result<()> {
//! let client = Client::builder().project("my-project").location("us-central1").build()?;
//! let storage = Storage::for_client(&client)?;         // one token for both APIs
//! let spec = BatchSpec::new(JobSpec::new("gemini-2.0-flash-001"), "gs://my-bucket/batches")
//!     .request_key("nightly-2026-11-22");               // run again after a crash: it resumes
//! let prompts = vec![
//!     ("q1", Prompt::text("Why is the sky blue?").max_output_tokens(200)),
//!     ("q2", Prompt::text("Name three rivers.").system("Answer in one line.")),
//! ];
//! let (mut batch, mut results) = client.run_batch(&storage, &spec, prompts).await?;
//! while let Some(row) = results.next().await {
//!     let row = row?;
//!     match row.outcome() {
//!         Outcome::Succeeded(a) => println!("{}: {}", row.key().unwrap(), a.text()),
//!         Outcome::Failed(e) => println!("{}: failed {:?} {}", row.key().unwrap(), e.code(), e.message()),
//!         Outcome::Blocked(b) => println!("{}: blocked {:?}", row.key().unwrap(), b.reason()),
//!         Outcome::Missing(_) => println!("{}: never came back", row.key().unwrap()),
//!     }
//! }
//! let totals = results.totals();                        // succeeded + failed + blocked + missing = prompts
//! if totals.failed + totals.missing > 0 {
//!     batch.retry_failed().await?;                      // a follow-up job of those rows only
//!     batch.wait().await?;
//!     let _merged = batch.results().await?;             // latest outcome per key
//! }
//! # Ok(()) }
//! ```
//!
//! ## Map
//!
//! Each public item has one path: the module that defines it. The root
//! re-exports only what a first program types: [`Client`],
//! [`ClientBuilder`], [`JobSpec`], [`Job`], [`JobState`], [`JobRef`],
//! [`JobName`], [`LocationName`], [`GcsUri`], [`WaitOptions`],
//! [`ListOptions`], [`Error`] and [`Result`].
//!
//! * [`client`]: the client, its builder and the options of its calls.
//! * [`job`], [`spec`], [`names`], [`uri`], [`family`]: jobs, what to
//!   submit, typed names and locations, model families.
//! * [`error`]: the error type, and the service's statuses
//!   ([`error::ServiceError`]).
//! * [`policy`]: retrying calls and polling jobs.
//! * [`transport`]: credentials, headers, endpoints and environment names.
//! * [`format`](mod@format): what a batch's lines hold per family — prompts
//!   ([`format::Prompt`], [`format::Embed`], [`format::Chat`]), keys, the
//!   input encoder, and an output line read back as a
//!   [`format::ResultRow`] ([`format::parse_output_line`]).
//! * [`batch`]: the trip — stage, submit, follow, read, retry, on Cloud
//!   Storage or BigQuery ([`batch::BatchSpec`], [`batch::Batch`],
//!   [`batch::ResultReader`]; [`batch::Live`]: results while the jobs run;
//!   [`batch::estimate`]: a cost bound before submitting).
//! * [`cost`]: list prices at batch rates, and what a row or a batch costs.
//! * [`storage`]: Cloud Storage (uploads, listing, downloads).
//! * [`bigquery`]: BigQuery (load jobs, the Storage Read API, tables).
//! * [`tokens`]: an offline upper bound of a request's input tokens (the
//!   counted figure is [`Client::count_tokens`]).
//! * [`proto`]: the generated messages and stubs, for anything else.
//! * `emulator` (feature `emulator`): a local JobService that runs jobs.
//!
//! The modules form layers, each using only the ones below it, with no
//! import cycle (`scripts/check-layers.py`, run by CI). The layers, and
//! the file of each step from prompt to results, are written down once, in
//! the repository's `docs/ARCHITECTURE.md`.
#![warn(missing_docs)]
// docs.rs (nightly) marks each feature-gated item with its feature.
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod batch;
pub mod bigquery;
pub mod client;
pub mod cost;
#[cfg(feature = "emulator")]
#[cfg_attr(docsrs, doc(cfg(feature = "emulator")))]
pub mod emulator;
pub mod error;
pub mod family;
pub mod format;
pub mod job;
pub mod names;
pub mod policy;
pub mod proto;
pub mod spec;
pub mod storage;
#[cfg(test)]
mod testing;
mod time;
pub mod tokens;
pub mod transport;
pub mod uri;
mod validation;

pub use client::{Client, ClientBuilder, ListOptions, WaitOptions};
pub use error::{Error, Result};
pub use job::{Job, JobRef, JobState};
pub use names::{JobName, LocationName};
pub use spec::JobSpec;
pub use uri::GcsUri;

// The README's Rust examples compile as doctests, so they stay true (with
// the `emulator` feature, which one of them uses; CI tests all features).
#[cfg(all(doctest, feature = "emulator"))]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
// So are the guides' under docs/.
#[cfg(all(doctest, feature = "emulator"))]
#[doc = include_str!("../docs/GUIDE.md")]
struct GuideDoctests;
#[cfg(all(doctest, feature = "emulator"))]
#[doc = include_str!("../docs/BIGQUERY.md")]
struct BigQueryDoctests;
#[cfg(all(doctest, feature = "emulator"))]
#[doc = include_str!("../docs/EMULATOR.md")]
struct EmulatorDoctests;
