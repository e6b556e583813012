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
//! ```no_run
//! use serde_json::json;
//! use vertex_batch::{Client, JobSpec};
//!
//! # async fn demo() -> vertex_batch::Result<()> {
//! // Project and location from the arguments or GOOGLE_CLOUD_PROJECT /
//! // GOOGLE_CLOUD_LOCATION; credentials from Application Default Credentials.
//! // With VERTEX_AI_EMULATOR_HOST=host:port set, it talks to an emulator.
//! let client = Client::builder().project("my-project").location("us-central1").build()?;
//!
//! let spec = JobSpec::new("gemini-2.0-flash-001")
//!     .display_name("batch-predict-gcs")
//!     .input("gs://cloud-samples-data/batch/prompt_for_batch_gemini_predict.jsonl")
//!     .output("gs://my-bucket/batch-output")
//!     .model_parameters(json!({"temperature": 0.2, "maxOutputTokens": 200}));
//!
//! let job = client.create(&spec).await?;
//! println!("submitted {} ({})", job.name(), job.state());
//!
//! let job = client.get(job.name()).await?;
//! if let Some(out) = job.output_location() {
//!     println!("predictions in {out}");
//! }
//! # Ok(()) }
//! ```
//!
//! ## From prompts to matched answers
//!
//! ```no_run
//! use futures::StreamExt;
//! use vertex_batch::{data::BatchSpec, storage::Storage, Client, JobSpec, Prompt};
//!
//! # async fn demo() -> vertex_batch::Result<()> {
//! let client = Client::builder().project("my-project").location("us-central1").build()?;
//! let storage = Storage::for_client(&client)?;
//! let spec = BatchSpec::new(JobSpec::new("gemini-2.0-flash-001"), "gs://my-bucket/batches")
//!     .request_key("nightly-2026-11-22"); // the same key after a crash resumes the batch
//! let prompts = vec![("q1", Prompt::text("Why is the sky blue?")), ("q2", Prompt::text("Name three rivers."))];
//! let (_batch, mut results) = client.run_batch(&storage, &spec, prompts).await?;
//! while let Some(row) = results.next().await {
//!     let row = row?;
//!     println!("{}: {} {}", row.key().unwrap_or("?"), row.outcome().kind(), row.text().unwrap_or(""));
//! }
//! println!("{:?}", results.totals());
//! # Ok(()) }
//! ```
//!
//! ## Map
//!
//! * [`Client`] / [`ClientBuilder`]: the connection, credentials and calls.
//! * [`data`]: the data plane — [`Prompt`], the input writer, batches
//!   ([`data::BatchSpec`], [`data::Batch`]) and results
//!   ([`data::ResultReader`], [`data::ResultRow`], [`data::Outcome`]).
//! * [`storage`]: Cloud Storage (uploads, listing, downloads).
//! * [`JobSpec`]: what to submit; [`Job`], [`JobState`]: what comes back.
//! * [`JobName`], [`LocationName`], [`GcsUri`], [`BigQueryUri`]: typed names.
//! * [`Error`]: one error type with [`Error::code`] and [`Error::is_retryable`].
//! * [`proto`]: the generated messages and stubs, for anything else.
#![warn(missing_docs)]

mod client;
pub mod data;
#[cfg(feature = "emulator")]
pub mod emulator;
mod error;
mod job;
mod names;
mod poll;
pub mod proto;
mod retry;
mod spec;
pub mod storage;
mod timefmt;
mod uri;

pub use client::{
    auth::{Credentials, CLOUD_PLATFORM_SCOPE},
    builder::{
        endpoint_for_location, ClientBuilder, DEFAULT_LOCATION, ENV_EMULATOR_HOST, ENV_LOCATION,
        ENV_PROJECT, ENV_QUOTA_PROJECT,
    },
    layer::{api_client_header, API_CLIENT, REQUEST_PARAMS, USER_PROJECT},
    lifecycle::{JobPage, ListOptions},
    multi::WatchManyOptions,
    submit::REQUEST_KEY_LABEL,
    wait::WaitOptions,
    Client,
};
pub use data::{
    input::{write_input_files, BatchRequest, InputEncoder, InputLimits},
    request::Prompt,
};
pub use error::{status_with_details, BoxError, Error, Result, ServiceError, StatusDetail};
pub use job::{CompletionStats, Job, JobState, OutputLocation};
pub use names::{normalize_model, JobName, LocationName};
pub use poll::{estimate_remaining, PollPolicy, Poller};
pub use retry::RetryPolicy;
pub use spec::{JobSpec, MAX_LABELS};
pub use uri::{BigQueryUri, GcsUri, InputSource, OutputDestination};
