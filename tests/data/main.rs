//! The data plane: batches staged, run and retried (`batch`), results read
//! and joined to their inputs (`results`), Cloud Storage (`storage`) and
//! BigQuery (`bigquery`).

#[path = "../common/mod.rs"]
mod common;

mod batch;
mod bigquery;
mod results;
mod storage;
