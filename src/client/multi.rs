//! [`Client::watch_many`]: one watcher for many jobs under a shared budget of
//! Get calls per second.

use std::{
    cmp::Reverse,
    collections::{BinaryHeap, VecDeque},
    time::Duration,
};

use futures::{future::BoxFuture, stream::FuturesUnordered, FutureExt, Stream, StreamExt};
use tokio::time::Instant;

use super::{
    follow::{FollowSettings, Seen, Tracker},
    handle::Client,
};
use crate::{
    error::Result,
    job::{Job, JobRef},
    policy::{PollPolicy, RetryPolicy},
    time::after,
};

/// Settings of [`Client::watch_many`].
///
/// ```
/// use std::time::Duration;
/// use vertex_batch::{client::WatchManyOptions, policy::PollPolicy};
/// let opts = WatchManyOptions::new()
///     .gets_per_second(2.0)
///     .max_in_flight(8)
///     .policy(PollPolicy::fixed(Duration::from_secs(30)))
///     .failure_budget(Duration::from_secs(300));
/// # let _ = opts;
/// ```
#[derive(Debug, Clone)]
pub struct WatchManyOptions {
    follow: FollowSettings,
    gets_per_second: f64,
    max_in_flight: usize,
}

impl Default for WatchManyOptions {
    fn default() -> Self {
        WatchManyOptions {
            follow: FollowSettings::default(),
            gets_per_second: 10.0,
            max_in_flight: 32,
        }
    }
}

impl WatchManyOptions {
    /// Defaults: the default [`PollPolicy`], 10 Get calls per second, 32 in flight.
    ///
    /// ```
    /// use vertex_batch::client::WatchManyOptions;
    /// let opts = WatchManyOptions::new();
    /// assert!(format!("{opts:?}").contains("gets_per_second: 10.0, max_in_flight: 32"));
    /// ```
    pub fn new() -> Self {
        Self::default()
    }

    /// The polling policy of each job.
    ///
    /// ```
    /// use std::time::Duration;
    /// use vertex_batch::{client::WatchManyOptions, policy::PollPolicy};
    /// let opts = WatchManyOptions::new().policy(PollPolicy::fixed(Duration::from_secs(60)));
    /// # let _ = opts;
    /// ```
    pub fn policy(mut self, policy: PollPolicy) -> Self {
        self.follow.policy = policy;
        self
    }

    /// The budget: at most this many Get calls per second in all (at least 0.01).
    ///
    /// ```
    /// use vertex_batch::client::WatchManyOptions;
    /// let opts = WatchManyOptions::new().gets_per_second(0.0); // raised to the minimum
    /// assert!(format!("{opts:?}").contains("gets_per_second: 0.01"));
    /// ```
    pub fn gets_per_second(mut self, rate: f64) -> Self {
        self.gets_per_second = if rate.is_finite() {
            rate.max(0.01)
        } else {
            10.0
        };
        self
    }

    /// At most this many Get calls at once (at least 1).
    ///
    /// ```
    /// use vertex_batch::client::WatchManyOptions;
    /// let opts = WatchManyOptions::new().max_in_flight(0); // raised to the minimum
    /// assert!(format!("{opts:?}").contains("max_in_flight: 1"));
    /// ```
    pub fn max_in_flight(mut self, n: usize) -> Self {
        self.max_in_flight = n.max(1);
        self
    }

    /// How long one job's polls may keep failing before its stream ends
    /// with the last error (see [`crate::WaitOptions::failure_budget`]).
    ///
    /// ```
    /// use std::time::Duration;
    /// use vertex_batch::client::WatchManyOptions;
    /// let opts = WatchManyOptions::new().failure_budget(Duration::from_secs(1800));
    /// assert!(format!("{opts:?}").contains("failure_budget: Some(1800s)"));
    /// ```
    pub fn failure_budget(mut self, d: Duration) -> Self {
        self.follow.failure_budget = Some(d);
        self
    }

    /// How long the endpoint may stay unreachable (see
    /// [`crate::WaitOptions::connect_budget`]).
    ///
    /// ```
    /// use std::time::Duration;
    /// use vertex_batch::client::WatchManyOptions;
    /// let opts = WatchManyOptions::new().connect_budget(Duration::from_secs(300));
    /// assert!(format!("{opts:?}").contains("connect_budget: Some(300s)"));
    /// ```
    pub fn connect_budget(mut self, d: Duration) -> Self {
        self.follow.connect_budget = Some(d);
        self
    }
}

/// A token bucket: `rate` tokens a second, bursts up to one second's worth.
struct Bucket {
    tokens: f64,
    capacity: f64,
    rate: f64,
    last: Instant,
}

impl Bucket {
    fn refill(&mut self, now: Instant) {
        let dt = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + dt * self.rate).min(self.capacity);
        self.last = now;
    }

    fn try_take(&mut self, now: Instant) -> bool {
        self.refill(now);
        // A tolerance: float refills can land a hair below a whole token.
        if self.tokens >= 1.0 - 1e-9 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    fn next_token_at(&self) -> Instant {
        let missing = (1.0 - self.tokens).max(0.0);
        // Never "now": a wake-up that finds no token would spin.
        let wait = Duration::try_from_secs_f64(missing / self.rate)
            .unwrap_or(Duration::from_secs(3600))
            .max(Duration::from_millis(1));
        self.last.checked_add(wait).unwrap_or(self.last)
    }
}

/// A Get in flight: the job's index, when it was sent, and its answer.
type Poll = BoxFuture<'static, (usize, Instant, Result<Job>)>;

struct Multi {
    client: Client,
    opts: WatchManyOptions,
    entries: Vec<Tracker>,
    due: BinaryHeap<Reverse<(Instant, usize)>>,
    in_flight: FuturesUnordered<Poll>,
    bucket: Bucket,
    out: VecDeque<(String, Result<Job>)>,
}

impl Multi {
    async fn next(&mut self) -> Option<(String, Result<Job>)> {
        loop {
            if let Some(item) = self.out.pop_front() {
                return Some(item);
            }
            let now = Instant::now();
            while self.in_flight.len() < self.opts.max_in_flight {
                match self.due.peek() {
                    Some(Reverse((at, _))) if *at <= now && self.bucket.try_take(now) => {}
                    _ => break,
                }
                let Some(Reverse((_, idx))) = self.due.pop() else {
                    break;
                };
                let client = self.client.clone();
                let name = self.entries[idx].name.clone();
                self.in_flight
                    .push(async move { (idx, now, client.get(&name).await) }.boxed());
            }
            if self.due.is_empty() && self.in_flight.is_empty() {
                return None;
            }
            let wake = self.due.peek().map(|Reverse((at, _))| {
                if *at <= now {
                    self.bucket.next_token_at().max(now)
                } else {
                    *at
                }
            });
            let blocked = self.in_flight.len() >= self.opts.max_in_flight;
            tokio::select! {
                Some((idx, sent, result)) = self.in_flight.next(), if !self.in_flight.is_empty() => {
                    self.handle(idx, result, sent);
                }
                _ = sleep_opt(wake), if wake.is_some() && !blocked => {}
            }
        }
    }

    fn handle(&mut self, idx: usize, result: Result<Job>, sent: Instant) {
        let tracker = &mut self.entries[idx];
        match tracker.seen(result, sent) {
            Seen::Job { job, changed, next } => {
                if let Some(delay) = next {
                    self.due.push(Reverse((after(delay), idx)));
                }
                // An ended job is always reported, as `watch` does: its end
                // may show only in `end_time` (a state this crate does not
                // know, or CANCELLING), with state and counts unchanged.
                if changed || next.is_none() {
                    self.out.push_back((tracker.name.clone(), Ok(job)));
                }
            }
            Seen::Retry(delay) => self.due.push(Reverse((after(delay), idx))),
            Seen::Fail(e) => self.out.push_back((tracker.name.clone(), Err(e))),
        }
    }
}

async fn sleep_opt(at: Option<Instant>) {
    if let Some(at) = at {
        tokio::time::sleep_until(at).await;
    }
}

/// # Watching many jobs
impl Client {
    /// Follows many jobs with one stream of `(job name, snapshot)` updates:
    /// one per change of state or completion stats of any job, each job's
    /// updates ending with the snapshot that shows it ended (or a
    /// non-retryable error). Ended means [`Job::has_ended`], as for
    /// [`Client::watch`]: a terminal state, or `end_time` set whatever the
    /// state says; that last snapshot always comes, even when its state
    /// and counts are those of the one before.
    ///
    /// All polls share one budget (`gets_per_second`); each job keeps its
    /// own adaptive schedule, so the budget goes where jobs are about to end.
    /// Every Get is one attempt (failed polls are rescheduled, not retried
    /// on the spot) so the budget holds exactly.
    ///
    /// ```no_run
    /// # async fn demo(client: vertex_batch::Client, names: Vec<String>) {
    /// use futures::StreamExt;
    /// use vertex_batch::client::WatchManyOptions;
    /// let mut updates = std::pin::pin!(client.watch_many(&names, &WatchManyOptions::new().gets_per_second(5.0)));
    /// while let Some((name, job)) = updates.next().await {
    ///     match job {
    ///         Ok(job) => println!("{name}: {}", job.state()),
    ///         Err(e) => eprintln!("{name}: {e}"),
    ///     }
    /// }
    /// # }
    /// ```
    pub fn watch_many<'a, I>(
        &self,
        jobs: I,
        opts: &WatchManyOptions,
    ) -> impl Stream<Item = (String, Result<Job>)> + Send + 'static
    where
        I: IntoIterator,
        I::Item: Into<JobRef<'a>>,
    {
        let opts = opts.clone();
        let now = Instant::now();
        let mut out = VecDeque::new();
        let mut entries = Vec::new();
        let mut due = BinaryHeap::new();
        for job in jobs {
            let job = job.into();
            let name = job.as_str();
            match self.job_path(name) {
                Ok(n) => {
                    due.push(Reverse((now, entries.len())));
                    entries.push(Tracker::new(n, &opts.follow));
                }
                Err(e) => out.push_back((name.to_owned(), Err(e))),
            }
        }
        let attempt_timeout = self.retry_policy().attempt_timeout();
        let multi = Multi {
            client: self
                .with_retry_policy(RetryPolicy::none().with_attempt_timeout(attempt_timeout)),
            bucket: Bucket {
                tokens: opts.gets_per_second.max(1.0),
                capacity: opts.gets_per_second.max(1.0),
                rate: opts.gets_per_second,
                last: now,
            },
            opts,
            entries,
            due,
            in_flight: FuturesUnordered::new(),
            out,
        };
        futures::stream::unfold(multi, |mut m| async move {
            let item = m.next().await?;
            Some((item, m))
        })
    }
}
