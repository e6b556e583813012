//! Cloud Storage for the data plane: upload, list and stream-read objects.
//!
//! Built on the `gcloud-storage` crate, which speaks the Cloud Storage JSON
//! API for everything (uploads, listing, downloads), so every call the crate
//! makes can be tested offline against fake-gcs-server. (`object_store`
//! writes through the XML API, which fake-gcs-server does not accept, and
//! Google's own `google-cloud-storage` lists over gRPC, which it does not
//! serve.) HTTP goes through reqwest with rustls on *ring* — the crypto the
//! gRPC side already uses — and system plus webpki roots.
//!
//! # Credentials and emulators
//!
//! [`Storage::for_client`] shares the JobService client's token cache: one
//! token source, refreshed once, for both APIs (scope `cloud-platform`
//! covers both). `STORAGE_EMULATOR_HOST` (Google's convention, e.g.
//! `http://127.0.0.1:4443` or `127.0.0.1:4443`) points storage at an
//! emulator over plaintext and sends no credentials.
//!
//! # Memory
//!
//! Uploads are resumable and chunked ([`ObjectWriter`]): memory holds one
//! chunk (8 MiB by default) whatever the object's size. Downloads are streams
//! of chunks as they arrive.

use std::{fmt, ops::Range, sync::Arc, time::Duration};

use bytes::{Bytes, BytesMut};
use futures::{stream::BoxStream, StreamExt, TryStreamExt};
use gcloud_storage::http::{
    self as gcs,
    objects::{
        delete::DeleteObjectRequest,
        download::Range as GcsRange,
        get::GetObjectRequest,
        list::ListObjectsRequest,
        upload::{Media, UploadObjectRequest, UploadType},
    },
    resumable_upload_client::{ChunkSize, ResumableUploadClient, UploadStatus},
};

use crate::{
    client::Client,
    error::{Error, Result},
    transport::{
        auth::{Credentials, TokenCache},
        endpoint::{no_tls_roots, tls_roots, HAS_TLS_ROOTS},
    },
    uri::GcsUri,
};

/// `STORAGE_EMULATOR_HOST`: a Cloud Storage emulator (`http://host:port` or
/// `host:port`), used over plaintext with no credentials.
///
/// ```
/// use vertex_batch::storage::{Storage, ENV_STORAGE_EMULATOR_HOST};
///
/// assert_eq!(ENV_STORAGE_EMULATOR_HOST, "STORAGE_EMULATOR_HOST");
/// // The same as `STORAGE_EMULATOR_HOST=127.0.0.1:4443`, without the environment:
/// let storage = Storage::builder().ignore_env().emulator_host("127.0.0.1:4443").build()?;
/// assert_eq!(storage.endpoint(), "http://127.0.0.1:4443");
/// # Ok::<(), vertex_batch::Error>(())
/// ```
pub const ENV_STORAGE_EMULATOR_HOST: &str = "STORAGE_EMULATOR_HOST";

/// The Cloud Storage endpoint.
///
/// ```
/// use vertex_batch::storage::{Storage, DEFAULT_ENDPOINT};
///
/// let storage = Storage::builder().ignore_env().build()?; // no network I/O yet
/// assert_eq!(storage.endpoint(), DEFAULT_ENDPOINT);
/// # Ok::<(), vertex_batch::Error>(())
/// ```
pub const DEFAULT_ENDPOINT: &str = "https://storage.googleapis.com";

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
const CHUNK_ATTEMPTS: u32 = 5;

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
    inner: Arc<Inner>,
}

struct Inner {
    /// `None` for a local directory.
    client: Option<gcloud_storage::client::Client>,
    /// A local directory standing in for Cloud Storage (see
    /// [`Storage::local`]); `client` is then unused.
    local: Option<std::path::PathBuf>,
    endpoint: String,
    chunk_size: usize,
    calls: Calls,
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
    pub fn total(&self) -> u64 {
        self.uploads + self.lists + self.reads + self.other
    }
}

#[derive(Default)]
struct Calls {
    uploads: std::sync::atomic::AtomicU64,
    lists: std::sync::atomic::AtomicU64,
    reads: std::sync::atomic::AtomicU64,
    other: std::sync::atomic::AtomicU64,
}

fn bump(c: &std::sync::atomic::AtomicU64) {
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

/// Configures a [`Storage`].
///
/// ```
/// use vertex_batch::storage::Storage;
///
/// let storage = Storage::builder()
///     .ignore_env()                    // whatever STORAGE_EMULATOR_HOST says,
///     .emulator_host("127.0.0.1:4443") // use fake-gcs-server: plaintext, no credentials
///     .chunk_size(1 << 20)             // 1 MiB upload chunks
///     .build()?;                       // no network I/O yet
/// assert_eq!(storage.endpoint(), "http://127.0.0.1:4443");
/// # Ok::<(), vertex_batch::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct StorageBuilder {
    credentials: Option<Credentials>,
    tokens: Option<Arc<TokenCache>>,
    endpoint: Option<String>,
    emulator: Option<String>,
    use_env: bool,
    chunk_size: usize,
}

impl fmt::Debug for TokenCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TokenCache(<redacted>)")
    }
}

impl Default for StorageBuilder {
    fn default() -> Self {
        StorageBuilder {
            credentials: None,
            tokens: None,
            endpoint: None,
            emulator: None,
            use_env: true,
            chunk_size: DEFAULT_CHUNK_SIZE,
        }
    }
}

impl StorageBuilder {
    /// The credentials (default: Application Default Credentials; none for
    /// an emulator).
    ///
    /// ```
    /// use vertex_batch::{storage::Storage, transport::Credentials};
    ///
    /// let storage = Storage::builder()
    ///     .credentials(Credentials::access_token("ya29.example")) // e.g. from `gcloud auth print-access-token`
    ///     .build()?;
    /// # Ok::<(), vertex_batch::Error>(())
    /// ```
    pub fn credentials(mut self, credentials: Credentials) -> Self {
        self.credentials = Some(credentials);
        self
    }

    /// Uses `client`'s credentials: its very token cache, so one token serves
    /// both APIs. (Ignored for an emulator, which gets no credentials.)
    ///
    /// ```no_run
    /// # fn demo(client: &vertex_batch::Client) -> vertex_batch::Result<()> {
    /// use vertex_batch::storage::Storage;
    ///
    /// let storage = Storage::builder().credentials_of(client).chunk_size(32 << 20).build()?;
    /// # Ok(()) }
    /// ```
    pub fn credentials_of(mut self, client: &Client) -> Self {
        self.tokens = Some(client.inner.tokens.clone());
        self
    }

    /// Another endpoint (`https://host[:port]`; `http://` only on
    /// loopback).
    ///
    /// ```
    /// use vertex_batch::storage::Storage;
    ///
    /// let storage = Storage::builder().ignore_env().endpoint("https://storage.example.internal").build()?;
    /// assert_eq!(storage.endpoint(), "https://storage.example.internal");
    /// // Plain HTTP only to this machine:
    /// assert!(Storage::builder().ignore_env().endpoint("http://storage.example.com").build().is_err());
    /// assert!(Storage::builder().ignore_env().endpoint("http://127.0.0.1:4443").build().is_ok());
    /// # Ok::<(), vertex_batch::Error>(())
    /// ```
    pub fn endpoint(mut self, endpoint: impl Into<String>) -> Self {
        self.endpoint = Some(endpoint.into());
        self
    }

    /// An emulator (`http://host:port` or `host:port`): plaintext, no
    /// credentials. The same as `STORAGE_EMULATOR_HOST`.
    pub fn emulator_host(mut self, host: impl Into<String>) -> Self {
        self.emulator = Some(host.into());
        self
    }

    /// Ignores `STORAGE_EMULATOR_HOST`.
    pub fn ignore_env(mut self) -> Self {
        self.use_env = false;
        self
    }

    /// The resumable upload chunk, rounded up to a multiple of 256 KiB
    /// (default 8 MiB). Memory per upload is one chunk.
    pub fn chunk_size(mut self, bytes: usize) -> Self {
        self.chunk_size = bytes.max(1).div_ceil(CHUNK_QUANTUM) * CHUNK_QUANTUM;
        self
    }

    /// Builds the client. No network I/O happens here.
    ///
    /// ```
    /// use vertex_batch::{storage::Storage, transport::Credentials};
    ///
    /// let storage = Storage::builder().ignore_env().emulator_host("127.0.0.1:4443").build()?;
    /// // Credentials never go in plaintext to an emulator on another machine:
    /// let refused = Storage::builder()
    ///     .emulator_host("gcs-emulator.internal:4443")
    ///     .credentials(Credentials::access_token("ya29.example"))
    ///     .build();
    /// assert!(refused.is_err());
    /// # Ok::<(), vertex_batch::Error>(())
    /// ```
    pub fn build(self) -> Result<Storage> {
        let emulator = self.emulator.clone().or_else(|| {
            self.use_env
                .then(|| std::env::var(ENV_STORAGE_EMULATOR_HOST).ok())
                .flatten()
                .filter(|v| !v.trim().is_empty())
        });
        let (endpoint, emulated) = match (&emulator, &self.endpoint) {
            (Some(host), _) => (emulator_url(host)?, true),
            (None, Some(ep)) => (https_url(ep)?, false),
            (None, None) => (DEFAULT_ENDPOINT.to_owned(), false),
        };
        // Credentials: shared with a JobService client, given, or ADC; never
        // for an emulator unless given explicitly, and then only on loopback.
        let tokens = match (self.tokens, self.credentials, emulated) {
            (Some(t), None, false) => Some(t),
            (_, Some(c), _) => Some(Arc::new(TokenCache::new(c))),
            (_, None, true) => None,
            (None, None, false) => Some(Arc::new(TokenCache::new(
                Credentials::application_default(),
            ))),
        };
        let tokens = tokens.filter(|t| !t.is_anonymous());
        if emulated && tokens.is_some() && !is_loopback_url(&endpoint) {
            return Err(Error::config(format!(
                "refusing to send credentials in plaintext to the storage emulator at {endpoint}"
            )));
        }
        if !emulated && !HAS_TLS_ROOTS {
            return Err(no_tls_roots(&endpoint));
        }
        let http = http_client()?;
        let config = gcloud_storage::client::ClientConfig {
            http: Some(http),
            storage_endpoint: endpoint.clone(),
            token_source_provider: tokens
                .map(|t| Box::new(SharedTokens(t)) as Box<dyn token_source::TokenSourceProvider>),
            ..Default::default()
        };
        Ok(Storage {
            inner: Arc::new(Inner {
                client: Some(gcloud_storage::client::Client::new(config)),
                local: None,
                endpoint,
                chunk_size: self.chunk_size,
                calls: Calls::default(),
            }),
        })
    }
}

/// reqwest with rustls on ring, with the trust roots the features select.
fn http_client() -> Result<reqwest_middleware::ClientWithMiddleware> {
    let roots = tls_roots();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::config(format!("TLS setup for Cloud Storage: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let client = reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .connect_timeout(Duration::from_secs(20))
        .build()
        .map_err(|e| Error::config(format!("HTTP client for Cloud Storage: {e}")))?;
    Ok(reqwest_middleware::ClientBuilder::new(client).build())
}

fn emulator_url(host: &str) -> Result<String> {
    let host = host.trim().trim_end_matches('/');
    let url = if host.contains("://") {
        host.to_owned()
    } else {
        format!("http://{host}")
    };
    match http::Uri::try_from(url.as_str()) {
        Ok(u)
            if u.authority().is_some_and(|a| !a.as_str().contains('@'))
                && matches!(u.scheme_str(), Some("http") | Some("https"))
                && u.path() == "/" =>
        {
            Ok(url)
        }
        _ => Err(Error::config(format!(
            "{ENV_STORAGE_EMULATOR_HOST} must be http://host:port or host:port, got {:?}",
            crate::uri::without_userinfo(host)
        ))),
    }
}

fn https_url(ep: &str) -> Result<String> {
    let ep = ep.trim().trim_end_matches('/');
    let url = if ep.contains("://") {
        ep.to_owned()
    } else {
        format!("https://{ep}")
    };
    match http::Uri::try_from(url.as_str()) {
        Ok(u) if u.scheme_str() == Some("https") && u.authority().is_some() => Ok(url),
        Ok(u) if u.scheme_str() == Some("http") && is_loopback_url(&url) => Ok(url),
        _ => Err(Error::config(format!(
            "invalid Cloud Storage endpoint {ep:?}: expected https://host[:port]"
        ))),
    }
}

fn is_loopback_url(url: &str) -> bool {
    let Ok(u) = http::Uri::try_from(url) else {
        return false;
    };
    let Some(host) = u.host() else { return false };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// The JobService client's token cache as gcloud-storage's token source.
#[derive(Debug)]
struct SharedTokens(Arc<TokenCache>);

impl token_source::TokenSourceProvider for SharedTokens {
    fn token_source(&self) -> Arc<dyn token_source::TokenSource> {
        Arc::new(SharedTokenSource(self.0.clone()))
    }
}

#[derive(Debug)]
struct SharedTokenSource(Arc<TokenCache>);

#[async_trait::async_trait]
impl token_source::TokenSource for SharedTokenSource {
    async fn token(&self) -> std::result::Result<String, Box<dyn std::error::Error + Send + Sync>> {
        let value = self.0.header().await?;
        let value = value.ok_or("no credentials")?;
        Ok(value.to_str().map_err(|_| "invalid token")?.to_owned())
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
    uri: GcsUri,
    size: u64,
}

impl ObjectInfo {
    /// The object.
    pub fn uri(&self) -> &GcsUri {
        &self.uri
    }

    /// Its size in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    fn from_object(o: &gcs::objects::Object) -> Result<Self> {
        Ok(ObjectInfo {
            uri: GcsUri::parse_field(&format!("gs://{}/{}", o.bucket, o.name), "object")?,
            size: u64::try_from(o.size).unwrap_or(0),
        })
    }
}

/// How many times an idempotent call (a listing page, the start of a read,
/// a metadata look-up) is tried again after a retryable failure (no answer,
/// 408, 429, 5xx).
const RETRIES: u32 = 4;

/// The wait before retry `attempt` (1-based): 200 ms doubling, jittered
/// to between half and all of it.
fn retry_delay(attempt: u32) -> Duration {
    Duration::from_millis(100u64 << attempt.min(16)).mul_f64(0.5 + fastrand::f64() / 2.0)
}

/// Runs `call`, trying it again (with jittered exponential backoff from
/// 100 ms) while it fails with a retryable status, at most [`RETRIES`]
/// times. `what` names the call in errors and logs.
async fn retrying<T, F, Fut>(what: &str, mut call: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = std::result::Result<T, gcs::Error>>,
{
    let mut attempt = 0u32;
    loop {
        match call().await {
            Ok(v) => return Ok(v),
            Err(e) => {
                let err = storage_error(what, e);
                if attempt >= RETRIES || !err.is_retryable() {
                    return Err(err);
                }
                attempt += 1;
                let delay = retry_delay(attempt);
                tracing::warn!(attempt, ?delay, error = %err, "Cloud Storage call failed; trying again");
                tokio::time::sleep(delay).await;
            }
        }
    }
}

/// Maps a gcloud-storage error, naming what was being done.
fn storage_error(what: impl fmt::Display, e: gcs::Error) -> Error {
    // reqwest's errors name the URL, and a resumable session's URL is a
    // credential of its own (its `upload_id` lets anyone write the object):
    // keep it out of messages and the source chain.
    let e = match e {
        gcs::Error::HttpClient(r) => gcs::Error::HttpClient(r.without_url()),
        gcs::Error::RawResponse(r, body) => gcs::Error::RawResponse(r.without_url(), body),
        other => other,
    };
    let http_status = match &e {
        gcs::Error::Response(r) => Some(r.code),
        gcs::Error::HttpClient(r) | gcs::Error::RawResponse(r, _) => r.status().map(|s| s.as_u16()),
        _ => None,
    };
    let detail = match &e {
        gcs::Error::TokenSource(_) => "could not obtain an access token".to_owned(),
        other => other.to_string(),
    };
    Error::Storage {
        message: format!("{what}: {detail}"),
        http_status,
        source: Some(Box::new(e)),
    }
}

/// # Operations
impl Storage {
    /// A builder.
    ///
    /// ```
    /// use vertex_batch::{storage::Storage, transport::Credentials};
    ///
    /// let storage = Storage::builder()
    ///     .credentials(Credentials::application_default()) // the default, found on first use
    ///     .chunk_size(16 << 20)
    ///     .build()?;
    /// # Ok::<(), vertex_batch::Error>(())
    /// ```
    pub fn builder() -> StorageBuilder {
        StorageBuilder::default()
    }

    /// Cloud Storage kept in a local directory: `gs://BUCKET/OBJECT` is the
    /// file `root/BUCKET/OBJECT` — the layout of the emulator's data
    /// directory (`DATA_DIR/gcs`), so a batch runs against an embedded
    /// emulator with no storage server at all. Buckets are directories.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use vertex_batch::storage::Storage;
    ///
    /// let dir = tempfile::tempdir()?; // e.g. an emulator's DATA_DIR/gcs
    /// let storage = Storage::local(dir.path());
    /// storage.upload_bytes(&"gs://my-bucket/in/prompts.jsonl".parse()?, "{}\n").await?;
    /// assert!(dir.path().join("my-bucket/in/prompts.jsonl").is_file());
    /// # Ok(()) }
    /// ```
    pub fn local(root: impl Into<std::path::PathBuf>) -> Storage {
        let root = root.into();
        Storage {
            inner: Arc::new(Inner {
                client: None,
                endpoint: format!("file://{}", root.display()),
                local: Some(root),
                chunk_size: DEFAULT_CHUNK_SIZE,
                calls: Calls::default(),
            }),
        }
    }

    /// A client sharing `client`'s credentials (its very token cache).
    /// `STORAGE_EMULATOR_HOST` still points it at an emulator, with no
    /// credentials.
    ///
    /// ```no_run
    /// # fn demo() -> vertex_batch::Result<()> {
    /// use vertex_batch::{storage::Storage, Client};
    ///
    /// let client = Client::builder().project("my-project").location("us-central1").build()?;
    /// let storage = Storage::for_client(&client)?; // one token for both APIs
    /// # Ok(()) }
    /// ```
    pub fn for_client(client: &Client) -> Result<Storage> {
        Storage::builder().credentials_of(client).build()
    }

    /// The endpoint, e.g. `https://storage.googleapis.com`.
    pub fn endpoint(&self) -> &str {
        &self.inner.endpoint
    }

    fn gcs(&self) -> Result<&gcloud_storage::client::Client> {
        self.inner
            .client
            .as_ref()
            .ok_or_else(|| Error::config("no Cloud Storage client (a local directory)"))
    }

    /// The requests made so far by this client and its clones.
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
    async fn simple_upload(
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
                let req = ListObjectsRequest {
                    bucket: prefix.bucket().to_owned(),
                    prefix: Some(prefix.object().to_owned()).filter(|p| !p.is_empty()),
                    page_token,
                    max_results: page_size.map(i32::from),
                    ..Default::default()
                };
                let gcs = storage.gcs()?;
                let page = retrying(&format!("listing {prefix}"), || {
                    bump(&storage.inner.calls.lists);
                    gcs.list_objects(&req)
                })
                .await?;
                // Cloud Storage allows names this crate's URIs refuse (with
                // `..` segments or control characters): skip those, loudly.
                let items: Vec<ObjectInfo> = page
                    .items
                    .unwrap_or_default()
                    .iter()
                    .filter_map(|o| match ObjectInfo::from_object(o) {
                        Ok(info) => Some(info),
                        Err(e) => {
                            tracing::warn!(object = %o.name, error = %e, "skipping an object");
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
        if let Some(root) = &self.inner.local {
            bump(&self.inner.calls.reads);
            return local::read(root, uri, range).await;
        }
        let req = GetObjectRequest {
            bucket: uri.bucket().to_owned(),
            object: uri.object().to_owned(),
            ..Default::default()
        };
        let range = match range {
            Some(r) if r.end <= r.start => {
                return Ok(futures::stream::empty().boxed());
            }
            // To the end, however long the object.
            Some(r) if r.end == u64::MAX => GcsRange(Some(r.start), None),
            Some(r) => GcsRange(Some(r.start), Some(r.end - 1)),
            None => GcsRange::default(),
        };
        let name = uri.to_string();
        let gcs = self.gcs()?;
        let stream = retrying(&format!("reading {uri}"), || {
            bump(&self.inner.calls.reads);
            gcs.download_streamed_object(&req, &range)
        })
        .await?;
        Ok(stream
            .map_err(move |e| storage_error(format!("reading {name}"), e))
            .boxed())
    }

    /// An object's bytes as a stream that survives a broken download: after
    /// a retryable failure mid-stream it reads on from the last byte
    /// received (a ranged read), at most a few times in a row, so nothing
    /// is lost or read twice.
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
            inner: Option<BoxStream<'static, Result<Bytes>>>,
            failures: u32,
            done: bool,
        }
        let start = State {
            storage: self.clone(),
            uri: uri.clone(),
            offset: 0,
            inner: None,
            failures: 0,
            done: false,
        };
        futures::stream::unfold(start, |mut st| async move {
            if st.done {
                return None;
            }
            loop {
                if st.inner.is_none() {
                    let range = (st.offset > 0).then_some(st.offset..u64::MAX);
                    match st.storage.read(&st.uri, range).await {
                        Ok(s) => st.inner = Some(s),
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
                    Some(Err(e)) if e.is_retryable() && st.failures < RETRIES => {
                        st.failures += 1;
                        st.inner = None;
                        tracing::warn!(
                            uri = %st.uri,
                            offset = st.offset,
                            error = %e,
                            "download broke; reading on from where it stopped"
                        );
                        tokio::time::sleep(retry_delay(st.failures)).await;
                    }
                    Some(Err(e)) => {
                        st.done = true;
                        return Some((Err(e), st));
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
        let req = GetObjectRequest {
            bucket: uri.bucket().to_owned(),
            object: uri.object().to_owned(),
            ..Default::default()
        };
        let gcs = self.gcs()?;
        let found = retrying(&format!("looking up {uri}"), || {
            bump(&self.inner.calls.other);
            gcs.get_object(&req)
        })
        .await;
        match found {
            Ok(o) => ObjectInfo::from_object(&o).map(Some),
            Err(Error::Storage {
                http_status: Some(404),
                ..
            }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Deletes an object.
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
        let req = DeleteObjectRequest {
            bucket: uri.bucket().to_owned(),
            object: uri.object().to_owned(),
            ..Default::default()
        };
        bump(&self.inner.calls.other);
        self.gcs()?
            .delete_object(&req)
            .await
            .map_err(|e| storage_error(format!("deleting {uri}"), e))
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
        let req = gcs::buckets::insert::InsertBucketRequest {
            name: name.to_owned(),
            param: gcs::buckets::insert::InsertBucketParam {
                project: project.to_owned(),
                ..Default::default()
            },
            ..Default::default()
        };
        bump(&self.inner.calls.other);
        match self.gcs()?.insert_bucket(&req).await {
            Ok(_) => Ok(()),
            Err(gcs::Error::Response(r)) if r.code == 409 => Ok(()),
            Err(e) => Err(storage_error(format!("creating bucket {name}"), e)),
        }
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
    storage: Storage,
    uri: GcsUri,
    session: Session,
    buf: BytesMut,
    chunk: usize,
    /// Bytes the service has accepted.
    sent: u64,
    chunks: u64,
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

enum Session {
    Resumable(ResumableUploadClient),
    Local(local::Writer),
}

impl ObjectWriter {
    /// Appends bytes, sending every full chunk.
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
    pub fn len(&self) -> u64 {
        self.sent + self.buf.len() as u64
    }

    /// Whether nothing was written yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// How many upload requests carried data so far.
    pub fn chunks_sent(&self) -> u64 {
        self.chunks
    }

    /// Sends what is buffered and completes the object.
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
    async fn send(&mut self, last: bool) -> Result<Option<ObjectInfo>> {
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
    fn accept(&mut self, kept: Option<u64>, written: u64) -> Result<()> {
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

/// The local-directory stand-in for Cloud Storage ([`Storage::local`]).
mod local {
    use std::path::{Path, PathBuf};

    use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};

    use super::*;

    pub(super) fn io(path: &Path, e: std::io::Error) -> Error {
        Error::Storage {
            message: format!("{}: {e}", path.display()),
            http_status: (e.kind() == std::io::ErrorKind::NotFound).then_some(404),
            source: Some(Box::new(e)),
        }
    }

    pub(super) fn path(root: &Path, uri: &GcsUri) -> PathBuf {
        let mut p = root.join(uri.bucket());
        for seg in uri.object().split('/').filter(|s| !s.is_empty()) {
            p.push(seg);
        }
        p
    }

    /// Writes to a hidden file beside the target, renamed into place by
    /// `finish`: a reader never sees half an object.
    pub(super) struct Writer {
        uri: GcsUri,
        tmp: PathBuf,
        target: PathBuf,
        file: tokio::io::BufWriter<tokio::fs::File>,
        len: u64,
    }

    impl Writer {
        pub(super) async fn create(root: &Path, uri: &GcsUri) -> Result<Writer> {
            let target = path(root, uri);
            let parent = target.parent().unwrap_or(root).to_path_buf();
            tokio::fs::create_dir_all(&parent)
                .await
                .map_err(|e| io(&parent, e))?;
            let tmp = parent.join(format!(".upload-{:016x}.partial", fastrand::u64(..)));
            let file = tokio::fs::File::create(&tmp)
                .await
                .map_err(|e| io(&tmp, e))?;
            Ok(Writer {
                uri: uri.clone(),
                tmp,
                target,
                file: tokio::io::BufWriter::with_capacity(1 << 18, file),
                len: 0,
            })
        }

        pub(super) async fn write(&mut self, data: &[u8]) -> Result<()> {
            self.len += data.len() as u64;
            self.file
                .write_all(data)
                .await
                .map_err(|e| io(&self.tmp, e))
        }

        /// Publishes only if nothing is at the target yet (a hard link
        /// cannot replace a file): `None` when something was.
        pub(super) async fn finish_new(mut self) -> Result<Option<ObjectInfo>> {
            self.file.flush().await.map_err(|e| io(&self.tmp, e))?;
            let linked = tokio::fs::hard_link(&self.tmp, &self.target).await;
            let _ = tokio::fs::remove_file(&self.tmp).await;
            match linked {
                Ok(()) => Ok(Some(ObjectInfo {
                    uri: self.uri,
                    size: self.len,
                })),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(None),
                Err(e) => Err(io(&self.target, e)),
            }
        }

        pub(super) async fn finish(mut self) -> Result<ObjectInfo> {
            self.file.flush().await.map_err(|e| io(&self.tmp, e))?;
            tokio::fs::rename(&self.tmp, &self.target)
                .await
                .map_err(|e| io(&self.target, e))?;
            Ok(ObjectInfo {
                uri: self.uri,
                size: self.len,
            })
        }
    }

    pub(super) async fn metadata(root: &Path, uri: &GcsUri) -> Result<Option<ObjectInfo>> {
        let p = path(root, uri);
        match tokio::fs::metadata(&p).await {
            Ok(m) if m.is_file() => Ok(Some(ObjectInfo {
                uri: uri.clone(),
                size: m.len(),
            })),
            Ok(_) => Ok(None),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io(&p, e)),
        }
    }

    pub(super) async fn delete(root: &Path, uri: &GcsUri) -> Result<()> {
        let p = path(root, uri);
        tokio::fs::remove_file(&p).await.map_err(|e| io(&p, e))
    }

    pub(super) async fn read(
        root: &Path,
        uri: &GcsUri,
        range: Option<Range<u64>>,
    ) -> Result<BoxStream<'static, Result<Bytes>>> {
        let p = path(root, uri);
        let mut file = tokio::fs::File::open(&p).await.map_err(|e| io(&p, e))?;
        let limit = match range {
            Some(r) => {
                file.seek(std::io::SeekFrom::Start(r.start))
                    .await
                    .map_err(|e| io(&p, e))?;
                r.end.saturating_sub(r.start)
            }
            None => u64::MAX,
        };
        let name = p.clone();
        Ok(
            tokio_util::io::ReaderStream::with_capacity(file.take(limit), 256 << 10)
                .map_err(move |e| io(&name, e))
                .boxed(),
        )
    }

    /// Objects under `prefix`, in name order (hidden partial uploads left
    /// out).
    pub(super) fn list(root: &Path, prefix: &GcsUri) -> BoxStream<'static, Result<ObjectInfo>> {
        let root = root.to_path_buf();
        let prefix = prefix.clone();
        futures::stream::once(async move {
            tokio::task::spawn_blocking(move || walk(&root, &prefix))
                .await
                .map_err(|e| Error::config(format!("listing failed: {e}")))?
        })
        .map_ok(|v| futures::stream::iter(v.into_iter().map(Ok)))
        .try_flatten()
        .boxed()
    }

    fn walk(root: &Path, prefix: &GcsUri) -> Result<Vec<ObjectInfo>> {
        let bucket = root.join(prefix.bucket());
        // Walk from the deepest directory the prefix names.
        let dir_part = &prefix.object()[..prefix.object().rfind('/').map_or(0, |i| i + 1)];
        let start = path(
            root,
            &GcsUri::parse_field(&format!("gs://{}/{dir_part}", prefix.bucket()), "prefix")?,
        );
        let mut out = Vec::new();
        let mut todo = vec![start];
        while let Some(d) = todo.pop() {
            let entries = match std::fs::read_dir(&d) {
                Ok(e) => e,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(io(&d, e)),
            };
            for entry in entries {
                let entry = entry.map_err(|e| io(&d, e))?;
                let p = entry.path();
                let ty = entry.file_type().map_err(|e| io(&p, e))?;
                if ty.is_dir() {
                    todo.push(p);
                } else if ty.is_file() {
                    let Ok(rel) = p.strip_prefix(&bucket) else {
                        continue;
                    };
                    let name = rel.to_string_lossy().replace('\\', "/");
                    let hidden = name
                        .rsplit('/')
                        .next()
                        .is_some_and(|b| b.starts_with(".upload-"));
                    if hidden || !name.starts_with(prefix.object()) {
                        continue;
                    }
                    let size = entry.metadata().map_err(|e| io(&p, e))?.len();
                    out.push(ObjectInfo {
                        uri: GcsUri::parse_field(
                            &format!("gs://{}/{name}", prefix.bucket()),
                            "object",
                        )?,
                        size,
                    });
                }
            }
        }
        out.sort_by(|a, b| a.uri.object().cmp(b.uri.object()));
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_local_directory_stands_in_for_cloud_storage() {
        let dir = tempfile::tempdir().unwrap();
        let s = Storage::local(dir.path());
        let u: GcsUri = "gs://bkt/a/b.jsonl".parse().unwrap();
        let mut w = s.writer(&u).await.unwrap();
        w.write(b"hello ").await.unwrap();
        w.write(b"world").await.unwrap();
        assert_eq!(
            s.metadata(&u).await.unwrap(),
            None,
            "not visible before finish"
        );
        assert_eq!(w.finish().await.unwrap().size(), 11);
        assert!(dir.path().join("bkt/a/b.jsonl").is_file());
        let part: Vec<Bytes> = s
            .read(&u, Some(6..11))
            .await
            .unwrap()
            .try_collect()
            .await
            .unwrap();
        assert_eq!(part.concat(), b"world");
        s.upload_bytes(&"gs://bkt/a/c".parse().unwrap(), &b"x"[..])
            .await
            .unwrap();
        s.upload_bytes(&"gs://bkt/ab".parse().unwrap(), &b"x"[..])
            .await
            .unwrap();
        let listed: Vec<ObjectInfo> = s
            .list(&"gs://bkt/a/".parse().unwrap())
            .try_collect()
            .await
            .unwrap();
        let names: Vec<String> = listed.iter().map(|o| o.uri().to_string()).collect();
        assert_eq!(names, ["gs://bkt/a/b.jsonl", "gs://bkt/a/c"]);
        let all: Vec<ObjectInfo> = s
            .list(&"gs://bkt/a".parse().unwrap())
            .try_collect()
            .await
            .unwrap();
        assert_eq!(all.len(), 3);
        s.delete(&u).await.unwrap();
        assert!(matches!(
            s.read(&u, None).await.err(),
            Some(Error::Storage {
                http_status: Some(404),
                ..
            })
        ));
    }

    #[test]
    fn emulator_hosts_parse_and_userinfo_is_refused() {
        assert_eq!(
            emulator_url("127.0.0.1:4443").unwrap(),
            "http://127.0.0.1:4443"
        );
        assert_eq!(
            emulator_url("http://localhost:4443/").unwrap(),
            "http://localhost:4443"
        );
        assert!(emulator_url("http://127.0.0.1:1@evil.example:80").is_err());
        assert!(emulator_url("127.0.0.1:4443/storage").is_err());
        assert!(is_loopback_url("http://[::1]:80"));
        assert!(!is_loopback_url("http://10.0.0.1:80"));
        assert!(https_url("http://storage.example:80").is_err());
        assert_eq!(
            https_url("storage.example").unwrap(),
            "https://storage.example"
        );
    }

    #[tokio::test]
    async fn credentials_never_go_in_plaintext_to_a_remote_emulator() {
        let err = Storage::builder()
            .ignore_env()
            .emulator_host("http://10.1.2.3:4443")
            .credentials(Credentials::access_token("secret-token"))
            .build()
            .unwrap_err();
        assert!(matches!(err, Error::Config { .. }));
        assert!(!err.to_string().contains("secret-token"));
        let ok = Storage::builder()
            .ignore_env()
            .emulator_host("10.1.2.3:4443")
            .build()
            .unwrap();
        assert_eq!(ok.endpoint(), "http://10.1.2.3:4443");
        let s = Storage::builder()
            .ignore_env()
            .credentials(Credentials::access_token("secret-token"))
            .build()
            .unwrap();
        assert!(!format!("{s:?}").contains("secret-token"));
        assert_eq!(s.endpoint(), DEFAULT_ENDPOINT);
    }
}
