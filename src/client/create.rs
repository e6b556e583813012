//! Creating jobs: [`Client::create`] (one attempt) and [`Client::submit`]
//! (a create that is safe to retry).
//!
//! The service has no request id, so after an ambiguous failure (the
//! request may have been committed but the answer was lost) a blind retry
//! can start a second, billed job. `submit` stamps the job with a request
//! key label, and after an ambiguous failure lists jobs by that label: if
//! the job exists it is returned, and only if the list *succeeds* and finds
//! nothing is the create sent again.

use futures::TryStreamExt;
use tokio::time::Instant;

use super::{call::Routing, handle::Client, list::ListOptions};
use crate::{
    error::{Error, Result},
    job::Job,
    names::LocationName,
    proto::aiplatform as pb,
    spec::{JobSpec, MAX_LABELS, REQUEST_KEY_LABEL, SPEC_LABEL},
};

/// The request `submit` sends for `spec` (which carries its request key),
/// with the crate's labels on, checked as the service would check it —
/// ours counted among the labels — and the spec's fingerprint.
pub(crate) fn prepare(
    spec: &JobSpec,
    parent: &LocationName,
) -> Result<(pb::CreateBatchPredictionJobRequest, String)> {
    let mut request = spec.to_request(parent)?;
    let fingerprint = spec_fingerprint_of(spec, parent)?;
    let key = spec.labels().get(REQUEST_KEY_LABEL).cloned();
    // Our labels go on after any `with_proto` customizer ran: it cannot
    // remove them. They count against the service's limit.
    match request.batch_prediction_job.as_mut() {
        Some(job) => {
            if let Some(key) = key {
                job.labels.insert(REQUEST_KEY_LABEL.to_owned(), key);
            }
            job.labels
                .insert(SPEC_LABEL.to_owned(), fingerprint.clone());
            check_label_count(job)?;
        }
        None => return Err(Error::validation("spec", "the request holds no job")),
    }
    Ok((request, fingerprint))
}

/// The fingerprint of what `spec` asks for — model, input, output,
/// parameters, the caller's labels and display name, every
/// [`JobSpec::with_proto`] change — and nothing the crate made up (the
/// default display name carries the time) or adds (its own labels). The
/// same spec built twice, in two processes or a day apart, gives the same
/// fingerprint: `s` + 24 hex digits of a SHA-256.
pub(crate) fn spec_fingerprint_of(spec: &JobSpec, parent: &LocationName) -> Result<String> {
    let request = spec.to_request_as_asked(parent)?;
    match &request.batch_prediction_job {
        Some(job) => Ok(spec_fingerprint(job)),
        None => Err(Error::validation("spec", "the request holds no job")),
    }
}

/// A fingerprint of everything the job asks for but our own labels:
/// `s` + 24 hex digits of the SHA-256 of its canonical JSON (keys sorted).
fn spec_fingerprint(job: &pb::BatchPredictionJob) -> String {
    let mut job = job.clone();
    job.labels.remove(REQUEST_KEY_LABEL);
    job.labels.remove(SPEC_LABEL);
    let value = serde_json::to_value(&job).unwrap_or_default();
    let mut text = String::new();
    canonical(&value, &mut text);
    let digest = ring::digest::digest(&ring::digest::SHA256, text.as_bytes());
    let hex: String = digest.as_ref()[..12]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("s{hex}")
}

/// JSON with object keys sorted, whatever order maps iterate in.
fn canonical(v: &serde_json::Value, out: &mut String) {
    match v {
        serde_json::Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&serde_json::Value::String(k.clone()).to_string());
                out.push(':');
                canonical(&m[k], out);
            }
            out.push('}');
        }
        serde_json::Value::Array(a) => {
            out.push('[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                canonical(x, out);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

/// Whether a failed create may have been committed anyway.
pub(crate) fn is_ambiguous(e: &Error) -> bool {
    matches!(e, Error::Transport { .. } | Error::Timeout { .. })
        || matches!(
            e.code(),
            Some(
                tonic::Code::Unavailable
                    | tonic::Code::DeadlineExceeded
                    | tonic::Code::Unknown
                    | tonic::Code::Internal
                    | tonic::Code::Cancelled
            )
        )
}

fn new_request_key() -> String {
    format!("k{:016x}{:016x}", fastrand::u64(..), fastrand::u64(..))
}

/// # Submitting without duplicates
impl Client {
    /// Creates a batch prediction job from `spec` after validating it locally.
    ///
    /// Not retried: the service has no request id, so a blind retry after a
    /// lost answer could start a second, billed job. Use
    /// [`Client::submit`] for a create that is safe to retry. To send a
    /// request this crate would refuse (e.g. to test a server's
    /// validation), customise the proto with [`JobSpec::with_proto`] or use
    /// the generated stub in [`crate::proto`].
    ///
    /// ```no_run
    /// # async fn demo(client: vertex_batch::Client) -> vertex_batch::Result<()> {
    /// use vertex_batch::JobSpec;
    /// let spec = JobSpec::new("gemini-2.0-flash-001")
    ///     .input("gs://my-bucket/prompts.jsonl")
    ///     .output("gs://my-bucket/out")
    ///     // Any field this crate has no setter for:
    ///     .with_proto(|job| job.disable_container_logging = true);
    /// let job = client.create(&spec).await?;
    /// println!("{} is {}", job.name(), job.state());
    /// # Ok(()) }
    /// ```
    pub async fn create(&self, spec: &JobSpec) -> Result<Job> {
        let request = spec.to_request(&self.inner.parent)?;
        self.send_create(request).await
    }

    /// Sends a prepared `CreateBatchPredictionJobRequest` as it is, once.
    async fn send_create(&self, request: pb::CreateBatchPredictionJobRequest) -> Result<Job> {
        let _valid: LocationName = request.parent.parse()?;
        let parent = request.parent.clone();
        let job = self
            .call(
                "CreateBatchPredictionJob",
                Routing::parent(&parent),
                false,
                request,
                |s, r| {
                    let mut stub = s.jobs.clone();
                    async move { stub.create_batch_prediction_job(r).await }
                },
            )
            .await?;
        Ok(Job::from(job))
    }

    /// Creates a job, retrying safely: never makes two jobs for one call.
    ///
    /// The request key comes from [`JobSpec::request_key`] when set (reuse
    /// the same key to make a submit safe across process restarts too), or is
    /// generated. It is kept on the job as the label
    /// `vertex-batch-request-key`. Retries follow the client's
    /// [`RetryPolicy`](crate::policy::RetryPolicy); errors that prove the job was not created
    /// (`INVALID_ARGUMENT`, `PERMISSION_DENIED`, …) are returned at once.
    ///
    /// ```no_run
    /// # async fn demo(client: vertex_batch::Client) -> vertex_batch::Result<()> {
    /// use vertex_batch::JobSpec;
    /// let spec = JobSpec::new("gemini-2.0-flash-001")
    ///     .input("gs://my-bucket/prompts.jsonl")
    ///     .output("gs://my-bucket/out")
    ///     .request_key("nightly-2026-11-21");
    /// let job = client.submit(&spec).await?;
    /// # Ok(()) }
    /// ```
    pub async fn submit(&self, spec: &JobSpec) -> Result<Job> {
        let given = spec.labels().get(REQUEST_KEY_LABEL).cloned();
        let key = given.clone().unwrap_or_else(new_request_key);
        let spec = spec.clone().label(REQUEST_KEY_LABEL, key.clone());
        // Validated first, so a bad spec (or key) fails as such, before any call.
        let (request, fingerprint) = prepare(&spec, self.parent())?;
        // A caller's key may have been used by an earlier submit (another
        // process, a restart): that job is the answer — if it is the same
        // job. A key reused for another spec is an error, not the old job.
        let same = move |j: &Job| {
            j.labels()
                .get(SPEC_LABEL)
                .is_none_or(|fp| *fp == fingerprint)
        };
        self.submit_prepared(request, &key, given.is_some(), &same)
            .await
    }

    /// [`Client::submit`] of a spec that carries its request key, where
    /// `ours` tells the jobs made for this very submission from others
    /// that carry the same key (a batch's parts: the jobs writing to the
    /// part's output). The oldest of `ours` is the answer; a job carrying
    /// the key that is not `ours` is an error.
    pub(crate) async fn submit_as(&self, spec: &JobSpec, ours: &Ours<'_>) -> Result<Job> {
        let Some(key) = spec.labels().get(REQUEST_KEY_LABEL).cloned() else {
            return Err(Error::validation(
                "request_key",
                "the spec carries no request key",
            ));
        };
        let (request, _) = prepare(spec, self.parent())?;
        self.submit_prepared(request, &key, true, ours).await
    }

    /// Creates the job `request` describes, stamped with request key `key`;
    /// `keyed` when the key is the caller's (an earlier submission may have
    /// made the job already).
    async fn submit_prepared(
        &self,
        request: pb::CreateBatchPredictionJobRequest,
        key: &str,
        keyed: bool,
        ours: &Ours<'_>,
    ) -> Result<Job> {
        if keyed {
            let found = self.reconcile_by(key, ours).await?;
            if let Some(job) = found.ours {
                tracing::info!(job = job.name(), key, "a job with this request key exists");
                return Ok(job);
            }
            if let Some(other) = found.other {
                return Err(key_taken(&other, key));
            }
        }
        let policy = self.retry_policy().clone();
        let started = Instant::now();
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let err = match self.send_create(request.clone()).await {
                // Another process may have created a job with the same key
                // at the same time: the oldest is the answer for both.
                // A failed look-up after the create must not hide the job.
                Ok(job) if keyed => {
                    return Ok(self
                        .reconcile_by(key, ours)
                        .await
                        .ok()
                        .and_then(|found| found.ours)
                        .unwrap_or(job))
                }
                Ok(job) => return Ok(job),
                Err(e) => e,
            };
            let ambiguous = is_ambiguous(&err);
            if !ambiguous && !err.is_retryable() {
                return Err(err);
            }
            if ambiguous {
                tracing::info!(key, error = %err, "create failed ambiguously; looking for the job");
                if let Some(job) = self.reconcile_by(key, ours).await?.ours {
                    tracing::info!(job = job.name(), "the job had been created");
                    return Ok(job);
                }
            }
            match policy.next_delay(attempt, &err, started.elapsed()) {
                Some(delay) => tokio::time::sleep(delay).await,
                None => return Err(err),
            }
        }
    }

    /// The job created with request key `key`, if any: the oldest, should
    /// there be several (by creation time, then name, so every process
    /// picks the same one). Reads every page of the filtered list: the
    /// service may answer a filtered page short, or empty, with a token
    /// for more.
    ///
    /// ```no_run
    /// # async fn demo(client: vertex_batch::Client) -> vertex_batch::Result<()> {
    /// if let Some(job) = client.find_by_request_key("nightly-2026-11-22").await? {
    ///     println!("already submitted: {}", job.name());
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn find_by_request_key(&self, key: &str) -> Result<Option<Job>> {
        Ok(self.jobs_with_request_key(key).await?.into_iter().next())
    }

    /// Makes `key` stand for one live job: when several jobs made from one
    /// spec carry it (two processes created one at the same time), the
    /// oldest wins and every other that has not ended is cancelled.
    /// Returns the oldest job carrying the key, `None` when no job carries
    /// it. Every process that calls this sees the same winner, so all
    /// follow one job and read the same answers. A job carrying the key but
    /// made from another spec (its `vertex-batch-spec` label differs) is
    /// not a duplicate, and is never cancelled.
    ///
    /// A cancel that fails is logged, not returned: the winner is still
    /// the answer, and the next call tries the cancel again.
    ///
    /// ```no_run
    /// # async fn demo(client: vertex_batch::Client) -> vertex_batch::Result<()> {
    /// if let Some(job) = client.reconcile_request_key("nightly-2026-11-22").await? {
    ///     println!("the one job for this key: {}", job.name());
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn reconcile_request_key(&self, key: &str) -> Result<Option<Job>> {
        let jobs = self.jobs_with_request_key(key).await?;
        let Some(winner) = jobs.first().cloned() else {
            return Ok(None);
        };
        let spec = winner.labels().get(SPEC_LABEL).cloned();
        let duplicates = jobs
            .into_iter()
            .skip(1)
            .filter(|j| j.labels().get(SPEC_LABEL) == spec.as_ref());
        self.cancel_duplicates(key, &winner, duplicates).await;
        Ok(Some(winner))
    }

    /// Like [`Client::reconcile_request_key`] among the jobs `ours`
    /// accepts: the oldest of them wins, the other live ones are
    /// cancelled. Also returns the oldest job carrying the key that `ours`
    /// refuses.
    pub(crate) async fn reconcile_by(&self, key: &str, ours: &Ours<'_>) -> Result<Keyed> {
        let (mine, others): (Vec<Job>, Vec<Job>) = self
            .jobs_with_request_key(key)
            .await?
            .into_iter()
            .partition(|j| ours(j));
        let mut mine = mine.into_iter();
        let winner = mine.next();
        if let Some(w) = &winner {
            self.cancel_duplicates(key, w, mine).await;
        }
        Ok(Keyed {
            ours: winner,
            other: others.into_iter().next(),
        })
    }

    /// Cancels every job of `duplicates` that has not ended.
    async fn cancel_duplicates(
        &self,
        key: &str,
        winner: &Job,
        duplicates: impl Iterator<Item = Job>,
    ) {
        for extra in duplicates.filter(|j| !j.has_ended()) {
            tracing::warn!(
                key,
                winner = winner.name(),
                duplicate = extra.name(),
                "two jobs carry one request key; cancelling the newer"
            );
            if let Err(e) = self.cancel(extra.name()).await {
                tracing::warn!(job = extra.name(), error = %e, "could not cancel a duplicate job");
            }
        }
    }

    /// Every job carrying request key `key`, oldest first (creation time,
    /// then name), all pages read.
    async fn jobs_with_request_key(&self, key: &str) -> Result<Vec<Job>> {
        let opts = ListOptions::new().label(REQUEST_KEY_LABEL, key);
        let mut jobs: Vec<Job> = self.list(&opts).try_collect().await?;
        jobs.sort_by(|a, b| (a.create_time(), a.name()).cmp(&(b.create_time(), b.name())));
        Ok(jobs)
    }
}

/// The service takes at most [`MAX_LABELS`] labels, ours included.
fn check_label_count(job: &pb::BatchPredictionJob) -> Result<()> {
    if job.labels.len() > MAX_LABELS {
        let ours = [REQUEST_KEY_LABEL, SPEC_LABEL];
        let theirs = job
            .labels
            .keys()
            .filter(|k| !ours.contains(&k.as_str()))
            .count();
        return Err(Error::validation(
            "labels",
            format!(
                "{theirs} labels given; the service takes {MAX_LABELS} and vertex-batch adds its own \
                 {} ({REQUEST_KEY_LABEL}, {SPEC_LABEL}), so at most {} of yours",
                ours.len(),
                MAX_LABELS - ours.len()
            ),
        ));
    }
    Ok(())
}

/// Tells the jobs made for one submission from others carrying its key.
pub(crate) type Ours<'a> = dyn Fn(&Job) -> bool + Send + Sync + 'a;

/// What [`Client::reconcile_by`] found under a request key.
pub(crate) struct Keyed {
    /// The oldest job of this submission's (the one to follow).
    pub(crate) ours: Option<Job>,
    /// The oldest job carrying the key that is not this submission's.
    pub(crate) other: Option<Job>,
}

/// The error for request key `key`, taken by `job` of another spec.
fn key_taken(job: &Job, key: &str) -> Error {
    Error::validation(
        "request_key",
        format!(
            "request key {key:?} belongs to job {}, which was made from another job spec \
             (model, input, output, parameters, labels or display name differ); submit the \
             spec it was made with to get that job back",
            job.name()
        ),
    )
}
