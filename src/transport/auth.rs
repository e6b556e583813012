//! Credentials and the access-token cache.
//!
//! Tokens live only inside [`http::HeaderValue`]s marked sensitive; nothing
//! here implements `Debug` or `Display` in a way that could print one.

use std::{
    fmt,
    sync::Arc,
    time::{Duration, SystemTime},
};

use http::HeaderValue;
use tokio::sync::{Mutex, OnceCell, RwLock};

use crate::error::{BoxError, Error, Result};

/// The OAuth scope Vertex AI needs.
///
/// ```
/// use vertex_batch::transport::{Credentials, CLOUD_PLATFORM_SCOPE};
/// assert!(CLOUD_PLATFORM_SCOPE.ends_with("/auth/cloud-platform"));
/// // Application Default Credentials ask for this scope.
/// let _adc = Credentials::application_default();
/// ```
pub const CLOUD_PLATFORM_SCOPE: &str = "https://www.googleapis.com/auth/cloud-platform";

/// Refresh a cached token this long before it expires.
const REFRESH_MARGIN: Duration = Duration::from_secs(20);

/// How the client authenticates.
///
/// ```
/// use vertex_batch::transport::Credentials;
/// let creds = Credentials::access_token("ya29.secret");
/// assert!(!format!("{creds:?}").contains("secret"));
/// ```
#[derive(Clone)]
pub struct Credentials(Kind);

#[derive(Clone)]
enum Kind {
    /// Application Default Credentials, discovered on first use.
    Adc,
    /// Any gcp_auth provider (service account key, metadata server, ...).
    Provider(Arc<dyn gcp_auth::TokenProvider>),
    /// A fixed access token.
    Static(HeaderValue),
    /// No `authorization` header at all (emulators).
    Anonymous,
    /// A static token that cannot be sent in a header.
    Invalid,
}

impl Credentials {
    /// Application Default Credentials through gcp_auth: the key file named by
    /// `GOOGLE_APPLICATION_CREDENTIALS`, gcloud's user credentials, the
    /// metadata server, then `gcloud auth print-access-token`. Discovery
    /// happens on the first call, not when the client is built.
    ///
    /// ```
    /// use vertex_batch::transport::Credentials;
    /// let creds = Credentials::application_default(); // nothing is looked up yet
    /// assert!(!creds.is_anonymous());
    /// assert_eq!(format!("{creds:?}"), "Credentials(ApplicationDefault)");
    /// ```
    pub fn application_default() -> Self {
        Credentials(Kind::Adc)
    }

    /// Any gcp_auth token provider, e.g.
    /// `gcp_auth::CustomServiceAccount::from_file(path)?`.
    ///
    /// ```no_run
    /// use std::sync::Arc;
    /// use vertex_batch::transport::Credentials;
    /// let key = gcp_auth::CustomServiceAccount::from_file("service-account.json")?;
    /// let creds = Credentials::from_provider(Arc::new(key));
    /// assert_eq!(format!("{creds:?}"), "Credentials(Provider)");
    /// # Ok::<_, gcp_auth::Error>(())
    /// ```
    pub fn from_provider(provider: Arc<dyn gcp_auth::TokenProvider>) -> Self {
        Credentials(Kind::Provider(provider))
    }

    /// A fixed OAuth access token (e.g. from `gcloud auth print-access-token`).
    /// It is never refreshed.
    ///
    /// ```
    /// use vertex_batch::transport::Credentials;
    /// let creds = Credentials::access_token("ya29.a0Af-example");
    /// assert_eq!(format!("{creds:?}"), "Credentials(AccessToken(<redacted>))");
    /// // A token that cannot be a header value fails on the first call, not here.
    /// assert_eq!(format!("{:?}", Credentials::access_token("bad\n")), "Credentials(AccessToken(<invalid>))");
    /// ```
    pub fn access_token(token: impl AsRef<str>) -> Self {
        match bearer(token.as_ref()) {
            Ok(v) => Credentials(Kind::Static(v)),
            // A token that cannot be a header value surfaces as an error on
            // the first call, not as a panic here.
            Err(_) => Credentials(Kind::Invalid),
        }
    }

    /// No credentials: for emulators and test servers.
    ///
    /// ```
    /// use vertex_batch::transport::Credentials;
    /// let creds = Credentials::anonymous();
    /// assert!(creds.is_anonymous());
    /// assert_eq!(format!("{creds:?}"), "Credentials(Anonymous)");
    /// ```
    pub fn anonymous() -> Self {
        Credentials(Kind::Anonymous)
    }

    /// Whether these credentials send no token.
    ///
    /// ```
    /// use vertex_batch::transport::Credentials;
    /// assert!(Credentials::anonymous().is_anonymous());
    /// assert!(!Credentials::access_token("ya29.token").is_anonymous());
    /// ```
    pub fn is_anonymous(&self) -> bool {
        matches!(self.0, Kind::Anonymous)
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.0 {
            Kind::Adc => "ApplicationDefault",
            Kind::Provider(_) => "Provider",
            Kind::Static(_) => "AccessToken(<redacted>)",
            Kind::Anonymous => "Anonymous",
            Kind::Invalid => "AccessToken(<invalid>)",
        };
        write!(f, "Credentials({kind})")
    }
}

fn bearer(token: &str) -> std::result::Result<HeaderValue, http::header::InvalidHeaderValue> {
    let mut v = HeaderValue::try_from(format!("Bearer {token}"))?;
    v.set_sensitive(true);
    Ok(v)
}

/// Hands out the `authorization` header value, caching the token until
/// shortly before it expires.
pub(crate) struct TokenCache {
    credentials: Credentials,
    adc: OnceCell<Arc<dyn gcp_auth::TokenProvider>>,
    cached: RwLock<Option<(HeaderValue, SystemTime)>>,
    refresh: Mutex<()>,
}

impl TokenCache {
    pub(crate) fn new(credentials: Credentials) -> Self {
        TokenCache {
            credentials,
            adc: OnceCell::new(),
            cached: RwLock::new(None),
            refresh: Mutex::new(()),
        }
    }

    /// Whether no token is ever sent.
    pub(crate) fn is_anonymous(&self) -> bool {
        self.credentials.is_anonymous()
    }

    /// The header value to send, or `None` for anonymous credentials.
    pub(crate) async fn header(&self) -> Result<Option<HeaderValue>> {
        let provider =
            match &self.credentials.0 {
                Kind::Anonymous => return Ok(None),
                Kind::Static(v) => return Ok(Some(v.clone())),
                Kind::Invalid => return Err(Error::Auth {
                    message:
                        "the access token given holds characters that cannot be sent in a header"
                            .into(),
                    source: None,
                }),
                Kind::Provider(p) => p.clone(),
                Kind::Adc => self
                    .adc
                    .get_or_try_init(gcp_auth::provider)
                    .await
                    .map_err(|e| auth_error("no Application Default Credentials found", e))?
                    .clone(),
            };
        if let Some(v) = self.fresh().await {
            return Ok(Some(v));
        }
        // One refresh at a time; the others wait and reuse its result.
        let _guard = self.refresh.lock().await;
        if let Some(v) = self.fresh().await {
            return Ok(Some(v));
        }
        let token = provider
            .token(&[CLOUD_PLATFORM_SCOPE])
            .await
            .map_err(|e| auth_error("could not obtain an access token", e))?;
        let value = bearer(token.as_str()).map_err(|_| Error::Auth {
            message: "the credentials returned a token that cannot be sent in a header".into(),
            source: None,
        })?;
        let expires: SystemTime = token.expires_at().into();
        *self.cached.write().await = Some((value.clone(), expires));
        Ok(Some(value))
    }

    /// The header value when it is known without waiting: `Some(None)` for
    /// anonymous credentials, `Some(Some(v))` for a static or fresh cached
    /// token, `None` when a (possibly slow) refresh is needed.
    /// The token last sent (without `Bearer `), to scrub it from errors.
    pub(crate) fn secret(&self) -> Option<String> {
        let header = match &self.credentials.0 {
            Kind::Static(v) => v.clone(),
            Kind::Provider(_) | Kind::Adc => self.cached.try_read().ok()?.as_ref()?.0.clone(),
            Kind::Anonymous | Kind::Invalid => return None,
        };
        let text = header.to_str().ok()?;
        let token = text.strip_prefix("Bearer ").unwrap_or(text);
        (token.len() >= 8).then(|| token.to_owned())
    }

    pub(crate) fn try_header(&self) -> Option<Option<HeaderValue>> {
        match &self.credentials.0 {
            Kind::Anonymous => Some(None),
            Kind::Static(v) => Some(Some(v.clone())),
            Kind::Invalid => None,
            Kind::Provider(_) | Kind::Adc => {
                let cached = self.cached.try_read().ok()?;
                let (v, expires) = cached.as_ref()?;
                let deadline = expires.checked_sub(REFRESH_MARGIN)?;
                (SystemTime::now() < deadline).then(|| Some(v.clone()))
            }
        }
    }

    async fn fresh(&self) -> Option<HeaderValue> {
        let cached = self.cached.read().await;
        let (v, expires) = cached.as_ref()?;
        let deadline = expires.checked_sub(REFRESH_MARGIN)?;
        (SystemTime::now() < deadline).then(|| v.clone())
    }
}

fn auth_error(message: &str, e: gcp_auth::Error) -> Error {
    Error::Auth {
        message: format!("{message}: {e}"),
        source: Some(Box::new(e) as BoxError),
    }
}
