//! Emulator throughput and memory: feeds a job of 100,000 and of 1,000,000
//! rows end to end (create → rows read, answered and written → SUCCEEDED seen
//! by the client) and reports rows per second and peak RSS.
//!
//! `cargo bench --bench emulator --features emulator`
//!
//! Each run happens in a fresh child process, so peak RSS (`VmHWM`) is that
//! run's alone. Three runs per size; medians are printed.

use std::{process::Command, time::Duration};

use vertex_batch::{emulator::Emulator, policy::PollPolicy, JobSpec, WaitOptions};

const SIZES: &[u64] = &[100_000, 1_000_000];
const RUNS: usize = 3;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(pos) = args.iter().position(|a| a == "--child") {
        let rows: u64 = args
            .get(pos + 1)
            .and_then(|s| s.parse().ok())
            .expect("--child ROWS");
        child(rows);
        return;
    }
    let exe = std::env::current_exe().expect("current exe");
    println!("emulator throughput, end to end (median of {RUNS} runs each)");
    println!(
        "{:>10} {:>14} {:>14} {:>12}",
        "rows", "rows/s", "seconds", "peak RSS MB"
    );
    for &rows in SIZES {
        let mut results: Vec<(f64, f64, f64)> = (0..RUNS)
            .map(|_| {
                let out = Command::new(&exe)
                    .args(["--child", &rows.to_string()])
                    .output()
                    .expect("run child");
                assert!(
                    out.status.success(),
                    "{}",
                    String::from_utf8_lossy(&out.stderr)
                );
                let text = String::from_utf8_lossy(&out.stdout);
                let nums: Vec<f64> = text
                    .split_whitespace()
                    .filter_map(|t| t.parse().ok())
                    .collect();
                (nums[0], nums[1], nums[2])
            })
            .collect();
        results.sort_by(|a, b| a.0.total_cmp(&b.0));
        let (rate, secs, _) = results[RUNS / 2];
        let mut rss: Vec<f64> = results.iter().map(|r| r.2).collect();
        rss.sort_by(f64::total_cmp);
        println!(
            "{rows:>10} {rate:>14.0} {secs:>14.2} {:>12.1}",
            rss[RUNS / 2]
        );
    }
}

fn peak_rss_mb() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

fn child(rows: u64) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        let dir = tempfile::tempdir().expect("tempdir");
        let emu = Emulator::start(dir.path()).await.expect("emulator");
        emu.knobs().set_max_requests_per_job(u64::MAX);
        let input = emu.gcs_path("gs://bench/in/prompts.jsonl").expect("path");
        std::fs::create_dir_all(input.parent().expect("parent")).expect("mkdir");
        {
            use std::io::Write;
            let mut w = std::io::BufWriter::new(std::fs::File::create(&input).expect("create"));
            for i in 0..rows {
                writeln!(
                    w,
                    r#"{{"request":{{"contents":[{{"role":"user","parts":[{{"text":"Prompt {i}: give me a short recipe for banana bread with walnuts."}}]}}],"generationConfig":{{"temperature":0.4,"maxOutputTokens":64}}}}}}"#
                )
                .expect("write");
            }
        }
        let client = emu.client("bench", "us-central1").expect("client");
        let spec = JobSpec::new("gemini-2.0-flash-001")
            .display_name("bench")
            .input("gs://bench/in/prompts.jsonl")
            .output("gs://bench/out");
        let started = std::time::Instant::now();
        let job = client.create(&spec).await.expect("create");
        let done = client
            .wait(job.name(), &WaitOptions::new().policy(PollPolicy::fixed(Duration::from_millis(20))))
            .await
            .expect("job succeeded");
        let secs = started.elapsed().as_secs_f64();
        assert_eq!(done.completion_stats().successful, rows);
        println!("{} {secs} {}", rows as f64 / secs, peak_rss_mb());
        emu.shutdown().await;
    });
}
