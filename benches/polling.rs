//! Polling economy: Get calls and detection lag of three polling policies
//! over job durations from 1 minute to 6 hours, against the emulator on a
//! paused Tokio clock (hours of emulated time pass in milliseconds).
//!
//! `cargo bench --bench polling --features emulator`
//!
//! Each job has 1,000 rows paced evenly over its duration (plus 0–10 s),
//! after 25–35 s in the queue. "lag" is the time from the job's end (its `end_time`) to the
//! moment the waiter returned. Medians of 5 runs per cell.

use std::time::Duration;

use vertex_batch::{emulator::Emulator, policy::PollPolicy, JobSpec, WaitOptions};

const DURATIONS: &[u64] = &[60, 300, 900, 1800, 3600, 3 * 3600, 6 * 3600];
const RUNS: usize = 5;
const ROWS: usize = 1000;

fn policies() -> Vec<(&'static str, PollPolicy)> {
    vec![
        ("vertex-batch adaptive", PollPolicy::default()),
        (
            "fixed 5 s (samples)",
            PollPolicy::fixed(Duration::from_secs(5)),
        ),
        (
            "1 s doubling to 60 s",
            PollPolicy::backoff(Duration::from_secs(1), Duration::from_secs(60), 2.0),
        ),
    ]
}

/// (Get calls, detection lag in seconds) for one job.
async fn run_one(policy: &PollPolicy, duration: Duration) -> (u64, f64) {
    let dir = tempfile::tempdir().expect("tempdir");
    let emu = Emulator::start(dir.path()).await.expect("emulator");
    let lines: Vec<String> = (0..ROWS)
        .map(|i| format!(r#"{{"request":{{"contents":[{{"role":"user","parts":[{{"text":"prompt {i}"}}]}}]}}}}"#))
        .collect();
    let input = emu.gcs_path("gs://bench/in.jsonl").expect("path");
    std::fs::create_dir_all(input.parent().expect("parent")).expect("mkdir");
    std::fs::write(&input, lines.join("\n")).expect("write");
    // Random offsets keep job ends from lining up with the pollers' grids.
    emu.knobs()
        .set_queue_delay(Duration::from_secs(25) + Duration::from_millis(fastrand::u64(0..10_000)));
    emu.knobs().set_job_duration(Some(
        duration + Duration::from_millis(fastrand::u64(0..10_000)),
    ));
    let client = emu
        .in_memory_client("bench", "us-central1")
        .expect("client");
    let spec = JobSpec::new("gemini-2.0-flash-001")
        .display_name("poll-bench")
        .input("gs://bench/in.jsonl")
        .output("gs://bench/out");
    let job = client.create(&spec).await.expect("create");
    let t0 = tokio::time::Instant::now();
    let done = client
        .wait(
            job.name(),
            &WaitOptions::new().policy(policy.clone()).any_end(),
        )
        .await
        .expect("wait");
    let detected = t0.elapsed().as_secs_f64();
    let ended = done
        .end_time()
        .and_then(|e| e.duration_since(done.create_time()?).ok())
        .expect("end after create")
        .as_secs_f64();
    let gets = emu
        .rpc_counts()
        .get("GetBatchPredictionJob")
        .copied()
        .unwrap_or(0);
    (gets, (detected - ended).max(0.0))
}

fn median<T: Copy + PartialOrd>(mut v: Vec<T>) -> T {
    v.sort_by(|a, b| a.partial_cmp(b).expect("comparable"));
    v[v.len() / 2]
}

fn label(secs: u64) -> String {
    if secs >= 3600 {
        format!("{} h", secs / 3600)
    } else {
        format!("{} min", secs / 60)
    }
}

fn main() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .expect("runtime");
    let policies = policies();
    println!(
        "Get calls and detection lag per job (median of {RUNS} runs; ~30 s queue, then the run)"
    );
    print!("{:>8}", "run time");
    for (name, _) in &policies {
        print!(" | {name:^26}");
    }
    println!();
    print!("{:>8}", "");
    for _ in &policies {
        print!(" | {:>10} {:>15}", "Get calls", "lag (s)");
    }
    println!();
    let mut lags: Vec<Vec<f64>> = vec![Vec::new(); policies.len()];
    for &secs in DURATIONS {
        print!("{:>8}", label(secs));
        for (i, (_, policy)) in policies.iter().enumerate() {
            let results: Vec<(u64, f64)> = (0..RUNS)
                .map(|_| rt.block_on(run_one(policy, Duration::from_secs(secs))))
                .collect();
            let calls = median(results.iter().map(|r| r.0).collect());
            let lag = median(results.iter().map(|r| r.1).collect());
            lags[i].push(lag);
            print!(" | {calls:>10} {lag:>15.1}");
        }
        println!();
    }
    print!("{:>8}", "median");
    for l in lags {
        print!(" | {:>10} {:>15.1}", "", median(l));
    }
    println!();
}
