//! The emulator executes jobs: outputs line for line, states, storage
//! mapping, BigQuery, wildcards, failures.

use std::collections::BTreeSet;

use crate::common::*;
use serde_json::json;
use vertex_batch::{emulator::Emulator, job::OutputLocation, Error, JobSpec, JobState};

fn spec(input: &str, output: &str) -> JobSpec {
    JobSpec::new("gemini-2.0-flash-001")
        .display_name("test-job")
        .input(input)
        .output(output)
        .model_parameters(json!({"temperature": 0.2, "maxOutputTokens": 200}))
}

#[tokio::test]
async fn gcs_job_writes_one_prediction_per_input_line() {
    let dir = temp();
    let emu = Emulator::start(dir.path()).await.unwrap();
    let lines: Vec<String> = (0..50).map(prompt_line).collect();
    write_gcs(&emu, "gs://bkt/in/prompts.jsonl", &lines);
    let client = emu.client("proj-1", "us-central1").unwrap();
    let job = client
        .create(&spec("gs://bkt/in/prompts.jsonl", "gs://bkt/out"))
        .await
        .unwrap();
    assert_eq!(job.state(), JobState::Pending);
    let done = client.wait(job.name(), &fast_wait()).await.unwrap();
    assert_eq!(done.state(), JobState::Succeeded);
    let stats = done.completion_stats();
    assert_eq!(
        (stats.successful, stats.failed, stats.incomplete),
        (50, 0, Some(0))
    );
    assert!(done.start_time().unwrap() >= done.create_time().unwrap());
    assert!(done.end_time().unwrap() >= done.start_time().unwrap());

    let OutputLocation::Gcs(out_dir) = done.output_location().unwrap() else {
        panic!("expected a GCS output")
    };
    assert!(
        out_dir.starts_with("gs://bkt/out/prediction-model-"),
        "{out_dir}"
    );
    let rows = read_jsonl(&predictions_file(&emu, &done));
    assert_eq!(rows.len(), 50);
    let inputs: BTreeSet<String> = lines
        .iter()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["request"].to_string())
        .collect();
    let echoed: BTreeSet<String> = rows.iter().map(|r| r["request"].to_string()).collect();
    assert_eq!(
        inputs, echoed,
        "every input row yields exactly one output row"
    );
    for r in &rows {
        assert_eq!(r["status"], "");
        assert!(r["processed_time"].as_str().unwrap().ends_with('Z'));
        let text = r["response"]["candidates"][0]["content"]["parts"][0]["text"]
            .as_str()
            .unwrap();
        let prompt = r["request"]["contents"][0]["parts"][0]["text"]
            .as_str()
            .unwrap();
        assert_eq!(text, format!("Emulated answer to: {prompt}"));
        assert_eq!(r["response"]["modelVersion"], "gemini-2.0-flash-001");
        assert_eq!(r["response"]["usageMetadata"]["promptTokenCount"], 8);
    }
}

#[tokio::test]
async fn bad_rows_fail_alone_and_the_job_partially_succeeds() {
    let dir = temp();
    let emu = Emulator::start(dir.path()).await.unwrap();
    let lines = vec![
        prompt_line(1),
        "this is not json".to_owned(),
        r#"{"instances":[1]}"#.to_owned(),
        r#"{"request":{"generationConfig":{}}}"#.to_owned(),
        prompt_line(2),
    ];
    write_gcs(&emu, "gs://bkt/mixed.jsonl", &lines);
    let client = emu.client("proj-1", "us-central1").unwrap();
    let job = client
        .create(&spec("gs://bkt/mixed.jsonl", "gs://bkt/out"))
        .await
        .unwrap();
    let err = client.wait(job.name(), &fast_wait()).await.unwrap_err();
    let Error::JobNotSucceeded(done) = err else {
        panic!("{err}")
    };
    assert_eq!(done.state(), JobState::PartiallySucceeded);
    let s = done.completion_stats();
    assert_eq!((s.successful, s.failed), (2, 3));
    assert_eq!(done.partial_failures().len(), 3);
    assert!(done.partial_failures()[0].message().contains("row 2"));
    let rows = read_jsonl(&predictions_file(&emu, &done));
    assert_eq!(rows.len(), 5);
    let failed: Vec<_> = rows.iter().filter(|r| r["status"] != "").collect();
    assert_eq!(failed.len(), 3);
    assert!(failed.iter().all(|r| r.get("response").is_none()));
    assert!(rows.iter().any(|r| r["request"] == "this is not json"));
}

#[tokio::test]
async fn a_job_whose_rows_all_fail_is_failed() {
    let dir = temp();
    let emu = Emulator::start(dir.path()).await.unwrap();
    write_gcs(
        &emu,
        "gs://bkt/bad.jsonl",
        &["nope".to_owned(), "{}".to_owned()],
    );
    let client = emu.client("proj-1", "us-central1").unwrap();
    let done = run_to_end(&client, &spec("gs://bkt/bad.jsonl", "gs://bkt/out")).await;
    assert_eq!(done.state(), JobState::Failed);
    assert!(done
        .error()
        .unwrap()
        .message()
        .contains("all 2 rows failed"));
}

#[tokio::test]
async fn missing_input_fails_the_job_with_a_clear_error() {
    let dir = temp();
    let emu = Emulator::start(dir.path()).await.unwrap();
    let client = emu.client("proj-1", "us-central1").unwrap();
    let done = run_to_end(&client, &spec("gs://bkt/none.jsonl", "gs://bkt/out")).await;
    assert_eq!(done.state(), JobState::Failed);
    let err = done.error().unwrap();
    assert_eq!(err.code(), tonic::Code::NotFound);
    assert!(
        err.message().contains("gs://bkt/none.jsonl"),
        "{}",
        err.message()
    );
}

#[tokio::test]
async fn wildcards_and_several_inputs_are_read() {
    let dir = temp();
    let emu = Emulator::start(dir.path()).await.unwrap();
    write_gcs(
        &emu,
        "gs://bkt/in/a.jsonl",
        &[prompt_line(1), prompt_line(2)],
    );
    write_gcs(&emu, "gs://bkt/in/b.jsonl", &[prompt_line(3)]);
    write_gcs(&emu, "gs://bkt/in/skip.txt", &[prompt_line(4)]);
    write_gcs(&emu, "gs://bkt/extra.jsonl", &[prompt_line(5)]);
    let client = emu.client("proj-1", "us-central1").unwrap();
    let job = client
        .create(&spec("gs://bkt/in/*.jsonl", "gs://bkt/out").input("gs://bkt/extra.jsonl"))
        .await
        .unwrap();
    let done = client.wait(job.name(), &fast_wait()).await.unwrap();
    assert_eq!(done.completion_stats().successful, 4);
    assert_eq!(read_jsonl(&predictions_file(&emu, &done)).len(), 4);
}

#[tokio::test]
async fn bigquery_tables_carry_columns_and_name_the_output_table() {
    let dir = temp();
    let emu = Emulator::start(dir.path()).await.unwrap();
    let table = emu.bigquery_path("bq://proj-1.prompts.requests").unwrap();
    let rows: Vec<String> = (0..3)
        .map(|i| {
            json!({"id": i, "request": {"contents": [{"role": "user", "parts": [{"text": format!("question {i}")}]}]}})
                .to_string()
        })
        .collect();
    write_lines(&table, &rows);
    let client = emu.client("proj-1", "us-central1").unwrap();

    // A dataset: the emulator names the table predictions_<timestamp>.
    let job = client
        .create(&spec("bq://proj-1.prompts.requests", "bq://proj-1.results"))
        .await
        .unwrap();
    let done = client.wait(job.name(), &fast_wait()).await.unwrap();
    let OutputLocation::BigQuery { dataset, table } = done.output_location().unwrap() else {
        panic!()
    };
    assert_eq!(dataset, "bq://proj-1.results");
    assert!(table.starts_with("predictions_"), "{table}");
    let out = read_jsonl(
        &emu.bigquery_path(&format!("bq://proj-1.results.{table}"))
            .unwrap(),
    );
    assert_eq!(out.len(), 3);
    let ids: BTreeSet<i64> = out.iter().map(|r| r["id"].as_i64().unwrap()).collect();
    assert_eq!(ids, BTreeSet::from([0, 1, 2]));
    assert!(out
        .iter()
        .all(|r| r["status"] == "" && r["response"]["candidates"].is_array()));

    // A named table is used as is, and never overwritten.
    let named = spec("bq://proj-1.prompts.requests", "bq://proj-1.results.run1");
    let done = client
        .wait(client.create(&named).await.unwrap().name(), &fast_wait())
        .await
        .unwrap();
    assert_eq!(
        done.output_location().unwrap().uri(),
        "bq://proj-1.results.run1"
    );
    let again = client.create(&named).await.unwrap();
    let failed = client
        .wait(again.name(), &fast_wait().any_end())
        .await
        .unwrap();
    assert_eq!(failed.state(), JobState::Failed);
    assert!(failed.error().unwrap().message().contains("already exists"));
}

#[tokio::test]
async fn max_output_tokens_from_the_job_parameters_cut_answers() {
    let dir = temp();
    let emu = Emulator::start(dir.path()).await.unwrap();
    write_gcs(
        &emu,
        "gs://bkt/p.jsonl",
        &[
            r#"{"request":{"contents":[{"role":"user","parts":[{"text":"a b c d e f"}]}]}}"#
                .to_owned(),
        ],
    );
    let client = emu.client("proj-1", "us-central1").unwrap();
    let job = client
        .create(&spec("gs://bkt/p.jsonl", "gs://bkt/out").max_output_tokens(5))
        .await
        .unwrap();
    let done = client.wait(job.name(), &fast_wait()).await.unwrap();
    let rows = read_jsonl(&predictions_file(&emu, &done));
    let cand = &rows[0]["response"]["candidates"][0];
    assert_eq!(
        cand["content"]["parts"][0]["text"],
        "Emulated answer to: a b"
    );
    assert_eq!(cand["finishReason"], "MAX_TOKENS");
}

#[tokio::test]
async fn a_crash_after_publishing_never_doubles_the_output() {
    let dir = temp();
    let emu = Emulator::start(dir.path()).await.unwrap();
    let lines: Vec<String> = (0..20).map(prompt_line).collect();
    write_gcs(&emu, "gs://bkt/in.jsonl", &lines);
    let client = emu.client("proj-1", "us-central1").unwrap();
    let job = client
        .create(&spec("gs://bkt/in.jsonl", "gs://bkt/out"))
        .await
        .unwrap();
    let done = client.wait(job.name(), &fast_wait()).await.unwrap();
    let out_dir = predictions_file(&emu, &done)
        .parent()
        .unwrap()
        .to_path_buf();
    emu.shutdown().await;

    // Make the record look like a crash between publishing the output and
    // recording the end: RUNNING, with its output directory claimed.
    let record_path = dir.path().join("jobs").join(format!("{}.json", done.id()));
    let mut record: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&record_path).unwrap()).unwrap();
    record["job"]["state"] = json!("JOB_STATE_RUNNING");
    // A crash before the end is recorded leaves no end time either.
    let job_obj = record["job"].as_object_mut().unwrap();
    job_obj.remove("endTime");
    job_obj.remove("end_time");
    record["output_claim"] = json!(out_dir);
    std::fs::write(&record_path, record.to_string()).unwrap();

    let emu = Emulator::start(dir.path()).await.unwrap();
    let client = emu.client("proj-1", "us-central1").unwrap();
    let rerun = client.wait(job.name(), &fast_wait()).await.unwrap();
    assert_eq!(rerun.completion_stats().successful, 20);
    let out_root = emu.gcs_path("gs://bkt/out").unwrap();
    let dirs: Vec<_> = std::fs::read_dir(&out_root).unwrap().collect();
    assert_eq!(dirs.len(), 1, "exactly one output directory");
    assert_eq!(read_jsonl(&predictions_file(&emu, &rerun)).len(), 20);
}

#[tokio::test]
async fn an_enormous_wait_deadline_is_no_deadline() {
    let dir = temp();
    let emu = Emulator::start(dir.path()).await.unwrap();
    write_gcs(&emu, "gs://bkt/in.jsonl", &[prompt_line(1)]);
    let client = emu.client("proj-1", "us-central1").unwrap();
    let job = client
        .create(&spec("gs://bkt/in.jsonl", "gs://bkt/out"))
        .await
        .unwrap();
    let opts = vertex_batch::WaitOptions::new()
        .policy(vertex_batch::policy::PollPolicy::fixed(
            std::time::Duration::from_millis(10),
        ))
        .timeout(std::time::Duration::MAX);
    let done = client.wait(job.name(), &opts).await.unwrap();
    assert_eq!(done.state(), JobState::Succeeded);
}

/// A row longer than the line cap, and a row that is not UTF-8, fail alone:
/// nothing is rewritten, the other rows succeed and are echoed byte-exact.
#[tokio::test]
async fn an_overlong_or_non_utf8_row_fails_alone() {
    let dir = temp();
    let emu = Emulator::start(dir.path()).await.unwrap();
    emu.knobs().set_max_line_bytes(4096);
    let path = emu.gcs_path("gs://bkt/in/mixed.jsonl").unwrap();
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let long = format!(
        r#"{{"request":{{"contents":[{{"role":"user","parts":[{{"text":"{}"}}]}}]}}}}"#,
        "x".repeat(10_000)
    );
    let mut bytes = Vec::new();
    bytes.extend_from_slice(prompt_line(1).as_bytes());
    bytes.push(b'\n');
    bytes.extend_from_slice(long.as_bytes());
    bytes.push(b'\n');
    bytes.extend_from_slice(
        b"{\"request\":{\"contents\":[{\"role\":\"user\",\"parts\":[{\"text\":\"caf\xe9\"}]}]}}\n",
    );
    bytes.extend_from_slice(prompt_line(2).as_bytes());
    bytes.push(b'\n');
    std::fs::write(&path, &bytes).unwrap();
    let client = emu.client("proj-1", "us-central1").unwrap();
    let done = run_to_end(&client, &spec("gs://bkt/in/mixed.jsonl", "gs://bkt/out")).await;
    assert_eq!(done.state(), JobState::PartiallySucceeded);
    let stats = done.completion_stats();
    assert_eq!((stats.successful, stats.failed), (2, 2));
    let text = std::fs::read(predictions_file(&emu, &done)).unwrap();
    let text = String::from_utf8(text).expect("the output is UTF-8");
    assert!(!text.contains('\u{fffd}'), "nothing rewritten: {text}");
    let rows: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 4);
    let failed: Vec<&str> = rows
        .iter()
        .filter_map(|r| r["status"].as_str().filter(|s| !s.is_empty()))
        .collect();
    assert_eq!(failed.len(), 2, "{failed:?}");
    assert!(
        failed
            .iter()
            .any(|s| s.contains("longer than the 4096 bytes")),
        "{failed:?}"
    );
    assert!(failed.iter().any(|s| s.contains("not UTF-8")), "{failed:?}");
    for i in [1, 2] {
        let want: serde_json::Value = serde_json::from_str(&prompt_line(i)).unwrap();
        assert!(
            rows.iter()
                .any(|r| r["request"] == want["request"] && r["status"] == ""),
            "row {i} succeeded and was echoed"
        );
    }
}

/// A job stuck on slow storage never holds up an RPC: on a one-thread
/// runtime, a Get made while the job's rows wait on their I/O thread is
/// answered at once — before those rows are done (were the I/O on the
/// runtime's thread, the Get could only be answered after them).
#[tokio::test(flavor = "current_thread")]
async fn slow_job_io_never_delays_an_rpc() {
    let dir = temp();
    let emu = Emulator::start(dir.path()).await.unwrap();
    write_gcs(
        &emu,
        "gs://bkt/in.jsonl",
        &(0..10).map(prompt_line).collect::<Vec<_>>(),
    );
    emu.knobs().set_io_delay(std::time::Duration::from_secs(2));
    let client = emu.in_memory_client("proj-1", "us-central1").unwrap();
    let job = client
        .create(&spec("gs://bkt/in.jsonl", "gs://bkt/out"))
        .await
        .unwrap();
    let running = poll_until(&client, job.name(), "RUNNING", |j| {
        j.state() == JobState::Running
    })
    .await;
    assert_eq!(running.completion_stats().successful, 0);
    let again = client.get(job.name()).await.unwrap();
    assert_eq!(again.state(), JobState::Running);
    assert_eq!(
        again.completion_stats().successful,
        0,
        "answered while the rows wait"
    );
    emu.knobs().set_io_delay(std::time::Duration::ZERO);
    let done = client.wait(job.name(), &fast_wait()).await.unwrap();
    assert_eq!(done.completion_stats().successful, 10);
}
