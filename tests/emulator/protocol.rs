//! The emulator's protocol: create validation, routing headers, status
//! codes, listing and filters, cancel, delete, durability across restarts
//! and crashes, and the runtime knobs.

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    time::Duration,
};

use crate::common::*;
use futures::TryStreamExt;
use tonic::{metadata::MetadataValue, Code};
use vertex_batch::{
    emulator::Emulator,
    error::ServiceError,
    policy::RetryPolicy,
    proto::{
        aiplatform as pb,
        aiplatform::{batch_prediction_job::input_config, job_service_client::JobServiceClient},
    },
    Client, Error, Job, JobSpec, JobState, ListOptions, LocationName,
};

const PROJECT: &str = "p1";
const LOCATION: &str = "us-central1";
const PARENT: &str = "projects/p1/locations/us-central1";

fn spec(input: &str, output: &str) -> JobSpec {
    JobSpec::new("gemini-2.0-flash-001")
        .display_name("protocol-test")
        .input(input)
        .output(output)
}

/// A valid create request for `p1/us-central1`, to be spoiled one field at a time.
fn valid_spec() -> JobSpec {
    spec("gs://bkt/in.jsonl", "gs://bkt/out")
}

fn valid_request() -> pb::CreateBatchPredictionJobRequest {
    spec("gs://bkt/in.jsonl", "gs://bkt/out")
        .to_request(&LocationName::new(PROJECT, LOCATION).unwrap())
        .unwrap()
}

fn violated_fields(err: &Error) -> Vec<String> {
    err.as_service()
        .unwrap_or_else(|| panic!("not a service error: {err}"))
        .field_violations()
        .iter()
        .map(|v| v.field.clone())
        .collect()
}

fn names(jobs: &[Job]) -> Vec<String> {
    jobs.iter().map(|j| j.name().to_owned()).collect()
}

async fn list_names(client: &Client, opts: ListOptions) -> Vec<String> {
    let jobs: Vec<Job> = client.list(&opts).try_collect().await.unwrap();
    names(&jobs)
}

/// Every file under `dir` whose name satisfies `pred`.
fn files_under(dir: &Path, pred: &dyn Fn(&str) -> bool) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if path.file_name().and_then(|n| n.to_str()).is_some_and(pred) {
                found.push(path);
            }
        }
    }
    found
}

fn job_id(job: &Job) -> u64 {
    job.id().parse().unwrap()
}

// ---------------------------------------------------------------------------
// Create validation
// ---------------------------------------------------------------------------

#[tokio::test]
async fn invalid_creates_are_rejected_naming_the_offending_field() {
    let (_dir, _emu, client) = started().await;

    // A valid request with one change made to its job.
    // (A `with_proto` change is applied after local validation, so it
    // reaches the emulator as it is.)
    let changed = |change: fn(&mut pb::BatchPredictionJob)| valid_spec().with_proto(change);
    let empty_name = changed(|j| j.display_name = String::new());
    let format_mismatch =
        changed(|j| j.input_config.as_mut().unwrap().instances_format = "bigquery".into());
    let no_output = changed(|j| j.output_config = None);
    let bad_uri = changed(|j| {
        j.input_config.as_mut().unwrap().source =
            Some(input_config::Source::GcsSource(pb::GcsSource {
                uris: vec!["gs:/bkt/in.jsonl".into()],
            }))
    });
    let bare_model = changed(|j| j.model = "gemini-2.0-flash-001".into());

    let cases = [
        (empty_name, "batch_prediction_job.display_name"),
        (
            format_mismatch,
            "batch_prediction_job.input_config.instances_format",
        ),
        (no_output, "batch_prediction_job.output_config"),
        (bad_uri, "batch_prediction_job.input_config.gcs_source.uris"),
        (bare_model, "batch_prediction_job.model"),
    ];
    for (request, field) in cases {
        let err = client.create(&request).await.unwrap_err();
        assert_eq!(err.code(), Some(Code::InvalidArgument), "{field}: {err}");
        assert_eq!(violated_fields(&err), vec![field.to_owned()], "{err}");
    }

    // None of them made a job; the unspoiled request does.
    assert!(client
        .list_page(&ListOptions::new(), None)
        .await
        .unwrap()
        .jobs
        .is_empty());
    let job = client.create(&valid_spec()).await.unwrap();
    assert_eq!(
        list_names(&client, ListOptions::new()).await,
        vec![job.name().to_owned()]
    );
}

// ---------------------------------------------------------------------------
// Routing header
// ---------------------------------------------------------------------------

#[tokio::test]
async fn routing_header_must_agree_with_the_request_parent() {
    let dir = temp();
    let emu = Emulator::start(dir.path()).await.unwrap();
    let mut stub = JobServiceClient::connect(format!("http://{}", emu.addr()))
        .await
        .unwrap();
    let with_header = |header: &'static str| {
        let mut r = tonic::Request::new(valid_request());
        r.metadata_mut()
            .insert("x-goog-request-params", MetadataValue::from_static(header));
        r
    };

    let status = stub
        .create_batch_prediction_job(with_header(
            "parent=projects%2Fother%2Flocations%2Fus-central1",
        ))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    let err = ServiceError::from_status(&status);
    let fields: Vec<&str> = err
        .field_violations()
        .iter()
        .map(|v| v.field.as_str())
        .collect();
    assert_eq!(fields, vec!["parent"], "{err}");

    for header in [
        "parent=projects/p1/locations/us-central1",
        "parent=projects%2Fp1%2Flocations%2Fus-central1",
    ] {
        let job = stub
            .create_batch_prediction_job(with_header(header))
            .await
            .unwrap_or_else(|s| panic!("{header}: {s:?}"))
            .into_inner();
        assert!(
            job.name
                .starts_with(&format!("{PARENT}/batchPredictionJobs/")),
            "{}",
            job.name
        );
    }

    // Only the two accepted creates made jobs.
    let client = emu.client(PROJECT, LOCATION).unwrap();
    assert_eq!(list_names(&client, ListOptions::new()).await.len(), 2);
}

// ---------------------------------------------------------------------------
// Status codes
// ---------------------------------------------------------------------------

#[tokio::test]
async fn unknown_jobs_are_not_found_and_other_methods_unimplemented() {
    let (_dir, emu, client) = started().await;

    let err = client.get("1234567").await.unwrap_err();
    assert_eq!(err.code(), Some(Code::NotFound), "{err}");

    // A real job's id under another project is not that job.
    let job = client.create(&valid_spec()).await.unwrap();
    let elsewhere = format!(
        "projects/someone-else/locations/{LOCATION}/batchPredictionJobs/{}",
        job.id()
    );
    let err = client.get(&elsewhere).await.unwrap_err();
    assert_eq!(err.code(), Some(Code::NotFound), "{err}");
    assert_eq!(client.get(job.name()).await.unwrap().name(), job.name());

    let mut stub = JobServiceClient::connect(format!("http://{}", emu.addr()))
        .await
        .unwrap();
    let status = stub
        .delete_custom_job(pb::DeleteCustomJobRequest {
            name: format!("{PARENT}/customJobs/1"),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unimplemented, "{status:?}");
}

// ---------------------------------------------------------------------------
// Listing
// ---------------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn list_pages_newest_first_and_filters_select_the_right_jobs() {
    let (_dir, emu, client) = in_memory().await;
    write_gcs(&emu, "gs://bkt/in.jsonl", &[prompt_line(1)]);

    // (display name, team label, whether the input exists: missing input fails)
    let plan = [
        ("alpha", "a", true),
        ("beta", "b", false),
        ("gamma", "a", true),
        // Quotes, a backslash and an AND inside a display name.
        (r#"d "q" AND \o/"#, "b", false),
        ("x", "c", true),
    ];
    let mut created = Vec::new();
    let mut cutoff = None;
    for (i, (display, team, ok)) in plan.iter().enumerate() {
        let input = if *ok {
            "gs://bkt/in.jsonl"
        } else {
            "gs://bkt/missing.jsonl"
        };
        let job = client
            .create(
                &spec(input, "gs://bkt/out")
                    .display_name(*display)
                    .label("team", *team),
            )
            .await
            .unwrap();
        if i == 2 {
            // The filter has millisecond precision: put the cutoff just past
            // this job and the next jobs 5 ms (of the paused clock) later.
            cutoff = Some(job.create_time().unwrap() + Duration::from_millis(1));
            tokio::time::advance(Duration::from_millis(5)).await;
        }
        created.push(job.name().to_owned());
    }
    // Jobs of another project and of another location, matching every filter.
    let other_project = emu.in_memory_client("p2", LOCATION).unwrap();
    let other_location = emu.in_memory_client(PROJECT, "europe-west4").unwrap();
    for c in [&other_project, &other_location] {
        let job = c
            .create(
                &spec("gs://bkt/missing.jsonl", "gs://bkt/out")
                    .display_name("x")
                    .label("team", "a"),
            )
            .await
            .unwrap();
        c.wait(job.name(), &fast_wait().any_end()).await.unwrap();
    }
    for name in &created {
        client.wait(name, &fast_wait().any_end()).await.unwrap();
    }
    let newest_first: Vec<String> = created.iter().rev().cloned().collect();

    // Pages of two, newest first, each job exactly once.
    let opts = ListOptions::new().page_size(2);
    let first = client.list_page(&opts, None).await.unwrap();
    assert_eq!(names(&first.jobs), newest_first[..2].to_vec());
    let mut token = first.next_page_token.clone();
    assert!(token.is_some(), "a first page of 2 of 5 has a next token");
    let mut seen = names(&first.jobs);
    let mut pages = 1;
    while let Some(t) = token {
        let page = client.list_page(&opts, Some(&t)).await.unwrap();
        assert!(page.jobs.len() <= 2);
        seen.extend(names(&page.jobs));
        token = page.next_page_token;
        pages += 1;
        assert!(pages <= 5, "pagination does not end");
    }
    assert_eq!(pages, 3);
    assert_eq!(seen, newest_first);

    // The stream follows the pages itself.
    assert_eq!(list_names(&client, ListOptions::new()).await, newest_first);
    assert_eq!(
        list_names(&client, ListOptions::new().page_size(2)).await,
        newest_first
    );

    // Filters.
    let pick = |idx: &[usize]| -> Vec<String> { idx.iter().map(|&i| created[i].clone()).collect() };
    assert_eq!(
        list_names(&client, ListOptions::new().label("team", "a")).await,
        pick(&[2, 0])
    );
    assert_eq!(
        list_names(&client, ListOptions::new().display_name("x")).await,
        pick(&[4])
    );
    assert_eq!(
        list_names(&client, ListOptions::new().display_name(r#"d "q" AND \o/"#)).await,
        pick(&[3])
    );
    assert!(
        list_names(&client, ListOptions::new().display_name("d q AND o/"))
            .await
            .is_empty()
    );
    // A label no job can carry is refused locally, not sent as a filter
    // that means something else.
    let lists = emu.rpc_counts().get("ListBatchPredictionJobs").copied();
    let injected = ListOptions::new().label("team", "a AND state=JOB_STATE_FAILED");
    let err = client.list_page(&injected, None).await.unwrap_err();
    assert!(
        matches!(&err, Error::Validation(v) if v.field() == "filter"),
        "{err:?}"
    );
    assert!(err.to_string().contains("team"), "{err}");
    assert_eq!(
        emu.rpc_counts().get("ListBatchPredictionJobs").copied(),
        lists
    );
    assert_eq!(
        list_names(&client, ListOptions::new().state(JobState::Failed)).await,
        pick(&[3, 1])
    );
    assert_eq!(
        list_names(&client, ListOptions::new().state(JobState::Succeeded)).await,
        pick(&[4, 2, 0])
    );
    assert_eq!(
        list_names(&client, ListOptions::new().created_after(cutoff.unwrap())).await,
        pick(&[4, 3])
    );
    assert_eq!(
        list_names(
            &client,
            ListOptions::new()
                .label("team", "b")
                .state(JobState::Failed)
                .created_after(cutoff.unwrap())
        )
        .await,
        pick(&[3])
    );

    let err = client
        .list_page(&ListOptions::new().raw_filter("color=red"), None)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(Code::InvalidArgument), "{err}");
    assert_eq!(violated_fields(&err), vec!["filter".to_owned()]);

    // Each parent sees only its own job.
    for c in [&other_project, &other_location] {
        let theirs = list_names(c, ListOptions::new()).await;
        assert_eq!(theirs.len(), 1, "{theirs:?}");
        assert!(theirs[0].starts_with(&format!("{}/", c.parent())));
    }
}

// ---------------------------------------------------------------------------
// Cancel and delete
// ---------------------------------------------------------------------------

/// Starts a 100-row job paced to last 30 s and waits until it is RUNNING.
/// An emulator on a fresh data directory, and a client of it.
/// An emulator and an in-memory client to it, for tests on a paused clock
/// (the emulator's timestamps and pacing follow Tokio's clock).
async fn in_memory() -> (tempfile::TempDir, Emulator, Client) {
    let dir = temp();
    let emu = Emulator::start(dir.path()).await.unwrap();
    let client = emu.in_memory_client(PROJECT, LOCATION).unwrap();
    (dir, emu, client)
}

async fn started() -> (tempfile::TempDir, Emulator, Client) {
    let dir = temp();
    let emu = Emulator::start(dir.path()).await.unwrap();
    let client = emu.client(PROJECT, LOCATION).unwrap();
    (dir, emu, client)
}

async fn long_running_job(emu: &Emulator, client: &Client) -> Job {
    emu.knobs().set_job_duration(Some(Duration::from_secs(30)));
    let lines: Vec<String> = (0..100).map(prompt_line).collect();
    write_gcs(emu, "gs://bkt/in.jsonl", &lines);
    let job = client
        .create(&spec("gs://bkt/in.jsonl", "gs://bkt/out"))
        .await
        .unwrap();
    poll_until(client, job.name(), "RUNNING", |j| {
        j.state() == JobState::Running
    })
    .await
}

#[tokio::test]
async fn cancelling_a_running_job_ends_it_cancelled_with_rows_left_over() {
    let (_dir, emu, client) = started().await;
    let job = long_running_job(&emu, &client).await;

    client.cancel(job.name()).await.unwrap();
    let after = client.get(job.name()).await.unwrap();
    assert!(
        matches!(after.state(), JobState::Cancelling | JobState::Cancelled),
        "{}",
        after.state()
    );

    let done = client
        .wait(job.name(), &fast_wait().any_end())
        .await
        .unwrap();
    assert_eq!(done.state(), JobState::Cancelled);
    let stats = done.completion_stats();
    assert!(stats.incomplete.is_some_and(|n| n > 0), "{stats:?}");
    assert_eq!(stats.total(), 100, "{stats:?}");
    assert!(done.end_time().is_some());

    let err = client.cancel(job.name()).await.unwrap_err();
    assert_eq!(err.code(), Some(Code::FailedPrecondition), "{err}");
}

#[tokio::test]
async fn only_ended_jobs_can_be_deleted_and_then_they_are_gone() {
    let (_dir, emu, client) = started().await;
    let job = long_running_job(&emu, &client).await;

    let err = client.delete(job.name()).await.unwrap_err();
    assert_eq!(err.code(), Some(Code::FailedPrecondition), "{err}");
    assert_eq!(
        client.get(job.name()).await.unwrap().state(),
        JobState::Running
    );

    client.cancel(job.name()).await.unwrap();
    client
        .wait(job.name(), &fast_wait().any_end())
        .await
        .unwrap();
    client.delete(job.name()).await.unwrap();
    assert!(
        emu.rpc_counts().get("GetOperation").copied().unwrap_or(0) >= 1,
        "{:?}",
        emu.rpc_counts()
    );

    let err = client.get(job.name()).await.unwrap_err();
    assert_eq!(err.code(), Some(Code::NotFound), "{err}");
    assert!(list_names(&client, ListOptions::new()).await.is_empty());
    let err = client.delete(job.name()).await.unwrap_err();
    assert_eq!(err.code(), Some(Code::NotFound), "{err}");
}

// ---------------------------------------------------------------------------
// Durability
// ---------------------------------------------------------------------------

#[tokio::test]
async fn jobs_survive_a_graceful_restart_and_ids_keep_growing() {
    let (dir, emu, client) = started().await;
    write_gcs(
        &emu,
        "gs://bkt/in.jsonl",
        &[prompt_line(1), prompt_line(2), prompt_line(3)],
    );
    let job = client
        .create(&spec("gs://bkt/in.jsonl", "gs://bkt/out"))
        .await
        .unwrap();
    let before = client.wait(job.name(), &fast_wait()).await.unwrap();
    let location = before.output_location().expect("an output location");
    emu.shutdown().await;

    let emu = Emulator::start(dir.path()).await.unwrap();
    let client = emu.client(PROJECT, LOCATION).unwrap();
    let after = client.get(job.name()).await.unwrap();
    assert_eq!(after.state(), JobState::Succeeded);
    assert_eq!(after.output_location(), Some(location));
    assert_eq!(after.completion_stats(), before.completion_stats());
    assert_eq!(read_jsonl(&predictions_file(&emu, &after)).len(), 3);

    let next = client
        .create(&spec("gs://bkt/in.jsonl", "gs://bkt/out"))
        .await
        .unwrap();
    assert_ne!(next.name(), job.name());
    assert!(
        job_id(&next) > job_id(&before),
        "{} vs {}",
        next.id(),
        before.id()
    );
}

#[tokio::test]
async fn a_deleted_jobs_name_is_never_reused_after_a_restart() {
    let (dir, emu, client) = started().await;
    let kept = client.create(&valid_spec()).await.unwrap();
    let deleted = client.create(&valid_spec()).await.unwrap();
    for j in [&kept, &deleted] {
        client.wait(j.name(), &fast_wait().any_end()).await.unwrap();
    }
    client.delete(deleted.name()).await.unwrap();
    emu.shutdown().await;

    let emu = Emulator::start(dir.path()).await.unwrap();
    let client = emu.client(PROJECT, LOCATION).unwrap();
    let next = client.create(&valid_spec()).await.unwrap();
    assert_ne!(next.name(), deleted.name());
    assert!(job_id(&next) > job_id(&deleted));
}

#[tokio::test]
async fn a_job_interrupted_by_a_crash_reruns_to_complete_output_without_duplicates() {
    let (dir, emu, client) = started().await;
    emu.knobs().set_job_duration(Some(Duration::from_secs(20)));
    let lines: Vec<String> = (0..200).map(prompt_line).collect();
    write_gcs(&emu, "gs://bkt/in.jsonl", &lines);
    let job = client
        .create(&spec("gs://bkt/in.jsonl", "gs://bkt/out"))
        .await
        .unwrap();
    let running = poll_until(&client, job.name(), "RUNNING with rows done", |j| {
        j.state() == JobState::Running && j.completion_stats().successful > 0
    })
    .await;
    assert!(running.completion_stats().successful < 200);
    let is_partial = |n: &str| n.ends_with(".partial");
    assert_eq!(
        files_under(dir.path(), &|n| n == ".predictions.jsonl.partial").len(),
        1,
        "a running job writes a partial file"
    );
    emu.abort();

    let emu = Emulator::builder(dir.path()).start().await.unwrap();
    emu.knobs().set_job_duration(None);
    let client = emu.client(PROJECT, LOCATION).unwrap();
    let done = client.wait(job.name(), &fast_wait()).await.unwrap();
    assert_eq!(done.state(), JobState::Succeeded);
    let stats = done.completion_stats();
    assert_eq!(
        (stats.successful, stats.failed, stats.incomplete),
        (200, 0, Some(0))
    );

    let rows = read_jsonl(&predictions_file(&emu, &done));
    assert_eq!(rows.len(), 200);
    let inputs: BTreeSet<String> = lines
        .iter()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["request"].to_string())
        .collect();
    let echoed: BTreeSet<String> = rows.iter().map(|r| r["request"].to_string()).collect();
    assert_eq!(echoed.len(), 200, "no row is written twice");
    assert_eq!(echoed, inputs);

    assert!(
        files_under(dir.path(), &is_partial).is_empty(),
        "{:?}",
        files_under(dir.path(), &is_partial)
    );
    // The interrupted run's output directory is gone; only the rerun's is left.
    let out_dirs: Vec<_> = std::fs::read_dir(emu.gcs_path("gs://bkt/out").unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(out_dirs.len(), 1, "{out_dirs:?}");
}

/// Claims are recorded before they are made, so a record may name a
/// directory its job never created — by now another job's output. Recovery
/// removes a claimed directory only when it carries this job's marker (or
/// is empty): another's output survives, this job's own is replaced.
#[tokio::test]
async fn recovery_removes_only_the_jobs_own_claim() {
    let (dir, emu, client) = started().await;
    write_gcs(&emu, "gs://bkt/in.jsonl", &[prompt_line(1)]);
    let first = client
        .create(&spec("gs://bkt/in.jsonl", "gs://bkt/out"))
        .await
        .unwrap();
    let done = client.wait(first.name(), &fast_wait()).await.unwrap();
    let own_dir = predictions_file(&emu, &done)
        .parent()
        .unwrap()
        .to_path_buf();
    let marker = std::fs::read_to_string(own_dir.join(".vertex-batch-claim")).unwrap();
    assert_eq!(marker, done.id(), "the claim says whose it is");
    emu.knobs().hold_queued(true);
    let held = client
        .create(&spec("gs://bkt/in.jsonl", "gs://bkt/other"))
        .await
        .unwrap();
    emu.shutdown().await;

    // Someone else's output where the held job's record says it claimed.
    let foreign = dir.path().join("gcs/bkt/other/prediction-model-foreign");
    std::fs::create_dir_all(&foreign).unwrap();
    std::fs::write(foreign.join("predictions.jsonl"), "{}\n").unwrap();
    let file = dir.path().join("jobs").join(format!("{}.json", held.id()));
    let mut record: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    record["job"]["state"] = serde_json::json!("JOB_STATE_RUNNING");
    record["output_claim"] = serde_json::json!("gcs/bkt/other/prediction-model-foreign");
    std::fs::write(&file, record.to_string()).unwrap();

    let emu = Emulator::builder(dir.path()).start().await.unwrap();
    let client = emu.client(PROJECT, LOCATION).unwrap();
    let rerun = client.wait(held.name(), &fast_wait()).await.unwrap();
    assert_eq!(rerun.state(), JobState::Succeeded);
    assert!(
        foreign.join("predictions.jsonl").exists(),
        "another's output survives"
    );
}

/// A data directory moved while a job ran (records hold paths relative to
/// it) resumes in its new place: the interrupted run's output is found and
/// removed there, leaving exactly one output directory.
#[tokio::test]
async fn a_moved_data_dir_resumes_a_job_without_duplicates() {
    let (dir, emu, client) = started().await;
    emu.knobs().set_job_duration(Some(Duration::from_secs(20)));
    let lines: Vec<String> = (0..100).map(prompt_line).collect();
    write_gcs(&emu, "gs://bkt/in.jsonl", &lines);
    let job = client
        .create(&spec("gs://bkt/in.jsonl", "gs://bkt/out"))
        .await
        .unwrap();
    poll_until(&client, job.name(), "RUNNING with rows done", |j| {
        j.state() == JobState::Running && j.completion_stats().successful > 0
    })
    .await;
    emu.abort();
    let record =
        std::fs::read_to_string(dir.path().join("jobs").join(format!("{}.json", job.id())))
            .unwrap();
    assert!(
        !record.contains(&dir.path().display().to_string()),
        "the record holds no absolute path: {record}"
    );

    let moved = temp();
    let new_dir = moved.path().join("moved");
    std::fs::rename(dir.path(), &new_dir).unwrap();
    let emu = Emulator::builder(&new_dir).start().await.unwrap();
    emu.knobs().set_job_duration(None);
    let client = emu.client(PROJECT, LOCATION).unwrap();
    let done = client.wait(job.name(), &fast_wait()).await.unwrap();
    assert_eq!(done.completion_stats().successful, 100);
    let out_dirs: Vec<_> = std::fs::read_dir(emu.gcs_path("gs://bkt/out").unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(out_dirs.len(), 1, "{out_dirs:?}");
    assert_eq!(read_jsonl(&predictions_file(&emu, &done)).len(), 100);
}

/// An unreadable record is quarantined (kept, logged) and its id is never
/// given to a new job; a record naming a path outside the data directory
/// never makes recovery touch that path.
#[tokio::test]
async fn unreadable_and_foreign_records_lose_nothing() {
    let (dir, emu, client) = started().await;
    write_gcs(&emu, "gs://bkt/in.jsonl", &[prompt_line(1)]);
    emu.knobs().hold_queued(true);
    let first = client
        .create(&spec("gs://bkt/in.jsonl", "gs://bkt/out"))
        .await
        .unwrap();
    let second = client
        .create(&spec("gs://bkt/in.jsonl", "gs://bkt/out"))
        .await
        .unwrap();
    emu.shutdown().await;

    // The newest record is garbage; the other claims a directory outside.
    let jobs = dir.path().join("jobs");
    std::fs::write(jobs.join(format!("{}.json", second.id())), b"\xff not json").unwrap();
    let outside = temp();
    std::fs::write(outside.path().join("precious.txt"), "keep me").unwrap();
    let first_file = jobs.join(format!("{}.json", first.id()));
    let mut record: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&first_file).unwrap()).unwrap();
    record["job"]["state"] = serde_json::json!("JOB_STATE_RUNNING");
    record["output_claim"] = serde_json::json!(outside.path());
    record["partial_output"] = serde_json::json!("../../etc/passwd");
    std::fs::write(&first_file, record.to_string()).unwrap();

    let emu = Emulator::builder(dir.path()).start().await.unwrap();
    let client = emu.client(PROJECT, LOCATION).unwrap();
    assert!(
        outside.path().join("precious.txt").exists(),
        "recovery stayed inside the data dir"
    );
    let q = dir
        .path()
        .join("quarantine")
        .join(format!("{}.json", second.id()));
    assert_eq!(
        std::fs::read(&q).unwrap(),
        b"\xff not json",
        "quarantined as it was"
    );
    write_gcs(&emu, "gs://bkt/in.jsonl", &[prompt_line(1)]);
    let third = client
        .create(&spec("gs://bkt/in.jsonl", "gs://bkt/out"))
        .await
        .unwrap();
    let (a, b): (u64, u64) = (second.id().parse().unwrap(), third.id().parse().unwrap());
    assert!(b > a, "id {b} must not reuse the unreadable record's {a}");
    drop(emu);
    // A later start still remembers the quarantined id.
    let emu = Emulator::builder(dir.path()).start().await.unwrap();
    let client = emu.client(PROJECT, LOCATION).unwrap();
    let fourth = client
        .create(&spec("gs://bkt/in.jsonl", "gs://bkt/out"))
        .await
        .unwrap();
    assert!(fourth.id().parse::<u64>().unwrap() > b);
}

// ---------------------------------------------------------------------------
// Knobs
// ---------------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn held_jobs_stay_queued_until_released_then_succeed() {
    let (_dir, emu, client) = in_memory().await;
    write_gcs(&emu, "gs://bkt/in.jsonl", &[prompt_line(1)]);
    emu.knobs().hold_queued(true);
    let job = client
        .create(&spec("gs://bkt/in.jsonl", "gs://bkt/out"))
        .await
        .unwrap();
    poll_until(&client, job.name(), "QUEUED", |j| {
        j.state() == JobState::Queued
    })
    .await;
    // Hours pass (on the paused clock): still QUEUED.
    for _ in 0..5 {
        tokio::time::advance(Duration::from_secs(3600)).await;
        assert_eq!(
            client.get(job.name()).await.unwrap().state(),
            JobState::Queued
        );
    }
    emu.knobs().hold_queued(false);
    let done = client.wait(job.name(), &fast_wait()).await.unwrap();
    assert_eq!(done.state(), JobState::Succeeded);
    assert_eq!(done.completion_stats().successful, 1);
}

#[tokio::test]
async fn a_job_held_past_the_queue_ttl_expires() {
    let (_dir, emu, client) = started().await;
    write_gcs(&emu, "gs://bkt/in.jsonl", &[prompt_line(1)]);
    emu.knobs().hold_queued(true);
    emu.knobs().set_queue_ttl(Duration::from_millis(200));
    let done = run_to_end(&client, &spec("gs://bkt/in.jsonl", "gs://bkt/out")).await;
    assert_eq!(done.state(), JobState::Expired);
    assert!(done.output_location().is_none());
    assert!(done.end_time().is_some());
}

#[tokio::test]
async fn fail_jobs_fails_every_job_with_the_given_message() {
    let (_dir, emu, client) = started().await;
    write_gcs(&emu, "gs://bkt/in.jsonl", &[prompt_line(1)]);
    emu.knobs().fail_jobs(Some("boom".into()));
    let job = client
        .create(&spec("gs://bkt/in.jsonl", "gs://bkt/out"))
        .await
        .unwrap();
    let err = client.wait(job.name(), &fast_wait()).await.unwrap_err();
    let Error::JobNotSucceeded(done) = err else {
        panic!("{err}")
    };
    assert_eq!(done.state(), JobState::Failed);
    assert_eq!(done.error().unwrap().message(), "boom");
}

#[tokio::test]
async fn a_lost_create_response_reports_unavailable_but_the_job_exists() {
    let (_dir, emu, client) = started().await;
    write_gcs(&emu, "gs://bkt/in.jsonl", &[prompt_line(1)]);
    emu.knobs().lose_create_responses(1);
    let err = client
        .create(&spec("gs://bkt/in.jsonl", "gs://bkt/out").display_name("lost"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(Code::Unavailable), "{err}");
    let jobs: Vec<Job> = client
        .list(&ListOptions::new())
        .try_collect()
        .await
        .unwrap();
    assert_eq!(jobs.len(), 1, "create is not retried: exactly one job");
    assert_eq!(jobs[0].display_name(), "lost");

    // Only one response was lost.
    let next = client
        .create(&spec("gs://bkt/in.jsonl", "gs://bkt/out"))
        .await
        .unwrap();
    assert_ne!(next.name(), jobs[0].name());
}

#[tokio::test]
async fn unavailable_fraction_fails_rpcs_until_reset() {
    let dir = temp();
    let emu = Emulator::start(dir.path()).await.unwrap();
    let client = emu
        .client(PROJECT, LOCATION)
        .unwrap()
        .with_retry_policy(RetryPolicy::none());
    let job = client.create(&valid_spec()).await.unwrap();

    emu.knobs().set_unavailable_fraction(1.0);
    let gets_before = emu
        .rpc_counts()
        .get("GetBatchPredictionJob")
        .copied()
        .unwrap_or(0);
    let err = client.get(job.name()).await.unwrap_err();
    assert_eq!(err.code(), Some(Code::Unavailable), "{err}");
    assert_eq!(
        emu.rpc_counts()["GetBatchPredictionJob"],
        gets_before + 1,
        "RetryPolicy::none() makes one attempt"
    );

    emu.knobs().set_unavailable_fraction(0.0);
    assert_eq!(client.get(job.name()).await.unwrap().name(), job.name());
}

#[tokio::test]
async fn a_job_over_the_request_limit_fails_naming_the_limit() {
    let (_dir, emu, client) = started().await;
    let lines: Vec<String> = (0..5).map(prompt_line).collect();
    write_gcs(&emu, "gs://bkt/in.jsonl", &lines);
    emu.knobs().set_max_requests_per_job(3);
    let done = run_to_end(&client, &spec("gs://bkt/in.jsonl", "gs://bkt/out")).await;
    assert_eq!(done.state(), JobState::Failed);
    let message = done.error().unwrap().message().to_owned();
    assert!(
        message.contains("at most 3") && message.contains('5'),
        "{message}"
    );
    assert!(done.output_location().is_none());
}

#[tokio::test(start_paused = true)]
async fn row_delay_paces_progress_visibly() {
    let (_dir, emu, client) = in_memory().await;
    let lines: Vec<String> = (0..20).map(prompt_line).collect();
    write_gcs(&emu, "gs://bkt/in.jsonl", &lines);
    emu.knobs().set_row_delay(Duration::from_millis(50));
    let job = client
        .create(&spec("gs://bkt/in.jsonl", "gs://bkt/out"))
        .await
        .unwrap();

    let mut partial = None;
    for _ in 0..200 {
        let j = client.get(job.name()).await.unwrap();
        let done = j.completion_stats().successful;
        if j.state() == JobState::Running && done > 0 && done < 20 {
            partial = Some(done);
            break;
        }
        if j.state().is_terminal() {
            break;
        }
        // 50 ms of the paused clock: one row's worth.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        partial.is_some(),
        "never saw a RUNNING job part-way through"
    );

    let done = client.wait(job.name(), &fast_wait()).await.unwrap();
    assert_eq!(done.completion_stats().successful, 20);
    let ran = done
        .end_time()
        .unwrap()
        .duration_since(done.start_time().unwrap())
        .unwrap();
    assert!(
        ran >= Duration::from_millis(900),
        "20 rows at 50 ms took {ran:?}"
    );
}

/// An output claim never published is released when the job fails: the
/// claimed directory does not linger as an orphan.
#[tokio::test(start_paused = true)]
async fn a_failed_jobs_unpublished_claim_is_released() {
    let (dir, emu, client) = in_memory().await;
    write_gcs(
        &emu,
        "gs://bkt/in.jsonl",
        &(0..20).map(prompt_line).collect::<Vec<_>>(),
    );
    emu.knobs().set_job_duration(Some(Duration::from_secs(60)));
    // Nothing exported while it runs: nothing of it is ever published.
    emu.knobs().set_export_every_rows(0);
    emu.knobs().set_export_every(Duration::ZERO);
    let job = client
        .create(&spec("gs://bkt/in.jsonl", "gs://bkt/out"))
        .await
        .unwrap();
    poll_until(&client, job.name(), "RUNNING", |j| {
        j.state() == JobState::Running
    })
    .await;
    // Make publishing fail: a non-empty directory where predictions.jsonl
    // is to be renamed.
    let out = dir.path().join("gcs/bkt/out");
    let claimed: Vec<_> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(claimed.len(), 1, "{claimed:?}");
    std::fs::create_dir_all(claimed[0].join("predictions.jsonl/blocker")).unwrap();
    let done = client
        .wait(
            job.name(),
            &fast_wait().timeout(Duration::from_secs(3600)).any_end(),
        )
        .await
        .unwrap();
    assert_eq!(done.state(), JobState::Failed, "{done:?}");
    assert!(
        done.error().unwrap().message().contains("publishing"),
        "{:?}",
        done.error()
    );
    emu.shutdown().await;
    let left: Vec<_> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert!(left.is_empty(), "the claim was released: {left:?}");
    assert!(
        done.output_location().is_none(),
        "output_info names no output"
    );
}

// ---------------------------------------------------------------------------
// CountTokens
// ---------------------------------------------------------------------------

/// A count over gRPC equals the `promptTokenCount` the emulator later
/// writes for the same request, and the offline bound is never below it.
#[tokio::test]
async fn count_tokens_equals_the_usage_the_job_reports() {
    let (_dir, emu, client) = started().await;
    let requests = [
        serde_json::json!({"contents": [{"role": "user", "parts": [{"text": "Give me a recipe for banana bread."}]}]}),
        serde_json::json!({
            "contents": [
                {"role": "user", "parts": [{"text": "  one\ttwo  "}, {"text": "three"}]},
                {"role": "model", "parts": [{"text": "four five"}]},
                {"role": "user", "parts": [{"text": "six\nseven éight"}]}
            ],
            "systemInstruction": {"parts": [{"text": "Be brief."}]},
            "generationConfig": {"maxOutputTokens": 5}
        }),
        serde_json::json!({"contents": [{"parts": [{"text": "a [blocked] prompt"}]}]}),
    ];
    let mut counts = Vec::new();
    for r in &requests {
        counts.push(
            client
                .count_tokens("gemini-2.0-flash-001", r)
                .await
                .unwrap(),
        );
    }
    assert_eq!(counts[0].total_tokens, 7);
    assert_eq!(counts[0].total_billable_characters, 28);
    assert_eq!(counts[1].total_tokens, 8);

    let lines: Vec<String> = requests
        .iter()
        .enumerate()
        .map(|(i, r)| serde_json::json!({"key": i.to_string(), "request": r}).to_string())
        .collect();
    write_gcs(&emu, "gs://bkt/count.jsonl", &lines);
    let job = run_to_end(&client, &spec("gs://bkt/count.jsonl", "gs://bkt/count-out")).await;
    assert_eq!(job.state(), JobState::Succeeded);
    let mut rows = read_jsonl(&predictions_file(&emu, &job));
    rows.sort_by_key(|r| r["key"].as_str().unwrap().parse::<usize>().unwrap());
    assert_eq!(rows.len(), requests.len());
    for ((row, count), request) in rows.iter().zip(&counts).zip(&requests) {
        let usage = row["response"]["usageMetadata"]["promptTokenCount"].as_u64();
        assert_eq!(usage, Some(count.total_tokens), "{row}");
        assert!(vertex_batch::tokens::offline_upper_bound(request) >= count.total_tokens);
    }

    let total = client
        .count_tokens_many("gemini-2.0-flash-001", requests.clone(), 2)
        .await
        .unwrap();
    assert_eq!(
        total.total_tokens,
        counts.iter().map(|c| c.total_tokens).sum::<u64>()
    );
    assert_eq!(emu.rpc_counts().get("CountTokens").copied(), Some(6));
}

/// The emulator refuses what the service refuses, naming the field, and
/// checks the routing header against `endpoint` (either encoding).
#[tokio::test]
async fn count_tokens_rejects_invalid_requests_and_a_wrong_routing_header() {
    use vertex_batch::proto::aiplatform::llm_utility_service_client::LlmUtilityServiceClient;
    let (_dir, emu, client) = started().await;
    let endpoint = format!("{PARENT}/publishers/google/models/gemini-2.0-flash-001");
    let text = |t: &str| pb::Content {
        role: "user".into(),
        parts: vec![pb::Part {
            data: Some(pb::part::Data::Text(t.into())),
            ..Default::default()
        }],
    };
    let request = |endpoint: &str, contents: Vec<pb::Content>| pb::CountTokensRequest {
        endpoint: endpoint.into(),
        model: endpoint.into(),
        contents,
        ..Default::default()
    };
    let mut stub = LlmUtilityServiceClient::connect(format!("http://{}", emu.addr()))
        .await
        .unwrap();
    let cases = [
        (request(&endpoint, vec![]), "contents"),
        (request("", vec![text("hi")]), "endpoint"),
        (
            request(
                "projects/p1/locations/us-central1/models/42",
                vec![text("hi")],
            ),
            "endpoint",
        ),
        (
            request(
                &endpoint,
                vec![pb::Content {
                    role: "user".into(),
                    parts: vec![],
                }],
            ),
            "contents.parts",
        ),
    ];
    for (req, field) in cases {
        let status = stub.count_tokens(req.clone()).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{req:?}: {status:?}");
        let err = ServiceError::from_status(&status);
        let fields: Vec<&str> = err
            .field_violations()
            .iter()
            .map(|v| v.field.as_str())
            .collect();
        assert!(fields.contains(&field), "{req:?}: {fields:?}");
    }

    let with_header = |header: &'static str| {
        let mut r = tonic::Request::new(request(&endpoint, vec![text("one two three")]));
        r.metadata_mut()
            .insert("x-goog-request-params", MetadataValue::from_static(header));
        r
    };
    let status = stub
        .count_tokens(with_header(
            "endpoint=projects%2Fother%2Flocations%2Fus-central1%2Fpublishers%2Fgoogle%2Fmodels%2Fgemini-2.0-flash-001",
        ))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    for header in [
        "endpoint=projects/p1/locations/us-central1/publishers/google/models/gemini-2.0-flash-001",
        "endpoint=projects%2Fp1%2Flocations%2Fus-central1%2Fpublishers%2Fgoogle%2Fmodels%2Fgemini-2.0-flash-001",
    ] {
        let n = stub.count_tokens(with_header(header)).await.unwrap().into_inner();
        assert_eq!(n.total_tokens, 3, "{header}");
    }

    // The client refuses an invalid request itself, before the network.
    let before = emu.rpc_counts().get("CountTokens").copied();
    let err = client
        .count_tokens(
            "gemini-2.0-flash-001",
            &serde_json::json!({"contents": "nope"}),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::Validation(v) if v.field() == "request"),
        "{err}"
    );
    assert_eq!(emu.rpc_counts().get("CountTokens").copied(), before);

    // The emulator's fault injection applies to CountTokens too.
    emu.knobs().set_unavailable_fraction(1.0);
    let once = client.with_retry_policy(RetryPolicy::none());
    let err = once
        .count_tokens(
            "gemini-2.0-flash-001",
            &serde_json::json!({"contents": [{"parts": [{"text": "x"}]}]}),
        )
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(Code::Unavailable), "{err}");
}
