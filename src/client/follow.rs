//! Following one job: the state shared by [`Client::wait`],
//! [`Client::watch`] and [`Client::watch_many`] — its poll schedule, its
//! budget for failing polls, and what changed since the last look.
//!
//! [`Client::wait`]: super::handle::Client::wait
//! [`Client::watch`]: super::handle::Client::watch
//! [`Client::watch_many`]: super::handle::Client::watch_many

use std::time::Duration;

use tokio::time::Instant;

use crate::{
    error::{Error, Result},
    job::{CompletionStats, Job, JobState},
    policy::{PollPolicy, Poller},
};

/// The default failure budget: how long polls may keep failing in a row.
pub(crate) const DEFAULT_FAILURE_BUDGET: Duration = Duration::from_secs(600);
/// The default connect budget: how long the endpoint may stay unreachable.
pub(crate) const DEFAULT_CONNECT_BUDGET: Duration = Duration::from_secs(60);

/// The settings every follower has: the poll policy and the two budgets.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct FollowSettings {
    pub(crate) policy: PollPolicy,
    pub(crate) failure_budget: Option<Duration>,
    pub(crate) connect_budget: Option<Duration>,
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

    /// A poll of `job` sent at `sent` failed with `e`: true to poll again
    /// (logged at `warn`), false to give up with `e`. A run of failures is
    /// timed from when its first poll was sent, so the client's own retries
    /// inside that poll count against the budgets.
    pub(crate) fn failed(&mut self, job: &str, e: &Error, sent: Instant) -> bool {
        if !(e.is_retryable() || (self.answered && matches!(e, Error::Auth { .. }))) {
            return false;
        }
        let now = Instant::now();
        let failing = now - *self.failing_since.get_or_insert(sent);
        let unreachable = if cannot_connect(e) {
            now - *self.unreachable_since.get_or_insert(sent)
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

/// What a follower learnt from one poll.
// Returned and matched at once, never stored: boxing the job would only
// add an allocation per poll.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Seen {
    /// The job; `changed` when its state or counts differ from the last
    /// look; `next` is the delay before the next poll (`None`: it ended).
    Job {
        job: Job,
        changed: bool,
        next: Option<Duration>,
    },
    /// The poll failed, within budget: poll again after this delay.
    Retry(Duration),
    /// The poll failed for good.
    Fail(Error),
}

/// One job being followed.
#[derive(Debug)]
pub(crate) struct Tracker {
    pub(crate) name: String,
    poller: Poller,
    failures: Failures,
    last: Option<(JobState, CompletionStats)>,
}

impl Tracker {
    pub(crate) fn new(name: String, settings: &FollowSettings) -> Self {
        Tracker {
            name,
            poller: settings.policy.start(),
            failures: Failures::new(settings.failure_budget, settings.connect_budget),
            last: None,
        }
    }

    /// Takes in the answer of one poll, sent at `sent`.
    pub(crate) fn seen(&mut self, result: Result<Job>, sent: Instant) -> Seen {
        match result {
            Ok(job) => {
                self.failures.succeeded();
                let next = (!job.has_ended()).then(|| self.poller.next_delay(&job));
                let key = (job.state(), job.completion_stats());
                let changed = self.last.as_ref() != Some(&key);
                self.last = Some(key);
                Seen::Job { job, changed, next }
            }
            Err(e) if self.failures.failed(&self.name, &e, sent) => {
                Seen::Retry(self.poller.next_backoff())
            }
            Err(e) => Seen::Fail(e),
        }
    }
}
