//! What a restarted emulator does with the jobs it finds on disk: an ended
//! job stays as it is; an unfinished one has whatever its interrupted run
//! wrote removed (partial output, its output claim), then a CANCELLING job
//! ends CANCELLED, a RUNNING one runs again from the start, and a queued or
//! pending one goes through the queue again.

use std::sync::Arc;

use super::{
    plan, runner,
    state::{EmuState, JobSlot},
};
use crate::{job::JobState, proto::aiplatform::JobState as PbState};

/// Resumes what a previous run left unfinished.
pub(super) fn recover(state: &Arc<EmuState>, loaded: Vec<Arc<JobSlot>>) {
    for slot in loaded {
        let (job_state, partial, claim) = {
            let rec = slot.lock();
            (
                JobState::from_proto(rec.job.state),
                rec.partial_output.clone(),
                rec.output_claim.clone(),
            )
        };
        if job_state.is_terminal() {
            continue;
        }
        // Whatever the interrupted run wrote (partial or even published
        // output) goes, so the re-run's output is the only one.
        let inside = |p: std::path::PathBuf| {
            let resolved = state.resolve_record_path(&p);
            if resolved.is_none() {
                tracing::error!(
                    job = slot.id,
                    path = %p.display(),
                    "the record names a path outside the data dir; not touching it"
                );
            }
            resolved
        };
        if let Some(p) = partial.and_then(inside) {
            let _ = std::fs::remove_file(&p);
        }
        if let Some(c) = claim.and_then(inside) {
            let _ = plan::release_claim(&c, slot.id, false);
        }
        {
            let mut rec = slot.lock();
            rec.partial_output = None;
            rec.output_claim = None;
            rec.output_published = false;
        }
        match job_state {
            JobState::Cancelling => runner::finish(state, &slot, PbState::Cancelled, None),
            JobState::Running => {
                tracing::info!(job = slot.id, "re-running a job interrupted by a restart");
                runner::spawn(state, slot, true);
            }
            _ => runner::spawn(state, slot, false),
        }
    }
}

#[cfg(test)]
mod tests {
    use tonic::Request;

    use super::recover;
    use crate::emulator::{
        knobs::{KnobValues, Knobs},
        runner::set_state,
        service::EmulatorService,
        state::{EmuState, JobRecord, JobSlot},
    };
    use crate::proto::aiplatform::{self as pb, job_service_server::JobService};
    use std::{fs, sync::Arc};

    const NAME: &str = "projects/p/locations/us-central1/batchPredictionJobs/7";

    fn open(dir: &std::path::Path) -> (Arc<EmuState>, Vec<Arc<JobSlot>>) {
        let (state, loaded) = EmuState::open(dir, Knobs::new(KnobValues::default()), None).unwrap();
        (Arc::new(state), loaded)
    }

    /// Waits for the record writes and clean-ups queued in the background.
    async fn settle(state: &EmuState) {
        let mut work = state.take_runners();
        while work.join_next().await.is_some() {}
    }

    fn stored_state(dir: &std::path::Path) -> i32 {
        let bytes = fs::read(dir.join("jobs/7.json")).unwrap();
        serde_json::from_slice::<JobRecord>(&bytes)
            .unwrap()
            .job
            .state
    }

    /// A cancel acknowledged while the runner is busy (staging inputs,
    /// counting rows) is not undone by the runner's next state write,
    /// neither in memory nor on disk; and after a restart the job ends
    /// CANCELLED instead of running again.
    #[tokio::test]
    async fn an_acknowledged_cancel_survives_the_runners_state_writes_and_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let (state, _) = open(dir.path());
        let job = pb::BatchPredictionJob {
            name: NAME.into(),
            state: pb::JobState::Pending as i32,
            ..Default::default()
        };
        let record = JobRecord {
            job,
            partial_output: None,
            output_claim: None,
            output_published: false,
        };
        let slot = Arc::new(JobSlot::new(7, record));
        state.insert(slot.clone());
        state.persist(&slot).unwrap();

        // The cancel comes while the runner (played by this test) stages.
        let service = EmulatorService {
            state: state.clone(),
        };
        let cancel = pb::CancelBatchPredictionJobRequest { name: NAME.into() };
        service
            .cancel_batch_prediction_job(Request::new(cancel))
            .await
            .unwrap();
        assert_eq!(stored_state(dir.path()), pb::JobState::Cancelling as i32);
        // Done staging, the runner moves the job on.
        set_state(&state, &slot, pb::JobState::Running);
        settle(&state).await;
        assert_eq!(slot.snapshot().state, pb::JobState::Cancelling as i32);
        assert_eq!(
            stored_state(dir.path()),
            pb::JobState::Cancelling as i32,
            "the runner's write kept the acknowledged cancel"
        );
        assert!(slot.cancel_requested());
        drop((service, slot, state));

        // A restart reads the cancel request back and ends the job.
        let (state, loaded) = open(dir.path());
        assert_eq!(loaded.len(), 1);
        let slot = loaded[0].clone();
        assert!(slot.cancel_requested(), "the cancel request is durable");
        recover(&state, loaded);
        settle(&state).await;
        let job = slot.snapshot();
        assert_eq!(job.state, pb::JobState::Cancelled as i32);
        assert!(job.end_time.is_some());
        assert_eq!(stored_state(dir.path()), pb::JobState::Cancelled as i32);
    }
}
