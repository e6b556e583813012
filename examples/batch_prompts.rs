//! Prompts in memory to matched answers: stage keyed prompts, run them as a
//! batch, follow it, print every answer by key with totals, and retry what
//! failed.
//!
//! Offline, with nothing configured, it runs on an embedded emulator (which
//! simulates one transient quota error, to show the retry):
//!
//! ```text
//! cargo run --example batch_prompts --features emulator
//! ```
//!
//! On Vertex AI: `--project my-project --staging gs://my-bucket/batches`.

use std::process::ExitCode;

use futures::StreamExt;
use vertex_batch::{
    batch::BatchSpec,
    emulator::Emulator,
    format::{Outcome, Prompt},
    storage::Storage,
    Client, JobSpec,
};

const PROMPTS: [(&str, &str); 6] = [
    ("banana-bread", "Give me a recipe for banana bread."),
    ("haiku-rivers", "Write a haiku about rivers."),
    ("tides", "Explain in two sentences why the ocean has tides."),
    ("capital-fr", "What is the capital of France?"),
    (
        "rust-ownership",
        "Summarise Rust's ownership rules in one paragraph.",
    ),
    ("sky-blue", "Why is the sky blue?"),
];

/// batch_prompts: keyed prompts in memory -> one Gemini batch -> answers
/// matched to their keys.
#[derive(clap::Parser, Debug)]
struct Args {
    /// GCP project; without one the example runs on an embedded emulator:
    /// no credentials, no network.
    #[arg(long, env = "GOOGLE_CLOUD_PROJECT")]
    project: Option<String>,
    /// Region.
    #[arg(long, env = "GOOGLE_CLOUD_LOCATION", default_value = "us-central1")]
    location: String,
    /// gs://bucket/prefix for inputs and outputs (required on Vertex AI).
    #[arg(long)]
    staging: Option<String>,
    /// The model.
    #[arg(long, default_value = "gemini-2.0-flash-001")]
    model: String,
    /// The batch's request key: run again with it to resume.
    #[arg(long)]
    key: Option<String>,
}

async fn run(a: Args) -> Result<(), Box<dyn std::error::Error>> {
    // Where to run: Vertex AI with a project, else an embedded emulator.
    let dir;
    let (client, storage, staging, emu) = match &a.project {
        Some(project) => {
            let staging = a
                .staging
                .clone()
                .ok_or("--staging gs://bucket/prefix is required on Vertex AI")?;
            let client = Client::builder()
                .project(project)
                .location(&a.location)
                .build()?;
            let storage = Storage::for_client(&client)?;
            (client, storage, staging, None)
        }
        None => {
            dir = tempfile::tempdir()?;
            let emu = Emulator::start(dir.path()).await?;
            // A transient quota error on one prompt, to show the retry.
            emu.knobs().fail_rows_containing(Some("tides".into()));
            println!(
                "running on an embedded emulator in {}",
                dir.path().display()
            );
            let client = emu.client("demo-project", &a.location)?;
            let storage = emu.storage();
            (
                client,
                storage,
                "gs://vertex-batch-demo/batches".to_owned(),
                Some(emu),
            )
        }
    };

    let mut spec = BatchSpec::new(
        JobSpec::new(&a.model).display_name("batch-prompts"),
        staging,
    );
    if let Some(key) = &a.key {
        spec = spec.request_key(key);
    }
    let prompts = PROMPTS
        .iter()
        .map(|(k, p)| (*k, Prompt::text(*p).max_output_tokens(200)));
    let mut batch = client.start_batch(&storage, &spec, prompts).await?;
    println!(
        "batch {} ({} prompts) staged under {}: {} job(s)",
        batch.request_key(),
        batch.rows(),
        batch.root(),
        batch.jobs().len()
    );
    for round in 0.. {
        {
            let mut progress = std::pin::pin!(batch.progress());
            while let Some(p) = progress.next().await {
                let p = p?;
                let states: Vec<String> = p.jobs.iter().map(|j| j.state().to_string()).collect();
                println!(
                    "  [{}] {}/{} rows done, {} failed",
                    states.join(", "),
                    p.succeeded + p.failed,
                    p.rows,
                    p.failed
                );
            }
        }
        let (rows, errors, totals) = batch.results().await?.collect_all().await;
        println!("\nresults (round {round}):");
        for row in &rows {
            let key = row.key().unwrap_or("?");
            match row.outcome() {
                Outcome::Succeeded(a) => println!("  {key:>15}  {}", a.text()),
                Outcome::Failed(e) => println!("  {key:>15}  FAILED {}", e.message()),
                Outcome::Blocked(b) => {
                    println!("  {key:>15}  BLOCKED {}", b.reason().unwrap_or(""))
                }
                Outcome::Missing(_) => println!("  {key:>15}  MISSING"),
            }
        }
        for e in &errors {
            eprintln!("  unreadable output: {e}");
        }
        println!(
            "totals: {} succeeded, {} failed, {} blocked, {} missing; {} tokens",
            totals.succeeded,
            totals.failed,
            totals.blocked,
            totals.missing,
            totals.usage.total_tokens
        );
        if totals.failed + totals.missing == 0 || round == 2 {
            break;
        }
        if let Some(emu) = &emu {
            emu.knobs().fail_rows_containing(None);
        }
        let n = batch.retry_failed().await?;
        println!("\nretrying {n} row(s) in a follow-up job…");
    }
    Ok(())
}

#[tokio::main]
async fn main() -> ExitCode {
    match run(clap::Parser::parse()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
