//! The client against a recording test server: the exact requests and
//! headers of both Google samples, error mapping, status details, secrets.

use std::time::Duration;

use crate::common::recorder::Recorder;
use serde_json::json;
use vertex_batch::{
    error::{status_with_details, StatusDetail},
    policy::RetryPolicy,
    proto::{aiplatform as pb, rpc},
    transport::Credentials,
    Client, Error, JobSpec, JobState,
};

const TOKEN: &str = "ya29.super-secret-token-value";

fn fast_retries() -> RetryPolicy {
    RetryPolicy::default()
        .with_initial_backoff(Duration::from_millis(1))
        .with_max_backoff(Duration::from_millis(5))
}

async fn client_for(addr: std::net::SocketAddr) -> Client {
    Client::builder()
        .ignore_env()
        .project("local-project")
        .location("us-central1")
        .endpoint(format!("http://{addr}"))
        .credentials(Credentials::access_token(TOKEN))
        .quota_project("billing-project")
        .retry_policy(fast_retries())
        .build()
        .unwrap()
}

fn gcs_sample() -> JobSpec {
    JobSpec::new("gemini-2.0-flash-001")
        .display_name("batch-predict-gcs-test-001")
        .input("gs://cloud-samples-data/batch/prompt_for_batch_gemini_predict.jsonl")
        .output("gs://my-bucket/batch-output")
        .model_parameters(json!({"temperature": 0.2, "maxOutputTokens": 200}))
}

#[tokio::test]
async fn gcs_sample_sends_the_exact_request_and_google_headers() {
    let (server, addr) = Recorder::start().await;
    let client = client_for(addr).await;
    let job = client.create(&gcs_sample()).await.unwrap();
    assert_eq!(job.state(), JobState::Pending);
    assert_eq!(job.model(), "publishers/google/models/gemini-2.0-flash-001");

    let reqs = server.requests();
    assert_eq!(reqs.len(), 1);
    let r = &reqs[0];
    assert_eq!(r.method, "CreateBatchPredictionJob");
    assert_eq!(
        r.body,
        json!({
            "parent": "projects/local-project/locations/us-central1",
            "batchPredictionJob": {
                "displayName": "batch-predict-gcs-test-001",
                "model": "publishers/google/models/gemini-2.0-flash-001",
                "modelParameters": {"temperature": 0.2, "maxOutputTokens": 200.0},
                "inputConfig": {
                    "instancesFormat": "jsonl",
                    "gcsSource": {"uris": ["gs://cloud-samples-data/batch/prompt_for_batch_gemini_predict.jsonl"]}
                },
                "outputConfig": {
                    "predictionsFormat": "jsonl",
                    "gcsDestination": {"outputUriPrefix": "gs://my-bucket/batch-output"}
                }
            }
        })
    );
    assert_eq!(
        r.headers["x-goog-request-params"],
        "parent=projects%2Flocal-project%2Flocations%2Fus-central1"
    );
    assert_eq!(r.headers["authorization"], format!("Bearer {TOKEN}"));
    assert_eq!(r.headers["x-goog-user-project"], "billing-project");
    let api_client = &r.headers["x-goog-api-client"];
    assert!(api_client.starts_with("gl-rust/1."), "{api_client}");
    assert!(api_client.contains(" grpc/0.14 "), "{api_client}");
    assert!(api_client.ends_with(concat!(" vertex-batch/", env!("CARGO_PKG_VERSION"))));
}

#[tokio::test]
async fn bigquery_sample_sends_bigquery_formats_and_get_routes_by_name() {
    let (server, addr) = Recorder::start().await;
    let client = client_for(addr).await;
    let spec = JobSpec::new("gemini-2.5-flash")
        .display_name("batch-predict-bq")
        .input("bq://storage-samples.generative_ai.batch_requests_for_multimodal_input")
        .output("bq://my-project.my_dataset.results")
        .temperature(0.2)
        .max_output_tokens(200);
    let job = client.create(&spec).await.unwrap();
    let got = client.get(job.id()).await.unwrap();
    assert_eq!(got.name(), job.name());

    let reqs = server.requests();
    assert_eq!(
        reqs[0].body["batchPredictionJob"]["inputConfig"],
        json!({"instancesFormat": "bigquery", "bigquerySource": {"inputUri": "bq://storage-samples.generative_ai.batch_requests_for_multimodal_input"}})
    );
    assert_eq!(
        reqs[0].body["batchPredictionJob"]["outputConfig"],
        json!({"predictionsFormat": "bigquery", "bigqueryDestination": {"outputUri": "bq://my-project.my_dataset.results"}})
    );
    assert_eq!(reqs[1].method, "GetBatchPredictionJob");
    assert_eq!(reqs[1].body, json!({"name": job.name()}));
    assert_eq!(
        reqs[1].headers["x-goog-request-params"],
        format!("name={}", job.name().replace('/', "%2F"))
    );
}

#[tokio::test]
async fn emulator_host_sends_no_credentials() {
    let (server, addr) = Recorder::start().await;
    let client = Client::builder()
        .ignore_env()
        .project("local-project")
        .emulator_host(addr.to_string())
        .build()
        .unwrap();
    client.create(&gcs_sample()).await.unwrap();
    let headers = &server.requests()[0].headers;
    assert!(!headers.contains_key("authorization"));
    assert!(!headers.contains_key("x-goog-user-project"));
    assert!(headers.contains_key("x-goog-api-client"));
}

#[tokio::test]
async fn invalid_specs_never_reach_the_network() {
    let (server, addr) = Recorder::start().await;
    let client = client_for(addr).await;
    let bad = [
        (gcs_sample().output("gs:///nobucket"), "output_uri"),
        (
            JobSpec::new("").input("gs://bkt/a").output("gs://bkt/o"),
            "model",
        ),
        (gcs_sample().label("Bad Key", "v"), "labels"),
        (
            gcs_sample().model_parameters(json!("hot")),
            "model_parameters",
        ),
        (
            JobSpec::new("m").input("bq://too.few").output("gs://bkt/o"),
            "input_uri",
        ),
    ];
    for (spec, field) in bad {
        match client.create(&spec).await {
            Err(Error::Validation(v)) => assert_eq!(v.field(), field),
            other => panic!("expected a validation error on {field}, got {other:?}"),
        }
    }
    for name in [
        "abc",
        "projects/p/locations/europe-west4/batchPredictionJobs/1",
    ] {
        assert!(matches!(client.get(name).await, Err(Error::Validation(_))));
    }
    assert!(server.requests().is_empty());
}

#[tokio::test]
async fn every_grpc_code_maps_into_the_error_type() {
    let (server, addr) = Recorder::start().await;
    let client = client_for(addr)
        .await
        .with_retry_policy(RetryPolicy::none());
    let job = client.create(&gcs_sample()).await.unwrap();
    use tonic::Code::*;
    for code in [
        Cancelled,
        Unknown,
        InvalidArgument,
        DeadlineExceeded,
        NotFound,
        AlreadyExists,
        PermissionDenied,
        ResourceExhausted,
        FailedPrecondition,
        Aborted,
        OutOfRange,
        Unimplemented,
        Internal,
        Unavailable,
        DataLoss,
        Unauthenticated,
    ] {
        server.push_error(tonic::Status::new(code, format!("scripted {code:?}")));
        let err = client.get(job.name()).await.unwrap_err();
        assert_eq!(err.code(), Some(code), "{err}");
        let svc = err.as_service().expect("a service error");
        assert_eq!(svc.message(), format!("scripted {code:?}"));
        assert_eq!(
            err.is_retryable(),
            matches!(code, Unavailable | ResourceExhausted | DeadlineExceeded),
            "{code:?}"
        );
    }
}

#[tokio::test]
async fn status_details_are_decoded() {
    let (server, addr) = Recorder::start().await;
    let client = client_for(addr).await;
    server.push_error(status_with_details(
        tonic::Code::InvalidArgument,
        "bad job",
        &[
            StatusDetail::BadRequest(rpc::BadRequest {
                field_violations: vec![rpc::bad_request::FieldViolation {
                    field: "batch_prediction_job.output_config".into(),
                    description: "required".into(),
                    ..Default::default()
                }],
            }),
            StatusDetail::ErrorInfo(rpc::ErrorInfo {
                reason: "LOCATION_MISMATCH".into(),
                domain: "aiplatform.googleapis.com".into(),
                metadata: Default::default(),
            }),
            StatusDetail::QuotaFailure(rpc::QuotaFailure {
                violations: vec![rpc::quota_failure::Violation {
                    subject: "project:local-project".into(),
                    description: "batch jobs per region".into(),
                    ..Default::default()
                }],
            }),
            StatusDetail::RetryInfo(rpc::RetryInfo {
                retry_delay: Some(Duration::from_secs(3).into()),
            }),
        ],
    ));
    let err = client.create(&gcs_sample()).await.unwrap_err();
    let svc = err.as_service().unwrap();
    assert_eq!(svc.code(), tonic::Code::InvalidArgument);
    assert_eq!(svc.details().len(), 4);
    assert_eq!(
        svc.field_violations()[0].field,
        "batch_prediction_job.output_config"
    );
    assert_eq!(svc.error_info().unwrap().reason, "LOCATION_MISMATCH");
    assert_eq!(err.retry_delay(), Some(Duration::from_secs(3)));
    assert!(
        matches!(&svc.details()[2], StatusDetail::QuotaFailure(q) if q.violations[0].subject == "project:local-project")
    );
    let text = err.to_string();
    assert!(
        text.contains("field batch_prediction_job.output_config: required"),
        "{text}"
    );
    assert!(text.contains("reason LOCATION_MISMATCH"), "{text}");
}

#[tokio::test]
async fn get_retries_unavailable_but_create_never_does() {
    let (server, addr) = Recorder::start().await;
    let client = client_for(addr).await;
    server.push_error(tonic::Status::unavailable("blip"));
    let err = client.create(&gcs_sample()).await.unwrap_err();
    assert_eq!(err.code(), Some(tonic::Code::Unavailable));
    assert_eq!(server.requests().len(), 1);

    let job = client.create(&gcs_sample()).await.unwrap();
    server.push_error(tonic::Status::unavailable("blip"));
    server.push_error(tonic::Status::unavailable("blip"));
    let got = client.get(job.name()).await.unwrap();
    assert_eq!(got.name(), job.name());
    let gets = server
        .requests()
        .iter()
        .filter(|r| r.method == "GetBatchPredictionJob")
        .count();
    assert_eq!(gets, 3);

    server.push_error(tonic::Status::not_found("gone"));
    assert_eq!(
        client.get(job.name()).await.unwrap_err().code(),
        Some(tonic::Code::NotFound)
    );
    let gets_after = server
        .requests()
        .iter()
        .filter(|r| r.method == "GetBatchPredictionJob")
        .count();
    assert_eq!(gets_after, 4, "NOT_FOUND is not retried");
}

/// A `grpc-timeout` value (`<digits><unit>`) as a duration.
fn grpc_timeout(value: &str) -> Duration {
    let (digits, unit) = value.split_at(value.len() - 1);
    let n: u64 = digits.parse().unwrap();
    match unit {
        "H" => Duration::from_secs(n * 3600),
        "M" => Duration::from_secs(n * 60),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        other => panic!("unit {other:?} in {value:?}"),
    }
}

#[tokio::test]
async fn each_attempt_carries_the_policy_deadline_and_a_hung_one_is_retried() {
    let (server, addr) = Recorder::start().await;
    let client = client_for(addr).await;
    let job = client.create(&gcs_sample()).await.unwrap();
    let created = &server.requests()[0];
    assert_eq!(
        grpc_timeout(&created.headers["grpc-timeout"]),
        Duration::from_secs(60),
        "the default per-attempt deadline"
    );

    // The first Get hangs far past its 1 s deadline; the second answers.
    let short =
        client.with_retry_policy(fast_retries().with_attempt_timeout(Some(Duration::from_secs(1))));
    server.push_hang(Duration::from_secs(60));
    let got = short.get(job.name()).await.unwrap();
    assert_eq!(got.name(), job.name());
    let gets: Vec<_> = server
        .requests()
        .into_iter()
        .filter(|r| r.method == "GetBatchPredictionJob")
        .collect();
    assert_eq!(gets.len(), 2, "the hung attempt was cut off and retried");
    for r in &gets {
        assert_eq!(
            grpc_timeout(&r.headers["grpc-timeout"]),
            Duration::from_secs(1)
        );
    }

    // No attempt outlives the total budget.
    let budget =
        client.with_retry_policy(fast_retries().with_total_timeout(Some(Duration::from_secs(5))));
    budget.get(job.name()).await.unwrap();
    let sent = grpc_timeout(&server.requests().pop().unwrap().headers["grpc-timeout"]);
    assert!(
        sent <= Duration::from_secs(5) && sent > Duration::from_secs(4),
        "{sent:?}"
    );

    // Without either limit nothing is sent.
    let unbounded = client.with_retry_policy(
        fast_retries()
            .with_attempt_timeout(None)
            .with_total_timeout(None),
    );
    unbounded.get(job.name()).await.unwrap();
    let last = server.requests().pop().unwrap();
    assert!(!last.headers.contains_key("grpc-timeout"));
}

#[tokio::test]
async fn tokens_never_show_in_debug_or_errors() {
    let (server, addr) = Recorder::start().await;
    let client = client_for(addr).await;
    // A server that echoes the token back in its error: it is scrubbed.
    server.push_echo_token();
    let err = client.create(&gcs_sample()).await.unwrap_err();
    assert_eq!(err.code(), Some(tonic::Code::PermissionDenied));
    assert!(
        err.to_string().contains("[REDACTED]"),
        "the echo came back: {err}"
    );
    // The token was sent...
    assert_eq!(
        server.requests()[0].headers["authorization"],
        format!("Bearer {TOKEN}")
    );
    // ...but is never printed.
    for text in [
        format!("{client:?}"),
        format!("{err}"),
        format!("{err:?}"),
        format!("{:?}", Credentials::access_token(TOKEN)),
        format!(
            "{:?}",
            Client::builder().credentials(Credentials::access_token(TOKEN))
        ),
    ] {
        assert!(!text.contains("super-secret"), "{text}");
    }

    // A token that cannot be a header fails the call with an auth error that
    // does not echo it.
    let bad = Client::builder()
        .ignore_env()
        .project("p1-project")
        .endpoint(format!("http://{addr}"))
        .credentials(Credentials::access_token("super-secret\nline"))
        .build()
        .unwrap();
    let err = bad.get("1").await.unwrap_err();
    assert!(matches!(err, Error::Auth { .. }), "{err:?}");
    assert!(!format!("{err} {err:?}").contains("super-secret"));

    // So does a connection failure.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let refused = Client::builder()
        .ignore_env()
        .project("p1-project")
        .endpoint(format!("http://127.0.0.1:{port}"))
        .credentials(Credentials::access_token(TOKEN))
        .retry_policy(RetryPolicy::none())
        .build()
        .unwrap();
    let err = refused.get("1").await.unwrap_err();
    assert!(matches!(err, Error::Transport { .. }), "{err:?}");
    assert!(err.is_retryable());
    assert!(!format!("{err} {err:?}").contains("super-secret"));
}

#[tokio::test]
async fn a_non_grpc_answer_says_the_endpoint_is_wrong() {
    use http_body_util::Full;
    use hyper::{body::Bytes, service::service_fn, Response};
    use hyper_util::rt::{TokioExecutor, TokioIo};

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let svc = service_fn(|_req| async {
                    Ok::<_, std::convert::Infallible>(
                        Response::builder()
                            .status(404)
                            .header("content-type", "text/html")
                            .body(Full::new(Bytes::from(
                                "<html><body>404 Not Found</body></html>",
                            )))
                            .unwrap(),
                    )
                });
                let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    let client = Client::builder()
        .ignore_env()
        .project("local-project")
        .emulator_host(addr.to_string())
        .retry_policy(RetryPolicy::none())
        .build()
        .unwrap();
    let err = client.get("1").await.unwrap_err();
    assert!(matches!(err, Error::NotGrpc { .. }), "{err:?}");
    assert!(err.to_string().contains("invalid endpoint"), "{err}");
}

#[tokio::test]
async fn plaintext_to_a_remote_host_needs_an_opt_in() {
    let err = Client::builder()
        .ignore_env()
        .project("local-project")
        .endpoint("http://192.0.2.1:8080")
        .build()
        .unwrap_err();
    assert!(
        matches!(err, Error::Config { ref message, .. } if message.contains("plaintext")),
        "{err}"
    );
    let ok = Client::builder()
        .ignore_env()
        .project("local-project")
        .endpoint("http://192.0.2.1:8080")
        .allow_plaintext(true)
        .credentials(Credentials::anonymous())
        .build();
    assert!(ok.is_ok());
    let tls = Client::builder()
        .ignore_env()
        .project("local-project")
        .location("europe-west4")
        .build()
        .unwrap();
    assert_eq!(
        tls.endpoint(),
        "https://europe-west4-aiplatform.googleapis.com:443"
    );
    let remote_emulator = Client::builder()
        .ignore_env()
        .project("local-project")
        .emulator_host("192.0.2.1:8080")
        .credentials(Credentials::access_token(TOKEN))
        .build()
        .unwrap_err();
    assert!(
        remote_emulator.to_string().contains("plaintext"),
        "{remote_emulator}"
    );
    assert!(!remote_emulator.to_string().contains("super-secret"));
    let missing = Client::builder().ignore_env().build().unwrap_err();
    assert!(
        missing.to_string().contains("GOOGLE_CLOUD_PROJECT"),
        "{missing}"
    );
}

/// A state newer than this crate is kept, not read as UNSPECIFIED, and a
/// job with `end_time` set has ended whatever its state: a wait returns.
#[tokio::test]
async fn a_job_in_an_unknown_state_with_an_end_time_has_ended() {
    let (server, addr) = Recorder::start().await;
    let client = client_for(addr).await;
    let name = "projects/local-project/locations/us-central1/batchPredictionJobs/42";
    server.put_job(pb::BatchPredictionJob {
        name: name.into(),
        state: 99,
        end_time: Some(pbjson_types::Timestamp {
            seconds: 1_700_000_000,
            nanos: 0,
        }),
        ..Default::default()
    });
    let opts = vertex_batch::WaitOptions::new()
        .policy(vertex_batch::policy::PollPolicy::fixed(
            std::time::Duration::from_millis(5),
        ))
        .timeout(std::time::Duration::from_secs(20));
    let job = client.wait(name, &opts.any_end()).await.unwrap();
    assert_eq!(job.state(), JobState::Unrecognized(99));
    assert!(job.has_ended());
    assert!(!job.state().is_terminal());
    // The same job without an end time has not ended.
    let mut open = job.proto().clone();
    open.end_time = None;
    assert!(!vertex_batch::Job::from(open).has_ended());
}

/// `watch_many` gives the final snapshot of a job whose end shows only in
/// `end_time` — a state this crate does not know, or CANCELLING with the
/// end time set — as `watch` does, though state and counts are those of
/// the snapshot before.
#[tokio::test]
async fn watch_many_reports_a_job_that_ended_only_per_its_end_time() {
    use futures::StreamExt;
    let (server, addr) = Recorder::start().await;
    let client = client_for(addr).await;
    let jobs = "projects/local-project/locations/us-central1/batchPredictionJobs";
    let cancelling = format!("{jobs}/41");
    let unknown = format!("{jobs}/42");
    let open = |name: &str, state: i32| pb::BatchPredictionJob {
        name: name.into(),
        state,
        ..Default::default()
    };
    server.put_job(open(&cancelling, pb::JobState::Cancelling as i32));
    server.put_job(open(&unknown, 99));
    let opts = vertex_batch::client::WatchManyOptions::new()
        .gets_per_second(1000.0)
        .policy(vertex_batch::policy::PollPolicy::fixed(
            Duration::from_millis(5),
        ));
    let mut updates = std::pin::pin!(client.watch_many([&cancelling, &unknown], &opts));
    let next = |u: Option<(String, vertex_batch::Result<vertex_batch::Job>)>| {
        let (name, job) = u.expect("an update");
        (name, job.unwrap())
    };
    // The first look at each job, still open.
    let mut first = Vec::new();
    for _ in 0..2 {
        let u = tokio::time::timeout(Duration::from_secs(20), updates.next())
            .await
            .expect("a first snapshot");
        let (name, job) = next(u);
        assert!(!job.has_ended(), "{name}");
        first.push(name);
    }
    first.sort();
    assert_eq!(first, [cancelling.clone(), unknown.clone()]);
    // Both end; only `end_time` says so.
    let end_time = Some(pbjson_types::Timestamp {
        seconds: 1_700_000_000,
        nanos: 0,
    });
    for (name, state) in [
        (&cancelling, pb::JobState::Cancelling as i32),
        (&unknown, 99),
    ] {
        server.put_job(pb::BatchPredictionJob {
            end_time,
            ..open(name, state)
        });
    }
    let rest: Vec<_> = tokio::time::timeout(Duration::from_secs(20), updates.collect::<Vec<_>>())
        .await
        .expect("the stream ends once both jobs have ended");
    let mut ended: Vec<(String, JobState)> = rest
        .into_iter()
        .map(|u| {
            let (name, job) = next(Some(u));
            assert!(job.has_ended(), "{name}: {:?}", job.state());
            (name, job.state())
        })
        .collect();
    ended.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        ended,
        [
            (cancelling, JobState::Cancelling),
            (unknown, JobState::Unrecognized(99))
        ],
        "one final snapshot per job"
    );
}

/// A failed connection is `Error::Transport` whose source chain keeps the
/// typed errors: the `tonic::Status`, and under it the `io::Error`.
#[tokio::test]
async fn a_transport_error_keeps_its_typed_source() {
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let client = Client::builder()
        .ignore_env()
        .project("p")
        .emulator_host(closed.to_string())
        .retry_policy(RetryPolicy::none())
        .build()
        .unwrap();
    let err = client.get("123").await.unwrap_err();
    assert!(matches!(err, Error::Transport { .. }), "{err:?}");
    assert!(err.is_retryable());
    let source = std::error::Error::source(&err).expect("a source");
    assert!(
        source.downcast_ref::<tonic::Status>().is_some(),
        "{source:?}"
    );
    let mut cur = Some(source);
    let mut refused = false;
    while let Some(e) = cur {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            refused |= io.kind() == std::io::ErrorKind::ConnectionRefused;
        }
        cur = e.source();
    }
    assert!(refused, "the io::Error is reachable: {err:?}");
}

/// Classification looks at types, not message text: a service error whose
/// message happens to say "Content-Type" or "Timeout expired" stays the
/// service's error with its own code.
#[tokio::test]
async fn service_messages_that_mention_transport_words_stay_service_errors() {
    let (server, addr) = Recorder::start().await;
    let client = client_for(addr)
        .await
        .with_retry_policy(RetryPolicy::none());
    server.push_error(tonic::Status::invalid_argument(
        "the Content-Type of the input file is not text/html",
    ));
    let err = client.get("123").await.unwrap_err();
    assert!(matches!(err, Error::Service(_)), "{err:?}");
    assert_eq!(err.code(), Some(tonic::Code::InvalidArgument));
    server.push_error(tonic::Status::cancelled(
        "Timeout expired while the job was queued",
    ));
    let err = client.get("123").await.unwrap_err();
    assert_eq!(err.code(), Some(tonic::Code::Cancelled), "{err:?}");
}

#[tokio::test]
async fn a_wait_timeout_holds_while_a_poll_hangs() {
    let (server, addr) = Recorder::start().await;
    let client = client_for(addr).await;
    let job = client.create(&gcs_sample()).await.unwrap();
    // The Get hangs for a minute (each attempt may take 60 s, and retries
    // more); the wait's own deadline is far shorter and must win.
    server.push_hang(Duration::from_secs(60));
    let opts = vertex_batch::WaitOptions::new().timeout(Duration::from_millis(300));
    // Without the deadline around the poll, the wait would sit out the
    // minute (and then time out anyway): the outer limit tells them apart.
    let err = tokio::time::timeout(Duration::from_secs(20), client.wait(&job, &opts))
        .await
        .expect("the wait outlived its deadline while a poll hung")
        .unwrap_err();
    assert!(matches!(err, Error::Timeout { .. }), "{err:?}");
}

#[tokio::test]
async fn a_list_answering_the_token_it_was_sent_ends_with_an_error_not_a_loop() {
    use futures::TryStreamExt;
    let (server, addr) = Recorder::start().await;
    let client = client_for(addr).await;
    let err = client
        .list(&vertex_batch::ListOptions::new())
        .try_collect::<Vec<_>>()
        .await
        .unwrap_err();
    assert!(err.to_string().contains("page token it was sent"), "{err}");
    assert!(!err.is_retryable(), "{err}");
    let lists = server
        .requests()
        .iter()
        .filter(|r| r.method == "ListBatchPredictionJobs")
        .count();
    assert_eq!(lists, 2, "the first page, then the repeated token once");
}

#[tokio::test]
async fn a_list_whose_page_tokens_loop_ends_with_an_error_not_a_loop() {
    use futures::TryStreamExt;
    let (server, addr) = Recorder::start().await;
    server.cycle_list_tokens();
    let client = client_for(addr).await;
    // `a`, `b`, `a`, …: no token repeats the one just sent, and still the
    // pages never end.
    let listed = tokio::time::timeout(
        Duration::from_secs(10),
        client
            .list(&vertex_batch::ListOptions::new())
            .try_collect::<Vec<_>>(),
    )
    .await
    .expect("a loop of page tokens is read forever");
    let err = listed.unwrap_err();
    assert!(err.to_string().contains("page token"), "{err}");
    assert!(!err.is_retryable(), "{err}");
}

/// CountTokens goes the way JobService calls go: the qualified model as
/// `endpoint` and `model`, the request's counted fields (and only those),
/// the routing header, the credentials, retries on UNAVAILABLE, and a
/// token echoed in an error scrubbed.
#[tokio::test]
async fn count_tokens_sends_the_counted_fields_with_google_headers_and_retries() {
    let (server, addr) = Recorder::start().await;
    let client = client_for(addr).await;
    let request = json!({
        "contents": [{"role": "user", "parts": [{"text": "Why is the sky blue?"}]}],
        "system_instruction": {"parts": [{"text": "Be brief."}]},
        "generationConfig": {"maxOutputTokens": 20},
        "labels": {"team": "a"},
        "safetySettings": [{"category": "HARM_CATEGORY_HARASSMENT", "threshold": "BLOCK_NONE"}]
    });
    server.push_error(tonic::Status::unavailable("try again"));
    let count = client
        .count_tokens("gemini-2.5-flash", &request)
        .await
        .unwrap();
    assert_eq!(count.total_tokens, 10);
    assert_eq!(count.total_billable_characters, 100);

    let reqs = server.requests();
    assert_eq!(reqs.len(), 2, "UNAVAILABLE was retried once");
    let endpoint =
        "projects/local-project/locations/us-central1/publishers/google/models/gemini-2.5-flash";
    for r in &reqs {
        assert_eq!(r.method, "CountTokens");
        assert_eq!(
            r.body,
            json!({
                "endpoint": endpoint,
                "model": endpoint,
                "contents": [{"role": "user", "parts": [{"text": "Why is the sky blue?"}]}],
                "systemInstruction": {"parts": [{"text": "Be brief."}]},
                "generationConfig": {"maxOutputTokens": 20}
            })
        );
        assert_eq!(
            r.headers["x-goog-request-params"],
            format!("endpoint={}", endpoint.replace('/', "%2F"))
        );
        assert_eq!(r.headers["authorization"], format!("Bearer {TOKEN}"));
        assert_eq!(r.headers["x-goog-user-project"], "billing-project");
        assert!(r.headers["x-goog-api-client"].contains("vertex-batch/"));
    }

    // Many requests, a few at a time: the counts add up.
    let many = (0..9).map(|i| json!({"contents": [{"parts": [{"text": format!("q{i}")}]}]}));
    let total = client
        .count_tokens_many("gemini-2.5-flash", many, 3)
        .await
        .unwrap();
    assert_eq!(total.total_tokens, 90);
    assert_eq!(server.requests().len(), 2 + 9);

    // A careless server's echo of the token is scrubbed here too.
    server.push_echo_token();
    let err = client
        .count_tokens("gemini-2.5-flash", &request)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(tonic::Code::PermissionDenied));
    assert!(!format!("{err} {err:?}").contains("super-secret"), "{err}");
}
