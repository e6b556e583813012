//! What a batch is asked to do: [`BatchSpec`] (the job template, the
//! staging location, the request key and options) and the [`BatchEvent`]s
//! it reports.

use std::{fmt, sync::Arc, time::Duration};

use crate::{
    batch::{claim::DEFAULT_CLAIM_LEASE, read::stream::ReadOptions},
    format::input::{InputEncoder, InputLimits},
};
use crate::{
    client::WatchManyOptions,
    error::{Error, Result},
    spec::JobSpec,
};

/// The longest request key a batch takes (its jobs' keys add a suffix).
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> vertex_batch::Result<()> {
/// # let dir = tempfile::tempdir().unwrap();
/// # let storage = vertex_batch::storage::Storage::local(dir.path());
/// # let client = vertex_batch::Client::builder().ignore_env().project("my-project")
/// #     .location("us-central1").emulator_host("127.0.0.1:8085").build()?;
/// use vertex_batch::{batch::{BatchSpec, MAX_BATCH_KEY_LEN}, Error, JobSpec};
///
/// let spec = BatchSpec::new(JobSpec::new("gemini-2.0-flash-001"), "gs://my-bucket/batches")
///     .request_key("k".repeat(MAX_BATCH_KEY_LEN + 1));
/// // Refused before anything is staged or submitted.
/// let err = client.start_batch(&storage, &spec, [("q1", "hi")]).await.unwrap_err();
/// assert!(matches!(err, Error::Validation(ref v) if v.field() == "request_key"));
/// # Ok(()) }
/// ```
pub const MAX_BATCH_KEY_LEN: usize = 48;

/// What to run: a job template, where to stage, and the batch's key.
///
/// ```no_run
/// # async fn demo(client: vertex_batch::Client, storage: vertex_batch::storage::Storage) -> vertex_batch::Result<()> {
/// use serde_json::json;
/// use vertex_batch::{batch::BatchSpec, JobSpec, format::Prompt};
///
/// let spec = BatchSpec::new(
///     JobSpec::new("gemini-2.0-flash-001").model_parameters(json!({"temperature": 0.2})),
///     "gs://my-bucket/batches",
/// )
/// .request_key("nightly-2026-11-22");
/// let prompts = vec![("q1", Prompt::text("Why is the sky blue?")), ("q2", Prompt::text("Name three rivers."))];
/// let (batch, mut results) = client.run_batch(&storage, &spec, prompts).await?;
/// while let Some(row) = futures::StreamExt::next(&mut results).await {
///     let row = row?;
///     println!("{}: {}", row.key().unwrap_or("?"), row.text().unwrap_or(row.outcome().kind()));
/// }
/// println!("{:?} over {} jobs", results.totals(), batch.jobs().len());
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct BatchSpec {
    pub(super) job: JobSpec,
    pub(super) staging: String,
    pub(super) request_key: Option<String>,
    pub(super) limits: Option<InputLimits>,
    pub(super) watch: WatchManyOptions,
    pub(crate) read: ReadOptions,
    pub(super) claim_lease: Duration,
    pub(super) on_event: Option<EventHook>,
}

/// A caller's [`BatchSpec::on_event`] callback.
#[derive(Clone)]
pub(super) struct EventHook(Arc<dyn Fn(&BatchEvent) + Send + Sync>);

impl fmt::Debug for EventHook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("EventHook")
    }
}

/// A step of [`Client::start_batch`](crate::Client::start_batch) (and [`Batch::retry_failed`](crate::batch::Batch::retry_failed)), as it
/// happens: for a progress display while staging and submitting, or a log.
/// See [`BatchSpec::on_event`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum BatchEvent {
    /// An input part was uploaded (`part` counts from 0).
    Staged {
        /// The part.
        part: usize,
        /// Its prompts.
        rows: u64,
    },
    /// The manifest was written: the batch exists, and a re-run with its
    /// key resumes it instead of staging again.
    ManifestWritten,
    /// The batch was found staged (by this key) and is resumed.
    Resumed,
    /// This process claimed a part and is about to create its job.
    Claimed {
        /// The round (0: the prompts; later: retries).
        round: usize,
        /// The part.
        part: usize,
    },
    /// Another process holds a part's claim: this one waits for its job
    /// (or for its lease to run out).
    WaitingForClaim {
        /// The round.
        round: usize,
        /// The part.
        part: usize,
    },
    /// A claim's lease ran out without a job; this process took it over.
    TookOverClaim {
        /// The round.
        round: usize,
        /// The part.
        part: usize,
    },
    /// A part's job is known: created now, or found by its request key.
    Submitted {
        /// The round.
        round: usize,
        /// The part.
        part: usize,
        /// The job's name.
        job: String,
    },
    /// A follow-up round was recorded in the manifest (before any of its
    /// jobs is submitted).
    RoundRecorded {
        /// The round.
        round: usize,
        /// The prompts it retries.
        rows: u64,
    },
}

impl BatchSpec {
    /// The input writer of this batch's model family and limits.
    pub(super) fn encoder(&self) -> Result<InputEncoder> {
        let family = crate::family::Family::of_model(self.job.model())?;
        let limits = self
            .limits
            .unwrap_or_else(|| InputLimits::default().max_rows_per_file(family.max_rows_per_job()));
        InputEncoder::for_model(limits, self.job.model())
    }

    /// A batch of jobs like `job` (model, parameters, labels, display name;
    /// its input and output are set per part), staged under `staging`
    /// (`gs://bucket[/prefix]`).
    ///
    /// ```
    /// use vertex_batch::{client::WatchManyOptions, format::InputLimits, batch::ReadOptions};
    /// use vertex_batch::{batch::BatchSpec, JobSpec};
    ///
    /// let job = JobSpec::new("gemini-2.0-flash-001").display_name("nightly");
    /// let spec = BatchSpec::new(job, "gs://my-bucket/batches")
    ///     .request_key("nightly-2026-11-22")
    ///     .limits(InputLimits::default().max_rows_per_file(50_000)) // a job per 50,000 prompts
    ///     .watch_options(WatchManyOptions::new().gets_per_second(2.0))
    ///     .read_options(ReadOptions::new().parallelism(4));
    /// ```
    pub fn new(job: JobSpec, staging: impl Into<String>) -> Self {
        // The model's built-in price, so the results' totals carry a cost.
        let read = match crate::cost::Prices::builtin().lookup(job.model()) {
            Some(p) => ReadOptions::default().price(p.clone()),
            None => ReadOptions::default(),
        };
        BatchSpec {
            job,
            staging: staging.into(),
            request_key: None,
            limits: None,
            watch: WatchManyOptions::default(),
            read,
            claim_lease: DEFAULT_CLAIM_LEASE,
            on_event: None,
        }
    }

    /// How long a part's claim holds before another process may take it
    /// over (default [`DEFAULT_CLAIM_LEASE`], at least 1 ms). A process that
    /// died after claiming a part and before creating its job holds the
    /// part up this long; see "What the request key guarantees" in docs/GUIDE.md.
    ///
    /// ```
    /// use std::time::Duration;
    /// use vertex_batch::{batch::BatchSpec, JobSpec};
    ///
    /// let spec = BatchSpec::new(JobSpec::new("gemini-2.0-flash-001"), "gs://my-bucket/batches")
    ///     .claim_lease(Duration::from_secs(60));
    /// ```
    pub fn claim_lease(mut self, lease: Duration) -> Self {
        self.claim_lease = lease.max(Duration::from_millis(1));
        self
    }

    /// Calls `f` at every step of staging and submitting ([`BatchEvent`]),
    /// on the task doing the work: keep it quick.
    ///
    /// ```
    /// use vertex_batch::{batch::{BatchEvent, BatchSpec}, JobSpec};
    ///
    /// let spec = BatchSpec::new(JobSpec::new("gemini-2.0-flash-001"), "gs://my-bucket/batches")
    ///     .on_event(|e| {
    ///         if let BatchEvent::Submitted { part, job, .. } = e {
    ///             eprintln!("part {part}: {job}");
    ///         }
    ///     });
    /// ```
    pub fn on_event(mut self, f: impl Fn(&BatchEvent) + Send + Sync + 'static) -> Self {
        self.on_event = Some(EventHook(Arc::new(f)));
        self
    }

    pub(super) fn emit(&self, event: BatchEvent) {
        if let Some(EventHook(f)) = &self.on_event {
            f(&event);
        }
    }

    /// The batch's key: lowercase letters, digits, `-` and `_`, at most
    /// [`MAX_BATCH_KEY_LEN`] characters. Reuse it to resume the batch after
    /// a crash. Without one a random key is made.
    ///
    /// ```
    /// use vertex_batch::{batch::BatchSpec, JobSpec};
    ///
    /// // Same key after a crash: the batch is found again, not staged twice.
    /// let spec = BatchSpec::new(JobSpec::new("gemini-2.0-flash-001"), "gs://my-bucket/batches")
    ///     .request_key("nightly-2026-11-22");
    /// ```
    pub fn request_key(mut self, key: impl Into<String>) -> Self {
        self.request_key = Some(key.into());
        self
    }

    /// Rows and bytes per input file (and so per job).
    ///
    /// ```
    /// use vertex_batch::{format::InputLimits, batch::BatchSpec, JobSpec};
    ///
    /// // One job per 10,000 prompts.
    /// let spec = BatchSpec::new(JobSpec::new("gemini-2.0-flash-001"), "gs://my-bucket/batches")
    ///     .limits(InputLimits::default().max_rows_per_file(10_000));
    /// ```
    ///
    /// Without this, a part holds at most one job's worth of the model's
    /// family ([`crate::family::Family::max_rows_per_job`]: 1,000,000
    /// rows for Gemini embeddings, 200,000 for the others) and 1 GB.
    pub fn limits(mut self, limits: InputLimits) -> Self {
        self.limits = Some(limits);
        self
    }

    /// How jobs are followed.
    ///
    /// ```
    /// use vertex_batch::{client::WatchManyOptions, batch::BatchSpec, JobSpec};
    ///
    /// // At most one Get call a second over all the batch's jobs.
    /// let spec = BatchSpec::new(JobSpec::new("gemini-2.0-flash-001"), "gs://my-bucket/batches")
    ///     .watch_options(WatchManyOptions::new().gets_per_second(1.0));
    /// ```
    pub fn watch_options(mut self, opts: WatchManyOptions) -> Self {
        self.watch = opts;
        self
    }

    /// How results are read.
    ///
    /// ```
    /// use vertex_batch::{batch::{ReadOptions, BatchSpec}, JobSpec};
    ///
    /// let spec = BatchSpec::new(JobSpec::new("gemini-2.0-flash-001"), "gs://my-bucket/batches")
    ///     .read_options(ReadOptions::new().parallelism(2).max_line_bytes(8 << 20));
    /// ```
    pub fn read_options(mut self, opts: ReadOptions) -> Self {
        // The model's price stays unless the options bring their own.
        let price = self.read.price_arc();
        self.read = opts;
        if self.read.priced().is_none() {
            self.read.set_price(price);
        }
        self
    }

    /// Prices the batch's rows at `price` instead of the model's entry in
    /// the built-in table (which a new spec starts with, when the table
    /// has the model): [`Totals::cost`](crate::batch::Totals::cost) of
    /// [`Batch::results`](crate::batch::Batch::results) and of [`Batch::live`](crate::batch::Batch::live).
    ///
    /// ```
    /// use vertex_batch::{cost::Prices, batch::BatchSpec, JobSpec};
    ///
    /// let mine = Prices::from_json(r#"{"updated": "2026-12-01", "models": {"my-tuned-model": {"input": 0.1, "output": 0.4, "max_output_tokens": 8192, "source": "our contract"}}}"#)?;
    /// let spec = BatchSpec::new(JobSpec::new("my-tuned-model"), "gs://my-bucket/batches")
    ///     .price(mine.lookup("my-tuned-model").expect("in the file").clone());
    /// # Ok::<(), vertex_batch::Error>(())
    /// ```
    pub fn price(mut self, price: crate::cost::ModelPrice) -> Self {
        self.read = self.read.price(price);
        self
    }

    pub(super) fn key(&self) -> Result<String> {
        let key = self
            .request_key
            .clone()
            .unwrap_or_else(|| format!("b{:016x}", fastrand::u64(..)));
        let ok = !key.is_empty()
            && key.len() <= MAX_BATCH_KEY_LEN
            && key
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
        if !ok {
            return Err(Error::validation(
                "request_key",
                format!(
                    "{key:?}: a batch key is 1 to {MAX_BATCH_KEY_LEN} lowercase letters, digits, '-' or '_'"
                ),
            ));
        }
        Ok(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    pub(super) fn parts_split_on_the_family_limits_unless_told() {
        let rows = |model: &str| {
            BatchSpec::new(JobSpec::new(model), "gs://b/p")
                .encoder()
                .unwrap()
                .limits()
                .rows()
        };
        assert_eq!(rows("gemini-embedding-001"), 1_000_000);
        assert_eq!(rows("gemini-2.5-flash"), 200_000);
        assert_eq!(rows("claude-sonnet-4-5"), 200_000);
        let told = BatchSpec::new(JobSpec::new("gemini-embedding-001"), "gs://b/p")
            .limits(InputLimits::default().max_rows_per_file(10));
        assert_eq!(told.encoder().unwrap().limits().rows(), 10);
        assert!(BatchSpec::new(JobSpec::new("acme-maas"), "gs://b/p")
            .encoder()
            .is_err());
    }
}
