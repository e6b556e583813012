//! `vertex-batch`: run, follow and read Gemini batch prediction jobs on
//! Vertex AI from the command line. See `vertex-batch --help` and the
//! docs/CLI.md; the RESULTS format and the exit codes
//! are documented in [`output`] and [`exit`].
//!
//! Here: the arguments and the dispatch to [`commands`], one module a
//! subcommand, over the shared helpers (flags and value parsers in
//! [`args`], errors in [`fail`], the clients in [`connect`], stdout in
//! [`term`], progress on stderr in [`progress`], Ctrl-C in [`interrupt`]).

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod args;
mod commands;
mod connect;
mod cost;
mod exit;
mod fail;
mod interrupt;
mod output;
mod pause;
mod progress;
mod prompts;
mod start;
mod term;

use args::{Global, JobArg};
use commands::{cancel, delete, emulator, list, results, run, status, submit, watch};
use exit::Exit;

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

#[derive(Subcommand)]
enum Command {
    /// The whole trip: stage PROMPTS, run them as a batch, follow it, write
    /// one matched result per prompt to RESULTS.
    Run(run::RunArgs),
    /// Submit a job (or stage a prompts file as a batch) and print its name.
    Submit(submit::SubmitArgs),
    /// Show one job.
    Status(status::StatusArgs),
    /// Follow one job until it ends.
    Watch(watch::WatchArgs),
    /// List jobs.
    List(list::ListArgs),
    /// Cancel a job.
    Cancel(JobArg),
    /// Delete a job.
    Delete(JobArg),
    /// Read a finished job's output (or a gs:// output directory, or a
    /// bq:// output table) and write matched results.
    Results(results::ResultsArgs),
    /// Run the local JobService emulator (as `vertex-batch-emulator`).
    Emulator(emulator::EmulatorArgs),
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
            Command::Submit(a) => submit::submit(&global, a).await,
            Command::Status(a) => status::status(&global, a).await,
            Command::Watch(a) => watch::watch(&global, a).await,
            Command::List(a) => list::list(&global, a).await,
            Command::Cancel(a) => cancel::cancel(&global, a).await,
            Command::Delete(a) => delete::delete(&global, a).await,
            Command::Results(a) => results::results(&global, a).await,
            Command::Emulator(a) => Ok(Exit::Process(emulator::run(a).await)),
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
