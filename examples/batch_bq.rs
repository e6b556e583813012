//! Batch prediction with Gemini from BigQuery: mirrors Google's "Batch
//! Predict with Gemini using BigQuery data" sample.
//!
//! Offline, with nothing configured, it runs on an embedded emulator:
//!
//! ```text
//! cargo run --example batch_bq --features emulator
//! ```
//!
//! On Vertex AI: `--project my-project --output bq://my-project.my_dataset`.

use std::{path::PathBuf, pin::pin, time::Duration};

use clap::Parser;
use futures::StreamExt;
use serde_json::json;
use vertex_batch::{
    batch::{Inputs, ResultReader},
    emulator::Emulator,
    format::Outcome,
    policy::PollPolicy,
    transport::ENV_EMULATOR_HOST,
    Client, JobSpec, WaitOptions,
};

/// Submit a Gemini batch prediction job reading a BigQuery table and follow
/// it.
#[derive(Parser)]
#[command(
    name = "batch_bq",
    after_help = "Where it runs:\n  \
        VERTEX_AI_EMULATOR_HOST=host:port   an emulator you started (vertex-batch-emulator)\n  \
        a project (flag or env)             Vertex AI, with Application Default Credentials\n  \
        neither                             an embedded emulator: no credentials, no network"
)]
struct Args {
    /// GCP project; without one, and without VERTEX_AI_EMULATOR_HOST, the
    /// example runs on an embedded emulator.
    #[arg(long, env = "GOOGLE_CLOUD_PROJECT")]
    project: Option<String>,
    /// Region.
    #[arg(long, env = "GOOGLE_CLOUD_LOCATION", default_value = "us-central1")]
    location: String,
    /// The model.
    #[arg(long, default_value = "gemini-2.0-flash-001")]
    model: String,
    /// The job's input (Google's sample's, by default).
    #[arg(
        long,
        default_value = "bq://storage-samples.generative_ai.batch_requests_for_multimodal_input"
    )]
    input: String,
    /// Where predictions go, e.g. bq://your-project.your_dataset (required
    /// on Vertex AI).
    #[arg(long)]
    output: Option<String>,
    /// The embedded emulator's data directory (default: a temporary one).
    #[arg(long)]
    data_dir: Option<PathBuf>,
}

/// The prompts written for the embedded emulator.
const PROMPTS: &[&str] = &[
    "Give me a recipe for banana bread.",
    "List three ways to reduce the cold-start time of a Rust web service.",
    "Summarize the plot of Moby-Dick in two sentences.",
    "Write a haiku about autumn rain on a tin roof.",
    "Explain the difference between TCP and UDP to a new engineer.",
];

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();

    // Where it runs: an emulator you started (VERTEX_AI_EMULATOR_HOST), Vertex
    // AI (a project), or, with neither, an emulator embedded in this process.
    let external = std::env::var(ENV_EMULATOR_HOST)
        .ok()
        .filter(|v| !v.is_empty());
    let embedded = args.project.is_none() && external.is_none();
    let output = match args.output {
        Some(output) => output,
        None if embedded || external.is_some() => {
            "bq://local-project.gen_ai_batch_prediction".to_owned()
        }
        None => {
            let hint = "bq://your-project.your_dataset";
            return Err(format!("--output is required on Vertex AI, e.g. --output {hint}").into());
        }
    };
    // An emulator accepts any project.
    let project = args.project.as_deref().unwrap_or("local-project");

    // 1. The client.
    let emulator = if embedded {
        let dir = match args.data_dir {
            Some(dir) => dir,
            // Kept afterwards, to look at the output.
            None => tempfile::Builder::new()
                .prefix("vertex-batch-example-")
                .tempdir()?
                .keep(),
        };
        let emu = Emulator::start(dir).await?;
        // Slow enough to watch it happen.
        emu.knobs().set_queue_delay(Duration::from_millis(500));
        emu.knobs().set_job_duration(Some(Duration::from_secs(3)));
        println!("No GCP project configured: running on an embedded Vertex AI emulator.");
        println!("  data dir: {}", emu.data_dir().display());
        Some(emu)
    } else {
        None
    };
    let client = match &emulator {
        Some(emu) => emu.client(project, &args.location)?,
        // Reads VERTEX_AI_EMULATOR_HOST itself; otherwise Vertex AI with
        // Application Default Credentials.
        None => Client::builder()
            .project(project)
            .location(&args.location)
            .build()?,
    };
    if let Some(host) = &external {
        println!("Talking to the emulator at {host}.");
    }

    // 2. The prompts: a table with a `request` column (and a `key` to match
    // answers by), one request multimodal. Google's sample reads a table it
    // published; the embedded emulator reads `bq://project.dataset.table` from
    // `<data dir>/bigquery/project/dataset/table.jsonl`, one row a line.
    if let Some(emu) = &emulator {
        let file = emu.bigquery_path(&args.input)?;
        let mut requests: Vec<_> = PROMPTS
            .iter()
            .map(|prompt| json!({"contents": [{"role": "user", "parts": [{"text": prompt}]}]}))
            .collect();
        let image = "gs://cloud-samples-data/generative-ai/image/office-desk.jpeg";
        requests.push(json!({"contents": [{"role": "user", "parts": [
            {"fileData": {"fileUri": image, "mimeType": "image/jpeg"}},
            {"text": "List the objects in this image."}
        ]}]}));
        let mut rows = String::new();
        for (i, request) in requests.iter().enumerate() {
            rows += &json!({"key": format!("row-{i}"), "id": i, "request": request}).to_string();
            rows += "\n";
        }
        std::fs::create_dir_all(file.parent().unwrap_or(emu.data_dir()))?;
        std::fs::write(&file, rows)?;
        println!("  input {} is the file {}", args.input, file.display());
    }

    // 3. Start the batch, as Google's sample does. `create` sends exactly
    // that request; a service that may retry submissions should use
    // `client.submit`, which never makes two jobs.
    let spec = JobSpec::new(&args.model)
        .display_name("batch-predict-bq-test-001")
        .input(&args.input)
        .output(&output)
        .model_parameters(json!({"temperature": 0.2, "maxOutputTokens": 200}));
    let mut job = client.create(&spec).await?;
    println!("submitted batch predict job for model {:?}", job.model());
    println!("job id: {:?}", job.name());
    println!("job state: {}", job.state());

    // 4. Wait: instead of the sample's `sleep(5)` loop, watch the job with
    // adaptive polling, printing each change of state and of rows done.
    let max_interval = if emulator.is_some() || external.is_some() {
        Duration::from_millis(500)
    } else {
        Duration::from_secs(60)
    };
    let watch = WaitOptions::new().policy(PollPolicy::default().max_interval(max_interval));
    let mut updates = pin!(client.watch(job.name(), &watch));
    while let Some(update) = updates.next().await {
        job = update?;
        let stats = job.completion_stats();
        if stats.total() > 0 {
            println!(
                "  {:<28} {:>5}/{} rows done ({} failed)",
                job.state().to_string(),
                stats.done(),
                stats.total(),
                stats.failed
            );
        } else {
            println!("  {}", job.state());
        }
    }
    println!("batch predict job finished with state {}", job.state());
    if let Some(err) = job.error() {
        println!("job error: {err}");
    }
    match job.output_location() {
        Some(location) => println!("job output location: {location}"),
        None => println!("job output location: (none reported)"),
    }

    // 5. Read the results: on the embedded emulator, the output table is a
    // local file, one row a line. First the raw rows, then every answer
    // matched to its prompt by the table's `key` column, through the crate's
    // reader (the same classification as for Cloud Storage output).
    if let (Some(emu), Some(location)) = (&emulator, job.output_location()) {
        let file = emu.bigquery_path(&location.uri())?;
        println!("output table file: {}", file.display());
        println!("first predictions:");
        for line in std::fs::read_to_string(&file)?.lines().take(3) {
            let row: serde_json::Value = serde_json::from_str(line)?;
            // A BigQuery `request` column holds the request as JSON text.
            let request: serde_json::Value = match row["request"].as_str() {
                Some(text) => serde_json::from_str(text)?,
                None => row["request"].clone(),
            };
            let prompt = request["contents"][0]["parts"]
                .as_array()
                .and_then(|parts| parts.iter().find_map(|p| p["text"].as_str()))
                .unwrap_or("?");
            let answer = row["response"]["candidates"][0]["content"]["parts"][0]["text"]
                .as_str()
                .unwrap_or("(no response)");
            println!("  > {prompt}\n    {answer}");
        }

        let input = emu.bigquery_path(&args.input)?;
        let results = ResultReader::new()
            .output_local(&file)
            .inputs(Inputs::local([input]))
            .read()
            .await?;
        let (rows, errors, totals) = results.collect_all().await;
        println!(
            "matched answers ({} rows, {} succeeded, {} missing, {} unreadable):",
            rows.len(),
            totals.succeeded,
            totals.missing,
            errors.len()
        );
        for row in &rows {
            let key = row.key().unwrap_or("?");
            match row.outcome() {
                Outcome::Succeeded(answer) => {
                    println!("  {key}: {}", answer.text().lines().next().unwrap_or(""))
                }
                other => println!("  {key}: {}", other.kind()),
            }
        }
    }

    if !job.state().is_success() {
        return Err(format!("the job ended {}", job.state()).into());
    }
    Ok(())
}
