//! Configuring an emulator and starting it: [`EmulatorBuilder`], and
//! [`Emulator::builder`] and [`Emulator::start`], which bind the port, load
//! the data directory, resume unfinished jobs and start serving.

use std::{
    net::{IpAddr, Ipv4Addr},
    path::PathBuf,
    sync::Arc,
};

use tokio::net::TcpListener;

use super::{
    handle::Emulator,
    knobs::{KnobValues, Knobs},
    recovery::recover,
    state::EmuState,
};
use crate::error::{Error, Result};

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

        let emu = Emulator::serve(listener, addr, state);
        tracing::info!(%addr, data_dir = %self.data_dir.display(), "emulator listening");
        Ok(emu)
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
}
