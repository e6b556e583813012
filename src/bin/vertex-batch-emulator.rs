//! `vertex-batch-emulator`: the local Vertex AI batch-prediction emulator as a
//! standalone gRPC server. The same program as `vertex-batch emulator`.

use std::process::ExitCode;

use clap::Parser;

#[path = "vertex-batch/commands/emulator.rs"]
mod emulator;

/// A local Vertex AI JobService that really runs batch prediction jobs.
#[derive(Parser)]
#[command(name = "vertex-batch-emulator", version)]
struct Cli {
    #[command(flatten)]
    args: emulator::EmulatorArgs,
}

#[tokio::main]
async fn main() -> ExitCode {
    emulator::run(Cli::parse().args).await
}
