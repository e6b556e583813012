//! [`StorageBuilder`]: endpoint (Cloud Storage, an emulator, or a local
//! directory), credentials shared with the JobService client, TLS.

use std::{fmt, sync::Arc};

use super::{
    handle::{Calls, Inner, Storage},
    upload::{CHUNK_QUANTUM, DEFAULT_CHUNK_SIZE},
    wire::Wire,
};
use crate::{
    client::Client,
    error::{Error, Result},
    transport::{
        auth::{Credentials, TokenCache},
        endpoint::{no_tls_roots, HAS_TLS_ROOTS},
    },
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
    pub(super) credentials: Option<Credentials>,
    pub(super) tokens: Option<Arc<TokenCache>>,
    pub(super) endpoint: Option<String>,
    pub(super) emulator: Option<String>,
    pub(super) use_env: bool,
    pub(super) chunk_size: usize,
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
    ///
    /// ```
    /// use vertex_batch::storage::Storage;
    ///
    /// let storage = Storage::builder().emulator_host("127.0.0.1:4443").build()?; // fake-gcs-server
    /// assert_eq!(storage.endpoint(), "http://127.0.0.1:4443");
    /// # Ok::<(), vertex_batch::Error>(())
    /// ```
    pub fn emulator_host(mut self, host: impl Into<String>) -> Self {
        self.emulator = Some(host.into());
        self
    }

    /// Ignores `STORAGE_EMULATOR_HOST`.
    ///
    /// ```
    /// use vertex_batch::storage::Storage;
    ///
    /// // The endpoint set here wins, whatever STORAGE_EMULATOR_HOST says.
    /// let storage = Storage::builder().ignore_env().endpoint("http://127.0.0.1:4443").build()?;
    /// assert_eq!(storage.endpoint(), "http://127.0.0.1:4443");
    /// # Ok::<(), vertex_batch::Error>(())
    /// ```
    pub fn ignore_env(mut self) -> Self {
        self.use_env = false;
        self
    }

    /// The resumable upload chunk, rounded up to a multiple of 256 KiB
    /// (default 8 MiB). Memory per upload is one chunk.
    ///
    /// ```
    /// use vertex_batch::storage::Storage;
    ///
    /// // 1 MB is rounded up to 4 × 256 KiB; each upload buffers at most that.
    /// let storage = Storage::builder().ignore_env().emulator_host("127.0.0.1:4443").chunk_size(1_000_000).build()?;
    /// # Ok::<(), vertex_batch::Error>(())
    /// ```
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
        Ok(Storage {
            inner: Arc::new(Inner {
                wire: Some(Wire::new(&endpoint, tokens)?),
                local: None,
                endpoint,
                chunk_size: self.chunk_size,
                calls: Calls::default(),
            }),
        })
    }
}

pub(super) fn emulator_url(host: &str) -> Result<String> {
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

pub(super) fn https_url(ep: &str) -> Result<String> {
    let ep = ep.trim().trim_end_matches('/');
    let url = if ep.contains("://") {
        ep.to_owned()
    } else {
        format!("https://{ep}")
    };
    // Scheme and host (and port) only: requests are built from the host.
    let bare = |u: &http::Uri| {
        u.authority().is_some_and(|a| !a.as_str().contains('@'))
            && u.path() == "/"
            && u.query().is_none()
    };
    match http::Uri::try_from(url.as_str()) {
        Ok(u) if u.scheme_str() == Some("https") && bare(&u) => Ok(url),
        Ok(u) if u.scheme_str() == Some("http") && bare(&u) && is_loopback_url(&url) => Ok(url),
        _ => Err(Error::config(format!(
            "invalid Cloud Storage endpoint {ep:?}: expected https://host[:port]"
        ))),
    }
}

pub(super) fn is_loopback_url(url: &str) -> bool {
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
                wire: None,
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
}
