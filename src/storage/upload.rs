//! Uploads: small objects in one request, large ones streamed through a
//! resumable session ([`ObjectWriter`]) with bounded memory.

use std::{fmt, marker::PhantomData};

use bytes::{Bytes, BytesMut};
use http::{header, HeaderValue, StatusCode, Uri};
use http_body_util::{BodyExt, Limited};
use tame_gcs::objects::Object;

use super::{
    handle::{bump, ObjectInfo, Storage},
    local,
    objects::{ids, request_error},
    retry::{gave_up, next_delay, retrying},
    wire,
};
use crate::{
    error::{Error, Result},
    uri::GcsUri,
};

/// Resumable uploads send chunks that are multiples of this (256 KiB).
///
/// ```
/// use vertex_batch::storage::{Storage, CHUNK_QUANTUM};
///
/// assert_eq!(CHUNK_QUANTUM, 256 * 1024);
/// // Four quanta (1 MiB) per upload request; other sizes are rounded up.
/// let storage = Storage::builder().chunk_size(4 * CHUNK_QUANTUM).build()?;
/// # Ok::<(), vertex_batch::Error>(())
/// ```
pub const CHUNK_QUANTUM: usize = 256 << 10;

/// The default upload chunk (8 MiB).
///
/// ```
/// use vertex_batch::storage::{CHUNK_QUANTUM, DEFAULT_CHUNK_SIZE};
///
/// assert_eq!(DEFAULT_CHUNK_SIZE, 8 << 20);
/// assert_eq!(DEFAULT_CHUNK_SIZE % CHUNK_QUANTUM, 0);
/// ```
pub const DEFAULT_CHUNK_SIZE: usize = 8 << 20;

/// What a one-request upload requires of the object already there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Precondition {
    /// Nothing: the upload replaces any object.
    None,
    /// No object may be there (`ifGenerationMatch=0`).
    DoesNotExist,
    /// The object must be at this generation.
    Generation(u64),
}

/// Answers in a row that take none of a chunk's bytes before an upload
/// gives up (a service that keeps asking for the same bytes).
pub(super) const STALLED_ANSWERS: u32 = 5;

impl Storage {
    /// Uploads a small object in one request, replacing any object there.
    /// Tried again under the retry policy: the same bytes written twice
    /// leave the same object.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> vertex_batch::Result<()> {
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let storage = vertex_batch::storage::Storage::local(dir.path());
    /// let uri = "gs://my-bucket/batches/k/manifest.json".parse()?;
    /// let info = storage.upload_bytes(&uri, br#"{"version":1}"#.to_vec()).await?;
    /// assert_eq!((info.uri(), info.size()), (&uri, 13));
    /// # Ok(()) }
    /// ```
    pub async fn upload_bytes(&self, uri: &GcsUri, data: impl Into<Bytes>) -> Result<ObjectInfo> {
        self.simple_upload(uri, data.into(), Precondition::None)
            .await?
            .ok_or_else(|| Error::Storage {
                message: format!("uploading {uri}: refused by a precondition"),
                http_status: Some(412),
                source: None,
            })
    }

    /// Uploads `data` to `uri` only if no object is there yet
    /// (`ifGenerationMatch=0`): `None` when one was, which is left as it is.
    /// Two writers racing for one name: exactly one wins.
    ///
    /// Tried again under the retry policy. A try after one whose answer
    /// was lost may be refused (`412`) because that earlier try did write
    /// the object: the object is then read back, and when it holds exactly
    /// `data` the write counts as done (`Some`); other content is another
    /// writer's (`None`). (A writer that wrote the very same bytes is not
    /// told apart: give each writer's content something of its own, such
    /// as an id, where that matters.)
    ///
    /// ```no_run
    /// # async fn demo(s: vertex_batch::storage::Storage) -> vertex_batch::Result<()> {
    /// let uri = "gs://my-bucket/batches/k/manifest.json".parse()?;
    /// if s.create_bytes(&uri, b"{}".to_vec()).await?.is_none() {
    ///     println!("someone else wrote it first");
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn create_bytes(
        &self,
        uri: &GcsUri,
        data: impl Into<Bytes>,
    ) -> Result<Option<ObjectInfo>> {
        self.simple_upload(uri, data.into(), Precondition::DoesNotExist)
            .await
    }

    /// Replaces the object at `uri` with `data` only if its generation is
    /// still `generation` (`ifGenerationMatch`): `None`, and nothing
    /// written, when another write came first. Of several writers that
    /// read one generation, at most one replaces it — where the backend
    /// honours the precondition: Cloud Storage does, and the local backend
    /// within one process; fake-gcs-server ignores it on uploads. Tried
    /// again like [`Storage::create_bytes`]: a `412` on a later try reads
    /// the object back, and exactly `data` there counts as done.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> vertex_batch::Result<()> {
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let storage = vertex_batch::storage::Storage::local(dir.path());
    /// let uri = "gs://my-bucket/claims/a.json".parse()?;
    /// let first = storage.upload_bytes(&uri, "mine").await?;
    /// let gen = first.generation().unwrap();
    /// assert!(storage.replace_bytes(&uri, "taken over", gen).await?.is_some());
    /// // The generation moved on: a second replace from the same one is refused.
    /// assert!(storage.replace_bytes(&uri, "too late", gen).await?.is_none());
    /// # Ok(()) }
    /// ```
    pub async fn replace_bytes(
        &self,
        uri: &GcsUri,
        data: impl Into<Bytes>,
        generation: u64,
    ) -> Result<Option<ObjectInfo>> {
        self.simple_upload(uri, data.into(), Precondition::Generation(generation))
            .await
    }

    /// One-request upload; `None` when `precondition` did not hold.
    pub(super) async fn simple_upload(
        &self,
        uri: &GcsUri,
        data: Bytes,
        precondition: Precondition,
    ) -> Result<Option<ObjectInfo>> {
        bump(&self.inner.calls.uploads);
        if let Some(root) = &self.inner.local {
            let mut w = local::Writer::create(root, uri).await?;
            w.write(&data).await?;
            return match precondition {
                Precondition::DoesNotExist => w.finish_new().await,
                Precondition::Generation(g) => w.finish_if_generation(g).await,
                Precondition::None => w.finish().await.map(Some),
            };
        }
        let what = format!("uploading {uri}");
        let wire = self.wire()?;
        let len = data.len() as u64;
        let (bucket, object) = ids(uri);
        let mut query = format!("uploadType=media&name={}", wire::escape(uri.object()));
        match precondition {
            Precondition::DoesNotExist => query.push_str("&ifGenerationMatch=0"),
            Precondition::Generation(g) => query.push_str(&format!("&ifGenerationMatch={g}")),
            Precondition::None => {}
        }
        let refused = retrying(&self.inner.retry, &what, |attempt| {
            let (data, query, what) = (data.clone(), &query, &what);
            let (bucket, object) = (&bucket, &object);
            async move {
                if attempt > 1 {
                    bump(&self.inner.calls.uploads);
                }
                let req = wire
                    .objects
                    .insert_simple(&(bucket, object), data, len, None)
                    .map_err(|e| request_error(what, e))?;
                let req =
                    wire::retarget(req, None, Some(query)).map_err(|e| request_error(what, e))?;
                let resp = wire.send(what, req).await?;
                match resp.status() {
                    StatusCode::PRECONDITION_FAILED if precondition != Precondition::None => {
                        Ok(Err(attempt))
                    }
                    s if s.is_success() => completion::<ObjectInfo>(what, resp).await.map(Ok),
                    _ => Err(wire::status_error(what, resp).await),
                }
            }
        })
        .await?;
        match refused {
            Ok(info) => Ok(Some(info)),
            // Refused on the first try: the precondition did not hold.
            Err(1) => Ok(None),
            // Refused on a later try: perhaps by what an earlier try wrote.
            Err(_) => self.holds(uri, &data).await,
        }
    }

    /// The object at `uri` when it holds exactly `data`; `None` when it
    /// holds anything else, or is gone.
    async fn holds(&self, uri: &GcsUri, data: &Bytes) -> Result<Option<ObjectInfo>> {
        use futures::TryStreamExt;
        let Some(info) = self.metadata(uri).await? else {
            return Ok(None);
        };
        if info.size() != data.len() as u64 {
            return Ok(None);
        }
        // That very generation: the bytes judged are those of the object
        // described.
        let generation = info.generation().and_then(|g| i64::try_from(g).ok());
        let (mut body, _) = self.read_at(uri, None, generation).await?;
        let mut at = 0usize;
        while let Some(piece) = body.try_next().await? {
            let end = at + piece.len();
            if data.get(at..end) != Some(&piece[..]) {
                return Ok(None);
            }
            at = end;
        }
        Ok((at == data.len()).then_some(info))
    }

    /// Starts a resumable upload to `uri` (replacing any object there once
    /// finished). Write to it, then [`ObjectWriter::finish`].
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> vertex_batch::Result<()> {
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let storage = vertex_batch::storage::Storage::local(dir.path());
    /// let mut w = storage.writer(&"gs://my-bucket/in/part-00000.jsonl".parse()?).await?;
    /// for i in 0..3 {
    ///     let line = format!("{{\"key\":\"q{i}\",\"request\":{{}}}}\n");
    ///     w.write(line.as_bytes()).await?;
    /// }
    /// let written = w.len();
    /// let info = w.finish().await?; // the object exists from here on
    /// assert_eq!(info.size(), written);
    /// # Ok(()) }
    /// ```
    pub async fn writer(&self, uri: &GcsUri) -> Result<ObjectWriter> {
        if let Some(root) = &self.inner.local {
            bump(&self.inner.calls.uploads);
            let writer = local::Writer::create(root, uri).await?;
            return Ok(ObjectWriter {
                uri: uri.clone(),
                to: Destination::Local { writer, written: 0 },
            });
        }
        let wire = self.wire()?;
        let (bucket, object) = ids(uri);
        let starting = format!("starting an upload to {uri}");
        let session = self
            .resumable(&starting, format!("uploading {uri}"), || {
                let req = wire
                    .objects
                    .resumable_insert_init(&(&bucket, &object), Some("application/jsonl"))
                    .map_err(|e| request_error(&starting, e))?;
                let query = format!("uploadType=resumable&name={}", wire::escape(uri.object()));
                wire::retarget(req.map(|()| Bytes::new()), None, Some(&query))
                    .map_err(|e| request_error(&starting, e))
            })
            .await?;
        Ok(ObjectWriter {
            uri: uri.clone(),
            to: Destination::Session(session),
        })
    }

    /// Opens a resumable upload session: sends the request `start` builds
    /// (a `POST` the service answers with the session's URL in `Location`)
    /// and returns the session, ready for bytes. Starting a session changes
    /// nothing until data is sent (one left unused expires), so a failed
    /// start is tried again under the retry policy. `starting` names the
    /// start in errors, `what` the upload.
    pub(crate) async fn resumable<T: Completion>(
        &self,
        starting: &str,
        what: String,
        start: impl Fn() -> Result<http::Request<Bytes>>,
    ) -> Result<Resumable<T>> {
        let wire = self.wire()?;
        let session: Uri = retrying(&self.inner.retry, starting, |_| async {
            let req = start()?;
            bump(&self.inner.calls.uploads);
            let resp = wire.send(starting, req).await?;
            if !resp.status().is_success() {
                return Err(wire::status_error(starting, resp).await);
            }
            // The session's URL is a credential: never put in a message.
            resp.headers()
                .get(header::LOCATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<Uri>().ok())
                .ok_or_else(|| Error::Storage {
                    message: format!("{starting}: the service gave no readable session URL"),
                    http_status: Some(resp.status().as_u16()),
                    source: None,
                })
        })
        .await?;
        Ok(Resumable {
            storage: self.clone(),
            session,
            what,
            buf: BytesMut::with_capacity(self.inner.chunk_size),
            chunk: self.inner.chunk_size,
            sent: 0,
            chunks: 0,
            made: PhantomData,
        })
    }

    /// Uploads everything `reader` yields, resumably, one chunk in memory.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> vertex_batch::Result<()> {
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let storage = vertex_batch::storage::Storage::local(dir.path());
    /// // Any `AsyncRead`: a `tokio::fs::File`, a socket, or bytes in memory.
    /// let reader: &[u8] = b"{\"key\":\"q1\",\"request\":{}}\n";
    /// let info = storage.upload(&"gs://my-bucket/in/prompts.jsonl".parse()?, reader).await?;
    /// assert_eq!(info.size(), 26);
    /// # Ok(()) }
    /// ```
    pub async fn upload(
        &self,
        uri: &GcsUri,
        mut reader: impl tokio::io::AsyncRead + Unpin,
    ) -> Result<ObjectInfo> {
        use tokio::io::AsyncReadExt;
        let mut w = self.writer(uri).await?;
        let mut buf = vec![0u8; 1 << 16];
        loop {
            let n = reader.read(&mut buf).await.map_err(|e| Error::Storage {
                message: format!("reading what to upload to {uri}: {e}"),
                http_status: None,
                source: Some(Box::new(e)),
            })?;
            if n == 0 {
                break;
            }
            w.write(&buf[..n]).await?;
        }
        w.finish().await
    }
}
/// A resumable upload in progress: bytes are buffered up to one chunk and
/// sent chunk by chunk; [`ObjectWriter::finish`] sends the rest and
/// completes the object. Dropping it without finishing leaves no object.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> vertex_batch::Result<()> {
/// # let dir = tempfile::tempdir().unwrap();
/// # let storage = vertex_batch::storage::Storage::local(dir.path());
/// use vertex_batch::format::{InputEncoder, InputLimits};
///
/// let mut w = storage.writer(&"gs://my-bucket/in/part-00000.jsonl".parse()?).await?;
/// assert!(w.is_empty());
/// let mut encoder = InputEncoder::new(InputLimits::default());
/// let mut line = Vec::new();
/// for (key, prompt) in [("q1", "Why is the sky blue?"), ("q2", "Name three rivers.")] {
///     line.clear();
///     encoder.encode(key, prompt, &mut line)?;
///     w.write(&line).await?; // a full chunk is sent as soon as more follows
/// }
/// println!("{} bytes, {} chunks sent so far", w.len(), w.chunks_sent());
/// let info = w.finish().await?;
/// assert_eq!(info.size(), encoder.parts()[0].bytes);
/// # Ok(()) }
/// ```
pub struct ObjectWriter {
    uri: GcsUri,
    to: Destination,
}

/// Where an [`ObjectWriter`]'s bytes go.
enum Destination {
    /// A resumable session with the service.
    Session(Resumable<ObjectInfo>),
    /// A local directory standing in for Cloud Storage.
    Local { writer: local::Writer, written: u64 },
}

impl fmt::Debug for ObjectWriter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (sent, buffered) = match &self.to {
            Destination::Session(s) => (s.sent, s.buf.len()),
            Destination::Local { written, .. } => (*written, 0),
        };
        f.debug_struct("ObjectWriter")
            .field("uri", &self.uri)
            .field("sent", &sent)
            .field("buffered", &buffered)
            .finish_non_exhaustive()
    }
}

impl ObjectWriter {
    /// Appends bytes, sending each full chunk once more bytes follow it.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> vertex_batch::Result<()> {
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let storage = vertex_batch::storage::Storage::local(dir.path());
    /// let mut w = storage.writer(&"gs://my-bucket/in/part-00000.jsonl".parse()?).await?;
    /// w.write(b"{\"key\":\"q1\",\"request\":{}}\n").await?;
    /// w.write(b"{\"key\":\"q2\",\"request\":{}}\n").await?;
    /// assert_eq!(w.finish().await?.size(), 52);
    /// # Ok(()) }
    /// ```
    pub async fn write(&mut self, data: &[u8]) -> Result<()> {
        match &mut self.to {
            Destination::Session(s) => s.write(data).await,
            Destination::Local { writer, written } => {
                *written += data.len() as u64;
                writer.write(data).await
            }
        }
    }

    /// Bytes written so far (sent or buffered).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> vertex_batch::Result<()> {
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let storage = vertex_batch::storage::Storage::local(dir.path());
    /// let mut w = storage.writer(&"gs://my-bucket/in/part-00000.jsonl".parse()?).await?;
    /// w.write(b"{}\n").await?;
    /// assert_eq!(w.len(), 3); // sent or still buffered
    /// # Ok(()) }
    /// ```
    pub fn len(&self) -> u64 {
        match &self.to {
            Destination::Session(s) => s.len(),
            Destination::Local { written, .. } => *written,
        }
    }

    /// Whether nothing was written yet.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> vertex_batch::Result<()> {
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let storage = vertex_batch::storage::Storage::local(dir.path());
    /// let mut w = storage.writer(&"gs://my-bucket/in/part-00000.jsonl".parse()?).await?;
    /// assert!(w.is_empty());
    /// w.write(b"{}\n").await?;
    /// assert!(!w.is_empty());
    /// # Ok(()) }
    /// ```
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// How many upload requests carried data so far.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> vertex_batch::Result<()> {
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let storage = vertex_batch::storage::Storage::local(dir.path());
    /// let mut w = storage.writer(&"gs://my-bucket/in/part-00000.jsonl".parse()?).await?;
    /// w.write(b"{}\n").await?;
    /// // Less than a chunk is buffered until `finish`. (A local directory sends none.)
    /// assert_eq!(w.chunks_sent(), 0);
    /// # Ok(()) }
    /// ```
    pub fn chunks_sent(&self) -> u64 {
        match &self.to {
            Destination::Session(s) => s.chunks_sent(),
            Destination::Local { .. } => 0,
        }
    }

    /// Sends what is buffered and completes the object.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> vertex_batch::Result<()> {
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let storage = vertex_batch::storage::Storage::local(dir.path());
    /// let mut w = storage.writer(&"gs://my-bucket/in/part-00000.jsonl".parse()?).await?;
    /// w.write(b"{}\n").await?;
    /// let info = w.finish().await?; // the object exists only from here on
    /// assert_eq!(info.size(), 3);
    /// assert_eq!(storage.metadata(info.uri()).await?.map(|o| o.size()), Some(3));
    /// # Ok(()) }
    /// ```
    pub async fn finish(self) -> Result<ObjectInfo> {
        match self.to {
            Destination::Session(s) => s.finish().await,
            Destination::Local { writer, .. } => writer.finish().await,
        }
    }
}

/// What the answer that completes a resumable session is read as: the
/// object for a Cloud Storage upload ([`ObjectInfo`]), the load job for a
/// BigQuery load.
pub(crate) trait Completion: Sized {
    /// Reads the JSON body of the answer (status `status`) that completed
    /// the session `what` names.
    fn read(what: &str, status: u16, body: &[u8]) -> Result<Self>;

    /// How many bytes the service says it stored, when the answer says:
    /// checked against the bytes sent.
    fn stored(&self) -> Option<u64>;
}

impl Completion for ObjectInfo {
    fn read(what: &str, status: u16, body: &[u8]) -> Result<Self> {
        let meta: wire::ObjectJson = serde_json::from_slice(body).map_err(|e| Error::Storage {
            message: format!("{what}: could not read the object's metadata: {e}"),
            http_status: Some(status),
            source: Some(Box::new(e)),
        })?;
        ObjectInfo::from_json(&meta)
    }

    fn stored(&self) -> Option<u64> {
        Some(self.size)
    }
}

/// One resumable upload session — Google's resumable protocol, the same
/// for Cloud Storage objects ([`ObjectWriter`]) and BigQuery load jobs —
/// driven chunk by chunk with one chunk in memory: each full chunk goes
/// out as `Content-Range: bytes A-B/*` (answered `308` with the `Range`
/// kept), the last piece as `bytes A-B/TOTAL` (or `bytes */TOTAL`),
/// answered with what the session made, read as `T`. A failed request is
/// sent again, under the client's retry budget, from what the service
/// says it kept (`bytes */*`). Errors are [`Error::Storage`]; they never
/// name the session's URL.
pub(crate) struct Resumable<T> {
    storage: Storage,
    /// The session's URL (a credential of its own: never logged).
    session: Uri,
    /// What the upload is, for errors and logs ("uploading gs://b/o").
    what: String,
    buf: BytesMut,
    chunk: usize,
    /// Bytes the service has accepted.
    sent: u64,
    chunks: u64,
    made: PhantomData<fn() -> T>,
}

/// What a resumable session says after a request.
enum Progress<T> {
    /// The upload is complete: what it made.
    Done(T),
    /// Bytes `0..kept` are stored; the service waits for the rest.
    Kept(u64),
}

impl<T: Completion> Resumable<T> {
    /// Appends bytes, sending a full chunk once more bytes follow it: the
    /// last piece always carries bytes (an empty one, `bytes */TOTAL`, is
    /// a request more, and some services read it as a status query).
    pub(crate) async fn write(&mut self, mut data: &[u8]) -> Result<()> {
        while !data.is_empty() {
            if self.buf.len() == self.chunk {
                self.send(false).await?;
            }
            let take = (self.chunk - self.buf.len()).min(data.len());
            self.buf.extend_from_slice(&data[..take]);
            data = &data[take..];
        }
        Ok(())
    }

    /// Bytes written so far (sent or buffered).
    pub(crate) fn len(&self) -> u64 {
        self.sent + self.buf.len() as u64
    }

    /// How many requests carried data so far.
    pub(crate) fn chunks_sent(&self) -> u64 {
        self.chunks
    }

    /// The memory the buffer holds (its capacity), and the chunk size.
    #[cfg(test)]
    pub(crate) fn memory(&self) -> (usize, usize) {
        (self.buf.capacity(), self.chunk)
    }

    /// Sends what is buffered as the last piece: what the session made.
    pub(crate) async fn finish(mut self) -> Result<T> {
        match self.send(true).await? {
            Some(made) => Ok(made),
            None => Err(Error::Storage {
                message: format!("{}: the service did not complete it", self.what),
                http_status: None,
                source: None,
            }),
        }
    }

    /// Sends the buffer: a full chunk, or (`last`) the final piece with the
    /// total size. Retries a failed chunk after asking the service how much
    /// it kept.
    async fn send(&mut self, last: bool) -> Result<Option<T>> {
        // The chunk goes out without a copy; what the service has not
        // taken when a request fails comes back to the buffer.
        let mut data = self.buf.split().freeze();
        let result = self.send_data(&mut data, last).await;
        if result.is_err() && !data.is_empty() {
            self.buf = BytesMut::from(data);
        }
        result
    }

    async fn send_data(&mut self, data: &mut Bytes, last: bool) -> Result<Option<T>> {
        let storage = self.storage.clone();
        let policy = &storage.inner.retry;
        // Failures in a row, and when the first of them came; answers in a
        // row that took nothing.
        let (mut failures, mut since) = (0u32, tokio::time::Instant::now());
        let mut stalled = 0u32;
        loop {
            let len = data.len() as u64;
            let total = self.sent + len;
            bump(&storage.inner.calls.uploads);
            let range = match (len, last) {
                // Nothing left: complete the upload at its size.
                (0, _) => format!("bytes */{total}"),
                (_, true) => format!("bytes {}-{}/{total}", self.sent, total - 1),
                (_, false) => format!("bytes {}-{}/*", self.sent, total - 1),
            };
            match self.put(&range, data.clone()).await {
                Ok(Progress::Done(made)) => {
                    self.chunks += u64::from(len > 0);
                    return self.done(made, total, last, data).map(Some);
                }
                Ok(Progress::Kept(kept)) => {
                    self.chunks += u64::from(len > 0);
                    failures = 0;
                    let before = self.sent;
                    self.accept(kept, total, data)?;
                    if !last && data.is_empty() {
                        return Ok(None);
                    }
                    // The service kept only part (or, for the last piece, is
                    // still waiting): send the rest.
                    stalled = if self.sent > before { 0 } else { stalled + 1 };
                }
                Err(err) => {
                    if failures == 0 {
                        since = tokio::time::Instant::now();
                    }
                    failures += 1;
                    let Some(delay) = next_delay(policy, failures, &err, since) else {
                        return Err(gave_up(err, failures, since.elapsed()));
                    };
                    tracing::warn!(upload = %self.what, attempt = failures, error = %err, "upload chunk failed; retrying");
                    tokio::time::sleep(delay).await;
                    // Learn how much the service kept before sending again.
                    bump(&storage.inner.calls.uploads);
                    match self.put("bytes */*", Bytes::new()).await {
                        Ok(Progress::Kept(kept)) => self.accept(kept, total, data)?,
                        // The failed request did arrive, and finished the upload.
                        Ok(Progress::Done(made)) => {
                            return self.done(made, total, last, data).map(Some)
                        }
                        Err(_) => {}
                    }
                }
            }
            if stalled >= STALLED_ANSWERS {
                return Err(Error::Storage {
                    message: format!("{}: the service keeps refusing the data", self.what),
                    http_status: None,
                    source: None,
                });
            }
        }
    }

    /// The service says the upload is complete: only right after the last
    /// piece, and (when it says) at the size written.
    fn done(&mut self, made: T, total: u64, last: bool, data: &mut Bytes) -> Result<T> {
        let what = &self.what;
        let wrong = match (made.stored(), last) {
            (Some(size), true) if size == total => None,
            (None, true) => None,
            (Some(size), true) => Some(format!(
                "{what}: the service completed the object at {size} bytes of {total}"
            )),
            (Some(size), false) => Some(format!(
                "{what}: the service completed the object at {size} bytes of {total} written so far"
            )),
            (None, false) => Some(format!(
                "{what}: the service completed the upload before its last piece \
                 ({total} bytes written so far)"
            )),
        };
        if let Some(message) = wrong {
            return Err(Error::Storage {
                message,
                http_status: None,
                source: None,
            });
        }
        self.sent = total;
        *data = Bytes::new();
        Ok(made)
    }

    /// One request to the session: `body` at `content_range` (or, empty,
    /// a question about what the service holds).
    async fn put(&self, content_range: &str, body: Bytes) -> Result<Progress<T>> {
        let what = &self.what;
        let wire = self.storage.wire()?;
        let len = body.len() as u64;
        let mut req = Object::resumable_append(
            tame_gcs::objects::ResumableSession(self.session.clone()),
            body,
            len,
        )
        .map_err(|e| request_error(what, e))?;
        let range = HeaderValue::from_str(content_range).map_err(|e| request_error(what, e))?;
        req.headers_mut().insert(header::CONTENT_RANGE, range);
        let resp = wire.send_session(what, &self.session, req).await?;
        match resp.status() {
            s if s.is_success() => completion(what, resp).await.map(Progress::Done),
            StatusCode::PERMANENT_REDIRECT => kept_bytes(resp.headers().get(header::RANGE))
                .map(Progress::Kept)
                .ok_or_else(|| Error::Storage {
                    message: format!("{what}: the service answered an unreadable Range header"),
                    http_status: Some(308),
                    source: None,
                }),
            _ => Err(wire::status_error(what, resp).await),
        }
    }

    /// The service holds bytes `0..kept`: drop them from `data`. A claim
    /// of more than was written is an error, not a silent skip.
    fn accept(&mut self, kept: u64, written: u64, data: &mut Bytes) -> Result<()> {
        if kept > written {
            return Err(Error::Storage {
                message: format!(
                    "{}: the service claims bytes that were never sent",
                    self.what
                ),
                http_status: None,
                source: None,
            });
        }
        if kept > self.sent {
            let n = usize::try_from(kept - self.sent)
                .unwrap_or(usize::MAX)
                .min(data.len());
            bytes::Buf::advance(data, n);
            self.sent += n as u64;
        }
        if data.is_empty() {
            // Let go of the chunk's memory.
            *data = Bytes::new();
        }
        Ok(())
    }
}

/// How many bytes a resumable session holds, from the `Range` header of
/// its `308` answer: `bytes=0-N` holds `N + 1`; no header holds none.
/// `None` for anything else (a range not from byte 0, junk, overflow).
fn kept_bytes(range: Option<&HeaderValue>) -> Option<u64> {
    let Some(v) = range else { return Some(0) };
    v.to_str()
        .ok()?
        .strip_prefix("bytes=0-")?
        .parse::<u64>()
        .ok()?
        .checked_add(1)
}

/// What a finished upload made, from its answer's JSON body (read whole,
/// at most 1 MiB).
async fn completion<T: Completion>(what: &str, resp: wire::Answer) -> Result<T> {
    let status = resp.status();
    let body = Limited::new(resp.into_body(), 1 << 20)
        .collect()
        .await
        .map_err(|e| wire::body_error(what, status, e))?
        .to_bytes();
    T::read(what, status.as_u16(), &body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::Request;
    use proptest::prelude::*;

    #[test]
    fn the_kept_range_reads_as_a_byte_count() {
        let h = |s: &str| HeaderValue::from_str(s).unwrap();
        assert_eq!(kept_bytes(None), Some(0));
        assert_eq!(kept_bytes(Some(&h("bytes=0-262143"))), Some(262_144));
        assert_eq!(kept_bytes(Some(&h("bytes=0-0"))), Some(1));
        assert_eq!(kept_bytes(Some(&h("bytes=5-9"))), None);
        assert_eq!(kept_bytes(Some(&h("bytes=0-"))), None);
        assert_eq!(kept_bytes(Some(&h("bytes=0-18446744073709551615"))), None);
        assert_eq!(kept_bytes(Some(&h("bytes=0--1"))), None);
    }

    #[test]
    fn upload_queries_escape_every_reserved_byte() {
        let req = Request::post("https://h/upload/storage/v1/b/bkt/o?name=a&b")
            .body(())
            .unwrap();
        let query = format!("uploadType=media&name={}", wire::escape("a&b+c=d%e #?/é"));
        let req = wire::retarget(req, None, Some(&query)).unwrap();
        assert_eq!(
            req.uri().to_string(),
            "https://h/upload/storage/v1/b/bkt/o?uploadType=media&name=a%26b%2Bc%3Dd%25e%20%23%3F%2F%C3%A9"
        );
    }

    proptest! {
        /// Any header value: a count, or `None` — never a panic; and every
        /// `bytes=0-N` reads back as `N + 1`.
        #[test]
        fn any_range_header_parses_or_is_refused(s in "\\PC{0,40}", n in any::<u64>()) {
            if let Ok(v) = HeaderValue::from_str(&s) {
                let _ = kept_bytes(Some(&v));
            }
            let v = HeaderValue::from_str(&format!("bytes=0-{n}")).unwrap();
            prop_assert_eq!(kept_bytes(Some(&v)), n.checked_add(1));
        }

        /// Any object name survives the upload query: decoding the `name`
        /// parameter gives it back byte for byte.
        #[test]
        fn any_object_name_round_trips_through_the_query(name in "\\PC{1,60}") {
            let req = Request::post("https://h/upload/storage/v1/b/bkt/o").body(()).unwrap();
            let query = format!("uploadType=resumable&name={}", wire::escape(&name));
            let req = wire::retarget(req, None, Some(&query)).unwrap();
            let query = req.uri().query().unwrap();
            let value = query.strip_prefix("uploadType=resumable&name=").unwrap();
            prop_assert!(!value.contains(['&', '+', '=', '#', '?']));
            let back = percent_encoding::percent_decode_str(value).decode_utf8().unwrap();
            prop_assert_eq!(back, name);
        }

        /// Any object name is one escaped path segment that decodes back
        /// to it, and the path parses as a URL.
        #[test]
        fn any_object_name_round_trips_through_the_path(name in "\\PC{1,60}") {
            let Ok(uri) = format!("gs://bkt/{name}").parse::<crate::uri::GcsUri>() else {
                return Ok(()); // names the crate refuses (`..` segments)
            };
            let path = super::super::objects::object_path(&uri);
            let segment = path.strip_prefix("/storage/v1/b/bkt/o/").unwrap();
            prop_assert!(!segment.contains(['/', '?', '#', '&', '+', ';', '[', '\\']));
            let req = Request::get("https://h/x?alt=media").body(()).unwrap();
            let req = wire::retarget(req, Some(&path), None).unwrap();
            prop_assert_eq!(req.uri().query(), Some("alt=media"));
            let back = percent_encoding::percent_decode_str(segment).decode_utf8().unwrap();
            prop_assert_eq!(back, uri.object());
        }
    }
}
