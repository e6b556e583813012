//! [`ClientBuilder`]: project, location, endpoint, credentials, transport.

use std::{sync::Arc, time::Duration};

use http::HeaderValue;
use tonic::transport::Channel;

use super::handle::{Client, Inner};
use crate::{
    error::{Error, Result},
    names::LocationName,
    policy::RetryPolicy,
    transport::{
        auth::{Credentials, TokenCache},
        endpoint::{
            authority, emulator_uri, endpoint_for_location, is_loopback, lazy_channel,
            resolve_endpoint, DEFAULT_LOCATION, ENV_EMULATOR_HOST, ENV_LOCATION, ENV_PROJECT,
            ENV_QUOTA_PROJECT,
        },
        headers::{api_client_header, HeaderLayer, Shared},
        proxy::{route, ProxyEnv, ProxySettings},
    },
};

/// Builds a [`Client`].
///
/// Settings not given come from the environment: `GOOGLE_CLOUD_PROJECT`,
/// `GOOGLE_CLOUD_LOCATION` (default `us-central1`),
/// `GOOGLE_CLOUD_QUOTA_PROJECT`, and `VERTEX_AI_EMULATOR_HOST`, which switches
/// to plaintext to that `host:port` with no credentials. `HTTPS_PROXY` and
/// `NO_PROXY` route the TLS connection through an HTTP `CONNECT` proxy
/// (see [`ClientBuilder::proxy`]). Explicit settings always win over the
/// environment.
///
/// ```no_run
/// # async fn demo() -> vertex_batch::Result<()> {
/// use vertex_batch::Client;
/// let client = Client::builder()
///     .project("my-project")
///     .location("europe-west4")
///     .build()?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Default)]
pub struct ClientBuilder {
    project: Option<String>,
    location: Option<String>,
    endpoint: Option<String>,
    emulator: Option<String>,
    credentials: Option<Credentials>,
    quota_project: Option<String>,
    allow_plaintext: bool,
    use_env: bool,
    retry: Option<RetryPolicy>,
    connect_timeout: Option<Duration>,
    proxy: ProxySettings,
}

impl Client {
    /// Starts a [`ClientBuilder`].
    ///
    /// ```no_run
    /// # async fn demo() -> vertex_batch::Result<()> {
    /// let client = vertex_batch::Client::builder().project("my-project").build()?;
    /// # Ok(()) }
    /// ```
    pub fn builder() -> ClientBuilder {
        ClientBuilder::new()
    }
}

impl ClientBuilder {
    pub(crate) fn new() -> Self {
        ClientBuilder {
            use_env: true,
            ..Default::default()
        }
    }

    /// The project id.
    ///
    /// ```no_run
    /// # async fn demo() -> vertex_batch::Result<()> {
    /// let client = vertex_batch::Client::builder().project("my-project").build()?;
    /// # let _ = client; Ok(()) }
    /// ```
    pub fn project(mut self, project: impl Into<String>) -> Self {
        self.project = Some(project.into());
        self
    }

    /// The location: a region (`us-central1`), `global`, `us` or `eu`.
    ///
    /// ```no_run
    /// # async fn demo() -> vertex_batch::Result<()> {
    /// let client = vertex_batch::Client::builder().project("p").location("europe-west4").build()?;
    /// # let _ = client; Ok(()) }
    /// ```
    pub fn location(mut self, location: impl Into<String>) -> Self {
        self.location = Some(location.into());
        self
    }

    /// Overrides the endpoint: `host[:port]` or `https://host[:port]` for TLS,
    /// `http://host:port` for plaintext (loopback only, unless
    /// [`ClientBuilder::allow_plaintext`] is set).
    ///
    /// ```no_run
    /// # async fn demo() -> vertex_batch::Result<()> {
    /// let client = vertex_batch::Client::builder()
    ///     .project("p")
    ///     .endpoint("https://private-vertex.example.com")
    ///     .build()?;
    /// # let _ = client; Ok(()) }
    /// ```
    pub fn endpoint(mut self, endpoint: impl Into<String>) -> Self {
        self.endpoint = Some(endpoint.into());
        self
    }

    /// Talks plaintext to an emulator at `host:port`, with no credentials
    /// (unless [`ClientBuilder::credentials`] is also given). The same as
    /// setting `VERTEX_AI_EMULATOR_HOST`.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> vertex_batch::Result<()> {
    /// let client = vertex_batch::Client::builder().project("p").emulator_host("127.0.0.1:8080").build()?;
    /// assert_eq!(client.endpoint(), "http://127.0.0.1:8080"); // connects lazily
    /// # Ok(()) }
    /// ```
    pub fn emulator_host(mut self, host_port: impl Into<String>) -> Self {
        self.emulator = Some(host_port.into());
        self
    }

    /// The credentials (default: Application Default Credentials).
    ///
    /// ```no_run
    /// # async fn demo() -> vertex_batch::Result<()> {
    /// use vertex_batch::transport::Credentials;
    /// let client = vertex_batch::Client::builder()
    ///     .project("p")
    ///     .credentials(Credentials::access_token("ya29.example-token"))
    ///     .build()?;
    /// # let _ = client; Ok(()) }
    /// ```
    pub fn credentials(mut self, credentials: Credentials) -> Self {
        self.credentials = Some(credentials);
        self
    }

    /// The quota project sent as `x-goog-user-project`.
    ///
    /// ```no_run
    /// # async fn demo() -> vertex_batch::Result<()> {
    /// let client = vertex_batch::Client::builder().project("p").quota_project("billing-project").build()?;
    /// # let _ = client; Ok(()) }
    /// ```
    pub fn quota_project(mut self, project: impl Into<String>) -> Self {
        self.quota_project = Some(project.into());
        self
    }

    /// Allows a plaintext `http://` endpoint that is not on loopback. Tokens
    /// would cross the network unencrypted: use only on a trusted network.
    ///
    /// ```no_run
    /// # async fn demo() -> vertex_batch::Result<()> {
    /// let client = vertex_batch::Client::builder()
    ///     .project("p")
    ///     .endpoint("http://10.0.0.5:8080") // a proxy on a trusted network
    ///     .allow_plaintext(true)
    ///     .build()?;
    /// # let _ = client; Ok(()) }
    /// ```
    pub fn allow_plaintext(mut self, allow: bool) -> Self {
        self.allow_plaintext = allow;
        self
    }

    /// Ignores the environment variables (for tests and embedded use).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> vertex_batch::Result<()> {
    /// use vertex_batch::{Client, Error};
    /// // GOOGLE_CLOUD_PROJECT is not read: the project must be given.
    /// let err = Client::builder().ignore_env().emulator_host("127.0.0.1:8080").build().unwrap_err();
    /// assert!(matches!(err, Error::Config { .. }));
    /// # Ok(()) }
    /// ```
    pub fn ignore_env(mut self) -> Self {
        self.use_env = false;
        self
    }

    /// The retry policy for idempotent calls (default: [`RetryPolicy::default`]).
    ///
    /// ```no_run
    /// # async fn demo() -> vertex_batch::Result<()> {
    /// use vertex_batch::policy::RetryPolicy;
    /// let client = vertex_batch::Client::builder()
    ///     .project("p")
    ///     .retry_policy(RetryPolicy::default().with_max_attempts(3))
    ///     .build()?;
    /// # let _ = client; Ok(()) }
    /// ```
    pub fn retry_policy(mut self, policy: RetryPolicy) -> Self {
        self.retry = Some(policy);
        self
    }

    /// How long to wait for a connection (default 20 s).
    ///
    /// ```no_run
    /// # async fn demo() -> vertex_batch::Result<()> {
    /// let client = vertex_batch::Client::builder()
    ///     .project("p")
    ///     .connect_timeout(std::time::Duration::from_secs(5))
    ///     .build()?;
    /// # let _ = client; Ok(()) }
    /// ```
    pub fn connect_timeout(mut self, d: Duration) -> Self {
        self.connect_timeout = Some(d);
        self
    }

    /// Connects through the HTTP proxy at `url`
    /// (`http://[user:password@]host[:port]`), by a `CONNECT` tunnel, for
    /// every destination — loopback and plaintext emulators included —
    /// except the hosts [`ClientBuilder::no_proxy`] (or `NO_PROXY`) names.
    ///
    /// Without it, `HTTPS_PROXY` (or `https_proxy`) is used for TLS
    /// endpoints that are not on loopback; plaintext endpoints then go
    /// direct. TLS runs inside the tunnel, so the proxy never sees the
    /// token. A user and password in the URL are sent as
    /// `Proxy-Authorization: Basic` and never shown in `Debug` output or
    /// errors. Credentials are never sent in plaintext through a proxy:
    /// such a configuration is an [`Error::Config`].
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> vertex_batch::Result<()> {
    /// let client = vertex_batch::Client::builder()
    ///     .project("p")
    ///     .proxy("http://proxy.corp.example:3128") // connects lazily: no I/O yet
    ///     .build()?;
    /// // Only http:// proxies (the tunnel to the service is TLS all the same):
    /// let err = vertex_batch::Client::builder()
    ///     .project("p")
    ///     .proxy("https://user:secret@proxy.corp.example")
    ///     .build()
    ///     .unwrap_err();
    /// assert!(!err.to_string().contains("secret"));
    /// # Ok(()) }
    /// ```
    pub fn proxy(mut self, url: impl Into<String>) -> Self {
        self.proxy.set_proxy(url);
        self
    }

    /// Hosts that bypass the proxy, in place of `NO_PROXY`: comma-separated
    /// domains (`example.com` also matches its subdomains), IP addresses,
    /// CIDR ranges (`10.0.0.0/8`), or `*` for all (curl's rules).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> vertex_batch::Result<()> {
    /// let client = vertex_batch::Client::builder()
    ///     .project("p")
    ///     .emulator_host("127.0.0.1:8080")
    ///     .proxy("http://127.0.0.1:3128")
    ///     .no_proxy("127.0.0.1, .internal.example") // the emulator is dialled directly
    ///     .build()?;
    /// # let _ = client; Ok(()) }
    /// ```
    pub fn no_proxy(mut self, hosts: impl Into<String>) -> Self {
        self.proxy.no_proxy = Some(hosts.into());
        self
    }

    fn env(&self, name: &str) -> Option<String> {
        if !self.use_env {
            return None;
        }
        std::env::var(name).ok().filter(|v| !v.trim().is_empty())
    }

    /// Builds the client. Connects lazily: no network I/O happens here.
    ///
    /// Must be called inside a Tokio runtime; returns [`Error::Config`]
    /// otherwise.
    ///
    /// ```
    /// use vertex_batch::{Client, Error};
    /// // Outside a Tokio runtime: a configuration error, not a panic.
    /// let err = Client::builder().project("p").emulator_host("127.0.0.1:8080").build().unwrap_err();
    /// assert!(matches!(err, Error::Config { .. }));
    /// ```
    pub fn build(self) -> Result<Client> {
        self.build_inner(None)
    }

    /// Builds the client over a channel the caller made (a custom
    /// connector, a proxy, an in-memory transport). Endpoint and proxy
    /// settings are ignored; credentials default to none, as for an
    /// emulator.
    ///
    /// ```no_run
    /// # async fn demo() -> vertex_batch::Result<()> {
    /// use tonic::transport::Endpoint;
    /// let channel = Endpoint::from_static("http://127.0.0.1:8080").connect_lazy();
    /// let client = vertex_batch::Client::builder()
    ///     .project("p")
    ///     .location("us-central1")
    ///     .build_with_channel(channel)?;
    /// # let _ = client;
    /// # Ok(()) }
    /// ```
    pub fn build_with_channel(self, channel: Channel) -> Result<Client> {
        self.build_inner(Some(channel))
    }

    fn build_inner(self, given: Option<Channel>) -> Result<Client> {
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(Error::config(
                "Client::build must be called inside a Tokio runtime",
            ));
        }
        let project = self
            .project
            .clone()
            .or_else(|| self.env(ENV_PROJECT))
            .ok_or_else(|| {
                Error::config(format!(
                    "no project: call .project(\"my-project\") or set {ENV_PROJECT}"
                ))
            })?;
        let location = self
            .location
            .clone()
            .or_else(|| self.env(ENV_LOCATION))
            .unwrap_or_else(|| DEFAULT_LOCATION.to_owned());
        let parent = LocationName::new(project, location)?;

        // `plaintext`: whether credentials would travel unencrypted. A
        // caller's channel is taken to be plaintext unless the builder names
        // an https endpoint for it: this crate cannot see inside it.
        let (uri, channel, emulated, plaintext) = match given {
            Some(channel) => {
                let named = self.endpoint.clone().or_else(|| self.emulator.clone());
                let tls = named.as_deref().is_some_and(|e| {
                    let e = e.trim();
                    e.starts_with("https://") || !e.contains("://")
                }) && self.emulator.is_none();
                let name = named.unwrap_or_else(|| "a caller-supplied channel".to_owned());
                (name, channel, true, !tls)
            }
            None => {
                let (uri, channel, emulated, proxy) = self.channel(&parent)?;
                let plaintext = uri.starts_with("http://");
                if let (true, Some(proxy)) = (plaintext, &proxy) {
                    let anonymous = match &self.credentials {
                        Some(c) => c.is_anonymous(),
                        None => emulated,
                    };
                    if !anonymous {
                        return Err(Error::config(format!(
                            "refusing to send credentials in plaintext to {uri} through the \
                             proxy at {proxy}; use an https endpoint or .no_proxy(..)"
                        )));
                    }
                }
                (uri, channel, emulated, plaintext)
            }
        };
        let credentials = match (&self.credentials, emulated) {
            (Some(c), _) => c.clone(),
            (None, true) => Credentials::anonymous(),
            (None, false) => Credentials::application_default(),
        };
        // Credentials in plaintext: loopback only, unless explicitly allowed.
        // The host judged is the one dialled (userinfo was refused).
        if plaintext && !credentials.is_anonymous() && !self.allow_plaintext {
            let loopback = uri
                .strip_prefix("http://")
                .and_then(|a| authority(a, "endpoint").ok())
                .is_some_and(|a| is_loopback(a.host()));
            if !loopback {
                return Err(Error::config(format!(
                    "refusing to send credentials in plaintext to {uri}; use a loopback emulator, \
                     an https endpoint, or call .allow_plaintext(true)"
                )));
            }
        }

        let quota_project = self
            .quota_project
            .clone()
            .or_else(|| self.env(ENV_QUOTA_PROJECT));
        let user_project = quota_project
            .map(|p| {
                HeaderValue::try_from(p.as_str()).map_err(|_| {
                    Error::validation(
                        "quota_project",
                        format!("{p:?} is not a valid header value"),
                    )
                })
            })
            .transpose()?;
        let api_client = HeaderValue::try_from(api_client_header())
            .map_err(|e| Error::config(format!("x-goog-api-client: {e}")))?;
        let tokens = Arc::new(TokenCache::new(credentials));
        let layer = HeaderLayer::new(Shared {
            tokens: tokens.clone(),
            api_client,
            user_project,
        });
        let service = tower::ServiceBuilder::new().layer(layer).service(channel);
        Ok(Client {
            inner: Arc::new(Inner::new(
                parent,
                uri,
                service,
                self.retry.clone().unwrap_or_default(),
                tokens,
            )),
        })
    }

    /// The endpoint URI, a lazy channel to it, whether it is an emulator,
    /// and the proxy it goes through (`host:port`).
    fn channel(&self, parent: &LocationName) -> Result<(String, Channel, bool, Option<String>)> {
        let emulator = match (&self.endpoint, &self.emulator) {
            (_, Some(e)) => Some(e.clone()),
            (Some(_), None) => None,
            (None, None) => self.env(ENV_EMULATOR_HOST),
        };
        let (uri, tls_host) = match &emulator {
            Some(host) => (emulator_uri(host)?.0, None),
            None => {
                let ep = self
                    .endpoint
                    .clone()
                    .unwrap_or_else(|| endpoint_for_location(parent.location()));
                resolve_endpoint(&ep, self.allow_plaintext)?
            }
        };
        if tls_host.is_none() && emulator.is_none() {
            tracing::warn!(endpoint = %uri, "using plaintext to a non-emulator endpoint");
        }
        let connect_timeout = self.connect_timeout.unwrap_or(Duration::from_secs(20));
        let env = self.use_env.then(ProxyEnv::from_process);
        let dst: http::Uri = uri
            .parse()
            .map_err(|e| Error::config(format!("invalid endpoint {uri:?}: {e}")))?;
        let proxy = route(&self.proxy, env.as_ref(), &dst)?;
        let channel = lazy_channel(&uri, tls_host.as_deref(), connect_timeout, proxy.as_ref())?;
        let proxy = proxy.map(|p| p.shown().to_owned());
        Ok((uri, channel, emulator.is_some(), proxy))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_resolve_to_tls_unless_loopback() {
        assert_eq!(
            resolve_endpoint("us-central1-aiplatform.googleapis.com", false).unwrap(),
            (
                "https://us-central1-aiplatform.googleapis.com:443".into(),
                Some("us-central1-aiplatform.googleapis.com".into())
            )
        );
        assert_eq!(
            resolve_endpoint("http://127.0.0.1:8080", false).unwrap().1,
            None
        );
        assert!(resolve_endpoint("http://[::1]:8080", false).is_ok());
        assert!(resolve_endpoint("http://localhost:1", false).is_ok());
        assert!(matches!(
            resolve_endpoint("http://10.0.0.5:8080", false),
            Err(Error::Config { .. })
        ));
        assert!(resolve_endpoint("http://10.0.0.5:8080", true).is_ok());
        assert!(resolve_endpoint("ftp://x", false).is_err());
    }

    /// The text before an `@` is userinfo, not the host: the connection
    /// would go to the host after it, so a token must not pass as loopback.
    #[tokio::test]
    async fn userinfo_never_passes_for_a_loopback_host() {
        let token = || Credentials::access_token("secret-token");
        for (endpoint, emulator) in [
            (Some("http://127.0.0.1:1@evil.example:80"), None),
            (Some("127.0.0.1:1@evil.example:443"), None),
            (None, Some("127.0.0.1:1@evil.example:80")),
            (None, Some("http://localhost@evil.example")),
        ] {
            let mut b = ClientBuilder::default()
                .ignore_env()
                .project("p")
                .credentials(token());
            if let Some(e) = endpoint {
                b = b.endpoint(e);
            }
            if let Some(e) = emulator {
                b = b.emulator_host(e);
            }
            let err = b.build().expect_err("refused");
            assert!(err.to_string().contains("userinfo"), "{err}");
            assert!(!err.to_string().contains("secret-token"));
        }
        // The dialled host is what is judged.
        assert!(resolve_endpoint("http://[::1]:80", false).is_ok());
        assert!(resolve_endpoint("http://evil.example:80", false).is_err());
        assert!(emulator_uri("127.0.0.1:8080").is_ok());
        // A non-loopback emulator with credentials is refused; without, fine.
        let err = ClientBuilder::default()
            .ignore_env()
            .project("p")
            .emulator_host("10.1.2.3:8080")
            .credentials(token())
            .build()
            .expect_err("refused");
        assert!(err.to_string().contains("http://10.1.2.3:8080"), "{err}");
        assert!(ClientBuilder::default()
            .ignore_env()
            .project("p")
            .emulator_host("10.1.2.3:8080")
            .build()
            .is_ok());
    }

    /// A caller's channel: credentials only when it is named https or
    /// plaintext is allowed, and errors name what was given.
    #[tokio::test]
    async fn a_callers_channel_gets_credentials_only_when_safe() {
        let channel =
            || tonic::transport::Endpoint::from_static("http://192.0.2.1:1").connect_lazy();
        let token = || Credentials::access_token("secret-token");
        let err = ClientBuilder::default()
            .ignore_env()
            .project("p")
            .credentials(token())
            .build_with_channel(channel())
            .expect_err("refused");
        let text = err.to_string();
        assert!(
            text.contains("caller-supplied channel") && !text.contains("in-memory"),
            "{text}"
        );
        let err = ClientBuilder::default()
            .ignore_env()
            .project("p")
            .endpoint("http://192.0.2.1:1")
            .credentials(token())
            .build_with_channel(channel())
            .expect_err("refused");
        assert!(err.to_string().contains("http://192.0.2.1:1"), "{err}");
        for ok in [
            ClientBuilder::default()
                .endpoint("https://proxy.example:443")
                .credentials(token()),
            ClientBuilder::default()
                .credentials(token())
                .allow_plaintext(true),
            ClientBuilder::default(),
        ] {
            assert!(ok
                .ignore_env()
                .project("p")
                .build_with_channel(channel())
                .is_ok());
        }
    }

    #[test]
    fn multi_region_endpoints() {
        assert_eq!(
            endpoint_for_location("us"),
            "aiplatform.us.rep.googleapis.com"
        );
        assert_eq!(
            endpoint_for_location("asia-northeast1"),
            "asia-northeast1-aiplatform.googleapis.com"
        );
    }
}
