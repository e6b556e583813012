//! The emulator exports completed rows while a job runs, as the service
//! does: `incremental_predictions/predictions_NNNN.jsonl` chunks appear in
//! the output directory `output_info` names from the moment the job runs,
//! the final `predictions.jsonl` still holds every row, a cancelled job
//! keeps its chunks; on a Cloud Storage backend the chunks are uploaded as
//! they are sealed, and a BigQuery output table fills as the job runs.
//!
//! The local tests run over the in-memory transport on a paused Tokio
//! clock (emulated minutes pass at once); the backend tests talk to
//! fake-gcs-server and bqemulator over loopback, pacing the job over a
//! long real duration and observing its state after each chunk is seen,
//! so what they check never depends on timing.

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    time::Duration,
};

use crate::common::*;
use futures::TryStreamExt;
use vertex_batch::{emulator::Emulator, Client, Job, JobSpec, JobState, WaitOptions};

const PROJECT: &str = "p";
const LOCATION: &str = "us-central1";

fn spec(input: &str) -> JobSpec {
    JobSpec::new("gemini-2.0-flash-001")
        .input(input)
        .output("gs://bkt/out")
}

/// `n` prompts, each with a top-level `key` (carried into its output row).
fn lines(n: usize) -> Vec<String> {
    (0..n)
        .map(|i| format!(r#"{{"key":"k{i}",{}"#, &prompt_line(i)[1..]))
        .collect()
}

/// An emulator on a fresh directory, `n` prompts written to
/// `gs://bkt/in.jsonl`, paced to run `duration` of emulated time, with the
/// export triggers given; and an in-memory client (paused clock).
async fn paced(
    n: usize,
    duration: Duration,
    every_rows: u64,
    every: Duration,
) -> (tempfile::TempDir, Emulator, Client) {
    let dir = temp();
    let emu = Emulator::start(dir.path()).await.unwrap();
    emu.knobs().set_job_duration(Some(duration));
    emu.knobs().set_export_every_rows(every_rows);
    emu.knobs().set_export_every(every);
    write_gcs(&emu, "gs://bkt/in.jsonl", &lines(n));
    let client = emu.in_memory_client(PROJECT, LOCATION).unwrap();
    (dir, emu, client)
}

fn done_rows(job: &Job) -> u64 {
    let s = job.completion_stats();
    s.successful + s.failed
}

/// The local output directory `output_info` names.
fn out_dir(emu: &Emulator, job: &Job) -> PathBuf {
    let location = job
        .output_location()
        .expect("output_info is set once the job runs");
    emu.gcs_path(&location.uri()).unwrap()
}

/// The published chunks in `dir`'s `incremental_predictions/`, in order.
fn chunks(dir: &Path) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir.join("incremental_predictions"))
        .map(|d| d.map(|e| e.unwrap().path()).collect())
        .unwrap_or_default();
    found.retain(|p| !p.file_name().unwrap().to_string_lossy().starts_with('.'));
    found.sort();
    found
}

/// Hidden (partial) files left anywhere below `dir`.
fn hidden_partials(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                todo.push(p);
            } else if p.to_string_lossy().ends_with(".partial") {
                found.push(p);
            }
        }
    }
    found
}

/// A row's identity: the prompt it echoes.
fn prompt_of(row: &serde_json::Value) -> String {
    row["request"]["contents"][0]["parts"][0]["text"]
        .as_str()
        .unwrap_or_else(|| panic!("no prompt in {row}"))
        .to_owned()
}

fn prompts_in(path: &Path) -> Vec<String> {
    read_jsonl(path).iter().map(prompt_of).collect()
}

/// Checks the chunks against the final file: each chunk's rows are rows
/// of the final file, and no row is in two chunks (nor twice in one).
/// Returns how many rows the chunks hold.
fn check_chunks_against_final(chunks: &[PathBuf], final_file: &Path) -> usize {
    let all: BTreeSet<String> = prompts_in(final_file).into_iter().collect();
    let mut seen = BTreeSet::new();
    for c in chunks {
        for p in prompts_in(c) {
            assert!(
                all.contains(&p),
                "{p} of {} is not in the final file",
                c.display()
            );
            assert!(seen.insert(p.clone()), "{p} is in two chunks");
        }
    }
    seen.len()
}

#[tokio::test(start_paused = true)]
async fn chunks_of_completed_rows_land_while_the_job_runs_and_the_final_file_holds_every_row() {
    // 100 rows over 40 emulated seconds; a chunk every 10 rows.
    let (_dir, emu, client) = paced(100, Duration::from_secs(40), 10, Duration::ZERO).await;
    let job = client.create(&spec("gs://bkt/in.jsonl")).await.unwrap();
    let running = poll_until(&client, job.name(), "35 rows done", |j| {
        j.state() == JobState::Running && done_rows(j) >= 35
    })
    .await;
    assert!(done_rows(&running) < 100);
    let out = out_dir(&emu, &running);
    assert!(
        running
            .output_location()
            .unwrap()
            .uri()
            .starts_with("gs://bkt/out/prediction-model-"),
        "{:?}",
        running.output_location()
    );
    let early = chunks(&out);
    assert!(early.len() >= 3, "{early:?}");
    assert!(early[0].ends_with("incremental_predictions/predictions_0001.jsonl"));
    for (i, c) in early.iter().enumerate() {
        assert!(
            c.ends_with(format!("predictions_{:04}.jsonl", i + 1)),
            "{c:?}"
        );
        assert_eq!(
            read_jsonl(c).len(),
            10,
            "{} holds one chunk of rows",
            c.display()
        );
    }
    assert!(
        !out.join("predictions.jsonl").exists(),
        "the final file comes at the end"
    );
    // Still RUNNING now that the chunks were seen.
    assert_eq!(
        client.get(job.name()).await.unwrap().state(),
        JobState::Running
    );

    let done = client.wait(job.name(), &fast_wait()).await.unwrap();
    assert_eq!(done.state(), JobState::Succeeded);
    assert_eq!(out_dir(&emu, &done), out, "output_info did not move");
    let final_file = out.join("predictions.jsonl");
    assert_eq!(
        read_jsonl(&final_file).len(),
        100,
        "every row, exported or not"
    );
    let all = chunks(&out);
    assert_eq!(all.len(), 10);
    assert_eq!(
        &all[..early.len()],
        &early[..],
        "sealed chunks stay as they were"
    );
    assert_eq!(check_chunks_against_final(&all, &final_file), 100);
    assert!(
        hidden_partials(&out).is_empty(),
        "{:?}",
        hidden_partials(&out)
    );

    // The reader takes each row once: the final file's copy.
    let (rows, errors, totals) = vertex_batch::batch::ResultReader::new()
        .output_local(&out)
        .inputs(vertex_batch::batch::Inputs::local([emu
            .gcs_path("gs://bkt/in.jsonl")
            .unwrap()]))
        .read()
        .await
        .unwrap()
        .collect_all()
        .await;
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(rows.len(), 100);
    assert_eq!(
        totals.duplicates, 100,
        "each row comes twice: chunk and final file"
    );
}

#[tokio::test(start_paused = true)]
async fn a_chunk_is_sealed_once_it_has_been_open_the_export_interval() {
    // One row a second; no row trigger, a chunk every 5 emulated seconds.
    let (_dir, emu, client) = paced(60, Duration::from_secs(60), 0, Duration::from_secs(5)).await;
    let job = client.create(&spec("gs://bkt/in.jsonl")).await.unwrap();
    let running = poll_until(&client, job.name(), "20 rows done", |j| {
        j.state() == JobState::Running && done_rows(j) >= 20
    })
    .await;
    let out = out_dir(&emu, &running);
    let early = chunks(&out);
    assert!(early.len() >= 2, "{early:?}");
    for c in &early {
        let n = read_jsonl(c).len();
        // Sealed at the first boundary 5 s after its first row: 5 or 6 rows.
        assert!((5..=6).contains(&n), "{}: {n} rows", c.display());
    }
    let done = client.wait(job.name(), &fast_wait()).await.unwrap();
    assert_eq!(done.state(), JobState::Succeeded);
    let final_file = out.join("predictions.jsonl");
    let exported = check_chunks_against_final(&chunks(&out), &final_file);
    assert!((50..=60).contains(&exported), "{exported}");
    assert!(hidden_partials(&out).is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_cancelled_job_keeps_its_chunks_and_the_rows_it_did() {
    let (_dir, emu, client) = paced(100, Duration::from_secs(100), 10, Duration::ZERO).await;
    let job = client.create(&spec("gs://bkt/in.jsonl")).await.unwrap();
    poll_until(&client, job.name(), "25 rows done", |j| done_rows(j) >= 25).await;
    client.cancel(job.name()).await.unwrap();
    let done = match client.wait(job.name(), &WaitOptions::new()).await {
        Err(vertex_batch::Error::JobNotSucceeded(job)) => *job,
        other => panic!("{other:?}"),
    };
    assert_eq!(done.state(), JobState::Cancelled);
    let processed = done_rows(&done) as usize;
    assert!((25..100).contains(&processed), "{processed}");
    let out = out_dir(&emu, &done);
    let kept = chunks(&out);
    assert!(kept.len() >= 2, "{kept:?}");
    let final_file = out.join("predictions.jsonl");
    assert_eq!(read_jsonl(&final_file).len(), processed);
    // Whole chunks of 10 only; the rows after the last one are in the
    // final file alone.
    assert_eq!(
        check_chunks_against_final(&kept, &final_file),
        kept.len() * 10
    );
    assert!(kept.len() * 10 <= processed);
    assert!(
        hidden_partials(&out).is_empty(),
        "{:?}",
        hidden_partials(&out)
    );
}

#[tokio::test(start_paused = true)]
async fn with_both_triggers_off_nothing_is_exported_before_the_end() {
    let (_dir, emu, client) = paced(50, Duration::from_secs(40), 0, Duration::ZERO).await;
    let job = client.create(&spec("gs://bkt/in.jsonl")).await.unwrap();
    let running = poll_until(&client, job.name(), "30 rows done", |j| {
        j.state() == JobState::Running && done_rows(j) >= 30
    })
    .await;
    let out = out_dir(&emu, &running);
    assert!(!out.join("incremental_predictions").exists());
    let done = client.wait(job.name(), &fast_wait()).await.unwrap();
    assert_eq!(
        read_jsonl(&out_dir(&emu, &done).join("predictions.jsonl")).len(),
        50
    );
    assert!(!out.join("incremental_predictions").exists());
}

/// Polls (every 20 ms, at most 1,500 times) until `check` holds.
async fn eventually<F, Fut>(what: &str, check: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..1500 {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("{what} never happened");
}

#[tokio::test]
async fn on_a_cloud_storage_backend_each_chunk_is_uploaded_when_sealed_and_never_again() {
    let gcs = gcs::FakeGcs::start();
    gcs.buckets(&["bkt"]).await;
    let storage = gcs.storage();
    let dir = temp();
    let emu = Emulator::builder(dir.path())
        .gcs_storage(storage.clone())
        .start()
        .await
        .unwrap();
    // 1,000 rows over 100 s: it runs long after the first chunks.
    emu.knobs().set_job_duration(Some(Duration::from_secs(100)));
    emu.knobs().set_export_every_rows(5);
    emu.knobs().set_export_every(Duration::ZERO);
    let text = lines(1000).join("\n") + "\n";
    storage
        .upload_bytes(&"gs://bkt/in.jsonl".parse().unwrap(), text)
        .await
        .unwrap();
    let client = emu.client(PROJECT, LOCATION).unwrap();
    let job = client.create(&spec("gs://bkt/in.jsonl")).await.unwrap();
    let running = poll_until(&client, job.name(), "RUNNING", |j| {
        j.state() == JobState::Running
    })
    .await;
    let remote = running
        .output_location()
        .expect("output_info is set once the job runs")
        .uri();
    assert!(
        remote.starts_with("gs://bkt/out/prediction-model-"),
        "{remote}"
    );
    let chunk2: vertex_batch::GcsUri =
        format!("{remote}/incremental_predictions/predictions_0002.jsonl")
            .parse()
            .unwrap();
    eventually("the second chunk uploaded", || async {
        storage.metadata(&chunk2).await.unwrap().is_some()
    })
    .await;
    let now = client.get(job.name()).await.unwrap();
    assert_eq!(
        now.state(),
        JobState::Running,
        "the chunk is there before the end"
    );
    let generation = |info: Option<vertex_batch::storage::ObjectInfo>| {
        info.expect("the object exists")
            .generation()
            .expect("fake-gcs-server gives generations")
    };
    let chunk1: vertex_batch::GcsUri =
        format!("{remote}/incremental_predictions/predictions_0001.jsonl")
            .parse()
            .unwrap();
    let early = (
        generation(storage.metadata(&chunk1).await.unwrap()),
        generation(storage.metadata(&chunk2).await.unwrap()),
    );
    let final_uri: vertex_batch::GcsUri = format!("{remote}/predictions.jsonl").parse().unwrap();
    assert!(storage.metadata(&final_uri).await.unwrap().is_none());

    client.cancel(job.name()).await.unwrap();
    let done = match client.wait(job.name(), &fast_wait()).await {
        Err(vertex_batch::Error::JobNotSucceeded(job)) => *job,
        other => panic!("{other:?}"),
    };
    assert_eq!(done.state(), JobState::Cancelled);
    let listed: Vec<String> = storage
        .list(&format!("{remote}/").parse().unwrap())
        .map_ok(|o| o.uri().to_string())
        .try_collect()
        .await
        .unwrap();
    let chunk_objects: Vec<&String> = listed
        .iter()
        .filter(|u| u.contains("/incremental_predictions/predictions_"))
        .collect();
    assert!(chunk_objects.len() >= 2, "{listed:?}");
    assert!(listed.contains(&final_uri.to_string()), "{listed:?}");
    assert_eq!(
        listed.len(),
        chunk_objects.len() + 1,
        "nothing hidden uploaded: {listed:?}"
    );
    // The end uploaded the final file, not the chunks again.
    let late = (
        generation(storage.metadata(&chunk1).await.unwrap()),
        generation(storage.metadata(&chunk2).await.unwrap()),
    );
    assert_eq!(early, late, "the chunks were uploaded once");
    // The remote chunks hold rows of the final object, none twice.
    let fetch = |u: String| {
        let storage = storage.clone();
        async move {
            let parts: Vec<bytes::Bytes> = storage
                .read(&u.parse().unwrap(), None)
                .await
                .unwrap()
                .try_collect()
                .await
                .unwrap();
            let local = temp().keep().join("object.jsonl");
            std::fs::write(&local, parts.concat()).unwrap();
            local
        }
    };
    let final_file = fetch(final_uri.to_string()).await;
    let mut chunk_files = Vec::new();
    for u in chunk_objects {
        chunk_files.push(fetch(u.clone()).await);
    }
    let processed = done_rows(&done) as usize;
    assert_eq!(read_jsonl(&final_file).len(), processed);
    assert_eq!(
        check_chunks_against_final(&chunk_files, &final_file),
        chunk_files.len() * 5
    );
}

/// A job that exported chunks and then failed to publish its final file
/// keeps its claim: the chunks stay, and `output_info` still names them.
#[tokio::test(start_paused = true)]
async fn a_failed_job_keeps_the_chunks_it_exported() {
    let (dir, emu, client) = paced(40, Duration::from_secs(40), 10, Duration::ZERO).await;
    let job = client.create(&spec("gs://bkt/in.jsonl")).await.unwrap();
    let running = poll_until(&client, job.name(), "a chunk sealed", |j| {
        j.state() == JobState::Running && done_rows(j) >= 15
    })
    .await;
    let out = out_dir(&emu, &running);
    // Make publishing fail: a non-empty directory where predictions.jsonl
    // is to be renamed.
    std::fs::create_dir_all(out.join("predictions.jsonl/blocker")).unwrap();
    let done = client
        .wait(job.name(), &fast_wait().any_end())
        .await
        .unwrap();
    assert_eq!(done.state(), JobState::Failed, "{done:?}");
    assert_eq!(
        out_dir(&emu, &done),
        out,
        "output_info still names the output"
    );
    emu.shutdown().await;
    let kept = chunks(&out);
    assert_eq!(kept.len(), 4, "{kept:?}");
    assert!(hidden_partials(dir.path()).is_empty());
}
