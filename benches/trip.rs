//! The whole trip on three processes: fake-gcs-server, the
//! `vertex-batch-emulator` binary reading and writing through it, and this
//! client running `Client::run_batch` over 10,000 keyed prompts. Prints the
//! wall time and every Cloud Storage and JobService call made.
//!
//! ```text
//! scripts/test.sh --no-run   # installs fake-gcs-server into .venv once
//! cargo bench --bench trip --features emulator
//! VB_TRIP_PROMPTS=50000 VB_TRIP_ROWS_PER_JOB=20000 cargo bench --bench trip --features emulator
//! ```

#[allow(dead_code)]
#[path = "../tests/common/gcs.rs"]
mod gcs;

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use vertex_batch::{
    batch::BatchSpec,
    client::WatchManyOptions,
    format::{InputLimits, Prompt},
    policy::PollPolicy,
    Client, JobSpec,
};

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

#[tokio::main]
async fn main() {
    let n = env("VB_TRIP_PROMPTS", 10_000);
    let per_job = env("VB_TRIP_ROWS_PER_JOB", 200_000);
    let poll_ms = env("VB_TRIP_POLL_MS", 100);
    let server = gcs::FakeGcs::start();
    server.buckets(&["trip-bkt"]).await;
    // Count the RPCs the emulator logs.
    let rpcs = Arc::new(Mutex::new(BTreeMap::<String, u64>::new()));
    let counter = rpcs.clone();
    let emu = gcs::EmulatorProcess::start_logging(
        env!("CARGO_BIN_EXE_vertex-batch-emulator"),
        &server,
        &[],
        move |line| {
            if let Some(m) = line.split("method=").nth(1) {
                if line.contains(" rpc") {
                    let m = m.split_whitespace().next().unwrap_or("").trim_matches('"');
                    *counter.lock().unwrap().entry(m.to_owned()).or_insert(0) += 1;
                }
            }
        },
    );
    let host = emu.host.clone();

    let client = Client::builder()
        .ignore_env()
        .project("bench-project")
        .location("us-central1")
        .emulator_host(&host)
        .build()
        .expect("client");
    let storage = server.storage();
    let spec = BatchSpec::new(
        JobSpec::new("gemini-2.0-flash-001"),
        "gs://trip-bkt/batches",
    )
    .request_key("trip-bench")
    .limits(InputLimits::default().max_rows_per_file(per_job))
    .watch_options(
        WatchManyOptions::new().policy(PollPolicy::fixed(Duration::from_millis(poll_ms))),
    );
    let prompts = (0..n).map(|i| {
        (
            format!("prompt-{i:06}"),
            Prompt::text(format!("Question {i}: write a haiku about rivers.")),
        )
    });
    let start = Instant::now();
    let (batch, results) = client
        .run_batch(&storage, &spec, prompts)
        .await
        .expect("run_batch");
    let (rows, errors, totals) = results.collect_all().await;
    let secs = start.elapsed().as_secs_f64();
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(rows.len() as u64, n);
    assert_eq!(totals.succeeded, n);
    drop(emu);
    let calls = storage.calls();
    let rpcs = rpcs.lock().unwrap().clone();
    println!(
        "prompts: {n}, jobs: {}, polling every {poll_ms} ms",
        batch.jobs().len()
    );
    println!("wall time (stage + submit + wait + read + match): {secs:.2} s");
    println!(
        "Cloud Storage calls: {} (uploads {}, list pages {}, downloads {}, other {})",
        calls.total(),
        calls.uploads,
        calls.lists,
        calls.reads,
        calls.other
    );
    println!(
        "JobService calls: {} {:?}",
        rpcs.values().sum::<u64>(),
        rpcs
    );
}
