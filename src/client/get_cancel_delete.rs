//! Calls on one job: get, cancel, delete (and the long-running operation
//! a delete returns).

use std::time::Duration;

use super::{call::Routing, handle::Client};
use crate::{
    error::{service::ServiceError, Error, Result},
    job::{Job, JobRef},
    policy::Backoff,
    proto::{aiplatform as pb, longrunning},
};

impl Client {
    /// Gets a job by full name or bare numeric id.
    ///
    /// ```no_run
    /// # async fn demo(client: vertex_batch::Client) -> vertex_batch::Result<()> {
    /// let job = client.get("1234567890").await?;
    /// println!("{}: {} ({} rows done)", job.name(), job.state(), job.completion_stats().done());
    /// # Ok(()) }
    /// ```
    pub async fn get<'a>(&self, job: impl Into<JobRef<'a>>) -> Result<Job> {
        let job = self
            .call_on_job(
                "GetBatchPredictionJob",
                job.into().as_str(),
                |name| pb::GetBatchPredictionJobRequest { name },
                |s, r| {
                    let mut stub = s.jobs.clone();
                    async move { stub.get_batch_prediction_job(r).await }
                },
            )
            .await?;
        Ok(Job::from(job))
    }

    /// Asks the service to cancel a job. The job moves to `CANCELLING` and
    /// then ends `CANCELLED` (or `SUCCEEDED`/`FAILED` if it was about to);
    /// use [`Client::wait`] to see how it ended. A job that already ended
    /// gives `FAILED_PRECONDITION`.
    ///
    /// ```no_run
    /// # async fn demo(client: vertex_batch::Client, job: vertex_batch::Job) -> vertex_batch::Result<()> {
    /// use vertex_batch::{JobState, WaitOptions};
    /// client.cancel(&job).await?;
    /// let ended = client.wait(&job, &WaitOptions::new().any_end()).await?;
    /// assert!(ended.state() == JobState::Cancelled || ended.has_ended());
    /// # Ok(()) }
    /// ```
    pub async fn cancel<'a>(&self, job: impl Into<JobRef<'a>>) -> Result<()> {
        self.call_on_job(
            "CancelBatchPredictionJob",
            job.into().as_str(),
            |name| pb::CancelBatchPredictionJobRequest { name },
            |s, r| {
                let mut stub = s.jobs.clone();
                async move { stub.cancel_batch_prediction_job(r).await }
            },
        )
        .await?;
        Ok(())
    }

    /// Deletes a job that has ended, following the returned long-running
    /// operation until it is done (at most 5 minutes). A job still running
    /// gives `FAILED_PRECONDITION`: cancel it and wait first.
    ///
    /// ```no_run
    /// # async fn demo(client: vertex_batch::Client) -> vertex_batch::Result<()> {
    /// client.delete("1234567890").await?;
    /// assert_eq!(client.get("1234567890").await.unwrap_err().code(), Some(tonic::Code::NotFound));
    /// # Ok(()) }
    /// ```
    pub async fn delete<'a>(&self, job: impl Into<JobRef<'a>>) -> Result<()> {
        let op = self
            .call_on_job(
                "DeleteBatchPredictionJob",
                job.into().as_str(),
                |name| pb::DeleteBatchPredictionJobRequest { name },
                |s, r| {
                    let mut stub = s.jobs.clone();
                    async move { stub.delete_batch_prediction_job(r).await }
                },
            )
            .await?;
        self.await_operation(op, Duration::from_secs(300)).await
    }

    /// Polls a long-running operation until it is done, within `limit`.
    async fn await_operation(&self, mut op: longrunning::Operation, limit: Duration) -> Result<()> {
        let started = tokio::time::Instant::now();
        let backoff = Backoff {
            initial: Duration::from_millis(100),
            multiplier: 2.0,
            cap: Duration::from_secs(5),
        };
        let mut step = 0;
        while !op.done {
            let delay = backoff.delay(step);
            step += 1;
            if started.elapsed() + delay > limit {
                return Err(Error::Timeout {
                    after: started.elapsed(),
                    during: format!("waiting for operation {}", op.name),
                });
            }
            tokio::time::sleep(delay).await;
            let request = longrunning::GetOperationRequest {
                name: op.name.clone(),
            };
            op = self
                .call(
                    "GetOperation",
                    Routing::name(&op.name),
                    true,
                    request,
                    |s, r| {
                        let mut stub = s.ops.clone();
                        async move { stub.get_operation(r).await }
                    },
                )
                .await?;
        }
        match op.result {
            Some(longrunning::operation::Result::Error(status)) => Err(Error::Service(Box::new(
                ServiceError::from_rpc_status(&status),
            ))),
            _ => Ok(()),
        }
    }
}
