//! Uploads: small objects in one request, large ones streamed through a
//! resumable session ([`ObjectWriter`]) with bounded memory.

use std::{fmt, time::Duration};

use bytes::{Bytes, BytesMut};
use gcloud_storage::http::{
    objects::upload::{Media, UploadObjectRequest, UploadType},
    resumable_upload_client::{ChunkSize, ResumableUploadClient, UploadStatus},
};

use super::{
    handle::{bump, ObjectInfo, Storage},
    local,
    retry::storage_error,
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

/// Attempts per upload chunk before giving up.
pub(super) const CHUNK_ATTEMPTS: u32 = 5;

impl Storage {
    /// Uploads a small object in one request.
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
        self.simple_upload(uri, data.into(), false)
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
        self.simple_upload(uri, data.into(), true).await
    }

    /// One-request upload; with `create_only`, `None` when an object was
    /// already there.
    pub(super) async fn simple_upload(
        &self,
        uri: &GcsUri,
        data: Bytes,
        create_only: bool,
    ) -> Result<Option<ObjectInfo>> {
        bump(&self.inner.calls.uploads);
        if let Some(root) = &self.inner.local {
            let mut w = local::Writer::create(root, uri).await?;
            w.write(&data).await?;
            return match create_only {
                true => w.finish_new().await,
                false => w.finish().await.map(Some),
            };
        }
        let req = UploadObjectRequest {
            bucket: uri.bucket().to_owned(),
            if_generation_match: create_only.then_some(0),
            ..Default::default()
        };
        let mut media = Media::new(uri.object().to_owned());
        media.content_length = Some(data.len() as u64);
        match self
            .gcs()?
            .upload_object(&req, data, &UploadType::Simple(media))
            .await
            .map_err(|e| storage_error(format!("uploading {uri}"), e))
        {
            Ok(o) => ObjectInfo::from_object(&o).map(Some),
            Err(Error::Storage {
                http_status: Some(412),
                ..
            }) if create_only => Ok(None),
            Err(e) => Err(e),
        }
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
            return Ok(ObjectWriter {
                storage: self.clone(),
                uri: uri.clone(),
                session: Session::Local(local::Writer::create(root, uri).await?),
                buf: BytesMut::new(),
                chunk: self.inner.chunk_size,
                sent: 0,
                chunks: 0,
            });
        }
        let req = UploadObjectRequest {
            bucket: uri.bucket().to_owned(),
            ..Default::default()
        };
        let mut media = Media::new(uri.object().to_owned());
        media.content_type = "application/jsonl".into();
        bump(&self.inner.calls.uploads);
        let session = self
            .gcs()?
            .prepare_resumable_upload(&req, &UploadType::Simple(media))
            .await
            .map_err(|e| storage_error(format!("starting an upload to {uri}"), e))?;
        Ok(ObjectWriter {
            storage: self.clone(),
            uri: uri.clone(),
            session: Session::Resumable(session),
            buf: BytesMut::with_capacity(self.inner.chunk_size),
            chunk: self.inner.chunk_size,
            sent: 0,
            chunks: 0,
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
/// use vertex_batch::data::input::{InputEncoder, InputLimits};
///
/// let mut w = storage.writer(&"gs://my-bucket/in/part-00000.jsonl".parse()?).await?;
/// assert!(w.is_empty());
/// let mut encoder = InputEncoder::new(InputLimits::default());
/// let mut line = Vec::new();
/// for (key, prompt) in [("q1", "Why is the sky blue?"), ("q2", "Name three rivers.")] {
///     line.clear();
///     encoder.encode(key, prompt, &mut line)?;
///     w.write(&line).await?; // a full chunk is sent as soon as it fills
/// }
/// println!("{} bytes, {} chunks sent so far", w.len(), w.chunks_sent());
/// let info = w.finish().await?;
/// assert_eq!(info.size(), encoder.parts()[0].bytes);
/// # Ok(()) }
/// ```
pub struct ObjectWriter {
    pub(super) storage: Storage,
    pub(super) uri: GcsUri,
    pub(super) session: Session,
    pub(super) buf: BytesMut,
    pub(super) chunk: usize,
    /// Bytes the service has accepted.
    pub(super) sent: u64,
    pub(super) chunks: u64,
}

impl fmt::Debug for ObjectWriter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ObjectWriter")
            .field("uri", &self.uri)
            .field("sent", &self.sent)
            .field("buffered", &self.buf.len())
            .finish_non_exhaustive()
    }
}

pub(super) enum Session {
    Resumable(ResumableUploadClient),
    Local(local::Writer),
}

impl ObjectWriter {
    /// Appends bytes, sending every full chunk.
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
    pub async fn write(&mut self, mut data: &[u8]) -> Result<()> {
        if let Session::Local(w) = &mut self.session {
            self.sent += data.len() as u64;
            return w.write(data).await;
        }
        while !data.is_empty() {
            let room = self.chunk - self.buf.len();
            let take = room.min(data.len());
            self.buf.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.buf.len() == self.chunk {
                self.send(false).await?;
            }
        }
        Ok(())
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
        self.sent + self.buf.len() as u64
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
        self.chunks
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
    pub async fn finish(mut self) -> Result<ObjectInfo> {
        if let Session::Local(w) = self.session {
            return w.finish().await;
        }
        match self.send(true).await? {
            Some(info) => Ok(info),
            None => Err(Error::Storage {
                message: format!(
                    "finishing the upload to {}: the service did not complete it",
                    self.uri
                ),
                http_status: None,
                source: None,
            }),
        }
    }

    /// Sends the buffer: a full chunk, or (`last`) the final piece with the
    /// total size. Retries a failed chunk after asking the service how much
    /// it kept.
    pub(super) async fn send(&mut self, last: bool) -> Result<Option<ObjectInfo>> {
        let Session::Resumable(session) = &self.session else {
            return Ok(None);
        };
        let session = session.clone();
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let len = self.buf.len() as u64;
            let total = self.sent + len;
            bump(&self.storage.inner.calls.uploads);
            let result = if len == 0 {
                // Nothing left: complete the object at its size.
                session.status(Some(total)).await
            } else {
                let size = ChunkSize::new(self.sent, total - 1, last.then_some(total));
                session
                    .upload_multiple_chunk(self.buf.clone().freeze(), &size)
                    .await
            };
            match result {
                Ok(UploadStatus::Ok(o)) => {
                    self.chunks += u64::from(len > 0);
                    self.sent = total;
                    self.buf.clear();
                    return ObjectInfo::from_object(&o).map(Some);
                }
                Ok(UploadStatus::ResumeIncomplete(r)) => {
                    self.chunks += u64::from(len > 0);
                    self.accept(r.last_byte.checked_add(1), total)?;
                    if !last && self.buf.is_empty() {
                        return Ok(None);
                    }
                    // The service kept only part (or, for the last piece, is
                    // still waiting): send the rest.
                }
                Ok(UploadStatus::NotStarted) => {
                    if !last {
                        // Nothing kept: try the chunk again.
                    }
                }
                Err(e) => {
                    let err = storage_error(format!("uploading {}", self.uri), e);
                    if !err.is_retryable() || attempt >= CHUNK_ATTEMPTS {
                        return Err(err);
                    }
                    tracing::warn!(uri = %self.uri, attempt, error = %err, "upload chunk failed; retrying");
                    tokio::time::sleep(Duration::from_millis(200 << attempt.min(6))).await;
                    // Learn how much the service kept before sending again.
                    bump(&self.storage.inner.calls.uploads);
                    if let Ok(UploadStatus::ResumeIncomplete(r)) = session.status(None).await {
                        self.accept(r.last_byte.checked_add(1), total)?;
                    }
                }
            }
            if attempt >= CHUNK_ATTEMPTS * 2 {
                return Err(Error::Storage {
                    message: format!(
                        "uploading {}: the service keeps refusing the data",
                        self.uri
                    ),
                    http_status: None,
                    source: None,
                });
            }
        }
    }

    /// The service holds bytes `0..kept`: drop them from the buffer. A
    /// claim of more than was written is an error, not a silent skip.
    pub(super) fn accept(&mut self, kept: Option<u64>, written: u64) -> Result<()> {
        let kept = match kept {
            Some(k) if k <= written => k,
            _ => {
                return Err(Error::Storage {
                    message: format!(
                        "uploading {}: the service claims bytes that were never sent",
                        self.uri
                    ),
                    http_status: None,
                    source: None,
                })
            }
        };
        if kept > self.sent {
            let n = usize::try_from(kept - self.sent)
                .unwrap_or(usize::MAX)
                .min(self.buf.len());
            let _ = self.buf.split_to(n);
            self.sent += n as u64;
        }
        Ok(())
    }
}
