//! BigQuery, for the data plane: datasets, tables, load jobs and reading a
//! table's rows — the calls a batch from (and into) BigQuery needs, typed,
//! over the crate's own HTTP/TLS stack and token cache.
//!
//! [`BigQuery`] talks to `https://bigquery.googleapis.com` (or an emulator:
//! `BIGQUERY_EMULATOR_HOST`, plaintext, no credentials — the same loopback
//! rule as Cloud Storage). It shares the JobService client's token cache
//! ([`BigQuery::for_client`]) and the Cloud Storage client's HTTP stack:
//! hyper with rustls on *ring*, its timeouts and retries. Failures are
//! [`Error::BigQuery`](crate::Error::BigQuery), with the HTTP status when
//! the service answered.
//!
//! * Writes are **load jobs** (free and atomic: a table's rows appear all
//!   at once, or none do), never streaming inserts: small ones in one
//!   request ([`BigQuery::load_ndjson`]), any size streamed through a
//!   resumable upload with one chunk in memory ([`BigQuery::load_writer`],
//!   the Cloud Storage upload's own session code: its chunking, retries
//!   and idle timeout).
//! * Reads go through the Storage Read API (gRPC, Avro, several streams at
//!   once, a broken stream resumed at its row), which measured faster
//!   (docs/PERFORMANCE.md), or page through
//!   `tabledata.list` ([`BigQueryBuilder::tabledata_reads`], an emulator
//!   without [`ENV_BIGQUERY_STORAGE_EMULATOR_HOST`], a caller the Storage
//!   Read API refuses). Either way each row comes back as the same JSON
//!   object, its cells read as their columns' types ([`decode_row`]).
//!
//! ```no_run
//! # async fn demo(client: vertex_batch::Client) -> vertex_batch::Result<()> {
//! use futures::TryStreamExt;
//! use vertex_batch::{bigquery::BigQuery, uri::BigQueryUri};
//!
//! let bq = BigQuery::for_client(&client)?;
//! let table: BigQueryUri = "bq://my-project.my_dataset.predictions_2026".parse()?;
//! let rows: Vec<_> = bq.rows(&table).try_collect().await?;
//! println!("{} rows", rows.len());
//! # Ok(()) }
//! ```

mod api;
mod avro;
mod client;
mod load;
mod read;
mod rows;

pub use api::{LoadJob, TableInfo};
pub use client::{
    BigQuery, BigQueryBuilder, DEFAULT_ENDPOINT, DEFAULT_READ_ENDPOINT, ENV_BIGQUERY_EMULATOR_HOST,
    ENV_BIGQUERY_STORAGE_EMULATOR_HOST,
};
pub use load::LoadWriter;
pub use rows::{decode_row, timestamp, Field};
