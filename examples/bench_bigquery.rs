//! BigQuery data-plane figures: loading prompts into an input table and
//! reading a whole output table, with the crate, against a BigQuery
//! emulator. `scripts/bench-bigquery.sh` starts bqemulator, makes the
//! files and tables, and runs this beside Google's Python client and curl.
//!
//! ```text
//! bench_bigquery setup ENDPOINT PROJECT DATASET OUTPUT_NDJSON TABLE
//! bench_bigquery run   ENDPOINT PROJECT DATASET PROMPTS_NDJSON TABLE
//! ```
//!
//! `run` prints one JSON line: wall and CPU seconds of the load and of the
//! read, rows read, and the process's peak RSS (Linux `/proc`). With
//! `BENCH_STORAGE_READ_API=http://127.0.0.1:PORT` (the emulator's gRPC
//! port) the output table is read through the Storage Read API instead of
//! `tabledata.list`.

use std::{io::Read, time::Instant};

use futures::StreamExt;
use vertex_batch::{
    batch::ResultReader,
    bigquery::{BigQuery, Field},
    uri::BigQueryUri,
};

/// This process's user + system CPU seconds (Linux).
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which may hold spaces) in parentheses.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // utime and stime are fields 14 and 15 of stat: 12 and 13 after ')'.
    (ticks(11) + ticks(12)) / 100.0
}

/// Peak resident set, MiB (Linux `VmHWM`).
fn peak_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

fn table(project: &str, dataset: &str, name: &str) -> Result<BigQueryUri, String> {
    format!("bq://{project}.{dataset}.{name}")
        .parse()
        .map_err(|e| format!("{e}"))
}

/// Streams `path` into `t` through a load writer, a chunk at a time.
async fn load_file(
    bq: &BigQuery,
    t: &BigQueryUri,
    schema: &[Field],
    path: &str,
) -> Result<u64, String> {
    let mut file = std::fs::File::open(path).map_err(|e| format!("{path}: {e}"))?;
    let mut w = bq
        .load_writer(t, schema, &format!("bench-{:016x}", fastrand::u64(..)))
        .await
        .map_err(|e| e.to_string())?;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf).map_err(|e| format!("{path}: {e}"))?;
        if n == 0 {
            break;
        }
        w.write(&buf[..n]).await.map_err(|e| e.to_string())?;
    }
    Ok(w.finish().await.map_err(|e| e.to_string())?.rows())
}

async fn run(args: &[String]) -> Result<(), String> {
    let [mode, endpoint, project, dataset, file, name] = args else {
        return Err("usage: bench_bigquery setup|run ENDPOINT PROJECT DATASET NDJSON TABLE".into());
    };
    // BENCH_STORAGE_READ_API=http://127.0.0.1:GRPC_PORT reads the output
    // table through the Storage Read API instead of tabledata.list.
    let read_api = std::env::var("BENCH_STORAGE_READ_API").ok();
    let mut builder = BigQuery::builder().ignore_env().emulator_host(endpoint);
    if let Some(ep) = &read_api {
        builder = builder.storage_read_api(ep);
    }
    // BENCH_READ_STREAMS=N: the streams a read session asks for.
    if let Some(n) = std::env::var("BENCH_READ_STREAMS")
        .ok()
        .and_then(|n| n.parse().ok())
    {
        builder = builder.read_streams(n);
    }
    let bq = builder.build().map_err(|e| e.to_string())?;
    match mode.as_str() {
        "setup" => {
            let schema = [
                Field::new("key", "STRING"),
                Field::new("request", "JSON"),
                Field::new("response", "JSON"),
                Field::new("status", "STRING"),
                Field::new("processed_time", "TIMESTAMP"),
            ];
            let rows = load_file(&bq, &table(project, dataset, name)?, &schema, file).await?;
            println!("{{\"output_table_rows\": {rows}}}");
        }
        "run" => {
            let schema = [Field::new("key", "STRING"), Field::new("request", "JSON")];
            let t = table(
                project,
                dataset,
                &format!("rs_prompts_{:08x}", fastrand::u32(..)),
            )?;
            let (t0, c0) = (Instant::now(), cpu_seconds());
            let loaded = load_file(&bq, &t, &schema, file).await?;
            let (t1, c1) = (Instant::now(), cpu_seconds());
            // Streamed, as a service reads results: nothing kept.
            let mut stream = ResultReader::new()
                .output_bigquery(&bq, table(project, dataset, name)?)
                .read()
                .await
                .map_err(|e| e.to_string())?;
            let (mut rows, mut errors) = (0u64, 0u64);
            while let Some(row) = stream.next().await {
                match row {
                    Ok(_) => rows += 1,
                    Err(e) => {
                        if errors == 0 {
                            eprintln!("first error: {e}");
                        }
                        errors += 1
                    }
                }
            }
            let totals = stream.totals();
            let (t2, c2) = (Instant::now(), cpu_seconds());
            println!(
                "{}",
                serde_json::json!({
                    "client": if read_api.is_some() { "vertex-batch (Storage Read API)" } else { "vertex-batch" },
                    "load_rows": loaded,
                    "load_wall_s": (t1 - t0).as_secs_f64(), "load_cpu_s": c1 - c0,
                    "read_wall_s": (t2 - t1).as_secs_f64(), "read_cpu_s": c2 - c1,
                    "read_rows": rows, "read_errors": errors,
                    "succeeded": totals.succeeded,
                    "peak_rss_mb": peak_rss_mb(),
                })
            );
        }
        other => return Err(format!("unknown mode {other:?}: setup or run")),
    }
    Ok(())
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
