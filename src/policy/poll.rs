//! [`PollPolicy`]: when to look at a job again.
//!
//! The default policy is adaptive. While a job shows no progress (queued,
//! pending, or running with no rows done) it backs off exponentially with
//! jitter: 2 s doubling to 60 s. Once `completion_stats` show rows done, it
//! estimates the rate (rows done over the time since `start_time`, both
//! from the service's own timestamps), predicts the end, and polls at 80%
//! of the predicted remaining time (between 10 s and 10 min), so calls
//! thin out on long jobs and bunch up near their end. All intervals get
//! ±10% jitter so that many waiters spread their calls.
//!
//! Measured against the emulator (`cargo bench --bench polling`): a 1-hour
//! job takes about a dozen Get calls and its end is seen within about 10 s;
//! a fixed 5 s loop takes 720 calls, and a 1 s → 60 s doubling poller about
//! 65 with up to a minute of lag.

use std::time::Duration;

use super::backoff::{sane_multiplier, Backoff};
use crate::job::{Job, JobState};

/// How often to poll a job; see the module docs for the default.
///
/// ```
/// use std::time::Duration;
/// use vertex_batch::policy::PollPolicy;
/// let ui = PollPolicy::default().max_interval(Duration::from_secs(15));
/// let fixed = PollPolicy::fixed(Duration::from_secs(5));
/// # let _ = (ui, fixed);
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct PollPolicy {
    backoff: Backoff,
    adaptive: bool,
    near_end: Duration,
    adaptive_cap: Duration,
    fraction: f64,
    jitter: f64,
}

impl Default for PollPolicy {
    fn default() -> Self {
        PollPolicy {
            backoff: Backoff {
                initial: Duration::from_secs(2),
                multiplier: 2.0,
                cap: Duration::from_secs(60),
            },
            adaptive: true,
            near_end: Duration::from_secs(10),
            adaptive_cap: Duration::from_secs(600),
            fraction: 0.8,
            jitter: 0.1,
        }
    }
}

impl PollPolicy {
    /// Polls every `interval`, no jitter, no adaptation (what Google's
    /// samples do with 5 s).
    ///
    /// ```
    /// use std::time::Duration;
    /// use vertex_batch::policy::PollPolicy;
    /// let s = Duration::from_secs;
    /// let mut poller = PollPolicy::fixed(s(5)).start();
    /// assert_eq!((poller.next_backoff(), poller.next_backoff()), (s(5), s(5)));
    /// ```
    pub fn fixed(interval: Duration) -> Self {
        PollPolicy {
            backoff: Backoff {
                initial: interval,
                multiplier: 1.0,
                cap: interval,
            },
            adaptive: false,
            jitter: 0.0,
            ..Default::default()
        }
    }

    /// Plain exponential backoff from `initial` to `cap`, no adaptation
    /// (Google's Rust poller uses 1 s doubling to 60 s).
    ///
    /// ```
    /// use std::time::Duration;
    /// use vertex_batch::policy::PollPolicy;
    /// let s = Duration::from_secs;
    /// let mut poller = PollPolicy::backoff(s(1), s(4), 2.0).start();
    /// let delays: Vec<_> = (0..4).map(|_| poller.next_backoff()).collect();
    /// assert_eq!(delays, [s(1), s(2), s(4), s(4)]);
    /// ```
    pub fn backoff(initial: Duration, cap: Duration, multiplier: f64) -> Self {
        PollPolicy {
            backoff: Backoff {
                initial,
                multiplier: sane_multiplier(multiplier, 1.0),
                cap,
            },
            adaptive: false,
            jitter: 0.0,
            ..Default::default()
        }
    }

    /// Caps every interval (e.g. for a progress display that wants updates
    /// at least this often).
    ///
    /// ```
    /// use std::time::Duration;
    /// use vertex_batch::policy::PollPolicy;
    /// let s = Duration::from_secs;
    /// let mut poller = PollPolicy::backoff(s(1), s(60), 2.0).max_interval(s(3)).start();
    /// let delays: Vec<_> = (0..3).map(|_| poller.next_backoff()).collect();
    /// assert_eq!(delays, [s(1), s(2), s(3)]);
    /// ```
    pub fn max_interval(mut self, cap: Duration) -> Self {
        self.backoff.cap = self.backoff.cap.min(cap);
        self.adaptive_cap = self.adaptive_cap.min(cap);
        self.near_end = self.near_end.min(cap);
        self
    }

    /// The shortest interval once the end is near (default 10 s): the most
    /// the end of a job can go unnoticed when the estimate is right.
    ///
    /// ```
    /// use std::time::Duration;
    /// use vertex_batch::{policy::PollPolicy, proto::aiplatform as pb, Job};
    /// let stats = pb::CompletionStats { successful_count: 10, incomplete_count: 0, ..Default::default() };
    /// let job = Job::from(pb::BatchPredictionJob {
    ///     state: pb::JobState::Running as i32, completion_stats: Some(stats), ..Default::default() });
    /// let mut poller = PollPolicy::default().near_end_interval(Duration::from_secs(3)).jitter(0.0).start();
    /// assert_eq!(poller.next_delay(&job), Duration::from_secs(3)); // all rows done: the end is near
    /// ```
    pub fn near_end_interval(mut self, d: Duration) -> Self {
        self.near_end = d;
        self
    }

    /// The first backoff interval (default 2 s).
    ///
    /// ```
    /// use std::time::Duration;
    /// use vertex_batch::policy::PollPolicy;
    /// let s = Duration::from_secs;
    /// let mut poller = PollPolicy::default().initial_interval(s(5)).jitter(0.0).start();
    /// assert_eq!((poller.next_backoff(), poller.next_backoff()), (s(5), s(10)));
    /// ```
    pub fn initial_interval(mut self, d: Duration) -> Self {
        self.backoff.initial = d;
        self
    }

    /// Jitter as a fraction of each interval (default 0.1; 0 for none).
    ///
    /// ```
    /// use std::time::Duration;
    /// use vertex_batch::policy::PollPolicy;
    /// let s = Duration::from_secs;
    /// let mut poller = PollPolicy::fixed(s(10)).jitter(0.2).start();
    /// let d = poller.next_backoff();
    /// assert!(d >= s(8) && d <= s(12));
    /// assert_eq!(PollPolicy::fixed(s(10)).jitter(0.0).start().next_backoff(), s(10));
    /// ```
    pub fn jitter(mut self, fraction: f64) -> Self {
        self.jitter = if fraction.is_finite() {
            fraction.clamp(0.0, 0.5)
        } else {
            0.0
        };
        self
    }

    /// Starts the schedule of one job.
    ///
    /// ```
    /// use std::time::Duration;
    /// use vertex_batch::policy::PollPolicy;
    /// let s = Duration::from_secs;
    /// let policy = PollPolicy::backoff(s(1), s(60), 2.0);
    /// let (mut a, mut b) = (policy.start(), policy.start());
    /// assert_eq!((a.next_backoff(), a.next_backoff()), (s(1), s(2)));
    /// assert_eq!(b.next_backoff(), s(1)); // each job has a schedule of its own
    /// ```
    pub fn start(&self) -> Poller {
        Poller {
            policy: self.clone(),
            backoff_step: 0,
            last_state: None,
        }
    }
}

/// The polling schedule of one job: feed it each snapshot, it says how long
/// to wait before the next look.
///
/// ```
/// use std::time::Duration;
/// use vertex_batch::{policy::PollPolicy, Job};
/// let mut poller = PollPolicy::fixed(Duration::from_secs(5)).start();
/// let queued = Job::from(vertex_batch::proto::aiplatform::BatchPredictionJob::default());
/// assert_eq!(poller.next_delay(&queued), Duration::from_secs(5));
/// assert_eq!(poller.next_backoff(), Duration::from_secs(5));
/// ```
#[derive(Debug, Clone)]
pub struct Poller {
    policy: PollPolicy,
    backoff_step: u32,
    last_state: Option<JobState>,
}

impl Poller {
    /// The delay before the next poll, given the latest snapshot.
    ///
    /// ```
    /// use std::time::Duration;
    /// use vertex_batch::{policy::PollPolicy, proto::aiplatform as pb, Job};
    /// let job = |state: pb::JobState| Job::from(pb::BatchPredictionJob { state: state as i32, ..Default::default() });
    /// let mut poller = PollPolicy::backoff(Duration::from_secs(1), Duration::from_secs(60), 2.0).start();
    /// assert_eq!(poller.next_delay(&job(pb::JobState::Pending)), Duration::from_secs(1));
    /// assert_eq!(poller.next_delay(&job(pb::JobState::Pending)), Duration::from_secs(2));
    /// assert_eq!(poller.next_delay(&job(pb::JobState::Running)), Duration::from_secs(1)); // new state
    /// ```
    pub fn next_delay(&mut self, job: &Job) -> Duration {
        let state = job.state();
        if self.last_state != Some(state) {
            // A new phase: start the backoff over, so the first progress
            // figures arrive soon.
            self.backoff_step = 0;
            self.last_state = Some(state);
        }
        let p = &self.policy;
        if p.adaptive {
            if let Some(remaining) = estimate_remaining(job) {
                let d = remaining
                    .mul_f64(p.fraction.clamp(0.0, 1.0))
                    .clamp(p.near_end, p.adaptive_cap.max(p.near_end));
                return self.jittered(d);
            }
        }
        self.next_backoff()
    }

    /// The delay after a failed poll (plain backoff).
    ///
    /// ```
    /// use std::time::Duration;
    /// use vertex_batch::policy::PollPolicy;
    /// let s = Duration::from_secs;
    /// let mut poller = PollPolicy::backoff(s(1), s(60), 2.0).start();
    /// let delays: Vec<_> = (0..3).map(|_| poller.next_backoff()).collect();
    /// assert_eq!(delays, [s(1), s(2), s(4)]);
    /// ```
    pub fn next_backoff(&mut self) -> Duration {
        let p = &self.policy;
        let d = p.backoff.delay(self.backoff_step);
        self.backoff_step = self.backoff_step.saturating_add(1);
        self.jittered(d)
    }

    fn jittered(&self, d: Duration) -> Duration {
        let j = self.policy.jitter;
        if j == 0.0 {
            return d;
        }
        Duration::try_from_secs_f64(d.as_secs_f64() * (1.0 + j * (2.0 * fastrand::f64() - 1.0)))
            .unwrap_or(d)
    }
}

/// Predicted time left from the job's own progress, when it can be told.
///
/// ```
/// use std::time::Duration;
/// use vertex_batch::{policy::estimate_remaining, proto::aiplatform as pb, Job};
/// let ts = |s| pbjson_types::Timestamp { seconds: s, nanos: 0 };
/// let job = Job::from(pb::BatchPredictionJob {
///     state: pb::JobState::Running as i32,
///     start_time: Some(ts(1_000)),
///     update_time: Some(ts(1_100)), // 100 s in,
///     completion_stats: Some(pb::CompletionStats {
///         successful_count: 250, // 250 rows done,
///         incomplete_count: 750, // 750 to go: about 300 s left.
///         ..Default::default()
///     }),
///     ..Default::default()
/// });
/// assert_eq!(estimate_remaining(&job), Some(Duration::from_secs(300)));
/// ```
pub fn estimate_remaining(job: &Job) -> Option<Duration> {
    if job.state() != JobState::Running {
        return None;
    }
    let stats = job.completion_stats();
    let done = stats.done();
    if done == 0 {
        return None;
    }
    // The service sends -1 when it does not know how many rows are left:
    // then nothing can be told.
    let incomplete = stats.incomplete?;
    if incomplete == 0 {
        // All rows done: the job is writing its output and about to end.
        return Some(Duration::ZERO);
    }
    let start = job.start_time()?;
    let now = job.update_time()?;
    let elapsed = now.duration_since(start).ok()?.as_secs_f64();
    if elapsed <= 0.0 {
        return None;
    }
    let rate = done as f64 / elapsed;
    let secs = incomplete as f64 / rate;
    secs.is_finite()
        .then(|| Duration::from_secs_f64(secs.min(1e9)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{proto::aiplatform as pb, time::to_timestamp};
    use std::time::UNIX_EPOCH;

    fn running(done: i64, left: i64, elapsed_secs: u64) -> Job {
        let start = UNIX_EPOCH + Duration::from_secs(1_000_000);
        pb::BatchPredictionJob {
            state: pb::JobState::Running as i32,
            start_time: Some(to_timestamp(start)),
            update_time: Some(to_timestamp(start + Duration::from_secs(elapsed_secs))),
            completion_stats: Some(pb::CompletionStats {
                successful_count: done,
                incomplete_count: left,
                ..Default::default()
            }),
            ..Default::default()
        }
        .into()
    }

    #[test]
    fn huge_settings_saturate_instead_of_panicking() {
        let mut p = PollPolicy::backoff(Duration::MAX, Duration::MAX, 1e300)
            .jitter(0.5)
            .start();
        for _ in 0..5 {
            let _ = p.next_backoff();
        }
        assert!(crate::time::after(Duration::MAX) > tokio::time::Instant::now());
        let r = crate::policy::retry::RetryPolicy::default()
            .with_initial_backoff(Duration::MAX)
            .with_max_backoff(Duration::MAX)
            .with_multiplier(1e300);
        assert_eq!(r.backoff(50), Duration::MAX);
    }

    #[test]
    fn progress_gives_an_estimate() {
        // 100 rows in 100 s, 900 left: 900 s to go.
        assert_eq!(
            estimate_remaining(&running(100, 900, 100)),
            Some(Duration::from_secs(900))
        );
        assert_eq!(estimate_remaining(&running(0, 900, 100)), None);
        // -1 rows left is the service's "unknown": no estimate, not "done".
        assert_eq!(running(100, -1, 100).completion_stats().incomplete, None);
        assert_eq!(estimate_remaining(&running(100, -1, 100)), None);
        assert_eq!(
            estimate_remaining(&running(100, 0, 100)),
            Some(Duration::ZERO)
        );
        assert_eq!(
            estimate_remaining(&running(10, 0, 100)),
            Some(Duration::ZERO)
        );
    }

    #[test]
    fn adaptive_polls_near_the_predicted_end() {
        let mut p = PollPolicy::default().jitter(0.0).start();
        assert_eq!(
            p.next_delay(&running(100, 900, 100)),
            Duration::from_secs(600)
        );
        assert_eq!(
            p.next_delay(&running(900, 100, 900)),
            Duration::from_secs(80)
        );
        assert_eq!(
            p.next_delay(&running(990, 10, 990)),
            Duration::from_secs(10)
        );
    }

    #[test]
    fn backoff_without_progress_and_fixed_policies() {
        let queued: Job = pb::BatchPredictionJob {
            state: pb::JobState::Queued as i32,
            ..Default::default()
        }
        .into();
        let mut p = PollPolicy::default().jitter(0.0).start();
        let secs: Vec<u64> = (0..7).map(|_| p.next_delay(&queued).as_secs()).collect();
        assert_eq!(secs, vec![2, 4, 8, 16, 32, 60, 60]);
        let mut f = PollPolicy::fixed(Duration::from_secs(5)).start();
        assert_eq!(
            f.next_delay(&running(100, 900, 100)),
            Duration::from_secs(5)
        );
        let mut j = PollPolicy::default().start();
        for _ in 0..100 {
            let d = j.next_delay(&running(100, 900, 100)).as_secs_f64();
            assert!((540.0..=660.0).contains(&d), "{d}");
        }
    }
}
