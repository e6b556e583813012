//! Where the client connects: the regional endpoint, an emulator's
//! `host:port`, the rules for plaintext, and the lazy channel.

use std::time::Duration;

use http::uri::Authority;
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};

use super::proxy::{Dial, Route, TCP_KEEPALIVE};
use crate::error::{Error, Result};

/// `GOOGLE_CLOUD_PROJECT`: the project when none is given.
///
/// ```no_run
/// # async fn demo() -> vertex_batch::Result<()> {
/// use vertex_batch::transport::{ENV_EMULATOR_HOST, ENV_LOCATION, ENV_PROJECT};
/// // Equivalent to Client::builder().project("my-project").location("europe-west4").
/// std::env::set_var(ENV_PROJECT, "my-project");
/// std::env::set_var(ENV_LOCATION, "europe-west4");
/// std::env::remove_var(ENV_EMULATOR_HOST);
/// let client = vertex_batch::Client::builder().build()?;
/// assert_eq!(client.parent().to_string(), "projects/my-project/locations/europe-west4");
/// # Ok(()) }
/// ```
pub const ENV_PROJECT: &str = "GOOGLE_CLOUD_PROJECT";
/// `GOOGLE_CLOUD_LOCATION`: the location when none is given (see
/// [`ENV_PROJECT`] for an example).
///
/// ```
/// use vertex_batch::transport::ENV_LOCATION;
/// let location = std::env::var(ENV_LOCATION).unwrap_or_else(|_| "us-central1".into());
/// assert!(!location.is_empty());
/// ```
pub const ENV_LOCATION: &str = "GOOGLE_CLOUD_LOCATION";
/// `GOOGLE_CLOUD_QUOTA_PROJECT`: the quota project (`x-goog-user-project`;
/// see [`ENV_PROJECT`] for an example).
///
/// ```
/// use vertex_batch::transport::ENV_QUOTA_PROJECT;
/// assert_eq!(ENV_QUOTA_PROJECT, "GOOGLE_CLOUD_QUOTA_PROJECT");
/// ```
pub const ENV_QUOTA_PROJECT: &str = "GOOGLE_CLOUD_QUOTA_PROJECT";
/// `VERTEX_AI_EMULATOR_HOST=host:port`: talk plaintext to an emulator, no
/// credentials (see [`ENV_PROJECT`] for an example).
///
/// ```
/// use vertex_batch::transport::ENV_EMULATOR_HOST;
/// assert_eq!(ENV_EMULATOR_HOST, "VERTEX_AI_EMULATOR_HOST");
/// let _emulator: Option<String> = std::env::var(ENV_EMULATOR_HOST).ok(); // e.g. "localhost:8080"
/// ```
pub const ENV_EMULATOR_HOST: &str = "VERTEX_AI_EMULATOR_HOST";
/// The location used when none is given and `GOOGLE_CLOUD_LOCATION` is unset.
///
/// ```
/// use vertex_batch::transport::{endpoint_for_location, DEFAULT_LOCATION};
/// assert_eq!(endpoint_for_location(DEFAULT_LOCATION), "us-central1-aiplatform.googleapis.com");
/// ```
pub const DEFAULT_LOCATION: &str = "us-central1";

/// The Vertex AI host serving `location` (port 443, TLS).
///
/// ```
/// use vertex_batch::transport::endpoint_for_location;
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

/// `host:port` of an emulator to a plaintext URI.
/// Parses `host[:port]` into the authority that will be dialled. Userinfo
/// (`user:pass@host`) is refused outright: it is never sent, and text before
/// an `@` must not be mistaken for the host (`127.0.0.1:1@evil:80` dials
/// `evil`).
pub(crate) fn authority(text: &str, what: &str) -> Result<Authority> {
    if text.contains('@') {
        return Err(Error::config(format!(
            "{what} {:?} has userinfo (an `@`); give host[:port] only",
            crate::uri::without_userinfo(text)
        )));
    }
    let a: Authority = text
        .parse()
        .map_err(|e| Error::config(format!("{what} {text:?} is not host[:port]: {e}")))?;
    if a.host().is_empty() {
        return Err(Error::config(format!("{what} {text:?} has no host")));
    }
    Ok(a)
}

/// The emulator's URI (`http://host:port`) and its authority.
pub(crate) fn emulator_uri(host: &str) -> Result<(String, Authority)> {
    let host = host.trim();
    let bare = host.strip_prefix("http://").unwrap_or(host);
    let bare = bare.strip_suffix('/').unwrap_or(bare);
    if bare.is_empty() || bare.contains('/') || bare.contains("://") {
        return Err(Error::config(format!(
            "{ENV_EMULATOR_HOST} must be host:port, got {:?}",
            crate::uri::without_userinfo(host)
        )));
    }
    let a = authority(bare, ENV_EMULATOR_HOST)?;
    Ok((format!("http://{a}"), a))
}

/// Turns an endpoint setting into a URI and, for TLS, the host name to verify.
pub(crate) fn resolve_endpoint(
    ep: &str,
    allow_plaintext: bool,
) -> Result<(String, Option<String>)> {
    let ep = ep.trim().trim_end_matches('/');
    if let Some(rest) = ep.strip_prefix("http://") {
        if rest.is_empty() || rest.contains('/') {
            return Err(Error::config(format!(
                "invalid endpoint {ep:?}: expected http://host[:port]"
            )));
        }
        let a = authority(rest, "endpoint")?;
        if !(allow_plaintext || is_loopback(a.host())) {
            return Err(Error::config(format!(
                "refusing plaintext to {a}: plaintext is only used for loopback and emulators; \
                 use https://, set {ENV_EMULATOR_HOST} for an emulator, or call .allow_plaintext(true)"
            )));
        }
        return Ok((format!("http://{a}"), None));
    }
    let rest = ep.strip_prefix("https://").unwrap_or(ep);
    if rest.is_empty() || rest.contains("://") || rest.contains('/') {
        return Err(Error::config(format!(
            "invalid endpoint {ep:?}: expected host[:port] or https://host[:port]"
        )));
    }
    let a = authority(rest, "endpoint")?;
    let host = a
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let uri = match a.port_u16() {
        Some(_) => format!("https://{a}"),
        None => format!("https://{a}:443"),
    };
    Ok((uri, Some(host)))
}

pub(crate) use crate::uri::is_loopback;

/// Whether any TLS trust roots were compiled in (features
/// `tls-native-roots`, `tls-webpki-roots`).
pub(crate) const HAS_TLS_ROOTS: bool = cfg!(any(
    feature = "tls-native-roots",
    feature = "tls-webpki-roots"
));

/// The error for TLS without trust roots.
pub(crate) fn no_tls_roots(host: &str) -> Error {
    Error::config(format!(
        "TLS to {host} needs trust roots: build vertex-batch with the `tls-native-roots` \
         (default) or `tls-webpki-roots` feature"
    ))
}

/// The trust roots the features select, for rustls clients (Cloud Storage).
/// Empty when none is compiled in.
pub(crate) fn tls_roots() -> rustls::RootCertStore {
    #[allow(unused_mut)]
    let mut roots = rustls::RootCertStore::empty();
    #[cfg(feature = "tls-webpki-roots")]
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    #[cfg(feature = "tls-native-roots")]
    for cert in rustls_native_certs::load_native_certs().certs {
        // A system certificate rustls cannot use is skipped, as browsers do.
        let _ = roots.add(cert);
    }
    roots
}

/// A channel to `uri` that connects on first use; TLS (verifying
/// `tls_host`) when a host is given, plaintext otherwise; through `proxy`'s
/// `CONNECT` tunnel when one is given (TLS runs inside the tunnel, end to
/// end). Every connection has TCP keepalive.
pub(crate) fn lazy_channel(
    uri: &str,
    tls_host: Option<&str>,
    connect_timeout: Duration,
    proxy: Option<&Route>,
) -> Result<Channel> {
    let mut endpoint = Endpoint::from_shared(uri.to_owned())
        .map_err(|e| Error::config(format!("invalid endpoint {uri:?}: {e}")))?
        .connect_timeout(connect_timeout)
        .tcp_nodelay(true)
        .tcp_keepalive(Some(TCP_KEEPALIVE));
    if let Some(host) = tls_host {
        if !HAS_TLS_ROOTS {
            return Err(no_tls_roots(host));
        }
        let tls = ClientTlsConfig::new()
            .with_enabled_roots()
            .domain_name(host.to_owned());
        endpoint = endpoint
            .tls_config(tls)
            .map_err(|e| Error::config(format!("TLS setup for {host}: {e}")))?;
    }
    Ok(match proxy {
        // tonic layers its TLS over the connector's stream, so the proxy
        // sees only encrypted bytes.
        Some(route) => {
            endpoint.connect_with_connector_lazy(Dial::new(Some(route), connect_timeout))
        }
        None => endpoint.connect_lazy(),
    })
}
