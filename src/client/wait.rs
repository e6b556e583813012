//! Waiting for jobs: [`Client::wait`] and [`Client::watch`], both with
//! [`WaitOptions`].
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
//! With [`WaitOptions::any_end`] any ended job comes back as `Ok`, for
//! callers that branch on the state themselves.
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

use super::{
    follow::{FollowSettings, Seen, Tracker},
    handle::Client,
};
use crate::{
    error::{Error, Result},
    job::{Job, JobRef},
    policy::PollPolicy,
    time::after,
};

/// Settings of a wait or a watch.
///
/// ```
/// use std::time::Duration;
/// use vertex_batch::{policy::PollPolicy, WaitOptions};
/// let opts = WaitOptions::new()
///     .timeout(Duration::from_secs(3600))
///     .policy(PollPolicy::fixed(Duration::from_secs(30)))
///     .any_end();
/// # let _ = opts;
/// ```
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WaitOptions {
    follow: FollowSettings,
    timeout: Option<Duration>,
    any_end: bool,
}

impl WaitOptions {
    /// The default policy, no deadline, `Ok` only for `SUCCEEDED`.
    ///
    /// ```
    /// use vertex_batch::WaitOptions;
    /// assert_eq!(WaitOptions::new(), WaitOptions::default());
    /// ```
    pub fn new() -> Self {
        Self::default()
    }

    /// The polling policy.
    ///
    /// ```
    /// use std::time::Duration;
    /// use vertex_batch::{policy::PollPolicy, WaitOptions};
    /// let opts = WaitOptions::new().policy(PollPolicy::fixed(Duration::from_secs(60)));
    /// assert_ne!(opts, WaitOptions::new());
    /// ```
    pub fn policy(mut self, policy: PollPolicy) -> Self {
        self.follow.policy = policy;
        self
    }

    /// Gives up with [`Error::Timeout`] after this long.
    ///
    /// ```
    /// use std::time::Duration;
    /// use vertex_batch::WaitOptions;
    /// let opts = WaitOptions::new().timeout(Duration::from_secs(3600));
    /// assert_ne!(opts, WaitOptions::new()); // the default has no deadline
    /// ```
    pub fn timeout(mut self, d: Duration) -> Self {
        self.timeout = Some(d);
        self
    }

    /// [`Client::wait`] returns any ended job as `Ok` (`FAILED`,
    /// `CANCELLED`, … included) instead of [`Error::JobNotSucceeded`].
    ///
    /// ```no_run
    /// # async fn demo(client: vertex_batch::Client) -> vertex_batch::Result<()> {
    /// let job = client.wait("1234567890", &vertex_batch::WaitOptions::new().any_end()).await?;
    /// println!("ended {}", job.state()); // SUCCEEDED, FAILED, CANCELLED, …
    /// # Ok(()) }
    /// ```
    pub fn any_end(mut self) -> Self {
        self.any_end = true;
        self
    }

    /// How long polls may keep failing in a row before the wait returns the
    /// last error (default 10 minutes).
    ///
    /// ```
    /// use std::time::Duration;
    /// use vertex_batch::WaitOptions;
    /// let opts = WaitOptions::new().failure_budget(Duration::from_secs(1800));
    /// assert_ne!(opts, WaitOptions::new());
    /// ```
    pub fn failure_budget(mut self, d: Duration) -> Self {
        self.follow.failure_budget = Some(d);
        self
    }

    /// How long the endpoint may stay unreachable (no connection at all:
    /// DNS failure, connection refused) before the wait returns the last
    /// error (default 1 minute).
    ///
    /// ```
    /// use std::time::Duration;
    /// use vertex_batch::WaitOptions;
    /// let opts = WaitOptions::new().connect_budget(Duration::from_secs(300));
    /// assert_ne!(opts, WaitOptions::new());
    /// ```
    pub fn connect_budget(mut self, d: Duration) -> Self {
        self.follow.connect_budget = Some(d);
        self
    }
}

/// A job being polled by one wait or watch: the shared [`Tracker`], plus
/// the deadline and the sleep between polls.
struct Follow {
    client: Client,
    tracker: Tracker,
    deadline: Option<Instant>,
    started: Instant,
    /// The delay before the next poll (`None` before the first one).
    delay: Option<Duration>,
}

impl Follow {
    fn new(client: &Client, name: String, opts: &WaitOptions) -> Self {
        let started = Instant::now();
        Follow {
            client: client.clone(),
            tracker: Tracker::new(name, &opts.follow),
            deadline: opts.timeout.and_then(|t| started.checked_add(t)),
            started,
            delay: None,
        }
    }

    fn timed_out(&self) -> Error {
        Error::Timeout {
            after: self.started.elapsed(),
            during: format!("waiting for job {}", self.tracker.name),
        }
    }

    /// The next snapshot (waiting first, except for the very first one) and
    /// whether it differs from the last.
    async fn next(&mut self) -> Result<(Job, bool)> {
        loop {
            if let Some(delay) = self.delay {
                let wake = after(delay);
                if let Some(deadline) = self.deadline {
                    if wake > deadline {
                        tokio::time::sleep_until(deadline).await;
                        return Err(self.timed_out());
                    }
                }
                tokio::time::sleep_until(wake).await;
            }
            let sent = Instant::now();
            let poll = self.client.get(self.tracker.name.as_str());
            // The deadline holds during a poll too (the client's own retries
            // of a Get can take minutes).
            let polled = match self.deadline {
                Some(deadline) => match tokio::time::timeout_at(deadline, poll).await {
                    Ok(polled) => polled,
                    Err(_) => return Err(self.timed_out()),
                },
                None => poll.await,
            };
            match self.tracker.seen(polled, sent) {
                Seen::Job { job, changed, next } => {
                    self.delay = Some(next.unwrap_or_default());
                    return Ok((job, changed));
                }
                Seen::Retry(delay) => self.delay = Some(delay),
                Seen::Fail(e) => return Err(e),
            }
        }
    }
}

/// # Waiting for jobs
impl Client {
    /// Waits for the job to end; `Ok` only if it `SUCCEEDED`, unless
    /// [`WaitOptions::any_end`] (see the module docs).
    ///
    /// ```no_run
    /// # async fn demo(client: vertex_batch::Client) -> vertex_batch::Result<()> {
    /// use vertex_batch::{Error, WaitOptions};
    /// match client.wait("1234567890", &WaitOptions::new()).await {
    ///     Ok(job) => println!("done: {:?}", job.output_location()),
    ///     Err(Error::JobNotSucceeded(job)) => eprintln!("ended {}: {:?}", job.state(), job.error()),
    ///     Err(e) => return Err(e),
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn wait<'a>(&self, job: impl Into<JobRef<'a>>, opts: &WaitOptions) -> Result<Job> {
        let name = self.job_path(job.into().as_str())?;
        let mut follow = Follow::new(self, name, opts);
        let job = loop {
            let (job, _) = follow.next().await?;
            if job.has_ended() {
                break job;
            }
        };
        if opts.any_end {
            return Ok(job);
        }
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

    /// A stream of snapshots of the job: the first one at once, then one per
    /// change of state or of completion stats, ending with the terminal one.
    /// A non-retryable error (or the deadline) ends it with an `Err`.
    ///
    /// ```no_run
    /// # async fn demo(client: vertex_batch::Client) -> vertex_batch::Result<()> {
    /// use futures::StreamExt;
    /// use vertex_batch::WaitOptions;
    /// let mut updates = std::pin::pin!(client.watch("1234567890", &WaitOptions::new()));
    /// while let Some(job) = updates.next().await {
    ///     let job = job?;
    ///     let s = job.completion_stats();
    ///     println!("{}: {}/{} rows", job.state(), s.done(), s.total());
    /// }
    /// # Ok(()) }
    /// ```
    pub fn watch<'a>(
        &self,
        job: impl Into<JobRef<'a>>,
        opts: &WaitOptions,
    ) -> impl Stream<Item = Result<Job>> + Send + 'static {
        let start = self
            .job_path(job.into().as_str())
            .map(|n| Follow::new(self, n, opts));
        futures::stream::unfold(Some(start), |st| async move {
            let mut follow = match st? {
                Ok(f) => f,
                Err(e) => return Some((Err(e), None)),
            };
            loop {
                match follow.next().await {
                    Err(e) => return Some((Err(e), None)),
                    // An ended job is always reported: it ends the stream.
                    Ok((job, changed)) if !changed && !job.has_ended() => drop(job),
                    Ok((job, _)) => {
                        let next = (!job.has_ended()).then_some(Ok(follow));
                        return Some((Ok(job), next));
                    }
                }
            }
        })
    }
}
