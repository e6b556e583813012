//! Retrying a batch's failed and missing rows as a follow-up round:
//! [`Batch::retry_failed`].

use super::{
    follow::Batch,
    manifest::{read_manifest, write_manifest, Part, Round},
    spec::BatchEvent,
};

use futures::StreamExt;

use crate::error::{Error, Result};
use crate::{
    batch::{
        read::stream::parse_lines,
        stage::{Area, PartWriter},
    },
    format::fingerprint::{fingerprint, FingerprintSet},
};

impl Batch {
    /// Resubmits the rows that failed or never came back, as a new round
    /// of jobs (keys and requests byte-exact from the inputs). Returns how
    /// many rows were resubmitted (0: nothing to retry, no job made).
    /// Blocked prompts are not retried.
    ///
    /// The round is recorded in the manifest first (its files staged
    /// before), and submitted second: when the submit fails or the
    /// process dies in between, the next `retry_failed` — or the next
    /// [`Client::start_batch`](crate::Client::start_batch) with the batch's key — submits that round's
    /// missing jobs instead of making another round, and returns its rows.
    ///
    /// ```no_run
    /// # async fn demo(mut batch: vertex_batch::batch::Batch) -> vertex_batch::Result<()> {
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
    pub(crate) async fn stage_round(&mut self, retry: FingerprintSet) -> Result<u64> {
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
                    let k = crate::format::input::line_key(line)?;
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
    pub(super) fn rows_from(&self, from: usize) -> u64 {
        self.manifest.rounds[from..]
            .iter()
            .flat_map(|r| &r.parts)
            .map(|p| p.rows)
            .sum()
    }
}
