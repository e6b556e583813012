//! `vertex-batch run`: PROMPTS in, one matched RESULTS line per prompt out.

use std::{path::PathBuf, time::Duration};

use vertex_batch::{
    batch::{Batch, LiveEvent, LiveOptions},
    client::WatchManyOptions,
    Client, JobSpec, JobState,
};

use crate::{
    args::{claim_lease, label, positive_secs, rows_per_job, Global},
    exit::{Exit, INTERRUPTED, JOB_NOT_SUCCEEDED, NETWORK, OVER_BUDGET, ROWS_NOT_SUCCEEDED},
    fail::{clean, CliError, CliResult},
    interrupt::Interrupt,
    output::{ResultsFile, Written},
    progress::{Progress, Snapshot},
    prompts::{Format, Prompts},
    start::{batch_spec, cancel_all, live_names, Start, Started, Track},
    term::shell_quote,
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
    #[arg(long = "label", value_name = "KEY=VALUE", value_parser = label)]
    labels: Vec<(String, String)>,
    /// On Ctrl-C (while submitting or following), cancel the batch's jobs
    /// instead of leaving them running.
    #[arg(long)]
    cancel_on_interrupt: bool,
    /// At most N prompts a job: a batch over N prompts runs as several
    /// jobs side by side (default and maximum: the service's 200,000).
    #[arg(long, value_name = "N", value_parser = rows_per_job)]
    rows_per_job: Option<u64>,
    /// How long a part's claim holds before another run may take it over
    /// (a run that died between claiming a part and creating its job holds
    /// it up this long), in seconds.
    #[arg(long, value_name = "SECS", default_value_t = 300.0, value_parser = claim_lease)]
    claim_lease: f64,
    /// Up to N follow-up rounds for rows that fail for a passing cause
    /// (429, 5xx) or never come back: sent while the batch still runs, the
    /// last round kept for when every job has ended.
    #[arg(long, value_name = "N", default_value_t = 0)]
    retry: usize,
    /// A follow-up round is sent while the batch runs once this many
    /// failed rows wait for it.
    #[arg(long, value_name = "N", default_value_t = 1)]
    retry_min_rows: u64,
    /// How often the jobs and their exported rows are looked at, in
    /// seconds.
    #[arg(long, value_name = "SECS", default_value_t = 5.0, value_parser = positive_secs)]
    poll: f64,
    /// A budget in US dollars: the batch's upper-bound cost is estimated
    /// before anything is submitted, and over it nothing is (exit 7); while
    /// it runs, once the rows read cost more, its jobs are cancelled and
    /// the rows they completed kept (exit 7).
    #[arg(long, value_name = "USD", value_parser = usd)]
    max_cost: Option<f64>,
    /// A price table (JSON, the format of the crate's own) whose entries
    /// replace the built-in ones of the same models.
    #[arg(long, value_name = "FILE")]
    prices: Option<PathBuf>,
    #[command(flatten)]
    shape: crate::prompts::ShapeArgs,
}

fn usd(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if (0.0..1e12).contains(&v) => Ok(v),
        _ => Err(format!("{s:?} is not an amount of US dollars")),
    }
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
    let price = crate::cost::price_for(&a.model, a.prices.as_deref())?;
    let max_cost = a.max_cost.map(vertex_batch::cost::Cost::from_usd);
    if let Some(max) = max_cost {
        if a.staging.starts_with("bq://") {
            eprintln!(
                "note: on a BigQuery staging area --max-cost is checked before submitting only \
                 (rows are read when the jobs end)"
            );
        }
        let fits =
            crate::cost::check_budget(&client, &a.model, price.as_ref(), &prompts, max).await?;
        if !fits {
            return Ok(Exit::Code(OVER_BUDGET));
        }
    }
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
    let mut opts = LiveOptions::new()
        .poll(Duration::from_secs_f64(a.poll))
        .retry_rounds(a.retry)
        .retry_min_rows(a.retry_min_rows);
    if let Some(max) = max_cost {
        if let Some(price) = &price {
            opts = opts.budget(max, price.clone());
        }
    }
    let mut out = out;
    let again = format!("write it whole with: {}", rerun_command(&key));
    let followed = follow_live(
        &mut batch,
        opts,
        &mut out,
        &mut ui,
        &interrupt,
        price.as_ref(),
    )
    .await;
    // From here on (cancelling, moving the file) a Ctrl-C ends the process
    // at once, the temporary results file removed.
    crate::interrupt::stop_at_once();
    let live = match followed {
        Ok(Followed::Done(live)) => live,
        Ok(Followed::Interrupted) => return interrupted(g, &client, &a, &batch, &mut ui).await,
        Err(Stopped::Write(e)) => return Err(e),
        Err(Stopped::Read(e)) => {
            let err = CliError::from_lib(e, Some(g));
            if err.code == NETWORK {
                let kept = out.keep_partial();
                eprintln!("{kept}");
                return gave_up(g, err, &batch, &mut ui);
            }
            let kept = out.keep_partial();
            return Err(CliError::new(
                err.code,
                format!(
                    "reading the results failed: {}; {kept}; {again}",
                    err.message
                ),
            ));
        }
    };
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
    let dest = out.name().to_owned();
    out.finish()?;
    let written = Written {
        totals: live.totals,
        unreadable: live.unreadable,
    };
    eprintln!("{}", written.summary(&dest));
    eprintln!(
        "{}",
        crate::output::usage_line(&live.totals, live.cost, &a.model, price.is_some())
    );
    if live.over_budget {
        eprintln!("the batch's cost passed --max-cost; the rows it completed are in {dest}");
        return Ok(Exit::Code(OVER_BUDGET));
    }
    // A job of the first round that did not succeed is forgiven when a
    // later round answered every row it held.
    let all_rows_ok = written.all_succeeded();
    Ok(Exit::Code(if !failed_jobs.is_empty() && !all_rows_ok {
        JOB_NOT_SUCCEEDED
    } else if !all_rows_ok {
        ROWS_NOT_SUCCEEDED
    } else {
        0
    }))
}

/// What following the batch ended with.
struct Ended {
    totals: vertex_batch::batch::Totals,
    unreadable: u64,
    cost: Option<vertex_batch::cost::Cost>,
    over_budget: bool,
}

enum Followed {
    Done(Ended),
    Interrupted,
}

/// Why following stopped early.
enum Stopped {
    Read(vertex_batch::Error),
    Write(CliError),
}

/// Follows the batch live: each row written as it lands (flushed after
/// every look, so a pipe sees it within a poll of its export), the
/// progress by rows read, until every job has ended and every row is out,
/// or Ctrl-C.
async fn follow_live(
    batch: &mut Batch,
    opts: LiveOptions,
    out: &mut ResultsFile,
    ui: &mut Progress,
    interrupt: &Interrupt,
    price: Option<&vertex_batch::cost::ModelPrice>,
) -> Result<Followed, Stopped> {
    let mut live = batch.live(opts).await.map_err(Stopped::Read)?;
    let mut unreadable = 0u64;
    let mut cost = price.map(|_| vertex_batch::cost::Cost::default());
    let mut over_budget = false;
    loop {
        let event = tokio::select! {
            () = interrupt.wait() => return Ok(Followed::Interrupted),
            e = live.next() => e,
        };
        let Some(event) = event else { break };
        match event {
            Ok(LiveEvent::Row(row)) => {
                if let (Some(c), Some(p)) = (&mut cost, price) {
                    *c += p.result_cost(&row).unwrap_or_default();
                }
                out.write_priced(&row, price).map_err(Stopped::Write)?;
                crate::pause::at("writing");
            }
            Ok(LiveEvent::Progress(p)) => {
                out.flush().map_err(Stopped::Write)?;
                crate::pause::at("following");
                let state = summary_state(&p.jobs);
                ui.update(&Snapshot {
                    state: &state,
                    done: p.done,
                    total: Some(p.rows),
                    failed: p.totals.failed,
                });
            }
            Ok(LiveEvent::RetryRound { round, rows }) => {
                ui.note(&format!(
                    "round {round}: resending {rows} row(s) that failed"
                ));
            }
            Ok(LiveEvent::BudgetExceeded {
                spent,
                max,
                cancelled,
            }) => {
                over_budget = true;
                ui.note(&if cancelled > 0 {
                    format!(
                        "the rows read cost {spent}, over --max-cost {max}: cancelling {cancelled} job(s) (completed rows are kept)"
                    )
                } else {
                    format!("the rows read cost {spent}, over --max-cost {max} (every job had ended)")
                });
            }
            Ok(_) => {}
            Err(e) => {
                if !crate::output::warn_unreadable(&e, &mut unreadable) {
                    return Err(Stopped::Read(e));
                }
            }
        }
    }
    Ok(Followed::Done(Ended {
        totals: live.totals(),
        unreadable,
        cost,
        over_budget,
    }))
}

/// Following failed with `e`. When the service went unanswered (or kept
/// failing for a passing reason) longer than `--retry-for`, the jobs are
/// still on it: say so, print the command that picks them up, exit 6.
fn gave_up(g: &Global, err: CliError, batch: &Batch, ui: &mut Progress) -> CliResult<Exit> {
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
