//! One batch job's life: queued (held, expired), pending, running, and
//! its end — `SUCCEEDED`, `PARTIALLY_SUCCEEDED`, `FAILED` or `CANCELLED` —
//! with the output published or its claim released.
//!
//! A cancel is never lost: the service records CANCELLING durably before
//! it answers, and the runner's own state writes never replace a
//! CANCELLING record (see `set_state`), so a job whose cancel was
//! acknowledged ends CANCELLED — or, in the same run, SUCCEEDED or FAILED
//! when its rows were all done already, as the service's jobs may — and a
//! restart never runs it again.
//!
//! Memory stays flat: rows are streamed through fixed buffers (`rows`),
//! and the output is written to a hidden partial file renamed into place
//! only when the job ends, so a crash never leaves a `SUCCEEDED` job over
//! partial output. While the job runs, completed rows are exported in
//! `incremental_predictions/` chunks (each sealed atomically, uploaded or
//! appended to the BigQuery table at once; see `KnobValues::export_every_rows`),
//! and `output_info` names the output from the moment the job runs. A
//! cancelled job keeps its chunks, and its final file of the rows it did.

use std::{fs, path::PathBuf, sync::Arc};

use tonic::Code;

use super::{
    error::EmuError,
    model::ModelCtx,
    pace::{wait_until, Pace, Wake},
    plan::{
        bq_input_uri, gcs_input_uris, plan_output, release_claim, resolve_input, stage_bq_input,
        stage_inputs, staging_dir, upload_dir, Input,
    },
    rows::{count_rows, stream_rows, Exported, RowsEnd, RowsJob, Sink, Tally},
    state::{blocking, EmuState, JobRecord, JobSlot},
};
use crate::proto::{aiplatform as pb, rpc};

/// Starts a job's runner.
pub(crate) fn spawn(state: &Arc<EmuState>, slot: Arc<JobSlot>, resume: bool) {
    let mut set = state.runners.lock().unwrap_or_else(|e| e.into_inner());
    while set.try_join_next().is_some() {}
    set.spawn(run(state.clone(), slot, resume));
}

/// Moves a job on to `new` (QUEUED, PENDING, RUNNING) — unless a cancel
/// was acknowledged meanwhile: a CANCELLING record stays CANCELLING (as
/// does an ended one), so no write of the runner's ever hides the cancel,
/// in memory or on disk, and a restart finishes the job CANCELLED.
pub(crate) fn set_state(state: &Arc<EmuState>, slot: &Arc<JobSlot>, new: pb::JobState) {
    {
        let mut rec = slot.lock();
        let now = crate::job::JobState::from_proto(rec.job.state);
        if now == crate::job::JobState::Cancelling || now.is_terminal() {
            return;
        }
        rec.job.state = new as i32;
        rec.job.update_time = Some(state.clock.now_ts());
        if new == pb::JobState::Running && rec.job.start_time.is_none() {
            rec.job.start_time = rec.job.update_time;
        }
    }
    state.persist_or_log(slot);
}

pub(crate) fn finish(
    state: &Arc<EmuState>,
    slot: &Arc<JobSlot>,
    end: pb::JobState,
    error: Option<EmuError>,
) {
    let claim = {
        let mut rec = slot.lock();
        let now = state.clock.now_ts();
        rec.job.state = end as i32;
        rec.job.end_time = Some(now);
        rec.job.update_time = Some(now);
        rec.job.error = error.map(rpc::Status::from);
        rec.partial_output = None;
        let claim = rec.output_claim.take();
        // An output never published (no exported chunk, no final file) is
        // released: an empty directory, a placeholder table that would
        // block the name for good; `output_info` no longer names it.
        let release = !rec.output_published;
        if release {
            rec.job.output_info = None;
        }
        claim.filter(|_| release)
    };
    state.persist_or_log(slot);
    let claim = claim.and_then(|c| state.resolve_record_path(&c));
    let staging = state.gcs.is_some().then(|| staging_dir(state, slot.id));
    let id = slot.id;
    state.in_background(move || {
        if let Some(path) = claim {
            let _ = release_claim(&path, id, true);
        }
        // Staged inputs and the uploaded output copy are no longer needed.
        if let Some(dir) = staging {
            let _ = fs::remove_dir_all(dir);
        }
    });
    tracing::info!(job = slot.id, state = end.as_str_name(), "job ended");
}

fn cancelled(state: &Arc<EmuState>, slot: &Arc<JobSlot>) {
    finish(state, slot, pb::JobState::Cancelled, None);
}

/// Runs a job to its end (or until the emulator stops). `resume` skips the
/// queue: the job had started before a restart.
pub(crate) async fn run(state: Arc<EmuState>, slot: Arc<JobSlot>, resume: bool) {
    if !resume {
        match queue(&state, &slot).await {
            Some(Wake::Elapsed) => {}
            Some(Wake::Cancel) => return cancelled(&state, &slot),
            Some(Wake::Stop) | None => return,
        }
        if let Some(message) = state.knobs.values().fail_jobs {
            return finish(
                &state,
                &slot,
                pb::JobState::Failed,
                Some(EmuError::new(Code::Internal, message)),
            );
        }
    }
    execute(&state, &slot).await;
}

/// QUEUED while held (EXPIRED past the TTL), then PENDING for the queue
/// delay. `None` means the job already ended.
async fn queue(state: &Arc<EmuState>, slot: &Arc<JobSlot>) -> Option<Wake> {
    let mut hold = state.knobs.hold_watch();
    if *hold.borrow_and_update() {
        set_state(state, slot, pb::JobState::Queued);
        let expires = crate::time::after(state.knobs.values().queue_ttl);
        while *hold.borrow_and_update() {
            let mut stop = state.stopping.subscribe();
            let notified = slot.cancel_notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if slot.cancel_requested() {
                return Some(Wake::Cancel);
            }
            if *stop.borrow_and_update() {
                return Some(Wake::Stop);
            }
            tokio::select! {
                _ = hold.changed() => {}
                _ = tokio::time::sleep_until(expires) => {
                    finish(state, slot, pb::JobState::Expired, Some(EmuError::new(Code::DeadlineExceeded, "the job stayed queued longer than the queue limit and expired")));
                    return None;
                }
                _ = &mut notified => return Some(Wake::Cancel),
                _ = stop.changed() => return Some(Wake::Stop),
            }
        }
        set_state(state, slot, pb::JobState::Pending);
    }
    let delay = state.knobs.values().queue_delay;
    Some(wait_until(state, slot, crate::time::after(delay)).await)
}

async fn execute(state: &Arc<EmuState>, slot: &Arc<JobSlot>) {
    let job = slot.snapshot();
    let knobs = state.knobs.values();
    let resolved = match (
        &state.gcs,
        gcs_input_uris(&job),
        &state.bq,
        bq_input_uri(&job),
    ) {
        (Some(gcs), Some(uris), _, _) => stage_inputs(state, gcs, slot.id, &uris).await,
        (_, _, Some(bq), Some(table)) => stage_bq_input(state, bq, slot.id, &table).await,
        _ => resolve_input(&state.dir, &job),
    };
    let input = match resolved {
        Ok(i) => i,
        Err(e) => {
            return finish(
                state,
                slot,
                pb::JobState::Failed,
                Some(e.with_code(Code::NotFound)),
            )
        }
    };
    let files = input.files();
    let owned: Vec<PathBuf> = files.iter().map(|f| f.to_path_buf()).collect();
    let cap = knobs.max_line_bytes;
    let counted = blocking(move || count_rows(&owned, cap))
        .await
        .and_then(|r| r);
    let total = match counted {
        Ok(n) => n,
        Err(e) => {
            return finish(
                state,
                slot,
                pb::JobState::Failed,
                Some(EmuError::new(Code::Internal, format!("reading input: {e}"))),
            )
        }
    };
    if total == 0 {
        return finish(
            state,
            slot,
            pb::JobState::Failed,
            Some(EmuError::new(
                Code::InvalidArgument,
                "the input holds no requests",
            )),
        );
    }
    if total > knobs.max_requests_per_job {
        return finish(
            state,
            slot,
            pb::JobState::Failed,
            Some(EmuError::new(
                Code::InvalidArgument,
                format!(
                    "the input holds {total} requests; a batch job takes at most {}",
                    knobs.max_requests_per_job
                ),
            )),
        );
    }
    let output = match plan_output(state, slot, &job).await {
        Ok(o) => o,
        Err(e) => {
            return finish(
                state,
                slot,
                pb::JobState::Failed,
                Some(e.with_code(Code::InvalidArgument)),
            )
        }
    };
    {
        let mut rec = slot.lock();
        rec.partial_output = Some(state.to_record_path(&output.partial));
        rec.output_claim = Some(state.to_record_path(&output.claim));
        rec.job.completion_stats = Some(Tally::default().stats(total));
        // Named as the job goes RUNNING, as the service names it: chunks
        // of completed rows land there while the job runs.
        rec.job.output_info = Some(output.info.clone());
        rec.output_published = false;
        rec.job.partial_failures.clear();
    }
    set_state(state, slot, pb::JobState::Running);
    // Durable before any row is exported: a chunk is never published under
    // a directory or table the record does not name.
    if let Err(e) = state.persist_durably(slot).await {
        return finish(
            state,
            slot,
            pb::JobState::Failed,
            Some(EmuError::new(
                Code::Internal,
                format!("recording the output: {e}"),
            )),
        );
    }
    tracing::info!(job = slot.id, rows = total, "job running");

    let pace = Pace::new(&knobs, total);
    let mut ctx = ModelCtx::for_job(&job);
    ctx.fail_rows_containing = knobs.fail_rows_containing.clone();
    let bigquery = matches!(input, Input::BigQuery(_));
    let mut tally = Tally::default();
    let rows = RowsJob {
        state,
        slot,
        files: &files,
        output: &output,
        ctx: &ctx,
        bigquery,
        total,
        max_line: cap,
        pace,
        run: fastrand::u64(..),
    };
    let mut exported = Exported::default();
    let result = stream_rows(rows, &mut tally, &mut exported).await;
    let done = tally.ok + tally.failed;
    let stats = |rec: &mut JobRecord| {
        rec.job.completion_stats = Some(tally.stats(total));
        rec.job.partial_failures = tally.errors.clone();
    };
    match result {
        Ok(RowsEnd::Stopped) => {
            // Leave the record RUNNING with its partial file: the next start
            // discards the partial output and runs the job again.
            stats(&mut slot.lock());
            state.persist_or_log(slot);
        }
        Ok(end) => {
            let (partial, final_path) = (output.partial.clone(), output.final_path.clone());
            let mut publish = blocking(move || Sink::publish(&partial, &final_path))
                .await
                .and_then(|r| r)
                .map_err(EmuError::from);
            // Only what is not published yet: the exported chunks were
            // uploaded as they were sealed (and a BigQuery table holds
            // every row already, the last chunk's too).
            if let (Ok(()), Some(gcs), Some(remote)) = (&publish, &state.gcs, &output.remote) {
                publish = upload_dir(gcs, &output.claim, remote, &exported.files).await;
            }
            {
                let mut rec = slot.lock();
                stats(&mut rec);
                if publish.is_ok() {
                    rec.output_published = true;
                }
            }
            if let Err(e) = publish {
                // The claim may stay (chunks were exported): the partial
                // file that could not be published goes.
                let partial = output.partial.clone();
                let _ = blocking(move || fs::remove_file(partial)).await;
                return finish(
                    state,
                    slot,
                    pb::JobState::Failed,
                    Some(EmuError::new(
                        Code::Internal,
                        format!("publishing output: {e}"),
                    )),
                );
            }
            match end {
                RowsEnd::Cancelled => cancelled(state, slot),
                RowsEnd::TimedOut => finish(
                    state,
                    slot,
                    pb::JobState::Cancelled,
                    Some(EmuError::new(Code::DeadlineExceeded,
                        "the job ran longer than the run-time limit and was cancelled",
                    )),
                ),
                _ if done != total => finish(
                    state,
                    slot,
                    pb::JobState::Failed,
                    Some(EmuError::new(Code::Aborted,
                        format!("the input changed while the job ran: counted {total} rows, read {done}"),
                    )),
                ),
                _ if tally.failed == 0 || (tally.ok > 0 && knobs.succeed_despite_failed_rows) => {
                    finish(state, slot, pb::JobState::Succeeded, None)
                }
                _ if tally.ok == 0 => finish(
                    state,
                    slot,
                    pb::JobState::Failed,
                    Some(EmuError::new(Code::InvalidArgument,
                        format!(
                            "all {} rows failed; first: {}",
                            tally.failed,
                            tally.errors.first().map_or("", |s| s.message.as_str())
                        ),
                    )),
                ),
                _ => finish(state, slot, pb::JobState::PartiallySucceeded, None),
            }
        }
        Err(e) => {
            let partial = output.partial.clone();
            let _ = blocking(move || fs::remove_file(partial)).await;
            stats(&mut slot.lock());
            finish(
                state,
                slot,
                pb::JobState::Failed,
                Some(EmuError::new(
                    Code::Internal,
                    format!("writing output: {e}"),
                )),
            )
        }
    }
}
