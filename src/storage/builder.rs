//! [`StorageBuilder`]: endpoint (Cloud Storage, an emulator, or a local
//! directory), credentials shared with the JobService client, TLS.

use std::{fmt, sync::Arc, time::Duration};

use super::{
    handle::{Calls, Inner, Storage},
    upload::{CHUNK_QUANTUM, DEFAULT_CHUNK_SIZE},
    wire::{Wire, WireOptions},
};
use crate::{
    client::Client,
    error::{Error, Result},
    policy::RetryPolicy,
    transport::{
        auth::{Credentials, TokenCache},
        endpoint::{no_tls_roots, HAS_TLS_ROOTS},
        proxy::{route, ProxyEnv, ProxySettings},
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

/// How long a Cloud Storage request may make no progress before it fails
/// (retryably): 60 s. See [`StorageBuilder::idle_timeout`].
///
/// ```
/// use std::time::Duration;
/// use vertex_batch::storage::DEFAULT_IDLE_TIMEOUT;
///
/// assert_eq!(DEFAULT_IDLE_TIMEOUT, Duration::from_secs(60));
/// ```
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

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
    pub(super) idle_timeout: Option<Duration>,
    pub(super) retry: Option<RetryPolicy>,
    /// The client's policy, from [`StorageBuilder::credentials_of`]; an
    /// explicit [`StorageBuilder::retry_policy`] wins over it.
    pub(super) client_retry: Option<RetryPolicy>,
    pub(super) proxy: ProxySettings,
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
            idle_timeout: Some(DEFAULT_IDLE_TIMEOUT),
            retry: None,
            client_retry: None,
            proxy: ProxySettings::default(),
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

    /// Uses `client`'s credentials — its very token cache, so one token
    /// serves both APIs (ignored for an emulator, which gets no
    /// credentials) — and its retry policy, so one budget governs both
    /// APIs (unless [`StorageBuilder::retry_policy`] sets another).
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
        self.client_retry = Some(client.inner.retry.clone());
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

    /// How long a request may make no progress — no byte of an upload
    /// taken by the connection, no answer, no byte of a download — before
    /// it fails (default [`DEFAULT_IDLE_TIMEOUT`], 60 s). The failure is a
    /// retryable [`Error::Storage`] with no HTTP status, so the retry
    /// policy applies: a listing page or a look-up is asked again, an
    /// upload chunk is resent from what the service kept, and
    /// [`Storage::read_resuming`] reads on from the last byte received.
    /// The time a reader spends between reads does not count.
    /// `Duration::ZERO` turns the timeout off (a stalled connection then
    /// waits for TCP keepalive or the operating system).
    ///
    /// ```
    /// use std::time::Duration;
    /// use vertex_batch::storage::Storage;
    ///
    /// let storage = Storage::builder()
    ///     .ignore_env()
    ///     .emulator_host("127.0.0.1:4443")
    ///     .idle_timeout(Duration::from_secs(15)) // a slow link: fail over sooner
    ///     .build()?;
    /// # Ok::<(), vertex_batch::Error>(())
    /// ```
    pub fn idle_timeout(mut self, timeout: Duration) -> Self {
        self.idle_timeout = (!timeout.is_zero()).then_some(timeout);
        self
    }

    /// How failed calls are tried again (default: the client's policy
    /// when built with [`StorageBuilder::credentials_of`] or
    /// [`Storage::for_client`], else [`RetryPolicy::default`]: 6 attempts,
    /// 1 s backoff doubling to 30 s, 5 minutes in all).
    ///
    /// The policy's attempts, backoff and total budget govern every
    /// storage call that is safe to repeat: listing pages, look-ups, the
    /// start of reads and of resumable uploads, each upload chunk, a
    /// download resumed after a break, deletes, bucket creation and
    /// one-request uploads (see [`Storage::create_bytes`] for how a repeated
    /// create-only write is judged). Retried: no answer (refused, reset,
    /// stalled past the idle timeout), 408, 429 and 5xx. Its per-attempt
    /// timeout is not used here: a download or an upload chunk may rightly
    /// take longer than any fixed deadline, so each attempt is bounded by
    /// the idle timeout instead.
    ///
    /// ```
    /// use std::time::Duration;
    /// use vertex_batch::{policy::RetryPolicy, storage::Storage};
    ///
    /// let storage = Storage::builder()
    ///     .ignore_env()
    ///     .emulator_host("127.0.0.1:4443")
    ///     .retry_policy(RetryPolicy::default().with_total_timeout(Some(Duration::from_secs(30))))
    ///     .build()?;
    /// # Ok::<(), vertex_batch::Error>(())
    /// ```
    pub fn retry_policy(mut self, policy: RetryPolicy) -> Self {
        self.retry = Some(policy);
        self
    }

    /// Connects through the HTTP proxy at `url`
    /// (`http://[user:password@]host[:port]`), by a `CONNECT` tunnel,
    /// whatever the endpoint (an emulator on loopback included), unless
    /// [`StorageBuilder::no_proxy`] (or `NO_PROXY`) names its host.
    ///
    /// Without it, `HTTPS_PROXY` (or `https_proxy`) is used for an `https`
    /// endpoint that is not on loopback; an emulator goes direct. TLS runs
    /// inside the tunnel, so the proxy never sees the token; a user and
    /// password in the URL go as `Proxy-Authorization: Basic` and are
    /// never shown. Credentials in plaintext through a proxy are refused.
    ///
    /// ```
    /// use vertex_batch::{storage::Storage, transport::Credentials};
    ///
    /// let storage = Storage::builder()
    ///     .ignore_env()
    ///     .credentials(Credentials::access_token("ya29.example"))
    ///     .proxy("http://proxy.corp.example:3128")
    ///     .build()?; // no network I/O yet
    /// // A token would cross the proxy in the clear: refused.
    /// let refused = Storage::builder()
    ///     .ignore_env()
    ///     .endpoint("http://127.0.0.1:4443")
    ///     .credentials(Credentials::access_token("ya29.example"))
    ///     .proxy("http://proxy.corp.example:3128")
    ///     .build();
    /// assert!(refused.is_err());
    /// # Ok::<(), vertex_batch::Error>(())
    /// ```
    pub fn proxy(mut self, url: impl Into<String>) -> Self {
        self.proxy.set_proxy(url);
        self
    }

    /// Hosts that bypass the proxy, in place of `NO_PROXY`: comma-separated
    /// domains (`example.com` also matches its subdomains), IP addresses,
    /// CIDR ranges, or `*` for all (curl's rules).
    ///
    /// ```
    /// use vertex_batch::storage::Storage;
    ///
    /// let storage = Storage::builder()
    ///     .ignore_env()
    ///     .emulator_host("127.0.0.1:4443")
    ///     .proxy("http://127.0.0.1:3128")
    ///     .no_proxy("127.0.0.1") // the emulator is dialled directly
    ///     .build()?;
    /// # Ok::<(), vertex_batch::Error>(())
    /// ```
    pub fn no_proxy(mut self, hosts: impl Into<String>) -> Self {
        self.proxy.no_proxy = Some(hosts.into());
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
        let env = self.use_env.then(ProxyEnv::from_process);
        let dst: http::Uri = endpoint
            .parse()
            .map_err(|_| Error::config(format!("invalid Cloud Storage endpoint {endpoint:?}")))?;
        let proxy = route(&self.proxy, env.as_ref(), &dst)?;
        if let (Some(p), Some(_), Some("http")) = (&proxy, &tokens, dst.scheme_str()) {
            return Err(Error::config(format!(
                "refusing to send credentials in plaintext to {endpoint} through the proxy at {}",
                p.shown()
            )));
        }
        let options = WireOptions {
            idle: self.idle_timeout,
            proxy,
        };
        Ok(Storage {
            inner: Arc::new(Inner {
                wire: Some(Wire::new(&endpoint, tokens, options)?),
                local: None,
                endpoint,
                chunk_size: self.chunk_size,
                retry: self.retry.or(self.client_retry).unwrap_or_default(),
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
                retry: RetryPolicy::default(),
                calls: Calls::default(),
            }),
        }
    }

    /// A client sharing `client`'s credentials (its very token cache) and
    /// retry policy (one budget for both APIs). `STORAGE_EMULATOR_HOST`
    /// still points it at an emulator, with no credentials.
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
