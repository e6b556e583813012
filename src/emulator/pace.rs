//! Pacing a job's rows over emulated time, and waking for cancel or
//! shutdown between chunks of rows.

use std::{sync::Arc, time::Duration};

use tokio::time::Instant;

use super::{
    knobs::KnobValues,
    state::{EmuState, JobSlot},
};

/// How many rows are processed between checks for cancel, shutdown and pacing.
const CHUNK: u64 = 4096;

/// Why a wait between chunks ended.
pub(crate) enum Wake {
    Elapsed,
    Cancel,
    Stop,
}

/// Waits until `until`, or until the job is cancelled or the emulator stops.
pub(crate) async fn wait_until(state: &Arc<EmuState>, slot: &Arc<JobSlot>, until: Instant) -> Wake {
    let mut stop = state.stopping.subscribe();
    let notified = slot.cancel_notify.notified();
    tokio::pin!(notified);
    notified.as_mut().enable();
    if slot.cancel_requested() {
        return Wake::Cancel;
    }
    if *stop.borrow_and_update() {
        return Wake::Stop;
    }
    tokio::select! {
        _ = tokio::time::sleep_until(until) => Wake::Elapsed,
        _ = &mut notified => Wake::Cancel,
        _ = stop.changed() => Wake::Stop,
    }
}

/// When each chunk of a job's rows may run: `per_row` of emulated time a
/// row, in chunks of `chunk` rows, from `started`, for at most `max_run`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Pace {
    pub(crate) per_row: Duration,
    pub(crate) chunk: u64,
    pub(crate) started: Instant,
    pub(crate) max_run: Duration,
}

impl Pace {
    /// The pace the knobs ask for, for a job of `total` rows, from now.
    pub(crate) fn new(knobs: &KnobValues, total: u64) -> Self {
        let per_row = match knobs.job_duration {
            Some(d) => d / u32::try_from(total).unwrap_or(u32::MAX).max(1),
            None => knobs.row_delay,
        };
        let chunk = if per_row.is_zero() {
            CHUNK
        } else {
            // Pace in steps of about 20 ms of emulated time.
            (Duration::from_millis(20).as_nanos() / per_row.as_nanos().max(1))
                .clamp(1, u128::from(CHUNK)) as u64
        };
        Pace {
            per_row,
            chunk,
            started: Instant::now(),
            max_run: knobs.max_run_time,
        }
    }

    /// When the chunk after `done` rows (of `total`) may start.
    pub(crate) fn chunk_start(&self, done: u64, total: u64) -> Instant {
        if self.per_row.is_zero() {
            return Instant::now();
        }
        self.started
            .checked_add(
                self.per_row.saturating_mul(
                    u32::try_from((done + self.chunk).min(total)).unwrap_or(u32::MAX),
                ),
            )
            .unwrap_or_else(|| crate::time::after(Duration::MAX))
    }

    /// Whether the job has run past its run-time limit.
    pub(crate) fn overran(&self) -> bool {
        self.started.elapsed() > self.max_run
    }
}
