//! Submitting a batch's parts: one job a part, each claimed first
//! (`claim`), recorded rounds submitted after a crash.

use super::{follow::Batch, spec::BatchEvent};

use crate::batch::claim::{settled_job, submit_once, PartClaim, Step};
use crate::{error::Result, job::Job};

impl Batch {
    /// Submits every round the manifest records and this batch has no jobs
    /// for yet — all of them when resuming, a follow-up round recorded by
    /// a [`Batch::retry_failed`] that did not get to submit it.
    pub(crate) async fn submit_pending(&mut self) -> Result<()> {
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
    pub(super) async fn settle(&mut self, r: usize, cancelled_only: bool) -> Result<bool> {
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
    pub(super) async fn submit_part(&self, r: usize, i: usize) -> Result<Job> {
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
}
