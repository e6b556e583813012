//! The `vertex-batch` command line as a person (or a script) runs it: the
//! binary against an emulator in this process and, for the data plane,
//! fake-gcs-server. Every run is checked for panics and, its output not
//! being a terminal, for escape codes.

use std::{path::Path, process::Stdio};

use crate::common::gcs::FakeGcs;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use vertex_batch::{emulator::Emulator, JobState};

const BIN: &str = env!("CARGO_BIN_EXE_vertex-batch");

/// The variables the tool reads, cleared so the host's never leak in.
const ENV: [&str; 12] = [
    "GOOGLE_CLOUD_PROJECT",
    "GOOGLE_CLOUD_LOCATION",
    "VERTEX_AI_EMULATOR_HOST",
    "STORAGE_EMULATOR_HOST",
    "BIGQUERY_EMULATOR_HOST",
    "BIGQUERY_STORAGE_EMULATOR_HOST",
    "GOOGLE_APPLICATION_CREDENTIALS",
    "RUST_LOG",
    "HTTPS_PROXY",
    "https_proxy",
    "NO_PROXY",
    "no_proxy",
];

struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

/// A command with a clean environment plus `env`.
fn cli(env: &[(&str, &str)], args: &[&str]) -> tokio::process::Command {
    let mut c = tokio::process::Command::new(BIN);
    for k in ENV {
        c.env_remove(k);
    }
    c.envs(env.iter().copied()).args(args).kill_on_drop(true);
    c
}

async fn run(env: &[(&str, &str)], args: &[&str]) -> Out {
    let o = cli(env, args).output().await.expect("run vertex-batch");
    let out = Out {
        code: o.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
    };
    assert!(!out.stderr.contains("panicked"), "{args:?}: {}", out.stderr);
    assert!(
        !out.stderr.contains('\u{1b}') && !out.stdout.contains('\u{1b}'),
        "{args:?}: escape codes off a terminal: {:?}",
        out.stderr
    );
    out
}

fn lines(path: &Path) -> Vec<Value> {
    crate::common::read_jsonl(path)
}

/// An emulator and the environment pointing the tool at it: with its
/// `gs://` data in its own directory ([`Setup::local`]), or in
/// fake-gcs-server with a bucket `cli-bkt` ([`Setup::full`]).
struct Setup {
    gcs: Option<FakeGcs>,
    emu: Emulator,
    host: String,
    _dir: tempfile::TempDir,
}

impl Setup {
    async fn local() -> Setup {
        Self::start(None).await
    }

    async fn full() -> Setup {
        let gcs = FakeGcs::start();
        gcs.buckets(&["cli-bkt"]).await;
        Self::start(Some(gcs)).await
    }

    async fn start(gcs: Option<FakeGcs>) -> Setup {
        let dir = crate::common::temp();
        let mut builder = Emulator::builder(dir.path());
        if let Some(g) = &gcs {
            builder = builder.gcs_storage(g.storage());
        }
        let emu = builder.start().await.unwrap();
        let host = emu.host();
        Setup {
            gcs,
            emu,
            host,
            _dir: dir,
        }
    }

    fn env(&self) -> Vec<(&str, &str)> {
        let mut env = vec![
            ("VERTEX_AI_EMULATOR_HOST", self.host.as_str()),
            ("GOOGLE_CLOUD_PROJECT", "cli-project"),
        ];
        if let Some(g) = &self.gcs {
            env.push(("STORAGE_EMULATOR_HOST", g.url.as_str()));
        }
        env
    }

    fn gcs_url(&self) -> &str {
        self.gcs.as_ref().map_or("", |g| g.url.as_str())
    }
}

/// `run --model gemini-2.0-flash-001 --input INPUT --staging STAGING
/// --output OUTPUT`, then `extra`.
fn run_args<'a>(
    input: &'a Path,
    staging: &'a str,
    output: &'a str,
    extra: &[&'a str],
) -> Vec<&'a str> {
    let mut a = vec![
        "run",
        "--model",
        "gemini-2.0-flash-001",
        "--input",
        input.to_str().unwrap(),
        "--staging",
        staging,
        "--output",
        output,
    ];
    a.extend_from_slice(extra);
    a
}

fn prompt(key: &str, text: &str) -> String {
    serde_json::json!({
        "key": key,
        "request": {"contents": [{"role": "user", "parts": [{"text": text}]}]}
    })
    .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_writes_exactly_one_matched_line_per_prompt() {
    let f = Setup::full().await;
    f.emu.knobs().fail_rows_containing(Some("flaky".into()));
    f.emu.knobs().set_duplicate_every(7);
    f.emu.knobs().set_shuffle_output(true);
    let dir = crate::common::temp();
    let input = dir.path().join("prompts.jsonl");
    let prompts: Vec<String> = (0..40)
        .map(|i| {
            let extra = match i % 10 {
                0 => " [blocked]",
                5 => " flaky",
                _ => "",
            };
            prompt(&format!("q/{i} ü"), &format!("Question {i}{extra}"))
        })
        .collect();
    crate::common::write_lines(&input, &prompts);
    let results = dir.path().join("results.jsonl");
    let out = run(
        &f.env(),
        &run_args(&input, "gs://cli-bkt/runs", results.to_str().unwrap(), &[]),
    )
    .await;
    assert_eq!(
        out.code, 4,
        "rows failed and blocked: exit 4\n{}",
        out.stderr
    );
    assert!(
        out.stderr
            .contains("40 rows: 32 succeeded, 4 failed, 4 blocked, 0 missing"),
        "{}",
        out.stderr
    );
    let rows = lines(&results);
    assert_eq!(rows.len(), 40, "one line per key, duplicates dropped");
    let mut keys: Vec<&str> = rows.iter().map(|r| r["key"].as_str().unwrap()).collect();
    keys.sort();
    keys.dedup();
    assert_eq!(keys.len(), 40);
    for r in &rows {
        let key = r["key"].as_str().unwrap();
        let i: usize = key[2..key.len() - 3].parse().unwrap();
        match i % 10 {
            0 => {
                assert_eq!(r["outcome"], "blocked", "{r}");
                assert!(
                    r["response"]["promptFeedback"]["blockReason"].is_string(),
                    "{r}"
                );
                assert!(r.get("text").is_none(), "{r}");
            }
            5 => {
                assert_eq!(r["outcome"], "failed", "{r}");
                assert_eq!(r["error"]["code"], 429, "{r}");
                assert!(r["error"]["message"].as_str().unwrap().len() > 3, "{r}");
                assert!(r.get("response").is_none(), "{r}");
            }
            _ => {
                assert_eq!(r["outcome"], "succeeded", "{r}");
                assert_eq!(
                    r["text"],
                    format!("Emulated answer to: Question {i}"),
                    "{r}"
                );
                assert_eq!(r["finish_reason"], "STOP", "{r}");
                assert!(r["processed_time"].is_string(), "{r}");
                assert!(r["response"]["candidates"].is_array(), "{r}");
            }
        }
    }
    // No temporary file left beside the results.
    let left: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left.len(), 2, "{left:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_prompts_to_stdout_succeed_with_exit_zero_and_results_reads_a_gs_dir_alone() {
    let f = Setup::full().await;
    let dir = crate::common::temp();
    let input = dir.path().join("prompts.txt");
    std::fs::write(&input, "Why is the sky blue?\n\nName a river.\n").unwrap();
    let out = run(
        &f.env(),
        &run_args(
            &input,
            "gs://cli-bkt/text",
            "-",
            &["--request-key", "text-1"],
        ),
    )
    .await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    let rows: Vec<Value> = out
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let mut got: Vec<(String, String)> = rows
        .iter()
        .map(|r| {
            (
                r["key"].as_str().unwrap().to_owned(),
                r["text"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    got.sort();
    assert_eq!(
        got,
        [
            (
                "1".into(),
                "Emulated answer to: Why is the sky blue?".into()
            ),
            ("3".into(), "Emulated answer to: Name a river.".into()),
        ]
    );

    // The job's output directory, read with no JobService at all (no
    // project, no emulator host), joined to the prompts plus one that
    // never ran: it comes back missing, and the exit code says so.
    let client = f.emu.client("cli-project", "us-central1").unwrap();
    let job = crate::common::collect_jobs(&client).await.remove(0);
    let out_dir = job.output_location().unwrap().uri();
    std::fs::write(
        &input,
        "Why is the sky blue?\n\nName a river.\nA new one.\n",
    )
    .unwrap();
    let results = dir.path().join("again.jsonl");
    let out = run(
        &[("STORAGE_EMULATOR_HOST", f.gcs_url())],
        &[
            "results",
            &out_dir,
            "--input",
            input.to_str().unwrap(),
            "--output",
            results.to_str().unwrap(),
        ],
    )
    .await;
    assert_eq!(out.code, 4, "{}", out.stderr);
    let rows = lines(&results);
    assert_eq!(rows.len(), 3);
    let missing: Vec<&Value> = rows.iter().filter(|r| r["outcome"] == "missing").collect();
    assert_eq!(missing.len(), 1, "{rows:?}");
    assert_eq!(missing[0]["key"], "4");

    // By job id, without --input: only what the job wrote.
    let mut env = f.env();
    env.retain(|(k, _)| *k != "STORAGE_EMULATOR_HOST");
    env.push(("STORAGE_EMULATOR_HOST", f.gcs_url()));
    let out = run(&env, &["results", job.id(), "--output", "-"]).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.stdout.lines().count(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submit_status_watch_list_cancel_delete() {
    let l = Setup::local().await;
    let env = l.env();
    crate::common::write_gcs(
        &l.emu,
        "gs://in-bkt/prompts.jsonl",
        &[prompt("a", "Hello"), prompt("b", "Name a river.")],
    );
    let submit = [
        "submit",
        "--model",
        "gemini-2.0-flash-001",
        "--input",
        "gs://in-bkt/prompts.jsonl",
        "--output",
        "gs://in-bkt/out",
        "--display-name",
        "cli test",
        "--label",
        "team=search",
        "--json",
    ];
    let out = run(&env, &submit).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    let job: Value = serde_json::from_str(&out.stdout).unwrap();
    let name = job["name"].as_str().unwrap().to_owned();
    assert!(name.starts_with("projects/cli-project/locations/us-central1/batchPredictionJobs/"));
    assert_eq!(job["displayName"], "cli test");
    assert_eq!(job["labels"]["team"], "search");

    // watch: to the end, exit 0 for a clean success.
    let out = run(&env, &["watch", &name]).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stderr.contains("ended JOB_STATE_SUCCEEDED"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("2 rows succeeded, 0 failed"),
        "{}",
        out.stderr
    );

    // status, human and JSON (by id as well as by name).
    let id = name.rsplit('/').next().unwrap().to_owned();
    let out = run(&env, &["status", &id]).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stdout.contains("JOB_STATE_SUCCEEDED"), "{}", out.stdout);
    assert!(
        out.stdout.contains("2 succeeded, 0 failed"),
        "{}",
        out.stdout
    );
    let out = run(&env, &["status", &name, "--json"]).await;
    let st: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(st["state"], "JOB_STATE_SUCCEEDED");
    assert_eq!(st["completionStats"]["successfulCount"], "2");

    // A second job held QUEUED, to list and cancel.
    l.emu.knobs().hold_queued(true);
    let mut second = submit.to_vec();
    second[8] = "second";
    second[10] = "team=other";
    let out = run(&env, &second).await;
    let held: Value = serde_json::from_str(&out.stdout).unwrap();
    let held = held["name"].as_str().unwrap().to_owned();
    let held_id = held.rsplit('/').next().unwrap().to_owned();

    let out = run(&env, &["list", "--json"]).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    let all: Vec<Value> = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(all.len(), 2);
    let out = run(&env, &["list", "--state", "succeeded"]).await;
    let table: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(table.len(), 2, "a header and one job: {}", out.stdout);
    assert!(table[0].starts_with("ID") && table[0].contains("STATE"));
    assert!(
        table[1].starts_with(&id) && table[1].contains("SUCCEEDED") && table[1].contains("2/2")
    );
    let out = run(&env, &["list", "--label", "team=other", "--json"]).await;
    let other: Vec<Value> = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(other.len(), 1);
    assert_eq!(other[0]["name"], held.as_str());
    let out = run(&env, &["list", "--display-name", "nobody", "--json"]).await;
    assert_eq!(out.stdout.trim(), "[]");

    let out = run(&env, &["cancel", &held_id]).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    let client = l.emu.client("cli-project", "us-central1").unwrap();
    let state = client.get(&held).await.unwrap().state();
    assert!(
        matches!(state, JobState::Cancelling | JobState::Cancelled),
        "{state}"
    );
    let out = run(&env, &["watch", &held_id]).await;
    assert_eq!(out.code, 3, "a cancelled job: exit 3\n{}", out.stderr);

    let out = run(&env, &["delete", &id]).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    let err = client.get(&name).await.unwrap_err();
    assert_eq!(err.code(), Some(tonic::Code::NotFound));
    let out = run(&env, &["status", &id]).await;
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert_eq!(out.stderr.lines().count(), 1, "one line: {}", out.stderr);
    assert!(out.stderr.starts_with("error: "), "{}", out.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_local_prompts_file_submits_as_a_batch() {
    let f = Setup::full().await;
    let dir = crate::common::temp();
    let input = dir.path().join("p.jsonl");
    crate::common::write_lines(&input, &[prompt("x", "One"), prompt("y", "Two")]);
    let args = [
        "submit",
        "--model",
        "gemini-2.0-flash-001",
        "--input",
        input.to_str().unwrap(),
        "--staging",
        "gs://cli-bkt/sub",
        "--request-key",
        "sub-1",
        "--json",
    ];
    let out = run(&f.env(), &args).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    let v: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(v["request_key"], "sub-1");
    assert_eq!(v["rows"], 2);
    let jobs = v["jobs"].as_array().unwrap();
    assert_eq!(jobs.len(), 1);
    // The same key again reattaches: the same job, no second one.
    let out = run(&f.env(), &args).await;
    let again: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(again["jobs"][0]["name"], jobs[0]["name"]);
    assert_eq!(f.emu.rpc_counts().get("CreateBatchPredictionJob"), Some(&1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_command_submit_prints_next_picks_the_batch_up() {
    let f = Setup::full().await;
    f.emu.knobs().hold_queued(true);
    let dir = crate::common::temp();
    let input = dir.path().join("p.jsonl");
    crate::common::write_lines(
        &input,
        &[prompt("x", "One"), prompt("y", "Two"), prompt("z", "Three")],
    );
    // No display name and no key: both made up, and the printed command
    // still resumes this batch.
    let out = run(
        &f.env(),
        &[
            "submit",
            "--model",
            "gemini-2.0-flash-001",
            "--input",
            input.to_str().unwrap(),
            "--staging",
            "gs://cli-bkt/next",
            "--rows-per-job",
            "2",
            "--label",
            "team=search",
        ],
    )
    .await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.stdout.lines().count(), 2, "two jobs: {}", out.stdout);
    let next = out
        .stderr
        .lines()
        .skip_while(|l| !l.contains("follow it and write its results with:"))
        .nth(1)
        .unwrap_or_else(|| panic!("no follow-up command: {}", out.stderr))
        .trim()
        .to_owned();
    let words: Vec<&str> = next.split(' ').collect();
    assert_eq!(words[0], "vertex-batch", "{next}");
    assert!(
        !next.contains('\''),
        "plain words, no quoting needed here: {next}"
    );
    f.emu.knobs().hold_queued(false);
    let mut cmd = cli(&f.env(), &words[1..]);
    cmd.current_dir(dir.path());
    let o = cmd.output().await.unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(0), "{next}\n{stderr}");
    let key = words[words.iter().position(|w| *w == "--request-key").unwrap() + 1];
    let rows = lines(&dir.path().join(format!("results-{key}.jsonl")));
    assert_eq!(rows.len(), 3);
    assert!(rows.iter().all(|r| r["outcome"] == "succeeded"), "{rows:?}");
    assert_eq!(
        f.emu.rpc_counts().get("CreateBatchPredictionJob"),
        Some(&2),
        "the run resumed the submitted jobs"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_per_job_splits_a_batch_into_jobs_side_by_side() {
    let f = Setup::full().await;
    // The emulator refuses a job over 2 rows: only parts of at most 2 pass.
    f.emu.knobs().set_max_requests_per_job(2);
    let dir = crate::common::temp();
    let input = dir.path().join("p.jsonl");
    let prompts: Vec<String> = (0..5)
        .map(|i| prompt(&format!("k{i}"), &format!("Question {i}")))
        .collect();
    crate::common::write_lines(&input, &prompts);
    let results = dir.path().join("r.jsonl");
    let out = run(
        &f.env(),
        &run_args(
            &input,
            "gs://cli-bkt/split",
            results.to_str().unwrap(),
            &["--rows-per-job", "2"],
        ),
    )
    .await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stderr.contains("5 prompts in 3 job(s)"),
        "{}",
        out.stderr
    );
    assert_eq!(lines(&results).len(), 5);
    assert_eq!(f.emu.rpc_counts().get("CreateBatchPredictionJob"), Some(&3));
    // Out of range: refused before anything runs.
    for bad in ["0", "200001", "x"] {
        let out = run(
            &f.env(),
            &run_args(
                &input,
                "gs://cli-bkt/split2",
                results.to_str().unwrap(),
                &["--rows-per-job", bad],
            ),
        )
        .await;
        assert_eq!(out.code, 2, "{bad}: {}", out.stderr);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_usage_and_bad_files_get_one_clear_line_and_exit_2() {
    let dir = crate::common::temp();
    let p = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path.to_str().unwrap().to_owned()
    };
    let bad_line = p(
        "bad.jsonl",
        &format!("{}\n{}\nnot json\n", prompt("a", "x"), prompt("b", "y")),
    );
    let dup = p(
        "dup.jsonl",
        &format!("{}\n{}\n", prompt("a", "x"), prompt("a", "y")),
    );
    let empty = p("empty.txt", "\n\n");
    let good = p("good.jsonl", &format!("{}\n", prompt("a", "x")));
    let project = [("GOOGLE_CLOUD_PROJECT", "p")];
    let run_args = |input: &str| {
        vec![
            "run".to_owned(),
            "--model".into(),
            "m".into(),
            "--input".into(),
            input.to_owned(),
            "--staging".into(),
            "gs://bkt/x".into(),
            "--output".into(),
            dir.path().join("r.jsonl").to_str().unwrap().to_owned(),
        ]
    };
    type Case<'a> = (Vec<String>, &'a [(&'a str, &'a str)], &'a str);
    let cases: Vec<Case> = vec![
        (
            vec!["run".into(), "--bogus".into()],
            &project,
            "unexpected argument",
        ),
        (vec!["status".into()], &project, "required"),
        (
            run_args(&bad_line),
            &project,
            "bad.jsonl: line 3: not a JSON object",
        ),
        (
            run_args(&dup),
            &project,
            "dup.jsonl: line 2: duplicate key \"a\"",
        ),
        (run_args(&empty), &project, "holds no prompts"),
        (
            run_args(&dir.path().join("nope.jsonl").to_string_lossy()),
            &project,
            "cannot read the prompts file",
        ),
        (run_args(&good), &[], "no project: pass --project"),
        (
            {
                let mut a = run_args(&good);
                a[6] = "s3://bkt/x".into();
                a
            },
            &project,
            "--staging",
        ),
        (
            vec![
                "--location".into(),
                "US Central".into(),
                "status".into(),
                "1".into(),
            ],
            &project,
            "is not a location",
        ),
        (
            vec!["list".into(), "--state".into(), "sleeping".into()],
            &project,
            "is not a job state",
        ),
        (
            vec![
                "submit".into(),
                "--model".into(),
                "m".into(),
                "--input".into(),
                "gs://bkt/in.jsonl".into(),
            ],
            &project,
            "--output",
        ),
    ];
    for (args, env, want) in cases {
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = run(env, &a).await;
        assert_eq!(out.code, 2, "{args:?}: {}", out.stderr);
        assert!(
            out.stderr.contains(want),
            "{args:?}: want {want:?} in {}",
            out.stderr
        );
        // The first line says it all (clap adds a pointer to --help).
        let first = out.stderr.lines().next().unwrap_or_default();
        assert!(first.starts_with("error: "), "{}", out.stderr);
        if want != "required" {
            assert!(first.contains(want), "{args:?}: {}", out.stderr);
        }
    }
    assert!(
        !dir.path().join("r.jsonl").exists(),
        "nothing written on bad input"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_credentials_and_no_network_have_their_own_exit_codes() {
    // ADC pointing at a missing key file: exit 5, with what to do.
    let out = run(
        &[
            ("GOOGLE_CLOUD_PROJECT", "p"),
            ("GOOGLE_APPLICATION_CREDENTIALS", "/nonexistent/key.json"),
        ],
        &["status", "123"],
    )
    .await;
    assert_eq!(out.code, 5, "{}", out.stderr);
    assert!(
        out.stderr.contains("gcloud auth application-default login"),
        "{}",
        out.stderr
    );
    // Nothing listening: exit 6 (no retries asked for).
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let host = closed.to_string();
    let out = run(
        &[
            ("GOOGLE_CLOUD_PROJECT", "p"),
            ("VERTEX_AI_EMULATOR_HOST", &host),
        ],
        &["status", "123", "--retry-for", "0"],
    )
    .await;
    assert_eq!(out.code, 6, "{}", out.stderr);
    assert!(out.stderr.contains(&host), "{}", out.stderr);
}

/// A loopback server answering every HTTP request `503`, counting them.
async fn unavailable_storage() -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let count = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let seen = count.clone();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let seen = seen.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    match sock.read(&mut byte).await {
                        Ok(1) => head.push(byte[0]),
                        _ => return,
                    }
                }
                seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let _ = sock
                    .write_all(b"HTTP/1.1 503 Service Unavailable\r\nconnection: close\r\ncontent-length: 0\r\n\r\n")
                    .await;
            });
        }
    });
    (url, count)
}

/// `--retry-for` is the one retry budget for Cloud Storage too: 0 makes
/// one request to a failing storage service, a few seconds makes more,
/// and either way the failure is a network failure (exit 6).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_for_governs_cloud_storage_too() {
    let (url, count) = unavailable_storage().await;
    let env = [("STORAGE_EMULATOR_HOST", url.as_str())];
    let args = ["results", "gs://cli-bkt/out/", "--output", "-"];
    let out = run(&env, &[&args[..], &["--retry-for", "0"]].concat()).await;
    assert_eq!(out.code, 6, "{}", out.stderr);
    assert!(out.stderr.contains("503"), "{}", out.stderr);
    assert_eq!(count.load(std::sync::atomic::Ordering::SeqCst), 1);
    // The first backoff is under a second (1 s, full jitter): a 3 s
    // budget tries again at least once, and gives up within it.
    let out = run(&env, &[&args[..], &["--retry-for", "3"]].concat()).await;
    assert_eq!(out.code, 6, "{}", out.stderr);
    assert!(
        out.stderr.contains("retry budget is spent"),
        "{}",
        out.stderr
    );
    assert!(count.load(std::sync::atomic::Ordering::SeqCst) >= 3);
}

/// Service text (a status message, a job's error) reaches the terminal
/// with its control characters escaped: an ESC or CR from a server can
/// neither drive the terminal nor overwrite what was printed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_text_in_errors_is_shown_escaped() {
    const NASTY: &str = "quota\u{1b}[2J\rgone";
    const SHOWN: &str = r"quota\u{1b}[2J\rgone";
    // A status message, through the one-line error.
    let (server, addr) = crate::common::recorder::Recorder::start().await;
    server.push_error(tonic::Status::failed_precondition(NASTY));
    let host = addr.to_string();
    let env = [
        ("GOOGLE_CLOUD_PROJECT", "p"),
        ("VERTEX_AI_EMULATOR_HOST", host.as_str()),
    ];
    let out = run(&env, &["status", "123", "--retry-for", "0"]).await;
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(out.stderr.contains(SHOWN), "{}", out.stderr);
    assert!(!out.stderr.contains('\r'), "{:?}", out.stderr);

    // A job's error, in `run`'s report of the jobs that failed.
    let f = Setup::full().await;
    f.emu.knobs().fail_jobs(Some(NASTY.into()));
    let dir = crate::common::temp();
    let input = dir.path().join("p.jsonl");
    crate::common::write_lines(&input, &[prompt("a", "One")]);
    let results = dir.path().join("r.jsonl");
    let args = run_args(&input, "gs://cli-bkt/nasty", results.to_str().unwrap(), &[]);
    let out = run(&f.env(), &args).await;
    assert_eq!(out.code, 3, "{}", out.stderr);
    assert!(out.stderr.contains(SHOWN), "{}", out.stderr);
    assert!(!out.stderr.contains('\r'), "{:?}", out.stderr);
}

/// Starts `run` on jobs held QUEUED and interrupts it once its first
/// progress line is out (the Ctrl-C handler is installed by then).
async fn interrupt_run(f: &Setup, extra: &[&str]) -> (Out, tempfile::TempDir) {
    f.emu.knobs().hold_queued(true);
    let dir = crate::common::temp();
    let input = dir.path().join("p.jsonl");
    crate::common::write_lines(&input, &[prompt("a", "One"), prompt("b", "Two")]);
    let results = dir.path().join("r.jsonl");
    let args = run_args(&input, "gs://cli-bkt/int", results.to_str().unwrap(), extra);
    let mut child = cli(&f.env(), &args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut seen = String::new();
    while let Some(line) = err.next_line().await.unwrap() {
        seen.push_str(&line);
        seen.push('\n');
        if line.contains("QUEUED 0/2 rows done") {
            break;
        }
    }
    let pid = child.id().expect("running") as i32;
    // SAFETY: sending a signal to our own child process.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGINT) }, 0);
    while let Some(line) = err.next_line().await.unwrap() {
        seen.push_str(&line);
        seen.push('\n');
    }
    let status = child.wait().await.unwrap();
    assert!(!results.exists(), "no results file on an interrupted run");
    let out = Out {
        code: status.code().unwrap_or(-1),
        stdout: String::new(),
        stderr: seen,
    };
    (out, dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_detaches_and_the_printed_command_reattaches() {
    let f = Setup::full().await;
    let (out, _dir) = interrupt_run(&f, &["--request-key", "ctrl-c-1"]).await;
    assert_eq!(out.code, 130, "{}", out.stderr);
    assert!(out.stderr.contains("detached"), "{}", out.stderr);
    assert!(
        out.stderr.contains("--request-key ctrl-c-1"),
        "{}",
        out.stderr
    );
    let client = f.emu.client("cli-project", "us-central1").unwrap();
    let jobs = crate::common::collect_jobs(&client).await;
    assert_eq!(jobs.len(), 1);
    assert_eq!(
        jobs[0].state(),
        JobState::Queued,
        "detaching cancels nothing"
    );

    // Released, the printed command picks the same job up and finishes.
    f.emu.knobs().hold_queued(false);
    let line = out
        .stderr
        .lines()
        .find(|l| l.trim_start().starts_with("vertex-batch run"))
        .unwrap()
        .trim()
        .to_owned();
    let args: Vec<&str> = line.split(' ').skip(1).collect();
    let out = run(&f.env(), &args).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(
        crate::common::collect_jobs(&client).await.len(),
        1,
        "no second job"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_with_cancel_on_interrupt_cancels_the_jobs() {
    let f = Setup::full().await;
    let (out, _dir) = interrupt_run(&f, &["--cancel-on-interrupt"]).await;
    assert_eq!(out.code, 130, "{}", out.stderr);
    assert!(out.stderr.contains("cancel requested"), "{}", out.stderr);
    let client = f.emu.client("cli-project", "us-central1").unwrap();
    let jobs = crate::common::collect_jobs(&client).await;
    assert_eq!(jobs.len(), 1);
    assert!(
        matches!(jobs[0].state(), JobState::Cancelling | JobState::Cancelled),
        "{}",
        jobs[0].state()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_emulator_subcommand_serves_like_the_emulator_binary() {
    let dir = crate::common::temp();
    let mut child = cli(
        &[],
        &[
            "emulator",
            "--data-dir",
            dir.path().to_str().unwrap(),
            "--hold-queued",
        ],
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::null())
    .spawn()
    .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut host = None;
    while let Some(line) = out.next_line().await.unwrap() {
        if let Some(h) = line.strip_prefix("VERTEX_AI_EMULATOR_HOST=") {
            host = Some(h.to_owned());
            break;
        }
    }
    let host = host.expect("the emulator prints its address");
    let res = run(
        &[
            ("VERTEX_AI_EMULATOR_HOST", &host),
            ("GOOGLE_CLOUD_PROJECT", "p"),
        ],
        &["list", "--json"],
    )
    .await;
    assert_eq!(res.code, 0, "{}", res.stderr);
    assert_eq!(res.stdout.trim(), "[]");
    // Its flags are in force from the first RPC: a job stays QUEUED.
    crate::common::write_lines(
        &dir.path().join("gcs/bkt/in.jsonl"),
        &[prompt("a", "Hello")],
    );
    let env = [
        ("VERTEX_AI_EMULATOR_HOST", host.as_str()),
        ("GOOGLE_CLOUD_PROJECT", "p"),
    ];
    let res = run(
        &env,
        &[
            "submit",
            "--model",
            "gemini-2.0-flash-001",
            "--input",
            "gs://bkt/in.jsonl",
            "--output",
            "gs://bkt/out",
        ],
    )
    .await;
    assert_eq!(res.code, 0, "{}", res.stderr);
    let res = run(&env, &["status", res.stdout.trim(), "--json"]).await;
    let job: Value = serde_json::from_str(&res.stdout).unwrap();
    assert_eq!(job["state"], "JOB_STATE_QUEUED");
    child.kill().await.unwrap();

    // Both programs take the same flags.
    let help = |bin: &str, args: &[&str]| {
        let o = std::process::Command::new(bin).args(args).output().unwrap();
        let text = String::from_utf8_lossy(&o.stdout).into_owned();
        let mut flags: Vec<String> = text
            .split_whitespace()
            .filter(|w| w.starts_with("--"))
            .map(|w| w.trim_end_matches(',').to_owned())
            .collect();
        flags.sort();
        flags.dedup();
        flags
    };
    let ours = help(BIN, &["emulator", "--help"]);
    let theirs = help(env!("CARGO_BIN_EXE_vertex-batch-emulator"), &["--help"]);
    assert!(ours.contains(&"--fail-jobs".to_owned()), "{ours:?}");
    let strip = |v: Vec<String>| -> Vec<String> {
        v.into_iter()
            .filter(|f| {
                !["--project", "--location", "--retry-for", "--version"].contains(&f.as_str())
            })
            .collect()
    };
    assert_eq!(strip(ours), strip(theirs));
}

/// A JSONL prompts file with a byte-order mark is still JSONL (keys kept);
/// a pipe or device as PROMPTS, an empty or directory-like RESULTS name are
/// refused before anything runs; a device as RESULTS is written, not
/// replaced.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prompts_and_results_paths_are_judged_before_anything_runs() {
    let f = Setup::full().await;
    let dir = crate::common::temp();
    let input = dir.path().join("bom.jsonl");
    let mut bytes = b"\xef\xbb\xbf".to_vec();
    bytes.extend_from_slice(prompt("k1", "Hello").as_bytes());
    bytes.push(b'\n');
    std::fs::write(&input, bytes).unwrap();
    let out = run(&f.env(), &run_args(&input, "gs://cli-bkt/bom", "-", &[])).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    let row: Value = serde_json::from_str(out.stdout.lines().next().unwrap()).unwrap();
    assert_eq!(row["key"], "k1", "read as JSONL, not as text");

    let out = run(
        &f.env(),
        &run_args(&input, "gs://cli-bkt/bom", "/dev/null", &[]),
    )
    .await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    use std::os::unix::fs::FileTypeExt;
    assert!(std::fs::metadata("/dev/null")
        .unwrap()
        .file_type()
        .is_char_device());

    for (input, output, want) in [
        (Path::new("/dev/null"), "-", "not a regular file"),
        (input.as_path(), "", "not a file name"),
        (input.as_path(), "newdir/", "not a file name"),
    ] {
        let out = run(&f.env(), &run_args(input, "gs://cli-bkt/bom", output, &[])).await;
        assert_eq!(out.code, 2, "{output:?}: {}", out.stderr);
        assert!(out.stderr.contains(want), "{}", out.stderr);
    }
}

/// Output into a pipe whose reader went away (`… | head`) ends quietly,
/// never with a panic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_stdout_is_not_a_panic() {
    let l = Setup::local().await;
    crate::common::write_gcs(&l.emu, "gs://bkt/in.jsonl", &[prompt("a", "Hello")]);
    l.emu.knobs().hold_queued(true);
    let client = l.emu.client("cli-project", "us-central1").unwrap();
    let spec = vertex_batch::JobSpec::new("gemini-2.0-flash-001")
        .input("gs://bkt/in.jsonl")
        .output("gs://bkt/out");
    // Enough jobs that `list --json` outgrows a pipe's buffer.
    for _ in 0..120 {
        client.create(&spec).await.unwrap();
    }
    let mut child = cli(&l.env(), &["list", "--json", "--limit", "500"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let o = child.wait_with_output().await.unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(o.status.code(), Some(0), "{stderr}");
}

/// A `vertex-batch` process stopped at a pause point (see
/// `VERTEX_BATCH_TEST_PAUSE_AT` in the command line's `pause` module): it
/// carries on at a line on its stdin or a Ctrl-C.
struct Paused {
    child: tokio::process::Child,
    err: tokio::io::Lines<BufReader<tokio::process::ChildStderr>>,
    stderr: String,
}

impl Paused {
    /// Starts `args` with `env` in `cwd` and waits until it stops at `point`.
    async fn start(env: &[(&str, &str)], args: &[&str], cwd: &Path, point: &str) -> Paused {
        let mut child = cli(env, args)
            .env("VERTEX_BATCH_TEST_PAUSE_AT", point)
            .current_dir(cwd)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut err = BufReader::new(child.stderr.take().unwrap()).lines();
        let mut stderr = String::new();
        loop {
            match err.next_line().await.unwrap() {
                Some(l) if l.contains(&format!("paused at {point}")) => break,
                Some(l) => {
                    stderr.push_str(&l);
                    stderr.push('\n');
                }
                None => panic!(
                    "{point}: it ended before its pause point ({:?}):\n{stderr}",
                    child.wait().await
                ),
            }
        }
        Paused { child, err, stderr }
    }

    /// Ctrl-C.
    fn interrupt(&self) {
        let pid = self.child.id().expect("running") as i32;
        // SAFETY: sending a signal to our own child process.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGINT) }, 0);
    }

    /// Carries on from the pause point.
    async fn resume(&mut self) {
        use tokio::io::AsyncWriteExt;
        let stdin = self.child.stdin.as_mut().unwrap();
        stdin.write_all(b"go\n").await.unwrap();
        stdin.flush().await.unwrap();
    }

    /// Its exit code and all of its stderr, once it has ended.
    async fn end(mut self) -> Out {
        while let Some(l) = self.err.next_line().await.unwrap() {
            self.stderr.push_str(&l);
            self.stderr.push('\n');
        }
        let status = self.child.wait().await.unwrap();
        assert!(!self.stderr.contains("panicked"), "{}", self.stderr);
        Out {
            code: status.code().unwrap_or(-1),
            stdout: String::new(),
            stderr: self.stderr,
        }
    }
}

/// The names in `dir`, sorted.
fn names_in(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// The command printed on the line after the one containing `after`.
fn printed_command(stderr: &str, after: &str) -> String {
    let line = stderr
        .lines()
        .skip_while(|l| !l.contains(after))
        .nth(1)
        .unwrap_or_else(|| panic!("no command after {after:?}:\n{stderr}"))
        .trim()
        .to_owned();
    assert!(line.starts_with("vertex-batch "), "{line}");
    line
}

/// `n` prompts `q0`… in `dir/p.jsonl`.
fn prompts_file(dir: &Path, n: usize) -> std::path::PathBuf {
    let input = dir.join("p.jsonl");
    let lines: Vec<String> = (0..n)
        .map(|i| prompt(&format!("q{i}"), &format!("Question {i}")))
        .collect();
    crate::common::write_lines(&input, &lines);
    input
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_while_staging_stops_submits_nothing_and_leaves_no_temporary_file() {
    let f = Setup::full().await;
    let dir = crate::common::temp();
    let input = prompts_file(dir.path(), 3);
    let results = dir.path().join("r.jsonl");
    let args = run_args(
        &input,
        "gs://cli-bkt/stage-int",
        results.to_str().unwrap(),
        &["--rows-per-job", "1", "--request-key", "stage-1"],
    );
    // Part 0 is uploaded, parts 1 and 2 are not.
    let paused = Paused::start(&f.env(), &args, dir.path(), "staged:0").await;
    paused.interrupt();
    let out = paused.end().await;
    assert_eq!(out.code, 130, "{}", out.stderr);
    assert!(
        out.stderr.contains("interrupted while staging")
            && out.stderr.contains("nothing was submitted")
            && out.stderr.contains(
                "1 input part(s) (1 prompts) were uploaded under gs://cli-bkt/stage-int/stage-1/input/"
            ),
        "{}",
        out.stderr
    );
    let again = printed_command(&out.stderr, "Stage and run the batch with:");
    assert!(again.contains("--request-key stage-1"), "{again}");
    // The temporary results file is gone; no results were written.
    assert_eq!(names_in(dir.path()), ["p.jsonl"]);
    assert_eq!(f.emu.rpc_counts().get("CreateBatchPredictionJob"), None);
    let storage = f.gcs.as_ref().unwrap().storage();
    // Part 0 is staged (under this attempt's own directory), part 1 and
    // the manifest are not.
    let staged: Vec<String> = futures::TryStreamExt::try_collect::<Vec<_>>(
        storage.list(&"gs://cli-bkt/stage-int/stage-1/".parse().unwrap()),
    )
    .await
    .unwrap()
    .iter()
    .map(|o| o.uri().to_string())
    .collect();
    assert_eq!(staged.len(), 1, "{staged:?}");
    assert!(
        staged[0].starts_with("gs://cli-bkt/stage-int/stage-1/input/")
            && staged[0].ends_with("/part-00000.jsonl"),
        "{staged:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_while_submitting_with_cancel_on_interrupt_cancels_every_job_made() {
    let f = Setup::full().await;
    f.emu.knobs().hold_queued(true);
    let dir = crate::common::temp();
    let input = prompts_file(dir.path(), 3);
    let results = dir.path().join("r.jsonl");
    let args = run_args(
        &input,
        "gs://cli-bkt/sub-int",
        results.to_str().unwrap(),
        &[
            "--rows-per-job",
            "1",
            "--request-key",
            "cancel-1",
            "--cancel-on-interrupt",
        ],
    );
    // Part 0's job exists, part 1 is claimed: its create goes out once the
    // run carries on, and the Ctrl-C waits for its answer.
    let paused = Paused::start(&f.env(), &args, dir.path(), "claimed:0:1").await;
    paused.interrupt();
    let out = paused.end().await;
    assert_eq!(out.code, 130, "{}", out.stderr);
    assert!(
        out.stderr
            .contains("interrupted while submitting: cancelling 2 job(s)"),
        "{}",
        out.stderr
    );
    assert_eq!(
        out.stderr.matches("cancel requested").count(),
        2,
        "{}",
        out.stderr
    );
    let client = f.emu.client("cli-project", "us-central1").unwrap();
    let jobs = crate::common::collect_jobs(&client).await;
    assert_eq!(jobs.len(), 2, "part 2 was never submitted: {jobs:#?}");
    for j in &jobs {
        assert!(
            matches!(j.state(), JobState::Cancelling | JobState::Cancelled),
            "{}: {}",
            j.name(),
            j.state()
        );
    }
    assert_eq!(names_in(dir.path()), ["p.jsonl"], "no temporary file left");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_while_submitting_detaches_and_the_printed_command_finishes_the_batch() {
    let f = Setup::full().await;
    f.emu.knobs().hold_queued(true);
    let dir = crate::common::temp();
    let input = prompts_file(dir.path(), 3);
    let results = dir.path().join("r.jsonl");
    let args = run_args(
        &input,
        "gs://cli-bkt/sub-det",
        results.to_str().unwrap(),
        &["--rows-per-job", "1", "--request-key", "detach-1"],
    );
    let paused = Paused::start(&f.env(), &args, dir.path(), "submitted:0:0").await;
    paused.interrupt();
    let out = paused.end().await;
    assert_eq!(out.code, 130, "{}", out.stderr);
    assert!(
        out.stderr.contains(
            "interrupted while submitting: detached; the batch's 1 job(s) so far keep running"
        ),
        "{}",
        out.stderr
    );
    let again = printed_command(&out.stderr, "Pick the batch up with:");
    assert!(again.contains("--request-key detach-1"), "{again}");
    assert_eq!(names_in(dir.path()), ["p.jsonl"], "no temporary file left");
    let client = f.emu.client("cli-project", "us-central1").unwrap();
    let jobs = crate::common::collect_jobs(&client).await;
    assert_eq!(jobs.len(), 1, "{jobs:#?}");
    assert_eq!(jobs[0].state(), JobState::Queued, "it still runs");

    // The printed command submits the other two parts, follows all three
    // and writes every result.
    f.emu.knobs().hold_queued(false);
    let words: Vec<&str> = again.split(' ').skip(1).collect();
    let out = run(&f.env(), &words).await;
    assert_eq!(out.code, 0, "{again}\n{}", out.stderr);
    let rows = lines(&results);
    assert_eq!(rows.len(), 3);
    assert!(rows.iter().all(|r| r["outcome"] == "succeeded"), "{rows:?}");
    assert_eq!(f.emu.rpc_counts().get("CreateBatchPredictionJob"), Some(&3));
    assert_eq!(crate::common::collect_jobs(&client).await.len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_while_submit_submits_prints_the_run_that_picks_the_batch_up() {
    let f = Setup::full().await;
    let dir = crate::common::temp();
    let input = prompts_file(dir.path(), 2);
    let args = [
        "submit",
        "--model",
        "gemini-2.0-flash-001",
        "--input",
        input.to_str().unwrap(),
        "--staging",
        "gs://cli-bkt/sub-sub",
        "--rows-per-job",
        "1",
    ];
    // Staged, no job submitted yet; no key given: the one made is printed.
    let paused = Paused::start(&f.env(), &args, dir.path(), "manifest").await;
    paused.interrupt();
    let out = paused.end().await;
    assert_eq!(out.code, 130, "{}", out.stderr);
    assert!(
        out.stderr
            .contains("stopped; the batch is staged and no job was made yet"),
        "{}",
        out.stderr
    );
    let again = printed_command(&out.stderr, "Pick the batch up with:");
    let words: Vec<&str> = again.split(' ').collect();
    assert_eq!(words[1], "run", "{again}");
    let key = words[words.iter().position(|w| *w == "--request-key").unwrap() + 1];
    assert_eq!(f.emu.rpc_counts().get("CreateBatchPredictionJob"), None);
    let mut cmd = cli(&f.env(), &words[1..]);
    cmd.current_dir(dir.path());
    let o = cmd.output().await.unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(0), "{again}\n{stderr}");
    let rows = lines(&dir.path().join(format!("results-{key}.jsonl")));
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert_eq!(f.emu.rpc_counts().get("CreateBatchPredictionJob"), Some(&2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_failing_part_way_keeps_the_rows_written_as_results_partial() {
    let f = Setup::full().await;
    let dir = crate::common::temp();
    // More rows than the reader hands over in one go (1,024): the join's
    // second read of the inputs cannot have begun when the first line is
    // written.
    const ROWS: usize = 1100;
    let input = prompts_file(dir.path(), ROWS);
    let results = dir.path().join("r.jsonl");
    let args = run_args(
        &input,
        "gs://cli-bkt/partial",
        results.to_str().unwrap(),
        &["--request-key", "partial-1"],
    );
    // The first line is written; the staged input, which the join reads
    // again after the job's rows (for the prompts with none), goes away:
    // the read fails after every row of the job's output is written.
    let mut paused = Paused::start(&f.env(), &args, dir.path(), "writing").await;
    let storage = f.gcs.as_ref().unwrap().storage();
    let staged: vertex_batch::GcsUri = futures::TryStreamExt::try_collect::<Vec<_>>(
        storage.list(&"gs://cli-bkt/partial/partial-1/input/".parse().unwrap()),
    )
    .await
    .unwrap()
    .iter()
    .map(|o| o.uri().clone())
    .find(|u| u.object().ends_with("/part-00000.jsonl"))
    .expect("part 0 is staged");
    let bytes: Vec<bytes::Bytes> =
        futures::TryStreamExt::try_collect(storage.read(&staged, None).await.unwrap())
            .await
            .unwrap();
    storage.delete(&staged).await.unwrap();
    paused.resume().await;
    let out = paused.end().await;
    assert!(![0, 130].contains(&out.code), "{}", out.stderr);
    let partial = dir.path().join("r.jsonl.partial");
    assert!(
        out.stderr.contains("reading the results failed")
            && out.stderr.contains(&format!(
                "the {ROWS} line(s) written before it are kept in {}",
                partial.display()
            ))
            && out.stderr.contains("--request-key partial-1"),
        "{}",
        out.stderr
    );
    assert_eq!(out.stderr.matches("error: ").count(), 1, "{}", out.stderr);
    assert!(!results.exists(), "RESULTS is written only when complete");
    let mut kept: Vec<(String, String)> = lines(&partial)
        .iter()
        .map(|r| {
            assert_eq!(r["outcome"], "succeeded", "{r}");
            (
                r["key"].as_str().unwrap().to_owned(),
                r["text"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    kept.sort();
    let mut want: Vec<(String, String)> = (0..ROWS)
        .map(|i| (format!("q{i}"), format!("Emulated answer to: Question {i}")))
        .collect();
    want.sort();
    assert_eq!(kept, want);
    assert_eq!(
        names_in(dir.path()),
        ["p.jsonl", "r.jsonl.partial"],
        "no temporary file left"
    );

    // The input back, the same command writes the whole file and drops
    // the partial one.
    storage.upload_bytes(&staged, bytes.concat()).await.unwrap();
    let out = run(&f.env(), &args).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(lines(&results).len(), ROWS);
    assert_eq!(names_in(dir.path()), ["p.jsonl", "r.jsonl"]);
}

/// The `vertex-batch-emulator` binary on `port` (0: any) with its state in
/// `dir` and its objects in `gcs`; killed on drop.
struct EmulatorBin {
    child: std::process::Child,
    host: String,
}

impl EmulatorBin {
    fn start(dir: &Path, gcs: &FakeGcs, port: u16, extra: &[&str]) -> EmulatorBin {
        use std::io::BufRead;
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_vertex-batch-emulator"))
            .arg("--data-dir")
            .arg(dir)
            .args(["--storage-emulator-host", &gcs.url])
            .args(["--port", &port.to_string()])
            .args(extra)
            .env_remove("RUST_LOG")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
        let host = lines
            .find_map(|l| {
                l.ok()?
                    .strip_prefix("VERTEX_AI_EMULATOR_HOST=")
                    .map(str::to_owned)
            })
            .expect("the emulator prints its address");
        std::thread::spawn(move || lines.for_each(drop));
        EmulatorBin { child, host }
    }

    fn port(&self) -> u16 {
        self.host.rsplit(':').next().unwrap().parse().unwrap()
    }

    fn stop(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for EmulatorBin {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_that_loses_the_service_while_following_exits_6_and_its_command_resumes() {
    let gcs = FakeGcs::start();
    gcs.buckets(&["cli-bkt"]).await;
    let state = crate::common::temp();
    let emu = EmulatorBin::start(state.path(), &gcs, 0, &["--hold-queued"]);
    let port = emu.port();
    let dir = crate::common::temp();
    let input = prompts_file(dir.path(), 2);
    let results = dir.path().join("r.jsonl");
    let host = emu.host.clone();
    let env = [
        ("VERTEX_AI_EMULATOR_HOST", host.as_str()),
        ("GOOGLE_CLOUD_PROJECT", "cli-project"),
        ("STORAGE_EMULATOR_HOST", gcs.url.as_str()),
    ];
    let mut args = vec!["--retry-for", "1"];
    args.extend(run_args(
        &input,
        "gs://cli-bkt/lost",
        results.to_str().unwrap(),
        &["--request-key", "lost-1"],
    ));
    // The job is made; then the service goes away before it is followed.
    let mut paused = Paused::start(&env, &args, dir.path(), "submitted:0:0").await;
    emu.stop();
    paused.resume().await;
    let out = paused.end().await;
    assert_eq!(out.code, 6, "{}", out.stderr);
    assert!(
        out.stderr
            .contains("error: gave up following the batch after --retry-for 1 s")
            && out
                .stderr
                .contains("its 1 job(s) are on the service and still run there"),
        "{}",
        out.stderr
    );
    let again = printed_command(&out.stderr, "Pick the batch up");
    assert!(again.contains("--request-key lost-1"), "{again}");
    assert!(!results.exists());
    assert_eq!(names_in(dir.path()), ["p.jsonl"], "no temporary file left");

    // The service back on the same state and port: the printed command
    // follows the same job to its end and writes the results.
    let emu = EmulatorBin::start(state.path(), &gcs, port, &[]);
    assert_eq!(emu.host, host);
    let words: Vec<&str> = again.split(' ').skip(1).collect();
    let out = run(&env, &words).await;
    assert_eq!(out.code, 0, "{again}\n{}", out.stderr);
    assert_eq!(lines(&results).len(), 2);
    let client = vertex_batch::Client::builder()
        .ignore_env()
        .project("cli-project")
        .location("us-central1")
        .emulator_host(&emu.host)
        .build()
        .unwrap();
    let jobs = crate::common::collect_jobs(&client).await;
    assert_eq!(jobs.len(), 1, "no new job: {jobs:#?}");
    assert_eq!(jobs[0].state(), JobState::Succeeded);
}

#[tokio::test]
async fn three_processes_bigquery_the_emulator_binary_and_the_cli_with_10000_prompts() {
    use vertex_batch::bigquery::{BigQuery, Field};
    let bqe = crate::common::bq::BqEmulator::start("cli-project");
    let bq = BigQuery::builder()
        .ignore_env()
        .emulator_host(bqe.host())
        .build()
        .unwrap();
    let ds: vertex_batch::uri::BigQueryUri = "bq://cli-project.batches".parse().unwrap();
    bq.create_dataset(&ds, "us-central1").await.unwrap();
    let n = 10_000;
    let rows: String = (0..n)
        .map(|i| {
            format!(
                "{}\n",
                serde_json::json!({"key": format!("q{i}"), "request": {"contents": [{"role": "user", "parts": [{"text": format!("Question {i}")}]}]}})
            )
        })
        .collect();
    let schema = [Field::new("key", "STRING"), Field::new("request", "JSON")];
    bq.load_ndjson(
        &"bq://cli-project.batches.prompts".parse().unwrap(),
        &schema,
        rows,
        "load-prompts",
    )
    .await
    .unwrap();
    let gcs = FakeGcs::start();
    let emu = crate::common::gcs::EmulatorProcess::start(
        env!("CARGO_BIN_EXE_vertex-batch-emulator"),
        &gcs,
        &["--bigquery-emulator-host", &bqe.url],
    );
    let env = [
        ("VERTEX_AI_EMULATOR_HOST", emu.host.as_str()),
        ("GOOGLE_CLOUD_PROJECT", "cli-project"),
        ("BIGQUERY_EMULATOR_HOST", bqe.url.as_str()),
    ];
    let submitted = run(
        &env,
        &[
            "submit",
            "--model",
            "gemini-2.0-flash-001",
            "--input",
            "bq://cli-project.batches.prompts",
            "--output",
            "bq://cli-project.batches",
        ],
    )
    .await;
    assert_eq!(submitted.code, 0, "{}", submitted.stderr);
    let job = submitted.stdout.trim().to_owned();
    assert!(job.starts_with("projects/cli-project/"), "{job}");
    let watched = run(&env, &["watch", &job]).await;
    assert_eq!(watched.code, 0, "{}", watched.stderr);
    // Read through the job (its output_info names the table)...
    let dir = crate::common::temp();
    let by_job = dir.path().join("by-job.jsonl");
    let out = run(
        &env,
        &["results", &job, "--output", by_job.to_str().unwrap()],
    )
    .await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    let got = lines(&by_job);
    assert_eq!(got.len(), n);
    let mut keys: Vec<&str> = got.iter().map(|r| r["key"].as_str().unwrap()).collect();
    keys.sort_unstable();
    keys.dedup();
    assert_eq!(keys.len(), n, "every prompt once");
    assert!(
        got.iter().all(|r| r["outcome"] == "succeeded"),
        "{:?}",
        got[0]
    );
    // ...and straight from the table, with no JobService at all.
    let client = vertex_batch::Client::builder()
        .ignore_env()
        .project("cli-project")
        .location("us-central1")
        .emulator_host(&emu.host)
        .build()
        .unwrap();
    let j = client.get(&job).await.unwrap();
    let Some(vertex_batch::job::OutputLocation::BigQuery { dataset, table }) = j.output_location()
    else {
        panic!("{j:?}")
    };
    let by_table = dir.path().join("by-table.jsonl");
    // This time through the emulator's Storage Read API (gRPC).
    let table_env = [
        ("BIGQUERY_EMULATOR_HOST", bqe.url.as_str()),
        ("BIGQUERY_STORAGE_EMULATOR_HOST", bqe.grpc_url.as_str()),
    ];
    let out = run(
        &table_env,
        &[
            "results",
            &format!("{dataset}.{table}"),
            "--output",
            by_table.to_str().unwrap(),
        ],
    )
    .await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    let again = lines(&by_table);
    let mut keys_again: Vec<&str> = again.iter().map(|r| r["key"].as_str().unwrap()).collect();
    keys_again.sort_unstable();
    assert_eq!(keys_again, keys, "the same rows through either API");
    assert!(again.iter().all(|r| r["outcome"] == "succeeded"));
}

#[tokio::test]
async fn run_stages_in_bigquery_and_a_rerun_with_the_key_resumes() {
    let bqe = crate::common::bq::BqEmulator::start("cli-project");
    let bq = vertex_batch::bigquery::BigQuery::builder()
        .ignore_env()
        .emulator_host(bqe.host())
        .build()
        .unwrap();
    bq.create_dataset(&"bq://cli-project.batches".parse().unwrap(), "us-central1")
        .await
        .unwrap();
    let gcs = FakeGcs::start();
    let emu = crate::common::gcs::EmulatorProcess::start(
        env!("CARGO_BIN_EXE_vertex-batch-emulator"),
        &gcs,
        &["--bigquery-emulator-host", &bqe.url],
    );
    let env = [
        ("VERTEX_AI_EMULATOR_HOST", emu.host.as_str()),
        ("GOOGLE_CLOUD_PROJECT", "cli-project"),
        ("BIGQUERY_EMULATOR_HOST", bqe.url.as_str()),
    ];
    let dir = crate::common::temp();
    let prompts = dir.path().join("p.txt");
    std::fs::write(
        &prompts,
        (0..250)
            .map(|i| format!("Question {i}\n"))
            .collect::<String>(),
    )
    .unwrap();
    let results = dir.path().join("r.jsonl");
    let args = [
        "run",
        "--model",
        "gemini-2.0-flash-001",
        "--input",
        prompts.to_str().unwrap(),
        "--staging",
        "bq://cli-project.batches",
        "--output",
        results.to_str().unwrap(),
        "--rows-per-job",
        "100",
        "--request-key",
        "bq-run-1",
    ];
    let out = run(&env, &args).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    let got = lines(&results);
    assert_eq!(got.len(), 250);
    assert!(got.iter().all(|r| r["outcome"] == "succeeded"));
    // Three parts, three jobs; the rerun makes none.
    let client = vertex_batch::Client::builder()
        .ignore_env()
        .project("cli-project")
        .location("us-central1")
        .emulator_host(&emu.host)
        .build()
        .unwrap();
    let count = || async {
        futures::TryStreamExt::try_collect::<Vec<_>>(client.list(&vertex_batch::ListOptions::new()))
            .await
            .unwrap()
            .len()
    };
    assert_eq!(count().await, 3);
    std::fs::remove_file(&results).unwrap();
    let again = run(&env, &args).await;
    assert_eq!(again.code, 0, "{}", again.stderr);
    assert_eq!(lines(&results).len(), 250);
    assert_eq!(count().await, 3, "the rerun resumed: no new job");
    // A dataset name with a table is a usage error before anything runs.
    let mut bad = args;
    bad[6] = "bq://cli-project.batches.t";
    let out = run(&env, &bad).await;
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(out.stderr.contains("names a table"), "{}", out.stderr);
}

/// Every model family, through fake-gcs-server, the emulator binary and
/// `vertex-batch run`: plain-text prompts become the family's lines, and
/// come back matched in its format.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_model_family_takes_plain_text_prompts_to_matched_results() {
    let gcs = FakeGcs::start();
    gcs.buckets(&["cli-bkt"]).await;
    let emu = crate::common::gcs::EmulatorProcess::start(
        env!("CARGO_BIN_EXE_vertex-batch-emulator"),
        &gcs,
        &[],
    );
    let env = [
        ("VERTEX_AI_EMULATOR_HOST", emu.host.as_str()),
        ("GOOGLE_CLOUD_PROJECT", "cli-project"),
        ("STORAGE_EMULATOR_HOST", gcs.url.as_str()),
    ];
    let dir = crate::common::temp();
    let input = dir.path().join("prompts.txt");
    // Lines 1 and 3 are the same text: embeddings must be equal there.
    std::fs::write(
        &input,
        "Why is the sky blue?\nName a river.\nWhy is the sky blue?\n",
    )
    .unwrap();
    let cases: [(&str, &[&str]); 5] = [
        (
            "gemini-embedding-001",
            &["--dimensions", "16", "--task-type", "RETRIEVAL_DOCUMENT"],
        ),
        ("text-embedding-005", &["--dimensions", "32"]),
        ("claude-sonnet-4-5@20250929", &["--max-output-tokens", "4"]),
        ("llama-3.3-70b-instruct-maas", &[]),
        (
            "publishers/qwen/models/qwen3-embedding-8b-maas",
            &["--dimensions", "8"],
        ),
    ];
    for (i, (model, extra)) in cases.iter().enumerate() {
        let staging = format!("gs://cli-bkt/family-{i}");
        let results = dir.path().join(format!("results-{i}.jsonl"));
        let mut args = vec![
            "run",
            "--model",
            model,
            "--input",
            input.to_str().unwrap(),
            "--staging",
            &staging,
            "--output",
            results.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        let out = run(&env, &args).await;
        assert_eq!(out.code, 0, "{model}: {}", out.stderr);
        let mut rows = lines(&results);
        rows.sort_by_key(|r| r["key"].as_str().unwrap().to_owned());
        let keys: Vec<&str> = rows.iter().map(|r| r["key"].as_str().unwrap()).collect();
        assert_eq!(keys, ["1", "2", "3"], "{model}");
        assert!(
            rows.iter().all(|r| r["outcome"] == "succeeded"),
            "{model}: {rows:?}"
        );
        match i {
            0 | 1 | 4 => {
                let dims = [16, 32, 8][i.min(2)];
                let vectors: Vec<&Vec<Value>> = rows
                    .iter()
                    .map(|r| r["embedding"].as_array().unwrap())
                    .collect();
                assert!(vectors.iter().all(|v| v.len() == dims), "{model}");
                assert_eq!(
                    vectors[0], vectors[2],
                    "{model}: equal texts, equal vectors"
                );
                assert_ne!(vectors[0], vectors[1], "{model}");
                assert!(rows.iter().all(|r| r.get("text").is_none()), "{model}");
            }
            2 => {
                assert_eq!(rows[0]["text"], "Emulated answer to: Why", "{rows:?}");
                assert_eq!(rows[0]["finish_reason"], "MAX_TOKENS");
                assert_eq!(rows[1]["response"]["stop_reason"], "max_tokens");
            }
            _ => {
                assert_eq!(rows[1]["text"], "Emulated answer to: Name a river.");
                assert_eq!(rows[1]["finish_reason"], "STOP");
                assert_eq!(rows[1]["response"]["status_code"], 200);
            }
        }
    }
    // The family's rules hold before anything is staged: a Claude line
    // without max_tokens, an embedding flag on a chat model.
    let jsonl = dir.path().join("claude.jsonl");
    std::fs::write(
        &jsonl,
        r#"{"custom_id":"c1","request":{"anthropic_version":"vertex-2023-10-16","messages":[{"role":"user","content":"Hi"}]}}"#,
    )
    .unwrap();
    for (model, file, extra) in [
        ("claude-sonnet-4-5", &jsonl, &[][..]),
        ("claude-sonnet-4-5", &input, &["--dimensions", "8"][..]),
        (
            "text-embedding-005",
            &input,
            &["--max-output-tokens", "8"][..],
        ),
        ("acme-7b-maas", &input, &[][..]),
    ] {
        let mut args = vec![
            "run",
            "--model",
            model,
            "--input",
            file.to_str().unwrap(),
            "--staging",
            "gs://cli-bkt/refused",
            "--output",
            "-",
        ];
        args.extend_from_slice(extra);
        let out = run(&env, &args).await;
        assert_ne!(out.code, 0, "{model} {extra:?}: {}", out.stderr);
        assert!(out.stdout.is_empty(), "{model}");
    }
    let client = vertex_batch::Client::builder()
        .ignore_env()
        .project("cli-project")
        .location("us-central1")
        .emulator_host(&emu.host)
        .build()
        .unwrap();
    assert_eq!(
        crate::common::collect_jobs(&client).await.len(),
        cases.len(),
        "a refused run submits nothing"
    );
}

// ---------------------------------------------------------------------------
// Live results, cost and budget.

/// The emulator's jobs, oldest first.
async fn emulator_jobs(s: &Setup) -> Vec<vertex_batch::Job> {
    use futures::TryStreamExt;
    let client = s.emu.client("cli-project", "us-central1").unwrap();
    let mut jobs: Vec<_> = client
        .list(&vertex_batch::client::ListOptions::default())
        .try_collect()
        .await
        .unwrap();
    jobs.reverse();
    jobs
}

fn text_prompts(dir: &Path, n: usize) -> std::path::PathBuf {
    let input = dir.join("prompts.txt");
    let text: String = (0..n)
        .map(|i| format!("Question number {i} please\n"))
        .collect();
    std::fs::write(&input, text).unwrap();
    input
}

#[tokio::test]
async fn run_to_stdout_writes_rows_as_they_land_priced_and_a_cancel_keeps_them() {
    let s = Setup::full().await;
    // 1,000 rows over ten emulated minutes, each exported at once: the
    // first line comes long before the job could end.
    s.emu
        .knobs()
        .set_job_duration(Some(std::time::Duration::from_secs(600)));
    s.emu.knobs().set_export_every_rows(1);
    let dir = crate::common::temp();
    let input = text_prompts(dir.path(), 1000);
    let mut args = run_args(&input, "gs://cli-bkt/live", "-", &["--poll", "0.05"]);
    args.push("--request-key");
    args.push("live-stdout");
    let mut child = cli(&s.env(), &args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap()).lines();
    let first: Value = serde_json::from_str(&out.next_line().await.unwrap().unwrap()).unwrap();
    let jobs = emulator_jobs(&s).await;
    assert_eq!(jobs.len(), 1);
    let job = s
        .emu
        .client("cli-project", "us-central1")
        .unwrap()
        .get(jobs[0].name())
        .await
        .unwrap();
    assert_eq!(
        job.state(),
        JobState::Running,
        "a row came while the job ran"
    );
    assert_eq!(first["outcome"], "succeeded");
    // gemini-2.0-flash at batch rates: $0.075 a million input tokens,
    // $0.30 a million output tokens (src/cost/prices.json).
    let (p, c) = (
        first["usage"]["prompt"].as_u64().unwrap(),
        first["usage"]["candidates"].as_u64().unwrap(),
    );
    let want = (p as f64 * 0.075 + c as f64 * 0.3) / 1e6;
    assert!(p > 0 && c > 0);
    assert!(
        (first["cost_usd"].as_f64().unwrap() - want).abs() < 1e-9,
        "{first}"
    );

    // Cancelled: the rows it completed come out, the rest missing, each
    // key once.
    s.emu
        .client("cli-project", "us-central1")
        .unwrap()
        .cancel(jobs[0].name())
        .await
        .unwrap();
    let mut rows = vec![first];
    while let Some(line) = out.next_line().await.unwrap() {
        rows.push(serde_json::from_str(&line).unwrap());
    }
    let status = child.wait().await.unwrap();
    let mut stderr = String::new();
    tokio::io::AsyncReadExt::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr)
        .await
        .unwrap();
    assert_eq!(status.code(), Some(3), "{stderr}");
    let mut keys: Vec<&str> = rows.iter().map(|r| r["key"].as_str().unwrap()).collect();
    keys.sort_unstable();
    keys.dedup();
    assert_eq!((keys.len(), rows.len()), (1000, 1000));
    let done = rows.iter().filter(|r| r["outcome"] == "succeeded").count();
    assert!((1..1000).contains(&done), "{done}");
    assert!(rows
        .iter()
        .all(|r| r["outcome"] == "succeeded" || r["outcome"] == "missing"));
    assert!(
        stderr.contains("tokens:") && stderr.contains("cost $"),
        "{stderr}"
    );
}

#[tokio::test]
async fn max_cost_refuses_before_submitting_and_lets_a_batch_within_it_run() {
    let s = Setup::full().await;
    let dir = crate::common::temp();
    let input = text_prompts(dir.path(), 20);
    let results = dir.path().join("results.jsonl");
    let out = results.to_str().unwrap();
    let args = run_args(
        &input,
        "gs://cli-bkt/budget",
        out,
        &["--max-cost", "0.000001"],
    );
    let o = run(&s.env(), &args).await;
    assert_eq!(o.code, 7, "{}", o.stderr);
    assert!(o.stderr.contains("estimate: at most"), "{}", o.stderr);
    assert!(o.stderr.contains("counted by CountTokens"), "{}", o.stderr);
    assert!(o.stderr.contains("nothing was submitted"), "{}", o.stderr);
    assert!(emulator_jobs(&s).await.is_empty(), "no job was made");
    assert!(!results.exists());

    let args = run_args(&input, "gs://cli-bkt/budget", out, &["--max-cost", "5"]);
    let o = run(&s.env(), &args).await;
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert_eq!(lines(&results).len(), 20);
    // A model the table lacks cannot be held to a budget.
    let mut args = run_args(&input, "gs://cli-bkt/budget2", out, &["--max-cost", "5"]);
    args[2] = "publishers/google/models/my-own-model";
    let o = run(&s.env(), &args).await;
    assert_eq!(o.code, 2, "{}", o.stderr);
    assert!(o.stderr.contains("--prices"), "{}", o.stderr);
}

#[tokio::test]
async fn watch_results_appends_rows_as_they_land_and_resumes_a_torn_file() {
    let s = Setup::full().await;
    s.emu
        .knobs()
        .set_job_duration(Some(std::time::Duration::from_secs(2)));
    s.emu.knobs().set_export_every_rows(5);
    let storage = s.gcs.as_ref().unwrap().storage();
    let input: vertex_batch::GcsUri = "gs://cli-bkt/watch/in.jsonl".parse().unwrap();
    let lines_in: String = (0..20)
        .map(|i| {
            format!(
                "{{\"key\":\"w{i}\",\"request\":{{\"contents\":[{{\"role\":\"user\",\"parts\":[{{\"text\":\"Question {i}\"}}]}}]}}}}\n"
            )
        })
        .collect();
    storage.upload_bytes(&input, lines_in).await.unwrap();
    let client = s.emu.client("cli-project", "us-central1").unwrap();
    let job = client
        .create(
            &vertex_batch::JobSpec::new("gemini-2.0-flash-001")
                .input(input.to_string())
                .output("gs://cli-bkt/watch/out"),
        )
        .await
        .unwrap();
    let dir = crate::common::temp();
    let file = dir.path().join("watched.jsonl");
    let f = file.to_str().unwrap();
    let o = run(
        &s.env(),
        &["watch", job.name(), "--results", f, "--poll", "0.05"],
    )
    .await;
    assert_eq!(o.code, 0, "{}", o.stderr);
    let keys = |rows: &[Value]| {
        let mut k: Vec<String> = rows
            .iter()
            .map(|r| r["key"].as_str().unwrap().to_owned())
            .collect();
        k.sort();
        k
    };
    let all = lines(&file);
    let mut unique = keys(&all);
    unique.dedup();
    assert_eq!((all.len(), unique.len()), (20, 20));

    // A run killed while writing: 12 whole lines and a torn one. The
    // re-run cuts the torn line and appends the 8 keys missing.
    let text = std::fs::read_to_string(&file).unwrap();
    let mut kept: String = text.lines().take(12).map(|l| format!("{l}\n")).collect();
    kept.push_str("{\"key\":\"w1");
    std::fs::write(&file, kept).unwrap();
    let o = run(
        &s.env(),
        &["watch", job.name(), "--results", f, "--poll", "0.05"],
    )
    .await;
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert!(o.stderr.contains("12 rows already there"), "{}", o.stderr);
    let again = lines(&file);
    assert_eq!(keys(&again), keys(&all), "every key once, whole lines only");

    // A file that is not RESULTS is refused, untouched.
    let other = dir.path().join("prompts.jsonl");
    let text = "{\"key\":\"a\",\"request\":{}}\n{\"key\":\"b\",\"request\":{}}";
    std::fs::write(&other, text).unwrap();
    let o = run(
        &s.env(),
        &["watch", job.name(), "--results", other.to_str().unwrap()],
    )
    .await;
    assert_eq!(o.code, 2, "{}", o.stderr);
    assert!(o.stderr.contains("not a RESULTS line"), "{}", o.stderr);
    assert_eq!(std::fs::read_to_string(&other).unwrap(), text);
}
