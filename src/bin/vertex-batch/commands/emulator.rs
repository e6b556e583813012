//! `vertex-batch emulator` and the `vertex-batch-emulator` binary: one set
//! of flags, one code path (the binary includes this file).

use std::{net::IpAddr, path::PathBuf, process::ExitCode, time::Duration};

use vertex_batch::{
    bigquery::{BigQuery, ENV_BIGQUERY_EMULATOR_HOST},
    emulator::Emulator,
    emulator::KnobValues,
    storage::Storage,
    storage::ENV_STORAGE_EMULATOR_HOST,
};

/// The emulator's flags.
#[derive(clap::Args, Debug)]
#[command(after_help = "\
Paths in the data dir (unless --storage-emulator-host or
--bigquery-emulator-host says otherwise):
  gs://BUCKET/OBJECT          DIR/gcs/BUCKET/OBJECT
  bq://PROJECT.DATASET.TABLE  DIR/bigquery/PROJECT/DATASET/TABLE.jsonl

Logs every RPC to stderr (RUST_LOG overrides the level). Prints the line
VERTEX_AI_EMULATOR_HOST=HOST:PORT to export for clients. Ctrl-C stops it
gracefully; jobs still running resume on the next start with the same --data-dir.")]
pub struct EmulatorArgs {
    /// Where jobs, gs:// objects and bq:// tables live.
    #[arg(long, value_name = "DIR")]
    pub data_dir: PathBuf,
    /// Port to listen on (0: any free port).
    #[arg(long, default_value_t = 0)]
    pub port: u16,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: IpAddr,
    /// Keep gs:// objects in this Cloud Storage endpoint instead of the data
    /// dir (e.g. fake-gcs-server at http://127.0.0.1:4443; default:
    /// STORAGE_EMULATOR_HOST when set, else the data dir).
    #[arg(long, value_name = "URL")]
    pub storage_emulator_host: Option<String>,
    /// Keep gs:// objects in the data dir even if STORAGE_EMULATOR_HOST is set.
    #[arg(long, conflicts_with = "storage_emulator_host")]
    pub local_gcs: bool,
    /// Read bq:// input tables from, and write output tables to, this
    /// BigQuery endpoint instead of the data dir (e.g. bqemulator at
    /// http://127.0.0.1:9050; default: BIGQUERY_EMULATOR_HOST when set,
    /// else the data dir).
    #[arg(long, value_name = "URL")]
    pub bigquery_emulator_host: Option<String>,
    /// Keep bq:// tables in the data dir even if BIGQUERY_EMULATOR_HOST is set.
    #[arg(long, conflicts_with = "bigquery_emulator_host")]
    pub local_bigquery: bool,
    /// Rows whose prompt contains TEXT fail (429 RESOURCE_EXHAUSTED).
    #[arg(long, value_name = "TEXT")]
    pub fail_rows_containing: Option<String>,
    /// Write output rows out of input order.
    #[arg(long)]
    pub shuffle_output: bool,
    /// Write every N-th output row twice.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub duplicate_every: u64,
    /// While a job runs, export its completed rows in an
    /// incremental_predictions/ chunk every N rows (0: no row trigger).
    #[arg(long, value_name = "N", default_value_t = 5_000)]
    pub export_every_rows: u64,
    /// Also seal an exported chunk this long (emulated time) after its
    /// first row, in milliseconds (0: no time trigger).
    #[arg(long, value_name = "MS", default_value_t = 10_000)]
    pub export_every_ms: u64,
    /// End jobs SUCCEEDED even when some rows failed.
    #[arg(long)]
    pub succeed_despite_failed_rows: bool,
    /// Emulated time per row, in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 0)]
    pub row_delay_ms: u64,
    /// Pace every job to last about this many seconds.
    #[arg(long, value_name = "SECS")]
    pub job_duration_secs: Option<f64>,
    /// Time a job stays PENDING before RUNNING, in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 0)]
    pub queue_delay_ms: u64,
    /// Answer this fraction of RPCs UNAVAILABLE (0.0-1.0).
    #[arg(long, value_name = "F", default_value_t = 0.0, value_parser = fraction)]
    pub unavailable_fraction: f64,
    /// Most requests per job (the service allows 200000).
    #[arg(long, value_name = "N")]
    pub max_requests: Option<u64>,
    /// Keep new jobs QUEUED (until restarted without it).
    #[arg(long)]
    pub hold_queued: bool,
    /// Every job fails with this message once it leaves the queue.
    #[arg(long, value_name = "MESSAGE")]
    pub fail_jobs: Option<String>,
    /// How many upcoming creates commit the job but answer UNAVAILABLE.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub lost_create_responses: u32,
    /// A job QUEUED longer than this ends EXPIRED (the service: 72 h).
    #[arg(long, value_name = "SECS", default_value_t = 72 * 3600)]
    pub queue_ttl_secs: u64,
    /// A job RUNNING longer than this is cancelled (the service: 24 h).
    #[arg(long, value_name = "SECS", default_value_t = 24 * 3600)]
    pub max_run_time_secs: u64,
    /// How long a delete's long-running operation takes, in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 200)]
    pub delete_delay_ms: u64,
    /// The longest input line read; a longer row fails alone.
    #[arg(long, value_name = "BYTES", default_value_t = 32 << 20)]
    pub max_line_bytes: usize,
    /// Emulated slow storage: each chunk of rows waits this long on its I/O
    /// thread, in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 0)]
    pub io_delay_ms: u64,
}

fn fraction(s: &str) -> Result<f64, String> {
    let f: f64 = s.parse().map_err(|_| format!("{s:?} is not a number"))?;
    if (0.0..=1.0).contains(&f) {
        Ok(f)
    } else {
        Err("must be between 0 and 1".into())
    }
}

impl EmulatorArgs {
    fn knobs(&self) -> Result<KnobValues, String> {
        let mut k = KnobValues {
            row_delay: Duration::from_millis(self.row_delay_ms),
            queue_delay: Duration::from_millis(self.queue_delay_ms),
            unavailable_fraction: self.unavailable_fraction,
            shuffle_output: self.shuffle_output,
            fail_rows_containing: self.fail_rows_containing.clone(),
            duplicate_every: self.duplicate_every,
            export_every_rows: self.export_every_rows,
            export_every: Duration::from_millis(self.export_every_ms),
            succeed_despite_failed_rows: self.succeed_despite_failed_rows,
            fail_jobs: self.fail_jobs.clone(),
            lost_create_responses: self.lost_create_responses,
            queue_ttl: Duration::from_secs(self.queue_ttl_secs),
            max_run_time: Duration::from_secs(self.max_run_time_secs),
            delete_delay: Duration::from_millis(self.delete_delay_ms),
            max_line_bytes: self.max_line_bytes.max(1),
            io_delay: Duration::from_millis(self.io_delay_ms),
            ..KnobValues::default()
        };
        if let Some(secs) = self.job_duration_secs {
            k.job_duration = Some(Duration::try_from_secs_f64(secs).map_err(|_| {
                format!("--job-duration-secs: {secs} is not a duration in seconds")
            })?);
        }
        if let Some(n) = self.max_requests {
            k.max_requests_per_job = n;
        }
        Ok(k)
    }
}

/// Runs the emulator until Ctrl-C.
pub async fn run(args: EmulatorArgs) -> ExitCode {
    let knobs = match args.knobs() {
        Ok(k) => k,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    // A second subscriber (a test harness's) is not an error.
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "vertex_batch=info".into()),
        )
        .try_init();
    if !args.host.is_loopback() {
        eprintln!(
            "warning: listening on {} — the emulator has no authentication; anyone who can reach it can use it",
            args.host
        );
    }
    let mut builder = Emulator::builder(&args.data_dir)
        .ip(args.host)
        .port(args.port)
        .hold_queued(args.hold_queued)
        .knobs(knobs);
    // Where gs:// and bq:// live: a flag's endpoint, the environment's
    // emulator, or (neither, or --local-…) the data dir.
    let storage = remote(
        args.local_gcs,
        args.storage_emulator_host.as_deref(),
        ENV_STORAGE_EMULATOR_HOST,
        |url| match url {
            Some(u) => Storage::builder().ignore_env().emulator_host(u).build(),
            None => Storage::builder().build(),
        },
    );
    let bq = remote(
        args.local_bigquery,
        args.bigquery_emulator_host.as_deref(),
        ENV_BIGQUERY_EMULATOR_HOST,
        |url| match url {
            Some(u) => BigQuery::builder().ignore_env().emulator_host(u).build(),
            None => BigQuery::builder().build(),
        },
    );
    match (storage, bq) {
        (Ok(storage), Ok(bq)) => {
            if let Some(s) = storage {
                eprintln!(
                    "gs:// objects live in the Cloud Storage endpoint {}",
                    s.endpoint()
                );
                builder = builder.gcs_storage(s);
            }
            if let Some(bq) = bq {
                eprintln!(
                    "bq:// tables live in the BigQuery endpoint {}",
                    bq.endpoint()
                );
                builder = builder.bigquery(bq);
            }
        }
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    }
    let emu = match builder.start().await {
        Ok(e) => e,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    // A closed stdout (the reader went away) must not stop the emulator.
    {
        use std::io::Write;
        let mut stdout = std::io::stdout().lock();
        let _ = writeln!(stdout, "VERTEX_AI_EMULATOR_HOST={}", emu.host());
        let _ = writeln!(stdout, "data dir: {}", emu.data_dir().display());
        let _ = stdout.flush();
    }
    if tokio::signal::ctrl_c().await.is_err() {
        eprintln!("error: cannot listen for Ctrl-C; stopping");
    }
    eprintln!("stopping… (Ctrl-C again to stop at once)");
    tokio::select! {
        () = emu.shutdown() => {}
        _ = tokio::signal::ctrl_c() => {
            eprintln!("stopped at once; running jobs resume on the next start");
            return ExitCode::from(130);
        }
    }
    ExitCode::SUCCESS
}

/// The client of a backend kept outside the data dir: built for `flag`'s
/// endpoint, or (no flag) from the environment when `env` is set; `None`
/// with `local` or when neither says where.
fn remote<T>(
    local: bool,
    flag: Option<&str>,
    env: &str,
    build: impl Fn(Option<&str>) -> vertex_batch::Result<T>,
) -> vertex_batch::Result<Option<T>> {
    if local {
        return Ok(None);
    }
    match flag {
        Some(url) => build(Some(url)).map(Some),
        None => match std::env::var(env) {
            Ok(v) if !v.trim().is_empty() => build(None).map(Some),
            _ => Ok(None),
        },
    }
}
