//! [`ClientBuilder`]: project, location, endpoint, credentials, transport.

use std::{net::IpAddr, sync::Arc, time::Duration};

use http::HeaderValue;
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};

use super::{
    auth::{Credentials, TokenCache},
    layer::{api_client_header, HeaderLayer, Shared},
    Client, Inner,
};
use crate::{
    error::{Error, Result},
    names::LocationName,
    retry::RetryPolicy,
};

/// `GOOGLE_CLOUD_PROJECT`: the project when none is given.
pub const ENV_PROJECT: &str = "GOOGLE_CLOUD_PROJECT";
/// `GOOGLE_CLOUD_LOCATION`: the location when none is given.
pub const ENV_LOCATION: &str = "GOOGLE_CLOUD_LOCATION";
/// `GOOGLE_CLOUD_QUOTA_PROJECT`: the quota project (`x-goog-user-project`).
pub const ENV_QUOTA_PROJECT: &str = "GOOGLE_CLOUD_QUOTA_PROJECT";
/// `VERTEX_AI_EMULATOR_HOST=host:port`: talk plaintext to an emulator, no credentials.
pub const ENV_EMULATOR_HOST: &str = "VERTEX_AI_EMULATOR_HOST";
/// The location used when none is given and `GOOGLE_CLOUD_LOCATION` is unset.
pub const DEFAULT_LOCATION: &str = "us-central1";

/// The Vertex AI host serving `location` (port 443, TLS).
///
/// ```
/// use vertex_batch::endpoint_for_location;
/// assert_eq!(endpoint_for_location("us-central1"), "us-central1-aiplatform.googleapis.com");
/// assert_eq!(endpoint_for_location("global"), "aiplatform.googleapis.com");
/// assert_eq!(endpoint_for_location("eu"), "aiplatform.eu.rep.googleapis.com");
/// ```
pub fn endpoint_for_location(location: &str) -> String {
    match location {
        "global" => "aiplatform.googleapis.com".to_owned(),
        "us" | "eu" => format!("aiplatform.{location}.rep.googleapis.com"),
        region => format!("{region}-aiplatform.googleapis.com"),
    }
}

/// Builds a [`Client`].
///
/// Settings not given come from the environment: `GOOGLE_CLOUD_PROJECT`,
/// `GOOGLE_CLOUD_LOCATION` (default `us-central1`),
/// `GOOGLE_CLOUD_QUOTA_PROJECT`, and `VERTEX_AI_EMULATOR_HOST`, which switches
/// to plaintext to that `host:port` with no credentials. Explicit settings
/// always win over the environment.
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
}

impl ClientBuilder {
    pub(crate) fn new() -> Self {
        ClientBuilder {
            use_env: true,
            ..Default::default()
        }
    }

    /// The project id.
    pub fn project(mut self, project: impl Into<String>) -> Self {
        self.project = Some(project.into());
        self
    }

    /// The location: a region (`us-central1`), `global`, `us` or `eu`.
    pub fn location(mut self, location: impl Into<String>) -> Self {
        self.location = Some(location.into());
        self
    }

    /// Overrides the endpoint: `host[:port]` or `https://host[:port]` for TLS,
    /// `http://host:port` for plaintext (loopback only, unless
    /// [`ClientBuilder::allow_plaintext`] is set).
    pub fn endpoint(mut self, endpoint: impl Into<String>) -> Self {
        self.endpoint = Some(endpoint.into());
        self
    }

    /// Talks plaintext to an emulator at `host:port`, with no credentials
    /// (unless [`ClientBuilder::credentials`] is also given). The same as
    /// setting `VERTEX_AI_EMULATOR_HOST`.
    pub fn emulator_host(mut self, host_port: impl Into<String>) -> Self {
        self.emulator = Some(host_port.into());
        self
    }

    /// The credentials (default: Application Default Credentials).
    pub fn credentials(mut self, credentials: Credentials) -> Self {
        self.credentials = Some(credentials);
        self
    }

    /// The quota project sent as `x-goog-user-project`.
    pub fn quota_project(mut self, project: impl Into<String>) -> Self {
        self.quota_project = Some(project.into());
        self
    }

    /// Allows a plaintext `http://` endpoint that is not on loopback. Tokens
    /// would cross the network unencrypted: use only on a trusted network.
    pub fn allow_plaintext(mut self, allow: bool) -> Self {
        self.allow_plaintext = allow;
        self
    }

    /// Ignores the environment variables (for tests and embedded use).
    pub fn ignore_env(mut self) -> Self {
        self.use_env = false;
        self
    }

    /// The retry policy for idempotent calls (default: [`RetryPolicy::default`]).
    pub fn retry_policy(mut self, policy: RetryPolicy) -> Self {
        self.retry = Some(policy);
        self
    }

    /// How long to wait for a connection (default 20 s).
    pub fn connect_timeout(mut self, d: Duration) -> Self {
        self.connect_timeout = Some(d);
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
    pub fn build(self) -> Result<Client> {
        self.build_inner(None)
    }

    /// Builds the client over a channel the caller made (a custom
    /// connector, a proxy, an in-memory transport). Endpoint settings are
    /// ignored; credentials default to none, as for an emulator.
    pub fn build_with_channel(self, channel: Channel) -> Result<Client> {
        self.build_inner(Some(channel))
    }

    fn build_inner(self, given: Option<Channel>) -> Result<Client> {
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(Error::Config(
                "Client::build must be called inside a Tokio runtime".into(),
            ));
        }
        let project = self
            .project
            .clone()
            .or_else(|| self.env(ENV_PROJECT))
            .ok_or_else(|| {
                Error::Config(format!(
                    "no project: call .project(\"my-project\") or set {ENV_PROJECT}"
                ))
            })?;
        let location = self
            .location
            .clone()
            .or_else(|| self.env(ENV_LOCATION))
            .unwrap_or_else(|| DEFAULT_LOCATION.to_owned());
        let parent = LocationName::new(project, location)?;

        let (uri, channel, emulated) = match given {
            Some(channel) => ("in-memory".to_owned(), channel, true),
            None => {
                let (uri, channel, emulated) = self.channel(&parent)?;
                (uri, channel, emulated)
            }
        };
        let credentials = match (&self.credentials, emulated) {
            (Some(c), _) => c.clone(),
            (None, true) => Credentials::anonymous(),
            (None, false) => Credentials::application_default(),
        };
        // Credentials given for an emulator travel in plaintext: loopback only.
        if emulated && !credentials.is_anonymous() && !self.allow_plaintext {
            let authority = uri.strip_prefix("http://").unwrap_or("");
            if !authority.is_empty() && !is_loopback(host_of(authority)) {
                return Err(Error::Config(format!(
                    "refusing to send credentials in plaintext to the emulator at {authority}; \
                     use a loopback emulator or call .allow_plaintext(true)"
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
            .map_err(|e| Error::Config(format!("x-goog-api-client: {e}")))?;
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

    /// The endpoint URI, a lazy channel to it, and whether it is an emulator.
    fn channel(&self, parent: &LocationName) -> Result<(String, Channel, bool)> {
        let emulator = match (&self.endpoint, &self.emulator) {
            (_, Some(e)) => Some(e.clone()),
            (Some(_), None) => None,
            (None, None) => self.env(ENV_EMULATOR_HOST),
        };
        let (uri, tls_host) = match &emulator {
            Some(host) => (emulator_uri(host)?, None),
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
        let mut endpoint = Endpoint::from_shared(uri.clone())
            .map_err(|e| Error::Config(format!("invalid endpoint {uri:?}: {e}")))?
            .connect_timeout(self.connect_timeout.unwrap_or(Duration::from_secs(20)))
            .tcp_nodelay(true);
        if let Some(host) = &tls_host {
            let tls = ClientTlsConfig::new()
                .with_enabled_roots()
                .domain_name(host.clone());
            endpoint = endpoint
                .tls_config(tls)
                .map_err(|e| Error::Config(format!("TLS setup for {host}: {e}")))?;
        }
        Ok((uri, endpoint.connect_lazy(), emulator.is_some()))
    }
}

/// `host:port` of an emulator to a plaintext URI.
fn emulator_uri(host: &str) -> Result<String> {
    let host = host.trim();
    let host = host.strip_prefix("http://").unwrap_or(host);
    if host.is_empty() || host.contains('/') || host.starts_with("https://") {
        return Err(Error::Config(format!(
            "{ENV_EMULATOR_HOST} must be host:port, got {host:?}"
        )));
    }
    Ok(format!("http://{host}"))
}

/// Turns an endpoint setting into a URI and, for TLS, the host name to verify.
fn resolve_endpoint(ep: &str, allow_plaintext: bool) -> Result<(String, Option<String>)> {
    let ep = ep.trim().trim_end_matches('/');
    if let Some(rest) = ep.strip_prefix("http://") {
        let host = host_of(rest);
        if !(allow_plaintext || is_loopback(host)) {
            return Err(Error::Config(format!(
                "refusing plaintext to {rest}: plaintext is only used for loopback and emulators; \
                 use https://, set {ENV_EMULATOR_HOST} for an emulator, or call .allow_plaintext(true)"
            )));
        }
        return Ok((format!("http://{rest}"), None));
    }
    let rest = ep.strip_prefix("https://").unwrap_or(ep);
    if rest.is_empty() || rest.contains("://") || rest.contains('/') {
        return Err(Error::Config(format!(
            "invalid endpoint {ep:?}: expected host[:port] or https://host[:port]"
        )));
    }
    let host = host_of(rest).to_owned();
    let uri = if rest.contains(':') && !rest.ends_with(']') {
        format!("https://{rest}")
    } else {
        format!("https://{rest}:443")
    };
    Ok((uri, Some(host)))
}

fn host_of(authority: &str) -> &str {
    if let Some(rest) = authority.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    authority.split(':').next().unwrap_or(authority)
}

fn is_loopback(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<IpAddr>()
            .map(|ip| ip.is_loopback())
            .unwrap_or(false)
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
            Err(Error::Config(_))
        ));
        assert!(resolve_endpoint("http://10.0.0.5:8080", true).is_ok());
        assert!(resolve_endpoint("ftp://x", false).is_err());
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
