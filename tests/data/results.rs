//! Results read back from real emulator jobs: every quirk a reader must
//! survive, and every outcome, joined to the inputs.

use crate::common::*;
use vertex_batch::{
    batch::{Inputs, ResultReader, Totals},
    emulator::Emulator,
    format::Outcome,
    JobSpec, JobState,
};

/// `n` keyed input lines; every 10th prompt is blocked, every 10th (offset
/// 5) carries the `flaky` marker.
fn keyed_lines(n: usize) -> Vec<String> {
    (0..n)
        .map(|i| {
            let extra = marker(i);
            format!(
                r#"{{"key":"row {i} \u00e9","request":{{"contents":[{{"role":"user","parts":[{{"text":"Question {i}{extra}"}}]}}]}}}}"#
            )
        })
        .collect()
}

async fn run(emu: &Emulator, input: &str, output: &str) -> vertex_batch::Job {
    let client = emu.client("p", "us-central1").unwrap();
    let spec = JobSpec::new("gemini-2.0-flash-001")
        .input(input)
        .output(output);
    run_to_end(&client, &spec).await
}

fn output_dir(emu: &Emulator, job: &vertex_batch::Job) -> std::path::PathBuf {
    emu.gcs_path(&job.output_location().unwrap().uri()).unwrap()
}

#[tokio::test]
async fn quirky_output_is_read_back_matched_to_every_input() {
    let dir = temp();
    let emu = Emulator::start(dir.path()).await.unwrap();
    let knobs = emu.knobs();
    knobs.set_shuffle_output(true);
    knobs.set_duplicate_every(7);
    knobs.set_export_every_rows(100); // chunks of 100 rows while the job runs
    knobs.set_succeed_despite_failed_rows(true);
    knobs.fail_rows_containing(Some("flaky".into()));
    let n = 300;
    let input = write_gcs(&emu, "gs://bkt/in/prompts.jsonl", &keyed_lines(n));
    let job = run(&emu, "gs://bkt/in/prompts.jsonl", "gs://bkt/out").await;
    assert_eq!(job.state(), JobState::Succeeded, "{:?}", job.error());
    assert_eq!(job.completion_stats().failed, 30);
    let out = output_dir(&emu, &job);
    for c in 1..=3 {
        let chunk = out.join(format!("incremental_predictions/predictions_{c:04}.jsonl"));
        assert_eq!(read_jsonl(&chunk).len(), 100, "{}", chunk.display());
    }

    // The raw file really is quirky: out of order, with repeats.
    let raw = read_jsonl(&out.join("predictions.jsonl"));
    assert_eq!(raw.len(), n + n / 7);
    let keys: Vec<&str> = raw.iter().map(|v| v["key"].as_str().unwrap()).collect();
    assert_ne!(
        keys[..10],
        (0..10).map(|i| format!("row {i} é")).collect::<Vec<_>>()[..]
    );

    let (rows, errors, totals) = ResultReader::new()
        .output_local(&out)
        .inputs(Inputs::local([input]))
        .read()
        .await
        .unwrap()
        .collect_all()
        .await;
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(rows.len(), n);
    let mut seen = std::collections::BTreeSet::new();
    for row in &rows {
        let key = row.key().unwrap();
        assert!(seen.insert(key.to_owned()), "{key} twice");
        let i: usize = key.split(' ').nth(1).unwrap().parse().unwrap();
        match (i % 10, row.outcome()) {
            (0, Outcome::Blocked(b)) => assert_eq!(b.reason(), Some("PROHIBITED_CONTENT")),
            (5, Outcome::Failed(e)) => {
                assert_eq!(e.code(), Some(429));
                assert_eq!(e.status_name(), Some("RESOURCE_EXHAUSTED"));
            }
            (_, Outcome::Succeeded(a)) => {
                assert_eq!(a.text(), format!("Emulated answer to: Question {i}"));
                let typed = a.response().unwrap();
                assert_eq!(typed.candidates.len(), 1);
            }
            (_, other) => panic!("{key}: unexpected {other:?}"),
        }
    }
    assert_eq!(
        totals,
        Totals {
            succeeded: 240,
            failed: 30,
            blocked: 30,
            missing: 0,
            // Every 7th row twice in the final file, and every row once
            // more in the exported chunks (3 of 100 rows).
            duplicates: (n / 7) as u64 + n as u64,
            errors: 0,
            unexpected: 0,
            usage: totals.usage,
            ..Totals::default()
        }
    );
    assert!(totals.usage.total_tokens > 0);
}

#[tokio::test]
async fn without_inputs_every_key_comes_once_and_partial_success_is_reported() {
    let dir = temp();
    let emu = Emulator::start(dir.path()).await.unwrap();
    emu.knobs().fail_rows_containing(Some("flaky".into()));
    emu.knobs().set_duplicate_every(3);
    write_gcs(&emu, "gs://bkt/in.jsonl", &keyed_lines(40));
    let job = run(&emu, "gs://bkt/in.jsonl", "gs://bkt/out").await;
    assert_eq!(job.state(), JobState::PartiallySucceeded);
    let (rows, errors, totals) = ResultReader::new()
        .output_local(output_dir(&emu, &job))
        .read()
        .await
        .unwrap()
        .collect_all()
        .await;
    assert!(errors.is_empty());
    assert_eq!(rows.len(), 40);
    assert_eq!(
        (totals.succeeded, totals.failed, totals.blocked),
        (32, 4, 4)
    );
    assert_eq!(totals.duplicates, 13);
}

#[tokio::test]
async fn a_cancelled_job_leaves_its_unfinished_rows_missing_with_their_requests() {
    let dir = temp();
    let emu = Emulator::start(dir.path()).await.unwrap();
    let lines = keyed_lines(50);
    let input = write_gcs(&emu, "gs://bkt/in.jsonl", &lines);
    // Slow rows; cancel once some are done.
    emu.knobs()
        .set_row_delay(std::time::Duration::from_millis(20));
    let client = emu.client("p", "us-central1").unwrap();
    let job = client
        .create(
            &JobSpec::new("gemini-2.0-flash-001")
                .input("gs://bkt/in.jsonl")
                .output("gs://bkt/out"),
        )
        .await
        .unwrap();
    poll_until(&client, job.name(), "some rows done", |j| {
        j.completion_stats().successful > 0
    })
    .await;
    client.cancel(job.name()).await.unwrap();
    let job = client
        .wait(job.name(), &fast_wait().any_end())
        .await
        .unwrap();
    assert_eq!(job.state(), JobState::Cancelled);
    let (rows, errors, totals) = ResultReader::new()
        .output_local(output_dir(&emu, &job))
        .inputs(Inputs::local([input]))
        .read()
        .await
        .unwrap()
        .collect_all()
        .await;
    assert!(errors.is_empty());
    assert_eq!(rows.len(), 50);
    assert_eq!(totals.rows(), 50);
    assert!(totals.missing > 0 && totals.missing < 50, "{totals:?}");
    let missing = rows
        .iter()
        .find(|r| matches!(r.outcome(), Outcome::Missing(_)))
        .unwrap();
    let Outcome::Missing(m) = missing.outcome() else {
        unreachable!()
    };
    let i: usize = missing
        .key()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let original: serde_json::Value = serde_json::from_str(&lines[i]).unwrap();
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(m.request().get()).unwrap(),
        original["request"]
    );
}

#[tokio::test]
async fn a_batchs_cost_is_the_sum_of_its_rows_at_batch_rates() {
    use vertex_batch::{
        batch::{ReadOptions, ResultReader},
        cost::{Cost, Prices},
    };
    let dir = temp();
    std::fs::write(
        dir.path().join("predictions.jsonl"),
        concat!(
            // Thoughts, implicitly cached and tool-use tokens.
            r#"{"key":"a","status":"","response":{"candidates":[{"content":{"parts":[{"text":"A"}]},"finishReason":"STOP"}],"usageMetadata":{"promptTokenCount":1000,"cachedContentTokenCount":400,"toolUsePromptTokenCount":100,"candidatesTokenCount":200,"thoughtsTokenCount":300,"totalTokenCount":1600}}}"#,
            "\n",
            r#"{"key":"b","status":"","response":{"candidates":[{"content":{"parts":[{"text":"B"}]},"finishReason":"STOP"}],"usageMetadata":{"promptTokenCount":2000,"candidatesTokenCount":100,"totalTokenCount":2100}}}"#,
            "\n",
            // Failed rows are not billed.
            r#"{"key":"c","status":"{\"error\": {\"code\": 429, \"message\": \"Quota\"}}"}"#,
            "\n",
        ),
    )
    .unwrap();
    let price = Prices::builtin()
        .lookup("gemini-2.5-flash")
        .unwrap()
        .clone();
    let rows = ResultReader::new()
        .output_local(dir.path())
        .options(ReadOptions::new().price(price.clone()))
        .read()
        .await
        .unwrap();
    let (rows, _, totals) = rows.collect_all().await;
    // gemini-2.5-flash at batch rates, per million tokens: input $0.15,
    // implicitly cached $0.03 (the cache's rate instead of the batch
    // discount), output (candidates and thoughts) $1.25.
    //   a: (1000 − 400) × 0.15 + 400 × 0.03 + 100 × 0.15 + (200 + 300) × 1.25
    //      = 90 + 12 + 15 + 625 = 742 millionths of a dollar
    //   b: 2000 × 0.15 + 100 × 1.25 = 300 + 125 = 425
    //   c: failed, 0
    let by_key: std::collections::HashMap<_, _> = rows
        .iter()
        .map(|r| (r.key().unwrap().to_owned(), price.result_cost(r).unwrap()))
        .collect();
    assert_eq!(by_key["a"], Cost::from_nanos(742_000));
    assert_eq!(by_key["b"], Cost::from_nanos(425_000));
    assert_eq!(by_key["c"], Cost::ZERO);
    assert_eq!(totals.cost, Some(Cost::from_nanos(1_167_000)));
    assert_eq!(totals.unpriced, 0);
    assert_eq!(totals.usage.thoughts_tokens, 300);
    assert_eq!(totals.usage.tool_use_prompt_tokens, 100);
    // Unpriced reads say so: no cost, not zero.
    let unpriced = ResultReader::new()
        .output_local(dir.path())
        .read()
        .await
        .unwrap();
    assert_eq!(unpriced.collect_all().await.2.cost, None);
}
