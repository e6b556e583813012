//! Batch prediction with Gemini from Cloud Storage: mirrors Google's
//! "Batch text prediction with Gemini" sample (Go `batchPredictGCS`, Java
//! `BatchTextPredictionWithGemini`).
//!
//! Offline, with nothing configured, it runs on an embedded emulator:
//!
//! ```text
//! cargo run --example batch_gcs --features emulator
//! ```
//!
//! On Vertex AI: `--project my-project --output gs://my-bucket/prefix`.

mod support;

use serde_json::json;
use support::{print_predictions, Sample, Settings, PROMPTS};
use vertex_batch::{emulator::Emulator, Job, JobSpec};

/// Builds the job exactly as Google's sample does.
fn job_spec(cfg: &Settings, output: &str) -> JobSpec {
    JobSpec::new(&cfg.model)
        .display_name("batch-predict-gcs-test-001")
        .input(cfg.input())
        .output(output)
        .model_parameters(json!({"temperature": 0.2, "maxOutputTokens": 200}))
}

/// Writes the sample's prompts where the emulator reads `input`.
fn seed(emu: &Emulator, input: &str) -> Result<(), String> {
    let path = emu.gcs_path(input).map_err(|e| e.to_string())?;
    let lines: Vec<String> = PROMPTS
        .iter()
        .map(|p| {
            json!({"request": {"contents": [{"role": "user", "parts": [{"text": p}]}]}}).to_string()
        })
        .collect();
    std::fs::create_dir_all(path.parent().unwrap_or(emu.data_dir()))
        .and_then(|_| std::fs::write(&path, lines.join("\n") + "\n"))
        .map_err(|e| format!("writing {}: {e}", path.display()))
}

/// Prints the first predictions of the finished job.
fn show(emu: &Emulator, job: &Job) -> Result<(), String> {
    let dir = job.output_location().map(|l| l.uri()).unwrap_or_default();
    let file = emu
        .gcs_path(&dir)
        .map_err(|e| e.to_string())?
        .join("predictions.jsonl");
    println!("predictions file: {}", file.display());
    let text =
        std::fs::read_to_string(&file).map_err(|e| format!("reading {}: {e}", file.display()))?;
    print_predictions(&text);
    Ok(())
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let sample = Sample {
        name: "batch_gcs",
        about:
            "submit a Gemini batch prediction job reading JSONL from Cloud Storage and follow it",
        default_input: "gs://cloud-samples-data/batch/prompt_for_batch_gemini_predict.jsonl",
        emulator_output: "gs://vertex-batch-demo/gen-ai-batch-prediction",
        output_hint: "gs://your-bucket/gen-ai-batch-prediction",
        seed,
        show,
    };
    support::exit(support::main(sample, job_spec).await)
}
