//! A running emulator, [`Emulator`]: its servers (over TCP and in memory),
//! clients for it, and its shutdown.

use std::{
    net::SocketAddr,
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

use super::{knobs::Knobs, service::EmulatorService, state::EmuState, storage};
use crate::{
    client::Client,
    error::{Error, Result},
    proto::{
        aiplatform::{
            job_service_server::JobServiceServer,
            llm_utility_service_server::LlmUtilityServiceServer,
        },
        longrunning::operations_server::OperationsServer,
    },
    uri::{BigQueryUri, GcsUri},
};

/// A running emulator. Dropping it stops it (as [`Emulator::abort`] does);
/// call [`Emulator::shutdown`] for a graceful stop.
///
/// ```no_run
/// # async fn demo() -> vertex_batch::Result<()> {
/// use vertex_batch::{emulator::Emulator, batch::BatchSpec, JobSpec};
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
    /// Serves the emulator's RPCs over `state` on `listener` (bound to
    /// `addr`), and over in-memory connections.
    pub(super) fn serve(listener: TcpListener, addr: SocketAddr, state: Arc<EmuState>) -> Emulator {
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
        Emulator {
            addr,
            state,
            mem_tx,
            shutdown: Some(tx),
            server: Some(server),
        }
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
    /// ([`EmulatorBuilder::gcs_storage`](super::builder::EmulatorBuilder::gcs_storage)),
    /// or its data directory through
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
        storage::gcs_path(&self.state.dir, &uri).map_err(|e| Error::validation("uri", e.message))
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
        storage::bq_path(&self.state.dir, &uri, None)
            .map_err(|e| Error::validation("uri", e.message))
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
