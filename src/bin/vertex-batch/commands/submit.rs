//! `submit`, `status`, `watch`, `list`, `cancel`, `delete` and `results`.

use std::{path::PathBuf, pin::pin};

use futures::StreamExt;
use vertex_batch::{
    data::Inputs, data::ResultReader, job::OutputLocation, uri::BigQueryUri, GcsUri, Job, JobSpec,
    JobState, ListOptions, WaitOptions,
};

use crate::{
    fail::{CliError, CliResult, Exit, OrCli, INTERRUPTED, JOB_NOT_SUCCEEDED, ROWS_NOT_SUCCEEDED},
    output::{deliver, ResultsFile},
    progress::{short_state, Progress, Snapshot},
    prompts::{Format, Prompts},
    start::{batch_spec, cancel_all, Start, Started, Track},
    Global,
};

/// Writes `text` to stdout; a closed pipe (`… | head`) is not an error.
pub fn out(text: &str) -> CliResult<()> {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(CliError::other(format!("writing to stdout: {e}")))
        }
        _ => Ok(()),
    }
}

pub use crate::fail::clean;

/// Parses `KEY=VALUE`.
pub fn label(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
        _ => Err(format!("{s:?} is not KEY=VALUE")),
    }
}

const STATES: [JobState; 11] = [
    JobState::Queued,
    JobState::Pending,
    JobState::Running,
    JobState::Succeeded,
    JobState::Failed,
    JobState::Cancelling,
    JobState::Cancelled,
    JobState::Paused,
    JobState::Expired,
    JobState::Updating,
    JobState::PartiallySucceeded,
];

/// Parses `running` or `JOB_STATE_RUNNING` (any case).
fn state(s: &str) -> Result<JobState, String> {
    let want = s.to_ascii_uppercase();
    STATES
        .into_iter()
        .find(|st| st.as_str() == want || short_state(st.as_str()) == want)
        .ok_or_else(|| {
            let names: Vec<_> = STATES
                .iter()
                .map(|s| short_state(s.as_str()).to_ascii_lowercase())
                .collect();
            format!("{s:?} is not a job state ({})", names.join(", "))
        })
}

/// A job, by its full name or its numeric id.
#[derive(clap::Args, Debug)]
pub struct JobArg {
    /// The job: projects/P/locations/L/batchPredictionJobs/ID, or just ID.
    job: String,
}

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

/// Parses `--rows-per-job`: 1 to the service's 200,000.
pub fn rows_per_job(s: &str) -> Result<u64, String> {
    let max = vertex_batch::data::input::SERVICE_MAX_ROWS_PER_JOB;
    match s.parse::<u64>() {
        Ok(n) if (1..=max).contains(&n) => Ok(n),
        _ => Err(format!("{s:?} is not a number of rows from 1 to {max}")),
    }
}

/// Parses `--claim-lease`: seconds, more than 0 and at most a day.
pub fn claim_lease(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(n) if n > 0.0 && n <= 86_400.0 => Ok(n),
        _ => Err(format!("{s:?} is not a number of seconds from 0 to 86400")),
    }
}

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
        .chain(args.iter().map(|a| crate::run::shell_quote(a)))
        .collect::<Vec<_>>()
        .join(" ")
}

fn print_json(v: &serde_json::Value) -> CliResult<()> {
    let s = serde_json::to_string_pretty(v)
        .map_err(|e| CliError::other(format!("encoding JSON: {e}")))?;
    out(&format!("{s}\n"))
}

#[derive(clap::Args, Debug)]
pub struct StatusArgs {
    #[command(flatten)]
    job: JobArg,
    /// Print the job as JSON (the API's JSON form).
    #[arg(long)]
    json: bool,
}

pub async fn status(g: &Global, a: StatusArgs) -> CliResult<Exit> {
    let client = g.client()?;
    let job = client.get(&a.job.job).await.or_cli(g)?;
    if a.json {
        print_json(&job.to_json())?;
    } else {
        out(&describe(&job))?;
    }
    Ok(Exit::Code(0))
}

/// A job as `field: value` lines.
fn describe(job: &Job) -> String {
    let json = job.to_json();
    let time = |k: &str| json[k].as_str().unwrap_or("-").to_owned();
    let s = job.completion_stats();
    let mut lines = vec![
        ("name", clean(job.name())),
        ("display name", clean(job.display_name())),
        ("state", job.state().as_str().to_owned()),
        ("model", clean(job.model())),
        ("created", time("createTime")),
        ("started", time("startTime")),
        ("ended", time("endTime")),
        (
            "rows",
            format!(
                "{} succeeded, {} failed, {} incomplete",
                s.successful,
                s.failed,
                s.incomplete.map_or("?".to_owned(), |n| n.to_string())
            ),
        ),
    ];
    if let Some(o) = job.output_location() {
        lines.push(("output", clean(&o.uri())));
    }
    if let Some(e) = job.error() {
        lines.push(("error", clean(&e.to_string())));
    }
    let mut out = String::new();
    for (k, v) in lines {
        out.push_str(&format!("{:<13} {v}\n", format!("{k}:")));
    }
    out
}

#[derive(clap::Args, Debug)]
pub struct WatchArgs {
    #[command(flatten)]
    job: JobArg,
    /// Appends each result line to FILE as its row lands (RESULTS lines,
    /// keys not already in FILE; a re-run resumes it).
    #[arg(long, value_name = "FILE")]
    results: Option<std::path::PathBuf>,
    /// With --results: how often the job's exported rows are looked at, in
    /// seconds.
    #[arg(long, value_name = "SECS", default_value_t = 5.0, value_parser = crate::run::positive_secs)]
    poll: f64,
}

pub async fn watch(g: &Global, a: WatchArgs) -> CliResult<Exit> {
    let interrupt = crate::interrupt::install()?;
    let client = g.client()?;
    if let Some(file) = &a.results {
        return watch_results(g, &client, &a, file, &interrupt).await;
    }
    let mut ui = Progress::new();
    let mut updates = pin!(client.watch(&a.job.job, &WaitOptions::new()));
    let mut last: Option<Job> = None;
    loop {
        tokio::select! {
            () = interrupt.wait() => {
                ui.finish("interrupted: stopped watching; the job keeps running");
                return Ok(Exit::Code(INTERRUPTED));
            }
            u = updates.next() => match u {
                None => break,
                Some(Err(e)) => return Err(CliError::from_lib(e, Some(g))),
                Some(Ok(job)) => {
                    let s = job.completion_stats();
                    ui.update(&Snapshot {
                        state: job.state().as_str(),
                        done: s.successful + s.failed,
                        total: (s.total() > 0).then_some(s.total()),
                        failed: s.failed,
                    });
                    last = Some(job);
                }
            },
        }
    }
    let job = last.ok_or_else(|| CliError::other("the watch ended without news of the job"))?;
    let s = job.completion_stats();
    ui.finish(&format!(
        "{} ended {} in {}: {} rows succeeded, {} failed",
        job.name(),
        job.state(),
        crate::progress::hms(ui.elapsed()),
        s.successful,
        s.failed
    ));
    Ok(Exit::Code(end_code(&job)))
}

/// 0 for a clean success, 4 when rows failed, 3 when the job did not succeed.
fn end_code(job: &Job) -> u8 {
    match job.state() {
        JobState::Succeeded | JobState::PartiallySucceeded => {
            if job.completion_stats().failed > 0 || job.state() == JobState::PartiallySucceeded {
                ROWS_NOT_SUCCEEDED
            } else {
                0
            }
        }
        _ => JOB_NOT_SUCCEEDED,
    }
}

#[derive(clap::Args, Debug)]
pub struct ListArgs {
    /// Only jobs in this state (running, succeeded, … or JOB_STATE_…).
    #[arg(long, value_parser = state)]
    state: Option<JobState>,
    /// Only jobs with exactly this display name.
    #[arg(long)]
    display_name: Option<String>,
    /// Only jobs with this label (repeatable; all must match).
    #[arg(long = "label", value_name = "KEY=VALUE", value_parser = label)]
    labels: Vec<(String, String)>,
    /// At most this many jobs, newest first.
    #[arg(long, default_value_t = 50)]
    limit: usize,
    /// Print a JSON array of jobs (the API's JSON form).
    #[arg(long)]
    json: bool,
}

pub async fn list(g: &Global, a: ListArgs) -> CliResult<Exit> {
    let client = g.client()?;
    let mut opts = ListOptions::new();
    if let Some(s) = a.state {
        opts = opts.state(s);
    }
    if let Some(d) = &a.display_name {
        opts = opts.display_name(d);
    }
    for (k, v) in &a.labels {
        opts = opts.label(k, v);
    }
    let mut jobs = Vec::new();
    let mut stream = pin!(client.list(&opts).take(a.limit));
    while let Some(j) = stream.next().await {
        jobs.push(j.or_cli(g)?);
    }
    if a.json {
        print_json(&serde_json::Value::Array(
            jobs.iter().map(Job::to_json).collect(),
        ))?;
        return Ok(Exit::Code(0));
    }
    if jobs.is_empty() {
        eprintln!("no jobs");
        return Ok(Exit::Code(0));
    }
    out(&table(&jobs))?;
    Ok(Exit::Code(0))
}

/// Jobs as an aligned table.
fn table(jobs: &[Job]) -> String {
    let mut rows = vec![[
        "ID".to_owned(),
        "STATE".to_owned(),
        "ROWS".to_owned(),
        "CREATED".to_owned(),
        "DISPLAY NAME".to_owned(),
    ]];
    for j in jobs {
        let s = j.completion_stats();
        let rows_done = if s.total() > 0 {
            format!("{}/{}", s.done(), s.total())
        } else {
            "-".to_owned()
        };
        let created = j.to_json()["createTime"]
            .as_str()
            .map(|t| t.chars().take(19).collect::<String>().replace('T', " "))
            .unwrap_or_else(|| "-".into());
        rows.push([
            clean(j.id()),
            short_state(j.state().as_str()).to_owned(),
            rows_done,
            clean(&created),
            clean(j.display_name()),
        ]);
    }
    let widths: Vec<usize> = (0..5)
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for r in &rows {
        let cells: Vec<String> = r
            .iter()
            .zip(&widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}

pub async fn cancel(g: &Global, a: JobArg) -> CliResult<Exit> {
    let client = g.client()?;
    client.cancel(&a.job).await.or_cli(g)?;
    eprintln!(
        "cancel requested: {} (it ends CANCELLED, or SUCCEEDED if it was about to)",
        a.job
    );
    Ok(Exit::Code(0))
}

pub async fn delete(g: &Global, a: JobArg) -> CliResult<Exit> {
    let client = g.client()?;
    client.delete(&a.job).await.or_cli(g)?;
    eprintln!("deleted: {}", a.job);
    Ok(Exit::Code(0))
}

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

/// `watch JOB --results FILE`: the job followed, each row appended to FILE
/// as it lands (flushed and synced after every look), until the job ends.
async fn watch_results(
    g: &Global,
    client: &vertex_batch::Client,
    a: &WatchArgs,
    file: &std::path::Path,
    interrupt: &crate::interrupt::Interrupt,
) -> CliResult<Exit> {
    use vertex_batch::data::live::JobOutput;
    let storage = g.storage_for(client)?;
    let mut output = JobOutput::new(storage);
    let mut had = 0u64;
    let mut out = crate::output::ResultsFile::append(file, |k| {
        had += 1;
        output.skip_key(k);
    })?;
    if had > 0 {
        eprintln!(
            "{}: {had} rows already there; appending the others",
            file.display()
        );
    }
    let poll = std::time::Duration::from_secs_f64(a.poll);
    let mut ui = Progress::new();
    let mut first = true;
    loop {
        if !first {
            tokio::select! {
                () = interrupt.wait() => {
                    out.sync()?;
                    ui.finish(&format!("interrupted: stopped watching; the job keeps running; {} rows are in {}", had + output.totals().rows(), file.display()));
                    return Ok(Exit::Code(INTERRUPTED));
                }
                () = tokio::time::sleep(poll) => {}
            }
        }
        first = false;
        let job = client.get(a.job.job.as_str()).await.or_cli(g)?;
        let ended = job.has_ended();
        let Some(dir) = JobOutput::dir_of(&job) else {
            return Err(CliError::usage(format!(
                "{} writes to BigQuery: --results follows Cloud Storage output only \
                 (read the table with `results` once the job ends)",
                clean(job.name())
            )));
        };
        {
            let mut failed = None;
            output
                .read_new(&dir, |row| {
                    if failed.is_none() {
                        if let Err(e) = out.write(&row) {
                            failed = Some(e);
                        }
                    }
                })
                .await
                .or_cli(g)?;
            if let Some(e) = failed {
                return Err(e);
            }
            out.sync()?;
        }
        let t = output.totals();
        ui.update(&Snapshot {
            state: job.state().as_str(),
            done: had + t.rows(),
            total: {
                let s = job.completion_stats();
                (s.total() > 0).then_some(s.total())
            },
            failed: t.failed,
        });
        if ended {
            let t = output.totals();
            ui.finish(&format!(
                "{} ended {}: {} rows appended to {} ({} succeeded, {} failed, {} blocked; {} already there)",
                clean(job.name()),
                job.state(),
                t.rows(),
                file.display(),
                t.succeeded,
                t.failed,
                t.blocked,
                had
            ));
            out.finish()?;
            return Ok(Exit::Code(if !job.state().is_success() {
                JOB_NOT_SUCCEEDED
            } else if t.failed + t.blocked + t.errors > 0 {
                ROWS_NOT_SUCCEEDED
            } else {
                0
            }));
        }
    }
}
