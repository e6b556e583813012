//! `vertex-batch run`: PROMPTS in, one matched RESULTS line per prompt out.

use std::{path::PathBuf, time::Duration};

use futures::StreamExt;
use vertex_batch::{client::WatchManyOptions, data::Batch, Client, JobSpec, JobState};

use crate::{
    fail::{
        clean, CliError, CliResult, Exit, INTERRUPTED, JOB_NOT_SUCCEEDED, NETWORK,
        ROWS_NOT_SUCCEEDED,
    },
    interrupt::Interrupt,
    output::{deliver, ResultsFile},
    progress::{Progress, Snapshot},
    prompts::{Format, Prompts},
    start::{batch_spec, cancel_all, live_names, Start, Started, Track},
    Global,
};

#[derive(clap::Args, Debug)]
pub struct RunArgs {
    /// The model, e.g. gemini-2.0-flash-001 or publishers/google/models/….
    #[arg(long)]
    model: String,
    /// The prompts: JSONL of {"key", "request"} lines, or plain text (one
    /// prompt a line, keyed by line number).
    #[arg(long, value_name = "PROMPTS")]
    input: PathBuf,
    /// How the prompts file is written.
    #[arg(long, value_enum, default_value = "auto")]
    format: Format,
    /// Where inputs and outputs are staged: gs://BUCKET[/PREFIX] (objects)
    /// or bq://PROJECT.DATASET (tables; the dataset in the jobs' region).
    #[arg(long, value_name = "GS_URI")]
    staging: String,
    /// Where the results go (JSONL, one line per prompt); - for stdout.
    #[arg(long, value_name = "RESULTS")]
    output: String,
    /// The batch's key (lowercase letters, digits, - and _): run again with
    /// it to reattach to the batch instead of starting another.
    #[arg(long, value_name = "KEY")]
    request_key: Option<String>,
    /// The jobs' display name (default: made from the model and the time;
    /// a re-run with the request key need not repeat it).
    #[arg(long)]
    display_name: Option<String>,
    /// A label for the jobs (repeatable).
    #[arg(long = "label", value_name = "KEY=VALUE", value_parser = crate::jobs::label)]
    labels: Vec<(String, String)>,
    /// On Ctrl-C (while submitting or following), cancel the batch's jobs
    /// instead of leaving them running.
    #[arg(long)]
    cancel_on_interrupt: bool,
    /// At most N prompts a job: a batch over N prompts runs as several
    /// jobs side by side (default and maximum: the service's 200,000).
    #[arg(long, value_name = "N", value_parser = crate::jobs::rows_per_job)]
    rows_per_job: Option<u64>,
    /// How long a part's claim holds before another run may take it over
    /// (a run that died between claiming a part and creating its job holds
    /// it up this long), in seconds.
    #[arg(long, value_name = "SECS", default_value_t = 300.0, value_parser = crate::jobs::claim_lease)]
    claim_lease: f64,
    #[command(flatten)]
    shape: crate::prompts::ShapeArgs,
}

pub async fn run(g: &Global, a: RunArgs) -> CliResult<Exit> {
    // From the start: a Ctrl-C at any step stops cleanly (see `start`).
    let interrupt = crate::interrupt::install()?;
    let client = g.client()?;
    let storage = g.staging_for(&client, &a.staging)?;
    let shape = a.shape.shape(&a.model)?;
    let family = shape.family();
    let prompts = Prompts::check(&a.input, a.format, Some(shape))?;
    let out = ResultsFile::create(&a.output)?;
    eprintln!("{} prompts in {}", prompts.rows(), prompts.path().display());
    let mut job = a.shape.apply(JobSpec::new(&a.model), family);
    if let Some(name) = &a.display_name {
        job = job.display_name(name);
    }
    for (k, v) in &a.labels {
        job = job.label(k, v);
    }
    // The key is chosen (and shown) before anything is staged, so a run
    // killed while staging or submitting can be picked up again with it
    // instead of starting a second, billed batch.
    let key = a
        .request_key
        .clone()
        .unwrap_or_else(|| format!("b{:016x}", fastrand::u64(..)));
    eprintln!("batch {key}: staging (if this is interrupted, run again with --request-key {key})");
    // `--retry-for` is also how long following may go without an answer.
    let budget = Duration::from_secs(g.retry_for);
    let track = Track::default();
    let spec = batch_spec(job, &a.staging, a.rows_per_job, a.claim_lease, &track)
        .request_key(&key)
        .watch_options(
            WatchManyOptions::new()
                .failure_budget(budget)
                .connect_budget(budget),
        );
    let start = Start {
        global: g,
        client: &client,
        storage: &storage,
        spec: &spec,
        track: &track,
        interrupt: &interrupt,
        root: format!("{}/{key}", a.staging.trim_end_matches('/')),
        cancel_on_interrupt: a.cancel_on_interrupt,
        pickup: rerun_command(&key),
    };
    let mut batch = match start.run(&prompts).await? {
        Started::Batch(b) => b,
        // `out` goes with the return: its temporary file is removed.
        Started::Interrupted => return Ok(Exit::Code(INTERRUPTED)),
    };
    let jobs = batch.jobs();
    eprintln!(
        "batch {}: {} prompts in {} job(s) under {}",
        batch.request_key(),
        batch.rows(),
        jobs.len(),
        batch.root()
    );
    for j in &jobs {
        eprintln!("  {}", clean(j.name()));
    }

    let mut ui = Progress::new();
    let followed = follow(&mut batch, &mut ui, &interrupt).await;
    // From here on (reading results, cancelling) a Ctrl-C ends the process
    // at once, the temporary results file removed.
    crate::interrupt::stop_at_once();
    match followed {
        Ok(Followed::Done) => {}
        Ok(Followed::Interrupted) => return interrupted(g, &client, &a, &batch, &mut ui).await,
        Err(e) => return gave_up(g, e, &batch, &mut ui),
    }
    let jobs = batch.jobs();
    let failed_jobs: Vec<_> = jobs
        .iter()
        .filter(|j| {
            !matches!(
                j.state(),
                JobState::Succeeded | JobState::PartiallySucceeded
            )
        })
        .collect();
    ui.finish(&format!(
        "{} job(s) ended in {}: {}",
        jobs.len(),
        crate::progress::hms(ui.elapsed()),
        jobs.iter()
            .map(|j| crate::progress::short_state(j.state().as_str()).to_owned())
            .collect::<Vec<_>>()
            .join(", ")
    ));
    for j in &failed_jobs {
        eprintln!(
            "job {} ended {}{}",
            clean(j.name()),
            j.state(),
            j.error()
                .map(|e| format!(": {}", clean(&e.to_string())))
                .unwrap_or_default()
        );
    }
    let rows = batch
        .results()
        .await
        .map_err(|e| CliError::from_lib(e, Some(g)))?;
    let again = format!("write it whole with: {}", rerun_command(&key));
    let written = deliver(rows, out, Some(g), &again).await?;
    Ok(Exit::Code(if !failed_jobs.is_empty() {
        JOB_NOT_SUCCEEDED
    } else if !written.all_succeeded() {
        ROWS_NOT_SUCCEEDED
    } else {
        0
    }))
}

enum Followed {
    Done,
    Interrupted,
}

/// Shows the batch's progress until every job ends or Ctrl-C.
async fn follow(
    batch: &mut Batch,
    ui: &mut Progress,
    interrupt: &Interrupt,
) -> vertex_batch::Result<Followed> {
    loop {
        let mut progress = Box::pin(batch.progress());
        loop {
            tokio::select! {
                () = interrupt.wait() => return Ok(Followed::Interrupted),
                p = progress.next() => match p {
                    None => break,
                    Some(Err(e)) => return Err(e),
                    Some(Ok(p)) => {
                        crate::pause::at("following");
                        let state = summary_state(&p.jobs);
                        ui.update(&Snapshot {
                            state: &state,
                            done: p.succeeded + p.failed,
                            total: Some(p.rows),
                            failed: p.failed,
                        });
                        if p.done {
                            break;
                        }
                    }
                },
            }
        }
        drop(progress);
        // A part whose job was cancelled as another run's duplicate
        // follows the winner: the answers are read from it.
        if !batch.follow_winners().await? {
            return Ok(Followed::Done);
        }
    }
}

/// Following failed with `e`. When the service went unanswered (or kept
/// failing for a passing reason) longer than `--retry-for`, the jobs are
/// still on it: say so, print the command that picks them up, exit 6.
fn gave_up(
    g: &Global,
    e: vertex_batch::Error,
    batch: &Batch,
    ui: &mut Progress,
) -> CliResult<Exit> {
    let err = CliError::from_lib(e, Some(g));
    if err.code != NETWORK {
        return Err(err);
    }
    ui.finish(&format!(
        "error: gave up following the batch after --retry-for {} s without an answer: {}",
        g.retry_for, err.message
    ));
    eprintln!(
        "its {} job(s) are on the service and still run there. Pick the batch up (it resumes \
         its jobs, making no new one, follows them and writes the results) with:\n  {}",
        live_names(&batch.jobs()).len(),
        rerun_command(batch.request_key())
    );
    Ok(Exit::Code(NETWORK))
}

/// The least advanced state among the jobs (what a person waits on).
fn summary_state(jobs: &[vertex_batch::Job]) -> String {
    let running = jobs.iter().find(|j| !j.has_ended());
    match running {
        Some(j) => j.state().as_str().to_owned(),
        None => jobs
            .last()
            .map(|j| j.state().as_str().to_owned())
            .unwrap_or_default(),
    }
}

async fn interrupted(
    g: &Global,
    client: &Client,
    a: &RunArgs,
    batch: &Batch,
    ui: &mut Progress,
) -> CliResult<Exit> {
    let live = live_names(&batch.jobs());
    if a.cancel_on_interrupt {
        ui.finish(&format!("interrupted: cancelling {} job(s)…", live.len()));
        cancel_all(g, client, &live).await;
    } else {
        ui.finish(&format!(
            "interrupted: detached; {} job(s) keep running. Pick the batch up again with:\n  {}",
            live.len(),
            rerun_command(batch.request_key())
        ));
    }
    Ok(Exit::Code(INTERRUPTED))
}

/// This command line with `--request-key KEY` (replacing one given): the
/// `run` that picks the batch up.
fn rerun_command(key: &str) -> String {
    let mut args: Vec<String> = Vec::new();
    // `args_os`: an argument that is not UTF-8 must not panic here.
    let mut it = std::env::args_os()
        .skip(1)
        .map(|a| a.to_string_lossy().into_owned());
    while let Some(arg) = it.next() {
        if arg == "--request-key" {
            it.next();
            continue;
        }
        if arg.starts_with("--request-key=") {
            continue;
        }
        args.push(arg);
    }
    args.push("--request-key".into());
    args.push(key.into());
    std::iter::once("vertex-batch".to_owned())
        .chain(args.iter().map(|a| shell_quote(a)))
        .collect::<Vec<_>>()
        .join(" ")
}

pub fn shell_quote(s: &str) -> String {
    let plain = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:=@,+%".contains(c));
    if plain {
        s.to_owned()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}
