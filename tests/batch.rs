//! The whole trip on real parts: fake-gcs-server for Cloud Storage, the
//! emulator (in-process, or as the `vertex-batch-emulator` binary) reading
//! and writing through it, and the client.

mod common;

use std::time::Duration;

use common::gcs::{EmulatorProcess, FakeGcs};
use futures::StreamExt;
use vertex_batch::{
    client::WatchManyOptions, data::input::InputLimits, data::BatchSpec, data::Outcome,
    data::ResultRow, emulator::Emulator, policy::PollPolicy, Client, Error, JobSpec, Prompt,
};

/// `n` prompts keyed `k0…`; every 10th is blocked, every 10th (offset 5)
/// carries the `flaky` marker.
fn prompts(n: usize) -> Vec<(String, Prompt)> {
    (0..n)
        .map(|i| {
            let extra = match i % 10 {
                0 => " [blocked]",
                5 => " flaky",
                _ => "",
            };
            (
                format!("k{i}"),
                Prompt::text(format!("Question {i}{extra}")),
            )
        })
        .collect()
}

fn spec(key: &str) -> BatchSpec {
    BatchSpec::new(
        JobSpec::new("gemini-2.0-flash-001").display_name("trip"),
        "gs://staging-bkt/batches",
    )
    .request_key(key)
    .limits(InputLimits::default().max_rows_per_file(400))
    .watch_options(
        WatchManyOptions::new()
            .policy(PollPolicy::fixed(Duration::from_millis(10)))
            .gets_per_second(1000.0),
    )
}

fn check_row(row: &ResultRow, flaky_fails: bool) {
    let key = row.key().expect("every row has its key");
    let i: usize = key[1..].parse().unwrap();
    match (i % 10, row.outcome()) {
        (0, Outcome::Blocked(_)) => {}
        (5, Outcome::Failed(e)) if flaky_fails => assert_eq!(e.code(), Some(429)),
        (_, Outcome::Succeeded(a)) => assert!(a.text().starts_with("Emulated answer to: Question")),
        (_, other) => panic!("{key}: {other:?}"),
    }
}

struct Setup {
    gcs: FakeGcs,
    emu: Emulator,
    client: Client,
    storage: vertex_batch::storage::Storage,
    _dir: tempfile::TempDir,
}

async fn setup() -> Setup {
    let gcs = FakeGcs::start();
    gcs.buckets(&["staging-bkt"]).await;
    let dir = common::temp();
    let emu = Emulator::builder(dir.path())
        .gcs_storage(gcs.storage())
        .start()
        .await
        .unwrap();
    let client = emu.client("p", "us-central1").unwrap();
    let storage = gcs.storage();
    Setup {
        gcs,
        emu,
        client,
        storage,
        _dir: dir,
    }
}

#[tokio::test]
async fn the_whole_trip_matches_every_prompt_across_parts() {
    let s = setup().await;
    s.emu.knobs().set_shuffle_output(true);
    s.emu.knobs().set_duplicate_every(9);
    s.emu.knobs().fail_rows_containing(Some("flaky".into()));
    let (batch, results) = s
        .client
        .run_batch(&s.storage, &spec("trip-1"), prompts(1000))
        .await
        .unwrap();
    assert_eq!(batch.jobs().len(), 3, "1000 rows at 400 a file");
    assert_eq!(batch.rows(), 1000);
    let (rows, errors, totals) = results.collect_all().await;
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(rows.len(), 1000);
    for r in &rows {
        check_row(r, true);
    }
    assert_eq!(
        (
            totals.succeeded,
            totals.failed,
            totals.blocked,
            totals.missing
        ),
        (800, 100, 100, 0)
    );
    assert!(totals.duplicates > 0);
    let counts = s.emu.rpc_counts();
    assert_eq!(counts.get("CreateBatchPredictionJob"), Some(&3));
    // The outputs really are in Cloud Storage, not in the emulator's dir.
    let objects: Vec<_> = s
        .storage
        .list(&"gs://staging-bkt/batches/trip-1/output/".parse().unwrap())
        .collect()
        .await;
    assert_eq!(objects.len(), 3, "{objects:?}");
    drop(s.gcs);
}

#[tokio::test]
async fn running_again_with_the_same_key_reattaches_without_a_second_upload_or_job() {
    let s = setup().await;
    s.emu.knobs().hold_queued(true);
    let first = s
        .client
        .start_batch(&s.storage, &spec("resume-1"), prompts(500))
        .await
        .unwrap();
    let names: Vec<String> = first.jobs().iter().map(|j| j.name().to_owned()).collect();
    assert_eq!(names.len(), 2);
    let uploads = s.storage.calls().uploads;
    drop(first); // the process "crashes" while the jobs are queued
    s.emu.knobs().hold_queued(false);
    // The same prompts again: checked against the staged digest, not
    // uploaded.
    let (again, results) = s
        .client
        .run_batch(&s.storage, &spec("resume-1"), prompts(500))
        .await
        .unwrap();
    let again_names: Vec<String> = again.jobs().iter().map(|j| j.name().to_owned()).collect();
    assert_eq!(again_names, names);
    assert_eq!(s.storage.calls().uploads, uploads, "nothing uploaded again");
    assert_eq!(s.emu.rpc_counts().get("CreateBatchPredictionJob"), Some(&2));
    let (rows, errors, totals) = results.collect_all().await;
    assert!(errors.is_empty());
    assert_eq!((rows.len(), totals.rows()), (500, 500));
    // And once more after the jobs ended, without the prompts: the same
    // results, no new job.
    let resumed = s
        .client
        .resume_batch(&s.storage, &spec("resume-1"))
        .await
        .unwrap();
    let results = resumed.results().await.unwrap();
    assert_eq!(results.collect_all().await.2.succeeded, totals.succeeded);
    assert_eq!(s.storage.calls().uploads, uploads, "nothing uploaded again");
    assert_eq!(s.emu.rpc_counts().get("CreateBatchPredictionJob"), Some(&2));
}

#[tokio::test]
async fn failed_rows_are_retried_and_the_latest_outcome_wins() {
    let s = setup().await;
    s.emu.knobs().fail_rows_containing(Some("flaky".into()));
    let (mut batch, results) = s
        .client
        .run_batch(&s.storage, &spec("retry-1"), prompts(120))
        .await
        .unwrap();
    assert_eq!(results.collect_all().await.2.failed, 12);
    s.emu.knobs().fail_rows_containing(None);
    assert_eq!(batch.retry_failed().await.unwrap(), 12);
    assert_eq!(batch.rounds(), 2);
    batch.wait().await.unwrap();
    let (rows, errors, totals) = batch.results().await.unwrap().collect_all().await;
    assert!(errors.is_empty());
    assert_eq!(rows.len(), 120);
    for r in &rows {
        check_row(r, false);
    }
    assert_eq!(
        (totals.succeeded, totals.failed, totals.blocked),
        (108, 0, 12)
    );
    // Nothing left to retry: no new round.
    assert_eq!(batch.retry_failed().await.unwrap(), 0);
    assert_eq!(batch.rounds(), 2);
    // The follow-up job held only the 12 retried rows.
    let last = batch.jobs().last().unwrap().clone();
    assert_eq!(last.completion_stats().successful, 12);
}

#[tokio::test]
async fn a_duplicate_key_fails_before_any_job_and_a_bad_batch_key_before_any_call() {
    let s = setup().await;
    let dup = vec![("a", "x"), ("b", "y"), ("a", "z")];
    let err = s
        .client
        .start_batch(&s.storage, &spec("dup-1"), dup)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::Validation(v) if v.field() == "key" && v.message().contains("\"a\"")),
        "{err}"
    );
    assert_eq!(s.emu.rpc_counts().get("CreateBatchPredictionJob"), None);
    let calls = s.storage.calls().total();
    let err = s
        .client
        .start_batch(&s.storage, &spec("Not A Key"), vec![("a", "x")])
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Validation(v) if v.field() == "request_key"));
    assert_eq!(s.storage.calls().total(), calls);
}

#[tokio::test]
async fn three_processes_fake_gcs_the_emulator_binary_and_the_client() {
    let gcs = FakeGcs::start();
    gcs.buckets(&["staging-bkt"]).await;
    let emu = EmulatorProcess::start(
        env!("CARGO_BIN_EXE_vertex-batch-emulator"),
        &gcs,
        &["--fail-rows-containing", "flaky", "--incremental-chunk"],
    );
    let client = Client::builder()
        .ignore_env()
        .project("p")
        .location("us-central1")
        .emulator_host(&emu.host)
        .build()
        .unwrap();
    let storage = gcs.storage();
    let (batch, results) = client
        .run_batch(&storage, &spec("three-1"), prompts(600))
        .await
        .unwrap();
    assert_eq!(batch.jobs().len(), 2);
    let (rows, errors, totals) = results.collect_all().await;
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(rows.len(), 600);
    for r in &rows {
        check_row(r, true);
    }
    assert_eq!(
        (totals.succeeded, totals.failed, totals.blocked),
        (480, 60, 60)
    );
    assert!(totals.duplicates > 0, "the incremental chunk repeats rows");
}
