//! The client's job lifecycle end to end against the emulator: waiting
//! through faults and restarts, safe submit, every terminal state, cancel
//! and delete, deadlines, cancel-safety, watch and watch_many, polling
//! economy and retries (what the crate logs: `tests/tracing`).
//!
//! Long emulated durations run over the in-memory transport with a paused
//! Tokio clock, so hours of job time pass at once; restarts and real
//! connections use TCP.

use std::{
    collections::BTreeMap,
    sync::Arc,
    time::{Duration, SystemTime},
};

use crate::common::*;
use futures::{StreamExt, TryStreamExt};
use tokio::time::Instant;
use tonic::Code;
use vertex_batch::{
    client::WatchManyOptions, emulator::Emulator, emulator::KnobValues, policy::PollPolicy,
    policy::RetryPolicy, spec::REQUEST_KEY_LABEL, Client, Error, Job, JobName, JobSpec, JobState,
    ListOptions, WaitOptions,
};

const PROJECT: &str = "p1";
const LOCATION: &str = "us-central1";
const INPUT: &str = "gs://bkt/in.jsonl";

fn spec(input: &str) -> JobSpec {
    JobSpec::new("gemini-2.0-flash-001")
        .display_name("lifecycle-test")
        .input(input)
        .output("gs://bkt/out")
}

fn lines(n: usize) -> Vec<String> {
    (0..n).map(prompt_line).collect()
}

/// An emulator (on a fresh directory) and an in-memory client to it; use
/// with a paused clock.
async fn in_memory() -> (tempfile::TempDir, Emulator, Client) {
    let dir = temp();
    let emu = Emulator::start(dir.path()).await.unwrap();
    let client = emu.in_memory_client(PROJECT, LOCATION).unwrap();
    (dir, emu, client)
}

fn gets(emu: &Emulator) -> u64 {
    emu.rpc_counts()
        .get("GetBatchPredictionJob")
        .copied()
        .unwrap_or(0)
}

async fn all_jobs(client: &Client) -> Vec<Job> {
    client
        .list(&ListOptions::new())
        .try_collect()
        .await
        .unwrap()
}

fn not_succeeded(result: vertex_batch::Result<Job>, what: &str) -> Job {
    match result {
        Err(Error::JobNotSucceeded(job)) => *job,
        Ok(job) => panic!("{what}: wait returned Ok for a {} job", job.state()),
        Err(e) => panic!("{what}: expected JobNotSucceeded, got {e:?}"),
    }
}

// ---------------------------------------------------------------------------
// Waiting through faults and a restart
// ---------------------------------------------------------------------------

#[tokio::test]
async fn wait_survives_unavailable_rpcs_and_an_emulator_restart_mid_job() {
    let dir = temp();
    let emu = Emulator::start(dir.path()).await.unwrap();
    // Clients talk to a forwarder, so the restarted emulator can take any
    // free port (no port is bound twice).
    let front = Forwarder::start(emu.addr()).await;
    let input = lines(200);
    write_gcs(&emu, INPUT, &input);
    emu.knobs().set_job_duration(Some(Duration::from_secs(2)));
    emu.knobs().seed(7);
    emu.knobs().set_unavailable_fraction(0.3);

    let fast_retry = RetryPolicy::default()
        .with_initial_backoff(Duration::from_millis(10))
        .with_max_backoff(Duration::from_millis(100));
    let client = Client::builder()
        .ignore_env()
        .project(PROJECT)
        .location(LOCATION)
        .emulator_host(front.addr.to_string())
        .retry_policy(fast_retry)
        .build()
        .unwrap();
    // Create is never retried blindly; submit is safe under the faults.
    let job = client.submit(&spec(INPUT)).await.unwrap();
    let name = job.name().to_owned();

    let waiter = {
        let client = client.clone();
        let name = name.clone();
        tokio::spawn(async move {
            let opts = WaitOptions::new()
                .policy(PollPolicy::default().max_interval(Duration::from_millis(200)));
            client.wait(&name, &opts).await
        })
    };

    let running = poll_until(&client, &name, "RUNNING", |j| {
        j.state() == JobState::Running
    })
    .await;
    assert!(running.completion_stats().done() < 200, "{running:?}");
    front.point_to(None);
    emu.shutdown().await;
    assert!(!waiter.is_finished(), "the wait ended before the restart");

    let emu = Emulator::builder(dir.path())
        .knobs(KnobValues {
            unavailable_fraction: 0.3,
            ..KnobValues::default()
        })
        .start()
        .await
        .unwrap();
    emu.knobs().seed(11);
    assert_eq!(emu.knobs().values().unavailable_fraction, 0.3);
    front.point_to(Some(emu.addr()));

    let done = tokio::time::timeout(Duration::from_secs(10), waiter)
        .await
        .expect("the wait did not end within 10 s of the restart")
        .unwrap()
        .unwrap_or_else(|e| panic!("wait failed: {e:?}"));
    assert_eq!(done.name(), name);
    assert_eq!(done.state(), JobState::Succeeded);
    let stats = done.completion_stats();
    assert_eq!(
        (stats.successful, stats.failed, stats.incomplete),
        (200, 0, Some(0))
    );
    assert!(
        gets(&emu) >= 1,
        "the wait polled the restarted emulator: {:?}",
        emu.rpc_counts()
    );
    let rows = read_jsonl(&predictions_file(&emu, &done));
    assert_eq!(rows.len(), 200);
    assert!(rows.iter().all(|r| r["status"] == ""), "{rows:?}");
}

// ---------------------------------------------------------------------------
// Safe submit
// ---------------------------------------------------------------------------

#[tokio::test]
async fn submit_after_a_lost_create_response_finds_the_job_instead_of_duplicating_it() {
    let dir = temp();
    let emu = Emulator::start(dir.path()).await.unwrap();
    write_gcs(&emu, INPUT, &[prompt_line(1)]);
    let client = emu.client(PROJECT, LOCATION).unwrap();

    emu.knobs().lose_create_responses(1);
    let job = client.submit(&spec(INPUT)).await.unwrap();
    let jobs = all_jobs(&client).await;
    assert_eq!(jobs.len(), 1, "{jobs:?}");
    assert_eq!(jobs[0].name(), job.name());
    let key = job
        .labels()
        .get(REQUEST_KEY_LABEL)
        .expect("the job carries the request key label")
        .clone();
    assert!(!key.is_empty());
    assert_eq!(jobs[0].labels().get(REQUEST_KEY_LABEL), Some(&key));
    assert_eq!(emu.rpc_counts()["CreateBatchPredictionJob"], 1);
    assert_eq!(
        client
            .find_by_request_key(&key)
            .await
            .unwrap()
            .unwrap()
            .name(),
        job.name()
    );
}

#[tokio::test]
async fn two_lost_create_responses_in_a_row_still_make_one_job_per_submit() {
    let dir = temp();
    let emu = Emulator::start(dir.path()).await.unwrap();
    write_gcs(&emu, INPUT, &[prompt_line(1)]);
    let client = emu.client(PROJECT, LOCATION).unwrap();

    emu.knobs().lose_create_responses(2);
    let first = client.submit(&spec(INPUT)).await.unwrap();
    let second = client.submit(&spec(INPUT)).await.unwrap();
    assert_eq!(emu.knobs().values().lost_create_responses, 0);
    assert_ne!(first.name(), second.name());
    assert_ne!(
        first.labels().get(REQUEST_KEY_LABEL),
        second.labels().get(REQUEST_KEY_LABEL)
    );
    let jobs = all_jobs(&client).await;
    assert_eq!(jobs.len(), 2, "one job per submit: {jobs:?}");
    assert_eq!(
        emu.rpc_counts()["CreateBatchPredictionJob"],
        2,
        "the job was found, so the create was not sent again"
    );
}

#[tokio::test]
async fn plain_create_under_a_lost_response_reports_unavailable_though_the_job_exists() {
    let dir = temp();
    let emu = Emulator::start(dir.path()).await.unwrap();
    write_gcs(&emu, INPUT, &[prompt_line(1)]);
    let client = emu.client(PROJECT, LOCATION).unwrap();

    emu.knobs().lose_create_responses(1);
    let err = client.create(&spec(INPUT)).await.unwrap_err();
    assert_eq!(err.code(), Some(Code::Unavailable), "{err}");
    assert_eq!(all_jobs(&client).await.len(), 1);
    assert_eq!(emu.rpc_counts()["CreateBatchPredictionJob"], 1);
}

#[tokio::test]
async fn submit_with_a_caller_key_under_a_lost_response_returns_the_keyed_job() {
    let dir = temp();
    let emu = Emulator::start(dir.path()).await.unwrap();
    write_gcs(&emu, INPUT, &[prompt_line(1)]);
    let client = emu.client(PROJECT, LOCATION).unwrap();

    emu.knobs().lose_create_responses(1);
    let job = client
        .submit(&spec(INPUT).request_key("same-key"))
        .await
        .unwrap();
    assert_eq!(
        job.labels().get(REQUEST_KEY_LABEL).map(String::as_str),
        Some("same-key")
    );
    let jobs = all_jobs(&client).await;
    assert_eq!(jobs.len(), 1, "{jobs:?}");
    assert_eq!(jobs[0].name(), job.name());
}

/// Reusing a caller-given request key is safe across process restarts: the
/// second submit finds the first job instead of creating another.
#[tokio::test]
async fn a_reused_request_key_returns_the_existing_job() {
    let dir = temp();
    let emu = Emulator::start(dir.path()).await.unwrap();
    write_gcs(&emu, INPUT, &[prompt_line(1)]);
    let client = emu.client(PROJECT, LOCATION).unwrap();

    // The first process: the create commits but its answer is lost.
    emu.knobs().lose_create_responses(1);
    let first = client
        .submit(&spec(INPUT).request_key("same-key"))
        .await
        .unwrap();
    // A restarted process submits the same work under the same key.
    let again = client
        .submit(&spec(INPUT).request_key("same-key"))
        .await
        .unwrap();
    assert_eq!(again.name(), first.name());
    assert_eq!(all_jobs(&client).await.len(), 1);

    // A key the service would refuse fails as a label, before any call.
    let before = emu.rpc_counts().values().sum::<u64>();
    let err = client
        .submit(&spec(INPUT).request_key("Nightly Run"))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, vertex_batch::Error::Validation(v) if v.field() == "labels"),
        "{err:?}"
    );
    assert_eq!(emu.rpc_counts().values().sum::<u64>(), before);
}

// ---------------------------------------------------------------------------
// Terminal states
// ---------------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn wait_is_ok_only_for_succeeded_and_wait_terminal_returns_every_end() {
    let (_dir, emu, client) = in_memory().await;
    write_gcs(&emu, INPUT, &lines(3));
    let bad = "gs://bkt/bad.jsonl";
    write_gcs(
        &emu,
        bad,
        &[prompt_line(0), "not json".to_owned(), prompt_line(2)],
    );
    let mut ended: Vec<(String, JobState)> = Vec::new();

    // SUCCEEDED
    let job = client.create(&spec(INPUT)).await.unwrap();
    let done = client.wait(job.name(), &WaitOptions::new()).await.unwrap();
    assert_eq!(done.state(), JobState::Succeeded);
    assert_eq!(done.completion_stats().successful, 3);
    ended.push((job.name().to_owned(), JobState::Succeeded));

    // FAILED
    emu.knobs().fail_jobs(Some("boom".into()));
    let job = client.create(&spec(INPUT)).await.unwrap();
    let done = not_succeeded(client.wait(job.name(), &WaitOptions::new()).await, "FAILED");
    emu.knobs().fail_jobs(None);
    assert_eq!(done.name(), job.name());
    assert_eq!(done.state(), JobState::Failed);
    assert_eq!(done.error().unwrap().message(), "boom");
    ended.push((job.name().to_owned(), JobState::Failed));

    // CANCELLED
    emu.knobs().set_job_duration(Some(Duration::from_secs(600)));
    write_gcs(&emu, "gs://bkt/long.jsonl", &lines(100));
    let job = client.create(&spec("gs://bkt/long.jsonl")).await.unwrap();
    poll_until(&client, job.name(), "RUNNING", |j| {
        j.state() == JobState::Running
    })
    .await;
    client.cancel(job.name()).await.unwrap();
    let done = not_succeeded(
        client.wait(job.name(), &WaitOptions::new()).await,
        "CANCELLED",
    );
    emu.knobs().set_job_duration(None);
    assert_eq!(done.state(), JobState::Cancelled);
    assert!(done.completion_stats().incomplete.is_some_and(|n| n > 0));
    ended.push((job.name().to_owned(), JobState::Cancelled));

    // EXPIRED
    emu.knobs().hold_queued(true);
    emu.knobs().set_queue_ttl(Duration::from_secs(3600));
    let job = client.create(&spec(INPUT)).await.unwrap();
    let t0 = Instant::now();
    let done = not_succeeded(
        client.wait(job.name(), &WaitOptions::new()).await,
        "EXPIRED",
    );
    assert!(
        t0.elapsed() >= Duration::from_secs(3600),
        "{:?}",
        t0.elapsed()
    );
    emu.knobs().hold_queued(false);
    assert_eq!(done.state(), JobState::Expired);
    ended.push((job.name().to_owned(), JobState::Expired));

    // PARTIALLY_SUCCEEDED
    let job = client.create(&spec(bad)).await.unwrap();
    let done = not_succeeded(
        client.wait(job.name(), &WaitOptions::new()).await,
        "PARTIALLY_SUCCEEDED",
    );
    assert_eq!(done.state(), JobState::PartiallySucceeded);
    let stats = done.completion_stats();
    assert_eq!((stats.successful, stats.failed), (2, 1));
    ended.push((job.name().to_owned(), JobState::PartiallySucceeded));

    for (name, state) in &ended {
        let job = client
            .wait(name, &WaitOptions::new().any_end())
            .await
            .unwrap();
        assert_eq!(job.state(), *state, "{name}");
        assert_eq!(job.name(), name);
    }
}

// ---------------------------------------------------------------------------
// One way to name a job
// ---------------------------------------------------------------------------

/// Every method that takes a job takes a full name, a bare id, a `String`,
/// a `JobName`, a `&JobName` and a `&Job` alike, and a job of another
/// location is refused before any call, whichever form names it.
#[tokio::test(start_paused = true)]
async fn every_job_method_takes_every_form_of_name() {
    let (_dir, emu, client) = in_memory().await;
    write_gcs(&emu, INPUT, &lines(20));
    emu.knobs().set_job_duration(Some(Duration::from_secs(60)));
    let job = client.create(&spec(INPUT)).await.unwrap();
    let name: JobName = job.name().parse().unwrap();
    assert_eq!(client.resolve_job(job.id()).unwrap(), name);
    assert_eq!(client.resolve_job(&job).unwrap(), name);

    let by_str = client.get(job.name()).await.unwrap();
    let by_id = client.get(job.id()).await.unwrap();
    let by_string = client.get(job.name().to_owned()).await.unwrap();
    let by_ref = client.get(&name).await.unwrap();
    let by_job = client.get(&job).await.unwrap();
    let by_name = client.get(name.clone()).await.unwrap();
    for got in [&by_str, &by_id, &by_string, &by_ref, &by_job, &by_name] {
        assert_eq!(got.name(), job.name());
    }

    let updates: Vec<_> = client
        .watch_many([&job], &WatchManyOptions::new())
        .collect()
        .await;
    assert!(updates.iter().all(|(n, r)| n == job.name() && r.is_ok()));
    let watched: Vec<Job> = client
        .watch(&name, &WaitOptions::new())
        .try_collect()
        .await
        .unwrap();
    assert_eq!(watched.last().unwrap().state(), JobState::Succeeded);
    let done = client
        .wait(name.clone(), &WaitOptions::new())
        .await
        .unwrap();
    assert_eq!(done.state(), JobState::Succeeded);

    let other: JobName = "projects/p1/locations/europe-west4/batchPredictionJobs/1"
        .parse()
        .unwrap();
    let before = emu.rpc_counts();
    for err in [
        client.get(&other).await.unwrap_err(),
        client.cancel(other.clone()).await.unwrap_err(),
        client.delete(other.to_string()).await.unwrap_err(),
        client.wait(&other, &WaitOptions::new()).await.unwrap_err(),
    ] {
        assert!(
            matches!(&err, Error::Validation(v) if v.field() == "name"),
            "{err:?}"
        );
    }
    assert_eq!(emu.rpc_counts(), before, "nothing was sent");

    client.delete(&done).await.unwrap();
    assert_eq!(
        client.get(&job).await.unwrap_err().code(),
        Some(Code::NotFound)
    );
}

// ---------------------------------------------------------------------------
// Cancel and delete
// ---------------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn cancel_then_wait_is_cancelled_and_only_ended_jobs_can_be_deleted() {
    let (_dir, emu, client) = in_memory().await;
    write_gcs(&emu, INPUT, &lines(100));
    emu.knobs().set_job_duration(Some(Duration::from_secs(600)));
    let job = client.create(&spec(INPUT)).await.unwrap();
    poll_until(&client, job.name(), "RUNNING", |j| {
        j.state() == JobState::Running
    })
    .await;

    let err = client.delete(job.name()).await.unwrap_err();
    assert_eq!(err.code(), Some(Code::FailedPrecondition), "{err}");
    assert_eq!(
        client.get(job.name()).await.unwrap().state(),
        JobState::Running
    );

    client.cancel(job.name()).await.unwrap();
    let done = client
        .wait(job.name(), &WaitOptions::new().any_end())
        .await
        .unwrap();
    assert_eq!(done.state(), JobState::Cancelled);
    let err = client
        .wait(job.name(), &WaitOptions::new())
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::JobNotSucceeded(j) if j.state() == JobState::Cancelled),
        "{err:?}"
    );

    client.delete(job.name()).await.unwrap();
    let err = client.get(job.name()).await.unwrap_err();
    assert_eq!(err.code(), Some(Code::NotFound), "{err}");
}

// ---------------------------------------------------------------------------
// Deadlines and cancel-safety
// ---------------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn a_wait_deadline_gives_timeout_not_a_job_failure() {
    let (_dir, emu, client) = in_memory().await;
    write_gcs(&emu, INPUT, &[prompt_line(1)]);
    emu.knobs().hold_queued(true);
    let job = client.create(&spec(INPUT)).await.unwrap();

    let t0 = Instant::now();
    let err = client
        .wait(
            job.name(),
            &WaitOptions::new().timeout(Duration::from_secs(60)),
        )
        .await
        .unwrap_err();
    let waited = t0.elapsed();
    match &err {
        Error::Timeout { after, during, .. } => {
            assert!(
                *after >= Duration::from_secs(60) && *after < Duration::from_secs(61),
                "{after:?}"
            );
            assert!(during.contains(job.name()), "{during}");
        }
        other => panic!("expected Error::Timeout, got {other:?}"),
    }
    assert!(!matches!(err, Error::JobNotSucceeded(_)));
    assert_eq!(err.code(), Some(Code::DeadlineExceeded));
    assert!(
        waited >= Duration::from_secs(60) && waited < Duration::from_secs(61),
        "{waited:?}"
    );
    // The job itself is untouched.
    assert_eq!(
        client.get(job.name()).await.unwrap().state(),
        JobState::Queued
    );
}

#[tokio::test(start_paused = true)]
async fn a_dropped_wait_stops_polling() {
    let (_dir, emu, client) = in_memory().await;
    write_gcs(&emu, INPUT, &[prompt_line(1)]);
    emu.knobs().hold_queued(true);
    let job = client.create(&spec(INPUT)).await.unwrap();

    let outcome = tokio::time::timeout(
        Duration::from_secs(30),
        client.wait(job.name(), &WaitOptions::new()),
    )
    .await;
    assert!(outcome.is_err(), "the held job cannot end: {outcome:?}");
    let polled = gets(&emu);
    assert!(
        polled >= 2,
        "the wait polled before it was dropped: {polled}"
    );

    tokio::time::sleep(Duration::from_secs(600)).await;
    assert_eq!(gets(&emu), polled, "nothing kept polling after the drop");
}

// ---------------------------------------------------------------------------
// watch and watch_many
// ---------------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn watch_yields_distinct_monotonic_snapshots_and_one_terminal_end() {
    let (_dir, emu, client) = in_memory().await;
    write_gcs(&emu, INPUT, &lines(100));
    emu.knobs().set_job_duration(Some(Duration::from_secs(600)));
    let job = client.create(&spec(INPUT)).await.unwrap();

    let opts =
        WaitOptions::new().policy(PollPolicy::default().max_interval(Duration::from_secs(30)));
    let snapshots: Vec<Job> = client.watch(job.name(), &opts).try_collect().await.unwrap();

    assert!(!snapshots.is_empty());
    assert!(
        !snapshots[0].state().is_terminal(),
        "the first snapshot comes at once: {}",
        snapshots[0].state()
    );
    for pair in snapshots.windows(2) {
        let (a, b) = (&pair[0], &pair[1]);
        assert!(
            b.completion_stats().done() >= a.completion_stats().done(),
            "{:?} then {:?}",
            a.completion_stats(),
            b.completion_stats()
        );
        assert_ne!(
            (a.state(), a.completion_stats()),
            (b.state(), b.completion_stats()),
            "consecutive snapshots differ"
        );
    }
    let terminal: Vec<&Job> = snapshots
        .iter()
        .filter(|j| j.state().is_terminal())
        .collect();
    assert_eq!(terminal.len(), 1, "exactly one terminal snapshot");
    let last = snapshots.last().unwrap();
    assert_eq!(last.state(), JobState::Succeeded);
    assert_eq!(last.completion_stats().successful, 100);
    let running = snapshots
        .iter()
        .filter(|j| j.state() == JobState::Running)
        .count();
    assert!(
        running >= 5,
        "progress shows at least every 30 s of a 600 s job: {running} RUNNING snapshots"
    );
}

/// Twenty paced jobs and an unknown one under a budget of 2 Get calls a
/// second. (This once hung: a token shortfall of 1e-16 became a zero wait.)
#[tokio::test(start_paused = true)]
async fn watch_many_ends_every_job_within_the_get_budget_and_reports_unknown_jobs() {
    let (_dir, emu, client) = in_memory().await;
    write_gcs(&emu, INPUT, &lines(20));
    emu.knobs().set_job_duration(Some(Duration::from_secs(60)));
    let mut names = Vec::new();
    for _ in 0..20 {
        names.push(client.create(&spec(INPUT)).await.unwrap().name().to_owned());
    }
    let unknown = format!("{}/batchPredictionJobs/424242", client.parent());
    let mut watched = names.clone();
    watched.insert(7, unknown.clone());

    let gets_before = gets(&emu);
    let t0 = Instant::now();
    let updates: Vec<(String, vertex_batch::Result<Job>)> = client
        .watch_many(&watched, &WatchManyOptions::new().gets_per_second(2.0))
        .collect()
        .await;
    let elapsed = t0.elapsed().as_secs_f64();
    let calls = gets(&emu) - gets_before;

    check_watch_many_updates(updates, &names, &unknown);
    assert!(calls >= 21, "every job was polled: {calls}");
    let budget = 2.0 * elapsed + 2.0;
    assert!(
        calls as f64 <= budget + 1e-9,
        "{calls} Get calls in {elapsed:.1} s exceed 2/s plus a burst of 2 ({budget:.1})"
    );
}

/// The unknown-job half of the test above, with a budget so large the
/// bucket never runs dry (which avoids the bug).
#[tokio::test(start_paused = true)]
async fn watch_many_reports_an_unknown_job_as_not_found_while_the_others_finish() {
    let (_dir, emu, client) = in_memory().await;
    write_gcs(&emu, INPUT, &lines(20));
    emu.knobs().set_job_duration(Some(Duration::from_secs(60)));
    let mut names = Vec::new();
    for _ in 0..3 {
        names.push(client.create(&spec(INPUT)).await.unwrap().name().to_owned());
    }
    let unknown = format!("{}/batchPredictionJobs/424242", client.parent());
    let mut watched = names.clone();
    watched.insert(1, unknown.clone());

    let updates: Vec<(String, vertex_batch::Result<Job>)> = client
        .watch_many(&watched, &WatchManyOptions::new().gets_per_second(1000.0))
        .collect()
        .await;
    check_watch_many_updates(updates, &names, &unknown);
}

/// Every job in `names` ends SUCCEEDED with exactly one terminal update, its
/// last; `unknown` yields exactly one NOT_FOUND error; nothing else comes.
fn check_watch_many_updates(
    updates: Vec<(String, vertex_batch::Result<Job>)>,
    names: &[String],
    unknown: &str,
) {
    let mut by_job: BTreeMap<String, Vec<Job>> = BTreeMap::new();
    let mut unknown_errors = Vec::new();
    for (name, result) in updates {
        match result {
            Ok(job) => {
                assert_eq!(job.name(), name);
                by_job.entry(name).or_default().push(job);
            }
            Err(e) => {
                assert_eq!(name, unknown, "only the unknown job fails: {e}");
                unknown_errors.push(e);
            }
        }
    }
    assert_eq!(unknown_errors.len(), 1, "{unknown_errors:?}");
    assert_eq!(unknown_errors[0].code(), Some(Code::NotFound));
    assert_eq!(by_job.len(), names.len());
    for name in names {
        let seen = &by_job[name];
        let last = seen.last().unwrap();
        assert_eq!(last.state(), JobState::Succeeded, "{name}");
        assert_eq!(
            seen.iter().filter(|j| j.state().is_terminal()).count(),
            1,
            "{name}: one terminal update, the last"
        );
    }
}

// ---------------------------------------------------------------------------
// Polling economy
// ---------------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn an_hour_long_job_is_waited_with_few_gets_and_seen_soon_after_it_ends() {
    let (_dir, emu, client) = in_memory().await;
    write_gcs(&emu, INPUT, &lines(1000));
    emu.knobs()
        .set_job_duration(Some(Duration::from_secs(3600)));
    let job = client.create(&spec(INPUT)).await.unwrap();
    let created = Instant::now();
    let created_at = job.create_time().unwrap();
    let before = gets(&emu);

    let done = client.wait(job.name(), &WaitOptions::new()).await.unwrap();
    let returned_at: SystemTime = created_at + created.elapsed();
    let calls = gets(&emu) - before;
    let end = done.end_time().unwrap();
    let lag = returned_at
        .duration_since(end)
        .expect("the wait returned after the job ended");
    let ran = end.duration_since(done.start_time().unwrap()).unwrap();
    eprintln!(
        "1-hour job: {calls} GetBatchPredictionJob calls, end seen {lag:?} late (ran {ran:?})"
    );

    assert_eq!(done.completion_stats().successful, 1000);
    assert!(
        ran >= Duration::from_secs(3500),
        "the job was paced: {ran:?}"
    );
    assert!(calls <= 30, "{calls} Get calls for a 1-hour job");
    assert!(
        lag <= Duration::from_secs(30),
        "the end was seen {lag:?} late"
    );
}

// ---------------------------------------------------------------------------
// Retries
// ---------------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn not_found_is_never_retried_but_unavailable_is() {
    let (_dir, emu, client) = in_memory().await;
    let err = client.get("1234567").await.unwrap_err();
    assert_eq!(err.code(), Some(Code::NotFound), "{err}");
    assert_eq!(gets(&emu), 1, "NOT_FOUND is not retried");

    // Contrast: a retryable code uses every attempt of the policy.
    let client = client.with_retry_policy(RetryPolicy::default().with_max_attempts(3));
    emu.knobs().set_unavailable_fraction(1.0);
    let err = client.get("1234567").await.unwrap_err();
    assert_eq!(err.code(), Some(Code::Unavailable), "{err}");
    assert_eq!(gets(&emu), 1 + 3);
}

/// Polls that keep failing end the wait after the failure budget (in
/// emulated time) with the last error, instead of polling for ever; a
/// shorter budget ends it sooner.
#[tokio::test(start_paused = true)]
async fn a_wait_whose_polls_keep_failing_ends_after_its_budget() {
    let (_dir, emu, client) = in_memory().await;
    write_gcs(&emu, INPUT, &lines(1));
    emu.knobs().hold_queued(true);
    let client = client.with_retry_policy(vertex_batch::policy::RetryPolicy::none());
    let job = client.create(&spec(INPUT)).await.unwrap();
    emu.knobs().set_unavailable_fraction(1.0);
    for (budget, opts) in [
        (Duration::from_secs(600), vertex_batch::WaitOptions::new()),
        (
            Duration::from_secs(30),
            vertex_batch::WaitOptions::new().failure_budget(Duration::from_secs(30)),
        ),
    ] {
        let started = tokio::time::Instant::now();
        let err = client
            .wait(
                job.name(),
                &opts.timeout(Duration::from_secs(7200)).any_end(),
            )
            .await
            .unwrap_err();
        let took = started.elapsed();
        assert_eq!(err.code(), Some(Code::Unavailable), "{err:?}");
        assert!(took >= budget, "{took:?} < {budget:?}");
        assert!(took < budget * 2 + Duration::from_secs(60), "{took:?}");
    }
}

/// A token source that works, hiccups three times (a metadata-server
/// blip), then works again — and releases the held job once recovered.
struct Hiccup {
    calls: std::sync::atomic::AtomicU32,
    knobs: vertex_batch::emulator::Knobs,
}

#[async_trait::async_trait]
impl gcp_auth::TokenProvider for Hiccup {
    async fn token(&self, _scopes: &[&str]) -> Result<Arc<gcp_auth::Token>, gcp_auth::Error> {
        let n = self.calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        if (2..5).contains(&n) {
            return Err(gcp_auth::Error::Str("the metadata server hiccuped"));
        }
        if n >= 5 {
            self.knobs.hold_queued(false);
        }
        // Expires at once: every call asks the provider again.
        let token: gcp_auth::Token =
            serde_json::from_str(r#"{"access_token":"ya29.hiccup","expires_in":0}"#).unwrap();
        Ok(Arc::new(token))
    }

    async fn project_id(&self) -> Result<Arc<str>, gcp_auth::Error> {
        Ok(Arc::from(PROJECT))
    }
}

/// A token refresh that fails for a moment, after the credentials worked,
/// is retried inside the wait's budget instead of ending the wait.
#[tokio::test]
async fn a_transient_token_failure_does_not_end_a_wait() {
    let dir = temp();
    let emu = Emulator::start(dir.path()).await.unwrap();
    write_gcs(&emu, INPUT, &lines(1));
    emu.knobs().hold_queued(true);
    let provider = Arc::new(Hiccup {
        calls: Default::default(),
        knobs: emu.knobs().clone(),
    });
    let client = Client::builder()
        .ignore_env()
        .project(PROJECT)
        .location(LOCATION)
        .emulator_host(emu.host())
        .credentials(vertex_batch::transport::Credentials::from_provider(
            provider.clone(),
        ))
        .retry_policy(vertex_batch::policy::RetryPolicy::none())
        .build()
        .unwrap();
    let job = client.create(&spec(INPUT)).await.unwrap();
    let done = client
        .wait(job.name(), &fast_wait().any_end())
        .await
        .expect("the wait outlives the hiccup");
    assert_eq!(done.state(), JobState::Succeeded);
    assert!(provider.calls.load(std::sync::atomic::Ordering::SeqCst) >= 6);
}

/// A request key reused for a different spec is an error naming the
/// earlier job, not a silent return of it; the same spec again is the same
/// job; a `with_proto` customizer cannot strip the key (or the fingerprint).
#[tokio::test]
async fn a_request_key_reused_for_another_spec_is_an_error() {
    let dir = temp();
    let emu = Emulator::start(dir.path()).await.unwrap();
    write_gcs(&emu, INPUT, &[prompt_line(1)]);
    let client = emu.client(PROJECT, LOCATION).unwrap();
    let strip = |j: &mut vertex_batch::proto::aiplatform::BatchPredictionJob| j.labels.clear();
    let first = client
        .submit(&spec(INPUT).request_key("nightly-1").with_proto(strip))
        .await
        .unwrap();
    assert_eq!(
        first.labels().get(REQUEST_KEY_LABEL).map(String::as_str),
        Some("nightly-1"),
        "the customizer ran before the key was set"
    );
    assert!(first.labels().contains_key("vertex_batch_spec"));
    // The same spec: the same job, no second create.
    let again = client
        .submit(&spec(INPUT).request_key("nightly-1").with_proto(strip))
        .await
        .unwrap();
    assert_eq!(again.name(), first.name());
    // Another spec under the same key: refused.
    let err = client
        .submit(&spec(INPUT).request_key("nightly-1").temperature(0.9))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::Validation(v) if v.field() == "request_key"),
        "{err:?}"
    );
    assert!(err.to_string().contains(first.name()), "{err}");
    assert_eq!(emu.rpc_counts()["CreateBatchPredictionJob"], 1);
}
