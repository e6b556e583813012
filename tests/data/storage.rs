//! Every Cloud Storage call the crate makes, against fake-gcs-server.

use std::sync::{Arc, Mutex};

use crate::common::gcs::FakeGcs;
use futures::{StreamExt, TryStreamExt};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpListener,
};
use vertex_batch::{storage::Storage, transport::Credentials, Client, Error, GcsUri};

fn uri(s: &str) -> GcsUri {
    s.parse().unwrap()
}

async fn read_all(storage: &Storage, u: &GcsUri, range: Option<std::ops::Range<u64>>) -> Vec<u8> {
    let chunks: Vec<bytes::Bytes> = storage
        .read(u, range)
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    chunks.concat()
}

/// A client for the (fake) storage server at `url`, plaintext, no
/// credentials.
fn at(url: &str) -> Storage {
    Storage::builder()
        .ignore_env()
        .emulator_host(url)
        .build()
        .unwrap()
}

fn pattern(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 7 % 251) as u8).collect()
}

#[tokio::test]
async fn a_small_upload_reads_back_whole_and_by_range() {
    let gcs = FakeGcs::start();
    gcs.buckets(&["bkt"]).await;
    let s = gcs.storage();
    let u = uri("gs://bkt/dir/small.jsonl");
    let info = s
        .upload_bytes(&u, &b"{\"a\":1}\n{\"b\":2}\n"[..])
        .await
        .unwrap();
    assert_eq!((info.uri(), info.size()), (&u, 16));
    assert_eq!(read_all(&s, &u, None).await, b"{\"a\":1}\n{\"b\":2}\n");
    assert_eq!(read_all(&s, &u, Some(8..15)).await, b"{\"b\":2}");
    assert_eq!(s.metadata(&u).await.unwrap().unwrap().size(), 16);
    assert_eq!(s.metadata(&uri("gs://bkt/nope")).await.unwrap(), None);
}

#[tokio::test]
async fn a_resumable_upload_of_many_chunks_is_byte_exact() {
    let gcs = FakeGcs::start();
    gcs.buckets(&["bkt"]).await;
    let s = gcs.storage_small_chunks();
    let data = pattern((1 << 20) + 300_000 + 17);
    let u = uri("gs://bkt/big.bin");
    let mut w = s.writer(&u).await.unwrap();
    for piece in data.chunks(100_003) {
        w.write(piece).await.unwrap();
    }
    assert_eq!(w.len(), data.len() as u64);
    let sent_before_finish = w.chunks_sent();
    assert!(sent_before_finish >= 5, "{sent_before_finish} chunks");
    let info = w.finish().await.unwrap();
    assert_eq!(info.size(), data.len() as u64);
    let back = read_all(&s, &u, None).await;
    assert_eq!(back.len(), data.len());
    assert!(back == data, "content differs");
    // A ranged read in the middle of a chunk boundary.
    let r = (256 << 10) - 10..(256 << 10) + 10;
    assert_eq!(
        read_all(&s, &u, Some(r.clone())).await,
        data[r.start as usize..r.end as usize]
    );
}

#[tokio::test]
async fn an_upload_from_a_reader_and_an_empty_object() {
    let gcs = FakeGcs::start();
    gcs.buckets(&["bkt"]).await;
    let s = gcs.storage_small_chunks();
    let data = pattern(600_000);
    let info = s.upload(&uri("gs://bkt/r.bin"), &data[..]).await.unwrap();
    assert_eq!(info.size(), 600_000);
    assert!(read_all(&s, &uri("gs://bkt/r.bin"), None).await == data);
    let empty = s.writer(&uri("gs://bkt/empty")).await.unwrap();
    assert_eq!(empty.finish().await.unwrap().size(), 0);
}

#[tokio::test]
async fn listing_spans_pages_and_respects_the_prefix() {
    let gcs = FakeGcs::start();
    gcs.buckets(&["bkt"]).await;
    let s = gcs.storage();
    for i in 0..5 {
        s.upload_bytes(&uri(&format!("gs://bkt/out/p{i}.jsonl")), vec![b'x'; i])
            .await
            .unwrap();
    }
    s.upload_bytes(&uri("gs://bkt/other/x"), &b"x"[..])
        .await
        .unwrap();
    let listed: Vec<_> = s
        .list_paged(&uri("gs://bkt/out/"), Some(2))
        .try_collect()
        .await
        .unwrap();
    let names: Vec<String> = listed.iter().map(|o| o.uri().to_string()).collect();
    assert_eq!(
        names,
        (0..5)
            .map(|i| format!("gs://bkt/out/p{i}.jsonl"))
            .collect::<Vec<_>>()
    );
    assert_eq!(listed[3].size(), 3);
    assert_eq!(s.list(&uri("gs://bkt")).count().await, 6);
    s.delete(&uri("gs://bkt/other/x")).await.unwrap();
    assert_eq!(s.list(&uri("gs://bkt")).count().await, 5);
}

#[tokio::test]
async fn a_missing_object_or_bucket_is_a_404_naming_it() {
    let gcs = FakeGcs::start();
    gcs.buckets(&["bkt"]).await;
    let s = gcs.storage();
    let err = match s.read(&uri("gs://bkt/missing.jsonl"), None).await {
        Ok(_) => panic!("read of a missing object succeeded"),
        Err(e) => e,
    };
    match &err {
        Error::Storage {
            http_status: Some(404),
            message,
            ..
        } => assert!(message.contains("gs://bkt/missing.jsonl"), "{message}"),
        other => panic!("{other:?}"),
    }
    assert!(!err.is_retryable());
    let listed: Result<Vec<_>, _> = s.list(&uri("gs://no-such-bucket/x")).try_collect().await;
    assert!(matches!(
        listed,
        Err(Error::Storage {
            http_status: Some(404),
            ..
        })
    ));
}

/// A loopback HTTP/1.1 server that records each request's headers and
/// answers 404 with a Cloud Storage error body.
async fn recording_server() -> (String, Arc<Mutex<Vec<String>>>) {
    answering_server(
        404,
        r#"{"error":{"code":404,"message":"No such object","errors":[]}}"#,
    )
    .await
}

#[tokio::test]
async fn storage_shares_the_clients_token_and_an_emulator_gets_none() {
    let (url, seen) = recording_server().await;
    let client = Client::builder()
        .ignore_env()
        .project("p")
        .credentials(Credentials::access_token("ya29.shared-secret"))
        .build()
        .unwrap();
    let s = Storage::builder()
        .ignore_env()
        .credentials_of(&client)
        .endpoint(&url)
        .build()
        .unwrap();
    assert!(!format!("{s:?}").contains("shared-secret"));
    let err = s.metadata(&uri("gs://bkt/x")).await;
    assert!(matches!(err, Ok(None)), "{err:?}");
    let err = s.read(&uri("gs://bkt/x"), None).await.err().unwrap();
    assert!(!err.to_string().contains("shared-secret"), "{err}");
    assert!(!format!("{err:?}").contains("shared-secret"));
    {
        let heads = seen.lock().unwrap();
        assert_eq!(heads.len(), 2);
        for h in heads.iter() {
            assert!(
                h.contains("authorization: bearer ya29.shared-secret"),
                "{h}"
            );
        }
    }
    seen.lock().unwrap().clear();
    let emu = Storage::builder()
        .ignore_env()
        .emulator_host(url.trim_start_matches("http://"))
        .build()
        .unwrap();
    let _ = emu.metadata(&uri("gs://bkt/x")).await;
    let heads = seen.lock().unwrap();
    assert_eq!(heads.len(), 1);
    assert!(!heads[0].contains("authorization"), "{}", heads[0]);
}

/// A loopback proxy in front of `target` whose first `failures` connections
/// are answered `503 Service Unavailable` (then closed); later ones are
/// forwarded byte for byte.
async fn flaky_proxy(target: &str, failures: usize) -> (String, Arc<Mutex<usize>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let target = target.trim_start_matches("http://").to_owned();
    let refused = Arc::new(Mutex::new(0usize));
    let count = refused.clone();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let fail = {
                let mut n = count.lock().unwrap();
                (*n < failures).then(|| *n += 1).is_some()
            };
            let target = target.clone();
            tokio::spawn(async move {
                if fail {
                    let mut buf = [0u8; 8192];
                    let _ = sock.read(&mut buf).await;
                    let _ = sock
                        .write_all(b"HTTP/1.1 503 Service Unavailable\r\nconnection: close\r\ncontent-length: 0\r\n\r\n")
                        .await;
                    return;
                }
                if let Ok(mut out) = tokio::net::TcpStream::connect(&target).await {
                    let _ = tokio::io::copy_bidirectional(&mut sock, &mut out).await;
                }
            });
        }
    });
    (url, refused)
}

/// Listing, reading and metadata look-ups are tried again after a 503:
/// a passing failure of the storage service loses nothing.
#[tokio::test]
async fn idempotent_storage_calls_survive_passing_503s() {
    let gcs = FakeGcs::start();
    gcs.buckets(&["flaky"]).await;
    let direct = gcs.storage();
    let obj = uri("gs://flaky/dir/a.jsonl");
    direct
        .upload_bytes(&obj, b"{\"a\":1}\n".to_vec())
        .await
        .unwrap();
    for (what, failures) in [("metadata", 2), ("list", 2), ("read", 2)] {
        let (url, refused) = flaky_proxy(&gcs.url, failures).await;
        let s = Storage::builder()
            .ignore_env()
            .emulator_host(&url)
            .build()
            .unwrap();
        match what {
            "metadata" => assert!(s.metadata(&obj).await.unwrap().is_some()),
            "list" => {
                let found: Vec<_> = s.list(&uri("gs://flaky/dir/")).try_collect().await.unwrap();
                assert_eq!(found.len(), 1);
            }
            _ => {
                assert_eq!(read_all(&s, &obj, None).await, b"{\"a\":1}\n");
            }
        }
        assert_eq!(
            *refused.lock().unwrap(),
            failures,
            "{what}: the 503s were met"
        );
    }
}

/// A proxy in front of `target` that cuts its first `cuts` connections
/// after forwarding `keep` bytes of the answer (a download that breaks
/// mid-body); later connections are forwarded whole.
async fn cutting_proxy(target: &str, cuts: usize, keep: usize) -> (String, Arc<Mutex<usize>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let target = target.trim_start_matches("http://").to_owned();
    let cut = Arc::new(Mutex::new(0usize));
    let count = cut.clone();
    tokio::spawn(async move {
        while let Ok((sock, _)) = listener.accept().await {
            let cutting = {
                let mut n = count.lock().unwrap();
                (*n < cuts).then(|| *n += 1).is_some()
            };
            let target = target.clone();
            tokio::spawn(async move {
                let Ok(out) = tokio::net::TcpStream::connect(&target).await else {
                    return;
                };
                let (mut cr, mut cw) = sock.into_split();
                let (mut or, mut ow) = out.into_split();
                let up = tokio::spawn(async move {
                    let _ = tokio::io::copy(&mut cr, &mut ow).await;
                });
                if cutting {
                    let mut left = keep;
                    let mut buf = vec![0u8; 4096];
                    while left > 0 {
                        let Ok(n) = or.read(&mut buf[..left.min(4096)]).await else {
                            break;
                        };
                        if n == 0 || cw.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                        left -= n;
                    }
                    up.abort();
                    // Dropping both halves resets the connection mid-body.
                } else {
                    let _ = tokio::io::copy(&mut or, &mut cw).await;
                    up.abort();
                }
            });
        }
    });
    (url, cut)
}

/// A download that breaks mid-body reads on from the last byte received:
/// every byte once, in order.
#[tokio::test]
async fn a_broken_download_resumes_where_it_stopped() {
    let gcs = FakeGcs::start();
    gcs.buckets(&["resume"]).await;
    let obj = uri("gs://resume/big.jsonl");
    let body: Vec<u8> = (0..20_000u32)
        .flat_map(|i| format!("{{\"row\":{i}}}\n").into_bytes())
        .collect();
    gcs.storage()
        .upload_bytes(&obj, body.clone())
        .await
        .unwrap();
    let (url, cut) = cutting_proxy(&gcs.url, 2, 60_000).await;
    let s = at(&url);
    let got: Vec<bytes::Bytes> = s.read_resuming(&obj).try_collect().await.unwrap();
    assert_eq!(*cut.lock().unwrap(), 2, "the download broke twice");
    assert_eq!(got.concat(), body);
}

/// Create-only writes: of two writers of one name, the first wins and the
/// second is told. The local layout enforces it itself (a hard link never
/// replaces a file). fake-gcs-server ignores `ifGenerationMatch` on
/// uploads, so against Cloud Storage the test checks the request carries
/// `ifGenerationMatch=0` and that the service's 412 reads as "already
/// there".
#[tokio::test]
async fn create_bytes_never_replaces_an_object() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("once")).unwrap();
    let s = Storage::local(dir.path());
    let obj = uri("gs://once/batch/manifest.json");
    assert!(s
        .create_bytes(&obj, b"first".to_vec())
        .await
        .unwrap()
        .is_some());
    assert!(s
        .create_bytes(&obj, b"second".to_vec())
        .await
        .unwrap()
        .is_none());
    assert_eq!(read_all(&s, &obj, None).await, b"first");

    let (url, seen) = answering_server(
        412,
        r#"{"error":{"code":412,"message":"Precondition Failed","errors":[]}}"#,
    )
    .await;
    let remote = at(&url);
    assert!(remote
        .create_bytes(&obj, b"x".to_vec())
        .await
        .unwrap()
        .is_none());
    let head = seen.lock().unwrap()[0].clone();
    assert!(head.contains("ifgenerationmatch=0"), "{head}");
}

/// A loopback HTTP/1.1 server answering every request with `status` and
/// `body`, recording each request's head (lowercased).
async fn answering_server(status: u16, body: &'static str) -> (String, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let rec = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let rec = rec.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut tmp = [0u8; 4096];
                while let Ok(n) = sock.read(&mut tmp).await {
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&tmp[..n]);
                    if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        rec.lock()
                            .unwrap()
                            .push(String::from_utf8_lossy(&buf[..end]).to_lowercase());
                        let resp = format!(
                            "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
                            body.len()
                        );
                        let _ = sock.write_all(resp.as_bytes()).await;
                        return;
                    }
                }
            });
        }
    });
    (url, seen)
}

/// Object names with the characters URLs reserve or refuse (`&`, `+`, `=`,
/// `%`, `#`, `?`, `;`, `[`, `]`, `^`, `|`, `\`, braces, backquotes,
/// spaces) and non-ASCII ones keep their exact names through simple
/// and resumable uploads, listing, ranged reads, look-ups and deletes.
#[tokio::test]
async fn names_with_reserved_characters_keep_their_exact_names() {
    let gcs = FakeGcs::start();
    gcs.buckets(&["odd"]).await;
    let s = gcs.storage_small_chunks();
    let simple = uri("gs://odd/in/a&b=c+d%20e #1?.jsonl");
    let resumable = uri("gs://odd/in/ü/x+y&z=%;[a]^|\\{b}`.jsonl");
    s.upload_bytes(&simple, &b"simple"[..]).await.unwrap();
    let data = pattern(300_000);
    let info = s.upload(&resumable, &data[..]).await.unwrap();
    assert_eq!((info.uri(), info.size()), (&resumable, 300_000));
    let mut names: Vec<String> = s
        .list(&uri("gs://odd/in/"))
        .map_ok(|o| o.uri().to_string())
        .try_collect()
        .await
        .unwrap();
    names.sort();
    assert_eq!(names, [simple.to_string(), resumable.to_string()]);
    assert_eq!(read_all(&s, &simple, Some(1..4)).await, b"imp");
    assert!(read_all(&s, &resumable, None).await == data);
    assert_eq!(s.metadata(&simple).await.unwrap().unwrap().size(), 6);
    s.delete(&simple).await.unwrap();
    assert_eq!(s.metadata(&simple).await.unwrap(), None);
    assert!(s.metadata(&resumable).await.unwrap().is_some());
}

/// A ranged read answered with the whole object (`200`) is an error, not
/// bytes read twice (unless the range was the whole object); a range past
/// the end (`416`) is an error naming the status.
#[tokio::test]
async fn a_ranged_read_checks_the_answer_is_the_range() {
    let (url, seen) = answering_server(200, "0123456789").await;
    let s = at(&url);
    let err = s
        .read(&uri("gs://bkt/o"), Some(5..u64::MAX))
        .await
        .err()
        .unwrap();
    assert!(err.to_string().contains("ignored the byte range"), "{err}");
    assert!(!err.is_retryable());
    assert!(seen.lock().unwrap()[0].contains("range: bytes=5-"));
    assert_eq!(read_all(&s, &uri("gs://bkt/o"), None).await, b"0123456789");

    // A range from 0 to the end may be answered with the whole object.
    assert_eq!(
        read_all(&s, &uri("gs://bkt/o"), Some(0..u64::MAX)).await,
        b"0123456789"
    );

    let (url, _) = answering_server(416, "").await;
    let s = at(&url);
    let past_the_end = s
        .read(&uri("gs://bkt/o"), Some(10..20))
        .await
        .err()
        .unwrap();
    assert!(matches!(
        past_the_end,
        Error::Storage {
            http_status: Some(416),
            ..
        }
    ));
}

/// One request as a scripted server saw it.
#[derive(Debug, Clone)]
struct Seen {
    head: String,
    body: Vec<u8>,
}

impl Seen {
    fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }
}

/// A loopback HTTP/1.1 server answering requests in order with `script`
/// (status, extra headers, body), one connection per request, recording
/// each request with its body.
async fn scripted_server(
    script: Vec<(u16, &'static str, &'static str)>,
) -> (String, Arc<Mutex<Vec<Seen>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let rec = seen.clone();
    tokio::spawn(async move {
        let mut script = script.into_iter();
        while let Ok((mut sock, _)) = listener.accept().await {
            let mut buf = Vec::new();
            let mut tmp = [0u8; 65536];
            let end = loop {
                if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                    break end;
                }
                match sock.read(&mut tmp).await {
                    Ok(0) | Err(_) => break usize::MAX,
                    Ok(n) => buf.extend_from_slice(&tmp[..n]),
                }
            };
            if end == usize::MAX {
                continue;
            }
            let head = String::from_utf8_lossy(&buf[..end]).into_owned();
            let mut seen = Seen {
                head,
                body: buf[end + 4..].to_vec(),
            };
            let len: usize = seen
                .header("content-length")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            while seen.body.len() < len {
                match sock.read(&mut tmp).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => seen.body.extend_from_slice(&tmp[..n]),
                }
            }
            rec.lock().unwrap().push(seen);
            let (status, headers, body) = script.next().unwrap_or((500, "", ""));
            let resp = format!(
                "HTTP/1.1 {status} X\r\n{headers}content-type: application/json\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
                body.len()
            );
            let _ = sock.write_all(resp.as_bytes()).await;
        }
    });
    (url, seen)
}

/// The resumable protocol when requests fail: after a failed chunk the
/// writer asks what the service kept (`bytes */*`) and sends only the rest;
/// when the failed last piece did arrive, the status answer completes the
/// upload. Session requests go to the endpoint (not to the host the
/// service named) and carry exactly the bytes their `Content-Range` says.
#[tokio::test]
async fn failed_chunks_resume_from_what_the_service_kept() {
    let done =
        r#"{"bucket":"bkt","name":"in/part.jsonl","size":"600000","storageClass":"ARCHIVE"}"#;
    let (url, seen) = scripted_server(vec![
        // The session, named on another host.
        (
            200,
            "location: http://elsewhere.invalid:9/upload/s?upload_id=x1\r\n",
            "",
        ),
        (503, "", ""),                          // first chunk fails
        (308, "range: bytes=0-99999\r\n", ""),  // 100,000 bytes were kept
        (308, "range: bytes=0-262143\r\n", ""), // the rest of chunk 1
        (308, "range: bytes=0-524287\r\n", ""), // chunk 2
        (503, "", ""),                          // the last piece fails...
        (200, "", done),                        // ...but had arrived
    ])
    .await;
    let s = Storage::builder()
        .ignore_env()
        .emulator_host(&url)
        .chunk_size(256 << 10)
        .build()
        .unwrap();
    let data = pattern(600_000);
    let info = s
        .upload(&uri("gs://bkt/in/part.jsonl"), &data[..])
        .await
        .unwrap();
    assert_eq!(info.size(), 600_000);
    let seen = seen.lock().unwrap();
    let ranges: Vec<&str> = seen
        .iter()
        .map(|r| r.header("content-range").unwrap_or("-"))
        .collect();
    assert_eq!(
        ranges,
        [
            "-",
            "bytes 0-262143/*",
            "bytes */*",
            "bytes 100000-262143/*",
            "bytes 262144-524287/*",
            "bytes 524288-599999/600000",
            "bytes */*",
        ]
    );
    assert!(
        seen[1].head.starts_with("PUT /upload/s?upload_id=x1 "),
        "{}",
        seen[1].head
    );
    for r in &seen[1..] {
        if let Some((start, end)) = r
            .header("content-range")
            .and_then(|v| v.strip_prefix("bytes "))
            .and_then(|v| v.split('/').next())
            .and_then(|v| v.split_once('-'))
        {
            let (start, end): (usize, usize) = (start.parse().unwrap(), end.parse().unwrap());
            assert!(r.body == data[start..=end], "bytes {start}-{end}");
        } else {
            assert!(r.body.is_empty());
        }
        assert!(r.header("authorization").is_none());
    }
}

/// A service that claims bytes never sent, or completes an object at
/// another size, is an error, not a silently wrong object.
#[tokio::test]
async fn a_session_that_lies_about_the_bytes_is_an_error() {
    for (answer, expect) in [
        ((308, "range: bytes=0-999999\r\n", ""), "never sent"),
        (
            (200, "", r#"{"bucket":"bkt","name":"o","size":"5"}"#),
            "completed the object at 5 bytes",
        ),
    ] {
        let (url, _) = scripted_server(vec![
            (200, "location: /upload/s?upload_id=y\r\n", ""),
            answer,
        ])
        .await;
        let s = Storage::builder()
            .ignore_env()
            .emulator_host(&url)
            .build()
            .unwrap();
        let err = s
            .upload(&uri("gs://bkt/o"), &pattern(1000)[..])
            .await
            .unwrap_err();
        assert!(err.to_string().contains(expect), "{err}");
        assert!(!err.to_string().contains("upload_id"), "{err}");
    }
}
