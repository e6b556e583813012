//! `vertex-batch results`: reads a finished job's output (or a gs://
//! output directory, or a bq:// output table) and writes matched RESULTS.

use std::path::PathBuf;

use vertex_batch::{
    batch::{Inputs, ResultReader},
    job::OutputLocation,
    uri::BigQueryUri,
    GcsUri, JobState,
};

use crate::{
    args::Global,
    exit::{Exit, JOB_NOT_SUCCEEDED, ROWS_NOT_SUCCEEDED},
    fail::{CliError, CliResult, OrCli},
    output::{deliver, ResultsFile},
    progress::short_state,
    prompts::{Format, Prompts},
};

#[derive(clap::Args, Debug)]
pub struct ResultsArgs {
    /// A finished job (name or id), a gs:// output directory or a
    /// bq://PROJECT.DATASET.TABLE output table (both read with no
    /// JobService call at all).
    #[arg(value_name = "JOB_OR_OUTPUT")]
    target: String,
    /// The prompts the job ran: with them every key appears in the
    /// results, missing ones included.
    #[arg(long, value_name = "PROMPTS")]
    input: Option<PathBuf>,
    /// How the prompts file is written.
    #[arg(long, value_enum, default_value = "auto")]
    format: Format,
    /// Where the results go (JSONL, one line per key); - for stdout.
    #[arg(long, value_name = "RESULTS")]
    output: String,
}

/// Reads the output and writes the results.
pub async fn results(g: &Global, a: ResultsArgs) -> CliResult<Exit> {
    // Nothing to stop cleanly: a Ctrl-C ends it at once, with no
    // temporary file left.
    crate::interrupt::install()?;
    crate::interrupt::stop_at_once();
    let prompts = a
        .input
        .as_deref()
        .map(|p| Prompts::check(p, a.format, None))
        .transpose()?;
    let out = ResultsFile::create(&a.output)?;
    // `job_ended_well`: false for a job that failed, was cancelled or
    // expired (exit 3 even when its partial output reads clean).
    let (mut reader, job_ended_well) = if a.target.starts_with("gs://") {
        let dir = GcsUri::parse_field(&a.target, "output directory")
            .map_err(|e| CliError::usage(e.to_string()))?;
        (
            ResultReader::new().storage(g.storage()?).output_gcs(dir),
            true,
        )
    } else if a.target.starts_with("bq://") {
        let table = BigQueryUri::parse_field(&a.target, "output table", true)
            .map_err(|e| CliError::usage(e.to_string()))?;
        (
            ResultReader::new().output_bigquery(&g.bigquery()?, table),
            true,
        )
    } else {
        let client = g.client()?;
        let job = client.get(&a.target).await.or_cli(g)?;
        if !job.has_ended() {
            return Err(CliError::other(format!(
                "job {} is {}: its output is not complete; follow it with `vertex-batch watch {}`",
                job.name(),
                short_state(job.state().as_str()),
                job.id()
            )));
        }
        let reader = match job.output_location() {
            Some(OutputLocation::Gcs(d)) => {
                let dir = GcsUri::parse_field(&d, "output directory")
                    .map_err(|e| CliError::other(e.to_string()))?;
                ResultReader::new()
                    .storage(g.storage_for(&client)?)
                    .output_gcs(dir)
            }
            Some(OutputLocation::BigQuery { dataset, table }) => {
                let table =
                    BigQueryUri::parse_field(&format!("{dataset}.{table}"), "output table", true)
                        .map_err(|e| CliError::other(e.to_string()))?;
                ResultReader::new().output_bigquery(&g.bigquery_for(&client)?, table)
            }
            None => {
                return Err(CliError::other(format!(
                    "job {} has no output directory (it ended {} before writing any)",
                    job.name(),
                    short_state(job.state().as_str())
                )))
            }
        };
        let ended_well = matches!(
            job.state(),
            JobState::Succeeded | JobState::PartiallySucceeded
        );
        (reader, ended_well)
    };
    // The prompts are joined through a JSONL copy written by the one
    // prompts reader (`run`'s), whatever their format: the join reads
    // exactly what `run` would stage, and the file can change under us no
    // more (the join reads its inputs twice).
    let mut _copy = None;
    if let Some(p) = &prompts {
        let mut tmp = tempfile::NamedTempFile::new()
            .map_err(|e| CliError::other(format!("making a temporary file: {e}")))?;
        {
            let mut w = std::io::BufWriter::new(tmp.as_file_mut());
            p.write_jsonl(&mut w)?;
            std::io::Write::flush(&mut w)
                .map_err(|e| CliError::other(format!("writing a temporary file: {e}")))?;
        }
        reader = reader.inputs(Inputs::local([tmp.path().to_owned()]));
        _copy = Some(tmp);
    }
    // A batch's staging directory, or several jobs' outputs, is refused by
    // the reader (a usage error naming what to read instead).
    let rows = reader.read().await.or_cli(g)?;
    let written = deliver(
        rows,
        out,
        Some(g),
        "run the same command again to write it whole",
    )
    .await?;
    Ok(Exit::Code(if !job_ended_well {
        JOB_NOT_SUCCEEDED
    } else if written.all_succeeded() {
        0
    } else {
        ROWS_NOT_SUCCEEDED
    }))
}
