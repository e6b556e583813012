//! The [`Client`]: a cheap-to-clone handle on one regional JobService
//! endpoint, and its operations, one concern per file:
//!
//! * `handle`: the handle and the state its clones share;
//! * `builder`: configuration ([`ClientBuilder`]);
//! * `call`: how every RPC is made (routing, deadlines, retries, tracing);
//! * `create`: [`Client::create`] and the safe [`Client::submit`];
//! * `get_cancel_delete`: get, cancel, delete; `list`: [`ListOptions`], paging;
//! * `tokens`: [`Client::count_tokens`] and [`TokenCount`] (CountTokens);
//! * `follow`: following one job (schedule, failure budget, changes),
//!   shared by `wait` ([`Client::wait`], [`Client::watch`]) and `multi`
//!   ([`Client::watch_many`]).

mod builder;
mod call;
mod create;
mod follow;
mod get_cancel_delete;
mod handle;
mod list;
mod multi;
mod tokens;
mod wait;

pub use builder::ClientBuilder;
pub(crate) use create::{is_ambiguous, prepare};
pub use handle::Client;
pub use list::{JobPage, ListOptions};
pub use multi::WatchManyOptions;
pub use tokens::TokenCount;
pub use wait::WaitOptions;
