//! Live results, measured on real parts: fake-gcs-server, the emulator
//! (in-process, exporting completed rows every few seconds as the service
//! does) and the `vertex-batch` command line as a child process.
//!
//! 1. **Export to pipe.** A job paced to a minute; `vertex-batch run
//!    --output -` follows it. A watcher lists the output directory every
//!    20 ms and notes when each exported file first appears; each RESULTS
//!    line is timed as it arrives on the pipe. Prints the median and p99
//!    of (line arrives − its row's file appears). The watcher sees a file
//!    up to 20 ms late, so the figures are that much low at most.
//! 2. **Following vs reading once.** A 200,000-row batch paced to a
//!    minute, staged and submitted by `vertex-batch submit`; then `run`
//!    with its key follows it live to the end, and `run` with its key again
//!    reads the finished batch at once. Both runs check PROMPTS the same
//!    way and write the same RESULTS file.
//!    Prints each process's CPU time (user + system) and peak RSS, from
//!    `wait4`.
//!
//! ```text
//! scripts/test.sh --no-run     # installs fake-gcs-server into .venv once
//! cargo bench --bench live --features cli
//! VB_LIVE_ROWS=50000 VB_LIVE_SECS=30 cargo bench --bench live --features cli
//! ```

// The children are reaped by `wait4` (for their own CPU time and peak RSS),
// not by `Child::wait`.
#![allow(clippy::zombie_processes)]

#[allow(dead_code)]
#[path = "../tests/common/gcs.rs"]
mod gcs;

use std::{
    collections::HashMap,
    io::{BufRead, BufReader},
    process::{Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use futures::TryStreamExt;
use vertex_batch::{
    emulator::{Emulator, KnobValues},
    GcsUri,
};

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

struct Usage {
    cpu: Duration,
    max_rss_mib: f64,
    code: i32,
}

/// Waits for `pid` and returns its own CPU time and peak RSS.
fn wait4(pid: u32) -> Usage {
    let mut status = 0;
    // SAFETY: `rusage` is plain data filled in by the kernel; `pid` is a
    // child of this process that nothing else waits for.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    let r = unsafe { libc::wait4(pid as libc::pid_t, &mut status, 0, &mut ru) };
    assert_eq!(r, pid as libc::pid_t, "wait4");
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    Usage {
        cpu: tv(ru.ru_utime) + tv(ru.ru_stime),
        max_rss_mib: ru.ru_maxrss as f64 / 1024.0,
        code: libc::WEXITSTATUS(status),
    }
}

/// Waits for `child` on the blocking pool: its own CPU time and peak RSS.
async fn reap(child: std::process::Child) -> Usage {
    let pid = child.id();
    tokio::task::spawn_blocking(move || wait4(pid))
        .await
        .expect("wait")
}

/// Runs `vertex-batch ARGS` to its end: what it used, and its wall time.
async fn timed(env: &[(&str, String)], args: &[&str]) -> (Usage, Duration) {
    let t = Instant::now();
    let usage = reap(run_cli(env, args, Stdio::null())).await;
    (usage, t.elapsed())
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i]
}

fn prompts_file(dir: &std::path::Path, n: u64) -> std::path::PathBuf {
    let path = dir.join("prompts.txt");
    let text: String = (0..n)
        .map(|i| format!("Question {i}: write a haiku about rivers.\n"))
        .collect();
    std::fs::write(&path, text).expect("prompts");
    path
}

fn run_cli(env: &[(&str, String)], args: &[&str], stdout: Stdio) -> std::process::Child {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_vertex-batch"));
    cmd.args(args)
        .env_remove("GOOGLE_APPLICATION_CREDENTIALS")
        .stdout(stdout)
        .stderr(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.spawn().expect("vertex-batch")
}

#[tokio::main]
async fn main() {
    let secs = env("VB_LIVE_SECS", 60);
    let latency_rows = env("VB_LIVE_LATENCY_ROWS", 2_000);
    let big_rows = env("VB_LIVE_ROWS", 200_000);
    let server = gcs::FakeGcs::start();
    server.buckets(&["live-bkt"]).await;
    let dir = tempfile::tempdir().expect("scratch");
    let knobs = KnobValues {
        job_duration: Some(Duration::from_secs(secs)),
        export_every: Duration::from_secs(2),
        export_every_rows: 0,
        ..KnobValues::default()
    };
    let emu = Emulator::builder(dir.path().join("emu"))
        .gcs_storage(server.storage())
        .knobs(knobs)
        .start()
        .await
        .expect("emulator");
    let env = vec![
        ("VERTEX_AI_EMULATOR_HOST", emu.host()),
        ("GOOGLE_CLOUD_PROJECT", "live-project".to_owned()),
        ("STORAGE_EMULATOR_HOST", server.url.clone()),
    ];

    // 1. Export to pipe.
    let input = prompts_file(dir.path(), latency_rows);
    let seen: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watcher = {
        let (storage, seen, stop) = (server.storage(), seen.clone(), stop.clone());
        tokio::spawn(async move {
            let prefix: GcsUri = "gs://live-bkt/lat/".parse().expect("prefix");
            let mut files: HashMap<String, ()> = HashMap::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let listed: Vec<_> = storage
                    .list(&prefix)
                    .try_collect()
                    .await
                    .unwrap_or_default();
                for o in listed {
                    let name = o.uri().object().to_owned();
                    let wanted = name.contains("/output/")
                        && name.ends_with(".jsonl")
                        && !name.rsplit('/').next().unwrap_or("").starts_with('.');
                    if !wanted || files.contains_key(&name) {
                        continue;
                    }
                    let at = Instant::now();
                    files.insert(name, ());
                    let bytes: Vec<u8> = storage
                        .read(o.uri(), None)
                        .await
                        .expect("read")
                        .try_fold(Vec::new(), |mut v, c| async move {
                            v.extend_from_slice(&c);
                            Ok(v)
                        })
                        .await
                        .expect("read");
                    let mut seen = seen.lock().expect("lock");
                    for line in bytes.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
                        if let Ok(v) = serde_json::from_slice::<serde_json::Value>(line) {
                            if let Some(k) = v["key"].as_str() {
                                seen.entry(k.to_owned()).or_insert(at);
                            }
                        }
                    }
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    let mut child = run_cli(
        &env,
        &[
            "run",
            "--model",
            "gemini-2.0-flash-001",
            "--input",
            input.to_str().expect("path"),
            "--staging",
            "gs://live-bkt/lat",
            "--output",
            "-",
            "--poll",
            "1",
        ],
        Stdio::piped(),
    );
    let out = child.stdout.take().expect("stdout");
    let started = Instant::now();
    let arrivals = tokio::task::spawn_blocking(move || {
        let mut got = Vec::new();
        for line in BufReader::new(out).lines() {
            let Ok(line) = line else { break };
            let at = Instant::now();
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) {
                if let Some(k) = v["key"].as_str() {
                    got.push((k.to_owned(), at));
                }
            }
        }
        got
    })
    .await
    .expect("reader");
    let usage = reap(child).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let _ = watcher.await;
    let seen = seen.lock().expect("lock").clone();
    let mut lat: Vec<Duration> = arrivals
        .iter()
        .filter_map(|(k, at)| seen.get(k).map(|s| at.saturating_duration_since(*s)))
        .collect();
    lat.sort();
    let first = arrivals
        .first()
        .map(|(_, at)| at.duration_since(started))
        .unwrap_or_default();
    println!(
        "export to pipe: {} rows, job paced to {secs} s, exports every 2 s, run --poll 1: \
         median {:.0} ms, p99 {:.0} ms, max {:.0} ms; first line after {:.1} s; exit {}",
        lat.len(),
        pct(&lat, 0.5).as_secs_f64() * 1e3,
        pct(&lat, 0.99).as_secs_f64() * 1e3,
        lat.last().copied().unwrap_or_default().as_secs_f64() * 1e3,
        first.as_secs_f64(),
        usage.code
    );

    // 2. Following a big batch live vs reading it once at the end.
    emu.knobs().set_export_every(Duration::from_secs(5));
    let input = prompts_file(dir.path(), big_rows);
    let results = dir.path().join("results.jsonl");
    let args = |key: &'static str| -> Vec<String> {
        [
            "run",
            "--model",
            "gemini-2.0-flash-001",
            "--input",
            input.to_str().expect("path"),
            "--staging",
            "gs://live-bkt/big",
            "--output",
            results.to_str().expect("path"),
            "--poll",
            "2",
            "--request-key",
            key,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    let a = args("big-1");
    // Staged and submitted first (not measured): both runs below reattach
    // to the same batch by its key and do the same checking of PROMPTS.
    let submit = run_cli(
        &env,
        &[
            "submit",
            "--model",
            "gemini-2.0-flash-001",
            "--input",
            input.to_str().expect("path"),
            "--staging",
            "gs://live-bkt/big",
            "--request-key",
            "big-1",
        ],
        Stdio::null(),
    );
    let staged = reap(submit).await;
    assert_eq!(staged.code, 0, "submit");
    let argv: Vec<&str> = a.iter().map(String::as_str).collect();
    let (live, live_wall) = timed(&env, &argv).await;
    let (once, once_wall) = timed(&env, &argv).await;
    let exported = std::fs::metadata(&results).map(|m| m.len()).unwrap_or(0);
    println!(
        "{big_rows} rows, job paced to {secs} s, exports every 5 s ({:.0} MiB of RESULTS):",
        exported as f64 / (1 << 20) as f64
    );
    println!(
        "  following live:       CPU {:.2} s, peak RSS {:.0} MiB, wall {:.1} s, exit {}",
        live.cpu.as_secs_f64(),
        live.max_rss_mib,
        live_wall.as_secs_f64(),
        live.code
    );
    println!(
        "  reading once at end:  CPU {:.2} s, peak RSS {:.0} MiB, wall {:.1} s, exit {}",
        once.cpu.as_secs_f64(),
        once.max_rss_mib,
        once_wall.as_secs_f64(),
        once.code
    );
    println!(
        "  ratio live/once:      CPU {:.2}x, RSS {:.2}x",
        live.cpu.as_secs_f64() / once.cpu.as_secs_f64().max(1e-9),
        live.max_rss_mib / once.max_rss_mib.max(1e-9)
    );
    emu.shutdown().await;
}
