//! `vertex-batch`: run, follow and read Gemini batch prediction jobs on
//! Vertex AI from the command line. See `vertex-batch --help` and the
//! docs/CLI.md; the RESULTS format and the exit codes
//! are documented in [`output`] and [`fail`].

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod cost;
mod emulator;
mod fail;
mod interrupt;
mod jobs;
mod output;
mod pause;
mod progress;
mod prompts;
mod run;
mod start;

use fail::{CliError, CliResult};
use vertex_batch::{storage::Storage, Client};

/// Run, follow and read Gemini batch prediction jobs on Vertex AI.
#[derive(Parser)]
#[command(name = "vertex-batch", version, after_help = AFTER_HELP)]
struct Cli {
    #[command(flatten)]
    global: Global,
    #[command(subcommand)]
    command: Command,
}

const AFTER_HELP: &str = "\
Environment:
  GOOGLE_CLOUD_PROJECT      the project (or --project)
  GOOGLE_CLOUD_LOCATION     the region (or --location; default us-central1)
  VERTEX_AI_EMULATOR_HOST   host:port of a JobService emulator (plaintext, no credentials)
  STORAGE_EMULATOR_HOST     URL of a Cloud Storage emulator (plaintext, no credentials)
  HTTPS_PROXY, NO_PROXY     an http:// proxy for TLS connections (a CONNECT tunnel),
                            and the hosts that go direct
  Credentials are Application Default Credentials
  (gcloud auth application-default login, or GOOGLE_APPLICATION_CREDENTIALS).

Exit codes:
  0  done; for run, results, watch: every row succeeded
  1  another failure (not found, rejected by the service, unreadable output)
  2  bad usage: a flag, a URI or a prompts file is wrong
  3  a job did not succeed (failed, cancelled, expired)
  4  some rows failed, were blocked or are missing
  5  authentication or permission failure
  6  network failure or the service unavailable; for run: gave up following
     (the jobs still run; it prints the command that picks them up)
  130  interrupted (Ctrl-C): the jobs keep running unless --cancel-on-interrupt
       (it prints the command that picks them up); a second Ctrl-C stops at once";

/// Flags every command takes.
#[derive(clap::Args, Clone, Debug)]
struct Global {
    /// The Google Cloud project.
    #[arg(
        long,
        global = true,
        env = "GOOGLE_CLOUD_PROJECT",
        hide_env_values = true
    )]
    project: Option<String>,
    /// The Vertex AI region, e.g. us-central1.
    #[arg(
        long,
        global = true,
        env = "GOOGLE_CLOUD_LOCATION",
        default_value = "us-central1"
    )]
    location: String,
    /// How long to keep retrying a call that fails for a passing reason
    /// (unavailable, rate limited, network), in seconds; 0: never retry.
    /// One budget for Vertex AI and Cloud Storage calls alike. It also
    /// bounds each Vertex AI call: a budget under 60 s is its deadline.
    /// While `run` follows its jobs, it is how long the service may go
    /// without answering before `run` gives up (exit 6): the jobs keep
    /// running, and the command it prints picks them up. Raise it for a
    /// flaky network.
    #[arg(long, global = true, value_name = "SECS", default_value_t = 300)]
    retry_for: u64,
}

#[derive(Subcommand)]
enum Command {
    /// The whole trip: stage PROMPTS, run them as a batch, follow it, write
    /// one matched result per prompt to RESULTS.
    Run(run::RunArgs),
    /// Submit a job (or stage a prompts file as a batch) and print its name.
    Submit(jobs::SubmitArgs),
    /// Show one job.
    Status(jobs::StatusArgs),
    /// Follow one job until it ends.
    Watch(jobs::WatchArgs),
    /// List jobs.
    List(jobs::ListArgs),
    /// Cancel a job.
    Cancel(jobs::JobArg),
    /// Delete a job.
    Delete(jobs::JobArg),
    /// Read a finished job's output (or a gs:// output directory, or a
    /// bq:// output table) and write matched results.
    Results(jobs::ResultsArgs),
    /// Run the local JobService emulator (as `vertex-batch-emulator`).
    Emulator(emulator::EmulatorArgs),
}

impl Global {
    /// A JobService client for the project and region.
    fn client(&self) -> CliResult<Client> {
        let project = self.project.clone().ok_or_else(|| {
            CliError::usage("no project: pass --project PROJECT or set GOOGLE_CLOUD_PROJECT")
        })?;
        Client::builder()
            .project(project)
            .location(&self.location)
            .retry_policy(self.retry_policy())
            .build()
            .map_err(|e| CliError::from_lib(e, Some(self)))
    }

    /// The retry policy `--retry-for` sets, for both APIs.
    fn retry_policy(&self) -> vertex_batch::policy::RetryPolicy {
        if self.retry_for == 0 {
            vertex_batch::policy::RetryPolicy::none()
        } else {
            vertex_batch::policy::RetryPolicy::default()
                .with_max_attempts(u32::MAX)
                .with_total_timeout(Some(std::time::Duration::from_secs(self.retry_for)))
        }
    }

    /// Cloud Storage sharing `client`'s credentials and retry policy.
    fn storage_for(&self, client: &Client) -> CliResult<Storage> {
        Storage::for_client(client).map_err(|e| CliError::from_lib(e, Some(self)))
    }

    /// Cloud Storage on its own (ADC, or `STORAGE_EMULATOR_HOST`), under
    /// the `--retry-for` budget.
    fn storage(&self) -> CliResult<Storage> {
        Storage::builder()
            .retry_policy(self.retry_policy())
            .build()
            .map_err(|e| CliError::from_lib(e, Some(self)))
    }

    /// BigQuery sharing `client`'s credentials and retry policy.
    fn bigquery_for(&self, client: &Client) -> CliResult<vertex_batch::bigquery::BigQuery> {
        vertex_batch::bigquery::BigQuery::for_client(client)
            .map_err(|e| CliError::from_lib(e, Some(self)))
    }

    /// BigQuery on its own (ADC, or `BIGQUERY_EMULATOR_HOST`), under the
    /// `--retry-for` budget.
    fn bigquery(&self) -> CliResult<vertex_batch::bigquery::BigQuery> {
        vertex_batch::bigquery::BigQuery::builder()
            .retry_policy(self.retry_policy())
            .build()
            .map_err(|e| CliError::from_lib(e, Some(self)))
    }

    /// The client for a batch's `--staging`: Cloud Storage for
    /// `gs://BUCKET[/PREFIX]`, BigQuery for `bq://PROJECT.DATASET`, sharing
    /// `client`'s credentials and retry policy.
    fn staging_for(
        &self,
        client: &Client,
        staging: &str,
    ) -> CliResult<vertex_batch::data::Backend> {
        use vertex_batch::data::Backend;
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

    /// Whether the JobService is an emulator (no region to get wrong).
    fn emulated(&self) -> bool {
        std::env::var("VERTEX_AI_EMULATOR_HOST").is_ok_and(|v| !v.trim().is_empty())
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    // The library's warnings (failed polls, skipped objects, unmatched
    // rows) reach stderr; RUST_LOG overrides. The emulator sets up its own.
    if !matches!(cli.command, Command::Emulator(_)) {
        let _ = tracing_subscriber::fmt()
            .with_writer(std::io::stderr)
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_default_env()
                    .unwrap_or_else(|_| "warn".into()),
            )
            .try_init();
    }
    let global = cli.global.clone();
    let outcome = runtime.block_on(async move {
        match cli.command {
            Command::Run(a) => run::run(&global, a).await,
            Command::Submit(a) => jobs::submit(&global, a).await,
            Command::Status(a) => jobs::status(&global, a).await,
            Command::Watch(a) => jobs::watch(&global, a).await,
            Command::List(a) => jobs::list(&global, a).await,
            Command::Cancel(a) => jobs::cancel(&global, a).await,
            Command::Delete(a) => jobs::delete(&global, a).await,
            Command::Results(a) => jobs::results(&global, a).await,
            Command::Emulator(a) => Ok(fail::Exit::Process(emulator::run(a).await)),
        }
    });
    match outcome {
        Ok(exit) => exit.into(),
        Err(e) => {
            eprintln!("error: {}", e.message);
            ExitCode::from(e.code)
        }
    }
}
