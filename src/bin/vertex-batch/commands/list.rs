//! `vertex-batch list`: the jobs, newest first, as a table or as JSON.

use std::pin::pin;

use futures::StreamExt;
use vertex_batch::{job::format_rfc3339, Job, JobState, ListOptions};

use crate::{
    args::{label, Global},
    exit::Exit,
    fail::{clean, CliResult, OrCli},
    progress::short_state,
    term::{out, print_json},
};

/// Parses `running` or `JOB_STATE_RUNNING` (any case).
fn state(s: &str) -> Result<JobState, String> {
    s.parse::<JobState>().map_err(|e| e.message().to_owned())
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

/// Lists the jobs.
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
        let created = j
            .create_time()
            .map(|t| {
                format_rfc3339(t)
                    .chars()
                    .take(19)
                    .collect::<String>()
                    .replace('T', " ")
            })
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
