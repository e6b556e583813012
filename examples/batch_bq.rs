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

mod support;

use serde_json::json;
use support::{print_predictions, Sample, Settings, PROMPTS};
use vertex_batch::{
    data::{Inputs, ResultReader},
    emulator::Emulator,
    proto::aiplatform::batch_prediction_job::input_config::Source,
    Job, JobSpec, Outcome,
};

/// Builds the job exactly as Google's sample does.
fn job_spec(cfg: &Settings, output: &str) -> JobSpec {
    JobSpec::new(&cfg.model)
        .display_name("batch-predict-bq-test-001")
        .input(cfg.input())
        .output(output)
        .model_parameters(json!({"temperature": 0.2, "maxOutputTokens": 200}))
}

/// Writes the sample's table (a `request` column, some multimodal) where the
/// emulator reads `input`.
fn seed(emu: &Emulator, input: &str) -> Result<(), String> {
    let path = emu.bigquery_path(input).map_err(|e| e.to_string())?;
    let mut rows: Vec<String> = PROMPTS
        .iter()
        .enumerate()
        .map(|(i, p)| {
            json!({"key": format!("row-{i}"), "id": i, "request": {"contents": [{"role": "user", "parts": [{"text": p}]}]}})
                .to_string()
        })
        .collect();
    rows.push(
        json!({"key": format!("row-{}", rows.len()), "id": rows.len(), "request": {"contents": [{"role": "user", "parts": [
            {"fileData": {"fileUri": "gs://cloud-samples-data/generative-ai/image/office-desk.jpeg", "mimeType": "image/jpeg"}},
            {"text": "List the objects in this image."}
        ]}]}})
        .to_string(),
    );
    std::fs::create_dir_all(path.parent().unwrap_or(emu.data_dir()))
        .and_then(|_| std::fs::write(&path, rows.join("\n") + "\n"))
        .map_err(|e| format!("writing {}: {e}", path.display()))
}

/// Prints the first predictions of the finished job, then every row's
/// answer matched to its prompt by the table's `key` column (the crate's
/// reader: the same classification as for Cloud Storage output).
fn show(emu: &Emulator, job: &Job) -> Result<(), String> {
    let uri = job.output_location().map(|l| l.uri()).unwrap_or_default();
    let file = emu.bigquery_path(&uri).map_err(|e| e.to_string())?;
    println!("output table file: {}", file.display());
    let text =
        std::fs::read_to_string(&file).map_err(|e| format!("reading {}: {e}", file.display()))?;
    print_predictions(&text);
    let input = job
        .proto()
        .input_config
        .as_ref()
        .and_then(|c| match c.source.as_ref()? {
            Source::BigquerySource(b) => Some(b.input_uri.clone()),
            _ => None,
        })
        .ok_or("the job has no BigQuery input")?;
    let input = emu.bigquery_path(&input).map_err(|e| e.to_string())?;
    let reader = ResultReader::new()
        .output_local(&file)
        .inputs(Inputs::local([input]));
    let handle = tokio::runtime::Handle::current();
    let (rows, errors, totals) = tokio::task::block_in_place(|| {
        handle.block_on(async {
            Ok::<_, String>(
                reader
                    .read()
                    .await
                    .map_err(|e| e.to_string())?
                    .collect_all()
                    .await,
            )
        })
    })?;
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
            Outcome::Succeeded(a) => println!("  {key}: {}", a.text().lines().next().unwrap_or("")),
            other => println!("  {key}: {}", other.kind()),
        }
    }
    Ok(())
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let sample = Sample {
        name: "batch_bq",
        about: "submit a Gemini batch prediction job reading a BigQuery table and follow it",
        default_input: "bq://storage-samples.generative_ai.batch_requests_for_multimodal_input",
        emulator_output: "bq://local-project.gen_ai_batch_prediction",
        output_hint: "bq://your-project.your_dataset",
        seed,
        show,
    };
    support::exit(support::main(sample, job_spec).await)
}
