//! `vertex-batch submit`: submits a job, or stages a prompts file as a
//! batch, and prints the job names.

use std::{path::PathBuf, pin::pin};

use vertex_batch::{Job, JobSpec};

use crate::{
    args::{claim_lease, label, rows_per_job, Global},
    exit::{Exit, INTERRUPTED},
    fail::{clean, CliError, CliResult, OrCli},
    prompts::{Format, Prompts},
    start::{batch_spec, cancel_all, Start, Started, Track},
    term::{out, print_json, shell_quote},
};

#[derive(clap::Args, Debug)]
pub struct SubmitArgs {
    /// The model, e.g. gemini-2.0-flash-001.
    #[arg(long)]
    model: String,
    /// A local PROMPTS file (staged under --staging), or the job's input
    /// as gs://… (JSONL) or bq://PROJECT.DATASET.TABLE.
    #[arg(long)]
    input: String,
    /// How a local prompts file is written.
    #[arg(long, value_enum, default_value = "auto")]
    format: Format,
    /// Where the job writes (gs://… or bq://…), for a gs:// or bq:// input.
    #[arg(long)]
    output: Option<String>,
    /// Where a local prompts file is staged: gs://BUCKET[/PREFIX] or
    /// bq://PROJECT.DATASET.
    #[arg(long, value_name = "GS_URI")]
    staging: Option<String>,
    /// The job's display name (default: made from the model and the time).
    #[arg(long)]
    display_name: Option<String>,
    /// Makes the submit safe to repeat: the same key never makes a second
    /// job (or batch).
    #[arg(long, value_name = "KEY")]
    request_key: Option<String>,
    /// A label for the job (repeatable).
    #[arg(long = "label", value_name = "KEY=VALUE", value_parser = label)]
    labels: Vec<(String, String)>,
    /// Print JSON instead of names.
    #[arg(long)]
    json: bool,
    /// With a local prompts file: at most N prompts a job (default and
    /// maximum: the service's 200,000).
    #[arg(long, value_name = "N", value_parser = rows_per_job)]
    rows_per_job: Option<u64>,
    /// With a local prompts file: how long a part's claim holds before
    /// another process may take it over, in seconds.
    #[arg(long, value_name = "SECS", default_value_t = 300.0, value_parser = claim_lease)]
    claim_lease: f64,
    /// On Ctrl-C while submitting, cancel the jobs made so far instead of
    /// leaving them running.
    #[arg(long)]
    cancel_on_interrupt: bool,
    #[command(flatten)]
    shape: crate::prompts::ShapeArgs,
}

/// Submits the job (or stages and submits the batch) and prints its names.
pub async fn submit(g: &Global, a: SubmitArgs) -> CliResult<Exit> {
    // From the start: a Ctrl-C at any step stops cleanly.
    let interrupt = crate::interrupt::install()?;
    let remote = a.input.starts_with("gs://") || a.input.starts_with("bq://");
    let shape = a.shape.shape(&a.model)?;
    let mut job = a.shape.apply(JobSpec::new(&a.model), shape.family());
    if let Some(name) = &a.display_name {
        job = job.display_name(name);
    }
    for (k, v) in &a.labels {
        job = job.label(k, v);
    }
    if remote {
        if a.rows_per_job.is_some() {
            return Err(CliError::usage(
                "--rows-per-job splits a local prompts file; a gs:// or bq:// --input runs as one job",
            ));
        }
        let output = a.output.as_deref().ok_or_else(|| {
            CliError::usage("--output gs://… or bq://… is required with a gs:// or bq:// --input")
        })?;
        if a.staging.is_some() {
            return Err(CliError::usage(
                "--staging is for a local prompts file; with a gs:// or bq:// --input give --output",
            ));
        }
        let mut spec = job.input(&a.input).output(output);
        if let Some(k) = &a.request_key {
            spec = spec.request_key(k);
        }
        let client = g.client()?;
        let mut create = pin!(client.submit(&spec));
        let created = tokio::select! {
            biased;
            () = interrupt.wait() => None,
            r = &mut create => Some(r),
        };
        let Some(created) = created else {
            // The create was sent: wait for its answer, so that the job
            // (if made) is known.
            eprintln!(
                "interrupted: waiting for the job create to answer, so that no job is left \
                 unknown (Ctrl-C again to stop at once)"
            );
            let job = create.await.or_cli(g)?;
            if a.cancel_on_interrupt {
                cancel_all(g, &client, &[job.name().to_owned()]).await;
            } else {
                eprintln!("interrupted: the job keeps running: {}", clean(job.name()));
            }
            return Ok(Exit::Code(INTERRUPTED));
        };
        let job = created.or_cli(g)?;
        if a.json {
            print_json(&job.to_json())?;
        } else {
            out(&format!("{}\n", job.name()))?;
        }
        return Ok(Exit::Code(0));
    }
    let staging = a.staging.as_deref().ok_or_else(|| {
        CliError::usage(
            "--staging gs://BUCKET[/PREFIX] or bq://PROJECT.DATASET is required with a local prompts file",
        )
    })?;
    if a.output.is_some() {
        return Err(CliError::usage(
            "--output is for a gs:// or bq:// --input; a local prompts file's output goes under --staging",
        ));
    }
    let client = g.client()?;
    let storage = g.staging_for(&client, staging)?;
    let prompts = Prompts::check(&PathBuf::from(&a.input), a.format, Some(shape))?;
    // The key is made here when not given, so that every message (and
    // the command that picks the batch up) can name it.
    let key = a
        .request_key
        .clone()
        .unwrap_or_else(|| format!("b{:016x}", fastrand::u64(..)));
    let track = Track::default();
    let spec = batch_spec(job, staging, a.rows_per_job, a.claim_lease, &track).request_key(&key);
    let start = Start {
        global: g,
        client: &client,
        storage: &storage,
        spec: &spec,
        track: &track,
        interrupt: &interrupt,
        root: format!("{}/{key}", staging.trim_end_matches('/')),
        cancel_on_interrupt: a.cancel_on_interrupt,
        pickup: follow_up_command(&key),
    };
    let batch = match start.run(&prompts).await? {
        Started::Batch(b) => b,
        Started::Interrupted => return Ok(Exit::Code(INTERRUPTED)),
    };
    if a.json {
        let jobs: Vec<_> = batch.jobs().iter().map(Job::to_json).collect();
        print_json(&serde_json::json!({
            "request_key": batch.request_key(),
            "staging": batch.root().to_string(),
            "rows": batch.rows(),
            "jobs": jobs,
        }))?;
    } else {
        for j in batch.jobs() {
            out(&format!("{}\n", j.name()))?;
        }
        eprintln!(
            "batch {} ({} prompts); follow it and write its results with:\n  {}",
            batch.request_key(),
            batch.rows(),
            follow_up_command(batch.request_key())
        );
    }
    Ok(Exit::Code(0))
}

/// The `run` that picks up the batch this `submit` started: this command
/// line with `run` for `submit`, `--request-key KEY` (given or made),
/// `--output results-KEY.jsonl`, and without `--json`. The same flags mean
/// the same job spec, so it resumes the batch instead of starting one.
fn follow_up_command(key: &str) -> String {
    let mut args: Vec<String> = Vec::new();
    let mut it = std::env::args_os()
        .skip(1)
        .map(|a| a.to_string_lossy().into_owned());
    let mut replaced = false;
    while let Some(arg) = it.next() {
        if arg == "--request-key" {
            it.next();
            continue;
        }
        if arg.starts_with("--request-key=") || arg == "--json" {
            continue;
        }
        if arg == "submit" && !replaced {
            replaced = true;
            args.push("run".into());
            continue;
        }
        args.push(arg);
    }
    args.extend([
        "--request-key".to_owned(),
        key.to_owned(),
        "--output".to_owned(),
        format!("results-{key}.jsonl"),
    ]);
    std::iter::once("vertex-batch".to_owned())
        .chain(args.iter().map(|a| shell_quote(a)))
        .collect::<Vec<_>>()
        .join(" ")
}
