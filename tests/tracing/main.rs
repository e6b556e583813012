//! What the crate logs, captured by a tracing subscriber: each RPC's span
//! (method, resource, attempt, outcome) without the token, and the warning
//! for a job that succeeded with failed rows.
//!
//! A binary of its own: tracing caches each callsite's interest process-wide,
//! and a callsite first hit on another test's thread while a subscriber is
//! being installed can keep the interest computed without it (tracing-core
//! registers a callsite and computes its interest in two steps). Here no
//! other test runs, and the two tests take turns (`SERIAL`), each installing
//! its subscriber before anything it logs runs.

#[path = "../common/mod.rs"]
mod common;

use std::{
    io::Write,
    sync::{Arc, Mutex},
    time::Duration,
};

use common::*;
use tonic::Code;
use vertex_batch::{emulator::Emulator, transport::Credentials, Client, Error, JobSpec, JobState};

const PROJECT: &str = "p1";
const LOCATION: &str = "us-central1";
const INPUT: &str = "gs://bkt/in.jsonl";

/// One test at a time: a test's subscriber is installed before the other
/// test's calls register their callsites.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn spec(input: &str) -> JobSpec {
    JobSpec::new("gemini-2.0-flash-001")
        .display_name("lifecycle-test")
        .input(input)
        .output("gs://bkt/out")
}

/// A `MakeWriter` that keeps everything written in memory.
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Capture {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Capture {
    type Writer = Capture;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

#[tokio::test]
async fn rpc_spans_name_method_and_attempt_and_never_log_the_token() {
    let _serial = SERIAL.lock().await;
    let capture = Capture::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(capture.clone())
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let dir = temp();
    let emu = Emulator::start(dir.path()).await.unwrap();
    write_gcs(&emu, INPUT, &[prompt_line(1)]);
    let credentials = Credentials::access_token("ya29.secret-token-xyz");
    tracing::info!(?credentials, "credentials in use");
    let client = Client::builder()
        .ignore_env()
        .project(PROJECT)
        .location(LOCATION)
        .endpoint(format!("http://{}", emu.addr()))
        .credentials(credentials)
        .build()
        .unwrap();
    tracing::info!(?client, "client built");
    // Other tests run on other threads without a subscriber; one of them
    // may have registered a callsite (cached as uninteresting) while this
    // subscriber was being installed. Recompute every callsite's interest
    // now that it is in place.
    tracing::callsite::rebuild_interest_cache();

    let job = client.create(&spec(INPUT)).await.unwrap();
    client.get(job.name()).await.unwrap();
    let err = client.get("1234567").await.unwrap_err();
    assert_eq!(err.code(), Some(Code::NotFound), "{err}");
    tracing::info!(error = %err, ?err, "not found");
    assert_eq!(
        emu.rpc_counts()["GetBatchPredictionJob"],
        2,
        "the calls reached the emulator"
    );

    let log = capture.text();
    // The client's own span (the emulator also logs a `method` field, so
    // look for the span by name).
    let span_line = |method: &str, outcome: &str| {
        log.lines().any(|l| {
            l.contains(&format!("vertex_batch.rpc{{method=\"{method}\""))
                && l.contains("attempt=1")
                && l.contains(outcome)
        })
    };
    assert!(span_line("CreateBatchPredictionJob", "rpc ok"), "{log}");
    assert!(span_line("GetBatchPredictionJob", "rpc ok"), "{log}");
    assert!(span_line("GetBatchPredictionJob", "code=NotFound"), "{log}");
    assert!(log.contains("AccessToken(<redacted>)"), "{log}");
    assert!(!log.contains("secret-token"), "the token leaked:\n{log}");
}

/// Rows failed: the emulator ends the job PARTIALLY_SUCCEEDED, or (like the
/// service sometimes) SUCCEEDED. `wait` returns `Ok` for SUCCEEDED with a
/// warning and `is_clean_success` false; PARTIALLY_SUCCEEDED is an error.
#[tokio::test]
async fn rows_failed_end_succeeded_or_partially_succeeded_and_are_told_apart() {
    let _serial = SERIAL.lock().await;
    let capture = Capture::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(capture.clone())
        .with_max_level(tracing::Level::WARN)
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    tracing::callsite::rebuild_interest_cache();

    let dir = temp();
    let emu = Emulator::start(dir.path()).await.unwrap();
    emu.knobs().fail_rows_containing(Some("number 2".into()));
    write_gcs(
        &emu,
        INPUT,
        &[prompt_line(1), prompt_line(2), prompt_line(3)],
    );
    let client = emu.client(PROJECT, LOCATION).unwrap();
    let opts = || {
        vertex_batch::WaitOptions::new().policy(vertex_batch::policy::PollPolicy::fixed(
            Duration::from_millis(5),
        ))
    };

    // PARTIALLY_SUCCEEDED: an error carrying the job.
    let job = client.create(&spec(INPUT)).await.unwrap();
    let err = client.wait(job.name(), &opts()).await.unwrap_err();
    let Error::JobNotSucceeded(job) = err else {
        panic!("{err}")
    };
    assert_eq!(job.state(), JobState::PartiallySucceeded);
    assert!(!job.is_clean_success());
    assert_eq!(job.completion_stats().failed, 1);

    // SUCCEEDED despite a failed row: Ok, but not clean, and a warning.
    emu.knobs().set_succeed_despite_failed_rows(true);
    let job = client.create(&spec(INPUT)).await.unwrap();
    let job = client.wait(job.name(), &opts()).await.unwrap();
    assert_eq!(job.state(), JobState::Succeeded);
    assert_eq!(job.completion_stats().failed, 1);
    assert!(!job.is_clean_success());
    let log = capture.text();
    assert!(
        log.contains("job SUCCEEDED but some rows failed") && log.contains(job.name()),
        "{log}"
    );

    // No failed row: clean.
    emu.knobs().fail_rows_containing(None);
    let job = client.create(&spec(INPUT)).await.unwrap();
    let job = client.wait(job.name(), &opts()).await.unwrap();
    assert!(job.is_clean_success());
}
