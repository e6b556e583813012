//! A batch on its way: the [`Batch`] handle, its accessors, and following
//! its jobs ([`Batch::progress`], [`Batch::wait`]) to their results.

use super::{manifest::Manifest, spec::BatchSpec};

use futures::{Stream, StreamExt};

use crate::batch::{
    read::stream::ResultStream,
    stage::{Area, Version},
};
use crate::{
    client::Client,
    error::Result,
    job::Job,
    uri::{BigQueryUri, GcsUri},
};

/// A batch on its way: its jobs, their progress, its results.
///
/// ```no_run
/// # async fn demo(client: vertex_batch::Client, storage: vertex_batch::storage::Storage) -> vertex_batch::Result<()> {
/// use vertex_batch::{batch::BatchSpec, JobSpec, format::Prompt};
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
    pub(crate) client: Client,
    /// Where it is staged (a Cloud Storage prefix or a BigQuery dataset).
    pub(crate) area: Area,
    pub(crate) spec: BatchSpec,
    pub(crate) manifest: Manifest,
    /// The manifest's version as last read or written (the precondition
    /// of the next write), when the backend reports one.
    pub(super) manifest_generation: Option<Version>,
    /// Jobs by round, latest snapshots. Shorter than the manifest's rounds
    /// while a recorded round is not fully submitted.
    pub(crate) jobs: Vec<Vec<Job>>,
}

/// One look at a whole batch.
///
/// ```no_run
/// # async fn demo(mut batch: vertex_batch::batch::Batch) -> vertex_batch::Result<()> {
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

impl Batch {
    /// The batch's key.
    ///
    /// ```no_run
    /// # async fn demo(client: vertex_batch::Client, storage: vertex_batch::storage::Storage) -> vertex_batch::Result<()> {
    /// use vertex_batch::{batch::BatchSpec, JobSpec};
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
    /// use vertex_batch::{batch::BatchSpec, JobSpec};
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
    /// use vertex_batch::{batch::BatchSpec, JobSpec};
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
    /// use vertex_batch::{batch::BatchSpec, JobSpec};
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
    pub(crate) fn input_targets(&self) -> Vec<String> {
        self.manifest.inputs.iter().map(|f| f.uri.clone()).collect()
    }

    /// How many prompts the batch holds.
    ///
    /// ```no_run
    /// # async fn demo(client: vertex_batch::Client, storage: vertex_batch::storage::Storage) -> vertex_batch::Result<()> {
    /// use vertex_batch::{batch::BatchSpec, JobSpec};
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
    /// use vertex_batch::{batch::BatchSpec, JobSpec};
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
    /// # async fn demo(mut batch: vertex_batch::batch::Batch) -> vertex_batch::Result<()> {
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

    /// Follows every job: one [`BatchProgress`] per change, the last one
    /// with `done` set. Also keeps this batch's snapshots current.
    ///
    /// ```no_run
    /// # async fn demo(mut batch: vertex_batch::batch::Batch) -> vertex_batch::Result<()> {
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

    pub(super) fn snapshot(&self, rows: u64) -> BatchProgress {
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
    /// # async fn demo(mut batch: vertex_batch::batch::Batch) -> vertex_batch::Result<()> {
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
    /// # async fn demo(mut batch: vertex_batch::batch::Batch) -> vertex_batch::Result<()> {
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
    /// # async fn demo(mut batch: vertex_batch::batch::Batch) -> vertex_batch::Result<()> {
    /// use futures::StreamExt;
    /// use vertex_batch::format::Outcome;
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
}
