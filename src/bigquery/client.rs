//! [`BigQuery`], its builder, and where its credentials and endpoint come
//! from.

use std::{fmt, sync::Arc};

use crate::{
    client::Client,
    error::{Error, Result},
    storage::Storage,
    transport::auth::Credentials,
};

/// `BIGQUERY_EMULATOR_HOST`: a BigQuery emulator (`http://host:port` or
/// `host:port`), used over plaintext with no credentials.
///
/// ```
/// use vertex_batch::bigquery::{BigQuery, ENV_BIGQUERY_EMULATOR_HOST};
///
/// assert_eq!(ENV_BIGQUERY_EMULATOR_HOST, "BIGQUERY_EMULATOR_HOST");
/// let bq = BigQuery::builder().ignore_env().emulator_host("127.0.0.1:9050").build()?;
/// assert_eq!(bq.endpoint(), "http://127.0.0.1:9050");
/// # Ok::<(), vertex_batch::Error>(())
/// ```
pub const ENV_BIGQUERY_EMULATOR_HOST: &str = "BIGQUERY_EMULATOR_HOST";

/// `BIGQUERY_STORAGE_EMULATOR_HOST`: the gRPC address (`host:port` or
/// `http://host:port`) of a BigQuery emulator's Storage Read API. With
/// [`ENV_BIGQUERY_EMULATOR_HOST`] set, tables are read through it; without
/// it, an emulator's tables are read through `tabledata.list`.
///
/// ```
/// use vertex_batch::bigquery::ENV_BIGQUERY_STORAGE_EMULATOR_HOST;
/// assert_eq!(ENV_BIGQUERY_STORAGE_EMULATOR_HOST, "BIGQUERY_STORAGE_EMULATOR_HOST");
/// ```
pub const ENV_BIGQUERY_STORAGE_EMULATOR_HOST: &str = "BIGQUERY_STORAGE_EMULATOR_HOST";

/// The BigQuery endpoint.
///
/// ```
/// use vertex_batch::bigquery::{BigQuery, DEFAULT_ENDPOINT};
///
/// let bq = BigQuery::builder().ignore_env().build()?; // no network I/O yet
/// assert_eq!(bq.endpoint(), DEFAULT_ENDPOINT);
/// # Ok::<(), vertex_batch::Error>(())
/// ```
pub const DEFAULT_ENDPOINT: &str = "https://bigquery.googleapis.com";

/// A BigQuery client. Cheap to clone.
///
/// ```
/// use vertex_batch::bigquery::BigQuery;
///
/// let bq = BigQuery::builder().ignore_env().emulator_host("127.0.0.1:9050").build()?;
/// let copy = bq.clone(); // shares the connection pool
/// assert_eq!(copy.endpoint(), bq.endpoint());
/// # Ok::<(), vertex_batch::Error>(())
/// ```
#[derive(Clone)]
pub struct BigQuery {
    pub(super) inner: Arc<Inner>,
}

pub(super) struct Inner {
    /// The HTTP stack (a Cloud Storage client aimed at the BigQuery
    /// endpoint: its connection pool, TLS, token and retries).
    pub(super) http: Storage,
    pub(super) endpoint: String,
    /// Where tables are read through the Storage Read API; `None`:
    /// through `tabledata.list`.
    pub(super) read_api: Option<ReadApiConfig>,
    /// The Storage Read API's gRPC client, made at the first read (a
    /// channel needs a Tokio runtime).
    pub(super) read_client: std::sync::OnceLock<ReadClient>,
}

impl fmt::Debug for BigQuery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BigQuery")
            .field("endpoint", &self.inner.endpoint)
            .finish_non_exhaustive()
    }
}

/// Where a [`BigQuery`]'s credentials come from.
#[derive(Debug, Clone)]
enum Auth {
    /// Application Default Credentials (none for an emulator).
    Default,
    /// Given.
    Given(Credentials),
    /// A JobService client's token cache.
    Of(Client),
}

/// Configures a [`BigQuery`].
///
/// ```
/// use vertex_batch::bigquery::BigQuery;
///
/// let bq = BigQuery::builder()
///     .ignore_env()                    // whatever BIGQUERY_EMULATOR_HOST says,
///     .emulator_host("127.0.0.1:9050") // use bqemulator: plaintext, no credentials
///     .build()?;                       // no network I/O yet
/// assert_eq!(bq.endpoint(), "http://127.0.0.1:9050");
/// # Ok::<(), vertex_batch::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct BigQueryBuilder {
    auth: Auth,
    endpoint: Option<String>,
    emulator: Option<String>,
    use_env: bool,
    retry: Option<crate::policy::RetryPolicy>,
    chunk_size: Option<usize>,
    reads: Reads,
    read_streams: i32,
}

/// How tables are read.
#[derive(Debug, Clone)]
enum Reads {
    /// The Storage Read API for BigQuery itself, `tabledata.list` for an
    /// emulator (whose gRPC address is not known).
    Default,
    /// The Storage Read API at this endpoint.
    ReadApi(String),
    /// `tabledata.list`.
    Rest,
}

impl Default for BigQueryBuilder {
    fn default() -> Self {
        BigQueryBuilder {
            auth: Auth::Default,
            endpoint: None,
            emulator: None,
            use_env: true,
            retry: None,
            chunk_size: None,
            reads: Reads::Default,
            read_streams: DEFAULT_STREAMS,
        }
    }
}

impl BigQueryBuilder {
    /// The credentials (default: Application Default Credentials; none for
    /// an emulator).
    ///
    /// ```
    /// use vertex_batch::{bigquery::BigQuery, transport::Credentials};
    ///
    /// let bq = BigQuery::builder().ignore_env()
    ///     .credentials(Credentials::access_token("ya29.example"))
    ///     .build()?;
    /// # Ok::<(), vertex_batch::Error>(())
    /// ```
    pub fn credentials(mut self, credentials: Credentials) -> Self {
        self.auth = Auth::Given(credentials);
        self
    }

    /// Uses `client`'s credentials: its very token cache, so one token
    /// serves every API. (Ignored for an emulator.)
    ///
    /// ```no_run
    /// # fn demo(client: &vertex_batch::Client) -> vertex_batch::Result<()> {
    /// let bq = vertex_batch::bigquery::BigQuery::builder().credentials_of(client).build()?;
    /// # Ok(()) }
    /// ```
    pub fn credentials_of(mut self, client: &Client) -> Self {
        self.auth = Auth::Of(client.clone());
        self
    }

    /// Another endpoint (`https://host[:port]`; `http://` only on loopback).
    ///
    /// ```
    /// use vertex_batch::bigquery::BigQuery;
    /// let bq = BigQuery::builder().ignore_env().endpoint("https://bigquery.example.com").build()?;
    /// assert_eq!(bq.endpoint(), "https://bigquery.example.com");
    /// assert!(BigQuery::builder().ignore_env().endpoint("http://10.0.0.1:9050").build().is_err());
    /// # Ok::<(), vertex_batch::Error>(())
    /// ```
    pub fn endpoint(mut self, endpoint: impl Into<String>) -> Self {
        self.endpoint = Some(endpoint.into());
        self
    }

    /// A BigQuery emulator (`host:port` or `http://host:port`): plaintext,
    /// no credentials. Overrides [`BigQueryBuilder::endpoint`].
    ///
    /// ```
    /// use vertex_batch::bigquery::BigQuery;
    /// let bq = BigQuery::builder().ignore_env().emulator_host("http://127.0.0.1:9050/").build()?;
    /// assert_eq!(bq.endpoint(), "http://127.0.0.1:9050");
    /// # Ok::<(), vertex_batch::Error>(())
    /// ```
    pub fn emulator_host(mut self, host: impl Into<String>) -> Self {
        self.emulator = Some(host.into());
        self
    }

    /// The retry budget of every call (default: the client's, with
    /// [`BigQueryBuilder::credentials_of`]; else
    /// [`RetryPolicy::default`](crate::policy::RetryPolicy::default)).
    ///
    /// ```
    /// use vertex_batch::{bigquery::BigQuery, policy::RetryPolicy};
    /// let bq = BigQuery::builder().ignore_env().retry_policy(RetryPolicy::none()).build()?;
    /// # Ok::<(), vertex_batch::Error>(())
    /// ```
    pub fn retry_policy(mut self, policy: crate::policy::RetryPolicy) -> Self {
        self.retry = Some(policy);
        self
    }

    /// The chunk a [`LoadWriter`](super::LoadWriter) sends per request,
    /// rounded up to a multiple of 256 KiB
    /// ([`CHUNK_QUANTUM`](crate::storage::CHUNK_QUANTUM); default 8 MiB,
    /// [`DEFAULT_CHUNK_SIZE`](crate::storage::DEFAULT_CHUNK_SIZE)). Memory
    /// per load is one chunk.
    ///
    /// ```
    /// use vertex_batch::bigquery::BigQuery;
    /// let bq = BigQuery::builder().ignore_env().chunk_size(1 << 20).build()?;
    /// # Ok::<(), vertex_batch::Error>(())
    /// ```
    pub fn chunk_size(mut self, bytes: usize) -> Self {
        self.chunk_size = Some(bytes);
        self
    }

    /// Reads tables through the Storage Read API (gRPC) at `endpoint`
    /// (`https://host[:port]`; `http://` only on loopback, as for an
    /// emulator's gRPC port). The default for BigQuery itself, at
    /// [`DEFAULT_READ_ENDPOINT`](super::DEFAULT_READ_ENDPOINT): it measured
    /// faster than `tabledata.list` (docs/PERFORMANCE.md). An emulator is
    /// read through `tabledata.list` unless this or
    /// [`ENV_BIGQUERY_STORAGE_EMULATOR_HOST`] names its gRPC port.
    ///
    /// The Storage Read API bills the bytes it reads (`tabledata.list` is
    /// free): about $1.10 a TiB on demand, a fraction of a cent for a
    /// 200,000-row output table.
    ///
    /// ```
    /// use vertex_batch::bigquery::BigQuery;
    /// let bq = BigQuery::builder().ignore_env()
    ///     .emulator_host("127.0.0.1:9050")
    ///     .storage_read_api("http://127.0.0.1:9060")
    ///     .build()?;
    /// assert!(bq.reads_through_storage_read_api());
    /// assert!(BigQuery::builder().ignore_env().storage_read_api("http://10.0.0.1:9060").build().is_err());
    /// # Ok::<(), vertex_batch::Error>(())
    /// ```
    pub fn storage_read_api(mut self, endpoint: impl Into<String>) -> Self {
        self.reads = Reads::ReadApi(endpoint.into());
        self
    }

    /// Reads tables through `tabledata.list` (REST pages), never the
    /// Storage Read API: for callers without
    /// `bigquery.readsessions.create`, or to avoid its charge per byte
    /// read. (A caller the Storage Read API refuses with
    /// `PERMISSION_DENIED` falls back to this on its own.)
    ///
    /// ```
    /// use vertex_batch::bigquery::BigQuery;
    /// let bq = BigQuery::builder().ignore_env().tabledata_reads().build()?;
    /// assert!(!bq.reads_through_storage_read_api());
    /// # Ok::<(), vertex_batch::Error>(())
    /// ```
    pub fn tabledata_reads(mut self) -> Self {
        self.reads = Reads::Rest;
        self
    }

    /// The streams a Storage Read API session asks for (default 4; the
    /// service may give fewer). At most four are read at once; memory is
    /// one block of rows per stream being read.
    ///
    /// ```
    /// use vertex_batch::bigquery::BigQuery;
    /// let bq = BigQuery::builder().ignore_env().read_streams(8).build()?;
    /// # Ok::<(), vertex_batch::Error>(())
    /// ```
    pub fn read_streams(mut self, streams: u16) -> Self {
        self.read_streams = i32::from(streams.max(1));
        self
    }

    /// Ignores `BIGQUERY_EMULATOR_HOST`.
    ///
    /// ```
    /// use vertex_batch::bigquery::{BigQuery, DEFAULT_ENDPOINT};
    /// let bq = BigQuery::builder().ignore_env().build()?;
    /// assert_eq!(bq.endpoint(), DEFAULT_ENDPOINT);
    /// # Ok::<(), vertex_batch::Error>(())
    /// ```
    pub fn ignore_env(mut self) -> Self {
        self.use_env = false;
        self
    }

    /// Builds the client (no network I/O).
    ///
    /// ```
    /// use vertex_batch::bigquery::BigQuery;
    /// let err = BigQuery::builder().ignore_env().emulator_host("ftp://x").build().unwrap_err();
    /// assert!(err.to_string().contains("BIGQUERY_EMULATOR_HOST"), "{err}");
    /// ```
    pub fn build(self) -> Result<BigQuery> {
        let emulator = self.emulator.clone().or_else(|| {
            self.use_env
                .then(|| std::env::var(ENV_BIGQUERY_EMULATOR_HOST).ok())
                .flatten()
                .filter(|v| !v.trim().is_empty())
        });
        let rename = |e: Error| match e {
            Error::Config { message, .. } => Error::config(
                message
                    .replace("STORAGE_EMULATOR_HOST", ENV_BIGQUERY_EMULATOR_HOST)
                    .replace("Cloud Storage", "BigQuery")
                    .replace("storage emulator", "BigQuery emulator"),
            ),
            other => other,
        };
        let mut http = Storage::builder().ignore_env();
        http = match (&emulator, &self.endpoint) {
            (Some(host), _) => http.emulator_host(host),
            (None, Some(ep)) => http.endpoint(ep),
            (None, None) => http.endpoint(DEFAULT_ENDPOINT),
        };
        http = match self.auth {
            Auth::Default => http,
            Auth::Given(c) => http.credentials(c),
            Auth::Of(client) => http.credentials_of(&client),
        };
        if let Some(policy) = self.retry {
            http = http.retry_policy(policy);
        }
        if let Some(bytes) = self.chunk_size {
            http = http.chunk_size(bytes);
        }
        let http = http.build().map_err(rename)?;
        let env_read = || {
            self.use_env
                .then(|| std::env::var(ENV_BIGQUERY_STORAGE_EMULATOR_HOST).ok())
                .flatten()
                .filter(|v| !v.trim().is_empty())
                .map(|v| {
                    let v = v.trim().trim_end_matches('/');
                    if v.contains("://") {
                        v.to_owned()
                    } else {
                        format!("http://{v}")
                    }
                })
        };
        let read_endpoint = match (self.reads, &emulator, &self.endpoint) {
            (Reads::ReadApi(ep), _, _) => Some(ep),
            (Reads::Rest, _, _) => None,
            (Reads::Default, Some(_), _) => env_read(),
            // Another REST endpoint (a private one, a proxy): its Storage
            // Read API is not known.
            (Reads::Default, None, Some(_)) => None,
            (Reads::Default, None, None) => Some(DEFAULT_READ_ENDPOINT.to_owned()),
        };
        let read_api = read_endpoint
            .map(|endpoint| {
                // Checked now (loopback rule, syntax); dialled at the first read.
                crate::transport::endpoint::resolve_endpoint(&endpoint, emulator.is_some())?;
                Ok::<_, Error>(ReadApiConfig {
                    allow_plaintext: emulator.is_some(),
                    endpoint,
                    streams: self.read_streams,
                    use_env: self.use_env,
                })
            })
            .transpose()?;
        Ok(BigQuery {
            inner: Arc::new(Inner {
                endpoint: http.endpoint().to_owned(),
                http,
                read_api,
                read_client: std::sync::OnceLock::new(),
            }),
        })
    }
}

impl BigQuery {
    /// A builder.
    ///
    /// ```
    /// let bq = vertex_batch::bigquery::BigQuery::builder().ignore_env().build()?;
    /// # Ok::<(), vertex_batch::Error>(())
    /// ```
    pub fn builder() -> BigQueryBuilder {
        BigQueryBuilder::default()
    }

    /// A client sharing `client`'s credentials (or an emulator's, when
    /// `BIGQUERY_EMULATOR_HOST` is set).
    ///
    /// ```no_run
    /// # fn demo(client: &vertex_batch::Client) -> vertex_batch::Result<()> {
    /// let bq = vertex_batch::bigquery::BigQuery::for_client(client)?;
    /// # Ok(()) }
    /// ```
    pub fn for_client(client: &Client) -> Result<BigQuery> {
        BigQuery::builder().credentials_of(client).build()
    }

    /// The endpoint (`https://bigquery.googleapis.com`, or an emulator's).
    ///
    /// ```
    /// let bq = vertex_batch::bigquery::BigQuery::builder().ignore_env().build()?;
    /// assert_eq!(bq.endpoint(), "https://bigquery.googleapis.com");
    /// # Ok::<(), vertex_batch::Error>(())
    /// ```
    pub fn endpoint(&self) -> &str {
        &self.inner.endpoint
    }

    /// Whether tables are read through the Storage Read API (else
    /// `tabledata.list`); see [`BigQueryBuilder::storage_read_api`].
    ///
    /// ```
    /// use vertex_batch::bigquery::BigQuery;
    /// assert!(BigQuery::builder().ignore_env().build()?.reads_through_storage_read_api());
    /// # Ok::<(), vertex_batch::Error>(())
    /// ```
    pub fn reads_through_storage_read_api(&self) -> bool {
        self.inner.read_api.is_some()
    }
}

/// The Storage Read API's endpoint.
pub const DEFAULT_READ_ENDPOINT: &str = "https://bigquerystorage.googleapis.com";

/// Streams asked for per read session (the service may give fewer).
pub(super) const DEFAULT_STREAMS: i32 = 4;

/// How a [`BigQuery`] reaches the Storage Read API.
#[derive(Debug, Clone)]
pub(super) struct ReadApiConfig {
    /// `https://host[:port]`, or `http://` on loopback (an emulator).
    pub(super) endpoint: String,
    pub(super) streams: i32,
    pub(super) use_env: bool,
    /// Plaintext off loopback (an emulator's, sent no credentials).
    pub(super) allow_plaintext: bool,
}

/// The Storage Read API's gRPC client.
pub(super) type ReadClient =
    crate::proto::google::cloud::bigquery::storage::v1::big_query_read_client::BigQueryReadClient<
        crate::transport::headers::HeaderService<tonic::transport::Channel>,
    >;

/// A Cloud Storage error from the shared HTTP stack, as a BigQuery one.
pub(super) fn bq_error(e: Error) -> Error {
    match e {
        Error::Storage {
            message,
            http_status,
            source,
        } => Error::BigQuery {
            message,
            http_status,
            source,
        },
        other => other,
    }
}
