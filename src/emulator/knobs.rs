//! [`Knobs`]: runtime controls for tests (the crate's and its users').

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use tokio::sync::watch;

/// Current knob values; see [`Knobs`] for what each does.
///
/// ```
/// use std::time::Duration;
/// use vertex_batch::emulator::{KnobValues, Knobs};
///
/// let values = KnobValues {
///     queue_delay: Duration::from_secs(2),
///     fail_rows_containing: Some("FAIL".into()),
///     shuffle_output: true,
///     ..KnobValues::default()
/// };
/// assert_eq!(values.max_requests_per_job, 200_000); // the service's limit
/// assert_eq!(Knobs::new(values.clone()).values(), values);
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct KnobValues {
    /// Emulated time spent on each row (default 0: as fast as possible).
    pub row_delay: Duration,
    /// When set, rows are paced so a job runs for about this long, whatever
    /// its size (overrides `row_delay`).
    pub job_duration: Option<Duration>,
    /// Time a job spends `PENDING` before it starts `RUNNING`.
    pub queue_delay: Duration,
    /// When set, every job fails with this message once it leaves the queue.
    pub fail_jobs: Option<String>,
    /// The fraction (0.0–1.0) of RPCs answered `UNAVAILABLE` before any work.
    pub unavailable_fraction: f64,
    /// How many upcoming creates commit the job but answer `UNAVAILABLE`.
    pub lost_create_responses: u32,
    /// How many upcoming creates are refused `RESOURCE_EXHAUSTED` (a quota
    /// of concurrent jobs), committing nothing.
    pub refused_creates: u32,
    /// A job held `QUEUED` longer than this ends `EXPIRED` (service: 72 h).
    pub queue_ttl: Duration,
    /// A job `RUNNING` longer than this is cancelled (service: 24 h).
    pub max_run_time: Duration,
    /// The most requests a job may have (service: 200,000).
    pub max_requests_per_job: u64,
    /// How long a delete's long-running operation takes to be done.
    pub delete_delay: Duration,
    /// Rows whose prompt contains this text fail with a
    /// `RESOURCE_EXHAUSTED` status (the emulator's model, `src/emulator/model.rs`).
    pub fail_rows_containing: Option<String>,
    /// Writes output rows out of input order (shuffled in windows of 64
    /// rows), as the service may.
    pub shuffle_output: bool,
    /// Writes every n-th row twice (0: never), as the service sometimes does.
    pub duplicate_every: u64,
    /// While a job runs, its completed rows are exported in chunks, as the
    /// service exports them during long jobs: a chunk is sealed once it
    /// holds this many rows (default 5,000; 0: no row trigger). Chunks are
    /// `incremental_predictions/predictions_0001.jsonl`, `_0002`, … in the
    /// job's output directory, each published atomically; the final
    /// `predictions.jsonl` still holds every row (rows exported early come
    /// again there). On a BigQuery backend each chunk is appended to the
    /// output table instead, and the end loads only the rows left, so the
    /// table fills as the job runs and holds each row once. Output to
    /// local BigQuery table files is published at the end only.
    pub export_every_rows: u64,
    /// A chunk holding at least one row is also sealed once this much
    /// emulated time has passed since its first row (default 10 s;
    /// zero: no time trigger). With both triggers off nothing is exported
    /// while the job runs. Checked between chunks of rows (about every
    /// 20 ms of emulated time on a paced job).
    pub export_every: Duration,
    /// Ends a job `SUCCEEDED` even when some of its rows failed (the service
    /// does this) instead of `PARTIALLY_SUCCEEDED`.
    pub succeed_despite_failed_rows: bool,
    /// The longest input line read (default 32 MiB): a longer row fails
    /// alone, and memory stays bounded.
    pub max_line_bytes: usize,
    /// Emulated slow storage: each chunk of rows waits this long on its I/O
    /// thread before it is read (default 0). RPCs are answered meanwhile.
    pub io_delay: Duration,
}

impl Default for KnobValues {
    fn default() -> Self {
        KnobValues {
            row_delay: Duration::ZERO,
            job_duration: None,
            queue_delay: Duration::ZERO,
            fail_jobs: None,
            unavailable_fraction: 0.0,
            lost_create_responses: 0,
            refused_creates: 0,
            queue_ttl: Duration::from_secs(72 * 3600),
            max_run_time: Duration::from_secs(24 * 3600),
            max_requests_per_job: 200_000,
            delete_delay: Duration::from_millis(200),
            fail_rows_containing: None,
            shuffle_output: false,
            duplicate_every: 0,
            export_every_rows: 5_000,
            export_every: Duration::from_secs(10),
            succeed_despite_failed_rows: false,
            max_line_bytes: 32 << 20,
            io_delay: Duration::ZERO,
        }
    }
}

/// Controls of a running emulator, shared by every clone.
///
/// ```
/// # #[cfg(feature = "emulator")] {
/// use std::time::Duration;
/// use vertex_batch::emulator::Knobs;
/// let knobs = Knobs::default();
/// knobs.set_job_duration(Some(Duration::from_secs(3600)));
/// knobs.set_unavailable_fraction(0.3);
/// assert_eq!(knobs.values().unavailable_fraction, 0.3);
/// # }
/// ```
#[derive(Clone)]
pub struct Knobs {
    values: Arc<Mutex<KnobValues>>,
    hold: Arc<watch::Sender<bool>>,
    rng: Arc<Mutex<fastrand::Rng>>,
}

impl Default for Knobs {
    fn default() -> Self {
        Knobs::new(KnobValues::default())
    }
}

impl std::fmt::Debug for Knobs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Knobs")
            .field("values", &self.values())
            .field("hold_queued", &self.is_holding())
            .finish()
    }
}

impl Knobs {
    /// Knobs starting from `values`.
    ///
    /// ```
    /// use vertex_batch::emulator::{KnobValues, Knobs};
    ///
    /// let knobs = Knobs::new(KnobValues { duplicate_every: 10, ..KnobValues::default() });
    /// assert_eq!(knobs.values().duplicate_every, 10);
    /// assert!(!knobs.is_holding());
    /// ```
    pub fn new(values: KnobValues) -> Self {
        Knobs {
            values: Arc::new(Mutex::new(values)),
            hold: Arc::new(watch::channel(false).0),
            rng: Arc::new(Mutex::new(fastrand::Rng::with_seed(0x5eed))),
        }
    }

    fn update(&self, f: impl FnOnce(&mut KnobValues)) {
        let mut guard = self.values.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut guard);
    }

    /// A copy of the current values.
    ///
    /// ```
    /// use std::time::Duration;
    /// use vertex_batch::emulator::Knobs;
    ///
    /// let knobs = Knobs::default();
    /// knobs.set_row_delay(Duration::from_millis(10));
    /// knobs.set_queue_delay(Duration::from_secs(5));
    /// knobs.set_io_delay(Duration::from_millis(1));
    /// knobs.set_queue_ttl(Duration::from_secs(60));
    /// knobs.set_max_run_time(Duration::from_secs(600));
    /// knobs.set_max_requests_per_job(1_000);
    /// knobs.set_delete_delay(Duration::ZERO);
    /// knobs.set_shuffle_output(true);
    /// knobs.set_duplicate_every(7);
    /// knobs.set_export_every_rows(1_000);
    /// knobs.set_export_every(Duration::from_secs(1));
    /// knobs.set_succeed_despite_failed_rows(true);
    /// let v = knobs.values(); // a copy: later changes do not show in it
    /// assert_eq!((v.row_delay, v.max_requests_per_job, v.duplicate_every), (Duration::from_millis(10), 1_000, 7));
    /// ```
    pub fn values(&self) -> KnobValues {
        self.values
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Emulated time per row.
    ///
    /// ```
    /// use std::time::Duration;
    /// let knobs = vertex_batch::emulator::Knobs::default();
    /// knobs.set_row_delay(Duration::from_millis(50)); // 1,000 rows: 50 emulated seconds
    /// assert_eq!(knobs.values().row_delay, Duration::from_millis(50));
    /// ```
    pub fn set_row_delay(&self, d: Duration) {
        self.update(|v| v.row_delay = d);
    }

    /// Target duration of each job (`None`: use the row delay).
    ///
    /// ```
    /// use std::time::Duration;
    /// let knobs = vertex_batch::emulator::Knobs::default();
    /// knobs.set_job_duration(Some(Duration::from_secs(3600))); // every job takes an hour
    /// assert_eq!(knobs.values().job_duration, Some(Duration::from_secs(3600)));
    /// ```
    pub fn set_job_duration(&self, d: Option<Duration>) {
        self.update(|v| v.job_duration = d);
    }

    /// Time spent `PENDING` before `RUNNING`.
    ///
    /// ```
    /// use std::time::Duration;
    /// let knobs = vertex_batch::emulator::Knobs::default();
    /// knobs.set_queue_delay(Duration::from_secs(30));
    /// assert_eq!(knobs.values().queue_delay, Duration::from_secs(30));
    /// ```
    pub fn set_queue_delay(&self, d: Duration) {
        self.update(|v| v.queue_delay = d);
    }

    /// Emulated slow storage (see [`KnobValues::io_delay`]).
    ///
    /// ```
    /// use std::time::Duration;
    /// let knobs = vertex_batch::emulator::Knobs::default();
    /// knobs.set_io_delay(Duration::from_millis(200));
    /// assert_eq!(knobs.values().io_delay, Duration::from_millis(200));
    /// ```
    pub fn set_io_delay(&self, d: Duration) {
        self.update(|v| v.io_delay = d);
    }

    /// The longest input line a job reads; a longer row fails alone.
    ///
    /// ```
    /// let knobs = vertex_batch::emulator::Knobs::default();
    /// knobs.set_max_line_bytes(64 << 10); // rows over 64 KiB fail
    /// assert_eq!(knobs.values().max_line_bytes, 64 << 10);
    /// knobs.set_max_line_bytes(0);
    /// assert_eq!(knobs.values().max_line_bytes, 1);
    /// ```
    pub fn set_max_line_bytes(&self, n: usize) {
        self.update(|v| v.max_line_bytes = n.max(1));
    }

    /// Holds new and waiting jobs in `QUEUED` (`true`) or lets them run.
    ///
    /// ```
    /// let knobs = vertex_batch::emulator::Knobs::default();
    /// knobs.hold_queued(true); // e.g. to test cancelling a job before it runs
    /// assert!(knobs.is_holding());
    /// knobs.hold_queued(false); // held jobs go on
    /// assert!(!knobs.is_holding());
    /// ```
    pub fn hold_queued(&self, hold: bool) {
        self.hold.send_replace(hold);
    }

    /// Whether jobs are being held in `QUEUED`.
    ///
    /// ```
    /// let knobs = vertex_batch::emulator::Knobs::default();
    /// assert!(!knobs.is_holding());
    /// knobs.hold_queued(true);
    /// assert!(knobs.is_holding());
    /// ```
    pub fn is_holding(&self) -> bool {
        *self.hold.borrow()
    }

    pub(crate) fn hold_watch(&self) -> watch::Receiver<bool> {
        self.hold.subscribe()
    }

    /// Makes jobs fail with `message` (`None`: stop failing them).
    ///
    /// ```
    /// let knobs = vertex_batch::emulator::Knobs::default();
    /// knobs.fail_jobs(Some("quota exceeded".into()));
    /// assert_eq!(knobs.values().fail_jobs.as_deref(), Some("quota exceeded"));
    /// knobs.fail_jobs(None);
    /// ```
    pub fn fail_jobs(&self, message: Option<String>) {
        self.update(|v| v.fail_jobs = message);
    }

    /// Answers this fraction of RPCs `UNAVAILABLE` (clamped to 0.0–1.0).
    ///
    /// ```
    /// let knobs = vertex_batch::emulator::Knobs::default();
    /// knobs.set_unavailable_fraction(0.25); // one RPC in four, to test retries
    /// assert_eq!(knobs.values().unavailable_fraction, 0.25);
    /// knobs.set_unavailable_fraction(2.0);
    /// assert_eq!(knobs.values().unavailable_fraction, 1.0);
    /// ```
    pub fn set_unavailable_fraction(&self, fraction: f64) {
        let f = if fraction.is_finite() {
            fraction.clamp(0.0, 1.0)
        } else {
            0.0
        };
        self.update(|v| v.unavailable_fraction = f);
    }

    /// Makes the next `n` creates commit their job but answer `UNAVAILABLE`,
    /// as if the response was lost on the way back.
    ///
    /// ```
    /// let knobs = vertex_batch::emulator::Knobs::default();
    /// // The next create makes its job but answers UNAVAILABLE, so a test can
    /// // check that a retried `Client::submit` finds that job, not a second one.
    /// knobs.lose_create_responses(1);
    /// assert_eq!(knobs.values().lost_create_responses, 1);
    /// ```
    pub fn lose_create_responses(&self, n: u32) {
        self.update(|v| v.lost_create_responses = n);
    }

    /// Refuses the next `n` creates with `RESOURCE_EXHAUSTED`, as the
    /// service does past its quota of concurrent jobs: nothing is made.
    ///
    /// ```
    /// let knobs = vertex_batch::emulator::Knobs::default();
    /// knobs.refuse_creates(1); // the next create fails, and no job exists
    /// assert_eq!(knobs.values().refused_creates, 1);
    /// ```
    pub fn refuse_creates(&self, n: u32) {
        self.update(|v| v.refused_creates = n);
    }

    /// How long a held job may stay `QUEUED` before it ends `EXPIRED`.
    ///
    /// ```
    /// use std::time::Duration;
    /// let knobs = vertex_batch::emulator::Knobs::default();
    /// knobs.set_queue_ttl(Duration::from_secs(60)); // held over a minute: EXPIRED
    /// assert_eq!(knobs.values().queue_ttl, Duration::from_secs(60));
    /// ```
    pub fn set_queue_ttl(&self, d: Duration) {
        self.update(|v| v.queue_ttl = d);
    }

    /// How long a job may run before it is cancelled.
    ///
    /// ```
    /// use std::time::Duration;
    /// let knobs = vertex_batch::emulator::Knobs::default();
    /// knobs.set_max_run_time(Duration::from_secs(600));
    /// assert_eq!(knobs.values().max_run_time, Duration::from_secs(600));
    /// ```
    pub fn set_max_run_time(&self, d: Duration) {
        self.update(|v| v.max_run_time = d);
    }

    /// The most requests one job may have.
    ///
    /// ```
    /// let knobs = vertex_batch::emulator::Knobs::default();
    /// knobs.set_max_requests_per_job(100); // a bigger job is refused
    /// assert_eq!(knobs.values().max_requests_per_job, 100);
    /// ```
    pub fn set_max_requests_per_job(&self, n: u64) {
        self.update(|v| v.max_requests_per_job = n);
    }

    /// How long a delete operation takes.
    ///
    /// ```
    /// use std::time::Duration;
    /// let knobs = vertex_batch::emulator::Knobs::default();
    /// knobs.set_delete_delay(Duration::from_secs(5));
    /// assert_eq!(knobs.values().delete_delay, Duration::from_secs(5));
    /// ```
    pub fn set_delete_delay(&self, d: Duration) {
        self.update(|v| v.delete_delay = d);
    }

    /// Makes rows whose prompt contains `text` fail (`None`: none fail).
    ///
    /// ```
    /// let knobs = vertex_batch::emulator::Knobs::default();
    /// knobs.fail_rows_containing(Some("FAIL-ME".into())); // those rows end RESOURCE_EXHAUSTED
    /// assert_eq!(knobs.values().fail_rows_containing.as_deref(), Some("FAIL-ME"));
    /// ```
    pub fn fail_rows_containing(&self, text: Option<String>) {
        self.update(|v| v.fail_rows_containing = text);
    }

    /// Writes output rows out of input order.
    ///
    /// ```
    /// let knobs = vertex_batch::emulator::Knobs::default();
    /// knobs.set_shuffle_output(true); // readers must not rely on row order
    /// assert_eq!(knobs.values().shuffle_output, true);
    /// ```
    pub fn set_shuffle_output(&self, on: bool) {
        self.update(|v| v.shuffle_output = on);
    }

    /// Writes every n-th output row twice (0: never).
    ///
    /// ```
    /// let knobs = vertex_batch::emulator::Knobs::default();
    /// knobs.set_duplicate_every(10); // rows 10, 20, … come out twice
    /// assert_eq!(knobs.values().duplicate_every, 10);
    /// ```
    pub fn set_duplicate_every(&self, n: u64) {
        self.update(|v| v.duplicate_every = n);
    }

    /// Seals an exported `incremental_predictions/` chunk once it holds
    /// `n` rows (0: no row trigger; see [`KnobValues::export_every_rows`]).
    /// Takes effect for jobs that start running afterwards.
    ///
    /// ```
    /// let knobs = vertex_batch::emulator::Knobs::default();
    /// assert_eq!(knobs.values().export_every_rows, 5_000); // the default
    /// knobs.set_export_every_rows(100); // a chunk every 100 completed rows
    /// assert_eq!(knobs.values().export_every_rows, 100);
    /// ```
    pub fn set_export_every_rows(&self, n: u64) {
        self.update(|v| v.export_every_rows = n);
    }

    /// Seals an exported chunk holding at least one row once `d` of
    /// emulated time has passed since its first row (zero: no time
    /// trigger; see [`KnobValues::export_every`]). Takes effect for jobs
    /// that start running afterwards.
    ///
    /// ```
    /// use std::time::Duration;
    /// let knobs = vertex_batch::emulator::Knobs::default();
    /// assert_eq!(knobs.values().export_every, Duration::from_secs(10)); // the default
    /// knobs.set_export_every(Duration::from_secs(2));
    /// // Both triggers off: nothing is exported before the job ends.
    /// knobs.set_export_every(Duration::ZERO);
    /// knobs.set_export_every_rows(0);
    /// assert_eq!(knobs.values().export_every, Duration::ZERO);
    /// ```
    pub fn set_export_every(&self, d: Duration) {
        self.update(|v| v.export_every = d);
    }

    /// Ends jobs with failed rows `SUCCEEDED` instead of
    /// `PARTIALLY_SUCCEEDED`.
    ///
    /// ```
    /// let knobs = vertex_batch::emulator::Knobs::default();
    /// knobs.set_succeed_despite_failed_rows(true);
    /// assert_eq!(knobs.values().succeed_despite_failed_rows, true);
    /// ```
    pub fn set_succeed_despite_failed_rows(&self, on: bool) {
        self.update(|v| v.succeed_despite_failed_rows = on);
    }

    /// Seeds the fault-injection random generator (for repeatable runs).
    ///
    /// ```
    /// let knobs = vertex_batch::emulator::Knobs::default();
    /// knobs.set_unavailable_fraction(0.1);
    /// knobs.seed(42); // the same calls, in the same order, fail on every run
    /// ```
    pub fn seed(&self, seed: u64) {
        *self.rng.lock().unwrap_or_else(|e| e.into_inner()) = fastrand::Rng::with_seed(seed);
    }

    /// Draws whether this RPC should fail `UNAVAILABLE`.
    pub(crate) fn inject_unavailable(&self) -> bool {
        let frac = self.values().unavailable_fraction;
        frac > 0.0 && self.rng.lock().unwrap_or_else(|e| e.into_inner()).f64() < frac
    }

    /// Takes one refused-create token, if any are left.
    pub(crate) fn take_refused_create(&self) -> bool {
        let mut guard = self.values.lock().unwrap_or_else(|e| e.into_inner());
        if guard.refused_creates > 0 {
            guard.refused_creates -= 1;
            true
        } else {
            false
        }
    }

    /// Takes one lost-create token, if any are left.
    pub(crate) fn take_lost_create(&self) -> bool {
        let mut guard = self.values.lock().unwrap_or_else(|e| e.into_inner());
        if guard.lost_create_responses > 0 {
            guard.lost_create_responses -= 1;
            true
        } else {
            false
        }
    }
}
