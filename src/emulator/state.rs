//! The emulator's job table and its durable form: one JSON file per job in
//! `DATA_DIR/jobs/`, and one per delete operation in `DATA_DIR/operations/`,
//! each replaced atomically (write a temporary file, fsync, rename).

use std::{
    collections::BTreeMap,
    fs, io,
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, Mutex, MutexGuard,
    },
    time::{Duration, SystemTime},
};

use serde::{Deserialize, Serialize};
use tokio::sync::{watch, Notify};

use super::knobs::Knobs;
use crate::{proto::aiplatform as pb, proto::longrunning, time::to_timestamp};

/// Wall-clock time that follows Tokio's clock, so that a paused test clock
/// moves job timestamps too.
#[derive(Debug, Clone)]
pub(crate) struct Clock {
    base_sys: SystemTime,
    base: tokio::time::Instant,
}

impl Clock {
    pub(crate) fn new() -> Self {
        Clock {
            base_sys: SystemTime::now(),
            base: tokio::time::Instant::now(),
        }
    }

    pub(crate) fn now(&self) -> SystemTime {
        self.base_sys + self.base.elapsed()
    }

    pub(crate) fn now_ts(&self) -> pbjson_types::Timestamp {
        to_timestamp(self.now())
    }
}

/// What is stored for a job.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct JobRecord {
    pub(crate) job: pb::BatchPredictionJob,
    /// The file being written while the job runs (removed on recovery).
    #[serde(default)]
    pub(crate) partial_output: Option<PathBuf>,
    /// What the running job claimed for its output (its GCS directory or its
    /// BigQuery table file); removed on recovery before the job runs again.
    #[serde(default)]
    pub(crate) output_claim: Option<PathBuf>,
    /// Whether some of the job's output was published (an exported chunk,
    /// or the final output): its claim is kept when the job ends. A job
    /// that published nothing releases its claim (an empty directory, a
    /// placeholder table file). Older records lack it: `false`.
    #[serde(default)]
    pub(crate) output_published: bool,
}

/// A job in memory: its record plus the signals its runner listens to.
pub(crate) struct JobSlot {
    pub(crate) id: u64,
    record: Mutex<JobRecord>,
    /// Orders writes of the record: the last snapshot taken is the last written.
    persist: Mutex<()>,
    /// Set once a cancel is acknowledged. Its durable form is the record's
    /// CANCELLING state, which nothing but the job's end replaces.
    pub(crate) cancel: AtomicBool,
    pub(crate) cancel_notify: Notify,
}

impl JobSlot {
    /// A slot for a stored or new record. A CANCELLING record is a cancel
    /// request (the durable form of the `cancel` flag): it starts set.
    pub(crate) fn new(id: u64, record: JobRecord) -> Self {
        let cancelling = record.job.state == pb::JobState::Cancelling as i32;
        JobSlot {
            id,
            record: Mutex::new(record),
            persist: Mutex::new(()),
            cancel: AtomicBool::new(cancelling),
            cancel_notify: Notify::new(),
        }
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, JobRecord> {
        self.record.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn snapshot(&self) -> pb::BatchPredictionJob {
        self.lock().job.clone()
    }

    pub(crate) fn request_cancel(&self) {
        self.cancel.store(true, Ordering::SeqCst);
        self.cancel_notify.notify_waiters();
    }

    pub(crate) fn cancel_requested(&self) -> bool {
        self.cancel.load(Ordering::SeqCst)
    }
}

/// A delete operation.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct OpRecord {
    pub(crate) name: String,
    pub(crate) create_time: SystemTime,
    pub(crate) done_at: SystemTime,
}

/// Everything the service and the runners share.
pub(crate) struct EmuState {
    pub(crate) dir: PathBuf,
    pub(crate) clock: Clock,
    pub(crate) knobs: Knobs,
    jobs: Mutex<BTreeMap<u64, Arc<JobSlot>>>,
    ops: Mutex<BTreeMap<String, OpRecord>>,
    next_id: AtomicU64,
    /// Flips to true when the emulator shuts down; runners stop and keep
    /// their job's durable state for the next start.
    pub(crate) stopping: watch::Sender<bool>,
    pub(crate) runners: Mutex<tokio::task::JoinSet<()>>,
    rpc_counts: Mutex<BTreeMap<String, u64>>,
    /// Where `gs://` lives: a Cloud Storage endpoint (e.g. fake-gcs-server),
    /// or `None` for the data directory.
    pub(crate) gcs: Option<crate::storage::Storage>,
    /// Where `bq://` lives: a BigQuery endpoint (e.g. bqemulator), or
    /// `None` for the data directory's table files.
    pub(crate) bq: Option<crate::bigquery::BigQuery>,
}

/// The first job id of a fresh data directory (ids look like the service's).
const FIRST_ID: u64 = 1_000_000_000_000_000_001;

impl EmuState {
    /// Opens (or creates) a data directory and loads every stored job.
    pub(crate) fn open(
        dir: &Path,
        knobs: Knobs,
        gcs: Option<crate::storage::Storage>,
    ) -> io::Result<(Self, Vec<Arc<JobSlot>>)> {
        for sub in ["jobs", "operations", "gcs", "bigquery"] {
            fs::create_dir_all(dir.join(sub))?;
        }
        let mut jobs = BTreeMap::new();
        // The highest id seen, unreadable records included: ids are never
        // reused, even for a record that could not be loaded.
        let mut max_seen: Option<u64> = None;
        for entry in fs::read_dir(dir.join("jobs"))? {
            let path = entry?.path();
            if path.extension().and_then(|e| e.to_str()) != Some("json") {
                continue;
            }
            let Some(id) = path
                .file_stem()
                .and_then(|s| s.to_str())
                .and_then(|s| s.parse::<u64>().ok())
            else {
                continue;
            };
            max_seen = max_seen.max(Some(id));
            let loaded = fs::read(&path)
                .map_err(|e| e.to_string())
                .and_then(|b| serde_json::from_slice::<JobRecord>(&b).map_err(|e| e.to_string()));
            match loaded {
                Ok(rec) => {
                    jobs.insert(id, Arc::new(JobSlot::new(id, rec)));
                }
                Err(e) => {
                    // Kept aside (not deleted, not overwritten) for a person.
                    let q = dir.join("quarantine");
                    let to = q.join(format!("{id}.json"));
                    let moved = fs::create_dir_all(&q).and_then(|()| fs::rename(&path, &to));
                    tracing::error!(
                        file = %path.display(),
                        error = %e,
                        quarantined = moved.is_ok(),
                        "unreadable job record moved to {}; its id is not reused",
                        to.display()
                    );
                }
            }
        }
        let mut ops = BTreeMap::new();
        for entry in fs::read_dir(dir.join("operations"))? {
            let path = entry?.path();
            if let Ok(rec) = fs::read_to_string(&path)
                .map_err(|e| e.to_string())
                .and_then(|t| serde_json::from_str::<OpRecord>(&t).map_err(|e| e.to_string()))
            {
                ops.insert(rec.name.clone(), rec);
            }
        }
        // Ids are never reused: a deleted job's id is below the id of its
        // delete operation, whose record is kept.
        let max_op = ops
            .keys()
            .filter_map(|name| name.rsplit('/').next()?.parse::<u64>().ok())
            .max();
        // Quarantined records from earlier starts count too.
        let quarantined = fs::read_dir(dir.join("quarantine"))
            .into_iter()
            .flatten()
            .filter_map(|e| e.ok()?.path().file_stem()?.to_str()?.parse::<u64>().ok())
            .max();
        let next = max_seen
            .max(max_op)
            .max(quarantined)
            .map_or(FIRST_ID, |max| max + 1);
        let loaded: Vec<Arc<JobSlot>> = jobs.values().cloned().collect();
        let state = EmuState {
            gcs,
            bq: None,
            dir: dir.to_path_buf(),
            clock: Clock::new(),
            knobs,
            jobs: Mutex::new(jobs),
            ops: Mutex::new(ops),
            next_id: AtomicU64::new(next),
            stopping: watch::channel(false).0,
            runners: Mutex::new(tokio::task::JoinSet::new()),
            rpc_counts: Mutex::new(BTreeMap::new()),
        };
        Ok((state, loaded))
    }

    pub(crate) fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::SeqCst)
    }

    fn jobs(&self) -> MutexGuard<'_, BTreeMap<u64, Arc<JobSlot>>> {
        self.jobs.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn insert(&self, slot: Arc<JobSlot>) {
        self.jobs().insert(slot.id, slot);
    }

    pub(crate) fn get(&self, id: u64) -> Option<Arc<JobSlot>> {
        self.jobs().get(&id).cloned()
    }

    /// Every job, newest (highest id) first.
    pub(crate) fn all_newest_first(&self) -> Vec<Arc<JobSlot>> {
        self.jobs().values().rev().cloned().collect()
    }

    pub(crate) fn remove(&self, id: u64) -> io::Result<()> {
        self.jobs().remove(&id);
        match fs::remove_file(self.job_file(id)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    /// A path as a record stores it: relative to the data directory, so
    /// the directory can move (or be opened from another working
    /// directory) without breaking anything.
    pub(crate) fn to_record_path(&self, p: &Path) -> PathBuf {
        p.strip_prefix(&self.dir)
            .map(Path::to_path_buf)
            .unwrap_or_else(|_| p.to_path_buf())
    }

    /// A path read from a record, resolved inside the data directory;
    /// `None` for one that would leave it (a tampered or foreign record),
    /// so recovery never removes anything outside the data directory.
    pub(crate) fn resolve_record_path(&self, p: &Path) -> Option<PathBuf> {
        let rel = if p.is_absolute() {
            p.strip_prefix(&self.dir).ok()?
        } else {
            p
        };
        (rel.components().count() > 0
            && rel
                .components()
                .all(|c| matches!(c, std::path::Component::Normal(_))))
        .then(|| self.dir.join(rel))
    }

    fn job_file(&self, id: u64) -> PathBuf {
        self.dir.join("jobs").join(format!("{id}.json"))
    }

    /// Writes a job's record durably.
    pub(crate) fn persist(&self, slot: &JobSlot) -> io::Result<()> {
        let _ordered = slot.persist.lock().unwrap_or_else(|e| e.into_inner());
        let bytes = {
            let rec = slot.lock();
            serde_json::to_vec_pretty(&*rec).map_err(io::Error::other)?
        };
        write_atomic(&self.job_file(slot.id), &bytes)
    }

    /// Persists, logging instead of failing (used by runners).
    /// Persists a job's record on the blocking pool (no fsync on an async
    /// worker), tracked with the runners so a graceful shutdown waits for
    /// it. Writes need no ordering here: each takes its snapshot under the
    /// slot's persist lock, so the last write holds the newest state.
    pub(crate) fn persist_or_log(self: &Arc<Self>, slot: &Arc<JobSlot>) {
        let (state, slot) = (self.clone(), slot.clone());
        self.in_background(move || {
            if let Err(e) = state.persist(&slot) {
                tracing::error!(job = slot.id, error = %e, "could not persist job record");
            }
        });
    }

    /// Runs blocking file work on the blocking pool, tracked with the
    /// runners (a graceful shutdown waits for it); inline outside a runtime.
    pub(crate) fn in_background(&self, work: impl FnOnce() + Send + 'static) {
        match tokio::runtime::Handle::try_current() {
            Ok(_) => {
                let mut set = self.runners.lock().unwrap_or_else(|e| e.into_inner());
                while set.try_join_next().is_some() {}
                set.spawn_blocking(work);
            }
            Err(_) => work(),
        }
    }

    /// Persists a job's record on the blocking pool and waits for it (an
    /// RPC acknowledges only what is durable).
    pub(crate) async fn persist_durably(self: &Arc<Self>, slot: &Arc<JobSlot>) -> io::Result<()> {
        let (state, slot) = (self.clone(), slot.clone());
        tokio::task::spawn_blocking(move || state.persist(&slot))
            .await
            .map_err(|e| io::Error::other(format!("a blocking task failed: {e}")))?
    }

    pub(crate) fn add_op(&self, op: OpRecord) -> io::Result<()> {
        let file = self.dir.join("operations").join(format!(
            "{}.json",
            op.name.rsplit('/').next().unwrap_or("op")
        ));
        write_atomic(&file, &serde_json::to_vec(&op).map_err(io::Error::other)?)?;
        self.ops
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(op.name.clone(), op);
        Ok(())
    }

    pub(crate) fn op(&self, name: &str) -> Option<OpRecord> {
        self.ops
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
            .cloned()
    }

    /// Counts one RPC of `method`.
    pub(crate) fn count_rpc(&self, method: &str) {
        let mut counts = self.rpc_counts.lock().unwrap_or_else(|e| e.into_inner());
        *counts.entry(method.to_owned()).or_default() += 1;
    }

    /// RPCs served so far, by method.
    pub(crate) fn rpc_counts(&self) -> BTreeMap<String, u64> {
        self.rpc_counts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Takes the runners, to wait for them or abort them.
    pub(crate) fn take_runners(&self) -> tokio::task::JoinSet<()> {
        std::mem::take(&mut *self.runners.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// A delete operation as the Operations service returns it.
    pub(crate) fn op_proto(&self, op: &OpRecord) -> longrunning::Operation {
        use prost::Message;
        let now = self.clock.now();
        let done = now >= op.done_at;
        let meta = pb::DeleteOperationMetadata {
            generic_metadata: Some(pb::GenericOperationMetadata {
                partial_failures: Vec::new(),
                create_time: Some(to_timestamp(op.create_time)),
                update_time: Some(to_timestamp(if done { op.done_at } else { now })),
            }),
        };
        longrunning::Operation {
            name: op.name.clone(),
            metadata: Some(pbjson_types::Any {
                type_url: "type.googleapis.com/google.cloud.aiplatform.v1.DeleteOperationMetadata"
                    .into(),
                value: meta.encode_to_vec().into(),
            }),
            done,
            result: done.then(|| {
                longrunning::operation::Result::Response(pbjson_types::Any {
                    type_url: "type.googleapis.com/google.protobuf.Empty".into(),
                    value: Vec::new().into(),
                })
            }),
        }
    }
}

/// Replaces `path` with `bytes` atomically: a reader sees the old or the new
/// file, never a mix, even across a crash.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    use std::io::Write;
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("file"),
        fastrand::u64(..)
    ));
    let mut f = fs::File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    drop(f);
    fs::rename(&tmp, path)?;
    if let Ok(d) = fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// How often a running job's progress is written to disk.
pub(crate) const PERSIST_EVERY: Duration = Duration::from_secs(1);
/// Runs `f` on the blocking pool (a panic there is an I/O error here).
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> std::io::Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| std::io::Error::other(format!("a blocking task failed: {e}")))
}
