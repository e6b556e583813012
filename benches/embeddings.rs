//! An embedding batch of 1,000,000 short texts (768-dimension vectors from
//! `text-embedding-005`) on the embedded emulator and its local `gs://`:
//! staged (the family's lines written and stored), run, and read back
//! matched to the prompts, each vector parsed into numbers. Prints each
//! phase's wall time and rows per second, the output's size, and the peak
//! RSS of each phase (reset between phases through `/proc/self/clear_refs`),
//! which shows memory stays bounded: no phase holds the vectors.
//!
//! ```text
//! cargo bench --bench embeddings --features emulator
//! VB_EMBED_ROWS=100000 cargo bench --bench embeddings --features emulator
//! ```

use std::time::Instant;

use futures::StreamExt;
use vertex_batch::{
    batch::BatchSpec,
    emulator::Emulator,
    format::{InputLimits, Outcome},
    JobSpec,
};

/// Peak resident memory since the last reset, in MiB.
fn peak_rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

fn reset_peak() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

fn dir_bytes(dir: &std::path::Path) -> u64 {
    let mut total = 0;
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            total += if p.is_dir() {
                dir_bytes(&p)
            } else {
                e.metadata().map_or(0, |m| m.len())
            };
        }
    }
    total
}

#[tokio::main]
async fn main() {
    let n: u64 = std::env::var("VB_EMBED_ROWS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_000_000);
    let dir = tempfile::tempdir_in(std::env::var("VB_EMBED_DIR").unwrap_or_else(|_| ".".into()))
        .expect("a scratch directory");
    let emu = Emulator::builder(dir.path())
        .start()
        .await
        .expect("emulator");
    let client = emu.client("bench-project", "us-central1").expect("client");
    let storage = emu.storage();
    let spec = BatchSpec::new(JobSpec::new("text-embedding-005"), "gs://bench-bkt/embed")
        .request_key("embed-bench")
        .limits(InputLimits::default().max_rows_per_file(200_000));
    let prompts = (0..n).map(|i| {
        (
            format!("doc-{i:07}"),
            format!("Document {i}: rivers run to the sea."),
        )
    });

    reset_peak();
    let t = Instant::now();
    let mut batch = client
        .start_batch(&storage, &spec, prompts)
        .await
        .expect("staged");
    let stage = t.elapsed().as_secs_f64();
    let stage_rss = peak_rss_mib();
    let input_bytes = dir_bytes(&dir.path().join("gcs/bench-bkt/embed/embed-bench/input"));

    reset_peak();
    let t = Instant::now();
    batch.wait().await.expect("the jobs succeed");
    let run = t.elapsed().as_secs_f64();
    let run_rss = peak_rss_mib();
    let output_bytes = dir_bytes(&dir.path().join("gcs/bench-bkt/embed/embed-bench/output"));

    reset_peak();
    let t = Instant::now();
    let mut results = batch.results().await.expect("results");
    let (mut ok, mut other, mut numbers, mut checksum) = (0u64, 0u64, 0u64, 0f64);
    while let Some(row) = results.next().await {
        let row = row.expect("a readable row");
        match row.outcome() {
            Outcome::Succeeded(a) => {
                let values = a
                    .embedding()
                    .expect("an embedding")
                    .values()
                    .expect("numbers");
                numbers += values.len() as u64;
                checksum += f64::from(values[0]);
                ok += 1;
            }
            _ => other += 1,
        }
    }
    let read = t.elapsed().as_secs_f64();
    let read_rss = peak_rss_mib();
    assert_eq!((ok, other), (n, 0), "every row succeeded");
    assert_eq!(numbers, n * 768, "768 numbers a row");

    let mib = |b: u64| b as f64 / (1 << 20) as f64;
    println!(
        "embedding batch: {n} texts, text-embedding-005, 768 dimensions, {} job(s)",
        batch.jobs().len()
    );
    println!(
        "  input  {:>9.1} MiB   output {:>9.1} MiB",
        mib(input_bytes),
        mib(output_bytes)
    );
    println!("  phase        wall s     rows/s      MiB/s   peak RSS MiB");
    println!(
        "  stage     {stage:>9.2} {:>10.0} {:>10.1} {stage_rss:>13.0}",
        n as f64 / stage,
        mib(input_bytes) / stage
    );
    println!(
        "  run (emu) {run:>9.2} {:>10.0} {:>10.1} {run_rss:>13.0}",
        n as f64 / run,
        mib(output_bytes) / run
    );
    println!(
        "  read      {read:>9.2} {:>10.0} {:>10.1} {read_rss:>13.0}",
        n as f64 / read,
        mib(output_bytes) / read
    );
    println!("  (checksum {checksum:.3})");
}
