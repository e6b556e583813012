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
//! wrapping it in `tokio::time::timeout`) stops all work.
//!
//! # Failed polls
//!
//! A poll that fails with a retryable error (after the client's own
//! retries) is not a failed job: it is logged at `warn`, and the wait backs
//! off and polls again — but not forever. After
//! [`WaitOptions::failure_budget`] of consecutive failures (default 10
//! minutes), or [`WaitOptions::connect_budget`] of failing to connect at
//! all (DNS, connection refused; default 1 minute), the wait returns the
//! last error. An authentication failure after the credentials have worked
//! once in this wait (a token refresh that hiccuped) is retried inside the
//! same budget; one on the first poll ends the wait at once.

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
    failure_budget: Option<Duration>,
    connect_budget: Option<Duration>,
}

/// The default [`WaitOptions::failure_budget`].
pub(crate) const DEFAULT_FAILURE_BUDGET: Duration = Duration::from_secs(600);
/// The default [`WaitOptions::connect_budget`].
pub(crate) const DEFAULT_CONNECT_BUDGET: Duration = Duration::from_secs(60);

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

    /// How long polls may keep failing in a row before the wait returns the
    /// last error (default 10 minutes).
    pub fn failure_budget(mut self, d: Duration) -> Self {
        self.failure_budget = Some(d);
        self
    }

    /// How long the endpoint may stay unreachable (no connection at all:
    /// DNS failure, connection refused) before the wait returns the last
    /// error (default 1 minute).
    pub fn connect_budget(mut self, d: Duration) -> Self {
        self.connect_budget = Some(d);
        self
    }
}

/// Whether `e` says no connection could be made at all.
fn cannot_connect(e: &Error) -> bool {
    if !matches!(e, Error::Transport { .. }) {
        return false;
    }
    let mut cur = std::error::Error::source(e);
    while let Some(s) = cur {
        if s.is::<tonic::ConnectError>() {
            return true;
        }
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            if matches!(
                io.kind(),
                std::io::ErrorKind::ConnectionRefused | std::io::ErrorKind::NotFound
            ) {
                return true;
            }
        }
        cur = s.source();
    }
    false
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
    failures: Failures,
}

/// The failed-poll rules of a wait (see the module docs), shared with
/// [`Client::watch_many`](crate::Client::watch_many).
#[derive(Debug)]
pub(crate) struct Failures {
    failure_budget: Duration,
    connect_budget: Duration,
    /// When the current run of failed polls began.
    failing_since: Option<Instant>,
    /// When the current run of failures to connect began.
    unreachable_since: Option<Instant>,
    /// Whether a poll has succeeded (the credentials worked).
    answered: bool,
}

impl Failures {
    pub(crate) fn new(failure_budget: Option<Duration>, connect_budget: Option<Duration>) -> Self {
        Failures {
            failure_budget: failure_budget.unwrap_or(DEFAULT_FAILURE_BUDGET),
            connect_budget: connect_budget.unwrap_or(DEFAULT_CONNECT_BUDGET),
            failing_since: None,
            unreachable_since: None,
            answered: false,
        }
    }

    /// A poll answered.
    pub(crate) fn succeeded(&mut self) {
        self.failing_since = None;
        self.unreachable_since = None;
        self.answered = true;
    }

    /// A poll of `job` failed with `e`: true to poll again (logged at
    /// `warn`), false to give up with `e`.
    pub(crate) fn failed(&mut self, job: &str, e: &Error) -> bool {
        if !(e.is_retryable() || (self.answered && matches!(e, Error::Auth { .. }))) {
            return false;
        }
        let now = Instant::now();
        let failing = now - *self.failing_since.get_or_insert(now);
        let unreachable = if cannot_connect(e) {
            now - *self.unreachable_since.get_or_insert(now)
        } else {
            self.unreachable_since = None;
            Duration::ZERO
        };
        if failing >= self.failure_budget || unreachable >= self.connect_budget {
            tracing::warn!(job, error = %e, failing_for = ?failing, "polls kept failing; giving up");
            return false;
        }
        tracing::warn!(job, error = %e, failing_for = ?failing, "poll failed; polling again");
        true
    }
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
            failures: Failures::new(opts.failure_budget, opts.connect_budget),
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
                    self.failures.succeeded();
                    return Ok(job);
                }
                Err(e) if self.failures.failed(&self.name, &e) => {
                    self.delay = self.poller.next_backoff();
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
