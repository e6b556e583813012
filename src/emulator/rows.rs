//! Running a job's rows: read each input line (capped, streamed), answer
//! it with the model, write the output line (with the quirks the knobs ask
//! for), and publish live `completion_stats`. The file I/O runs on the
//! blocking pool, a chunk of rows at a time.

use std::{
    fs::{self, File},
    io::{self, BufRead, BufReader, BufWriter, Write},
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use tokio::time::Instant;

use super::{
    families::{process_bq_line, process_gcs_line},
    model::ModelCtx,
    pace::{wait_until, Pace, Wake},
    plan::Output,
    state::{blocking, EmuState, JobSlot, PERSIST_EVERY},
};
use crate::{
    proto::{aiplatform as pb, rpc},
    time,
};

/// At most this many row errors are kept in `partial_failures`.
const MAX_PARTIAL_FAILURES: usize = 20;

/// Row tallies of a run.
#[derive(Default)]
pub(crate) struct Tally {
    pub(crate) ok: u64,
    pub(crate) failed: u64,
    pub(crate) errors: Vec<rpc::Status>,
}

impl Tally {
    /// The job's `completion_stats` with these tallies, out of `total` rows.
    pub(crate) fn stats(&self, total: u64) -> pb::CompletionStats {
        pb::CompletionStats {
            successful_count: self.ok as i64,
            failed_count: self.failed as i64,
            incomplete_count: total.saturating_sub(self.ok + self.failed) as i64,
            successful_forecast_point_count: 0,
        }
    }
}

/// Where output rows go: the partial output file, plus the quirks the
/// knobs ask for (rows out of order, rows twice), and the live export of
/// completed rows in chunks.
pub(crate) struct Sink {
    main: BufWriter<File>,
    /// Rows held back to be written in a shuffled order.
    window: Vec<Vec<u8>>,
    shuffle: bool,
    rng: fastrand::Rng,
    duplicate_every: u64,
    pushed: u64,
    export: Option<Export>,
}

/// Rows shuffled together when output order is scrambled.
const SHUFFLE_WINDOW: usize = 64;

/// Where and how a job's completed rows are exported while it runs.
pub(crate) struct ExportPlan {
    /// The directory the chunks go to (`…/incremental_predictions`).
    pub(crate) dir: PathBuf,
    /// Seal during the run (else everything is the tail, sealed at the end).
    pub(crate) live: bool,
    /// The rows left at the end make a last chunk (BigQuery: the table
    /// gets the rows no chunk carried); else they are only in the final file.
    pub(crate) keep_tail: bool,
    /// Duplicates (`duplicate_every`) go into the chunks too (BigQuery: the
    /// chunks are the table's rows).
    pub(crate) duplicates: bool,
    pub(crate) every_rows: u64,
    pub(crate) every: Duration,
}

/// A chunk published under its final name.
pub(crate) struct Sealed {
    pub(crate) path: PathBuf,
    pub(crate) number: u32,
}

/// The chunk being filled, and the chunks sealed since the async side
/// last took them.
struct Export {
    plan: ExportPlan,
    /// The open chunk: its writer, its rows, and when its first row came.
    open: Option<(BufWriter<File>, u64, Instant)>,
    /// The number of the next chunk (from 1).
    next: u32,
    sealed: Vec<Sealed>,
    /// The emulated time of the rows being pushed.
    now: Instant,
}

impl Export {
    fn partial(&self, n: u32) -> PathBuf {
        self.plan
            .dir
            .join(format!(".predictions_{n:04}.jsonl.partial"))
    }

    fn push(&mut self, line: &[u8]) -> io::Result<()> {
        if self.open.is_none() {
            let n = self.next;
            let f = File::create(self.partial(n))?;
            self.open = Some((BufWriter::new(f), 0, self.now));
        }
        if let Some((w, rows, _)) = &mut self.open {
            w.write_all(line)?;
            w.write_all(b"\n")?;
            *rows += 1;
            if self.plan.live && self.plan.every_rows > 0 && *rows >= self.plan.every_rows {
                self.seal()?;
            }
        }
        Ok(())
    }

    /// At a row-chunk boundary, emulated time `now`: seals the open chunk
    /// when it has been open `every` since its first row.
    fn tick(&mut self, now: Instant) -> io::Result<()> {
        self.now = now;
        let due = self.open.as_ref().is_some_and(|(_, rows, first)| {
            *rows > 0
                && self.plan.live
                && !self.plan.every.is_zero()
                && now.saturating_duration_since(*first) >= self.plan.every
        });
        if due {
            self.seal()?;
        }
        Ok(())
    }

    /// Publishes the open chunk: flushed, fsynced, renamed into place
    /// (readers skip the hidden partial name), the directory fsynced.
    fn seal(&mut self) -> io::Result<()> {
        let Some((w, _, _)) = self.open.take() else {
            return Ok(());
        };
        let f = w.into_inner().map_err(|e| e.into_error())?;
        f.sync_all()?;
        drop(f);
        let n = self.next;
        self.next += 1;
        let path = self.plan.dir.join(format!("predictions_{n:04}.jsonl"));
        fs::rename(self.partial(n), &path)?;
        if let Ok(d) = File::open(&self.plan.dir) {
            let _ = d.sync_all();
        }
        self.sealed.push(Sealed { path, number: n });
        Ok(())
    }

    /// The job's rows are done: the rows left make a last chunk (when the
    /// plan keeps the tail) or are dropped from the export (they are in
    /// the final file).
    fn end(&mut self) -> io::Result<()> {
        if self.plan.keep_tail {
            return self.seal();
        }
        self.abandon();
        Ok(())
    }

    /// Removes the open chunk's partial file (best effort).
    fn abandon(&mut self) {
        if self.open.take().is_some() {
            let _ = fs::remove_file(self.partial(self.next));
        }
    }
}

impl Sink {
    fn new(
        partial: &Path,
        export: Option<ExportPlan>,
        knobs: &super::knobs::KnobValues,
        seed: u64,
    ) -> io::Result<Sink> {
        let main = BufWriter::with_capacity(1 << 18, File::create(partial)?);
        let export = match export {
            Some(plan) => {
                fs::create_dir_all(&plan.dir)?;
                Some(Export {
                    plan,
                    open: None,
                    next: 1,
                    sealed: Vec::new(),
                    now: Instant::now(),
                })
            }
            None => None,
        };
        Ok(Sink {
            main,
            window: Vec::new(),
            shuffle: knobs.shuffle_output,
            rng: fastrand::Rng::with_seed(seed),
            duplicate_every: knobs.duplicate_every,
            pushed: 0,
            export,
        })
    }

    /// Adds one output line (without its newline).
    fn push(&mut self, line: &[u8]) -> io::Result<()> {
        self.pushed += 1;
        let copies = if self.duplicate_every > 0 && self.pushed.is_multiple_of(self.duplicate_every)
        {
            2
        } else {
            1
        };
        if let Some(e) = &mut self.export {
            let n = if e.plan.duplicates { copies } else { 1 };
            for _ in 0..n {
                e.push(line)?;
            }
        }
        for _ in 0..copies {
            if self.shuffle {
                self.window.push(line.to_vec());
                if self.window.len() == SHUFFLE_WINDOW {
                    self.drain_window()?;
                }
            } else {
                self.main.write_all(line)?;
                self.main.write_all(b"\n")?;
            }
        }
        Ok(())
    }

    fn drain_window(&mut self) -> io::Result<()> {
        self.rng.shuffle(&mut self.window);
        for l in self.window.drain(..) {
            self.main.write_all(&l)?;
            self.main.write_all(b"\n")?;
        }
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.drain_window()?;
        self.main.flush()
    }

    fn sync(&mut self) -> io::Result<()> {
        self.main.get_ref().sync_all()
    }

    /// The chunks sealed since the last call.
    fn take_sealed(&mut self) -> Vec<Sealed> {
        self.export
            .as_mut()
            .map(|e| std::mem::take(&mut e.sealed))
            .unwrap_or_default()
    }

    /// Renames the partial output file into place.
    pub(crate) fn publish(partial: &Path, final_path: &Path) -> io::Result<()> {
        fs::rename(partial, final_path)
    }
}

/// What a job exported while it ran: what [`stream_rows`] published, so
/// the end publishes only the rest.
#[derive(Default)]
pub(crate) struct Exported {
    /// Local chunk files published (and uploaded, on a Cloud Storage backend).
    pub(crate) files: Vec<PathBuf>,
    /// Rows loaded into the BigQuery output table.
    pub(crate) bq_rows: u64,
}

pub(crate) enum RowsEnd {
    Finished,
    Cancelled,
    TimedOut,
    Stopped,
}

/// How one line read out.
enum LineRead {
    Eof,
    Line,
    /// Longer than the cap: skipped (its bytes counted), nothing kept.
    TooLong(u64),
}

/// Reads one line (with its newline) into `buf` when its content (the line
/// without its `\n` or `\r\n`) is at most `cap` bytes: a longer line is
/// consumed to its end without being stored, so memory stays bounded
/// whatever the input.
fn read_line_capped(r: &mut impl BufRead, buf: &mut Vec<u8>, cap: usize) -> io::Result<LineRead> {
    buf.clear();
    let mut total = 0u64;
    let mut too_long = false;
    loop {
        let avail = match r.fill_buf() {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if avail.is_empty() {
            // A last line without a newline: a trailing '\r' let through as
            // the start of a terminator is content after all.
            let too_long = too_long || buf.len() > cap;
            return Ok(match (total, too_long) {
                (0, _) => LineRead::Eof,
                (n, true) => LineRead::TooLong(n),
                _ => LineRead::Line,
            });
        }
        let (take, done) = match memchr::memchr(b'\n', avail) {
            Some(i) => (i + 1, true),
            None => (avail.len(), false),
        };
        total += take as u64;
        if !too_long {
            // The line's terminator does not count against the cap (nor a
            // '\r' that may turn out to be the first half of one).
            let cr = if done && take >= 2 {
                avail[take - 2] == b'\r'
            } else if done {
                buf.last() == Some(&b'\r')
            } else {
                avail[take - 1] == b'\r'
            };
            let terminator = usize::from(done) + usize::from(cr);
            if buf.len() + take - terminator > cap {
                too_long = true;
                buf.clear();
            } else {
                buf.extend_from_slice(&avail[..take]);
            }
        }
        r.consume(take);
        if done {
            return Ok(if too_long {
                LineRead::TooLong(total)
            } else {
                LineRead::Line
            });
        }
    }
}

/// The blocking half of running rows: the open input, the output sink and
/// the buffers. It is moved onto a blocking thread for each chunk of rows
/// and back, so no file I/O (nor fsync) runs on the async workers.
struct Rows {
    files: Vec<PathBuf>,
    next_file: usize,
    reader: Option<BufReader<File>>,
    writer: Sink,
    ctx: ModelCtx,
    bigquery: bool,
    max_line: usize,
    io_delay: Duration,
    line: Vec<u8>,
    scratch: Vec<u8>,
    out: Vec<u8>,
    done: u64,
    tally: Tally,
}

impl Rows {
    /// Processes up to `n` rows at emulated time `now`; true when the
    /// input is exhausted.
    fn chunk(&mut self, n: u64, processed_time: &str, now: Instant) -> io::Result<bool> {
        if let Some(e) = &mut self.writer.export {
            e.tick(now)?;
        }
        if !self.io_delay.is_zero() {
            // Slow storage, emulated where real storage would be slow: on
            // this I/O thread, not on the workers that answer RPCs.
            std::thread::sleep(self.io_delay);
        }
        let mut in_chunk = 0;
        while in_chunk < n {
            let reader = match &mut self.reader {
                Some(r) => r,
                None => {
                    let Some(f) = self.files.get(self.next_file) else {
                        return Ok(true);
                    };
                    self.next_file += 1;
                    self.reader
                        .insert(BufReader::with_capacity(1 << 18, File::open(f)?))
                }
            };
            self.out.clear();
            let err = match read_line_capped(reader, &mut self.line, self.max_line)? {
                LineRead::Eof => {
                    self.reader = None;
                    continue;
                }
                LineRead::TooLong(len) => {
                    let message = format!(
                        "invalid row: {len} bytes, longer than the {} bytes a row may have",
                        self.max_line
                    );
                    super::model::failed_row(&message, processed_time, &mut self.out);
                    Some(message)
                }
                LineRead::Line => {
                    if self.line.iter().all(u8::is_ascii_whitespace) {
                        continue;
                    }
                    match std::str::from_utf8(&self.line) {
                        Err(e) => {
                            // Failed, not rewritten: the echo stays byte-exact.
                            let message = format!("invalid row: not UTF-8 ({e})");
                            super::model::failed_row(&message, processed_time, &mut self.out);
                            Some(message)
                        }
                        Ok(text) => {
                            let text = text.trim_end_matches(['\n', '\r']);
                            if self.bigquery {
                                process_bq_line(
                                    text,
                                    processed_time,
                                    &self.ctx,
                                    &mut self.scratch,
                                    &mut self.out,
                                )
                            } else {
                                process_gcs_line(
                                    text,
                                    processed_time,
                                    &self.ctx,
                                    &mut self.scratch,
                                    &mut self.out,
                                )
                            }
                        }
                    }
                }
            };
            self.writer.push(&self.out)?;
            self.done += 1;
            in_chunk += 1;
            match err {
                None => self.tally.ok += 1,
                Some(message) => {
                    self.tally.failed += 1;
                    if self.tally.errors.len() < MAX_PARTIAL_FAILURES {
                        self.tally.errors.push(rpc::Status {
                            code: tonic::Code::InvalidArgument as i32,
                            message: format!("row {}: {message}", self.done),
                            details: Vec::new(),
                        });
                    }
                }
            }
        }
        Ok(false)
    }
}

/// What [`stream_rows`] runs: a job, its input files and output, its
/// model settings, its row count and pace.
pub(crate) struct RowsJob<'a> {
    pub(crate) state: &'a Arc<EmuState>,
    pub(crate) slot: &'a Arc<JobSlot>,
    pub(crate) files: &'a [&'a Path],
    pub(crate) output: &'a Output,
    pub(crate) ctx: &'a ModelCtx,
    pub(crate) bigquery: bool,
    pub(crate) total: u64,
    /// The row cap `total` was counted with (the knob may change while
    /// the job runs; rows must be read the way they were counted).
    pub(crate) max_line: usize,
    pub(crate) pace: Pace,
    /// This run's nonce: BigQuery load job ids are unique per run and chunk.
    pub(crate) run: u64,
}

/// How a job's output is exported while it runs (see
/// [`KnobValues::export_every_rows`](super::knobs::KnobValues::export_every_rows)):
/// Cloud Storage output (local or a backend) in `incremental_predictions/`
/// beside `predictions.jsonl` when a trigger is on; BigQuery backend output
/// always (the chunks are what fills the table; with no trigger, one chunk
/// at the end); local BigQuery table files never.
fn export_plan(output: &Output, knobs: &super::knobs::KnobValues) -> Option<ExportPlan> {
    let live = knobs.export_every_rows > 0 || !knobs.export_every.is_zero();
    let bq = output.table.is_some();
    let gcs = matches!(
        output.info.output_location,
        Some(crate::proto::aiplatform::batch_prediction_job::output_info::OutputLocation::GcsOutputDirectory(_))
    );
    if !(bq || (gcs && live)) {
        return None;
    }
    Some(ExportPlan {
        dir: output.claim.join(INCREMENTAL_DIR),
        live,
        keep_tail: bq,
        duplicates: bq,
        every_rows: knobs.export_every_rows,
        every: knobs.export_every,
    })
}

/// The directory of exported chunks, in the job's output directory.
pub(crate) const INCREMENTAL_DIR: &str = "incremental_predictions";

/// Publishes sealed chunks beyond the local file system: each is uploaded
/// to the remote output directory (Cloud Storage backend), or appended to
/// the output table (BigQuery backend, a load job of its own). The job's
/// output then counts as published: its claim is kept whatever the end.
async fn publish_chunks(
    job: &RowsJob<'_>,
    sealed: Vec<Sealed>,
    exported: &mut Exported,
) -> io::Result<()> {
    let (state, output) = (job.state, job.output);
    for chunk in sealed {
        if let (Some(gcs), Some(remote)) = (&state.gcs, &output.remote) {
            super::plan::upload_file(gcs, &output.claim, remote, &chunk.path)
                .await
                .map_err(io::Error::other)?;
        }
        if let (Some(bq), Some((table, columns))) = (&state.bq, &output.table) {
            let id = format!(
                "vertex-batch-emulator-{}-{:016x}-{:04}",
                job.slot.id, job.run, chunk.number
            );
            exported.bq_rows += super::plan::load_output(bq, &id, &chunk.path, table, columns)
                .await
                .map_err(io::Error::other)?;
        }
        exported.files.push(chunk.path);
        job.slot.lock().output_published = true;
    }
    Ok(())
}

/// Runs every row of `job`, chunk by chunk, leaving the tallies in `tally`
/// and what was exported on the way in `exported`, however it ends.
pub(crate) async fn stream_rows(
    job: RowsJob<'_>,
    tally: &mut Tally,
    exported: &mut Exported,
) -> io::Result<RowsEnd> {
    let RowsJob {
        state,
        slot,
        files,
        output,
        ctx,
        bigquery,
        total,
        max_line,
        pace,
        ..
    } = job;
    let knobs = state.knobs.values();
    let io_delay = knobs.io_delay;
    let partial = output.partial.clone();
    let seed = slot.id;
    let plan = export_plan(output, &knobs);
    let writer = blocking(move || Sink::new(&partial, plan, &knobs, seed)).await??;
    let mut rows = Rows {
        files: files.iter().map(|f| f.to_path_buf()).collect(),
        next_file: 0,
        reader: None,
        writer,
        ctx: ctx.clone(),
        bigquery,
        max_line,
        io_delay,
        line: Vec::with_capacity(4096),
        scratch: Vec::with_capacity(1024),
        out: Vec::with_capacity(4096),
        done: 0,
        tally: Tally::default(),
    };
    let mut last_persist = Instant::now();
    let end = loop {
        // Start of a chunk: pace, and check for cancel and shutdown.
        match wait_until(state, slot, pace.chunk_start(rows.done, total)).await {
            Wake::Elapsed => {}
            Wake::Cancel => break RowsEnd::Cancelled,
            Wake::Stop => {
                *tally = std::mem::take(&mut rows.tally);
                return Ok(RowsEnd::Stopped);
            }
        }
        if pace.overran() {
            break RowsEnd::TimedOut;
        }
        let processed_time = time::format_millis(state.clock.now());
        let now = Instant::now();
        let (back, result) = blocking(move || {
            let r = rows.chunk(pace.chunk, &processed_time, now);
            (rows, r)
        })
        .await?;
        rows = back;
        let sealed = rows.writer.take_sealed();
        let exhausted = match result {
            Ok(e) => e,
            Err(e) => {
                *tally = std::mem::take(&mut rows.tally);
                abandon_export(rows).await;
                return Err(e);
            }
        };
        if let Err(e) = publish_chunks(&job, sealed, exported).await {
            *tally = std::mem::take(&mut rows.tally);
            abandon_export(rows).await;
            return Err(e);
        }
        publish_progress(state, slot, &rows.tally, total, &mut last_persist).await;
        if exhausted {
            break RowsEnd::Finished;
        }
    };
    let finished = matches!(end, RowsEnd::Finished);
    let (back, result) = blocking(move || {
        let r = rows
            .writer
            .flush()
            .and_then(|()| if finished { rows.writer.sync() } else { Ok(()) })
            .and_then(|()| rows.writer.export.as_mut().map_or(Ok(()), Export::end));
        (rows, r)
    })
    .await?;
    rows = back;
    *tally = std::mem::take(&mut rows.tally);
    let sealed = rows.writer.take_sealed();
    if let Err(e) = result {
        abandon_export(rows).await;
        return Err(e);
    }
    publish_chunks(&job, sealed, exported).await?;
    if finished {
        publish_progress(state, slot, tally, total, &mut last_persist).await;
    }
    Ok(end)
}

/// A failed run's open chunk goes (its rows were never published).
async fn abandon_export(mut rows: Rows) {
    let _ = blocking(move || {
        if let Some(e) = &mut rows.writer.export {
            e.abandon();
        }
    })
    .await;
}

async fn publish_progress(
    state: &Arc<EmuState>,
    slot: &Arc<JobSlot>,
    tally: &Tally,
    total: u64,
    last_persist: &mut Instant,
) {
    {
        let mut rec = slot.lock();
        rec.job.completion_stats = Some(tally.stats(total));
        if rec.job.partial_failures.len() != tally.errors.len() {
            rec.job.partial_failures = tally.errors.clone();
        }
        rec.job.update_time = Some(state.clock.now_ts());
    }
    if last_persist.elapsed() >= PERSIST_EVERY {
        *last_persist = Instant::now();
        // The record's fsync runs on the blocking pool; awaited, so it is
        // never overtaken by a later write of the same record.
        let (state, slot) = (state.clone(), slot.clone());
        if blocking(move || state.persist_or_log(&slot)).await.is_err() {
            tracing::error!("persisting a job record panicked");
        }
    }
}

/// Counts the rows (non-blank lines) of the input files, never holding
/// more than `cap` bytes of a line.
pub(crate) fn count_rows(files: &[PathBuf], cap: usize) -> io::Result<u64> {
    let mut n = 0u64;
    let mut buf = Vec::with_capacity(4096);
    for f in files {
        let mut r = BufReader::with_capacity(1 << 18, File::open(f)?);
        loop {
            match read_line_capped(&mut r, &mut buf, cap)? {
                LineRead::Eof => break,
                LineRead::TooLong(_) => n += 1,
                LineRead::Line => {
                    if buf.iter().any(|b| !b.is_ascii_whitespace()) {
                        n += 1;
                    }
                }
            }
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_carriage_return_ending_the_input_is_content() {
        // No newline follows: both '\r' are the line's content, over a cap
        // of 1; followed by a newline, one of them would end the line.
        for (text, cap, want_too_long) in [(&b"\r\r"[..], 1, true), (b"\r\r\n", 1, false)] {
            let mut r = BufReader::with_capacity(1, text);
            let mut buf = Vec::new();
            let got = read_line_capped(&mut r, &mut buf, cap).unwrap();
            assert_eq!(
                matches!(got, LineRead::TooLong(_)),
                want_too_long,
                "{text:?}"
            );
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Lines come back exactly as split on '\n' when they fit, as their
        /// length when they do not, whatever the buffer boundaries.
        #[test]
        fn capped_lines_match_a_plain_split(
            text in proptest::collection::vec(prop_oneof![Just(b'\n'), Just(b'\r'), Just(b'a'), any::<u8>()], 0..400),
            cap in 1usize..64,
            buf_size in 1usize..16,
        ) {
            let mut r = BufReader::with_capacity(buf_size, &text[..]);
            let mut buf = Vec::new();
            let mut want: Vec<&[u8]> = text.split_inclusive(|b| *b == b'\n').collect();
            want.reverse();
            // A line's content: without its "\n" or "\r\n".
            let content = |w: &[u8]| {
                let w = w.strip_suffix(b"\n").map_or(w, |w| w.strip_suffix(b"\r").unwrap_or(w));
                w.len()
            };
            loop {
                match read_line_capped(&mut r, &mut buf, cap).unwrap() {
                    LineRead::Eof => break,
                    LineRead::Line => {
                        let w = want.pop().unwrap();
                        prop_assert!(content(w) <= cap);
                        prop_assert_eq!(&buf[..], w);
                    }
                    LineRead::TooLong(n) => {
                        let w = want.pop().unwrap();
                        prop_assert!(content(w) > cap);
                        prop_assert_eq!(n, w.len() as u64);
                        prop_assert!(buf.len() <= cap + 2);
                    }
                }
            }
            prop_assert!(want.is_empty());
        }
    }
}
