//! Executes one batch job: queue, read the input row by row, answer each
//! row with the built-in model, write the output in the service's layout,
//! and keep `state` and `completion_stats` live.
//!
//! Memory stays flat: rows are streamed through fixed buffers, and the
//! output is written to a hidden partial file renamed into place only when
//! the job ends, so a crash never leaves a `SUCCEEDED` job over partial output.

use std::{
    fs::{self, File},
    io::{self, BufRead, BufReader, BufWriter, Write},
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use tokio::time::Instant;

use super::{
    model::{process_bq_line, process_gcs_line, ModelCtx},
    state::{EmuState, JobSlot, PERSIST_EVERY},
    storage,
};
use crate::{
    proto::{
        aiplatform::{
            self as pb,
            batch_prediction_job::{input_config, output_config, output_info, OutputInfo},
        },
        rpc,
    },
    timefmt,
    uri::{BigQueryUri, GcsUri},
};

/// How many rows are processed between checks for cancel, shutdown and pacing.
const CHUNK: u64 = 4096;
/// At most this many row errors are kept in `partial_failures`.
const MAX_PARTIAL_FAILURES: usize = 20;

enum Wake {
    Elapsed,
    Cancel,
    Stop,
}

/// Waits until `until`, or until the job is cancelled or the emulator stops.
async fn wait_until(state: &Arc<EmuState>, slot: &Arc<JobSlot>, until: Instant) -> Wake {
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

fn set_state(state: &Arc<EmuState>, slot: &Arc<JobSlot>, new: pb::JobState) {
    {
        let mut rec = slot.lock();
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
    error: Option<(i32, String)>,
) {
    let claim = {
        let mut rec = slot.lock();
        let now = state.clock.now_ts();
        rec.job.state = end as i32;
        rec.job.end_time = Some(now);
        rec.job.update_time = Some(now);
        rec.job.error = error.map(|(code, message)| rpc::Status {
            code,
            message,
            details: Vec::new(),
        });
        rec.partial_output = None;
        let claim = rec.output_claim.take();
        // An output never published is released: an empty directory, a
        // placeholder table that would block the name for good.
        claim.filter(|_| rec.job.output_info.is_none())
    };
    state.persist_or_log(slot);
    let claim = claim.and_then(|c| state.resolve_record_path(&c));
    let staging = state.gcs.is_some().then(|| staging_dir(state, slot.id));
    let id = slot.id;
    state.in_background(move || {
        if let Some(path) = claim {
            let _ = if path.is_dir() {
                if claim_is_ours(&path, id) {
                    fs::remove_dir_all(&path)
                } else {
                    Ok(())
                }
            } else if fs::metadata(&path).is_ok_and(|m| m.len() == 0) {
                fs::remove_file(&path)
            } else {
                Ok(())
            };
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
            return finish(&state, &slot, pb::JobState::Failed, Some((13, message)));
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
        let expires = crate::poll::after(state.knobs.values().queue_ttl);
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
                    finish(state, slot, pb::JobState::Expired, Some((4, "the job stayed queued longer than the queue limit and expired".into())));
                    return None;
                }
                _ = &mut notified => return Some(Wake::Cancel),
                _ = stop.changed() => return Some(Wake::Stop),
            }
        }
        set_state(state, slot, pb::JobState::Pending);
    }
    let delay = state.knobs.values().queue_delay;
    Some(wait_until(state, slot, crate::poll::after(delay)).await)
}

/// The resolved input of a job.
enum Input {
    Gcs(Vec<PathBuf>),
    BigQuery(PathBuf),
}

impl Input {
    fn files(&self) -> Vec<&Path> {
        match self {
            Input::Gcs(v) => v.iter().map(PathBuf::as_path).collect(),
            Input::BigQuery(p) => vec![p.as_path()],
        }
    }
}

/// Where the output goes: the partial file, the final file, what the job
/// claimed (its GCS directory or its BigQuery table file), and `output_info`.
struct Output {
    partial: PathBuf,
    final_path: PathBuf,
    claim: PathBuf,
    info: OutputInfo,
    /// With a Cloud Storage backend: the `gs://` directory the local output
    /// directory (`claim`) is uploaded to once published.
    remote: Option<GcsUri>,
}

fn resolve_input(dir: &Path, job: &pb::BatchPredictionJob) -> Result<Input, String> {
    let source = job
        .input_config
        .as_ref()
        .and_then(|c| c.source.as_ref())
        .ok_or("the job has no input source")?;
    match source {
        input_config::Source::GcsSource(g) => {
            let uris = g
                .uris
                .iter()
                .map(|u| GcsUri::parse_field(u, "input_uri").map_err(|e| e.to_string()))
                .collect::<Result<Vec<_>, _>>()?;
            storage::expand_gcs(dir, &uris).map(Input::Gcs)
        }
        input_config::Source::BigquerySource(b) => {
            let uri = BigQueryUri::parse_field(&b.input_uri, "input_uri", true)
                .map_err(|e| e.to_string())?;
            let path = storage::bq_path(dir, &uri, None)?;
            if path.is_file() {
                Ok(Input::BigQuery(path))
            } else {
                Err(format!(
                    "input table {uri} not found (the emulator looks for {})",
                    path.display()
                ))
            }
        }
        input_config::Source::VertexMultimodalDatasetSource(_) => {
            Err("the emulator does not support Vertex multimodal dataset input".into())
        }
    }
}

/// The file a job leaves in the output directory it claims, holding its
/// id: recovery and failure clean-up remove a claimed directory only when
/// it is this job's (or still empty), never another job's output.
pub(crate) const CLAIM_MARKER: &str = ".vertex-batch-claim";

/// Records `path` as the job's output claim, durably, before the claim is
/// made: a crash in between leaves a record naming a claim that may not
/// exist, never a claim no record names.
async fn record_claim(
    state: &Arc<EmuState>,
    slot: &Arc<JobSlot>,
    path: Option<&Path>,
) -> Result<(), String> {
    slot.lock().output_claim = path.map(|p| state.to_record_path(p));
    state
        .persist_durably(slot)
        .await
        .map_err(|e| format!("recording the output claim: {e}"))
}

/// Whether a claimed directory may be removed by job `id`: it holds `id`'s
/// marker, or nothing at all.
pub(crate) fn claim_is_ours(dir: &Path, id: u64) -> bool {
    match fs::read_to_string(dir.join(CLAIM_MARKER)) {
        Ok(owner) => owner.trim() == id.to_string(),
        Err(_) => fs::read_dir(dir).is_ok_and(|mut d| d.next().is_none()),
    }
}

async fn plan_output(
    state: &Arc<EmuState>,
    slot: &Arc<JobSlot>,
    job: &pb::BatchPredictionJob,
) -> Result<Output, String> {
    let id = slot.id;
    let dest = job
        .output_config
        .as_ref()
        .and_then(|c| c.destination.as_ref())
        .ok_or("the job has no output destination")?;
    let now = state.clock.now();
    match dest {
        output_config::Destination::GcsDestination(g) => {
            let prefix = GcsUri::parse_field(&g.output_uri_prefix, "output_uri")
                .map_err(|e| e.to_string())?;
            // With a Cloud Storage backend the output is written to a
            // staging directory of the job's, then uploaded.
            let base = match &state.gcs {
                Some(_) => staging_dir(state, id).join("out"),
                None => storage::gcs_path(&state.dir, &prefix)?,
            };
            // The service names the directory after the time; keep it unique.
            let b = base.clone();
            blocking(move || fs::create_dir_all(&b))
                .await
                .and_then(|r| r)
                .map_err(|e| format!("creating {}: {e}", base.display()))?;
            let mut t = now;
            let prefix_str = prefix.to_string();
            let (name, dir) = loop {
                let name = format!("prediction-model-{}", timefmt::format_millis(t));
                let dir = base.join(&name);
                // Recorded first, then claimed: `create_dir` makes the
                // directory this job's alone (two jobs never share one), and
                // the marker inside says whose it is.
                record_claim(state, slot, Some(&dir)).await?;
                let d = dir.clone();
                let made = blocking(move || {
                    fs::create_dir(&d)?;
                    fs::write(d.join(CLAIM_MARKER), id.to_string())
                })
                .await
                .and_then(|r| r);
                match made {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                        record_claim(state, slot, None).await?;
                        t += Duration::from_millis(1);
                        continue;
                    }
                    Err(e) => return Err(format!("creating {}: {e}", dir.display())),
                }
                // Remotely, a directory that already holds objects is taken.
                if let Some(gcs) = &state.gcs {
                    let remote = remote_dir(&prefix_str, &name)?;
                    let taken = futures::StreamExt::next(
                        &mut gcs
                            .list(&crate::data::dir_prefix(&remote).map_err(|e| e.to_string())?),
                    )
                    .await;
                    match taken {
                        None => {}
                        Some(Err(e)) => return Err(e.to_string()),
                        Some(Ok(_)) => {
                            t += Duration::from_millis(1);
                            continue;
                        }
                    }
                }
                break (name, dir);
            };
            Ok(Output {
                partial: dir.join(".predictions.jsonl.partial"),
                final_path: dir.join("predictions.jsonl"),
                claim: dir.clone(),
                remote: match &state.gcs {
                    Some(_) => Some(remote_dir(&prefix_str, &name)?),
                    None => None,
                },
                info: OutputInfo {
                    bigquery_output_table: String::new(),
                    output_location: Some(output_info::OutputLocation::GcsOutputDirectory(
                        format!("{}/{name}", prefix_str.trim_end_matches('/')),
                    )),
                },
            })
        }
        output_config::Destination::BigqueryDestination(b) => {
            let uri = BigQueryUri::parse_field(&b.output_uri, "output_uri", false)
                .map_err(|e| e.to_string())?;
            let table = uri
                .table()
                .map(str::to_owned)
                .unwrap_or_else(|| format!("predictions_{}", timefmt::format_compact(now)));
            let path = storage::bq_path(&state.dir, &uri, Some(&table))?;
            if let Some(parent) = path.parent() {
                let p = parent.to_path_buf();
                blocking(move || fs::create_dir_all(&p))
                    .await
                    .and_then(|r| r)
                    .map_err(|e| format!("creating {}: {e}", parent.display()))?;
            }
            // Claim the table (an empty file until the job publishes it), so
            // no other job can write it and an existing one is never
            // replaced; recorded before it is made.
            record_claim(state, slot, Some(&path)).await?;
            let p = path.clone();
            let made = blocking(move || {
                fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .open(&p)
                    .map(drop)
            })
            .await
            .and_then(|r| r);
            match made {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    // Not ours: forget it before failing.
                    record_claim(state, slot, None).await?;
                    return Err(format!(
                        "output table bq://{}.{}.{table} already exists",
                        uri.project(),
                        uri.dataset()
                    ));
                }
                Err(e) => return Err(format!("creating {}: {e}", path.display())),
            }
            Ok(Output {
                partial: path.with_file_name(format!(".{table}.jsonl.partial")),
                claim: path.clone(),
                remote: None,
                final_path: path,
                info: OutputInfo {
                    bigquery_output_table: table,
                    output_location: Some(output_info::OutputLocation::BigqueryOutputDataset(
                        format!("bq://{}.{}", uri.project(), uri.dataset()),
                    )),
                },
            })
        }
        output_config::Destination::VertexMultimodalDatasetDestination(_) => {
            Err("the emulator does not support Vertex multimodal dataset output".into())
        }
    }
}

/// A job's staging directory (Cloud Storage backend): downloaded inputs and
/// the output before it is uploaded.
fn staging_dir(state: &Arc<EmuState>, id: u64) -> PathBuf {
    state.dir.join("staging").join(id.to_string())
}

/// `gs://…/prefix/name`.
fn remote_dir(prefix: &str, name: &str) -> Result<GcsUri, String> {
    GcsUri::parse_field(
        &format!("{}/{name}", prefix.trim_end_matches('/')),
        "output_uri",
    )
    .map_err(|e| e.to_string())
}

/// A job's `gs://` input URIs, if its input is Cloud Storage.
fn gcs_input_uris(job: &pb::BatchPredictionJob) -> Option<Vec<String>> {
    match job.input_config.as_ref()?.source.as_ref()? {
        input_config::Source::GcsSource(g) => Some(g.uris.clone()),
        _ => None,
    }
}

/// Downloads a job's inputs from Cloud Storage into its staging directory,
/// expanding wildcards by listing, and returns the local files in order.
async fn stage_inputs(
    state: &Arc<EmuState>,
    gcs: &crate::storage::Storage,
    id: u64,
    uris: &[String],
) -> Result<Input, String> {
    use futures::TryStreamExt;
    use tokio::io::AsyncWriteExt;
    let mut objects = Vec::new();
    for u in uris {
        let uri = GcsUri::parse_field(u, "input_uri").map_err(|e| e.to_string())?;
        if !uri.has_wildcard() {
            match gcs.metadata(&uri).await.map_err(|e| e.to_string())? {
                Some(_) => objects.push(uri),
                None => return Err(format!("input {uri} not found")),
            }
            continue;
        }
        let object = uri.object();
        let literal = &object[..object.find(['*', '?', '[']).unwrap_or(object.len())];
        let prefix = GcsUri::parse_field(&format!("gs://{}/{literal}", uri.bucket()), "input_uri")
            .map_err(|e| e.to_string())?;
        let glob = storage::Glob::new(object);
        let mut found: Vec<GcsUri> = gcs
            .list(&prefix)
            .map_ok(|o| o.uri().clone())
            .try_filter(|o| futures::future::ready(glob.matches(o.object())))
            .try_collect()
            .await
            .map_err(|e| e.to_string())?;
        if found.is_empty() {
            return Err(format!("input {uri} matched no objects"));
        }
        found.sort_by(|a, b| a.object().cmp(b.object()));
        objects.extend(found);
    }
    let dir = staging_dir(state, id).join("in");
    tokio::fs::create_dir_all(&dir)
        .await
        .map_err(|e| format!("creating {}: {e}", dir.display()))?;
    let mut files = Vec::with_capacity(objects.len());
    for (i, uri) in objects.iter().enumerate() {
        let path = dir.join(format!("input-{i:05}.jsonl"));
        let mut file = tokio::fs::File::create(&path)
            .await
            .map_err(|e| format!("creating {}: {e}", path.display()))?;
        let mut bytes = gcs.read(uri, None).await.map_err(|e| e.to_string())?;
        while let Some(chunk) = bytes.try_next().await.map_err(|e| e.to_string())? {
            file.write_all(&chunk)
                .await
                .map_err(|e| format!("writing {}: {e}", path.display()))?;
        }
        file.flush()
            .await
            .map_err(|e| format!("writing {}: {e}", path.display()))?;
        files.push(path);
    }
    Ok(Input::Gcs(files))
}

/// Uploads every file below the local directory `local` to `remote`,
/// keeping relative names (`predictions.jsonl`,
/// `incremental_predictions/predictions_0001.jsonl`).
async fn upload_dir(
    gcs: &crate::storage::Storage,
    local: &Path,
    remote: &GcsUri,
) -> Result<(), String> {
    let root = local.to_path_buf();
    let mut files = blocking(move || -> Result<Vec<PathBuf>, String> {
        let mut files = Vec::new();
        let mut todo = vec![root];
        while let Some(d) = todo.pop() {
            for entry in fs::read_dir(&d).map_err(|e| format!("listing {}: {e}", d.display()))? {
                let path = entry.map_err(|e| e.to_string())?.path();
                if path.is_dir() {
                    todo.push(path);
                } else if path.file_name().is_some_and(|n| n != CLAIM_MARKER) {
                    files.push(path);
                }
            }
        }
        Ok(files)
    })
    .await
    .map_err(|e| e.to_string())??;
    files.sort();
    for path in files {
        let Ok(rel) = path.strip_prefix(local) else {
            continue;
        };
        let rel = rel.to_string_lossy().replace('\\', "/");
        let uri = GcsUri::parse_field(
            &format!("{}/{rel}", remote.to_string().trim_end_matches('/')),
            "output_uri",
        )
        .map_err(|e| e.to_string())?;
        let file = tokio::fs::File::open(&path)
            .await
            .map_err(|e| format!("opening {}: {e}", path.display()))?;
        gcs.upload(&uri, file)
            .await
            .map_err(|e| format!("uploading the output: {e}"))?;
    }
    Ok(())
}

/// Counts the rows (non-blank lines) of the input files, never holding
/// more than `cap` bytes of a line.
fn count_rows(files: &[PathBuf], cap: usize) -> io::Result<u64> {
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

fn model_ctx(job: &pb::BatchPredictionJob) -> ModelCtx {
    let params = job
        .model_parameters
        .as_ref()
        .and_then(|v| serde_json::to_value(v).ok());
    let max_output_tokens = params
        .as_ref()
        .and_then(|p| {
            p.get("maxOutputTokens")
                .or_else(|| p.get("max_output_tokens"))
        })
        .and_then(serde_json::Value::as_f64)
        .map(|m| m.max(0.0) as u64);
    let model_version = job
        .model
        .rsplit('/')
        .next()
        .unwrap_or(&job.model)
        .split('@')
        .next()
        .unwrap_or_default()
        .to_owned();
    ModelCtx {
        model_version,
        max_output_tokens,
        fail_rows_containing: None,
    }
}

/// Row tallies of a run.
#[derive(Default)]
struct Tally {
    ok: u64,
    failed: u64,
    errors: Vec<rpc::Status>,
}

async fn execute(state: &Arc<EmuState>, slot: &Arc<JobSlot>) {
    let job = slot.snapshot();
    let knobs = state.knobs.values();
    let resolved = match (&state.gcs, gcs_input_uris(&job)) {
        (Some(gcs), Some(uris)) => stage_inputs(state, gcs, slot.id, &uris).await,
        _ => resolve_input(&state.dir, &job),
    };
    let input = match resolved {
        Ok(i) => i,
        Err(e) => return finish(state, slot, pb::JobState::Failed, Some((5, e))),
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
                Some((13, format!("reading input: {e}"))),
            )
        }
    };
    if total == 0 {
        return finish(
            state,
            slot,
            pb::JobState::Failed,
            Some((3, "the input holds no requests".into())),
        );
    }
    if total > knobs.max_requests_per_job {
        return finish(
            state,
            slot,
            pb::JobState::Failed,
            Some((
                3,
                format!(
                    "the input holds {total} requests; a batch job takes at most {}",
                    knobs.max_requests_per_job
                ),
            )),
        );
    }
    let output = match plan_output(state, slot, &job).await {
        Ok(o) => o,
        Err(e) => return finish(state, slot, pb::JobState::Failed, Some((3, e))),
    };
    {
        let mut rec = slot.lock();
        rec.partial_output = Some(state.to_record_path(&output.partial));
        rec.output_claim = Some(state.to_record_path(&output.claim));
        rec.job.completion_stats = Some(pb::CompletionStats {
            successful_count: 0,
            failed_count: 0,
            incomplete_count: total as i64,
            successful_forecast_point_count: 0,
        });
        rec.job.output_info = None;
        rec.job.partial_failures.clear();
    }
    set_state(state, slot, pb::JobState::Running);
    tracing::info!(job = slot.id, rows = total, "job running");

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
    let mut ctx = model_ctx(&job);
    ctx.fail_rows_containing = knobs.fail_rows_containing.clone();
    let bigquery = matches!(input, Input::BigQuery(_));
    let started = Instant::now();
    let mut tally = Tally::default();
    let result = stream_rows(
        state,
        slot,
        &files,
        &output,
        &ctx,
        bigquery,
        total,
        per_row,
        chunk,
        started,
        knobs.max_run_time,
        &mut tally,
    )
    .await;
    let done = tally.ok + tally.failed;
    let stats = |rec: &mut super::state::JobRecord| {
        rec.job.completion_stats = Some(pb::CompletionStats {
            successful_count: tally.ok as i64,
            failed_count: tally.failed as i64,
            incomplete_count: total.saturating_sub(done) as i64,
            successful_forecast_point_count: 0,
        });
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
                .map_err(|e| e.to_string());
            if let (Ok(()), Some(gcs), Some(remote)) = (&publish, &state.gcs, &output.remote) {
                publish = upload_dir(gcs, &output.claim, remote).await;
            }
            {
                let mut rec = slot.lock();
                stats(&mut rec);
                if publish.is_ok() {
                    rec.job.output_info = Some(output.info.clone());
                }
            }
            if let Err(e) = publish {
                return finish(
                    state,
                    slot,
                    pb::JobState::Failed,
                    Some((13, format!("publishing output: {e}"))),
                );
            }
            match end {
                RowsEnd::Cancelled => cancelled(state, slot),
                RowsEnd::TimedOut => finish(
                    state,
                    slot,
                    pb::JobState::Cancelled,
                    Some((
                        4,
                        "the job ran longer than the run-time limit and was cancelled".into(),
                    )),
                ),
                _ if done != total => finish(
                    state,
                    slot,
                    pb::JobState::Failed,
                    Some((
                        10,
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
                    Some((
                        3,
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
                Some((13, format!("writing output: {e}"))),
            )
        }
    }
}

/// Where output rows go: the partial output file, plus the quirks the
/// knobs ask for (rows out of order, rows twice, an incremental chunk).
struct Sink {
    main: BufWriter<File>,
    /// Rows held back to be written in a shuffled order.
    window: Vec<Vec<u8>>,
    shuffle: bool,
    rng: fastrand::Rng,
    duplicate_every: u64,
    pushed: u64,
    /// The incremental chunk and how many rows it still takes.
    incremental: Option<(BufWriter<File>, u64)>,
}

/// Rows shuffled together when output order is scrambled.
const SHUFFLE_WINDOW: usize = 64;

impl Sink {
    fn new(
        partial: &Path,
        final_path: &Path,
        gcs: bool,
        total: u64,
        knobs: &super::KnobValues,
        seed: u64,
    ) -> io::Result<Sink> {
        let main = BufWriter::with_capacity(1 << 18, File::create(partial)?);
        let incremental = match (
            gcs && knobs.incremental_chunk,
            Self::incremental_paths(final_path),
        ) {
            (true, Some((partial, _))) => {
                if let Some(parent) = partial.parent() {
                    fs::create_dir_all(parent)?;
                }
                let rows = (total / 2).min(1000);
                Some((BufWriter::new(File::create(partial)?), rows))
            }
            _ => None,
        };
        Ok(Sink {
            main,
            window: Vec::new(),
            shuffle: knobs.shuffle_output,
            rng: fastrand::Rng::with_seed(seed),
            duplicate_every: knobs.duplicate_every,
            pushed: 0,
            incremental,
        })
    }

    /// The incremental chunk's partial and final paths (GCS output only).
    fn incremental_paths(final_path: &Path) -> Option<(PathBuf, PathBuf)> {
        let dir = final_path.parent()?.join("incremental_predictions");
        Some((
            dir.join(".predictions_0001.jsonl.partial"),
            dir.join("predictions_0001.jsonl"),
        ))
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
        if let Some((w, left)) = &mut self.incremental {
            if *left > 0 {
                *left -= 1;
                w.write_all(line)?;
                w.write_all(b"\n")?;
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
        if let Some((w, _)) = &mut self.incremental {
            w.flush()?;
        }
        self.main.flush()
    }

    fn sync(&mut self) -> io::Result<()> {
        if let Some((w, _)) = &mut self.incremental {
            w.get_ref().sync_all()?;
        }
        self.main.get_ref().sync_all()
    }

    /// Renames the partial files into place (the incremental chunk first).
    fn publish(partial: &Path, final_path: &Path) -> io::Result<()> {
        if let Some((inc_partial, done)) = Self::incremental_paths(final_path) {
            if inc_partial.exists() {
                fs::rename(inc_partial, done)?;
            }
        }
        fs::rename(partial, final_path)
    }
}

enum RowsEnd {
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

/// Reads one line (with its newline) into `buf`, keeping at most `cap`
/// bytes: a longer line is consumed to its end without being stored, so
/// memory stays bounded whatever the input.
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
            if buf.len() + take > cap {
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
    /// Processes up to `n` rows; true when the input is exhausted.
    fn chunk(&mut self, n: u64, processed_time: &str) -> io::Result<bool> {
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
                            code: 3,
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

/// Runs `f` on the blocking pool (a panic there is an I/O error here).
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> io::Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| io::Error::other(format!("a blocking task failed: {e}")))
}

#[allow(clippy::too_many_arguments)]
async fn stream_rows(
    state: &Arc<EmuState>,
    slot: &Arc<JobSlot>,
    files: &[&Path],
    output: &Output,
    ctx: &ModelCtx,
    bigquery: bool,
    total: u64,
    per_row: Duration,
    chunk: u64,
    started: Instant,
    max_run: Duration,
    tally: &mut Tally,
) -> io::Result<RowsEnd> {
    let knobs = state.knobs.values();
    let max_line = knobs.max_line_bytes;
    let io_delay = knobs.io_delay;
    let (partial, final_path) = (output.partial.clone(), output.final_path.clone());
    let seed = slot.id;
    let writer = blocking(move || Sink::new(&partial, &final_path, !bigquery, total, &knobs, seed))
        .await??;
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
        let target =
            started
                .checked_add(per_row.saturating_mul(
                    u32::try_from((rows.done + chunk).min(total)).unwrap_or(u32::MAX),
                ))
                .unwrap_or_else(|| crate::poll::after(Duration::MAX));
        let until = if per_row.is_zero() {
            Instant::now()
        } else {
            target
        };
        match wait_until(state, slot, until).await {
            Wake::Elapsed => {}
            Wake::Cancel => break RowsEnd::Cancelled,
            Wake::Stop => {
                *tally = std::mem::take(&mut rows.tally);
                return Ok(RowsEnd::Stopped);
            }
        }
        if started.elapsed() > max_run {
            break RowsEnd::TimedOut;
        }
        let processed_time = timefmt::format_millis(state.clock.now());
        let (back, result) = blocking(move || {
            let r = rows.chunk(chunk, &processed_time);
            (rows, r)
        })
        .await?;
        rows = back;
        let exhausted = match result {
            Ok(e) => e,
            Err(e) => {
                *tally = std::mem::take(&mut rows.tally);
                return Err(e);
            }
        };
        publish_progress(
            state,
            slot,
            &rows.tally,
            total,
            rows.done,
            &mut last_persist,
        )
        .await;
        if exhausted {
            break RowsEnd::Finished;
        }
    };
    let finished = matches!(end, RowsEnd::Finished);
    let (back, result) = blocking(move || {
        let r = rows
            .writer
            .flush()
            .and_then(|()| if finished { rows.writer.sync() } else { Ok(()) });
        (rows, r)
    })
    .await?;
    rows = back;
    *tally = std::mem::take(&mut rows.tally);
    result?;
    if finished {
        publish_progress(state, slot, tally, total, rows.done, &mut last_persist).await;
    }
    Ok(end)
}

async fn publish_progress(
    state: &Arc<EmuState>,
    slot: &Arc<JobSlot>,
    tally: &Tally,
    total: u64,
    done: u64,
    last_persist: &mut Instant,
) {
    {
        let mut rec = slot.lock();
        rec.job.completion_stats = Some(pb::CompletionStats {
            successful_count: tally.ok as i64,
            failed_count: tally.failed as i64,
            incomplete_count: total.saturating_sub(done) as i64,
            successful_forecast_point_count: 0,
        });
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

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Lines come back exactly as split on '\n' when they fit, as their
        /// length when they do not, whatever the buffer boundaries.
        #[test]
        fn capped_lines_match_a_plain_split(
            text in proptest::collection::vec(prop_oneof![Just(b'\n'), Just(b'a'), any::<u8>()], 0..400),
            cap in 1usize..64,
            buf_size in 1usize..16,
        ) {
            let mut r = BufReader::with_capacity(buf_size, &text[..]);
            let mut buf = Vec::new();
            let mut want: Vec<&[u8]> = text.split_inclusive(|b| *b == b'\n').collect();
            want.reverse();
            loop {
                match read_line_capped(&mut r, &mut buf, cap).unwrap() {
                    LineRead::Eof => break,
                    LineRead::Line => {
                        let w = want.pop().unwrap();
                        prop_assert!(w.len() <= cap);
                        prop_assert_eq!(&buf[..], w);
                    }
                    LineRead::TooLong(n) => {
                        let w = want.pop().unwrap();
                        prop_assert!(w.len() > cap);
                        prop_assert_eq!(n, w.len() as u64);
                        prop_assert!(buf.len() <= cap);
                    }
                }
            }
            prop_assert!(want.is_empty());
        }
    }
}
