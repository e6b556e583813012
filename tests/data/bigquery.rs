//! The BigQuery client and reading output tables, against bqemulator (a
//! real BigQuery emulator, started on loopback; `scripts/test.sh`
//! installs it).

use crate::common::bq::BqEmulator;
use futures::TryStreamExt;
use serde_json::json;
use vertex_batch::{
    batch::{Inputs, ResultReader},
    bigquery::{BigQuery, Field},
    format::Outcome,
    uri::BigQueryUri,
    Error,
};

fn client(emu: &BqEmulator) -> BigQuery {
    BigQuery::builder()
        .ignore_env()
        .emulator_host(emu.host())
        .build()
        .unwrap()
}

/// A client that reads tables through the emulator's Storage Read API.
fn read_api_client(emu: &BqEmulator) -> BigQuery {
    BigQuery::builder()
        .ignore_env()
        .emulator_host(emu.host())
        .storage_read_api(&emu.grpc_url)
        .build()
        .unwrap()
}

fn uri(s: &str) -> BigQueryUri {
    s.parse().unwrap()
}

fn input_schema() -> Vec<Field> {
    vec![Field::new("key", "STRING"), Field::new("request", "JSON")]
}

/// The service's output columns: the input's, plus `response`, `status`
/// and `processed_time`.
fn output_schema() -> Vec<Field> {
    vec![
        Field::new("key", "STRING"),
        Field::new("request", "JSON"),
        Field::new("response", "JSON"),
        Field::new("status", "STRING"),
        Field::new("processed_time", "TIMESTAMP"),
    ]
}

fn request(i: usize) -> serde_json::Value {
    json!({"contents": [{"role": "user", "parts": [{"text": format!("Question {i}")}]}],
           "labels": {"vertex_batch_key": format!("k{i}")}})
}

fn answer(text: &str, finish: &str) -> serde_json::Value {
    json!({
        "candidates": [{"content": {"role": "model", "parts": [{"text": text}]}, "finishReason": finish,
                        "avgLogprobs": -0.1, "someFieldFromANewerVersion": {"x": 1}}],
        "usageMetadata": {"promptTokenCount": 5, "candidatesTokenCount": 7, "totalTokenCount": 12,
                          "trafficType": "ON_DEMAND", "newerCounter": 3},
        "modelVersion": "gemini-2.0-flash-001",
        "createTime": "2026-12-01T10:00:00.000000Z",
    })
}

fn ndjson(rows: &[serde_json::Value]) -> String {
    rows.iter().map(|r| format!("{r}\n")).collect()
}

#[tokio::test]
async fn a_realistic_output_table_reads_back_as_the_same_rows_as_cloud_storage_output() {
    let emu = BqEmulator::start("p");
    let bq = client(&emu);
    let ds = uri("bq://p.batches");
    bq.create_dataset(&ds, "us-central1").await.unwrap();
    assert_eq!(
        bq.dataset_location(&ds).await.unwrap().as_deref(),
        Some("us-central1")
    );
    // Inputs k0..k11.
    let inputs: Vec<_> = (0..12)
        .map(|i| json!({"key": format!("k{i}"), "request": request(i)}))
        .collect();
    let input = uri("bq://p.batches.nightly_r0_p00000");
    let job = bq
        .load_ndjson(&input, &input_schema(), ndjson(&inputs), "load-inputs-1")
        .await
        .unwrap();
    assert_eq!(job.rows(), 12);
    // The output, shuffled: k3 twice, k2 failed (its status embeds a JSON
    // error), k4 blocked by its prompt, k8 stopped for SAFETY without
    // content, k5 cut at MAX_TOKENS, k7, k10 and k11 missing, one row no
    // input names.
    let row = |i: usize, response: serde_json::Value, status: &str| {
        json!({"key": format!("k{i}"), "request": request(i), "response": response,
               "status": status, "processed_time": "2026-12-01T10:00:01.5Z"})
    };
    let failed = r#"Bad Request: {"error": {"code": 400, "message": "Request contains an invalid argument.", "status": "INVALID_ARGUMENT"}}"#;
    let output = vec![
        row(9, answer("Nine.", "STOP"), ""),
        row(3, answer("Three.", "STOP"), ""),
        row(2, serde_json::Value::Null, failed),
        row(0, answer("Zero.", "STOP"), ""),
        row(
            4,
            json!({"promptFeedback": {"blockReason": "PROHIBITED_CONTENT"}}),
            "",
        ),
        row(8, json!({"candidates": [{"finishReason": "SAFETY"}]}), ""),
        row(5, answer("Five, cut", "MAX_TOKENS"), ""),
        row(3, answer("Three again.", "STOP"), ""),
        row(1, answer("One.", "STOP"), ""),
        row(6, answer("Six.", "STOP"), ""),
        json!({"key": "stranger", "request": request(99), "response": answer("?", "STOP"), "status": ""}),
    ];
    let table = uri("bq://p.batches.predictions_2026_12_01T10_00_00");
    bq.load_ndjson(&table, &output_schema(), ndjson(&output), "load-output-1")
        .await
        .unwrap();
    let info = bq.table(&table).await.unwrap().unwrap();
    assert_eq!(info.rows(), 11);
    let columns: Vec<_> = info
        .schema()
        .iter()
        .map(|f| (f.name.as_str(), f.kind.as_str()))
        .collect();
    assert_eq!(
        columns,
        [
            ("key", "STRING"),
            ("request", "JSON"),
            ("response", "JSON"),
            ("status", "STRING"),
            ("processed_time", "TIMESTAMP")
        ]
    );

    let (rows, errors, totals) = ResultReader::new()
        .output_bigquery(&bq, table.clone())
        .inputs(Inputs::bigquery(&bq, [input.clone()]))
        .read()
        .await
        .unwrap()
        .collect_all()
        .await;
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(rows.len(), 12, "every input key exactly once");
    assert_eq!(
        (
            totals.succeeded,
            totals.failed,
            totals.blocked,
            totals.missing
        ),
        (6, 1, 2, 3)
    );
    assert_eq!((totals.duplicates, totals.unexpected), (1, 1));
    assert_eq!(totals.usage.prompt_tokens, 5 * 6);
    let by_key = |k: &str| rows.iter().find(|r| r.key() == Some(k)).unwrap();
    assert_eq!(by_key("k3").text(), Some("Three."), "the first copy wins");
    assert_eq!(by_key("k5").text(), Some("Five, cut"));
    match by_key("k2").outcome() {
        Outcome::Failed(e) => {
            assert_eq!(e.code(), Some(400));
            assert_eq!(e.status_name(), Some("INVALID_ARGUMENT"));
        }
        other => panic!("k2: {other:?}"),
    }
    assert!(matches!(by_key("k4").outcome(), Outcome::Blocked(_)));
    assert!(matches!(by_key("k8").outcome(), Outcome::Blocked(_)));
    match by_key("k7").outcome() {
        Outcome::Missing(m) => assert!(m.request().get().contains("Question 7")),
        other => panic!("k7: {other:?}"),
    }

    // Through the Storage Read API: the same rows, the same totals.
    let (again, errors, totals_again) = ResultReader::new()
        .output_bigquery(&read_api_client(&emu), table.clone())
        .inputs(Inputs::bigquery(&bq, [input.clone()]))
        .read()
        .await
        .unwrap()
        .collect_all()
        .await;
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(format!("{totals_again:?}"), format!("{totals:?}"));
    let outcomes = |rows: &[vertex_batch::format::ResultRow]| {
        let mut v: Vec<_> = rows
            .iter()
            .map(|r| (r.key().map(str::to_owned), format!("{:?}", r.outcome())))
            .collect();
        v.sort();
        v
    };
    assert_eq!(outcomes(&again), outcomes(&rows));
}

#[tokio::test]
async fn the_storage_read_api_gives_every_column_type_as_tabledata_list_does() {
    let emu = BqEmulator::start("p");
    let rest = client(&emu);
    let grpc = read_api_client(&emu);
    assert!(grpc.reads_through_storage_read_api());
    assert!(!rest.reads_through_storage_read_api());
    let ds = uri("bq://p.types");
    rest.create_dataset(&ds, "us-central1").await.unwrap();
    let record = Field {
        fields: vec![Field::new("a", "INTEGER"), Field::new("j", "JSON")],
        ..Field::new("rec", "RECORD")
    };
    let tags = Field {
        mode: Some("REPEATED".into()),
        ..Field::new("tags", "STRING")
    };
    let schema = vec![
        Field::new("key", "STRING"),
        Field::new("request", "JSON"),
        Field::new("n", "INTEGER"),
        Field::new("f", "FLOAT"),
        Field::new("ok", "BOOLEAN"),
        Field::new("at", "TIMESTAMP"),
        Field::new("day", "DATE"),
        Field::new("num", "NUMERIC"),
        Field::new("raw", "BYTES"),
        tags,
        record,
    ];
    // Enough rows (about 2 MB) for the emulator to split the session
    // into several streams.
    let rows: Vec<_> = (0..4000)
        .map(|i| {
            if i % 97 == 0 {
                return json!({"key": format!("k{i}")});
            }
            json!({"key": format!("k{i}"), "request": request(i), "n": i as i64 - 2000,
                   "f": i as f64 / 8.0, "ok": i % 2 == 0, "at": "2026-12-01T10:00:01.5Z",
                   "day": "2026-12-01", "num": format!("{}.25", i), "raw": "aGkh",
                   "tags": ["a", format!("t{i}")], "rec": {"a": i, "j": {"x": [i, "y\nz"]}}})
        })
        .collect();
    let table = uri("bq://p.types.every_type");
    rest.load_ndjson(&table, &schema, ndjson(&rows), "load-types")
        .await
        .unwrap();
    let sorted = |mut v: Vec<serde_json::Map<String, serde_json::Value>>| {
        v.sort_by_key(|r| r["key"].as_str().unwrap_or_default().to_owned());
        v
    };
    let by_rest = sorted(rest.rows(&table).try_collect().await.unwrap());
    let by_grpc = sorted(grpc.rows(&table).try_collect().await.unwrap());
    assert_eq!(by_rest.len(), 4000);
    assert_eq!(by_grpc.len(), 4000);
    // bqemulator's tabledata.list pads NUMERIC to its scale ("1.250000000");
    // BigQuery, and the Avro decimal read, trim it ("1.25").
    let trimmed = |v: &serde_json::Value| match v.as_str() {
        Some(s) if s.contains('.') => json!(s.trim_end_matches('0').trim_end_matches('.')),
        _ => v.clone(),
    };
    for (a, b) in by_rest.iter().zip(&by_grpc) {
        let mut a = a.clone();
        if let Some(n) = a.get_mut("num") {
            *n = trimmed(n);
        }
        assert_eq!(&a, b);
    }
    assert_eq!(by_grpc[1]["num"], "1.25");
    let k1 = by_grpc.iter().find(|r| r["key"] == "k1").unwrap();
    assert_eq!(k1["request"], request(1), "a JSON column reads as its JSON");
    assert_eq!(k1["at"], "2026-12-01T10:00:01.500Z");
    assert_eq!(k1["rec"]["j"], json!({"x": [1, "y\nz"]}));
    // An empty table: no rows, no error.
    let empty = uri("bq://p.types.empty");
    rest.create_table(&empty, &schema, None).await.unwrap();
    let none: Vec<_> = grpc.rows(&empty).try_collect().await.unwrap();
    assert!(none.is_empty());
    // A missing one: the same clear error.
    let err = grpc
        .rows(&uri("bq://p.types.nope"))
        .try_collect::<Vec<_>>()
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("no table bq://p.types.nope"),
        "{err}"
    );
}

#[tokio::test]
async fn tables_are_created_once_loads_never_double_rows_and_pages_are_followed() {
    let emu = BqEmulator::start("p");
    let bq = client(&emu);
    bq.create_dataset(&uri("bq://p.ds"), "us-central1")
        .await
        .unwrap();
    // Create-only: the second create of a table says it exists.
    let t = uri("bq://p.ds.claim_r0_p00000");
    assert!(bq
        .create_table(&t, &input_schema(), Some("{\"holder\":\"a\"}"))
        .await
        .unwrap()
        .is_some());
    assert!(bq
        .create_table(&t, &input_schema(), None)
        .await
        .unwrap()
        .is_none());
    assert_eq!(
        bq.table(&t).await.unwrap().unwrap().description(),
        Some("{\"holder\":\"a\"}")
    );
    bq.delete_table(&t).await.unwrap();
    assert!(bq.table(&t).await.unwrap().is_none());
    bq.delete_table(&t).await.unwrap(); // gone already: fine

    // 25,000 rows: three pages of tabledata.list.
    let big = uri("bq://p.ds.big");
    let lines: String = (0..25_000)
        .map(|i| format!("{{\"key\":\"k{i}\",\"request\":{{\"contents\":[]}}}}\n"))
        .collect();
    bq.load_ndjson(&big, &input_schema(), lines.clone(), "load-big-1")
        .await
        .unwrap();
    // A second load into a table that holds rows is refused: never doubled.
    let again = bq
        .load_ndjson(&big, &input_schema(), lines, "load-big-2")
        .await;
    assert!(matches!(again, Err(Error::BigQuery { .. })), "{again:?}");
    let rows: Vec<_> = bq.rows(&big).try_collect().await.unwrap();
    assert_eq!(rows.len(), 25_000);
    let mut keys: Vec<_> = rows
        .iter()
        .map(|r| r["key"].as_str().unwrap().to_owned())
        .collect();
    keys.sort();
    keys.dedup();
    assert_eq!(keys.len(), 25_000);
    assert_eq!(rows[0]["request"], json!({"contents": []}));
}

#[tokio::test]
async fn a_missing_table_or_dataset_is_none_or_a_clear_error() {
    let emu = BqEmulator::start("p");
    let bq = client(&emu);
    assert_eq!(
        bq.dataset_location(&uri("bq://p.nope")).await.unwrap(),
        None
    );
    assert!(bq.table(&uri("bq://p.nope.t")).await.unwrap().is_none());
    let err = bq
        .rows(&uri("bq://p.nope.t"))
        .try_collect::<Vec<_>>()
        .await
        .unwrap_err();
    assert!(err.to_string().contains("no table bq://p.nope.t"), "{err}");
    // A table URI is needed where a table is read.
    assert!(bq.table(&uri("bq://p.nope")).await.is_err());
}

#[tokio::test]
async fn the_emulator_reads_its_input_table_from_bigquery_and_writes_the_output_table_there() {
    let bqe = BqEmulator::start("p");
    let (_dir, _emu, client, bq) = emulator_on(&bqe).await;
    let n = 1_000;
    let prompts: Vec<_> = (0..n)
        .map(|i| {
            json!({"key": format!("k{i}"), "tenant": format!("t{}", i % 3),
                   "request": {"contents": [{"role": "user", "parts": [{"text": format!("Question {i}{}", crate::common::marker(i))}]}]}})
        })
        .collect();
    let schema = vec![
        Field::new("key", "STRING"),
        Field::new("tenant", "STRING"),
        Field::new("request", "JSON"),
    ];
    let input = uri("bq://p.batches.prompts");
    bq.load_ndjson(&input, &schema, ndjson(&prompts), "load-prompts")
        .await
        .unwrap();

    let spec = vertex_batch::JobSpec::new("gemini-2.0-flash-001")
        .input(input.to_string())
        .output("bq://p.batches");
    let job = client.create(&spec).await.unwrap();
    let job = client
        .wait(job.name(), &crate::common::fast_wait())
        .await
        .unwrap();
    let vertex_batch::job::OutputLocation::BigQuery { dataset, table } =
        job.output_location().expect("output_info is filled")
    else {
        panic!("not a BigQuery output: {job:?}")
    };
    assert_eq!(dataset, "bq://p.batches");
    assert!(table.starts_with("predictions_"), "{table}");
    let out = uri(&format!("{dataset}.{table}"));
    // The service's columns: the input's carried through, then its own.
    let info = bq.table(&out).await.unwrap().unwrap();
    let columns: Vec<_> = info.schema().iter().map(|f| f.name.as_str()).collect();
    assert_eq!(
        columns,
        [
            "key",
            "tenant",
            "request",
            "response",
            "status",
            "processed_time"
        ]
    );
    assert_eq!(info.rows(), n as u64);

    let (rows, errors, totals) = ResultReader::new()
        .output_bigquery(&bq, out)
        .inputs(Inputs::bigquery(&bq, [input]))
        .read()
        .await
        .unwrap()
        .collect_all()
        .await;
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(rows.len(), n);
    assert_eq!(totals.missing, 0);
    assert_eq!(
        totals.blocked,
        (n / 10) as u64,
        "every 10th prompt is blocked"
    );
    assert_eq!(totals.succeeded + totals.blocked, n as u64);
    let k1 = rows.iter().find(|r| r.key() == Some("k1")).unwrap();
    assert!(k1.text().is_some_and(|t| !t.is_empty()), "{k1:?}");
}

/// An emulator serving `bq://` from `bqe`, and a client for it.
async fn emulator_on(
    bqe: &BqEmulator,
) -> (
    tempfile::TempDir,
    vertex_batch::emulator::Emulator,
    vertex_batch::Client,
    BigQuery,
) {
    let bq = client(bqe);
    bq.create_dataset(&uri("bq://p.batches"), "us-central1")
        .await
        .unwrap();
    let dir = crate::common::temp();
    let emu = vertex_batch::emulator::Emulator::builder(dir.path())
        .bigquery(bq.clone())
        .start()
        .await
        .unwrap();
    let client = emu.client("p", "us-central1").unwrap();
    (dir, emu, client, bq)
}

fn batch_spec(key: &str) -> vertex_batch::batch::BatchSpec {
    vertex_batch::batch::BatchSpec::new(
        vertex_batch::JobSpec::new("gemini-2.0-flash-001"),
        "bq://p.batches",
    )
    .request_key(key)
    .limits(vertex_batch::format::InputLimits::default().max_rows_per_file(400))
    .watch_options(
        vertex_batch::client::WatchManyOptions::new()
            .policy(vertex_batch::policy::PollPolicy::fixed(
                std::time::Duration::from_millis(10),
            ))
            .gets_per_second(1000.0),
    )
}

fn batch_prompts(n: usize) -> Vec<(String, vertex_batch::format::Prompt)> {
    (0..n)
        .map(|i| {
            (
                format!("k{i}"),
                vertex_batch::format::Prompt::text(format!(
                    "Question {i}{}",
                    crate::common::marker(i)
                )),
            )
        })
        .collect()
}

fn creates(emu: &vertex_batch::emulator::Emulator) -> u64 {
    emu.rpc_counts()
        .get("CreateBatchPredictionJob")
        .copied()
        .unwrap_or(0)
}

#[tokio::test]
async fn a_batch_staged_in_bigquery_makes_the_whole_trip_retries_and_resumes() {
    let bqe = BqEmulator::start("p");
    let (_dir, emu, client, bq) = emulator_on(&bqe).await;
    emu.knobs().fail_rows_containing(Some("flaky".into()));
    let n = 1_000;
    let (mut batch, results) = client
        .run_batch(&bq, &batch_spec("bq-trip-1"), batch_prompts(n))
        .await
        .unwrap();
    // 1,000 prompts in parts of 400: three input tables, three jobs.
    assert_eq!(batch.input_tables().len(), 3);
    assert!(batch.input_files().is_empty());
    assert_eq!(batch.jobs().len(), 3);
    for table in batch.input_tables() {
        let info = bq.table(&table).await.unwrap().unwrap();
        let columns: Vec<_> = info
            .schema()
            .iter()
            .map(|f| (f.name.as_str(), f.kind.as_str()))
            .collect();
        assert_eq!(columns, [("key", "STRING"), ("request", "JSON")]);
    }
    let (rows, errors, totals) = results.collect_all().await;
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(rows.len(), n);
    assert_eq!(
        (
            totals.succeeded,
            totals.failed,
            totals.blocked,
            totals.missing
        ),
        (800, 100, 100, 0)
    );
    // The failed rows go again, into a new table, as a second round.
    emu.knobs().fail_rows_containing(None);
    assert_eq!(batch.retry_failed().await.unwrap(), 100);
    assert_eq!(batch.rounds(), 2);
    batch.wait().await.unwrap();
    let (rows, errors, totals) = batch.results().await.unwrap().collect_all().await;
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(rows.len(), n);
    assert_eq!(
        (totals.succeeded, totals.failed, totals.blocked),
        (900, 0, 100)
    );
    let jobs_made = creates(&emu);
    // A re-run with the key resumes: no new table, no new job.
    let again = client
        .start_batch(&bq, &batch_spec("bq-trip-1"), batch_prompts(n))
        .await
        .unwrap();
    assert_eq!(again.rounds(), 2);
    assert_eq!(creates(&emu), jobs_made);
    assert_eq!(
        again
            .jobs()
            .iter()
            .map(|j| j.name().to_owned())
            .collect::<Vec<_>>(),
        batch
            .jobs()
            .iter()
            .map(|j| j.name().to_owned())
            .collect::<Vec<_>>()
    );
    // Other prompts under the key are refused before any job.
    let err = client
        .start_batch(&bq, &batch_spec("bq-trip-1"), batch_prompts(10))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("other prompts"), "{err}");
}

#[tokio::test]
async fn a_bigquery_staging_dataset_elsewhere_or_missing_is_refused_before_anything_is_staged() {
    let bqe = BqEmulator::start("p");
    let (_dir, emu, client, bq) = emulator_on(&bqe).await;
    bq.create_dataset(&uri("bq://p.in_us"), "US").await.unwrap();
    let spec = |staging: &str| {
        vertex_batch::batch::BatchSpec::new(
            vertex_batch::JobSpec::new("gemini-2.0-flash-001"),
            staging,
        )
        .request_key("where-1")
    };
    let err = client
        .start_batch(&bq, &spec("bq://p.in_us"), batch_prompts(5))
        .await
        .unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("bq://p.in_us is in US") && msg.contains("us-central1"),
        "{msg}"
    );
    let err = client
        .start_batch(&bq, &spec("bq://p.nowhere"), batch_prompts(5))
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("no dataset bq://p.nowhere"),
        "{err}"
    );
    // A Cloud Storage client for a bq:// staging, and the other way round.
    let storage = vertex_batch::storage::Storage::local(crate::common::temp().path());
    let err = client
        .start_batch(&storage, &spec("bq://p.batches"), batch_prompts(5))
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("start the batch with a BigQuery client"),
        "{err}"
    );
    assert_eq!(creates(&emu), 0);
}

/// A client for `emu` whose load writers send `chunk`-byte chunks, with
/// the dataset `bq://p.ds` made.
async fn loading(emu: &BqEmulator, chunk: usize) -> BigQuery {
    let bq = BigQuery::builder()
        .ignore_env()
        .emulator_host(emu.host())
        .chunk_size(chunk)
        .build()
        .unwrap();
    bq.create_dataset(&uri("bq://p.ds"), "us-central1")
        .await
        .unwrap();
    bq
}

/// 150,000 rows streamed through a load writer with 256 KiB chunks (some
/// 25 chunks, rows split across them): every row arrives exactly once. A
/// second streamed load into the table, which now holds rows, is refused
/// (`WRITE_EMPTY`), leaving the rows as they were.
#[tokio::test]
async fn a_streamed_load_of_many_chunks_arrives_whole_and_never_doubles() {
    let emu = BqEmulator::start("p");
    let bq = loading(&emu, 256 << 10).await;
    let table = uri("bq://p.ds.streamed");
    let n = 150_000;
    let line = |i: usize| format!("{{\"key\":\"k{i}\",\"request\":{{\"contents\":[]}}}}\n");
    let mut w = bq
        .load_writer(&table, &input_schema(), "load-streamed-1")
        .await
        .unwrap();
    let mut batch = String::new();
    for i in 0..n {
        batch.push_str(&line(i));
        // Pieces of a few rows, cut mid-row, as a stream would come.
        if batch.len() > 1000 {
            let cut = batch.len() - 7;
            w.write(&batch.as_bytes()[..cut]).await.unwrap();
            batch.drain(..cut);
        }
    }
    w.write(batch.as_bytes()).await.unwrap();
    let written = w.len();
    assert!(written > 20 * (256 << 10), "{written} bytes");
    assert!(w.chunks_sent() >= 20, "{} chunks", w.chunks_sent());
    let job = w.finish().await.unwrap();
    assert_eq!(job.rows(), n as u64);

    let rows: Vec<_> = bq.rows(&table).try_collect().await.unwrap();
    assert_eq!(rows.len(), n);
    let distinct: std::collections::HashSet<&str> =
        rows.iter().filter_map(|r| r["key"].as_str()).collect();
    assert_eq!(distinct.len(), n, "every key exactly once");
    assert_eq!(rows[0]["request"], json!({"contents": []}));

    let mut again = bq
        .load_writer(&table, &input_schema(), "load-streamed-2")
        .await
        .unwrap();
    again.write(line(0).as_bytes()).await.unwrap();
    let refused = again.finish().await;
    assert!(
        matches!(refused, Err(Error::BigQuery { .. })),
        "{refused:?}"
    );
    assert_eq!(bq.table(&table).await.unwrap().unwrap().rows(), n as u64);
}

/// A streamed load with no rows creates the table, empty.
#[tokio::test]
async fn an_empty_streamed_load_creates_an_empty_table() {
    let emu = BqEmulator::start("p");
    let bq = loading(&emu, 256 << 10).await;
    let table = uri("bq://p.ds.empty");
    let w = bq
        .load_writer(&table, &input_schema(), "load-empty-1")
        .await
        .unwrap();
    assert!(w.is_empty());
    assert_eq!(w.finish().await.unwrap().rows(), 0);
    let info = bq.table(&table).await.unwrap().unwrap();
    assert_eq!((info.rows(), info.schema().len()), (0, 2));
}

/// Rows that fill exactly two chunks: the last piece still carries rows
/// (bqemulator, like a status query, would leave an empty `bytes */TOTAL`
/// waiting), and the load completes with every row.
#[tokio::test]
async fn a_streamed_load_of_exactly_whole_chunks_completes() {
    let emu = BqEmulator::start("p");
    let chunk = 256 << 10;
    let bq = loading(&emu, chunk).await;
    let table = uri("bq://p.ds.whole");
    let mut w = bq
        .load_writer(&table, &input_schema(), "load-whole-1")
        .await
        .unwrap();
    // 64-byte rows, 8,192 of them: 2 × 256 KiB.
    let rows = 2 * chunk / 64;
    for i in 0..rows {
        let row = format!("{{\"key\":\"k{i:05}\",\"request\":{{\"contents\":[]}}}}");
        w.write(format!("{row:<63}\n").as_bytes()).await.unwrap();
    }
    assert_eq!(w.len(), 2 * chunk as u64);
    assert_eq!(w.chunks_sent(), 1, "the second chunk waits for finish");
    assert_eq!(w.finish().await.unwrap().rows(), rows as u64);
    assert_eq!(bq.table(&table).await.unwrap().unwrap().rows(), rows as u64);
}

/// A Storage Read API server that breaks a stream once: what no emulator
/// does on demand. It serves `rows` rows of one `key` column in blocks of
/// `block`, breaks the first `ReadRows` after its first block with
/// `UNAVAILABLE`, and records the offset of every `ReadRows`.
mod broken_read {
    use std::sync::{Arc, Mutex};

    use vertex_batch::proto::google::cloud::bigquery::storage::v1::{
        big_query_read_server::{BigQueryRead, BigQueryReadServer},
        read_rows_response, read_session, AvroRows, AvroSchema, CreateReadSessionRequest,
        ReadRowsRequest, ReadRowsResponse, ReadSession, ReadStream,
    };

    pub struct Server {
        pub rows: i64,
        pub block: i64,
        pub offsets: Arc<Mutex<Vec<i64>>>,
        /// Answers every `CreateReadSession` with NOT_FOUND.
        pub not_found: bool,
    }

    fn zigzag(v: i64, out: &mut Vec<u8>) {
        let mut n = ((v << 1) ^ (v >> 63)) as u64;
        loop {
            let b = (n & 0x7f) as u8;
            n >>= 7;
            if n == 0 {
                out.push(b);
                return;
            }
            out.push(b | 0x80);
        }
    }

    fn block(from: i64, to: i64) -> ReadRowsResponse {
        let mut bytes = Vec::new();
        for i in from..to {
            let key = format!("k{i}");
            zigzag(1, &mut bytes); // the union's string branch
            zigzag(key.len() as i64, &mut bytes);
            bytes.extend_from_slice(key.as_bytes());
        }
        ReadRowsResponse {
            row_count: to - from,
            rows: Some(read_rows_response::Rows::AvroRows(AvroRows {
                serialized_binary_rows: bytes.into(),
                ..Default::default()
            })),
            ..Default::default()
        }
    }

    type Rows = std::pin::Pin<
        Box<dyn futures::Stream<Item = Result<ReadRowsResponse, tonic::Status>> + Send>,
    >;

    #[tonic::async_trait]
    impl BigQueryRead for Server {
        async fn create_read_session(
            &self,
            req: tonic::Request<CreateReadSessionRequest>,
        ) -> Result<tonic::Response<ReadSession>, tonic::Status> {
            let table = req.into_inner().read_session.unwrap_or_default().table;
            if self.not_found {
                return Err(tonic::Status::not_found(format!(
                    "Table read failed: {table}"
                )));
            }
            Ok(tonic::Response::new(ReadSession {
                name: "projects/p/locations/us/sessions/s".into(),
                table,
                schema: Some(read_session::Schema::AvroSchema(AvroSchema {
                    schema: r#"{"type":"record","name":"Root","fields":[{"name":"key","type":["null","string"]}]}"#.into(),
                })),
                streams: vec![ReadStream {
                    name: "projects/p/locations/us/sessions/s/streams/0".into(),
                }],
                ..Default::default()
            }))
        }

        async fn read_rows(
            &self,
            req: tonic::Request<ReadRowsRequest>,
        ) -> Result<tonic::Response<Rows>, tonic::Status> {
            let offset = req.into_inner().offset;
            let first = {
                let mut seen = self.offsets.lock().unwrap();
                seen.push(offset);
                seen.len() == 1
            };
            let mut out = Vec::new();
            let mut at = offset;
            while at < self.rows {
                let to = (at + self.block).min(self.rows);
                out.push(Ok(block(at, to)));
                at = to;
                if first {
                    out.push(Err(tonic::Status::unavailable("the stream broke")));
                    break;
                }
            }
            Ok(tonic::Response::new(Box::pin(futures::stream::iter(out))))
        }
    }

    /// Serves on a free loopback port; `http://127.0.0.1:PORT`.
    pub async fn start(server: Server) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(BigQueryReadServer::new(server))
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );
        format!("http://{addr}")
    }
}

#[tokio::test]
async fn a_broken_read_stream_is_opened_again_at_its_row_and_no_row_is_lost_or_doubled() {
    let emu = BqEmulator::start("p");
    let rest = client(&emu);
    rest.create_dataset(&uri("bq://p.d"), "us-central1")
        .await
        .unwrap();
    let table = uri("bq://p.d.t");
    rest.create_table(&table, &[Field::new("key", "STRING")], None)
        .await
        .unwrap();
    let offsets = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let grpc = broken_read::start(broken_read::Server {
        rows: 1000,
        block: 300,
        offsets: offsets.clone(),
        not_found: false,
    })
    .await;
    let bq = BigQuery::builder()
        .ignore_env()
        .emulator_host(emu.host())
        .storage_read_api(&grpc)
        .retry_policy(vertex_batch::policy::RetryPolicy::default())
        .build()
        .unwrap();
    let rows: Vec<_> = bq.rows(&table).try_collect().await.unwrap();
    let keys: Vec<_> = rows
        .iter()
        .map(|r| r["key"].as_str().unwrap().to_owned())
        .collect();
    let expected: Vec<_> = (0..1000).map(|i| format!("k{i}")).collect();
    assert_eq!(keys, expected, "every row once, in the stream's order");
    assert_eq!(
        *offsets.lock().unwrap(),
        [0, 300],
        "opened again at the row it reached"
    );
    // With no retries, the break is an error naming the stream and row.
    offsets.lock().unwrap().clear();
    let strict = BigQuery::builder()
        .ignore_env()
        .emulator_host(emu.host())
        .storage_read_api(&grpc)
        .retry_policy(vertex_batch::policy::RetryPolicy::none())
        .build()
        .unwrap();
    let err = strict
        .rows(&table)
        .try_collect::<Vec<_>>()
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("streams/0") && text.contains("row 300"),
        "{text}"
    );
}

#[tokio::test]
async fn a_storage_read_api_that_refuses_the_caller_falls_back_to_tabledata_list() {
    let emu = BqEmulator::start("p");
    let rest = client(&emu);
    rest.create_dataset(&uri("bq://p.d"), "us-central1")
        .await
        .unwrap();
    let table = uri("bq://p.d.t");
    let lines: String = (0..50).map(|i| format!("{{\"key\":\"k{i}\"}}\n")).collect();
    rest.load_ndjson(&table, &[Field::new("key", "STRING")], lines, "load-1")
        .await
        .unwrap();
    // A real gRPC server that does not serve BigQueryRead (the crate's own
    // JobService emulator): UNIMPLEMENTED, as a service the caller may not
    // use answers.
    let dir = crate::common::temp();
    let jobs = vertex_batch::emulator::Emulator::builder(dir.path())
        .start()
        .await
        .unwrap();
    let bq = BigQuery::builder()
        .ignore_env()
        .emulator_host(emu.host())
        .storage_read_api(format!("http://{}", jobs.addr()))
        .build()
        .unwrap();
    let rows: Vec<_> = bq.rows(&table).try_collect().await.unwrap();
    assert_eq!(rows.len(), 50);
}

#[tokio::test]
async fn a_table_the_storage_read_api_does_not_find_is_read_through_tabledata_list() {
    let emu = BqEmulator::start("p");
    let rest = client(&emu);
    rest.create_dataset(&uri("bq://p.d"), "us-central1")
        .await
        .unwrap();
    let table = uri("bq://p.d.t");
    let lines: String = (0..50).map(|i| format!("{{\"key\":\"k{i}\"}}\n")).collect();
    rest.load_ndjson(&table, &[Field::new("key", "STRING")], lines, "load-1")
        .await
        .unwrap();
    // A Read API that answers NOT_FOUND for a table tables.get finds (as
    // bqemulator does when its engine fails a read beside a load).
    let grpc = broken_read::start(broken_read::Server {
        rows: 0,
        block: 1,
        offsets: Default::default(),
        not_found: true,
    })
    .await;
    let bq = BigQuery::builder()
        .ignore_env()
        .emulator_host(emu.host())
        .storage_read_api(&grpc)
        .build()
        .unwrap();
    let rows: Vec<_> = bq.rows(&table).try_collect().await.unwrap();
    let mut keys: Vec<_> = rows.iter().map(|r| r["key"].as_str().unwrap()).collect();
    keys.sort_unstable();
    let mut want: Vec<_> = (0..50).map(|i| format!("k{i}")).collect();
    want.sort_unstable();
    assert_eq!(keys, want, "every row, read through tabledata.list");
    // A table that is not there still says so.
    let err = bq
        .rows(&uri("bq://p.d.nope"))
        .try_collect::<Vec<_>>()
        .await
        .unwrap_err();
    assert!(err.to_string().contains("no table bq://p.d.nope"), "{err}");
}

/// Claude, open models and text embeddings staged in BigQuery: each
/// family's input columns, the emulator's reserved output columns, results
/// matched back and a failed row retried in its family's columns.
#[tokio::test]
async fn the_families_bigquery_runs_stage_their_columns_and_read_back_matched() {
    use vertex_batch::format::{BatchRequest, Chat, Embed, Outcome};
    let bqe = BqEmulator::start("p");
    let (_dir, emu, client, bq) = emulator_on(&bqe).await;
    let cases: [(&str, &[&str]); 3] = [
        ("claude-sonnet-4-5", &["custom_id", "request"]),
        (
            "llama-3.3-70b-instruct-maas",
            &["custom_id", "method", "url", "body"],
        ),
        (
            "text-embedding-005",
            &["key", "content", "task_type", "title"],
        ),
    ];
    for (i, (model, columns)) in cases.into_iter().enumerate() {
        emu.knobs().fail_rows_containing(Some("flaky".into()));
        let prompts: Vec<(String, BatchRequest)> = (0..12)
            .map(|n| {
                let text = format!("Text {n}{}", if n % 4 == 1 { " flaky" } else { "" });
                let req = if i == 2 {
                    Embed::text(text).task_type("RETRIEVAL_DOCUMENT").into()
                } else {
                    Chat::user(text).max_tokens(50).into()
                };
                (format!("r{n}"), req)
            })
            .collect();
        let spec = vertex_batch::batch::BatchSpec::new(
            vertex_batch::JobSpec::new(model),
            "bq://p.batches",
        )
        .request_key(format!("bq-family-{i}"))
        .watch_options(
            vertex_batch::client::WatchManyOptions::new()
                .policy(vertex_batch::policy::PollPolicy::fixed(
                    std::time::Duration::from_millis(10),
                ))
                .gets_per_second(1000.0),
        );
        let (mut batch, results) = client.run_batch(&bq, &spec, prompts).await.unwrap();
        let table = batch.input_tables().remove(0);
        let info = bq.table(&table).await.unwrap().unwrap();
        let names: Vec<&str> = info.schema().iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, columns, "{model}");
        let (rows, errors, totals) = results.collect_all().await;
        assert!(errors.is_empty(), "{model}: {errors:?}");
        assert_eq!(
            (rows.len(), totals.succeeded, totals.failed),
            (12, 9, 3),
            "{model}"
        );
        emu.knobs().fail_rows_containing(None);
        assert_eq!(batch.retry_failed().await.unwrap(), 3, "{model}");
        batch.wait().await.unwrap();
        let (rows, errors, totals) = batch.results().await.unwrap().collect_all().await;
        assert!(errors.is_empty(), "{model}: {errors:?}");
        assert_eq!((rows.len(), totals.succeeded), (12, 12), "{model}");
        for r in &rows {
            let Outcome::Succeeded(a) = r.outcome() else {
                panic!("{model}: {r:?}")
            };
            match i {
                2 => assert_eq!(a.embedding().unwrap().dimensions(), 768),
                _ => assert!(
                    a.text().starts_with("Emulated answer to: Text"),
                    "{model}: {r:?}"
                ),
            }
        }
    }
}

/// The emulator's output table fills while the job runs (each exported
/// chunk appended with a load job of its own), and a job a restart
/// interrupted starts its table again: at the end it holds every row
/// exactly once.
#[tokio::test]
async fn the_emulators_output_table_fills_as_the_job_runs_and_holds_each_row_once_after_a_restart()
{
    use std::time::Duration;
    use vertex_batch::{emulator::Emulator, JobState};
    let bqe = BqEmulator::start("p");
    let bq = client(&bqe);
    bq.create_dataset(&uri("bq://p.batches"), "us-central1")
        .await
        .unwrap();
    let n = 320;
    let prompts: Vec<_> = (0..n)
        .map(|i| json!({"key": format!("k{i}"), "request": request(i)}))
        .collect();
    let input = uri("bq://p.batches.prompts");
    bq.load_ndjson(&input, &input_schema(), ndjson(&prompts), "load-prompts")
        .await
        .unwrap();
    let dir = crate::common::temp();
    let start = |every_rows: u64| {
        let bq = bq.clone();
        let dir = dir.path().to_path_buf();
        async move {
            let emu = Emulator::builder(dir).bigquery(bq).start().await.unwrap();
            emu.knobs().set_export_every_rows(every_rows);
            emu.knobs().set_export_every(Duration::ZERO);
            emu
        }
    };
    let emu = start(10).await;
    // 320 rows over 100 s: it runs long after its first chunks.
    emu.knobs().set_job_duration(Some(Duration::from_secs(100)));
    let client = emu.client("p", "us-central1").unwrap();
    let spec = vertex_batch::JobSpec::new("gemini-2.0-flash-001")
        .input(input.to_string())
        .output("bq://p.batches");
    let job = client.create(&spec).await.unwrap();
    let running = crate::common::poll_until(&client, job.name(), "RUNNING", |j| {
        j.state() == JobState::Running
    })
    .await;
    let Some(vertex_batch::job::OutputLocation::BigQuery { dataset, table }) =
        running.output_location()
    else {
        panic!("output_info is set once the job runs: {running:?}")
    };
    let out = uri(&format!("{dataset}.{table}"));
    let mut filled = 0;
    for _ in 0..1500 {
        filled = bq.table(&out).await.unwrap().map_or(0, |t| t.rows());
        if filled >= 20 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(filled >= 20, "the table never filled: {filled} rows");
    assert_eq!(filled % 10, 0, "whole chunks of 10: {filled}");
    let now = client.get(job.name()).await.unwrap();
    assert_eq!(
        now.state(),
        JobState::Running,
        "rows are in the table before the end"
    );

    // A restart: the job runs again, unpaced, and its table starts again.
    emu.shutdown().await;
    let emu = start(50).await;
    let client = emu.client("p", "us-central1").unwrap();
    let done = client
        .wait(job.name(), &crate::common::fast_wait())
        .await
        .unwrap();
    assert_eq!(done.state(), JobState::Succeeded);
    assert_eq!(
        done.output_location(),
        running.output_location(),
        "the re-run keeps the table its first run named"
    );
    assert_eq!(bq.table(&out).await.unwrap().unwrap().rows(), n as u64);
    let (rows, errors, totals) = ResultReader::new()
        .output_bigquery(&bq, out)
        .inputs(Inputs::bigquery(&bq, [input]))
        .read()
        .await
        .unwrap()
        .collect_all()
        .await;
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(rows.len(), n);
    assert_eq!(
        (totals.duplicates, totals.missing, totals.unexpected),
        (0, 0, 0),
        "every row exactly once"
    );
}
