//! Results reader benchmark: reading, parsing and de-duplicating a batch
//! output of about 1 KB a row, beside the Python reference reader
//! (`scripts/bench/reference_reader.py`: `json.loads` per line, key, status,
//! first candidate's text, outcome counts, seen keys) on the same file in the
//! same run.
//!
//! ```text
//! cargo bench --bench results --features emulator
//! VB_BENCH_ROWS=100000,1000000 VB_BENCH_ROUNDS=3 cargo bench --bench results --features emulator
//! ```
//!
//! Each reader runs in a fresh process per round, so peak RSS (VmHWM) is
//! that reader's alone; rounds alternate which reader goes first. Printed:
//! medians of rows/s, MB/s, peak RSS, and the Rust/Python ratio.

use std::{
    io::{BufWriter, Write},
    path::{Path, PathBuf},
    process::Command,
    time::Instant,
};

use futures::StreamExt;
use vertex_batch::batch::{read_local_files, ReadOptions};

fn peak_rss_kb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// Writes `rows` output lines of about 1 KB: 96% succeeded, 2% failed with
/// an embedded JSON error, 1% blocked, 1% MAX_TOKENS; every 200th row is
/// written twice (the service's duplicates).
fn generate(path: &Path, rows: u64) -> std::io::Result<()> {
    let mut w = BufWriter::with_capacity(1 << 20, std::fs::File::create(path)?);
    let filler = "The quick brown fox jumps over the lazy dog while the batch keeps running. ";
    for i in 0..rows {
        let prompt = format!("Question {i}: {}", &filler.repeat(3)[..200]);
        let request = format!(
            r#"{{"contents":[{{"role":"user","parts":[{{"text":"{prompt}","file_data":null}}]}}],"generationConfig":{{"temperature":0.2,"maxOutputTokens":200}},"labels":{{"vertex_batch_key":"r{i:08}"}}}}"#
        );
        let line = match i % 100 {
            0 | 1 => format!(
                r#"{{"key":"req-{i:08}","status":"Bad Request: {{\"error\": {{\"code\": 400, \"message\": \"Request contains an invalid argument.\", \"status\": \"INVALID_ARGUMENT\"}}}}","processed_time":"2024-11-13T14:04:28.376+00:00","request":{request}}}"#
            ),
            2 => format!(
                r#"{{"key":"req-{i:08}","status":"","processed_time":"2024-11-13T14:04:28.376+00:00","request":{request},"response":{{"promptFeedback":{{"blockReason":"PROHIBITED_CONTENT"}},"usageMetadata":{{"promptTokenCount":50,"totalTokenCount":50}},"modelVersion":"gemini-2.0-flash-001"}}}}"#
            ),
            n => {
                let reason = if n == 3 { "MAX_TOKENS" } else { "STOP" };
                let answer = &filler.repeat(6)[..420];
                format!(
                    r#"{{"key":"req-{i:08}","status":"","processed_time":"2024-11-13T14:04:28.376+00:00","request":{request},"response":{{"candidates":[{{"content":{{"role":"model","parts":[{{"text":"Answer {i}: {answer}"}}]}},"finishReason":"{reason}","avgLogprobs":-0.2893}}],"usageMetadata":{{"promptTokenCount":50,"candidatesTokenCount":120,"totalTokenCount":170,"trafficType":"ON_DEMAND"}},"modelVersion":"gemini-2.0-flash-001","createTime":"2024-11-13T14:04:27.123456Z","responseId":"resp-{i}"}}}}"#
                )
            }
        };
        w.write_all(line.as_bytes())?;
        w.write_all(b"\n")?;
        if i % 200 == 7 {
            w.write_all(line.as_bytes())?;
            w.write_all(b"\n")?;
        }
    }
    w.flush()
}

/// Child mode: read one file, print `seconds rows bytes peak_kb`.
fn read_child(path: &str) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let bytes = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    let start = Instant::now();
    let (rows, text_bytes, totals) = rt.block_on(async {
        let mut opts = ReadOptions::new();
        if let Some(n) = std::env::var("VB_BENCH_PARALLELISM")
            .ok()
            .and_then(|s| s.parse().ok())
        {
            opts = opts.parallelism(n);
        }
        if let Some(n) = std::env::var("VB_BENCH_BLOCK_SIZE")
            .ok()
            .and_then(|s| s.parse().ok())
        {
            opts = opts.block_size(n);
        }
        let mut s = read_local_files(vec![PathBuf::from(path)], opts);
        let (mut rows, mut text) = (0u64, 0usize);
        while let Some(r) = s.next().await {
            if let Ok(r) = r {
                rows += 1;
                text += r.text().map_or(0, str::len);
            }
        }
        (rows, text, s.totals())
    });
    let secs = start.elapsed().as_secs_f64();
    assert_eq!(totals.errors, 0, "{totals:?}");
    println!(
        "{secs} {rows} {bytes} {} {text_bytes} {}",
        peak_rss_kb(),
        totals.duplicates
    );
}

struct Run {
    secs: f64,
    rows: f64,
    bytes: f64,
    rss_kb: f64,
}

fn run_rust(file: &Path) -> Run {
    let out = Command::new(std::env::current_exe().expect("exe"))
        .arg("--read")
        .arg(file)
        .output()
        .expect("child");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let s = String::from_utf8_lossy(&out.stdout);
    let f: Vec<f64> = s
        .split_whitespace()
        .filter_map(|x| x.parse().ok())
        .collect();
    Run {
        secs: f[0],
        rows: f[1],
        bytes: f[2],
        rss_kb: f[3],
    }
}

fn run_python(file: &Path) -> Run {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/bench/reference_reader.py");
    let out = Command::new("python3")
        .arg(script)
        .arg(file)
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("python output");
    let n = |k: &str| v[k].as_f64().unwrap_or(0.0);
    Run {
        secs: n("seconds"),
        rows: n("succeeded") + n("failed") + n("blocked"),
        bytes: n("bytes"),
        rss_kb: n("peak_rss_kb"),
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--read") {
        return read_child(&args[i + 1]);
    }
    if let Some(i) = args.iter().position(|a| a == "--generate") {
        let rows = args[i + 1].parse().expect("rows");
        return generate(Path::new(&args[i + 2]), rows).expect("generate");
    }
    let sizes: Vec<u64> = std::env::var("VB_BENCH_ROWS")
        .unwrap_or_else(|_| "100000,1000000".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let rounds: usize = std::env::var("VB_BENCH_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    let dir = tempfile::tempdir().expect("tempdir");
    println!("| rows | reader | rows/s | MB/s | peak RSS | vs Python |\n|---|---|---|---|---|---|");
    for rows in sizes {
        let file = dir.path().join(format!("out-{rows}.jsonl"));
        generate(&file, rows).expect("generate");
        let (mut rust, mut py) = (Vec::new(), Vec::new());
        for round in 0..rounds {
            if round % 2 == 0 {
                rust.push(run_rust(&file));
                py.push(run_python(&file));
            } else {
                py.push(run_python(&file));
                rust.push(run_rust(&file));
            }
        }
        let ratio = median(rust.iter().zip(&py).map(|(r, p)| p.secs / r.secs).collect());
        for (name, runs) in [("vertex-batch", &rust), ("Python json.loads", &py)] {
            let rps = median(runs.iter().map(|r| r.rows / r.secs).collect());
            let mbps = median(runs.iter().map(|r| r.bytes / r.secs / 1e6).collect());
            let rss = median(runs.iter().map(|r| r.rss_kb / 1024.0).collect());
            let vs = if name == "vertex-batch" {
                format!("{ratio:.1}x faster")
            } else {
                "1".into()
            };
            println!("| {rows} | {name} | {rps:.0} | {mbps:.0} | {rss:.1} MB | {vs} |");
        }
        std::fs::remove_file(&file).ok();
    }
}
