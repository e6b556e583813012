//! Staging and submitting a batch from the command line (`run`, and
//! `submit` of a prompts file), under the Ctrl-C handler.
//!
//! Interrupted while staging, it stops, submits nothing and says what was
//! uploaded. Interrupted while submitting, it first lets a job create
//! already sent answer (so no job is left unknown), then stops: with
//! `--cancel-on-interrupt` it cancels the batch's live jobs (every part's,
//! as the manifest records them), without it it says they keep running and
//! prints the command that picks the batch up. Either way: exit 130.

use std::{
    cell::Cell,
    future::Future,
    sync::{Arc, Mutex},
};

use tokio::sync::Notify;
use vertex_batch::{
    batch::{Batch, BatchEvent, BatchSpec},
    Client, JobSpec,
};

use crate::{
    args::Global,
    exit::NETWORK,
    fail::{clean, CliError, CliResult, OrCli},
    interrupt::Interrupt,
    prompts::Prompts,
};

/// What a batch's start has done so far, as its events tell.
#[derive(Default)]
struct Steps {
    /// Input parts uploaded, and their prompts.
    parts: usize,
    rows: u64,
    /// The manifest was written (or found): the batch is staged.
    staged: bool,
    /// The part whose job create is under way (claimed, no job yet).
    creating: Option<usize>,
    /// The jobs known, in the order they were.
    jobs: Vec<String>,
}

/// Follows a batch's start through its [`BatchEvent`]s.
#[derive(Clone, Default)]
pub struct Track {
    steps: Arc<Mutex<Steps>>,
    changed: Arc<Notify>,
}

impl Track {
    fn saw(&self, e: &BatchEvent) {
        {
            let mut s = self.steps();
            match e {
                BatchEvent::Staged { rows, .. } => {
                    s.parts += 1;
                    s.rows += rows;
                }
                BatchEvent::ManifestWritten | BatchEvent::Resumed => s.staged = true,
                BatchEvent::Claimed { part, .. } | BatchEvent::TookOverClaim { part, .. } => {
                    s.creating = Some(*part)
                }
                BatchEvent::Submitted { job, .. } => {
                    s.creating = None;
                    s.jobs.push(job.clone());
                }
                _ => {}
            }
        }
        self.changed.notify_one();
    }

    fn steps(&self) -> std::sync::MutexGuard<'_, Steps> {
        self.steps.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether the batch is staged (its jobs are being submitted).
    fn staged(&self) -> bool {
        self.steps().staged
    }

    /// The part whose job create is under way.
    fn creating(&self) -> Option<usize> {
        self.steps().creating
    }

    /// The jobs known so far.
    fn jobs(&self) -> Vec<String> {
        self.steps().jobs.clone()
    }
}

/// The batch of `job` staged under `staging`, at most `rows` prompts a job
/// when given, with claims of `lease` seconds; its steps go to `track`, are
/// told on stderr where a person wants to know, and are the tests' pause
/// points (see [`crate::pause`]).
pub fn batch_spec(
    job: JobSpec,
    staging: &str,
    rows: Option<u64>,
    lease: f64,
    track: &Track,
) -> BatchSpec {
    let track = track.clone();
    let mut spec = BatchSpec::new(job, staging)
        .claim_lease(std::time::Duration::from_secs_f64(lease))
        .on_event(move |e| {
            track.saw(e);
            match e {
                BatchEvent::WaitingForClaim { part, .. } => {
                    eprintln!("part {part}: another process is submitting its job; waiting for it")
                }
                BatchEvent::TookOverClaim { part, .. } => eprintln!(
                    "part {part}: the process submitting it went away; submitting it here"
                ),
                _ => {}
            }
            if let Some(p) = crate::pause::point(e) {
                crate::pause::at(&p);
            }
        });
    if let Some(n) = rows {
        spec = spec.limits(vertex_batch::format::InputLimits::default().max_rows_per_file(n));
    }
    spec
}

/// How a start ended.
// Returned and matched at once, never stored: boxing the batch would only
// add an allocation.
#[allow(clippy::large_enum_variant)]
pub enum Started {
    /// Staged and every part's job known.
    Batch(Batch),
    /// Stopped by Ctrl-C; what was left has been told (exit 130).
    Interrupted,
}

/// A batch to start: `spec` (made by [`batch_spec`] with `track`, with a
/// request key) staged under `root` (`STAGING/KEY`); `pickup` is the
/// command that picks the batch up again.
pub struct Start<'a> {
    pub global: &'a Global,
    pub client: &'a Client,
    pub storage: &'a vertex_batch::batch::Backend,
    pub spec: &'a BatchSpec,
    pub track: &'a Track,
    pub interrupt: &'a Interrupt,
    pub root: String,
    pub cancel_on_interrupt: bool,
    pub pickup: String,
}

impl Start<'_> {
    /// Stages `prompts` and submits the jobs, or stops on Ctrl-C.
    pub async fn run(&self, prompts: &Prompts) -> CliResult<Started> {
        let broken = Cell::new(None);
        // Staging reads the prompts without yielding between lines of a
        // part: a Ctrl-C seen there fails staging at the next line (before
        // the manifest), so no further part is uploaded.
        let mut lines = prompts.iter(&broken)?;
        let interrupt = self.interrupt.clone();
        let mut stopped = false;
        let guarded = std::iter::from_fn(move || {
            if stopped {
                return None;
            }
            if interrupt.seen() {
                stopped = true;
                return Some((String::new(), crate::prompts::poison()));
            }
            lines.next()
        });
        let mut start = Box::pin(self.client.start_batch(self.storage, self.spec, guarded));
        let done = tokio::select! {
            biased;
            () = self.interrupt.wait() => None,
            r = &mut start => Some(r),
        };
        // Staging stopped on the Ctrl-C: as if it had been seen first.
        let done = match done {
            Some(Err(_)) if self.interrupt.seen() && !self.track.staged() => None,
            other => other,
        };
        let Some(result) = done else {
            if !self.track.staged() {
                // Dropping the start ends its upload: the part under way
                // never becomes an object.
                drop(start);
                self.tell_staging();
                return Ok(Started::Interrupted);
            }
            let settled = self.settle(&mut start).await;
            drop(start);
            let batch = match settled {
                Some(Ok(b)) => Some(b),
                Some(Err(e)) => {
                    eprintln!(
                        "warning: {}",
                        CliError::from_lib(e, Some(self.global)).message
                    );
                    None
                }
                None => None,
            };
            self.tell_submitting(batch).await;
            return Ok(Started::Interrupted);
        };
        drop(start);
        // The file changed between the check and the upload: staging failed
        // on it, before the manifest (see `Prompts::iter`).
        if let Some(problem) = broken.take() {
            return Err(prompts.changed(&problem));
        }
        result
            .map(Started::Batch)
            .or_cli(self.global)
            .map_err(|err| {
                if err.code == NETWORK && self.track.staged() {
                    CliError::new(
                        err.code,
                        format!(
                        "{}; the batch is staged ({} job(s) created so far): pick it up with: {}",
                        err.message,
                        self.track.jobs().len(),
                        self.pickup
                    ),
                    )
                } else {
                    err
                }
            })
    }

    /// Drives `start` on while a job create it sent has not answered; the
    /// start's end when it came first.
    async fn settle(
        &self,
        start: &mut (impl Future<Output = vertex_batch::Result<Batch>> + Unpin),
    ) -> Option<vertex_batch::Result<Batch>> {
        if let Some(part) = self.track.creating() {
            eprintln!(
                "interrupted: waiting for part {part}'s job create to answer, so that no job is \
                 left unknown (Ctrl-C again to stop at once)"
            );
        }
        while self.track.creating().is_some() {
            // The events first: the start is not driven past the answer.
            tokio::select! {
                biased;
                () = self.track.changed.notified() => {}
                r = &mut *start => return Some(r),
            }
        }
        None
    }

    fn tell_staging(&self) {
        let (parts, rows) = {
            let s = self.track.steps();
            (s.parts, s.rows)
        };
        let left = if parts == 0 {
            "nothing was uploaded".to_owned()
        } else {
            format!(
                "{parts} input part(s) ({rows} prompts) were uploaded under {}/input/ and stay there",
                self.root
            )
        };
        eprintln!(
            "interrupted while staging: stopped; nothing was submitted, {left}. Stage and run \
             the batch with:\n  {}",
            self.pickup
        );
    }

    /// Cancels the batch's live jobs, or tells how to pick them up.
    /// `batch`: the start, when it ended before it was stopped.
    async fn tell_submitting(&self, batch: Option<Batch>) {
        if self.cancel_on_interrupt {
            let live: Vec<String> = match &batch {
                Some(b) => live_names(&b.jobs()),
                None => match self.client.find_batch_jobs(self.storage, self.spec).await {
                    Ok(jobs) => live_names(&jobs),
                    Err(e) => {
                        eprintln!(
                            "warning: could not list the batch's jobs ({}); cancelling the ones \
                             this run made",
                            CliError::from_lib(e, Some(self.global)).message
                        );
                        self.track.jobs()
                    }
                },
            };
            eprintln!(
                "interrupted while submitting: cancelling {} job(s)…",
                live.len()
            );
            cancel_all(self.global, self.client, &live).await;
            eprintln!(
                "the batch's files stay under {}; its parts with no job were not submitted",
                self.root
            );
        } else {
            let made = batch
                .as_ref()
                .map_or_else(|| self.track.jobs().len(), |b| b.jobs().len());
            let what = match (made, &batch) {
                (0, _) => "stopped; the batch is staged and no job was made yet".to_owned(),
                (_, Some(_)) => format!("detached; the batch's {made} job(s) keep running"),
                (_, None) => format!(
                    "detached; the batch's {made} job(s) so far keep running, and the parts not \
                     submitted yet are submitted when it is picked up"
                ),
            };
            eprintln!(
                "interrupted while submitting: {what}. Pick the batch up with:\n  {}",
                self.pickup
            );
        }
    }
}

/// The names of the jobs that have not ended.
pub fn live_names(jobs: &[vertex_batch::Job]) -> Vec<String> {
    jobs.iter()
        .filter(|j| !j.has_ended())
        .map(|j| j.name().to_owned())
        .collect()
}

/// Asks to cancel every job of `names`, telling each on stderr: one that
/// ended since it was seen (or a failed call) does not leave the others
/// running.
pub async fn cancel_all(g: &Global, client: &Client, names: &[String]) {
    for name in names {
        match client.cancel(name.as_str()).await {
            Ok(()) => eprintln!("  cancel requested: {}", clean(name)),
            Err(e) => eprintln!(
                "  could not cancel {}: {}",
                clean(name),
                CliError::from_lib(e, Some(g)).message
            ),
        }
    }
}
