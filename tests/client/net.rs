//! Real networks: connections that stall, a service that fails for a
//! while, and proxies — each against a loopback server written here that
//! counts what it sees. The clock is tokio's paused one wherever time
//! matters, so idle timeouts and backoff waits pass instantly and the
//! tests wait on events, never on the wall clock.

use std::{
    collections::HashMap,
    convert::Infallible,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use bytes::Bytes;
use futures::TryStreamExt;
use http_body_util::{BodyExt, Full};
use hyper::{body::Incoming, Request, Response};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    time::Instant,
};
use vertex_batch::{
    emulator::Emulator, policy::RetryPolicy, storage::Storage, transport::Credentials, Client,
    Error, GcsUri,
};

fn uri(s: &str) -> GcsUri {
    s.parse().unwrap()
}

/// A storage client for the loopback server at `url`: plaintext, no
/// credentials, no proxy from the environment.
fn storage_at(url: &str) -> vertex_batch::storage::StorageBuilder {
    Storage::builder().ignore_env().emulator_host(url)
}

/// Fails a test that would otherwise wait forever (on the paused clock,
/// this hour passes as soon as nothing else can happen).
async fn within_an_hour<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(3600), f)
        .await
        .expect("the call never ended")
}

/// Reads one request head (through the blank line) from `sock`, as
/// lowercase text; `None` when the peer closed first.
async fn read_head(sock: &mut TcpStream) -> Option<String> {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        match sock.read(&mut byte).await {
            Ok(1) => buf.push(byte[0]),
            _ => return None,
        }
    }
    Some(String::from_utf8_lossy(&buf).to_lowercase())
}

fn body_of(n: usize) -> Vec<u8> {
    (0..n).map(|i| b'a' + (i % 26) as u8).collect()
}

// ---------------------------------------------------------------------
// Stalled connections (the idle timeout)
// ---------------------------------------------------------------------

/// What a stalling server does with its first connection.
#[derive(Clone, Copy)]
enum Stall {
    /// Reads the request, never answers.
    BeforeAnswer,
    /// Answers the head and the first `n` bytes of the object, then goes
    /// silent.
    MidBody(usize),
    /// Reads the head only, never the body, never answers.
    WithoutReading,
}

/// A loopback server whose first connection stalls as `stall` says (and
/// is held open, silent, for the rest of the test); later connections are
/// answered properly: a metadata look-up with JSON, a download (whole or
/// from a `Range: bytes=N-`) with `object`, an upload with its metadata.
/// Returns the URL and the heads of the requests seen.
async fn stalling_server(stall: Stall, object: Vec<u8>) -> (String, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let heads = Arc::new(Mutex::new(Vec::new()));
    let seen = heads.clone();
    tokio::spawn(async move {
        let mut first = true;
        let mut held = Vec::new();
        while let Ok((mut sock, _)) = listener.accept().await {
            if std::mem::take(&mut first) {
                let Some(head) = read_head(&mut sock).await else {
                    continue;
                };
                seen.lock().unwrap().push(head);
                if let Stall::MidBody(n) = stall {
                    let answer = format!(
                        "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nx-goog-generation: 7\r\n\r\n",
                        object.len()
                    );
                    sock.write_all(answer.as_bytes()).await.unwrap();
                    sock.write_all(&object[..n]).await.unwrap();
                }
                held.push(sock); // silent from here on
                continue;
            }
            let seen = seen.clone();
            let object = object.clone();
            tokio::spawn(async move {
                while let Some(head) = read_head(&mut sock).await {
                    seen.lock().unwrap().push(head.clone());
                    let length = header(&head, "content-length").map_or(0, |v| v.parse().unwrap());
                    let mut sink = vec![0u8; length];
                    sock.read_exact(&mut sink).await.unwrap();
                    let (status, body) = if head.contains("alt=media") {
                        let from: usize = header(&head, "range")
                            .and_then(|r| r.strip_prefix("bytes=")?.strip_suffix('-')?.parse().ok())
                            .unwrap_or(0);
                        let status = if from > 0 {
                            "206 Partial Content"
                        } else {
                            "200 OK"
                        };
                        (status, object[from..].to_vec())
                    } else {
                        let meta = format!(
                            r#"{{"bucket":"bkt","name":"o","size":"{}","generation":"7"}}"#,
                            if head.starts_with("post") {
                                length
                            } else {
                                object.len()
                            }
                        );
                        ("200 OK", meta.into_bytes())
                    };
                    let answer = format!(
                        "HTTP/1.1 {status}\r\ncontent-length: {}\r\nx-goog-generation: 7\r\n\r\n",
                        body.len()
                    );
                    sock.write_all(answer.as_bytes()).await.unwrap();
                    sock.write_all(&body).await.unwrap();
                }
            });
        }
    });
    (url, heads)
}

/// A header's value in a lowercased head.
fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
        .map(str::trim)
}

/// A download whose connection goes silent mid-body fails after the idle
/// timeout with a retryable error, and `read_resuming` reads on from the
/// last byte received, on the same generation: every byte once.
#[tokio::test(start_paused = true)]
async fn a_download_that_stalls_mid_body_resumes_after_the_idle_timeout() {
    let object = body_of(200_000);
    let (url, heads) = stalling_server(Stall::MidBody(70_000), object.clone()).await;
    let s = storage_at(&url).build().unwrap();
    let started = Instant::now();
    let got: Vec<Bytes> = within_an_hour(s.read_resuming(&uri("gs://bkt/o")).try_collect())
        .await
        .unwrap();
    assert!(got.concat() == object, "every byte once, in order");
    assert!(
        started.elapsed() >= Duration::from_secs(60),
        "{:?}",
        started.elapsed()
    );
    let heads = heads.lock().unwrap().clone();
    assert_eq!(heads.len(), 2, "{heads:?}");
    assert_eq!(
        header(&heads[1], "range"),
        Some("bytes=70000-"),
        "{}",
        heads[1]
    );
    assert!(heads[1].contains("generation=7"), "{}", heads[1]);

    // A plain read reports the stall: retryable, no HTTP status.
    let (url, _) = stalling_server(Stall::MidBody(10), object.clone()).await;
    let s = storage_at(&url)
        .idle_timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let started = Instant::now();
    let read: Result<Vec<Bytes>, Error> =
        within_an_hour(async { s.read(&uri("gs://bkt/o"), None).await?.try_collect().await }).await;
    let err = read.unwrap_err();
    assert!(err.is_retryable(), "{err}");
    assert!(
        matches!(
            err,
            Error::Storage {
                http_status: None,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(
        err.to_string().contains("no data from the server for 5s"),
        "{err}"
    );
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_secs(5) && waited < Duration::from_secs(6),
        "{waited:?}"
    );
}

/// A server that takes the request and never answers: the look-up fails
/// after the idle timeout and is asked again.
#[tokio::test(start_paused = true)]
async fn a_request_that_gets_no_answer_is_tried_again_after_the_idle_timeout() {
    let (url, heads) = stalling_server(Stall::BeforeAnswer, body_of(3)).await;
    let s = storage_at(&url).build().unwrap();
    let started = Instant::now();
    let found = within_an_hour(s.metadata(&uri("gs://bkt/o")))
        .await
        .unwrap();
    assert_eq!(found.map(|o| o.size()), Some(3));
    assert!(
        started.elapsed() >= Duration::from_secs(60),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(heads.lock().unwrap().len(), 2);
}

/// An upload whose connection stops taking bytes (the server reads the
/// head and nothing more) fails after the idle timeout and is sent again.
#[tokio::test(start_paused = true)]
async fn an_upload_the_server_stops_reading_is_sent_again_after_the_idle_timeout() {
    let (url, heads) = stalling_server(Stall::WithoutReading, Vec::new()).await;
    let s = storage_at(&url).build().unwrap();
    // More than the socket buffers hold, so the writer really blocks.
    let data = Bytes::from(body_of(32 << 20));
    let started = Instant::now();
    let info = within_an_hour(s.upload_bytes(&uri("gs://bkt/o"), data.clone()))
        .await
        .unwrap();
    assert_eq!(info.size(), data.len() as u64);
    assert!(
        started.elapsed() >= Duration::from_secs(60),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(heads.lock().unwrap().len(), 2);
}

// ---------------------------------------------------------------------
// One retry budget
// ---------------------------------------------------------------------

/// A small Cloud Storage in memory behind a hyper server: objects with
/// generations, metadata, whole downloads, listing, media uploads (with
/// `ifGenerationMatch`), deletes, bucket creation. Its first `fail`
/// requests are answered 503; `lose` (when set) makes the first upload
/// write `lose`'s bytes and then answer 503, as a service whose answer is
/// lost.
#[derive(Default)]
struct Gcs {
    objects: Mutex<HashMap<String, (Vec<u8>, u64)>>,
    requests: AtomicUsize,
    fail: usize,
    /// From when it is set, every request is answered 503.
    fail_all: std::sync::atomic::AtomicBool,
    lose: Mutex<Option<Vec<u8>>>,
}

impl Gcs {
    fn calls(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }

    fn put(&self, name: &str, data: &[u8]) -> u64 {
        let mut objects = self.objects.lock().unwrap();
        let generation = objects.get(name).map_or(1, |(_, g)| g + 1);
        objects.insert(name.to_owned(), (data.to_vec(), generation));
        generation
    }

    fn meta(name: &str, data: &[u8], generation: u64) -> String {
        serde_json::json!({
            "bucket": "bkt", "name": name, "size": data.len().to_string(),
            "generation": generation.to_string(),
        })
        .to_string()
    }

    async fn answer(&self, req: Request<Incoming>) -> Response<Full<Bytes>> {
        let n = self.requests.fetch_add(1, Ordering::SeqCst);
        let (parts, body) = req.into_parts();
        let body = body.collect().await.unwrap().to_bytes();
        let reply = |status: u16, text: String| {
            Response::builder()
                .status(status)
                .header("content-type", "application/json")
                .body(Full::new(Bytes::from(text)))
                .unwrap()
        };
        if n < self.fail || self.fail_all.load(Ordering::SeqCst) {
            return reply(
                503,
                r#"{"error":{"code":503,"message":"backend unavailable"}}"#.into(),
            );
        }
        let query: HashMap<String, String> = parts
            .uri
            .query()
            .map(|q| {
                q.split('&')
                    .filter_map(|kv| kv.split_once('='))
                    .map(|(k, v)| {
                        let v = percent_encoding::percent_decode_str(v).decode_utf8_lossy();
                        (k.to_owned(), v.into_owned())
                    })
                    .collect()
            })
            .unwrap_or_default();
        let path = percent_encoding::percent_decode_str(parts.uri.path())
            .decode_utf8_lossy()
            .into_owned();
        let object = path.strip_prefix("/storage/v1/b/bkt/o/").map(str::to_owned);
        match (parts.method.as_str(), object) {
            // A resumable session: its URL names the object.
            ("POST", _) if query.get("uploadType").map(String::as_str) == Some("resumable") => {
                let session = format!(
                    "/upload/storage/v1/b/bkt/o?upload_id=1&name={}",
                    query["name"]
                );
                Response::builder()
                    .header("location", session)
                    .body(Full::new(Bytes::new()))
                    .unwrap()
            }
            // One chunk completes the object.
            ("PUT", _) if query.contains_key("upload_id") => {
                let generation = self.put(&query["name"], &body);
                reply(200, Gcs::meta(&query["name"], &body, generation))
            }
            ("POST", _) if path == "/upload/storage/v1/b/bkt/o" => {
                let name = query["name"].clone();
                if let Some(lost) = self.lose.lock().unwrap().take() {
                    self.put(&name, &lost);
                    return reply(503, String::new());
                }
                let current = self.objects.lock().unwrap().get(&name).map(|(_, g)| *g);
                if let Some(want) = query.get("ifGenerationMatch") {
                    if current.unwrap_or(0).to_string() != *want {
                        return reply(
                            412,
                            r#"{"error":{"code":412,"message":"Precondition Failed"}}"#.into(),
                        );
                    }
                }
                let generation = self.put(&name, &body);
                reply(200, Gcs::meta(&name, &body, generation))
            }
            ("POST", _) if path == "/storage/v1/b" => reply(200, "{}".into()),
            ("GET", _) if path == "/storage/v1/b/bkt/o" => {
                let objects = self.objects.lock().unwrap();
                let items: Vec<serde_json::Value> = objects
                    .iter()
                    .map(|(k, (d, g))| serde_json::from_str(&Gcs::meta(k, d, *g)).unwrap())
                    .collect();
                reply(200, serde_json::json!({ "items": items }).to_string())
            }
            (method, Some(name)) => {
                let found = self.objects.lock().unwrap().get(&name).cloned();
                let Some((data, generation)) = found else {
                    return reply(
                        404,
                        r#"{"error":{"code":404,"message":"No such object"}}"#.into(),
                    );
                };
                match method {
                    "DELETE" => {
                        self.objects.lock().unwrap().remove(&name);
                        reply(204, String::new())
                    }
                    _ if query.get("alt").map(String::as_str) == Some("media") => {
                        Response::builder()
                            .header("x-goog-generation", generation.to_string())
                            .body(Full::new(Bytes::from(data)))
                            .unwrap()
                    }
                    _ => reply(200, Gcs::meta(&name, &data, generation)),
                }
            }
            _ => reply(400, format!("unexpected {} {path}", parts.method)),
        }
    }
}

/// Serves `gcs` on loopback; returns its URL.
async fn serve(gcs: Arc<Gcs>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        while let Ok((sock, _)) = listener.accept().await {
            let gcs = gcs.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req| {
                    let gcs = gcs.clone();
                    async move { Ok::<_, Infallible>(gcs.answer(req).await) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(sock), service)
                    .await;
            });
        }
    });
    url
}

fn failing(n: usize) -> Arc<Gcs> {
    Arc::new(Gcs {
        fail: n,
        ..Default::default()
    })
}

/// Every storage call, against a service whose first three answers are
/// 503: each succeeds on its fourth try under a budget of five.
#[tokio::test(start_paused = true)]
async fn every_storage_call_succeeds_after_passing_503s_when_the_budget_allows() {
    let policy = RetryPolicy::default().with_max_attempts(5);
    let o = uri("gs://bkt/dir/a.jsonl");
    for call in [
        "metadata", "list", "read", "resuming", "delete", "bucket", "upload", "create", "replace",
        "writer",
    ] {
        let gcs = failing(3);
        gcs.put("dir/a.jsonl", b"{}\n");
        let s = storage_at(&serve(gcs.clone()).await)
            .retry_policy(policy.clone())
            .build()
            .unwrap();
        let started = Instant::now();
        match call {
            "metadata" => assert!(s.metadata(&o).await.unwrap().is_some()),
            "list" => {
                let all: Vec<_> = s.list(&uri("gs://bkt/dir/")).try_collect().await.unwrap();
                assert_eq!(all.len(), 1);
            }
            "read" => {
                let got: Vec<Bytes> = s.read(&o, None).await.unwrap().try_collect().await.unwrap();
                assert_eq!(got.concat(), b"{}\n");
            }
            "resuming" => {
                let got: Vec<Bytes> = s.read_resuming(&o).try_collect().await.unwrap();
                assert_eq!(got.concat(), b"{}\n");
            }
            "delete" => {
                s.delete(&o).await.unwrap();
                assert!(gcs.objects.lock().unwrap().is_empty());
            }
            "bucket" => s.create_bucket("p", "bkt").await.unwrap(),
            "upload" => {
                assert_eq!(s.upload_bytes(&o, "new").await.unwrap().size(), 3);
            }
            "create" => {
                let fresh = uri("gs://bkt/dir/fresh");
                assert!(s.create_bytes(&fresh, "x").await.unwrap().is_some());
            }
            "replace" => {
                assert!(s.replace_bytes(&o, "y", 1).await.unwrap().is_some());
            }
            _ => {
                // The session start is tried again; then one chunk.
                let mut w = s.writer(&o).await.unwrap();
                w.write(b"abc").await.unwrap();
                assert_eq!(w.finish().await.unwrap().size(), 3);
                assert_eq!(gcs.objects.lock().unwrap()["dir/a.jsonl"].0, b"abc");
            }
        }
        let chunk = usize::from(call == "writer");
        assert_eq!(gcs.calls(), 4 + chunk, "{call}: three 503s and the answer");
        // The waits were the policy's (1 s, 2 s, 4 s, full jitter), not nothing.
        assert!(started.elapsed() <= Duration::from_secs(7), "{call}");
    }
}

/// A budget spent: the last 503 comes back, saying the retries are used
/// up, after exactly the attempts allowed — or within the time allowed.
#[tokio::test(start_paused = true)]
async fn an_exhausted_budget_ends_with_a_clear_error() {
    let gcs = failing(usize::MAX);
    let url = serve(gcs.clone()).await;
    let s = storage_at(&url)
        .retry_policy(RetryPolicy::default().with_max_attempts(3))
        .build()
        .unwrap();
    let err = s.metadata(&uri("gs://bkt/o")).await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::Storage {
                http_status: Some(503),
                ..
            }
        ),
        "{err:?}"
    );
    let text = err.to_string();
    assert!(text.contains("backend unavailable"), "{text}");
    assert!(text.contains("gave up after 3 attempts"), "{text}");
    assert_eq!(gcs.calls(), 3);

    // A time budget: unlimited attempts, 20 s in all.
    let gcs = failing(usize::MAX);
    let s = storage_at(&serve(gcs.clone()).await)
        .retry_policy(
            RetryPolicy::default()
                .with_max_attempts(u32::MAX)
                .with_total_timeout(Some(Duration::from_secs(20))),
        )
        .build()
        .unwrap();
    let started = Instant::now();
    let err = s.upload_bytes(&uri("gs://bkt/o"), "x").await.unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );
    assert!(gcs.calls() >= 2, "retried at least once: {}", gcs.calls());
    assert!(
        err.to_string().contains("the retry budget is spent"),
        "{err}"
    );

    // An upload chunk: each failed try is followed by a question about
    // what the service kept; two tries allowed.
    let gcs = Arc::new(Gcs::default());
    let s = storage_at(&serve(gcs.clone()).await)
        .retry_policy(RetryPolicy::default().with_max_attempts(2))
        .build()
        .unwrap();
    let mut w = s.writer(&uri("gs://bkt/o")).await.unwrap();
    w.write(b"abc").await.unwrap();
    gcs.requests.store(0, Ordering::SeqCst);
    gcs.fail_all.store(true, Ordering::SeqCst);
    let err = w.finish().await.unwrap_err();
    assert!(
        err.to_string().contains("gave up after 2 attempts"),
        "{err}"
    );
    assert_eq!(
        gcs.calls(),
        3,
        "a chunk, a status question, the chunk again"
    );

    // No retries at all: one call.
    let gcs = failing(usize::MAX);
    let s = storage_at(&serve(gcs.clone()).await)
        .retry_policy(RetryPolicy::none())
        .build()
        .unwrap();
    let err = s.delete(&uri("gs://bkt/o")).await.unwrap_err();
    assert!(!err.to_string().contains("gave up"), "{err}");
    assert_eq!(gcs.calls(), 1);
}

/// A storage client built from a JobService client takes its retry
/// policy: one budget for both APIs (and an explicit policy wins).
#[tokio::test(start_paused = true)]
async fn storage_built_from_a_client_shares_its_retry_budget() {
    let client = Client::builder()
        .ignore_env()
        .project("p")
        .emulator_host("127.0.0.1:1")
        .retry_policy(RetryPolicy::none())
        .build()
        .unwrap();
    let gcs = failing(usize::MAX);
    let url = serve(gcs.clone()).await;
    let s = storage_at(&url).credentials_of(&client).build().unwrap();
    assert!(s.metadata(&uri("gs://bkt/o")).await.is_err());
    assert_eq!(gcs.calls(), 1, "the client's policy: no retries");
    let s = storage_at(&url)
        .credentials_of(&client)
        .retry_policy(RetryPolicy::default().with_max_attempts(2))
        .build()
        .unwrap();
    assert!(s.metadata(&uri("gs://bkt/o")).await.is_err());
    assert_eq!(gcs.calls(), 3, "the explicit policy: two attempts");
}

/// A create-only write whose first try did land (its answer lost) is
/// refused on the retry (`412`): the object is read back, and holding
/// exactly these bytes it counts as written; holding another writer's,
/// it does not. The same for a generation-matched replace.
#[tokio::test(start_paused = true)]
async fn a_repeated_conditional_write_is_judged_by_the_object_it_finds() {
    let o = uri("gs://bkt/manifest.json");
    let gcs = Arc::new(Gcs::default());
    *gcs.lose.lock().unwrap() = Some(b"ours".to_vec());
    let s = storage_at(&serve(gcs.clone()).await).build().unwrap();
    let info = s.create_bytes(&o, "ours").await.unwrap();
    assert_eq!(info.map(|i| (i.size(), i.generation())), Some((4, Some(1))));

    let gcs = Arc::new(Gcs::default());
    *gcs.lose.lock().unwrap() = Some(b"theirs".to_vec());
    let s = storage_at(&serve(gcs.clone()).await).build().unwrap();
    assert_eq!(s.create_bytes(&o, "ours").await.unwrap(), None);
    assert_eq!(gcs.objects.lock().unwrap()["manifest.json"].0, b"theirs");

    // Refused on the first try: someone else's object, not read back.
    let before = gcs.calls();
    assert_eq!(s.create_bytes(&o, "theirs").await.unwrap(), None);
    assert_eq!(gcs.calls(), before + 1);

    // A replace from generation 1 that landed (generation 2), answer lost.
    let gcs = Arc::new(Gcs::default());
    gcs.put("manifest.json", b"v1");
    *gcs.lose.lock().unwrap() = Some(b"v2".to_vec());
    let s = storage_at(&serve(gcs.clone()).await).build().unwrap();
    let info = s.replace_bytes(&o, "v2", 1).await.unwrap();
    assert_eq!(info.and_then(|i| i.generation()), Some(2));
}

// ---------------------------------------------------------------------
// Proxies
// ---------------------------------------------------------------------

/// What a test proxy saw: each `CONNECT` head (lowercased), and the first
/// bytes the client sent inside each tunnel.
#[derive(Default)]
struct Seen {
    connects: Vec<String>,
    first_bytes: Vec<Vec<u8>>,
}

/// A loopback HTTP `CONNECT` proxy that counts what passes through it.
/// With `splice`, it answers `200` and splices the tunnel to its target;
/// without, it answers `200`, keeps the first bytes the client sends
/// (a TLS ClientHello, for an https destination) and closes. `status`
/// other than 200 refuses every tunnel with that status.
async fn proxy(splice: bool, status: u16) -> (String, Arc<Mutex<Seen>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Seen::default()));
    let rec = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let rec = rec.clone();
            tokio::spawn(async move {
                let Some(head) = read_head(&mut sock).await else {
                    return;
                };
                rec.lock().unwrap().connects.push(head.clone());
                if status != 200 {
                    let answer = format!("HTTP/1.1 {status} No\r\ncontent-length: 0\r\n\r\n");
                    let _ = sock.write_all(answer.as_bytes()).await;
                    return;
                }
                let target = head
                    .strip_prefix("connect ")
                    .and_then(|rest| rest.split_whitespace().next())
                    .unwrap_or_default()
                    .to_owned();
                let _ = sock
                    .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
                    .await;
                if splice {
                    if let Ok(mut out) = TcpStream::connect(&target).await {
                        let _ = tokio::io::copy_bidirectional(&mut sock, &mut out).await;
                    }
                    return;
                }
                let mut buf = vec![0u8; 16 << 10];
                let n = sock.read(&mut buf).await.unwrap_or(0);
                rec.lock().unwrap().first_bytes.push(buf[..n].to_vec());
            });
        }
    });
    (format!("http://{addr}"), seen)
}

/// gRPC calls to the emulator go through a proxy given to the builder
/// (plaintext and loopback included: it was asked for), one `CONNECT` to
/// the emulator's address; a `no_proxy` host goes direct.
#[tokio::test]
async fn grpc_calls_go_through_an_explicit_proxy_unless_no_proxy_names_the_host() {
    let dir = tempfile::tempdir().unwrap();
    let emu = Emulator::start(dir.path()).await.unwrap();
    let (proxy_url, seen) = proxy(true, 200).await;
    let client = Client::builder()
        .ignore_env()
        .project("p")
        .emulator_host(emu.host())
        .proxy(&proxy_url)
        .build()
        .unwrap();
    let err = client.get("123").await.unwrap_err();
    assert_eq!(err.code(), Some(tonic::Code::NotFound), "{err}");
    let jobs: Vec<_> = client
        .list(&vertex_batch::ListOptions::new())
        .try_collect()
        .await
        .unwrap();
    assert!(jobs.is_empty());
    {
        let seen = seen.lock().unwrap();
        assert_eq!(
            seen.connects.len(),
            1,
            "one connection, reused: {:?}",
            seen.connects
        );
        assert!(
            seen.connects[0].starts_with(&format!("connect {} http/1.1", emu.addr())),
            "{}",
            seen.connects[0]
        );
    }
    let direct = Client::builder()
        .ignore_env()
        .project("p")
        .emulator_host(emu.host())
        .proxy(&proxy_url)
        .no_proxy("127.0.0.1")
        .build()
        .unwrap();
    assert!(direct.get("123").await.is_err());
    assert_eq!(seen.lock().unwrap().connects.len(), 1, "bypassed");
}

/// Storage calls go through a proxy given to the builder, its user and
/// password sent as `Proxy-Authorization` (and shown nowhere); a
/// `no_proxy` host goes direct.
#[tokio::test]
async fn storage_calls_go_through_an_explicit_proxy_with_its_credentials() {
    let gcs = Arc::new(Gcs::default());
    gcs.put("a", b"hello");
    let url = serve(gcs.clone()).await;
    let (proxy_url, seen) = proxy(true, 200).await;
    let with_auth = proxy_url.replace("http://", "http://alice:s%40cret@");
    let s = storage_at(&url).proxy(&with_auth).build().unwrap();
    assert!(!format!("{s:?}").contains("cret"));
    assert!(!format!("{:?}", storage_at(&url).proxy(&with_auth)).contains("cret"));
    assert_eq!(
        s.metadata(&uri("gs://bkt/a"))
            .await
            .unwrap()
            .unwrap()
            .size(),
        5
    );
    let got: Vec<Bytes> = s
        .read(&uri("gs://bkt/a"), None)
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert_eq!(got.concat(), b"hello");
    let tunnels = {
        let seen = seen.lock().unwrap();
        assert!(!seen.connects.is_empty());
        let target = url.trim_start_matches("http://");
        for head in &seen.connects {
            assert!(
                head.starts_with(&format!("connect {target} http/1.1")),
                "{head}"
            );
            // base64("alice:s@cret")
            assert_eq!(
                header(head, "proxy-authorization"),
                Some("basic ywxpy2u6c0bjcmv0")
            );
        }
        seen.connects.len()
    };
    assert_eq!(gcs.calls(), 2);
    let direct = storage_at(&url)
        .proxy(&with_auth)
        .no_proxy("localhost, 127.0.0.0/8")
        .build()
        .unwrap();
    assert!(direct.metadata(&uri("gs://bkt/a")).await.unwrap().is_some());
    assert_eq!(gcs.calls(), 3);
    assert_eq!(seen.lock().unwrap().connects.len(), tunnels, "bypassed");

    // A proxy that refuses: the error names it, never its password.
    let (refusing, seen) = proxy(true, 407).await;
    let refusing = refusing.replace("http://", "http://alice:s%40cret@");
    let s = storage_at(&url)
        .proxy(&refusing)
        .retry_policy(RetryPolicy::none())
        .build()
        .unwrap();
    let err = s.metadata(&uri("gs://bkt/a")).await.unwrap_err();
    let text = format!("{err} {err:?}");
    assert!(text.contains("through the proxy at 127.0.0.1:"), "{text}");
    assert!(text.contains("proxy authorization required"), "{text}");
    assert!(!text.contains("cret") && !text.contains("alice"), "{text}");
    assert_eq!(seen.lock().unwrap().connects.len(), 1);
}

/// Toward Google's TLS endpoints, the proxy sees the `CONNECT` and then
/// only a TLS handshake: the bearer token never crosses it in the clear,
/// for the gRPC channel and Cloud Storage alike. (The test proxy goes no
/// further than the ClientHello: nothing leaves this machine.)
#[tokio::test]
async fn through_a_proxy_tokens_travel_only_inside_tls() {
    const TOKEN: &str = "ya29.secret-token-for-the-proxy-test";
    let (proxy_url, seen) = proxy(false, 200).await;
    let client = Client::builder()
        .ignore_env()
        .project("p")
        .credentials(Credentials::access_token(TOKEN))
        .proxy(&proxy_url)
        .retry_policy(RetryPolicy::none())
        .build()
        .unwrap();
    assert!(client.get("123").await.is_err());
    let storage = Storage::builder()
        .ignore_env()
        .credentials(Credentials::access_token(TOKEN))
        .proxy(&proxy_url)
        .retry_policy(RetryPolicy::none())
        .build()
        .unwrap();
    assert!(storage.metadata(&uri("gs://bkt/o")).await.is_err());
    let seen = seen.lock().unwrap();
    let targets: Vec<&str> = seen
        .connects
        .iter()
        .filter_map(|h| h.lines().next())
        .collect();
    assert_eq!(
        targets,
        [
            "connect us-central1-aiplatform.googleapis.com:443 http/1.1",
            "connect storage.googleapis.com:443 http/1.1"
        ]
    );
    assert_eq!(seen.first_bytes.len(), 2);
    for bytes in &seen.first_bytes {
        // A TLS handshake record (a ClientHello), nothing in the clear.
        assert_eq!(bytes.first(), Some(&0x16), "{bytes:?}");
        let text = String::from_utf8_lossy(bytes);
        assert!(!text.contains(TOKEN) && !text.contains("authorization"));
    }
    for head in &seen.connects {
        assert!(!head.contains("secret-token"), "{head}");
    }
}

/// Credentials never go in plaintext through a proxy: such a client is
/// refused at build time, for both APIs.
#[tokio::test]
async fn plaintext_with_credentials_through_a_proxy_is_refused() {
    let err = Client::builder()
        .ignore_env()
        .project("p")
        .endpoint("http://127.0.0.1:8080")
        .credentials(Credentials::access_token("ya29.secret"))
        .proxy("http://127.0.0.1:3128")
        .build()
        .unwrap_err();
    assert!(matches!(err, Error::Config { .. }), "{err}");
    assert!(
        err.to_string()
            .contains("through the proxy at 127.0.0.1:3128"),
        "{err}"
    );
    let err = Storage::builder()
        .ignore_env()
        .emulator_host("127.0.0.1:4443")
        .credentials(Credentials::access_token("ya29.secret"))
        .proxy("http://127.0.0.1:3128")
        .build()
        .unwrap_err();
    assert!(matches!(err, Error::Config { .. }), "{err}");
    assert!(!err.to_string().contains("ya29.secret"));
}
