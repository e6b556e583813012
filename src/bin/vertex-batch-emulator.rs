//! `vertex-batch-emulator`: the local Vertex AI batch-prediction emulator as a
//! standalone gRPC server.

use std::{net::IpAddr, path::PathBuf, process::ExitCode, time::Duration};

use vertex_batch::{
    emulator::{Emulator, KnobValues},
    storage::{Storage, ENV_STORAGE_EMULATOR_HOST},
};

const HELP: &str = "\
vertex-batch-emulator: a local Vertex AI JobService that really runs batch prediction jobs

USAGE:
    vertex-batch-emulator --data-dir DIR [--port PORT] [options]

OPTIONS:
    --data-dir DIR              where jobs, gs:// objects and bq:// tables live (required)
                                  gs://BUCKET/OBJECT         -> DIR/gcs/BUCKET/OBJECT
                                  bq://PROJECT.DATASET.TABLE -> DIR/bigquery/PROJECT/DATASET/TABLE.jsonl
    --storage-emulator-host URL keep gs:// objects in this Cloud Storage endpoint instead
                                (e.g. fake-gcs-server at http://127.0.0.1:4443; default:
                                STORAGE_EMULATOR_HOST when set, else the data dir)
    --local-gcs                 keep gs:// objects in the data dir even if
                                STORAGE_EMULATOR_HOST is set
    --fail-rows-containing TEXT rows whose prompt contains TEXT fail (429 RESOURCE_EXHAUSTED)
    --shuffle-output            write output rows out of input order
    --duplicate-every N         write every N-th output row twice
    --incremental-chunk         also write an incremental_predictions/ chunk
    --succeed-despite-failed-rows
                                end jobs SUCCEEDED even when some rows failed
    --port PORT                 port to listen on (default 0: any free port)
    --host IP                   address to listen on (default 127.0.0.1)
    --row-delay-ms N            emulated time per row (default 0)
    --job-duration-secs N       pace every job to last about N seconds
    --queue-delay-ms N          time a job stays PENDING before RUNNING (default 0)
    --unavailable-fraction F    answer this fraction of RPCs UNAVAILABLE (0.0-1.0)
    --max-requests N            most requests per job (default 200000, as the service)
    --hold-queued               keep new jobs QUEUED (until restarted without it)
    -h, --help                  this text

Logs every RPC to stderr (RUST_LOG overrides the level). Prints the line
VERTEX_AI_EMULATOR_HOST=HOST:PORT to export for clients. Ctrl-C stops it
gracefully; jobs still running resume on the next start with the same --data-dir.";

struct Args {
    data_dir: PathBuf,
    host: IpAddr,
    port: u16,
    knobs: KnobValues,
    hold: bool,
    storage: Option<String>,
    local_gcs: bool,
}

fn parse(mut argv: impl Iterator<Item = String>) -> Result<Option<Args>, String> {
    let mut data_dir = None;
    let mut host: IpAddr = [127, 0, 0, 1].into();
    let mut port = 0u16;
    let mut knobs = KnobValues::default();
    let mut hold = false;
    let mut storage = None;
    let mut local_gcs = false;
    while let Some(flag) = argv.next() {
        let mut value = |name: &str| argv.next().ok_or_else(|| format!("{name} needs a value"));
        fn num<T: std::str::FromStr>(name: &str, v: String) -> Result<T, String> {
            v.parse()
                .map_err(|_| format!("{name}: {v:?} is not a valid number"))
        }
        match flag.as_str() {
            "-h" | "--help" => return Ok(None),
            "--data-dir" => data_dir = Some(PathBuf::from(value("--data-dir")?)),
            "--port" => port = num("--port", value("--port")?)?,
            "--host" => host = num("--host", value("--host")?)?,
            "--row-delay-ms" => {
                knobs.row_delay =
                    Duration::from_millis(num("--row-delay-ms", value("--row-delay-ms")?)?)
            }
            "--job-duration-secs" => {
                let secs: f64 = num("--job-duration-secs", value("--job-duration-secs")?)?;
                knobs.job_duration = Duration::try_from_secs_f64(secs).ok();
            }
            "--queue-delay-ms" => {
                knobs.queue_delay =
                    Duration::from_millis(num("--queue-delay-ms", value("--queue-delay-ms")?)?)
            }
            "--unavailable-fraction" => {
                let f: f64 = num("--unavailable-fraction", value("--unavailable-fraction")?)?;
                if !(0.0..=1.0).contains(&f) {
                    return Err("--unavailable-fraction must be between 0 and 1".into());
                }
                knobs.unavailable_fraction = f;
            }
            "--max-requests" => {
                knobs.max_requests_per_job = num("--max-requests", value("--max-requests")?)?
            }
            "--hold-queued" => hold = true,
            "--storage-emulator-host" => storage = Some(value("--storage-emulator-host")?),
            "--local-gcs" => local_gcs = true,
            "--shuffle-output" => knobs.shuffle_output = true,
            "--fail-rows-containing" => {
                knobs.fail_rows_containing = Some(value("--fail-rows-containing")?)
            }
            "--duplicate-every" => {
                knobs.duplicate_every = num("--duplicate-every", value("--duplicate-every")?)?
            }
            "--incremental-chunk" => knobs.incremental_chunk = true,
            "--succeed-despite-failed-rows" => knobs.succeed_despite_failed_rows = true,
            other => return Err(format!("unknown argument {other:?} (see --help)")),
        }
    }
    let data_dir = data_dir.ok_or("--data-dir is required (see --help)")?;
    Ok(Some(Args {
        data_dir,
        host,
        port,
        knobs,
        hold,
        storage,
        local_gcs,
    }))
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = match parse(std::env::args().skip(1)) {
        Ok(Some(a)) => a,
        Ok(None) => {
            println!("{HELP}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "vertex_batch=info".into()),
        )
        .init();
    if !args.host.is_loopback() {
        eprintln!(
            "warning: listening on {} — the emulator has no authentication; anyone who can reach it can use it",
            args.host
        );
    }
    let mut builder = Emulator::builder(&args.data_dir)
        .ip(args.host)
        .port(args.port)
        .knobs(args.knobs);
    if !args.local_gcs {
        let storage = match args.storage {
            Some(url) => Storage::builder()
                .ignore_env()
                .emulator_host(url)
                .build()
                .map(Some),
            None => match std::env::var(ENV_STORAGE_EMULATOR_HOST) {
                Ok(v) if !v.trim().is_empty() => Storage::builder().build().map(Some),
                _ => Ok(None),
            },
        };
        match storage {
            Ok(Some(s)) => {
                eprintln!(
                    "gs:// objects live in the Cloud Storage endpoint {}",
                    s.endpoint()
                );
                builder = builder.gcs_storage(s);
            }
            Ok(None) => {}
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(2);
            }
        }
    }
    let emu = match builder.start().await {
        Ok(e) => e,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    emu.knobs().hold_queued(args.hold);
    println!("VERTEX_AI_EMULATOR_HOST={}", emu.host());
    println!("data dir: {}", emu.data_dir().display());
    if tokio::signal::ctrl_c().await.is_err() {
        eprintln!("error: cannot listen for Ctrl-C; stopping");
    }
    eprintln!("stopping…");
    emu.shutdown().await;
    ExitCode::SUCCESS
}
