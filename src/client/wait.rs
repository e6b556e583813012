//! Waiting for jobs: [`Client::wait`], [`Client::wait_terminal`] and
//! [`Client::watch`].
//!
//! # Design: success cannot be mistaken
//!
//! [`Client::wait`] returns `Ok(job)` only when the job ended `SUCCEEDED`.
//! `FAILED`, `CANCELLED`, `EXPIRED` and `PARTIALLY_SUCCEEDED` come back as
//! [`Error::JobNotSucceeded`] holding the final job, so `?` never lets a
//! failed job through as a success, and nothing is lost: the job's error,
//! stats and output location are all inside. A `SUCCEEDED` job whose rows
//! partly failed is `Ok` (that is what the service reports), with a warning
//! logged; check [`Job::is_clean_success`] or `completion_stats().failed`.
//! [`Client::wait_terminal`] returns any terminal job as `Ok` for callers
//! that branch on the state themselves.
//!
//! Waiting is a plain future: nothing is spawned, so dropping it (or
//! wrapping it in `tokio::time::timeout`) stops all work. A poll that fails
//! with a retryable error (after the client's own retries) is not a failed
//! job: the wait backs off and polls again until its deadline.

use std::time::Duration;

use futures::Stream;
use tokio::time::Instant;

use super::Client;
use crate::{
    error::{Error, Result},
    job::Job,
    poll::{PollPolicy, Poller},
};

/// Settings of a wait or watch.
#[derive(Debug, Clone, Default)]
pub struct WaitOptions {
    policy: PollPolicy,
    timeout: Option<Duration>,
}

impl WaitOptions {
    /// The default policy and no deadline.
    pub fn new() -> Self {
        Self::default()
    }

    /// The polling policy.
    pub fn policy(mut self, policy: PollPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// Gives up with [`Error::Timeout`] after this long.
    pub fn timeout(mut self, d: Duration) -> Self {
        self.timeout = Some(d);
        self
    }
}

/// Polls one job, yielding every snapshot; shared by wait and watch.
struct Follow {
    client: Client,
    name: String,
    poller: Poller,
    deadline: Option<Instant>,
    started: Instant,
    first: bool,
    delay: Duration,
}

impl Follow {
    fn new(client: &Client, name: &str, opts: &WaitOptions) -> Self {
        let started = Instant::now();
        Follow {
            client: client.clone(),
            name: name.to_owned(),
            poller: opts.policy.start(),
            deadline: opts.timeout.and_then(|t| started.checked_add(t)),
            started,
            first: true,
            delay: Duration::ZERO,
        }
    }

    /// The next snapshot (waiting first, except for the very first one).
    async fn next(&mut self) -> Result<Job> {
        loop {
            if !self.first {
                let wake = crate::poll::after(self.delay);
                if let Some(deadline) = self.deadline {
                    if wake > deadline {
                        tokio::time::sleep_until(deadline).await;
                        return Err(Error::Timeout {
                            after: self.started.elapsed(),
                            during: format!("waiting for job {}", self.name),
                        });
                    }
                }
                tokio::time::sleep_until(wake).await;
            }
            self.first = false;
            match self.client.get(&self.name).await {
                Ok(job) => {
                    self.delay = self.poller.next_delay(&job);
                    return Ok(job);
                }
                Err(e) if e.is_retryable() => {
                    self.delay = self.poller.next_backoff();
                    tracing::debug!(job = %self.name, error = %e, "poll failed; polling again");
                }
                Err(e) => return Err(e),
            }
        }
    }
}

/// # Waiting for jobs
impl Client {
    /// Waits for the job to end; `Ok` only if it `SUCCEEDED` (see the module
    /// docs). Uses the default [`PollPolicy`] and no deadline.
    ///
    /// ```no_run
    /// # async fn demo(client: vertex_batch::Client) -> vertex_batch::Result<()> {
    /// use vertex_batch::Error;
    /// match client.wait("1234567890").await {
    ///     Ok(job) => println!("done: {:?}", job.output_location()),
    ///     Err(Error::JobNotSucceeded(job)) => eprintln!("ended {}: {:?}", job.state(), job.error()),
    ///     Err(e) => return Err(e),
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn wait(&self, name: impl AsRef<str>) -> Result<Job> {
        self.wait_with(name, WaitOptions::default()).await
    }

    /// [`Client::wait`] with a policy and deadline.
    pub async fn wait_with(&self, name: impl AsRef<str>, opts: WaitOptions) -> Result<Job> {
        let job = self.wait_terminal_with(name, opts).await?;
        if !job.state().is_success() {
            return Err(Error::JobNotSucceeded(Box::new(job)));
        }
        let failed = job.completion_stats().failed;
        if failed > 0 {
            tracing::warn!(
                job = job.name(),
                failed,
                "job SUCCEEDED but some rows failed"
            );
        }
        Ok(job)
    }

    /// Waits for the job to reach any terminal state and returns it as `Ok`.
    pub async fn wait_terminal(&self, name: impl AsRef<str>) -> Result<Job> {
        self.wait_terminal_with(name, WaitOptions::default()).await
    }

    /// [`Client::wait_terminal`] with a policy and deadline.
    pub async fn wait_terminal_with(
        &self,
        name: impl AsRef<str>,
        opts: WaitOptions,
    ) -> Result<Job> {
        let name = self.job_path(name.as_ref())?;
        let mut follow = Follow::new(self, &name, &opts);
        loop {
            let job = follow.next().await?;
            if job.has_ended() {
                return Ok(job);
            }
        }
    }

    /// A stream of snapshots of the job: the first one at once, then one per
    /// change of state or of completion stats, ending with the terminal one.
    /// A non-retryable error (or the deadline) ends it with an `Err`.
    ///
    /// ```no_run
    /// # async fn demo(client: vertex_batch::Client) -> vertex_batch::Result<()> {
    /// use futures::StreamExt;
    /// use vertex_batch::WaitOptions;
    /// let mut updates = std::pin::pin!(client.watch("1234567890", WaitOptions::new()));
    /// while let Some(job) = updates.next().await {
    ///     let job = job?;
    ///     let s = job.completion_stats();
    ///     println!("{}: {}/{} rows", job.state(), s.done(), s.total());
    /// }
    /// # Ok(()) }
    /// ```
    pub fn watch(
        &self,
        name: impl AsRef<str>,
        opts: WaitOptions,
    ) -> impl Stream<Item = Result<Job>> + Send + 'static {
        let start = self
            .job_path(name.as_ref())
            .map(|n| Follow::new(self, &n, &opts));
        futures::stream::unfold(
            Some((start, None::<(crate::JobState, crate::CompletionStats)>)),
            |st| async move {
                let (follow, mut last) = st?;
                let mut follow = match follow {
                    Ok(f) => f,
                    Err(e) => return Some((Err(e), None)),
                };
                loop {
                    match follow.next().await {
                        Err(e) => return Some((Err(e), None)),
                        Ok(job) => {
                            let key = (job.state(), job.completion_stats());
                            if last == Some(key) {
                                continue;
                            }
                            last = Some(key);
                            let next = (!job.has_ended()).then_some((Ok(follow), last));
                            return Some((Ok(job), next));
                        }
                    }
                }
            },
        )
    }
}
