//! The clients the commands use, made from the flags every command takes
//! ([`Global`]): the JobService, Cloud Storage and BigQuery, under the
//! `--retry-for` budget.

use vertex_batch::{batch::Backend, bigquery::BigQuery, storage::Storage, Client};

use crate::{
    args::Global,
    fail::{CliError, CliResult, OrCli},
};

impl Global {
    /// A JobService client for the project and region.
    pub fn client(&self) -> CliResult<Client> {
        let project = self.project.clone().ok_or_else(|| {
            CliError::usage("no project: pass --project PROJECT or set GOOGLE_CLOUD_PROJECT")
        })?;
        Client::builder()
            .project(project)
            .location(&self.location)
            .retry_policy(self.retry_policy())
            .build()
            .or_cli(self)
    }

    /// Cloud Storage sharing `client`'s credentials and retry policy.
    pub fn storage_for(&self, client: &Client) -> CliResult<Storage> {
        Storage::for_client(client).or_cli(self)
    }

    /// Cloud Storage on its own (ADC, or `STORAGE_EMULATOR_HOST`), under
    /// the `--retry-for` budget.
    pub fn storage(&self) -> CliResult<Storage> {
        Storage::builder()
            .retry_policy(self.retry_policy())
            .build()
            .or_cli(self)
    }

    /// BigQuery sharing `client`'s credentials and retry policy.
    pub fn bigquery_for(&self, client: &Client) -> CliResult<BigQuery> {
        BigQuery::for_client(client).or_cli(self)
    }

    /// BigQuery on its own (ADC, or `BIGQUERY_EMULATOR_HOST`), under the
    /// `--retry-for` budget.
    pub fn bigquery(&self) -> CliResult<BigQuery> {
        BigQuery::builder()
            .retry_policy(self.retry_policy())
            .build()
            .or_cli(self)
    }

    /// The client for a batch's `--staging`: Cloud Storage for
    /// `gs://BUCKET[/PREFIX]`, BigQuery for `bq://PROJECT.DATASET`, sharing
    /// `client`'s credentials and retry policy.
    pub fn staging_for(&self, client: &Client, staging: &str) -> CliResult<Backend> {
        if staging.starts_with("bq://") {
            let ds = vertex_batch::uri::BigQueryUri::parse_field(staging, "staging", false)
                .map_err(|e| CliError::usage(format!("--staging: {e}")))?;
            if ds.table().is_some() {
                return Err(CliError::usage(format!(
                    "--staging {staging} names a table: stage into a dataset, bq://PROJECT.DATASET"
                )));
            }
            return Ok(Backend::Bq(self.bigquery_for(client)?));
        }
        vertex_batch::GcsUri::parse_field(staging, "staging").map_err(|e| {
            CliError::usage(format!(
                "--staging: {e} (expected gs://BUCKET[/PREFIX] or bq://PROJECT.DATASET)"
            ))
        })?;
        Ok(Backend::Gcs(self.storage_for(client)?))
    }
}
