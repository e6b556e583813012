//! Upload benchmark: a generated JSONL input (1 GB by default) streamed
//! through a resumable upload to fake-gcs-server (filesystem backend), with
//! the bench process's peak RSS.
//!
//! ```text
//! scripts/test.sh --no-run   # installs fake-gcs-server into .venv once
//! cargo bench --bench upload --features emulator
//! VB_UPLOAD_BYTES=200000000 cargo bench --bench upload --features emulator
//! ```

#[allow(dead_code)]
#[path = "../tests/common/gcs.rs"]
mod gcs;

use std::time::Instant;

fn peak_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .unwrap_or(0.0)
        / 1024.0
}

#[tokio::main]
async fn main() {
    let total: u64 = std::env::var("VB_UPLOAD_BYTES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_000_000_000);
    let server = gcs::FakeGcs::start_on_disk();
    server.buckets(&["bench-bkt"]).await;
    let storage = server.storage();
    let uri = "gs://bench-bkt/input/part-00000.jsonl".parse().unwrap();
    let rss_before = peak_rss_mb();
    let start = Instant::now();
    let mut w = storage.writer(&uri).await.expect("writer");
    let mut line = String::with_capacity(1024);
    let mut i = 0u64;
    let mut sent = 0u64;
    while sent < total {
        line.clear();
        line.push_str(&format!(
            r#"{{"key":"req-{i:09}","request":{{"contents":[{{"role":"user","parts":[{{"text":"Prompt {i}: "#
        ));
        while line.len() < 900 {
            line.push_str("write a short paragraph about rivers and the sea; ");
        }
        line.push_str("\"}]}]}}\n");
        w.write(line.as_bytes()).await.expect("write");
        sent += line.len() as u64;
        i += 1;
    }
    let chunks = w.chunks_sent();
    let info = w.finish().await.expect("finish");
    let secs = start.elapsed().as_secs_f64();
    assert_eq!(info.size(), sent);
    println!("| bytes | lines | requests | seconds | MB/s | peak RSS (before) |");
    println!("|---|---|---|---|---|---|");
    println!(
        "| {sent} | {i} | {} | {secs:.1} | {:.0} | {:.1} MB ({rss_before:.1} MB) |",
        storage.calls().uploads,
        sent as f64 / secs / 1e6,
        peak_rss_mb()
    );
    let _ = chunks;
}
