//! The [`Client`]: a cheap-to-clone handle on one regional JobService
//! endpoint, and its operations, one concern per file:
//!
//! * `shared`: the handle and the state its clones share;
//! * `builder`: configuration ([`ClientBuilder`]);
//! * `call`: how every RPC is made (routing, deadlines, retries, tracing);
//! * `create`: [`Client::create`] and the safe [`Client::submit`];
//! * `jobs`: get, cancel, delete; `list`: [`ListOptions`], paging;
//! * `tokens`: [`Client::count_tokens`] and [`TokenCount`] (CountTokens);
//! * `follow`: following one job (schedule, failure budget, changes),
//!   shared by `wait` ([`Client::wait`], [`Client::watch`]) and `multi`
//!   ([`Client::watch_many`]).

mod builder;
mod call;
mod create;
mod follow;
mod jobs;
mod list;
mod multi;
mod shared;
mod tokens;
mod wait;

pub use builder::ClientBuilder;
pub(crate) use create::{is_ambiguous, prepare};
pub use list::{JobPage, ListOptions};
pub use multi::WatchManyOptions;
pub use shared::Client;
pub use tokens::TokenCount;
pub use wait::WaitOptions;
