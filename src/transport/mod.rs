//! The transport under every call: credentials and their token cache
//! ([`Credentials`]), the headers each call carries (auth, routing,
//! `x-goog-api-client`, quota project), and the endpoint and channel.
//!
//! Most programs never name this module: [`crate::ClientBuilder`] sets it
//! all up. The header names and environment variables are here for tests,
//! proxies and tools that check what goes on the wire.

pub(crate) mod auth;
pub(crate) mod endpoint;
pub(crate) mod headers;
pub(crate) mod proxy;

pub use auth::{Credentials, CLOUD_PLATFORM_SCOPE};
pub use endpoint::{
    endpoint_for_location, DEFAULT_LOCATION, ENV_EMULATOR_HOST, ENV_LOCATION, ENV_PROJECT,
    ENV_QUOTA_PROJECT,
};
pub use headers::{api_client_header, API_CLIENT, REQUEST_PARAMS, USER_PROJECT};
