//! A local Vertex AI batch-prediction emulator that really executes jobs
//! (feature `emulator`).
//!
//! It speaks the `google.cloud.aiplatform.v1.JobService` gRPC protocol
//! (create, get, list, cancel, delete),
//! `google.longrunning.Operations/GetOperation` and
//! `LlmUtilityService/CountTokens` (counted as its model counts
//! `promptTokenCount`), runs each job over local
//! files with a deterministic built-in model, and writes the output in the
//! service's layout. Google's own Python and Node clients work against it.
//!
//! Storage mapping (`src/emulator/storage.rs`; the `gs://` layout is the one
//! [`Storage::local`](crate::storage::Storage::local) uses):
//!
//! | URI | file |
//! |---|---|
//! | `gs://BUCKET/OBJECT` | `DATA_DIR/gcs/BUCKET/OBJECT` |
//! | `bq://PROJECT.DATASET.TABLE` | `DATA_DIR/bigquery/PROJECT/DATASET/TABLE.jsonl` |
//!
//! or, with [`EmulatorBuilder::gcs_storage`] (the binary's
//! `--storage-emulator-host`, or `STORAGE_EMULATOR_HOST`), `gs://` objects
//! live in a real Cloud Storage endpoint such as fake-gcs-server: a job
//! downloads its inputs (wildcards expanded by listing) to
//! `DATA_DIR/staging/JOB/`, runs (uploading each exported chunk of
//! completed rows as it is sealed), and uploads the rest of its output
//! directory at the end.
//!
//! Job records live in `DATA_DIR/jobs/ID.json`, replaced atomically; a
//! restarted emulator knows every job, and re-runs a job a crash
//! interrupted (its partial output is discarded first; the re-run takes
//! the output directory or table its first run named again when it can,
//! so re-exported chunks replace the same-numbered chunks of the first
//! run — on a Cloud Storage backend, chunks of the first run numbered
//! beyond the re-run's stay, holding rows the final file has too).
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use vertex_batch::{emulator::Emulator, JobSpec};
//!
//! let emu = Emulator::start("/tmp/vertex-emulator").await?;
//! std::fs::create_dir_all(emu.data_dir().join("gcs/my-bucket"))?;
//! std::fs::write(
//!     emu.data_dir().join("gcs/my-bucket/prompts.jsonl"),
//!     r#"{"request":{"contents":[{"role":"user","parts":[{"text":"Hello"}]}]}}"#,
//! )?;
//! let client = emu.client("my-project", "us-central1")?;
//! let job = client
//!     .create(&JobSpec::new("gemini-2.0-flash-001")
//!         .input("gs://my-bucket/prompts.jsonl")
//!         .output("gs://my-bucket/out"))
//!     .await?;
//! println!("{}", job.name());
//! emu.shutdown().await;
//! # Ok(()) }
//! ```

mod builder;
mod error;
mod families;
mod filter;
mod handle;
mod knobs;
mod model;
mod pace;
mod plan;
mod recovery;
mod rows;
mod runner;
mod service;
mod state;
mod storage;

pub use self::builder::EmulatorBuilder;
pub use self::handle::Emulator;
pub use self::knobs::{KnobValues, Knobs};
pub use self::model::{ANSWER_PREFIX, BLOCK_MARKER};
