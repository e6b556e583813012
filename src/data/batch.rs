//! The whole trip: prompts in, matched answers out — [`BatchSpec`],
//! [`Client::start_batch`], [`Batch`] and [`Client::run_batch`].
//!
//! # What happens
//!
//! 1. **Stage.** The prompts stream through the [`InputEncoder`] into
//!    resumable uploads under `STAGING/KEY/input/part-NNNNN.jsonl`, one part
//!    per job when the input is over the service's limits (200,000 rows,
//!    1 GB a file). Then `STAGING/KEY/manifest.json` records the parts.
//! 2. **Submit.** One job per part through [`Client::submit`], each with
//!    its own request key (`KEY-r0-pN`), so no part is ever submitted twice.
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
//! have ended, their results are read as they are.

use futures::{Stream, StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};

use super::{
    fingerprint::{fingerprint, FingerprintSet},
    input::{BatchRequest, InputEncoder, InputLimits},
    join::Inputs,
    read::ResultReader,
    reader::{parse_lines, ReadOptions, ResultStream, SourceFile},
};
use crate::{
    client::{Client, WatchManyOptions},
    error::{Error, Result},
    job::Job,
    spec::JobSpec,
    storage::{ObjectWriter, Storage},
    uri::GcsUri,
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
    limits: InputLimits,
    watch: WatchManyOptions,
    read: ReadOptions,
}

impl BatchSpec {
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
        BatchSpec {
            job,
            staging: staging.into(),
            request_key: None,
            limits: InputLimits::default(),
            watch: WatchManyOptions::default(),
            read: ReadOptions::default(),
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
    pub fn limits(mut self, limits: InputLimits) -> Self {
        self.limits = limits;
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
        self.read = opts;
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
struct Manifest {
    version: u32,
    request_key: String,
    /// The staged input files, in order.
    inputs: Vec<StagedFile>,
    /// Round 0 runs the inputs; each later round retries what failed.
    rounds: Vec<Round>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct StagedFile {
    uri: String,
    rows: u64,
    bytes: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Round {
    parts: Vec<Part>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Part {
    input: String,
    output_prefix: String,
    rows: u64,
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
    client: Client,
    storage: Storage,
    spec: BatchSpec,
    root: GcsUri,
    manifest: Manifest,
    /// Jobs by round, latest snapshots.
    jobs: Vec<Vec<Job>>,
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

fn uri(s: &str, field: &str) -> Result<GcsUri> {
    Ok(GcsUri::parse_field(s, field)?)
}

fn child(root: &GcsUri, rel: &str) -> Result<GcsUri> {
    uri(
        &format!("{}/{rel}", root.to_string().trim_end_matches('/')),
        "staging",
    )
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
        storage: &Storage,
        spec: &BatchSpec,
        prompts: I,
    ) -> Result<Batch>
    where
        I: IntoIterator<Item = (K, R)>,
        K: AsRef<str>,
        R: Into<BatchRequest>,
    {
        let key = spec.key()?;
        let staging = uri(&spec.staging, "staging")?;
        let root = child(&staging, &key)?;
        let manifest_uri = child(&root, "manifest.json")?;
        let manifest = match read_manifest(storage, &manifest_uri).await? {
            Some(m) => {
                tracing::info!(key, "batch already staged; reattaching");
                m
            }
            None => {
                let inputs = stage(storage, &root, spec.limits, prompts).await?;
                let parts = inputs
                    .iter()
                    .enumerate()
                    .map(|(i, f)| {
                        Ok(Part {
                            input: f.uri.clone(),
                            output_prefix: child(&root, &format!("output/r0-p{i:05}"))?.to_string(),
                            rows: f.rows,
                            request_key: format!("{key}-r0-p{i}"),
                        })
                    })
                    .collect::<Result<Vec<_>>>()?;
                let m = Manifest {
                    version: 1,
                    request_key: key.clone(),
                    inputs,
                    rounds: vec![Round { parts }],
                };
                // Create-only: of two processes starting the same batch at
                // once, one manifest wins and both follow it.
                let json = serde_json::to_vec_pretty(&m)
                    .map_err(|e| Error::config(format!("writing the batch manifest: {e}")))?;
                match storage.create_bytes(&manifest_uri, json).await? {
                    Some(_) => m,
                    None => {
                        tracing::info!(
                            key,
                            "another process staged this batch first; following it"
                        );
                        read_manifest(storage, &manifest_uri)
                            .await?
                            .ok_or_else(|| Error::Storage {
                                message: format!("{manifest_uri} vanished after it was created"),
                                http_status: None,
                                source: None,
                            })?
                    }
                }
            }
        };
        let mut batch = Batch {
            client: self.clone(),
            storage: storage.clone(),
            spec: spec.clone(),
            root,
            manifest,
            jobs: Vec::new(),
        };
        for r in 0..batch.manifest.rounds.len() {
            let jobs = batch.submit_round(r).await?;
            batch.jobs.push(jobs);
        }
        Ok(batch)
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
        storage: &Storage,
        spec: &BatchSpec,
        prompts: I,
    ) -> Result<(Batch, ResultStream)>
    where
        I: IntoIterator<Item = (K, R)>,
        K: AsRef<str>,
        R: Into<BatchRequest>,
    {
        let mut batch = self.start_batch(storage, spec, prompts).await?;
        batch.wait().await?;
        let results = batch.results().await?;
        Ok((batch, results))
    }
}

/// Streams the prompts into part files under `root/input/`.
async fn stage<I, K, R>(
    storage: &Storage,
    root: &GcsUri,
    limits: InputLimits,
    prompts: I,
) -> Result<Vec<StagedFile>>
where
    I: IntoIterator<Item = (K, R)>,
    K: AsRef<str>,
    R: Into<BatchRequest>,
{
    let mut enc = InputEncoder::new(limits);
    let mut line = Vec::with_capacity(4096);
    let mut current: Option<(usize, ObjectWriter)> = None;
    let mut done = Vec::new();
    for (key, request) in prompts {
        line.clear();
        let part = enc.encode(key.as_ref(), request, &mut line)?;
        if current.as_ref().map(|(p, _)| *p) != Some(part) {
            if let Some((_, w)) = current.take() {
                done.push(w.finish().await?);
            }
            let target = child(root, &format!("input/part-{part:05}.jsonl"))?;
            current = Some((part, storage.writer(&target).await?));
        }
        if let Some((_, w)) = current.as_mut() {
            w.write(&line).await?;
        }
    }
    if let Some((_, w)) = current.take() {
        done.push(w.finish().await?);
    }
    if enc.is_empty() {
        return Err(Error::validation("prompts", "the batch holds no prompts"));
    }
    Ok(done
        .iter()
        .zip(enc.parts())
        .map(|(o, p)| StagedFile {
            uri: o.uri().to_string(),
            rows: p.rows,
            bytes: p.bytes,
        })
        .collect())
}

async fn read_manifest(storage: &Storage, at: &GcsUri) -> Result<Option<Manifest>> {
    if storage.metadata(at).await?.is_none() {
        return Ok(None);
    }
    let bytes: Vec<bytes::Bytes> = storage.read(at, None).await?.try_collect().await?;
    let m: Manifest = serde_json::from_slice(&bytes.concat()).map_err(|e| Error::Output {
        file: at.to_string(),
        line: 1,
        message: format!("not a batch manifest: {e}"),
    })?;
    if m.version != 1 || m.rounds.is_empty() {
        return Err(Error::Output {
            file: at.to_string(),
            line: 1,
            message: format!("unsupported batch manifest (version {})", m.version),
        });
    }
    Ok(Some(m))
}

async fn write_manifest(storage: &Storage, at: &GcsUri, m: &Manifest) -> Result<()> {
    let json = serde_json::to_vec_pretty(m)
        .map_err(|e| Error::config(format!("writing the batch manifest: {e}")))?;
    storage.upload_bytes(at, json).await.map(|_| ())
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
    /// assert_eq!(batch.root().to_string(), "gs://my-bucket/batches/nightly");
    /// # Ok(()) }
    /// ```
    pub fn root(&self) -> &GcsUri {
        &self.root
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
    ///     println!("{uri}"); // gs://my-bucket/batches/nightly/input/part-00000.jsonl
    /// }
    /// # Ok(()) }
    /// ```
    pub fn input_files(&self) -> Vec<GcsUri> {
        self.manifest
            .inputs
            .iter()
            .filter_map(|f| uri(&f.uri, "input").ok())
            .collect()
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

    async fn submit_round(&self, r: usize) -> Result<Vec<Job>> {
        let mut jobs = Vec::new();
        for part in &self.manifest.rounds[r].parts {
            let spec = self
                .spec
                .job
                .clone()
                .input(&part.input)
                .output(&part.output_prefix)
                .request_key(&part.request_key);
            jobs.push(self.client.submit(&spec).await?);
        }
        Ok(jobs)
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
        let mut progress = Box::pin(self.progress());
        while let Some(p) = progress.next().await {
            p?;
        }
        Ok(())
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
        let mut reader = ResultReader::new()
            .storage(self.storage.clone())
            .options(self.spec.read.clone())
            .inputs(Inputs::gcs(&self.storage, self.input_files()));
        for (round, parts) in self.jobs.iter().zip(&self.manifest.rounds).rev() {
            for (job, part) in round.iter().zip(&parts.parts) {
                if let Some(crate::job::OutputLocation::Gcs(dir)) = job.output_location() {
                    // Read only below the prefix the part was given: a job
                    // reporting another directory (the staging root, a whole
                    // bucket) must not pull other files into the results.
                    let prefix = format!("{}/", part.output_prefix.trim_end_matches('/'));
                    if !dir.starts_with(&prefix) {
                        return Err(Error::validation(
                            "output_dir",
                            format!(
                                "job {} reports its output at {dir}, outside its prefix {prefix}",
                                job.name()
                            ),
                        ));
                    }
                    reader = reader.output_gcs(uri(&dir, "output_dir")?);
                }
            }
        }
        reader.read().await
    }

    /// Resubmits the rows that failed or never came back, as a new round
    /// of jobs (keys and requests byte-exact from the inputs). Returns how
    /// many rows were resubmitted (0: nothing to retry, no job made).
    /// Blocked prompts are not retried.
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
        if let Some(j) = self.jobs().iter().find(|j| !j.has_ended()) {
            return Err(Error::validation(
                "batch",
                format!(
                    "job {} is still {}; wait for the batch first",
                    j.name(),
                    j.state()
                ),
            ));
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
        if retry.is_empty() {
            return Ok(0);
        }
        let r = self.manifest.rounds.len();
        let key = self.manifest.request_key.clone();
        let mut parts = Vec::new();
        let retry = std::sync::Arc::new(retry);
        for (i, file) in self.manifest.inputs.iter().enumerate() {
            let src = uri(&file.uri, "input")?;
            let keep = retry.clone();
            let mut lines = Box::pin(parse_lines(
                vec![SourceFile::gcs(self.storage.clone(), src)],
                self.spec.read.clone(),
                move |raw| {
                    #[derive(Deserialize)]
                    struct K<'a> {
                        #[serde(borrow)]
                        key: std::borrow::Cow<'a, str>,
                    }
                    let line = std::str::from_utf8(&raw).map_err(|e| e.to_string())?;
                    let k: K<'_> = serde_json::from_str(line).map_err(|e| e.to_string())?;
                    Ok(keep.contains(fingerprint(&k.key)).then_some(raw))
                },
            ));
            let target = child(&self.root, &format!("input/retry-r{r}-p{i:05}.jsonl"))?;
            let mut writer: Option<ObjectWriter> = None;
            let mut rows = 0u64;
            while let Some(line) = lines.next().await {
                if let Some(raw) = line? {
                    if writer.is_none() {
                        writer = Some(self.storage.writer(&target).await?);
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
                parts.push(Part {
                    input: target.to_string(),
                    output_prefix: child(&self.root, &format!("output/r{r}-p{i:05}"))?.to_string(),
                    rows,
                    request_key: format!("{key}-r{r}-p{i}"),
                });
            }
        }
        let total = parts.iter().map(|p| p.rows).sum();
        self.manifest.rounds.push(Round { parts });
        write_manifest(
            &self.storage,
            &child(&self.root, "manifest.json")?,
            &self.manifest,
        )
        .await?;
        let jobs = self.submit_round(r).await?;
        self.jobs.push(jobs);
        Ok(total)
    }
}
