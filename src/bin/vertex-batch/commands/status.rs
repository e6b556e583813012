//! `vertex-batch status JOB`: shows one job, as `field: value` lines or
//! as JSON.

use std::time::SystemTime;

use vertex_batch::{job::format_rfc3339, Job};

use crate::{
    args::{Global, JobArg},
    exit::Exit,
    fail::{clean, CliResult, OrCli},
    term::{out, print_json},
};

#[derive(clap::Args, Debug)]
pub struct StatusArgs {
    #[command(flatten)]
    job: JobArg,
    /// Print the job as JSON (the API's JSON form).
    #[arg(long)]
    json: bool,
}

/// Shows the job.
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
    let time = |t: Option<SystemTime>| t.map_or_else(|| "-".to_owned(), format_rfc3339);
    let s = job.completion_stats();
    let mut lines = vec![
        ("name", clean(job.name())),
        ("display name", clean(job.display_name())),
        ("state", job.state().as_str().to_owned()),
        ("model", clean(job.model())),
        ("created", time(job.create_time())),
        ("started", time(job.start_time())),
        ("ended", time(job.end_time())),
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
