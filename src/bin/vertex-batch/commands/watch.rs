//! `vertex-batch watch JOB`: follows one job until it ends; with
//! `--results FILE`, appends each row to FILE as it lands.

use std::pin::pin;

use futures::StreamExt;
use vertex_batch::{Job, JobState, WaitOptions};

use crate::{
    args::{positive_secs, Global, JobArg},
    exit::{Exit, INTERRUPTED, JOB_NOT_SUCCEEDED, ROWS_NOT_SUCCEEDED},
    fail::{clean, CliError, CliResult, OrCli},
    progress::{Progress, Snapshot},
};

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
    #[arg(long, value_name = "SECS", default_value_t = 5.0, value_parser = positive_secs)]
    poll: f64,
}

/// Follows the job until it ends.
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
                Some(Err(e)) => return Err(e).or_cli(g),
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

/// `watch JOB --results FILE`: the job followed, each row appended to FILE
/// as it lands (flushed and synced after every look), until the job ends.
async fn watch_results(
    g: &Global,
    client: &vertex_batch::Client,
    a: &WatchArgs,
    file: &std::path::Path,
    interrupt: &crate::interrupt::Interrupt,
) -> CliResult<Exit> {
    use vertex_batch::batch::JobOutput;
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
