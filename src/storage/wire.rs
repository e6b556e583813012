//! Sending Cloud Storage requests. tame-gcs builds every JSON API request
//! (URL, query, headers) and parses every answer; this module carries them
//! over hyper with rustls on *ring*, adds the shared token, and turns
//! failures into [`Error::Storage`] — never naming a token or a resumable
//! session's URL.

use std::{
    future::Future,
    pin::Pin,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    task::{Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use http::{
    header::AUTHORIZATION,
    uri::{Authority, PathAndQuery, Scheme},
    Request, Response, StatusCode, Uri,
};
use http_body_util::{BodyExt, Limited};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper_util::{
    client::legacy::Client,
    rt::{TokioExecutor, TokioTimer},
};
use tokio::time::{Instant, Sleep};

use crate::{
    error::{BoxError, Error, Result},
    transport::{
        auth::TokenCache,
        endpoint::tls_roots,
        proxy::{Dial, Route},
    },
};

/// The largest JSON answer read (a listing page of 1,000 objects is about
/// 1 MB).
const MAX_JSON: usize = 32 << 20;

/// The most of an error answer's body kept for its message.
const MAX_ERROR_BODY: usize = 64 << 10;

/// The most of an upload's body handed to hyper at once: progress (for the
/// idle timeout) is seen at this grain.
const SEND_PIECE: usize = 64 << 10;

/// The connect timeout (to the endpoint, or to the proxy).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(20);

/// HTTP/2 keepalive: a ping after this long without a frame from the
/// server while a request is open, and the connection closed when the
/// ping is not answered within [`H2_PING_TIMEOUT`].
const H2_PING_INTERVAL: Duration = Duration::from_secs(30);
const H2_PING_TIMEOUT: Duration = Duration::from_secs(20);

/// How the HTTP client of a [`Storage`](super::Storage) talks.
pub(super) struct WireOptions {
    /// How long a request may make no progress (no byte of the upload
    /// taken, no answer, no byte of the answer) before it fails; `None`:
    /// no limit.
    pub(super) idle: Option<Duration>,
    /// The proxy the endpoint is reached through.
    pub(super) proxy: Option<Route>,
}

/// The HTTP client of one [`Storage`](super::Storage) and its clones.
pub(crate) struct Wire {
    client: Client<hyper_rustls::HttpsConnector<Dial>, SendBody>,
    scheme: Scheme,
    authority: Authority,
    tokens: Option<Arc<TokenCache>>,
    idle: Option<Duration>,
    /// tame-gcs's request builder for objects, at the endpoint's authority.
    pub(super) objects: tame_gcs::objects::Object,
}

/// An answer's body: the service's bytes, failing after the idle timeout
/// without one.
pub(crate) type Answer = Response<IdleBody>;

impl Wire {
    /// A client for `endpoint` (`https://host[:port]`, or `http://` for an
    /// emulator), sending `tokens`' bearer token with every API call.
    pub(super) fn new(
        endpoint: &str,
        tokens: Option<Arc<TokenCache>>,
        options: WireOptions,
    ) -> Result<Wire> {
        let bad = || Error::config(format!("invalid Cloud Storage endpoint {endpoint:?}"));
        let uri: Uri = endpoint.parse().map_err(|_| bad())?;
        let scheme = uri.scheme().cloned().ok_or_else(bad)?;
        let authority = uri.authority().cloned().ok_or_else(bad)?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| Error::config(format!("TLS setup for Cloud Storage: {e}")))?
            .with_root_certificates(tls_roots())
            .with_no_client_auth();
        // TLS (for https) is layered over the dialled stream, so through a
        // proxy's tunnel the proxy sees only encrypted bytes.
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .enable_http2()
            .wrap_connector(Dial::new(options.proxy.as_ref(), CONNECT_TIMEOUT));
        let client = Client::builder(TokioExecutor::new())
            .timer(TokioTimer::new())
            .http2_keep_alive_interval(H2_PING_INTERVAL)
            .http2_keep_alive_timeout(H2_PING_TIMEOUT)
            .build(connector);
        Ok(Wire {
            client,
            scheme,
            objects: tame_gcs::objects::Object::with_authority(authority.clone()),
            authority,
            tokens,
            idle: options.idle,
        })
    }

    /// The bearer tokens this client sends (`None`: none, as to an
    /// emulator): what a gRPC client of the same service shares.
    pub(crate) fn tokens(&self) -> Option<&Arc<TokenCache>> {
        self.tokens.as_ref()
    }

    /// Sends an API request as tame-gcs built it (`https://AUTHORITY/…`)
    /// to the endpoint, with the bearer token. `what` names the call in
    /// errors. The answer's status is not checked here.
    pub(crate) async fn send(&self, what: &str, req: Request<Bytes>) -> Result<Answer> {
        let (mut parts, body) = req.into_parts();
        parts.uri = self.on_endpoint(what, &parts.uri)?;
        if let Some(tokens) = &self.tokens {
            if let Some(mut value) = tokens.header().await? {
                value.set_sensitive(true);
                parts.headers.insert(AUTHORIZATION, value);
            }
        }
        self.exchange(what, parts, body).await
    }

    /// Sends a request to a resumable upload session. The session's URL is
    /// its own credential: no token goes with it. The request goes to the
    /// endpoint with the session's path and query, wherever the URL the
    /// service gave points (an emulator behind a proxy, or one that names
    /// itself by another host, works; nothing goes to a host not chosen).
    pub(super) async fn send_session(
        &self,
        what: &str,
        session: &Uri,
        req: Request<Bytes>,
    ) -> Result<Answer> {
        let (mut parts, body) = req.into_parts();
        parts.uri = self.on_endpoint(what, session)?;
        parts.headers.remove(AUTHORIZATION);
        self.exchange(what, parts, body).await
    }

    /// `uri`'s path and query on the endpoint's scheme and host.
    fn on_endpoint(&self, what: &str, uri: &Uri) -> Result<Uri> {
        let path = uri
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/"));
        Uri::builder()
            .scheme(self.scheme.clone())
            .authority(self.authority.clone())
            .path_and_query(path)
            .build()
            .map_err(|e| Error::config(format!("{what}: {e}")))
    }

    /// Sends the request and waits for the answer's head, failing when
    /// nothing moves for the idle timeout: no byte of the body taken by
    /// the connection (while sending), or no answer (once sent).
    async fn exchange(
        &self,
        what: &str,
        parts: http::request::Parts,
        body: Bytes,
    ) -> Result<Answer> {
        let (body, progress) = SendBody::new(body);
        let answer = self.client.request(Request::from_parts(parts, body));
        let Some(idle) = self.idle else {
            let resp = answer.await.map_err(|e| transport_error(what, e))?;
            return Ok(resp.map(|b| IdleBody::new(b, None)));
        };
        tokio::pin!(answer);
        loop {
            let deadline = progress.last() + idle;
            tokio::select! {
                resp = &mut answer => {
                    let resp = resp.map_err(|e| transport_error(what, e))?;
                    return Ok(resp.map(|b| IdleBody::new(b, Some(idle))));
                }
                () = tokio::time::sleep_until(deadline) => {
                    // Still no progress since the deadline was set: stalled.
                    if progress.last() + idle <= Instant::now() {
                        return Err(Error::Storage {
                            message: format!(
                                "{what}: no progress for {idle:?} (the connection stalled); \
                                 given up on this attempt"
                            ),
                            http_status: None,
                            source: Some(Box::new(Stalled(idle))),
                        });
                    }
                }
            }
        }
    }
}

/// The last time a request made progress, shared by its body and the
/// watchdog in [`Wire::exchange`].
struct Progress {
    start: Instant,
    /// Nanoseconds from `start` to the last progress.
    last: AtomicU64,
}

impl Progress {
    fn touch(&self) {
        let nanos = u64::try_from(self.start.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.last.fetch_max(nanos, Ordering::Relaxed);
    }

    fn last(&self) -> Instant {
        self.start + Duration::from_nanos(self.last.load(Ordering::Relaxed))
    }
}

/// A request body handed to the connection in pieces of [`SEND_PIECE`]
/// (slices of one buffer, no copy), each piece taken marking progress.
pub(super) struct SendBody {
    rest: Bytes,
    progress: Arc<Progress>,
}

impl SendBody {
    fn new(data: Bytes) -> (SendBody, Arc<Progress>) {
        let progress = Arc::new(Progress {
            start: Instant::now(),
            last: AtomicU64::new(0),
        });
        let body = SendBody {
            rest: data,
            progress: progress.clone(),
        };
        (body, progress)
    }
}

impl Body for SendBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<std::result::Result<Frame<Bytes>, Self::Error>>> {
        if self.rest.is_empty() {
            return Poll::Ready(None);
        }
        let n = self.rest.len().min(SEND_PIECE);
        let piece = self.rest.split_to(n);
        self.progress.touch();
        Poll::Ready(Some(Ok(Frame::data(piece))))
    }

    fn is_end_stream(&self) -> bool {
        self.rest.is_empty()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.rest.len() as u64)
    }
}

/// An answer's body that fails when the server sends nothing for the idle
/// timeout while it is being read (time the reader spends elsewhere does
/// not count).
pub(crate) struct IdleBody {
    inner: Incoming,
    idle: Option<Duration>,
    timer: Option<Pin<Box<Sleep>>>,
    /// Whether the timer runs for the current wait.
    armed: bool,
}

impl IdleBody {
    fn new(inner: Incoming, idle: Option<Duration>) -> IdleBody {
        IdleBody {
            inner,
            idle,
            timer: None,
            armed: false,
        }
    }
}

/// The error of a connection that went silent.
#[derive(Debug)]
pub(super) struct Stalled(Duration);

impl std::fmt::Display for Stalled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "no data from the server for {:?}", self.0)
    }
}

impl std::error::Error for Stalled {}

impl Body for IdleBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<std::result::Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                this.armed = false;
                return Poll::Ready(frame.map(|f| f.map_err(BoxError::from)));
            }
            Poll::Pending => {}
        }
        let Some(idle) = this.idle else {
            return Poll::Pending;
        };
        if !this.armed {
            this.armed = true;
            let deadline = Instant::now() + idle;
            match &mut this.timer {
                Some(t) => t.as_mut().reset(deadline),
                None => this.timer = Some(Box::pin(tokio::time::sleep_until(deadline))),
            }
        }
        match this.timer.as_mut().map(|t| t.as_mut().poll(cx)) {
            Some(Poll::Ready(())) => Poll::Ready(Some(Err(Box::new(Stalled(idle))))),
            _ => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The fields of an object resource the crate uses. Everything else
/// (storage classes, timestamps, fields newer than any model of them) is
/// ignored, so no answer fails for what it adds.
#[derive(serde::Deserialize)]
pub(super) struct ObjectJson {
    pub(super) bucket: Option<String>,
    pub(super) name: Option<String>,
    #[serde(default)]
    pub(super) size: Size,
    /// An int64 as a string, like the size.
    #[serde(default)]
    pub(super) generation: Size,
}

/// An object's size: the JSON API sends an int64 as a string; a number is
/// read too.
#[derive(Default)]
pub(super) struct Size(pub(super) u64);

impl<'de> serde::Deserialize<'de> for Size {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        #[derive(serde::Deserialize)]
        #[serde(untagged)]
        enum Either<'a> {
            Number(u64),
            Text(std::borrow::Cow<'a, str>),
        }
        match Either::deserialize(d)? {
            Either::Number(n) => Ok(Size(n)),
            Either::Text(s) => s.parse().map(Size).map_err(serde::de::Error::custom),
        }
    }
}

/// A page of an object listing.
#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct ListJson {
    #[serde(default)]
    pub(super) items: Vec<ObjectJson>,
    pub(super) next_page_token: Option<String>,
}

/// Reads a JSON answer whole (bounded) and parses it; a failure status
/// becomes [`Error::Storage`] with the service's message.
pub(crate) async fn json<T: serde::de::DeserializeOwned>(what: &str, resp: Answer) -> Result<T> {
    let status = resp.status();
    let bytes = body(what, resp).await?;
    parse(what, status, &bytes)
}

/// A successful answer's body, whole (bounded); a failure status becomes
/// [`Error::Storage`] with the service's message.
pub(crate) async fn body(what: &str, resp: Answer) -> Result<Bytes> {
    let status = resp.status();
    if !status.is_success() {
        return Err(status_error(what, resp).await);
    }
    Ok(Limited::new(resp.into_body(), MAX_JSON)
        .collect()
        .await
        .map_err(|e| body_error(what, status, e))?
        .to_bytes())
}

/// Parses a JSON answer's body (`status`: the answer's, for the error).
pub(crate) fn parse<'a, T: serde::Deserialize<'a>>(
    what: &str,
    status: StatusCode,
    bytes: &'a [u8],
) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|e| Error::Storage {
        message: format!("{what}: could not read the answer: {e}"),
        http_status: Some(status.as_u16()),
        source: Some(Box::new(e)),
    })
}

/// The error for an answer with a failure status, with the message from
/// its `{"error": {"message": …}}` body when it has one.
pub(crate) async fn status_error(what: &str, resp: Answer) -> Error {
    let status = resp.status();
    let body = Limited::new(resp.into_body(), MAX_ERROR_BODY)
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    Error::Storage {
        message: format!("{what}: {}", error_message(status, &body)),
        http_status: Some(status.as_u16()),
        source: None,
    }
}

/// `HTTP 404 Not Found: No such object: b/o` from a status and the body
/// of a Cloud Storage error answer (JSON or plain text).
pub(super) fn error_message(status: StatusCode, body: &[u8]) -> String {
    #[derive(serde::Deserialize)]
    struct Body {
        error: Inner,
    }
    #[derive(serde::Deserialize)]
    struct Inner {
        message: String,
    }
    let detail = match serde_json::from_slice::<Body>(body) {
        Ok(b) => b.error.message,
        Err(_) => String::from_utf8_lossy(body)
            .trim()
            .chars()
            .take(500)
            .collect(),
    };
    let reason = status
        .canonical_reason()
        .map(|r| format!(" {r}"))
        .unwrap_or_default();
    let head = format!("HTTP {}{reason}", status.as_u16());
    match detail.is_empty() {
        true => head,
        false => format!("{head}: {detail}"),
    }
}

/// Every byte but letters and digits escaped: for object names in paths
/// and queries. (tame-gcs leaves `&`, `+`, `=`, `;`, `[`, `]`, `\\` and
/// more as they are, which changes names or makes URLs that do not parse,
/// so object names are never handed to it: it gets a placeholder and
/// [`retarget`] writes the name here.)
pub(crate) fn escape(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// The name tame-gcs is given in place of an object's.
pub(super) const PLACEHOLDER: &str = "_";

/// `req` with its path and/or query replaced (`None` keeps them).
pub(super) fn retarget<B>(
    req: Request<B>,
    path: Option<&str>,
    query: Option<&str>,
) -> std::result::Result<Request<B>, http::Error> {
    let (mut parts, body) = req.into_parts();
    let path = path.unwrap_or(parts.uri.path()).to_owned();
    let query = query.or(parts.uri.query()).map(str::to_owned);
    let mut uri = parts.uri.into_parts();
    let target = match query {
        Some(q) => format!("{path}?{q}"),
        None => path,
    };
    uri.path_and_query = Some(target.parse().map_err(http::Error::from)?);
    parts.uri = Uri::from_parts(uri).map_err(http::Error::from)?;
    Ok(Request::from_parts(parts, body))
}

/// A request that got no answer (connection refused, reset, timed out).
pub(super) fn transport_error(
    what: &str,
    e: impl std::error::Error + Send + Sync + 'static,
) -> Error {
    Error::Storage {
        message: format!("{what}: {}", chain(&e)),
        http_status: None,
        source: Some(Box::new(e)),
    }
}

/// An answer whose body broke off (no status: worth trying again), or
/// ran over the size read whole (the answer's status: not worth it).
pub(crate) fn body_error(
    what: &str,
    status: StatusCode,
    e: Box<dyn std::error::Error + Send + Sync>,
) -> Error {
    if e.is::<http_body_util::LengthLimitError>() {
        return Error::Storage {
            message: format!("{what}: the answer is larger than expected"),
            http_status: Some(status.as_u16()),
            source: Some(e),
        };
    }
    Error::Storage {
        message: format!("{what}: the answer broke off: {}", chain(&*e)),
        http_status: None,
        source: Some(e),
    }
}

/// An error and its causes on one line (hyper's own message is often just
/// "client error (Connect)").
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        let s_text = s.to_string();
        if !out.contains(&s_text) {
            out.push_str(": ");
            out.push_str(&s_text);
        }
        cur = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_messages_come_from_json_or_text_bodies() {
        assert_eq!(
            error_message(
                StatusCode::NOT_FOUND,
                br#"{"error":{"code":404,"message":"No such object: b/o","errors":[]}}"#
            ),
            "HTTP 404 Not Found: No such object: b/o"
        );
        assert_eq!(
            error_message(StatusCode::SERVICE_UNAVAILABLE, b""),
            "HTTP 503 Service Unavailable"
        );
        assert_eq!(
            error_message(StatusCode::BAD_REQUEST, b"invalid uploadType\n"),
            "HTTP 400 Bad Request: invalid uploadType"
        );
    }
}
