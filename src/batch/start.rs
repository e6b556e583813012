//! Starting a batch: [`Client::start_batch`], [`Client::resume_batch`],
//! [`Client::find_batch_jobs`], [`Client::run_batch`], and the staging of
//! the prompts into part files.

use super::{
    follow::Batch,
    manifest::{
        check_resume, digest_prompts, other_prompts, read_manifest, Manifest, Part, PromptsDigest,
        PromptsDigester, Round, StagedFile, MANIFEST, MANIFEST_VERSION, TEMPLATE_INPUT,
        TEMPLATE_OUTPUT,
    },
    spec::{BatchEvent, BatchSpec},
};

use futures::TryStreamExt;

use crate::{
    batch::{
        claim::writes_to,
        read::stream::ResultStream,
        stage::{Area, PartWriter, StagingClient, Version},
    },
    format::input::BatchRequest,
};
use crate::{
    client::{Client, ListOptions},
    error::{Error, Result},
    job::Job,
    spec::REQUEST_KEY_LABEL,
};

/// # Batches: prompts in, matched answers out
impl Client {
    /// Stages `prompts` and submits their jobs — or, when the batch's key
    /// was used before, finds the staged inputs and the jobs and reattaches
    /// (`prompts` are then not read).
    ///
    /// Keys are any UTF-8 (see [`crate::format::check_key`]); a duplicate key is an
    /// error naming it, raised before any job is submitted.
    ///
    /// ```no_run
    /// # async fn demo(client: vertex_batch::Client, storage: vertex_batch::storage::Storage) -> vertex_batch::Result<()> {
    /// use vertex_batch::{batch::BatchSpec, JobSpec};
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
    /// use vertex_batch::{batch::BatchSpec, JobSpec};
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
    /// use vertex_batch::{batch::BatchSpec, JobSpec};
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
    pub(super) async fn attach(
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
    pub(super) fn batch_frame(
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
    /// use vertex_batch::{batch::BatchSpec, JobSpec};
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
pub(super) async fn stage<I, K, R>(
    area: &Area,
    spec: &BatchSpec,
    prompts: I,
) -> Result<(Vec<StagedFile>, PromptsDigest)>
where
    I: IntoIterator<Item = (K, R)>,
    K: AsRef<str>,
    R: Into<BatchRequest>,
{
    let mut d = PromptsDigester::new(spec)?;
    let mut current: Option<(usize, PartWriter)> = None;
    let mut done = Vec::new();
    let attempt = format!("{:016x}", fastrand::u64(..));
    for (key, request) in prompts {
        let part = d.encode(key.as_ref(), request)?;
        if current.as_ref().map(|(p, _)| *p) != Some(part) {
            if let Some((p, w)) = current.take() {
                done.push(w.finish().await?);
                spec.emit(BatchEvent::Staged {
                    part: p,
                    rows: d.enc.parts()[p].rows,
                });
            }
            let target = area.part(&format!("input/{attempt}/part-{part:05}.jsonl"))?;
            current = Some((part, area.writer(&target, d.enc.family()).await?));
        }
        if let Some((_, w)) = current.as_mut() {
            w.write(&d.line).await?;
        }
    }
    if d.enc.is_empty() {
        return Err(Error::validation("prompts", "the batch holds no prompts"));
    }
    if let Some((p, w)) = current.take() {
        done.push(w.finish().await?);
        spec.emit(BatchEvent::Staged {
            part: p,
            rows: d.enc.parts()[p].rows,
        });
    }
    let files = done
        .iter()
        .zip(d.enc.parts())
        .map(|(o, p)| StagedFile {
            uri: o.clone(),
            rows: p.rows,
            bytes: p.bytes,
        })
        .collect();
    Ok((files, d.finish()))
}
