//! Reading: listing objects page by page, streamed and ranged reads (resumed
//! after a dropped connection), metadata, delete, bucket creation.

use std::ops::Range;

use bytes::Bytes;
use futures::{stream::BoxStream, StreamExt, TryStreamExt};
use http::{header::RANGE, StatusCode};
use http_body_util::BodyExt;
use tame_gcs::{
    objects::{DownloadObjectOptional, ListOptional},
    BucketName, ObjectName,
};

use super::{
    handle::{bump, ObjectInfo, Storage},
    local,
    retry::{gave_up, next_delay, retrying},
    wire::{self, ListJson, ObjectJson},
};
use crate::{
    error::{Error, Result},
    uri::GcsUri,
};

impl Storage {
    /// The objects whose names start with `prefix`'s object part, in name
    /// order; pages are fetched as the stream is read.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> vertex_batch::Result<()> {
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let storage = vertex_batch::storage::Storage::local(dir.path());
    /// use futures::StreamExt;
    ///
    /// for name in ["out/a/predictions.jsonl", "out/b/predictions.jsonl", "in/prompts.jsonl"] {
    ///     storage.upload_bytes(&format!("gs://my-bucket/{name}").parse()?, "").await?;
    /// }
    /// let mut objects = storage.list(&"gs://my-bucket/out/".parse()?);
    /// let mut names = Vec::new();
    /// while let Some(o) = objects.next().await {
    ///     names.push(o?.uri().object().to_owned());
    /// }
    /// assert_eq!(names, ["out/a/predictions.jsonl", "out/b/predictions.jsonl"]);
    /// # Ok(()) }
    /// ```
    pub fn list(&self, prefix: &GcsUri) -> BoxStream<'static, Result<ObjectInfo>> {
        self.list_paged(prefix, None)
    }

    /// [`Storage::list`] asking for pages of `page_size` objects (the
    /// service's default and maximum is 1,000).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> vertex_batch::Result<()> {
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let storage = vertex_batch::storage::Storage::local(dir.path());
    /// use futures::TryStreamExt;
    ///
    /// for i in 0..3 {
    ///     storage.upload_bytes(&format!("gs://my-bucket/out/part-{i}.jsonl").parse()?, "").await?;
    /// }
    /// // Pages of two objects: the stream fetches the next page when it needs it.
    /// let prefix = "gs://my-bucket/out/".parse()?;
    /// let objects: Vec<_> = storage.list_paged(&prefix, Some(2)).try_collect().await?;
    /// assert_eq!(objects.len(), 3);
    /// # Ok(()) }
    /// ```
    pub fn list_paged(
        &self,
        prefix: &GcsUri,
        page_size: Option<u16>,
    ) -> BoxStream<'static, Result<ObjectInfo>> {
        if let Some(root) = &self.inner.local {
            bump(&self.inner.calls.lists);
            return local::list(root, prefix);
        }
        let storage = self.clone();
        let prefix = prefix.clone();
        // State: the next page token; `None` once the last page was read.
        futures::stream::try_unfold(Some(None::<String>), move |token| {
            let storage = storage.clone();
            let prefix = prefix.clone();
            async move {
                let Some(page_token) = token else {
                    return Ok::<_, Error>(None);
                };
                let what = format!("listing {prefix}");
                let wire = storage.wire()?;
                let bucket = BucketName::non_validated(prefix.bucket());
                let page: ListJson = retrying(&storage.inner.retry, &what, |_| async {
                    bump(&storage.inner.calls.lists);
                    let options = ListOptional {
                        prefix: Some(prefix.object()).filter(|p| !p.is_empty()),
                        page_token: page_token.as_deref(),
                        max_results: page_size.map(u32::from),
                        ..Default::default()
                    };
                    let req = wire
                        .objects
                        .list(&bucket, Some(options))
                        .map_err(|e| request_error(&what, e))?;
                    let resp = wire.send(&what, req.map(|_| Bytes::new())).await?;
                    wire::json(&what, resp).await
                })
                .await?;
                // Cloud Storage allows names this crate's URIs refuse (with
                // `..` segments or control characters): skip those, loudly.
                let items: Vec<ObjectInfo> = page
                    .items
                    .iter()
                    .filter_map(|o| match ObjectInfo::from_json(o) {
                        Ok(info) => Some(info),
                        Err(e) => {
                            tracing::warn!(object = ?o.name, error = %e, "skipping an object");
                            None
                        }
                    })
                    .collect();
                let next = page.next_page_token.filter(|t| !t.is_empty()).map(Some);
                Ok(Some((
                    futures::stream::iter(items.into_iter().map(Ok::<_, Error>)),
                    next,
                )))
            }
        })
        .try_flatten()
        .boxed()
    }

    /// An object's bytes as a stream of chunks; `range` reads part of it.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> vertex_batch::Result<()> {
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let storage = vertex_batch::storage::Storage::local(dir.path());
    /// use futures::TryStreamExt;
    ///
    /// let uri = "gs://my-bucket/out/predictions.jsonl".parse()?;
    /// storage.upload_bytes(&uri, "0123456789").await?;
    /// let all: Vec<bytes::Bytes> = storage.read(&uri, None).await?.try_collect().await?;
    /// assert_eq!(all.concat(), b"0123456789");
    /// let part: Vec<bytes::Bytes> = storage.read(&uri, Some(2..5)).await?.try_collect().await?;
    /// assert_eq!(part.concat(), b"234");
    /// # Ok(()) }
    /// ```
    pub async fn read(
        &self,
        uri: &GcsUri,
        range: Option<Range<u64>>,
    ) -> Result<BoxStream<'static, Result<Bytes>>> {
        Ok(self.read_at(uri, range, None).await?.0)
    }

    /// [`Storage::read`] of one generation of the object (any when
    /// `None`), with the generation read (when the service says). A range
    /// starting at or after the object's end is an error (`416`).
    pub(super) async fn read_at(
        &self,
        uri: &GcsUri,
        range: Option<Range<u64>>,
        generation: Option<i64>,
    ) -> Result<(BoxStream<'static, Result<Bytes>>, Option<i64>)> {
        if let Some(root) = &self.inner.local {
            bump(&self.inner.calls.reads);
            return Ok((local::read(root, uri, range).await?, None));
        }
        // (The header, and whether a whole-object answer is what was asked.)
        let range = match range {
            Some(r) if r.end <= r.start => {
                return Ok((futures::stream::empty().boxed(), generation));
            }
            // To the end, however long the object.
            Some(r) if r.end == u64::MAX => Some((format!("bytes={}-", r.start), r.start == 0)),
            Some(r) => Some((format!("bytes={}-{}", r.start, r.end - 1), false)),
            None => None,
        };
        let what = format!("reading {uri}");
        let wire = self.wire()?;
        let resp = retrying(&self.inner.retry, &what, |_| async {
            bump(&self.inner.calls.reads);
            let options = DownloadObjectOptional {
                generation,
                ..Default::default()
            };
            let mut req =
                object_request(&what, uri, |id| wire.objects.download(id, Some(options)))?;
            if let Some((r, _)) = &range {
                let value = http::HeaderValue::from_str(r).map_err(|e| request_error(&what, e))?;
                req.headers_mut().insert(RANGE, value);
            }
            let resp = wire.send(&what, req).await?;
            match (resp.status(), &range) {
                // A range answered with the whole object would repeat bytes
                // (unless the range was the whole object).
                (StatusCode::OK, Some((_, false))) => Err(Error::Storage {
                    message: format!("{what}: the service ignored the byte range"),
                    http_status: Some(200),
                    source: None,
                }),
                (s, _) if s.is_success() => Ok(resp),
                _ => Err(wire::status_error(&what, resp).await),
            }
        })
        .await?;
        let read_generation = resp
            .headers()
            .get("x-goog-generation")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<i64>().ok());
        let status = resp.status();
        let body = resp
            .into_body()
            .into_data_stream()
            .map_err(move |e| wire::body_error(&what, status, e))
            .boxed();
        Ok((body, read_generation.or(generation)))
    }

    /// An object's bytes as a stream that survives a broken download: after
    /// a retryable failure mid-stream (a reset, or no data for the idle
    /// timeout) it reads on from the last byte received (a ranged read),
    /// as often in a row as the retry policy allows, so nothing is lost or
    /// read twice.
    ///
    /// ```no_run
    /// # async fn demo(s: vertex_batch::storage::Storage) -> vertex_batch::Result<()> {
    /// use futures::TryStreamExt;
    /// let uri = "gs://my-bucket/out/predictions.jsonl".parse()?;
    /// let bytes: Vec<bytes::Bytes> = s.read_resuming(&uri).try_collect().await?;
    /// # Ok(()) }
    /// ```
    pub fn read_resuming(&self, uri: &GcsUri) -> BoxStream<'static, Result<Bytes>> {
        struct State {
            storage: Storage,
            uri: GcsUri,
            offset: u64,
            /// The generation being read, once known: a resumed read asks
            /// for it, so a replaced object is an error, not a splice.
            generation: Option<i64>,
            inner: Option<BoxStream<'static, Result<Bytes>>>,
            /// Breaks in a row, and when the first of them came.
            failures: u32,
            since: tokio::time::Instant,
            done: bool,
        }
        let start = State {
            storage: self.clone(),
            uri: uri.clone(),
            offset: 0,
            generation: None,
            inner: None,
            failures: 0,
            since: tokio::time::Instant::now(),
            done: false,
        };
        futures::stream::unfold(start, |mut st| async move {
            if st.done {
                return None;
            }
            loop {
                if st.inner.is_none() {
                    let range = (st.offset > 0).then_some(st.offset..u64::MAX);
                    match st.storage.read_at(&st.uri, range, st.generation).await {
                        Ok((s, generation)) => {
                            st.inner = Some(s);
                            st.generation = generation;
                        }
                        // The same generation has nothing from the offset on:
                        // the break came after its last byte.
                        Err(Error::Storage {
                            http_status: Some(416),
                            ..
                        }) if st.generation.is_some() && st.offset > 0 => return None,
                        Err(e) => {
                            st.done = true;
                            return Some((Err(e), st));
                        }
                    }
                }
                let next = st.inner.as_mut()?.next().await;
                match next {
                    None => return None,
                    Some(Ok(b)) => {
                        st.offset += b.len() as u64;
                        st.failures = 0;
                        return Some((Ok(b), st));
                    }
                    Some(Err(e)) => {
                        if st.failures == 0 {
                            st.since = tokio::time::Instant::now();
                        }
                        st.failures += 1;
                        let policy = &st.storage.inner.retry;
                        let Some(delay) = next_delay(policy, st.failures, &e, st.since) else {
                            st.done = true;
                            let e = gave_up(e, st.failures, st.since.elapsed());
                            return Some((Err(e), st));
                        };
                        st.inner = None;
                        tracing::warn!(
                            uri = %st.uri,
                            offset = st.offset,
                            error = %e,
                            "download broke; reading on from where it stopped"
                        );
                        tokio::time::sleep(delay).await;
                    }
                }
            }
        })
        .boxed()
    }

    /// An object's metadata, or `None` when it does not exist.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> vertex_batch::Result<()> {
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let storage = vertex_batch::storage::Storage::local(dir.path());
    /// let uri = "gs://my-bucket/batches/k/manifest.json".parse()?;
    /// assert_eq!(storage.metadata(&uri).await?, None);
    /// storage.upload_bytes(&uri, "{}").await?;
    /// assert_eq!(storage.metadata(&uri).await?.map(|o| o.size()), Some(2));
    /// # Ok(()) }
    /// ```
    pub async fn metadata(&self, uri: &GcsUri) -> Result<Option<ObjectInfo>> {
        if let Some(root) = &self.inner.local {
            bump(&self.inner.calls.other);
            return local::metadata(root, uri).await;
        }
        let what = format!("looking up {uri}");
        let wire = self.wire()?;
        let found: Result<ObjectJson> = retrying(&self.inner.retry, &what, |_| async {
            bump(&self.inner.calls.other);
            let req = object_request(&what, uri, |id| wire.objects.get(id, None))?;
            let resp = wire.send(&what, req).await?;
            wire::json(&what, resp).await
        })
        .await;
        match found {
            Ok(o) => ObjectInfo::from_json(&o).map(Some),
            Err(Error::Storage {
                http_status: Some(404),
                ..
            }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Deletes an object; a missing one is an error (`404`). Tried again
    /// under the retry policy; a `404` on a later try counts as deleted
    /// (by the earlier try whose answer was lost).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> vertex_batch::Result<()> {
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let storage = vertex_batch::storage::Storage::local(dir.path());
    /// let uri = "gs://my-bucket/tmp/scratch.jsonl".parse()?;
    /// storage.upload_bytes(&uri, "{}").await?;
    /// storage.delete(&uri).await?;
    /// assert!(storage.metadata(&uri).await?.is_none());
    /// # Ok(()) }
    /// ```
    pub async fn delete(&self, uri: &GcsUri) -> Result<()> {
        if let Some(root) = &self.inner.local {
            bump(&self.inner.calls.other);
            return local::delete(root, uri).await;
        }
        let what = format!("deleting {uri}");
        let wire = self.wire()?;
        let what = &what;
        retrying(&self.inner.retry, what, |attempt| async move {
            bump(&self.inner.calls.other);
            let req = object_request(what, uri, |id| wire.objects.delete(id, None))?;
            let resp = wire.send(what, req).await?;
            match resp.status() {
                // Cloud Storage answers 204; emulators may answer 200.
                s if s.is_success() => Ok(()),
                // Gone on a second try: the first try, whose answer was
                // lost, deleted it.
                StatusCode::NOT_FOUND if attempt > 1 => Ok(()),
                _ => Err(wire::status_error(what, resp).await),
            }
        })
        .await
    }

    /// Creates a bucket (for emulators and tests; real buckets are created
    /// with their location and policies by their owners).
    ///
    /// ```no_run
    /// # async fn demo() -> vertex_batch::Result<()> {
    /// use vertex_batch::storage::Storage;
    ///
    /// // fake-gcs-server, e.g. `docker run -p 4443:4443 fsouza/fake-gcs-server -scheme http`
    /// let storage = Storage::builder().emulator_host("127.0.0.1:4443").build()?;
    /// storage.create_bucket("my-project", "my-bucket").await?; // already there: fine too
    /// # Ok(()) }
    /// ```
    pub async fn create_bucket(&self, project: &str, name: &str) -> Result<()> {
        if let Some(root) = &self.inner.local {
            bump(&self.inner.calls.other);
            let dir = root.join(name);
            return tokio::fs::create_dir_all(&dir)
                .await
                .map_err(|e| local::io(&dir, e));
        }
        // tame-gcs covers objects only; this one bucket call is written out
        // here (`POST /storage/v1/b?project=…`, body `{"name": …}`).
        let what = format!("creating bucket {name}");
        let wire = self.wire()?;
        let project = wire::escape(project);
        let body = Bytes::from(serde_json::json!({ "name": name }).to_string());
        retrying(&self.inner.retry, &what, |_| async {
            let req = http::Request::post(format!("/storage/v1/b?project={project}"))
                .header(http::header::CONTENT_TYPE, "application/json")
                .body(body.clone())
                .map_err(|e| request_error(&what, e))?;
            bump(&self.inner.calls.other);
            let resp = wire.send(&what, req).await?;
            match resp.status() {
                // 409: already there (perhaps made by a try whose answer was lost).
                s if s.is_success() || s == StatusCode::CONFLICT => Ok(()),
                _ => Err(wire::status_error(&what, resp).await),
            }
        })
        .await
    }
}

/// The bucket of `uri` and the placeholder object name tame-gcs is given
/// (see [`wire::escape`]); the bucket was checked by [`GcsUri`].
pub(super) fn ids(uri: &GcsUri) -> (BucketName<'_>, ObjectName<'static>) {
    (
        BucketName::non_validated(uri.bucket()),
        ObjectName::non_validated(wire::PLACEHOLDER),
    )
}

/// `/storage/v1/b/BUCKET/o/OBJECT`, every reserved byte of the name
/// escaped.
pub(super) fn object_path(uri: &GcsUri) -> String {
    format!(
        "/storage/v1/b/{}/o/{}",
        wire::escape(uri.bucket()),
        wire::escape(uri.object())
    )
}

/// A request for one object: built by tame-gcs for the placeholder name,
/// then pointed at `uri`'s escaped path.
fn object_request<B>(
    what: &str,
    uri: &GcsUri,
    build: impl FnOnce(
        &(&BucketName<'_>, &ObjectName<'_>),
    ) -> std::result::Result<http::Request<B>, tame_gcs::Error>,
) -> Result<http::Request<Bytes>> {
    let (bucket, object) = ids(uri);
    let req = build(&(&bucket, &object))
        .map_err(|e| request_error(what, e))?
        .map(|_| Bytes::new());
    wire::retarget(req, Some(&object_path(uri)), None).map_err(|e| request_error(what, e))
}

/// A request that could not be built (never sent, not retried).
pub(super) fn request_error(what: &str, e: impl std::fmt::Display) -> Error {
    Error::config(format!("{what}: {e}"))
}
