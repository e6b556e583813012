//! Where a job's rows come from and go to: resolving and staging its input
//! (local files, or downloaded from Cloud Storage), counting its rows, and
//! planning and claiming its output (a directory in the service's layout,
//! or a BigQuery table file), uploaded when the job publishes.

use std::{
    fs, io,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use super::{
    error::EmuError,
    state::{blocking, EmuState, JobSlot},
    storage,
};
use crate::{
    proto::aiplatform::{
        self as pb,
        batch_prediction_job::{input_config, output_config, output_info, OutputInfo},
    },
    time,
    uri::{BigQueryUri, GcsUri},
};

/// The resolved input of a job.
pub(crate) enum Input {
    Gcs(Vec<PathBuf>),
    BigQuery(PathBuf),
}

impl Input {
    pub(crate) fn files(&self) -> Vec<&Path> {
        match self {
            Input::Gcs(v) => v.iter().map(PathBuf::as_path).collect(),
            Input::BigQuery(p) => vec![p.as_path()],
        }
    }
}

/// Where the output goes: the partial file, the final file, what the job
/// claimed (its GCS directory or its BigQuery table file), and `output_info`.
pub(crate) struct Output {
    pub(crate) partial: PathBuf,
    pub(crate) final_path: PathBuf,
    pub(crate) claim: PathBuf,
    pub(crate) info: OutputInfo,
    /// With a Cloud Storage backend: the `gs://` directory the local output
    /// directory (`claim`) is uploaded to once published.
    pub(crate) remote: Option<GcsUri>,
    /// With a BigQuery backend: the output table (created empty when the
    /// job starts) and its columns, loaded from `final_path` once published.
    pub(crate) table: Option<(BigQueryUri, Vec<crate::bigquery::Field>)>,
}

pub(crate) fn resolve_input(dir: &Path, job: &pb::BatchPredictionJob) -> Result<Input, EmuError> {
    let source = job
        .input_config
        .as_ref()
        .and_then(|c| c.source.as_ref())
        .ok_or_else(|| EmuError::invalid("the job has no input source"))?;
    match source {
        input_config::Source::GcsSource(g) => {
            let uris = g
                .uris
                .iter()
                .map(|u| GcsUri::parse_field(u, "input_uri").map_err(EmuError::from))
                .collect::<Result<Vec<_>, _>>()?;
            storage::expand_gcs(dir, &uris).map(Input::Gcs)
        }
        input_config::Source::BigquerySource(b) => {
            let uri = BigQueryUri::parse_field(&b.input_uri, "input_uri", true)
                .map_err(EmuError::from)?;
            let path = storage::bq_path(dir, &uri, None)?;
            if path.is_file() {
                Ok(Input::BigQuery(path))
            } else {
                Err(EmuError::not_found(format!(
                    "input table {uri} not found (the emulator looks for {})",
                    path.display()
                )))
            }
        }
        input_config::Source::VertexMultimodalDatasetSource(_) => Err(EmuError::invalid(
            "the emulator does not support Vertex multimodal dataset input",
        )),
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
) -> Result<(), EmuError> {
    slot.lock().output_claim = path.map(|p| state.to_record_path(p));
    state
        .persist_durably(slot)
        .await
        .map_err(|e| EmuError::internal(format!("recording the output claim: {e}")))
}

/// Claims `path` for the job: records it (durably), then makes it with
/// `make` on the blocking pool. `Ok(false)` when it already existed — not
/// this job's — and the record is forgotten again.
async fn claim(
    state: &Arc<EmuState>,
    slot: &Arc<JobSlot>,
    path: &Path,
    make: impl FnOnce(&Path) -> io::Result<()> + Send + 'static,
) -> Result<bool, EmuError> {
    record_claim(state, slot, Some(path)).await?;
    let p = path.to_path_buf();
    match blocking(move || make(&p)).await.and_then(|r| r) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            record_claim(state, slot, None).await?;
            Ok(false)
        }
        Err(e) => Err(EmuError::internal(format!(
            "creating {}: {e}",
            path.display()
        ))),
    }
}

/// Whether a claimed directory may be removed by job `id`: it holds `id`'s
/// marker, or nothing at all.
pub(crate) fn claim_is_ours(dir: &Path, id: u64) -> bool {
    match fs::read_to_string(dir.join(CLAIM_MARKER)) {
        Ok(owner) => owner.trim() == id.to_string(),
        Err(_) => fs::read_dir(dir).is_ok_and(|mut d| d.next().is_none()),
    }
}

/// Releases an output claim job `id` did not publish: its directory, only
/// when it is this job's or empty (a record may name a claim it never made
/// — a crash in between — and that name may since be another job's
/// output); or its table file — with `only_empty`, only while nothing was
/// written to it.
pub(crate) fn release_claim(path: &Path, id: u64, only_empty: bool) -> std::io::Result<()> {
    if path.is_dir() {
        if claim_is_ours(path, id) {
            fs::remove_dir_all(path)?;
        }
        return Ok(());
    }
    if !only_empty || fs::metadata(path).is_ok_and(|m| m.len() == 0) {
        fs::remove_file(path)?;
    }
    Ok(())
}

pub(crate) async fn plan_output(
    state: &Arc<EmuState>,
    slot: &Arc<JobSlot>,
    job: &pb::BatchPredictionJob,
) -> Result<Output, EmuError> {
    let id = slot.id;
    let dest = job
        .output_config
        .as_ref()
        .and_then(|c| c.destination.as_ref())
        .ok_or_else(|| EmuError::invalid("the job has no output destination"))?;
    let now = state.clock.now();
    match dest {
        output_config::Destination::GcsDestination(g) => {
            let prefix =
                GcsUri::parse_field(&g.output_uri_prefix, "output_uri").map_err(EmuError::from)?;
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
                .map_err(|e| EmuError::internal(format!("creating {}: {e}", base.display())))?;
            let mut t = now;
            let prefix_str = prefix.to_string();
            // A re-run (after a restart) takes the directory its first run
            // named in `output_info` again when it can: a client that saw
            // it keeps a valid name, re-exported chunks replace the
            // same-numbered ones of the first run.
            let mut again = previous_gcs_dir(job, &prefix_str);
            let (name, dir) = loop {
                let reused = again.take();
                let is_reused = reused.is_some();
                let name = reused
                    .unwrap_or_else(|| format!("prediction-model-{}", time::format_millis(t)));
                let dir = base.join(&name);
                // Recorded first, then claimed: `create_dir` makes the
                // directory this job's alone (two jobs never share one), and
                // the marker inside says whose it is.
                let made = claim(state, slot, &dir, move |d| {
                    fs::create_dir(d)?;
                    fs::write(d.join(CLAIM_MARKER), id.to_string())
                })
                .await?;
                if !made {
                    if !is_reused {
                        t += Duration::from_millis(1);
                    }
                    continue;
                }
                // Remotely, a directory that already holds objects is taken
                // (but for this job's own, from its interrupted run).
                if let (Some(gcs), false) = (&state.gcs, is_reused) {
                    let remote = remote_dir(&prefix_str, &name)?;
                    let taken = futures::StreamExt::next(&mut gcs.list(
                        &crate::batch::read::open::dir_prefix(&remote).map_err(EmuError::from)?,
                    ))
                    .await;
                    match taken {
                        None => {}
                        Some(Err(e)) => return Err(e.into()),
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
                table: None,
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
                .map_err(EmuError::from)?;
            // A re-run takes the table its first run named again.
            let table = uri
                .table()
                .map(str::to_owned)
                .or_else(|| previous_bq_table(job))
                .unwrap_or_else(|| format!("predictions_{}", time::format_compact(now)));
            if let Some(bq) = &state.bq {
                return plan_bq_output(state, slot, bq, job, &uri, table).await;
            }
            let path = storage::bq_path(&state.dir, &uri, Some(&table))?;
            if let Some(parent) = path.parent() {
                let p = parent.to_path_buf();
                blocking(move || fs::create_dir_all(&p))
                    .await
                    .and_then(|r| r)
                    .map_err(|e| {
                        EmuError::internal(format!("creating {}: {e}", parent.display()))
                    })?;
            }
            // Claim the table (an empty file until the job publishes it), so
            // no other job can write it and an existing one is never
            // replaced; recorded before it is made.
            let made = claim(state, slot, &path, |p| {
                fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .open(p)
                    .map(drop)
            })
            .await?;
            if !made {
                return Err(EmuError::new(
                    tonic::Code::AlreadyExists,
                    format!(
                        "output table bq://{}.{}.{table} already exists",
                        uri.project(),
                        uri.dataset()
                    ),
                ));
            }
            Ok(Output {
                partial: path.with_file_name(format!(".{table}.jsonl.partial")),
                claim: path.clone(),
                remote: None,
                table: None,
                final_path: path,
                info: OutputInfo {
                    bigquery_output_table: table,
                    output_location: Some(output_info::OutputLocation::BigqueryOutputDataset(
                        format!("bq://{}.{}", uri.project(), uri.dataset()),
                    )),
                },
            })
        }
        output_config::Destination::VertexMultimodalDatasetDestination(_) => Err(
            EmuError::invalid("the emulator does not support Vertex multimodal dataset output"),
        ),
    }
}

/// The output of a job writing to BigQuery (the backend): the table,
/// created empty now with the input's columns (those the service carries:
/// no ARRAY, STRUCT, RANGE, DATETIME or GEOGRAPHY) plus `response`,
/// `status` and `processed_time`, and a local file loaded into it when the
/// job publishes. A table that exists is refused, as the service refuses
/// it — unless it is this job's own, still empty (a restarted job).
async fn plan_bq_output(
    state: &Arc<EmuState>,
    slot: &Arc<JobSlot>,
    bq: &crate::bigquery::BigQuery,
    job: &pb::BatchPredictionJob,
    dataset: &BigQueryUri,
    table: String,
) -> Result<Output, EmuError> {
    use crate::bigquery::Field;
    let id = slot.id;
    let target = BigQueryUri::parse_field(
        &format!("bq://{}.{}.{table}", dataset.project(), dataset.dataset()),
        "output_uri",
        true,
    )
    .map_err(EmuError::from)?;
    let mut columns: Vec<Field> = match bq_input_uri(job) {
        Some(input) => bq
            .table(&input)
            .await
            .map_err(EmuError::from)?
            .map(|t| t.schema().to_vec())
            .unwrap_or_default(),
        None => vec![Field::new("request", "JSON")],
    };
    // The family's reserved output columns (SERVICE.md): text embeddings
    // write `predictions`, open models `id` and `response` and drop
    // `method` and `url`; the others `response`.
    let family = crate::family::Family::of_job_model(&job.model);
    let dropped: &[&str] = match family {
        crate::family::Family::OpenModel => &["method", "url", "id"],
        crate::family::Family::TextEmbedding => &["predictions"],
        _ => &[],
    };
    const RESERVED: [&str; 3] = ["response", "status", "processed_time"];
    columns.retain(|f| !dropped.contains(&f.name.as_str()));
    columns.retain(|f| {
        let kind = f.kind.to_ascii_uppercase();
        !f.is_repeated()
            && !matches!(
                kind.as_str(),
                "RECORD" | "STRUCT" | "RANGE" | "DATETIME" | "GEOGRAPHY"
            )
            && !RESERVED.contains(&f.name.as_str())
    });
    match family {
        crate::family::Family::TextEmbedding => columns.push(Field::new("predictions", "STRING")),
        crate::family::Family::OpenModel => {
            columns.push(Field::new("id", "STRING"));
            columns.push(Field::new("response", "JSON"));
        }
        _ => columns.push(Field::new("response", "JSON")),
    }
    columns.push(Field::new("status", "STRING"));
    columns.push(Field::new("processed_time", "TIMESTAMP"));
    let owner = format!("vertex-batch emulator job {id}");
    let made = bq
        .create_table(&target, &columns, Some(&owner))
        .await
        .map_err(EmuError::from)?;
    if made.is_none() {
        let found = bq.table(&target).await.map_err(EmuError::from)?;
        let ours = found
            .as_ref()
            .is_some_and(|t| t.description() == Some(owner.as_str()));
        if !ours {
            return Err(EmuError::new(
                tonic::Code::AlreadyExists,
                format!("output table {target} already exists"),
            ));
        }
        // This job's own table, from a run a restart interrupted: the rows
        // that run exported go, so the re-run's are the only ones.
        if found.is_some_and(|t| t.rows() > 0) {
            bq.delete_table(&target).await.map_err(EmuError::from)?;
            bq.create_table(&target, &columns, Some(&owner))
                .await
                .map_err(EmuError::from)?
                .ok_or_else(|| {
                    EmuError::internal(format!("output table {target} could not be made again"))
                })?;
        }
    }
    let dir = staging_dir(state, id).join("out");
    let d = dir.clone();
    blocking(move || fs::create_dir_all(&d))
        .await
        .and_then(|r| r)
        .map_err(|e| EmuError::internal(format!("creating {}: {e}", dir.display())))?;
    let path = dir.join(format!("{table}.jsonl"));
    record_claim(state, slot, Some(&dir)).await?;
    Ok(Output {
        partial: dir.join(format!(".{table}.jsonl.partial")),
        claim: dir,
        remote: None,
        table: Some((target, columns)),
        final_path: path,
        info: OutputInfo {
            bigquery_output_table: table,
            output_location: Some(output_info::OutputLocation::BigqueryOutputDataset(format!(
                "bq://{}.{}",
                dataset.project(),
                dataset.dataset()
            ))),
        },
    })
}

/// The output directory name (`prediction-model-…`) a job's earlier run
/// named in its `output_info`, below `prefix`.
fn previous_gcs_dir(job: &pb::BatchPredictionJob, prefix: &str) -> Option<String> {
    let Some(output_info::OutputLocation::GcsOutputDirectory(d)) =
        job.output_info.as_ref()?.output_location.as_ref()
    else {
        return None;
    };
    let name = d
        .strip_prefix(prefix.trim_end_matches('/'))?
        .strip_prefix('/')?;
    (name.starts_with("prediction-model-") && !name.contains(['/', '\\']) && name != "..")
        .then(|| name.to_owned())
}

/// The output table a job's earlier run named in its `output_info`.
fn previous_bq_table(job: &pb::BatchPredictionJob) -> Option<String> {
    let info = job.output_info.as_ref()?;
    let table = &info.bigquery_output_table;
    (!table.is_empty() && table.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
        .then(|| table.clone())
}

/// A job's `bq://` input table, if its input is BigQuery.
pub(crate) fn bq_input_uri(job: &pb::BatchPredictionJob) -> Option<BigQueryUri> {
    match job.input_config.as_ref()?.source.as_ref()? {
        input_config::Source::BigquerySource(b) => {
            BigQueryUri::parse_field(&b.input_uri, "input_uri", true).ok()
        }
        _ => None,
    }
}

/// Downloads a job's input table from BigQuery (the backend) into its
/// staging directory, a page at a time, as one row per line.
pub(crate) async fn stage_bq_input(
    state: &Arc<EmuState>,
    bq: &crate::bigquery::BigQuery,
    id: u64,
    table: &BigQueryUri,
) -> Result<Input, EmuError> {
    use futures::StreamExt;
    use tokio::io::AsyncWriteExt;
    if bq.table(table).await.map_err(EmuError::from)?.is_none() {
        return Err(EmuError::not_found(format!(
            "input table {table} not found"
        )));
    }
    let dir = staging_dir(state, id);
    tokio::fs::create_dir_all(&dir)
        .await
        .map_err(|e| EmuError::internal(format!("creating {}: {e}", dir.display())))?;
    let path = dir.join("input.jsonl");
    let mut file = tokio::fs::File::create(&path)
        .await
        .map_err(|e| EmuError::internal(format!("creating {}: {e}", path.display())))?;
    let mut pages = bq.lines(table);
    while let Some(page) = pages.next().await {
        let page = page.map_err(EmuError::from)?;
        file.write_all(&page)
            .await
            .map_err(|e| EmuError::internal(format!("writing {}: {e}", path.display())))?;
    }
    file.flush()
        .await
        .map_err(|e| EmuError::internal(format!("writing {}: {e}", path.display())))?;
    Ok(Input::BigQuery(path))
}

/// Appends an output file (an exported chunk) to its BigQuery table with
/// the load job `job_id`, streamed (one chunk in memory); the rows loaded.
pub(crate) async fn load_output(
    bq: &crate::bigquery::BigQuery,
    job_id: &str,
    file: &Path,
    table: &BigQueryUri,
    columns: &[crate::bigquery::Field],
) -> Result<u64, EmuError> {
    use tokio::io::AsyncReadExt;
    let mut f = tokio::fs::File::open(file)
        .await
        .map_err(|e| EmuError::internal(format!("reading {}: {e}", file.display())))?;
    let mut w = bq
        .append_writer(table, columns, job_id)
        .await
        .map_err(EmuError::from)?;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f
            .read(&mut buf)
            .await
            .map_err(|e| EmuError::internal(format!("reading {}: {e}", file.display())))?;
        if n == 0 {
            break;
        }
        w.write(&buf[..n]).await.map_err(EmuError::from)?;
    }
    w.finish()
        .await
        .map(|job| job.rows())
        .map_err(EmuError::from)
}

/// A job's staging directory (Cloud Storage backend): downloaded inputs and
/// the output before it is uploaded.
pub(crate) fn staging_dir(state: &Arc<EmuState>, id: u64) -> PathBuf {
    state.dir.join("staging").join(id.to_string())
}

/// `gs://…/prefix/name`.
fn remote_dir(prefix: &str, name: &str) -> Result<GcsUri, EmuError> {
    GcsUri::parse_field(
        &format!("{}/{name}", prefix.trim_end_matches('/')),
        "output_uri",
    )
    .map_err(EmuError::from)
}

/// A job's `gs://` input URIs, if its input is Cloud Storage.
pub(crate) fn gcs_input_uris(job: &pb::BatchPredictionJob) -> Option<Vec<String>> {
    match job.input_config.as_ref()?.source.as_ref()? {
        input_config::Source::GcsSource(g) => Some(g.uris.clone()),
        _ => None,
    }
}

/// Downloads a job's inputs from Cloud Storage into its staging directory,
/// expanding wildcards by listing, and returns the local files in order.
pub(crate) async fn stage_inputs(
    state: &Arc<EmuState>,
    gcs: &crate::storage::Storage,
    id: u64,
    uris: &[String],
) -> Result<Input, EmuError> {
    use futures::TryStreamExt;
    use tokio::io::AsyncWriteExt;
    let mut objects = Vec::new();
    for u in uris {
        let uri = GcsUri::parse_field(u, "input_uri").map_err(EmuError::from)?;
        if !uri.has_wildcard() {
            match gcs.metadata(&uri).await.map_err(EmuError::from)? {
                Some(_) => objects.push(uri),
                None => return Err(EmuError::not_found(format!("input {uri} not found"))),
            }
            continue;
        }
        let object = uri.object();
        let literal = &object[..object.find(['*', '?', '[']).unwrap_or(object.len())];
        let prefix = GcsUri::parse_field(&format!("gs://{}/{literal}", uri.bucket()), "input_uri")
            .map_err(EmuError::from)?;
        let glob = storage::Glob::new(object);
        let mut found: Vec<GcsUri> = gcs
            .list(&prefix)
            .map_ok(|o| o.uri().clone())
            .try_filter(|o| futures::future::ready(glob.matches(o.object())))
            .try_collect()
            .await
            .map_err(EmuError::from)?;
        if found.is_empty() {
            return Err(EmuError::not_found(format!(
                "input {uri} matched no objects"
            )));
        }
        found.sort_by(|a, b| a.object().cmp(b.object()));
        objects.extend(found);
    }
    let dir = staging_dir(state, id).join("in");
    tokio::fs::create_dir_all(&dir)
        .await
        .map_err(|e| EmuError::internal(format!("creating {}: {e}", dir.display())))?;
    let mut files = Vec::with_capacity(objects.len());
    for (i, uri) in objects.iter().enumerate() {
        let path = dir.join(format!("input-{i:05}.jsonl"));
        let mut file = tokio::fs::File::create(&path)
            .await
            .map_err(|e| EmuError::internal(format!("creating {}: {e}", path.display())))?;
        let mut bytes = gcs.read(uri, None).await.map_err(EmuError::from)?;
        while let Some(chunk) = bytes.try_next().await.map_err(EmuError::from)? {
            file.write_all(&chunk)
                .await
                .map_err(|e| EmuError::internal(format!("writing {}: {e}", path.display())))?;
        }
        file.flush()
            .await
            .map_err(|e| EmuError::internal(format!("writing {}: {e}", path.display())))?;
        files.push(path);
    }
    Ok(Input::Gcs(files))
}

/// Uploads every file below the local directory `local` to `remote`,
/// keeping relative names (`predictions.jsonl`), except those in `skip`
/// (exported chunks uploaded already) and hidden ones (names starting with
/// '.': the claim marker, partial files).
pub(crate) async fn upload_dir(
    gcs: &crate::storage::Storage,
    local: &Path,
    remote: &GcsUri,
    skip: &[PathBuf],
) -> Result<(), EmuError> {
    let root = local.to_path_buf();
    let mut files = blocking(move || -> Result<Vec<PathBuf>, EmuError> {
        let mut files = Vec::new();
        let mut todo = vec![root];
        while let Some(d) = todo.pop() {
            for entry in fs::read_dir(&d)
                .map_err(|e| EmuError::internal(format!("listing {}: {e}", d.display())))?
            {
                let path = entry.map_err(EmuError::from)?.path();
                if path.is_dir() {
                    todo.push(path);
                } else if path
                    .file_name()
                    .is_some_and(|n| !n.to_string_lossy().starts_with('.'))
                {
                    files.push(path);
                }
            }
        }
        Ok(files)
    })
    .await
    .map_err(EmuError::from)??;
    files.sort();
    for path in files.iter().filter(|p| !skip.contains(p)) {
        upload_file(gcs, local, remote, path).await?;
    }
    Ok(())
}

/// Uploads `path`, a file below the local output directory `local`, to
/// the same relative name below `remote`
/// (`incremental_predictions/predictions_0001.jsonl`).
pub(crate) async fn upload_file(
    gcs: &crate::storage::Storage,
    local: &Path,
    remote: &GcsUri,
    path: &Path,
) -> Result<(), EmuError> {
    let rel = path.strip_prefix(local).map_err(|_| {
        EmuError::internal(format!("{} is outside {}", path.display(), local.display()))
    })?;
    let rel = rel.to_string_lossy().replace('\\', "/");
    let uri = GcsUri::parse_field(
        &format!("{}/{rel}", remote.to_string().trim_end_matches('/')),
        "output_uri",
    )
    .map_err(EmuError::from)?;
    let file = tokio::fs::File::open(path)
        .await
        .map_err(|e| EmuError::internal(format!("opening {}: {e}", path.display())))?;
    gcs.upload(&uri, file)
        .await
        .map_err(|e| EmuError::internal(format!("uploading the output: {e}")))?;
    Ok(())
}
