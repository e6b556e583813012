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
//! use vertex_batch::{storage::Storage, BatchSpec, Client, JobSpec, Outcome, Prompt};
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
//! The root re-exports what a first program types: [`Client`],
//! [`ClientBuilder`], [`JobSpec`], [`Job`], [`JobState`], [`JobRef`],
//! [`JobName`], [`LocationName`], [`GcsUri`], [`WaitOptions`],
//! [`ListOptions`], [`Error`], [`Result`], and the data plane's [`Prompt`],
//! [`BatchSpec`], [`ResultRow`] and [`Outcome`]. Everything else lives in
//! the module that defines it:
//!
//! * [`client`]: the client, its builder and the options of its calls.
//! * [`job`], [`spec`], [`names`], [`uri`]: jobs, what to submit, typed
//!   names and locations.
//! * [`error`], [`status`]: the error type, and the service's statuses.
//! * [`policy`]: retrying calls and polling jobs.
//! * [`transport`]: credentials, headers, endpoints and environment names.
//! * [`data`]: the data plane (input writer, batches, results reader;
//!   [`data::live`]: results while the jobs run, early retries, a budget;
//!   [`data::budget`]: a batch's cost bound before it is submitted).
//! * [`cost`]: list prices at batch rates, and what a row or a batch costs.
//! * [`storage`]: Cloud Storage (uploads, listing, downloads).
//! * [`tokens`]: an offline upper bound of a request's input tokens (the
//!   counted figure is [`Client::count_tokens`]).
//! * [`proto`]: the generated messages and stubs, for anything else.
//! * `emulator` (feature `emulator`): a local JobService that runs jobs.
//!
//! ## Layers
//!
//! The modules form layers; each uses only its own layer and the ones
//! above it in this list, never one below (`scripts/check-layers.py`, run
//! by CI, checks this and that the module graph has no cycle):
//!
//! 1. `proto` — the generated messages and stubs.
//! 2. `names`, `uri`, `time`, `validation` — values, and the
//!    [`error::ValidationError`] they fail with.
//! 3. `status`, `job` — what the service reports.
//! 4. `error` — the crate's [`Error`] (which can hold a [`Job`]).
//! 5. `spec`, `tokens` and the data types (`data::{key, request, results,
//!    input, fingerprint}`), and `cost` (prices of rows).
//! 6. `policy` — retry and poll schedules.
//! 7. `transport` — credentials, headers, endpoints.
//! 8. `client` — the operations on jobs.
//! 9. `storage` — Cloud Storage.
//! 10. the data plane (`data::{reader, join, read, staging, claim, batch, live,
//!     budget}`).
//! 11. `emulator`; the command line (`src/bin/`) sits on top.
//!
//! A call flows down that list: a prompt becomes a request line (`data`),
//! uploaded (`storage`), submitted by the client (`client`), sent over the
//! transport (`transport`) through a generated stub (`proto`) to Vertex AI
//! — or to the `emulator`, which runs the job and writes the output that
//! the data plane reads back.
#![warn(missing_docs)]
// docs.rs (nightly) marks each feature-gated item with its feature.
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod bigquery;
pub mod client;
pub mod cost;
pub mod data;
#[cfg(feature = "emulator")]
#[cfg_attr(docsrs, doc(cfg(feature = "emulator")))]
pub mod emulator;
pub mod error;
pub mod family;
pub mod job;
pub mod names;
pub mod policy;
pub mod proto;
pub mod spec;
pub mod status;
pub mod storage;
mod time;
pub mod tokens;
pub mod transport;
pub mod uri;
mod validation;

pub use client::{Client, ClientBuilder, ListOptions, WaitOptions};

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
pub use data::{BatchSpec, Outcome, Prompt, ResultRow};
pub use error::{Error, Result};
pub use job::{Job, JobRef, JobState};
pub use names::{JobName, LocationName};
pub use spec::JobSpec;
pub use uri::GcsUri;
