//! Google's headers. The one tower layer here adds those every RPC shares,
//! `authorization`, `x-goog-api-client` and `x-goog-user-project`; the
//! per-call `x-goog-request-params` comes from [`routing_header`], which
//! `Client::call` sets, so RPC methods never touch headers themselves.

use std::{
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use futures::{
    future::{Either, Map},
    FutureExt,
};
use http::{HeaderName, HeaderValue};
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use tonic::metadata::{Ascii, MetadataValue};
use tower::{Layer, Service};

use super::auth::TokenCache;
use crate::error::{AuthFailure, BoxError, Error, NotGrpcResponse};

/// `x-goog-request-params`: the routing parameter of every call.
///
/// ```
/// use vertex_batch::transport::{api_client_header, API_CLIENT, REQUEST_PARAMS, USER_PROJECT};
/// assert_eq!(REQUEST_PARAMS.as_str(), "x-goog-request-params");
/// assert_eq!(API_CLIENT.as_str(), "x-goog-api-client");
/// assert_eq!(USER_PROJECT.as_str(), "x-goog-user-project");
/// assert!(api_client_header().contains("gl-rust/"));
/// ```
pub const REQUEST_PARAMS: HeaderName = HeaderName::from_static(REQUEST_PARAMS_STR);
pub(crate) const REQUEST_PARAMS_STR: &str = "x-goog-request-params";
/// `x-goog-api-client`: what client made the call (see [`REQUEST_PARAMS`]
/// for an example).
///
/// ```
/// use vertex_batch::transport::{api_client_header, API_CLIENT};
/// let mut headers = http::HeaderMap::new();
/// headers.insert(API_CLIENT, api_client_header().parse().unwrap());
/// assert!(headers["x-goog-api-client"].to_str().unwrap().contains("vertex-batch/"));
/// ```
pub const API_CLIENT: HeaderName = HeaderName::from_static("x-goog-api-client");
/// `x-goog-user-project`: the quota project, when one is set (see
/// [`REQUEST_PARAMS`] for an example).
///
/// ```
/// use vertex_batch::transport::USER_PROJECT;
/// assert_eq!(USER_PROJECT.as_str(), "x-goog-user-project");
/// ```
pub const USER_PROJECT: HeaderName = HeaderName::from_static("x-goog-user-project");

/// Characters left as they are in a routing value (RFC 3986 unreserved).
const ROUTING: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// The routing header of one call, `key=<percent-encoded value>` as the
/// Node client sends it (`parent=projects%2Fp%2Flocations%2Fus-central1`),
/// built with one allocation.
pub(crate) fn routing_header(key: &str, value: &str) -> Option<MetadataValue<Ascii>> {
    let encoded_len: usize = utf8_percent_encode(value, ROUTING).map(str::len).sum();
    let mut header = String::with_capacity(key.len() + 1 + encoded_len);
    header.push_str(key);
    header.push('=');
    header.extend(utf8_percent_encode(value, ROUTING));
    MetadataValue::try_from(header).ok()
}

/// `gl-rust/<rustc> grpc/<tonic> vertex-batch/<version>`.
///
/// ```
/// use vertex_batch::transport::api_client_header;
/// let header = api_client_header();
/// assert!(header.starts_with("gl-rust/"));
/// assert!(header.ends_with(&format!("vertex-batch/{}", env!("CARGO_PKG_VERSION"))));
/// ```
pub fn api_client_header() -> String {
    format!(
        "gl-rust/{} grpc/{} vertex-batch/{}",
        env!("VERTEX_BATCH_RUSTC_VERSION"),
        TONIC_VERSION,
        env!("CARGO_PKG_VERSION")
    )
}

/// The tonic release line this crate is built against.
pub const TONIC_VERSION: &str = "0.14";

pub(crate) struct Shared {
    pub(crate) tokens: Arc<TokenCache>,
    pub(crate) api_client: HeaderValue,
    pub(crate) user_project: Option<HeaderValue>,
}

/// Adds the headers; see the module docs.
#[derive(Clone)]
pub(crate) struct HeaderLayer {
    shared: Arc<Shared>,
}

impl HeaderLayer {
    pub(crate) fn new(shared: Shared) -> Self {
        HeaderLayer {
            shared: Arc::new(shared),
        }
    }
}

impl<S> Layer<S> for HeaderLayer {
    type Service = HeaderService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        HeaderService {
            inner,
            shared: self.shared.clone(),
        }
    }
}

/// The service [`HeaderLayer`] wraps around the channel.
#[derive(Clone)]
pub(crate) struct HeaderService<S> {
    inner: S,
    shared: Arc<Shared>,
}

/// Passes gRPC answers on; anything else becomes a [`NotGrpcResponse`].
fn check_grpc<RB, E: Into<BoxError>>(
    r: Result<http::Response<RB>, E>,
) -> Result<http::Response<RB>, BoxError> {
    let resp = r.map_err(Into::into)?;
    let content_type = resp
        .headers()
        .get(http::header::CONTENT_TYPE)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
    let grpc = match &content_type {
        Some(ct) => ct.starts_with("application/grpc"),
        // No content type: only a plain 200 could still be gRPC.
        None => resp.status() == http::StatusCode::OK,
    };
    if grpc {
        Ok(resp)
    } else {
        Err(Box::new(NotGrpcResponse {
            status: resp.status().as_u16(),
            content_type: content_type.unwrap_or_else(|| "(none)".into()),
        }))
    }
}

fn add_headers<B>(shared: &Shared, req: &mut http::Request<B>, token: Option<HeaderValue>) {
    let headers = req.headers_mut();
    if let Some(token) = token {
        headers.insert(http::header::AUTHORIZATION, token);
    }
    headers.insert(API_CLIENT, shared.api_client.clone());
    if let Some(project) = &shared.user_project {
        headers.insert(USER_PROJECT, project.clone());
    }
}

type BoxedCall<R> = Pin<Box<dyn Future<Output = Result<R, BoxError>> + Send>>;

type Checked<RB, E> = fn(Result<http::Response<RB>, E>) -> Result<http::Response<RB>, BoxError>;

impl<S, B, RB> Service<http::Request<B>> for HeaderService<S>
where
    S: Service<http::Request<B>, Response = http::Response<RB>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: Send + 'static,
    RB: Send + 'static,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = Either<Map<S::Future, Checked<RB, S::Error>>, BoxedCall<S::Response>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, mut req: http::Request<B>) -> Self::Future {
        // Fast path: the token is known without waiting (anonymous, static,
        // or cached and fresh): no allocation, no extra future.
        if let Some(token) = self.shared.tokens.try_header() {
            add_headers(&self.shared, &mut req, token);
            let check: Checked<RB, S::Error> = check_grpc::<RB, S::Error>;
            return Either::Left(self.inner.call(req).map(check));
        }
        // The clone is not ready yet: keep the ready one, as tower requires.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let shared = self.shared.clone();
        Either::Right(Box::pin(async move {
            let token = shared.tokens.header().await.map_err(|e| match e {
                Error::Auth { message, .. } => Box::new(AuthFailure(message)) as BoxError,
                other => Box::new(AuthFailure(other.to_string())) as BoxError,
            })?;
            add_headers(&shared, &mut req, token);
            check_grpc(inner.call(req).await)
        }))
    }
}

/// The `grpc-timeout` header value for `d`, in tonic's own format.
pub(crate) fn grpc_timeout(d: std::time::Duration) -> Option<MetadataValue<Ascii>> {
    let mut probe = tonic::Request::new(());
    probe.set_timeout(d);
    probe.metadata().get(GRPC_TIMEOUT).cloned()
}

/// The header carrying a call's deadline.
pub(crate) const GRPC_TIMEOUT: &str = "grpc-timeout";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routing_values_are_percent_encoded() {
        let h = routing_header("parent", "projects/my-proj/locations/us-central1").unwrap();
        assert_eq!(h, "parent=projects%2Fmy-proj%2Flocations%2Fus-central1");
        let h = routing_header("name", "a b~c").unwrap();
        assert_eq!(h, "name=a%20b~c");
    }

    #[test]
    fn api_client_names_rust_tonic_and_crate() {
        let h = api_client_header();
        let tokens: Vec<&str> = h.split(' ').collect();
        assert_eq!(tokens.len(), 3, "{h}");
        assert!(tokens[0].starts_with("gl-rust/1."), "{h}");
        assert_eq!(
            tokens[2],
            concat!("vertex-batch/", env!("CARGO_PKG_VERSION"))
        );
        // The tonic line named is the one actually built against (from the
        // lock file cargo resolved), not a constant compared with itself.
        let lock = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.lock"))
            .expect("Cargo.lock");
        let tonic = lock
            .split("[[package]]")
            .find(|p| p.contains("\nname = \"tonic\"\n"))
            .and_then(|p| p.lines().find_map(|l| l.strip_prefix("version = ")))
            .map(|v| v.trim_matches('"').to_owned())
            .expect("tonic in Cargo.lock");
        assert!(
            tonic.starts_with(&format!("{TONIC_VERSION}.")),
            "tonic {tonic} but the header says grpc/{TONIC_VERSION}"
        );
        assert_eq!(tokens[1], format!("grpc/{TONIC_VERSION}"));
        // rustc's version as the build saw it.
        let rustc = env!("VERTEX_BATCH_RUSTC_VERSION");
        assert!(rustc.split('.').count() >= 3, "{rustc}");
        assert_eq!(tokens[0], format!("gl-rust/{rustc}"));
    }
}
