//! The crash matrix: `vertex-batch run --request-key K` killed with SIGKILL
//! at each step — while staging, after the manifest, between a claim and
//! its create, between two parts' submits, while following, while writing
//! results — then run again with K; and two runs of one key started at
//! once. Three processes: fake-gcs-server, the `vertex-batch-emulator`
//! binary, and the command line — and a fourth, bqemulator, when the batch
//! stages in BigQuery (the same matrix again). Every time: one live job per part, and
//! every prompt's own answer exactly once.
//!
//! The kill lands at an exact step: the command line stops itself there
//! when `VERTEX_BATCH_TEST_PAUSE_AT` names it (it prints `paused at …` and
//! waits), and the test kills it once it has said so. No sleeps.

use std::process::Stdio;

use crate::common::{
    bq::BqEmulator,
    gcs::{EmulatorProcess, FakeGcs},
};
use futures::TryStreamExt;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use vertex_batch::{Client, JobState, ListOptions};

const BIN: &str = env!("CARGO_BIN_EXE_vertex-batch");
const PROMPTS: usize = 25;
const PARTS: usize = 3; // 25 prompts, 10 a job

struct World {
    gcs: FakeGcs,
    /// The BigQuery emulator, when the batch stages in BigQuery.
    bq: Option<BqEmulator>,
    /// `--staging`.
    staging: String,
    emu: EmulatorProcess,
    client: Client,
    dir: tempfile::TempDir,
}

async fn world() -> World {
    world_on(false).await
}

/// A world whose batches stage in Cloud Storage, or in BigQuery.
async fn world_on(bigquery: bool) -> World {
    let gcs = FakeGcs::start();
    gcs.buckets(&["crash-bkt"]).await;
    let bq = bigquery.then(|| BqEmulator::start("crash-project"));
    if let Some(bqe) = &bq {
        vertex_batch::bigquery::BigQuery::builder()
            .ignore_env()
            .emulator_host(bqe.host())
            .build()
            .unwrap()
            .create_dataset(
                &"bq://crash-project.batches".parse().unwrap(),
                "us-central1",
            )
            .await
            .unwrap();
    }
    let mut args = vec![
        "--row-delay-ms",
        "20",
        "--shuffle-output",
        "--duplicate-every",
        "7",
    ];
    if let Some(bqe) = &bq {
        args.extend(["--bigquery-emulator-host", bqe.url.as_str()]);
    }
    // Rows take a little emulated time, so a job is still running while
    // it is followed.
    let emu = EmulatorProcess::start(env!("CARGO_BIN_EXE_vertex-batch-emulator"), &gcs, &args);
    let client = Client::builder()
        .ignore_env()
        .project("crash-project")
        .location("us-central1")
        .emulator_host(&emu.host)
        .build()
        .unwrap();
    let dir = crate::common::temp();
    let lines: Vec<String> = (0..PROMPTS)
        .map(|i| {
            serde_json::json!({
                "key": format!("q{i}"),
                "request": {"contents": [{"role": "user", "parts": [{"text": format!("Question {i}")}]}]}
            })
            .to_string()
        })
        .collect();
    crate::common::write_lines(&dir.path().join("prompts.jsonl"), &lines);
    let staging = match &bq {
        Some(_) => "bq://crash-project.batches".to_owned(),
        None => "gs://crash-bkt/batches".to_owned(),
    };
    World {
        gcs,
        bq,
        staging,
        emu,
        client,
        dir,
    }
}

impl World {
    /// `run` of batch `key` writing `results`, pausing at `pause` if given.
    fn command(&self, key: &str, results: &str, pause: Option<&str>) -> tokio::process::Command {
        let mut c = tokio::process::Command::new(BIN);
        for k in [
            "GOOGLE_APPLICATION_CREDENTIALS",
            "GOOGLE_CLOUD_LOCATION",
            "RUST_LOG",
            "VERTEX_BATCH_TEST_PAUSE_AT",
        ] {
            c.env_remove(k);
        }
        c.env("VERTEX_AI_EMULATOR_HOST", &self.emu.host)
            .env("STORAGE_EMULATOR_HOST", &self.gcs.url)
            .env("GOOGLE_CLOUD_PROJECT", "crash-project")
            .env_remove("BIGQUERY_EMULATOR_HOST")
            .env_remove("BIGQUERY_STORAGE_EMULATOR_HOST")
            .current_dir(self.dir.path())
            .args([
                "run",
                "--model",
                "gemini-2.0-flash-001",
                "--input",
                "prompts.jsonl",
                "--staging",
                &self.staging,
                "--rows-per-job",
                "10",
                "--claim-lease",
                "1",
                "--request-key",
                key,
                "--output",
                results,
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        if let Some(p) = pause {
            c.env("VERTEX_BATCH_TEST_PAUSE_AT", p);
        }
        if let Some(bqe) = &self.bq {
            c.env("BIGQUERY_EMULATOR_HOST", &bqe.url)
                .env("BIGQUERY_STORAGE_EMULATOR_HOST", &bqe.grpc_url);
        }
        c
    }

    /// Runs to the pause point `pause`, then kills the process (SIGKILL).
    async fn run_and_kill_at(&self, key: &str, pause: &str) {
        let mut child = self
            .command(key, "results.jsonl", Some(pause))
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let mut seen = Vec::new();
        loop {
            match lines.next_line().await.unwrap() {
                Some(l) if l.contains(&format!("paused at {pause}")) => break,
                Some(l) => seen.push(l),
                None => panic!(
                    "{pause}: the run ended before its pause point ({:?}):\n{}",
                    child.wait().await,
                    seen.join("\n")
                ),
            }
        }
        child.start_kill().unwrap(); // SIGKILL
        let status = child.wait().await.unwrap();
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&status),
            Some(9),
            "{pause}: killed"
        );
    }

    /// Runs to the end; its exit code and stderr.
    async fn run_to_end(&self, key: &str, results: &str) -> (i32, String) {
        let o = self.command(key, results, None).output().await.unwrap();
        let stderr = String::from_utf8_lossy(&o.stderr).into_owned();
        assert!(!stderr.contains("panicked"), "{stderr}");
        (o.status.code().unwrap_or(-1), stderr)
    }

    /// One job per part of batch `key` that is not cancelled — the others
    /// (duplicates) cancelled.
    async fn assert_one_live_job_per_part(&self, key: &str) {
        for p in 0..PARTS {
            let part = format!("{key}-r0-p{p}");
            let jobs: Vec<vertex_batch::Job> = self
                .client
                .list(&ListOptions::new().label("vertex_batch_request_key", &part))
                .try_collect()
                .await
                .unwrap();
            let live: Vec<_> = jobs
                .iter()
                .filter(|j| !matches!(j.state(), JobState::Cancelled | JobState::Cancelling))
                .collect();
            assert_eq!(live.len(), 1, "{part}: {jobs:#?}");
            assert_eq!(live[0].state(), JobState::Succeeded, "{part}");
        }
    }

    /// Every prompt's own answer, exactly once, in `results`.
    fn assert_every_answer_once(&self, results: &str) {
        let rows: Vec<Value> = crate::common::read_jsonl(&self.dir.path().join(results));
        assert_eq!(rows.len(), PROMPTS, "{results}: one line per prompt");
        let mut keys: Vec<&str> = rows.iter().map(|r| r["key"].as_str().unwrap()).collect();
        keys.sort();
        keys.dedup();
        assert_eq!(keys.len(), PROMPTS, "{results}: every key once");
        for r in &rows {
            let i: usize = r["key"].as_str().unwrap()[1..].parse().unwrap();
            assert_eq!(r["outcome"], "succeeded", "{r}");
            assert_eq!(
                r["text"].as_str().unwrap(),
                format!("Emulated answer to: Question {i}"),
                "{r}: the prompt's own answer"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_killed_at_any_step_then_run_again_ends_with_one_job_per_part_and_every_answer_once()
{
    kill_matrix(&world().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_staged_in_bigquery_killed_at_any_step_then_run_again_ends_the_same() {
    kill_matrix(&world_on(true).await).await;
}

/// Kills a run at each step, runs it again, and checks the batch.
async fn kill_matrix(w: &World) {
    let points = [
        "staged:0",
        "manifest",
        "claimed:0:1",
        "submitted:0:0",
        "following",
        "writing",
    ];
    for (n, point) in points.iter().enumerate() {
        let key = format!("crash-{n}");
        w.run_and_kill_at(&key, point).await;
        let results = format!("results-{n}.jsonl");
        let (code, stderr) = w.run_to_end(&key, &results).await;
        assert_eq!(code, 0, "{point}: the re-run finishes\n{stderr}");
        // At `claimed:0:1` the dead run held part 1's claim; fake-gcs-server
        // ignores create-only preconditions, so the re-run claims it again
        // at once (a take-over after the lease, on storage that keeps
        // preconditions, is tested in tests/batch.rs).
        w.assert_one_live_job_per_part(&key).await;
        w.assert_every_answer_once(&results);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_runs_of_one_key_at_once_follow_the_same_jobs_and_write_the_same_answers() {
    two_at_once(&world().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_runs_of_one_key_at_once_staged_in_bigquery_follow_the_same_jobs() {
    two_at_once(&world_on(true).await).await;
}

async fn two_at_once(w: &World) {
    let (a, b) = tokio::join!(
        w.run_to_end("twice-1", "a.jsonl"),
        w.run_to_end("twice-1", "b.jsonl")
    );
    assert_eq!(a.0, 0, "{}", a.1);
    assert_eq!(b.0, 0, "{}", b.1);
    w.assert_one_live_job_per_part("twice-1").await;
    w.assert_every_answer_once("a.jsonl");
    w.assert_every_answer_once("b.jsonl");
    let sorted = |f: &str| {
        let mut v: Vec<String> = crate::common::read_jsonl(&w.dir.path().join(f))
            .iter()
            .map(|r| format!("{} {}", r["key"], r["text"]))
            .collect();
        v.sort();
        v
    };
    assert_eq!(sorted("a.jsonl"), sorted("b.jsonl"));
}
