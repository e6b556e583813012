//! The whole trip: prompts in, matched answers out — [`BatchSpec`],
//! [`Client::start_batch`], [`Batch`] and [`Client::run_batch`].
//!
//! # What happens
//!
//! 1. **Stage.** The job template is checked first (a template with an
//!    input or output of its own is refused: each part gets its own). The
//!    prompts stream through the [`InputEncoder`] into
//!    resumable uploads under `STAGING/KEY/input/ATTEMPT/part-NNNNN.jsonl`
//!    (`ATTEMPT` is random: two processes staging one key at once never
//!    write each other's files), one part per job when the input is over
//!    the service's limits (200,000 rows, 1 GB a file). Then
//!    `STAGING/KEY/manifest.json` (create-only) records the parts,
//!    the location, the template's fingerprint and a SHA-256 of the staged
//!    prompts — the truth every later step and every re-run starts from.
//! 2. **Submit.** One job per part, each with its own request key
//!    (`KEY-r0-pN`), claimed first (below), so each part has at most one
//!    live job.
//! 3. **Watch.** [`Batch::progress`] follows every job under one budget of
//!    Get calls ([`Client::watch_many`]).
//! 4. **Read.** [`Batch::results`] reads every job's output directory joined
//!    to the staged inputs: every prompt's key comes back exactly once.
//! 5. **Retry.** [`Batch::retry_failed`] stages the failed and missing rows
//!    (byte-exact from the inputs) as a follow-up round and submits it;
//!    results then merge, latest outcome per key.
//!
//! # Resuming
//!
//! Everything lives under `STAGING/KEY/` and every job carries a request
//! key derived from `KEY`. Run [`Client::start_batch`] again with the same
//! [`BatchSpec::request_key`] after a crash and it finds the manifest (no
//! second upload) and the jobs already submitted (no second job); if they
//! have ended, their results are read as they are. [`Client::resume_batch`]
//! does the same without the prompts.
//!
//! A re-run is checked against the manifest before anything is submitted,
//! with errors that name the batch's key and say how to resume:
//!
//! * other prompts (a digest of the staged lines differs) are refused —
//!   new prompts need a new key;
//! * another job template is refused: the fingerprint covers what the
//!   caller set (model, parameters, labels, display name, service account,
//!   encryption key, [`JobSpec::with_proto`] changes), not what the crate
//!   made up (the default display name carries the time, so a re-run
//!   without one is the same spec);
//! * a client for another project or location is refused (its jobs would
//!   not be found there).
//!
//! # One job per part, across processes and machines
//!
//! What the request key guarantees, for every process (on any machine)
//! that runs the batch with the same key, staging location and prompts:
//!
//! * **One live job per part.** Before a part's job is created, the part
//!   is claimed with a create-only object `STAGING/KEY/claims/rR-pNNNNN.json`;
//!   the winner creates the job, the others wait for it and follow it. A
//!   claim whose holder died before creating its job is taken over after
//!   its lease ([`BatchSpec::claim_lease`], default
//!   [`DEFAULT_CLAIM_LEASE`](super::DEFAULT_CLAIM_LEASE)) with a
//!   generation-matched write; a holder whose create fails gives its claim
//!   up at once. After every create the part's key is reconciled: should
//!   two jobs writing to the part's output carry it anyway (storage that
//!   ignores preconditions, a holder slower than its lease), the oldest
//!   wins and the others are cancelled.
//! * **Every process reads the same answers**: all follow the oldest job
//!   of each part, and read its output joined to the one staged input.
//! * **Exactly one line per prompt** in [`Batch::results`], whatever the
//!   output holds (duplicates dropped, missing rows reported missing).
//! * **Crash-safe at any point.** The manifest is written only after every
//!   part is staged, and a follow-up round is recorded in it before its
//!   jobs are submitted; a process killed anywhere leaves a state the next
//!   run with the key finishes, without a second upload of a staged batch
//!   or a second job for a part.
//!
//! What it does not guarantee:
//!
//! * A cancelled duplicate may have run some rows before its cancel
//!   landed; those rows are billed (the service bills completed rows).
//! * Storage that ignores preconditions (fake-gcs-server) lets two
//!   processes both claim a part, so both create a job and the reconcile
//!   cancels one: one job stays live, but two were created.
//! * Two processes calling [`Batch::retry_failed`] at once on storage
//!   without preconditions may both record a follow-up round; the rounds
//!   are the same rows under the same keys, so still one job per part.
//! * A waiter whose clock runs ahead of the holder's may take a claim
//!   over before its lease ran out by the holder's clock; the second job
//!   it makes is cancelled by the reconcile.
//! * Staged files of a process killed while staging stay under
//!   `STAGING/KEY/input/ATTEMPT/` (no manifest names them) until deleted.
//! * Nothing stops a caller from deleting `STAGING/KEY/` or a job: the key
//!   then starts over (or finds nothing to follow).
//!
//! A request key names one batch per project and location: the parts'
//! jobs carry `KEY-rR-pN` whatever the staging location. Only a job that
//! writes to the part's own output counts as the part's; a batch staged
//! elsewhere under a key already in use is refused when it would submit,
//! and the other batch's jobs are never cancelled.

use std::{fmt, sync::Arc, time::Duration};

use futures::{Stream, StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};

use super::{
    claim::{settled_job, submit_once, writes_to, PartClaim, Step, DEFAULT_CLAIM_LEASE},
    fingerprint::{fingerprint, FingerprintSet},
    input::{BatchRequest, InputEncoder, InputLimits},
    reader::{parse_lines, ReadOptions, ResultStream},
    staging::{Area, PartWriter, StagingClient, Version},
};
use crate::{
    client::{Client, ListOptions, WatchManyOptions},
    error::{Error, Result},
    job::Job,
    spec::{JobSpec, REQUEST_KEY_LABEL},
    uri::{BigQueryUri, GcsUri},
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
/// use vertex_batch::{data::{BatchSpec, MAX_BATCH_KEY_LEN}, Error, JobSpec};
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
/// use vertex_batch::{data::BatchSpec, JobSpec, Prompt};
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
    job: JobSpec,
    staging: String,
    request_key: Option<String>,
    limits: Option<InputLimits>,
    watch: WatchManyOptions,
    pub(super) read: ReadOptions,
    claim_lease: Duration,
    on_event: Option<EventHook>,
}

/// A caller's [`BatchSpec::on_event`] callback.
#[derive(Clone)]
struct EventHook(Arc<dyn Fn(&BatchEvent) + Send + Sync>);

impl fmt::Debug for EventHook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("EventHook")
    }
}

/// A step of [`Client::start_batch`] (and [`Batch::retry_failed`]), as it
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
    fn encoder(&self) -> Result<InputEncoder> {
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
    /// use vertex_batch::{client::WatchManyOptions, data::{input::InputLimits, ReadOptions}};
    /// use vertex_batch::{BatchSpec, JobSpec};
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
    /// use vertex_batch::{BatchSpec, JobSpec};
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
    /// use vertex_batch::{data::BatchEvent, BatchSpec, JobSpec};
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

    fn emit(&self, event: BatchEvent) {
        if let Some(EventHook(f)) = &self.on_event {
            f(&event);
        }
    }

    /// The batch's key: lowercase letters, digits, `-` and `_`, at most
    /// [`MAX_BATCH_KEY_LEN`] characters. Reuse it to resume the batch after
    /// a crash. Without one a random key is made.
    ///
    /// ```
    /// use vertex_batch::{BatchSpec, JobSpec};
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
    /// use vertex_batch::{data::input::InputLimits, BatchSpec, JobSpec};
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
    /// use vertex_batch::{client::WatchManyOptions, BatchSpec, JobSpec};
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
    /// use vertex_batch::{data::ReadOptions, BatchSpec, JobSpec};
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
    /// has the model): [`Totals::cost`](super::Totals::cost) of
    /// [`Batch::results`] and of [`Batch::live`].
    ///
    /// ```
    /// use vertex_batch::{cost::Prices, BatchSpec, JobSpec};
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

    fn key(&self) -> Result<String> {
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

/// What `STAGING/KEY/manifest.json` records.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct Manifest {
    version: u32,
    request_key: String,
    /// The location the jobs run in (`projects/P/locations/L`); absent in
    /// version 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    parent: Option<String>,
    /// The job template's fingerprint (what the caller asked for, not
    /// what the crate defaulted); absent in version 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    spec: Option<String>,
    /// What was staged; absent in version 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    prompts: Option<PromptsDigest>,
    /// The staged input files, in order.
    pub(super) inputs: Vec<StagedFile>,
    /// Round 0 runs the inputs; each later round retries what failed.
    pub(super) rounds: Vec<Round>,
}

/// The staged prompts: how many, and the SHA-256 of their request lines
/// in order (the lines as staged, whatever the parts).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct PromptsDigest {
    rows: u64,
    sha256: String,
}

/// The manifest's version now; version 1 (no parent, spec or prompts
/// digest) is still read.
const MANIFEST_VERSION: u32 = 2;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(super) struct StagedFile {
    pub(super) uri: String,
    rows: u64,
    bytes: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct Round {
    pub(super) parts: Vec<Part>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct Part {
    pub(super) input: String,
    pub(super) output_prefix: String,
    pub(super) rows: u64,
    request_key: String,
}

/// A batch on its way: its jobs, their progress, its results.
///
/// ```no_run
/// # async fn demo(client: vertex_batch::Client, storage: vertex_batch::storage::Storage) -> vertex_batch::Result<()> {
/// use vertex_batch::{BatchSpec, JobSpec, Prompt};
///
/// let spec = BatchSpec::new(JobSpec::new("gemini-2.0-flash-001"), "gs://my-bucket/batches")
///     .request_key("nightly-2026-11-22");
/// let prompts = (0..1000).map(|i| (format!("doc-{i}"), Prompt::text(format!("Summarise document {i}."))));
/// let batch = client.start_batch(&storage, &spec, prompts).await?;
/// println!("{} prompts staged under {}: {:?}", batch.rows(), batch.root(), batch.input_files());
/// for job in batch.jobs() {
///     println!("{} is {}", job.name(), job.state());
/// }
/// assert_eq!((batch.request_key(), batch.rounds()), ("nightly-2026-11-22", 1));
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Batch {
    pub(super) client: Client,
    /// Where it is staged (a Cloud Storage prefix or a BigQuery dataset).
    pub(super) area: Area,
    pub(super) spec: BatchSpec,
    pub(super) manifest: Manifest,
    /// The manifest's version as last read or written (the precondition
    /// of the next write), when the backend reports one.
    manifest_generation: Option<Version>,
    /// Jobs by round, latest snapshots. Shorter than the manifest's rounds
    /// while a recorded round is not fully submitted.
    pub(super) jobs: Vec<Vec<Job>>,
}

/// One look at a whole batch.
///
/// ```no_run
/// # async fn demo(mut batch: vertex_batch::data::Batch) -> vertex_batch::Result<()> {
/// use futures::StreamExt;
///
/// let mut progress = std::pin::pin!(batch.progress());
/// while let Some(p) = progress.next().await.transpose()? {
///     let states: Vec<_> = p.jobs.iter().map(|j| j.state()).collect();
///     println!("{}/{} rows succeeded, {} failed; jobs {states:?}", p.succeeded, p.rows, p.failed);
///     if p.done {
///         break;
///     }
/// }
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct BatchProgress {
    /// The latest snapshot of every job (all rounds).
    pub jobs: Vec<Job>,
    /// Rows the current round's jobs hold.
    pub rows: u64,
    /// Rows of the current round that succeeded so far.
    pub succeeded: u64,
    /// Rows of the current round that failed so far.
    pub failed: u64,
    /// Whether every job has ended.
    pub done: bool,
}

/// # Batches: prompts in, matched answers out
impl Client {
    /// Stages `prompts` and submits their jobs — or, when the batch's key
    /// was used before, finds the staged inputs and the jobs and reattaches
    /// (`prompts` are then not read).
    ///
    /// Keys are any UTF-8 (see [`crate::data::key`]); a duplicate key is an
    /// error naming it, raised before any job is submitted.
    ///
    /// ```no_run
    /// # async fn demo(client: vertex_batch::Client, storage: vertex_batch::storage::Storage) -> vertex_batch::Result<()> {
    /// use vertex_batch::{BatchSpec, JobSpec};
    ///
    /// let spec = BatchSpec::new(JobSpec::new("gemini-2.0-flash-001"), "gs://my-bucket/batches")
    ///     .request_key("nightly-2026-11-22");
    /// let prompts = [("q1", "Why is the sky blue?"), ("q2", "Name three rivers.")];
    /// // After a crash, the same call reattaches: no second upload, no second job.
    /// let mut batch = client.start_batch(&storage, &spec, prompts).await?;
    /// batch.wait().await?;
    /// let results = batch.results().await?;
    /// # Ok(()) }
    /// ```
    pub async fn start_batch<I, K, R>(
        &self,
        staging: &impl StagingClient,
        spec: &BatchSpec,
        prompts: I,
    ) -> Result<Batch>
    where
        I: IntoIterator<Item = (K, R)>,
        K: AsRef<str>,
        R: Into<BatchRequest>,
    {
        let (key, area, fingerprint) = self.batch_frame(staging, spec)?;
        let root = area.root();
        let (manifest, generation) = match read_manifest(&area).await? {
            Some((m, generation)) => {
                check_resume(&m, &key, &root, self, &fingerprint)?;
                if let Some(staged) = &m.prompts {
                    let given = digest_prompts(spec, prompts)?;
                    if &given != staged {
                        return Err(other_prompts(&key, &root, staged, &given));
                    }
                }
                tracing::info!(key, "batch already staged; resuming");
                spec.emit(BatchEvent::Resumed);
                (m, generation)
            }
            None => {
                area.check_location(self.parent().location()).await?;
                let (inputs, digest) = stage(&area, spec, prompts).await?;
                let parts = inputs
                    .iter()
                    .enumerate()
                    .map(|(i, f)| {
                        Ok(Part {
                            input: f.uri.clone(),
                            output_prefix: area.output(&format!("output/r0-p{i:05}"))?,
                            rows: f.rows,
                            request_key: format!("{key}-r0-p{i}"),
                        })
                    })
                    .collect::<Result<Vec<_>>>()?;
                let m = Manifest {
                    version: MANIFEST_VERSION,
                    request_key: key.clone(),
                    parent: Some(self.parent().to_string()),
                    spec: Some(fingerprint.clone()),
                    prompts: Some(digest),
                    inputs,
                    rounds: vec![Round { parts }],
                };
                // Create-only: of two processes starting the same batch at
                // once, one manifest wins and both follow it. Storage that
                // ignores the precondition lets both writes through; both
                // then read back the one that stayed (the same batch: the
                // same prompts give the same manifest).
                let json = serde_json::to_vec_pretty(&m)
                    .map_err(|e| Error::config(format!("writing the batch manifest: {e}")))?;
                let created = area.create_doc(MANIFEST, json).await?;
                if created.is_none() {
                    tracing::info!(key, "another process staged this batch first; following it");
                }
                let (stored, generation) =
                    read_manifest(&area).await?.ok_or_else(|| Error::Storage {
                        message: format!(
                            "{} vanished after it was written",
                            area.doc_name(MANIFEST)
                        ),
                        http_status: None,
                        source: None,
                    })?;
                if stored.inputs != m.inputs {
                    // Another process's manifest won: its staged files are
                    // the batch's, ours are nobody's.
                    for f in &m.inputs {
                        area.remove(&f.uri).await;
                    }
                }
                check_resume(&stored, &key, &root, self, &fingerprint)?;
                if let (Some(theirs), Some(ours)) = (&stored.prompts, &m.prompts) {
                    if theirs != ours {
                        return Err(other_prompts(&key, &root, theirs, ours));
                    }
                }
                spec.emit(BatchEvent::ManifestWritten);
                (stored, generation)
            }
        };
        self.attach(area, spec, manifest, generation).await
    }

    /// Resumes the batch staged under `spec`'s request key, without its
    /// prompts: the manifest tells what was staged, and the jobs already
    /// submitted are found by their request keys (parts never submitted
    /// are submitted now). An error when no batch was staged with that key.
    ///
    /// ```no_run
    /// # async fn demo(client: vertex_batch::Client, storage: vertex_batch::storage::Storage) -> vertex_batch::Result<()> {
    /// use vertex_batch::{BatchSpec, JobSpec};
    ///
    /// let spec = BatchSpec::new(JobSpec::new("gemini-2.0-flash-001"), "gs://my-bucket/batches")
    ///     .request_key("nightly-2026-11-22");
    /// let mut batch = client.resume_batch(&storage, &spec).await?;
    /// batch.wait().await?;
    /// # Ok(()) }
    /// ```
    pub async fn resume_batch(
        &self,
        staging: &impl StagingClient,
        spec: &BatchSpec,
    ) -> Result<Batch> {
        let Some(given) = &spec.request_key else {
            return Err(Error::validation(
                "request_key",
                "resuming a batch needs the request key it was started with",
            ));
        };
        let (key, area, fingerprint) = self.batch_frame(staging, spec)?;
        let root = area.root();
        let (manifest, generation) = read_manifest(&area).await?.ok_or_else(|| {
            Error::validation(
                "request_key",
                format!(
                    "no batch {given:?} is staged under {root} (no {})",
                    area.doc_name(MANIFEST)
                ),
            )
        })?;
        check_resume(&manifest, &key, &root, self, &fingerprint)?;
        spec.emit(BatchEvent::Resumed);
        self.attach(area, spec, manifest, generation).await
    }

    /// The jobs of the batch staged under `spec`'s request key, submitting
    /// none: every job carrying one of its parts' request keys and writing
    /// to that part's output (a batch staged elsewhere under the same key
    /// has jobs of its own, left out), all rounds,
    /// in any state (a part never submitted has none). Empty when no batch
    /// is staged under the key. For cancelling what a start that was
    /// stopped part way made.
    ///
    /// ```no_run
    /// # async fn demo(client: vertex_batch::Client, storage: vertex_batch::storage::Storage) -> vertex_batch::Result<()> {
    /// use vertex_batch::{BatchSpec, JobSpec};
    ///
    /// let spec = BatchSpec::new(JobSpec::new("gemini-2.0-flash-001"), "gs://my-bucket/batches")
    ///     .request_key("nightly-2026-11-22");
    /// for job in client.find_batch_jobs(&storage, &spec).await? {
    ///     if !job.has_ended() {
    ///         client.cancel(&job).await?;
    ///     }
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn find_batch_jobs(
        &self,
        staging: &impl StagingClient,
        spec: &BatchSpec,
    ) -> Result<Vec<Job>> {
        if spec.request_key.is_none() {
            return Err(Error::validation(
                "request_key",
                "finding a batch's jobs needs the request key it was started with",
            ));
        }
        let (key, area, fingerprint) = self.batch_frame(staging, spec)?;
        let Some((manifest, _)) = read_manifest(&area).await? else {
            return Ok(Vec::new());
        };
        check_resume(&manifest, &key, &area.root(), self, &fingerprint)?;
        let mut jobs = Vec::new();
        for part in manifest.rounds.iter().flat_map(|r| &r.parts) {
            let opts = ListOptions::new().label(REQUEST_KEY_LABEL, &part.request_key);
            let found: Vec<Job> = self.list(&opts).try_collect().await?;
            // Only the jobs writing to the part's own output are this
            // batch's: a batch staged elsewhere under the same key has
            // its own, which are never to be cancelled from here.
            jobs.extend(
                found
                    .into_iter()
                    .filter(|j| writes_to(j, &part.output_prefix)),
            );
        }
        Ok(jobs)
    }

    /// The batch recorded by `manifest` (at `generation`) under `root`,
    /// with every recorded part's job found or submitted.
    async fn attach(
        &self,
        area: Area,
        spec: &BatchSpec,
        manifest: Manifest,
        generation: Option<Version>,
    ) -> Result<Batch> {
        let mut batch = Batch {
            client: self.clone(),
            area,
            spec: spec.clone(),
            manifest,
            manifest_generation: generation,
            jobs: Vec::new(),
        };
        batch.submit_pending().await?;
        Ok(batch)
    }

    /// The batch's key, root, manifest and template fingerprint — the
    /// template checked as a part's job would be (everything but its
    /// input, output and request key), before anything is staged.
    fn batch_frame(
        &self,
        staging: &impl StagingClient,
        spec: &BatchSpec,
    ) -> Result<(String, Area, String)> {
        let key = spec.key()?;
        if spec.job.has_input() {
            return Err(Error::validation(
                "input_uri",
                "a batch's job template must not name an input: the batch stages the prompts \
                 and gives each part's job its own input file (remove .input(…) from the template)",
            ));
        }
        if spec.job.has_output() {
            return Err(Error::validation(
                "output_uri",
                "a batch's job template must not name an output: each part's job writes under \
                 STAGING/KEY/output/ (remove .output(…) from the template)",
            ));
        }
        let template = spec
            .job
            .clone()
            .input(TEMPLATE_INPUT)
            .output(TEMPLATE_OUTPUT)
            .request_key(format!("{key}-r0-p0"));
        let (_, fingerprint) = crate::client::prepare(&template, self.parent())?;
        let area = Area::new(staging.backend(), &spec.staging, &key)?;
        Ok((key, area, fingerprint))
    }

    /// The whole trip: [`Client::start_batch`], wait for every job, and
    /// read the results joined to the prompts. Safe to run again with the
    /// same key after a crash.
    ///
    /// ```no_run
    /// # async fn demo(client: vertex_batch::Client, storage: vertex_batch::storage::Storage) -> vertex_batch::Result<()> {
    /// use vertex_batch::{BatchSpec, JobSpec};
    ///
    /// let spec = BatchSpec::new(JobSpec::new("gemini-2.0-flash-001"), "gs://my-bucket/batches");
    /// let prompts = [("q1", "Why is the sky blue?"), ("q2", "Name three rivers.")];
    /// let (batch, results) = client.run_batch(&storage, &spec, prompts).await?;
    /// let (rows, errors, totals) = results.collect_all().await;
    /// println!("{} rows ({} unreadable lines) from {} jobs", totals.rows(), errors.len(), batch.jobs().len());
    /// # Ok(()) }
    /// ```
    pub async fn run_batch<I, K, R>(
        &self,
        staging: &impl StagingClient,
        spec: &BatchSpec,
        prompts: I,
    ) -> Result<(Batch, ResultStream)>
    where
        I: IntoIterator<Item = (K, R)>,
        K: AsRef<str>,
        R: Into<BatchRequest>,
    {
        let mut batch = self.start_batch(staging, spec, prompts).await?;
        batch.wait().await?;
        let results = batch.results().await?;
        Ok((batch, results))
    }
}

/// Streams the prompts into part files under `root/input/ATTEMPT/` (a
/// random directory of this attempt's own), and digests them.
async fn stage<I, K, R>(
    area: &Area,
    spec: &BatchSpec,
    prompts: I,
) -> Result<(Vec<StagedFile>, PromptsDigest)>
where
    I: IntoIterator<Item = (K, R)>,
    K: AsRef<str>,
    R: Into<BatchRequest>,
{
    let mut enc = spec.encoder()?;
    let mut digest = ring::digest::Context::new(&ring::digest::SHA256);
    let mut line = Vec::with_capacity(4096);
    let mut current: Option<(usize, PartWriter)> = None;
    let mut done = Vec::new();
    let attempt = format!("{:016x}", fastrand::u64(..));
    for (key, request) in prompts {
        line.clear();
        let part = enc.encode(key.as_ref(), request, &mut line)?;
        digest.update(&line);
        if current.as_ref().map(|(p, _)| *p) != Some(part) {
            if let Some((p, w)) = current.take() {
                done.push(w.finish().await?);
                spec.emit(BatchEvent::Staged {
                    part: p,
                    rows: enc.parts()[p].rows,
                });
            }
            let target = area.part(&format!("input/{attempt}/part-{part:05}.jsonl"))?;
            current = Some((part, area.writer(&target, enc.family()).await?));
        }
        if let Some((_, w)) = current.as_mut() {
            w.write(&line).await?;
        }
    }
    if enc.is_empty() {
        return Err(Error::validation("prompts", "the batch holds no prompts"));
    }
    if let Some((p, w)) = current.take() {
        done.push(w.finish().await?);
        spec.emit(BatchEvent::Staged {
            part: p,
            rows: enc.parts()[p].rows,
        });
    }
    let files = done
        .iter()
        .zip(enc.parts())
        .map(|(o, p)| StagedFile {
            uri: o.clone(),
            rows: p.rows,
            bytes: p.bytes,
        })
        .collect();
    Ok((files, finish_digest(enc.rows(), digest)))
}

/// The digest [`stage`] would record for `prompts`, without uploading.
fn digest_prompts<I, K, R>(spec: &BatchSpec, prompts: I) -> Result<PromptsDigest>
where
    I: IntoIterator<Item = (K, R)>,
    K: AsRef<str>,
    R: Into<BatchRequest>,
{
    let mut enc = spec.encoder()?;
    let mut digest = ring::digest::Context::new(&ring::digest::SHA256);
    let mut line = Vec::with_capacity(4096);
    for (key, request) in prompts {
        line.clear();
        enc.encode(key.as_ref(), request, &mut line)?;
        digest.update(&line);
    }
    Ok(finish_digest(enc.rows(), digest))
}

fn finish_digest(rows: u64, digest: ring::digest::Context) -> PromptsDigest {
    let sha256 = digest
        .finish()
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    PromptsDigest { rows, sha256 }
}

/// Placeholders for a part's input and output while the template is
/// checked and fingerprinted (every part's are set when it is submitted).
const TEMPLATE_INPUT: &str = "gs://vertex-batch-template/input.jsonl";
const TEMPLATE_OUTPUT: &str = "gs://vertex-batch-template/output";

/// An error unless the staged batch `m` can be resumed by `client` with
/// the template of `fingerprint`. Errors name the batch's key — the one
/// the caller gave — and say how to resume, never to start over.
fn check_resume(
    m: &Manifest,
    key: &str,
    root: &str,
    client: &Client,
    fingerprint: &str,
) -> Result<()> {
    if m.request_key != key {
        return Err(Error::Output {
            file: format!("{root}: {MANIFEST}"),
            line: 1,
            message: format!("the manifest is for batch {:?}, not {key:?}", m.request_key),
        });
    }
    let here = client.parent().to_string();
    if let Some(there) = m.parent.as_deref().filter(|p| *p != here) {
        return Err(Error::validation(
            "location",
            format!(
                "batch {key:?} under {root} runs its jobs in {there}, and this client is for \
                 {here}: resume it with a client for {there}"
            ),
        ));
    }
    if let Some(theirs) = m.spec.as_deref().filter(|s| *s != fingerprint) {
        return Err(Error::validation(
            "request_key",
            format!(
                "batch {key:?} under {root} was started with another job spec (spec {theirs}, \
                 this one {fingerprint}: the model, parameters, labels, display name, service \
                 account or encryption key differ); resume it with the spec it was started with"
            ),
        ));
    }
    Ok(())
}

fn other_prompts(key: &str, root: &str, staged: &PromptsDigest, given: &PromptsDigest) -> Error {
    let what = if staged.rows == given.rows {
        format!("{} prompts, but not the same ones", given.rows)
    } else {
        format!("{} prompts, not {}", given.rows, staged.rows)
    };
    Error::validation(
        "prompts",
        format!(
            "batch {key:?} under {root} was staged from other prompts: these are {what}. \
             Resume it with the prompts it was staged from (or with Client::resume_batch); \
             new prompts need a new request key"
        ),
    )
}

/// The batch's manifest document.
const MANIFEST: &str = "manifest.json";

/// The manifest and its version, or `None` when there is none.
async fn read_manifest(area: &Area) -> Result<Option<(Manifest, Option<Version>)>> {
    let Some((bytes, version)) = area.read_doc(MANIFEST).await? else {
        return Ok(None);
    };
    let at = area.doc_name(MANIFEST);
    let m: Manifest = serde_json::from_slice(&bytes).map_err(|e| Error::Output {
        file: at.clone(),
        line: 1,
        message: format!("not a batch manifest: {e}"),
    })?;
    if !(1..=MANIFEST_VERSION).contains(&m.version) || m.rounds.is_empty() {
        return Err(Error::Output {
            file: at,
            line: 1,
            message: format!("unsupported batch manifest (version {})", m.version),
        });
    }
    Ok(Some((m, version)))
}

/// Writes `m` over the manifest at `version` (the one last read), and
/// returns the new version. An error when another process wrote the
/// manifest since: the caller reads it again. Without a known version the
/// write is unconditional.
async fn write_manifest(
    area: &Area,
    m: &Manifest,
    version: Option<&Version>,
) -> Result<Option<Version>> {
    let json = serde_json::to_vec_pretty(m)
        .map_err(|e| Error::config(format!("writing the batch manifest: {e}")))?;
    let written = match version {
        Some(v) => area.replace_doc(MANIFEST, json, v).await?,
        None => Some(area.put_doc(MANIFEST, json).await?),
    };
    match written {
        Some(version) => Ok(version),
        None => Err(Error::Storage {
            message: format!(
                "{} changed while this process was retrying the batch (another process \
                 retried it too?); nothing was submitted: start the batch again to see its rounds",
                area.doc_name(MANIFEST)
            ),
            http_status: Some(412),
            source: None,
        }),
    }
}

impl Batch {
    /// The batch's key.
    ///
    /// ```no_run
    /// # async fn demo(client: vertex_batch::Client, storage: vertex_batch::storage::Storage) -> vertex_batch::Result<()> {
    /// use vertex_batch::{BatchSpec, JobSpec};
    ///
    /// let spec = BatchSpec::new(JobSpec::new("gemini-2.0-flash-001"), "gs://my-bucket/batches").request_key("nightly");
    /// let batch = client.start_batch(&storage, &spec, [("q1", "Why is the sky blue?")]).await?;
    /// assert_eq!(batch.request_key(), "nightly");
    /// # Ok(()) }
    /// ```
    pub fn request_key(&self) -> &str {
        &self.manifest.request_key
    }

    /// Where the batch keeps its files (`STAGING/KEY`).
    ///
    /// ```no_run
    /// # async fn demo(client: vertex_batch::Client, storage: vertex_batch::storage::Storage) -> vertex_batch::Result<()> {
    /// use vertex_batch::{BatchSpec, JobSpec};
    ///
    /// let spec = BatchSpec::new(JobSpec::new("gemini-2.0-flash-001"), "gs://my-bucket/batches").request_key("nightly");
    /// let batch = client.start_batch(&storage, &spec, [("q1", "Why is the sky blue?")]).await?;
    /// assert_eq!(batch.root(), "gs://my-bucket/batches/nightly");
    /// # Ok(()) }
    /// ```
    ///
    /// A BigQuery batch's root is its dataset and its tables' prefix:
    /// `bq://PROJECT.DATASET (tables vb_KEY_H__*)`.
    pub fn root(&self) -> String {
        self.area.root()
    }

    /// The staged input files.
    ///
    /// ```no_run
    /// # async fn demo(client: vertex_batch::Client, storage: vertex_batch::storage::Storage) -> vertex_batch::Result<()> {
    /// use vertex_batch::{BatchSpec, JobSpec};
    ///
    /// let spec = BatchSpec::new(JobSpec::new("gemini-2.0-flash-001"), "gs://my-bucket/batches").request_key("nightly");
    /// let batch = client.start_batch(&storage, &spec, [("q1", "Why is the sky blue?")]).await?;
    /// for uri in batch.input_files() {
    ///     println!("{uri}"); // gs://my-bucket/batches/nightly/input/3f2a…/part-00000.jsonl
    /// }
    /// # Ok(()) }
    /// ```
    ///
    /// Empty for a BigQuery batch: see [`Batch::input_tables`].
    pub fn input_files(&self) -> Vec<GcsUri> {
        self.manifest
            .inputs
            .iter()
            .filter_map(|f| GcsUri::parse_field(&f.uri, "input").ok())
            .collect()
    }

    /// The staged input tables of a BigQuery batch (`key` STRING,
    /// `request` JSON), one per part; empty for a Cloud Storage batch.
    ///
    /// ```no_run
    /// # async fn demo(client: vertex_batch::Client, bq: vertex_batch::bigquery::BigQuery) -> vertex_batch::Result<()> {
    /// use vertex_batch::{BatchSpec, JobSpec};
    ///
    /// let spec = BatchSpec::new(JobSpec::new("gemini-2.0-flash-001"), "bq://my-project.batches").request_key("nightly");
    /// let batch = client.start_batch(&bq, &spec, [("q1", "Why is the sky blue?")]).await?;
    /// for table in batch.input_tables() {
    ///     println!("{table}"); // bq://my-project.batches.vb_nightly_…__input_…_part_00000
    /// }
    /// # Ok(()) }
    /// ```
    pub fn input_tables(&self) -> Vec<BigQueryUri> {
        self.manifest
            .inputs
            .iter()
            .filter(|f| f.uri.starts_with("bq://"))
            .filter_map(|f| BigQueryUri::parse_field(&f.uri, "input", true).ok())
            .collect()
    }

    /// Every staged input, as recorded (`gs://…` objects or `bq://…` tables).
    pub(super) fn input_targets(&self) -> Vec<String> {
        self.manifest.inputs.iter().map(|f| f.uri.clone()).collect()
    }

    /// How many prompts the batch holds.
    ///
    /// ```no_run
    /// # async fn demo(client: vertex_batch::Client, storage: vertex_batch::storage::Storage) -> vertex_batch::Result<()> {
    /// use vertex_batch::{BatchSpec, JobSpec};
    ///
    /// let spec = BatchSpec::new(JobSpec::new("gemini-2.0-flash-001"), "gs://my-bucket/batches").request_key("nightly");
    /// let batch = client.start_batch(&storage, &spec, [("q1", "Why is the sky blue?")]).await?;
    /// assert_eq!(batch.rows(), 1);
    /// # Ok(()) }
    /// ```
    pub fn rows(&self) -> u64 {
        self.manifest.inputs.iter().map(|f| f.rows).sum()
    }

    /// The latest snapshot of every job, all rounds, oldest round first.
    ///
    /// ```no_run
    /// # async fn demo(client: vertex_batch::Client, storage: vertex_batch::storage::Storage) -> vertex_batch::Result<()> {
    /// use vertex_batch::{BatchSpec, JobSpec};
    ///
    /// let spec = BatchSpec::new(JobSpec::new("gemini-2.0-flash-001"), "gs://my-bucket/batches").request_key("nightly");
    /// let batch = client.start_batch(&storage, &spec, [("q1", "Why is the sky blue?")]).await?;
    /// for job in batch.jobs() {
    ///     println!("{:?}", job.state());
    /// }
    /// # Ok(()) }
    /// ```
    pub fn jobs(&self) -> Vec<Job> {
        self.jobs.iter().flatten().cloned().collect()
    }

    /// How many rounds ran (1 + follow-ups from [`Batch::retry_failed`]).
    ///
    /// ```no_run
    /// # async fn demo(mut batch: vertex_batch::data::Batch) -> vertex_batch::Result<()> {
    /// assert_eq!(batch.rounds(), 1);
    /// batch.wait().await?;
    /// if batch.retry_failed().await? > 0 {
    ///     assert_eq!(batch.rounds(), 2); // a follow-up round for the failed and missing rows
    /// }
    /// # Ok(()) }
    /// ```
    pub fn rounds(&self) -> usize {
        self.manifest.rounds.len()
    }

    /// Submits every round the manifest records and this batch has no jobs
    /// for yet — all of them when resuming, a follow-up round recorded by
    /// a [`Batch::retry_failed`] that did not get to submit it.
    pub(super) async fn submit_pending(&mut self) -> Result<()> {
        while self.jobs.len() < self.manifest.rounds.len() {
            let r = self.jobs.len();
            let mut jobs = Vec::with_capacity(self.manifest.rounds[r].parts.len());
            for i in 0..self.manifest.rounds[r].parts.len() {
                jobs.push(self.submit_part(r, i).await?);
            }
            self.jobs.push(jobs);
            // A job another process created at the same time may become
            // visible only after this one's look-up, and be older: look
            // again once the whole round is out, and follow the winner.
            // (A look-up that fails changes nothing: `wait` settles again.)
            if let Err(error) = self.settle(r, false).await {
                tracing::warn!(%error, "could not look at the round's jobs again");
            }
        }
        Ok(())
    }

    /// Makes each part of round `r` follow its part's winner (the oldest
    /// job carrying the part's key and writing to its output) — every
    /// part, or (`cancelled_only`) those whose job ended cancelled.
    /// Returns whether any part moved to another job.
    async fn settle(&mut self, r: usize, cancelled_only: bool) -> Result<bool> {
        let mut moved = false;
        for i in 0..self.jobs[r].len() {
            if cancelled_only && self.jobs[r][i].state() != crate::job::JobState::Cancelled {
                continue;
            }
            let part = &self.manifest.rounds[r].parts[i];
            let winner = settled_job(&self.client, &part.request_key, &part.output_prefix).await?;
            if let Some(w) = winner.filter(|w| w.name() != self.jobs[r][i].name()) {
                tracing::info!(
                    key = part.request_key,
                    from = self.jobs[r][i].name(),
                    to = w.name(),
                    "another process's job for this part is older; following it"
                );
                self.jobs[r][i] = w;
                moved = true;
            }
        }
        Ok(moved)
    }

    /// Part `i` of round `r`'s one job: found by its request key, or
    /// created under a claim (see the module docs).
    async fn submit_part(&self, r: usize, i: usize) -> Result<Job> {
        let part = &self.manifest.rounds[r].parts[i];
        let spec = self
            .spec
            .job
            .clone()
            .input(&part.input)
            .output(&part.output_prefix)
            .request_key(&part.request_key);
        let claim = format!("claims/r{r}-p{i:05}.json");
        let job = submit_once(
            &self.client,
            &self.area,
            PartClaim {
                spec: &spec,
                key: &part.request_key,
                output: &part.output_prefix,
                claim: &claim,
                lease: self.spec.claim_lease,
                batch_key: &self.manifest.request_key,
            },
            |step| {
                self.spec.emit(match step {
                    Step::Claimed => BatchEvent::Claimed { round: r, part: i },
                    Step::Waiting => BatchEvent::WaitingForClaim { round: r, part: i },
                    Step::TookOver => BatchEvent::TookOverClaim { round: r, part: i },
                })
            },
        )
        .await?;
        self.spec.emit(BatchEvent::Submitted {
            round: r,
            part: i,
            job: job.name().to_owned(),
        });
        Ok(job)
    }

    /// Follows every job: one [`BatchProgress`] per change, the last one
    /// with `done` set. Also keeps this batch's snapshots current.
    ///
    /// ```no_run
    /// # async fn demo(mut batch: vertex_batch::data::Batch) -> vertex_batch::Result<()> {
    /// use futures::StreamExt;
    ///
    /// {
    ///     let mut progress = std::pin::pin!(batch.progress());
    ///     while let Some(p) = progress.next().await {
    ///         let p = p?;
    ///         eprintln!("{}/{} rows done", p.succeeded + p.failed, p.rows);
    ///     }
    /// }
    /// // Every job has ended, and `batch.jobs()` holds their final snapshots.
    /// let results = batch.results().await?;
    /// # Ok(()) }
    /// ```
    pub fn progress(&mut self) -> impl Stream<Item = Result<BatchProgress>> + '_ {
        let names: Vec<String> = self.jobs().iter().map(|j| j.name().to_owned()).collect();
        let updates = self.client.watch_many(names.clone(), &self.spec.watch);
        let current = self.manifest.rounds.len() - 1;
        let rows: u64 = self.manifest.rounds[current]
            .parts
            .iter()
            .map(|p| p.rows)
            .sum();
        futures::stream::unfold(
            (Box::pin(updates), self, false),
            move |(mut updates, batch, finished)| async move {
                if finished {
                    return None;
                }
                // Each job's stream ends with its terminal snapshot, so the
                // last update already has `done` set.
                let (name, job) = updates.next().await?;
                match job {
                    Err(e) => Some((Err(e), (updates, batch, true))),
                    Ok(job) => {
                        for j in batch.jobs.iter_mut().flatten() {
                            if j.name() == name {
                                *j = job.clone();
                            }
                        }
                        let p = batch.snapshot(rows);
                        Some((Ok(p), (updates, batch, false)))
                    }
                }
            },
        )
    }

    fn snapshot(&self, rows: u64) -> BatchProgress {
        let current = self.jobs.last().map(Vec::as_slice).unwrap_or_default();
        let (succeeded, failed) = current.iter().fold((0u64, 0u64), |(s, f), j| {
            let c = j.completion_stats();
            (s.saturating_add(c.successful), f.saturating_add(c.failed))
        });
        let all = self.jobs();
        BatchProgress {
            done: all.iter().all(Job::has_ended),
            jobs: all,
            rows,
            succeeded,
            failed,
        }
    }

    /// Waits until every job has ended (in any state: a failed job's rows
    /// come back as failed or missing in [`Batch::results`]).
    ///
    /// ```no_run
    /// # async fn demo(mut batch: vertex_batch::data::Batch) -> vertex_batch::Result<()> {
    /// batch.wait().await?; // every job has ended, whichever way
    /// let unsuccessful = batch.jobs().iter().filter(|j| !j.state().is_success()).count();
    /// println!("{unsuccessful} of {} jobs did not succeed", batch.jobs().len());
    /// # Ok(()) }
    /// ```
    pub async fn wait(&mut self) -> Result<()> {
        loop {
            let mut progress = Box::pin(self.progress());
            while let Some(p) = progress.next().await {
                p?;
            }
            drop(progress);
            if !self.follow_winners().await? {
                return Ok(());
            }
        }
    }

    /// Makes every part whose job was cancelled as another process's
    /// duplicate follow the part's winner (the oldest job writing to the
    /// part's output) instead; returns whether any did — then follow the
    /// batch again ([`Batch::progress`]). A part whose every job was
    /// cancelled stays as it is. [`Batch::wait`] does this itself.
    ///
    /// ```no_run
    /// # async fn demo(mut batch: vertex_batch::data::Batch) -> vertex_batch::Result<()> {
    /// use futures::StreamExt;
    ///
    /// loop {
    ///     let mut progress = Box::pin(batch.progress());
    ///     while let Some(p) = progress.next().await {
    ///         println!("{} rows succeeded", p?.succeeded);
    ///     }
    ///     drop(progress);
    ///     if !batch.follow_winners().await? {
    ///         break; // every part's job has ended, and it is the winner
    ///     }
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn follow_winners(&mut self) -> Result<bool> {
        let mut moved = false;
        for r in 0..self.jobs.len() {
            moved |= self.settle(r, true).await?;
        }
        Ok(moved)
    }

    /// Every prompt's result, read from the jobs' output directories
    /// (newest round first: the latest outcome per key wins) and joined to
    /// the staged inputs.
    ///
    /// ```no_run
    /// # async fn demo(mut batch: vertex_batch::data::Batch) -> vertex_batch::Result<()> {
    /// use futures::StreamExt;
    /// use vertex_batch::Outcome;
    ///
    /// batch.wait().await?;
    /// let mut results = batch.results().await?;
    /// while let Some(row) = results.next().await {
    ///     let row = row?;
    ///     if let Outcome::Succeeded(answer) = row.outcome() {
    ///         println!("{}: {}", row.key().unwrap_or("?"), answer.text());
    ///     }
    /// }
    /// assert_eq!(results.totals().rows(), batch.rows()); // every prompt once
    /// # Ok(()) }
    /// ```
    pub async fn results(&self) -> Result<ResultStream> {
        let mut reader = self
            .area
            .reader()
            .options(self.spec.read.clone())
            .inputs(self.area.inputs(&self.input_targets())?);
        for (round, parts) in self.jobs.iter().zip(&self.manifest.rounds).rev() {
            for (job, part) in round.iter().zip(&parts.parts) {
                reader = self.area.add_output(reader, job, &part.output_prefix)?;
            }
        }
        reader.read().await
    }

    /// Resubmits the rows that failed or never came back, as a new round
    /// of jobs (keys and requests byte-exact from the inputs). Returns how
    /// many rows were resubmitted (0: nothing to retry, no job made).
    /// Blocked prompts are not retried.
    ///
    /// The round is recorded in the manifest first (its files staged
    /// before), and submitted second: when the submit fails or the
    /// process dies in between, the next `retry_failed` — or the next
    /// [`Client::start_batch`] with the batch's key — submits that round's
    /// missing jobs instead of making another round, and returns its rows.
    ///
    /// ```no_run
    /// # async fn demo(mut batch: vertex_batch::data::Batch) -> vertex_batch::Result<()> {
    /// batch.wait().await?;
    /// // Up to two follow-up rounds, while rows keep failing.
    /// while batch.rounds() < 3 && batch.retry_failed().await? > 0 {
    ///     batch.wait().await?;
    /// }
    /// let (_rows, _errors, totals) = batch.results().await?.collect_all().await; // latest outcome per key
    /// println!("{} rows still failed after {} rounds", totals.failed + totals.missing, batch.rounds());
    /// # Ok(()) }
    /// ```
    pub async fn retry_failed(&mut self) -> Result<u64> {
        if self.jobs.len() < self.manifest.rounds.len() {
            let pending = self.rows_from(self.jobs.len());
            self.submit_pending().await?;
            return Ok(pending);
        }
        if let Some(j) = self.jobs().iter().find(|j| !j.has_ended()) {
            if matches!(self.area, Area::Bq { .. }) {
                // A table is read whole: only once the batch is over.
                return Err(Error::validation(
                    "batch",
                    format!(
                        "job {} is still {}; a batch staged in BigQuery is retried once it is over",
                        j.name(),
                        j.state()
                    ),
                ));
            }
            // Running: what failed for a passing cause so far goes now.
            return self.retry_early().await;
        }
        let mut retry = FingerprintSet::default();
        let mut results = self.results().await?;
        while let Some(row) = results.next().await {
            let row = match row {
                Ok(row) => row,
                // An unreadable output line: its input comes back missing
                // anyway, and is retried as such.
                Err(Error::Output { .. }) => continue,
                Err(e) => return Err(e),
            };
            if row.outcome().needs_retry() {
                if let Some(k) = row.key() {
                    retry.insert(fingerprint(k));
                }
            }
        }
        self.stage_round(retry).await
    }

    /// Records and submits a new round of the input rows whose keys'
    /// fingerprints are in `retry` (nothing when it is empty). Returns the
    /// rows of the round (or of another process's round, when one was
    /// recorded first).
    pub(super) async fn stage_round(&mut self, retry: FingerprintSet) -> Result<u64> {
        if retry.is_empty() {
            return Ok(0);
        }
        let family = crate::family::Family::of_model(self.spec.job.model())?;
        let r = self.manifest.rounds.len();
        let key = self.manifest.request_key.clone();
        let mut parts = Vec::new();
        let retry = std::sync::Arc::new(retry);
        // A directory of this attempt's own, as for the first stage: a
        // process a moment behind, retrying the same round, never writes
        // over the files of the round another process recorded.
        let attempt = format!("{:016x}", fastrand::u64(..));
        let mut staged = Vec::new();
        for (i, file) in self.manifest.inputs.iter().enumerate() {
            let keep = retry.clone();
            let mut lines = Box::pin(parse_lines(
                vec![self.area.source(&file.uri)?],
                self.spec.read.clone(),
                move |raw| {
                    let line = std::str::from_utf8(&raw).map_err(|e| e.to_string())?;
                    let k = crate::data::input::line_key(line)?;
                    Ok(keep.contains(fingerprint(&k)).then_some(raw))
                },
            ));
            let target = self
                .area
                .part(&format!("input/{attempt}/retry-r{r}-p{i:05}.jsonl"))?;
            let mut writer: Option<PartWriter> = None;
            let mut rows = 0u64;
            while let Some(line) = lines.next().await {
                if let Some(raw) = line? {
                    if writer.is_none() {
                        writer = Some(self.area.writer(&target, family).await?);
                    }
                    if let Some(w) = writer.as_mut() {
                        w.write(&raw).await?;
                        w.write(b"\n").await?;
                    }
                    rows += 1;
                }
            }
            if let Some(w) = writer {
                w.finish().await?;
                staged.push(target.clone());
                parts.push(Part {
                    input: target.clone(),
                    output_prefix: self.area.output(&format!("output/r{r}-p{i:05}"))?,
                    rows,
                    request_key: format!("{key}-r{r}-p{i}"),
                });
            }
        }
        let total = parts.iter().map(|p| p.rows).sum();
        let mut next = self.manifest.clone();
        next.rounds.push(Round { parts });
        // The truth first: the round is in the manifest before any of its
        // jobs exists.
        match write_manifest(&self.area, &next, self.manifest_generation.as_ref()).await {
            Ok(generation) => {
                self.manifest = next;
                self.manifest_generation = generation;
            }
            Err(e) => {
                // Another process recorded a round first: take its rounds
                // (the files staged here are nobody's).
                match read_manifest(&self.area).await? {
                    Some((theirs, generation))
                        if theirs.rounds.len() > self.manifest.rounds.len() =>
                    {
                        for t in &staged {
                            self.area.remove(t).await;
                        }
                        self.manifest = theirs;
                        self.manifest_generation = generation;
                        let pending = self.rows_from(self.jobs.len());
                        self.submit_pending().await?;
                        return Ok(pending);
                    }
                    _ => return Err(e),
                }
            }
        }
        self.spec.emit(BatchEvent::RoundRecorded {
            round: r,
            rows: total,
        });
        self.submit_pending().await?;
        Ok(total)
    }

    /// The rows of rounds `from` on.
    fn rows_from(&self, from: usize) -> u64 {
        self.manifest.rounds[from..]
            .iter()
            .flat_map(|r| &r.parts)
            .map(|p| p.rows)
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_split_on_the_family_limits_unless_told() {
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
