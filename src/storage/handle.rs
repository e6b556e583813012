//! The [`Storage`] handle, the state its clones share, and what it reports
//! about objects ([`ObjectInfo`]) and calls ([`StorageCalls`]).

use std::{fmt, sync::Arc};

use crate::{
    error::{Error, Result},
    uri::GcsUri,
};

/// A Cloud Storage client. Cheap to clone.
///
/// ```no_run
/// # async fn demo(client: vertex_batch::Client) -> vertex_batch::Result<()> {
/// use futures::StreamExt;
/// use vertex_batch::{storage::Storage, GcsUri};
///
/// let storage = Storage::for_client(&client)?;
/// let uri: GcsUri = "gs://my-bucket/prompts/part-0.jsonl".parse()?;
/// let mut w = storage.writer(&uri).await?;
/// w.write(b"{\"key\":\"a\",\"request\":{}}\n").await?;
/// let info = w.finish().await?;
/// println!("{} bytes at {}", info.size(), info.uri());
/// let mut objects = storage.list(&"gs://my-bucket/prompts/".parse()?);
/// while let Some(o) = objects.next().await {
///     println!("{}", o?.uri());
/// }
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Storage {
    pub(super) inner: Arc<Inner>,
}

pub(super) struct Inner {
    /// `None` for a local directory.
    pub(super) wire: Option<super::wire::Wire>,
    /// A local directory standing in for Cloud Storage (see
    /// [`Storage::local`]); `wire` is then unused.
    pub(super) local: Option<std::path::PathBuf>,
    pub(super) endpoint: String,
    pub(super) chunk_size: usize,
    /// How failed calls are tried again.
    pub(super) retry: crate::policy::RetryPolicy,
    pub(super) calls: Calls,
}

/// Counts of the HTTP requests a [`Storage`] made, by kind.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> vertex_batch::Result<()> {
/// # let dir = tempfile::tempdir().unwrap();
/// # let storage = vertex_batch::storage::Storage::local(dir.path());
/// use futures::TryStreamExt;
///
/// storage.upload_bytes(&"gs://my-bucket/in/a.jsonl".parse()?, "{}\n").await?;
/// let _objects: Vec<_> = storage.list(&"gs://my-bucket/in/".parse()?).try_collect().await?;
/// let calls = storage.calls();
/// assert_eq!((calls.uploads, calls.lists, calls.reads), (1, 1, 0));
/// assert_eq!(calls.total(), 2);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StorageCalls {
    /// Uploads: simple uploads, resumable sessions started, and chunks sent.
    pub uploads: u64,
    /// List pages fetched.
    pub lists: u64,
    /// Downloads started.
    pub reads: u64,
    /// Metadata look-ups, deletes and bucket creations.
    pub other: u64,
}

impl StorageCalls {
    /// All requests.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> vertex_batch::Result<()> {
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let storage = vertex_batch::storage::Storage::local(dir.path());
    /// storage.upload_bytes(&"gs://my-bucket/a.jsonl".parse()?, "{}\n").await?;
    /// storage.upload_bytes(&"gs://my-bucket/b.jsonl".parse()?, "{}\n").await?;
    /// assert_eq!(storage.calls().total(), 2);
    /// # Ok(()) }
    /// ```
    pub fn total(&self) -> u64 {
        self.uploads + self.lists + self.reads + self.other
    }
}

#[derive(Default)]
pub(super) struct Calls {
    pub(super) uploads: std::sync::atomic::AtomicU64,
    pub(super) lists: std::sync::atomic::AtomicU64,
    pub(super) reads: std::sync::atomic::AtomicU64,
    pub(super) other: std::sync::atomic::AtomicU64,
}

pub(super) fn bump(c: &std::sync::atomic::AtomicU64) {
    c.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
}

impl fmt::Debug for Storage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Storage")
            .field("endpoint", &self.inner.endpoint)
            .field("chunk_size", &self.inner.chunk_size)
            .finish_non_exhaustive()
    }
}

/// An object's name and size.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> vertex_batch::Result<()> {
/// # let dir = tempfile::tempdir().unwrap();
/// # let storage = vertex_batch::storage::Storage::local(dir.path());
/// use futures::TryStreamExt;
///
/// storage.upload_bytes(&"gs://my-bucket/in/prompts.jsonl".parse()?, "{}\n").await?;
/// let objects: Vec<_> = storage.list(&"gs://my-bucket/in/".parse()?).try_collect().await?;
/// assert_eq!(objects[0].uri().to_string(), "gs://my-bucket/in/prompts.jsonl");
/// assert_eq!(objects[0].size(), 3);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    pub(super) uri: GcsUri,
    pub(super) size: u64,
    /// The object's generation, when the backend says.
    pub(super) generation: Option<u64>,
}

impl ObjectInfo {
    /// The object.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> vertex_batch::Result<()> {
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let storage = vertex_batch::storage::Storage::local(dir.path());
    /// let info = storage.upload_bytes(&"gs://my-bucket/in/a.jsonl".parse()?, "{}\n").await?;
    /// assert_eq!(info.uri().to_string(), "gs://my-bucket/in/a.jsonl");
    /// # Ok(()) }
    /// ```
    pub fn uri(&self) -> &GcsUri {
        &self.uri
    }

    /// Its size in bytes.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> vertex_batch::Result<()> {
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let storage = vertex_batch::storage::Storage::local(dir.path());
    /// let info = storage.upload_bytes(&"gs://my-bucket/in/a.jsonl".parse()?, "{}\n").await?;
    /// assert_eq!(info.size(), 3);
    /// # Ok(()) }
    /// ```
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The object's generation: Cloud Storage's version number, which
    /// changes with every write of the object (for the local backend, a
    /// stand-in that changes likewise). What
    /// [`Storage::replace_bytes`] takes as its precondition.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> vertex_batch::Result<()> {
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let storage = vertex_batch::storage::Storage::local(dir.path());
    /// let uri = "gs://my-bucket/claims/a.json".parse()?;
    /// let first = storage.upload_bytes(&uri, "1").await?;
    /// let second = storage.upload_bytes(&uri, "2").await?;
    /// assert!(first.generation().is_some());
    /// assert_ne!(first.generation(), second.generation());
    /// # Ok(()) }
    /// ```
    pub fn generation(&self) -> Option<u64> {
        self.generation
    }

    pub(super) fn from_json(o: &super::wire::ObjectJson) -> Result<Self> {
        let (Some(bucket), Some(name)) = (&o.bucket, &o.name) else {
            return Err(Error::Storage {
                message: "the service described an object without its bucket or name".into(),
                http_status: None,
                source: None,
            });
        };
        Ok(ObjectInfo {
            uri: GcsUri::parse_field(&format!("gs://{bucket}/{name}"), "object")?,
            size: o.size.0,
            generation: (o.generation.0 > 0).then_some(o.generation.0),
        })
    }
}

impl Storage {
    /// The endpoint, e.g. `https://storage.googleapis.com`.
    ///
    /// ```
    /// use vertex_batch::storage::Storage;
    ///
    /// let storage = Storage::builder().ignore_env().emulator_host("127.0.0.1:4443").build()?;
    /// assert_eq!(storage.endpoint(), "http://127.0.0.1:4443");
    /// # Ok::<(), vertex_batch::Error>(())
    /// ```
    pub fn endpoint(&self) -> &str {
        &self.inner.endpoint
    }

    /// The retry budget its calls follow.
    pub(crate) fn retry_policy(&self) -> &crate::policy::RetryPolicy {
        &self.inner.retry
    }

    pub(crate) fn wire(&self) -> Result<&super::wire::Wire> {
        self.inner
            .wire
            .as_ref()
            .ok_or_else(|| Error::config("no Cloud Storage client (a local directory)"))
    }

    /// The requests made so far by this client and its clones.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> vertex_batch::Result<()> {
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let storage = vertex_batch::storage::Storage::local(dir.path());
    /// let before = storage.calls();
    /// storage.upload_bytes(&"gs://my-bucket/a.jsonl".parse()?, "{}\n").await?;
    /// assert_eq!(storage.calls().uploads, before.uploads + 1);
    /// # Ok(()) }
    /// ```
    pub fn calls(&self) -> StorageCalls {
        use std::sync::atomic::Ordering::Relaxed;
        let c = &self.inner.calls;
        StorageCalls {
            uploads: c.uploads.load(Relaxed),
            lists: c.lists.load(Relaxed),
            reads: c.reads.load(Relaxed),
            other: c.other.load(Relaxed),
        }
    }
}
