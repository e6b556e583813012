//! HTTP CONNECT proxies, for the gRPC channel and Cloud Storage alike:
//! which proxy a destination goes through, and the connector that dials
//! through it.
//!
//! The rules (those of curl and Google's client libraries):
//!
//! * `HTTPS_PROXY` (or `https_proxy`) is used for TLS destinations — Vertex
//!   AI, Cloud Storage — and never for a loopback host (`localhost`,
//!   `127.0.0.0/8`, `::1`). Plaintext destinations (emulators) go direct:
//!   `HTTP_PROXY` is not read.
//! * A proxy given to a builder (`.proxy(url)`) is used for every
//!   destination of that client, TLS or plaintext, loopback included (an
//!   emulator behind a proxy, or a test).
//! * `NO_PROXY` (or `no_proxy`), or the builder's `.no_proxy(list)` in its
//!   place, names hosts that always go direct: comma-separated domains
//!   (`example.com` matches it and its subdomains, `.example.com` likewise),
//!   IP addresses, CIDR ranges (`10.0.0.0/8`), or `*` for everything.
//! * The proxy URL is `http://[user:password@]host[:port]` (port 80 when
//!   none is given; `host:port` alone means `http://`). The connection to
//!   the destination is a `CONNECT` tunnel: for TLS destinations the proxy
//!   sees only encrypted bytes, so a bearer token never crosses it in the
//!   clear. A user and password become a `Proxy-Authorization: Basic`
//!   header on the `CONNECT` and appear in no `Debug` output, log or error.
//!   Plaintext through a proxy carrying credentials is refused.

use std::{fmt, future::Future, pin::Pin, sync::Arc, time::Duration};

use http::{HeaderValue, Uri};
use hyper_util::{
    client::{
        legacy::connect::{proxy::Tunnel, HttpConnector},
        proxy::matcher::Matcher,
    },
    rt::TokioIo,
};
use tokio::net::TcpStream;

use crate::{
    error::{BoxError, Error, Result},
    uri::is_loopback,
};

/// The environment variables naming the proxy for TLS destinations, the
/// first set (and not blank) wins.
pub(crate) const ENV_HTTPS_PROXY: [&str; 2] = ["HTTPS_PROXY", "https_proxy"];
/// The environment variables naming hosts that bypass the proxy.
pub(crate) const ENV_NO_PROXY: [&str; 2] = ["NO_PROXY", "no_proxy"];

/// TCP keepalive on every connection the crate dials: a peer that vanished
/// (a NAT that dropped the mapping, a host gone) is noticed instead of a
/// connection waiting forever.
pub(crate) const TCP_KEEPALIVE: Duration = Duration::from_secs(60);

/// A proxy URL as given, which may carry a password: its `Debug` shows it
/// without the userinfo.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct ProxyUrl(String);

impl fmt::Debug for ProxyUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", crate::uri::without_userinfo(&self.0))
    }
}

/// A builder's proxy settings: an explicit proxy and no-proxy list, and
/// whether the environment is read for what they leave unset.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct ProxySettings {
    pub(crate) proxy: Option<ProxyUrl>,
    pub(crate) no_proxy: Option<String>,
}

impl ProxySettings {
    /// Sets the explicit proxy.
    pub(crate) fn set_proxy(&mut self, url: impl Into<String>) {
        self.proxy = Some(ProxyUrl(url.into()));
    }
}

/// What the environment says about proxies (see the module docs).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct ProxyEnv {
    /// `HTTPS_PROXY` / `https_proxy`.
    pub(crate) https: Option<ProxyUrl>,
    /// `NO_PROXY` / `no_proxy`.
    pub(crate) no_proxy: Option<String>,
}

impl ProxyEnv {
    /// Reads the variables through `lookup` (`std::env::var` in use; a map
    /// in tests, so no test changes the process's environment).
    pub(crate) fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> ProxyEnv {
        let first = |names: &[&str]| {
            names
                .iter()
                .filter_map(|n| lookup(n))
                .find(|v| !v.trim().is_empty())
        };
        ProxyEnv {
            https: first(&ENV_HTTPS_PROXY).map(ProxyUrl),
            no_proxy: first(&ENV_NO_PROXY),
        }
    }

    /// The process's environment.
    pub(crate) fn from_process() -> ProxyEnv {
        ProxyEnv::from_lookup(|name| std::env::var(name).ok())
    }
}

/// The proxy one destination goes through.
#[derive(Clone)]
pub(crate) struct Route {
    /// `http://host:port/`, without userinfo.
    uri: Uri,
    /// `Basic …` from the URL's user and password (marked sensitive).
    auth: Option<HeaderValue>,
    /// `host:port`, for messages.
    shown: Arc<str>,
}

impl fmt::Debug for Route {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Route")
            .field("proxy", &self.shown)
            .field("auth", &self.auth.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

impl Route {
    /// The proxy's `host:port`.
    pub(crate) fn shown(&self) -> &str {
        &self.shown
    }
}

/// The proxy for `dst` (`https://host:port` or `http://host:port`), or
/// `None` to go direct, by the rules in the module docs. `env` is `None`
/// when the builder ignores the environment.
pub(crate) fn route(
    settings: &ProxySettings,
    env: Option<&ProxyEnv>,
    dst: &Uri,
) -> Result<Option<Route>> {
    let Some(host) = dst.host() else {
        return Ok(None);
    };
    let tls = dst.scheme_str() == Some("https");
    let url = match &settings.proxy {
        Some(p) => p,
        None => match env.and_then(|e| e.https.as_ref()) {
            Some(p) if tls && !is_loopback(host) => p,
            _ => return Ok(None),
        },
    };
    let url = proxy_url(&url.0)?;
    let no_proxy = settings
        .no_proxy
        .as_deref()
        .or_else(|| env.and_then(|e| e.no_proxy.as_deref()))
        .unwrap_or("");
    // hyper-util's matcher applies curl's NO_PROXY rules and turns the
    // URL's userinfo into a Basic header.
    let matcher = Matcher::builder().all(url.as_str()).no(no_proxy).build();
    let Some(intercept) = matcher.intercept(dst) else {
        return Ok(None);
    };
    let uri = intercept.uri().clone();
    let shown = match (uri.host(), uri.port_u16()) {
        (Some(h), Some(p)) => format!("{h}:{p}"),
        (Some(h), None) => format!("{h}:80"),
        (None, _) => return Err(bad_proxy(&url, "it has no host")),
    };
    Ok(Some(Route {
        uri,
        auth: intercept.basic_auth().cloned(),
        shown: shown.into(),
    }))
}

/// `text` checked and normalised to `http://[userinfo@]host[:port]`.
fn proxy_url(text: &str) -> Result<String> {
    let text = text.trim().trim_end_matches('/');
    let url = match text.contains("://") {
        true => text.to_owned(),
        false => format!("http://{text}"),
    };
    let uri: Uri = url
        .parse()
        .map_err(|_| bad_proxy(text, "it is not a URL"))?;
    match uri.scheme_str() {
        Some("http") => {}
        Some("https") => {
            return Err(bad_proxy(
                text,
                "TLS to the proxy is not supported; give it as http:// (the tunnel to \
                 the service is TLS all the same)",
            ))
        }
        _ => return Err(bad_proxy(text, "only http:// proxies are supported")),
    }
    let host_empty = uri.host().is_none_or(str::is_empty);
    if host_empty || uri.path() != "/" || uri.query().is_some() {
        return Err(bad_proxy(
            text,
            "expected http://[user:password@]host[:port]",
        ));
    }
    Ok(url)
}

fn bad_proxy(text: &str, why: &str) -> Error {
    Error::config(format!(
        "invalid proxy {:?}: {why}",
        crate::uri::without_userinfo(text)
    ))
}

/// A TCP connector with the crate's settings: no Nagle delay, TCP
/// keepalive, a connect timeout.
pub(crate) fn tcp_connector(connect_timeout: Duration) -> HttpConnector {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_keepalive(Some(TCP_KEEPALIVE));
    http.set_connect_timeout(Some(connect_timeout));
    http
}

/// Dials a destination directly, or through a proxy's `CONNECT` tunnel
/// (TLS, when the destination uses it, is layered on top by the caller).
#[derive(Clone)]
pub(crate) enum Dial {
    Direct(HttpConnector),
    Tunnel(Tunnel<HttpConnector>, Arc<str>),
}

impl Dial {
    /// A dialer through `route`, or direct when it is `None`.
    pub(crate) fn new(route: Option<&Route>, connect_timeout: Duration) -> Dial {
        let tcp = tcp_connector(connect_timeout);
        match route {
            None => Dial::Direct(tcp),
            Some(r) => {
                let mut tunnel = Tunnel::new(r.uri.clone(), tcp);
                if let Some(auth) = &r.auth {
                    tunnel = tunnel.with_auth(auth.clone());
                }
                Dial::Tunnel(tunnel, r.shown.clone())
            }
        }
    }
}

/// A failure to open the tunnel, naming the proxy (never its credentials).
#[derive(Debug)]
pub(crate) struct ProxyError {
    proxy: Arc<str>,
    source: BoxError,
}

impl fmt::Display for ProxyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "through the proxy at {}", self.proxy)
    }
}

impl std::error::Error for ProxyError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.source)
    }
}

type Dialing =
    Pin<Box<dyn Future<Output = std::result::Result<TokioIo<TcpStream>, BoxError>> + Send>>;

impl tower::Service<Uri> for Dial {
    type Response = TokioIo<TcpStream>;
    type Error = BoxError;
    type Future = Dialing;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::result::Result<(), BoxError>> {
        match self {
            Dial::Direct(c) => c.poll_ready(cx).map_err(Into::into),
            Dial::Tunnel(t, _) => t.poll_ready(cx).map_err(Into::into),
        }
    }

    fn call(&mut self, dst: Uri) -> Dialing {
        match self {
            Dial::Direct(c) => {
                let fut = c.call(dst);
                Box::pin(async move { fut.await.map_err(Into::into) })
            }
            Dial::Tunnel(t, proxy) => {
                // The tunnel's target needs its port (the tunnel would
                // assume 443 for any destination without one).
                let fut = t.call(with_port(dst));
                let proxy = proxy.clone();
                Box::pin(async move {
                    fut.await.map_err(|e| {
                        Box::new(ProxyError {
                            proxy,
                            source: e.into(),
                        }) as BoxError
                    })
                })
            }
        }
    }
}

/// `dst` with its scheme's default port when it names none.
fn with_port(dst: Uri) -> Uri {
    let (Some(host), None) = (dst.host(), dst.port_u16()) else {
        return dst;
    };
    let port = match dst.scheme_str() {
        Some("http") => 80,
        _ => 443,
    };
    let Ok(authority) = format!("{host}:{port}").parse() else {
        return dst;
    };
    let mut parts = dst.clone().into_parts();
    parts.authority = Some(authority);
    Uri::from_parts(parts).unwrap_or(dst)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(vars: &[(&str, &str)]) -> ProxyEnv {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        ProxyEnv::from_lookup(|name| map.get(name).cloned())
    }

    fn dst(s: &str) -> Uri {
        s.parse().unwrap()
    }

    fn shown(settings: &ProxySettings, env: Option<&ProxyEnv>, to: &str) -> Option<String> {
        route(settings, env, &dst(to))
            .unwrap()
            .map(|r| r.shown().to_owned())
    }

    #[test]
    fn a_tunnel_target_always_has_its_port() {
        assert_eq!(
            with_port(dst("http://localhost")),
            dst("http://localhost:80")
        );
        assert_eq!(
            with_port(dst("https://h.example")),
            dst("https://h.example:443")
        );
        assert_eq!(with_port(dst("http://[::1]")).port_u16(), Some(80));
        assert_eq!(with_port(dst("http://h:8080/x")), dst("http://h:8080/x"));
    }

    #[test]
    fn the_environment_is_read_uppercase_first_and_blank_values_are_unset() {
        let e = env(&[
            ("HTTPS_PROXY", "http://upper:3128"),
            ("https_proxy", "http://lower:3128"),
            ("NO_PROXY", " "),
            ("no_proxy", "internal.example"),
        ]);
        assert_eq!(e.https, Some(ProxyUrl("http://upper:3128".into())));
        assert_eq!(e.no_proxy.as_deref(), Some("internal.example"));
        let e = env(&[("https_proxy", "lower:3128"), ("HTTP_PROXY", "http://x:1")]);
        assert_eq!(e.https, Some(ProxyUrl("lower:3128".into())));
        assert_eq!(env(&[("HTTP_PROXY", "http://x:1")]), ProxyEnv::default());
    }

    #[test]
    fn https_proxy_serves_tls_destinations_off_loopback_only() {
        let none = ProxySettings::default();
        let e = env(&[("HTTPS_PROXY", "proxy.corp:3128")]);
        let tls = "https://us-central1-aiplatform.googleapis.com:443";
        assert_eq!(
            shown(&none, Some(&e), tls).as_deref(),
            Some("proxy.corp:3128")
        );
        // Plaintext (an emulator) and loopback go direct.
        assert_eq!(shown(&none, Some(&e), "http://10.0.0.5:8080"), None);
        for lo in [
            "https://127.0.0.1:4443",
            "https://localhost:443",
            "https://[::1]:443",
        ] {
            assert_eq!(shown(&none, Some(&e), lo), None, "{lo}");
        }
        // Ignoring the environment: direct.
        assert_eq!(shown(&none, None, tls), None);
        // No port: 80.
        let e = env(&[("HTTPS_PROXY", "http://proxy.corp")]);
        assert_eq!(
            shown(&none, Some(&e), tls).as_deref(),
            Some("proxy.corp:80")
        );
    }

    #[test]
    fn no_proxy_follows_curls_rules() {
        let none = ProxySettings::default();
        let e = env(&[
            ("HTTPS_PROXY", "http://proxy:3128"),
            ("NO_PROXY", "googleapis.com, 10.0.0.0/8,192.0.2.7"),
        ]);
        for direct in [
            "https://googleapis.com",
            "https://storage.googleapis.com",
            "https://10.1.2.3:443",
            "https://192.0.2.7",
        ] {
            assert_eq!(shown(&none, Some(&e), direct), None, "{direct}");
        }
        for proxied in ["https://notgoogleapis.com", "https://192.0.2.8"] {
            assert!(shown(&none, Some(&e), proxied).is_some(), "{proxied}");
        }
        let star = env(&[("HTTPS_PROXY", "http://proxy:3128"), ("no_proxy", "*")]);
        assert_eq!(
            shown(&none, Some(&star), "https://storage.googleapis.com"),
            None
        );
    }

    #[test]
    fn an_explicit_proxy_serves_every_destination_but_its_no_proxy_list() {
        let mut s = ProxySettings::default();
        s.set_proxy("http://127.0.0.1:9");
        for to in [
            "http://127.0.0.1:8080",
            "https://storage.googleapis.com",
            "http://10.0.0.5:1",
        ] {
            assert_eq!(shown(&s, None, to).as_deref(), Some("127.0.0.1:9"), "{to}");
        }
        // The environment's NO_PROXY applies to it, unless the builder's
        // own list replaces it.
        let e = env(&[("NO_PROXY", "127.0.0.1")]);
        assert_eq!(shown(&s, Some(&e), "http://127.0.0.1:8080"), None);
        s.no_proxy = Some("example.com".into());
        assert!(shown(&s, Some(&e), "http://127.0.0.1:8080").is_some());
        assert_eq!(shown(&s, Some(&e), "https://api.example.com"), None);
    }

    #[test]
    fn proxy_credentials_become_a_basic_header_and_stay_out_of_debug_and_errors() {
        let mut s = ProxySettings::default();
        s.set_proxy("http://alice:s%40cret@proxy.corp:3128");
        let r = route(&s, None, &dst("https://storage.googleapis.com"))
            .unwrap()
            .unwrap();
        // base64("alice:s@cret")
        assert_eq!(r.auth.as_ref().unwrap(), "Basic YWxpY2U6c0BjcmV0");
        assert!(r.auth.as_ref().unwrap().is_sensitive());
        for text in [format!("{r:?}"), format!("{s:?}")] {
            assert!(!text.contains("cret") && !text.contains("YWxp"), "{text}");
        }
        for bad in [
            "https://alice:s%40cret@proxy.corp:3128",
            "socks5://alice:s%40cret@proxy.corp:1080",
            "http://alice:s%40cret@proxy.corp:3128/path",
            "http://alice:s%40cret@",
        ] {
            let mut s = ProxySettings::default();
            s.set_proxy(bad);
            let err = route(&s, None, &dst("https://h")).unwrap_err();
            assert!(matches!(err, Error::Config { .. }), "{bad}: {err}");
            assert!(!err.to_string().contains("cret"), "{err}");
        }
    }
}
