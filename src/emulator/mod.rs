//! A local Vertex AI batch-prediction emulator that really executes jobs
//! (feature `emulator`).
//!
//! It speaks the `google.cloud.aiplatform.v1.JobService` gRPC protocol
//! (create, get, list, cancel, delete),
//! `google.longrunning.Operations/GetOperation` and
//! `LlmUtilityService/CountTokens` (counted as its model counts
//! `promptTokenCount`), runs each job over local
//! files with a deterministic built-in model, and writes the output in the
//! service's layout. Google's own Python and Node clients work against it.
//!
//! Storage mapping (`src/emulator/storage.rs`):
//!
//! | URI | file |
//! |---|---|
//! | `gs://BUCKET/OBJECT` | `DATA_DIR/gcs/BUCKET/OBJECT` |
//! | `bq://PROJECT.DATASET.TABLE` | `DATA_DIR/bigquery/PROJECT/DATASET/TABLE.jsonl` |
//!
//! or, with [`EmulatorBuilder::gcs_storage`] (the binary's
//! `--storage-emulator-host`, or `STORAGE_EMULATOR_HOST`), `gs://` objects
//! live in a real Cloud Storage endpoint such as fake-gcs-server: a job
//! downloads its inputs (wildcards expanded by listing) to
//! `DATA_DIR/staging/JOB/`, runs (uploading each exported chunk of
//! completed rows as it is sealed), and uploads the rest of its output
//! directory at the end.
//!
//! Job records live in `DATA_DIR/jobs/ID.json`, replaced atomically; a
//! restarted emulator knows every job, and re-runs a job a crash
//! interrupted (its partial output is discarded first; the re-run takes
//! the output directory or table its first run named again when it can,
//! so re-exported chunks replace the same-numbered chunks of the first
//! run — on a Cloud Storage backend, chunks of the first run numbered
//! beyond the re-run's stay, holding rows the final file has too).
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use vertex_batch::{emulator::Emulator, JobSpec};
//!
//! let emu = Emulator::start("/tmp/vertex-emulator").await?;
//! std::fs::create_dir_all(emu.data_dir().join("gcs/my-bucket"))?;
//! std::fs::write(
//!     emu.data_dir().join("gcs/my-bucket/prompts.jsonl"),
//!     r#"{"request":{"contents":[{"role":"user","parts":[{"text":"Hello"}]}]}}"#,
//! )?;
//! let client = emu.client("my-project", "us-central1")?;
//! let job = client
//!     .create(&JobSpec::new("gemini-2.0-flash-001")
//!         .input("gs://my-bucket/prompts.jsonl")
//!         .output("gs://my-bucket/out"))
//!     .await?;
//! println!("{}", job.name());
//! emu.shutdown().await;
//! # Ok(()) }
//! ```

mod families;
mod filter;
mod knobs;
mod model;
mod pace;
mod plan;
mod rows;
mod runner;
mod service;
mod state;
mod storage;

use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr},
    path::{Path, PathBuf},
    sync::Arc,
};

use futures::StreamExt;
use tokio::{
    io::DuplexStream,
    net::TcpListener,
    sync::{mpsc, oneshot},
    task::JoinHandle,
};
use tokio_stream::wrappers::UnboundedReceiverStream;

pub use self::knobs::{KnobValues, Knobs};
pub use self::model::{ANSWER_PREFIX, BLOCK_MARKER};
use self::{service::EmulatorService, state::EmuState};
use crate::{
    client::Client,
    error::{Error, Result},
    job::JobState,
    proto::{
        aiplatform::{
            job_service_server::JobServiceServer,
            llm_utility_service_server::LlmUtilityServiceServer, JobState as PbState,
        },
        longrunning::operations_server::OperationsServer,
    },
    uri::{BigQueryUri, GcsUri},
};

/// Configures an [`Emulator`] before it starts.
///
/// ```no_run
/// # async fn demo() -> vertex_batch::Result<()> {
/// use std::{net::Ipv4Addr, time::Duration};
/// use vertex_batch::emulator::{Emulator, KnobValues};
///
/// let emu = Emulator::builder("/tmp/vertex-emulator")
///     .ip(Ipv4Addr::UNSPECIFIED.into()) // reachable from other containers
///     .port(8085)
///     .knobs(KnobValues { queue_delay: Duration::from_secs(2), ..KnobValues::default() })
///     .start()
///     .await?;
/// println!("VERTEX_AI_EMULATOR_HOST={}", emu.host());
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct EmulatorBuilder {
    data_dir: PathBuf,
    ip: IpAddr,
    port: u16,
    knobs: KnobValues,
    gcs: Option<crate::storage::Storage>,
    bq: Option<crate::bigquery::BigQuery>,
    hold: bool,
}

impl EmulatorBuilder {
    /// The port to listen on (default 0: an ephemeral one).
    ///
    /// ```no_run
    /// # async fn demo() -> vertex_batch::Result<()> {
    /// use vertex_batch::emulator::Emulator;
    ///
    /// let emu = Emulator::builder("/tmp/vertex-emulator").port(8085).start().await?;
    /// assert_eq!(emu.host(), "127.0.0.1:8085");
    /// # Ok(()) }
    /// ```
    pub fn port(mut self, port: u16) -> Self {
        self.port = port;
        self
    }

    /// The address to listen on (default 127.0.0.1).
    ///
    /// ```no_run
    /// # async fn demo() -> vertex_batch::Result<()> {
    /// use std::net::Ipv4Addr;
    /// use vertex_batch::emulator::Emulator;
    ///
    /// // All interfaces, e.g. to serve other containers.
    /// let emu = Emulator::builder("/tmp/vertex-emulator").ip(Ipv4Addr::UNSPECIFIED.into()).start().await?;
    /// assert!(emu.addr().ip().is_unspecified());
    /// # Ok(()) }
    /// ```
    pub fn ip(mut self, ip: IpAddr) -> Self {
        self.ip = ip;
        self
    }

    /// Keeps `gs://` objects in a Cloud Storage endpoint (e.g.
    /// fake-gcs-server) instead of the data directory: jobs read their
    /// inputs from it and write their outputs to it, exactly as on Vertex
    /// AI. Only job records and staging files stay in the data directory.
    ///
    /// ```no_run
    /// # async fn demo() -> vertex_batch::Result<()> {
    /// use vertex_batch::{emulator::Emulator, storage::Storage};
    ///
    /// let gcs = Storage::builder().emulator_host("127.0.0.1:4443").build()?; // fake-gcs-server
    /// let emu = Emulator::builder("/tmp/vertex-emulator").gcs_storage(gcs).start().await?;
    /// assert_eq!(emu.storage().endpoint(), "http://127.0.0.1:4443");
    /// # Ok(()) }
    /// ```
    pub fn gcs_storage(mut self, storage: crate::storage::Storage) -> Self {
        self.gcs = Some(storage);
        self
    }

    /// Serves `bq://` from a BigQuery (e.g. bqemulator) instead of the data
    /// directory: a job's input table is read from there, and its output
    /// table is created there (the input's columns carried through, plus
    /// `response` (JSON), `status` (STRING) and `processed_time`
    /// (TIMESTAMP); `predictions_<time>` for a dataset destination) and
    /// filled as the job runs: each exported chunk of completed rows is
    /// appended (see [`KnobValues::export_every_rows`]), and the end loads
    /// the rows left, so each row is in the table once.
    ///
    /// ```no_run
    /// # async fn demo() -> vertex_batch::Result<()> {
    /// use vertex_batch::{bigquery::BigQuery, emulator::Emulator};
    ///
    /// let bq = BigQuery::builder().emulator_host("127.0.0.1:9050").build()?;
    /// let emu = Emulator::builder("/tmp/vertex-emulator").bigquery(bq).start().await?;
    /// # Ok(()) }
    /// ```
    pub fn bigquery(mut self, bigquery: crate::bigquery::BigQuery) -> Self {
        self.bq = Some(bigquery);
        self
    }

    /// Starts with jobs held `QUEUED` (see [`Knobs::hold_queued`]), set
    /// before any job is resumed or any RPC is served.
    ///
    /// ```no_run
    /// # async fn demo() -> vertex_batch::Result<()> {
    /// # let spec = vertex_batch::JobSpec::new("gemini-2.0-flash-001")
    /// #     .input("gs://my-bucket/prompts.jsonl").output("gs://my-bucket/out");
    /// use vertex_batch::emulator::Emulator;
    ///
    /// let emu = Emulator::builder("/tmp/vertex-emulator").hold_queued(true).start().await?;
    /// let client = emu.client("my-project", "us-central1")?;
    /// let job = client.create(&spec).await?; // it waits in QUEUED
    /// // … look at it, cancel it, restart the emulator …
    /// emu.knobs().hold_queued(false); // now it runs
    /// # Ok(()) }
    /// ```
    pub fn hold_queued(mut self, hold: bool) -> Self {
        self.hold = hold;
        self
    }

    /// The knobs to start with (in force before the first RPC is served).
    ///
    /// ```no_run
    /// # async fn demo() -> vertex_batch::Result<()> {
    /// use vertex_batch::emulator::{Emulator, KnobValues};
    ///
    /// let knobs = KnobValues { duplicate_every: 5, shuffle_output: true, ..KnobValues::default() };
    /// let emu = Emulator::builder("/tmp/vertex-emulator").knobs(knobs).start().await?;
    /// assert_eq!(emu.knobs().values().duplicate_every, 5);
    /// # Ok(()) }
    /// ```
    pub fn knobs(mut self, knobs: KnobValues) -> Self {
        self.knobs = knobs;
        self
    }

    /// Binds the port, loads the data directory, resumes unfinished jobs and
    /// starts serving. The listener is bound before this returns, so the
    /// emulator is ready for clients at once.
    ///
    /// ```no_run
    /// # async fn demo() -> vertex_batch::Result<()> {
    /// use vertex_batch::emulator::Emulator;
    ///
    /// let emu = Emulator::builder("/tmp/vertex-emulator").start().await?;
    /// // Bound and serving already: clients may connect at once.
    /// let client = emu.client("my-project", "us-central1")?;
    /// # Ok(()) }
    /// ```
    pub async fn start(self) -> Result<Emulator> {
        let io = |what: &str, e: std::io::Error| Error::config(format!("emulator: {what}: {e}"));
        let listener = TcpListener::bind((self.ip, self.port))
            .await
            .map_err(|e| io(&format!("binding {}:{}", self.ip, self.port), e))?;
        let addr = listener.local_addr().map_err(|e| io("local address", e))?;
        let knobs = Knobs::new(self.knobs);
        knobs.hold_queued(self.hold);
        let (mut state, loaded) = EmuState::open(&self.data_dir, knobs, self.gcs.clone())
            .map_err(|e| io(&format!("opening {}", self.data_dir.display()), e))?;
        state.bq = self.bq.clone();
        let state = Arc::new(state);
        recover(&state, loaded);

        let svc = EmulatorService {
            state: state.clone(),
        };
        let (tx, rx) = oneshot::channel::<()>();
        let (mem_tx, mem_rx) = mpsc::unbounded_channel::<DuplexStream>();
        let router = tonic::transport::Server::builder()
            .add_service(JobServiceServer::new(svc.clone()))
            .add_service(LlmUtilityServiceServer::new(svc.clone()))
            .add_service(OperationsServer::new(svc));
        // In-memory connections (see `Emulator::in_memory_client`) are served
        // by a second server over the same state.
        let in_memory = router
            .clone()
            .serve_with_incoming(UnboundedReceiverStream::new(mem_rx).map(Ok::<_, std::io::Error>));
        // No Nagle delay: answers go out in several small writes.
        let incoming =
            tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
        let server = tokio::spawn(async move {
            tokio::select! {
                r = router.serve_with_incoming_shutdown(incoming, async {
                    let _ = rx.await;
                }) => r,
                r = in_memory => r,
            }
        });
        tracing::info!(%addr, data_dir = %self.data_dir.display(), "emulator listening");
        Ok(Emulator {
            addr,
            state,
            mem_tx,
            shutdown: Some(tx),
            server: Some(server),
        })
    }
}

/// Resumes what a previous run left unfinished.
fn recover(state: &Arc<EmuState>, loaded: Vec<Arc<state::JobSlot>>) {
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

/// A running emulator. Dropping it stops it (as [`Emulator::abort`] does);
/// call [`Emulator::shutdown`] for a graceful stop.
///
/// ```no_run
/// # async fn demo() -> vertex_batch::Result<()> {
/// use vertex_batch::{emulator::Emulator, BatchSpec, JobSpec};
///
/// let emu = Emulator::start("/tmp/vertex-emulator").await?;
/// let client = emu.client("my-project", "us-central1")?;
/// let storage = emu.storage(); // its gs:// objects, under data_dir()/gcs
/// let spec = BatchSpec::new(JobSpec::new("gemini-2.0-flash-001"), "gs://my-bucket/batches");
/// let (_batch, results) = client.run_batch(&storage, &spec, [("q1", "Hello")]).await?;
/// let (rows, _errors, _totals) = results.collect_all().await;
/// println!("{:?}, after {:?}", rows[0].text(), emu.rpc_counts());
/// emu.shutdown().await;
/// # Ok(()) }
/// ```
pub struct Emulator {
    addr: SocketAddr,
    state: Arc<EmuState>,
    mem_tx: mpsc::UnboundedSender<DuplexStream>,
    shutdown: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<std::result::Result<(), tonic::transport::Error>>>,
}

impl std::fmt::Debug for Emulator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Emulator")
            .field("addr", &self.addr)
            .field("data_dir", &self.state.dir)
            .finish_non_exhaustive()
    }
}

impl Emulator {
    /// A builder for an emulator over `data_dir` (created if missing).
    ///
    /// ```no_run
    /// # async fn demo() -> vertex_batch::Result<()> {
    /// use vertex_batch::emulator::Emulator;
    ///
    /// let emu = Emulator::builder("/tmp/vertex-emulator").port(8085).start().await?;
    /// assert_eq!(emu.addr().port(), 8085);
    /// # Ok(()) }
    /// ```
    pub fn builder(data_dir: impl Into<PathBuf>) -> EmulatorBuilder {
        EmulatorBuilder {
            data_dir: data_dir.into(),
            ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
            port: 0,
            knobs: KnobValues::default(),
            gcs: None,
            bq: None,
            hold: false,
        }
    }

    /// Starts an emulator over `data_dir` on an ephemeral loopback port.
    ///
    /// ```no_run
    /// # async fn demo() -> vertex_batch::Result<()> {
    /// use vertex_batch::emulator::Emulator;
    ///
    /// let emu = Emulator::start("/tmp/vertex-emulator").await?;
    /// // For other programs (Google's own clients too):
    /// println!("export VERTEX_AI_EMULATOR_HOST={}", emu.host());
    /// # Ok(()) }
    /// ```
    pub async fn start(data_dir: impl Into<PathBuf>) -> Result<Emulator> {
        Emulator::builder(data_dir).start().await
    }

    /// The address it listens on.
    ///
    /// ```no_run
    /// # async fn demo(emu: vertex_batch::emulator::Emulator) -> vertex_batch::Result<()> {
    /// let addr = emu.addr();
    /// assert!(addr.ip().is_loopback()); // the default address
    /// println!("listening on port {}", addr.port());
    /// # Ok(()) }
    /// ```
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `host:port`, the value for `VERTEX_AI_EMULATOR_HOST`.
    ///
    /// ```no_run
    /// # async fn demo(emu: vertex_batch::emulator::Emulator) -> vertex_batch::Result<()> {
    /// // Lets other programs (Google's own clients too) find it.
    /// println!("export VERTEX_AI_EMULATOR_HOST={}", emu.host());
    /// # Ok(()) }
    /// ```
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    /// The data directory.
    ///
    /// ```no_run
    /// # async fn demo() -> vertex_batch::Result<()> {
    /// use vertex_batch::emulator::Emulator;
    ///
    /// let emu = Emulator::start("/tmp/vertex-emulator").await?;
    /// assert_eq!(emu.data_dir(), std::path::Path::new("/tmp/vertex-emulator"));
    /// # Ok(()) }
    /// ```
    pub fn data_dir(&self) -> &Path {
        &self.state.dir
    }

    /// The runtime knobs.
    ///
    /// ```no_run
    /// # async fn demo(emu: vertex_batch::emulator::Emulator) -> vertex_batch::Result<()> {
    /// use std::time::Duration;
    ///
    /// // Changes take effect at once, for jobs already running too.
    /// emu.knobs().set_row_delay(Duration::from_millis(10));
    /// emu.knobs().set_unavailable_fraction(0.1);
    /// # Ok(()) }
    /// ```
    pub fn knobs(&self) -> &Knobs {
        &self.state.knobs
    }

    /// A client for `project`/`location` talking to this emulator
    /// (environment variables are ignored).
    ///
    /// ```no_run
    /// # async fn demo(emu: vertex_batch::emulator::Emulator) -> vertex_batch::Result<()> {
    /// use futures::TryStreamExt;
    /// use vertex_batch::ListOptions;
    ///
    /// let client = emu.client("my-project", "us-central1")?;
    /// let jobs: Vec<_> = client.list(&ListOptions::new()).try_collect().await?;
    /// # Ok(()) }
    /// ```
    pub fn client(&self, project: &str, location: &str) -> Result<Client> {
        Client::builder()
            .ignore_env()
            .project(project)
            .location(location)
            .emulator_host(self.host())
            .build()
    }

    /// A client connected through memory instead of TCP. Use it with a
    /// paused Tokio clock (`#[tokio::test(start_paused = true)]`): no socket
    /// wait can let the clock jump, so hours of emulated job time pass in
    /// milliseconds.
    ///
    /// ```no_run
    /// # async fn demo() -> vertex_batch::Result<()> {
    /// # let spec = vertex_batch::JobSpec::new("gemini-2.0-flash-001")
    /// #     .input("gs://my-bucket/prompts.jsonl").output("gs://my-bucket/out");
    /// use std::time::Duration;
    /// use vertex_batch::{emulator::Emulator, WaitOptions};
    ///
    /// tokio::time::pause(); // as `#[tokio::test(start_paused = true)]` does
    /// let emu = Emulator::start("/tmp/vertex-emulator").await?;
    /// emu.knobs().set_job_duration(Some(Duration::from_secs(6 * 3600)));
    /// let client = emu.in_memory_client("my-project", "us-central1")?;
    /// let job = client.create(&spec).await?;
    /// let done = client.wait(&job, &WaitOptions::new()).await?; // six emulated hours, in milliseconds
    /// # Ok(()) }
    /// ```
    pub fn in_memory_client(&self, project: &str, location: &str) -> Result<Client> {
        let tx = self.mem_tx.clone();
        let channel = tonic::transport::Endpoint::from_static("http://emulator.in-memory")
            .connect_with_connector_lazy(tower::service_fn(move |_: http::Uri| {
                let (client_io, server_io) = tokio::io::duplex(1 << 20);
                let sent = tx.send(server_io);
                async move {
                    sent.map_err(|_| std::io::Error::other("the emulator has stopped"))?;
                    Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(client_io))
                }
            }));
        Client::builder()
            .ignore_env()
            .project(project)
            .location(location)
            .build_with_channel(channel)
    }

    /// A Cloud Storage client for this emulator's `gs://` objects: the
    /// Cloud Storage endpoint it was started with
    /// ([`EmulatorBuilder::gcs_storage`]), or its data directory through
    /// [`Storage::local`](crate::storage::Storage::local). Batches
    /// ([`Client::run_batch`]) run against either with no other setup.
    ///
    /// ```no_run
    /// # async fn demo(emu: vertex_batch::emulator::Emulator) -> vertex_batch::Result<()> {
    /// let storage = emu.storage();
    /// storage.upload_bytes(&"gs://my-bucket/prompts.jsonl".parse()?, "{}\n").await?;
    /// // Without a Cloud Storage endpoint it lands in the data directory.
    /// assert!(emu.data_dir().join("gcs/my-bucket/prompts.jsonl").exists());
    /// # Ok(()) }
    /// ```
    pub fn storage(&self) -> crate::storage::Storage {
        match &self.state.gcs {
            Some(s) => s.clone(),
            None => crate::storage::Storage::local(self.state.dir.join("gcs")),
        }
    }

    /// Counts of RPCs served so far, by method name.
    ///
    /// ```no_run
    /// # async fn demo(emu: vertex_batch::emulator::Emulator) -> vertex_batch::Result<()> {
    /// for (method, n) in emu.rpc_counts() {
    ///     println!("{method}: {n}");
    /// }
    /// # Ok(()) }
    /// ```
    pub fn rpc_counts(&self) -> std::collections::BTreeMap<String, u64> {
        self.state.rpc_counts()
    }

    /// The local file behind a `gs://` URI.
    ///
    /// ```no_run
    /// # fn demo(emu: vertex_batch::emulator::Emulator) -> Result<(), Box<dyn std::error::Error>> {
    /// let path = emu.gcs_path("gs://my-bucket/prompts.jsonl")?;
    /// assert_eq!(path, emu.data_dir().join("gcs/my-bucket/prompts.jsonl"));
    /// std::fs::create_dir_all(path.parent().unwrap())?;
    /// std::fs::write(&path, r#"{"request":{"contents":[{"role":"user","parts":[{"text":"Hello"}]}]}}"#)?;
    /// # Ok(()) }
    /// ```
    pub fn gcs_path(&self, uri: &str) -> Result<PathBuf> {
        let uri = GcsUri::parse_field(uri, "uri")?;
        storage::gcs_path(&self.state.dir, &uri).map_err(|e| Error::validation("uri", e))
    }

    /// The local file behind a `bq://project.dataset.table` URI.
    ///
    /// ```no_run
    /// # fn demo(emu: vertex_batch::emulator::Emulator) -> Result<(), Box<dyn std::error::Error>> {
    /// let table = emu.bigquery_path("bq://my-project.my_dataset.prompts")?;
    /// assert_eq!(table, emu.data_dir().join("bigquery/my-project/my_dataset/prompts.jsonl"));
    /// std::fs::create_dir_all(table.parent().unwrap())?;
    /// std::fs::write(&table, r#"{"request":{"contents":[{"role":"user","parts":[{"text":"Hello"}]}]}}"#)?;
    /// # Ok(()) }
    /// ```
    pub fn bigquery_path(&self, uri: &str) -> Result<PathBuf> {
        let uri = BigQueryUri::parse_field(uri, "uri", true)?;
        storage::bq_path(&self.state.dir, &uri, None).map_err(|e| Error::validation("uri", e))
    }

    /// Stops gracefully: no new connections, in-flight RPCs finish, running
    /// jobs stop where they are and are resumed by the next start on the same
    /// data directory.
    ///
    /// ```no_run
    /// # async fn demo() -> vertex_batch::Result<()> {
    /// use vertex_batch::emulator::Emulator;
    ///
    /// let emu = Emulator::start("/tmp/vertex-emulator").await?;
    /// // … create jobs …
    /// emu.shutdown().await;
    /// let emu = Emulator::start("/tmp/vertex-emulator").await?; // unfinished jobs carry on
    /// # Ok(()) }
    /// ```
    pub async fn shutdown(mut self) {
        self.state.stopping.send_replace(true);
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        let mut runners = self.state.take_runners();
        while runners.join_next().await.is_some() {}
        if let Some(server) = self.server.take() {
            let _ = server.await;
        }
    }

    /// Stops at once, as a crash would: nothing more is written, and the
    /// next start finds the jobs as they were last persisted.
    ///
    /// ```no_run
    /// # async fn demo() -> vertex_batch::Result<()> {
    /// use vertex_batch::emulator::Emulator;
    ///
    /// let emu = Emulator::start("/tmp/vertex-emulator").await?;
    /// // … create jobs …
    /// emu.abort(); // as if the process was killed
    /// let emu = Emulator::start("/tmp/vertex-emulator").await?; // interrupted jobs run again
    /// # Ok(()) }
    /// ```
    pub fn abort(mut self) {
        self.kill();
    }

    fn kill(&mut self) {
        self.state.take_runners().abort_all();
        if let Some(server) = self.server.take() {
            server.abort();
        }
        self.shutdown.take();
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        self.kill();
    }
}

#[cfg(test)]
mod tests {
    use tonic::Request;

    use super::{
        knobs::{KnobValues, Knobs},
        recover,
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
